//! What a CGGMP24 worker sent to and got from each other party, and when it last did either.
//!
//! Every party of a CGGMP24 signing sends the same messages to every other party in every
//! round, and a party sends round r+1 only once it has every round-r message. So when a
//! signing has gone quiet (nothing sent or received for a while), a party from which this
//! node got fewer messages than it sent that party is the one everybody waits for: it
//! stopped (died, or went silent) after its first message. One that is merely ahead or that
//! this node itself is still computing for is never behind: this node then got at least as
//! many messages from each party as it sent it.
//!
//! With three signers or more, a party can also be behind because it waits for another one
//! that stopped, or because a malicious one withheld a round from it alone; it then names
//! that one itself, and the chain weighs the reports (`Manager::ecdsa_quiet`, and the
//! chain's pair elimination of signers that name each other).
//!
//! The time is the caller's: `Instant` on mpcd's worker threads, simulated milliseconds in the
//! simulator.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use seqmpc_proto::NodeId;

/// Message counts per other party, and the last activity (shared by a worker thread and its
/// handle).
#[derive(Debug)]
pub struct Traffic<T> {
    me: NodeId,
    inner: Mutex<Counts<T>>,
}

#[derive(Debug)]
struct Counts<T> {
    sent: BTreeMap<NodeId, u64>,
    received: BTreeMap<NodeId, u64>,
    last: T,
}

impl<T: Copy + Ord> Traffic<T> {
    /// No traffic yet for party `me`; the quiet time counts from `now`.
    pub fn new(me: NodeId, now: T) -> Self {
        Traffic {
            me,
            inner: Mutex::new(Counts {
                sent: BTreeMap::new(),
                received: BTreeMap::new(),
                last: now,
            }),
        }
    }

    /// A message went to `to` at `now`.
    pub fn sent(&self, to: &NodeId, now: T) {
        self.count(to, now, |c| &mut c.sent);
    }

    /// A message from `from` reached the worker at `now`.
    pub fn received(&self, from: &NodeId, now: T) {
        self.count(from, now, |c| &mut c.received);
    }

    fn count(
        &self,
        peer: &NodeId,
        now: T,
        which: impl FnOnce(&mut Counts<T>) -> &mut BTreeMap<NodeId, u64>,
    ) {
        if *peer == self.me {
            return;
        }
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        c.last = c.last.max(now);
        let n = which(&mut c).entry(peer.clone()).or_default();
        *n = n.saturating_add(1);
    }

    /// The parties this node waits for, once nothing was sent or received since `quiet_since`
    /// (now minus the quiet time; `None`: not that long ago yet): those it got fewer messages
    /// from than it sent them. Empty while traffic flows.
    pub fn behind(&self, quiet_since: Option<T>) -> Vec<NodeId> {
        let c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if quiet_since.is_none_or(|t| c.last >= t) {
            return Vec::new();
        }
        c.sent
            .iter()
            .filter(|(peer, sent)| c.received.get(*peer).copied().unwrap_or(0) < **sent)
            .map(|(peer, _)| peer.clone())
            .collect()
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn nid(i: u8) -> NodeId {
        NodeId::new(format!("node{i}")).unwrap()
    }

    const QUIET: Duration = Duration::from_secs(10);

    /// Two rounds of a 3-party protocol seen by node0: one message to and from each party a
    /// round.
    fn round(t: &Traffic<Instant>, at: Instant, from: &[u8]) {
        for p in [1, 2] {
            t.sent(&nid(p), at);
        }
        for p in from {
            t.received(&nid(*p), at);
        }
    }

    #[test]
    fn behind__should_name_a_party_that_stopped_after_its_first_round_once_quiet() {
        let t0 = Instant::now();
        let t = Traffic::new(nid(0), t0);
        round(&t, t0, &[1, 2]);
        // node2 stops: its round-2 message never comes.
        round(&t, t0 + Duration::from_secs(1), &[1]);
        let later = t0 + Duration::from_secs(1) + QUIET;
        assert!(
            t.behind(later.checked_sub(QUIET)).is_empty(),
            "not quiet long enough"
        );
        let after = later + Duration::from_millis(1);
        assert_eq!(t.behind(after.checked_sub(QUIET)), [nid(2)]);
        assert!(t.behind(None).is_empty());
    }

    #[test]
    fn behind__should_name_nobody_while_this_node_computes_or_a_party_is_ahead() {
        let t0 = Instant::now();
        let t = Traffic::new(nid(0), t0);
        round(&t, t0, &[1, 2]);
        // node0 got every round-1 message and is still computing its round 2, and node1 is a
        // round ahead; self-sends are not counted.
        t.received(&nid(1), t0);
        t.sent(&nid(0), t0);
        t.received(&nid(0), t0);
        assert!(t.behind((t0 + 2 * QUIET).checked_sub(QUIET)).is_empty());
    }

    #[test]
    fn behind__should_wait_for_quiet_from_the_start_of_a_worker_that_sent_nothing() {
        let t0 = Instant::now();
        let t = Traffic::new(nid(0), t0);
        assert!(
            t.behind((t0 + 2 * QUIET).checked_sub(QUIET)).is_empty(),
            "sent nothing: waits for nobody"
        );
    }
}
