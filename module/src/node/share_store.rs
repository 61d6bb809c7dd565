//! The runtime's port to the key store for the session manager's operations ([`ShareStore`]):
//! what each [`StoreOp`] does and answers, over the encrypted LevelDB store ([`StoreHandle`]).
//! `crate::session::mem_store` gives the same semantics in memory to the simulator and the
//! manager's tests; the conformance test below runs one sequence of operations against both
//! and requires the same answers, so the simulator's store cannot drift from mpcd's.
//!
//! The runtime's own bookkeeping around an operation (the CGGMP24 keys it tracks, the decoded
//! shares it caches, the node's configured aux info) stays in `drive.rs`.

use futures::future::BoxFuture;

use crate::session::mem_store::mark_error_applies;
use crate::session::{aux_offer_in, StoreOp, StoreReply};
use crate::store::{KeyRecord, ShareStatus, StoreError, StoreHandle};

/// Runs the session manager's store operations, one at a time and in order; each is durable
/// when it answers.
pub(crate) trait ShareStore: Send + Sync {
    /// Runs `op`.
    fn apply(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreError>>;
}

impl ShareStore for StoreHandle {
    fn apply(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreError>> {
        Box::pin(async move {
            match op {
                StoreOp::Get(key_id) => self.get(&key_id).await.map(StoreReply::Record),
                StoreOp::InsertIfAbsent(rec) => {
                    self.insert_if_absent(rec).await.map(StoreReply::Record)
                }
                StoreOp::Put(rec) => self.put(rec).await.map(|()| StoreReply::Done),
                StoreOp::MarkError {
                    key_id,
                    session,
                    reason,
                    only_pending,
                } => {
                    if let Some(mut rec) = self.get(&key_id).await? {
                        if mark_error_applies(&rec, &session, only_pending) {
                            let had_share = rec.share.is_some();
                            rec.status = ShareStatus::Error;
                            rec.error = Some(reason);
                            rec.share = None;
                            // A share stored before the chain ended the keygen ERROR is erased
                            // like a deleted one.
                            match had_share {
                                true => self.put_erasing(rec).await?,
                                false => self.put(rec).await?,
                            }
                        }
                    }
                    Ok(StoreReply::Done)
                }
                StoreOp::Delete(key_id) => self.delete(&key_id).await.map(StoreReply::Deleted),
                StoreOp::GetGenerations(key_id) => Ok(StoreReply::Generations {
                    current: self.get(&key_id).await?,
                    staged: self.get_staged(&key_id).await?,
                }),
                StoreOp::FindAux(parties) => {
                    let records = self.list().await?;
                    // A share that does not decode offers nothing (the keygen generates).
                    let offer = aux_offer_in(&records, &parties).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot read reusable aux info; offering none");
                        None
                    });
                    Ok(StoreReply::Aux(offer))
                }
                StoreOp::PutStaged(rec) => self.put_staged(rec).await.map(|()| StoreReply::Done),
                StoreOp::PromoteStaged { key_id, generation } => {
                    let promoted = self.promote_staged(&key_id, generation).await?;
                    Ok(StoreReply::Promoted {
                        promoted: promoted.is_some(),
                        current: match promoted {
                            Some(rec) => Some(rec),
                            None => self.get(&key_id).await?,
                        },
                    })
                }
                StoreOp::LeaveCommittee { key_id, generation } => {
                    let old = self
                        .get(&key_id)
                        .await?
                        .is_some_and(|r: KeyRecord| r.generation < generation);
                    if old {
                        self.delete(&key_id).await?;
                    }
                    if self
                        .get_staged(&key_id)
                        .await?
                        .is_some_and(|r| r.generation <= generation)
                    {
                        self.delete_staged(&key_id).await?;
                    }
                    Ok(StoreReply::Deleted(old))
                }
                StoreOp::DropStaged { key_id, session } => {
                    let ours = self
                        .get_staged(&key_id)
                        .await?
                        .is_some_and(|r| r.session == session);
                    if ours {
                        self.delete_staged(&key_id).await?;
                    }
                    Ok(StoreReply::Deleted(ours))
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use seqmpc_proto::{KeyId, SessionId};

    use super::*;
    use crate::session::mem_store::MemStore;
    use crate::store::tests::{open, sample, TestStore};
    use crate::store::SecretShare;

    fn record(
        session: u8,
        status: ShareStatus,
        generation: u64,
        share: Option<&[u8]>,
    ) -> KeyRecord {
        KeyRecord {
            session: SessionId([session; 32]),
            status,
            generation,
            share: share.map(|s| SecretShare::new(s.to_vec())),
            ..sample("k", b"")
        }
    }

    /// A reply as text: records by their view and share bytes (the share is redacted in Debug).
    fn norm(reply: &StoreReply) -> String {
        let rec = |r: &Option<KeyRecord>| {
            r.as_ref().map(|r| {
                format!(
                    "{:?} share={:?}",
                    r.view(),
                    r.share.as_ref().map(|s| s.expose().to_vec())
                )
            })
        };
        match reply {
            StoreReply::Record(r) => format!("Record({:?})", rec(r)),
            StoreReply::Done => "Done".into(),
            StoreReply::Deleted(b) => format!("Deleted({b})"),
            StoreReply::Generations { current, staged } => {
                format!("Generations({:?}, {:?})", rec(current), rec(staged))
            }
            StoreReply::Aux(a) => format!("Aux({:?})", a.as_ref().map(|a| a.fingerprint)),
            StoreReply::Promoted { promoted, current } => {
                format!("Promoted({promoted}, {:?})", rec(current))
            }
        }
    }

    #[tokio::test]
    async fn share_store__should_answer_every_operation_as_the_simulators_store_does() {
        let k = || KeyId::new("k").unwrap();
        let ops = vec![
            StoreOp::Get(k()),
            StoreOp::InsertIfAbsent(record(1, ShareStatus::Pending, 1, None)),
            StoreOp::InsertIfAbsent(record(2, ShareStatus::Pending, 1, None)),
            // Another session's failure leaves the record alone; its own marks it ERROR.
            StoreOp::MarkError {
                key_id: k(),
                session: SessionId([2; 32]),
                reason: "other".into(),
                only_pending: true,
            },
            StoreOp::Put(record(1, ShareStatus::Ready, 1, Some(b"gen1"))),
            StoreOp::MarkError {
                key_id: k(),
                session: SessionId([1; 32]),
                reason: "local".into(),
                only_pending: true,
            },
            StoreOp::Get(k()),
            StoreOp::FindAux(record(1, ShareStatus::Ready, 1, None).parties),
            // A resharing: staged beside the READY share, then promoted; a replay finds none.
            StoreOp::GetGenerations(k()),
            StoreOp::PutStaged(record(3, ShareStatus::Pending, 2, Some(b"gen2"))),
            StoreOp::GetGenerations(k()),
            StoreOp::PromoteStaged {
                key_id: k(),
                generation: 3,
            },
            StoreOp::PromoteStaged {
                key_id: k(),
                generation: 2,
            },
            StoreOp::PromoteStaged {
                key_id: k(),
                generation: 2,
            },
            // A failed resharing drops only what its own session staged.
            StoreOp::PutStaged(record(4, ShareStatus::Pending, 3, Some(b"gen3"))),
            StoreOp::DropStaged {
                key_id: k(),
                session: SessionId([5; 32]),
            },
            StoreOp::DropStaged {
                key_id: k(),
                session: SessionId([4; 32]),
            },
            // Leaving the committee deletes older generations only, never a later one.
            StoreOp::PutStaged(record(6, ShareStatus::Pending, 4, Some(b"gen4"))),
            StoreOp::LeaveCommittee {
                key_id: k(),
                generation: 2,
            },
            StoreOp::LeaveCommittee {
                key_id: k(),
                generation: 3,
            },
            StoreOp::GetGenerations(k()),
            StoreOp::LeaveCommittee {
                key_id: k(),
                generation: 4,
            },
            StoreOp::GetGenerations(k()),
            StoreOp::Put(record(7, ShareStatus::Ready, 5, Some(b"gen5"))),
            StoreOp::MarkError {
                key_id: k(),
                session: SessionId([7; 32]),
                reason: "chain".into(),
                only_pending: false,
            },
            StoreOp::Get(k()),
            StoreOp::Delete(k()),
            StoreOp::Delete(k()),
        ];
        let t = TestStore::new();
        let leveldb = StoreHandle::spawn(open(&t)).unwrap();
        let mut mem = MemStore::default();
        for (i, op) in ops.into_iter().enumerate() {
            let want = norm(&mem.apply(op.clone()));
            let got = norm(&leveldb.apply(op.clone()).await.unwrap());
            assert_eq!(got, want, "operation {i}: {op:?}");
        }
    }
}
