//! n parties in one process over a simulated router with a seeded, printed RNG. Every test runs
//! for both FROST schemes (modules `ed25519` and `secp256k1_tr`); final signatures are checked
//! with a verifier independent of frost and of our code: ed25519-dalek `verify_strict` and
//! libsecp256k1 `verify_schnorr` (BIP340, x-only key).
#![allow(non_snake_case)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use seqmpc_proto::{NodeId, Scheme, SessionId};

use super::frost_dkg::{
    transcript_digest, AnyDkg, AnyDkgProgress, Dkg, DkgMsg, DkgOutput, DkgProgress,
};
use super::frost_sign::{AnyKeyMaterial, KeyMaterial, SignMsg, SignProgress, Signing};
use super::{FrostScheme, Outgoing};
use crate::error::ProtocolError;

fn seeded() -> StdRng {
    let seed = std::env::var("SEQMPC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rngs::OsRng.next_u64());
    eprintln!("SEQMPC_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn nodes(n: usize) -> Vec<NodeId> {
    (0..n)
        .map(|i| NodeId::new(format!("node{i}")).unwrap())
        .collect()
}

const SID: SessionId = SessionId([7; 32]);

/// A scheme under test, with a reference verifier that shares no code with frost or with
/// [`FrostScheme::verify_independently`].
trait TestScheme: FrostScheme {
    fn reference_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool;
}

impl TestScheme for Ed25519Sha512 {
    fn reference_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&public_key.try_into().unwrap()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(signature).unwrap();
        vk.verify_strict(message, &sig).is_ok()
    }
}

impl TestScheme for Secp256K1Sha256TR {
    fn reference_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let pk =
            secp256k1::XOnlyPublicKey::from_byte_array(public_key.try_into().unwrap()).unwrap();
        let sig = secp256k1::schnorr::Signature::from_byte_array(signature.try_into().unwrap());
        secp256k1::SECP256K1
            .verify_schnorr(&sig, message, &pk)
            .is_ok()
    }
}

type Tamper<'a> = &'a mut dyn FnMut(&NodeId, &mut Outgoing<DkgMsg>);

/// Runs a DKG with shuffled delivery; `tamper` may rewrite any message in flight.
fn run_dkg<C: FrostScheme>(
    parties: &[NodeId],
    t: u32,
    rng: &mut StdRng,
    tamper: Tamper<'_>,
) -> BTreeMap<NodeId, Result<DkgOutput<C>, ProtocolError>> {
    let mut states = BTreeMap::new();
    let mut queue: VecDeque<(NodeId, Outgoing<DkgMsg>)> = VecDeque::new();
    for p in parties {
        let (dkg, out) = Dkg::<C>::start(SID, p, parties, t, rng).unwrap();
        states.insert(p.clone(), Some(dkg));
        queue.extend(out.into_iter().map(|o| (p.clone(), o)));
    }
    let mut results = BTreeMap::new();
    while !queue.is_empty() {
        let mut batch: Vec<_> = queue.drain(..).collect();
        batch.shuffle(rng);
        for (from, mut o) in batch {
            tamper(&from, &mut o);
            let Some(slot) = states.get_mut(&o.to) else {
                continue;
            };
            let Some(dkg) = slot.take() else { continue };
            match dkg.handle(&from, o.msg) {
                Ok(DkgProgress::Continue(d, out)) => {
                    *slot = Some(d);
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                }
                Ok(DkgProgress::Done(res, out)) => {
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                    results.insert(o.to.clone(), Ok(*res));
                }
                Err(e) => {
                    results.insert(o.to.clone(), Err(e));
                }
            }
        }
    }
    results
}

fn run_sign<C: FrostScheme>(
    keys: &BTreeMap<NodeId, Arc<KeyMaterial<C>>>,
    signers: &[NodeId],
    msg: &[u8],
    rng: &mut StdRng,
) -> Result<Vec<u8>, ProtocolError> {
    let mut states = BTreeMap::new();
    let mut queue = VecDeque::new();
    for s in signers {
        let (st, out) = Signing::start(SID, s, signers, msg.to_vec(), keys[s].clone(), 1, rng)?;
        states.insert(s.clone(), Some(st));
        queue.extend(out.into_iter().map(|o| (s.clone(), o)));
    }
    let mut signatures: BTreeMap<NodeId, Vec<u8>> = BTreeMap::new();
    while !queue.is_empty() {
        let mut batch: Vec<_> = queue.drain(..).collect();
        batch.shuffle(rng);
        for (from, o) in batch {
            let Some(slot) = states.get_mut(&o.to) else {
                continue;
            };
            let Some(st) = slot.take() else { continue };
            match st.handle(&from, o.msg)? {
                SignProgress::Continue(s, out) => {
                    *slot = Some(s);
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                }
                SignProgress::Finished {
                    signature: sig,
                    out,
                } => {
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                    signatures.insert(o.to.clone(), sig);
                }
                SignProgress::Blamed { error, .. } => return Err(error),
            }
        }
    }
    // Every signer gets every share, so every signer holds the same verified signature.
    let first = signatures.values().next().cloned();
    assert_eq!(
        signatures.len(),
        signers.len(),
        "a signer ended without the signature"
    );
    assert!(signatures.values().all(|s| Some(s) == first.as_ref()));
    first.ok_or_else(|| ProtocolError::Bug("no signature".into()))
}

fn materials<C: FrostScheme>(
    parties: &[NodeId],
    out: BTreeMap<NodeId, Result<DkgOutput<C>, ProtocolError>>,
) -> BTreeMap<NodeId, Arc<KeyMaterial<C>>> {
    out.into_iter()
        .map(|(n, r)| {
            let km = KeyMaterial::from_dkg(r.unwrap(), parties.to_vec()).unwrap();
            (n, Arc::new(km))
        })
        .collect()
}

fn keygen<C: FrostScheme>(
    parties: &[NodeId],
    t: u32,
    rng: &mut StdRng,
) -> BTreeMap<NodeId, Arc<KeyMaterial<C>>> {
    materials(parties, run_dkg::<C>(parties, t, rng, &mut |_, _| {}))
}

// ---- test bodies, generic over the scheme; instantiated for both below ----

fn dkg_agreement<C: TestScheme>() {
    let mut rng = seeded();
    let parties = nodes(4);
    let out = run_dkg::<C>(&parties, 3, &mut rng, &mut |_, _| {});
    assert_eq!(out.len(), 4);
    let first = out.values().next().unwrap().as_ref().unwrap();
    for r in out.values() {
        let r = r.as_ref().unwrap();
        assert_eq!(r.public_key, first.public_key);
        assert_eq!(r.transcript_hash, first.transcript_hash);
    }
    // Both schemes expose a 32-byte key to the chain (secp256k1-tr: x-only).
    assert_eq!(first.public_key.len(), 32);
    assert_eq!(
        first.public_key,
        C::chain_public_key(first.public_key_package.verifying_key()).unwrap()
    );
}

fn sign_every_subset<C: TestScheme>() {
    let mut rng = seeded();
    let parties = nodes(4);
    let keys = keygen::<C>(&parties, 3, &mut rng);
    let pk = keys[&parties[0]].public_key().to_vec();
    for skip in 0..4 {
        let signers: Vec<NodeId> = parties
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, p)| p.clone())
            .collect();
        let msg = format!("message {skip}");
        let sig = run_sign(&keys, &signers, msg.as_bytes(), &mut rng).unwrap();
        assert_eq!(sig.len(), 64);
        assert!(C::reference_verify(&pk, msg.as_bytes(), &sig));
        assert!(!C::reference_verify(&pk, b"another message", &sig));
    }
    // All four signers (more than the threshold) work too.
    let sig = run_sign(&keys, &parties, b"all", &mut rng).unwrap();
    assert!(C::reference_verify(&pk, b"all", &sig));
}

fn refuse_too_few_signers<C: TestScheme>() {
    let mut rng = seeded();
    let parties = nodes(3);
    let keys = keygen::<C>(&parties, 3, &mut rng);
    let e = run_sign(&keys, &parties[..2], b"m", &mut rng).unwrap_err();
    assert!(matches!(e, ProtocolError::Local(_)), "{e}");
}

fn blame_bad_share_to_one_party<C: TestScheme>() {
    // frost#577: node2 sends a corrupted round-2 share to node0 only.
    let mut rng = seeded();
    let parties = nodes(4);
    let culprit = parties[2].clone();
    let victim = parties[0].clone();
    let c2 = culprit.clone();
    let v2 = victim.clone();
    let mut swapped = None;
    let out = run_dkg::<C>(&parties, 3, &mut rng, &mut |from, o| {
        if from == &c2 && o.to == v2 {
            if let DkgMsg::Round2(bytes) = &mut o.msg {
                // Keep the encoding valid: replace the scalar with another valid scalar (a bit
                // in the middle of either encoding, little- or big-endian).
                let pkg = frost_core::keys::dkg::round2::Package::<C>::deserialize(bytes).unwrap();
                let mut s = pkg.signing_share().serialize();
                s[16] ^= 1;
                let sh = frost_core::keys::SigningShare::<C>::deserialize(&s).unwrap();
                *bytes = frost_core::keys::dkg::round2::Package::new(sh)
                    .serialize()
                    .unwrap();
                swapped = Some(());
            }
        }
    });
    assert!(swapped.is_some());
    let e = out[&victim].as_ref().unwrap_err();
    assert_eq!(e.culprits(), &[culprit], "{e}");
    // The other parties finish, but the chain never sees all parties agree: no READY key.
    assert!(out
        .iter()
        .filter(|(n, _)| **n != victim)
        .all(|(_, r)| r.is_ok()));
}

fn duplicates_and_equivocation<C: TestScheme>() {
    let mut rng = seeded();
    let parties = nodes(3);
    let (a, _) = Dkg::<C>::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
    let (_, out_b) = Dkg::<C>::start(SID, &parties[1], &parties, 2, &mut rng).unwrap();
    let (_, out_b2) = Dkg::<C>::start(SID, &parties[1], &parties, 2, &mut rng).unwrap();
    let to_a =
        |out: &Vec<Outgoing<DkgMsg>>| out.iter().find(|o| o.to == parties[0]).unwrap().msg.clone();
    let a = match a.handle(&parties[1], to_a(&out_b)).unwrap() {
        DkgProgress::Continue(d, _) => d,
        DkgProgress::Done(..) => panic!("done too early"),
    };
    let a = match a.handle(&parties[1], to_a(&out_b)).unwrap() {
        DkgProgress::Continue(d, out) => {
            assert!(out.is_empty());
            d
        }
        DkgProgress::Done(..) => panic!("done too early"),
    };
    let e = a.handle(&parties[1], to_a(&out_b2)).unwrap_err();
    assert_eq!(e.culprits(), &[parties[1].clone()]);
}

fn blame_undecodable_and_unknown<C: TestScheme>() {
    let mut rng = seeded();
    let parties = nodes(3);
    let (a, _) = Dkg::<C>::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
    let e = a
        .handle(&parties[1], DkgMsg::Round1(vec![1, 2, 3]))
        .unwrap_err();
    assert_eq!(e.culprits(), &[parties[1].clone()]);
    let (a, _) = Dkg::<C>::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
    let stranger = NodeId::new("node9").unwrap();
    let e = a.handle(&stranger, DkgMsg::Round1(vec![])).unwrap_err();
    assert_eq!(e.culprits(), &[stranger]);
}

/// The aggregator (node0) of a 2-of-3 signing with node1 in round 2, and node1's share message
/// (share, package hash), which node1 computed for generation `generation` of its key.
fn aggregator_and_share<C: TestScheme>(generation: u64) -> (Signing<C>, Vec<u8>, Vec<u8>) {
    let mut rng = seeded();
    let parties = nodes(3);
    let keys = keygen::<C>(&parties, 2, &mut rng);
    let signers = vec![parties[0].clone(), parties[1].clone()];
    let start = |me: &NodeId, g: u64, rng: &mut StdRng| {
        let key = keys[me].clone();
        Signing::start(SID, me, &signers, b"m".to_vec(), key, g, rng).unwrap()
    };
    let (agg, agg_out) = start(&signers[0], 1, &mut rng);
    let (other, out) = start(&signers[1], generation, &mut rng);
    let Ok(SignProgress::Continue(_, share)) = other.handle(&signers[0], agg_out[0].msg.clone())
    else {
        panic!("node1 did not sign");
    };
    let Some(Outgoing {
        msg: SignMsg::Share {
            share,
            package_hash,
        },
        ..
    }) = share.into_iter().next()
    else {
        panic!("node1 sent no share");
    };
    let agg = match agg.handle(&signers[1], out[0].msg.clone()).unwrap() {
        SignProgress::Continue(s, _) => s,
        _ => panic!("early"),
    };
    (agg, share, package_hash)
}

fn blame_bad_signature_share<C: TestScheme>() {
    let (agg, _, package_hash) = aggregator_and_share::<C>(1);
    let node1 = nodes(2).pop().unwrap();
    // node1 sends, for the right package, a share that is a valid scalar but not its share:
    // the aggregator blames it and hands out the package that share names.
    let bad = frost_core::round2::SignatureShare::<C>::deserialize(&[1u8; 32]).unwrap();
    let msg = SignMsg::Share {
        share: bad.serialize(),
        package_hash: package_hash.clone(),
    };
    let Ok(SignProgress::Blamed {
        error,
        signing_package,
        out,
    }) = agg.handle(&node1, msg)
    else {
        panic!("a bad share was not blamed");
    };
    assert_eq!(error.culprits(), &[node1], "{error}");
    assert_eq!(package_hash, package_hash_of(1, &signing_package));
    assert!(
        out.is_empty(),
        "the aggregator had sent its share when it signed"
    );
}

fn package_hash_of(generation: u64, package: &[u8]) -> Vec<u8> {
    super::frost_sign::package_hash(generation, package).to_vec()
}

/// A share computed for another key generation (or package) is refused without a culprit:
/// the aggregator cannot tell who is at fault.
fn refuse_a_share_of_another_generation<C: TestScheme>() {
    let (agg, share, package_hash) = aggregator_and_share::<C>(2);
    let node1 = nodes(2).pop().unwrap();
    let msg = SignMsg::Share {
        share,
        package_hash,
    };
    let Err(e) = agg.handle(&node1, msg) else {
        panic!("a share of another generation was taken");
    };
    assert!(e.culprits().is_empty(), "{e}");
    assert!(e.to_string().contains("another signing package"), "{e}");
}

/// Party `me` of `parties` starts signing `m` with every party as a signer.
fn start_signing<C: FrostScheme>(
    parties: &[NodeId],
    keys: &BTreeMap<NodeId, Arc<KeyMaterial<C>>>,
    me: usize,
    rng: &mut StdRng,
) -> (Signing<C>, Vec<Outgoing<SignMsg>>) {
    Signing::start(
        SID,
        &parties[me],
        parties,
        b"m".to_vec(),
        keys[&parties[me]].clone(),
        1,
        rng,
    )
    .unwrap()
}

fn blame_equivocating_commitments<C: TestScheme>() {
    let mut rng = seeded();
    let parties = nodes(3);
    let keys = keygen::<C>(&parties, 3, &mut rng);
    let start = |me: usize, rng: &mut StdRng| start_signing(&parties, &keys, me, rng);
    let (s0, _) = start(0, &mut rng);
    let (_, out1) = start(1, &mut rng);
    let (_, out1b) = start(1, &mut rng);
    let s0 = match s0.handle(&parties[1], out1[0].msg.clone()).unwrap() {
        SignProgress::Continue(s, _) => s,
        _ => panic!("early"),
    };
    // The same commitments again are a harmless duplicate; different ones are equivocation.
    let s0 = match s0.handle(&parties[1], out1[0].msg.clone()).unwrap() {
        SignProgress::Continue(s, out) => {
            assert!(out.is_empty());
            s
        }
        _ => panic!("early"),
    };
    let e = s0.handle(&parties[1], out1b[0].msg.clone()).unwrap_err();
    assert_eq!(e.culprits(), &[parties[1].clone()], "{e}");
}

fn waiting_for_silent_signers<C: TestScheme>() {
    let mut rng = seeded();
    let parties = nodes(3);
    let keys = keygen::<C>(&parties, 3, &mut rng);
    let start = |me: usize, rng: &mut StdRng| start_signing(&parties, &keys, me, rng);
    let (s0, _) = start(0, &mut rng);
    let (s1, out1) = start(1, &mut rng);
    let (_, out2) = start(2, &mut rng);
    assert_eq!(
        s0.waiting_for(),
        vec![parties[1].clone(), parties[2].clone()]
    );
    assert_eq!(
        s1.waiting_for(),
        vec![parties[0].clone(), parties[2].clone()]
    );
    // The aggregator (node0) has node1's commitments: only node2 is silent.
    let s0 = match s0.handle(&parties[1], out1[0].msg.clone()).unwrap() {
        SignProgress::Continue(s, _) => s,
        _ => panic!("early"),
    };
    assert_eq!(s0.waiting_for(), vec![parties[2].clone()]);
    // With every commitment, the aggregator waits for the other signers' shares.
    let to0 =
        |out: &[Outgoing<SignMsg>]| out.iter().find(|o| o.to == parties[0]).unwrap().msg.clone();
    let s0 = match s0.handle(&parties[2], to0(&out2)).unwrap() {
        SignProgress::Continue(s, _) => s,
        _ => panic!("early"),
    };
    assert_eq!(
        s0.waiting_for(),
        vec![parties[1].clone(), parties[2].clone()]
    );
}

macro_rules! for_both_schemes {
    ($($name:ident => $body:ident;)*) => {
        mod ed25519 {
            $(#[test] fn $name() { super::$body::<frost_ed25519::Ed25519Sha512>() })*
        }
        mod secp256k1_tr {
            $(#[test] fn $name() { super::$body::<frost_secp256k1_tr::Secp256K1Sha256TR>() })*
        }
    };
}

for_both_schemes! {
    frost_dkg__should_give_every_party_the_same_key_and_transcript => dkg_agreement;
    frost_sign__should_produce_verifiable_signatures_for_every_signer_subset => sign_every_subset;
    frost_sign__should_refuse_fewer_signers_than_the_threshold => refuse_too_few_signers;
    frost_dkg__should_blame_the_sender_of_a_bad_share_to_one_party_only => blame_bad_share_to_one_party;
    frost_dkg__should_ignore_duplicates_and_blame_equivocation => duplicates_and_equivocation;
    frost_dkg__should_blame_undecodable_and_unknown_senders => blame_undecodable_and_unknown;
    frost_sign__should_blame_a_bad_signature_share => blame_bad_signature_share;
    frost_sign__should_refuse_a_share_of_another_key_generation_without_blame => refuse_a_share_of_another_generation;
    frost_sign__should_ignore_duplicate_and_blame_equivocating_commitments => blame_equivocating_commitments;
    frost_sign__should_say_which_signers_it_still_waits_for => waiting_for_silent_signers;
}

// ---- secp256k1-tr specifics ----

/// The x-only key drops the parity of the group key: signatures must verify for group keys
/// of either parity. Runs DKGs until both parities were seen (each is 1/2 per run).
#[test]
fn frost_secp256k1_tr__should_sign_bip340_under_the_x_only_key_for_either_parity() {
    let mut rng = seeded();
    let parties = nodes(3);
    let mut seen = BTreeMap::new();
    for round in 0..40 {
        let keys = keygen::<Secp256K1Sha256TR>(&parties, 2, &mut rng);
        let km = &keys[&parties[0]];
        let sec1 = km.public_key_package().verifying_key().serialize().unwrap();
        assert_eq!(sec1.len(), 33);
        assert!(sec1[0] == 0x02 || sec1[0] == 0x03);
        assert_eq!(km.public_key(), &sec1[1..]);
        let msg = format!("parity round {round}");
        let sig = run_sign(&keys, &parties[1..], msg.as_bytes(), &mut rng).unwrap();
        assert!(Secp256K1Sha256TR::reference_verify(
            km.public_key(),
            msg.as_bytes(),
            &sig
        ));
        // The 33-byte key, parsed by libsecp256k1 and reduced to x-only, is the same key.
        let full =
            secp256k1::PublicKey::from_byte_array_compressed(sec1.as_slice().try_into().unwrap())
                .unwrap();
        assert_eq!(&full.x_only_public_key().0.serialize()[..], km.public_key());
        seen.insert(sec1[0], ());
        if seen.len() == 2 {
            return;
        }
    }
    panic!("40 DKGs gave group keys of one parity only");
}

/// Scheme dispatch: the session manager's entry points pick the ciphersuite from the scheme,
/// and a share never decodes as the other scheme's.
#[test]
fn any_dkg__should_run_the_requested_scheme_and_keep_shares_apart() {
    let mut rng = seeded();
    let parties = nodes(2);
    for scheme in Scheme::FROST {
        let mut states = BTreeMap::new();
        let mut queue = VecDeque::new();
        for p in &parties {
            let (d, out) = AnyDkg::start(scheme, SID, p, &parties, 2, &mut rng).unwrap();
            states.insert(p.clone(), Some(d));
            queue.extend(out.into_iter().map(|o| (p.clone(), o)));
        }
        let mut outputs = Vec::new();
        while let Some((from, o)) = queue.pop_front() {
            let d = states.get_mut(&o.to).unwrap().take().unwrap();
            match d.handle(&from, o.msg).unwrap() {
                AnyDkgProgress::Continue(d, out) => {
                    *states.get_mut(&o.to).unwrap() = Some(d);
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                }
                AnyDkgProgress::Done(res, out) => {
                    queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                    outputs.push(res);
                }
            }
        }
        assert_eq!(outputs.len(), 2);
        let out = outputs.pop().unwrap();
        assert_eq!(out.scheme(), scheme);
        let bytes = out.encode_packages().unwrap();
        let pk = out.public_key().to_vec();
        let km = AnyKeyMaterial::decode(scheme, &bytes, parties.clone()).unwrap();
        assert_eq!(km.scheme(), scheme);
        assert_eq!(km.public_key(), pk.as_slice());
        let other = Scheme::FROST.into_iter().find(|s| *s != scheme).unwrap();
        assert!(AnyKeyMaterial::decode(other, &bytes, parties.clone()).is_err());
    }
}

/// The transcript hash is domain-separated by scheme: identical packages and session give
/// different hashes under the two schemes.
#[test]
fn frost_dkg__should_bind_the_scheme_into_the_transcript() {
    let packages = vec![
        (vec![1u8; 32], vec![2u8; 40]),
        (vec![3u8; 32], vec![4u8; 40]),
    ];
    let a = transcript_digest(Scheme::FrostEd25519, &SID, &packages);
    let b = transcript_digest(Scheme::FrostSecp256k1Tr, &SID, &packages);
    assert_ne!(a, b);
    assert_eq!(a, transcript_digest(Scheme::FrostEd25519, &SID, &packages));
    assert_ne!(
        a,
        transcript_digest(Scheme::FrostEd25519, &SessionId([8; 32]), &packages)
    );
}
