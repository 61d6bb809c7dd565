//! The runtime half of the sans-IO session layer: feeds the manager (`crate::session`) its
//! inputs, with the time of the `clock` port, and executes its effects against its ports (the
//! key store, `share_store`; the network, `transport`; the result submitter; CGGMP24 workers
//! and the safe-prime pool), in order. A store operation that the manager waits for is
//! awaited and its answer fed back as the next input.

use std::collections::VecDeque;

use crate::session::{Effect, Input, MetricEvent, StoreOp, StoreReply, WorkerOutput, WorkerTask};

use super::*;

impl<S: SubmitResult> Node<S> {
    /// Hands one input to the session manager and executes what it asks for.
    pub(super) async fn drive(&mut self, input: Input) {
        let mut queue: VecDeque<Effect> = self
            .frost
            .handle(self.clock.now_ms(), input, &mut OsRng)
            .into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Send {
                    session,
                    to,
                    payload,
                } => self.send(&session, &to, payload).await,
                Effect::Store { op, token } => {
                    let reply = self.store_op(op).await;
                    if let Some(token) = token {
                        let input = Input::StoreReply { token, reply };
                        queue.extend(self.frost.handle(self.clock.now_ms(), input, &mut OsRng));
                    } else if let Err(e) = reply {
                        warn!(error = %e, "key store operation failed");
                    }
                }
                Effect::Submit(msg) => self.submit.submit(msg),
                Effect::Checkpoint(point) => self.checkpoint(point),
                Effect::Metric(m) => self.metrics(|x| match m {
                    MetricEvent::KeygenOk(scheme, us) => {
                        x.keygens_ok += 1;
                        push_bounded(&mut x.keygen_latency_us, us, 1000);
                        x.latency.observe("keygen", scheme, us);
                    }
                    MetricEvent::KeygenFailed => x.keygens_failed += 1,
                    MetricEvent::SignOk(scheme, us) => {
                        x.signatures_ok += 1;
                        push_bounded(&mut x.sign_latency_us, us, 10_000);
                        x.latency.observe("sign", scheme, us);
                    }
                    MetricEvent::SignFailed => x.signs_failed += 1,
                    MetricEvent::EcdsaSignOk { us, presigned } => {
                        x.signatures_ok += 1;
                        push_bounded(&mut x.sign_latency_us, us, 10_000);
                        let op = if presigned { "sign_presigned" } else { "sign" };
                        x.latency.observe(op, Scheme::Cggmp24Secp256k1, us);
                        if presigned {
                            x.signatures_presigned += 1;
                            push_bounded(&mut x.presigned_sign_latency_us, us, 10_000);
                        }
                    }
                    MetricEvent::PresignGenerated => {
                        x.cggmp_presignatures_generated =
                            x.cggmp_presignatures_generated.saturating_add(1)
                    }
                    MetricEvent::SignBackupSubmitted => x.sign_backups_submitted += 1,
                    MetricEvent::Dropped => x.messages_dropped += 1,
                    MetricEvent::ReshareStaged(scheme, us) => {
                        push_bounded(&mut x.reshare_latency_us, us, 1000);
                        x.latency.observe("reshare", scheme, us);
                    }
                    MetricEvent::ReshareOk => x.reshares_ok += 1,
                }),
                Effect::StartWorker { session, task } => {
                    let failed = |e| WorkerOutput::failed(&task, e);
                    let started = self.start_worker(session, task.clone()).await;
                    if let Err(e) = started {
                        let output = failed(e);
                        let input = Input::WorkerDone { session, output };
                        queue.extend(self.frost.handle(self.clock.now_ms(), input, &mut OsRng));
                    }
                }
                Effect::ToWorker { session, from, msg } => {
                    let Some(w) = self.workers.get(&session) else {
                        debug!(%session, %from, "CGGMP24 message for no worker dropped");
                        continue;
                    };
                    // What a peer may make this node hold for its sessions ([`budget`]).
                    let bytes = msg.payload().len().saturating_add(2);
                    match self.inbound.charge(session, &from, bytes) {
                        Ok(()) => w.forward(from, msg),
                        Err(e) => {
                            warn!(%session, %from, error = %e, "message over its sender's byte budget dropped");
                            self.metrics(|x| x.messages_dropped += 1);
                        }
                    }
                }
                Effect::ReservePrimes(session) => {
                    if self.primes.reserve(session) {
                        let input = Input::PrimesReserved(session);
                        queue.extend(self.frost.handle(self.clock.now_ms(), input, &mut OsRng));
                    } else {
                        info!(%session, "no safe-prime set free here: this keygen waits for one");
                    }
                }
                Effect::StopWorker(session) => {
                    self.workers.remove(&session);
                    self.inbound.release(&session);
                    self.primes.release(&session);
                }
            }
        }
    }

    /// A CGGMP24 worker finished: its output goes to the session manager.
    pub(super) async fn on_cggmp_finished(&mut self, f: cggmp::Finished) {
        let session = f.session;
        if self.workers.remove(&session).is_none() {
            // Stopped meanwhile (the session ended): nobody waits for it.
            debug!(%session, "output of a stopped CGGMP24 worker ignored");
            return;
        }
        self.inbound.release(&session);
        let output = match f.output {
            cggmp::Output::Aux(res) => WorkerOutput::Aux(res),
            cggmp::Output::Keygen(res) => WorkerOutput::Keygen(res),
            cggmp::Output::Sign(res) => WorkerOutput::Sign(res),
            cggmp::Output::Presign(res) => WorkerOutput::Presign(res),
        };
        self.drive(Input::WorkerDone { session, output }).await
    }

    /// What a new worker thread needs, unless the node runs as many as it may.
    fn worker_env(&self) -> Result<cggmp::WorkerEnv, ProtocolError> {
        if self.workers.len() >= self.cfg.max_cggmp_workers {
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
    fn configured_aux(&self, parties: &[NodeId]) -> Result<Option<cggmp::AuxOffer>, ProtocolError> {
        use crate::protocol::cggmp::AuxShare;
        let Some(a) = self.cfg.cggmp.aux.as_ref().filter(|a| a.parties == parties) else {
            return Ok(None);
        };
        Ok(Some(cggmp::AuxOffer {
            fingerprint: AuxShare::from_bytes(&a.share)?.fingerprint()?,
            share: a.share.clone(),
        }))
    }

    /// Starts a worker the session manager asked for.
    async fn start_worker(
        &mut self,
        session: SessionId,
        task: WorkerTask,
    ) -> Result<(), ProtocolError> {
        let env = self.worker_env()?;
        // A set taken out of the pool but unused (the worker did not start) goes back.
        let (task, taken) = match task {
            WorkerTask::Aux { parties } => {
                // Reserved: every new party held one before any started.
                let primes = self.primes.take(&session).await?.ok_or_else(|| {
                    ProtocolError::Local(
                        "aux info started before this node held a safe-prime set for it".into(),
                    )
                })?;
                let taken = zeroize::Zeroizing::new(primes.to_vec());
                (cggmp::Task::Aux { parties, primes }, Some(taken))
            }
            WorkerTask::Keygen {
                parties,
                threshold,
                reuse: Some(offer),
            } => {
                // The committee's aux info is reused: no set needed.
                self.primes.release(&session);
                let aux = cggmp::AuxPlan::Existing(offer.share);
                (
                    cggmp::Task::Keygen {
                        parties,
                        threshold,
                        aux,
                    },
                    None,
                )
            }
            WorkerTask::Keygen {
                parties,
                threshold,
                reuse: None,
            } => {
                // Taken only now: the coordinator starts once every party holds a reserved
                // set, so no set is consumed by a keygen that cannot run.
                let primes = self.primes.take(&session).await?.ok_or_else(|| {
                    ProtocolError::Local(
                        "the coordinator started aux info before this node held a safe-prime \
                         set for it"
                            .into(),
                    )
                })?;
                let taken = zeroize::Zeroizing::new(primes.to_vec());
                let aux = cggmp::AuxPlan::Generate(primes);
                (
                    cggmp::Task::Keygen {
                        parties,
                        threshold,
                        aux,
                    },
                    Some(taken),
                )
            }
            WorkerTask::Sign {
                share,
                signers,
                data,
            } => {
                let share = zeroize::Zeroizing::new(share.0.to_vec());
                (
                    cggmp::Task::Sign {
                        share,
                        signers,
                        data,
                    },
                    None,
                )
            }
            WorkerTask::Presign { share, signers } => {
                let share = zeroize::Zeroizing::new(share.0.to_vec());
                (cggmp::Task::Presign { share, signers }, None)
            }
        };
        match cggmp::spawn(session, task, env) {
            Ok(worker) => {
                self.workers.insert(session, worker);
                Ok(())
            }
            Err(e) => {
                if let Some(set) = taken {
                    self.primes.put_back(set).await;
                }
                Err(e)
            }
        }
    }

    /// One store operation of the session manager, through the store port, and this runtime's
    /// bookkeeping around it.
    async fn store_op(&mut self, op: StoreOp) -> Result<StoreReply, String> {
        // The node's configured aux info (fixtures) comes before any the store holds.
        if let StoreOp::FindAux(parties) = &op {
            match self.configured_aux(parties) {
                Ok(Some(offer)) => return Ok(StoreReply::Aux(Some(offer))),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "configured aux info does not decode"),
            }
        }
        let is_delete = matches!(op, StoreOp::Delete(_));
        let key_id = match &op {
            StoreOp::Delete(k)
            | StoreOp::PromoteStaged { key_id: k, .. }
            | StoreOp::LeaveCommittee { key_id: k, .. } => Some(k.clone()),
            _ => None,
        };
        let reply = self
            .share_store
            .apply(op)
            .await
            .map_err(|e| e.to_string())?;
        match (&reply, key_id) {
            // Decoded shares of the old generation go (the manager follows its presignature
            // pools itself).
            (
                StoreReply::Promoted {
                    promoted: true,
                    current: Some(_),
                },
                Some(key_id),
            ) => self.forget_key(&key_id),
            (StoreReply::Deleted(deleted), Some(key_id)) => {
                if *deleted {
                    self.forget_key(&key_id);
                }
                if is_delete {
                    tracing::info!(%key_id, existed = deleted, "key share deleted");
                }
            }
            _ => {}
        }
        Ok(reply)
    }
}
