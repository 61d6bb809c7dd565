//! A node's result txs in flight, sans-IO: the sequence to sign the next one at, and what to do
//! with each answer of the mempool and of the chain. [`super::submit`] drives it from its worker
//! thread over the RPC; the simulator drives it over its in-memory chain, so the recovery from a
//! lost tx is tested on simulated time.
//!
//! A tx the mempool accepted can still never land: the mempool loses it, or drops it at recheck
//! after a block made it invalid (a result for a session that has just ended). Every later tx
//! of the node then passes CheckTx (the mempool counts sequences ahead of the chain) and fails
//! at delivery on its sequence. So a sequence failure at delivery makes the outbox ask for the
//! account's committed sequence ([`Outbox::wants_resync`]) and sign from there again
//! ([`Outbox::resync`]); CheckTx takes a tx at the committed sequence even while the mempool
//! is ahead. Without it one lost tx silenced the node's results for good.

use seqmpc_proto::tx::TxMsg;

/// How old a result tx must be before its inclusion is checked, and how often after (ms).
pub const CONFIRM_EVERY_MS: u64 = 2_000;
/// A result tx in no block this long after it was sent (a mempool lost it) is sent again (ms).
pub const RESEND_AFTER_MS: u64 = 8_000;
/// Most times one result is sent again.
pub const MAX_RESENDS: u32 = 3;
/// The chain's code for a sequence out of step (at CheckTx or delivery).
pub const SEQUENCE_CODE: u32 = 4;

/// The mempool's answer to a broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broadcast {
    /// Accepted; the tx's hash (as the `tx` route looks it up).
    Accepted(String),
    /// Refused on its sequence; the sequence CheckTx expects, when it says.
    WrongSequence(Option<u64>),
    /// Refused for another reason (the result is no longer wanted, or is invalid).
    Refused,
    /// No answer (the RPC is down).
    Unreachable,
}

/// Where a tx in flight stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inclusion {
    /// In a block, with this code.
    Delivered(u32),
    /// In no block yet.
    NotYet,
    /// Unknown (the RPC is down): ask again later.
    Unknown,
}

/// What to do after a broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Done with it: accepted (and followed) or given up.
    Done,
    /// Sign it again at [`Outbox::sequence`] and broadcast it now.
    Again,
    /// The RPC did not answer: wait a little, then as [`Next::Again`].
    Wait,
}

/// A result tx accepted by the mempool and not yet seen in a block.
#[derive(Debug)]
struct InFlight {
    msg: TxMsg,
    hash: String,
    sent_ms: u64,
    checked_ms: u64,
    resends: u32,
    /// A result, sent again if lost; a heartbeat is only followed, so that its failure on
    /// the sequence resyncs the outbox (a node with nothing else to send would otherwise sign
    /// heartbeats that all fail, and look down to the chain).
    resend: bool,
}

/// The result txs of one node, from signing to a block.
#[derive(Debug)]
pub struct Outbox {
    seq: u64,
    in_flight: Vec<InFlight>,
    resync: bool,
}

impl Outbox {
    /// An outbox whose next tx takes `sequence`.
    pub fn new(sequence: u64) -> Outbox {
        Outbox {
            seq: sequence,
            in_flight: Vec::new(),
            resync: false,
        }
    }

    /// The sequence to sign the next tx at.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Results in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A tx failed at delivery on its sequence: the caller should read the account's committed
    /// sequence and pass it to [`Outbox::resync`] before it signs the next tx.
    pub fn wants_resync(&self) -> bool {
        self.resync
    }

    /// Signs from the chain's committed sequence `committed` on.
    pub fn resync(&mut self, committed: u64) {
        self.seq = committed;
        self.resync = false;
    }

    /// The mempool's `answer` to `msg` (sent `resends` times before), signed at
    /// [`Outbox::sequence`], at `now_ms`.
    pub fn broadcast(&mut self, msg: &TxMsg, resends: u32, answer: Broadcast, now_ms: u64) -> Next {
        match answer {
            Broadcast::Accepted(hash) => {
                self.seq = self.seq.saturating_add(1);
                self.in_flight.push(InFlight {
                    msg: msg.clone(),
                    hash,
                    sent_ms: now_ms,
                    checked_ms: now_ms,
                    resends,
                    resend: !matches!(msg, TxMsg::Heartbeat),
                });
                Next::Done
            }
            Broadcast::WrongSequence(Some(expected)) => {
                self.seq = expected;
                Next::Again
            }
            Broadcast::WrongSequence(None) | Broadcast::Refused => Next::Done,
            Broadcast::Unreachable => Next::Wait,
        }
    }

    /// TEST ONLY fault: `msg` was signed at [`Outbox::sequence`] and then lost instead of
    /// broadcast (its hash `hash`); it is followed as if the mempool had taken it.
    pub fn lost(&mut self, msg: &TxMsg, hash: String, now_ms: u64) {
        let _ = self.broadcast(msg, 0, Broadcast::Accepted(hash), now_ms);
    }

    /// The hashes of the txs in flight whose inclusion is due for a check at `now_ms`.
    pub fn due(&mut self, now_ms: u64) -> Vec<String> {
        self.in_flight
            .iter_mut()
            .filter(|f| now_ms.saturating_sub(f.checked_ms) >= CONFIRM_EVERY_MS)
            .map(|f| {
                f.checked_ms = now_ms;
                f.hash.clone()
            })
            .collect()
    }

    /// Where tx `hash` stands at `now_ms`. Returns the result to send again, with its count of
    /// sends so far, when the tx failed at delivery on its sequence or is in no block
    /// [`RESEND_AFTER_MS`] after it was sent (at most [`MAX_RESENDS`] times; the chain refuses
    /// a result it already has as a duplicate, so sending again is safe).
    pub fn checked(
        &mut self,
        hash: &str,
        inclusion: Inclusion,
        now_ms: u64,
    ) -> Result<Option<(TxMsg, u32)>, GivenUp> {
        let Some(at) = self.in_flight.iter().position(|f| f.hash == hash) else {
            return Ok(None);
        };
        let lost = match inclusion {
            Inclusion::Delivered(SEQUENCE_CODE) => {
                self.resync = true;
                true
            }
            // Done, whatever it came to: a refusal at delivery is final.
            Inclusion::Delivered(_) => {
                self.in_flight.remove(at);
                return Ok(None);
            }
            Inclusion::NotYet => self
                .in_flight
                .get(at)
                .is_some_and(|f| now_ms.saturating_sub(f.sent_ms) >= RESEND_AFTER_MS),
            Inclusion::Unknown => false,
        };
        if !lost {
            return Ok(None);
        }
        let f = self.in_flight.remove(at);
        if !f.resend {
            Ok(None)
        } else if f.resends < MAX_RESENDS {
            Ok(Some((f.msg, f.resends + 1)))
        } else {
            Err(GivenUp)
        }
    }
}

/// A result lost [`MAX_RESENDS`] times: the chain deadline will end its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("result tx lost {MAX_RESENDS} times; given up (the chain deadline will end its session)")]
pub struct GivenUp;

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn result(n: u8) -> TxMsg {
        TxMsg::KeyDeleted {
            key_id: seqmpc_proto::KeyId::new(format!("key{n}")).unwrap(),
        }
    }

    /// Sends `msg`, accepted by the mempool, as hash `h`.
    fn accept(o: &mut Outbox, msg: &TxMsg, h: &str, now: u64) -> u64 {
        let seq = o.sequence();
        assert_eq!(
            o.broadcast(msg, 0, Broadcast::Accepted(h.into()), now),
            Next::Done
        );
        seq
    }

    #[test]
    fn outbox__should_resign_from_the_committed_sequence_after_a_lost_tx() {
        let mut o = Outbox::new(30);
        // 30 is lost (dropped at recheck); 31 and 32 pass CheckTx on the mempool's sequence.
        let (a, b, c) = (result(0), result(1), result(2));
        assert_eq!(accept(&mut o, &a, "a", 0), 30);
        assert_eq!(accept(&mut o, &b, "b", 0), 31);
        assert_eq!(accept(&mut o, &c, "c", 0), 32);
        assert_eq!(o.due(CONFIRM_EVERY_MS), ["a", "b", "c"]);
        let again = o.checked("b", Inclusion::Delivered(SEQUENCE_CODE), CONFIRM_EVERY_MS);
        assert_eq!(again, Ok(Some((b.clone(), 1))));
        assert!(o.wants_resync());
        o.resync(30);
        assert!(!o.wants_resync());
        assert_eq!(o.sequence(), 30, "the next tx fills the gap");
    }

    #[test]
    fn outbox__should_send_again_a_tx_in_no_block_and_give_up_after_the_last_resend() {
        let mut o = Outbox::new(0);
        let a = result(0);
        accept(&mut o, &a, "a", 0);
        assert_eq!(o.due(CONFIRM_EVERY_MS), ["a"]);
        assert_eq!(
            o.checked("a", Inclusion::NotYet, CONFIRM_EVERY_MS),
            Ok(None)
        );
        assert_eq!(
            o.checked("a", Inclusion::Unknown, RESEND_AFTER_MS),
            Ok(None)
        );
        assert_eq!(
            o.checked("a", Inclusion::NotYet, RESEND_AFTER_MS),
            Ok(Some((a.clone(), 1)))
        );
        assert_eq!(o.in_flight(), 0);
        o.broadcast(&a, MAX_RESENDS, Broadcast::Accepted("a2".into()), 0);
        assert_eq!(
            o.checked("a2", Inclusion::Delivered(SEQUENCE_CODE), 1),
            Err(GivenUp)
        );
    }

    #[test]
    fn outbox__should_forget_a_delivered_tx_and_never_send_a_heartbeat_again() {
        let mut o = Outbox::new(5);
        accept(&mut o, &TxMsg::Heartbeat, "hb", 0);
        assert_eq!((o.sequence(), o.in_flight()), (6, 1));
        assert_eq!(
            o.checked("hb", Inclusion::NotYet, RESEND_AFTER_MS),
            Ok(None)
        );
        assert_eq!(o.in_flight(), 0);
        accept(&mut o, &TxMsg::Heartbeat, "hb2", 0);
        assert_eq!(
            o.checked("hb2", Inclusion::Delivered(SEQUENCE_CODE), 1),
            Ok(None)
        );
        assert!(o.wants_resync(), "a heartbeat out of step resyncs too");
        o.resync(6);
        let a = result(0);
        accept(&mut o, &a, "a", 0);
        assert_eq!(o.checked("a", Inclusion::Delivered(8), 1), Ok(None));
        assert_eq!(o.in_flight(), 0);
        assert!(!o.wants_resync());
    }

    #[test]
    fn outbox__should_follow_checktx_on_a_sequence_refusal() {
        let mut o = Outbox::new(3);
        let a = result(0);
        assert_eq!(
            o.broadcast(&a, 0, Broadcast::WrongSequence(Some(7)), 0),
            Next::Again
        );
        assert_eq!(o.sequence(), 7);
        assert_eq!(
            o.broadcast(&a, 0, Broadcast::WrongSequence(None), 0),
            Next::Done
        );
        assert_eq!(o.broadcast(&a, 0, Broadcast::Refused, 0), Next::Done);
        assert_eq!(o.broadcast(&a, 0, Broadcast::Unreachable, 0), Next::Wait);
        assert_eq!((o.sequence(), o.in_flight()), (7, 0));
    }
}
