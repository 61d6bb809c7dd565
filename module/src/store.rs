//! Encrypted key store (rusty-leveldb).
//!
//! Each node keeps its key shares in a LevelDB directory of its own ([`KeyStore`]), used from
//! async code through a [`StoreHandle`].
//!
//! # Keys and encryption
//! * The **master key** ([`MasterKey`], 32 bytes, a file of mode 0600) only wraps the data key.
//! * The **data key** (32 random bytes) is made on first open and stored in the database,
//!   wrapped with AES-256-GCM under the master key, its associated data binding it to the chain
//!   id and this node's id. Opening with another master key, chain id or node id fails with
//!   [`StoreError::WrongMasterKey`]. Rotating the master key replaces the data key too and
//!   re-seals every value: [`KeyStore::rotate_master_key`], crash-safe (the argument is in the
//!   `rotate` module; an open that finds a rotation interrupted after the key file was
//!   replaced finishes it).
//! * **Backups** ([`KeyStore::write_backup`], [`restore_backup`]) carry the stored values as
//!   they are and the wrapped data key, under one AEAD over the whole file bound to chain id and
//!   node id; restoring needs the master key current when the backup was made (`backup` module).
//! * **Rollback is not detected**: the associated data binds the generation found in the
//!   value's own header, so an older value of the same key id copied back opens without error.
//! * Each **record value** is `schema version || generation || nonce || AES-256-GCM(record)`
//!   under the data key, with a fresh random nonce per write; the associated data binds the
//!   chain id, key id, node id, generation and schema version, so a value moved to another key,
//!   node or chain, or with a flipped byte, fails with [`StoreError::Corrupt`] naming the key.
//!   Layout details are in the `seal` module; key ids are stored in clear (as database keys).
//! * **CGGMP24 safe-prime sets** waiting for an aux-info run live in a namespace of their own
//!   (`p/<set id>`, never returned by [`KeyStore::list`]), sealed the same way under a record
//!   kind of their own: [`KeyStore::put_prime_set`], [`KeyStore::take_prime_set`] (erases the
//!   set durably before returning it), [`KeyStore::count_prime_sets`].
//! * A **resharing's next generation** of a key is staged under `n/<key id>` beside the READY
//!   record until the chain confirms it, then promoted atomically (`staged` module).
//!
//! # Durability
//! rusty-leveldb never fsyncs. The database runs on our own `Env` (module `durable_env`) whose
//! files sync on flush, and every write is followed by `DB::flush()`; so `put`, `delete` and
//! `insert_if_absent` are durable when they return `Ok`. A durable put costs one `fdatasync` of
//! the log (about 4 ms on this project's ext4 VM disk, against 1 µs without it; run the test
//! `store__should_time_durable_puts` with `--nocapture`).
//!
//! If a write, sync or compaction fails, the store refuses every later call with
//! [`StoreError::Poisoned`]: after a failed fsync the page cache and the disk may disagree and
//! rusty-leveldb does not roll back its in-memory state, so the only safe continuation is to
//! reopen (which replays what did reach the disk).
//!
//! # Known limits (rusty-leveldb 4.0.2)
//! * Its read path maps a table read error to "not found" (`DB::get_at` cannot report it) and
//!   its iterators stop silently on one. A disk that fails reads can thus make a record look
//!   absent to [`KeyStore::get`], [`KeyStore::list`] or [`KeyStore::insert_if_absent`].
//!   Corrupted *values* are always detected (AEAD); corrupted LevelDB framing is detected by its
//!   CRCs but may surface as absence.
//! * Its snapshot list never becomes empty again once a snapshot was taken (`DB::new_iter`
//!   takes one), and from then on compactions keep every old version and tombstone. Only
//!   [`KeyStore::list`] iterates; [`KeyStore::delete`] reopens the database before compacting so
//!   that the compaction really drops the deleted value. Overwritten values of other keys may
//!   stay in table files until the next open; for a key store this is a few KB.
//! * It panics on some internal invariant violations; in a [`StoreHandle`] that ends the store
//!   thread, and later calls return [`StoreError::Closed`].
#![deny(clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod backup;
mod durable_env;
mod handle;
mod master_key;
mod prime_sets;
mod record;
mod rotate;
mod seal;
mod staged;

use std::collections::BTreeMap;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rusty_leveldb::{LdbIterator, Options, DB};
use zeroize::Zeroizing;

pub use backup::{
    restore_backup, BackupSummary, RestoreOptions, RestoreSummary, BACKUP_MAGIC, BACKUP_VERSION,
};
pub use handle::StoreHandle;
pub use master_key::{MasterKey, MASTER_KEY_COMMAND_TIMEOUT, MASTER_KEY_LEN};
pub use prime_sets::{PrimeSet, PrimeSetId};
pub use record::{KeyRecord, KeyRecordView, SecretShare, ShareStatus};
pub use seal::{
    DATA_KEY_TAG, DATA_KEY_VERSION, PRIME_SET_TAG, PRIME_SET_VERSION, RECORD_TAG, SCHEMA_VERSION,
    STAGED_RECORD_TAG,
};

use crate::proto::{KeyId, NodeId};

/// Database key of the wrapped data key. Do not change without a migration.
const DATA_KEY_DB_KEY: &[u8] = b"m/datakey";
/// Database key of the data key wrapped under the *next* master key while a rotation is in
/// progress (see the `rotate` module). Do not change without a migration.
const PENDING_DATA_KEY_DB_KEY: &[u8] = b"m/datakey.next";
/// Database key of the *current* data key wrapped under the next master key while a rotation
/// is in progress: with it, an open that finds the new master key re-seals every value from the
/// old data key to the new one. Do not change without a migration.
const PREVIOUS_DATA_KEY_DB_KEY: &[u8] = b"m/datakey.prev";
/// Prefix of record keys: `r/` followed by the key id (ASCII, so byte order is key id order).
/// Do not change without a migration.
const RECORD_PREFIX: &[u8] = b"r/";

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `fsync`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// rusty-leveldb reported an error.
    #[error("key store database: {0}")]
    Db(String),
    /// Another `KeyStore`, in this or another process (a running `mpcd`), holds the database
    /// lock.
    #[error("key store {} is in use by another process (is mpcd running? stop it first)",
            path.display())]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// A backup file is not a well-formed seqmpc key store backup, or fails authentication
    /// (truncated, modified, or not a backup at all).
    #[error("backup file is unusable: {0}")]
    Backup(String),
    /// A backup belongs to another chain or node.
    #[error(
        "backup was made for chain {backup_chain:?}, node {backup_node:?}; this node is \
             chain {chain:?}, node {node:?}"
    )]
    BackupIdentity {
        /// Chain id named in the backup.
        backup_chain: String,
        /// Node id named in the backup.
        backup_node: String,
        /// This node's chain id.
        chain: String,
        /// This node's id.
        node: String,
    },
    /// The master key does not unwrap the data key stored in a backup.
    #[error(
        "the master key does not open this backup (it was made under another master key: \
             pass the key that was current when it was made with --backup-master-key)"
    )]
    BackupWrongMasterKey,
    /// The caller's check refused records of a backup (e.g. shares older than the chain's
    /// generation of their key); one line per refused record.
    #[error("backup refused: {}", .0.join("; "))]
    BackupRefused(Vec<String>),
    /// [`restore_backup`] found a store that is not empty and was not told to replace it.
    #[error("{} already holds a key store ({what}); pass --force to replace it (it is moved \
             aside, not deleted)", path.display())]
    StoreNotEmpty {
        /// The store directory.
        path: PathBuf,
        /// What it holds.
        what: String,
    },
    /// A stored value failed to open: bad header, failed authentication (modified bytes, or a
    /// value written for another key id, node or chain), bad plaintext, or a key id mismatch.
    #[error("key store record {key_id} is corrupt: {reason}")]
    Corrupt {
        /// The key whose value is bad (`<data key>` for the wrapped data key, `<prime set ID>`
        /// for a prime set).
        key_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The master key file is unusable (not a regular file, wrong length, no file name).
    #[error("master key: {0}")]
    MasterKey(String),
    /// The master key file can be accessed by group or others; it must be mode 0600 or stricter.
    #[error("master key {} has mode {mode:o}; it must not be accessible to group or others \
             (chmod 600)", path.display())]
    MasterKeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// [`MasterKey::create`] found a file already there; it never overwrites a key.
    #[error("master key {} already exists", path.display())]
    MasterKeyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The master key does not unwrap this store's data key: another master key, or a store
    /// made for another chain id or node id.
    #[error(
        "the master key does not open this key store (wrong master key, or a store of \
             another chain id or node)"
    )]
    WrongMasterKey,
    /// An invalid argument, e.g. a store path that is not UTF-8.
    #[error("key store configuration: {0}")]
    Config(String),
    /// The OS random number generator failed.
    #[error("OS random number generator: {0}")]
    Random(String),
    /// An earlier write, sync or compaction failed; reopen the store.
    #[error("key store unusable after an earlier failure ({0}); reopen it")]
    Poisoned(String),
    /// The store thread behind a [`StoreHandle`] is gone.
    #[error("key store closed")]
    Closed,
    /// A condition that indicates a bug in this crate.
    #[error("bug in the key store: {0}")]
    Bug(String),
}

fn db_err(what: &str, e: rusty_leveldb::Status) -> StoreError {
    StoreError::Db(format!("{what}: {e}"))
}

/// The error of opening the database in `dir`: [`StoreError::Locked`] for a held lock.
fn open_err(dir: &Path, e: rusty_leveldb::Status) -> StoreError {
    if e.code == rusty_leveldb::StatusCode::LockError {
        StoreError::Locked {
            path: dir.to_path_buf(),
        }
    } else {
        db_err("open", e)
    }
}

fn record_db_key(key_id: &KeyId) -> Vec<u8> {
    [RECORD_PREFIX, key_id.as_str().as_bytes()].concat()
}

/// The synchronous key store: owns the rusty-leveldb database in one directory.
///
/// Not `Sync`; share it through [`StoreHandle`].
pub struct KeyStore {
    /// rusty-leveldb declares `DB: Send` (`unsafe impl`) although it holds `Rc`s; moving it to
    /// another thread is sound only because every `Rc` clone lives inside it: never keep its
    /// `Options`, snapshots or iterators outside a method call.
    db: DB,
    dir: PathBuf,
    sealer: seal::Sealer,
    /// Why the store refuses further calls, after a failed write, sync or compaction.
    poisoned: Option<String>,
    /// Every record's metadata (never its share), built by the first [`KeyStore::list_views`]
    /// and kept up to date by every write of a record, so the status endpoint lists keys
    /// without decrypting a share on the store thread.
    views: Option<BTreeMap<KeyId, KeyRecordView>>,
}

// `StoreHandle::spawn` moves the store to its thread.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<KeyStore>();
};

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("chain_id", &self.sealer.chain_id())
            .field("party", self.sealer.party())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens (creating if needed, mode 0700) the store in `dir` for `chain_id` and this node
    /// (`party`).
    ///
    /// On first open a data key is generated, wrapped under `master` and stored durably. Fails
    /// with [`StoreError::WrongMasterKey`] if `master`, `chain_id` or `party` differ from the
    /// ones the store was created with, and with [`StoreError::Db`] if another `KeyStore` (in
    /// this or another process) has the directory open.
    pub fn open(
        dir: &Path,
        master: &MasterKey,
        chain_id: &str,
        party: &NodeId,
    ) -> Result<KeyStore, StoreError> {
        // rusty-leveldb unwraps `Path::to_str` in places: refuse what would make it panic.
        if dir.to_str().is_none() {
            return Err(StoreError::Config(format!(
                "store path {} is not UTF-8",
                dir.display()
            )));
        }
        if chain_id.is_empty() {
            return Err(StoreError::Config("empty chain id".into()));
        }
        create_dir(dir)?;
        let mut db = open_db(dir).map_err(|e| open_err(dir, e))?;
        let cipher = load_or_create_data_key(&mut db, master, chain_id, party)?;
        tracing::info!(dir = %dir.display(), chain_id, party = %party, "opened key store");
        Ok(KeyStore {
            db,
            dir: dir.to_path_buf(),
            sealer: seal::Sealer::new(cipher, chain_id, party),
            poisoned: None,
            views: None,
        })
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs a write, then flushes (= fsyncs, see module docs). Any failure poisons the store.
    fn write_durably(
        &mut self,
        what: &str,
        write: impl FnOnce(&mut DB) -> rusty_leveldb::Result<()>,
    ) -> Result<(), StoreError> {
        let res = write(&mut self.db).and_then(|()| self.db.flush());
        res.map_err(|e| self.poison(what, e))
    }

    fn poison(&mut self, what: &str, e: rusty_leveldb::Status) -> StoreError {
        let why = format!("{what}: {e}");
        tracing::error!(error = %why, "key store write failed; refusing further calls until reopened");
        self.poisoned = Some(why.clone());
        StoreError::Db(why)
    }

    fn raw_get(&mut self, db_key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        raw_get(&mut self.db, db_key)
    }

    /// Closes and reopens the database, which resets rusty-leveldb's snapshot list. The lock is
    /// released for a moment in between (rusty-leveldb cannot reopen while holding it). On
    /// failure the closed database stays in place and the caller poisons the store.
    fn reopen_db(&mut self) -> rusty_leveldb::Result<()> {
        self.db.close()?;
        self.db = open_db(&self.dir)?;
        Ok(())
    }

    /// The record of `key_id`, share included, or `None`.
    ///
    /// [`StoreError::Corrupt`] if the stored value does not authenticate or decode.
    pub fn get(&mut self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.check_usable()?;
        let Some(value) = self.raw_get(&record_db_key(key_id))? else {
            return Ok(None);
        };
        self.sealer.open(key_id, &value).map(Some)
    }

    /// Stores `rec`, replacing any record of the same key id. Durable when it returns `Ok`.
    pub fn put(&mut self, rec: &KeyRecord) -> Result<(), StoreError> {
        self.check_usable()?;
        let value = self.sealer.seal(rec)?;
        let key = record_db_key(&rec.key_id);
        self.write_durably("put", |db| db.put(&key, &value))?;
        self.note_view(rec);
        tracing::debug!(key_id = %rec.key_id, generation = rec.generation,
            status = ?rec.status, "stored key record");
        Ok(())
    }

    /// The data key as stored, wrapped under the master key.
    pub(crate) fn wrapped_data_key(&mut self) -> Result<Vec<u8>, StoreError> {
        self.raw_get(DATA_KEY_DB_KEY)?
            .ok_or_else(|| StoreError::Corrupt {
                key_id: seal::DATA_KEY_NAME.into(),
                reason: "the wrapped data key is missing".into(),
            })
    }

    /// A record was written: its metadata replaces the cached one (if the cache is built).
    fn note_view(&mut self, rec: &KeyRecord) {
        if let Some(views) = &mut self.views {
            views.insert(rec.key_id.clone(), rec.view());
        }
    }

    /// Every record's metadata, sorted by key id: no share is decrypted once the first call
    /// (which opens each record once) has built the cache.
    pub fn list_views(&mut self) -> Result<Vec<KeyRecordView>, StoreError> {
        self.check_usable()?;
        if self.views.is_none() {
            let views = self
                .list()?
                .iter()
                .map(|r| (r.key_id.clone(), r.view()))
                .collect();
            self.views = Some(views);
        }
        Ok(self
            .views
            .as_ref()
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default())
    }

    /// The metadata of `key_id`'s record, from the same cache as [`KeyStore::list_views`].
    pub fn view(&mut self, key_id: &KeyId) -> Result<Option<KeyRecordView>, StoreError> {
        Ok(self.list_views()?.into_iter().find(|v| &v.key_id == key_id))
    }

    /// [`KeyStore::put`] of a record that no longer holds the share the stored one held (a
    /// keygen the chain ended ERROR after this node stored its share): the old ciphertext is
    /// then compacted out of the live files as [`KeyStore::delete`] does, with the same
    /// guarantees and costs. A failed compaction poisons the store but returns `Ok`.
    pub fn put_erasing(&mut self, rec: &KeyRecord) -> Result<(), StoreError> {
        self.put(rec)?;
        let key = record_db_key(&rec.key_id);
        self.compact_out(&key, &key, "drop a share");
        Ok(())
    }

    /// If no record exists for `rec.key_id`, stores `rec` (durably) and returns `Ok(None)`;
    /// otherwise stores nothing and returns the existing record.
    ///
    /// An existing but corrupt record is an error, never overwritten.
    pub fn insert_if_absent(&mut self, rec: &KeyRecord) -> Result<Option<KeyRecord>, StoreError> {
        if let Some(existing) = self.get(&rec.key_id)? {
            return Ok(Some(existing));
        }
        self.put(rec)?;
        Ok(None)
    }

    /// Deletes the record of `key_id`; `true` if it existed. Durable when it returns.
    ///
    /// Then reopens the database (see the module docs: rusty-leveldb's compactions drop nothing
    /// once an iterator was used) and compacts the key's range twice (`DB::compact_range`, a
    /// manual compaction: never a "trivial move" of the old file). The first writes the
    /// memtable to a table, switches to a new log and merges the tables holding the key down
    /// the levels; the second merges the memtable's table too, which rusty-leveldb may place
    /// in a level deeper than the first call visits (it picks the levels before flushing).
    /// That drops the old values and the tombstone; the old log and tables are then unlinked.
    ///
    /// What this guarantees: the old ciphertexts of the key are in no live file of the store
    /// any more (checked by the test `store__should_erase_deleted_ciphertext_from_live_files`).
    /// What it does **not** guarantee: that the bytes are gone from the disk. Unlinked blocks
    /// are not overwritten, and SSD remapping, filesystem journals, snapshots and backups may
    /// keep copies. Those copies are ciphertext under the data key; destroying the data key
    /// (or the master key) is what makes them unreadable.
    ///
    /// Cost: tens of milliseconds (reopen, compaction, a dozen fsyncs); deletes are rare. The
    /// database lock is released for a moment during the reopen.
    ///
    /// A failed reopen or compaction leaves the delete in place (it was already durable) and
    /// poisons the store; the call still returns `Ok(true)`.
    pub fn delete(&mut self, key_id: &KeyId) -> Result<bool, StoreError> {
        self.check_usable()?;
        let key = record_db_key(key_id);
        if self.raw_get(&key)?.is_none() {
            return Ok(false);
        }
        self.erase(&key, "delete")?;
        if let Some(views) = &mut self.views {
            views.remove(key_id);
        }
        tracing::debug!(key_id = %key_id, "deleted key record");
        Ok(true)
    }

    /// Deletes database key `key` durably, then reopens and compacts its range so that its old
    /// values leave the live files (see [`KeyStore::delete`]). Only the delete itself can fail:
    /// a failed reopen or compaction poisons the store but returns `Ok`.
    fn erase(&mut self, key: &[u8], what: &str) -> Result<(), StoreError> {
        self.write_durably(what, |db| db.delete(key))?;
        self.compact_out(key, key, what);
        Ok(())
    }

    /// Reopens the database and compacts the range `from..=to` twice, so that overwritten and
    /// deleted values in it leave the live files (see [`KeyStore::delete`]). A failure poisons
    /// the store (the write before it was already durable) and is not returned.
    fn compact_out(&mut self, from: &[u8], to: &[u8], what: &str) {
        if let Err(e) = self.reopen_db() {
            let _ = self.poison(&format!("reopen after {what}"), e);
        } else if let Err(e) = self
            .db
            .compact_range(from, to)
            .and_then(|()| self.db.compact_range(from, to))
        {
            let _ = self.poison(&format!("compaction after {what}"), e);
        }
    }

    /// Every record, shares included, sorted by key id. Fails on the first corrupt record.
    pub fn list(&mut self) -> Result<Vec<KeyRecord>, StoreError> {
        self.check_usable()?;
        let mut it = self.db.new_iter().map_err(|e| db_err("iterate", e))?;
        it.seek(RECORD_PREFIX);
        let mut out = Vec::new();
        while let Some((k, v)) = it.current() {
            let Some(id) = k.strip_prefix(RECORD_PREFIX) else {
                break;
            };
            let key_id = record_key_id(id)?;
            out.push(self.sealer.open(&key_id, &v)?);
            if !it.advance() {
                break;
            }
        }
        Ok(out)
    }
}

/// Writes `bytes` to a new file `path` (mode 0600) so that after a crash `path` either holds
/// all of them or is as before: a temporary file in the same directory (created with `O_EXCL`),
/// fsynced, then renamed over `path` (`replace`) or hard-linked to it (fails with
/// [`io::ErrorKind::AlreadyExists`] if `path` exists), and the directory fsynced.
fn write_private_file(path: &Path, bytes: &[u8], replace: bool) -> Result<(), StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io {
            op,
            path: p,
            source,
        }
    };
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| StoreError::Config(format!("{} names no file", path.display())))?;
    let mut suffix = [0u8; 8];
    seal::fill_random(&mut suffix)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        if replace {
            std::fs::rename(&tmp, path).map_err(io("rename", path))
        } else {
            std::fs::hard_link(&tmp, path).map_err(io("link", path))
        }
    })();
    if written.is_err() || !replace {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir).map_err(io("fsync dir", dir))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, making the creation, rename or removal of its entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (mode 0700) if missing, and fsyncs its parent so that it stays.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io {
            op: "create dir",
            path: dir.to_path_buf(),
            source,
        })?;
    let parent = parent_dir(dir);
    sync_dir(parent).map_err(|source| StoreError::Io {
        op: "fsync dir",
        path: parent.to_path_buf(),
        source,
    })
}

/// Opens the LevelDB in `dir` on the durable `Env`.
/// The key id of a record's database key (after [`RECORD_PREFIX`]).
fn record_key_id(id: &[u8]) -> Result<KeyId, StoreError> {
    std::str::from_utf8(id)
        .ok()
        .and_then(|s| KeyId::new(s).ok())
        .ok_or_else(|| StoreError::Corrupt {
            key_id: String::from_utf8_lossy(id).into_owned(),
            reason: "database key is not a valid key id".into(),
        })
}

fn open_db(dir: &Path) -> rusty_leveldb::Result<DB> {
    let opts = Options {
        env: Rc::new(Box::new(durable_env::SyncEnv::new())),
        create_if_missing: true,
        ..Options::default()
    };
    DB::open(dir, opts)
}

/// `DB::get`, which takes no snapshot (see the module docs). It cannot report a read error, but
/// neither can `DB::get_at` in rusty-leveldb 4.0.2.
fn raw_get(db: &mut DB, db_key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(db.get(db_key).map(|b| b.to_vec()))
}

/// Unwraps the stored data key, or makes, wraps and durably stores one on first open.
fn load_or_create_data_key(
    db: &mut DB,
    master: &MasterKey,
    chain_id: &str,
    party: &NodeId,
) -> Result<aes_gcm::Aes256Gcm, StoreError> {
    if let Some(wrapped) = raw_get(db, DATA_KEY_DB_KEY)? {
        return match seal::unwrap_data_key(master, chain_id, party, &wrapped) {
            Err(StoreError::WrongMasterKey) => {
                rotate::finish_interrupted(db, master, chain_id, party)
            }
            other => other,
        };
    }
    // No data key: either a new store, or one that lost its data key. Never paper over the
    // latter with a fresh key (every record would become unreadable, silently).
    let mut it = db.new_iter().map_err(|e| db_err("iterate", e))?;
    let mut holds = |prefix: &[u8]| {
        it.seek(prefix);
        it.current().is_some_and(|(k, _)| k.starts_with(prefix))
    };
    if holds(RECORD_PREFIX) || holds(prime_sets::PRIME_SET_PREFIX) {
        return Err(StoreError::Corrupt {
            key_id: seal::DATA_KEY_NAME.into(),
            reason: "the data key is missing but the store holds records".into(),
        });
    }
    drop(it);
    let mut data_key = Zeroizing::new([0u8; 32]);
    seal::fill_random(data_key.as_mut_slice())?;
    let wrapped = seal::wrap_data_key(master, chain_id, party, &data_key)?;
    db.put(DATA_KEY_DB_KEY, &wrapped)
        .and_then(|()| db.flush())
        .map_err(|e| db_err("store data key", e))?;
    tracing::info!(chain_id, party = %party, "created the key store's data key");
    <aes_gcm::Aes256Gcm as aes_gcm::KeyInit>::new_from_slice(data_key.as_slice())
        .map_err(|e| StoreError::Bug(format!("AES-256-GCM key: {e}")))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod no_panic;
#[cfg(test)]
#[allow(non_snake_case)]
pub(super) mod tests {
    use std::time::{Duration, Instant};

    pub(crate) use super::record::tests::sample;
    use super::*;

    pub(crate) const CHAIN: &str = "seqmpc-test-1";

    /// A temp dir with a master key file and a store directory.
    pub(crate) struct TestStore {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) master: MasterKey,
    }

    impl TestStore {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
            TestStore { dir, master }
        }
        pub(crate) fn db_dir(&self) -> PathBuf {
            self.dir.path().join("keys")
        }
        pub(crate) fn key_file(&self) -> PathBuf {
            self.dir.path().join("master.key")
        }
    }

    pub(crate) fn node0() -> NodeId {
        NodeId::new("node0").unwrap()
    }

    pub(crate) fn open(t: &TestStore) -> KeyStore {
        KeyStore::open(&t.db_dir(), &t.master, CHAIN, &node0()).unwrap()
    }

    fn kid(s: &str) -> KeyId {
        KeyId::new(s).unwrap()
    }

    /// Opens the store's directory with plain rusty-leveldb (the store must be closed).
    fn raw_db(t: &TestStore) -> DB {
        DB::open(t.db_dir(), Options::default()).unwrap()
    }

    fn raw_value(t: &TestStore, key: &str) -> Vec<u8> {
        let mut db = raw_db(t);
        raw_get(&mut db, &record_db_key(&kid(key)))
            .unwrap()
            .unwrap()
    }

    fn raw_put(t: &TestStore, key: &str, value: &[u8]) {
        let mut db = raw_db(t);
        db.put(&record_db_key(&kid(key)), value).unwrap();
        db.close().unwrap();
    }

    fn assert_corrupt(res: Result<Option<KeyRecord>, StoreError>, key: &str) {
        match res {
            Err(StoreError::Corrupt { key_id, .. }) => assert_eq!(key_id, key),
            other => panic!("expected Corrupt for {key}, got {other:?}"),
        }
    }

    #[test]
    fn store__should_roundtrip_a_record_with_its_share() {
        let t = TestStore::new();
        let mut store = open(&t);
        let rec = sample("k1", &[0xab; 200]);
        store.put(&rec).unwrap();
        let got = store.get(&rec.key_id).unwrap().unwrap();
        assert_eq!(got.share.as_ref().unwrap().expose(), &[0xab; 200]);
        assert_eq!(format!("{:?}", got.view()), format!("{:?}", rec.view()));
        assert!(store.get(&kid("absent")).unwrap().is_none());

        // Overwrite with a new generation and no share.
        let mut next = rec.clone();
        next.generation = 4;
        next.share = None;
        next.status = ShareStatus::Error;
        next.error = Some("node2 sent an invalid package".into());
        store.put(&next).unwrap();
        let got = store.get(&rec.key_id).unwrap().unwrap();
        assert_eq!(got.generation, 4);
        assert!(got.share.is_none());
        assert_eq!(got.error.as_deref(), Some("node2 sent an invalid package"));
    }

    #[test]
    fn store__should_keep_records_after_reopen_with_the_key_loaded_from_its_file() {
        let t = TestStore::new();
        {
            let mut store = open(&t);
            store.put(&sample("k1", &[1; 32])).unwrap();
            store.put(&sample("k2", &[2; 32])).unwrap();
        }
        // Same process, same key object.
        let mut store = open(&t);
        assert_eq!(store.list().unwrap().len(), 2);
        drop(store);
        // As a new process would: load the key from disk.
        let master = MasterKey::load(&t.key_file()).unwrap();
        let mut store = KeyStore::open(&t.db_dir(), &master, CHAIN, &node0()).unwrap();
        let got = store.get(&kid("k2")).unwrap().unwrap();
        assert_eq!(got.share.unwrap().expose(), &[2; 32]);
    }

    #[test]
    fn store__should_have_written_a_put_before_returning() {
        // Copy the directory while the store is open (as after a crash of the process: nothing
        // from Drop ran) and open the copy.
        let t = TestStore::new();
        let mut store = open(&t);
        store.put(&sample("k1", &[7; 32])).unwrap();
        let copy = t.dir.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for e in std::fs::read_dir(t.db_dir()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        let mut copied = KeyStore::open(&copy, &t.master, CHAIN, &node0()).unwrap();
        let got = copied.get(&kid("k1")).unwrap().unwrap();
        assert_eq!(got.share.unwrap().expose(), &[7; 32]);
        drop(store);
    }

    #[test]
    fn store__should_refuse_a_wrong_master_key() {
        let t = TestStore::new();
        drop(open(&t));
        let other = MasterKey::generate().unwrap();
        let err = KeyStore::open(&t.db_dir(), &other, CHAIN, &node0()).unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
        // The failed open released the lock: the right key still works.
        drop(open(&t));
    }

    #[test]
    fn store__should_refuse_another_chain_or_node() {
        let t = TestStore::new();
        drop(open(&t));
        let err = KeyStore::open(&t.db_dir(), &t.master, "other-chain", &node0()).unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
        let node1 = NodeId::new("node1").unwrap();
        let err = KeyStore::open(&t.db_dir(), &t.master, CHAIN, &node1).unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
    }

    #[test]
    fn store__should_refuse_a_second_open_of_the_same_dir() {
        let t = TestStore::new();
        let _store = open(&t);
        let err = KeyStore::open(&t.db_dir(), &t.master, CHAIN, &node0()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn store__should_report_corrupt_when_a_stored_byte_is_flipped() {
        let t = TestStore::new();
        drop({
            let mut s = open(&t);
            s.put(&sample("k1", &[3; 32])).unwrap();
            s
        });
        let good = raw_value(&t, "k1");
        // Schema version, generation, nonce, ciphertext (share region), tag.
        for pos in [0, 5, 12, 40, good.len() - 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            raw_put(&t, "k1", &bad);
            assert_corrupt(open(&t).get(&kid("k1")), "k1");
            assert!(matches!(open(&t).list(), Err(StoreError::Corrupt { .. })));
        }
        raw_put(&t, "k1", &good[..10]);
        assert_corrupt(open(&t).get(&kid("k1")), "k1");
        raw_put(&t, "k1", &[]);
        assert_corrupt(open(&t).get(&kid("k1")), "k1");
        raw_put(&t, "k1", &good);
        assert!(open(&t).get(&kid("k1")).unwrap().is_some());
    }

    #[test]
    fn store__should_report_corrupt_when_a_value_is_copied_to_another_key() {
        let t = TestStore::new();
        drop({
            let mut s = open(&t);
            s.put(&sample("key-a", &[0xaa; 32])).unwrap();
            s.put(&sample("key-b", &[0xbb; 32])).unwrap();
            s
        });
        let a = raw_value(&t, "key-a");
        raw_put(&t, "key-b", &a);
        let mut store = open(&t);
        assert_corrupt(store.get(&kid("key-b")), "key-b");
        assert!(store.get(&kid("key-a")).unwrap().is_some());
    }

    #[test]
    fn store__should_accept_an_older_generation_copied_back_over_a_newer_one() {
        // KNOWN LIMIT, asserted so that it stays visible: the associated data binds the
        // generation written in the value's own header, not an expected generation kept
        // elsewhere, so a value from an earlier put of the same key id authenticates. Neither
        // does anything detect two values of one generation. Rollback is detectable only
        // against a source the attacker cannot roll back with the store (the chain: the key's
        // session id and public key there; issue 5's `diverged` flag).
        let t = TestStore::new();
        let mut old = sample("k1", &[1; 32]);
        old.status = ShareStatus::Pending;
        old.share = None;
        drop({
            let mut s = open(&t);
            s.put(&old).unwrap();
            s
        });
        let older = raw_value(&t, "k1");
        let mut newer = sample("k1", &[2; 32]);
        newer.generation = old.generation + 1;
        open(&t).put(&newer).unwrap();
        raw_put(&t, "k1", &older);
        let got = open(&t).get(&kid("k1")).unwrap().unwrap();
        assert_eq!(got.generation, old.generation);
        assert_eq!(got.status, ShareStatus::Pending);
        assert!(got.share.is_none());
    }

    #[test]
    fn store__should_refuse_to_replace_a_lost_data_key() {
        let t = TestStore::new();
        drop({
            let mut s = open(&t);
            s.put(&sample("k1", &[1; 32])).unwrap();
            s
        });
        let mut db = raw_db(&t);
        db.delete(DATA_KEY_DB_KEY).unwrap();
        db.close().unwrap();
        drop(db);
        let err = KeyStore::open(&t.db_dir(), &t.master, CHAIN, &node0()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { ref key_id, .. } if key_id == "<data key>"),
            "{err}"
        );
    }

    #[test]
    fn store__should_list_records_sorted_by_key_id() {
        let t = TestStore::new();
        let mut store = open(&t);
        assert!(store.list().unwrap().is_empty());
        for k in ["zeta", "Alpha", "k10", "k2", "k1", "a.b", "a-b", "a_b"] {
            store.put(&sample(k, &[1; 8])).unwrap();
        }
        let ids: Vec<String> = store
            .list()
            .unwrap()
            .iter()
            .map(|r| r.key_id.to_string())
            .collect();
        let mut expected = ids.clone();
        expected.sort_by_key(|a| kid(a));
        assert_eq!(ids, expected);
        assert_eq!(ids.len(), 8);
        assert_eq!(ids.first().map(String::as_str), Some("Alpha"));
        assert_eq!(ids.last().map(String::as_str), Some("zeta"));
    }

    #[test]
    fn store__should_return_true_then_false_when_deleting() {
        let t = TestStore::new();
        let mut store = open(&t);
        store.put(&sample("k1", &[1; 8])).unwrap();
        store.put(&sample("k2", &[2; 8])).unwrap();
        assert!(store.delete(&kid("k1")).unwrap());
        assert!(!store.delete(&kid("k1")).unwrap());
        assert!(store.get(&kid("k1")).unwrap().is_none());
        drop(store);
        let mut store = open(&t);
        assert!(store.get(&kid("k1")).unwrap().is_none());
        assert!(store.get(&kid("k2")).unwrap().is_some());
    }

    /// Whether any file of `dir` contains `needle`.
    fn dir_contains(dir: &Path, needle: &[u8]) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let bytes = std::fs::read(e.path()).unwrap();
                bytes
                    .windows(needle.len())
                    .any(|w| w == needle)
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
            .collect()
    }

    #[test]
    fn store__should_erase_deleted_ciphertext_from_live_files() {
        let t = TestStore::new();
        let mut store = open(&t);
        // Some history: the value to delete ends up both in tables and in the log.
        store.put(&sample("doomed", &[0xd0; 64])).unwrap();
        store.put(&sample("kept", &[0x4b; 64])).unwrap();
        store.db.compact_range(b"a", b"z").unwrap();
        store.put(&sample("doomed", &[0xd1; 64])).unwrap();
        drop(store);
        let value = raw_value(&t, "doomed");
        let needle = &value[value.len() - 32..];
        let mut store = open(&t);
        assert!(!dir_contains(&t.db_dir(), needle).is_empty(), "sanity");
        // An iterator (list) before the delete: the case where rusty-leveldb's compactions would
        // otherwise keep everything.
        assert_eq!(store.list().unwrap().len(), 2);

        assert!(store.delete(&kid("doomed")).unwrap());
        let found = dir_contains(&t.db_dir(), needle);
        assert!(found.is_empty(), "old ciphertext still in {found:?}");
        assert!(store.get(&kid("kept")).unwrap().is_some());
        drop(store);
        assert!(open(&t).get(&kid("kept")).unwrap().is_some());
    }

    #[test]
    fn store__should_list_metadata_without_decrypting_and_keep_it_current() {
        let t = TestStore::new();
        let mut s = open(&t);
        s.put(&sample("a", &[0xa1; 64])).unwrap();
        s.put(&sample("b", &[0xb1; 64])).unwrap();
        s.put(&sample("c", &[0xc1; 64])).unwrap();
        assert_eq!(s.list_views().unwrap().len(), 3);
        // Every kind of record write keeps the listing current.
        let mut a = sample("a", &[0xa2; 64]);
        (a.status, a.share) = (ShareStatus::Error, None);
        s.put_erasing(&a).unwrap();
        assert!(s.delete(&kid("b")).unwrap());
        assert!(s
            .insert_if_absent(&sample("d", &[0xd1; 64]))
            .unwrap()
            .is_none());
        let mut next = sample("c", &[0xc2; 64]);
        next.generation += 1;
        s.put_staged(&next).unwrap();
        s.promote_staged(&kid("c"), next.generation)
            .unwrap()
            .unwrap();
        // Listing opens no record any more, however often it is asked.
        let opened = s.sealer.opened.get();
        for _ in 0..20 {
            s.list_views().unwrap();
            s.view(&kid("c")).unwrap().unwrap();
        }
        assert_eq!(
            s.sealer.opened.get(),
            opened,
            "the listing decrypted records"
        );
        let json = |v: Vec<KeyRecordView>| serde_json::to_value(v).unwrap();
        let cached = json(s.list_views().unwrap());
        let fresh = json(s.list().unwrap().iter().map(|r| r.view()).collect());
        assert_eq!(cached, fresh);
        let c = s.view(&kid("c")).unwrap().unwrap();
        assert_eq!(
            (c.generation, c.status),
            (next.generation, ShareStatus::Ready)
        );
        assert!(s.view(&kid("b")).unwrap().is_none());
    }

    #[test]
    fn store__should_erase_a_dropped_share_from_live_files() {
        let t = TestStore::new();
        let mut store = open(&t);
        store.put(&sample("failed", &[0xe0; 64])).unwrap();
        store.db.compact_range(b"a", b"z").unwrap();
        let value = raw_get(&mut store.db, &record_db_key(&kid("failed")))
            .unwrap()
            .unwrap();
        let needle = &value[value.len() - 32..];
        assert_eq!(store.list().unwrap().len(), 1);
        // The chain ended the keygen ERROR: the record stays, without its share.
        let mut rec = store.get(&kid("failed")).unwrap().unwrap();
        (rec.status, rec.share) = (ShareStatus::Error, None);
        store.put_erasing(&rec).unwrap();
        let found = dir_contains(&t.db_dir(), needle);
        assert!(
            found.is_empty(),
            "the dropped share's ciphertext is still in {found:?}"
        );
        drop(store);
        let back = open(&t).get(&kid("failed")).unwrap().unwrap();
        assert_eq!(
            (back.status, back.share.is_none()),
            (ShareStatus::Error, true)
        );
    }

    #[test]
    fn store__should_erase_a_deleted_value_that_only_the_log_held() {
        // Put then delete with no compaction in between: at the reopen the log is replayed
        // into the memtable, whose flush by the first compaction lands in a level the same
        // compaction does not visit (rusty-leveldb picks the levels before flushing).
        let t = TestStore::new();
        let mut store = open(&t);
        store.put(&sample("fresh", &[0xf0; 64])).unwrap();
        let value = raw_get(&mut store.db, &record_db_key(&kid("fresh")))
            .unwrap()
            .unwrap();
        let needle = &value[value.len() - 32..];
        assert!(store.delete(&kid("fresh")).unwrap());
        let found = dir_contains(&t.db_dir(), needle);
        assert!(found.is_empty(), "old ciphertext still in {found:?}");
    }

    #[test]
    fn store__should_insert_if_absent_only_once() {
        let t = TestStore::new();
        let mut store = open(&t);
        let first = sample("k1", &[1; 8]);
        assert!(store.insert_if_absent(&first).unwrap().is_none());
        let mut second = sample("k1", &[2; 8]);
        second.generation = 9;
        let existing = store.insert_if_absent(&second).unwrap().unwrap();
        assert_eq!(existing.generation, first.generation);
        let stored = store.get(&kid("k1")).unwrap().unwrap();
        assert_eq!(stored.share.unwrap().expose(), &[1; 8]);
    }

    #[test]
    fn store__should_create_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let t = TestStore::new();
        let mut store = open(&t);
        store.put(&sample("k1", &[1; 8])).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&t.db_dir()), 0o700);
        for e in std::fs::read_dir(t.db_dir()).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == "LOCK") {
                continue; // created by rusty-leveldb's own lock code
            }
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }

    #[test]
    fn store__should_time_durable_puts() {
        // Not a benchmark: prints what one durable put costs on this disk (run with
        // --nocapture), next to rusty-leveldb's own put + flush, which does not fsync.
        const N: usize = 50;
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let t = TestStore::new();
        let mut store = open(&t);
        let rec = sample("timed", &[9; 300]);
        let mut durable = Vec::new();
        for _ in 0..N {
            let start = Instant::now();
            store.put(&rec).unwrap();
            durable.push(start.elapsed());
        }
        let plain_dir = tempfile::tempdir().unwrap();
        let mut plain = DB::open(plain_dir.path(), Options::default()).unwrap();
        let value = store.sealer.seal(&rec).unwrap();
        let mut unsynced = Vec::new();
        for _ in 0..N {
            let start = Instant::now();
            plain.put(b"r/timed", &value).unwrap();
            plain.flush().unwrap();
            unsynced.push(start.elapsed());
        }
        let mut get = Vec::new();
        for _ in 0..N {
            let start = Instant::now();
            store.get(&rec.key_id).unwrap().unwrap();
            get.push(start.elapsed());
        }
        let mut delete = Vec::new();
        for i in 0..10 {
            let rec = sample(&format!("gone{i}"), &[1; 300]);
            store.put(&rec).unwrap();
            let start = Instant::now();
            assert!(store.delete(&rec.key_id).unwrap());
            delete.push(start.elapsed());
        }
        println!(
            "key store, median of {N}: durable put {:?} (max {:?}); rusty-leveldb put+flush \
             without fsync {:?}; get (decrypt) {:?}; delete (reopen + compaction) {:?}",
            median(durable.clone()),
            durable.iter().max().unwrap(),
            median(unsynced),
            median(get),
            median(delete),
        );
    }
}
