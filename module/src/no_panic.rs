//! Test-only harness of the no-panic properties (issue 5, "Fuzzing"): the shared runner and
//! byte mutators of `seqmpc-testkit`, plus JSON mutators for serde messages and shares. The
//! properties live next to the code they exercise:
//! `protocol::no_panic` (every protocol message decoder and the stored-share decoders),
//! `p2p::no_panic` (the stream codec) and `store::no_panic` (record decoding and opening).
//! `proto/tests/no_panic.rs` covers txs and the p2p envelope with the same harness.
//!
//! Case counts: `PROPTEST_CASES` (default: each property's own, small enough for CI). With
//! `FUZZ_SECS=n` each property keeps drawing fresh batches until `n` seconds have passed
//! (`make fuzz`). A panic anywhere in a property is a failure, shrunk by proptest to a minimal
//! input and printed with the property's name.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

pub(crate) use seqmpc_testkit::{apply, check, mutations, Mutation};

/// An edit of a JSON document at one of its nodes (chosen by index in pre-order): how a
/// malicious peer would change a well-formed serde message or stored share.
#[derive(Clone, Debug)]
pub(crate) struct JsonMutation {
    node: usize,
    op: u8,
    arg: usize,
}

/// One to three JSON edits.
pub(crate) fn json_mutations() -> impl Strategy<Value = Vec<JsonMutation>> {
    vec(
        (any::<usize>(), any::<u8>(), any::<usize>()).prop_map(|(node, op, arg)| JsonMutation {
            node,
            op,
            arg,
        }),
        1..4,
    )
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn nth(v: &mut Value, n: usize) -> Option<&mut Value> {
    if n == 0 {
        return Some(v);
    }
    let mut n = n - 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => return None,
    };
    for c in children {
        let k = count(c);
        if n < k {
            return nth(c, n);
        }
        n -= k;
    }
    None
}

fn mutate_node(v: &mut Value, op: u8, arg: usize) {
    let edge_numbers = [
        0i64,
        1,
        -1,
        2,
        255,
        65535,
        65536,
        i64::from(u32::MAX),
        i64::MAX,
    ];
    match (op % 12, &mut *v) {
        (0, _) => *v = Value::Null,
        (1, _) => *v = Value::from(edge_numbers[arg % edge_numbers.len()]),
        (2, _) => *v = Value::String(String::new()),
        (3, _) => *v = Value::Array(Vec::new()),
        (4, _) => *v = Value::Object(serde_json::Map::new()),
        (5, _) => *v = Value::Bool(arg.is_multiple_of(2)),
        // Hex and decimal strings: change one character, cut, double.
        (6, Value::String(s)) if !s.is_empty() => {
            let mut c: Vec<char> = s.chars().collect();
            let i = arg % c.len();
            c[i] = match c[i] {
                '0' => 'f',
                'f' | 'F' => '0',
                '9' => 'a',
                ch => char::from_u32(u32::from(ch) ^ 1).unwrap_or('0'),
            };
            *s = c.into_iter().collect();
        }
        (7, Value::String(s)) => {
            let cut = s
                .char_indices()
                .nth(arg % (s.chars().count() + 1))
                .map(|(i, _)| i);
            if let Some(i) = cut {
                s.truncate(i);
            }
        }
        (8, Value::String(s)) => *s = s.repeat(2),
        // Vectors: drop, duplicate or swap elements (lengths that disagree with the party count).
        (9, Value::Array(a)) if !a.is_empty() => {
            a.remove(arg % a.len());
        }
        (10, Value::Array(a)) if !a.is_empty() => {
            let e = a[arg % a.len()].clone();
            a.push(e);
        }
        (11, Value::Array(a)) if a.len() > 1 => {
            let i = arg % a.len();
            let j = (i + 1) % a.len();
            a.swap(i, j);
        }
        (9..=11, Value::Object(o)) if !o.is_empty() => {
            let k = o.keys().nth(arg % o.len()).cloned();
            if let Some(k) = k {
                o.remove(&k);
            }
        }
        (_, Value::Number(_)) => *v = Value::from(edge_numbers[arg % edge_numbers.len()]),
        _ => *v = Value::Null,
    }
}

/// Applies JSON edits to `bytes` if it is a JSON document; otherwise leaves it unchanged.
pub(crate) fn apply_json(bytes: &mut Vec<u8>, muts: &[JsonMutation]) {
    let Ok(mut doc) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    for m in muts {
        let n = count(&doc);
        if let Some(node) = nth(&mut doc, m.node % n) {
            mutate_node(node, m.op, m.arg);
        }
    }
    *bytes = serde_json::to_vec(&doc).unwrap();
}

/// Either byte edits or JSON edits.
#[derive(Clone, Debug)]
pub(crate) enum AnyMutation {
    Bytes(Vec<Mutation>),
    Json(Vec<JsonMutation>),
}

/// Byte edits or (for JSON payloads) JSON edits, half and half.
pub(crate) fn any_mutation() -> impl Strategy<Value = AnyMutation> {
    prop_oneof![
        mutations().prop_map(AnyMutation::Bytes),
        json_mutations().prop_map(AnyMutation::Json),
    ]
}

impl AnyMutation {
    pub(crate) fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            AnyMutation::Bytes(m) => apply(bytes, m),
            AnyMutation::Json(m) => apply_json(bytes, m),
        }
    }
}
