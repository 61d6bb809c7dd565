//! Async handle to a [`KeyStore`] owned by a dedicated thread.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::{BackupSummary, KeyRecord, KeyRecordView, KeyStore, PrimeSet, PrimeSetId, StoreError};
use crate::proto::KeyId;

/// Commands waiting for the store thread. Bounded: callers wait (asynchronously) when full.
const QUEUE_SIZE: usize = 64;
/// Name of the store thread (shows in `top -H`, panics and debuggers).
const THREAD_NAME: &str = "seqmpc-keystore";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Get(KeyId, Reply<Option<KeyRecord>>),
    Put(Box<KeyRecord>, Reply<()>),
    PutErasing(Box<KeyRecord>, Reply<()>),
    Delete(KeyId, Reply<bool>),
    List(Reply<Vec<KeyRecord>>),
    ListViews(Reply<Vec<KeyRecordView>>),
    View(KeyId, Reply<Option<KeyRecordView>>),
    InsertIfAbsent(Box<KeyRecord>, Reply<Option<KeyRecord>>),
    PutPrimeSet(PrimeSetId, Zeroizing<Vec<u8>>, Reply<()>),
    TakePrimeSet(Reply<Option<PrimeSet>>),
    CountPrimeSets(Reply<usize>),
    PutStaged(Box<KeyRecord>, Reply<()>),
    GetStaged(KeyId, Reply<Option<KeyRecord>>),
    DeleteStaged(KeyId, Reply<bool>),
    PromoteStaged(KeyId, u64, Reply<Option<KeyRecord>>),
    RotateMasterKey(PathBuf, Reply<()>),
    WriteBackup(PathBuf, Reply<BackupSummary>),
}

/// Async handle to the key store.
///
/// A dedicated, named std thread (`seqmpc-keystore`) owns the [`KeyStore`] and runs commands one
/// at a time, in arrival order, from a bounded queue; each command carries a oneshot reply. The
/// store does blocking disk IO (an `fdatasync` per write), which must not run on the async
/// runtime, and rusty-leveldb's `DB` is `!Sync`; one owner thread solves both and makes
/// [`StoreHandle::insert_if_absent`] atomic.
///
/// Clone freely. When the last clone is dropped, the thread finishes the queued commands, closes
/// the database (releasing its lock) and exits; that drop waits for it (usually well under a
/// millisecond, longer if a compaction is running), so the directory can be reopened right after.
///
/// A call whose future is dropped after the command was queued may still take effect.
#[derive(Clone)]
pub struct StoreHandle {
    // Field order matters: `tx` is dropped before `_stop`, so when the last handle goes, the
    // channel is closed before `StopGuard::drop` joins the thread.
    tx: mpsc::Sender<Command>,
    _stop: Arc<StopGuard>,
}

/// Joins the store thread when the last handle is dropped.
struct StopGuard(Option<JoinHandle<()>>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            if t.join().is_err() {
                tracing::error!("the key store thread panicked");
            }
        }
    }
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHandle")
            .field("queued", &QUEUE_SIZE.saturating_sub(self.tx.capacity()))
            .finish()
    }
}

fn run(mut store: KeyStore, mut rx: mpsc::Receiver<Command>) {
    tracing::debug!("key store thread started");
    // `blocking_recv` is fine here: this is a plain thread, not a runtime worker. Replies to
    // callers that went away are dropped (`let _`): the command still took effect.
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Command::Get(key_id, reply) => {
                let _ = reply.send(store.get(&key_id));
            }
            Command::Put(rec, reply) => {
                let _ = reply.send(store.put(&rec));
            }
            Command::PutErasing(rec, reply) => {
                let _ = reply.send(store.put_erasing(&rec));
            }
            Command::Delete(key_id, reply) => {
                let _ = reply.send(store.delete(&key_id));
            }
            Command::List(reply) => {
                let _ = reply.send(store.list());
            }
            Command::ListViews(reply) => {
                let _ = reply.send(store.list_views());
            }
            Command::View(key_id, reply) => {
                let _ = reply.send(store.view(&key_id));
            }
            Command::InsertIfAbsent(rec, reply) => {
                let _ = reply.send(store.insert_if_absent(&rec));
            }
            Command::PutPrimeSet(id, set, reply) => {
                let _ = reply.send(store.put_prime_set(&id, &set));
            }
            Command::TakePrimeSet(reply) => {
                let _ = reply.send(store.take_prime_set());
            }
            Command::CountPrimeSets(reply) => {
                let _ = reply.send(store.count_prime_sets());
            }
            Command::PutStaged(rec, reply) => {
                let _ = reply.send(store.put_staged(&rec));
            }
            Command::GetStaged(key_id, reply) => {
                let _ = reply.send(store.get_staged(&key_id));
            }
            Command::DeleteStaged(key_id, reply) => {
                let _ = reply.send(store.delete_staged(&key_id));
            }
            Command::RotateMasterKey(path, reply) => {
                let _ = reply.send(store.rotate_master_key(&path));
            }
            Command::WriteBackup(out, reply) => {
                let _ = reply.send(store.write_backup(&out));
            }
            Command::PromoteStaged(key_id, generation, reply) => {
                let _ = reply.send(store.promote_staged(&key_id, generation));
            }
        }
    }
    drop(store);
    tracing::debug!("key store thread stopped");
}

impl StoreHandle {
    /// Moves `store` to a new thread named `seqmpc-keystore` and returns the first handle.
    ///
    /// Fails only if the OS cannot start a thread ([`StoreError::Io`]).
    pub fn spawn(store: KeyStore) -> Result<StoreHandle, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_SIZE);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || run(store, rx))
            .map_err(|source| StoreError::Io {
                op: "spawn thread",
                path: THREAD_NAME.into(),
                source,
            })?;
        Ok(StoreHandle {
            tx,
            _stop: Arc::new(StopGuard(Some(thread))),
        })
    }

    async fn call<T>(&self, cmd: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(cmd(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// See [`KeyStore::rotate_master_key`]: the running node's store moves to a fresh data key
    /// under a fresh master key written to `key_path`, between two other commands.
    pub async fn rotate_master_key(&self, key_path: PathBuf) -> Result<(), StoreError> {
        self.call(|r| Command::RotateMasterKey(key_path, r)).await
    }

    /// See [`KeyStore::write_backup`], run by the store's own thread while the node runs.
    pub async fn write_backup(&self, out: PathBuf) -> Result<BackupSummary, StoreError> {
        self.call(|r| Command::WriteBackup(out, r)).await
    }

    /// See [`KeyStore::get`].
    pub async fn get(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let key_id = key_id.clone();
        self.call(|r| Command::Get(key_id, r)).await
    }

    /// See [`KeyStore::put`]: durable when it returns `Ok`.
    pub async fn put(&self, rec: KeyRecord) -> Result<(), StoreError> {
        self.call(|r| Command::Put(Box::new(rec), r)).await
    }

    /// See [`KeyStore::put_erasing`]: durable when it returns.
    pub async fn put_erasing(&self, rec: KeyRecord) -> Result<(), StoreError> {
        self.call(|r| Command::PutErasing(Box::new(rec), r)).await
    }

    /// See [`KeyStore::delete`]: durable when it returns; `true` if the key existed.
    pub async fn delete(&self, key_id: &KeyId) -> Result<bool, StoreError> {
        let key_id = key_id.clone();
        self.call(|r| Command::Delete(key_id, r)).await
    }

    /// See [`KeyStore::list`]: every record, sorted by key id.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.call(Command::List).await
    }

    /// See [`KeyStore::list_views`]: every record's metadata, no share decrypted.
    pub async fn list_views(&self) -> Result<Vec<KeyRecordView>, StoreError> {
        self.call(Command::ListViews).await
    }

    /// See [`KeyStore::view`]: one record's metadata, no share decrypted.
    pub async fn view(&self, key_id: &KeyId) -> Result<Option<KeyRecordView>, StoreError> {
        let key_id = key_id.clone();
        self.call(|r| Command::View(key_id, r)).await
    }

    /// Atomic check-and-set used by keygen "prepare": if no record exists for `rec.key_id`,
    /// stores `rec` (durably) and returns `Ok(None)`; otherwise stores nothing and returns
    /// `Ok(Some(existing))`. Atomic because the store thread runs one command at a time.
    pub async fn insert_if_absent(&self, rec: KeyRecord) -> Result<Option<KeyRecord>, StoreError> {
        self.call(|r| Command::InsertIfAbsent(Box::new(rec), r))
            .await
    }

    /// See [`KeyStore::put_prime_set`]: durable when it returns `Ok`.
    pub async fn put_prime_set(
        &self,
        id: PrimeSetId,
        set: Zeroizing<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.call(|r| Command::PutPrimeSet(id, set, r)).await
    }

    /// See [`KeyStore::take_prime_set`]: the set is erased durably before it is returned. If
    /// this future is dropped after the command was queued, the set may be erased unused.
    pub async fn take_prime_set(&self) -> Result<Option<PrimeSet>, StoreError> {
        self.call(Command::TakePrimeSet).await
    }

    /// See [`KeyStore::count_prime_sets`].
    pub async fn count_prime_sets(&self) -> Result<usize, StoreError> {
        self.call(Command::CountPrimeSets).await
    }

    /// See [`KeyStore::put_staged`]: durable when it returns `Ok`.
    pub async fn put_staged(&self, rec: KeyRecord) -> Result<(), StoreError> {
        self.call(|r| Command::PutStaged(Box::new(rec), r)).await
    }

    /// See [`KeyStore::get_staged`].
    pub async fn get_staged(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let key_id = key_id.clone();
        self.call(|r| Command::GetStaged(key_id, r)).await
    }

    /// See [`KeyStore::delete_staged`].
    pub async fn delete_staged(&self, key_id: &KeyId) -> Result<bool, StoreError> {
        let key_id = key_id.clone();
        self.call(|r| Command::DeleteStaged(key_id, r)).await
    }

    /// See [`KeyStore::promote_staged`].
    pub async fn promote_staged(
        &self,
        key_id: &KeyId,
        generation: u64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let key_id = key_id.clone();
        self.call(|r| Command::PromoteStaged(key_id, generation, r))
            .await
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::super::record::tests::sample;
    use super::super::tests::{open, TestStore};
    use super::*;

    #[tokio::test]
    async fn store_handle__should_serve_concurrent_callers_and_release_the_db_on_drop() {
        let t = TestStore::new();
        let handle = StoreHandle::spawn(open(&t)).unwrap();

        let mut tasks = Vec::new();
        for i in 0..8 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                let rec = sample(&format!("k{i}"), &[i as u8; 32]);
                h.put(rec.clone()).await.unwrap();
                let got = h.get(&rec.key_id).await.unwrap().unwrap();
                assert_eq!(got.share.unwrap().expose(), &[i as u8; 32]);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let ids: Vec<_> = handle
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key_id.to_string())
            .collect();
        assert_eq!(ids, ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"]);

        // insert_if_absent: exactly one of several racing callers wins.
        let mut racers = Vec::new();
        for i in 0..4u8 {
            let h = handle.clone();
            racers.push(tokio::spawn(async move {
                let mut rec = sample("fresh", &[i; 8]);
                rec.generation = u64::from(i);
                h.insert_if_absent(rec).await.unwrap()
            }));
        }
        let mut winners = 0;
        for r in racers {
            if r.await.unwrap().is_none() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);

        let k0 = KeyId::new("k0").unwrap();
        assert!(handle.delete(&k0).await.unwrap());
        assert!(!handle.delete(&k0).await.unwrap());
        assert!(handle.get(&k0).await.unwrap().is_none());
        assert!(format!("{handle:?}").starts_with("StoreHandle"));

        // Prime sets: counted apart from keys, each taken once.
        for i in 1..=3u8 {
            let id = PrimeSetId::from_raw([i; 16]);
            handle
                .put_prime_set(id, Zeroizing::new(vec![i; 100]))
                .await
                .unwrap();
        }
        assert_eq!(handle.count_prime_sets().await.unwrap(), 3);
        let mut takers = Vec::new();
        for _ in 0..4 {
            let h = handle.clone();
            takers.push(tokio::spawn(
                async move { h.take_prime_set().await.unwrap() },
            ));
        }
        let mut taken = Vec::new();
        for t in takers {
            if let Some(set) = t.await.unwrap() {
                assert_eq!(set.bytes.as_slice(), &[set.id.as_bytes()[0]; 100]);
                taken.push(set.id);
            }
        }
        taken.sort();
        assert_eq!(taken.len(), 3);
        taken.dedup();
        assert_eq!(taken.len(), 3);
        assert_eq!(handle.count_prime_sets().await.unwrap(), 0);
        assert_eq!(handle.list().await.unwrap().len(), 8);

        // Dropping the last handle joins the thread, which closes the DB: reopening works.
        drop(handle);
        let mut store = open(&t);
        assert_eq!(store.list().unwrap().len(), 8);
    }
}
