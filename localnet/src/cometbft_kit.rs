//! `localnet cometbft-init`: what N validators need to run this app under real CometBFT v0.38,
//! on one machine: each validator's CometBFT home and `mpcd` home, the app's genesis, the
//! operator's client keys, and `start.sh`, which starts them all when a `cometbft` binary is on
//! PATH. `docs/deployment.md` explains the layout for a production deployment.
//!
//! Each validator `i` is one CometBFT node and one `mpcd` beside it:
//!
//! - `validator<i>/cometbft/`: `config/config.toml` (`proxy_app` = the mpcd's ABCI Unix
//!   socket, the other validators as persistent peers), `config/genesis.json` (the validator
//!   set, CometBFT's default consensus params, the app's genesis as `app_state`),
//!   `config/node_key.json`, `config/priv_validator_key.json` and
//!   `data/priv_validator_state.json`, as `cometbft init` writes them (mode 0600).
//! - `validator<i>/mpcd/`: `mpcd init --node-id node<i>` (node key and master key, 0600); its
//!   ABCI socket `abci.sock` (0600) is what CometBFT's `proxy_app` names.
//! - `genesis.json`: the app's genesis, byte for byte the `app_state` of every CometBFT
//!   genesis: CometBFT passes that member's raw bytes as InitChain's `app_state_bytes`, and
//!   mpcd refuses an InitChain whose app state differs from its `--genesis` file.
//!
//! Ports from the base port B: validator i uses B+10i (CometBFT p2p), B+10i+1 (CometBFT RPC),
//! B+10i+2 (mpcd p2p), B+10i+3 (mpcd status), B+10i+4 (CometBFT Prometheus).
//!
//! `config.toml` holds CometBFT v0.38's keys (`block_sync`, `[blocksync]`), plus the two keys
//! of earlier versions that tendermint-rs's config type still requires (`fast_sync`,
//! `[fastsync]`); CometBFT ignores keys it does not know.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use rand::RngCore as _;
use seqmpc_abci::chain::genesis::GenesisNode;
use seqmpc_abci::daemon::keys::create_key_file;
use seqmpc_abci::manifest::write_atomic;
use seqmpc_proto::NodeId;
use serde::Serialize;
use tendermint::crypto::ed25519;
use tendermint::{account, node, validator, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::network::setup::{self, LimitOptions};

/// Default base port of a kit (away from the localnet's 26600..).
pub const DEFAULT_BASE_PORT: u16 = 36600;
/// Voting power of every validator.
pub const VALIDATOR_POWER: u32 = 10;
/// Chain id of a kit's chain.
pub const KIT_CHAIN_ID: &str = "seqmpc-cometbft";

/// What `cometbft-init` writes.
#[derive(Clone, Debug)]
pub struct KitOptions {
    /// Directory (must not exist, or be empty).
    pub dir: PathBuf,
    /// Validators (each with its mpcd).
    pub validators: usize,
    /// Base port.
    pub base_port: u16,
    /// The `mpcd` executable (for `mpcd init`, and named in `start.sh`).
    pub mpcd: PathBuf,
    /// Chain id.
    pub chain_id: String,
}

/// The ports of validator `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ValidatorPorts {
    /// CometBFT p2p.
    pub cometbft_p2p: u16,
    /// CometBFT RPC.
    pub cometbft_rpc: u16,
    /// mpcd p2p.
    pub mpcd_p2p: u16,
    /// mpcd status.
    pub mpcd_status: u16,
    /// CometBFT Prometheus.
    pub cometbft_prometheus: u16,
}

impl ValidatorPorts {
    fn new(base: u16, i: usize) -> anyhow::Result<ValidatorPorts> {
        let port = |off: usize| -> anyhow::Result<u16> {
            u16::try_from(usize::from(base) + 10 * i + off)
                .ok()
                .filter(|p| *p > 0)
                .with_context(|| format!("validator {i}: ports past 65535 from base {base}"))
        };
        Ok(ValidatorPorts {
            cometbft_p2p: port(0)?,
            cometbft_rpc: port(1)?,
            mpcd_p2p: port(2)?,
            mpcd_status: port(3)?,
            cometbft_prometheus: port(4)?,
        })
    }
}

/// One validator of a kit, as `cometbft-init` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct KitValidator {
    /// mpcd node id.
    pub node_id: String,
    /// CometBFT home.
    pub cometbft_home: PathBuf,
    /// mpcd home.
    pub mpcd_home: PathBuf,
    /// CometBFT p2p node id (of `node_key.json`).
    pub cometbft_node_id: String,
    /// Consensus address (of `priv_validator_key.json`).
    pub validator_address: String,
    /// Ports.
    pub ports: ValidatorPorts,
}

/// What `cometbft-init` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct Kit {
    /// Directory.
    pub dir: PathBuf,
    /// Chain id.
    pub chain_id: String,
    /// The app's genesis (mpcd's `--genesis`).
    pub app_genesis: PathBuf,
    /// The script that starts every process.
    pub start_script: PathBuf,
    /// The operator account's key (every role).
    pub client_key: PathBuf,
    /// Validators.
    pub validators: Vec<KitValidator>,
}

/// A fresh Ed25519 key in CometBFT's types.
fn fresh_key() -> anyhow::Result<(PrivateKey, PublicKey)> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let sk = ed25519::SigningKey::try_from(&seed[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pk = PublicKey::from(sk.verification_key());
    Ok((PrivateKey::Ed25519(sk), pk))
}

/// A TOML basic string (JSON's escapes are TOML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Creates the kit.
pub fn init(opts: &KitOptions) -> anyhow::Result<Kit> {
    ensure!(
        (1..=crate::network::layout::MAX_NODES).contains(&opts.validators),
        "--validators must be 1..={}, got {}",
        crate::network::layout::MAX_NODES,
        opts.validators
    );
    // Everything that can be refused is checked before anything is written.
    let chain_id: tendermint::chain::Id = opts
        .chain_id
        .parse()
        .map_err(|e| anyhow::anyhow!("chain id {:?}: {e}", opts.chain_id))?;
    let ports = (0..opts.validators)
        .map(|i| ValidatorPorts::new(opts.base_port, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        !opts.dir.exists() || fs::read_dir(&opts.dir)?.next().is_none(),
        "{} exists and is not empty",
        opts.dir.display()
    );
    fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
    let dir = fs::canonicalize(&opts.dir)?;
    let n = opts.validators;

    // mpcd homes and CometBFT keys first: the genesis and the peer lists need all of them.
    let mut nodes = Vec::with_capacity(n);
    let mut cometbft = Vec::with_capacity(n);
    for (i, ports) in ports.into_iter().enumerate() {
        let vdir = dir.join(format!("validator{i}"));
        let mpcd_home = vdir.join("mpcd");
        let cmt_home = vdir.join("cometbft");
        fs::create_dir_all(cmt_home.join("config"))?;
        fs::create_dir_all(cmt_home.join("data"))?;
        let id = format!("node{i}");
        let public_key = setup::mpcd_init(&opts.mpcd, &mpcd_home, &id)?;
        nodes.push(GenesisNode {
            id: NodeId::new(id.clone()).map_err(|e| anyhow::anyhow!("{id}: {e}"))?,
            public_key,
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", ports.mpcd_p2p),
        });

        let (node_sk, node_pk) = fresh_key()?;
        let node_key = tendermint_config::NodeKey { priv_key: node_sk };
        let node_id = node::Id::from(
            node_pk
                .ed25519()
                .context("a CometBFT node key is Ed25519")?,
        );
        let node_key_json = Zeroizing::new(serde_json::to_vec_pretty(&node_key)?);
        write_atomic(&cmt_home.join("config/node_key.json"), &node_key_json)?;

        let (val_sk, val_pk) = fresh_key()?;
        let address = account::Id::from(val_pk);
        let pv = tendermint_config::PrivValidatorKey {
            address,
            pub_key: val_pk,
            priv_key: val_sk,
        };
        let pv_json = Zeroizing::new(serde_json::to_vec_pretty(&pv)?);
        write_atomic(&cmt_home.join("config/priv_validator_key.json"), &pv_json)?;
        write_atomic(
            &cmt_home.join("data/priv_validator_state.json"),
            br#"{"height":"0","round":0,"step":0}"#,
        )?;
        cometbft.push((
            KitValidator {
                node_id: id,
                cometbft_home: cmt_home,
                mpcd_home,
                cometbft_node_id: node_id.to_string(),
                validator_address: address.to_string(),
                ports,
            },
            val_pk,
        ));
    }

    // The app's genesis: mpcd's --genesis file, and byte for byte CometBFT's app_state.
    let client_dir = dir.join("client");
    fs::create_dir_all(&client_dir)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&client_dir, fs::Permissions::from_mode(0o700))?;
    }
    let client_key = client_dir.join("client.key");
    let client = create_key_file(&client_key)?;
    let signer = create_key_file(&client_dir.join("signer.key"))?;
    let app_genesis = setup::localnet_genesis(
        &opts.chain_id,
        nodes,
        &client,
        &signer,
        &LimitOptions::default(),
    );
    let app_state = serde_json::to_string(&app_genesis)?;
    let app_genesis_path = dir.join("genesis.json");
    write_atomic(&app_genesis_path, app_state.as_bytes())?;

    let genesis_time = tendermint::Time::from_unix_timestamp(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        )?,
        0,
    )
    .map_err(|e| anyhow::anyhow!("genesis time: {e}"))?;
    let doc = tendermint::Genesis {
        genesis_time,
        chain_id,
        initial_height: 1,
        consensus_params: default_consensus_params(),
        validators: cometbft
            .iter()
            .map(|(v, pk)| {
                let mut info = validator::Info::new(*pk, VALIDATOR_POWER.into());
                info.name = Some(v.node_id.clone());
                info
            })
            .collect(),
        app_hash: tendermint::AppHash::default(),
        app_state: serde_json::value::RawValue::from_string(app_state)?,
    };
    let mut genesis_json = serde_json::to_vec_pretty(&doc)?;
    genesis_json.push(b'\n');

    let peers: Vec<String> = cometbft
        .iter()
        .map(|(v, _)| format!("{}@127.0.0.1:{}", v.cometbft_node_id, v.ports.cometbft_p2p))
        .collect();
    for (i, (v, _)) in cometbft.iter().enumerate() {
        write_atomic(&v.cometbft_home.join("config/genesis.json"), &genesis_json)?;
        let others: Vec<&str> = peers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.as_str())
            .collect();
        let config = config_toml(v, &others.join(","));
        write_atomic(
            &v.cometbft_home.join("config/config.toml"),
            config.as_bytes(),
        )?;
    }

    let validators: Vec<KitValidator> = cometbft.into_iter().map(|(v, _)| v).collect();
    let start_script = dir.join("start.sh");
    write_atomic(
        &start_script,
        start_sh(&opts.mpcd, &app_genesis_path, &validators).as_bytes(),
    )?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&start_script, fs::Permissions::from_mode(0o755))?;
    }
    Ok(Kit {
        dir,
        chain_id: opts.chain_id.clone(),
        app_genesis: app_genesis_path,
        start_script,
        client_key,
        validators,
    })
}

/// The ABCI socket of an mpcd home.
pub fn abci_socket(mpcd_home: &Path) -> PathBuf {
    mpcd_home.join("abci.sock")
}

/// CometBFT's default consensus params (`types.DefaultConsensusParams` of v0.38), with
/// Ed25519 validators.
fn default_consensus_params() -> tendermint::consensus::Params {
    use tendermint::consensus::params::{AbciParams, ValidatorParams, VersionParams};
    tendermint::consensus::Params {
        block: tendermint::block::Size {
            max_bytes: 22_020_096,
            max_gas: -1,
            time_iota_ms: tendermint::block::Size::default_time_iota_ms(),
        },
        evidence: tendermint::evidence::Params {
            max_age_num_blocks: 100_000,
            max_age_duration: tendermint::evidence::Duration(std::time::Duration::from_secs(
                48 * 3600,
            )),
            max_bytes: 1_048_576,
        },
        validator: ValidatorParams {
            pub_key_types: vec![tendermint::public_key::Algorithm::Ed25519],
        },
        version: Some(VersionParams { app: 0 }),
        abci: AbciParams::default(),
    }
}

/// `config.toml` of validator `v`, whose persistent peers are `peers`.
fn config_toml(v: &KitValidator, peers: &str) -> String {
    let proxy_app = format!("unix://{}", abci_socket(&v.mpcd_home).display());
    let p = v.ports;
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        r#"# CometBFT v0.38 config of {node} (written by `localnet cometbft-init`).
# Keys left out take CometBFT's defaults. `fast_sync` and [fastsync] are for tools built on
# tendermint-rs's config type; CometBFT v0.38 reads `block_sync` and [blocksync].

version = "0.38.17"
proxy_app = {proxy_app}
moniker = {moniker}
block_sync = true
fast_sync = true
db_backend = "goleveldb"
db_dir = "data"
log_level = "info"
log_format = "plain"
genesis_file = "config/genesis.json"
priv_validator_key_file = "config/priv_validator_key.json"
priv_validator_state_file = "data/priv_validator_state.json"
priv_validator_laddr = ""
node_key_file = "config/node_key.json"
abci = "socket"
filter_peers = false

[rpc]
laddr = "tcp://127.0.0.1:{rpc}"
cors_allowed_origins = []
cors_allowed_methods = ["HEAD", "GET", "POST"]
cors_allowed_headers = ["Origin", "Accept", "Content-Type", "X-Requested-With", "X-Server-Time"]
grpc_laddr = ""
grpc_max_open_connections = 900
unsafe = false
max_open_connections = 900
max_subscription_clients = 100
max_subscriptions_per_client = 5
timeout_broadcast_tx_commit = "10s"
max_body_bytes = 1000000
max_header_bytes = 1048576
tls_cert_file = ""
tls_key_file = ""
pprof_laddr = ""

[p2p]
laddr = "tcp://127.0.0.1:{p2p}"
external_address = ""
seeds = ""
persistent_peers = {peers}
upnp = false
addr_book_file = "config/addrbook.json"
# One machine: peers share 127.0.0.1.
addr_book_strict = false
allow_duplicate_ip = true
max_num_inbound_peers = 40
max_num_outbound_peers = 10
unconditional_peer_ids = ""
persistent_peers_max_dial_period = "0s"
flush_throttle_timeout = "100ms"
max_packet_msg_payload_size = 1024
send_rate = 5120000
recv_rate = 5120000
pex = true
seed_mode = false
private_peer_ids = ""
handshake_timeout = "20s"
dial_timeout = "3s"

[mempool]
type = "flood"
recheck = true
broadcast = true
wal_dir = ""
size = 5000
max_txs_bytes = 1073741824
cache_size = 10000
keep-invalid-txs-in-cache = false
max_tx_bytes = 1048576
max_batch_bytes = 0

[statesync]
enable = false
rpc_servers = ""
trust_height = 0
trust_hash = ""
trust_period = "168h0m0s"
discovery_time = "15s"
temp_dir = ""

[blocksync]
version = "v0"

[fastsync]
version = "v0"

[consensus]
wal_file = "data/cs.wal/wal"
timeout_propose = "3s"
timeout_propose_delta = "500ms"
timeout_prevote = "1s"
timeout_prevote_delta = "500ms"
timeout_precommit = "1s"
timeout_precommit_delta = "500ms"
timeout_commit = "1s"
double_sign_check_height = 0
skip_timeout_commit = false
create_empty_blocks = true
create_empty_blocks_interval = "0s"
peer_gossip_sleep_duration = "100ms"
peer_query_maj23_sleep_duration = "2s"

[storage]
discard_abci_responses = false

[tx_index]
indexer = "kv"

[instrumentation]
prometheus = true
prometheus_listen_addr = "127.0.0.1:{prom}"
max_open_connections = 3
namespace = "cometbft"
"#,
        node = v.node_id,
        proxy_app = q(&proxy_app),
        moniker = q(&v.node_id),
        rpc = p.cometbft_rpc,
        p2p = p.cometbft_p2p,
        peers = q(peers),
        prom = p.cometbft_prometheus,
    );
    s
}

/// A POSIX shell word.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// mpcd's `--backup-submit-ms` under the kit's 1 s `timeout_commit`: about two blocks, so
/// that a FROST signer other than the aggregator submits only when the aggregator's signature
/// is really late (docs/deployment.md).
const BACKUP_SUBMIT_MS: u64 = 2_000;

/// `start.sh`: every mpcd, then every CometBFT node, stopped together on Ctrl-C.
fn start_sh(mpcd: &Path, genesis: &Path, validators: &[KitValidator]) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
# Starts this kit's validators: each mpcd, then its CometBFT node (written by
# `localnet cometbft-init`). Needs `cometbft` v0.38 on PATH. Logs go to logs/. Ctrl-C stops all.
set -eu
cd "$(dirname "$0")"
if ! command -v cometbft >/dev/null 2>&1; then
    echo "start.sh: no cometbft binary on PATH (CometBFT v0.38: https://docs.cometbft.com/v0.38/guides/install)" >&2
    exit 127
fi
mkdir -p logs
pids=""
trap 'kill $pids 2>/dev/null; wait' INT TERM EXIT
"#,
    );
    for (i, v) in validators.iter().enumerate() {
        let sock = abci_socket(&v.mpcd_home);
        // A socket left by an earlier run would let CometBFT start before mpcd listens.
        let _ = write!(
            s,
            "rm -f {sock_word}\n{mpcd} start --home {home} --genesis {genesis} --abci-listen {abci} \
             --p2p-listen /ip4/127.0.0.1/tcp/{p2p} --status-listen 127.0.0.1:{status} \
             --rpc http://127.0.0.1:{rpc} --backup-submit-ms {backup} \
             > logs/{id}-mpcd.log 2>&1 &\nmpcd{i}=$!\npids=\"$pids $!\"\n",
            sock_word = sh(&sock.to_string_lossy()),
            mpcd = sh(&mpcd.to_string_lossy()),
            home = sh(&v.mpcd_home.to_string_lossy()),
            genesis = sh(&genesis.to_string_lossy()),
            abci = sh(&format!("unix://{}", sock.display())),
            p2p = v.ports.mpcd_p2p,
            status = v.ports.mpcd_status,
            rpc = v.ports.cometbft_rpc,
            backup = BACKUP_SUBMIT_MS,
            id = v.node_id,
        );
    }
    s.push_str("# CometBFT connects to each mpcd's ABCI socket once it exists.\n");
    for (i, v) in validators.iter().enumerate() {
        let sock = abci_socket(&v.mpcd_home);
        let _ = write!(
            s,
            "while [ ! -S {sock} ]; do\n    kill -0 \"$mpcd{i}\" 2>/dev/null || \
             {{ echo \"start.sh: mpcd of {id} exited; see logs/{id}-mpcd.log\" >&2; exit 1; }}\n    \
             sleep 0.1\ndone\n\
             cometbft start --home {home} > logs/{id}-cometbft.log 2>&1 &\npids=\"$pids $!\"\n",
            sock = sh(&sock.to_string_lossy()),
            home = sh(&v.cometbft_home.to_string_lossy()),
            id = v.node_id,
        );
    }
    s.push_str("echo \"started: CometBFT RPC at http://127.0.0.1:");
    if let Some(v) = validators.first() {
        let _ = write!(s, "{}", v.ports.cometbft_rpc);
    }
    s.push_str(" (and the other validators'); logs in logs/\"\nwait\n");
    s
}
