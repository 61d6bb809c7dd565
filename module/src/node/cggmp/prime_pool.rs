//! The pool of CGGMP24 safe-prime sets: generated in the background, stored sealed in the key
//! store, reserved by a keygen when its committed job arrives, and taken once each by an
//! aux-info run.
//!
//! A set is never wasted on a keygen that cannot run (issue 15: retried keygens burned every
//! node's set while one node had none, and the pool never held a set on every node at once).
//! A keygen *reserves* a set when its job arrives (jobs arrive in the chain's order on every
//! node, and sets go to waiting keygens in that order), says in its `KeyGenReady` whether it
//! holds one, and *takes* it only at `KeyGenStart`, which the coordinator sends once every
//! party holds one. A reservation is only a mark in memory: a keygen that ends without
//! starting leaves the set in the store for the next.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use seqmpc_proto::SessionId;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::error::ProtocolError;
use crate::protocol::cggmp::{Primes, SearchBatch};
use crate::store::{PrimeSetId, StoreHandle};

/// State of the prime pool.
enum PoolState {
    /// Configured primes, never consumed (test fixtures).
    Fixed(Arc<Zeroizing<Vec<u8>>>),
    /// Sets generated in the background and kept sealed in the key store.
    Stored(StoredPool),
}

/// A pool of prime sets kept in the key store.
struct StoredPool {
    store: StoreHandle,
    /// Unreserved sets to keep ready; background generation stops there (0: generate only
    /// for keygens that wait).
    target: usize,
    /// Sets in the store, as counted at start and kept up to date by this pool (the only
    /// writer of the store's prime sets).
    level: usize,
    /// Keygen sessions holding one stored set each (never more than `level`).
    held: BTreeSet<SessionId>,
    /// Keygen sessions waiting for a set, in the order their jobs arrived.
    waiting: VecDeque<SessionId>,
    /// Sets taken out of the store for aux-info runs since the node started.
    taken: u64,
    /// Sets generated and stored since the node started.
    generated: u64,
    /// A keygen here waits for other nodes' safe primes or runs aux info: a refill ahead of
    /// need waits, leaving them the CPU (a keygen waiting for a set here is served anyway).
    refill_paused: bool,
    /// A generation thread is running.
    generating: bool,
    /// Makes one serialized set ([`generate_primes`]; tests substitute a fast one).
    generate: Generate,
}

impl StoredPool {
    /// Stored sets no keygen holds.
    fn available(&self) -> usize {
        self.level.saturating_sub(self.held.len())
    }

    /// Whether another set is wanted: fewer unreserved sets than the target, or keygens
    /// waiting for more sets than are unreserved.
    fn wants_more(&self) -> bool {
        let available = self.available();
        available < self.target || self.waiting.len() > available
    }
}

/// Makes one serialized safe-prime set; the argument answers, before each batch of primes,
/// how to search them (more threads, at normal priority, while a keygen waits).
pub(crate) type Generate = Arc<
    dyn Fn(&dyn Fn() -> SearchBatch) -> Result<Zeroizing<Vec<u8>>, ProtocolError> + Send + Sync,
>;

/// A fresh safe-prime set ([`Primes::to_bytes`]): 28-300 s of one core.
fn generate_primes(plan: &dyn Fn() -> SearchBatch) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    Primes::generate_threaded(plan, super::run_in_background)?.to_bytes()
}

/// The next batch: all the cores at normal priority while a keygen waits for a set here
/// (issue 15: a committee that waits comes before the refill); else one thread at the lowest
/// priority, so a refill takes only CPU that signing and keygens leave idle.
fn search_batch(urgent: bool) -> SearchBatch {
    if urgent {
        SearchBatch {
            threads: urgent_threads(),
            background: false,
        }
    } else {
        SearchBatch {
            threads: 1,
            background: true,
        }
    }
}

/// How often a paused refill looks again.
const REFILL_PAUSE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Threads for urgent generation (a keygen waits): the cores this process may use, at most
/// the 4 primes of a set.
fn urgent_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// A pool of safe-prime sets for aux-info runs (generation takes 28-300 s of one core per
/// set on the target machine), persisted sealed in the key store (`KeyStore::put_prime_set`).
///
/// One background thread (`cggmp-primes`) generates one set at a time while fewer than the
/// target are stored unreserved, or while keygens wait for sets; a set counts once it is
/// stored. While a keygen waits, each set is made on all the node's cores (its 4 primes in
/// parallel) instead of one: a refill ahead of need stays on one core.
/// [`PrimePool::reserve`] marks a set for a keygen (or queues the keygen);
/// [`PrimePool::take`] takes the reserved set out of the store (erased durably before it is
/// used, so a set serves at most one aux-info run, even across a crash) and restarts
/// generation. Sets stored before a restart count after it ([`PrimePool::load`]).
#[derive(Clone)]
pub(crate) struct PrimePool(Arc<Mutex<PoolState>>);

impl PrimePool {
    /// A pool of `fixed` primes (test fixtures, never consumed), or else one that keeps up to
    /// `target` sets in `store`.
    pub(crate) fn new(
        fixed: Option<Arc<Zeroizing<Vec<u8>>>>,
        store: StoreHandle,
        target: usize,
    ) -> PrimePool {
        Self::with_generator(fixed, store, target, Arc::new(generate_primes))
    }

    /// [`PrimePool::new`] with another way to make a set (test builds: a stub).
    pub(crate) fn with_generator(
        fixed: Option<Arc<Zeroizing<Vec<u8>>>>,
        store: StoreHandle,
        target: usize,
        generate: Generate,
    ) -> PrimePool {
        PrimePool(Arc::new(Mutex::new(match fixed {
            Some(p) => PoolState::Fixed(p),
            None => PoolState::Stored(StoredPool {
                store,
                target,
                level: 0,
                held: BTreeSet::new(),
                waiting: VecDeque::new(),
                taken: 0,
                generated: 0,
                refill_paused: false,
                generating: false,
                generate,
            }),
        })))
    }

    /// The store behind the pool, if any (clone: never held across a lock).
    fn store(&self) -> Option<StoreHandle> {
        match &*self.0.lock().ok()? {
            PoolState::Fixed(_) => None,
            PoolState::Stored(p) => Some(p.store.clone()),
        }
    }

    /// For the generation thread: how to make the next set, or `None` once no more is
    /// wanted, which also marks generation stopped. One lock for both, so that a take racing
    /// with the end of generation cannot find `generating` still set and leave the pool short.
    fn next_generation(&self) -> Option<Generate> {
        let mut st = self.0.lock().ok()?;
        let PoolState::Stored(p) = &mut *st else {
            return None;
        };
        if p.wants_more() {
            Some(p.generate.clone())
        } else {
            p.generating = false;
            None
        }
    }

    /// Whether a generation thread is running.
    #[cfg(test)]
    fn generating(&self) -> bool {
        matches!(self.0.lock().as_deref(), Ok(PoolState::Stored(p)) if p.generating)
    }

    fn with_stored<T>(&self, f: impl FnOnce(&mut StoredPool) -> T) -> Option<T> {
        let mut st = self.0.lock().ok()?;
        match &mut *st {
            PoolState::Stored(p) => Some(f(p)),
            PoolState::Fixed(_) => None,
        }
    }

    /// Counts the sets already in the store (at node start, before [`PrimePool::fill`]).
    pub(crate) async fn load(&self) {
        let Some(store) = self.store() else {
            return;
        };
        match store.count_prime_sets().await {
            Ok(n) => {
                info!(sets = n, "CGGMP24 safe-prime sets in the key store");
                self.with_stored(|p| p.level = n);
            }
            Err(e) => warn!(error = %e, "cannot count the stored safe-prime sets"),
        }
    }

    /// Starts background generation if another set is wanted and no generation runs. Call
    /// from within the tokio runtime.
    pub(crate) fn fill(&self) {
        let Ok(mut st) = self.0.lock() else {
            return;
        };
        let PoolState::Stored(p) = &mut *st else {
            return;
        };
        if p.generating || !p.wants_more() {
            return;
        }
        let rt = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "cannot start safe-prime generation outside the runtime");
                return;
            }
        };
        p.generating = true;
        // A weak reference: a node that stops does not keep the pool (and its store handle)
        // alive for the rest of a generation.
        let pool = Arc::downgrade(&self.0);
        let spawned = std::thread::Builder::new()
            .name("cggmp-primes".into())
            .spawn(move || generate_until_full(&pool, &rt));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start safe-prime generation");
            p.generating = false;
        }
    }

    /// Reserves a set for the keygen `session`: true if it holds one now (fixed primes:
    /// always). Otherwise the keygen waits in line (sets go to waiting keygens in the order
    /// they asked, [`PrimePool::grant_waiting`]) and generation starts.
    pub(crate) fn reserve(&self, session: SessionId) -> bool {
        let held = self.with_stored(|p| {
            if p.held.contains(&session) {
                return true;
            }
            if p.waiting.is_empty() && p.available() > 0 {
                p.held.insert(session);
                return true;
            }
            if !p.waiting.contains(&session) {
                p.waiting.push_back(session);
            }
            false
        });
        match held {
            None => true,
            Some(true) => true,
            Some(false) => {
                self.fill();
                false
            }
        }
    }

    /// Whether the keygen `session` holds a set (fixed primes: always).
    #[cfg(test)]
    pub(crate) fn holds(&self, session: &SessionId) -> bool {
        self.with_stored(|p| p.held.contains(session))
            .unwrap_or(true)
    }

    /// Whether the keygen `session` waits for a set.
    pub(crate) fn is_waiting(&self, session: &SessionId) -> bool {
        self.with_stored(|p| p.waiting.contains(session))
            .unwrap_or(false)
    }

    /// Hands the sets that became available to the keygens waiting longest; returns the
    /// sessions that got one.
    pub(crate) fn grant_waiting(&self) -> Vec<SessionId> {
        self.with_stored(|p| {
            let mut granted = Vec::new();
            while p.available() > 0 {
                let Some(s) = p.waiting.pop_front() else {
                    break;
                };
                p.held.insert(s);
                granted.push(s);
            }
            granted
        })
        .unwrap_or_default()
    }

    /// The keygen `session` ended or needs no set (its committee's aux info is reused): its
    /// reservation, or its place in line, goes. The set stays in the store.
    pub(crate) fn release(&self, session: &SessionId) {
        self.with_stored(|p| {
            p.held.remove(session);
            p.waiting.retain(|s| s != session);
        });
    }

    /// Takes the set the keygen `session` holds out of the store, for its aux-info run, and
    /// starts refilling. `None` if it holds none. Fixed primes are copied, never consumed.
    pub(crate) async fn take(
        &self,
        session: &SessionId,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ProtocolError> {
        match self.with_stored(|p| p.held.remove(session)) {
            Some(false) => Ok(None),
            Some(true) | None => self.take_set().await,
        }
    }

    /// Takes a set no keygen holds, if one is stored (tests: every session reserves its set).
    #[cfg(test)]
    pub(crate) async fn take_unreserved(
        &self,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ProtocolError> {
        match self.with_stored(|p| p.available() > 0) {
            Some(false) => {
                self.fill();
                Ok(None)
            }
            Some(true) | None => self.take_set().await,
        }
    }

    async fn take_set(&self) -> Result<Option<Zeroizing<Vec<u8>>>, ProtocolError> {
        let store = {
            let st = self
                .0
                .lock()
                .map_err(|_| ProtocolError::Bug("prime pool lock poisoned".into()))?;
            match &*st {
                PoolState::Fixed(p) => return Ok(Some(Zeroizing::new(p.to_vec()))),
                PoolState::Stored(p) => p.store.clone(),
            }
        };
        let taken = store.take_prime_set().await;
        self.with_stored(|p| match &taken {
            Ok(Some(_)) => {
                p.level = p.level.saturating_sub(1);
                p.taken = p.taken.saturating_add(1);
            }
            Err(_) => p.level = p.level.saturating_sub(1),
            Ok(None) => p.level = 0,
        });
        self.fill();
        match taken {
            Ok(Some(set)) => {
                info!(prime_set = %set.id, "took a safe-prime set from the pool");
                Ok(Some(set.bytes))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(ProtocolError::Local(format!(
                "key store: cannot take a safe-prime set: {e}"
            ))),
        }
    }

    /// Puts back a set that was taken but never used (no aux-info run started with it: its
    /// secrets never left this node). Fixed primes: nothing to do.
    pub(crate) async fn put_back(&self, set: Zeroizing<Vec<u8>>) {
        let Some(store) = self.store() else {
            return;
        };
        let stored = match PrimeSetId::random() {
            Ok(id) => store.put_prime_set(id, set).await.map(|()| id),
            Err(e) => Err(e),
        };
        match stored {
            Ok(id) => {
                self.with_stored(|p| {
                    p.level = p.level.saturating_add(1);
                    p.taken = p.taken.saturating_sub(1);
                });
                info!(prime_set = %id, "an unused safe-prime set went back to the pool");
            }
            Err(e) => warn!(error = %e, "cannot put an unused safe-prime set back"),
        }
    }

    /// Sets stored now (fixed primes count as 1).
    pub(crate) fn level(&self) -> usize {
        match self.0.lock().as_deref() {
            Ok(PoolState::Fixed(_)) => 1,
            Ok(PoolState::Stored(p)) => p.level,
            Err(_) => 0,
        }
    }

    /// Unreserved sets the pool keeps ready (fixed primes: 1).
    pub(crate) fn target(&self) -> usize {
        match self.0.lock().as_deref() {
            Ok(PoolState::Fixed(_)) => 1,
            Ok(PoolState::Stored(p)) => p.target,
            Err(_) => 0,
        }
    }

    /// Pauses (or resumes) generation ahead of need: the node's keygens wait for the safe
    /// primes of other nodes, which share the machine's cores at a cold start. Generation for
    /// a keygen waiting here is never paused.
    pub(crate) fn pause_refill(&self, paused: bool) {
        self.with_stored(|p| p.refill_paused = paused);
    }

    /// Sets taken for aux-info runs since start (and not put back); keygens waiting for a set.
    pub(crate) fn usage(&self) -> (u64, usize) {
        self.with_stored(|p| (p.taken, p.waiting.len()))
            .unwrap_or_default()
    }

    /// Sets generated and stored since start.
    pub(crate) fn generated(&self) -> u64 {
        self.with_stored(|p| p.generated).unwrap_or_default()
    }
}

/// The `cggmp-primes` thread: generates and stores one set at a time while another is wanted,
/// until the node is gone or something fails (logged; the next take or wait starts it again).
fn generate_until_full(pool: &Weak<Mutex<PoolState>>, rt: &tokio::runtime::Handle) {
    let stop = |why: String| {
        warn!(error = %why, "safe-prime generation stopped");
        if let Some(pool) = pool.upgrade() {
            PrimePool(pool).with_stored(|p| p.generating = false);
        }
    };
    // All the cores while a keygen waits for a set here; else one, and none while the node's
    // keygens wait for the primes of others (checked again before each prime).
    let threads = || loop {
        let (urgent, paused) = pool
            .upgrade()
            .map(PrimePool)
            .and_then(|p| p.with_stored(|p| (!p.waiting.is_empty(), p.refill_paused)))
            .unwrap_or((false, false));
        if urgent || !paused {
            return search_batch(urgent);
        }
        std::thread::sleep(REFILL_PAUSE_POLL);
    };
    loop {
        let Some(pool_now) = pool.upgrade().map(PrimePool) else {
            return;
        };
        let next = pool_now.next_generation();
        drop(pool_now);
        let Some(generate) = next else {
            return;
        };
        let started = Instant::now();
        let set = match generate(&threads) {
            Ok(set) => set,
            Err(e) => return stop(format!("cannot make a safe-prime set: {e}")),
        };
        let id = match PrimeSetId::random() {
            Ok(id) => id,
            Err(e) => return stop(e.to_string()),
        };
        // The node stopped during generation: drop the set.
        let Some(store) = pool.upgrade().map(PrimePool).and_then(|p| p.store()) else {
            return;
        };
        if let Err(e) = rt.block_on(store.put_prime_set(id, set)) {
            return stop(format!("cannot store a safe-prime set: {e}"));
        }
        drop(store);
        let Some(pool_now) = pool.upgrade().map(PrimePool) else {
            return;
        };
        pool_now.with_stored(|p| {
            p.level = p.level.saturating_add(1);
            p.generated = p.generated.saturating_add(1);
        });
        info!(prime_set = %id, secs = started.elapsed().as_secs(), level = pool_now.level(),
            target = pool_now.target(), "safe-prime set generated and stored");
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests;
