//! FROST signing sessions: load the share, commit, sign, aggregate, verify and report.
//!
//! ```text
//! job ─► Loading ─store─► Running ─► submitted (aggregator) / Backup (the others)
//!                                └─► failure reported (timeout, blame)
//! ```
//!
//! Every signer gets every share, so every signer can make the signature. The aggregator (the
//! first signer) aggregates, verifies and submits it at once. The others keep the shares as a
//! [`Backup`]: the signer of rank `r` (its place among the sorted signers) aggregates,
//! verifies and submits them `r × backup_submit_ms` later, unless the chain has ended the
//! request by then ([`Job::SignEnded`]). So a dead, partitioned or stalled aggregator delays a
//! signature by one backup delay instead of costing the attempt, and a healthy network makes
//! one aggregation and sends one result tx per signature.
//!
//! [`Job::SignEnded`]: crate::job::Job::SignEnded

use rand::{CryptoRng, RngCore};
use seqmpc_proto::tx::{Outcome, TxMsg, MAX_SIGNING_PACKAGE_BYTES};
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use tracing::{debug, info, warn};

use super::codec::{decode_share, sign_payload};
use super::{Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken};
use crate::error::ProtocolError;
use crate::job::KeyVersion;
use crate::protocol::frost_sign::{AnyKeyMaterial, AnySignProgress, AnySigning, SignMsg};
use crate::protocol::Outgoing;
use crate::store::ShareStatus;

/// A committed signing, as the session needs it.
pub(super) struct SignJob {
    pub session: SessionId,
    pub request_id: RequestId,
    pub key_id: KeyId,
    pub scheme: Scheme,
    pub message: Vec<u8>,
    pub signers: Vec<NodeId>,
    /// The key's generation on chain and the session that made it.
    pub key_version: KeyVersion,
}

/// Where a signing stands at this signer.
#[allow(clippy::large_enum_variant)] // moved by value once per step
pub enum SignState {
    /// The key share is being read from the store.
    Loading {
        /// The message to sign.
        message: Vec<u8>,
        /// Signing messages that arrived meanwhile.
        buffered: Vec<(NodeId, SignMsg)>,
    },
    /// The FROST signing engine runs.
    Running(AnySigning),
    /// Moving between states (never observed outside a transition).
    Transition,
}

impl SignState {
    /// Messages it holds until the share is loaded.
    pub(super) fn buffered(&self) -> usize {
        match self {
            SignState::Loading { buffered, .. } => buffered.len(),
            SignState::Running(_) | SignState::Transition => 0,
        }
    }
}

/// A signing session.
pub(super) struct Sign {
    pub request_id: RequestId,
    pub key_id: KeyId,
    pub scheme: Scheme,
    pub signers: Vec<NodeId>,
    pub key_version: KeyVersion,
    pub state: SignState,
    pub started: Millis,
    /// What this signer sent (its commitments, then its share), to send again once.
    pub sent: Vec<Outgoing<SignMsg>>,
    /// Whether it was sent again already.
    pub resent: bool,
}

/// Every share of a signing, held by a signer other than the aggregator for the chain: it
/// aggregates, verifies and submits them only if the chain has not ended the request by `due`
/// (so a healthy network pays for one aggregation per signature, not one per signer).
pub(super) struct Backup {
    /// When it goes to the chain if the chain has not ended the request by then.
    pub due: Millis,
    /// Its session.
    pub session: SessionId,
    /// For the latency metric.
    pub started: Millis,
    pub scheme: Scheme,
    /// What makes the signature.
    pub held: Held,
}

/// What a backup holds.
#[allow(clippy::large_enum_variant)] // one per held signature
pub(super) enum Held {
    /// A FROST signing with every share in (aggregated only when due).
    Shares(AnySigning),
    /// A verified CGGMP24 signature (`r || s || v`): every CGGMP24 signer computes it.
    Signature(Vec<u8>),
}

impl Manager {
    fn sign_mut(&mut self, session: &SessionId) -> Option<&mut Sign> {
        match self.sessions.get_mut(session) {
            Some(Session::Sign(s)) => Some(s),
            _ => None,
        }
    }

    /// A signing job was admitted: start with the cached share, or read it first.
    pub(super) fn start_sign<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        job: SignJob,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        if !self.has_room() {
            let e = ProtocolError::Unable("node overloaded: too many sessions".into());
            return self.report_sign_failure(now, job.session, job.request_id, e, None, fx);
        }
        // Only a share of the chain's generation: a resharing may have replaced the cached one
        // (its promotion is queued in the store ahead of the read below).
        let cached = self
            .keys
            .get(&job.key_id)
            .filter(|(_, version)| *version == job.key_version)
            .cloned();
        self.sessions.insert(
            job.session,
            Session::Sign(Box::new(Sign {
                request_id: job.request_id,
                key_id: job.key_id.clone(),
                scheme: job.scheme,
                signers: job.signers,
                key_version: job.key_version,
                state: SignState::Loading {
                    message: job.message,
                    buffered: Vec::new(),
                },
                started: now,
                sent: Vec::new(),
                resent: false,
            })),
        );
        match cached {
            Some(key) => self.run_sign(now, job.session, Ok(key), rng, fx),
            None => fx.push(Effect::Store {
                op: StoreOp::Get(job.key_id),
                token: Some(StoreToken::SignKey(job.session)),
            }),
        }
        self.replay_early(now, job.session, rng, fx);
    }

    /// The store answered with the key share of a signing.
    pub(super) fn sign_key_loaded<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.sign_mut(&session) else {
            return;
        };
        let key_id = s.key_id.clone();
        let key = match reply {
            Ok(StoreReply::Record(Some(rec))) => {
                if rec.status != ShareStatus::Ready {
                    Err(ProtocolError::Unable(format!(
                        "local share of {key_id} is {:?}, not READY",
                        rec.status
                    )))
                } else {
                    let version = KeyVersion {
                        generation: rec.generation,
                        session: rec.session,
                    };
                    rec.share
                        .as_ref()
                        .ok_or_else(|| ProtocolError::Unable("READY record without share".into()))
                        .and_then(|share| decode_share(share, rec.scheme, rec.parties.clone()))
                        .and_then(|km| {
                            if km.public_key() == rec.public_key.as_slice() {
                                Ok((km, version))
                            } else {
                                Err(ProtocolError::Unable(format!(
                                    "stored share of {key_id} does not match the record's public key"
                                )))
                            }
                        })
                }
            }
            Ok(_) => Err(ProtocolError::Unable(format!(
                "no local share for key {key_id}"
            ))),
            Err(e) => Err(ProtocolError::Unable(format!("key store: {e}"))),
        };
        if let Ok(k) = &key {
            self.keys.insert(key_id, k.clone());
        }
        self.run_sign(now, session, key, rng, fx);
    }

    /// Starts the FROST engine once the share is at hand, then feeds what arrived meanwhile.
    fn run_sign<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        key: Result<(AnyKeyMaterial, KeyVersion), ProtocolError>,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let Some(s) = self.sign_mut(&session) else {
            return;
        };
        let SignState::Loading { message, buffered } =
            std::mem::replace(&mut s.state, SignState::Transition)
        else {
            return;
        };
        let (key_id, expected) = (&s.key_id, s.key_version);
        let aggregator = crate::protocol::frost_sign::aggregator(&s.signers) == Some(&me);
        let started = key.and_then(|(key, local)| {
            expected.check(key_id, &local)?;
            let generation = local.generation;
            let (mut signing, out) =
                AnySigning::start(session, &me, &s.signers, message, key, generation, rng)?;
            if !aggregator {
                signing.defer_aggregation();
            }
            Ok((signing, out))
        });
        match started {
            Ok((signing, out)) => {
                s.state = SignState::Running(signing);
                s.sent.extend(out.iter().cloned());
                send_sign(fx, session, out);
                fx.push(Effect::Checkpoint("sign-after-commitments"));
                for (from, msg) in buffered {
                    self.on_sign(now, session, from, msg, fx);
                }
            }
            Err(e) => {
                let request_id = s.request_id.clone();
                self.report_sign_failure(now, session, request_id, e, None, fx)
            }
        }
    }

    pub(super) fn sign_msg(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        payload: Payload,
        fx: &mut Vec<Effect>,
    ) {
        match payload {
            Payload::SignRound1(r) => {
                self.on_sign(now, session, from, SignMsg::Commitments(r.commitments), fx)
            }
            Payload::SignRound2(r) => {
                let msg = SignMsg::Share {
                    share: r.share,
                    package_hash: r.package_hash,
                };
                self.on_sign(now, session, from, msg, fx)
            }
            // A peer's abort is its word only: it does not end this signer's session (a lying
            // signer could otherwise spoil every attempt it joins; simulator scenario
            // `false-abort`, seed 8). A peer that really cannot sign stays silent and is named
            // at the signing timeout; after a blame the other signers have finished already.
            Payload::Abort(a) => {
                debug!(%session, %from, reason = %a.reason, "abort from a signer ignored");
            }
            Payload::KeygenPrepare(_)
            | Payload::KeygenReady(_)
            | Payload::KeygenStart(_)
            | Payload::DkgRound1(_)
            | Payload::DkgRound2(_)
            | Payload::Cggmp(_)
            | Payload::SignPlan(_)
            | Payload::PresignStart(_)
            | Payload::ReshareDeal(_)
            | Payload::ReshareAux(_) => {
                warn!(%session, %from, "message of another kind in a FROST signing dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
            }
        }
    }

    fn on_sign(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        msg: SignMsg,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let backup_ms = self.cfg.backup_submit_ms;
        let Some(s) = self.sign_mut(&session) else {
            return;
        };
        let state = match std::mem::replace(&mut s.state, SignState::Transition) {
            SignState::Running(st) => st,
            SignState::Loading {
                message,
                mut buffered,
            } => {
                super::buffer_capped(&mut buffered, from, msg);
                s.state = SignState::Loading { message, buffered };
                return;
            }
            SignState::Transition => return,
        };
        let request_id = s.request_id.clone();
        match state.handle(&from, msg) {
            Ok(AnySignProgress::Continue(st, out)) if st.has_all_shares() => {
                // A backup signer with every share: it is done unless the aggregator's
                // signature is late.
                let rank = s.signers.iter().position(|n| *n == me).unwrap_or(1) as u64;
                let backup = Backup {
                    due: now.saturating_add(backup_ms.saturating_mul(rank)),
                    session,
                    started: s.started,
                    scheme: s.scheme,
                    held: Held::Shares(st),
                };
                self.finish(now, session);
                self.evidence.remove(&session);
                send_sign(fx, session, out);
                debug!(%request_id, rank, "every share in: held as a backup");
                self.backups.insert((request_id, session), backup);
            }
            Ok(AnySignProgress::Continue(st, out)) => {
                s.state = SignState::Running(st);
                s.sent.extend(out.iter().cloned());
                send_sign(fx, session, out);
            }
            Ok(AnySignProgress::Finished { signature, out }) => {
                let (started, scheme) = (s.started, s.scheme);
                self.finish(now, session);
                self.evidence.remove(&session);
                send_sign(fx, session, out);
                debug!(%request_id, "signature verified");
                submit_signature(fx, now, started, scheme, request_id, session, signature);
            }
            Ok(AnySignProgress::Blamed {
                error,
                signing_package,
                out,
            }) => {
                send_sign(fx, session, out);
                self.abort_sign(now, session, request_id, error, Some(signing_package), fx)
            }
            Err(e) => self.abort_sign(now, session, request_id, e, None, fx),
        }
    }

    /// The chain ended `request_id`: its backups are not needed, and a session of it still
    /// running here ends without a report.
    pub(super) fn sign_ended(&mut self, now: Millis, request_id: &RequestId, fx: &mut Vec<Effect>) {
        drop_request(&mut self.backups, request_id);
        let running: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| match s {
                Session::Sign(x) => x.request_id == *request_id,
                Session::Ecdsa(x) => x.request_id == *request_id,
                Session::Keygen(_) | Session::Reshare(_) | Session::Presign(_) => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for session in running {
            debug!(%request_id, %session, "the chain ended the request: session closed");
            if matches!(self.sessions.get(&session), Some(Session::Ecdsa(_))) {
                fx.push(Effect::StopWorker(session));
            }
            self.finish(now, session);
            self.evidence.remove(&session);
        }
    }

    /// Halfway to the signing timeout, a signer sends its messages once more to every signer
    /// it still waits for. Every signer needs every other's commitments and shares, so a
    /// message lost on the way (a connection reset, a peer restarting) leaves both ends
    /// waiting for each other; one resend heals that instead of costing the attempt.
    pub(super) fn resend_stalled(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let half = self.cfg.sign_timeout_ms / 2;
        for (session, s) in self.sessions.iter_mut() {
            let Session::Sign(s) = s else {
                continue;
            };
            if s.resent || now.saturating_sub(s.started) < half {
                continue;
            }
            let SignState::Running(st) = &s.state else {
                continue;
            };
            s.resent = true;
            let waiting = st.waiting_for();
            for o in s.sent.iter().filter(|o| waiting.contains(&o.to)) {
                debug!(%session, to = %o.to, "signing stalled: sending again");
                Self::send(fx, *session, &o.to, sign_payload(o.msg.clone()));
            }
        }
    }

    /// Submits the backups that are due: the chain has not ended their requests in time.
    pub(super) fn submit_due_backups(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let due: Vec<(RequestId, SessionId)> = self
            .backups
            .iter()
            .filter(|(_, b)| b.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let Some(b) = self.backups.remove(&k) else {
                continue;
            };
            let (request_id, _) = k;
            let signing = match b.held {
                Held::Shares(signing) => signing,
                Held::Signature(bytes) => {
                    info!(%request_id, session = %b.session, "submitting a backup ECDSA signature: the chain has none yet");
                    fx.push(Effect::Metric(MetricEvent::SignBackupSubmitted));
                    fx.push(Effect::Submit(TxMsg::SignResult {
                        request_id,
                        session: b.session,
                        outcome: Outcome::Ok(bytes),
                        signing_package: Vec::new(),
                    }));
                    continue;
                }
            };
            match signing.aggregate() {
                Ok(AnySignProgress::Finished { signature, .. }) => {
                    warn!(%request_id, session = %b.session, "no signature on chain yet: submitting ours");
                    fx.push(Effect::Metric(MetricEvent::SignBackupSubmitted));
                    submit_signature(
                        fx, now, b.started, b.scheme, request_id, b.session, signature,
                    );
                }
                // The aggregator saw the same shares: it has reported what was wrong with them.
                Ok(_) | Err(_) => warn!(
                    %request_id,
                    session = %b.session,
                    "the held shares make no valid signature: nothing submitted"
                ),
            }
        }
    }

    /// Tells the other signers to stop waiting, then fails the session.
    fn abort_sign(
        &mut self,
        now: Millis,
        session: SessionId,
        request_id: RequestId,
        e: ProtocolError,
        signing_package: Option<Vec<u8>>,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let Some(s) = self.sign_mut(&session) else {
            return;
        };
        for p in s.signers.iter().filter(|p| **p != me) {
            let reason = e.to_string();
            Self::send(
                fx,
                session,
                p,
                Payload::Abort(wire::SessionAbort { reason }),
            );
        }
        self.report_sign_failure(now, session, request_id, e, signing_package, fx)
    }

    /// A signing that waited too long: FROST knows whom it waits for (every signer sends its
    /// round-1 commitments to all at once), so the silent signers are named.
    pub(super) fn sign_timeout(&mut self, now: Millis, session: SessionId, fx: &mut Vec<Effect>) {
        let limit = self.cfg.sign_timeout_ms;
        let Some(s) = self.sign_mut(&session) else {
            return;
        };
        let silent = match &s.state {
            SignState::Running(st) => st.waiting_for(),
            SignState::Loading { .. } | SignState::Transition => Vec::new(),
        };
        let e = if silent.is_empty() {
            ProtocolError::Local(format!(
                "timed out after {limit} ms waiting for other parties"
            ))
        } else {
            ProtocolError::Aborted {
                reason: format!(
                    "timed out after {limit} ms: nothing received from {} in this round",
                    silent
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                culprits: silent,
            }
        };
        let request_id = s.request_id.clone();
        self.report_sign_failure(now, session, request_id, e, None, fx)
    }

    /// Ends a signing ERROR and reports it. With `signing_package` (the aggregator's, when
    /// shares did not verify) the report quotes it with the culprits' signed shares, for the
    /// chain to check (`crate::evidence`).
    pub(super) fn report_sign_failure(
        &mut self,
        now: Millis,
        session: SessionId,
        request_id: RequestId,
        e: ProtocolError,
        signing_package: Option<Vec<u8>>,
        fx: &mut Vec<Effect>,
    ) {
        warn!(%request_id, %session, error = %e, "sign session failed");
        if matches!(self.sessions.get(&session), Some(Session::Ecdsa(_))) {
            fx.push(Effect::StopWorker(session));
        }
        let evidence = self.evidence_of(&session, e.culprits());
        self.finish(now, session);
        self.evidence.remove(&session);
        fx.push(Effect::Metric(MetricEvent::SignFailed));
        let signing_package = signing_package
            .filter(|p| !evidence.is_empty() && p.len() <= MAX_SIGNING_PACKAGE_BYTES)
            .unwrap_or_default();
        fx.push(Effect::Submit(TxMsg::SignResult {
            request_id,
            session,
            outcome: Outcome::Failed {
                error: e.to_string(),
                culprits: e.report_culprits(&self.cfg.me),
                evidence,
            },
            signing_package,
        }));
    }
}

/// Hands a verified signature to the chain.
fn submit_signature(
    fx: &mut Vec<Effect>,
    now: Millis,
    started: Millis,
    scheme: Scheme,
    request_id: RequestId,
    session: SessionId,
    signature: Vec<u8>,
) {
    let us = now.saturating_sub(started).saturating_mul(1000);
    fx.push(Effect::Metric(MetricEvent::SignOk(scheme, us)));
    fx.push(Effect::Submit(TxMsg::SignResult {
        request_id,
        session,
        outcome: Outcome::Ok(signature),
        signing_package: Vec::new(),
    }));
}

fn send_sign(fx: &mut Vec<Effect>, session: SessionId, out: Vec<Outgoing<SignMsg>>) {
    if out.iter().any(|o| matches!(o.msg, SignMsg::Share { .. })) {
        fx.push(Effect::Checkpoint("sign-before-share"));
    }
    for o in out {
        Manager::send(fx, session, &o.to, sign_payload(o.msg));
    }
}

/// Removes every entry of `request_id` from a map keyed by (request, session): the backups a
/// signer holds for a request the chain has ended.
pub(super) fn drop_request<V>(
    map: &mut std::collections::BTreeMap<(RequestId, SessionId), V>,
    request_id: &RequestId,
) {
    let held: Vec<(RequestId, SessionId)> = map
        .range((request_id.clone(), SessionId([0; 32]))..)
        .take_while(|((r, _), _)| r == request_id)
        .map(|(k, _)| k.clone())
        .collect();
    for k in held {
        map.remove(&k);
    }
}
