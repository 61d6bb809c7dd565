//! The node's metrics in the Prometheus text format (0.0.4, which every scraper reads; written
//! by prometheus-client), at the status endpoint's `/metrics`: counters and gauges from the module's
//! [`Metrics`] at scrape time, and its cumulative latency histograms. Every name has the
//! prefix `seqmpc_`; counters end in `_total`, durations are in seconds.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use seqmpc_module::node::Metrics;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What the node knows beside [`Metrics`] at scrape time.
#[derive(Clone, Debug, Default)]
pub struct NodeGauges {
    /// The chain height the app has committed.
    pub chain_height: u64,
    /// Peers with an open p2p connection.
    pub connected_peers: u64,
    /// Inbound p2p connections refused (not a registry peer).
    pub refused_connections: u64,
}

/// One scrape: a snapshot of the counters and gauges.
#[derive(Debug)]
struct Snapshot {
    m: Metrics,
    node: NodeGauges,
}

fn to_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.m;
        let counters: [(&str, &str, u64); 12] = [
            ("keygens_ok", "Keygens that ended READY here.", m.keygens_ok),
            (
                "keygens_failed",
                "Keygens that failed here.",
                m.keygens_failed,
            ),
            (
                "signatures",
                "Signatures this node assembled, verified and submitted.",
                m.signatures_ok,
            ),
            ("signs_failed", "Signings that failed here.", m.signs_failed),
            (
                "sign_backups_submitted",
                "FROST signatures submitted here as a backup: the aggregator's was late.",
                m.sign_backups_submitted,
            ),
            (
                "signatures_presigned",
                "CGGMP24 signatures made from a presignature here.",
                m.signatures_presigned,
            ),
            (
                "p2p_messages_dropped",
                "p2p messages dropped (undecodable, unknown sender, overflow).",
                m.messages_dropped,
            ),
            (
                "p2p_refused_connections",
                "Inbound p2p connections refused (not a registry peer).",
                self.node.refused_connections,
            ),
            (
                "cggmp_prime_sets_taken",
                "CGGMP24 safe-prime sets taken for aux-info runs since start.",
                m.cggmp_prime_sets_taken,
            ),
            (
                "cggmp_prime_sets_generated",
                "CGGMP24 safe-prime sets generated and stored here since start.",
                m.cggmp_prime_sets_generated,
            ),
            (
                "cggmp_presignatures_generated",
                "CGGMP24 presignatures this node finished its part of and pooled.",
                m.cggmp_presignatures_generated,
            ),
            (
                "reshares_ok",
                "Reshared shares made READY here.",
                m.reshares_ok,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, i64); 9] = [
            (
                "sessions_active",
                "MPC sessions running here.",
                to_i64(m.sessions_active),
            ),
            (
                "keygens_in_progress",
                "Keygens running here.",
                to_i64(m.keygens.len()),
            ),
            (
                "cggmp_prime_pool_sets",
                "CGGMP24 safe-prime sets stored (fixture primes: 1).",
                to_i64(m.cggmp_prime_pool_level),
            ),
            (
                "cggmp_prime_pool_target_sets",
                "CGGMP24 unreserved safe-prime sets the pool keeps ready.",
                to_i64(m.cggmp_prime_pool_target),
            ),
            (
                "cggmp_keygens_waiting_for_primes",
                "CGGMP24 keygens waiting here for a safe-prime set.",
                to_i64(m.cggmp_keygens_waiting_for_primes),
            ),
            (
                "cggmp_presignatures_ready",
                "CGGMP24 presignatures ready here, all keys.",
                to_i64(m.cggmp_presignatures_ready),
            ),
            (
                "cggmp_presign_pool_target",
                "CGGMP24 presignatures kept per key and signer subset.",
                to_i64(m.cggmp_presign_pool_target),
            ),
            (
                "chain_height",
                "Height the app has committed.",
                i64::try_from(self.node.chain_height).unwrap_or(i64::MAX),
            ),
            (
                "p2p_connected_peers",
                "Peers with an open p2p connection.",
                i64::try_from(self.node.connected_peers).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// The metrics as Prometheus text.
pub fn encode(m: &Metrics, node: NodeGauges) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("seqmpc");
    registry.register(
        "mpc_latency_seconds",
        "Committed job received here to this node's outcome (the MPC part of a request's \
         latency), by operation and scheme",
        m.latency.0.clone(),
    );
    registry.register_collector(Box::new(Snapshot { m: m.clone(), node }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use seqmpc_proto::Scheme;

    use super::*;

    /// The text parses with an independent parser (prometheus-parse) and carries the values.
    #[test]
    fn encode__should_write_prometheus_text_that_a_parser_reads_back() {
        let mut m = Metrics {
            keygens_ok: 3,
            signatures_ok: 7,
            cggmp_prime_pool_level: 2,
            cggmp_presignatures_generated: 5,
            ..Default::default()
        };
        m.latency.observe("sign", Scheme::FrostEd25519, 1_200);
        m.latency.observe("sign", Scheme::FrostEd25519, 900);
        m.latency
            .observe("keygen", Scheme::Cggmp24Secp256k1, 30_000_000);
        m.sessions_active = 4;
        let text = encode(
            &m,
            NodeGauges {
                chain_height: 42,
                connected_peers: 3,
                refused_connections: 1,
            },
        )
        .unwrap();
        // Help texts end with one period (prometheus-client adds it).
        assert!(
            text.lines()
                .filter(|l| l.starts_with("# HELP"))
                .all(|l| l.ends_with('.') && !l.ends_with("..")),
            "{text}"
        );
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| s.value.clone())
        };
        use prometheus_parse::Value;
        assert_eq!(value("seqmpc_keygens_ok_total"), Some(Value::Counter(3.0)));
        assert_eq!(value("seqmpc_signatures_total"), Some(Value::Counter(7.0)));
        assert_eq!(
            value("seqmpc_cggmp_presignatures_generated_total"),
            Some(Value::Counter(5.0))
        );
        assert_eq!(value("seqmpc_chain_height"), Some(Value::Gauge(42.0)));
        assert_eq!(value("seqmpc_sessions_active"), Some(Value::Gauge(4.0)));
        assert_eq!(
            value("seqmpc_cggmp_prime_pool_sets"),
            Some(Value::Gauge(2.0))
        );
        let sign = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "seqmpc_mpc_latency_seconds"
                    && s.labels.get("operation") == Some("sign")
                    && s.labels.get("scheme") == Some("frost-ed25519")
            })
            .unwrap();
        match &sign.value {
            Value::Histogram(buckets) => {
                // 0.9 ms and 1.2 ms: none at or under 0.5 ms, both at or under 2 ms.
                let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
                assert_eq!((at(0.0005), at(0.002)), (0.0, 2.0));
            }
            other => panic!("not a histogram: {other:?}"),
        }
    }

    /// Every node metric the shipped Grafana dashboard (`deploy/grafana-dashboard.json`)
    /// queries is one this node exports (the sequencer's, `seqmpc_sequencer_*`, are checked by
    /// the sequencer's own test).
    #[test]
    fn dashboard__should_query_only_metrics_the_node_exports() {
        let m = Metrics::default();
        m.latency.observe("sign", Scheme::FrostEd25519, 1_000);
        let text = encode(&m, NodeGauges::default()).unwrap();
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dash = std::fs::read_to_string(dir.join("../deploy/grafana-dashboard.json")).unwrap();
        let names: std::collections::BTreeSet<&str> = dash
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("seqmpc_") && *w != "seqmpc_mpcd")
            .filter(|w| !w.starts_with("seqmpc_sequencer_"))
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "the dashboard queries {name}, which /metrics does not export"
            );
        }
    }
}
