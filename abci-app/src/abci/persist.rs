//! Durable chain state: a snapshot plus an append-only journal of each block's writes.
//!
//! Commit appends one line (the block's [`BlockWrites`]) to the journal and fsyncs it, so a
//! block costs what it wrote, not the size of the state. Every [`SNAPSHOT_EVERY`] blocks the
//! whole state is written to a new snapshot, off Commit's path: Commit appends the block's line
//! as usual, encodes the state, and moves the journal aside ([`JOURNAL_OLD`], a rename); a
//! background thread writes the snapshot (temp file, fsync, rename, fsync the directory) and
//! then removes the old journal. Until it has, the old journal still holds every block since
//! the previous snapshot. The next snapshot first waits for that thread (it had
//! `SNAPSHOT_EVERY` blocks to finish).
//!
//! Loading reads the snapshot, rebuilds the state's Merkle tree from it (its root must be the
//! snapshot's app hash), and replays the lines above its height of the old journal, if any,
//! then of the journal, checking that the root after each line is the app hash the line
//! records and that no height is missing. A torn last line (a crash during the append) is
//! dropped, which is safe because that block was not committed: the consensus engine replays
//! it after `Info` reports the height before it. A load that finds an old journal (a crash
//! before its snapshot was durable) writes the snapshot itself before the node goes on.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::chain::state::{checksum_of, BlockWrites, ChainState, STATE_VERSION};

/// Blocks between two snapshots.
pub const SNAPSHOT_EVERY: u64 = 1000;
/// Snapshot file name.
pub const SNAPSHOT: &str = "chain-state.json";
/// Journal file name.
pub const JOURNAL: &str = "chain-journal.log";
/// The journal moved aside while the snapshot that covers it is written in the background.
pub const JOURNAL_OLD: &str = "chain-journal.old.log";
/// Times an offline reader starts again when the files move under it (a snapshot finished
/// between its reads of the snapshot and of the journals).
const READ_TRIES: usize = 5;

/// Why the state on disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A journal line does not follow the state it is applied to: the files moved under a
    /// reader (a snapshot finished meanwhile), or blocks are missing.
    #[error("{path}: block {height} does not follow height {after}")]
    Gap {
        /// File.
        path: PathBuf,
        /// The line's height.
        height: u64,
        /// The state's height.
        after: u64,
    },
    /// Content does not verify.
    #[error("{path}: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The state files of one app home.
pub struct StateFiles {
    dir: PathBuf,
    journal: Option<File>,
    /// The snapshot being written in the background, if any.
    writer: Option<std::thread::JoinHandle<Result<(), PersistError>>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The snapshot file's bytes: app hash and checksum line, then the encoded state.
fn encode_snapshot(state: &ChainState) -> Vec<u8> {
    let body = state.encode();
    let mut out = format!("{} {}\n", state.app_hash, hex::encode(checksum_of(&body))).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Puts `bytes` in place as the snapshot: temp file, fsync, rename, fsync the directory.
fn write_snapshot(dir: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let path = dir.join(SNAPSHOT);
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// Removes the old journal, once a snapshot covers it.
fn remove_old_journal(dir: &Path) -> Result<(), PersistError> {
    let old = dir.join(JOURNAL_OLD);
    match std::fs::remove_file(&old) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&old)(e)),
    }
}

/// The file at `path`, opened for reading, if it exists.
fn open_if_any(path: &Path) -> Result<Option<File>, PersistError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Applies to `state` the whole lines of the journal `f` (at `path`) above its height, in
/// order; returns the length of those lines. A line above the next height is a gap
/// ([`PersistError::Gap`]); a torn last line ends the replay.
fn replay(path: &Path, f: File, state: &mut ChainState) -> Result<u64, PersistError> {
    let mut good_len: u64 = 0;
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io(path))?;
        if n == 0 || !line.ends_with('\n') {
            break; // end, or a torn last line
        }
        let block: BlockWrites = match serde_json::from_str(&line) {
            Ok(b) => b,
            Err(_) => break, // torn
        };
        if block.height > state.height.saturating_add(1) {
            return Err(PersistError::Gap {
                path: path.to_owned(),
                height: block.height,
                after: state.height,
            });
        }
        if block.height > state.height {
            state
                .apply_writes(&block)
                .map_err(|reason| PersistError::Corrupt {
                    path: path.to_owned(),
                    reason,
                })?;
        }
        good_len = good_len.saturating_add(n as u64);
    }
    Ok(good_len)
}

impl StateFiles {
    /// The files in `dir`.
    pub fn new(dir: &Path) -> Self {
        StateFiles {
            dir: dir.to_owned(),
            journal: None,
            writer: None,
        }
    }

    /// Loads the last committed state, if any, and drops a torn journal tail so the next
    /// append starts on a line boundary. Only the process that appends may call it.
    pub fn load(&mut self) -> Result<Option<ChainState>, PersistError> {
        self.finish_snapshot()?;
        let Some((state, good_len)) = self.read_journaled()? else {
            return Ok(None);
        };
        if self.dir.join(JOURNAL_OLD).exists() {
            // The process stopped before the background snapshot was durable: write it now
            // (it covers both journals), then drop the old journal.
            self.snapshot(&state)?;
            return Ok(Some(state));
        }
        if let Some(good_len) = good_len {
            let journal_path = self.dir.join(JOURNAL);
            let f = OpenOptions::new()
                .write(true)
                .open(&journal_path)
                .map_err(io(&journal_path))?;
            f.set_len(good_len).map_err(io(&journal_path))?;
            f.sync_all().map_err(io(&journal_path))?;
        }
        Ok(Some(state))
    }

    /// The last committed state, if any, read without changing a file: safe beside a running
    /// node that appends to the journal (a line it is writing reads as torn and is left out).
    pub fn read(&self) -> Result<Option<ChainState>, PersistError> {
        let mut tries = 1;
        loop {
            match self.read_journaled() {
                Ok(read) => return Ok(read.map(|(state, _)| state)),
                Err(PersistError::Gap { .. }) if tries < READ_TRIES => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The snapshot with the journal's whole lines applied, and the length of those lines
    /// (`None`: no journal).
    fn read_journaled(&self) -> Result<Option<(ChainState, Option<u64>)>, PersistError> {
        let snap_path = self.dir.join(SNAPSHOT);
        let file = match std::fs::read(&snap_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&snap_path)(e)),
        };
        let corrupt = |reason: String| PersistError::Corrupt {
            path: snap_path.clone(),
            reason,
        };
        let nl = file
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no app hash line".into()))?;
        let (hash_hex, body) = file.split_at(nl);
        let body = body.get(1..).unwrap_or_default();
        let mut state: ChainState =
            serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
        // A snapshot carries its own app hash (the chain's) and a checksum of its bytes.
        let (app_hash, checksum) = std::str::from_utf8(hash_hex)
            .ok()
            .and_then(|s| s.split_once(' '))
            .ok_or_else(|| corrupt("bad header line".into()))?;
        if checksum != hex::encode(checksum_of(body)) {
            return Err(corrupt("checksum mismatch".into()));
        }
        state.app_hash = app_hash.to_owned();
        if state.version != STATE_VERSION {
            return Err(corrupt(format!(
                "state format {} was written by another release; this one reads format \
                 {STATE_VERSION} (since format 2 the app hash is a Merkle root, so a chain of \
                 format 1 cannot be continued: start it again from its genesis)",
                state.version
            )));
        }
        state.rebuild_tree().map_err(corrupt)?;

        // The old journal (blocks up to the snapshot being written), then the journal. Opened
        // in the other order: if the writer moves the journal aside in between, both handles
        // name the same file (its lines are read once), never neither.
        let (jpath, old_path) = (self.dir.join(JOURNAL), self.dir.join(JOURNAL_OLD));
        let journal = open_if_any(&jpath)?;
        let old = open_if_any(&old_path)?;
        if let Some(old) = old {
            replay(&old_path, old, &mut state)?;
        }
        let good_len = match journal {
            Some(journal) => Some(replay(&jpath, journal, &mut state)?),
            None => None,
        };
        Ok(Some((state, good_len)))
    }

    /// Writes a full snapshot of `state` now and starts an empty journal (InitChain, and a
    /// load that found an old journal). Waits for a background snapshot first.
    pub fn snapshot(&mut self, state: &ChainState) -> Result<(), PersistError> {
        self.finish_snapshot()?;
        write_snapshot(&self.dir, &encode_snapshot(state))?;
        // Journal lines at or below the snapshot height are skipped on load, so emptying the
        // journals after the snapshot is in place is crash-safe.
        let jpath = self.dir.join(JOURNAL);
        let f = File::create(&jpath).map_err(io(&jpath))?;
        f.sync_all().map_err(io(&jpath))?;
        remove_old_journal(&self.dir)?;
        self.journal = None;
        Ok(())
    }

    /// Commit at a snapshot height, once the block's line is appended: waits for the previous
    /// background snapshot, encodes `state`, moves the journal aside, and hands the writing to
    /// a background thread. Commit pays the encoding and a rename, not the write and fsyncs.
    pub fn snapshot_in_background(&mut self, state: &ChainState) -> Result<(), PersistError> {
        self.finish_snapshot()?;
        let bytes = encode_snapshot(state);
        let (jpath, old) = (self.dir.join(JOURNAL), self.dir.join(JOURNAL_OLD));
        if old.exists() {
            // Left by a snapshot that failed: it still holds blocks no snapshot covers.
            return Err(PersistError::Corrupt {
                path: old,
                reason: "an old journal is still waiting for its snapshot".into(),
            });
        }
        self.journal = None;
        std::fs::rename(&jpath, &old).map_err(io(&jpath))?;
        sync_dir(&self.dir)?;
        let dir = self.dir.clone();
        let writer = std::thread::Builder::new()
            .name("state-snapshot".into())
            .spawn(move || {
                write_snapshot(&dir, &bytes)?;
                remove_old_journal(&dir)
            })
            .map_err(io(&self.dir))?;
        self.writer = Some(writer);
        Ok(())
    }

    /// Waits for the background snapshot, if any, and returns its outcome.
    pub fn finish_snapshot(&mut self) -> Result<(), PersistError> {
        match self.writer.take().map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(written)) => written,
            Some(Err(_)) => Err(PersistError::Corrupt {
                path: self.dir.join(SNAPSHOT),
                reason: "the snapshot writer panicked".into(),
            }),
        }
    }

    /// Appends one block's writes durably.
    pub fn append(&mut self, block: &BlockWrites) -> Result<(), PersistError> {
        let jpath = self.dir.join(JOURNAL);
        if self.journal.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&jpath)
                .map_err(io(&jpath))?;
            self.journal = Some(f);
        }
        let mut line = serde_json::to_vec(block).map_err(|e| PersistError::Corrupt {
            path: jpath.clone(),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        if let Some(f) = self.journal.as_mut() {
            f.write_all(&line).map_err(io(&jpath))?;
            f.sync_data().map_err(io(&jpath))?;
        }
        Ok(())
    }
}

impl Drop for StateFiles {
    /// A node that stops lets its snapshot finish (a kill leaves the old journal, which the
    /// next load covers).
    fn drop(&mut self) {
        if let Err(e) = self.finish_snapshot() {
            tracing::error!(error = %e, "the last chain-state snapshot was not written");
        }
    }
}
