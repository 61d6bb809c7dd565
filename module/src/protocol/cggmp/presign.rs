//! Presignatures and the online signing step.
//!
//! cggmp24's `Presignature` is `Clone` and signs whatever it is given: two signatures from
//! one presignature leak the key. [`SingleUsePresignature`] is not `Clone`, and the only way
//! to sign with it, [`SingleUsePresignature::issue_partial`] (or [`OnlineSigning::start`],
//! which calls it), takes it by value, so a second use does not compile:
//!
//! ```no_run
//! # fn f(p: seqmpc_module::protocol::cggmp::SingleUsePresignature) {
//! let (_partial, _ctx) = p.issue_partial(b"first message"); // compiles: one use
//! # }
//! ```
//!
//! ```compile_fail,E0382
//! # fn f(p: seqmpc_module::protocol::cggmp::SingleUsePresignature) {
//! let (_partial, _ctx) = p.issue_partial(b"first message");
//! let (_partial, _ctx) = p.issue_partial(b"second message"); // error: use of moved value
//! # }
//! ```
//!
//! ```compile_fail,E0599
//! # fn f(p: seqmpc_module::protocol::cggmp::SingleUsePresignature) {
//! let copy = p.clone(); // error: no method `clone`
//! # }
//! ```
//!
//! A presignature has no serialized form: it lives in memory until it signs once, and is never
//! written anywhere (a stored copy read back twice would sign twice with one nonce).
//!
//! Presignatures sign a message known in full (hashed with SHA-256 here), never a raw digest:
//! cggmp24 accepts only `DataToSign` for them, because a raw digest chosen after seeing the
//! presignature forges a signature on another message (ePrint 2021/1330, section 1.1.2).
//! A prehashed request uses the interactive [`Signing`](super::Signing) instead.

use std::collections::BTreeMap;
use std::fmt;

use cggmp24::generic_ec::coords::AlwaysHasAffineX;
use cggmp24::generic_ec::{NonZero, Point, Scalar};
use cggmp24::signing::{PresignatureCommitment, PresignaturePublicData};
use cggmp24::{DataToSign, Presignature};
use seqmpc_proto::NodeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::share::compressed;
use super::verify::{finish, EcdsaSignature};
use super::{CggmpMsg, Curve, Engine, Outgoing, Parties, Phase, Progress};
use crate::error::ProtocolError;

/// The public part of a presignature: `Gamma` (the nonce point R) and every signer's
/// commitments, which check each partial signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
struct PublicData {
    gamma: NonZero<Point<Curve>>,
    /// `(tilde Delta_j, tilde S_j)` by signer position.
    commitments: Vec<(Point<Curve>, Point<Curve>)>,
}

impl PublicData {
    fn from_cggmp(p: &PresignaturePublicData<Curve>) -> PublicData {
        PublicData {
            gamma: p.Gamma,
            commitments: p
                .commitments
                .iter()
                .map(|c| (c.tilde_Delta, c.tilde_S))
                .collect(),
        }
    }

    fn to_cggmp(&self) -> PresignaturePublicData<Curve> {
        PresignaturePublicData {
            Gamma: self.gamma,
            commitments: self
                .commitments
                .iter()
                .map(|(d, s)| PresignatureCommitment {
                    tilde_Delta: *d,
                    tilde_S: *s,
                })
                .collect(),
        }
    }
}

/// A presignature of this party: one signature, once, by the signers that made it.
/// Not `Clone`; consumed by [`SingleUsePresignature::issue_partial`].
pub struct SingleUsePresignature {
    presig: Presignature<Curve>,
    public: PublicData,
    parties: Parties,
    public_key: [u8; 33],
}

impl fmt::Debug for SingleUsePresignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleUsePresignature")
            .field("signers", &self.parties.nodes())
            .field("public_key", &hex::encode(self.public_key))
            .field("presignature", &"<redacted>")
            .finish()
    }
}

impl SingleUsePresignature {
    pub(crate) fn new(
        presig: Presignature<Curve>,
        public: PresignaturePublicData<Curve>,
        parties: Parties,
        public_key: [u8; 33],
    ) -> Result<SingleUsePresignature, ProtocolError> {
        let public = PublicData::from_cggmp(&public);
        if public.commitments.len() != parties.nodes().len() {
            return Err(ProtocolError::Bug(
                "presignature commitments do not match the signers".into(),
            ));
        }
        Ok(SingleUsePresignature {
            presig,
            public,
            parties,
            public_key,
        })
    }

    /// The signers that must sign with this presignature (each with its own).
    pub fn signers(&self) -> &[NodeId] {
        self.parties.nodes()
    }

    /// The key's public key (compressed SEC 1).
    pub fn public_key(&self) -> [u8; 33] {
        self.public_key
    }

    /// The nonce point R (compressed SEC 1), identical on every signer: an id for the
    /// presignature that the signers can agree on.
    pub fn nonce_point(&self) -> Result<[u8; 33], ProtocolError> {
        compressed(&self.public.gamma)
    }

    /// Signs `message` (hashed with SHA-256): consumes the presignature and returns this
    /// signer's partial signature, to send to the other signers, and what combines them.
    pub fn issue_partial(self, message: &[u8]) -> (PartialSignature, OnlineContext) {
        let digest: [u8; 32] = Sha256::digest(message).into();
        let data = DataToSign::<Curve>::digest::<Sha256>(message);
        let SingleUsePresignature {
            presig,
            public,
            parties,
            public_key,
        } = self;
        // `presig` (its secret scalars zeroized on drop by generic-ec) is gone after this.
        let partial = PartialSignature(presig.issue_partial_signature(data).sigma);
        let ctx = OnlineContext {
            public,
            parties,
            public_key,
            digest,
            data,
        };
        (partial, ctx)
    }
}

/// One signer's partial signature (a scalar, no secret): 32 bytes big-endian on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PartialSignature(Scalar<Curve>);

impl fmt::Debug for PartialSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartialSignature({})", hex::encode(self.to_bytes()))
    }
}

impl PartialSignature {
    /// 32 bytes, big-endian.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let b = self.0.to_be_bytes();
        if b.as_ref().len() == out.len() {
            out.copy_from_slice(b.as_ref());
        }
        out
    }

    /// Parses 32 big-endian bytes (a scalar below the group order).
    pub fn from_bytes(b: &[u8]) -> Option<PartialSignature> {
        if b.len() != 32 {
            return None;
        }
        Scalar::from_be_bytes(b).ok().map(PartialSignature)
    }
}

/// What combines the partial signatures of one presignature (public data only).
pub struct OnlineContext {
    public: PublicData,
    parties: Parties,
    public_key: [u8; 33],
    digest: [u8; 32],
    data: DataToSign<Curve>,
}

impl fmt::Debug for OnlineContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnlineContext")
            .field("signers", &self.parties.nodes())
            .field("digest", &hex::encode(self.digest))
            .finish()
    }
}

impl OnlineContext {
    /// The signers, sorted.
    pub fn signers(&self) -> &[NodeId] {
        self.parties.nodes()
    }

    /// The SHA-256 digest being signed.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Checks one signer's partial signature against its presignature commitments
    /// (`sigma_j * Gamma == m * tilde_Delta_j + r * tilde_S_j`); a bad one is the signer's.
    pub fn check(&self, signer: &NodeId, partial: &PartialSignature) -> Result<(), ProtocolError> {
        let j = self.parties.index_of(signer).ok_or_else(|| {
            ProtocolError::blame(
                signer,
                format!("{signer} is not a signer of this presignature"),
            )
        })?;
        let (tilde_delta, tilde_s) = self
            .public
            .commitments
            .get(usize::from(j))
            .ok_or_else(|| ProtocolError::Bug("commitment index out of range".into()))?;
        let gamma = self.public.gamma;
        let r = gamma.x().to_scalar();
        let m = self.data.to_scalar();
        if partial.0 * gamma != m * tilde_delta + r * tilde_s {
            return Err(ProtocolError::blame(
                signer,
                format!("{signer} sent a partial signature that does not match its presignature"),
            ));
        }
        Ok(())
    }

    /// Combines the partial signatures of every signer (each checked, a bad one blamed),
    /// normalises, verifies with libsecp256k1 and computes the recovery id.
    pub fn combine(
        &self,
        partials: &BTreeMap<NodeId, PartialSignature>,
    ) -> Result<EcdsaSignature, ProtocolError> {
        let mut ordered = Vec::with_capacity(self.parties.nodes().len());
        for signer in self.parties.nodes() {
            let p = partials.get(signer).ok_or_else(|| {
                ProtocolError::Local(format!("no partial signature from {signer}"))
            })?;
            self.check(signer, p)?;
            ordered.push(cggmp24::PartialSignature { sigma: p.0 });
        }
        let sig = cggmp24::PartialSignature::combine(&ordered, &self.public.to_cggmp(), self.data)
            .ok_or_else(|| {
                ProtocolError::Bug("checked partial signatures do not combine".into())
            })?;
        finish(&sig, &self.public_key, &self.digest)
    }
}

/// The online step: every signer issues its partial signature from its presignature,
/// broadcasts it to the other signers, and combines all of them (so every signer ends with
/// the same verified signature).
#[derive(Debug)]
pub struct OnlineSigning {
    ctx: OnlineContext,
    partials: BTreeMap<NodeId, PartialSignature>,
}

impl OnlineSigning {
    /// Consumes the presignature, signs `message` (SHA-256) and returns the partial
    /// signature to send to the other signers.
    pub fn start(
        presig: SingleUsePresignature,
        message: &[u8],
    ) -> Result<(OnlineSigning, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        let (partial, ctx) = presig.issue_partial(message);
        let me = ctx
            .parties
            .my_node()
            .cloned()
            .ok_or_else(|| ProtocolError::Bug("own index out of range".into()))?;
        let payload = partial.to_bytes().to_vec();
        let out = ctx
            .parties
            .others()
            .map(|to| Outgoing {
                to: to.clone(),
                msg: CggmpMsg::Broadcast {
                    phase: Phase::Online,
                    payload: payload.clone(),
                },
            })
            .collect();
        let mut partials = BTreeMap::new();
        partials.insert(me, partial);
        Ok((OnlineSigning { ctx, partials }, out))
    }
}

impl Engine for OnlineSigning {
    type Output = EcdsaSignature;

    fn handle(
        mut self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Progress<OnlineSigning, EcdsaSignature>, ProtocolError> {
        self.ctx.parties.other(from)?;
        if msg.phase() != Phase::Online || !msg.is_broadcast() {
            return Err(ProtocolError::blame(
                from,
                format!("{from} sent a {msg:?} message to an online signing"),
            ));
        }
        let partial = PartialSignature::from_bytes(msg.payload()).ok_or_else(|| {
            ProtocolError::blame(from, format!("undecodable partial signature from {from}"))
        })?;
        match self.partials.get(from) {
            Some(p) if *p == partial => return Ok(Progress::Continue(self, Vec::new())),
            Some(_) => {
                return Err(ProtocolError::blame(
                    from,
                    format!("{from} sent two different partial signatures"),
                ))
            }
            None => {}
        }
        self.ctx.check(from, &partial)?;
        self.partials.insert(from.clone(), partial);
        if self.partials.len() < self.ctx.parties.nodes().len() {
            return Ok(Progress::Continue(self, Vec::new()));
        }
        let sig = self.ctx.combine(&self.partials)?;
        Ok(Progress::Done(sig, Vec::new()))
    }
}
