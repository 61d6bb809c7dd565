//! `KeyReshare`: an account with the `keygen` role, the key's owner or an admin it named,
//! moves a READY key to a new committee and/or threshold (the same ones: a refresh); the
//! public key stays. A move to another committee or threshold needs governance approval
//! (`proposal`) and keeps to the committee rules of [`validate`]; a refresh needs neither. The key keeps its committee and
//! shares until the resharing succeeds (`ReshareResult`s) or ends in ERROR (a failure or its
//! deadline). Periodic refreshes (genesis `refresh_every_blocks`) start here too.

use std::collections::{BTreeMap, BTreeSet};

use seqmpc_module::job::{Job, ReshareJob};
use seqmpc_proto::{KeyId, NodeId, SessionId};

use super::proposal::{self, Route};
use super::session::{check_committee, session_deadline};
use super::{ev, Effects, Exec, Handler, Signer, TxError};
use crate::chain::committee::choose_dealers;
use crate::chain::entries::{DeadlineItem, KeyStatus, ProposalAction, ReshareEntry, ReshareStatus};
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct KeyReshare<'a> {
    pub key_id: &'a KeyId,
    pub parties: &'a [NodeId],
    pub threshold: u32,
}

impl Handler for KeyReshare<'_> {
    /// The new committee, sorted, and whether it starts now or waits for approval.
    type Checked = (Vec<NodeId>, Route);

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Self::Checked, TxError> {
        let (committee, refresh) =
            validate(state, signer, self.key_id, self.parties, self.threshold)?;
        let route = if refresh {
            Route::Now
        } else {
            proposal::route(
                state,
                signer,
                "resharing a key to another committee or threshold",
            )?
        };
        Ok((committee, route))
    }

    fn execute(
        &self,
        state: &mut ChainState,
        (committee, route): Self::Checked,
        cx: &mut Exec<'_>,
    ) {
        match route {
            Route::Now => start_reshare(
                state,
                self.key_id,
                committee,
                self.threshold,
                cx.tx_hash,
                cx.height,
                cx.fx,
            ),
            Route::Propose => proposal::open(
                state,
                ProposalAction::Reshare {
                    key_id: self.key_id.clone(),
                    parties: committee,
                    threshold: self.threshold,
                },
                cx,
            ),
        }
    }
}

/// Runs an approved resharing proposal of `proposer` (hex account key): checked again
/// against the current state, then started with the proposing tx's hash as its seed.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute_approved(
    state: &mut ChainState,
    proposer: &str,
    key_id: &KeyId,
    parties: &[NodeId],
    threshold: u32,
    seed: &[u8; 32],
    height: u64,
    fx: &mut Effects,
) -> Result<(), TxError> {
    let account = state
        .accounts
        .get(proposer)
        .cloned()
        .ok_or_else(|| TxError::Unauthorized(format!("proposer {proposer} is no account")))?;
    let (committee, _) = validate(
        state,
        &Signer::Account(&account),
        key_id,
        parties,
        threshold,
    )?;
    start_reshare(state, key_id, committee, threshold, seed, height, fx);
    Ok(())
}

/// Checks a resharing request against the state: the signer's right (role `keygen`, owner or
/// admin of the key), the key (READY, not being reshared), the committee. Returns the new
/// committee, sorted, and whether it is a refresh (same committee and threshold).
///
/// A move to another committee or threshold keeps to two rules, so that no group of nodes
/// that are new to the key can end up holding it: the new committee keeps at least the key's
/// current threshold of its current holders, and its newcomers alone stay below the new
/// threshold.
fn validate(
    state: &ChainState,
    signer: &Signer<'_>,
    key_id: &KeyId,
    parties: &[NodeId],
    threshold: u32,
) -> Result<(Vec<NodeId>, bool), TxError> {
    signer.require_role(Role::Keygen, "request resharing")?;
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
    signer.require_key_user(key, "reshare")?;
    if key.status != KeyStatus::Ready {
        return Err(TxError::Conflict(format!(
            "key {key_id} is {:?}: only a READY key can be reshared",
            key.status
        )));
    }
    if let Some(r) = key
        .reshare
        .as_ref()
        .filter(|r| r.status == ReshareStatus::Pending)
    {
        return Err(TxError::Conflict(format!(
            "key {key_id} is already being reshared (session {}, deadline height {})",
            r.session, r.deadline_height
        )));
    }
    let committee = check_committee(state, key.scheme, threshold, parties)?;
    let refresh = committee == key.parties && threshold == key.threshold;
    if !refresh {
        let old: BTreeSet<&NodeId> = key.parties.iter().collect();
        let kept = committee.iter().filter(|p| old.contains(p)).count();
        if kept < key.threshold as usize {
            return Err(TxError::Invalid(format!(
                "the new committee keeps {kept} of the key's current holders; it must keep at least the current threshold ({})",
                key.threshold
            )));
        }
        let newcomers = committee.len().saturating_sub(kept);
        if newcomers >= threshold as usize {
            return Err(TxError::Invalid(format!(
                "the new committee's {newcomers} newcomers would reach its threshold {threshold} on their own; newcomers must stay below the new threshold"
            )));
        }
    }
    Ok((committee, refresh))
}

/// Starts a resharing (or refresh) of a READY key to `parties` with `threshold`. `seed` is the
/// requesting tx's hash (or, for a periodic refresh, a hash of the key and height).
fn start_reshare(
    state: &mut ChainState,
    key_id: &KeyId,
    parties: Vec<NodeId>,
    threshold: u32,
    seed: &[u8; 32],
    height: u64,
    fx: &mut Effects,
) {
    let Some(key) = state.keys().get(key_id) else {
        return;
    };
    let Some(public_key) = key.public_key.as_ref().and_then(|p| hex::decode(p).ok()) else {
        return;
    };
    let attempt = key
        .reshare
        .as_ref()
        .map_or(0, |r| r.attempt.saturating_add(1));
    let session = SessionId::derive(
        "reshare",
        &state.chain_id,
        height,
        seed,
        key_id.as_str(),
        attempt,
    );
    let dealers = choose_dealers(&key.parties, key.threshold, key_id, &session, |n| {
        state.is_live(n, height)
    });
    let deadline = session_deadline(state, key.scheme, true, height);
    let refresh = parties == key.parties && threshold == key.threshold;
    let entry = ReshareEntry {
        session,
        attempt,
        status: ReshareStatus::Pending,
        refresh,
        old_parties: key.parties.clone(),
        old_threshold: key.threshold,
        dealers: dealers.clone(),
        parties: parties.clone(),
        threshold,
        requested_height: height,
        deadline_height: deadline,
        done_height: None,
        reports: BTreeMap::new(),
        error: None,
        culprits: Vec::new(),
        proven_blame: Vec::new(),
    };
    let job = Job::Reshare(ReshareJob {
        session,
        key_id: key_id.clone(),
        scheme: key.scheme,
        key_session: key.session,
        old_parties: key.parties.clone(),
        old_threshold: key.threshold,
        dealers,
        new_parties: parties,
        new_threshold: threshold,
        public_key,
        public_key_package: key
            .public_key_package
            .as_deref()
            .and_then(|p| hex::decode(p).ok()),
        generation: key.generation.saturating_add(1),
        height,
        deadline_height: deadline,
        block_time_ms: fx.block_time_ms,
    });
    if let Some(key) = state.key_mut(key_id) {
        key.reshare = Some(entry);
    }
    state.add_deadline(deadline, DeadlineItem::Reshare(key_id.clone(), attempt));
    fx.events.push(ev(
        "reshare_requested",
        vec![
            ("key_id", key_id.to_string()),
            ("session", session.to_string()),
            ("refresh", refresh.to_string()),
        ],
    ));
    fx.jobs.push(job);
}

/// Ends a PENDING resharing in ERROR; the key keeps its committee and shares.
pub(super) fn fail_reshare(
    r: &mut ReshareEntry,
    key_id: &KeyId,
    reason: String,
    culprits: Vec<NodeId>,
    height: u64,
    fx: &mut Effects,
) {
    r.status = ReshareStatus::Error;
    r.error = Some(reason.clone());
    r.culprits = culprits;
    r.done_height = Some(height);
    fx.events.push(ev(
        "reshare_failed",
        vec![("key_id", key_id.to_string()), ("reason", reason.clone())],
    ));
    fx.jobs.push(Job::ReshareFailed {
        key_id: key_id.clone(),
        session: r.session,
        reason,
    });
}

/// Schedules the next periodic refresh of a key (genesis `refresh_every_blocks`, 0 = never).
pub(super) fn schedule_refresh(state: &mut ChainState, key_id: &KeyId, height: u64) {
    let every = state.limits.refresh_every_blocks;
    if every > 0 {
        state.add_deadline(
            height.saturating_add(every),
            DeadlineItem::Refresh(key_id.clone()),
        );
    }
}

/// A periodic refresh is due at `height`: starts it if the key is READY, idle, and its shares
/// are at least `refresh_every_blocks` old (a later resharing scheduled its own refresh).
pub(crate) fn periodic_refresh(
    state: &mut ChainState,
    key_id: &KeyId,
    height: u64,
    fx: &mut Effects,
) {
    let Some(key) = state.keys().get(key_id) else {
        return;
    };
    let last_change = match &key.reshare {
        Some(r) if r.status == ReshareStatus::Pending => return,
        Some(r) => r.done_height.unwrap_or(r.requested_height),
        None => key.ready_height.unwrap_or(key.requested_height),
    };
    if key.status != KeyStatus::Ready
        || height < last_change.saturating_add(state.limits.refresh_every_blocks)
    {
        return;
    }
    let (parties, threshold) = (key.parties.clone(), key.threshold);
    let seed: [u8; 32] = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"seqmpc/refresh/v1\0");
        h.update(key_id.as_str().as_bytes());
        h.update(height.to_be_bytes());
        h.finalize().into()
    };
    start_reshare(state, key_id, parties, threshold, &seed, height, fx);
}

/// The deadline of resharing attempt `attempt` of `key_id` passed at `height`: a resharing
/// still PENDING in that attempt ends in ERROR, naming the new parties that did not report.
pub(crate) fn expire(
    state: &mut ChainState,
    key_id: KeyId,
    attempt: u32,
    height: u64,
    fx: &mut Effects,
) {
    let Some(key) = state.key_mut(&key_id) else {
        return;
    };
    let Some(r) = key
        .reshare
        .as_mut()
        .filter(|r| r.status == ReshareStatus::Pending && r.attempt == attempt)
    else {
        return;
    };
    let missing: Vec<String> = r
        .parties
        .iter()
        .filter(|p| !r.reports.contains_key(*p))
        .map(|p| p.to_string())
        .collect();
    let reason = format!(
        "deadline passed at height {height}: no report from {}",
        missing.join(", ")
    );
    fail_reshare(r, &key_id, reason, Vec::new(), height, fx);
    schedule_refresh(state, &key_id, height);
}
