//! The dev sequencer: plays CometBFT's role for N ABCI apps with a single proposer.
//!
//! It drives every app over the ABCI socket protocol with tendermint-abci's client (an ABCI
//! implementation independent of the apps'), opening a consensus, a mempool and query
//! connections per app as CometBFT does; orders txs into a block every `block_ms` (or, without
//! empty blocks, as soon as a tx waits); persists every block in an append-only store and
//! replays it to apps that are behind; and serves the CometBFT JSON-RPC routes that clients
//! use (see [`rpc`]).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use seqmpc_localnet::sequencer::{Sequencer, SequencerConfig};
//! let cfg = SequencerConfig::new(
//!     vec!["node0=127.0.0.1:26700".into()],
//!     "seqmpc-localnet",
//!     std::fs::read("genesis.json")?,
//!     "data/sequencer".into(),
//! );
//! let seq = Sequencer::spawn(cfg)?;
//! seq.wait_for_height(1, std::time::Duration::from_secs(30))?;
//! println!("RPC at {}", seq.rpc_url());
//! seq.stop()?;
//! # Ok(()) }
//! ```

pub mod app_conn;
pub mod consensus;
pub mod header;
pub mod mempool;
pub mod metrics;
pub mod rpc;
pub mod search;
pub mod state;
pub mod store;
pub mod time;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use prost::bytes::Bytes;
use sha2::{Digest, Sha256};
use tendermint_proto::google::protobuf::Duration as PbDuration;
use tendermint_proto::v0_38::abci::{RequestInitChain, ValidatorUpdate};
use tendermint_proto::v0_38::crypto::{public_key, PublicKey};
use tendermint_proto::v0_38::types::{
    AbciParams, BlockParams, ConsensusParams, EvidenceParams, ValidatorParams, VersionParams,
};

use self::app_conn::AppHandle;
use self::consensus::{EmptyBlocks, Engine, EngineConfig};
use self::mempool::Mempool;
pub use self::state::{AppState, AppStatus, SequencerStatus};
use self::state::{ChainView, Phase, Shared, TxIndex};
use self::store::{BlockStore, GenesisRecord, StoreOptions};

/// Configuration of the dev sequencer.
#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// ABCI addresses (`host:port`), optionally named: `node0=127.0.0.1:26700`. The first app
    /// that is up answers CheckTx and queries, and its results are the ones recorded.
    pub apps: Vec<String>,
    /// RPC listen address (`127.0.0.1:26657`; port 0 picks a free one).
    pub rpc_listen: String,
    /// Block interval in milliseconds: blocks come at most this often.
    pub block_ms: u64,
    /// Make a block every `block_ms` even without txs (CometBFT's `create_empty_blocks`, the
    /// default). When false, a block comes as soon as the mempool holds a tx (and `block_ms`
    /// has passed since the last), after a block that changed the app hash (so a header
    /// carries the new hash, as CometBFT's proof block), and otherwise at least every
    /// `empty_block_interval_ms` (0: never).
    pub create_empty_blocks: bool,
    /// See `create_empty_blocks` (CometBFT's `create_empty_blocks_interval`).
    pub empty_block_interval_ms: u64,
    /// Chain id sent in InitChain and shown by `status`.
    pub chain_id: String,
    /// `InitChain.app_state_bytes`.
    pub app_state: Vec<u8>,
    /// Where the block store lives.
    pub data_dir: PathBuf,
    /// Blocks per block-log segment: pruning (below the lowest `retain_height` of the apps'
    /// Commits, when every app names one) deletes whole segments.
    pub block_log_segment_blocks: u64,
    /// Most txs in one block.
    pub max_block_txs: usize,
    /// Most pending txs in the mempool.
    pub mempool_max_txs: usize,
    /// Most pending bytes in the mempool.
    pub mempool_max_bytes: usize,
    /// Largest tx accepted.
    pub max_tx_bytes: usize,
    /// How long start-up waits for every app before going on with those that are up.
    pub startup_timeout: Duration,
    /// Longest wait for an answer on a consensus connection before the app is marked down.
    pub abci_timeout: Duration,
    /// The secret a `dev_add_app` call must carry; None (the default): the method is off.
    pub dev_add_app_token: Option<String>,
    /// Most apps attached at once (configured and added).
    pub max_apps: usize,
}

impl SequencerConfig {
    /// A configuration with the defaults: RPC on 127.0.0.1:26657, 1 s blocks, 5000 txs per
    /// block, a mempool of 10000 txs / 256 MiB, 1 MiB txs, 30 s start-up and ABCI timeouts.
    pub fn new(
        apps: Vec<String>,
        chain_id: impl Into<String>,
        app_state: Vec<u8>,
        data_dir: PathBuf,
    ) -> Self {
        SequencerConfig {
            apps,
            rpc_listen: "127.0.0.1:26657".to_owned(),
            block_ms: 1000,
            create_empty_blocks: true,
            empty_block_interval_ms: 0,
            chain_id: chain_id.into(),
            app_state,
            data_dir,
            block_log_segment_blocks: store::DEFAULT_SEGMENT_BLOCKS,
            max_block_txs: 5000,
            mempool_max_txs: 10_000,
            mempool_max_bytes: 256 * 1024 * 1024,
            max_tx_bytes: 1024 * 1024,
            startup_timeout: Duration::from_secs(30),
            abci_timeout: Duration::from_secs(30),
            dev_add_app_token: None,
            max_apps: 64,
        }
    }
}

/// A running sequencer: the block loop thread and the RPC server.
pub struct Sequencer {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    engine: Option<JoinHandle<anyhow::Result<()>>>,
    rpc: Option<rpc::RpcServer>,
}

impl Sequencer {
    /// The secret `dev_add_app` needs (None: the method is off).
    pub fn dev_add_app_token(&self) -> Option<String> {
        self.shared.dev_add_app_token.clone()
    }

    /// Opens the block store, binds the RPC and starts the block loop. Returns once the RPC
    /// listens; the loop connects to the apps in the background (see [`Sequencer::status`]).
    pub fn spawn(cfg: SequencerConfig) -> anyhow::Result<Sequencer> {
        if cfg.apps.is_empty() {
            bail!("the sequencer needs at least one ABCI app");
        }
        if cfg.block_ms == 0 {
            bail!("block interval must be positive");
        }
        let apps = parse_apps(&cfg.apps)?;
        let genesis_rec = GenesisRecord::new(&cfg.chain_id, &cfg.app_state, &time::GENESIS_TIME);
        let store = BlockStore::open_with(
            &cfg.data_dir,
            &genesis_rec,
            StoreOptions {
                segment_blocks: cfg.block_log_segment_blocks,
            },
        )?;
        let validator_pub_key = dev_validator_key(&cfg.chain_id);
        let genesis = Arc::new(init_chain_request(&cfg, &validator_pub_key));
        let shared = Arc::new(Shared {
            chain_id: cfg.chain_id.clone(),
            apps: RwLock::new(apps.into_iter().map(Arc::new).collect()),
            mempool: Mutex::new(Mempool::new(cfg.mempool_max_txs, cfg.mempool_max_bytes)),
            tx_arrived: Condvar::new(),
            check_gate: Mutex::new(()),
            view: RwLock::new(ChainView {
                phase: Phase::Starting,
                height: 0,
                latest: None,
                earliest: None,
                recent: Default::default(),
                tx_index: TxIndex::default(),
                search: Default::default(),
                apps: Vec::new(),
                divergence: None,
            }),
            changed: (Mutex::new(0), Condvar::new()),
            store: store.reader(),
            dev_add_app_token: cfg.dev_add_app_token.clone(),
            max_apps: cfg.max_apps,
            metrics: Default::default(),
            validator_pub_key,
            genesis: genesis.clone(),
            app_version: AtomicU64::new(0),
            max_tx_bytes: cfg.max_tx_bytes,
        });
        let engine = Engine::new(
            shared.clone(),
            store,
            genesis,
            EngineConfig {
                block_interval: Duration::from_millis(cfg.block_ms),
                empty_blocks: match (cfg.create_empty_blocks, cfg.empty_block_interval_ms) {
                    (true, _) => EmptyBlocks::Always,
                    (false, 0) => EmptyBlocks::Never,
                    (false, ms) => EmptyBlocks::Every(Duration::from_millis(ms)),
                },
                max_block_txs: cfg.max_block_txs.max(1),
                abci_timeout: cfg.abci_timeout,
                startup_timeout: cfg.startup_timeout,
            },
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let rpc = rpc::RpcServer::start(&cfg.rpc_listen, shared.clone(), stop.clone())?;
        let engine_stop = stop.clone();
        let engine = thread::Builder::new()
            .name("sequencer".to_owned())
            .spawn(move || {
                let res = engine.run(&engine_stop);
                if let Err(e) = &res {
                    tracing::error!("dev sequencer stopped: {e:#}");
                }
                res
            })
            .context("spawning the sequencer thread")?;
        tracing::info!(rpc = %rpc.addr(), chain_id = %cfg.chain_id, "dev sequencer RPC listening");
        Ok(Sequencer {
            shared,
            stop,
            engine: Some(engine),
            rpc: Some(rpc),
        })
    }

    /// Address the RPC listens on.
    pub fn rpc_addr(&self) -> SocketAddr {
        match &self.rpc {
            Some(r) => r.addr(),
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// `http://<rpc addr>`.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_addr())
    }

    /// Last committed height.
    pub fn height(&self) -> u64 {
        self.shared.view().height
    }

    /// A status snapshot (phase, height, per-app state, divergence).
    pub fn status(&self) -> SequencerStatus {
        self.shared.status()
    }

    /// Whether the block loop has ended (stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.engine.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits until `cond` holds on the status, or the timeout (error), or the loop fails.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&SequencerStatus) -> bool,
    ) -> anyhow::Result<SequencerStatus> {
        let mut failed = None;
        let ok = self.shared.wait_until(timeout, |v| {
            if let Phase::Failed(e) = &v.phase {
                failed = Some(e.clone());
                return true;
            }
            v.phase == Phase::Stopped || cond(&self.status_of(v))
        });
        if let Some(e) = failed {
            bail!("the dev sequencer failed: {e}");
        }
        let st = self.status();
        if !ok {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        if st.phase == "stopped" {
            bail!("the dev sequencer stopped while waiting for {what}");
        }
        Ok(st)
    }

    fn status_of(&self, v: &ChainView) -> SequencerStatus {
        SequencerStatus {
            chain_id: self.shared.chain_id.clone(),
            phase: String::new(),
            error: None,
            height: v.height,
            block_hash: String::new(),
            app_hash: String::new(),
            block_time: None,
            apps: v.apps.clone(),
            app_hash_divergence: v.divergence.clone(),
            mempool_txs: 0,
        }
    }

    /// Waits until the chain reaches `height`.
    pub fn wait_for_height(&self, height: u64, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for(timeout, &format!("height {height}"), |s| s.height >= height)
            .map(|_| ())
    }

    /// Stops the RPC and the block loop; returns the loop's outcome.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        if let Some(rpc) = self.rpc.take() {
            rpc.join();
        }
        match self.engine.take() {
            Some(h) => match h.join() {
                Ok(res) => res,
                Err(_) => bail!("the sequencer thread panicked"),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Runs a sequencer until `stop` is set (or it fails).
pub fn run(cfg: SequencerConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let seq = Sequencer::spawn(cfg)?;
    while !stop.load(Ordering::Acquire) && !seq.is_finished() {
        thread::sleep(Duration::from_millis(100));
    }
    seq.stop()
}

fn parse_apps(apps: &[String]) -> anyhow::Result<Vec<AppHandle>> {
    let mut out: Vec<AppHandle> = Vec::new();
    for a in apps {
        let (name, addr) = match a.split_once('=') {
            Some((n, addr)) => (n.trim().to_owned(), addr.trim().to_owned()),
            None => (a.trim().to_owned(), a.trim().to_owned()),
        };
        let addr = addr.strip_prefix("tcp://").unwrap_or(&addr).to_owned();
        if addr.is_empty() || name.is_empty() {
            bail!("bad app address {a:?} (expected host:port or name=host:port)");
        }
        if out.iter().any(|h| h.name == name || h.addr == addr) {
            bail!("app {a:?} is listed twice");
        }
        out.push(AppHandle::new(name, addr));
    }
    Ok(out)
}

/// The dev validator's key: deterministic per chain id (it signs nothing).
fn dev_validator_key(chain_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"seqmpc/dev-sequencer/validator\0");
    h.update(chain_id.as_bytes());
    let seed: [u8; 32] = h.finalize().into();
    SigningKey::from_bytes(&seed).verifying_key().to_bytes()
}

/// The InitChain request every app gets at height 0: CometBFT's default consensus params, the
/// dev validator with power 10, the fixed genesis time, initial height 1.
fn init_chain_request(cfg: &SequencerConfig, validator: &[u8; 32]) -> RequestInitChain {
    RequestInitChain {
        time: Some(time::GENESIS_TIME),
        chain_id: cfg.chain_id.clone(),
        consensus_params: Some(ConsensusParams {
            block: Some(BlockParams {
                max_bytes: 22_020_096,
                max_gas: -1,
            }),
            evidence: Some(EvidenceParams {
                max_age_num_blocks: 100_000,
                max_age_duration: Some(PbDuration {
                    seconds: 172_800,
                    nanos: 0,
                }),
                max_bytes: 1_048_576,
            }),
            validator: Some(ValidatorParams {
                pub_key_types: vec!["ed25519".to_owned()],
            }),
            version: Some(VersionParams { app: 0 }),
            abci: Some(AbciParams {
                vote_extensions_enable_height: 0,
            }),
        }),
        validators: vec![ValidatorUpdate {
            pub_key: Some(PublicKey {
                sum: Some(public_key::Sum::Ed25519(validator.to_vec())),
            }),
            power: 10,
        }],
        app_state_bytes: Bytes::from(cfg.app_state.clone()),
        initial_height: 1,
    }
}
