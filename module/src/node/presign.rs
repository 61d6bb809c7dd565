//! CGGMP24 presignature pools and the signing plan that uses them.
//!
//! **Pool.** For every READY cggmp24 key and every signer subset of it (exactly `threshold`
//! parties), the subset's leader (its first node) keeps generating presignatures in the
//! background, one session at a time, until [`NodeConfig::presign_pool`] are ready
//! ([`PresignStart`](wire::PresignStart), then cggmp24's presigning on a worker thread). Every
//! signer of the subset ends with its own part, stored under the generating session's id and
//! tagged with the key generation (the keygen session id). Presignatures are kept **in memory
//! only**: they are never written to disk, so a restart empties the pool and nothing can be
//! reused after it; purged on delete and when the chain fails the key.
//!
//! **Plan.** A cggmp24 sign request of a full message (not `--prehashed`: presignatures never
//! sign a raw digest) starts with the aggregator (first signer) taking a presignature of the
//! request's subset out of its pool and telling the others which one ([`SignPlan`](wire::SignPlan));
//! every signer takes the same one out of its pool before issuing its partial signature
//! ([`OnlineSigning`]), so each is used once. An empty plan, or a signer that lacks the named
//! presignature (it restarted), makes every signer run the full protocol in the same session;
//! a miss also purges that subset's pool everywhere, since the pools no longer match.

use std::collections::VecDeque;

use crate::protocol::cggmp::{Engine, OnlineSigning, Phase, SingleUsePresignature};

use super::*;

/// Presignature id: the session id that generated it.
pub(super) type PresignId = [u8; 32];

/// A key's signer subset.
type Subset = (KeyId, Vec<NodeId>);

struct PoolEntry {
    id: PresignId,
    generation: SessionId,
    presig: SingleUsePresignature,
}

/// This node's parts of presignatures, per key and signer subset, oldest first.
#[derive(Default)]
pub(super) struct PresignPool {
    ready: BTreeMap<Subset, VecDeque<PoolEntry>>,
    /// Subsets whose last generation failed, and when to try again.
    retry_after: BTreeMap<Subset, Instant>,
}

/// Wait before generating again for a subset whose last presignature failed (a signer down,
/// refusing, or without a pool).
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl PresignPool {
    pub(super) fn level(&self, key_id: &KeyId, signers: &[NodeId]) -> usize {
        self.ready
            .get(&(key_id.clone(), signers.to_vec()))
            .map_or(0, VecDeque::len)
    }

    /// Adds a presignature; keeps at most `cap` per subset (oldest dropped first).
    fn insert(
        &mut self,
        key_id: &KeyId,
        id: PresignId,
        generation: SessionId,
        presig: SingleUsePresignature,
        cap: usize,
    ) {
        let q = self
            .ready
            .entry((key_id.clone(), presig.signers().to_vec()))
            .or_default();
        q.push_back(PoolEntry {
            id,
            generation,
            presig,
        });
        while q.len() > cap.max(1) {
            q.pop_front();
        }
    }

    /// Takes the oldest presignature of the subset for `generation` out of the pool.
    fn take_oldest(
        &mut self,
        key_id: &KeyId,
        signers: &[NodeId],
        generation: &SessionId,
    ) -> Option<(PresignId, SingleUsePresignature)> {
        let q = self.ready.get_mut(&(key_id.clone(), signers.to_vec()))?;
        // Entries of an older generation are useless: drop them on the way.
        while let Some(e) = q.pop_front() {
            if e.generation == *generation {
                return Some((e.id, e.presig));
            }
        }
        None
    }

    /// Takes presignature `id` of the subset out of the pool.
    fn take(
        &mut self,
        key_id: &KeyId,
        signers: &[NodeId],
        id: &PresignId,
        generation: &SessionId,
    ) -> Option<SingleUsePresignature> {
        let q = self.ready.get_mut(&(key_id.clone(), signers.to_vec()))?;
        let pos = q.iter().position(|e| e.id == *id)?;
        let e = q.remove(pos)?;
        (e.generation == *generation).then_some(e.presig)
    }

    fn purge_subset(&mut self, key_id: &KeyId, signers: &[NodeId]) -> usize {
        self.ready
            .remove(&(key_id.clone(), signers.to_vec()))
            .map_or(0, |q| q.len())
    }

    pub(super) fn purge_key(&mut self, key_id: &KeyId) -> usize {
        let subsets: Vec<Subset> = self
            .ready
            .keys()
            .filter(|(k, _)| k == key_id)
            .cloned()
            .collect();
        subsets
            .iter()
            .filter_map(|s| self.ready.remove(s))
            .map(|q| q.len())
            .sum()
    }

    fn backing_off(&self, key_id: &KeyId, signers: &[NodeId], now: Instant) -> bool {
        self.retry_after
            .get(&(key_id.clone(), signers.to_vec()))
            .is_some_and(|t| *t > now)
    }

    fn back_off(&mut self, key_id: &KeyId, signers: &[NodeId], now: Instant) {
        self.retry_after.retain(|_, t| *t > now);
        self.retry_after
            .insert((key_id.clone(), signers.to_vec()), now + RETRY_AFTER);
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

/// A READY cggmp24 key this node holds a share of (what the pool filler iterates).
#[derive(Clone, Debug)]
pub(super) struct CggmpKeyInfo {
    pub(super) generation: SessionId,
    pub(super) parties: Vec<NodeId>,
    pub(super) threshold: usize,
}

/// A presignature generation on a worker thread.
pub(super) struct PresignSession {
    pub(super) key_id: KeyId,
    pub(super) generation: SessionId,
    pub(super) signers: Vec<NodeId>,
    pub(super) leader: bool,
    pub(super) worker: cggmp::Worker,
    pub(super) started: Instant,
}

/// What a cggmp24 sign session needs to fall back to the full protocol (its key and
/// generation are the session's `cggmp_key`).
pub(super) struct CggmpSignInput {
    /// [`CggmpKeyShare::to_bytes`](crate::protocol::cggmp::CggmpKeyShare::to_bytes).
    pub(super) share: zeroize::Zeroizing<Vec<u8>>,
    pub(super) message: Vec<u8>,
}

/// Most messages a plan-waiting sign session buffers.
const PLAN_BUFFER: usize = 4096;

/// A cggmp24 sign session that follows a plan.
#[allow(clippy::large_enum_variant)] // one per session, moved once per step
pub(super) enum PlanState {
    /// Waiting for the aggregator's plan (or for presignature `waiting_for`, still being
    /// finished locally). Messages are buffered.
    AwaitPlan {
        input: CggmpSignInput,
        waiting_for: Option<PresignId>,
        buffered: Vec<(NodeId, CggmpMsg)>,
    },
    /// The online step from a presignature; full-protocol messages are buffered in case a
    /// signer falls back.
    Online {
        input: CggmpSignInput,
        engine: OnlineSigning,
        buffered: Vec<(NodeId, CggmpMsg)>,
    },
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
    let rest = &parties[i + 1..];
    let mut out = Vec::new();
    let mut pick = Vec::with_capacity(threshold);
    pick.push(me.clone());
    combinations(rest, threshold - 1, 0, &mut pick, &mut out);
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
    for j in start..from.len() {
        if from.len() - j < k {
            break;
        }
        pick.push(from[j].clone());
        combinations(from, k - 1, j + 1, pick, out);
        pick.pop();
    }
}

fn binomial(n: usize, k: usize) -> usize {
    let k = k.min(n - k);
    let mut r: usize = 1;
    for i in 0..k {
        r = r.saturating_mul(n - i) / (i + 1);
    }
    r
}

impl<S: SubmitResult> Node<S> {
    /// Records a READY cggmp24 key for the pool filler.
    pub(super) fn track_cggmp_key(&mut self, rec: &KeyRecord) {
        if rec.scheme != Scheme::Cggmp24Secp256k1 || rec.status != ShareStatus::Ready {
            return;
        }
        self.cggmp_keys.insert(
            rec.key_id.clone(),
            CggmpKeyInfo {
                generation: rec.session,
                parties: rec.parties.clone(),
                threshold: rec.threshold as usize,
            },
        );
    }

    /// Forgets a key: no more presignatures, the pooled ones dropped (zeroized).
    pub(super) fn untrack_cggmp_key(&mut self, key_id: &KeyId) {
        self.cggmp_keys.remove(key_id);
        let n = self.presigs.purge_key(key_id);
        if n > 0 {
            info!(%key_id, purged = n, "presignatures purged");
        }
        self.pool_changed = true;
    }

    /// Starts one presignature generation where this node leads a subset below target, if it
    /// leads none now and workers are free (background work keeps half the workers free for
    /// signing).
    pub(super) async fn fill_presign_pools(&mut self) {
        let target = self.cfg.presign_pool;
        if target == 0
            || self.cggmp_workers() * 2 >= self.cfg.max_cggmp_workers
            || self
                .sessions
                .values()
                .any(|s| matches!(s, Session::Presign(p) if p.leader))
        {
            return;
        }
        let now = Instant::now();
        let mut next = None;
        'keys: for (key_id, info) in &self.cggmp_keys {
            for subset in subsets_led_by(
                &info.parties,
                info.threshold,
                &self.cfg.me,
                self.cfg.presign_max_subsets,
            ) {
                if self.presigs.level(key_id, &subset) < target
                    && !self.presigs.backing_off(key_id, &subset, now)
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
        rand::RngCore::fill_bytes(&mut OsRng, &mut id);
        let session = SessionId(id);
        let start = wire::PresignStart {
            key_id: key_id.to_string(),
            signers: signers.iter().map(|p| p.to_string()).collect(),
            generation: generation.0.to_vec(),
        };
        if let Err(e) = self
            .start_presign(session, &key_id, generation, &signers, true)
            .await
        {
            warn!(%key_id, error = %e, "cannot start a presignature");
            self.presigs.back_off(&key_id, &signers, now);
            return;
        }
        debug!(%key_id, %session, ?signers, "presignature generation started");
        for p in signers.iter().filter(|p| **p != self.cfg.me) {
            self.send(&session, p, Payload::PresignStart(start.clone()))
                .await;
        }
    }

    async fn start_presign(
        &mut self,
        session: SessionId,
        key_id: &KeyId,
        generation: SessionId,
        signers: &[NodeId],
        leader: bool,
    ) -> Result<(), ProtocolError> {
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(ProtocolError::Local(
                "node overloaded: too many sessions".into(),
            ));
        }
        let (share, stored_generation, _) = self.cggmp_share(key_id).await?;
        if stored_generation != generation {
            return Err(ProtocolError::Local(format!(
                "key {key_id}: presignature for generation {generation}, local share is {stored_generation}"
            )));
        }
        let task = cggmp::Task::Presign {
            share,
            signers: signers.to_vec(),
        };
        let worker = cggmp::spawn(session, task, self.worker_env()?)?;
        self.sessions.insert(
            session,
            Session::Presign(Box::new(PresignSession {
                key_id: key_id.clone(),
                generation,
                signers: signers.to_vec(),
                leader,
                worker,
                started: Instant::now(),
            })),
        );
        Ok(())
    }

    /// A subset leader asks this node to generate a presignature with it.
    pub(super) async fn on_presign_start(
        &mut self,
        session: SessionId,
        from: NodeId,
        m: wire::PresignStart,
    ) {
        match self.accept_presign(session, &from, m).await {
            Ok(()) => self.replay_early(session).await,
            Err(e) => {
                debug!(%session, %from, error = %e, "presignature refused");
                self.finished.insert(session, Instant::now());
                let abort = Payload::Abort(wire::SessionAbort {
                    reason: e.to_string(),
                });
                self.send(&session, &from, abort).await;
            }
        }
    }

    async fn accept_presign(
        &mut self,
        session: SessionId,
        from: &NodeId,
        m: wire::PresignStart,
    ) -> Result<(), ProtocolError> {
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
        if signers.first() != Some(from) || !signers.windows(2).all(|w| w[0] < w[1]) {
            return refuse(format!("{from} does not lead signers {signers:?}"));
        }
        if !signers.contains(&self.cfg.me) {
            return refuse("this node is not a signer".into());
        }
        let Some(info) = self.cggmp_keys.get(&key_id) else {
            return refuse(format!("no READY cggmp24 share of {key_id} here"));
        };
        if info.generation != generation
            || signers.len() != info.threshold
            || !signers.iter().all(|s| info.parties.contains(s))
        {
            return refuse(format!("signers or generation do not match key {key_id}"));
        }
        if self.sessions.contains_key(&session) {
            return refuse("session id in use".into());
        }
        // Background work never takes more than half the workers (signing needs the rest).
        let presigning = self
            .sessions
            .values()
            .filter(|s| matches!(s, Session::Presign(_)))
            .count();
        if presigning * 2 >= self.cfg.max_cggmp_workers {
            return refuse(format!(
                "{presigning} presignatures already being generated"
            ));
        }
        self.start_presign(session, &key_id, generation, &signers, false)
            .await
    }

    /// A presignature session's worker finished.
    pub(super) async fn on_presign_finished(
        &mut self,
        session: SessionId,
        res: Result<Box<SingleUsePresignature>, ProtocolError>,
    ) {
        let Some(Session::Presign(p)) = self.finish_session(session) else {
            return;
        };
        match res {
            Ok(presig) => {
                let current = self.cggmp_keys.get(&p.key_id).map(|i| i.generation);
                if current != Some(p.generation) || presig.signers() != p.signers {
                    debug!(key_id = %p.key_id, %session, "presignature for a gone key dropped");
                    return;
                }
                let cap = self.cfg.presign_pool.saturating_mul(2);
                self.presigs
                    .insert(&p.key_id, session.0, p.generation, *presig, cap);
                self.pool_changed = true;
                self.metrics(|m| {
                    m.cggmp_presignatures_generated =
                        m.cggmp_presignatures_generated.saturating_add(1)
                });
                debug!(key_id = %p.key_id, %session, level = self.presigs.level(&p.key_id, &p.signers), "presignature ready");
                self.resume_waiting_plans(&session.0).await;
            }
            Err(e) => {
                warn!(key_id = %p.key_id, %session, error = %e, "presignature failed");
                if p.leader {
                    self.presigs.back_off(&p.key_id, &p.signers, Instant::now());
                }
                for q in p.signers.iter().filter(|q| **q != self.cfg.me) {
                    let abort = Payload::Abort(wire::SessionAbort {
                        reason: e.to_string(),
                    });
                    self.send(&session, q, abort).await;
                }
                // A sign plan waiting for it falls back.
                let waiting: Vec<SessionId> = self.plans_waiting_for(&session.0);
                for s in waiting {
                    self.plan_fallback(s).await;
                }
            }
        }
    }

    /// An aborted presignature session (a signer refused or failed).
    pub(super) async fn abort_presign(&mut self, session: SessionId, reason: String) {
        if let Some(Session::Presign(p)) = self.finish_session(session) {
            debug!(key_id = %p.key_id, %session, %reason, "presignature aborted");
            if p.leader {
                self.presigs.back_off(&p.key_id, &p.signers, Instant::now());
            }
            for s in self.plans_waiting_for(&session.0) {
                self.plan_fallback(s).await;
            }
        }
    }

    fn plans_waiting_for(&self, id: &PresignId) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| {
                matches!(s, Session::Sign(x) if matches!(&x.state,
                    Some(SignEngine::Plan(PlanState::AwaitPlan { waiting_for: Some(w), .. })) if w == id))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    async fn resume_waiting_plans(&mut self, id: &PresignId) {
        for s in self.plans_waiting_for(id) {
            let Some((key_id, signers, generation)) = self.plan_subset(&s) else {
                continue;
            };
            match self.presigs.take(&key_id, &signers, id, &generation) {
                Some(presig) => self.go_online(s, presig).await,
                None => self.plan_fallback(s).await,
            }
        }
    }

    /// A cggmp24 sign session's key, signers and key generation.
    fn plan_subset(&self, session: &SessionId) -> Option<(KeyId, Vec<NodeId>, SessionId)> {
        let Some(Session::Sign(s)) = self.sessions.get(session) else {
            return None;
        };
        let (key_id, generation) = s.cggmp_key.clone()?;
        Some((key_id, s.signers.clone(), generation))
    }

    /// The READY cggmp24 share of `key_id` and its generation.
    pub(super) async fn cggmp_share(
        &self,
        key_id: &KeyId,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, SessionId, u64), ProtocolError> {
        let rec = self
            .store
            .get(key_id)
            .await
            .map_err(|e| ProtocolError::Unable(format!("key store: {e}")))?
            .ok_or_else(|| ProtocolError::Unable(format!("no local share for key {key_id}")))?;
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
        Ok((
            zeroize::Zeroizing::new(untag_share(stored, rec.scheme)?.to_vec()),
            rec.session,
            rec.generation,
        ))
    }

    /// A cggmp24 sign session of a full message: the aggregator plans, the others wait.
    pub(super) async fn start_planned_sign(
        &mut self,
        session: SessionId,
        request_id: &RequestId,
        (key_id, generation): (KeyId, SessionId),
        input: CggmpSignInput,
        signers: &[NodeId],
        received: Instant,
    ) {
        let aggregator = signers.first() == Some(&self.cfg.me);
        let picked = if aggregator {
            self.pool_changed = true;
            self.presigs.take_oldest(&key_id, signers, &generation)
        } else {
            None
        };
        self.sessions.insert(
            session,
            Session::Sign(Box::new(SignSession {
                request_id: request_id.clone(),
                signers: signers.to_vec(),
                heard: BTreeSet::new(),
                cggmp_key: Some((key_id.clone(), generation)),
                state: Some(SignEngine::Plan(PlanState::AwaitPlan {
                    input,
                    waiting_for: None,
                    buffered: Vec::new(),
                })),
                started: received,
            })),
        );
        if !aggregator {
            return;
        }
        let plan = wire::SignPlan {
            presignature_id: picked
                .as_ref()
                .map(|(id, _)| id.to_vec())
                .unwrap_or_default(),
        };
        debug!(%key_id, %session, presigned = picked.is_some(), "sign plan");
        for p in signers.iter().filter(|p| **p != self.cfg.me) {
            self.send(&session, p, Payload::SignPlan(plan.clone()))
                .await;
        }
        match picked {
            Some((_, presig)) => self.go_online(session, presig).await,
            None => self.go_full(session).await,
        }
    }

    /// A sign plan from a signer of the session.
    pub(super) async fn on_sign_plan(
        &mut self,
        session: SessionId,
        from: NodeId,
        plan: wire::SignPlan,
    ) {
        let Some(Session::Sign(s)) = self.sessions.get_mut(&session) else {
            return;
        };
        s.heard.insert(from.clone());
        let from_aggregator = s.signers.first() == Some(&from);
        let id: Option<PresignId> = if plan.presignature_id.is_empty() {
            None
        } else {
            match <PresignId>::try_from(plan.presignature_id.as_slice()) {
                Ok(id) if from_aggregator => Some(id),
                _ => {
                    warn!(%session, %from, "malformed sign plan dropped");
                    return;
                }
            }
        };
        let signers = s.signers.clone();
        match (&mut s.state, from_aggregator, id) {
            // The aggregator's plan.
            (Some(SignEngine::Plan(PlanState::AwaitPlan { waiting_for, .. })), true, Some(id)) => {
                if waiting_for.is_some() {
                    return;
                }
                let Some((key_id, _, generation)) = self.plan_subset(&session) else {
                    return;
                };
                if let Some(presig) = self.presigs.take(&key_id, &signers, &id, &generation) {
                    self.pool_changed = true;
                    return self.go_online(session, presig).await;
                }
                // Finishing here right now: wait for it.
                if matches!(self.sessions.get(&SessionId(id)), Some(Session::Presign(_))) {
                    if let Some(Session::Sign(s)) = self.sessions.get_mut(&session) {
                        if let Some(SignEngine::Plan(PlanState::AwaitPlan {
                            waiting_for, ..
                        })) = &mut s.state
                        {
                            *waiting_for = Some(id);
                        }
                    }
                    return;
                }
                // Lost (this node restarted): everyone falls back, and the subset's pools,
                // which no longer match, are emptied.
                warn!(%session, %key_id, "named presignature not held here; falling back to the full protocol");
                self.plan_fallback(session).await;
            }
            (Some(SignEngine::Plan(PlanState::AwaitPlan { .. })), true, None) => {
                self.go_full(session).await
            }
            // Another signer lacks the presignature.
            (Some(SignEngine::Plan(_)), false, None) => {
                let purged = self
                    .plan_subset(&session)
                    .map(|(k, sg, _)| (self.presigs.purge_subset(&k, &sg), k));
                if let Some((n, k)) = purged {
                    info!(%session, %from, key_id = %k, purged = n, "a signer lacks the presignature: full protocol, subset pool emptied");
                }
                self.pool_changed = true;
                self.go_full(session).await
            }
            // Already on the full protocol: the named presignature is of no use any more.
            (Some(SignEngine::Cggmp(_)), true, Some(id)) => {
                if let Some((k, _, g)) = self.plan_subset(&session) {
                    drop(self.presigs.take(&k, &signers, &id, &g));
                    self.pool_changed = true;
                }
            }
            _ => debug!(%session, %from, "sign plan ignored"),
        }
    }

    /// Falls back to the full protocol: empties the subset's pool (it no longer matches the
    /// other signers') and tells the other signers to fall back too.
    async fn plan_fallback(&mut self, session: SessionId) {
        let Some((key_id, signers, _)) = self.plan_subset(&session) else {
            return;
        };
        self.presigs.purge_subset(&key_id, &signers);
        self.pool_changed = true;
        for p in signers.iter().filter(|p| **p != self.cfg.me) {
            let plan = Payload::SignPlan(wire::SignPlan::default());
            self.send(&session, p, plan).await;
        }
        self.go_full(session).await
    }

    /// Issues this signer's partial signature from `presig` (consumed) and steps the online
    /// engine with any buffered partials.
    async fn go_online(&mut self, session: SessionId, presig: SingleUsePresignature) {
        let Some(Session::Sign(s)) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(SignEngine::Plan(PlanState::AwaitPlan {
            input, buffered, ..
        })) = s.state.take()
        else {
            return;
        };
        if presig.signers() != s.signers.as_slice() {
            s.state = Some(SignEngine::Plan(PlanState::AwaitPlan {
                input,
                waiting_for: None,
                buffered,
            }));
            return self.plan_fallback(session).await;
        }
        let request_id = s.request_id.clone();
        let (engine, out) = match OnlineSigning::start(presig, &input.message) {
            Ok(x) => x,
            Err(e) => return self.fail_sign(session, request_id, e, None),
        };
        let (online, rest): (Vec<_>, Vec<_>) = buffered
            .into_iter()
            .partition(|(_, m)| m.phase() == Phase::Online);
        s.state = Some(SignEngine::Plan(PlanState::Online {
            input,
            engine,
            buffered: rest,
        }));
        self.checkpoint("presign-after-take");
        self.send_cggmp(&session, out).await;
        for (from, msg) in online {
            self.on_online(session, from, msg).await;
        }
    }

    /// Runs the full protocol on a worker, with the buffered full-protocol messages.
    async fn go_full(&mut self, session: SessionId) {
        let env = self.worker_env();
        let Some(Session::Sign(s)) = self.sessions.get_mut(&session) else {
            return;
        };
        let (input, buffered) = match s.state.take() {
            Some(SignEngine::Plan(
                PlanState::AwaitPlan {
                    input, buffered, ..
                }
                | PlanState::Online {
                    input, buffered, ..
                },
            )) => (input, buffered),
            other => {
                s.state = other;
                return;
            }
        };
        let request_id = s.request_id.clone();
        let task = cggmp::Task::Sign {
            share: input.share,
            signers: s.signers.clone(),
            data: SignData::Message(input.message),
        };
        match env.and_then(|env| cggmp::spawn(session, task, env)) {
            Ok(worker) => {
                for (from, msg) in buffered {
                    if msg.phase() != Phase::Online {
                        worker.forward(from, msg);
                    }
                }
                s.state = Some(SignEngine::Cggmp(worker));
            }
            Err(e) => self.fail_sign(session, request_id, e, None),
        }
    }

    pub(super) async fn send_cggmp(&self, session: &SessionId, out: Vec<Outgoing<CggmpMsg>>) {
        for o in out {
            let payload = Payload::Cggmp(wire::CggmpPayload {
                msg: o.msg.to_bytes(),
            });
            self.send(session, &o.to, payload).await;
        }
    }

    /// A CGGMP24 message for a planned sign session.
    pub(super) async fn on_plan_msg(&mut self, session: SessionId, from: NodeId, msg: CggmpMsg) {
        let Some(Session::Sign(s)) = self.sessions.get_mut(&session) else {
            return;
        };
        match &mut s.state {
            Some(SignEngine::Plan(PlanState::Online { .. })) if msg.phase() == Phase::Online => {
                self.on_online(session, from, msg).await;
            }
            Some(SignEngine::Plan(
                PlanState::AwaitPlan { buffered, .. } | PlanState::Online { buffered, .. },
            )) if buffered.len() < PLAN_BUFFER => buffered.push((from, msg)),
            _ => {}
        }
    }

    async fn on_online(&mut self, session: SessionId, from: NodeId, msg: CggmpMsg) {
        let Some(Session::Sign(s)) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(SignEngine::Plan(PlanState::Online {
            input,
            engine,
            buffered,
        })) = s.state.take()
        else {
            return;
        };
        match engine.handle(&from, msg) {
            Ok(Progress::Continue(engine, out)) => {
                s.state = Some(SignEngine::Plan(PlanState::Online {
                    input,
                    engine,
                    buffered,
                }));
                self.send_cggmp(&session, out).await;
            }
            Ok(Progress::Done(sig, out)) => {
                self.send_cggmp(&session, out).await;
                self.cggmp_signed(session, Ok(sig), true).await;
            }
            Err(e) => self.cggmp_signed(session, Err(e), true).await,
        }
    }

    /// Refreshes the pool levels in the metrics when they changed.
    pub(super) fn publish_pool_levels(&mut self) {
        if !std::mem::take(&mut self.pool_changed) {
            return;
        }
        let levels = self.presigs.levels();
        let target = self.cfg.presign_pool;
        self.metrics(|m| {
            m.cggmp_presignatures_ready = levels.iter().map(|l| l.ready).sum();
            m.cggmp_presign_pools = levels;
            m.cggmp_presign_pool_target = target;
        });
    }
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
