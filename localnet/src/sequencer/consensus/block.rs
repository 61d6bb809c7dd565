//! One block: take txs → store the block (fsync) → FinalizeBlock on every up app in parallel →
//! compare app hashes → store the reference result (fsync) → [gate] Commit on every app →
//! publish → Recheck the mempool [/gate].

use std::collections::{BTreeMap, BTreeSet};
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::bytes::Bytes;
use tendermint_proto::v0_38::abci::{
    CheckTxType, CommitInfo, RequestFinalizeBlock, ResponseFinalizeBlock,
};

use super::{short_hex, Engine};
use crate::sequencer::app_conn::{Done, Job};
use crate::sequencer::header::{self, HeaderInput};
use crate::sequencer::state::CommittedBlock;
use crate::sequencer::time::next_block_time;

impl Engine {
    /// Makes, executes and commits the next block (a no-op while no app is up).
    pub(super) fn produce_block(&mut self) -> anyhow::Result<()> {
        let up = self.up_indices();
        if up.is_empty() {
            if self
                .warned_no_app
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                tracing::warn!(
                    height = self.height,
                    "no app is up: block production paused"
                );
                self.warned_no_app = Some(Instant::now());
            }
            return Ok(());
        }
        self.warned_no_app = None;
        let started = Instant::now();
        let batch = self.shared.mempool().take(self.cfg.max_block_txs);
        let height = self.height + 1;
        let time = next_block_time(self.last_time.as_ref());
        let txs: Vec<Bytes> = batch.iter().map(|t| t.tx.clone()).collect();
        let prev = self.shared.view().latest.clone();
        let header = header::build(&HeaderInput {
            chain_id: &self.shared.chain_id,
            app_version: self.shared.app_version.load(Ordering::Acquire),
            height,
            time: &time,
            prev_hash: &self.last_hash,
            prev_app_hash: &self.last_app_hash,
            prev_results: prev.as_ref().map_or(&[][..], |b| &b.result.tx_results),
            txs: &txs,
            validator: &self.shared.validator_pub_key,
        })
        .map_err(|e| anyhow::anyhow!("building the header of block {height}: {e}"))?;
        let block = RequestFinalizeBlock {
            txs,
            decided_last_commit: Some(CommitInfo {
                round: 0,
                votes: Vec::new(),
            }),
            misbehavior: Vec::new(),
            hash: Bytes::copy_from_slice(header.hash().as_bytes()),
            height: i64::try_from(height).context("height overflow")?,
            time: Some(time),
            next_validators_hash: Bytes::copy_from_slice(header.next_validators_hash.as_bytes()),
            proposer_address: Bytes::copy_from_slice(header.proposer_address.as_bytes()),
        };
        if let Err(e) = self.store.append_block(&block) {
            self.shared.mempool().give_back(batch);
            return Err(e.context("storing a new block"));
        }

        // FinalizeBlock everywhere, in parallel.
        let answers = self.round(&up, || Job::Finalize(block.clone()));
        let mut results: Vec<(usize, Box<ResponseFinalizeBlock>)> = Vec::new();
        for (i, done) in answers {
            match done {
                Done::Finalized(r) => results.push((i, r)),
                _ => self.mark_down(i, "unexpected answer to FinalizeBlock".to_owned()),
            }
        }
        let Some((ref_idx, reference)) = results.first().map(|(i, r)| (*i, r.clone())) else {
            tracing::warn!(
                height,
                "no app executed the block; it is dropped and retried"
            );
            self.store.rollback_block()?;
            self.shared.mempool().give_back(batch);
            self.publish_apps();
            return Ok(());
        };
        if reference.tx_results.len() != block.txs.len() {
            tracing::error!(
                app = %self.name(ref_idx),
                height,
                txs = block.txs.len(),
                tx_results = reference.tx_results.len(),
                "FinalizeBlock returned a wrong number of tx results"
            );
        }
        self.check_divergence(height, &results);
        self.store
            .append_result(height, &reference)
            .context("storing a block result")?;

        // Commit everywhere, under the check gate (see state.rs).
        let shared = self.shared.clone();
        let gate = shared
            .check_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let finalized: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
        let committed = self.round(&finalized, || Job::Commit);
        for (i, done) in &committed {
            if let Some(s) = self.slots.get_mut(*i) {
                s.height = height;
                if let Done::Committed { retain_height } = done {
                    s.retain = Some(*retain_height);
                }
            }
        }
        let committed_block = Arc::new(CommittedBlock {
            prev_hash: mem::replace(&mut self.last_hash, block.hash.clone()),
            prev_app_hash: mem::replace(&mut self.last_app_hash, reference.app_hash.clone()),
            block,
            result: *reference,
        });
        let received: Vec<Instant> = batch.iter().map(|t| t.received).collect();
        self.shared.metrics.block_committed(
            height,
            &received,
            &committed_block.result,
            started.elapsed(),
        );
        self.height = height;
        self.last_time = committed_block.block.time;
        self.shared.view_mut().push_block(committed_block);
        self.shared.mempool().committed(&batch);
        self.publish_apps();
        self.recheck();
        drop(gate);
        self.prune_blocks();
        Ok(())
    }

    fn check_divergence(&mut self, height: u64, results: &[(usize, Box<ResponseFinalizeBlock>)]) {
        let mut groups: BTreeMap<&[u8], Vec<String>> = BTreeMap::new();
        for (i, r) in results {
            groups
                .entry(r.app_hash.as_ref())
                .or_default()
                .push(self.name(*i));
        }
        if groups.len() <= 1 {
            return;
        }
        let msg = format!(
            "height {height}: {}",
            groups
                .iter()
                .map(|(h, names)| format!("{}={}", names.join(","), short_hex(h)))
                .collect::<Vec<_>>()
                .join(" vs ")
        );
        tracing::error!("app hash divergence at {msg}");
        self.shared.view_mut().divergence = Some(msg);
    }

    /// Re-runs CheckTx (Recheck) on the txs left in the mempool and drops those that now fail.
    fn recheck(&self) {
        let pending = self.shared.mempool().snapshot();
        if pending.is_empty() {
            return;
        }
        let mut dropped = BTreeSet::new();
        for t in pending {
            match self.shared.check_tx(t.tx, CheckTxType::Recheck) {
                Ok(r) if r.code != 0 => {
                    tracing::debug!(
                        hash = %hex::encode_upper(t.hash),
                        code = r.code,
                        log = %r.log,
                        "recheck dropped a tx"
                    );
                    dropped.insert(t.hash);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "recheck interrupted");
                    break;
                }
            }
        }
        self.shared.mempool().remove(&dropped);
    }
}
