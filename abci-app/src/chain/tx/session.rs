//! What every session request shares: its committee check and its deadline.

use std::collections::BTreeSet;

use seqmpc_proto::{NodeId, Scheme};

use super::TxError;
use crate::chain::state::ChainState;

/// CGGMP24 sessions run for seconds (full signing) to minutes (aux info from fresh primes), so
/// their chain deadline is longer. A keygen's is the genesis `cggmp_keygen_deadline_blocks`,
/// or, when that is 0, this many times `session_deadline_blocks`.
pub const CGGMP_KEYGEN_DEADLINE_FACTOR: u64 = 30;
/// See [`CGGMP_KEYGEN_DEADLINE_FACTOR`]; for a full CGGMP24 signing. A full signing costs
/// about 7 s of CPU on the 2-core reference machine, so 10 at once take over a minute: 20x
/// (200 s at 100 ms blocks, under the nodes' 300 s local timeout).
pub const CGGMP_SIGN_DEADLINE_FACTOR: u64 = 20;

/// Deadline height of a session of `scheme` started at `height`.
pub(super) fn session_deadline(
    state: &ChainState,
    scheme: Scheme,
    keygen: bool,
    height: u64,
) -> u64 {
    let blocks = state.limits.session_deadline_blocks;
    let blocks = match (scheme, keygen) {
        (Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr, _) => blocks,
        (Scheme::Cggmp24Secp256k1, true) => match state.limits.cggmp_keygen_deadline_blocks {
            0 => blocks.saturating_mul(CGGMP_KEYGEN_DEADLINE_FACTOR),
            n => n,
        },
        (Scheme::Cggmp24Secp256k1, false) => blocks.saturating_mul(CGGMP_SIGN_DEADLINE_FACTOR),
    };
    height.saturating_add(blocks)
}

/// The committee a request names (empty: every registered node), sorted, checked against the
/// registry, the party limit and the scheme's threshold range.
pub(super) fn check_committee(
    state: &ChainState,
    scheme: Scheme,
    threshold: u32,
    parties: &[NodeId],
) -> Result<Vec<NodeId>, TxError> {
    let committee: Vec<NodeId> = if parties.is_empty() {
        state.nodes.keys().cloned().collect()
    } else {
        let set: BTreeSet<&NodeId> = parties.iter().collect();
        if set.len() != parties.len() {
            return Err(TxError::Invalid("a party is listed twice".into()));
        }
        for p in parties {
            if !state.nodes.contains_key(p) {
                return Err(TxError::Invalid(format!(
                    "unknown party {p}: not in the node registry"
                )));
            }
        }
        set.into_iter().cloned().collect()
    };
    let n = committee.len() as u32;
    if n > state.limits.max_parties {
        return Err(TxError::Invalid(format!(
            "{n} parties exceed the limit of {}",
            state.limits.max_parties
        )));
    }
    // FROST: t = 1 would give every party the whole key. cggmp24's threshold DKG itself
    // refuses t < 2 (and signs with exactly t signers).
    let scheme_min = match scheme {
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr | Scheme::Cggmp24Secp256k1 => 2,
    };
    // The genesis may raise the floor (`min_threshold`), never lower it.
    let min_t = scheme_min.max(state.limits.min_threshold);
    if threshold < min_t || threshold > n {
        return Err(TxError::Invalid(format!(
            "threshold {threshold} is out of range: {scheme} needs {min_t} <= threshold <= parties ({n})"
        )));
    }
    Ok(committee)
}
