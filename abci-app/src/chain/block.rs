//! Block execution: the deadlines due at the start of a block, then each tx in order, then
//! the block's writes sealed into the app hash. [`finalize_block`] is FinalizeBlock without
//! ABCI: plain types in and out, no disk, no channel, so the real state machine can also run
//! in memory (a deterministic simulator, tests).

use seqmpc_module::job::Job;
use seqmpc_proto::tx::SignedTx;
use seqmpc_proto::DomainError;

use crate::chain::entries::DeadlineItem;
use crate::chain::genesis::Genesis;
use crate::chain::merkle::TreeError;
use crate::chain::state::{BlockWrites, ChainState};
use crate::chain::tx::{
    self, keygen, proposal, reshare, sign, sign_attempt, Effects, Event, TxError,
};

/// InitChain without ABCI: the state at genesis (height 0) built from the genesis document and
/// its bytes (`app_state`, whose hash the state keeps), and its app hash.
pub fn init_chain(genesis: &Genesis, app_state: &[u8]) -> Result<(ChainState, [u8; 32]), String> {
    let mut state = ChainState::from_genesis(genesis, app_state)?;
    let (_, hash) = state.seal_block(0).map_err(|e| e.to_string())?;
    Ok((state, hash))
}

/// What one tx of a block came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxOutcome {
    /// 0, or the [`TxError::code`] of its rejection.
    pub code: u32,
    /// Empty, or why it was rejected.
    pub log: String,
    /// Its events (none when rejected).
    pub events: Vec<Event>,
}

/// What executing a block produced.
#[derive(Debug)]
pub struct FinalizedBlock {
    /// Events of the block itself (the deadlines that passed at its start).
    pub block_events: Vec<Event>,
    /// One outcome per tx, in block order.
    pub tx_results: Vec<TxOutcome>,
    /// The state keys the block wrote, with their new values (what Commit journals).
    pub writes: BlockWrites,
    /// The app hash after the block.
    pub app_hash: [u8; 32],
    /// Jobs for the MPC module, to hand over once the block is committed.
    pub jobs: Vec<Job>,
}

/// Why a block was not executed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A block for another height than the one after the state's. The state is untouched.
    #[error("FinalizeBlock at height {got}, expected {expected}")]
    WrongHeight {
        /// The height after the state's.
        expected: u64,
        /// The block's.
        got: u64,
    },
    /// The Merkle tree could not take the block's writes (a bug). The state in memory holds
    /// the block half applied: reload the committed state before going on.
    #[error("the state tree could not take block {height}: {source}")]
    Tree {
        /// The block's.
        height: u64,
        /// Why.
        source: TreeError,
    },
}

/// Executes block `height` (the one after `state`'s) in place: the deadlines due, then each
/// raw tx in order (a tx that does not decode or fails its check changes nothing but, once its
/// envelope is valid, its signer's sequence), then seals the block's writes into the app hash.
/// `block_time_ms` (the proposer's time) is only passed through to jobs; `block_hash` (the
/// consensus engine's hash of the block) salts the choice of signers. Pure: no I/O, no clock;
/// the same state and block give the same result on every validator.
pub fn finalize_block<T: AsRef<[u8]>>(
    state: &mut ChainState,
    height: u64,
    block_time_ms: u64,
    block_hash: &[u8],
    txs: &[T],
) -> Result<FinalizedBlock, BlockError> {
    finalize_block_with(
        state,
        (height, block_time_ms, block_hash),
        txs,
        SignedTx::decode,
    )
}

/// [`finalize_block`] with the tx decoder given: the app passes
/// [`DecodedTxs::take`](crate::chain::DecodedTxs::take), which gives what
/// [`SignedTx::decode`] gives (it must: the outcome has to be the same on every validator)
/// without checking again a signature CheckTx checked.
pub fn finalize_block_with<T: AsRef<[u8]>>(
    state: &mut ChainState,
    (height, block_time_ms, block_hash): (u64, u64, &[u8]),
    txs: &[T],
    mut decode: impl FnMut(&[u8]) -> Result<SignedTx, DomainError>,
) -> Result<FinalizedBlock, BlockError> {
    let expected = state.height.saturating_add(1);
    if height != expected {
        return Err(BlockError::WrongHeight {
            expected,
            got: height,
        });
    }
    let mut fx = Effects {
        block_time_ms,
        block_hash: block_hash.to_vec(),
        ..Effects::default()
    };
    expire_deadlines(state, height, &mut fx);
    let block_events = std::mem::take(&mut fx.events);
    let mut tx_results = Vec::with_capacity(txs.len());
    for raw in txs {
        let result = match decode(raw.as_ref()) {
            Err(e) => Err(TxError::Malformed(e.to_string())),
            Ok(tx) => tx::deliver(state, &tx, height, &mut fx),
        };
        let events = std::mem::take(&mut fx.events);
        tx_results.push(match result {
            Ok(()) => TxOutcome {
                code: 0,
                log: String::new(),
                events,
            },
            Err(e) => TxOutcome {
                code: e.code(),
                log: e.to_string(),
                events: Vec::new(),
            },
        });
    }
    let (writes, app_hash) = state
        .seal_block(height)
        .map_err(|source| BlockError::Tree { height, source })?;
    Ok(FinalizedBlock {
        block_events,
        tx_results,
        writes,
        app_hash,
        jobs: fx.jobs,
    })
}

/// Ends every session whose deadline is `<= height` (start of block `height`), and starts the
/// periodic refreshes due.
pub(crate) fn expire_deadlines(state: &mut ChainState, height: u64, fx: &mut Effects) {
    while let Some(first) = state.deadlines().first().cloned() {
        if first.0 > height {
            break;
        }
        state.remove_deadline(first.0, first.1.clone());
        match first.1 {
            DeadlineItem::KeyGen(key_id, attempt) => {
                keygen::expire(state, key_id, attempt, height, fx)
            }
            DeadlineItem::Sign(request_id) => sign::expire(state, request_id, height, fx),
            DeadlineItem::Reshare(key_id, attempt) => {
                reshare::expire(state, key_id, attempt, height, fx)
            }
            DeadlineItem::Refresh(key_id) => reshare::periodic_refresh(state, &key_id, height, fx),
            DeadlineItem::SignPrune(request_id) => sign::prune(state, &request_id),
            DeadlineItem::SignAttempt(request_id, attempt) => {
                sign_attempt::expire(state, request_id, attempt, height, fx)
            }
            DeadlineItem::Proposal(id) => proposal::due(state, &id, height, fx),
        }
    }
}
