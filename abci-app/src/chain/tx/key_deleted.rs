//! `KeyDeleted`: a party of a DELETING key attests it deleted its share; the key is DELETED
//! (a tombstone: the id is never reused) once every party attested.

use seqmpc_proto::{KeyId, NodeId};

use super::{ev, Exec, Handler, Signer, TxError};
use crate::chain::entries::KeyStatus;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct KeyDeleted<'a> {
    pub key_id: &'a KeyId,
}

impl Handler for KeyDeleted<'_> {
    /// The attesting node.
    type Checked = NodeId;

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<NodeId, TxError> {
        let node = signer.require_node("KeyDeleted")?;
        let key_id = self.key_id;
        let key = state
            .keys()
            .get(key_id)
            .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
        if !key.parties.contains(node) {
            return Err(TxError::Unauthorized(format!(
                "node {node} is not a party of key {key_id}"
            )));
        }
        if key.status != KeyStatus::Deleting {
            return Err(TxError::Conflict(format!(
                "key {key_id} is not being deleted (status {:?})",
                key.status
            )));
        }
        if key.deleted_by.contains(node) {
            return Err(TxError::Conflict(format!(
                "node {node} already attested deletion of {key_id}"
            )));
        }
        Ok(node.clone())
    }

    fn execute(&self, state: &mut ChainState, node: NodeId, cx: &mut Exec<'_>) {
        let key_id = self.key_id;
        let Some(key) = state.key_mut(key_id) else {
            return;
        };
        key.deleted_by.insert(node);
        if key.parties.iter().all(|p| key.deleted_by.contains(p)) {
            key.status = KeyStatus::Deleted;
            cx.fx
                .events
                .push(ev("key_deleted", vec![("key_id", key_id.to_string())]));
        }
    }
}
