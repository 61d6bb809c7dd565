//! The chain's node registry as the p2p layer sees it: node id, authenticated `PeerId`, address.

use std::collections::BTreeMap;

use libp2p::{identity, Multiaddr, PeerId};

use super::{P2pError, PeerInfo};
use crate::proto::NodeId;

/// A registry node other than this one.
#[derive(Debug)]
pub(super) struct Remote {
    /// Its node id on the chain.
    pub node: NodeId,
    /// Derived from its registered ed25519 key; Noise authenticates it.
    pub peer_id: PeerId,
    /// Where to dial it; `None` when the registered address does not parse (inbound only).
    pub addr: Option<Multiaddr>,
    /// Its registered key, which signs every message it sends.
    pub key: ed25519_dalek::VerifyingKey,
    /// Removed from the registry (a committed `NodeRemove`): no `PeerId` maps to it any more.
    /// It keeps its index, which the event loop and the handle use.
    pub removed: bool,
}

/// Registry nodes other than this one, indexed by position.
#[derive(Debug)]
pub(super) struct Registry {
    /// Remote nodes; their position is the peer index used by the event loop and the handle.
    pub remotes: Vec<Remote>,
    by_peer: BTreeMap<PeerId, usize>,
}

/// `PeerId` of an ed25519 public key.
pub(super) fn peer_id_of(public_key: &[u8; 32]) -> Result<PeerId, identity::DecodingError> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(public_key)?;
    Ok(identity::PublicKey::from(pk).to_peer_id())
}

impl Registry {
    /// Builds the registry from the chain's list.
    ///
    /// The entry of `local` must carry this node's own key (a mismatch is a configuration error:
    /// every other node would refuse us). Faulty entries of *other* nodes (bad key, duplicate
    /// id or key, unparsable address) are logged and skipped or made inbound-only, so one bad
    /// registration cannot stop this node from starting.
    pub(super) fn build(
        local: &NodeId,
        local_peer: PeerId,
        peers: &[PeerInfo],
    ) -> Result<Self, P2pError> {
        let mut remotes: Vec<Remote> = Vec::with_capacity(peers.len());
        let mut by_peer = BTreeMap::new();
        if !peers.iter().any(|p| &p.node == local) {
            tracing::warn!(node = %local, "this node is not in the node registry: peers will refuse its connections");
        }
        for p in peers {
            let peer_id = match peer_id_of(&p.public_key) {
                Ok(id) => id,
                Err(e) if &p.node == local => {
                    return Err(P2pError::InvalidConfig {
                        field: "peers",
                        reason: format!("this node's registry key is not a valid ed25519 key: {e}"),
                    });
                }
                Err(e) => {
                    tracing::error!(node = %p.node, error = %e, "registry entry skipped: invalid ed25519 public key");
                    continue;
                }
            };
            if &p.node == local {
                if peer_id != local_peer {
                    return Err(P2pError::InvalidConfig {
                        field: "secret_key",
                        reason: format!("does not match the key registered for node {local}"),
                    });
                }
                continue;
            }
            if peer_id == local_peer {
                tracing::error!(node = %p.node, "registry entry skipped: it carries this node's own key");
                continue;
            }
            if remotes.iter().any(|r| r.node == p.node) || by_peer.contains_key(&peer_id) {
                tracing::error!(node = %p.node, %peer_id, "registry entry skipped: duplicate node id or key");
                continue;
            }
            let addr = match p.addr.parse::<Multiaddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!(node = %p.node, addr = %p.addr, error = %e,
                        "unparsable registry address: accepting this node's connections, not dialing it");
                    None
                }
            };
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&p.public_key) else {
                tracing::error!(node = %p.node, "registry entry skipped: invalid ed25519 public key");
                continue;
            };
            by_peer.insert(peer_id, remotes.len());
            remotes.push(Remote {
                node: p.node.clone(),
                peer_id,
                addr,
                key,
                removed: false,
            });
        }
        Ok(Self { remotes, by_peer })
    }

    /// Adds a node admitted at runtime. Returns its index and whether it is new (`None` for
    /// this node itself with its own key): the same node with the same key again is not an
    /// error (a replayed join). A different key for a known id (this node's included), a key
    /// already registered for another node, or this node's own key under another id are
    /// refused.
    pub(super) fn add(
        &mut self,
        local: &NodeId,
        local_peer: PeerId,
        p: &PeerInfo,
    ) -> Result<Option<(usize, bool)>, P2pError> {
        let invalid = |reason: String| P2pError::InvalidPeer {
            node: p.node.clone(),
            reason,
        };
        let peer_id = peer_id_of(&p.public_key)
            .map_err(|e| invalid(format!("not a valid ed25519 public key: {e}")))?;
        if &p.node == local {
            return if peer_id == local_peer {
                Ok(None)
            } else {
                Err(invalid("this node's id with another key".into()))
            };
        }
        let revived = self
            .remotes
            .iter()
            .position(|r| r.node == p.node && r.removed);
        if let Some(idx) = self
            .remotes
            .iter()
            .position(|r| r.node == p.node && !r.removed)
        {
            return match self.remotes.get(idx) {
                Some(r) if r.peer_id == peer_id => Ok(Some((idx, false))),
                _ => Err(invalid("registered already with another key".into())),
            };
        }
        if peer_id == local_peer {
            return Err(invalid("it carries this node's own key".into()));
        }
        if self.by_peer.contains_key(&peer_id) {
            return Err(invalid("its key is registered for another node".into()));
        }
        let addr = match p.addr.parse::<Multiaddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(node = %p.node, addr = %p.addr, error = %e,
                    "unparsable registry address: accepting this node's connections, not dialing it");
                None
            }
        };
        let key = ed25519_dalek::VerifyingKey::from_bytes(&p.public_key)
            .map_err(|e| invalid(format!("not a valid ed25519 public key: {e}")))?;
        let remote = Remote {
            node: p.node.clone(),
            peer_id,
            addr,
            key,
            removed: false,
        };
        // A node removed earlier and admitted again takes its old index back.
        let idx = match revived.and_then(|i| Some((i, self.remotes.get_mut(i)?))) {
            Some((i, slot)) => {
                *slot = remote;
                i
            }
            None => {
                self.remotes.push(remote);
                self.remotes.len().saturating_sub(1)
            }
        };
        self.by_peer.insert(peer_id, idx);
        Ok(Some((idx, true)))
    }

    /// Replaces the key of registered remote `node` (a committed `NodeRotateKey`). Returns its
    /// index and the `PeerId` of the old key; `None` when the key is already this one (a
    /// replayed block). Refuses an unknown node, and a key of this node or another one.
    pub(super) fn set_key(
        &mut self,
        local_peer: PeerId,
        node: &NodeId,
        public_key: &[u8; 32],
    ) -> Result<Option<(usize, PeerId)>, P2pError> {
        let invalid = |reason: String| P2pError::InvalidPeer {
            node: node.clone(),
            reason,
        };
        let peer_id = peer_id_of(public_key)
            .map_err(|e| invalid(format!("not a valid ed25519 public key: {e}")))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
            .map_err(|e| invalid(format!("not a valid ed25519 public key: {e}")))?;
        let idx = self
            .remotes
            .iter()
            .position(|r| &r.node == node && !r.removed)
            .ok_or_else(|| invalid("not in the registry".into()))?;
        if peer_id == local_peer {
            return Err(invalid("it carries this node's own key".into()));
        }
        match self.by_peer.get(&peer_id) {
            Some(i) if *i == idx => return Ok(None),
            Some(_) => return Err(invalid("its key is registered for another node".into())),
            None => {}
        }
        let r = self
            .remotes
            .get_mut(idx)
            .ok_or_else(|| invalid("bug: registry index out of range".into()))?;
        let old = std::mem::replace(&mut r.peer_id, peer_id);
        r.key = key;
        self.by_peer.remove(&old);
        self.by_peer.insert(peer_id, idx);
        Ok(Some((idx, old)))
    }

    /// Removes remote `node` (a committed `NodeRemove`): returns its index and `PeerId`, or
    /// `None` when it is not (or no longer) registered.
    pub(super) fn remove(&mut self, node: &NodeId) -> Option<(usize, PeerId)> {
        let idx = self
            .remotes
            .iter()
            .position(|r| &r.node == node && !r.removed)?;
        let r = self.remotes.get_mut(idx)?;
        r.removed = true;
        self.by_peer.remove(&r.peer_id);
        Some((idx, r.peer_id))
    }

    /// Index of the remote node authenticated as `peer`, if it is registered.
    pub(super) fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.by_peer.get(peer).copied()
    }
}
