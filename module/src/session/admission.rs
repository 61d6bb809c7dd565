//! The one admission policy: whether a committed job runs on this node now.
//!
//! Jobs come from three sources: the chain's blocks after each Commit (live, or replayed to a
//! node that was down or cut off), the committed state at start (`catch_up_jobs`: outcomes a
//! node must act on again) and the daemon's periodic look at deletions the chain still waits
//! for. Every job of every source passes [`Admission::admit`] before it touches a session; the
//! session manager calls it for every session job, and the simulator runs it on every
//! simulated node.
//!
//! A session job (keygen, signing, resharing) does not run when:
//! - this node is not one of its parties ([`Skip::NotAParty`]);
//! - it already ran here, or runs now ([`Skip::Finished`], [`Skip::Running`]);
//! - its block is older than the local session timeout: the session is over on every other
//!   node ([`Skip::Stale`]);
//! - its block is not recent and the chain has already reached its deadline height: replayed
//!   after an absence, it would only open locally, write a PENDING record and message peers
//!   that no longer run it, until the replayed deadline block ended it again ([`Skip::Ended`]).
//!
//! A deletion does not run on a node outside the key's committee, nor again within
//! [`REATTEST_MS`] of the last time this node attested it ([`Skip::Attesting`]): its
//! attestation may still be on its way to a block.
//!
//! The chain's height comes from outside (the RPC, or the simulator's chain) through
//! [`Admission::chain_tip`]. The caller reads it when [`Admission::needs_tip`] says so: for a
//! session job of a block that is not recent, at most once per [`TIP_REFRESH_MS`]. That answer
//! is not verified (that needs a light client), so one answer can never idle the node:
//! - a job whose block is recent (within [`FRESH_BLOCK_MS`] of this node's clock) runs
//!   whatever height was reported: only replayed blocks are ever skipped as ended;
//! - each answer replaces the known height rather than raising a high-water mark, and an
//!   answer older than [`TIP_REFRESH_MS`] is read again; an unreadable height (`None`) lets
//!   every job pass.
//!
//! Outcome jobs (keygen failed, signing ended, resharing done or failed) and registry jobs
//! always pass: they carry the chain's decision and are idempotent.

use std::collections::BTreeMap;

use seqmpc_proto::{KeyId, NodeId};
use tracing::{debug, info};

use crate::job::Job;
use crate::session::Millis;

/// Longest age of the known chain height before a job that needs it asks again.
pub const TIP_REFRESH_MS: Millis = 1_000;

/// Age of a block below which its session jobs never count as ended: such a block belongs to a
/// chain this node follows in real time. It leaves room for clock skew between this node and
/// the chain's consensus time.
pub const FRESH_BLOCK_MS: Millis = 5_000;

/// How long after attesting a deletion this node does not attest it again (its `KeyDeleted`
/// may still be on its way to a block). The daemon looks for unattested deletions at about
/// this period.
pub const REATTEST_MS: Millis = 3_000;

/// Why a committed job does not run here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// This node is not a party.
    NotAParty,
    /// The job's block is older than the session timeout: the session is over elsewhere.
    Stale,
    /// The chain has passed the session's deadline height: the session is over, whatever
    /// its outcome (a replayed block's job).
    Ended,
    /// This session already ran here.
    Finished,
    /// The session is running here.
    Running,
    /// This node attested this deletion less than [`REATTEST_MS`] ago.
    Attesting,
}

/// What the node knows of a session job's session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Here {
    /// The session runs here now.
    pub running: bool,
    /// The session ran here and ended.
    pub finished: bool,
}

/// The chain's height as last reported, and when.
#[derive(Clone, Copy, Debug)]
struct Tip {
    height: Option<u64>,
    read_at: Millis,
}

/// The admission policy of one node (see the module docs).
#[derive(Debug)]
pub struct Admission {
    me: NodeId,
    session_timeout_ms: Millis,
    tip: Option<Tip>,
    /// Deletions this node attested, and when.
    attested: BTreeMap<KeyId, Millis>,
}

impl Admission {
    /// The policy of node `me`, whose sessions give up after `session_timeout_ms`.
    pub fn new(me: NodeId, session_timeout_ms: Millis) -> Self {
        Admission {
            me,
            session_timeout_ms,
            tip: None,
            attested: BTreeMap::new(),
        }
    }

    /// Whether `job` runs here at `now` (ms on the node's clock), given what the node knows
    /// of its session (`here`; ignored for jobs without a session).
    pub fn admit(&self, now: Millis, job: &Job, here: Here) -> Result<(), Skip> {
        if let Job::Delete {
            key_id, parties, ..
        } = job
        {
            if !parties.contains(&self.me) {
                return Err(Skip::NotAParty);
            }
            if self
                .attested
                .get(key_id)
                .is_some_and(|t| now.saturating_sub(*t) < REATTEST_MS)
            {
                return Err(Skip::Attesting);
            }
            return Ok(());
        }
        let (Some(deadline), Some(block_ms)) = (job.deadline_height(), job.block_time_ms()) else {
            return Ok(());
        };
        if !involves(job, &self.me) {
            return Err(Skip::NotAParty);
        }
        if here.finished {
            return Err(Skip::Finished);
        }
        if here.running {
            return Err(Skip::Running);
        }
        // A block time of 0 is unknown: the job is judged by the chain's height alone.
        if block_ms != 0 && now.saturating_sub(block_ms) > self.session_timeout_ms {
            return Err(Skip::Stale);
        }
        if !is_fresh(now, block_ms)
            && self
                .tip
                .and_then(|t| t.height)
                .is_some_and(|h| deadline <= h)
        {
            return Err(Skip::Ended);
        }
        Ok(())
    }

    /// Whether [`Admission::admit`] would use a newer chain height for `job`: a session job
    /// of a block that is not recent, with no height read in the last [`TIP_REFRESH_MS`].
    pub fn needs_tip(&self, now: Millis, job: &Job) -> bool {
        let Some(block_ms) = job.block_time_ms() else {
            return false;
        };
        !is_fresh(now, block_ms)
            && involves(job, &self.me)
            && self
                .tip
                .is_none_or(|t| now.saturating_sub(t.read_at) >= TIP_REFRESH_MS)
    }

    /// The chain's latest height, read at `now` (`None`: it could not be read, and jobs pass
    /// until a later read gives one).
    pub fn chain_tip(&mut self, now: Millis, height: Option<u64>) {
        self.tip = Some(Tip {
            height,
            read_at: now,
        });
    }

    /// This node attests the deletion of `key_id` at `now`.
    pub fn attesting(&mut self, now: Millis, key_id: &KeyId) {
        self.attested.insert(key_id.clone(), now);
    }

    /// Forgets what no longer matters at `now`.
    pub fn expire(&mut self, now: Millis) {
        self.attested
            .retain(|_, t| now.saturating_sub(*t) < REATTEST_MS);
    }
}

/// Logs why `job` does not run: at `info` for a session of this node that the chain already
/// ended (a replay after an absence, worth seeing in the log), at `debug` otherwise.
pub fn log_skip(job: &Job, skip: Skip) {
    match skip {
        Skip::Ended => {
            info!(job = %describe(job), "replayed job of a session the chain already ended: skipped")
        }
        _ => debug!(job = %describe(job), ?skip, "job not run here"),
    }
}

/// A short description of a job, for the log (no message or key material).
fn describe(job: &Job) -> String {
    match job {
        Job::KeyGen {
            key_id, session, ..
        } => format!("keygen {key_id} ({session})"),
        Job::Sign {
            request_id,
            session,
            ..
        } => format!("sign {request_id} ({session})"),
        Job::Reshare(r) => format!("reshare {} ({})", r.key_id, r.session),
        Job::Delete { key_id, .. } => format!("delete {key_id}"),
        other => format!("{other:?}"),
    }
}

/// Whether a block of `block_ms` is recent at `now` (0: unknown, never recent).
fn is_fresh(now: Millis, block_ms: u64) -> bool {
    block_ms != 0 && now.saturating_sub(block_ms) < FRESH_BLOCK_MS
}

/// Whether `me` takes part in the session of a session job.
fn involves(job: &Job, me: &NodeId) -> bool {
    match job {
        Job::KeyGen { parties, .. } => parties.contains(me),
        Job::Sign { signers, .. } => signers.contains(me),
        Job::Reshare(r) => r.dealers.contains(me) || r.new_parties.contains(me),
        Job::Delete { parties, .. } => parties.contains(me),
        Job::KeyGenFailed { .. }
        | Job::SignEnded { .. }
        | Job::NodeJoined { .. }
        | Job::NodeKeyRotated { .. }
        | Job::NodeRemoved { .. }
        | Job::ReshareDone { .. }
        | Job::ReshareFailed { .. }
        | Job::Block { .. } => true,
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use seqmpc_proto::{RequestId, Scheme, SessionId};

    use super::*;
    use crate::job::KeyVersion;

    const NOW: Millis = 1_800_000_000_000;

    fn nid(i: u8) -> NodeId {
        NodeId::new(format!("node{i}")).unwrap()
    }

    fn sign_job(deadline_height: u64, block_time_ms: u64) -> Job {
        Job::Sign {
            session: SessionId([7; 32]),
            request_id: RequestId::new("r").unwrap(),
            key_id: KeyId::new("k").unwrap(),
            message: b"m".to_vec(),
            prehashed: false,
            scheme: Scheme::FrostEd25519,
            signers: vec![nid(0), nid(1)],
            key_version: KeyVersion {
                generation: 1,
                session: SessionId([1; 32]),
            },
            height: deadline_height.saturating_sub(10),
            deadline_height,
            block_time_ms,
        }
    }

    fn delete_job() -> Job {
        Job::Delete {
            key_id: KeyId::new("k").unwrap(),
            parties: vec![nid(0), nid(1)],
            height: 5,
        }
    }

    fn policy() -> Admission {
        Admission::new(nid(0), 60_000)
    }

    #[test]
    fn admit__should_refuse_non_parties_finished_running_and_stale_session_jobs() {
        let a = policy();
        let job = sign_job(600, NOW - 1_000);
        assert_eq!(a.admit(NOW, &job, Here::default()), Ok(()));
        assert_eq!(
            Admission::new(nid(2), 60_000).admit(NOW, &job, Here::default()),
            Err(Skip::NotAParty)
        );
        let finished = Here {
            finished: true,
            ..Here::default()
        };
        assert_eq!(a.admit(NOW, &job, finished), Err(Skip::Finished));
        let running = Here {
            running: true,
            ..Here::default()
        };
        assert_eq!(a.admit(NOW, &job, running), Err(Skip::Running));
        assert_eq!(
            a.admit(NOW, &sign_job(600, NOW - 60_001), Here::default()),
            Err(Skip::Stale)
        );
        // An unknown block time is never stale by the clock.
        assert_eq!(a.admit(NOW, &sign_job(600, 0), Here::default()), Ok(()));
    }

    #[test]
    fn admit__should_skip_a_replayed_job_whose_deadline_the_chain_reached() {
        let mut a = policy();
        let old = NOW - 30_000;
        assert!(a.needs_tip(NOW, &sign_job(400, old)));
        a.chain_tip(NOW, Some(500));
        assert!(
            !a.needs_tip(NOW + 999, &sign_job(400, old)),
            "one read per TIP_REFRESH"
        );
        assert!(a.needs_tip(NOW + TIP_REFRESH_MS, &sign_job(400, old)));
        assert_eq!(
            a.admit(NOW, &sign_job(400, old), Here::default()),
            Err(Skip::Ended)
        );
        assert_eq!(
            a.admit(NOW, &sign_job(500, old), Here::default()),
            Err(Skip::Ended)
        );
        assert_eq!(
            a.admit(NOW, &sign_job(600, old), Here::default()),
            Ok(()),
            "a live session"
        );
        let failed = Job::KeyGenFailed {
            key_id: KeyId::new("k").unwrap(),
            session: SessionId([9; 32]),
            reason: "x".into(),
        };
        assert!(!a.needs_tip(NOW, &failed));
        assert_eq!(
            a.admit(NOW, &failed, Here::default()),
            Ok(()),
            "outcomes always pass"
        );
    }

    #[test]
    fn admit__should_pass_a_recent_block_whatever_height_one_answer_claims() {
        let mut a = policy();
        // One lying answer: the chain is said to be far beyond every deadline.
        a.chain_tip(NOW, Some(u64::MAX));
        // A replayed job is skipped while the lie is the latest answer...
        assert_eq!(
            a.admit(NOW, &sign_job(600, NOW - 30_000), Here::default()),
            Err(Skip::Ended)
        );
        // ...but the jobs of blocks the node gets in real time run, and need no height.
        for i in 0..10 {
            let now = NOW + 100 * i;
            assert!(!a.needs_tip(now, &sign_job(600, now - 200)));
            assert_eq!(
                a.admit(now, &sign_job(600, now - 200), Here::default()),
                Ok(())
            );
        }
        // The next read replaces the lie: a replayed job of a live session runs again.
        let later = NOW + TIP_REFRESH_MS;
        assert!(a.needs_tip(later, &sign_job(600, NOW - 30_000)));
        a.chain_tip(later, Some(500));
        assert_eq!(
            a.admit(later, &sign_job(600, NOW - 30_000), Here::default()),
            Ok(())
        );
    }

    #[test]
    fn admit__should_pass_jobs_when_the_height_cannot_be_read() {
        let mut a = policy();
        a.chain_tip(NOW, Some(500));
        assert_eq!(
            a.admit(NOW, &sign_job(400, 0), Here::default()),
            Err(Skip::Ended)
        );
        // A failed read forgets the last height: nothing is skipped on an old answer.
        a.chain_tip(NOW + TIP_REFRESH_MS, None);
        assert_eq!(
            a.admit(NOW + TIP_REFRESH_MS, &sign_job(400, 0), Here::default()),
            Ok(())
        );
    }

    #[test]
    fn admit__should_attest_a_deletion_again_only_after_the_reattest_period() {
        let mut a = policy();
        let job = delete_job();
        assert_eq!(a.admit(NOW, &job, Here::default()), Ok(()));
        a.attesting(NOW, &KeyId::new("k").unwrap());
        assert_eq!(
            a.admit(NOW + 1, &job, Here::default()),
            Err(Skip::Attesting)
        );
        assert_eq!(
            a.admit(NOW + REATTEST_MS - 1, &job, Here::default()),
            Err(Skip::Attesting)
        );
        assert_eq!(a.admit(NOW + REATTEST_MS, &job, Here::default()), Ok(()));
        a.expire(NOW + REATTEST_MS);
        assert!(a.attested.is_empty());
        assert_eq!(
            Admission::new(nid(3), 60_000).admit(NOW, &job, Here::default()),
            Err(Skip::NotAParty)
        );
    }
}
