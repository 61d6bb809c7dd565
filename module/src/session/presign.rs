//! CGGMP24 presignature pools, and the sessions that fill them.
//!
//! **Pool.** For every READY CGGMP24 key and every signer subset of it (exactly `threshold`
//! parties), the subset's leader (its first node) keeps generating presignatures in the
//! background, one session at a time, until [`Config::presign_pool`] are ready
//! ([`PresignStart`](wire::PresignStart), then cggmp24's presigning on a worker,
//! [`WorkerTask::Presign`]). Every signer of the subset ends with its own part, kept under the
//! generating session's id and tagged with the key generation (the session that made the
//! share). Presignatures are kept **in memory only**: never written to disk, so a restart
//! empties the pool and nothing can be reused after it; purged when the key is deleted,
//! replaced by a resharing, or failed by the chain.
//!
//! Which keys: the manager follows the READY CGGMP24 shares it writes, promotes and deletes
//! itself ([`Manager::observe`]), and those the runtime finds at start ([`Manager::track_key`]).
//!
//! Signing uses them through a plan (`super::ecdsa`).
//!
//! [`Config::presign_pool`]: super::Config::presign_pool

use std::collections::BTreeSet;

use rand::{CryptoRng, RngCore};
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use tracing::{debug, warn};

mod pool;

pub(super) use pool::Pools;
use pool::{subsets_led_by, PoolEntry};
pub use pool::{PresignId, PresignPoolLevel};

use super::codec::untag_share;
use super::worker::ShareBytes;
use super::{
    Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken, WorkerOutput,
    WorkerTask,
};
use crate::error::ProtocolError;
use crate::protocol::cggmp::CggmpMsg;
use crate::store::{KeyRecord, ShareStatus};

/// Presignature id: the session id that generated it.
/// A presignature generation.
pub(super) struct Presign {
    pub key_id: KeyId,
    pub generation: SessionId,
    pub signers: Vec<NodeId>,
    /// This node asked for it (it leads the subset).
    pub leader: bool,
    pub started: Millis,
    pub state: PresignState,
}

/// Where a presignature generation stands here.
pub(super) enum PresignState {
    /// The key share is being read; messages wait.
    Loading { buffered: Vec<(NodeId, CggmpMsg)> },
    /// The worker runs.
    Running,
}

impl PresignState {
    pub(super) fn buffered(&self) -> usize {
        match self {
            PresignState::Loading { buffered } => buffered.len(),
            PresignState::Running => 0,
        }
    }
}

impl Manager {
    /// Follows a READY CGGMP24 record the runtime found (at start): presignature pools are
    /// filled for it.
    pub fn track_key(&mut self, rec: &KeyRecord) {
        self.pools.track(rec);
    }

    /// The presignature pools' levels, when they changed since the last call.
    pub fn presign_levels_changed(&mut self) -> Option<Vec<PresignPoolLevel>> {
        std::mem::take(&mut self.pools.changed).then(|| self.pools.levels())
    }

    /// Presignature sessions running here.
    fn presigning(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s, Session::Presign(_)))
            .count()
    }

    /// Starts one presignature generation where this node leads a subset below target, if it
    /// leads none now and workers are free (background work keeps half the workers free for
    /// signing).
    pub(super) fn fill_presign_pools<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        let target = self.cfg.presign_pool;
        if target == 0
            || self.workers.len().saturating_mul(2) >= self.cfg.max_cggmp_workers
            || !self.has_room()
            || self
                .sessions
                .values()
                .any(|s| matches!(s, Session::Presign(p) if p.leader))
        {
            return;
        }
        let mut next = None;
        'keys: for (key_id, info) in &self.pools.keys {
            for subset in subsets_led_by(
                &info.parties,
                info.threshold,
                &self.cfg.me,
                self.cfg.presign_max_subsets,
            ) {
                if self.pools.level(key_id, &subset) < target
                    && !self.pools.backing_off(key_id, &subset, now)
                {
                    next = Some((key_id.clone(), info.generation, subset));
                    break 'keys;
                }
            }
        }
        let Some((key_id, generation, signers)) = next else {
            return;
        };
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let session = SessionId(id);
        let start = wire::PresignStart {
            key_id: key_id.to_string(),
            signers: signers.iter().map(|p| p.to_string()).collect(),
            generation: generation.0.to_vec(),
        };
        debug!(%key_id, %session, ?signers, "presignature generation started");
        for p in signers.iter().filter(|p| **p != self.cfg.me) {
            Self::send(fx, session, p, Payload::PresignStart(start.clone()));
        }
        self.start_presign(now, session, key_id, generation, signers, true, fx);
    }

    #[allow(clippy::too_many_arguments)]
    fn start_presign(
        &mut self,
        now: Millis,
        session: SessionId,
        key_id: KeyId,
        generation: SessionId,
        signers: Vec<NodeId>,
        leader: bool,
        fx: &mut Vec<Effect>,
    ) {
        self.sessions.insert(
            session,
            Session::Presign(Box::new(Presign {
                key_id: key_id.clone(),
                generation,
                signers,
                leader,
                started: now,
                state: PresignState::Loading {
                    buffered: Vec::new(),
                },
            })),
        );
        fx.push(Effect::Store {
            op: StoreOp::Get(key_id),
            token: Some(StoreToken::PresignKey(session)),
        });
    }

    /// A subset leader asks this node to generate a presignature with it (a session that
    /// starts from a p2p message, not from a committed job).
    pub(super) fn on_presign_start<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        m: wire::PresignStart,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        match self.accept_presign(&from, m) {
            Ok((key_id, generation, signers)) => {
                self.start_presign(now, session, key_id, generation, signers, false, fx);
                self.replay_early(now, session, rng, fx);
            }
            Err(e) => {
                debug!(%session, %from, error = %e, "presignature refused");
                self.finished.insert(session, now);
                let reason = e.to_string();
                Self::send(
                    fx,
                    session,
                    &from,
                    Payload::Abort(wire::SessionAbort { reason }),
                );
            }
        }
    }

    fn accept_presign(
        &self,
        from: &NodeId,
        m: wire::PresignStart,
    ) -> Result<(KeyId, SessionId, Vec<NodeId>), ProtocolError> {
        let refuse =
            |why: String| Err(ProtocolError::Local(format!("presignature refused: {why}")));
        let key_id = KeyId::new(&m.key_id)
            .map_err(|e| ProtocolError::blame(from, format!("bad key id: {e}")))?;
        let signers = m
            .signers
            .iter()
            .map(NodeId::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProtocolError::blame(from, format!("bad signer: {e}")))?;
        let generation = SessionId::from_slice(&m.generation)
            .map_err(|_| ProtocolError::blame(from, "bad generation".to_string()))?;
        if self.cfg.presign_pool == 0 {
            return refuse("presignature pools are disabled here".into());
        }
        if signers.first() != Some(from) || !signers.windows(2).all(|w| w.first() < w.get(1)) {
            return refuse(format!("{from} does not lead signers {signers:?}"));
        }
        if !signers.contains(&self.cfg.me) {
            return refuse("this node is not a signer".into());
        }
        let Some(info) = self.pools.keys.get(&key_id) else {
            return refuse(format!("no READY cggmp24 share of {key_id} here"));
        };
        if info.generation != generation
            || signers.len() != info.threshold
            || !signers.iter().all(|s| info.parties.contains(s))
        {
            return refuse(format!("signers or generation do not match key {key_id}"));
        }
        if !self.has_room() {
            return refuse("node overloaded: too many sessions".into());
        }
        // Background work never takes more than half the workers (signing needs the rest).
        let presigning = self.presigning();
        if presigning.saturating_mul(2) >= self.cfg.max_cggmp_workers {
            return refuse(format!(
                "{presigning} presignatures already being generated"
            ));
        }
        Ok((key_id, generation, signers))
    }

    /// The store answered with the share of a presignature session: start its worker.
    pub(super) fn presign_key_loaded(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(Session::Presign(p)) = self.sessions.get_mut(&session) else {
            return;
        };
        let share = cggmp_share(&p.key_id, reply).and_then(|(share, rec_session, _)| {
            if rec_session == p.generation {
                Ok(share)
            } else {
                Err(ProtocolError::Local(format!(
                    "key {}: presignature for generation {}, local share is {rec_session}",
                    p.key_id, p.generation
                )))
            }
        });
        let share = match share {
            Ok(share) => share,
            Err(e) => return self.presign_failed(now, session, e.to_string(), fx),
        };
        let PresignState::Loading { buffered } =
            std::mem::replace(&mut p.state, PresignState::Running)
        else {
            return;
        };
        let task = WorkerTask::Presign {
            share,
            signers: p.signers.clone(),
        };
        fx.push(Effect::StartWorker { session, task });
        for (from, msg) in buffered {
            fx.push(Effect::ToWorker { session, from, msg });
        }
    }

    /// A message of a presignature session.
    pub(super) fn presign_msg(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        payload: Payload,
        fx: &mut Vec<Effect>,
    ) {
        let Some(Session::Presign(p)) = self.sessions.get_mut(&session) else {
            return;
        };
        match payload {
            Payload::Cggmp(c) => match CggmpMsg::from_bytes(&c.msg) {
                Ok(msg) => match &mut p.state {
                    PresignState::Loading { buffered } => {
                        super::buffer_capped_at(
                            buffered,
                            from,
                            msg,
                            super::MAX_BUFFERED_CGGMP_PER_SENDER,
                        );
                    }
                    PresignState::Running => fx.push(Effect::ToWorker { session, from, msg }),
                },
                Err(e) => {
                    warn!(%session, %from, error = %e, "malformed CGGMP24 message dropped");
                    fx.push(Effect::Metric(MetricEvent::Dropped));
                }
            },
            Payload::Abort(a) => {
                let reason = format!("aborted by {from}: {}", a.reason);
                self.presign_aborted(now, session, reason, fx);
            }
            _ => {
                warn!(%session, %from, "message of another kind in a presignature dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
            }
        }
    }

    /// A presignature worker finished.
    pub(super) fn presign_worker_done(
        &mut self,
        now: Millis,
        session: SessionId,
        output: WorkerOutput,
        fx: &mut Vec<Effect>,
    ) {
        let res = match output {
            WorkerOutput::Presign(res) => res,
            other => Err(ProtocolError::Bug(format!(
                "a presignature worker ended with {other:?}"
            ))),
        };
        let presig = match res {
            Ok(presig) => presig,
            Err(e) => return self.presign_failed(now, session, e.to_string(), fx),
        };
        let Some(Session::Presign(p)) = self.end_cggmp(now, session, fx) else {
            return;
        };
        if self.pools.generation(&p.key_id) != Some(p.generation) || presig.signers() != p.signers {
            debug!(key_id = %p.key_id, %session, "presignature for a gone key dropped");
            return;
        }
        let cap = self.cfg.presign_pool.saturating_mul(2);
        let entry = PoolEntry {
            id: session.0,
            generation: p.generation,
            presig: *presig,
        };
        self.pools.insert(&p.key_id, entry, cap);
        fx.push(Effect::Metric(MetricEvent::PresignGenerated));
        debug!(key_id = %p.key_id, %session, level = self.pools.level(&p.key_id, &p.signers), "presignature ready");
        self.resume_waiting_plans(now, &session.0, fx);
    }

    /// A presignature failed here: the others are told, the leader backs off, and a sign plan
    /// waiting for it falls back to the full protocol.
    pub(super) fn presign_failed(
        &mut self,
        now: Millis,
        session: SessionId,
        reason: String,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        if let Some(Session::Presign(p)) = self.sessions.get(&session) {
            warn!(key_id = %p.key_id, %session, error = %reason, "presignature failed");
            for q in p.signers.iter().filter(|q| **q != me) {
                let abort = wire::SessionAbort {
                    reason: reason.clone(),
                };
                Self::send(fx, session, q, Payload::Abort(abort));
            }
        }
        self.presign_aborted(now, session, reason, fx);
    }

    /// Ends a presignature session without a presignature (a signer refused or failed, or it
    /// timed out).
    pub(super) fn presign_aborted(
        &mut self,
        now: Millis,
        session: SessionId,
        reason: String,
        fx: &mut Vec<Effect>,
    ) {
        let Some(Session::Presign(p)) = self.end_cggmp(now, session, fx) else {
            return;
        };
        debug!(key_id = %p.key_id, %session, %reason, "presignature ended without one");
        if p.leader {
            self.pools.back_off(&p.key_id, &p.signers, now);
        }
        for s in self.plans_waiting_for(&session.0) {
            self.plan_fallback(s, fx);
        }
    }

    /// Ends a CGGMP24 session (signing or presignature): remembered as finished, its worker
    /// stopped.
    pub(super) fn end_cggmp(
        &mut self,
        now: Millis,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) -> Option<Session> {
        self.evidence.remove(&session);
        fx.push(Effect::StopWorker(session));
        self.finish(now, session)
    }

    /// What the manager's own effects and store answers say about its READY CGGMP24 keys and
    /// its workers: a share written READY is followed, a deleted, failed or left one forgotten
    /// (its presignatures purged); a worker started or stopped is counted.
    pub(super) fn observe(&mut self, fx: &[Effect]) {
        for e in fx {
            match e {
                Effect::Store { op, .. } => match op {
                    StoreOp::Put(rec) => self.pools.track(rec),
                    StoreOp::Delete(key_id) | StoreOp::LeaveCommittee { key_id, .. } => {
                        self.pools.untrack(key_id)
                    }
                    StoreOp::MarkError {
                        key_id,
                        session,
                        only_pending: false,
                        ..
                    } if self.pools.generation(key_id) == Some(*session) => {
                        self.pools.untrack(key_id)
                    }
                    _ => {}
                },
                Effect::StartWorker { session, .. } => {
                    self.workers.insert(*session);
                }
                Effect::StopWorker(session) => {
                    self.workers.remove(session);
                }
                _ => {}
            }
        }
    }

    /// A resharing's promotion answered: the new generation replaces the old one's pools.
    pub(super) fn observe_promoted(&mut self, reply: &Result<StoreReply, String>) {
        if let Ok(StoreReply::Promoted {
            promoted: true,
            current: Some(rec),
        }) = reply
        {
            self.pools.untrack(&rec.key_id);
            self.pools.track(rec);
        }
    }

    /// Sessions running CGGMP24 workers here.
    pub fn workers(&self) -> &BTreeSet<SessionId> {
        &self.workers
    }
}

/// The READY CGGMP24 share in a store answer: the share, the session that made it and its
/// generation number.
pub(super) fn cggmp_share(
    key_id: &KeyId,
    reply: Result<StoreReply, String>,
) -> Result<(ShareBytes, SessionId, u64), ProtocolError> {
    let rec = match reply {
        Ok(StoreReply::Record(Some(rec))) => rec,
        Ok(_) => {
            return Err(ProtocolError::Unable(format!(
                "no local share for key {key_id}"
            )))
        }
        Err(e) => return Err(ProtocolError::Unable(format!("key store: {e}"))),
    };
    if rec.status != ShareStatus::Ready || rec.scheme != Scheme::Cggmp24Secp256k1 {
        return Err(ProtocolError::Unable(format!(
            "local share of {key_id} is a {:?} {} share, not a READY cggmp24-secp256k1 one",
            rec.status, rec.scheme
        )));
    }
    let stored = rec
        .share
        .as_ref()
        .ok_or_else(|| ProtocolError::Unable("READY record without share".into()))?;
    let bytes = zeroize::Zeroizing::new(untag_share(stored, rec.scheme)?.to_vec());
    Ok((
        ShareBytes(std::sync::Arc::new(bytes)),
        rec.session,
        rec.generation,
    ))
}
