//! The block loop: plays CometBFT's consensus role for N apps with a single proposer.
//!
//! Per app: `Down` → (connect) → `Syncing` (Info; InitChain at height 0; replay of stored
//! blocks) → `Up` (gets every new block). Any error on the consensus connection sends the app
//! back to `Down`; it is retried every [`RETRY_INTERVAL`]. Blocks go on with the apps that are up.
//!
//! Per block: take txs → store the block (fsync) → FinalizeBlock on every up app in parallel →
//! compare app hashes → store the reference result (fsync) → \[gate\] Commit on every app →
//! publish → Recheck the mempool [/gate] (`consensus/block.rs`). See `store.rs` for why this
//! order makes crash recovery simple.

mod block;

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::bytes::Bytes;
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::abci::RequestInitChain;

use super::app_conn::{Done, Job, SyncReport, Worker};
use super::state::{load_block, AppState, AppStatus, Phase, Shared};
use super::store::BlockStore;

/// How often a down app is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Blocks read back into the RPC view (recent blocks, tx index) when resuming.
const RESUME_SCAN_BLOCKS: u64 = 10_000;
/// Longest sleep of the loop, so stop requests and finished syncs are seen promptly.
const POLL: Duration = Duration::from_millis(20);

/// When the loop makes a block without txs (CometBFT's `create_empty_blocks` and
/// `create_empty_blocks_interval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyBlocks {
    /// Every block interval, txs or not.
    Always,
    /// Only after a block that changed the app hash (its proof block), or at least this often.
    Every(Duration),
    /// Only after a block that changed the app hash.
    Never,
}

/// Timing and size knobs of the loop.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Block interval: blocks come at most this often.
    pub block_interval: Duration,
    /// When a block may have no txs.
    pub empty_blocks: EmptyBlocks,
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
    /// The app's last `retain_height` since this sequencer started (kept while it is down:
    /// it still needs the blocks above its height).
    retain: Option<u64>,
    error: Option<String>,
    last_attempt: Option<Instant>,
}

impl Slot {
    fn down() -> Self {
        Slot {
            link: Link::Down,
            height: 0,
            retain: None,
            error: None,
            last_attempt: None,
        }
    }

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
        genesis: Arc<RequestInitChain>,
        cfg: EngineConfig,
    ) -> anyhow::Result<Engine> {
        let height = store.height();
        let reader = store.reader();
        let mut engine = Engine {
            slots: shared.app_list().iter().map(|_| Slot::down()).collect(),
            shared,
            store,
            genesis,
            cfg,
            height,
            last_time: None,
            last_hash: Bytes::new(),
            last_app_hash: Bytes::new(),
            warned_no_app: None,
        };
        if height > 0 {
            // Rebuild the RPC view (recent blocks, tx index) from the last blocks of the store.
            // (Above the lowest block served: the block store may have been pruned.)
            let lowest = reader.earliest();
            let first = height.saturating_sub(RESUME_SCAN_BLOCKS - 1).max(lowest);
            let earliest = Arc::new(
                load_block(&reader, lowest).with_context(|| format!("loading block {lowest}"))?,
            );
            let mut view = engine.shared.view_mut();
            for h in first..=height {
                let b = load_block(&reader, h).with_context(|| format!("loading block {h}"))?;
                view.push_block(Arc::new(b));
            }
            view.earliest = Some(earliest);
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
            if let Some(app) = self.shared.app(i) {
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
        let mut last_block = Instant::now();
        // The last block changed the app hash: the next one carries it in its header. The
        // first block of a chain always comes (as CometBFT's).
        let mut proof_due = self.height == 0;
        while !stop.load(Ordering::Acquire) {
            self.maintain_links();
            let now = Instant::now();
            if now < next {
                thread::sleep((next - now).min(POLL));
                continue;
            }
            let due = match self.cfg.empty_blocks {
                EmptyBlocks::Always => true,
                EmptyBlocks::Every(d) => proof_due || now.duration_since(last_block) >= d,
                EmptyBlocks::Never => proof_due,
            };
            if !due && !self.shared.wait_for_tx(POLL) {
                continue;
            }
            let (height, app_hash) = (self.height, self.last_app_hash.clone());
            let started = Instant::now();
            self.produce_block()?;
            if self.height != height {
                last_block = started;
                proof_due = self.last_app_hash != app_hash;
            }
            next += self.cfg.block_interval;
            if self.cfg.empty_blocks != EmptyBlocks::Always {
                // After an idle wait `next` lags: the interval counts from this block.
                next = next.max(started + self.cfg.block_interval);
            }
            let now = Instant::now();
            if next < now {
                next = now;
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
                        .app_list()
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
            .app(i)
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
        if let Some(app) = self.shared.app(i) {
            app.set_up(false);
        }
    }

    /// Connects down apps, advances syncing ones, promotes synced ones.
    fn maintain_links(&mut self) {
        // Apps attached at runtime (`dev_add_app`) start down, like every app at start.
        let attached = self.shared.app_list().len();
        let mut changed = self.slots.len() < attached;
        while self.slots.len() < attached {
            self.slots.push(Slot::down());
        }
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            let link = mem::replace(&mut slot.link, Link::Down);
            let (link, ch) = match link {
                Link::Down => self.try_connect(i),
                Link::Syncing { worker, target } => match worker.try_recv() {
                    None => (Link::Syncing { worker, target }, false),
                    Some(Ok(Done::Synced(report))) => (self.on_synced(i, worker, report), true),
                    Some(Ok(_)) => (
                        self.link_failed(i, "unexpected answer while syncing".to_owned()),
                        true,
                    ),
                    Some(Err(e)) => (self.link_failed(i, format!("sync failed: {e}")), true),
                },
                up @ Link::Up { .. } => (up, false),
            };
            if let Some(slot) = self.slots.get_mut(i) {
                slot.link = link;
            }
            changed |= ch;
        }
        if changed {
            self.publish_apps();
        }
    }

    /// Down → Syncing, if a retry is due and the app accepts a connection.
    fn try_connect(&mut self, i: usize) -> (Link, bool) {
        let Some(app) = self.shared.app(i) else {
            return (Link::Down, false);
        };
        let Some(slot) = self.slots.get_mut(i) else {
            return (Link::Down, false);
        };
        if slot
            .last_attempt
            .is_some_and(|t| t.elapsed() < RETRY_INTERVAL)
        {
            return (Link::Down, false);
        }
        slot.last_attempt = Some(Instant::now());
        let target = self.height;
        let worker = Worker::connect(
            &app.name,
            &app.addr,
            self.store.reader(),
            self.genesis.clone(),
        )
        .and_then(|w| w.send(Job::Sync { target }).map(|()| w));
        match worker {
            Ok(worker) => {
                tracing::info!(app = %app.name, addr = %app.addr, "connected; syncing");
                (Link::Syncing { worker, target }, true)
            }
            Err(e) => {
                tracing::debug!(app = %app.name, error = %e, "app not reachable");
                slot.error = Some(e);
                (Link::Down, false)
            }
        }
    }

    /// A sync finished: the app is up if it reached the current height, else it syncs on.
    fn on_synced(&mut self, i: usize, worker: Worker, report: SyncReport) -> Link {
        self.shared
            .app_version
            .store(report.app_version, std::sync::atomic::Ordering::Release);
        let name = self.name(i);
        if let Some(slot) = self.slots.get_mut(i) {
            slot.height = report.to;
            if report.retain_height.is_some() {
                slot.retain = report.retain_height;
            }
        }
        if !report.mismatches.is_empty() {
            let d = describe_mismatches(&name, &report);
            tracing::error!(app = %name, "app hash divergence during replay: {d}");
            self.shared.view_mut().divergence = Some(d);
        }
        if report.to < self.height {
            // Blocks were made meanwhile: replay those too.
            let target = self.height;
            return match worker.send(Job::Sync { target }) {
                Ok(()) => Link::Syncing { worker, target },
                Err(e) => self.link_failed(i, e),
            };
        }
        if report.from == report.to && report.to > 0 {
            // Nothing replayed: at least check the app hash it reports.
            let stored = self
                .shared
                .view()
                .latest
                .as_ref()
                .map(|b| b.result.app_hash.clone());
            if let Some(stored) = stored {
                if !stored.is_empty() && stored.as_ref() != report.info_app_hash {
                    tracing::warn!(
                        app = %name,
                        height = report.to,
                        info_app_hash = %hex::encode_upper(&report.info_app_hash),
                        stored_app_hash = %hex::encode_upper(&stored),
                        "the app's Info app hash differs from the stored one"
                    );
                }
            }
        }
        tracing::info!(
            app = %name,
            height = report.to,
            replayed = report.to - report.from,
            init_chain = report.init_chain,
            "app is up"
        );
        if let Some(slot) = self.slots.get_mut(i) {
            slot.error = None;
        }
        if let Some(app) = self.shared.app(i) {
            app.set_up(true);
        }
        Link::Up { worker }
    }

    /// A connection failed outside a block round: back to Down.
    fn link_failed(&mut self, i: usize, error: String) -> Link {
        let name = self.name(i);
        if let Some(slot) = self.slots.get_mut(i) {
            // The same failure again (retried every RETRY_INTERVAL) is not news.
            if slot.error.as_deref() == Some(error.as_str()) {
                tracing::debug!(app = %name, %error, "app connection failed again");
            } else {
                tracing::warn!(app = %name, %error, "app connection failed");
            }
            slot.error = Some(error);
            slot.last_attempt = Some(Instant::now());
        }
        if let Some(app) = self.shared.app(i) {
            app.set_up(false);
        }
        Link::Down
    }

    /// Prunes the block store below the lowest `retain_height` of the apps, as CometBFT prunes
    /// its block store below its app's: every app must have named one since this sequencer
    /// started, and an app that says 0 (or has not said) keeps every block. A failure to
    /// delete a file is logged, not fatal (the file is found and pruned again at start). Then
    /// the block log's gauges, pruned or not.
    pub(super) fn prune_blocks(&mut self) {
        let lowest = self
            .slots
            .iter()
            .map(|s| s.retain.filter(|r| *r > 0))
            .collect::<Option<Vec<u64>>>()
            .and_then(|r| r.into_iter().min());
        if let Some(lowest) = lowest {
            self.prune_below(lowest);
        }
        self.shared
            .metrics
            .block_store(self.store.disk_bytes(), self.store.reader().earliest());
    }

    fn prune_below(&mut self, lowest: u64) {
        match self.store.prune(lowest) {
            Ok(0) => {}
            Ok(_) => {
                let reader = self.store.reader();
                let h = reader.earliest();
                match load_block(&reader, h) {
                    Ok(b) => self.shared.view_mut().forget_below(Arc::new(b)),
                    Err(e) => {
                        tracing::warn!(height = h, error = %format!("{e:#}"), "loading the earliest block after pruning")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "pruning the block store"),
        }
    }

    fn publish_apps(&self) {
        let apps: Vec<AppStatus> = self
            .shared
            .app_list()
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
