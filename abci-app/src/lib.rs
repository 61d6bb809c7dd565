//! seqmpc ABCI 2.0 application, the `mpcd` daemon and the `mpcctl` client, in three layers:
//!
//! - [`chain`]: the chain's state machine, pure and deterministic (state, txs, blocks). Every
//!   validator must compute the same results from it; panics and nondeterminism are linted
//!   out.
//! - [`abci`]: the ABCI actor and the persistence of the committed state: consensus-critical
//!   glue with I/O around `chain`.
//! - [`daemon`]: the rest of `mpcd` (result submission, status, operator socket, ...),
//!   node-local and not consensus-critical.
//!
//! Beside them, [`manifest`]: the `localnet.json` a running localnet writes for its clients.

pub mod abci;
pub mod chain;
pub mod daemon;
pub mod manifest;
