//! Resharing sessions (docs/reshare.md), FROST and CGGMP24: the dealers (old holders the chain
//! chose) deal their Lagrange-weighted shares to the new committee; each new party checks and
//! combines what it received, stages the new share beside its READY one (if any) and reports
//! the public key and transcript hash. The chain switches the key when every new party reports
//! the same ([`Job::ReshareDone`]): new parties promote their staged share, old holders outside
//! the new committee delete theirs. A failed resharing ([`Job::ReshareFailed`]) drops the
//! staged shares; the old generation stays READY.
//!
//! A CGGMP24 share also needs the new committee's aux info. Every new party offers the
//! fingerprint of the aux info it holds for that committee (`ReshareAux`) to the others; when
//! all offered the same, each reuses its own, otherwise the new parties generate aux info
//! together on a CGGMP24 worker ([`Effect::StartWorker`]: seconds of CPU and a safe-prime set,
//! so the runtime runs it) while the deals arrive. As a keygen's (`keygen::cggmp`), that
//! generation starts only once every new party holds a safe-prime set reserved for it: a party
//! that needs one (it holds no aux info for the committee, or the offers differ) reserves one
//! ([`Effect::ReservePrimes`]), says in its offer whether it holds it, and offers again once it
//! does; so a committee where one node has no set yet spends nobody's set. The reported transcript binds the aux
//! fingerprint, so the chain confirms that every new party holds the same.
//!
//! ```text
//! job ─► Loading ─store─► (dealer: deal) ─► [CGGMP24: FindingAux ─store─►] Receiving ─deals, aux─► Staging ─store─► Reported ─chain's verdict─► (ended)
//! ```
//!
//! A deal or offer is sent once, and a lost one would leave its new party waiting until the
//! chain's deadline. So a session stays open after it dealt and reported, until the chain
//! ends the resharing, and sends its deals and offer again every `reshare_resend_ms` (at most
//! [`MAX_RESENDS`] times) while it is open; a new party ignores an identical copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{CryptoRng, RngCore};
use seqmpc_proto::tx::KeyGenOk;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, Scheme, SessionId};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::codec::untag_share;
use super::worker::{AuxOffer, WorkerOutput, WorkerTask};
use super::{
    buffer_capped, Effect, Manager, MetricEvent, Millis, Session, StoreOp, StoreReply, StoreToken,
};
use crate::error::ProtocolError;
use crate::job::ReshareJob;
use crate::protocol::cggmp::CggmpMsg;
use crate::protocol::reshare::{self, Collector, Deal, ReshareOutput, ReshareParams};
use crate::store::{KeyRecord, ShareStatus};

mod aux;
mod outcome;
use outcome::{report, staged_record};

/// Most times a resharing sends its deals and offer again.
pub const MAX_RESENDS: u32 = 3;

/// A resharing session at a dealer, a new party, or both.
pub(super) struct Reshare {
    pub(super) job: ReshareJob,
    params: ReshareParams,
    dealer: bool,
    /// A new party: it reports the outcome to the chain.
    receiver: bool,
    pub(super) started: Millis,
    pub(super) state: ReshareState,
    /// A dealer's deals (secret: zeroized when the session ends), to send again.
    sent: Vec<(NodeId, Deal)>,
    /// A CGGMP24 new party's aux-info offer, to send again.
    offer: Option<wire::ReshareAux>,
    /// A CGGMP24 new party's safe-prime set for the new committee's aux info.
    primes: PrimeSet,
    /// When it last sent them, and how many times it sent them again.
    last_sent: Millis,
    resends: u32,
}

/// A CGGMP24 new party's safe-prime set for the new committee's aux info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PrimeSet {
    /// Not needed so far (it may reuse aux info it holds).
    NotAsked,
    /// Asked for ([`Effect::ReservePrimes`]); the runtime answers once it holds one.
    Asked,
    /// Reserved for this resharing.
    Held,
}

impl Reshare {
    pub(super) fn is_party(&self, n: &NodeId) -> bool {
        self.job.dealers.contains(n) || self.job.new_parties.contains(n)
    }
}

/// Where a resharing stands.
pub enum ReshareState {
    /// Reading this node's records of the key: whether this resharing is done here already (a
    /// replayed job), and a dealer's share. Messages wait.
    Loading {
        /// Messages that came meanwhile.
        buffered: Vec<(NodeId, Payload)>,
    },
    /// A CGGMP24 new party looks up the aux info it holds for the new committee.
    FindingAux {
        /// This party's collector.
        collector: Box<Collector>,
        /// Messages that came meanwhile.
        buffered: Vec<(NodeId, Payload)>,
    },
    /// A new party receives the deals (and settles the new committee's aux info).
    Receiving {
        /// The deals so far; `None` once combined.
        collector: Option<Box<Collector>>,
        /// The checked and combined share, once every deal is in.
        core: Option<ReshareOutput>,
        /// CGGMP24: the new committee's aux info.
        aux: AuxState,
    },
    /// The new share is being staged in the store; then the report goes to the chain.
    Staging {
        /// What the chain is told.
        ok: KeyGenOk,
    },
    /// Dealt and, a new party, reported: waits for the chain's verdict, sending its deals and
    /// offer again meanwhile.
    Reported,
}

impl ReshareState {
    /// A short name, for logs and status.
    pub fn phase(&self) -> &'static str {
        match self {
            ReshareState::Loading { .. } => "loading",
            ReshareState::FindingAux { .. } => "finding-aux",
            ReshareState::Receiving { .. } => "receiving",
            ReshareState::Staging { .. } => "staging",
            ReshareState::Reported => "reported",
        }
    }

    pub(super) fn buffered(&self) -> usize {
        match self {
            ReshareState::Loading { buffered } | ReshareState::FindingAux { buffered, .. } => {
                buffered.len()
            }
            ReshareState::Receiving {
                aux: AuxState::Offering { buffered, .. },
                ..
            } => buffered.len(),
            ReshareState::Receiving { .. }
            | ReshareState::Staging { .. }
            | ReshareState::Reported => 0,
        }
    }
}

/// Where a CGGMP24 new party stands with the new committee's aux info.
pub enum AuxState {
    /// FROST: none needed.
    NotNeeded,
    /// Collecting the new parties' offers; CGGMP24 messages of a generation are kept.
    Offering {
        /// What this node holds for the committee.
        mine: Option<AuxOffer>,
        /// Fingerprints offered so far (empty: none held), and whether each party holds a
        /// safe-prime set for the committee.
        offers: BTreeMap<NodeId, (Vec<u8>, bool)>,
        /// Messages of an aux-info run that started elsewhere already.
        buffered: Vec<(NodeId, CggmpMsg)>,
    },
    /// Generating it with the other new parties, on a worker of the runtime.
    Generating,
    /// Ready: [`AuxShare::to_bytes`](crate::protocol::cggmp::AuxShare::to_bytes).
    Ready(Arc<Zeroizing<Vec<u8>>>),
}

impl ReshareJob {
    fn params(&self) -> Result<ReshareParams, ProtocolError> {
        let t = |v: u32| {
            u16::try_from(v).map_err(|_| ProtocolError::Local(format!("threshold {v} too large")))
        };
        let p = ReshareParams {
            session: self.session,
            scheme: self.scheme,
            old_parties: self.old_parties.clone(),
            old_threshold: t(self.old_threshold)?,
            dealers: self.dealers.clone(),
            new_parties: self.new_parties.clone(),
            new_threshold: t(self.new_threshold)?,
            public_key: self.public_key.clone(),
            old_public_package: self.public_key_package.clone(),
        };
        p.check()?;
        Ok(p)
    }
}

impl Manager {
    fn reshare_mut(&mut self, session: &SessionId) -> Option<&mut Reshare> {
        match self.sessions.get_mut(session) {
            Some(Session::Reshare(r)) => Some(r),
            _ => None,
        }
    }

    /// A committed resharing: open the session and read this node's records of the key.
    pub(super) fn start_reshare<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        job: ReshareJob,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let dealer = job.dealers.contains(&me);
        let receiver = job.new_parties.contains(&me);
        let session = job.session;
        let params = match job.params() {
            Ok(p) => p,
            Err(e) => {
                if receiver {
                    report(fx, &job.key_id, session, Err(e), Vec::new());
                }
                return;
            }
        };
        if !self.has_room() {
            if receiver {
                let e = ProtocolError::Local("node overloaded: too many sessions".into());
                report(fx, &job.key_id, session, Err(e), Vec::new());
            }
            return;
        }
        info!(key_id = %job.key_id, %session, dealer, receiver, generation = job.generation,
            "reshare session opened");
        let key_id = job.key_id.clone();
        self.sessions.insert(
            session,
            Session::Reshare(Box::new(Reshare {
                job,
                params,
                dealer,
                receiver,
                started: now,
                state: ReshareState::Loading {
                    buffered: Vec::new(),
                },
                sent: Vec::new(),
                offer: None,
                primes: PrimeSet::NotAsked,
                last_sent: now,
                resends: 0,
            })),
        );
        fx.push(Effect::Store {
            op: StoreOp::GetGenerations(key_id),
            token: Some(StoreToken::ReshareLoaded(session)),
        });
        // A dealer's Commit may run ahead of ours: its deal waits in the session now.
        self.replay_early(now, session, rng, fx);
    }

    /// This node's records of the key: skip a resharing done here already; deal (a dealer);
    /// start receiving (a new party).
    pub(super) fn reshare_loaded<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) {
        let (current, staged) = match reply {
            Ok(StoreReply::Generations { current, staged }) => (current, staged),
            Ok(other) => {
                let e = ProtocolError::Bug(format!("unexpected store reply {other:?}"));
                return self.fail_reshare(now, session, e, fx);
            }
            Err(e) => {
                let e = ProtocolError::Local(format!("key store: {e}"));
                return self.fail_reshare(now, session, e, fx);
            }
        };
        let me = self.cfg.me.clone();
        let Some(r) = self.reshare_mut(&session) else {
            return;
        };
        // Idempotent: a replayed job whose share this node already staged or promoted.
        let done_here = [&staged, &current]
            .into_iter()
            .flatten()
            .any(|rec| rec.session == session);
        if r.receiver && done_here {
            debug!(key_id = %r.job.key_id, %session, "reshare job already done here; skipped");
            self.end_reshare(now, session, fx);
            return;
        }
        let buffered = match &mut r.state {
            ReshareState::Loading { buffered } => std::mem::take(buffered),
            _ => return,
        };
        if r.dealer {
            match deal(&r.job, &r.params, &me, current.as_ref(), rng) {
                Ok(deals) => {
                    for (to, d) in deals {
                        Manager::send(fx, session, &to, deal_payload(&d));
                        r.sent.push((to, d));
                    }
                    debug!(key_id = %r.job.key_id, %session, "dealt to the new committee");
                    fx.push(Effect::Checkpoint("reshare-after-deal"));
                }
                Err(e) => {
                    warn!(key_id = %r.job.key_id, %session, error = %e, "cannot deal");
                    let abort = wire::SessionAbort {
                        reason: format!("dealer {me} cannot deal: {e}"),
                    };
                    for p in r.job.new_parties.iter().filter(|p| **p != me) {
                        Manager::send(fx, session, p, Payload::Abort(abort.clone()));
                    }
                    return self.fail_reshare(now, session, e, fx);
                }
            }
            if !r.receiver {
                r.state = ReshareState::Reported;
                return;
            }
        }
        let collector = match Collector::new(r.params.clone(), me) {
            Ok(c) => Box::new(c),
            Err(e) => return self.fail_reshare(now, session, e, fx),
        };
        if r.job.scheme == Scheme::Cggmp24Secp256k1 {
            r.state = ReshareState::FindingAux {
                collector,
                buffered,
            };
            fx.push(Effect::Store {
                op: StoreOp::FindAux(r.job.new_parties.clone()),
                token: Some(StoreToken::ReshareAux(session)),
            });
            return;
        }
        r.state = ReshareState::Receiving {
            collector: Some(collector),
            core: None,
            aux: AuxState::NotNeeded,
        };
        for (from, payload) in buffered {
            self.reshare_msg(now, session, from, payload, fx);
        }
    }

    /// A message of a resharing session.
    pub(super) fn reshare_msg(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        payload: Payload,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = self.reshare_mut(&session) else {
            return;
        };
        match &mut r.state {
            ReshareState::Loading { buffered } | ReshareState::FindingAux { buffered, .. } => {
                if !buffer_capped(buffered, from, payload) {
                    fx.push(Effect::Metric(MetricEvent::Dropped));
                }
                return;
            }
            ReshareState::Staging { .. } | ReshareState::Reported => {
                debug!(%session, %from, "message for a resharing past its deals ignored");
                return;
            }
            ReshareState::Receiving { .. } => {}
        }
        match payload {
            Payload::ReshareDeal(d) => self.on_deal(now, session, from, d, fx),
            Payload::ReshareAux(a) => self.on_aux_offer(now, session, from, a, fx),
            Payload::Cggmp(c) => match CggmpMsg::from_bytes(&c.msg) {
                Ok(msg) => self.on_aux_msg(session, from, msg, fx),
                Err(e) => {
                    warn!(%session, %from, error = %e, "malformed CGGMP24 message dropped");
                    fx.push(Effect::Metric(MetricEvent::Dropped));
                }
            },
            // Only a dealer aborts a resharing (it could not deal): it is to blame.
            Payload::Abort(a) => {
                let reason = format!("aborted by {from}: {}", a.reason);
                self.fail_reshare(now, session, ProtocolError::blame(&from, reason), fx);
            }
            _ => {
                warn!(%session, %from, "message of another protocol in a resharing dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
            }
        }
    }

    /// A dealer's deal at a new party.
    fn on_deal(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        d: wire::ReshareDeal,
        fx: &mut Vec<Effect>,
    ) {
        let deal = Deal {
            commitment: d.commitment,
            old_public: d.old_public,
            share: Zeroizing::new(d.share),
        };
        let Some(ReshareState::Receiving {
            collector, core, ..
        }) = self.reshare_mut(&session).map(|r| &mut r.state)
        else {
            return;
        };
        let Some(c) = collector.as_mut() else {
            debug!(%session, %from, "deal after every deal was combined dropped");
            return;
        };
        match c.add(&from, deal) {
            Err(e) => return self.fail_reshare(now, session, e, fx),
            Ok(()) if !c.is_complete() => return,
            Ok(()) => {}
        }
        let Some(c) = collector.take() else {
            return;
        };
        match c.finish() {
            Ok(out) => *core = Some(out),
            Err(e) => return self.fail_reshare(now, session, e, fx),
        }
        self.try_complete_reshare(now, session, fx);
    }

    /// Stages the new share once it is combined and, for CGGMP24, its aux info is ready.
    fn try_complete_reshare(&mut self, now: Millis, session: SessionId, fx: &mut Vec<Effect>) {
        let Some(r) = self.reshare_mut(&session) else {
            return;
        };
        let ReshareState::Receiving {
            core: core @ Some(_),
            aux: aux @ (AuxState::NotNeeded | AuxState::Ready(_)),
            ..
        } = &mut r.state
        else {
            return;
        };
        let (Some(out), aux) = (core.take(), std::mem::replace(aux, AuxState::NotNeeded)) else {
            return;
        };
        let aux = match aux {
            AuxState::Ready(a) => Some(a),
            _ => None,
        };
        match staged_record(session, &r.job, out, aux) {
            Ok((rec, ok)) => {
                r.state = ReshareState::Staging { ok };
                fx.push(Effect::Store {
                    op: StoreOp::PutStaged(rec),
                    token: Some(StoreToken::ReshareStaged(session)),
                });
            }
            Err(e) => self.fail_reshare(now, session, e, fx),
        }
    }
}

/// This dealer's deals, from its READY share of the generation the chain reshares.
fn deal<R: RngCore + CryptoRng>(
    job: &ReshareJob,
    params: &ReshareParams,
    me: &NodeId,
    current: Option<&KeyRecord>,
    rng: &mut R,
) -> Result<BTreeMap<NodeId, Deal>, ProtocolError> {
    let rec =
        current.ok_or_else(|| ProtocolError::Local(format!("no local share of {}", job.key_id)))?;
    if rec.status != ShareStatus::Ready || rec.session != job.key_session {
        return Err(ProtocolError::Local(format!(
            "local share of {} is {:?} of session {}, not READY of the chain's generation ({})",
            job.key_id, rec.status, rec.session, job.key_session
        )));
    }
    let share = rec
        .share
        .as_ref()
        .ok_or_else(|| ProtocolError::Local("READY record without share".into()))?;
    let bytes = untag_share(share, rec.scheme)?;
    reshare::deal(params, me, bytes, rng)
}

/// A deal as sent.
fn deal_payload(d: &Deal) -> Payload {
    Payload::ReshareDeal(wire::ReshareDeal {
        commitment: d.commitment.clone(),
        old_public: d.old_public.clone(),
        share: d.share.to_vec(),
    })
}

impl Manager {
    /// Sends again the deals and offers of the resharings still open `reshare_resend_ms`
    /// after they last did (see the module docs).
    pub(super) fn resend_reshares(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let every = self.cfg.reshare_resend_ms;
        for (session, s) in self.sessions.iter_mut() {
            let Session::Reshare(r) = s else {
                continue;
            };
            let past_deals = matches!(
                r.state,
                ReshareState::Receiving { .. } | ReshareState::Reported
            );
            if !past_deals || r.resends >= MAX_RESENDS || now.saturating_sub(r.last_sent) < every {
                continue;
            }
            r.resends = r.resends.saturating_add(1);
            r.last_sent = now;
            debug!(%session, resend = r.resends, "resharing still open: sending deals and offer again");
            // To itself too: its own deal and offer go the same way as the others'.
            for (to, d) in &r.sent {
                Manager::send(fx, *session, to, deal_payload(d));
            }
            if let Some(offer) = &r.offer {
                for p in &r.job.new_parties {
                    Manager::send(fx, *session, p, Payload::ReshareAux(offer.clone()));
                }
            }
        }
    }
}
