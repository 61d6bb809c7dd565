//! Txs already decoded and signature-checked by CheckTx, kept for the FinalizeBlock and the
//! rechecks that see the same bytes again.
//!
//! [`SignedTx::decode`] is pure: the same bytes always give the same [`SignedTx`] or the same
//! error. So a cache keyed by the SHA-256 of the bytes changes no outcome, only the CPU spent:
//! with it a tx's ed25519 signature is checked once per node, at CheckTx, instead of at CheckTx,
//! at every recheck while it waits, and again at FinalizeBlock. Under CometBFT every validator
//! runs CheckTx on every tx it gossips, so every validator saves it. Only successes are kept
//! (a failure costs its sender the check every time), at most [`DecodedTxs::CAPACITY`] by default, the
//! oldest dropped first; FinalizeBlock takes a tx's entry out once the tx is in a block.

use std::collections::{BTreeMap, VecDeque};

use seqmpc_proto::tx::{tx_hash, SignedTx};
use seqmpc_proto::DomainError;

/// Bounded cache of decoded txs by the SHA-256 of their bytes.
#[derive(Debug)]
pub struct DecodedTxs {
    capacity: usize,
    by_hash: BTreeMap<[u8; 32], SignedTx>,
    /// Insertion order, for eviction; may name hashes already taken out.
    order: VecDeque<[u8; 32]>,
}

impl Default for DecodedTxs {
    fn default() -> Self {
        DecodedTxs::with_capacity(Self::CAPACITY)
    }
}

impl DecodedTxs {
    /// Most txs kept by default (a few blocks' worth of a full mempool).
    pub const CAPACITY: usize = 20_000;

    /// A cache of at most `capacity` txs.
    pub fn with_capacity(capacity: usize) -> Self {
        DecodedTxs {
            capacity,
            by_hash: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Decodes `raw` (or finds it decoded) and keeps it for later.
    pub fn decode(&mut self, raw: &[u8]) -> Result<SignedTx, DomainError> {
        let hash = tx_hash(raw);
        if let Some(tx) = self.by_hash.get(&hash) {
            return Ok(tx.clone());
        }
        let tx = SignedTx::decode(raw)?;
        while self.by_hash.len() >= self.capacity.max(1) {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.by_hash.remove(&old);
        }
        self.by_hash.insert(hash, tx.clone());
        self.order.push_back(hash);
        // `order` also holds hashes taken out by `take`: keep it bounded too.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let live = &self.by_hash;
            self.order.retain(|h| live.contains_key(h));
        }
        Ok(tx)
    }

    /// Decodes `raw`, taking its entry out if CheckTx decoded it already.
    pub fn take(&mut self, raw: &[u8]) -> Result<SignedTx, DomainError> {
        match self.by_hash.remove(&tx_hash(raw)) {
            Some(tx) => Ok(tx),
            None => SignedTx::decode(raw),
        }
    }

    /// Txs held.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use seqmpc_proto::tx::{sign_tx, TxMsg};
    use seqmpc_proto::KeyId;

    fn tx(seq: u64) -> Vec<u8> {
        let msg = TxMsg::KeyDelete {
            key_id: KeyId::new("k1").unwrap(),
        };
        sign_tx(&SigningKey::from_bytes(&[7; 32]), "c", seq, msg)
    }

    #[test]
    fn decoded__should_give_what_decode_gives_and_stay_bounded() {
        let mut c = DecodedTxs::with_capacity(50);
        let raw = tx(1);
        let first = c.decode(&raw).unwrap();
        assert_eq!(c.len(), 1);
        let again = c.decode(&raw).unwrap();
        assert_eq!(again.hash, first.hash);
        assert_eq!(again.msg, SignedTx::decode(&raw).unwrap().msg);
        // A bad signature is refused every time and never kept.
        let mut bad = raw.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(c.decode(&bad).is_err());
        assert!(c.decode(&bad).is_err());
        assert_eq!(c.len(), 1);
        // FinalizeBlock takes it out; a tx never checked decodes too.
        assert_eq!(c.take(&raw).unwrap().hash, first.hash);
        assert!(c.is_empty());
        assert_eq!(c.take(&tx(2)).unwrap().sequence, 2);
        for s in 0..161 {
            let raw = tx(s);
            c.decode(&raw).unwrap();
            if s % 3 == 0 {
                c.take(&raw).unwrap();
            }
        }
        assert_eq!(c.len(), 50);
        assert!(c.order.len() <= 100);
        // The newest stay: the last tx kept decodes from the cache.
        assert!(c.by_hash.contains_key(&tx_hash(&tx(160))));
    }
}
