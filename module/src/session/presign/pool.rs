//! This node's presignature pools: its parts of presignatures per key and signer subset,
//! the READY CGGMP24 keys they are for, and which subsets this node leads.

use std::collections::{BTreeMap, VecDeque};

use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use tracing::info;

use super::super::Millis;
use crate::protocol::cggmp::SingleUsePresignature;
use crate::store::{KeyRecord, ShareStatus};

pub type PresignId = [u8; 32];

/// A key's signer subset.
type Subset = (KeyId, Vec<NodeId>);

pub(in crate::session) struct PoolEntry {
    pub(in crate::session) id: PresignId,
    pub(in crate::session) generation: SessionId,
    pub(in crate::session) presig: SingleUsePresignature,
}

/// Wait before generating again for a subset whose last presignature failed (a signer down,
/// refusing, or without a pool).
const RETRY_AFTER_MS: Millis = 30_000;

/// This node's parts of presignatures, per key and signer subset, oldest first, and the READY
/// CGGMP24 keys they are made for.
#[derive(Default)]
pub(in crate::session) struct Pools {
    ready: BTreeMap<Subset, VecDeque<PoolEntry>>,
    /// Subsets whose last generation failed, and when to try again.
    retry_after: BTreeMap<Subset, Millis>,
    /// READY CGGMP24 keys held here.
    pub(in crate::session) keys: BTreeMap<KeyId, KeyInfo>,
    /// The levels changed since [`Manager::presign_levels_changed`] last said so.
    pub(in crate::session) changed: bool,
}

/// A READY CGGMP24 key this node holds a share of.
#[derive(Clone, Debug)]
pub(in crate::session) struct KeyInfo {
    pub(in crate::session) generation: SessionId,
    pub(in crate::session) parties: Vec<NodeId>,
    pub(in crate::session) threshold: usize,
}

/// One pool's level, for the status endpoint.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PresignPoolLevel {
    /// Key.
    pub key_id: KeyId,
    /// Signer subset.
    pub signers: Vec<NodeId>,
    /// Presignatures ready at this node.
    pub ready: usize,
}

impl Pools {
    pub(in crate::session) fn level(&self, key_id: &KeyId, signers: &[NodeId]) -> usize {
        self.ready
            .get(&(key_id.clone(), signers.to_vec()))
            .map_or(0, VecDeque::len)
    }

    /// Adds a presignature; keeps at most `cap` per subset (oldest dropped first).
    pub(in crate::session) fn insert(&mut self, key_id: &KeyId, entry: PoolEntry, cap: usize) {
        let q = self
            .ready
            .entry((key_id.clone(), entry.presig.signers().to_vec()))
            .or_default();
        q.push_back(entry);
        while q.len() > cap.max(1) {
            q.pop_front();
        }
        self.changed = true;
    }

    /// Takes the oldest presignature of the subset for `generation` out of the pool.
    pub(in crate::session) fn take_oldest(
        &mut self,
        key_id: &KeyId,
        signers: &[NodeId],
        generation: &SessionId,
    ) -> Option<(PresignId, SingleUsePresignature)> {
        let q = self.ready.get_mut(&(key_id.clone(), signers.to_vec()))?;
        self.changed = true;
        // Entries of an older generation are useless: drop them on the way.
        while let Some(e) = q.pop_front() {
            if e.generation == *generation {
                return Some((e.id, e.presig));
            }
        }
        None
    }

    /// Takes presignature `id` of the subset out of the pool.
    pub(in crate::session) fn take(
        &mut self,
        key_id: &KeyId,
        signers: &[NodeId],
        id: &PresignId,
        generation: &SessionId,
    ) -> Option<SingleUsePresignature> {
        let q = self.ready.get_mut(&(key_id.clone(), signers.to_vec()))?;
        let pos = q.iter().position(|e| e.id == *id)?;
        let e = q.remove(pos)?;
        self.changed = true;
        (e.generation == *generation).then_some(e.presig)
    }

    pub(in crate::session) fn purge_subset(&mut self, key_id: &KeyId, signers: &[NodeId]) -> usize {
        self.changed = true;
        self.ready
            .remove(&(key_id.clone(), signers.to_vec()))
            .map_or(0, |q| q.len())
    }

    pub(in crate::session) fn purge_key(&mut self, key_id: &KeyId) -> usize {
        let subsets: Vec<Subset> = self
            .ready
            .keys()
            .filter(|(k, _)| k == key_id)
            .cloned()
            .collect();
        self.changed = true;
        subsets
            .iter()
            .filter_map(|s| self.ready.remove(s))
            .map(|q| q.len())
            .sum()
    }

    pub(in crate::session) fn backing_off(
        &self,
        key_id: &KeyId,
        signers: &[NodeId],
        now: Millis,
    ) -> bool {
        self.retry_after
            .get(&(key_id.clone(), signers.to_vec()))
            .is_some_and(|t| *t > now)
    }

    pub(in crate::session) fn back_off(&mut self, key_id: &KeyId, signers: &[NodeId], now: Millis) {
        self.retry_after.retain(|_, t| *t > now);
        self.retry_after.insert(
            (key_id.clone(), signers.to_vec()),
            now.saturating_add(RETRY_AFTER_MS),
        );
    }

    /// Follows a record: a READY CGGMP24 share is a key to fill pools for.
    pub(in crate::session) fn track(&mut self, rec: &KeyRecord) {
        if rec.scheme != Scheme::Cggmp24Secp256k1 || rec.status != ShareStatus::Ready {
            return;
        }
        let info = KeyInfo {
            generation: rec.session,
            parties: rec.parties.clone(),
            threshold: usize::try_from(rec.threshold).unwrap_or(usize::MAX),
        };
        // Another generation: the old one's presignatures are useless.
        if self
            .keys
            .get(&rec.key_id)
            .is_some_and(|k| k.generation != info.generation)
        {
            self.purge_key(&rec.key_id);
        }
        self.keys.insert(rec.key_id.clone(), info);
    }

    /// Forgets a key: no more presignatures, the pooled ones dropped (zeroized).
    pub(in crate::session) fn untrack(&mut self, key_id: &KeyId) {
        self.keys.remove(key_id);
        let n = self.purge_key(key_id);
        if n > 0 {
            info!(%key_id, purged = n, "presignatures purged");
        }
    }

    /// The generation of `key_id` this node holds READY, if it follows it.
    pub(in crate::session) fn generation(&self, key_id: &KeyId) -> Option<SessionId> {
        self.keys.get(key_id).map(|k| k.generation)
    }

    pub(in crate::session) fn levels(&self) -> Vec<PresignPoolLevel> {
        self.ready
            .iter()
            .map(|((key_id, signers), q)| PresignPoolLevel {
                key_id: key_id.clone(),
                signers: signers.clone(),
                ready: q.len(),
            })
            .collect()
    }
}

/// Signer subsets of `parties` (sorted) of `threshold` nodes whose first node is `me`, in
/// lexicographic order; none if the key has more than `max` subsets in all.
pub(in crate::session) fn subsets_led_by(
    parties: &[NodeId],
    threshold: usize,
    me: &NodeId,
    max: usize,
) -> Vec<Vec<NodeId>> {
    let n = parties.len();
    if threshold == 0 || threshold > n || binomial(n, threshold) > max {
        return Vec::new();
    }
    let Some(i) = parties.iter().position(|p| p == me) else {
        return Vec::new();
    };
    let rest = parties.get(i.saturating_add(1)..).unwrap_or_default();
    let mut out = Vec::new();
    let mut pick = Vec::with_capacity(threshold);
    pick.push(me.clone());
    combinations(rest, threshold.saturating_sub(1), 0, &mut pick, &mut out);
    out
}

fn combinations(
    from: &[NodeId],
    k: usize,
    start: usize,
    pick: &mut Vec<NodeId>,
    out: &mut Vec<Vec<NodeId>>,
) {
    if k == 0 {
        out.push(pick.clone());
        return;
    }
    for (j, node) in from.iter().enumerate().skip(start) {
        if from.len().saturating_sub(j) < k {
            break;
        }
        pick.push(node.clone());
        combinations(from, k.saturating_sub(1), j.saturating_add(1), pick, out);
        pick.pop();
    }
}

fn binomial(n: usize, k: usize) -> usize {
    let k = k.min(n.saturating_sub(k));
    let mut r: usize = 1;
    for i in 0..k {
        r = r
            .saturating_mul(n.saturating_sub(i))
            .checked_div(i.saturating_add(1))
            .unwrap_or(r);
    }
    r
}
#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::new(*n).unwrap()).collect()
    }

    #[test]
    fn subsets_led_by__should_cover_every_subset_exactly_once() {
        let parties = ids(&["a", "b", "c", "d"]);
        let mut all = Vec::new();
        for me in &parties {
            for s in subsets_led_by(&parties, 3, me, 64) {
                assert_eq!(s.first(), Some(me));
                assert_eq!(s.len(), 3);
                assert!(s.windows(2).all(|w| w[0] < w[1]));
                all.push(s);
            }
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4);
        assert_eq!(subsets_led_by(&parties, 3, &parties[0], 64).len(), 3);
        assert_eq!(subsets_led_by(&parties, 3, &parties[1], 64).len(), 1);
        assert!(subsets_led_by(&parties, 3, &parties[2], 64).is_empty());
    }

    #[test]
    fn subsets_led_by__should_give_none_beyond_the_cap_or_outside() {
        let parties = ids(&["a", "b", "c", "d", "e", "f"]);
        assert!(subsets_led_by(&parties, 3, &parties[0], 19).is_empty()); // C(6,3) = 20
        assert_eq!(subsets_led_by(&parties, 3, &parties[0], 20).len(), 10);
        assert!(subsets_led_by(&parties, 3, &NodeId::new("z").unwrap(), 64).is_empty());
        assert!(subsets_led_by(&parties, 7, &parties[0], 64).is_empty());
        assert_eq!(binomial(4, 3), 4);
        assert_eq!(binomial(10, 7), 120);
    }
}
