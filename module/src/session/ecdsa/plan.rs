//! The plan of a CGGMP24 signing of a full message: the aggregator names a pooled
//! presignature of the signers' subset (or none), every signer takes that one out of its pool
//! (each is used once), and a signer that lacks it makes every signer fall back to the full
//! protocol, emptying that subset's pools, which no longer match. See `super` for the whole
//! signing.

use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{NodeId, SessionId};
use tracing::{debug, info, warn};

use super::{send_cggmp, Ecdsa, EcdsaState};
use crate::protocol::cggmp::{OnlineSigning, Phase, SingleUsePresignature};
use crate::session::presign::PresignId;
use crate::session::{Effect, Manager, Millis, Session};

impl Manager {
    /// The aggregator's plan: a pooled presignature of the subset, or none.
    pub(super) fn plan(
        &mut self,
        now: Millis,
        session: SessionId,
        generation: SessionId,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let (key_id, signers) = (s.key_id.clone(), s.signers.clone());
        let picked = self.pools.take_oldest(&key_id, &signers, &generation);
        let plan = wire::SignPlan {
            presignature_id: picked
                .as_ref()
                .map(|(id, _)| id.to_vec())
                .unwrap_or_default(),
        };
        debug!(%key_id, %session, presigned = picked.is_some(), "sign plan");
        for p in signers.iter().filter(|p| **p != me) {
            Self::send(fx, session, p, Payload::SignPlan(plan.clone()));
        }
        match picked {
            Some((_, presig)) => self.go_online(now, session, presig, fx),
            None => self.go_full(session, fx),
        }
    }

    /// A sign plan from a signer of the session (the share is loaded).
    pub(super) fn on_sign_plan(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        plan: wire::SignPlan,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let from_aggregator = s.signers.first() == Some(&from);
        let id: Option<PresignId> = if plan.presignature_id.is_empty() {
            None
        } else {
            match <PresignId>::try_from(plan.presignature_id.as_slice()) {
                Ok(id) if from_aggregator => Some(id),
                _ => {
                    warn!(%session, %from, "malformed sign plan dropped");
                    return;
                }
            }
        };
        let (key_id, signers) = (s.key_id.clone(), s.signers.clone());
        let Some(generation) = s.generation else {
            return;
        };
        match (&mut s.state, from_aggregator, id) {
            // The aggregator's plan.
            (EcdsaState::AwaitPlan { waiting_for, .. }, true, Some(id)) => {
                if waiting_for.is_some() {
                    return;
                }
                if let Some(presig) = self.pools.take(&key_id, &signers, &id, &generation) {
                    return self.go_online(now, session, presig, fx);
                }
                // Finishing here right now: wait for it.
                if matches!(self.sessions.get(&SessionId(id)), Some(Session::Presign(_))) {
                    if let Some(Ecdsa {
                        state: EcdsaState::AwaitPlan { waiting_for, .. },
                        ..
                    }) = self.ecdsa_mut(&session)
                    {
                        *waiting_for = Some(id);
                    }
                    return;
                }
                // Lost (this node restarted): everyone falls back, and the subset's pools,
                // which no longer match, are emptied.
                warn!(%session, %key_id, "named presignature not held here; falling back to the full protocol");
                self.plan_fallback(session, fx);
            }
            (EcdsaState::AwaitPlan { .. }, true, None) => self.go_full(session, fx),
            // Another signer lacks the presignature.
            (EcdsaState::AwaitPlan { .. } | EcdsaState::Online { .. }, false, None) => {
                let n = self.pools.purge_subset(&key_id, &signers);
                info!(%session, %from, %key_id, purged = n, "a signer lacks the presignature: full protocol, subset pool emptied");
                self.go_full(session, fx)
            }
            // Already on the full protocol: the named presignature is of no use any more.
            (EcdsaState::Full, true, Some(id)) => {
                drop(self.pools.take(&key_id, &signers, &id, &generation));
            }
            _ => debug!(%session, %from, "sign plan ignored"),
        }
    }

    /// Falls back to the full protocol: empties the subset's pool (it no longer matches the
    /// other signers') and tells the other signers to fall back too.
    pub(in crate::session) fn plan_fallback(&mut self, session: SessionId, fx: &mut Vec<Effect>) {
        let me = self.cfg.me.clone();
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let (key_id, signers) = (s.key_id.clone(), s.signers.clone());
        self.pools.purge_subset(&key_id, &signers);
        for p in signers.iter().filter(|p| **p != me) {
            Self::send(fx, session, p, Payload::SignPlan(wire::SignPlan::default()));
        }
        self.go_full(session, fx)
    }

    /// Issues this signer's partial signature from `presig` (consumed) and steps the online
    /// engine with any buffered partials.
    pub(super) fn go_online(
        &mut self,
        now: Millis,
        session: SessionId,
        presig: SingleUsePresignature,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.ecdsa_mut(&session) else {
            return;
        };
        let EcdsaState::AwaitPlan {
            input,
            message,
            buffered,
            ..
        } = std::mem::replace(&mut s.state, EcdsaState::Transition)
        else {
            return;
        };
        if presig.signers() != s.signers.as_slice() {
            s.state = EcdsaState::AwaitPlan {
                input,
                message,
                waiting_for: None,
                buffered,
            };
            return self.plan_fallback(session, fx);
        }
        let (engine, out) = match OnlineSigning::start(presig, &message) {
            Ok(x) => x,
            Err(e) => {
                let request_id = s.request_id.clone();
                return self.report_sign_failure(now, session, request_id, e, None, fx);
            }
        };
        let (online, rest): (Vec<_>, Vec<_>) = buffered
            .into_iter()
            .partition(|(_, m)| m.phase() == Phase::Online);
        s.state = EcdsaState::Online {
            input,
            engine,
            buffered: rest,
        };
        s.presigned = true;
        fx.push(Effect::Checkpoint("presign-after-take"));
        send_cggmp(fx, session, out);
        for (from, msg) in online {
            self.on_online(now, session, from, msg, fx);
        }
    }

    /// Sign plans waiting for presignature `id` to finish here.
    pub(in crate::session) fn plans_waiting_for(&self, id: &PresignId) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| {
                matches!(s, Session::Ecdsa(x) if matches!(&x.state,
                    EcdsaState::AwaitPlan { waiting_for: Some(w), .. } if w == id))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Presignature `id` finished here: the plans waiting for it go online (or fall back).
    pub(in crate::session) fn resume_waiting_plans(
        &mut self,
        now: Millis,
        id: &PresignId,
        fx: &mut Vec<Effect>,
    ) {
        for session in self.plans_waiting_for(id) {
            let Some(s) = self.ecdsa_mut(&session) else {
                continue;
            };
            let (key_id, signers, generation) = (s.key_id.clone(), s.signers.clone(), s.generation);
            let presig = generation.and_then(|g| self.pools.take(&key_id, &signers, id, &g));
            match presig {
                Some(presig) => self.go_online(now, session, presig, fx),
                None => self.plan_fallback(session, fx),
            }
        }
    }
}
