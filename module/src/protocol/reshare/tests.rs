//! Resharing, all parties in one process with a seeded, printed RNG
//! (`SEQMPC_TEST_SEED=<n>` replays a run). Old FROST keys come from our DKG engine (so
//! secp256k1-tr keys carry frost's BIP341 tweak), old CGGMP24 keys from cggmp24's trusted
//! dealer (so the tests know the secret and can reconstruct it). New FROST shares sign with
//! our signing engine, which verifies the signature independently of frost.

use std::collections::{BTreeMap, VecDeque};

use cggmp24::generic_ec::{NonZero, Point, Scalar, SecretScalar};
use cggmp24::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo, Validate, VssSetup};
use frost_secp256k1_tr::Secp256K1Sha256TR;
use generic_ec_zkp::polynomial::{lagrange_coefficient_at_zero, Polynomial};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use zeroize::Zeroizing;

use super::{check_deal_alone, deal, Collector, Deal, ReshareOutput, ReshareParams};
use crate::error::ProtocolError;
use crate::protocol::cggmp::{CoreShare, Curve, Parties};
use crate::protocol::frost_dkg::{AnyDkg, AnyDkgProgress};
use crate::protocol::frost_sign::{AnyKeyMaterial, AnySignProgress, AnySigning, KeyMaterial};

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

fn nodes(ix: &[usize]) -> Vec<NodeId> {
    ix.iter().map(|i| node(*i)).collect()
}

const SID: SessionId = SessionId([9; 32]);

/// A key of some committee: every party's stored share bytes.
struct OldKey {
    scheme: Scheme,
    parties: Vec<NodeId>,
    threshold: u16,
    public_key: Vec<u8>,
    shares: BTreeMap<NodeId, Zeroizing<Vec<u8>>>,
    /// FROST only: the public key package every party agreed on (what the chain records).
    public_key_package: Option<Vec<u8>>,
    /// CGGMP24 (trusted dealer) only.
    secret: Option<Scalar<Curve>>,
}

fn frost_dkg(scheme: Scheme, parties: &[NodeId], t: u16, rng: &mut StdRng) -> OldKey {
    let mut states = BTreeMap::new();
    let mut queue = VecDeque::new();
    for p in parties {
        let (d, out) = AnyDkg::start(scheme, SID, p, parties, u32::from(t), rng).unwrap();
        states.insert(p.clone(), Some(d));
        queue.extend(out.into_iter().map(|o| (p.clone(), o)));
    }
    let mut outputs = BTreeMap::new();
    while let Some((from, o)) = queue.pop_front() {
        let slot = states.get_mut(&o.to).unwrap();
        let Some(d) = slot.take() else { continue };
        match d.handle(&from, o.msg).unwrap() {
            AnyDkgProgress::Continue(d, out) => {
                *slot = Some(d);
                queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
            }
            AnyDkgProgress::Done(res, out) => {
                queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                outputs.insert(o.to.clone(), res);
            }
        }
    }
    assert_eq!(outputs.len(), parties.len());
    let public_key = outputs.values().next().unwrap().public_key().to_vec();
    let public_key_package = Some(
        outputs
            .values()
            .next()
            .unwrap()
            .public_key_package()
            .unwrap(),
    );
    OldKey {
        scheme,
        parties: parties.to_vec(),
        threshold: t,
        public_key,
        public_key_package,
        shares: outputs
            .iter()
            .map(|(n, o)| (n.clone(), o.encode_packages().unwrap()))
            .collect(),
        secret: None,
    }
}

/// A trusted-dealer CGGMP24 key (cggmp24's `trusted_dealer` needs its `spof` feature; this is
/// the same construction: Shamir shares at points 1..=n, validated by key-share).
fn cggmp_dealer(parties: &[NodeId], t: u16, rng: &mut StdRng) -> OldKey {
    let secret = Scalar::<Curve>::random(rng);
    let f = Polynomial::sample_with_const_term(rng, usize::from(t) - 1, secret);
    let xs: Vec<Scalar<Curve>> = (1..=parties.len() as u64).map(Scalar::from).collect();
    let public_shares: Vec<NonZero<Point<Curve>>> = xs
        .iter()
        .map(|x| NonZero::from_point(Point::generator() * f.value::<_, Scalar<Curve>>(x)).unwrap())
        .collect();
    let shared_public_key = NonZero::from_point(Point::generator() * secret).unwrap();
    let mut out = BTreeMap::new();
    for (i, p) in parties.iter().enumerate() {
        let mut x = f.value::<_, Scalar<Curve>>(&xs[i]);
        let share = DirtyIncompleteKeyShare::<Curve> {
            i: i as u16,
            key_info: DirtyKeyInfo {
                curve: Default::default(),
                shared_public_key,
                public_shares: public_shares.clone(),
                vss_setup: Some(VssSetup {
                    min_signers: t,
                    I: xs
                        .iter()
                        .map(|x| NonZero::from_scalar(*x).unwrap())
                        .collect(),
                }),
            },
            x: NonZero::from_secret_scalar(SecretScalar::new(&mut x)).unwrap(),
        }
        .validate()
        .unwrap();
        let core = CoreShare {
            share,
            parties: Parties::new(parties, p).unwrap(),
        };
        out.insert(p.clone(), core.to_bytes().unwrap());
    }
    OldKey {
        scheme: Scheme::Cggmp24Secp256k1,
        parties: parties.to_vec(),
        threshold: t,
        public_key: crate::protocol::cggmp::share::compressed(&shared_public_key)
            .unwrap()
            .to_vec(),
        shares: out,
        public_key_package: None,
        secret: Some(secret),
    }
}

fn old_key(scheme: Scheme, parties: &[NodeId], t: u16, rng: &mut StdRng) -> OldKey {
    match scheme {
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => frost_dkg(scheme, parties, t, rng),
        Scheme::Cggmp24Secp256k1 => cggmp_dealer(parties, t, rng),
    }
}

fn params(key: &OldKey, dealers: &[NodeId], new_parties: &[NodeId], t_new: u16) -> ReshareParams {
    ReshareParams {
        session: SID,
        scheme: key.scheme,
        old_parties: key.parties.clone(),
        old_threshold: key.threshold,
        dealers: dealers.to_vec(),
        new_parties: new_parties.to_vec(),
        new_threshold: t_new,
        public_key: key.public_key.clone(),
        old_public_package: None,
    }
}

/// Every dealer's deals: `dealer -> recipient -> deal`.
type Deals = BTreeMap<NodeId, BTreeMap<NodeId, Deal>>;

fn deal_all(p: &ReshareParams, key: &OldKey, rng: &mut StdRng) -> Deals {
    p.dealers
        .iter()
        .map(|d| (d.clone(), deal(p, d, &key.shares[d], rng).unwrap()))
        .collect()
}

/// Delivers the deals and finishes at every new party.
fn collect(
    p: &ReshareParams,
    deals: &Deals,
) -> BTreeMap<NodeId, Result<ReshareOutput, ProtocolError>> {
    p.new_parties
        .iter()
        .map(|me| {
            let mut c = Collector::new(p.clone(), me.clone()).unwrap();
            for (d, to) in deals {
                assert!(!c.is_complete());
                if let Err(e) = c.add(d, to[me].clone()) {
                    return (me.clone(), Err(e));
                }
            }
            assert!(c.is_complete());
            (me.clone(), c.finish())
        })
        .collect()
}

fn one(p: &ReshareParams, deals: &Deals, me: &NodeId) -> Result<ReshareOutput, ProtocolError> {
    let mut c = Collector::new(p.clone(), me.clone()).unwrap();
    for (d, to) in deals {
        c.add(d, to[me].clone())?;
    }
    c.finish()
}

/// The new generation as a key, with the outputs' agreement checked.
fn new_key(
    p: &ReshareParams,
    key: &OldKey,
    out: BTreeMap<NodeId, Result<ReshareOutput, ProtocolError>>,
) -> OldKey {
    let out: BTreeMap<_, _> = out.into_iter().map(|(n, r)| (n, r.unwrap())).collect();
    let first = out.values().next().unwrap();
    for o in out.values() {
        assert_eq!(o.public_key, key.public_key, "the public key changed");
        assert_eq!(
            o.transcript_hash, first.transcript_hash,
            "transcripts differ"
        );
    }
    OldKey {
        scheme: key.scheme,
        parties: p.new_parties.clone(),
        threshold: p.new_threshold,
        public_key: key.public_key.clone(),
        shares: out.into_iter().map(|(n, o)| (n, o.share)).collect(),
        public_key_package: None,
        secret: key.secret,
    }
}

fn frost_sign(key: &OldKey, signers: &[NodeId], rng: &mut StdRng) -> Vec<u8> {
    let msg = b"reshared".to_vec();
    let mut states = BTreeMap::new();
    let mut queue = VecDeque::new();
    for s in signers {
        let km = AnyKeyMaterial::decode(key.scheme, &key.shares[s], key.parties.clone()).unwrap();
        assert_eq!(km.public_key(), key.public_key.as_slice());
        let (st, out) = AnySigning::start(SID, s, signers, msg.clone(), km, 1, rng).unwrap();
        states.insert(s.clone(), Some(st));
        queue.extend(out.into_iter().map(|o| (s.clone(), o)));
    }
    let mut signature = None;
    while let Some((from, o)) = queue.pop_front() {
        let slot = states.get_mut(&o.to).unwrap();
        let st = slot.take().unwrap();
        match st.handle(&from, o.msg).unwrap() {
            AnySignProgress::Continue(s, out) => {
                *slot = Some(s);
                queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
            }
            AnySignProgress::Finished {
                signature: sig,
                out,
            } => {
                queue.extend(out.into_iter().map(|x| (o.to.clone(), x)));
                signature = signature.or(Some(sig));
            }
            AnySignProgress::Blamed { error, .. } => panic!("{error}"),
        }
    }
    // The engine verified it with ed25519-dalek / libsecp256k1 before returning it.
    signature.unwrap()
}

/// Reconstructs the CGGMP24 secret from `signers`' new shares (test only).
fn cggmp_reconstruct(key: &OldKey, signers: &[NodeId]) -> Scalar<Curve> {
    let shares: Vec<CoreShare> = signers
        .iter()
        .map(|s| CoreShare::from_bytes(&key.shares[s]).unwrap())
        .collect();
    let xs: Vec<Scalar<Curve>> = shares
        .iter()
        .map(|s| Scalar::from(u64::from(s.share.i) + 1))
        .collect();
    shares
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let x: &Scalar<Curve> = s.share.x.as_ref();
            *lagrange_coefficient_at_zero(j, &xs).unwrap().as_ref() * x
        })
        .sum()
}

/// Checks a new generation: it signs (FROST) or reconstructs the old secret and validates
/// (CGGMP24), with the first and the last `t` parties.
fn check_key(key: &OldKey, rng: &mut StdRng) {
    let t = usize::from(key.threshold);
    let firsts = key.parties[..t].to_vec();
    let lasts = key.parties[key.parties.len() - t..].to_vec();
    for signers in [firsts, lasts] {
        match key.scheme {
            Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => {
                frost_sign(key, &signers, rng);
            }
            Scheme::Cggmp24Secp256k1 => {
                for s in &key.parties {
                    let core = CoreShare::from_bytes(&key.shares[s]).unwrap();
                    assert_eq!(core.threshold(), key.threshold);
                    assert_eq!(core.parties(), key.parties.as_slice());
                    assert_eq!(
                        core.public_key().unwrap().as_slice(),
                        key.public_key.as_slice()
                    );
                }
                let secret = cggmp_reconstruct(key, &signers);
                assert_eq!(Some(secret), key.secret);
                assert_eq!(
                    crate::protocol::cggmp::share::compressed(&(Point::generator() * secret))
                        .unwrap()
                        .as_slice(),
                    key.public_key.as_slice()
                );
            }
        }
    }
}

fn reshare(key: &OldKey, dealers: &[usize], new: &[usize], t_new: u16, rng: &mut StdRng) -> OldKey {
    let p = params(key, &nodes(dealers), &nodes(new), t_new);
    let deals = deal_all(&p, key, rng);
    let out = collect(&p, &deals);
    let k = new_key(&p, key, out);
    check_key(&k, rng);
    k
}

fn topologies(scheme: Scheme) {
    let mut rng = seeded();
    let key = old_key(scheme, &nodes(&[0, 1, 2, 3]), 3, &mut rng);
    check_key(&key, &mut rng);
    // 3-of-4 -> 2-of-3, node3 leaves (and deals), threshold down.
    reshare(&key, &[1, 2, 3], &[0, 1, 2], 2, &mut rng);
    // 3-of-4 -> 3-of-5, node0 leaves, node4 and node5 join.
    let k5 = reshare(&key, &[0, 2, 3], &[1, 2, 3, 4, 5], 3, &mut rng);
    // 3-of-4 -> 4-of-5, threshold up, node4 joins.
    reshare(&key, &[0, 1, 3], &[0, 1, 2, 3, 4], 4, &mut rng);
    // Refresh: same committee and threshold.
    reshare(&key, &[0, 1, 2], &[0, 1, 2, 3], 3, &mut rng);
    // A reshared generation reshares again (its output is valid dealer input): 3-of-5 -> 2-of-2
    // of two fresh parties.
    reshare(&k5, &[1, 4, 5], &[6, 7], 2, &mut rng);
}

#[test]
fn reshare__should_keep_the_frost_ed25519_key_across_committee_and_threshold_changes() {
    topologies(Scheme::FrostEd25519);
}

#[test]
fn reshare__should_keep_the_frost_secp256k1_tr_key_across_committee_and_threshold_changes() {
    topologies(Scheme::FrostSecp256k1Tr);
}

#[test]
fn reshare__should_keep_the_cggmp24_key_across_committee_and_threshold_changes() {
    topologies(Scheme::Cggmp24Secp256k1);
}

/// frost-secp256k1-tr's DKG has applied the BIP341 tweak and its group key may have odd y:
/// resharing keeps the full 33-byte verifying key (no second tweak, no negation) and signs,
/// for keys of both parities.
#[test]
fn reshare__should_keep_the_tweaked_secp256k1_tr_verifying_key_of_either_parity() {
    let mut rng = seeded();
    let parties = nodes(&[0, 1, 2, 3]);
    let mut seen = [false; 2];
    for _ in 0..64 {
        if seen == [true, true] {
            break;
        }
        let key = old_key(Scheme::FrostSecp256k1Tr, &parties, 3, &mut rng);
        let vk = |k: &OldKey| {
            let km = KeyMaterial::<Secp256K1Sha256TR>::decode(
                &k.shares[&k.parties[0]],
                k.parties.clone(),
            )
            .unwrap();
            km.public_key_package().verifying_key().serialize().unwrap()
        };
        let before = vk(&key);
        let odd = before[0] == 0x03;
        let new = reshare(&key, &[0, 1, 2], &[1, 2, 4], 2, &mut rng);
        assert_eq!(vk(&new), before);
        seen[usize::from(odd)] = true;
    }
    assert_eq!(seen, [true, true], "did not meet keys of both parities");
}

// ---------------------------------------------------------------------------------------------
// Failure paths. Each runs for every scheme: old 3-of-4 on node0..node3, dealers
// node0..node2, new 3-of-4 on node1..node4.

struct Case {
    key: OldKey,
    p: ReshareParams,
    deals: Deals,
    rng: StdRng,
}

fn case(scheme: Scheme) -> Case {
    let mut rng = seeded();
    let key = old_key(scheme, &nodes(&[0, 1, 2, 3]), 3, &mut rng);
    let p = params(&key, &nodes(&[0, 1, 2]), &nodes(&[1, 2, 3, 4]), 3);
    let deals = deal_all(&p, &key, &mut rng);
    Case { key, p, deals, rng }
}

fn blamed(r: Result<ReshareOutput, ProtocolError>) -> Vec<NodeId> {
    blamed_for(r, "")
}

/// The culprits of an abort whose reason mentions `why`.
fn blamed_for(r: Result<ReshareOutput, ProtocolError>, why: &str) -> Vec<NodeId> {
    match r {
        Err(ProtocolError::Aborted { culprits, reason }) => {
            assert!(reason.contains(why), "{reason:?} does not say {why:?}");
            culprits
        }
        Err(e) => panic!("expected an abort, got {e}"),
        Ok(_) => panic!("expected an abort, resharing succeeded"),
    }
}

fn for_all_schemes(f: impl Fn(Scheme)) {
    for s in Scheme::ALL {
        f(s);
    }
}

/// A second key of the same committee, same scheme.
fn other_key(c: &mut Case) -> OldKey {
    old_key(c.key.scheme, &c.key.parties, c.key.threshold, &mut c.rng)
}

#[test]
fn collector__should_blame_a_dealer_whose_share_fails_the_feldman_check() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let (d, me) = (node(1), node(3));
        // A valid scalar, but the point of another party.
        let other = c.deals[&d][&node(4)].share.clone();
        c.deals.get_mut(&d).unwrap().get_mut(&me).unwrap().share = other;
        assert_eq!(
            blamed_for(one(&c.p, &c.deals, &me), "Feldman"),
            vec![d.clone()]
        );
        // The other parties are unaffected.
        assert!(one(&c.p, &c.deals, &node(4)).is_ok());
    });
}

#[test]
fn check_deal_alone__should_pass_honest_deals_and_name_each_bad_one() {
    for_all_schemes(|s| {
        let mut c = case(s);
        for (d, to_deals) in &c.deals {
            for (to, deal) in to_deals {
                assert_eq!(
                    check_deal_alone(&c.p, d, to, deal).unwrap(),
                    None,
                    "{s} {d}->{to}"
                );
            }
        }
        let (d, me) = (node(1), node(3));
        let other = c.deals[&d][&node(4)].share.clone();
        let mut bad = c.deals[&d][&me].clone();
        bad.share = other;
        let why = check_deal_alone(&c.p, &d, &me, &bad).unwrap().unwrap();
        assert!(why.contains("Feldman"), "{s}: {why}");
        // A deal of another secret (consistent with itself) is caught by the constant term.
        let other = other_key(&mut c);
        let mut p_other = c.p.clone();
        p_other.public_key = other.public_key.clone();
        let mut fake = deal(&p_other, &d, &other.shares[&d], &mut c.rng).unwrap()[&me].clone();
        fake.old_public = c.deals[&d][&me].old_public.clone();
        let why = check_deal_alone(&c.p, &d, &me, &fake).unwrap().unwrap();
        assert!(why.contains("another secret"), "{s}: {why}");
        // Not a dealer, not a new party: the question is wrong, not the deal.
        assert!(check_deal_alone(&c.p, &node(3), &me, &bad).is_err());
        assert!(check_deal_alone(&c.p, &d, &node(0), &bad).is_err());
    });
}

#[test]
fn collector__should_blame_every_faulty_dealer_at_once() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let me = node(4);
        // node0: Feldman fails; node2: commitment too short.
        let other = c.deals[&node(0)][&node(1)].share.clone();
        c.deals
            .get_mut(&node(0))
            .unwrap()
            .get_mut(&me)
            .unwrap()
            .share = other;
        c.deals
            .get_mut(&node(2))
            .unwrap()
            .get_mut(&me)
            .unwrap()
            .commitment
            .pop();
        assert_eq!(blamed(one(&c.p, &c.deals, &me)), nodes(&[0, 2]));
        // Two dealers with old public data of other keys.
        let mut c = case(s);
        let elen = c.deals[&node(0)][&me].old_public.len() / 5;
        for d in [node(0), node(1)] {
            let op = &mut c
                .deals
                .get_mut(&d)
                .unwrap()
                .get_mut(&me)
                .unwrap()
                .old_public;
            op.truncate(4 * elen);
        }
        assert_eq!(
            blamed_for(one(&c.p, &c.deals, &me), "bad old public data"),
            nodes(&[0, 1])
        );
    });
}

#[test]
fn collector__should_blame_a_dealer_whose_commitment_has_the_wrong_length() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let d = node(2);
        let elen = c.deals[&d][&node(1)].commitment.len() / 3;
        for deal in c.deals.get_mut(&d).unwrap().values_mut() {
            deal.commitment.truncate(2 * elen); // t' - 1 points
        }
        assert_eq!(
            blamed_for(one(&c.p, &c.deals, &node(1)), "expected 3 points"),
            vec![d.clone()]
        );
        for deal in c.deals.get_mut(&d).unwrap().values_mut() {
            let first = deal.commitment[..elen].to_vec();
            deal.commitment.extend_from_slice(&first);
            deal.commitment.extend_from_slice(&first); // t' + 1 points
        }
        assert_eq!(
            blamed_for(one(&c.p, &c.deals, &node(1)), "expected 3 points"),
            vec![d]
        );
    });
}

#[test]
fn collector__should_blame_a_dealer_that_deals_another_secret() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let d = node(1);
        // d deals its share of another key (consistent commitment and shares), sending the
        // right old public data.
        let other = other_key(&mut c);
        let mut p_other = c.p.clone();
        p_other.public_key = other.public_key.clone();
        let mut fake = deal(&p_other, &d, &other.shares[&d], &mut c.rng).unwrap();
        for (to, deal) in fake.iter_mut() {
            deal.old_public = c.deals[&d][to].old_public.clone();
        }
        c.deals.insert(d.clone(), fake);
        for me in &c.p.new_parties {
            assert_eq!(
                blamed_for(one(&c.p, &c.deals, me), "dealt another secret"),
                vec![d.clone()]
            );
        }
    });
}

#[test]
fn collector__should_blame_the_dealer_whose_old_public_shares_differ_from_the_majority() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let d = node(2);
        let elen = c.deals[&d][&node(1)].old_public.len() / 5;
        // Swap two old public shares: well-formed, right group key, different.
        for deal in c.deals.get_mut(&d).unwrap().values_mut() {
            let (a, b) = deal.old_public.split_at_mut(2 * elen);
            a[elen..].swap_with_slice(&mut b[..elen]);
        }
        assert_eq!(
            blamed_for(
                one(&c.p, &c.deals, &node(3)),
                "differ from the other dealers"
            ),
            vec![d]
        );
    });
}

#[test]
fn collector__should_blame_colluding_dealers_not_the_honest_one_when_the_chain_holds_the_package() {
    for s in [Scheme::FrostEd25519, Scheme::FrostSecp256k1Tr] {
        let mut c = case(s);
        c.p.old_public_package = c.key.public_key_package.clone();
        assert!(one(&c.p, &c.deals, &node(3)).is_ok(), "{s:?}: honest deals");
        // Two of the three dealers (a majority) send the same altered copy: well-formed, of
        // this key, two public shares swapped.
        let elen = c.deals[&node(0)][&node(1)].old_public.len() / 5;
        for d in [node(1), node(2)] {
            for deal in c.deals.get_mut(&d).unwrap().values_mut() {
                let (a, b) = deal.old_public.split_at_mut(2 * elen);
                a[elen..].swap_with_slice(&mut b[..elen]);
            }
        }
        // By majority alone the honest dealer would be named.
        let by_vote = ReshareParams {
            old_public_package: None,
            ..c.p.clone()
        };
        assert_eq!(
            blamed_for(
                one(&by_vote, &c.deals, &node(3)),
                "differ from the other dealers"
            ),
            vec![node(0)],
            "{s:?}"
        );
        // Against the chain's record the colluders are.
        assert_eq!(
            blamed_for(one(&c.p, &c.deals, &node(3)), "public data on chain"),
            nodes(&[1, 2]),
            "{s:?}"
        );
    }
}

#[test]
fn collector__should_abort_without_culprit_when_no_majority_agrees_on_old_public_shares() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let elen = c.deals[&node(0)][&node(1)].old_public.len() / 5;
        // Each dealer swaps a different pair (or none): three different, well-formed copies.
        for (k, d) in [node(1), node(2)].iter().enumerate() {
            for deal in c.deals.get_mut(d).unwrap().values_mut() {
                let (a, b) = deal.old_public.split_at_mut((k + 2) * elen);
                a[elen..2 * elen].swap_with_slice(&mut b[..elen]);
            }
        }
        assert_eq!(
            blamed_for(one(&c.p, &c.deals, &node(1)), "no majority"),
            Vec::<NodeId>::new()
        );
    });
}

#[test]
fn collector__should_blame_a_dealer_sending_the_old_public_shares_of_another_key() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let d = node(0);
        let other = other_key(&mut c);
        let mut p_other = c.p.clone();
        p_other.public_key = other.public_key.clone();
        let theirs = deal(&p_other, &d, &other.shares[&d], &mut c.rng).unwrap();
        for (to, deal) in c.deals.get_mut(&d).unwrap().iter_mut() {
            deal.old_public = theirs[to].old_public.clone();
        }
        assert_eq!(
            blamed_for(one(&c.p, &c.deals, &node(2)), "not the key being reshared"),
            vec![d]
        );
    });
}

#[test]
fn collector__should_blame_all_dealers_when_the_old_public_shares_they_agree_on_miss_the_group_key()
{
    for_all_schemes(|s| {
        let mut c = case(s);
        let d = node(1);
        // d deals a share of another key and every dealer's old_public carries d's public
        // share of that key: every per-dealer check passes, the sum does not.
        let other = other_key(&mut c);
        let mut p_other = c.p.clone();
        p_other.public_key = other.public_key.clone();
        let fake = deal(&p_other, &d, &other.shares[&d], &mut c.rng).unwrap();
        let elen = fake[&node(1)].old_public.len() / 5;
        // node1 is old party 1: its public share is the third point (after the group key).
        let mut agreed = c.deals[&node(0)][&node(1)].old_public.clone();
        agreed[2 * elen..3 * elen].copy_from_slice(&fake[&node(1)].old_public[2 * elen..3 * elen]);
        c.deals.insert(d.clone(), fake);
        for per_dealer in c.deals.values_mut() {
            for deal in per_dealer.values_mut() {
                deal.old_public = agreed.clone();
            }
        }
        assert_eq!(
            blamed_for(
                one(&c.p, &c.deals, &node(1)),
                "do not add up to the group key"
            ),
            nodes(&[0, 1, 2])
        );
    });
}

#[test]
fn collector__should_ignore_identical_duplicates_and_blame_equivocation() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let (d, me) = (node(0), node(2));
        let mut col = Collector::new(c.p.clone(), me.clone()).unwrap();
        let first = c.deals[&d][&me].clone();
        col.add(&d, first.clone()).unwrap();
        col.add(&d, first).unwrap();
        let again = deal(&c.p, &d, &c.key.shares[&d], &mut c.rng).unwrap();
        let e = col.add(&d, again[&me].clone()).unwrap_err();
        assert_eq!(e.culprits(), std::slice::from_ref(&d));
        // The first deal stands: the rest completes.
        for other in [node(1), node(2)] {
            col.add(&other, c.deals[&other][&me].clone()).unwrap();
        }
        assert!(col.finish().is_ok());
    });
}

#[test]
fn collector__should_blame_a_deal_from_a_non_dealer() {
    for_all_schemes(|s| {
        let c = case(s);
        let me = node(1);
        let mut col = Collector::new(c.p.clone(), me.clone()).unwrap();
        // node3 is an old party but not a dealer; node9 is nobody.
        for from in [node(3), node(9)] {
            let e = col.add(&from, c.deals[&node(0)][&me].clone()).unwrap_err();
            assert_eq!(e.culprits(), &[from]);
        }
        assert!(!col.is_complete());
    });
}

#[test]
fn collector__should_blame_missing_dealers_when_finished_early() {
    let c = case(Scheme::FrostEd25519);
    let me = node(1);
    let mut col = Collector::new(c.p.clone(), me.clone()).unwrap();
    col.add(&node(0), c.deals[&node(0)][&me].clone()).unwrap();
    assert_eq!(blamed_for(col.finish(), "no reshare deal"), nodes(&[1, 2]));
}

#[test]
fn collector__should_blame_malformed_bytes_without_panicking() {
    for_all_schemes(|s| {
        let c = case(s);
        let (d, me) = (node(2), node(4));
        let good = c.deals[&d][&me].clone();
        let junk: [&[u8]; 4] = [&[], &[0], &[0xff; 32], &[0xff; 200]];
        for j in junk {
            for field in 0..3 {
                let mut bad = good.clone();
                match field {
                    0 => bad.commitment = j.to_vec(),
                    1 => bad.old_public = j.to_vec(),
                    _ => bad.share = Zeroizing::new(j.to_vec()),
                }
                let mut deals = c.deals.clone();
                deals.get_mut(&d).unwrap().insert(me.clone(), bad);
                assert_eq!(
                    blamed(one(&c.p, &deals, &me)),
                    vec![d.clone()],
                    "field {field}"
                );
            }
        }
    });
}

#[test]
fn collector__should_blame_the_dealer_or_keep_the_key_under_any_single_byte_flip() {
    for_all_schemes(|s| {
        let c = case(s);
        let (d, me) = (node(1), node(3));
        let good = c.deals[&d][&me].clone();
        let mut errors = 0;
        for field in 0..2 {
            let len = if field == 0 {
                good.commitment.len()
            } else {
                good.share.len()
            };
            for i in 0..len {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut bad = good.clone();
                    let byte = if field == 0 {
                        &mut bad.commitment[i]
                    } else {
                        &mut bad.share[i]
                    };
                    *byte ^= mask;
                    let mut deals = c.deals.clone();
                    deals.get_mut(&d).unwrap().insert(me.clone(), bad);
                    match one(&c.p, &deals, &me) {
                        Err(ProtocolError::Aborted { culprits, .. }) => {
                            assert_eq!(culprits, vec![d.clone()], "{s} field {field} byte {i}");
                            errors += 1;
                        }
                        Err(e) => panic!("{s} field {field} byte {i}: {e}"),
                        Ok(out) => assert_eq!(out.public_key, c.key.public_key),
                    }
                }
            }
        }
        assert!(errors > 0);
    });
}

/// A dealer that sends consistent but different polynomials to different parties passes every
/// local check; the transcript hashes differ, so the chain does not mark the key READY.
#[test]
fn collector__should_report_different_transcripts_when_a_dealer_splits_its_broadcast() {
    for_all_schemes(|s| {
        let mut c = case(s);
        let d = node(0);
        let second = deal(&c.p, &d, &c.key.shares[&d], &mut c.rng).unwrap();
        for to in [node(3), node(4)] {
            c.deals
                .get_mut(&d)
                .unwrap()
                .insert(to.clone(), second[&to].clone());
        }
        let out: BTreeMap<_, _> = collect(&c.p, &c.deals)
            .into_iter()
            .map(|(n, r)| (n, r.unwrap()))
            .collect();
        assert_eq!(out[&node(1)].transcript_hash, out[&node(2)].transcript_hash);
        assert_eq!(out[&node(3)].transcript_hash, out[&node(4)].transcript_hash);
        assert_ne!(out[&node(1)].transcript_hash, out[&node(3)].transcript_hash);
        assert!(out.values().all(|o| o.public_key == c.key.public_key));
    });
}

#[test]
fn reshare_params__should_refuse_bad_shapes() {
    let mut rng = seeded();
    let key = old_key(Scheme::FrostEd25519, &nodes(&[0, 1, 2, 3]), 3, &mut rng);
    let good = params(&key, &nodes(&[0, 1, 2]), &nodes(&[1, 2, 3, 4]), 3);
    good.check().unwrap();
    let local = |p: ReshareParams| matches!(p.check(), Err(ProtocolError::Local(_)));
    let with = |f: &dyn Fn(&mut ReshareParams)| {
        let mut p = good.clone();
        f(&mut p);
        p
    };
    assert!(
        local(with(&|p| p.dealers = nodes(&[0, 1, 5]))),
        "dealer not an old party"
    );
    assert!(
        local(with(&|p| p.dealers = nodes(&[0, 1]))),
        "too few dealers"
    );
    assert!(
        local(with(&|p| p.dealers = nodes(&[0, 1, 2, 3]))),
        "too many dealers"
    );
    assert!(
        local(with(&|p| p.dealers = nodes(&[1, 0, 2]))),
        "dealers unsorted"
    );
    assert!(
        local(with(&|p| p.dealers = nodes(&[0, 0, 1]))),
        "dealers repeated"
    );
    assert!(
        local(with(&|p| p.old_parties = nodes(&[1, 0, 2, 3]))),
        "old unsorted"
    );
    assert!(
        local(with(&|p| p.new_parties = nodes(&[2, 1, 3, 4]))),
        "new unsorted"
    );
    assert!(local(with(&|p| p.new_parties = Vec::new())), "new empty");
    assert!(local(with(&|p| p.new_threshold = 0)), "t' = 0");
    assert!(local(with(&|p| p.new_threshold = 5)), "t' > n'");
    assert!(local(with(&|p| p.old_threshold = 5)), "t > n");
    assert!(local(with(&|p| p.public_key.push(0))), "key length");
    let cggmp = |t_new| ReshareParams {
        scheme: Scheme::Cggmp24Secp256k1,
        public_key: vec![2; 33],
        new_threshold: t_new,
        ..good.clone()
    };
    cggmp(2).check().unwrap();
    assert!(local(cggmp(1)), "CGGMP24 t' = 1");
    // FROST allows t' = 1 (the chain does not ask for it).
    with(&|p| p.new_threshold = 1).check().unwrap();

    // Me not a party / not a dealer.
    assert!(matches!(
        Collector::new(good.clone(), node(0)),
        Err(ProtocolError::Local(_))
    ));
    // Dealer-side refusals, every scheme: not a dealer, someone else's share, a share of
    // another key, junk.
    for scheme in Scheme::ALL {
        let key = old_key(scheme, &nodes(&[0, 1, 2, 3]), 3, &mut rng);
        let other = old_key(scheme, &nodes(&[0, 1, 2, 3]), 3, &mut rng);
        let good = params(&key, &nodes(&[0, 1, 2]), &nodes(&[1, 2, 3, 4]), 3);
        let refused = |me: usize, share: &[u8], rng: &mut StdRng| {
            matches!(
                deal(&good, &node(me), share, rng),
                Err(ProtocolError::Local(_))
            )
        };
        assert!(
            refused(3, &key.shares[&node(3)], &mut rng),
            "{scheme}: not a dealer"
        );
        assert!(
            refused(0, &key.shares[&node(1)], &mut rng),
            "{scheme}: another's share"
        );
        assert!(
            refused(0, &other.shares[&node(0)], &mut rng),
            "{scheme}: another key"
        );
        assert!(refused(0, b"junk", &mut rng), "{scheme}: junk");
        assert!(refused(0, b"{}", &mut rng), "{scheme}: empty record");
        assert!(deal(&good, &node(0), &key.shares[&node(0)], &mut rng).is_ok());
    }
}

#[test]
fn deal__should_redact_the_share_in_debug_output() {
    let c = case(Scheme::FrostEd25519);
    let deal = &c.deals[&node(0)][&node(1)];
    let dbg = format!("{deal:?}");
    assert!(dbg.contains("redacted"));
    assert!(!dbg.contains(&hex::encode(deal.share.as_slice())));
    let out = one(&c.p, &c.deals, &node(1)).unwrap();
    assert!(format!("{out:?}").contains("redacted"));
}
