//! The ABCI side of the chain: consensus-critical, but not pure. [`app`] is the ABCI 2.0
//! application run as one actor thread (it converts ABCI requests to the pure entry points of
//! [`crate::chain`] and their outcomes back, and hands committed jobs to the MPC module);
//! [`persist`] keeps the committed state on disk (snapshot plus journal, hash-checked on load).
//! A bug here can halt a node or lose its state; the rules of the chain are all in `chain/`.

pub mod app;
pub mod persist;
pub mod tx_watch;

pub use app::{App, AppHandle};
