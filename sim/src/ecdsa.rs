//! The CGGMP24 part of a simulated node's runtime: its safe-prime pool and its keygen workers.
//!
//! mpcd makes safe-prime sets in the background (minutes of CPU each) and keeps them in its
//! store; a CGGMP24 keygen that must generate aux info reserves one at its job
//! ([`seqmpc_module::session::Effect::ReservePrimes`]) and takes it out of the store when it
//! starts. Here a set takes a drawn simulated time to make, one at a time per node, and only
//! while keygens wait for one (mpcd's pool with target 0); the stored count is durable, the
//! reservations are not (a crash loses them, as mpcd's).
//!
//! The DKG is the real cggmp24 one, run inline ([`InlineWorker`]). Aux-info generation (a
//! safe-prime set and seconds of CPU per party) is not run: its cost is a drawn simulated time,
//! and the aux info of the test fixtures' committee (real aux info from an earlier run,
//! `module/tests/fixtures/cggmp24-test-fixtures.json`) stands in for its output. So CGGMP24
//! keygens run only on that committee (node0-node3), and their aux-info messages are not on
//! the simulated network: message faults reach the handshake and the DKG only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::OnceLock;

use seqmpc_module::node::cggmp::CggmpConfig;
use seqmpc_module::protocol::cggmp::{AuxShare, CggmpMsg};
use seqmpc_module::session::traffic::Traffic;
use seqmpc_module::session::{AuxOffer, InlineWorker, Millis, WorkerTask};
use seqmpc_proto::{NodeId, SessionId};

/// A node's safe-prime sets.
#[derive(Debug, Default)]
pub(crate) struct Primes {
    /// Sets in the store (durable).
    stored: usize,
    /// Keygens holding one of them.
    held: BTreeSet<SessionId>,
    /// Keygens waiting for one, in the order they asked.
    waiting: VecDeque<SessionId>,
    /// A set is being made.
    making: bool,
}

impl Primes {
    /// A pool with `stored` sets.
    pub(crate) fn new(stored: usize) -> Primes {
        Primes {
            stored,
            ..Primes::default()
        }
    }

    fn free(&self) -> usize {
        self.stored.saturating_sub(self.held.len())
    }

    /// Reserves a set for `session`: true if it holds one now, else it waits in line.
    pub(crate) fn reserve(&mut self, session: SessionId) -> bool {
        if self.held.contains(&session) {
            return true;
        }
        if self.free() > 0 && self.waiting.is_empty() {
            self.held.insert(session);
            return true;
        }
        if !self.waiting.contains(&session) {
            self.waiting.push_back(session);
        }
        false
    }

    /// Whether to start making a set now: keygens wait for more than are free.
    pub(crate) fn start_making(&mut self) -> bool {
        let wanted = !self.making && self.waiting.len() > self.free();
        if wanted {
            self.making = true;
        }
        wanted
    }

    /// A set is stored: the keygens waiting longest get the free ones.
    pub(crate) fn made(&mut self) -> Vec<SessionId> {
        self.making = false;
        self.stored = self.stored.saturating_add(1);
        let mut granted = Vec::new();
        while self.free() > 0 {
            let Some(session) = self.waiting.pop_front() else {
                break;
            };
            self.held.insert(session);
            granted.push(session);
        }
        granted
    }

    /// The keygen ended or needs no set: its reservation, or its place in line, goes.
    pub(crate) fn release(&mut self, session: &SessionId) {
        self.held.remove(session);
        self.waiting.retain(|s| s != session);
    }

    /// Takes the set `session` holds out of the store (for its aux-info run).
    pub(crate) fn take(&mut self, session: &SessionId) -> bool {
        if self.held.remove(session) && self.stored > 0 {
            self.stored -= 1;
            true
        } else {
            false
        }
    }

    /// The node crashed: what lived in memory is gone, the stored sets stay.
    pub(crate) fn crash(&mut self) {
        self.held.clear();
        self.waiting.clear();
        self.making = false;
    }
}

/// A CGGMP24 worker of a simulated node.
pub(crate) enum Worker {
    /// Aux-info generation, until its drawn time is up; the DKG's messages wait.
    Generating {
        /// The keygen.
        task: WorkerTask,
        /// Messages that arrived meanwhile.
        buffered: Vec<(NodeId, CggmpMsg)>,
    },
    /// The protocol (a keygen's DKG, a signing, a presignature), with its message counts per
    /// party: mpcd's worker keeps the same, and a quiet signing names the parties it waits
    /// for (`Input::WorkerQuiet`).
    Running(Box<InlineWorker>, Traffic<Millis>),
}

/// The fixtures' aux info of `me` for its committee, as the runtime's configured aux info.
pub(crate) fn fixture_aux(me: &NodeId) -> Option<(Vec<NodeId>, AuxOffer)> {
    static AUX: OnceLock<BTreeMap<NodeId, (Vec<NodeId>, AuxOffer)>> = OnceLock::new();
    AUX.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../module/tests/fixtures/cggmp24-test-fixtures.json");
        (0..4)
            .filter_map(|i| {
                let me = NodeId::new(format!("node{i}")).ok()?;
                let aux = CggmpConfig::from_fixture_file(&path, &me).ok()?.aux?;
                let offer = AuxOffer {
                    fingerprint: AuxShare::from_bytes(&aux.share).ok()?.fingerprint().ok()?,
                    share: aux.share,
                };
                Some((me, (aux.parties, offer)))
            })
            .collect()
    })
    .get(me)
    .cloned()
}

/// The keygen `task` with the fixtures' aux info of `me` in place of generated aux info, or
/// `None` when the fixtures hold none for its committee.
pub(crate) fn with_fixture_aux(me: &NodeId, task: &WorkerTask) -> Option<WorkerTask> {
    let WorkerTask::Keygen {
        parties, threshold, ..
    } = task
    else {
        return None;
    };
    let (committee, offer) = fixture_aux(me)?;
    (committee == *parties).then(|| WorkerTask::Keygen {
        parties: parties.clone(),
        threshold: *threshold,
        reuse: Some(offer),
    })
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn primes__should_grant_sets_in_order_and_keep_what_an_ended_keygen_held() {
        let (a, b) = (SessionId([1; 32]), SessionId([2; 32]));
        let mut p = Primes::new(0);
        assert!(!p.reserve(a) && !p.reserve(b));
        assert!(p.start_making() && !p.start_making());
        assert_eq!(p.made(), vec![a]);
        assert!(p.start_making());
        // `a` ends before it starts: its set goes to `b`, unconsumed.
        p.release(&a);
        assert_eq!(p.made(), vec![b]);
        assert!(p.take(&b) && !p.take(&b));
        assert_eq!((p.stored, p.free()), (1, 1));
        assert!(p.reserve(a));
        p.crash();
        assert!(!p.take(&a));
        assert_eq!(p.stored, 1);
    }

    #[test]
    fn fixture_aux__should_hold_one_committee_for_node0_to_node3() {
        let (parties, offer) = fixture_aux(&NodeId::new("node0").unwrap()).unwrap();
        assert_eq!(parties.len(), 4);
        for i in 1..4 {
            let (p, o) = fixture_aux(&NodeId::new(format!("node{i}")).unwrap()).unwrap();
            assert_eq!((p, o.fingerprint), (parties.clone(), offer.fingerprint));
        }
        assert!(fixture_aux(&NodeId::new("node4").unwrap()).is_none());
    }
}
