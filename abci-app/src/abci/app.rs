//! The ABCI 2.0 application, run as a single actor.
//!
//! tendermint-abci serves each ABCI connection on its own thread with a clone of the
//! `Application`. Our `Application` is [`AppHandle`], a cheap handle that forwards every request
//! to one thread owning [`App`] through a bounded queue, so chain state has exactly one owner and
//! requests are handled one at a time in arrival order (STYLE.md rule 10/13).

use std::path::Path;
use std::sync::mpsc;

use prost::bytes::Bytes;
use seqmpc_module::job::Job;
use sha2::{Digest, Sha256};
use tendermint_proto::v0_38::abci as pb;
use tracing::{error, info, warn};

use crate::abci::persist::{StateFiles, SNAPSHOT_EVERY};
use crate::abci::tx_watch::{self, Delivery, TxWatch};
use crate::chain::genesis::Genesis;
use crate::chain::tx::{Event, TxError, CODESPACE};
use crate::chain::{self, BlockError, BlockWrites, ChainState, CheckState, DecodedTxs};

/// Depth of the actor's request queue.
pub const QUEUE_SIZE: usize = 256;

/// The application state and logic. Owned by one thread.
pub struct App {
    genesis: Genesis,
    genesis_bytes: Vec<u8>,
    files: StateFiles,
    /// Chain state (None before InitChain). Between FinalizeBlock and Commit it holds the
    /// block being committed (executed in place: no copy of the state per block).
    committed: Option<ChainState>,
    /// Writes and jobs of the block being finalized, until Commit.
    pending: Option<(BlockWrites, Vec<Job>)>,
    /// CheckTx's view since the last Commit: sequences ahead of committed, request counts.
    mempool: CheckState,
    /// Txs CheckTx decoded and signature-checked, which FinalizeBlock takes instead of
    /// checking them again.
    decoded: DecodedTxs,
    /// Where committed jobs go (the MPC module).
    jobs: Option<tokio::sync::mpsc::Sender<Job>>,
    /// Blocks the consensus engine keeps below the tip (0: every block); see
    /// [`App::retain_height`].
    min_retain_blocks: u64,
    /// The node's result txs its submitter follows ([`TxWatch`]), and how the block being
    /// finalized delivered those of them it holds, recorded at Commit.
    tx_watch: Option<TxWatch>,
    watched_deliveries: Vec<([u8; 32], Delivery)>,
}

impl App {
    /// The committed state kept in `home` for `genesis_bytes`, if any, read without changing
    /// a file: for offline commands, which may run beside a node that appends to its journal.
    pub fn read_committed(home: &Path, genesis_bytes: &[u8]) -> anyhow::Result<Option<ChainState>> {
        let committed = StateFiles::new(home)
            .read()
            .map_err(|e| anyhow::anyhow!("cannot read the chain state: {e}"))?;
        check_genesis(home, committed.as_ref(), genesis_bytes)?;
        Ok(committed)
    }

    /// Opens the app: loads committed state from `home` if any.
    pub fn open(
        home: &Path,
        genesis_bytes: Vec<u8>,
        jobs: Option<tokio::sync::mpsc::Sender<Job>>,
    ) -> anyhow::Result<App> {
        let genesis: Genesis = serde_json::from_slice(&genesis_bytes)
            .map_err(|e| anyhow::anyhow!("genesis is not valid: {e}"))?;
        let mut files = StateFiles::new(home);
        let committed = files
            .load()
            .map_err(|e| anyhow::anyhow!("cannot load the chain state: {e}"))?;
        check_genesis(home, committed.as_ref(), &genesis_bytes)?;
        Ok(App {
            genesis,
            genesis_bytes,
            files,
            committed,
            pending: None,
            mempool: CheckState::default(),
            decoded: DecodedTxs::default(),
            jobs,
            min_retain_blocks: 0,
            tx_watch: None,
            watched_deliveries: Vec::new(),
        })
    }

    /// Records at each Commit how the block delivered the txs `watch` follows (the node's
    /// result submitter's, [`TxWatch`]).
    pub fn set_tx_watch(&mut self, watch: TxWatch) {
        self.tx_watch = Some(watch);
    }

    /// Lets the consensus engine prune its blocks below the last `n` (0: keep every block, the
    /// default), as the Cosmos SDK's `min-retain-blocks`; see [`App::retain_height`].
    pub fn set_min_retain_blocks(&mut self, n: u64) {
        self.min_retain_blocks = n;
    }

    /// `ResponseCommit.retain_height` after committing `height`: with `min_retain_blocks` N >
    /// 0, the engine keeps the last max(N, genesis `sign_retention_blocks`) blocks (a
    /// finished sign request leaves the state that many blocks after it ended, and until then
    /// its outcome must stay readable in its block's results); 0 (keep all) otherwise. This
    /// app never needs an old block itself: it persists every Commit and replays from there.
    pub fn retain_height(&self, height: u64, state: &ChainState) -> i64 {
        if self.min_retain_blocks == 0 {
            return 0;
        }
        let keep = self
            .min_retain_blocks
            .max(state.limits.sign_retention_blocks);
        if height < keep {
            return 0;
        }
        i64::try_from(height.saturating_sub(keep).saturating_add(1)).unwrap_or(0)
    }

    /// Last committed state, if the chain is initialized.
    pub fn state(&self) -> Option<&ChainState> {
        self.committed.as_ref()
    }

    /// ABCI Info.
    pub fn info(&self) -> pb::ResponseInfo {
        let (height, hash) = match &self.committed {
            Some(s) => (s.height, hex::decode(&s.app_hash).unwrap_or_default()),
            None => (0, Vec::new()),
        };
        pb::ResponseInfo {
            data: "seqmpc".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            app_version: 1,
            last_block_height: i64::try_from(height).unwrap_or(i64::MAX),
            last_block_app_hash: hash.into(),
        }
    }

    /// ABCI InitChain. Refuses an app state other than this node's genesis file.
    pub fn init_chain(&mut self, req: pb::RequestInitChain) -> pb::ResponseInitChain {
        if req.app_state_bytes.as_ref() != self.genesis_bytes.as_slice() {
            // Consensus-critical: running with another genesis than the operator configured
            // would diverge. Halting is the safe answer.
            panic!("InitChain app_state differs from this node's genesis file");
        }
        if req.chain_id != self.genesis.chain_id {
            panic!(
                "InitChain chain_id {:?} differs from genesis {:?}",
                req.chain_id, self.genesis.chain_id
            );
        }
        let (state, hash) = match chain::init_chain(&self.genesis, &self.genesis_bytes) {
            Ok(s) => s,
            Err(e) => panic!("invalid genesis: {e}"),
        };
        if let Err(e) = self.files.snapshot(&state) {
            panic!("cannot persist state: {e}");
        }
        info!(chain_id = %state.chain_id, nodes = state.nodes.len(), "chain initialized");
        self.committed = Some(state);
        pb::ResponseInitChain {
            app_hash: hash.to_vec().into(),
            ..Default::default()
        }
    }

    /// ABCI CheckTx ([`chain::check_tx`]).
    pub fn check_tx(&mut self, req: pb::RequestCheckTx) -> pb::ResponseCheckTx {
        let Some(state) = &self.committed else {
            return check_err(&TxError::Invalid("chain not initialized".into()));
        };
        let checked = self
            .decoded
            .decode(&req.tx)
            .map_err(|e| TxError::Malformed(e.to_string()))
            .and_then(|tx| chain::check_decoded(state, &mut self.mempool, &tx));
        match checked {
            Ok(()) => pb::ResponseCheckTx {
                code: 0,
                ..Default::default()
            },
            Err(e) => {
                let mut r = check_err(&e);
                if let TxError::Sequence { expected, .. } = e {
                    r.data = Bytes::from(expected.to_string());
                }
                r
            }
        }
    }

    /// ABCI FinalizeBlock: executes the block in place on the committed state
    /// ([`chain::finalize_block`]) and converts its outcome to ABCI; its writes and jobs wait
    /// for Commit.
    pub fn finalize_block(&mut self, req: pb::RequestFinalizeBlock) -> pb::ResponseFinalizeBlock {
        if self.pending.take().is_some() {
            // The engine re-sends a height it never committed: drop the executed block by
            // reloading the committed state from disk, then execute the new one.
            warn!("FinalizeBlock again before Commit: reloading the committed state");
            match self.files.load() {
                Ok(s) => self.committed = s,
                Err(e) => panic!("cannot reload the committed state: {e}"),
            }
        }
        let Some(state) = self.committed.as_mut() else {
            return refuse_block(&req, &[], "FinalizeBlock before InitChain");
        };
        let height = u64::try_from(req.height).unwrap_or(0);
        let block_time_ms = req
            .time
            .as_ref()
            .map(|t| {
                u64::try_from(t.seconds).unwrap_or(0).saturating_mul(1000)
                    + u64::try_from(t.nanos / 1_000_000).unwrap_or(0)
            })
            .unwrap_or(0);
        let decoded = &mut self.decoded;
        let block = match chain::finalize_block_with(
            state,
            (height, block_time_ms, &req.hash),
            &req.txs,
            |raw| decoded.take(raw),
        ) {
            Ok(b) => b,
            // Another height than the next one: a second driver (a confused or hostile
            // consensus client) or a bug. Refused, the state untouched: the engine that
            // drives this app in order keeps going.
            Err(e @ BlockError::WrongHeight { .. }) => {
                let hash = hex::decode(&state.app_hash).unwrap_or_default();
                return refuse_block(&req, &hash, &e.to_string());
            }
            // The state tree failed (a bug): the block is half applied in memory. Back to
            // the committed state on disk, and the block refused.
            Err(e @ BlockError::Tree { .. }) => {
                error!("{e}: reloading the committed state");
                match self.files.load() {
                    Ok(s) => self.committed = s,
                    Err(e) => panic!("cannot reload the committed state: {e}"),
                }
                let hash = self
                    .committed
                    .as_ref()
                    .and_then(|s| hex::decode(&s.app_hash).ok())
                    .unwrap_or_default();
                return refuse_block(&req, &hash, &e.to_string());
            }
        };
        let mut jobs = block.jobs;
        // Last: the block itself, from which the module learns the chain's pace.
        jobs.push(Job::Block {
            height,
            block_time_ms,
        });
        self.pending = Some((block.writes, jobs));
        self.watched_deliveries = match &self.tx_watch {
            Some(w) if !w.is_empty() => {
                let hashes: Vec<[u8; 32]> = req.txs.iter().map(|t| tx_watch::tx_hash(t)).collect();
                w.watched(&hashes)
                    .into_iter()
                    .filter_map(|i| {
                        let r = block.tx_results.get(i)?;
                        Some((*hashes.get(i)?, (r.code, r.log.clone())))
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        pb::ResponseFinalizeBlock {
            events: block.block_events.into_iter().map(to_pb_event).collect(),
            tx_results: block
                .tx_results
                .into_iter()
                .map(|r| pb::ExecTxResult {
                    code: r.code,
                    codespace: if r.code == 0 { "" } else { CODESPACE }.into(),
                    log: r.log,
                    events: r.events.into_iter().map(to_pb_event).collect(),
                    ..Default::default()
                })
                .collect(),
            app_hash: block.app_hash.to_vec().into(),
            ..Default::default()
        }
    }

    /// ABCI Commit: persists the finalized state, then hands its jobs to the module.
    pub fn commit(&mut self) -> pb::ResponseCommit {
        let Some((writes, jobs)) = self.pending.take() else {
            // Nothing to commit: refused (a Commit out of order changes nothing).
            error!("Commit without FinalizeBlock: refused, nothing committed");
            return pb::ResponseCommit { retain_height: 0 };
        };
        let Some(state) = self.committed.as_ref() else {
            error!("Commit before InitChain: refused, nothing committed");
            return pb::ResponseCommit { retain_height: 0 };
        };
        let persisted = self.files.append(&writes).and_then(|()| {
            if writes.height % SNAPSHOT_EVERY == 0 {
                self.files.snapshot_in_background(state)
            } else {
                Ok(())
            }
        });
        if let Err(e) = persisted {
            panic!("cannot persist committed state: {e}");
        }
        self.mempool.committed(state);
        if let Some(w) = &self.tx_watch {
            w.delivered(std::mem::take(&mut self.watched_deliveries));
        }
        if let Some(tx) = &self.jobs {
            for job in jobs {
                if tx.blocking_send(job).is_err() {
                    warn!("MPC module is gone; committed job dropped");
                }
            }
        }
        pb::ResponseCommit {
            retain_height: self.retain_height(writes.height, state),
        }
    }

    /// Waits until a snapshot written in the background is durable (tests, and before another
    /// process may open this home).
    pub fn finish_snapshot(&mut self) -> anyhow::Result<()> {
        self.files
            .finish_snapshot()
            .map_err(|e| anyhow::anyhow!("cannot persist the chain state: {e}"))
    }

    /// Jobs a node must (re)do after a restart ([`chain::catch_up_jobs`]; none before
    /// InitChain).
    pub fn catch_up_jobs(&self, node: &seqmpc_proto::NodeId) -> Vec<Job> {
        self.committed
            .as_ref()
            .map(|s| chain::catch_up_jobs(s, node))
            .unwrap_or_default()
    }

    /// Deletions the committed state still waits for `node` to attest
    /// ([`chain::unattested_deletions`]; none before InitChain).
    pub fn unattested_deletions(&self, node: &seqmpc_proto::NodeId) -> Vec<Job> {
        self.committed
            .as_ref()
            .map(|s| chain::unattested_deletions(s, node))
            .unwrap_or_default()
    }

    /// ABCI Query ([`chain::query::query`]). Paths: `/key/<id>`, `/keys`, `/sign/<request_id>`,
    /// `/nodes`, `/account/<hex public key>`, `/proposals`, `/proposal/<id>`, `/state`. With
    /// `prove`, a past `height` or `/state`, one entry read from the Merkle tree
    /// ([`chain::query::query_at`]), its proof in `proof_ops`.
    pub fn query(&self, req: pb::RequestQuery) -> pb::ResponseQuery {
        let Some(state) = &self.committed else {
            return query_err(1, "chain not initialized".into());
        };
        let height = i64::try_from(state.height).unwrap_or(i64::MAX);
        let Ok(asked) = u64::try_from(req.height) else {
            let mut r = query_err(1, format!("height {} is negative", req.height));
            r.height = height;
            return r;
        };
        let path_only = req.path.trim_end_matches('/');
        if req.prove || (asked != 0 && asked != state.height) || path_only == "/state" {
            return query_entry(state, &req, asked, height);
        }
        let value = match chain::query::query(state, &req.path) {
            Ok(v) => v,
            Err(e) => {
                let mut r = query_err(e.code, e.log);
                r.height = height;
                return r;
            }
        };
        pb::ResponseQuery {
            code: 0,
            value: value.into(),
            height,
            key: req.path.into_bytes().into(),
            ..Default::default()
        }
    }
}

/// A FinalizeBlock the app refuses (out of order): every tx answered with an error, the
/// committed app hash (`app_hash`) unchanged, nothing pending for Commit.
fn refuse_block(
    req: &pb::RequestFinalizeBlock,
    app_hash: &[u8],
    why: &str,
) -> pb::ResponseFinalizeBlock {
    error!(height = req.height, "FinalizeBlock refused: {why}");
    let refused = TxError::Invalid(format!("block refused: {why}"));
    pb::ResponseFinalizeBlock {
        tx_results: req
            .txs
            .iter()
            .map(|_| pb::ExecTxResult {
                code: refused.code(),
                codespace: CODESPACE.into(),
                log: refused.to_string(),
                ..Default::default()
            })
            .collect(),
        app_hash: app_hash.to_vec().into(),
        ..Default::default()
    }
}

fn check_err(e: &TxError) -> pb::ResponseCheckTx {
    pb::ResponseCheckTx {
        code: e.code(),
        log: e.to_string(),
        codespace: CODESPACE.into(),
        ..Default::default()
    }
}

/// A query of one entry at a height ([`chain::query::query_at`]) as ABCI answers it: an absent
/// entry is code 7 (not found), with its proof of absence when one was asked for.
fn query_entry(
    state: &ChainState,
    req: &pb::RequestQuery,
    asked: u64,
    latest: i64,
) -> pb::ResponseQuery {
    let answer = match chain::query::query_at(state, &req.path, &req.data, asked, req.prove) {
        Ok(a) => a,
        Err(e) => {
            let mut r = query_err(e.code, e.log);
            r.height = latest;
            return r;
        }
    };
    let key = String::from_utf8_lossy(&answer.key).into_owned();
    let mut r = match &answer.value {
        Some(v) => pb::ResponseQuery {
            code: 0,
            value: v.clone().into(),
            ..Default::default()
        },
        None => {
            let not_found = TxError::NotFound(String::new()).code();
            query_err(
                not_found,
                format!("{key} does not exist at height {}", answer.height),
            )
        }
    };
    r.height = i64::try_from(answer.height).unwrap_or(i64::MAX);
    r.key = answer.key.clone().into();
    r.proof_ops = answer
        .proof
        .map(|p| tendermint_proto::v0_38::crypto::ProofOps {
            ops: vec![tendermint_proto::v0_38::crypto::ProofOp {
                r#type: chain::merkle::PROOF_OP_TYPE.into(),
                key: answer.key,
                data: prost_013::Message::encode_to_vec(&p),
            }],
        });
    r
}

fn query_err(code: u32, log: String) -> pb::ResponseQuery {
    pb::ResponseQuery {
        code,
        log,
        codespace: CODESPACE.into(),
        ..Default::default()
    }
}

fn to_pb_event(e: Event) -> pb::Event {
    pb::Event {
        r#type: e.kind.into(),
        attributes: e
            .attrs
            .into_iter()
            .map(|(k, v)| pb::EventAttribute {
                key: k.into(),
                value: v,
                index: true,
            })
            .collect(),
    }
}

type Call = Box<dyn FnOnce(&mut App) + Send>;

/// Handle to the app actor; implements tendermint-abci's `Application`.
#[derive(Clone)]
pub struct AppHandle {
    tx: mpsc::SyncSender<Call>,
}

impl AppHandle {
    /// Starts the actor thread owning `app`.
    pub fn spawn(mut app: App) -> std::io::Result<AppHandle> {
        let (tx, rx) = mpsc::sync_channel::<Call>(QUEUE_SIZE);
        std::thread::Builder::new()
            .name("abci-app".into())
            .spawn(move || {
                while let Ok(call) = rx.recv() {
                    // A panic here (a state that cannot be persisted, a genesis that does not
                    // match) means the app cannot go on. It must not leave a live process
                    // whose app is gone (every later ABCI call would fail while the node
                    // looks up): the whole process exits, for its supervisor to restart it.
                    let run = std::panic::AssertUnwindSafe(|| call(&mut app));
                    if let Err(panic) = std::panic::catch_unwind(run) {
                        let why = panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("unknown");
                        error!("the ABCI app stopped ({why}): exiting the process");
                        eprintln!("mpcd: the ABCI app stopped ({why}): exiting");
                        std::process::exit(70);
                    }
                }
            })?;
        Ok(AppHandle { tx })
    }

    /// Runs `f` on the actor and waits for its result. None if the actor is gone.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut App) -> R + Send + 'static,
    ) -> Option<R> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let call: Call = Box::new(move |app| {
            let _ = rtx.send(f(app));
        });
        self.tx.send(call).ok()?;
        rrx.recv().ok()
    }

    fn consensus<R: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut App) -> R + Send + 'static,
    ) -> R {
        match self.call(f) {
            Some(r) => r,
            None => {
                error!("app actor is gone during {what}");
                // Consensus-critical: without the state owner we must halt, not guess.
                panic!("app actor is gone during {what}")
            }
        }
    }
}

impl tendermint_abci::Application for AppHandle {
    fn info(&self, _req: pb::RequestInfo) -> pb::ResponseInfo {
        self.consensus("Info", |app| app.info())
    }
    fn init_chain(&self, req: pb::RequestInitChain) -> pb::ResponseInitChain {
        self.consensus("InitChain", move |app| app.init_chain(req))
    }
    fn query(&self, req: pb::RequestQuery) -> pb::ResponseQuery {
        self.call(move |app| app.query(req))
            .unwrap_or_else(|| query_err(1, "application is shutting down".into()))
    }
    fn check_tx(&self, req: pb::RequestCheckTx) -> pb::ResponseCheckTx {
        self.call(move |app| app.check_tx(req))
            .unwrap_or_else(|| check_err(&TxError::Invalid("application is shutting down".into())))
    }
    fn finalize_block(&self, req: pb::RequestFinalizeBlock) -> pb::ResponseFinalizeBlock {
        self.consensus("FinalizeBlock", move |app| app.finalize_block(req))
    }
    fn commit(&self) -> pb::ResponseCommit {
        self.consensus("Commit", |app| app.commit())
    }
}

/// Refuses a committed state written for another genesis than `genesis_bytes`.
fn check_genesis(
    home: &Path,
    committed: Option<&ChainState>,
    genesis_bytes: &[u8],
) -> anyhow::Result<()> {
    let Some(s) = committed else {
        return Ok(());
    };
    let gh = hex::encode(Sha256::digest(genesis_bytes));
    if s.genesis_hash != gh {
        anyhow::bail!(
            "the chain state in {} belongs to another genesis (hash {}, this genesis {gh})",
            home.display(),
            s.genesis_hash
        );
    }
    Ok(())
}
