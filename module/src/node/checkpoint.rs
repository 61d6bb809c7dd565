//! The checkpoint port: named points of a session's life (`crate::session::Effect::Checkpoint`,
//! and the runtime's own: keygen, resharing, presignature and CGGMP24 signing phases). The
//! production node passes them by; a test build may stop the process at one
//! (`crate::fault::CrashAt`, the `crash-at` fault), the end-to-end tests' `kill -9` at an
//! exact phase.

/// Told each named point a session reaches.
pub(crate) trait Checkpoints: Send + Sync {
    /// `point` was reached.
    fn reached(&self, point: &'static str);
}

/// Production: nothing happens at a checkpoint.
pub(crate) struct PassBy;

impl Checkpoints for PassBy {
    fn reached(&self, _: &'static str) {}
}
