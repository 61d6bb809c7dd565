//! TEST ONLY (cargo feature `fault-injection`; see `seqmpc_module::fault`): the result
//! submitter's RPC port ([`super::submit::ChainRpc`]) behind a node's faults.
//! - `partition-file`: while the node is partitioned every call waits, so the submitter holds
//!   its txs and sends them in order once the partition heals.
//! - `lose-result-txs=<n>`: the first `n` result txs (not heartbeats) are answered "accepted"
//!   without reaching the RPC, as a mempool that accepted a tx and lost it: the submitter's
//!   inclusion check must find them missing and send them again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use seqmpc_module::fault::{Faults, Partition, PARTITION_POLL};
use seqmpc_proto::tx::{SignedTx, TxMsg};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::rpc::{BroadcastResult, QueryResult, RpcError};
use super::submit::ChainRpc;

/// An RPC port with faults in front of it.
pub struct FaultyRpc<R> {
    inner: R,
    partition: Option<Partition>,
    lose: AtomicU32,
}

impl<R: ChainRpc + Sync> FaultyRpc<R> {
    /// `inner` behind `partition` and the submitter faults of `faults`.
    pub fn new(inner: R, partition: Option<Partition>, faults: &Faults) -> Self {
        FaultyRpc {
            inner,
            partition,
            lose: AtomicU32::new(faults.lose_result_txs),
        }
    }

    /// Whether to lose this tx (counts down over result txs; decodes only while counting).
    fn loses(&self, tx: &[u8]) -> bool {
        if self.lose.load(Ordering::Acquire) == 0 {
            return false;
        }
        let result = SignedTx::decode(tx).is_ok_and(|t| !matches!(t.msg, TxMsg::Heartbeat));
        result
            && self
                .lose
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
    }
}

impl<R: ChainRpc + Sync> ChainRpc for FaultyRpc<R> {
    fn broadcast_tx_sync(&self, tx: &[u8]) -> Result<BroadcastResult, RpcError> {
        self.wait();
        if self.loses(tx) {
            warn!("FAULT INJECTION: losing a signed result tx instead of broadcasting it");
            return Ok(BroadcastResult {
                code: 0,
                log: String::new(),
                data: Vec::new(),
                hash: hex::encode_upper(Sha256::digest(tx)),
            });
        }
        self.inner.broadcast_tx_sync(tx)
    }

    fn tx_result(&self, hash_hex: &str) -> Result<Option<(u32, String)>, RpcError> {
        self.wait();
        self.inner.tx_result(hash_hex)
    }

    fn abci_query(&self, path: &str) -> Result<QueryResult, RpcError> {
        self.wait();
        self.inner.abci_query(path)
    }

    fn wait(&self) {
        if let Some(p) = self.partition.as_ref().filter(|p| p.is_on()) {
            let since = Instant::now();
            warn!("FAULT INJECTION: partitioned: holding txs until the partition heals");
            while p.is_on() {
                std::thread::sleep(PARTITION_POLL);
            }
            warn!(
                held_ms = since.elapsed().as_millis() as u64,
                "FAULT INJECTION: partition healed: sending the held txs"
            );
        }
    }
}
