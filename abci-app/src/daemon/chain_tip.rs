//! The MPC runtime's chain-height port ([`seqmpc_module::node::ChainTip`]) over the CometBFT
//! RPC (`status`). The runtime reads it only when its admission policy asks for it: a session
//! job of a block that is not recent, at most once a second
//! (`seqmpc_module::session::admission`). An unreadable height lets jobs pass.

use futures::future::BoxFuture;
use seqmpc_module::node::ChainTip;
use tracing::debug;

use crate::daemon::rpc::RpcClient;

/// The chain's height from the RPC.
pub struct RpcChainTip(pub RpcClient);

impl ChainTip for RpcChainTip {
    fn height(&self) -> BoxFuture<'_, Option<u64>> {
        let rpc = self.0.clone();
        Box::pin(async move {
            // The client is blocking (it runs its own runtime): off the node's threads.
            tokio::task::spawn_blocking(move || {
                rpc.height()
                    .inspect_err(|e| debug!(error = %e, "cannot read the chain height: jobs pass"))
                    .ok()
            })
            .await
            .ok()
            .flatten()
        })
    }
}
