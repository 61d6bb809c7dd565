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

/// The cargo features compiled into this build: empty for a production build; a test build
/// (`make build`) has `fault-injection`, which also lets a node load the public CGGMP24 test
/// fixtures. `mpcd --version` and the status endpoint's `/status` show them.
pub const COMPILED_FEATURES: &[&str] = &[
    #[cfg(feature = "fault-injection")]
    "fault-injection",
];

/// `mpcd --version`: the version and the compiled features ([`COMPILED_FEATURES`]).
#[cfg(feature = "fault-injection")]
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (features: fault-injection: a TEST build, never for production)"
);
/// `mpcd --version`: the version and the compiled features ([`COMPILED_FEATURES`]).
#[cfg(not(feature = "fault-injection"))]
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (features: none: a production build)"
);
pub mod chain;
pub mod daemon;
pub mod manifest;

#[cfg(test)]
mod tests {
    #[test]
    #[allow(non_snake_case)]
    fn version_line__should_name_the_compiled_features() {
        if cfg!(feature = "fault-injection") {
            assert_eq!(super::COMPILED_FEATURES, ["fault-injection"]);
            assert!(super::VERSION_LINE.contains("TEST build"));
        } else {
            assert!(super::COMPILED_FEATURES.is_empty());
            assert!(super::VERSION_LINE.contains("production build"));
        }
    }
}
