//! CGGMP24 safe-prime sets kept for future aux-info runs, beside the key records.
//!
//! Database key `p/` followed by the set's id in lowercase hex: a namespace of its own, apart
//! from key records (`r/`, which [`KeyStore::list`] is confined to) and the data key
//! (`m/datakey`). Values are sealed like key records (AES-256-GCM under the data key, fresh
//! nonce), with associated data binding the chain id, the set id, this node and a record kind
//! of their own (`seal::PRIME_SET_TAG`); the layout is in the `seal` module.
//!
//! A set is the Paillier secret key of the aux info generated from it, so it is used at most
//! once: [`KeyStore::take_prime_set`] erases it durably (as [`KeyStore::delete`] does, old
//! ciphertexts included) before handing it out, so not even a crash right after can hand the
//! same set to a second aux-info run.

use std::fmt;

use rusty_leveldb::LdbIterator;
use zeroize::Zeroizing;

use super::{db_err, seal, KeyStore, StoreError};

/// Prefix of prime-set keys: `p/` then the set id, 32 lowercase hex digits. Cannot collide
/// with key records (`r/...`) or the data key (`m/datakey`). Do not change without a migration.
pub(super) const PRIME_SET_PREFIX: &[u8] = b"p/";

/// Id of a stored prime set: 16 random bytes (see [`PrimeSetId::random`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrimeSetId([u8; 16]);

impl PrimeSetId {
    /// A fresh id from the OS RNG.
    pub fn random() -> Result<PrimeSetId, StoreError> {
        let mut id = [0u8; 16];
        seal::fill_random(&mut id)?;
        Ok(PrimeSetId(id))
    }

    /// The id made of `bytes` (tests, and ids read back from the database).
    pub fn from_raw(bytes: [u8; 16]) -> PrimeSetId {
        PrimeSetId(bytes)
    }

    /// The id's bytes (bound into the value's associated data).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// How the set is named in [`StoreError::Corrupt`].
    pub(super) fn store_name(&self) -> String {
        format!("<prime set {self}>")
    }

    fn db_key(&self) -> Vec<u8> {
        [PRIME_SET_PREFIX, hex::encode(self.0).as_bytes()].concat()
    }

    /// The id of database key `key` (which starts with the prime-set prefix).
    pub(super) fn from_db_key(key: &[u8]) -> Result<PrimeSetId, StoreError> {
        key.strip_prefix(PRIME_SET_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(PrimeSetId)
            .ok_or_else(|| StoreError::Corrupt {
                key_id: format!("<prime set {}>", String::from_utf8_lossy(key)),
                reason: "database key is not a valid prime-set id".into(),
            })
    }
}

impl fmt::Display for PrimeSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PrimeSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrimeSetId({self})")
    }
}

/// A prime set taken out of the store: its id and its serialized primes (secret).
///
/// Zeroized on drop (the bytes are [`Zeroizing`]); `Debug` shows the id only.
pub struct PrimeSet {
    /// The set's id.
    pub id: PrimeSetId,
    /// The serialized primes, as given to [`KeyStore::put_prime_set`].
    pub bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PrimeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimeSet")
            .field("id", &self.id)
            .field("bytes", &format_args!("<redacted>"))
            .finish()
    }
}

impl KeyStore {
    /// Stores prime set `id` (`set`: serialized primes), sealed; replaces a set of the same id.
    /// Durable when it returns `Ok`.
    pub fn put_prime_set(&mut self, id: &PrimeSetId, set: &[u8]) -> Result<(), StoreError> {
        self.check_usable()?;
        let value = self.sealer.seal_prime_set(id, set)?;
        let key = id.db_key();
        self.write_durably("put prime set", |db| db.put(&key, &value))?;
        tracing::debug!(prime_set = %id, "stored prime set");
        Ok(())
    }

    /// Removes one stored prime set (the one of smallest id) and returns it; `None` when there
    /// is none.
    ///
    /// The set is erased durably, as by [`KeyStore::delete`], **before** it is opened and
    /// returned, so it can reach at most one caller even across a crash. A set that fails to
    /// open (modified bytes, a value moved from another set, node or chain) is erased all the
    /// same and reported as [`StoreError::Corrupt`]: a prime set can be generated again, and
    /// keeping it would block every later take.
    pub fn take_prime_set(&mut self) -> Result<Option<PrimeSet>, StoreError> {
        self.check_usable()?;
        let first = {
            let mut it = self.db.new_iter().map_err(|e| db_err("iterate", e))?;
            it.seek(PRIME_SET_PREFIX);
            it.current()
                .filter(|(k, _)| k.starts_with(PRIME_SET_PREFIX))
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
        };
        let Some((key, value)) = first else {
            return Ok(None);
        };
        let id = PrimeSetId::from_db_key(&key);
        self.erase(&key, "take prime set")?;
        let id = id?;
        let bytes = self.sealer.open_prime_set(&id, &value)?;
        tracing::debug!(prime_set = %id, "took prime set");
        Ok(Some(PrimeSet { id, bytes }))
    }

    /// How many prime sets are stored (their values are not opened).
    pub fn count_prime_sets(&mut self) -> Result<usize, StoreError> {
        self.check_usable()?;
        let mut it = self.db.new_iter().map_err(|e| db_err("iterate", e))?;
        it.seek(PRIME_SET_PREFIX);
        let mut n = 0usize;
        while let Some((k, _)) = it.current() {
            if !k.starts_with(PRIME_SET_PREFIX) {
                break;
            }
            n = n.saturating_add(1);
            if !it.advance() {
                break;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use rusty_leveldb::{Options, DB};

    use super::super::record::tests::sample;
    use super::super::tests::{open, TestStore};
    use super::super::{raw_get, record_db_key};
    use super::*;
    use crate::proto::KeyId;

    fn id(b: u8) -> PrimeSetId {
        PrimeSetId([b; 16])
    }

    /// Reads and writes the closed store's raw values.
    fn with_raw_db<T>(t: &TestStore, f: impl FnOnce(&mut DB) -> T) -> T {
        let mut db = DB::open(t.db_dir(), Options::default()).unwrap();
        let out = f(&mut db);
        db.close().unwrap();
        out
    }

    #[test]
    fn prime_sets__should_roundtrip_and_be_taken_once() {
        let t = TestStore::new();
        let mut store = open(&t);
        assert_eq!(store.count_prime_sets().unwrap(), 0);
        assert!(store.take_prime_set().unwrap().is_none());
        store.put_prime_set(&id(2), &[0x22; 300]).unwrap();
        store.put_prime_set(&id(1), &[0x11; 300]).unwrap();
        assert_eq!(store.count_prime_sets().unwrap(), 2);

        let first = store.take_prime_set().unwrap().unwrap();
        assert_eq!(first.id, id(1));
        assert_eq!(first.bytes.as_slice(), &[0x11; 300]);
        assert!(!format!("{first:?}").contains("17"), "{first:?}");
        assert_eq!(store.count_prime_sets().unwrap(), 1);
        drop(store);

        // The take was durable: after a reopen only the other set is left.
        let mut store = open(&t);
        assert_eq!(store.count_prime_sets().unwrap(), 1);
        let second = store.take_prime_set().unwrap().unwrap();
        assert_eq!(second.id, id(2));
        assert_eq!(second.bytes.as_slice(), &[0x22; 300]);
        assert!(store.take_prime_set().unwrap().is_none());
        assert_eq!(store.count_prime_sets().unwrap(), 0);
    }

    #[test]
    fn prime_sets__should_stay_apart_from_key_records() {
        let t = TestStore::new();
        let mut store = open(&t);
        store.put(&sample("k1", &[1; 8])).unwrap();
        store.put_prime_set(&id(7), &[7; 64]).unwrap();
        // Key ids sorting around `p/...` in any encoding do not see the sets either.
        store.put(&sample("p", &[2; 8])).unwrap();
        let ids: Vec<String> = store
            .list()
            .unwrap()
            .iter()
            .map(|r| r.key_id.to_string())
            .collect();
        assert_eq!(ids, ["k1", "p"]);
        assert_eq!(store.count_prime_sets().unwrap(), 1);
        assert!(store.delete(&KeyId::new("k1").unwrap()).unwrap());
        assert_eq!(store.count_prime_sets().unwrap(), 1);
        assert!(store.take_prime_set().unwrap().is_some());
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn prime_sets__should_report_a_tampered_or_moved_value_as_corrupt_and_drop_it() {
        let t = TestStore::new();
        drop({
            let mut s = open(&t);
            s.put_prime_set(&id(1), &[1; 64]).unwrap();
            s.put_prime_set(&id(2), &[2; 64]).unwrap();
            s.put(&sample("k1", &[3; 64])).unwrap();
            s
        });
        let good = with_raw_db(&t, |db| raw_get(db, &id(1).db_key()).unwrap().unwrap());
        let record = with_raw_db(&t, |db| {
            raw_get(db, &record_db_key(&KeyId::new("k1").unwrap()))
                .unwrap()
                .unwrap()
        });
        let mut flipped = good.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        // A flipped byte, a value moved to another id, a key record's value, a truncation.
        for (what, bad_id, bad) in [
            ("flipped", id(0), flipped),
            ("moved", id(0), good.clone()),
            ("key record", id(0), record),
            ("truncated", id(0), good[..10].to_vec()),
        ] {
            with_raw_db(&t, |db| db.put(&bad_id.db_key(), &bad).unwrap());
            let mut store = open(&t);
            assert_eq!(store.count_prime_sets().unwrap(), 3);
            match store.take_prime_set() {
                Err(StoreError::Corrupt { key_id, .. }) => {
                    assert_eq!(key_id, bad_id.store_name(), "{what}")
                }
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
            // Dropped, so the good sets are still reachable.
            assert_eq!(store.count_prime_sets().unwrap(), 2, "{what}");
        }
        let mut store = open(&t);
        assert_eq!(store.take_prime_set().unwrap().unwrap().id, id(1));
        assert_eq!(store.take_prime_set().unwrap().unwrap().id, id(2));
    }

    #[test]
    fn prime_sets__should_not_leave_a_taken_set_in_live_files() {
        let t = TestStore::new();
        let mut store = open(&t);
        store.put_prime_set(&id(1), &[0x5a; 256]).unwrap();
        let value = store.db.get(&id(1).db_key()).map(|b| b.to_vec()).unwrap();
        let needle = &value[value.len() - 32..];
        assert!(store.take_prime_set().unwrap().is_some());
        for e in std::fs::read_dir(t.db_dir()).unwrap() {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "old ciphertext still in {}",
                path.display()
            );
        }
    }
}
