//! Encrypted backups of a key store, and their restore.
//!
//! # File format (version 1)
//! Each length-prefixed part is a u64 BE length then its bytes.
//!
//! ```text
//! header = BACKUP_MAGIC || BACKUP_VERSION (1 byte) || chain id || node id || wrapped data key
//! file   = header || nonce (12) || AES-256-GCM(data key, body) || tag (16)
//! body   = entry count (u64 BE) || (database key || value)*     (sorted by database key)
//! ```
//!
//! The body's associated data binds `BACKUP_TAG`, the whole header, the chain id and the node
//! id (`seal::Sealer::seal_backup`), so one AEAD covers the whole file: a flipped byte, a cut,
//! or a header edited to name another chain or node fails authentication. The entries are the
//! store's values exactly as stored (key records `r/...` and prime sets `p/...`), each already
//! sealed under the data key; the data key is in the file only wrapped under the master key.
//! So a backup holds no plaintext secret, and **restoring it needs the master key that was
//! current when it was made** (after `rotate-master-key`, older backups need the old key:
//! keep each master key as long as backups made under it, and apart from them). The key ids
//! are inside the encrypted body, not in clear; the chain id and node id are in clear (so a
//! restore on the wrong node can say which node the backup is for).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rusty_leveldb::{LdbIterator, WriteBatch};

use super::prime_sets::{PrimeSetId, PRIME_SET_PREFIX};
use super::{
    create_dir, db_err, open_err, parent_dir, seal, sync_dir, KeyStore, MasterKey, StoreError,
    DATA_KEY_DB_KEY, RECORD_PREFIX,
};
use crate::proto::NodeId;

/// First bytes of a backup file. Do not change without a migration.
pub const BACKUP_MAGIC: &[u8] = b"seqmpc-keystore-backup\n";
/// Format version, after the magic (and so bound into the AEAD). Do not change without a
/// migration.
pub const BACKUP_VERSION: u8 = 1;
/// Upper bound on a backup file (a key store holds KBs per key).
const MAX_BACKUP_BYTES: u64 = 1 << 30;
/// Upper bound on each clear header field (chain id, node id, wrapped data key).
const MAX_HEADER_FIELD: usize = 4096;

/// What [`KeyStore::write_backup`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Key records in the backup.
    pub records: usize,
    /// Safe-prime sets in the backup.
    pub prime_sets: usize,
    /// Size of the file.
    pub bytes: usize,
}

/// What [`restore_backup`] restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Key records restored (each opened and checked before anything was written).
    pub records: usize,
    /// Safe-prime sets restored (each opened and checked).
    pub prime_sets: usize,
    /// Where the store that was replaced was moved (with `force`), if there was one.
    pub replaced: Option<PathBuf>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

/// Bounds-checked reader; every failure is a [`StoreError::Backup`], never a panic.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StoreError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or_else(|| {
            StoreError::Backup(format!(
                "truncated at {what} (need {n} bytes, {} left)",
                self.rest.len()
            ))
        })?;
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        let b = self.take(8, what)?;
        let a = <[u8; 8]>::try_from(b)
            .map_err(|_| StoreError::Backup(format!("bad length at {what}")))?;
        Ok(u64::from_be_bytes(a))
    }

    fn bytes(&mut self, what: &str, max: usize) -> Result<&'a [u8], StoreError> {
        let n = self.u64(what)?;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| StoreError::Backup(format!("{what} length {n} is implausible")))?;
        self.take(n, what)
    }
}

/// The clear part of a backup file, parsed.
struct Header<'a> {
    /// The header's bytes (bound into the body's associated data).
    raw: &'a [u8],
    chain_id: &'a [u8],
    node_id: &'a [u8],
    wrapped_data_key: &'a [u8],
    /// What follows the header: nonce, ciphertext, tag.
    sealed: &'a [u8],
}

fn parse_header(file: &[u8]) -> Result<Header<'_>, StoreError> {
    if !file.starts_with(BACKUP_MAGIC) {
        return Err(StoreError::Backup(
            "not a seqmpc key store backup (bad magic)".into(),
        ));
    }
    let mut r = Reader { rest: file };
    r.take(BACKUP_MAGIC.len(), "magic")?;
    let version = r.take(1, "version")?;
    if version != [BACKUP_VERSION] {
        return Err(StoreError::Backup(format!(
            "unsupported backup version {version:?}, this build reads {BACKUP_VERSION}"
        )));
    }
    let chain_id = r.bytes("chain id", MAX_HEADER_FIELD)?;
    let node_id = r.bytes("node id", MAX_HEADER_FIELD)?;
    let wrapped_data_key = r.bytes("wrapped data key", MAX_HEADER_FIELD)?;
    let header_len = file.len().saturating_sub(r.rest.len());
    let raw = file
        .get(..header_len)
        .ok_or_else(|| StoreError::Bug("backup header length".into()))?;
    Ok(Header {
        raw,
        chain_id,
        node_id,
        wrapped_data_key,
        sealed: r.rest,
    })
}

/// One database entry of a backup, checked.
enum Entry {
    Record(super::KeyRecordView),
    PrimeSet,
}

/// How [`restore_backup`] treats what it finds.
#[derive(Default)]
pub struct RestoreOptions<'a> {
    /// Replace a store that holds records or prime sets (moved aside, never deleted).
    pub force: bool,
    /// Called for every record of the backup (without its secret) before anything is written;
    /// an `Err` refuses the restore ([`StoreError::BackupRefused`], with every refusal).
    /// `mpcd restore` refuses shares older than the chain's generation of their key here.
    #[allow(clippy::type_complexity)]
    pub check_record: Option<&'a dyn Fn(&super::KeyRecordView) -> Result<(), String>>,
}

/// Opens the value stored under database key `key` as the store would: a key record or a prime
/// set, nothing else.
fn check_entry(sealer: &seal::Sealer, key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
    if let Some(id) = key.strip_prefix(RECORD_PREFIX) {
        let rec = sealer.open(&super::record_key_id(id)?, value)?;
        Ok(Entry::Record(rec.view()))
    } else if key.starts_with(PRIME_SET_PREFIX) {
        let id = PrimeSetId::from_db_key(key)?;
        sealer.open_prime_set(&id, value)?;
        Ok(Entry::PrimeSet)
    } else {
        Err(StoreError::Corrupt {
            key_id: String::from_utf8_lossy(key).into_owned(),
            reason: "not a key record or prime set: this build does not know how to check it"
                .into(),
        })
    }
}

impl KeyStore {
    /// Writes an encrypted backup of the whole store to `out` (a new file, mode 0600, written
    /// durably: temp file, fsync, link, fsync dir). Every value is opened first, so a corrupt
    /// store fails with [`StoreError::Corrupt`] instead of producing a bad backup. See the module
    /// docs of `backup` for the format and what restoring needs.
    ///
    /// Refuses to overwrite an existing `out` ([`StoreError::Config`]).
    pub fn write_backup(&mut self, out: &Path) -> Result<BackupSummary, StoreError> {
        self.check_usable()?;
        if out.exists() {
            return Err(StoreError::Config(format!(
                "{} already exists; refusing to overwrite it",
                out.display()
            )));
        }
        let wrapped = self.wrapped_data_key()?;
        let mut entries = Vec::new();
        {
            let mut it = self.db.new_iter().map_err(|e| db_err("iterate", e))?;
            it.seek(b"");
            while let Some((k, v)) = it.current() {
                if !k.starts_with(b"m/") {
                    entries.push((k.to_vec(), v.to_vec()));
                }
                if !it.advance() {
                    break;
                }
            }
        }
        let (mut records, mut prime_sets) = (0usize, 0usize);
        let mut body = Vec::new();
        body.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (k, v) in &entries {
            match check_entry(&self.sealer, k, v)? {
                Entry::Record(_) => records = records.saturating_add(1),
                Entry::PrimeSet => prime_sets = prime_sets.saturating_add(1),
            }
            put_bytes(&mut body, k);
            put_bytes(&mut body, v);
        }
        let mut file = BACKUP_MAGIC.to_vec();
        file.push(BACKUP_VERSION);
        put_bytes(&mut file, self.sealer.chain_id().as_bytes());
        put_bytes(&mut file, self.sealer.party().as_str().as_bytes());
        put_bytes(&mut file, &wrapped);
        let sealed = self.sealer.seal_backup(&file, &body)?;
        file.extend_from_slice(&sealed);
        super::write_private_file(out, &file, false)?;
        tracing::info!(path = %out.display(), records, prime_sets, "wrote key store backup");
        Ok(BackupSummary {
            records,
            prime_sets,
            bytes: file.len(),
        })
    }
}

/// Restores the backup file `from` into the store directory `dir`, for `chain_id` and this
/// node (`party`). The restored store is under `master`; the backup is opened with
/// `backup_master` if given (a backup made before a master key rotation: its data key is then
/// re-wrapped under `master`), else with `master`.
///
/// Before anything is written: the file must parse, name `chain_id` and `party`
/// ([`StoreError::BackupIdentity`]), its data key must unwrap under that key
/// ([`StoreError::BackupWrongMasterKey`]), its whole body must authenticate
/// ([`StoreError::Backup`]) and every entry must open ([`StoreError::Corrupt`]). A store already
/// in `dir` that holds any record or prime set, or does not open, is replaced only with `force`
/// ([`StoreError::StoreNotEmpty`]), and never while another process holds it
/// ([`StoreError::Locked`]).
///
/// Writing: the entries go to a fresh database next to `dir` (durably), which is then opened
/// and checked like a store; then a store in `dir` is moved aside to `<dir>.replaced-<random>`
/// (never deleted, unless it held no record and no prime set) and the new one renamed to `dir`,
/// and the parent directory fsynced. A crash
/// between the two renames leaves `dir` missing, the old store aside and the restored one in
/// `.<dir>.restore-<random>`; rename it to `dir` by hand.
pub fn restore_backup(
    dir: &Path,
    master: &MasterKey,
    backup_master: Option<&MasterKey>,
    chain_id: &str,
    party: &NodeId,
    from: &Path,
    opts: &RestoreOptions<'_>,
) -> Result<RestoreSummary, StoreError> {
    let force = opts.force;
    let io = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source: io::Error| StoreError::Io { op, path, source }
    };
    let len = fs::metadata(from).map_err(io("stat", from))?.len();
    if len > MAX_BACKUP_BYTES {
        return Err(StoreError::Backup(format!(
            "{len} bytes is more than a backup can be ({MAX_BACKUP_BYTES})"
        )));
    }
    let file = fs::read(from).map_err(io("read", from))?;
    let header = parse_header(&file)?;
    if header.chain_id != chain_id.as_bytes() || header.node_id != party.as_str().as_bytes() {
        return Err(StoreError::BackupIdentity {
            backup_chain: String::from_utf8_lossy(header.chain_id).into_owned(),
            backup_node: String::from_utf8_lossy(header.node_id).into_owned(),
            chain: chain_id.to_owned(),
            node: party.to_string(),
        });
    }
    let opener = backup_master.unwrap_or(master);
    let data_key =
        match seal::unwrap_data_key_bytes(opener, chain_id, party, header.wrapped_data_key) {
            Err(StoreError::WrongMasterKey) => return Err(StoreError::BackupWrongMasterKey),
            Err(StoreError::Corrupt { reason, .. }) => {
                return Err(StoreError::Backup(format!("wrapped data key: {reason}")))
            }
            other => other?,
        };
    let cipher = seal::data_key_cipher(&data_key)?;
    // The restored store is under `master`: re-wrap when the backup was made under another key.
    let wrapped = match backup_master {
        None => header.wrapped_data_key.to_vec(),
        Some(_) => seal::wrap_data_key(master, chain_id, party, &data_key)?,
    };
    drop(data_key);
    let sealer = seal::Sealer::new(cipher, chain_id, party);
    let body = sealer
        .open_backup(header.raw, header.sealed)
        .map_err(StoreError::Backup)?;

    // Parse and check every entry.
    let mut r = Reader { rest: &body };
    let count = r.u64("entry count")?;
    let mut entries: Vec<(&[u8], &[u8])> = Vec::new();
    let (mut records, mut prime_sets) = (0usize, 0usize);
    let mut refused = Vec::new();
    for _ in 0..count {
        let k = r.bytes("entry key", MAX_HEADER_FIELD)?;
        let v = r.bytes("entry value", usize::MAX)?;
        if entries.last().is_some_and(|(prev, _)| *prev >= k) {
            return Err(StoreError::Backup(
                "entries not in strictly increasing key order".into(),
            ));
        }
        match check_entry(&sealer, k, v)? {
            Entry::Record(view) => {
                records = records.saturating_add(1);
                if let Some(Err(why)) = opts.check_record.map(|check| check(&view)) {
                    refused.push(format!("{}: {why}", view.key_id));
                }
            }
            Entry::PrimeSet => prime_sets = prime_sets.saturating_add(1),
        }
        entries.push((k, v));
    }
    if !r.rest.is_empty() {
        return Err(StoreError::Backup(format!(
            "{} bytes after the last entry",
            r.rest.len()
        )));
    }

    if !refused.is_empty() {
        return Err(StoreError::BackupRefused(refused));
    }

    let existing = existing_store(dir, master, chain_id, party)?;
    if let (Some(what), false) = (&existing, force) {
        return Err(StoreError::StoreNotEmpty {
            path: dir.to_path_buf(),
            what: what.clone(),
        });
    }

    // Write a fresh database next to `dir`, then check it opens as a store.
    let parent = parent_dir(dir);
    let name = dir
        .file_name()
        .ok_or_else(|| StoreError::Config(format!("{} names no directory", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let mut suffix = [0u8; 8];
    seal::fill_random(&mut suffix)?;
    let tmp = parent.join(format!(".{name}.restore-{}", hex::encode(suffix)));
    let written =
        write_store(&tmp, &wrapped, &entries, master, chain_id, party).and_then(|counts| {
            match counts == (records, prime_sets) {
                true => Ok(()),
                false => Err(StoreError::Bug(format!(
                    "restored store holds {counts:?} records and prime sets, the backup \
                 {records} and {prime_sets}"
                ))),
            }
        });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    let replaced = if dir.exists() {
        let aside = parent.join(format!("{name}.replaced-{}", hex::encode(suffix)));
        fs::rename(dir, &aside).map_err(io("rename", dir))?;
        Some(aside)
    } else {
        None
    };
    fs::rename(&tmp, dir).map_err(io("rename", &tmp))?;
    sync_dir(parent).map_err(io("fsync dir", parent))?;
    // A store with no record and no prime set (a data key that sealed nothing) is not kept.
    let replaced = match (replaced, existing) {
        (Some(aside), None) => {
            fs::remove_dir_all(&aside).map_err(io("remove", &aside))?;
            None
        }
        (replaced, _) => replaced,
    };
    tracing::info!(dir = %dir.display(), records, prime_sets, replaced = ?replaced,
        "restored key store from backup");
    Ok(RestoreSummary {
        records,
        prime_sets,
        replaced,
    })
}

/// Writes the backup's entries and wrapped data key to a new database in `tmp` (durably), then
/// opens it as a store and returns how many records and prime sets it holds.
fn write_store(
    tmp: &Path,
    wrapped_data_key: &[u8],
    entries: &[(&[u8], &[u8])],
    master: &MasterKey,
    chain_id: &str,
    party: &NodeId,
) -> Result<(usize, usize), StoreError> {
    create_dir(tmp)?;
    {
        let mut db = super::open_db(tmp).map_err(|e| open_err(tmp, e))?;
        let mut batch = WriteBatch::default();
        batch.put(DATA_KEY_DB_KEY, wrapped_data_key);
        for (k, v) in entries {
            batch.put(k, v);
        }
        db.write(batch, false)
            .and_then(|()| db.flush())
            .and_then(|()| db.close())
            .map_err(|e| db_err("write the restored store", e))?;
    }
    let mut check = KeyStore::open(tmp, master, chain_id, party)?;
    Ok((check.list()?.len(), check.count_prime_sets()?))
}

/// What the store in `dir` holds, if it holds anything: `None` for no directory, an empty one,
/// or a store with no record and no prime set. [`StoreError::Locked`] if another process has it
/// open.
fn existing_store(
    dir: &Path,
    master: &MasterKey,
    chain_id: &str,
    party: &NodeId,
) -> Result<Option<String>, StoreError> {
    let mut listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                op: "read dir",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if listing.next().is_none() {
        return Ok(None);
    }
    let mut store = match KeyStore::open(dir, master, chain_id, party) {
        Ok(s) => s,
        Err(e @ StoreError::Locked { .. }) => return Err(e),
        Err(e) => return Ok(Some(format!("a store that does not open: {e}"))),
    };
    let records = match store.list() {
        Ok(r) => r.len(),
        Err(e) => return Ok(Some(format!("records that do not open: {e}"))),
    };
    let prime_sets = store.count_prime_sets()?;
    Ok((records > 0 || prime_sets > 0)
        .then(|| format!("{records} key records, {prime_sets} prime sets")))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests;
