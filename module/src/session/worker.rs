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
    AuxShare, AuxSource, CggmpKeyShare, CggmpMsg, Engine, KeyGen, Progress,
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

/// A CGGMP24 keygen worker that reuses its committee's aux info (the DKG alone: milliseconds),
/// run inline one message at a time, by the simulator and the manager's tests. The runtime
/// runs its workers on threads of their own (`crate::node::cggmp`); aux-info generation (a
/// safe-prime set, seconds of CPU) runs only there.
pub struct InlineKeygen {
    session: SessionId,
    engine: Option<KeyGen>,
}

/// What an [`InlineKeygen`] step produced: messages to send, and its output once it ended.
pub type InlineStep = (Vec<(NodeId, Payload)>, Option<WorkerOutput>);

impl InlineKeygen {
    /// Starts [`WorkerTask::Keygen`] with reused aux info as `me`.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        task: &WorkerTask,
        rng: &mut R,
    ) -> Result<(InlineKeygen, Vec<(NodeId, Payload)>), ProtocolError> {
        let WorkerTask::Keygen {
            parties,
            threshold,
            reuse: Some(offer),
        } = task
        else {
            return Err(ProtocolError::Local(
                "an inline worker runs only a keygen that reuses aux info".into(),
            ));
        };
        let aux = AuxSource::Existing(AuxShare::from_bytes(&offer.share)?);
        let (engine, out) = KeyGen::start(session, me, parties, *threshold, aux, rng)?;
        let worker = InlineKeygen {
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
        match engine.handle(from, msg) {
            Ok(Progress::Continue(engine, out)) => {
                self.engine = Some(engine);
                (payloads(out), None)
            }
            Ok(Progress::Done(share, out)) => {
                let output = KeygenOutput::new(&self.session, &share);
                (payloads(out), Some(WorkerOutput::Keygen(output)))
            }
            Err(e) => (Vec::new(), Some(WorkerOutput::Keygen(Err(e)))),
        }
    }
}

fn payloads(out: Vec<crate::protocol::Outgoing<CggmpMsg>>) -> Vec<(NodeId, Payload)> {
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
}

impl WorkerOutput {
    /// The same failure, for the task's kind (a worker that could not start).
    pub fn failed(task: &WorkerTask, e: ProtocolError) -> WorkerOutput {
        match task {
            WorkerTask::Aux { .. } => WorkerOutput::Aux(Err(e)),
            WorkerTask::Keygen { .. } => WorkerOutput::Keygen(Err(e)),
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
        }
    }
}
