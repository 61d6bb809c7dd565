//! `KeyDelete`: an account with the `delete` role, the key's owner or an admin it named,
//! deletes a READY (or ERROR) key; the key is
//! DELETING until every party attested with `KeyDeleted`.

use seqmpc_module::job::Job;
use seqmpc_proto::KeyId;

use super::{ev, Exec, Handler, Signer, TxError};
use crate::chain::entries::{KeyStatus, ReshareStatus};
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct KeyDelete<'a> {
    pub key_id: &'a KeyId,
}

impl Handler for KeyDelete<'_> {
    type Checked = ();

    fn check(&self, state: &ChainState, signer: &Signer<'_>, _height: u64) -> Result<(), TxError> {
        signer.require_role(Role::Delete, "delete keys")?;
        let key_id = self.key_id;
        let key = state
            .keys()
            .get(key_id)
            .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
        signer.require_key_user(key, "delete")?;
        if let Some(r) = key
            .reshare
            .as_ref()
            .filter(|r| r.status == ReshareStatus::Pending)
        {
            return Err(TxError::Conflict(format!(
                "key {key_id} is being reshared: retry after the resharing ends (deadline height {})",
                r.deadline_height
            )));
        }
        match key.status {
            KeyStatus::Ready | KeyStatus::Error => Ok(()),
            KeyStatus::Pending => Err(TxError::Conflict(format!(
                "key {key_id} is PENDING: wait for its keygen to end"
            ))),
            KeyStatus::Deleting | KeyStatus::Deleted => Err(TxError::Conflict(format!(
                "key {key_id} is already deleted"
            ))),
        }
    }

    fn execute(&self, state: &mut ChainState, _checked: (), cx: &mut Exec<'_>) {
        let key_id = self.key_id;
        let Some(key) = state.key_mut(key_id) else {
            return;
        };
        key.status = KeyStatus::Deleting;
        key.deleted_by.clear();
        cx.fx
            .events
            .push(ev("key_deleting", vec![("key_id", key_id.to_string())]));
        cx.fx.jobs.push(Job::Delete {
            key_id: key_id.clone(),
            parties: key.parties.clone(),
            height: cx.height,
        });
    }
}
