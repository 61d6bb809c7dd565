//! ECDSA soon after a cold start (issue 15) over the real localnet: a CGGMP24 keygen submitted
//! while one party holds no safe-prime set waits for it, PENDING with progress, instead of
//! failing; and no party's set is consumed by an attempt that could not run aux info.
//!
//! Safe-prime generation takes 28-300 s of a core per set, so the nodes use the test-only
//! stand-in `SEQMPC_FAULTS=primes-stub-ms=<n>` (cargo feature `fault-injection`): a pool that
//! starts empty and "generates" the node's fixture set in `n` ms. Everything after that is
//! real: the sets are stored sealed, reserved, taken once and consumed by a real aux-info run.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use seqmpc_e2e::{verify, wait_for, Localnet};
use serde_json::Value;

#[test]
fn n4_localnet__should_wait_for_a_partys_safe_primes_and_consume_one_set_per_party() {
    let fixtures = seqmpc_e2e::cggmp_fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    // Every node starts generating at once, a set every 20 s (its stand-in).
    let net = Localnet::start_with_env(
        &dir,
        4,
        3,
        100,
        21600,
        &["--cggmp-fixtures".as_ref(), fixtures.as_os_str()],
        &[
            ("SEQMPC_FAULTS", "primes-stub-ms=20000"),
            ("SEQMPC_CGGMP_PRIMES_AT_START", "true"),
            ("SEQMPC_CGGMP_PRESIGN_POOL", "0"),
        ],
    )
    .unwrap();
    let t0 = Instant::now();
    // node0 and node1 start over with a fast stand-in and fill their pools (2 sets each);
    // node2 is still 20 s from its first set.
    let mut restarted = Vec::new();
    for i in [0, 1] {
        net.kill_node(i).unwrap();
        restarted.push(
            net.restart_node(
                i,
                &[],
                &[
                    ("SEQMPC_FAULTS", "primes-stub-ms=200"),
                    ("SEQMPC_CGGMP_PRESIGN_POOL", "0"),
                ],
            )
            .unwrap(),
        );
    }
    let level = |i: usize| {
        net.node_get(i, "/status")
            .ok()
            .and_then(|s| s["cggmp_prime_pool_level"].as_u64())
    };
    wait_for(Duration::from_secs(30), || {
        (level(0) == Some(2) && level(1) == Some(2)).then_some(())
    })
    .expect("node0 and node1 did not fill their prime pools");
    assert_eq!(level(2), Some(0), "node2 must not hold a set yet");
    eprintln!(
        "pools: node0, node1 full, node2 empty after {:?}",
        t0.elapsed()
    );

    // One keygen, no retry: it waits for node2's set, then runs.
    let t = Instant::now();
    let out = net.mpcctl(&[
        "keygen",
        "--key-id",
        "cold",
        "--scheme",
        "cggmp24-secp256k1",
        "--threshold",
        "2",
        "--parties",
        "node0,node1,node2",
        "--wait",
        "--timeout",
        "300",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    eprintln!(
        "timing: cggmp24 keygen waiting for node2's primes, then aux info: {:?}",
        t.elapsed()
    );
    assert!(
        stderr.contains("waiting for safe primes: node2")
            || stderr.contains("node2: generating a safe-prime set"),
        "the wait was not shown as progress: {stderr}"
    );

    // Each party consumed exactly the set of the one aux-info run; node3, not a party, none.
    for (i, want) in [(0, 1), (1, 1), (2, 1), (3, 0)] {
        let st = net.node_get(i, "/status").unwrap();
        // The tests run a test build, and every node says so.
        assert_eq!(
            st["features"],
            serde_json::json!(["fault-injection"]),
            "{st}"
        );
        assert_eq!(
            st["cggmp_prime_sets_taken"].as_u64(),
            Some(want),
            "node{i}: {st}"
        );
        assert_eq!(st["cggmp_keygens_waiting_for_primes"].as_u64(), Some(0));
    }

    // The key signs (aux info from the reserved sets is sound).
    let pk = k["public_key"].as_str().unwrap().to_owned();
    let digest = [0x5au8; 32];
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            "cold",
            "--prehashed",
            "--message",
            &hex::encode(digest),
            "--wait",
        ])
        .unwrap();
    assert_eq!(s["status"], "DONE", "{s}");
    verify::ecdsa(
        &pk,
        digest,
        s["signature"].as_str().unwrap(),
        &s["recovery_id"],
    )
    .unwrap();
    drop(restarted);
    net.stop().unwrap();
}
