//! The runtime half of the sans-IO session layer: feeds the manager (`crate::session`) its
//! inputs and executes its effects against the key store, the p2p layer and the result
//! submitter, in order. A store operation that the manager waits for is awaited and its
//! answer fed back as the next input.

use std::collections::VecDeque;

use crate::session::mem_store::mark_error_applies;
use crate::session::{Effect, Input, MetricEvent, StoreOp, StoreReply};
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
                }),
            }
        }
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
        }
    }
}
