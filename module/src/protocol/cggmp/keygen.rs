//! Key generation: the threshold DKG ([`Dkg`]), aux info ([`AuxGen`]) and both together
//! ([`KeyGen`]), which yields a complete [`CggmpKeyShare`].
//!
//! The two protocols are independent (cggmp24 runs aux info before or after the DKG), so
//! [`KeyGen`] runs them side by side and routes each message by its [`Phase`]: nothing is
//! buffered while the slow aux-info run (15-30 s per party) is in progress.

use std::fmt;

use cggmp24::key_share::{AuxInfo, IncompleteKeyShare};
use cggmp24::{ExecutionId, KeyRefreshError, KeygenError};
use rand::{CryptoRng, RngCore};
use round_based::state_machine::wrap_protocol;
use seqmpc_proto::{NodeId, SessionId};
use sha2::Sha256;

use super::driver::{Driver, Step};
use super::share::{AuxShare, CggmpKeyShare, CoreShare, Primes};
use super::{
    execution_id, execution_id_bound, owned_rng, CggmpMsg, Curve, Engine, Level, Outgoing, Parties,
    Phase, Progress,
};
use crate::error::ProtocolError;

/// cggmp24's threshold DKG message (generic order `<E, L, D>`, CRATE-NOTES pitfall 9).
type KeygenMsg = cggmp24::keygen::ThresholdMsg<Curve, Level, Sha256>;
/// cggmp24's aux-info message (generic order `<D, L>`).
type AuxMsg = cggmp24::key_refresh::msg::Msg<Sha256, Level>;

type DkgDriver = Driver<IncompleteKeyShare<Curve>, KeygenMsg, KeygenError>;
type AuxDriver = Driver<AuxInfo<Level>, AuxMsg, KeyRefreshError>;

/// A threshold DKG in progress (cggmp24 `keygen(..).set_threshold(t)`).
#[derive(Debug)]
pub struct Dkg {
    driver: DkgDriver,
    parties: Parties,
}

impl Dkg {
    /// Starts the DKG of a `threshold`-of-`parties.len()` key among `parties` (sorted,
    /// unique, as the chain stores them); returns the first messages to send.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        parties: &[NodeId],
        threshold: u16,
        rng: &mut R,
    ) -> Result<(Dkg, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        Dkg::start_bound(session, me, parties, threshold, &[], rng)
    }

    /// [`Dkg::start`] whose execution id also commits to `bind` ([`execution_id_bound`]): a
    /// party started with other `bind` bytes takes part in another execution, and the DKG
    /// fails instead of finishing.
    pub fn start_bound<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        parties: &[NodeId],
        threshold: u16,
        bind: &[u8],
        rng: &mut R,
    ) -> Result<(Dkg, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        let parties = Parties::new(parties, me)?;
        let n = parties.n();
        if threshold < 2 || threshold > n {
            return Err(ProtocolError::Local(format!(
                "threshold {threshold} of {n}: cggmp24 needs 2 <= t <= n"
            )));
        }
        let eid = execution_id_bound(Phase::Keygen, &session, parties.nodes(), &[threshold], bind);
        let i = parties.me();
        let mut rng = owned_rng(rng)?;
        let machine = Box::new(wrap_protocol(move |party| async move {
            cggmp24::keygen::<Curve>(ExecutionId::new(&eid), i, n)
                .set_threshold(threshold)
                .enforce_reliable_broadcast(true)
                .start(&mut rng, party)
                .await
        }));
        match Driver::start(Phase::Keygen, "keygen", parties.clone(), machine)? {
            (Step::Waiting(driver), out) => Ok((Dkg { driver, parties }, out)),
            (Step::Finished(_), _) => Err(ProtocolError::Bug("keygen ended at start".into())),
        }
    }
}

impl Engine for Dkg {
    type Output = CoreShare;

    fn handle(
        self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Progress<Dkg, CoreShare>, ProtocolError> {
        let Dkg { driver, parties } = self;
        match driver.handle(from, msg)? {
            (Step::Waiting(driver), out) => Ok(Progress::Continue(Dkg { driver, parties }, out)),
            (Step::Finished(share), out) => Ok(Progress::Done(CoreShare { share, parties }, out)),
        }
    }
}

/// An aux-info run in progress (cggmp24 `aux_info_gen`).
pub struct AuxGen {
    driver: AuxDriver,
    parties: Parties,
    /// Kept for the CRT precomputation of the output (see [`AuxShare`]).
    primes: Primes,
}

impl fmt::Debug for AuxGen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuxGen")
            .field("driver", &self.driver)
            .finish()
    }
}

impl AuxGen {
    /// Starts aux-info generation among `parties` with this party's pregenerated primes.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        parties: &[NodeId],
        primes: Primes,
        rng: &mut R,
    ) -> Result<(AuxGen, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        let parties = Parties::new(parties, me)?;
        let n = parties.n();
        if n < 2 {
            return Err(ProtocolError::Local(
                "aux info needs 2 parties or more".into(),
            ));
        }
        let eid = execution_id(Phase::AuxInfo, &session, parties.nodes(), &[]);
        let i = parties.me();
        let mut rng = owned_rng(rng)?;
        let pregenerated = primes.0.clone();
        let machine = Box::new(wrap_protocol(move |party| async move {
            cggmp24::aux_info_gen(ExecutionId::new(&eid), i, n, pregenerated)
                .enforce_reliable_broadcast(true)
                .start(&mut rng, party)
                .await
        }));
        match Driver::start(Phase::AuxInfo, "aux info", parties.clone(), machine)? {
            (Step::Waiting(driver), out) => Ok((
                AuxGen {
                    driver,
                    parties,
                    primes,
                },
                out,
            )),
            (Step::Finished(_), _) => Err(ProtocolError::Bug("aux info ended at start".into())),
        }
    }
}

impl Engine for AuxGen {
    type Output = AuxShare;

    fn handle(
        self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Progress<AuxGen, AuxShare>, ProtocolError> {
        let AuxGen {
            driver,
            parties,
            primes,
        } = self;
        match driver.handle(from, msg)? {
            (Step::Waiting(driver), out) => Ok(Progress::Continue(
                AuxGen {
                    driver,
                    parties,
                    primes,
                },
                out,
            )),
            (Step::Finished(aux), out) => {
                Ok(Progress::Done(AuxShare::new(aux, primes, parties)?, out))
            }
        }
    }
}

/// Where a keygen's aux info comes from.
pub enum AuxSource {
    /// Run aux-info generation with these primes, alongside the DKG.
    Generate(Box<Primes>),
    /// Reuse this committee's aux info.
    Existing(AuxShare),
}

impl fmt::Debug for AuxSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuxSource::Generate(_) => f.write_str("Generate(<primes>)"),
            AuxSource::Existing(_) => f.write_str("Existing(<aux>)"),
        }
    }
}

/// One of the two runs of a [`KeyGen`].
#[derive(Debug)]
enum Part<E: Engine> {
    Running(E),
    Done(E::Output),
}

/// DKG and aux info side by side, then `KeyShare::from_parts`.
#[derive(Debug)]
pub struct KeyGen {
    dkg: Part<Dkg>,
    aux: Part<AuxGen>,
}

impl KeyGen {
    /// Starts the DKG and, with [`AuxSource::Generate`], aux-info generation (one session id:
    /// the two runs get different execution ids). With [`AuxSource::Existing`], the DKG's
    /// execution id commits to the aux info's fingerprint, so parties that hold different aux
    /// info for the committee (a stale copy, a lie about which one they hold) fail the DKG at
    /// once rather than finishing a key whose shares do not fit together. Generated aux info
    /// has no fingerprint before it exists; [`CggmpKeyShare::from_parts`] checks the pair.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        me: &NodeId,
        parties: &[NodeId],
        threshold: u16,
        aux: AuxSource,
        rng: &mut R,
    ) -> Result<(KeyGen, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        let (aux, mut out, bind) = match aux {
            AuxSource::Generate(primes) => {
                let (a, out) = AuxGen::start(session, me, parties, *primes, rng)?;
                (Part::Running(a), out, Vec::new())
            }
            AuxSource::Existing(a) => {
                if a.parties() != parties || a.parties.my_node() != Some(me) {
                    return Err(ProtocolError::Local(
                        "existing aux info is of another committee or party".into(),
                    ));
                }
                let fingerprint = a.fingerprint()?.to_vec();
                (Part::Done(a), Vec::new(), fingerprint)
            }
        };
        let (dkg, dkg_out) = Dkg::start_bound(session, me, parties, threshold, &bind, rng)?;
        out.extend(dkg_out);
        Ok((
            KeyGen {
                dkg: Part::Running(dkg),
                aux,
            },
            out,
        ))
    }

    fn step<E: Engine>(
        part: Part<E>,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<(Part<E>, Vec<Outgoing<CggmpMsg>>), ProtocolError> {
        match part {
            Part::Running(e) => match e.handle(from, msg)? {
                Progress::Continue(e, out) => Ok((Part::Running(e), out)),
                Progress::Done(o, out) => Ok((Part::Done(o), out)),
            },
            // A run ends only after every message addressed to us arrived: anything later is
            // a duplicate, and cannot change the result.
            done @ Part::Done(_) => Ok((done, Vec::new())),
        }
    }
}

impl Engine for KeyGen {
    type Output = CggmpKeyShare;

    fn handle(
        self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Progress<KeyGen, CggmpKeyShare>, ProtocolError> {
        let KeyGen { dkg, aux } = self;
        let (dkg, aux, out) = match msg.phase() {
            Phase::Keygen => {
                let (dkg, out) = KeyGen::step(dkg, from, msg)?;
                (dkg, aux, out)
            }
            Phase::AuxInfo => {
                let (aux, out) = KeyGen::step(aux, from, msg)?;
                (dkg, aux, out)
            }
            other => {
                return Err(ProtocolError::blame(
                    from,
                    format!("{from} sent a {other:?} message to a keygen"),
                ))
            }
        };
        match (dkg, aux) {
            (Part::Done(core), Part::Done(aux)) => {
                Ok(Progress::Done(CggmpKeyShare::from_parts(core, aux)?, out))
            }
            (dkg, aux) => Ok(Progress::Continue(KeyGen { dkg, aux }, out)),
        }
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::protocol::cggmp::local;

    fn dkg(binds: &[&[u8]]) -> local::Outcome<CoreShare> {
        let parties: Vec<NodeId> = (0..binds.len())
            .map(|i| NodeId::new(format!("node{i}")).unwrap())
            .collect();
        let mut rng = StdRng::seed_from_u64(7);
        let started = parties
            .iter()
            .zip(binds)
            .map(|(p, bind)| {
                let session = SessionId([0x42; 32]);
                let (d, out) = Dkg::start_bound(session, p, &parties, 2, bind, &mut rng).unwrap();
                (p.clone(), d, out)
            })
            .collect();
        local::run(started, Some(&mut rng), None)
    }

    #[test]
    fn dkg__should_finish_only_when_every_party_binds_the_same_aux_fingerprint() {
        let same = dkg(&[b"aux-a", b"aux-a", b"aux-a"]);
        assert_eq!(same.results.len(), 3, "{:?}", same.results.keys());
        assert!(same.results.values().all(|r| r.is_ok()), "{same:?}");
        // node2 holds other aux info: no party ends with a share.
        let split = dkg(&[b"aux-a", b"aux-a", b"aux-b"]);
        assert!(
            !split.results.values().any(|r| r.is_ok()),
            "a DKG finished across different aux fingerprints: {:?}",
            split.results
        );
    }
}
