//! Blame the chain can check: a failure report quotes the culprits' signed p2p messages, and
//! [`check`] decides, deterministically and without any node's secrets, whether they prove the
//! blame.
//!
//! Every p2p message carries its sender's ed25519 signature (node key) over
//! [`p2p_signing_digest`](seqmpc_proto::wire::p2p_signing_digest)`(from, to, envelope)`, and the
//! envelope names the session (derived from the chain id). A sender therefore cannot deny a
//! message it sent, and a reporter cannot forge one. What a quoted message proves:
//!
//! | quoted (signed by the culprit, to the reporter) | proven when |
//! |---|---|
//! | FROST DKG round-1 package | it does not decode, its commitment has not `threshold` points, or its proof of knowledge fails (frost-core `verify_proof_of_knowledge`) |
//! | the same and the round-2 package | the share fails the Feldman check against that commitment (frost-core `SecretShare::verify`): the frost#577 case |
//! | two different round-1 packages, or two different deals | equivocation |
//! | resharing deal | a per-dealer check of `docs/reshare.md` fails ([`reshare::check_deal_alone`]) |
//! | FROST signature share (with the hash of the key generation and signing package it was computed for), and that package | the share does not decode, or fails frost-core's `verify_signature_share` against the culprit's verifying share in the chain's public key package (RFC 9591 §5.4) |
//! | two different signature shares | equivocation |
//!
//! A share is checked only when the quoted package is the one its signed hash names, for the
//! key generation whose verifying shares the chain holds, with the request's message and
//! signers; otherwise it proves nothing (an honest share is valid for the package it names,
//! so it can never be proven bad). Silence, and cggmp24's blame, are not provable this way:
//! such blame stays the reporter's claim.
//!
//! The chain refuses a report whose quoted messages are not genuine (bad signature, another
//! session, not from a culprit or not to the reporter): honest nodes only quote messages whose
//! signature their p2p layer verified.

use std::collections::BTreeMap;

use frost_core::keys::dkg::{round1, round2};
use frost_core::keys::{PublicKeyPackage, SecretShare};
use frost_core::round2::SignatureShare;
use frost_core::SigningPackage;
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use prost::Message;
use seqmpc_proto::tx::SignedMessage;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, Scheme, SessionId};

use crate::protocol::frost_sign::package_hash;
use crate::protocol::reshare::{self, Deal, ReshareParams};
use crate::protocol::{Committee, FrostScheme};

/// The session a report is about, as the chain knows it.
#[derive(Clone, Debug)]
pub enum Context {
    /// A keygen.
    Keygen {
        /// The session.
        session: SessionId,
        /// The key's scheme.
        scheme: Scheme,
        /// The committee, sorted.
        parties: Vec<NodeId>,
        /// The threshold.
        threshold: u32,
    },
    /// A resharing.
    Reshare(ReshareParams),
    /// A FROST signing.
    Sign(SignContext),
}

/// A FROST signing as the chain knows it, with what the failure report quotes.
#[derive(Clone, Debug)]
pub struct SignContext {
    /// The session.
    pub session: SessionId,
    /// The key's scheme.
    pub scheme: Scheme,
    /// The key's committee, sorted (it fixes the FROST identifiers).
    pub parties: Vec<NodeId>,
    /// The signers the chain chose.
    pub signers: Vec<NodeId>,
    /// The message of the request.
    pub message: Vec<u8>,
    /// The key generation the chain's `public_key_package` is of; `None` when the key has
    /// changed generation since the request (nothing is provable then).
    pub generation: Option<u64>,
    /// frost's serialized public key package of that generation (empty: nothing provable).
    pub public_key_package: Vec<u8>,
    /// The serialized `SigningPackage` the report quotes.
    pub signing_package: Vec<u8>,
}

impl Context {
    fn session(&self) -> &SessionId {
        match self {
            Context::Keygen { session, .. } => session,
            Context::Reshare(p) => &p.session,
            Context::Sign(s) => &s.session,
        }
    }
}

/// Why quoted messages are not genuine evidence (the report is refused).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvidenceError {
    /// A message is not from a blamed party.
    #[error("evidence message {index} is from {from}, who is not blamed")]
    NotACulprit {
        /// Position in the report.
        index: usize,
        /// Its sender.
        from: NodeId,
    },
    /// A message was not sent to the reporter.
    #[error("evidence message {index} was sent to {to}, not to the reporter")]
    NotToReporter {
        /// Position in the report.
        index: usize,
        /// Its recipient.
        to: NodeId,
    },
    /// The sender is not in the registry.
    #[error("evidence message {index}: {from} is not a registered node")]
    UnknownSender {
        /// Position in the report.
        index: usize,
        /// Its sender.
        from: NodeId,
    },
    /// The signature does not verify under the sender's registered key.
    #[error("evidence message {index}: not signed by {from}'s node key")]
    BadSignature {
        /// Position in the report.
        index: usize,
        /// Its sender.
        from: NodeId,
    },
    /// The envelope does not decode, or is of another session or kind.
    #[error("evidence message {index}: {reason}")]
    NotOfThisSession {
        /// Position in the report.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The chain's view of the session is unusable (a chain bug, not the reporter's fault).
    #[error("cannot check evidence: {0}")]
    Context(String),
}

/// A blame the quoted messages prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proven {
    /// The proven culprit.
    pub culprit: NodeId,
    /// What its signed messages show.
    pub reason: String,
}

/// The quoted messages of one culprit, by kind.
#[derive(Default)]
struct Quoted {
    round1: Vec<Vec<u8>>,
    round2: Vec<Vec<u8>>,
    deals: Vec<wire::ReshareDeal>,
    shares: Vec<wire::SignRound2>,
}

/// Checks the messages a failure report of `reporter` quotes against the blamed `culprits`.
/// `key_of` gives a node's registered ed25519 key. Returns the blames they prove (possibly
/// none: a claim without proof), in culprit order.
///
/// # Errors
/// [`EvidenceError`] when a quoted message is not genuine, which an honest reporter never sends.
pub fn check(
    ctx: &Context,
    reporter: &NodeId,
    culprits: &[NodeId],
    evidence: &[SignedMessage],
    key_of: impl Fn(&NodeId) -> Option<[u8; 32]>,
) -> Result<Vec<Proven>, EvidenceError> {
    let mut quoted: BTreeMap<&NodeId, Quoted> = BTreeMap::new();
    for (index, m) in evidence.iter().enumerate() {
        if !culprits.contains(&m.from) {
            return Err(EvidenceError::NotACulprit {
                index,
                from: m.from.clone(),
            });
        }
        if &m.to != reporter {
            return Err(EvidenceError::NotToReporter {
                index,
                to: m.to.clone(),
            });
        }
        let key = key_of(&m.from).ok_or_else(|| EvidenceError::UnknownSender {
            index,
            from: m.from.clone(),
        })?;
        seqmpc_proto::verify::ed25519(&key, &m.digest(), &m.signature).map_err(|_| {
            EvidenceError::BadSignature {
                index,
                from: m.from.clone(),
            }
        })?;
        let bad = |reason: String| EvidenceError::NotOfThisSession { index, reason };
        let env = wire::P2pEnvelope::decode(m.envelope.as_slice())
            .map_err(|e| bad(format!("undecodable envelope: {e}")))?;
        if env.session.as_slice() != ctx.session().0.as_slice() {
            return Err(bad("of another session".into()));
        }
        let q = quoted.entry(&m.from).or_default();
        match (ctx, env.payload) {
            (Context::Keygen { .. }, Some(Payload::DkgRound1(r))) => q.round1.push(r.package),
            (Context::Keygen { .. }, Some(Payload::DkgRound2(r))) => q.round2.push(r.package),
            (Context::Reshare(_), Some(Payload::ReshareDeal(d))) => q.deals.push(d),
            (Context::Sign(_), Some(Payload::SignRound2(s))) => q.shares.push(s),
            _ => return Err(bad("not a message this session's blame can rest on".into())),
        }
    }
    let mut proven = Vec::new();
    for (culprit, q) in quoted {
        let reason = match ctx {
            Context::Keygen {
                scheme,
                parties,
                threshold,
                ..
            } => match scheme {
                Scheme::FrostEd25519 => {
                    prove_dkg::<Ed25519Sha512>(parties, *threshold, culprit, reporter, &q)?
                }
                Scheme::FrostSecp256k1Tr => {
                    prove_dkg::<Secp256K1Sha256TR>(parties, *threshold, culprit, reporter, &q)?
                }
                // cggmp24 blames with its own proofs; its messages are not quoted.
                Scheme::Cggmp24Secp256k1 => None,
            },
            Context::Reshare(params) => prove_deal(params, culprit, reporter, &q)?,
            Context::Sign(s) => match s.scheme {
                Scheme::FrostEd25519 => prove_share::<Ed25519Sha512>(s, culprit, &q),
                Scheme::FrostSecp256k1Tr => prove_share::<Secp256K1Sha256TR>(s, culprit, &q),
                Scheme::Cggmp24Secp256k1 => None,
            },
        };
        if let Some(reason) = reason {
            proven.push(Proven {
                culprit: culprit.clone(),
                reason,
            });
        }
    }
    Ok(proven)
}

/// Two different signed messages of one kind in one session.
fn equivocates<T: PartialEq>(v: &[T]) -> bool {
    v.windows(2).any(|w| matches!(w, [a, b] if a != b))
}

fn prove_dkg<C: FrostScheme>(
    parties: &[NodeId],
    threshold: u32,
    culprit: &NodeId,
    reporter: &NodeId,
    q: &Quoted,
) -> Result<Option<String>, EvidenceError> {
    let ctx_err = |e: crate::error::ProtocolError| EvidenceError::Context(e.to_string());
    let committee = Committee::<C>::new(parties).map_err(ctx_err)?;
    let culprit_id = committee.id(culprit).map_err(ctx_err)?;
    let reporter_id = committee.id(reporter).map_err(ctx_err)?;
    if equivocates(&q.round1) {
        return Ok(Some(format!(
            "{culprit} signed two different DKG round-1 packages"
        )));
    }
    if equivocates(&q.round2) {
        return Ok(Some(format!(
            "{culprit} signed two different DKG round-2 packages to {reporter}"
        )));
    }
    let Some(r1) = q.round1.first() else {
        return Ok(None);
    };
    let r1 = match round1::Package::<C>::deserialize(r1) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Some(format!(
                "{culprit}'s signed DKG round-1 package does not decode: {e}"
            )))
        }
    };
    if r1.commitment().coefficients().len() != threshold as usize {
        return Ok(Some(format!(
            "{culprit}'s signed DKG round-1 commitment has {} points, the threshold is {threshold}",
            r1.commitment().coefficients().len()
        )));
    }
    if frost_core::keys::dkg::verify_proof_of_knowledge(
        culprit_id,
        r1.commitment(),
        r1.proof_of_knowledge(),
    )
    .is_err()
    {
        return Ok(Some(format!(
            "{culprit}'s signed DKG round-1 package fails its proof of knowledge"
        )));
    }
    let Some(r2) = q.round2.first() else {
        return Ok(None);
    };
    let r2 = match round2::Package::<C>::deserialize(r2) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Some(format!(
                "{culprit}'s signed DKG round-2 package to {reporter} does not decode: {e}"
            )))
        }
    };
    let share = SecretShare::new(reporter_id, *r2.signing_share(), r1.commitment().clone());
    Ok(share.verify().is_err().then(|| {
        format!(
            "{culprit}'s signed DKG share to {reporter} fails the Feldman check against its signed round-1 commitment"
        )
    }))
}

/// Checks a reported FROST public key package before the chain keeps it for [`SignContext`]:
/// it decodes as `scheme`'s, its group key is `public_key` (the chain's form), and it holds a
/// verifying share for each of `parties`. CGGMP24 reports none.
pub fn check_public_key_package(
    scheme: Scheme,
    parties: &[NodeId],
    package: &[u8],
    public_key: &[u8],
) -> Result<(), String> {
    fn check<C: FrostScheme>(
        parties: &[NodeId],
        package: &[u8],
        public_key: &[u8],
    ) -> Result<(), String> {
        let pkp = PublicKeyPackage::<C>::deserialize(package)
            .map_err(|e| format!("public key package does not decode: {e}"))?;
        let group = C::chain_public_key(pkp.verifying_key()).map_err(|e| e.to_string())?;
        if group != public_key {
            return Err("public key package is of another group key".into());
        }
        let committee = Committee::<C>::new(parties).map_err(|e| e.to_string())?;
        let ids = parties
            .iter()
            .map(|p| committee.id(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if !ids.iter().all(|id| pkp.verifying_shares().contains_key(id)) {
            return Err("public key package lacks a party's verifying share".into());
        }
        Ok(())
    }
    match scheme {
        Scheme::FrostEd25519 => check::<Ed25519Sha512>(parties, package, public_key),
        Scheme::FrostSecp256k1Tr => check::<Secp256K1Sha256TR>(parties, package, public_key),
        Scheme::Cggmp24Secp256k1 if package.is_empty() => Ok(()),
        Scheme::Cggmp24Secp256k1 => Err("a cggmp24 key has no public key package".into()),
    }
}

/// Whether `culprit`'s quoted signature share is bad (module docs). `None` when the quotes do
/// not show it, whatever the reason (another package or generation, a package that does not
/// decode or is of another message or signer set): the blame then stays a claim.
fn prove_share<C: FrostScheme>(ctx: &SignContext, culprit: &NodeId, q: &Quoted) -> Option<String> {
    if equivocates(&q.shares) {
        return Some(format!("{culprit} signed two different signature shares"));
    }
    let quoted = q.shares.first()?;
    // An honest signer of this key never sends a share that does not decode: no package needed.
    let share = match SignatureShare::<C>::deserialize(&quoted.share) {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "{culprit}'s signed signature share does not decode: {e}"
            ))
        }
    };
    let generation = ctx.generation?;
    if quoted.package_hash != package_hash(generation, &ctx.signing_package) {
        return None;
    }
    let package = SigningPackage::<C>::deserialize(&ctx.signing_package).ok()?;
    let committee = Committee::<C>::new(&ctx.parties).ok()?;
    let signer_ids = ctx
        .signers
        .iter()
        .map(|s| committee.id(s).ok())
        .collect::<Option<Vec<_>>>()?;
    let same_signers = package.signing_commitments().len() == signer_ids.len()
        && signer_ids
            .iter()
            .all(|id| package.signing_commitments().contains_key(id));
    if package.message() != &ctx.message || !same_signers {
        return None;
    }
    let pkp = PublicKeyPackage::<C>::deserialize(&ctx.public_key_package).ok()?;
    let id = committee.id(culprit).ok()?;
    let verifying_share = pkp.verifying_shares().get(&id)?;
    frost_core::verify_signature_share(id, verifying_share, &share, &package, pkp.verifying_key())
        .is_err()
        .then(|| {
            format!(
                "{culprit}'s signed signature share fails verification against its verifying \
                 share for the signing package it names (RFC 9591 section 5.4)"
            )
        })
}

fn prove_deal(
    params: &ReshareParams,
    dealer: &NodeId,
    recipient: &NodeId,
    q: &Quoted,
) -> Result<Option<String>, EvidenceError> {
    if equivocates(&q.deals) {
        return Ok(Some(format!(
            "{dealer} signed two different resharing deals to {recipient}"
        )));
    }
    let Some(d) = q.deals.first() else {
        return Ok(None);
    };
    let deal = Deal {
        commitment: d.commitment.clone(),
        old_public: d.old_public.clone(),
        share: zeroize::Zeroizing::new(d.share.clone()),
    };
    let why = reshare::check_deal_alone(params, dealer, recipient, &deal)
        .map_err(|e| EvidenceError::Context(e.to_string()))?;
    Ok(why.map(|why| format!("{dealer}'s signed resharing deal to {recipient}: {why}")))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests;
