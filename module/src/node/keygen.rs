//! CGGMP24 keygen sessions (seed 001): prepare / ready / start, then the DKG and aux info on a
//! worker, at a party and at the coordinator. FROST keygens run in `crate::session`.
//!
//! A keygen that generates aux info starts only once every party holds a safe-prime set
//! reserved for it (`KeyGenReady.has_prime_set`; see `cggmp::PrimePool`): until then it waits,
//! and the sets the others reserved stay in their pools.

use super::*;

impl<S: SubmitResult> Node<S> {
    pub(super) fn keygen_mut(&mut self, session: &SessionId) -> Option<&mut KeygenSession> {
        match self.sessions.get_mut(session) {
            Some(Session::Keygen(k)) => Some(k),
            _ => None,
        }
    }

    /// Phase 1 at a party: check the local store (seed 001 semantics) and answer.
    pub(super) async fn on_prepare(
        &mut self,
        session: SessionId,
        from: NodeId,
        p: wire::KeyGenPrepare,
    ) {
        let me = self.cfg.me.clone();
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if from != k.coordinator {
            warn!(%session, %from, "KeyGenPrepare from a non-coordinator dropped");
            return;
        }
        let matches = p.key_id == k.key_id.as_str()
            && p.scheme == k.scheme.as_str()
            && p.threshold == k.threshold
            && p.parties
                .iter()
                .map(String::as_str)
                .eq(k.parties.iter().map(|n| n.as_str()));
        let coordinator = k.coordinator.clone();
        let cggmp_parties = (k.scheme == Scheme::Cggmp24Secp256k1).then(|| k.parties.clone());
        let answer = if !matches {
            ReadyAnswer::Refused("KeyGenPrepare does not match the committed request".into())
        } else if !matches!(k.phase, KeygenPhase::AwaitPrepare { .. }) {
            return; // duplicate prepare
        } else {
            let rec = KeyRecord {
                key_id: k.key_id.clone(),
                session,
                scheme: k.scheme,
                threshold: k.threshold,
                parties: k.parties.clone(),
                public_key: Vec::new(),
                status: ShareStatus::Pending,
                error: None,
                generation: 1,
                share: None,
            };
            match self.store.insert_if_absent(rec.clone()).await {
                Ok(None) => ReadyAnswer::Fresh,
                Ok(Some(existing)) => match existing.status {
                    ShareStatus::Ready if existing.scheme != rec.scheme => {
                        ReadyAnswer::Refused(format!(
                            "{me}: key {} is READY here as a {} key, not {}",
                            existing.key_id, existing.scheme, rec.scheme
                        ))
                    }
                    ShareStatus::Ready => ReadyAnswer::Existing(existing.public_key.clone()),
                    ShareStatus::Pending if existing.session == session => ReadyAnswer::Fresh,
                    ShareStatus::Pending => ReadyAnswer::Refused(format!(
                        "{me}: key {} is PENDING in another keygen session ({})",
                        existing.key_id, existing.session
                    )),
                    // An earlier attempt failed: this attempt replaces it.
                    ShareStatus::Error => match self.store.put(rec).await {
                        Ok(()) => ReadyAnswer::Fresh,
                        Err(e) => ReadyAnswer::Refused(format!("{me}: key store: {e}")),
                    },
                },
                Err(e) => ReadyAnswer::Refused(format!("{me}: key store: {e}")),
            }
        };
        // CGGMP24: offer this committee's aux info for reuse, if this node holds some.
        let offer = match (&answer, cggmp_parties) {
            (ReadyAnswer::Fresh, Some(parties)) => self.aux_candidate(&parties).await,
            _ => None,
        };
        let aux_fingerprint = offer
            .as_ref()
            .map(|o| o.fingerprint.to_vec())
            .unwrap_or_default();
        if let Some(k) = self.keygen_mut(&session) {
            k.aux_offer = offer;
            if let KeygenPhase::AwaitPrepare { buffered } =
                std::mem::replace(&mut k.phase, KeygenPhase::Transition)
            {
                k.phase = KeygenPhase::AwaitStart {
                    existing: match &answer {
                        ReadyAnswer::Existing(pk) => Some(pk.clone()),
                        _ => None,
                    },
                    buffered,
                };
            }
        }
        let ready = match answer {
            ReadyAnswer::Fresh => wire::KeyGenReady {
                aux_fingerprint,
                has_prime_set: self.primes.holds(&session),
                ..Default::default()
            },
            ReadyAnswer::Existing(pk) => wire::KeyGenReady {
                existing_public_key: pk,
                ..Default::default()
            },
            ReadyAnswer::Refused(error) => wire::KeyGenReady {
                error,
                ..Default::default()
            },
        };
        self.checkpoint("keygen-after-pending");
        self.send(&session, &coordinator, Payload::KeygenReady(ready))
            .await;
    }

    /// Phase 2 at the coordinator: once every party answered, start, abort, or wait for the
    /// parties that hold no safe-prime set yet (they answer again once they hold one).
    pub(super) async fn on_ready(
        &mut self,
        session: SessionId,
        from: NodeId,
        r: wire::KeyGenReady,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if k.answers.is_none() || k.decided || !k.parties.contains(&from) {
            debug!(%session, %from, "KeyGenReady not for an undecided coordinator: dropped");
            return;
        }
        if r.has_prime_set {
            k.primes_ready.insert(from.clone());
        }
        if !k.aux_offered.contains_key(&from) {
            k.aux_offered
                .insert(from.clone(), r.aux_fingerprint.clone());
        }
        if let Some(answers) = k.answers.as_mut() {
            answers.entry(from).or_insert(ReadyAnswer::from_wire(r));
        }
        let decision = decide_start(
            &k.parties,
            k.answers.as_ref().unwrap_or(&BTreeMap::new()),
            &k.aux_offered,
            &k.primes_ready,
        );
        let payload = match decision {
            None => return,
            Some(StartDecision::WaitForPrimes(missing)) => {
                if missing != k.waiting_for_primes {
                    let names: Vec<&str> = missing.iter().map(NodeId::as_str).collect();
                    info!(key_id = %k.key_id, %session, waiting_for = %names.join(","),
                        "CGGMP24 keygen waits for safe primes before it starts");
                    k.waiting_for_primes = missing;
                }
                return;
            }
            Some(StartDecision::Abort(reason)) => Payload::Abort(wire::SessionAbort { reason }),
            Some(StartDecision::Start { reuse_aux }) => {
                Payload::KeygenStart(wire::KeyGenStart { reuse_aux })
            }
        };
        k.decided = true;
        k.waiting_for_primes.clear();
        let parties = k.parties.clone();
        for p in &parties {
            self.send(&session, p, payload.clone()).await;
        }
    }

    /// Hands freed or new safe-prime sets to the CGGMP24 keygens waiting here, oldest first;
    /// a keygen that already answered its coordinator answers again, now holding a set.
    pub(super) async fn grant_prime_sets(&mut self) {
        for session in self.primes.grant_waiting() {
            let Some(k) = self.keygen_mut(&session) else {
                // Ended meanwhile: the set goes to the next in line.
                self.primes.release(&session);
                continue;
            };
            info!(key_id = %k.key_id, %session, "a safe-prime set is reserved for this keygen now");
            if !matches!(k.phase, KeygenPhase::AwaitStart { existing: None, .. }) {
                continue; // not answered yet (the answer will say so), or nothing to add
            }
            let ready = wire::KeyGenReady {
                aux_fingerprint: k
                    .aux_offer
                    .as_ref()
                    .map(|o| o.fingerprint.to_vec())
                    .unwrap_or_default(),
                has_prime_set: true,
                ..Default::default()
            };
            let coordinator = k.coordinator.clone();
            self.send(&session, &coordinator, Payload::KeygenReady(ready))
                .await;
        }
    }

    /// Phase 2 at a party: run the DKG (or report the existing key).
    pub(super) async fn on_start(&mut self, session: SessionId, from: NodeId, reuse_aux: bool) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if from != k.coordinator {
            warn!(%session, %from, "KeyGenStart from a non-coordinator dropped");
            return;
        }
        // A duplicate (or late) KeyGenStart must leave a running DKG alone: taking the phase
        // unconditionally lost the DKG and stalled the session until its deadline (found by
        // the network-fault e2e test, which duplicates every message).
        if !matches!(k.phase, KeygenPhase::AwaitStart { .. }) {
            debug!(%session, "duplicate KeyGenStart ignored");
            return;
        }
        let KeygenPhase::AwaitStart { existing, buffered } =
            std::mem::replace(&mut k.phase, KeygenPhase::Transition)
        else {
            return;
        };
        if let Some(pk) = existing {
            let key_id = k.key_id.clone();
            let scheme = k.scheme;
            info!(%key_id, "key is READY locally already: reporting the existing key");
            self.finish_session(session);
            // FROST: the verifying shares too, from the READY share (CGGMP24 reports none).
            let public_key_package = match scheme {
                Scheme::Cggmp24Secp256k1 => Ok(Vec::new()),
                _ => self
                    .load_key(&key_id)
                    .await
                    .and_then(|(km, _)| km.public_key_package()),
            };
            let outcome = match public_key_package {
                Ok(public_key_package) => Outcome::Ok(KeyGenOk {
                    transcript_hash: existing_transcript(scheme, &pk),
                    public_key: pk,
                    public_key_package,
                }),
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                    culprits: Vec::new(),
                    evidence: Vec::new(),
                },
            };
            self.submit.submit(TxMsg::KeyGenResult {
                key_id,
                session,
                outcome,
            });
            return;
        }
        if k.scheme != Scheme::Cggmp24Secp256k1 {
            // FROST keygens run in the session manager (`crate::session`).
            return self
                .fail_keygen(
                    session,
                    ProtocolError::Bug("FROST keygen in the runtime".into()),
                )
                .await;
        }
        self.start_cggmp_keygen(session, buffered, reuse_aux).await
    }

    /// Stores the share READY (durably), then reports the key to the chain.
    pub(super) async fn store_keygen(
        &mut self,
        session: SessionId,
        ok: KeyGenOk,
        share: SecretShare,
    ) {
        let Some(Session::Keygen(k)) = self.finish_session(session) else {
            return;
        };
        let rec = KeyRecord {
            key_id: k.key_id.clone(),
            session,
            scheme: k.scheme,
            threshold: k.threshold,
            parties: k.parties.clone(),
            public_key: ok.public_key.clone(),
            status: ShareStatus::Ready,
            error: None,
            generation: 1,
            share: Some(share),
        };
        let tracked = KeyRecord {
            share: None,
            ..rec.clone()
        };
        self.checkpoint("keygen-before-store");
        // Durable before the chain hears of it: a READY acknowledged on chain survives a crash.
        if let Err(e) = self.store.put(rec).await {
            self.sessions.insert(session, Session::Keygen(k));
            return self
                .fail_keygen(session, ProtocolError::Local(format!("key store: {e}")))
                .await;
        }
        self.track_cggmp_key(&tracked);
        let us = k.started.elapsed().as_micros() as u64;
        self.metrics(|m| {
            m.keygens_ok += 1;
            push_bounded(&mut m.keygen_latency_us, us, 1000);
            m.latency.observe("keygen", k.scheme, us);
        });
        info!(key_id = %k.key_id, scheme = %k.scheme, public_key = %hex::encode(&ok.public_key), us, "keygen READY locally");
        self.checkpoint("keygen-after-store");
        self.submit.submit(TxMsg::KeyGenResult {
            key_id: k.key_id.clone(),
            session,
            outcome: Outcome::Ok(ok),
        });
    }

    pub(super) async fn fail_keygen(&mut self, session: SessionId, e: ProtocolError) {
        let evidence = self.evidence(&session, e.culprits());
        let Some(Session::Keygen(k)) = self.finish_session(session) else {
            return;
        };
        warn!(key_id = %k.key_id, %session, error = %e, "keygen failed");
        self.metrics(|m| m.keygens_failed += 1);
        if let Ok(Some(mut rec)) = self.store.get(&k.key_id).await {
            // Only this session's PENDING record: a local failure never downgrades a READY
            // share (only the chain's verdict, Job::KeyGenFailed, does).
            if rec.session == session && rec.status == ShareStatus::Pending {
                rec.status = ShareStatus::Error;
                rec.error = Some(e.to_string());
                rec.share = None;
                if let Err(err) = self.store.put(rec).await {
                    warn!(key_id = %k.key_id, error = %err, "cannot record keygen failure");
                }
            }
        }
        self.submit.submit(TxMsg::KeyGenResult {
            key_id: k.key_id.clone(),
            session,
            outcome: Outcome::Failed {
                error: e.to_string(),
                culprits: e.culprits().to_vec(),
                evidence,
            },
        });
    }
}

/// What the coordinator of a CGGMP24 keygen does with its committee's answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StartDecision {
    /// Abort the keygen (a party refused, or the parties disagree about an existing key).
    Abort(String),
    /// Start the DKG; aux info is reused when every party offered the same.
    Start { reuse_aux: bool },
    /// Wait: aux info must be generated and these parties hold no safe-prime set yet.
    WaitForPrimes(Vec<NodeId>),
}

/// The coordinator's decision once every party of `parties` answered (`None` before): abort
/// on a refusal, start when aux info can be reused, when every party reports the key READY,
/// or when every party holds a safe-prime set; else wait for the parties without one.
pub(super) fn decide_start(
    parties: &[NodeId],
    answers: &BTreeMap<NodeId, ReadyAnswer>,
    aux_offered: &BTreeMap<NodeId, Vec<u8>>,
    primes_ready: &BTreeSet<NodeId>,
) -> Option<StartDecision> {
    if parties.iter().any(|p| !answers.contains_key(p)) {
        return None;
    }
    if let Some(reason) = why_not_start(answers, parties.len()) {
        return Some(StartDecision::Abort(reason));
    }
    let fps: Vec<&Vec<u8>> = parties.iter().filter_map(|p| aux_offered.get(p)).collect();
    let reuse_aux = fps.len() == parties.len()
        && fps.first().is_some_and(|f| !f.is_empty())
        && fps.windows(2).all(|w| matches!(w, [a, b] if a == b));
    let existing = answers
        .values()
        .all(|a| matches!(a, ReadyAnswer::Existing(_)));
    if reuse_aux || existing {
        return Some(StartDecision::Start { reuse_aux });
    }
    let missing: Vec<NodeId> = parties
        .iter()
        .filter(|p| !primes_ready.contains(*p))
        .cloned()
        .collect();
    Some(if missing.is_empty() {
        StartDecision::Start { reuse_aux: false }
    } else {
        StartDecision::WaitForPrimes(missing)
    })
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("node{i}")).unwrap())
            .collect()
    }

    /// Issue 15: one party without a safe-prime set makes the keygen wait (nobody takes a
    /// set), and the answer it sends once it holds one starts it.
    #[test]
    fn decide_start__should_wait_for_a_party_without_a_prime_set_then_start() {
        let parties = nodes(3);
        let fresh: BTreeMap<NodeId, ReadyAnswer> = parties
            .iter()
            .map(|p| (p.clone(), ReadyAnswer::Fresh))
            .collect();
        let no_aux: BTreeMap<NodeId, Vec<u8>> =
            parties.iter().map(|p| (p.clone(), Vec::new())).collect();
        let mut ready: BTreeSet<NodeId> = parties[..2].iter().cloned().collect();
        let mut partial = fresh.clone();
        partial.remove(&parties[1]);
        assert_eq!(decide_start(&parties, &partial, &no_aux, &ready), None);
        assert_eq!(
            decide_start(&parties, &fresh, &no_aux, &ready),
            Some(StartDecision::WaitForPrimes(vec![parties[2].clone()]))
        );
        ready.insert(parties[2].clone());
        assert_eq!(
            decide_start(&parties, &fresh, &no_aux, &ready),
            Some(StartDecision::Start { reuse_aux: false })
        );
        // Reused aux info needs no set at all.
        let same_aux: BTreeMap<NodeId, Vec<u8>> =
            parties.iter().map(|p| (p.clone(), vec![7; 32])).collect();
        assert_eq!(
            decide_start(&parties, &fresh, &same_aux, &BTreeSet::new()),
            Some(StartDecision::Start { reuse_aux: true })
        );
        // Aux info offered by some parties only: generated, so sets are needed.
        let mut mixed = same_aux.clone();
        mixed.insert(parties[0].clone(), Vec::new());
        assert!(matches!(
            decide_start(&parties, &fresh, &mixed, &BTreeSet::new()),
            Some(StartDecision::WaitForPrimes(m)) if m.len() == 3
        ));
        // A refusal aborts at once, sets or not.
        let mut refused = fresh.clone();
        refused.insert(parties[1].clone(), ReadyAnswer::Refused("pending".into()));
        assert!(matches!(
            decide_start(&parties, &refused, &no_aux, &BTreeSet::new()),
            Some(StartDecision::Abort(r)) if r.contains("pending")
        ));
        // Every party holds the key READY: it is reported, no set needed.
        let existing: BTreeMap<NodeId, ReadyAnswer> = parties
            .iter()
            .map(|p| (p.clone(), ReadyAnswer::Existing(vec![2; 33])))
            .collect();
        assert_eq!(
            decide_start(&parties, &existing, &no_aux, &BTreeSet::new()),
            Some(StartDecision::Start { reuse_aux: false })
        );
    }
}
