//! The dev sequencer's metrics, in the Prometheus text format (written by prometheus-client) at
//! the RPC's `GET /metrics`. Names have the prefix `seqmpc_sequencer_`; counters end in
//! `_total`, durations are in seconds.
//!
//! Beside the chain's own figures (height, blocks, txs, block time, mempool, RPC calls), it
//! measures what a user sees: `seqmpc_sequencer_request_duration_seconds`, from the moment the
//! sequencer took a keygen or sign request into its mempool to the commit of the block whose
//! events end it (`key_ready`/`key_error`, `sign_done`/`sign_failed`), by operation, scheme
//! and outcome. Each mpcd reports the MPC part of the same requests
//! (`seqmpc_mpc_latency_seconds`), so the two can be read side by side.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tendermint_proto::v0_38::abci::{Event, ResponseFinalizeBlock};

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Requests followed at once (the oldest is forgotten beyond it).
pub const MAX_FOLLOWED: usize = 100_000;

/// Labels of an RPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The JSON-RPC method (`other` for an unknown one).
    pub method: String,
}

/// Labels of a user request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `keygen` or `sign`.
    pub operation: String,
    /// The scheme (`frost-ed25519`, `frost-secp256k1-tr`, `cggmp24-secp256k1`).
    pub scheme: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// A request being followed: when its tx entered the mempool, and its scheme.
#[derive(Clone, Debug)]
struct Followed {
    since: Instant,
    scheme: String,
    seq: u64,
}

/// The requests being followed, by (operation, id), and their insertion order (to forget the
/// oldest).
#[derive(Debug, Default)]
struct Follows {
    by_id: BTreeMap<(&'static str, String), Followed>,
    order: BTreeMap<u64, (&'static str, String)>,
    next_seq: u64,
}

/// The sequencer's metrics (see the module doc).
pub struct Metrics {
    registry: Registry,
    height: Gauge,
    mempool_txs: Gauge,
    mempool_bytes: Gauge,
    apps_up: Gauge,
    websocket_clients: Gauge,
    block_store_bytes: Gauge,
    earliest_height: Gauge,
    blocks: Counter,
    txs_ok: Counter,
    txs_failed: Counter,
    block_seconds: Histogram,
    block_txs: Histogram,
    rpc_calls: Family<MethodLabels, Counter>,
    requests: Family<RequestLabels, Histogram>,
    /// Keygens by key id, signs by request id.
    follows: Mutex<Follows>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn attr<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
    e.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_str())
}

impl Metrics {
    /// The metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("seqmpc_sequencer");
        let m = Metrics {
            registry: Registry::default(),
            height: Gauge::default(),
            mempool_txs: Gauge::default(),
            mempool_bytes: Gauge::default(),
            apps_up: Gauge::default(),
            websocket_clients: Gauge::default(),
            block_store_bytes: Gauge::default(),
            earliest_height: Gauge::default(),
            blocks: Counter::default(),
            txs_ok: Counter::default(),
            txs_failed: Counter::default(),
            // 1 ms .. about 16 s.
            block_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            block_txs: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            rpc_calls: Family::default(),
            // 10 ms .. about 20 min.
            requests: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 18))
            }),
            follows: Mutex::new(Follows::default()),
        };
        registry.register("height", "Last committed height", m.height.clone());
        registry.register(
            "mempool_txs",
            "Txs waiting in the mempool",
            m.mempool_txs.clone(),
        );
        registry.register(
            "mempool_bytes",
            "Bytes of the txs waiting in the mempool",
            m.mempool_bytes.clone(),
        );
        registry.register(
            "apps_up",
            "Apps (mpcd) the sequencer drives that are up",
            m.apps_up.clone(),
        );
        registry.register(
            "websocket_clients",
            "Open /websocket connections",
            m.websocket_clients.clone(),
        );
        registry.register(
            "block_store_bytes",
            "Bytes of the block log's segment files on disk",
            m.block_store_bytes.clone(),
        );
        registry.register(
            "earliest_height",
            "Lowest height the block store serves (above 1 once pruned)",
            m.earliest_height.clone(),
        );
        registry.register("blocks", "Blocks committed", m.blocks.clone());
        registry.register("txs_ok", "Txs committed with code 0", m.txs_ok.clone());
        registry.register(
            "txs_failed",
            "Txs committed with a non-zero code",
            m.txs_failed.clone(),
        );
        registry.register(
            "block_duration_seconds",
            "Time to produce a block: store, FinalizeBlock on every app, Commit",
            m.block_seconds.clone(),
        );
        registry.register("block_txs", "Txs per block", m.block_txs.clone());
        registry.register(
            "rpc_calls",
            "RPC calls, by JSON-RPC method",
            m.rpc_calls.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "What a user waits: a keygen or sign request from its entry into the mempool to \
             the commit of the block that ends it, by operation, scheme and outcome",
            m.requests.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The block log's size on disk and the lowest height it serves.
    pub fn block_store(&self, bytes: u64, earliest: u64) {
        self.block_store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.earliest_height
            .set(i64::try_from(earliest).unwrap_or(i64::MAX));
    }

    /// One RPC call of `method` (one of `known`, else counted as `other`).
    pub fn rpc_call(&self, method: &str, known: bool) {
        let method = if known { method } else { "other" };
        self.rpc_calls
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .inc();
    }

    /// A block committed at `height`: `received` is when each of its txs entered the mempool
    /// (block order), `result` the reference FinalizeBlock answer, `took` the time to produce it.
    pub fn block_committed(
        &self,
        height: u64,
        received: &[Instant],
        result: &ResponseFinalizeBlock,
        took: std::time::Duration,
    ) {
        let now = Instant::now();
        self.height.set(i64::try_from(height).unwrap_or(i64::MAX));
        self.blocks.inc();
        self.block_seconds.observe(took.as_secs_f64());
        self.block_txs.observe(received.len() as f64);
        for r in &result.tx_results {
            if r.code == 0 {
                self.txs_ok.inc();
            } else {
                self.txs_failed.inc();
            }
        }
        // Requests first (a request and its end may share a block: not on this chain, where
        // the MPC work starts after Commit, but the order keeps it right anyway).
        for (r, since) in result.tx_results.iter().zip(received) {
            for e in &r.events {
                let followed = match e.r#type.as_str() {
                    "keygen_requested" => attr(e, "key_id").map(|id| ("keygen", id)),
                    "sign_requested" => attr(e, "request_id").map(|id| ("sign", id)),
                    _ => None,
                };
                if let Some((op, id)) = followed {
                    let scheme = attr(e, "scheme").unwrap_or("unknown").to_owned();
                    self.follow(op, id, *since, scheme);
                }
            }
        }
        let ends = result
            .events
            .iter()
            .chain(result.tx_results.iter().flat_map(|r| r.events.iter()));
        for e in ends {
            let ended = match e.r#type.as_str() {
                "key_ready" => attr(e, "key_id").map(|id| ("keygen", id, "ok")),
                "key_error" => attr(e, "key_id").map(|id| ("keygen", id, "error")),
                "sign_done" => attr(e, "request_id").map(|id| ("sign", id, "ok")),
                "sign_failed" => attr(e, "request_id").map(|id| ("sign", id, "error")),
                _ => None,
            };
            if let Some((op, id, outcome)) = ended {
                self.end(op, id, outcome, now);
            }
        }
    }

    fn follow(&self, op: &'static str, id: &str, since: Instant, scheme: String) {
        let mut f = self.follows.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (op, id.to_owned());
        // A retried keygen keeps its first request's time.
        if f.by_id.contains_key(&key) {
            return;
        }
        let seq = f.next_seq;
        f.next_seq = seq.wrapping_add(1);
        f.by_id.insert(key.clone(), Followed { since, scheme, seq });
        f.order.insert(seq, key);
        while f.by_id.len() > MAX_FOLLOWED {
            let Some((_, oldest)) = f.order.pop_first() else {
                break;
            };
            f.by_id.remove(&oldest);
        }
    }

    fn end(&self, op: &'static str, id: &str, outcome: &str, now: Instant) {
        let ended = {
            let mut f = self.follows.lock().unwrap_or_else(PoisonError::into_inner);
            let ended = f.by_id.remove(&(op, id.to_owned()));
            if let Some(e) = &ended {
                f.order.remove(&e.seq);
            }
            ended
        };
        let Some(e) = ended else {
            return;
        };
        self.requests
            .get_or_create(&RequestLabels {
                operation: op.to_owned(),
                scheme: e.scheme,
                outcome: outcome.to_owned(),
            })
            .observe(now.saturating_duration_since(e.since).as_secs_f64());
    }

    /// The text of one scrape, the gauges read now set first.
    pub fn encode(
        &self,
        mempool: (usize, usize),
        apps_up: usize,
        websocket_clients: usize,
    ) -> String {
        let g = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.mempool_txs.set(g(mempool.0));
        self.mempool_bytes.set(g(mempool.1));
        self.apps_up.set(g(apps_up));
        self.websocket_clients.set(g(websocket_clients));
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;
    use tendermint_proto::v0_38::abci::{EventAttribute, ExecTxResult};

    fn ev(kind: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            r#type: kind.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| EventAttribute {
                    key: (*k).into(),
                    value: (*v).into(),
                    index: true,
                })
                .collect(),
        }
    }

    fn tx(code: u32, events: Vec<Event>) -> ExecTxResult {
        ExecTxResult {
            code,
            events,
            ..Default::default()
        }
    }

    /// A registry with a sample in every family.
    fn observed() -> Metrics {
        let m = Metrics::new();
        let t0 = Instant::now();
        let block1 = ResponseFinalizeBlock {
            tx_results: vec![
                tx(
                    0,
                    vec![ev(
                        "keygen_requested",
                        &[("key_id", "k1"), ("scheme", "frost-ed25519")],
                    )],
                ),
                tx(
                    0,
                    vec![ev(
                        "sign_requested",
                        &[("request_id", "r1"), ("scheme", "frost-ed25519")],
                    )],
                ),
                tx(5, vec![]),
            ],
            ..Default::default()
        };
        m.block_committed(
            1,
            &[t0, t0, t0],
            &block1,
            std::time::Duration::from_millis(3),
        );
        m.rpc_call("status", true);
        m.rpc_call("nope", false);
        // The keygen ends in a tx's events, the sign at a deadline (a block event).
        let block2 = ResponseFinalizeBlock {
            events: vec![ev("sign_failed", &[("request_id", "r1")])],
            tx_results: vec![tx(0, vec![ev("key_ready", &[("key_id", "k1")])])],
            ..Default::default()
        };
        m.block_committed(
            2,
            &[Instant::now()],
            &block2,
            std::time::Duration::from_millis(2),
        );
        m
    }

    /// Every sequencer metric the shipped Grafana dashboard queries is one it exports.
    #[test]
    fn dashboard__should_query_only_metrics_the_sequencer_exports() {
        let text = observed().encode((0, 0), 1, 0);
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dash = std::fs::read_to_string(dir.join("../deploy/grafana-dashboard.json")).unwrap();
        let names: std::collections::BTreeSet<&str> = dash
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("seqmpc_sequencer_"))
            .collect();
        assert!(names.len() >= 5, "{names:?}");
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "the dashboard queries {name}, which the sequencer's /metrics does not export"
            );
        }
    }

    #[test]
    fn metrics__should_time_requests_from_mempool_to_the_block_that_ends_them() {
        let m = observed();
        // An end nobody followed (requested before the sequencer started) counts nothing.
        let block3 = ResponseFinalizeBlock {
            tx_results: vec![tx(0, vec![ev("sign_done", &[("request_id", "old")])])],
            ..Default::default()
        };
        m.block_committed(
            3,
            &[Instant::now()],
            &block3,
            std::time::Duration::from_millis(1),
        );

        let text = m.encode((7, 700), 4, 1);
        let lines: Vec<&str> = text.lines().collect();
        let has = |l: &str| lines.contains(&l);
        assert!(has("seqmpc_sequencer_height 3"), "{text}");
        assert!(has("seqmpc_sequencer_blocks_total 3"), "{text}");
        assert!(has("seqmpc_sequencer_txs_ok_total 4"), "{text}");
        assert!(has("seqmpc_sequencer_txs_failed_total 1"), "{text}");
        assert!(has("seqmpc_sequencer_mempool_txs 7"), "{text}");
        assert!(has("seqmpc_sequencer_apps_up 4"), "{text}");
        assert!(
            has(r#"seqmpc_sequencer_rpc_calls_total{method="other"} 1"#),
            "{text}"
        );
        assert!(
            has(
                r#"seqmpc_sequencer_request_duration_seconds_count{operation="keygen",scheme="frost-ed25519",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"seqmpc_sequencer_request_duration_seconds_count{operation="sign",scheme="frost-ed25519",outcome="error"} 1"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"operation="sign",scheme="unknown""#),
            "{text}"
        );
        // Help texts end with one period (prometheus-client adds it).
        assert!(
            text.lines()
                .filter(|l| l.starts_with("# HELP"))
                .all(|l| l.ends_with('.') && !l.ends_with("..")),
            "{text}"
        );
        // A real parser reads it.
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        assert!(scrape.samples.iter().any(|s| matches!(
            (&*s.metric, &s.value),
            (
                "seqmpc_sequencer_block_duration_seconds",
                prometheus_parse::Value::Histogram(_)
            )
        )));
        let f = m.follows.lock().unwrap();
        assert!(f.by_id.is_empty() && f.order.is_empty());
    }
}
