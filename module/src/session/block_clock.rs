//! The chain's block interval as the session jobs show it: each carries the height that
//! emitted it and that block's time. The manager estimates when the chain will reach a
//! deadline height with it (a CGGMP24 keygen does not start aux-info generation that would
//! outlast its deadline, see `keygen::cggmp`).

use super::Millis;

/// The latest block seen and the interval since the one seen before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockClock {
    last: Option<(u64, Millis)>,
    interval_ms: Option<Millis>,
}

impl BlockClock {
    /// A job of the block at `height`, of time `time` (0: unknown, ignored).
    pub(crate) fn observe(&mut self, height: u64, time: Millis) {
        if time == 0 {
            return;
        }
        match self.last {
            // An older or the same block (a replayed or a second job of it): nothing new.
            Some((h, _)) if height <= h => {}
            Some((h, t)) => {
                if let (Some(dh), Some(dt)) = (height.checked_sub(h), time.checked_sub(t)) {
                    self.interval_ms = dt.checked_div(dh);
                }
                self.last = Some((height, time));
            }
            None => self.last = Some((height, time)),
        }
    }

    /// When the chain reaches `height` at the interval seen (`None` until two blocks were).
    pub(crate) fn time_of(&self, height: u64) -> Option<Millis> {
        let ((h, t), interval) = (self.last?, self.interval_ms?);
        let ahead = height.saturating_sub(h).saturating_mul(interval);
        Some(t.saturating_add(ahead))
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn time_of__should_extrapolate_the_interval_between_the_last_two_blocks_seen() {
        let mut c = BlockClock::default();
        c.observe(10, 1_000);
        assert_eq!(
            c.time_of(20),
            None,
            "one block says nothing of the interval"
        );
        c.observe(14, 1_400);
        c.observe(12, 5_000); // an older block (replayed): ignored
        c.observe(14, 9_000); // the same block again: ignored
        c.observe(15, 0); // unknown time: ignored
        assert_eq!(c.time_of(20), Some(2_000));
        c.observe(16, 1_800); // 200 ms blocks now
        assert_eq!(c.time_of(20), Some(2_600));
        assert_eq!(
            c.time_of(3),
            Some(1_800),
            "a past height: the last block's time"
        );
    }
}
