//! The sequencer's block store: an append-only log in segment files, fsynced after every record,
//! whose oldest segments are deleted once every app has said it no longer needs them.
//!
//! Layout of `DATA_DIR`: segment files `blocks-<H>.log`, `<H>` (20 digits) the height of the
//! segment's first block. Each holds the 8-byte magic `SEQMPCB1`, a genesis record, then the
//! records of consecutive blocks, framed as
//! `len: u32 LE | kind: u8 | payload (len - 1 bytes) | check: first 8 bytes of sha256(kind ‖ payload)`.
//!
//! | kind | payload |
//! |---|---|
//! | 1 genesis | JSON [`GenesisRecord`] (chain id, sha256 of the app state, genesis time) |
//! | 2 block | protobuf `RequestFinalizeBlock`, exactly what every app is sent |
//! | 3 result | `height: u64 LE` + protobuf `ResponseFinalizeBlock` of the reference app |
//!
//! A new segment starts at the first block after [`StoreOptions::segment_blocks`] blocks. A
//! store written before segments (one `blocks.log`) becomes the segment of height 1 when opened.
//!
//! Ordering invariant kept by the consensus loop: a block record is written (and fsynced) before
//! any app sees the block; its result record is written before any app is sent `Commit`. So an
//! app can only have committed heights whose result is stored, and a block without a result can
//! only be the last record: nobody committed it, and [`BlockStore::open`] drops it.
//! A torn last record (crash mid-write) is truncated away; damage elsewhere is an error.
//!
//! Pruning ([`BlockStore::prune`]) deletes whole segments, oldest first, below the height the
//! caller names (the lowest `retain_height` of the apps, as CometBFT prunes its block store):
//! what is left is always one run of consecutive blocks, and the block just below the lowest
//! one served is kept (its hash is the next header's `last_block_id`).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::{bail, ensure, Context};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::abci::{RequestFinalizeBlock, ResponseFinalizeBlock};

use self::scan::{frame, scan};

mod scan;

/// The single file of a store written before segments.
const LEGACY_FILE_NAME: &str = "blocks.log";
const SEGMENT_PREFIX: &str = "blocks-";
const SEGMENT_SUFFIX: &str = ".log";
const MAGIC: &[u8; 8] = b"SEQMPCB1";
const KIND_GENESIS: u8 = 1;
const KIND_BLOCK: u8 = 2;
const KIND_RESULT: u8 = 3;
const CHECK_LEN: u64 = 8;
/// Largest record accepted when reading (a block of 10k txs of 1 MiB would not fit anyway).
const MAX_RECORD: u32 = 512 * 1024 * 1024;
/// Default blocks per segment: 1000 s of 100 ms blocks; pruning frees space in these steps.
pub const DEFAULT_SEGMENT_BLOCKS: u64 = 10_000;

/// Identity of the chain a store belongs to; a store never serves another chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisRecord {
    /// Chain id.
    pub chain_id: String,
    /// Hex sha256 of `InitChain.app_state_bytes`.
    pub app_state_sha256: String,
    /// Genesis time, seconds since the epoch.
    pub genesis_time_seconds: i64,
    /// Genesis time, nanoseconds.
    pub genesis_time_nanos: i32,
    /// First block height.
    pub initial_height: u64,
}

impl GenesisRecord {
    /// The record of a chain with this id, app state and genesis time, starting at height 1.
    pub fn new(chain_id: &str, app_state: &[u8], time: &Timestamp) -> Self {
        GenesisRecord {
            chain_id: chain_id.to_owned(),
            app_state_sha256: hex::encode(Sha256::digest(app_state)),
            genesis_time_seconds: time.seconds,
            genesis_time_nanos: time.nanos,
            initial_height: 1,
        }
    }
}

/// How the store lays out its segments.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Blocks per segment file (at least 1): the step in which pruning frees space.
    pub segment_blocks: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_blocks: DEFAULT_SEGMENT_BLOCKS,
        }
    }
}

/// Where one record's payload lives in its segment.
#[derive(Clone, Copy, Debug)]
struct Span {
    offset: u64,
    len: u64,
}

#[derive(Clone, Copy, Debug)]
struct BlockMeta {
    /// First height of the block's segment.
    segment: u64,
    block: Span,
    result: Option<Span>,
    /// Segment length before the block record, to roll it back.
    start: u64,
}

/// The stored blocks: `blocks[i]` is height `base + i`; `files` holds each segment's read
/// handle by its first height.
#[derive(Debug)]
struct Index {
    base: u64,
    blocks: VecDeque<BlockMeta>,
    files: BTreeMap<u64, Arc<File>>,
}

impl Index {
    fn height(&self) -> u64 {
        (self.base + self.blocks.len() as u64).saturating_sub(1)
    }
}

/// Read access to stored blocks, shared by the consensus loop, the replay workers and the RPC.
pub struct StoreReader {
    index: RwLock<Index>,
}

impl StoreReader {
    /// Height of the last stored block (0 if none).
    pub fn height(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .height()
    }

    /// Lowest height whose block the store serves whole (its header needs the block below):
    /// 1 until something is pruned, 0 with no block.
    pub fn earliest(&self) -> u64 {
        let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
        match idx.height() {
            0 => 0,
            h if idx.base <= 1 => h.min(1),
            h => (idx.base + 1).min(h),
        }
    }

    /// Lowest stored height (the block below [`StoreReader::earliest`] once pruned).
    pub fn base(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .base
    }

    fn locate(&self, height: u64) -> anyhow::Result<(BlockMeta, Arc<File>)> {
        let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
        if height < idx.base {
            bail!(
                "block {height} is pruned: the block store starts at height {}",
                idx.base
            );
        }
        let meta = usize::try_from(height - idx.base)
            .ok()
            .and_then(|i| idx.blocks.get(i))
            .copied()
            .with_context(|| format!("block {height} is not stored"))?;
        let file = idx
            .files
            .get(&meta.segment)
            .cloned()
            .with_context(|| format!("segment {} of block {height} is gone", meta.segment))?;
        Ok((meta, file))
    }

    fn read_span(file: &File, span: Span) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(span.len)?];
        file.read_exact_at(&mut buf, span.offset)
            .context("reading the block store")?;
        Ok(buf)
    }

    /// The stored block at `height`, as sent to the apps.
    pub fn block(&self, height: u64) -> anyhow::Result<RequestFinalizeBlock> {
        let (meta, file) = self.locate(height)?;
        let bytes = Self::read_span(&file, meta.block)?;
        RequestFinalizeBlock::decode(bytes.as_slice())
            .with_context(|| format!("decoding stored block {height}"))
    }

    /// The stored result of the block at `height` (`None` while it is being executed).
    pub fn result(&self, height: u64) -> anyhow::Result<Option<ResponseFinalizeBlock>> {
        let (meta, file) = self.locate(height)?;
        let Some(span) = meta.result else {
            return Ok(None);
        };
        let bytes = Self::read_span(&file, span)?;
        let body = bytes.get(8..).context("short result record")?;
        ResponseFinalizeBlock::decode(body)
            .map(Some)
            .with_context(|| format!("decoding stored result {height}"))
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .len()
    }
}

/// The segment being appended to.
struct Tail {
    first: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

/// The writer half, owned by the consensus loop.
pub struct BlockStore {
    dir: PathBuf,
    genesis: GenesisRecord,
    opts: StoreOptions,
    tail: Tail,
    reader: Arc<StoreReader>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{first:020}{SEGMENT_SUFFIX}"))
}

/// The segment files in `dir`, by first height.
fn list_segments(dir: &Path) -> anyhow::Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|s| s.strip_suffix(SEGMENT_SUFFIX))
        else {
            continue;
        };
        let first: u64 = digits
            .parse()
            .with_context(|| format!("{}: not a segment name", entry.path().display()))?;
        ensure!(
            first >= 1,
            "{}: a segment of height 0",
            entry.path().display()
        );
        out.insert(first, entry.path());
    }
    Ok(out)
}

/// Creates an empty segment (magic and genesis record), durably.
fn create_segment(dir: &Path, first: u64, genesis: &GenesisRecord) -> anyhow::Result<Tail> {
    let path = segment_path(dir, first);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&frame(KIND_GENESIS, &serde_json::to_vec(genesis)?)?);
    file.write_all(&head)?;
    file.sync_all()?;
    sync_dir(dir);
    Ok(Tail {
        first,
        path,
        file,
        len: head.len() as u64,
    })
}

impl BlockStore {
    /// Opens (or creates) the store in `dir` for the chain `genesis`, with default options.
    pub fn open(dir: &Path, genesis: &GenesisRecord) -> anyhow::Result<BlockStore> {
        Self::open_with(dir, genesis, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir` for the chain `genesis`. Fails if the store belongs
    /// to another chain, is damaged before its last record, or misses a segment in the middle.
    pub fn open_with(
        dir: &Path,
        genesis: &GenesisRecord,
        opts: StoreOptions,
    ) -> anyhow::Result<BlockStore> {
        ensure!(
            opts.segment_blocks >= 1,
            "segment_blocks must be at least 1"
        );
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut segments = list_segments(dir)?;
        let legacy = dir.join(LEGACY_FILE_NAME);
        if legacy.exists() {
            ensure!(
                segments.is_empty(),
                "{} holds both {} and segment files: keep one layout",
                dir.display(),
                LEGACY_FILE_NAME
            );
            let to = segment_path(dir, 1);
            fs::rename(&legacy, &to)
                .with_context(|| format!("renaming {} to {}", legacy.display(), to.display()))?;
            sync_dir(dir);
            tracing::info!(path = %to.display(), "block store: the single log is now segment 1");
            segments.insert(1, to);
        }
        if segments.is_empty() {
            let tail = create_segment(dir, 1, genesis)?;
            let file = Arc::new(File::open(&tail.path)?);
            return Ok(Self::assemble(
                dir,
                genesis,
                opts,
                tail,
                Index {
                    base: 1,
                    blocks: VecDeque::new(),
                    files: BTreeMap::from([(1, file)]),
                },
            ));
        }
        let count = segments.len();
        let mut index = Index {
            base: segments.keys().next().copied().unwrap_or(1),
            blocks: VecDeque::new(),
            files: BTreeMap::new(),
        };
        let mut tail = None;
        for (i, (first, path)) in segments.into_iter().enumerate() {
            let last = i + 1 == count;
            let next = index.base + index.blocks.len() as u64;
            ensure!(
                first == next,
                "{}: the block store expects a segment of height {next} here (a segment is \
                 missing or extra)",
                path.display()
            );
            let (metas, good_len, file_len) = scan(&path, genesis, first)?;
            if !last {
                ensure!(
                    good_len == file_len && metas.last().is_none_or(|m| m.result.is_some()),
                    "{}: an incomplete segment before the last one",
                    path.display()
                );
                ensure!(!metas.is_empty(), "{}: an empty segment", path.display());
            }
            index.blocks.extend(metas);
            index.files.insert(first, Arc::new(File::open(&path)?));
            if last {
                let file = OpenOptions::new()
                    .append(true)
                    .read(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                if good_len < file_len {
                    tracing::warn!(
                        path = %path.display(),
                        dropped_bytes = file_len - good_len,
                        "block store: dropping an incomplete last record"
                    );
                    file.set_len(good_len)?;
                    file.sync_all()?;
                }
                tail = Some(Tail {
                    first,
                    path,
                    file,
                    len: good_len,
                });
            }
        }
        if index.blocks.back().is_some_and(|m| m.result.is_none()) {
            tracing::warn!(
                height = index.height(),
                "block store: the last block was never executed; dropping it"
            );
            index.blocks.pop_back();
        }
        let tail = tail.context("no segment")?;
        Ok(Self::assemble(dir, genesis, opts, tail, index))
    }

    fn assemble(
        dir: &Path,
        genesis: &GenesisRecord,
        opts: StoreOptions,
        tail: Tail,
        index: Index,
    ) -> BlockStore {
        BlockStore {
            dir: dir.to_owned(),
            genesis: genesis.clone(),
            opts,
            tail,
            reader: Arc::new(StoreReader {
                index: RwLock::new(index),
            }),
        }
    }

    /// Shared read access.
    pub fn reader(&self) -> Arc<StoreReader> {
        self.reader.clone()
    }

    /// Height of the last stored block.
    pub fn height(&self) -> u64 {
        self.reader.height()
    }

    fn index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.reader
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&mut self, kind: u8, payload: &[u8]) -> anyhow::Result<Span> {
        let rec = frame(kind, payload)?;
        let tail = &mut self.tail;
        tail.file
            .write_all(&rec)
            .with_context(|| format!("appending to {}", tail.path.display()))?;
        tail.file
            .sync_data()
            .with_context(|| format!("fsync {}", tail.path.display()))?;
        // The payload starts after len and kind.
        let span = Span {
            offset: tail.len + 5,
            len: payload.len() as u64,
        };
        tail.len += rec.len() as u64;
        Ok(span)
    }

    /// Durably appends the next block (height = stored height + 1), in a new segment when the
    /// current one is full.
    pub fn append_block(&mut self, block: &RequestFinalizeBlock) -> anyhow::Result<()> {
        let expected = self.height() + 1;
        ensure!(
            u64::try_from(block.height).ok() == Some(expected),
            "block store: appending height {} after {}",
            block.height,
            expected - 1
        );
        if expected - self.tail.first >= self.opts.segment_blocks {
            let tail = create_segment(&self.dir, expected, &self.genesis)?;
            let file = Arc::new(File::open(&tail.path)?);
            self.index().files.insert(expected, file);
            self.tail = tail;
        }
        let start = self.tail.len;
        let span = self.append(KIND_BLOCK, &block.encode_to_vec())?;
        let segment = self.tail.first;
        self.index().blocks.push_back(BlockMeta {
            segment,
            block: span,
            result: None,
            start,
        });
        Ok(())
    }

    /// Durably appends the result of the last block.
    pub fn append_result(
        &mut self,
        height: u64,
        result: &ResponseFinalizeBlock,
    ) -> anyhow::Result<()> {
        ensure!(
            height == self.height(),
            "block store: result for {height}, last block is {}",
            self.height()
        );
        let mut payload = height.to_le_bytes().to_vec();
        payload.extend_from_slice(&result.encode_to_vec());
        let span = self.append(KIND_RESULT, &payload)?;
        if let Some(last) = self.index().blocks.back_mut() {
            last.result = Some(span);
        }
        Ok(())
    }

    /// Removes the last block, which must have no result (no app executed it).
    pub fn rollback_block(&mut self) -> anyhow::Result<()> {
        let mut idx = self
            .reader
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(last) = idx.blocks.back().copied() else {
            return Ok(());
        };
        ensure!(
            last.result.is_none(),
            "block store: refusing to roll back an executed block"
        );
        // The last block is in the tail segment (a new segment starts with its first block).
        self.tail.file.set_len(last.start)?;
        self.tail.file.sync_all()?;
        self.tail.len = last.start;
        idx.blocks.pop_back();
        Ok(())
    }

    /// Deletes the oldest segments whose blocks are all below `retain_height - 1` (the block
    /// below `retain_height` stays: its hash is in the next header), never the segment being
    /// appended to. A retain height above the last block counts as the last block. Returns the
    /// number of segments deleted.
    pub fn prune(&mut self, retain_height: u64) -> anyhow::Result<usize> {
        let keep_from = retain_height.min(self.height()).saturating_sub(1);
        let doomed: Vec<u64> = {
            let mut idx = self.index();
            let firsts: Vec<u64> = idx.files.keys().copied().collect();
            // A segment goes when the next one starts at or below `keep_from`.
            let doomed: Vec<u64> = firsts
                .windows(2)
                .filter(|w| w.get(1).is_some_and(|next| *next <= keep_from))
                .filter_map(|w| w.first().copied())
                .filter(|first| *first != self.tail.first)
                .collect();
            let Some(new_base) = doomed
                .last()
                .and_then(|last| firsts.iter().find(|f| *f > last).copied())
            else {
                return Ok(0);
            };
            let drop = usize::try_from(new_base - idx.base)?;
            ensure!(
                drop <= idx.blocks.len(),
                "block store: pruning below {new_base} past the last block"
            );
            idx.blocks.drain(..drop);
            idx.base = new_base;
            for first in &doomed {
                idx.files.remove(first);
            }
            doomed
        };
        // Oldest first: a crash in between leaves consecutive segments.
        for first in &doomed {
            let path = segment_path(&self.dir, *first);
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        sync_dir(&self.dir);
        tracing::info!(
            segments = doomed.len(),
            base = self.reader.base(),
            "block store: pruned below the apps' retain height"
        );
        Ok(doomed.len())
    }

    /// Bytes of every segment file (what the block log takes on disk).
    pub fn disk_bytes(&self) -> u64 {
        let firsts: Vec<u64> = self
            .reader
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .keys()
            .copied()
            .collect();
        firsts
            .iter()
            .filter_map(|f| fs::metadata(segment_path(&self.dir, *f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Makes a file creation or removal in `dir` durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests;
