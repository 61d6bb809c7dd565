//! Validated identifiers shared by the chain and the MPC module.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), DomainError> {
    if s.is_empty() || s.len() > max {
        return Err(DomainError::Invalid {
            field: what,
            reason: format!("must be 1..={max} characters, got {}", s.len()),
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(DomainError::Invalid {
            field: what,
            reason: format!("{s:?} may only contain A-Z a-z 0-9 - _ ."),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$m:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps.
            pub fn new(s: impl Into<String>) -> Result<Self, DomainError> {
                let s = s.into();
                check_name($what, &s, $max)?;
                Ok(Self(s))
            }
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(s: String) -> Result<Self, DomainError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                Self::new(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

name_type!(
    /// Id of an MPC node in the chain's registry, e.g. `node0`.
    NodeId,
    "node id",
    32
);
name_type!(
    /// Id of a key, chosen by the requester; never reused (deleted keys leave a tombstone).
    KeyId,
    "key id",
    64
);
name_type!(
    /// Id of a sign request, chosen by the requester; unique on the chain.
    RequestId,
    "request id",
    64
);

/// Threshold signature scheme of a key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Scheme {
    /// FROST over Ed25519 (RFC 9591); signatures verify as RFC 8032 Ed25519.
    #[serde(rename = "frost-ed25519")]
    FrostEd25519,
    /// FROST over secp256k1 with BIP340 challenges (frost-secp256k1-tr); signatures verify as
    /// BIP340 Schnorr signatures under the 32-byte x-only public key.
    #[serde(rename = "frost-secp256k1-tr")]
    FrostSecp256k1Tr,
    /// CGGMP24 threshold ECDSA over secp256k1 (the `cggmp24` crate); 33-byte compressed
    /// public key, signatures are low-s `r || s` plus a recovery id.
    #[serde(rename = "cggmp24-secp256k1")]
    Cggmp24Secp256k1,
}

impl Scheme {
    /// Every scheme this build supports.
    pub const ALL: [Scheme; 3] = [
        Scheme::FrostEd25519,
        Scheme::FrostSecp256k1Tr,
        Scheme::Cggmp24Secp256k1,
    ];

    /// The FROST schemes (one generic implementation over frost-core's `Ciphersuite`).
    pub const FROST: [Scheme; 2] = [Scheme::FrostEd25519, Scheme::FrostSecp256k1Tr];

    /// Canonical name, as in txs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::FrostEd25519 => "frost-ed25519",
            Scheme::FrostSecp256k1Tr => "frost-secp256k1-tr",
            Scheme::Cggmp24Secp256k1 => "cggmp24-secp256k1",
        }
    }
}

impl std::str::FromStr for Scheme {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        Scheme::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| DomainError::Invalid {
                field: "scheme",
                reason: format!(
                    "unknown scheme {s:?}; supported: {}",
                    Scheme::ALL.map(|s| s.as_str()).join(", ")
                ),
            })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 32-byte session id: the protocol's execution id, derived from chain data. Serialized as hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(pub [u8; 32]);

impl TryFrom<String> for SessionId {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        let b = hex::decode(&s).map_err(|e| DomainError::Invalid {
            field: "session",
            reason: format!("not hex: {e}"),
        })?;
        SessionId::from_slice(&b)
    }
}

impl From<SessionId> for String {
    fn from(s: SessionId) -> String {
        hex::encode(s.0)
    }
}

impl SessionId {
    /// Derives the session id of a request from chain data. Every party computes the same id.
    ///
    /// `kind` separates keygen, sign and delete sessions (`b"keygen"`, ...).
    pub fn derive(
        kind: &str,
        chain_id: &str,
        height: u64,
        tx_hash: &[u8; 32],
        subject: &str,
        attempt: u32,
    ) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            b"seqmpc/session/v1".as_slice(),
            kind.as_bytes(),
            chain_id.as_bytes(),
            &height.to_be_bytes(),
            tx_hash,
            subject.as_bytes(),
            &attempt.to_be_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        SessionId(h.finalize().into())
    }

    /// Parses 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, DomainError> {
        <[u8; 32]>::try_from(b)
            .map(SessionId)
            .map_err(|_| DomainError::Invalid {
                field: "session",
                reason: format!("must be 32 bytes, got {}", b.len()),
            })
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &hex::encode(&self.0[..6]))
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn key_id__should_reject_empty_long_and_odd_characters() {
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new("a".repeat(65)).is_err());
        assert!(KeyId::new("a/b").is_err());
        assert!(KeyId::new("key-1_x.y").is_ok());
    }

    #[test]
    fn scheme__should_parse_known_and_reject_unknown() {
        assert_eq!(
            "frost-ed25519".parse::<Scheme>().unwrap(),
            Scheme::FrostEd25519
        );
        assert_eq!(
            "frost-secp256k1-tr".parse::<Scheme>().unwrap(),
            Scheme::FrostSecp256k1Tr
        );
        assert_eq!(
            "cggmp24-secp256k1".parse::<Scheme>().unwrap(),
            Scheme::Cggmp24Secp256k1
        );
        for s in Scheme::ALL {
            assert_eq!(s.as_str().parse::<Scheme>().unwrap(), s);
        }
        let e = "rsa".parse::<Scheme>().unwrap_err().to_string();
        assert!(e.contains("unknown scheme"), "{e}");
    }

    #[test]
    fn session_id__should_differ_per_attempt_and_kind() {
        let t = [7u8; 32];
        let a = SessionId::derive("keygen", "c", 1, &t, "k", 0);
        assert_ne!(a, SessionId::derive("keygen", "c", 1, &t, "k", 1));
        assert_ne!(a, SessionId::derive("sign", "c", 1, &t, "k", 0));
        assert_eq!(a, SessionId::derive("keygen", "c", 1, &t, "k", 0));
    }
}
