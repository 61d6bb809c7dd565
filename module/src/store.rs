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
pub(super) mod tests;
