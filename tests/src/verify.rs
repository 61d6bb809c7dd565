//! Independent signature checks for the end-to-end tests: each verifies with a library other
//! than the one the nodes sign with (ed25519-dalek strict RFC 8032; libsecp256k1 for BIP340 and
//! ECDSA), from the hex the chain reports. Each returns why a check failed.

use anyhow::{anyhow, ensure, Context};
use serde_json::Value;

/// Ed25519 (`frost-ed25519`): `verify_strict` under the 32-byte key.
pub fn ed25519(public_key: &str, message: &[u8], signature: &str) -> anyhow::Result<()> {
    let pk: [u8; 32] = hex::decode(public_key)?
        .try_into()
        .map_err(|_| anyhow!("public key is not 32 bytes"))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk)?;
    let sig = ed25519_dalek::Signature::from_slice(&hex::decode(signature)?)?;
    vk.verify_strict(message, &sig)
        .context("Ed25519 signature does not verify")
}

/// BIP340 (`frost-secp256k1-tr`): plain BIP340 under the 32-byte x-only key.
pub fn bip340(x_only_key: &str, message: &[u8], signature: &str) -> anyhow::Result<()> {
    let pk: [u8; 32] = hex::decode(x_only_key)?
        .try_into()
        .map_err(|_| anyhow!("x-only key is not 32 bytes"))?;
    let pk = secp256k1::XOnlyPublicKey::from_byte_array(pk)?;
    let sig: [u8; 64] = hex::decode(signature)?
        .try_into()
        .map_err(|_| anyhow!("signature is not 64 bytes"))?;
    let sig = secp256k1::schnorr::Signature::from_byte_array(sig);
    secp256k1::SECP256K1
        .verify_schnorr(&sig, message, &pk)
        .context("BIP340 signature does not verify")
}

/// ECDSA (`cggmp24-secp256k1`): low-s `r || s` over `digest` under the compressed key, and
/// the recovery id recovers the key.
pub fn ecdsa(
    public_key: &str,
    digest: [u8; 32],
    signature: &str,
    recovery_id: &Value,
) -> anyhow::Result<()> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
    let pk = secp256k1::PublicKey::from_slice(&hex::decode(public_key)?)?;
    let rs: [u8; 64] = hex::decode(signature)?
        .try_into()
        .map_err(|_| anyhow!("signature is not 64 bytes"))?;
    let msg = secp256k1::Message::from_digest(digest);
    let sig = Signature::from_compact(&rs)?;
    let mut low = sig;
    low.normalize_s();
    ensure!(low == sig, "s must be low");
    secp256k1::SECP256K1
        .verify_ecdsa(msg, &sig, &pk)
        .context("ECDSA signature does not verify")?;
    let v = recovery_id.as_i64().context("no recovery_id")?;
    let rec = RecoverableSignature::from_compact(&rs, RecoveryId::try_from(v as i32)?)?;
    ensure!(
        secp256k1::SECP256K1.recover_ecdsa(msg, &rec)? == pk,
        "recovery id must recover the key"
    );
    Ok(())
}
