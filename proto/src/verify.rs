//! What a valid signature of each FROST scheme is, checked with libraries independent of the
//! MPC crates' arithmetic. The node checks its aggregated signature with these before it leaves,
//! and the chain checks every reported signature with them again.

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The public key bytes are not a key of the scheme.
    #[error("{0}")]
    BadKey(String),
    /// The signature bytes have the wrong form.
    #[error("signature must be 64 bytes, got {0}")]
    BadLength(usize),
    /// Well-formed, but does not verify.
    #[error("signature does not verify")]
    Invalid,
}

/// RFC 8032 Ed25519, strict (ed25519-dalek `verify_strict`), against a 32-byte key.
pub fn ed25519(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    let pk: [u8; 32] = public_key.try_into().map_err(|_| {
        VerifyError::BadKey(format!(
            "public key must be 32 bytes, got {}",
            public_key.len()
        ))
    })?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk)
        .map_err(|_| VerifyError::BadKey("public key is not a valid ed25519 point".into()))?;
    let sig = ed25519_dalek::Signature::from_slice(signature)
        .map_err(|_| VerifyError::BadLength(signature.len()))?;
    vk.verify_strict(message, &sig)
        .map_err(|_| VerifyError::Invalid)
}

/// BIP340 Schnorr (libsecp256k1) against a 32-byte x-only key; the message is signed as given.
pub fn bip340(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    let pk = <[u8; 32]>::try_from(public_key)
        .ok()
        .and_then(|b| secp256k1::XOnlyPublicKey::from_byte_array(b).ok())
        .ok_or_else(|| VerifyError::BadKey("not a valid 32-byte x-only public key".into()))?;
    let sig =
        <[u8; 64]>::try_from(signature).map_err(|_| VerifyError::BadLength(signature.len()))?;
    let sig = secp256k1::schnorr::Signature::from_byte_array(sig);
    secp256k1::SECP256K1
        .verify_schnorr(&sig, message, &pk)
        .map_err(|_| VerifyError::Invalid)
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;

    #[test]
    fn ed25519__should_accept_valid_and_refuse_wrong_message_length_and_key() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let pk = k.verifying_key().to_bytes();
        let sig = k.sign(b"m").to_bytes();
        assert_eq!(ed25519(&pk, b"m", &sig), Ok(()));
        assert_eq!(ed25519(&pk, b"x", &sig), Err(VerifyError::Invalid));
        assert_eq!(
            ed25519(&pk, b"m", &sig[..63]),
            Err(VerifyError::BadLength(63))
        );
        assert!(matches!(
            ed25519(&pk[..31], b"m", &sig),
            Err(VerifyError::BadKey(_))
        ));
    }

    #[test]
    fn bip340__should_accept_valid_and_refuse_wrong_message_length_and_key() {
        let kp = secp256k1::Keypair::from_seckey_byte_array(secp256k1::SECP256K1, [7; 32]).unwrap();
        let pk = kp.x_only_public_key().0.serialize();
        let sig = secp256k1::SECP256K1
            .sign_schnorr_no_aux_rand(b"m", &kp)
            .to_byte_array();
        assert_eq!(bip340(&pk, b"m", &sig), Ok(()));
        assert_eq!(bip340(&pk, b"x", &sig), Err(VerifyError::Invalid));
        assert_eq!(
            bip340(&pk, b"m", &sig[..63]),
            Err(VerifyError::BadLength(63))
        );
        assert!(matches!(
            bip340(&[0; 32], b"m", &sig),
            Err(VerifyError::BadKey(_))
        ));
    }
}
