//! FROST signing (RFC 9591 sections 5.1-5.3), driven sans-IO, coordinator = aggregator.
//!
//! Every signer broadcasts its commitments to the other signers (round 1). Each signer builds
//! the same `SigningPackage`, signs, and sends its share to the aggregator (the first signer in
//! sorted order), which aggregates, verifies the group signature (frost, then ed25519-dalek
//! independently) and reports it. Nonces are consumed by the transition that signs.

use std::collections::BTreeMap;
use std::sync::Arc;

use frost_ed25519::keys::{KeyPackage, PublicKeyPackage};
use frost_ed25519::round1::{self, SigningCommitments, SigningNonces};
use frost_ed25519::round2::{self, SignatureShare};
use frost_ed25519::{Identifier, SigningPackage};
use rand::{CryptoRng, RngCore};
use seqmpc_proto::{NodeId, SessionId};

use super::{record_once, Committee, Outgoing};
use crate::error::ProtocolError;

/// A signing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignMsg {
    /// Round 1: serialized `SigningCommitments`.
    Commitments(Vec<u8>),
    /// Round 2: serialized `SignatureShare`, to the aggregator.
    Share(Vec<u8>),
}

/// A READY key share with its group data, as loaded from the store.
pub struct KeyMaterial {
    /// This party's key package.
    pub key_package: KeyPackage,
    /// The group's public key package.
    pub public_key_package: PublicKeyPackage,
    /// The key's committee (sorted), which fixes the FROST identifiers.
    pub parties: Vec<NodeId>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

/// Signing nonces that can be used once: not `Clone`, consumed by [`SingleUseNonces::sign`].
struct SingleUseNonces(SigningNonces);

impl SingleUseNonces {
    fn sign(
        self,
        package: &SigningPackage,
        key: &KeyPackage,
    ) -> Result<SignatureShare, frost_ed25519::Error> {
        // `self` (and the nonces, zeroized on drop by frost) is gone after this call.
        round2::sign(package, &self.0, key)
    }
}

#[allow(clippy::large_enum_variant)] // moved by value once per step; boxing would allocate per message
enum Step {
    /// Collecting the other signers' commitments.
    Round1 {
        nonces: SingleUseNonces,
        commitments: BTreeMap<Identifier, SigningCommitments>,
        early_shares: BTreeMap<Identifier, SignatureShare>,
    },
    /// Aggregator only: collecting signature shares.
    Round2 {
        package: SigningPackage,
        shares: BTreeMap<Identifier, SignatureShare>,
    },
}

/// A signing session in progress.
pub struct Signing {
    session: SessionId,
    me: NodeId,
    committee: Committee,
    signers: Vec<NodeId>,
    message: Vec<u8>,
    key: Arc<KeyMaterial>,
    step: Step,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("session", &self.session)
            .field("me", &self.me)
            .finish()
    }
}

/// What a transition produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved by value once per step; boxing would allocate per message
pub enum SignProgress {
    /// Keep going; send these.
    Continue(Signing, Vec<Outgoing<SignMsg>>),
    /// This party's part is over; send these. `signature` is set on the aggregator: the
    /// 64-byte group signature, verified.
    Finished {
        /// Verified signature (aggregator only).
        signature: Option<Vec<u8>>,
        /// Last messages to send.
        out: Vec<Outgoing<SignMsg>>,
    },
}

impl Signing {
    /// The aggregator of a signer set: the first signer in sorted order.
    pub fn aggregator(signers: &[NodeId]) -> Option<&NodeId> {
        signers.iter().min()
    }

    /// Round 1: commits to fresh nonces and returns the commitments to send.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        signers: &[NodeId],
        message: Vec<u8>,
        key: Arc<KeyMaterial>,
        rng: &mut R,
    ) -> Result<(Signing, Vec<Outgoing<SignMsg>>), ProtocolError> {
        let committee = Committee::new(&key.parties)?;
        let mut signers: Vec<NodeId> = signers.to_vec();
        signers.sort();
        signers.dedup();
        for s in &signers {
            committee.id(s)?;
        }
        if !signers.contains(me) {
            return Err(ProtocolError::Local(format!("{me} is not a signer")));
        }
        if signers.len() < *key.key_package.min_signers() as usize {
            return Err(ProtocolError::Local(format!(
                "{} signers, threshold is {}",
                signers.len(),
                key.key_package.min_signers()
            )));
        }
        let (nonces, commitments) = round1::commit(key.key_package.signing_share(), rng);
        let bytes = commitments
            .serialize()
            .map_err(|e| ProtocolError::Bug(format!("serialize commitments: {e}")))?;
        let out = signers
            .iter()
            .filter(|s| *s != me)
            .map(|s| Outgoing {
                to: s.clone(),
                msg: SignMsg::Commitments(bytes.clone()),
            })
            .collect();
        let mut all = BTreeMap::new();
        all.insert(committee.id(me)?, commitments);
        let signing = Signing {
            session,
            me: me.clone(),
            committee,
            signers,
            message,
            key,
            step: Step::Round1 {
                nonces: SingleUseNonces(nonces),
                commitments: all,
                early_shares: BTreeMap::new(),
            },
        };
        Ok((signing, out))
    }

    fn is_aggregator(&self) -> bool {
        Signing::aggregator(&self.signers) == Some(&self.me)
    }

    /// Handles one message from an authenticated party.
    pub fn handle(self, from: &NodeId, msg: SignMsg) -> Result<SignProgress, ProtocolError> {
        if !self.signers.contains(from) || from == &self.me {
            return Err(ProtocolError::blame(
                from,
                format!("{from} is not another signer of this request"),
            ));
        }
        let from_id = self.committee.id(from)?;
        let Signing {
            session,
            me,
            committee,
            signers,
            message,
            key,
            step,
        } = self;
        let rebuild = |step| Signing {
            session,
            me: me.clone(),
            committee: committee.clone(),
            signers: signers.clone(),
            message: message.clone(),
            key: key.clone(),
            step,
        };
        match (step, msg) {
            // Round 1: one commitment per signer.
            (
                Step::Round1 {
                    nonces,
                    mut commitments,
                    early_shares,
                },
                SignMsg::Commitments(bytes),
            ) => {
                let c = SigningCommitments::deserialize(&bytes).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable commitments: {e}"))
                })?;
                record_once(&mut commitments, from_id, c, from, "signing round-1")?;
                let s = rebuild(Step::Round1 {
                    nonces,
                    commitments,
                    early_shares,
                });
                s.maybe_sign()
            }
            // A share can overtake the last commitments on the aggregator.
            (
                Step::Round1 {
                    nonces,
                    commitments,
                    mut early_shares,
                },
                SignMsg::Share(bytes),
            ) => {
                let share = SignatureShare::deserialize(&bytes).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable signature share: {e}"))
                })?;
                record_once(&mut early_shares, from_id, share, from, "signing round-2")?;
                Ok(SignProgress::Continue(
                    rebuild(Step::Round1 {
                        nonces,
                        commitments,
                        early_shares,
                    }),
                    Vec::new(),
                ))
            }
            (
                Step::Round2 {
                    package,
                    mut shares,
                },
                SignMsg::Share(bytes),
            ) => {
                let share = SignatureShare::deserialize(&bytes).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable signature share: {e}"))
                })?;
                record_once(&mut shares, from_id, share, from, "signing round-2")?;
                rebuild(Step::Round2 { package, shares }).maybe_aggregate(Vec::new())
            }
            (Step::Round2 { package, shares }, SignMsg::Commitments(bytes)) => {
                let same = SigningCommitments::deserialize(&bytes)
                    .ok()
                    .is_some_and(|c| package.signing_commitments().get(&from_id) == Some(&c));
                if !same {
                    return Err(ProtocolError::blame(
                        from,
                        format!("{from} sent two different signing round-1 messages"),
                    ));
                }
                Ok(SignProgress::Continue(
                    rebuild(Step::Round2 { package, shares }),
                    Vec::new(),
                ))
            }
        }
    }

    fn maybe_sign(self) -> Result<SignProgress, ProtocolError> {
        match self.step {
            Step::Round1 {
                nonces,
                commitments,
                early_shares,
            } if commitments.len() == self.signers.len() => {
                // Round 2 (RFC 9591 5.2): build the package every signer builds, sign once.
                let package = SigningPackage::new(commitments, &self.message);
                let my_share = nonces.sign(&package, &self.key.key_package).map_err(|e| {
                    ProtocolError::Aborted {
                        culprits: self.committee.culprits(&e.culprits()),
                        reason: format!("FROST sign: {e}"),
                    }
                })?;
                let my_id = self.committee.id(&self.me)?;
                let aggregator = Signing::aggregator(&self.signers)
                    .ok_or_else(|| ProtocolError::Bug("no signers".into()))?
                    .clone();
                if aggregator != self.me {
                    return Ok(SignProgress::Finished {
                        signature: None,
                        out: vec![Outgoing {
                            to: aggregator,
                            msg: SignMsg::Share(my_share.serialize()),
                        }],
                    });
                }
                let mut shares = early_shares;
                shares.insert(my_id, my_share);
                Signing {
                    step: Step::Round2 { package, shares },
                    ..self
                }
                .maybe_aggregate(Vec::new())
            }
            step => Ok(SignProgress::Continue(Signing { step, ..self }, Vec::new())),
        }
    }

    fn maybe_aggregate(self, out: Vec<Outgoing<SignMsg>>) -> Result<SignProgress, ProtocolError> {
        if !self.is_aggregator() {
            return Err(ProtocolError::Bug("aggregating on a non-aggregator".into()));
        }
        match &self.step {
            Step::Round2 { package, shares } if shares.len() == self.signers.len() => {
                // RFC 9591 5.3: aggregate; frost verifies the group signature and, on failure,
                // each share, naming the cheaters.
                let sig = frost_ed25519::aggregate(package, shares, &self.key.public_key_package)
                    .map_err(|e| ProtocolError::Aborted {
                    culprits: self.committee.culprits(&e.culprits()),
                    reason: format!("FROST aggregate: {e}"),
                })?;
                let bytes = sig
                    .serialize()
                    .map_err(|e| ProtocolError::Bug(format!("serialize signature: {e}")))?;
                verify_ed25519(&self.key.public_key_package, &self.message, &bytes)?;
                Ok(SignProgress::Finished {
                    signature: Some(bytes),
                    out,
                })
            }
            _ => Ok(SignProgress::Continue(self, out)),
        }
    }
}

/// Independent check (ed25519-dalek, RFC 8032 strict) of a signature before it leaves the node.
pub fn verify_ed25519(
    pkp: &PublicKeyPackage,
    message: &[u8],
    sig: &[u8],
) -> Result<(), ProtocolError> {
    let pk = pkp
        .verifying_key()
        .serialize()
        .map_err(|e| ProtocolError::Bug(format!("serialize key: {e}")))?;
    let pk: [u8; 32] = pk
        .as_slice()
        .try_into()
        .map_err(|_| ProtocolError::Bug("public key is not 32 bytes".into()))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk)
        .map_err(|e| ProtocolError::Bug(format!("public key: {e}")))?;
    let sig = ed25519_dalek::Signature::from_slice(sig)
        .map_err(|e| ProtocolError::Bug(format!("signature: {e}")))?;
    vk.verify_strict(message, &sig)
        .map_err(|e| ProtocolError::Bug(format!("aggregated signature does not verify: {e}")))
}
