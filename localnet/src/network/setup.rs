//! Creating a localnet directory: node homes (`mpcd init`), client keys and the genesis.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};
use ed25519_dalek::SigningKey;
use seqmpc_abci::chain::genesis::{Genesis, GenesisAccount, GenesisNode, Governance, Limits, Role};
use seqmpc_abci::daemon::keys::create_key_file;
use seqmpc_abci::manifest::write_atomic;
use seqmpc_proto::NodeId;
use serde::Deserialize;

use super::layout::{Layout, Ports};

/// Chain id of every localnet.
pub const CHAIN_ID: &str = "seqmpc-localnet";
/// Chain id of a new localnet whose nodes load the CGGMP24 test fixtures (`--dev-primes`,
/// `--cggmp-fixtures`): its ECDSA keys are not secret, and every client sees it.
pub const INSECURE_CHAIN_ID: &str = "seqmpc-localnet-insecure-dev-primes";

#[derive(Deserialize)]
struct InitOutput {
    node_id: String,
    public_key: String,
}

/// Runs `mpcd init` for one node and returns its public key (hex).
pub(crate) fn mpcd_init(mpcd: &Path, home: &Path, id: &str) -> anyhow::Result<String> {
    let out = Command::new(mpcd)
        .arg("init")
        .arg("--home")
        .arg(home)
        .arg("--node-id")
        .arg(id)
        .output()
        .with_context(|| format!("running {} init", mpcd.display()))?;
    if !out.status.success() {
        bail!(
            "`{} init --home {} --node-id {id}` failed ({}): {}",
            mpcd.display(),
            home.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("`mpcd init` printed no JSON line: {stdout:?}"))?;
    let parsed: InitOutput = serde_json::from_str(line)
        .with_context(|| format!("`mpcd init` printed unexpected JSON: {line}"))?;
    ensure!(
        parsed.node_id == id,
        "`mpcd init` answered node id {:?}, expected {id:?}",
        parsed.node_id
    );
    ensure!(
        parsed.public_key.len() == 64 && hex::decode(&parsed.public_key).is_ok(),
        "`mpcd init` printed a bad public key {:?}",
        parsed.public_key
    );
    Ok(parsed.public_key.to_lowercase())
}

/// Blocks between a localnet proposal's approval and its execution (2 s at 100 ms blocks).
pub const LOCALNET_GOVERNANCE_DELAY_BLOCKS: u64 = 20;

/// Genesis limits of a new localnet that differ from the defaults (None: the default).
#[derive(Clone, Debug, Default)]
pub struct LimitOptions {
    /// `session_deadline_blocks`.
    pub session_deadline_blocks: Option<u64>,
    /// `liveness_window_blocks`.
    pub liveness_window_blocks: Option<u64>,
    /// `cggmp_keygen_deadline_blocks`.
    pub cggmp_keygen_deadline_blocks: Option<u64>,
    /// `sign_attempt_blocks`.
    pub sign_attempt_blocks: Option<u64>,
    /// `sign_retention_blocks`.
    pub sign_retention_blocks: Option<u64>,
}

/// Least wall time of a localnet's signing attempt: three times a node's default local
/// signing timeout (2 s), so that the honest signers' failure reports (sent when that timeout
/// fires, then carried to a block) reach the chain before the attempt's deadline even when a
/// loaded machine delays them; otherwise a slow honest reporter counts as silent.
pub const LOCALNET_SIGN_ATTEMPT_MIN_MS: u64 = 6_000;

/// `sign_attempt_blocks` for blocks of `block_ms`: the default, or more blocks when they are
/// short, so an attempt lasts at least [`LOCALNET_SIGN_ATTEMPT_MIN_MS`].
pub fn sign_attempt_blocks_for(block_ms: u64) -> u64 {
    Limits::default()
        .sign_attempt_blocks
        .max(LOCALNET_SIGN_ATTEMPT_MIN_MS.div_ceil(block_ms.max(1)))
}

/// Creates a new localnet in `layout.dir` (which must hold no genesis): `n` node homes, the
/// client and signer keys, and `genesis.json` (default limits but those `limits` sets).
pub fn create(
    layout: &Layout,
    n: usize,
    ports: &Ports,
    mpcd: &Path,
    limits: &LimitOptions,
    chain_id: &str,
) -> anyhow::Result<Genesis> {
    ensure!(
        !layout.genesis().exists(),
        "{} already exists",
        layout.genesis().display()
    );
    fs::create_dir_all(&layout.dir)
        .with_context(|| format!("creating {}", layout.dir.display()))?;
    let mut nodes = Vec::with_capacity(n);
    for (i, p) in ports.nodes.iter().enumerate().take(n) {
        let id = format!("node{i}");
        let home = layout.node_home(i);
        let public_key = mpcd_init(mpcd, &home, &id)?;
        nodes.push(GenesisNode {
            id: NodeId::new(id.clone()).map_err(|e| anyhow::anyhow!("{id}: {e}"))?,
            public_key,
            p2p_addr: p.p2p_addr(),
        });
    }
    fs::create_dir_all(layout.client_dir())?;
    set_mode(&layout.client_dir(), 0o700)?;
    let client = create_key_file(&layout.client_key())?;
    let signer = create_key_file(&layout.signer_key())?;
    let genesis = localnet_genesis(chain_id, nodes, &client, &signer, limits);
    let mut bytes = serde_json::to_vec_pretty(&genesis)?;
    bytes.push(b'\n');
    write_atomic(&layout.genesis(), &bytes)?;
    Ok(genesis)
}

/// The genesis of a localnet (and of the CometBFT kit): `nodes`, the `client` account (every
/// role: the operator's) and the `signer` account (sign only), default limits but those
/// `limits` sets, and governance by the client account alone.
pub fn localnet_genesis(
    chain_id: &str,
    nodes: Vec<GenesisNode>,
    client: &SigningKey,
    signer: &SigningKey,
    limits: &LimitOptions,
) -> Genesis {
    let default = Limits::default();
    Genesis {
        chain_id: chain_id.to_owned(),
        nodes,
        accounts: vec![
            GenesisAccount {
                name: "client".to_owned(),
                public_key: hex::encode(client.verifying_key().to_bytes()),
                // The localnet's operator account: every role, `registry` for `add-node`.
                roles: BTreeSet::from([Role::Keygen, Role::Sign, Role::Delete, Role::Registry]),
            },
            GenesisAccount {
                name: "signer".to_owned(),
                public_key: hex::encode(signer.verifying_key().to_bytes()),
                roles: BTreeSet::from([Role::Sign]),
            },
        ],
        limits: Limits {
            session_deadline_blocks: limits
                .session_deadline_blocks
                .unwrap_or(default.session_deadline_blocks),
            liveness_window_blocks: limits
                .liveness_window_blocks
                .unwrap_or(default.liveness_window_blocks),
            cggmp_keygen_deadline_blocks: limits
                .cggmp_keygen_deadline_blocks
                .unwrap_or(default.cggmp_keygen_deadline_blocks),
            sign_attempt_blocks: limits
                .sign_attempt_blocks
                .unwrap_or(default.sign_attempt_blocks),
            sign_retention_blocks: limits
                .sign_retention_blocks
                .unwrap_or(default.sign_retention_blocks),
            ..default
        },
        // The rules of a production chain, with one convenient account: resharing to another
        // committee and admitting a node are proposals the client account approves alone;
        // they run LOCALNET_GOVERNANCE_DELAY_BLOCKS later, visible and cancellable meanwhile.
        governance: Some(Governance {
            accounts: vec!["client".to_owned()],
            approvals: 1,
            delay_blocks: LOCALNET_GOVERNANCE_DELAY_BLOCKS,
            expiry_blocks: 36_000,
        }),
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Records that `localnet add-node` admitted `id` (its NodeJoin is committed), so a restart
/// of the localnet starts it again with the genesis nodes.
pub fn record_added(layout: &Layout, genesis_nodes: usize, id: &str) -> anyhow::Result<()> {
    let mut ids = load_added(layout, genesis_nodes)?;
    if !ids.iter().any(|x| x == id) {
        ids.push(id.to_owned());
    }
    let mut bytes = serde_json::to_vec_pretty(&ids)?;
    bytes.push(b'\n');
    write_atomic(&layout.added_nodes(), &bytes)
}

/// The nodes `localnet add-node` admitted, in order: `node<G>`, `node<G+1>`, ... where G is
/// the number of genesis nodes (the port layout assumes it).
pub fn load_added(layout: &Layout, genesis_nodes: usize) -> anyhow::Result<Vec<String>> {
    let path = layout.added_nodes();
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let ids: Vec<String> =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    for (k, id) in ids.iter().enumerate() {
        let want = format!("node{}", genesis_nodes + k);
        ensure!(
            *id == want,
            "{}: entry {k} is {id:?}, expected {want:?}",
            path.display()
        );
    }
    Ok(ids)
}

/// Reads the genesis of an existing localnet.
pub fn load_genesis(layout: &Layout) -> anyhow::Result<(Genesis, Vec<u8>)> {
    let path = layout.genesis();
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let genesis: Genesis =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        !genesis.nodes.is_empty(),
        "{} lists no node",
        path.display()
    );
    Ok((genesis, bytes))
}

/// Removes a localnet directory, after checking it looks like one (so `--reset` never wipes
/// an unrelated directory).
pub fn wipe(layout: &Layout) -> anyhow::Result<()> {
    let dir = &layout.dir;
    if !dir.exists() {
        return Ok(());
    }
    let looks_like_localnet = layout.genesis().exists()
        || layout.manifest().exists()
        || layout.sequencer_dir().exists()
        || fs::read_dir(dir)?.next().is_none();
    if !looks_like_localnet {
        bail!(
            "refusing to wipe {}: it does not look like a localnet directory (no genesis.json)",
            dir.display()
        );
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// The `mpcd` to run: `explicit`, else the one next to the running executable.
pub fn resolve_mpcd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("locating the localnet executable")?;
            exe.parent()
                .context("the localnet executable has no directory")?
                .join("mpcd")
        }
    };
    if !path.is_file() {
        bail!(
            "mpcd not found at {}: build it first (`cargo build --release`, or `cargo build` for \
             a debug localnet) or pass --mpcd PATH",
            path.display()
        );
    }
    let path = path.canonicalize().unwrap_or(path);
    Ok(path)
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn sign_attempt_blocks_for__should_give_short_blocks_at_least_six_seconds_an_attempt() {
        assert_eq!(sign_attempt_blocks_for(100), 60);
        assert_eq!(sign_attempt_blocks_for(7), 858);
        // Long blocks keep the genesis default (30 blocks).
        assert_eq!(sign_attempt_blocks_for(1000), 30);
        assert_eq!(sign_attempt_blocks_for(0), 6000);
    }
}
