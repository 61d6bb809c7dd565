//! Threshold protocols, sans-IO: messages in, messages out. No sockets, clocks, disk or chain.
//!
//! Each protocol is a state machine whose transitions take the previous state by value, so
//! single-use secrets (DKG secret packages, signing nonces) are consumed by the step that uses
//! them and cannot be used twice.

use std::collections::BTreeMap;

use seqmpc_proto::NodeId;

use crate::error::ProtocolError;

pub mod frost_dkg;
pub mod frost_sign;

/// A protocol message with its routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<M> {
    /// Recipient.
    pub to: NodeId,
    /// Message.
    pub msg: M,
}

/// Maps the committee's node ids to FROST identifiers: position in the sorted committee + 1.
/// Every party computes the same mapping from the chain's committee.
#[derive(Clone, Debug)]
pub struct Committee {
    ids: BTreeMap<NodeId, frost_ed25519::Identifier>,
    by_id: BTreeMap<frost_ed25519::Identifier, NodeId>,
}

impl Committee {
    /// Builds the mapping. `parties` must be sorted and unique (as the chain stores them).
    pub fn new(parties: &[NodeId]) -> Result<Committee, ProtocolError> {
        let mut ids = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (i, p) in parties.iter().enumerate() {
            let n = u16::try_from(i + 1)
                .map_err(|_| ProtocolError::Local("too many parties".into()))?;
            let id = frost_ed25519::Identifier::try_from(n)
                .map_err(|e| ProtocolError::Bug(format!("identifier {n}: {e}")))?;
            if ids.insert(p.clone(), id).is_some() {
                return Err(ProtocolError::Local(format!("party {p} listed twice")));
            }
            by_id.insert(id, p.clone());
        }
        Ok(Committee { ids, by_id })
    }

    /// FROST identifier of a party.
    pub fn id(&self, node: &NodeId) -> Result<frost_ed25519::Identifier, ProtocolError> {
        self.ids
            .get(node)
            .copied()
            .ok_or_else(|| ProtocolError::Local(format!("{node} is not in the committee")))
    }

    /// Node of a FROST identifier.
    pub fn node(&self, id: &frost_ed25519::Identifier) -> Option<&NodeId> {
        self.by_id.get(id)
    }

    /// Maps FROST culprits to node ids.
    pub fn culprits(&self, ids: &[frost_ed25519::Identifier]) -> Vec<NodeId> {
        ids.iter().filter_map(|i| self.node(i).cloned()).collect()
    }

    /// Number of parties.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The parties, sorted.
    pub fn parties(&self) -> impl Iterator<Item = &NodeId> {
        self.ids.keys()
    }
}

/// Records one message per sender per round: identical duplicates are ignored, a different
/// message from the same sender is equivocation, blamed on the sender.
pub(crate) fn record_once<K: Ord + Clone, V: PartialEq>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    sender: &NodeId,
    round: &str,
) -> Result<bool, ProtocolError> {
    match map.get(&key) {
        Some(existing) if *existing == value => Ok(false),
        Some(_) => Err(ProtocolError::blame(
            sender,
            format!("{sender} sent two different {round} messages"),
        )),
        None => {
            map.insert(key, value);
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests;
