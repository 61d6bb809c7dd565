//! FROST signing (RFC 9591 sections 5.1-5.3), driven sans-IO, every signer an aggregator.
//!
//! Every signer broadcasts its commitments to the other signers (round 1). Each signer builds
//! the same `SigningPackage`, signs, and sends its share to every other signer (round 2). Each
//! signer that holds all shares can aggregate and verify the group signature (frost, then
//! independently: ed25519-dalek or libsecp256k1, see [`FrostScheme::verify_independently`]).
//! So any signer can bring the signature to the chain: the session layer has the
//! [`aggregator`] (the first signer in sorted order) aggregate and submit at once, and the
//! others keep the shares ([`Signing::defer_aggregation`]) and aggregate only when the chain
//! still lacks the signature a little later, so that a dead or stalled aggregator costs
//! nothing. Nonces are consumed by the transition that signs. One state machine, generic over
//! the ciphersuite; [`AnySigning`] picks it from the key.
//!
//! A share travels with [`package_hash`] (the key generation and the `SigningPackage` it was
//! computed for) in the sender's signed message. A signer takes only shares of its own
//! package; when frost names a share that does not verify, [`SignProgress::Blamed`] hands out
//! the package, so that the failure report can quote it with the culprit's signed share and the
//! chain can check the share against the culprit's verifying share (`crate::evidence`).
//!
//! secp256k1-tr signs plain BIP340 under the key's x-only public key: frost-secp256k1-tr
//! negates nonces and shares as BIP340 needs (even-y R and key), and no further taproot tweak
//! is applied here (its DKG already made the key a BIP341 key-path-only output key).

use std::collections::BTreeMap;
use std::sync::Arc;

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::round1::{self, SigningCommitments, SigningNonces};
use frost_core::round2::{self, SignatureShare};
use frost_core::{Identifier, SigningPackage};
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use rand::{CryptoRng, RngCore};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::frost_dkg::DkgOutput;
use super::{record_once, Committee, FrostScheme, Outgoing};
use crate::error::ProtocolError;

/// A signing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignMsg {
    /// Round 1: serialized `SigningCommitments`.
    Commitments(Vec<u8>),
    /// Round 2, to every other signer: a serialized `SignatureShare` and the
    /// [`package_hash`] it was computed for (32 bytes from an honest signer).
    Share {
        /// Serialized `SignatureShare`.
        share: Vec<u8>,
        /// [`package_hash`] of the signer's key generation and package.
        package_hash: Vec<u8>,
    },
}

/// Domain separation of [`package_hash`].
const PACKAGE_HASH_TAG: &[u8] = b"seqmpc/frost-sign-package/v1\0";

/// SHA-256 over a tag, the key `generation` (big-endian) and a serialized `SigningPackage`:
/// what a signer's share message says it signed.
pub fn package_hash(generation: u64, package: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PACKAGE_HASH_TAG);
    h.update(generation.to_be_bytes());
    h.update(package);
    h.finalize().into()
}

/// A READY key share with its group data, as loaded from the store.
pub struct KeyMaterial<C: FrostScheme> {
    key_package: KeyPackage<C>,
    public_key_package: PublicKeyPackage<C>,
    public_key: Vec<u8>,
    parties: Vec<NodeId>,
}

impl<C: FrostScheme> std::fmt::Debug for KeyMaterial<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

impl<C: FrostScheme> KeyMaterial<C> {
    /// Checks that the share belongs to the group key and derives the chain's public key.
    /// `parties` is the key's committee (sorted), which fixes the FROST identifiers.
    pub fn new(
        key_package: KeyPackage<C>,
        public_key_package: PublicKeyPackage<C>,
        parties: Vec<NodeId>,
    ) -> Result<Self, ProtocolError> {
        if key_package.verifying_key() != public_key_package.verifying_key() {
            return Err(ProtocolError::Local(
                "key package and public key package are of different keys".into(),
            ));
        }
        let public_key = C::chain_public_key(public_key_package.verifying_key())?;
        Ok(KeyMaterial {
            key_package,
            public_key_package,
            public_key,
            parties,
        })
    }

    /// The key material of a finished DKG.
    pub fn from_dkg(out: DkgOutput<C>, parties: Vec<NodeId>) -> Result<Self, ProtocolError> {
        KeyMaterial::new(out.key_package, out.public_key_package, parties)
    }

    /// Group public key as the chain sees it ([`FrostScheme::chain_public_key`]).
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The group's public key package.
    pub fn public_key_package(&self) -> &PublicKeyPackage<C> {
        &self.public_key_package
    }

    /// Decodes what [`encode_packages`] wrote.
    pub fn decode(bytes: &[u8], parties: Vec<NodeId>) -> Result<Self, ProtocolError> {
        let bad = |what: &str| ProtocolError::Local(format!("stored share is malformed: {what}"));
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let kp = rest.get(..len).ok_or_else(|| bad("key package length"))?;
        let pkp = rest.get(len..).ok_or_else(|| bad("key package length"))?;
        KeyMaterial::new(
            KeyPackage::deserialize(kp).map_err(|e| bad(&format!("key package: {e}")))?,
            PublicKeyPackage::deserialize(pkp)
                .map_err(|e| bad(&format!("public key package: {e}")))?,
            parties,
        )
    }
}

/// Encodes a share for storage: big-endian u32 length of the serialized key package, the key
/// package, then the public key package (frost's encodings, which carry the ciphersuite id).
pub fn encode_packages<C: FrostScheme>(
    key_package: &KeyPackage<C>,
    public_key_package: &PublicKeyPackage<C>,
) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    let kp = Zeroizing::new(
        key_package
            .serialize()
            .map_err(|e| ProtocolError::Bug(format!("serialize key package: {e}")))?,
    );
    let pkp = public_key_package
        .serialize()
        .map_err(|e| ProtocolError::Bug(format!("serialize public key package: {e}")))?;
    let len =
        u32::try_from(kp.len()).map_err(|_| ProtocolError::Bug("key package too large".into()))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(4 + kp.len() + pkp.len()));
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&kp);
    buf.extend_from_slice(&pkp);
    Ok(buf)
}

/// Signing nonces that can be used once: not `Clone`, consumed by [`SingleUseNonces::sign`].
struct SingleUseNonces<C: FrostScheme>(SigningNonces<C>);

impl<C: FrostScheme> SingleUseNonces<C> {
    fn sign(
        self,
        package: &SigningPackage<C>,
        key: &KeyPackage<C>,
    ) -> Result<SignatureShare<C>, frost_core::Error<C>> {
        // `self` (and the nonces, zeroized on drop by frost) is gone after this call.
        round2::sign(package, &self.0, key)
    }
}

#[allow(clippy::large_enum_variant)] // moved by value once per step; boxing would allocate per message
enum Step<C: FrostScheme> {
    /// Collecting the other signers' commitments.
    Round1 {
        nonces: SingleUseNonces<C>,
        commitments: BTreeMap<Identifier<C>, SigningCommitments<C>>,
        /// Shares that overtook the last commitments, with the hash each names.
        early_shares: BTreeMap<Identifier<C>, (SignatureShare<C>, Vec<u8>)>,
    },
    /// Signed: collecting the other signers' signature shares.
    Round2 {
        package: SigningPackage<C>,
        /// The [`package_hash`] of `package` and this key generation.
        hash: [u8; 32],
        shares: BTreeMap<Identifier<C>, SignatureShare<C>>,
    },
}

/// A signing session in progress.
pub struct Signing<C: FrostScheme> {
    session: SessionId,
    me: NodeId,
    committee: Committee<C>,
    signers: Vec<NodeId>,
    message: Vec<u8>,
    key: Arc<KeyMaterial<C>>,
    /// The key generation of `key` (bound into [`package_hash`]).
    generation: u64,
    step: Step<C>,
    /// Once every share is in, wait for [`Signing::aggregate`] instead of aggregating at once
    /// (a backup submitter, which needs the signature only if the aggregator's is late).
    deferred: bool,
}

impl<C: FrostScheme> std::fmt::Debug for Signing<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("scheme", &C::SCHEME)
            .field("session", &self.session)
            .field("me", &self.me)
            .finish()
    }
}

/// What a transition produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved by value once per step; boxing would allocate per message
pub enum SignProgress<C: FrostScheme> {
    /// Keep going; send these.
    Continue(Signing<C>, Vec<Outgoing<SignMsg>>),
    /// Every share is in: send these, and `signature` is the 64-byte group signature,
    /// verified.
    Finished {
        /// Verified signature.
        signature: Vec<u8>,
        /// Last messages to send.
        out: Vec<Outgoing<SignMsg>>,
    },
    /// Shares of this signer's own package did not verify. `error` names their senders;
    /// `signing_package` is the serialized package, for the failure report. `out` is this
    /// signer's own share, still owed to the others (they can blame the culprit as well).
    Blamed {
        /// The abort, with the culprits.
        error: ProtocolError,
        /// The serialized `SigningPackage` every quoted share names.
        signing_package: Vec<u8>,
        /// Last messages to send.
        out: Vec<Outgoing<SignMsg>>,
    },
}

/// The aggregator of a signer set: the first signer in sorted order.
pub fn aggregator(signers: &[NodeId]) -> Option<&NodeId> {
    signers.iter().min()
}

impl<C: FrostScheme> Signing<C> {
    /// Round 1: commits to fresh nonces and returns the commitments to send. `generation` is
    /// the key generation of `key` (its record's).
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        signers: &[NodeId],
        message: Vec<u8>,
        key: Arc<KeyMaterial<C>>,
        generation: u64,
        rng: &mut R,
    ) -> Result<(Signing<C>, Vec<Outgoing<SignMsg>>), ProtocolError> {
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
            generation,
            step: Step::Round1 {
                nonces: SingleUseNonces(nonces),
                commitments: all,
                early_shares: BTreeMap::new(),
            },
            deferred: false,
        };
        Ok((signing, out))
    }

    /// The other signers whose message of the current round this party still waits for:
    /// in round 1 those whose commitments are missing, in round 2 those whose signature
    /// shares are missing. Every signer sends both to all others as soon as it can, so at a
    /// timeout these are the signers that stayed silent (towards this signer).
    pub fn waiting_for(&self) -> Vec<NodeId> {
        let missing = |s: &&NodeId| {
            let Ok(id) = self.committee.id(s) else {
                return false;
            };
            match &self.step {
                Step::Round1 { commitments, .. } => !commitments.contains_key(&id),
                Step::Round2 { shares, .. } => !shares.contains_key(&id),
            }
        };
        self.signers
            .iter()
            .filter(|s| **s != self.me)
            .filter(missing)
            .cloned()
            .collect()
    }

    /// Once every share is in, keep them until [`Signing::aggregate`] instead of aggregating.
    pub fn defer_aggregation(&mut self) {
        self.deferred = true;
    }

    /// Whether every signer's share is in (then a deferred signing waits for
    /// [`Signing::aggregate`]).
    pub fn has_all_shares(&self) -> bool {
        matches!(&self.step, Step::Round2 { shares, .. } if shares.len() == self.signers.len())
    }

    /// Aggregates and verifies a deferred signing that has every share.
    pub fn aggregate(self) -> Result<SignProgress<C>, ProtocolError> {
        if !self.has_all_shares() {
            return Err(ProtocolError::Bug(
                "aggregating before every share is in".into(),
            ));
        }
        Signing {
            deferred: false,
            ..self
        }
        .maybe_aggregate(Vec::new())
    }

    /// Handles one message from an authenticated party.
    pub fn handle(self, from: &NodeId, msg: SignMsg) -> Result<SignProgress<C>, ProtocolError> {
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
            generation,
            step,
            deferred,
        } = self;
        let rebuild = |step| Signing {
            session,
            me: me.clone(),
            committee: committee.clone(),
            signers: signers.clone(),
            message: message.clone(),
            key: key.clone(),
            generation,
            step,
            deferred,
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
            // A share can overtake the last commitments.
            (
                Step::Round1 {
                    nonces,
                    commitments,
                    mut early_shares,
                },
                SignMsg::Share {
                    share,
                    package_hash,
                },
            ) => {
                let share = SignatureShare::deserialize(&share).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable signature share: {e}"))
                })?;
                record_once(
                    &mut early_shares,
                    from_id,
                    (share, package_hash),
                    from,
                    "signing round-2",
                )?;
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
                    hash,
                    mut shares,
                },
                SignMsg::Share {
                    share,
                    package_hash,
                },
            ) => {
                let share = SignatureShare::deserialize(&share).map_err(|e| {
                    ProtocolError::blame(from, format!("undecodable signature share: {e}"))
                })?;
                same_package(from, &package_hash, &hash)?;
                record_once(&mut shares, from_id, share, from, "signing round-2")?;
                rebuild(Step::Round2 {
                    package,
                    hash,
                    shares,
                })
                .maybe_aggregate(Vec::new())
            }
            (
                Step::Round2 {
                    package,
                    hash,
                    shares,
                },
                SignMsg::Commitments(bytes),
            ) => {
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
                    rebuild(Step::Round2 {
                        package,
                        hash,
                        shares,
                    }),
                    Vec::new(),
                ))
            }
        }
    }

    fn maybe_sign(self) -> Result<SignProgress<C>, ProtocolError> {
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
                let package_bytes = package
                    .serialize()
                    .map_err(|e| ProtocolError::Bug(format!("serialize signing package: {e}")))?;
                let hash = package_hash(self.generation, &package_bytes);
                let my_id = self.committee.id(&self.me)?;
                let out = self
                    .signers
                    .iter()
                    .filter(|s| **s != self.me)
                    .map(|s| Outgoing {
                        to: s.clone(),
                        msg: SignMsg::Share {
                            share: my_share.serialize(),
                            package_hash: hash.to_vec(),
                        },
                    })
                    .collect();
                let mut shares = BTreeMap::new();
                for (id, (share, their_hash)) in early_shares {
                    let from = self
                        .committee
                        .node(&id)
                        .ok_or_else(|| ProtocolError::Bug("share of an unknown signer".into()))?;
                    same_package(from, &their_hash, &hash)?;
                    shares.insert(id, share);
                }
                shares.insert(my_id, my_share);
                Signing {
                    step: Step::Round2 {
                        package,
                        hash,
                        shares,
                    },
                    ..self
                }
                .maybe_aggregate(out)
            }
            step => Ok(SignProgress::Continue(Signing { step, ..self }, Vec::new())),
        }
    }

    fn maybe_aggregate(
        self,
        out: Vec<Outgoing<SignMsg>>,
    ) -> Result<SignProgress<C>, ProtocolError> {
        match &self.step {
            Step::Round2 {
                package, shares, ..
            } if shares.len() == self.signers.len() && !self.deferred => {
                // RFC 9591 5.3: aggregate; frost verifies the group signature and, on failure,
                // each share, naming the cheaters.
                let sig = match frost_core::aggregate(package, shares, &self.key.public_key_package)
                {
                    Ok(sig) => sig,
                    Err(e) => {
                        let signing_package = package.serialize().map_err(|e| {
                            ProtocolError::Bug(format!("serialize signing package: {e}"))
                        })?;
                        return Ok(SignProgress::Blamed {
                            error: ProtocolError::Aborted {
                                culprits: self.committee.culprits(&e.culprits()),
                                reason: format!("FROST aggregate: {e}"),
                            },
                            signing_package,
                            out,
                        });
                    }
                };
                let bytes = sig
                    .serialize()
                    .map_err(|e| ProtocolError::Bug(format!("serialize signature: {e}")))?;
                C::verify_independently(&self.key.public_key, &self.message, &bytes)?;
                Ok(SignProgress::Finished {
                    signature: bytes,
                    out,
                })
            }
            _ => Ok(SignProgress::Continue(self, out)),
        }
    }
}

/// A share is taken only for this signer's own package. A share that names another one ends
/// the session without a culprit: a signer cannot tell a signer that lies about its package
/// from one that was sent other commitments than itself (an equivocating signer), nor a stale
/// key generation from either.
fn same_package(from: &NodeId, theirs: &[u8], mine: &[u8; 32]) -> Result<(), ProtocolError> {
    if theirs == mine.as_slice() {
        return Ok(());
    }
    Err(ProtocolError::Aborted {
        culprits: Vec::new(),
        reason: format!(
            "{from}'s signature share is for another signing package or key generation than \
             this signer's (commitments differ between signers, or {from} lies)"
        ),
    })
}

/// A READY key share of either scheme.
#[derive(Clone, Debug)]
pub enum AnyKeyMaterial {
    /// FROST-Ed25519.
    Ed25519(Arc<KeyMaterial<Ed25519Sha512>>),
    /// FROST-secp256k1-tr (BIP340).
    Secp256k1Tr(Arc<KeyMaterial<Secp256K1Sha256TR>>),
}

impl AnyKeyMaterial {
    /// Decodes a share of `scheme` written by [`encode_packages`].
    pub fn decode(
        scheme: Scheme,
        bytes: &[u8],
        parties: Vec<NodeId>,
    ) -> Result<Self, ProtocolError> {
        Ok(match scheme {
            Scheme::FrostEd25519 => {
                AnyKeyMaterial::Ed25519(Arc::new(KeyMaterial::decode(bytes, parties)?))
            }
            Scheme::FrostSecp256k1Tr => {
                AnyKeyMaterial::Secp256k1Tr(Arc::new(KeyMaterial::decode(bytes, parties)?))
            }
            Scheme::Cggmp24Secp256k1 => {
                return Err(ProtocolError::Local(
                    "cggmp24-secp256k1 is not a FROST scheme".into(),
                ))
            }
        })
    }

    /// The scheme of the key.
    pub fn scheme(&self) -> Scheme {
        match self {
            AnyKeyMaterial::Ed25519(_) => Ed25519Sha512::SCHEME,
            AnyKeyMaterial::Secp256k1Tr(_) => Secp256K1Sha256TR::SCHEME,
        }
    }

    /// Group public key as the chain sees it.
    pub fn public_key(&self) -> &[u8] {
        match self {
            AnyKeyMaterial::Ed25519(k) => k.public_key(),
            AnyKeyMaterial::Secp256k1Tr(k) => k.public_key(),
        }
    }

    /// frost's serialization of the public key package (group key and verifying shares),
    /// reported to the chain.
    pub fn public_key_package(&self) -> Result<Vec<u8>, ProtocolError> {
        match self {
            AnyKeyMaterial::Ed25519(k) => super::encode_public_key_package(k.public_key_package()),
            AnyKeyMaterial::Secp256k1Tr(k) => {
                super::encode_public_key_package(k.public_key_package())
            }
        }
    }
}

/// A signing session of the key's scheme: dispatch over [`Signing`]'s ciphersuites.
#[derive(Debug)]
pub enum AnySigning {
    /// FROST-Ed25519.
    Ed25519(Signing<Ed25519Sha512>),
    /// FROST-secp256k1-tr (BIP340).
    Secp256k1Tr(Signing<Secp256K1Sha256TR>),
}

/// What a transition of [`AnySigning`] produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved by value once per step; boxing would allocate per message
pub enum AnySignProgress {
    /// Keep going; send these.
    Continue(AnySigning, Vec<Outgoing<SignMsg>>),
    /// Every share is in, see [`SignProgress::Finished`].
    Finished {
        /// Verified signature: 64 bytes in both schemes.
        signature: Vec<u8>,
        /// Last messages to send.
        out: Vec<Outgoing<SignMsg>>,
    },
    /// Shares did not verify, see [`SignProgress::Blamed`].
    Blamed {
        /// The abort, with the culprits.
        error: ProtocolError,
        /// The serialized `SigningPackage`.
        signing_package: Vec<u8>,
        /// Last messages to send.
        out: Vec<Outgoing<SignMsg>>,
    },
}

impl AnySigning {
    /// Round 1 with the key's scheme, see [`Signing::start`].
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        signers: &[NodeId],
        message: Vec<u8>,
        key: AnyKeyMaterial,
        generation: u64,
        rng: &mut R,
    ) -> Result<(AnySigning, Vec<Outgoing<SignMsg>>), ProtocolError> {
        match key {
            AnyKeyMaterial::Ed25519(k) => {
                Signing::start(session, me, signers, message, k, generation, rng)
                    .map(|(s, out)| (AnySigning::Ed25519(s), out))
            }
            AnyKeyMaterial::Secp256k1Tr(k) => {
                Signing::start(session, me, signers, message, k, generation, rng)
                    .map(|(s, out)| (AnySigning::Secp256k1Tr(s), out))
            }
        }
    }

    /// See [`Signing::defer_aggregation`].
    pub fn defer_aggregation(&mut self) {
        match self {
            AnySigning::Ed25519(s) => s.defer_aggregation(),
            AnySigning::Secp256k1Tr(s) => s.defer_aggregation(),
        }
    }

    /// See [`Signing::has_all_shares`].
    pub fn has_all_shares(&self) -> bool {
        match self {
            AnySigning::Ed25519(s) => s.has_all_shares(),
            AnySigning::Secp256k1Tr(s) => s.has_all_shares(),
        }
    }

    /// See [`Signing::aggregate`].
    pub fn aggregate(self) -> Result<AnySignProgress, ProtocolError> {
        Ok(match self {
            AnySigning::Ed25519(s) => erase(s.aggregate()?, AnySigning::Ed25519),
            AnySigning::Secp256k1Tr(s) => erase(s.aggregate()?, AnySigning::Secp256k1Tr),
        })
    }

    /// The signers this party still waits for, see [`Signing::waiting_for`].
    pub fn waiting_for(&self) -> Vec<NodeId> {
        match self {
            AnySigning::Ed25519(s) => s.waiting_for(),
            AnySigning::Secp256k1Tr(s) => s.waiting_for(),
        }
    }

    /// Handles one message from an authenticated party, see [`Signing::handle`].
    pub fn handle(self, from: &NodeId, msg: SignMsg) -> Result<AnySignProgress, ProtocolError> {
        Ok(match self {
            AnySigning::Ed25519(s) => erase(s.handle(from, msg)?, AnySigning::Ed25519),
            AnySigning::Secp256k1Tr(s) => erase(s.handle(from, msg)?, AnySigning::Secp256k1Tr),
        })
    }
}

/// A transition of one ciphersuite's [`Signing`], as [`AnySignProgress`].
fn erase<C: FrostScheme>(
    p: SignProgress<C>,
    wrap: fn(Signing<C>) -> AnySigning,
) -> AnySignProgress {
    match p {
        SignProgress::Continue(s, out) => AnySignProgress::Continue(wrap(s), out),
        SignProgress::Finished { signature, out } => AnySignProgress::Finished { signature, out },
        SignProgress::Blamed {
            error,
            signing_package,
            out,
        } => AnySignProgress::Blamed {
            error,
            signing_package,
            out,
        },
    }
}
