//! Byte budgets of the runtime's sessions (CGGMP24, resharing): what a peer may make this node
//! hold for the sessions it takes part in.
//!
//! Every message a party sends to one of these sessions is charged to that party, whether the
//! session buffers it (a keygen before its start, an aux-info offer round, a presignature
//! waiting for its plan) or hands it to a worker thread's queue. A session's charges are
//! released when it ends. Two limits hold at once: per sender within one session, so a peer
//! cannot blow up one session, and per sender over all live sessions, so a peer that floods
//! many sessions spends its own share only and never crowds out honest peers. Honest traffic
//! stays far below both: a whole CGGMP24 aux-info generation is a few MiB per party.

use std::collections::BTreeMap;

use seqmpc_proto::{NodeId, SessionId};

/// Most bytes one party may send to one session of the runtime.
pub(super) const MAX_SESSION_BYTES_PER_SENDER: usize = 64 << 20;
/// Most bytes one party may have charged over all live sessions of the runtime.
pub(super) const MAX_LIVE_BYTES_PER_SENDER: usize = 256 << 20;

/// Which limit a message would cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum OverBudget {
    /// The sender's bytes to this session.
    #[error("the sender's share of this session is used up")]
    Session,
    /// The sender's bytes over all live sessions.
    #[error("the sender's share over all live sessions is used up")]
    Sender,
}

/// The charges of live sessions (see the module docs).
#[derive(Debug)]
pub(super) struct InboundBudget {
    per_session: usize,
    per_sender: usize,
    by_session: BTreeMap<SessionId, BTreeMap<NodeId, usize>>,
    by_sender: BTreeMap<NodeId, usize>,
}

impl Default for InboundBudget {
    fn default() -> Self {
        Self::new(MAX_SESSION_BYTES_PER_SENDER, MAX_LIVE_BYTES_PER_SENDER)
    }
}

impl InboundBudget {
    /// Budgets of `per_session` bytes per sender and session and `per_sender` bytes per sender
    /// over all live sessions.
    pub(super) fn new(per_session: usize, per_sender: usize) -> Self {
        InboundBudget {
            per_session,
            per_sender,
            by_session: BTreeMap::new(),
            by_sender: BTreeMap::new(),
        }
    }

    /// Charges `bytes` from `from` to `session`, or refuses them (nothing charged).
    pub(super) fn charge(
        &mut self,
        session: SessionId,
        from: &NodeId,
        bytes: usize,
    ) -> Result<(), OverBudget> {
        let in_session = self
            .by_session
            .get(&session)
            .and_then(|m| m.get(from))
            .copied()
            .unwrap_or(0)
            .saturating_add(bytes);
        if in_session > self.per_session {
            return Err(OverBudget::Session);
        }
        let live = self
            .by_sender
            .get(from)
            .copied()
            .unwrap_or(0)
            .saturating_add(bytes);
        if live > self.per_sender {
            return Err(OverBudget::Sender);
        }
        self.by_session
            .entry(session)
            .or_default()
            .insert(from.clone(), in_session);
        self.by_sender.insert(from.clone(), live);
        Ok(())
    }

    /// `session` ended: its charges go back to their senders.
    pub(super) fn release(&mut self, session: &SessionId) {
        let Some(charges) = self.by_session.remove(session) else {
            return;
        };
        for (from, bytes) in charges {
            if let Some(live) = self.by_sender.get_mut(&from) {
                *live = live.saturating_sub(bytes);
                if *live == 0 {
                    self.by_sender.remove(&from);
                }
            }
        }
    }

    /// Releases every session `live` says is over (sessions that ended without
    /// [`InboundBudget::release`]).
    pub(super) fn release_unless(&mut self, live: impl Fn(&SessionId) -> bool) {
        let over: Vec<SessionId> = self
            .by_session
            .keys()
            .filter(|s| !live(s))
            .copied()
            .collect();
        for s in over {
            self.release(&s);
        }
    }

    /// Bytes charged to `from` over all live sessions.
    #[cfg(test)]
    pub(super) fn live_bytes(&self, from: &NodeId) -> usize {
        self.by_sender.get(from).copied().unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nid(i: u8) -> NodeId {
        NodeId::new(format!("node{i}")).unwrap()
    }

    fn sid(i: u8) -> SessionId {
        SessionId([i; 32])
    }

    #[test]
    fn charge__should_refuse_a_sender_over_its_session_cap_and_keep_others_going() {
        let mut b = InboundBudget::new(100, 1000);
        b.charge(sid(1), &nid(1), 60).unwrap();
        assert_eq!(b.charge(sid(1), &nid(1), 41), Err(OverBudget::Session));
        // Refused bytes are not charged: a smaller message still fits.
        b.charge(sid(1), &nid(1), 40).unwrap();
        // Another sender of the same session has its own cap.
        b.charge(sid(1), &nid(2), 100).unwrap();
        assert_eq!(b.live_bytes(&nid(1)), 100);
    }

    #[test]
    fn charge__should_stop_a_sender_flooding_many_sessions_at_its_share_only() {
        let mut b = InboundBudget::new(100, 250);
        for s in 1..=2 {
            b.charge(sid(s), &nid(1), 100).unwrap();
        }
        assert_eq!(b.charge(sid(3), &nid(1), 100), Err(OverBudget::Sender));
        // The flooder's share is its own: an honest peer still gets every byte of its cap.
        for s in 1..=2 {
            b.charge(sid(s), &nid(2), 100).unwrap();
        }
    }

    #[test]
    fn release__should_give_a_finished_sessions_bytes_back_to_their_senders() {
        let mut b = InboundBudget::new(100, 150);
        b.charge(sid(1), &nid(1), 100).unwrap();
        assert_eq!(b.charge(sid(2), &nid(1), 100), Err(OverBudget::Sender));
        b.release(&sid(1));
        assert_eq!(b.live_bytes(&nid(1)), 0);
        b.charge(sid(2), &nid(1), 100).unwrap();
        b.charge(sid(3), &nid(1), 50).unwrap();
        b.release_unless(|s| *s == sid(3));
        assert_eq!(b.live_bytes(&nid(1)), 50);
        // Releasing an unknown session changes nothing.
        b.release(&sid(9));
        assert_eq!(b.live_bytes(&nid(1)), 50);
    }
}
