//! One simulated run: the event queue, the nodes, the network, the chain and the workload.

mod cggmp;
mod faults;
mod net;
mod submit;
mod workload;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seqmpc_abci::chain::genesis::{Genesis, GenesisAccount, GenesisNode, Limits, Role};
use seqmpc_abci::chain::TxError;
use seqmpc_abci::daemon::outbox::{Broadcast, Inclusion, Outbox};
use seqmpc_module::job::Job;
use seqmpc_module::protocol::cggmp::share::REFUSES_PUBLIC_TEST_MODULI;
use seqmpc_module::session::mem_store::MemStore;
use seqmpc_module::session::{
    codec, Config, Effect, Input, Manager, MetricEvent, Millis, Msg, Quote, StoreOp, StoreToken,
};
use seqmpc_proto::tx::{sign_tx, Outcome, SignedMessage, TxMsg};
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};

use crate::chain::Chain;
use crate::ecdsa::{Primes, Worker};
use crate::invariants::{self, Observed};
use crate::scenario::{Behaviour, FaultAt, Scenario};

/// The simulated clock starts here (ms since the Unix epoch), so block times look real.
const EPOCH: Millis = 1_700_000_000_000;
/// Session managers tick this often.
const TICK_MS: Millis = 250;
/// Nodes send a heartbeat this often (mpcd's default).
const HEARTBEAT_MS: Millis = 2_000;
/// A result tx reaches the mempool this long after the node hands it over.
const SUBMIT_MS: (Millis, Millis) = (1, 10);
/// A committed block's jobs reach a node this long after the block.
const COMMIT_MS: (Millis, Millis) = (0, 15);
/// The client's first keygens.
const KEYGEN_AT: Millis = 500;
/// The burst of keygens.
const BURST_AT: Millis = 4_000;
/// Signing requests start here (the keys are READY well before).
const SIGN_FROM: Millis = 5_000;

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Blocks produced.
    pub blocks: u64,
    /// Events handled.
    pub events: u64,
    /// p2p messages sent.
    pub messages: u64,
    /// Sign requests committed / ended DONE / ended ERROR.
    pub signs: (usize, usize, usize),
    /// Sign requests still in the chain state at the end (the others were pruned).
    pub signs_in_state: usize,
    /// Keygens committed / ended READY / ended ERROR.
    pub keygens: (usize, usize, usize),
    /// Resharings started / ended DONE / ended ERROR.
    pub reshares: (usize, usize, usize),
    /// Why each failed resharing failed.
    pub reshare_errors: Vec<String>,
    /// Simulated time, ms.
    pub sim_ms: Millis,
    /// Txs the chain refused at delivery (first few, for diagnostics).
    pub refused: Vec<String>,
    /// Node txs the mempool lost after CheckTx took them.
    pub lost_txs: u64,
    /// Result txs a node gave up on after sending them again.
    pub given_up_txs: u64,
    /// Result txs carrying a signature handed to a submitter (one per signature when no
    /// aggregator is late).
    pub signature_txs: u64,
    /// Signatures submitted by a signer other than the aggregator (backups).
    pub backups: u64,
    /// Safe-prime sets taken out of the nodes' stores by CGGMP24 keygens.
    pub prime_sets_used: usize,
    /// CGGMP24 presignatures the aggregators named in sign plans.
    pub presignatures_used: usize,
    /// Sessions that ended with a blame the chain proved, summed over the nodes.
    pub proven_blames: u64,
    /// Failure reports of honest signers naming a culprit that passed CheckTx.
    pub sign_blames: u64,
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario.
    pub scenario: &'static str,
    /// Seed.
    pub seed: u64,
    /// Broken invariants, one line each (empty: the run passed).
    pub violations: Vec<String>,
    /// Figures.
    pub stats: Stats,
}

impl Report {
    /// The command that replays this run.
    pub fn replay(&self) -> String {
        format!(
            "cargo run --release --locked -p seqmpc-sim --features seqmpc-abci/fault-injection \
             -- --scenario {} --seed {}",
            self.scenario, self.seed
        )
    }
}

enum Ev {
    Block,
    Tick(usize),
    Heartbeat(usize),
    /// An input for a node's manager, valid only for that incarnation of the node.
    Input(usize, u64, Input),
    /// A store operation completes (and becomes durable) now.
    Store(usize, u64, StoreOp, Option<StoreToken>),
    /// A node's submitter signs a tx and broadcasts it now (valid only for that incarnation):
    /// the message and how many times it was sent before.
    Tx(usize, u64, TxMsg, u32),
    /// The client sends a request.
    Client(TxMsg),
    /// The client sends every CGGMP24 keygen that ended ERROR again.
    RetryEcdsa,
    /// Node `i` (of that incarnation) stored a safe-prime set it was making.
    PrimeSet(usize, u64),
    /// Node `i`'s (modelled) aux-info generation for this keygen ended.
    AuxReady(usize, u64, SessionId),
    Fault(FaultAt),
}

struct Node {
    id: NodeId,
    key: SigningKey,
    manager: Option<Manager>,
    store: MemStore,
    rng: StdRng,
    incarnation: u64,
    /// When the store completes the operations queued so far.
    store_free_at: Millis,
    /// The submitter's txs in flight (the daemon's own logic, sans-IO).
    outbox: Outbox,
    behaviour: Behaviour,
    partitioned: bool,
    /// Jobs of blocks missed while down or cut off, replayed when it comes back (as the
    /// consensus engine replays missed blocks to a restarted app).
    missed: Vec<Job>,
    /// Txs held while cut off (the submitter holds them).
    held: Vec<TxMsg>,
    /// When its last tx reaches the mempool: one submitter thread sends in order.
    last_tx_at: Millis,
    /// When its last job reaches it: a node takes the chain's jobs in order, however late.
    last_job_at: Millis,
    /// A `Framer`'s victim in each signing it takes part in.
    framed: BTreeMap<SessionId, NodeId>,
    /// Its safe-prime sets ([`crate::ecdsa`]).
    primes: Primes,
    /// Its CGGMP24 keygen workers.
    workers: BTreeMap<SessionId, Worker>,
}

impl Node {
    fn up(&self) -> bool {
        self.manager.is_some() && !self.partitioned
    }
}

struct World {
    sc: Scenario,
    rng: StdRng,
    now: Millis,
    seq: u64,
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    chain: Chain,
    client: SigningKey,
    client_seq: u64,
    obs: Observed,
    stats: Stats,
    end: Millis,
}

fn nid(i: usize) -> NodeId {
    // Ids are fixed strings of a valid shape: this cannot fail.
    NodeId::new(format!("node{i}")).unwrap_or_else(|_| unreachable!())
}

fn genesis(sc: &Scenario, nodes: &[SigningKey], client: &SigningKey) -> Genesis {
    Genesis {
        chain_id: "sim".into(),
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisNode {
                id: nid(i),
                public_key: hex::encode(k.verifying_key().to_bytes()),
                p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 30000 + i),
            })
            .collect(),
        accounts: vec![GenesisAccount {
            name: "client".into(),
            public_key: hex::encode(client.verifying_key().to_bytes()),
            roles: BTreeSet::from([Role::Keygen, Role::Sign, Role::Delete]),
        }],
        limits: Limits {
            max_requests_per_account_per_block: u32::try_from(sc.burst_keygens.max(100))
                .unwrap_or(u32::MAX),
            sign_attempt_blocks: sc
                .sign_attempt_blocks
                .unwrap_or(Limits::default().sign_attempt_blocks),
            sign_retention_blocks: sc.sign_retention_blocks,
            cggmp_keygen_deadline_blocks: sc
                .cggmp_keygen_deadline_blocks
                .unwrap_or(Limits::default().cggmp_keygen_deadline_blocks),
            ..Limits::default()
        },
        governance: None,
    }
}

fn config(sc: &Scenario, me: NodeId) -> Config {
    let mut cfg = Config::new(me);
    if let Some(ms) = sc.sign_timeout_ms {
        cfg.sign_timeout_ms = ms;
    }
    if let Some(ms) = sc.backup_submit_ms {
        cfg.backup_submit_ms = ms;
    }
    // The longest aux info here, and a second to report it.
    cfg.aux_gen_ms = sc.aux_gen_ms.1.saturating_add(1_000);
    cfg.cggmp_silence_ms = sc.cggmp_silence_ms;
    cfg.presign_pool = sc.presign_pool;
    cfg
}

/// Runs `scenario` with `seed` and checks the invariants.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    if scenario.ecdsa_keygens > 0 && REFUSES_PUBLIC_TEST_MODULI {
        return Report {
            scenario: scenario.name,
            seed,
            violations: vec![
                "this scenario's CGGMP24 keygens use the test fixtures' aux info, which a \
                 production build refuses: run a test build (make sim, or the replay command)"
                    .into(),
            ],
            stats: Stats::default(),
        };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<SigningKey> = (0..scenario.nodes)
        .map(|_| SigningKey::from_bytes(&rng.gen()))
        .collect();
    let client = SigningKey::from_bytes(&rng.gen());
    let chain = match Chain::new(&genesis(scenario, &keys, &client)) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                scenario: scenario.name,
                seed,
                violations: vec![format!("genesis refused: {e}")],
                stats: Stats::default(),
            }
        }
    };
    let deadline_ms = chain
        .state
        .limits
        .session_deadline_blocks
        .max(scenario.cggmp_keygen_deadline_blocks.unwrap_or(0))
        .saturating_mul(scenario.block_ms);
    let nodes = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| Node {
            id: nid(i),
            key,
            manager: Some(Manager::new(config(scenario, nid(i)))),
            store: MemStore::default(),
            rng: StdRng::seed_from_u64(seed.wrapping_add(1 + i as u64)),
            incarnation: 0,
            store_free_at: 0,
            outbox: Outbox::new(0),
            behaviour: scenario.behaviour_of(i),
            partitioned: false,
            missed: Vec::new(),
            held: Vec::new(),
            last_tx_at: 0,
            last_job_at: 0,
            framed: BTreeMap::new(),
            primes: Primes::new(scenario.prime_sets),
            workers: BTreeMap::new(),
        })
        .collect();
    let mut w = World {
        sc: scenario.clone(),
        rng,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: BTreeMap::new(),
        nodes,
        chain,
        client,
        client_seq: 0,
        obs: Observed::default(),
        stats: Stats::default(),
        end: scenario.load_ms + deadline_ms + 5_000,
    };
    w.plan();
    w.run();
    let violations = invariants::check(&w.sc, &w.chain, &w.stores(), &w.obs, w.end);
    w.stats.sim_ms = w.now;
    w.stats.signs = invariants::sign_counts(&w.chain);
    w.stats.signs_in_state = w.chain.state.sign_requests().len();
    w.stats.keygens = invariants::keygen_counts(&w.chain);
    w.stats.reshares = w.obs.reshare_counts();
    w.stats.reshare_errors = w.obs.reshare_errors();
    w.stats.prime_sets_used = w.obs.prime_sets_used();
    w.stats.presignatures_used = w.obs.presignatures_used();
    w.stats.refused = w.chain.refused.iter().take(20).cloned().collect();
    w.stats.proven_blames = w.chain.state.nodes.values().map(|n| n.proven_blames).sum();
    Report {
        scenario: scenario.name,
        seed,
        violations,
        stats: w.stats,
    }
}

impl World {
    fn at(&mut self, t: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn draw(&mut self, (lo, hi): (Millis, Millis)) -> Millis {
        if hi <= lo {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        }
    }

    fn run(&mut self) {
        while let Some(Reverse((t, id))) = self.queue.pop() {
            if t > self.end {
                break;
            }
            let Some(ev) = self.events.remove(&id) else {
                continue;
            };
            self.now = t;
            self.stats.events += 1;
            self.handle(ev);
        }
        self.now = self.now.max(self.end);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Block => {
                let mut jobs = self.chain.block(EPOCH + self.now);
                // As the app's Commit: the block itself, after its jobs.
                jobs.push(Job::Block {
                    height: self.chain.state.height,
                    block_time_ms: EPOCH + self.now,
                });
                self.stats.blocks += 1;
                self.obs.height_at.push((self.now, self.chain.state.height));
                for job in &jobs {
                    self.obs.job(self.now, job);
                }
                for i in 0..self.nodes.len() {
                    for job in &jobs {
                        self.job_to(i, job.clone());
                    }
                }
                self.at(self.now + self.sc.block_ms, Ev::Block);
            }
            Ev::Tick(i) => {
                self.report_quiet_workers(i);
                self.input(i, Input::Tick);
                self.confirm(i);
                self.at(self.now + TICK_MS, Ev::Tick(i));
            }
            Ev::Heartbeat(i) => {
                if self.nodes.get(i).is_some_and(|n| n.manager.is_some()) {
                    self.submit(i, TxMsg::Heartbeat);
                }
                self.at(self.now + HEARTBEAT_MS, Ev::Heartbeat(i));
            }
            Ev::Input(i, inc, input) => {
                if self.nodes.get(i).is_some_and(|n| n.incarnation == inc) {
                    self.input(i, input);
                }
            }
            Ev::Store(i, inc, op, token) => {
                let Some(node) = self.nodes.get_mut(i) else {
                    return;
                };
                if node.incarnation != inc || node.manager.is_none() {
                    return; // the node crashed first: the write never completed
                }
                let reply = match cggmp::configured_aux(&self.sc, &node.id, &op) {
                    Some(reply) => reply,
                    None => node.store.apply(op),
                };
                if let Some(token) = token {
                    let input = Input::StoreReply {
                        token,
                        reply: Ok(reply),
                    };
                    self.input(i, input);
                }
            }
            Ev::Tx(i, inc, msg, resends) => self.broadcast(i, inc, msg, resends),
            Ev::Client(msg) => {
                self.obs.requested(self.now, &msg);
                let tx = sign_tx(&self.client, "sim", self.client_seq, msg);
                match self.chain.check(&tx) {
                    // A refused tx does not use up the client's sequence (mpcctl signs the
                    // next one with the same).
                    Ok(_) => {
                        self.client_seq += 1;
                        self.chain.submit(tx)
                    }
                    Err(e) => self
                        .chain
                        .refused
                        .push(format!("client tx at CheckTx: {e}")),
                }
            }
            Ev::RetryEcdsa => self.retry_ecdsa(),
            Ev::PrimeSet(i, inc) => self.prime_set_made(i, inc),
            Ev::AuxReady(i, inc, session) => self.aux_ready(i, inc, session),
            Ev::Fault(f) => self.fault(f),
        }
    }

    fn job_to(&mut self, i: usize, job: Job) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        if !n.up() {
            n.missed.push(job);
            return;
        }
        if n.behaviour == Behaviour::FalseAbort {
            if let Job::Sign {
                session, signers, ..
            } = &job
            {
                let me = n.id.clone();
                if signers.contains(&me) {
                    let (session, others) = (*session, signers.clone());
                    for to in others.into_iter().filter(|s| *s != me) {
                        let reason = "false abort".to_owned();
                        let abort = Payload::Abort(wire::SessionAbort { reason });
                        self.send(i, session, to, abort);
                    }
                }
            }
        }
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        if matches!(
            n.behaviour,
            Behaviour::FalseClaim | Behaviour::FalseAbort | Behaviour::Framer
        ) {
            if let Job::Sign {
                session,
                request_id,
                signers,
                ..
            } = &job
            {
                let me = n.id.clone();
                if let Some(victim) = signers.iter().find(|s| **s != me).cloned() {
                    if n.behaviour == Behaviour::Framer && signers.contains(&me) {
                        n.framed.insert(*session, victim.clone());
                    }
                    let lie = TxMsg::SignResult {
                        request_id: request_id.clone(),
                        session: *session,
                        outcome: Outcome::Failed {
                            error: "false claim".into(),
                            culprits: vec![victim],
                            evidence: Vec::new(),
                        },
                        signing_package: Vec::new(),
                    };
                    if signers.contains(&me) {
                        self.submit(i, lie);
                    }
                }
            }
        }
        let inc = self.nodes.get(i).map(|n| n.incarnation).unwrap_or_default();
        // A block's Block job comes right after its other jobs, and draws nothing (so the
        // seeds of runs recorded before it existed replay as they did).
        let is_block = matches!(job, Job::Block { .. });
        let lag = match self.sc.lag {
            Some((node, range)) if node == i && !is_block => self.draw(range),
            _ => 0,
        };
        let commit = if is_block { 0 } else { self.draw(COMMIT_MS) };
        let t = self.now + commit + lag;
        // A node takes its jobs in the chain's order (mpcd's job channel): one drawn earlier
        // than the job before it waits for that one. (Until resharing ran here, only a lagging
        // node's were held in order: a signing of the old generation that overtook the
        // switch to the new one made honest signers look stale.)
        let t = match self.nodes.get_mut(i) {
            Some(n) => {
                n.last_job_at = n.last_job_at.max(t);
                n.last_job_at
            }
            None => t,
        };
        self.at(t, Ev::Input(i, inc, Input::Job(job)));
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = EPOCH + self.now;
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        let Some(m) = n.manager.as_mut() else {
            return;
        };
        // The runtime reads the chain's height when the admission policy asks for it (mpcd:
        // over the RPC): here, the simulated chain's.
        if let Input::Job(job) = &input {
            if m.needs_tip(now, job) {
                let tip = Input::ChainTip(Some(self.chain.state.height));
                let _ = m.handle(now, tip, &mut n.rng);
            }
        }
        let effects = m.handle(now, input, &mut n.rng);
        for e in effects {
            self.effect(i, e);
        }
    }

    fn effect(&mut self, i: usize, e: Effect) {
        match e {
            Effect::Send {
                session,
                to,
                payload,
            } => self.send(i, session, to, payload),
            Effect::Store { op, token } => {
                let inc = self.nodes.get(i).map(|n| n.incarnation).unwrap_or_default();
                // One store thread per node (mpcd's): operations complete in order.
                let t = self.now + self.draw(self.sc.store_ms);
                let Some(n) = self.nodes.get_mut(i) else {
                    return;
                };
                let t = t.max(n.store_free_at);
                n.store_free_at = t;
                self.at(t, Ev::Store(i, inc, op, token));
            }
            Effect::Submit(msg) => {
                let signature = matches!(
                    msg,
                    TxMsg::SignResult {
                        outcome: Outcome::Ok(_),
                        ..
                    }
                );
                if signature {
                    if self.sc.behaviour_of(i) == Behaviour::WithholdsSignatures {
                        return;
                    }
                    self.stats.signature_txs += 1;
                }
                self.submit(i, msg)
            }
            Effect::Metric(MetricEvent::SignBackupSubmitted) => self.stats.backups += 1,
            Effect::StartWorker { session, task } => self.start_worker(i, session, task),
            Effect::ToWorker { session, from, msg } => {
                self.forward_to_worker(i, session, from, msg)
            }
            Effect::ReservePrimes(session) => self.reserve_primes(i, session),
            Effect::StopWorker(session) => {
                if let Some(n) = self.nodes.get_mut(i) {
                    n.workers.remove(&session);
                    n.primes.release(&session);
                }
            }
            Effect::Checkpoint(_) | Effect::Metric(_) => {}
        }
    }

    fn stores(&self) -> Vec<(NodeId, Behaviour, &MemStore)> {
        self.nodes
            .iter()
            .map(|n| (n.id.clone(), n.behaviour, &n.store))
            .collect()
    }
}
