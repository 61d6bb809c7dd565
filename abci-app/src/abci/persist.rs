//! Durable chain state: a snapshot plus an append-only journal of each block's writes.
//!
//! Commit appends one line (the block's [`BlockWrites`]) to the journal and fsyncs it, so a
//! block costs what it wrote, not the size of the state. Every [`SNAPSHOT_EVERY`] blocks the
//! whole state is written to a new snapshot (temp file, fsync, rename, fsync the directory) and
//! the journal restarts. Loading reads the snapshot, rebuilds the state's Merkle tree from it
//! (its root must be the snapshot's app hash), and replays the journal lines above its height,
//! checking that the root after each line is the app hash the line records. A torn last line
//! (a crash during the append) is dropped, which is safe because that block was not
//! committed: the consensus engine replays it after `Info` reports the height before it.

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

impl StateFiles {
    /// The files in `dir`.
    pub fn new(dir: &Path) -> Self {
        StateFiles {
            dir: dir.to_owned(),
            journal: None,
        }
    }

    /// Loads the last committed state, if any, and drops a torn journal tail so the next
    /// append starts on a line boundary. Only the process that appends may call it.
    pub fn load(&mut self) -> Result<Option<ChainState>, PersistError> {
        let Some((state, good_len)) = self.read_journaled()? else {
            return Ok(None);
        };
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
        Ok(self.read_journaled()?.map(|(state, _)| state))
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

        let journal_path = self.dir.join(JOURNAL);
        match File::open(&journal_path) {
            Ok(f) => {
                let mut good_len: u64 = 0;
                let mut reader = BufReader::new(f);
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = reader.read_line(&mut line).map_err(io(&journal_path))?;
                    if n == 0 || !line.ends_with('\n') {
                        break; // end, or a torn last line
                    }
                    let block: BlockWrites = match serde_json::from_str(&line) {
                        Ok(b) => b,
                        Err(_) => break, // torn
                    };
                    if block.height > state.height {
                        state
                            .apply_writes(&block)
                            .map_err(|reason| PersistError::Corrupt {
                                path: journal_path.clone(),
                                reason,
                            })?;
                    }
                    good_len += n as u64;
                }
                Ok(Some((state, Some(good_len))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some((state, None))),
            Err(e) => Err(io(&journal_path)(e)),
        }
    }

    /// Writes a full snapshot of `state` and starts an empty journal.
    pub fn snapshot(&mut self, state: &ChainState) -> Result<(), PersistError> {
        let body = state.encode();
        let mut out =
            format!("{} {}\n", state.app_hash, hex::encode(checksum_of(&body))).into_bytes();
        out.extend_from_slice(&body);
        let path = self.dir.join(SNAPSHOT);
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&out).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        // Journal lines at or below the snapshot height are skipped on load, so truncating
        // after the snapshot is in place is crash-safe.
        let jpath = self.dir.join(JOURNAL);
        let f = File::create(&jpath).map_err(io(&jpath))?;
        f.sync_all().map_err(io(&jpath))?;
        sync_dir(&self.dir)?;
        self.journal = None;
        Ok(())
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
