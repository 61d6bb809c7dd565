//! Faulty networks over the real localnet (issue 5): every node's outgoing p2p messages are
//! duplicated, delayed at random (so they overtake each other), dropped and corrupted by the
//! test-only fault layer (`SEQMPC_FAULTS=net-*`, cargo feature `fault-injection`). With
//! duplicates and reordering alone every session completes (duplicates are dropped before the
//! protocols see them; early messages wait for their session). With loss and corruption on
//! top, every session still ends, DONE (verified) or ERROR by its deadline, none stays
//! PENDING, no node crashes or diverges, and once the links are clean the keys sign again.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use seqmpc_e2e::{verify, wait_for, Localnet, Submitter};
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::{KeyId, RequestId};
use serde_json::Value;

const PORT_BASE: u16 = 19400;

fn keygen(net: &Localnet, id: &str, scheme: &str) -> Result<Value, String> {
    net.mpcctl_json(&[
        "keygen",
        "--key-id",
        id,
        "--scheme",
        scheme,
        "--threshold",
        "3",
        "--wait",
    ])
}

fn check(scheme: &str, pk: &str, msg: &[u8], sig: &str) {
    match scheme {
        "frost-ed25519" => verify::ed25519(pk, msg, sig),
        _ => verify::bip340(pk, msg, sig),
    }
    .unwrap_or_else(|e| panic!("{scheme}: {e:#}"));
}

/// Submits `n` sign requests of `key` at once and waits until each leaves PENDING; returns
/// (done, error). Every DONE signature is verified.
fn sign_burst(
    net: &Localnet,
    key: &str,
    scheme: &str,
    pk: &str,
    tag: &str,
    n: usize,
) -> (usize, usize) {
    let mut sub = Submitter::new(net, net.client_key().unwrap()).unwrap();
    let ids: Vec<(String, String)> = (0..n)
        .map(|i| {
            let rid = format!("{tag}-{key}-{i}");
            let msg = format!("{tag} message {i}");
            sub.submit(TxMsg::KeySign {
                key_id: KeyId::new(key).unwrap(),
                request_id: RequestId::new(&rid).unwrap(),
                message: msg.as_bytes().to_vec(),
                prehashed: false,
            })
            .unwrap();
            (rid, msg)
        })
        .collect();
    let (mut done, mut error) = (0, 0);
    for (rid, msg) in ids {
        let mut last = Err(String::new());
        let s = wait_for(Duration::from_secs(60), || {
            last = net.mpcctl_json(&["sign-status", "--request-id", &rid]);
            let s = last.clone().ok()?;
            (s["status"] != "PENDING").then_some(s)
        })
        .unwrap_or_else(|| panic!("{rid} did not end within 60 s: {last:?}"));
        if s["status"] == "DONE" {
            check(scheme, pk, msg.as_bytes(), s["signature"].as_str().unwrap());
            done += 1;
        } else {
            assert_eq!(s["status"], "ERROR", "{s}");
            error += 1;
        }
    }
    (done, error)
}

#[test]
fn n4_localnet__should_end_every_session_over_duplicating_reordering_lossy_links() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    // Every mpcd inherits the fault list from localnet's environment.
    std::env::set_var("SEQMPC_FAULTS", "net-dup,net-delay-ms=40");
    let net = Localnet::start(&dir, 4, 3, 100, PORT_BASE).unwrap();
    std::env::remove_var("SEQMPC_FAULTS");

    // 1. Duplicated and reordered: everything completes.
    let mut keys = Vec::new();
    for (id, scheme) in [("ed", "frost-ed25519"), ("tr", "frost-secp256k1-tr")] {
        let k = keygen(&net, id, scheme).unwrap();
        assert_eq!(k["status"], "READY", "{k}");
        let pk = k["public_key"].as_str().unwrap().to_owned();
        let (done, error) = sign_burst(&net, id, scheme, &pk, "dup", 8);
        assert_eq!((done, error), (8, 0), "{scheme}");
        eprintln!("dup+reorder   {scheme:20} keygen READY, 8 signatures DONE");
        keys.push((id, scheme, pk));
    }

    // 2. Lossy and corrupting on top: node1 and node2 restart with the harsher list (every
    //    session of a 3-of-4 key has at least one of them).
    let harsh = "net-dup,net-delay-ms=40,net-drop-pct=10,net-corrupt-pct=5";
    let mut restarted = Vec::new();
    for i in [1, 2] {
        net.kill_node(i).unwrap();
        restarted.push(
            net.restart_node(i, &[], &[("SEQMPC_FAULTS", harsh)])
                .unwrap(),
        );
    }
    let mut outcomes = Vec::new();
    for (id, scheme, pk) in &keys {
        let (done, error) = sign_burst(&net, id, scheme, pk, "lossy", 10);
        eprintln!("lossy+corrupt {scheme:20} 10 signs: {done} DONE (verified), {error} ERROR");
        outcomes.push((done, error));
    }
    for (i, scheme) in ["frost-ed25519", "frost-secp256k1-tr"].iter().enumerate() {
        let id = format!("lossy-key-{i}");
        let status = match keygen(&net, &id, scheme) {
            Ok(k) => k["status"].clone(),
            Err(_) => net.mpcctl_json(&["key", "--key-id", &id]).unwrap()["status"].clone(),
        };
        eprintln!("lossy+corrupt {scheme:20} keygen: {status}");
        assert!(status == "READY" || status == "ERROR", "{id}: {status}");
    }

    // 3. Clean links again (node0 and node3 keep duplicating and reordering): the keys sign,
    //    and every node agrees with the chain.
    drop(restarted);
    let mut clean = Vec::new();
    for i in [1, 2] {
        clean.push(net.restart_node(i, &[], &[]).unwrap());
    }
    for (id, scheme, pk) in &keys {
        let (done, error) = sign_burst(&net, id, scheme, pk, "clean", 4);
        assert_eq!((done, error), (4, 0), "{scheme} after the links healed");
    }
    net.check_settled(4).unwrap();
    net.stop().unwrap();
    drop(clean);
}
