//! Evidence from real FROST DKG packages (frost-core's own `part1`/`part2`), signed with real
//! node keys, tampered the way the fault-injection build does (last byte flipped).

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use frost_core::keys::dkg;
use rand::rngs::OsRng;
use seqmpc_proto::tx::SignedMessage;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, Scheme, SessionId};

use super::{check, Context, EvidenceError};
use crate::protocol::{Committee, FrostScheme};

const SID: SessionId = SessionId([7; 32]);

fn node(i: usize) -> NodeId {
    NodeId::new(format!("node{i}")).unwrap()
}

/// Three node keys and their registry.
struct Keys(Vec<SigningKey>);

impl Keys {
    fn new() -> Keys {
        Keys((0..3).map(|_| SigningKey::generate(&mut OsRng)).collect())
    }
    fn key_of(&self) -> impl Fn(&NodeId) -> Option<[u8; 32]> + '_ {
        |n| {
            let i: usize = n.as_str().strip_prefix("node")?.parse().ok()?;
            Some(self.0.get(i)?.verifying_key().to_bytes())
        }
    }
    fn sign(&self, from: usize, to: usize, session: SessionId, payload: Payload) -> SignedMessage {
        let envelope = crate::session::codec::encode(&session, payload);
        let (from, to) = (node(from), node(to));
        let digest = wire::p2p_signing_digest(from.as_str(), to.as_str(), &envelope);
        let signature = self.0[from_index(&from)].sign(&digest).to_bytes();
        SignedMessage {
            from,
            to,
            envelope,
            signature,
        }
    }
}

fn from_index(n: &NodeId) -> usize {
    n.as_str()["node".len()..].parse().unwrap()
}

/// node0's round-1 package (to everyone) and its round-2 package to node1, of a 2-of-3 DKG.
fn dkg_packages<C: FrostScheme>() -> (Vec<u8>, Vec<u8>) {
    let parties = [node(0), node(1), node(2)];
    let committee = Committee::<C>::new(&parties).unwrap();
    let mut secrets = BTreeMap::new();
    let mut round1 = BTreeMap::new();
    for p in &parties {
        let id = committee.id(p).unwrap();
        let (secret, pkg) = dkg::part1::<C, _>(id, 3, 2, OsRng).unwrap();
        secrets.insert(id, secret);
        round1.insert(id, pkg);
    }
    let id0 = committee.id(&node(0)).unwrap();
    let id1 = committee.id(&node(1)).unwrap();
    let others: BTreeMap<_, _> = round1
        .iter()
        .filter(|(id, _)| **id != id0)
        .map(|(id, p)| (*id, p.clone()))
        .collect();
    let (_, round2) = dkg::part2(secrets.remove(&id0).unwrap(), &others).unwrap();
    (
        round1[&id0].serialize().unwrap(),
        round2[&id1].serialize().unwrap(),
    )
}

fn keygen(scheme: Scheme) -> Context {
    Context::Keygen {
        session: SID,
        scheme,
        parties: vec![node(0), node(1), node(2)],
        threshold: 2,
    }
}

fn r1(package: Vec<u8>) -> Payload {
    Payload::DkgRound1(wire::DkgRound1 { package })
}

fn r2(package: Vec<u8>) -> Payload {
    Payload::DkgRound2(wire::DkgRound2 { package })
}

fn flip_last(mut b: Vec<u8>) -> Vec<u8> {
    if let Some(x) = b.last_mut() {
        *x ^= 1;
    }
    b
}

fn for_frost(f: impl Fn(Scheme, (Vec<u8>, Vec<u8>))) {
    f(
        Scheme::FrostEd25519,
        dkg_packages::<frost_ed25519::Ed25519Sha512>(),
    );
    f(
        Scheme::FrostSecp256k1Tr,
        dkg_packages::<frost_secp256k1_tr::Secp256K1Sha256TR>(),
    );
}

#[test]
fn check__should_prove_nothing_from_honest_dkg_messages() {
    for_frost(|scheme, (p1, p2)| {
        let keys = Keys::new();
        let ev = [
            keys.sign(0, 1, SID, r1(p1.clone())),
            keys.sign(0, 1, SID, r2(p2.clone())),
        ];
        let proven = check(&keygen(scheme), &node(1), &[node(0)], &ev, keys.key_of()).unwrap();
        assert!(proven.is_empty(), "{scheme}: {proven:?}");
    });
}

#[test]
fn check__should_prove_a_dkg_share_that_fails_the_feldman_check() {
    for_frost(|scheme, (p1, p2)| {
        let keys = Keys::new();
        let ev = [
            keys.sign(0, 1, SID, r1(p1.clone())),
            keys.sign(0, 1, SID, r2(flip_last(p2.clone()))),
        ];
        let proven = check(&keygen(scheme), &node(1), &[node(0)], &ev, keys.key_of()).unwrap();
        assert_eq!(proven.len(), 1, "{scheme}");
        assert_eq!(proven[0].culprit, node(0));
        assert!(
            proven[0].reason.contains("Feldman") || proven[0].reason.contains("decode"),
            "{scheme}: {}",
            proven[0].reason
        );
    });
}

#[test]
fn check__should_prove_a_round1_package_whose_proof_of_knowledge_fails() {
    for_frost(|scheme, (p1, _)| {
        let keys = Keys::new();
        let ev = [keys.sign(0, 1, SID, r1(flip_last(p1.clone())))];
        let proven = check(&keygen(scheme), &node(1), &[node(0)], &ev, keys.key_of()).unwrap();
        assert_eq!(proven.len(), 1, "{scheme}");
        assert!(
            proven[0].reason.contains("proof of knowledge") || proven[0].reason.contains("decode"),
            "{scheme}: {}",
            proven[0].reason
        );
    });
}

#[test]
fn check__should_prove_equivocation_from_two_signed_round1_packages() {
    for_frost(|scheme, (p1, _)| {
        let keys = Keys::new();
        let (other, _) = match scheme {
            Scheme::FrostEd25519 => dkg_packages::<frost_ed25519::Ed25519Sha512>(),
            _ => dkg_packages::<frost_secp256k1_tr::Secp256K1Sha256TR>(),
        };
        let ev = [
            keys.sign(0, 1, SID, r1(p1.clone())),
            keys.sign(0, 1, SID, r1(other)),
        ];
        let proven = check(&keygen(scheme), &node(1), &[node(0)], &ev, keys.key_of()).unwrap();
        assert!(proven[0].reason.contains("two different"), "{proven:?}");
    });
}

#[test]
fn check__should_refuse_messages_that_are_not_genuine_evidence() {
    for_frost(|scheme, (p1, p2)| {
        let keys = Keys::new();
        let ctx = keygen(scheme);
        let run = |ev: &[SignedMessage], culprits: &[NodeId]| {
            check(&ctx, &node(1), culprits, ev, keys.key_of()).unwrap_err()
        };
        let good = keys.sign(0, 1, SID, r1(p1.clone()));
        // Forged: the reporter cannot produce node0's signature.
        let mut forged = keys.sign(1, 1, SID, r2(flip_last(p2.clone())));
        forged.from = node(0);
        assert!(matches!(
            run(&[forged], &[node(0)]),
            EvidenceError::BadSignature { .. }
        ));
        // Altered after signing.
        let mut altered = good.clone();
        altered.envelope = crate::session::codec::encode(&SID, r1(flip_last(p1.clone())));
        assert!(matches!(
            run(&[altered], &[node(0)]),
            EvidenceError::BadSignature { .. }
        ));
        // A message to someone else.
        let to_other = keys.sign(0, 2, SID, r1(p1.clone()));
        assert!(matches!(
            run(&[to_other], &[node(0)]),
            EvidenceError::NotToReporter { .. }
        ));
        // From someone not blamed.
        assert!(matches!(
            run(std::slice::from_ref(&good), &[node(2)]),
            EvidenceError::NotACulprit { .. }
        ));
        // Of another session.
        let other = keys.sign(0, 1, SessionId([8; 32]), r1(p1.clone()));
        assert!(matches!(
            run(&[other], &[node(0)]),
            EvidenceError::NotOfThisSession { .. }
        ));
        // A payload blame cannot rest on.
        let abort = keys.sign(
            0,
            1,
            SID,
            Payload::Abort(wire::SessionAbort { reason: "x".into() }),
        );
        assert!(matches!(
            run(&[abort], &[node(0)]),
            EvidenceError::NotOfThisSession { .. }
        ));
        // An unregistered sender.
        let mut stranger = keys.sign(0, 1, SID, r1(p1.clone()));
        stranger.from = NodeId::new("node9").unwrap();
        assert!(matches!(
            run(&[stranger], &[NodeId::new("node9").unwrap()]),
            EvidenceError::UnknownSender { .. }
        ));
    });
}

#[test]
fn check__should_prove_nothing_for_cggmp24_keygens() {
    let keys = Keys::new();
    let (p1, _) = dkg_packages::<frost_ed25519::Ed25519Sha512>();
    let ev = [keys.sign(0, 1, SID, r1(flip_last(p1)))];
    let proven = check(
        &keygen(Scheme::Cggmp24Secp256k1),
        &node(1),
        &[node(0)],
        &ev,
        keys.key_of(),
    )
    .unwrap();
    assert!(proven.is_empty());
}

/// The ciphersuite is the scheme's: a package of one scheme quoted for the other does not
/// decode, which (signed by its sender) is misbehaviour, and never panics.
#[test]
fn check__should_not_panic_on_a_package_of_the_other_scheme() {
    let keys = Keys::new();
    let (p1, p2) = dkg_packages::<frost_ed25519::Ed25519Sha512>();
    let ev = [keys.sign(0, 1, SID, r1(p1)), keys.sign(0, 1, SID, r2(p2))];
    let proven = check(
        &keygen(Scheme::FrostSecp256k1Tr),
        &node(1),
        &[node(0)],
        &ev,
        keys.key_of(),
    )
    .unwrap();
    // Undecodable under secp256k1-tr: a signed package that does not decode is misbehaviour.
    assert_eq!(proven.len(), 1);
}

// ---- FROST signature shares ----

/// A real 2-of-3 FROST signing (trusted-dealer key of node0..node2, generation 1) by node0,
/// the aggregator, and node1: node1's share and package hash as it sent them, and the context
/// the chain builds for node0's failure report quoting that package.
struct Signed {
    share: Vec<u8>,
    package_hash: Vec<u8>,
    ctx: super::SignContext,
}

fn frost_signing<C: FrostScheme>() -> Signed {
    use crate::protocol::frost_sign::{package_hash, KeyMaterial, SignMsg, SignProgress, Signing};
    use frost_core::keys::{IdentifierList, KeyPackage};
    use std::sync::Arc;

    let parties = vec![node(0), node(1), node(2)];
    let committee = Committee::<C>::new(&parties).unwrap();
    let ids: Vec<_> = parties.iter().map(|p| committee.id(p).unwrap()).collect();
    let (shares, pkp) = frost_core::keys::generate_with_dealer::<C, _>(
        3,
        2,
        IdentifierList::Custom(&ids),
        &mut OsRng,
    )
    .unwrap();
    let km = |i: usize| {
        let kp = KeyPackage::try_from(shares[&ids[i]].clone()).unwrap();
        Arc::new(KeyMaterial::new(kp, pkp.clone(), parties.clone()).unwrap())
    };
    let signers = vec![node(0), node(1)];
    let message = b"pay 1 to node2".to_vec();
    let (_, out0) = Signing::start(
        SID,
        &node(0),
        &signers,
        message.clone(),
        km(0),
        1,
        &mut OsRng,
    )
    .unwrap();
    let (s1, out1) = Signing::start(
        SID,
        &node(1),
        &signers,
        message.clone(),
        km(1),
        1,
        &mut OsRng,
    )
    .unwrap();
    let commitments = |m: &SignMsg| match m {
        SignMsg::Commitments(b) => {
            frost_core::round1::SigningCommitments::<C>::deserialize(b).unwrap()
        }
        SignMsg::Share { .. } => panic!("not round 1"),
    };
    let package = frost_core::SigningPackage::new(
        BTreeMap::from([
            (ids[0], commitments(&out0[0].msg)),
            (ids[1], commitments(&out1[0].msg)),
        ]),
        &message,
    )
    .serialize()
    .unwrap();
    let Ok(SignProgress::Continue(_, out)) = s1.handle(&node(0), out0[0].msg.clone()) else {
        panic!("node1 did not sign");
    };
    let SignMsg::Share {
        share,
        package_hash: hash,
    } = out[0].msg.clone()
    else {
        panic!("node1 sent no share");
    };
    assert_eq!(
        hash,
        package_hash(1, &package),
        "the aggregator's package is node1's"
    );
    Signed {
        share,
        package_hash: hash,
        ctx: super::SignContext {
            session: SID,
            scheme: C::SCHEME,
            parties,
            signers,
            message,
            generation: Some(1),
            public_key_package: pkp.serialize().unwrap(),
            signing_package: package,
        },
    }
}

fn share_msg(share: Vec<u8>, package_hash: Vec<u8>) -> Payload {
    Payload::SignRound2(wire::SignRound2 {
        share,
        package_hash,
    })
}

/// Whether node0's report quoting `quoted` (node1's signed messages to it) against `ctx`
/// proves node1's blame.
fn proves(keys: &Keys, ctx: super::SignContext, quoted: Vec<Payload>) -> Option<String> {
    let ev: Vec<_> = quoted
        .into_iter()
        .map(|p| keys.sign(1, 0, SID, p))
        .collect();
    let proven = check(
        &Context::Sign(ctx),
        &node(0),
        &[node(1)],
        &ev,
        keys.key_of(),
    )
    .unwrap();
    assert!(proven.iter().all(|p| p.culprit == node(1)));
    proven.into_iter().next().map(|p| p.reason)
}

fn for_frost_signing(f: impl Fn(Signed)) {
    f(frost_signing::<frost_ed25519::Ed25519Sha512>());
    f(frost_signing::<frost_secp256k1_tr::Secp256K1Sha256TR>());
}

/// A valid scalar in both encodings that is not the signer's share.
const WRONG_SHARE: [u8; 32] = [1; 32];

#[test]
fn check__should_prove_a_signature_share_that_fails_against_its_verifying_share() {
    for_frost_signing(|s| {
        let keys = Keys::new();
        let honest = proves(
            &keys,
            s.ctx.clone(),
            vec![share_msg(s.share, s.package_hash.clone())],
        );
        assert_eq!(honest, None, "an honest share proves nothing");
        let bad = share_msg(WRONG_SHARE.to_vec(), s.package_hash);
        let why = proves(&keys, s.ctx, vec![bad]).expect("a bad share is proven");
        assert!(why.contains("fails verification"), "{why}");
    });
}

#[test]
fn check__should_prove_nothing_for_another_package_generation_message_or_signer_set() {
    for_frost_signing(|s| {
        let keys = Keys::new();
        let bad = || vec![share_msg(WRONG_SHARE.to_vec(), s.package_hash.clone())];
        // The key changed generation since the request; or the share names generation 1 and
        // the chain holds another.
        for generation in [None, Some(2)] {
            let ctx = super::SignContext {
                generation,
                ..s.ctx.clone()
            };
            assert_eq!(proves(&keys, ctx, bad()), None, "{generation:?}");
        }
        // The quoted package is not the one the share names.
        let ctx = super::SignContext {
            signing_package: flip_last(s.ctx.signing_package.clone()),
            ..s.ctx.clone()
        };
        assert_eq!(proves(&keys, ctx, bad()), None);
        // The package is of another message, or another signer set, than the request's.
        let ctx = super::SignContext {
            message: b"pay 2 to node2".to_vec(),
            ..s.ctx.clone()
        };
        assert_eq!(proves(&keys, ctx, bad()), None);
        let ctx = super::SignContext {
            signers: vec![node(0), node(1), node(2)],
            ..s.ctx.clone()
        };
        assert_eq!(proves(&keys, ctx, bad()), None);
        // The chain holds no public key package (a key from before they were reported).
        let ctx = super::SignContext {
            public_key_package: Vec::new(),
            ..s.ctx.clone()
        };
        assert_eq!(proves(&keys, ctx, bad()), None);
    });
}

#[test]
fn check__should_prove_undecodable_and_equivocating_signature_shares() {
    for_frost_signing(|s| {
        let keys = Keys::new();
        // Also without the package: the aggregator quotes none when a share does not decode.
        let no_package = super::SignContext {
            signing_package: Vec::new(),
            ..s.ctx.clone()
        };
        for ctx in [s.ctx.clone(), no_package] {
            let undecodable = vec![share_msg(vec![0xff; 32], s.package_hash.clone())];
            let why = proves(&keys, ctx, undecodable).expect("an undecodable share is proven");
            assert!(why.contains("does not decode"), "{why}");
        }
        let twice = vec![
            share_msg(s.share.clone(), s.package_hash.clone()),
            share_msg(WRONG_SHARE.to_vec(), s.package_hash.clone()),
        ];
        let why = proves(&keys, s.ctx, twice).expect("two shares are proven");
        assert!(why.contains("two different signature shares"), "{why}");
    });
}

mod no_panic {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::reshare::ReshareParams;

    fn reshare() -> Context {
        Context::Reshare(ReshareParams {
            session: SID,
            scheme: Scheme::FrostEd25519,
            old_parties: vec![node(0), node(1), node(2)],
            old_threshold: 2,
            dealers: vec![node(0), node(2)],
            new_parties: vec![node(0), node(1), node(2)],
            new_threshold: 2,
            public_key: vec![0x58; 32],
            old_public_package: None,
        })
    }

    fn payload() -> impl Strategy<Value = Payload> {
        let bytes = || vec(any::<u8>(), 0..300);
        prop_oneof![
            bytes().prop_map(r1),
            bytes().prop_map(r2),
            (bytes(), bytes(), bytes()).prop_map(|(commitment, old_public, share)| {
                Payload::ReshareDeal(wire::ReshareDeal {
                    commitment,
                    old_public,
                    share,
                })
            }),
            (bytes(), bytes()).prop_map(|(share, hash)| share_msg(share, hash)),
        ]
    }

    fn context() -> impl Strategy<Value = Context> {
        prop_oneof![
            Just(keygen(Scheme::FrostEd25519)),
            Just(keygen(Scheme::FrostSecp256k1Tr)),
            Just(keygen(Scheme::Cggmp24Secp256k1)),
            Just(reshare()),
            Just(Context::Sign(
                frost_signing::<frost_ed25519::Ed25519Sha512>().ctx
            )),
            Just(Context::Sign(
                frost_signing::<frost_secp256k1_tr::Secp256K1Sha256TR>().ctx
            )),
            // A quoted package and public key package of arbitrary bytes.
            (vec(any::<u8>(), 0..300), vec(any::<u8>(), 0..300)).prop_map(|(sp, pkp)| {
                let mut c = frost_signing::<frost_ed25519::Ed25519Sha512>().ctx;
                c.signing_package = sp;
                c.public_key_package = pkp;
                Context::Sign(c)
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Genuinely signed messages with arbitrary contents: a verdict or a typed error,
        /// never a panic.
        #[test]
        fn check__should_not_panic_on_signed_arbitrary_payloads(
            ctx in context(),
            payloads in vec(payload(), 0..4),
        ) {
            let keys = Keys::new();
            let ev: Vec<_> = payloads.into_iter().map(|p| keys.sign(0, 1, SID, p)).collect();
            let _ = check(&ctx, &node(1), &[node(0)], &ev, keys.key_of());
        }
    }
}
