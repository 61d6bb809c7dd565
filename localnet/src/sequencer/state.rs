//! State shared between the block loop and the RPC workers.
//!
//! Lock discipline: the RPC never holds a lock across an ABCI call on a consensus connection.
//! `check_gate` serializes CheckTx(New)+admission against the Commit+Recheck phase of a block
//! (as CometBFT locks its mempool across Commit and recheck, so a tx checked against
//! post-commit state is never overtaken by the recheck of an older one); FinalizeBlock, the
//! expensive call, runs outside it. Order: `check_gate` → `mempool`; `view` is taken alone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use serde::Serialize;
use tendermint_proto::v0_38::abci::{
    CheckTxType, RequestCheckTx, RequestFinalizeBlock, RequestInitChain, RequestQuery,
    ResponseCheckTx, ResponseFinalizeBlock, ResponseInfo, ResponseQuery,
};

use super::app_conn::AppHandle;
use super::mempool::{tx_hash, AdmitError, Mempool, MempoolTx, TxHash};
use super::store::StoreReader;
use super::time::rfc3339;

/// Blocks kept in memory for the RPC (older ones are read from the block store).
pub const RECENT_BLOCKS: usize = 256;
/// Committed txs kept in the `tx` index.
pub const TX_INDEX_CAP: usize = 100_000;

/// A committed block with what the RPC shows about it.
#[derive(Debug)]
pub struct CommittedBlock {
    /// The block as sent to the apps.
    pub block: RequestFinalizeBlock,
    /// The reference app's answer.
    pub result: ResponseFinalizeBlock,
    /// Hash of the previous block (empty at height 1).
    pub prev_hash: Bytes,
    /// App hash after the previous block (what CometBFT's header `app_hash` holds).
    pub prev_app_hash: Bytes,
}

impl CommittedBlock {
    /// Height.
    pub fn height(&self) -> u64 {
        u64::try_from(self.block.height).unwrap_or(0)
    }
}

/// A committed block's FinalizeBlock result: shared with the view while the block is recent,
/// else read from the block store.
#[derive(Debug)]
pub enum BlockResult {
    /// One of the view's recent blocks.
    Recent(Arc<CommittedBlock>),
    /// Read from the store.
    Stored(Box<ResponseFinalizeBlock>),
}

impl BlockResult {
    /// The result.
    pub fn get(&self) -> &ResponseFinalizeBlock {
        match self {
            BlockResult::Recent(b) => &b.result,
            BlockResult::Stored(r) => r,
        }
    }
}

/// Where a committed tx is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLoc {
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u32,
    /// Result code.
    pub code: u32,
}

/// Bounded index of committed txs by hash.
#[derive(Debug, Default)]
pub struct TxIndex {
    map: BTreeMap<TxHash, TxLoc>,
    order: VecDeque<(TxHash, u64)>,
}

impl TxIndex {
    /// Records the txs of a committed block.
    pub fn add_block(&mut self, b: &CommittedBlock) {
        let height = b.height();
        for (i, tx) in b.block.txs.iter().enumerate() {
            let code = b.result.tx_results.get(i).map_or(0, |r| r.code);
            let hash = tx_hash(tx);
            self.map.insert(
                hash,
                TxLoc {
                    height,
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    code,
                },
            );
            self.order.push_back((hash, height));
        }
        while self.order.len() > TX_INDEX_CAP {
            if let Some((h, height)) = self.order.pop_front() {
                if self.map.get(&h).is_some_and(|l| l.height == height) {
                    self.map.remove(&h);
                }
            }
        }
    }

    /// Forgets the txs of blocks below `height` (pruned).
    pub fn forget_below(&mut self, height: u64) {
        while self.order.front().is_some_and(|(_, h)| *h < height) {
            if let Some((hash, h)) = self.order.pop_front() {
                if self.map.get(&hash).is_some_and(|l| l.height == h) {
                    self.map.remove(&hash);
                }
            }
        }
    }

    /// Location of a committed tx.
    pub fn get(&self, hash: &TxHash) -> Option<TxLoc> {
        self.map.get(hash).copied()
    }

    /// Number of indexed txs.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Life cycle of the sequencer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting to and syncing the apps.
    Starting,
    /// Producing blocks.
    Running,
    /// Stopped on request.
    Stopped,
    /// Stopped on an error (the block store failed, or no app could be reached).
    Failed(String),
}

/// Connection state of one app, as the block loop sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Not connected; retried every tick.
    Down,
    /// Connected, being brought to the chain's height (InitChain and/or replay).
    Syncing,
    /// Receives every block.
    Up,
}

/// Status of one app.
#[derive(Clone, Debug, Serialize)]
pub struct AppStatus {
    /// Name (`node0`, or the address).
    pub name: String,
    /// ABCI address.
    pub addr: String,
    /// Connection state.
    pub state: AppState,
    /// Last height the app is known to have committed.
    pub height: u64,
    /// Last connection error, if any.
    pub error: Option<String>,
}

/// What the RPC reads about the chain.
#[derive(Debug)]
pub struct ChainView {
    /// Life cycle.
    pub phase: Phase,
    /// Last committed height.
    pub height: u64,
    /// Last committed block.
    pub latest: Option<Arc<CommittedBlock>>,
    /// The lowest block the store serves (block 1 until the block store is pruned).
    pub earliest: Option<Arc<CommittedBlock>>,
    /// The last [`RECENT_BLOCKS`] blocks.
    pub recent: BTreeMap<u64, Arc<CommittedBlock>>,
    /// Committed txs.
    pub tx_index: TxIndex,
    /// Searchable txs and blocks, and blocks by hash.
    pub search: super::search::SearchIndex,
    /// Per-app status.
    pub apps: Vec<AppStatus>,
    /// Last app hash divergence seen, if any (never cleared: a diverged chain stays suspect).
    pub divergence: Option<String>,
}

impl ChainView {
    /// Height of the lowest block served (1 before any block).
    pub fn earliest_height(&self) -> u64 {
        self.earliest.as_ref().map_or(1, |b| b.height().max(1))
    }

    /// The block store was pruned: `earliest` is now the lowest block served, and nothing
    /// below it is found by hash or search.
    pub fn forget_below(&mut self, earliest: Arc<CommittedBlock>) {
        let h = earliest.height();
        self.tx_index.forget_below(h);
        self.search.forget_below(h);
        self.recent = self.recent.split_off(&h);
        self.earliest = Some(earliest);
    }

    /// Records a committed block.
    pub fn push_block(&mut self, b: Arc<CommittedBlock>) {
        let h = b.height();
        self.tx_index.add_block(&b);
        self.search.add_block(&b);
        if h == 1 {
            self.earliest = Some(b.clone());
        }
        self.height = h;
        self.latest = Some(b.clone());
        self.recent.insert(h, b);
        while self.recent.len() > RECENT_BLOCKS {
            self.recent.pop_first();
        }
    }
}

/// Public snapshot of the sequencer's state.
#[derive(Clone, Debug, Serialize)]
pub struct SequencerStatus {
    /// Chain id.
    pub chain_id: String,
    /// `starting`, `running`, `stopped` or `failed`.
    pub phase: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Last committed height.
    pub height: u64,
    /// Upper hex hash of the last block.
    pub block_hash: String,
    /// Upper hex app hash after the last block.
    pub app_hash: String,
    /// Time of the last block (RFC 3339).
    pub block_time: Option<String>,
    /// Per-app status.
    pub apps: Vec<AppStatus>,
    /// Last app hash divergence seen.
    pub app_hash_divergence: Option<String>,
    /// Pending txs.
    pub mempool_txs: usize,
}

/// Why a broadcast tx was not taken.
#[derive(Debug)]
pub enum BroadcastError {
    /// Refused before CheckTx (duplicate, full, too large): a JSON-RPC error, as in CometBFT.
    Refused(String),
    /// No app could run CheckTx.
    Unavailable(String),
}

/// State shared by the block loop and the RPC.
pub struct Shared {
    /// Chain id.
    pub chain_id: String,
    /// The apps, in configuration order ("first available" means first up in this order);
    /// [`Shared::add_app`] appends to it at runtime, nothing removes from it.
    pub apps: RwLock<Vec<Arc<AppHandle>>>,
    /// Pending txs.
    pub mempool: Mutex<Mempool>,
    /// Signalled (with `mempool`) when a tx enters the mempool: a loop that makes no empty
    /// blocks waits on it.
    pub tx_arrived: Condvar,
    /// See the module doc.
    pub check_gate: Mutex<()>,
    /// Committed chain.
    pub view: RwLock<ChainView>,
    /// Signalled on every commit and phase change.
    pub changed: (Mutex<u64>, Condvar),
    /// Stored blocks.
    pub store: Arc<StoreReader>,
    /// The dev validator's ed25519 public key (shown in status, sent in InitChain).
    pub validator_pub_key: [u8; 32],
    /// The InitChain request of this chain (its genesis: consensus params, validator, app state).
    pub genesis: Arc<RequestInitChain>,
    /// The app's protocol version as its ABCI `Info` reports it (headers' `version.app`;
    /// assumed constant over the chain, as the headers of stored blocks are rebuilt with it).
    pub app_version: AtomicU64,
    /// Largest tx accepted.
    pub max_tx_bytes: usize,
    /// The secret `dev_add_app` needs (None: the method is off).
    pub dev_add_app_token: Option<String>,
    /// Most apps attached at once.
    pub max_apps: usize,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: crate::sequencer::metrics::Metrics,
}

impl Shared {
    /// The app at index `i` (configuration order).
    pub fn app(&self, i: usize) -> Option<Arc<AppHandle>> {
        self.apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(i)
            .cloned()
    }

    /// Every app, in configuration order.
    pub fn app_list(&self) -> Vec<Arc<AppHandle>> {
        self.apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Attaches another ABCI app to the running chain (`dev_add_app` RPC): the block loop
    /// connects it, runs InitChain, replays every stored block to it, then drives it like the
    /// others. Only with the configured token, only an app on this host (a loopback or
    /// unspecified address: the sequencer dials nothing else), at most `max_apps`. Refuses a
    /// name already attached, and an address that reaches an attached app however it is
    /// spelled (`[::ffff:127.0.0.1]:P`, `0.0.0.0:P`, `127.0.0.2:P` all reach `127.0.0.1:P`):
    /// driving one app twice would feed it blocks out of order. Attaching is permanent until
    /// the sequencer stops.
    pub fn add_app(&self, name: &str, addr: &str, token: Option<&str>) -> Result<(), String> {
        let Some(expected) = &self.dev_add_app_token else {
            return Err("dev_add_app is off on this sequencer (the localnet enables it)".into());
        };
        if !token.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes())) {
            return Err("dev_add_app needs the token of localnet.json (`dev_token`)".into());
        }
        let addr = addr.strip_prefix("tcp://").unwrap_or(addr).trim();
        let name = name.trim();
        let Some(sock) = addr
            .parse::<std::net::SocketAddr>()
            .ok()
            .filter(|_| !name.is_empty())
        else {
            return Err(format!(
                "bad app {name:?} at {addr:?} (expected a name and an ip:port)"
            ));
        };
        let Some(port) = local_port(&sock) else {
            return Err(format!(
                "app address {addr} is not on this host: dev_add_app attaches only local apps (loopback)"
            ));
        };
        let mut apps = self.apps.write().unwrap_or_else(PoisonError::into_inner);
        let same_app = |a: &AppHandle| {
            a.addr
                .parse::<std::net::SocketAddr>()
                .ok()
                .map_or(a.addr == addr, |s| {
                    s == sock || (local_port(&s) == Some(port))
                })
        };
        if let Some(a) = apps.iter().find(|a| a.name == name || same_app(a)) {
            return Err(format!("app {} at {} is attached already", a.name, a.addr));
        }
        if apps.len() >= self.max_apps {
            return Err(format!(
                "{} apps are attached: the most this sequencer drives",
                apps.len()
            ));
        }
        apps.push(Arc::new(AppHandle::new(name.to_owned(), addr.to_owned())));
        tracing::info!(app = %name, %addr, "app attached; the block loop connects and syncs it");
        Ok(())
    }

    /// Read access to the view (a poisoned lock is still readable: writers never leave it
    /// half-updated across a panic point).
    pub fn view(&self) -> std::sync::RwLockReadGuard<'_, ChainView> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access to the view.
    pub fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, ChainView> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mempool.
    pub fn mempool(&self) -> std::sync::MutexGuard<'_, Mempool> {
        self.mempool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits at most `timeout` for the mempool to hold a tx; whether it does.
    pub fn wait_for_tx(&self, timeout: Duration) -> bool {
        let m = self.mempool();
        if !m.is_empty() {
            return true;
        }
        let (m, _) = match self.tx_arrived.wait_timeout(m, timeout) {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        !m.is_empty()
    }

    /// Wakes everyone waiting in [`Shared::wait_until`].
    pub fn notify(&self) {
        let (m, cv) = &self.changed;
        let mut n = m.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.wrapping_add(1);
        cv.notify_all();
    }

    /// Waits until `cond` holds on the view, or `timeout`. Returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&ChainView) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &self.changed;
        let mut guard = m.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if cond(&self.view()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded waits also cover a notification racing with the check above.
            let wait = (deadline - now).min(Duration::from_millis(100));
            guard = match cv.wait_timeout(guard, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// CheckTx on the first app that is up and answers.
    pub fn check_tx(&self, tx: Bytes, kind: CheckTxType) -> Result<ResponseCheckTx, String> {
        let mut errors = Vec::new();
        for app in self.app_list().iter().filter(|a| a.is_up()) {
            match app.check_tx(RequestCheckTx {
                tx: tx.clone(),
                r#type: kind as i32,
            }) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::warn!(app = %app.name, error = %e, "CheckTx failed");
                    errors.push(e);
                }
            }
        }
        Err(unavailable("CheckTx", &errors))
    }

    /// Query on the first app that is up and answers.
    pub fn query(&self, req: RequestQuery) -> Result<ResponseQuery, String> {
        let mut errors = Vec::new();
        for app in self.app_list().iter().filter(|a| a.is_up()) {
            match app.query(req.clone()) {
                Ok(r) => return Ok(r),
                Err(e) => errors.push(e),
            }
        }
        Err(unavailable("Query", &errors))
    }

    /// Info on the first app that is up and answers.
    pub fn info(&self) -> Result<ResponseInfo, String> {
        let mut errors = Vec::new();
        for app in self.app_list().iter().filter(|a| a.is_up()) {
            match app.info() {
                Ok(r) => return Ok(r),
                Err(e) => errors.push(e),
            }
        }
        Err(unavailable("Info", &errors))
    }

    fn precheck(&self, hash: &TxHash, len: usize) -> Result<(), BroadcastError> {
        self.mempool()
            .can_admit(hash, len)
            .map_err(|e| BroadcastError::Refused(e.to_string()))?;
        if self.view().tx_index.get(hash).is_some_and(|l| l.code == 0) {
            return Err(BroadcastError::Refused(AdmitError::Duplicate.to_string()));
        }
        Ok(())
    }

    /// `broadcast_tx_sync`: CheckTx, and admission to the mempool if the code is 0.
    pub fn broadcast(&self, tx: Bytes) -> Result<(TxHash, ResponseCheckTx), BroadcastError> {
        if tx.len() > self.max_tx_bytes {
            return Err(BroadcastError::Refused(format!(
                "tx too large. Max size is {}, but got {}",
                self.max_tx_bytes,
                tx.len()
            )));
        }
        let hash = tx_hash(&tx);
        // Cheap refusal without waiting for the gate, then again under it.
        self.precheck(&hash, tx.len())?;
        let _gate = self
            .check_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.precheck(&hash, tx.len())?;
        let res = self
            .check_tx(tx.clone(), CheckTxType::New)
            .map_err(BroadcastError::Unavailable)?;
        if res.code == 0 {
            self.mempool()
                .admit(MempoolTx {
                    hash,
                    tx,
                    received: std::time::Instant::now(),
                })
                .map_err(|e| BroadcastError::Refused(e.to_string()))?;
            self.tx_arrived.notify_all();
        }
        Ok((hash, res))
    }

    /// The result of the committed block at `height`, also of the stored block below the
    /// earliest one served (the next header's `last_results_hash`).
    pub fn result_at(&self, height: u64) -> Result<BlockResult, String> {
        if let Some(b) = self.view().recent.get(&height) {
            return Ok(BlockResult::Recent(b.clone()));
        }
        match self.store.result(height) {
            Ok(Some(r)) => Ok(BlockResult::Stored(Box::new(r))),
            Ok(None) => Err(format!("block {height} has no stored result")),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// The committed block at `height` (from memory, else from the block store).
    pub fn block_at(&self, height: u64) -> Result<Arc<CommittedBlock>, String> {
        {
            let v = self.view();
            if height == 0 {
                return Err("height must be greater than 0, but got 0".to_owned());
            }
            if height > v.height {
                return Err(format!(
                    "height {height} must be less than or equal to the current blockchain height {}",
                    v.height
                ));
            }
            if let Some(b) = v.recent.get(&height) {
                return Ok(b.clone());
            }
            let lowest = v.earliest_height();
            if height < lowest {
                return Err(format!(
                    "height {height} is not available, lowest height is {lowest}"
                ));
            }
        }
        load_block(&self.store, height)
            .map(Arc::new)
            .map_err(|e| format!("{e:#}"))
    }

    /// A status snapshot.
    pub fn status(&self) -> SequencerStatus {
        let mempool_txs = self.mempool().len();
        let v = self.view();
        let (phase, error) = match &v.phase {
            Phase::Starting => ("starting", None),
            Phase::Running => ("running", None),
            Phase::Stopped => ("stopped", None),
            Phase::Failed(e) => ("failed", Some(e.clone())),
        };
        SequencerStatus {
            chain_id: self.chain_id.clone(),
            phase: phase.to_owned(),
            error,
            height: v.height,
            block_hash: v
                .latest
                .as_ref()
                .map(|b| hex::encode_upper(&b.block.hash))
                .unwrap_or_default(),
            app_hash: v
                .latest
                .as_ref()
                .map(|b| hex::encode_upper(&b.result.app_hash))
                .unwrap_or_default(),
            block_time: v
                .latest
                .as_ref()
                .and_then(|b| b.block.time.as_ref())
                .map(rfc3339),
            apps: v.apps.clone(),
            app_hash_divergence: v.divergence.clone(),
            mempool_txs,
        }
    }
}

fn unavailable(what: &str, errors: &[String]) -> String {
    if errors.is_empty() {
        format!("no ABCI app is up to answer {what}")
    } else {
        format!("no ABCI app answered {what}: {}", errors.join("; "))
    }
}

/// Reads block `height` and what the RPC needs about it from the store.
pub fn load_block(store: &StoreReader, height: u64) -> anyhow::Result<CommittedBlock> {
    use anyhow::Context;
    let block = store.block(height)?;
    let result = store
        .result(height)?
        .with_context(|| format!("block {height} has no stored result"))?;
    let (prev_hash, prev_app_hash) = if height > 1 {
        let prev = store.block(height - 1)?;
        let prev_res = store
            .result(height - 1)?
            .with_context(|| format!("block {} has no stored result", height - 1))?;
        (prev.hash, prev_res.app_hash)
    } else {
        (Bytes::new(), Bytes::new())
    };
    Ok(CommittedBlock {
        block,
        result,
        prev_hash,
        prev_app_hash,
    })
}

/// The port of `addr` if it names this host (a loopback or unspecified address, IPv4, IPv6 or
/// IPv4-mapped): every such spelling of a port reaches the same listener.
fn local_port(addr: &std::net::SocketAddr) -> Option<u16> {
    let ip = addr.ip().to_canonical();
    (ip.is_loopback() || ip.is_unspecified()).then_some(addr.port())
}

/// Equality in time independent of where the inputs differ (a token check).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
