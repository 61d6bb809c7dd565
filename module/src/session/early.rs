//! Messages of sessions not started here yet (the sender's Commit may run ahead of ours, or
//! the job waits for the store): kept until the session starts, within bounds in all and per
//! sender, in count and in bytes, and dropped after the session timeout.

use rand::{CryptoRng, RngCore};
use seqmpc_proto::{NodeId, SessionId};
use tracing::warn;

use super::{Effect, Manager, MetricEvent, Millis, Msg};

impl Manager {
    /// Keeps `m` unless the buffer, or its sender's share of it, is full.
    pub(super) fn buffer_early(&mut self, now: Millis, m: Msg, fx: &mut Vec<Effect>) {
        let bytes = m.buffered_bytes();
        let total = self.early_total.add(bytes);
        if total.count > self.cfg.max_early_messages || total.bytes > self.cfg.max_early_bytes {
            warn!(from = %m.from, bytes, "early-message buffer full; message dropped");
            fx.push(Effect::Metric(MetricEvent::Dropped));
            return;
        }
        let mine = self
            .early_by_sender
            .get(&m.from)
            .copied()
            .unwrap_or_default()
            .add(bytes);
        if mine.count > self.cfg.max_early_per_sender
            || mine.bytes > self.cfg.max_early_bytes_per_sender
        {
            warn!(from = %m.from, bytes, "the sender's share of the early-message buffer is full; message dropped");
            fx.push(Effect::Metric(MetricEvent::Dropped));
            return;
        }
        self.early_by_sender.insert(m.from.clone(), mine);
        self.early_total = total;
        self.early.entry(m.session).or_default().push((m, now));
    }

    /// Messages buffered for `session` (they go to it once it starts).
    pub(super) fn take_early(&mut self, session: &SessionId) -> Vec<Msg> {
        let msgs = self.early.remove(session).unwrap_or_default();
        for (m, _) in &msgs {
            self.unbuffer(&m.from, m.buffered_bytes());
        }
        msgs.into_iter().map(|(m, _)| m).collect()
    }

    /// Feeds the messages that arrived before `session` started.
    pub(super) fn replay_early<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        for m in self.take_early(&session) {
            self.on_msg(now, m, rng, fx);
        }
    }

    /// Drops the early messages older than the session timeout.
    pub(super) fn expire_early(&mut self, now: Millis) {
        let timeout = self.cfg.session_timeout_ms;
        let mut dropped: Vec<(NodeId, usize)> = Vec::new();
        self.early.retain(|_, msgs| {
            msgs.retain(|(m, t)| {
                let keep = now.saturating_sub(*t) < timeout;
                if !keep {
                    dropped.push((m.from.clone(), m.buffered_bytes()));
                }
                keep
            });
            !msgs.is_empty()
        });
        for (from, bytes) in &dropped {
            self.unbuffer(from, *bytes);
        }
    }

    /// One early message of `from`, of `bytes`, left the buffer.
    fn unbuffer(&mut self, from: &NodeId, bytes: usize) {
        self.early_total = self.early_total.sub(bytes);
        if let Some(n) = self.early_by_sender.get_mut(from) {
            *n = n.sub(bytes);
            if n.count == 0 {
                self.early_by_sender.remove(from);
            }
        }
    }
}
