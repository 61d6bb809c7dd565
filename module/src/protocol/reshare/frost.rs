//! Resharing for the FROST ciphersuites, with frost-core's types and its `Field`/`Group`
//! operations (frost-core keeps its Lagrange and polynomial helpers private, so the few lines
//! of protocol math are written here against those traits; no curve or field arithmetic of our
//! own).
//!
//! Encodings: scalars and elements in the ciphersuite's canonical encoding (`Field::serialize`,
//! `Group::serialize`: 32 bytes for Ed25519, 32-byte scalars and 33-byte compressed points for
//! secp256k1). A commitment is frost's `VerifiableSecretSharingCommitment::serialize_whole`.
//!
//! secp256k1-tr: the stored packages already carry the BIP341 tweak applied by `post_dkg`
//! (the shares are a Shamir sharing of the tweaked secret `q`, the verifying key is
//! `Q = q·G`, whatever the parity of its y). Resharing shares that same `q`, so the new
//! packages have the same `Q` and the same x-only chain key; nothing is tweaked or negated
//! here (frost negates at signing time when `Q` has odd y).

use std::collections::BTreeMap;

use frost_core::keys::{
    KeyPackage, PublicKeyPackage, SecretShare, SigningShare, VerifiableSecretSharingCommitment,
    VerifyingShare,
};
use frost_core::{Ciphersuite, Element, Field, Group, Identifier, Scalar, VerifyingKey};
use rand::{CryptoRng, RngCore};
use seqmpc_proto::NodeId;
use zeroize::Zeroizing;

use super::{Combined, Deal, ReshareParams};
use crate::error::ProtocolError;
use crate::protocol::frost_sign::encode_packages;
use crate::protocol::{Committee, FrostScheme};

type FieldOf<C> = <<C as Ciphersuite>::Group as Group>::Field;

fn scalar_from_bytes<C: Ciphersuite>(bytes: &[u8]) -> Option<Scalar<C>> {
    let ser = <FieldOf<C> as Field>::Serialization::try_from(bytes).ok()?;
    <FieldOf<C> as Field>::deserialize(&ser).ok()
}

fn scalar_bytes<C: Ciphersuite>(s: &Scalar<C>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(<FieldOf<C> as Field>::serialize(s).as_ref().to_vec())
}

fn element_from_bytes<C: Ciphersuite>(bytes: &[u8]) -> Option<Element<C>> {
    let ser = <C::Group as Group>::Serialization::try_from(bytes).ok()?;
    <C::Group as Group>::deserialize(&ser).ok()
}

fn element_bytes<C: Ciphersuite>(e: &Element<C>) -> Result<Vec<u8>, ProtocolError> {
    <C::Group as Group>::serialize(e)
        .map(|s| s.as_ref().to_vec())
        .map_err(|e| ProtocolError::Bug(format!("serialize element: {e}")))
}

/// Length of an encoded element.
fn element_len<C: Ciphersuite>() -> Result<usize, ProtocolError> {
    element_bytes::<C>(&<C::Group as Group>::generator()).map(|b| b.len())
}

/// The scalar `k` (an evaluation point).
fn point<C: Ciphersuite>(k: u16) -> Result<Scalar<C>, ProtocolError> {
    let id = Identifier::<C>::try_from(k)
        .map_err(|e| ProtocolError::Bug(format!("identifier {k}: {e}")))?;
    scalar_from_bytes::<C>(&id.serialize())
        .ok_or_else(|| ProtocolError::Bug(format!("identifier {k} is not a scalar")))
}

/// Lagrange coefficient at zero of the `j`-th of the points `xs`:
/// `λ_j = Π_{m≠j} x_m / (x_m − x_j)`.
fn lagrange_at_zero<C: Ciphersuite>(j: usize, xs: &[u16]) -> Result<Scalar<C>, ProtocolError> {
    let x_j = point::<C>(
        *xs.get(j)
            .ok_or_else(|| ProtocolError::Bug("λ index".into()))?,
    )?;
    let mut num = <FieldOf<C> as Field>::one();
    let mut den = <FieldOf<C> as Field>::one();
    for (m, x) in xs.iter().enumerate() {
        if m == j {
            continue;
        }
        let x_m = point::<C>(*x)?;
        num = num * x_m;
        den = den * (x_m - x_j);
    }
    let inv = <FieldOf<C> as Field>::invert(&den)
        .map_err(|_| ProtocolError::Bug("evaluation points are not distinct".into()))?;
    Ok(num * inv)
}

/// Evaluates `Σ a_k x^k` (Horner), constant term first.
fn eval_scalar<C: Ciphersuite>(coeffs: &[Scalar<C>], x: Scalar<C>) -> Scalar<C> {
    coeffs
        .iter()
        .rev()
        .fold(<FieldOf<C> as Field>::zero(), |acc, a| acc * x + *a)
}

/// Evaluates `Σ C_k x^k` over commitment points (Horner), constant term first.
fn eval_points<C: Ciphersuite>(coeffs: &[Element<C>], x: Scalar<C>) -> Element<C> {
    coeffs
        .iter()
        .rev()
        .fold(<C::Group as Group>::identity(), |acc, c| acc * x + *c)
}

/// Decodes the storage encoding of [`encode_packages`] (u32 BE length of the key package, the
/// key package, the public key package). Duplicated from `frost_sign::KeyMaterial::decode`,
/// which does not expose the secret share.
fn decode_stored<C: FrostScheme>(
    bytes: &[u8],
) -> Result<(KeyPackage<C>, PublicKeyPackage<C>), ProtocolError> {
    let bad = |what: &str| ProtocolError::Local(format!("stored share is malformed: {what}"));
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("length"))?;
    let len = u32::from_be_bytes(*len) as usize;
    let kp = rest.get(..len).ok_or_else(|| bad("key package length"))?;
    let pkp = rest.get(len..).ok_or_else(|| bad("key package length"))?;
    Ok((
        KeyPackage::deserialize(kp).map_err(|e| bad(&format!("key package: {e}")))?,
        PublicKeyPackage::deserialize(pkp).map_err(|e| bad(&format!("public key package: {e}")))?,
    ))
}

/// The old committee's group key and public shares, as sent in [`Deal::old_public`]:
/// group key, then the public share of each old party in committee order.
fn encode_old_public<C: FrostScheme>(
    params: &ReshareParams,
    pkp: &PublicKeyPackage<C>,
) -> Result<Vec<u8>, ProtocolError> {
    let old = Committee::<C>::new(&params.old_parties)?;
    if pkp.verifying_shares().len() != old.len() {
        return Err(ProtocolError::Local(format!(
            "stored public key package has {} shares, the old committee {} parties",
            pkp.verifying_shares().len(),
            old.len()
        )));
    }
    let mut out = pkp
        .verifying_key()
        .serialize()
        .map_err(|e| ProtocolError::Bug(format!("serialize group key: {e}")))?;
    for p in old.parties() {
        let share = pkp
            .verifying_shares()
            .get(&old.id(p)?)
            .ok_or_else(|| ProtocolError::Local(format!("stored package lacks {p}'s share")))?;
        out.extend(
            share
                .serialize()
                .map_err(|e| ProtocolError::Bug(format!("serialize share: {e}")))?,
        );
    }
    Ok(out)
}

/// [`Deal::old_public`] as an honest dealer of the key whose public key package the chain
/// records (`pkp`, frost's serialization) would send it.
pub(super) fn old_public_of_package<C: FrostScheme>(
    params: &ReshareParams,
    pkp: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    let pkp = PublicKeyPackage::<C>::deserialize(pkp).map_err(|e| {
        ProtocolError::Local(format!(
            "the chain's public key package does not parse: {e}"
        ))
    })?;
    encode_old_public(params, &pkp)
}

/// Parsed [`Deal::old_public`].
struct OldPublic<C: Ciphersuite> {
    group_key: VerifyingKey<C>,
    group_element: Element<C>,
    /// In old-committee order.
    shares: Vec<Element<C>>,
}

fn parse_old_public<C: FrostScheme>(
    params: &ReshareParams,
    bytes: &[u8],
) -> Result<OldPublic<C>, String> {
    let len = element_len::<C>().map_err(|e| e.to_string())?;
    let chunks = bytes.chunks_exact(len);
    if !chunks.remainder().is_empty() || chunks.len() != params.old_parties.len() + 1 {
        return Err(format!(
            "{} bytes, expected {} points",
            bytes.len(),
            params.old_parties.len() + 1
        ));
    }
    let mut points = Vec::with_capacity(chunks.len());
    for c in chunks {
        points.push(element_from_bytes::<C>(c).ok_or("not a valid point")?);
    }
    let (first, shares) = points.split_first().ok_or("empty")?;
    let group_key =
        VerifyingKey::<C>::deserialize(&element_bytes::<C>(first).map_err(|e| e.to_string())?)
            .map_err(|e| format!("group key: {e}"))?;
    Ok(OldPublic {
        group_key,
        group_element: *first,
        shares: shares.to_vec(),
    })
}

/// Per-dealer check of [`Deal::old_public`]: well-formed, and of the key being reshared.
pub(super) fn check_old_public<C: FrostScheme>(
    params: &ReshareParams,
    bytes: &[u8],
) -> Result<(), String> {
    let old = parse_old_public::<C>(params, bytes)?;
    let key = C::chain_public_key(&old.group_key).map_err(|e| e.to_string())?;
    if key != params.public_key {
        return Err("its group key is not the key being reshared".into());
    }
    Ok(())
}

/// Step 1 of `docs/reshare.md` for a FROST dealer.
pub(super) fn deal<C: FrostScheme, R: RngCore + CryptoRng>(
    params: &ReshareParams,
    me: &NodeId,
    share: &[u8],
    rng: &mut R,
) -> Result<BTreeMap<NodeId, Deal>, ProtocolError> {
    let (key_package, public_key_package) = decode_stored::<C>(share)?;
    let old = Committee::<C>::new(&params.old_parties)?;
    if *key_package.identifier() != old.id(me)? {
        return Err(ProtocolError::Local(format!(
            "stored share is not {me}'s in the old committee"
        )));
    }
    if key_package.verifying_key() != public_key_package.verifying_key()
        || C::chain_public_key(public_key_package.verifying_key())? != params.public_key
    {
        return Err(ProtocolError::Local(
            "stored share is not of the key being reshared".into(),
        ));
    }
    if *key_package.min_signers() != params.old_threshold {
        return Err(ProtocolError::Local(format!(
            "stored share has threshold {}, the chain says {}",
            key_package.min_signers(),
            params.old_threshold
        )));
    }
    let old_public = encode_old_public(params, &public_key_package)?;

    // w_i = λ_i(D)·s_i.
    let dealer_points = params.dealer_points()?;
    let my_pos = params
        .dealer_index(me)
        .ok_or_else(|| ProtocolError::Local(format!("{me} is not a dealer")))?;
    let lambda = lagrange_at_zero::<C>(my_pos, &dealer_points)?;
    let s_i = scalar_from_bytes::<C>(&Zeroizing::new(key_package.signing_share().serialize()))
        .ok_or_else(|| ProtocolError::Local("stored signing share is not a scalar".into()))?;

    // f_i of degree t'-1 with f_i(0) = w_i. frost's scalars are `Copy` without a zeroize
    // bound: the vector is overwritten before it is dropped (as frost-core does not).
    let mut coeffs = Coefficients::<C>(Vec::with_capacity(usize::from(params.new_threshold)));
    coeffs.0.push(lambda * s_i);
    for _ in 1..params.new_threshold {
        coeffs.0.push(<FieldOf<C> as Field>::random(rng));
    }
    let generator = <C::Group as Group>::generator();
    let commitment = coeffs
        .0
        .iter()
        .map(|a| element_bytes::<C>(&(generator * *a)))
        .collect::<Result<Vec<_>, _>>()?
        .concat();

    let mut deals = BTreeMap::new();
    for (k, node) in params.new_parties.iter().enumerate() {
        let x = point::<C>(
            u16::try_from(k + 1).map_err(|_| ProtocolError::Local("too many parties".into()))?,
        )?;
        deals.insert(
            node.clone(),
            Deal {
                commitment: commitment.clone(),
                old_public: old_public.clone(),
                share: scalar_bytes::<C>(&eval_scalar::<C>(&coeffs.0, x)),
            },
        );
    }
    Ok(deals)
}

/// One dealer's deal to `recipient` checked alone, by the per-dealer checks of `docs/reshare.md`
/// against the deal's own old public data: `Ok(Some(why))` when the deal is bad.
pub(super) fn check_single<C: FrostScheme>(
    params: &ReshareParams,
    dealer: &NodeId,
    recipient: &NodeId,
    deal: &Deal,
) -> Result<Option<String>, ProtocolError> {
    let new = Committee::<C>::new(&params.new_parties)?;
    let id = new.id(recipient)?;
    let pos = params
        .dealer_index(dealer)
        .ok_or_else(|| ProtocolError::Local(format!("{dealer} is not a dealer")))?;
    let lambda = lagrange_at_zero::<C>(pos, &params.dealer_points()?)?;
    if let Err(why) = check_old_public::<C>(params, &deal.old_public) {
        return Ok(Some(format!("bad old public data: {why}")));
    }
    let old = match parse_old_public::<C>(params, &deal.old_public) {
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
    Ok(check_deal::<C>(deal, id, *x_i * lambda, t_new).err())
}

/// Polynomial coefficients, overwritten with zero on drop (best effort).
struct Coefficients<C: Ciphersuite>(Vec<Scalar<C>>);

impl<C: Ciphersuite> Drop for Coefficients<C> {
    fn drop(&mut self) {
        for a in self.0.iter_mut() {
            *a = <FieldOf<C> as Field>::zero();
        }
    }
}

/// A deal that passed the per-dealer checks.
struct CheckedDeal<C: Ciphersuite> {
    points: Vec<Element<C>>,
    share: Scalar<C>,
    encoded: Vec<u8>,
}

/// Checks 3-5 of `docs/reshare.md` on one dealer's deal to party `my_id`.
fn check_deal<C: FrostScheme>(
    deal: &Deal,
    my_id: Identifier<C>,
    expected_c0: Element<C>,
    t_new: usize,
) -> Result<CheckedDeal<C>, String> {
    // The commitment: exactly t' well-formed points.
    let elen = element_len::<C>().map_err(|e| e.to_string())?;
    let chunks = deal.commitment.chunks_exact(elen);
    if !chunks.remainder().is_empty() || chunks.len() != t_new {
        return Err(format!(
            "commitment is {} bytes, expected {t_new} points",
            deal.commitment.len()
        ));
    }
    let points = chunks
        .map(element_from_bytes::<C>)
        .collect::<Option<Vec<_>>>()
        .ok_or("commitment holds an invalid point")?;
    let vss = VerifiableSecretSharingCommitment::<C>::deserialize_whole(&deal.commitment)
        .map_err(|e| format!("commitment: {e}"))?;

    // Feldman: f_i(x'_j)·G == Σ_k C_ik·x'_j^k.
    let share = scalar_from_bytes::<C>(&deal.share).ok_or("share is not a scalar")?;
    let signing_share =
        SigningShare::<C>::deserialize(&deal.share).map_err(|_| "share is not a scalar")?;
    SecretShare::new(my_id, signing_share, vss.clone())
        .verify()
        .map_err(|_| "share does not match the commitment (Feldman check failed)")?;

    // C_i0 == λ_i(D)·X_i: the dealer shares λ_i times its own old share.
    if points.first() != Some(&expected_c0) {
        return Err(
            "constant term of the commitment is not λ·(its old public share): it dealt another secret"
                .into(),
        );
    }
    let encoded = vss
        .serialize_whole()
        .map_err(|e| format!("commitment: {e}"))?;
    Ok(CheckedDeal {
        points,
        share,
        encoded,
    })
}

/// Step 2 of `docs/reshare.md` for a FROST new party: every dealer's deal is present and
/// `old_public` is the dealers' agreed, checked copy.
pub(super) fn combine<C: FrostScheme>(
    params: &ReshareParams,
    me: &NodeId,
    deals: &BTreeMap<NodeId, Deal>,
    old_public: &[u8],
) -> Result<Combined, ProtocolError> {
    let old = parse_old_public::<C>(params, old_public)
        .map_err(|e| ProtocolError::Bug(format!("agreed old public data: {e}")))?;
    let new = Committee::<C>::new(&params.new_parties)?;
    let my_id = new.id(me)?;
    let dealer_points = params.dealer_points()?;
    let t_new = usize::from(params.new_threshold);

    let mut sum_share = <FieldOf<C> as Field>::zero();
    let mut commitments: Vec<Vec<Element<C>>> = Vec::with_capacity(params.dealers.len());
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
        let expected_c0 = *x_i * lagrange_at_zero::<C>(pos, &dealer_points)?;
        match check_deal::<C>(deal, my_id, expected_c0, t_new) {
            Ok(checked) => {
                sum_share = sum_share + checked.share;
                encoded.push(checked.encoded);
                commitments.push(checked.points);
            }
            Err(why) => faulty.push((dealer.clone(), why)),
        }
    }
    super::blame_all(faulty)?;

    // Σ_i C_i0 == group key. Each C_i0 matched λ_i·X_i, so this fails only if the old public
    // shares all dealers vouched for do not interpolate to the group key.
    let constant_sum = commitments
        .iter()
        .filter_map(|c| c.first())
        .fold(<C::Group as Group>::identity(), |acc, c| acc + *c);
    if constant_sum != old.group_element {
        return Err(ProtocolError::Aborted {
            culprits: params.dealers.clone(),
            reason: "the dealers' commitments do not add up to the group key: the old public shares they sent are inconsistent".into(),
        });
    }

    // X'_k = Σ_i C_i(x'_k) for every new party k.
    let mut verifying_shares = BTreeMap::new();
    let mut new_public = Vec::with_capacity(params.new_parties.len());
    for p in new.parties() {
        let id = new.id(p)?;
        let x = scalar_from_bytes::<C>(&id.serialize())
            .ok_or_else(|| ProtocolError::Bug("identifier is not a scalar".into()))?;
        let x_k = commitments
            .iter()
            .fold(<C::Group as Group>::identity(), |acc, c| {
                acc + eval_points::<C>(c, x)
            });
        let bytes = element_bytes::<C>(&x_k).map_err(|_| ProtocolError::Aborted {
            culprits: Vec::new(),
            reason: format!("{p}'s new public share is the identity"),
        })?;
        verifying_shares.insert(
            id,
            VerifyingShare::<C>::deserialize(&bytes)
                .map_err(|e| ProtocolError::Bug(format!("verifying share: {e}")))?,
        );
        new_public.push(bytes);
    }
    let public_key_package =
        PublicKeyPackage::new(verifying_shares, old.group_key, Some(params.new_threshold));

    // s'_j = Σ_i f_i(x'_j), and s'_j·G == X'_j.
    let signing_share = SigningShare::<C>::deserialize(&scalar_bytes::<C>(&sum_share))
        .map_err(|e| ProtocolError::Bug(format!("new signing share: {e}")))?;
    let verifying_share = VerifyingShare::<C>::from(signing_share);
    if public_key_package.verifying_shares().get(&my_id) != Some(&verifying_share) {
        return Err(ProtocolError::Aborted {
            culprits: params.dealers.clone(),
            reason: "the new share does not match the new public share".into(),
        });
    }
    let key_package = KeyPackage::new(
        my_id,
        signing_share,
        verifying_share,
        old.group_key,
        params.new_threshold,
    );
    Ok(Combined {
        public_key: C::chain_public_key(public_key_package.verifying_key())?,
        commitments: encoded,
        new_public,
        share: encode_packages(&key_package, &public_key_package)?,
    })
}
