//! Threshold protocols, sans-IO: messages in, messages out. No sockets, clocks, disk or chain.
//!
//! Each protocol is a state machine whose transitions take the previous state by value, so
//! single-use secrets (DKG secret packages, signing nonces) are consumed by the step that uses
//! them and cannot be used twice.

use std::collections::BTreeMap;

use frost_core::{Ciphersuite, Identifier, VerifyingKey};
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use seqmpc_proto::{NodeId, Scheme};

use crate::error::ProtocolError;

pub mod cggmp;
pub mod frost_dkg;
pub mod frost_sign;
pub mod reshare;

/// A protocol message with its routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<M> {
    /// Recipient.
    pub to: NodeId,
    /// Message.
    pub msg: M,
}

/// A FROST ciphersuite this node runs, with what the chain needs to know about it. The DKG and
/// signing state machines are generic over it; only these three items differ per scheme.
pub trait FrostScheme: Ciphersuite {
    /// The chain's name of the scheme; bound into every domain-separated hash.
    const SCHEME: Scheme;

    /// The group public key as the chain and clients see it.
    fn chain_public_key(key: &VerifyingKey<Self>) -> Result<Vec<u8>, ProtocolError>;

    /// Verifies an aggregated signature under a chain public key with an implementation
    /// independent of frost's arithmetic, before the signature leaves the node.
    fn verify_independently(
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), ProtocolError>;
}

impl FrostScheme for Ed25519Sha512 {
    const SCHEME: Scheme = Scheme::FrostEd25519;

    /// The 32-byte RFC 8032 encoding.
    fn chain_public_key(key: &VerifyingKey<Self>) -> Result<Vec<u8>, ProtocolError> {
        key.serialize()
            .map_err(|e| ProtocolError::Bug(format!("serialize key: {e}")))
    }

    /// ed25519-dalek, RFC 8032 strict.
    fn verify_independently(
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), ProtocolError> {
        seqmpc_proto::verify::ed25519(public_key, message, signature)
            .map_err(|e| ProtocolError::Bug(format!("aggregated signature does not verify: {e}")))
    }
}

impl FrostScheme for Secp256K1Sha256TR {
    const SCHEME: Scheme = Scheme::FrostSecp256k1Tr;

    /// The 32-byte x-only key of BIP340: frost serializes the group key as a 33-byte SEC 1
    /// compressed point, whose parity byte BIP340 drops (signing and verification use the
    /// point with even y; frost negates the shares when needed). frost-secp256k1-tr's DKG has
    /// already applied the BIP341 key-path-only tweak (`post_dkg`), so this is a taproot
    /// output key.
    fn chain_public_key(key: &VerifyingKey<Self>) -> Result<Vec<u8>, ProtocolError> {
        let sec1 = key
            .serialize()
            .map_err(|e| ProtocolError::Bug(format!("serialize key: {e}")))?;
        match sec1.split_first() {
            Some((0x02 | 0x03, x)) if x.len() == 32 => Ok(x.to_vec()),
            _ => Err(ProtocolError::Bug(format!(
                "group key is not a 33-byte compressed point ({} bytes)",
                sec1.len()
            ))),
        }
    }

    /// libsecp256k1 (the `secp256k1` crate), BIP340 against the x-only key.
    fn verify_independently(
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), ProtocolError> {
        seqmpc_proto::verify::bip340(public_key, message, signature)
            .map_err(|e| ProtocolError::Bug(format!("aggregated signature does not verify: {e}")))
    }
}

/// Maps the committee's node ids to FROST identifiers: position in the sorted committee + 1.
/// Every party computes the same mapping from the chain's committee.
#[derive(Clone, Debug)]
pub struct Committee<C: Ciphersuite> {
    ids: BTreeMap<NodeId, Identifier<C>>,
    by_id: BTreeMap<Identifier<C>, NodeId>,
}

impl<C: Ciphersuite> Committee<C> {
    /// Builds the mapping. `parties` must be sorted and unique (as the chain stores them).
    pub fn new(parties: &[NodeId]) -> Result<Committee<C>, ProtocolError> {
        let mut ids = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (i, p) in parties.iter().enumerate() {
            let n = u16::try_from(i + 1)
                .map_err(|_| ProtocolError::Local("too many parties".into()))?;
            let id = Identifier::<C>::try_from(n)
                .map_err(|e| ProtocolError::Bug(format!("identifier {n}: {e}")))?;
            if ids.insert(p.clone(), id).is_some() {
                return Err(ProtocolError::Local(format!("party {p} listed twice")));
            }
            by_id.insert(id, p.clone());
        }
        Ok(Committee { ids, by_id })
    }

    /// FROST identifier of a party.
    pub fn id(&self, node: &NodeId) -> Result<Identifier<C>, ProtocolError> {
        self.ids
            .get(node)
            .copied()
            .ok_or_else(|| ProtocolError::Local(format!("{node} is not in the committee")))
    }

    /// Node of a FROST identifier.
    pub fn node(&self, id: &Identifier<C>) -> Option<&NodeId> {
        self.by_id.get(id)
    }

    /// Maps FROST culprits to node ids.
    pub fn culprits(&self, ids: &[Identifier<C>]) -> Vec<NodeId> {
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
/// frost's serialization of a public key package (group key and verifying shares), as keygen
/// and resharing reports carry it to the chain.
pub(crate) fn encode_public_key_package<C: Ciphersuite>(
    pkp: &frost_core::keys::PublicKeyPackage<C>,
) -> Result<Vec<u8>, ProtocolError> {
    pkp.serialize()
        .map_err(|e| ProtocolError::Bug(format!("serialize public key package: {e}")))
}

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
#[allow(non_snake_case)]
mod no_panic;
#[cfg(test)]
mod tests;
