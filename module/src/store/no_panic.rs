//! No stored value may panic the node (issue 5, "Fuzzing"): the record plaintext decoder and
//! opening sealed record, prime-set and data-key values, on arbitrary bytes and on mutated
//! valid encodings. Harness and mutators: `crate::no_panic`.

use aes_gcm::{Aes256Gcm, KeyInit};
use proptest::collection::vec;
use proptest::prelude::*;

use super::prime_sets::PrimeSetId;
use super::record::{self, tests::sample, KeyRecord, ShareStatus};
use super::seal::{self, Sealer};
use super::MasterKey;
use crate::no_panic::{apply, check, mutations};
use crate::proto::{KeyId, NodeId, Scheme};

fn sealer() -> Sealer {
    Sealer::new(
        Aes256Gcm::new_from_slice(&[0x42; 32]).unwrap(),
        "chain",
        &NodeId::new("node0").unwrap(),
    )
}

/// Valid records with arbitrary field values.
fn record() -> impl Strategy<Value = KeyRecord> {
    (
        "[a-z0-9]{1,64}",
        0..3u8,
        any::<u32>(),
        vec("[a-z0-9]{1,8}", 0..6),
        vec(any::<u8>(), 0..64),
        0..3u8,
        proptest::option::of(".{0,40}"),
        any::<u64>(),
        proptest::option::of(vec(any::<u8>(), 0..200)),
    )
        .prop_map(
            |(key, scheme, t, parties, pk, status, error, generation, share)| {
                let mut r = sample(&key, &[]);
                r.scheme = [
                    Scheme::FrostEd25519,
                    Scheme::FrostSecp256k1Tr,
                    Scheme::Cggmp24Secp256k1,
                ][usize::from(scheme)];
                r.threshold = t;
                r.parties = parties
                    .into_iter()
                    .map(|p| NodeId::new(p).unwrap())
                    .collect();
                r.public_key = pk;
                r.status = [ShareStatus::Pending, ShareStatus::Ready, ShareStatus::Error]
                    [usize::from(status)];
                r.error = error;
                r.generation = generation;
                r.share = share.map(record::SecretShare::new);
                r
            },
        )
}

fn encode(r: &KeyRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(record::encoded_len(r));
    record::encode_into(r, &mut out);
    out
}

#[test]
fn record_decode__should_not_panic_on_arbitrary_or_mutated_plaintext() {
    let strategy = (vec(any::<u8>(), 0..400), record(), mutations());
    check(
        "store record plaintext",
        2000,
        strategy,
        |(raw, rec, muts)| {
            let _ = record::decode(&raw);
            let mut bytes = encode(&rec);
            prop_assert_eq!(record::encoded_len(&rec), bytes.len());
            let back = record::decode(&bytes).unwrap();
            prop_assert_eq!(format!("{:?}", back.view()), format!("{:?}", rec.view()));
            apply(&mut bytes, &muts);
            let _ = record::decode(&bytes);
            Ok(())
        },
    );
}

#[test]
fn sealer_open__should_refuse_mutated_or_arbitrary_values_without_panicking() {
    let s = sealer();
    let strategy = (
        vec(any::<u8>(), 0..200),
        record(),
        mutations(),
        any::<bool>(),
    );
    check(
        "store sealed record",
        1000,
        strategy,
        |(raw, rec, muts, other_key)| {
            let key = if other_key {
                KeyId::new("other").unwrap()
            } else {
                rec.key_id.clone()
            };
            let _ = s.open(&key, &raw);
            let mut value = s.seal(&rec).unwrap();
            let before = value.clone();
            apply(&mut value, &muts);
            let opened = s.open(&key, &value);
            // AES-GCM: only the untouched value under its own key id opens.
            prop_assert_eq!(opened.is_ok(), value == before && key == rec.key_id);
            Ok(())
        },
    );
}

#[test]
fn sealer_open_prime_set_and_data_key__should_refuse_mutated_values_without_panicking() {
    let s = sealer();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::create(&dir.path().join("master.key")).unwrap();
    let party = NodeId::new("node0").unwrap();
    let wrapped = seal::wrap_data_key(&master, "chain", &party, &[9; 32]).unwrap();
    let strategy = (
        vec(any::<u8>(), 0..100),
        vec(any::<u8>(), 0..100),
        mutations(),
    );
    check(
        "store sealed prime set",
        1000,
        strategy,
        |(raw, set, muts)| {
            let id = PrimeSetId::random().unwrap();
            let _ = s.open_prime_set(&id, &raw);
            let mut value = s.seal_prime_set(&id, &set).unwrap();
            let before = value.clone();
            apply(&mut value, &muts);
            prop_assert_eq!(s.open_prime_set(&id, &value).is_ok(), value == before);
            let _ = seal::unwrap_data_key(&master, "chain", &party, &raw);
            let mut w = wrapped.clone();
            apply(&mut w, &muts);
            prop_assert_eq!(
                seal::unwrap_data_key(&master, "chain", &party, &w).is_ok(),
                w == wrapped
            );
            Ok(())
        },
    );
}
