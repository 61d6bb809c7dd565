//! n parties in one process over a simulated router with a seeded, printed RNG.
#![allow(non_snake_case)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use seqmpc_proto::{NodeId, SessionId};

use super::frost_dkg::{Dkg, DkgMsg, DkgOutput, DkgProgress};
use super::frost_sign::{KeyMaterial, SignMsg, SignProgress, Signing};
use super::Outgoing;
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

type Tamper<'a> = &'a mut dyn FnMut(&NodeId, &mut Outgoing<DkgMsg>);

/// Runs a DKG with shuffled delivery; `tamper` may rewrite any message in flight.
fn run_dkg(
    parties: &[NodeId],
    t: u32,
    rng: &mut StdRng,
    tamper: Tamper<'_>,
) -> BTreeMap<NodeId, Result<DkgOutput, ProtocolError>> {
    let mut states = BTreeMap::new();
    let mut queue: VecDeque<(NodeId, Outgoing<DkgMsg>)> = VecDeque::new();
    for p in parties {
        let (dkg, out) = Dkg::start(SID, p, parties, t, rng).unwrap();
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

fn run_sign(
    keys: &BTreeMap<NodeId, Arc<KeyMaterial>>,
    signers: &[NodeId],
    msg: &[u8],
    rng: &mut StdRng,
) -> Result<Vec<u8>, ProtocolError> {
    let mut states = BTreeMap::new();
    let mut queue = VecDeque::new();
    for s in signers {
        let (st, out) = Signing::start(SID, s, signers, msg.to_vec(), keys[s].clone(), rng)?;
        states.insert(s.clone(), Some(st));
        queue.extend(out.into_iter().map(|o| (s.clone(), o)));
    }
    let mut signature = None;
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
                    if sig.is_some() {
                        signature = sig;
                    }
                }
            }
        }
    }
    signature.ok_or_else(|| ProtocolError::Bug("no signature".into()))
}

fn materials(
    parties: &[NodeId],
    out: BTreeMap<NodeId, Result<DkgOutput, ProtocolError>>,
) -> BTreeMap<NodeId, Arc<KeyMaterial>> {
    out.into_iter()
        .map(|(n, r)| {
            let r = r.unwrap();
            (
                n,
                Arc::new(KeyMaterial {
                    key_package: r.key_package,
                    public_key_package: r.public_key_package,
                    parties: parties.to_vec(),
                }),
            )
        })
        .collect()
}

#[test]
fn frost_dkg__should_give_every_party_the_same_key_and_transcript() {
    let mut rng = seeded();
    let parties = nodes(4);
    let out = run_dkg(&parties, 3, &mut rng, &mut |_, _| {});
    assert_eq!(out.len(), 4);
    let first = out.values().next().unwrap().as_ref().unwrap();
    for r in out.values() {
        let r = r.as_ref().unwrap();
        assert_eq!(r.public_key, first.public_key);
        assert_eq!(r.transcript_hash, first.transcript_hash);
    }
    assert_eq!(first.public_key.len(), 32);
}

#[test]
fn frost_sign__should_produce_rfc8032_signatures_for_every_signer_subset() {
    let mut rng = seeded();
    let parties = nodes(4);
    let keys = materials(&parties, run_dkg(&parties, 3, &mut rng, &mut |_, _| {}));
    let pk = keys[&parties[0]]
        .public_key_package
        .verifying_key()
        .serialize()
        .unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk.try_into().unwrap()).unwrap();
    for skip in 0..4 {
        let signers: Vec<NodeId> = parties
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, p)| p.clone())
            .collect();
        let msg = format!("message {skip}");
        let sig = run_sign(&keys, &signers, msg.as_bytes(), &mut rng).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        vk.verify_strict(msg.as_bytes(), &sig).unwrap();
    }
}

#[test]
fn frost_sign__should_refuse_fewer_signers_than_the_threshold() {
    let mut rng = seeded();
    let parties = nodes(3);
    let keys = materials(&parties, run_dkg(&parties, 3, &mut rng, &mut |_, _| {}));
    let e = run_sign(&keys, &parties[..2], b"m", &mut rng).unwrap_err();
    assert!(matches!(e, ProtocolError::Local(_)), "{e}");
}

#[test]
fn frost_dkg__should_blame_the_sender_of_a_bad_share_to_one_party_only() {
    // frost#577: node2 sends a corrupted round-2 share to node0 only.
    let mut rng = seeded();
    let parties = nodes(4);
    let culprit = parties[2].clone();
    let victim = parties[0].clone();
    let c2 = culprit.clone();
    let v2 = victim.clone();
    let mut swapped = None;
    let out = run_dkg(&parties, 3, &mut rng, &mut |from, o| {
        if from == &c2 && o.to == v2 {
            if let DkgMsg::Round2(bytes) = &mut o.msg {
                // Keep the encoding valid: replace the scalar with another valid scalar.
                let pkg = frost_ed25519::keys::dkg::round2::Package::deserialize(bytes).unwrap();
                let share = pkg.signing_share();
                let mut s = share.serialize();
                s[0] ^= 1;
                if let Ok(sh) = frost_ed25519::keys::SigningShare::deserialize(&s) {
                    *bytes = frost_ed25519::keys::dkg::round2::Package::new(sh)
                        .serialize()
                        .unwrap();
                    swapped = Some(());
                }
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

#[test]
fn frost_dkg__should_ignore_duplicates_and_blame_equivocation() {
    let mut rng = seeded();
    let parties = nodes(3);
    let (a, _) = Dkg::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
    let (_, out_b) = Dkg::start(SID, &parties[1], &parties, 2, &mut rng).unwrap();
    let (_, out_b2) = Dkg::start(SID, &parties[1], &parties, 2, &mut rng).unwrap();
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

#[test]
fn frost_dkg__should_blame_undecodable_and_unknown_senders() {
    let mut rng = seeded();
    let parties = nodes(3);
    let (a, _) = Dkg::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
    let e = a
        .handle(&parties[1], DkgMsg::Round1(vec![1, 2, 3]))
        .unwrap_err();
    assert_eq!(e.culprits(), &[parties[1].clone()]);
    let (a, _) = Dkg::start(SID, &parties[0], &parties, 2, &mut rng).unwrap();
    let stranger = NodeId::new("node9").unwrap();
    let e = a.handle(&stranger, DkgMsg::Round1(vec![])).unwrap_err();
    assert_eq!(e.culprits(), &[stranger]);
}

#[test]
fn frost_sign__should_blame_a_bad_signature_share() {
    let mut rng = seeded();
    let parties = nodes(3);
    let keys = materials(&parties, run_dkg(&parties, 2, &mut rng, &mut |_, _| {}));
    let signers = vec![parties[0].clone(), parties[1].clone()];
    let (agg, _) = Signing::start(
        SID,
        &signers[0],
        &signers,
        b"m".to_vec(),
        keys[&signers[0]].clone(),
        &mut rng,
    )
    .unwrap();
    let (other, out) = Signing::start(
        SID,
        &signers[1],
        &signers,
        b"m".to_vec(),
        keys[&signers[1]].clone(),
        &mut rng,
    )
    .unwrap();
    drop(other);
    // node1 commits, then sends a share computed for a different message.
    let agg = match agg.handle(&signers[1], out[0].msg.clone()).unwrap() {
        SignProgress::Continue(s, _) => s,
        SignProgress::Finished { .. } => panic!("early"),
    };
    let bad = frost_ed25519::round2::SignatureShare::deserialize(&[1u8; 32]).unwrap();
    let e = agg
        .handle(&signers[1], SignMsg::Share(bad.serialize()))
        .unwrap_err();
    assert_eq!(e.culprits(), &[signers[1].clone()], "{e}");
}
