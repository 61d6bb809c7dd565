//! The output of signing: low-s `r || s` and recovery id, checked with libsecp256k1 (the
//! `secp256k1` crate, independent of cggmp24's arithmetic) before it leaves the node.

use cggmp24::Signature;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, SECP256K1};

use super::Curve;
use crate::error::ProtocolError;

/// An ECDSA signature over secp256k1, verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// `r || s`, 32 bytes each, big-endian; `s` is in the lower half of the order (BIP 62
    /// low-s, the only form libsecp256k1 verifies).
    pub rs: [u8; 64],
    /// Recovery id `v` (0 or 1; 2 and 3 only if `r` overflowed the order, probability
    /// about 2^-127): the public key is recovered from `(r, s, v)` and the digest.
    pub recovery_id: u8,
    /// The 32-byte digest that was signed.
    pub digest: [u8; 32],
}

impl EcdsaSignature {
    /// Checks `rs` over `digest` against a compressed or uncompressed SEC 1 public key, and
    /// computes the recovery id. Any failure is a [`ProtocolError::Bug`]: it is only called
    /// on signatures that cggmp24 or our own checks already accepted.
    pub fn verified(
        rs: [u8; 64],
        public_key: &[u8],
        digest: &[u8; 32],
    ) -> Result<EcdsaSignature, ProtocolError> {
        let pk = PublicKey::from_slice(public_key)
            .map_err(|e| ProtocolError::Bug(format!("public key: {e}")))?;
        let sig = secp256k1::ecdsa::Signature::from_compact(&rs)
            .map_err(|e| ProtocolError::Bug(format!("signature: {e}")))?;
        let msg = Message::from_digest(*digest);
        SECP256K1
            .verify_ecdsa(msg, &sig, &pk)
            .map_err(|e| ProtocolError::Bug(format!("signature does not verify: {e}")))?;
        for v in 0u8..4 {
            let Ok(id) = RecoveryId::try_from(i32::from(v)) else {
                continue;
            };
            let recovered = RecoverableSignature::from_compact(&rs, id)
                .and_then(|r| SECP256K1.recover_ecdsa(msg, &r));
            if recovered == Ok(pk) {
                return Ok(EcdsaSignature {
                    rs,
                    recovery_id: v,
                    digest: *digest,
                });
            }
        }
        Err(ProtocolError::Bug(
            "no recovery id recovers the public key".into(),
        ))
    }
}

/// Normalises cggmp24's signature to low s, serializes it and verifies it.
pub(crate) fn finish(
    sig: &Signature<Curve>,
    public_key: &[u8; 33],
    digest: &[u8; 32],
) -> Result<EcdsaSignature, ProtocolError> {
    let sig = sig.normalize_s();
    let mut rs = [0u8; 64];
    if Signature::<Curve>::serialized_len() != rs.len() {
        return Err(ProtocolError::Bug("signature length".into()));
    }
    sig.write_to_slice(&mut rs);
    EcdsaSignature::verified(rs, public_key, digest)
}
