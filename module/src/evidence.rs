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
//!
//! A bad signature share or a silent party is not provable this way (the chain holds no
//! verifying shares and cannot see silence): such blame stays the reporter's claim.
//!
//! The chain refuses a report whose quoted messages are not genuine (bad signature, another
//! session, not from a culprit or not to the reporter): honest nodes only quote messages whose
//! signature their p2p layer verified.

use std::collections::BTreeMap;

use frost_core::keys::dkg::{round1, round2};
use frost_core::keys::SecretShare;
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use prost::Message;
use seqmpc_proto::tx::SignedMessage;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, Scheme, SessionId};

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
}

impl Context {
    fn session(&self) -> &SessionId {
        match self {
            Context::Keygen { session, .. } => session,
            Context::Reshare(p) => &p.session,
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
