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
    /// This node cannot take part in the session: it holds no READY share of the generation
    /// the chain uses (a share restored from an old backup, a lost share), its store failed, or
    /// it is overloaded. Its failure report names the node itself (see
    /// [`ProtocolError::report_culprits`]), so the chain leaves it out at once instead of
    /// waiting for the attempt deadline.
    #[error("cannot take part: {0}")]
    Unable(String),
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
            ProtocolError::Local(_) | ProtocolError::Unable(_) | ProtocolError::Bug(_) => &[],
        }
    }

    /// The parties a failure report of `me` names: the culprits, or `me` itself when it is
    /// [`ProtocolError::Unable`] to take part. Naming oneself only ever costs oneself.
    pub fn report_culprits(&self, me: &NodeId) -> Vec<NodeId> {
        match self {
            ProtocolError::Unable(_) => vec![me.clone()],
            other => other.culprits().to_vec(),
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
