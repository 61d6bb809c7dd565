//! The runtime half of the sans-IO session layer: feeds the manager (`crate::session`) its
//! inputs and executes its effects against the key store, the p2p layer and the result
//! submitter, in order. A store operation that the manager waits for is awaited and its
//! answer fed back as the next input.

use std::collections::VecDeque;

use crate::session::mem_store::mark_error_applies;
use crate::session::{Effect, Input, MetricEvent, StoreOp, StoreReply, WorkerOutput, WorkerTask};
use crate::store::ShareStatus;

use super::*;

/// Milliseconds since the Unix epoch: the clock of the session manager (block times are on
/// the same clock, so a replayed job's staleness is measured against them).
pub(super) fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<S: SubmitResult> Node<S> {
    /// Hands one input to the session manager and executes what it asks for.
    pub(super) async fn drive(&mut self, input: Input) {
        let mut queue: VecDeque<Effect> = self.frost.handle(now_ms(), input, &mut OsRng).into();
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
                        queue.extend(self.frost.handle(now_ms(), input, &mut OsRng));
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
                    MetricEvent::SignBackupSubmitted => x.sign_backups_submitted += 1,
                    MetricEvent::Dropped => x.messages_dropped += 1,
                    MetricEvent::ReshareStaged(scheme, us) => {
                        push_bounded(&mut x.reshare_latency_us, us, 1000);
                        x.latency.observe("reshare", scheme, us);
                    }
                    MetricEvent::ReshareOk => x.reshares_ok += 1,
                }),
                Effect::StartWorker { session, task } => {
                    if let Err(e) = self.start_worker(session, task).await {
                        let input = Input::WorkerDone {
                            session,
                            output: WorkerOutput::Aux(Err(e)),
                        };
                        queue.extend(self.frost.handle(now_ms(), input, &mut OsRng));
                    }
                }
                Effect::ToWorker { session, from, msg } => match self.workers.get(&session) {
                    Some(w) => w.forward(from, msg),
                    None => debug!(%session, %from, "CGGMP24 message for no worker dropped"),
                },
                Effect::StopWorker(session) => {
                    self.workers.remove(&session);
                }
            }
        }
    }

    /// Starts a worker the session manager asked for.
    async fn start_worker(
        &mut self,
        session: SessionId,
        task: WorkerTask,
    ) -> Result<(), ProtocolError> {
        let env = self.worker_env()?;
        let WorkerTask::Aux { parties } = task;
        let primes = self.primes.take_unreserved().await?.ok_or_else(|| {
            ProtocolError::Local(
                "no safe-prime set ready yet for the new committee's aux info (generating in \
                 the background)"
                    .into(),
            )
        })?;
        let worker = cggmp::spawn(session, cggmp::Task::Aux { parties, primes }, env)?;
        self.workers.insert(session, worker);
        Ok(())
    }

    /// One store operation of the session manager.
    async fn store_op(&mut self, op: StoreOp) -> Result<StoreReply, String> {
        self.store_op_inner(op).await.map_err(|e| e.to_string())
    }

    async fn store_op_inner(
        &mut self,
        op: StoreOp,
    ) -> Result<StoreReply, crate::store::StoreError> {
        let store = self.store.clone();
        match op {
            StoreOp::Get(key_id) => store.get(&key_id).await.map(StoreReply::Record),
            StoreOp::InsertIfAbsent(rec) => {
                store.insert_if_absent(rec).await.map(StoreReply::Record)
            }
            StoreOp::Put(rec) => {
                let tracked = KeyRecord {
                    share: None,
                    ..rec.clone()
                };
                store.put(rec).await?;
                self.track_cggmp_key(&tracked);
                Ok(StoreReply::Done)
            }
            StoreOp::MarkError {
                key_id,
                session,
                reason,
                only_pending,
            } => {
                if let Some(mut rec) = store.get(&key_id).await? {
                    if mark_error_applies(&rec, &session, only_pending) {
                        let had_share = rec.share.is_some();
                        rec.status = ShareStatus::Error;
                        rec.error = Some(reason);
                        rec.share = None;
                        // A share stored before the chain ended the keygen ERROR is erased
                        // like a deleted one.
                        match had_share {
                            true => store.put_erasing(rec).await?,
                            false => store.put(rec).await?,
                        }
                    }
                }
                Ok(StoreReply::Done)
            }
            StoreOp::Delete(key_id) => {
                let existed = store.delete(&key_id).await?;
                tracing::info!(%key_id, existed, "key share deleted");
                Ok(StoreReply::Deleted(existed))
            }
            StoreOp::GetGenerations(key_id) => Ok(StoreReply::Generations {
                current: store.get(&key_id).await?,
                staged: store.get_staged(&key_id).await?,
            }),
            StoreOp::FindAux(parties) => Ok(StoreReply::Aux(match self.find_aux(&parties).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(error = %e, "cannot read reusable aux info; offering none");
                    None
                }
            })),
            StoreOp::PutStaged(rec) => store.put_staged(rec).await.map(|()| StoreReply::Done),
            StoreOp::PromoteStaged { key_id, generation } => {
                let promoted = store.promote_staged(&key_id, generation).await?;
                if let Some(rec) = &promoted {
                    // Its presignatures, tracked subsets and decoded shares are of the old
                    // generation.
                    self.forget_key(&key_id);
                    self.untrack_cggmp_key(&key_id);
                    self.track_cggmp_key(rec);
                }
                Ok(StoreReply::Promoted {
                    promoted: promoted.is_some(),
                    current: match promoted {
                        Some(rec) => Some(rec),
                        None => store.get(&key_id).await?,
                    },
                })
            }
            StoreOp::LeaveCommittee { key_id, generation } => {
                let old = store
                    .get(&key_id)
                    .await?
                    .is_some_and(|r| r.generation < generation);
                if old {
                    self.forget_key(&key_id);
                    self.untrack_cggmp_key(&key_id);
                    store.delete(&key_id).await?;
                }
                if store
                    .get_staged(&key_id)
                    .await?
                    .is_some_and(|r| r.generation <= generation)
                {
                    store.delete_staged(&key_id).await?;
                }
                Ok(StoreReply::Deleted(old))
            }
            StoreOp::DropStaged { key_id, session } => {
                let ours = store
                    .get_staged(&key_id)
                    .await?
                    .is_some_and(|r| r.session == session);
                if ours {
                    store.delete_staged(&key_id).await?;
                    tracing::info!(%key_id, %session, "failed resharing: staged share deleted");
                }
                Ok(StoreReply::Deleted(ours))
            }
        }
    }
}
