#![allow(non_snake_case)]

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

fn result(h: u64) -> ResponseFinalizeBlock {
    ResponseFinalizeBlock {
        app_hash: Bytes::from(vec![h as u8]),
        ..Default::default()
    }
}

fn small(segment_blocks: u64) -> StoreOptions {
    StoreOptions { segment_blocks }
}

/// Appends executed blocks up to `to`.
fn fill(s: &mut BlockStore, to: u64) {
    for h in s.height() + 1..=to {
        s.append_block(&block(h as i64)).unwrap();
        s.append_result(h, &result(h)).unwrap();
    }
}

fn segment_files(dir: &Path) -> Vec<u64> {
    list_segments(dir).unwrap().into_keys().collect()
}

#[test]
fn store__should_reload_blocks_and_results() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = BlockStore::open(dir.path(), &genesis()).unwrap();
        fill(&mut s, 3);
        // Block 4 is stored but never executed.
        s.append_block(&block(4)).unwrap();
    }
    let s = BlockStore::open(dir.path(), &genesis()).unwrap();
    assert_eq!(s.height(), 3);
    let r = s.reader();
    assert_eq!(r.block(2).unwrap(), block(2));
    assert_eq!(r.result(3).unwrap().unwrap().app_hash.as_ref(), &[3u8]);
    assert_eq!((r.base(), r.earliest()), (1, 1));
}

#[test]
fn store__should_truncate_a_torn_tail_and_refuse_another_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = BlockStore::open(dir.path(), &genesis()).unwrap();
        fill(&mut s, 1);
    }
    let path = segment_path(dir.path(), 1);
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

#[test]
fn store__should_roll_segments_and_prune_whole_ones_below_the_retain_height() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = BlockStore::open_with(dir.path(), &genesis(), small(3)).unwrap();
    fill(&mut s, 10);
    assert_eq!(segment_files(dir.path()), vec![1, 4, 7, 10]);
    let r = s.reader();

    // Retain 6: block 5 (its header's parent) must stay, so only segment 1 (blocks 1-3) goes.
    assert_eq!(s.prune(6).unwrap(), 1);
    assert_eq!(segment_files(dir.path()), vec![4, 7, 10]);
    assert_eq!((r.base(), r.earliest(), r.height()), (4, 5, 10));
    let err = r.block(3).unwrap_err().to_string();
    assert!(
        err.contains("pruned") && err.contains("starts at height 4"),
        "{err}"
    );
    assert_eq!(r.block(4).unwrap(), block(4));
    assert_eq!(s.prune(6).unwrap(), 0, "nothing more to prune");

    // A retain height past the last block prunes as if it were the last block: the block below
    // it stays, and so does the segment being appended to.
    assert_eq!(s.prune(1_000).unwrap(), 1);
    assert_eq!(segment_files(dir.path()), vec![7, 10]);
    assert_eq!((r.base(), r.earliest()), (7, 8));
    assert_eq!(r.result(9).unwrap().unwrap().app_hash.as_ref(), &[9u8]);

    // Reopened, the store starts where pruning left it and goes on appending.
    drop(s);
    let mut s = BlockStore::open_with(dir.path(), &genesis(), small(3)).unwrap();
    let r = s.reader();
    assert_eq!((r.base(), r.earliest(), r.height()), (7, 8, 10));
    fill(&mut s, 14);
    assert_eq!(segment_files(dir.path()), vec![7, 10, 13]);
    assert_eq!(r.block(14).unwrap(), block(14));
}

#[test]
fn store__should_refuse_a_missing_middle_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = BlockStore::open_with(dir.path(), &genesis(), small(2)).unwrap();
        fill(&mut s, 6);
    }
    fs::remove_file(segment_path(dir.path(), 3)).unwrap();
    let err = BlockStore::open_with(dir.path(), &genesis(), small(2))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("expects a segment of height 3"), "{err}");
}

#[test]
fn store__should_take_a_single_log_as_its_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = BlockStore::open(dir.path(), &genesis()).unwrap();
        fill(&mut s, 2);
    }
    fs::rename(
        segment_path(dir.path(), 1),
        dir.path().join(LEGACY_FILE_NAME),
    )
    .unwrap();
    let mut s = BlockStore::open_with(dir.path(), &genesis(), small(2)).unwrap();
    assert_eq!(s.height(), 2);
    assert!(!dir.path().join(LEGACY_FILE_NAME).exists());
    fill(&mut s, 3);
    assert_eq!(segment_files(dir.path()), vec![1, 3]);
}

#[test]
fn store__should_roll_back_a_block_that_opened_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = BlockStore::open_with(dir.path(), &genesis(), small(2)).unwrap();
        fill(&mut s, 2);
        s.append_block(&block(3)).unwrap();
        s.rollback_block().unwrap();
        assert_eq!(s.height(), 2);
        // The empty segment 3 takes block 3 again.
        fill(&mut s, 3);
        s.append_block(&block(4)).unwrap();
        // Crash before block 4's result.
    }
    let s = BlockStore::open_with(dir.path(), &genesis(), small(2)).unwrap();
    assert_eq!(s.height(), 3);
    assert_eq!(segment_files(dir.path()), vec![1, 3]);
    assert_eq!(s.reader().block(3).unwrap(), block(3));
}
