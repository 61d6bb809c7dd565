//! End to end: a node's key rotated while it runs, and a node removed (issue 14, item 5). A
//! 4-node localnet: `mpcd new-node-key` makes node1's next key, `mpcctl node-rotate-key`
//! commits the rotation (the localnet's governance: the client account, after its delay), node1
//! restarts itself under the new key, and a 3-of-3 key with node1 signs; node1 cannot be
//! removed while it holds a share, node3 (no share) is removed and signing goes on.
//! Ports: base 22400 (RPC 22457, nodes 22500..22542), apart from the other e2e tests.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use seqmpc_e2e::{bin_dir, wait_for, Localnet};
use serde_json::Value;

fn sign(net: &Localnet, key_id: &str, pk: &str, msg: &[u8]) -> Value {
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            key_id,
            "--message",
            &hex::encode(msg),
            "--wait",
        ])
        .unwrap();
    assert_eq!(s["status"], "DONE", "{s}");
    seqmpc_e2e::verify::ed25519(pk, msg, s["signature"].as_str().unwrap()).unwrap();
    s
}

/// Runs `mpcd args...`.
fn mpcd(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(bin_dir().join("mpcd"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `mpcd args...`, which must succeed, and returns the JSON it printed.
fn mpcd_json(args: &[&std::ffi::OsStr]) -> Value {
    let out = mpcd(args);
    assert!(
        out.status.success(),
        "mpcd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn registered(net: &Localnet, id: &str) -> Option<Value> {
    let nodes = net.mpcctl_json(&["nodes"]).unwrap();
    nodes.as_array()?.iter().find(|n| n["id"] == id).cloned()
}

#[test]
fn node_lifecycle__should_rotate_a_running_nodes_key_and_remove_a_node_without_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Localnet::start(&dir, 4, 3, 100, 22400).unwrap();
    let home1 = PathBuf::from(net.info["nodes"][1]["home"].as_str().unwrap());
    let old_key = registered(&net, "node1").unwrap()["public_key"].clone();

    // node1's next key, made beside its current one.
    let new_node_key = [
        "new-node-key".as_ref(),
        "--home".as_ref(),
        home1.as_os_str(),
    ];
    let next = mpcd_json(&new_node_key);
    let new_key = next["public_key"].as_str().unwrap().to_owned();
    assert_ne!(old_key, new_key.as_str());
    // A second one is refused while the first waits.
    assert!(!mpcd(&new_node_key).status.success());

    // The rotation, through the chain.
    let r = net
        .mpcctl_json(&[
            "node-rotate-key",
            "--node-id",
            "node1",
            "--public-key",
            &new_key,
            "--wait",
        ])
        .unwrap();
    assert_eq!(r["public_key"], new_key.as_str(), "{r}");
    // node1 restarts itself under the new key: node.key is the new key, node.key.next gone,
    // and it is connected to its peers again.
    wait_for(Duration::from_secs(60), || {
        let st = net.node_get(1, "/status").ok()?;
        (!home1.join("node.key.next").exists() && st["connected_peers"].as_array()?.len() == 3)
            .then_some(())
    })
    .expect("node1 back under its new key, connected to its 3 peers");
    let log = std::fs::read_to_string(net.info["nodes"][1]["log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("restarting with it"),
        "node1's log does not show the restart"
    );

    // A 3-of-3 key whose committee includes node1: node1 must take part, under its new key
    // (its p2p messages and its keygen report).
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "k",
            "--scheme",
            "frost-ed25519",
            "--threshold",
            "3",
            "--parties",
            "node0,node1,node2",
            "--wait",
        ])
        .unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    let pk = k["public_key"].as_str().unwrap().to_owned();
    sign(&net, "k", &pk, b"signed after node1's key rotation");

    // node1 holds a share: it cannot be removed.
    let err = net
        .mpcctl_json(&["node-remove", "--node-id", "node1"])
        .expect_err("removing a node that holds a share must fail");
    assert!(err.contains("holds shares of keys k"), "{err}");
    // node3 holds none: removed; its peers drop it; signing goes on.
    let r = net
        .mpcctl_json(&["node-remove", "--node-id", "node3", "--wait"])
        .unwrap();
    assert_eq!(r["status"], "REMOVED", "{r}");
    assert!(registered(&net, "node3").is_none());
    wait_for(Duration::from_secs(30), || {
        let st = net.node_get(0, "/status").ok()?;
        let peers = st["connected_peers"].as_array()?.clone();
        (!peers.iter().any(|p| p == "node3")).then_some(())
    })
    .expect("node0 still connected to the removed node3");
    sign(&net, "k", &pk, b"signed after node3's removal");
    let genesis = net.info["genesis"].as_str().unwrap().to_owned();
    net.stop().unwrap();

    // Offline, node1 still knows who it is: its new key is not in the genesis, the committed
    // state it keeps says it is node1's.
    let backup_file = tmp.path().join("node1.backup");
    let b = mpcd_json(&[
        "backup".as_ref(),
        "--home".as_ref(),
        home1.as_os_str(),
        "--genesis".as_ref(),
        genesis.as_ref(),
        "--out".as_ref(),
        backup_file.as_os_str(),
    ]);
    assert_eq!(b["node_id"], "node1", "{b}");
}
