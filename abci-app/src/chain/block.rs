//! Block execution: the deadlines due at the start of a block, then each tx in order.

use crate::chain::entries::DeadlineItem;
use crate::chain::state::ChainState;
use crate::chain::tx::{keygen, reshare, sign, Effects};

/// Ends every session whose deadline is `<= height` (start of block `height`), and starts the
/// periodic refreshes due.
pub fn expire_deadlines(state: &mut ChainState, height: u64, fx: &mut Effects) {
    while let Some(first) = state.deadlines().first().cloned() {
        if first.0 > height {
            break;
        }
        state.remove_deadline(first.0, first.1.clone());
        match first.1 {
            DeadlineItem::KeyGen(key_id, attempt) => {
                keygen::expire(state, key_id, attempt, height, fx)
            }
            DeadlineItem::Sign(request_id) => sign::expire(state, request_id, height, fx),
            DeadlineItem::Reshare(key_id, attempt) => {
                reshare::expire(state, key_id, attempt, height, fx)
            }
            DeadlineItem::Refresh(key_id) => reshare::periodic_refresh(state, &key_id, height, fx),
        }
    }
}
