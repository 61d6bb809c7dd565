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
mod ecdsa;
pub(crate) mod keygen;
pub mod mem_store;
mod presign;
pub(crate) mod reshare;
mod sign;
mod worker;

use std::collections::BTreeMap;

use rand::{CryptoRng, RngCore};
use seqmpc_proto::tx::{SignedMessage, TxMsg, MAX_EVIDENCE_MESSAGES};
use seqmpc_proto::wire::p2p_envelope::Payload;
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use tracing::{debug, info, warn};

use crate::job::Job;
use crate::protocol::frost_sign::AnyKeyMaterial;
use crate::store::KeyRecord;

pub use admission::{log_skip, Admission, Here, Skip};
pub use keygen::KeygenState;
pub use presign::PresignPoolLevel;
pub use reshare::{AuxState, ReshareState};
pub use sign::SignState;
pub use worker::{
    aux_offer_in, AuxOffer, InlineStep, InlineWorker, KeygenOutput, ShareBytes, WorkerOutput,
    WorkerTask,
};

/// Milliseconds on the node's clock (Unix time in production, simulated time in the simulator).
pub type Millis = u64;

/// Tuning of the session layer.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub me: NodeId,
    /// Local give-up time of a session (the chain's deadline in blocks is authoritative).
    pub session_timeout_ms: Millis,
    /// The same for a CGGMP24 session (a resharing's aux info alone takes tens of seconds).
    pub cggmp_session_timeout_ms: Millis,
    /// Local give-up time of a FROST signing: then its silent signers are named in a failure
    /// report, so the chain can start another attempt without them well before the
    /// request's deadline (see `sign_attempt_blocks` in the chain's limits).
    pub sign_timeout_ms: Millis,
    /// How long a FROST signer other than the aggregator holds a verified signature before
    /// it submits it itself, per rank (the second signer waits this long, the third twice
    /// as long...), unless the chain has ended the request by then. Set it to about two block
    /// intervals: shorter sends redundant result txs, longer delays a signature whose
    /// aggregator is dead or stalled.
    pub backup_submit_ms: Millis,
    /// How long a CGGMP24 aux-info generation may take here (15-30 s measured on 2 cores,
    /// with room): a keygen that must generate aux info does not start when the chain's
    /// deadline is nearer, since the safe-prime sets it consumes would be lost with it.
    pub aux_gen_ms: Millis,
    /// How long an open resharing waits before it sends its deals and offer again (a lost
    /// one would cost the resharing; see `reshare`). About ten block intervals.
    pub reshare_resend_ms: Millis,
    /// Most sessions alive at once; jobs beyond fail fast with a clear error.
    pub max_sessions: usize,
    /// Most buffered messages for sessions this node has not started yet.
    pub max_early_messages: usize,
    /// Most of them from one sender: a peer flooding the buffer fills only its own share,
    /// never the room of honest peers' messages.
    pub max_early_per_sender: usize,
    /// Most bytes (encoded payloads and quoted envelopes) in that buffer.
    pub max_early_bytes: usize,
    /// Most of them from one sender (a few large CGGMP24 messages must not fill the buffer).
    pub max_early_bytes_per_sender: usize,
    /// How long a finished session is remembered (its late messages are dropped quietly).
    pub finished_keep_ms: Millis,
    /// CGGMP24 presignatures kept ready per key and signer subset (0: no pool).
    pub presign_pool: usize,
    /// Keys with more signer subsets than this (C(n, t)) get no presignature pool.
    pub presign_max_subsets: usize,
    /// Most CGGMP24 workers at once; background work (presignatures) takes at most half.
    pub max_cggmp_workers: usize,
    /// A CGGMP24 signer that sent nothing within this time of the start is named in a failure
    /// report (and one that stopped later, by its worker's count: [`Input::WorkerQuiet`]).
    pub cggmp_silence_ms: Millis,
}

impl Config {
    /// Defaults for `me`.
    pub fn new(me: NodeId) -> Self {
        Config {
            me,
            session_timeout_ms: 60_000,
            cggmp_session_timeout_ms: 300_000,
            sign_timeout_ms: 2_000,
            backup_submit_ms: 500,
            reshare_resend_ms: 2_000,
            aux_gen_ms: 120_000,
            max_sessions: 10_000,
            max_early_messages: 100_000,
            // A burst of 1000 sessions is a few thousand early messages per sender.
            max_early_per_sender: 10_000,
            max_early_bytes: 256 << 20,
            max_early_bytes_per_sender: 32 << 20,
            finished_keep_ms: 600_000,
            presign_pool: 0,
            presign_max_subsets: 16,
            max_cggmp_workers: 16,
            cggmp_silence_ms: 20_000,
        }
    }

    /// The local give-up time of a session of `scheme`.
    pub fn timeout_ms(&self, scheme: Scheme) -> Millis {
        match scheme {
            Scheme::Cggmp24Secp256k1 => self.cggmp_session_timeout_ms,
            Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => self.session_timeout_ms,
        }
    }
}

/// Messages and bytes held in a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Buffered {
    count: usize,
    bytes: usize,
}

impl Buffered {
    fn add(self, bytes: usize) -> Buffered {
        Buffered {
            count: self.count.saturating_add(1),
            bytes: self.bytes.saturating_add(bytes),
        }
    }

    fn sub(self, bytes: usize) -> Buffered {
        Buffered {
            count: self.count.saturating_sub(1),
            bytes: self.bytes.saturating_sub(bytes),
        }
    }
}

/// An authenticated p2p message, decoded.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Sender, from the authenticated transport.
    pub from: NodeId,
    /// Session it belongs to.
    pub session: SessionId,
    /// What it carries.
    pub payload: Payload,
    /// The signed message as received, when it may serve as evidence ([`codec::is_evidence`]).
    pub quoted: Option<SignedMessage>,
}

impl Msg {
    /// Its size in a buffer: the encoded payload and, when quoted, the signed envelope.
    pub fn buffered_bytes(&self) -> usize {
        let quoted = self
            .quoted
            .as_ref()
            .map_or(0, |q| q.envelope.len().saturating_add(q.signature.len()));
        self.payload.encoded_len().saturating_add(quoted)
    }
}

/// What the manager reacts to.
#[derive(Debug)]
pub enum Input {
    /// A committed job (a keygen, a FROST signing, a resharing and the chain's verdict on it, a
    /// deletion, or the chain's verdict on a keygen). Other jobs are the runtime's.
    Job(Job),
    /// A p2p message.
    Msg(Msg),
    /// Time passed: expire sessions and forget old state.
    Tick,
    /// The chain's latest height, read when [`Manager::needs_tip`] asked for it (`None`: it
    /// could not be read).
    ChainTip(Option<u64>),
    /// The answer to an [`Effect::Store`] that asked for one.
    StoreReply {
        /// Which step waits for it.
        token: StoreToken,
        /// The store's answer, or its error.
        reply: Result<StoreReply, String>,
    },
    /// The CGGMP24 keygen `session` holds a safe-prime set now ([`Effect::ReservePrimes`]).
    PrimesReserved(SessionId),
    /// A worker started by [`Effect::StartWorker`] ended (or could not start).
    WorkerDone {
        /// Its session.
        session: SessionId,
        /// What it produced.
        output: WorkerOutput,
    },
    /// The worker of `session` has sent and received nothing for the CGGMP24 silence time and
    /// got fewer messages from `behind` than it sent them (`crate::node::cggmp::traffic`).
    WorkerQuiet {
        /// Its session.
        session: SessionId,
        /// The parties it waits for.
        behind: Vec<NodeId>,
    },
}

/// A key-store operation. Each is one durable step of the store.
#[derive(Clone, Debug)]
pub enum StoreOp {
    /// Read a record.
    Get(KeyId),
    /// Write a record unless one exists; answers the existing one.
    InsertIfAbsent(KeyRecord),
    /// Write a record.
    Put(KeyRecord),
    /// Mark the record of `session` ERROR, dropping its share; only a PENDING one when
    /// `only_pending` (a local failure never downgrades a READY share; the chain's verdict may).
    MarkError {
        /// Key.
        key_id: KeyId,
        /// Only the record of this session.
        session: SessionId,
        /// Why.
        reason: String,
        /// Leave a READY record alone.
        only_pending: bool,
    },
    /// Delete (and zeroize) a record.
    Delete(KeyId),
    /// Read a key's record and its staged record (a resharing's new share, not READY yet).
    GetGenerations(KeyId),
    /// The aux info this node holds for a CGGMP24 committee ([`aux_offer_in`], or the
    /// runtime's configured one).
    FindAux(Vec<NodeId>),
    /// Write a key's staged record (replacing any).
    PutStaged(KeyRecord),
    /// Make the staged record of `generation` the key's READY record, in one durable step.
    PromoteStaged {
        /// Key.
        key_id: KeyId,
        /// Only a staged record of this generation.
        generation: u64,
    },
    /// This node left the committee of `key_id` at `generation`: delete (and zeroize) its
    /// record of an older generation, and a staged one of that generation or older (never
    /// the share of a later resharing that brought it back).
    LeaveCommittee {
        /// Key.
        key_id: KeyId,
        /// The generation the chain switched to.
        generation: u64,
    },
    /// Delete the staged record of `key_id` if a resharing of `session` staged it.
    DropStaged {
        /// Key.
        key_id: KeyId,
        /// The failed resharing.
        session: SessionId,
    },
}

/// The store's answer to a [`StoreOp`].
#[derive(Clone, Debug)]
pub enum StoreReply {
    /// `Get`: the record; `InsertIfAbsent`: the record that was already there.
    Record(Option<KeyRecord>),
    /// `Put` / `MarkError`: durable.
    Done,
    /// `Delete`, `LeaveCommittee`, `DropStaged`: whether a record was deleted.
    Deleted(bool),
    /// `GetGenerations`: the key's record and its staged record.
    Generations {
        /// The record.
        current: Option<KeyRecord>,
        /// The staged record.
        staged: Option<KeyRecord>,
    },
    /// `FindAux`: what this node holds.
    Aux(Option<AuxOffer>),
    /// `PromoteStaged`: whether a staged record was promoted now, and the record after.
    Promoted {
        /// Promoted by this operation.
        promoted: bool,
        /// The key's record now.
        current: Option<KeyRecord>,
    },
}

/// Which step waits for a store answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreToken {
    /// A keygen job: has this session already completed here (a replayed job)?
    KeygenJob(SessionId),
    /// KeyGenPrepare: the PENDING record was inserted (or another was there).
    Prepared(SessionId),
    /// KeyGenPrepare over an ERROR record: the PENDING record replaced it.
    ReplacedError(SessionId),
    /// A CGGMP24 keygen's PENDING record is written: the aux info this node holds for the
    /// committee, to offer for reuse.
    KeygenAux(SessionId),
    /// The READY share is durable: the result may go to the chain.
    Stored(SessionId),
    /// KeyGenStart with the key READY here already: its share, for the public key package.
    Existing(SessionId),
    /// A signing job: the key share.
    SignKey(SessionId),
    /// A CGGMP24 signing job: the key share.
    EcdsaKey(SessionId),
    /// A presignature session: the key share.
    PresignKey(SessionId),
    /// A deletion is durable.
    Deleted(KeyId),
    /// A resharing job: this node's records of the key.
    ReshareLoaded(SessionId),
    /// A CGGMP24 new party: the aux info it holds for the new committee.
    ReshareAux(SessionId),
    /// The reshared share is staged: the result may go to the chain.
    ReshareStaged(SessionId),
    /// The chain switched a key to this generation: the staged share was promoted (or not).
    Promoted(KeyId, u64),
    /// This node left a key's committee: its share is deleted.
    Left(KeyId),
}

/// A counter or latency for the node's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricEvent {
    /// A keygen of a key of this scheme ended READY here, after this many microseconds.
    KeygenOk(Scheme, u64),
    /// A keygen failed here.
    KeygenFailed,
    /// This node aggregated and verified a signature by a key of this scheme, after this many
    /// microseconds.
    SignOk(Scheme, u64),
    /// A signing failed here.
    SignFailed,
    /// This node, the first signer, verified a CGGMP24 signature after this many
    /// microseconds, from a presignature or by the full protocol.
    EcdsaSignOk {
        /// Microseconds since the job.
        us: u64,
        /// The online step from a presignature made it.
        presigned: bool,
    },
    /// This node finished its part of a presignature and pooled it.
    PresignGenerated,
    /// This node, not the aggregator, submitted a signature: the chain had not ended the
    /// request by the backup's due time.
    SignBackupSubmitted,
    /// A p2p message was dropped.
    Dropped,
    /// A new party staged a reshared share of a key of this scheme, this many microseconds
    /// after the job.
    ReshareStaged(Scheme, u64),
    /// A reshared share became READY here (the chain switched the key).
    ReshareOk,
}

/// What the manager wants done, in order.
#[derive(Debug)]
pub enum Effect {
    /// Send a p2p message.
    Send {
        /// Session.
        session: SessionId,
        /// Recipient.
        to: NodeId,
        /// Payload.
        payload: Payload,
    },
    /// Run a store operation; with a token, answer with [`Input::StoreReply`].
    Store {
        /// Operation.
        op: StoreOp,
        /// Who waits for the answer.
        token: Option<StoreToken>,
    },
    /// Hand a result tx to the chain.
    Submit(TxMsg),
    /// A named point of a session's life (test builds may crash the node there).
    Checkpoint(&'static str),
    /// A metric.
    Metric(MetricEvent),
    /// Run `task` for `session` on a worker; answer with [`Input::WorkerDone`] (also when it
    /// cannot start).
    StartWorker {
        /// Session.
        session: SessionId,
        /// What to run.
        task: WorkerTask,
    },
    /// Hand an authenticated message of its run to the worker of `session`.
    ToWorker {
        /// Session.
        session: SessionId,
        /// Sender.
        from: NodeId,
        /// The message.
        msg: crate::protocol::cggmp::CggmpMsg,
    },
    /// Reserve a safe-prime set for the CGGMP24 keygen `session` (in the chain's order of
    /// jobs), or queue it for the next set; answer [`Input::PrimesReserved`] once it holds one
    /// (at once if it does).
    ReservePrimes(SessionId),
    /// The session ended: stop its worker and release what the runtime holds for it (its
    /// safe-prime reservation or place in line, its messages' byte charges).
    StopWorker(SessionId),
}

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
    evidence: BTreeMap<SessionId, Vec<SignedMessage>>,
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

    /// Messages buffered for `session` (they go to it once it starts).
    fn take_early(&mut self, session: &SessionId) -> Vec<Msg> {
        let msgs = self.early.remove(session).unwrap_or_default();
        for (m, _) in &msgs {
            self.unbuffer(&m.from, m.buffered_bytes());
        }
        msgs.into_iter().map(|(m, _)| m).collect()
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
            let bytes = m.buffered_bytes();
            let total = self.early_total.add(bytes);
            if total.count > self.cfg.max_early_messages || total.bytes > self.cfg.max_early_bytes {
                warn!(from = %m.from, bytes, "early-message buffer full; message dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
                return;
            }
            let mine = self
                .early_by_sender
                .get(&m.from)
                .copied()
                .unwrap_or_default();
            let mine = mine.add(bytes);
            if mine.count > self.cfg.max_early_per_sender
                || mine.bytes > self.cfg.max_early_bytes_per_sender
            {
                warn!(from = %m.from, bytes, "the sender's share of the early-message buffer is full; message dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
                return;
            }
            self.early_by_sender.insert(m.from.clone(), mine);
            self.early_total = total;
            self.early.entry(m.session).or_default().push((m, now));
            return;
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

    /// Feeds the messages that arrived before `session` started.
    fn replay_early<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        for m in self.take_early(&session) {
            self.on_msg(now, m, rng, fx);
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
        let timeout = self.cfg.session_timeout_ms;
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
        let mut dropped: Vec<(NodeId, usize)> = Vec::new();
        self.early.retain(|_, msgs| {
            msgs.retain(|(m, t)| {
                let keep = now.saturating_sub(*t) < timeout;
                if !keep {
                    dropped.push((m.from.clone(), m.buffered_bytes()));
                }
                keep
            });
            !msgs.is_empty()
        });
        for (from, bytes) in &dropped {
            self.unbuffer(from, *bytes);
        }
        let live = &self.sessions;
        self.evidence.retain(|s, _| live.contains_key(s));
        self.fill_presign_pools(now, rng, fx);
    }

    /// One early message of `from`, of `bytes`, left the buffer.
    fn unbuffer(&mut self, from: &NodeId, bytes: usize) {
        self.early_total = self.early_total.sub(bytes);
        if let Some(n) = self.early_by_sender.get_mut(from) {
            *n = n.sub(bytes);
            if n.count == 0 {
                self.early_by_sender.remove(from);
            }
        }
    }

    /// Ends a session: remembered as finished, its evidence dropped by the next tick.
    fn finish(&mut self, now: Millis, session: SessionId) -> Option<Session> {
        self.finished.insert(session, now);
        self.sessions.remove(&session)
    }

    /// The signed messages of `culprits` kept for `session`, for a failure report.
    fn evidence_of(&self, session: &SessionId, culprits: &[NodeId]) -> Vec<SignedMessage> {
        self.evidence
            .get(session)
            .into_iter()
            .flatten()
            .filter(|m| culprits.contains(&m.from))
            .filter(|m| m.envelope.len() <= seqmpc_proto::tx::MAX_EVIDENCE_ENVELOPE_BYTES)
            .take(MAX_EVIDENCE_MESSAGES)
            .cloned()
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
