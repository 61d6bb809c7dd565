//! CGGMP24 sessions on dedicated worker threads.
//!
//! The CGGMP24 engines are not `Send` (round-based shares an `Rc` between a protocol future
//! and its driver) and one step can take seconds of CPU, so each CGGMP24 session runs on its
//! own OS thread: the thread creates the engine, owns it until the end, and is the only one
//! to touch it. The session manager task forwards the session's authenticated messages over a
//! bounded channel (`Worker::forward`); the worker sends its outgoing messages itself through
//! the p2p handle, and reports the outcome once (`Finished`) on a tokio channel the session
//! manager selects on. Dropping the `Worker` (session failed, timed out, or was removed)
//! closes the channel and the thread ends at its next receive.
//!
//! Where the material comes from ([`CggmpConfig`]): a node either loads pregenerated safe
//! primes and, optionally, a committee's aux info (test fixtures: `--cggmp-primes FILE`), or
//! keeps a pool of prime sets generated in the background and stored sealed in the key store
//! (`PrimePool`). Aux info is reused across keys of a committee (`AuxSource::Existing`: the
//! DKG alone, milliseconds): in KeyGenReady each party offers the fingerprint of the aux info
//! it holds for the committee (the configured one, or the one inside a READY key share of
//! that committee), and the coordinator's KeyGenStart says to reuse it only if every party
//! offered the same. Otherwise the keygen runs aux-info generation from a prime set beside the
//! DKG (`AuxSource::Generate`).
//!
//! CPU priority: a presignature is background work (the pools refill whenever they fall below
//! their target), while a signing, a keygen or aux info is a request someone waits for. On 2
//! cores, six presignature workers refilling a new key's pools slowed the full signing started
//! beside them from about 2 s to 25 s, past its chain deadline. So a presignature worker lowers
//! its own thread to the lowest priority (`BACKGROUND_NICE`): it takes only CPU that the
//! foreground work leaves idle, on this node and on the other processes of the machine. So does
//! a safe-prime search for a pool refill (`PrimePool`); one for a keygen that waits does not.

use std::fmt;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, SessionId};
use tokio::sync::mpsc;
use tracing::warn;
use zeroize::Zeroizing;

use crate::error::ProtocolError;
use crate::protocol::cggmp::{
    AuxGen, AuxShare, AuxSource, CggmpKeyShare, CggmpMsg, EcdsaSignature, Engine, KeyGen,
    Presigning, Primes, Progress, SignData, Signing, SingleUsePresignature,
};
use crate::protocol::Outgoing;
use crate::session::traffic::Traffic;

mod prime_pool;

pub(crate) use prime_pool::PrimePool;

/// Most messages queued for one worker before the session manager drops more.
const WORKER_QUEUE: usize = 4096;

/// The nice value of a background worker's thread: the lowest CPU priority. An unprivileged
/// thread may lower its own priority but never raise it back, so only a thread that stays in
/// the background for its whole life takes it.
const BACKGROUND_NICE: i32 = 19;

/// A committee's aux info for this node (serialized [`AuxShare`], holds Paillier secrets).
#[derive(Clone)]
pub struct CommitteeAux {
    /// The committee, sorted.
    pub parties: Vec<NodeId>,
    /// [`AuxShare::to_bytes`].
    pub share: Arc<Zeroizing<Vec<u8>>>,
}

/// Where this node's CGGMP24 material comes from.
#[derive(Clone, Default)]
pub struct CggmpConfig {
    /// A pregenerated safe-prime set ([`Primes::to_bytes`]). Reused for every aux-info run:
    /// test fixtures only. Without it, the node keeps a pool of generated sets (`PrimePool`).
    pub primes: Option<Arc<Zeroizing<Vec<u8>>>>,
    /// Aux info of one committee, reused by every keygen of exactly that committee.
    pub aux: Option<CommitteeAux>,
}

impl fmt::Debug for CggmpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CggmpConfig")
            .field("primes", &self.primes.as_ref().map(|_| "<redacted>"))
            .field("aux_parties", &self.aux.as_ref().map(|a| &a.parties))
            .finish()
    }
}

impl CggmpConfig {
    /// Loads this node's prime set and, when the file has one for `me`, its aux info from the
    /// test-fixture JSON (`module/tests/fixtures/cggmp24-test-fixtures.json`: `parties`,
    /// `primes[i]`, `aux.parties`, `aux.shares[j]`). Test-only material: its secrets are
    /// public.
    pub fn from_fixture_file(path: &Path, me: &NodeId) -> Result<CggmpConfig, ProtocolError> {
        let bad = |what: &str| ProtocolError::Local(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let names = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let i = names(&doc["parties"])
            .iter()
            .position(|p| p == me.as_str())
            .ok_or_else(|| bad(&format!("no prime set for {me}")))?;
        let primes_json = doc["primes"]
            .get(i)
            .ok_or_else(|| bad(&format!("no prime set for {me}")))?;
        let primes = Zeroizing::new(
            serde_json::to_vec(primes_json).map_err(|e| bad(&format!("primes: {e}")))?,
        );
        // Validate now, not at the first keygen.
        Primes::from_bytes(&primes)?;
        let aux_parties = names(&doc["aux"]["parties"]);
        let aux = match aux_parties.iter().position(|p| p == me.as_str()) {
            None => None,
            Some(j) => {
                let share_json = doc["aux"]["shares"]
                    .get(j)
                    .ok_or_else(|| bad(&format!("no aux share for {me}")))?;
                let share = Zeroizing::new(
                    serde_json::to_vec(share_json).map_err(|e| bad(&format!("aux: {e}")))?,
                );
                let parsed = AuxShare::from_bytes(&share)?;
                Some(CommitteeAux {
                    parties: parsed.parties().to_vec(),
                    share: Arc::new(share),
                })
            }
        };
        Ok(CggmpConfig {
            primes: Some(Arc::new(primes)),
            aux,
        })
    }
}

pub(crate) use crate::session::AuxOffer;

/// Aux info of a keygen.
pub(crate) enum AuxPlan {
    /// Generate from this prime set ([`Primes::to_bytes`]).
    Generate(Zeroizing<Vec<u8>>),
    /// Reuse this committee's ([`AuxShare::to_bytes`]).
    Existing(Arc<Zeroizing<Vec<u8>>>),
}

/// What a worker runs.
pub(crate) enum Task {
    /// DKG and aux info.
    Keygen {
        parties: Vec<NodeId>,
        threshold: u16,
        aux: AuxPlan,
    },
    /// Full interactive signing.
    Sign {
        /// [`CggmpKeyShare::to_bytes`].
        share: Zeroizing<Vec<u8>>,
        signers: Vec<NodeId>,
        data: SignData,
    },
    /// Aux info alone, for a committee that received reshared shares.
    Aux {
        parties: Vec<NodeId>,
        /// [`Primes::to_bytes`].
        primes: Zeroizing<Vec<u8>>,
    },
    /// One presignature with exactly these signers.
    Presign {
        /// [`CggmpKeyShare::to_bytes`].
        share: Zeroizing<Vec<u8>>,
        signers: Vec<NodeId>,
    },
}

impl Task {
    /// Whether nobody waits for this task: a presignature refills a pool. A signing, a keygen
    /// and aux info answer a request on the chain.
    fn is_background(&self) -> bool {
        match self {
            Task::Presign { .. } => true,
            Task::Keygen { .. } | Task::Sign { .. } | Task::Aux { .. } => false,
        }
    }
}

pub(crate) use crate::session::KeygenOutput;

/// What a worker produced.
pub(crate) enum Output {
    Keygen(Result<KeygenOutput, ProtocolError>),
    Sign(Result<EcdsaSignature, ProtocolError>),
    Presign(Result<Box<SingleUsePresignature>, ProtocolError>),
    /// [`AuxShare::to_bytes`].
    Aux(Result<Zeroizing<Vec<u8>>, ProtocolError>),
}

/// A worker's report to the session manager.
pub(crate) struct Finished {
    pub(crate) session: SessionId,
    pub(crate) output: Output,
}

/// The session manager's end of a worker.
pub(crate) struct Worker {
    tx: std_mpsc::SyncSender<(NodeId, CggmpMsg)>,
    /// What it sent and got, per party ([`Traffic`]).
    traffic: Arc<Traffic<Instant>>,
}

impl Worker {
    /// Hands an authenticated message to the worker (never blocks; a full queue drops it).
    pub(crate) fn forward(&self, from: NodeId, msg: CggmpMsg) {
        let sender = from.clone();
        match self.tx.try_send((from, msg)) {
            Ok(()) => self.traffic.received(&sender, Instant::now()),
            Err(std_mpsc::TrySendError::Disconnected(_)) => {}
            Err(std_mpsc::TrySendError::Full((from, _))) => {
                warn!(%from, "CGGMP24 worker queue full; message dropped");
            }
        }
    }

    /// The parties this worker waits for after `quiet` without traffic ([`Traffic`]).
    pub(crate) fn behind(&self, now: Instant, quiet: Duration) -> Vec<NodeId> {
        self.traffic.behind(now.checked_sub(quiet))
    }
}

/// Everything a worker thread needs besides its task.
pub(crate) struct WorkerEnv {
    pub(crate) me: NodeId,
    /// Where the worker's messages go (the node's transport).
    pub(crate) transport: std::sync::Arc<dyn crate::node::transport::Transport>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) done: mpsc::Sender<Finished>,
    pub(crate) timeout: Duration,
    /// Told the named points the worker reaches (`cggmp-sign-mid`).
    pub(crate) checkpoints: std::sync::Arc<dyn crate::node::checkpoint::Checkpoints>,
}

/// Starts the worker thread of `session`.
pub(crate) fn spawn(
    session: SessionId,
    task: Task,
    env: WorkerEnv,
) -> Result<Worker, ProtocolError> {
    let (tx, rx) = std_mpsc::sync_channel(WORKER_QUEUE);
    let traffic = Arc::new(Traffic::new(env.me.clone(), Instant::now()));
    let counts = traffic.clone();
    std::thread::Builder::new()
        // Linux keeps 15 bytes of a thread name: the kind shows which priority it runs at.
        .name(format!(
            "{}-{}",
            if task.is_background() {
                "presign"
            } else {
                "cggmp"
            },
            hex::encode(session.0).chars().take(7).collect::<String>()
        ))
        .spawn(move || {
            if task.is_background() {
                run_in_background();
            }
            let deadline = Instant::now() + env.timeout;
            let send = |out: Vec<Outgoing<CggmpMsg>>| {
                for o in out {
                    counts.sent(&o.to, Instant::now());
                    let payload = Payload::Cggmp(wire::CggmpPayload {
                        msg: o.msg.to_bytes(),
                    });
                    env.rt
                        .block_on(env.transport.send(&session, &o.to, payload));
                }
            };
            let output = match task {
                Task::Keygen {
                    parties,
                    threshold,
                    aux,
                } => Output::Keygen(run_keygen(
                    session, &env.me, &parties, threshold, aux, &rx, &send, deadline,
                )),
                Task::Sign {
                    share,
                    signers,
                    data,
                } => {
                    // A checkpoint once the second round is out (`crash-at=cggmp-sign-mid`):
                    // by then every other signer had this node's first round long enough to
                    // answer it, so a crash here stops this node mid-signing, not before it.
                    let rounds = std::cell::Cell::new(0u32);
                    let send = |out: Vec<Outgoing<CggmpMsg>>| {
                        let any = !out.is_empty();
                        send(out);
                        if any {
                            rounds.set(rounds.get().saturating_add(1));
                            if rounds.get() == 2 {
                                env.checkpoints.reached("cggmp-sign-mid");
                            }
                        }
                    };
                    Output::Sign(run_sign(
                        session, &share, &signers, data, &rx, &send, deadline,
                    ))
                }
                Task::Aux { parties, primes } => Output::Aux(
                    Primes::from_bytes(&primes)
                        .and_then(|p| AuxGen::start(session, &env.me, &parties, p, &mut OsRng))
                        .and_then(|start| drive(start, &rx, &send, deadline))
                        .and_then(|aux: AuxShare| aux.to_bytes()),
                ),
                Task::Presign { share, signers } => {
                    Output::Presign(run_presign(session, &share, &signers, &rx, &send, deadline))
                }
            };
            // The session manager may be gone (shutdown): nothing left to do then.
            let _ = env.done.blocking_send(Finished { session, output });
        })
        .map_err(|e| ProtocolError::Local(format!("cannot start a CGGMP24 worker: {e}")))?;
    Ok(Worker { tx, traffic })
}

/// Lowers the calling thread to [`BACKGROUND_NICE`] (presignature workers, safe-prime
/// refills). On Linux a thread id names that one thread for `setpriority(PRIO_PROCESS)`; the
/// rest of the process keeps its priority.
#[cfg(target_os = "linux")]
pub(crate) fn run_in_background() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
        warn!(error = %e, "cannot lower a background thread's CPU priority");
    }
}

/// Elsewhere the thread keeps the process's priority.
#[cfg(not(target_os = "linux"))]
pub(crate) fn run_in_background() {}

type Rx = std_mpsc::Receiver<(NodeId, CggmpMsg)>;

#[allow(clippy::too_many_arguments)]
fn run_keygen(
    session: SessionId,
    me: &NodeId,
    parties: &[NodeId],
    threshold: u16,
    aux: AuxPlan,
    rx: &Rx,
    send: &dyn Fn(Vec<Outgoing<CggmpMsg>>),
    deadline: Instant,
) -> Result<KeygenOutput, ProtocolError> {
    let source = match aux {
        AuxPlan::Generate(primes) => AuxSource::Generate(Box::new(Primes::from_bytes(&primes)?)),
        AuxPlan::Existing(share) => AuxSource::Existing(AuxShare::from_bytes(&share)?),
    };
    let start = KeyGen::start(session, me, parties, threshold, source, &mut OsRng)?;
    let share: CggmpKeyShare = drive(start, rx, send, deadline)?;
    KeygenOutput::new(&session, &share)
}

fn run_sign(
    session: SessionId,
    share: &[u8],
    signers: &[NodeId],
    data: SignData,
    rx: &Rx,
    send: &dyn Fn(Vec<Outgoing<CggmpMsg>>),
    deadline: Instant,
) -> Result<EcdsaSignature, ProtocolError> {
    let key = Arc::new(CggmpKeyShare::from_bytes(share)?);
    let start = Signing::start(session, key, signers, data, &mut OsRng)?;
    drive(start, rx, send, deadline)
}

fn run_presign(
    session: SessionId,
    share: &[u8],
    signers: &[NodeId],
    rx: &Rx,
    send: &dyn Fn(Vec<Outgoing<CggmpMsg>>),
    deadline: Instant,
) -> Result<Box<SingleUsePresignature>, ProtocolError> {
    let key = Arc::new(CggmpKeyShare::from_bytes(share)?);
    let start = Presigning::start(session, key, signers, &mut OsRng)?;
    drive(start, rx, send, deadline).map(Box::new)
}

/// Runs an engine to its end: start messages out, then one forwarded message at a time.
fn drive<E: Engine>(
    (mut engine, out): (E, Vec<Outgoing<CggmpMsg>>),
    rx: &Rx,
    send: &dyn Fn(Vec<Outgoing<CggmpMsg>>),
    deadline: Instant,
) -> Result<E::Output, ProtocolError> {
    send(out);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (from, msg) = rx.recv_timeout(left).map_err(|e| match e {
            std_mpsc::RecvTimeoutError::Timeout => {
                ProtocolError::Local("timed out waiting for other parties".into())
            }
            std_mpsc::RecvTimeoutError::Disconnected => {
                ProtocolError::Local("session closed by the session manager".into())
            }
        })?;
        match engine.handle(&from, msg)? {
            Progress::Continue(e, out) => {
                send(out);
                engine = e;
            }
            Progress::Done(o, out) => {
                send(out);
                return Ok(o);
            }
        }
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    fn share() -> Zeroizing<Vec<u8>> {
        Zeroizing::new(vec![0u8; 4])
    }

    #[test]
    fn task__should_be_background_only_for_a_presignature() {
        let signers = vec![NodeId::new("node0").unwrap(), NodeId::new("node1").unwrap()];
        let presign = Task::Presign {
            share: share(),
            signers: signers.clone(),
        };
        let sign = Task::Sign {
            share: share(),
            signers: signers.clone(),
            data: SignData::Message(b"m".to_vec()),
        };
        let aux = Task::Aux {
            parties: signers,
            primes: share(),
        };
        assert!(presign.is_background());
        assert!(!sign.is_background());
        assert!(!aux.is_background());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn run_in_background__should_lower_only_the_calling_thread() {
        let nice = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let before = nice();
        let (background, foreground) = std::thread::scope(|s| {
            let background = s.spawn(|| {
                run_in_background();
                nice()
            });
            let foreground = s.spawn(nice);
            (background.join().unwrap(), foreground.join().unwrap())
        });
        assert_eq!(background, BACKGROUND_NICE);
        assert_eq!(foreground, before);
        assert_eq!(nice(), before);
    }
}
