//! `SignResult`: a signer reports its signing outcome. The first signature that verifies under
//! the key ends the request DONE, whichever attempt it comes from; a failure report of the
//! current attempt counts towards the next attempt (`sign_attempt`), and one of the attempt
//! before it, come late, still names who was silent there (evidence is read only in a report
//! of the current attempt); reports of a finished request are accepted as no-ops (every signer
//! reports, the first valid one wins).

use seqmpc_module::evidence;
use seqmpc_module::job::Job;
use seqmpc_proto::tx::Outcome;
use seqmpc_proto::{NodeId, RequestId, SessionId};

use super::blame::{check_culprits, proven_blame};
use super::{ev, sign_attempt, Exec, Handler, Signer, TxError};
use crate::chain::entries::{DeadlineItem, ProvenBlame, SignEntry, SignStatus};
use crate::chain::state::ChainState;
use crate::chain::verify::{split_recovery_id, verify_signature};

/// The message.
pub(crate) struct SignResult<'a> {
    pub request_id: &'a RequestId,
    pub session: &'a SessionId,
    pub outcome: &'a Outcome<Vec<u8>>,
    pub signing_package: &'a [u8],
}

impl Handler for SignResult<'_> {
    /// The reporting signer, the blames its report proves (none for a redundant or a late
    /// report), and whether it is a late report of the attempt before the current one.
    type Checked = (NodeId, Vec<ProvenBlame>, bool);

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Self::Checked, TxError> {
        let node = signer.require_node("SignResult")?;
        let (request_id, session) = (self.request_id, self.session);
        let req = state.sign_requests().get(request_id).ok_or_else(|| {
            TxError::NotFound(format!("sign request {request_id} does not exist"))
        })?;
        // A failure report of the attempt before the current one, from one of its signers.
        let previous = req
            .ended_attempts
            .last()
            .filter(|p| &p.session == session && p.signers.contains(node));
        if let (Some(previous), Outcome::Failed { .. }) = (previous, self.outcome) {
            check_culprits(self.outcome, &previous.signers, "the signers")?;
            return Ok((node.clone(), Vec::new(), req.status == SignStatus::Pending));
        }
        // A signature from an earlier attempt is as good as any: it is verified below against
        // the key, and any party of the key may bring it. A failure report counts only for
        // the current attempt, or late for the one before.
        let earlier_signature = &req.session != session
            && matches!(self.outcome, Outcome::Ok(_))
            && state
                .keys()
                .get(&req.key_id)
                .is_some_and(|k| k.parties.contains(node));
        if &req.session != session && !earlier_signature {
            return Err(TxError::Invalid(format!(
                "result for session {session}, but request {request_id} is session {}",
                req.session
            )));
        }
        if !req.signers.contains(node) && !earlier_signature {
            return Err(TxError::Unauthorized(format!(
                "node {node} is not a signer of request {request_id}"
            )));
        }
        // A redundant report for a request already finished is a no-op: its signature and
        // its evidence are not looked at.
        let finished = req.status != SignStatus::Pending;
        if !finished {
            if let Outcome::Ok(sig) = self.outcome {
                let key = state.keys().get(&req.key_id).ok_or_else(|| {
                    TxError::NotFound(format!("key {} does not exist", req.key_id))
                })?;
                let message =
                    hex::decode(&req.message).map_err(|e| TxError::Invalid(e.to_string()))?;
                verify_signature(key, &message, req.prehashed, sig)?;
            }
        }
        check_culprits(self.outcome, &req.signers, "the signers")?;
        if finished {
            return Ok((node.clone(), Vec::new(), false));
        }
        let ctx = || sign_context(state, req, self.signing_package);
        let proven = proven_blame(state, node, ctx, self.outcome)?;
        Ok((node.clone(), proven, false))
    }

    fn execute(
        &self,
        state: &mut ChainState,
        (node, proven, late): Self::Checked,
        cx: &mut Exec<'_>,
    ) {
        let (request_id, outcome, height) = (self.request_id, self.outcome, cx.height);
        if late {
            if let Outcome::Failed {
                error, culprits, ..
            } = outcome
            {
                let report = sign_attempt::Failure {
                    node: &node,
                    culprits,
                    proven: &[],
                    reason: format!("{node} (late, of the attempt before): {error}"),
                };
                sign_attempt::on_late_failure(state, request_id, report, height, cx.fx);
            }
            return;
        }
        let Some(req) = state.sign_mut(request_id) else {
            return;
        };
        if req.status != SignStatus::Pending {
            return; // redundant report of a finished request: no-op
        }
        match outcome {
            Outcome::Ok(sig) => {
                req.status = SignStatus::Done;
                // ECDSA results are r || s || v (checked in `check`): keep r || s as the
                // signature and v apart.
                let (shown, recovery_id) = split_recovery_id(sig);
                req.signature = Some(hex::encode(shown));
                req.recovery_id = recovery_id;
                req.done_height = Some(height);
                req.submitted_by = Some(node.clone());
                cx.fx.events.push(ev(
                    "sign_done",
                    vec![
                        ("request_id", request_id.to_string()),
                        ("signature", hex::encode(sig)),
                    ],
                ));
            }
            Outcome::Failed {
                error, culprits, ..
            } => {
                req.proven_blame.extend(proven.iter().cloned());
                let guilty: Vec<NodeId> = proven.iter().map(|b| b.culprit.clone()).collect();
                let report = sign_attempt::Failure {
                    node: &node,
                    culprits,
                    proven: &guilty,
                    reason: format!("{node}: {error}"),
                };
                state.count_proven_blames(&proven);
                sign_attempt::on_failure(state, request_id, report, height, cx.fx);
                return;
            }
        }
        let item = (req.deadline_height, DeadlineItem::Sign(request_id.clone()));
        let attempt = (req.attempt_deadline, req.attempt);
        state.remove_deadline(item.0, item.1);
        let attempt_item = DeadlineItem::SignAttempt(request_id.clone(), attempt.1);
        state.remove_deadline(attempt.0, attempt_item);
        state.count_proven_blames(&proven);
        super::sign::schedule_prune(state, request_id, height);
        let request_id = request_id.clone();
        cx.fx.jobs.push(Job::SignEnded { request_id });
    }
}

/// A FROST signing as the chain knows it, for the evidence of a failure report: the key's
/// public key package counts only while the key is still of the request's generation.
fn sign_context(
    state: &ChainState,
    req: &SignEntry,
    signing_package: &[u8],
) -> Result<evidence::Context, String> {
    let key = state
        .keys()
        .get(&req.key_id)
        .ok_or_else(|| format!("no key {}", req.key_id))?;
    let message = hex::decode(&req.message).map_err(|e| format!("stored message: {e}"))?;
    let public_key_package = key
        .public_key_package
        .as_deref()
        .and_then(|p| hex::decode(p).ok())
        .unwrap_or_default();
    Ok(evidence::Context::Sign(evidence::SignContext {
        session: req.session,
        scheme: key.scheme,
        parties: key.parties.clone(),
        signers: req.signers.clone(),
        message,
        generation: (key.generation == req.generation).then_some(key.generation),
        public_key_package,
        signing_package: signing_package.to_vec(),
    }))
}
