//! The clock port: the session manager's time (`crate::session` takes `now` as an input and
//! never reads a clock itself). Block times are on the same clock, Unix milliseconds, so the
//! admission policy can measure a replayed job's age and the keygen its chain deadline.
//! The runtime's own timers (worker deadlines, silence of CGGMP24 signers) are monotonic
//! `Instant`s; they never reach the manager.

use crate::session::Millis;

/// Where the session manager's `now` comes from.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}
