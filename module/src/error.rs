//! Errors of the MPC module, with blame.

use seqmpc_proto::NodeId;

/// Why a protocol session ended without a result.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The protocol aborted because of other parties' behaviour; `culprits` names them where
    /// the protocol can tell.
    #[error("aborted: {reason}{}", fmt_culprits(culprits))]
    Aborted {
        /// Parties to blame (may be empty).
        culprits: Vec<NodeId>,
        /// Readable reason.
        reason: String,
    },
    /// A local condition (missing share, bad local state); nobody else is to blame.
    #[error("local error: {0}")]
    Local(String),
    /// A bug: an invariant of our own code failed.
    #[error("bug: {0}")]
    Bug(String),
}

fn fmt_culprits(c: &[NodeId]) -> String {
    if c.is_empty() {
        String::new()
    } else {
        format!(
            " (culprits: {})",
            c.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        )
    }
}

impl ProtocolError {
    /// Parties to blame.
    pub fn culprits(&self) -> &[NodeId] {
        match self {
            ProtocolError::Aborted { culprits, .. } => culprits,
            ProtocolError::Local(_) | ProtocolError::Bug(_) => &[],
        }
    }

    /// Abort blaming one party.
    pub fn blame(culprit: &NodeId, reason: impl Into<String>) -> Self {
        ProtocolError::Aborted {
            culprits: vec![culprit.clone()],
            reason: reason.into(),
        }
    }
}
