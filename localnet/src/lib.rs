//! localnet: a dev sequencer plus N `mpcd` processes on one machine.
//!
//! - [`sequencer`]: the dev sequencer, which plays CometBFT's role for N ABCI apps with a
//!   single proposer and serves CometBFT's RPC routes; usable in-process.
//! - [`network`]: creating a localnet directory (keys, genesis), starting and stopping the
//!   `mpcd` child processes, and the `localnet.json` manifest.

pub mod cometbft_kit;
pub mod network;
pub mod sequencer;
