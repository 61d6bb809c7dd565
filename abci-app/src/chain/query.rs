//! ABCI Query: the paths the app answers and the JSON each returns, as one set of types that
//! the app serializes and its clients (`mpcctl`, `localnet`, mpcd's submitter) deserialize.
//! Read-only over the committed state.
//!
//! | path | answer |
//! |---|---|
//! | `/key/<id>` | [`KeyEntry`] |
//! | `/keys` | `Vec<KeyEntry>` |
//! | `/sign/<request id>` | [`SignEntry`] |
//! | `/nodes` | `Vec<NodeView>` |
//! | `/account/<hex public key>` | [`AccountView`] |
//! | `/proposals` | [`ProposalsView`] |
//! | `/proposal/<id>` | [`ProposalEntry`] |
//! | `/state` (data: a state key, e.g. `seq/<hex>`) | the entry's JSON |
//!
//! A query with `prove` or a past `height` ([`query_at`]) reads one entry from the state's
//! Merkle tree at that height: `/key/<id>`, `/sign/<request id>`, `/proposal/<id>` or `/state`.
//! Its answer carries the entry's canonical JSON (object fields in name order) and, with
//! `prove`, an ICS23 proof of it (or of its absence) against the app hash that the header of
//! the next height holds ([`merkle::verify`]).

use seqmpc_proto::{KeyId, NodeId, RequestId};
use serde::{Deserialize, Serialize};

use crate::chain::entries::{AccountEntry, NodeEntry, ProposalEntry};
#[cfg(doc)]
use crate::chain::entries::{KeyEntry, SignEntry};
use crate::chain::genesis::Governance;
use crate::chain::merkle::{self, TreeError};
use crate::chain::state::ChainState;
use crate::chain::state_key::StateKey;
use crate::chain::tx::TxError;

/// A query path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// `/key/<id>`: a [`KeyEntry`].
    Key(KeyId),
    /// `/keys`: every [`KeyEntry`], by key id.
    Keys,
    /// `/sign/<request id>`: a [`SignEntry`].
    Sign(RequestId),
    /// `/nodes`: every registered node, as a [`NodeView`], by node id.
    Nodes,
    /// `/account/<hex public key>`: an [`AccountView`] (the key is lowercased).
    Account(String),
    /// `/proposals`: the governance and every proposal in the state, as a [`ProposalsView`].
    Proposals,
    /// `/proposal/<id>`: a [`ProposalEntry`].
    Proposal(String),
    /// `/state`, the query's data naming a state key: that entry's JSON.
    State,
}

impl Query {
    /// The path to send.
    pub fn path(&self) -> String {
        match self {
            Query::Key(id) => format!("/key/{id}"),
            Query::Keys => "/keys".into(),
            Query::Sign(id) => format!("/sign/{id}"),
            Query::Nodes => "/nodes".into(),
            Query::Account(pk) => format!("/account/{pk}"),
            Query::Proposals => "/proposals".into(),
            Query::Proposal(id) => format!("/proposal/{id}"),
            Query::State => "/state".into(),
        }
    }

    /// Parses a path (trailing slashes ignored).
    pub fn parse(path: &str) -> Result<Query, QueryError> {
        let path = path.trim_end_matches('/');
        let invalid = |e: seqmpc_proto::DomainError| QueryError {
            code: 6,
            log: e.to_string(),
        };
        if let Some(id) = path.strip_prefix("/key/") {
            return KeyId::new(id).map(Query::Key).map_err(invalid);
        }
        if let Some(id) = path.strip_prefix("/sign/") {
            return RequestId::new(id).map(Query::Sign).map_err(invalid);
        }
        if let Some(pk) = path.strip_prefix("/account/") {
            return Ok(Query::Account(pk.to_ascii_lowercase()));
        }
        if let Some(id) = path.strip_prefix("/proposal/") {
            return Ok(Query::Proposal(id.to_ascii_lowercase()));
        }
        match path {
            "/keys" => Ok(Query::Keys),
            "/nodes" => Ok(Query::Nodes),
            "/proposals" => Ok(Query::Proposals),
            "/state" => Ok(Query::State),
            _ => Err(QueryError {
                code: 1,
                log: format!(
                    "unknown query path {path:?}; known: /key/<id>, /keys, /sign/<request_id>, /nodes, /account/<hex key>, /proposals, /proposal/<id>, /state"
                ),
            }),
        }
    }
}

/// A registered node with its liveness (`/nodes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The registry entry.
    #[serde(flatten)]
    pub node: NodeEntry,
    /// Height of its last committed tx (heartbeat or result), if any.
    pub last_seen: Option<u64>,
    /// Whether it is live (within `liveness_window_blocks`; signers are chosen among live
    /// nodes first).
    pub live: bool,
}

/// A signer's key, its next sequence and who it is (`/account/<hex key>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The hex public key, lowercase.
    pub public_key: String,
    /// The sequence its next tx must carry.
    pub sequence: u64,
    /// The genesis account of this key, if it is one.
    pub account: Option<AccountEntry>,
    /// The node of this key, if it is one.
    pub node: Option<NodeId>,
}

/// The governance and its proposals (`/proposals`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalsView {
    /// Who approves, how many, and the delay (None: resharing to other committees and node
    /// admission are refused on this chain).
    pub governance: Option<Governance>,
    /// Proposals open or recently ended, by id.
    pub proposals: Vec<ProposalEntry>,
}

/// A query the app cannot answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{log}")]
pub struct QueryError {
    /// ABCI code: 1 (unknown path or encoding), 6 (bad id) or 7 (not found).
    pub code: u32,
    /// Why.
    pub log: String,
}

/// The one state entry a query names, if it names one (`data`: the state key of `/state`).
fn entry_key(q: &Query, data: &[u8]) -> Result<StateKey, QueryError> {
    match q {
        Query::Key(id) => Ok(StateKey::Key(id.clone())),
        Query::Sign(id) => Ok(StateKey::Sign(id.clone())),
        Query::Proposal(id) => Ok(StateKey::Proposal(id.clone())),
        Query::State => std::str::from_utf8(data)
            .map_err(|_| "the state key is not UTF-8".to_owned())
            .and_then(StateKey::parse)
            .map_err(|log| QueryError { code: 6, log }),
        _ => Err(QueryError {
            code: 1,
            log: format!(
                "{} names no single state entry: a proof or a past height is for /key/<id>, \
                 /sign/<request_id>, /proposal/<id> or /state (data: a state key)",
                q.path()
            ),
        }),
    }
}

/// What a query at a height answers ([`query_at`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EntryAnswer {
    /// The state key (the Merkle tree's key).
    pub key: Vec<u8>,
    /// The entry's canonical JSON at `height` (None: absent).
    pub value: Option<Vec<u8>>,
    /// The height answered.
    pub height: u64,
    /// With `prove`: the ICS23 proof of `value` (or of the absence) against the app hash
    /// after `height`.
    pub proof: Option<ics23::CommitmentProof>,
}

/// Answers `path` (with its `data`) at `height` (0: the latest) from the state's Merkle tree,
/// with a proof when `prove`. The path must name one entry (`entry_key`); the height must
/// be a kept one ([`merkle::KEEP_VERSIONS`]).
pub fn query_at(
    state: &ChainState,
    path: &str,
    data: &[u8],
    height: u64,
    prove: bool,
) -> Result<EntryAnswer, QueryError> {
    let key = entry_key(&Query::parse(path)?, data)?
        .to_string()
        .into_bytes();
    let height = if height == 0 { state.height } else { height };
    let tree_err = |e: TreeError| QueryError {
        code: 1,
        log: e.to_string(),
    };
    let (value, proof) = if prove {
        let (v, p) = state.tree().prove(&key, height).map_err(tree_err)?;
        (v, Some(p))
    } else {
        (state.tree().get(&key, height).map_err(tree_err)?, None)
    };
    Ok(EntryAnswer {
        key,
        value,
        height,
        proof,
    })
}

/// Checks an answer of [`query_at`] with a proof against `app_hash` (of the header after its
/// height): true when the proof shows the value (or the absence) under that root.
pub fn verify_answer(answer: &EntryAnswer, app_hash: &[u8]) -> bool {
    answer
        .proof
        .as_ref()
        .is_some_and(|p| merkle::verify(app_hash, &answer.key, answer.value.as_deref(), p))
}

/// Answers query `path` from `state`: the JSON of the path's type (see the module docs).
/// `/state` needs its data: [`query_at`] answers it.
pub fn query(state: &ChainState, path: &str) -> Result<Vec<u8>, QueryError> {
    let json = |v: serde_json::Result<Vec<u8>>| {
        v.map_err(|e| QueryError {
            code: 1,
            log: e.to_string(),
        })
    };
    let not_found = |log: String| QueryError {
        code: TxError::NOT_FOUND,
        log,
    };
    match Query::parse(path)? {
        Query::Key(id) => {
            let key = state
                .keys()
                .get(&id)
                .ok_or_else(|| not_found(format!("key {id} does not exist")))?;
            json(serde_json::to_vec(key))
        }
        Query::Sign(id) => {
            let req = state.sign_requests().get(&id).ok_or_else(|| {
                let keep = state.limits.sign_retention_blocks;
                not_found(if keep == 0 {
                    format!("sign request {id} does not exist")
                } else {
                    format!(
                        "sign request {id} does not exist (a finished request leaves the \
                             state {keep} blocks after it ended; its outcome stays in the \
                             sign_done or sign_failed event of that block: block_results)"
                    )
                })
            })?;
            json(serde_json::to_vec(req))
        }
        Query::Account(pk) => {
            let account = state.accounts.get(&pk).cloned();
            let node = state.node_keys.get(&pk).cloned();
            if account.is_none() && node.is_none() {
                return Err(not_found(format!("no account or node with key {pk}")));
            }
            json(sorted(&AccountView {
                sequence: state.sequence(&pk),
                public_key: pk,
                account,
                node,
            }))
        }
        Query::Proposals => json(serde_json::to_vec(&ProposalsView {
            governance: state.governance.clone(),
            proposals: state.proposals().values().cloned().collect(),
        })),
        Query::Proposal(id) => {
            let p = state
                .proposals()
                .get(&id)
                .ok_or_else(|| not_found(format!("proposal {id} does not exist")))?;
            json(serde_json::to_vec(p))
        }
        Query::Keys => json(serde_json::to_vec(
            &state.keys().values().collect::<Vec<_>>(),
        )),
        Query::State => Err(QueryError {
            code: 1,
            log: "/state needs the state key as data".into(),
        }),
        Query::Nodes => json(sorted(
            &state
                .nodes
                .values()
                .map(|n| NodeView {
                    node: n.clone(),
                    last_seen: state.last_seen(&n.id),
                    live: state.is_live(&n.id, state.height),
                })
                .collect::<Vec<_>>(),
        )),
    }
}

/// JSON with every object's fields in name order (as the app has always answered these).
fn sorted<T: Serialize>(v: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_value(v).and_then(|v| serde_json::to_vec(&v))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn query_paths__should_parse_back_to_what_they_name() {
        let queries = [
            Query::Key(KeyId::new("k1").unwrap()),
            Query::Keys,
            Query::Sign(RequestId::new("r1").unwrap()),
            Query::Nodes,
            Query::Account("ab01".into()),
            Query::Proposals,
            Query::Proposal("0123456789abcdef".into()),
            Query::State,
        ];
        for q in queries {
            assert_eq!(Query::parse(&q.path()), Ok(q.clone()));
            assert_eq!(Query::parse(&format!("{}/", q.path())), Ok(q));
        }
        assert_eq!(
            Query::parse("/account/AB01"),
            Ok(Query::Account("ab01".into()))
        );
        assert_eq!(Query::parse("/key/bad id").unwrap_err().code, 6);
        assert_eq!(Query::parse("/key").unwrap_err().code, 1);
        assert_eq!(Query::parse("/other").unwrap_err().code, 1);
    }
}
