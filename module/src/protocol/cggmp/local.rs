//! Every party of a CGGMP24 session in one thread, over an in-memory router: for tests, the
//! fixture generator and the benchmark's in-process floor. Messages are delivered in rounds
//! of everything in flight, optionally shuffled, optionally rewritten or dropped in flight.

use std::collections::{BTreeMap, VecDeque};

use rand::seq::SliceRandom;
use rand::Rng;
use seqmpc_proto::NodeId;

use super::{CggmpMsg, Engine, Outgoing, Progress};
use crate::error::ProtocolError;

/// Rewrites a message in flight (`from`, message); returning false drops it.
pub type Tamper<'a> = &'a mut dyn FnMut(&NodeId, &mut Outgoing<CggmpMsg>) -> bool;

/// What a local run produced.
#[derive(Debug)]
pub struct Outcome<O> {
    /// Each party's result; a party still waiting when no message was left in flight is
    /// missing.
    pub results: BTreeMap<NodeId, Result<O, ProtocolError>>,
    /// Bytes of payload each party sent.
    pub bytes_sent: BTreeMap<NodeId, usize>,
    /// Payload bytes of the largest message.
    pub largest_message: usize,
    /// Messages delivered.
    pub delivered: usize,
}

/// Runs started engines (each with its first messages) until no message is in flight.
pub fn run<S: Engine, R: Rng>(
    started: Vec<(NodeId, S, Vec<Outgoing<CggmpMsg>>)>,
    mut shuffle: Option<&mut R>,
    mut tamper: Option<Tamper<'_>>,
) -> Outcome<S::Output> {
    let mut states: BTreeMap<NodeId, S> = BTreeMap::new();
    let mut queue: VecDeque<(NodeId, Outgoing<CggmpMsg>)> = VecDeque::new();
    let mut bytes_sent: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut largest_message = 0;
    let mut send = |queue: &mut VecDeque<_>, from: &NodeId, out: Vec<Outgoing<CggmpMsg>>| {
        for o in out {
            let len = o.msg.payload().len();
            *bytes_sent.entry(from.clone()).or_default() += len;
            largest_message = largest_message.max(len);
            queue.push_back((from.clone(), o));
        }
    };
    for (node, engine, out) in started {
        send(&mut queue, &node, out);
        states.insert(node, engine);
    }
    let mut results = BTreeMap::new();
    let mut delivered = 0;
    while !queue.is_empty() {
        let mut batch: Vec<_> = queue.drain(..).collect();
        if let Some(rng) = shuffle.as_deref_mut() {
            batch.shuffle(rng);
        }
        for (from, mut o) in batch {
            if let Some(t) = tamper.as_deref_mut() {
                if !t(&from, &mut o) {
                    continue;
                }
            }
            let Some(engine) = states.remove(&o.to) else {
                continue;
            };
            delivered += 1;
            match engine.handle(&from, o.msg) {
                Ok(Progress::Continue(e, out)) => {
                    send(&mut queue, &o.to, out);
                    states.insert(o.to, e);
                }
                Ok(Progress::Done(output, out)) => {
                    send(&mut queue, &o.to, out);
                    results.insert(o.to, Ok(output));
                }
                Err(e) => {
                    results.insert(o.to, Err(e));
                }
            }
        }
    }
    Outcome {
        results,
        bytes_sent,
        largest_message,
        delivered,
    }
}
