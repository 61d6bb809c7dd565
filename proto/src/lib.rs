//! Wire types of seqmpc and the validated domain types built from them.
//!
//! [`wire`] holds the prost types of `proto/seqmpc/v1/*.proto`. Everything else here is a
//! domain type reached only through a validating conversion, so unvalidated bytes never reach
//! chain or MPC logic.
#![deny(missing_docs)]

pub mod ids;
pub mod tx;
pub mod verify;
pub mod wire;

pub use ids::{KeyId, NodeId, RequestId, Scheme, SessionId};

/// A wire value that does not make a valid domain value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    /// A field is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The tx signature does not verify under the signer's key.
    #[error("bad signature: the tx is not signed by its signer key")]
    BadSignature,
}
