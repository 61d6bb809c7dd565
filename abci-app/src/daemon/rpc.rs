//! The CometBFT RPC as mpcd and mpcctl use it: tendermint-rpc's `HttpClient` (CometBFT v0.38
//! encodings), driven from plain threads through a runtime of its own. Its callers (the result
//! submitter, the runtime's chain-height port, mpcctl, the localnet tools) are synchronous.

use std::sync::Arc;
use std::time::Duration;

use tendermint_rpc::client::CompatMode;
use tendermint_rpc::{Client as _, HttpClient};

/// How long one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

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

/// One event of a committed tx, as `tx_search` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEvent {
    /// Height of the block holding the tx.
    pub height: u64,
    /// Hash of the tx (hex).
    pub tx_hash: String,
    /// Event type.
    pub kind: String,
    /// Its attributes, in order (key, value).
    pub attributes: Vec<(String, String)>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The URL is not an RPC address tendermint-rpc takes.
    #[error("RPC URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The runtime that drives the client could not start.
    #[error("cannot start the RPC client's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The call failed: unreachable, timed out, or answered with an error.
    #[error("RPC {method} to {url}: {source}")]
    Call {
        /// The method.
        method: &'static str,
        /// The RPC URL.
        url: String,
        /// tendermint-rpc's error (boxed: it is large).
        source: Box<tendermint_rpc::Error>,
    },
    /// A tx hash that is not 32 bytes of hex.
    #[error("tx hash {0:?} is not 32 bytes of hex")]
    TxHash(String),
}

/// A client of a CometBFT-compatible RPC endpoint (cheap to clone: clones share the
/// connection pool and the runtime).
#[derive(Clone)]
pub struct RpcClient {
    url: String,
    inner: Result<Inner, Arc<RpcError>>,
}

#[derive(Clone)]
struct Inner {
    http: HttpClient,
    rt: Arc<tokio::runtime::Runtime>,
}

impl RpcClient {
    /// Client of `url` (e.g. `http://127.0.0.1:26657`). A URL it cannot use makes every call
    /// fail with the reason.
    pub fn new(url: &str) -> Self {
        let url = url.trim_end_matches('/').to_owned();
        RpcClient {
            inner: Inner::new(&url).map_err(Arc::new),
            url,
        }
    }

    /// The RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn run<T, F>(
        &self,
        method: &'static str,
        call: impl FnOnce(HttpClient) -> F,
    ) -> Result<T, RpcError>
    where
        F: std::future::Future<Output = Result<T, tendermint_rpc::Error>>,
    {
        let inner = self.inner.as_ref().map_err(|e| RpcError::Url {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        inner
            .rt
            .block_on(call(inner.http.clone()))
            .map_err(|source| RpcError::Call {
                method,
                url: self.url.clone(),
                source: Box::new(source),
            })
    }

    /// `broadcast_tx_sync`.
    pub fn broadcast_tx_sync(&self, tx: &[u8]) -> Result<BroadcastResult, RpcError> {
        let tx = tx.to_vec();
        let r = self.run("broadcast_tx_sync", |c| async move {
            c.broadcast_tx_sync(tx).await
        })?;
        Ok(BroadcastResult {
            code: r.code.value(),
            log: r.log,
            data: r.data.to_vec(),
            hash: r.hash.to_string(),
        })
    }

    /// `abci_query` with a path and no data, at the latest height, without proof.
    pub fn abci_query(&self, path: &str) -> Result<QueryResult, RpcError> {
        let path = path.to_owned();
        let r = self.run("abci_query", |c| async move {
            c.abci_query(Some(path), Vec::new(), None, false).await
        })?;
        Ok(QueryResult {
            code: r.code.value(),
            log: r.log,
            value: r.value,
        })
    }

    /// `tx` by hash (hex): Some((code, log)) once committed, None while no block holds it.
    pub fn tx_result(&self, hash_hex: &str) -> Result<Option<(u32, String)>, RpcError> {
        let hash: [u8; 32] = hex::decode(hash_hex)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| RpcError::TxHash(hash_hex.to_owned()))?;
        match self.run("tx", |c| async move {
            c.tx(tendermint::Hash::Sha256(hash), false).await
        }) {
            Ok(r) => Ok(Some((r.tx_result.code.value(), r.tx_result.log))),
            // CometBFT answers an unknown hash with an error whose data says "not found".
            Err(RpcError::Call { source, .. }) if source.to_string().contains("not found") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The chain id (`status`'s `node_info.network`).
    pub fn chain_id(&self) -> Result<String, RpcError> {
        let r = self.run("status", |c| async move { c.status().await })?;
        Ok(r.node_info.network.to_string())
    }

    /// Latest block height from `status`.
    pub fn height(&self) -> Result<u64, RpcError> {
        let r = self.run("status", |c| async move { c.status().await })?;
        Ok(r.sync_info.latest_block_height.value())
    }

    /// The events of type `kind` of the first committed tx (oldest first) that has an event
    /// `kind` with attribute `key` = `value` (`tx_search "<kind>.<key>='<value>'"`).
    pub fn tx_event(&self, kind: &str, key: &str, value: &str) -> Result<Vec<TxEvent>, RpcError> {
        let query = tendermint_rpc::query::Query::eq(format!("{kind}.{key}"), value.to_owned());
        let r = self.run("tx_search", |c| async move {
            c.tx_search(query, false, 1, 1, tendermint_rpc::Order::Ascending)
                .await
        })?;
        let Some(tx) = r.txs.into_iter().next() else {
            return Ok(Vec::new());
        };
        let events = tx
            .tx_result
            .events
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| TxEvent {
                height: tx.height.value(),
                tx_hash: tx.hash.to_string(),
                kind: e.kind,
                attributes: e
                    .attributes
                    .iter()
                    .map(|a| {
                        (
                            a.key_str().unwrap_or_default().to_owned(),
                            a.value_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
            })
            .collect();
        Ok(events)
    }

    /// Lowest height the node serves, from `status` (above 1 once its block store is pruned).
    pub fn earliest_height(&self) -> Result<u64, RpcError> {
        let r = self.run("status", |c| async move { c.status().await })?;
        Ok(r.sync_info.earliest_block_height.value())
    }
}

impl Inner {
    fn new(url: &str) -> Result<Inner, RpcError> {
        let bad = |reason: String| RpcError::Url {
            url: url.to_owned(),
            reason,
        };
        let parsed = url.parse().map_err(|e| bad(format!("{e}")))?;
        let http = HttpClient::builder(parsed)
            .compat_mode(CompatMode::V0_38)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Inner {
            http,
            rt: Arc::new(rt),
        })
    }
}
