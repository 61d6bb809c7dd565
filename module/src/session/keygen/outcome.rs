//! How a keygen ends here: the share stored READY and the result reported, an existing key
//! reported again, or a failure reported (timeout, blame); and the end of its session.

use seqmpc_proto::tx::{KeyGenOk, Outcome, TxMsg};
use seqmpc_proto::SessionId;
use tracing::{info, warn};

use super::{Keygen, KeygenState};
use crate::error::ProtocolError;
use crate::protocol::frost_dkg::AnyDkgOutput;
use crate::session::codec::{decode_share, encode_share, existing_transcript};
use crate::session::{
    Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken,
};
use crate::store::{KeyRecord, SecretShare, ShareStatus};

impl Manager {
    /// Stores the share READY (durably); the result goes to the chain once it is.
    pub(super) fn complete_keygen(
        &mut self,
        now: Millis,
        session: SessionId,
        output: AnyDkgOutput,
        fx: &mut Vec<Effect>,
    ) {
        let encoded =
            encode_share(&output).and_then(|share| Ok((share, output.public_key_package()?)));
        let (share, public_key_package) = match encoded {
            Ok(x) => x,
            Err(e) => return self.fail_keygen(now, session, e, fx),
        };
        let ok = KeyGenOk {
            public_key: output.public_key().to_vec(),
            transcript_hash: output.transcript_hash(),
            public_key_package,
        };
        self.store_ready(session, ok, share, fx);
    }

    /// Writes the READY share; [`Manager::keygen_stored`] reports it once durable.
    pub(super) fn store_ready(
        &mut self,
        session: SessionId,
        ok: KeyGenOk,
        share: SecretShare,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        let rec = KeyRecord {
            public_key: ok.public_key.clone(),
            share: Some(share),
            ..k.record(session, ShareStatus::Ready)
        };
        k.state = KeygenState::Storing { ok };
        fx.push(Effect::Checkpoint("keygen-before-store"));
        // Durable before the chain hears of it: a READY acknowledged on chain survives a crash.
        fx.push(Effect::Store {
            op: StoreOp::Put(rec),
            token: Some(StoreToken::Stored(session)),
        });
    }

    /// The READY share is durable (or the write failed).
    pub(in crate::session) fn keygen_stored(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        if let Err(e) = reply {
            let e = ProtocolError::Local(format!("key store: {e}"));
            return self.fail_keygen(now, session, e, fx);
        }
        let Some(k) = self.end_keygen(now, session, fx) else {
            return;
        };
        let KeygenState::Storing { ok } = k.state else {
            return;
        };
        let us = now.saturating_sub(k.started).saturating_mul(1000);
        fx.push(Effect::Metric(MetricEvent::KeygenOk(k.scheme, us)));
        info!(key_id = %k.key_id, scheme = %k.scheme, public_key = %hex::encode(&ok.public_key), "keygen READY locally");
        fx.push(Effect::Checkpoint("keygen-after-store"));
        fx.push(Effect::Submit(TxMsg::KeyGenResult {
            key_id: k.key_id,
            session,
            outcome: Outcome::Ok(ok),
        }));
    }

    /// The existing READY share was read: report the key again.
    pub(in crate::session) fn keygen_existing(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.end_keygen(now, session, fx) else {
            return;
        };
        let KeygenState::Existing { public_key } = k.state else {
            return;
        };
        let package = match reply {
            Ok(StoreReply::Record(Some(rec))) if rec.status == ShareStatus::Ready => rec
                .share
                .as_ref()
                .ok_or_else(|| ProtocolError::Local("READY record without share".into()))
                .and_then(|s| decode_share(s, rec.scheme, rec.parties.clone()))
                .and_then(|km| km.public_key_package()),
            Ok(_) => Err(ProtocolError::Local(format!(
                "no READY share of {} here any more",
                k.key_id
            ))),
            Err(e) => Err(ProtocolError::Local(format!("key store: {e}"))),
        };
        let outcome = match package {
            Ok(public_key_package) => Outcome::Ok(KeyGenOk {
                transcript_hash: existing_transcript(k.scheme, &public_key),
                public_key,
                public_key_package,
            }),
            Err(e) => Outcome::Failed {
                error: e.to_string(),
                culprits: Vec::new(),
                evidence: Vec::new(),
            },
        };
        fx.push(Effect::Submit(TxMsg::KeyGenResult {
            key_id: k.key_id,
            session,
            outcome,
        }));
    }

    pub(in crate::session) fn keygen_timeout(
        &mut self,
        now: Millis,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) {
        let Some(scheme) = self.keygen_mut(&session).map(|k| k.scheme) else {
            return;
        };
        let e = ProtocolError::Local(format!(
            "timed out after {} s waiting for other parties",
            self.cfg.timeout_ms(scheme) / 1000
        ));
        self.fail_keygen(now, session, e, fx);
    }

    /// Ends a keygen ERROR: its PENDING record too, and reports the failure with evidence.
    pub(super) fn fail_keygen(
        &mut self,
        now: Millis,
        session: SessionId,
        e: ProtocolError,
        fx: &mut Vec<Effect>,
    ) {
        let evidence = self.evidence_of(&session, e.culprits());
        let Some(k) = self.end_keygen(now, session, fx) else {
            return;
        };
        warn!(key_id = %k.key_id, %session, error = %e, "keygen failed");
        fx.push(Effect::Metric(MetricEvent::KeygenFailed));
        // Only this session's PENDING record: a local failure never downgrades a READY share
        // (only the chain's verdict, Job::KeyGenFailed, does).
        fx.push(Effect::Store {
            op: StoreOp::MarkError {
                key_id: k.key_id.clone(),
                session,
                reason: e.to_string(),
                only_pending: true,
            },
            token: None,
        });
        fx.push(Effect::Submit(TxMsg::KeyGenResult {
            key_id: k.key_id,
            session,
            outcome: Outcome::Failed {
                error: e.to_string(),
                culprits: e.culprits().to_vec(),
                evidence,
            },
        }));
    }

    /// Ends a keygen: remembered as finished; a CGGMP24 one's worker stops and its safe-prime
    /// reservation goes.
    pub(super) fn end_keygen(
        &mut self,
        now: Millis,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) -> Option<Box<Keygen>> {
        let Some(Session::Keygen(k)) = self.finish(now, session) else {
            return None;
        };
        if k.cggmp.is_some() {
            fx.push(Effect::StopWorker(session));
        }
        Some(k)
    }
}
