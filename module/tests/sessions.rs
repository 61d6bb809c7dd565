//! The session manager of 4 nodes in one process: real key stores on disk, real libp2p over
//! loopback (fixed ports 19400+, below the ephemeral range), committed jobs fed by hand as the
//! chain would, results collected from the submitter. Covers the seed-001 keygen semantics
//! (READY answers with the existing key, PENDING refuses, failure leaves ERROR) and shows that a
//! stuck session does not block others.
#![allow(
    non_snake_case,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use seqmpc_module::job::{Job, KeyVersion, SubmitResult};
use seqmpc_module::node::{Node, NodeConfig};
use seqmpc_module::p2p::{self, P2pConfig, PeerInfo};
use seqmpc_module::store::{KeyRecord, KeyStore, MasterKey, ShareStatus, StoreHandle};
use seqmpc_proto::tx::{Outcome, TxMsg};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use tokio::sync::mpsc;

#[derive(Default)]
struct Collect(Mutex<Vec<TxMsg>>);

impl SubmitResult for Collect {
    fn submit(&self, msg: TxMsg) {
        self.0.lock().unwrap().push(msg);
    }
}

struct Cluster {
    ids: Vec<NodeId>,
    jobs: Vec<mpsc::Sender<Job>>,
    stores: Vec<StoreHandle>,
    results: Vec<Arc<Collect>>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn cluster(base_port: u16, timeout: Duration) -> Cluster {
    let n = 4;
    let keys: Vec<SigningKey> = (0..n)
        .map(|i| SigningKey::from_bytes(&[i as u8 + 10; 32]))
        .collect();
    let ids: Vec<NodeId> = (0..n)
        .map(|i| NodeId::new(format!("node{i}")).unwrap())
        .collect();
    let peers: Vec<PeerInfo> = (0..n)
        .map(|i| PeerInfo {
            node: ids[i].clone(),
            public_key: keys[i].verifying_key().to_bytes(),
            addr: format!("/ip4/127.0.0.1/tcp/{}", base_port + i as u16),
        })
        .collect();
    let mut c = Cluster {
        ids: ids.clone(),
        jobs: vec![],
        stores: vec![],
        results: vec![],
        _dirs: vec![],
    };
    for i in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
        let store = KeyStore::open(&dir.path().join("ks"), &master, "test-chain", &ids[i]).unwrap();
        let store = StoreHandle::spawn(store).unwrap();
        let (p2p, incoming) = p2p::spawn(P2pConfig {
            node: ids[i].clone(),
            secret_key: zeroize::Zeroizing::new(keys[i].to_bytes()),
            listen: peers[i].addr.clone(),
            peers: peers.clone(),
            max_message_bytes: 1 << 20,
        })
        .await
        .unwrap();
        let results = Arc::new(Collect::default());
        let (tx, rx) = mpsc::channel(100);
        let mut cfg = NodeConfig::new(ids[i].clone());
        cfg.session_timeout = timeout;
        let node = Node::new(cfg, store.clone(), p2p, results.clone(), Default::default());
        tokio::spawn(node.run(rx, incoming));
        c.jobs.push(tx);
        c.stores.push(store);
        c.results.push(results);
        c._dirs.push(dir);
    }
    c
}

impl Cluster {
    async fn job(&self, job: Job, to: &[usize]) {
        for &i in to {
            self.jobs[i].send(job.clone()).await.unwrap();
        }
    }

    /// Waits until `pred` holds for the results of every node in `who`.
    async fn wait(&self, who: &[usize], pred: impl Fn(&[TxMsg]) -> bool) {
        for _ in 0..200 {
            if who
                .iter()
                .all(|&i| pred(&self.results[i].0.lock().unwrap()))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out; results: {:?}",
            who.iter()
                .map(|&i| self.results[i].0.lock().unwrap().clone())
                .collect::<Vec<_>>()
        );
    }

    fn keygen_outcome(
        &self,
        i: usize,
        key: &str,
        session: SessionId,
    ) -> Option<Outcome<seqmpc_proto::tx::KeyGenOk>> {
        self.results[i]
            .0
            .lock()
            .unwrap()
            .iter()
            .find_map(|m| match m {
                TxMsg::KeyGenResult {
                    key_id,
                    session: s,
                    outcome,
                } if key_id.as_str() == key && *s == session => Some(outcome.clone()),
                _ => None,
            })
    }
}

/// Key `k1` as its first keygen (session `[1; 32]`) made it.
fn k1_version() -> KeyVersion {
    KeyVersion {
        generation: 1,
        session: SessionId([1; 32]),
    }
}

fn keygen_job(key: &str, session: u8, parties: &[NodeId]) -> Job {
    Job::KeyGen {
        session: SessionId([session; 32]),
        key_id: KeyId::new(key).unwrap(),
        scheme: Scheme::FrostEd25519,
        threshold: 3,
        parties: parties.to_vec(),
        height: 1,
        deadline_height: 100,
        block_time_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions__should_follow_seed_semantics_and_isolate_failures() {
    let c = cluster(19400, Duration::from_secs(3)).await;
    let all = [0, 1, 2, 3];

    // 1. A fresh keygen: every node reports the same key and transcript; shares are READY.
    c.job(keygen_job("k1", 1, &c.ids), &all).await;
    c.wait(&all, |r| {
        r.iter().any(|m| matches!(m, TxMsg::KeyGenResult { .. }))
    })
    .await;
    let oks: Vec<_> = all
        .iter()
        .map(|&i| match c.keygen_outcome(i, "k1", SessionId([1; 32])) {
            Some(Outcome::Ok(ok)) => ok,
            other => panic!("node{i}: {other:?}"),
        })
        .collect();
    assert!(oks.windows(2).all(|w| w[0] == w[1]));
    for s in &c.stores {
        let r = s.get(&KeyId::new("k1").unwrap()).await.unwrap().unwrap();
        assert_eq!(r.status, ShareStatus::Ready);
        assert_eq!(r.public_key, oks[0].public_key);
    }

    // 2. Seed 001: a keygen for a key READY locally answers with the existing key, no new DKG.
    c.job(keygen_job("k1", 2, &c.ids), &all).await;
    c.wait(&all, |r| {
        r.iter()
            .filter(|m| matches!(m, TxMsg::KeyGenResult { .. }))
            .count()
            == 2
    })
    .await;
    for &i in &all {
        match c.keygen_outcome(i, "k1", SessionId([2; 32])) {
            Some(Outcome::Ok(ok)) => assert_eq!(ok.public_key, oks[0].public_key, "node{i}"),
            other => panic!("node{i}: {other:?}"),
        }
    }

    // 3. Seed 001: a key PENDING in another session on one node refuses the keygen; every
    // party ends it with an error naming the reason, and its store says ERROR.
    let k2 = KeyId::new("k2").unwrap();
    c.stores[2]
        .put(KeyRecord {
            key_id: k2.clone(),
            session: SessionId([9; 32]),
            scheme: Scheme::FrostEd25519,
            threshold: 3,
            parties: c.ids.clone(),
            public_key: vec![],
            status: ShareStatus::Pending,
            error: None,
            generation: 1,
            share: None,
        })
        .await
        .unwrap();
    c.job(keygen_job("k2", 3, &c.ids), &all).await;
    c.wait(&all, |r| {
        r.iter()
            .filter(|m| matches!(m, TxMsg::KeyGenResult { .. }))
            .count()
            == 3
    })
    .await;
    for &i in &all {
        match c.keygen_outcome(i, "k2", SessionId([3; 32])) {
            Some(Outcome::Failed { error, .. }) => {
                assert!(error.contains("PENDING"), "node{i}: {error}")
            }
            other => panic!("node{i}: {other:?}"),
        }
    }
    let r0 = c.stores[0].get(&k2).await.unwrap().unwrap();
    assert_eq!(r0.status, ShareStatus::Error);
    assert!(r0.error.unwrap().contains("PENDING"));
    let r2 = c.stores[2].get(&k2).await.unwrap().unwrap();
    assert_eq!(
        (r2.status, r2.session),
        (ShareStatus::Pending, SessionId([9; 32])),
        "the other session's record is untouched"
    );

    // 4. A sign session missing one signer (node3 never gets the job) is stuck; a sign session
    // started after it completes anyway, and the stuck one ends by timeout with an error.
    let stuck = Job::Sign {
        session: SessionId([4; 32]),
        request_id: RequestId::new("stuck").unwrap(),
        key_id: KeyId::new("k1").unwrap(),
        message: b"never".to_vec(),
        prehashed: false,
        scheme: Scheme::FrostEd25519,
        signers: vec![c.ids[1].clone(), c.ids[2].clone(), c.ids[3].clone()],
        key_version: k1_version(),
        height: 2,
        deadline_height: 100,
        block_time_ms: 0,
    };
    c.job(stuck, &[1, 2]).await;
    let ok = Job::Sign {
        session: SessionId([5; 32]),
        request_id: RequestId::new("fine").unwrap(),
        key_id: KeyId::new("k1").unwrap(),
        message: b"hello".to_vec(),
        prehashed: false,
        scheme: Scheme::FrostEd25519,
        signers: vec![c.ids[0].clone(), c.ids[1].clone(), c.ids[2].clone()],
        key_version: k1_version(),
        height: 2,
        deadline_height: 100,
        block_time_ms: 0,
    };
    c.job(ok, &[0, 1, 2]).await;
    // node0 aggregates "fine" (lowest signer id).
    c.wait(&[0], |r| r.iter().any(|m| matches!(m, TxMsg::SignResult { request_id, outcome: Outcome::Ok(_), .. } if request_id.as_str() == "fine"))).await;
    let sig = c.results[0]
        .0
        .lock()
        .unwrap()
        .iter()
        .find_map(|m| match m {
            TxMsg::SignResult {
                outcome: Outcome::Ok(s),
                ..
            } => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&oks[0].public_key.clone().try_into().unwrap())
            .unwrap();
    vk.verify_strict(
        b"hello",
        &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
    )
    .unwrap();
    c.wait(&[1], |r| r.iter().any(|m| matches!(m, TxMsg::SignResult { request_id, outcome: Outcome::Failed { .. }, .. } if request_id.as_str() == "stuck"))).await;
}
