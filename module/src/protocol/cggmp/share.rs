//! Key material of CGGMP24 and its serialized forms for the encrypted key store.
//!
//! Every type here holds secrets: `Debug` is redacted, and the serialized bytes come back in
//! [`Zeroizing`] buffers. Records are JSON (the encoding cggmp24 tests and keeps
//! compatible; its key shares do not survive non-self-describing formats), in a versioned
//! envelope that also carries the committee, which fixes the party indices.

use std::fmt;

use cggmp24::key_share::{AuxInfo, DirtyAuxInfo, IncompleteKeyShare, KeyShare};
use cggmp24::PregeneratedPrimes;
use seqmpc_proto::NodeId;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{blame, Curve, Level, Parties};
use crate::error::ProtocolError;

const VERSION: u32 = 1;
const SCHEME: &str = "cggmp24-secp256k1";

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    scheme: String,
    kind: String,
    parties: Vec<NodeId>,
    /// This party.
    me: NodeId,
    body: T,
}

fn seal<T: Serialize>(
    kind: &str,
    parties: &Parties,
    body: &T,
) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    let me = parties
        .my_node()
        .cloned()
        .ok_or_else(|| ProtocolError::Bug("own index out of range".into()))?;
    let env = Envelope {
        version: VERSION,
        scheme: SCHEME.into(),
        kind: kind.into(),
        parties: parties.nodes().to_vec(),
        me,
        body,
    };
    serde_json::to_vec(&env)
        .map(Zeroizing::new)
        .map_err(|e| ProtocolError::Bug(format!("serialize {kind}: {e}")))
}

fn open<T: for<'de> Deserialize<'de>>(
    kind: &str,
    bytes: &[u8],
) -> Result<(Parties, T), ProtocolError> {
    let env: Envelope<T> = super::json::from_slice(bytes)
        .map_err(|e| ProtocolError::Local(format!("stored {kind} does not parse: {e}")))?;
    if env.version != VERSION || env.scheme != SCHEME || env.kind != kind {
        return Err(ProtocolError::Local(format!(
            "stored record is {} v{} {}, expected {SCHEME} v{VERSION} {kind}",
            env.scheme, env.version, env.kind
        )));
    }
    Ok((Parties::new(&env.parties, &env.me)?, env.body))
}

fn local(what: &str, e: &(dyn std::error::Error + 'static)) -> ProtocolError {
    ProtocolError::Local(format!("{what}: {}", blame::chain(e)))
}

/// Compressed SEC 1 encoding (33 bytes) of a public key.
pub(crate) fn compressed(
    point: &cggmp24::generic_ec::Point<Curve>,
) -> Result<[u8; 33], ProtocolError> {
    <[u8; 33]>::try_from(point.to_bytes(true).as_ref())
        .map_err(|_| ProtocolError::Bug("compressed point is not 33 bytes".into()))
}

/// One set of pregenerated safe primes (two for the Paillier key, two for the ring-Pedersen
/// modulus), consumed by one aux-info run. Generating one takes 28-150 s.
#[derive(Clone)]
pub struct Primes(pub(crate) PregeneratedPrimes<Level>);

impl fmt::Debug for Primes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Primes(<redacted>)")
    }
}

impl Primes {
    /// Generates a set (slow: run it in the background, keep a pool).
    pub fn generate<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Primes {
        Primes(PregeneratedPrimes::generate(rng))
    }

    /// Generates a set one safe prime after another, each batch on as many threads as
    /// `threads()` answers before it (1 for a background refill; the node's cores while a
    /// keygen waits for this set). The primes are cggmp24's own (`generate_safe_prime` at
    /// the security level's size, as `PregeneratedPrimes::generate` makes them), checked by
    /// `PregeneratedPrimes::try_from`.
    pub fn generate_threaded(threads: &dyn Fn() -> usize) -> Result<Primes, ProtocolError> {
        use cggmp24::backend::Integer;
        use cggmp24::security_level::SecurityLevel as _;
        let bits = Level::RSA_PRIME_BITLEN;
        let mut found: Vec<Integer> = Vec::with_capacity(4);
        while found.len() < 4 {
            let batch = threads().clamp(1, 4 - found.len());
            let made = std::thread::scope(|s| {
                let handles: Vec<_> = (0..batch)
                    .map(|_| {
                        s.spawn(move || Integer::generate_safe_prime(&mut rand::rngs::OsRng, bits))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join())
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|_| ProtocolError::Bug("a safe-prime thread panicked".into()))?;
            found.extend(made);
        }
        let primes: [Integer; 4] = found
            .try_into()
            .map_err(|_| ProtocolError::Bug("not 4 safe primes".into()))?;
        PregeneratedPrimes::try_from(primes)
            .map(Primes)
            .map_err(|_| ProtocolError::Bug("generated primes are not the size a set needs".into()))
    }

    /// Serialized form, for an encrypted pool (the primes are the Paillier secret key).
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        serde_json::to_vec(&self.0)
            .map(Zeroizing::new)
            .map_err(|e| ProtocolError::Bug(format!("serialize primes: {e}")))
    }

    /// Parses [`Primes::to_bytes`]; checks the sizes (not primality: a bad prime fails the
    /// aux-info proofs).
    pub fn from_bytes(bytes: &[u8]) -> Result<Primes, ProtocolError> {
        super::json::from_slice(bytes)
            .map(Primes)
            .map_err(|e| ProtocolError::Local(format!("stored primes do not parse: {e}")))
    }
}

/// The DKG's output: this party's share of the key, without aux info.
pub struct CoreShare {
    pub(crate) share: IncompleteKeyShare<Curve>,
    pub(crate) parties: Parties,
}

impl fmt::Debug for CoreShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreShare")
            .field("public_key", &self.public_key().map(hex::encode).ok())
            .field("share", &"<redacted>")
            .finish()
    }
}

impl CoreShare {
    /// Group public key, compressed SEC 1.
    pub fn public_key(&self) -> Result<[u8; 33], ProtocolError> {
        compressed(&self.share.shared_public_key)
    }

    /// Threshold.
    pub fn threshold(&self) -> u16 {
        self.share.min_signers()
    }

    /// Committee, sorted.
    pub fn parties(&self) -> &[NodeId] {
        self.parties.nodes()
    }

    /// Serialized form for the encrypted store.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        seal("core-share", &self.parties, &self.share)
    }

    /// Parses and validates [`CoreShare::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<CoreShare, ProtocolError> {
        let (parties, share): (_, IncompleteKeyShare<Curve>) = open("core-share", bytes)?;
        check_shape(&parties, share.i, share.public_shares.len())?;
        Ok(CoreShare { share, parties })
    }
}

/// Aux info of one party of a committee: its Paillier secret key, everybody's Paillier
/// public keys and ring-Pedersen parameters. Reusable for every key of the same committee
/// (cggmp24 docs, "On reusability of the auxiliary data").
pub struct AuxShare {
    pub(crate) aux: AuxInfo<Level>,
    pub(crate) parties: Parties,
}

impl fmt::Debug for AuxShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuxShare")
            .field("parties", &self.parties.nodes())
            .field("aux", &"<redacted>")
            .finish()
    }
}

impl AuxShare {
    /// Builds from a finished aux-info run, precomputing the CRT parameters of our own
    /// ring-Pedersen modulus. `DirtyAuxInfo::precompute_crt(i)` uses the Paillier primes
    /// (`p`, `q`), which do not factor that modulus, and fails (`CrtInvalidPq`, CRATE-NOTES
    /// pitfall 4): the modulus is `hat_p * hat_q`, the last two of the pregenerated primes.
    pub(crate) fn new(
        aux: AuxInfo<Level>,
        primes: Primes,
        parties: Parties,
    ) -> Result<AuxShare, ProtocolError> {
        let [_, _, hat_p, hat_q] = primes.0.into_primes();
        let mut dirty: DirtyAuxInfo<Level> = aux.into_inner();
        dirty
            .pedersen_params
            .get_mut(usize::from(parties.me()))
            .ok_or_else(|| ProtocolError::Bug("own index out of range".into()))?
            .precompute_crt(&hat_p, &hat_q)
            .map_err(|e| ProtocolError::Bug(format!("precompute CRT: {e}")))?;
        let aux = AuxInfo::validate(dirty)
            .map_err(|e| ProtocolError::Bug(format!("aux info after CRT: {}", e.error())))?;
        Ok(AuxShare { aux, parties })
    }

    /// Committee, sorted.
    pub fn parties(&self) -> &[NodeId] {
        self.parties.nodes()
    }

    /// Precomputes the multi-exponentiation tables of every party's ring-Pedersen parameters:
    /// 16-33 s once, about 1 MB more per share, signing and presigning about twice as fast.
    pub fn precompute_multiexp_tables(self) -> Result<AuxShare, ProtocolError> {
        let mut dirty = self.aux.into_inner();
        dirty
            .precompute_multiexp_tables()
            .map_err(|e| local("precompute multiexp tables", &e))?;
        let aux = AuxInfo::validate(dirty)
            .map_err(|e| ProtocolError::Bug(format!("aux info after tables: {}", e.error())))?;
        Ok(AuxShare {
            aux,
            parties: self.parties,
        })
    }

    /// Serialized form for the encrypted store (holds the Paillier secret key).
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        seal("aux-info", &self.parties, &self.aux)
    }

    /// Fingerprint of the committee's public aux info: the committee, and every party's
    /// Paillier modulus `N_j` and ring-Pedersen parameters `(hat N_j, s_j, t_j)`. Equal at
    /// every party of one aux-info run (the CRT and multi-exponentiation precomputations,
    /// which differ per party, are left out), different across runs.
    pub fn fingerprint(&self) -> Result<[u8; 32], ProtocolError> {
        use sha2::{Digest as _, Sha256};
        let public: Vec<_> = self
            .aux
            .N
            .iter()
            .zip(self.aux.pedersen_params.iter())
            .map(|(n, p)| (n, &p.hat_N, &p.s, &p.t))
            .collect();
        let bytes = serde_json::to_vec(&(self.parties.nodes(), public))
            .map_err(|e| ProtocolError::Bug(format!("aux fingerprint: {e}")))?;
        let mut h = Sha256::new();
        h.update(b"seqmpc/cggmp24-secp256k1/aux-fingerprint/v1\0");
        h.update(bytes);
        Ok(h.finalize().into())
    }

    /// Parses and validates [`AuxShare::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<AuxShare, ProtocolError> {
        let (parties, aux): (_, AuxInfo<Level>) = open("aux-info", bytes)?;
        check_shape(&parties, parties.me(), aux.pedersen_params.len())?;
        Ok(AuxShare { aux, parties })
    }
}

fn check_shape(parties: &Parties, i: u16, n: usize) -> Result<(), ProtocolError> {
    if i != parties.me() || n != parties.nodes().len() {
        return Err(ProtocolError::Local(format!(
            "stored share is party {i} of {n}, the record says {} of {}",
            parties.me(),
            parties.nodes().len()
        )));
    }
    Ok(())
}

/// A complete CGGMP24 key share (DKG share + aux info), ready to sign.
pub struct CggmpKeyShare {
    pub(crate) share: KeyShare<Curve, Level>,
    pub(crate) parties: Parties,
    pub(crate) public_key: [u8; 33],
}

impl fmt::Debug for CggmpKeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CggmpKeyShare")
            .field("public_key", &hex::encode(self.public_key))
            .field("threshold", &self.threshold())
            .field("me", &self.parties.my_node())
            .field("share", &"<redacted>")
            .finish()
    }
}

impl CggmpKeyShare {
    /// `KeyShare::from_parts`: both parts must be of the same committee and party.
    pub fn from_parts(core: CoreShare, aux: AuxShare) -> Result<CggmpKeyShare, ProtocolError> {
        if core.parties != aux.parties {
            return Err(ProtocolError::Local(
                "key share and aux info are of different committees or parties".into(),
            ));
        }
        let public_key = core.public_key()?;
        let share = KeyShare::from_parts((core.share, aux.aux))
            .map_err(|e| ProtocolError::Local(format!("KeyShare::from_parts: {}", e.error())))?;
        Ok(CggmpKeyShare {
            share,
            parties: core.parties,
            public_key,
        })
    }

    /// Group public key, compressed SEC 1 (33 bytes).
    pub fn public_key(&self) -> [u8; 33] {
        self.public_key
    }

    /// This share's aux info, reusable by the next keygen of the same committee (cggmp24
    /// docs, "On reusability of the auxiliary data").
    pub fn aux_share(&self) -> Result<AuxShare, ProtocolError> {
        let aux = AuxInfo::validate(self.share.aux.clone())
            .map_err(|e| ProtocolError::Bug(format!("aux info of a key share: {}", e.error())))?;
        Ok(AuxShare {
            aux,
            parties: self.parties.clone(),
        })
    }

    /// Threshold: signing takes exactly this many signers.
    pub fn threshold(&self) -> u16 {
        self.share
            .core
            .vss_setup
            .as_ref()
            .map(|s| s.min_signers)
            .unwrap_or_else(|| self.parties.n())
    }

    /// Committee, sorted.
    pub fn parties(&self) -> &[NodeId] {
        self.parties.nodes()
    }

    /// This party.
    pub fn me(&self) -> Option<&NodeId> {
        self.parties.my_node()
    }

    /// Serialized form for the encrypted store.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        seal("key-share", &self.parties, &self.share)
    }

    /// Parses and validates [`CggmpKeyShare::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<CggmpKeyShare, ProtocolError> {
        let (parties, share): (_, KeyShare<Curve, Level>) = open("key-share", bytes)?;
        check_shape(&parties, share.core.i, share.core.public_shares.len())?;
        let public_key = compressed(&share.core.shared_public_key)?;
        Ok(CggmpKeyShare {
            share,
            parties,
            public_key,
        })
    }
}
