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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{CryptoRng, RngCore};
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use tracing::{debug, info, warn};

use super::codec::untag_share;
use super::worker::ShareBytes;
use super::{
    Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken, WorkerOutput,
    WorkerTask,
};
use crate::error::ProtocolError;
use crate::protocol::cggmp::{CggmpMsg, SingleUsePresignature};
use crate::store::{KeyRecord, ShareStatus};

/// Presignature id: the session id that generated it.
pub type PresignId = [u8; 32];

/// A key's signer subset.
type Subset = (KeyId, Vec<NodeId>);

struct PoolEntry {
    id: PresignId,
    generation: SessionId,
    presig: SingleUsePresignature,
}

/// Wait before generating again for a subset whose last presignature failed (a signer down,
/// refusing, or without a pool).
const RETRY_AFTER_MS: Millis = 30_000;

/// This node's parts of presignatures, per key and signer subset, oldest first, and the READY
/// CGGMP24 keys they are made for.
#[derive(Default)]
pub(super) struct Pools {
    ready: BTreeMap<Subset, VecDeque<PoolEntry>>,
    /// Subsets whose last generation failed, and when to try again.
    retry_after: BTreeMap<Subset, Millis>,
    /// READY CGGMP24 keys held here.
    keys: BTreeMap<KeyId, KeyInfo>,
    /// The levels changed since [`Manager::presign_levels_changed`] last said so.
    changed: bool,
}

/// A READY CGGMP24 key this node holds a share of.
#[derive(Clone, Debug)]
struct KeyInfo {
    generation: SessionId,
    parties: Vec<NodeId>,
    threshold: usize,
}

/// One pool's level, for the status endpoint.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PresignPoolLevel {
    /// Key.
    pub key_id: KeyId,
    /// Signer subset.
    pub signers: Vec<NodeId>,
    /// Presignatures ready at this node.
    pub ready: usize,
}

impl Pools {
    pub(super) fn level(&self, key_id: &KeyId, signers: &[NodeId]) -> usize {
        self.ready
            .get(&(key_id.clone(), signers.to_vec()))
            .map_or(0, VecDeque::len)
    }

    /// Adds a presignature; keeps at most `cap` per subset (oldest dropped first).
    fn insert(&mut self, key_id: &KeyId, entry: PoolEntry, cap: usize) {
        let q = self
            .ready
            .entry((key_id.clone(), entry.presig.signers().to_vec()))
            .or_default();
        q.push_back(entry);
        while q.len() > cap.max(1) {
            q.pop_front();
        }
        self.changed = true;
    }

    /// Takes the oldest presignature of the subset for `generation` out of the pool.
    pub(super) fn take_oldest(
        &mut self,
        key_id: &KeyId,
        signers: &[NodeId],
        generation: &SessionId,
    ) -> Option<(PresignId, SingleUsePresignature)> {
        let q = self.ready.get_mut(&(key_id.clone(), signers.to_vec()))?;
        self.changed = true;
        // Entries of an older generation are useless: drop them on the way.
        while let Some(e) = q.pop_front() {
            if e.generation == *generation {
                return Some((e.id, e.presig));
            }
        }
        None
    }

    /// Takes presignature `id` of the subset out of the pool.
    pub(super) fn take(
        &mut self,
        key_id: &KeyId,
        signers: &[NodeId],
        id: &PresignId,
        generation: &SessionId,
    ) -> Option<SingleUsePresignature> {
        let q = self.ready.get_mut(&(key_id.clone(), signers.to_vec()))?;
        let pos = q.iter().position(|e| e.id == *id)?;
        let e = q.remove(pos)?;
        self.changed = true;
        (e.generation == *generation).then_some(e.presig)
    }

    pub(super) fn purge_subset(&mut self, key_id: &KeyId, signers: &[NodeId]) -> usize {
        self.changed = true;
        self.ready
            .remove(&(key_id.clone(), signers.to_vec()))
            .map_or(0, |q| q.len())
    }

    fn purge_key(&mut self, key_id: &KeyId) -> usize {
        let subsets: Vec<Subset> = self
            .ready
            .keys()
            .filter(|(k, _)| k == key_id)
            .cloned()
            .collect();
        self.changed = true;
        subsets
            .iter()
            .filter_map(|s| self.ready.remove(s))
            .map(|q| q.len())
            .sum()
    }

    fn backing_off(&self, key_id: &KeyId, signers: &[NodeId], now: Millis) -> bool {
        self.retry_after
            .get(&(key_id.clone(), signers.to_vec()))
            .is_some_and(|t| *t > now)
    }

    fn back_off(&mut self, key_id: &KeyId, signers: &[NodeId], now: Millis) {
        self.retry_after.retain(|_, t| *t > now);
        self.retry_after.insert(
            (key_id.clone(), signers.to_vec()),
            now.saturating_add(RETRY_AFTER_MS),
        );
    }

    /// Follows a record: a READY CGGMP24 share is a key to fill pools for.
    pub(super) fn track(&mut self, rec: &KeyRecord) {
        if rec.scheme != Scheme::Cggmp24Secp256k1 || rec.status != ShareStatus::Ready {
            return;
        }
        let info = KeyInfo {
            generation: rec.session,
            parties: rec.parties.clone(),
            threshold: usize::try_from(rec.threshold).unwrap_or(usize::MAX),
        };
        // Another generation: the old one's presignatures are useless.
        if self
            .keys
            .get(&rec.key_id)
            .is_some_and(|k| k.generation != info.generation)
        {
            self.purge_key(&rec.key_id);
        }
        self.keys.insert(rec.key_id.clone(), info);
    }

    /// Forgets a key: no more presignatures, the pooled ones dropped (zeroized).
    pub(super) fn untrack(&mut self, key_id: &KeyId) {
        self.keys.remove(key_id);
        let n = self.purge_key(key_id);
        if n > 0 {
            info!(%key_id, purged = n, "presignatures purged");
        }
    }

    /// The generation of `key_id` this node holds READY, if it follows it.
    pub(super) fn generation(&self, key_id: &KeyId) -> Option<SessionId> {
        self.keys.get(key_id).map(|k| k.generation)
    }

    fn levels(&self) -> Vec<PresignPoolLevel> {
        self.ready
            .iter()
            .map(|((key_id, signers), q)| PresignPoolLevel {
                key_id: key_id.clone(),
                signers: signers.clone(),
                ready: q.len(),
            })
            .collect()
    }
}

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

/// Signer subsets of `parties` (sorted) of `threshold` nodes whose first node is `me`, in
/// lexicographic order; none if the key has more than `max` subsets in all.
pub(super) fn subsets_led_by(
    parties: &[NodeId],
    threshold: usize,
    me: &NodeId,
    max: usize,
) -> Vec<Vec<NodeId>> {
    let n = parties.len();
    if threshold == 0 || threshold > n || binomial(n, threshold) > max {
        return Vec::new();
    }
    let Some(i) = parties.iter().position(|p| p == me) else {
        return Vec::new();
    };
    let rest = parties.get(i.saturating_add(1)..).unwrap_or_default();
    let mut out = Vec::new();
    let mut pick = Vec::with_capacity(threshold);
    pick.push(me.clone());
    combinations(rest, threshold.saturating_sub(1), 0, &mut pick, &mut out);
    out
}

fn combinations(
    from: &[NodeId],
    k: usize,
    start: usize,
    pick: &mut Vec<NodeId>,
    out: &mut Vec<Vec<NodeId>>,
) {
    if k == 0 {
        out.push(pick.clone());
        return;
    }
    for (j, node) in from.iter().enumerate().skip(start) {
        if from.len().saturating_sub(j) < k {
            break;
        }
        pick.push(node.clone());
        combinations(from, k.saturating_sub(1), j.saturating_add(1), pick, out);
        pick.pop();
    }
}

fn binomial(n: usize, k: usize) -> usize {
    let k = k.min(n.saturating_sub(k));
    let mut r: usize = 1;
    for i in 0..k {
        r = r
            .saturating_mul(n.saturating_sub(i))
            .checked_div(i.saturating_add(1))
            .unwrap_or(r);
    }
    r
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
            self.plan_fallback(now, s, fx);
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

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::new(*n).unwrap()).collect()
    }

    #[test]
    fn subsets_led_by__should_cover_every_subset_exactly_once() {
        let parties = ids(&["a", "b", "c", "d"]);
        let mut all = Vec::new();
        for me in &parties {
            for s in subsets_led_by(&parties, 3, me, 64) {
                assert_eq!(s.first(), Some(me));
                assert_eq!(s.len(), 3);
                assert!(s.windows(2).all(|w| w[0] < w[1]));
                all.push(s);
            }
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4);
        assert_eq!(subsets_led_by(&parties, 3, &parties[0], 64).len(), 3);
        assert_eq!(subsets_led_by(&parties, 3, &parties[1], 64).len(), 1);
        assert!(subsets_led_by(&parties, 3, &parties[2], 64).is_empty());
    }

    #[test]
    fn subsets_led_by__should_give_none_beyond_the_cap_or_outside() {
        let parties = ids(&["a", "b", "c", "d", "e", "f"]);
        assert!(subsets_led_by(&parties, 3, &parties[0], 19).is_empty()); // C(6,3) = 20
        assert_eq!(subsets_led_by(&parties, 3, &parties[0], 20).len(), 10);
        assert!(subsets_led_by(&parties, 3, &NodeId::new("z").unwrap(), 64).is_empty());
        assert!(subsets_led_by(&parties, 7, &parties[0], 64).is_empty());
        assert_eq!(binomial(4, 3), 4);
        assert_eq!(binomial(10, 7), 120);
    }
}
