//! The CometBFT-compatible JSON-RPC over HTTP, as clients use it: URI `GET /<method>?...` and
//! JSON-RPC 2.0 `POST /` (single or batch).
//!
//! Routes: `status`, `health`, `abci_info`, `abci_query`, `broadcast_tx_sync`,
//! `broadcast_tx_async`, `broadcast_tx_commit`, `block`, `block_results`, `tx`,
//! `num_unconfirmed_txs`, and the dev-only `dev_add_app` (attach another ABCI app at runtime). Errors are `{"code", "message", "data"}` with CometBFT's codes:
//! -32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid params,
//! -32603 internal error (e.g. `tx already exists in cache`, `mempool is full`).

pub mod encode;
pub mod params;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context;
use prost::bytes::Bytes;
use serde_json::{json, Value};
use tendermint_proto::v0_38::abci::RequestQuery;
use tiny_http::{Header, Method, Request, Response, Server};

use self::params::{parse_target, Params};
use super::state::{BroadcastError, Shared};

/// Largest request body (CometBFT's default `max_body_bytes`).
pub const MAX_BODY_BYTES: usize = 1_000_000;
/// Largest JSON-RPC batch.
pub const MAX_BATCH: usize = 100;
/// HTTP worker threads.
pub const WORKERS: usize = 8;
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

/// The HTTP server and its worker threads.
pub struct RpcServer {
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl RpcServer {
    /// Binds `listen` and starts the workers; they stop when `stop` is set.
    pub fn start(
        listen: &str,
        shared: Arc<Shared>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<RpcServer> {
        let server = Server::http(listen)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("binding the RPC on {listen}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .context("the RPC listens on a non-IP address")?;
        let server = Arc::new(server);
        let mut workers = Vec::new();
        for n in 0..WORKERS {
            let (server, shared, stop) = (server.clone(), shared.clone(), stop.clone());
            let rpc_addr = addr.to_string();
            workers.push(
                thread::Builder::new()
                    .name(format!("rpc-{n}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            match server.recv_timeout(Duration::from_millis(200)) {
                                Ok(Some(req)) => handle(&shared, &rpc_addr, req),
                                Ok(None) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "RPC accept failed");
                                    thread::sleep(Duration::from_millis(50));
                                }
                            }
                        }
                    })
                    .context("spawning an RPC worker")?,
            );
        }
        Ok(RpcServer { addr, workers })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the workers (after `stop` was set).
    pub fn join(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }
}

fn json_header() -> Option<Header> {
    Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).ok()
}

fn respond(req: Request, status: u16, body: &Value) {
    let mut resp = Response::from_string(body.to_string()).with_status_code(status);
    if let Some(h) = json_header() {
        resp = resp.with_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::debug!(error = %e, "RPC: writing a response failed");
    }
}

fn handle(shared: &Shared, rpc_addr: &str, mut req: Request) {
    match req.method() {
        Method::Get => {
            let (path, query) = match parse_target(req.url()) {
                Ok(p) => p,
                Err(e) => {
                    let status = e.http_status();
                    respond(req, status, &e.to_json(&json!(-1)));
                    return;
                }
            };
            let method = path.trim_matches('/');
            if method.is_empty() {
                respond(
                    req,
                    200,
                    &json!({"routes": ROUTES.iter().map(|r| r.0).collect::<Vec<_>>()}),
                );
                return;
            }
            let id = json!(-1);
            match call(shared, rpc_addr, method, || Ok(Params::Uri(query))) {
                Ok(v) => respond(req, 200, &ok_json(&id, v)),
                Err(e) => {
                    let status = e.http_status();
                    respond(req, status, &e.to_json(&id));
                }
            }
        }
        Method::Post => {
            if req.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
                let e = RpcError::invalid_request(format!(
                    "request body larger than {MAX_BODY_BYTES} bytes"
                ));
                respond(req, 413, &e.to_json(&Value::Null));
                return;
            }
            let mut body = Vec::new();
            let read = req
                .as_reader()
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut body);
            if let Err(e) = read {
                let e = RpcError::invalid_request(format!("reading the body: {e}"));
                respond(req, 400, &e.to_json(&Value::Null));
                return;
            }
            if body.len() > MAX_BODY_BYTES {
                let e = RpcError::invalid_request(format!(
                    "request body larger than {MAX_BODY_BYTES} bytes"
                ));
                respond(req, 413, &e.to_json(&Value::Null));
                return;
            }
            let out = handle_post(shared, rpc_addr, &body);
            respond(req, 200, &out);
        }
        _ => {
            let e = RpcError::invalid_request("use GET or POST".to_owned());
            respond(req, 405, &e.to_json(&Value::Null));
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
    ("dev_add_app", &["name", "addr", "token"]),
];

fn call(
    shared: &Shared,
    rpc_addr: &str,
    method: &str,
    params: impl FnOnce() -> Result<Params, RpcError>,
) -> Result<Value, RpcError> {
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
            Ok(encode::broadcast(&hash, &res))
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
        "block" | "block_results" => {
            let p = params()?;
            let height = match p.int("height")? {
                Some(h) if h < 0 => {
                    return Err(RpcError::internal(format!(
                        "height must be greater than 0, but got {h}"
                    )))
                }
                Some(h) if h > 0 => u64::try_from(h).unwrap_or(0),
                _ => shared.view().height,
            };
            let b = shared.block_at(height).map_err(RpcError::internal)?;
            Ok(if method == "block" {
                encode::block(&shared.chain_id, &b)
            } else {
                encode::block_results(&b)
            })
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
            Ok(encode::tx(&b, &hash, loc.index))
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
