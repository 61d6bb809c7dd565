//! The chain-height port: where the runtime reads the chain's latest height when the admission
//! policy asks for it ([`crate::session::admission`]), to skip the jobs of replayed blocks whose
//! sessions the chain has already ended.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

/// Longest wait for one read: past it the height counts as unreadable and jobs pass.
pub const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Reads the chain's latest height (the daemon: CometBFT's `status` over RPC).
pub trait ChainTip: Send + Sync {
    /// The latest block height, or `None` when it cannot be read.
    fn height(&self) -> BoxFuture<'_, Option<u64>>;
}

/// Reads `tip` at most [`READ_TIMEOUT`].
pub(crate) async fn read(tip: &Arc<dyn ChainTip>) -> Option<u64> {
    tokio::time::timeout(READ_TIMEOUT, tip.height())
        .await
        .ok()
        .flatten()
}
