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

/// How the next safe primes of a set are searched ([`Primes::generate_threaded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchBatch {
    /// Search threads, one prime each.
    pub threads: usize,
    /// Whether nobody waits for the set (a pool refill): the threads run at the lowest CPU
    /// priority.
    pub background: bool,
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

    /// Generates a set one safe prime after another, each batch as `plan()` answers before
    /// it (1 background thread for a pool refill; the node's cores while a keygen waits for
    /// this set). A background search thread first runs `background`, which lowers its CPU
    /// priority. The primes are cggmp24's own (`generate_safe_prime` at the security level's
    /// size, as `PregeneratedPrimes::generate` makes them), checked by
    /// `PregeneratedPrimes::try_from`.
    pub fn generate_threaded(
        plan: &dyn Fn() -> SearchBatch,
        background: fn(),
    ) -> Result<Primes, ProtocolError> {
        use cggmp24::backend::Integer;
        use cggmp24::security_level::SecurityLevel as _;
        let bits = Level::RSA_PRIME_BITLEN;
        let mut found: Vec<Integer> = Vec::with_capacity(4);
        while found.len() < 4 {
            let batch = plan();
            let threads = batch.threads.clamp(1, 4 - found.len());
            let made = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(move || {
                            if batch.background {
                                background();
                            }
                            Integer::generate_safe_prime(&mut rand::rngs::OsRng, bits)
                        })
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

/// SHA-256 of the Paillier moduli `N = p q` (as cggmp24 serializes them) of the prime sets in
/// the public test fixtures (`module/tests/fixtures/cggmp24-test-fixtures.json`): their
/// secret keys are published, so anyone can decrypt what is encrypted to them. A production
/// build refuses a key share whose aux info holds one ([`AuxShare::party_with_public_test_modulus`]);
/// a unit test keeps this list equal to the fixture file.
const PUBLIC_TEST_MODULI: [&str; 5] = [
    "f346e1bb23d371f671b2fd960268a5c559f71ffb33f22b2c1686b4d4ec9159b3",
    "e49ce08c0cf8904c24ce79ff88bbdcbd00f1d27fd0a504176ad67299997f2a8a",
    "ddc8dddfc061d3844c6f7fa1bff60bd38869ff9e1a400b74a1ae2ef66ce47090",
    "80c2d71491aadee3a5a7a9ab80f8fabe7f605222e51a4f32d48684e88731ad7e",
    "b3d7399db0665e8df739e05a24027f22fba15614b50684bfb0e817a82a38034d",
];

/// Hex SHA-256 of a Paillier modulus as cggmp24 serializes it.
fn modulus_digest(n: &cggmp24::backend::Integer) -> Result<String, ProtocolError> {
    use sha2::{Digest as _, Sha256};
    let bytes = serde_json::to_vec(n)
        .map_err(|e| ProtocolError::Bug(format!("serialize a Paillier modulus: {e}")))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// Whether a production build refuses the public test fixtures' moduli: yes, unless test
/// code (cargo feature `fault-injection`) is compiled in.
pub const REFUSES_PUBLIC_TEST_MODULI: bool = !cfg!(feature = "fault-injection");

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

    /// The first party of the committee whose Paillier modulus is one of the public test
    /// fixtures' (`PUBLIC_TEST_MODULI`): its secret key is public.
    pub fn party_with_public_test_modulus(&self) -> Result<Option<NodeId>, ProtocolError> {
        for (i, n) in self.aux.N.iter().enumerate() {
            if PUBLIC_TEST_MODULI.contains(&modulus_digest(n)?.as_str()) {
                return Ok(Some(self.parties.nodes().get(i).cloned().ok_or_else(
                    || ProtocolError::Bug("aux info has more moduli than parties".into()),
                )?));
            }
        }
        Ok(None)
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

impl AuxShare {
    /// Refuses aux info holding a public test modulus, blaming the party it belongs to (what
    /// a production build does, [`REFUSES_PUBLIC_TEST_MODULI`]).
    pub fn refuse_public_test_moduli(&self) -> Result<(), ProtocolError> {
        match self.party_with_public_test_modulus()? {
            Some(p) => Err(ProtocolError::blame(
                &p,
                "its Paillier key is one of the public test fixtures' (anyone can decrypt \
                 what is encrypted to it): refused by a production build",
            )),
            None => Ok(()),
        }
    }
}

impl CggmpKeyShare {
    /// `KeyShare::from_parts`: both parts must be of the same committee and party.
    /// A production build ([`REFUSES_PUBLIC_TEST_MODULI`]) refuses aux info holding a public
    /// test modulus, blaming the party it belongs to.
    pub fn from_parts(core: CoreShare, aux: AuxShare) -> Result<CggmpKeyShare, ProtocolError> {
        if core.parties != aux.parties {
            return Err(ProtocolError::Local(
                "key share and aux info are of different committees or parties".into(),
            ));
        }
        if REFUSES_PUBLIC_TEST_MODULI {
            aux.refuse_public_test_moduli()?;
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

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixtures() -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cggmp24-test-fixtures.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn public_test_moduli__should_be_the_fixture_prime_sets_moduli() {
        let doc = fixtures();
        let digests: Vec<String> = doc["primes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| {
                let primes = Primes::from_bytes(&serde_json::to_vec(set).unwrap()).unwrap();
                let [p, q, _, _] = primes.0.into_primes();
                modulus_digest(&(&p * &q)).unwrap()
            })
            .collect();
        assert_eq!(digests, PUBLIC_TEST_MODULI, "update PUBLIC_TEST_MODULI");
    }

    #[test]
    fn party_with_public_test_modulus__should_name_a_fixture_party() {
        let doc = fixtures();
        let share = serde_json::to_vec(&doc["aux"]["shares"][2]).unwrap();
        let aux = AuxShare::from_bytes(&share).unwrap();
        assert_eq!(
            aux.party_with_public_test_modulus().unwrap(),
            Some(NodeId::new("node0").unwrap())
        );
        // Every modulus of the fixture committee is known: the check looks at each party's.
        let named: Vec<usize> = aux
            .aux
            .N
            .iter()
            .enumerate()
            .filter(|(_, n)| PUBLIC_TEST_MODULI.contains(&modulus_digest(n).unwrap().as_str()))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(named, [0, 1, 2, 3]);
        // The test build (this one) accepts them; a production build refuses them, naming
        // the first party whose modulus is public.
        const { assert!(!REFUSES_PUBLIC_TEST_MODULI) };
        let refused = aux.refuse_public_test_moduli().unwrap_err();
        assert!(
            refused.to_string().contains("public test fixtures"),
            "{refused}"
        );
        assert_eq!(refused.culprits(), [NodeId::new("node0").unwrap()]);
    }
}
