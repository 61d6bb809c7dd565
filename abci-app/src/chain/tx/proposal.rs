//! Governance: changes that move key material to other nodes or change who the nodes are (a
//! resharing to another committee or threshold, a node admission, key rotation or removal) need the approval of `approvals` of the genesis
//! `governance.accounts`, then wait `delay_blocks`, during which they are visible (the
//! `/proposals` query, `mpcctl proposals`) and any governance account or the proposer can
//! cancel them. So one account, whatever its roles, cannot move a key to nodes it controls.
//!
//! A proposal is opened by the request tx itself (`KeyReshare`, `NodeJoin`), approved or
//! cancelled by `ProposalVote`, and is due (executes, expires, leaves the state) through its
//! `DeadlineItem::Proposal`. When due, its action is checked again against the state of that
//! block: an approved change that is no longer valid ends FAILED and changes nothing.

use std::collections::BTreeSet;

use seqmpc_proto::tx::proposal_id;

use super::{
    ev, node_join, node_remove, node_rotate_key, reshare, Effects, Exec, Handler, Signer, TxError,
};
use crate::chain::entries::{DeadlineItem, ProposalAction, ProposalEntry, ProposalStatus};
use crate::chain::state::ChainState;

/// Most proposals open (pending or approved) at once.
pub const MAX_OPEN_PROPOSALS: usize = 64;
/// Most proposals one account may have open at once (so one account cannot fill the chain's
/// room for proposals).
pub const MAX_OPEN_PROPOSALS_PER_ACCOUNT: usize = 8;

/// How a change that needs governance goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// At once: the signer alone is enough (a governance account, 1 approval, no delay), or
    /// the change needs no approval (a refresh).
    Now,
    /// Through a proposal.
    Propose,
}

/// How a change `what` requested by `signer` goes on; an error when the chain has no
/// governance or too many proposals are open.
pub(crate) fn route(state: &ChainState, signer: &Signer<'_>, what: &str) -> Result<Route, TxError> {
    let account = signer.require_account(what)?;
    let Some(g) = &state.governance else {
        return Err(TxError::Unauthorized(format!(
            "{what} needs governance approval, and this chain's genesis names no governance"
        )));
    };
    if g.approvals == 1 && g.delay_blocks == 0 && g.accounts.contains(&account.name) {
        return Ok(Route::Now);
    }
    let open: Vec<&ProposalEntry> = state
        .proposals()
        .values()
        .filter(|p| matches!(p.status, ProposalStatus::Pending | ProposalStatus::Approved))
        .collect();
    if open.len() >= MAX_OPEN_PROPOSALS {
        return Err(TxError::Conflict(format!(
            "{} proposals are open (the most the chain holds): approve, cancel or let some expire first",
            open.len()
        )));
    }
    let mine = open
        .iter()
        .filter(|p| p.proposer == account.public_key)
        .count();
    if mine >= MAX_OPEN_PROPOSALS_PER_ACCOUNT {
        return Err(TxError::Conflict(format!(
            "account {:?} has {mine} proposals open (the most one account may): cancel some or wait",
            account.name
        )));
    }
    Ok(Route::Propose)
}

/// Opens a proposal for `action`, requested by the tx of `cx` (whose signer approves it if it
/// is a governance account).
pub(crate) fn open(state: &mut ChainState, action: ProposalAction, cx: &mut Exec<'_>) {
    let Some(g) = state.governance.clone() else {
        return;
    };
    let id = proposal_id(cx.tx_hash);
    if state.proposals().contains_key(&id) {
        // A 64-bit prefix of a tx hash met an older proposal's: refuse rather than overwrite.
        cx.fx.events.push(ev(
            "proposal_refused",
            vec![("proposal", id), ("reason", "id already used".into())],
        ));
        return;
    }
    let name = state
        .accounts
        .get(cx.signer_hex)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let mut approvals = BTreeSet::new();
    if g.accounts.contains(&name) {
        approvals.insert(name);
    }
    let (kind, subject) = describe(&action);
    let expires = cx.height.saturating_add(g.expiry_blocks);
    state.put_proposal(ProposalEntry {
        id: id.clone(),
        action,
        proposer: cx.signer_hex.to_owned(),
        tx_hash: hex::encode(cx.tx_hash),
        status: ProposalStatus::Pending,
        approvals,
        approvals_needed: g.approvals,
        proposed_height: cx.height,
        expires_height: expires,
        executes_height: None,
        ended_height: None,
        error: None,
    });
    state.add_deadline(expires, DeadlineItem::Proposal(id.clone()));
    cx.fx.events.push(ev(
        "proposal_opened",
        vec![
            ("proposal", id.clone()),
            ("kind", kind.into()),
            ("subject", subject),
            ("expires_height", expires.to_string()),
        ],
    ));
    approve_if_enough(state, &id, cx.height, cx.fx);
}

fn describe(action: &ProposalAction) -> (&'static str, String) {
    match action {
        ProposalAction::Reshare {
            key_id,
            parties,
            threshold,
        } => {
            let parties: Vec<&str> = parties.iter().map(|p| p.as_str()).collect();
            (
                "reshare",
                format!("{key_id} to {} (threshold {threshold})", parties.join(",")),
            )
        }
        ProposalAction::NodeJoin {
            node_id, p2p_addr, ..
        } => ("node_join", format!("{node_id} at {p2p_addr}")),
        ProposalAction::NodeRotateKey {
            node_id,
            public_key,
        } => ("node_rotate_key", format!("{node_id} to key {public_key}")),
        ProposalAction::NodeRemove { node_id } => ("node_remove", node_id.to_string()),
    }
}

/// A PENDING proposal with all the approvals it needs becomes APPROVED: it executes
/// `delay_blocks` later (at the start of the next block at the soonest).
fn approve_if_enough(state: &mut ChainState, id: &str, height: u64, fx: &mut Effects) {
    let delay = state.governance.as_ref().map_or(0, |g| g.delay_blocks);
    let Some(p) = state.proposal_mut(id) else {
        return;
    };
    if p.status != ProposalStatus::Pending || (p.approvals.len() as u64) < p.approvals_needed as u64
    {
        return;
    }
    let at = height.saturating_add(delay.max(1));
    p.status = ProposalStatus::Approved;
    p.executes_height = Some(at);
    state.add_deadline(at, DeadlineItem::Proposal(id.to_owned()));
    fx.events.push(ev(
        "proposal_approved",
        vec![
            ("proposal", id.to_owned()),
            ("executes_height", at.to_string()),
        ],
    ));
}

/// Ends a proposal with `status`; it leaves the state `expiry_blocks` later.
fn end(
    state: &mut ChainState,
    id: &str,
    status: ProposalStatus,
    error: Option<String>,
    height: u64,
    fx: &mut Effects,
) {
    let keep = state.governance.as_ref().map_or(1, |g| g.expiry_blocks);
    let Some(p) = state.proposal_mut(id) else {
        return;
    };
    p.status = status;
    p.ended_height = Some(height);
    p.error = error.clone();
    state.add_deadline(
        height.saturating_add(keep),
        DeadlineItem::Proposal(id.to_owned()),
    );
    let kind = match status {
        ProposalStatus::Executed => "proposal_executed",
        ProposalStatus::Failed => "proposal_failed",
        ProposalStatus::Cancelled => "proposal_cancelled",
        ProposalStatus::Expired => "proposal_expired",
        ProposalStatus::Pending | ProposalStatus::Approved => "proposal_updated",
    };
    let mut attrs = vec![("proposal", id.to_owned())];
    if let Some(e) = error {
        attrs.push(("reason", e));
    }
    fx.events.push(ev(kind, attrs));
}

/// Proposal `id` is due at `height` (start of the block): an approved one whose delay is
/// over executes, a pending one past its expiry expires, an ended one leaves the state.
pub(crate) fn due(state: &mut ChainState, id: &str, height: u64, fx: &mut Effects) {
    let Some(p) = state.proposals().get(id).cloned() else {
        return;
    };
    let keep = state.governance.as_ref().map_or(1, |g| g.expiry_blocks);
    match p.status {
        ProposalStatus::Approved if p.executes_height.is_some_and(|h| h <= height) => {
            let outcome = execute(state, &p, height, fx);
            match outcome {
                Ok(()) => end(state, id, ProposalStatus::Executed, None, height, fx),
                Err(e) => end(
                    state,
                    id,
                    ProposalStatus::Failed,
                    Some(e.to_string()),
                    height,
                    fx,
                ),
            }
        }
        ProposalStatus::Pending if p.expires_height <= height => {
            end(state, id, ProposalStatus::Expired, None, height, fx)
        }
        ProposalStatus::Executed
        | ProposalStatus::Failed
        | ProposalStatus::Cancelled
        | ProposalStatus::Expired
            if p.ended_height
                .is_some_and(|e| e.saturating_add(keep) <= height) =>
        {
            state.remove_proposal(id)
        }
        _ => {}
    }
}

/// Runs an approved proposal's action, checked again against the current state.
fn execute(
    state: &mut ChainState,
    p: &ProposalEntry,
    height: u64,
    fx: &mut Effects,
) -> Result<(), TxError> {
    let seed: [u8; 32] = hex::decode(&p.tx_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| TxError::Invalid("proposal has no tx hash".into()))?;
    match &p.action {
        ProposalAction::Reshare {
            key_id,
            parties,
            threshold,
        } => reshare::execute_approved(
            state,
            &p.proposer,
            key_id,
            parties,
            *threshold,
            &seed,
            height,
            fx,
        ),
        ProposalAction::NodeJoin {
            node_id,
            public_key,
            p2p_addr,
        } => node_join::execute_approved(state, node_id, public_key, p2p_addr, fx),
        ProposalAction::NodeRotateKey {
            node_id,
            public_key,
        } => node_rotate_key::execute_approved(state, node_id, public_key, fx),
        ProposalAction::NodeRemove { node_id } => node_remove::execute_approved(state, node_id, fx),
    }
}

/// The message: approve a proposal, or cancel it.
pub(crate) struct ProposalVote<'a> {
    pub proposal_id: &'a str,
    pub cancel: bool,
}

impl Handler for ProposalVote<'_> {
    /// The voting account's name.
    type Checked = String;

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<String, TxError> {
        let account = signer.require_account("ProposalVote")?;
        let id = self.proposal_id;
        let p = state
            .proposals()
            .get(id)
            .ok_or_else(|| TxError::NotFound(format!("proposal {id} does not exist")))?;
        let voter = state
            .governance
            .as_ref()
            .is_some_and(|g| g.accounts.contains(&account.name));
        if !matches!(p.status, ProposalStatus::Pending | ProposalStatus::Approved) {
            return Err(TxError::Conflict(format!(
                "proposal {id} already ended ({:?})",
                p.status
            )));
        }
        if self.cancel {
            if !voter && account.public_key != p.proposer {
                return Err(TxError::Unauthorized(format!(
                    "account {:?} may not cancel proposal {id}: only a governance account or its proposer may",
                    account.name
                )));
            }
        } else {
            if !voter {
                return Err(TxError::Unauthorized(format!(
                    "account {:?} may not approve proposals: it is not a governance account",
                    account.name
                )));
            }
            if p.status == ProposalStatus::Approved {
                return Err(TxError::Conflict(format!(
                    "proposal {id} is already approved; it executes at height {}",
                    p.executes_height.unwrap_or_default()
                )));
            }
            if p.approvals.contains(&account.name) {
                return Err(TxError::Conflict(format!(
                    "account {:?} already approved proposal {id}",
                    account.name
                )));
            }
        }
        Ok(account.name.clone())
    }

    fn execute(&self, state: &mut ChainState, name: String, cx: &mut Exec<'_>) {
        let id = self.proposal_id;
        if self.cancel {
            end(
                state,
                id,
                ProposalStatus::Cancelled,
                Some(format!("cancelled by {name}")),
                cx.height,
                cx.fx,
            );
            return;
        }
        if let Some(p) = state.proposal_mut(id) {
            p.approvals.insert(name.clone());
        }
        cx.fx.events.push(ev(
            "proposal_vote",
            vec![("proposal", id.to_owned()), ("account", name)],
        ));
        approve_if_enough(state, id, cx.height, cx.fx);
    }
}
