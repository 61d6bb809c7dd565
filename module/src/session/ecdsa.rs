//! CGGMP24 signing sessions: a presignature when one is pooled, the full protocol otherwise.
//!
//! ```text
//! job ─► Loading ─store─► AwaitPlan ─plan─► Online (a presignature, inline) ─► signed
//!                 │                   └───► Full (the protocol on a worker) ─► signed
//!                 └─ a prehashed digest ──► Full
//! ```
//!
//! **Plan.** A request of a full message (not `--prehashed`: presignatures never sign a raw
//! digest) starts with the aggregator (first signer) taking a presignature of the request's
//! subset out of its pool (`super::presign`) and telling the others which one
//! ([`SignPlan`](wire::SignPlan)). Every signer takes the same one out of its pool before it
//! issues its partial signature ([`OnlineSigning`]), so each is used once. An empty plan, or a
//! signer that lacks the named presignature (it restarted), makes every signer run the full
//! protocol in the same session; a miss also purges that subset's pool everywhere, since the
//! pools no longer match.
//!
//! **Result.** Every signer ends with the verified signature. The first submits it; the others
//! hold it as a backup (`super::sign::Backup`) and submit it rank × `backup_submit_ms` later
//! unless the chain has ended the request by then.
//!
//! **Silence.** A signer that sent nothing at all within `cggmp_silence_ms` of the start is
//! named in a failure report (dead or partitioned from the start). One that stopped later is
//! named by the runtime's worker, which counts each party's messages
//! ([`Input::WorkerQuiet`](super::Input::WorkerQuiet)): every live signer reaches the same
//! verdict on its own clock, so the chain starts the next attempt without the silent one.

use rand::{CryptoRng, RngCore};
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use std::collections::BTreeSet;
use tracing::{debug, info, warn};

mod plan;

use super::presign::{cggmp_share, PresignId};
use super::sign::{Backup, Held};
use super::worker::ShareBytes;
use super::{Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken};
use super::{WorkerOutput, WorkerTask};
use crate::error::ProtocolError;
use crate::job::KeyVersion;
use crate::protocol::cggmp::{
    CggmpMsg, EcdsaSignature, Engine, OnlineSigning, Phase, Progress, SignData,
};
use crate::protocol::Outgoing;

/// A committed CGGMP24 signing, as the session needs it.
pub(super) struct EcdsaJob {
    pub session: SessionId,
    pub request_id: RequestId,
    pub key_id: KeyId,
    pub message: Vec<u8>,
    pub prehashed: bool,
    pub signers: Vec<NodeId>,
    pub key_version: KeyVersion,
}

/// A message of a CGGMP24 signing.
pub(super) enum EcdsaIn {
    Plan(wire::SignPlan),
    Msg(CggmpMsg),
}

/// What the full protocol needs, kept until the plan says whether it runs.
pub(super) struct FullInput {
    share: ShareBytes,
    data: SignData,
}

/// Where a CGGMP24 signing stands at this signer.
#[allow(clippy::large_enum_variant)] // one per session, moved once per step
pub(super) enum EcdsaState {
    /// The key share is being read from the store; messages wait.
    Loading {
        /// The message, or the digest when prehashed.
        message: Vec<u8>,
        /// Whether `message` is a 32-byte digest signed as is.
        prehashed: bool,
        buffered: Vec<(NodeId, EcdsaIn)>,
    },
    /// Waiting for the aggregator's plan, or for presignature `waiting_for` still being
    /// finished here. Messages wait.
    AwaitPlan {
        input: FullInput,
        message: Vec<u8>,
        waiting_for: Option<PresignId>,
        buffered: Vec<(NodeId, CggmpMsg)>,
    },
    /// The online step from a presignature; full-protocol messages wait in case a signer
    /// falls back.
    Online {
        input: FullInput,
        engine: OnlineSigning,
        buffered: Vec<(NodeId, CggmpMsg)>,
    },
    /// The full protocol runs on a worker.
    Full,
    /// Moving between states (never observed outside a transition).
    Transition,
}

impl EcdsaState {
    pub(super) fn buffered(&self) -> usize {
        match self {
            EcdsaState::Loading { buffered, .. } => buffered.len(),
            EcdsaState::AwaitPlan { buffered, .. } | EcdsaState::Online { buffered, .. } => {
                buffered.len()
            }
            EcdsaState::Full | EcdsaState::Transition => 0,
        }
    }
}

/// A CGGMP24 signing session.
pub(super) struct Ecdsa {
    pub request_id: RequestId,
    pub key_id: KeyId,
    pub signers: Vec<NodeId>,
    pub key_version: KeyVersion,
    /// The session that made the share signing here (known once it is loaded).
    pub generation: Option<SessionId>,
    /// The signers a message (plan or protocol) came from so far.
    pub heard: BTreeSet<NodeId>,
    pub started: Millis,
    /// Whether the online step from a presignature made the signature.
    pub presigned: bool,
    pub state: EcdsaState,
}

impl Manager {
    pub(super) fn ecdsa_mut(&mut self, session: &SessionId) -> Option<&mut Ecdsa> {
        match self.sessions.get_mut(session) {
            Some(Session::Ecdsa(s)) => Some(s),
            _ => None,
        }
    }

    /// A CGGMP24 signing job was admitted: read the share.
    pub(super) fn start_ecdsa<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        job: EcdsaJob,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        if !self.has_room() {
            let e = ProtocolError::Unable("node overloaded: too many sessions".into());
            return self.report_sign_failure(now, job.session, job.request_id, e, None, fx);
        }
        self.sessions.insert(
            job.session,
            Session::Ecdsa(Box::new(Ecdsa {
                request_id: job.request_id,
                key_id: job.key_id.clone(),
                signers: job.signers,
                key_version: job.key_version,
                generation: None,
                heard: BTreeSet::new(),
                started: now,
                presigned: false,
                state: EcdsaState::Loading {
                    message: job.message,
                    prehashed: job.prehashed,
                    buffered: Vec::new(),
                },
            })),
        );
        fx.push(Effect::Store {
            op: StoreOp::Get(job.key_id),
            token: Some(StoreToken::EcdsaKey(job.session)),
        });
        self.replay_early(now, job.session, rng, fx);
    }

    /// The store answered with the share of a signing: the plan (a message) or the full
    /// protocol (a prehashed digest).
    pub(super) fn ecdsa_key_loaded(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let EcdsaState::Loading {
            message,
            prehashed,
            buffered,
        } = std::mem::replace(&mut s.state, EcdsaState::Transition)
        else {
            return;
        };
        let loaded = cggmp_share(&s.key_id, reply).and_then(|(share, generation, number)| {
            let local = KeyVersion {
                generation: number,
                session: generation,
            };
            s.key_version.check(&s.key_id, &local)?;
            let data = if prehashed {
                SignData::prehashed(&message)?
            } else {
                SignData::Message(message.clone())
            };
            Ok((FullInput { share, data }, generation))
        });
        let (input, generation) = match loaded {
            Ok(x) => x,
            Err(e) => {
                let request_id = s.request_id.clone();
                return self.report_sign_failure(now, session, request_id, e, None, fx);
            }
        };
        s.generation = Some(generation);
        let aggregator = s.signers.first() == Some(&me);
        s.state = EcdsaState::AwaitPlan {
            input,
            message,
            waiting_for: None,
            buffered: Vec::new(),
        };
        if prehashed {
            // Presignatures never sign a raw digest: the full protocol at every signer, no plan.
            self.go_full(session, fx);
        } else if aggregator {
            self.plan(now, session, generation, fx);
        }
        for (from, m) in buffered {
            match m {
                EcdsaIn::Plan(p) => self.on_sign_plan(now, session, from, p, fx),
                EcdsaIn::Msg(m) => self.on_ecdsa_msg(now, session, from, m, fx),
            }
        }
    }

    /// A message of a CGGMP24 signing.
    pub(super) fn ecdsa_msg(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        payload: Payload,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        s.heard.insert(from.clone());
        let m = match payload {
            Payload::SignPlan(p) => EcdsaIn::Plan(p),
            Payload::Cggmp(c) => match CggmpMsg::from_bytes(&c.msg) {
                Ok(m) => EcdsaIn::Msg(m),
                Err(e) => {
                    warn!(%session, %from, error = %e, "malformed CGGMP24 message dropped");
                    fx.push(Effect::Metric(MetricEvent::Dropped));
                    return;
                }
            },
            Payload::Abort(a) => {
                let e = ProtocolError::Local(format!("aborted by {from}: {}", a.reason));
                let request_id = s.request_id.clone();
                return self.report_sign_failure(now, session, request_id, e, None, fx);
            }
            _ => {
                warn!(%session, %from, "message of another kind in a CGGMP24 signing dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
                return;
            }
        };
        if let EcdsaState::Loading { buffered, .. } = &mut s.state {
            super::buffer_capped_at(buffered, from, m, super::MAX_BUFFERED_CGGMP_PER_SENDER);
            return;
        }
        match m {
            EcdsaIn::Plan(p) => self.on_sign_plan(now, session, from, p, fx),
            EcdsaIn::Msg(m) => self.on_ecdsa_msg(now, session, from, m, fx),
        }
    }

    /// Runs the full protocol on a worker, with the buffered full-protocol messages.
    pub(super) fn go_full(&mut self, session: SessionId, fx: &mut Vec<Effect>) {
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let (input, buffered) = match std::mem::replace(&mut s.state, EcdsaState::Transition) {
            EcdsaState::AwaitPlan {
                input, buffered, ..
            }
            | EcdsaState::Online {
                input, buffered, ..
            } => (input, buffered),
            other => {
                s.state = other;
                return;
            }
        };
        s.presigned = false;
        s.state = EcdsaState::Full;
        let task = WorkerTask::Sign {
            share: input.share,
            signers: s.signers.clone(),
            data: input.data,
        };
        fx.push(Effect::StartWorker { session, task });
        for (from, msg) in buffered {
            if msg.phase() != Phase::Online {
                fx.push(Effect::ToWorker { session, from, msg });
            }
        }
    }

    /// A CGGMP24 protocol message of a signing whose share is loaded.
    fn on_ecdsa_msg(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        msg: CggmpMsg,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let online = msg.phase() == Phase::Online;
        match &mut s.state {
            EcdsaState::Online { .. } if online => self.on_online(now, session, from, msg, fx),
            EcdsaState::AwaitPlan { buffered, .. } | EcdsaState::Online { buffered, .. } => {
                super::buffer_capped_at(buffered, from, msg, super::MAX_BUFFERED_CGGMP_PER_SENDER);
            }
            // Partial signatures of an abandoned online step are of no use any more.
            EcdsaState::Full if !online => fx.push(Effect::ToWorker { session, from, msg }),
            EcdsaState::Full | EcdsaState::Loading { .. } | EcdsaState::Transition => {}
        }
    }

    pub(super) fn on_online(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        msg: CggmpMsg,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let EcdsaState::Online {
            input,
            engine,
            buffered,
        } = std::mem::replace(&mut s.state, EcdsaState::Transition)
        else {
            return;
        };
        match engine.handle(&from, msg) {
            Ok(Progress::Continue(engine, out)) => {
                s.state = EcdsaState::Online {
                    input,
                    engine,
                    buffered,
                };
                send_cggmp(fx, session, out);
            }
            Ok(Progress::Done(sig, out)) => {
                send_cggmp(fx, session, out);
                self.ecdsa_signed(now, session, Ok(sig), fx);
            }
            Err(e) => self.ecdsa_signed(now, session, Err(e), fx),
        }
    }

    /// A full-protocol worker finished.
    pub(super) fn ecdsa_worker_done(
        &mut self,
        now: Millis,
        session: SessionId,
        output: WorkerOutput,
        fx: &mut Vec<Effect>,
    ) {
        let res = match output {
            WorkerOutput::Sign(res) => res,
            other => Err(ProtocolError::Bug(format!(
                "a signing worker ended with {other:?}"
            ))),
        };
        self.ecdsa_signed(now, session, res, fx);
    }

    /// A CGGMP24 signing ended here (full protocol or online step): the first signer submits
    /// the signature, the others hold it as a backup; a failure goes to the others and to the
    /// chain.
    pub(super) fn ecdsa_signed(
        &mut self,
        now: Millis,
        session: SessionId,
        res: Result<EcdsaSignature, ProtocolError>,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let backup_ms = self.cfg.backup_submit_ms;
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let (request_id, started, presigned) = (s.request_id.clone(), s.started, s.presigned);
        let rank = s.signers.iter().position(|p| *p == me).unwrap_or(0);
        let sig = match res {
            Ok(sig) => sig,
            Err(e) => {
                for p in s.signers.iter().filter(|p| **p != me) {
                    let reason = e.to_string();
                    Self::send(
                        fx,
                        session,
                        p,
                        Payload::Abort(wire::SessionAbort { reason }),
                    );
                }
                return self.report_sign_failure(now, session, request_id, e, None, fx);
            }
        };
        self.end_cggmp(now, session, fx);
        let mut bytes = sig.rs.to_vec();
        bytes.push(sig.recovery_id);
        if rank > 0 {
            debug!(%request_id, %session, rank, "ECDSA signature held as a backup");
            let backup = Backup {
                due: now.saturating_add(backup_ms.saturating_mul(rank as u64)),
                session,
                started,
                scheme: Scheme::Cggmp24Secp256k1,
                held: Held::Signature(bytes),
            };
            self.backups.insert((request_id, session), backup);
            return;
        }
        let us = now.saturating_sub(started).saturating_mul(1000);
        fx.push(Effect::Metric(MetricEvent::EcdsaSignOk { us, presigned }));
        info!(%request_id, us, presigned, recovery_id = sig.recovery_id, "ECDSA signature verified");
        fx.push(Effect::Submit(TxMsg::SignResult {
            request_id,
            session,
            outcome: seqmpc_proto::tx::Outcome::Ok(bytes),
            signing_package: Vec::new(),
        }));
    }

    /// The runtime's worker of `session` has gone quiet and waits for `behind` (it got fewer
    /// messages from them than it sent them): a CGGMP24 signing names them in a failure report.
    pub(super) fn ecdsa_quiet(
        &mut self,
        now: Millis,
        session: SessionId,
        behind: Vec<NodeId>,
        fx: &mut Vec<Effect>,
    ) {
        let limit = self.cfg.cggmp_silence_ms;
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        if behind.is_empty() || !matches!(s.state, EcdsaState::Full) {
            return;
        }
        let names: Vec<&str> = behind.iter().map(NodeId::as_str).collect();
        let e = ProtocolError::Aborted {
            reason: format!(
                "stopped: no next message from {} within {} s",
                names.join(", "),
                limit / 1000
            ),
            culprits: behind.clone(),
        };
        let request_id = s.request_id.clone();
        self.report_sign_failure(now, session, request_id, e, None, fx);
    }

    /// CGGMP24 signings where a signer sent nothing at all within `cggmp_silence_ms` of the
    /// start end here, naming it (silence, not proof). No abort goes to the others: each must
    /// name the silent signer itself.
    pub(super) fn report_silent_ecdsa_signers(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let limit = self.cfg.cggmp_silence_ms;
        let me = &self.cfg.me;
        let silent: Vec<(SessionId, RequestId, Vec<NodeId>)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| match s {
                Session::Ecdsa(s) if now.saturating_sub(s.started) > limit => {
                    let never: Vec<NodeId> = s
                        .signers
                        .iter()
                        .filter(|p| *p != me && !s.heard.contains(*p))
                        .cloned()
                        .collect();
                    (!never.is_empty()).then(|| (*id, s.request_id.clone(), never))
                }
                _ => None,
            })
            .collect();
        for (session, request_id, quiet) in silent {
            let names: Vec<&str> = quiet.iter().map(NodeId::as_str).collect();
            let e = ProtocolError::Aborted {
                reason: format!(
                    "nothing received from {} within {} s",
                    names.join(", "),
                    limit / 1000
                ),
                culprits: quiet,
            };
            self.report_sign_failure(now, session, request_id, e, None, fx);
        }
    }
}

pub(super) fn send_cggmp(fx: &mut Vec<Effect>, session: SessionId, out: Vec<Outgoing<CggmpMsg>>) {
    for (to, payload) in super::worker::payloads(out) {
        Manager::send(fx, session, &to, payload);
    }
}
