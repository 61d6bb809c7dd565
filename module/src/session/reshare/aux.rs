//! A CGGMP24 resharing's aux info for the new committee: each new party offers the aux info it
//! holds for it; the new parties reuse it when every offer is the same, and otherwise generate
//! it on a runtime worker from a reserved safe-prime set once every offer says its sender holds
//! one, unless the chain's deadline is nearer than `Config::aux_gen_ms` (as a keygen's
//! coordinator decides): the sets would be spent on a resharing that the deadline ends anyway.
//! Each new party decides on its own from the same offers and the same block times; one that
//! sees the last offer just across that line from the others spends its set alone, and the
//! others keep theirs.

use super::*;

impl Manager {
    /// A CGGMP24 new party knows what aux info it holds for the new committee: offer it.
    pub(in crate::session) fn reshare_aux_found(
        &mut self,
        now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        let mine = match reply {
            Ok(StoreReply::Aux(mine)) => mine,
            Ok(other) => {
                warn!(%session, reply = ?other, "unexpected store reply; offering no aux info");
                None
            }
            Err(e) => {
                warn!(%session, error = %e, "cannot read reusable aux info; offering none");
                None
            }
        };
        let Some(r) = self.reshare_mut(&session) else {
            return;
        };
        let ReshareState::FindingAux {
            collector,
            buffered,
        } = std::mem::replace(
            &mut r.state,
            ReshareState::Loading {
                buffered: Vec::new(),
            },
        )
        else {
            return;
        };
        if mine.is_none() {
            // Aux info will be generated: this party needs a set whatever the others hold.
            r.primes = PrimeSet::Asked;
            fx.push(Effect::ReservePrimes(session));
        }
        let offer = wire::ReshareAux {
            fingerprint: mine
                .as_ref()
                .map(|o| o.fingerprint.to_vec())
                .unwrap_or_default(),
            has_prime_set: r.primes == PrimeSet::Held,
        };
        for p in &r.job.new_parties {
            Manager::send(fx, session, p, Payload::ReshareAux(offer.clone()));
        }
        r.offer = Some(offer);
        r.state = ReshareState::Receiving {
            collector: Some(collector),
            core: None,
            aux: AuxState::Offering {
                mine,
                offers: BTreeMap::new(),
                buffered: Vec::new(),
            },
        };
        for (from, payload) in buffered {
            self.reshare_msg(now, session, from, payload, fx);
        }
    }

    /// A new party's aux-info offer (CGGMP24). Once every new party offered: reuse when all
    /// offered the same, else generate together.
    pub(super) fn on_aux_offer(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        a: wire::ReshareAux,
        fx: &mut Vec<Effect>,
    ) {
        let (blocks, aux_gen_ms) = (self.blocks, self.cfg.aux_gen_ms);
        let Some(r) = self.reshare_mut(&session) else {
            return;
        };
        if !r.job.new_parties.contains(&from) {
            let e = ProtocolError::blame(
                &from,
                "aux-info offer from a node outside the new committee",
            );
            return self.fail_reshare(now, session, e, fx);
        }
        let n = r.job.new_parties.len();
        let parties = r.job.new_parties.clone();
        let too_late = blocks
            .time_of(r.job.deadline_height)
            .is_some_and(|deadline| now.saturating_add(aux_gen_ms) > deadline);
        let ReshareState::Receiving { aux, .. } = &mut r.state else {
            return;
        };
        let AuxState::Offering { offers, .. } = aux else {
            return; // FROST, or already decided
        };
        match offers.get_mut(&from) {
            // The same offer again, or again once the party holds a set.
            Some((prev, held)) if *prev == a.fingerprint => *held |= a.has_prime_set,
            Some(_) => {
                let e = ProtocolError::blame(&from, "two different aux-info offers (equivocation)");
                return self.fail_reshare(now, session, e, fx);
            }
            None => {
                offers.insert(from, (a.fingerprint, a.has_prime_set));
            }
        }
        if offers.len() < n {
            return;
        }
        let AuxState::Offering { mine, offers, .. } = aux else {
            return;
        };
        let reuse = mine
            .as_ref()
            .filter(|m| offers.values().all(|(f, _)| f.as_slice() == m.fingerprint))
            .map(|m| m.share.clone());
        if let Some(share) = reuse {
            info!(%session, "reshare: every new party holds the committee's aux info; reused");
            *aux = AuxState::Ready(share);
            return self.try_complete_reshare(now, session, fx);
        }
        if r.primes == PrimeSet::NotAsked {
            // The offers differ: aux info is generated, and this party needs a set too.
            r.primes = PrimeSet::Asked;
            fx.push(Effect::ReservePrimes(session));
        }
        if !offers.values().all(|(_, held)| *held) {
            return; // a party holds no set yet: nobody spends one (it offers again once it does)
        }
        if too_late {
            info!(%session, "reshare: too close to its chain deadline to generate aux info: not started");
            return;
        }
        let AuxState::Offering { buffered, .. } = std::mem::replace(aux, AuxState::Generating)
        else {
            return;
        };
        info!(%session, "reshare: generating aux info for the new committee");
        fx.push(Effect::StartWorker {
            session,
            task: WorkerTask::Aux { parties },
        });
        for (from, msg) in buffered {
            fx.push(Effect::ToWorker { session, from, msg });
        }
    }

    /// A CGGMP24 message of the new committee's aux-info run.
    pub(super) fn on_aux_msg(
        &mut self,
        session: SessionId,
        from: NodeId,
        msg: CggmpMsg,
        fx: &mut Vec<Effect>,
    ) {
        let Some(ReshareState::Receiving { aux, .. }) =
            self.reshare_mut(&session).map(|r| &mut r.state)
        else {
            return;
        };
        match aux {
            AuxState::Offering { buffered, .. } => {
                if !buffer_capped(buffered, from, msg) {
                    fx.push(Effect::Metric(MetricEvent::Dropped));
                }
            }
            AuxState::Generating => fx.push(Effect::ToWorker { session, from, msg }),
            AuxState::NotNeeded | AuxState::Ready(_) => {
                warn!(%session, %from, "CGGMP24 message in a resharing without aux run dropped");
                fx.push(Effect::Metric(MetricEvent::Dropped));
            }
        }
    }

    /// The new committee's aux-info run ended.
    /// A safe-prime set is reserved for this resharing's aux info here now: offer again,
    /// saying so.
    pub(in crate::session) fn reshare_primes_reserved(
        &mut self,
        session: SessionId,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = self.reshare_mut(&session) else {
            return;
        };
        if r.primes == PrimeSet::Held {
            return;
        }
        r.primes = PrimeSet::Held;
        let Some(offer) = r.offer.as_mut() else {
            return; // not offered yet: the offer will say so
        };
        offer.has_prime_set = true;
        let offer = offer.clone();
        info!(%session, "reshare: a safe-prime set is reserved for the new committee's aux info");
        for p in &r.job.new_parties {
            Manager::send(fx, session, p, Payload::ReshareAux(offer.clone()));
        }
    }

    pub(in crate::session) fn reshare_worker_done(
        &mut self,
        now: Millis,
        session: SessionId,
        output: WorkerOutput,
        fx: &mut Vec<Effect>,
    ) {
        let aux = match output {
            WorkerOutput::Aux(Ok(aux)) => aux,
            WorkerOutput::Aux(Err(e)) => return self.fail_reshare(now, session, e, fx),
            other
            @ (WorkerOutput::Keygen(_) | WorkerOutput::Sign(_) | WorkerOutput::Presign(_)) => {
                let e = ProtocolError::Bug(format!("a resharing's worker ended with {other:?}"));
                return self.fail_reshare(now, session, e, fx);
            }
        };
        match self.reshare_mut(&session).map(|r| &mut r.state) {
            Some(ReshareState::Receiving {
                aux: state @ AuxState::Generating,
                ..
            }) => *state = AuxState::Ready(Arc::new(aux)),
            _ => {
                debug!(%session, "aux info for no resharing waiting for it ignored");
                return;
            }
        }
        self.try_complete_reshare(now, session, fx);
    }
}
