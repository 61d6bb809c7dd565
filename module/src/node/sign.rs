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
        let key = self.load_key(key_id).await?;
        let (signing, out) =
            AnySigning::start(session, &self.cfg.me, signers, message, key, &mut OsRng)?;
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

    pub(super) fn fail_sign(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        e: ProtocolError,
    ) {
        warn!(%request_id, %session, error = %e, "sign session failed");
        self.sessions.remove(&session);
        self.finished.insert(session, Instant::now());
        self.metrics(|m| m.signs_failed += 1);
        self.submit.submit(TxMsg::SignResult {
            request_id,
            session,
            outcome: Outcome::Failed {
                error: e.to_string(),
                culprits: e.culprits().to_vec(),
                evidence: Vec::new(),
            },
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
                    });
                }
            }
            Err(e) => {
                // Tell the other signers so they stop waiting.
                let signers = s.signers.clone();
                for p in signers.iter().filter(|p| **p != self.cfg.me) {
                    self.send(
                        &session,
                        p,
                        Payload::Abort(wire::SessionAbort {
                            reason: e.to_string(),
                        }),
                    )
                    .await;
                }
                self.fail_sign(session, request_id, e)
            }
        }
    }
}
