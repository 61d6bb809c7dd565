//! A local network: N `mpcd` child processes driven by the in-process dev sequencer.
//!
//! `start` creates the directory on first use (node homes via `mpcd init`, client keys,
//! `genesis.json`), or restarts the network it holds; runs in the foreground until `stop` is set
//! (Ctrl-C / SIGTERM in the binary); then stops the sequencer, SIGTERMs the nodes (SIGKILL after
//! a grace period) and removes `localnet.json`.

pub mod add_node;
pub mod children;
pub mod layout;
pub mod setup;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seqmpc_abci::manifest::{Manifest, ManifestNode};

use self::children::{log_tail, stop_all, NodeProcess};
use self::layout::{Layout, Ports, DEFAULT_BASE_PORT};
use crate::sequencer::{AppState, Sequencer, SequencerConfig, SequencerStatus};

/// How long nodes get to exit after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Default number of nodes of a new localnet.
pub const DEFAULT_NODES: usize = 3;
/// Default threshold.
pub const DEFAULT_THRESHOLD: u32 = 2;

/// `--no-empty-blocks` and `--empty-block-interval-ms`, of `localnet start` and `localnet
/// sequencer`.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct EmptyBlockOptions {
    /// Make no block without txs (CometBFT's `create_empty_blocks = false`): a block comes
    /// as soon as a tx waits (at most every --block-ms), after a block that changed the app
    /// hash (so a header carries it), and otherwise every --empty-block-interval-ms. Idle,
    /// the block log stops growing and a request's first block comes at once; the chain's
    /// deadlines count blocks, so they last longer while nothing happens.
    #[arg(long)]
    pub no_empty_blocks: bool,
    /// With --no-empty-blocks: a block at least this often, txs or not (0: never;
    /// CometBFT's `create_empty_blocks_interval`).
    #[arg(long, default_value_t = 0, requires = "no_empty_blocks")]
    pub empty_block_interval_ms: u64,
}

/// Options of `localnet start`.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Localnet directory.
    pub dir: PathBuf,
    /// Number of nodes (a new network: default 3; an existing one: must match its genesis).
    pub nodes: Option<usize>,
    /// Default threshold for clients (written to localnet.json).
    pub threshold: Option<u32>,
    /// Block interval.
    pub block_ms: u64,
    /// When blocks without txs come (`SequencerConfig::create_empty_blocks`).
    pub empty_blocks: EmptyBlockOptions,
    /// Base port (an existing network: default, and must match, the one it was made with).
    pub base_port: Option<u16>,
    /// mpcd executable (default: next to this executable).
    pub mpcd: Option<PathBuf>,
    /// Wipe the directory first.
    pub reset: bool,
    /// Most txs per block.
    pub max_block_txs: usize,
    /// How long to wait for every node to commit the first block.
    pub start_timeout: Duration,
    /// CGGMP24 fixture file passed to every mpcd as `--cggmp-primes` (tests only).
    pub cggmp_fixtures: Option<PathBuf>,
    /// `--cggmp-presign-pool` for every mpcd (None: mpcd's default).
    pub cggmp_presign_pool: Option<usize>,
    /// Genesis `session_deadline_blocks` of a new network (None: the genesis default).
    pub session_deadline_blocks: Option<u64>,
    /// Genesis `liveness_window_blocks` of a new network (None: the genesis default).
    pub liveness_window_blocks: Option<u64>,
    /// Genesis `cggmp_keygen_deadline_blocks` of a new network (None: the genesis default).
    pub cggmp_keygen_deadline_blocks: Option<u64>,
    /// Genesis `sign_retention_blocks` of a new network (None: the genesis default).
    pub sign_retention_blocks: Option<u64>,
    /// `--min-retain-blocks` of every mpcd (0: keep every block).
    pub retain_blocks: u64,
    /// Blocks per segment of the sequencer's block log.
    pub block_log_segment_blocks: u64,
}

/// Refuses to touch a directory whose localnet is running.
fn refuse_if_running(layout: &Layout) -> anyhow::Result<()> {
    let path = layout.manifest();
    if !path.exists() {
        return Ok(());
    }
    match Manifest::read(&path) {
        Ok(m) if m.pid != std::process::id() && localnet_alive(m.pid) => bail!(
            "a localnet (pid {}) is already running in {}: stop it with `localnet stop --dir {}`",
            m.pid,
            layout.dir.display(),
            layout.dir.display()
        ),
        _ => {
            tracing::warn!(path = %path.display(), "removing a stale localnet.json");
            let _ = std::fs::remove_file(&path);
            Ok(())
        }
    }
}

/// Whether `pid` is alive and (when /proc tells) a localnet.
fn localnet_alive(pid: u32) -> bool {
    children::alive(pid) && children::cmdline(pid).is_none_or(|c| c.contains("localnet"))
}

/// Runs a localnet in the foreground until `stop` is set.
pub fn start(opts: &StartOptions, stop: &AtomicBool) -> anyhow::Result<()> {
    let layout = Layout::new(&opts.dir)?;
    refuse_if_running(&layout)?;
    let mpcd = setup::resolve_mpcd(opts.mpcd.as_deref())?;
    if opts.reset {
        setup::wipe(&layout)?;
    }
    let fresh = !layout.genesis().exists();
    let ports = if fresh {
        let n = opts.nodes.unwrap_or(DEFAULT_NODES);
        let ports = Ports::new(opts.base_port.unwrap_or(DEFAULT_BASE_PORT), n)?;
        ports.check_free()?;
        tracing::info!(dir = %layout.dir.display(), nodes = n, "creating a new localnet");
        let limits = setup::LimitOptions {
            session_deadline_blocks: opts.session_deadline_blocks,
            liveness_window_blocks: opts.liveness_window_blocks,
            cggmp_keygen_deadline_blocks: opts.cggmp_keygen_deadline_blocks,
            sign_retention_blocks: opts.sign_retention_blocks,
            sign_attempt_blocks: Some(setup::sign_attempt_blocks_for(opts.block_ms)),
        };
        let chain_id = match opts.cggmp_fixtures {
            Some(_) => setup::INSECURE_CHAIN_ID,
            None => setup::CHAIN_ID,
        };
        setup::create(&layout, n, &ports, &mpcd, &limits, chain_id)?;
        ports
    } else {
        let (genesis, _) = setup::load_genesis(&layout)?;
        let n = genesis.nodes.len();
        if let Some(want) = opts.nodes {
            if want != n {
                bail!(
                    "{} holds a network of {n} node(s), not {want}: drop --nodes to restart it, \
                     or add --reset to make a new one",
                    layout.dir.display()
                );
            }
        }
        let made_with = genesis
            .nodes
            .first()
            .and_then(|node| Ports::base_from_p2p_addr(&node.p2p_addr));
        let base = opts.base_port.or(made_with).unwrap_or(DEFAULT_BASE_PORT);
        // Nodes `localnet add-node` admitted run again too, after the genesis ones.
        let added = setup::load_added(&layout, n)?;
        let ports = Ports::new(base, n + added.len())?;
        for (node, p) in genesis.nodes.iter().zip(&ports.nodes) {
            if node.p2p_addr != p.p2p_addr() {
                bail!(
                    "{}: {} listens on {} in the genesis, but base port {base} gives {}: use \
                     the base port the network was made with, or --reset",
                    layout.genesis().display(),
                    node.id,
                    node.p2p_addr,
                    p.p2p_addr()
                );
            }
        }
        ports.check_free()?;
        tracing::info!(dir = %layout.dir.display(), nodes = n, "restarting an existing localnet");
        ports
    };
    let (genesis, genesis_bytes) = setup::load_genesis(&layout)?;
    let genesis_nodes = genesis.nodes.len();
    let n = ports.nodes.len();
    let threshold = opts
        .threshold
        .unwrap_or(DEFAULT_THRESHOLD.min(u32::try_from(n).unwrap_or(u32::MAX)));
    if threshold == 0 || usize::try_from(threshold).map_or(true, |t| t > n) {
        bail!("--threshold must be 1..={n}, got {threshold}");
    }
    let rpc_url = format!("http://127.0.0.1:{}", ports.rpc);

    // The nodes.
    let mut nodes: Vec<NodeProcess> = Vec::with_capacity(n);
    let genesis_path = layout.genesis();
    let mpcd_str = mpcd.to_string_lossy().into_owned();
    for (i, p) in ports.nodes.iter().enumerate() {
        let home = layout.node_home(i);
        let cmd = vec![
            mpcd_str.clone(),
            "start".into(),
            "--home".into(),
            home.to_string_lossy().into_owned(),
            "--genesis".into(),
            genesis_path.to_string_lossy().into_owned(),
            "--abci-listen".into(),
            p.abci_addr(),
            "--p2p-listen".into(),
            p.p2p_addr(),
            "--status-listen".into(),
            p.status_addr(),
            "--rpc".into(),
            rpc_url.clone(),
        ];
        let mut cmd = cmd;
        // The fixture holds primes for the genesis committee only.
        if let Some(f) = opts.cggmp_fixtures.as_ref().filter(|_| i < genesis_nodes) {
            cmd.push("--cggmp-primes".into());
            cmd.push(f.to_string_lossy().into_owned());
        }
        if let Some(n) = opts.cggmp_presign_pool {
            cmd.push("--cggmp-presign-pool".into());
            cmd.push(n.to_string());
        }
        if opts.retain_blocks > 0 {
            cmd.push("--min-retain-blocks".into());
            cmd.push(opts.retain_blocks.to_string());
        }
        match NodeProcess::spawn(&format!("node{i}"), cmd, &layout.node_log(i)) {
            Ok(np) => nodes.push(np),
            Err(e) => {
                stop_all(&mut nodes, STOP_GRACE);
                return Err(e);
            }
        }
    }

    // The sequencer, then the wait for the first block on every node.
    let mut cfg = SequencerConfig::new(
        ports
            .nodes
            .iter()
            .enumerate()
            .map(|(i, p)| format!("node{i}={}", p.abci_addr()))
            .collect(),
        genesis.chain_id.clone(),
        genesis_bytes,
        layout.sequencer_dir(),
    );
    cfg.rpc_listen = format!("127.0.0.1:{}", ports.rpc);
    // `localnet add-node` attaches its node with `dev_add_app`, which needs this secret: it
    // is only in localnet.json (mode 0600), so no other local user or process can attach an
    // app (or make the sequencer dial anything).
    let dev_token = {
        use rand::RngCore as _;
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    };
    cfg.dev_add_app_token = Some(dev_token.clone());
    cfg.block_ms = opts.block_ms;
    cfg.create_empty_blocks = !opts.empty_blocks.no_empty_blocks;
    cfg.empty_block_interval_ms = opts.empty_blocks.empty_block_interval_ms;
    cfg.max_block_txs = opts.max_block_txs;
    cfg.startup_timeout = opts.start_timeout;
    cfg.block_log_segment_blocks = opts.block_log_segment_blocks;
    let seq = match Sequencer::spawn(cfg) {
        Ok(s) => s,
        Err(e) => {
            stop_all(&mut nodes, STOP_GRACE);
            return Err(e.context("starting the dev sequencer"));
        }
    };
    let outcome = run_network(
        opts,
        &layout,
        &genesis.chain_id,
        threshold,
        &rpc_url,
        &ports,
        &seq,
        &mut nodes,
        stop,
    );

    // Shutdown: the sequencer first (so the last block is complete on every node), then nodes.
    tracing::info!("stopping: the sequencer, then the nodes");
    let seq_res = seq.stop();
    stop_all(&mut nodes, STOP_GRACE);
    // Nodes restarted by hand with their `cmd` are part of this network too, and so are the
    // nodes `localnet add-node` started (listed in localnet.json only).
    let mut cmds: Vec<(String, Vec<String>)> = nodes
        .iter()
        .map(|np| (np.id.clone(), np.cmd.clone()))
        .collect();
    if let Ok(m) = Manifest::read(&layout.manifest()) {
        for n in m.nodes {
            if !cmds.iter().any(|(id, _)| *id == n.id) {
                cmds.push((n.id, n.cmd));
            }
        }
    }
    for (id, cmd) in &cmds {
        let n = children::stop_by_argv(cmd, STOP_GRACE);
        if n > 0 {
            tracing::info!(node = %id, "stopped {n} process(es) not started by this localnet");
        }
    }
    let _ = std::fs::remove_file(layout.manifest());
    outcome?;
    seq_res.context("the dev sequencer")?;
    tracing::info!("localnet stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_network(
    opts: &StartOptions,
    layout: &Layout,
    chain_id: &str,
    threshold: u32,
    rpc_url: &str,
    ports: &Ports,
    seq: &Sequencer,
    nodes: &mut [NodeProcess],
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let start_height = seq.height();
    let st = wait_ready(seq, nodes, start_height, opts.start_timeout, stop)?;
    if stop.load(Ordering::Acquire) {
        return Ok(());
    }
    let manifest = Manifest {
        chain_id: chain_id.to_owned(),
        rpc: rpc_url.to_owned(),
        dir: layout.dir.to_string_lossy().into_owned(),
        pid: std::process::id(),
        default_threshold: threshold,
        client_key: layout.client_key().to_string_lossy().into_owned(),
        signer_key: layout.signer_key().to_string_lossy().into_owned(),
        genesis: layout.genesis().to_string_lossy().into_owned(),
        block_ms: opts.block_ms,
        dev_token: seq.dev_add_app_token(),
        nodes: nodes
            .iter()
            .zip(&ports.nodes)
            .enumerate()
            .map(|(i, (np, p))| ManifestNode {
                id: np.id.clone(),
                pid: np.pid(),
                home: layout.node_home(i).to_string_lossy().into_owned(),
                abci: p.abci_addr(),
                p2p: p.p2p_addr(),
                status: format!("http://{}", p.status_addr()),
                log: np.log.to_string_lossy().into_owned(),
                cmd: np.cmd.clone(),
            })
            .collect(),
    };
    manifest.write(&layout.manifest())?;
    print_guide(&manifest, &st);

    while !stop.load(Ordering::Acquire) {
        for np in nodes.iter_mut() {
            if let Some(status) = np.poll_exit() {
                tracing::error!(
                    node = %np.id,
                    %status,
                    log = %np.log.display(),
                    "mpcd exited; the network goes on without it. Restart it with its `cmd` from \
                     localnet.json: the sequencer reconnects and replays the blocks it missed.\n{}",
                    log_tail(&np.log, 15)
                );
            }
        }
        if seq.is_finished() {
            let st = seq.status();
            bail!(
                "the dev sequencer stopped: {}",
                st.error.unwrap_or_else(|| st.phase.clone())
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Waits until every node has committed a block above `start_height`.
fn wait_ready(
    seq: &Sequencer,
    nodes: &mut [NodeProcess],
    start_height: u64,
    timeout: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<SequencerStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(seq.status());
        }
        for np in nodes.iter_mut() {
            if let Some(status) = np.poll_exit() {
                bail!(
                    "{} exited during start-up ({status}); last lines of {}:\n{}",
                    np.id,
                    np.log.display(),
                    log_tail(&np.log, 20)
                );
            }
        }
        let st = seq.status();
        if seq.is_finished() {
            bail!(
                "the dev sequencer stopped during start-up: {}",
                st.error.unwrap_or(st.phase)
            );
        }
        let ready =
            |a: &crate::sequencer::AppStatus| a.state == AppState::Up && a.height > start_height;
        if st.phase == "running" && st.height > start_height && st.apps.iter().all(ready) {
            return Ok(st);
        }
        if Instant::now() >= deadline {
            let lagging = st.apps.iter().position(|a| !ready(a)).unwrap_or(0);
            let app = st.apps.get(lagging);
            let log = nodes
                .get(lagging)
                .map(|np| (np.log.display().to_string(), log_tail(&np.log, 20)))
                .unwrap_or_default();
            bail!(
                "node{lagging} did not commit the first block within {timeout:?} (state {:?}, \
                 height {}, last error: {}); last lines of {}:\n{}",
                app.map(|a| a.state),
                app.map_or(0, |a| a.height),
                app.and_then(|a| a.error.clone())
                    .unwrap_or_else(|| "none".into()),
                log.0,
                log.1
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn print_guide(m: &Manifest, st: &SequencerStatus) {
    let dir = &m.dir;
    let t = m.default_threshold;
    println!(
        "\nlocalnet is running: {} node(s), chain {}, a block every {} ms (height {})\n\
         \x20 RPC:       {}\n\
         \x20 manifest:  {dir}/localnet.json\n\
         \x20 node logs: {dir}/node<i>/mpcd.log\n\
         Try:\n\
         \x20 mpcctl --home {dir} keygen --key-id demo --scheme frost-ed25519 --threshold {t} --wait\n\
         \x20 mpcctl --home {dir} sign --key-id demo --message 68656c6c6f --wait\n\
         \x20 mpcctl --home {dir} keys\n\
         \x20 curl -s {}/status\n\
         Prometheus scrape targets (GET /metrics): mpcd {} · sequencer {}\n\
         Stop with Ctrl-C, or from another shell: localnet stop --dir {dir}\n",
        m.nodes.len(),
        m.chain_id,
        m.block_ms,
        st.height,
        m.rpc,
        m.rpc,
        m.nodes
            .iter()
            .map(|n| n.status.trim_start_matches("http://").to_owned())
            .collect::<Vec<_>>()
            .join(" "),
        m.rpc.trim_start_matches("http://"),
    );
}

/// `localnet stop`: SIGTERMs the localnet of `dir` and waits for it to exit. If that process
/// is gone (killed), stops the nodes it left behind.
pub fn stop(dir: &std::path::Path, timeout: Duration) -> anyhow::Result<()> {
    let layout = Layout::new(dir)?;
    let path = layout.manifest();
    if !path.exists() {
        bail!(
            "no localnet is running in {} (no localnet.json)",
            layout.dir.display()
        );
    }
    let m = Manifest::read(&path)?;
    if localnet_alive(m.pid) {
        children::terminate(m.pid)?;
        let deadline = Instant::now() + timeout;
        // A zombie has exited (its parent, e.g. a test harness, has not reaped it yet).
        while children::alive_not_zombie(m.pid) {
            if Instant::now() >= deadline {
                bail!(
                    "localnet (pid {}) did not exit within {timeout:?} after SIGTERM",
                    m.pid
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        println!("localnet (pid {}) stopped", m.pid);
        return Ok(());
    }
    // The localnet process is gone: stop the nodes it left behind (exact argv match).
    let stopped: usize = m
        .nodes
        .iter()
        .map(|n| children::stop_by_argv(&n.cmd, STOP_GRACE))
        .sum();
    let _ = std::fs::remove_file(&path);
    println!(
        "localnet (pid {}) was not running; stopped {stopped} leftover node process(es)",
        m.pid
    );
    Ok(())
}
