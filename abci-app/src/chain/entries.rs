//! The entries of the chain state: keys, resharings, sign requests, nodes, accounts and
//! deadlines, as they are stored, journaled and returned by queries.

use std::collections::{BTreeMap, BTreeSet};

use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use serde::{Deserialize, Serialize};

use crate::chain::genesis::Role;

/// Status of a key on the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyStatus {
    /// Keygen requested, reports pending.
    Pending,
    /// Every party reported the same public key.
    Ready,
    /// Keygen failed (reason in `error`).
    Error,
    /// Deletion requested, attestations pending.
    Deleting,
    /// Every party attested deletion; the id stays as a tombstone.
    Deleted,
}

/// A node's keygen report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeygenReport {
    /// Success.
    Ok {
        /// Hex public key.
        public_key: String,
        /// Hex transcript hash.
        transcript_hash: String,
        /// Hex SHA-256 of the reported FROST public key package (empty for CGGMP24): the
        /// parties must agree on it too.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        public_key_package_hash: String,
    },
    /// Failure.
    Failed {
        /// Reason.
        error: String,
        /// Blamed parties.
        culprits: Vec<NodeId>,
    },
}

/// A blame the chain verified itself: the culprit's own signed p2p messages, quoted by the
/// reporter, show the misbehaviour (`seqmpc_module::evidence`). Culprits without one are the
/// reporter's claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenBlame {
    /// The culprit.
    pub culprit: NodeId,
    /// The node whose report quoted the messages.
    pub reporter: NodeId,
    /// What the signed messages show.
    pub reason: String,
}

/// A key on the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Key id.
    pub key_id: KeyId,
    /// Scheme.
    pub scheme: Scheme,
    /// Threshold.
    pub threshold: u32,
    /// Committee, sorted.
    pub parties: Vec<NodeId>,
    /// Status.
    pub status: KeyStatus,
    /// Hex public key once READY.
    pub public_key: Option<String>,
    /// FROST keys once READY: hex of frost's serialized public key package of the current
    /// generation (the group key and every party's verifying share), on which every party
    /// agreed. The chain checks signature shares quoted in failure reports against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_package: Option<String>,
    /// Failure reason.
    pub error: Option<String>,
    /// Parties blamed for a failure.
    pub culprits: Vec<NodeId>,
    /// The blames of `culprits` the chain verified from signed messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proven_blame: Vec<ProvenBlame>,
    /// Session that made the current share generation: the keygen, then each resharing.
    pub session: SessionId,
    /// Keygen attempt (0, then +1 per retry of an ERROR key).
    pub attempt: u32,
    /// Share generation (1 after the first keygen).
    pub generation: u64,
    /// Height of the keygen request.
    pub requested_height: u64,
    /// Height at which a PENDING keygen becomes ERROR.
    pub deadline_height: u64,
    /// Height at which the key became READY.
    pub ready_height: Option<u64>,
    /// Keygen reports of this attempt.
    pub reports: BTreeMap<NodeId, KeygenReport>,
    /// Parties that attested deletion.
    pub deleted_by: BTreeSet<NodeId>,
    /// Who requested the key (hex account key). Only the owner and its `admins` may sign
    /// with the key, delete it or request its resharing.
    pub owner: String,
    /// Accounts (hex keys) the owner named with `KeyAdmins`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub admins: BTreeSet<String>,
    /// The latest resharing (or refresh) of the key: PENDING while it runs, then DONE or
    /// ERROR. The key stays READY (old committee, old generation) until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshare: Option<ReshareEntry>,
    /// Resharings that succeeded.
    #[serde(default)]
    pub reshares: u32,
}

/// Status of a resharing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReshareStatus {
    /// Dealers dealing, new parties reporting.
    Pending,
    /// Every new party reported the same public key and transcript: the key moved.
    Done,
    /// Failed (reason in `error`); the key kept its previous committee and shares.
    Error,
}

/// One resharing (or refresh) attempt of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareEntry {
    /// Session (execution id).
    pub session: SessionId,
    /// Attempt number (0, 1, ... over the key's life), part of the session derivation.
    pub attempt: u32,
    /// Status.
    pub status: ReshareStatus,
    /// Same committee and threshold: a refresh.
    pub refresh: bool,
    /// The committee before (the dealers' committee).
    pub old_parties: Vec<NodeId>,
    /// The threshold before.
    pub old_threshold: u32,
    /// The old holders who deal (old threshold of them, live first).
    pub dealers: Vec<NodeId>,
    /// The new committee, sorted.
    pub parties: Vec<NodeId>,
    /// The new threshold.
    pub threshold: u32,
    /// Height of the request.
    pub requested_height: u64,
    /// Height at which a PENDING resharing becomes ERROR.
    pub deadline_height: u64,
    /// Height at which it ended.
    pub done_height: Option<u64>,
    /// Reports of the new parties.
    pub reports: BTreeMap<NodeId, KeygenReport>,
    /// Failure reason.
    pub error: Option<String>,
    /// Parties blamed for a failure.
    pub culprits: Vec<NodeId>,
    /// The blames of `culprits` the chain verified from signed messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proven_blame: Vec<ProvenBlame>,
}

/// Status of a sign request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SignStatus {
    /// Signers working.
    Pending,
    /// A verified signature is recorded.
    Done,
    /// Failed (reason in `error`).
    Error,
}

/// A sign request on the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignEntry {
    /// Request id.
    pub request_id: RequestId,
    /// Key id.
    pub key_id: KeyId,
    /// Hex message.
    pub message: String,
    /// The message is a 32-byte digest signed as is (ECDSA); otherwise the scheme hashes it.
    #[serde(default)]
    pub prehashed: bool,
    /// Status.
    pub status: SignStatus,
    /// Hex signature once DONE (verified by the chain); for `cggmp24-secp256k1` the 64-byte
    /// low-s `r || s`.
    pub signature: Option<String>,
    /// ECDSA recovery id `v` once DONE (`cggmp24-secp256k1` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<u8>,
    /// Failure reason.
    pub error: Option<String>,
    /// Parties blamed.
    pub culprits: Vec<NodeId>,
    /// Signer subset.
    pub signers: Vec<NodeId>,
    /// Session.
    pub session: SessionId,
    /// Height of the request.
    pub requested_height: u64,
    /// Deadline height.
    pub deadline_height: u64,
    /// Height at which the signature was accepted.
    pub done_height: Option<u64>,
    /// Signer who submitted the accepted signature.
    pub submitted_by: Option<NodeId>,
    /// The key generation when the request was committed.
    #[serde(default)]
    pub generation: u64,
    /// The blames of `culprits` the chain verified from signed messages (FROST signature
    /// shares).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proven_blame: Vec<ProvenBlame>,
    /// The current attempt (0: the first); `signers` and `session` are the attempt's.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempt: u32,
    /// Height at which the current attempt is given up (0: the request's deadline).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_deadline: u64,
    /// Parties left out of this request's later attempts (silent, named by a majority of the
    /// other signers, or proven guilty), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<NodeId>,
    /// Failure reports of the current attempt: reporter, and the signers it named.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<NodeId, Vec<NodeId>>,
    /// The attempts that ended before the current one, oldest first (at most
    /// [`MAX_ENDED_ATTEMPTS`]): who signed and who named whom (who was left out is
    /// `excluded`). The last one's failure reports still count when they come late.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended_attempts: Vec<EndedAttempt>,
}

/// Ended attempts a sign request keeps (the oldest go first): it bounds an entry's size.
pub const MAX_ENDED_ATTEMPTS: usize = 16;

/// An attempt that has ended: what `mpcctl sign-status` shows of it, and, for the last one,
/// what its failure reports that arrive late (a loaded signer) count against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedAttempt {
    /// Its number (0: the first).
    pub attempt: u32,
    /// Its session.
    pub session: SessionId,
    /// Its signers.
    pub signers: Vec<NodeId>,
    /// Height at which it ended.
    pub ended_height: u64,
    /// Its failure reports, those that came in time and the late ones: reporter, and the
    /// signers it named.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<NodeId, Vec<NodeId>>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// A registered MPC node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node id.
    pub id: NodeId,
    /// Hex ed25519 public key.
    pub public_key: String,
    /// p2p multiaddr.
    pub p2p_addr: String,
    /// Sessions that ended with a blame of this node the chain verified itself
    /// (`proven_blame` on a key, a resharing or a sign request).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub proven_blames: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An account allowed to send requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEntry {
    /// Name.
    pub name: String,
    /// Hex public key.
    pub public_key: String,
    /// Roles.
    pub roles: BTreeSet<Role>,
}

/// What a deadline entry refers to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeadlineItem {
    /// A keygen attempt.
    KeyGen(KeyId, u32),
    /// A sign request.
    Sign(RequestId),
    /// A resharing attempt of a key.
    Reshare(KeyId, u32),
    /// The periodic refresh of a key (genesis `refresh_every_blocks`).
    Refresh(KeyId),
    /// An attempt of a sign request (genesis `sign_attempt_blocks`).
    SignAttempt(RequestId, u32),
    /// A finished sign request leaves the state (genesis `sign_retention_blocks`).
    SignPrune(RequestId),
    /// A governance proposal is due: it executes (approved, delay over), expires (not
    /// approved in time) or leaves the state (ended).
    Proposal(String),
}

/// What a governance proposal would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProposalAction {
    /// Reshare a key to another committee and/or threshold.
    Reshare {
        /// Key.
        key_id: KeyId,
        /// The new committee, sorted.
        parties: Vec<NodeId>,
        /// The new threshold.
        threshold: u32,
    },
    /// Admit a node into the registry.
    NodeJoin {
        /// Node id.
        node_id: NodeId,
        /// Hex ed25519 node key.
        public_key: String,
        /// libp2p multiaddr.
        p2p_addr: String,
    },
    /// Replace a registered node's key.
    NodeRotateKey {
        /// Node id.
        node_id: NodeId,
        /// Hex ed25519 new node key.
        public_key: String,
    },
    /// Remove a node from the registry.
    NodeRemove {
        /// Node id.
        node_id: NodeId,
    },
}

/// Status of a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProposalStatus {
    /// Waiting for approvals.
    Pending,
    /// Approved: executes at `executes_height` unless cancelled.
    Approved,
    /// Executed (the resharing started, or the node was admitted).
    Executed,
    /// Approved, but its action was no longer valid when due (reason in `error`).
    Failed,
    /// Cancelled by a governance account or its proposer.
    Cancelled,
    /// Not approved by `expires_height`.
    Expired,
}

/// A governance proposal: a change that needs approval before it executes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalEntry {
    /// Id: the first 16 hex digits of the proposing tx's hash.
    pub id: String,
    /// The change.
    pub action: ProposalAction,
    /// Hex key of the proposing account.
    pub proposer: String,
    /// Hash of the proposing tx (hex): seeds the session ids of what it starts.
    pub tx_hash: String,
    /// Status.
    pub status: ProposalStatus,
    /// Names of the governance accounts that approved it.
    pub approvals: BTreeSet<String>,
    /// Approvals it needs.
    pub approvals_needed: u32,
    /// Height of the proposing tx.
    pub proposed_height: u64,
    /// Height at which it expires unless approved.
    pub expires_height: u64,
    /// Approved: the height at which it executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executes_height: Option<u64>,
    /// Ended (executed, failed, cancelled, expired): the height; it leaves the state
    /// `expiry_blocks` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_height: Option<u64>,
    /// Who cancelled it (account name), or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
