//! mpcd: one seqmpc MPC node. Serves the ABCI application to the consensus engine, runs the
//! MPC module (p2p + sessions + key store) and a local status endpoint.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use seqmpc_abci::chain::entries::{KeyEntry, KeyStatus};
use seqmpc_abci::chain::query::Query;
use seqmpc_abci::daemon::admin;
use seqmpc_abci::daemon::home::{
    identity, load_master_key, open_store, KEYSTORE_DIR, MASTER_KEY, NEXT_NODE_KEY, NODE_ID_FILE,
    NODE_KEY,
};
use seqmpc_abci::daemon::keys::create_key_file;
use seqmpc_abci::daemon::master_source::MasterKeySource;
use seqmpc_abci::daemon::rpc::RpcClient;
use seqmpc_abci::daemon::run::{Daemon, DaemonConfig, Exit};
use seqmpc_module::store::{restore_backup, KeyRecordView, MasterKey, RestoreOptions, ShareStatus};
use seqmpc_proto::NodeId;
use tracing::info;

#[derive(Parser)]
#[command(name = "mpcd", about = "seqmpc MPC node daemon", version = seqmpc_abci::VERSION_LINE)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a node home: node key (ed25519, also the libp2p identity) and master key, 0600.
    Init {
        /// Node home directory.
        #[arg(long)]
        home: PathBuf,
        /// Node id as registered in the genesis, e.g. node0, or the id a `NodeJoin` tx will
        /// admit (written to HOME/node_id; `start` uses it until the chain knows the key).
        #[arg(long)]
        node_id: NodeId,
        /// Take the master key from this command instead of a file: run with `sh -c` each
        /// time the store opens, it prints the 32-byte key as 64 hex digits (e.g. `vault kv
        /// get -field=key secret/seqmpc/node0`). Checked once now, then kept in
        /// HOME/master_key_command (0600); no master.key is written.
        #[arg(long)]
        master_key_command: Option<String>,
    },
    /// Run the node.
    Start(DaemonConfig),
    /// Make a new node key in HOME/node.key.next (0600) and print its public key, for a
    /// `mpcctl node-rotate-key`. Once the chain has executed that rotation, the running node
    /// restarts itself with the new key (a stopped node takes it at its next start), and the
    /// old node.key is gone.
    NewNodeKey {
        /// Node home directory.
        #[arg(long)]
        home: PathBuf,
    },
    /// Replace the master key (HOME/master.key) and the key store's data key with fresh ones,
    /// re-sealing every record and prime set. With the node running, the node does it
    /// (operator socket HOME/admin.sock, between two store commands: signing goes on); with it
    /// stopped, this command opens the store itself. Crash-safe: after a crash the store
    /// opens with master.key (old or new); run the command again to clean up.
    RotateMasterKey {
        /// Node home directory.
        #[arg(long)]
        home: PathBuf,
        /// Genesis file (gives the chain id and, with node.key, this node's id).
        #[arg(long)]
        genesis: PathBuf,
        /// For a node whose master key comes from a command (`init --master-key-command`):
        /// the command that prints the NEXT key (put it in the secret store first). The data
        /// key is replaced and every value re-sealed under the next key, then
        /// HOME/master_key_command names this command. Node stopped.
        #[arg(long)]
        new_master_key_command: Option<String>,
    },
    /// Write an encrypted backup of the key store (every key record and prime set, and the
    /// data key wrapped under the master key) to a new file, mode 0600. It holds no plaintext
    /// secret; restoring it needs the master key that is current NOW (keep a copy of
    /// master.key apart from the backup, and keep old master keys as long as backups made
    /// under them). A running node writes it itself (operator socket HOME/admin.sock); a
    /// stopped one is read by this command.
    Backup {
        /// Node home directory.
        #[arg(long)]
        home: PathBuf,
        /// Genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore the key store from a backup made by `mpcd backup` for this chain and node,
    /// opened with HOME/master.key or --backup-master-key. Checks the whole file and every
    /// record before writing anything. The node must be stopped.
    Restore {
        /// Node home directory.
        #[arg(long)]
        home: PathBuf,
        /// Genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace a key store that holds records or prime sets (it is moved aside to
        /// HOME/keystore.replaced-*, not deleted).
        #[arg(long)]
        force: bool,
        /// The master key the backup was made under, when it is not HOME/master.key (a backup
        /// from before a `rotate-master-key`); the restored store is re-wrapped under
        /// HOME/master.key.
        #[arg(long)]
        backup_master_key: Option<PathBuf>,
        /// A chain RPC (CometBFT JSON-RPC) to check the backup against: a share older than the
        /// chain's generation of its key, or of a key the chain deleted, moved away from this
        /// node or does not know, is refused.
        #[arg(long, required_unless_present = "no_chain_check")]
        rpc: Option<String>,
        /// Restore without asking the chain (when no chain is reachable). A stale share then
        /// refuses to sign later, and /status names it.
        #[arg(long, conflicts_with = "rpc")]
        no_chain_check: bool,
    },
}

/// `mpcd new-node-key`.
fn new_node_key(home: &Path) -> anyhow::Result<()> {
    let path = home.join(NEXT_NODE_KEY);
    if path.exists() {
        bail!(
            "{} exists: a rotation to it may be under way (its public key: see `mpcctl nodes`); \
             remove it first to make another",
            path.display()
        );
    }
    let key = create_key_file(&path)?;
    let pk = hex::encode(key.verifying_key().to_bytes());
    let node = std::fs::read_to_string(home.join(NODE_ID_FILE)).unwrap_or_default();
    let node = node.trim();
    println!(
        "{}",
        serde_json::json!({"next_node_key": path, "public_key": pk,
            "then": format!("mpcctl node-rotate-key --node-id {node} --public-key {pk} --wait")})
    );
    Ok(())
}

/// A running node's answer as the command prints it.
fn without_ok(mut answer: serde_json::Value) -> serde_json::Value {
    if let Some(o) = answer.as_object_mut() {
        o.remove("ok");
    }
    answer
}

fn rotate_master_key(home: &Path, genesis: &Path, new_command: Option<&str>) -> anyhow::Result<()> {
    if let Some(answer) = admin::call(home, &admin::Request::RotateMasterKey)? {
        println!("{}", without_ok(answer));
        return Ok(());
    }
    let (chain_id, me) = identity(home, genesis)?;
    let source = MasterKeySource::of_home(home)?;
    let Some(key_file) = source.key_file() else {
        let Some(new_command) = new_command else {
            bail!("{}", MasterKeySource::cannot_rotate());
        };
        let old = source.load().context("loading the current master key")?;
        let new = MasterKey::from_command(new_command).context("--new-master-key-command")?;
        open_store(home, &chain_id, &me)?
            .rotate_master_key_with(&old, &new, || {
                MasterKeySource::replace_command(home, new_command).map(drop)
            })
            .context("rotating the master key")?;
        println!(
            "{}",
            serde_json::json!({"rotated": true, "master_key_command": new_command})
        );
        return Ok(());
    };
    if new_command.is_some() {
        bail!(
            "--new-master-key-command is for a node whose master key comes from a command; \
             this one has the file {}",
            key_file.display()
        );
    }
    open_store(home, &chain_id, &me)?
        .rotate_master_key(key_file)
        .context("rotating the master key")?;
    println!(
        "{}",
        serde_json::json!({"rotated": true, "master_key": key_file})
    );
    Ok(())
}

fn backup(home: &Path, genesis: &Path, out: &Path) -> anyhow::Result<()> {
    // The running node writes it: relative to this command's directory, not the node's.
    let out_abs = std::path::absolute(out).with_context(|| format!("{}", out.display()))?;
    let req = admin::Request::Backup { out: out_abs };
    if let Some(answer) = admin::call(home, &req)? {
        println!("{}", without_ok(answer));
        return Ok(());
    }
    let (chain_id, me) = identity(home, genesis)?;
    let summary = open_store(home, &chain_id, &me)?
        .write_backup(out)
        .context("writing the backup")?;
    println!(
        "{}",
        serde_json::json!({"backup": out, "chain_id": chain_id, "node_id": me,
            "records": summary.records, "prime_sets": summary.prime_sets,
            "bytes": summary.bytes,
            "needs_master_key": MasterKeySource::of_home(home)?.describe()})
    );
    Ok(())
}

fn restore(
    home: &Path,
    genesis: &Path,
    from: &Path,
    force: bool,
    backup_master_key: Option<&Path>,
    rpc: Option<&str>,
) -> anyhow::Result<()> {
    let (chain_id, me) = identity(home, genesis)?;
    let rpc = rpc.map(RpcClient::new);
    let check = |view: &KeyRecordView| match &rpc {
        Some(rpc) => check_against_chain(rpc, &me, view),
        None => Ok(()),
    };
    let master = load_master_key(home)?;
    let backup_master = backup_master_key
        .map(|p| {
            MasterKey::load(p)
                .with_context(|| format!("loading --backup-master-key {}", p.display()))
        })
        .transpose()?;
    let dir = home.join(KEYSTORE_DIR);
    let summary = restore_backup(
        &dir,
        &master,
        backup_master.as_ref(),
        &chain_id,
        &me,
        from,
        &RestoreOptions {
            force,
            check_record: Some(&check),
        },
    )
    .with_context(|| format!("restoring {}", from.display()))?;
    println!(
        "{}",
        serde_json::json!({"restored": dir, "records": summary.records,
            "prime_sets": summary.prime_sets, "replaced": summary.replaced,
            "checked_against_chain": rpc.is_some()})
    );
    Ok(())
}

/// `Ok` when the chain still holds `view`'s key with this node's share of the record's
/// generation; a READY share of an older generation (or a deleted key) must not come back.
fn check_against_chain(rpc: &RpcClient, me: &NodeId, view: &KeyRecordView) -> Result<(), String> {
    if view.status != ShareStatus::Ready {
        return Ok(()); // no share: nothing that could sign
    }
    let q = rpc
        .abci_query(&Query::Key(view.key_id.clone()).path())
        .map_err(|e| format!("cannot ask the chain: {e:#}"))?;
    if q.code != 0 {
        return Err(format!(
            "the chain does not know this key ({}); restoring would bring back a share it \
             no longer has",
            q.log
        ));
    }
    let key: KeyEntry =
        serde_json::from_slice(&q.value).map_err(|e| format!("chain answer: {e}"))?;
    if matches!(key.status, KeyStatus::Deleting | KeyStatus::Deleted) {
        return Err(format!("the chain has {:?} this key", key.status));
    }
    if !key.parties.contains(me) {
        return Err("this node no longer holds a share of this key on chain".into());
    }
    let session = key.session.to_string();
    if view.generation < key.generation
        || (view.generation == key.generation && view.session != session)
    {
        return Err(format!(
            "share of generation {} (session {}) is older than the chain's generation {} \
             (session {session}): restore a newer backup",
            view.generation, view.session, key.generation
        ));
    }
    Ok(())
}

fn init(home: &Path, node_id: &NodeId, master_key_command: Option<&str>) -> anyhow::Result<()> {
    if home.join(NODE_KEY).exists() {
        bail!("{} already holds a node key", home.display());
    }
    std::fs::create_dir_all(home)?;
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    // The master key first: a command that prints no key leaves no half-made home.
    match master_key_command {
        Some(command) => {
            drop(MasterKeySource::init_command(home, command).context("--master-key-command")?)
        }
        None => drop(MasterKey::create(&home.join(MASTER_KEY)).context("creating the master key")?),
    }
    let key = create_key_file(&home.join(NODE_KEY))?;
    std::fs::write(home.join(NODE_ID_FILE), node_id.as_str())?;
    println!(
        "{}",
        serde_json::json!({"node_id": node_id, "public_key": hex::encode(key.verifying_key().to_bytes())})
    );
    Ok(())
}

/// `mpcd start`: the daemon until SIGINT or SIGTERM; after the chain rotated this node's key,
/// the same command again (it adopts HOME/node.key.next at start).
fn start(config: &DaemonConfig) -> anyhow::Result<()> {
    let daemon = Daemon::start(config)?;
    let stop = async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let Ok(mut term) = term else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupted; stopping"),
            _ = term.recv() => info!("terminated; stopping"),
        }
    };
    if daemon.run(stop)? == Exit::KeyRotated {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("finding this executable")?;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        bail!("cannot restart with the new node key: {err}");
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    // The one-shot commands print their result on stdout and only warnings on stderr.
    let default_filter = match cli.cmd {
        Cmd::Start { .. } => "info,libp2p=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let r = match cli.cmd {
        Cmd::Init {
            home,
            node_id,
            master_key_command,
        } => init(&home, &node_id, master_key_command.as_deref()),
        Cmd::Start(config) => start(&config),
        Cmd::NewNodeKey { home } => new_node_key(&home),
        Cmd::RotateMasterKey {
            home,
            genesis,
            new_master_key_command,
        } => rotate_master_key(&home, &genesis, new_master_key_command.as_deref()),
        Cmd::Backup { home, genesis, out } => backup(&home, &genesis, &out),
        Cmd::Restore {
            home,
            genesis,
            from,
            force,
            backup_master_key,
            rpc,
            no_chain_check: _,
        } => restore(
            &home,
            &genesis,
            &from,
            force,
            backup_master_key.as_deref(),
            rpc.as_deref(),
        ),
    };
    if let Err(e) = r {
        eprintln!("mpcd: {e:#}");
        std::process::exit(1);
    }
}
