//! Resharing for CGGMP24 (secp256k1), with generic-ec's arithmetic, generic-ec-zkp's
//! polynomials and Lagrange coefficients, and key-share's validation of the result. cggmp24
//! itself has no resharing (its `key_refresh` keeps the committee and threshold).
//!
//! Encodings: points 33-byte compressed SEC 1, scalars 32-byte big-endian (canonical: values
//! at or above the group order are refused). The output is a [`CoreShare`] of the new
//! committee (no aux info: the session manager pairs it with the new committee's aux info via
//! [`CggmpKeyShare::from_parts`]).

use std::collections::BTreeMap;

use cggmp24::generic_ec::{NonZero, Point, Scalar, SecretScalar};
use cggmp24::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo, Validate, VssSetup};
use generic_ec_zkp::polynomial::{lagrange_coefficient_at_zero, Polynomial};
use rand::{CryptoRng, RngCore};
use seqmpc_proto::NodeId;
use zeroize::Zeroizing;

use super::{Combined, Deal, ReshareParams};
use crate::error::ProtocolError;
use crate::protocol::cggmp::share::compressed;
use crate::protocol::cggmp::{CggmpKeyShare, CoreShare, Curve, Parties};

const POINT_LEN: usize = 33;

fn point_bytes(p: &Point<Curve>) -> Result<[u8; POINT_LEN], ProtocolError> {
    compressed(p)
}

fn parse_point(bytes: &[u8]) -> Option<NonZero<Point<Curve>>> {
    Point::<Curve>::from_bytes(bytes)
        .ok()
        .and_then(NonZero::from_point)
}

/// Evaluation point `k` as a scalar.
fn scalar_of(k: usize) -> Result<Scalar<Curve>, ProtocolError> {
    u64::try_from(k)
        .map(Scalar::from)
        .map_err(|_| ProtocolError::Local("too many parties".into()))
}

/// Evaluation points of the dealers (position in the old committee + 1), in dealer order.
fn dealer_points(params: &ReshareParams) -> Result<Vec<Scalar<Curve>>, ProtocolError> {
    params
        .dealer_points()?
        .into_iter()
        .map(|k| scalar_of(usize::from(k)))
        .collect()
}

fn lambda(pos: usize, xs: &[Scalar<Curve>]) -> Result<Scalar<Curve>, ProtocolError> {
    lagrange_coefficient_at_zero(pos, xs)
        .map(|l| *l.as_ref())
        .ok_or_else(|| ProtocolError::Bug("Lagrange coefficient of the dealers".into()))
}

/// The dealer's stored share: a complete key share or a core share.
enum Stored {
    Full(CggmpKeyShare),
    Core(CoreShare),
}

impl Stored {
    /// Dispatches on the record's `kind` (see `cggmp::share`), so that a parse error comes
    /// from the right decoder (and never echoes another record's content).
    fn decode(bytes: &[u8]) -> Result<Stored, ProtocolError> {
        #[derive(serde::Deserialize)]
        struct Kind {
            kind: String,
        }
        let kind = serde_json::from_slice::<Kind>(bytes)
            .map_err(|_| ProtocolError::Local("stored share is not a CGGMP24 record".into()))?;
        match kind.kind.as_str() {
            "key-share" => CggmpKeyShare::from_bytes(bytes).map(Stored::Full),
            "core-share" => CoreShare::from_bytes(bytes).map(Stored::Core),
            other => Err(ProtocolError::Local(format!(
                "stored record is {other:?}, not a key share"
            ))),
        }
    }

    fn core(&self) -> &DirtyIncompleteKeyShare<Curve> {
        match self {
            Stored::Full(k) => &k.share.core,
            Stored::Core(c) => &c.share,
        }
    }

    fn parties(&self) -> &Parties {
        match self {
            Stored::Full(k) => &k.parties,
            Stored::Core(c) => &c.parties,
        }
    }
}

/// Step 1 of `docs/reshare.md` for a CGGMP24 dealer.
pub(super) fn deal<R: RngCore + CryptoRng>(
    params: &ReshareParams,
    me: &NodeId,
    share: &[u8],
    rng: &mut R,
) -> Result<BTreeMap<NodeId, Deal>, ProtocolError> {
    let stored = Stored::decode(share)?;
    let core = stored.core();
    let parties = stored.parties();
    if parties.nodes() != params.old_parties.as_slice() || parties.my_node() != Some(me) {
        return Err(ProtocolError::Local(format!(
            "stored share is not {me}'s in the old committee"
        )));
    }
    if compressed(&core.shared_public_key)?.as_slice() != params.public_key.as_slice() {
        return Err(ProtocolError::Local(
            "stored share is not of the key being reshared".into(),
        ));
    }
    let n = params.old_parties.len();
    let Some(vss) = core.vss_setup.as_ref() else {
        return Err(ProtocolError::Local(
            "stored share is an additive (non-threshold) share".into(),
        ));
    };
    if vss.min_signers != params.old_threshold {
        return Err(ProtocolError::Local(format!(
            "stored share has threshold {}, the chain says {}",
            vss.min_signers, params.old_threshold
        )));
    }
    // cggmp24's threshold keygen sets I = [1, …, n]; the Lagrange coefficients below assume it.
    let expected_points = (1..=n).map(scalar_of).collect::<Result<Vec<_>, _>>()?;
    if vss.I.len() != n
        || vss
            .I
            .iter()
            .zip(&expected_points)
            .any(|(i, e)| i.as_ref() != e)
        || core.public_shares.len() != n
    {
        return Err(ProtocolError::Local(
            "stored share's evaluation points are not 1..=n".into(),
        ));
    }
    let mut old_public = compressed(&core.shared_public_key)?.to_vec();
    for x in &core.public_shares {
        old_public.extend_from_slice(&compressed(x)?);
    }

    // w_i = λ_i(D)·s_i, shared with f_i of degree t'-1, f_i(0) = w_i.
    let my_pos = params
        .dealer_index(me)
        .ok_or_else(|| ProtocolError::Local(format!("{me} is not a dealer")))?;
    let lambda = lambda(my_pos, &dealer_points(params)?)?;
    let x_i: &Scalar<Curve> = core.x.as_ref();
    let mut w: Scalar<Curve> = lambda * x_i;
    let w = SecretScalar::new(&mut w);
    let f = Polynomial::<SecretScalar<Curve>>::sample_with_const_term(
        rng,
        usize::from(params.new_threshold) - 1,
        w,
    );
    let big_f: Polynomial<Point<Curve>> = &f * &Point::generator().to_point();
    let mut commitment = Vec::with_capacity(POINT_LEN * big_f.coefs().len());
    for c in big_f.coefs() {
        commitment.extend_from_slice(&point_bytes(c)?);
    }
    if commitment.len() != POINT_LEN * usize::from(params.new_threshold) {
        return Err(ProtocolError::Bug("commitment has the wrong length".into()));
    }

    let mut deals = BTreeMap::new();
    for (k, node) in params.new_parties.iter().enumerate() {
        let mut y: Scalar<Curve> = f.value(&scalar_of(k + 1)?);
        let share = Zeroizing::new(y.to_be_bytes().as_bytes().to_vec());
        drop(SecretScalar::new(&mut y));
        deals.insert(
            node.clone(),
            Deal {
                commitment: commitment.clone(),
                old_public: old_public.clone(),
                share,
            },
        );
    }
    Ok(deals)
}

/// Parsed [`Deal::old_public`].
struct OldPublic {
    group_key: NonZero<Point<Curve>>,
    /// In old-committee order.
    shares: Vec<NonZero<Point<Curve>>>,
}

fn parse_old_public(params: &ReshareParams, bytes: &[u8]) -> Result<OldPublic, String> {
    let chunks = bytes.chunks_exact(POINT_LEN);
    if !chunks.remainder().is_empty() || chunks.len() != params.old_parties.len() + 1 {
        return Err(format!(
            "{} bytes, expected {} points",
            bytes.len(),
            params.old_parties.len() + 1
        ));
    }
    let points = chunks
        .map(parse_point)
        .collect::<Option<Vec<_>>>()
        .ok_or("not a valid point")?;
    let (group_key, shares) = points.split_first().ok_or("empty")?;
    Ok(OldPublic {
        group_key: *group_key,
        shares: shares.to_vec(),
    })
}

/// Per-dealer check of [`Deal::old_public`]: well-formed, and of the key being reshared.
pub(super) fn check_old_public(params: &ReshareParams, bytes: &[u8]) -> Result<(), String> {
    let old = parse_old_public(params, bytes)?;
    if compressed(&old.group_key)
        .map_err(|e| e.to_string())?
        .as_slice()
        != params.public_key.as_slice()
    {
        return Err("its group key is not the key being reshared".into());
    }
    Ok(())
}

/// One dealer's deal to `recipient` checked alone, by the per-dealer checks of `docs/reshare.md`
/// against the deal's own old public data: `Ok(Some(why))` when the deal is bad.
pub(super) fn check_single(
    params: &ReshareParams,
    dealer: &NodeId,
    recipient: &NodeId,
    deal: &Deal,
) -> Result<Option<String>, ProtocolError> {
    let new_parties = Parties::new(&params.new_parties, recipient)?;
    let x = scalar_of(usize::from(new_parties.me()) + 1)?;
    let pos = params
        .dealer_index(dealer)
        .ok_or_else(|| ProtocolError::Local(format!("{dealer} is not a dealer")))?;
    let lambda = lambda(pos, &dealer_points(params)?)?;
    if let Err(why) = check_old_public(params, &deal.old_public) {
        return Ok(Some(format!("bad old public data: {why}")));
    }
    let old = match parse_old_public(params, &deal.old_public) {
        Ok(old) => old,
        Err(why) => return Ok(Some(format!("bad old public data: {why}"))),
    };
    let Some(x_i) = params
        .old_parties
        .binary_search(dealer)
        .ok()
        .and_then(|k| old.shares.get(k))
    else {
        return Ok(Some("its old public data lacks its own share".into()));
    };
    let t_new = usize::from(params.new_threshold);
    Ok(check_deal(deal, &x, *x_i.as_ref() * lambda, t_new).err())
}

/// A deal that passed the per-dealer checks.
struct CheckedDeal {
    poly: Polynomial<Point<Curve>>,
    share: SecretScalar<Curve>,
    encoded: Vec<u8>,
}

/// Checks 3-5 of `docs/reshare.md` on one dealer's deal to the party at point `my_x`.
fn check_deal(
    deal: &Deal,
    my_x: &Scalar<Curve>,
    expected_c0: Point<Curve>,
    t_new: usize,
) -> Result<CheckedDeal, String> {
    // The commitment: exactly t' well-formed points.
    let chunks = deal.commitment.chunks_exact(POINT_LEN);
    if !chunks.remainder().is_empty() || chunks.len() != t_new {
        return Err(format!(
            "commitment is {} bytes, expected {t_new} points",
            deal.commitment.len()
        ));
    }
    let points = chunks
        .map(|c| parse_point(c).map(|p| *p.as_ref()))
        .collect::<Option<Vec<_>>>()
        .ok_or("commitment holds an invalid point")?;
    let mut encoded = Vec::with_capacity(deal.commitment.len());
    for p in &points {
        encoded.extend_from_slice(&point_bytes(p).map_err(|e| e.to_string())?);
    }
    let c0 = points.first().copied();
    let poly = Polynomial::from_coefs(points);

    // Feldman: f_i(x'_j)·G == F_i(x'_j).
    let mut share = Scalar::<Curve>::from_be_bytes(deal.share.as_slice())
        .map_err(|_| "share is not a canonical scalar")?;
    let share = SecretScalar::new(&mut share);
    if Point::generator() * &share != poly.value::<_, Point<Curve>>(my_x) {
        return Err("share does not match the commitment (Feldman check failed)".into());
    }

    // C_i0 == λ_i(D)·X_i: the dealer shares λ_i times its own old share.
    if c0 != Some(expected_c0) {
        return Err(
            "constant term of the commitment is not λ·(its old public share): it dealt another secret"
                .into(),
        );
    }
    Ok(CheckedDeal {
        poly,
        share,
        encoded,
    })
}

/// Step 2 of `docs/reshare.md` for a CGGMP24 new party: every dealer's deal is present and
/// `old_public` is the dealers' agreed, checked copy.
pub(super) fn combine(
    params: &ReshareParams,
    me: &NodeId,
    deals: &BTreeMap<NodeId, Deal>,
    old_public: &[u8],
) -> Result<Combined, ProtocolError> {
    let old = parse_old_public(params, old_public)
        .map_err(|e| ProtocolError::Bug(format!("agreed old public data: {e}")))?;
    let new_parties = Parties::new(&params.new_parties, me)?;
    let my_x = scalar_of(usize::from(new_parties.me()) + 1)?;
    let xs = dealer_points(params)?;
    let t_new = usize::from(params.new_threshold);

    let mut sum_share = SecretScalar::<Curve>::zero();
    let mut sum_poly: Option<Polynomial<Point<Curve>>> = None;
    let mut constant_sum = Point::<Curve>::zero();
    let mut encoded = Vec::with_capacity(params.dealers.len());
    let mut faulty = Vec::new();
    for (pos, dealer) in params.dealers.iter().enumerate() {
        let deal = deals
            .get(dealer)
            .ok_or_else(|| ProtocolError::Bug(format!("no deal from {dealer}")))?;
        let x_i = params
            .old_parties
            .binary_search(dealer)
            .ok()
            .and_then(|k| old.shares.get(k))
            .ok_or_else(|| ProtocolError::Bug(format!("{dealer}'s old public share")))?;
        let expected_c0 = *x_i.as_ref() * lambda(pos, &xs)?;
        match check_deal(deal, &my_x, expected_c0, t_new) {
            Ok(checked) => {
                let mut s: Scalar<Curve> = checked.share.as_ref() + sum_share.as_ref();
                sum_share = SecretScalar::new(&mut s);
                constant_sum += expected_c0;
                sum_poly = Some(match sum_poly {
                    None => checked.poly,
                    Some(acc) => acc + &checked.poly,
                });
                encoded.push(checked.encoded);
            }
            Err(why) => faulty.push((dealer.clone(), why)),
        }
    }
    super::blame_all(faulty)?;

    // Σ_i C_i0 == group key. Each C_i0 matched λ_i·X_i, so this fails only if the old public
    // shares all dealers vouched for do not interpolate to the group key.
    if constant_sum != *old.group_key.as_ref() {
        return Err(ProtocolError::Aborted {
            culprits: params.dealers.clone(),
            reason: "the dealers' commitments do not add up to the group key: the old public shares they sent are inconsistent".into(),
        });
    }
    let sum_poly = sum_poly.ok_or_else(|| ProtocolError::Bug("no dealers".into()))?;

    // X'_k = Σ_i C_i(x'_k) for every new party k.
    let mut public_shares = Vec::with_capacity(params.new_parties.len());
    let mut new_public = Vec::with_capacity(params.new_parties.len());
    for (k, p) in params.new_parties.iter().enumerate() {
        let x_k = sum_poly.value::<_, Point<Curve>>(&scalar_of(k + 1)?);
        let x_k = NonZero::from_point(x_k).ok_or_else(|| ProtocolError::Aborted {
            culprits: Vec::new(),
            reason: format!("{p}'s new public share is the identity"),
        })?;
        new_public.push(point_bytes(&x_k)?.to_vec());
        public_shares.push(x_k);
    }

    // s'_j = Σ_i f_i(x'_j), and s'_j·G == X'_j.
    let x = NonZero::from_secret_scalar(sum_share).ok_or_else(|| ProtocolError::Aborted {
        culprits: Vec::new(),
        reason: "the new share is zero".into(),
    })?;
    if public_shares.get(usize::from(new_parties.me())) != Some(&(Point::generator() * &x)) {
        return Err(ProtocolError::Aborted {
            culprits: params.dealers.clone(),
            reason: "the new share does not match the new public share".into(),
        });
    }
    let indexes = (1..=params.new_parties.len())
        .map(|k| scalar_of(k).map(NonZero::from_scalar))
        .collect::<Result<Option<Vec<_>>, _>>()?
        .ok_or_else(|| ProtocolError::Bug("zero evaluation point".into()))?;
    let share = DirtyIncompleteKeyShare::<Curve> {
        i: new_parties.me(),
        key_info: DirtyKeyInfo {
            curve: Default::default(),
            shared_public_key: old.group_key,
            public_shares,
            vss_setup: Some(VssSetup {
                min_signers: params.new_threshold,
                I: indexes,
            }),
        },
        x,
    }
    .validate()
    .map_err(|e| ProtocolError::Bug(format!("new key share does not validate: {}", e.error())))?;
    let core = CoreShare {
        share,
        parties: new_parties,
    };
    Ok(Combined {
        public_key: core.public_key()?.to_vec(),
        commitments: encoded,
        new_public,
        share: core.to_bytes()?,
    })
}
