//! The CGGMP24 rows of the crash matrix, on a localnet of their own (ports from 20000).
//!
//! Why apart: a CGGMP24 signing's chain deadline is 20x the genesis `session_deadline_blocks`
//! and a keygen's is the genesis `cggmp_keygen_deadline_blocks` (15 minutes by default), and a
//! crash before the point of no return ends a keygen at its deadline (the restarted node
//! resumes nothing, and the others wait for it); in a signing, the other signers name the
//! crashed node silent after their silence timeout, and the next attempt signs without it.
//! On the FROST localnet (40 blocks) that is 80 s per signing row; here the genesis deadline
//! is [`DEADLINE_BLOCKS`] and the keygen one [`KEYGEN_DEADLINE_BLOCKS`], so a signing ends in
//! 240 blocks and a keygen in 360, still well
//! above what a 2-party signing takes on a loaded 2-core machine (at 8, a full signing right
//! after the keygen retry missed its 160 blocks once, with the other e2e tests running
//! beside it).
//!
//! The nodes load the test-only fixture primes and committee aux info (`--cggmp-fixtures`:
//! no prime is generated) and keep one presignature per signer subset in memory
//! (`--cggmp-presign-pool 1`). The key is 2-of-4 (two signers per request, the cheapest
//! CGGMP24 signing). The chain picks a request's signers from its id and the hash of the block
//! that commits it, so no id names them in advance: the test sends requests until the chain
//! picks signers the row needs ([`submit_until`]); the others must sign. Rows, each with one
//! node crashed (`abort()` at the point) and restarted normally:
//! - `presign-after-take` at a signer that is not the aggregator of a presigned signing (that
//!   node carries the fault from before the key exists, since a restart empties its pools): it
//!   sent nothing in that signing, so the other signer names it at its silence timeout
//!   ([`SILENCE_TIMEOUT_SECS`]) and the request ends DONE in its next attempt, without it,
//!   long before its deadline. The restarted node holds none of its presignatures
//!   of before (pools are memory-only), and a signing with it and a node that still holds
//!   their subset's old presignature falls back to the full protocol and verifies.
//! - `cggmp-sign-mid` in a full signing (prehashed), node3 aborting once its second round is
//!   handed to its p2p task: DONE in the next attempt. Its partner names it once the signing
//!   has been quiet for the silence timeout with node3 behind ("stopped: no next message from
//!   node3"; "nothing received from node3" if its first round never got out). Then it signs
//!   again.
//! - `keygen-before-store` in a CGGMP24 keygen: the worker's share reaches the same store code
//!   as FROST's, so the FROST point covers it. ERROR at the keygen deadline; the key id is
//!   generated again, READY at every node, and signs.
//! - `cggmp-sign-mid` again, in a full signing of three signers (a 3-of-4 key): DONE in the
//!   next attempt, from the two other signers' reports (each names node3; one a round ahead of
//!   the other also names that one, which is no majority), long before the deadline.
//!
//! After every row: nothing PENDING on the chain or in any store, no divergence, and the
//! signatures verify with libsecp256k1 (`verify::ecdsa`).

use super::{
    assert_no_divergence, assert_nothing_pending, error_reason, mpcctl, node_log, Procs, BLOCK_MS,
};
use seqmpc_e2e::{verify, wait_for, Localnet};
use serde_json::Value;
use sha2::Digest as _;
use std::time::{Duration, Instant};

/// Genesis `session_deadline_blocks` of this localnet: CGGMP24 signing 240 blocks.
const DEADLINE_BLOCKS: u64 = 12;
const SIGN_DEADLINE_BLOCKS: u64 =
    DEADLINE_BLOCKS * seqmpc_abci::chain::tx::CGGMP_SIGN_DEADLINE_FACTOR;
/// Genesis `cggmp_keygen_deadline_blocks` of this localnet (`localnet start
/// --cggmp-keygen-deadline-blocks`).
const KEYGEN_DEADLINE_BLOCKS: u64 = 360;
const NODES: usize = super::NODES;
/// `--cggmp-silence-timeout-secs` of the nodes this localnet starts: well inside a signing's
/// 240 blocks (24 s at 100 ms), so the next attempt has time to sign.
const SILENCE_TIMEOUT_SECS: &str = "8";
/// The nodes' environment, at the start and at every restart.
const NODE_ENV: &[(&str, &str)] = &[("SEQMPC_CGGMP_SILENCE_TIMEOUT_SECS", SILENCE_TIMEOUT_SECS)];
const EC: &str = "ec";
/// A 3-of-4 key (row 4: three signers).
const EC3: &str = "ec3";
const THRESHOLD: u32 = 2;

fn keygen_args(key_id: &str) -> Vec<&str> {
    keygen_args_t(key_id, "2")
}

fn keygen_args_t<'a>(key_id: &'a str, threshold: &'a str) -> Vec<&'a str> {
    vec![
        "keygen",
        "--key-id",
        key_id,
        "--scheme",
        "cggmp24-secp256k1",
        "--threshold",
        threshold,
        "--wait",
    ]
}

/// A request the chain committed: its id, its signers (node indices, sorted), and each node's
/// count of presigned signatures just before it was sent.
struct Sent {
    request_id: String,
    signers: Vec<usize>,
    presigned_before: Vec<u64>,
}

/// Sends signing requests `<prefix>-0`, `<prefix>-1`, … of `msg` (a 32-byte digest when
/// `prehashed`: the full protocol; else a message, from a presignature when every signer holds
/// the one named) with `key_id`, until the chain picks signers that `want` accepts, and returns
/// that request, its session under way. A request `want` refuses must end DONE with a signature
/// that verifies.
fn submit_until(
    net: &Localnet,
    key_id: &str,
    prefix: &str,
    msg: &[u8],
    prehashed: bool,
    want: impl Fn(&[usize]) -> bool,
) -> Sent {
    let hex_msg = hex::encode(msg);
    for n in 0..40 {
        let request_id = format!("{prefix}-{n}");
        let presigned_before = (0..NODES).map(|i| presigned(net, i)).collect();
        let mut args = vec![
            "sign",
            "--key-id",
            key_id,
            "--request-id",
            &request_id,
            "--message",
            &hex_msg,
        ];
        if prehashed {
            args.push("--prehashed");
        }
        mpcctl(net, &args).unwrap();
        let path = format!("/sign/{request_id}");
        let entry = wait_for(Duration::from_secs(30), || net.query(&path).ok())
            .unwrap_or_else(|| panic!("{request_id} never committed"));
        let signers = indices(&entry["signers"]);
        if want(&signers) {
            return Sent {
                request_id,
                signers,
                presigned_before,
            };
        }
        let end = settled(net, &path, SIGN_DEADLINE_BLOCKS);
        verified(net, key_id, msg, prehashed, &end);
    }
    panic!("{prefix}: 40 requests, none with the signers wanted")
}

/// [`submit_until`], then waits for that request to end and checks it signed (verified).
fn sign_until(
    net: &Localnet,
    key_id: &str,
    prefix: &str,
    msg: &[u8],
    prehashed: bool,
    want: impl Fn(&[usize]) -> bool,
) -> (Sent, Value) {
    let sent = submit_until(net, key_id, prefix, msg, prehashed, want);
    let end = settled(
        net,
        &format!("/sign/{}", sent.request_id),
        SIGN_DEADLINE_BLOCKS,
    );
    verified(net, key_id, msg, prehashed, &end);
    (sent, end)
}

/// Node indices of a JSON list of node ids.
fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of nodes: {v}"))
        .iter()
        .map(|n| {
            n.as_str()
                .and_then(|s| s.strip_prefix("node"))
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("not a node id: {n}"))
        })
        .collect()
}

/// Checks that the sign request `end` is DONE and its ECDSA signature of `msg` (hashed with
/// SHA-256 unless `prehashed`) verifies with libsecp256k1 against `key_id`.
fn verified(net: &Localnet, key_id: &str, msg: &[u8], prehashed: bool, end: &Value) {
    assert_eq!(end["status"], "DONE", "{end}");
    let pk = net.query(&format!("/key/{key_id}")).unwrap()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let digest: [u8; 32] = if prehashed {
        msg.try_into().unwrap()
    } else {
        sha2::Sha256::digest(msg).into()
    };
    verify::ecdsa(
        &pk,
        digest,
        end["signature"].as_str().unwrap(),
        &end["recovery_id"],
    )
    .unwrap_or_else(|e| panic!("{end}: {e:#}"));
}

/// Presignatures node `i` holds ready for `key_id` and exactly the signers `subset`.
fn pool_level(net: &Localnet, i: usize, key_id: &str, subset: &[usize]) -> u64 {
    let signers: Vec<String> = subset.iter().map(|&j| format!("node{j}")).collect();
    let st = net.node_get(i, "/status").unwrap();
    st["cggmp_presign_pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["key_id"] == key_id && p["signers"] == serde_json::json!(signers))
        .and_then(|p| p["ready"].as_u64())
        .unwrap_or(0)
}

/// Whether every node holds a presignature of `key_id` for each 2-node subset it is in.
fn pools_full(net: &Localnet, key_id: &str) -> bool {
    (0..NODES).all(|i| {
        (0..NODES)
            .filter(|&j| j != i)
            .all(|j| pool_level(net, i, key_id, &[i.min(j), i.max(j)]) >= 1)
    })
}

fn presigned(net: &Localnet, i: usize) -> u64 {
    net.node_get(i, "/metrics/json").unwrap()["signatures_presigned"]
        .as_u64()
        .unwrap()
}

/// A node restarted with `crash-at=<point>`, and its log's length then.
struct Armed {
    node: usize,
    point: &'static str,
    log_from: usize,
}

/// Restarts node `i` with `crash-at=point`.
fn arm(net: &Localnet, procs: &mut Procs, i: usize, point: &'static str) -> Armed {
    let log_from = node_log(net, i).len();
    procs.restart(net, i, &format!("crash-at={point}"));
    Armed {
        node: i,
        point,
        log_from,
    }
}

/// Runs `op` (which starts the session the armed node takes part in) while waiting for the
/// armed node to abort at its point, restarts it normally, and returns what `op` returned.
/// Checks that the crash point stopped the node and that the restarted node resumed nothing.
fn crash_during<T: Send>(
    net: &Localnet,
    procs: &mut Procs,
    armed: Armed,
    op: impl FnOnce() -> T + Send,
) -> T {
    let Armed {
        node: i,
        point,
        log_from,
    } = armed;
    let out = std::thread::scope(|s| {
        let op = s.spawn(op);
        // Up to 40 requests of other signers may go first (see `submit_until`).
        let crashed = wait_for(Duration::from_secs(240), || procs.crashed(i).then_some(()));
        assert!(crashed.is_some(), "{point}: node{i} never reached it");
        procs.restart(net, i, "");
        op.join().unwrap()
    });
    let log = node_log(net, i);
    let log = log.get(log_from..).unwrap_or_default();
    assert!(
        log.contains(&format!("crash-at={point}: aborting")),
        "{point}: the crash point was not what stopped node{i}"
    );
    assert!(
        !log.to_lowercase().contains("resumed"),
        "{point}: the restarted node{i} resumed a session"
    );
    out
}

/// The chain's final state at `path` (a key or a sign request), polled until it leaves PENDING
/// within `blocks` of deadline (wall time with slow blocks, plus a margin).
fn settled(net: &Localnet, path: &str, blocks: u64) -> Value {
    let timeout = Duration::from_millis(blocks * BLOCK_MS * 3) + Duration::from_secs(30);
    wait_for(timeout, || {
        let v = net.query(path).ok()?;
        (v["status"] != "PENDING").then_some(v)
    })
    .unwrap_or_else(|| panic!("{path} still PENDING after {timeout:?}"))
}

/// A signing that ended DONE in a later attempt because `node` went silent in the first
/// (sent nothing, or stopped after its first messages: `stopped` allows the latter):
/// excluded and named silent, the chain and the nodes in agreement, nothing left pending.
/// Returns the first attempt's error.
fn named_silent(net: &Localnet, label: &str, end: &Value, node: &str, stopped: bool) -> String {
    assert_eq!(end["excluded"], serde_json::json!([node]), "{label}: {end}");
    let error = end["error"].as_str().unwrap_or_default().to_owned();
    // "<what> nodeA, nodeB within N s": whether `what` names `node`.
    let names = |what: &str| {
        error.split(what).skip(1).any(|rest| {
            let list = rest.split(" within").next().unwrap_or_default();
            list.split(", ").any(|n| n.trim() == node)
        })
    };
    assert!(
        names("nothing received from ") || (stopped && names("stopped: no next message from ")),
        "{label}: {end}"
    );
    assert_no_divergence(net, label);
    assert_nothing_pending(net, label);
    error
}

/// The row's checks once its session ended ERROR by deadline.
fn ended_by_deadline(net: &Localnet, label: &str, end: &Value) -> String {
    assert_eq!(end["status"], "ERROR", "{label}: {end}");
    let error = error_reason(label, end);
    assert_no_divergence(net, label);
    assert_nothing_pending(net, label);
    error
}

/// A `cggmp-sign-mid` row: node3 armed, a full signing of `key_id` with node3 among its
/// signers, node3 aborting once its second round is handed to its p2p task (so its first
/// round had reached the others). The others name it once the signing has been quiet for the
/// silence timeout with node3 behind ("stopped"; "nothing received" would mean its first
/// round never got out), and the next attempt signs without it, long before the deadline;
/// then node3 signs again. Returns the row of the summary.
fn sign_mid_row(
    net: &Localnet,
    procs: &mut Procs,
    label: &str,
    key_id: &str,
    prefix: &str,
    byte: u8,
) -> (String, String, String, String, Duration) {
    let t0 = Instant::now();
    eprintln!("cggmp crash matrix: {label}");
    let digest = [byte; 32];
    let armed = arm(net, procs, 3, "cggmp-sign-mid");
    let sent = crash_during(net, procs, armed, || {
        submit_until(net, key_id, prefix, &digest, true, |s| s.contains(&3))
    });
    let end = settled(
        net,
        &format!("/sign/{}", sent.request_id),
        SIGN_DEADLINE_BLOCKS,
    );
    assert_eq!(
        end["status"], "DONE",
        "{label}: {end}; signers {:?}",
        sent.signers
    );
    verified(net, key_id, &digest, true, &end);
    let error = named_silent(net, label, &end, "node3", true);
    let outcome = if error.contains("stopped") {
        "DONE (next attempt; node3 stopped mid-signing)"
    } else {
        "DONE (next attempt; node3 sent nothing)"
    };
    let took = t0.elapsed();
    let after = format!("after-{prefix}");
    let next = [byte.wrapping_add(1); 32];
    sign_until(net, key_id, &after, &next, true, |s| s.contains(&3));
    (
        label.into(),
        "sign (full)".into(),
        outcome.into(),
        format!("{error}; then signs with node3"),
        took,
    )
}

#[test]
fn n4t2_cggmp_localnet__should_end_every_session_and_sign_again_when_a_node_crashes_mid_signing_or_keygen(
) {
    let started = Instant::now();
    let fixtures = seqmpc_e2e::cggmp_fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let deadline = DEADLINE_BLOCKS.to_string();
    let keygen_deadline = KEYGEN_DEADLINE_BLOCKS.to_string();
    let net = Localnet::start_with_env(
        &dir,
        NODES as u32,
        THRESHOLD,
        BLOCK_MS,
        20000,
        &[
            "--session-deadline-blocks".as_ref(),
            deadline.as_ref(),
            "--cggmp-keygen-deadline-blocks".as_ref(),
            keygen_deadline.as_ref(),
            "--cggmp-fixtures".as_ref(),
            fixtures.as_os_str(),
            "--cggmp-presign-pool".as_ref(),
            "1".as_ref(),
        ],
        NODE_ENV,
    )
    .unwrap();
    let mut procs = Procs((0..NODES).map(|_| None).collect(), NODE_ENV);
    let mut summary: Vec<(String, String, String, String, Duration)> = Vec::new();

    // node2 carries row 1's crash point from the start: a restart empties the presignature
    // pools, so it must hold its presignatures from before the row. The point is reached only
    // by a signing from a presignature, which nothing runs before row 1.
    let armed = arm(&net, &mut procs, 2, "presign-after-take");
    let k = mpcctl(&net, &keygen_args(EC)).unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    let t = Instant::now();
    // The refill is background work: its workers run at the lowest CPU priority, so a signing
    // beside them is not slowed past its deadline (see `seqmpc_module::node::cggmp`).
    let mut presign_nices = Vec::new();
    assert!(
        wait_for(Duration::from_secs(180), || {
            presign_nices.extend(net.thread_nices("presign-"));
            pools_full(&net, EC).then_some(())
        })
        .is_some(),
        "presignature pools did not fill"
    );
    assert!(
        !presign_nices.is_empty(),
        "no presignature worker thread seen while the pools filled"
    );
    assert!(
        presign_nices.iter().all(|&n| n == 19),
        "presignature workers not at the lowest priority: {presign_nices:?}"
    );
    eprintln!(
        "cggmp crash matrix: pools of {EC} full in {:?}",
        t.elapsed()
    );

    // Row 1: node2 takes the presignature of its subset that the aggregator named, and aborts
    // before sending its partial signature.
    let t0 = Instant::now();
    let label = "presign-after-take @node2";
    eprintln!("cggmp crash matrix: {label}");
    let msg = b"in flight, presigned";
    let sent = crash_during(&net, &mut procs, armed, || {
        submit_until(&net, EC, "presigned", msg, false, |s| s.contains(&2))
    });
    let partner = sent.signers.iter().copied().find(|&i| i != 2).unwrap();
    // Memory-only pools: the restarted node2 holds no presignature of before. A node below it
    // (so the aggregator of their subset) that was not in the crashed request still holds that
    // subset's old one (and generates no other: its pool is full).
    let other = if partner == 0 { 1 } else { 0 };
    // (A leader whose presignature the crash consumed may refill its pool with the restarted
    // node2; node<other>'s is full, so it does not.)
    let node2_holds_none = |net: &Localnet| pool_level(net, 2, EC, &[other, 2]) == 0;
    assert!(node2_holds_none(&net), "{label}: node2 kept a presignature");
    assert!(
        pool_level(&net, other, EC, &[other, 2]) >= 1,
        "{label}: node{other} lost its (node{other}, node2) presignature"
    );
    let end = settled(
        &net,
        &format!("/sign/{}", sent.request_id),
        SIGN_DEADLINE_BLOCKS,
    );
    // node2 sent nothing in that signing: its partner named it at the silence timeout, and
    // the next attempt signed without it.
    verified(&net, EC, msg, false, &end);
    assert!(
        end["ended_attempts"][0]["signers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|n| n == "node2")),
        "{label}: {end}; signers {:?}",
        sent.signers
    );
    let error = named_silent(&net, label, &end, "node2", false);
    assert!(node2_holds_none(&net), "{label}: node2 kept a presignature");
    // node<other> names its old presignature; node2 lacks it: both fall back to the full
    // protocol.
    let log_before = node_log(&net, 2).len();
    let (sent, _) = sign_until(
        &net,
        EC,
        "after-presigned",
        b"after presign-after-take",
        false,
        |s| s == [other, 2],
    );
    assert_eq!(
        presigned(&net, other),
        sent.presigned_before[other],
        "{label}: a presignature was used"
    );
    let log = node_log(&net, 2);
    assert!(
        log.get(log_before..)
            .unwrap_or_default()
            .contains("named presignature not held here"),
        "{label}: node2 did not fall back for lack of the old presignature"
    );
    summary.push((
        label.into(),
        "sign (presigned)".into(),
        "DONE (next attempt)".into(),
        format!("{error}; then full-protocol fallback signs"),
        t0.elapsed(),
    ));

    // Row 2: a full signing (prehashed digest) of two signers; node3 aborts once its second
    // round is out.
    summary.push(sign_mid_row(
        &net,
        &mut procs,
        "cggmp-sign-mid @node3",
        EC,
        "full",
        0x33,
    ));

    // Row 3: a CGGMP24 keygen; node1 has its share in hand and aborts before storing it.
    let t0 = Instant::now();
    let label = "keygen-before-store @node1";
    eprintln!("cggmp crash matrix: {label}");
    let key = "ec-k";
    let armed = arm(&net, &mut procs, 1, "keygen-before-store");
    let out = crash_during(&net, &mut procs, armed, || mpcctl(&net, &keygen_args(key)));
    let end = settled(&net, &format!("/key/{key}"), KEYGEN_DEADLINE_BLOCKS);
    assert_eq!(end["status"], "ERROR", "{label}: {end}; mpcctl: {out:?}");
    let error = ended_by_deadline(&net, label, &end);
    let k = mpcctl(&net, &keygen_args(key)).unwrap();
    assert_eq!(k["status"], "READY", "{label}: keygen retry: {k}");
    for i in 0..NODES {
        let v = net.node_get(i, &format!("/key/{key}")).unwrap();
        assert_eq!(v["status"], "READY", "{label}: node{i}: {v}");
        assert_eq!(v["public_key"], k["public_key"], "{label}: node{i}: {v}");
    }
    sign_until(&net, key, "after-keygen", &[0x35u8; 32], true, |s| {
        s.contains(&1)
    });
    summary.push((
        label.into(),
        "keygen".into(),
        "ERROR".into(),
        format!("{error}; retry READY + signs"),
        t0.elapsed(),
    ));

    // Row 4: the same with three signers (a 3-of-4 key). The two others name node3: each got
    // fewer messages from it than it sent it once the signing went quiet. One that got
    // node3's second round while the other did not is a round ahead of that other one and
    // names both; the other names node3 only, so node3 alone is named by a majority. The
    // attempt's deadline here is the request's (240 blocks), so DONE means the next attempt
    // came from the reports.
    let k = mpcctl(&net, &keygen_args_t(EC3, "3")).unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    let label = "cggmp-sign-mid, 3 signers @node3";
    summary.push(sign_mid_row(&net, &mut procs, label, EC3, "full3", 0x36));

    assert_no_divergence(&net, "end");
    assert_nothing_pending(&net, "end");
    eprintln!(
        "\ncggmp24 crash matrix ({} rows, {:?}):",
        summary.len(),
        started.elapsed()
    );
    for (label, op, outcome, reason, t) in &summary {
        eprintln!(
            "{label:<30} {op:<18} {outcome:<6} {reason:<90} {:>5.1}",
            t.as_secs_f64()
        );
    }
    drop(procs);
    net.stop().unwrap();
}
