//! The chain: the state machine every validator runs, pure and deterministic. Nothing under
//! `chain/` reads a clock, draws randomness, does I/O or sees a node's local MPC state; given
//! the same state and the same block, every validator computes the same writes, results,
//! events, jobs and app hash. Ordered maps only (`clippy.toml` bans `HashMap`/`HashSet`).
//!
//! - [`state`]: the [`ChainState`]; [`merkle`]: the Merkle tree over it, whose root is the
//!   app hash, and its proofs; [`entries`]: what it holds;
//!   [`state_key`]: the keys of its write journal; [`genesis`]: the genesis document.
//! - [`tx`]: the tx handlers, one file per tx type, each with its `check` and `execute`.
//! - [`block`]: block execution, [`finalize_block`]; [`mempool`]: CheckTx, [`check_tx`];
//!   [`decoded`]: the txs CheckTx decoded, so FinalizeBlock does not check them again;
//!   [`catch_up`]: the jobs a node must (re)do from committed state; [`query`]: the query
//!   paths and the types they answer with (shared with the clients).
//! - [`committee`]: the choice of signers and dealers; [`verify`]: signature checks.

// A panic in the chain halts every validator at once: no unwrap, expect, panic or unchecked
// indexing here (tests excepted, see clippy.toml); errors are returned instead. Nor unchecked
// arithmetic: release builds check overflow (Cargo.toml), so an overflow would panic too.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

pub mod block;
pub mod catch_up;
pub mod committee;
pub mod decoded;
pub mod entries;
pub mod genesis;
pub mod mempool;
pub mod merkle;
pub mod query;
pub mod state;
pub mod state_key;
pub mod tx;
pub mod verify;

pub use block::{
    finalize_block, finalize_block_with, init_chain, BlockError, FinalizedBlock, TxOutcome,
};
pub use catch_up::{catch_up_jobs, unattested_deletions};
pub use decoded::DecodedTxs;
pub use entries::{
    AccountEntry, DeadlineItem, KeyEntry, KeyStatus, KeygenReport, NodeEntry, ProposalAction,
    ProposalEntry, ProposalStatus, ProvenBlame, ReshareEntry, ReshareStatus, SignEntry, SignStatus,
};
pub use mempool::{check_decoded, check_tx, CheckState};
pub use state::{BlockWrites, ChainState};
pub use tx::{Event, TxError};
