//! A rusty-leveldb [`Env`] that makes what the database flushes durable.
//!
//! rusty-leveldb 4.0.2 never calls `fsync`: `DB::flush()` only flushes the `BufWriter` in front of
//! the write-ahead log. This module is our answer, chosen after reading its source:
//!
//! * Every file the database opens for writing (log, table, MANIFEST, the temporary file that
//!   becomes CURRENT, the info LOG) comes from [`Env::open_writable_file`] or
//!   [`Env::open_appendable_file`]. We hand out a [`SyncOnFlush`] file whose `flush()` is
//!   `fdatasync`. The database already calls `flush()` exactly where a sync is due:
//!   `DB::flush()` on the log (we call it after every write), `TableBuilder::finish()` on every
//!   new table before the MANIFEST names it, and `VersionSet::log_and_apply()` on the MANIFEST
//!   after each edit. So one durable put costs one `fdatasync` of the log.
//! * `set_current_file` writes the temporary CURRENT file without flushing and renames it, so
//!   [`Env::rename`] fsyncs the source before renaming and the directory after.
//! * New files and removed files change the directory, so [`Env::open_writable_file`] and
//!   [`Env::delete`] fsync the directory (new files only appear on log rotation, compaction and
//!   open: rare).
//! * Files are created with mode 0600.
//!
//! The alternative, fsyncing the log, MANIFEST, CURRENT and directory from outside after each
//! `DB::flush()`, needs the log's file number (private in rusty-leveldb) or a directory scan per
//! write, and would miss tables written by compactions. The `Env` sees every file and every
//! flush, and costs nothing when no sync is due.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusty_leveldb::env::{Env, FileLock, Logger, RandomAccess};
use rusty_leveldb::{PosixDiskEnv, Status};

use super::{parent_dir, sync_dir};

/// [`PosixDiskEnv`] with durable flushes, renames, creations and deletions.
pub(super) struct SyncEnv {
    inner: PosixDiskEnv,
}

impl SyncEnv {
    pub(super) fn new() -> Self {
        SyncEnv {
            inner: PosixDiskEnv::new(),
        }
    }
}

/// A file whose `flush()` is `fdatasync`: rusty-leveldb wraps it in a `BufWriter`, and
/// `BufWriter::flush` writes its buffer and then flushes (here: syncs) the file.
struct SyncOnFlush(File);

impl Write for SyncOnFlush {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

fn status(op: &str, p: &Path, e: io::Error) -> Status {
    Status::from(e).annotate(format!("{op} {}", p.display()))
}

fn sync_parent(op: &str, p: &Path) -> rusty_leveldb::Result<()> {
    let dir = parent_dir(p);
    sync_dir(dir).map_err(|e| status(op, dir, e))
}

impl Env for SyncEnv {
    fn open_sequential_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Read>> {
        self.inner.open_sequential_file(p)
    }

    fn open_random_access_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn RandomAccess>> {
        self.inner.open_random_access_file(p)
    }

    fn open_writable_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Write>> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(p)
            .map_err(|e| status("open (write)", p, e))?;
        sync_parent("fsync dir after create", p)?;
        Ok(Box::new(SyncOnFlush(f)))
    }

    fn open_appendable_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Write>> {
        let existed = p.exists();
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(p)
            .map_err(|e| status("open (append)", p, e))?;
        if !existed {
            sync_parent("fsync dir after create", p)?;
        }
        Ok(Box::new(SyncOnFlush(f)))
    }

    fn exists(&self, p: &Path) -> rusty_leveldb::Result<bool> {
        self.inner.exists(p)
    }

    fn children(&self, p: &Path) -> rusty_leveldb::Result<Vec<PathBuf>> {
        self.inner.children(p)
    }

    fn size_of(&self, p: &Path) -> rusty_leveldb::Result<usize> {
        self.inner.size_of(p)
    }

    fn delete(&self, p: &Path) -> rusty_leveldb::Result<()> {
        fs::remove_file(p).map_err(|e| status("delete", p, e))?;
        sync_parent("fsync dir after delete", p)
    }

    fn mkdir(&self, p: &Path) -> rusty_leveldb::Result<()> {
        self.inner.mkdir(p)
    }

    fn rmdir(&self, p: &Path) -> rusty_leveldb::Result<()> {
        self.inner.rmdir(p)
    }

    fn rename(&self, old: &Path, new: &Path) -> rusty_leveldb::Result<()> {
        // The contents must be durable before the new name points at them (CURRENT is written
        // without a flush). fsync through a fresh descriptor syncs the file's dirty pages.
        File::open(old)
            .and_then(|f| f.sync_all())
            .map_err(|e| status("fsync before rename", old, e))?;
        fs::rename(old, new).map_err(|e| status("rename", old, e))?;
        sync_parent("fsync dir after rename", new)
    }

    fn lock(&self, p: &Path) -> rusty_leveldb::Result<FileLock> {
        self.inner.lock(p)
    }

    fn unlock(&self, l: FileLock) -> rusty_leveldb::Result<()> {
        self.inner.unlock(l)
    }

    fn new_logger(&self, p: &Path) -> rusty_leveldb::Result<Logger> {
        // The info log is diagnostics (file numbers, compaction summaries, never values): no
        // syncing needed.
        self.inner.new_logger(p)
    }

    fn micros(&self) -> u64 {
        self.inner.micros()
    }

    fn sleep_for(&self, micros: u32) {
        self.inner.sleep_for(micros)
    }
}
