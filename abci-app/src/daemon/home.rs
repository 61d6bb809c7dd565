//! A node's home directory (`mpcd init` makes it 0700): its files, its identity in the
//! registry, and the stores it opens. Shared by `mpcd start` ([`super::run`]) and the offline
//! commands (backup, restore, key rotation).

use std::path::Path;

use anyhow::{bail, Context};
use seqmpc_module::p2p::PeerInfo;
use seqmpc_module::store::{KeyStore, MasterKey};
use seqmpc_proto::NodeId;
use tracing::{info, warn};

use super::keys::load_key_file;
use super::master_source::MasterKeySource;
use crate::abci::App;
use crate::chain::genesis::Genesis;
use crate::chain::ChainState;

/// The node key (ed25519, also the libp2p identity).
pub const NODE_KEY: &str = "node.key";
/// The node key a `NodeRotateKey` will switch to (`mpcd new-node-key`).
pub const NEXT_NODE_KEY: &str = "node.key.next";
/// The master key file (absent when a command gives the key).
pub const MASTER_KEY: &str = super::master_source::MASTER_KEY_FILE;
/// The id `mpcd init --node-id` wrote.
pub const NODE_ID_FILE: &str = "node_id";
/// The key store's directory.
pub const KEYSTORE_DIR: &str = "keystore";
/// The genesis file's bytes and contents.
pub fn load_genesis(path: &Path) -> anyhow::Result<(Vec<u8>, Genesis)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read genesis {}", path.display()))?;
    let genesis = serde_json::from_slice(&bytes).context("invalid genesis")?;
    Ok((bytes, genesis))
}

/// This node's id: the registry entry of the node key's public key, in the genesis or (a node
/// admitted later by a `NodeJoin` tx) in the committed chain state; for a node not admitted
/// yet, the id `mpcd init --node-id` wrote to HOME/node_id (the node starts, replays the chain
/// and is reachable once its `NodeJoin` is committed).
pub fn my_node_id(
    home: &Path,
    genesis: &Genesis,
    state: Option<&ChainState>,
    my_pk: &str,
) -> anyhow::Result<NodeId> {
    let my_pk = my_pk.to_ascii_lowercase();
    if let Some(id) = state.and_then(|s| s.node_keys.get(&my_pk)) {
        return Ok(id.clone());
    }
    if let Some(n) = genesis
        .nodes
        .iter()
        .find(|n| n.public_key.eq_ignore_ascii_case(&my_pk))
    {
        // A genesis key the committed state moved on from: rotated away, or removed.
        if let Some(s) = state {
            match s.nodes.get(&n.id) {
                Some(now) => bail!(
                    "this node's key {my_pk} was rotated away: the chain registers key {} for \
                     node {} (HOME/{NEXT_NODE_KEY} should hold it)",
                    now.public_key,
                    n.id
                ),
                None => bail!("node {} was removed from the node registry", n.id),
            }
        }
        return Ok(n.id.clone());
    }
    let path = home.join(NODE_ID_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "this node's key {my_pk} is not in the node registry, and {} cannot be read",
            path.display()
        )
    })?;
    let id = NodeId::new(text.trim()).with_context(|| format!("{}", path.display()))?;
    let taken = genesis.nodes.iter().any(|n| n.id == id)
        || state.is_some_and(|s| s.nodes.contains_key(&id));
    if taken {
        bail!(
            "node id {id} (from {}) is registered with another key",
            path.display()
        );
    }
    warn!(node = %id, key = %my_pk, "this node's key is in neither the genesis nor the committed \
        state it holds: it learns the registry while it replays the chain, and peers accept it \
        once a NodeJoin for it is committed");
    Ok(id)
}

/// If HOME/node.key.next holds the key the committed state registers for a node (a
/// `NodeRotateKey` executed), it replaces HOME/node.key, durably; the old key is gone.
pub fn adopt_next_node_key(home: &Path, state: Option<&ChainState>) -> anyhow::Result<()> {
    let next = home.join(NEXT_NODE_KEY);
    if !next.exists() {
        return Ok(());
    }
    let key = load_key_file(&next)?;
    let pk = hex::encode(key.verifying_key().to_bytes());
    let Some(node) = state.and_then(|s| s.node_keys.get(&pk)) else {
        info!(key = %pk, "HOME/{NEXT_NODE_KEY} waits for a committed NodeRotateKey");
        return Ok(());
    };
    std::fs::rename(&next, home.join(NODE_KEY))
        .with_context(|| format!("replacing {NODE_KEY} with {NEXT_NODE_KEY}"))?;
    std::fs::File::open(home)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", home.display()))?;
    warn!(%node, key = %pk, "the chain registers HOME/{NEXT_NODE_KEY} for this node: it is now HOME/{NODE_KEY}");
    Ok(())
}

/// Whether HOME/node.key.next holds the key `public_key`.
pub fn next_key_is(home: &Path, public_key: &[u8; 32]) -> anyhow::Result<bool> {
    let next = home.join(NEXT_NODE_KEY);
    if !next.exists() {
        return Ok(false);
    }
    Ok(load_key_file(&next)?.verifying_key().to_bytes() == *public_key)
}

/// The p2p registry at start: the committed state's nodes (genesis plus every `NodeJoin`
/// committed so far), or the genesis before the first block. Later joins arrive as jobs.
pub fn registry_peers(
    genesis: &Genesis,
    state: Option<&ChainState>,
) -> anyhow::Result<Vec<PeerInfo>> {
    let nodes: Vec<(&NodeId, &str, &str)> = match state {
        Some(s) => s
            .nodes
            .values()
            .map(|n| (&n.id, n.public_key.as_str(), n.p2p_addr.as_str()))
            .collect(),
        None => genesis
            .nodes
            .iter()
            .map(|n| (&n.id, n.public_key.as_str(), n.p2p_addr.as_str()))
            .collect(),
    };
    nodes
        .into_iter()
        .map(|(id, public_key, addr)| {
            let public_key = crate::chain::state::parse_pubkey(public_key)
                .map_err(|e| anyhow::anyhow!("registered node {id}: {e}"))?;
            Ok(PeerInfo {
                node: id.clone(),
                public_key,
                addr: addr.to_owned(),
            })
        })
        .collect()
}

/// The chain id and this node's id, for the offline key store commands.
pub fn identity(home: &Path, genesis_path: &Path) -> anyhow::Result<(String, NodeId)> {
    let (genesis_bytes, genesis) = load_genesis(genesis_path)?;
    // The committed state the node keeps in HOME, if any: a node admitted later, or whose key
    // was rotated, is known there and not in the genesis. Read only: the node may be running.
    let committed = App::read_committed(home, &genesis_bytes)?;
    let key = load_key_file(&home.join(NODE_KEY))?;
    let me = my_node_id(
        home,
        &genesis,
        committed.as_ref(),
        &hex::encode(key.verifying_key().to_bytes()),
    )?;
    Ok((genesis.chain_id, me))
}

/// The master key of the node in `home`, from its file or its command.
pub fn load_master_key(home: &Path) -> anyhow::Result<MasterKey> {
    MasterKeySource::of_home(home)
        .and_then(|s| s.load())
        .context("loading the master key")
}

/// Opens the key store of a stopped node.
pub fn open_store(home: &Path, chain_id: &str, me: &NodeId) -> anyhow::Result<KeyStore> {
    let master = load_master_key(home)?;
    KeyStore::open(&home.join(KEYSTORE_DIR), &master, chain_id, me).context("opening the key store")
}

/// Refuses a HOME that other users can enter or read: it holds the node key, the master key
/// and the key store (`mpcd init` creates it 0700).
pub fn check_home_private(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(home).with_context(|| format!("reading {}", home.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is mode {mode:o}: other users could read the node's keys; run `chmod 700 {}`",
            home.display(),
            home.display()
        );
    }
    Ok(())
}
