//! Result submission: signs the module's results with the node key and broadcasts them.

use std::sync::mpsc;
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
}

impl SubmitResult for RpcSubmitter {
    fn submit(&self, msg: TxMsg) {
        if let Err(e) = self.tx.try_send(msg) {
            warn!(error = %e, "result queue full or closed: result dropped (the chain deadline will end the session)");
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
        let (tx, rx) = mpsc::sync_channel::<TxMsg>(SUBMIT_QUEUE);
        std::thread::Builder::new()
            .name("submit".into())
            .spawn(move || {
                // A restarted node's previous process may have left txs in the mempool that
                // take sequences after `first_sequence`; a result sent at such a sequence would
                // pass CheckTx yet fail at delivery. Let them commit, then resync.
                std::thread::sleep(STARTUP_SETTLE);
                let account = format!("/account/{}", hex::encode(key.verifying_key().to_bytes()));
                let on_chain = rpc
                    .abci_query(&account)
                    .ok()
                    .filter(|q| q.code == 0)
                    .and_then(|q| serde_json::from_slice::<serde_json::Value>(&q.value).ok())
                    .and_then(|v| v["sequence"].as_u64());
                let mut seq = on_chain.map_or(first_sequence, |c| c.max(first_sequence));
                while let Ok(msg) = rx.recv() {
                    submit_one(&key, &chain_id, &rpc, &mut seq, msg);
                }
            })?;
        Ok(RpcSubmitter { tx })
    }
}

fn submit_one(key: &SigningKey, chain_id: &str, rpc: &RpcClient, seq: &mut u64, msg: TxMsg) {
    for attempt in 0..20u32 {
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
