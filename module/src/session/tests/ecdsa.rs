//! CGGMP24 signing and presignature pools in the session manager, with the real cggmp24
//! protocols run inline (a presignature takes seconds of CPU: these tests make one).

use sha2::{Digest, Sha256};

use super::cggmp_keygen::{cggmp_job, with_fixture_aux, KEY};
use super::*;
use crate::protocol::cggmp::EcdsaSignature;

/// A 4-node harness with a READY CGGMP24 key (aux info reused from the fixtures), the
/// reports and tasks cleared; the key's public key and version.
fn ecdsa_keyed(seed: u64, presign_pool: usize) -> (Harness, Vec<u8>, KeyVersion) {
    let mut h = Harness::new(4, seed);
    h.configure(|c| c.presign_pool = presign_pool);
    with_fixture_aux(&mut h);
    h.job_for_all(cggmp_job(&h, SessionId([30; 32])));
    h.run();
    let rec = h.stores[&nid(0)]
        .records()
        .find(|r| r.key_id.as_str() == KEY)
        .unwrap()
        .clone();
    assert_eq!(rec.status, ShareStatus::Ready);
    h.submitted.clear();
    h.tasks.clear();
    h.stopped.clear();
    h.sends = 0;
    let version = KeyVersion {
        generation: rec.generation,
        session: rec.session,
    };
    (h, rec.public_key.clone(), version)
}

fn ecdsa_sign_job(
    session: SessionId,
    signers: Vec<NodeId>,
    version: KeyVersion,
    prehashed: bool,
) -> Job {
    let message = if prehashed {
        Sha256::digest(b"hello").to_vec()
    } else {
        b"hello".to_vec()
    };
    Job::Sign {
        session,
        request_id: RequestId::new(format!("r{}", session.0[0])).unwrap(),
        key_id: KeyId::new(KEY).unwrap(),
        message,
        prehashed,
        scheme: Scheme::Cggmp24Secp256k1,
        signers,
        key_version: version,
        height: 2,
        deadline_height: 100,
        block_time_ms: 0,
    }
}

/// The pool level of node0-node2's subset at `node`, as the status endpoint shows it.
fn level(h: &mut Harness, node: usize) -> usize {
    let subset: Vec<NodeId> = (0..3).map(nid).collect();
    let m = h.managers.get_mut(&nid(node)).unwrap();
    m.pools.level(&KeyId::new(KEY).unwrap(), &subset)
}

fn sign_tasks(h: &Harness, session: SessionId) -> Vec<NodeId> {
    h.tasks
        .iter()
        .filter(|(_, s, t)| *s == session && matches!(t, WorkerTask::Sign { .. }))
        .map(|(n, _, _)| n.clone())
        .collect()
}

fn failures(h: &Harness) -> Vec<(NodeId, String, Vec<NodeId>)> {
    h.submitted
        .iter()
        .filter_map(|(n, tx)| match tx {
            TxMsg::SignResult {
                outcome: Outcome::Failed {
                    error, culprits, ..
                },
                ..
            } => Some((n.clone(), error.clone(), culprits.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn ecdsa__should_sign_once_from_a_pooled_presignature_then_run_the_full_protocol() {
    let (mut h, pk, version) = ecdsa_keyed(31, 1);
    let signers: Vec<NodeId> = (0..3).map(nid).collect();
    // node0 leads node0-node2 (its first subset): one tick starts one presignature, which
    // every signer of the subset pools.
    h.queue.push_back((nid(0), Input::Tick));
    h.run();
    let presigns: Vec<&NodeId> = h
        .tasks
        .iter()
        .filter(|(_, _, t)| matches!(t, WorkerTask::Presign { signers: s, .. } if *s == signers))
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(presigns.len(), 3, "{:?}", h.tasks);
    assert_eq!(
        (level(&mut h, 0), level(&mut h, 1), level(&mut h, 2)),
        (1, 1, 1)
    );
    let levels = h
        .managers
        .get_mut(&nid(1))
        .unwrap()
        .presign_levels_changed();
    assert_eq!(
        levels.map(|l| l.iter().map(|l| l.ready).sum::<usize>()),
        Some(1)
    );

    // A signing of that subset: the aggregator's plan names the presignature, every signer
    // takes it out of its pool and the online step makes the signature, no worker involved.
    let first = SessionId([32; 32]);
    h.job_for_all(ecdsa_sign_job(first, signers.clone(), version, false));
    h.run();
    assert!(sign_tasks(&h, first).is_empty(), "{:?}", h.tasks);
    let sigs = signatures(&h);
    assert_eq!(sigs.len(), 1, "{:?}", h.submitted);
    assert_eq!(sigs[0].0, nid(0));
    let bytes = &sigs[0].1;
    assert_eq!(bytes.len(), 65);
    let digest: [u8; 32] = Sha256::digest(b"hello").into();
    let verified = EcdsaSignature::verified(bytes[..64].try_into().unwrap(), &pk, &digest).unwrap();
    assert_eq!(verified.recovery_id, bytes[64]);
    assert!(h.metrics.contains(&(
        nid(0),
        MetricEvent::EcdsaSignOk {
            us: 0,
            presigned: true
        }
    )));
    // Used once: gone from every pool.
    assert_eq!(
        (level(&mut h, 0), level(&mut h, 1), level(&mut h, 2)),
        (0, 0, 0)
    );
    // The other signers hold the same signature as a backup, by rank.
    for (i, rank) in [(1, 1u64), (2, 2)] {
        let m = &h.managers[&nid(i)];
        let b = m
            .backups
            .get(&(RequestId::new("r32").unwrap(), first))
            .unwrap();
        assert!(
            matches!(&b.held, sign::Held::Signature(s) if s == bytes),
            "node{i}"
        );
        assert_eq!(b.due, h.now + 500 * rank);
    }

    // The chain has it. A second signing finds the pool empty: the full protocol, on a worker
    // at every signer (held here), and it stops when the chain ends the request.
    h.job_for_all(Job::SignEnded {
        request_id: RequestId::new("r32").unwrap(),
    });
    h.hold_signing = true;
    let second = SessionId([33; 32]);
    h.job_for_all(ecdsa_sign_job(second, signers.clone(), version, false));
    h.run();
    assert_eq!(sign_tasks(&h, second), signers);
    assert_eq!(signatures(&h).len(), 1);
    h.job_for_all(Job::SignEnded {
        request_id: RequestId::new("r33").unwrap(),
    });
    h.run();
    let stopped: Vec<NodeId> = h
        .stopped
        .iter()
        .filter(|(_, s)| *s == second)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(stopped, signers);
    assert!(h.managers.values().all(|m| m.workers().is_empty()));
}

#[test]
fn ecdsa__should_name_a_signer_that_sends_nothing_and_one_its_worker_waits_for() {
    let (mut h, _, version) = ecdsa_keyed(33, 0);
    let signers: Vec<NodeId> = (0..3).map(nid).collect();
    // node2 is down: node0 and node1 run the full protocol (a prehashed digest) and wait.
    h.cut = vec![nid(2)];
    let session = SessionId([34; 32]);
    h.job_for_all(ecdsa_sign_job(session, signers.clone(), version, true));
    h.run();
    assert_eq!(sign_tasks(&h, session), vec![nid(0), nid(1)]);
    h.tick(Config::new(nid(0)).cggmp_silence_ms + 1);
    let failed = failures(&h);
    assert_eq!(failed.len(), 2, "{:?}", h.submitted);
    for (n, error, culprits) in &failed {
        assert!(
            error.contains("nothing received from node2"),
            "{n}: {error}"
        );
        assert_eq!(culprits, &vec![nid(2)], "{n}");
    }
    assert_eq!(h.stopped.len(), 2);

    // Another signing where node2 answered at first, then stopped: the runtime's worker names
    // it; the manager reports it (once, and only for a signing on a worker).
    h.submitted.clear();
    h.cut.clear();
    h.hold_signing = true;
    let later = SessionId([35; 32]);
    h.job_for_all(ecdsa_sign_job(later, signers.clone(), version, true));
    h.run();
    let quiet = Input::WorkerQuiet {
        session: later,
        behind: vec![nid(2)],
    };
    h.queue.push_back((nid(0), quiet));
    h.run();
    let failed = failures(&h);
    assert_eq!(failed.len(), 1, "{:?}", h.submitted);
    assert!(
        failed[0].1.contains("no next message from node2"),
        "{}",
        failed[0].1
    );
    assert_eq!(failed[0].2, vec![nid(2)]);
    assert!(h.stopped.contains(&(nid(0), later)));
}

#[test]
fn presign__should_refuse_a_start_from_a_node_that_does_not_lead_the_subset() {
    let (mut h, _, version) = ecdsa_keyed(34, 2);
    let session = SessionId([36; 32]);
    // node1 asks node2 to presign for node0-node2, a subset that node0 leads.
    let start = seqmpc_proto::wire::PresignStart {
        key_id: KEY.into(),
        signers: (0..3).map(|i| nid(i).to_string()).collect(),
        generation: version.session.0.to_vec(),
    };
    let msg = Msg {
        from: nid(1),
        session,
        payload: Payload::PresignStart(start),
        quoted: None,
    };
    h.cut = vec![nid(1)];
    h.queue.push_back((nid(2), Input::Msg(msg)));
    h.run();
    // Refused with an abort to the sender, and remembered: its later messages are dropped.
    assert_eq!(h.sends, 1);
    assert!(h.tasks.is_empty(), "{:?}", h.tasks);
    assert!(h.managers[&nid(2)].knows(&session));
    assert_eq!(h.managers[&nid(2)].active(), 0);
}
