//! Who works on a session: the signers of a sign request and the dealers of a resharing, chosen
//! deterministically (every node derives the same subset) among live nodes first.

use seqmpc_proto::{KeyId, NodeId, RequestId, SessionId};
use sha2::{Digest, Sha256};

/// Chooses the `t` signers of a request committed in the block of hash `block_hash`: the
/// parties ordered by SHA-256("seqmpc/signers/v2" || key id || request id || block hash ||
/// party), first `t`. Every node derives the same subset; the spread balances load across
/// parties. The block hash is what the requester cannot choose: without it, a requester could
/// try request ids until one picks the signers it wants (a node to load, or one to avoid).
pub fn choose_signers(
    parties: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    request_id: &RequestId,
    block_hash: &[u8],
    is_live: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    choose(
        b"seqmpc/signers/v2",
        parties,
        threshold,
        key_id,
        &salt(request_id, block_hash, None),
        |p| u32::from(!is_live(p)),
    )
}

/// The request-specific part of a signer order: the request id, the hash of the block that
/// starts the attempt, and the attempt number after the first, each length-prefixed.
fn salt(request_id: &RequestId, block_hash: &[u8], attempt: Option<u32>) -> Vec<u8> {
    let mut salt = Vec::new();
    for part in [request_id.as_str().as_bytes(), block_hash] {
        salt.extend_from_slice(&(part.len() as u64).to_be_bytes());
        salt.extend_from_slice(part);
    }
    if let Some(attempt) = attempt {
        salt.extend_from_slice(&attempt.to_be_bytes());
    }
    salt
}

/// The signers of attempt `attempt` of a request (see `tx::sign_attempt`), started in the
/// block of hash `block_hash`: attempt 0 is [`choose_signers`] (with `rank` 0 for the live,
/// 1 for the others); a later attempt draws among `usable` (the parties not proven guilty)
/// lowest `rank` first, each rank in an order salted with the attempt and its block, so it
/// tries another subset even when the ranks did not change. It passes over a party that
/// `apart` says must not sign with one already drawn (two that named each other), unless too
/// few others remain: so no attempt holds both ends of a dispute while the parties allow it.
#[allow(clippy::too_many_arguments)]
pub fn choose_signers_for_attempt(
    usable: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    request_id: &RequestId,
    block_hash: &[u8],
    attempt: u32,
    rank: impl Fn(&NodeId) -> u32,
    apart: impl Fn(&NodeId, &NodeId) -> bool,
) -> Vec<NodeId> {
    if attempt == 0 {
        return choose_signers(usable, threshold, key_id, request_id, block_hash, |p| {
            rank(p) == 0
        });
    }
    let t = threshold as usize;
    let salt = salt(request_id, block_hash, Some(attempt));
    let mut chosen: Vec<NodeId> = Vec::with_capacity(t);
    let mut passed_over: Vec<&NodeId> = Vec::new();
    for p in order(b"seqmpc/signers/attempt/v2", usable, key_id, &salt, rank) {
        if chosen.len() >= t {
            break;
        }
        if chosen.iter().any(|c| apart(c, p)) {
            passed_over.push(p);
        } else {
            chosen.push(p.clone());
        }
    }
    let missing = t.saturating_sub(chosen.len());
    chosen.extend(passed_over.into_iter().take(missing).cloned());
    chosen.sort();
    chosen
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
        |p| u32::from(!is_live(p)),
    )
}

fn choose(
    domain: &[u8],
    parties: &[NodeId],
    threshold: u32,
    key_id: &KeyId,
    salt: &[u8],
    rank: impl Fn(&NodeId) -> u32,
) -> Vec<NodeId> {
    let mut chosen: Vec<NodeId> = order(domain, parties, key_id, salt, rank)
        .into_iter()
        .take(threshold as usize)
        .cloned()
        .collect();
    chosen.sort();
    chosen
}

/// `parties`, lowest rank first (the live before the others), each rank in the request's
/// pseudo-random order.
fn order<'a>(
    domain: &[u8],
    parties: &'a [NodeId],
    key_id: &KeyId,
    salt: &[u8],
    rank: impl Fn(&NodeId) -> u32,
) -> Vec<&'a NodeId> {
    let mut ranked: Vec<(u32, [u8; 32], &NodeId)> = parties
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
            (rank(p), h.finalize().into(), p)
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, _, p)| p).collect()
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("node{i}")).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn ids() -> (KeyId, RequestId) {
        (
            KeyId::new("k").unwrap_or_else(|e| panic!("{e}")),
            RequestId::new("r").unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn choose_signers__should_depend_on_the_block_not_only_on_the_request_id() {
        let (key, req) = ids();
        let parties = nodes(4);
        let pick = |hash: &[u8]| choose_signers(&parties, 2, &key, &req, hash, |_| true);
        // Deterministic for one block...
        assert_eq!(pick(&[1; 32]), pick(&[1; 32]));
        // ...but one request id lands on different subsets in different blocks, so no id a
        // requester picks in advance names the signers.
        let subsets: BTreeSet<Vec<NodeId>> = (0..32u8).map(|b| pick(&[b; 32])).collect();
        assert!(subsets.len() >= 4, "{subsets:?}");
        for s in &subsets {
            assert_eq!(s.len(), 2);
            assert!(s.is_sorted());
        }
    }

    #[test]
    fn choose_signers_for_attempt__should_try_other_subsets_in_one_block() {
        let (key, req) = ids();
        let parties = nodes(4);
        let block = [9u8; 32];
        let never = |_: &NodeId, _: &NodeId| false;
        let first = choose_signers_for_attempt(&parties, 2, &key, &req, &block, 0, |_| 0, never);
        assert_eq!(
            first,
            choose_signers(&parties, 2, &key, &req, &block, |_| true)
        );
        let later: BTreeSet<Vec<NodeId>> = (1..16)
            .map(|a| choose_signers_for_attempt(&parties, 2, &key, &req, &block, a, |_| 0, never))
            .collect();
        assert!(later.len() >= 3, "{later:?}");
        // Lowest rank first (the live and not left out before the others), then the next.
        let live = choose_signers_for_attempt(
            &parties,
            2,
            &key,
            &req,
            &block,
            3,
            |n| u32::from(n.as_str() == "node0" || n.as_str() == "node1"),
            never,
        );
        assert_eq!(live, nodes(4)[2..].to_vec());
        for a in 1..16 {
            let rank = |n: &NodeId| match n.as_str() {
                "node0" => 0,
                "node1" | "node2" => 1,
                _ => 2,
            };
            let ranked =
                choose_signers_for_attempt(&parties, 3, &key, &req, &block, a, rank, never);
            assert!(
                ranked.contains(&parties[0]) && !ranked.contains(&parties[3]),
                "{ranked:?}"
            );
            // node0 and node1 named each other: never together while others can sign.
            let pair = |x: &NodeId, y: &NodeId| {
                let mut p = [x.as_str(), y.as_str()];
                p.sort();
                p == ["node0", "node1"]
            };
            let apart = choose_signers_for_attempt(&parties, 3, &key, &req, &block, a, rank, pair);
            let expected = [parties[0].clone(), parties[2].clone(), parties[3].clone()];
            assert_eq!(apart, expected, "{apart:?}");
            // With too few others, the pair signs together.
            let three = &parties[..3];
            let forced = choose_signers_for_attempt(three, 3, &key, &req, &block, a, rank, pair);
            assert_eq!(forced, three, "{forced:?}");
        }
    }
}
