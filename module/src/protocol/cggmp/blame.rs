//! Maps cggmp24's errors to [`ProtocolError`], with its blame mapped to node ids.
//!
//! cggmp24 0.7.0-alpha.3 keeps the reason of an error private: `SigningError`,
//! `KeygenError` and `KeyRefreshError` expose only `Display`, `Debug` and `source()`. Its
//! blame (`AbortBlame { faulty_party, data_message, proof_message }`, the `parties` of
//! keygen's Feldman and size checks, keygen's `Round1NotReliable([(party, msg), ..])`) and
//! round-based's routing errors (`sender`, `msg_id`) appear only in the `Debug` form, so
//! that is what we read. The crate is pinned to an exact version and the tests check that
//! a forged proof is blamed on its sender; an unrecognised form yields an abort with no
//! culprit, never a wrong one (indices out of range are dropped).

use std::collections::{BTreeMap, BTreeSet};

use round_based::MsgId;

use super::Parties;
use crate::error::ProtocolError;

/// Classifies a cggmp24 error and names the parties it blames.
pub(crate) fn to_protocol_error(
    what: &str,
    err: &(dyn std::error::Error + 'static),
    parties: &Parties,
    senders: &BTreeMap<MsgId, u16>,
) -> ProtocolError {
    let debug = format!("{err:?}");
    let reason = format!("{what}: {}", chain(err));
    let mut blamed: BTreeSet<u16> = BTreeSet::new();
    for key in ["faulty_party: ", "sender: "] {
        blamed.extend(numbers_after(&debug, key).into_iter().filter_map(to_u16));
    }
    blamed.extend(
        lists_after(&debug, "parties: [")
            .into_iter()
            .filter_map(to_u16),
    );
    blamed.extend(
        tuple_heads_after(&debug, "NotReliable([")
            .into_iter()
            .filter_map(to_u16),
    );
    blamed.extend(
        numbers_after(&debug, "msg_id: ")
            .into_iter()
            .filter_map(|id| senders.get(&id).copied()),
    );
    let culprits: Vec<_> = blamed
        .into_iter()
        .filter(|i| *i != parties.me())
        .filter_map(|i| parties.node(i).cloned())
        .collect();
    let aborted = debug.contains("Aborted(") || debug.contains("RouteReceivedError");
    if !culprits.is_empty() || aborted {
        ProtocolError::Aborted { culprits, reason }
    } else if debug.contains("InvalidArgs(") || debug.contains("InvalidKeyShare(") {
        ProtocolError::Local(reason)
    } else {
        ProtocolError::Bug(reason)
    }
}

/// `Display` of an error and its sources, joined with ": ".
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

fn to_u16(x: u64) -> Option<u16> {
    u16::try_from(x).ok()
}

/// Leading decimal number of `s`, if any.
fn leading_number(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.get(..end).and_then(|d| d.parse().ok())
}

/// The number right after every occurrence of `key`.
fn numbers_after(s: &str, key: &str) -> Vec<u64> {
    s.match_indices(key)
        .filter_map(|(at, _)| s.get(at + key.len()..).and_then(leading_number))
        .collect()
}

/// The numbers of a `[a, b, ..]` list right after every occurrence of `key` (which ends with
/// the opening bracket); lists of anything else are skipped.
fn lists_after(s: &str, key: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for (at, _) in s.match_indices(key) {
        let Some(rest) = s.get(at + key.len()..) else {
            continue;
        };
        let Some(body) = rest.split(']').next() else {
            continue;
        };
        let items: Option<Vec<u64>> = body
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().ok())
            .collect();
        out.extend(items.unwrap_or_default());
    }
    out
}

/// The first number of every `(a, b)` tuple of a list right after `key`.
fn tuple_heads_after(s: &str, key: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for (at, _) in s.match_indices(key) {
        let Some(rest) = s.get(at + key.len()..) else {
            continue;
        };
        let body = rest.split(']').next().unwrap_or_default();
        out.extend(
            body.split('(')
                .filter_map(|t| leading_number(t.trim_start())),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_debug_forms_of_cggmp24_blame() {
        let s = "SigningError(Aborted(EncProofOfK([(AbortBlame { faulty_party: 2, \
                 data_message: 7, proof_message: 9 }, InvalidProof)])))";
        assert_eq!(numbers_after(s, "faulty_party: "), vec![2]);
        let s = "KeygenError(Aborted(FeldmanVerificationFailed { parties: [1, 3] }))";
        assert_eq!(lists_after(s, "parties: ["), vec![1, 3]);
        let s = "KeyRefreshError(Aborted(ProtocolAborted { reason: InvalidModProof, \
                 parties: [AbortBlame { faulty_party: 0, data_message: 1, proof_message: 2 }] }))";
        assert_eq!(lists_after(s, "parties: ["), Vec::<u64>::new());
        assert_eq!(numbers_after(s, "faulty_party: "), vec![0]);
        let s = "KeygenError(Aborted(Round1NotReliable([(1, 4), (3, 8)])))";
        assert_eq!(tuple_heads_after(s, "NotReliable(["), vec![1, 3]);
        let s = "AttemptToOverwriteReceivedMsg { msgs_ids: [1, 2], sender: 3 }";
        assert_eq!(numbers_after(s, "sender: "), vec![3]);
    }
}
