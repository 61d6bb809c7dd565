//! The chain of the simulation: the real `seqmpc-abci` state machine (`ChainState`, the same
//! tx execution and deadline handling that `App::finalize_block` runs), in memory, one block
//! at a time. No ABCI socket, no disk: the simulator is about the sessions, and the app's own
//! tests cover the ABCI layer.

use seqmpc_abci::execute::{self, Effects};
use seqmpc_abci::genesis::Genesis;
use seqmpc_abci::state::ChainState;
use seqmpc_module::job::Job;
use seqmpc_proto::tx::SignedTx;

/// The chain: committed state and a FIFO mempool.
pub struct Chain {
    /// Committed state.
    pub state: ChainState,
    mempool: Vec<Vec<u8>>,
    /// Txs delivered with a non-zero code, with the reason (for diagnostics).
    pub refused: Vec<String>,
}

impl Chain {
    /// The chain at genesis.
    pub fn new(genesis: &Genesis) -> Result<Chain, String> {
        let bytes = serde_json::to_vec(genesis).map_err(|e| e.to_string())?;
        let mut state = ChainState::from_genesis(genesis, &bytes)?;
        state.seal();
        Ok(Chain {
            state,
            mempool: Vec::new(),
            refused: Vec::new(),
        })
    }

    /// Queues a tx for the next block.
    pub fn submit(&mut self, tx: Vec<u8>) {
        self.mempool.push(tx);
    }

    /// Executes and commits the next block at `time_ms`; returns its jobs.
    pub fn block(&mut self, time_ms: u64) -> Vec<Job> {
        let state = &mut self.state;
        let height = state.height.saturating_add(1);
        let mut fx = Effects {
            block_time_ms: time_ms,
            ..Effects::default()
        };
        execute::expire_deadlines(state, height, &mut fx);
        for raw in std::mem::take(&mut self.mempool) {
            let result = match SignedTx::decode(&raw) {
                Err(e) => Err(e.to_string()),
                Ok(tx) => execute::deliver(state, &tx, height, &mut fx).map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                self.refused.push(format!("height {height}: {e}"));
            }
        }
        state.seal_block(height);
        fx.jobs
    }
}
