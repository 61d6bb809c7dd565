//! How a resharing ends here: the staged share reported, a failure or timeout reported with
//! its culprits, and the chain's verdict carried out (promote the staged share, leave the
//! committee, or drop what was staged).

use std::sync::Arc;

use seqmpc_proto::tx::{KeyGenOk, Outcome, SignedMessage, TxMsg};
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::{AuxState, Reshare, ReshareState};
use crate::error::ProtocolError;
use crate::job::ReshareJob;
use crate::protocol::cggmp::{AuxShare, CggmpKeyShare, CoreShare};
use crate::protocol::reshare::ReshareOutput;
use crate::session::codec::{decode_share, encode_tagged};
use crate::session::{
    Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken,
};
use crate::store::{KeyRecord, ShareStatus};

impl Manager {
    /// Ends a resharing: remembered as finished; its aux-info worker stops and its safe-prime
    /// reservation (or place in line) goes.
    pub(in crate::session) fn end_reshare(
        &mut self,
        now: Millis,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) -> Option<Box<Reshare>> {
        let Some(Session::Reshare(r)) = self.finish(now, session) else {
            return None;
        };
        let generating = matches!(
            r.state,
            ReshareState::Receiving {
                aux: AuxState::Generating,
                ..
            }
        );
        if generating || r.primes != super::PrimeSet::NotAsked {
            fx.push(Effect::StopWorker(session));
        }
        Some(r)
    }

    /// The new share is staged: report it.
    pub(in crate::session) fn reshare_staged(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        if let Err(e) = reply {
            let e = ProtocolError::Local(format!("key store: {e}"));
            return self.fail_reshare(now, session, e, fx);
        }
        let Some(Session::Reshare(r)) = self.sessions.get_mut(&session) else {
            return;
        };
        let ReshareState::Staging { ok } = std::mem::replace(&mut r.state, ReshareState::Reported)
        else {
            return;
        };
        info!(key_id = %r.job.key_id, %session, generation = r.job.generation,
            "reshared share staged; waiting for the chain");
        let us = now.saturating_sub(r.started).saturating_mul(1000);
        fx.push(Effect::Metric(MetricEvent::ReshareStaged(r.job.scheme, us)));
        fx.push(Effect::Checkpoint("reshare-after-stage"));
        report(fx, &r.job.key_id, session, Ok(ok), Vec::new());
    }

    /// Ends a resharing session here; a new party reports the failure to the chain.
    pub(super) fn fail_reshare(
        &mut self,
        now: Millis,
        session: SessionId,
        e: ProtocolError,
        fx: &mut Vec<Effect>,
    ) {
        let evidence = self.evidence_of(&session, e.culprits());
        let Some(r) = self.end_reshare(now, session, fx) else {
            return;
        };
        warn!(key_id = %r.job.key_id, %session, error = %e, "reshare session failed");
        if r.receiver {
            report(fx, &r.job.key_id, session, Err(e), evidence);
        }
    }

    /// The local timeout of a resharing: a new party names the dealers it has no deal from.
    pub(in crate::session) fn reshare_timeout(
        &mut self,
        now: Millis,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) {
        let Some((scheme, reported)) = self
            .reshare_mut(&session)
            .map(|r| (r.job.scheme, matches!(r.state, ReshareState::Reported)))
        else {
            return;
        };
        if reported {
            // Dealt and reported: nothing more to do here, whatever the chain decides.
            self.end_reshare(now, session, fx);
            return;
        }
        let limit = self.cfg.timeout_ms(scheme);
        let timeout = ProtocolError::Local(format!(
            "timed out after {} s waiting for other parties",
            limit / 1000
        ));
        let missing = match self.reshare_mut(&session).map(|r| &mut r.state) {
            Some(ReshareState::Receiving { collector, .. }) => {
                collector.take().map(|c| match c.finish() {
                    Err(e) => e,
                    Ok(_) => timeout.clone(),
                })
            }
            _ => None,
        };
        self.fail_reshare(now, session, missing.unwrap_or(timeout), fx);
    }

    /// The chain confirmed the resharing: a new party promotes its staged share, an old holder
    /// outside the new committee deletes its share.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::session) fn reshare_done(
        &mut self,
        now: Millis,
        key_id: KeyId,
        session: SessionId,
        old_parties: &[NodeId],
        new_parties: &[NodeId],
        generation: u64,
        fx: &mut Vec<Effect>,
    ) {
        self.end_reshare(now, session, fx);
        let me = &self.cfg.me;
        if new_parties.contains(me) {
            // A signing of the new generation must read the promoted share, not the cached one.
            self.keys.remove(&key_id);
            fx.push(Effect::Checkpoint("reshare-before-promote"));
            fx.push(Effect::Store {
                op: StoreOp::PromoteStaged {
                    key_id: key_id.clone(),
                    generation,
                },
                token: Some(StoreToken::Promoted(key_id, generation)),
            });
        } else if old_parties.contains(me) {
            self.keys.remove(&key_id);
            fx.push(Effect::Store {
                op: StoreOp::LeaveCommittee {
                    key_id: key_id.clone(),
                    generation,
                },
                token: Some(StoreToken::Left(key_id)),
            });
        }
    }

    /// The staged share was promoted (or there was none of that generation).
    pub(in crate::session) fn reshare_promoted(
        &mut self,
        key_id: KeyId,
        generation: u64,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        match reply {
            Ok(StoreReply::Promoted { promoted: true, .. }) => {
                info!(%key_id, generation, "reshared share is READY");
                self.keys.remove(&key_id);
                fx.push(Effect::Checkpoint("reshare-after-promote"));
                fx.push(Effect::Metric(MetricEvent::ReshareOk));
            }
            Ok(StoreReply::Promoted { current, .. }) => {
                if current.is_none_or(|r| r.generation < generation) {
                    warn!(%key_id, generation,
                        "the chain switched the key but no staged share of it is here");
                }
            }
            Ok(other) => warn!(%key_id, reply = ?other, "unexpected store reply"),
            Err(e) => warn!(%key_id, error = %e, "cannot promote the reshared share"),
        }
    }

    /// The chain ended the resharing ERROR: end it here, drop what it staged.
    pub(in crate::session) fn reshare_failed(
        &mut self,
        now: Millis,
        key_id: KeyId,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) {
        self.end_reshare(now, session, fx);
        fx.push(Effect::Store {
            op: StoreOp::DropStaged { key_id, session },
            token: None,
        });
    }
}

/// The staged record of the new share and what the chain is told.
pub(super) fn staged_record(
    session: SessionId,
    job: &ReshareJob,
    out: ReshareOutput,
    aux: Option<Arc<Zeroizing<Vec<u8>>>>,
) -> Result<(KeyRecord, KeyGenOk), ProtocolError> {
    if out.public_key != job.public_key {
        return Err(ProtocolError::Bug(
            "reshare output has another public key than the chain's".into(),
        ));
    }
    let mut fingerprint = None;
    let mut public_key_package = Vec::new();
    let share = match job.scheme {
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => {
            let share = encode_tagged(job.scheme, &out.share)?;
            // Load it back as signing will, before anything is reported.
            let km = decode_share(&share, job.scheme, job.new_parties.clone())?;
            if km.public_key() != job.public_key.as_slice() {
                return Err(ProtocolError::Bug("reshared share does not load".into()));
            }
            public_key_package = km.public_key_package()?;
            share
        }
        Scheme::Cggmp24Secp256k1 => {
            let aux = aux.ok_or_else(|| {
                ProtocolError::Bug("cggmp24 reshare completed without aux info".into())
            })?;
            let aux = AuxShare::from_bytes(&aux)?;
            fingerprint = Some(aux.fingerprint()?);
            let core = CoreShare::from_bytes(&out.share)?;
            let full = CggmpKeyShare::from_parts(core, aux)?;
            encode_tagged(job.scheme, &full.to_bytes()?)?
        }
    };
    let rec = KeyRecord {
        key_id: job.key_id.clone(),
        session,
        scheme: job.scheme,
        threshold: job.new_threshold,
        parties: job.new_parties.clone(),
        public_key: out.public_key.clone(),
        status: ShareStatus::Pending,
        error: None,
        generation: job.generation,
        share: Some(share),
    };
    let ok = KeyGenOk {
        public_key: out.public_key,
        transcript_hash: reported_transcript(out.transcript_hash, fingerprint),
        public_key_package,
    };
    Ok((rec, ok))
}

/// A new party's report to the chain.
pub(super) fn report(
    fx: &mut Vec<Effect>,
    key_id: &KeyId,
    session: SessionId,
    result: Result<KeyGenOk, ProtocolError>,
    evidence: Vec<SignedMessage>,
) {
    let outcome = match result {
        Ok(ok) => Outcome::Ok(ok),
        Err(e) => Outcome::Failed {
            error: e.to_string(),
            culprits: e.culprits().to_vec(),
            evidence,
        },
    };
    fx.push(Effect::Submit(TxMsg::ReshareResult {
        key_id: key_id.clone(),
        session,
        outcome,
    }));
}

/// The transcript hash a new party reports: the resharing's, and for CGGMP24 also the new
/// committee's aux-info fingerprint (equal at every party of one aux run), so the chain's
/// agreement check covers both.
fn reported_transcript(transcript: [u8; 32], aux_fingerprint: Option<[u8; 32]>) -> [u8; 32] {
    let Some(fp) = aux_fingerprint else {
        return transcript;
    };
    let mut h = Sha256::new();
    h.update(b"seqmpc/reshare/transcript+aux/v1\0");
    h.update(transcript);
    h.update(fp);
    h.finalize().into()
}
