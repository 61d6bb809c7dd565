//! Resharing in the session manager: FROST keys handed to a new committee and threshold,
//! promoted when the chain switches the key, and the failures a new party reports.

use seqmpc_proto::tx::KeyGenOk;

use super::*;
use crate::job::ReshareJob;
use crate::session::reshare::MAX_RESENDS;

/// Resharing key `k` from node0-node3 (threshold 3, dealers node0-node2) to node0-node2 at
/// threshold 2, generation 2.
fn reshare_job(session: SessionId, ok: &KeyGenOk) -> ReshareJob {
    ReshareJob {
        session,
        key_id: KeyId::new("k").unwrap(),
        scheme: Scheme::FrostEd25519,
        key_session: SessionId([1; 32]),
        old_parties: (0..4).map(nid).collect(),
        old_threshold: 3,
        dealers: (0..3).map(nid).collect(),
        new_parties: (0..3).map(nid).collect(),
        new_threshold: 2,
        public_key: ok.public_key.clone(),
        public_key_package: Some(ok.public_key_package.clone()),
        generation: 2,
        height: 3,
        deadline_height: 100,
        block_time_ms: 0,
    }
}

/// The resharing reports submitted: (reporter, outcome).
fn reshare_reports(h: &Harness) -> Vec<(NodeId, Outcome<KeyGenOk>)> {
    h.submitted
        .iter()
        .filter_map(|(n, tx)| match tx {
            TxMsg::ReshareResult { outcome, .. } => Some((n.clone(), outcome.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn manager__should_reshare_a_key_to_a_new_committee_and_sign_with_the_promoted_shares() {
    let (mut h, ok) = keyed_with_package(21);
    let session = SessionId([7; 32]);
    let job = reshare_job(session, &ok);
    // node3 is an old holder only: it gets the job but neither deals nor receives.
    h.job_for_all(Job::Reshare(job.clone()));
    h.run();
    let reports = reshare_reports(&h);
    assert_eq!(reports.len(), 3, "{reports:?}");
    let oks: Vec<&KeyGenOk> = reports
        .iter()
        .map(|(_, o)| match o {
            Outcome::Ok(ok) => ok,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(oks.iter().all(|o| o.public_key == ok.public_key));
    assert!(oks
        .windows(2)
        .all(|w| w[0].transcript_hash == w[1].transcript_hash));
    // Staged beside the READY share, which still signs until the chain switches.
    for i in 0..3 {
        let s = &h.stores[&nid(i)];
        assert_eq!(s.records().next().unwrap().generation, 1);
        let staged = s.staged().next().unwrap();
        assert_eq!((staged.generation, staged.threshold), (2, 2));
    }
    // A replayed job changes nothing.
    h.submitted.clear();
    h.job_for_all(Job::Reshare(job.clone()));
    h.run();
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);

    h.job_for_all(Job::ReshareDone {
        key_id: job.key_id.clone(),
        session,
        old_parties: job.old_parties.clone(),
        new_parties: job.new_parties.clone(),
        generation: 2,
    });
    h.run();
    for i in 0..3 {
        let s = &h.stores[&nid(i)];
        let rec = s.records().next().unwrap();
        assert_eq!((rec.generation, rec.status), (2, ShareStatus::Ready));
        assert_eq!(rec.parties, job.new_parties);
        assert!(s.staged().next().is_none());
    }
    assert!(
        h.stores[&nid(3)].records().next().is_none(),
        "the old holder outside the new committee deletes its share"
    );

    // Two of the new committee sign: threshold 2.
    let signers = vec![nid(1), nid(2)];
    let Job::Sign {
        session: s,
        request_id,
        key_id,
        message,
        prehashed,
        scheme,
        height,
        deadline_height,
        block_time_ms,
        ..
    } = sign_job(SessionId([8; 32]), "k", Scheme::FrostEd25519, Vec::new())
    else {
        unreachable!()
    };
    h.job_for_all(Job::Sign {
        session: s,
        request_id,
        key_id,
        message,
        prehashed,
        scheme,
        signers,
        key_version: KeyVersion {
            generation: 2,
            session,
        },
        height,
        deadline_height,
        block_time_ms,
    });
    h.run();
    let sigs = signatures(&h);
    assert_eq!(sigs.len(), 1, "{:?}", h.submitted);
    assert!(seqmpc_proto::verify::ed25519(&ok.public_key, b"hello", &sigs[0].1).is_ok());
}

#[test]
fn manager__should_blame_a_dealer_that_cannot_deal_and_keep_the_old_share() {
    let (mut h, ok) = keyed_with_package(22);
    // node2 lost its share: it aborts towards the new parties, which name it.
    h.stores.insert(nid(2), MemStore::default());
    let session = SessionId([7; 32]);
    let job = reshare_job(session, &ok);
    h.job_for_all(Job::Reshare(job.clone()));
    h.run();
    let reports = reshare_reports(&h);
    assert_eq!(reports.len(), 3, "{reports:?}");
    for (by, outcome) in &reports {
        let Outcome::Failed {
            culprits, error, ..
        } = outcome
        else {
            panic!("{by}: {outcome:?}");
        };
        if *by == nid(2) {
            assert!(error.contains("no local share"), "{error}");
        } else {
            assert_eq!(culprits, &vec![nid(2)], "{by}: {error}");
        }
    }
    h.job_for_all(Job::ReshareFailed {
        key_id: job.key_id.clone(),
        session,
        reason: "failed".into(),
    });
    h.run();
    for i in [0, 1, 3] {
        let s = &h.stores[&nid(i)];
        assert_eq!(s.records().next().unwrap().generation, 1);
        assert!(s.staged().next().is_none());
    }
}

#[test]
fn manager__should_name_the_dealers_it_has_no_deal_from_at_the_timeout() {
    let (mut h, ok) = keyed_with_package(23);
    h.cut = vec![nid(1)];
    let job = reshare_job(SessionId([7; 32]), &ok);
    h.job_for_all(Job::Reshare(job));
    h.run();
    assert!(reshare_reports(&h).is_empty());
    h.tick(60_001);
    let reports = reshare_reports(&h);
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (by, outcome) in reports {
        let Outcome::Failed { culprits, .. } = outcome else {
            panic!("{by}: {outcome:?}");
        };
        assert_eq!(culprits, vec![nid(1)]);
    }
}

#[test]
fn manager__should_send_a_lost_deal_again_while_the_resharing_is_open() {
    let (mut h, ok) = keyed_with_package(24);
    // node0's deal to node2 is lost; every other party reports at once.
    h.lose = vec![(nid(0), nid(2))];
    let job = reshare_job(SessionId([7; 32]), &ok);
    h.job_for_all(Job::Reshare(job));
    h.run();
    let reporters: Vec<NodeId> = reshare_reports(&h).into_iter().map(|(n, _)| n).collect();
    assert_eq!(reporters, vec![nid(0), nid(1)], "{:?}", h.submitted);
    // Not yet due; then every open session sends its deals again, and node2 reports too.
    h.tick(1_000);
    assert_eq!(reshare_reports(&h).len(), 2);
    h.tick(1_000);
    let reports = reshare_reports(&h);
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(reports.iter().all(|(_, o)| matches!(o, Outcome::Ok(_))));
    // Copies that come after a party reported change nothing there; the sessions stay open
    // (no verdict yet) but send again at most MAX_RESENDS times.
    h.submitted.clear();
    let before = h.sends;
    for _ in 0..2 {
        h.tick(2_000);
    }
    assert!(h.sends > before, "the open sessions sent nothing again");
    let capped = h.sends;
    for _ in 0..3 {
        h.tick(2_000);
    }
    assert_eq!(h.sends, capped, "more than {MAX_RESENDS} resends");
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);
}
