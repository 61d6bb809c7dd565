//! The keygen handshake: a party's PENDING record for the coordinator's prepare, its ready
//! answer (with its CGGMP24 aux-info offer), and the coordinator's count of the answers.

use super::*;

impl Manager {
    /// Phase 1 at a party: check the local store (seed 001 semantics) and answer.
    pub(super) fn on_prepare(
        &mut self,
        session: SessionId,
        from: NodeId,
        p: wire::KeyGenPrepare,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if from != k.coordinator {
            warn!(%session, %from, "KeyGenPrepare from a non-coordinator dropped");
            return;
        }
        let matches = p.key_id == k.key_id.as_str()
            && p.scheme == k.scheme.as_str()
            && p.threshold == k.threshold
            && p.parties
                .iter()
                .map(String::as_str)
                .eq(k.parties.iter().map(|n| n.as_str()));
        if !matches {
            let coordinator = k.coordinator.clone();
            let refused =
                ReadyAnswer::Refused("KeyGenPrepare does not match the committed request".into());
            return Self::answer_ready(fx, session, &coordinator, refused, None);
        }
        if !matches!(k.state, KeygenState::AwaitPrepare { .. }) {
            return; // a duplicate prepare
        }
        let KeygenState::AwaitPrepare { buffered } =
            std::mem::replace(&mut k.state, KeygenState::Transition)
        else {
            return;
        };
        k.state = KeygenState::Preparing { buffered };
        fx.push(Effect::Store {
            op: StoreOp::InsertIfAbsent(k.record(session, ShareStatus::Pending)),
            token: Some(StoreToken::Prepared(session)),
        });
    }

    /// The PENDING insert answered: decide the Ready answer.
    pub(in crate::session) fn keygen_prepared(
        &mut self,
        _now: Millis,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        let me = self.cfg.me.clone();
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        let answer = match reply {
            Ok(StoreReply::Record(None)) => ReadyAnswer::Fresh,
            Ok(StoreReply::Record(Some(existing))) => match existing.status {
                ShareStatus::Ready if existing.scheme != k.scheme => ReadyAnswer::Refused(format!(
                    "{me}: key {} is READY here as a {} key, not {}",
                    existing.key_id, existing.scheme, k.scheme
                )),
                ShareStatus::Ready => ReadyAnswer::Existing(existing.public_key.clone()),
                ShareStatus::Pending if existing.session == session => ReadyAnswer::Fresh,
                ShareStatus::Pending => ReadyAnswer::Refused(format!(
                    "{me}: key {} is PENDING in another keygen session ({})",
                    existing.key_id, existing.session
                )),
                // An earlier attempt failed: this attempt replaces it.
                ShareStatus::Error => {
                    fx.push(Effect::Store {
                        op: StoreOp::Put(k.record(session, ShareStatus::Pending)),
                        token: Some(StoreToken::ReplacedError(session)),
                    });
                    return;
                }
            },
            Ok(other) => ReadyAnswer::Refused(format!("{me}: key store answered {other:?}")),
            Err(e) => ReadyAnswer::Refused(format!("{me}: key store: {e}")),
        };
        self.keygen_answer(session, answer, fx);
    }

    /// The PENDING record replaced an ERROR one.
    pub(in crate::session) fn keygen_replaced(
        &mut self,
        session: SessionId,
        reply: Result<StoreReply, String>,
        fx: &mut Vec<Effect>,
    ) {
        let answer = match reply {
            Ok(_) => ReadyAnswer::Fresh,
            Err(e) => ReadyAnswer::Refused(format!("{}: key store: {e}", self.cfg.me)),
        };
        self.keygen_answer(session, answer, fx);
    }

    pub(super) fn keygen_answer(
        &mut self,
        session: SessionId,
        answer: ReadyAnswer,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if let (ReadyAnswer::Fresh, Some(_)) = (&answer, &k.cggmp) {
            // CGGMP24: offer this committee's aux info for reuse, if this node holds some.
            fx.push(Effect::Store {
                op: StoreOp::FindAux(k.parties.clone()),
                token: Some(StoreToken::KeygenAux(session)),
            });
            return;
        }
        self.keygen_answered(session, answer, fx);
    }

    /// Answers the coordinator's KeyGenPrepare.
    pub(super) fn keygen_answered(
        &mut self,
        session: SessionId,
        answer: ReadyAnswer,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        let KeygenState::Preparing { buffered } =
            std::mem::replace(&mut k.state, KeygenState::Transition)
        else {
            return;
        };
        k.state = KeygenState::AwaitStart {
            existing: match &answer {
                ReadyAnswer::Existing(pk) => Some(pk.clone()),
                _ => None,
            },
            buffered,
        };
        fx.push(Effect::Checkpoint("keygen-after-pending"));
        Self::answer_ready(fx, session, &k.coordinator, answer, k.cggmp.as_ref());
    }

    pub(super) fn answer_ready(
        fx: &mut Vec<Effect>,
        session: SessionId,
        to: &NodeId,
        a: ReadyAnswer,
        cggmp: Option<&cggmp::CggmpKeygen>,
    ) {
        let ready = match a {
            ReadyAnswer::Fresh => cggmp.map(|c| c.ready()).unwrap_or_default(),
            ReadyAnswer::Existing(pk) => wire::KeyGenReady {
                existing_public_key: pk,
                ..Default::default()
            },
            ReadyAnswer::Refused(error) => wire::KeyGenReady {
                error,
                ..Default::default()
            },
        };
        Self::send(fx, session, to, Payload::KeygenReady(ready));
    }

    /// Phase 2 at the coordinator: once every party answered, start or abort.
    pub(super) fn on_ready(
        &mut self,
        now: Millis,
        session: SessionId,
        from: NodeId,
        r: wire::KeyGenReady,
        fx: &mut Vec<Effect>,
    ) {
        let Some(k) = self.keygen_mut(&session) else {
            return;
        };
        if k.cggmp.is_some() {
            return self.cggmp_on_ready(now, session, from, r, fx);
        }
        let parties = k.parties.clone();
        let Some(answers) = k.answers.as_mut() else {
            warn!(%session, %from, "KeyGenReady at a non-coordinator dropped");
            return;
        };
        answers.entry(from).or_insert(ReadyAnswer::from_wire(r));
        if answers.len() < parties.len() {
            return;
        }
        let answers = std::mem::take(answers);
        let abort = why_not_start(&answers, parties.len());
        let payload = match abort {
            Some(reason) => Payload::Abort(wire::SessionAbort { reason }),
            None => Payload::KeygenStart(wire::KeyGenStart { reuse_aux: false }),
        };
        for p in &parties {
            Self::send(fx, session, p, payload.clone());
        }
    }
}
