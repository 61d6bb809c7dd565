//! Crashes and restarts (issue 5): a crash matrix over real processes. For each row one node
//! is restarted with `SEQMPC_FAULTS=crash-at=<point>` (an `abort()` at that exact phase, the
//! reproducible form of `kill -9`: FROST sessions last milliseconds), the operation that
//! reaches the point is run with mpcctl, the node is restarted normally, and then:
//! - the session ended (READY/DONE or ERROR) within the chain deadline plus a margin, and
//!   neither the chain nor any node's store holds a PENDING key afterwards;
//! - every node's `/status` reports no divergence from the chain;
//! - the READY keys sign (4-of-4, so the restarted node is always a signer; ed25519-dalek
//!   `verify_strict`, or BIP340 with libsecp256k1), and a key whose keygen ended ERROR is
//!   generated again and signs;
//! - the restarted node resumed nothing (it never persists nonces or DKG secrets: its log has
//!   no "resumed" session), so no signature share is ever made twice from the same nonces.
//!
//! Rows run on frost-ed25519 keys, and three on frost-secp256k1-tr keys (keygen, signing,
//! resharing: the FROST node code is generic over the ciphersuite; BIP340 checked with
//! libsecp256k1). The CGGMP24 rows run on a localnet of their own, in [`cggmp`].
//!
//! Run with `--nocapture` for the summary table.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use seqmpc_e2e::{verify, wait_for, Localnet, Restarted};
use serde_json::Value;

#[path = "crash/cggmp.rs"]
mod cggmp;

/// Genesis `session_deadline_blocks` of this localnet (`localnet start --session-deadline-blocks`):
/// 4 s at 100 ms blocks, so the rows that end by deadline stay short.
const DEADLINE_BLOCKS: u64 = 40;
const BLOCK_MS: u64 = 100;
const NODES: usize = 4;
/// Keys are 4-of-4: every node signs and deals in every session, so the crashing node is always
/// reached, and a READY key that signs proves the restarted node's share.
const THRESHOLD: &str = "4";

#[derive(Clone, Copy, Debug)]
enum Op {
    /// A new key (`k-<n>`).
    Keygen,
    /// A signature with the main key.
    Sign,
    /// A refresh (resharing to the same committee) of the main key.
    Refresh,
    /// Deletion of the key the row names.
    Delete(&'static str),
}

/// What the crash must lead to on the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The session ends ERROR (the crashed node never reports) by its deadline.
    Error,
    /// The session completes (the crash comes after everything the chain needs).
    Done,
    /// A signing: its first attempt is lost with the crashed signer; the chain's next attempt
    /// (with the restarted node, as every node of a 4-of-4 key must sign) ends it DONE when
    /// the node is back in time, else it ends ERROR at its deadline. Either way it ends.
    Ended,
}

/// The FROST scheme of a row's keys (the FROST node code is generic over the ciphersuite, so
/// a few rows on frost-secp256k1-tr keys check that the generic paths behave alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frost {
    Ed25519,
    Secp256k1Tr,
}

impl Frost {
    /// mpcctl's `--scheme`.
    fn name(self) -> &'static str {
        match self {
            Frost::Ed25519 => "frost-ed25519",
            Frost::Secp256k1Tr => "frost-secp256k1-tr",
        }
    }

    /// The key the sign and refresh rows of this scheme use.
    fn main_key(self) -> &'static str {
        match self {
            Frost::Ed25519 => MAIN,
            Frost::Secp256k1Tr => TR_MAIN,
        }
    }
}

struct Row {
    point: &'static str,
    node: usize,
    op: Op,
    expect: Expect,
    scheme: Frost,
}

const fn row(point: &'static str, node: usize, op: Op, expect: Expect) -> Row {
    Row {
        point,
        node,
        op,
        expect,
        scheme: Frost::Ed25519,
    }
}

/// A row on frost-secp256k1-tr keys.
const fn tr(point: &'static str, node: usize, op: Op, expect: Expect) -> Row {
    Row {
        scheme: Frost::Secp256k1Tr,
        ..row(point, node, op, expect)
    }
}

/// The matrix. FROST signing aggregates at the smallest signer id (node0), so the
/// `sign-before-share` row crashes another node: the aggregator sends no share.
const ROWS: &[Row] = &[
    row("keygen-after-pending", 1, Op::Keygen, Expect::Error),
    row("keygen-before-store", 2, Op::Keygen, Expect::Error),
    row("keygen-after-store", 3, Op::Keygen, Expect::Error),
    row("sign-after-commitments", 1, Op::Sign, Expect::Ended),
    row("sign-before-share", 2, Op::Sign, Expect::Ended),
    row("reshare-after-deal", 3, Op::Refresh, Expect::Error),
    row("reshare-after-stage", 0, Op::Refresh, Expect::Error),
    row("reshare-before-promote", 2, Op::Refresh, Expect::Done),
    row("reshare-after-promote", 1, Op::Refresh, Expect::Done),
    row("delete-before-erase", 3, Op::Delete("k-1"), Expect::Done),
    row("delete-after-erase", 0, Op::Delete("k-2"), Expect::Done),
    tr("keygen-before-store", 1, Op::Keygen, Expect::Error),
    tr("sign-before-share", 3, Op::Sign, Expect::Ended),
    tr("reshare-after-stage", 2, Op::Refresh, Expect::Error),
];

const MAIN: &str = "main";
/// The frost-secp256k1-tr key of the tr rows.
const TR_MAIN: &str = "tr-main";

/// Runs mpcctl; its JSON output whether it succeeded or not (mpcctl prints the final state
/// of a session that ended ERROR, then exits 1), else the error text.
fn mpcctl(net: &Localnet, args: &[&str]) -> Result<Value, String> {
    let out = net.mpcctl(args);
    serde_json::from_slice(&out.stdout).map_err(|_| {
        format!(
            "mpcctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn keygen(net: &Localnet, key_id: &str, scheme: Frost) -> Value {
    mpcctl(
        net,
        &[
            "keygen",
            "--key-id",
            key_id,
            "--scheme",
            scheme.name(),
            "--threshold",
            THRESHOLD,
            "--wait",
        ],
    )
    .unwrap()
}

fn sign_request(net: &Localnet, key_id: &str, request_id: &str, msg: &str) -> Value {
    mpcctl(
        net,
        &[
            "sign",
            "--key-id",
            key_id,
            "--request-id",
            request_id,
            "--message",
            &hex::encode(msg),
            "--wait",
        ],
    )
    .unwrap()
}

/// Signs with `key_id`, verifies the signature (ed25519-dalek `verify_strict`, or BIP340 with
/// libsecp256k1, after the key's scheme on the chain) and that every node signed.
fn sign_and_verify(net: &Localnet, key_id: &str, request_id: &str) {
    let key = net.query(&format!("/key/{key_id}")).unwrap();
    let pk = key["public_key"].as_str().unwrap();
    let msg = format!("after {request_id}");
    let s = sign_request(net, key_id, request_id, &msg);
    assert_eq!(s["status"], "DONE", "{request_id}: {s}");
    let sig = s["signature"].as_str().unwrap();
    match key["scheme"].as_str().unwrap() {
        "frost-ed25519" => verify::ed25519(pk, msg.as_bytes(), sig),
        "frost-secp256k1-tr" => verify::bip340(pk, msg.as_bytes(), sig),
        other => panic!("{key_id}: unexpected scheme {other}"),
    }
    .unwrap_or_else(|e| panic!("{request_id}: {e:#}"));
    assert_eq!(s["signers"].as_array().unwrap().len(), NODES, "{s}");
}

/// Node processes: localnet's own until a test restart replaces them; and the environment
/// every restart gets (what the localnet's nodes were started with).
struct Procs(
    Vec<Option<Restarted>>,
    &'static [(&'static str, &'static str)],
);

impl Procs {
    /// Stops node `i` (kill -9 for localnet's process; our restarts stop on drop) and starts
    /// it again with `faults` (empty: none).
    fn restart(&mut self, net: &Localnet, i: usize, faults: &str) {
        match self.0[i].take() {
            Some(r) => drop(r),
            None => net.kill_node(i).unwrap(),
        }
        // The killed process must let go of its ports and store lock.
        std::thread::sleep(Duration::from_millis(300));
        let mut env = self.1.to_vec();
        if !faults.is_empty() {
            env.push(("SEQMPC_FAULTS", faults));
        }
        self.0[i] = Some(net.restart_node(i, &[], &env).unwrap());
    }

    fn crashed(&mut self, i: usize) -> bool {
        self.0[i].as_mut().is_some_and(Restarted::exited)
    }
}

fn node_log(net: &Localnet, i: usize) -> String {
    std::fs::read_to_string(net.info["nodes"][i]["log"].as_str().unwrap()).unwrap()
}

/// Waits until no node's `/status` reports a divergence and the sequencer saw no app hash
/// divergence; panics with the last finding otherwise.
fn assert_no_divergence(net: &Localnet, row: &str) {
    let mut last = String::new();
    wait_for(Duration::from_secs(15), || match net.check_settled(NODES) {
        Ok(()) => Some(()),
        Err(e) => {
            last = format!("{e:#}");
            None
        }
    })
    .unwrap_or_else(|| panic!("{row}: {last}"));
}

/// No key is PENDING on the chain, nor in any node's store.
fn assert_nothing_pending(net: &Localnet, row: &str) {
    let keys = net.query("/keys").unwrap();
    let keys = keys
        .as_array()
        .or_else(|| keys["keys"].as_array())
        .cloned()
        .unwrap_or_default();
    for k in &keys {
        assert_ne!(k["status"], "PENDING", "{row}: chain key PENDING: {k}");
    }
    for i in 0..NODES {
        let local = net.node_get(i, "/keys").unwrap();
        let local = local
            .as_array()
            .or_else(|| local["keys"].as_array())
            .cloned()
            .unwrap_or_default();
        for r in &local {
            assert_ne!(
                r["status"], "PENDING",
                "{row}: node{i} holds a PENDING record: {r}"
            );
        }
    }
}

/// The chain's final state of the row's session, polled until it is no longer PENDING.
fn settled(net: &Localnet, op: Op, key_id: &str, request_id: &str, timeout: Duration) -> Value {
    let path = match op {
        Op::Sign => format!("/sign/{request_id}"),
        _ => format!("/key/{key_id}"),
    };
    wait_for(timeout, || {
        let v = net.query(&path).ok()?;
        let done = match op {
            Op::Keygen | Op::Sign => v["status"] != "PENDING",
            Op::Refresh => v["reshare"]["status"] != "PENDING",
            Op::Delete(_) => v["status"] == "DELETED",
        };
        done.then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "{path} still unsettled after {timeout:?}: {}",
            net.query(&path).unwrap()
        )
    })
}

#[test]
fn n4t4_localnet__should_end_every_session_and_keep_ready_shares_when_a_node_crashes_at_any_phase()
{
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let deadline = DEADLINE_BLOCKS.to_string();
    let net = Localnet::start_with(
        &dir,
        NODES as u32,
        3,
        BLOCK_MS,
        19200,
        &["--session-deadline-blocks".as_ref(), deadline.as_ref()],
    )
    .unwrap();
    let mut procs = Procs((0..NODES).map(|_| None).collect(), &[]);

    // The main keys and two keys for the deletion rows.
    for (key_id, scheme) in [
        (MAIN, Frost::Ed25519),
        ("k-1", Frost::Ed25519),
        ("k-2", Frost::Ed25519),
        (TR_MAIN, Frost::Secp256k1Tr),
    ] {
        let k = keygen(&net, key_id, scheme);
        assert_eq!(k["status"], "READY", "{k}");
        assert_eq!(k["scheme"], scheme.name(), "{k}");
    }
    sign_and_verify(&net, MAIN, "warmup");
    sign_and_verify(&net, TR_MAIN, "warmup-tr");

    // Deadline in wall time, with blocks slower than BLOCK_MS on 2 busy cores, plus a margin.
    let settle = Duration::from_millis(DEADLINE_BLOCKS * BLOCK_MS * 3) + Duration::from_secs(15);
    let mut summary = Vec::new();
    let mut keygens = 2;
    for (n, r) in ROWS.iter().enumerate() {
        let t0 = Instant::now();
        let main = r.scheme.main_key();
        let label = match r.scheme {
            Frost::Ed25519 => format!("{} @node{}", r.point, r.node),
            Frost::Secp256k1Tr => format!("tr {} @node{}", r.point, r.node),
        };
        eprintln!("crash matrix: {label}: {:?}", r.op);
        let log_before = node_log(&net, r.node).len();
        procs.restart(&net, r.node, &format!("crash-at={}", r.point));

        let request_id = format!("crash-{n}");
        let key_id = match r.op {
            Op::Keygen => {
                keygens += 1;
                format!("k-{keygens}")
            }
            Op::Sign | Op::Refresh => main.to_owned(),
            Op::Delete(k) => k.to_owned(),
        };
        let generation_before = net.query(&format!("/key/{main}")).unwrap()["generation"].clone();
        // Run the operation; it blocks until the session ends, so in a thread.
        let op = std::thread::scope(|s| {
            let net = &net;
            let (key_id, request_id) = (key_id.as_str(), request_id.as_str());
            let op = s.spawn(move || match r.op {
                Op::Keygen => mpcctl(
                    net,
                    &[
                        "keygen",
                        "--key-id",
                        key_id,
                        "--scheme",
                        r.scheme.name(),
                        "--threshold",
                        THRESHOLD,
                        "--wait",
                    ],
                ),
                Op::Sign => mpcctl(
                    net,
                    &[
                        "sign",
                        "--key-id",
                        key_id,
                        "--request-id",
                        request_id,
                        "--message",
                        &hex::encode("in flight"),
                        "--wait",
                    ],
                ),
                Op::Refresh => mpcctl(net, &["refresh", "--key-id", key_id, "--wait"]),
                // Deletion has no deadline: it waits for every party, the restarted one too.
                Op::Delete(_) => mpcctl(
                    net,
                    &["--timeout", "90", "delete", "--key-id", key_id, "--wait"],
                ),
            });
            let crashed = wait_for(Duration::from_secs(30), || {
                procs.crashed(r.node).then_some(())
            });
            assert!(
                crashed.is_some(),
                "{label}: node{} never reached its crash point",
                r.node
            );
            procs.restart(net, r.node, "");
            op.join().unwrap()
        });
        let log = node_log(&net, r.node);
        let log = log.get(log_before..).unwrap_or_default();
        assert!(
            log.contains(&format!("crash-at={}: aborting", r.point)),
            "{label}: the crash point was not what stopped the node"
        );
        assert!(
            !log.to_lowercase().contains("resumed"),
            "{label}: the restarted node resumed a session"
        );

        let end = settled(&net, r.op, &key_id, &request_id, settle);
        let outcome = match r.op {
            Op::Keygen | Op::Sign | Op::Delete(_) => end["status"].as_str().unwrap().to_owned(),
            Op::Refresh => format!(
                "reshare {} (generation {} -> {})",
                end["reshare"]["status"].as_str().unwrap(),
                generation_before,
                end["generation"]
            ),
        };
        let ended_ok = match r.op {
            Op::Keygen => end["status"] == "READY",
            Op::Sign => end["status"] == "DONE",
            Op::Refresh => end["reshare"]["status"] == "DONE",
            Op::Delete(_) => end["status"] == "DELETED",
        };
        if r.expect != Expect::Ended {
            assert_eq!(
                ended_ok,
                r.expect == Expect::Done,
                "{label}: expected {:?}, got {end}; mpcctl: {op:?}",
                r.expect
            );
        }
        let error = if r.expect == Expect::Error || (r.expect == Expect::Ended && !ended_ok) {
            error_reason(&label, &end)
        } else {
            String::new()
        };
        if let Op::Refresh = r.op {
            // The key never leaves READY and keeps its public key; a failed refresh keeps the
            // old generation.
            assert_eq!(end["status"], "READY", "{label}: {end}");
            let expect_gen = generation_before.as_u64().unwrap() + u64::from(ended_ok);
            assert_eq!(
                end["generation"].as_u64(),
                Some(expect_gen),
                "{label}: {end}"
            );
            // Every node, the restarted one too, holds that generation READY.
            for i in 0..NODES {
                let ok = wait_for(Duration::from_secs(10), || {
                    let k = net.node_get(i, &format!("/key/{main}")).ok()?;
                    (k["status"] == "READY" && k["generation"].as_u64() == Some(expect_gen))
                        .then_some(())
                });
                assert!(
                    ok.is_some(),
                    "{label}: node{i} holds {}",
                    net.node_get(i, &format!("/key/{main}")).unwrap()
                );
            }
        }

        assert_no_divergence(&net, &label);
        assert_nothing_pending(&net, &label);

        // READY shares survive and sign, the restarted node among the signers.
        let mut after = Vec::new();
        if let Op::Keygen = r.op {
            // The failed key id takes a new attempt, which must succeed with every node.
            let k = keygen(&net, &key_id, r.scheme);
            assert_eq!(k["status"], "READY", "{label}: keygen retry: {k}");
            sign_and_verify(&net, &key_id, &format!("{request_id}-retry"));
            after.push(format!("retry {key_id} READY+signs"));
        }
        if let Op::Delete(k) = r.op {
            for i in 0..NODES {
                assert!(
                    net.node_get(i, &format!("/key/{k}")).is_err(),
                    "{label}: node{i} still holds {k}"
                );
            }
        }
        sign_and_verify(&net, main, &format!("{request_id}-after"));
        after.push(format!("{main} signs"));
        assert_no_divergence(&net, &label);

        let mut reason: String = error.chars().take(60).collect();
        if reason.is_empty() {
            reason.push('-');
        }
        summary.push((
            label,
            format!("{:?}", r.op),
            outcome,
            reason,
            after.join(", "),
            t0.elapsed(),
        ));
    }
    assert_nothing_pending(&net, "end");

    eprintln!(
        "\ncrash matrix ({} rows, {:?}):",
        summary.len(),
        started.elapsed()
    );
    eprintln!(
        "{:<36} {:<14} {:<34} {:<60} {:<32} {:>5}",
        "scenario", "session", "outcome", "reason", "afterwards", "secs"
    );
    for (label, op, outcome, reason, after, t) in &summary {
        eprintln!(
            "{label:<36} {op:<14} {outcome:<34} {reason:<60} {after:<32} {:>5.1}",
            t.as_secs_f64()
        );
    }
    drop(procs);
    net.stop().unwrap();
}

/// The reason of a session (or the key's resharing) that ended ERROR: it names one, and does
/// not show the restarted node redoing anything with other nonces or secrets (nobody saw it
/// send a second, different message in the ended session).
fn error_reason(label: &str, end: &Value) -> String {
    let error = end["error"]
        .as_str()
        .or(end["reshare"]["error"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        !error.is_empty(),
        "{label}: an ERROR names its reason: {end}"
    );
    assert!(
        !error.contains("two different"),
        "{label}: the restarted node equivocated: {error}"
    );
    error
}
