//! Committed work handed from the chain to the module, and results handed back.
//!
//! The chain application produces [`Job`]s after Commit (never during FinalizeBlock) and the
//! module hands its outcomes to a [`SubmitResult`], which the application implements by signing
//! a result tx with the node key. The module never depends on the application.

use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};

use crate::error::ProtocolError;

/// A committed request this node may have to act on. Every field comes from committed chain
/// state, so every node derives the same job from the same block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Run a keygen session.
    KeyGen {
        /// Session (execution id).
        session: SessionId,
        /// Key id.
        key_id: KeyId,
        /// Scheme.
        scheme: Scheme,
        /// Threshold.
        threshold: u32,
        /// Committee, sorted.
        parties: Vec<NodeId>,
        /// Height of the committed request.
        height: u64,
        /// The chain ends the session ERROR at this height if it is still PENDING.
        deadline_height: u64,
        /// Block time (ms since the Unix epoch) of that height, as the proposer set it. Lets a
        /// node replaying old blocks after a restart skip sessions that are long over.
        block_time_ms: u64,
    },
    /// Run a signing session.
    Sign {
        /// Session (execution id).
        session: SessionId,
        /// Request id.
        request_id: RequestId,
        /// Key id.
        key_id: KeyId,
        /// Message to sign.
        message: Vec<u8>,
        /// `message` is a 32-byte digest signed as is (ECDSA); otherwise the scheme hashes it.
        prehashed: bool,
        /// Scheme of the key.
        scheme: Scheme,
        /// The signer subset chosen by the chain, sorted.
        signers: Vec<NodeId>,
        /// The key's share generation on chain. A signer whose local READY share is of
        /// another one (restored from an old backup, copied back) refuses to sign with it.
        key_version: KeyVersion,
        /// Height of the committed request.
        height: u64,
        /// See [`Job::KeyGen`].
        deadline_height: u64,
        /// Block time (ms since the Unix epoch), see [`Job::KeyGen`].
        block_time_ms: u64,
    },
    /// Delete this node's share of a key.
    Delete {
        /// Key id.
        key_id: KeyId,
        /// The key's committee.
        parties: Vec<NodeId>,
        /// Height of the committed request.
        height: u64,
    },
    /// The chain ended a keygen session without READY (ERROR): a local PENDING record of that
    /// session becomes ERROR.
    KeyGenFailed {
        /// Key id.
        key_id: KeyId,
        /// The session that failed.
        session: SessionId,
        /// The chain's reason.
        reason: String,
    },
    /// The chain ended a signing request (DONE or ERROR): its signers stop what they still do
    /// for it (a FROST signer that holds the signature as a backup submits nothing).
    SignEnded {
        /// Request id.
        request_id: RequestId,
    },
    /// A registry account admitted a new MPC node: the p2p layer accepts its key and dials it,
    /// and sessions may include it.
    NodeJoined {
        /// The new node's id.
        node: NodeId,
        /// Its ed25519 node public key (its libp2p identity).
        public_key: [u8; 32],
        /// Its libp2p multiaddr.
        p2p_addr: String,
    },
    /// Governance replaced a node's key: the p2p layer accepts only the new key for it (and
    /// drops connections under the old one); the node itself switches to the key it keeps in
    /// `HOME/node.key.next` (mpcd restarts itself).
    NodeKeyRotated {
        /// The node.
        node: NodeId,
        /// Its new ed25519 node public key.
        public_key: [u8; 32],
    },
    /// Governance removed a node from the registry: the p2p layer drops it.
    NodeRemoved {
        /// The node.
        node: NodeId,
    },
    /// Run a resharing (or refresh) of a READY key: the dealers deal, the new parties collect.
    Reshare(ReshareJob),
    /// A block was committed (after its other jobs, from the application, not the chain's
    /// state machine): the session layer learns the chain's pace from the blocks' times.
    Block {
        /// Height.
        height: u64,
        /// The block's time (ms since the Unix epoch), as the proposer set it.
        block_time_ms: u64,
    },
    /// The chain confirmed a resharing: new parties make their staged share READY, old holders
    /// outside the new committee delete theirs.
    ReshareDone {
        /// Key id.
        key_id: KeyId,
        /// The resharing session.
        session: SessionId,
        /// The committee before.
        old_parties: Vec<NodeId>,
        /// The committee now.
        new_parties: Vec<NodeId>,
        /// Generation of the new shares.
        generation: u64,
    },
    /// The chain ended a resharing in ERROR: staged shares of that session are dropped; the
    /// old generation stays READY.
    ReshareFailed {
        /// Key id.
        key_id: KeyId,
        /// The resharing session.
        session: SessionId,
        /// The chain's reason.
        reason: String,
    },
}

impl Job {
    /// The deadline height of a job that runs a session (keygen, sign, resharing): once the
    /// chain has reached it, the session is over (READY/DONE, or ERROR). `None` for the other
    /// jobs, which carry an outcome or need no peer.
    pub fn deadline_height(&self) -> Option<u64> {
        self.session_timing().map(|(_, deadline, _)| deadline)
    }

    /// Block time (ms since the Unix epoch) of a session job's request block; `None` for the
    /// others (see [`Job::deadline_height`]).
    pub fn block_time_ms(&self) -> Option<u64> {
        self.session_timing().map(|(_, _, time)| time)
    }

    /// A session job's block, or a committed [`Job::Block`]: the height and that block's time
    /// (ms since the Unix epoch; 0 when unknown).
    pub fn block(&self) -> Option<(u64, u64)> {
        match self {
            Job::Block {
                height,
                block_time_ms,
            } => Some((*height, *block_time_ms)),
            other => other
                .session_timing()
                .map(|(height, _, time)| (height, time)),
        }
    }

    /// A session job's height, deadline height and block time.
    fn session_timing(&self) -> Option<(u64, u64, u64)> {
        match self {
            Job::KeyGen {
                height,
                deadline_height,
                block_time_ms,
                ..
            }
            | Job::Sign {
                height,
                deadline_height,
                block_time_ms,
                ..
            } => Some((*height, *deadline_height, *block_time_ms)),
            Job::Reshare(r) => Some((r.height, r.deadline_height, r.block_time_ms)),
            Job::Delete { .. }
            | Job::KeyGenFailed { .. }
            | Job::SignEnded { .. }
            | Job::NodeJoined { .. }
            | Job::NodeKeyRotated { .. }
            | Job::NodeRemoved { .. }
            | Job::ReshareDone { .. }
            | Job::ReshareFailed { .. }
            | Job::Block { .. } => None,
        }
    }
}

/// Which generation of a key's shares the chain uses: 1 after keygen, +1 per resharing, and
/// the session (keygen or resharing) that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// Share generation.
    pub generation: u64,
    /// The session that made it.
    pub session: SessionId,
}

impl KeyVersion {
    /// `Ok` when a local share of version `local` may act for the chain's `self`; otherwise
    /// [`ProtocolError::Unable`], so the node's failure report names itself and the chain
    /// leaves it out.
    pub fn check(&self, key_id: &KeyId, local: &KeyVersion) -> Result<(), ProtocolError> {
        if local == self {
            return Ok(());
        }
        Err(ProtocolError::Unable(format!(
            "local share of {key_id} is generation {} (session {}), the chain's is generation \
             {} (session {}): restored from an old backup? restore a current one",
            local.generation, local.session, self.generation, self.session
        )))
    }
}

/// A committed resharing (or refresh) of a READY key ([`Job::Reshare`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReshareJob {
    /// Session (execution id).
    pub session: SessionId,
    /// Key id.
    pub key_id: KeyId,
    /// Scheme.
    pub scheme: Scheme,
    /// The session that produced the current shares (the generation the dealers deal from).
    pub key_session: SessionId,
    /// The current committee, sorted.
    pub old_parties: Vec<NodeId>,
    /// The current threshold.
    pub old_threshold: u32,
    /// The old holders who deal, sorted (old threshold of them).
    pub dealers: Vec<NodeId>,
    /// The new committee, sorted.
    pub new_parties: Vec<NodeId>,
    /// The new threshold.
    pub new_threshold: u32,
    /// The group public key (as the chain records it), unchanged by resharing.
    pub public_key: Vec<u8>,
    /// FROST: the current generation's public key package as the chain records it (see
    /// `ReshareParams::old_public_package`); `None` for CGGMP24.
    pub public_key_package: Option<Vec<u8>>,
    /// Generation of the new shares.
    pub generation: u64,
    /// Height of the committed request.
    pub height: u64,
    /// See [`Job::KeyGen`].
    pub deadline_height: u64,
    /// Block time (ms since the Unix epoch), see [`Job::KeyGen`].
    pub block_time_ms: u64,
}

/// Hands a result to the chain (as a tx signed by this node's key). Implemented by the app.
pub trait SubmitResult: Send + Sync + 'static {
    /// Queue the result for submission. Must not block for long.
    fn submit(&self, msg: TxMsg);
}

/// A shared sink (a decorator may wrap one the node shares with other threads).
impl<S: SubmitResult + ?Sized> SubmitResult for std::sync::Arc<S> {
    fn submit(&self, msg: TxMsg) {
        (**self).submit(msg)
    }
}
