//! The fault table's parsing and the decorators' behaviour.

use super::*;

#[test]
fn faults__should_parse_and_refuse_unknown_ones() {
    let f = Faults::parse("reshare-bad-deal-to=node2, sign-bad-share").unwrap();
    assert_eq!(f.reshare_bad_deal_to, Some(NodeId::new("node2").unwrap()));
    assert!(f.sign_bad_share);
    assert!(f.any());
    assert!(!Faults::parse("").unwrap().any());
    assert!(Faults::parse("explode").is_err());
    assert!(Faults::parse("reshare-bad-deal-to=").is_err());
    assert!(Faults::parse("sign-bad-share=1").is_err());
    let f = Faults::parse("net-dup,net-delay-ms=30,net-drop-pct=10").unwrap();
    assert_eq!(
        f.net,
        NetFaults {
            drop_pct: 10,
            dup: true,
            delay_ms: 30,
            corrupt_pct: 0
        }
    );
    assert!(Faults::parse("net-drop-pct=101").is_err());
}

#[test]
fn faults__should_frame_the_signer_the_false_claim_names_in_that_session_only() {
    let f = Faults::parse("sign-frame").unwrap();
    assert!(f.sign_false_claim && f.sign_frame && f.any());
    let n = |i: u8| NodeId::new(format!("node{i}")).unwrap();
    let session = SessionId([7; 32]);
    let job = crate::job::Job::Sign {
        session,
        request_id: seqmpc_proto::RequestId::new("r").unwrap(),
        key_id: seqmpc_proto::KeyId::new("k").unwrap(),
        message: b"m".to_vec(),
        prehashed: false,
        scheme: seqmpc_proto::Scheme::FrostEd25519,
        signers: vec![n(0), n(1), n(2)],
        key_version: crate::job::KeyVersion {
            generation: 1,
            session: SessionId([1; 32]),
        },
        height: 2,
        deadline_height: 100,
        block_time_ms: 0,
    };
    let Some(TxMsg::SignResult { outcome, .. }) = f.false_claim(&n(1), &job) else {
        panic!("no false claim")
    };
    let seqmpc_proto::tx::Outcome::Failed { culprits, .. } = outcome else {
        panic!("not a failure")
    };
    assert_eq!(culprits, [n(0)]);
    // The clone the transport holds sees the victim the job stream recorded.
    let transport_side = f.clone();
    assert!(transport_side.framed.is_victim(&session, &n(0)));
    assert!(!transport_side.framed.is_victim(&session, &n(2)));
    assert!(!transport_side.framed.is_victim(&SessionId([8; 32]), &n(0)));
}

#[test]
fn net_faults__should_drop_duplicate_delay_and_corrupt_as_told() {
    let all = NetFaults {
        drop_pct: 100,
        ..NetFaults::default()
    };
    assert_eq!(all.plan(10).copies, 0);
    let f = NetFaults {
        dup: true,
        delay_ms: 5,
        corrupt_pct: 100,
        ..NetFaults::default()
    };
    for _ in 0..50 {
        let d = f.plan(10);
        assert_eq!(d.copies, 2);
        assert!(d.delay < std::time::Duration::from_millis(5));
        assert!(d.corrupt_at.is_some_and(|i| i < 10));
    }
    assert_eq!(NetFaults::default().plan(10).copies, 1);
}

#[test]
fn tamper__should_corrupt_only_what_a_fault_names() {
    use seqmpc_proto::wire;
    let n2 = NodeId::new("node2").unwrap();
    let n3 = NodeId::new("node3").unwrap();
    let f = Faults::parse("dkg-bad-share-to=node2").unwrap();
    let r2 = || {
        Payload::DkgRound2(wire::DkgRound2 {
            package: vec![7, 8],
        })
    };
    assert_eq!(
        f.tamper(&n2, r2()),
        Payload::DkgRound2(wire::DkgRound2 {
            package: vec![7, 9]
        })
    );
    assert_eq!(f.tamper(&n3, r2()), r2());
    let r1 = Payload::DkgRound1(wire::DkgRound1 { package: vec![1] });
    assert_eq!(f.tamper(&n2, r1.clone()), r1);
}

#[test]
fn faults__should_parse_the_cggmp_proof_and_session_faults() {
    use crate::protocol::cggmp::Phase;
    let f = Faults::parse("cggmp-bad-proof=keygen,wrong-session").unwrap();
    assert_eq!(f.cggmp_bad_proof, Some(Phase::Keygen));
    assert!(f.wrong_session);
    assert!(f.any());
    assert!(Faults::parse("cggmp-bad-proof=signing").is_err());
    assert!(Faults::parse("cggmp-bad-proof").is_err());
    assert!(Faults::parse("wrong-session=1").is_err());
}

#[test]
fn session_for__should_change_the_session_only_under_the_fault() {
    let s = SessionId([7; 32]);
    assert_eq!(Faults::default().session_for(&s), s);
    let f = Faults::parse("wrong-session").unwrap();
    assert_ne!(f.session_for(&s), s);
    assert_eq!(f.session_for(&s), f.session_for(&s), "deterministic");
}

#[test]
fn tamper_cggmp__should_make_honest_parties_blame_the_sender_of_a_bad_proof() {
    use crate::protocol::cggmp::{local, Dkg};
    use rand::SeedableRng;
    let parties: Vec<NodeId> = (0..4)
        .map(|i| NodeId::new(format!("node{i}")).unwrap())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let session = SessionId([9; 32]);
    let started: Vec<_> = parties
        .iter()
        .map(|p| {
            let (d, out) = Dkg::start(session, p, &parties, 3, &mut rng).unwrap();
            (p.clone(), d, out)
        })
        .collect();
    let f = Faults::parse("cggmp-bad-proof=keygen").unwrap();
    let node1 = parties[1].clone();
    let mut tampered = 0;
    let mut tamper = |from: &NodeId, o: &mut crate::protocol::Outgoing<CggmpMsg>| {
        if *from == node1 {
            let before = o.msg.clone();
            o.msg = f.tamper_cggmp(o.msg.clone());
            if o.msg != before {
                tampered += 1;
                // Still a well-formed message of the same phase and routing.
                assert_eq!(o.msg.phase(), before.phase());
                assert_eq!(o.msg.is_broadcast(), before.is_broadcast());
            }
        }
        true
    };
    let outcome = local::run(started, Some(&mut rng), Some(&mut tamper));
    assert_eq!(tampered, 3, "node1's round-3 proof to each other party");
    for p in parties.iter().filter(|p| **p != node1) {
        let err = outcome.results[p].as_ref().unwrap_err();
        assert!(
            matches!(err, crate::error::ProtocolError::Aborted { .. }),
            "{err}"
        );
        assert_eq!(err.culprits(), [node1.clone()].as_slice(), "{p}: {err}");
        assert!(err.to_string().contains("schnorr proof"), "{err}");
    }
    // Without the fault nothing changes.
    let m = CggmpMsg::Broadcast {
        phase: crate::protocol::cggmp::Phase::Keygen,
        payload: b"{}".to_vec(),
    };
    assert_eq!(Faults::default().tamper_cggmp(m.clone()), m);
}

#[test]
fn faults__should_parse_every_crash_point_and_refuse_unknown_ones() {
    for p in CRASH_POINTS {
        let f = Faults::parse(&format!("crash-at={p}")).unwrap();
        assert_eq!(f.crash_at, Some(*p));
        assert!(f.any());
    }
    for p in ["cggmp-sign-mid", "presign-after-take"] {
        assert_eq!(
            Faults::parse(&format!("crash-at={p}")).unwrap().crash_at,
            Some(p)
        );
    }
    assert!(Faults::parse("crash-at=cggmp-sign").is_err());
    assert!(Faults::parse("crash-at=keygen-somewhere").is_err());
    assert!(Faults::parse("crash-at=").is_err());
    // Not reached: crash_point only aborts at the named point.
    crash_point(
        &Faults::parse("crash-at=delete-after-erase").unwrap(),
        "delete-before-erase",
    );
}

#[test]
fn faults__should_parse_a_partition_file_and_refuse_an_empty_path() {
    let f = Faults::parse("lose-result-txs=2").unwrap();
    assert_eq!(f.lose_result_txs, 2);
    assert!(Faults::parse("lose-result-txs=x").is_err());
    let f = Faults::parse("partition-file=/tmp/node3.partition, net-dup").unwrap();
    assert_eq!(
        f.partition_file,
        Some(PathBuf::from("/tmp/node3.partition"))
    );
    assert!(f.net.dup);
    assert!(f.any());
    assert!(Faults::parse("partition-file=").is_err());
    assert!(Faults::parse("partition-file").is_err());
}

#[test]
fn partition__should_follow_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partition");
    std::fs::write(&file, b"").unwrap();
    // Set before `watch` returns, so a node started partitioned is cut off at once.
    let p = Partition::watch(file.clone()).unwrap();
    assert!(p.is_on());
    let wait = |want: bool| {
        let start = std::time::Instant::now();
        while p.is_on() != want {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "not {want} in 5 s"
            );
            std::thread::sleep(PARTITION_POLL / 2);
        }
    };
    std::fs::remove_file(&file).unwrap();
    wait(false);
    std::fs::write(&file, b"").unwrap();
    wait(true);
    std::fs::remove_file(&file).unwrap();
    wait(false);
    assert!(!Partition::default().is_on());
}
