//! Waiting for blocks on the RPC's `/websocket` instead of polling: a `NewBlock`
//! subscription (tendermint-rpc's query grammar has no `NewBlockHeader`) through tendermint-rpc's `WebSocketClient`, which CometBFT and the dev
//! sequencer both serve. `mpcctl --wait` reads the state once per block this way: the chain's
//! answer can only change when a block commits.

use std::time::Duration;

use futures::StreamExt as _;
use tendermint_rpc::client::CompatMode;
use tendermint_rpc::query::{EventType, Query};
use tendermint_rpc::{SubscriptionClient as _, WebSocketClient};

/// How long [`BlockWatch::connect`] waits for the subscription.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The RPC URL is not `http(s)://host:port`.
    #[error("RPC URL {0:?} is not http:// or https://")]
    Url(String),
    /// No `/websocket`, or the subscription was refused.
    #[error("cannot subscribe to new blocks at {url}: {reason}")]
    Subscribe {
        /// The WebSocket URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A committed block as a subscriber sees it.
#[derive(Clone, Debug)]
pub struct NewBlock {
    /// Its height.
    pub height: u64,
    /// The ABCI events of its tx results, then its own.
    pub events: Vec<tendermint::abci::Event>,
}

/// A `NewBlock` subscription, read synchronously.
pub struct BlockWatch {
    rt: tokio::runtime::Runtime,
    client: WebSocketClient,
    headers: tendermint_rpc::Subscription,
    driver: tokio::task::JoinHandle<Result<(), tendermint_rpc::Error>>,
}

/// The `/websocket` URL of the RPC at `rpc_url`.
pub fn websocket_url(rpc_url: &str) -> Result<String, WatchError> {
    let base = rpc_url.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .map(|r| format!("ws://{r}"))
        .or_else(|| base.strip_prefix("https://").map(|r| format!("wss://{r}")))
        .ok_or_else(|| WatchError::Url(rpc_url.to_owned()))?;
    Ok(format!("{rest}/websocket"))
}

impl BlockWatch {
    /// Subscribes to new blocks at the RPC `rpc_url` (`http://host:port`).
    pub fn connect(rpc_url: &str) -> Result<BlockWatch, WatchError> {
        let url = websocket_url(rpc_url)?;
        let fail = |reason: String| WatchError::Subscribe {
            url: url.clone(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let parsed = url.parse().map_err(|e| fail(format!("{e}")))?;
        let (client, driver, headers) = rt.block_on(async {
            let connect = async {
                let (client, driver) = WebSocketClient::builder(parsed)
                    .compat_mode(CompatMode::V0_38)
                    .build()
                    .await?;
                let driver = tokio::spawn(driver.run());
                let headers = client.subscribe(Query::from(EventType::NewBlock)).await?;
                Ok::<_, tendermint_rpc::Error>((client, driver, headers))
            };
            tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| fail("timed out".into()))?
                .map_err(|e| fail(e.to_string()))
        })?;
        Ok(BlockWatch {
            rt,
            client,
            headers,
            driver,
        })
    }

    /// Whether the subscription ended (the connection closed).
    pub fn is_closed(&self) -> bool {
        self.driver.is_finished()
    }

    /// Waits at most `max` for the next block; returns its height, or None if none came (or
    /// the subscription ended: then every later call returns None at once).
    pub fn next_block(&mut self, max: Duration) -> Option<u64> {
        self.next_block_events(max).map(|b| b.height)
    }

    /// [`BlockWatch::next_block`] with the block's ABCI events: those of every tx result, in
    /// order, then the block's own (FinalizeBlock's `events`, e.g. a request ended at its
    /// deadline).
    pub fn next_block_events(&mut self, max: Duration) -> Option<NewBlock> {
        if self.driver.is_finished() {
            return None;
        }
        let headers = &mut self.headers;
        let event = self
            .rt
            .block_on(async { tokio::time::timeout(max, headers.next()).await })
            .ok()??
            .ok()?;
        match event.data {
            tendermint_rpc::event::EventData::NewBlock {
                block: Some(block),
                result_finalize_block,
                ..
            } => Some(NewBlock {
                height: block.header.height.value(),
                events: result_finalize_block
                    .map(|r| {
                        r.tx_results
                            .into_iter()
                            .flat_map(|t| t.events)
                            .chain(r.events)
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            _ => None,
        }
    }
}

impl Drop for BlockWatch {
    fn drop(&mut self) {
        let _ = self.client.clone().close();
        self.driver.abort();
    }
}
