//! Key resharing, sans-IO: moves a key from an old committee and threshold to a new committee
//! and threshold without changing the group public key. One round, for all three schemes.
//!
//! The construction is Shamir re-sharing with Feldman commitments (Desmedt–Jajodia 1997;
//! Wong–Wang–Wing 2002, "Verifiable secret redistribution"; the same shape as tss-lib's
//! resharing and the redistribution step of Herzberg et al.'s proactive secret sharing). See
//! `docs/reshare.md` for the protocol, every check and what it prevents.
//!
//! - The chain picks `dealers`: `old_threshold` parties of the old committee. Dealer `i`
//!   multiplies its share by its Lagrange coefficient over the dealers' evaluation points
//!   (`w_i = λ_i·s_i`, so `Σ w_i` is the secret), shares `w_i` with a fresh random polynomial
//!   of degree `new_threshold - 1`, and sends every new party a [`Deal`]: the Feldman
//!   commitment to that polynomial, the old committee's public shares and group key, and the
//!   party's point on the polynomial ([`deal`]).
//! - Each new party collects one deal per dealer ([`Collector`]), checks every one of them
//!   (naming the dealer on failure), adds up its points and the commitments, and outputs its
//!   new share in the scheme's storage encoding, the public key and a transcript hash
//!   ([`ReshareOutput`]). The chain marks the new generation READY only when every new party
//!   reports the same public key and transcript hash: that is the reliable broadcast of the
//!   commitments.
//!
//! Evaluation points: the party at position `k` of a sorted committee is evaluated at `k + 1`,
//! as in [`Committee`](super::Committee) (FROST identifiers) and cggmp24's threshold keygen
//! (`VssSetup::I = [1, …, n]`, `public_shares[k]` is party `k`'s).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::fmt;

use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use rand::{CryptoRng, RngCore};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::record_once;
use crate::error::ProtocolError;

mod cggmp;
mod frost;

/// What the chain fixed for one resharing session. Every old and new party builds the same
/// value from chain state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReshareParams {
    /// Session id, bound into the transcript hash.
    pub session: SessionId,
    /// Scheme of the key.
    pub scheme: Scheme,
    /// The key's current committee, sorted.
    pub old_parties: Vec<NodeId>,
    /// The key's current threshold.
    pub old_threshold: u16,
    /// The dealers, sorted: `old_threshold` members of `old_parties`, chosen by the chain.
    pub dealers: Vec<NodeId>,
    /// The new committee, sorted.
    pub new_parties: Vec<NodeId>,
    /// The new threshold: `1 <= new_threshold <= new_parties.len()` (CGGMP24: at least 2).
    pub new_threshold: u16,
    /// Group public key as the chain records it: FROST as
    /// [`FrostScheme::chain_public_key`](super::FrostScheme::chain_public_key) (Ed25519 32
    /// bytes, secp256k1-tr 32-byte x-only), CGGMP24 33-byte compressed SEC 1.
    pub public_key: Vec<u8>,
    /// FROST: the key's public key package of the current generation as the chain records it
    /// (frost's serialization; every party agreed on it at keygen or the last resharing).
    /// Collectors check each dealer's old public shares against it, so dealers that collude,
    /// even a majority of them, cannot get an honest dealer blamed. `None` (CGGMP24, whose
    /// public shares the chain does not keep, or a key from before packages were recorded):
    /// the dealers' majority decides.
    pub old_public_package: Option<Vec<u8>>,
}

fn sorted_unique(v: &[NodeId]) -> bool {
    v.windows(2).all(|w| matches!(w, [a, b] if a < b))
}

impl ReshareParams {
    /// Shape checks; every failure is [`ProtocolError::Local`] (the chain should never ask).
    pub fn check(&self) -> Result<(), ProtocolError> {
        let bad = |m: String| Err(ProtocolError::Local(m));
        for (what, v) in [
            ("old parties", &self.old_parties),
            ("dealers", &self.dealers),
            ("new parties", &self.new_parties),
        ] {
            if v.is_empty() {
                return bad(format!("{what}: empty"));
            }
            if !sorted_unique(v) {
                return bad(format!("{what}: not sorted and unique"));
            }
            if u16::try_from(v.len()).is_err() {
                return bad(format!("{what}: too many"));
            }
        }
        if let Some(d) = self
            .dealers
            .iter()
            .find(|d| self.old_parties.binary_search(d).is_err())
        {
            return bad(format!("dealer {d} is not in the old committee"));
        }
        let min_t: u16 = match self.scheme {
            Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => 1,
            // cggmp24's key-share validation refuses t < 2.
            Scheme::Cggmp24Secp256k1 => 2,
        };
        let old_n = self.old_parties.len();
        if self.old_threshold < min_t || usize::from(self.old_threshold) > old_n {
            return bad(format!(
                "old threshold {} out of range {min_t}..={old_n}",
                self.old_threshold
            ));
        }
        if self.dealers.len() != usize::from(self.old_threshold) {
            return bad(format!(
                "{} dealers, the old threshold is {}",
                self.dealers.len(),
                self.old_threshold
            ));
        }
        let new_n = self.new_parties.len();
        if self.new_threshold < min_t || usize::from(self.new_threshold) > new_n {
            return bad(format!(
                "new threshold {} out of range {min_t}..={new_n}",
                self.new_threshold
            ));
        }
        let key_len = match self.scheme {
            Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => 32,
            Scheme::Cggmp24Secp256k1 => 33,
        };
        if self.public_key.len() != key_len {
            return bad(format!(
                "public key is {} bytes, {} keys are {key_len}",
                self.public_key.len(),
                self.scheme
            ));
        }
        Ok(())
    }

    /// Position of a dealer in `dealers` (its index for the Lagrange coefficient).
    fn dealer_index(&self, node: &NodeId) -> Option<usize> {
        self.dealers.binary_search(node).ok()
    }

    /// Evaluation point (position + 1) of every dealer in the old committee, in dealer order.
    fn dealer_points(&self) -> Result<Vec<u16>, ProtocolError> {
        self.dealers
            .iter()
            .map(|d| {
                self.old_parties
                    .binary_search(d)
                    .ok()
                    .and_then(|k| u16::try_from(k + 1).ok())
                    .ok_or_else(|| ProtocolError::Local(format!("dealer {d} is not an old party")))
            })
            .collect()
    }
}

/// One dealer's message to one new party, sent over the authenticated, encrypted p2p channel
/// (it carries a secret point). Encodings are fixed-width concatenations of the scheme's
/// canonical element and scalar encodings (see `docs/reshare.md`).
#[derive(Clone, PartialEq, Eq)]
pub struct Deal {
    /// Feldman commitment to the dealer's polynomial: `new_threshold` points, constant term
    /// first. Must be the same in every deal of this dealer (confirmed by the transcript hash).
    pub commitment: Vec<u8>,
    /// The old committee's group key followed by its public shares, in committee order.
    pub old_public: Vec<u8>,
    /// The recipient's point on the dealer's polynomial (secret).
    pub share: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Deal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deal")
            .field(
                "commitment",
                &format_args!("{} bytes", self.commitment.len()),
            )
            .field(
                "old_public",
                &format_args!("{} bytes", self.old_public.len()),
            )
            .field("share", &"<redacted>")
            .finish()
    }
}

/// Dealer side: deals this party's share to every new party.
///
/// `share` is the dealer's stored share in the scheme's storage encoding (FROST: what
/// [`encode_packages`](super::frost_sign::encode_packages) wrote; CGGMP24:
/// [`CggmpKeyShare::to_bytes`](super::cggmp::CggmpKeyShare::to_bytes), or a
/// [`CoreShare::to_bytes`](super::cggmp::CoreShare::to_bytes)). It must be a share of
/// `params.public_key` for `params.old_parties` and `params.old_threshold`, and `me` must be a
/// dealer; otherwise [`ProtocolError::Local`]. The map includes `me` if `me` is also a new
/// party.
pub fn deal<R: RngCore + CryptoRng>(
    params: &ReshareParams,
    me: &NodeId,
    share: &[u8],
    rng: &mut R,
) -> Result<BTreeMap<NodeId, Deal>, ProtocolError> {
    params.check()?;
    if params.dealer_index(me).is_none() {
        return Err(ProtocolError::Local(format!("{me} is not a dealer")));
    }
    match params.scheme {
        Scheme::FrostEd25519 => frost::deal::<Ed25519Sha512, R>(params, me, share, rng),
        Scheme::FrostSecp256k1Tr => frost::deal::<Secp256K1Sha256TR, R>(params, me, share, rng),
        Scheme::Cggmp24Secp256k1 => cggmp::deal(params, me, share, rng),
    }
}

/// Checks one dealer's deal to `recipient` alone, as evidence: the per-dealer checks of
/// `docs/reshare.md` (commitment shape, Feldman, old public data of this key, constant term
/// λ·Xᵢ by the deal's own old public data). `Ok(Some(why))`: the deal is bad, and since its
/// dealer signed it, that proves the dealer misbehaved. The cross-dealer checks (majority on
/// the old public data, commitments summing to the key) need every deal and are not evidence.
///
/// # Errors
/// [`ProtocolError::Local`] when `params` are malformed, `dealer` is not a dealer or
/// `recipient` not a new party.
pub fn check_deal_alone(
    params: &ReshareParams,
    dealer: &NodeId,
    recipient: &NodeId,
    deal: &Deal,
) -> Result<Option<String>, ProtocolError> {
    params.check()?;
    match params.scheme {
        Scheme::FrostEd25519 => {
            frost::check_single::<Ed25519Sha512>(params, dealer, recipient, deal)
        }
        Scheme::FrostSecp256k1Tr => {
            frost::check_single::<Secp256K1Sha256TR>(params, dealer, recipient, deal)
        }
        Scheme::Cggmp24Secp256k1 => cggmp::check_single(params, dealer, recipient, deal),
    }
}

/// New-party side: collects one [`Deal`] per dealer, then checks and combines them.
pub struct Collector {
    params: ReshareParams,
    me: NodeId,
    deals: BTreeMap<NodeId, Deal>,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("session", &self.params.session)
            .field("scheme", &self.params.scheme)
            .field("me", &self.me)
            .field("received", &self.deals.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A finished resharing at one new party.
pub struct ReshareOutput {
    /// Group public key in the chain's form (unchanged by resharing).
    pub public_key: Vec<u8>,
    /// Hash of the session's public transcript; equal at every honest new party iff they saw
    /// the same commitments and old public data.
    pub transcript_hash: [u8; 32],
    /// The new share in the scheme's storage encoding: FROST
    /// [`encode_packages`](super::frost_sign::encode_packages) of the new key packages
    /// (identifiers = position + 1 in `new_parties`); CGGMP24
    /// [`CoreShare::to_bytes`](super::cggmp::CoreShare::to_bytes) (no aux info).
    pub share: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ReshareOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReshareOutput")
            .field("public_key", &hex::encode(&self.public_key))
            .field("transcript_hash", &hex::encode(self.transcript_hash))
            .field("share", &"<redacted>")
            .finish()
    }
}

/// What a scheme's combination step produced, before the transcript hash.
struct Combined {
    public_key: Vec<u8>,
    /// Every dealer's commitment, canonical encoding, in dealer order.
    commitments: Vec<Vec<u8>>,
    /// New public shares, canonical encoding, in new-committee order.
    new_public: Vec<Vec<u8>>,
    share: Zeroizing<Vec<u8>>,
}

impl Collector {
    /// A collector for new party `me`.
    pub fn new(params: ReshareParams, me: NodeId) -> Result<Collector, ProtocolError> {
        params.check()?;
        if params.new_parties.binary_search(&me).is_err() {
            return Err(ProtocolError::Local(format!("{me} is not a new party")));
        }
        Ok(Collector {
            params,
            me,
            deals: BTreeMap::new(),
        })
    }

    /// Records a deal from an authenticated sender. An identical duplicate is ignored; a
    /// different deal from the same dealer is equivocation and a deal from a non-dealer is
    /// refused, both blaming the sender.
    pub fn add(&mut self, from: &NodeId, deal: Deal) -> Result<(), ProtocolError> {
        if self.params.dealer_index(from).is_none() {
            return Err(ProtocolError::blame(
                from,
                format!("{from} sent a reshare deal but is not a dealer"),
            ));
        }
        record_once(&mut self.deals, from.clone(), deal, from, "reshare deal").map(|_| ())
    }

    /// True once every dealer's deal is in.
    pub fn is_complete(&self) -> bool {
        self.params
            .dealers
            .iter()
            .all(|d| self.deals.contains_key(d))
    }

    /// Checks every deal and combines them (step 2 of `docs/reshare.md`). Called before
    /// [`Collector::is_complete`], it aborts blaming the dealers whose deals are missing.
    pub fn finish(self) -> Result<ReshareOutput, ProtocolError> {
        let missing: Vec<NodeId> = self
            .params
            .dealers
            .iter()
            .filter(|d| !self.deals.contains_key(*d))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(ProtocolError::Aborted {
                culprits: missing,
                reason: "no reshare deal received".into(),
            });
        }
        let old_public = self.agreed_old_public()?;
        let combined = match self.params.scheme {
            Scheme::FrostEd25519 => {
                frost::combine::<Ed25519Sha512>(&self.params, &self.me, &self.deals, &old_public)?
            }
            Scheme::FrostSecp256k1Tr => frost::combine::<Secp256K1Sha256TR>(
                &self.params,
                &self.me,
                &self.deals,
                &old_public,
            )?,
            Scheme::Cggmp24Secp256k1 => {
                cggmp::combine(&self.params, &self.me, &self.deals, &old_public)?
            }
        };
        if combined.public_key != self.params.public_key {
            return Err(ProtocolError::Bug(
                "the new group key differs from the old one after all checks passed".into(),
            ));
        }
        let transcript_hash = transcript(&self.params, &combined, &old_public);
        Ok(ReshareOutput {
            public_key: combined.public_key,
            transcript_hash,
            share: combined.share,
        })
    }

    /// The old public data an honest dealer sends, from the chain's record of the key
    /// ([`ReshareParams::old_public_package`]); `None` when there is none, or it does not fit
    /// the old committee (then the dealers' majority decides, as without it).
    fn chain_old_public(&self) -> Option<Vec<u8>> {
        let pkp = self.params.old_public_package.as_deref()?;
        let expected = match self.params.scheme {
            Scheme::FrostEd25519 => {
                frost::old_public_of_package::<Ed25519Sha512>(&self.params, pkp)
            }
            Scheme::FrostSecp256k1Tr => {
                frost::old_public_of_package::<Secp256K1Sha256TR>(&self.params, pkp)
            }
            Scheme::Cggmp24Secp256k1 => return None,
        };
        match expected {
            Ok(e) => Some(e),
            Err(error) => {
                tracing::warn!(session = %self.params.session, %error,
                    "the chain's public key package does not fit this resharing; the dealers' majority decides");
                None
            }
        }
    }

    /// Checks every dealer's `old_public` (well-formed, of this key) and that the dealers
    /// agree on it: against the chain's record when there is one ([`Self::chain_old_public`]),
    /// else by majority. A dealer whose copy differs from the majority's is blamed; with no
    /// majority nobody can be told apart and the abort names no culprit.
    fn agreed_old_public(&self) -> Result<Vec<u8>, ProtocolError> {
        if let Some(expected) = self.chain_old_public() {
            let culprits: Vec<NodeId> = self
                .deals
                .iter()
                .filter(|(_, d)| d.old_public != expected)
                .map(|(n, _)| n.clone())
                .collect();
            if culprits.is_empty() {
                return Ok(expected);
            }
            return Err(ProtocolError::Aborted {
                culprits,
                reason: "dealer's old public shares differ from the key's public data on chain"
                    .into(),
            });
        }
        let mut faulty = Vec::new();
        for (dealer, deal) in &self.deals {
            let checked = match self.params.scheme {
                Scheme::FrostEd25519 => {
                    frost::check_old_public::<Ed25519Sha512>(&self.params, &deal.old_public)
                }
                Scheme::FrostSecp256k1Tr => {
                    frost::check_old_public::<Secp256K1Sha256TR>(&self.params, &deal.old_public)
                }
                Scheme::Cggmp24Secp256k1 => cggmp::check_old_public(&self.params, &deal.old_public),
            };
            if let Err(why) = checked {
                faulty.push((dealer.clone(), format!("bad old public data: {why}")));
            }
        }
        blame_all(faulty)?;
        let mut votes: BTreeMap<&[u8], usize> = BTreeMap::new();
        for deal in self.deals.values() {
            *votes.entry(deal.old_public.as_slice()).or_default() += 1;
        }
        if votes.len() <= 1 {
            return self
                .deals
                .values()
                .next()
                .map(|d| d.old_public.clone())
                .ok_or_else(|| ProtocolError::Bug("no deals".into()));
        }
        let majority = votes
            .iter()
            .find(|(_, n)| **n * 2 > self.deals.len())
            .map(|(v, _)| *v);
        let Some(majority) = majority else {
            return Err(ProtocolError::Aborted {
                culprits: Vec::new(),
                reason: "dealers disagree on the old public shares, with no majority".into(),
            });
        };
        Err(ProtocolError::Aborted {
            culprits: self
                .deals
                .iter()
                .filter(|(_, d)| d.old_public != majority)
                .map(|(n, _)| n.clone())
                .collect(),
            reason: "dealer's old public shares differ from the other dealers'".into(),
        })
    }
}

/// Aborts naming every dealer whose deal failed a per-dealer check, if any.
fn blame_all(faulty: Vec<(NodeId, String)>) -> Result<(), ProtocolError> {
    if faulty.is_empty() {
        return Ok(());
    }
    let reason = faulty
        .iter()
        .map(|(d, why)| format!("{d}'s deal: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ProtocolError::Aborted {
        culprits: faulty.into_iter().map(|(d, _)| d).collect(),
        reason,
    })
}

/// Domain-separated SHA-256 of the public transcript. Every part is length-prefixed.
fn transcript(params: &ReshareParams, combined: &Combined, old_public: &[u8]) -> [u8; 32] {
    fn part(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    fn nodes(h: &mut Sha256, v: &[NodeId]) {
        h.update((v.len() as u64).to_be_bytes());
        for n in v {
            part(h, n.as_str().as_bytes());
        }
    }
    let mut h = Sha256::new();
    part(&mut h, b"seqmpc/reshare/transcript/v1");
    part(&mut h, &params.session.0);
    part(&mut h, params.scheme.as_str().as_bytes());
    nodes(&mut h, &params.old_parties);
    part(&mut h, &params.old_threshold.to_be_bytes());
    nodes(&mut h, &params.dealers);
    nodes(&mut h, &params.new_parties);
    part(&mut h, &params.new_threshold.to_be_bytes());
    part(&mut h, &params.public_key);
    h.update((combined.commitments.len() as u64).to_be_bytes());
    for c in &combined.commitments {
        part(&mut h, c);
    }
    part(&mut h, old_public);
    h.update((combined.new_public.len() as u64).to_be_bytes());
    for p in &combined.new_public {
        part(&mut h, p);
    }
    h.finalize().into()
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests;
