//! The node's own result txs, confirmed by its own app. The result submitter follows each tx it
//! sent until a block holds it (`daemon::outbox`); it used to ask the RPC's `tx` route once per
//! tx every 2 s, one call per tx, which at hundreds of results a second was most of the
//! RPC's work. The node's app executes every block anyway: at Commit it records here how each
//! watched tx was delivered, and the submitter reads that, with no RPC call at all.
//!
//! Only the hashes the submitter watches are recorded (the app looks a block's txs up in
//! the watched set), so memory follows the txs in flight; a hash watched longer than
//! [`FORGET_AFTER`] is forgotten, and the submitter then asks the RPC for it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A watched tx is forgotten this long after it was sent (far beyond the submitter's resend
/// time: by then it has been delivered or given up).
pub const FORGET_AFTER: Duration = Duration::from_secs(120);

/// Most txs watched at once; the oldest go first.
pub const MAX_WATCHED: usize = 200_000;

/// How a tx was delivered: its code and log.
pub type Delivery = (u32, String);

#[derive(Default)]
struct Watched {
    /// By tx hash: when it was watched, and the delivery once a committed block held it.
    txs: BTreeMap<[u8; 32], (Instant, Option<Delivery>)>,
    /// Hashes in the order they were watched, with when.
    order: VecDeque<([u8; 32], Instant)>,
}

/// Shared by the app (which records deliveries at Commit) and the submitter (which watches and
/// reads them). Cloning shares it.
#[derive(Clone, Default)]
pub struct TxWatch(Arc<Mutex<Watched>>);

impl std::fmt::Debug for TxWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxWatch")
            .field("watched", &self.lock().txs.len())
            .finish()
    }
}

/// A tx hash as the RPC writes it (hex, either case), as bytes.
fn parse(hash_hex: &str) -> Option<[u8; 32]> {
    hex::decode(hash_hex).ok()?.try_into().ok()
}

/// The hash CometBFT names a tx by: SHA-256 of its bytes.
pub fn tx_hash(tx: &[u8]) -> [u8; 32] {
    Sha256::digest(tx).into()
}

impl TxWatch {
    fn lock(&self) -> MutexGuard<'_, Watched> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the tx of hash `hash`: before it is broadcast, so that no block can hold it
    /// before it is watched.
    pub fn watch(&self, hash: [u8; 32]) {
        let now = Instant::now();
        let mut w = self.lock();
        while let Some((old, at)) = w.order.front().copied() {
            if w.order.len() < MAX_WATCHED && now.duration_since(at) < FORGET_AFTER {
                break;
            }
            w.order.pop_front();
            // Unless taken meanwhile (and watched again since).
            if w.txs.get(&old).is_some_and(|(t, _)| *t == at) {
                w.txs.remove(&old);
            }
        }
        let Watched { txs, order } = &mut *w;
        if let std::collections::btree_map::Entry::Vacant(e) = txs.entry(hash) {
            e.insert((now, None));
            order.push_back((hash, now));
        }
    }

    /// Stops following `hash` (a tx the mempool refused: no block will hold it).
    pub fn unwatch(&self, hash: &[u8; 32]) {
        self.lock().txs.remove(hash);
    }

    /// Whether any tx is watched (the app hashes a block's txs only then).
    pub fn is_empty(&self) -> bool {
        self.lock().txs.is_empty()
    }

    /// Of `hashes`, the indices of those watched and not yet delivered.
    pub fn watched(&self, hashes: &[[u8; 32]]) -> Vec<usize> {
        let w = self.lock();
        hashes
            .iter()
            .enumerate()
            .filter(|(_, h)| matches!(w.txs.get(*h), Some((_, None))))
            .map(|(i, _)| i)
            .collect()
    }

    /// A committed block delivered these watched txs so.
    pub fn delivered(&self, deliveries: Vec<([u8; 32], Delivery)>) {
        let mut w = self.lock();
        for (hash, d) in deliveries {
            if let Some((_, slot)) = w.txs.get_mut(&hash) {
                *slot = Some(d);
            }
        }
    }

    /// Where the tx `hash_hex` stands: `None` if it is not watched (forgotten, or never
    /// watched), `Some(None)` while no committed block holds it, and `Some(Some(delivery))`
    /// once one did; the watch then forgets it.
    pub fn take(&self, hash_hex: &str) -> Option<Option<Delivery>> {
        let hash = parse(hash_hex)?;
        let mut w = self.lock();
        match w.txs.get(&hash)? {
            (_, None) => Some(None),
            // Forgotten; its place in `order` goes when it reaches the front.
            (_, Some(_)) => Some(w.txs.remove(&hash).and_then(|(_, d)| d)),
        }
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tx_watch__should_report_a_watched_tx_once_a_committed_block_delivered_it() {
        let w = TxWatch::default();
        assert!(w.is_empty());
        let (a, b, c) = (tx_hash(b"a"), tx_hash(b"b"), tx_hash(b"c"));
        w.watch(a);
        w.watch(b);
        assert_eq!(w.take("not a hash"), None);
        assert!(!w.is_empty());
        // A block holding c (not watched), b and a: only the watched ones are recorded.
        assert_eq!(w.watched(&[c, b, a]), vec![1, 2]);
        assert_eq!(w.take(&hex::encode(a)), Some(None), "not committed yet");
        w.delivered(vec![(a, (0, String::new())), (b, (6, "refused".into()))]);
        w.delivered(vec![(c, (0, String::new()))]);
        assert_eq!(w.take(&hex::encode(a)), Some(Some((0, String::new()))));
        assert_eq!(
            w.take(&hex::encode_upper(b)),
            Some(Some((6, "refused".into())))
        );
        // Taken: forgotten, and so is what was never watched.
        assert_eq!(w.take(&hex::encode(a)), None);
        assert_eq!(w.take(&hex::encode(c)), None);
        assert!(w.is_empty());
        assert_eq!(w.watched(&[a, b]), Vec::<usize>::new());
        // Refused by the mempool: no longer followed.
        w.watch(c);
        w.unwatch(&c);
        assert!(w.is_empty());
    }

    #[test]
    fn tx_watch__should_forget_the_oldest_beyond_its_bound() {
        let w = TxWatch::default();
        let first = tx_hash(&0u64.to_be_bytes());
        for n in 0..=MAX_WATCHED as u64 {
            w.watch(tx_hash(&n.to_be_bytes()));
        }
        assert_eq!(w.lock().txs.len(), MAX_WATCHED);
        assert_eq!(w.take(&hex::encode(first)), None, "the oldest went");
    }
}
