//! Result submission: signs the module's results with the node key and broadcasts them.
//!
//! One worker thread sends the queued txs in order. A heartbeat is queued only when none is
//! waiting already, so heartbeats never pile up in front of results while the RPC is slow or
//! unreachable. TEST ONLY (`partition-file`): while the node is partitioned the worker holds
//! every tx, sending nothing, and sends them in order once the partition heals ([`Hold`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use seqmpc_module::job::SubmitResult;
use seqmpc_proto::tx::{sign_tx, TxMsg};
use tracing::{debug, warn};

use crate::rpc::RpcClient;

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

/// When the worker holds its txs back instead of sending them: never in a production build.
/// TEST ONLY (cargo feature `fault-injection`): while a `partition-file` partition is on.
#[derive(Clone, Debug, Default)]
pub struct Hold(#[cfg(feature = "fault-injection")] Option<seqmpc_module::fault::Partition>);

impl Hold {
    /// TEST ONLY: hold while `partition` is on.
    #[cfg(feature = "fault-injection")]
    pub fn while_partitioned(partition: seqmpc_module::fault::Partition) -> Hold {
        Hold(Some(partition))
    }

    /// Returns once txs may be sent (at once, unless held).
    fn wait(&self) {
        #[cfg(feature = "fault-injection")]
        if let Some(p) = self.0.as_ref().filter(|p| p.is_on()) {
            let since = std::time::Instant::now();
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
}

impl RpcSubmitter {
    /// Starts the worker. `first_sequence` is the node's next sequence on chain.
    pub fn spawn(
        key: SigningKey,
        chain_id: String,
        rpc: RpcClient,
        first_sequence: u64,
    ) -> std::io::Result<RpcSubmitter> {
        Self::spawn_holding(key, chain_id, rpc, first_sequence, Hold::default())
    }

    /// [`RpcSubmitter::spawn`], holding txs back while `hold` says so.
    pub fn spawn_holding(
        key: SigningKey,
        chain_id: String,
        rpc: RpcClient,
        first_sequence: u64,
        hold: Hold,
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
                hold.wait();
                let account = format!("/account/{}", hex::encode(key.verifying_key().to_bytes()));
                let on_chain = rpc
                    .abci_query(&account)
                    .ok()
                    .filter(|q| q.code == 0)
                    .and_then(|q| serde_json::from_slice::<serde_json::Value>(&q.value).ok())
                    .and_then(|v| v["sequence"].as_u64());
                let mut seq = on_chain.map_or(first_sequence, |c| c.max(first_sequence));
                while let Ok(msg) = rx.recv() {
                    if matches!(msg, TxMsg::Heartbeat) {
                        queued.store(false, Ordering::Release);
                    }
                    submit_one(&key, &chain_id, &rpc, &mut seq, msg, &hold);
                }
            })?;
        Ok(RpcSubmitter {
            tx,
            heartbeat_queued,
        })
    }
}

fn submit_one(
    key: &SigningKey,
    chain_id: &str,
    rpc: &RpcClient,
    seq: &mut u64,
    msg: TxMsg,
    hold: &Hold,
) {
    for attempt in 0..20u32 {
        hold.wait();
        let tx = sign_tx(key, chain_id, *seq, msg.clone());
        match rpc.broadcast_tx_sync(&tx) {
            Ok(r) if r.code == 0 => {
                debug!(seq = *seq, "result tx accepted");
                *seq += 1;
                return;
            }
            // Sequence out of step (a dropped or replayed tx): resync and retry.
            Ok(r) if r.code == 4 => {
                let expected = std::str::from_utf8(&r.data)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                match expected {
                    Some(e) => *seq = e,
                    None => {
                        warn!(log = %r.log, "sequence error without expected value");
                        return;
                    }
                }
            }
            Ok(r) => {
                warn!(code = r.code, log = %r.log, "result tx rejected");
                return;
            }
            Err(e) => {
                warn!(error = %e, attempt, "cannot reach the RPC; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    warn!("result tx given up after retries");
}
