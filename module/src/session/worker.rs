//! What the session manager asks of the runtime's CGGMP24 workers (seconds of CPU, a
//! safe-prime set: work a sans-IO state machine hands out), and the aux info a node offers to
//! reuse for a committee.

use std::fmt;
use std::sync::Arc;

use seqmpc_proto::{NodeId, Scheme};
use zeroize::Zeroizing;

use super::codec::untag_share;
use crate::error::ProtocolError;
use crate::protocol::cggmp::CggmpKeyShare;
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerTask {
    /// The new committee's aux info (from one of the runtime's safe-prime sets).
    Aux {
        /// The new committee, sorted.
        parties: Vec<NodeId>,
    },
}

/// What a worker produced ([`super::Input::WorkerDone`]).
pub enum WorkerOutput {
    /// [`WorkerTask::Aux`]: [`AuxShare::to_bytes`](crate::protocol::cggmp::AuxShare::to_bytes), or why it failed.
    Aux(Result<Zeroizing<Vec<u8>>, ProtocolError>),
}

impl fmt::Debug for WorkerOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerOutput::Aux(Ok(_)) => f.write_str("Aux(Ok(<redacted>))"),
            WorkerOutput::Aux(Err(e)) => write!(f, "Aux(Err({e}))"),
        }
    }
}
