//! The node's local status endpoint: its own view of its key shares (never secret material),
//! its peers and its metrics. HTTP GET `/status`, `/keys`, `/key/<id>`, `/metrics` (Prometheus
//! text, [`crate::daemon::prom`]), `/metrics/json` (the counters as JSON), `/metrics/latencies`
//! (recent latencies, JSON).

use std::sync::Arc;

use seqmpc_module::node::SharedMetrics;
use seqmpc_module::p2p::P2pHandle;
use seqmpc_module::store::StoreHandle;
use seqmpc_proto::{KeyId, NodeId, SessionId};
use serde_json::{json, Value};
use tracing::warn;

use crate::abci::AppHandle;
use crate::daemon::diverge::{divergences, LocalKey};
use crate::daemon::prom::{self, NodeGauges};

/// What the endpoint reads.
#[derive(Clone)]
pub struct StatusContext {
    /// This node.
    pub node: NodeId,
    /// Key store.
    pub store: StoreHandle,
    /// p2p.
    pub p2p: P2pHandle,
    /// Metrics.
    pub metrics: SharedMetrics,
    /// The app (for the chain height).
    pub app: AppHandle,
    /// Runtime to run async reads on.
    pub rt: tokio::runtime::Handle,
    /// Why this node is not fit for production, if it is not (a test build, fixture
    /// primes): `/status` shows it to whoever looks.
    pub insecure: Vec<String>,
}

/// A response body.
enum Body {
    Json(Value),
    /// Text with its content type.
    Text(&'static str, String),
}

fn respond(req: tiny_http::Request, code: u16, body: Body) {
    let (content_type, text) = match body {
        Body::Json(v) => ("application/json", v.to_string()),
        Body::Text(ct, text) => (ct, text),
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes());
    let mut resp = tiny_http::Response::from_string(text).with_status_code(code);
    if let Ok(h) = header {
        resp = resp.with_header(h);
    }
    if let Err(e) = req.respond(resp) {
        warn!(error = %e, "status response failed");
    }
}

fn route(ctx: &StatusContext, path: &str) -> (u16, Value) {
    let path = path.split('?').next().unwrap_or_default();
    match path {
        "/status" => {
            let height = ctx.app.call(|a| a.state().map(|s| s.height)).flatten();
            let peers = ctx.rt.block_on(ctx.p2p.connected());
            // Metadata only: no share is decrypted to answer (KeyStore::list_views).
            let keys = ctx.rt.block_on(ctx.store.list_views());
            let metrics = ctx.metrics.lock().map(|m| m.clone()).ok();
            match keys {
                Ok(keys) => {
                    // This node's records against the chain (settled states only).
                    let local: Vec<LocalKey> = keys
                        .iter()
                        .filter_map(|k| {
                            Some(LocalKey {
                                key_id: k.key_id.clone(),
                                session: hex::decode(&k.session)
                                    .ok()
                                    .and_then(|b| SessionId::from_slice(&b).ok())?,
                                status: k.status,
                                public_key: k.public_key.clone(),
                            })
                        })
                        .collect();
                    let me = ctx.node.clone();
                    let divergences = ctx
                        .app
                        .call(move |a| a.state().map(|s| divergences(&me, &local, s)))
                        .flatten();
                    (
                        200,
                        json!({
                            "diverged": divergences.as_ref().map(|d| !d.is_empty()),
                            "divergences": divergences,
                            "node_id": ctx.node,
                            "insecure": ctx.insecure,
                            "features": crate::COMPILED_FEATURES,
                            "cggmp_bigint_backend": seqmpc_module::protocol::cggmp::BIGINT_BACKEND,
                            "chain_height": height,
                            "connected_peers": peers,
                            "p2p_refused_connections": ctx.p2p.refused_connections(),
                            "keys": keys,
                            "sessions_active": metrics.as_ref().map(|m| m.sessions_active),
                            "keygens": metrics.as_ref().map(|m| &m.keygens),
                            "cggmp_primes_ready": metrics.as_ref().map(|m| m.cggmp_primes_ready),
                            "cggmp_presign_pool_target": metrics.as_ref().map(|m| m.cggmp_presign_pool_target),
                            "cggmp_presign_pools": metrics.as_ref().map(|m| &m.cggmp_presign_pools),
                            "cggmp_prime_pool_level": metrics.as_ref().map(|m| m.cggmp_prime_pool_level),
                            "cggmp_prime_pool_target": metrics.as_ref().map(|m| m.cggmp_prime_pool_target),
                            "cggmp_prime_sets_taken": metrics.as_ref().map(|m| m.cggmp_prime_sets_taken),
                            "cggmp_keygens_waiting_for_primes": metrics.as_ref().map(|m| m.cggmp_keygens_waiting_for_primes),
                        }),
                    )
                }
                Err(e) => (500, json!({"error": format!("key store: {e}")})),
            }
        }
        "/keys" => match ctx.rt.block_on(ctx.store.list_views()) {
            Ok(keys) => (200, json!(keys)),
            Err(e) => (500, json!({"error": format!("key store: {e}")})),
        },
        // Counters only: cheap enough to poll.
        "/metrics/json" => match ctx.metrics.lock() {
            Ok(m) => (
                200,
                json!({
                    "sessions_active": m.sessions_active,
                    "keygens_ok": m.keygens_ok,
                    "keygens_failed": m.keygens_failed,
                    "signatures_ok": m.signatures_ok,
                    "signs_failed": m.signs_failed,
                    "sign_backups_submitted": m.sign_backups_submitted,
                    "messages_dropped": m.messages_dropped,
                    "p2p_refused_connections": ctx.p2p.refused_connections(),
                    "cggmp_primes_ready": m.cggmp_primes_ready,
                    "signatures_presigned": m.signatures_presigned,
                    "cggmp_presignatures_ready": m.cggmp_presignatures_ready,
                    "cggmp_prime_pool_level": m.cggmp_prime_pool_level,
                    "cggmp_prime_pool_target": m.cggmp_prime_pool_target,
                    "cggmp_prime_sets_taken": m.cggmp_prime_sets_taken,
                    "cggmp_keygens_waiting_for_primes": m.cggmp_keygens_waiting_for_primes,
                }),
            ),
            Err(_) => (500, json!({"error": "metrics unavailable"})),
        },
        "/metrics/latencies" => match ctx.metrics.lock() {
            Ok(m) => (200, json!(*m)),
            Err(_) => (500, json!({"error": "metrics unavailable"})),
        },
        p => match p.strip_prefix("/key/").map(KeyId::new) {
            Some(Ok(id)) => match ctx.rt.block_on(ctx.store.view(&id)) {
                Ok(Some(v)) => (200, json!(v)),
                Ok(None) => (
                    404,
                    json!({"error": format!("node {} holds no record of key {id}", ctx.node)}),
                ),
                Err(e) => (500, json!({"error": format!("key store: {e}")})),
            },
            Some(Err(e)) => (400, json!({"error": e.to_string()})),
            None => (
                404,
                json!({"error": "unknown path; known: /status, /keys, /key/<id>, /metrics (Prometheus), /metrics/json, /metrics/latencies"}),
            ),
        },
    }
}

/// `/metrics`: Prometheus text.
fn prometheus(ctx: &StatusContext) -> (u16, Body) {
    let Ok(m) = ctx.metrics.lock().map(|m| m.clone()) else {
        return (500, Body::Json(json!({"error": "metrics unavailable"})));
    };
    let node = NodeGauges {
        chain_height: ctx
            .app
            .call(|a| a.state().map(|s| s.height))
            .flatten()
            .unwrap_or(0),
        connected_peers: ctx.rt.block_on(ctx.p2p.connected()).len() as u64,
        refused_connections: ctx.p2p.refused_connections(),
    };
    match prom::encode(&m, node) {
        Ok(text) => (200, Body::Text(prom::CONTENT_TYPE, text)),
        Err(e) => (500, Body::Json(json!({"error": format!("metrics: {e}")}))),
    }
}

/// Serves the endpoint on `addr` from a few named threads.
pub fn serve(addr: &str, ctx: StatusContext) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let server = Arc::new(
        tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?,
    );
    let bound = server.server_addr().to_ip();
    for i in 0..2 {
        let server = server.clone();
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name(format!("status-{i}"))
            .spawn(move || {
                for req in server.incoming_requests() {
                    let (code, body) = match req.url().split('?').next() {
                        Some("/metrics") => prometheus(&ctx),
                        _ => {
                            let (code, v) = route(&ctx, req.url());
                            (code, Body::Json(v))
                        }
                    };
                    respond(req, code, body);
                }
            })?;
    }
    Ok(bound)
}
