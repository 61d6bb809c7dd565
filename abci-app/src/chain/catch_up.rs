//! Jobs a node must (re)do from committed state alone, e.g. after a restart.

use seqmpc_module::job::Job;
use seqmpc_proto::NodeId;

use crate::chain::entries::{KeyStatus, ReshareStatus};
use crate::chain::state::ChainState;

/// Jobs `node` must (re)do after a restart, from committed state: deletions it has not
/// attested yet, keygens the chain ended in ERROR (so a stale local PENDING ends) and the
/// outcome of each READY key's latest resharing (promote, leave, or drop the staged share).
pub fn catch_up_jobs(state: &ChainState, node: &NodeId) -> Vec<Job> {
    let mut jobs = Vec::new();
    for key in state.keys().values() {
        // The latest resharing's outcome, for a node that died between the chain's decision
        // and acting on it: promote the staged share, delete the share of a committee it
        // left, or drop the staged share of a failed attempt. Both jobs are idempotent.
        match &key.reshare {
            Some(r)
                if key.status == KeyStatus::Ready
                    && (r.parties.contains(node) || r.old_parties.contains(node)) =>
            {
                match r.status {
                    ReshareStatus::Done => jobs.push(Job::ReshareDone {
                        key_id: key.key_id.clone(),
                        session: r.session,
                        old_parties: r.old_parties.clone(),
                        new_parties: r.parties.clone(),
                        generation: key.generation,
                    }),
                    ReshareStatus::Error => jobs.push(Job::ReshareFailed {
                        key_id: key.key_id.clone(),
                        session: r.session,
                        reason: r.error.clone().unwrap_or_default(),
                    }),
                    ReshareStatus::Pending => {}
                }
            }
            _ => {}
        }
        if key.status == KeyStatus::Error && key.parties.contains(node) {
            jobs.push(Job::KeyGenFailed {
                key_id: key.key_id.clone(),
                session: key.session,
                reason: key.error.clone().unwrap_or_default(),
            });
        }
    }
    jobs.extend(unattested_deletions(state, node));
    jobs
}

/// A Delete job for each key the committed state still waits for `node` to attest. A node's
/// KeyDeleted can be lost after CheckTx accepted it (it then fails at delivery, e.g. when a
/// restarted app answers CheckTx with the committed sequence while an earlier tx of the node
/// is still in the mempool), and deletion has no deadline: mpcd re-runs these (the Delete job
/// is idempotent) so a deletion never stays DELETING forever.
pub fn unattested_deletions(state: &ChainState, node: &NodeId) -> Vec<Job> {
    state
        .keys()
        .values()
        .filter(|k| {
            k.status == KeyStatus::Deleting
                && k.parties.contains(node)
                && !k.deleted_by.contains(node)
        })
        .map(|k| Job::Delete {
            key_id: k.key_id.clone(),
            parties: k.parties.clone(),
            height: state.height,
        })
        .collect()
}
