//! The block loop: plays CometBFT's consensus role for N apps with a single proposer.
//!
//! Per app: `Down` → (connect) → `Syncing` (Info; InitChain at height 0; replay of stored
//! blocks) → `Up` (gets every new block). Any error on the consensus connection sends the app
//! back to `Down`; it is retried every [`RETRY_INTERVAL`]. Blocks go on with the apps that are up.
//!
//! Per block: take txs → store the block (fsync) → FinalizeBlock on every up app in parallel →
//! compare app hashes → store the reference result (fsync) → [gate] Commit on every app →
//! publish → Recheck the mempool [/gate]. See `store.rs` for why this order makes crash
//! recovery simple.

use std::collections::{BTreeMap, BTreeSet};
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::bytes::Bytes;
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::abci::{
    CheckTxType, CommitInfo, RequestFinalizeBlock, RequestInitChain, ResponseFinalizeBlock,
};

use super::app_conn::{Done, Job, SyncReport, Worker};
use super::state::{
    block_hash, load_block, AppState, AppStatus, CommittedBlock, Phase, Shared, RECENT_BLOCKS,
    TX_INDEX_CAP,
};
use super::store::BlockStore;
use super::time::next_block_time;

/// How often a down app is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Longest sleep of the loop, so stop requests and finished syncs are seen promptly.
const POLL: Duration = Duration::from_millis(20);

/// Timing and size knobs of the loop.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Block interval.
    pub block_interval: Duration,
    /// Most txs in one block.
    pub max_block_txs: usize,
    /// Longest wait for an app's answer on the consensus connection.
    pub abci_timeout: Duration,
    /// How long start-up waits for every app before going on with those that are up.
    pub startup_timeout: Duration,
}

enum Link {
    Down,
    Syncing { worker: Worker, target: u64 },
    Up { worker: Worker },
}

struct Slot {
    link: Link,
    height: u64,
    error: Option<String>,
    last_attempt: Option<Instant>,
}

impl Slot {
    fn state(&self) -> AppState {
        match self.link {
            Link::Down => AppState::Down,
            Link::Syncing { .. } => AppState::Syncing,
            Link::Up { .. } => AppState::Up,
        }
    }
}

/// The block loop's state.
pub struct Engine {
    shared: Arc<Shared>,
    store: BlockStore,
    genesis: Arc<RequestInitChain>,
    cfg: EngineConfig,
    slots: Vec<Slot>,
    height: u64,
    last_time: Option<Timestamp>,
    last_hash: Bytes,
    last_app_hash: Bytes,
    warned_no_app: Option<Instant>,
}

impl Engine {
    /// Loads the chain from the store and publishes it to the view.
    pub fn new(
        shared: Arc<Shared>,
        store: BlockStore,
        genesis: RequestInitChain,
        cfg: EngineConfig,
    ) -> anyhow::Result<Engine> {
        let height = store.height();
        let reader = store.reader();
        let mut engine = Engine {
            slots: shared
                .apps
                .iter()
                .map(|_| Slot {
                    link: Link::Down,
                    height: 0,
                    error: None,
                    last_attempt: None,
                })
                .collect(),
            shared,
            store,
            genesis: Arc::new(genesis),
            cfg,
            height,
            last_time: None,
            last_hash: Bytes::new(),
            last_app_hash: Bytes::new(),
            warned_no_app: None,
        };
        if height > 0 {
            // Rebuild the RPC view: the tx index over the most recent blocks, newest first
            // until the index is full, then pushed oldest first.
            let mut blocks = Vec::new();
            let mut txs = 0usize;
            let mut h = height;
            while h > 0 && (txs < TX_INDEX_CAP || blocks.len() < RECENT_BLOCKS) {
                let b = load_block(&reader, h).with_context(|| format!("loading block {h}"))?;
                txs += b.block.txs.len();
                blocks.push(Arc::new(b));
                h -= 1;
            }
            let earliest = if h == 0 {
                blocks.last().cloned()
            } else {
                Some(Arc::new(load_block(&reader, 1)?))
            };
            let mut view = engine.shared.view_mut();
            for b in blocks.into_iter().rev() {
                view.push_block(b);
            }
            view.earliest = earliest;
            if let Some(last) = view.latest.clone() {
                engine.last_time = last.block.time;
                engine.last_hash = last.block.hash.clone();
                engine.last_app_hash = last.result.app_hash.clone();
            }
            drop(view);
            tracing::info!(height, "resuming the chain from the block store");
        }
        engine.publish_apps();
        Ok(engine)
    }

    /// Runs until `stop` is set, or an unrecoverable error.
    pub fn run(mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let res = self.run_inner(stop);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.link = Link::Down;
            if let Some(app) = self.shared.apps.get(i) {
                app.set_up(false);
            }
        }
        self.publish_apps();
        self.shared.view_mut().phase = match &res {
            Ok(()) => Phase::Stopped,
            Err(e) => Phase::Failed(format!("{e:#}")),
        };
        self.shared.notify();
        res
    }

    fn run_inner(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        if !self.startup(stop)? {
            return Ok(());
        }
        self.shared.view_mut().phase = Phase::Running;
        self.shared.notify();
        tracing::info!(height = self.height, "dev sequencer running");
        let mut next = Instant::now();
        while !stop.load(Ordering::Acquire) {
            self.maintain_links();
            let now = Instant::now();
            if now >= next {
                self.produce_block()?;
                next += self.cfg.block_interval;
                let now = Instant::now();
                if next < now {
                    next = now;
                }
            } else {
                thread::sleep((next - now).min(POLL));
            }
        }
        Ok(())
    }

    /// Waits for the apps. Returns false if stopped meanwhile.
    fn startup(&mut self, stop: &AtomicBool) -> anyhow::Result<bool> {
        let deadline = Instant::now() + self.cfg.startup_timeout;
        let mut waited_for_sync = false;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(false);
            }
            self.maintain_links();
            let up = self.count(AppState::Up);
            if up == self.slots.len() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                let syncing = self.count(AppState::Syncing);
                if up > 0 {
                    tracing::warn!(
                        up,
                        total = self.slots.len(),
                        "start-up timeout: going on with the apps that are up"
                    );
                    return Ok(true);
                }
                if syncing == 0 {
                    let errors: Vec<String> = self
                        .shared
                        .apps
                        .iter()
                        .zip(&self.slots)
                        .map(|(a, s)| {
                            format!(
                                "{} ({}): {}",
                                a.name,
                                a.addr,
                                s.error.as_deref().unwrap_or("not reached")
                            )
                        })
                        .collect();
                    anyhow::bail!(
                        "no ABCI app became ready within {:?}: {}",
                        self.cfg.startup_timeout,
                        errors.join("; ")
                    );
                }
                if !waited_for_sync {
                    tracing::info!(syncing, "start-up: waiting for apps still replaying blocks");
                    waited_for_sync = true;
                }
            }
            thread::sleep(POLL);
        }
    }

    fn count(&self, state: AppState) -> usize {
        self.slots.iter().filter(|s| s.state() == state).count()
    }

    fn name(&self, i: usize) -> String {
        self.shared
            .apps
            .get(i)
            .map(|a| a.name.clone())
            .unwrap_or_default()
    }

    fn mark_down(&mut self, i: usize, error: String) {
        let name = self.name(i);
        if let Some(slot) = self.slots.get_mut(i) {
            let was = slot.state();
            slot.link = Link::Down;
            slot.last_attempt = Some(Instant::now());
            if was != AppState::Down {
                tracing::warn!(app = %name, %error, "app is down; blocks go on without it");
            }
            slot.error = Some(error);
        }
        if let Some(app) = self.shared.apps.get(i) {
            app.set_up(false);
        }
    }

    /// Connects down apps, advances syncing ones, promotes synced ones.
    fn maintain_links(&mut self) {
        let mut changed = false;
        for i in 0..self.slots.len() {
            let Some(app) = self.shared.apps.get(i) else {
                continue;
            };
            let (name, addr) = (app.name.clone(), app.addr.clone());
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            let link = mem::replace(&mut slot.link, Link::Down);
            slot.link = match link {
                Link::Down => {
                    let due = slot
                        .last_attempt
                        .is_none_or(|t| t.elapsed() >= RETRY_INTERVAL);
                    if !due {
                        Link::Down
                    } else {
                        slot.last_attempt = Some(Instant::now());
                        match Worker::connect(
                            &name,
                            &addr,
                            self.store.reader(),
                            self.genesis.clone(),
                        )
                        .and_then(|w| {
                            w.send(Job::Sync {
                                target: self.height,
                            })?;
                            Ok(w)
                        }) {
                            Ok(worker) => {
                                tracing::info!(app = %name, %addr, "connected; syncing");
                                changed = true;
                                Link::Syncing {
                                    worker,
                                    target: self.height,
                                }
                            }
                            Err(e) => {
                                tracing::debug!(app = %name, error = %e, "app not reachable");
                                slot.error = Some(e);
                                Link::Down
                            }
                        }
                    }
                }
                Link::Syncing { worker, target } => match worker.try_recv() {
                    None => Link::Syncing { worker, target },
                    Some(Ok(Done::Synced(report))) => {
                        changed = true;
                        slot.height = report.to;
                        let mut divergence = None;
                        if !report.mismatches.is_empty() {
                            divergence = Some(describe_mismatches(&name, &report));
                        }
                        if report.to == self.height {
                            if let (Some(expected), true) = (
                                self.shared
                                    .view()
                                    .latest
                                    .as_ref()
                                    .map(|b| b.result.app_hash.clone()),
                                report.from == report.to && report.from > 0,
                            ) {
                                if !expected.is_empty() && expected.as_ref() != report.info_app_hash
                                {
                                    tracing::warn!(
                                        app = %name,
                                        height = report.to,
                                        info_app_hash = %hex::encode_upper(&report.info_app_hash),
                                        stored_app_hash = %hex::encode_upper(&expected),
                                        "the app's Info app hash differs from the stored one"
                                    );
                                }
                            }
                            tracing::info!(
                                app = %name,
                                height = report.to,
                                replayed = report.to - report.from,
                                init_chain = report.init_chain,
                                "app is up"
                            );
                            slot.error = None;
                            app.set_up(true);
                            if let Some(d) = divergence {
                                tracing::error!(app = %name, "app hash divergence during replay: {d}");
                                self.shared.view_mut().divergence = Some(d);
                            }
                            Link::Up { worker }
                        } else {
                            if let Some(d) = divergence {
                                tracing::error!(app = %name, "app hash divergence during replay: {d}");
                                self.shared.view_mut().divergence = Some(d);
                            }
                            match worker.send(Job::Sync {
                                target: self.height,
                            }) {
                                Ok(()) => Link::Syncing {
                                    worker,
                                    target: self.height,
                                },
                                Err(e) => {
                                    slot.error = Some(e);
                                    Link::Down
                                }
                            }
                        }
                    }
                    Some(Ok(_)) => {
                        changed = true;
                        slot.error = Some("unexpected answer while syncing".to_owned());
                        Link::Down
                    }
                    Some(Err(e)) => {
                        changed = true;
                        tracing::warn!(app = %name, error = %e, "sync failed");
                        slot.error = Some(e);
                        Link::Down
                    }
                },
                up @ Link::Up { .. } => up,
            };
        }
        if changed {
            self.publish_apps();
        }
    }

    fn publish_apps(&self) {
        let apps: Vec<AppStatus> = self
            .shared
            .apps
            .iter()
            .zip(&self.slots)
            .map(|(a, s)| AppStatus {
                name: a.name.clone(),
                addr: a.addr.clone(),
                state: s.state(),
                height: s.height,
                error: s.error.clone(),
            })
            .collect();
        self.shared.view_mut().apps = apps;
        self.shared.notify();
    }

    fn up_indices(&self) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.link, Link::Up { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    fn worker(&self, i: usize) -> Option<&Worker> {
        match self.slots.get(i).map(|s| &s.link) {
            Some(Link::Up { worker }) => Some(worker),
            _ => None,
        }
    }

    /// Sends `job(i)` to every app in `targets` and collects the answers (in `targets` order);
    /// apps that fail or time out are marked down.
    fn round(&mut self, targets: &[usize], job: impl Fn() -> Job) -> Vec<(usize, Done)> {
        let mut sent = Vec::new();
        for &i in targets {
            let res = match self.worker(i) {
                Some(w) => w.send(job()),
                None => continue,
            };
            match res {
                Ok(()) => sent.push(i),
                Err(e) => self.mark_down(i, e),
            }
        }
        let deadline = Instant::now() + self.cfg.abci_timeout;
        let mut out = Vec::new();
        for i in sent {
            let wait = deadline.saturating_duration_since(Instant::now());
            let res = match self.worker(i) {
                Some(w) => w.recv_timeout(wait),
                None => continue,
            };
            match res {
                Ok(done) => out.push((i, done)),
                Err(e) => self.mark_down(i, e),
            }
        }
        out
    }

    fn produce_block(&mut self) -> anyhow::Result<()> {
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
        let batch = self.shared.mempool().take(self.cfg.max_block_txs);
        let height = self.height + 1;
        let time = next_block_time(self.last_time.as_ref());
        let txs: Vec<Bytes> = batch.iter().map(|t| t.tx.clone()).collect();
        let hash = block_hash(
            &self.shared.chain_id,
            height,
            &time,
            &self.last_hash,
            &self.last_app_hash,
            &txs,
        );
        let block = RequestFinalizeBlock {
            txs,
            decided_last_commit: Some(CommitInfo {
                round: 0,
                votes: Vec::new(),
            }),
            misbehavior: Vec::new(),
            hash: Bytes::copy_from_slice(&hash),
            height: i64::try_from(height).context("height overflow")?,
            time: Some(time),
            next_validators_hash: Bytes::new(),
            proposer_address: Bytes::from(vec![0u8; 20]),
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
        for (i, _) in &committed {
            if let Some(s) = self.slots.get_mut(*i) {
                s.height = height;
            }
        }
        let committed_block = Arc::new(CommittedBlock {
            prev_hash: mem::replace(&mut self.last_hash, block.hash.clone()),
            prev_app_hash: mem::replace(&mut self.last_app_hash, reference.app_hash.clone()),
            block,
            result: *reference,
        });
        self.height = height;
        self.last_time = committed_block.block.time;
        self.shared.view_mut().push_block(committed_block);
        self.shared.mempool().committed(&batch);
        self.publish_apps();
        self.recheck();
        drop(gate);
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

fn short_hex(b: &[u8]) -> String {
    let h = hex::encode_upper(b);
    if h.is_empty() {
        "(empty)".to_owned()
    } else {
        h
    }
}

fn describe_mismatches(name: &str, report: &SyncReport) -> String {
    let first = report.mismatches.first();
    match first {
        Some(m) => format!(
            "height {}: stored={} vs {}={} ({} replayed block(s) differ)",
            m.height,
            short_hex(&m.expected),
            name,
            short_hex(&m.got),
            report.mismatches.len()
        ),
        None => String::new(),
    }
}
