//! FROST distributed key generation (RFC 9591 companion DKG, Pedersen with proofs of
//! knowledge), as implemented by frost-core `keys::dkg`, driven sans-IO. One state machine,
//! generic over the ciphersuite ([`FrostScheme`]); [`AnyDkg`] picks it from the chain's
//! [`Scheme`].
//!
//! Round 1 is a broadcast. FROST requires it to be reliable (every party sees the same
//! package from each sender). We get that from the chain: each party reports a hash of every
//! round-1 package it used (`transcript_hash`) and the chain marks the key READY only when
//! all parties report the same hash and the same public key.
//!
//! secp256k1-tr: frost-secp256k1-tr's `part3` ends with its `post_dkg` hook, which tweaks the
//! group key and every share by BIP341's `TapTweak` with no Merkle root (Q = P + H(P)·G, the
//! key-path-only commitment to an unspendable script path). The key reported to the chain is
//! the x-only encoding of that Q, and signatures are plain BIP340 under it.

use std::collections::BTreeMap;

use frost_core::keys::dkg::{self, round1, round2};
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::Identifier;
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use rand::{CryptoRng, RngCore};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::frost_sign::encode_packages;
use super::{record_once, Committee, FrostScheme, Outgoing};
use crate::error::ProtocolError;

/// A DKG message (serialized frost packages).
#[derive(Clone, PartialEq, Eq)]
pub enum DkgMsg {
    /// Round 1 package, broadcast.
    Round1(Vec<u8>),
    /// Round 2 package, to one party. Carries a secret share for the recipient: the channel
    /// must be encrypted (Noise).
    Round2(Vec<u8>),
}

impl std::fmt::Debug for DkgMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DkgMsg::Round1(b) => write!(f, "Round1({} bytes)", b.len()),
            DkgMsg::Round2(b) => write!(f, "Round2({} bytes, redacted)", b.len()),
        }
    }
}

/// Result of a DKG: the long-lived share and the group's public data.
pub struct DkgOutput<C: FrostScheme> {
    /// This party's key package (secret share). Zeroized on drop by frost.
    pub key_package: KeyPackage<C>,
    /// Public key package, identical for all parties.
    pub public_key_package: PublicKeyPackage<C>,
    /// Group public key as the chain sees it ([`FrostScheme::chain_public_key`]): 32 bytes
    /// RFC 8032 for Ed25519, 32 bytes x-only for secp256k1-tr.
    pub public_key: Vec<u8>,
    /// Hash of all round-1 packages; equal on all honest parties iff they saw the same broadcast.
    pub transcript_hash: [u8; 32],
}

impl<C: FrostScheme> std::fmt::Debug for DkgOutput<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgOutput")
            .field("scheme", &C::SCHEME)
            .field("public_key", &hex::encode(&self.public_key))
            .field("key_package", &"<redacted>")
            .finish()
    }
}

enum Step<C: FrostScheme> {
    /// Waiting for the other parties' round-1 packages (RFC 9591 DKG round 1).
    Round1 {
        secret: round1::SecretPackage<C>,
        received: BTreeMap<Identifier<C>, round1::Package<C>>,
        early_round2: BTreeMap<Identifier<C>, round2::Package<C>>,
    },
    /// Waiting for the round-2 packages addressed to us (round 2).
    Round2 {
        secret: round2::SecretPackage<C>,
        round1: BTreeMap<Identifier<C>, round1::Package<C>>,
        received: BTreeMap<Identifier<C>, round2::Package<C>>,
    },
}

/// A DKG in progress.
pub struct Dkg<C: FrostScheme> {
    session: SessionId,
    me: NodeId,
    my_round1: round1::Package<C>,
    committee: Committee<C>,
    step: Step<C>,
}

impl<C: FrostScheme> std::fmt::Debug for Dkg<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.step {
            Step::Round1 { .. } => "round1",
            Step::Round2 { .. } => "round2",
        };
        f.debug_struct("Dkg")
            .field("scheme", &C::SCHEME)
            .field("session", &self.session)
            .field("me", &self.me)
            .field("step", &step)
            .finish()
    }
}

/// What a transition produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved by value once per step; boxing would allocate per message
pub enum DkgProgress<C: FrostScheme> {
    /// Keep going; send these.
    Continue(Dkg<C>, Vec<Outgoing<DkgMsg>>),
    /// Finished; still send these (our own round-2 packages when theirs overtook round 1).
    Done(Box<DkgOutput<C>>, Vec<Outgoing<DkgMsg>>),
}

fn frost_err<C: FrostScheme>(committee: &Committee<C>, e: frost_core::Error<C>) -> ProtocolError {
    let culprits = committee.culprits(&e.culprits());
    ProtocolError::Aborted {
        culprits,
        reason: format!("FROST DKG: {e}"),
    }
}

impl<C: FrostScheme> Dkg<C> {
    /// Round 1: samples this party's polynomial and returns the package to broadcast.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        parties: &[NodeId],
        threshold: u32,
        rng: &mut R,
    ) -> Result<(Dkg<C>, Vec<Outgoing<DkgMsg>>), ProtocolError> {
        let committee = Committee::new(parties)?;
        let my_id = committee.id(me)?;
        let max = u16::try_from(committee.len())
            .map_err(|_| ProtocolError::Local("too many parties".into()))?;
        let min = u16::try_from(threshold)
            .map_err(|_| ProtocolError::Local("threshold too large".into()))?;
        let (secret, package) = dkg::part1(my_id, max, min, &mut *rng)
            .map_err(|e| ProtocolError::Local(format!("DKG part1: {e}")))?;
        let bytes = package
            .serialize()
            .map_err(|e| ProtocolError::Bug(format!("serialize round1: {e}")))?;
        let out = committee
            .parties()
            .filter(|p| *p != me)
            .map(|p| Outgoing {
                to: p.clone(),
                msg: DkgMsg::Round1(bytes.clone()),
            })
            .collect();
        let dkg = Dkg {
            session,
            me: me.clone(),
            my_round1: package,
            committee,
            step: Step::Round1 {
                secret,
                received: BTreeMap::new(),
                early_round2: BTreeMap::new(),
            },
        };
        Ok((dkg, out))
    }

    /// Handles one message from an authenticated party.
    pub fn handle(self, from: &NodeId, msg: DkgMsg) -> Result<DkgProgress<C>, ProtocolError> {
        if from == &self.me {
            return Err(ProtocolError::Bug("message from myself".into()));
        }
        let from_id = self
            .committee
            .id(from)
            .map_err(|_| ProtocolError::blame(from, format!("{from} is not in the committee")))?;
        let Dkg {
            session,
            me,
            my_round1,
            committee,
            step,
        } = self;
        match (step, msg) {
            // Round 1: collect one package per other party.
            (
                Step::Round1 {
                    secret,
                    mut received,
                    early_round2,
                },
                DkgMsg::Round1(bytes),
            ) => {
                let pkg = round1::Package::deserialize(&bytes).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable round-1 package: {e}"))
                })?;
                record_once(&mut received, from_id, pkg, from, "DKG round-1")?;
                let dkg = Dkg {
                    session,
                    me,
                    my_round1,
                    committee,
                    step: Step::Round1 {
                        secret,
                        received,
                        early_round2,
                    },
                };
                dkg.maybe_round2()
            }
            // Round 2 messages may overtake round-1 ones: keep them for later.
            (
                Step::Round1 {
                    secret,
                    received,
                    mut early_round2,
                },
                DkgMsg::Round2(bytes),
            ) => {
                let pkg = round2::Package::deserialize(&bytes).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable round-2 package: {e}"))
                })?;
                record_once(&mut early_round2, from_id, pkg, from, "DKG round-2")?;
                Ok(DkgProgress::Continue(
                    Dkg {
                        session,
                        me,
                        my_round1,
                        committee,
                        step: Step::Round1 {
                            secret,
                            received,
                            early_round2,
                        },
                    },
                    Vec::new(),
                ))
            }
            (
                Step::Round2 {
                    secret,
                    round1,
                    mut received,
                },
                DkgMsg::Round2(bytes),
            ) => {
                let pkg = round2::Package::deserialize(&bytes).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable round-2 package: {e}"))
                })?;
                record_once(&mut received, from_id, pkg, from, "DKG round-2")?;
                let dkg = Dkg {
                    session,
                    me,
                    my_round1,
                    committee,
                    step: Step::Round2 {
                        secret,
                        round1,
                        received,
                    },
                };
                dkg.maybe_finish(Vec::new())
            }
            // A round-1 message after round 1: identical duplicate is fine, anything else is
            // equivocation.
            (step @ Step::Round2 { .. }, DkgMsg::Round1(bytes)) => {
                let Step::Round2 { round1, .. } = &step else {
                    return Err(ProtocolError::Bug("unreachable step".into()));
                };
                let same = round1::Package::deserialize(&bytes)
                    .ok()
                    .is_some_and(|p| round1.get(&from_id) == Some(&p));
                if !same {
                    return Err(ProtocolError::blame(
                        from,
                        format!("{from} sent two different DKG round-1 messages"),
                    ));
                }
                Ok(DkgProgress::Continue(
                    Dkg {
                        session,
                        me,
                        my_round1,
                        committee,
                        step,
                    },
                    Vec::new(),
                ))
            }
        }
    }

    fn maybe_round2(self) -> Result<DkgProgress<C>, ProtocolError> {
        let others = self.committee.len() - 1;
        match self.step {
            Step::Round1 {
                secret,
                received,
                early_round2,
            } if received.len() == others => {
                // Round 2, part 2: verify proofs of knowledge, compute shares for each party.
                let (secret2, packages) =
                    dkg::part2(secret, &received).map_err(|e| frost_err(&self.committee, e))?;
                let mut out = Vec::with_capacity(packages.len());
                for (id, pkg) in packages {
                    let to = self
                        .committee
                        .node(&id)
                        .ok_or_else(|| ProtocolError::Bug("unknown identifier".into()))?
                        .clone();
                    let bytes = pkg
                        .serialize()
                        .map_err(|e| ProtocolError::Bug(format!("serialize round2: {e}")))?;
                    out.push(Outgoing {
                        to,
                        msg: DkgMsg::Round2(bytes),
                    });
                }
                let dkg = Dkg {
                    session: self.session,
                    me: self.me,
                    my_round1: self.my_round1,
                    committee: self.committee,
                    step: Step::Round2 {
                        secret: secret2,
                        round1: received,
                        received: early_round2,
                    },
                };
                dkg.maybe_finish(out)
            }
            step => Ok(DkgProgress::Continue(Dkg { step, ..self }, Vec::new())),
        }
    }

    fn maybe_finish(self, out: Vec<Outgoing<DkgMsg>>) -> Result<DkgProgress<C>, ProtocolError> {
        let others = self.committee.len() - 1;
        match &self.step {
            Step::Round2 {
                secret,
                round1,
                received,
            } if received.len() == others => {
                // Part 3: verify received shares against commitments, derive the key package.
                let (key_package, public_key_package) = dkg::part3(secret, round1, received)
                    .map_err(|e| frost_err(&self.committee, e))?;
                let public_key = C::chain_public_key(public_key_package.verifying_key())?;
                let transcript_hash = self.transcript_hash(round1)?;
                Ok(DkgProgress::Done(
                    Box::new(DkgOutput {
                        key_package,
                        public_key_package,
                        public_key,
                        transcript_hash,
                    }),
                    out,
                ))
            }
            _ => Ok(DkgProgress::Continue(self, out)),
        }
    }

    /// The transcript hash of this run: [`transcript_digest`] over every round-1 package
    /// (ours included).
    fn transcript_hash(
        &self,
        round1: &BTreeMap<Identifier<C>, round1::Package<C>>,
    ) -> Result<[u8; 32], ProtocolError> {
        let mut all: BTreeMap<Identifier<C>, &round1::Package<C>> =
            round1.iter().map(|(k, v)| (*k, v)).collect();
        all.insert(self.committee.id(&self.me)?, &self.my_round1);
        let mut packages = Vec::with_capacity(all.len());
        for (id, pkg) in all {
            let bytes = pkg
                .serialize()
                .map_err(|e| ProtocolError::Bug(format!("serialize round1: {e}")))?;
            packages.push((id.serialize(), bytes));
        }
        Ok(transcript_digest(C::SCHEME, &self.session, &packages))
    }
}

/// SHA-256 over a tag, the scheme, the session id and the serialized round-1 packages in
/// identifier order, each length-prefixed.
pub(crate) fn transcript_digest(
    scheme: Scheme,
    session: &SessionId,
    packages: &[(Vec<u8>, Vec<u8>)],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"seqmpc/dkg-transcript/v2\0");
    let scheme = scheme.as_str().as_bytes();
    h.update((scheme.len() as u64).to_be_bytes());
    h.update(scheme);
    h.update(session.0);
    for (id, pkg) in packages {
        h.update(id);
        h.update((pkg.len() as u64).to_be_bytes());
        h.update(pkg);
    }
    h.finalize().into()
}

/// A DKG of the scheme the chain asked for: dispatch over [`Dkg`]'s ciphersuites.
#[derive(Debug)]
pub enum AnyDkg {
    /// FROST-Ed25519.
    Ed25519(Dkg<Ed25519Sha512>),
    /// FROST-secp256k1-tr (BIP340).
    Secp256k1Tr(Dkg<Secp256K1Sha256TR>),
}

/// A DKG result of either scheme.
#[derive(Debug)]
pub enum AnyDkgOutput {
    /// FROST-Ed25519.
    Ed25519(Box<DkgOutput<Ed25519Sha512>>),
    /// FROST-secp256k1-tr (BIP340).
    Secp256k1Tr(Box<DkgOutput<Secp256K1Sha256TR>>),
}

/// What a transition of [`AnyDkg`] produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved by value once per step; boxing would allocate per message
pub enum AnyDkgProgress {
    /// Keep going; send these.
    Continue(AnyDkg, Vec<Outgoing<DkgMsg>>),
    /// Finished; still send these.
    Done(AnyDkgOutput, Vec<Outgoing<DkgMsg>>),
}

impl AnyDkg {
    /// Round 1 of a DKG for `scheme`, see [`Dkg::start`].
    pub fn start<R: RngCore + CryptoRng>(
        scheme: Scheme,
        session: SessionId,
        me: &NodeId,
        parties: &[NodeId],
        threshold: u32,
        rng: &mut R,
    ) -> Result<(AnyDkg, Vec<Outgoing<DkgMsg>>), ProtocolError> {
        match scheme {
            Scheme::FrostEd25519 => Dkg::start(session, me, parties, threshold, rng)
                .map(|(d, out)| (AnyDkg::Ed25519(d), out)),
            Scheme::FrostSecp256k1Tr => Dkg::start(session, me, parties, threshold, rng)
                .map(|(d, out)| (AnyDkg::Secp256k1Tr(d), out)),
            Scheme::Cggmp24Secp256k1 => Err(ProtocolError::Local(
                "cggmp24-secp256k1 is not a FROST scheme".into(),
            )),
        }
    }

    /// Handles one message from an authenticated party, see [`Dkg::handle`].
    pub fn handle(self, from: &NodeId, msg: DkgMsg) -> Result<AnyDkgProgress, ProtocolError> {
        fn erase<C: FrostScheme>(
            p: DkgProgress<C>,
            wrap: fn(Dkg<C>) -> AnyDkg,
            wrap_output: fn(Box<DkgOutput<C>>) -> AnyDkgOutput,
        ) -> AnyDkgProgress {
            match p {
                DkgProgress::Continue(d, out) => AnyDkgProgress::Continue(wrap(d), out),
                DkgProgress::Done(o, out) => AnyDkgProgress::Done(wrap_output(o), out),
            }
        }
        Ok(match self {
            AnyDkg::Ed25519(d) => {
                erase(d.handle(from, msg)?, AnyDkg::Ed25519, AnyDkgOutput::Ed25519)
            }
            AnyDkg::Secp256k1Tr(d) => erase(
                d.handle(from, msg)?,
                AnyDkg::Secp256k1Tr,
                AnyDkgOutput::Secp256k1Tr,
            ),
        })
    }
}

impl AnyDkgOutput {
    /// The scheme of the key.
    pub fn scheme(&self) -> Scheme {
        match self {
            AnyDkgOutput::Ed25519(_) => Ed25519Sha512::SCHEME,
            AnyDkgOutput::Secp256k1Tr(_) => Secp256K1Sha256TR::SCHEME,
        }
    }

    /// Group public key as the chain sees it.
    pub fn public_key(&self) -> &[u8] {
        match self {
            AnyDkgOutput::Ed25519(o) => &o.public_key,
            AnyDkgOutput::Secp256k1Tr(o) => &o.public_key,
        }
    }

    /// Hash of the round-1 broadcast, see [`DkgOutput::transcript_hash`].
    pub fn transcript_hash(&self) -> [u8; 32] {
        match self {
            AnyDkgOutput::Ed25519(o) => o.transcript_hash,
            AnyDkgOutput::Secp256k1Tr(o) => o.transcript_hash,
        }
    }

    /// frost's serialization of the public key package (group key and verifying shares),
    /// reported to the chain.
    pub fn public_key_package(&self) -> Result<Vec<u8>, ProtocolError> {
        match self {
            AnyDkgOutput::Ed25519(o) => super::encode_public_key_package(&o.public_key_package),
            AnyDkgOutput::Secp256k1Tr(o) => super::encode_public_key_package(&o.public_key_package),
        }
    }

    /// Encodes the share for storage ([`encode_packages`]); the caller records the scheme.
    pub fn encode_packages(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        match self {
            AnyDkgOutput::Ed25519(o) => encode_packages(&o.key_package, &o.public_key_package),
            AnyDkgOutput::Secp256k1Tr(o) => encode_packages(&o.key_package, &o.public_key_package),
        }
    }
}
