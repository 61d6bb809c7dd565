//! Test-only harness of seqmpc's no-panic properties (issue 5, "Fuzzing"), shared by the
//! proto, module and abci-app tests: [`check`], a bounded property runner, and byte-level
//! mutators of valid encodings ([`mutations`], [`apply`]).
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

/// Runs `test` over `strategy`: `PROPTEST_CASES` cases (default `cases`), repeated with fresh
/// random inputs until `FUZZ_SECS` seconds have passed when that is set.
pub fn check<S>(
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
pub enum Mutation {
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
    /// Overwrite with a protobuf varint of an edge value (lengths, tags, counts).
    Varint(usize, u64),
}

fn edge_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7f),
        Just(0x80),
        Just(0xff),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        any::<u64>()
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge = edge_value();
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
        (any::<usize>(), edge_value()).prop_map(|(p, v)| Mutation::Varint(p, v)),
    ]
}

/// One to three byte-level edits.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

/// Applies `muts` in order; positions wrap around the current length.
pub fn apply(bytes: &mut Vec<u8>, muts: &[Mutation]) {
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
            Mutation::Varint(p, v) if len > 0 => {
                let p = at(*p);
                let enc = varint(*v);
                let end = (p + enc.len()).min(len);
                bytes.splice(p..end, enc);
            }
            _ => {}
        }
    }
}

/// LEB128, as protobuf encodes varints.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
