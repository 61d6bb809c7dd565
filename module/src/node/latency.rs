//! Cumulative latency histograms for Prometheus: from the committed job's arrival at this node
//! to the operation's outcome here (the MPC part of a request's latency; the user-visible part
//! adds the block that commits the request and the one that commits the result).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use seqmpc_proto::Scheme;

/// Labels of one latency series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `keygen`, `sign` (full protocol), `sign_presigned` (CGGMP24 from a presignature) or
    /// `reshare` (at a new party).
    pub operation: &'static str,
    /// The key's scheme.
    pub scheme: &'static str,
}

/// Buckets from 0.5 ms to about 65 s (doubling): FROST signing is around a millisecond,
/// CGGMP24 aux info tens of seconds.
fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The histograms, by operation and scheme (shared: clones observe into the same series).
#[derive(Clone, Debug)]
pub struct Latencies(pub Family<OpLabels, Histogram, fn() -> Histogram>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Family::new_with_constructor(histogram))
    }
}

impl Latencies {
    /// Records one `operation` of a `scheme` key that took `us` microseconds.
    /// No allocation: it runs once per signature.
    pub fn observe(&self, operation: &'static str, scheme: Scheme, us: u64) {
        let labels = OpLabels {
            operation,
            scheme: scheme.as_str(),
        };
        self.0.get_or_create(&labels).observe(us as f64 / 1e6);
    }
}
