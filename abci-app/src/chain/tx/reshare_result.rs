//! `ReshareResult`: a new party of a PENDING resharing reports its outcome. The key moves to
//! the new committee and generation when every new party reported the key's own public key
//! and the same transcript; the resharing ends in ERROR on the first failure or disagreement.

use seqmpc_module::evidence;
use seqmpc_module::job::Job;
use seqmpc_module::protocol::reshare::ReshareParams;
use seqmpc_proto::tx::{KeyGenOk, Outcome};
use seqmpc_proto::{KeyId, NodeId, SessionId};

use super::blame::{check_culprits, proven_blame};
use super::keygen_result::{keygen_report, public_key_package, reported_package};
use super::reshare::{fail_reshare, schedule_refresh};
use super::{ev, Exec, Handler, Signer, TxError};
use crate::chain::entries::{DeadlineItem, KeygenReport, ProvenBlame, ReshareEntry, ReshareStatus};
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct ReshareResult<'a> {
    pub key_id: &'a KeyId,
    pub session: &'a SessionId,
    pub outcome: &'a Outcome<KeyGenOk>,
}

impl Handler for ReshareResult<'_> {
    /// The reporting node and the blames its report proves.
    type Checked = (NodeId, Vec<ProvenBlame>);

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Self::Checked, TxError> {
        let node = signer.require_node("ReshareResult")?;
        let (key_id, session) = (self.key_id, self.session);
        let key = state
            .keys()
            .get(key_id)
            .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
        let r = key
            .reshare
            .as_ref()
            .filter(|r| &r.session == session)
            .ok_or_else(|| {
                TxError::Invalid(format!(
                    "result for session {session}, but key {key_id} has no resharing of that session"
                ))
            })?;
        if r.status != ReshareStatus::Pending {
            return Err(TxError::Conflict(format!(
                "resharing {session} of key {key_id} is not PENDING (status {:?})",
                r.status
            )));
        }
        if !r.parties.contains(node) {
            return Err(TxError::Unauthorized(format!(
                "node {node} is not a new party of the resharing of {key_id}"
            )));
        }
        if r.reports.contains_key(node) {
            return Err(TxError::Conflict(format!(
                "node {node} already reported for the resharing of {key_id}"
            )));
        }
        let involved: Vec<NodeId> = r.dealers.iter().chain(&r.parties).cloned().collect();
        check_culprits(self.outcome, &involved, "the dealers and new parties")?;
        let ctx = || reshare_context(state, key_id, r);
        let proven = proven_blame(state, node, ctx, self.outcome)?;
        Ok((node.clone(), proven))
    }

    fn execute(&self, state: &mut ChainState, (node, proven): Self::Checked, cx: &mut Exec<'_>) {
        let (key_id, outcome, height, fx) = (self.key_id, self.outcome, cx.height, &mut *cx.fx);
        let node = &node;
        let Some(key) = state.keys().get(key_id) else {
            return;
        };
        let Some(r) = key.reshare.as_ref() else {
            return;
        };
        let report = keygen_report(outcome);
        let mut reports = r.reports.clone();
        reports.insert(node.clone(), report.clone());
        let verdict: Option<Result<(), (String, Vec<NodeId>)>> = match &report {
            KeygenReport::Failed { error, culprits } => {
                Some(Err((format!("{node} reported: {error}"), culprits.clone())))
            }
            KeygenReport::Ok { .. } if reports.len() < r.parties.len() => None,
            KeygenReport::Ok { public_key, .. } => {
                let agree = reports.values().all(|x| x == &report);
                if !agree {
                    Some(Err((
                        "new parties disagree on the public key, the dealt commitments or the \
                         verifying shares"
                            .into(),
                        Vec::new(),
                    )))
                } else if key.public_key.as_ref() != Some(public_key) {
                    Some(Err((
                        "new parties report a public key that is not the key's".into(),
                        Vec::new(),
                    )))
                } else if let Err(e) = reported_package(key.scheme, &r.parties, outcome) {
                    Some(Err((e, Vec::new())))
                } else {
                    Some(Ok(()))
                }
            }
        };
        let (session, attempt, deadline) = (r.session, r.attempt, r.deadline_height);
        let old_parties = key.parties.clone();
        let generation = key.generation.saturating_add(1);
        let Some(key) = state.key_mut(key_id) else {
            return;
        };
        let Some(r) = key.reshare.as_mut() else {
            return;
        };
        r.reports = reports;
        match verdict {
            None => return,
            Some(Ok(())) => {
                r.status = ReshareStatus::Done;
                r.done_height = Some(height);
                let (parties, threshold) = (r.parties.clone(), r.threshold);
                key.parties = parties.clone();
                key.threshold = threshold;
                key.generation = generation;
                key.session = session;
                key.public_key_package = public_key_package(outcome);
                key.reshares = key.reshares.saturating_add(1);
                fx.events.push(ev(
                    "key_reshared",
                    vec![
                        ("key_id", key_id.to_string()),
                        ("generation", generation.to_string()),
                    ],
                ));
                fx.jobs.push(Job::ReshareDone {
                    key_id: key_id.clone(),
                    session,
                    old_parties,
                    new_parties: parties,
                    generation,
                });
            }
            Some(Err((reason, culprits))) => {
                fail_reshare(r, key_id, reason, culprits, height, fx);
                r.proven_blame = proven.clone();
                state.count_proven_blames(&proven);
            }
        }
        state.remove_deadline(deadline, DeadlineItem::Reshare(key_id.clone(), attempt));
        schedule_refresh(state, key_id, height);
    }
}

fn reshare_context(
    state: &ChainState,
    key_id: &KeyId,
    r: &ReshareEntry,
) -> Result<evidence::Context, String> {
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| format!("no key {key_id}"))?;
    let public_key = key
        .public_key
        .as_deref()
        .and_then(|pk| hex::decode(pk).ok())
        .ok_or("the key has no public key")?;
    let t = |t: u32| u16::try_from(t).map_err(|_| format!("threshold {t} out of range"));
    Ok(evidence::Context::Reshare(ReshareParams {
        session: r.session,
        scheme: key.scheme,
        old_parties: r.old_parties.clone(),
        old_threshold: t(r.old_threshold)?,
        dealers: r.dealers.clone(),
        new_parties: r.parties.clone(),
        new_threshold: t(r.threshold)?,
        public_key,
        old_public_package: key
            .public_key_package
            .as_deref()
            .and_then(|p| hex::decode(p).ok()),
    }))
}
