//! Faulty networks over the real localnet (issue 5): every node's outgoing p2p messages are
//! duplicated, delayed at random (so they overtake each other), dropped and corrupted by the
//! test-only fault layer (`SEQMPC_FAULTS=net-*`, cargo feature `fault-injection`). With
//! duplicates and reordering alone every session completes (duplicates are dropped before the
//! protocols see them; early messages wait for their session). With loss and corruption on
//! top, every session still ends, DONE (verified) or ERROR by its deadline, none stays
//! PENDING, no node crashes or diverges, and once the links are clean the keys sign again.
//!
//! A partition (`SEQMPC_FAULTS=partition-file=<path>`): while the file exists node3 is cut off
//! from the p2p network and from the chain; 3-of-4 keys go on signing among the live nodes,
//! and once the file is gone node3 catches up by itself and signs again.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use seqmpc_e2e::{verify, wait_for, Localnet, Submitter};
use seqmpc_module::session::codec::coordinator;
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use serde_json::Value;

const PORT_BASE: u16 = 19400;
const PARTITION_PORT_BASE: u16 = 19700;
const RESEND_PORT_BASE: u16 = 20400;

/// Held while a test's localnet starts: the mpcd processes inherit this process' environment,
/// which a test sets `SEQMPC_FAULTS` in, and the tests of this file run in parallel.
static ENV: Mutex<()> = Mutex::new(());

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
    let env = ENV.lock().unwrap_or_else(PoisonError::into_inner);
    std::env::set_var("SEQMPC_FAULTS", "net-dup,net-delay-ms=40");
    let net = Localnet::start(&dir, 4, 3, 100, PORT_BASE);
    std::env::remove_var("SEQMPC_FAULTS");
    drop(env);
    let net = net.unwrap();

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

/// Whether `node` is among the sign result's `signers`.
fn signed_by(s: &Value, node: &str) -> bool {
    s["signers"].as_array().unwrap().iter().any(|n| n == node)
}

/// One sign request with `--wait`: DONE and verified; returns the result.
fn sign_one(net: &Localnet, key: &str, scheme: &str, pk: &str, rid: &str) -> Value {
    let msg = format!("message of {rid}");
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            key,
            "--request-id",
            rid,
            "--message",
            &hex::encode(&msg),
            "--wait",
        ])
        .unwrap_or_else(|e| panic!("{rid}: {e}; nodes: {:?}", net.query("/nodes")));
    assert_eq!(s["status"], "DONE", "{s}");
    check(scheme, pk, msg.as_bytes(), s["signature"].as_str().unwrap());
    s
}

/// node3's liveness on chain (`/nodes`).
fn node3_live(net: &Localnet) -> Option<bool> {
    let nodes = net.query("/nodes").ok()?;
    let n3 = nodes.as_array()?.iter().find(|n| n["id"] == "node3")?;
    n3["live"].as_bool()
}

/// Whether the dev sequencer has node3's app up (it receives every block).
fn node3_app_up(net: &Localnet) -> bool {
    net.sequencer_status()
        .ok()
        .and_then(|st| st["apps_up"].as_array().cloned())
        .is_some_and(|up| up.iter().any(|a| a == "node3"))
}

#[test]
fn n4t3_localnet__should_sign_among_live_nodes_while_node3_is_partitioned_and_heal() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let cut = tmp.path().join("node3.partition");
    // Liveness window 50 blocks (5 s at 100 ms blocks, 2.5 heartbeats): node3 stops counting
    // soon after it is cut off. Deadline 40 blocks, so the keygen that needs node3 ends soon.
    let extra = [
        "--liveness-window-blocks",
        "50",
        "--session-deadline-blocks",
        "40",
    ];
    let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
    // Not the other test's fault list (it sets SEQMPC_FAULTS while its localnet starts).
    let env = ENV.lock().unwrap_or_else(PoisonError::into_inner);
    let net = Localnet::start_with(&dir, 4, 3, 100, PARTITION_PORT_BASE, &extra);
    drop(env);
    let net = net.unwrap();
    net.kill_node(3).unwrap();
    let fault = format!("partition-file={}", cut.display());
    let node3 = net
        .restart_node(3, &[], &[("SEQMPC_FAULTS", &fault)])
        .unwrap();

    // 1. Connected: both 3-of-4 keys READY over all four nodes, and they sign.
    let mut keys = Vec::new();
    for (id, scheme) in [("ed", "frost-ed25519"), ("tr", "frost-secp256k1-tr")] {
        let k = keygen(&net, id, scheme).unwrap();
        assert_eq!(k["status"], "READY", "{k}");
        assert_eq!(k["parties"].as_array().unwrap().len(), 4, "{k}");
        let pk = k["public_key"].as_str().unwrap().to_owned();
        sign_one(&net, id, scheme, &pk, &format!("before-{id}"));
        keys.push((id, scheme, pk));
    }
    assert!(
        wait_for(Duration::from_secs(20), || node3_live(&net).filter(|l| *l)).is_some(),
        "node3 not live while connected"
    );
    eprintln!(
        "[{:5.1} s] keys READY and signing; partitioning node3",
        t0.elapsed().as_secs_f64()
    );

    // 2. Partitioned: the sequencer loses node3's app, the chain stops counting it live.
    std::fs::write(&cut, b"").unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || (!node3_app_up(&net))
            .then_some(()))
        .is_some(),
        "the sequencer still drives node3's app"
    );
    assert!(
        wait_for(Duration::from_secs(30), || node3_live(&net).filter(|l| !*l)).is_some(),
        "node3 still counted live while partitioned"
    );
    let frozen = net.node_get(3, "/status").unwrap()["chain_height"]
        .as_u64()
        .unwrap();
    eprintln!(
        "[{:5.1} s] node3 not live (its chain stopped at {frozen})",
        t0.elapsed().as_secs_f64()
    );

    //    3-of-4 signing goes on among node0..node2.
    let mut during = 0;
    for (id, scheme, pk) in &keys {
        for i in 0..4 {
            let s = sign_one(&net, id, scheme, pk, &format!("cut-{id}-{i}"));
            assert!(
                !signed_by(&s, "node3"),
                "the partitioned node3 was chosen: {s}"
            );
            during += 1;
        }
    }
    //    Keygens that need node3 end ERROR by their deadline, node3 among the silent. Their
    //    coordinators' KeyGenPrepare to node3 is dropped at node3's p2p layer.
    let all4 = ["all4-0", "all4-1", "all4-2"];
    let mut sub = Submitter::new(&net, net.client_key().unwrap()).unwrap();
    for id in all4 {
        sub.submit(TxMsg::KeyGen {
            key_id: KeyId::new(id).unwrap(),
            scheme: Scheme::FrostEd25519,
            threshold: 3,
            parties: (0..4)
                .map(|i| NodeId::new(format!("node{i}")).unwrap())
                .collect(),
        })
        .unwrap();
    }
    let mut reason = String::new();
    let mut prepares_to_node3 = 0;
    for id in all4 {
        let k = wait_for(Duration::from_secs(30), || {
            let k = net.query(&format!("/key/{id}")).ok()?;
            (k["status"] != "PENDING").then_some(k)
        })
        .unwrap_or_else(|| panic!("{id} still PENDING"));
        assert_eq!(
            k["status"], "ERROR",
            "a keygen that needs the partitioned node3: {k}"
        );
        reason = k["error"].as_str().unwrap().to_owned();
        assert!(
            reason.contains("deadline") && reason.contains("node3"),
            "{k}"
        );
        let session = SessionId::try_from(k["session"].as_str().unwrap().to_owned()).unwrap();
        let parties: Vec<NodeId> = serde_json::from_value(k["parties"].clone()).unwrap();
        if coordinator(&session, &parties).unwrap().as_str() != "node3" {
            prepares_to_node3 += 1;
        }
    }
    let st3 = net.node_get(3, "/status").unwrap();
    assert_eq!(
        st3["chain_height"].as_u64().unwrap(),
        frozen,
        "node3 got blocks while cut off"
    );
    assert!(
        net.rpc.height().unwrap() > frozen + 40,
        "the chain stood still"
    );
    eprintln!(
        "[{:5.1} s] partitioned: {during} signatures DONE without node3; 3 keygens over all 4 \
         ({prepares_to_node3} coordinated by another node): {reason}",
        t0.elapsed().as_secs_f64(),
    );
    let log3 = || std::fs::read_to_string(net.info["nodes"][3]["log"].as_str().unwrap()).unwrap();
    if prepares_to_node3 > 0 {
        assert!(
            log3().contains("partitioned: dropped messages to and from peers"),
            "{prepares_to_node3} coordinator(s) sent node3 a KeyGenPrepare: none dropped?"
        );
    }

    // 3. Healed: node3 catches up (replayed blocks), is live again, and signs again. The
    //    keygens' blocks are older than the admission policy's fresh-block bound first: it
    //    passes a block that young whatever the chain's height.
    std::thread::sleep(Duration::from_millis(
        seqmpc_module::session::admission::FRESH_BLOCK_MS,
    ));
    std::fs::remove_file(&cut).unwrap();
    let caught_up = wait_for(Duration::from_secs(30), || {
        let h3 = net.node_get(3, "/status").ok()?["chain_height"].as_u64()?;
        (node3_app_up(&net) && h3 + 2 >= net.rpc.height().ok()?).then_some(h3)
    });
    let apps = || net.sequencer_status().ok().map(|st| st["apps"].clone());
    assert!(
        caught_up.is_some(),
        "node3 did not catch up after the partition healed: node3 {:?}, sequencer apps {:?}, height {:?}",
        net.node_get(3, "/status").map(|st| st["chain_height"].clone()),
        apps(),
        net.rpc.height()
    );
    assert!(
        wait_for(Duration::from_secs(20), || node3_live(&net).filter(|l| *l)).is_some(),
        "node3 not live again after the partition healed: {:?}",
        net.query("/nodes")
    );
    eprintln!(
        "[{:5.1} s] healed: node3 caught up and live",
        t0.elapsed().as_secs_f64()
    );
    //    The replayed blocks carried the keygens that ended while node3 was away: none of them
    //    started again on node3 (no session, no PENDING record, no message to peers).
    let log = log3();
    let skipped = log
        .lines()
        .filter(|l| l.contains("already ended: skipped") && l.contains("keygen all4-"))
        .count();
    assert_eq!(skipped, all4.len(), "replayed keygens skipped by node3");
    assert!(
        !log.lines()
            .any(|l| l.contains("keygen session opened") && l.contains("all4-")),
        "node3 opened a keygen session that ended while it was away"
    );
    let mut after = 0;
    for (id, scheme, pk) in &keys {
        let with_node3 = (0..12).any(|i| {
            let s = sign_one(&net, id, scheme, pk, &format!("healed-{id}-{i}"));
            after += 1;
            signed_by(&s, "node3")
        });
        assert!(
            with_node3,
            "{scheme}: node3 never signed after the partition healed"
        );
    }

    // Nothing left PENDING, on chain or in any store; no node diverged, no panic.
    for k in net.query("/keys").unwrap().as_array().unwrap() {
        assert_ne!(k["status"], "PENDING", "chain key PENDING: {k}");
    }
    for i in 0..4 {
        for r in net.node_get(i, "/keys").unwrap().as_array().unwrap() {
            assert_ne!(
                r["status"], "PENDING",
                "node{i} holds a PENDING record: {r}"
            );
        }
    }
    net.check_settled(4).unwrap();
    for i in 0..4 {
        let log = std::fs::read_to_string(net.info["nodes"][i]["log"].as_str().unwrap()).unwrap();
        assert!(!log.contains("panicked"), "node{i} panicked");
    }
    eprintln!(
        "[{:5.1} s] node3 signs again ({after} signatures DONE after the heal); settled",
        t0.elapsed().as_secs_f64()
    );
    net.stop().unwrap();
    drop(node3);
}

/// node1's submitter loses its first two result txs after signing them, as a mempool that
/// accepted a tx and then dropped it would (`SEQMPC_FAULTS=lose-result-txs=2`): its keygen
/// report, and that report's first copy sent again. The submitter follows each result tx to a
/// block and sends a lost one again, so the keygen needing node1's report becomes READY after
/// the second resend (about 18 s), before its deadline (300 blocks, 30 s or more), where it
/// would end ERROR without the resend; node1 then aggregates a signature that lands.
#[test]
fn n4t3_localnet__should_send_again_the_result_txs_a_mempool_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let extra: Vec<&std::ffi::OsStr> = ["--session-deadline-blocks", "300"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    let env = ENV.lock().unwrap_or_else(PoisonError::into_inner);
    let net = Localnet::start_with(&dir, 4, 3, 100, RESEND_PORT_BASE, &extra);
    drop(env);
    let net = net.unwrap();
    net.kill_node(1).unwrap();
    let _node1 = net
        .restart_node(1, &[], &[("SEQMPC_FAULTS", "lose-result-txs=2")])
        .unwrap();

    let t = Instant::now();
    let k = keygen(&net, "resent", "frost-ed25519").unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    let keygen_secs = t.elapsed().as_secs_f64();
    let pk = k["public_key"].as_str().unwrap().to_owned();
    let mut aggregated = false;
    // node1 aggregates (the lowest signer id) when node0 is not a signer: 1 in 4.
    for i in 0..24 {
        let rid = format!("resent-{i}");
        let msg = format!("lost and sent again {i}");
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "resent",
                "--request-id",
                &rid,
                "--message",
                &hex::encode(&msg),
                "--wait",
            ])
            .unwrap();
        assert_eq!(s["status"], "DONE", "{s}");
        check(
            "frost-ed25519",
            &pk,
            msg.as_bytes(),
            s["signature"].as_str().unwrap(),
        );
        if s["signers"][0] == "node1" {
            aggregated = true;
            break;
        }
    }
    assert!(
        aggregated,
        "node1 never aggregated a signature in 24 requests"
    );
    let log = std::fs::read_to_string(net.info["nodes"][1]["log"].as_str().unwrap()).unwrap();
    assert_eq!(
        log.matches("losing a signed result tx").count(),
        2,
        "the fault did not fire twice"
    );
    assert!(
        log.matches("sending it again").count() >= 2,
        "node1 never sent a lost result tx again"
    );
    eprintln!("keygen READY in {keygen_secs:.1} s, node1's report lost twice and sent again");
    net.check_settled(4).unwrap();
    net.stop().unwrap();
}
