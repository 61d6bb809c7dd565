//! What a CGGMP24 keygen adds to the handshake: safe-prime sets and aux-info reuse.
//!
//! Aux info (Paillier keys and their proofs) is the costly part of a CGGMP24 keygen: one
//! safe-prime set per party (minutes of CPU to make) and seconds to tens of seconds to run.
//! So:
//! - **Reuse.** In KeyGenReady each party offers the fingerprint of the aux info it holds for
//!   the committee (`StoreOp::FindAux`: the runtime's configured one, or the one inside a READY
//!   share of that committee). The coordinator's KeyGenStart says to reuse it only if every
//!   party offered the same; the DKG alone then takes milliseconds.
//! - **Reservation.** Otherwise aux info is generated from a safe-prime set per party. At the
//!   job every party reserves one in the chain's order ([`Effect::ReservePrimes`]) or waits in
//!   line; KeyGenReady says whether it holds one, and a party answers again once it does
//!   ([`Input::PrimesReserved`](super::super::Input::PrimesReserved)). The coordinator starts
//!   only once every party holds one ([`decide_start`]): a keygen that cannot run consumes no
//!   set, so retried keygens never burn the committee's sets (issue 15). Until it starts, the
//!   keygen has no local timeout: the chain's deadline ends it.
//! - **Deadline.** Nor does it start aux info that would outlast the chain's deadline (at the
//!   block interval the jobs show, `Config::aux_gen_ms` before it): the sets would be spent on
//!   a keygen the chain then ends ERROR. It waits for the deadline instead, and the client's
//!   retry finds the sets in place (found by the simulator, `ecdsa-cold-start` seed 6).
//! - The DKG and aux info run on a runtime worker ([`WorkerTask::Keygen`]); the session hands
//!   it the messages ([`Effect::ToWorker`]) and stores its share once it ends.

use std::collections::{BTreeMap, BTreeSet};

use seqmpc_proto::tx::KeyGenOk;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use tracing::{debug, info, warn};

use super::{KeygenMsg, KeygenState, ReadyAnswer};
use crate::error::ProtocolError;
use crate::protocol::cggmp::CggmpMsg;
use crate::session::codec::encode_tagged;
use crate::session::worker::{AuxOffer, WorkerOutput, WorkerTask};
use crate::session::{Effect, Manager, MetricEvent, Millis, StoreReply};

/// The CGGMP24 part of a keygen, at a party and at its coordinator.
#[derive(Debug, Default)]
pub(crate) struct CggmpKeygen {
    /// This node holds a safe-prime set reserved for the keygen.
    holds_primes: bool,
    /// The aux info this node offered to reuse.
    offer: Option<AuxOffer>,
    /// When the worker started: the local timeout counts from there.
    pub(super) running_since: Option<Millis>,
    /// Coordinator: the aux-info fingerprint each party offered (its first answer's).
    aux_offered: BTreeMap<NodeId, Vec<u8>>,
    /// Coordinator: the parties that said they hold a set.
    primes_ready: BTreeSet<NodeId>,
    /// Coordinator: KeyGenStart or SessionAbort sent.
    decided: bool,
    /// Coordinator: the parties every other waits for (a status view).
    pub(super) waiting_for_primes: Vec<NodeId>,
    /// Coordinator: every party held a set too close to the chain's deadline.
    pub(super) too_late: bool,
}

impl CggmpKeygen {
    /// A fresh party's KeyGenReady.
    pub(super) fn ready(&self) -> wire::KeyGenReady {
        wire::KeyGenReady {
            aux_fingerprint: self
                .offer
                .as_ref()
                .map(|o| o.fingerprint.to_vec())
                .unwrap_or_default(),
            has_prime_set: self.holds_primes,
            ..Default::default()
        }
    }
}

/// What the coordinator of a CGGMP24 keygen does with its committee's answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StartDecision {
    /// Abort the keygen (a party refused, or the parties disagree about an existing key).
    Abort(String),
    /// Start the DKG; aux info is reused when every party offered the same.
    Start { reuse_aux: bool },
    /// Wait: aux info must be generated and these parties hold no safe-prime set yet.
    WaitForPrimes(Vec<NodeId>),
}

/// The coordinator's decision once every party of `parties` answered (`None` before): abort
/// on a refusal, start when aux info can be reused, when every party reports the key READY,
/// or when every party holds a safe-prime set; else wait for the parties without one.
pub(crate) fn decide_start(
    parties: &[NodeId],
    answers: &BTreeMap<NodeId, ReadyAnswer>,
    aux_offered: &BTreeMap<NodeId, Vec<u8>>,
    primes_ready: &BTreeSet<NodeId>,
) -> Option<StartDecision> {
    if parties.iter().any(|p| !answers.contains_key(p)) {
        return None;
    }
    if let Some(reason) = super::why_not_start(answers, parties.len()) {
        return Some(StartDecision::Abort(reason));
    }
    let fps: Vec<&Vec<u8>> = parties.iter().filter_map(|p| aux_offered.get(p)).collect();
    let reuse_aux = fps.len() == parties.len()
        && fps.first().is_some_and(|f| !f.is_empty())
        && fps.windows(2).all(|w| matches!(w, [a, b] if a == b));
    let existing = answers
        .values()
        .all(|a| matches!(a, ReadyAnswer::Existing(_)));
    if reuse_aux || existing {
        return Some(StartDecision::Start { reuse_aux });
    }
    let missing: Vec<NodeId> = parties
        .iter()
        .filter(|p| !primes_ready.contains(*p))
        .cloned()
        .collect();
    Some(if missing.is_empty() {
        StartDecision::Start { reuse_aux: false }
    } else {
        StartDecision::WaitForPrimes(missing)
    })
}

impl Manager {
    /// The aux info this node holds for the committee was looked up: answer Ready with it.
    pub(in crate::session) fn keygen_aux_found(
        &mut self,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(c) = self.keygen_mut(&session).and_then(|k| k.cggmp.as_mut()) else {
            return;
        };
        c.offer = match reply {
            Ok(StoreReply::Aux(offer)) => offer,
            Ok(other) => {
                warn!(%session, answer = ?other, "unexpected store answer for aux info; offering none");
                None
            }
            Err(e) => {
                warn!(%session, error = %e, "cannot read reusable aux info; offering none");
                None
            }
        };
        self.keygen_answered(session, ReadyAnswer::Fresh, fx);
    }

    /// A safe-prime set is reserved for `session` here now. A keygen that already answered
    /// its coordinator answers again, now holding a set.
    pub(in crate::session) fn keygen_primes_reserved(
        &mut self,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        let Some(c) = k.cggmp.as_mut() else {
            return;
        };
        if c.holds_primes {
            return;
        }
        c.holds_primes = true;
        info!(key_id = %k.key_id, %session, "a safe-prime set is reserved for this keygen");
        // Not answered yet: the answer will say so. Reporting an existing key: nothing to add.
        if let KeygenState::AwaitStart { existing: None, .. } = k.state {
            let ready = c.ready();
            Self::send(fx, session, &k.coordinator, Payload::KeygenReady(ready));
        }
    }

    /// Phase 2 at the coordinator: once every party answered, start, abort, or wait for the
    /// parties that hold no safe-prime set yet (they answer again once they hold one).
    pub(super) fn cggmp_on_ready(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        r: wire::KeyGenReady,
        fx: &mut Vec<Effect>,
    ) {
        let (blocks, aux_gen_ms) = (self.blocks, self.cfg.aux_gen_ms);
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        let (Some(answers), Some(c)) = (k.answers.as_mut(), k.cggmp.as_mut()) else {
            warn!(%session, %from, "KeyGenReady at a non-coordinator dropped");
            return;
        };
        if c.decided {
            debug!(%session, %from, "KeyGenReady after the start or abort dropped");
            return;
        }
        if r.has_prime_set {
            c.primes_ready.insert(from.clone());
        }
        c.aux_offered
            .entry(from.clone())
            .or_insert_with(|| r.aux_fingerprint.clone());
        answers.entry(from).or_insert(ReadyAnswer::from_wire(r));
        let payload = match decide_start(&k.parties, answers, &c.aux_offered, &c.primes_ready) {
            None => return,
            Some(StartDecision::WaitForPrimes(missing)) => {
                if missing != c.waiting_for_primes {
                    let names: Vec<&str> = missing.iter().map(NodeId::as_str).collect();
                    info!(key_id = %k.key_id, %session, waiting_for = %names.join(","),
                        "CGGMP24 keygen waits for safe primes before it starts");
                    c.waiting_for_primes = missing;
                }
                return;
            }
            Some(StartDecision::Abort(reason)) => Payload::Abort(wire::SessionAbort { reason }),
            Some(StartDecision::Start { reuse_aux: false })
                if blocks
                    .time_of(k.deadline_height)
                    .is_some_and(|deadline| now.saturating_add(aux_gen_ms) > deadline) =>
            {
                // Aux info would outlast the chain's deadline, and the sets it consumes would
                // be lost with the keygen: it waits for the deadline instead, and a retry
                // finds the sets still there.
                if !c.too_late {
                    info!(key_id = %k.key_id, %session, "CGGMP24 keygen too close to its chain deadline to generate aux info: not started");
                    c.too_late = true;
                    c.waiting_for_primes.clear();
                }
                return;
            }
            Some(StartDecision::Start { reuse_aux }) => {
                Payload::KeygenStart(wire::KeyGenStart { reuse_aux })
            }
        };
        c.decided = true;
        c.waiting_for_primes.clear();
        for p in &k.parties {
            Self::send(fx, session, p, payload.clone());
        }
    }

    /// KeyGenStart of a CGGMP24 keygen: the DKG plus aux info (reused when every party offered
    /// the same, else generated from the reserved prime set) on a worker.
    pub(super) fn start_cggmp_keygen(
        &mut self,
        now: Millis,
        session: SessionId,
        reuse_aux: bool,
        buffered: Vec<(NodeId, KeygenMsg)>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        let Some(c) = k.cggmp.as_mut() else {
            return;
        };
        let Ok(threshold) = u16::try_from(k.threshold) else {
            let e = ProtocolError::Local("threshold does not fit cggmp24".into());
            return self.fail_keygen(now, session, e, fx);
        };
        let reuse = match (reuse_aux, c.offer.take()) {
            (true, Some(offer)) => Some(offer),
            (true, None) => {
                let e = ProtocolError::Local(
                    "the coordinator asked to reuse aux info this node did not offer".into(),
                );
                return self.fail_keygen(now, session, e, fx);
            }
            (false, _) if !c.holds_primes => {
                let e = ProtocolError::Local(
                    "the coordinator started aux info before this node held a safe-prime set \
                     for it"
                        .into(),
                );
                return self.fail_keygen(now, session, e, fx);
            }
            (false, _) => None,
        };
        let aux_generated = reuse.is_none();
        c.running_since = Some(now);
        k.state = KeygenState::Working { aux_generated };
        info!(key_id = %k.key_id, %session, aux_reused = !aux_generated, "CGGMP24 keygen starts on a worker");
        fx.push(Effect::StartWorker {
            session,
            task: WorkerTask::Keygen {
                parties: k.parties.clone(),
                threshold,
                reuse,
            },
        });
        for (from, msg) in buffered {
            match msg {
                KeygenMsg::Cggmp(msg) => fx.push(Effect::ToWorker { session, from, msg }),
                KeygenMsg::Frost(_) => {
                    debug!(%session, %from, "FROST message in a CGGMP24 keygen dropped")
                }
            }
        }
    }

    /// A CGGMP24 message of a keygen: to its worker, or kept until the DKG starts.
    pub(super) fn keygen_cggmp_msg(
        &mut self,
        session: SessionId,
        from: NodeId,
        bytes: &[u8],
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if k.scheme != Scheme::Cggmp24Secp256k1 {
            warn!(%session, %from, "CGGMP24 message in a FROST keygen dropped");
            fx.push(Effect::Metric(MetricEvent::Dropped));
            return;
        }
        let msg = match CggmpMsg::from_bytes(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                warn!(%session, %from, error = %e, "malformed CGGMP24 message dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
                return;
            }
        };
        if let KeygenState::Working { .. } = k.state {
            fx.push(Effect::ToWorker { session, from, msg });
        } else if !k.state.buffer(from.clone(), KeygenMsg::Cggmp(msg)) {
            debug!(%session, %from, "CGGMP24 keygen message after its DKG ended dropped");
        }
    }

    /// The worker of a CGGMP24 keygen ended: store the share READY, or fail.
    pub(in crate::session) fn keygen_worker_done(
        &mut self,
        now: Millis,
        session: SessionId,
        output: WorkerOutput,
        fx: &mut Vec<Effect>,
    ) {
        let Some(KeygenState::Working { .. }) = self.keygen_mut(&session).map(|k| &k.state) else {
            debug!(%session, "keygen worker output for no running DKG ignored");
            return;
        };
        let out = match output {
            WorkerOutput::Keygen(Ok(out)) => out,
            WorkerOutput::Keygen(Err(e)) => return self.fail_keygen(now, session, e, fx),
            other @ (WorkerOutput::Aux(_) | WorkerOutput::Sign(_) | WorkerOutput::Presign(_)) => {
                let e = ProtocolError::Bug(format!("a keygen worker ended with {other:?}"));
                return self.fail_keygen(now, session, e, fx);
            }
        };
        let share = match encode_tagged(Scheme::Cggmp24Secp256k1, &out.share) {
            Ok(share) => share,
            Err(e) => return self.fail_keygen(now, session, e, fx),
        };
        let ok = KeyGenOk {
            public_key: out.public_key.to_vec(),
            transcript_hash: out.transcript_hash,
            public_key_package: Vec::new(),
        };
        self.store_ready(session, ok, share, fx);
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("node{i}")).unwrap())
            .collect()
    }

    /// Issue 15: one party without a safe-prime set makes the keygen wait (nobody takes a
    /// set), and the answer it sends once it holds one starts it.
    #[test]
    fn decide_start__should_wait_for_a_party_without_a_prime_set_then_start() {
        let parties = nodes(3);
        let fresh: BTreeMap<NodeId, ReadyAnswer> = parties
            .iter()
            .map(|p| (p.clone(), ReadyAnswer::Fresh))
            .collect();
        let no_aux: BTreeMap<NodeId, Vec<u8>> =
            parties.iter().map(|p| (p.clone(), Vec::new())).collect();
        let mut ready: BTreeSet<NodeId> = parties[..2].iter().cloned().collect();
        let mut partial = fresh.clone();
        partial.remove(&parties[1]);
        assert_eq!(decide_start(&parties, &partial, &no_aux, &ready), None);
        assert_eq!(
            decide_start(&parties, &fresh, &no_aux, &ready),
            Some(StartDecision::WaitForPrimes(vec![parties[2].clone()]))
        );
        ready.insert(parties[2].clone());
        assert_eq!(
            decide_start(&parties, &fresh, &no_aux, &ready),
            Some(StartDecision::Start { reuse_aux: false })
        );
        // Reused aux info needs no set at all.
        let same_aux: BTreeMap<NodeId, Vec<u8>> =
            parties.iter().map(|p| (p.clone(), vec![7; 32])).collect();
        assert_eq!(
            decide_start(&parties, &fresh, &same_aux, &BTreeSet::new()),
            Some(StartDecision::Start { reuse_aux: true })
        );
        // Aux info offered by some parties only: generated, so sets are needed.
        let mut mixed = same_aux.clone();
        mixed.insert(parties[0].clone(), Vec::new());
        assert!(matches!(
            decide_start(&parties, &fresh, &mixed, &BTreeSet::new()),
            Some(StartDecision::WaitForPrimes(m)) if m.len() == 3
        ));
        // A refusal aborts at once, sets or not.
        let mut refused = fresh.clone();
        refused.insert(parties[1].clone(), ReadyAnswer::Refused("pending".into()));
        assert!(matches!(
            decide_start(&parties, &refused, &no_aux, &BTreeSet::new()),
            Some(StartDecision::Abort(r)) if r.contains("pending")
        ));
        // Every party holds the key READY: it is reported, no set needed.
        let existing: BTreeMap<NodeId, ReadyAnswer> = parties
            .iter()
            .map(|p| (p.clone(), ReadyAnswer::Existing(vec![2; 33])))
            .collect();
        assert_eq!(
            decide_start(&parties, &existing, &no_aux, &BTreeSet::new()),
            Some(StartDecision::Start { reuse_aux: false })
        );
    }
}
