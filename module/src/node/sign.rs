//! FROST signing sessions.

use super::*;

impl<S: SubmitResult> Node<S> {
    pub(super) async fn start_sign(
        &mut self,
        session: SessionId,
        request_id: &RequestId,
        key_id: &KeyId,
        message: Vec<u8>,
        signers: &[NodeId],
        received: Instant,
    ) -> Result<(), ProtocolError> {
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(ProtocolError::Local(
                "node overloaded: too many sessions".into(),
            ));
        }
        let (key, generation) = self.load_key(key_id).await?;
        let (signing, out) = AnySigning::start(
            session,
            &self.cfg.me,
            signers,
            message,
            key,
            generation,
            &mut OsRng,
        )?;
        self.sessions.insert(
            session,
            Session::Sign(Box::new(SignSession {
                request_id: request_id.clone(),
                signers: signers.to_vec(),
                cggmp_key: None,
                state: Some(SignEngine::Frost(signing)),
                started: received,
            })),
        );
        for o in out {
            self.send(&session, &o.to, sign_payload(o.msg)).await;
        }
        crash_point!(self, "sign-after-commitments");
        Ok(())
    }

    /// Ends a FROST signing session ERROR and reports it. With `signing_package` (the
    /// aggregator's, when shares did not verify) the report quotes it with the culprits'
    /// signed shares, for the chain to check (`crate::evidence`).
    pub(super) fn fail_sign(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        e: ProtocolError,
        signing_package: Option<Vec<u8>>,
    ) {
        warn!(%request_id, %session, error = %e, "sign session failed");
        self.sessions.remove(&session);
        self.finished.insert(session, Instant::now());
        self.metrics(|m| m.signs_failed += 1);
        let evidence = self.evidence(&session, e.culprits());
        self.evidence.remove(&session);
        let signing_package = signing_package
            .filter(|p| !evidence.is_empty() && p.len() <= MAX_SIGNING_PACKAGE_BYTES)
            .unwrap_or_default();
        self.submit.submit(TxMsg::SignResult {
            request_id,
            session,
            outcome: Outcome::Failed {
                error: e.to_string(),
                culprits: e.culprits().to_vec(),
                evidence,
            },
            signing_package,
        });
    }

    pub(super) async fn on_sign(&mut self, session: SessionId, from: NodeId, msg: SignMsg) {
        let Some(Session::Sign(s)) = self.sessions.get_mut(&session) else {
            return;
        };
        let state = match s.state.take() {
            Some(SignEngine::Frost(st)) => st,
            other => {
                s.state = other;
                return;
            }
        };
        let request_id = s.request_id.clone();
        match state.handle(&from, msg) {
            Ok(AnySignProgress::Continue(st, out)) => {
                s.state = Some(SignEngine::Frost(st));
                for o in out {
                    self.send(&session, &o.to, sign_payload(o.msg)).await;
                }
            }
            Ok(AnySignProgress::Finished { signature, out }) => {
                let started = s.started;
                self.finish_session(session);
                self.evidence.remove(&session);
                crash_point!(self, "sign-before-share", when: signature.is_none());
                for o in out {
                    self.send(&session, &o.to, sign_payload(o.msg)).await;
                }
                if let Some(signature) = signature {
                    let us = started.elapsed().as_micros() as u64;
                    self.metrics(|m| {
                        m.signatures_ok += 1;
                        push_bounded(&mut m.sign_latency_us, us, 10_000);
                    });
                    debug!(%request_id, us, "signature verified");
                    self.submit.submit(TxMsg::SignResult {
                        request_id,
                        session,
                        outcome: Outcome::Ok(signature),
                        signing_package: Vec::new(),
                    });
                }
            }
            Ok(AnySignProgress::Blamed {
                error,
                signing_package,
            }) => {
                self.abort_sign(session, request_id, error, Some(signing_package))
                    .await
            }
            Err(e) => self.abort_sign(session, request_id, e, None).await,
        }
    }

    /// Tells the other signers to stop waiting, then fails the session.
    async fn abort_sign(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        e: ProtocolError,
        signing_package: Option<Vec<u8>>,
    ) {
        let Some(Session::Sign(s)) = self.sessions.get(&session) else {
            return;
        };
        let signers = s.signers.clone();
        for p in signers.iter().filter(|p| **p != self.cfg.me) {
            let reason = e.to_string();
            self.send(&session, p, Payload::Abort(wire::SessionAbort { reason }))
                .await;
        }
        self.fail_sign(session, request_id, e, signing_package)
    }
}
