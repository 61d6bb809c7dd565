//! `NodeJoin`: an account with the `registry` role admits a new MPC node into the registry.

use seqmpc_module::job::Job;
use seqmpc_proto::NodeId;

use super::{ev, Exec, Handler, Signer, TxError};
use crate::chain::entries::NodeEntry;
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct NodeJoin<'a> {
    pub node_id: &'a NodeId,
    pub public_key: &'a [u8; 32],
    pub p2p_addr: &'a String,
}

impl Handler for NodeJoin<'_> {
    type Checked = ();

    /// A `NodeJoin` may not reuse a registered node id, nor a key of a node or an account (a
    /// key names exactly one signer).
    fn check(&self, state: &ChainState, signer: &Signer<'_>, _height: u64) -> Result<(), TxError> {
        signer.require_role(Role::Registry, "admit nodes")?;
        let node_id = self.node_id;
        if state.nodes.contains_key(node_id) {
            return Err(TxError::Conflict(format!(
                "node {node_id} is already in the node registry"
            )));
        }
        let pk = hex::encode(self.public_key);
        if let Some(other) = state.node_keys.get(&pk) {
            return Err(TxError::Conflict(format!(
                "key {pk} is already registered for node {other}"
            )));
        }
        if let Some(a) = state.accounts.get(&pk) {
            return Err(TxError::Conflict(format!(
                "key {pk} is the key of account {:?}; a node needs a key of its own",
                a.name
            )));
        }
        Ok(())
    }

    fn execute(&self, state: &mut ChainState, _checked: (), cx: &mut Exec<'_>) {
        let (node_id, p2p_addr) = (self.node_id, self.p2p_addr);
        let pk = hex::encode(self.public_key);
        state.add_node(NodeEntry {
            id: node_id.clone(),
            public_key: pk.clone(),
            p2p_addr: p2p_addr.clone(),
            proven_blames: 0,
        });
        cx.fx.events.push(ev(
            "node_joined",
            vec![
                ("node", node_id.to_string()),
                ("public_key", pk),
                ("p2p_addr", p2p_addr.clone()),
            ],
        ));
        cx.fx.jobs.push(Job::NodeJoined {
            node: node_id.clone(),
            public_key: *self.public_key,
            p2p_addr: p2p_addr.clone(),
        });
    }
}
