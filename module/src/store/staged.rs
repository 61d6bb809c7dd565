//! Staged records: a resharing's next generation of a key, kept beside the READY record until
//! the chain confirms the resharing.
//!
//! A staged record lives under `n/<key id>` and is sealed like a record but with associated
//! data of its own ([`super::STAGED_RECORD_TAG`]), so a staged value copied into the record
//! slot, or a record into the staged slot, fails to open. [`KeyStore::promote_staged`] moves
//! a staged record into the record slot as READY and removes the staged one in one atomic,
//! synced LevelDB batch: after a crash either the old record and the staged one are there, or
//! only the new READY record is. The replaced share's old ciphertext is then compacted out of
//! the live files (as [`KeyStore::delete`] does).

use rusty_leveldb::WriteBatch;

use super::{record_db_key, KeyRecord, KeyStore, ShareStatus, StoreError};
use crate::proto::KeyId;

/// Prefix of staged record keys: `n/` ("next generation") followed by the key id. Do not
/// change without a migration.
pub(super) const STAGED_PREFIX: &[u8] = b"n/";

fn staged_db_key(key_id: &KeyId) -> Vec<u8> {
    [STAGED_PREFIX, key_id.as_str().as_bytes()].concat()
}

impl KeyStore {
    /// Stages `rec` (a resharing's new share of `rec.key_id`), replacing any staged record of
    /// that key. Durable when it returns `Ok`. The READY record, if any, is untouched.
    pub fn put_staged(&mut self, rec: &KeyRecord) -> Result<(), StoreError> {
        self.check_usable()?;
        let value = self.sealer.seal_staged(rec)?;
        let key = staged_db_key(&rec.key_id);
        self.write_durably("put staged", |db| db.put(&key, &value))?;
        tracing::debug!(key_id = %rec.key_id, generation = rec.generation, "staged key record");
        Ok(())
    }

    /// The staged record of `key_id`, or `None`.
    pub fn get_staged(&mut self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.check_usable()?;
        let Some(value) = self.raw_get(&staged_db_key(key_id))? else {
            return Ok(None);
        };
        self.sealer.open_staged(key_id, &value).map(Some)
    }

    /// Deletes the staged record of `key_id` and erases it from the live files; `true` if it
    /// existed.
    pub fn delete_staged(&mut self, key_id: &KeyId) -> Result<bool, StoreError> {
        self.check_usable()?;
        let key = staged_db_key(key_id);
        if self.raw_get(&key)?.is_none() {
            return Ok(false);
        }
        self.erase(&key, "delete staged")?;
        Ok(true)
    }

    /// Makes the staged record of `key_id` the key's READY record if its generation is
    /// `generation`: writes it to the record slot and removes the staged one in one synced
    /// batch, then compacts the old share out of the live files. Returns the new record, or
    /// `None` when nothing of that generation is staged (already promoted, or never staged).
    pub fn promote_staged(
        &mut self,
        key_id: &KeyId,
        generation: u64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let Some(mut rec) = self.get_staged(key_id)? else {
            return Ok(None);
        };
        if rec.generation != generation {
            return Ok(None);
        }
        rec.status = ShareStatus::Ready;
        rec.error = None;
        let value = self.sealer.seal(&rec)?;
        let (staged, main) = (staged_db_key(key_id), record_db_key(key_id));
        let mut batch = WriteBatch::default();
        batch.put(&main, &value);
        batch.delete(&staged);
        self.write_durably("promote staged", |db| db.write(batch, true))?;
        self.note_view(&rec);
        let (from, to) = if staged < main {
            (staged, main)
        } else {
            (main, staged)
        };
        self.compact_out(&from, &to, "promote staged");
        tracing::debug!(key_id = %key_id, generation, "promoted staged key record");
        Ok(Some(rec))
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::super::record::tests::sample;
    use super::super::tests::{open, TestStore};
    use super::*;

    #[test]
    fn staged__should_stay_beside_the_record_until_promoted() {
        let t = TestStore::new();
        let mut s = open(&t);
        let old = sample("k1", b"old share");
        s.put(&old).unwrap();
        let mut next = sample("k1", b"new share");
        next.generation = old.generation + 1;
        next.status = ShareStatus::Pending;
        next.threshold = 3;
        s.put_staged(&next).unwrap();
        // The READY record is untouched and list() does not show staged records.
        assert_eq!(
            s.get(&old.key_id).unwrap().unwrap().generation,
            old.generation
        );
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(s.get_staged(&old.key_id).unwrap().unwrap().threshold, 3);
        // Wrong generation: nothing happens.
        assert!(s
            .promote_staged(&old.key_id, old.generation + 5)
            .unwrap()
            .is_none());
        let promoted = s
            .promote_staged(&old.key_id, next.generation)
            .unwrap()
            .unwrap();
        assert_eq!(promoted.status, ShareStatus::Ready);
        let now = s.get(&old.key_id).unwrap().unwrap();
        assert_eq!((now.generation, now.threshold), (next.generation, 3));
        assert_eq!(now.status, ShareStatus::Ready);
        assert!(s.get_staged(&old.key_id).unwrap().is_none());
        // Promoting again is a no-op.
        assert!(s
            .promote_staged(&old.key_id, next.generation)
            .unwrap()
            .is_none());
    }

    #[test]
    fn staged__should_not_open_in_the_record_slot_and_should_be_deletable() {
        let t = TestStore::new();
        let mut s = open(&t);
        let rec = sample("k2", b"share");
        s.put_staged(&rec).unwrap();
        let staged_value = s.raw_get(&staged_db_key(&rec.key_id)).unwrap().unwrap();
        let main = record_db_key(&rec.key_id);
        s.write_durably("test", |db| db.put(&main, &staged_value))
            .unwrap();
        assert!(matches!(
            s.get(&rec.key_id),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(s.delete_staged(&rec.key_id).unwrap());
        assert!(!s.delete_staged(&rec.key_id).unwrap());
        assert!(s.get_staged(&rec.key_id).unwrap().is_none());
    }
}
