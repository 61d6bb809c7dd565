//! `NodeRemove`: an account with the `registry` role proposes removing a node from the
//! registry; governance approves it like an admission (`proposal`). A node that still holds a
//! share of a live key cannot be removed: its keys must first be reshared to committees
//! without it (a removal alone would leave its share valid, and the key short of a party).

use seqmpc_module::job::Job;
use seqmpc_proto::NodeId;

use super::proposal::{self, Route};
use super::{ev, Effects, Exec, Handler, Signer, TxError};
use crate::chain::entries::{KeyStatus, ProposalAction, ReshareStatus};
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

/// Most key ids a refusal names.
const MAX_NAMED_KEYS: usize = 8;

/// The message.
pub(crate) struct NodeRemove<'a> {
    pub node_id: &'a NodeId,
}

impl Handler for NodeRemove<'_> {
    type Checked = Route;

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Route, TxError> {
        signer.require_role(Role::Registry, "remove nodes")?;
        check_removable(state, self.node_id)?;
        proposal::route(state, signer, "removing a node")
    }

    fn execute(&self, state: &mut ChainState, route: Route, cx: &mut Exec<'_>) {
        match route {
            Route::Now => remove(state, self.node_id, cx.fx),
            Route::Propose => proposal::open(
                state,
                ProposalAction::NodeRemove {
                    node_id: self.node_id.clone(),
                },
                cx,
            ),
        }
    }
}

/// The node must be registered and hold no share of a key that is not deleted or failed: not
/// a party of a PENDING, READY or DELETING key, nor of a resharing in progress.
fn check_removable(state: &ChainState, node_id: &NodeId) -> Result<(), TxError> {
    if !state.nodes.contains_key(node_id) {
        return Err(TxError::NotFound(format!(
            "node {node_id} is not in the node registry"
        )));
    }
    let held: Vec<String> = state
        .keys()
        .values()
        .filter(|k| {
            let party = !matches!(k.status, KeyStatus::Deleted | KeyStatus::Error)
                && k.parties.contains(node_id);
            let resharing_to = k.reshare.as_ref().is_some_and(|r| {
                r.status == ReshareStatus::Pending
                    && (r.parties.contains(node_id) || r.dealers.contains(node_id))
            });
            party || resharing_to
        })
        .map(|k| k.key_id.to_string())
        .collect();
    if !held.is_empty() {
        let more = held.len().saturating_sub(MAX_NAMED_KEYS);
        let mut named = held
            .into_iter()
            .take(MAX_NAMED_KEYS)
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            named.push_str(&format!(" and {more} more"));
        }
        return Err(TxError::Conflict(format!(
            "node {node_id} holds shares of keys {named}: reshare them to committees without it \
             (or delete them) first"
        )));
    }
    if state.nodes.len() <= 1 {
        return Err(TxError::Conflict(format!(
            "node {node_id} is the last node of the registry"
        )));
    }
    Ok(())
}

/// Runs an approved removal, checked again against the current state.
pub(super) fn execute_approved(
    state: &mut ChainState,
    node_id: &NodeId,
    fx: &mut Effects,
) -> Result<(), TxError> {
    check_removable(state, node_id)?;
    remove(state, node_id, fx);
    Ok(())
}

fn remove(state: &mut ChainState, node_id: &NodeId, fx: &mut Effects) {
    state.remove_node(node_id);
    fx.events
        .push(ev("node_removed", vec![("node", node_id.to_string())]));
    fx.jobs.push(Job::NodeRemoved {
        node: node_id.clone(),
    });
}
