//! Connections to one ABCI app, as CometBFT opens them: a consensus connection (owned by a
//! worker thread so the block loop can drive all apps in parallel and time out a stuck one), a
//! mempool connection (CheckTx, in arrival order) and a small pool of query connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use tendermint_abci::{Client, ClientBuilder};
use tendermint_proto::v0_38::abci::{
    RequestCheckTx, RequestFinalizeBlock, RequestInfo, RequestInitChain, RequestQuery,
    ResponseCheckTx, ResponseFinalizeBlock, ResponseInfo, ResponseQuery,
};

use super::store::StoreReader;

/// Read buffer of our ABCI clients (the crate's default of 1 KiB means many small reads).
const CLIENT_READ_BUF: usize = 64 * 1024;
/// Idle query connections kept per app.
const QUERY_POOL: usize = 4;

/// The `Info` request we send, with CometBFT v0.38's version numbers.
pub fn info_request() -> RequestInfo {
    RequestInfo {
        version: "0.38.17".to_owned(),
        block_version: 11,
        p2p_version: 8,
        abci_version: "2.0.0".to_owned(),
    }
}

fn connect(addr: &str) -> Result<Client, String> {
    ClientBuilder::new(CLIENT_READ_BUF)
        .connect(addr)
        .map_err(|e| format!("connecting to {addr}: {e}"))
}

/// How long CheckTx may take before the mempool connection is dropped (the next app is tried).
pub const CHECK_TX_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a query may take before its connection is dropped.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

type ConnJob = Box<dyn FnOnce(&mut Client) -> bool + Send>;

/// A connection owned by a thread, so that a call can time out even though tendermint-abci's
/// client has no socket timeouts: on timeout the caller drops the `ConnThread`, and the thread
/// ends once the stuck call returns.
struct ConnThread {
    jobs: mpsc::SyncSender<ConnJob>,
    generation: u64,
}

impl ConnThread {
    fn connect(name: &str, addr: &str, role: &str, generation: u64) -> Result<ConnThread, String> {
        let mut client = connect(addr)?;
        let (tx, rx) = mpsc::sync_channel::<ConnJob>(1);
        thread::Builder::new()
            .name(format!("abci-{role}-{name}"))
            .spawn(move || {
                for job in rx {
                    if !job(&mut client) {
                        break;
                    }
                }
            })
            .map_err(|e| format!("spawning a connection thread: {e}"))?;
        Ok(ConnThread {
            jobs: tx,
            generation,
        })
    }

    /// Runs `f` on the connection; `Err` means the connection is no longer usable.
    fn call<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Client) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |c: &mut Client| {
                let r = f(c);
                let ok = r.is_ok();
                let _ = tx.send(r);
                ok
            }))
            .map_err(|_| "connection closed".to_owned())?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(format!("no answer in {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => Err("connection closed".to_owned()),
        }
    }
}

/// The RPC-side view of one app: whether the block loop considers it up, and its mempool
/// connection and query connections (opened lazily; dropped when the app goes down or up).
pub struct AppHandle {
    /// Name shown in status and logs (`node0`, or the address).
    pub name: String,
    /// ABCI address.
    pub addr: String,
    up: AtomicBool,
    /// Bumped on every up/down change, so a connection to a previous incarnation of the app is
    /// never put back into use.
    generation: AtomicU64,
    mempool: Mutex<Option<ConnThread>>,
    query: Mutex<Vec<ConnThread>>,
}

impl AppHandle {
    /// A handle, initially down.
    pub fn new(name: String, addr: String) -> Self {
        AppHandle {
            name,
            addr,
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            mempool: Mutex::new(None),
            query: Mutex::new(Vec::new()),
        }
    }

    /// Whether the block loop currently drives this app.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Marks the app up or down; connections to a previous incarnation are dropped.
    pub fn set_up(&self, up: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.up.store(up, Ordering::Release);
        *self.mempool.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.query
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// CheckTx over the mempool connection (one connection: CheckTx runs in arrival order).
    pub fn check_tx(&self, req: RequestCheckTx) -> Result<ResponseCheckTx, String> {
        let mut slot = self.mempool.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.generation.load(Ordering::Acquire);
        let conn = match slot.take() {
            Some(c) if c.generation == generation => c,
            _ => ConnThread::connect(&self.name, &self.addr, "mempool", generation)?,
        };
        let res = conn
            .call(CHECK_TX_TIMEOUT, move |c| {
                c.check_tx(req).map_err(|e| e.to_string())
            })
            .map_err(|e| format!("CheckTx on {}: {e}", self.name))?;
        *slot = Some(conn);
        Ok(res)
    }

    fn with_query_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let generation = self.generation.load(Ordering::Acquire);
        let pooled = self
            .query
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(c) if c.generation == generation => c,
            _ => ConnThread::connect(&self.name, &self.addr, "query", generation)?,
        };
        let res = conn
            .call(QUERY_TIMEOUT, f)
            .map_err(|e| format!("query connection to {}: {e}", self.name))?;
        let mut pool = self.query.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < QUERY_POOL && conn.generation == self.generation.load(Ordering::Acquire) {
            pool.push(conn);
        }
        Ok(res)
    }

    /// Query over a query connection.
    pub fn query(&self, req: RequestQuery) -> Result<ResponseQuery, String> {
        self.with_query_conn(move |c| c.query(req).map_err(|e| e.to_string()))
    }

    /// Info over a query connection.
    pub fn info(&self) -> Result<ResponseInfo, String> {
        self.with_query_conn(|c| c.info(info_request()).map_err(|e| e.to_string()))
    }
}

/// Work for a consensus-connection worker.
pub enum Job {
    /// Bring the app to `target`: Info, InitChain if it is at height 0, then FinalizeBlock +
    /// Commit of every stored block above its height.
    Sync {
        /// Height to reach.
        target: u64,
    },
    /// Execute a new block.
    Finalize(RequestFinalizeBlock),
    /// Commit the executed block.
    Commit,
}

/// A replayed block whose app hash differs from the stored one.
#[derive(Debug, Clone)]
pub struct HashMismatch {
    /// Height.
    pub height: u64,
    /// Stored (reference) app hash.
    pub expected: Vec<u8>,
    /// What the app computed.
    pub got: Vec<u8>,
}

/// Outcome of a [`Job::Sync`].
#[derive(Debug)]
pub struct SyncReport {
    /// Height the app reported in Info.
    pub from: u64,
    /// Height it is at now.
    pub to: u64,
    /// Whether it was sent InitChain.
    pub init_chain: bool,
    /// Replayed blocks whose app hash differs from the stored one.
    pub mismatches: Vec<HashMismatch>,
    /// The app hash the app reported in Info.
    pub info_app_hash: Vec<u8>,
    /// The app's protocol version (Info).
    pub app_version: u64,
    /// `retain_height` of the last replayed block's Commit (None: nothing replayed).
    pub retain_height: Option<u64>,
}

/// A finished job.
pub enum Done {
    /// Sync finished.
    Synced(SyncReport),
    /// FinalizeBlock answered.
    Finalized(Box<ResponseFinalizeBlock>),
    /// Commit answered, with the app's `retain_height` (blocks below it may be pruned; 0:
    /// keep every block).
    Committed {
        /// `ResponseCommit.retain_height` (a negative one counts as 0).
        retain_height: u64,
    },
}

/// The owner of one app's consensus connection: a thread that runs [`Job`]s in order.
/// Dropping it abandons the connection (the thread ends after its current call).
pub struct Worker {
    jobs: mpsc::SyncSender<Job>,
    done: mpsc::Receiver<Result<Done, String>>,
}

struct WorkerCtx {
    name: String,
    store: Arc<StoreReader>,
    genesis: Arc<RequestInitChain>,
}

impl Worker {
    /// Connects the consensus connection and starts the worker thread.
    pub fn connect(
        name: &str,
        addr: &str,
        store: Arc<StoreReader>,
        genesis: Arc<RequestInitChain>,
    ) -> Result<Worker, String> {
        let client = connect(addr)?;
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(4);
        let (done_tx, done_rx) = mpsc::sync_channel(4);
        let ctx = WorkerCtx {
            name: name.to_owned(),
            store,
            genesis,
        };
        thread::Builder::new()
            .name(format!("abci-{name}"))
            .spawn(move || worker_loop(client, ctx, jobs_rx, done_tx))
            .map_err(|e| format!("spawning a worker thread: {e}"))?;
        Ok(Worker {
            jobs: jobs_tx,
            done: done_rx,
        })
    }

    /// Queues a job.
    pub fn send(&self, job: Job) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "consensus connection closed".to_owned())
    }

    /// Waits for the next finished job.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Done, String> {
        match self.done.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "no answer on the consensus connection in {timeout:?}"
            )),
            Err(RecvTimeoutError::Disconnected) => Err("consensus connection closed".to_owned()),
        }
    }

    /// The next finished job, if there is one.
    pub fn try_recv(&self) -> Option<Result<Done, String>> {
        match self.done.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err("consensus connection closed".to_owned())),
        }
    }
}

fn worker_loop(
    mut client: Client,
    ctx: WorkerCtx,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::SyncSender<Result<Done, String>>,
) {
    for job in jobs {
        let res = match job {
            Job::Sync { target } => sync(&mut client, &ctx, target).map(Done::Synced),
            Job::Finalize(req) => client
                .finalize_block(req)
                .map(|r| Done::Finalized(Box::new(r)))
                .map_err(|e| format!("FinalizeBlock: {e}")),
            Job::Commit => client
                .commit()
                .map(|r| Done::Committed {
                    retain_height: u64::try_from(r.retain_height).unwrap_or(0),
                })
                .map_err(|e| format!("Commit: {e}")),
        };
        let failed = res.is_err();
        if done.send(res).is_err() || failed {
            break;
        }
    }
    tracing::debug!(app = %ctx.name, "consensus connection worker ends");
}

fn sync(client: &mut Client, ctx: &WorkerCtx, target: u64) -> Result<SyncReport, String> {
    let info = client
        .info(info_request())
        .map_err(|e| format!("Info: {e}"))?;
    let from = u64::try_from(info.last_block_height)
        .map_err(|_| format!("Info: negative height {}", info.last_block_height))?;
    if from > target {
        return Err(format!(
            "the app is at height {from}, ahead of the sequencer's block store (height \
             {target}): the app's data and the sequencer's data dir are from different runs"
        ));
    }
    let base = ctx.store.base();
    if from + 1 < base {
        return Err(format!(
            "the app is at height {from}, but the block store starts at height {base}: the \
             blocks it needs were pruned below the apps' retain height (mpcd \
             --min-retain-blocks); restore the app's data from a copy at height {} or later",
            base - 1
        ));
    }
    let init_chain = from == 0;
    if init_chain {
        let res = client
            .init_chain((*ctx.genesis).clone())
            .map_err(|e| format!("InitChain: {e}"))?;
        tracing::info!(app = %ctx.name, app_hash = %hex::encode_upper(&res.app_hash), "InitChain done");
    }
    let mut mismatches = Vec::new();
    let mut retain_height = None;
    for height in from + 1..=target {
        let block = ctx
            .store
            .block(height)
            .map_err(|e| format!("replay of block {height}: {e:#}"))?;
        let expected = ctx
            .store
            .result(height)
            .map_err(|e| format!("replay of block {height}: {e:#}"))?
            .map(|r| r.app_hash.to_vec());
        let res = client
            .finalize_block(block)
            .map_err(|e| format!("FinalizeBlock (replay of {height}): {e}"))?;
        if let Some(expected) = expected {
            if expected != res.app_hash.as_ref() {
                mismatches.push(HashMismatch {
                    height,
                    expected,
                    got: res.app_hash.to_vec(),
                });
            }
        }
        let committed = client
            .commit()
            .map_err(|e| format!("Commit (replay of {height}): {e}"))?;
        retain_height = Some(u64::try_from(committed.retain_height).unwrap_or(0));
    }
    if target > from {
        tracing::info!(app = %ctx.name, from, to = target, "replayed stored blocks");
    }
    Ok(SyncReport {
        from,
        to: target,
        init_chain,
        mismatches,
        info_app_hash: info.last_block_app_hash.to_vec(),
        app_version: info.app_version,
        retain_height,
    })
}
