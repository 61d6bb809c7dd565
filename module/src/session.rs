//! The sans-IO session layer: `Manager::handle(now, Input, rng) -> Vec<Effect>`.
//!
//! The manager owns the keygens of a node (every scheme, with their prepare/ready/start
//! handshake), its FROST signings and its resharings, the buffer of messages that arrive before their session's job, the
//! evidence kept for failure reports, and the one admission policy that decides whether a
//! committed job runs here ([`admission`], through [`Manager::admit`]). It does no I/O: it never awaits, never reads
//! a clock (time comes in as `now`, milliseconds on the node's clock) and never draws from the
//! OS (the RNG is passed in). What it wants done comes out as [`Effect`]s, executed in order by
//! the runtime (`crate::node`, over libp2p, LevelDB and the result submitter) or by the
//! deterministic simulator (`seqmpc-sim`), which feeds the answers back as inputs.
//!
//! Every session is one `enum` state per kind ([`keygen::KeygenState`],
//! [`sign::SignState`], [`reshare::ReshareState`]); transitions are exhaustive matches.
//! CGGMP24 work of seconds of CPU (a keygen's DKG and aux info, a resharing's aux info) runs
//! on a runtime worker ([`Effect::StartWorker`], messages by [`Effect::ToWorker`], output back
//! as [`Input::WorkerDone`]); a keygen that generates aux info first reserves a safe-prime set
//! ([`Effect::ReservePrimes`] / [`Input::PrimesReserved`], see `keygen::cggmp`).
//!
//! CGGMP24 signing (`ecdsa::EcdsaState`) takes a pooled presignature through a plan, or
//! runs the full protocol on a worker; the presignature pools and the background sessions
//! that fill them are the manager's too (`presign`), kept in memory only.

pub mod admission;
mod block_clock;
pub mod codec;
mod early;
mod ecdsa;
mod io;
pub(crate) mod keygen;
pub mod mem_store;
mod presign;
pub(crate) mod reshare;
mod sign;
pub mod traffic;
mod worker;

use std::collections::BTreeMap;

use rand::{CryptoRng, RngCore};
use seqmpc_proto::tx::{SignedMessage, TxMsg, MAX_EVIDENCE_MESSAGES};
use seqmpc_proto::wire::p2p_envelope::Payload;
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use tracing::{debug, info, warn};

use crate::job::Job;
use crate::protocol::frost_sign::AnyKeyMaterial;

pub use admission::{log_skip, Admission, Here, Skip};
use io::Buffered;
pub use io::{
    Config, Effect, Input, MetricEvent, Millis, Msg, Quote, StoreOp, StoreReply, StoreToken,
};
pub use keygen::KeygenState;
pub use presign::PresignPoolLevel;
pub use reshare::{AuxState, ReshareState};
pub use sign::SignState;
pub use worker::{
    aux_offer_in, AuxOffer, InlineStep, InlineWorker, KeygenOutput, ShareBytes, WorkerOutput,
    WorkerTask,
};

/// A running session.
enum Session {
    Keygen(Box<keygen::Keygen>),
    Sign(Box<sign::Sign>),
    Ecdsa(Box<ecdsa::Ecdsa>),
    Presign(Box<presign::Presign>),
    Reshare(Box<reshare::Reshare>),
}

impl Session {
    fn is_party(&self, n: &NodeId) -> bool {
        match self {
            Session::Keygen(k) => k.parties.contains(n),
            Session::Sign(s) => s.signers.contains(n),
            Session::Ecdsa(s) => s.signers.contains(n),
            Session::Presign(p) => p.signers.contains(n),
            Session::Reshare(r) => r.is_party(n),
        }
    }
}

/// Most messages one sender may have waiting in one session's buffer (a keygen waiting for
/// its start, a signing loading its share). A FROST party sends each other party at most two
/// per session (round 1 and round 2); beyond the cap they are dropped, so a party that floods
/// a session it belongs to cannot grow it (payloads other than CGGMP24's are at most 256 KiB).
pub const MAX_BUFFERED_PER_SENDER: usize = 4;

/// Buffers `msg` from `from` unless `from` already has [`MAX_BUFFERED_PER_SENDER`] waiting
/// in `buffered`; whether it was kept.
fn buffer_capped<M>(buffered: &mut Vec<(NodeId, M)>, from: NodeId, msg: M) -> bool {
    buffer_capped_at(buffered, from, msg, MAX_BUFFERED_PER_SENDER)
}

/// Most CGGMP24 keygen messages one sender may have waiting for the keygen's start: a party
/// that started first sends its first round of the DKG and of aux info (a broadcast and a
/// p2p message each) before it needs this node's; the rest is headroom.
pub const MAX_BUFFERED_CGGMP_PER_SENDER: usize = 16;

/// [`buffer_capped`] with a cap of `cap` messages per sender.
fn buffer_capped_at<M>(buffered: &mut Vec<(NodeId, M)>, from: NodeId, msg: M, cap: usize) -> bool {
    if buffered.iter().filter(|(f, _)| *f == from).count() >= cap {
        // Debug only: a flooding party must not flood the log either.
        debug!(%from, "session buffer full for this sender; message dropped");
        return false;
    }
    buffered.push((from, msg));
    true
}

/// Most signed messages kept as evidence per session.
const MAX_EVIDENCE_PER_SESSION: usize = 64;

/// The FROST session manager of one node. See the module docs.
pub struct Manager {
    cfg: Config,
    sessions: BTreeMap<SessionId, Session>,
    /// Messages of sessions not started here yet: sender's Commit may run ahead of ours.
    early: BTreeMap<SessionId, Vec<(Msg, Millis)>>,
    /// Buffered early messages and their bytes, in all and per sender.
    early_total: Buffered,
    early_by_sender: BTreeMap<NodeId, Buffered>,
    /// Per live session, the signed messages the chain can check a blame with.
    evidence: BTreeMap<SessionId, Vec<Quote>>,
    finished: BTreeMap<SessionId, Millis>,
    /// Verified signatures held for the chain in case the aggregator's does not come.
    backups: BTreeMap<(seqmpc_proto::RequestId, SessionId), sign::Backup>,
    /// READY FROST shares and their generation, decoded once.
    keys: BTreeMap<KeyId, (AnyKeyMaterial, crate::job::KeyVersion)>,
    /// Whether a committed job runs here.
    admission: Admission,
    /// The chain's block interval, as the jobs show it.
    blocks: block_clock::BlockClock,
    /// CGGMP24 presignature pools and the READY keys they are for.
    pools: presign::Pools,
    /// Sessions whose runtime worker runs ([`Effect::StartWorker`] until it ends or stops).
    workers: std::collections::BTreeSet<SessionId>,
}

impl Manager {
    /// A manager with no session.
    pub fn new(cfg: Config) -> Self {
        Manager {
            admission: Admission::new(cfg.me.clone(), cfg.session_timeout_ms),
            cfg,
            sessions: BTreeMap::new(),
            early: BTreeMap::new(),
            early_total: Buffered::default(),
            early_by_sender: BTreeMap::new(),
            evidence: BTreeMap::new(),
            finished: BTreeMap::new(),
            backups: BTreeMap::new(),
            keys: BTreeMap::new(),
            blocks: block_clock::BlockClock::default(),
            pools: presign::Pools::default(),
            workers: std::collections::BTreeSet::new(),
        }
    }

    /// This node.
    pub fn me(&self) -> &NodeId {
        &self.cfg.me
    }

    /// Sessions alive now.
    pub fn active(&self) -> usize {
        self.sessions.len()
    }

    /// Whether `session` is a session of this manager (running or recently finished).
    pub fn knows(&self, session: &SessionId) -> bool {
        self.sessions.contains_key(session) || self.finished.contains_key(session)
    }

    /// Keygens running here: session, key, scheme, phase and start time.
    pub fn keygens(&self) -> Vec<(SessionId, KeyId, Scheme, String, Millis)> {
        self.sessions
            .iter()
            .filter_map(|(id, s)| match s {
                Session::Keygen(k) => Some((*id, k.key_id.clone(), k.scheme, k.phase(), k.started)),
                Session::Sign(_)
                | Session::Ecdsa(_)
                | Session::Presign(_)
                | Session::Reshare(_) => None,
            })
            .collect()
    }

    /// Messages held inside running sessions until they can take them (a keygen waiting for
    /// its start, a signing loading its share).
    pub fn session_buffered(&self) -> usize {
        self.sessions
            .values()
            .map(|s| match s {
                Session::Keygen(k) => k.state.buffered(),
                Session::Sign(s) => s.state.buffered(),
                Session::Ecdsa(s) => s.state.buffered(),
                Session::Presign(p) => p.state.buffered(),
                Session::Reshare(r) => r.state.buffered(),
            })
            .sum()
    }

    /// Messages held for sessions not started yet, and their bytes ([`Msg::buffered_bytes`]).
    pub fn early_buffered(&self) -> (usize, usize) {
        (self.early_total.count, self.early_total.bytes)
    }

    /// Forget a decoded key (its share changed or went away outside this manager).
    pub fn forget_key(&mut self, key_id: &KeyId) {
        self.keys.remove(key_id);
    }

    /// The one admission policy ([`admission`]) applied to `job` at `now`, for a session
    /// this manager runs or one the runtime runs (`here`: what the runtime knows of it).
    pub fn admit(&self, now: Millis, job: &Job, here: Here) -> Result<(), Skip> {
        self.admission.admit(now, job, here)
    }

    /// Whether the caller should read the chain's height and hand it in
    /// ([`Input::ChainTip`]) before `job` (see [`Admission::needs_tip`]).
    pub fn needs_tip(&self, now: Millis, job: &Job) -> bool {
        self.admission.needs_tip(now, job)
    }

    /// What this manager knows of the session of `job`.
    fn here(&self, job: &Job) -> Here {
        let session = match job {
            Job::KeyGen { session, .. } | Job::Sign { session, .. } => session,
            Job::Reshare(r) => &r.session,
            _ => return Here::default(),
        };
        Here {
            running: self.sessions.contains_key(session),
            finished: self.finished.contains_key(session),
        }
    }

    /// Whether another session fits (the overload part of admission).
    fn has_room(&self) -> bool {
        self.sessions.len() < self.cfg.max_sessions
    }

    /// Handles one input; returns what to do, in order.
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        input: Input,
        rng: &mut R,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Job(job) => self.on_job(now, job, rng, &mut fx),
            Input::Msg(m) => self.on_msg(now, m, rng, &mut fx),
            Input::Tick => self.on_tick(now, rng, &mut fx),
            Input::ChainTip(height) => self.admission.chain_tip(now, height),
            Input::StoreReply { token, reply } => {
                self.observe_promoted(&reply);
                self.on_store(now, token, reply, rng, &mut fx)
            }
            Input::PrimesReserved(session) => match self.sessions.get(&session) {
                Some(Session::Keygen(_)) => self.keygen_primes_reserved(session, &mut fx),
                Some(Session::Reshare(_)) => self.reshare_primes_reserved(session, &mut fx),
                // Ended meanwhile: the set goes to the next in line.
                Some(Session::Sign(_) | Session::Ecdsa(_) | Session::Presign(_)) | None => {
                    fx.push(Effect::StopWorker(session))
                }
            },
            Input::WorkerDone { session, output } => {
                self.workers.remove(&session);
                match self.sessions.get(&session) {
                    Some(Session::Keygen(_)) => {
                        self.keygen_worker_done(now, session, output, &mut fx)
                    }
                    Some(Session::Reshare(_)) => {
                        self.reshare_worker_done(now, session, output, &mut fx)
                    }
                    Some(Session::Ecdsa(_)) => {
                        self.ecdsa_worker_done(now, session, output, &mut fx)
                    }
                    Some(Session::Presign(_)) => {
                        self.presign_worker_done(now, session, output, &mut fx)
                    }
                    Some(Session::Sign(_)) | None => {
                        debug!(%session, "worker output for no session waiting for it ignored")
                    }
                }
            }
            Input::WorkerQuiet { session, behind } => {
                self.ecdsa_quiet(now, session, behind, &mut fx)
            }
        }
        self.observe(&fx);
        fx
    }

    fn on_job<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        job: Job,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        if let Some((height, time)) = job.block() {
            self.blocks.observe(height, time);
        }
        if let Err(skip) = self.admission.admit(now, &job, self.here(&job)) {
            admission::log_skip(&job, skip);
            return;
        }
        match job {
            Job::KeyGen {
                session,
                key_id,
                scheme,
                threshold,
                parties,
                deadline_height,
                ..
            } => {
                let job = keygen::KeygenJob {
                    session,
                    key_id,
                    scheme,
                    threshold,
                    parties,
                    deadline_height,
                };
                self.start_keygen(now, job, fx);
            }
            Job::Sign {
                session,
                request_id,
                key_id,
                scheme: Scheme::Cggmp24Secp256k1,
                message,
                prehashed,
                signers,
                key_version,
                ..
            } => {
                let job = ecdsa::EcdsaJob {
                    session,
                    request_id,
                    key_id,
                    message,
                    prehashed,
                    signers,
                    key_version,
                };
                self.start_ecdsa(now, job, rng, fx);
            }
            Job::Sign {
                session,
                request_id,
                key_id,
                scheme,
                message,
                signers,
                key_version,
                ..
            } => {
                let job = sign::SignJob {
                    session,
                    request_id,
                    key_id,
                    scheme,
                    message,
                    signers,
                    key_version,
                };
                self.start_sign(now, job, rng, fx);
            }
            Job::Delete { key_id, .. } => {
                self.admission.attesting(now, &key_id);
                fx.push(Effect::Checkpoint("delete-before-erase"));
                self.keys.remove(&key_id);
                fx.push(Effect::Store {
                    op: StoreOp::Delete(key_id.clone()),
                    token: Some(StoreToken::Deleted(key_id)),
                });
            }
            Job::KeyGenFailed {
                key_id,
                session,
                reason,
            } => {
                if let Some(Session::Keygen(k)) = self.sessions.remove(&session) {
                    if k.scheme == Scheme::Cggmp24Secp256k1 {
                        fx.push(Effect::StopWorker(session));
                    }
                }
                self.keys.remove(&key_id);
                fx.push(Effect::Store {
                    op: StoreOp::MarkError {
                        key_id,
                        session,
                        reason: format!("chain: {reason}"),
                        only_pending: false,
                    },
                    token: None,
                });
            }
            Job::SignEnded { request_id } => self.sign_ended(now, &request_id, fx),
            Job::Reshare(job) => self.start_reshare(now, job, rng, fx),
            Job::ReshareDone {
                key_id,
                session,
                old_parties,
                new_parties,
                generation,
            } => self.reshare_done(
                now,
                key_id,
                session,
                &old_parties,
                &new_parties,
                generation,
                fx,
            ),
            Job::ReshareFailed {
                key_id, session, ..
            } => self.reshare_failed(now, key_id, session, fx),
            // Its height and time are all it brings (above).
            Job::Block { .. } => {}
            Job::NodeJoined { .. } | Job::NodeKeyRotated { .. } | Job::NodeRemoved { .. } => {
                warn!("a job of the runtime reached the session manager; ignored");
            }
        }
    }

    fn on_msg<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        m: Msg,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        if self.finished.contains_key(&m.session) {
            debug!(session = %m.session, from = %m.from, "message for a finished session ignored");
            return;
        }
        // A presignature session starts from a p2p message, not from a committed job.
        if let Payload::PresignStart(p) = &m.payload {
            if self.sessions.contains_key(&m.session) {
                warn!(session = %m.session, from = %m.from, "PresignStart for a session in use dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
            } else {
                self.on_presign_start(now, m.session, m.from, p.clone(), rng, fx);
            }
            return;
        }
        let checking = matches!(
            self.sessions.get(&m.session),
            Some(Session::Keygen(k)) if matches!(k.state, KeygenState::Checking)
        );
        let Some(s) = self.sessions.get(&m.session).filter(|_| !checking) else {
            // The sender's Commit may run ahead of ours (or the job waits for the store):
            // keep it until the session can take it.
            return self.buffer_early(now, m, fx);
        };
        if !s.is_party(&m.from) {
            warn!(session = %m.session, from = %m.from, "message from a node outside the session dropped");
            fx.push(Effect::Metric(MetricEvent::Dropped));
            return;
        }
        if let Some(q) = m.quoted.clone() {
            let kept = self.evidence.entry(m.session).or_default();
            if kept.len() < MAX_EVIDENCE_PER_SESSION && !kept.contains(&q) {
                kept.push(q);
            }
        }
        match s {
            Session::Keygen(_) => self.keygen_msg(now, m.session, m.from, m.payload, rng, fx),
            Session::Sign(_) => self.sign_msg(now, m.session, m.from, m.payload, fx),
            Session::Ecdsa(_) => self.ecdsa_msg(now, m.session, m.from, m.payload, fx),
            Session::Presign(_) => self.presign_msg(now, m.session, m.from, m.payload, fx),
            Session::Reshare(_) => self.reshare_msg(now, m.session, m.from, m.payload, fx),
        }
    }

    fn on_store<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        token: StoreToken,
        reply: Result<StoreReply, String>,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        match token {
            StoreToken::KeygenJob(s) => self.keygen_checked(now, s, reply, rng, fx),
            StoreToken::Prepared(s) => self.keygen_prepared(now, s, reply, fx),
            StoreToken::ReplacedError(s) => self.keygen_replaced(s, reply, fx),
            StoreToken::KeygenAux(s) => self.keygen_aux_found(s, reply, fx),
            StoreToken::Stored(s) => self.keygen_stored(now, s, reply, fx),
            StoreToken::Existing(s) => self.keygen_existing(now, s, reply, fx),
            StoreToken::SignKey(s) => self.sign_key_loaded(now, s, reply, rng, fx),
            StoreToken::EcdsaKey(s) => self.ecdsa_key_loaded(now, s, reply, fx),
            StoreToken::PresignKey(s) => self.presign_key_loaded(now, s, reply, fx),
            StoreToken::ReshareLoaded(s) => self.reshare_loaded(now, s, reply, rng, fx),
            StoreToken::ReshareAux(s) => self.reshare_aux_found(now, s, reply, fx),
            StoreToken::ReshareStaged(s) => self.reshare_staged(now, s, reply, fx),
            StoreToken::Promoted(key_id, generation) => {
                self.reshare_promoted(key_id, generation, reply, fx)
            }
            StoreToken::Left(key_id) => match reply {
                Ok(StoreReply::Deleted(true)) => {
                    info!(%key_id, "left the committee: old share deleted")
                }
                Ok(_) => {}
                Err(e) => warn!(%key_id, error = %e, "cannot delete the old share"),
            },
            StoreToken::Deleted(key_id) => match reply {
                Ok(_) => {
                    fx.push(Effect::Checkpoint("delete-after-erase"));
                    fx.push(Effect::Submit(TxMsg::KeyDeleted { key_id }));
                }
                Err(e) => warn!(%key_id, error = %e, "cannot delete key share"),
            },
        }
    }

    fn on_tick<R: RngCore + CryptoRng>(&mut self, now: Millis, rng: &mut R, fx: &mut Vec<Effect>) {
        // When a session's local time is up (`None`: only the chain's deadline ends it).
        let due = |s: &Session| match s {
            Session::Keygen(k) => k.due(&self.cfg),
            Session::Sign(s) => Some(s.started.saturating_add(self.cfg.sign_timeout_ms)),
            Session::Ecdsa(s) => Some(s.started.saturating_add(self.cfg.cggmp_session_timeout_ms)),
            Session::Presign(p) => {
                Some(p.started.saturating_add(self.cfg.cggmp_session_timeout_ms))
            }
            Session::Reshare(r) => {
                Some(r.started.saturating_add(self.cfg.timeout_ms(r.job.scheme)))
            }
        };
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| due(s).is_some_and(|due| now > due))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            match self.sessions.get(&id) {
                Some(Session::Keygen(_)) => self.keygen_timeout(now, id, fx),
                Some(Session::Sign(_)) => self.sign_timeout(now, id, fx),
                Some(Session::Ecdsa(s)) => {
                    let e = crate::error::ProtocolError::Local(format!(
                        "timed out after {} s waiting for other parties",
                        self.cfg.cggmp_session_timeout_ms / 1000
                    ));
                    let request_id = s.request_id.clone();
                    self.report_sign_failure(now, id, request_id, e, None, fx)
                }
                Some(Session::Presign(_)) => {
                    let reason = "timed out waiting for other parties".to_string();
                    self.presign_aborted(now, id, reason, fx)
                }
                Some(Session::Reshare(_)) => self.reshare_timeout(now, id, fx),
                None => {}
            }
        }
        self.report_silent_ecdsa_signers(now, fx);
        self.submit_due_backups(now, fx);
        self.resend_stalled(now, fx);
        self.resend_reshares(now, fx);
        let keep = self.cfg.finished_keep_ms;
        self.finished.retain(|_, t| now.saturating_sub(*t) < keep);
        self.admission.expire(now);
        self.expire_early(now);
        let live = &self.sessions;
        self.evidence.retain(|s, _| live.contains_key(s));
        self.fill_presign_pools(now, rng, fx);
    }

    /// Ends a session: remembered as finished, its evidence dropped by the next tick.
    fn finish(&mut self, now: Millis, session: SessionId) -> Option<Session> {
        self.finished.insert(session, now);
        self.sessions.remove(&session)
    }

    /// The signed messages of `culprits` kept for `session`, for a failure report.
    /// Only genuine quotes ([`Quote::is_genuine`], checked here and nowhere before): a message
    /// its sender did not sign was still taken from the authenticated peer, and the claim
    /// against that sender stays unproven.
    fn evidence_of(&self, session: &SessionId, culprits: &[NodeId]) -> Vec<SignedMessage> {
        self.evidence
            .get(session)
            .into_iter()
            .flatten()
            .filter(|q| culprits.contains(&q.message.from))
            .filter(|q| q.message.envelope.len() <= seqmpc_proto::tx::MAX_EVIDENCE_ENVELOPE_BYTES)
            .filter(|q| q.is_genuine())
            .take(MAX_EVIDENCE_MESSAGES)
            .map(|q| q.message.clone())
            .collect()
    }

    fn send(fx: &mut Vec<Effect>, session: SessionId, to: &NodeId, payload: Payload) {
        fx.push(Effect::Send {
            session,
            to: to.clone(),
            payload,
        });
    }
}

#[cfg(test)]
mod tests;
