//! A deterministic simulator of a seqmpc network: n session managers (`seqmpc_module::session`,
//! sans-IO) and the real chain state machine (`seqmpc_abci`), in one thread, on simulated
//! time, with every random choice drawn from one seed.
//!
//! What is real: the FROST engines and their cryptography, the CGGMP24 DKG, the session
//! manager, the chain's tx execution, deadlines and signer choice, ed25519 tx and p2p-message
//! signatures, and the key-store semantics ([`seqmpc_module::session::mem_store`]). CGGMP24
//! aux-info generation and safe-prime sets are modelled by their time (`ecdsa`). What is
//! simulated: the network (delay, reorder, drop, duplicate, partition), the disk (latency; a
//! write counts once it has completed), processes (crash, restart) and time.
//!
//! After each run the invariants of [`invariants`] are checked; a failing run prints the
//! command that replays it.

pub mod chain;
mod ecdsa;
pub mod invariants;
pub mod scenario;
mod world;

pub use scenario::{Behaviour, FaultAt, Scenario};
pub use world::{run, Report, Stats};
