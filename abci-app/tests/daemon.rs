//! The node daemon in-process (issue 12: "mpcd as one `Daemon` built from parts, testable
//! without processes"): a real home, key store and state files on disk, real ABCI over its
//! socket (tendermint-abci's client), the status endpoint over HTTP, and a stop that ends
//! `Daemon::run`.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use seqmpc_abci::abci::App;
use seqmpc_abci::chain::genesis::{Genesis, GenesisAccount, GenesisNode, Limits, Role};
use seqmpc_abci::daemon::home::{MASTER_KEY, NODE_KEY};
use seqmpc_abci::daemon::keys::create_key_file;
use seqmpc_abci::daemon::run::{Daemon, DaemonConfig, Exit, StartOptions};
use seqmpc_module::store::MasterKey;
use seqmpc_proto::NodeId;
use serde_json::Value;
use tendermint_abci::ClientBuilder;
use tendermint_proto::v0_38::abci as pb;

/// A node home as `mpcd init` makes it, and a one-node genesis naming its key.
fn home_and_genesis(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let home = dir.join("node0");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(MasterKey::create(&home.join(MASTER_KEY)).unwrap());
    let key = create_key_file(&home.join(NODE_KEY)).unwrap();
    let genesis = Genesis {
        chain_id: "daemon-test".into(),
        nodes: vec![GenesisNode {
            id: NodeId::new("node0").unwrap(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
        }],
        accounts: vec![GenesisAccount {
            name: "client".into(),
            public_key: hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
                    .verifying_key()
                    .to_bytes(),
            ),
            roles: BTreeSet::from([Role::Keygen, Role::Sign]),
        }],
        limits: Limits::default(),
        governance: None,
    };
    let bytes = serde_json::to_vec(&genesis).unwrap();
    let path = dir.join("genesis.json");
    std::fs::write(&path, &bytes).unwrap();
    (home, path, bytes)
}

/// Any free port for every listener; no chain RPC (results stay queued, which these tests do
/// not need); no background prime generation or heartbeat.
fn config(home: &Path, genesis: std::path::PathBuf) -> DaemonConfig {
    DaemonConfig {
        home: home.to_owned(),
        genesis,
        abci_listen: "127.0.0.1:0".into(),
        p2p_listen: "/ip4/127.0.0.1/tcp/0".into(),
        status_listen: "127.0.0.1:0".into(),
        rpc: "http://127.0.0.1:9".into(),
        options: StartOptions {
            cggmp_primes_at_start: false,
            cggmp_prime_pool: 0,
            heartbeat_secs: 0,
            ..StartOptions::defaults()
        },
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

#[test]
fn daemon__should_serve_abci_and_status_in_process_and_stop_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (home, genesis_path, genesis_bytes) = home_and_genesis(dir.path());
    let mut config = config(&home, genesis_path);
    config.options.min_retain_blocks = 3;
    let daemon = Daemon::start(&config).unwrap();
    let abci = daemon.abci_addr().expect("a TCP ABCI address");
    let status = daemon.status_addr().expect("a status address");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = std::thread::spawn(move || {
        daemon.run(async {
            let _ = stop_rx.await;
        })
    });

    // A consensus engine's calls, over the ABCI socket.
    let mut c = ClientBuilder::default().connect(abci.to_string()).unwrap();
    assert_eq!(
        c.info(pb::RequestInfo::default())
            .unwrap()
            .last_block_height,
        0
    );
    c.init_chain(pb::RequestInitChain {
        chain_id: "daemon-test".into(),
        app_state_bytes: genesis_bytes.clone().into(),
        ..Default::default()
    })
    .unwrap();
    let mut retain = Vec::new();
    for h in 1..=6i64 {
        c.finalize_block(pb::RequestFinalizeBlock {
            height: h,
            ..Default::default()
        })
        .unwrap();
        retain.push(c.commit().unwrap().retain_height);
    }
    // `min_retain_blocks` reached the app: the last 3 blocks, but never fewer than the
    // genesis sign retention (6000 by default), so nothing may be pruned yet.
    assert_eq!(retain, vec![0; 6]);
    let info = c.info(pb::RequestInfo::default()).unwrap();
    assert_eq!(info.last_block_height, 6);

    // The status endpoint sees the same node and height.
    let st = http_get(status, "/status");
    assert_eq!(st["node_id"], "node0", "{st}");
    assert_eq!(st["chain_height"], 6, "{st}");

    // Stop: `run` returns, and the committed state is on disk for the next start.
    stop_tx.send(()).unwrap();
    assert_eq!(running.join().unwrap().unwrap(), Exit::Stopped);
    let committed = App::read_committed(&home, &genesis_bytes).unwrap().unwrap();
    assert_eq!(committed.height, 6);
    assert_eq!(
        hex::decode(&committed.app_hash).unwrap(),
        info.last_block_app_hash.to_vec()
    );
}

#[test]
fn daemon__should_refuse_a_home_others_can_read_and_name_the_part_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (home, genesis_path, _) = home_and_genesis(dir.path());
    let mut config = config(&home, genesis_path);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = Daemon::start(&config).err().unwrap().to_string();
    assert!(err.contains("chmod 700"), "{err}");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    config.p2p_listen = "not a multiaddr".into();
    let err = format!("{:#}", Daemon::start(&config).err().unwrap());
    assert!(err.contains("starting p2p"), "{err}");
}
