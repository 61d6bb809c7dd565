//! seqmpc ABCI 2.0 application: the deterministic chain (`chain`), the ABCI actor and its
//! persistence, plus the `mpcd` daemon and the `mpcctl` client binaries.

pub mod admin;
pub mod app;
pub mod chain;
pub mod diverge;
pub mod keys;
#[cfg(feature = "fault-injection")]
pub mod partition;
pub mod persist;
pub mod replay_gate;
pub mod rpc;
pub mod status;
pub mod submit;
