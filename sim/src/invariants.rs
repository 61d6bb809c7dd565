//! What must hold after every run, and what the run observed to check it.

use std::collections::{BTreeMap, BTreeSet};

use seqmpc_abci::chain::{KeyStatus, SignStatus};
use seqmpc_module::job::Job;
use seqmpc_module::session::mem_store::MemStore;
use seqmpc_module::session::Millis;
use seqmpc_module::store::{KeyRecord, ShareStatus};
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::wire::p2p_envelope::Payload;
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};

use crate::chain::Chain;
use crate::scenario::{Behaviour, Scenario};

/// What the run saw happen, beside the chain and the stores.
#[derive(Default)]
pub struct Observed {
    /// When each sign request was sent.
    signs: BTreeMap<RequestId, Millis>,
    /// When each keygen was sent.
    keygens: BTreeMap<KeyId, Millis>,
    /// (time, node, up) changes, in time order.
    status: Vec<(Millis, usize, bool)>,
    /// (time, height) after each block.
    pub height_at: Vec<(Millis, u64)>,
    /// Each signing commitment an honest node sent: where first.
    commitments: BTreeMap<Vec<u8>, (usize, SessionId)>,
    /// Each CGGMP24 presignature an honest aggregator named in a sign plan: where first.
    presignatures: BTreeMap<Vec<u8>, (usize, SessionId)>,
    /// Each signature share an honest node sent per session.
    shares: BTreeMap<(usize, SessionId), Vec<u8>>,
    /// Nonce or share reuse seen.
    reuse: Vec<String>,
    /// Each resharing the chain started, by session.
    reshares: BTreeMap<SessionId, Reshared>,
    /// Each keygen the chain started: its key and how many parties it has.
    keygen_sessions: BTreeMap<SessionId, (KeyId, usize)>,
    /// Why the chain ended a keygen ERROR, by session.
    keygen_failures: BTreeMap<SessionId, String>,
    /// The nodes that took a safe-prime set out of their store for a keygen, by session.
    prime_sets_taken: BTreeMap<SessionId, BTreeSet<usize>>,
    /// Txs of honest nodes the chain refused for their evidence (a report quoting a message
    /// that is not genuine), first few.
    bad_evidence: Vec<String>,
}

/// Notes that node `i` used `id` in `session`, in `seen` (where each id was first used).
/// Returns that first use when it was in another session.
fn first_use(
    seen: &mut BTreeMap<Vec<u8>, (usize, SessionId)>,
    id: &[u8],
    i: usize,
    session: &SessionId,
) -> Option<(usize, SessionId)> {
    match seen.get(id) {
        Some(&(j, s)) => (s != *session).then_some((j, s)),
        None => {
            seen.insert(id.to_vec(), (i, *session));
            None
        }
    }
}

/// A resharing the chain started, and how it ended.
struct Reshared {
    key_id: KeyId,
    /// Dealers and new parties.
    involved: Vec<NodeId>,
    started: Millis,
    deadline_height: u64,
    /// `None` while PENDING; `Some(Ok)` DONE, `Some(Err(reason))` ERROR.
    outcome: Option<Result<(), String>>,
}

impl Observed {
    /// The client sent `msg` at `t`.
    pub fn requested(&mut self, t: Millis, msg: &TxMsg) {
        match msg {
            TxMsg::KeySign { request_id, .. } => {
                self.signs.insert(request_id.clone(), t);
            }
            TxMsg::KeyGen { key_id, .. } => {
                self.keygens.insert(key_id.clone(), t);
            }
            _ => {}
        }
    }

    /// A committed block handed out `job` at `t`.
    pub fn job(&mut self, t: Millis, job: &Job) {
        match job {
            Job::KeyGen {
                session,
                key_id,
                parties,
                ..
            } => {
                self.keygen_sessions
                    .insert(*session, (key_id.clone(), parties.len()));
            }
            Job::KeyGenFailed {
                session, reason, ..
            } => {
                self.keygen_failures.insert(*session, reason.clone());
            }
            Job::Reshare(r) => {
                let mut involved: Vec<NodeId> =
                    r.dealers.iter().chain(&r.new_parties).cloned().collect();
                involved.sort();
                involved.dedup();
                self.reshares.insert(
                    r.session,
                    Reshared {
                        key_id: r.key_id.clone(),
                        involved,
                        started: t,
                        deadline_height: r.deadline_height,
                        outcome: None,
                    },
                );
            }
            Job::ReshareDone { session, .. } => {
                if let Some(r) = self.reshares.get_mut(session) {
                    r.outcome = Some(Ok(()));
                }
            }
            Job::ReshareFailed {
                session, reason, ..
            } => {
                if let Some(r) = self.reshares.get_mut(session) {
                    r.outcome = Some(Err(reason.clone()));
                }
            }
            _ => {}
        }
    }

    /// CheckTx refused a tx of honest node `i` for its evidence.
    pub fn evidence_refused(&mut self, i: usize, error: String) {
        if self.bad_evidence.len() < 5 {
            self.bad_evidence
                .push(format!("honest node{i}'s report refused: {error}"));
        }
    }

    /// Node `i` took a safe-prime set out of its store for the keygen `session`.
    pub fn prime_set_taken(&mut self, i: usize, session: SessionId) {
        self.prime_sets_taken.entry(session).or_default().insert(i);
    }

    /// Presignatures named in sign plans (each must have been used once).
    pub fn presignatures_used(&self) -> usize {
        self.presignatures.len()
    }

    /// Safe-prime sets taken out of the nodes' stores.
    pub fn prime_sets_used(&self) -> usize {
        self.prime_sets_taken.values().map(BTreeSet::len).sum()
    }

    /// Resharings: started, DONE, ERROR.
    pub fn reshare_counts(&self) -> (usize, usize, usize) {
        let count = |ok: bool| {
            self.reshares
                .values()
                .filter(|r| matches!(&r.outcome, Some(o) if o.is_ok() == ok))
                .count()
        };
        (self.reshares.len(), count(true), count(false))
    }

    /// Why each resharing that ended ERROR failed, in session order.
    pub fn reshare_errors(&self) -> Vec<String> {
        self.reshares
            .values()
            .filter_map(|r| r.outcome.as_ref().and_then(|o| o.clone().err()))
            .collect()
    }

    /// Whether node `i` is down at the end (crashed or cut off).
    fn down_at_end(&self, i: usize) -> bool {
        self.status
            .iter()
            .rev()
            .find(|(_, j, _)| *j == i)
            .is_some_and(|(_, _, up)| !*up)
    }

    /// Node `i` went down (crash or partition) at `t`.
    pub fn down(&mut self, t: Millis, i: usize) {
        self.status.push((t, i, false));
    }

    /// Node `i` came back at `t`.
    pub fn up(&mut self, t: Millis, i: usize) {
        self.status.push((t, i, true));
    }

    /// Honest node `i` sent `payload` in `session`: a signing nonce commitment must never
    /// appear in two sessions, a signer sends one share per session, and a presignature is
    /// named in one session's plan only.
    pub fn sent(&mut self, i: usize, session: &SessionId, payload: &Payload) {
        match payload {
            Payload::SignRound1(r) => {
                if let Some((j, s)) = first_use(&mut self.commitments, &r.commitments, i, session) {
                    self.reuse.push(format!(
                        "node{i} sent in session {session} the signing commitments node{j} sent in {s}"
                    ));
                }
            }
            Payload::SignPlan(p) if !p.presignature_id.is_empty() => {
                if let Some((j, s)) =
                    first_use(&mut self.presignatures, &p.presignature_id, i, session)
                {
                    self.reuse.push(format!(
                        "node{i} named in session {session} the presignature node{j} named in {s}"
                    ));
                }
            }
            Payload::SignRound2(r) => {
                let kept = self.shares.entry((i, *session)).or_insert(r.share.clone());
                if *kept != r.share {
                    self.reuse.push(format!(
                        "node{i} sent two different signature shares in session {session}"
                    ));
                }
            }
            _ => {}
        }
    }

    /// Whether node `i` was up for the whole of `[from, to]`.
    fn up_throughout(&self, i: usize, from: Millis, to: Millis) -> bool {
        let mut up = true;
        for (t, j, u) in &self.status {
            if *j != i {
                continue;
            }
            if *t <= from {
                up = *u;
            } else if *t <= to && !*u {
                return false;
            }
        }
        up
    }

    /// The time the chain reached `height` (the end of the run if it never did).
    fn time_of(&self, height: u64, end: Millis) -> Millis {
        self.height_at
            .iter()
            .find(|(_, h)| *h >= height)
            .map(|(t, _)| *t)
            .unwrap_or(end)
    }
}

fn honest_up(sc: &Scenario, obs: &Observed, parties: &[NodeId], from: Millis, to: Millis) -> usize {
    (0..sc.nodes)
        .filter(|i| parties.iter().any(|p| p.as_str() == format!("node{i}")))
        .filter(|i| sc.behaviour_of(*i) == Behaviour::Honest)
        .filter(|i| obs.up_throughout(*i, from, to))
        .count()
}

/// Checks every invariant; one line per violation.
pub fn check(
    sc: &Scenario,
    chain: &Chain,
    stores: &[(NodeId, Behaviour, &MemStore)],
    obs: &Observed,
    end: Millis,
) -> Vec<String> {
    let mut v = Vec::new();
    let state = &chain.state;
    let height = state.height;
    // Every request ends by its deadline; every one ends DONE while t honest nodes are up.
    for req in chain.all_signs().values() {
        if req.status == SignStatus::Pending && req.deadline_height <= height {
            v.push(format!(
                "sign {} still PENDING at height {height}, past its deadline {}",
                req.request_id, req.deadline_height
            ));
        }
        let Some(key) = state.keys().get(&req.key_id) else {
            continue;
        };
        let from = obs.signs.get(&req.request_id).copied().unwrap_or(0);
        let to = obs.time_of(req.deadline_height, end);
        let up = honest_up(sc, obs, &key.parties, from, to);
        // An honest signer up for the whole request is never left out of it, unless a liar
        // named it (a false report may cost one late signer its place, never the request),
        // its shares were rolled back (it names itself), or the network lost its messages
        // (then it looked silent to its peers, as a dead one does).
        if !sc.has_liars() && sc.drop_pct == 0 && sc.random_faults == 0 {
            let ended = obs.time_of(req.done_height.unwrap_or(req.deadline_height), end);
            for node in &req.excluded {
                let Some(i) = sc.index_of(node) else {
                    continue;
                };
                let honest = sc.behaviour_of(i) == Behaviour::Honest && !sc.rolls_back(i);
                if honest && obs.up_throughout(i, from, ended) {
                    v.push(format!(
                        "sign {}: honest {node}, up throughout, was left out ({:?}): {}",
                        req.request_id,
                        req.excluded,
                        req.error.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        if sc.first_attempt && (req.status != SignStatus::Done || req.attempt != 0) {
            v.push(format!(
                "sign {} ended {:?} in attempt {}, not DONE in the first: {}",
                req.request_id,
                req.status,
                req.attempt,
                req.error.as_deref().unwrap_or("")
            ));
        }
        if req.status != SignStatus::Done && up >= key.threshold as usize {
            // Each attempt kept: its signers and who named whom.
            let attempts: Vec<String> = req
                .ended_attempts
                .iter()
                .map(|a| {
                    let claims: Vec<String> = a
                        .claims
                        .iter()
                        .map(|(by, named)| format!("{by}>{}", ids(named)))
                        .collect();
                    format!("#{} [{}] {}", a.attempt, ids(&a.signers), claims.join(" "))
                })
                .collect();
            v.push(format!(
                "sign {} ended {:?} while {up} honest nodes (threshold {}) were up: {}; \
                 attempts: {}",
                req.request_id,
                req.status,
                key.threshold,
                req.error.as_deref().unwrap_or(""),
                attempts.join("; ")
            ));
        }
    }
    for key in state.keys().values() {
        if key.status == KeyStatus::Pending && key.deadline_height <= height {
            v.push(format!(
                "key {} still PENDING at height {height}, past its deadline",
                key.key_id
            ));
        }
        let from = obs.keygens.get(&key.key_id).copied().unwrap_or(0);
        let to = obs.time_of(key.deadline_height, end);
        let up = honest_up(sc, obs, &key.parties, from, to);
        // A CGGMP24 keygen that must generate aux info waits for every party's safe-prime
        // set, which may take longer than its deadline: the client retries it (checked below).
        let waits_for_primes = key.scheme == Scheme::Cggmp24Secp256k1 && !sc.ecdsa_aux;
        if key.status == KeyStatus::Error
            && up == key.parties.len()
            && key.attempt == 0
            && !waits_for_primes
        {
            v.push(format!(
                "keygen {} ended ERROR with every party honest and up: {}",
                key.key_id,
                key.error.as_deref().unwrap_or("")
            ));
        }
        // No READY share lost: every party holds its share READY, of the chain's key and
        // generation (a node down at the end may hold it staged still: it promotes it when
        // it catches up; a node restored from an old backup holds an older one).
        if key.status == KeyStatus::Ready {
            for (node, _, store) in stores {
                if !key.parties.contains(node) {
                    continue;
                }
                let i = sc.index_of(node).unwrap_or(usize::MAX);
                let of_key = |r: &&KeyRecord| {
                    r.key_id == key.key_id && Some(hex::encode(&r.public_key)) == key.public_key
                };
                let rec = store.records().find(|r| r.key_id == key.key_id);
                let ready = store.records().filter(of_key).any(|r| {
                    r.status == ShareStatus::Ready
                        && (r.generation == key.generation || sc.rolls_back(i))
                });
                let staged = obs.down_at_end(i)
                    && store
                        .staged()
                        .filter(of_key)
                        .any(|r| r.generation == key.generation);
                if !ready && !staged {
                    v.push(format!(
                        "key {} is READY on chain (generation {}) but {node} holds {:?}",
                        key.key_id,
                        key.generation,
                        rec.map(|r| (r.status, r.generation))
                    ));
                }
            }
        }
    }
    ecdsa(sc, chain, obs, &mut v);
    // The chain and the nodes agree: a share READY here is a READY key there, of its key.
    for (node, _, store) in stores {
        for r in store.records().filter(|r| r.status == ShareStatus::Ready) {
            let key = state.keys().get(&r.key_id);
            let agrees = key.is_some_and(|k| {
                matches!(
                    k.status,
                    KeyStatus::Ready | KeyStatus::Deleting | KeyStatus::Deleted
                ) && k.public_key == Some(hex::encode(&r.public_key))
            });
            if !agrees {
                v.push(format!(
                    "{node} holds {} READY but the chain says {:?}",
                    r.key_id,
                    key.map(|k| k.status)
                ));
            }
            // A share of a committee the node left is deleted (once it caught up).
            let i = sc.index_of(node).unwrap_or(usize::MAX);
            if key.is_some_and(|k| !k.parties.contains(node)) && !obs.down_at_end(i) {
                v.push(format!(
                    "{node} still holds {} READY after it left the key's committee",
                    r.key_id
                ));
            }
        }
    }
    // Every resharing ends by its deadline, DONE while every party is honest and up.
    for (session, r) in &obs.reshares {
        match &r.outcome {
            None if r.deadline_height <= height => v.push(format!(
                "reshare {session} of {} still PENDING at height {height}, past its deadline {}",
                r.key_id, r.deadline_height
            )),
            Some(Err(reason)) => {
                let to = obs.time_of(r.deadline_height, end);
                let up = honest_up(sc, obs, &r.involved, r.started, to);
                if up == r.involved.len() {
                    v.push(format!(
                        "reshare {session} of {} ended ERROR with every party honest and up: \
                         {reason}",
                        r.key_id
                    ));
                }
            }
            _ => {}
        }
    }
    // No honest node proven guilty.
    for (node, behaviour, _) in stores {
        let proven = state.nodes.get(node).map(|n| n.proven_blames).unwrap_or(0);
        if *behaviour == Behaviour::Honest && proven > 0 {
            v.push(format!("honest {node} proven guilty {proven} times"));
        }
    }
    v.extend(obs.reuse.iter().cloned());
    v.extend(obs.bad_evidence.iter().cloned());
    v
}

/// Sign requests: committed, DONE, ERROR.
pub fn sign_counts(chain: &Chain) -> (usize, usize, usize) {
    let reqs = chain.all_signs();
    let count = |s: SignStatus| reqs.values().filter(|r| r.status == s).count();
    (
        reqs.len(),
        count(SignStatus::Done),
        count(SignStatus::Error),
    )
}

/// Keygens: committed, READY (or deleted since), ERROR.
pub fn keygen_counts(chain: &Chain) -> (usize, usize, usize) {
    let keys = chain.state.keys();
    let ready = keys.values().filter(|k| k.ready_height.is_some()).count();
    let error = keys
        .values()
        .filter(|k| k.status == KeyStatus::Error)
        .count();
    (keys.len(), ready, error)
}

/// CGGMP24 keygens on a network without faults: every key ends READY (the client retries a
/// keygen that ended ERROR), and no safe-prime set is spent on a keygen that did not end READY
/// or that not every party started (issue 15: retried keygens that burned every node's sets).
fn ecdsa(sc: &Scenario, chain: &Chain, obs: &Observed, v: &mut Vec<String>) {
    if !sc.fault_free() {
        return;
    }
    let keys = chain.state.keys();
    for key in keys.values() {
        if key.scheme == Scheme::Cggmp24Secp256k1 && key.status != KeyStatus::Ready {
            v.push(format!(
                "CGGMP24 key {} is {:?} at the end (attempt {}): {}",
                key.key_id,
                key.status,
                key.attempt,
                key.error.as_deref().unwrap_or("")
            ));
        }
    }
    for (session, takers) in &obs.prime_sets_taken {
        let Some((key_id, parties)) = obs.keygen_sessions.get(session) else {
            continue;
        };
        let ready = keys
            .get(key_id)
            .is_some_and(|k| k.status == KeyStatus::Ready && k.session == *session);
        if takers.len() != *parties || !ready {
            let failure = obs.keygen_failures.get(session).map_or("", String::as_str);
            v.push(format!(
                "keygen {key_id} (session {}) spent the safe-prime sets of nodes {takers:?} of \
                 {parties} parties and ended {}",
                hex::encode(&session.0[..4]),
                if ready { "READY" } else { failure }
            ));
        }
    }
}

/// Node ids, comma-separated.
fn ids(nodes: &[seqmpc_proto::NodeId]) -> String {
    let names: Vec<&str> = nodes.iter().map(|n| n.as_str()).collect();
    names.join(",")
}
