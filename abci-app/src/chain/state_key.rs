//! Every key of the chain state's write journal, in one place (STYLE.md rule 9). A
//! [`StateKey`] names one entry of the state; its encoding (`Display`) is a hierarchical
//! string with zero-padded numbers so that byte order is meaningful. The encoding is what the
//! journal stores and the app hash covers: it must never change.

use std::fmt;

use seqmpc_proto::{KeyId, NodeId, RequestId};

use crate::chain::entries::DeadlineItem;

/// One entry of the chain state, as the write journal names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateKey {
    /// The chain id and the hash of the genesis document (which holds the accounts, limits,
    /// governance and genesis nodes): `genesis`. Written once, at genesis.
    Genesis,
    /// A key: `key/<key id>`.
    Key(KeyId),
    /// A sign request: `sign/<request id>`.
    Sign(RequestId),
    /// The next sequence of a signer (hex public key): `seq/<hex>`.
    Sequence(String),
    /// Height of the last committed tx of a node (its liveness): `seen/<node>`.
    Seen(NodeId),
    /// A registered node: `node/<node>`. The Merkle tree holds every node; the journal only
    /// those a block wrote (a genesis node is in the genesis until a tx changes it).
    Node(NodeId),
    /// A governance proposal: `proposal/<16 hex digits>`.
    Proposal(String),
    /// A pending deadline: `deadline/<height, 20 digits>/<item>`, the item being
    /// `keygen/<key id>/<attempt, 10 digits>`, `sign/<request id>`,
    /// `reshare/<key id>/<attempt, 10 digits>`, `refresh/<key id>`,
    /// `sign-attempt/<request id>/<attempt, 10 digits>`, `sign-prune/<request id>` or
    /// `proposal/<id>`.
    Deadline(u64, DeadlineItem),
}

/// A proposal id as the state keys it: 16 lowercase hex digits.
fn proposal_id(s: &str) -> Result<String, String> {
    if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s.to_owned())
    } else {
        Err(format!("bad proposal id {s:?}"))
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateKey::Genesis => write!(f, "genesis"),
            StateKey::Key(id) => write!(f, "key/{id}"),
            StateKey::Sign(id) => write!(f, "sign/{id}"),
            StateKey::Sequence(signer_hex) => write!(f, "seq/{signer_hex}"),
            StateKey::Seen(node) => write!(f, "seen/{node}"),
            StateKey::Node(node) => write!(f, "node/{node}"),
            StateKey::Proposal(id) => write!(f, "proposal/{id}"),
            StateKey::Deadline(height, item) => {
                write!(f, "deadline/{height:020}/")?;
                match item {
                    DeadlineItem::KeyGen(k, attempt) => write!(f, "keygen/{k}/{attempt:010}"),
                    DeadlineItem::Sign(r) => write!(f, "sign/{r}"),
                    DeadlineItem::Reshare(k, attempt) => write!(f, "reshare/{k}/{attempt:010}"),
                    DeadlineItem::Refresh(k) => write!(f, "refresh/{k}"),
                    DeadlineItem::SignAttempt(r, attempt) => {
                        write!(f, "sign-attempt/{r}/{attempt:010}")
                    }
                    DeadlineItem::SignPrune(r) => write!(f, "sign-prune/{r}"),
                    DeadlineItem::Proposal(id) => write!(f, "proposal/{id}"),
                }
            }
        }
    }
}

impl StateKey {
    /// Parses an encoded key (of a journal line). Only the canonical encoding of a key is
    /// accepted: `parse(k.to_string()) == Ok(k)` and nothing else parses.
    pub fn parse(s: &str) -> Result<StateKey, String> {
        let bad = || format!("bad state key {s:?}");
        if s == "genesis" {
            return Ok(StateKey::Genesis);
        }
        let (kind, rest) = s.split_once('/').ok_or_else(bad)?;
        let key = match kind {
            "key" => StateKey::Key(KeyId::new(rest).map_err(|e| e.to_string())?),
            "sign" => StateKey::Sign(RequestId::new(rest).map_err(|e| e.to_string())?),
            "seq" => StateKey::Sequence(rest.to_owned()),
            "seen" => StateKey::Seen(NodeId::new(rest).map_err(|e| e.to_string())?),
            "node" => StateKey::Node(NodeId::new(rest).map_err(|e| e.to_string())?),
            "proposal" => StateKey::Proposal(proposal_id(rest)?),
            "deadline" => {
                let (height, item) = rest.split_once('/').ok_or_else(bad)?;
                let height: u64 = height.parse().map_err(|_| bad())?;
                let (what, rest) = item.split_once('/').ok_or_else(bad)?;
                let key_id = |k: &str| KeyId::new(k).map_err(|e| e.to_string());
                let attempt = |rest: &str| -> Result<(KeyId, u32), String> {
                    let (k, a) = rest.split_once('/').ok_or_else(bad)?;
                    Ok((key_id(k)?, a.parse().map_err(|_| bad())?))
                };
                let item = match what {
                    "keygen" => attempt(rest).map(|(k, a)| DeadlineItem::KeyGen(k, a))?,
                    "sign" => DeadlineItem::Sign(RequestId::new(rest).map_err(|e| e.to_string())?),
                    "reshare" => attempt(rest).map(|(k, a)| DeadlineItem::Reshare(k, a))?,
                    "refresh" => DeadlineItem::Refresh(key_id(rest)?),
                    "sign-attempt" => {
                        let (r, a) = rest.rsplit_once('/').ok_or_else(bad)?;
                        let r = RequestId::new(r).map_err(|e| e.to_string())?;
                        DeadlineItem::SignAttempt(r, a.parse().map_err(|_| bad())?)
                    }
                    "sign-prune" => {
                        DeadlineItem::SignPrune(RequestId::new(rest).map_err(|e| e.to_string())?)
                    }
                    "proposal" => DeadlineItem::Proposal(proposal_id(rest)?),
                    _ => return Err(bad()),
                };
                StateKey::Deadline(height, item)
            }
            _ => return Err(format!("unknown state key {s:?}")),
        };
        // Zero padding, signs, leading zeros: only the canonical form names the entry.
        if key.to_string() != s {
            return Err(bad());
        }
        Ok(key)
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn state_keys__should_encode_as_the_journal_always_did_and_parse_back() {
        let k = KeyId::new("k1").unwrap();
        let r = RequestId::new("r1").unwrap();
        let n = NodeId::new("node0").unwrap();
        let cases = [
            (StateKey::Genesis, "genesis"),
            (StateKey::Key(k.clone()), "key/k1"),
            (StateKey::Sign(r.clone()), "sign/r1"),
            (StateKey::Sequence("ab01".into()), "seq/ab01"),
            (StateKey::Seen(n.clone()), "seen/node0"),
            (StateKey::Node(n), "node/node0"),
            (
                StateKey::Deadline(7, DeadlineItem::KeyGen(k.clone(), 2)),
                "deadline/00000000000000000007/keygen/k1/0000000002",
            ),
            (
                StateKey::Deadline(u64::MAX, DeadlineItem::Sign(r.clone())),
                "deadline/18446744073709551615/sign/r1",
            ),
            (
                StateKey::Deadline(12, DeadlineItem::Reshare(k.clone(), u32::MAX)),
                "deadline/00000000000000000012/reshare/k1/4294967295",
            ),
            (
                StateKey::Deadline(0, DeadlineItem::Refresh(k)),
                "deadline/00000000000000000000/refresh/k1",
            ),
            (
                StateKey::Deadline(3, DeadlineItem::SignAttempt(r.clone(), 7)),
                "deadline/00000000000000000003/sign-attempt/r1/0000000007",
            ),
            (
                StateKey::Deadline(9, DeadlineItem::SignPrune(r.clone())),
                "deadline/00000000000000000009/sign-prune/r1",
            ),
            (
                StateKey::Proposal("0123456789abcdef".into()),
                "proposal/0123456789abcdef",
            ),
            (
                StateKey::Deadline(5, DeadlineItem::Proposal("0123456789abcdef".into())),
                "deadline/00000000000000000005/proposal/0123456789abcdef",
            ),
        ];
        for (key, encoded) in cases {
            assert_eq!(key.to_string(), encoded);
            assert_eq!(StateKey::parse(encoded), Ok(key));
        }
        for bad in [
            "genesis/",
            "key",
            "key/",
            "nope/x",
            "deadline/7/sign/r1",
            "deadline/00000000000000000007/keygen/k1/2",
            "deadline/00000000000000000007/other/k1",
            "seen/bad id",
            "proposal/0123456789ABCDEF",
            "proposal/0123",
            "deadline/00000000000000000005/proposal/x",
        ] {
            assert!(StateKey::parse(bad).is_err(), "{bad}");
        }
    }
}
