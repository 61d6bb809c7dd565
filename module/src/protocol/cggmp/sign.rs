//! Interactive signing ([`Signing`]) and presignature generation ([`Presigning`]).
//!
//! Exactly `threshold` signers take part. cggmp24 numbers them 0..t in sorted order (their
//! position among the signers) and takes, for every position, the signer's keygen index
//! (its position in the committee); every signer passes the same list (CRATE-NOTES pitfall 7).

use std::fmt;
use std::sync::Arc;

use cggmp24::generic_ec::Scalar;
use cggmp24::signing::{PresignaturePublicData, SigningError};
use cggmp24::{DataToSign, ExecutionId, PrehashedDataToSign, Presignature, Signature};
use rand::{CryptoRng, RngCore};
use round_based::state_machine::wrap_protocol;
use seqmpc_proto::{NodeId, SessionId};
use sha2::{Digest as _, Sha256};

use super::driver::{Driver, Step};
use super::presign::SingleUsePresignature;
use super::share::CggmpKeyShare;
use super::verify::{finish, EcdsaSignature};
use super::{
    execution_id, owned_rng, CggmpMsg, Curve, Digest32, DigestLengthError, Engine, Outgoing,
    Parties, Phase, Progress,
};
use crate::error::ProtocolError;

/// cggmp24's signing message (generic order `<E, D>`).
type SignMsg = cggmp24::signing::msg::Msg<Curve, Sha256>;

/// What a full signing signs.
#[derive(Clone, PartialEq, Eq)]
pub enum SignData {
    /// A 32-byte digest, signed as is. Safe with the interactive protocol only: cggmp24
    /// refuses raw digests for presignatures (forgery attack, ePrint 2021/1330 section 1.1.2).
    Prehashed(Digest32),
    /// A message, hashed with SHA-256.
    Message(Vec<u8>),
}

impl fmt::Debug for SignData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignData::Prehashed(d) => write!(f, "Prehashed({d:?})"),
            SignData::Message(m) => write!(f, "Message({} bytes)", m.len()),
        }
    }
}

impl SignData {
    /// A prehashed digest; refused unless it is exactly 32 bytes.
    pub fn prehashed(digest: &[u8]) -> Result<SignData, DigestLengthError> {
        Digest32::try_from(digest).map(SignData::Prehashed)
    }

    /// The 32-byte digest that the signature signs.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            SignData::Prehashed(d) => d.0,
            SignData::Message(m) => Sha256::digest(m).into(),
        }
    }
}

/// The signers of a run, their cggmp24 positions and keygen indices.
struct Signers {
    /// The signers in position order (sorted), with our position.
    parties: Parties,
    /// `keygen_index[position]`.
    keygen_index: Vec<u16>,
}

fn signers(key: &CggmpKeyShare, signers: &[NodeId]) -> Result<Signers, ProtocolError> {
    let me = key
        .me()
        .ok_or_else(|| ProtocolError::Bug("key share without own index".into()))?;
    let parties = Parties::new(signers, me)?;
    let t = key.threshold();
    if parties.n() != t {
        return Err(ProtocolError::Local(format!(
            "{} signers, cggmp24 signs with exactly the threshold ({t})",
            parties.n()
        )));
    }
    let keygen_index = signers
        .iter()
        .map(|s| {
            key.parties
                .index_of(s)
                .ok_or_else(|| ProtocolError::Local(format!("{s} does not hold this key")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Signers {
        parties,
        keygen_index,
    })
}

/// A full signing in progress.
pub struct Signing {
    driver: Driver<Signature<Curve>, SignMsg, SigningError>,
    public_key: [u8; 33],
    digest: [u8; 32],
}

impl fmt::Debug for Signing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signing")
            .field("driver", &self.driver)
            .field("digest", &hex::encode(self.digest))
            .finish()
    }
}

impl Signing {
    /// Starts signing `data` with `key` among `signers_`: exactly `threshold` of the key's
    /// committee, this node included, sorted and unique (every signer passes the same list).
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        key: Arc<CggmpKeyShare>,
        signers_: &[NodeId],
        data: SignData,
        rng: &mut R,
    ) -> Result<(Signing, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        let Signers {
            parties,
            keygen_index,
        } = signers(&key, signers_)?;
        let eid = execution_id(Phase::Signing, &session, key.parties(), &keygen_index);
        let i = parties.me();
        let digest = data.digest();
        let public_key = key.public_key();
        let mut rng = owned_rng(rng)?;
        let machine = Box::new(wrap_protocol(move |party| async move {
            let builder = cggmp24::signing(ExecutionId::new(&eid), i, &keygen_index, &key.share)
                .enforce_reliable_broadcast(true);
            match data {
                SignData::Prehashed(d) => {
                    let d = PrehashedDataToSign::from_scalar(Scalar::from_be_bytes_mod_order(d.0));
                    builder.sign(&mut rng, party, &d).await
                }
                SignData::Message(m) => {
                    let d = DataToSign::<Curve>::digest::<Sha256>(&m);
                    builder.sign(&mut rng, party, &d).await
                }
            }
        }));
        match Driver::start(Phase::Signing, "signing", parties, machine)? {
            (Step::Waiting(driver), out) => Ok((
                Signing {
                    driver,
                    public_key,
                    digest,
                },
                out,
            )),
            (Step::Finished(_), _) => Err(ProtocolError::Bug("signing ended at start".into())),
        }
    }
}

impl Engine for Signing {
    type Output = EcdsaSignature;

    fn handle(
        self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Progress<Signing, EcdsaSignature>, ProtocolError> {
        let Signing {
            driver,
            public_key,
            digest,
        } = self;
        match driver.handle(from, msg)? {
            (Step::Waiting(driver), out) => Ok(Progress::Continue(
                Signing {
                    driver,
                    public_key,
                    digest,
                },
                out,
            )),
            (Step::Finished(sig), out) => {
                Ok(Progress::Done(finish(&sig, &public_key, &digest)?, out))
            }
        }
    }
}

type PresignOutput = (Presignature<Curve>, PresignaturePublicData<Curve>);

/// A presignature generation in progress.
pub struct Presigning {
    driver: Driver<PresignOutput, SignMsg, SigningError>,
    parties: Parties,
    public_key: [u8; 33],
}

impl fmt::Debug for Presigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presigning")
            .field("driver", &self.driver)
            .finish()
    }
}

impl Presigning {
    /// Starts generating one presignature with `key` among `signers_`: exactly `threshold`,
    /// this node included, sorted and unique. The same signers must later sign with it.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        key: Arc<CggmpKeyShare>,
        signers_: &[NodeId],
        rng: &mut R,
    ) -> Result<(Presigning, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        let Signers {
            parties,
            keygen_index,
        } = signers(&key, signers_)?;
        let eid = execution_id(Phase::Presigning, &session, key.parties(), &keygen_index);
        let i = parties.me();
        let public_key = key.public_key();
        let mut rng = owned_rng(rng)?;
        let machine = Box::new(wrap_protocol(move |party| async move {
            cggmp24::signing(ExecutionId::new(&eid), i, &keygen_index, &key.share)
                .enforce_reliable_broadcast(true)
                .generate_presignature(&mut rng, party)
                .await
        }));
        match Driver::start(Phase::Presigning, "presigning", parties.clone(), machine)? {
            (Step::Waiting(driver), out) => Ok((
                Presigning {
                    driver,
                    parties,
                    public_key,
                },
                out,
            )),
            (Step::Finished(_), _) => Err(ProtocolError::Bug("presigning ended at start".into())),
        }
    }
}

impl Engine for Presigning {
    type Output = SingleUsePresignature;

    fn handle(
        self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Progress<Presigning, SingleUsePresignature>, ProtocolError> {
        let Presigning {
            driver,
            parties,
            public_key,
        } = self;
        match driver.handle(from, msg)? {
            (Step::Waiting(driver), out) => Ok(Progress::Continue(
                Presigning {
                    driver,
                    parties,
                    public_key,
                },
                out,
            )),
            (Step::Finished((presig, public)), out) => Ok(Progress::Done(
                SingleUsePresignature::new(presig, public, parties, public_key)?,
                out,
            )),
        }
    }
}
