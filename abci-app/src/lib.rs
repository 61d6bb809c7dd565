//! seqmpc ABCI 2.0 application: deterministic chain state, tx handling and queries, plus the
//! `mpcd` daemon and the `mpcctl` client binaries.

pub mod admin;
pub mod app;
pub mod diverge;
pub mod execute;
pub mod genesis;
pub mod keys;
#[cfg(feature = "fault-injection")]
pub mod partition;
pub mod persist;
pub mod replay_gate;
pub mod rpc;
pub mod state;
pub mod state_key;
pub mod status;
pub mod submit;
