//! `Heartbeat`: a node says it is up. Like every committed tx of a node it records the node's
//! liveness (in the dispatch, for every tx); signers are chosen among live nodes first.

use super::{Exec, Handler, Signer, TxError};
use crate::chain::state::ChainState;

/// The message.
pub(crate) struct Heartbeat;

impl Handler for Heartbeat {
    type Checked = ();

    fn check(&self, _state: &ChainState, signer: &Signer<'_>, _height: u64) -> Result<(), TxError> {
        signer.require_node("Heartbeat").map(|_| ())
    }

    fn execute(&self, _state: &mut ChainState, _checked: (), _cx: &mut Exec<'_>) {}
}
