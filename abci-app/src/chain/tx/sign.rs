//! `KeySign`: an account with the `sign` role requests a signature with a READY key; the chain
//! chooses the signers and starts a signing session, which ends in a `SignResult` or at its
//! deadline.

use seqmpc_module::job::{Job, KeyVersion};
use seqmpc_proto::{KeyId, RequestId, Scheme, SessionId};

use super::session::session_deadline;
use super::sign_attempt::attempt_deadline;
use super::{ev, Effects, Exec, Handler, Signer, TxError};
use crate::chain::committee::choose_signers;
use crate::chain::entries::{DeadlineItem, KeyStatus, SignEntry, SignStatus};
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct KeySign<'a> {
    pub key_id: &'a KeyId,
    pub request_id: &'a RequestId,
    pub message: &'a Vec<u8>,
    pub prehashed: bool,
}

impl Handler for KeySign<'_> {
    type Checked = ();

    fn check(&self, state: &ChainState, signer: &Signer<'_>, _height: u64) -> Result<(), TxError> {
        signer.require_role(Role::Sign, "request signatures")?;
        let (key_id, request_id, message) = (self.key_id, self.request_id, self.message);
        let key = state
            .keys()
            .get(key_id)
            .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
        signer.require_key_user(key, "sign with")?;
        if key.status != KeyStatus::Ready {
            let why = match key.status {
                KeyStatus::Pending => "its keygen is still PENDING",
                KeyStatus::Error => "its keygen ended in ERROR",
                KeyStatus::Deleting | KeyStatus::Deleted => "it is deleted",
                KeyStatus::Ready => "",
            };
            return Err(TxError::Invalid(format!("key {key_id} cannot sign: {why}")));
        }
        if self.prehashed && key.scheme != Scheme::Cggmp24Secp256k1 {
            return Err(TxError::Invalid(format!(
                "key {key_id} is a {} key: --prehashed applies to cggmp24-secp256k1 (ECDSA) only",
                key.scheme
            )));
        }
        if message.len() > state.limits.max_message_bytes as usize {
            return Err(TxError::Invalid(format!(
                "message of {} bytes exceeds the limit of {}",
                message.len(),
                state.limits.max_message_bytes
            )));
        }
        if state.sign_requests().contains_key(request_id) {
            return Err(TxError::Conflict(format!(
                "request id {request_id} is already used (a finished request's id is free \
                 again once it leaves the state, genesis sign_retention_blocks after it ended)"
            )));
        }
        Ok(())
    }

    fn execute(&self, state: &mut ChainState, _checked: (), cx: &mut Exec<'_>) {
        let (key_id, request_id, height) = (self.key_id, self.request_id, cx.height);
        let Some(key) = state.keys().get(key_id) else {
            return;
        };
        let scheme = key.scheme;
        let key_version = KeyVersion {
            generation: key.generation,
            session: key.session,
        };
        let deadline = session_deadline(state, scheme, false, height);
        let attempt_deadline = attempt_deadline(state, scheme, height, deadline);
        let signers = choose_signers(
            &key.parties,
            key.threshold,
            key_id,
            request_id,
            &cx.fx.block_hash,
            |n| state.is_live(n, height),
        );
        let session = SessionId::derive(
            "sign",
            &state.chain_id,
            height,
            cx.tx_hash,
            request_id.as_str(),
            0,
        );
        state.put_sign(SignEntry {
            request_id: request_id.clone(),
            key_id: key_id.clone(),
            message: hex::encode(self.message),
            prehashed: self.prehashed,
            status: SignStatus::Pending,
            signature: None,
            recovery_id: None,
            error: None,
            culprits: Vec::new(),
            signers: signers.clone(),
            session,
            requested_height: height,
            deadline_height: deadline,
            done_height: None,
            submitted_by: None,
            generation: key.generation,
            proven_blame: Vec::new(),
            attempt: 0,
            attempt_deadline,
            excluded: Vec::new(),
            claims: Default::default(),
            ended_attempts: Vec::new(),
        });
        state.add_deadline(deadline, DeadlineItem::Sign(request_id.clone()));
        if attempt_deadline < deadline {
            let item = DeadlineItem::SignAttempt(request_id.clone(), 0);
            state.add_deadline(attempt_deadline, item);
        }
        cx.fx.events.push(ev(
            "sign_requested",
            vec![
                ("request_id", request_id.to_string()),
                ("key_id", key_id.to_string()),
                ("session", session.to_string()),
                ("scheme", scheme.to_string()),
            ],
        ));
        cx.fx.jobs.push(Job::Sign {
            session,
            request_id: request_id.clone(),
            key_id: key_id.clone(),
            message: self.message.clone(),
            prehashed: self.prehashed,
            scheme,
            signers,
            key_version,
            height,
            deadline_height: attempt_deadline,
            block_time_ms: cx.fx.block_time_ms,
        });
    }
}

/// The deadline of sign request `request_id` passed at `height`: a request still PENDING ends
/// in ERROR.
pub(crate) fn expire(state: &mut ChainState, request_id: RequestId, height: u64, fx: &mut Effects) {
    let Some(req) = state.sign_mut(&request_id) else {
        return;
    };
    if req.status != SignStatus::Pending {
        return;
    }
    req.status = SignStatus::Error;
    req.error = Some(format!("deadline passed at height {height}"));
    schedule_prune(state, &request_id, height);
    ended_in_error(fx, request_id);
}

/// Tells the world that sign request `request_id` ended ERROR: the `sign_failed` event, and
/// the job that stops its signers' backups and sessions.
pub(crate) fn ended_in_error(fx: &mut Effects, request_id: RequestId) {
    fx.events.push(ev(
        "sign_failed",
        vec![("request_id", request_id.to_string())],
    ));
    fx.jobs.push(Job::SignEnded { request_id });
}

/// A sign request ended (DONE or ERROR) at `height`: it leaves the state
/// `sign_retention_blocks` later (never with 0).
pub(crate) fn schedule_prune(state: &mut ChainState, request_id: &RequestId, height: u64) {
    let keep = state.limits.sign_retention_blocks;
    if keep > 0 {
        let at = height.saturating_add(keep);
        state.add_deadline(at, DeadlineItem::SignPrune(request_id.clone()));
    }
}

/// The retention of a finished sign request is over: it leaves the state (only a finished
/// one: the request id can be used again only after this prune).
pub(crate) fn prune(state: &mut ChainState, request_id: &RequestId) {
    if state
        .sign_requests()
        .get(request_id)
        .is_some_and(|r| r.status != SignStatus::Pending)
    {
        state.remove_sign(request_id);
    }
}
