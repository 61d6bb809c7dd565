//! CheckTx: admission of a tx to the mempool against the committed state and the mempool's
//! own view of sequences and request counts since the last commit.

use std::collections::BTreeMap;

use seqmpc_proto::tx::SignedTx;

use crate::chain::state::ChainState;
use crate::chain::tx::{self, TxError};

/// What CheckTx remembers between two commits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckState {
    /// Mempool view of sequences: next expected per signer (hex key), ahead of committed.
    pub check_seq: BTreeMap<String, u64>,
    /// Request txs per account (hex key) admitted since the last commit (rate limit).
    pub check_requests: BTreeMap<String, u32>,
}

impl CheckState {
    /// After a commit of `state`: drops the sequences the chain caught up with and restarts
    /// the request counts.
    pub fn committed(&mut self, state: &ChainState) {
        self.check_seq
            .retain(|signer, next| *next > state.sequence(signer));
        self.check_requests.clear();
    }

    /// The sequence a tx of `signer` carrying `got` must have.
    fn expected_seq(&self, state: &ChainState, signer: &str, got: u64) -> u64 {
        let committed = state.sequence(signer);
        match self.check_seq.get(signer) {
            // A signer going back to its committed sequence recovers from txs the mempool
            // dropped; a duplicate of a mempool tx then fails at delivery, harmlessly.
            Some(&ahead) if ahead > committed && got == committed => committed,
            Some(&ahead) if ahead > committed => ahead,
            _ => committed,
        }
    }
}

/// CheckTx of the raw tx `raw` against the committed `state`: decodes it, checks it with the
/// mempool's expected sequence and counts it against the per-account request limit. On
/// success records it in `mempool`; on failure changes nothing. A
/// [`TxError::Sequence`] names the sequence the signer must use.
pub fn check_tx(state: &ChainState, mempool: &mut CheckState, raw: &[u8]) -> Result<(), TxError> {
    let tx = SignedTx::decode(raw).map_err(|e| TxError::Malformed(e.to_string()))?;
    check_decoded(state, mempool, &tx)
}

/// [`check_tx`] of a tx already decoded (by [`crate::chain::DecodedTxs`], which the app keeps
/// so that FinalizeBlock need not check the signature again).
pub fn check_decoded(
    state: &ChainState,
    mempool: &mut CheckState,
    tx: &SignedTx,
) -> Result<(), TxError> {
    let signer = hex::encode(tx.signer.as_bytes());
    let expected = mempool.expected_seq(state, &signer, tx.sequence);
    tx::check(state, tx, expected)?;
    let mut counts = mempool.check_requests.clone();
    tx::rate_limit(state, tx, &mut counts)?;
    mempool.check_requests = counts;
    mempool
        .check_seq
        .insert(signer, tx.sequence.saturating_add(1));
    Ok(())
}
