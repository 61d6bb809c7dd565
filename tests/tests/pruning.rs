//! End to end: a localnet that prunes its block log (issue 13, bounded disk). Every mpcd runs
//! with `--min-retain-blocks` (`localnet start --retain-blocks`), answers Commit with a retain
//! height, and the dev sequencer deletes the block-log segments below the lowest one, as
//! CometBFT prunes its block store below its app's. A node that is down keeps the blocks it
//! will replay; once it is back and has caught up, pruning goes on past them. A new node, which
//! would replay from block 1, is refused with a clear error. A sign request that has left the
//! state is still found by `mpcctl sign-status`, from its tx's `sign_done` event.
//! Ports: base 23000 (RPC 23057, nodes 23100..23122), apart from the other e2e tests.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use seqmpc_e2e::{verify, wait_for, Localnet};

const RETAIN: u64 = 80;
/// Genesis `sign_retention_blocks`: a finished request leaves the state 30 blocks after it
/// ended; its block stays for `RETAIN`.
const SIGN_RETENTION: u64 = 30;

fn sign(net: &Localnet, pk: &str, msg: &[u8]) -> serde_json::Value {
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            "k",
            "--message",
            &hex::encode(msg),
            "--wait",
        ])
        .unwrap();
    assert_eq!(s["status"], "DONE", "{s}");
    verify::ed25519(pk, msg, s["signature"].as_str().unwrap()).unwrap();
    s
}

/// A gauge of the sequencer's `/metrics`.
fn gauge(net: &Localnet, name: &str) -> f64 {
    let (_, text) = net.rpc_get_text("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn pruning__should_keep_what_a_down_node_needs_then_prune_past_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let (retain, sign_retention) = (RETAIN.to_string(), SIGN_RETENTION.to_string());
    let extra: [&std::ffi::OsStr; 6] = [
        "--retain-blocks".as_ref(),
        retain.as_ref(),
        "--sign-retention-blocks".as_ref(),
        sign_retention.as_ref(),
        "--block-log-segment-blocks".as_ref(),
        "10".as_ref(),
    ];
    let mut net = Localnet::start_with(&dir, 3, 2, 50, 23000, &extra).unwrap();
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "k",
            "--scheme",
            "frost-ed25519",
            "--threshold",
            "2",
            "--wait",
        ])
        .unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    let pk = k["public_key"].as_str().unwrap().to_owned();
    let signed = sign(&net, &pk, b"before pruning");

    // Once the request has left the state, sign-status reads its outcome from its tx's event
    // (its block is kept RETAIN - SIGN_RETENTION blocks longer).
    let rid = signed["request_id"].as_str().unwrap();
    let pruned = wait_for(Duration::from_secs(20), || {
        let s = net
            .mpcctl_json(&["sign-status", "--request-id", rid])
            .unwrap();
        (s["pruned"] == true).then_some(s)
    })
    .expect("sign-status never fell back to the sign_done event");
    assert_eq!(pruned["status"], "DONE", "{pruned}");
    assert_eq!(pruned["signature"], signed["signature"], "{pruned}");

    // Pruning starts once the chain is past the retention and a segment.
    let earliest = wait_for(Duration::from_secs(30), || {
        let e = net.rpc.earliest_height().unwrap();
        (e > 1).then_some(e)
    })
    .expect("the block log was never pruned");
    let height = net.rpc.height().unwrap();
    assert!(
        earliest + RETAIN <= height + 1,
        "pruned into the retention: earliest {earliest}, height {height}"
    );
    assert!(gauge(&net, "seqmpc_sequencer_earliest_height") > 1.0);
    assert!(gauge(&net, "seqmpc_sequencer_block_store_bytes") > 0.0);

    // A new node would replay from block 1: refused, saying why.
    let err = net.add_node().expect_err("add-node on a pruned localnet");
    assert!(err.to_string().contains("pruned"), "{err}");

    // node2 goes down: the blocks it will replay stay, whatever the others would let go.
    net.kill_node(2).unwrap();
    let killed_at = net.rpc.height().unwrap();
    wait_for(Duration::from_secs(30), || {
        (net.rpc.height().unwrap() > killed_at + 2 * RETAIN).then_some(())
    })
    .expect("the chain stopped");
    let pinned = net.rpc.earliest_height().unwrap();
    assert!(
        pinned <= killed_at + 1 - RETAIN + 1,
        "pruned past what the down node needs: earliest {pinned}, killed at {killed_at}"
    );

    // It comes back and catches up by replay; then pruning goes on past its old height.
    let restarted = net.restart_node(2, &[], &[]).unwrap();
    wait_for(Duration::from_secs(30), || {
        (net.rpc.earliest_height().unwrap() > killed_at).then_some(())
    })
    .expect("pruning did not go on after the node came back");
    sign(&net, &pk, b"after pruning");
    net.check_settled(3).unwrap();
    drop(restarted);
    net.stop().unwrap();
}
