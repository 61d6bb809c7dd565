//! The chain of the simulation: the real `seqmpc-abci` state machine
//! ([`seqmpc_abci::chain::finalize_block`], the function the ABCI app's FinalizeBlock runs), in
//! memory, one block at a time, behind the app's own CheckTx ([`seqmpc_abci::chain::check_tx`]).
//! No ABCI socket, no disk: the simulator is about the sessions, and the app's own tests cover
//! the ABCI layer.

use std::collections::BTreeMap;

use seqmpc_abci::chain::entries::SignEntry;
use seqmpc_abci::chain::genesis::Genesis;
use seqmpc_abci::chain::{self, ChainState, CheckState, DecodedTxs, TxError};
use seqmpc_module::job::Job;
use seqmpc_proto::RequestId;
use sha2::{Digest, Sha256};

/// The chain: committed state and a FIFO mempool.
pub struct Chain {
    /// Committed state.
    pub state: ChainState,
    mempool: Vec<Vec<u8>>,
    /// CheckTx's view of the mempool.
    check: CheckState,
    /// The txs CheckTx decoded, which the block takes (as the app keeps them).
    decoded: DecodedTxs,
    /// The code of every delivered tx, by hash (what the RPC's `tx` route answers).
    delivered: BTreeMap<String, u32>,
    /// Txs delivered with a non-zero code, with the reason (for diagnostics).
    pub refused: Vec<String>,
    /// Every sign request as it ended (from the block's `sign_done` / `sign_failed` events,
    /// as a client reads `block_results`): the state prunes finished requests after the
    /// genesis retention, and the invariants still see them here.
    pub ended_signs: BTreeMap<RequestId, SignEntry>,
}

impl Chain {
    /// Every sign request the chain committed: those still in the state, and those pruned
    /// since they ended (as they ended).
    pub fn all_signs(&self) -> BTreeMap<RequestId, SignEntry> {
        let mut all = self.ended_signs.clone();
        for (id, req) in self.state.sign_requests() {
            all.insert(id.clone(), req.clone());
        }
        all
    }

    /// The chain at genesis.
    pub fn new(genesis: &Genesis) -> Result<Chain, String> {
        let bytes = serde_json::to_vec(genesis).map_err(|e| e.to_string())?;
        let (state, _) = chain::init_chain(genesis, &bytes)?;
        Ok(Chain {
            state,
            mempool: Vec::new(),
            check: CheckState::default(),
            decoded: DecodedTxs::default(),
            delivered: BTreeMap::new(),
            refused: Vec::new(),
            ended_signs: BTreeMap::new(),
        })
    }

    /// The hash the chain knows `tx` by.
    pub fn tx_hash(tx: &[u8]) -> String {
        hex::encode(Sha256::digest(tx))
    }

    /// CheckTx of `tx`: on success the mempool counts it (its sequence, its requests) and
    /// returns its hash; the caller then queues it ([`Chain::submit`]), or loses it.
    pub fn check(&mut self, tx: &[u8]) -> Result<String, TxError> {
        // As the app does: CheckTx decodes once, FinalizeBlock takes the decoded tx.
        let decoded = self
            .decoded
            .decode(tx)
            .map_err(|e| TxError::Malformed(e.to_string()))?;
        chain::check_decoded(&self.state, &mut self.check, &decoded)?;
        Ok(Chain::tx_hash(tx))
    }

    /// Queues a tx that passed [`Chain::check`] for the next block.
    pub fn submit(&mut self, tx: Vec<u8>) {
        self.mempool.push(tx);
    }

    /// The code tx `hash` was delivered with, once it is in a block.
    pub fn delivered(&self, hash: &str) -> Option<u32> {
        self.delivered.get(hash).copied()
    }

    /// Executes and commits the next block at `time_ms`; returns its jobs.
    pub fn block(&mut self, time_ms: u64) -> Vec<Job> {
        let height = self.state.height.saturating_add(1);
        let txs = std::mem::take(&mut self.mempool);
        // The block's hash, as a consensus engine would give it: its height, time and txs.
        let mut hash = Sha256::new();
        hash.update(height.to_be_bytes());
        hash.update(time_ms.to_be_bytes());
        for tx in &txs {
            hash.update((tx.len() as u64).to_be_bytes());
            hash.update(tx);
        }
        let hash = hash.finalize();
        let decoded = &mut self.decoded;
        match chain::finalize_block_with(&mut self.state, (height, time_ms, &hash), &txs, |raw| {
            decoded.take(raw)
        }) {
            Ok(block) => {
                for (tx, r) in txs.iter().zip(&block.tx_results) {
                    self.delivered.insert(Chain::tx_hash(tx), r.code);
                }
                self.check.committed(&self.state);
                for r in block.tx_results.iter().filter(|r| r.code != 0) {
                    self.refused.push(format!("height {height}: {}", r.log));
                }
                let events = block
                    .block_events
                    .iter()
                    .chain(block.tx_results.iter().flat_map(|r| r.events.iter()));
                for e in events.filter(|e| matches!(e.kind, "sign_done" | "sign_failed")) {
                    let ended = e
                        .attrs
                        .iter()
                        .find(|(k, _)| *k == "request_id")
                        .and_then(|(_, v)| RequestId::new(v.clone()).ok())
                        .and_then(|id| self.state.sign_requests().get(&id).cloned());
                    if let Some(req) = ended {
                        self.ended_signs.insert(req.request_id.clone(), req);
                    }
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
