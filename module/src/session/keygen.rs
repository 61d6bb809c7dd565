//! Keygen sessions (seed 001): prepare / ready / start, then the DKG, at a party and at the
//! coordinator. A FROST DKG runs here ([`KeygenState::Running`]); a CGGMP24 one (DKG and aux
//! info, seconds of CPU) on a runtime worker ([`KeygenState::Working`], see [`cggmp`] for its
//! safe-prime reservation and aux-info reuse).
//!
//! ```text
//! job ─► Checking ─store─► AwaitPrepare ─prepare─► Preparing ─store─► AwaitStart ─start─► Running ─done─► Storing ─store─► (reported)
//!                                                                          │              Working ─worker─┘
//!                                                                          └─ existing key ─► Existing ─store─► (reported)
//! ```

use std::collections::BTreeMap;

use rand::{CryptoRng, RngCore};
use seqmpc_proto::tx::{KeyGenOk, Outcome, TxMsg};
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use tracing::{debug, info, warn};

use super::codec::{coordinator, dkg_payload, existing_transcript};
use super::{
    Config, Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken,
};
use crate::error::ProtocolError;
use crate::protocol::cggmp::CggmpMsg;
use crate::protocol::frost_dkg::{AnyDkg, AnyDkgProgress, DkgMsg};
use crate::protocol::Outgoing;
use crate::store::{KeyRecord, ShareStatus};

pub(crate) mod cggmp;
mod handshake;
mod outcome;

/// A committed keygen, as the session needs it.
pub(super) struct KeygenJob {
    pub session: SessionId,
    pub key_id: KeyId,
    pub scheme: Scheme,
    pub threshold: u32,
    pub parties: Vec<NodeId>,
    /// The chain ends the keygen ERROR at this height.
    pub deadline_height: u64,
}

/// What a party answered to KeyGenPrepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReadyAnswer {
    /// It wrote a PENDING record: ready for the DKG.
    Fresh,
    /// It holds the key READY already, with this public key.
    Existing(Vec<u8>),
    /// It cannot take part, and why.
    Refused(String),
}

impl ReadyAnswer {
    /// The answer a KeyGenReady carries.
    pub(crate) fn from_wire(r: wire::KeyGenReady) -> Self {
        if !r.error.is_empty() {
            ReadyAnswer::Refused(r.error)
        } else if !r.existing_public_key.is_empty() {
            ReadyAnswer::Existing(r.existing_public_key)
        } else {
            ReadyAnswer::Fresh
        }
    }
}

/// The coordinator's decision once all `parties` answered: `None` to start the DKG, or why
/// the session aborts (a refusal, or parties that disagree on holding the key already).
pub(crate) fn why_not_start(
    answers: &BTreeMap<NodeId, ReadyAnswer>,
    parties: usize,
) -> Option<String> {
    let refused: Vec<String> = answers
        .values()
        .filter_map(|a| match a {
            ReadyAnswer::Refused(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let existing: Vec<&Vec<u8>> = answers
        .values()
        .filter_map(|a| match a {
            ReadyAnswer::Existing(pk) => Some(pk),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        Some(refused.join("; "))
    } else if !existing.is_empty()
        && (existing.len() != parties || existing.windows(2).any(|w| w[0] != w[1]))
    {
        Some("parties disagree: some already hold a READY share of this key id".into())
    } else {
        None
    }
}

/// A DKG message of either family.
pub enum KeygenMsg {
    /// FROST.
    Frost(DkgMsg),
    /// CGGMP24 (for the worker).
    Cggmp(CggmpMsg),
}

/// DKG messages that arrived before the DKG started: sender and message.
type Buffered = Vec<(NodeId, KeygenMsg)>;

/// Where a keygen stands at this party.
#[allow(clippy::large_enum_variant)] // moved by value once per step
pub enum KeygenState {
    /// The store is asked whether this session already completed here (a replayed job).
    /// Messages wait in the manager's early buffer meanwhile.
    Checking,
    /// Waiting for the coordinator's KeyGenPrepare.
    AwaitPrepare {
        /// Early DKG messages.
        buffered: Buffered,
    },
    /// The PENDING record is being written.
    Preparing {
        /// Early DKG messages.
        buffered: Buffered,
    },
    /// Answered Ready; waiting for KeyGenStart.
    AwaitStart {
        /// The key is READY here already with this public key.
        existing: Option<Vec<u8>>,
        /// Early DKG messages.
        buffered: Buffered,
    },
    /// Running the FROST DKG.
    Running(AnyDkg),
    /// CGGMP24: the DKG runs on a runtime worker, with aux-info generation when set.
    Working {
        /// Aux info is generated (not reused).
        aux_generated: bool,
    },
    /// Ended: the READY share is being written, or the existing share read; the result goes
    /// to the chain once the store answers.
    Storing {
        /// The result to report.
        ok: KeyGenOk,
    },
    /// Reading the existing READY share for its public key package.
    Existing {
        /// The existing public key.
        public_key: Vec<u8>,
    },
    /// Moving between states (never observed outside a transition).
    Transition,
}

impl KeygenState {
    /// A short name for status views.
    pub fn phase(&self) -> &'static str {
        match self {
            KeygenState::Checking | KeygenState::AwaitPrepare { .. } => "awaiting-prepare",
            KeygenState::Preparing { .. } | KeygenState::AwaitStart { .. } => "awaiting-start",
            KeygenState::Running(_)
            | KeygenState::Working {
                aux_generated: false,
            }
            | KeygenState::Transition => "dkg",
            KeygenState::Working {
                aux_generated: true,
            } => "dkg+aux-info",
            KeygenState::Storing { .. } | KeygenState::Existing { .. } => "storing",
        }
    }

    /// Messages it holds until the DKG starts.
    pub(super) fn buffered(&self) -> usize {
        match self {
            KeygenState::AwaitPrepare { buffered }
            | KeygenState::Preparing { buffered }
            | KeygenState::AwaitStart { buffered, .. } => buffered.len(),
            KeygenState::Checking
            | KeygenState::Running(_)
            | KeygenState::Working { .. }
            | KeygenState::Storing { .. }
            | KeygenState::Existing { .. }
            | KeygenState::Transition => 0,
        }
    }

    fn buffer(&mut self, from: NodeId, msg: KeygenMsg) -> bool {
        match self {
            KeygenState::AwaitPrepare { buffered }
            | KeygenState::Preparing { buffered }
            | KeygenState::AwaitStart { buffered, .. } => {
                let cap = match msg {
                    KeygenMsg::Frost(_) => super::MAX_BUFFERED_PER_SENDER,
                    KeygenMsg::Cggmp(_) => super::MAX_BUFFERED_CGGMP_PER_SENDER,
                };
                super::buffer_capped_at(buffered, from, msg, cap);
                true
            }
            KeygenState::Checking
            | KeygenState::Running(_)
            | KeygenState::Working { .. }
            | KeygenState::Storing { .. }
            | KeygenState::Existing { .. }
            | KeygenState::Transition => false,
        }
    }
}

/// A keygen session.
pub(super) struct Keygen {
    pub key_id: KeyId,
    pub scheme: Scheme,
    pub threshold: u32,
    pub parties: Vec<NodeId>,
    pub coordinator: NodeId,
    /// The chain ends the keygen ERROR at this height.
    deadline_height: u64,
    /// Coordinator only: answers collected.
    answers: Option<BTreeMap<NodeId, ReadyAnswer>>,
    /// CGGMP24 only: prime sets and aux info.
    cggmp: Option<cggmp::CggmpKeygen>,
    pub state: KeygenState,
    pub started: Millis,
}

impl Keygen {
    /// Where it stands, for status views.
    pub fn phase(&self) -> String {
        match &self.cggmp {
            Some(c) if c.too_late => "too close to its chain deadline to start aux info".into(),
            Some(c) if !c.waiting_for_primes.is_empty() => {
                let names: Vec<&str> = c.waiting_for_primes.iter().map(NodeId::as_str).collect();
                format!("waiting for safe primes: {}", names.join(","))
            }
            _ => self.state.phase().into(),
        }
    }

    /// When its local time is up. A CGGMP24 keygen that has not started its DKG waits for its
    /// committee's safe primes: the chain's deadline ends it (`Job::KeyGenFailed`), and its
    /// local timeout counts from the DKG's start.
    pub(super) fn due(&self, cfg: &Config) -> Option<Millis> {
        match &self.cggmp {
            None => Some(self.started.saturating_add(cfg.session_timeout_ms)),
            Some(c) => c
                .running_since
                .map(|t| t.saturating_add(cfg.cggmp_session_timeout_ms)),
        }
    }

    fn record(&self, session: SessionId, status: ShareStatus) -> KeyRecord {
        KeyRecord {
            key_id: self.key_id.clone(),
            session,
            scheme: self.scheme,
            threshold: self.threshold,
            parties: self.parties.clone(),
            public_key: Vec::new(),
            status,
            error: None,
            generation: 1,
            share: None,
        }
    }
}

impl Manager {
    fn keygen_mut(&mut self, session: &SessionId) -> Option<&mut Keygen> {
        match self.sessions.get_mut(session) {
            Some(Session::Keygen(k)) => Some(k),
            _ => None,
        }
    }

    /// A keygen job was admitted: ask the store whether it already ran here.
    pub(super) fn start_keygen(&mut self, now: Millis, job: KeygenJob, fx: &mut Vec<Effect>) {
        let Some(coord) = coordinator(&job.session, &job.parties) else {
            return;
        };
        if !self.has_room() {
            fx.push(Effect::Submit(TxMsg::KeyGenResult {
                key_id: job.key_id,
                session: job.session,
                outcome: Outcome::Failed {
                    error: "node overloaded: too many sessions".into(),
                    culprits: Vec::new(),
                    evidence: Vec::new(),
                },
            }));
            return;
        }
        let is_coord = coord == self.cfg.me;
        fx.push(Effect::Store {
            op: StoreOp::Get(job.key_id.clone()),
            token: Some(StoreToken::KeygenJob(job.session)),
        });
        let cggmp = (job.scheme == Scheme::Cggmp24Secp256k1).then(cggmp::CggmpKeygen::default);
        if cggmp.is_some() {
            // A safe-prime set for aux info, reserved in the chain's order of jobs (the same on
            // every node), or a place in line for one.
            fx.push(Effect::ReservePrimes(job.session));
        }
        self.sessions.insert(
            job.session,
            Session::Keygen(Box::new(Keygen {
                key_id: job.key_id,
                scheme: job.scheme,
                threshold: job.threshold,
                parties: job.parties,
                coordinator: coord,
                deadline_height: job.deadline_height,
                answers: is_coord.then(BTreeMap::new),
                cggmp,
                state: KeygenState::Checking,
                started: now,
            })),
        );
    }

    /// The store answered whether this session already completed here.
    pub(super) fn keygen_checked<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        if let Ok(StoreReply::Record(Some(rec))) = &reply {
            // Idempotent: a replayed job for a session this node completed does nothing.
            if rec.session == session && rec.status != ShareStatus::Pending {
                debug!(key_id = %rec.key_id, %session, "keygen job already done here; skipped");
                self.end_keygen(now, session, fx);
                self.take_early(&session);
                return;
            }
        }
        let me = self.cfg.me.clone();
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if !matches!(k.state, KeygenState::Checking) {
            return;
        }
        k.state = KeygenState::AwaitPrepare {
            buffered: Vec::new(),
        };
        info!(key_id = %k.key_id, %session, coord = %k.coordinator, "keygen session opened");
        if k.coordinator == me {
            // Phase 1 (seed 001): ask every party to prepare.
            let prepare = wire::KeyGenPrepare {
                key_id: k.key_id.to_string(),
                scheme: k.scheme.as_str().into(),
                threshold: k.threshold,
                parties: k.parties.iter().map(|p| p.to_string()).collect(),
            };
            for p in &k.parties {
                Self::send(fx, session, p, Payload::KeygenPrepare(prepare.clone()));
            }
        }
        self.replay_early(now, session, rng, fx);
    }

    pub(super) fn keygen_msg<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        payload: Payload,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        match payload {
            Payload::KeygenPrepare(p) => self.on_prepare(session, from, p, fx),
            Payload::KeygenReady(r) => self.on_ready(now, session, from, r, fx),
            Payload::KeygenStart(s) => self.on_start(now, session, from, s.reuse_aux, rng, fx),
            Payload::DkgRound1(r) => self.on_dkg(now, session, from, DkgMsg::Round1(r.package), fx),
            Payload::DkgRound2(r) => self.on_dkg(now, session, from, DkgMsg::Round2(r.package), fx),
            Payload::Cggmp(c) => self.keygen_cggmp_msg(session, from, &c.msg, fx),
            Payload::Abort(a) => {
                let reason = format!("aborted by {from}: {}", a.reason);
                self.fail_keygen(now, session, ProtocolError::Local(reason), fx)
            }
            Payload::SignRound1(_)
            | Payload::SignRound2(_)
            | Payload::SignPlan(_)
            | Payload::PresignStart(_)
            | Payload::ReshareDeal(_)
            | Payload::ReshareAux(_) => {
                warn!(%session, %from, "message of another kind in a keygen dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
            }
        }
    }

    /// Phase 2 at a party: run the DKG (or report the existing key).
    fn on_start<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        reuse_aux: bool,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if from != k.coordinator {
            warn!(%session, %from, "KeyGenStart from a non-coordinator dropped");
            return;
        }
        // A duplicate (or late) KeyGenStart must leave a running DKG alone (found by the
        // network-fault e2e test, which duplicates every message).
        if !matches!(k.state, KeygenState::AwaitStart { .. }) {
            debug!(%session, "duplicate KeyGenStart ignored");
            return;
        }
        let KeygenState::AwaitStart { existing, buffered } =
            std::mem::replace(&mut k.state, KeygenState::Transition)
        else {
            return;
        };
        if let Some(public_key) = existing {
            info!(key_id = %k.key_id, "key is READY locally already: reporting the existing key");
            if k.cggmp.is_some() {
                // A CGGMP24 result carries no verifying shares: nothing to read.
                let ok = KeyGenOk {
                    transcript_hash: existing_transcript(k.scheme, &public_key),
                    public_key,
                    public_key_package: Vec::new(),
                };
                let key_id = k.key_id.clone();
                self.end_keygen(now, session, fx);
                fx.push(Effect::Submit(TxMsg::KeyGenResult {
                    key_id,
                    session,
                    outcome: Outcome::Ok(ok),
                }));
                return;
            }
            let key_id = k.key_id.clone();
            k.state = KeygenState::Existing { public_key };
            // The verifying shares too, from the READY share.
            fx.push(Effect::Store {
                op: StoreOp::Get(key_id),
                token: Some(StoreToken::Existing(session)),
            });
            return;
        }
        if k.cggmp.is_some() {
            return self.start_cggmp_keygen(now, session, reuse_aux, buffered, fx);
        }
        match AnyDkg::start(k.scheme, session, &me, &k.parties, k.threshold, rng) {
            Ok((dkg, out)) => {
                k.state = KeygenState::Running(dkg);
                send_dkg(fx, session, out);
                for (from, msg) in buffered {
                    match msg {
                        KeygenMsg::Frost(msg) => self.on_dkg(now, session, from, msg, fx),
                        KeygenMsg::Cggmp(_) => {
                            debug!(%session, %from, "CGGMP24 message in a FROST keygen dropped")
                        }
                    }
                }
            }
            Err(e) => self.fail_keygen(now, session, e, fx),
        }
    }

    fn on_dkg(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        msg: DkgMsg,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        let dkg = match std::mem::replace(&mut k.state, KeygenState::Transition) {
            KeygenState::Running(dkg) => dkg,
            mut other => {
                if !other.buffer(from.clone(), KeygenMsg::Frost(msg)) {
                    debug!(%session, %from, "FROST DKG message outside a FROST DKG dropped");
                }
                k.state = other;
                return;
            }
        };
        match dkg.handle(&from, msg) {
            Ok(AnyDkgProgress::Continue(dkg, out)) => {
                k.state = KeygenState::Running(dkg);
                send_dkg(fx, session, out);
            }
            Ok(AnyDkgProgress::Done(output, out)) => {
                send_dkg(fx, session, out);
                self.complete_keygen(now, session, output, fx);
            }
            Err(e) => self.fail_keygen(now, session, e, fx),
        }
    }
}

fn send_dkg(fx: &mut Vec<Effect>, session: SessionId, out: Vec<Outgoing<DkgMsg>>) {
    for o in out {
        Manager::send(fx, session, &o.to, dkg_payload(o.msg));
    }
}
