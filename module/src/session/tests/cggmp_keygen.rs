//! CGGMP24 keygens in the session manager: aux-info reuse (the DKG runs inline, for real) and
//! the wait for every party's safe-prime set before aux info is generated.

use std::path::Path;

use super::*;
use crate::node::cggmp::CggmpConfig;
use crate::protocol::cggmp::AuxShare;

pub(super) const KEY: &str = "ecdsa";

/// Every node of the fixtures' 4-node committee holds that committee's aux info.
pub(super) fn with_fixture_aux(h: &mut Harness) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cggmp24-test-fixtures.json");
    for n in h.parties() {
        let aux = CggmpConfig::from_fixture_file(&path, &n)
            .unwrap()
            .aux
            .unwrap();
        let offer = AuxOffer {
            fingerprint: AuxShare::from_bytes(&aux.share)
                .unwrap()
                .fingerprint()
                .unwrap(),
            share: aux.share,
        };
        h.aux.insert(n, (aux.parties, offer));
    }
}

/// The keygen results submitted: (reporter, outcome).
fn keygen_reports(h: &Harness) -> Vec<(NodeId, Outcome<KeyGenOk>)> {
    h.submitted
        .iter()
        .filter_map(|(n, tx)| match tx {
            TxMsg::KeyGenResult { outcome, .. } => Some((n.clone(), outcome.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn cggmp_job(h: &Harness, session: SessionId) -> Job {
    keygen_job(session, KEY, Scheme::Cggmp24Secp256k1, h.parties())
}

#[test]
fn cggmp_keygen__should_reuse_the_committees_aux_info_and_store_one_key_at_every_party() {
    let mut h = Harness::new(4, 11);
    with_fixture_aux(&mut h);
    let session = SessionId([21; 32]);
    h.job_for_all(cggmp_job(&h, session));
    h.run();
    // Every party ran the DKG on a worker and reused the committee's aux info: no set needed.
    assert_eq!(h.tasks.len(), 4);
    assert!(h.tasks.iter().all(|(_, _, t)| matches!(
        t,
        WorkerTask::Keygen {
            reuse: Some(_),
            threshold: 3,
            ..
        }
    )));
    let reports = keygen_reports(&h);
    assert_eq!(reports.len(), 4, "{reports:?}");
    let keys: BTreeSet<Vec<u8>> = reports
        .iter()
        .map(|(n, o)| match o {
            Outcome::Ok(ok) => {
                assert!(ok.public_key_package.is_empty());
                ok.public_key.clone()
            }
            Outcome::Failed { error, .. } => panic!("{n}: {error}"),
        })
        .collect();
    assert_eq!(keys.len(), 1, "one public key");
    let public_key = keys.into_iter().next().unwrap();
    assert_eq!(public_key.len(), 33);
    for (n, store) in &h.stores {
        let rec = store.records().find(|r| r.key_id.as_str() == KEY).unwrap();
        assert_eq!(
            (rec.status, rec.scheme),
            (ShareStatus::Ready, Scheme::Cggmp24Secp256k1),
            "{n}"
        );
        assert_eq!(rec.public_key, public_key, "{n}");
        assert!(rec.share.is_some(), "{n}");
    }
    // Ended: every worker stopped and released what it held.
    assert_eq!(h.stopped.len(), 4);
}

#[test]
fn cggmp_keygen__should_start_only_once_every_party_holds_a_prime_set_without_timing_out_before() {
    let mut h = Harness::new(4, 12);
    h.withheld_primes.insert(nid(2));
    let session = SessionId([22; 32]);
    h.job_for_all(cggmp_job(&h, session));
    h.run();
    // No aux info to reuse, and node2 holds no set: nothing starts, so no party spends a set.
    assert!(h.tasks.is_empty(), "{:?}", h.tasks);
    assert_eq!(h.waiting_primes, vec![(nid(2), session)]);
    // It waits past the local session timeout: only the chain's deadline ends it before the DKG.
    h.tick(Config::new(nid(0)).session_timeout_ms * 3);
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);
    // node2 gets a set and answers again; the coordinator starts aux-info generation everywhere.
    h.grant_primes();
    assert_eq!(h.tasks.len(), 4);
    assert!(h
        .tasks
        .iter()
        .all(|(_, _, t)| matches!(t, WorkerTask::Keygen { reuse: None, .. })));
    // From the start on, its local timeout counts (the workers here never end).
    h.tick(Config::new(nid(0)).cggmp_session_timeout_ms + 1);
    let reports = keygen_reports(&h);
    assert_eq!(reports.len(), 4);
    assert!(reports
        .iter()
        .all(|(_, o)| matches!(o, Outcome::Failed { error, .. } if error.contains("timed out"))));
}

#[test]
fn cggmp_keygen__should_release_its_reservation_when_the_chain_ends_it_while_it_waits() {
    let mut h = Harness::new(4, 13);
    h.withheld_primes.insert(nid(3));
    let session = SessionId([23; 32]);
    h.job_for_all(cggmp_job(&h, session));
    h.run();
    assert!(h.stopped.is_empty());
    h.job_for_all(Job::KeyGenFailed {
        key_id: KeyId::new(KEY).unwrap(),
        session,
        reason: "deadline passed".into(),
    });
    h.run();
    // Each node's runtime is told to release its set (or place in line) for the next keygen.
    let stopped: BTreeSet<NodeId> = h.stopped.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(stopped, h.parties().into_iter().collect());
    // A set granted after the end goes straight back.
    h.grant_primes();
    assert_eq!(h.stopped.len(), 5);
    assert!(h.tasks.is_empty());
}

/// A keygen of 100 ms blocks whose chain deadline is `blocks` blocks after block 2, with
/// node2's safe-prime set granted only after every other party answered.
fn keygen_near_deadline(blocks: u64, seed: u64) -> Harness {
    let mut h = Harness::new(4, seed);
    h.withheld_primes.insert(nid(2));
    for (height, at) in [(1, h.now - 100), (2, h.now)] {
        h.job_for_all(Job::Block {
            height,
            block_time_ms: at,
        });
    }
    let session = SessionId([24; 32]);
    let job = match cggmp_job(&h, session) {
        Job::KeyGen {
            session,
            key_id,
            scheme,
            threshold,
            parties,
            ..
        } => Job::KeyGen {
            session,
            key_id,
            scheme,
            threshold,
            parties,
            height: 2,
            deadline_height: 2 + blocks,
            block_time_ms: h.now,
        },
        other => panic!("{other:?}"),
    };
    h.job_for_all(job);
    h.run();
    h.grant_primes();
    h
}

/// Aux info that would outlast the chain's deadline does not start: the sets it would consume
/// stay in the pools for the retry. Far enough from the deadline, the same keygen starts.
#[test]
fn cggmp_keygen__should_not_start_aux_info_that_would_outlast_its_chain_deadline() {
    let aux_gen_ms = Config::new(nid(0)).aux_gen_ms;
    // The deadline 100 ms blocks away is aux_gen_ms less a second away: too close.
    let h = keygen_near_deadline((aux_gen_ms - 1_000) / 100, 14);
    assert!(h.tasks.is_empty(), "{:?}", h.tasks);
    let coordinator = h
        .managers
        .values()
        .flat_map(|m| m.keygens())
        .find(|(.., phase, _)| phase.contains("deadline"));
    assert!(coordinator.is_some(), "no keygen says why it waits");
    // aux_gen_ms and a second away: it starts.
    let h = keygen_near_deadline((aux_gen_ms + 1_000) / 100, 15);
    assert_eq!(h.tasks.len(), 4);
}

/// A CGGMP24 key of node0-node3 reshared to node0-node2 (100 ms blocks; the chain's deadline
/// `blocks` blocks after the job), for which nobody holds aux info, node2's safe-prime set
/// granted last; the resharing's session and the new parties.
fn reshare_near_deadline(blocks: u64, seed: u64) -> (Harness, SessionId, Vec<NodeId>) {
    let mut h = Harness::new(4, seed);
    with_fixture_aux(&mut h);
    let key_session = SessionId([25; 32]);
    h.job_for_all(cggmp_job(&h, key_session));
    h.run();
    let public_key = match keygen_reports(&h).first() {
        Some((_, Outcome::Ok(ok))) => ok.public_key.clone(),
        other => panic!("{other:?}"),
    };
    h.tasks.clear();
    h.withheld_primes.insert(nid(2));
    for (height, at) in [(2, h.now - 100), (3, h.now)] {
        h.job_for_all(Job::Block {
            height,
            block_time_ms: at,
        });
    }
    let session = SessionId([26; 32]);
    let new_parties: Vec<NodeId> = (0..3).map(nid).collect();
    h.job_for_all(Job::Reshare(crate::job::ReshareJob {
        session,
        key_id: KeyId::new(KEY).unwrap(),
        scheme: Scheme::Cggmp24Secp256k1,
        key_session,
        old_parties: h.parties(),
        old_threshold: 3,
        dealers: new_parties.clone(),
        new_parties: new_parties.clone(),
        new_threshold: 2,
        public_key,
        public_key_package: None,
        generation: 2,
        height: 3,
        deadline_height: 3 + blocks,
        block_time_ms: h.now,
    }));
    h.run();
    // Every new party asked for a set; node2 waits for one, so nobody generates.
    assert_eq!(h.waiting_primes, vec![(nid(2), session)]);
    assert!(h.tasks.is_empty(), "{:?}", h.tasks);
    // node2 gets one and offers again.
    h.grant_primes();
    (h, session, new_parties)
}

/// The new parties of a CGGMP24 resharing generate aux info only once every one holds a
/// safe-prime set, so a committee where one node has none spends nobody's set.
#[test]
fn cggmp_reshare__should_generate_aux_info_only_once_every_new_party_holds_a_prime_set() {
    let aux_gen_ms = Config::new(nid(0)).aux_gen_ms;
    let (h, session, new_parties) = reshare_near_deadline((aux_gen_ms + 1_000) / 100, 16);
    // All three start aux info once node2 holds its set.
    let started: BTreeSet<NodeId> = h
        .tasks
        .iter()
        .filter(|(_, s, t)| {
            *s == session && matches!(t, WorkerTask::Aux { parties } if *parties == new_parties)
        })
        .map(|(n, ..)| n.clone())
        .collect();
    assert_eq!(started, new_parties.iter().cloned().collect());
    // Aux info does not run in this harness (its workers fail): each new party ends the
    // resharing ERROR and releases what the runtime held for it.
    let stopped: BTreeSet<NodeId> = h
        .stopped
        .iter()
        .filter(|(_, s)| *s == session)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(stopped, new_parties.into_iter().collect());
}

/// Aux info for a resharing whose chain deadline is nearer than `aux_gen_ms` does not start:
/// no new party spends its set on a resharing the deadline ends anyway.
#[test]
fn cggmp_reshare__should_not_start_aux_info_that_would_outlast_its_chain_deadline() {
    let aux_gen_ms = Config::new(nid(0)).aux_gen_ms;
    let (h, session, _) = reshare_near_deadline((aux_gen_ms - 1_000) / 100, 17);
    assert!(h.tasks.is_empty(), "{:?}", h.tasks);
    assert!(!h.stopped.iter().any(|(_, s)| *s == session));
}
