//! Jobs of blocks a node replays after it was away (partitioned, or down), before they reach
//! the MPC module.
//!
//! While a node is cut off, the chain goes on: it ends the sessions that needed the node ERROR
//! at their deadline. When the node is back, the engine replays the missed blocks to it, and
//! each replayed request block hands the module its job again, though the session is over on
//! every other node. Started anyway, the session would only open locally, write a PENDING
//! record and send its first messages to peers who no longer run it, until the replayed
//! deadline block ends it again. The gate skips such a job instead: a session job (keygen,
//! sign, resharing) whose deadline height the chain has already reached is over, whatever its
//! outcome. Outcome jobs (keygen failed, resharing done or failed), deletions and joins always
//! pass.
//!
//! The chain's height comes from the RPC (CometBFT `status`), read at most once per
//! [`TIP_REFRESH`] and only when a session job's deadline is beyond the height known so far, so
//! a catching-up node asks about once a second while replayed jobs flow. When the RPC cannot be
//! read, jobs pass as before.
//!
//! The RPC's answer is not verified (that needs a light client), so the gate never lets one
//! answer idle the node:
//! - A job whose block is recent (its consensus time within [`FRESH_BLOCK`] of this node's
//!   clock) passes without asking: such a block belongs to a chain this node follows in real
//!   time, whatever height an RPC claims. Only replayed blocks are ever skipped.
//! - Each answer replaces the known height instead of raising a high-water mark, so a height
//!   made up by one answer is forgotten at the next read, at most [`TIP_REFRESH`] later.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seqmpc_module::job::Job;
use seqmpc_proto::NodeId;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::daemon::rpc::RpcClient;

/// Longest age of the known chain height before a session job asks the RPC again.
pub const TIP_REFRESH: Duration = Duration::from_secs(1);

/// Age of a block below which its jobs always pass: the gate is for blocks replayed after an
/// absence, and a block this young is not one. It leaves room for clock skew between this
/// node and the chain's consensus time.
pub const FRESH_BLOCK: Duration = Duration::from_secs(5);

/// Where the gate reads the chain's latest height.
pub trait ChainHeight {
    /// The latest block height the chain reports.
    fn height(&self) -> anyhow::Result<u64>;
}

impl ChainHeight for RpcClient {
    fn height(&self) -> anyhow::Result<u64> {
        Ok(RpcClient::height(self)?)
    }
}

/// Decides which jobs still need to run (see the module docs).
pub struct ReplayGate<C = RpcClient> {
    me: NodeId,
    chain: C,
    /// The chain's height as last read (`None` when that read failed), and when.
    tip: Option<(Option<u64>, Instant)>,
}

impl<C: ChainHeight> ReplayGate<C> {
    /// The gate of node `me`, reading the chain's height from `chain`.
    pub fn new(me: NodeId, chain: C) -> Self {
        ReplayGate {
            me,
            chain,
            tip: None,
        }
    }

    /// Whether `job` must still run: false for a session job of a replayed block whose
    /// deadline the chain has already reached.
    pub fn admit(&mut self, job: &Job) -> bool {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.admit_at(job, Instant::now(), wall_ms)
    }

    /// [`ReplayGate::admit`] at monotonic time `now` and wall-clock time `wall_ms` (ms since
    /// the Unix epoch).
    pub fn admit_at(&mut self, job: &Job, now: Instant, wall_ms: u64) -> bool {
        let Some(deadline) = job.deadline_height() else {
            return true;
        };
        let block_ms = job.block_time_ms().unwrap_or(0);
        // A block time of 0 is unknown: the job is judged by the chain's height alone.
        if block_ms != 0 && wall_ms.saturating_sub(block_ms) < FRESH_BLOCK.as_millis() as u64 {
            return true;
        }
        if self
            .tip
            .is_none_or(|(_, at)| now.saturating_duration_since(at) >= TIP_REFRESH)
        {
            let height = self
                .chain
                .height()
                .inspect_err(|e| debug!(error = %e, "cannot read the chain height: jobs pass"))
                .ok();
            self.tip = Some((height, now));
        }
        self.tip.is_none_or(|(h, _)| h.is_none_or(|h| deadline > h))
    }

    /// Runs the gate on a thread of its own: jobs from `from` (the app, after each Commit) go
    /// on to `to` (the module) in order, but those [`ReplayGate::admit`] refuses. Stops when
    /// either channel closes.
    pub fn spawn(
        mut self,
        mut from: mpsc::Receiver<Job>,
        to: mpsc::Sender<Job>,
    ) -> std::io::Result<()>
    where
        C: Send + 'static,
    {
        std::thread::Builder::new()
            .name("replay-gate".into())
            .spawn(move || {
                while let Some(job) = from.blocking_recv() {
                    if !self.admit(&job) {
                        // Jobs of sessions without this node are dropped by the module anyway.
                        if involves(&job, &self.me) {
                            info!(job = %describe(&job), "replayed job of a session the chain already ended: skipped");
                        } else {
                            debug!(job = %describe(&job), "replayed job of an ended session without this node: skipped");
                        }
                        continue;
                    }
                    if to.blocking_send(job).is_err() {
                        return;
                    }
                }
            })
            .map(drop)
    }
}

/// Whether `me` takes part in the session of `job`.
fn involves(job: &Job, me: &NodeId) -> bool {
    match job {
        Job::KeyGen { parties, .. } => parties.contains(me),
        Job::Sign { signers, .. } => signers.contains(me),
        Job::Reshare(r) => r.dealers.contains(me) || r.new_parties.contains(me),
        _ => true,
    }
}

/// A short description of a session job, for the log (no message or key material).
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
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use std::cell::RefCell;

    use seqmpc_module::job::KeyVersion;
    use seqmpc_proto::{KeyId, RequestId, Scheme, SessionId};

    use super::*;

    /// A chain height source answering from a script, and counting the reads.
    struct Scripted(RefCell<Vec<anyhow::Result<u64>>>, RefCell<usize>);

    impl Scripted {
        fn new(answers: Vec<anyhow::Result<u64>>) -> Self {
            Scripted(RefCell::new(answers), RefCell::new(0))
        }
    }

    impl ChainHeight for &Scripted {
        fn height(&self) -> anyhow::Result<u64> {
            *self.1.borrow_mut() += 1;
            self.0.borrow_mut().remove(0)
        }
    }

    const NOW_MS: u64 = 1_800_000_000_000;

    fn sign_job(deadline_height: u64, block_time_ms: u64) -> Job {
        Job::Sign {
            session: SessionId([7; 32]),
            request_id: RequestId::new("r").unwrap(),
            key_id: KeyId::new("k").unwrap(),
            message: b"m".to_vec(),
            prehashed: false,
            scheme: Scheme::FrostEd25519,
            signers: vec![NodeId::new("node0").unwrap()],
            key_version: KeyVersion {
                generation: 1,
                session: SessionId([1; 32]),
            },
            height: deadline_height.saturating_sub(10),
            deadline_height,
            block_time_ms,
        }
    }

    fn gate(chain: &Scripted) -> ReplayGate<&Scripted> {
        ReplayGate::new(NodeId::new("node0").unwrap(), chain)
    }

    #[test]
    fn replay_gate__should_skip_a_replayed_job_whose_deadline_the_chain_reached() {
        let chain = Scripted::new(vec![Ok(500)]);
        let mut g = gate(&chain);
        let t = Instant::now();
        let old = NOW_MS - 60_000;
        assert!(!g.admit_at(&sign_job(400, old), t, NOW_MS));
        assert!(g.admit_at(&sign_job(600, old), t, NOW_MS), "a live session");
        assert!(g.admit_at(
            &Job::KeyGenFailed {
                key_id: KeyId::new("k").unwrap(),
                session: SessionId([9; 32]),
                reason: "x".into()
            },
            t,
            NOW_MS
        ));
        assert_eq!(*chain.1.borrow(), 1, "one read within TIP_REFRESH");
    }

    #[test]
    fn replay_gate__should_pass_a_recent_block_whatever_height_one_rpc_answer_claims() {
        // One lying answer: the chain is said to be at a height far beyond every deadline.
        let chain = Scripted::new(vec![Ok(u64::MAX), Ok(500)]);
        let mut g = gate(&chain);
        let t = Instant::now();
        // A replayed job is skipped while the lie is the latest answer...
        assert!(!g.admit_at(&sign_job(600, NOW_MS - 60_000), t, NOW_MS));
        // ...but the jobs of blocks the node gets in real time run.
        for i in 0..10 {
            let at = t + Duration::from_millis(100 * i);
            assert!(g.admit_at(&sign_job(600, NOW_MS - 200), at, NOW_MS));
        }
        // The next read replaces the lie: a replayed job of a live session runs again.
        let later = t + TIP_REFRESH;
        assert!(g.admit_at(&sign_job(600, NOW_MS - 60_000), later, NOW_MS + 1000));
        assert_eq!(*chain.1.borrow(), 2);
    }

    #[test]
    fn replay_gate__should_pass_jobs_when_the_rpc_cannot_be_read() {
        let chain = Scripted::new(vec![Ok(500), Err(anyhow::anyhow!("down"))]);
        let mut g = gate(&chain);
        let t = Instant::now();
        assert!(!g.admit_at(&sign_job(400, 0), t, NOW_MS));
        // The failed read forgets the last height: nothing is skipped on an old answer.
        assert!(g.admit_at(&sign_job(400, 0), t + TIP_REFRESH, NOW_MS));
    }
}
