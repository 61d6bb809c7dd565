//! Test-only harness of the no-panic properties (issue 5, "Fuzzing"): a bounded runner and
//! structure-aware mutators. The properties live next to the code they exercise:
//! `protocol::no_panic` (every protocol message decoder and the stored-share decoders),
//! `p2p::no_panic` (the stream codec) and `store::no_panic` (record decoding and opening).
//! `proto/tests/no_panic.rs` covers txs and the p2p envelope with the same harness.
//!
//! Case counts: `PROPTEST_CASES` (default: each property's own, small enough for CI). With
//! `FUZZ_SECS=n` each property keeps drawing fresh batches until `n` seconds have passed
//! (`make fuzz`). A panic anywhere in a property is a failure, shrunk by proptest to a minimal
//! input and printed with the property's name.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;

/// Runs `test` over `strategy`: `PROPTEST_CASES` cases (default `cases`), repeated with fresh
/// random inputs until `FUZZ_SECS` seconds have passed when that is set.
pub(crate) fn check<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let batch = env("PROPTEST_CASES").map_or(cases, |c| u32::try_from(c).unwrap_or(u32::MAX));
    let budget = env("FUZZ_SECS").map(Duration::from_secs);
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: batch,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        total += u64::from(batch);
        if budget.is_none_or(|b| start.elapsed() >= b) {
            break;
        }
    }
    eprintln!("{name}: {total} cases in {:.1?}", start.elapsed());
}

/// One edit of an encoding.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Swap two ranges of equal length (swapped fields).
    Swap(usize, usize, usize),
    /// Overwrite with a big-endian integer of an edge value (length prefixes, counts).
    BigEndian(usize, u64, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge = prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7f),
        Just(0xff),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        any::<u64>()
    ];
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(p, x)| Mutation::Flip(p, x)),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0xff), any::<u8>()]
        )
            .prop_map(|(p, b)| Mutation::Set(p, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1..32usize).prop_map(|(p, n)| Mutation::Remove(p, n)),
        (any::<usize>(), any::<usize>(), 1..32usize).prop_map(|(a, b, n)| Mutation::Swap(a, b, n)),
        (
            any::<usize>(),
            edge,
            prop_oneof![Just(1usize), Just(4), Just(8)]
        )
            .prop_map(|(p, v, w)| Mutation::BigEndian(p, v, w)),
    ]
}

/// One to three byte-level edits.
pub(crate) fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

/// Applies `muts` in order; positions wrap around the current length.
pub(crate) fn apply(bytes: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        let len = bytes.len();
        let at = |p: usize| if len == 0 { 0 } else { p % len };
        match m {
            Mutation::Flip(p, x) if len > 0 => bytes[at(*p)] ^= x,
            Mutation::Set(p, b) if len > 0 => bytes[at(*p)] = *b,
            Mutation::Truncate(p) => bytes.truncate(p % (len + 1)),
            Mutation::Extend(b) => bytes.extend_from_slice(b),
            Mutation::Insert(p, b) => {
                let p = p % (len + 1);
                bytes.splice(p..p, b.iter().copied());
            }
            Mutation::Remove(p, n) if len > 0 => {
                let p = at(*p);
                bytes.drain(p..(p + n).min(len));
            }
            Mutation::Swap(a, b, n) if len > 0 => {
                let n = (*n).min(len / 2);
                let (a, b) = (a % (len - n + 1), b % (len - n + 1));
                if n > 0 && (a + n <= b || b + n <= a) {
                    for i in 0..n {
                        bytes.swap(a + i, b + i);
                    }
                }
            }
            Mutation::BigEndian(p, v, w) if len > 0 => {
                let p = at(*p);
                let be = v.to_be_bytes();
                let src = &be[8 - w..];
                let end = (p + w).min(len);
                bytes.splice(p..end, src.iter().copied());
            }
            _ => {}
        }
    }
}

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
