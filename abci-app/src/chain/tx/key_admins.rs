//! `KeyAdmins`: the owner of a key names the accounts that may also sign with it, delete it
//! and request its resharing (each still needs the role of what it sends). Only the owner
//! may change the list, and an admin may not: a key changes hands only by its owner's tx.

use std::collections::BTreeSet;

use seqmpc_proto::KeyId;

use super::{ev, Exec, Handler, Signer, TxError};
use crate::chain::entries::KeyStatus;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct KeyAdmins<'a> {
    pub key_id: &'a KeyId,
    pub admins: &'a [[u8; 32]],
}

impl Handler for KeyAdmins<'_> {
    /// The admins (hex keys) and their names, in key order.
    type Checked = (BTreeSet<String>, Vec<String>);

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Self::Checked, TxError> {
        let account = signer.require_account("KeyAdmins")?;
        let key_id = self.key_id;
        let key = state
            .keys()
            .get(key_id)
            .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
        if account.public_key != key.owner {
            return Err(TxError::Unauthorized(format!(
                "account {:?} may not name the admins of key {key_id}: only its owner may",
                account.name
            )));
        }
        if matches!(key.status, KeyStatus::Deleting | KeyStatus::Deleted) {
            return Err(TxError::Conflict(format!("key {key_id} is deleted")));
        }
        let mut admins = BTreeSet::new();
        for pk in self.admins {
            let pk = hex::encode(pk);
            if pk == key.owner {
                return Err(TxError::Invalid(
                    "the owner is always allowed: do not list it as an admin".into(),
                ));
            }
            if !state.accounts.contains_key(&pk) {
                return Err(TxError::Invalid(format!(
                    "admin {pk} is not a genesis account"
                )));
            }
            admins.insert(pk);
        }
        let names = admins
            .iter()
            .filter_map(|pk| state.accounts.get(pk).map(|a| a.name.clone()))
            .collect();
        Ok((admins, names))
    }

    fn execute(&self, state: &mut ChainState, (admins, names): Self::Checked, cx: &mut Exec<'_>) {
        if let Some(key) = state.key_mut(self.key_id) {
            key.admins = admins;
        }
        cx.fx.events.push(ev(
            "key_admins",
            vec![
                ("key_id", self.key_id.to_string()),
                ("admins", names.join(",")),
            ],
        ));
    }
}
