//! The dev sequencer's mempool: txs in arrival order, bounded, deduplicated by sha256 (the
//! CometBFT tx hash). Txs taken into a block stay "in flight" (still refused as duplicates)
//! until the block is committed or given back.

use std::collections::{BTreeSet, VecDeque};

use prost::bytes::Bytes;
use sha2::{Digest, Sha256};

/// A tx hash: sha256 of the tx bytes.
pub type TxHash = [u8; 32];

/// sha256 of `tx`, CometBFT's tx hash.
pub fn tx_hash(tx: &[u8]) -> TxHash {
    Sha256::digest(tx).into()
}

/// A pending tx.
#[derive(Clone, Debug)]
pub struct MempoolTx {
    /// Its hash.
    pub hash: TxHash,
    /// Its bytes.
    pub tx: Bytes,
    /// When it entered the mempool (what the request latency metric counts from).
    pub received: std::time::Instant,
}

/// Why a tx was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    /// Same hash already pending or in the block being executed.
    Duplicate,
    /// Count or byte bound reached.
    Full {
        /// Pending txs.
        txs: usize,
        /// Bound on txs.
        max_txs: usize,
        /// Pending bytes.
        bytes: usize,
        /// Bound on bytes.
        max_bytes: usize,
    },
}

impl std::fmt::Display for AdmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdmitError::Duplicate => f.write_str("tx already exists in cache"),
            AdmitError::Full {
                txs,
                max_txs,
                bytes,
                max_bytes,
            } => write!(
                f,
                "mempool is full: number of txs {txs} (max: {max_txs}), total txs bytes {bytes} \
                 (max: {max_bytes})"
            ),
        }
    }
}

/// The mempool.
#[derive(Debug)]
pub struct Mempool {
    queue: VecDeque<MempoolTx>,
    pending: BTreeSet<TxHash>,
    in_flight: BTreeSet<TxHash>,
    bytes: usize,
    max_txs: usize,
    max_bytes: usize,
}

impl Mempool {
    /// An empty mempool with these bounds.
    pub fn new(max_txs: usize, max_bytes: usize) -> Self {
        Mempool {
            queue: VecDeque::new(),
            pending: BTreeSet::new(),
            in_flight: BTreeSet::new(),
            bytes: 0,
            max_txs,
            max_bytes,
        }
    }

    /// Number of pending txs.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no tx is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Total bytes of pending txs.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `tx` could be admitted now (cheap pre-check before CheckTx).
    pub fn can_admit(&self, hash: &TxHash, len: usize) -> Result<(), AdmitError> {
        if self.pending.contains(hash) || self.in_flight.contains(hash) {
            return Err(AdmitError::Duplicate);
        }
        if self.queue.len() >= self.max_txs || self.bytes.saturating_add(len) > self.max_bytes {
            return Err(AdmitError::Full {
                txs: self.queue.len(),
                max_txs: self.max_txs,
                bytes: self.bytes,
                max_bytes: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Appends a tx that passed CheckTx.
    pub fn admit(&mut self, tx: MempoolTx) -> Result<(), AdmitError> {
        self.can_admit(&tx.hash, tx.tx.len())?;
        self.pending.insert(tx.hash);
        self.bytes += tx.tx.len();
        self.queue.push_back(tx);
        Ok(())
    }

    /// Takes up to `max` txs, oldest first, for the next block.
    pub fn take(&mut self, max: usize) -> Vec<MempoolTx> {
        let n = max.min(self.queue.len());
        let batch: Vec<MempoolTx> = self.queue.drain(..n).collect();
        for t in &batch {
            self.pending.remove(&t.hash);
            self.in_flight.insert(t.hash);
            self.bytes -= t.tx.len();
        }
        batch
    }

    /// The block holding `batch` was committed: forget the in-flight hashes (the committed-tx
    /// index refuses them from now on).
    pub fn committed(&mut self, batch: &[MempoolTx]) {
        for t in batch {
            self.in_flight.remove(&t.hash);
        }
    }

    /// The block holding `batch` was abandoned: put its txs back in front, in order.
    pub fn give_back(&mut self, batch: Vec<MempoolTx>) {
        for t in batch.into_iter().rev() {
            self.in_flight.remove(&t.hash);
            self.pending.insert(t.hash);
            self.bytes += t.tx.len();
            self.queue.push_front(t);
        }
    }

    /// A copy of the pending txs in order (cheap: tx bytes are shared).
    pub fn snapshot(&self) -> Vec<MempoolTx> {
        self.queue.iter().cloned().collect()
    }

    /// Drops the txs with these hashes.
    pub fn remove(&mut self, hashes: &BTreeSet<TxHash>) {
        if hashes.is_empty() {
            return;
        }
        let mut removed = 0usize;
        self.queue.retain(|t| {
            let drop = hashes.contains(&t.hash);
            if drop {
                removed += t.tx.len();
            }
            !drop
        });
        self.bytes -= removed;
        for h in hashes {
            self.pending.remove(h);
        }
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    fn tx(s: &str) -> MempoolTx {
        MempoolTx {
            hash: tx_hash(s.as_bytes()),
            tx: Bytes::from(s.to_owned()),
            received: std::time::Instant::now(),
        }
    }

    #[test]
    fn mempool__should_dedupe_bound_and_keep_order() {
        let mut m = Mempool::new(2, 1000);
        m.admit(tx("a")).unwrap();
        assert_eq!(m.admit(tx("a")), Err(AdmitError::Duplicate));
        m.admit(tx("b")).unwrap();
        assert!(matches!(m.admit(tx("c")), Err(AdmitError::Full { .. })));
        let batch = m.take(1);
        assert_eq!(batch[0].tx.as_ref(), b"a");
        assert_eq!(m.admit(tx("a")), Err(AdmitError::Duplicate));
        m.give_back(batch);
        let all = m.take(10);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].tx.as_ref(), b"a");
        m.committed(&all);
        assert!(m.is_empty());
        assert_eq!(m.bytes(), 0);
        m.admit(tx("c")).unwrap();
        m.remove(&[tx_hash(b"c")].into_iter().collect());
        assert!(m.is_empty());
    }
}
