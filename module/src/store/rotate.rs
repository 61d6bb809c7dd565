//! Master key rotation, with the data key: a fresh master key and a fresh data key, and every
//! value (records, staged records, prime sets) re-sealed under the new data key in the same
//! batch that makes it current. An old master key, and the old data key it unwraps, open
//! nothing current.
//!
//! # Steps, and why a crash at any point leaves a store that opens
//! The store's state is the pair (content of the key file `K`, values `m/datakey` = `W` and
//! `m/datakey.next` = `P` in the database). Rotating from master key `k0` (data key wrapped as
//! `w0`) to `k1`:
//!
//! | step | what | state after it |
//! |---|---|---|
//! | 1 `NewKeyWritten` | `k1` to `K.new` (temp file, fsync, rename, fsync dir) | `K`=k0, `W`=w0 |
//! | 2 `PendingStored` | `P` := a fresh data key wrapped under `k1`, `Q` := the current one wrapped under `k1` (one durable batch) | `K`=k0, `W`=w0, `P`=w1, `Q` |
//! | 3 `OldKeyKept` | hard link `K` to `K.old`, fsync dir | same, `K.old`=k0 |
//! | 4 `KeyReplaced` | rename `K.new` over `K`, fsync dir | `K`=k1, `W`=w0, `P`=w1 |
//! | 5 `Committed` | one batch: every value re-sealed under the new data key, `W` := w1, delete `P` and `Q` (durable) | `K`=k1, `W`=w1 |
//! | 6 `OldWrappingErased` | reopen + compact everything: w0 and the old ciphertexts leave the live files | |
//! | 7 `Done` | remove `K.old`, fsync dir | |
//!
//! The rename in step 4 is atomic, so `K` always holds either `k0` or `k1` in full. Up to step 3
//! `K` = k0 and `W` = w0 opens (values are still under the old data key). From step 4 to step
//! 5, `K` = k1: `W` no longer opens under it, but `P` and `Q` do, and [`KeyStore::open`] then
//! finishes the rotation itself (step 5, see [`finish_interrupted`]): `Q` gives the data key
//! the values are under, `P` the one they move to. After step 5, `W` = w1 opens under `K` = k1. The old key also stays
//! in `K.old` from step 3 until step 7, so until step 5 an operator can still open the store with
//! it. The next rotation starts by removing a leftover `K.new` or `K.old` (only after checking
//! that `K` opens the store).
//!
//! What a crash can leave behind, and is cleaned up by the next rotation: `K.new` (crash in steps
//! 1-3: a key that wraps at most a stale `P`), `P` (crash in steps 2-3), `K.old` (crash in steps
//! 3-6), and `w0` in old database files until the next compaction of that range (crash before
//! step 6). `mpcd start` warns when `K.old` exists.
//!
//! Offline only: the rotation needs the database open in this process, so a running node (which
//! holds the LevelDB lock) makes it fail with [`StoreError::Locked`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use rusty_leveldb::{LdbIterator, WriteBatch, DB};

use super::prime_sets::{PrimeSetId, PRIME_SET_PREFIX};
use super::staged::STAGED_PREFIX;
use super::{
    db_err, parent_dir, raw_get, record_key_id, seal, sync_dir, KeyStore, MasterKey, StoreError,
    DATA_KEY_DB_KEY, PENDING_DATA_KEY_DB_KEY, PREVIOUS_DATA_KEY_DB_KEY, RECORD_PREFIX,
};
use crate::proto::NodeId;

/// The steps of a rotation, in order (see the module docs). Tests stop after one to simulate a
/// crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Step {
    NewKeyWritten,
    PendingStored,
    OldKeyKept,
    KeyReplaced,
    Committed,
    OldWrappingErased,
    Done,
}

/// `path` with `.{suffix}` appended to its file name (`master.key` -> `master.key.new`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Removes `path` if it exists and fsyncs its directory.
fn remove_leftover(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::warn!(path = %path.display(),
                "removed a key file left by an interrupted master key rotation");
            let dir = parent_dir(path);
            sync_dir(dir).map_err(io_err("fsync dir", dir))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

impl KeyStore {
    /// Replaces the master key in `key_path` with a fresh one, and the data key with a fresh
    /// one wrapped under it, re-sealing every value. The file must hold the master key this
    /// store is under now. Crash-safe: see the module docs of `rotate`.
    ///
    /// Errors: [`StoreError::MasterKey`] if `key_path` does not hold the current master key;
    /// [`StoreError::Io`] or [`StoreError::Db`] if a step fails (the store then opens with the
    /// key `key_path` holds, old or new, as after a crash).
    pub fn rotate_master_key(&mut self, key_path: &Path) -> Result<(), StoreError> {
        self.rotate_until(key_path, Step::Done)
    }

    /// [`KeyStore::rotate_master_key`], stopping right after `stop` (tests simulate crashes).
    pub(super) fn rotate_until(&mut self, key_path: &Path, stop: Step) -> Result<(), StoreError> {
        self.check_usable()?;
        let old = MasterKey::load(key_path)?;
        let data_key = self.current_data_key(&old, || {
            format!(
                "{} is not the master key this key store is under",
                key_path.display()
            )
        })?;
        drop(old);
        let new_path = sibling(key_path, "new");
        let old_path = sibling(key_path, "old");
        remove_leftover(&new_path)?;
        remove_leftover(&old_path)?;
        let dir = parent_dir(key_path);

        let new = MasterKey::generate()?;
        super::write_private_file(&new_path, new.expose(), true)?;
        if stop == Step::NewKeyWritten {
            return Ok(());
        }
        let (pending, next_sealer) = self.stage_next_data_key(&new, &data_key)?;
        drop((data_key, new));
        if stop == Step::PendingStored {
            return Ok(());
        }
        fs::hard_link(key_path, &old_path).map_err(io_err("link", &old_path))?;
        sync_dir(dir).map_err(io_err("fsync dir", dir))?;
        if stop == Step::OldKeyKept {
            return Ok(());
        }
        fs::rename(&new_path, key_path).map_err(io_err("rename", key_path))?;
        sync_dir(dir).map_err(io_err("fsync dir", dir))?;
        tracing::info!(path = %key_path.display(), "master key replaced");
        if stop == Step::KeyReplaced {
            return Ok(());
        }
        self.commit_next_data_key(&pending, next_sealer)?;
        if stop == Step::Committed {
            return Ok(());
        }
        self.compact_out(b"\x00", b"\x7f", "master and data key rotation");
        if stop == Step::OldWrappingErased {
            return Ok(());
        }
        fs::remove_file(&old_path).map_err(io_err("remove", &old_path))?;
        sync_dir(dir).map_err(io_err("fsync dir", dir))?;
        tracing::info!(path = %key_path.display(), "master key rotated");
        Ok(())
    }
}

impl KeyStore {
    /// Rotation to a master key the node does not keep (a secret store's next version): `old`
    /// is the key this store is under, `new` the next one, and `switch` makes `new` the node's
    /// source, durably and atomically (it replaces `HOME/master_key_command`). The steps and
    /// the crash argument are those of the file rotation with the command file as `K`: the
    /// new data key and the current one are stored wrapped under `new`; `switch` runs; one
    /// batch re-seals every value; the database is compacted. Until `switch` the store opens
    /// under `old`; after it, under `new` (an open that finds the pending wrappings finishes
    /// the rotation). The old key stays in the secret store: retiring it is the operator's.
    ///
    /// Errors: [`StoreError::MasterKey`] if `old` is not this store's master key; what
    /// `switch` returns (nothing changed then but two pending values, harmless under `old`);
    /// [`StoreError::Io`] or [`StoreError::Db`] if a step fails.
    pub fn rotate_master_key_with(
        &mut self,
        old: &MasterKey,
        new: &MasterKey,
        switch: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.check_usable()?;
        let data_key = self.current_data_key(old, || {
            "the current master key source does not open this key store".into()
        })?;
        let (pending, next_sealer) = self.stage_next_data_key(new, &data_key)?;
        drop(data_key);
        switch()?;
        tracing::info!("master key source replaced");
        self.commit_next_data_key(&pending, next_sealer)?;
        self.compact_out(b"\x00", b"\x7f", "master and data key rotation");
        tracing::info!("master key rotated");
        Ok(())
    }

    /// The data key, unwrapped with `master`; a `master` that does not unwrap it is
    /// [`StoreError::MasterKey`] saying `wrong()`.
    fn current_data_key(
        &mut self,
        master: &MasterKey,
        wrong: impl FnOnce() -> String,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, StoreError> {
        let wrapped = self.wrapped_data_key()?;
        let (chain_id, party) = (self.sealer.chain_id(), self.sealer.party());
        seal::unwrap_data_key_bytes(master, chain_id, party, &wrapped).map_err(|e| match e {
            StoreError::WrongMasterKey => StoreError::MasterKey(wrong()),
            e => e,
        })
    }

    /// Step 2: a fresh data key wrapped under `new` (`P`) and the current one, `data_key`,
    /// wrapped under `new` too (`Q`), stored in one durable batch. Returns `P` and the sealer
    /// of the fresh data key.
    fn stage_next_data_key(
        &mut self,
        new: &MasterKey,
        data_key: &[u8; 32],
    ) -> Result<(Vec<u8>, seal::Sealer), StoreError> {
        let (chain_id, party) = (
            self.sealer.chain_id().to_owned(),
            self.sealer.party().clone(),
        );
        let mut next_key = zeroize::Zeroizing::new([0u8; 32]);
        seal::fill_random(next_key.as_mut_slice())?;
        let pending = seal::wrap_data_key(new, &chain_id, &party, &next_key)?;
        let previous = seal::wrap_data_key(new, &chain_id, &party, data_key)?;
        let next_sealer = seal::Sealer::new(seal::data_key_cipher(&next_key)?, &chain_id, &party);
        self.write_durably(
            "store the new data key and the current one, wrapped under the new master key",
            |db| {
                let mut batch = WriteBatch::default();
                batch.put(PENDING_DATA_KEY_DB_KEY, &pending);
                batch.put(PREVIOUS_DATA_KEY_DB_KEY, &previous);
                db.write(batch, false)
            },
        )?;
        Ok((pending, next_sealer))
    }

    /// Step 5: every value re-sealed under the fresh data key and `pending` made current, in
    /// one durable batch.
    fn commit_next_data_key(
        &mut self,
        pending: &[u8],
        next_sealer: seal::Sealer,
    ) -> Result<(), StoreError> {
        let batch = reseal(&mut self.db, &self.sealer, &next_sealer, pending)?;
        self.write_durably(
            "commit the new data key and every value re-sealed under it",
            |db| db.write(batch, false),
        )?;
        self.sealer = next_sealer;
        Ok(())
    }
}

/// Step 5 as one batch: every record, staged record and prime set re-sealed from `from` to
/// `to`, `wrapped` (the new data key under the new master key) made current, the pending
/// values removed. Fails with [`StoreError::Corrupt`] on a value `from` does not open (nothing
/// is written then).
fn reseal(
    db: &mut DB,
    from: &seal::Sealer,
    to: &seal::Sealer,
    wrapped: &[u8],
) -> Result<WriteBatch, StoreError> {
    let mut batch = WriteBatch::default();
    let mut it = db.new_iter().map_err(|e| db_err("iterate", e))?;
    it.seek(b"");
    while let Some((k, v)) = it.current() {
        if let Some(id) = k.strip_prefix(RECORD_PREFIX) {
            let rec = from.open(&record_key_id(id)?, &v)?;
            batch.put(&k, &to.seal(&rec)?);
        } else if let Some(id) = k.strip_prefix(STAGED_PREFIX) {
            let rec = from.open_staged(&record_key_id(id)?, &v)?;
            batch.put(&k, &to.seal_staged(&rec)?);
        } else if k.starts_with(PRIME_SET_PREFIX) {
            let id = PrimeSetId::from_db_key(&k)?;
            let set = from.open_prime_set(&id, &v)?;
            batch.put(&k, &to.seal_prime_set(&id, &set)?);
        }
        if !it.advance() {
            break;
        }
    }
    drop(it);
    batch.put(DATA_KEY_DB_KEY, wrapped);
    batch.delete(PENDING_DATA_KEY_DB_KEY);
    batch.delete(PREVIOUS_DATA_KEY_DB_KEY);
    Ok(batch)
}

/// Called by [`KeyStore::open`] when `master` does not unwrap the data key: if a rotation was
/// interrupted after the key file was replaced (steps 4-5), the pending wrappings open under
/// `master`; then the rotation is committed (step 5, durably) and the new data key's cipher
/// returned. Otherwise [`StoreError::WrongMasterKey`].
pub(super) fn finish_interrupted(
    db: &mut DB,
    master: &MasterKey,
    chain_id: &str,
    party: &NodeId,
) -> Result<Aes256Gcm, StoreError> {
    let Some(pending) = raw_get(db, PENDING_DATA_KEY_DB_KEY)? else {
        return Err(StoreError::WrongMasterKey);
    };
    let Ok(next) = seal::unwrap_data_key(master, chain_id, party, &pending) else {
        return Err(StoreError::WrongMasterKey);
    };
    // Without `Q` the rotation was started by an earlier build, which kept the data key: the
    // values are under `P`'s key already (re-sealing them under it is harmless).
    let current = match raw_get(db, PREVIOUS_DATA_KEY_DB_KEY)? {
        None => next.clone(),
        Some(previous) => seal::unwrap_data_key(master, chain_id, party, &previous)
            .map_err(|_| StoreError::WrongMasterKey)?,
    };
    let from = seal::Sealer::new(current, chain_id, party);
    let to = seal::Sealer::new(next.clone(), chain_id, party);
    let batch = reseal(db, &from, &to, &pending)?;
    db.write(batch, false)
        .and_then(|()| db.flush())
        .map_err(|e| db_err("finish an interrupted master key rotation", e))?;
    tracing::warn!(
        "finished an interrupted master key rotation (the master key file had been replaced); \
         run `mpcd rotate-master-key` again to remove the old key file and old values"
    );
    Ok(next)
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::super::record::tests::sample;
    use super::super::tests::{node0, open, TestStore, CHAIN};
    use super::*;
    use crate::proto::KeyId;

    fn kid(s: &str) -> KeyId {
        KeyId::new(s).unwrap()
    }

    #[test]
    fn rotate_master_key_with__should_reseal_under_the_new_source_or_keep_the_old_one_working() {
        let t = TestStore::new();
        let mut store = populated(&t);
        let old = MasterKey::load(&t.key_file()).unwrap();
        let new = MasterKey::generate().unwrap();
        // The switch fails (the secret store is down): the old key still opens everything.
        let err = store
            .rotate_master_key_with(&old, &new, || {
                Err(StoreError::MasterKey("vault down".into()))
            })
            .unwrap_err();
        assert!(err.to_string().contains("vault down"), "{err}");
        drop(store);
        let mut store = KeyStore::open(&t.db_dir(), &old, CHAIN, &node0()).unwrap();
        assert_contents(&mut store);
        // Another key than the store's is refused.
        assert!(matches!(
            store.rotate_master_key_with(&new, &new, || Ok(())),
            Err(StoreError::MasterKey(_))
        ));
        // A crash right after the switch: the next open under the new key finishes.
        let crashed = t.dir.path().join("crashed");
        {
            let wrapped = store.raw_get(DATA_KEY_DB_KEY).unwrap().unwrap();
            let dk = seal::unwrap_data_key_bytes(&old, CHAIN, &node0(), &wrapped).unwrap();
            store.stage_next_data_key(&new, &dk).unwrap();
            copy_tree(&t.db_dir(), &crashed);
        }
        KeyStore::open(&crashed, &old, CHAIN, &node0()).unwrap();
        let mut finished = KeyStore::open(&crashed, &new, CHAIN, &node0()).unwrap();
        assert_contents(&mut finished);
        drop(finished);
        assert!(matches!(
            KeyStore::open(&crashed, &old, CHAIN, &node0()),
            Err(StoreError::WrongMasterKey)
        ));
        // The whole rotation: the new key opens every value, the old one nothing.
        let mut switched = false;
        store
            .rotate_master_key_with(&old, &new, || {
                switched = true;
                Ok(())
            })
            .unwrap();
        assert!(switched);
        assert_contents(&mut store);
        drop(store);
        assert!(matches!(
            KeyStore::open(&t.db_dir(), &old, CHAIN, &node0()),
            Err(StoreError::WrongMasterKey)
        ));
        let mut store = KeyStore::open(&t.db_dir(), &new, CHAIN, &node0()).unwrap();
        assert_contents(&mut store);
    }

    /// A store with two records and a prime set; returns it open.
    fn populated(t: &TestStore) -> KeyStore {
        let mut store = open(t);
        store.put(&sample("k1", &[0x11; 32])).unwrap();
        store.put(&sample("k2", &[0x22; 32])).unwrap();
        store
            .put_prime_set(&super::super::PrimeSetId::from_raw([7; 16]), &[0x33; 64])
            .unwrap();
        store.put_staged(&sample("k2", &[0x55; 32])).unwrap();
        store
    }

    fn assert_contents(store: &mut KeyStore) {
        let recs = store.list().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].share.as_ref().unwrap().expose(), &[0x11; 32]);
        assert_eq!(recs[1].share.as_ref().unwrap().expose(), &[0x22; 32]);
        assert_eq!(store.count_prime_sets().unwrap(), 1);
        let staged = store.get_staged(&kid("k2")).unwrap().unwrap();
        assert_eq!(staged.share.as_ref().unwrap().expose(), &[0x55; 32]);
    }

    /// Copies a directory tree (as a crash would leave it: the store is still open).
    fn copy_tree(src: &Path, dst: &Path) {
        fs::create_dir_all(dst).unwrap();
        for e in fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let to = dst.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &to);
            } else {
                fs::copy(e.path(), &to).unwrap();
            }
        }
    }

    fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let bytes = fs::read(e.path()).unwrap();
                bytes
                    .windows(needle.len())
                    .any(|w| w == needle)
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
            .collect()
    }

    fn wrong_key(res: Result<KeyStore, StoreError>) -> bool {
        matches!(res, Err(StoreError::WrongMasterKey))
    }

    #[test]
    fn rotate__should_open_with_the_new_key_only_and_keep_every_record() {
        let t = TestStore::new();
        let mut store = populated(&t);
        let old_wrapping = store.raw_get(DATA_KEY_DB_KEY).unwrap().unwrap();
        let old_value = store.raw_get(b"r/k1").unwrap().unwrap();
        let old_data_key =
            seal::unwrap_data_key(&t.master, CHAIN, &node0(), &old_wrapping).unwrap();
        let old_sealer = seal::Sealer::new(old_data_key, CHAIN, &node0());
        assert!(old_sealer.open(&kid("k1"), &old_value).is_ok());
        store.rotate_master_key(&t.key_file()).unwrap();
        // Every value moved to a new data key: the old master key's data key opens nothing
        // current, and the old ciphertext is in no live file.
        let value = store.raw_get(b"r/k1").unwrap().unwrap();
        assert_ne!(value, old_value);
        assert!(old_sealer.open(&kid("k1"), &value).is_err());
        let found = files_containing(&t.db_dir(), &old_value[old_value.len() - 32..]);
        assert!(found.is_empty(), "old record ciphertext still in {found:?}");
        // The open store keeps working (same data key).
        assert_contents(&mut store);
        store.put(&sample("k3", &[0x44; 32])).unwrap();
        store.delete(&kid("k3")).unwrap();
        drop(store);

        let new = MasterKey::load(&t.key_file()).unwrap();
        assert_ne!(new.expose(), t.master.expose());
        assert!(wrong_key(KeyStore::open(
            &t.db_dir(),
            &t.master,
            CHAIN,
            &node0()
        )));
        let mut store = KeyStore::open(&t.db_dir(), &new, CHAIN, &node0()).unwrap();
        assert_contents(&mut store);
        drop(store);
        // No key file left but master.key, and the old wrapping is in no live file.
        let mut names: Vec<_> = fs::read_dir(t.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keys", "master.key"]);
        let found = files_containing(&t.db_dir(), &old_wrapping[13..]);
        assert!(found.is_empty(), "old wrapping still in {found:?}");

        // Twice in a row works too.
        let mut store = KeyStore::open(&t.db_dir(), &new, CHAIN, &node0()).unwrap();
        store.rotate_master_key(&t.key_file()).unwrap();
        drop(store);
        let newer = MasterKey::load(&t.key_file()).unwrap();
        assert!(wrong_key(KeyStore::open(
            &t.db_dir(),
            &new,
            CHAIN,
            &node0()
        )));
        assert_contents(&mut KeyStore::open(&t.db_dir(), &newer, CHAIN, &node0()).unwrap());
    }

    #[test]
    fn rotate__should_leave_a_store_that_opens_after_a_crash_at_every_step() {
        for step in [
            Step::NewKeyWritten,
            Step::PendingStored,
            Step::OldKeyKept,
            Step::KeyReplaced,
            Step::Committed,
            Step::OldWrappingErased,
        ] {
            let t = TestStore::new();
            let mut store = populated(&t);
            store.rotate_until(&t.key_file(), step).unwrap();
            // The crash: copy the files while the store is still open, nothing else runs.
            let crashed = tempfile::tempdir().unwrap();
            copy_tree(t.dir.path(), crashed.path());
            drop(store);
            let key_file = crashed.path().join("master.key");
            let db_dir = crashed.path().join("keys");
            let key = MasterKey::load(&key_file).unwrap();
            let replaced = step >= Step::KeyReplaced;
            assert_eq!(key.expose() != t.master.expose(), replaced, "{step:?}");

            // Until the commit, the old key file (kept as master.key.old from step 3) opens too.
            let old_file = sibling(&key_file, "old");
            if (Step::OldKeyKept..Step::Committed).contains(&step) {
                let old = MasterKey::load(&old_file).unwrap();
                assert_eq!(old.expose(), t.master.expose());
                assert_contents(&mut KeyStore::open(&db_dir, &old, CHAIN, &node0()).unwrap());
            }

            // What the node does at start: open with master.key.
            let mut store = KeyStore::open(&db_dir, &key, CHAIN, &node0())
                .unwrap_or_else(|e| panic!("{step:?}: {e}"));
            assert_contents(&mut store);
            if replaced {
                // The open finished the rotation: the old key no longer opens.
                drop(store);
                assert!(wrong_key(KeyStore::open(
                    &db_dir,
                    &t.master,
                    CHAIN,
                    &node0()
                )));
                store = KeyStore::open(&db_dir, &key, CHAIN, &node0()).unwrap();
            }
            // A new rotation cleans up and completes.
            store.rotate_master_key(&key_file).unwrap();
            drop(store);
            assert!(!sibling(&key_file, "new").exists(), "{step:?}");
            assert!(!old_file.exists(), "{step:?}");
            let newest = MasterKey::load(&key_file).unwrap();
            assert!(wrong_key(KeyStore::open(&db_dir, &key, CHAIN, &node0())));
            assert_contents(&mut KeyStore::open(&db_dir, &newest, CHAIN, &node0()).unwrap());
        }
    }

    #[test]
    fn rotate__should_finish_a_rotation_an_earlier_build_left_after_replacing_the_key() {
        // An earlier build kept the data key: its step 2 stored only `P` (the same data key
        // under the new master key). A crash after step 4 leaves the new key file and `P`.
        let t = TestStore::new();
        let mut store = populated(&t);
        let wrapped = store.raw_get(DATA_KEY_DB_KEY).unwrap().unwrap();
        let data_key = seal::unwrap_data_key_bytes(&t.master, CHAIN, &node0(), &wrapped).unwrap();
        let new = MasterKey::generate().unwrap();
        let pending = seal::wrap_data_key(&new, CHAIN, &node0(), &data_key).unwrap();
        store
            .write_durably("test", |db| db.put(PENDING_DATA_KEY_DB_KEY, &pending))
            .unwrap();
        drop(store);
        let mut store = KeyStore::open(&t.db_dir(), &new, CHAIN, &node0()).unwrap();
        assert_contents(&mut store);
        drop(store);
        assert!(wrong_key(KeyStore::open(
            &t.db_dir(),
            &t.master,
            CHAIN,
            &node0()
        )));
    }

    #[test]
    fn rotate__should_refuse_a_key_file_that_is_not_the_current_key() {
        let t = TestStore::new();
        let mut store = populated(&t);
        let other = t.dir.path().join("other.key");
        MasterKey::create(&other).unwrap();
        let err = store.rotate_master_key(&other).unwrap_err();
        assert!(matches!(err, StoreError::MasterKey(_)), "{err}");
        assert!(!sibling(&other, "new").exists());
        assert_contents(&mut store);
        drop(store);
        assert_contents(&mut open(&t));
    }
}
