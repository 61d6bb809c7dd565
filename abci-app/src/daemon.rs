//! The node daemon's parts (`mpcd`), beside the chain: the node's own view and operations,
//! none of them consensus-critical (a bug here cannot fork the chain; it can only make this
//! node slow, wrong about itself, or silent).
//!
//! - [`submit`]: signs and broadcasts the MPC module's results; [`rpc`]: the CometBFT RPC
//!   client (also used by `mpcctl` and `localnet`); [`keys`]: key files; [`proven`]: state
//!   entries read with a Merkle proof and checked against a header (`mpcctl key --verify`).
//! - [`abci_unix`]: the ABCI socket protocol on a Unix socket (mode 0600).
//! - [`chain_tip`]: the MPC runtime reads the chain's height through it, so its admission
//!   policy skips jobs of replayed blocks whose sessions are over.
//! - [`status`]: the local HTTP status endpoint; [`diverge`]: local records checked against
//!   the chain; [`admin`]: the operator socket (master key rotation, backups);
//!   [`master_source`]: where the master key comes from (a file or a command).
//! - [`run`]: `mpcd start` as one [`run::Daemon`] built from these parts; [`home`]: the node
//!   home's files and identity.
//! - [`wiring`]: where a test build puts its faults in front of the parts above (the
//!   production `Wiring` hands each part back unchanged).
//! - `partition` (TEST ONLY, feature `fault-injection`): the ABCI relay of the
//!   `partition-file` fault; `faulty_rpc` (TEST ONLY): the result submitter's RPC port behind
//!   the `partition-file` and `lose-result-txs` faults.

pub mod abci_unix;
pub mod admin;
pub mod block_watch;
pub mod chain_tip;
pub mod diverge;
#[cfg(feature = "fault-injection")]
pub mod faulty_rpc;
pub mod home;
pub mod keys;
pub mod master_source;
pub mod outbox;
#[cfg(feature = "fault-injection")]
pub mod partition;
pub mod prom;
pub mod proven;
pub mod rpc;
pub mod run;
pub mod status;
pub mod submit;
pub mod wiring;
