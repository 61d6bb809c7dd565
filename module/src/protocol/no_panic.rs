//! No protocol message may panic a node (issue 5, "Fuzzing"): every protocol message decoder,
//! reached through the engines' `handle` in a live session, and the stored-share decoders.
//! Harness and mutators: `crate::no_panic`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use proptest::collection::vec;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use seqmpc_proto::{NodeId, SessionId};

use super::cggmp::{
    self, local, AuxShare, AuxSource, CggmpKeyShare, CggmpMsg, CoreShare, Engine, KeyGen,
    PartialSignature, Primes, SignData, Signing as CggmpSigning,
};
use super::frost_dkg::{Dkg, DkgMsg, DkgOutput, DkgProgress};
use super::frost_sign::{
    encode_packages, AnyKeyMaterial, KeyMaterial, SignMsg, SignProgress, Signing,
};
use super::{FrostScheme, Outgoing};
use crate::no_panic::{any_mutation, apply, check, mutations, AnyMutation};

const SID: SessionId = SessionId([0x51; 32]);

fn node(i: usize) -> NodeId {
    NodeId::new(format!("node{i}")).unwrap()
}

fn nodes(n: usize) -> Vec<NodeId> {
    (0..n).map(node).collect()
}

// ---- CggmpMsg wire form ----

#[test]
fn cggmp_msg_from_bytes__should_not_panic_on_arbitrary_or_mutated_bytes() {
    let strategy = (
        vec(any::<u8>(), 0..64),
        0..=6u8,
        any::<bool>(),
        vec(any::<u8>(), 0..64),
        mutations(),
    );
    check(
        "cggmp msg bytes",
        2000,
        strategy,
        |(raw, phase, p2p, payload, muts)| {
            let _ = CggmpMsg::from_bytes(&raw);
            let mut bytes = [vec![phase, u8::from(p2p)], payload].concat();
            if let Ok(m) = CggmpMsg::from_bytes(&bytes) {
                prop_assert_eq!(m.to_bytes(), bytes.clone());
            }
            apply(&mut bytes, &muts);
            if let Ok(m) = CggmpMsg::from_bytes(&bytes) {
                prop_assert_eq!(m.to_bytes(), bytes);
            }
            Ok(())
        },
    );
}

// ---- FROST DKG ----

/// An honest DKG of `parties` (threshold 2): every party's output and every message sent,
/// as `(from, to, msg)`.
#[allow(clippy::type_complexity)]
fn honest_dkg<C: FrostScheme>(
    parties: &[NodeId],
) -> (
    BTreeMap<NodeId, DkgOutput<C>>,
    Vec<(NodeId, NodeId, DkgMsg)>,
) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut states = BTreeMap::new();
    let mut queue = VecDeque::new();
    for p in parties {
        let (d, out) = Dkg::<C>::start(SID, p, parties, 2, &mut rng).unwrap();
        states.insert(p.clone(), d);
        queue.extend(out.into_iter().map(|o| (p.clone(), o)));
    }
    let mut sent = Vec::new();
    let mut outputs = BTreeMap::new();
    while let Some((from, o)) = queue.pop_front() {
        sent.push((from.clone(), o.to.clone(), o.msg.clone()));
        let Some(d) = states.remove(&o.to) else {
            continue;
        };
        match d.handle(&from, o.msg).unwrap() {
            DkgProgress::Continue(d, out) => {
                states.insert(o.to.clone(), d);
                queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
            }
            DkgProgress::Done(res, out) => {
                queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                outputs.insert(o.to, *res);
            }
        }
    }
    assert_eq!(outputs.len(), parties.len());
    (outputs, sent)
}

fn dkg_bytes(m: &mut DkgMsg) -> &mut Vec<u8> {
    match m {
        DkgMsg::Round1(b) | DkgMsg::Round2(b) => b,
    }
}

/// node0 runs a fresh DKG and receives the other parties' honest messages in a random order,
/// one of them mutated, plus an arbitrary message (from a party, or from outside the
/// committee) at a random point, and maybe a duplicate.
fn frost_dkg_messages<C: FrostScheme>(name: &str) {
    let parties = nodes(3);
    let (_, sent) = honest_dkg::<C>(&parties);
    let to_me: Vec<(NodeId, DkgMsg)> = sent
        .into_iter()
        .filter(|(_, to, _)| *to == parties[0])
        .map(|(from, _, m)| (from, m))
        .collect();
    let extra = (
        0..4usize,
        any::<bool>(),
        vec(any::<u8>(), 0..200),
        any::<usize>(),
    );
    let strategy = (
        any::<u64>(),
        any::<usize>(),
        mutations(),
        proptest::option::of(extra),
        any::<Option<usize>>(),
    );
    check(name, 300, strategy, |(seed, k, muts, extra, dup)| {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut dkg, _) = Dkg::<C>::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
        let mut msgs = to_me.clone();
        msgs.shuffle(&mut rng);
        let len = msgs.len();
        apply(dkg_bytes(&mut msgs[k % len].1), &muts);
        if let Some((sender, round1, bytes, at)) = extra {
            let from = if sender == 3 {
                NodeId::new("outsider").unwrap()
            } else {
                node(sender)
            };
            let m = if round1 {
                DkgMsg::Round1(bytes)
            } else {
                DkgMsg::Round2(bytes)
            };
            msgs.insert(at % (len + 1), (from, m));
        }
        if let Some(d) = dup {
            let m = msgs[d % msgs.len()].clone();
            msgs.push(m);
        }
        for (from, m) in msgs {
            // `handle` from node0 itself is a local bug, reported as an error: also fine.
            dkg = match dkg.handle(&from, m) {
                Ok(DkgProgress::Continue(d, _)) => d,
                Ok(DkgProgress::Done(..)) | Err(_) => break,
            };
        }
        Ok(())
    });
}

#[test]
fn frost_dkg_handle__should_not_panic_on_mutated_or_arbitrary_messages_ed25519() {
    frost_dkg_messages::<Ed25519Sha512>("frost-ed25519 dkg");
}

#[test]
fn frost_dkg_handle__should_not_panic_on_mutated_or_arbitrary_messages_secp256k1_tr() {
    frost_dkg_messages::<Secp256K1Sha256TR>("frost-secp256k1-tr dkg");
}

// ---- FROST signing ----

/// The bytes of a signing message to mutate: a share's hash instead of the share when `hash`.
fn sign_bytes(m: &mut SignMsg, hash: bool) -> &mut Vec<u8> {
    match m {
        SignMsg::Commitments(b) => b,
        SignMsg::Share { package_hash, .. } if hash => package_hash,
        SignMsg::Share { share, .. } => share,
    }
}

/// Signers node0 (the aggregator) and one or two others sign; the k-th delivered message is
/// mutated and an arbitrary message is injected at the aggregator.
fn frost_sign_messages<C: FrostScheme>(name: &str) {
    let parties = nodes(3);
    let (outputs, _) = honest_dkg::<C>(&parties);
    let keys: BTreeMap<NodeId, Arc<KeyMaterial<C>>> = outputs
        .into_iter()
        .map(|(n, o)| {
            (
                n,
                Arc::new(KeyMaterial::from_dkg(o, parties.clone()).unwrap()),
            )
        })
        .collect();
    let extra = (any::<bool>(), vec(any::<u8>(), 0..120), any::<usize>());
    let strategy = (
        any::<u64>(),
        2..=3usize,
        vec(any::<u8>(), 0..64),
        any::<usize>(),
        mutations(),
        proptest::option::of(extra),
    );
    check(name, 200, strategy, |(seed, n, message, k, muts, extra)| {
        let mut rng = StdRng::seed_from_u64(seed);
        let signers = nodes(n);
        let mut states = BTreeMap::new();
        let mut queue = VecDeque::new();
        for s in &signers {
            let key = keys[s].clone();
            let (st, out) =
                Signing::start(SID, s, &signers, message.clone(), key, 1, &mut rng).unwrap();
            states.insert(s.clone(), st);
            queue.extend(out.into_iter().map(|o| (s.clone(), o)));
        }
        if let Some((commit, bytes, at)) = extra {
            let m = if commit {
                SignMsg::Commitments(bytes)
            } else {
                let package_hash = bytes.iter().rev().copied().collect();
                SignMsg::Share {
                    share: bytes,
                    package_hash,
                }
            };
            let at = at % (queue.len() + 1);
            queue.insert(
                at,
                (
                    signers[1].clone(),
                    Outgoing {
                        to: signers[0].clone(),
                        msg: m,
                    },
                ),
            );
        }
        let mut delivered = 0;
        while let Some((from, mut o)) = queue.pop_front() {
            if delivered == k % 8 {
                apply(sign_bytes(&mut o.msg, k / 8 % 2 == 1), &muts);
            }
            delivered += 1;
            let Some(st) = states.remove(&o.to) else {
                continue;
            };
            match st.handle(&from, o.msg) {
                Ok(SignProgress::Continue(s, out)) => {
                    states.insert(o.to.clone(), s);
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                }
                Ok(SignProgress::Finished { out, .. }) => {
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                }
                Ok(SignProgress::Blamed { .. }) | Err(_) => {}
            }
        }
        Ok(())
    });
}

#[test]
fn frost_sign_handle__should_not_panic_on_mutated_or_arbitrary_messages_ed25519() {
    frost_sign_messages::<Ed25519Sha512>("frost-ed25519 sign");
}

#[test]
fn frost_sign_handle__should_not_panic_on_mutated_or_arbitrary_messages_secp256k1_tr() {
    frost_sign_messages::<Secp256K1Sha256TR>("frost-secp256k1-tr sign");
}

// ---- stored FROST shares ----

fn frost_share_decode<C: FrostScheme>(name: &str) {
    let parties = nodes(3);
    let (outputs, _) = honest_dkg::<C>(&parties);
    let o = &outputs[&parties[0]];
    let valid = encode_packages(&o.key_package, &o.public_key_package)
        .unwrap()
        .to_vec();
    let strategy = (vec(any::<u8>(), 0..400), mutations());
    check(name, 1000, strategy, |(raw, muts)| {
        let _ = AnyKeyMaterial::decode(C::SCHEME, &raw, parties.clone());
        let mut bytes = valid.clone();
        apply(&mut bytes, &muts);
        let _ = AnyKeyMaterial::decode(C::SCHEME, &bytes, parties.clone());
        Ok(())
    });
}

#[test]
fn frost_share_decode__should_not_panic_on_arbitrary_or_mutated_bytes_ed25519() {
    frost_share_decode::<Ed25519Sha512>("frost-ed25519 share");
}

#[test]
fn frost_share_decode__should_not_panic_on_arbitrary_or_mutated_bytes_secp256k1_tr() {
    frost_share_decode::<Secp256K1Sha256TR>("frost-secp256k1-tr share");
}

// ---- CGGMP24 ----

/// Applies `m` to a CGGMP24 message: JSON edits to its payload (a serde_json cggmp24
/// message), byte edits to its whole wire form (phase and routing included). `None`: the
/// edited bytes no longer parse as a `CggmpMsg` (the node drops such a message).
fn mutate_cggmp(msg: &CggmpMsg, m: &AnyMutation) -> Option<CggmpMsg> {
    match m {
        AnyMutation::Json(_) => {
            let mut payload = msg.payload().to_vec();
            m.apply(&mut payload);
            let routing = u8::from(!msg.is_broadcast());
            CggmpMsg::from_bytes(&[vec![msg.phase() as u8, routing], payload].concat()).ok()
        }
        AnyMutation::Bytes(_) => {
            let mut bytes = msg.to_bytes();
            m.apply(&mut bytes);
            CggmpMsg::from_bytes(&bytes).ok()
        }
    }
}

fn cggmp_dkg(
    parties: &[NodeId],
    rng: &mut StdRng,
    tamper: Option<local::Tamper<'_>>,
) -> local::Outcome<CoreShare> {
    let started = parties
        .iter()
        .map(|p| {
            let (d, out) = cggmp::Dkg::start(SID, p, parties, 2, rng).unwrap();
            (p.clone(), d, out)
        })
        .collect();
    local::run(started, Some(rng), tamper)
}

#[test]
fn cggmp_dkg_handle__should_not_panic_on_mutated_or_arbitrary_messages() {
    let parties = nodes(3);
    let strategy = (
        any::<u64>(),
        any::<usize>(),
        any_mutation(),
        proptest::option::of((0..=6u8, any::<bool>(), vec(any::<u8>(), 0..200))),
    );
    check("cggmp24 dkg", 200, strategy, |(seed, k, m, extra)| {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seen = 0usize;
        let mut tamper = |_: &NodeId, o: &mut Outgoing<CggmpMsg>| {
            seen += 1;
            if seen == k % 24 + 1 {
                match mutate_cggmp(&o.msg, &m) {
                    Some(msg) => o.msg = msg,
                    None => return false,
                }
            }
            true
        };
        let outcome = cggmp_dkg(&parties, &mut rng, Some(&mut tamper));
        // A finished share must survive its own storage round trip.
        for r in outcome.results.into_values().flatten() {
            CoreShare::from_bytes(&r.to_bytes().unwrap()).unwrap();
        }
        // An arbitrary message at a fresh party.
        if let Some((phase, p2p, payload)) = extra {
            let (d, _) = cggmp::Dkg::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
            if let Ok(msg) = CggmpMsg::from_bytes(&[vec![phase, u8::from(p2p)], payload].concat()) {
                let _ = d.handle(&parties[1], msg);
            }
        }
        Ok(())
    });
}

/// Found at run time (cargo and nextest set `CARGO_MANIFEST_DIR` for the test process): the
/// compile-time value names the checkout that built a cached binary.
fn fixtures() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures/cggmp24-test-fixtures.json")
}

#[test]
fn cggmp_stored_decoders__should_not_panic_on_arbitrary_or_mutated_bytes() {
    let parties = nodes(3);
    let mut rng = StdRng::seed_from_u64(2);
    let outcome = cggmp_dkg(&parties, &mut rng, None);
    let core = outcome.results[&parties[0]]
        .as_ref()
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures()).unwrap()).unwrap();
    let primes = serde_json::to_vec(&doc["primes"][0]).unwrap();
    Primes::from_bytes(&primes).unwrap();
    let strategy = (vec(any::<u8>(), 0..300), any_mutation(), any_mutation());
    check("cggmp24 stored", 300, strategy, |(raw, m1, m2)| {
        let _ = CoreShare::from_bytes(&raw);
        let _ = AuxShare::from_bytes(&raw);
        let _ = CggmpKeyShare::from_bytes(&raw);
        let _ = Primes::from_bytes(&raw);
        let _ = PartialSignature::from_bytes(&raw);
        let _ = PartialSignature::from_bytes(raw.get(..32).unwrap_or(&raw));
        let mut c = core.clone();
        m1.apply(&mut c);
        let _ = CoreShare::from_bytes(&c);
        let mut p = primes.clone();
        m2.apply(&mut p);
        let _ = Primes::from_bytes(&p);
        Ok(())
    });
}

#[test]
fn cggmp_aux_share_decode__should_not_panic_on_mutated_fixture_shares() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures()).unwrap()).unwrap();
    let aux = serde_json::to_vec(&doc["aux"]["shares"][0]).unwrap();
    AuxShare::from_bytes(&aux).unwrap();
    check("cggmp24 aux share", 300, any_mutation(), |m| {
        let mut a = aux.clone();
        m.apply(&mut a);
        let _ = AuxShare::from_bytes(&a);
        Ok(())
    });
}

/// The online step of presigned signing parses a 32-byte partial signature.
#[test]
fn cggmp_partial_signature__should_parse_only_32_byte_scalars() {
    check("cggmp24 partial", 2000, vec(any::<u8>(), 0..40), |b| {
        let p = PartialSignature::from_bytes(&b);
        prop_assert!(p.is_none() || b.len() == 32);
        if let Some(p) = p {
            prop_assert_eq!(p.to_bytes().to_vec(), b);
        }
        Ok(())
    });
    assert!(
        PartialSignature::from_bytes(&[0xff; 32]).is_none(),
        "above the group order"
    );
}

/// Regression (found by `cggmp_stored_decoders__…`): fast-paillier passed a radix read from
/// the input to num-bigint, which panicked outside 2..=36. Stored values and every cggmp24
/// message carrying Paillier integers went through that decoder.
#[test]
fn cggmp_decoders__should_refuse_an_integer_with_radix_1() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures()).unwrap()).unwrap();
    for (what, v) in [
        ("primes", &doc["primes"][0]),
        ("aux", &doc["aux"]["shares"][0]),
    ] {
        let text = serde_json::to_string(v).unwrap();
        assert!(text.contains(r#""radix":16"#), "{what}");
        let bad = text.replacen(r#""radix":16"#, r#""radix":1"#, 1);
        let e = match what {
            "primes" => Primes::from_bytes(bad.as_bytes()).unwrap_err(),
            _ => AuxShare::from_bytes(bad.as_bytes()).unwrap_err(),
        };
        assert!(e.to_string().contains("radix 1"), "{what}: {e}");
    }
    // A duplicate key hides the bad radix from the pre-scan (it keeps the last value), but
    // serde refuses duplicate fields before the radix is used.
    let text = serde_json::to_string(&doc["primes"][0]).unwrap();
    let dup = text.replacen(r#""radix":16"#, r#""radix":1,"radix":16"#, 1);
    let e = Primes::from_bytes(dup.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("duplicate field"), "{e}");
}

/// A 3-of-4 CGGMP24 key of node0..node3 with the fixture aux info (DKG only).
fn cggmp_keys() -> BTreeMap<NodeId, Arc<CggmpKeyShare>> {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures()).unwrap()).unwrap();
    let parties = nodes(4);
    let mut rng = StdRng::seed_from_u64(3);
    let started = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let aux = serde_json::to_vec(&doc["aux"]["shares"][i]).unwrap();
            let aux = AuxSource::Existing(AuxShare::from_bytes(&aux).unwrap());
            let (e, out) = KeyGen::start(SID, p, &parties, 3, aux, &mut rng).unwrap();
            (p.clone(), e, out)
        })
        .collect();
    local::run(started, Some(&mut rng), None)
        .results
        .into_iter()
        .map(|(n, r)| (n, Arc::new(r.unwrap())))
        .collect()
}

/// The first signing messages of node1 and node2 to node0 (Paillier ciphertexts and proofs).
fn cggmp_signing_messages(keys: &BTreeMap<NodeId, Arc<CggmpKeyShare>>) -> Vec<(NodeId, CggmpMsg)> {
    let signers = nodes(3);
    let mut rng = StdRng::seed_from_u64(4);
    let mut msgs = Vec::new();
    for s in &signers[1..] {
        let data = SignData::prehashed(&[7; 32]).unwrap();
        let (_, out) = CggmpSigning::start(SID, keys[s].clone(), &signers, data, &mut rng).unwrap();
        msgs.extend(
            out.into_iter()
                .filter(|o| o.to == signers[0])
                .map(|o| (s.clone(), o.msg)),
        );
    }
    assert!(!msgs.is_empty());
    msgs
}

/// Each case starts a signer (node0) and hands it one mutated first-round message: decoding
/// and the first checks happen on that message alone.
#[test]
fn cggmp_sign_handle__should_not_panic_on_mutated_messages() {
    let keys = cggmp_keys();
    let msgs = cggmp_signing_messages(&keys);
    let signers = nodes(3);
    check(
        "cggmp24 signing",
        6,
        (any::<u64>(), any::<usize>(), any_mutation()),
        |(seed, k, m)| {
            let mut rng = StdRng::seed_from_u64(seed);
            let data = SignData::prehashed(&[7; 32]).unwrap();
            let (victim, _) =
                CggmpSigning::start(SID, keys[&signers[0]].clone(), &signers, data, &mut rng)
                    .unwrap();
            let (from, msg) = &msgs[k % msgs.len()];
            if let Some(msg) = mutate_cggmp(msg, &m) {
                let _ = victim.handle(from, msg);
            }
            Ok(())
        },
    );
}

/// Regression: a peer's signing message with a Paillier ciphertext of radix 1 panicked the
/// node inside fast-paillier's deserializer; it is now blamed on the sender.
#[test]
fn cggmp_sign_handle__should_blame_an_integer_with_radix_1() {
    let keys = cggmp_keys();
    let msgs = cggmp_signing_messages(&keys);
    let signers = nodes(3);
    let (from, msg) = msgs
        .iter()
        .find(|(_, m)| String::from_utf8_lossy(m.payload()).contains(r#""radix":16"#))
        .unwrap();
    let bad = String::from_utf8_lossy(msg.payload()).replacen(r#""radix":16"#, r#""radix":1"#, 1);
    let routing = u8::from(!msg.is_broadcast());
    let bad = CggmpMsg::from_bytes(&[vec![msg.phase() as u8, routing], bad.into_bytes()].concat())
        .unwrap();
    let data = SignData::prehashed(&[7; 32]).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let (victim, _) =
        CggmpSigning::start(SID, keys[&signers[0]].clone(), &signers, data, &mut rng).unwrap();
    let e = victim.handle(from, bad).unwrap_err();
    assert_eq!(e.culprits(), std::slice::from_ref(from), "{e}");
    assert!(e.to_string().contains("radix 1"), "{e}");
}
