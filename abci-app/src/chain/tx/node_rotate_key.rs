//! `NodeRotateKey`: an account with the `registry` role proposes replacing a registered node's
//! key (its tx key and libp2p identity), because the old one leaked or is due; governance
//! approves it like an admission (`proposal`). From the block that executes it, the chain
//! refuses the old key's txs and the peers accept only the new key.

use seqmpc_module::job::Job;
use seqmpc_proto::NodeId;

use super::node_join::check_key_free;
use super::proposal::{self, Route};
use super::{ev, Effects, Exec, Handler, Signer, TxError};
use crate::chain::entries::ProposalAction;
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct NodeRotateKey<'a> {
    pub node_id: &'a NodeId,
    pub public_key: &'a [u8; 32],
}

impl Handler for NodeRotateKey<'_> {
    type Checked = Route;

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Route, TxError> {
        signer.require_role(Role::Registry, "rotate node keys")?;
        check_rotation(state, self.node_id, &hex::encode(self.public_key))?;
        proposal::route(state, signer, "rotating a node's key")
    }

    fn execute(&self, state: &mut ChainState, route: Route, cx: &mut Exec<'_>) {
        let pk = hex::encode(self.public_key);
        match route {
            Route::Now => rotate(state, self.node_id, pk, cx.fx),
            Route::Propose => proposal::open(
                state,
                ProposalAction::NodeRotateKey {
                    node_id: self.node_id.clone(),
                    public_key: pk,
                },
                cx,
            ),
        }
    }
}

/// The node must be registered, and the new key unused by any node or account.
fn check_rotation(state: &ChainState, node_id: &NodeId, pk: &str) -> Result<(), TxError> {
    if !state.nodes.contains_key(node_id) {
        return Err(TxError::NotFound(format!(
            "node {node_id} is not in the node registry"
        )));
    }
    check_key_free(state, pk)
}

/// Runs an approved rotation, checked again against the current state.
pub(super) fn execute_approved(
    state: &mut ChainState,
    node_id: &NodeId,
    public_key: &str,
    fx: &mut Effects,
) -> Result<(), TxError> {
    check_rotation(state, node_id, public_key)?;
    rotate(state, node_id, public_key.to_owned(), fx);
    Ok(())
}

fn rotate(state: &mut ChainState, node_id: &NodeId, pk: String, fx: &mut Effects) {
    let Some(public_key) = hex::decode(&pk)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return;
    };
    let old = state
        .nodes
        .get(node_id)
        .map(|n| n.public_key.clone())
        .unwrap_or_default();
    state.set_node_key(node_id, pk.clone());
    fx.events.push(ev(
        "node_key_rotated",
        vec![
            ("node", node_id.to_string()),
            ("old_public_key", old),
            ("public_key", pk),
        ],
    ));
    fx.jobs.push(Job::NodeKeyRotated {
        node: node_id.clone(),
        public_key,
    });
}
