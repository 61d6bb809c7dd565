//! The sequencer's block store: one append-only file, fsynced after every record.
//!
//! Layout of `DATA_DIR/blocks.log`: the 8-byte magic `SEQMPCB1`, then records framed as
//! `len: u32 LE | kind: u8 | payload (len - 1 bytes) | check: first 8 bytes of sha256(kind ‖ payload)`.
//!
//! | kind | payload |
//! |---|---|
//! | 1 genesis | JSON [`GenesisRecord`] (chain id, sha256 of the app state, genesis time) |
//! | 2 block | protobuf `RequestFinalizeBlock`, exactly what every app is sent |
//! | 3 result | `height: u64 LE` + protobuf `ResponseFinalizeBlock` of the reference app |
//!
//! Ordering invariant kept by the consensus loop: a block record is written (and fsynced) before
//! any app sees the block; its result record is written before any app is sent `Commit`. So an
//! app can only have committed heights whose result is stored, and a block without a result can
//! only be the last record: nobody committed it, and [`BlockStore::open`] drops it.
//! A torn last record (crash mid-write) is truncated away; damage elsewhere is an error.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use anyhow::{bail, ensure, Context};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::abci::{RequestFinalizeBlock, ResponseFinalizeBlock};

const FILE_NAME: &str = "blocks.log";
const MAGIC: &[u8; 8] = b"SEQMPCB1";
const KIND_GENESIS: u8 = 1;
const KIND_BLOCK: u8 = 2;
const KIND_RESULT: u8 = 3;
const CHECK_LEN: u64 = 8;
/// Largest record accepted when reading (a block of 10k txs of 1 MiB would not fit anyway).
const MAX_RECORD: u32 = 512 * 1024 * 1024;

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

/// Where one record's payload lives in the file.
#[derive(Clone, Copy, Debug)]
struct Span {
    offset: u64,
    len: u64,
}

#[derive(Clone, Copy, Debug)]
struct BlockMeta {
    block: Span,
    result: Option<Span>,
    /// File length before the block record, to roll it back.
    start: u64,
}

/// Read access to stored blocks, shared by the consensus loop, the replay workers and the RPC.
pub struct StoreReader {
    file: File,
    /// `index[h - 1]` describes height `h`.
    index: RwLock<Vec<BlockMeta>>,
}

impl StoreReader {
    /// Height of the last stored block (0 if none).
    pub fn height(&self) -> u64 {
        let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
        idx.len() as u64
    }

    fn meta(&self, height: u64) -> anyhow::Result<BlockMeta> {
        let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let i = usize::try_from(height.checked_sub(1).context("height 0 has no block")?)?;
        idx.get(i)
            .copied()
            .with_context(|| format!("block {height} is not stored"))
    }

    fn read_span(&self, span: Span) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(span.len)?];
        self.file
            .read_exact_at(&mut buf, span.offset)
            .context("reading the block store")?;
        Ok(buf)
    }

    /// The stored block at `height`, as sent to the apps.
    pub fn block(&self, height: u64) -> anyhow::Result<RequestFinalizeBlock> {
        let meta = self.meta(height)?;
        let bytes = self.read_span(meta.block)?;
        RequestFinalizeBlock::decode(bytes.as_slice())
            .with_context(|| format!("decoding stored block {height}"))
    }

    /// The stored result of the block at `height` (`None` while it is being executed).
    pub fn result(&self, height: u64) -> anyhow::Result<Option<ResponseFinalizeBlock>> {
        let meta = self.meta(height)?;
        let Some(span) = meta.result else {
            return Ok(None);
        };
        let bytes = self.read_span(span)?;
        let body = bytes.get(8..).context("short result record")?;
        ResponseFinalizeBlock::decode(body)
            .map(Some)
            .with_context(|| format!("decoding stored result {height}"))
    }
}

/// The writer half, owned by the consensus loop.
pub struct BlockStore {
    path: PathBuf,
    file: File,
    len: u64,
    reader: std::sync::Arc<StoreReader>,
}

impl BlockStore {
    /// Opens (or creates) the store in `dir` for the chain `genesis`. Fails if the store belongs
    /// to another chain or is damaged before its last record.
    pub fn open(dir: &Path, genesis: &GenesisRecord) -> anyhow::Result<BlockStore> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let file_len = file.metadata()?.len();
        let (index, good_len) = if file_len == 0 {
            let mut head = MAGIC.to_vec();
            let payload = serde_json::to_vec(genesis)?;
            head.extend_from_slice(&frame(KIND_GENESIS, &payload)?);
            file.write_all(&head)?;
            file.sync_all()?;
            sync_dir(dir);
            (Vec::new(), head.len() as u64)
        } else {
            scan(&path, genesis)?
        };
        if good_len < file_len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = file_len - good_len,
                "block store: dropping an incomplete last record"
            );
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        let read_file = File::open(&path)?;
        let reader = std::sync::Arc::new(StoreReader {
            file: read_file,
            index: RwLock::new(index),
        });
        Ok(BlockStore {
            path,
            file,
            len: good_len,
            reader,
        })
    }

    /// Shared read access.
    pub fn reader(&self) -> std::sync::Arc<StoreReader> {
        self.reader.clone()
    }

    /// Height of the last stored block.
    pub fn height(&self) -> u64 {
        self.reader.height()
    }

    fn append(&mut self, kind: u8, payload: &[u8]) -> anyhow::Result<Span> {
        let rec = frame(kind, payload)?;
        self.file
            .write_all(&rec)
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.file
            .sync_data()
            .with_context(|| format!("fsync {}", self.path.display()))?;
        // The payload starts after len and kind.
        let span = Span {
            offset: self.len + 5,
            len: payload.len() as u64,
        };
        self.len += rec.len() as u64;
        Ok(span)
    }

    /// Durably appends the next block (height = stored height + 1).
    pub fn append_block(&mut self, block: &RequestFinalizeBlock) -> anyhow::Result<()> {
        let expected = self.height() + 1;
        ensure!(
            u64::try_from(block.height).ok() == Some(expected),
            "block store: appending height {} after {}",
            block.height,
            expected - 1
        );
        let start = self.len;
        let span = self.append(KIND_BLOCK, &block.encode_to_vec())?;
        let mut idx = self
            .reader
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        idx.push(BlockMeta {
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
        let mut idx = self
            .reader
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = idx.last_mut() {
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
        let Some(last) = idx.last().copied() else {
            return Ok(());
        };
        ensure!(
            last.result.is_none(),
            "block store: refusing to roll back an executed block"
        );
        self.file.set_len(last.start)?;
        self.file.sync_all()?;
        self.len = last.start;
        idx.pop();
        Ok(())
    }
}

fn check(kind: u8, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update([kind]);
    h.update(payload);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(d.get(..8).unwrap_or(&[0u8; 8]));
    out
}

fn frame(kind: u8, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let len = u32::try_from(payload.len() + 1).context("record too large")?;
    ensure!(len <= MAX_RECORD, "record too large ({len} bytes)");
    let mut rec = Vec::with_capacity(payload.len() + 13);
    rec.extend_from_slice(&len.to_le_bytes());
    rec.push(kind);
    rec.extend_from_slice(payload);
    rec.extend_from_slice(&check(kind, payload));
    Ok(rec)
}

/// Reads every record; returns the index and the length of the valid prefix of the file.
fn scan(path: &Path, genesis: &GenesisRecord) -> anyhow::Result<(Vec<BlockMeta>, u64)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .with_context(|| format!("{}: not a block store", path.display()))?;
    ensure!(&magic == MAGIC, "{}: not a block store", path.display());
    let mut pos: u64 = 8;
    let mut index: Vec<BlockMeta> = Vec::new();
    let mut seen_genesis = false;
    // Valid prefix: ends after the last complete record that leaves the store consistent.
    let mut good_len = pos;
    loop {
        if pos == file_len {
            break;
        }
        let mut len_buf = [0u8; 4];
        if pos + 4 > file_len {
            break; // torn tail
        }
        r.read_exact(&mut len_buf)?;
        let len = u32::from_le_bytes(len_buf);
        let rec_end = pos + 4 + u64::from(len) + CHECK_LEN;
        if len == 0 || len > MAX_RECORD || rec_end > file_len {
            if len == 0 || len > MAX_RECORD {
                bail!(
                    "{}: corrupt record length {len} at offset {pos}",
                    path.display()
                );
            }
            break; // torn tail
        }
        let mut body = vec![0u8; usize::try_from(len)?];
        r.read_exact(&mut body)?;
        let mut chk = [0u8; 8];
        r.read_exact(&mut chk)?;
        let (kind, payload) = body.split_first().context("empty record")?;
        if check(*kind, payload) != chk {
            if rec_end == file_len {
                break; // torn tail
            }
            bail!("{}: checksum mismatch at offset {pos}", path.display());
        }
        let span = Span {
            offset: pos + 5,
            len: u64::from(len) - 1,
        };
        match *kind {
            KIND_GENESIS => {
                let stored: GenesisRecord = serde_json::from_slice(payload)
                    .with_context(|| format!("{}: bad genesis record", path.display()))?;
                ensure!(
                    stored.chain_id == genesis.chain_id
                        && stored.app_state_sha256 == genesis.app_state_sha256,
                    "{} belongs to chain {:?} with app state sha256 {}, not to chain {:?} with \
                     app state sha256 {}: use another data dir or wipe it",
                    path.display(),
                    stored.chain_id,
                    stored.app_state_sha256,
                    genesis.chain_id,
                    genesis.app_state_sha256
                );
                seen_genesis = true;
                good_len = rec_end;
            }
            KIND_BLOCK => {
                ensure!(seen_genesis, "{}: block before genesis", path.display());
                if let Some(last) = index.last() {
                    ensure!(
                        last.result.is_some(),
                        "{}: block {} has no result but is not the last",
                        path.display(),
                        index.len()
                    );
                }
                index.push(BlockMeta {
                    block: span,
                    result: None,
                    start: pos,
                });
                // good_len moves only when the result arrives.
            }
            KIND_RESULT => {
                let h = payload
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
                    .context("short result record")?;
                let n = index.len() as u64;
                let last = index.last_mut().context("result before any block")?;
                ensure!(
                    h == n && last.result.is_none(),
                    "{}: result for height {h} out of place",
                    path.display()
                );
                last.result = Some(span);
                good_len = rec_end;
            }
            other => bail!("{}: unknown record kind {other}", path.display()),
        }
        pos = rec_end;
    }
    ensure!(seen_genesis, "{}: no genesis record", path.display());
    if index.last().is_some_and(|m| m.result.is_none()) {
        tracing::warn!(
            height = index.len(),
            "block store: the last block was never executed; dropping it"
        );
        index.pop();
    }
    Ok((index, good_len))
}

/// Makes a file creation in `dir` durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;
    use prost::bytes::Bytes;

    fn genesis() -> GenesisRecord {
        GenesisRecord::new("test-chain", b"{}", &crate::sequencer::time::GENESIS_TIME)
    }

    fn block(h: i64) -> RequestFinalizeBlock {
        RequestFinalizeBlock {
            txs: vec![Bytes::from(format!("tx{h}"))],
            height: h,
            ..Default::default()
        }
    }

    #[test]
    fn store__should_reload_blocks_and_results() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = BlockStore::open(dir.path(), &genesis()).unwrap();
            for h in 1..=3 {
                s.append_block(&block(h)).unwrap();
                let res = ResponseFinalizeBlock {
                    app_hash: Bytes::from(vec![h as u8]),
                    ..Default::default()
                };
                s.append_result(h as u64, &res).unwrap();
            }
            // Block 4 is stored but never executed.
            s.append_block(&block(4)).unwrap();
        }
        let s = BlockStore::open(dir.path(), &genesis()).unwrap();
        assert_eq!(s.height(), 3);
        let r = s.reader();
        assert_eq!(r.block(2).unwrap(), block(2));
        assert_eq!(r.result(3).unwrap().unwrap().app_hash.as_ref(), &[3u8]);
    }

    #[test]
    fn store__should_truncate_a_torn_tail_and_refuse_another_chain() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = BlockStore::open(dir.path(), &genesis()).unwrap();
            s.append_block(&block(1)).unwrap();
            s.append_result(1, &ResponseFinalizeBlock::default())
                .unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, KIND_BLOCK, 1, 2]).unwrap();
        drop(f);
        let mut s = BlockStore::open(dir.path(), &genesis()).unwrap();
        assert_eq!(s.height(), 1);
        s.append_block(&block(2)).unwrap();
        s.rollback_block().unwrap();
        assert_eq!(s.height(), 1);
        drop(s);
        let other = GenesisRecord::new("other", b"{}", &crate::sequencer::time::GENESIS_TIME);
        assert!(BlockStore::open(dir.path(), &other).is_err());
    }
}
