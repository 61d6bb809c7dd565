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
