//! Reading and framing the records of one segment (see the parent module for the layout).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, ensure, Context};
use sha2::{Digest, Sha256};

use super::{
    BlockMeta, GenesisRecord, Span, CHECK_LEN, KIND_BLOCK, KIND_GENESIS, KIND_RESULT, MAGIC,
    MAX_RECORD,
};

fn check(kind: u8, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update([kind]);
    h.update(payload);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(d.get(..8).unwrap_or(&[0u8; 8]));
    out
}

pub(super) fn frame(kind: u8, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let len = u32::try_from(payload.len() + 1).context("record too large")?;
    ensure!(len <= MAX_RECORD, "record too large ({len} bytes)");
    let mut rec = Vec::with_capacity(payload.len() + 13);
    rec.extend_from_slice(&len.to_le_bytes());
    rec.push(kind);
    rec.extend_from_slice(payload);
    rec.extend_from_slice(&check(kind, payload));
    Ok(rec)
}

/// Reads every record of the segment whose first block is `first`; returns its blocks, the
/// length of its valid prefix and the file's length.
pub(super) fn scan(
    path: &Path,
    genesis: &GenesisRecord,
    first: u64,
) -> anyhow::Result<(Vec<BlockMeta>, u64, u64)> {
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
        if len == 0 || len > MAX_RECORD {
            bail!(
                "{}: corrupt record length {len} at offset {pos}",
                path.display()
            );
        }
        if rec_end > file_len {
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
                        first + index.len() as u64 - 1
                    );
                }
                index.push(BlockMeta {
                    segment: first,
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
                let n = first + index.len() as u64 - 1;
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
    Ok((index, good_len, file_len))
}
