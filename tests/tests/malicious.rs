//! Malicious peers over the real localnet (issue 5): node1 runs a test-only build that
//! misbehaves as `SEQMPC_FAULTS` tells it (cargo feature `fault-injection`, module
//! `seqmpc_module::fault`); the honest nodes end each session ERROR with node1 named as the
//! culprit on chain (verified by the chain from node1's signed messages where they prove it),
//! a key never becomes READY from a bad DKG, and READY keys keep signing.
//! One table: behaviour × operation × expected outcome.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use seqmpc_e2e::Localnet;
use serde_json::Value;

fn verify(public_key: &str, message: &[u8], signature: &str) {
    seqmpc_e2e::verify::ed25519(public_key, message, signature).unwrap();
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Faults whose blame the culprit's signed p2p messages prove to the chain
/// (`seqmpc_module::evidence`): `proven_blame` names node1.
const PROVABLE: &[&str] = &[
    "dkg-bad-share-to",
    "dkg-equivocate-to",
    "reshare-bad-deal-to",
];

/// What a row does with the misbehaving node.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// A 3-of-4 frost-ed25519 keygen of a fresh key id.
    Keygen,
    /// Sign requests with the READY key until one has node1 as a non-aggregating signer.
    Sign,
    /// Refreshes of the READY key until node1 is one of the dealers.
    Reshare,
}

/// Runs `op` once or more; returns (sessions run, the outcome JSON of the failed session).
fn run(net: &Localnet, op: Op, row: usize, pk: &str) -> (usize, Value) {
    match op {
        Op::Keygen => {
            let id = format!("bad{row}");
            let err = net
                .mpcctl_json(&[
                    "keygen",
                    "--key-id",
                    &id,
                    "--scheme",
                    "frost-ed25519",
                    "--threshold",
                    "3",
                    "--wait",
                ])
                .expect_err("a keygen with a malicious party must not succeed");
            assert!(err.contains("ERROR"), "{err}");
            (1, net.mpcctl_json(&["key", "--key-id", &id]).unwrap())
        }
        Op::Sign => {
            for i in 0..12 {
                let msg = format!("row {row} attempt {i}");
                let rid = format!("bad{row}-{i}");
                match net.mpcctl_json(&[
                    "sign",
                    "--key-id",
                    "good",
                    "--request-id",
                    &rid,
                    "--message",
                    &hex::encode(&msg),
                    "--wait",
                ]) {
                    // node1 was not a signer, or aggregated (and checked its own share).
                    Ok(s) => {
                        let signers = names(&s["signers"]);
                        assert!(
                            !signers.contains(&"node1".to_owned()) || signers[0] == "node1",
                            "a bad share from node1 went unnoticed: {s}"
                        );
                        verify(pk, msg.as_bytes(), s["signature"].as_str().unwrap());
                    }
                    Err(_) => {
                        return (
                            i + 1,
                            net.mpcctl_json(&["sign-status", "--request-id", &rid])
                                .unwrap(),
                        )
                    }
                }
            }
            panic!("node1 was never a non-aggregating signer in 12 requests")
        }
        Op::Reshare => {
            for i in 0..8 {
                match net.mpcctl_json(&["refresh", "--key-id", "good", "--wait"]) {
                    Ok(k) => assert!(
                        !names(&k["reshare"]["dealers"]).contains(&"node1".to_owned()),
                        "node1 dealt a bad share and the refresh succeeded: {k}"
                    ),
                    Err(_) => {
                        let k = net.mpcctl_json(&["key", "--key-id", "good"]).unwrap();
                        return (i + 1, k["reshare"].clone());
                    }
                }
            }
            panic!("node1 was never a dealer in 8 refreshes")
        }
    }
}

#[test]
fn n4_localnet__should_name_a_malicious_node_as_culprit_in_every_behaviour() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Localnet::start(&dir, 4, 3, 100, 19000).unwrap();
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "good",
            "--scheme",
            "frost-ed25519",
            "--threshold",
            "3",
            "--wait",
        ])
        .unwrap();
    let pk = k["public_key"].as_str().unwrap().to_owned();

    // (fault of node1, operation, what the failed session must show)
    let table: &[(&str, Op, &str)] = &[
        // frost#577: a bad DKG share to one party only. The key must never become READY.
        ("dkg-bad-share-to=node2", Op::Keygen, "node2 reported"),
        // An equivocating broadcast: node3 gets another round-1 package than the others.
        ("dkg-equivocate-to=node3", Op::Keygen, "node3 reported"),
        // A signature share that does not verify, caught by the aggregator.
        ("sign-bad-share", Op::Sign, "node1"),
        // A resharing dealer deals node2 a share off its polynomial.
        ("reshare-bad-deal-to=node2", Op::Reshare, "node2 reported"),
    ];
    let mut summary = Vec::new();
    for (row, (fault, op, reason)) in table.iter().enumerate() {
        net.kill_node(1).ok(); // the first time: localnet's node1; later: already stopped
        let faulty = net
            .restart_node(1, &[], &[("SEQMPC_FAULTS", fault)])
            .unwrap();
        let (sessions, failed) = run(&net, *op, row, &pk);
        eprintln!("{fault:28} {op:8?} sessions {sessions:2}  -> {failed}");
        assert_eq!(failed["status"], "ERROR", "{fault}: {failed}");
        assert_eq!(names(&failed["culprits"]), ["node1"], "{fault}: {failed}");
        assert!(
            failed["error"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{fault}: {failed}"
        );
        // Where the culprit's own signed messages show the misbehaviour, the chain verified
        // the blame itself; a bad signature share stays the aggregator's claim.
        let proven = &failed["proven_blame"];
        if PROVABLE.iter().any(|p| fault.starts_with(p)) {
            assert_eq!(proven[0]["culprit"], "node1", "{fault}: {failed}");
            eprintln!("    proven on chain: {}", proven[0]["reason"]);
        } else {
            assert!(proven.is_null(), "{fault}: {failed}");
        }
        summary.push((fault.to_string(), sessions));
        drop(faulty);
        // The honest node1 again: the READY key signs, with node1 among the signers.
        let honest = net.restart_node(1, &[], &[]).unwrap();
        let mut with_node1 = false;
        for i in 0..8 {
            let msg = format!("honest after row {row} #{i}");
            let s = net
                .mpcctl_json(&[
                    "sign",
                    "--key-id",
                    "good",
                    "--message",
                    &hex::encode(&msg),
                    "--wait",
                ])
                .unwrap();
            verify(&pk, msg.as_bytes(), s["signature"].as_str().unwrap());
            if names(&s["signers"]).contains(&"node1".to_owned()) {
                with_node1 = true;
                break;
            }
        }
        assert!(with_node1, "node1 never signed after row {row}");
        drop(honest);
    }
    // No bad keygen left a key behind anywhere, and no node diverges from the chain.
    let keys = net.mpcctl_json(&["keys"]).unwrap();
    for k in keys.as_array().unwrap() {
        if k["key_id"] != "good" {
            assert_eq!(k["status"], "ERROR", "{k}");
        }
    }
    let _honest = net.restart_node(1, &[], &[]).unwrap();
    net.check_settled(4).unwrap();
    eprintln!("malicious-peer table: {summary:?}");
    net.stop().unwrap();
}
