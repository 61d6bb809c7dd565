use super::super::record::tests::sample;
use super::super::tests::{node0, open, TestStore, CHAIN};
use super::*;

fn opts(force: bool) -> RestoreOptions<'static> {
    RestoreOptions {
        force,
        check_record: None,
    }
}

const SHARE_A: [u8; 32] = [0xa1; 32];
const SHARE_B: [u8; 32] = [0xb2; 32];
const PRIMES: [u8; 64] = [0xc3; 64];

/// A store with two records and a prime set, and its backup at `<tmp>/backup.bin`.
fn backed_up() -> (TestStore, PathBuf) {
    let t = TestStore::new();
    let mut store = open(&t);
    store.put(&sample("alpha-key", &SHARE_A)).unwrap();
    store.put(&sample("beta-key", &SHARE_B)).unwrap();
    store
        .put_prime_set(&PrimeSetId::from_raw([9; 16]), &PRIMES)
        .unwrap();
    let out = t.dir.path().join("backup.bin");
    let summary = store.write_backup(&out).unwrap();
    assert_eq!((summary.records, summary.prime_sets), (2, 1));
    (t, out)
}

fn restore(t: &TestStore, from: &Path, force: bool) -> Result<RestoreSummary, StoreError> {
    restore_backup(
        &t.db_dir(),
        &t.master,
        None,
        CHAIN,
        &node0(),
        from,
        &opts(force),
    )
}

fn assert_restored(t: &TestStore) {
    let mut store = open(t);
    let recs = store.list().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].share.as_ref().unwrap().expose(), &SHARE_A);
    assert_eq!(recs[1].share.as_ref().unwrap().expose(), &SHARE_B);
    assert_eq!(
        store.take_prime_set().unwrap().unwrap().bytes.as_slice(),
        &PRIMES
    );
}

fn wipe(t: &TestStore) {
    fs::remove_dir_all(t.db_dir()).unwrap();
}

#[test]
fn backup__should_restore_after_a_wipe() {
    let (t, out) = backed_up();
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&out).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    wipe(&t);
    let summary = restore(&t, &out, false).unwrap();
    assert_eq!(
        summary,
        RestoreSummary {
            records: 2,
            prime_sets: 1,
            replaced: None
        }
    );
    assert_restored(&t);
    // No temporary directory left beside the store.
    let names: Vec<_> = fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restore"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn backup__should_hold_no_plaintext_secret_nor_key_id() {
    let (_t, out) = backed_up();
    let file = fs::read(&out).unwrap();
    for needle in [
        &SHARE_A[..8],
        &SHARE_B[..8],
        &PRIMES[..8],
        b"alpha-key",
        b"beta-key",
    ] {
        assert!(
            !file.windows(needle.len()).any(|w| w == needle),
            "{needle:?}"
        );
    }
    assert!(file.starts_with(BACKUP_MAGIC));
}

#[test]
fn backup__should_refuse_to_overwrite_a_file() {
    let (t, out) = backed_up();
    let before = fs::read(&out).unwrap();
    let err = open(&t).write_backup(&out).unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err}");
    assert_eq!(fs::read(&out).unwrap(), before);
}

#[test]
fn restore__should_refuse_every_truncation_and_byte_flip_and_write_nothing() {
    let (t, out) = backed_up();
    wipe(&t);
    let good = fs::read(&out).unwrap();
    let bad = t.dir.path().join("bad.bin");
    let mut attempts: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x04;
        attempts.push(b);
    }
    let mut longer = good.clone();
    longer.push(0);
    attempts.push(longer);
    for (i, bytes) in attempts.iter().enumerate() {
        fs::write(&bad, bytes).unwrap();
        let err = restore(&t, &bad, true).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Backup(_)
                    | StoreError::BackupIdentity { .. }
                    | StoreError::BackupWrongMasterKey
            ),
            "attempt {i}: {err}"
        );
        assert!(!t.db_dir().exists(), "attempt {i} wrote a store");
    }
    // The untouched file still restores.
    restore(&t, &out, false).unwrap();
    assert_restored(&t);
}

#[test]
fn restore__should_refuse_a_backup_of_another_node_or_chain() {
    let t = TestStore::new();
    let node1 = NodeId::new("node1").unwrap();
    for (chain, node) in [("other-chain", node0()), (CHAIN, node1.clone())] {
        let dir = t.dir.path().join(format!("{chain}-{node}"));
        let mut store = KeyStore::open(&dir, &t.master, chain, &node).unwrap();
        store.put(&sample("k1", &SHARE_A)).unwrap();
        let out = t.dir.path().join(format!("{chain}-{node}.bin"));
        store.write_backup(&out).unwrap();
        let err = restore(&t, &out, false).unwrap_err();
        match &err {
            StoreError::BackupIdentity {
                backup_chain,
                backup_node,
                ..
            } => assert_eq!(
                (backup_chain.as_str(), backup_node.as_str()),
                (chain, node.as_str())
            ),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(chain), "{err}");
        // The header edited to name this node: the AEAD (data key bound to chain and node)
        // refuses it.
        let mut file = fs::read(&out).unwrap();
        let edited = if chain == CHAIN {
            replace(&mut file, b"node1", b"node0")
        } else {
            replace(&mut file, b"other-chain", CHAIN.as_bytes())
        };
        fs::write(&out, edited).unwrap();
        assert!(restore(&t, &out, false).is_err());
    }
    assert!(!t.db_dir().exists());
}

/// `file` with the first `from` replaced by `to` (length-prefixed: the prefix is fixed up).
fn replace(file: &mut [u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let pos = file.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = file[..pos - 8].to_vec();
    out.extend_from_slice(&(to.len() as u64).to_be_bytes());
    out.extend_from_slice(to);
    out.extend_from_slice(&file[pos + from.len()..]);
    out
}

#[test]
fn restore__should_refuse_records_its_check_refuses_and_write_nothing() {
    let (t, out) = backed_up();
    fs::remove_dir_all(t.db_dir()).unwrap();
    let seen = std::cell::RefCell::new(Vec::new());
    let check = |v: &super::super::KeyRecordView| {
        seen.borrow_mut().push(v.key_id.clone());
        match v.generation < 4 {
            true => Err(format!(
                "generation {} is older than the chain's 4",
                v.generation
            )),
            false => Ok(()),
        }
    };
    let opts = RestoreOptions {
        force: false,
        check_record: Some(&check),
    };
    let err =
        restore_backup(&t.db_dir(), &t.master, None, CHAIN, &node0(), &out, &opts).unwrap_err();
    let StoreError::BackupRefused(why) = &err else {
        panic!("{err}")
    };
    assert_eq!(why.len(), 2, "{err}");
    assert!(why[0].contains("older than the chain"), "{err}");
    assert_eq!(seen.borrow().len(), 2, "every record is shown to the check");
    assert!(!t.db_dir().exists(), "nothing written");
    // A check that accepts lets the restore through.
    let ok = |_: &super::super::KeyRecordView| Ok(());
    let opts = RestoreOptions {
        force: false,
        check_record: Some(&ok),
    };
    restore_backup(&t.db_dir(), &t.master, None, CHAIN, &node0(), &out, &opts).unwrap();
    assert_restored(&t);
}

#[test]
fn restore__should_refuse_a_wrong_master_key() {
    let (t, out) = backed_up();
    wipe(&t);
    let other = MasterKey::generate().unwrap();
    let err = restore_backup(
        &t.db_dir(),
        &other,
        None,
        CHAIN,
        &node0(),
        &out,
        &opts(false),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::BackupWrongMasterKey), "{err}");
    let err = restore_backup(
        &t.db_dir(),
        &t.master,
        Some(&other),
        CHAIN,
        &node0(),
        &out,
        &opts(false),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::BackupWrongMasterKey), "{err}");
    assert!(!t.db_dir().exists());
}

#[test]
fn restore__should_reopen_a_backup_made_before_a_rotation_under_the_current_key() {
    let (t, out) = backed_up();
    let old_key = fs::read(t.key_file()).unwrap();
    open(&t).rotate_master_key(&t.key_file()).unwrap();
    let new = MasterKey::load(&t.key_file()).unwrap();
    let err =
        restore_backup(&t.db_dir(), &new, None, CHAIN, &node0(), &out, &opts(true)).unwrap_err();
    assert!(matches!(err, StoreError::BackupWrongMasterKey), "{err}");
    // With the old key for the backup: restored, and re-wrapped under the current key.
    let old_file = t.dir.path().join("old.key");
    super::super::write_private_file(&old_file, &old_key, false).unwrap();
    let old = MasterKey::load(&old_file).unwrap();
    restore_backup(
        &t.db_dir(),
        &new,
        Some(&old),
        CHAIN,
        &node0(),
        &out,
        &opts(true),
    )
    .unwrap();
    assert!(matches!(
        KeyStore::open(&t.db_dir(), &old, CHAIN, &node0()),
        Err(StoreError::WrongMasterKey)
    ));
    let mut store = KeyStore::open(&t.db_dir(), &new, CHAIN, &node0()).unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
    assert_eq!(store.count_prime_sets().unwrap(), 1);
}

#[test]
fn restore__should_refuse_a_non_empty_store_without_force_and_move_it_aside_with_force() {
    let (t, out) = backed_up();
    // The store still holds its records.
    let err = restore(&t, &out, false).unwrap_err();
    assert!(matches!(err, StoreError::StoreNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("2 key records"), "{err}");
    // A newer record that the backup lacks, to tell the stores apart.
    open(&t).put(&sample("gamma-key", &[1; 8])).unwrap();
    let summary = restore(&t, &out, true).unwrap();
    let aside = summary.replaced.unwrap();
    assert_restored(&t);
    let mut old = KeyStore::open(&aside, &t.master, CHAIN, &node0()).unwrap();
    assert_eq!(old.list().unwrap().len(), 3);
}

#[test]
fn restore__should_accept_an_empty_store_without_force() {
    let (t, out) = backed_up();
    wipe(&t);
    drop(open(&t)); // opened once: a data key, no record
    assert_eq!(restore(&t, &out, false).unwrap().replaced, None);
    assert_restored(&t);
    let aside = fs::read_dir(t.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("replaced")
        })
        .count();
    assert_eq!(aside, 0);
}

#[test]
fn restore__should_refuse_a_store_held_open_even_with_force() {
    let (t, out) = backed_up();
    let _running = open(&t);
    let err = restore(&t, &out, true).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn restore__should_refuse_a_file_that_is_not_a_backup() {
    let t = TestStore::new();
    let err = restore(&t, &t.key_file(), false).unwrap_err();
    assert!(
        matches!(err, StoreError::Backup(ref m) if m.contains("magic")),
        "{err}"
    );
    let err = restore(&t, &t.dir.path().join("missing"), false).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}
