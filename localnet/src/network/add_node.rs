//! `localnet add-node`: admits one more MPC node into a running localnet.
//!
//! Steps: the next id (`node<N>`, N = number of nodes in `localnet.json`) and its ports from
//! the localnet's base port (the layout of [`super::layout`]); its home via `mpcd init`; a
//! `NodeJoin` tx signed by the localnet's client account (which holds the `registry` role),
//! waited for until committed; its `mpcd` started with the flags of node0's `cmd` (minus
//! `--cggmp-primes`: the test fixture holds no primes for added nodes); the sequencer's
//! dev-only `dev_add_app` RPC, so the block loop replays the chain to the new app and then
//! drives it; the node appended to `localnet.json` (`pid`, `cmd`), so `localnet stop` stops it
//! too, and to `added-nodes.json`, so a restart (`localnet start --dir DIR`) runs it again;
//! then a wait until the chain lists the node and the sequencer has it up.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seqmpc_abci::chain::query::{AccountView, NodeView, Query};
use seqmpc_abci::chain::{ProposalEntry, ProposalStatus};
use seqmpc_abci::daemon::keys::load_key_file;
use seqmpc_abci::daemon::rpc::RpcClient;
use seqmpc_abci::manifest::{Manifest, ManifestNode};
use seqmpc_proto::tx::{proposal_id, sign_tx, TxMsg};
use seqmpc_proto::NodeId;
use serde_json::json;

use super::children::NodeProcess;
use super::layout::{Layout, Ports};
use super::{localnet_alive, setup};

/// Options of `localnet add-node`.
#[derive(Clone, Debug)]
pub struct AddNodeOptions {
    /// Localnet directory (of a running `localnet start`).
    pub dir: PathBuf,
    /// mpcd executable (default: the one next to this executable).
    pub mpcd: Option<PathBuf>,
    /// How long to wait for the join to commit and for the node to be up.
    pub timeout: Duration,
}

/// Flags of node0's `cmd` that name node0 itself; the new node gets its own values.
const PER_NODE_FLAGS: &[&str] = &[
    "--home",
    "--abci-listen",
    "--p2p-listen",
    "--status-listen",
    "--cggmp-primes",
];

/// Adds a node to the localnet running in `opts.dir`; returns its manifest entry.
pub fn add_node(opts: &AddNodeOptions) -> anyhow::Result<ManifestNode> {
    let layout = Layout::new(&opts.dir)?;
    let manifest_path = layout.manifest();
    if !manifest_path.exists() {
        bail!(
            "no localnet is running in {} (no localnet.json): start it with `localnet start --dir {}`",
            layout.dir.display(),
            layout.dir.display()
        );
    }
    let manifest = Manifest::read(&manifest_path)?;
    if !localnet_alive(manifest.pid) {
        bail!(
            "the localnet of {} (pid {}) is not running",
            layout.dir.display(),
            manifest.pid
        );
    }
    let mpcd = setup::resolve_mpcd(opts.mpcd.as_deref())?;
    let (genesis, _) = setup::load_genesis(&layout)?;
    let first = manifest
        .nodes
        .first()
        .context("localnet.json lists no node")?;

    // Id and ports: the next index of the layout (the manifest lists genesis and added nodes).
    let i = manifest.nodes.len();
    let id = format!("node{i}");
    let node_id = NodeId::new(id.clone()).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
    if manifest.nodes.iter().any(|n| n.id == id) {
        bail!("localnet.json already lists {id}");
    }
    let base = genesis
        .nodes
        .first()
        .and_then(|n| Ports::base_from_p2p_addr(&n.p2p_addr))
        .context("cannot tell the base port from the genesis")?;
    let ports = Ports::new(base, i + 1)?;
    let p = *ports
        .nodes
        .get(i)
        .with_context(|| format!("no ports for {id}"))?;
    let busy: Vec<String> = [("ABCI", p.abci), ("p2p", p.p2p), ("status", p.status)]
        .into_iter()
        .filter(|(_, port)| std::net::TcpListener::bind(("127.0.0.1", *port)).is_err())
        .map(|(what, port)| format!("{port} ({what})"))
        .collect();
    if !busy.is_empty() {
        bail!("port(s) of {id} already in use: {}", busy.join(", "));
    }

    // Home and key: a home left by an interrupted add-node is reused.
    let home = layout.node_home(i);
    let public_key = if home.join("node.key").exists() {
        let key = load_key_file(&home.join("node.key"))?;
        hex::encode(key.verifying_key().to_bytes())
    } else {
        setup::mpcd_init(&mpcd, &home, &id)?
    };
    let pk_bytes =
        seqmpc_abci::chain::state::parse_pubkey(&public_key).map_err(|e| anyhow::anyhow!(e))?;

    // A new node replays the chain from block 1: a pruned block log cannot give it.
    let rpc = RpcClient::new(&manifest.rpc);
    let earliest = rpc.earliest_height()?;
    if earliest > 1 {
        bail!(
            "the sequencer's block log starts at height {earliest} (pruned: `localnet start \
             --retain-blocks`), and a new node replays the chain from block 1: admit nodes to \
             a localnet that keeps every block"
        );
    }

    // The NodeJoin, signed by the client account (it holds the registry role).
    if !listed(&rpc, &id)? {
        let client = load_key_file(std::path::Path::new(&manifest.client_key))?;
        let hash = submit(
            &rpc,
            &client,
            &manifest.chain_id,
            TxMsg::NodeJoin {
                node_id,
                public_key: pk_bytes,
                p2p_addr: p.p2p_addr(),
            },
        )?;
        wait_committed(&rpc, &hash, opts.timeout)?;
        wait_admitted(&rpc, &hash, &id, opts.timeout)?;
    }
    setup::record_added(&layout, genesis.nodes.len(), &id)?;

    // Its mpcd, with node0's settings.
    let mut cmd = vec![mpcd.to_string_lossy().into_owned(), "start".into()];
    let mut rest = first.cmd.iter().skip(2);
    while let Some(arg) = rest.next() {
        if PER_NODE_FLAGS.contains(&arg.as_str()) {
            rest.next();
            continue;
        }
        cmd.push(arg.clone());
    }
    for (flag, value) in [
        ("--home", home.to_string_lossy().into_owned()),
        ("--abci-listen", p.abci_addr()),
        ("--p2p-listen", p.p2p_addr()),
        ("--status-listen", p.status_addr()),
    ] {
        cmd.push(flag.into());
        cmd.push(value);
    }
    let log = layout.node_log(i);
    let np = NodeProcess::spawn(&id, cmd, &log)?;
    let entry = ManifestNode {
        id: id.clone(),
        pid: np.pid(),
        home: home.to_string_lossy().into_owned(),
        abci: p.abci_addr(),
        p2p: p.p2p_addr(),
        status: format!("http://{}", p.status_addr()),
        log: log.to_string_lossy().into_owned(),
        cmd: np.cmd.clone(),
    };
    // Recorded at once, so `localnet stop` stops it even if the waits below fail.
    let mut m = Manifest::read(&manifest_path)?;
    m.nodes.push(entry.clone());
    m.write(&manifest_path)?;

    dev_call(
        rpc.url(),
        "dev_add_app",
        json!({"name": id, "addr": p.abci_addr(), "token": m.dev_token}),
    )
    .context("attaching the node to the dev sequencer")?;

    let deadline = Instant::now() + opts.timeout;
    loop {
        let st = dev_call(rpc.url(), "status", json!({}))?;
        let up = st["seqmpc"]["apps_up"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == id.as_str()));
        if up && listed(&rpc, &id)? {
            return Ok(entry);
        }
        if Instant::now() >= deadline {
            bail!(
                "{id} is not up within {:?} (sequencer apps: {}); last lines of {}:\n{}",
                opts.timeout,
                st["seqmpc"]["apps"],
                log.display(),
                super::children::log_tail(&log, 20)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// A JSON-RPC call to the dev sequencer for what only it serves, which tendermint-rpc's client
/// does not carry: `dev_add_app`, and the `seqmpc` section of `status` (`apps_up`). Returns
/// `result`.
fn dev_call(
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let v: serde_json::Value = ureq::post(url)
        .timeout(Duration::from_secs(3))
        .send_json(body)
        .with_context(|| format!("RPC {method} to {url}"))?
        .into_json()
        .with_context(|| format!("RPC {method}: the answer is not JSON"))?;
    if let Some(err) = v.get("error") {
        bail!("RPC {method}: {err}");
    }
    v.get("result")
        .cloned()
        .with_context(|| format!("RPC {method}: no result"))
}

/// Whether the chain's `/nodes` lists `id`.
fn listed(rpc: &RpcClient, id: &str) -> anyhow::Result<bool> {
    let r = rpc.abci_query(&Query::Nodes.path())?;
    if r.code != 0 {
        bail!("query /nodes: {}", r.log);
    }
    let nodes: Vec<NodeView> = serde_json::from_slice(&r.value).context("/nodes is not JSON")?;
    Ok(nodes.iter().any(|n| n.node.id.as_str() == id))
}

/// Signs and broadcasts `msg` with the account's next sequence; returns the tx hash.
fn submit(
    rpc: &RpcClient,
    key: &ed25519_dalek::SigningKey,
    chain_id: &str,
    msg: TxMsg,
) -> anyhow::Result<String> {
    let pk = hex::encode(key.verifying_key().to_bytes());
    let r = rpc.abci_query(&Query::Account(pk.clone()).path())?;
    if r.code != 0 {
        bail!("query /account/{pk}: {}", r.log);
    }
    let account: AccountView = serde_json::from_slice(&r.value).context("/account is not JSON")?;
    let mut seq = account.sequence;
    for _ in 0..5 {
        let tx = sign_tx(key, chain_id, seq, msg.clone());
        let r = rpc.broadcast_tx_sync(&tx)?;
        if r.code == 0 {
            return Ok(r.hash);
        }
        // A sequence race (another client of the account): the answer names the expected one.
        if let (4, Some(next)) = (
            r.code,
            std::str::from_utf8(&r.data)
                .ok()
                .and_then(|s| s.parse().ok()),
        ) {
            seq = next;
            continue;
        }
        bail!("NodeJoin rejected (code {}): {}", r.code, r.log);
    }
    bail!("NodeJoin rejected: the account's sequence kept changing; retry")
}

/// Waits until the chain lists `id`: the NodeJoin is a governance proposal (the localnet's
/// client account approves alone) that runs `delay_blocks` after it. Fails if the proposal
/// ended otherwise (cancelled, expired, failed).
fn wait_admitted(rpc: &RpcClient, hash: &str, id: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let proposal = hex::decode(hash)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(|h| Query::Proposal(proposal_id(&h)).path());
    loop {
        if listed(rpc, id)? {
            return Ok(());
        }
        if let Some(path) = &proposal {
            let r = rpc.abci_query(path)?;
            if r.code == 0 {
                let p: ProposalEntry =
                    serde_json::from_slice(&r.value).context("/proposal is not JSON")?;
                // Executed between the `listed` query above and this one: the node is listed now.
                if p.status == ProposalStatus::Executed && listed(rpc, id)? {
                    return Ok(());
                }
                if !matches!(p.status, ProposalStatus::Pending | ProposalStatus::Approved) {
                    bail!(
                        "the NodeJoin proposal {} ended {:?}: {}",
                        p.id,
                        p.status,
                        p.error.unwrap_or_default()
                    );
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("node {id} not admitted within {timeout:?} (see `mpcctl proposals`)");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_committed(rpc: &RpcClient, hash: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((code, log)) = rpc.tx_result(hash)? {
            if code != 0 {
                bail!("NodeJoin rejected in its block (code {code}): {log}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("NodeJoin {hash} not committed within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}
