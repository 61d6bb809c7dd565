//! Signing liveness: attempts. A signing request runs in attempts, each with its own signer
//! set, session and short deadline (`sign_attempt_blocks`). The request ends DONE on the first
//! signature that verifies (from any attempt), and ERROR only at its own deadline or when
//! fewer than `threshold` usable signers remain.
//!
//! Who is left out of the next attempts, for this request only (a preference: they are drawn
//! only when too few others remain, except the proven guilty, who are never drawn again):
//! - a signer whose misbehaviour the chain proved (evidence);
//! - a signer that a strict majority of the attempt's other signers name in their failure
//!   reports (a dead or silent signer is named by every live one; one lying signer cannot
//!   exclude an honest one, and its false report alone ends nothing: the honest signers still
//!   finish and the first valid signature wins);
//! - at the attempt's deadline, a signer that sent no report and that a strict majority of the
//!   reports name (it was silent towards the chain as well). An honest signer whose own report
//!   is merely late, as on a loaded machine, is named by no honest report and stays in; a lone
//!   liar's report can leave out one late signer for this request, never the request;
//! - at once, a signer whose report names itself: it cannot take part (its share is not of the
//!   key's generation on chain, its store failed, it is overloaded);
//! - once every signer of the attempt has reported, both signers of a pair that name each other
//!   (pair elimination: the chain cannot tell which of the two lies), unless one of them is in
//!   several pairs, which then goes alone ([`left_out`]). A signer that withholds its messages
//!   from one honest signer (a CGGMP24 round, FROST commitments) makes that one look stalled
//!   to every other signer, so with its own claim it would be a majority naming its victim;
//!   but the victim names it back, and it goes too.
//!
//! A report that comes after its attempt ended (a loaded signer) still counts for that attempt:
//! the chain keeps the attempts that ended ([`EndedAttempt`], also shown by `mpcctl
//! sign-status`); for the one before the current one, a signer that a
//! strict majority of its other signers name, counting late reports, is left out as above. If
//! the current attempt has that signer, the next attempt starts at once.
//!
//! A new attempt starts at once when a report excludes someone, or when every signer of the
//! attempt has reported a failure; otherwise at the attempt deadline. Each attempt draws its
//! signers in a new order (live nodes not left out first; then the others, those the reports
//! left out in fewer attempts first), so even an attempt that excluded nobody tries another
//! subset, and a signer that frames others (it is in every pair it makes) is drawn after its
//! victims.

use seqmpc_module::job::{Job, KeyVersion};
use seqmpc_proto::{NodeId, RequestId, Scheme, SessionId};

use super::session::CGGMP_SIGN_DEADLINE_FACTOR;
use super::{ev, Effects};
use crate::chain::committee::choose_signers_for_attempt;
use crate::chain::entries::{
    DeadlineItem, EndedAttempt, SignEntry, SignStatus, MAX_ENDED_ATTEMPTS,
};
use crate::chain::state::ChainState;

/// Height at which an attempt of a `scheme` signing started at `height` is given up (never
/// after the request's own deadline).
pub(crate) fn attempt_deadline(
    state: &ChainState,
    scheme: Scheme,
    height: u64,
    request_deadline: u64,
) -> u64 {
    let blocks = state.limits.sign_attempt_blocks.max(1);
    let blocks = match scheme {
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => blocks,
        Scheme::Cggmp24Secp256k1 => blocks.saturating_mul(CGGMP_SIGN_DEADLINE_FACTOR),
    };
    height.saturating_add(blocks).min(request_deadline)
}

/// The signers of `signers` that a strict majority of the others name in `claims`.
fn majority_accused(
    signers: &[NodeId],
    claims: &std::collections::BTreeMap<NodeId, Vec<NodeId>>,
) -> Vec<NodeId> {
    let others = signers.len().saturating_sub(1);
    signers
        .iter()
        .filter(|x| {
            let accusers = claims
                .iter()
                .filter(|(by, named)| by != x && signers.contains(by) && named.contains(x))
                .count();
            others > 0 && accusers.saturating_mul(2) > others
        })
        .cloned()
        .collect()
}

/// Who an attempt's failure reports (`claims`) leave out: the signers a strict majority of
/// the others name, a signer that names itself, and the signers of pairs that name each other
/// (see [`mutual_pairs`]), once every signer has reported: both of a pair when neither is in
/// another pair (the chain cannot tell which one lies), else the one in several pairs (it
/// disputes the links to several signers that dispute nothing among themselves: a signer
/// silent towards all of them). Sorted, each once.
fn left_out(
    signers: &[NodeId],
    claims: &std::collections::BTreeMap<NodeId, Vec<NodeId>>,
) -> Vec<NodeId> {
    let mut out = majority_accused(signers, claims);
    // A signer that names itself cannot take part (no READY share of this generation, e.g.
    // restored from an old backup): it steps aside at once. Only the reporter can say this of
    // itself, so it costs no one else anything.
    out.extend(
        claims
            .iter()
            .filter(|(by, named)| named.contains(by))
            .map(|(by, _)| by.clone()),
    );
    // Pairs weigh only once every signer has reported: before that, a signer silent towards
    // all others and the first one that names it back look like a lone pair.
    if !signers.iter().all(|s| claims.contains_key(s)) {
        out.sort();
        out.dedup();
        return out;
    }
    let pairs = mutual_pairs(claims);
    let degree = |n: &NodeId| pairs.iter().filter(|(a, b)| a == n || b == n).count();
    for (a, b) in &pairs {
        let (da, db) = (degree(a), degree(b));
        if da == 1 && db == 1 {
            out.extend([a.clone(), b.clone()]);
        } else {
            out.extend(
                [(a, da), (b, db)]
                    .into_iter()
                    .filter(|(_, d)| *d > 1)
                    .map(|(n, _)| n.clone()),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The pairs of signers that name each other in `claims`, each as (lower id, higher id).
///
/// Two such signers disagree about the link between them. A CGGMP24 signer that withholds a
/// round from one honest signer only and names it, against the honest one that names it back;
/// a FROST signer silent towards every other one that names them all for the round it never
/// got. Honest signers never name each other: one names another only while that one is a
/// round behind it (or their link is broken, when leaving both out is right too).
fn mutual_pairs(
    claims: &std::collections::BTreeMap<NodeId, Vec<NodeId>>,
) -> std::collections::BTreeSet<(NodeId, NodeId)> {
    let mut pairs = std::collections::BTreeSet::new();
    for (by, named) in claims {
        for accused in named {
            let mutual = accused != by
                && claims
                    .get(accused)
                    .is_some_and(|theirs| theirs.contains(by));
            if mutual {
                pairs.insert((by.min(accused).clone(), by.max(accused).clone()));
            }
        }
    }
    pairs
}

/// Records `report` among an attempt's `claims`; returns who the claims now leave out
/// ([`left_out`]).
fn record_claim(
    signers: &[NodeId],
    claims: &mut std::collections::BTreeMap<NodeId, Vec<NodeId>>,
    report: &Failure<'_>,
) -> Vec<NodeId> {
    claims.insert(report.node.clone(), report.culprits.to_vec());
    left_out(signers, claims)
}

/// The pairs of signers that named each other in an attempt of a request (those it keeps,
/// and the current one). A later attempt holds at most one of each pair while enough others
/// remain: a signer that frames others must then frame a new one in every attempt it is drawn
/// for, and is soon drawn after all of them (it is in every pair it makes, each of its victims
/// only in its own).
fn disputes(req: &SignEntry) -> std::collections::BTreeSet<(NodeId, NodeId)> {
    let current = std::iter::once(&req.claims);
    let ended = req.ended_attempts.iter().map(|a| &a.claims);
    ended.chain(current).flat_map(mutual_pairs).collect()
}

/// How many of a request's attempts (those it keeps, and the current one) left each signer
/// out by their reports. A signer that frames others is in every pair it makes, each of its
/// victims only in its own: drawn after them, it soon takes no part in the request.
fn times_left_out(req: &SignEntry) -> std::collections::BTreeMap<NodeId, u32> {
    let mut times = std::collections::BTreeMap::<NodeId, u32>::new();
    let current = std::iter::once((&req.signers, &req.claims));
    let ended = req.ended_attempts.iter().map(|a| (&a.signers, &a.claims));
    for (signers, claims) in ended.chain(current) {
        for n in left_out(signers, claims) {
            let t = times.entry(n).or_default();
            *t = t.saturating_add(1);
        }
    }
    times
}

/// A failure report of the current attempt.
pub(crate) struct Failure<'a> {
    /// The reporting signer.
    pub node: &'a NodeId,
    /// The signers it names.
    pub culprits: &'a [NodeId],
    /// Those of them the chain proved guilty from the report's evidence.
    pub proven: &'a [NodeId],
    /// The report's reason, as the request shows it.
    pub reason: String,
}

/// Records a failure report of the current attempt of `request_id` and starts the next
/// attempt when the rules above say so.
pub(crate) fn on_failure(
    state: &mut ChainState,
    request_id: &RequestId,
    report: Failure<'_>,
    height: u64,
    fx: &mut Effects,
) {
    let Some(req) = state.sign_mut(request_id) else {
        return;
    };
    let mut out: Vec<NodeId> = report.proven.to_vec();
    out.extend(record_claim(&req.signers, &mut req.claims, &report));
    req.error = Some(report.reason);
    let everyone_failed = req.signers.iter().all(|s| req.claims.contains_key(s));
    if out.is_empty() && !everyone_failed {
        return; // wait for the other signers, a signature, or the attempt deadline
    }
    exclude(req, out);
    next_attempt(state, request_id, height, fx);
}

/// A failure report of the attempt before the current one of `request_id`, come late: it
/// counts against the signers of that attempt it names, and starts the next attempt at once
/// if the current one has a signer this leaves out.
pub(crate) fn on_late_failure(
    state: &mut ChainState,
    request_id: &RequestId,
    report: Failure<'_>,
    height: u64,
    fx: &mut Effects,
) {
    let Some(req) = state.sign_mut(request_id) else {
        return;
    };
    let Some(previous) = req.ended_attempts.last_mut() else {
        return;
    };
    let mut out = record_claim(&previous.signers, &mut previous.claims, &report);
    out.retain(|n| !req.excluded.contains(n));
    if out.is_empty() {
        return;
    }
    let now_in = out.iter().any(|n| req.signers.contains(n));
    if req.error.is_none() {
        req.error = Some(report.reason);
    }
    exclude(req, out);
    if now_in {
        next_attempt(state, request_id, height, fx);
    }
}

/// The attempt deadline of `request_id` passed: the signers silent towards the chain that a
/// strict majority of the reports name are left out, and the next attempt starts.
pub(crate) fn expire(
    state: &mut ChainState,
    request_id: RequestId,
    attempt: u32,
    height: u64,
    fx: &mut Effects,
) {
    let Some(req) = state.sign_mut(&request_id) else {
        return;
    };
    if req.status != SignStatus::Pending || req.attempt != attempt {
        return;
    }
    let reports = req.claims.len();
    let silent: Vec<NodeId> = req
        .signers
        .iter()
        .filter(|s| !req.claims.contains_key(*s))
        .filter(|s| {
            let named = req
                .claims
                .values()
                .filter(|named| named.contains(s))
                .count();
            named.saturating_mul(2) > reports
        })
        .cloned()
        .collect();
    if req.error.is_none() {
        req.error = Some(format!(
            "attempt {attempt} passed its deadline at height {height}"
        ));
    }
    exclude(req, silent);
    next_attempt(state, &request_id, height, fx);
}

fn exclude(req: &mut SignEntry, nodes: Vec<NodeId>) {
    for n in nodes {
        if !req.excluded.contains(&n) {
            req.excluded.push(n);
        }
    }
    req.excluded.sort();
}

/// Starts attempt `attempt + 1` of a PENDING request among the parties not excluded, or ends
/// it ERROR when fewer than the threshold remain.
fn next_attempt(state: &mut ChainState, request_id: &RequestId, height: u64, fx: &mut Effects) {
    let Some(req) = state.sign_requests().get(request_id) else {
        return;
    };
    let Some(key) = state.keys().get(&req.key_id) else {
        return;
    };
    let (key_id, scheme, threshold) = (key.key_id.clone(), key.scheme, key.threshold);
    let key_version = KeyVersion {
        generation: key.generation,
        session: key.session,
    };
    // The proven guilty never sign again for this request; the others left out only when
    // too few remain (a silent signer may have been cut off for a moment).
    let usable: Vec<NodeId> = key
        .parties
        .iter()
        .filter(|p| !req.proven_blame.iter().any(|b| &b.culprit == *p))
        .cloned()
        .collect();
    let excluded = req.excluded.clone();
    let times = times_left_out(req);
    let disputes = disputes(req);
    let attempt = req.attempt.saturating_add(1);
    let old = (req.attempt_deadline, req.attempt);
    let request_deadline = req.deadline_height;
    let signers = choose_signers_for_attempt(
        &usable,
        threshold,
        &key_id,
        request_id,
        &fx.block_hash,
        attempt,
        // The live that are not left out first; then the others, those the reports left out
        // fewer times first.
        |n| {
            let first = !excluded.contains(n) && state.is_live(n, height);
            if first {
                0
            } else {
                times.get(n).copied().unwrap_or(0).saturating_add(1)
            }
        },
        |a, b| disputes.contains(&(a.min(b).clone(), a.max(b).clone())),
    );
    let session = SessionId::derive(
        "sign",
        &state.chain_id,
        height,
        &req.session.0,
        request_id.as_str(),
        attempt,
    );
    let deadline = attempt_deadline(state, scheme, height, request_deadline);
    let (message, prehashed) = (req.message.clone(), req.prehashed);
    state.remove_deadline(old.0, DeadlineItem::SignAttempt(request_id.clone(), old.1));
    let Some(req) = state.sign_mut(request_id) else {
        return;
    };
    if (usable.len() as u64) < u64::from(threshold) || deadline <= height {
        let why = if deadline <= height {
            format!("no time left for another attempt before height {request_deadline}")
        } else {
            format!(
                "fewer than {threshold} signers remain that are not proven guilty (left out: {})",
                names(&req.excluded)
            )
        };
        let last = req.error.take().unwrap_or_default();
        req.status = SignStatus::Error;
        req.error = Some(if last.is_empty() {
            why
        } else {
            format!("{why}; last: {last}")
        });
        req.culprits = req.excluded.clone();
        let item = DeadlineItem::Sign(request_id.clone());
        state.remove_deadline(request_deadline, item);
        super::sign::schedule_prune(state, request_id, height);
        super::sign::ended_in_error(fx, request_id.clone());
        return;
    }
    if req.ended_attempts.len() >= MAX_ENDED_ATTEMPTS {
        req.ended_attempts.remove(0);
    }
    req.ended_attempts.push(EndedAttempt {
        attempt: req.attempt,
        session: req.session,
        signers: std::mem::take(&mut req.signers),
        ended_height: height,
        claims: std::mem::take(&mut req.claims),
    });
    req.attempt = attempt;
    req.attempt_deadline = deadline;
    req.signers = signers.clone();
    req.session = session;
    let excluded = names(&req.excluded);
    state.add_deadline(
        deadline,
        DeadlineItem::SignAttempt(request_id.clone(), attempt),
    );
    fx.events.push(ev(
        "sign_attempt",
        vec![
            ("request_id", request_id.to_string()),
            ("attempt", attempt.to_string()),
            ("signers", names(&signers)),
            ("left_out", excluded),
        ],
    ));
    let message = hex::decode(message).unwrap_or_default();
    fx.jobs.push(Job::Sign {
        session,
        request_id: request_id.clone(),
        key_id,
        message,
        prehashed,
        scheme,
        signers,
        key_version,
        height,
        deadline_height: deadline,
        block_time_ms: fx.block_time_ms,
    });
}

fn names(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
