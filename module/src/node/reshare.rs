//! Resharing sessions (docs/reshare.md): the dealers (old holders the chain chose) deal their
//! Lagrange-weighted shares to the new committee; each new party checks and combines what it
//! received, stages the new share beside its READY one (if any) and reports the public key and
//! transcript hash. The chain switches the key when every new party reports the same
//! ([`Job::ReshareDone`]): new parties promote their staged share, old holders outside the new
//! committee delete theirs. A failed resharing ([`Job::ReshareFailed`]) drops the staged
//! shares; the old generation stays READY.
//!
//! A CGGMP24 share also needs the new committee's aux info. Every new party offers the
//! fingerprint of the aux info it holds for that committee (`ReshareAux`) to the others; when
//! all offered the same, each reuses its own, otherwise the new parties generate aux info
//! together (a worker thread, a safe-prime set from the pool) while the deals arrive. The
//! reported transcript binds the aux fingerprint, so the chain confirms that every new party
//! holds the same.

use super::*;
use crate::job::ReshareJob;
use crate::protocol::reshare::{self, Collector, Deal, ReshareParams};

/// A resharing session at a dealer, a new party, or both.
pub(super) struct ReshareSession {
    pub(super) key_id: KeyId,
    pub(super) scheme: Scheme,
    pub(super) dealers: Vec<NodeId>,
    pub(super) new_parties: Vec<NodeId>,
    new_threshold: u32,
    generation: u64,
    public_key: Vec<u8>,
    /// This node is a new party (it reports the outcome to the chain).
    receiver: bool,
    /// New parties only: the deals received so far.
    collector: Option<Collector>,
    /// New parties only: the checked and combined share, waiting for aux info (CGGMP24).
    core: Option<reshare::ReshareOutput>,
    /// New parties of a CGGMP24 key: the new committee's aux info.
    pub(super) aux: AuxState,
    pub(super) started: Instant,
}

/// Where a CGGMP24 new party stands with the new committee's aux info.
pub(super) enum AuxState {
    /// FROST, or not a new party.
    NotNeeded,
    /// Collecting the new parties' offers; CGGMP24 messages of a generation are kept.
    Offering {
        mine: Option<cggmp::AuxOffer>,
        offers: BTreeMap<NodeId, Vec<u8>>,
        buffered: Vec<(NodeId, CggmpMsg)>,
    },
    /// Generating it with the other new parties.
    Generating(cggmp::Worker),
    /// Ready: [`crate::protocol::cggmp::AuxShare::to_bytes`].
    Ready(Arc<zeroize::Zeroizing<Vec<u8>>>),
}

impl ReshareSession {
    pub(super) fn is_party(&self, n: &NodeId) -> bool {
        self.dealers.contains(n) || self.new_parties.contains(n)
    }
}

impl ReshareJob {
    fn params(&self) -> Result<ReshareParams, ProtocolError> {
        let t = |v: u32| {
            u16::try_from(v).map_err(|_| ProtocolError::Local(format!("threshold {v} too large")))
        };
        Ok(ReshareParams {
            session: self.session,
            scheme: self.scheme,
            old_parties: self.old_parties.clone(),
            old_threshold: t(self.old_threshold)?,
            dealers: self.dealers.clone(),
            new_parties: self.new_parties.clone(),
            new_threshold: t(self.new_threshold)?,
            public_key: self.public_key.clone(),
            old_public_package: self.public_key_package.clone(),
        })
    }
}

impl<S: SubmitResult> Node<S> {
    /// A committed resharing: open the session, deal if this node is a dealer.
    pub(super) async fn on_reshare_job(&mut self, job: ReshareJob, received: Instant) {
        let me = self.cfg.me.clone();
        let dealer = job.dealers.contains(&me);
        let receiver = job.new_parties.contains(&me);
        let session = job.session;
        if !(dealer || receiver) || self.sessions.contains_key(&session) {
            return;
        }
        // Idempotent: a replayed job whose share this node already staged or promoted.
        if receiver {
            let staged = self.store.get_staged(&job.key_id).await.ok().flatten();
            let current = self.store.get(&job.key_id).await.ok().flatten();
            if staged.is_some_and(|r| r.session == session)
                || current.is_some_and(|r| r.session == session)
            {
                debug!(key_id = %job.key_id, %session, "reshare job already done here; skipped");
                return;
            }
        }
        let params = match job.params().and_then(|p| p.check().map(|()| p)) {
            Ok(p) => p,
            Err(e) => {
                if receiver {
                    self.report_reshare(&job.key_id, session, Err(e));
                }
                return;
            }
        };
        let collector = if receiver {
            match Collector::new(params.clone(), me.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.report_reshare(&job.key_id, session, Err(e));
                    return;
                }
            }
        } else {
            None
        };
        let cggmp = job.scheme == Scheme::Cggmp24Secp256k1;
        let aux = if receiver && cggmp {
            let mine = self.aux_candidate(&job.new_parties).await;
            let offer = wire::ReshareAux {
                fingerprint: mine
                    .as_ref()
                    .map(|o| o.fingerprint.to_vec())
                    .unwrap_or_default(),
            };
            for p in &job.new_parties {
                self.send(&session, p, Payload::ReshareAux(offer.clone()))
                    .await;
            }
            AuxState::Offering {
                mine,
                offers: BTreeMap::new(),
                buffered: Vec::new(),
            }
        } else {
            AuxState::NotNeeded
        };
        info!(key_id = %job.key_id, %session, dealer, receiver, generation = job.generation,
            "reshare session opened");
        self.sessions.insert(
            session,
            Session::Reshare(Box::new(ReshareSession {
                key_id: job.key_id.clone(),
                scheme: job.scheme,
                dealers: job.dealers.clone(),
                new_parties: job.new_parties.clone(),
                new_threshold: job.new_threshold,
                generation: job.generation,
                public_key: job.public_key.clone(),
                receiver,
                collector,
                core: None,
                aux,
                started: received,
            })),
        );
        if dealer {
            match self.deal(&job, &params).await {
                Ok(deals) => {
                    for (to, d) in deals {
                        let payload = Payload::ReshareDeal(wire::ReshareDeal {
                            commitment: d.commitment.clone(),
                            old_public: d.old_public.clone(),
                            share: d.share.to_vec(),
                        });
                        self.send(&session, &to, payload).await;
                    }
                    debug!(key_id = %job.key_id, %session, "dealt to the new committee");
                    self.checkpoint("reshare-after-deal");
                }
                Err(e) => {
                    warn!(key_id = %job.key_id, %session, error = %e, "cannot deal");
                    let abort = wire::SessionAbort {
                        reason: format!("dealer {me} cannot deal: {e}"),
                    };
                    for p in job.new_parties.iter().filter(|p| **p != me) {
                        self.send(&session, p, Payload::Abort(abort.clone())).await;
                    }
                    self.fail_reshare(session, e).await;
                    return;
                }
            }
            if !receiver {
                self.finish_session(session);
                return;
            }
        }
        self.replay_early(session).await;
    }

    /// This dealer's deals, from its READY share of the generation the chain reshares.
    async fn deal(
        &self,
        job: &ReshareJob,
        params: &ReshareParams,
    ) -> Result<BTreeMap<NodeId, Deal>, ProtocolError> {
        let rec = self
            .store
            .get(&job.key_id)
            .await
            .map_err(|e| ProtocolError::Local(format!("key store: {e}")))?
            .ok_or_else(|| ProtocolError::Local(format!("no local share of {}", job.key_id)))?;
        if rec.status != ShareStatus::Ready || rec.session != job.key_session {
            return Err(ProtocolError::Local(format!(
                "local share of {} is {:?} of session {}, not READY of the chain's generation ({})",
                job.key_id, rec.status, rec.session, job.key_session
            )));
        }
        let share = rec
            .share
            .as_ref()
            .ok_or_else(|| ProtocolError::Local("READY record without share".into()))?;
        let bytes = untag_share(share, rec.scheme)?;
        reshare::deal(params, &self.cfg.me, bytes, &mut OsRng)
    }

    /// A dealer's deal at a new party.
    pub(super) async fn on_reshare_deal(
        &mut self,
        session: SessionId,
        from: NodeId,
        d: wire::ReshareDeal,
    ) {
        let deal = Deal {
            commitment: d.commitment,
            old_public: d.old_public,
            share: zeroize::Zeroizing::new(d.share),
        };
        let added = match self.sessions.get_mut(&session) {
            Some(Session::Reshare(r)) => match r.collector.as_mut() {
                Some(c) => c.add(&from, deal).map(|()| c.is_complete()),
                None => {
                    warn!(%session, %from, "deal dropped: this node is not a new party, or has combined its deals");
                    return;
                }
            },
            _ => return,
        };
        match added {
            Err(e) => return self.fail_reshare(session, e).await,
            Ok(false) => return,
            Ok(true) => {}
        }
        let finished = match self.sessions.get_mut(&session) {
            Some(Session::Reshare(r)) => r.collector.take().map(Collector::finish),
            _ => None,
        };
        match finished {
            Some(Ok(out)) => {
                if let Some(Session::Reshare(r)) = self.sessions.get_mut(&session) {
                    r.core = Some(out);
                }
                self.try_complete_reshare(session).await;
            }
            Some(Err(e)) => self.fail_reshare(session, e).await,
            None => {}
        }
    }

    /// A new party's aux-info offer (CGGMP24). Once every new party offered: reuse when all
    /// offered the same, else generate together.
    pub(super) async fn on_reshare_aux(
        &mut self,
        session: SessionId,
        from: NodeId,
        a: wire::ReshareAux,
    ) {
        let Some(Session::Reshare(r)) = self.sessions.get_mut(&session) else {
            return;
        };
        if !r.new_parties.contains(&from) {
            let e = ProtocolError::blame(
                &from,
                "aux-info offer from a node outside the new committee",
            );
            return self.fail_reshare(session, e).await;
        }
        let n = r.new_parties.len();
        let AuxState::Offering { offers, .. } = &mut r.aux else {
            return; // not a CGGMP24 new party, or already decided
        };
        match offers.get(&from) {
            Some(prev) if *prev == a.fingerprint => return,
            Some(_) => {
                let e = ProtocolError::blame(&from, "two different aux-info offers (equivocation)");
                return self.fail_reshare(session, e).await;
            }
            None => {
                offers.insert(from, a.fingerprint);
            }
        }
        if offers.len() < n {
            return;
        }
        let AuxState::Offering {
            mine,
            offers,
            buffered,
        } = std::mem::replace(&mut r.aux, AuxState::NotNeeded)
        else {
            return;
        };
        let parties = r.new_parties.clone();
        let key_id = r.key_id.clone();
        let reuse = mine.filter(|m| offers.values().all(|f| f.as_slice() == m.fingerprint));
        if let Some(m) = reuse {
            info!(%key_id, %session, "reshare: every new party holds the committee's aux info; reused");
            if let Some(Session::Reshare(r)) = self.sessions.get_mut(&session) {
                r.aux = AuxState::Ready(m.share);
            }
            return self.try_complete_reshare(session).await;
        }
        let env = match self.worker_env() {
            Ok(env) => env,
            Err(e) => return self.fail_reshare(session, e).await,
        };
        let primes = match self.primes.take_unreserved().await {
            Ok(Some(p)) => p,
            Ok(None) => {
                let e = ProtocolError::Local(
                    "no safe-prime set ready yet for the new committee's aux info (generating \
                     in the background)"
                        .into(),
                );
                return self.fail_reshare(session, e).await;
            }
            Err(e) => return self.fail_reshare(session, e).await,
        };
        info!(%key_id, %session, "reshare: generating aux info for the new committee");
        match cggmp::spawn(session, cggmp::Task::Aux { parties, primes }, env) {
            Ok(worker) => {
                for (from, msg) in buffered {
                    worker.forward(from, msg);
                }
                if let Some(Session::Reshare(r)) = self.sessions.get_mut(&session) {
                    r.aux = AuxState::Generating(worker);
                }
            }
            Err(e) => self.fail_reshare(session, e).await,
        }
    }

    /// A CGGMP24 message of the new committee's aux-info run.
    pub(super) fn on_reshare_cggmp(&mut self, session: SessionId, from: NodeId, msg: CggmpMsg) {
        if let Some(Session::Reshare(r)) = self.sessions.get_mut(&session) {
            match &mut r.aux {
                AuxState::Offering { buffered, .. } => buffered.push((from, msg)),
                AuxState::Generating(w) => w.forward(from, msg),
                AuxState::NotNeeded | AuxState::Ready(_) => {
                    warn!(%session, %from, "CGGMP24 message in a resharing without aux run dropped")
                }
            }
        }
    }

    /// The new committee's aux-info run ended.
    pub(super) async fn on_reshare_aux_done(
        &mut self,
        session: SessionId,
        res: Result<zeroize::Zeroizing<Vec<u8>>, ProtocolError>,
    ) {
        match res {
            Ok(aux) => {
                if let Some(Session::Reshare(r)) = self.sessions.get_mut(&session) {
                    r.aux = AuxState::Ready(Arc::new(aux));
                }
                self.try_complete_reshare(session).await;
            }
            Err(e) => self.fail_reshare(session, e).await,
        }
    }

    /// Stages and reports the new share once it is combined and, for CGGMP24, its aux info is
    /// ready.
    async fn try_complete_reshare(&mut self, session: SessionId) {
        let ready = match self.sessions.get(&session) {
            Some(Session::Reshare(r)) => {
                r.core.is_some() && matches!(r.aux, AuxState::NotNeeded | AuxState::Ready(_))
            }
            _ => false,
        };
        if !ready {
            return;
        }
        let Some(Session::Reshare(r)) = self.finish_session(session) else {
            return;
        };
        let mut r = *r;
        let Some(out) = r.core.take() else {
            return;
        };
        let aux = match std::mem::replace(&mut r.aux, AuxState::NotNeeded) {
            AuxState::Ready(a) => Some(a),
            _ => None,
        };
        let result = self.stage_reshared(session, &r, out, aux).await;
        match &result {
            Ok(_) => {
                info!(key_id = %r.key_id, %session, generation = r.generation,
                    "reshared share staged; waiting for the chain");
                let us = r.started.elapsed().as_micros() as u64;
                let scheme = r.scheme;
                self.metrics(|m| {
                    push_bounded(&mut m.reshare_latency_us, us, 1000);
                    m.latency.observe("reshare", scheme, us);
                });
            }
            Err(e) => warn!(key_id = %r.key_id, %session, error = %e, "resharing failed"),
        }
        if result.is_ok() {
            self.checkpoint("reshare-after-stage");
        }
        self.report_reshare(&r.key_id, session, result);
    }

    /// Stores the new share as a staged record; returns what the chain is told.
    async fn stage_reshared(
        &self,
        session: SessionId,
        r: &ReshareSession,
        out: reshare::ReshareOutput,
        aux: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
    ) -> Result<KeyGenOk, ProtocolError> {
        if out.public_key != r.public_key {
            return Err(ProtocolError::Bug(
                "reshare output has another public key than the chain's".into(),
            ));
        }
        let mut fingerprint = None;
        let mut public_key_package = Vec::new();
        let share = match r.scheme {
            Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => {
                let share = encode_tagged(r.scheme, &out.share)?;
                // Load it back as signing will, before anything is reported.
                let km = decode_share(&share, r.scheme, r.new_parties.clone())?;
                if km.public_key() != r.public_key.as_slice() {
                    return Err(ProtocolError::Bug("reshared share does not load".into()));
                }
                public_key_package = km.public_key_package()?;
                share
            }
            Scheme::Cggmp24Secp256k1 => {
                use crate::protocol::cggmp::{AuxShare, CggmpKeyShare, CoreShare};
                let aux = aux.ok_or_else(|| {
                    ProtocolError::Bug("cggmp24 reshare completed without aux info".into())
                })?;
                let aux = AuxShare::from_bytes(&aux)?;
                fingerprint = Some(aux.fingerprint()?);
                let core = CoreShare::from_bytes(&out.share)?;
                let full = CggmpKeyShare::from_parts(core, aux)?;
                encode_tagged(r.scheme, &full.to_bytes()?)?
            }
        };
        let rec = KeyRecord {
            key_id: r.key_id.clone(),
            session,
            scheme: r.scheme,
            threshold: r.new_threshold,
            parties: r.new_parties.clone(),
            public_key: out.public_key.clone(),
            status: ShareStatus::Pending,
            error: None,
            generation: r.generation,
            share: Some(share),
        };
        self.store
            .put_staged(rec)
            .await
            .map_err(|e| ProtocolError::Local(format!("key store: {e}")))?;
        Ok(KeyGenOk {
            public_key: out.public_key,
            transcript_hash: reported_transcript(out.transcript_hash, fingerprint),
            public_key_package,
        })
    }

    fn report_reshare(
        &self,
        key_id: &KeyId,
        session: SessionId,
        result: Result<KeyGenOk, ProtocolError>,
    ) {
        let outcome = match result {
            Ok(ok) => Outcome::Ok(ok),
            Err(e) => Outcome::Failed {
                error: e.to_string(),
                culprits: e.culprits().to_vec(),
                evidence: self.evidence(&session, e.culprits()),
            },
        };
        self.submit.submit(TxMsg::ReshareResult {
            key_id: key_id.clone(),
            session,
            outcome,
        });
    }

    /// Ends a resharing session here; a new party reports the failure to the chain.
    pub(super) async fn fail_reshare(&mut self, session: SessionId, e: ProtocolError) {
        let Some(Session::Reshare(r)) = self.finish_session(session) else {
            return;
        };
        warn!(key_id = %r.key_id, %session, error = %e, "reshare session failed");
        if r.receiver {
            self.report_reshare(&r.key_id, session, Err(e));
        }
    }

    /// The local timeout of a resharing: a new party names the dealers it has no deal from.
    pub(super) async fn expire_reshare(&mut self, session: SessionId, timeout: ProtocolError) {
        let missing = match self.sessions.get_mut(&session) {
            Some(Session::Reshare(r)) => r.collector.take().map(|c| match c.finish() {
                Err(e) => e,
                Ok(_) => timeout.clone(),
            }),
            _ => None,
        };
        self.fail_reshare(session, missing.unwrap_or(timeout)).await;
    }

    /// The chain confirmed the resharing.
    pub(super) async fn on_reshare_done(
        &mut self,
        key_id: KeyId,
        session: SessionId,
        old_parties: Vec<NodeId>,
        new_parties: Vec<NodeId>,
        generation: u64,
    ) {
        let me = &self.cfg.me;
        if new_parties.contains(me) {
            self.checkpoint("reshare-before-promote");
            match self.store.promote_staged(&key_id, generation).await {
                Ok(Some(rec)) => {
                    info!(%key_id, %session, generation, "reshared share is READY");
                    self.checkpoint("reshare-after-promote");
                    self.forget_key(&key_id);
                    self.untrack_cggmp_key(&key_id);
                    self.track_cggmp_key(&rec);
                    self.metrics(|m| m.reshares_ok += 1);
                }
                Ok(None) => {
                    let current = self.store.get(&key_id).await.ok().flatten();
                    if current.is_none_or(|r| r.generation < generation) {
                        warn!(%key_id, %session, generation,
                            "the chain switched the key but no staged share of it is here");
                    }
                }
                Err(e) => warn!(%key_id, error = %e, "cannot promote the reshared share"),
            }
        } else if old_parties.contains(me) {
            // Only an older generation is deleted: a replayed job must not delete the share of
            // a later resharing that brought this node back.
            let current = self.store.get(&key_id).await.ok().flatten();
            if current.is_some_and(|r| r.generation < generation) {
                self.forget_key(&key_id);
                self.untrack_cggmp_key(&key_id);
                match self.store.delete(&key_id).await {
                    Ok(_) => info!(%key_id, generation, "left the committee: old share deleted"),
                    Err(e) => warn!(%key_id, error = %e, "cannot delete the old share"),
                }
            }
            // Likewise only a staged share of this resharing or an older one: a replayed job
            // (the restart catch-up runs beside the replayed blocks) must not drop the share a
            // later resharing staged here.
            let staged = self.store.get_staged(&key_id).await.ok().flatten();
            if staged.is_some_and(|r| r.generation <= generation) {
                if let Err(e) = self.store.delete_staged(&key_id).await {
                    warn!(%key_id, error = %e, "cannot delete a staged share");
                }
            }
        }
    }

    /// The chain ended the resharing in ERROR: drop what it staged here.
    pub(super) async fn on_reshare_failed(&mut self, key_id: KeyId, session: SessionId) {
        self.finish_session(session);
        if let Ok(Some(staged)) = self.store.get_staged(&key_id).await {
            if staged.session == session {
                match self.store.delete_staged(&key_id).await {
                    Ok(_) => info!(%key_id, %session, "failed resharing: staged share deleted"),
                    Err(e) => warn!(%key_id, error = %e, "cannot delete a staged share"),
                }
            }
        }
    }
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
