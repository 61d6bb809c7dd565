//! CGGMP24 threshold ECDSA on secp256k1 (the `cggmp24` crate, 0.7.0-alpha.3), driven sans-IO.
//!
//! cggmp24 writes its protocols as async functions against `round_based`. round-based 0.4's
//! [`round_based::state_machine::wrap_protocol`] turns such a function into a pollable state
//! machine without a runtime: polling it runs the protocol until it wants to send a message,
//! wants the next incoming message, yields between heavy computations, or returns. `driver`
//! wraps one of those per protocol run and maps it onto this module's by-value transitions:
//! `start(..) -> (State, Vec<Outgoing<CggmpMsg>>)` and
//! `handle(self, from, msg) -> Progress::{Continue, Done}`. No thread, executor or clock is
//! involved; all the CPU work of a step happens inside `start`/`handle`.
//!
//! Phases (each run gets its own [`ExecutionId`](cggmp24::ExecutionId), see [`execution_id`]):
//! - [`keygen::Dkg`]: threshold DKG → [`CoreShare`];
//! - [`keygen::AuxGen`]: auxiliary info (Paillier keys and ring-Pedersen parameters from
//!   pregenerated safe [`Primes`]) → [`AuxShare`], reusable across keys of the same committee;
//! - [`keygen::KeyGen`]: both of the above at once (or the DKG with an existing aux share) →
//!   [`CggmpKeyShare`] via `KeyShare::from_parts`;
//! - [`sign::Signing`]: full interactive signing of a 32-byte digest or of a message;
//! - [`sign::Presigning`] → [`presign::SingleUsePresignature`], consumed by
//!   [`presign::OnlineSigning`] (partial signature, exchange, combine).
//!
//! Every signature is low-s normalised, verified with libsecp256k1 (the `secp256k1` crate,
//! independent of cggmp24's arithmetic) and returned with its recovery id ([`EcdsaSignature`]).
//!
//! Party indices: a node's index is its position in the sorted committee (0-based here; the
//! FROST engines use position + 1, the same order). In signing, cggmp24 numbers the signers
//! 0..t in sorted order and is told each signer's keygen index.
//!
//! The engines are not `Send` (round-based's state machine shares an `Rc` between the future
//! and its driver): create and drive each one on a single thread.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt;

use seqmpc_proto::{NodeId, SessionId};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::ProtocolError;

pub use self::keygen::{AuxGen, AuxSource, Dkg, KeyGen};
pub use self::presign::{OnlineSigning, PartialSignature, SingleUsePresignature};
pub use self::share::{AuxShare, CggmpKeyShare, CoreShare, Primes, SearchBatch};
pub use self::sign::{Presigning, SignData, Signing};
pub use self::verify::EcdsaSignature;

pub mod keygen;
pub mod local;
pub mod presign;
pub mod share;
pub mod sign;
pub mod verify;

/// The big-integer backend cggmp24's Paillier arithmetic runs on in this build: `"gmp"` (built
/// with `--cfg seqmpc_gmp`, module/Cargo.toml) or `"num-bigint"` (pure Rust).
pub const BIGINT_BACKEND: &str = if cfg!(seqmpc_gmp) {
    "gmp"
} else {
    "num-bigint"
};

mod blame;
mod driver;
mod json;

use super::Outgoing;

/// The curve.
pub(crate) type Curve = cggmp24::supported_curves::Secp256k1;
/// Security level of the Paillier and ring-Pedersen parameters (1536-bit safe primes).
pub(crate) type Level = cggmp24::security_level::SecurityLevel128;

/// Which protocol run a message belongs to. A keygen session runs two at once (DKG and aux
/// info), so every message says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Phase {
    /// Threshold DKG.
    Keygen = 1,
    /// Auxiliary info generation.
    AuxInfo = 2,
    /// Full interactive signing.
    Signing = 3,
    /// Presignature generation.
    Presigning = 4,
    /// Online step from a presignature: partial signatures.
    Online = 5,
}

impl Phase {
    /// Tag bound into the execution id.
    fn tag(self) -> &'static [u8] {
        match self {
            Phase::Keygen => b"keygen",
            Phase::AuxInfo => b"aux-info",
            Phase::Signing => b"signing",
            Phase::Presigning => b"presigning",
            Phase::Online => b"online",
        }
    }

    fn from_u8(b: u8) -> Option<Phase> {
        match b {
            1 => Some(Phase::Keygen),
            2 => Some(Phase::AuxInfo),
            3 => Some(Phase::Signing),
            4 => Some(Phase::Presigning),
            5 => Some(Phase::Online),
            _ => None,
        }
    }
}

/// A CGGMP24 protocol message: a serialized cggmp24 message with its phase and routing.
///
/// A broadcast message is sent, identical, to every other party of the phase; the receiver
/// hands it to cggmp24 as a broadcast (cggmp24's echo round then checks that everybody got
/// the same). A p2p message is for its recipient only and may carry secrets: the transport
/// must encrypt it (Noise does).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CggmpMsg {
    /// Sent to every other party of the phase.
    Broadcast {
        /// Protocol run.
        phase: Phase,
        /// Serialized cggmp24 message.
        payload: Vec<u8>,
    },
    /// Sent to one party.
    P2p {
        /// Protocol run.
        phase: Phase,
        /// Serialized cggmp24 message.
        payload: Vec<u8>,
    },
}

impl fmt::Debug for CggmpMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CggmpMsg::Broadcast { phase, payload } => {
                write!(f, "Broadcast({phase:?}, {} bytes)", payload.len())
            }
            CggmpMsg::P2p { phase, payload } => {
                write!(f, "P2p({phase:?}, {} bytes, redacted)", payload.len())
            }
        }
    }
}

/// A [`CggmpMsg`] whose wire bytes could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed CGGMP24 message: {0}")]
pub struct MalformedMsg(&'static str);

impl CggmpMsg {
    /// Protocol run of the message.
    pub fn phase(&self) -> Phase {
        match self {
            CggmpMsg::Broadcast { phase, .. } | CggmpMsg::P2p { phase, .. } => *phase,
        }
    }

    /// True for a broadcast message.
    pub fn is_broadcast(&self) -> bool {
        matches!(self, CggmpMsg::Broadcast { .. })
    }

    /// Serialized cggmp24 message.
    pub fn payload(&self) -> &[u8] {
        match self {
            CggmpMsg::Broadcast { payload, .. } | CggmpMsg::P2p { payload, .. } => payload,
        }
    }

    fn into_payload(self) -> Vec<u8> {
        match self {
            CggmpMsg::Broadcast { payload, .. } | CggmpMsg::P2p { payload, .. } => payload,
        }
    }

    /// Wire form: `[phase, routing (0 broadcast, 1 p2p), payload..]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let routing = u8::from(!self.is_broadcast());
        let mut out = Vec::with_capacity(self.payload().len() + 2);
        out.push(self.phase() as u8);
        out.push(routing);
        out.extend_from_slice(self.payload());
        out
    }

    /// Parses the wire form of [`CggmpMsg::to_bytes`]. A failure is the sender's fault.
    pub fn from_bytes(bytes: &[u8]) -> Result<CggmpMsg, MalformedMsg> {
        let [phase, routing, payload @ ..] = bytes else {
            return Err(MalformedMsg("shorter than its header"));
        };
        let phase = Phase::from_u8(*phase).ok_or(MalformedMsg("unknown phase"))?;
        let payload = payload.to_vec();
        match routing {
            0 => Ok(CggmpMsg::Broadcast { phase, payload }),
            1 => Ok(CggmpMsg::P2p { phase, payload }),
            _ => Err(MalformedMsg("unknown routing")),
        }
    }
}

/// What a transition produced.
#[derive(Debug)]
pub enum Progress<S, O> {
    /// Keep going; send these.
    Continue(S, Vec<Outgoing<CggmpMsg>>),
    /// Finished; still send these (the last messages of this party).
    Done(O, Vec<Outgoing<CggmpMsg>>),
}

/// A CGGMP24 session state machine: messages in, messages out.
pub trait Engine: Sized {
    /// What the session produces.
    type Output;

    /// Handles one message from an authenticated party.
    fn handle(
        self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Progress<Self, Self::Output>, ProtocolError>;
}

/// A 32-byte message digest signed as is (`--prehashed`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest32(pub [u8; 32]);

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", hex::encode(self.0))
    }
}

/// A prehashed digest that is not 32 bytes long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a prehashed digest must be 32 bytes, got {len}")]
pub struct DigestLengthError {
    /// Length received.
    pub len: usize,
}

impl TryFrom<&[u8]> for Digest32 {
    type Error = DigestLengthError;
    fn try_from(b: &[u8]) -> Result<Digest32, DigestLengthError> {
        <[u8; 32]>::try_from(b)
            .map(Digest32)
            .map_err(|_| DigestLengthError { len: b.len() })
    }
}

impl From<DigestLengthError> for ProtocolError {
    fn from(e: DigestLengthError) -> ProtocolError {
        ProtocolError::Local(e.to_string())
    }
}

/// The parties of one protocol run in protocol-index order, and which one we are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parties {
    nodes: Vec<NodeId>,
    me: u16,
}

impl Parties {
    /// `nodes` must be sorted and unique (as the chain stores them): the index of a party is
    /// its position, and every party must compute the same mapping.
    pub(crate) fn new(nodes: &[NodeId], me: &NodeId) -> Result<Parties, ProtocolError> {
        if !nodes.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
            return Err(ProtocolError::Local(
                "parties must be sorted and unique".into(),
            ));
        }
        u16::try_from(nodes.len()).map_err(|_| ProtocolError::Local("too many parties".into()))?;
        let me = nodes
            .iter()
            .position(|n| n == me)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| ProtocolError::Local(format!("{me} is not a party")))?;
        Ok(Parties {
            nodes: nodes.to_vec(),
            me,
        })
    }

    pub(crate) fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub(crate) fn me(&self) -> u16 {
        self.me
    }

    pub(crate) fn my_node(&self) -> Option<&NodeId> {
        self.node(self.me)
    }

    /// Number of parties (checked to fit in u16 at construction).
    pub(crate) fn n(&self) -> u16 {
        u16::try_from(self.nodes.len()).unwrap_or(u16::MAX)
    }

    pub(crate) fn index_of(&self, node: &NodeId) -> Option<u16> {
        self.nodes
            .iter()
            .position(|n| n == node)
            .and_then(|i| u16::try_from(i).ok())
    }

    pub(crate) fn node(&self, i: u16) -> Option<&NodeId> {
        self.nodes.get(usize::from(i))
    }

    /// An authenticated sender that is another party of this run, or the sender is blamed.
    pub(crate) fn other(&self, from: &NodeId) -> Result<u16, ProtocolError> {
        match self.index_of(from) {
            Some(i) if i != self.me => Ok(i),
            _ => Err(ProtocolError::blame(
                from,
                format!("{from} is not another party of this protocol run"),
            )),
        }
    }

    /// Recipients of a broadcast: everybody else.
    pub(crate) fn others(&self) -> impl Iterator<Item = &NodeId> {
        let me = self.my_node().cloned();
        self.nodes.iter().filter(move |n| Some(*n) != me.as_ref())
    }
}

/// Execution id of one protocol run: SHA-256 over a domain tag, the phase, the session id,
/// the parties in index order and the run's parameters (threshold, signers' keygen indices).
/// Parties that disagree on any of these get different ids and the run fails instead of
/// mixing messages; a run's messages cannot be replayed into another session or phase.
pub fn execution_id(
    phase: Phase,
    session: &SessionId,
    parties: &[NodeId],
    params: &[u16],
) -> [u8; 32] {
    execution_id_bound(phase, session, parties, params, &[])
}

/// [`execution_id`] that also commits to `bind` (public data every party must hold alike,
/// e.g. the fingerprint of the aux info a keygen's DKG is combined with), so a party holding
/// other data runs another execution and the run fails at once instead of producing shares
/// that do not fit together. An empty `bind` gives [`execution_id`]'s value.
pub fn execution_id_bound(
    phase: Phase,
    session: &SessionId,
    parties: &[NodeId],
    params: &[u16],
    bind: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"seqmpc/cggmp24-secp256k1/execution-id/v1\0");
    h.update(phase.tag());
    h.update([0]);
    h.update(session.0);
    h.update((parties.len() as u64).to_be_bytes());
    for p in parties {
        h.update((p.as_str().len() as u64).to_be_bytes());
        h.update(p.as_str().as_bytes());
    }
    h.update((params.len() as u64).to_be_bytes());
    for x in params {
        h.update(x.to_be_bytes());
    }
    if !bind.is_empty() {
        h.update(b"bind");
        h.update((bind.len() as u64).to_be_bytes());
        h.update(bind);
    }
    h.finalize().into()
}

/// An owned RNG for a protocol run, seeded from the caller's (the run outlives the borrow).
pub(crate) fn owned_rng<R: rand::RngCore + rand::CryptoRng>(
    rng: &mut R,
) -> Result<rand::rngs::StdRng, ProtocolError> {
    use rand::SeedableRng as _;
    rand::rngs::StdRng::from_rng(rng).map_err(|e| ProtocolError::Local(format!("rng: {e}")))
}
