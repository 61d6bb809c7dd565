//! Minimal CometBFT JSON-RPC client (the routes seqmpc uses), shared by mpcd and mpcctl.

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};

/// CheckTx outcome of `broadcast_tx_sync`.
#[derive(Debug, Clone)]
pub struct BroadcastResult {
    /// ABCI code (0 = accepted into the mempool).
    pub code: u32,
    /// Readable log.
    pub log: String,
    /// Data (for sequence errors: the expected sequence in decimal).
    pub data: Vec<u8>,
    /// Tx hash (upper-case hex).
    pub hash: String,
}

/// Outcome of an ABCI query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// ABCI code (0 = found).
    pub code: u32,
    /// Readable log.
    pub log: String,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// A JSON-RPC client of a CometBFT-compatible RPC endpoint.
#[derive(Clone)]
pub struct RpcClient {
    url: String,
    agent: ureq::Agent,
}

fn b64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

fn code(v: &Value) -> u32 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(1) as u32,
        Value::String(s) => s.parse().unwrap_or(1),
        _ => 0,
    }
}

impl RpcClient {
    /// Client of `url` (e.g. `http://127.0.0.1:26657`).
    pub fn new(url: &str) -> Self {
        RpcClient {
            url: url.trim_end_matches('/').to_owned(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(3))
                .build(),
        }
    }

    /// Calls a JSON-RPC method and returns its `result`.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self
            .agent
            .post(&self.url)
            .send_json(body)
            .map_err(|e| anyhow!("RPC {method} to {}: {e}", self.url))?;
        let v: Value = resp
            .into_json()
            .with_context(|| format!("RPC {method}: response is not JSON"))?;
        if let Some(err) = v.get("error") {
            bail!("RPC {method}: {err}");
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| anyhow!("RPC {method}: no result"))
    }

    /// `broadcast_tx_sync`.
    pub fn broadcast_tx_sync(&self, tx: &[u8]) -> anyhow::Result<BroadcastResult> {
        let r = self.call(
            "broadcast_tx_sync",
            json!({"tx": base64::engine::general_purpose::STANDARD.encode(tx)}),
        )?;
        Ok(BroadcastResult {
            code: code(&r["code"]),
            log: r["log"].as_str().unwrap_or_default().to_owned(),
            // CometBFT encodes `data` of broadcast results as hex (HexBytes).
            data: r["data"]
                .as_str()
                .and_then(|s| hex::decode(s).ok())
                .unwrap_or_default(),
            hash: r["hash"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// `abci_query` with a path and no data.
    pub fn abci_query(&self, path: &str) -> anyhow::Result<QueryResult> {
        let r = self.call("abci_query", json!({"path": path, "data": ""}))?;
        let resp = &r["response"];
        Ok(QueryResult {
            code: code(&resp["code"]),
            log: resp["log"].as_str().unwrap_or_default().to_owned(),
            value: b64(&resp["value"]),
        })
    }

    /// `tx` by hash: Some((code, log)) once committed.
    pub fn tx_result(&self, hash_hex: &str) -> anyhow::Result<Option<(u32, String)>> {
        // `tx` takes the hash as []byte, i.e. base64 in JSON-RPC params.
        let hash = hex::decode(hash_hex).map_err(|e| anyhow!("tx hash is not hex: {e}"))?;
        let hash = base64::engine::general_purpose::STANDARD.encode(hash);
        match self.call("tx", json!({ "hash": hash })) {
            Ok(r) => Ok(Some((
                code(&r["tx_result"]["code"]),
                r["tx_result"]["log"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))),
            Err(e) if e.to_string().contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Latest block height from `status`.
    pub fn height(&self) -> anyhow::Result<u64> {
        let r = self.call("status", json!({}))?;
        r["sync_info"]["latest_block_height"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("status: no latest_block_height"))
    }
}
