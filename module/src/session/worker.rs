//! What the session manager asks of the runtime's CGGMP24 workers (seconds of CPU, a
//! safe-prime set: work a sans-IO state machine hands out), and the aux info a node offers to
//! reuse for a committee.

use std::fmt;
use std::sync::Arc;

use rand::{CryptoRng, RngCore};
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::codec::untag_share;
use crate::error::ProtocolError;
use crate::protocol::cggmp::{
    AuxShare, AuxSource, CggmpKeyShare, CggmpMsg, EcdsaSignature, Engine, KeyGen, Presigning,
    Progress, SignData, Signing, SingleUsePresignature,
};
use crate::store::{KeyRecord, ShareStatus};

/// Aux info a party holds for a committee and offers to reuse (a keygen's or a resharing's).
#[derive(Clone)]
pub struct AuxOffer {
    /// [`AuxShare::fingerprint`](crate::protocol::cggmp::AuxShare::fingerprint), equal at every party of one aux-info run.
    pub fingerprint: [u8; 32],
    /// [`AuxShare::to_bytes`](crate::protocol::cggmp::AuxShare::to_bytes).
    pub share: Arc<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for AuxOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuxOffer")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .field("share", &"<redacted>")
            .finish()
    }
}

/// The aux info of this committee's READY CGGMP24 key with the smallest key id among
/// `records` (every CGGMP24 share holds its committee's aux info), or `None`.
pub fn aux_offer_in<'a>(
    records: impl IntoIterator<Item = &'a KeyRecord>,
    parties: &[NodeId],
) -> Result<Option<AuxOffer>, ProtocolError> {
    let mut records: Vec<&KeyRecord> = records
        .into_iter()
        .filter(|r| {
            r.status == ShareStatus::Ready
                && r.scheme == Scheme::Cggmp24Secp256k1
                && r.parties == parties
                && r.share.is_some()
        })
        .collect();
    records.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    let Some(share) = records.first().and_then(|r| r.share.as_ref()) else {
        return Ok(None);
    };
    let aux =
        CggmpKeyShare::from_bytes(untag_share(share, Scheme::Cggmp24Secp256k1)?)?.aux_share()?;
    Ok(Some(AuxOffer {
        fingerprint: aux.fingerprint()?,
        share: Arc::new(aux.to_bytes()?),
    }))
}

/// A serialized CGGMP24 key share ([`CggmpKeyShare::to_bytes`]) handed to a worker; redacted
/// in `Debug`, zeroized when the last copy goes.
#[derive(Clone)]
pub struct ShareBytes(pub Arc<Zeroizing<Vec<u8>>>);

impl fmt::Debug for ShareBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareBytes(<redacted>)")
    }
}

/// Work the runtime runs on a CGGMP24 worker thread for a session of this manager.
#[derive(Clone, Debug)]
pub enum WorkerTask {
    /// The new committee's aux info (from one of the runtime's safe-prime sets).
    Aux {
        /// The new committee, sorted.
        parties: Vec<NodeId>,
    },
    /// A CGGMP24 keygen: the DKG, and the committee's aux info.
    Keygen {
        /// The committee, sorted.
        parties: Vec<NodeId>,
        /// Threshold.
        threshold: u16,
        /// Reuse this aux info (every party offered the same), or `None`: generate it from
        /// the safe-prime set reserved for the session ([`super::Effect::ReservePrimes`]).
        reuse: Option<AuxOffer>,
    },
    /// A full interactive CGGMP24 signing (no presignature).
    Sign {
        /// This node's READY share.
        share: ShareBytes,
        /// The signers, sorted.
        signers: Vec<NodeId>,
        /// What to sign.
        data: SignData,
    },
    /// One presignature with exactly these signers (background work: a pool refill).
    Presign {
        /// This node's READY share.
        share: ShareBytes,
        /// The signers, sorted.
        signers: Vec<NodeId>,
    },
}

/// A finished CGGMP24 keygen: the public key, the transcript hash reported to the chain, the
/// share.
pub struct KeygenOutput {
    /// Compressed secp256k1 public key.
    pub public_key: [u8; 33],
    /// What the chain compares across parties.
    pub transcript_hash: [u8; 32],
    /// [`CggmpKeyShare::to_bytes`].
    pub share: Zeroizing<Vec<u8>>,
}

impl KeygenOutput {
    /// The output of a finished keygen of `session`.
    pub fn new(session: &SessionId, share: &CggmpKeyShare) -> Result<Self, ProtocolError> {
        let public_key = share.public_key();
        Ok(KeygenOutput {
            public_key,
            transcript_hash: keygen_transcript(session, &public_key),
            share: share.to_bytes()?,
        })
    }
}

/// The transcript hash a CGGMP24 keygen reports. cggmp24 enforces reliable broadcast itself
/// (echo round), so agreement on the session and the public key is what the chain checks.
pub(crate) fn keygen_transcript(session: &SessionId, public_key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"seqmpc/cggmp24-secp256k1/keygen-transcript/v1\0");
    h.update(session.0);
    h.update((public_key.len() as u64).to_be_bytes());
    h.update(public_key);
    h.finalize().into()
}

/// A CGGMP24 worker run inline, one message at a time, by the simulator and the manager's
/// tests: a keygen that reuses aux info (the DKG alone: milliseconds), a full signing or a
/// presignature (seconds of CPU). The runtime runs its workers on threads of their own
/// (`crate::node::cggmp`); aux-info generation (a safe-prime set) runs only there.
pub struct InlineWorker {
    session: SessionId,
    engine: Option<InlineEngine>,
}

/// The engine an [`InlineWorker`] drives.
#[allow(clippy::large_enum_variant)] // one per worker
enum InlineEngine {
    Keygen(KeyGen),
    Sign(Signing),
    Presign(Presigning),
}

/// What an [`InlineWorker`] step produced: messages to send, and its output once it ended.
pub type InlineStep = (Vec<(NodeId, Payload)>, Option<WorkerOutput>);

impl InlineWorker {
    /// Starts `task` as `me` ([`WorkerTask::Keygen`] only with reused aux info).
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        task: &WorkerTask,
        rng: &mut R,
    ) -> Result<(InlineWorker, Vec<(NodeId, Payload)>), ProtocolError> {
        let (engine, out) = match task {
            WorkerTask::Keygen {
                parties,
                threshold,
                reuse: Some(offer),
            } => {
                let aux = AuxSource::Existing(AuxShare::from_bytes(&offer.share)?);
                let (e, out) = KeyGen::start(session, me, parties, *threshold, aux, rng)?;
                (InlineEngine::Keygen(e), out)
            }
            WorkerTask::Sign {
                share,
                signers,
                data,
            } => {
                let key = Arc::new(CggmpKeyShare::from_bytes(&share.0)?);
                let (e, out) = Signing::start(session, key, signers, data.clone(), rng)?;
                (InlineEngine::Sign(e), out)
            }
            WorkerTask::Presign { share, signers } => {
                let key = Arc::new(CggmpKeyShare::from_bytes(&share.0)?);
                let (e, out) = Presigning::start(session, key, signers, rng)?;
                (InlineEngine::Presign(e), out)
            }
            WorkerTask::Keygen { reuse: None, .. } | WorkerTask::Aux { .. } => {
                return Err(ProtocolError::Local(
                    "an inline worker generates no aux info".into(),
                ))
            }
        };
        let worker = InlineWorker {
            session,
            engine: Some(engine),
        };
        Ok((worker, payloads(out)))
    }

    /// Hands it one authenticated message (a worker that ended ignores more).
    pub fn handle(&mut self, from: &NodeId, msg: CggmpMsg) -> InlineStep {
        let Some(engine) = self.engine.take() else {
            return (Vec::new(), None);
        };
        match engine {
            InlineEngine::Keygen(e) => {
                let session = self.session;
                self.step(e, from, msg, InlineEngine::Keygen, |r| {
                    WorkerOutput::Keygen(r.and_then(|share| KeygenOutput::new(&session, &share)))
                })
            }
            InlineEngine::Sign(e) => {
                self.step(e, from, msg, InlineEngine::Sign, WorkerOutput::Sign)
            }
            InlineEngine::Presign(e) => self.step(e, from, msg, InlineEngine::Presign, |r| {
                WorkerOutput::Presign(r.map(Box::new))
            }),
        }
    }

    fn step<E: Engine>(
        &mut self,
        engine: E,
        from: &NodeId,
        msg: CggmpMsg,
        wrap: impl FnOnce(E) -> InlineEngine,
        output: impl FnOnce(Result<E::Output, ProtocolError>) -> WorkerOutput,
    ) -> InlineStep {
        match engine.handle(from, msg) {
            Ok(Progress::Continue(engine, out)) => {
                self.engine = Some(wrap(engine));
                (payloads(out), None)
            }
            Ok(Progress::Done(o, out)) => (payloads(out), Some(output(Ok(o)))),
            Err(e) => (Vec::new(), Some(output(Err(e)))),
        }
    }
}

pub(super) fn payloads(out: Vec<crate::protocol::Outgoing<CggmpMsg>>) -> Vec<(NodeId, Payload)> {
    out.into_iter()
        .map(|o| {
            let payload = Payload::Cggmp(wire::CggmpPayload {
                msg: o.msg.to_bytes(),
            });
            (o.to, payload)
        })
        .collect()
}

/// What a worker produced ([`super::Input::WorkerDone`]).
pub enum WorkerOutput {
    /// [`WorkerTask::Aux`]: [`AuxShare::to_bytes`](crate::protocol::cggmp::AuxShare::to_bytes), or why it failed.
    Aux(Result<Zeroizing<Vec<u8>>, ProtocolError>),
    /// [`WorkerTask::Keygen`], or why it failed.
    Keygen(Result<KeygenOutput, ProtocolError>),
    /// [`WorkerTask::Sign`]: the verified signature, or why it failed.
    Sign(Result<EcdsaSignature, ProtocolError>),
    /// [`WorkerTask::Presign`]: this node's part of the presignature, or why it failed.
    Presign(Result<Box<SingleUsePresignature>, ProtocolError>),
}

impl WorkerOutput {
    /// The same failure, for the task's kind (a worker that could not start).
    pub fn failed(task: &WorkerTask, e: ProtocolError) -> WorkerOutput {
        match task {
            WorkerTask::Aux { .. } => WorkerOutput::Aux(Err(e)),
            WorkerTask::Keygen { .. } => WorkerOutput::Keygen(Err(e)),
            WorkerTask::Sign { .. } => WorkerOutput::Sign(Err(e)),
            WorkerTask::Presign { .. } => WorkerOutput::Presign(Err(e)),
        }
    }
}

impl fmt::Debug for WorkerOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerOutput::Aux(Ok(_)) => f.write_str("Aux(Ok(<redacted>))"),
            WorkerOutput::Aux(Err(e)) => write!(f, "Aux(Err({e}))"),
            WorkerOutput::Keygen(Ok(o)) => write!(
                f,
                "Keygen(Ok(public_key: {}, share: <redacted>))",
                hex::encode(o.public_key)
            ),
            WorkerOutput::Keygen(Err(e)) => write!(f, "Keygen(Err({e}))"),
            WorkerOutput::Sign(Ok(sig)) => write!(f, "Sign(Ok({}))", hex::encode(sig.rs)),
            WorkerOutput::Sign(Err(e)) => write!(f, "Sign(Err({e}))"),
            WorkerOutput::Presign(Ok(p)) => write!(f, "Presign(Ok({p:?}))"),
            WorkerOutput::Presign(Err(e)) => write!(f, "Presign(Err({e}))"),
        }
    }
}
