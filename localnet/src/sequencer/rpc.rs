//! The CometBFT-compatible JSON-RPC over HTTP, as clients use it: URI `GET /<method>?...`,
//! JSON-RPC 2.0 `POST /` (single or batch), and `/websocket` (every method, plus `subscribe`,
//! `unsubscribe` and `unsubscribe_all` to `NewBlock`, `NewBlockHeader` and `Tx` events; see
//! [`events`]). Served by axum (hyper) with TCP_NODELAY on every connection.
//!
//! Routes: `status`, `health`, `abci_info`, `abci_query`, `broadcast_tx_sync`,
//! `broadcast_tx_async`, `broadcast_tx_commit`, `check_tx`, `block`, `block_results`, `header`,
//! `commit`, `blockchain`, `validators`, `consensus_params`, `genesis`, `net_info`, `tx`,
//! `tx_search`, `block_search`, `block_by_hash`, `header_by_hash` (see [`super::search`]),
//! `num_unconfirmed_txs`, `unconfirmed_txs`, and the dev-only `dev_add_app` (attach another
//! ABCI app at runtime). Errors are `{"code", "message", "data"}` with CometBFT's codes:
//! -32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid params,
//! -32603 internal error (e.g. `tx already exists in cache`, `mempool is full`).

pub mod encode;
pub mod events;
pub mod params;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use prost::bytes::Bytes;
use serde_json::{json, Value};
use tendermint_proto::v0_38::abci::{CheckTxType, RequestQuery};
use tokio::sync::broadcast;

use self::events::Filter;
use self::params::{parse_target, Params};
use super::mempool::tx_hash;
use super::search::{self, Order};
use super::state::{BroadcastError, Shared};

/// Largest request body (CometBFT's default `max_body_bytes`).
pub const MAX_BODY_BYTES: usize = 1_000_000;
/// Largest JSON-RPC batch.
pub const MAX_BATCH: usize = 100;
/// Most calls running at once (each on a blocking thread: calls read the block store, and
/// `broadcast_tx_commit` waits for a commit).
pub const BLOCKING_THREADS: usize = 64;
/// How long `broadcast_tx_commit` waits for the tx to be committed.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON-RPC error.
#[derive(Debug, Clone)]
pub struct RpcError {
    /// JSON-RPC code.
    pub code: i64,
    /// Short message.
    pub message: &'static str,
    /// Detail.
    pub data: String,
}

impl RpcError {
    /// -32602.
    pub fn invalid_params(data: String) -> Self {
        RpcError {
            code: -32602,
            message: "Invalid params",
            data,
        }
    }
    /// -32603.
    pub fn internal(data: String) -> Self {
        RpcError {
            code: -32603,
            message: "Internal error",
            data,
        }
    }
    /// -32601.
    pub fn method_not_found(method: &str) -> Self {
        RpcError {
            code: -32601,
            message: "Method not found",
            data: format!("unknown method {method:?}"),
        }
    }
    /// -32600.
    pub fn invalid_request(data: String) -> Self {
        RpcError {
            code: -32600,
            message: "Invalid Request",
            data,
        }
    }
    /// -32700.
    pub fn parse_error(data: String) -> Self {
        RpcError {
            code: -32700,
            message: "Parse error",
            data,
        }
    }

    fn to_json(&self, id: &Value) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": self.code, "message": self.message, "data": self.data},
        })
    }

    fn http_status(&self) -> u16 {
        match self.code {
            -32700 | -32600 | -32602 => 400,
            -32601 => 404,
            _ => 500,
        }
    }
}

fn ok_json(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The HTTP server: its runtime, its task, and the thread that feeds committed blocks to
/// subscribers.
pub struct RpcServer {
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    server: tokio::task::JoinHandle<()>,
    pump: JoinHandle<()>,
}

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct Rpc {
    pub(crate) shared: Arc<Shared>,
    pub(crate) rpc_addr: Arc<str>,
    /// The events of each committed block, in order, for `/websocket` subscribers.
    pub(crate) blocks: broadcast::Sender<Arc<[events::BlockEvent]>>,
    /// Open `/websocket` connections.
    pub(crate) ws_clients: Arc<AtomicUsize>,
}

impl RpcServer {
    /// Binds `listen` and starts serving on a runtime of its own; it stops when `stop` is set.
    pub fn start(
        listen: &str,
        shared: Arc<Shared>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<RpcServer> {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("binding the RPC on {listen}"))?;
        listener
            .set_nonblocking(true)
            .context("making the RPC listener non-blocking")?;
        let addr = listener.local_addr().context("the RPC's bound address")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("rpc")
            .enable_all()
            .build()
            .context("starting the RPC runtime")?;
        let (blocks, _) = broadcast::channel(ws::BLOCK_BACKLOG);
        let pump = ws::spawn_block_pump(shared.clone(), blocks.clone(), stop.clone())?;
        let rpc = Rpc {
            shared,
            rpc_addr: addr.to_string().into(),
            blocks,
            ws_clients: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/websocket", get(ws::upgrade))
            .route("/metrics", get(metrics))
            .fallback(http)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(rpc);
        let server = runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "RPC listener");
                    return;
                }
            };
            // Small JSON answers go out at once, not after a delayed ACK (Nagle).
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "RPC: TCP_NODELAY");
                }
            });
            let stopped = async move {
                while !stop.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!(error = %e, "RPC server stopped");
            }
        });
        Ok(RpcServer {
            addr,
            runtime,
            server,
            pump,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server (after `stop` was set): open connections get a moment to end,
    /// then are dropped.
    pub fn join(self) {
        let RpcServer {
            runtime,
            server,
            pump,
            ..
        } = self;
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        let _ = pump.join();
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Runs a call off the async workers: calls read the block store and may wait for a commit.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "RPC call failed");
            None
        }
    }
}

fn internal_error() -> Response {
    let e = RpcError::internal("the call failed".to_owned());
    json_response(500, &e.to_json(&Value::Null))
}

/// Every route but `/websocket`: URI `GET /<method>?...`, `GET /` (the routes), and
/// JSON-RPC `POST /`.
/// `GET /metrics`: the sequencer's metrics in the Prometheus text format.
async fn metrics(State(rpc): State<Rpc>) -> Response {
    let shared = rpc.shared.clone();
    let text = blocking(move || {
        let mempool = {
            let m = shared.mempool();
            (m.len(), m.bytes())
        };
        let up = shared.app_list().iter().filter(|a| a.is_up()).count();
        shared
            .metrics
            .encode(mempool, up, rpc.ws_clients.load(Ordering::Acquire))
    })
    .await;
    match text {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                crate::sequencer::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        None => internal_error(),
    }
}

async fn http(
    State(rpc): State<Rpc>,
    method: Method,
    uri: Uri,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    match method {
        Method::GET => {
            let target = uri.path_and_query().map_or("/", |p| p.as_str());
            let (path, query) = match parse_target(target) {
                Ok(p) => p,
                Err(e) => return json_response(e.http_status(), &e.to_json(&json!(-1))),
            };
            let method = path.trim_matches('/').to_owned();
            if method.is_empty() {
                return json_response(
                    200,
                    &json!({"routes": ROUTES.iter().map(|r| r.0).collect::<Vec<_>>()}),
                );
            }
            let id = json!(-1);
            let out = blocking(move || {
                call(&rpc.shared, &rpc.rpc_addr, &method, || {
                    Ok(Params::Uri(query))
                })
            })
            .await;
            match out {
                Some(Ok(v)) => json_response(200, &ok_json(&id, v)),
                Some(Err(e)) => json_response(e.http_status(), &e.to_json(&id)),
                None => internal_error(),
            }
        }
        Method::POST => {
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    let status = e.status().as_u16();
                    let e = RpcError::invalid_request(format!(
                        "reading the body (at most {MAX_BODY_BYTES} bytes): {e}"
                    ));
                    return json_response(status, &e.to_json(&Value::Null));
                }
            };
            match blocking(move || handle_post(&rpc.shared, &rpc.rpc_addr, &body)).await {
                Some(out) => json_response(200, &out),
                None => internal_error(),
            }
        }
        _ => {
            let e = RpcError::invalid_request("use GET or POST".to_owned());
            json_response(405, &e.to_json(&Value::Null))
        }
    }
}

fn handle_post(shared: &Shared, rpc_addr: &str, body: &[u8]) -> Value {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return RpcError::parse_error(e.to_string()).to_json(&Value::Null),
    };
    match parsed {
        Value::Array(reqs) => {
            if reqs.is_empty() || reqs.len() > MAX_BATCH {
                return RpcError::invalid_request(format!(
                    "a batch holds 1 to {MAX_BATCH} requests"
                ))
                .to_json(&Value::Null);
            }
            Value::Array(
                reqs.into_iter()
                    .map(|r| handle_one(shared, rpc_addr, r))
                    .collect(),
            )
        }
        single => handle_one(shared, rpc_addr, single),
    }
}

fn handle_one(shared: &Shared, rpc_addr: &str, req: Value) -> Value {
    let Value::Object(mut obj) = req else {
        return RpcError::invalid_request("a request must be a JSON object".to_owned())
            .to_json(&Value::Null);
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return RpcError::invalid_request("jsonrpc must be \"2.0\"".to_owned()).to_json(&id);
    }
    let Some(method) = obj.get("method").and_then(Value::as_str).map(str::to_owned) else {
        return RpcError::invalid_request("missing method".to_owned()).to_json(&id);
    };
    let params = obj.remove("params");
    let names = ROUTES
        .iter()
        .find(|r| r.0 == method)
        .map_or(&[][..], |r| r.1);
    match call(shared, rpc_addr, &method, || {
        Params::from_json(params, names)
    }) {
        Ok(v) => ok_json(&id, v),
        Err(e) => e.to_json(&id),
    }
}

/// Route names and their argument names (for positional params).
const ROUTES: &[(&str, &[&str])] = &[
    ("status", &[]),
    ("health", &[]),
    ("abci_info", &[]),
    ("abci_query", &["path", "data", "height", "prove"]),
    ("broadcast_tx_sync", &["tx"]),
    ("broadcast_tx_async", &["tx"]),
    ("broadcast_tx_commit", &["tx"]),
    ("block", &["height"]),
    ("block_results", &["height"]),
    ("tx", &["hash", "prove"]),
    ("num_unconfirmed_txs", &[]),
    ("unconfirmed_txs", &["limit"]),
    ("header", &["height"]),
    ("commit", &["height"]),
    ("validators", &["height", "page", "per_page"]),
    ("consensus_params", &["height"]),
    ("genesis", &[]),
    ("blockchain", &["minHeight", "maxHeight"]),
    ("net_info", &[]),
    ("check_tx", &["tx"]),
    (
        "tx_search",
        &["query", "prove", "page", "per_page", "order_by"],
    ),
    ("block_search", &["query", "page", "per_page", "order_by"]),
    ("block_by_hash", &["hash"]),
    ("header_by_hash", &["hash"]),
    ("dev_add_app", &["name", "addr", "token"]),
];

fn call(
    shared: &Shared,
    rpc_addr: &str,
    method: &str,
    params: impl FnOnce() -> Result<Params, RpcError>,
) -> Result<Value, RpcError> {
    shared
        .metrics
        .rpc_call(method, ROUTES.iter().any(|(m, _)| *m == method));
    match method {
        "status" => Ok(encode::status(shared, rpc_addr)),
        // Dev only, off unless the localnet set a token: attach another local ABCI app, e.g.
        // a node that `localnet add-node` started; it gets InitChain and every stored block,
        // then blocks.
        "dev_add_app" => {
            let p = params()?;
            let need = |v: Option<String>, n: &str| {
                v.ok_or_else(|| RpcError::invalid_params(format!("missing {n}")))
            };
            let name = need(p.string("name")?, "name")?;
            let addr = need(p.string("addr")?, "addr")?;
            let token = p.string("token")?;
            shared
                .add_app(&name, &addr, token.as_deref())
                .map_err(RpcError::invalid_params)?;
            Ok(json!({"name": name, "addr": addr, "attached": true}))
        }
        "health" => Ok(json!({})),
        "abci_info" => shared
            .info()
            .map(|r| encode::abci_info(&r))
            .map_err(RpcError::internal),
        "abci_query" => {
            let p = params()?;
            let req = RequestQuery {
                path: p.string("path")?.unwrap_or_default(),
                data: Bytes::from(p.hex_bytes("data")?.unwrap_or_default()),
                height: p.int("height")?.unwrap_or(0),
                prove: p.bool("prove")?.unwrap_or(false),
            };
            shared
                .query(req)
                .map(|r| encode::abci_query(&r))
                .map_err(RpcError::internal)
        }
        "broadcast_tx_sync" | "broadcast_tx_async" => {
            let tx = required_tx(&params()?)?;
            let (hash, res) = shared.broadcast(tx).map_err(broadcast_error)?;
            encode::broadcast(&hash, &res).map_err(RpcError::internal)
        }
        "broadcast_tx_commit" => {
            let tx = required_tx(&params()?)?;
            let (hash, check) = shared.broadcast(tx).map_err(broadcast_error)?;
            let check_json = encode::check_tx(&check);
            if check.code != 0 {
                return Ok(json!({
                    "check_tx": check_json,
                    "tx_result": encode::exec_tx_result(&Default::default()),
                    "hash": encode::hexb(&hash),
                    "height": "0",
                }));
            }
            let mut loc = None;
            shared.wait_until(COMMIT_TIMEOUT, |v| {
                loc = v.tx_index.get(&hash);
                loc.is_some()
            });
            let loc = loc.ok_or_else(|| {
                RpcError::internal("timed out waiting for tx to be included in a block".into())
            })?;
            let block = shared.block_at(loc.height).map_err(RpcError::internal)?;
            let idx = usize::try_from(loc.index).unwrap_or(usize::MAX);
            let result = block
                .result
                .tx_results
                .get(idx)
                .cloned()
                .unwrap_or_default();
            Ok(json!({
                "check_tx": check_json,
                "tx_result": encode::exec_tx_result(&result),
                "hash": encode::hexb(&hash),
                "height": loc.height.to_string(),
            }))
        }
        "block" | "block_results" | "header" | "commit" => {
            let height = height_param(shared, &params()?)?;
            let b = shared.block_at(height).map_err(RpcError::internal)?;
            match method {
                "block" => encode::block(shared, &b),
                "header" => encode::header(shared, &b),
                "commit" => encode::commit(shared, &b),
                _ => Ok(encode::block_results(&b)),
            }
            .map_err(RpcError::internal)
        }
        "validators" | "consensus_params" => {
            let height = height_param(shared, &params()?)?;
            // The height must exist, as CometBFT requires.
            shared.block_at(height).map_err(RpcError::internal)?;
            if method == "validators" {
                encode::validators(shared, height)
            } else {
                encode::consensus_params_at(shared, height)
            }
            .map_err(RpcError::internal)
        }
        "genesis" => encode::genesis(shared).map_err(RpcError::internal),
        "blockchain" => {
            let p = params()?;
            let last = shared.view().height;
            let want = |name: &str| -> Result<Option<u64>, RpcError> {
                Ok(p.int(name)?
                    .and_then(|h| u64::try_from(h).ok())
                    .filter(|h| *h > 0))
            };
            let to = want("maxHeight")?.unwrap_or(last).min(last);
            let from = want("minHeight")?
                .unwrap_or(1)
                .max(to.saturating_sub(BLOCKCHAIN_MAX - 1))
                .max(shared.view().earliest_height());
            if from > to {
                return Err(RpcError::internal(format!(
                    "min height {from} can't be greater than max height {to}"
                )));
            }
            encode::blockchain(shared, last, from, to).map_err(RpcError::internal)
        }
        "net_info" => Ok(json!({
            "listening": true,
            "listeners": [format!("Listener(@{rpc_addr})")],
            "n_peers": "0",
            "peers": [],
        })),
        "check_tx" => {
            let tx = required_tx(&params()?)?;
            shared
                .check_tx(tx, CheckTxType::New)
                .map(|r| encode::check_tx(&r))
                .map_err(RpcError::internal)
        }
        "unconfirmed_txs" => {
            let limit = params()?
                .int("limit")?
                .and_then(|l| usize::try_from(l).ok())
                .filter(|l| *l > 0)
                .unwrap_or(30)
                .min(100);
            let m = shared.mempool();
            let txs: Vec<Value> = m
                .snapshot()
                .iter()
                .take(limit)
                .map(|t| encode::b64(&t.tx))
                .collect();
            Ok(json!({
                "n_txs": txs.len().to_string(),
                "total": m.len().to_string(),
                "total_bytes": m.bytes().to_string(),
                "txs": txs,
            }))
        }
        "tx_search" | "block_search" => {
            let p = params()?;
            let query = p
                .string("query")?
                .ok_or_else(|| RpcError::invalid_params("missing param \"query\"".into()))?;
            let filter =
                Filter::search(&query).map_err(|e| RpcError::invalid_params(e.to_string()))?;
            let order = match p.string("order_by")?.as_deref() {
                None | Some("") | Some("asc") => Order::Asc,
                Some("desc") => Order::Desc,
                Some(_) => {
                    return Err(RpcError::invalid_params(
                        "expected order_by to be either `asc` or `desc` or empty".into(),
                    ))
                }
            };
            let (page, per_page) = (p.int("page")?, p.int("per_page")?);
            let bad_page = |e: search::PageError| RpcError::invalid_params(e.to_string());
            if method == "tx_search" {
                let found = shared
                    .view()
                    .search
                    .txs(&filter, order, page, per_page)
                    .map_err(bad_page)?;
                let mut txs = Vec::with_capacity(found.items.len());
                for (height, index) in found.items {
                    let b = shared.block_at(height).map_err(RpcError::internal)?;
                    let i = usize::try_from(index).unwrap_or(usize::MAX);
                    let hash = b.block.txs.get(i).map(|t| tx_hash(t)).unwrap_or_default();
                    txs.push(encode::tx(&b, &hash, index));
                }
                Ok(json!({"txs": txs, "total_count": found.total.to_string()}))
            } else {
                let found = shared
                    .view()
                    .search
                    .blocks(&filter, order, page, per_page)
                    .map_err(bad_page)?;
                let mut blocks = Vec::with_capacity(found.items.len());
                for height in found.items {
                    let b = shared.block_at(height).map_err(RpcError::internal)?;
                    blocks.push(encode::block(shared, &b).map_err(RpcError::internal)?);
                }
                Ok(json!({"blocks": blocks, "total_count": found.total.to_string()}))
            }
        }
        "block_by_hash" | "header_by_hash" => {
            let hash = params()?.hash("hash")?;
            let height = hash.and_then(|h| shared.view().search.height_of(&h));
            let block = height
                .map(|h| shared.block_at(h))
                .transpose()
                .map_err(RpcError::internal)?;
            match (method, block) {
                ("block_by_hash", Some(b)) => encode::block(shared, &b).map_err(RpcError::internal),
                ("block_by_hash", None) => Ok(json!({
                    "block_id": {"hash": "", "parts": {"total": 0, "hash": ""}},
                    "block": null,
                })),
                (_, Some(b)) => encode::header(shared, &b).map_err(RpcError::internal),
                (_, None) => Ok(json!({"header": null})),
            }
        }
        "tx" => {
            let p = params()?;
            let hash = p
                .hash("hash")?
                .ok_or_else(|| RpcError::invalid_params("missing param \"hash\"".into()))?;
            let loc = shared.view().tx_index.get(&hash).ok_or_else(|| {
                RpcError::internal(format!("tx ({}) not found", hex::encode_upper(hash)))
            })?;
            let b = shared.block_at(loc.height).map_err(RpcError::internal)?;
            let mut tx = encode::tx(&b, &hash, loc.index);
            if p.bool("prove")?.unwrap_or(false) {
                tx["proof"] = encode::tx_proof(&b, loc.index).map_err(RpcError::internal)?;
            }
            Ok(tx)
        }
        "num_unconfirmed_txs" => {
            let m = shared.mempool();
            Ok(json!({
                "n_txs": m.len().to_string(),
                "total": m.len().to_string(),
                "total_bytes": m.bytes().to_string(),
                "txs": null,
            }))
        }
        other => Err(RpcError::method_not_found(other)),
    }
}

/// Most block metas one `blockchain` call returns (CometBFT's limit).
const BLOCKCHAIN_MAX: u64 = 20;

/// The `height` param: the latest height when absent or 0.
fn height_param(shared: &Shared, p: &Params) -> Result<u64, RpcError> {
    match p.int("height")? {
        Some(h) if h < 0 => Err(RpcError::internal(format!(
            "height must be greater than 0, but got {h}"
        ))),
        Some(h) if h > 0 => Ok(u64::try_from(h).unwrap_or(0)),
        _ => Ok(shared.view().height),
    }
}

fn required_tx(p: &Params) -> Result<Bytes, RpcError> {
    p.bytes("tx")?
        .map(Bytes::from)
        .ok_or_else(|| RpcError::invalid_params("missing param \"tx\"".into()))
}

fn broadcast_error(e: BroadcastError) -> RpcError {
    match e {
        BroadcastError::Refused(m) | BroadcastError::Unavailable(m) => RpcError::internal(m),
    }
}
