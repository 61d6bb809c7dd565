//! `localnet`: start N `mpcd` nodes and the dev sequencer on one machine, stop them, or run
//! only the dev sequencer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use seqmpc_localnet::network::{self, EmptyBlockOptions, StartOptions};
use seqmpc_localnet::sequencer::{self, SequencerConfig};

#[derive(Parser)]
#[command(
    name = "localnet",
    about = "A local seqmpc network: N mpcd nodes driven by a dev sequencer",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a localnet in the foreground (creates it on first use; restarts it otherwise).
    Start {
        /// Localnet directory.
        #[arg(long, default_value = "./localnet-data")]
        dir: PathBuf,
        /// Number of nodes (default 3 for a new network; an existing one keeps its own).
        #[arg(long)]
        nodes: Option<usize>,
        /// Default threshold for clients, written to localnet.json (default min(2, nodes)).
        #[arg(long)]
        threshold: Option<u32>,
        /// Block interval in milliseconds.
        #[arg(long, default_value_t = 500)]
        block_ms: u64,
        #[command(flatten)]
        empty_blocks: EmptyBlockOptions,
        /// Base port: RPC = P+57, node i: ABCI P+100+10i, p2p P+101+10i, status P+102+10i
        /// (default 26600; an existing network keeps its own).
        #[arg(long)]
        base_port: Option<u16>,
        /// mpcd executable (default: the one next to this executable).
        #[arg(long)]
        mpcd: Option<PathBuf>,
        /// Wipe the directory and create a new network.
        #[arg(long)]
        reset: bool,
        /// Most txs in one block.
        #[arg(long, default_value_t = 5000)]
        max_block_txs: usize,
        /// Seconds to wait for every node to commit the first block.
        #[arg(long, default_value_t = 60)]
        start_timeout: u64,
        /// CGGMP24 test fixtures (`module/tests/fixtures/cggmp24-test-fixtures.json`): passed
        /// to every mpcd as `--cggmp-primes`, so keygens use the fixture primes and aux info
        /// instead of generating them. TEST ONLY: the file's secrets are public.
        #[arg(long, env = "SEQMPC_CGGMP_FIXTURES")]
        cggmp_fixtures: Option<PathBuf>,
        /// INSECURE developer mode: ECDSA (cggmp24-secp256k1) keys in seconds instead of
        /// minutes, from the test fixtures' safe primes and aux info, whose Paillier secrets
        /// are public (anyone can then decrypt the signing messages and recover the keys).
        /// The same as `--cggmp-fixtures module/tests/fixtures/cggmp24-test-fixtures.json`
        /// (run from the repository). A new network gets the chain id
        /// `seqmpc-localnet-insecure-dev-primes`, and every node's `/status` lists it under
        /// `insecure`. Needs a test build (`make build`): a production mpcd refuses it.
        #[arg(long)]
        dev_primes: bool,
        /// CGGMP24 presignatures each node keeps per key and signer subset: passed to every
        /// mpcd as `--cggmp-presign-pool` (default: mpcd's).
        #[arg(long)]
        cggmp_presign_pool: Option<usize>,
        /// Genesis `session_deadline_blocks` of a new network: blocks after which a PENDING
        /// session ends ERROR (default: the genesis default, 100).
        #[arg(long)]
        session_deadline_blocks: Option<u64>,
        /// Genesis `liveness_window_blocks` of a new network: a node whose last tx is older
        /// than this many blocks is not live, and signers are chosen among live nodes first
        /// (default: the genesis default, 100; nodes send a heartbeat every 2 s).
        #[arg(long)]
        liveness_window_blocks: Option<u64>,
        /// Genesis `cggmp_keygen_deadline_blocks` of a new network: blocks a CGGMP24 keygen
        /// may take, waiting for its committee's safe primes included (default: the genesis
        /// default, 9000: 15 minutes at 100 ms blocks, enough for a cold start on 2 cores).
        #[arg(long)]
        cggmp_keygen_deadline_blocks: Option<u64>,
        /// Genesis `sign_retention_blocks` of a new network: blocks a finished sign request
        /// stays in the state before it is pruned (default: the genesis default, 6000: 10
        /// minutes at 100 ms blocks).
        #[arg(long)]
        sign_retention_blocks: Option<u64>,
        /// Blocks the sequencer keeps below the tip: passed to every mpcd as
        /// `--min-retain-blocks` (never fewer than the genesis `sign_retention_blocks`), and
        /// the sequencer prunes its block log below the lowest retain height they answer
        /// Commit with, as CometBFT does. 0 (the default): keep every block. A pruned localnet
        /// cannot replay the chain to a node whose data is older than its first block, nor
        /// admit one with `add-node`.
        #[arg(long, default_value_t = 0)]
        retain_blocks: u64,
        /// Blocks per segment file of the sequencer's block log: pruning deletes whole
        /// segments, so the log takes at most one segment more than what the apps retain.
        #[arg(long, default_value_t = seqmpc_localnet::sequencer::store::DEFAULT_SEGMENT_BLOCKS)]
        block_log_segment_blocks: u64,
    },
    /// Stop the localnet running in a directory.
    Stop {
        /// Localnet directory.
        #[arg(long, default_value = "./localnet-data")]
        dir: PathBuf,
        /// Seconds to wait for it to exit.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Admit one more MPC node into the localnet running in DIR: `mpcd init` for the next id
    /// (`node<N>`), a NodeJoin tx signed by the client account (registry role), its mpcd with
    /// the localnet's settings, attached to the sequencer (which replays the chain to it) and
    /// appended to localnet.json (`localnet stop` stops it). Prints the node's JSON.
    AddNode {
        /// Localnet directory (of a running `localnet start`).
        #[arg(long, default_value = "./localnet-data")]
        dir: PathBuf,
        /// mpcd executable (default: the one next to this executable).
        #[arg(long)]
        mpcd: Option<PathBuf>,
        /// Seconds to wait for the join to commit and the node to be up.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Write what N validators need to run this app under real CometBFT v0.38 on this
    /// machine: each validator's CometBFT home (config.toml with `proxy_app` at its mpcd's ABCI
    /// Unix socket, genesis.json with the validator set and the app's genesis as app_state,
    /// node and validator keys), each mpcd's home, the client keys, and start.sh (needs
    /// `cometbft` on PATH). See docs/deployment.md. Prints the kit's JSON.
    CometbftInit {
        /// Directory to create (must be absent or empty).
        #[arg(long)]
        dir: PathBuf,
        /// Validators, each a CometBFT node with its mpcd.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Base port: validator i uses B+10i (CometBFT p2p), +1 (CometBFT RPC), +2 (mpcd p2p),
        /// +3 (mpcd status), +4 (CometBFT Prometheus).
        #[arg(long, default_value_t = seqmpc_localnet::cometbft_kit::DEFAULT_BASE_PORT)]
        base_port: u16,
        /// Chain id.
        #[arg(long, default_value = seqmpc_localnet::cometbft_kit::KIT_CHAIN_ID)]
        chain_id: String,
        /// mpcd executable (default: the one next to this executable).
        #[arg(long)]
        mpcd: Option<PathBuf>,
    },
    /// Run only the dev sequencer, for mpcd processes started by hand.
    Sequencer {
        /// ABCI addresses, comma-separated: host:port or name=host:port.
        #[arg(long, value_delimiter = ',', required = true)]
        apps: Vec<String>,
        /// RPC listen address.
        #[arg(long, default_value = "127.0.0.1:26657")]
        rpc_listen: String,
        /// Block interval in milliseconds.
        #[arg(long, default_value_t = 500)]
        block_ms: u64,
        #[command(flatten)]
        empty_blocks: EmptyBlockOptions,
        /// Genesis file: sent verbatim as InitChain's app_state_bytes; its `chain_id` is the
        /// chain id unless --chain-id is given.
        #[arg(long)]
        genesis: PathBuf,
        /// Chain id (default: the genesis' `chain_id`).
        #[arg(long)]
        chain_id: Option<String>,
        /// Block store directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Most txs in one block.
        #[arg(long, default_value_t = 5000)]
        max_block_txs: usize,
        /// Seconds start-up waits for every app before going on with those that are up.
        #[arg(long, default_value_t = 30)]
        start_timeout: u64,
        /// Blocks per segment file of the sequencer's block log: pruning deletes whole
        /// segments, so the log takes at most one segment more than what the apps retain.
        #[arg(long, default_value_t = seqmpc_localnet::sequencer::store::DEFAULT_SEGMENT_BLOCKS)]
        block_log_segment_blocks: u64,
    },
}

/// Sets `stop` on the first SIGINT/SIGTERM; exits at once on the third.
fn install_signal_handler() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = AtomicUsize::new(0);
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        flag.store(true, Ordering::Release);
        match n {
            0 => eprintln!("localnet: stopping (Ctrl-C twice more to exit at once)"),
            1 => eprintln!("localnet: still stopping..."),
            _ => std::process::exit(130),
        }
    })
    .context("installing the signal handler")?;
    Ok(stop)
}

/// The test fixtures `--dev-primes` uses, from the repository the command runs in.
fn dev_primes_file() -> anyhow::Result<PathBuf> {
    let f = PathBuf::from(DEV_PRIMES_FILE);
    anyhow::ensure!(
        f.is_file(),
        "--dev-primes: {DEV_PRIMES_FILE} not found; run from the repository root, or pass \
         --cggmp-fixtures PATH"
    );
    // Absolute: the nodes' command lines (localnet.json) must work from any directory.
    Ok(std::fs::canonicalize(&f)?)
}

/// Where `--dev-primes` finds the fixtures (relative to the repository root).
const DEV_PRIMES_FILE: &str = "module/tests/fixtures/cggmp24-test-fixtures.json";

/// A warning nobody can miss: the network's ECDSA keys are not secret.
fn warn_insecure(fixtures: &std::path::Path) {
    let bar = "!".repeat(78);
    eprintln!(
        "{bar}\n!! INSECURE: CGGMP24 safe primes and aux info from the TEST fixtures\n!! {}\n\
         !! Their Paillier secrets are public: anyone can recover this network's ECDSA keys.\n\
         !! For trying the ECDSA flows in seconds only. Never hold real value with it.\n{bar}",
        fixtures.display()
    );
    tracing::warn!(file = %fixtures.display(), "INSECURE developer primes: the network's \
        cggmp24-secp256k1 keys are not secret");
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Start {
            dir,
            nodes,
            threshold,
            block_ms,
            empty_blocks,
            base_port,
            mpcd,
            reset,
            max_block_txs,
            start_timeout,
            cggmp_fixtures,
            dev_primes,
            cggmp_presign_pool,
            session_deadline_blocks,
            liveness_window_blocks,
            cggmp_keygen_deadline_blocks,
            sign_retention_blocks,
            retain_blocks,
            block_log_segment_blocks,
        } => {
            let cggmp_fixtures = match (cggmp_fixtures, dev_primes) {
                (Some(f), _) => Some(f),
                (None, true) => Some(dev_primes_file()?),
                (None, false) => None,
            };
            if let Some(f) = &cggmp_fixtures {
                warn_insecure(f);
            }
            let stop = install_signal_handler()?;
            network::start(
                &StartOptions {
                    dir,
                    nodes,
                    threshold,
                    block_ms,
                    empty_blocks,
                    base_port,
                    mpcd,
                    reset,
                    max_block_txs,
                    start_timeout: Duration::from_secs(start_timeout),
                    cggmp_fixtures,
                    cggmp_presign_pool,
                    session_deadline_blocks,
                    liveness_window_blocks,
                    cggmp_keygen_deadline_blocks,
                    sign_retention_blocks,
                    retain_blocks,
                    block_log_segment_blocks,
                },
                &stop,
            )
        }
        Cmd::Stop { dir, timeout } => network::stop(&dir, Duration::from_secs(timeout)),
        Cmd::AddNode { dir, mpcd, timeout } => {
            let node = network::add_node::add_node(&network::add_node::AddNodeOptions {
                dir,
                mpcd,
                timeout: Duration::from_secs(timeout),
            })?;
            println!("{}", serde_json::to_string(&node)?);
            Ok(())
        }
        Cmd::CometbftInit {
            dir,
            validators,
            base_port,
            chain_id,
            mpcd,
        } => {
            let kit =
                seqmpc_localnet::cometbft_kit::init(&seqmpc_localnet::cometbft_kit::KitOptions {
                    dir,
                    validators,
                    base_port,
                    mpcd: network::setup::resolve_mpcd(mpcd.as_deref())?,
                    chain_id,
                })?;
            eprintln!(
                "localnet: wrote a CometBFT kit of {} validators in {}; start it with {}",
                kit.validators.len(),
                kit.dir.display(),
                kit.start_script.display()
            );
            println!("{}", serde_json::to_string(&kit)?);
            Ok(())
        }
        Cmd::Sequencer {
            apps,
            rpc_listen,
            block_ms,
            empty_blocks,
            genesis,
            chain_id,
            data_dir,
            max_block_txs,
            start_timeout,
            block_log_segment_blocks,
        } => {
            let app_state = std::fs::read(&genesis)
                .with_context(|| format!("reading {}", genesis.display()))?;
            let chain_id = match chain_id {
                Some(c) => c,
                None => {
                    let v: serde_json::Value = serde_json::from_slice(&app_state)
                        .with_context(|| format!("parsing {}", genesis.display()))?;
                    v["chain_id"].as_str().map(str::to_owned).with_context(|| {
                        format!("{} has no chain_id: pass --chain-id", genesis.display())
                    })?
                }
            };
            let mut cfg = SequencerConfig::new(apps, chain_id, app_state, data_dir);
            cfg.rpc_listen = rpc_listen;
            cfg.block_ms = block_ms;
            cfg.create_empty_blocks = !empty_blocks.no_empty_blocks;
            cfg.empty_block_interval_ms = empty_blocks.empty_block_interval_ms;
            cfg.max_block_txs = max_block_txs;
            cfg.startup_timeout = Duration::from_secs(start_timeout);
            cfg.block_log_segment_blocks = block_log_segment_blocks;
            let stop = install_signal_handler()?;
            sequencer::run(cfg, stop)
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("localnet: error: {e:#}");
        std::process::exit(1);
    }
}
