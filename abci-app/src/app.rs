//! The ABCI 2.0 application, run as a single actor.
//!
//! tendermint-abci serves each ABCI connection on its own thread with a clone of the
//! `Application`. Our `Application` is [`AppHandle`], a cheap handle that forwards every request
//! to one thread owning [`App`] through a bounded queue, so chain state has exactly one owner and
//! requests are handled one at a time in arrival order (STYLE.md rule 10/13).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;

use prost::bytes::Bytes;
use seqmpc_module::job::Job;
use seqmpc_proto::tx::SignedTx;
use seqmpc_proto::{KeyId, RequestId};
use sha2::{Digest, Sha256};
use tendermint_proto::v0_38::abci as pb;
use tracing::{error, info, warn};

use crate::chain::block::expire_deadlines;
use crate::chain::genesis::Genesis;
use crate::chain::tx::{self, Effects, Event, TxError};
use crate::chain::{BlockWrites, ChainState, KeyStatus, ReshareStatus};
use crate::persist::{StateFiles, SNAPSHOT_EVERY};

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
    /// Mempool view of sequences: next expected per signer, ahead of committed.
    check_seq: BTreeMap<String, u64>,
    /// Request txs per account admitted by CheckTx since the last Commit (rate limit).
    check_requests: BTreeMap<String, u32>,
    /// Where committed jobs go (the MPC module).
    jobs: Option<tokio::sync::mpsc::Sender<Job>>,
}

impl App {
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
        if let Some(s) = &committed {
            let gh = hex::encode(Sha256::digest(&genesis_bytes));
            if s.genesis_hash != gh {
                anyhow::bail!(
                    "the chain state in {} belongs to another genesis (hash {}, this genesis {gh})",
                    home.display(),
                    s.genesis_hash
                );
            }
        }
        Ok(App {
            genesis,
            genesis_bytes,
            files,
            committed,
            pending: None,
            check_seq: BTreeMap::new(),
            check_requests: BTreeMap::new(),
            jobs,
        })
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
        let mut state = match ChainState::from_genesis(&self.genesis, &self.genesis_bytes) {
            Ok(s) => s,
            Err(e) => panic!("invalid genesis: {e}"),
        };
        let (_, hash) = state.seal();
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

    fn expected_seq(&self, state: &ChainState, signer: &str, got: u64) -> u64 {
        let committed = state.sequence(signer);
        match self.check_seq.get(signer) {
            // A signer going back to its committed sequence recovers from txs the mempool
            // dropped; a duplicate of a mempool tx then fails at delivery, harmlessly.
            Some(&ahead) if ahead > committed && got == committed => committed,
            Some(&ahead) if ahead > committed => ahead,
            _ => committed,
        }
    }

    /// ABCI CheckTx.
    pub fn check_tx(&mut self, req: pb::RequestCheckTx) -> pb::ResponseCheckTx {
        let Some(state) = &self.committed else {
            return check_err(&TxError::Invalid("chain not initialized".into()));
        };
        let tx = match SignedTx::decode(&req.tx) {
            Ok(tx) => tx,
            Err(e) => return check_err(&TxError::Malformed(e.to_string())),
        };
        let signer = hex::encode(tx.signer.as_bytes());
        let expected = self.expected_seq(state, &signer, tx.sequence);
        let checked = tx::check(state, &tx, expected).and_then(|()| {
            let mut counts = self.check_requests.clone();
            tx::rate_limit(state, &tx, &mut counts)?;
            self.check_requests = counts;
            Ok(())
        });
        match checked {
            Ok(()) => {
                self.check_seq.insert(signer, tx.sequence.saturating_add(1));
                pb::ResponseCheckTx {
                    code: 0,
                    ..Default::default()
                }
            }
            Err(e) => {
                let mut r = check_err(&e);
                if let TxError::Sequence { expected, .. } = e {
                    r.data = Bytes::from(expected.to_string());
                }
                r
            }
        }
    }

    /// ABCI FinalizeBlock: executes the block on a copy of the committed state.
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
            panic!("FinalizeBlock before InitChain");
        };
        let height = u64::try_from(req.height).unwrap_or(0);
        if height != state.height.saturating_add(1) {
            panic!(
                "FinalizeBlock at height {height}, expected {}",
                state.height.saturating_add(1)
            );
        }
        let mut fx = Effects {
            block_time_ms: req
                .time
                .as_ref()
                .map(|t| {
                    u64::try_from(t.seconds).unwrap_or(0).saturating_mul(1000)
                        + u64::try_from(t.nanos / 1_000_000).unwrap_or(0)
                })
                .unwrap_or(0),
            ..Effects::default()
        };
        expire_deadlines(state, height, &mut fx);
        let block_events: Vec<pb::Event> = fx.events.drain(..).map(to_pb_event).collect();
        let mut tx_results = Vec::with_capacity(req.txs.len());
        for raw in &req.txs {
            let result = match SignedTx::decode(raw) {
                Err(e) => Err(TxError::Malformed(e.to_string())),
                Ok(tx) => tx::deliver(state, &tx, height, &mut fx),
            };
            let events = fx.events.drain(..).map(to_pb_event).collect();
            tx_results.push(match result {
                Ok(()) => pb::ExecTxResult {
                    code: 0,
                    events,
                    ..Default::default()
                },
                Err(e) => pb::ExecTxResult {
                    code: e.code(),
                    log: e.to_string(),
                    codespace: "seqmpc".into(),
                    ..Default::default()
                },
            });
        }
        let (writes, hash) = state.seal_block(height);
        self.pending = Some((writes, fx.jobs));
        pb::ResponseFinalizeBlock {
            events: block_events,
            tx_results,
            app_hash: hash.to_vec().into(),
            ..Default::default()
        }
    }

    /// ABCI Commit: persists the finalized state, then hands its jobs to the module.
    pub fn commit(&mut self) -> pb::ResponseCommit {
        let Some((writes, jobs)) = self.pending.take() else {
            panic!("Commit without FinalizeBlock");
        };
        let Some(state) = self.committed.as_ref() else {
            panic!("Commit before InitChain");
        };
        let persisted = if writes.height % SNAPSHOT_EVERY == 0 {
            self.files.snapshot(state)
        } else {
            self.files.append(&writes)
        };
        if let Err(e) = persisted {
            panic!("cannot persist committed state: {e}");
        }
        self.check_seq
            .retain(|signer, next| *next > state.sequence(signer));
        self.check_requests.clear();
        if let Some(tx) = &self.jobs {
            for job in jobs {
                if tx.blocking_send(job).is_err() {
                    warn!("MPC module is gone; committed job dropped");
                }
            }
        }
        pb::ResponseCommit { retain_height: 0 }
    }

    /// Jobs a node must (re)do after a restart, from committed state: deletions it has not
    /// attested yet, keygens the chain ended in ERROR (so a stale local PENDING ends) and the
    /// outcome of each READY key's latest resharing (promote, leave, or drop the staged share).
    pub fn catch_up_jobs(&self, node: &seqmpc_proto::NodeId) -> Vec<Job> {
        let Some(state) = &self.committed else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        for key in state.keys().values() {
            // The latest resharing's outcome, for a node that died between the chain's decision
            // and acting on it: promote the staged share, delete the share of a committee it
            // left, or drop the staged share of a failed attempt. Both jobs are idempotent.
            match &key.reshare {
                Some(r)
                    if key.status == KeyStatus::Ready
                        && (r.parties.contains(node) || r.old_parties.contains(node)) =>
                {
                    match r.status {
                        ReshareStatus::Done => jobs.push(Job::ReshareDone {
                            key_id: key.key_id.clone(),
                            session: r.session,
                            old_parties: r.old_parties.clone(),
                            new_parties: r.parties.clone(),
                            generation: key.generation,
                        }),
                        ReshareStatus::Error => jobs.push(Job::ReshareFailed {
                            key_id: key.key_id.clone(),
                            session: r.session,
                            reason: r.error.clone().unwrap_or_default(),
                        }),
                        ReshareStatus::Pending => {}
                    }
                }
                _ => {}
            }
            if key.status == KeyStatus::Error && key.parties.contains(node) {
                jobs.push(Job::KeyGenFailed {
                    key_id: key.key_id.clone(),
                    session: key.session,
                    reason: key.error.clone().unwrap_or_default(),
                });
            }
        }
        jobs.extend(self.unattested_deletions(node));
        jobs
    }

    /// A Delete job for each key the committed state still waits for `node` to attest. A
    /// node's KeyDeleted can be lost after CheckTx accepted it (it then fails at delivery, e.g.
    /// when a restarted app answers CheckTx with the committed sequence while an earlier tx of
    /// the node is still in the mempool), and deletion has no deadline: mpcd re-runs these
    /// (the Delete job is idempotent) so a deletion never stays DELETING forever.
    pub fn unattested_deletions(&self, node: &seqmpc_proto::NodeId) -> Vec<Job> {
        let Some(state) = &self.committed else {
            return Vec::new();
        };
        state
            .keys()
            .values()
            .filter(|k| {
                k.status == KeyStatus::Deleting
                    && k.parties.contains(node)
                    && !k.deleted_by.contains(node)
            })
            .map(|k| Job::Delete {
                key_id: k.key_id.clone(),
                parties: k.parties.clone(),
                height: state.height,
            })
            .collect()
    }

    /// ABCI Query. Paths: `/key/<id>`, `/keys`, `/sign/<request_id>`, `/nodes`,
    /// `/account/<hex public key>`.
    pub fn query(&self, req: pb::RequestQuery) -> pb::ResponseQuery {
        let Some(state) = &self.committed else {
            return query_err(1, "chain not initialized".into());
        };
        let height = i64::try_from(state.height).unwrap_or(i64::MAX);
        let path = req.path.trim_end_matches('/');
        let value = match query_value(state, path) {
            Ok(v) => v,
            Err((code, log)) => {
                let mut r = query_err(code, log);
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

fn query_value(state: &ChainState, path: &str) -> Result<Vec<u8>, (u32, String)> {
    let json = |v: serde_json::Result<Vec<u8>>| v.map_err(|e| (1, e.to_string()));
    let not_found = |what: String| (TxError::NotFound(String::new()).code(), what);
    if let Some(id) = path.strip_prefix("/key/") {
        let id = KeyId::new(id).map_err(|e| (6, e.to_string()))?;
        let key = state
            .keys()
            .get(&id)
            .ok_or_else(|| not_found(format!("key {id} does not exist")))?;
        return json(serde_json::to_vec(key));
    }
    if let Some(id) = path.strip_prefix("/sign/") {
        let id = RequestId::new(id).map_err(|e| (6, e.to_string()))?;
        let req = state
            .sign_requests()
            .get(&id)
            .ok_or_else(|| not_found(format!("sign request {id} does not exist")))?;
        return json(serde_json::to_vec(req));
    }
    if let Some(pk) = path.strip_prefix("/account/") {
        let pk = pk.to_ascii_lowercase();
        let account = state.accounts.get(&pk);
        let node = state.node_keys.get(&pk);
        if account.is_none() && node.is_none() {
            return Err(not_found(format!("no account or node with key {pk}")));
        }
        return json(serde_json::to_vec(&serde_json::json!({
            "public_key": pk,
            "sequence": state.sequence(&pk),
            "account": account,
            "node": node,
        })));
    }
    match path {
        "/keys" => json(serde_json::to_vec(&state.keys().values().collect::<Vec<_>>())),
        // Each registry entry with its liveness: `last_seen` (height of its last committed tx)
        // and `live` (within `liveness_window_blocks`; signers are chosen among live nodes).
        "/nodes" => json(serde_json::to_vec(
            &state
                .nodes
                .values()
                .map(|n| {
                    let mut v = serde_json::to_value(n).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("last_seen".into(), serde_json::json!(state.last_seen(&n.id)));
                        o.insert(
                            "live".into(),
                            serde_json::json!(state.is_live(&n.id, state.height)),
                        );
                    }
                    v
                })
                .collect::<Vec<_>>(),
        )),
        _ => Err((
            1,
            format!(
                "unknown query path {path:?}; known: /key/<id>, /keys, /sign/<request_id>, /nodes, /account/<hex key>"
            ),
        )),
    }
}

fn check_err(e: &TxError) -> pb::ResponseCheckTx {
    pb::ResponseCheckTx {
        code: e.code(),
        log: e.to_string(),
        codespace: "seqmpc".into(),
        ..Default::default()
    }
}

fn query_err(code: u32, log: String) -> pb::ResponseQuery {
    pb::ResponseQuery {
        code,
        log,
        codespace: "seqmpc".into(),
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
                    call(&mut app);
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
