//! Deterministic chain state: node registry, accounts and sequences, keys, sign requests.
//!
//! Everything is in ordered maps so that serialization, iteration, events and the app hash are
//! identical on every validator.

use std::collections::{BTreeMap, BTreeSet};

use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::genesis::{Genesis, Limits, Role};

/// Version of the persisted state format. Do not change without a migration.
pub const STATE_VERSION: u32 = 1;

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
    },
    /// Failure.
    Failed {
        /// Reason.
        error: String,
        /// Blamed parties.
        culprits: Vec<NodeId>,
    },
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
    /// Failure reason.
    pub error: Option<String>,
    /// Parties blamed for a failure.
    pub culprits: Vec<NodeId>,
    /// Current keygen session.
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
    /// Who requested the key (hex account key).
    pub owner: String,
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
    /// Status.
    pub status: SignStatus,
    /// Hex signature once DONE (verified by the chain).
    pub signature: Option<String>,
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
}

/// The whole chain state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// Format version.
    pub version: u32,
    /// Chain id.
    pub chain_id: String,
    /// SHA-256 of the genesis app state bytes.
    pub genesis_hash: String,
    /// Last committed height.
    pub height: u64,
    /// App hash of the last committed height.
    pub app_hash: String,
    /// Limits.
    pub limits: Limits,
    /// Node registry by id.
    pub nodes: BTreeMap<NodeId, NodeEntry>,
    /// Node id by hex public key.
    pub node_keys: BTreeMap<String, NodeId>,
    /// Accounts by hex public key.
    pub accounts: BTreeMap<String, AccountEntry>,
    /// Next sequence per signer (hex public key); absent = 0.
    pub sequences: BTreeMap<String, u64>,
    /// Keys.
    pub keys: BTreeMap<KeyId, KeyEntry>,
    /// Sign requests.
    pub sign_requests: BTreeMap<RequestId, SignEntry>,
    /// Pending deadlines, ordered by height.
    pub deadlines: BTreeSet<(u64, DeadlineItem)>,
}

impl ChainState {
    /// Builds the state at genesis.
    pub fn from_genesis(genesis: &Genesis, app_state: &[u8]) -> Result<ChainState, String> {
        let mut nodes = BTreeMap::new();
        let mut node_keys = BTreeMap::new();
        for n in &genesis.nodes {
            let pk = parse_pubkey(&n.public_key).map_err(|e| format!("node {}: {e}", n.id))?;
            let pk = hex::encode(pk);
            if nodes.contains_key(&n.id) || node_keys.contains_key(&pk) {
                return Err(format!("node {} is listed twice", n.id));
            }
            node_keys.insert(pk.clone(), n.id.clone());
            nodes.insert(
                n.id.clone(),
                NodeEntry {
                    id: n.id.clone(),
                    public_key: pk,
                    p2p_addr: n.p2p_addr.clone(),
                },
            );
        }
        if nodes.is_empty() {
            return Err("genesis lists no MPC node".into());
        }
        let mut accounts = BTreeMap::new();
        for a in &genesis.accounts {
            let pk = hex::encode(
                parse_pubkey(&a.public_key).map_err(|e| format!("account {}: {e}", a.name))?,
            );
            if node_keys.contains_key(&pk) || accounts.contains_key(&pk) {
                return Err(format!("account {} reuses a key", a.name));
            }
            accounts.insert(
                pk.clone(),
                AccountEntry {
                    name: a.name.clone(),
                    public_key: pk,
                    roles: a.roles.clone(),
                },
            );
        }
        if genesis.limits.session_deadline_blocks == 0 || genesis.limits.max_parties == 0 {
            return Err("limits must be positive".into());
        }
        Ok(ChainState {
            version: STATE_VERSION,
            chain_id: genesis.chain_id.clone(),
            genesis_hash: hex::encode(Sha256::digest(app_state)),
            height: 0,
            app_hash: String::new(),
            limits: genesis.limits.clone(),
            nodes,
            node_keys,
            accounts,
            sequences: BTreeMap::new(),
            keys: BTreeMap::new(),
            sign_requests: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        })
    }

    /// Canonical encoding (JSON of ordered maps: deterministic).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data of strings, numbers and ordered maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Seals the state after a block: encodes it once (with `app_hash` empty), hashes the
    /// encoding (SHA-256 over a domain tag and the bytes) and records the hash. Returns the
    /// bytes to persist and the app hash. One encoding serves both hash and persistence.
    pub fn seal(&mut self) -> (Vec<u8>, [u8; 32]) {
        self.app_hash.clear();
        let bytes = self.encode();
        let hash = app_hash_of(&bytes);
        self.app_hash = hex::encode(hash);
        (bytes, hash)
    }

    /// Next sequence number of a signer.
    pub fn sequence(&self, signer_hex: &str) -> u64 {
        self.sequences.get(signer_hex).copied().unwrap_or(0)
    }
}

/// App hash of a sealed encoding.
pub fn app_hash_of(encoded: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"seqmpc/app-hash/v1\0");
    h.update(encoded);
    h.finalize().into()
}

/// Parses a hex ed25519 public key.
pub fn parse_pubkey(hex_str: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_str).map_err(|e| format!("public key is not hex: {e}"))?;
    let arr = <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("public key must be 32 bytes, got {}", bytes.len()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&arr)
        .map_err(|_| "public key is not a valid ed25519 point".to_string())?;
    Ok(arr)
}

/// Chooses the `t` signers of a request: the parties ordered by
/// SHA-256("seqmpc/signers/v1" || key id || request id || party), first `t`. Every node derives
/// the same subset; the spread balances load across parties.
pub fn choose_signers(
    parties: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    request_id: &RequestId,
) -> Vec<NodeId> {
    let mut ranked: Vec<([u8; 32], &NodeId)> = parties
        .iter()
        .map(|p| {
            let mut h = Sha256::new();
            for part in [
                b"seqmpc/signers/v1".as_slice(),
                key_id.as_str().as_bytes(),
                request_id.as_str().as_bytes(),
                p.as_str().as_bytes(),
            ] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            (h.finalize().into(), p)
        })
        .collect();
    ranked.sort();
    let mut chosen: Vec<NodeId> = ranked
        .into_iter()
        .take(threshold as usize)
        .map(|(_, p)| p.clone())
        .collect();
    chosen.sort();
    chosen
}
