//! Who works on a session: the signers of a sign request and the dealers of a resharing, chosen
//! deterministically (every node derives the same subset) among live nodes first.

use seqmpc_proto::{KeyId, NodeId, RequestId, SessionId};
use sha2::{Digest, Sha256};

/// Chooses the `t` signers of a request: the parties ordered by
/// SHA-256("seqmpc/signers/v1" || key id || request id || party), first `t`. Every node derives
/// the same subset; the spread balances load across parties.
pub fn choose_signers(
    parties: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    request_id: &RequestId,
    is_live: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    choose(
        b"seqmpc/signers/v1",
        parties,
        threshold,
        key_id,
        request_id.as_str().as_bytes(),
        is_live,
    )
}

/// The signers of attempt `attempt` of a request (see `tx::sign_attempt`): attempt 0 is
/// [`choose_signers`]; a later attempt draws among `usable` (the parties not left out) in an
/// order salted with the attempt, so it tries another subset even when nobody was left out.
pub fn choose_signers_for_attempt(
    usable: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    request_id: &RequestId,
    attempt: u32,
    is_live: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    if attempt == 0 {
        return choose_signers(usable, threshold, key_id, request_id, is_live);
    }
    let mut salt = request_id.as_str().as_bytes().to_vec();
    salt.extend_from_slice(&attempt.to_be_bytes());
    choose(
        b"seqmpc/signers/attempt/v1",
        usable,
        threshold,
        key_id,
        &salt,
        is_live,
    )
}

/// Chooses the dealers of a resharing: `threshold` (the old one) of the old committee, live
/// first, ordered by SHA-256("seqmpc/dealers/v1" || key id || session || party).
pub fn choose_dealers(
    parties: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    session: &SessionId,
    is_live: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    choose(
        b"seqmpc/dealers/v1",
        parties,
        threshold,
        key_id,
        &session.0,
        is_live,
    )
}

fn choose(
    domain: &[u8],
    parties: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    salt: &[u8],
    is_live: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    // Live nodes first, each group in the request's pseudo-random order.
    let mut ranked: Vec<(bool, [u8; 32], &NodeId)> = parties
        .iter()
        .map(|p| {
            let mut h = Sha256::new();
            for part in [
                domain,
                key_id.as_str().as_bytes(),
                salt,
                p.as_str().as_bytes(),
            ] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            (!is_live(p), h.finalize().into(), p)
        })
        .collect();
    ranked.sort();
    let mut chosen: Vec<NodeId> = ranked
        .into_iter()
        .take(threshold as usize)
        .map(|(_, _, p)| p.clone())
        .collect();
    chosen.sort();
    chosen
}
