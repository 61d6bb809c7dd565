//! The pool of CGGMP24 safe-prime sets: generated in the background, stored sealed in the key
//! store, taken once each by an aux-info run.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use rand::rngs::OsRng;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::error::ProtocolError;
use crate::protocol::cggmp::Primes;
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
    /// Sets to keep ready; background generation stops there (0: never generate).
    target: usize,
    /// Sets in the store, as counted at start and kept up to date by this pool (the only
    /// writer of the store's prime sets).
    level: usize,
    /// A generation thread is running.
    generating: bool,
    /// Makes one serialized set ([`generate_primes`]; tests substitute a fast one).
    generate: Generate,
}

/// Makes one serialized safe-prime set.
type Generate = fn() -> Result<Zeroizing<Vec<u8>>, ProtocolError>;

/// A fresh safe-prime set ([`Primes::to_bytes`]): 28-300 s of one core.
fn generate_primes() -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    Primes::generate(&mut OsRng).to_bytes()
}

/// A pool of safe-prime sets for aux-info runs (generation takes 28-300 s of one core per
/// set on the target machine), persisted sealed in the key store (`KeyStore::put_prime_set`).
///
/// One background thread (`cggmp-primes`) generates one set at a time while fewer than the
/// target are stored; a set counts once it is stored. [`PrimePool::take`] takes a set out of
/// the store (erased durably before it is used, so a set serves at most one aux-info run, even
/// across a crash) and restarts generation. Sets stored before a restart count after it
/// ([`PrimePool::load`]), so nothing is generated again.
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
        Self::with_generator(fixed, store, target, generate_primes)
    }

    fn with_generator(
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

    /// For the generation thread: how to make the next set, or `None` once the pool holds its
    /// target, which also marks generation stopped. One lock for both, so that a take racing
    /// with the end of generation cannot find `generating` still set and leave the pool short.
    fn next_generation(&self) -> Option<Generate> {
        let mut st = self.0.lock().ok()?;
        let PoolState::Stored(p) = &mut *st else {
            return None;
        };
        if p.level < p.target {
            Some(p.generate)
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

    fn with_stored(&self, f: impl FnOnce(&mut StoredPool)) {
        if let Ok(mut st) = self.0.lock() {
            if let PoolState::Stored(p) = &mut *st {
                f(p);
            }
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

    /// Starts background generation if fewer sets than the target are stored and no
    /// generation runs. Call from within the tokio runtime.
    pub(crate) fn fill(&self) {
        let Ok(mut st) = self.0.lock() else {
            return;
        };
        let PoolState::Stored(p) = &mut *st else {
            return;
        };
        if p.generating || p.level >= p.target {
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

    /// Takes a set for an aux-info run out of the store, if one is there, and starts
    /// refilling. Fixed primes are copied, never consumed.
    pub(crate) async fn take(&self) -> Result<Option<Zeroizing<Vec<u8>>>, ProtocolError> {
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
            Ok(Some(_)) | Err(_) => p.level = p.level.saturating_sub(1),
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

    /// Sets ready now (fixed primes count as 1).
    pub(crate) fn level(&self) -> usize {
        match self.0.lock().as_deref() {
            Ok(PoolState::Fixed(_)) => 1,
            Ok(PoolState::Stored(p)) => p.level,
            Err(_) => 0,
        }
    }

    /// Sets the pool keeps ready (fixed primes: 1).
    pub(crate) fn target(&self) -> usize {
        match self.0.lock().as_deref() {
            Ok(PoolState::Fixed(_)) => 1,
            Ok(PoolState::Stored(p)) => p.target,
            Err(_) => 0,
        }
    }
}

/// The `cggmp-primes` thread: generates and stores one set at a time until the pool holds its
/// target, the node is gone, or something fails (logged; the next take starts it again).
fn generate_until_full(pool: &Weak<Mutex<PoolState>>, rt: &tokio::runtime::Handle) {
    let stop = |why: String| {
        warn!(error = %why, "safe-prime generation stopped");
        if let Some(pool) = pool.upgrade() {
            PrimePool(pool).with_stored(|p| p.generating = false);
        }
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
        let set = match generate() {
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
        pool_now.with_stored(|p| p.level = p.level.saturating_add(1));
        info!(prime_set = %id, secs = started.elapsed().as_secs(), level = pool_now.level(),
            target = pool_now.target(), "safe-prime set generated and stored");
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::NodeId;
    use crate::store::{KeyStore, MasterKey};

    /// A stand-in for safe-prime generation: distinct bytes, instantly.
    fn fake_set() -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        let id = PrimeSetId::random().map_err(|e| ProtocolError::Local(e.to_string()))?;
        Ok(Zeroizing::new(id.as_bytes().to_vec()))
    }

    fn open(dir: &std::path::Path, master: &MasterKey) -> StoreHandle {
        let node = NodeId::new("node0").unwrap();
        StoreHandle::spawn(KeyStore::open(&dir.join("ks"), master, "c", &node).unwrap()).unwrap()
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prime_pool__should_fill_to_target_persist_and_count_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
        let store = open(dir.path(), &master);
        let pool = PrimePool::with_generator(None, store.clone(), 3, fake_set);
        pool.load().await;
        assert_eq!((pool.level(), pool.target()), (0, 3));
        pool.fill();
        wait_for("3 sets", || pool.level() == 3 && !pool.generating()).await;
        assert_eq!(store.count_prime_sets().await.unwrap(), 3);
        assert!(store.list().await.unwrap().is_empty(), "sets are not keys");

        // A take hands out a stored set once and refills.
        let first = pool.take().await.unwrap().unwrap();
        assert_eq!(first.len(), 16);
        wait_for("the refill", || pool.level() == 3 && !pool.generating()).await;
        drop(pool);
        drop(store);

        // After a restart the stored sets count; nothing is generated while full.
        let store = open(dir.path(), &master);
        let pool = PrimePool::with_generator(None, store.clone(), 3, || {
            Err(ProtocolError::Bug("must not generate".into()))
        });
        pool.load().await;
        assert_eq!(pool.level(), 3);
        pool.fill();
        assert!(!pool.generating());
        let mut seen = vec![first.to_vec()];
        for left in (0..3).rev() {
            let set = pool.take().await.unwrap().unwrap().to_vec();
            assert!(!seen.contains(&set), "a set was handed out twice");
            seen.push(set);
            // Generation fails at once (the stand-in refuses) and stops.
            wait_for("the failed refill", || !pool.generating()).await;
            assert_eq!(pool.level(), left);
        }
        assert!(pool.take().await.unwrap().is_none());
        assert_eq!(store.count_prime_sets().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn prime_pool__should_not_generate_with_target_zero_or_fixed_primes() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
        let store = open(dir.path(), &master);
        let never = || Err(ProtocolError::Bug("must not generate".into()));
        let pool = PrimePool::with_generator(None, store.clone(), 0, never);
        pool.load().await;
        pool.fill();
        assert!(!pool.generating());
        assert!(pool.take().await.unwrap().is_none());
        assert!(!pool.generating());
        // Stored sets are still used.
        store
            .put_prime_set(PrimeSetId::random().unwrap(), Zeroizing::new(vec![1; 8]))
            .await
            .unwrap();
        pool.load().await;
        assert_eq!(pool.level(), 1);
        assert_eq!(pool.take().await.unwrap().unwrap().as_slice(), &[1; 8]);
        assert_eq!(pool.level(), 0);

        // Fixed primes: copied, never consumed, never generated; the store is not touched.
        let fixed = Arc::new(Zeroizing::new(vec![7u8; 8]));
        let pool = PrimePool::with_generator(Some(fixed), store.clone(), 2, never);
        pool.load().await;
        pool.fill();
        for _ in 0..3 {
            assert_eq!(pool.take().await.unwrap().unwrap().as_slice(), &[7; 8]);
        }
        assert_eq!((pool.level(), pool.target()), (1, 1));
        assert!(!pool.generating());
    }
}
