//! End to end over the real localnet: 4 mpcd processes + the dev sequencer, real ABCI sockets,
//! real libp2p, real LevelDB files. Ports are fixed per test (base 16600, below the ephemeral range) so runs are
//! reproducible; the test refuses to start if they are taken.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use seqmpc_e2e::{wait_for, Localnet, Submitter};
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::{KeyId, RequestId, Scheme};
use serde_json::Value;

fn verify(public_key: &str, message: &[u8], signature: &str) {
    seqmpc_e2e::verify::ed25519(public_key, message, signature).unwrap();
}

fn verify_bip340(x_only_key: &str, message: &[u8], signature: &str) {
    seqmpc_e2e::verify::bip340(x_only_key, message, signature).unwrap();
}

fn verify_ecdsa(public_key: &str, digest: [u8; 32], signature: &str, recovery_id: &Value) {
    seqmpc_e2e::verify::ecdsa(public_key, digest, signature, recovery_id).unwrap();
}

fn expect_err(net: &Localnet, args: &[&str], needle: &str) {
    let err = net
        .mpcctl_json(args)
        .expect_err(&format!("{args:?} must fail"));
    assert!(
        !err.is_empty() && !err.contains('\n'),
        "one-line reason expected: {err:?}"
    );
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: {err:?} lacks {needle:?}"
    );
}

#[test]
fn n4t3_localnet__should_keygen_sign_delete_and_refuse_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Localnet::start(&dir, 4, 3, 100, 16600).unwrap();

    // Keygen through the whole flow.
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "e2e",
            "--scheme",
            "frost-ed25519",
            "--threshold",
            "3",
            "--wait",
        ])
        .unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    assert_eq!(k["scheme"], "frost-ed25519");
    assert_eq!(k["threshold"], 3);
    assert_eq!(k["parties"].as_array().unwrap().len(), 4);
    let pk = k["public_key"].as_str().unwrap().to_owned();
    assert_eq!(pk.len(), 64);

    // The key's status, read with a Merkle proof over tendermint-rpc and checked against the
    // app hash of the next header; a missing key is proven absent.
    let v = net
        .mpcctl_json(&["key", "--key-id", "e2e", "--verify"])
        .unwrap();
    assert_eq!(v["status"], "READY", "{v}");
    assert_eq!(v["public_key"], pk.as_str());
    let proof = &v["verified"];
    assert_eq!(proof["state_key"], "key/e2e", "{v}");
    let height = proof["height"].as_u64().unwrap();
    assert_eq!(proof["header_height"].as_u64(), Some(height + 1));
    assert_eq!(proof["app_hash"].as_str().unwrap().len(), 64, "{v}");
    expect_err(
        &net,
        &["key", "--key-id", "nope", "--verify"],
        "proven absent",
    );

    // Every node holds its own READY share, and shows no secret.
    for i in 0..4 {
        let v = net.node_get(i, "/key/e2e").unwrap();
        assert_eq!(v["status"], "READY", "node{i}: {v}");
        assert_eq!(v["public_key"], pk.as_str());
        assert!(v.get("share").is_none(), "node{i} exposes its share: {v}");
    }

    // 10 signatures, each verified independently.
    for i in 0..10u8 {
        let msg = format!("e2e message {i}");
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "e2e",
                "--message",
                &hex::encode(&msg),
                "--wait",
            ])
            .unwrap();
        assert_eq!(s["status"], "DONE", "{s}");
        verify(&pk, msg.as_bytes(), s["signature"].as_str().unwrap());
        let rid = s["request_id"].as_str().unwrap();
        let again = net
            .mpcctl_json(&["sign-status", "--request-id", rid])
            .unwrap();
        assert_eq!(again["signature"], s["signature"]);
    }

    // Reads.
    let keys = net.mpcctl_json(&["keys"]).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    let nodes = net.mpcctl_json(&["nodes"]).unwrap();
    let ids: BTreeSet<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["node0", "node1", "node2", "node3"]));
    let st = net
        .mpcctl_json(&["node-status", "--node", "node2"])
        .unwrap();
    assert_eq!(st["node_id"], "node2");

    // Bad input: each a clear one-line error, and the network keeps serving.
    let big = "ab".repeat(4097);
    let signer_key = net.info["signer_key"].as_str().unwrap().to_owned();
    expect_err(
        &net,
        &[
            "keygen",
            "--key-id",
            "x1",
            "--scheme",
            "rsa",
            "--threshold",
            "2",
        ],
        "unknown scheme",
    );
    expect_err(
        &net,
        &["keygen", "--key-id", "x1", "--threshold", "0"],
        "threshold",
    );
    expect_err(
        &net,
        &["keygen", "--key-id", "x1", "--threshold", "5"],
        "threshold",
    );
    expect_err(
        &net,
        &[
            "keygen",
            "--key-id",
            "x1",
            "--threshold",
            "2",
            "--parties",
            "node0,node7",
        ],
        "unknown party",
    );
    expect_err(
        &net,
        &["keygen", "--key-id", "e2e", "--threshold", "3"],
        "already used",
    );
    expect_err(
        &net,
        &["keygen", "--key-id", "bad/id", "--threshold", "3"],
        "key id",
    );
    expect_err(
        &net,
        &["sign", "--key-id", "nope", "--message", "00"],
        "does not exist",
    );
    expect_err(
        &net,
        &["sign", "--key-id", "e2e", "--message", &big],
        "exceeds",
    );
    expect_err(&net, &["sign", "--key-id", "e2e", "--message", "zz"], "hex");
    expect_err(
        &net,
        &[
            "--key",
            &signer_key,
            "keygen",
            "--key-id",
            "x2",
            "--threshold",
            "3",
        ],
        "role",
    );
    expect_err(&net, &["key", "--key-id", "nope"], "does not exist");
    expect_err(&net, &["node-status", "--node", "node9"], "no node");

    // Many at once: 20 keygens and 200 sign requests submitted together, all complete.
    let mut sub = Submitter::new(&net, net.client_key().unwrap()).unwrap();
    for i in 0..20 {
        sub.submit(TxMsg::KeyGen {
            key_id: KeyId::new(format!("bulk{i}")).unwrap(),
            scheme: Scheme::FrostEd25519,
            threshold: 3,
            parties: vec![],
        })
        .unwrap();
    }
    for i in 0..200 {
        sub.submit(TxMsg::KeySign {
            key_id: KeyId::new("e2e").unwrap(),
            request_id: RequestId::new(format!("bulk-r{i}")).unwrap(),
            message: format!("bulk {i}").into_bytes(),
            prehashed: false,
        })
        .unwrap();
    }
    let all_done = wait_for(Duration::from_secs(120), || {
        let keys = net.query("/keys").ok()?;
        let ready = keys
            .as_array()?
            .iter()
            .filter(|k| k["status"] == "READY")
            .count();
        let signed = (0..200)
            .filter(|i| {
                net.query(&format!("/sign/bulk-r{i}"))
                    .map(|s| s["status"] == "DONE")
                    .unwrap_or(false)
            })
            .count();
        (ready == 21 && signed == 200).then_some(())
    });
    assert!(
        all_done.is_some(),
        "bulk keygens and signatures did not all complete"
    );
    for i in (0..200).step_by(37) {
        let s = net.query(&format!("/sign/bulk-r{i}")).unwrap();
        verify(
            &pk,
            format!("bulk {i}").as_bytes(),
            s["signature"].as_str().unwrap(),
        );
    }
    let v: Value = net.query("/key/bulk7").unwrap();
    let sig = net
        .mpcctl_json(&["sign", "--key-id", "bulk7", "--message", "0102", "--wait"])
        .unwrap();
    verify(
        v["public_key"].as_str().unwrap(),
        &[1, 2],
        sig["signature"].as_str().unwrap(),
    );

    // Crash and restart: kill -9 node1, restart it from localnet.json's `cmd`; it catches up
    // from the chain (its committed state survived), keeps its READY shares and signs again.
    net.kill_node(1).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let restarted = net.restart_node(1, &[], &[]).unwrap();
    let st = net.node_get(1, "/status").unwrap();

    let bulk_keys = st["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "READY")
        .count();
    assert_eq!(bulk_keys, 21, "node1 lost READY shares: {st}");
    // Sign until node1 is among the signers (the chain picks signers per request id).
    let mut signed_by_node1 = false;
    for i in 0..12 {
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "e2e",
                "--message",
                &format!("{i:02x}"),
                "--wait",
            ])
            .unwrap();
        assert_eq!(s["status"], "DONE", "{s}");
        verify(&pk, &[i as u8], s["signature"].as_str().unwrap());
        signed_by_node1 |= s["signers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "node1");
        if signed_by_node1 {
            break;
        }
    }
    assert!(signed_by_node1, "node1 was never chosen as a signer");

    // Liveness: node3 goes down. Once its last tx (a heartbeat every 2 s) is older than the
    // liveness window (100 blocks), the chain stops choosing it as a signer: 3-of-4 signing
    // keeps succeeding among the three live nodes. After a restart it is live again.
    let node3_live = |want: bool| {
        wait_for(Duration::from_secs(60), || {
            let nodes = net.query("/nodes").ok()?;
            let n3 = nodes
                .as_array()?
                .iter()
                .find(|n| n["id"] == "node3")?
                .clone();
            (n3["live"] == want).then_some(())
        })
        .is_some()
    };
    assert!(node3_live(true), "node3 not live while running");
    net.kill_node(3).unwrap();
    assert!(
        node3_live(false),
        "node3 still counted live after it went down"
    );
    for i in 0..6u8 {
        let rid = format!("live-{i}");
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "e2e",
                "--request-id",
                &rid,
                "--message",
                &hex::encode([0xd0 + i]),
                "--wait",
            ])
            .unwrap_or_else(|e| {
                panic!(
                    "{e}; request: {:?}; nodes: {:?}",
                    net.query(&format!("/sign/{rid}")),
                    net.query("/nodes")
                )
            });
        assert_eq!(s["status"], "DONE", "{s}");
        verify(&pk, &[0xd0 + i], s["signature"].as_str().unwrap());
        assert!(
            !s["signers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "node3"),
            "the down node3 was chosen: {s}"
        );
    }
    let restarted3 = net.restart_node(3, &[], &[]).unwrap();
    assert!(node3_live(true), "node3 not live again after restart");

    // Delete: every node zeroizes its share; the id can never be reused; signing fails clearly.
    let d = net
        .mpcctl_json(&["delete", "--key-id", "e2e", "--wait"])
        .unwrap();
    assert_eq!(d["status"], "DELETED", "{d}");
    assert_eq!(d["deleted_by"].as_array().unwrap().len(), 4);
    for i in 0..4 {
        assert!(
            net.node_get(i, "/key/e2e").is_err(),
            "node{i} still holds e2e"
        );
    }
    expect_err(
        &net,
        &["sign", "--key-id", "e2e", "--message", "00"],
        "deleted",
    );
    expect_err(
        &net,
        &["keygen", "--key-id", "e2e", "--threshold", "3"],
        "already used",
    );

    // Still serving after all of it.
    let s = net
        .mpcctl_json(&["sign", "--key-id", "bulk3", "--message", "ff", "--wait"])
        .unwrap();
    assert_eq!(s["status"], "DONE");
    // Every node's records agree with the chain, the restarted ones included.
    for i in 0..4 {
        let st = net.node_get(i, "/status").unwrap();
        assert_eq!(st["diverged"], false, "node{i}: {}", st["divergences"]);
    }
    // Prometheus: every node's /metrics parses, and the signatures counted match the
    // histogram's count (the aggregators made them).
    let (mut total, mut observed) = (0.0, 0.0);
    for i in 0..4 {
        let (ct, text) = net.node_get_text(i, "/metrics").unwrap();
        assert!(ct.starts_with("text/plain"), "{ct}");
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        for s in &scrape.samples {
            match (&*s.metric, &s.value) {
                ("seqmpc_signatures_total", prometheus_parse::Value::Counter(v)) => total += v,
                ("seqmpc_mpc_latency_seconds", prometheus_parse::Value::Histogram(b))
                    if s.labels.get("operation") == Some("sign") =>
                {
                    observed += b.last().map_or(0.0, |b| b.count);
                }
                _ => {}
            }
        }
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == "seqmpc_chain_height"),
            "node{i}: {text}"
        );
    }
    assert!(total >= 1.0 && total == observed, "{total} vs {observed}");
    // The sequencer's /metrics: what users waited, from mempool to the block that ended each
    // request (keygens and signs of this test, FROST-Ed25519), beside the chain's figures.
    let (ct, text) = net.rpc_get_text("/metrics").unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let requests = |op: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "seqmpc_sequencer_request_duration_seconds")
            .filter(|s| s.labels.get("operation") == Some(op))
            .filter(|s| s.labels.get("scheme") == Some("frost-ed25519"))
            .filter_map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => b.last().map(|b| b.count),
                _ => None,
            })
            .sum()
    };
    // 1 + 20 keygens, 10 + 200 + 1 signs at least (some keygens may have been retried or failed).
    assert!(requests("keygen") >= 21.0, "{text}");
    assert!(requests("sign") >= 211.0, "{text}");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "seqmpc_sequencer_height"),
        "{text}"
    );
    net.stop().unwrap();
    // The restarted nodes are not localnet's children: stop them ourselves.
    drop(restarted);
    drop(restarted3);
}

#[test]
fn n4t3_localnet__should_keygen_sign_bip340_and_delete_a_frost_secp256k1_tr_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Localnet::start(&dir, 4, 3, 100, 16800).unwrap();

    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "tr",
            "--scheme",
            "frost-secp256k1-tr",
            "--threshold",
            "3",
            "--wait",
        ])
        .unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    assert_eq!(k["scheme"], "frost-secp256k1-tr");
    assert_eq!(k["threshold"], 3);
    // The chain and clients see the 32-byte x-only key of BIP340.
    let pk = k["public_key"].as_str().unwrap().to_owned();
    assert_eq!(pk.len(), 64, "{k}");
    for i in 0..4 {
        let v = net.node_get(i, "/key/tr").unwrap();
        assert_eq!(v["status"], "READY", "node{i}: {v}");
        assert_eq!(v["scheme"], "frost-secp256k1-tr", "node{i}: {v}");
        assert_eq!(v["public_key"], pk.as_str());
    }

    // 5 signatures, each verified with libsecp256k1; a 32-byte digest like a taproot sighash
    // and messages of other lengths.
    for i in 0..5u8 {
        let msg: Vec<u8> = if i % 2 == 0 {
            vec![i; 32]
        } else {
            format!("bip340 message {i}").into_bytes()
        };
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "tr",
                "--message",
                &hex::encode(&msg),
                "--wait",
            ])
            .unwrap();
        assert_eq!(s["status"], "DONE", "{s}");
        let sig = s["signature"].as_str().unwrap();
        assert_eq!(sig.len(), 128, "{s}");
        verify_bip340(&pk, &msg, sig);
    }

    let d = net
        .mpcctl_json(&["delete", "--key-id", "tr", "--wait"])
        .unwrap();
    assert_eq!(d["status"], "DELETED", "{d}");
    for i in 0..4 {
        assert!(
            net.node_get(i, "/key/tr").is_err(),
            "node{i} still holds tr"
        );
    }
    expect_err(
        &net,
        &["sign", "--key-id", "tr", "--message", "00"],
        "deleted",
    );
    net.stop().unwrap();
}

/// CGGMP24 over the real processes. The nodes load the test-only fixture primes and aux info
/// (`--cggmp-fixtures`), so keygen is the DKG alone and no node generates primes.
#[test]
fn n4t3_localnet__should_keygen_sign_ecdsa_prehashed_and_not_and_delete_a_cggmp24_key() {
    use sha2::Digest as _;
    let fixtures = seqmpc_e2e::cggmp_fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Localnet::start_with(
        &dir,
        4,
        3,
        100,
        17000,
        &[
            "--cggmp-fixtures".as_ref(),
            fixtures.as_os_str(),
            "--cggmp-presign-pool".as_ref(),
            "1".as_ref(),
        ],
    )
    .unwrap();

    let t = std::time::Instant::now();
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "ec",
            "--scheme",
            "cggmp24-secp256k1",
            "--threshold",
            "3",
            "--wait",
        ])
        .unwrap();
    eprintln!(
        "timing: cggmp24 keygen (fixture aux) on the localnet: {:?}",
        t.elapsed()
    );
    assert_eq!(k["status"], "READY", "{k}");
    assert_eq!(k["scheme"], "cggmp24-secp256k1");
    let pk = k["public_key"].as_str().unwrap().to_owned();
    assert_eq!(pk.len(), 66, "33-byte compressed key: {k}");
    for i in 0..4 {
        let v = net.node_get(i, "/key/ec").unwrap();
        assert_eq!(v["status"], "READY", "node{i}: {v}");
        assert_eq!(v["public_key"], pk.as_str());
    }

    // A 31-byte prehashed digest: refused at CheckTx.
    expect_err(
        &net,
        &[
            "sign",
            "--key-id",
            "ec",
            "--prehashed",
            "--message",
            &"ab".repeat(31),
        ],
        "must be 32 bytes, got 31",
    );

    // Prehashed: the 32-byte digest is signed as is.
    let digest = [0x5au8; 32];
    let t = std::time::Instant::now();
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            "ec",
            "--prehashed",
            "--message",
            &hex::encode(digest),
            "--wait",
        ])
        .unwrap();
    eprintln!(
        "timing: cggmp24 full signing (prehashed) on the localnet: {:?}",
        t.elapsed()
    );
    assert_eq!(s["status"], "DONE", "{s}");
    assert_eq!(s["prehashed"], true, "{s}");
    verify_ecdsa(
        &pk,
        digest,
        s["signature"].as_str().unwrap(),
        &s["recovery_id"],
    );

    // Not prehashed, from a presignature: once every node holds one presignature for each
    // of its 3 signer subsets (generated in the background after keygen), the request's
    // aggregator takes one and the signers run the online step only.
    let presigned = |i: usize| {
        net.node_get(i, "/metrics/json").unwrap()["signatures_presigned"]
            .as_u64()
            .unwrap()
    };
    let pools_full = || {
        wait_for(Duration::from_secs(180), || {
            (0..4)
                .all(|i| {
                    let st = net.node_get(i, "/status").unwrap();
                    let pools = st["cggmp_presign_pools"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    pools
                        .iter()
                        .filter(|p| p["key_id"] == "ec" && p["ready"].as_u64() >= Some(1))
                        .count()
                        == 3
                })
                .then_some(())
        })
    };
    let t = std::time::Instant::now();
    assert!(pools_full().is_some(), "presignature pools did not fill");
    eprintln!(
        "timing: cggmp24 presignature pools (1 per subset) filled in {:?}",
        t.elapsed()
    );
    // Signs `msg` (SHA-256) with "ec", checks the result with libsecp256k1, prints the time.
    let sign_ec = |msg: &[u8], what: &str| -> Value {
        let t = std::time::Instant::now();
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "ec",
                "--message",
                &hex::encode(msg),
                "--wait",
            ])
            .unwrap();
        eprintln!("timing: cggmp24 {what} on the localnet: {:?}", t.elapsed());
        assert_eq!(s["status"], "DONE", "{s}");
        verify_ecdsa(
            &pk,
            sha2::Sha256::digest(msg).into(),
            s["signature"].as_str().unwrap(),
            &s["recovery_id"],
        );
        s
    };
    let before: u64 = (0..4).map(presigned).sum();
    sign_ec(
        b"cggmp24 from a presignature",
        "presigned signing (message)",
    );
    assert_eq!(
        (0..4).map(presigned).sum::<u64>(),
        before + 1,
        "the signature must come from a presignature"
    );

    // Not prehashed: SHA-256 of the message (full protocol when no presignature is ready).
    sign_ec(b"cggmp24 over the localnet", "signing (message)");

    // Crash and restart: presignatures live in memory only, so a restarted node2 holds none
    // of its old ones. A request signed with node2 then falls back to the full protocol
    // (node2 answers the aggregator's plan with "not held"), and no presignature is used.
    // node2 comes back with no pool, so it cannot be handed fresh ones either.
    assert!(pools_full().is_some(), "presignature pools did not refill");
    net.kill_node(2).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let node2_log = net.info["nodes"][2]["log"].as_str().unwrap().to_owned();
    let restarted = net
        .restart_node(2, &[("--cggmp-presign-pool", "0")], &[])
        .unwrap();
    // Signatures without node2 may still come from presignatures; the one with node2 must not.
    let mut with_node2 = false;
    for i in 0..8 {
        let before: u64 = [0, 1, 3].into_iter().map(presigned).sum();
        let msg = format!("after node2 restarted {i}");
        let s = sign_ec(msg.as_bytes(), "signing after node2 restarted");
        if s["signers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "node2")
        {
            assert_eq!(
                [0, 1, 3].into_iter().map(presigned).sum::<u64>(),
                before,
                "a signature with the restarted node2 used a presignature: {s}"
            );
            with_node2 = true;
            break;
        }
    }
    assert!(with_node2, "node2 was never chosen as a signer");
    let node2_text = std::fs::read_to_string(&node2_log).unwrap();
    assert!(
        node2_text.contains("named presignature not held here"),
        "node2 did not report the lost presignature"
    );

    // Another committee (node0..node2, no fixture aux info): aux info is generated from the
    // fixture primes beside the DKG. The next keygen of that committee reuses it (every
    // party offers the aux info inside its first key's share): the DKG alone.
    // mpcctl --wait reports progress on stderr while the key is PENDING: the long one shows
    // the nodes generating aux info.
    let keygen3 = |id: &str| {
        let t = std::time::Instant::now();
        let out = net.mpcctl(&[
            "keygen",
            "--key-id",
            id,
            "--scheme",
            "cggmp24-secp256k1",
            "--threshold",
            "2",
            "--parties",
            "node0,node1,node2",
            "--wait",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let k: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(k["status"], "READY", "{k}");
        (
            k["public_key"].as_str().unwrap().to_owned(),
            t.elapsed(),
            stderr,
        )
    };
    let (pk_a, generated, progress) = keygen3("ec3a");
    assert!(
        progress.contains("keygen ec3a PENDING") && progress.contains("dkg+aux-info"),
        "no progress shown on a long keygen: {progress}"
    );
    let (pk_b, reused, _) = keygen3("ec3b");
    eprintln!("timing: cggmp24 2-of-3 keygen generating aux info: {generated:?}; next keygen reusing it: {reused:?}");
    assert_ne!(pk_a, pk_b);
    assert!(
        reused < generated / 2,
        "the second keygen must reuse the aux info: {reused:?} vs {generated:?}"
    );
    for (id, pk) in [("ec3a", &pk_a), ("ec3b", &pk_b)] {
        let digest = [0x11u8; 32];
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                id,
                "--prehashed",
                "--message",
                &hex::encode(digest),
                "--wait",
            ])
            .unwrap();
        assert_eq!(s["status"], "DONE", "{s}");
        verify_ecdsa(
            pk,
            digest,
            s["signature"].as_str().unwrap(),
            &s["recovery_id"],
        );
    }

    // Resharing (issue 4): "ec" moves 3-of-4 -> 2-of-3 with node3 leaving. The new committee
    // has aux info (from ec3a's keygen), which the reshared shares reuse; the public key stays.
    let reshare_ec = |parties: &str, t: &str| {
        let t0 = std::time::Instant::now();
        let r = net.mpcctl_json(&[
            "reshare",
            "--key-id",
            "ec",
            "--parties",
            parties,
            "--threshold",
            t,
            "--wait",
        ]);
        eprintln!(
            "timing: cggmp24 reshare to {parties} ({t}) on the localnet: {:?}",
            t0.elapsed()
        );
        r
    };
    let sign_ec_prehashed = |digest: [u8; 32]| -> Value {
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "ec",
                "--prehashed",
                "--message",
                &hex::encode(digest),
                "--wait",
            ])
            .unwrap();
        assert_eq!(s["status"], "DONE", "{s}");
        verify_ecdsa(
            &pk,
            digest,
            s["signature"].as_str().unwrap(),
            &s["recovery_id"],
        );
        s
    };
    let k = reshare_ec("node0,node1,node2", "2").unwrap();
    assert_eq!(k["public_key"], pk.as_str(), "{k}");
    assert_eq!(
        (k["threshold"].as_u64(), k["generation"].as_u64()),
        (Some(2), Some(2))
    );
    // The leaving node erases its share when its ReshareDone job runs, just after the chain
    // ended the resharing (the same block): give it that moment.
    assert!(
        seqmpc_e2e::wait_for(Duration::from_secs(10), || net
            .node_get(3, "/key/ec")
            .is_err()
            .then_some(()))
        .is_some(),
        "node3 still holds ec"
    );
    // A committee without aux info (node1..node3): the new parties generate it together (from
    // their fixture primes) while the deals arrive; node0 leaves, node3 joins.
    let k = reshare_ec("node1,node2,node3", "2").unwrap();
    assert_eq!(
        (k["threshold"].as_u64(), k["generation"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(k["public_key"], pk.as_str(), "{k}");
    // The leaving node erases its share when its ReshareDone job runs, just after the chain
    // ended the resharing (the same block): give it that moment.
    assert!(
        seqmpc_e2e::wait_for(Duration::from_secs(10), || net
            .node_get(0, "/key/ec")
            .is_err()
            .then_some(()))
        .is_some(),
        "node0 still holds ec"
    );
    let s = sign_ec_prehashed([0x21; 32]);
    assert_eq!(s["signers"].as_array().unwrap().len(), 2, "{s}");
    // Back to 3-of-4 (node0 joins again; the fixture aux info of the 4 nodes).
    let k = reshare_ec("node0,node1,node2,node3", "3").unwrap();
    assert_eq!(
        (k["threshold"].as_u64(), k["generation"].as_u64()),
        (Some(3), Some(4))
    );
    sign_ec_prehashed([0x22; 32]);

    let d = net
        .mpcctl_json(&["delete", "--key-id", "ec", "--wait"])
        .unwrap();
    assert_eq!(d["status"], "DELETED", "{d}");
    for i in 0..4 {
        assert!(
            net.node_get(i, "/key/ec").is_err(),
            "node{i} still holds ec"
        );
    }
    net.stop().unwrap();
    // The restarted node2 is not localnet's child: stop it ourselves.
    drop(restarted);
}
