//! The key-store semantics the session manager relies on, over a map in memory: what each
//! [`StoreOp`] does and answers. The LevelDB runtime (`crate::node`) implements the same ops
//! over the encrypted store; the simulator and the manager's tests use this one.

use std::collections::BTreeMap;

use seqmpc_proto::{KeyId, SessionId};
use tracing::warn;

use super::{aux_offer_in, StoreOp, StoreReply};
use crate::store::{KeyRecord, ShareStatus};

/// Whether [`StoreOp::MarkError`] changes `rec`: only the record of `session`, and only a
/// PENDING one when `only_pending` (else any but an ERROR one).
pub fn mark_error_applies(rec: &KeyRecord, session: &SessionId, only_pending: bool) -> bool {
    rec.session == *session
        && if only_pending {
            rec.status == ShareStatus::Pending
        } else {
            rec.status != ShareStatus::Error
        }
}

/// What a node does with its records after a restart: a PENDING record cannot resume (nonces
/// and DKG secrets live only in memory), so it becomes ERROR and is never taken for a usable
/// key. Returns the records to write back.
pub fn recover(records: Vec<KeyRecord>) -> Vec<KeyRecord> {
    records
        .into_iter()
        .filter(|r| r.status == ShareStatus::Pending)
        .map(|mut r| {
            r.status = ShareStatus::Error;
            r.error = Some("interrupted: the node restarted during keygen".into());
            r
        })
        .collect()
}

/// Key records in memory (every write is durable at once).
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    records: BTreeMap<KeyId, KeyRecord>,
    /// Resharings' new shares, not READY yet.
    staged: BTreeMap<KeyId, KeyRecord>,
}

impl MemStore {
    /// Runs one operation.
    pub fn apply(&mut self, op: StoreOp) -> StoreReply {
        match op {
            StoreOp::Get(key_id) => StoreReply::Record(self.records.get(&key_id).cloned()),
            StoreOp::InsertIfAbsent(rec) => match self.records.get(&rec.key_id) {
                Some(existing) => StoreReply::Record(Some(existing.clone())),
                None => {
                    self.records.insert(rec.key_id.clone(), rec);
                    StoreReply::Record(None)
                }
            },
            StoreOp::Put(rec) => {
                self.records.insert(rec.key_id.clone(), rec);
                StoreReply::Done
            }
            StoreOp::MarkError {
                key_id,
                session,
                reason,
                only_pending,
            } => {
                if let Some(rec) = self.records.get_mut(&key_id) {
                    if mark_error_applies(rec, &session, only_pending) {
                        rec.status = ShareStatus::Error;
                        rec.error = Some(reason);
                        rec.share = None;
                    }
                }
                StoreReply::Done
            }
            StoreOp::Delete(key_id) => StoreReply::Deleted(self.records.remove(&key_id).is_some()),
            StoreOp::GetGenerations(key_id) => StoreReply::Generations {
                current: self.records.get(&key_id).cloned(),
                staged: self.staged.get(&key_id).cloned(),
            },
            StoreOp::FindAux(parties) => StoreReply::Aux(
                aux_offer_in(self.records.values(), &parties).unwrap_or_else(|e| {
                    warn!(error = %e, "cannot read reusable aux info");
                    None
                }),
            ),
            StoreOp::PutStaged(rec) => {
                self.staged.insert(rec.key_id.clone(), rec);
                StoreReply::Done
            }
            StoreOp::PromoteStaged { key_id, generation } => {
                let promoted = match self.staged.get(&key_id) {
                    Some(r) if r.generation == generation => {
                        self.staged.remove(&key_id).map(|mut r| {
                            r.status = ShareStatus::Ready;
                            r.error = None;
                            self.records.insert(key_id.clone(), r);
                        })
                    }
                    _ => None,
                };
                StoreReply::Promoted {
                    promoted: promoted.is_some(),
                    current: self.records.get(&key_id).cloned(),
                }
            }
            StoreOp::LeaveCommittee { key_id, generation } => {
                let old = self
                    .records
                    .get(&key_id)
                    .is_some_and(|r| r.generation < generation);
                if old {
                    self.records.remove(&key_id);
                }
                if self
                    .staged
                    .get(&key_id)
                    .is_some_and(|r| r.generation <= generation)
                {
                    self.staged.remove(&key_id);
                }
                StoreReply::Deleted(old)
            }
            StoreOp::DropStaged { key_id, session } => {
                let ours = self
                    .staged
                    .get(&key_id)
                    .is_some_and(|r| r.session == session);
                if ours {
                    self.staged.remove(&key_id);
                }
                StoreReply::Deleted(ours)
            }
        }
    }

    /// Every staged record, by key id.
    pub fn staged(&self) -> impl Iterator<Item = &KeyRecord> {
        self.staged.values()
    }

    /// Every record, by key id.
    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.records.values()
    }

    /// A node restarted: [`recover`] its records.
    /// What a store restored from an old backup holds: every READY record as of an earlier
    /// generation, made by another session (the key and the share bytes stay; the simulator's
    /// `stale-share` scenario).
    pub fn roll_back(&mut self) {
        for r in self.records.values_mut() {
            if r.status == ShareStatus::Ready {
                r.generation = r.generation.saturating_sub(1);
                r.session = SessionId([0xee; 32]);
            }
        }
    }

    /// A restart: what recovery makes of the records (see [`recover`]).
    pub fn restart(&mut self) {
        let all = self.records.values().cloned().collect();
        for r in recover(all) {
            self.records.insert(r.key_id.clone(), r);
        }
    }
}
