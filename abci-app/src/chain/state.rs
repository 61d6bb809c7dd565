//! Deterministic chain state: node registry, accounts and sequences, keys, sign requests.
//!
//! Everything is in ordered maps so that serialization, iteration, events and the app hash are
//! identical on every validator. The app hash is the root of a Merkle tree over every entry
//! ([`merkle`](crate::chain::merkle)), which follows the block's write set.

use std::collections::{BTreeMap, BTreeSet};

use seqmpc_proto::{KeyId, NodeId, RequestId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::entries::{
    AccountEntry, DeadlineItem, KeyEntry, NodeEntry, ProposalEntry, ProvenBlame, SignEntry,
};
use crate::chain::genesis::{Genesis, Governance, Limits};
use crate::chain::merkle::{StateTree, TreeError};
use crate::chain::state_key::StateKey;

/// Version of the persisted state format. Do not change without a migration.
/// 2: the app hash is the root of the state's Merkle tree (1: a hash chain of write sets).
pub const STATE_VERSION: u32 = 2;

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
    sequences: BTreeMap<String, u64>,
    /// Keys.
    keys: BTreeMap<KeyId, KeyEntry>,
    /// Sign requests.
    sign_requests: BTreeMap<RequestId, SignEntry>,
    /// Pending deadlines, ordered by height.
    deadlines: BTreeSet<(u64, DeadlineItem)>,
    /// Height of each node's last committed tx (heartbeat or result); absent = never.
    #[serde(default)]
    node_seen: BTreeMap<NodeId, u64>,
    /// Who approves resharings to other committees and node admissions (genesis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<Governance>,
    /// Governance proposals, pending and recently ended, by id.
    #[serde(default)]
    proposals: BTreeMap<String, ProposalEntry>,
    /// State keys written in the block being executed, by their encoding (whose byte order is
    /// the order of the block's writes). Every mutation goes through a method of this type
    /// that records its key here, so the block's write set, which the app hash and the journal
    /// are made of, is always complete.
    #[serde(skip)]
    dirty: BTreeMap<String, StateKey>,
    /// The Merkle tree over every entry, whose root is the app hash. Not serialized: rebuilt
    /// from the entries at load ([`ChainState::rebuild_tree`]).
    #[serde(skip)]
    tree: StateTree,
}

/// One block's writes: each state key written, with its new JSON value (None = removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockWrites {
    /// Height.
    pub height: u64,
    /// App hash after this block.
    pub app_hash: String,
    /// Writes in key order: the encoded [`StateKey`] and the new value.
    pub writes: Vec<(String, Option<serde_json::Value>)>,
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
                    proven_blames: 0,
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
        let names: BTreeSet<&str> = genesis.accounts.iter().map(|a| a.name.as_str()).collect();
        if names.len() != genesis.accounts.len() {
            return Err("two accounts share a name".into());
        }
        if let Some(g) = &genesis.governance {
            let voters: BTreeSet<&str> = g.accounts.iter().map(String::as_str).collect();
            if voters.len() != g.accounts.len() {
                return Err("governance lists an account twice".into());
            }
            if let Some(unknown) = voters.iter().find(|v| !names.contains(*v)) {
                return Err(format!(
                    "governance names {unknown:?}, not a genesis account"
                ));
            }
            if g.approvals == 0 || g.approvals as usize > voters.len() {
                return Err(format!(
                    "governance approvals must be 1..={} (its accounts), got {}",
                    voters.len(),
                    g.approvals
                ));
            }
            if g.expiry_blocks == 0 {
                return Err("governance expiry_blocks must be positive".into());
            }
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
            node_seen: BTreeMap::new(),
            governance: genesis.governance.clone(),
            proposals: BTreeMap::new(),
            dirty: BTreeMap::new(),
            tree: StateTree::default(),
        })
    }

    /// Governance proposals by id.
    pub fn proposals(&self) -> &BTreeMap<String, ProposalEntry> {
        &self.proposals
    }

    /// A proposal, for writing.
    pub fn proposal_mut(&mut self, id: &str) -> Option<&mut ProposalEntry> {
        self.touch(StateKey::Proposal(id.to_owned()));
        self.proposals.get_mut(id)
    }

    /// Inserts or replaces a proposal.
    pub fn put_proposal(&mut self, entry: ProposalEntry) {
        self.touch(StateKey::Proposal(entry.id.clone()));
        self.proposals.insert(entry.id.clone(), entry);
    }

    /// Removes a proposal.
    pub fn remove_proposal(&mut self, id: &str) {
        self.touch(StateKey::Proposal(id.to_owned()));
        self.proposals.remove(id);
    }

    /// Keys.
    pub fn keys(&self) -> &BTreeMap<KeyId, KeyEntry> {
        &self.keys
    }

    /// Sign requests.
    pub fn sign_requests(&self) -> &BTreeMap<RequestId, SignEntry> {
        &self.sign_requests
    }

    /// Pending deadlines.
    pub fn deadlines(&self) -> &BTreeSet<(u64, DeadlineItem)> {
        &self.deadlines
    }

    /// A key, for writing (recorded in the block's write set).
    pub fn key_mut(&mut self, id: &KeyId) -> Option<&mut KeyEntry> {
        self.touch(StateKey::Key(id.clone()));
        self.keys.get_mut(id)
    }

    /// Inserts or replaces a key.
    pub fn put_key(&mut self, entry: KeyEntry) {
        self.touch(StateKey::Key(entry.key_id.clone()));
        self.keys.insert(entry.key_id.clone(), entry);
    }

    /// A sign request, for writing.
    pub fn sign_mut(&mut self, id: &RequestId) -> Option<&mut SignEntry> {
        self.touch(StateKey::Sign(id.clone()));
        self.sign_requests.get_mut(id)
    }

    /// Removes a sign request (retention over).
    pub fn remove_sign(&mut self, id: &RequestId) {
        self.touch(StateKey::Sign(id.clone()));
        self.sign_requests.remove(id);
    }

    /// Inserts or replaces a sign request.
    pub fn put_sign(&mut self, entry: SignEntry) {
        self.touch(StateKey::Sign(entry.request_id.clone()));
        self.sign_requests.insert(entry.request_id.clone(), entry);
    }

    /// Sets a signer's next sequence.
    pub fn set_sequence(&mut self, signer_hex: &str, next: u64) {
        self.touch(StateKey::Sequence(signer_hex.to_owned()));
        self.sequences.insert(signer_hex.to_owned(), next);
    }

    /// Adds a deadline.
    pub fn add_deadline(&mut self, height: u64, item: DeadlineItem) {
        self.touch(StateKey::Deadline(height, item.clone()));
        self.deadlines.insert((height, item));
    }

    /// Removes a deadline.
    pub fn remove_deadline(&mut self, height: u64, item: DeadlineItem) {
        self.touch(StateKey::Deadline(height, item.clone()));
        self.deadlines.remove(&(height, item));
    }

    /// Records a committed tx of `node` at `height` (its liveness).
    pub fn set_seen(&mut self, node: &NodeId, height: u64) {
        self.touch(StateKey::Seen(node.clone()));
        self.node_seen.insert(node.clone(), height);
    }

    /// Height of a node's last committed tx, if any.
    pub fn last_seen(&self, node: &NodeId) -> Option<u64> {
        self.node_seen.get(node).copied()
    }

    /// Whether `node` counts as live at `height`: its last committed tx (genesis if none) is
    /// at most `liveness_window_blocks` old.
    pub fn is_live(&self, node: &NodeId, height: u64) -> bool {
        let seen = self.last_seen(node).unwrap_or(0);
        height <= seen.saturating_add(self.limits.liveness_window_blocks)
    }

    /// Admits a node (a `NodeJoin` tx): inserts it into the registry and its key index.
    pub fn add_node(&mut self, entry: NodeEntry) {
        self.touch(StateKey::Node(entry.id.clone()));
        self.node_keys
            .insert(entry.public_key.clone(), entry.id.clone());
        self.nodes.insert(entry.id.clone(), entry);
    }

    /// Replaces the key of registered `node` (a `NodeRotateKey`): the old key names no signer
    /// any more, and the new key starts at sequence 0 (the old key's sequence stays, so its
    /// old txs can never be replayed under it).
    pub fn set_node_key(&mut self, node: &NodeId, public_key: String) {
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        let old = std::mem::replace(&mut entry.public_key, public_key.clone());
        self.node_keys.remove(&old);
        self.node_keys.insert(public_key, node.clone());
        self.touch(StateKey::Node(node.clone()));
    }

    /// Removes `node` from the registry and its key index, and forgets its liveness (a
    /// `NodeRemove`). Its key's sequence stays, so a later re-admission under the same key
    /// cannot replay its old txs.
    pub fn remove_node(&mut self, node: &NodeId) {
        if let Some(e) = self.nodes.remove(node) {
            self.node_keys.remove(&e.public_key);
            self.touch(StateKey::Node(node.clone()));
        }
        if self.node_seen.remove(node).is_some() {
            self.touch(StateKey::Seen(node.clone()));
        }
    }

    /// Counts one more proven blame of each culprit in `proven` (one session's).
    pub fn count_proven_blames(&mut self, proven: &[ProvenBlame]) {
        let culprits: BTreeSet<&NodeId> = proven.iter().map(|p| &p.culprit).collect();
        for c in culprits {
            if let Some(n) = self.nodes.get_mut(c) {
                n.proven_blames = n.proven_blames.saturating_add(1);
                self.touch(StateKey::Node(c.clone()));
            }
        }
    }

    /// Records a write of `key` in the block's write set.
    fn touch(&mut self, key: StateKey) {
        self.dirty.insert(key.to_string(), key);
    }

    /// The current value of a state key (None = absent), as JSON.
    fn value_of(&self, key: &StateKey) -> Option<serde_json::Value> {
        match key {
            StateKey::Genesis => Some(serde_json::json!({
                "chain_id": self.chain_id,
                "genesis_hash": self.genesis_hash,
            })),
            StateKey::Key(id) => self.keys.get(id).and_then(|e| serde_json::to_value(e).ok()),
            StateKey::Sign(id) => self
                .sign_requests
                .get(id)
                .and_then(|e| serde_json::to_value(e).ok()),
            StateKey::Sequence(signer_hex) => {
                self.sequences.get(signer_hex).map(|v| serde_json::json!(v))
            }
            StateKey::Seen(node) => self.node_seen.get(node).map(|v| serde_json::json!(v)),
            StateKey::Node(node) => self
                .nodes
                .get(node)
                .and_then(|e| serde_json::to_value(e).ok()),
            StateKey::Proposal(id) => self
                .proposals
                .get(id)
                .and_then(|e| serde_json::to_value(e).ok()),
            StateKey::Deadline(height, item) => self
                .deadlines
                .get(&(*height, item.clone()))
                .and_then(|d| serde_json::to_value(d).ok()),
        }
    }

    /// Every entry of the state as the Merkle tree holds it: the encoded [`StateKey`] and the
    /// canonical JSON of its value.
    fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let keys = std::iter::once(StateKey::Genesis)
            .chain(self.nodes.keys().cloned().map(StateKey::Node))
            .chain(self.keys.keys().cloned().map(StateKey::Key))
            .chain(self.sign_requests.keys().cloned().map(StateKey::Sign))
            .chain(self.sequences.keys().cloned().map(StateKey::Sequence))
            .chain(self.node_seen.keys().cloned().map(StateKey::Seen))
            .chain(self.proposals.keys().cloned().map(StateKey::Proposal))
            .chain(
                self.deadlines
                    .iter()
                    .map(|(h, item)| StateKey::Deadline(*h, item.clone())),
            );
        keys.filter_map(|k| {
            let value = self.value_of(&k)?;
            Some((k.to_string().into_bytes(), leaf_value(&value)))
        })
        .collect()
    }

    /// Rebuilds the Merkle tree from the entries (a state just loaded) at the state's height,
    /// and checks that its root is the recorded app hash.
    pub fn rebuild_tree(&mut self) -> Result<(), String> {
        let tree = StateTree::rebuild(self.height, self.entries()).map_err(|e| e.to_string())?;
        let root = tree
            .latest()
            .map(|(_, r)| hex::encode(r))
            .unwrap_or_default();
        if root != self.app_hash {
            return Err(format!(
                "the state at height {} does not hash to its app hash {} (its Merkle root is {root})",
                self.height, self.app_hash
            ));
        }
        self.tree = tree;
        Ok(())
    }

    /// The Merkle tree (proofs of entries at a kept height).
    pub fn tree(&self) -> &StateTree {
        &self.tree
    }

    /// Ends a block: collects its write set, writes it into the Merkle tree as version
    /// `height` and takes the new root as the app hash. Returns the writes to journal. Cost is
    /// proportional to what the block wrote, not to the whole state. The first seal (genesis,
    /// or a state built without a tree) builds the tree from every entry.
    pub fn seal_block(&mut self, height: u64) -> Result<(BlockWrites, [u8; 32]), TreeError> {
        let dirty = std::mem::take(&mut self.dirty);
        let writes: Vec<(String, Option<serde_json::Value>)> = dirty
            .into_iter()
            .map(|(encoded, key)| (encoded, self.value_of(&key)))
            .collect();
        let hash = if self.tree.latest().is_none() {
            self.tree = StateTree::rebuild(height, self.entries())?;
            self.tree.latest().map(|(_, r)| r).ok_or(TreeError::Empty)?
        } else {
            self.tree.commit(height, tree_writes(&writes))?
        };
        self.height = height;
        self.app_hash = hex::encode(hash);
        Ok((
            BlockWrites {
                height,
                app_hash: self.app_hash.clone(),
                writes,
            },
            hash,
        ))
    }

    /// Applies a journaled block to a state loaded from an older snapshot, checking that the
    /// Merkle root after it is the app hash the block records.
    pub fn apply_writes(&mut self, block: &BlockWrites) -> Result<(), String> {
        if self.tree.latest().is_none() {
            self.rebuild_tree()?;
        }
        // A mismatch fails the whole load: the state is dropped, tree and all.
        let root = self
            .tree
            .commit(block.height, tree_writes(&block.writes))
            .map_err(|e| format!("journal block {}: {e}", block.height))?;
        if hex::encode(root) != block.app_hash {
            return Err(format!(
                "journal block {} does not match its app hash",
                block.height
            ));
        }
        for (encoded, value) in &block.writes {
            let key = StateKey::parse(encoded)?;
            let bad = |e: serde_json::Error| format!("{encoded}: {e}");
            let other = |what: &dyn std::fmt::Display| format!("{encoded}: entry is for {what}");
            match (key, value) {
                (StateKey::Genesis, v) => {
                    if v.as_ref() != self.value_of(&StateKey::Genesis).as_ref() {
                        return Err(format!("{encoded}: not this chain's genesis"));
                    }
                }
                (StateKey::Key(id), Some(v)) => {
                    let e: KeyEntry = serde_json::from_value(v.clone()).map_err(bad)?;
                    if e.key_id != id {
                        return Err(other(&format_args!("key {}", e.key_id)));
                    }
                    self.keys.insert(id, e);
                }
                (StateKey::Key(id), None) => {
                    self.keys.remove(&id);
                }
                (StateKey::Sign(id), Some(v)) => {
                    let e: SignEntry = serde_json::from_value(v.clone()).map_err(bad)?;
                    if e.request_id != id {
                        return Err(other(&format_args!("sign request {}", e.request_id)));
                    }
                    self.sign_requests.insert(id, e);
                }
                (StateKey::Sign(id), None) => {
                    self.sign_requests.remove(&id);
                }
                (StateKey::Sequence(signer_hex), Some(v)) => {
                    let n: u64 = serde_json::from_value(v.clone()).map_err(bad)?;
                    self.sequences.insert(signer_hex, n);
                }
                (StateKey::Sequence(signer_hex), None) => {
                    self.sequences.remove(&signer_hex);
                }
                (StateKey::Seen(node), Some(v)) => {
                    let n: u64 = serde_json::from_value(v.clone()).map_err(bad)?;
                    self.node_seen.insert(node, n);
                }
                (StateKey::Seen(node), None) => {
                    self.node_seen.remove(&node);
                }
                (StateKey::Node(node), Some(v)) => {
                    let e: NodeEntry = serde_json::from_value(v.clone()).map_err(bad)?;
                    if e.id != node {
                        return Err(other(&format_args!("node {}", e.id)));
                    }
                    self.node_keys.insert(e.public_key.clone(), node.clone());
                    // A rotated key: the old one names no node any more.
                    if let Some(old) = self.nodes.insert(node, e.clone()) {
                        if old.public_key != e.public_key {
                            self.node_keys.remove(&old.public_key);
                        }
                    }
                }
                (StateKey::Node(node), None) => {
                    if let Some(e) = self.nodes.remove(&node) {
                        self.node_keys.remove(&e.public_key);
                    }
                }
                (StateKey::Proposal(id), Some(v)) => {
                    let e: ProposalEntry = serde_json::from_value(v.clone()).map_err(bad)?;
                    if e.id != id {
                        return Err(other(&format_args!("proposal {}", e.id)));
                    }
                    self.proposals.insert(id, e);
                }
                (StateKey::Proposal(id), None) => {
                    self.proposals.remove(&id);
                }
                (StateKey::Deadline(height, item), Some(v)) => {
                    let d: (u64, DeadlineItem) = serde_json::from_value(v.clone()).map_err(bad)?;
                    if d != (height, item) {
                        return Err(other(&format_args!("deadline {d:?}")));
                    }
                    self.deadlines.insert(d);
                }
                (StateKey::Deadline(height, item), None) => {
                    self.deadlines.remove(&(height, item));
                }
            }
        }
        self.height = block.height;
        self.app_hash = block.app_hash.clone();
        Ok(())
    }

    /// Canonical encoding (JSON of ordered maps: deterministic).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data of strings, numbers and ordered maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Next sequence number of a signer.
    pub fn sequence(&self, signer_hex: &str) -> u64 {
        self.sequences.get(signer_hex).copied().unwrap_or(0)
    }
}

/// A state entry's value as the Merkle tree holds it: canonical JSON (object fields in name
/// order).
fn leaf_value(value: &serde_json::Value) -> Vec<u8> {
    // Serializing a JSON value cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// A block's writes as the Merkle tree takes them.
fn tree_writes(
    writes: &[(String, Option<serde_json::Value>)],
) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> + '_ {
    writes
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(leaf_value)))
}

/// Checksum of a snapshot's bytes (SHA-256 over a domain tag and the bytes).
pub fn checksum_of(encoded: &[u8]) -> [u8; 32] {
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
