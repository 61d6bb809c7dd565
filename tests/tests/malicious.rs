//! Malicious peers over the real localnet (issue 5): node1 runs a test-only build that
//! misbehaves as `SEQMPC_FAULTS` tells it (cargo feature `fault-injection`, module
//! `seqmpc_module::fault`); the honest nodes end each keygen or resharing ERROR with node1
//! named as the culprit on chain (verified by the chain from node1's signed messages where
//! they prove it), a key never becomes READY from a bad DKG, a signing request still ends DONE
//! (the chain leaves node1 out of its next attempt), and READY keys keep signing.
//! One table: behaviour × operation × expected outcome. Then a process whose key is not in
//! the registry (this test, through the node's own p2p layer) talks to every node around a
//! sign session: refused at the handshake, counted, the session DONE, nobody blamed.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use seqmpc_e2e::{wait_for, Localnet};
use seqmpc_module::p2p::{self, P2pConfig, PeerInfo};
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, SessionId};
use serde_json::Value;

/// Genesis session deadline of this localnet: 200 blocks (20 s or more at 100 ms blocks).
const DEADLINE_BLOCKS: &str = "200";
/// The honest nodes give up a FROST session locally after this many seconds, well before
/// the chain's deadline, so their report (naming whom they heard nothing from) counts.
const SESSION_TIMEOUT_SECS: &str = "6";
/// The FROST scheme of the FROST rows.
const FROST: &str = "frost-ed25519";
/// Environment of an honest node.
/// CGGMP24 signers name a signer they heard nothing from after this many seconds.
const SILENCE_TIMEOUT_SECS: &str = "10";
const HONEST: &[(&str, &str)] = &[
    ("SEQMPC_SESSION_TIMEOUT_SECS", SESSION_TIMEOUT_SECS),
    ("SEQMPC_CGGMP_SILENCE_TIMEOUT_SECS", SILENCE_TIMEOUT_SECS),
];

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
    "sign-bad-share",
];

/// What a row does with the misbehaving node.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// A 3-of-4 keygen of a fresh key id with this scheme.
    Keygen(&'static str),
    /// Sign requests with the READY key until one needed a second attempt (node1 was a
    /// signer that spoiled the first).
    Sign,
    /// One refresh of the READY key first (node1's fault leaves resharing alone), then as
    /// `Sign`: the chain checks shares against the new generation's verifying shares.
    SignNewGeneration,
    /// Refreshes of the READY key until node1 is one of the dealers.
    Reshare,
}

/// Runs `op` once or more; returns (sessions run, the outcome JSON of the spoiled session:
/// a failed keygen or resharing, or a signing request that needed another attempt).
fn run(net: &Localnet, op: Op, row: usize, pk: &str) -> (usize, Value) {
    match op {
        Op::Keygen(scheme) => {
            let id = format!("bad{row}");
            let err = net
                .mpcctl_json(&[
                    "keygen",
                    "--key-id",
                    &id,
                    "--scheme",
                    scheme,
                    "--threshold",
                    "3",
                    "--wait",
                ])
                .expect_err("a keygen with a malicious party must not succeed");
            assert!(err.contains("ERROR"), "{err}");
            (1, net.mpcctl_json(&["key", "--key-id", &id]).unwrap())
        }
        Op::SignNewGeneration => {
            let before = net.mpcctl_json(&["key", "--key-id", "good"]).unwrap();
            let after = net
                .mpcctl_json(&["refresh", "--key-id", "good", "--wait"])
                .unwrap();
            assert_eq!(
                after["generation"].as_u64(),
                before["generation"].as_u64().map(|g| g + 1),
                "{after}"
            );
            run(net, Op::Sign, row, pk)
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
                    // Signed: by a signer set without node1 (the second attempt, when node1
                    // spoiled the first), or with node1 aggregating (it checks its own share).
                    Ok(s) => {
                        verify(pk, msg.as_bytes(), s["signature"].as_str().unwrap());
                        let signers = names(&s["signers"]);
                        if s["attempt"].as_u64().unwrap_or(0) > 0 {
                            assert!(!signers.contains(&"node1".to_owned()), "{s}");
                            return (i + 1, s);
                        }
                        assert!(
                            !signers.contains(&"node1".to_owned()) || signers[0] == "node1",
                            "a bad share from node1 went unnoticed: {s}"
                        );
                    }
                    Err(e) => panic!("a signing request failed: {e}"),
                }
            }
            panic!("node1 never spoiled a signing in 12 requests")
        }
        Op::Reshare => {
            for i in 0..8 {
                match net.mpcctl_json(&["refresh", "--key-id", "good", "--wait"]) {
                    Ok(k) => assert!(
                        !names(&k["reshare"]["dealers"]).contains(&"node1".to_owned()),
                        "node1 dealt a bad share and the refresh succeeded: {k}"
                    ),
                    Err(e) => {
                        assert!(e.contains("resharing of good ended \"ERROR\""), "{e}");
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
    // CGGMP24 from the test fixtures (primes and the 4 nodes' aux info: a keygen is the DKG
    // alone), no presignature pool (no background CPU).
    let fixtures = seqmpc_e2e::cggmp_fixtures();
    let t0 = std::time::Instant::now();
    let net = Localnet::start_with_env(
        &dir,
        4,
        3,
        100,
        19000,
        &[
            "--cggmp-fixtures".as_ref(),
            fixtures.as_os_str(),
            "--cggmp-presign-pool".as_ref(),
            "0".as_ref(),
            "--session-deadline-blocks".as_ref(),
            DEADLINE_BLOCKS.as_ref(),
        ],
        HONEST,
    )
    .unwrap();
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
        (
            "dkg-bad-share-to=node2",
            Op::Keygen(FROST),
            "node2 reported",
        ),
        // An equivocating broadcast: node3 gets another round-1 package than the others.
        (
            "dkg-equivocate-to=node3",
            Op::Keygen(FROST),
            "node3 reported",
        ),
        // A resharing dealer deals node2 a share off its polynomial.
        ("reshare-bad-deal-to=node2", Op::Reshare, "node2 reported"),
        // A signature share that does not verify, caught by the aggregator and proven on
        // chain from node1's signed share and the signing package it names, after a refresh:
        // against the verifying shares of the key's new generation.
        ("sign-bad-share", Op::SignNewGeneration, "node1"),
        // CGGMP24 DKG: a round-3 Schnorr proof that does not verify, to everybody. cggmp24
        // blames the prover's index; no key becomes READY.
        (
            "cggmp-bad-proof=keygen",
            Op::Keygen("cggmp24-secp256k1"),
            "schnorr proof",
        ),
        // Every message of node1 under another session id: the honest signers buffer them as
        // early messages of an unknown session, never see node1's commitments, and at their
        // local signing timeout name node1 as the signer they heard nothing from; named by
        // both other signers, node1 is left out of the request's next attempt.
        ("wrong-session", Op::Sign, "nothing received from node1"),
        // node1 withholds its signing messages from one other signer (the lowest) and names
        // it: that one stalls, so the third signer names it too, a majority; it names node1
        // back, and the chain leaves out the pair and never puts both in one later attempt.
        // (The last failure is any of the three reports: no reason is checked.)
        ("sign-frame", Op::Sign, ""),
    ];
    let mut summary = Vec::new();
    for (row, (fault, op, reason)) in table.iter().enumerate() {
        net.kill_node(1).ok(); // the first time: localnet's node1; later: already stopped
        let faulty = net
            .restart_node(1, &[], &[("SEQMPC_FAULTS", fault)])
            .unwrap();
        let (sessions, failed) = run(&net, *op, row, &pk);
        eprintln!("{fault:28} {op:8?} sessions {sessions:2}  -> {failed}");
        if matches!(op, Op::Sign | Op::SignNewGeneration) {
            // The request survived: DONE on the next attempt, node1 left out of it.
            assert_eq!(failed["status"], "DONE", "{fault}: {failed}");
            let excluded = names(&failed["excluded"]);
            if *fault == "sign-frame" {
                // node1 and each signer it framed (the pair named each other).
                assert!(excluded.contains(&"node1".to_owned()), "{fault}: {failed}");
                assert!(excluded.len() >= 2, "{fault}: {failed}");
            } else {
                assert_eq!(excluded, ["node1"], "{fault}: {failed}");
            }
        } else {
            assert_eq!(failed["status"], "ERROR", "{fault}: {failed}");
            assert_eq!(names(&failed["culprits"]), ["node1"], "{fault}: {failed}");
        }
        assert!(
            failed["error"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{fault}: {failed}"
        );
        // Where the culprit's own signed messages show the misbehaviour, the chain verified
        // the blame itself (a bad signature share: against node1's verifying share in the
        // key's public key package); silence and cggmp24's blame stay the reporter's claim.
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
        let honest = net.restart_node(1, &[], HONEST).unwrap();
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
    let _honest = net.restart_node(1, &[], HONEST).unwrap();
    net.check_settled(4).unwrap();
    // The registry counts, per node, the sessions that ended with a blame the chain verified.
    let counts: Vec<u64> = net
        .query("/nodes")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["proven_blames"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        counts,
        [0, PROVABLE.len() as u64, 0, 0],
        "proven blames per node"
    );
    eprintln!("malicious-peer table: {summary:?} ({:?})", t0.elapsed());

    let t = std::time::Instant::now();
    non_registry_peer(&net);
    eprintln!(
        "non-registry peer refused, the session DONE: {:?}",
        t.elapsed()
    );
    net.check_settled(4).unwrap();
    let t = std::time::Instant::now();
    withheld_ecdsa(&net);
    eprintln!(
        "withheld ECDSA signature brought by a backup: {:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    silent_ecdsa_signer(&net);
    eprintln!("silent ECDSA signer left out: {:?}", t.elapsed());
    net.stop().unwrap();
}

/// node0 computes CGGMP24 signatures but never brings one to the chain (test-only
/// `withhold-signatures`: a stalled submitter, or a node that dies right after signing). The
/// first signer submits (node0 whenever it signs: signers are sorted); the next signer holds a
/// backup and submits it `--backup-submit-ms` later, so the request ends DONE in its first
/// attempt instead of at the attempt's deadline (20 times the FROST one for CGGMP24).
fn withheld_ecdsa(net: &Localnet) {
    net.kill_node(0).unwrap();
    let env = [&[("SEQMPC_FAULTS", "withhold-signatures")], HONEST].concat();
    let _withholder = net.restart_node(0, &[], &env).unwrap();
    let pk = ecdsa_key(net);
    let backups = || -> u64 {
        (1..4)
            .map(|i| {
                net.node_get(i, "/metrics/json").unwrap()["sign_backups_submitted"]
                    .as_u64()
                    .unwrap()
            })
            .sum()
    };
    let before = backups();
    for i in 0..6u8 {
        let s = sign_ecdsa(net, &pk, [0xb0 + i; 32]);
        assert_ne!(s["submitted_by"], "node0", "{s}");
        if names(&s["signers"]).first().map(String::as_str) == Some("node0") {
            assert_eq!(
                s["attempt"].as_u64().unwrap_or(0),
                0,
                "a withheld signature cost an attempt: {s}"
            );
            assert!(backups() > before, "DONE without a backup: {s}");
            return;
        }
    }
    panic!("node0 was never the first signer in 6 requests");
}

fn refused(net: &Localnet, i: usize) -> u64 {
    net.node_get(i, "/metrics/json").unwrap()["p2p_refused_connections"]
        .as_u64()
        .unwrap()
}

/// A real endpoint whose key is not in the chain's registry: this test process, through the
/// node's own p2p layer (libp2p, Noise) with a fresh key, dials every node and queues, for a
/// live CGGMP24 signing session (seconds of CPU, so it is still PENDING when they are
/// queued; the p2p layer keeps redialing to deliver them), well-formed envelopes that would
/// derail it if delivered: a CGGMP24 signing message, FROST commitments and an abort. Every
/// node refuses the connection right after the handshake (the peer key is not in the
/// registry), counts and logs it; the session ends DONE with a verified signature and nobody
/// blamed. (The sender of a message is taken from the authenticated connection, never from
/// the message, so there is nothing to claim.)
fn non_registry_peer(net: &Localnet) {
    let registry: Vec<PeerInfo> = net
        .query("/nodes")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| PeerInfo {
            node: NodeId::new(n["id"].as_str().unwrap()).unwrap(),
            public_key: hex::decode(n["public_key"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
            addr: n["p2p_addr"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(registry.len(), 4);
    let before: Vec<u64> = (0..4).map(|i| refused(net, i)).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *seed);
    let (intruder, _incoming) = rt
        .block_on(p2p::spawn(P2pConfig {
            node: NodeId::new("intruder").unwrap(),
            secret_key: seed,
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            peers: registry.clone(),
            max_message_bytes: 1 << 20,
        }))
        .unwrap();
    // Every node refuses it (and keeps refusing its redials).
    wait_for(Duration::from_secs(20), || {
        (0..4).all(|i| refused(net, i) > before[i]).then_some(())
    })
    .unwrap_or_else(|| panic!("not every node refused the intruder: {before:?}"));
    // A node refuses the intruder right after the Noise handshake, so at each redial the
    // intruder may hold a connection for an instant: it holds none for long.
    wait_for(Duration::from_secs(10), || {
        rt.block_on(intruder.connected()).is_empty().then_some(())
    })
    .expect("the intruder kept a connection to a node");

    // A CGGMP24 key (the fixtures' aux info: the DKG alone) and a prehashed signing of it:
    // the full interactive protocol, seconds long.
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "good-ecdsa",
            "--scheme",
            "cggmp24-secp256k1",
            "--threshold",
            "3",
            "--wait",
        ])
        .unwrap();
    let ec_pk = k["public_key"].as_str().unwrap().to_owned();
    let rid = "intruder-0";
    let digest = [0x1du8; 32];
    net.mpcctl_json(&[
        "sign",
        "--key-id",
        "good-ecdsa",
        "--request-id",
        rid,
        "--prehashed",
        "--message",
        &hex::encode(digest),
    ])
    .unwrap();
    let session = wait_for(Duration::from_secs(20), || {
        let s = net.query(&format!("/sign/{rid}")).ok()?;
        SessionId::try_from(s["session"].as_str()?.to_owned()).ok()
    })
    .expect("the sign request was not committed");
    // Well-formed envelopes of the session: a CGGMP24 signing broadcast, FROST commitments (of
    // a made-up signing share) and an abort.
    let mut rng = rand::rngs::OsRng;
    let share = frost_ed25519::keys::SigningShare::deserialize(&[1u8; 32]).unwrap();
    let (_nonces, commitments) = frost_ed25519::round1::commit(&share, &mut rng);
    let cggmp = seqmpc_module::protocol::cggmp::CggmpMsg::Broadcast {
        phase: seqmpc_module::protocol::cggmp::Phase::Signing,
        payload: br#"{"Round1a":{}}"#.to_vec(),
    };
    let payloads = [
        Payload::Cggmp(wire::CggmpPayload {
            msg: cggmp.to_bytes(),
        }),
        Payload::SignRound1(wire::SignRound1 {
            commitments: commitments.serialize().unwrap(),
        }),
        Payload::Abort(wire::SessionAbort {
            reason: "the intruder says stop".into(),
        }),
    ];
    for p in &registry {
        for payload in &payloads {
            let env = wire::P2pEnvelope {
                session: session.0.to_vec(),
                payload: Some(payload.clone()),
            };
            rt.block_on(intruder.send(&p.node, prost::Message::encode_to_vec(&env)))
                .unwrap();
        }
    }
    let live = net
        .mpcctl_json(&["sign-status", "--request-id", rid])
        .unwrap();
    assert_eq!(
        live["status"], "PENDING",
        "queued for a live session: {live}"
    );
    let s = wait_for(Duration::from_secs(120), || {
        net.mpcctl_json(&["sign-status", "--request-id", rid])
            .ok()
            .filter(|s| s["status"] != "PENDING")
    })
    .expect("the sign request did not end");
    assert_eq!(s["status"], "DONE", "{s}");
    assert!(names(&s["culprits"]).is_empty(), "{s}");
    seqmpc_e2e::verify::ecdsa(
        &ec_pk,
        digest,
        s["signature"].as_str().unwrap(),
        &s["recovery_id"],
    )
    .unwrap();
    let after: Vec<u64> = (0..4).map(|i| refused(net, i)).collect();
    eprintln!("p2p_refused_connections before {before:?}, after {after:?}; sign {s}");
    for i in 0..4 {
        let log = std::fs::read_to_string(net.info["nodes"][i]["log"].as_str().unwrap()).unwrap();
        assert!(
            log.contains("peer key is not in the node registry"),
            "node{i} did not log the refusal"
        );
    }
    intruder.shutdown();
}

/// node0 alive (its heartbeats keep it live, so the chain keeps choosing it) but silent in
/// every session: it sends each message under another session id (test-only `wrong-session`).
/// A CGGMP24 signing that has node0 ends DONE in its next attempt, which starts as soon as
/// both other signers have named node0 at their `--cggmp-silence-timeout-secs` (10 s here),
/// not at the attempt's deadline (120 s on this network).
fn silent_ecdsa_signer(net: &Localnet) {
    net.kill_node(0).ok(); // stopped already when the withholder was dropped
    let env = [&[("SEQMPC_FAULTS", "wrong-session")], HONEST].concat();
    let _silent = net.restart_node(0, &[], &env).unwrap();
    let pk = ecdsa_key(net);
    for i in 0..6u8 {
        let t = std::time::Instant::now();
        let s = sign_ecdsa(net, &pk, [0xd0 + i; 32]);
        assert!(!names(&s["signers"]).contains(&"node0".to_owned()), "{s}");
        if s["attempt"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(names(&s["excluded"]), ["node0"], "{s}");
            assert!(
                names(&s["ended_attempts"][0]["signers"]).contains(&"node0".to_owned()),
                "{s}"
            );
            // Named at 10 s by both other signers; the attempt's deadline is 120 s away.
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the next attempt waited for the deadline: {:?} {s}",
                t.elapsed()
            );
            return;
        }
    }
    panic!("node0 was never chosen in 6 requests");
}

/// The public key of the CGGMP24 key `good-ecdsa`.
fn ecdsa_key(net: &Localnet) -> String {
    net.mpcctl_json(&["key", "--key-id", "good-ecdsa"]).unwrap()["public_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Signs `digest` (prehashed) with `good-ecdsa`, waits for the outcome and verifies the
/// signature with libsecp256k1; returns the request's final state.
fn sign_ecdsa(net: &Localnet, pk: &str, digest: [u8; 32]) -> Value {
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            "good-ecdsa",
            "--prehashed",
            "--message",
            &hex::encode(digest),
            "--wait",
        ])
        .unwrap();
    seqmpc_e2e::verify::ecdsa(
        pk,
        digest,
        s["signature"].as_str().unwrap(),
        &s["recovery_id"],
    )
    .unwrap();
    s
}
