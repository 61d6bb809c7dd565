//! A registered peer that floods (issue 14, item 2), over the real localnet: node1 sends every
//! peer 16 MiB per second of 1 MiB messages for sessions no one runs, for longer than it takes
//! to fill any count-bounded buffer. The honest nodes keep signing, and their memory stays
//! within the byte budgets: each holds at most its share of early messages from node1, not
//! the hundreds of MiB node1 sends.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use seqmpc_e2e::{verify, Localnet};

/// MiB per second node1 sends each peer.
const FLOOD_MIB_PER_S: u64 = 16;
/// How long the honest nodes are watched under the flood.
const WATCH: Duration = Duration::from_secs(25);
/// Most an honest node's resident memory may grow under the flood: its byte budget for
/// node1's early messages (32 MiB) and the transport's in-flight frames, with room for the
/// allocator. Without the budgets it grows with everything node1 sends (~400 MiB here).
const MAX_GROWTH_MIB: u64 = 160;

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: i64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

fn dropped(net: &Localnet, i: usize) -> u64 {
    net.node_get(i, "/metrics/json").unwrap()["messages_dropped"]
        .as_u64()
        .unwrap()
}

#[test]
fn n4t3_localnet__should_keep_signing_and_bound_memory_while_a_peer_floods() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Localnet::start(&tmp.path().join("net"), 4, 3, 100, 22000).unwrap();
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "flood",
            "--scheme",
            "frost-ed25519",
            "--threshold",
            "3",
            "--wait",
        ])
        .unwrap();
    let pk = k["public_key"].as_str().unwrap().to_owned();
    let honest = [0usize, 2, 3];
    let pids: Vec<i64> = honest
        .iter()
        .map(|&i| net.info["nodes"][i]["pid"].as_i64().unwrap())
        .collect();
    let before: Vec<u64> = pids.iter().map(|&p| rss_mib(p)).collect();
    let dropped_before: Vec<u64> = honest.iter().map(|&i| dropped(&net, i)).collect();

    net.kill_node(1).unwrap();
    let flood = format!("flood-mib-per-s={FLOOD_MIB_PER_S}");
    let _flooder = net
        .restart_node(1, &[], &[("SEQMPC_FAULTS", &flood)])
        .unwrap();

    let start = Instant::now();
    let mut peak = before.clone();
    let mut signed = 0;
    while start.elapsed() < WATCH {
        let msg = format!("under flood {signed}");
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "flood",
                "--message",
                &hex::encode(&msg),
                "--wait",
            ])
            .unwrap_or_else(|e| panic!("signing under the flood: {e}"));
        assert_eq!(s["status"], "DONE", "{s}");
        verify::ed25519(&pk, msg.as_bytes(), s["signature"].as_str().unwrap()).unwrap();
        signed += 1;
        for (p, &pid) in peak.iter_mut().zip(&pids) {
            *p = (*p).max(rss_mib(pid));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after: Vec<u64> = honest.iter().map(|&i| dropped(&net, i)).collect();
    eprintln!(
        "{signed} signatures in {:?} under a {FLOOD_MIB_PER_S} MiB/s flood per peer; \
         RSS MiB before {before:?}, peak {peak:?}; messages dropped before {dropped_before:?}, \
         after {after:?}",
        start.elapsed()
    );
    assert!(signed >= 5, "only {signed} signatures under the flood");
    for (k, &i) in honest.iter().enumerate() {
        // The flood reached the node and was refused past its budget (node1 sent far more
        // than any buffer holds).
        assert!(
            after[k] > dropped_before[k],
            "node{i} dropped nothing: did the flood reach it?"
        );
        assert!(
            peak[k] <= before[k] + MAX_GROWTH_MIB,
            "node{i}'s RSS grew from {} MiB to {} MiB under the flood",
            before[k],
            peak[k]
        );
    }
    net.stop().unwrap();
}
