//! The session manager's side of CGGMP24 sessions: starting them on worker threads
//! ([`super::cggmp`]), forwarding their messages and recording their outcomes.

use super::*;
use crate::protocol::cggmp::{EcdsaSignature, Phase};

impl<S: SubmitResult> Node<S> {
    /// CGGMP24 worker threads alive (one per running CGGMP24 session).
    pub(super) fn cggmp_workers(&self) -> usize {
        let own = self
            .sessions
            .values()
            .filter(|s| match s {
                Session::Sign(s) => matches!(s.state, Some(SignEngine::Cggmp(_))),
                Session::Presign(_) => true,
            })
            .count();
        own + self.workers.len()
    }

    pub(super) fn worker_env(&self) -> Result<cggmp::WorkerEnv, ProtocolError> {
        if self.cggmp_workers() >= self.cfg.max_cggmp_workers {
            return Err(ProtocolError::Local(format!(
                "node overloaded: {} CGGMP24 sessions running",
                self.cfg.max_cggmp_workers
            )));
        }
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| ProtocolError::Bug(format!("no tokio runtime: {e}")))?;
        Ok(cggmp::WorkerEnv {
            me: self.cfg.me.clone(),
            transport: self.transport.clone(),
            rt,
            done: self.cggmp_done.clone(),
            timeout: self.cfg.cggmp_session_timeout,
            checkpoints: self.checkpoints.clone(),
        })
    }

    /// The aux info this node was configured with (fixtures), if it is `parties`'.
    pub(super) fn configured_aux(
        &self,
        parties: &[NodeId],
    ) -> Result<Option<cggmp::AuxOffer>, ProtocolError> {
        use crate::protocol::cggmp::AuxShare;
        let Some(a) = self.cfg.cggmp.aux.as_ref().filter(|a| a.parties == parties) else {
            return Ok(None);
        };
        Ok(Some(cggmp::AuxOffer {
            fingerprint: AuxShare::from_bytes(&a.share)?.fingerprint()?,
            share: a.share.clone(),
        }))
    }

    /// A CGGMP24 sign job. A prehashed digest: full interactive signing on a worker thread,
    /// at every signer at once. A full message: the plan ([`presign`]) decides between a
    /// presignature and the full protocol.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_cggmp_sign(
        &mut self,
        session: SessionId,
        request_id: &RequestId,
        key_id: &KeyId,
        message: Vec<u8>,
        prehashed: bool,
        signers: &[NodeId],
        key_version: crate::job::KeyVersion,
        received: Instant,
    ) -> Result<(), ProtocolError> {
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(ProtocolError::Unable(
                "node overloaded: too many sessions".into(),
            ));
        }
        let (share, generation, local_generation) = self.cggmp_share(key_id).await?;
        let local = crate::job::KeyVersion {
            generation: local_generation,
            session: generation,
        };
        key_version.check(key_id, &local)?;
        if !prehashed {
            let input = presign::CggmpSignInput { share, message };
            let key = (key_id.clone(), generation);
            self.start_planned_sign(session, request_id, key, input, signers, received)
                .await;
            return Ok(());
        }
        let task = cggmp::Task::Sign {
            share,
            signers: signers.to_vec(),
            data: SignData::prehashed(&message)?,
        };
        let worker = cggmp::spawn(session, task, self.worker_env()?)?;
        self.sessions.insert(
            session,
            Session::Sign(Box::new(SignSession {
                request_id: request_id.clone(),
                signers: signers.to_vec(),
                heard: BTreeSet::new(),
                cggmp_key: Some((key_id.clone(), generation)),
                state: Some(SignEngine::Cggmp(worker)),
                started: received,
            })),
        );
        Ok(())
    }

    /// A CGGMP24 message from an authenticated party of the session, to its worker.
    pub(super) async fn on_cggmp(&mut self, session: SessionId, from: NodeId, msg: CggmpMsg) {
        match self.sessions.get_mut(&session) {
            Some(Session::Sign(s)) => {
                s.heard.insert(from.clone());
                match &s.state {
                    // Partial signatures of an abandoned online step are of no use any more.
                    Some(SignEngine::Cggmp(w)) if msg.phase() != Phase::Online => {
                        w.forward(from, msg)
                    }
                    Some(SignEngine::Cggmp(_)) => {}
                    Some(SignEngine::Plan(_)) => self.on_plan_msg(session, from, msg).await,
                    None => {}
                }
            }
            Some(Session::Presign(p)) => p.worker.forward(from, msg),
            None => {}
        }
    }

    /// A CGGMP24 worker finished.
    pub(super) async fn on_cggmp_finished(&mut self, f: cggmp::Finished) {
        let session = f.session;
        // A worker of the session manager's (a keygen, or a resharing's aux info).
        if self.workers.remove(&session).is_some() {
            self.inbound.release(&session);
            let output = match f.output {
                cggmp::Output::Aux(res) => frost_session::WorkerOutput::Aux(res),
                cggmp::Output::Keygen(res) => frost_session::WorkerOutput::Keygen(res),
                cggmp::Output::Sign(_) | cggmp::Output::Presign(_) => {
                    frost_session::WorkerOutput::Aux(Err(ProtocolError::Bug(
                        "a worker of the session manager signed".into(),
                    )))
                }
            };
            return self
                .drive(frost_session::Input::WorkerDone { session, output })
                .await;
        }
        match (self.sessions.get(&session), f.output) {
            (Some(Session::Sign(_)), cggmp::Output::Sign(res)) => {
                self.cggmp_signed(session, res, false).await
            }
            (Some(Session::Presign(_)), cggmp::Output::Presign(res)) => {
                self.on_presign_finished(session, res).await
            }
            // The session ended meanwhile (timeout, abort, chain verdict) or a mismatch.
            _ => debug!(%session, "CGGMP24 worker outcome for no live session ignored"),
        }
    }

    /// A CGGMP24 sign session ended (full protocol or online step from a presignature).
    pub(super) async fn cggmp_signed(
        &mut self,
        session: SessionId,
        res: Result<EcdsaSignature, ProtocolError>,
        presigned: bool,
    ) {
        let Some(Session::Sign(s)) = self.sessions.get(&session) else {
            return;
        };
        let request_id = s.request_id.clone();
        let signers = s.signers.clone();
        let started = s.started;
        match res {
            Ok(sig) => {
                self.finish_session(session);
                // Every signer holds the signature; the first in order submits it, the others
                // hold it as a backup.
                let mut bytes = sig.rs.to_vec();
                bytes.push(sig.recovery_id);
                let rank = signers.iter().position(|p| *p == self.cfg.me).unwrap_or(0);
                if rank > 0 {
                    let due = Instant::now() + self.cfg.backup_submit * rank as u32;
                    debug!(%request_id, %session, rank, "ECDSA signature held as a backup");
                    self.cggmp_backups
                        .insert((request_id, session), (due, bytes));
                    return;
                }
                let us = started.elapsed().as_micros() as u64;
                self.metrics(|m| {
                    m.signatures_ok += 1;
                    push_bounded(&mut m.sign_latency_us, us, 10_000);
                    let op = if presigned { "sign_presigned" } else { "sign" };
                    m.latency.observe(op, Scheme::Cggmp24Secp256k1, us);
                    if presigned {
                        m.signatures_presigned += 1;
                        push_bounded(&mut m.presigned_sign_latency_us, us, 10_000);
                    }
                });
                info!(%request_id, us, presigned, recovery_id = sig.recovery_id, "ECDSA signature verified");
                self.submit.submit(TxMsg::SignResult {
                    request_id,
                    session,
                    outcome: Outcome::Ok(bytes),
                    signing_package: Vec::new(),
                });
            }
            Err(e) => {
                for p in signers.iter().filter(|p| **p != self.cfg.me) {
                    let abort = Payload::Abort(wire::SessionAbort {
                        reason: e.to_string(),
                    });
                    self.send(&session, p, abort).await;
                }
                self.fail_sign(session, request_id, e, None)
            }
        }
    }

    /// The chain ended a signing request (DONE, or ERROR at its deadline): its backups here
    /// are not needed, and a CGGMP24 session still running for it (a worker computing, or a
    /// plan waiting) stops, without a report.
    pub(super) fn cggmp_sign_ended(&mut self, request_id: &RequestId) {
        crate::session::drop_request(&mut self.cggmp_backups, request_id);
        let running: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s, Session::Sign(x) if x.request_id == *request_id))
            .map(|(id, _)| *id)
            .collect();
        for session in running {
            debug!(%request_id, %session, "the chain ended the request: CGGMP24 session closed");
            self.finish_session(session);
            self.evidence.remove(&session);
        }
    }

    /// Submits the CGGMP24 backup signatures that are due: the chain has not ended their
    /// request by then, so the first signer's submission has not landed.
    pub(super) fn submit_due_cggmp_backups(&mut self, now: Instant) {
        let due: Vec<(RequestId, SessionId)> = self
            .cggmp_backups
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (request_id, session) in due {
            let Some((_, bytes)) = self.cggmp_backups.remove(&(request_id.clone(), session)) else {
                continue;
            };
            info!(%request_id, %session, "submitting a backup ECDSA signature: the chain has none yet");
            self.metrics(|m| m.sign_backups_submitted += 1);
            self.submit.submit(TxMsg::SignResult {
                request_id,
                session,
                outcome: Outcome::Ok(bytes),
                signing_package: Vec::new(),
            });
        }
    }

    /// CGGMP24 signings that wait for a signer end here, naming it (silence, not proof):
    /// - one that sent nothing at all within `cggmp_silence_timeout` of the start (dead, or
    ///   partitioned, from the start);
    /// - one that stopped later: the worker has sent and received nothing for
    ///   `cggmp_silence_timeout`, and got fewer messages from it than it sent it
    ///   ([`cggmp::traffic`]; this node computing is never behind). In a signing of three or
    ///   more, that also names an honest signer that is a round behind because it waits for the
    ///   one that stopped (it is named by fewer than a majority, and names the stopped one
    ///   itself), or because a malicious signer withheld a round from it alone. In the latter
    ///   case the malicious one, naming it too, makes a majority; but the victim names the
    ///   malicious one back, and the chain leaves out a pair that names each other together
    ///   (`sign_attempt.rs`): a framing costs the framer as much as its victim.
    ///
    /// Every live signer reaches the same verdict on its own clock, so a dead signer is named
    /// by a majority of the others and the chain starts the next attempt without it at once.
    /// No abort goes to the others: each must name the silent signer itself.
    pub(super) fn report_silent_cggmp_signers(&mut self, now: Instant) {
        let limit = self.cfg.cggmp_silence_timeout;
        let me = &self.cfg.me;
        let silent: Vec<(SessionId, RequestId, Vec<NodeId>, &'static str)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| match s {
                Session::Sign(s) if s.cggmp_key.is_some() => {
                    let never: Vec<NodeId> = s
                        .signers
                        .iter()
                        .filter(|p| *p != me && !s.heard.contains(*p))
                        .cloned()
                        .collect();
                    if now.duration_since(s.started) > limit && !never.is_empty() {
                        return Some((*id, s.request_id.clone(), never, "nothing received from"));
                    }
                    let behind = match &s.state {
                        Some(SignEngine::Cggmp(w)) => w.behind(now, limit),
                        _ => Vec::new(),
                    };
                    (!behind.is_empty()).then(|| {
                        (
                            *id,
                            s.request_id.clone(),
                            behind,
                            "stopped: no next message from",
                        )
                    })
                }
                _ => None,
            })
            .collect();
        for (session, request_id, quiet, what) in silent {
            let names: Vec<&str> = quiet.iter().map(NodeId::as_str).collect();
            let e = ProtocolError::Aborted {
                reason: format!("{what} {} within {} s", names.join(", "), limit.as_secs()),
                culprits: quiet,
            };
            self.fail_sign(session, request_id, e, None);
        }
    }
}
