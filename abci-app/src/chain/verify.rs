//! Signature verification of sign results, with verifiers independent of the MPC library.

use seqmpc_proto::verify::VerifyError;
use seqmpc_proto::Scheme;

use crate::chain::entries::KeyEntry;
use crate::chain::tx::TxError;

/// Length of a `cggmp24-secp256k1` signature in a `SignResult`: `r || s || v` (64-byte compact
/// low-s signature, then the recovery id).
pub const ECDSA_RESULT_LEN: usize = 65;

/// A sign result as it is shown: an ECDSA result (`r || s || v`, [`ECDSA_RESULT_LEN`] bytes)
/// as `(r || s, Some(v))`, any other signature whole with `None`.
pub fn split_recovery_id(sig: &[u8]) -> (&[u8], Option<u8>) {
    match sig {
        [rs @ .., v] if sig.len() == ECDSA_RESULT_LEN => (rs, Some(*v)),
        _ => (sig, None),
    }
}

/// The 32-byte digest an ECDSA request signs: the message itself when prehashed (32 bytes,
/// checked at decode), else its SHA-256.
pub fn ecdsa_digest(message: &[u8], prehashed: bool) -> Result<[u8; 32], TxError> {
    use sha2::Digest as _;
    if prehashed {
        <[u8; 32]>::try_from(message).map_err(|_| {
            TxError::Invalid(format!(
                "a prehashed digest must be 32 bytes, got {}",
                message.len()
            ))
        })
    } else {
        Ok(sha2::Sha256::digest(message).into())
    }
}

/// Checks an ECDSA `r || s || v` over `digest` with libsecp256k1: `s` must be low (BIP 62) and
/// `v` must recover `pk` (33-byte compressed SEC 1).
pub fn verify_ecdsa(pk: &[u8], digest: &[u8; 32], sig: &[u8]) -> Result<(), String> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature as EcdsaSig};
    let pk = <[u8; 33]>::try_from(pk)
        .ok()
        .and_then(|b| secp256k1::PublicKey::from_slice(&b).ok())
        .ok_or("the key has no valid 33-byte compressed public key")?;
    let (rs, v) = match split_recovery_id(sig) {
        (rs, Some(v)) => (rs, v),
        (_, None) => {
            return Err(format!(
                "an ECDSA result must be {ECDSA_RESULT_LEN} bytes (r || s || v), got {}",
                sig.len()
            ))
        }
    };
    let parsed = EcdsaSig::from_compact(rs).map_err(|_| "r || s is not a valid signature")?;
    let mut low = parsed;
    low.normalize_s();
    if low != parsed {
        return Err("s is not low (BIP 62): normalise s before submitting".into());
    }
    let msg = secp256k1::Message::from_digest(*digest);
    secp256k1::SECP256K1
        .verify_ecdsa(msg, &parsed, &pk)
        .map_err(|_| "signature does not verify")?;
    let id = RecoveryId::try_from(i32::from(v)).map_err(|_| format!("bad recovery id {v}"))?;
    let recovered = RecoverableSignature::from_compact(rs, id)
        .and_then(|r| secp256k1::SECP256K1.recover_ecdsa(msg, &r))
        .map_err(|_| format!("recovery id {v} recovers no key"))?;
    if recovered != pk {
        return Err(format!("recovery id {v} recovers another key"));
    }
    Ok(())
}

/// Verifies a signature against a READY key, with a verifier independent of the MPC library.
pub fn verify_signature(
    key: &KeyEntry,
    message: &[u8],
    prehashed: bool,
    sig: &[u8],
) -> Result<(), TxError> {
    let pk_hex = key
        .public_key
        .as_deref()
        .ok_or_else(|| TxError::Invalid(format!("key {} has no public key", key.key_id)))?;
    match key.scheme {
        // Ed25519 (RFC 8032 strict) or BIP340 against the x-only key: the same independent
        // verifiers the nodes use before a signature leaves them.
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => {
            let pk = hex::decode(pk_hex).map_err(|e| TxError::Invalid(e.to_string()))?;
            let verify = match key.scheme {
                Scheme::FrostEd25519 => seqmpc_proto::verify::ed25519,
                _ => seqmpc_proto::verify::bip340,
            };
            verify(&pk, message, sig).map_err(|e| match e {
                VerifyError::Invalid => TxError::Invalid(format!(
                    "signature does not verify under key {}",
                    key.key_id
                )),
                other => TxError::Invalid(format!("key {}: {other}", key.key_id)),
            })
        }
        // ECDSA (libsecp256k1) over SHA-256(message), or over the message when prehashed.
        Scheme::Cggmp24Secp256k1 => {
            let pk = hex::decode(pk_hex).map_err(|e| TxError::Invalid(e.to_string()))?;
            let digest = ecdsa_digest(message, prehashed)?;
            verify_ecdsa(&pk, &digest, sig)
                .map_err(|e| TxError::Invalid(format!("ECDSA result for key {}: {e}", key.key_id)))
        }
    }
}
