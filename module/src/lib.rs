//! The MPC module of seqmpc.
#![deny(missing_docs)]

pub use seqmpc_proto as proto;

pub mod error;
pub mod evidence;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod job;
pub mod node;
pub mod p2p;
pub mod protocol;
pub mod session;
pub mod store;

#[cfg(test)]
mod no_panic;
