//! Result submission: signs the module's results with the node key and broadcasts them.
//!
//! One worker thread sends the queued txs in order. A heartbeat is queued only when none is
//! waiting already, so heartbeats never pile up in front of results while the RPC is slow or
//! unreachable. The worker then follows each result tx until it is in a block, and sends it
//! again if a mempool lost it or it failed on its sequence at delivery ([`RESEND_AFTER`]).
//! TEST ONLY ([`SubmitFaults`]): while the node is partitioned the worker holds every tx,
//! sending nothing, and sends them in order once the partition heals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use seqmpc_module::job::SubmitResult;
use seqmpc_proto::tx::{sign_tx, TxMsg};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::chain::query::{AccountView, Query};
use crate::daemon::rpc::RpcClient;

/// Depth of the submission queue.
pub const SUBMIT_QUEUE: usize = 100_000;

/// Wait at start before the first submission (a few blocks), see [`RpcSubmitter::spawn`].
pub const STARTUP_SETTLE: Duration = Duration::from_millis(1000);

/// Queues results for a worker thread that owns the node's sequence counter.
pub struct RpcSubmitter {
    tx: mpsc::SyncSender<TxMsg>,
    /// A heartbeat is queued and not sent yet.
    heartbeat_queued: Arc<AtomicBool>,
}

impl SubmitResult for RpcSubmitter {
    fn submit(&self, msg: TxMsg) {
        let heartbeat = matches!(msg, TxMsg::Heartbeat);
        if heartbeat && self.heartbeat_queued.swap(true, Ordering::AcqRel) {
            debug!("a heartbeat is still queued: this one is not needed");
            return;
        }
        if let Err(e) = self.tx.try_send(msg) {
            if heartbeat {
                self.heartbeat_queued.store(false, Ordering::Release);
            }
            warn!(error = %e, "result queue full or closed: result dropped (the chain deadline will end the session)");
        }
    }
}

/// TEST ONLY (cargo feature `fault-injection`) interference with the worker; none in a
/// production build: while a `partition-file` partition is on the worker holds its txs back,
/// and with `lose-result-txs=<n>` it drops its first `n` result txs after signing them.
#[derive(Clone, Debug, Default)]
pub struct SubmitFaults {
    #[cfg(feature = "fault-injection")]
    partition: Option<seqmpc_module::fault::Partition>,
    #[cfg(feature = "fault-injection")]
    lose_results: u32,
}

impl SubmitFaults {
    /// TEST ONLY: the worker's faults from the node's fault list.
    #[cfg(feature = "fault-injection")]
    pub fn new(
        partition: Option<seqmpc_module::fault::Partition>,
        faults: &seqmpc_module::fault::Faults,
    ) -> SubmitFaults {
        SubmitFaults {
            partition,
            lose_results: faults.lose_result_txs,
        }
    }

    /// Returns once txs may be sent (at once, unless held).
    fn wait(&self) {
        #[cfg(feature = "fault-injection")]
        if let Some(p) = self.partition.as_ref().filter(|p| p.is_on()) {
            let since = Instant::now();
            warn!("FAULT INJECTION: partitioned: holding txs until the partition heals");
            while p.is_on() {
                std::thread::sleep(seqmpc_module::fault::PARTITION_POLL);
            }
            warn!(
                held_ms = since.elapsed().as_millis() as u64,
                "FAULT INJECTION: partition healed: sending the held txs"
            );
        }
    }

    /// Whether to lose this result tx (counts down).
    fn lose(&mut self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.lose_results > 0 {
            self.lose_results -= 1;
            warn!("FAULT INJECTION: losing a signed result tx instead of broadcasting it");
            return true;
        }
        false
    }
}

/// A result tx accepted into the mempool and not yet seen in a block.
struct Unconfirmed {
    msg: TxMsg,
    /// Its hash, as the RPC's `tx` route looks it up.
    hash: String,
    sent: Instant,
    checked: Instant,
    /// Times this result was sent again.
    resends: u32,
}

impl RpcSubmitter {
    /// Starts the worker. `first_sequence` is the node's next sequence on chain.
    pub fn spawn(
        key: SigningKey,
        chain_id: String,
        rpc: RpcClient,
        first_sequence: u64,
    ) -> std::io::Result<RpcSubmitter> {
        Self::spawn_with(key, chain_id, rpc, first_sequence, SubmitFaults::default())
    }

    /// [`RpcSubmitter::spawn`] with test-only `faults`.
    pub fn spawn_with(
        key: SigningKey,
        chain_id: String,
        rpc: RpcClient,
        first_sequence: u64,
        faults: SubmitFaults,
    ) -> std::io::Result<RpcSubmitter> {
        let (tx, rx) = mpsc::sync_channel::<TxMsg>(SUBMIT_QUEUE);
        let heartbeat_queued = Arc::new(AtomicBool::new(false));
        let queued = heartbeat_queued.clone();
        std::thread::Builder::new()
            .name("submit".into())
            .spawn(move || {
                // A restarted node's previous process may have left txs in the mempool that
                // take sequences after `first_sequence`; a result sent at such a sequence would
                // pass CheckTx yet fail at delivery. Let them commit, then resync.
                std::thread::sleep(STARTUP_SETTLE);
                faults.wait();
                let account = Query::Account(hex::encode(key.verifying_key().to_bytes()));
                let on_chain = rpc
                    .abci_query(&account.path())
                    .ok()
                    .filter(|q| q.code == 0)
                    .and_then(|q| serde_json::from_slice::<AccountView>(&q.value).ok())
                    .map(|a| a.sequence);
                let mut w = Worker {
                    key,
                    chain_id,
                    rpc,
                    seq: on_chain.map_or(first_sequence, |c| c.max(first_sequence)),
                    faults,
                    unconfirmed: Vec::new(),
                };
                loop {
                    match rx.recv_timeout(TICK) {
                        Ok(msg) => {
                            if matches!(msg, TxMsg::Heartbeat) {
                                queued.store(false, Ordering::Release);
                                w.submit(&msg);
                            } else if let Some(hash) = w.submit(&msg) {
                                w.track(msg, hash, 0);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    w.confirm();
                }
            })?;
        Ok(RpcSubmitter {
            tx,
            heartbeat_queued,
        })
    }
}

/// How often the worker wakes without new results, to check the ones in flight.
const TICK: Duration = Duration::from_millis(500);
/// How old a result tx must be before its inclusion is checked, and how often after.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(2);
/// A result tx in no block this long after it was sent (a mempool lost it) is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(8);
/// Most times one result is sent again.
pub const MAX_RESENDS: u32 = 3;
/// The chain's code for a sequence out of step (at CheckTx or delivery).
const SEQUENCE_CODE: u32 = 4;

/// The submission thread's state: the node's sequence counter and its result txs in flight.
struct Worker {
    key: SigningKey,
    chain_id: String,
    rpc: RpcClient,
    seq: u64,
    faults: SubmitFaults,
    unconfirmed: Vec<Unconfirmed>,
}

impl Worker {
    fn track(&mut self, msg: TxMsg, hash: String, resends: u32) {
        let now = Instant::now();
        self.unconfirmed.push(Unconfirmed {
            msg,
            hash,
            sent: now,
            checked: now,
            resends,
        });
    }

    /// Checks the result txs in flight: one in a block is done (whatever its code, except a
    /// sequence out of step at delivery); one that failed on its sequence, or is in no block
    /// [`RESEND_AFTER`] after it was sent, is sent again (at most [`MAX_RESENDS`] times). A
    /// result the chain has meanwhile recorded from an earlier copy is refused as a duplicate,
    /// so sending again is safe.
    fn confirm(&mut self) {
        let now = Instant::now();
        let mut again = Vec::new();
        let rpc = &self.rpc;
        self.unconfirmed.retain_mut(|u| {
            if now.duration_since(u.checked) < CONFIRM_EVERY {
                return true;
            }
            u.checked = now;
            let lost = match rpc.tx_result(&u.hash) {
                Ok(Some((0, _))) => return false,
                Ok(Some((SEQUENCE_CODE, log))) => {
                    warn!(hash = %u.hash, %log, "result tx failed at delivery on its sequence");
                    true
                }
                Ok(Some((code, log))) => {
                    warn!(hash = %u.hash, code, %log, "result tx refused at delivery");
                    return false;
                }
                Ok(None) => now.duration_since(u.sent) >= RESEND_AFTER,
                Err(e) => {
                    debug!(error = %e, "cannot check a result tx's inclusion; later");
                    false
                }
            };
            if !lost {
                return true;
            }
            if u.resends < MAX_RESENDS {
                again.push((u.msg.clone(), u.resends + 1));
            } else {
                warn!(hash = %u.hash, "result tx lost {MAX_RESENDS} times; given up (the chain deadline will end its session)");
            }
            false
        });
        for (msg, resends) in again {
            warn!(resends, "result tx in no block: sending it again");
            if let Some(hash) = self.submit(&msg) {
                self.track(msg, hash, resends);
            }
        }
    }

    /// Signs `msg` at the next sequence and broadcasts it; returns its hash once the mempool
    /// accepted it.
    fn submit(&mut self, msg: &TxMsg) -> Option<String> {
        for attempt in 0..20u32 {
            self.faults.wait();
            let tx = sign_tx(&self.key, &self.chain_id, self.seq, msg.clone());
            if !matches!(msg, TxMsg::Heartbeat) && self.faults.lose() {
                self.seq += 1;
                return Some(hex::encode_upper(Sha256::digest(&tx)));
            }
            match self.rpc.broadcast_tx_sync(&tx) {
                Ok(r) if r.code == 0 => {
                    debug!(seq = self.seq, "result tx accepted");
                    self.seq += 1;
                    return Some(r.hash);
                }
                // Sequence out of step (a dropped or replayed tx): resync and retry.
                Ok(r) if r.code == SEQUENCE_CODE => {
                    let expected = std::str::from_utf8(&r.data)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok());
                    match expected {
                        Some(e) => self.seq = e,
                        None => {
                            warn!(log = %r.log, "sequence error without expected value");
                            return None;
                        }
                    }
                }
                Ok(r) => {
                    warn!(code = r.code, log = %r.log, "result tx rejected");
                    return None;
                }
                Err(e) => {
                    warn!(error = %e, attempt, "cannot reach the RPC; retrying");
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        warn!("result tx given up after retries");
        None
    }
}
