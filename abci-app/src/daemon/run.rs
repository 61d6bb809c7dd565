//! `mpcd start` as one [`Daemon`], built from the parts of this module and run in this
//! process: the ABCI app and its server, the key store, p2p, the result submitter, the status
//! endpoint, the operator socket, the heartbeat and re-attestation sources, and the MPC runtime.
//! [`Daemon::start`] opens and binds everything (an error names the part that failed);
//! [`Daemon::run`] drives the MPC runtime until a stop future resolves, the runtime ends, or
//! the chain rotates this node's key to `HOME/node.key.next` ([`Exit::KeyRotated`]: mpcd then
//! runs itself again under the new key). Tests run a daemon in-process (`tests/daemon.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use anyhow::{bail, Context};
use seqmpc_module::job::Job;
use seqmpc_module::node::cggmp::CggmpConfig;
use seqmpc_module::node::{Node, NodeConfig, SharedMetrics};
use seqmpc_module::p2p::{self, Incoming, P2pConfig, P2pHandle};
use seqmpc_module::store::StoreHandle;
use seqmpc_proto::NodeId;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use super::chain_tip::RpcChainTip;
use super::home::{self, NEXT_NODE_KEY, NODE_KEY};
use super::keys::load_key_file;
use super::master_source::MasterKeySource;
use super::rpc::RpcClient;
use super::status::{self, StatusContext};
use super::submit::{ConfirmLocally, RpcSubmitter};
use super::wiring::Wiring;
use crate::abci::tx_watch::TxWatch;
use crate::abci::{App, AppHandle};

/// How often the daemon looks for deletions the chain still waits for from this node (the
/// module attests one again at most once per `REATTEST_MS`).
const REATTEST_EVERY: Duration =
    Duration::from_millis(seqmpc_module::session::admission::REATTEST_MS);

/// `mpcd start`'s options beside the addresses: its command-line flags.
#[derive(Clone, Debug, clap::Args)]
pub struct StartOptions {
    /// CGGMP24 safe primes (and, when present, a committee's aux info) for this node, from
    /// a fixture JSON in the format of `module/tests/fixtures/cggmp24-test-fixtures.json`,
    /// picked by node id. TEST ONLY (the fixture's secrets are public). Without it the node
    /// keeps a pool of prime sets generated in the background (28-300 s a set), stored
    /// encrypted in its key store (see --cggmp-prime-pool).
    #[arg(long)]
    pub cggmp_primes: Option<PathBuf>,
    /// Without --cggmp-primes: fill the CGGMP24 prime pool in the background from the
    /// start (true), or only once a cggmp24 keygen needs a set and finds none (false; that
    /// keygen fails and a retry once a set is ready succeeds).
    #[arg(long, env = "SEQMPC_CGGMP_PRIMES_AT_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub cggmp_primes_at_start: bool,
    /// CGGMP24 presignatures kept ready per key and signer subset, generated in the
    /// background and held in memory only (a restart empties the pool). A sign request of
    /// a full message uses one when every signer holds it (an online step of
    /// milliseconds), else runs the full protocol (seconds). 0 disables the pool.
    #[arg(long, env = "SEQMPC_CGGMP_PRESIGN_POOL", default_value_t = 2)]
    pub cggmp_presign_pool: usize,
    /// Without --cggmp-primes: how many CGGMP24 safe-prime sets to keep ready, encrypted
    /// in the key store (one per aux-info run; generated one at a time in the background;
    /// 0: never generate).
    #[arg(long, default_value_t = 2)]
    pub cggmp_prime_pool: usize,
    /// Seconds between this node's Heartbeat txs (0: none). The chain chooses signers
    /// among nodes whose last tx is at most `liveness_window_blocks` old, so a node that
    /// stops (crash, partition) stops being chosen.
    #[arg(long, env = "SEQMPC_HEARTBEAT_SECS", default_value_t = 2)]
    pub heartbeat_secs: u64,
    /// Seconds after which this node gives up a FROST keygen or signing, or a resharing,
    /// locally and reports it failed (a FROST signing names the signers it heard nothing
    /// from; CGGMP24 sessions have their own, longer timeout). Keep
    /// it under the chain's session deadline for such reports to count; a job older than
    /// this when it arrives (blocks replayed after a restart) is skipped.
    #[arg(long, env = "SEQMPC_SESSION_TIMEOUT_SECS", default_value_t = 60)]
    pub session_timeout_secs: u64,
    /// Milliseconds a FROST signer waits for the others before it reports the silent
    /// ones; the chain then starts another attempt without them. Keep it well under the
    /// chain's `sign_attempt_blocks` (in time).
    #[arg(long, env = "SEQMPC_SIGN_TIMEOUT_MS", default_value_t = 2000)]
    pub sign_timeout_ms: u64,
    /// Milliseconds a FROST signer other than the aggregator holds a verified signature
    /// before it submits it itself, per rank among the signers (the second signer waits
    /// this long, the third twice as long), unless the chain has the signature by then.
    /// About two block intervals: shorter sends redundant result txs, longer delays a
    /// signature whose aggregator is dead or stalled.
    #[arg(long, env = "SEQMPC_BACKUP_SUBMIT_MS", default_value_t = 500)]
    pub backup_submit_ms: u64,
    /// Seconds a CGGMP24 signer waits for a first message from every other signer, and
    /// for any message once its signing has gone quiet, before it reports
    /// those it waits for (a node dead, partitioned, or stopped mid-signing), so the chain
    /// starts another attempt without them instead of waiting for the attempt's deadline. Keep it well
    /// under that deadline (`sign_attempt_blocks` x 20, in time) and above the time a
    /// loaded node takes for one round of a signing.
    #[arg(long, env = "SEQMPC_CGGMP_SILENCE_TIMEOUT_SECS", default_value_t = 20)]
    pub cggmp_silence_timeout_secs: u64,
    /// Let the consensus engine prune its blocks below the last N (ResponseCommit's
    /// `retain_height`, as the Cosmos SDK's `min-retain-blocks`): never fewer than the
    /// genesis `sign_retention_blocks`, so a finished sign request's outcome stays readable
    /// in its block's results once it has left the state. 0 (the default): keep every
    /// block. A node whose data is older than the pruned blocks cannot catch up by replay.
    #[arg(long, env = "SEQMPC_MIN_RETAIN_BLOCKS", default_value_t = 0)]
    pub min_retain_blocks: u64,
}

impl StartOptions {
    /// mpcd's defaults, with the `SEQMPC_*` variables of this process's environment read as
    /// mpcd reads them.
    pub fn defaults() -> StartOptions {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            options: StartOptions,
        }
        <Flags as clap::Parser>::parse_from(["mpcd"]).options
    }
}

/// Where a daemon lives and listens: `mpcd start`'s command line.
#[derive(Clone, Debug, clap::Args)]
pub struct DaemonConfig {
    /// Node home directory (from `mpcd init`).
    #[arg(long)]
    pub home: PathBuf,
    /// Genesis file.
    #[arg(long)]
    pub genesis: PathBuf,
    /// ABCI socket the consensus engine connects to: `host:port` (TCP; port 0: any free one),
    /// or `unix:///path/abci.sock` (a Unix socket of mode 0600, for CometBFT's `proxy_app =
    /// "unix:///path/abci.sock"`: no other local user can drive the app).
    #[arg(long, default_value = "127.0.0.1:26658")]
    pub abci_listen: String,
    /// libp2p listen multiaddr.
    #[arg(long)]
    pub p2p_listen: String,
    /// Local status endpoint address (unauthenticated: keep it on loopback, the default; port
    /// 0: any free one).
    #[arg(long, default_value = "127.0.0.1:26660")]
    pub status_listen: String,
    /// CometBFT RPC URL where result txs are broadcast.
    #[arg(long, default_value = "http://127.0.0.1:26657")]
    pub rpc: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub options: StartOptions,
}

/// Why [`Daemon::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stopped on request, or the MPC runtime ended.
    Stopped,
    /// The chain now registers `HOME/node.key.next` for this node: run again to adopt it.
    KeyRotated,
}

/// What [`Daemon::run`] starts the MPC runtime with.
struct Runtime {
    cfg: NodeConfig,
    store: StoreHandle,
    p2p: P2pHandle,
    incoming: tokio::sync::mpsc::Receiver<Incoming>,
    submitter: Arc<RpcSubmitter>,
    metrics: SharedMetrics,
    job_tx: tokio::sync::mpsc::Sender<Job>,
    job_rx: tokio::sync::mpsc::Receiver<Job>,
    catch_up: Vec<Job>,
    my_key: [u8; 32],
    master_source: MasterKeySource,
}

/// A started node daemon (see the module doc).
pub struct Daemon {
    home: PathBuf,
    rpc: String,
    wiring: Wiring,
    rt: tokio::runtime::Runtime,
    abci_addr: Option<SocketAddr>,
    status_addr: Option<SocketAddr>,
    parts: Runtime,
}

impl Daemon {
    /// Opens the home, the chain state and the key store, starts p2p, the submitter, the
    /// status endpoint and the ABCI server, and the heartbeat and re-attestation threads.
    pub fn start(config: &DaemonConfig) -> anyhow::Result<Daemon> {
        let DaemonConfig {
            home,
            genesis: genesis_path,
            abci_listen,
            p2p_listen,
            status_listen,
            rpc,
            options: opts,
        } = config;
        // A test build's faults in front of the parts (none in production).
        let wiring = Wiring::from_env()?;
        home::check_home_private(home)?;
        let (genesis_bytes, genesis) = home::load_genesis(genesis_path)?;
        // Committed jobs go to the module, whose admission policy decides which run (a
        // replayed block's session that the chain has already ended does not start again).
        let (job_tx, job_rx) = tokio::sync::mpsc::channel(10_000);
        let mut app = App::open(home, genesis_bytes, Some(job_tx.clone()))?;
        app.set_min_retain_blocks(opts.min_retain_blocks);
        home::adopt_next_node_key(home, app.state())?;
        let key = load_key_file(&home.join(NODE_KEY))?;
        let my_key = key.verifying_key().to_bytes();
        let my_pk = hex::encode(my_key);
        let me = home::my_node_id(home, &genesis, app.state(), &my_pk)?;
        let peers = home::registry_peers(&genesis, app.state())?;
        let mut insecure: Vec<String> = Vec::new();
        if Wiring::TEST_BUILD {
            insecure.push(
                "test build: fault injection compiled in (cargo feature fault-injection)".into(),
            );
        }
        let cggmp = cggmp_config(opts.cggmp_primes.as_deref(), &me, &mut insecure)?;
        let old_key = home.join(format!("{}.old", home::MASTER_KEY));
        if old_key.exists() {
            warn!(path = %old_key.display(), "an old master key file is left from an interrupted \
                `mpcd rotate-master-key`; run it again (node stopped) to finish the cleanup");
        }
        let store = home::open_store(home, &genesis.chain_id, &me)?;
        let store = StoreHandle::spawn(store).context("starting the key store")?;

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("mpcd-rt")
            .build()?;
        let p2p_cfg = P2pConfig {
            node: me.clone(),
            secret_key: Zeroizing::new(key.to_bytes()),
            listen: p2p_listen.to_owned(),
            peers,
            // CGGMP24 aux-info messages carry Paillier moduli and their proofs (hundreds of KB).
            max_message_bytes: 8 << 20,
        };
        let (p2p, incoming) = rt.block_on(p2p::spawn(p2p_cfg)).context("starting p2p")?;
        rt.block_on(wiring.p2p(&p2p))?;

        let first_seq = app.state().map(|s| s.sequence(&my_pk)).unwrap_or(0);
        let catch_up = app.catch_up_jobs(&me);
        // The submitter learns from this app, not from the RPC, which of its txs a block held.
        let tx_watch = TxWatch::default();
        app.set_tx_watch(tx_watch.clone());
        let app = AppHandle::spawn(app)?;

        let chain_rpc = ConfirmLocally::new(wiring.chain_rpc(RpcClient::new(rpc)), tx_watch);
        let submitter = Arc::new(RpcSubmitter::spawn(
            key,
            genesis.chain_id.clone(),
            chain_rpc,
            first_seq,
        )?);
        spawn_reattest(&app, &job_tx, &me)?;
        if opts.heartbeat_secs > 0 {
            spawn_heartbeat(&submitter, Duration::from_secs(opts.heartbeat_secs))?;
        }
        let metrics = Arc::new(Mutex::new(Default::default()));
        let status_addr = status::serve(
            status_listen,
            StatusContext {
                node: me.clone(),
                store: store.clone(),
                p2p: p2p.clone(),
                metrics: metrics.clone(),
                app: app.clone(),
                rt: rt.handle().clone(),
                insecure,
            },
        )?;

        // A partitioned test node's ABCI server sits behind a relay that can cut it off.
        let abci_addr = match abci_listen
            .strip_prefix("unix://")
            .or_else(|| abci_listen.strip_prefix("unix:"))
        {
            Some(path) => {
                super::abci_unix::serve(Path::new(path), app)
                    .with_context(|| format!("cannot serve ABCI on {abci_listen}"))?;
                None
            }
            None => Some(serve_abci_tcp(
                wiring.abci_bind(abci_listen),
                abci_listen,
                app,
                &wiring,
            )?),
        };
        info!(node = %me, abci = abci_listen, p2p = p2p_listen, status = status_listen, cggmp_bigint_backend = seqmpc_module::protocol::cggmp::BIGINT_BACKEND, "mpcd started");

        let mut cfg = NodeConfig::new(me);
        cfg.cggmp = cggmp;
        cfg.cggmp_primes_at_start = opts.cggmp_primes_at_start;
        cfg.presign_pool = opts.cggmp_presign_pool;
        cfg.cggmp_prime_pool = opts.cggmp_prime_pool;
        cfg.session_timeout = Duration::from_secs(opts.session_timeout_secs.max(1));
        cfg.sign_timeout = Duration::from_millis(opts.sign_timeout_ms.max(1));
        cfg.backup_submit = Duration::from_millis(opts.backup_submit_ms);
        cfg.cggmp_silence_timeout = Duration::from_secs(opts.cggmp_silence_timeout_secs.max(1));
        Ok(Daemon {
            home: home.clone(),
            rpc: rpc.clone(),
            wiring,
            rt,
            abci_addr,
            status_addr,
            parts: Runtime {
                cfg,
                store,
                p2p,
                incoming,
                submitter,
                metrics,
                job_tx,
                job_rx,
                catch_up,
                my_key,
                master_source: MasterKeySource::of_home(home)?,
            },
        })
    }

    /// The ABCI server's address (None on a Unix socket).
    pub fn abci_addr(&self) -> Option<SocketAddr> {
        self.abci_addr
    }

    /// The status endpoint's address.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// Runs the MPC runtime (after its recovery and the catch-up jobs) and the operator
    /// socket until `stop` resolves, the runtime ends, or the chain rotates this node's key.
    /// The ABCI, status and p2p servers stop with the process.
    pub fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<Exit> {
        let Daemon {
            home,
            rpc,
            wiring,
            rt,
            parts,
            ..
        } = self;
        let exit = rt.block_on(drive(&home, &rpc, &wiring, parts, stop));
        rt.shutdown_timeout(Duration::from_secs(2));
        exit
    }
}

async fn drive(
    home: &Path,
    rpc: &str,
    wiring: &Wiring,
    parts: Runtime,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Exit> {
    let Runtime {
        mut cfg,
        store,
        p2p,
        incoming,
        submitter,
        metrics,
        job_tx,
        job_rx,
        catch_up,
        my_key,
        master_source,
    } = parts;
    // The operator socket: online master-key rotation and backup by the store's thread.
    let (admin_home, admin_store) = (home.to_owned(), store.clone());
    tokio::spawn(async move {
        if let Err(e) = super::admin::serve(&admin_home, master_source, admin_store).await {
            error!(error = %e, "operator socket stopped: rotate-master-key and backup work only with the node stopped");
        }
    });
    let submitter = wiring.result_sink(submitter);
    let job_rx = wiring.jobs(cfg.me.clone(), submitter.clone(), job_rx);
    let (rotated_tx, mut rotated) = tokio::sync::mpsc::unbounded_channel();
    cfg.own_key_rotated = Some(rotated_tx);
    let node = Node::new(cfg, store.clone(), p2p, submitter, metrics)
        .with_chain_tip(Arc::new(RpcChainTip(RpcClient::new(rpc))));
    let mut node = wiring.node(node, &store);
    node.recover().await;
    for job in catch_up {
        let _ = job_tx.send(job).await;
    }
    drop(job_tx);
    let mut run = tokio::spawn(node.run(job_rx, incoming));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(Exit::Stopped),
            r = &mut run => {
                if let Err(e) = r { error!(error = %e, "session manager stopped"); }
                return Ok(Exit::Stopped);
            }
            Some(pk) = rotated.recv() => match home::next_key_is(home, &pk) {
                _ if pk == my_key => {} // a replayed block: this key already
                Ok(true) => {
                    warn!("the chain rotated this node's key to HOME/{NEXT_NODE_KEY}: restarting with it");
                    return Ok(Exit::KeyRotated);
                }
                Ok(false) => error!(key = %hex::encode(pk), "the chain rotated this node's key \
                    to a key this node does not hold in HOME/{NEXT_NODE_KEY}: peers and the chain \
                    refuse it until it runs with that key"),
                Err(e) => error!(error = %format!("{e:#}"), "the chain rotated this node's key; \
                    HOME/{NEXT_NODE_KEY} cannot be read"),
            },
        }
    }
}

/// The CGGMP24 configuration: the node's own prime pool, or (a test build only) fixture
/// primes, which `insecure` then lists.
fn cggmp_config(
    primes: Option<&Path>,
    me: &NodeId,
    insecure: &mut Vec<String>,
) -> anyhow::Result<CggmpConfig> {
    match primes {
        // The production build cannot load fixture secrets (issues 14 and 15).
        Some(_) if !Wiring::TEST_BUILD => bail!(
            "--cggmp-primes loads TEST fixture Paillier secrets (public): this production \
             build refuses it; a test build (`make build`, cargo feature \
             seqmpc-abci/fault-injection) accepts it"
        ),
        Some(path) => {
            insecure.push(format!(
                "CGGMP24 primes from the TEST fixture file {} (its Paillier secrets are \
                 public: anyone can decrypt this node's signing messages)",
                path.display()
            ));
            let c = CggmpConfig::from_fixture_file(path, me)
                .with_context(|| format!("--cggmp-primes {}", path.display()))?;
            warn!(file = %path.display(), aux_committee = ?c.aux.as_ref().map(|a| &a.parties),
                "CGGMP24 primes loaded from a TEST fixture file: never use this in production");
            Ok(c)
        }
        None => Ok(CggmpConfig::default()),
    }
}

/// Deletions the chain still waits for from this node (see `App::unattested_deletions`) go to
/// the module again at every look; its admission policy lets one through only when this node
/// has not attested it within the last `REATTEST_MS`, so a deletion whose attestation is
/// still on its way is not attested twice. Ends when the app or the module is gone.
fn spawn_reattest(
    app: &AppHandle,
    jobs: &tokio::sync::mpsc::Sender<Job>,
    me: &NodeId,
) -> anyhow::Result<()> {
    let (app, jobs, me) = (app.clone(), jobs.clone(), me.clone());
    std::thread::Builder::new()
        .name("reattest".into())
        .spawn(move || loop {
            std::thread::sleep(REATTEST_EVERY);
            let me = me.clone();
            let Some(due) = app.call(move |a| a.unattested_deletions(&me)) else {
                return;
            };
            for job in due {
                if jobs.blocking_send(job).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// A Heartbeat tx every `every` (the chain chooses signers among live nodes).
fn spawn_heartbeat(submitter: &Arc<RpcSubmitter>, every: Duration) -> anyhow::Result<()> {
    let beat = submitter.clone();
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            seqmpc_module::job::SubmitResult::submit(&*beat, seqmpc_proto::tx::TxMsg::Heartbeat);
        })?;
    Ok(())
}

/// Serves ABCI over TCP on `bind` (tendermint-abci's server); with the test-only partition
/// fault, behind a relay on `listen` ([`Wiring::abci_relay`]). Returns the bound address.
fn serve_abci_tcp(
    bind: &str,
    listen: &str,
    app: AppHandle,
    wiring: &Wiring,
) -> anyhow::Result<SocketAddr> {
    let server = tendermint_abci::ServerBuilder::default()
        .bind(bind, app)
        .map_err(|e| anyhow::anyhow!("cannot serve ABCI on {bind}: {e}"))?;
    let local = server.local_addr();
    wiring.abci_relay(listen, &local)?;
    let addr = local
        .parse()
        .with_context(|| format!("the ABCI server's address {local}"))?;
    std::thread::Builder::new()
        .name("abci-server".into())
        .spawn(move || {
            if let Err(e) = server.listen() {
                error!(error = %e, "ABCI server stopped");
            }
        })?;
    Ok(addr)
}
