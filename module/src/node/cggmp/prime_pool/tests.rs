use std::time::Duration;

use super::*;
use crate::proto::NodeId;
use crate::store::{KeyStore, MasterKey};

/// A stand-in for safe-prime generation: distinct bytes, instantly.
fn fake_set(_: &dyn Fn() -> SearchBatch) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    let id = PrimeSetId::random().map_err(|e| ProtocolError::Local(e.to_string()))?;
    Ok(Zeroizing::new(id.as_bytes().to_vec()))
}

fn never(_: &dyn Fn() -> SearchBatch) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    Err(ProtocolError::Bug("must not generate".into()))
}

fn open(dir: &std::path::Path, master: &MasterKey) -> StoreHandle {
    let node = NodeId::new("node0").unwrap();
    StoreHandle::spawn(KeyStore::open(&dir.join("ks"), master, "c", &node).unwrap()).unwrap()
}

fn session(i: u8) -> SessionId {
    SessionId([i; 32])
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
    // Counts the batches searched at normal priority: a refill has none.
    static FOREGROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let pool = PrimePool::with_generator(
        None,
        store.clone(),
        3,
        Arc::new(|plan: &dyn Fn() -> SearchBatch| {
            if !plan().background {
                FOREGROUND.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            fake_set(plan)
        }),
    );
    pool.load().await;
    assert_eq!((pool.level(), pool.target()), (0, 3));
    pool.fill();
    wait_for("3 sets", || pool.level() == 3 && !pool.generating()).await;
    assert_eq!(
        FOREGROUND.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refill is searched at the lowest priority"
    );
    assert_eq!(store.count_prime_sets().await.unwrap(), 3);
    assert!(store.list().await.unwrap().is_empty(), "sets are not keys");

    // A take hands out a stored set once and refills.
    let first = pool.take_unreserved().await.unwrap().unwrap();
    assert_eq!(first.len(), 16);
    wait_for("the refill", || pool.level() == 3 && !pool.generating()).await;
    assert_eq!(pool.usage(), (1, 0));
    drop(pool);
    drop(store);

    // After a restart the stored sets count; nothing is generated while full.
    let store = open(dir.path(), &master);
    let pool = PrimePool::with_generator(None, store.clone(), 3, Arc::new(never));
    pool.load().await;
    assert_eq!(pool.level(), 3);
    pool.fill();
    assert!(!pool.generating());
    let mut seen = vec![first.to_vec()];
    for left in (0..3).rev() {
        let set = pool.take_unreserved().await.unwrap().unwrap().to_vec();
        assert!(!seen.contains(&set), "a set was handed out twice");
        seen.push(set);
        // Generation fails at once (the stand-in refuses) and stops.
        wait_for("the failed refill", || !pool.generating()).await;
        assert_eq!(pool.level(), left);
    }
    assert!(pool.take_unreserved().await.unwrap().is_none());
    assert_eq!(store.count_prime_sets().await.unwrap(), 0);
}

/// Issue 15: a keygen takes its set only once it holds a reservation, and the
/// reservation of a keygen that never starts leaves the set in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prime_pool__should_reserve_in_job_order_and_keep_sets_of_keygens_that_never_start() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
    let store = open(dir.path(), &master);
    for _ in 0..2 {
        let set = fake_set(&|| search_batch(false)).unwrap();
        store
            .put_prime_set(PrimeSetId::random().unwrap(), set)
            .await
            .unwrap();
    }
    // Target 0: nothing generated ahead of need, only for keygens that wait.
    let pool = PrimePool::with_generator(None, store.clone(), 0, Arc::new(never));
    pool.load().await;
    assert!(pool.reserve(session(1)));
    assert!(
        pool.reserve(session(1)),
        "a second reserve is the same reservation"
    );
    assert!(pool.reserve(session(2)));
    assert!(!pool.reserve(session(3)), "only two sets");
    assert!(!pool.reserve(session(4)));
    assert!(pool.is_waiting(&session(3)) && !pool.holds(&session(3)));
    assert_eq!(pool.usage(), (0, 2));
    // A keygen that waits takes nothing.
    assert!(pool.take(&session(3)).await.unwrap().is_none());
    assert_eq!(store.count_prime_sets().await.unwrap(), 2);

    // Keygen 1 never starts (its committee lacked sets): its set stays, and goes to the
    // keygen that waited longest, not to a later one.
    pool.release(&session(1));
    assert_eq!(pool.grant_waiting(), vec![session(3)]);
    assert!(pool.holds(&session(3)) && pool.is_waiting(&session(4)));
    assert_eq!(store.count_prime_sets().await.unwrap(), 2);

    // Keygen 2 runs aux info: it takes its set, once.
    assert!(pool.take(&session(2)).await.unwrap().is_some());
    assert!(pool.take(&session(2)).await.unwrap().is_none());
    assert_eq!((pool.level(), pool.usage()), (1, (1, 1)));
    // A take that could not start aux info puts the set back.
    let set = pool.take(&session(3)).await.unwrap().unwrap();
    pool.put_back(set).await;
    assert_eq!((pool.level(), pool.usage()), (1, (1, 1)));
    assert_eq!(pool.grant_waiting(), vec![session(4)]);
    assert!(pool.take(&session(4)).await.unwrap().is_some());
    assert_eq!(store.count_prime_sets().await.unwrap(), 0);
    // Fixed primes: every keygen holds a set at once.
    let fixed = Arc::new(Zeroizing::new(vec![7u8; 8]));
    let pool = PrimePool::with_generator(Some(fixed), store.clone(), 2, Arc::new(never));
    assert!(pool.reserve(session(9)) && pool.holds(&session(9)));
}

/// A keygen that waits gets sets generated for it even with a target of 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prime_pool__should_generate_for_a_waiting_keygen_on_all_cores() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
    let store = open(dir.path(), &master);
    static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static BACKGROUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let pool = PrimePool::with_generator(
        None,
        store.clone(),
        0,
        Arc::new(|plan: &dyn Fn() -> SearchBatch| {
            let batch = plan();
            THREADS.store(batch.threads, std::sync::atomic::Ordering::SeqCst);
            BACKGROUND.store(batch.background, std::sync::atomic::Ordering::SeqCst);
            fake_set(plan)
        }),
    );
    pool.load().await;
    pool.fill();
    assert!(!pool.generating(), "target 0: nothing ahead of need");
    assert!(!pool.reserve(session(1)));
    wait_for("a set for the waiting keygen", || pool.level() == 1).await;
    assert_eq!(
        THREADS.load(std::sync::atomic::Ordering::SeqCst),
        urgent_threads()
    );
    assert!(
        !BACKGROUND.load(std::sync::atomic::Ordering::SeqCst),
        "a set a keygen waits for is searched at normal priority"
    );
    assert_eq!(pool.grant_waiting(), vec![session(1)]);
    wait_for("generation to stop", || !pool.generating()).await;
    assert_eq!(pool.level(), 1);
}

#[tokio::test]
async fn prime_pool__should_not_generate_with_target_zero_or_fixed_primes() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
    let store = open(dir.path(), &master);
    let pool = PrimePool::with_generator(None, store.clone(), 0, Arc::new(never));
    pool.load().await;
    pool.fill();
    assert!(!pool.generating());
    assert!(pool.take_unreserved().await.unwrap().is_none());
    assert!(!pool.generating());
    // Stored sets are still used.
    store
        .put_prime_set(PrimeSetId::random().unwrap(), Zeroizing::new(vec![1; 8]))
        .await
        .unwrap();
    pool.load().await;
    assert_eq!(pool.level(), 1);
    assert_eq!(
        pool.take_unreserved().await.unwrap().unwrap().as_slice(),
        &[1; 8]
    );
    assert_eq!(pool.level(), 0);

    // Fixed primes: copied, never consumed, never generated; the store is not touched.
    let fixed = Arc::new(Zeroizing::new(vec![7u8; 8]));
    let pool = PrimePool::with_generator(Some(fixed), store.clone(), 2, Arc::new(never));
    pool.load().await;
    pool.fill();
    for _ in 0..3 {
        assert_eq!(
            pool.take(&session(1)).await.unwrap().unwrap().as_slice(),
            &[7; 8]
        );
    }
    assert_eq!((pool.level(), pool.target()), (1, 1));
    assert!(!pool.generating());
}
