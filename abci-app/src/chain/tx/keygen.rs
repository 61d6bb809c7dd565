//! `KeyGen`: an account with the `keygen` role requests a new key; the chain starts a keygen
//! session of the committee, which ends in `KeyGenResult`s or at its deadline.

use seqmpc_module::job::Job;
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};

use super::session::{check_committee, session_deadline};
use super::{ev, Effects, Exec, Handler, Signer, TxError};
use crate::chain::entries::{DeadlineItem, KeyEntry, KeyStatus};
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct KeyGen<'a> {
    pub key_id: &'a KeyId,
    pub scheme: Scheme,
    pub threshold: u32,
    pub parties: &'a [NodeId],
}

impl Handler for KeyGen<'_> {
    /// The committee, sorted, and the attempt (0, then +1 per retry of an ERROR key).
    type Checked = (Vec<NodeId>, u32);

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Self::Checked, TxError> {
        signer.require_role(Role::Keygen, "request keygen")?;
        let key_id = self.key_id;
        let attempt = match state.keys().get(key_id) {
            None => 0,
            Some(k) if k.status == KeyStatus::Error => {
                // A retry keeps the key's owner and admins: only they may retry it.
                signer.require_key_user(k, "retry the keygen of")?;
                k.attempt.saturating_add(1)
            }
            Some(k) => {
                return Err(TxError::Conflict(format!(
                    "key id {key_id} is already used (status {:?}); key ids are never reused",
                    k.status
                )))
            }
        };
        let committee = check_committee(state, self.scheme, self.threshold, self.parties)?;
        Ok((committee, attempt))
    }

    fn execute(
        &self,
        state: &mut ChainState,
        (committee, attempt): Self::Checked,
        cx: &mut Exec<'_>,
    ) {
        let (key_id, scheme, threshold, height) =
            (self.key_id, self.scheme, self.threshold, cx.height);
        let deadline = session_deadline(state, scheme, true, height);
        let (owner, admins) = match state.keys().get(key_id) {
            Some(old) => (old.owner.clone(), old.admins.clone()),
            None => (cx.signer_hex.to_owned(), Default::default()),
        };
        let session = SessionId::derive(
            "keygen",
            &state.chain_id,
            height,
            cx.tx_hash,
            key_id.as_str(),
            attempt,
        );
        state.put_key(KeyEntry {
            key_id: key_id.clone(),
            scheme,
            threshold,
            parties: committee.clone(),
            status: KeyStatus::Pending,
            public_key: None,
            public_key_package: None,
            error: None,
            culprits: Vec::new(),
            proven_blame: Vec::new(),
            session,
            attempt,
            generation: 0,
            requested_height: height,
            deadline_height: deadline,
            ready_height: None,
            reports: Default::default(),
            deleted_by: Default::default(),
            owner,
            admins,
            reshare: None,
            reshares: 0,
        });
        state.add_deadline(deadline, DeadlineItem::KeyGen(key_id.clone(), attempt));
        cx.fx.events.push(ev(
            "keygen_requested",
            vec![
                ("key_id", key_id.to_string()),
                ("session", session.to_string()),
                ("attempt", attempt.to_string()),
                ("scheme", scheme.to_string()),
            ],
        ));
        cx.fx.jobs.push(Job::KeyGen {
            session,
            key_id: key_id.clone(),
            scheme,
            threshold,
            parties: committee,
            height,
            deadline_height: deadline,
            block_time_ms: cx.fx.block_time_ms,
        });
    }
}

/// The deadline of keygen attempt `attempt` of `key_id` passed at `height`: a key still
/// PENDING in that attempt ends in ERROR, naming the parties that did not report.
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
    if key.status != KeyStatus::Pending || key.attempt != attempt {
        return;
    }
    let missing: Vec<String> = key
        .parties
        .iter()
        .filter(|p| !key.reports.contains_key(*p))
        .map(|p| p.to_string())
        .collect();
    let reason = format!(
        "deadline passed at height {height}: no report from {}",
        missing.join(", ")
    );
    key.status = KeyStatus::Error;
    key.error = Some(reason.clone());
    fx.events.push(ev(
        "key_error",
        vec![("key_id", key_id.to_string()), ("reason", reason.clone())],
    ));
    fx.jobs.push(Job::KeyGenFailed {
        key_id,
        session: key.session,
        reason,
    });
}
