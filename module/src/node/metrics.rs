//! What a node counts and shows on its status endpoint (`/status`, `/metrics`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use seqmpc_proto::{KeyId, Scheme};

use super::{latency, PresignPoolLevel};

/// Counters and latencies, read by the node's status endpoint.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Metrics {
    /// Sessions alive now.
    pub sessions_active: usize,
    /// Keygens completed READY locally.
    pub keygens_ok: u64,
    /// Keygens failed locally.
    pub keygens_failed: u64,
    /// Signatures aggregated, verified and submitted here (this node was the aggregator, or
    /// a backup submitter).
    pub signatures_ok: u64,
    /// Sign sessions failed here.
    pub signs_failed: u64,
    /// FROST signatures this node submitted as a backup: the aggregator's had not reached the
    /// chain in time.
    pub sign_backups_submitted: u64,
    /// Keygen latencies in microseconds: committed job received → share stored READY (last 1000).
    pub keygen_latency_us: VecDeque<u64>,
    /// Sign latencies in microseconds: committed job received → signature verified (last 10000).
    pub sign_latency_us: VecDeque<u64>,
    /// p2p messages dropped (undecodable, unknown session sender, overflow).
    pub messages_dropped: u64,
    /// CGGMP24 safe-prime sets ready for a keygen (the pool level; fixture primes count as 1).
    pub cggmp_primes_ready: usize,
    /// CGGMP24 signatures made from a presignature (this node was the aggregator).
    pub signatures_presigned: u64,
    /// Sign latencies of those, microseconds, committed job → signature verified (last 10000).
    pub presigned_sign_latency_us: VecDeque<u64>,
    /// CGGMP24 presignatures ready here, all keys.
    pub cggmp_presignatures_ready: usize,
    /// Target per key and signer subset.
    pub cggmp_presign_pool_target: usize,
    /// Level of each pool.
    pub cggmp_presign_pools: Vec<PresignPoolLevel>,
    /// Keygens running here and where each stands (refreshed every 250 ms).
    pub keygens: Vec<KeygenProgress>,
    /// CGGMP24 safe-prime sets stored in the pool now (fixture primes: 1).
    pub cggmp_prime_pool_level: usize,
    /// CGGMP24 safe-prime sets the pool keeps ready (fixture primes: 1).
    pub cggmp_prime_pool_target: usize,
    /// CGGMP24 safe-prime sets taken out of the pool for aux-info runs since start (one per
    /// aux-info run; an unused one put back does not count).
    pub cggmp_prime_sets_taken: u64,
    /// CGGMP24 keygens waiting here for a safe-prime set.
    pub cggmp_keygens_waiting_for_primes: usize,
    /// CGGMP24 safe-prime sets generated and stored here since start (the refill rate is its
    /// rate).
    pub cggmp_prime_sets_generated: u64,
    /// CGGMP24 presignatures this node finished its part of and pooled since start (the
    /// presignature supply: its rate).
    pub cggmp_presignatures_generated: u64,
    /// Reshared shares made READY here (the chain confirmed the resharing).
    pub reshares_ok: u64,
    /// Resharing latencies at a new party in microseconds: committed job received → new
    /// share checked, stored (staged) and reported (last 1000).
    pub reshare_latency_us: VecDeque<u64>,
    /// Cumulative latency histograms by operation and scheme, for Prometheus (`/metrics`);
    /// not in the JSON.
    #[serde(skip)]
    pub latency: latency::Latencies,
}

/// Where a keygen running on this node stands.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeygenProgress {
    /// Key.
    pub key_id: KeyId,
    /// Scheme.
    pub scheme: Scheme,
    /// `awaiting-prepare`, `awaiting-start`, `dkg`, or `dkg+aux-info` (CGGMP24 generating
    /// Paillier keys: tens of seconds); for a CGGMP24 keygen waiting for safe primes,
    /// `generating a safe-prime set` at a party without one, and `waiting for safe primes:
    /// node1,node3` at the coordinator.
    pub phase: String,
    /// Milliseconds since the committed job arrived.
    pub elapsed_ms: u64,
}

pub(super) fn push_bounded(q: &mut VecDeque<u64>, v: u64, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(v);
}

/// Shared view of the metrics.
pub type SharedMetrics = Arc<Mutex<Metrics>>;
