//! The chain state's Merkle commitment: a Jellyfish Merkle tree (Penumbra's `jmt`, SHA-256)
//! over every state entry, keyed by the entry's [`StateKey`](crate::chain::state_key::StateKey)
//! encoding, whose value is the entry's canonical JSON. Its root is the app hash, so a client
//! checks one entry (a key's status, a signature) against the `app_hash` of a header with an
//! ICS23 proof ([`verify`], spec [`jmt::ics23_spec`]).
//!
//! One tree version per block height. A block costs what it wrote: `jmt` rewrites the path of
//! each written key (O(writes · log n) hashes). The tree lives in memory: it is rebuilt from
//! the state at load (one version, the loaded height) and then follows every block. The last
//! [`KEEP_VERSIONS`] versions are kept for proofs at a past height; older nodes and values are
//! pruned as each block commits, in time proportional to what that old block wrote.
//!
//! Why `jmt` (and not an IAVL tree): its root depends only on the set of entries, not on the
//! order they were written in, so a tree rebuilt from a snapshot has the very root the
//! incrementally updated tree had, and the app hash needs no tree history on disk. It ships
//! ICS23 existence and non-existence proofs and their spec, which ibc-rs and the ICS23
//! libraries verify.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jmt::storage::{HasPreimage, LeafNode, Node, NodeKey, StaleNodeIndex, TreeReader};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};

/// Tree versions (block heights) kept for proofs at a past height.
pub const KEEP_VERSIONS: u64 = 100;

/// The `type` of the ABCI `ProofOp` that carries a proof of this tree: its `data` is a
/// protobuf `ics23.CommitmentProof`, its `key` the state key.
pub const PROOF_OP_TYPE: &str = "ics23:jmt";

/// Why the tree cannot answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The height is older than the kept versions, or not committed yet.
    #[error(
        "height {height} is not kept: proofs and past values cover heights {oldest}..={latest}"
    )]
    NotKept {
        /// Asked.
        height: u64,
        /// Oldest kept.
        oldest: u64,
        /// Latest.
        latest: u64,
    },
    /// The tree has no version yet.
    #[error("the state tree is empty")]
    Empty,
    /// Heights must follow each other.
    #[error("tree version {got} after {latest:?}: versions must follow each other")]
    OutOfOrder {
        /// Latest written.
        latest: Option<u64>,
        /// Asked to write.
        got: u64,
    },
    /// `jmt` failed (a missing node: a bug).
    #[error("state tree: {0}")]
    Tree(String),
}

fn tree_err(e: anyhow::Error) -> TreeError {
    TreeError::Tree(format!("{e:#}"))
}

/// Nodes, values and key preimages of the kept versions.
#[derive(Clone, Default)]
struct Store {
    nodes: BTreeMap<NodeKey, Node>,
    /// Each value by key hash and the version that wrote it (None: removed).
    values: BTreeMap<(KeyHash, Version), Option<OwnedValue>>,
    preimages: BTreeMap<KeyHash, Vec<u8>>,
    /// Nodes replaced by a later version, by the version that replaced them.
    stale: BTreeSet<StaleNodeIndex>,
    /// Key hashes each kept version wrote (what pruning that version later looks at).
    written: BTreeMap<Version, Vec<KeyHash>>,
    /// The root node of each kept version.
    roots: BTreeMap<Version, NodeKey>,
    /// A version read as an empty tree (the one before a rebuilt version).
    empty_root: Option<Version>,
}

impl TreeReader for Store {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if Some(node_key.version()) == self.empty_root && node_key.nibble_path().num_nibbles() == 0
        {
            return Ok(Some(Node::Null));
        }
        Ok(self.nodes.get(node_key).cloned())
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self
            .values
            .range((key_hash, 0)..=(key_hash, max_version))
            .next_back()
            .and_then(|(_, v)| v.clone()))
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // Only `jmt`'s restore and overwrite paths ask, and this tree uses neither.
        anyhow::bail!("the state tree does not support restore")
    }
}

impl HasPreimage for Store {
    fn preimage(&self, key_hash: KeyHash) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.preimages.get(&key_hash).cloned())
    }
}

/// The chain state's Merkle tree (see the module doc).
#[derive(Clone, Default)]
pub struct StateTree {
    store: Store,
    /// Latest version and its root.
    latest: Option<(Version, [u8; 32])>,
    /// Oldest version still answerable.
    oldest: Version,
}

impl fmt::Debug for StateTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateTree")
            .field("latest", &self.latest.map(|(v, r)| (v, hex::encode(r))))
            .field("oldest", &self.oldest)
            .field("nodes", &self.store.nodes.len())
            .finish()
    }
}

/// Two trees are equal when their latest version and root are (what the app hash says).
impl PartialEq for StateTree {
    fn eq(&self, other: &Self) -> bool {
        self.latest == other.latest
    }
}

impl Eq for StateTree {}

/// A key's hash in the tree.
fn key_hash(key: &[u8]) -> KeyHash {
    KeyHash::with::<sha2::Sha256>(key)
}

impl StateTree {
    /// A tree whose first version is `version`, holding `entries` (a state loaded at that
    /// height, or the genesis state at 0). Its root is what the incremental tree had.
    pub fn rebuild(
        version: u64,
        entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<StateTree, TreeError> {
        let mut tree = StateTree::default();
        // `jmt` writes version v on top of v - 1: present v - 1 as an empty tree.
        tree.store.empty_root = version.checked_sub(1);
        tree.write(version, entries.into_iter().map(|(k, v)| (k, Some(v))))?;
        tree.store.empty_root = None;
        // Nothing is older than the rebuilt version: pruning it later has nothing to find, and
        // walking every key of the state then would stall one block.
        tree.store.written.remove(&version);
        tree.oldest = version;
        Ok(tree)
    }

    /// Writes version `version` (the next height): each key with its new value (None:
    /// removed), each key at most once. Returns the new root, then prunes the version that
    /// leaves the kept window.
    pub fn commit(
        &mut self,
        version: u64,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<[u8; 32], TreeError> {
        let expected = self.latest.and_then(|(v, _)| v.checked_add(1));
        if expected != Some(version) {
            return Err(TreeError::OutOfOrder {
                latest: self.latest.map(|(v, _)| v),
                got: version,
            });
        }
        let root = self.write(version, writes)?;
        // Kept: the KEEP_VERSIONS versions up to `version`.
        let oldest = version
            .saturating_sub(KEEP_VERSIONS.saturating_sub(1))
            .max(self.oldest);
        while self.oldest < oldest {
            self.prune(self.oldest);
            self.oldest = self.oldest.saturating_add(1);
        }
        Ok(root)
    }

    fn write(
        &mut self,
        version: u64,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<[u8; 32], TreeError> {
        let mut set = Vec::new();
        let mut hashes = Vec::new();
        for (key, value) in writes {
            let h = key_hash(&key);
            if value.is_some() {
                self.store.preimages.insert(h, key);
            }
            hashes.push(h);
            set.push((h, value));
        }
        let (root, batch) = Sha256Jmt::new(&self.store)
            .put_value_set(set, version)
            .map_err(tree_err)?;
        let store = &mut self.store;
        for (k, n) in batch.node_batch.nodes() {
            if k.nibble_path().num_nibbles() == 0 {
                store.roots.insert(k.version(), k.clone());
            }
            store.nodes.insert(k.clone(), n.clone());
        }
        for ((v, h), value) in batch.node_batch.values() {
            store.values.insert((*h, *v), value.clone());
        }
        store.stale.extend(batch.stale_node_index_batch);
        store.written.insert(version, hashes);
        self.latest = Some((version, root.0));
        Ok(root.0)
    }

    /// Forgets what only version `old` needed (it leaves the kept window): the nodes replaced
    /// at or before the next version, its root, and the values its writes superseded.
    fn prune(&mut self, old: Version) {
        let store = &mut self.store;
        while let Some(first) = store.stale.first() {
            if first.stale_since_version > old.saturating_add(1) {
                break;
            }
            if let Some(s) = store.stale.pop_first() {
                store.nodes.remove(&s.node_key);
            }
        }
        // A root is never a child: version `old`'s root serves only `old`. (An empty block
        // copies the root without marking the old one stale.)
        if let Some(root) = store.roots.remove(&old) {
            store.nodes.remove(&root);
        }
        for h in store.written.remove(&old).unwrap_or_default() {
            // Values of `h` older than `old` serve no kept version: `old`'s value supersedes
            // them for every version from `old` on.
            let older: Vec<(KeyHash, Version)> = store
                .values
                .range((h, 0)..(h, old))
                .map(|(k, _)| *k)
                .collect();
            for k in older {
                store.values.remove(&k);
            }
            // A removal that nothing follows reads as absence by itself.
            let last = store.values.range((h, 0)..=(h, Version::MAX)).next_back();
            if let Some((&(_, v), None)) = last {
                if v <= old {
                    store.values.remove(&(h, v));
                    store.preimages.remove(&h);
                }
            }
        }
    }

    /// The latest version and root, if any.
    pub fn latest(&self) -> Option<(u64, [u8; 32])> {
        self.latest
    }

    /// The value of `key` at `version` (a kept one) with an ICS23 proof of it (existence) or
    /// of its absence (non-existence) against that version's root.
    pub fn prove(
        &self,
        key: &[u8],
        version: u64,
    ) -> Result<(Option<Vec<u8>>, ics23::CommitmentProof), TreeError> {
        self.check_kept(version)?;
        Sha256Jmt::new(&self.store)
            .get_with_ics23_proof(key.to_vec(), version)
            .map_err(tree_err)
    }

    /// The value of `key` at `version` (a kept one).
    pub fn get(&self, key: &[u8], version: u64) -> Result<Option<Vec<u8>>, TreeError> {
        self.check_kept(version)?;
        Sha256Jmt::new(&self.store)
            .get(key_hash(key), version)
            .map_err(tree_err)
    }

    fn check_kept(&self, version: u64) -> Result<(), TreeError> {
        let (latest, _) = self.latest.ok_or(TreeError::Empty)?;
        if version < self.oldest || version > latest {
            return Err(TreeError::NotKept {
                height: version,
                oldest: self.oldest,
                latest,
            });
        }
        Ok(())
    }
}

/// Checks an ICS23 proof of this tree against `root` (an app hash): that `key` holds `value`,
/// or (`value` None) that `key` is absent.
pub fn verify(
    root: &[u8],
    key: &[u8],
    value: Option<&[u8]>,
    proof: &ics23::CommitmentProof,
) -> bool {
    let spec = jmt::ics23_spec();
    let root = root.to_vec();
    match value {
        Some(v) => {
            ics23::verify_membership::<ics23::HostFunctionsManager>(proof, &spec, &root, key, v)
        }
        None => {
            ics23::verify_non_membership::<ics23::HostFunctionsManager>(proof, &spec, &root, key)
        }
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
    }

    fn del(k: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        (k.as_bytes().to_vec(), None)
    }

    #[test]
    fn state_tree__should_prove_values_and_absences_against_each_kept_root() {
        let mut tree = StateTree::rebuild(0, [(b"genesis".to_vec(), b"g".to_vec())]).unwrap();
        let r1 = tree
            .commit(1, [kv("key/a", "1"), kv("key/b", "2")])
            .unwrap();
        let r2 = tree.commit(2, [kv("key/a", "3"), del("key/b")]).unwrap();
        assert_ne!(r1, r2);

        let (v, p) = tree.prove(b"key/a", 1).unwrap();
        assert_eq!(v.as_deref(), Some(&b"1"[..]));
        assert!(verify(&r1, b"key/a", Some(b"1"), &p));
        assert!(
            !verify(&r2, b"key/a", Some(b"1"), &p),
            "a proof binds its root"
        );
        assert!(
            !verify(&r1, b"key/a", Some(b"3"), &p),
            "a proof binds its value"
        );

        let (v, p) = tree.prove(b"key/b", 2).unwrap();
        assert_eq!(v, None);
        assert!(verify(&r2, b"key/b", None, &p));
        assert!(!verify(&r1, b"key/b", None, &p));
        assert_eq!(tree.get(b"key/a", 2).unwrap().as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn state_tree__should_rebuild_to_the_root_the_incremental_tree_reached() {
        let mut tree = StateTree::rebuild(0, []).unwrap();
        for h in 1..=30u64 {
            let mut w = vec![kv(&format!("seq/{}", h % 7), &h.to_string())];
            if h % 5 == 0 {
                w.push(del(&format!("seq/{}", (h + 1) % 7)));
            }
            tree.commit(h, w).unwrap();
        }
        // The entries at 30, written in one go at another version number.
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..7)
            .filter_map(|i| {
                let k = format!("seq/{i}");
                tree.get(k.as_bytes(), 30)
                    .unwrap()
                    .map(|v| (k.into_bytes(), v))
            })
            .collect();
        let rebuilt = StateTree::rebuild(30, entries).unwrap();
        assert_eq!(rebuilt.latest(), tree.latest());
        assert!(
            rebuilt.store.written.is_empty(),
            "a rebuild leaves nothing to prune"
        );
        let mut next = rebuilt.clone();
        let a = next.commit(31, [kv("key/x", "1")]).unwrap();
        let b = tree.commit(31, [kv("key/x", "1")]).unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            rebuilt.prove(b"seq/1", 29),
            Err(TreeError::NotKept { oldest: 30, .. })
        ));
    }

    #[test]
    fn state_tree__should_prune_old_versions_and_keep_answering_the_kept_ones() {
        let mut tree = StateTree::rebuild(0, []).unwrap();
        let mut roots = BTreeMap::new();
        for h in 1..=(3 * KEEP_VERSIONS) {
            // One key rewritten every block, one new key per block, empty blocks too.
            let w = if h % 3 == 0 {
                vec![]
            } else {
                vec![kv("hot", &h.to_string()), kv(&format!("k/{h}"), "v")]
            };
            roots.insert(h, tree.commit(h, w).unwrap());
        }
        let latest = 3 * KEEP_VERSIONS;
        let oldest = latest + 1 - KEEP_VERSIONS;
        assert!(matches!(
            tree.get(b"hot", oldest - 1),
            Err(TreeError::NotKept { .. })
        ));
        for h in oldest..=latest {
            let (v, p) = tree.prove(b"hot", h).unwrap();
            assert!(verify(&roots[&h], b"hot", v.as_deref(), &p), "height {h}");
            let (v, p) = tree.prove(b"k/1", h).unwrap();
            assert_eq!(v.as_deref(), Some(&b"v"[..]));
            assert!(verify(&roots[&h], b"k/1", Some(b"v"), &p));
        }
        // Bounded: nodes of about KEEP_VERSIONS versions, not of all of them.
        let values = tree
            .store
            .values
            .range((key_hash(b"hot"), 0)..)
            .take_while(|((h, _), _)| *h == key_hash(b"hot"))
            .count();
        assert!(
            values <= KEEP_VERSIONS as usize + 1,
            "{values} values of one key kept"
        );
        assert!(tree.store.written.len() <= KEEP_VERSIONS as usize);
        let roots_kept = tree
            .store
            .nodes
            .keys()
            .filter(|k| k.nibble_path().num_nibbles() == 0)
            .count();
        assert_eq!(roots_kept, KEEP_VERSIONS as usize);
    }

    #[test]
    fn state_tree__should_refuse_a_version_out_of_order() {
        let mut tree = StateTree::rebuild(5, []).unwrap();
        assert_eq!(
            tree.commit(7, []),
            Err(TreeError::OutOfOrder {
                latest: Some(5),
                got: 7
            })
        );
        assert!(tree.commit(6, []).is_ok());
    }
}
