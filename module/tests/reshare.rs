//! CGGMP24 resharing end to end: a real 3-of-4 DKG with the fixture aux info
//! (`tests/fixtures`, see `tests/cggmp.rs`), dealers dealing from complete key shares
//! (`CggmpKeyShare::to_bytes`), the new core shares paired with the committee's aux info
//! (`CggmpKeyShare::from_parts`, as the session manager does) and a signature checked with
//! libsecp256k1. Same committee (aux info exists for node0..node3 only), threshold 3 -> 2.
//! Seeded RNG: `SEQMPC_TEST_SEED` reruns a failure.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use secp256k1::ecdsa::Signature;
use secp256k1::{Message, PublicKey, SECP256K1};
use seqmpc_module::proto::{NodeId, Scheme, SessionId};
use seqmpc_module::protocol::cggmp::{
    local, AuxShare, AuxSource, CggmpKeyShare, CoreShare, KeyGen, SignData, Signing,
};
use seqmpc_module::protocol::reshare::{deal, Collector, ReshareParams};
use sha2::{Digest as _, Sha256};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cggmp24-test-fixtures.json"
);

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

fn aux(doc: &serde_json::Value, i: usize) -> AuxShare {
    AuxShare::from_bytes(&serde_json::to_vec(&doc["aux"]["shares"][i]).unwrap()).unwrap()
}

fn done<O>(outcome: local::Outcome<O>) -> BTreeMap<NodeId, O> {
    outcome
        .results
        .into_iter()
        .map(|(n, r)| (n.clone(), r.unwrap_or_else(|e| panic!("{n}: {e}"))))
        .collect()
}

#[test]
fn reshare__should_give_cggmp24_shares_that_sign_with_the_committees_aux_info() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(FIXTURES).unwrap()).unwrap();
    let mut rng = seeded();
    let parties: Vec<NodeId> = (0..4).map(node).collect();

    let started = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let source = AuxSource::Existing(aux(&doc, i));
            let (e, out) =
                KeyGen::start(SessionId([1; 32]), p, &parties, 3, source, &mut rng).unwrap();
            (p.clone(), e, out)
        })
        .collect();
    let old = done(local::run(started, Some(&mut rng), None));
    let public_key = old[&node(0)].public_key();

    let t = Instant::now();
    let params = ReshareParams {
        session: SessionId([2; 32]),
        scheme: Scheme::Cggmp24Secp256k1,
        old_parties: parties.clone(),
        old_threshold: 3,
        dealers: vec![node(0), node(2), node(3)],
        new_parties: parties.clone(),
        new_threshold: 2,
        public_key: public_key.to_vec(),
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
        let share = CggmpKeyShare::from_parts(core, aux(&doc, i)).unwrap();
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
            let (e, out) = Signing::start(
                SessionId([3; 32]),
                new[s].clone(),
                &signers,
                data.clone(),
                &mut rng,
            )
            .unwrap();
            (s.clone(), e, out)
        })
        .collect();
    let sigs = done(local::run(started, Some(&mut rng), None));
    let pk = PublicKey::from_slice(&public_key).unwrap();
    for sig in sigs.values() {
        let s = Signature::from_compact(&sig.rs).unwrap();
        SECP256K1
            .verify_ecdsa(Message::from_digest(digest), &s, &pk)
            .unwrap();
    }
}
