//! The session manager's vocabulary with its runtime: its tuning, what goes in ([`Input`]),
//! what comes out ([`Effect`]) and the store operations and answers in between.

use seqmpc_proto::tx::{SignedMessage, TxMsg};
use seqmpc_proto::wire::p2p_envelope::Payload;
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};

use super::{AuxOffer, WorkerOutput, WorkerTask};
use crate::job::Job;
use crate::store::KeyRecord;

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
pub(super) struct Buffered {
    pub(super) count: usize,
    pub(super) bytes: usize,
}

impl Buffered {
    pub(super) fn add(self, bytes: usize) -> Buffered {
        Buffered {
            count: self.count.saturating_add(1),
            bytes: self.bytes.saturating_add(bytes),
        }
    }

    pub(super) fn sub(self, bytes: usize) -> Buffered {
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
    /// The signed message as received, when it may serve as evidence ([`is_evidence`](super::codec::is_evidence)).
    pub quoted: Option<Quote>,
}

/// A peer's message as it signed it, kept for a failure report that may quote it. Its
/// signature is checked only when a report would quote it ([`Quote::is_genuine`]): checking
/// every signature share as it arrives cost each node about a tenth of its signing CPU, and a
/// message from the authenticated peer needs no signature to be used, only to be quoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The message, its sender's envelope and signature.
    pub message: SignedMessage,
    /// The sender's registered node key (what the p2p layer authenticated it with, and what
    /// the chain checks the quote against).
    pub sender_key: [u8; 32],
}

impl Quote {
    /// Whether the sender's key signed it: only such a quote may go into a report (the chain
    /// refuses a report quoting one that is not).
    pub fn is_genuine(&self) -> bool {
        let m = &self.message;
        seqmpc_proto::verify::ed25519(&self.sender_key, &m.digest(), &m.signature).is_ok()
    }
}

impl Msg {
    /// Its size in a buffer: the encoded payload and, when quoted, the signed envelope.
    pub fn buffered_bytes(&self) -> usize {
        let quoted = self.quoted.as_ref().map_or(0, |q| {
            q.message
                .envelope
                .len()
                .saturating_add(q.message.signature.len())
        });
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
    /// The chain's latest height, read when [`Manager::needs_tip`](super::Manager::needs_tip) asked for it (`None`: it
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
    /// got fewer messages from `behind` than it sent them ([`traffic`](super::traffic)).
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
    /// The aux info this node holds for a CGGMP24 committee ([`aux_offer_in`](super::aux_offer_in), or the
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
