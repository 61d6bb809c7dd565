//! The chain of the simulation: the real `seqmpc-abci` state machine
//! ([`seqmpc_abci::chain::finalize_block`], the function the ABCI app's FinalizeBlock runs), in
//! memory, one block at a time. No ABCI socket, no disk: the simulator is about the sessions,
//! and the app's own tests cover the ABCI layer.

use seqmpc_abci::chain::genesis::Genesis;
use seqmpc_abci::chain::{self, ChainState};
use seqmpc_module::job::Job;

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
        let (state, _) = chain::init_chain(genesis, &bytes)?;
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
        let height = self.state.height.saturating_add(1);
        let txs = std::mem::take(&mut self.mempool);
        match chain::finalize_block(&mut self.state, height, time_ms, &txs) {
            Ok(block) => {
                for r in block.tx_results.iter().filter(|r| r.code != 0) {
                    self.refused.push(format!("height {height}: {}", r.log));
                }
                block.jobs
            }
            Err(e) => {
                self.refused.push(e.to_string());
                Vec::new()
            }
        }
    }
}
