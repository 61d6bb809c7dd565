//! The CGGMP24 runtime of the simulated nodes ([`crate::ecdsa`]): the effects a keygen asks
//! for (a safe-prime reservation, a worker, its messages) and the client's retries.

use seqmpc_abci::chain::KeyStatus;
use seqmpc_module::error::ProtocolError;
use seqmpc_module::protocol::cggmp::CggmpMsg;
use seqmpc_module::session::traffic::Traffic;
use seqmpc_module::session::{InlineWorker, Input, StoreOp, StoreReply, WorkerOutput, WorkerTask};
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::{NodeId, Scheme, SessionId};

use super::{Ev, World};
use crate::ecdsa::{self, Worker};
use crate::scenario::Scenario;

/// The runtime's answer to `op` when it is its own (mpcd answers `FindAux` with the aux info
/// it was configured with, `--cggmp-fixtures`, before looking in the store).
pub(super) fn configured_aux(sc: &Scenario, me: &NodeId, op: &StoreOp) -> Option<StoreReply> {
    let StoreOp::FindAux(parties) = op else {
        return None;
    };
    let (committee, offer) = ecdsa::fixture_aux(me).filter(|_| sc.ecdsa_aux)?;
    (committee == *parties).then_some(StoreReply::Aux(Some(offer)))
}

impl World {
    fn incarnation(&self, i: usize) -> u64 {
        self.nodes.get(i).map(|n| n.incarnation).unwrap_or_default()
    }

    fn later(&mut self, i: usize, input: Input) {
        let inc = self.incarnation(i);
        self.at(self.now, Ev::Input(i, inc, input));
    }

    fn worker_done(&mut self, i: usize, session: SessionId, output: WorkerOutput) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.workers.remove(&session);
        }
        self.later(i, Input::WorkerDone { session, output });
    }

    /// `Effect::ReservePrimes`: a set now, or a place in line (and a set starts being made).
    pub(super) fn reserve_primes(&mut self, i: usize, session: SessionId) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        if n.primes.reserve(session) {
            self.later(i, Input::PrimesReserved(session));
        }
        self.make_primes(i);
    }

    fn make_primes(&mut self, i: usize) {
        let inc = self.incarnation(i);
        let start = self
            .nodes
            .get_mut(i)
            .is_some_and(|n| n.primes.start_making());
        if start {
            let t = self.now + self.draw(self.sc.prime_set_ms);
            self.at(t, Ev::PrimeSet(i, inc));
        }
    }

    /// A set is stored: the keygens waiting longest hold one now.
    pub(super) fn prime_set_made(&mut self, i: usize, inc: u64) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        if n.incarnation != inc || n.manager.is_none() {
            return; // the node died while it made it
        }
        for session in n.primes.made() {
            self.later(i, Input::PrimesReserved(session));
        }
        self.make_primes(i);
    }

    /// `Effect::StartWorker`: a keygen reusing aux info runs its DKG at once, and so does a
    /// CGGMP24 signing or presignature (the real protocol, seconds of CPU); one generating
    /// aux info takes its reserved set, then runs after the drawn aux-info time.
    pub(super) fn start_worker(&mut self, i: usize, session: SessionId, task: WorkerTask) {
        let failed = |e: &str| WorkerOutput::failed(&task, ProtocolError::Local(e.into()));
        let output = match &task {
            WorkerTask::Aux { .. } => failed("no aux-info generation for a resharing here"),
            WorkerTask::Keygen { reuse: Some(_), .. }
            | WorkerTask::Sign { .. }
            | WorkerTask::Presign { .. } => return self.run_inline(i, session, task, Vec::new()),
            WorkerTask::Keygen { reuse: None, .. } => {
                let taken = self
                    .nodes
                    .get_mut(i)
                    .is_some_and(|n| n.primes.take(&session));
                if taken {
                    self.obs.prime_set_taken(i, session);
                    let inc = self.incarnation(i);
                    if let Some(n) = self.nodes.get_mut(i) {
                        let buffered = Vec::new();
                        n.workers
                            .insert(session, Worker::Generating { task, buffered });
                    }
                    let t = self.now + self.draw(self.sc.aux_gen_ms);
                    return self.at(t, Ev::AuxReady(i, inc, session));
                }
                failed("the coordinator started aux info before this node held a safe-prime set")
            }
        };
        self.worker_done(i, session, output)
    }

    /// The modelled aux-info generation ended: the DKG starts with the stand-in aux info.
    pub(super) fn aux_ready(&mut self, i: usize, inc: u64, session: SessionId) {
        let Some(n) = self.nodes.get_mut(i).filter(|n| n.incarnation == inc) else {
            return;
        };
        let Some(Worker::Generating { task, buffered }) = n.workers.remove(&session) else {
            return; // stopped meanwhile
        };
        match ecdsa::with_fixture_aux(&n.id, &task) {
            Some(task) => self.run_inline(i, session, task, buffered),
            None => {
                let e = ProtocolError::Local("no stand-in aux info for this committee".into());
                self.worker_done(i, session, WorkerOutput::failed(&task, e))
            }
        }
    }

    fn run_inline(
        &mut self,
        i: usize,
        session: SessionId,
        task: WorkerTask,
        buffered: Vec<(NodeId, CggmpMsg)>,
    ) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        match InlineWorker::start(session, &n.id, &task, &mut n.rng) {
            Ok((worker, out)) => {
                let traffic = Traffic::new(n.id.clone(), self.now);
                for (to, _) in &out {
                    traffic.sent(to, self.now);
                }
                n.workers
                    .insert(session, Worker::Running(Box::new(worker), traffic));
                for (to, payload) in out {
                    self.send(i, session, to, payload);
                }
                for (from, msg) in buffered {
                    self.forward_to_worker(i, session, from, msg);
                }
            }
            Err(e) => self.worker_done(i, session, WorkerOutput::failed(&task, e)),
        }
    }

    /// `Effect::ToWorker`.
    pub(super) fn forward_to_worker(
        &mut self,
        i: usize,
        session: SessionId,
        from: NodeId,
        msg: CggmpMsg,
    ) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        let (out, done) = match n.workers.get_mut(&session) {
            Some(Worker::Generating { buffered, .. }) => {
                buffered.push((from, msg));
                return;
            }
            Some(Worker::Running(w, traffic)) => {
                traffic.received(&from, self.now);
                let (out, done) = w.handle(&from, msg);
                for (to, _) in &out {
                    traffic.sent(to, self.now);
                }
                (out, done)
            }
            None => return,
        };
        for (to, payload) in out {
            self.send(i, session, to, payload);
        }
        if let Some(output) = done {
            self.worker_done(i, session, output);
        }
    }

    /// Workers quiet for the CGGMP24 silence time name the parties they wait for, as mpcd's
    /// runtime does on its tick.
    pub(super) fn report_quiet_workers(&mut self, i: usize) {
        let Some(n) = self.nodes.get(i) else {
            return;
        };
        let since = self.now.checked_sub(self.sc.cggmp_silence_ms);
        let quiet: Vec<(SessionId, Vec<NodeId>)> = n
            .workers
            .iter()
            .filter_map(|(s, w)| match w {
                Worker::Running(_, traffic) => Some((*s, traffic.behind(since))),
                Worker::Generating { .. } => None,
            })
            .filter(|(_, behind)| !behind.is_empty())
            .collect();
        for (session, behind) in quiet {
            self.input(i, Input::WorkerQuiet { session, behind });
        }
    }

    /// The client sends every CGGMP24 keygen that ended ERROR again.
    pub(super) fn retry_ecdsa(&mut self) {
        let failed: Vec<TxMsg> = self
            .chain
            .state
            .keys()
            .values()
            .filter(|k| k.scheme == Scheme::Cggmp24Secp256k1 && k.status == KeyStatus::Error)
            .map(|k| TxMsg::KeyGen {
                key_id: k.key_id.clone(),
                scheme: k.scheme,
                threshold: k.threshold,
                parties: k.parties.clone(),
            })
            .collect();
        for tx in failed {
            self.handle(Ev::Client(tx));
        }
    }
}
