//! CGGMP24 engines, all parties in one process over `protocol::cggmp::local`, with the
//! precomputed test fixtures (`tests/fixtures/cggmp24-test-fixtures.json`, made by
//! `cargo run --release -p seqmpc-module --example gen_cggmp_fixtures`). Every signature is
//! checked again here with libsecp256k1. Seeded RNG: `SEQMPC_TEST_SEED` reruns a failure.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use secp256k1::{Message, PublicKey, SECP256K1};
use seqmpc_module::error::ProtocolError;
use seqmpc_module::proto::Scheme;
use seqmpc_module::proto::{NodeId, SessionId};
use seqmpc_module::protocol::cggmp::{
    local, AuxShare, AuxSource, CggmpKeyShare, CggmpMsg, CoreShare, Digest32, DigestLengthError,
    Dkg, EcdsaSignature, Engine, KeyGen, OnlineSigning, Phase, Presigning, Primes, Progress,
    SignData, Signing, SingleUsePresignature,
};
use seqmpc_module::protocol::reshare::{deal, Collector, ReshareParams};
use seqmpc_module::protocol::Outgoing;
use sha2::{Digest as _, Sha256};

/// Found at run time (cargo and nextest set `CARGO_MANIFEST_DIR` for the test process): the
/// compile-time value names the checkout that built a cached binary.
fn fixtures() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures/cggmp24-test-fixtures.json")
}

fn seeded() -> StdRng {
    let seed = std::env::var("SEQMPC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rngs::OsRng.next_u64());
    eprintln!("SEQMPC_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn node(i: usize) -> NodeId {
    NodeId::new(format!("node{i}")).unwrap()
}

fn nodes(n: usize) -> Vec<NodeId> {
    (0..n).map(node).collect()
}

fn sid(tag: u8) -> SessionId {
    SessionId([tag; 32])
}

/// The test-only fixtures: prime sets for node0..node4, aux info for node0..node3.
struct Fixtures {
    doc: serde_json::Value,
}

impl Fixtures {
    fn load() -> Fixtures {
        let text = std::fs::read_to_string(fixtures()).unwrap();
        Fixtures {
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    fn primes(&self, i: usize) -> Primes {
        let v = &self.doc["primes"][i];
        Primes::from_bytes(&serde_json::to_vec(v).unwrap()).unwrap()
    }

    fn aux(&self, i: usize) -> AuxShare {
        let v = &self.doc["aux"]["shares"][i];
        AuxShare::from_bytes(&serde_json::to_vec(v).unwrap()).unwrap()
    }
}

fn ok<O>(outcome: local::Outcome<O>, expected: &[NodeId]) -> BTreeMap<NodeId, O> {
    assert_eq!(
        outcome.results.keys().cloned().collect::<Vec<_>>(),
        expected.to_vec(),
        "every party finishes"
    );
    outcome
        .results
        .into_iter()
        .map(|(n, r)| (n.clone(), r.unwrap_or_else(|e| panic!("{n}: {e}"))))
        .collect()
}

/// 3-of-4 keygen of node0..node3 with the fixture aux info (DKG only: milliseconds).
fn keygen_3_of_4(fx: &Fixtures, rng: &mut StdRng) -> BTreeMap<NodeId, Arc<CggmpKeyShare>> {
    let parties = nodes(4);
    let t = Instant::now();
    let started = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let aux = AuxSource::Existing(fx.aux(i));
            let (e, out) = KeyGen::start(sid(1), p, &parties, 3, aux, rng).unwrap();
            (p.clone(), e, out)
        })
        .collect();
    let shares = ok(local::run(started, Some(rng), None), &parties);
    eprintln!(
        "timing: keygen 3-of-4 (DKG + from_parts, fixture aux), all parties: {:?}",
        t.elapsed()
    );
    shares.into_iter().map(|(n, s)| (n, Arc::new(s))).collect()
}

/// Independent check with libsecp256k1: verifies, s is low, v recovers the key.
fn check_with_libsecp256k1(sig: &EcdsaSignature, public_key: &[u8; 33], digest: &[u8; 32]) {
    assert_eq!(&sig.digest, digest);
    let pk = PublicKey::from_slice(public_key).unwrap();
    let msg = Message::from_digest(*digest);
    let s = Signature::from_compact(&sig.rs).unwrap();
    let mut normalized = s;
    normalized.normalize_s();
    assert_eq!(normalized, s, "s is low");
    SECP256K1.verify_ecdsa(msg, &s, &pk).unwrap();
    let rec = RecoverableSignature::from_compact(
        &sig.rs,
        RecoveryId::try_from(i32::from(sig.recovery_id)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        SECP256K1.recover_ecdsa(msg, &rec).unwrap(),
        pk,
        "v recovers the key"
    );
}

#[test]
fn cggmp__should_agree_on_public_key_after_3_of_4_keygen_with_fixture_aux_info() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let shares = keygen_3_of_4(&fx, &mut rng);
    let pk = shares[&node(0)].public_key();
    PublicKey::from_slice(&pk).expect("a secp256k1 point");
    for (n, s) in &shares {
        assert_eq!(s.public_key(), pk, "{n}");
        assert_eq!(s.threshold(), 3);
        assert_eq!(s.me(), Some(n));
        assert_eq!(s.parties(), nodes(4).as_slice());
        // The store form round-trips; Debug shows no secret.
        let bytes = s.to_bytes().unwrap();
        let back = CggmpKeyShare::from_bytes(&bytes).unwrap();
        assert_eq!(back.public_key(), pk);
        assert_eq!(back.me(), Some(n));
        assert!(format!("{s:?}").contains("<redacted>"));
    }
}

#[test]
fn cggmp__should_sign_a_prehashed_digest_with_3_signers_verified_by_libsecp256k1() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let shares = keygen_3_of_4(&fx, &mut rng);
    // Signers with non-contiguous keygen indices 0, 1, 3 (positions 0, 1, 2).
    let signers = vec![node(0), node(1), node(3)];
    let digest: [u8; 32] = Sha256::digest(b"cggmp24 prehashed").into();
    let t = Instant::now();
    let started = start_signing(
        &shares,
        &signers,
        sid(2),
        SignData::prehashed(&digest).unwrap(),
        &mut rng,
    );
    let outcome = local::run(started, Some(&mut rng), None);
    let bytes = (outcome.bytes_sent.clone(), outcome.largest_message);
    let sigs = ok(outcome, &signers);
    eprintln!(
        "timing: full signing 3 signers, all parties: {:?}; \
         (bytes sent per party, largest message): {bytes:?}",
        t.elapsed()
    );
    let pk = shares[&node(0)].public_key();
    let first = sigs[&node(0)];
    for (n, sig) in &sigs {
        assert_eq!(*sig, first, "{n} has the same signature");
        check_with_libsecp256k1(sig, &pk, &digest);
    }
}

#[test]
fn cggmp__should_sign_a_message_from_presignatures_and_blame_a_bad_partial() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let shares = keygen_3_of_4(&fx, &mut rng);
    let signers = vec![node(1), node(2), node(3)];
    let t = Instant::now();
    let started = signers
        .iter()
        .map(|s| {
            let (e, out) =
                Presigning::start(sid(3), shares[s].clone(), &signers, &mut rng).unwrap();
            (s.clone(), e, out)
        })
        .collect();
    let outcome = local::run(started, Some(&mut rng), None);
    let bytes = (outcome.bytes_sent.clone(), outcome.largest_message);
    let presigs = ok(outcome, &signers);
    eprintln!(
        "timing: presignature 3 signers, all parties: {:?}; \
         (bytes sent per party, largest message): {bytes:?}",
        t.elapsed()
    );
    let r = presigs[&node(1)].nonce_point().unwrap();
    for (n, p) in &presigs {
        assert_eq!(p.nonce_point().unwrap(), r, "{n} has the same R");
        assert_eq!(p.signers(), signers.as_slice());
    }
    // Online step; node2's partial signature to node1 is corrupted in flight.
    let message = b"transfer 10 to alice".to_vec();
    let t = Instant::now();
    let started: Vec<_> = presigs
        .into_iter()
        .map(|(n, p)| {
            let (e, out) = OnlineSigning::start(p, &message).unwrap();
            (n, e, out)
        })
        .collect();
    let mut tamper = |from: &NodeId, o: &mut Outgoing<CggmpMsg>| {
        if *from == node(2) && o.to == node(1) {
            if let CggmpMsg::Broadcast { payload, .. } = &mut o.msg {
                payload[31] ^= 1;
            }
        }
        true
    };
    let outcome = local::run(started, Some(&mut rng), Some(&mut tamper));
    eprintln!(
        "timing: online step (partial + exchange + combine + verify), 3 signers: {:?}",
        t.elapsed()
    );
    let err = outcome.results[&node(1)].as_ref().unwrap_err();
    assert_eq!(err.culprits(), [node(2)].as_slice(), "{err}");
    let digest: [u8; 32] = Sha256::digest(&message).into();
    let pk = shares[&node(1)].public_key();
    let a = outcome.results[&node(2)].as_ref().unwrap();
    let b = outcome.results[&node(3)].as_ref().unwrap();
    assert_eq!(a, b);
    check_with_libsecp256k1(a, &pk, &digest);
}

#[test]
fn cggmp__should_refuse_a_prehashed_digest_that_is_not_32_bytes() {
    assert_eq!(
        SignData::prehashed(&[7u8; 31]),
        Err(DigestLengthError { len: 31 })
    );
    assert_eq!(
        Digest32::try_from(&[7u8; 33][..]),
        Err(DigestLengthError { len: 33 })
    );
    assert!(SignData::prehashed(&[]).is_err());
    assert_eq!(
        SignData::prehashed(&[7u8; 32]),
        Ok(SignData::Prehashed(Digest32([7u8; 32])))
    );
    let e: ProtocolError = DigestLengthError { len: 31 }.into();
    assert!(matches!(e, ProtocolError::Local(_)), "{e}");
    assert!(e.culprits().is_empty());
}

/// A DKG of node0..node3 where node0 has started; returns node0's engine and node1's first
/// (broadcast) message to node0.
fn dkg_pair(rng: &mut StdRng) -> (Dkg, CggmpMsg) {
    let parties = nodes(4);
    let (d0, _) = Dkg::start(sid(4), &node(0), &parties, 3, rng).unwrap();
    let (_, out1) = Dkg::start(sid(4), &node(1), &parties, 3, rng).unwrap();
    let m = out1.into_iter().find(|o| o.to == node(0)).unwrap().msg;
    (d0, m)
}

fn blamed<S: Engine>(r: Result<Progress<S, S::Output>, ProtocolError>) -> Vec<NodeId> {
    match r {
        Err(e @ ProtocolError::Aborted { .. }) => {
            eprintln!("blamed: {e}");
            e.culprits().to_vec()
        }
        Err(e) => panic!("not an abort: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn cggmp__should_blame_the_sender_of_an_undecodable_or_misrouted_message() {
    let mut rng = seeded();
    // Undecodable payload.
    let (d0, _) = dkg_pair(&mut rng);
    let garbage = CggmpMsg::Broadcast {
        phase: Phase::Keygen,
        payload: b"{not cggmp".to_vec(),
    };
    assert_eq!(blamed(d0.handle(&node(2), garbage)), vec![node(2)]);
    // A message of another phase.
    let (d0, m) = dkg_pair(&mut rng);
    let wrong = CggmpMsg::Broadcast {
        phase: Phase::Signing,
        payload: m.payload().to_vec(),
    };
    assert_eq!(blamed(d0.handle(&node(1), wrong)), vec![node(1)]);
    // Not a party.
    let (d0, m) = dkg_pair(&mut rng);
    assert_eq!(blamed(d0.handle(&node(7), m)), vec![node(7)]);
    // A broadcast round sent as p2p: round-based refuses it, naming the message; we map the
    // message id back to its sender.
    let (d0, m) = dkg_pair(&mut rng);
    assert!(m.is_broadcast());
    let p2p = CggmpMsg::P2p {
        phase: Phase::Keygen,
        payload: m.payload().to_vec(),
    };
    assert_eq!(blamed(d0.handle(&node(1), p2p)), vec![node(1)]);
    // Wire bytes that are not a message.
    assert!(CggmpMsg::from_bytes(&[1]).is_err());
    assert!(CggmpMsg::from_bytes(&[9, 0, 1]).is_err());
    assert!(CggmpMsg::from_bytes(&[1, 2, 1]).is_err());
    let (_, m) = dkg_pair(&mut rng);
    assert_eq!(CggmpMsg::from_bytes(&m.to_bytes()), Ok(m));
}

#[test]
fn cggmp__should_drop_identical_duplicates_and_blame_equivocation() {
    let mut rng = seeded();
    let parties = nodes(4);
    let (d0, m) = dkg_pair(&mut rng);
    let d0 = match d0.handle(&node(1), m.clone()).unwrap() {
        Progress::Continue(d, out) => {
            assert!(out.is_empty());
            d
        }
        Progress::Done(..) => panic!("done after one message"),
    };
    let d0 = match d0.handle(&node(1), m).unwrap() {
        Progress::Continue(d, out) => {
            assert!(out.is_empty(), "a duplicate changes nothing");
            d
        }
        Progress::Done(..) => panic!("done after a duplicate"),
    };
    // node1 restarts with fresh randomness: a different round-1 commitment.
    let (_, out) = Dkg::start(sid(4), &node(1), &parties, 3, &mut rng).unwrap();
    let other = out.into_iter().find(|o| o.to == node(0)).unwrap().msg;
    assert_eq!(blamed(d0.handle(&node(1), other)), vec![node(1)]);
}

#[test]
fn cggmp__should_blame_a_signer_whose_zk_proof_is_forged() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let shares = keygen_3_of_4(&fx, &mut rng);
    let signers = vec![node(0), node(1), node(2)];
    let digest = [0x42u8; 32];
    let t = Instant::now();
    let mut started = start_signing(
        &shares,
        &signers,
        sid(5),
        SignData::prehashed(&digest).unwrap(),
        &mut rng,
    );
    // node1 sends node0 the round-1 proof it made for node2 (proofs are per verifier).
    let out1 = &mut started[1].2;
    let for_node2 = out1
        .iter()
        .find(|o| o.to == node(2) && !o.msg.is_broadcast())
        .unwrap()
        .msg
        .clone();
    let to_node0 = out1
        .iter_mut()
        .find(|o| o.to == node(0) && !o.msg.is_broadcast())
        .unwrap();
    to_node0.msg = for_node2;
    let outcome = local::run(started, Some(&mut rng), None);
    eprintln!(
        "timing: signing until the forged proof is caught: {:?}",
        t.elapsed()
    );
    let err = outcome.results[&node(0)].as_ref().unwrap_err();
    assert!(matches!(err, ProtocolError::Aborted { .. }), "{err}");
    assert_eq!(err.culprits(), [node(1)].as_slice(), "{err}");
}

#[test]
fn cggmp__should_never_make_a_presignature_cloneable() {
    // Compile-time: `SingleUsePresignature: Clone` would make the call below ambiguous
    // (the two blanket impls would both apply) and the test would not build. The
    // `compile_fail` doctests of `protocol::cggmp::presign` show a second use not compiling.
    trait AmbiguousIfClone<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    #[allow(dead_code)]
    struct IsClone;
    impl<T: Clone> AmbiguousIfClone<IsClone> for T {}
    <SingleUsePresignature as AmbiguousIfClone<_>>::some_item();
}

/// Keygen with aux info generated from fixture primes (DKG and aux info side by side), then a
/// signature with the fresh shares; 2-of-2 keeps it to seconds (aux info grows with n).
#[test]
fn cggmp__should_generate_aux_info_and_key_2_of_2_from_fixture_primes_and_sign() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let parties = vec![node(3), node(4)];
    let t = Instant::now();
    let started = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let aux = AuxSource::Generate(Box::new(fx.primes(3 + i)));
            let (e, out) = KeyGen::start(sid(8), p, &parties, 2, aux, &mut rng).unwrap();
            (p.clone(), e, out)
        })
        .collect();
    let outcome = local::run(started, Some(&mut rng), None);
    let bytes = (outcome.bytes_sent.clone(), outcome.largest_message);
    let shares = ok(outcome, &parties);
    eprintln!(
        "timing: keygen 2-of-2 with aux info from fixture primes, all parties: {:?}; \
         (bytes sent per party, largest message): {bytes:?}",
        t.elapsed()
    );
    let pk = shares[&node(3)].public_key();
    assert_eq!(shares[&node(4)].public_key(), pk);
    let shares: BTreeMap<_, _> = shares.into_iter().map(|(n, s)| (n, Arc::new(s))).collect();
    let message = b"2-of-2".to_vec();
    let t = Instant::now();
    let started = start_signing(
        &shares,
        &parties,
        sid(9),
        SignData::Message(message.clone()),
        &mut rng,
    );
    let sigs = ok(local::run(started, Some(&mut rng), None), &parties);
    eprintln!(
        "timing: full signing 2-of-2, all parties: {:?}",
        t.elapsed()
    );
    let digest: [u8; 32] = Sha256::digest(&message).into();
    for sig in sigs.values() {
        check_with_libsecp256k1(sig, &pk, &digest);
    }
}

/// Aux info from the fixture primes and the DKG in one keygen session, 3-of-4.
/// Slow (aux info is 15-30 s of CPU per party, all four in this thread): run with
/// `cargo test --release -p seqmpc-module --test cggmp -- --ignored`.
#[test]
#[ignore = "about 1-2 minutes of CPU: aux info for 4 parties"]
fn cggmp__should_generate_aux_info_and_key_3_of_4_from_fixture_primes() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let parties = nodes(4);
    let t = Instant::now();
    let started = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let aux = AuxSource::Generate(Box::new(fx.primes(i)));
            let (e, out) = KeyGen::start(sid(6), p, &parties, 3, aux, &mut rng).unwrap();
            (p.clone(), e, out)
        })
        .collect();
    let outcome = local::run(started, Some(&mut rng), None);
    let bytes = (outcome.bytes_sent.clone(), outcome.largest_message);
    let shares = ok(outcome, &parties);
    eprintln!(
        "timing: keygen 3-of-4 with aux info from fixture primes, all parties: {:?}; \
         (bytes sent per party, largest message): {bytes:?}",
        t.elapsed()
    );
    let pk = shares[&node(0)].public_key();
    for s in shares.values() {
        assert_eq!(s.public_key(), pk);
    }
    // The fresh shares sign.
    let shares: BTreeMap<_, _> = shares.into_iter().map(|(n, s)| (n, Arc::new(s))).collect();
    let signers = vec![node(0), node(2), node(3)];
    let digest = [9u8; 32];
    let t = Instant::now();
    let started = start_signing(
        &shares,
        &signers,
        sid(7),
        SignData::Prehashed(Digest32(digest)),
        &mut rng,
    );
    let sigs = ok(local::run(started, Some(&mut rng), None), &signers);
    eprintln!(
        "timing: full signing 3 signers with the fresh shares, all parties: {:?}",
        t.elapsed()
    );
    for sig in sigs.values() {
        check_with_libsecp256k1(sig, &pk, &digest);
    }
}

/// Measures signing with the multi-exponentiation tables precomputed in the aux info.
#[test]
#[ignore = "about 1-2 minutes of CPU: multiexp tables for 3 parties"]
fn cggmp__should_sign_with_multiexp_tables_precomputed() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let parties = nodes(4);
    let signers = vec![node(0), node(1), node(2)];
    let t = Instant::now();
    let started = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut aux = fx.aux(i);
            if signers.contains(p) {
                aux = aux.precompute_multiexp_tables().unwrap();
            }
            if i == 0 {
                eprintln!(
                    "timing: multiexp tables for one party: {:?}; aux share with tables: {} bytes",
                    t.elapsed(),
                    aux.to_bytes().unwrap().len()
                );
            }
            let (e, out) =
                KeyGen::start(sid(10), p, &parties, 3, AuxSource::Existing(aux), &mut rng).unwrap();
            (p.clone(), e, out)
        })
        .collect();
    let shares = ok(local::run(started, Some(&mut rng), None), &parties);
    let shares: BTreeMap<_, _> = shares.into_iter().map(|(n, s)| (n, Arc::new(s))).collect();
    let digest = [3u8; 32];
    let t = Instant::now();
    let started = start_signing(
        &shares,
        &signers,
        sid(11),
        SignData::Prehashed(Digest32(digest)),
        &mut rng,
    );
    let sigs = ok(local::run(started, Some(&mut rng), None), &signers);
    eprintln!(
        "timing: full signing 3 signers with multiexp tables, all parties: {:?}",
        t.elapsed()
    );
    let pk = shares[&node(0)].public_key();
    for sig in sigs.values() {
        check_with_libsecp256k1(sig, &pk, &digest);
    }
}

/// Starts a full signing of `data` at every signer, in order.
fn start_signing(
    shares: &BTreeMap<NodeId, Arc<CggmpKeyShare>>,
    signers: &[NodeId],
    session: SessionId,
    data: SignData,
    rng: &mut StdRng,
) -> Vec<(NodeId, Signing, Vec<Outgoing<CggmpMsg>>)> {
    signers
        .iter()
        .map(|s| {
            let (e, out) =
                Signing::start(session, shares[s].clone(), signers, data.clone(), rng).unwrap();
            (s.clone(), e, out)
        })
        .collect()
}

/// `mpcd --cggmp-primes FILE`: the node's prime set by node id, and its aux info when the file
/// has some for it.
#[test]
fn cggmp_config__should_load_primes_and_aux_from_the_fixture_file_by_node_id() {
    use seqmpc_module::node::cggmp::CggmpConfig;
    let path = fixtures();
    let c = CggmpConfig::from_fixture_file(&path, &node(0)).unwrap();
    assert!(c.primes.is_some());
    let aux = c.aux.as_ref().unwrap();
    assert_eq!(aux.parties, nodes(4));
    assert_eq!(
        AuxShare::from_bytes(&aux.share).unwrap().parties(),
        nodes(4)
    );
    assert!(!format!("{c:?}").contains("radix"), "Debug must redact");
    // node4 has primes but no aux info; node9 has nothing.
    let c = CggmpConfig::from_fixture_file(&path, &node(4)).unwrap();
    assert!(c.primes.is_some() && c.aux.is_none());
    let e = CggmpConfig::from_fixture_file(&path, &node(9)).unwrap_err();
    assert!(e.to_string().contains("no prime set for node9"), "{e}");
}

/// Aux reuse across keys of a committee: every party's fixture aux info has the same
/// fingerprint, and the aux info inside each party's key share is that aux info again (so the
/// next keygen of the committee can reuse it).
#[test]
fn aux_share__should_have_one_fingerprint_per_run_and_survive_inside_key_shares() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let fp: Vec<[u8; 32]> = (0..4).map(|i| fx.aux(i).fingerprint().unwrap()).collect();
    assert!(fp.windows(2).all(|w| w[0] == w[1]), "{fp:?}");
    let shares = keygen_3_of_4(&fx, &mut rng);
    for (n, s) in &shares {
        let aux = s.aux_share().unwrap();
        assert_eq!(aux.fingerprint().unwrap(), fp[0], "{n}");
        let again = AuxShare::from_bytes(&aux.to_bytes().unwrap()).unwrap();
        assert_eq!(again.parties(), nodes(4));
    }
}

/// Resharing a real CGGMP24 key 3-of-4 -> 2-of-4 on the same committee, dealt from complete key
/// shares; the new core shares paired with the committee's aux info sign (a dealer and a
/// non-dealer), verified by libsecp256k1.
#[test]
fn reshare__should_give_cggmp24_shares_that_sign_with_the_committees_aux_info() {
    let fx = Fixtures::load();
    let mut rng = seeded();
    let parties = nodes(4);
    let old = keygen_3_of_4(&fx, &mut rng);
    let public_key = old[&node(0)].public_key();

    let t = Instant::now();
    let params = ReshareParams {
        session: sid(2),
        scheme: Scheme::Cggmp24Secp256k1,
        old_parties: parties.clone(),
        old_threshold: 3,
        dealers: vec![node(0), node(2), node(3)],
        new_parties: parties.clone(),
        new_threshold: 2,
        public_key: public_key.to_vec(),
        old_public_package: None,
    };
    let mut collectors: BTreeMap<NodeId, Collector> = parties
        .iter()
        .map(|p| {
            (
                p.clone(),
                Collector::new(params.clone(), p.clone()).unwrap(),
            )
        })
        .collect();
    for d in &params.dealers {
        let share = old[d].to_bytes().unwrap();
        for (to, deal) in deal(&params, d, &share, &mut rng).unwrap() {
            collectors.get_mut(&to).unwrap().add(d, deal).unwrap();
        }
    }
    let mut new = BTreeMap::new();
    let mut transcripts = Vec::new();
    for (i, (p, c)) in collectors.into_iter().enumerate() {
        assert!(c.is_complete());
        let out = c.finish().unwrap();
        assert_eq!(out.public_key, public_key.to_vec());
        transcripts.push(out.transcript_hash);
        let core = CoreShare::from_bytes(&out.share).unwrap();
        assert_eq!(core.threshold(), 2);
        let share = CggmpKeyShare::from_parts(core, fx.aux(i)).unwrap();
        assert_eq!(share.public_key(), public_key);
        new.insert(p, Arc::new(share));
    }
    assert!(transcripts.windows(2).all(|w| w[0] == w[1]));
    eprintln!(
        "timing: reshare 3-of-4 -> 2-of-4, all parties: {:?}",
        t.elapsed()
    );

    // Two signers, one of which (node1) was not a dealer.
    let signers = vec![node(1), node(3)];
    let digest: [u8; 32] = Sha256::digest(b"reshared cggmp24").into();
    let data = SignData::prehashed(&digest).unwrap();
    let started = signers
        .iter()
        .map(|s| {
            let (e, out) =
                Signing::start(sid(3), new[s].clone(), &signers, data.clone(), &mut rng).unwrap();
            (s.clone(), e, out)
        })
        .collect();
    for sig in ok(local::run(started, Some(&mut rng), None), &signers).values() {
        check_with_libsecp256k1(sig, &public_key, &digest);
    }
}
