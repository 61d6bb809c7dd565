//! The events of committed blocks, as CometBFT v0.38 publishes them to `/websocket`
//! subscribers: `NewBlock`, `NewBlockHeader` and one `Tx` per tx, each with its composite-key
//! map (`tm.event`, `tx.hash`, `tx.height`, and `<event type>.<attribute key>` of every ABCI
//! event), and the query filters that select them.
//!
//! Queries are parsed by tendermint-rpc's [`Query`] (the grammar clients build their queries
//! with). Its grammar knows the event types `NewBlock` and `Tx` only, so a
//! `tm.event = 'NewBlockHeader'` condition is read here and the rest of the query by it.

use std::collections::BTreeMap;
use std::str::FromStr;

use base64::Engine as _;
use serde_json::{json, Value};
use tendermint_proto::v0_38::abci::Event;
use tendermint_rpc::query::{Condition, EventType, Operand, Operation, Query};

use super::encode;
use crate::sequencer::state::{CommittedBlock, Shared};

/// The kinds of events published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A committed block, with its FinalizeBlock result.
    NewBlock,
    /// A committed block's header.
    NewBlockHeader,
    /// One tx of a committed block, with its result.
    Tx,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::NewBlock => "NewBlock",
            Kind::NewBlockHeader => "NewBlockHeader",
            Kind::Tx => "Tx",
        }
    }
}

/// One published event: its kind, its `data` (`{"type", "value"}`) and its composite keys.
#[derive(Clone, Debug)]
pub struct BlockEvent {
    /// The kind (`tm.event`).
    pub kind: Kind,
    /// `{"type": "tendermint/event/<Kind>", "value": ...}`.
    pub data: Value,
    /// Composite key -> values.
    pub keys: BTreeMap<String, Vec<String>>,
}

/// A subscription's filter: an event kind (or any) and conditions, all of which must hold.
#[derive(Clone, Debug)]
pub struct Filter {
    kind: Option<Kind>,
    conditions: Vec<Condition>,
}

/// Why a query was refused.
#[derive(Debug, thiserror::Error)]
#[error("failed to parse query: {0}")]
pub struct BadQuery(String);

impl FromStr for Filter {
    type Err = BadQuery;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, header) = take_new_block_header(s);
        let q = Query::from_str(&rest).map_err(|e| BadQuery(e.to_string()))?;
        let kind = match (q.event_type, header) {
            (Some(_), true) => return Err(BadQuery("tm.event can only be used once".into())),
            (None, true) => Some(Kind::NewBlockHeader),
            (Some(EventType::NewBlock), false) => Some(Kind::NewBlock),
            (Some(EventType::Tx), false) => Some(Kind::Tx),
            (None, false) => None,
        };
        if kind.is_none() && q.conditions.is_empty() {
            return Err(BadQuery(format!("empty query {s:?}")));
        }
        Ok(Filter {
            kind,
            conditions: q.conditions,
        })
    }
}

/// Removes a `tm.event = 'NewBlockHeader'` condition (and the `AND` joining it) from `query`;
/// returns the rest and whether it was there.
fn take_new_block_header(query: &str) -> (String, bool) {
    let parts: Vec<&str> = split_and(query);
    let is_header = |p: &str| {
        let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
        p == "tm.event='NewBlockHeader'"
    };
    if !parts.iter().any(|p| is_header(p)) {
        return (query.to_owned(), false);
    }
    let rest: Vec<&str> = parts.into_iter().filter(|p| !is_header(p)).collect();
    (rest.join(" AND "), true)
}

/// Splits a query at its top-level `AND`s (outside quoted values).
fn split_and(query: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'\'') => quoted = !quoted,
            Some(b' ') if !quoted && query.get(i..i + 5) == Some(" AND ") => {
                parts.push(query.get(start..i).unwrap_or_default().trim());
                start = i + 5;
                i += 4;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(query.get(start..).unwrap_or_default().trim());
    parts.retain(|p| !p.is_empty());
    parts
}

impl Filter {
    /// The filter of a `tx_search` or `block_search` query: its conditions (a `tm.event`
    /// condition selects nothing there, and is refused).
    pub fn search(query: &str) -> Result<Filter, BadQuery> {
        let q = Query::from_str(query).map_err(|e| BadQuery(e.to_string()))?;
        if q.event_type.is_some() || take_new_block_header(query).1 {
            return Err(BadQuery("tm.event cannot be searched".into()));
        }
        if q.conditions.is_empty() {
            return Err(BadQuery(format!("empty query {query:?}")));
        }
        Ok(Filter {
            kind: None,
            conditions: q.conditions,
        })
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &BlockEvent) -> bool {
        self.kind.is_none_or(|k| k == event.kind) && self.matches_keys(&event.keys)
    }

    /// Whether composite keys `keys` satisfy every condition.
    pub fn matches_keys(&self, keys: &BTreeMap<String, Vec<String>>) -> bool {
        self.conditions.iter().all(|c| {
            keys.get(&c.key)
                .is_some_and(|values| values.iter().any(|v| holds(&c.operation, v)))
        })
    }
}

/// Whether one value of a key satisfies `op`: numbers compare as numbers, strings as strings.
fn holds(op: &Operation, value: &str) -> bool {
    let num = |o: &Operand| match o {
        Operand::Signed(n) => Some(*n as f64),
        Operand::Unsigned(n) => Some(*n as f64),
        Operand::Float(f) => Some(*f),
        Operand::String(_) | Operand::Date(_) | Operand::DateTime(_) => None,
    };
    let cmp = |o: &Operand, ok: fn(std::cmp::Ordering) -> bool| match (num(o), value.parse::<f64>())
    {
        (Some(want), Ok(got)) => got.partial_cmp(&want).is_some_and(ok),
        _ => false,
    };
    match op {
        Operation::Eq(Operand::String(s)) => value == s,
        Operation::Eq(o) => cmp(o, |c| c.is_eq()),
        Operation::Lt(o) => cmp(o, |c| c.is_lt()),
        Operation::Lte(o) => cmp(o, |c| c.is_le()),
        Operation::Gt(o) => cmp(o, |c| c.is_gt()),
        Operation::Gte(o) => cmp(o, |c| c.is_ge()),
        Operation::Contains(s) => value.contains(s.as_str()),
        Operation::Exists => true,
    }
}

/// Adds `<event type>.<attribute key>` -> value of every attribute of `events` to `keys`.
pub fn add_abci_events(keys: &mut BTreeMap<String, Vec<String>>, events: &[Event]) {
    for e in events {
        for a in &e.attributes {
            keys.entry(format!("{}.{}", e.r#type, a.key))
                .or_default()
                .push(a.value.clone());
        }
    }
}

fn keys_of(kind: Kind) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("tm.event".to_owned(), vec![kind.name().to_owned()])])
}

/// The events of block `b`, in CometBFT's order: NewBlock, NewBlockHeader, then each tx. The
/// two block events are left out (and logged) if the block's header cannot be rebuilt.
pub fn of_block(shared: &Shared, b: &CommittedBlock) -> Vec<BlockEvent> {
    let height = b.height().to_string();
    let mut out = Vec::with_capacity(2 + b.block.txs.len());
    let block_keys = |kind| {
        let mut keys = keys_of(kind);
        add_abci_events(&mut keys, &b.result.events);
        keys
    };
    match encode::block(shared, b) {
        Ok(block) => {
            out.push(BlockEvent {
                kind: Kind::NewBlock,
                data: json!({
                    "type": "tendermint/event/NewBlock",
                    "value": {
                        "block": block["block"],
                        "block_id": block["block_id"],
                        "result_finalize_block": encode::finalize_block_result(b),
                    },
                }),
                keys: block_keys(Kind::NewBlock),
            });
            out.push(BlockEvent {
                kind: Kind::NewBlockHeader,
                data: json!({
                    "type": "tendermint/event/NewBlockHeader",
                    "value": {"header": block["block"]["header"]},
                }),
                keys: block_keys(Kind::NewBlockHeader),
            });
        }
        Err(e) => tracing::warn!(height = b.height(), error = %e, "events: the block's header"),
    }
    for (i, tx) in b.block.txs.iter().enumerate() {
        let result = b.result.tx_results.get(i).cloned().unwrap_or_default();
        let mut keys = crate::sequencer::search::tx_keys(b, i);
        keys.extend(keys_of(Kind::Tx));
        out.push(BlockEvent {
            kind: Kind::Tx,
            data: json!({
                "type": "tendermint/event/Tx",
                "value": {
                    "TxResult": {
                        "height": height,
                        "index": i,
                        "tx": base64::engine::general_purpose::STANDARD.encode(tx),
                        "result": encode::exec_tx_result(&result),
                    },
                },
            }),
            keys,
        });
    }
    out
}

/// The JSON-RPC message that delivers `event` to the subscription of `query` made by the
/// request of id `id`.
pub fn message(id: &Value, query: &str, event: &BlockEvent) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "query": query,
            "data": event.data,
            "events": event.keys,
        },
    })
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    fn event(kind: Kind, keys: &[(&str, &str)]) -> BlockEvent {
        let mut map = keys_of(kind);
        for (k, v) in keys {
            map.entry((*k).to_owned())
                .or_default()
                .push((*v).to_owned());
        }
        BlockEvent {
            kind,
            data: Value::Null,
            keys: map,
        }
    }

    #[test]
    fn filter__should_select_events_by_kind_and_conditions() {
        let tx = event(
            Kind::Tx,
            &[
                ("tx.height", "12"),
                ("sign_done.request_id", "r1"),
                ("tx.hash", "AB"),
            ],
        );
        let f = |q: &str| Filter::from_str(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(f("tm.event='Tx'").matches(&tx));
        assert!(!f("tm.event='NewBlock'").matches(&tx));
        assert!(f("tm.event = 'Tx' AND sign_done.request_id = 'r1'").matches(&tx));
        assert!(!f("tm.event = 'Tx' AND sign_done.request_id = 'r2'").matches(&tx));
        assert!(f("tx.height >= 12 AND tx.height < 13").matches(&tx));
        assert!(!f("tx.height > 12").matches(&tx));
        assert!(f("sign_done.request_id EXISTS").matches(&tx));
        assert!(!f("key_ready.key_id EXISTS").matches(&tx));
        assert!(f("sign_done.request_id CONTAINS '1'").matches(&tx));
        let header = event(Kind::NewBlockHeader, &[]);
        assert!(f("tm.event='NewBlockHeader'").matches(&header));
        assert!(!f("tm.event='NewBlockHeader'").matches(&tx));
        assert!(!f("tm.event='NewBlock'").matches(&header));
        // A value that merely reads NewBlockHeader is a value, not the event type.
        let q = f("tm.event='Tx' AND note.text='NewBlockHeader'");
        assert!(!q.matches(&header));
        for bad in [
            "",
            "tm.event=",
            "tm.event='NewBlockHeader' AND tm.event='Tx'",
            "a.b = ",
        ] {
            assert!(Filter::from_str(bad).is_err(), "{bad:?}");
        }
    }
}
