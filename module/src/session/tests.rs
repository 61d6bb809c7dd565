//! The session manager alone: n managers over in-memory stores and a FIFO router, on a seeded
//! RNG. (The simulator, `seqmpc-sim`, adds the chain, time and faults.)
#![allow(
    non_snake_case,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::rngs::StdRng;
use rand::SeedableRng;
use seqmpc_proto::tx::{KeyGenOk, Outcome, TxMsg};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};

use super::mem_store::MemStore;
use super::*;
use crate::job::KeyVersion;
use crate::store::ShareStatus;

mod cggmp_keygen;
mod ecdsa;
mod reshare;

fn nid(i: usize) -> NodeId {
    NodeId::new(format!("node{i}")).unwrap()
}

struct Harness {
    managers: BTreeMap<NodeId, Manager>,
    stores: BTreeMap<NodeId, MemStore>,
    /// Inputs waiting, with their recipient.
    queue: VecDeque<(NodeId, Input)>,
    submitted: Vec<(NodeId, TxMsg)>,
    /// p2p messages sent so far.
    sends: usize,
    /// Nodes cut off: every input to them is dropped.
    cut: Vec<NodeId>,
    /// The next message from the first to the second of a pair is lost (once per entry).
    lose: Vec<(NodeId, NodeId)>,
    /// Aux info a node holds for a committee, as the runtime's configured one (CGGMP24).
    aux: BTreeMap<NodeId, (Vec<NodeId>, AuxOffer)>,
    /// Nodes whose safe-prime reservations wait until [`Harness::grant_primes`].
    withheld_primes: BTreeSet<NodeId>,
    waiting_primes: Vec<(NodeId, SessionId)>,
    /// Workers asked for, in order; keygens that reuse aux info run inline.
    tasks: Vec<(NodeId, SessionId, WorkerTask)>,
    workers: BTreeMap<(NodeId, SessionId), InlineWorker>,
    /// `StopWorker` effects, in order.
    stopped: Vec<(NodeId, SessionId)>,
    /// Full CGGMP24 signings are recorded but never run (they never end).
    hold_signing: bool,
    /// Every metric, by node.
    metrics: Vec<(NodeId, MetricEvent)>,
    rng: StdRng,
    now: Millis,
}

impl Harness {
    fn new(n: usize, seed: u64) -> Harness {
        let nodes: Vec<NodeId> = (0..n).map(nid).collect();
        Harness {
            managers: nodes
                .iter()
                .map(|n| (n.clone(), Manager::new(Config::new(n.clone()))))
                .collect(),
            stores: nodes
                .iter()
                .map(|n| (n.clone(), MemStore::default()))
                .collect(),
            queue: VecDeque::new(),
            submitted: Vec::new(),
            sends: 0,
            cut: Vec::new(),
            lose: Vec::new(),
            aux: BTreeMap::new(),
            withheld_primes: BTreeSet::new(),
            waiting_primes: Vec::new(),
            tasks: Vec::new(),
            workers: BTreeMap::new(),
            stopped: Vec::new(),
            hold_signing: false,
            metrics: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            now: 1_000_000,
        }
    }

    /// Every manager with `f` applied to its configuration (before any input).
    fn configure(&mut self, f: impl Fn(&mut Config)) {
        for (n, m) in self.managers.iter_mut() {
            let mut cfg = Config::new(n.clone());
            f(&mut cfg);
            *m = Manager::new(cfg);
        }
    }

    fn parties(&self) -> Vec<NodeId> {
        self.managers.keys().cloned().collect()
    }

    fn job_for_all(&mut self, job: Job) {
        for n in self.parties() {
            self.queue.push_back((n, Input::Job(job.clone())));
        }
    }

    fn run(&mut self) {
        while let Some((node, input)) = self.queue.pop_front() {
            if self.cut.contains(&node) {
                continue;
            }
            let m = self.managers.get_mut(&node).unwrap();
            let fx = m.handle(self.now, input, &mut self.rng);
            for e in fx {
                match e {
                    Effect::Send {
                        session,
                        to,
                        payload,
                    } => self.send(&node, session, to, payload),
                    Effect::Store { op, token } => {
                        let reply = match (&op, self.aux.get(&node)) {
                            (StoreOp::FindAux(parties), Some((committee, offer))) => {
                                StoreReply::Aux((parties == committee).then(|| offer.clone()))
                            }
                            _ => self.stores.get_mut(&node).unwrap().apply(op),
                        };
                        if let Some(token) = token {
                            let input = Input::StoreReply {
                                token,
                                reply: Ok(reply),
                            };
                            self.queue.push_back((node.clone(), input));
                        }
                    }
                    Effect::Submit(tx) => self.submitted.push((node.clone(), tx)),
                    Effect::StartWorker { session, task } => {
                        self.start_worker(&node, session, task)
                    }
                    Effect::ToWorker { session, from, msg } => {
                        let key = (node.clone(), session);
                        let Some(w) = self.workers.get_mut(&key) else {
                            continue;
                        };
                        let (out, done) = w.handle(&from, msg);
                        for (to, payload) in out {
                            self.send(&node, session, to, payload);
                        }
                        if let Some(output) = done {
                            self.workers.remove(&key);
                            self.queue
                                .push_back((node.clone(), Input::WorkerDone { session, output }));
                        }
                    }
                    Effect::ReservePrimes(session) if self.withheld_primes.contains(&node) => {
                        self.waiting_primes.push((node.clone(), session))
                    }
                    Effect::ReservePrimes(session) => self
                        .queue
                        .push_back((node.clone(), Input::PrimesReserved(session))),
                    Effect::StopWorker(session) => {
                        self.workers.remove(&(node.clone(), session));
                        self.stopped.push((node.clone(), session));
                    }
                    Effect::Metric(m) => self.metrics.push((node.clone(), m)),
                    Effect::Checkpoint(_) => {}
                }
            }
        }
    }

    fn send(&mut self, from: &NodeId, session: SessionId, to: NodeId, payload: Payload) {
        let pair = (from.clone(), to.clone());
        if let Some(i) = self.lose.iter().position(|p| *p == pair) {
            self.lose.remove(i);
            return;
        }
        let msg = Msg {
            from: from.clone(),
            session,
            payload,
            quoted: None,
        };
        self.sends += 1;
        self.queue.push_back((to, Input::Msg(msg)));
    }

    /// A keygen that reuses aux info, a CGGMP24 signing and a presignature run inline;
    /// aux-info generation (a safe-prime set,
    /// seconds of CPU) does not run here: such a worker is recorded and never ends, and a
    /// resharing's fails at once.
    fn start_worker(&mut self, node: &NodeId, session: SessionId, task: WorkerTask) {
        self.tasks.push((node.clone(), session, task.clone()));
        let failed = match &task {
            WorkerTask::Keygen { reuse: None, .. } => return,
            WorkerTask::Sign { .. } if self.hold_signing => return,
            WorkerTask::Aux { .. } => {
                crate::error::ProtocolError::Local("no aux-info generation in this harness".into())
            }
            WorkerTask::Keygen { reuse: Some(_), .. }
            | WorkerTask::Sign { .. }
            | WorkerTask::Presign { .. } => {
                match InlineWorker::start(session, node, &task, &mut self.rng) {
                    Ok((worker, out)) => {
                        self.workers.insert((node.clone(), session), worker);
                        for (to, payload) in out {
                            self.send(node, session, to, payload);
                        }
                        return;
                    }
                    Err(e) => e,
                }
            }
        };
        let output = WorkerOutput::failed(&task, failed);
        self.queue
            .push_back((node.clone(), Input::WorkerDone { session, output }));
    }

    /// The withheld safe-prime reservations are granted.
    fn grant_primes(&mut self) {
        for (node, session) in std::mem::take(&mut self.waiting_primes) {
            self.queue.push_back((node, Input::PrimesReserved(session)));
        }
        self.run();
    }

    fn tick(&mut self, advance: Millis) {
        self.now += advance;
        for n in self.parties() {
            self.queue.push_back((n, Input::Tick));
        }
        self.run();
    }
}

fn keygen_job(session: SessionId, key: &str, scheme: Scheme, parties: Vec<NodeId>) -> Job {
    Job::KeyGen {
        session,
        key_id: KeyId::new(key).unwrap(),
        scheme,
        threshold: 3,
        parties,
        height: 1,
        deadline_height: 100,
        block_time_ms: 0,
    }
}

/// A signing of key `key`, made by the keygen of session `[1; 32]` (generation 1).
fn sign_job(session: SessionId, key: &str, scheme: Scheme, signers: Vec<NodeId>) -> Job {
    Job::Sign {
        session,
        request_id: RequestId::new(format!("r{}", session.0[0])).unwrap(),
        key_id: KeyId::new(key).unwrap(),
        message: b"hello".to_vec(),
        prehashed: false,
        scheme,
        signers,
        key_version: KeyVersion {
            generation: 1,
            session: SessionId([1; 32]),
        },
        height: 2,
        deadline_height: 100,
        block_time_ms: 0,
    }
}

fn keygen_results(h: &Harness) -> Vec<Vec<u8>> {
    h.submitted
        .iter()
        .filter_map(|(_, tx)| match tx {
            TxMsg::KeyGenResult {
                outcome: Outcome::Ok(ok),
                ..
            } => Some(ok.public_key.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn manager__should_generate_a_key_and_sign_with_it_in_both_frost_schemes() {
    for (i, scheme) in Scheme::FROST.into_iter().enumerate() {
        let mut h = Harness::new(4, 7 + i as u64);
        let parties = h.parties();
        h.job_for_all(keygen_job(SessionId([1; 32]), "k", scheme, parties.clone()));
        h.run();
        let pks = keygen_results(&h);
        assert_eq!(pks.len(), 4, "{:?}", h.submitted);
        assert!(pks.windows(2).all(|w| w[0] == w[1]));
        for s in h.stores.values() {
            let rec = s.records().next().unwrap();
            assert_eq!(rec.status, ShareStatus::Ready);
            assert_eq!(rec.public_key, pks[0]);
        }
        h.submitted.clear();
        let signers = parties[..3].to_vec();
        h.job_for_all(sign_job(SessionId([2; 32]), "k", scheme, signers));
        h.run();
        let sigs: Vec<&Vec<u8>> = h
            .submitted
            .iter()
            .filter_map(|(_, tx)| match tx {
                TxMsg::SignResult {
                    outcome: Outcome::Ok(sig),
                    ..
                } => Some(sig),
                _ => None,
            })
            .collect();
        assert_eq!(sigs.len(), 1, "{:?}", h.submitted);
        let verified = match scheme {
            Scheme::FrostEd25519 => seqmpc_proto::verify::ed25519(&pks[0], b"hello", sigs[0]),
            _ => seqmpc_proto::verify::bip340(&pks[0], b"hello", sigs[0]),
        };
        assert!(verified.is_ok(), "{verified:?}");
    }
}

#[test]
fn manager__should_replay_messages_that_arrive_before_the_job() {
    let mut h = Harness::new(4, 3);
    let parties = h.parties();
    let job = keygen_job(SessionId([9; 32]), "early", Scheme::FrostEd25519, parties);
    // node3 gets its job only after every other node has run as far as it can.
    for n in h.parties().into_iter().take(3) {
        h.queue.push_back((n, Input::Job(job.clone())));
    }
    h.run();
    assert!(keygen_results(&h).is_empty());
    h.queue.push_back((nid(3), Input::Job(job)));
    h.run();
    assert_eq!(keygen_results(&h).len(), 4, "{:?}", h.submitted);
}

#[test]
fn manager__should_name_a_silent_signer_at_the_timeout() {
    let (mut h, _) = keyed(5);
    let parties = h.parties();
    h.cut = vec![nid(2)];
    h.job_for_all(sign_job(
        SessionId([3; 32]),
        "k",
        Scheme::FrostEd25519,
        parties[..3].to_vec(),
    ));
    h.run();
    assert!(h.submitted.is_empty());
    h.tick(2_001);
    let culprits: Vec<&Vec<NodeId>> = h
        .submitted
        .iter()
        .filter_map(|(_, tx)| match tx {
            TxMsg::SignResult {
                outcome: Outcome::Failed { culprits, .. },
                ..
            } => Some(culprits),
            _ => None,
        })
        .collect();
    assert_eq!(culprits.len(), 2);
    assert!(culprits.iter().all(|c| **c == vec![nid(2)]));
}

#[test]
fn manager__should_refuse_to_sign_with_a_share_older_than_the_chains() {
    let mut h = Harness::new(4, 13);
    let parties = h.parties();
    h.job_for_all(keygen_job(
        SessionId([1; 32]),
        "k",
        Scheme::FrostEd25519,
        parties.clone(),
    ));
    h.run();
    assert_eq!(keygen_results(&h).len(), 4);
    h.submitted.clear();
    // node1 restarts on a store restored from a backup of an older generation (another
    // session) of the key; the chain signs with generation 1 of session [1; 32].
    let me = nid(1);
    let store = h.stores.get_mut(&me).unwrap();
    let mut old = store.records().next().unwrap().clone();
    (old.generation, old.session) = (0, SessionId([8; 32]));
    store.apply(StoreOp::Put(old));
    h.managers
        .insert(me.clone(), Manager::new(Config::new(me.clone())));
    h.cut = vec![];
    h.job_for_all(sign_job(
        SessionId([3; 32]),
        "k",
        Scheme::FrostEd25519,
        parties[..3].to_vec(),
    ));
    h.run();
    // node1 names itself at once, saying why; the chain then leaves it out. The other two wait
    // for a signer that never sends (the attempt moves on without them).
    let reports: Vec<(&NodeId, &Vec<NodeId>, &String)> = h
        .submitted
        .iter()
        .filter_map(|(by, tx)| match tx {
            TxMsg::SignResult {
                outcome: Outcome::Failed {
                    culprits, error, ..
                },
                ..
            } => Some((by, culprits, error)),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "{:?}", h.submitted);
    let (by, culprits, error) = reports[0];
    assert_eq!((by, culprits), (&me, &vec![me.clone()]));
    assert!(error.contains("restored from an old backup"), "{error}");
    assert!(error.contains("generation 0"), "{error}");
}

#[test]
fn manager__should_skip_a_replayed_keygen_that_completed_here() {
    let mut h = Harness::new(4, 11);
    let parties = h.parties();
    let job = keygen_job(SessionId([4; 32]), "k", Scheme::FrostEd25519, parties);
    h.job_for_all(job.clone());
    h.run();
    assert_eq!(keygen_results(&h).len(), 4);
    // A restarted node forgets its finished sessions; the store still knows.
    let me = nid(1);
    h.managers
        .insert(me.clone(), Manager::new(Config::new(me.clone())));
    h.submitted.clear();
    h.queue.push_back((me, Input::Job(job)));
    h.run();
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);
}

#[test]
fn manager__should_run_only_the_jobs_its_admission_lets_through() {
    let mut m = Manager::new(Config::new(nid(0)));
    let mut rng = StdRng::seed_from_u64(1);
    let now = 1_800_000_000_000;
    // A deletion is attested once, not again while its attestation may be on its way.
    let del = Job::Delete {
        key_id: KeyId::new("k").unwrap(),
        parties: vec![nid(0), nid(1)],
        height: 1,
    };
    let erases = |fx: &[Effect]| {
        fx.iter().any(|e| {
            matches!(
                e,
                Effect::Store {
                    op: StoreOp::Delete(_),
                    ..
                }
            )
        })
    };
    assert!(erases(&m.handle(now, Input::Job(del.clone()), &mut rng)));
    assert!(m
        .handle(now + 1, Input::Job(del.clone()), &mut rng)
        .is_empty());
    assert!(erases(&m.handle(
        now + admission::REATTEST_MS,
        Input::Job(del),
        &mut rng
    )));
    // A keygen of a block replayed after the chain passed its deadline does not start.
    let mut job = keygen_job(
        SessionId([2; 32]),
        "k2",
        Scheme::FrostEd25519,
        vec![nid(0), nid(1), nid(2)],
    );
    if let Job::KeyGen { block_time_ms, .. } = &mut job {
        *block_time_ms = now - 20_000;
    }
    assert!(m.needs_tip(now, &job));
    m.handle(now, Input::ChainTip(Some(100)), &mut rng);
    assert!(!m.needs_tip(now, &job));
    assert!(m.handle(now, Input::Job(job.clone()), &mut rng).is_empty());
    // The same job with the chain below its deadline starts.
    m.handle(
        now + admission::TIP_REFRESH_MS,
        Input::ChainTip(Some(99)),
        &mut rng,
    );
    assert!(!m
        .handle(now + admission::TIP_REFRESH_MS, Input::Job(job), &mut rng)
        .is_empty());
}

#[test]
fn manager__should_cap_what_one_party_buffers_in_a_session_it_belongs_to() {
    let mut m = Manager::new(Config::new(nid(0)));
    let mut rng = StdRng::seed_from_u64(2);
    let now = 1_000_000;
    let session = SessionId([3; 32]);
    let job = keygen_job(
        session,
        "k",
        Scheme::FrostEd25519,
        vec![nid(0), nid(1), nid(2)],
    );
    // The keygen opens and asks whether it already ran here: it did not.
    for e in m.handle(now, Input::Job(job), &mut rng) {
        if let Effect::Store {
            token: Some(token), ..
        } = e
        {
            let reply = Ok(StoreReply::Record(None));
            m.handle(now, Input::StoreReply { token, reply }, &mut rng);
        }
    }
    assert_eq!(m.active(), 1);
    // Before its DKG starts, a party floods it with DKG messages; another sends its two.
    let dkg = |from: usize| {
        Input::Msg(Msg {
            from: nid(from),
            session,
            payload: Payload::DkgRound1(seqmpc_proto::wire::DkgRound1 {
                package: vec![7; 64],
            }),
            quoted: None,
        })
    };
    for _ in 0..1000 {
        m.handle(now, dkg(1), &mut rng);
    }
    for _ in 0..2 {
        m.handle(now, dkg(2), &mut rng);
    }
    assert_eq!(m.session_buffered(), MAX_BUFFERED_PER_SENDER + 2);
}

#[test]
fn manager__should_keep_room_for_honest_early_messages_while_a_peer_floods_the_buffer() {
    let mut h = Harness::new(4, 11);
    // node3 buffers at most 40 early messages, 12 of them from one sender.
    let mut cfg = Config::new(nid(3));
    cfg.max_early_messages = 40;
    cfg.max_early_per_sender = 12;
    h.managers.insert(nid(3), Manager::new(cfg));
    // node9 (no party of anything) floods node3 with messages of sessions that never start.
    for i in 0..100u8 {
        let flood = Msg {
            from: nid(9),
            session: SessionId([i.wrapping_add(100); 32]),
            payload: seqmpc_proto::wire::p2p_envelope::Payload::SignRound2(
                seqmpc_proto::wire::SignRound2 {
                    share: vec![1; 32],
                    package_hash: vec![2; 32],
                },
            ),
            quoted: None,
        };
        h.queue.push_back((nid(3), Input::Msg(flood)));
    }
    h.run();
    // A keygen whose job reaches node3 last: its peers' messages wait in node3's buffer.
    let parties = h.parties();
    let job = keygen_job(SessionId([9; 32]), "flooded", Scheme::FrostEd25519, parties);
    for n in h.parties().into_iter().take(3) {
        h.queue.push_back((n, Input::Job(job.clone())));
    }
    h.run();
    h.queue.push_back((nid(3), Input::Job(job)));
    h.run();
    assert_eq!(keygen_results(&h).len(), 4, "{:?}", h.submitted);
}

#[test]
fn manager__should_bound_a_senders_early_messages_in_bytes_and_still_run_honest_sessions() {
    let mut h = Harness::new(4, 12);
    // Counts are generous; bytes are not: 256 KiB per sender, 1 MiB in all.
    let mut cfg = Config::new(nid(3));
    (cfg.max_early_bytes_per_sender, cfg.max_early_bytes) = (256 << 10, 1 << 20);
    h.managers.insert(nid(3), Manager::new(cfg));
    // node9 floods node3 with 200 messages of 10 KiB for sessions that never start (2 MiB).
    for i in 0..200u8 {
        let flood = Msg {
            from: nid(9),
            session: SessionId([i; 32]),
            payload: seqmpc_proto::wire::p2p_envelope::Payload::SignRound2(
                seqmpc_proto::wire::SignRound2 {
                    share: vec![1; 10 << 10],
                    package_hash: vec![2; 32],
                },
            ),
            quoted: None,
        };
        h.queue.push_back((nid(3), Input::Msg(flood)));
    }
    h.run();
    let (count, bytes) = h.managers[&nid(3)].early_buffered();
    assert!(
        bytes <= 256 << 10,
        "{count} messages, {bytes} bytes buffered"
    );
    assert!(count >= 20, "the sender's share is used: {count}");
    // The honest peers' messages of a keygen that reaches node3 last still fit.
    let parties = h.parties();
    let job = keygen_job(
        SessionId([0xf0; 32]),
        "flooded",
        Scheme::FrostEd25519,
        parties,
    );
    for n in h.parties().into_iter().take(3) {
        h.queue.push_back((n, Input::Job(job.clone())));
    }
    h.run();
    h.queue.push_back((nid(3), Input::Job(job)));
    h.run();
    assert_eq!(keygen_results(&h).len(), 4, "{:?}", h.submitted);
}

/// A 4-node harness with a READY FROST-Ed25519 key `k` (keygen session `[1; 32]`), its
/// keygen reports cleared; the key's public key.
fn keyed(seed: u64) -> (Harness, Vec<u8>) {
    let (h, ok) = keyed_with_package(seed);
    (h, ok.public_key)
}

/// A 4-node READY FROST-Ed25519 key `k` at threshold 3 (keygen session `[1; 32]`), the
/// reports cleared; what the chain recorded of it.
fn keyed_with_package(seed: u64) -> (Harness, KeyGenOk) {
    let mut h = Harness::new(4, seed);
    let parties = h.parties();
    h.job_for_all(keygen_job(
        SessionId([1; 32]),
        "k",
        Scheme::FrostEd25519,
        parties,
    ));
    h.run();
    let ok = h
        .submitted
        .iter()
        .find_map(|(_, tx)| match tx {
            TxMsg::KeyGenResult {
                outcome: Outcome::Ok(ok),
                ..
            } => Some(ok.clone()),
            _ => None,
        })
        .unwrap();
    h.submitted.clear();
    (h, ok)
}

/// The signatures submitted, by submitter.
fn signatures(h: &Harness) -> Vec<(NodeId, Vec<u8>)> {
    h.submitted
        .iter()
        .filter_map(|(n, tx)| match tx {
            TxMsg::SignResult {
                outcome: Outcome::Ok(sig),
                ..
            } => Some((n.clone(), sig.clone())),
            _ => None,
        })
        .collect()
}

/// A 4-node key `k` (FROST-Ed25519), and a signing by node0-node2 of it run to its end.
fn signed_by_three(seed: u64) -> (Harness, Vec<u8>) {
    let (mut h, pk) = keyed(seed);
    let parties = h.parties();
    h.job_for_all(sign_job(
        SessionId([4; 32]),
        "k",
        Scheme::FrostEd25519,
        parties[..3].to_vec(),
    ));
    h.run();
    (h, pk)
}

#[test]
fn manager__should_submit_a_backup_signature_only_while_the_chain_lacks_one() {
    let (mut h, pk) = signed_by_three(11);
    // Only the aggregator submits at once; every signer holds the signature.
    let sigs = signatures(&h);
    assert_eq!(sigs.len(), 1, "{:?}", h.submitted);
    assert_eq!(sigs[0].0, nid(0));
    seqmpc_proto::verify::ed25519(&pk, b"hello", &sigs[0].1).unwrap();
    // Its tx never lands (a stalled submitter): node1, of rank 1, submits after one backup
    // delay, node2 (rank 2) not yet.
    h.submitted.clear();
    h.tick(499);
    assert!(signatures(&h).is_empty(), "{:?}", h.submitted);
    h.tick(2);
    let backups = signatures(&h);
    assert_eq!(backups.len(), 1, "{:?}", h.submitted);
    assert_eq!(backups[0], (nid(1), sigs[0].1.clone()));
    // The chain has it now: node2's backup is dropped, and nothing else goes out.
    h.submitted.clear();
    h.job_for_all(Job::SignEnded {
        request_id: RequestId::new("r4").unwrap(),
    });
    h.tick(10_000);
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);
}

#[test]
fn manager__should_close_a_signing_the_chain_ended_without_reporting_it() {
    let (mut h, _) = signed_by_three(12);
    h.job_for_all(Job::SignEnded {
        request_id: RequestId::new("r4").unwrap(),
    });
    h.run();
    h.submitted.clear();
    // A second signing, in which node2 never speaks: the chain ends it (another attempt
    // brought a signature), so node0 and node1 report nothing at their timeout.
    h.cut = vec![nid(2)];
    let parties = h.parties();
    h.job_for_all(sign_job(
        SessionId([5; 32]),
        "k",
        Scheme::FrostEd25519,
        parties[..3].to_vec(),
    ));
    h.run();
    h.job_for_all(Job::SignEnded {
        request_id: RequestId::new("r5").unwrap(),
    });
    h.run();
    h.tick(5_000);
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);
}

#[test]
fn manager__should_send_a_lost_message_again_halfway_to_the_timeout() {
    let (mut h, _) = keyed(13);
    let parties = h.parties();
    // node1's commitments to node0 are lost: node0 cannot sign, so no one gets its share.
    h.lose = vec![(nid(1), nid(0))];
    h.job_for_all(sign_job(
        SessionId([6; 32]),
        "k",
        Scheme::FrostEd25519,
        parties[..3].to_vec(),
    ));
    h.run();
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);
    h.tick(999);
    assert!(h.submitted.is_empty(), "{:?}", h.submitted);
    // Halfway to the 2 s timeout node1 sends again to node0, whose share it lacks.
    h.tick(1);
    let sigs = signatures(&h);
    assert_eq!(sigs.len(), 1, "{:?}", h.submitted);
    assert_eq!(sigs[0].0, nid(0));
    h.tick(5_000);
    let failures = h
        .submitted
        .iter()
        .filter(|(_, tx)| {
            matches!(
                tx,
                TxMsg::SignResult {
                    outcome: Outcome::Failed { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(failures, 0, "{:?}", h.submitted);
}
