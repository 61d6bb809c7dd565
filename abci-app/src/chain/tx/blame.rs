//! Blame in failure reports: whom a report may blame, and which blames the culprits' own
//! signed p2p messages prove.

use seqmpc_module::evidence;
use seqmpc_proto::tx::Outcome;
use seqmpc_proto::NodeId;

use super::TxError;
use crate::chain::entries::ProvenBlame;
use crate::chain::state::ChainState;

/// A failure report may blame only parties of its session (a node cannot smear an outsider).
pub(super) fn check_culprits<T>(
    outcome: &Outcome<T>,
    parties: &[NodeId],
    what: &str,
) -> Result<(), TxError> {
    if let Outcome::Failed { culprits, .. } = outcome {
        if let Some(c) = culprits.iter().find(|c| !parties.contains(c)) {
            return Err(TxError::Invalid(format!(
                "culprit {c} is not one of {what} of the session"
            )));
        }
    }
    Ok(())
}

/// The blames a failure report proves with the culprits' signed p2p messages it quotes (none
/// without quoted messages). Quoted messages that are not genuine (not signed by the culprit,
/// of another session, not to the reporter) refuse the report (code 6).
pub(super) fn proven_blame<T>(
    state: &ChainState,
    reporter: &NodeId,
    ctx: impl FnOnce() -> Result<evidence::Context, String>,
    outcome: &Outcome<T>,
) -> Result<Vec<ProvenBlame>, TxError> {
    let Outcome::Failed {
        culprits, evidence, ..
    } = outcome
    else {
        return Ok(Vec::new());
    };
    if evidence.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = ctx().map_err(|e| TxError::Invalid(format!("evidence: {e}")))?;
    let key_of = |n: &NodeId| {
        let e = state.nodes.get(n)?;
        <[u8; 32]>::try_from(hex::decode(&e.public_key).ok()?).ok()
    };
    let proven = evidence::check(&ctx, reporter, culprits, evidence, key_of)
        .map_err(|e| TxError::Invalid(format!("evidence: {e}")))?;
    Ok(proven
        .into_iter()
        .map(|p| ProvenBlame {
            culprit: p.culprit,
            reporter: reporter.clone(),
            reason: p.reason,
        })
        .collect())
}
