//! Sealing of record values and of the data key (AES-256-GCM, fresh random nonce each time).
//!
//! Record value (schema v1):
//! `SCHEMA_VERSION (1 byte) || generation (u64 BE) || nonce (12 bytes) || ciphertext || tag (16)`,
//! where the plaintext is [`super::record::encode_into`]'s encoding of the whole record, share
//! included, and the associated data is, each part as a u64 BE length then its bytes:
//! `RECORD_TAG, chain id, key id, party, generation (u64 BE), SCHEMA_VERSION`.
//!
//! Prime-set value (CGGMP24 safe primes, see `super::prime_sets`):
//! `PRIME_SET_VERSION (1 byte) || nonce (12 bytes) || ciphertext || tag (16)`, where the
//! plaintext is the serialized set as given, and the associated data is, in the same
//! length-prefixed form: `PRIME_SET_TAG, chain id, set id, party, PRIME_SET_VERSION`. The
//! distinct tag keeps a prime-set value from ever opening as a key record, and back.
//!
//! Wrapped data key:
//! `DATA_KEY_VERSION (1 byte) || nonce (12 bytes) || ciphertext of the 32-byte key || tag (16)`,
//! under the master key, with associated data `DATA_KEY_TAG, chain id, party, DATA_KEY_VERSION`.
//!
//! With random 96-bit nonces, one data key must not seal more than about 2^32 values; a key
//! store writes orders of magnitude fewer.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::prime_sets::PrimeSetId;
use super::record::{self, KeyRecord};
use super::{MasterKey, StoreError};
use crate::proto::{KeyId, NodeId};

/// Schema version of record values: first byte of each value, and bound into its associated
/// data. Do not change without a migration (old values must stay readable or be rewritten).
pub const SCHEMA_VERSION: u8 = 1;
/// Domain tag of the associated data of record values. Do not change without a migration.
pub const RECORD_TAG: &[u8] = b"seqmpc/store/record/v1";
/// First part of the associated data of a staged record (a resharing's next generation).
pub const STAGED_RECORD_TAG: &[u8] = b"seqmpc/store/staged-record/v1";
/// Domain tag of the associated data of the wrapped data key. Do not change without a migration.
pub const DATA_KEY_TAG: &[u8] = b"seqmpc/store/datakey/v1";
/// Format version of the wrapped data key: its first byte, and bound into its associated data.
/// Do not change without a migration.
pub const DATA_KEY_VERSION: u8 = 1;

/// Domain tag of the associated data of prime-set values. Do not change without a migration.
pub const PRIME_SET_TAG: &[u8] = b"seqmpc/store/prime-set/v1";
/// Format version of prime-set values: their first byte, and bound into their associated data.
/// Do not change without a migration.
pub const PRIME_SET_VERSION: u8 = 1;

/// Domain tag of the associated data of a backup file's body. Do not change without a migration
/// (old backups must stay restorable).
pub const BACKUP_TAG: &[u8] = b"seqmpc/store/backup/v1";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
pub(super) const DATA_KEY_LEN: usize = 32;
const RECORD_HEADER_LEN: usize = 1 + 8 + NONCE_LEN;
const PRIME_SET_HEADER_LEN: usize = 1 + NONCE_LEN;
const WRAPPED_DATA_KEY_LEN: usize = 1 + NONCE_LEN + DATA_KEY_LEN + TAG_LEN;

/// How the data key is named in errors.
pub const DATA_KEY_NAME: &str = "<data key>";

/// Fills `buf` from the OS RNG.
pub(super) fn fill_random(buf: &mut [u8]) -> Result<(), StoreError> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|e| StoreError::Random(e.to_string()))
}

/// Associated data: every part length-prefixed (u64 BE), so no two part lists collide.
fn associated_data(parts: &[&[u8]]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
    for p in parts {
        ad.extend_from_slice(&(p.len() as u64).to_be_bytes());
        ad.extend_from_slice(p);
    }
    ad
}

fn data_key_ad(chain_id: &str, party: &NodeId) -> Vec<u8> {
    associated_data(&[
        DATA_KEY_TAG,
        chain_id.as_bytes(),
        party.as_str().as_bytes(),
        &[DATA_KEY_VERSION],
    ])
}

/// Splits `buf` into the sealed body and its trailing tag.
fn split_tag(buf: &[u8]) -> Option<(&[u8], Tag)> {
    let body_len = buf.len().checked_sub(TAG_LEN)?;
    let (body, tag) = buf.split_at_checked(body_len)?;
    Some((body, Tag::from(<[u8; TAG_LEN]>::try_from(tag).ok()?)))
}

/// Encrypts `buf[from..]` in place and appends the tag. `buf` must have room for the tag, so
/// that the append does not reallocate (it holds plaintext until this returns).
fn seal_in_place(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<(), StoreError> {
    let body = buf
        .get_mut(from..)
        .ok_or_else(|| StoreError::Bug("seal: header longer than buffer".into()))?;
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::from(*nonce), ad, body)
        .map_err(|_| StoreError::Bug("AES-GCM refused to encrypt (value too large?)".into()))?;
    buf.extend_from_slice(&tag);
    Ok(())
}

/// Wraps a fresh data key under the master key.
pub(super) fn wrap_data_key(
    master: &MasterKey,
    chain_id: &str,
    party: &NodeId,
    data_key: &[u8; DATA_KEY_LEN],
) -> Result<Vec<u8>, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(WRAPPED_DATA_KEY_LEN));
    buf.push(DATA_KEY_VERSION);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(data_key);
    let ad = data_key_ad(chain_id, party);
    seal_in_place(&master.cipher()?, &nonce, &ad, &mut buf, 1 + NONCE_LEN)?;
    Ok(std::mem::take(&mut *buf))
}

/// Unwraps the data key and returns a cipher under it.
///
/// An authentication failure is [`StoreError::WrongMasterKey`]: the master key is not the one the
/// store was created with, or the store belongs to another chain id or party.
pub(super) fn unwrap_data_key(
    master: &MasterKey,
    chain_id: &str,
    party: &NodeId,
    wrapped: &[u8],
) -> Result<Aes256Gcm, StoreError> {
    let key = unwrap_data_key_bytes(master, chain_id, party, wrapped)?;
    data_key_cipher(&key)
}

/// A cipher under the raw data key.
pub(super) fn data_key_cipher(key: &[u8; DATA_KEY_LEN]) -> Result<Aes256Gcm, StoreError> {
    Aes256Gcm::new_from_slice(key).map_err(|e| StoreError::Bug(format!("AES-256-GCM key: {e}")))
}

/// Unwraps the data key and returns its bytes (zeroized on drop), for re-wrapping it under
/// another master key. Errors as [`unwrap_data_key`].
pub(super) fn unwrap_data_key_bytes(
    master: &MasterKey,
    chain_id: &str,
    party: &NodeId,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key_id: DATA_KEY_NAME.into(),
        reason,
    };
    if wrapped.len() != WRAPPED_DATA_KEY_LEN {
        return Err(corrupt(format!(
            "wrapped data key has {} bytes, expected {WRAPPED_DATA_KEY_LEN}",
            wrapped.len()
        )));
    }
    let (version, rest) = wrapped
        .split_first()
        .ok_or_else(|| corrupt("empty".into()))?;
    if *version != DATA_KEY_VERSION {
        return Err(corrupt(format!(
            "unsupported data key version {version}, expected {DATA_KEY_VERSION}"
        )));
    }
    let (nonce, sealed) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or_else(|| corrupt("truncated nonce".into()))?;
    let (body, tag) = split_tag(sealed).ok_or_else(|| corrupt("truncated tag".into()))?;
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    if body.len() != DATA_KEY_LEN {
        return Err(corrupt("data key of wrong length".into()));
    }
    key.copy_from_slice(body);
    master
        .cipher()?
        .decrypt_in_place_detached(
            &Nonce::from(*nonce),
            &data_key_ad(chain_id, party),
            key.as_mut_slice(),
            &tag,
        )
        .map_err(|_| StoreError::WrongMasterKey)?;
    Ok(key)
}

/// Seals and opens record values for one store (one chain id, one party, one data key).
pub(super) struct Sealer {
    cipher: Aes256Gcm,
    chain_id: String,
    party: NodeId,
    /// TEST ONLY: records opened so far (the status listing must not decrypt any).
    #[cfg(test)]
    pub(super) opened: std::cell::Cell<u64>,
}

impl Sealer {
    pub(super) fn new(cipher: Aes256Gcm, chain_id: &str, party: &NodeId) -> Self {
        Sealer {
            cipher,
            chain_id: chain_id.to_owned(),
            party: party.clone(),
            #[cfg(test)]
            opened: std::cell::Cell::new(0),
        }
    }

    pub(super) fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub(super) fn party(&self) -> &NodeId {
        &self.party
    }

    fn record_ad(&self, tag: &[u8], key_id: &KeyId, generation: u64) -> Vec<u8> {
        associated_data(&[
            tag,
            self.chain_id.as_bytes(),
            key_id.as_str().as_bytes(),
            self.party.as_str().as_bytes(),
            &generation.to_be_bytes(),
            &[SCHEMA_VERSION],
        ])
    }

    /// The stored value for `rec`, under a fresh nonce.
    pub(super) fn seal(&self, rec: &KeyRecord) -> Result<Vec<u8>, StoreError> {
        self.seal_as(RECORD_TAG, rec)
    }

    /// Opens the value stored under `key_id`. Any mismatch is [`StoreError::Corrupt`] naming
    /// `key_id`: bad header, failed authentication (flipped bytes, or a value that belongs to
    /// another key id, node or chain), bad plaintext, or a decrypted key id or generation that
    /// is not the expected one.
    pub(super) fn open(&self, key_id: &KeyId, value: &[u8]) -> Result<KeyRecord, StoreError> {
        self.open_as(RECORD_TAG, key_id, value)
    }

    /// [`Sealer::seal`] for a staged record (a resharing's next generation): its associated
    /// data starts with [`STAGED_RECORD_TAG`], so a staged value moved into the record slot
    /// (or back) does not open.
    pub(super) fn seal_staged(&self, rec: &KeyRecord) -> Result<Vec<u8>, StoreError> {
        self.seal_as(STAGED_RECORD_TAG, rec)
    }

    /// Opens what [`Sealer::seal_staged`] wrote.
    pub(super) fn open_staged(
        &self,
        key_id: &KeyId,
        value: &[u8],
    ) -> Result<KeyRecord, StoreError> {
        self.open_as(STAGED_RECORD_TAG, key_id, value)
    }

    fn seal_as(&self, tag: &[u8], rec: &KeyRecord) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let cap = RECORD_HEADER_LEN + record::encoded_len(rec) + TAG_LEN;
        // Holds the plaintext (share included) until it is encrypted in place: zeroizing, and
        // sized so that nothing reallocates.
        let mut buf = Zeroizing::new(Vec::with_capacity(cap));
        buf.push(SCHEMA_VERSION);
        buf.extend_from_slice(&rec.generation.to_be_bytes());
        buf.extend_from_slice(&nonce);
        record::encode_into(rec, &mut buf);
        let ad = self.record_ad(tag, &rec.key_id, rec.generation);
        seal_in_place(&self.cipher, &nonce, &ad, &mut buf, RECORD_HEADER_LEN)?;
        Ok(std::mem::take(&mut *buf))
    }

    fn open_as(&self, tag: &[u8], key_id: &KeyId, value: &[u8]) -> Result<KeyRecord, StoreError> {
        #[cfg(test)]
        self.opened.set(self.opened.get().saturating_add(1));
        let corrupt = |reason: String| StoreError::Corrupt {
            key_id: key_id.to_string(),
            reason,
        };
        let (version, rest) = value
            .split_first()
            .ok_or_else(|| corrupt("empty value".into()))?;
        if *version != SCHEMA_VERSION {
            return Err(corrupt(format!(
                "unsupported schema version {version}, this build reads {SCHEMA_VERSION}"
            )));
        }
        let (generation, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("truncated header (generation)".into()))?;
        let generation = u64::from_be_bytes(*generation);
        let (nonce, sealed) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| corrupt("truncated header (nonce)".into()))?;
        let plain = self
            .decrypt(nonce, &self.record_ad(tag, key_id, generation), sealed)
            .map_err(|why| {
                corrupt(format!(
                    "{why}: the value was modified, or was written for another key id, node or \
                     chain"
                ))
            })?;
        let rec = record::decode(&plain).map_err(|e| corrupt(format!("bad plaintext: {e}")))?;
        if &rec.key_id != key_id {
            return Err(corrupt(format!("value holds key id {}", rec.key_id)));
        }
        if rec.generation != generation {
            return Err(corrupt(format!(
                "header says generation {generation}, record says {}",
                rec.generation
            )));
        }
        Ok(rec)
    }
}

impl Sealer {
    /// Opens `sealed` (ciphertext || tag) under the data key; the error says what failed.
    fn decrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, &'static str> {
        let (body, tag) = split_tag(sealed).ok_or("shorter than the AEAD tag")?;
        let mut plain = Zeroizing::new(body.to_vec());
        self.cipher
            .decrypt_in_place_detached(&Nonce::from(*nonce), ad, &mut plain, &tag)
            .map_err(|_| "authentication failed")?;
        Ok(plain)
    }

    /// Seals a backup body under the data key: `nonce (12) || ciphertext || tag (16)`, with
    /// associated data `BACKUP_TAG, header, chain id, party` (the header is the backup file's
    /// clear part, which names the chain, the node and the wrapped data key).
    pub(super) fn seal_backup(&self, header: &[u8], body: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + body.len() + TAG_LEN);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(body);
        let ad = self.backup_ad(header);
        seal_in_place(&self.cipher, &nonce, &ad, &mut buf, NONCE_LEN)?;
        Ok(buf)
    }

    /// Opens what [`Sealer::seal_backup`] made; the error says what failed.
    pub(super) fn open_backup(
        &self,
        header: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let (nonce, rest) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or("truncated (no room for the nonce)")?;
        self.decrypt(nonce, &self.backup_ad(header), rest)
            .map_err(|why| format!("{why}: the file was truncated or modified"))
    }

    fn backup_ad(&self, header: &[u8]) -> Vec<u8> {
        associated_data(&[
            BACKUP_TAG,
            header,
            self.chain_id.as_bytes(),
            self.party.as_str().as_bytes(),
        ])
    }

    fn prime_set_ad(&self, id: &PrimeSetId) -> Vec<u8> {
        associated_data(&[
            PRIME_SET_TAG,
            self.chain_id.as_bytes(),
            id.as_bytes(),
            self.party.as_str().as_bytes(),
            &[PRIME_SET_VERSION],
        ])
    }

    /// The stored value for prime set `id` (`set`: the serialized primes), under a fresh nonce.
    pub(super) fn seal_prime_set(
        &self,
        id: &PrimeSetId,
        set: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        // Holds the primes until they are encrypted in place: zeroizing, and sized so that
        // nothing reallocates.
        let mut buf = Zeroizing::new(Vec::with_capacity(
            PRIME_SET_HEADER_LEN + set.len() + TAG_LEN,
        ));
        buf.push(PRIME_SET_VERSION);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(set);
        let ad = self.prime_set_ad(id);
        seal_in_place(&self.cipher, &nonce, &ad, &mut buf, PRIME_SET_HEADER_LEN)?;
        Ok(std::mem::take(&mut *buf))
    }

    /// Opens the value stored for prime set `id`. Any mismatch is [`StoreError::Corrupt`]
    /// naming the set: bad header, or failed authentication (flipped bytes, or a value written
    /// for another set id, node or chain, or a key record's value).
    pub(super) fn open_prime_set(
        &self,
        id: &PrimeSetId,
        value: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key_id: id.store_name(),
            reason,
        };
        let (version, rest) = value
            .split_first()
            .ok_or_else(|| corrupt("empty value".into()))?;
        if *version != PRIME_SET_VERSION {
            return Err(corrupt(format!(
                "unsupported prime-set version {version}, this build reads {PRIME_SET_VERSION}"
            )));
        }
        let (nonce, sealed) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| corrupt("truncated header (nonce)".into()))?;
        self.decrypt(nonce, &self.prime_set_ad(id), sealed)
            .map_err(|why| {
                corrupt(format!(
                    "{why}: the value was modified, or was written for another prime set, node \
                     or chain"
                ))
            })
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::super::record::tests::sample;
    use super::*;

    fn sealer(chain: &str, party: &str, key: [u8; 32]) -> Sealer {
        Sealer::new(
            Aes256Gcm::new_from_slice(&key).unwrap(),
            chain,
            &NodeId::new(party).unwrap(),
        )
    }

    #[test]
    fn seal__should_roundtrip_and_use_a_fresh_nonce() {
        let s = sealer("chain-a", "node0", [1; 32]);
        let rec = sample("k1", &[0x42; 64]);
        let v1 = s.seal(&rec).unwrap();
        let v2 = s.seal(&rec).unwrap();
        assert_ne!(v1, v2, "same nonce twice");
        assert_eq!(
            v1.len(),
            RECORD_HEADER_LEN + record::encoded_len(&rec) + TAG_LEN
        );
        assert!(!v1.windows(8).any(|w| w == [0x42; 8]), "share in clear");
        let back = s.open(&rec.key_id, &v1).unwrap();
        assert_eq!(back.share.unwrap().expose(), &[0x42; 64]);
    }

    #[test]
    fn seal__should_bind_chain_party_key_id_and_generation() {
        let rec = sample("k1", &[9; 8]);
        let value = sealer("chain-a", "node0", [1; 32]).seal(&rec).unwrap();
        let k1 = KeyId::new("k1").unwrap();
        for (name, other) in [
            ("chain", sealer("chain-b", "node0", [1; 32])),
            ("party", sealer("chain-a", "node1", [1; 32])),
            ("data key", sealer("chain-a", "node0", [2; 32])),
        ] {
            let err = other.open(&k1, &value).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { key_id, .. } if key_id == "k1"),
                "{name}: {err}"
            );
        }
        let same = sealer("chain-a", "node0", [1; 32]);
        let err = same.open(&KeyId::new("k2").unwrap(), &value).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key_id, .. } if key_id == "k2"),
            "{err}"
        );
        // Rewriting the clear generation in the header breaks authentication.
        let mut bumped = value.clone();
        bumped[8] ^= 1;
        assert!(matches!(
            same.open(&k1, &bumped),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn seal__should_reject_every_single_bit_flip_and_truncation() {
        let s = sealer("c", "node0", [3; 32]);
        let k = KeyId::new("k").unwrap();
        let value = s.seal(&sample("k", &[5; 32])).unwrap();
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 0x80;
            assert!(
                matches!(s.open(&k, &bad), Err(StoreError::Corrupt { .. })),
                "byte {i}"
            );
        }
        for n in 0..value.len() {
            assert!(
                matches!(s.open(&k, &value[..n]), Err(StoreError::Corrupt { .. })),
                "len {n}"
            );
        }
    }

    #[test]
    fn seal__should_bind_prime_sets_to_chain_party_id_and_kind() {
        let id = |b: u8| PrimeSetId::from_raw([b; 16]);
        let s = sealer("chain-a", "node0", [1; 32]);
        let value = s.seal_prime_set(&id(1), &[0x42; 64]).unwrap();
        assert!(!value.windows(8).any(|w| w == [0x42; 8]), "primes in clear");
        assert_eq!(
            s.open_prime_set(&id(1), &value).unwrap().as_slice(),
            &[0x42; 64]
        );
        for (name, other, set) in [
            ("chain", sealer("chain-b", "node0", [1; 32]), id(1)),
            ("party", sealer("chain-a", "node1", [1; 32]), id(1)),
            ("data key", sealer("chain-a", "node0", [2; 32]), id(1)),
            ("set id", sealer("chain-a", "node0", [1; 32]), id(2)),
        ] {
            let err = other.open_prime_set(&set, &value).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { key_id, .. } if *key_id == set.store_name()),
                "{name}: {err}"
            );
        }
        // Record kinds do not mix: a key record never opens as a prime set, nor back.
        let rec = s.seal(&sample("k1", &[9; 8])).unwrap();
        assert!(matches!(
            s.open_prime_set(&id(1), &rec),
            Err(StoreError::Corrupt { .. })
        ));
        let k1 = KeyId::new("k1").unwrap();
        assert!(matches!(
            s.open(&k1, &value),
            Err(StoreError::Corrupt { .. })
        ));
        for n in 0..value.len() {
            assert!(s.open_prime_set(&id(1), &value[..n]).is_err(), "len {n}");
            let mut bad = value.clone();
            bad[n] ^= 0x80;
            assert!(s.open_prime_set(&id(1), &bad).is_err(), "byte {n}");
        }
    }

    #[test]
    fn data_key__should_unwrap_only_with_the_same_master_chain_and_party() {
        let master = MasterKey::generate().unwrap();
        let node0 = NodeId::new("node0").unwrap();
        let wrapped = wrap_data_key(&master, "chain-a", &node0, &[8; 32]).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_DATA_KEY_LEN);
        unwrap_data_key(&master, "chain-a", &node0, &wrapped).unwrap();
        let other = MasterKey::generate().unwrap();
        for res in [
            unwrap_data_key(&other, "chain-a", &node0, &wrapped),
            unwrap_data_key(&master, "chain-b", &node0, &wrapped),
            unwrap_data_key(&master, "chain-a", &NodeId::new("node1").unwrap(), &wrapped),
        ] {
            assert!(matches!(res, Err(StoreError::WrongMasterKey)));
        }
        let res = unwrap_data_key(&master, "chain-a", &node0, &wrapped[1..]);
        assert!(matches!(res, Err(StoreError::Corrupt { .. })));
    }
}
