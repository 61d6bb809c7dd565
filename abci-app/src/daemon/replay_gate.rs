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
//! a node in step with the chain asks about once a second while jobs flow, and a catching-up
//! node about once per replay. The known height is always one the chain has reached, so the
//! gate never skips a live session; when the RPC cannot be read, jobs pass as before.

use std::time::{Duration, Instant};

use seqmpc_module::job::Job;
use seqmpc_proto::NodeId;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::daemon::rpc::RpcClient;

/// Longest age of the known chain height before a session job asks the RPC again.
pub const TIP_REFRESH: Duration = Duration::from_secs(1);

/// Decides which jobs still need to run (see the module docs).
pub struct ReplayGate {
    me: NodeId,
    rpc: RpcClient,
    /// A height the chain has reached, and when it was read.
    tip: Option<(u64, Instant)>,
}

impl ReplayGate {
    /// The gate of node `me`, reading the chain's height from `rpc`.
    pub fn new(me: NodeId, rpc: RpcClient) -> Self {
        ReplayGate { me, rpc, tip: None }
    }

    /// Whether `job` must still run: false for a session job whose deadline the chain has
    /// already reached.
    pub fn admit(&mut self, job: &Job) -> bool {
        let Some(deadline) = job.deadline_height() else {
            return true;
        };
        let over = |tip: &Option<(u64, Instant)>| tip.is_some_and(|(h, _)| deadline <= h);
        if over(&self.tip) {
            return false;
        }
        if self.tip.is_none_or(|(_, at)| at.elapsed() >= TIP_REFRESH) {
            match self.rpc.height() {
                Ok(h) => {
                    let known = self.tip.map_or(0, |(k, _)| k);
                    self.tip = Some((h.max(known), Instant::now()));
                }
                Err(e) => debug!(error = %e, "cannot read the chain height: job passes"),
            }
        }
        !over(&self.tip)
    }

    /// Runs the gate on a thread of its own: jobs from `from` (the app, after each Commit) go
    /// on to `to` (the module) in order, but those [`ReplayGate::admit`] refuses. Stops when
    /// either channel closes.
    pub fn spawn(
        mut self,
        mut from: mpsc::Receiver<Job>,
        to: mpsc::Sender<Job>,
    ) -> std::io::Result<()> {
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
