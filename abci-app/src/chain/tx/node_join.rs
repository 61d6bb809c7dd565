//! `NodeJoin`: an account with the `registry` role proposes admitting a new MPC node into the
//! registry; governance approves it (`proposal`), since a node in the registry can be named in
//! a resharing's committee.

use seqmpc_module::job::Job;
use seqmpc_proto::NodeId;

use super::proposal::{self, Route};
use super::{ev, Effects, Exec, Handler, Signer, TxError};
use crate::chain::entries::{NodeEntry, ProposalAction};
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct NodeJoin<'a> {
    pub node_id: &'a NodeId,
    pub public_key: &'a [u8; 32],
    pub p2p_addr: &'a String,
}

impl Handler for NodeJoin<'_> {
    type Checked = Route;

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Route, TxError> {
        signer.require_role(Role::Registry, "admit nodes")?;
        check_free(state, self.node_id, &hex::encode(self.public_key))?;
        proposal::route(state, signer, "admitting a node")
    }

    fn execute(&self, state: &mut ChainState, route: Route, cx: &mut Exec<'_>) {
        let (node_id, p2p_addr) = (self.node_id, self.p2p_addr);
        let pk = hex::encode(self.public_key);
        match route {
            Route::Now => admit(state, node_id, pk, p2p_addr, cx.fx),
            Route::Propose => proposal::open(
                state,
                ProposalAction::NodeJoin {
                    node_id: node_id.clone(),
                    public_key: pk,
                    p2p_addr: p2p_addr.clone(),
                },
                cx,
            ),
        }
    }
}

/// A `NodeJoin` may not reuse a registered node id, nor a key of a node or an account (a key
/// names exactly one signer).
fn check_free(state: &ChainState, node_id: &NodeId, pk: &str) -> Result<(), TxError> {
    if state.nodes.contains_key(node_id) {
        return Err(TxError::Conflict(format!(
            "node {node_id} is already in the node registry"
        )));
    }
    check_key_free(state, pk)
}

/// A key given to a node (admitted or rotated) may not be a key of a node or an account: a key
/// names exactly one signer.
pub(super) fn check_key_free(state: &ChainState, pk: &str) -> Result<(), TxError> {
    if let Some(other) = state.node_keys.get(pk) {
        return Err(TxError::Conflict(format!(
            "key {pk} is already registered for node {other}"
        )));
    }
    if let Some(a) = state.accounts.get(pk) {
        return Err(TxError::Conflict(format!(
            "key {pk} is the key of account {:?}; a node needs a key of its own",
            a.name
        )));
    }
    Ok(())
}

/// Runs an approved admission, checked again against the current state.
pub(super) fn execute_approved(
    state: &mut ChainState,
    node_id: &NodeId,
    public_key: &str,
    p2p_addr: &str,
    fx: &mut Effects,
) -> Result<(), TxError> {
    check_free(state, node_id, public_key)?;
    admit(state, node_id, public_key.to_owned(), p2p_addr, fx);
    Ok(())
}

fn admit(state: &mut ChainState, node_id: &NodeId, pk: String, p2p_addr: &str, fx: &mut Effects) {
    let Some(public_key) = hex::decode(&pk)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return;
    };
    state.add_node(NodeEntry {
        id: node_id.clone(),
        public_key: pk.clone(),
        p2p_addr: p2p_addr.to_owned(),
        proven_blames: 0,
    });
    fx.events.push(ev(
        "node_joined",
        vec![
            ("node", node_id.to_string()),
            ("public_key", pk),
            ("p2p_addr", p2p_addr.to_owned()),
        ],
    ));
    fx.jobs.push(Job::NodeJoined {
        node: node_id.clone(),
        public_key,
        p2p_addr: p2p_addr.to_owned(),
    });
}
