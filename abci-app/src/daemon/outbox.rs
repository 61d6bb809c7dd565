//! A node's result txs in flight, sans-IO: the sequence to sign the next one at, and what to do
//! with each answer of the mempool and of the chain. [`super::submit`] drives it from its worker
//! thread over the RPC; the simulator drives it over its in-memory chain, so the recovery from a
//! lost tx is tested on simulated time.
//!
//! A tx the mempool accepted can still never land: the mempool loses it, or drops it at recheck
//! after a block made it invalid (a result for a session that has just ended). Every later tx
//! of the node then passes CheckTx (the mempool counts sequences ahead of the chain) and fails
//! at delivery on its sequence. So after a sequence failure at delivery the next
//! [`Outbox::send`] reads the account's committed sequence and signs from there again; CheckTx
//! takes a tx at the committed sequence even while the mempool is ahead. Without it one lost tx silenced the node's results for good.

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

/// Most broadcasts of one tx in one [`Outbox::send`] (CheckTx naming another sequence, or
/// the RPC unreachable).
pub const MAX_TRIES: u32 = 20;

/// A result tx accepted by the mempool and not yet seen in a block.
#[derive(Debug)]
struct InFlight {
    msg: TxMsg,
    hash: String,
    /// The sequence it was signed at.
    seq: u64,
    /// A tx at a later sequence failed at delivery on its sequence: this one, in no block yet,
    /// never made it (the mempool takes one sender's txs in order), so it is lost for sure.
    doomed: bool,
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

    /// Whether a tx failed at delivery on its sequence, so that the next [`Outbox::send`] reads
    /// the account's committed sequence first.
    pub fn wants_resync(&self) -> bool {
        self.resync
    }

    /// Signs from the chain's committed sequence `committed` on.
    fn resync(&mut self, committed: u64) {
        self.seq = committed;
        self.resync = false;
    }

    /// Sends `msg` (sent `resends` times before) at `now_ms`, as the daemon's worker and the
    /// simulator both do. After a sequence failure at delivery it first reads the account's
    /// committed sequence (`committed`; None: unreadable, and the next send asks again) and
    /// signs from there. Then `attempt(sequence)` signs the tx at that sequence and broadcasts
    /// it, until the mempool takes or refuses it, at most [`MAX_TRIES`] times (an attempt that
    /// finds the RPC unreachable waits a little before it answers so). A tx that `attempt`
    /// signed and then lost (a test fault) answers [`Broadcast::Accepted`] with its hash, and
    /// is followed like any other. False when the tries ran out.
    pub fn send(
        &mut self,
        msg: &TxMsg,
        resends: u32,
        now_ms: u64,
        committed: impl FnOnce() -> Option<u64>,
        mut attempt: impl FnMut(u64) -> Broadcast,
    ) -> bool {
        if self.resync {
            if let Some(c) = committed() {
                self.resync(c);
            }
        }
        for _ in 0..MAX_TRIES {
            let answer = attempt(self.seq);
            if !self.answered(msg, resends, answer, now_ms) {
                return true;
            }
        }
        false
    }

    /// The mempool's `answer` to `msg` (sent `resends` times before), signed at
    /// [`Outbox::sequence`], at `now_ms`; true to sign it again and broadcast it.
    fn answered(&mut self, msg: &TxMsg, resends: u32, answer: Broadcast, now_ms: u64) -> bool {
        match answer {
            Broadcast::Accepted(hash) => {
                let seq = self.seq;
                self.seq = self.seq.saturating_add(1);
                self.in_flight.push(InFlight {
                    msg: msg.clone(),
                    hash,
                    seq,
                    doomed: false,
                    sent_ms: now_ms,
                    checked_ms: now_ms,
                    resends,
                    resend: !matches!(msg, TxMsg::Heartbeat),
                });
                false
            }
            Broadcast::WrongSequence(Some(expected)) => {
                self.seq = expected;
                true
            }
            Broadcast::WrongSequence(None) | Broadcast::Refused => false,
            Broadcast::Unreachable => true,
        }
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
    /// sends so far, when the tx failed at delivery on its sequence, or is in no block
    /// [`RESEND_AFTER_MS`] after it was sent, or is in no block while a tx at a later sequence
    /// failed on its sequence (at most [`MAX_RESENDS`] times; the chain refuses a result it
    /// already has as a duplicate, so sending again is safe). Such a later failure makes the
    /// earlier txs in no block due for a check at once: a lost tx is then sent again within a
    /// check or two, not [`RESEND_AFTER_MS`] after it was sent (simulator `lossy-mempool`,
    /// seed 1017: a keygen report lost at once and found only 8 s later missed its deadline).
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
                let failed_at = self.in_flight.get(at).map_or(0, |f| f.seq);
                let due_now = now_ms.saturating_sub(CONFIRM_EVERY_MS);
                for f in self.in_flight.iter_mut().filter(|f| f.seq < failed_at) {
                    f.doomed = true;
                    f.checked_ms = due_now;
                }
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
                .is_some_and(|f| f.doomed || now_ms.saturating_sub(f.sent_ms) >= RESEND_AFTER_MS),
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
        assert!(o.send(msg, 0, now, || None, |_| Broadcast::Accepted(h.into())));
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
        // The next send reads the chain's sequence first, and fills the gap.
        let mut signed_at = Vec::new();
        let sent = o.send(
            &b,
            1,
            3,
            || Some(30),
            |seq| {
                signed_at.push(seq);
                Broadcast::Accepted("b2".into())
            },
        );
        assert!(sent);
        assert_eq!(signed_at, [30]);
        assert!(!o.wants_resync());
        assert_eq!(o.sequence(), 31);
    }

    #[test]
    fn outbox__should_send_again_at_once_an_earlier_tx_in_no_block_when_a_later_one_fails() {
        let mut o = Outbox::new(30);
        // 30 is lost; 31 fails at delivery on its sequence: 30 never made it.
        let (a, b) = (result(0), result(1));
        accept(&mut o, &a, "a", 0);
        accept(&mut o, &b, "b", 0);
        assert_eq!(o.due(CONFIRM_EVERY_MS), ["a", "b"]);
        // Checked in order: a is in no block yet, which alone says nothing so early...
        let t = CONFIRM_EVERY_MS;
        assert_eq!(o.checked("a", Inclusion::NotYet, t), Ok(None));
        assert_eq!(
            o.checked("b", Inclusion::Delivered(SEQUENCE_CODE), t),
            Ok(Some((b, 1)))
        );
        // ...but once b failed, a is due again at once and sent again, long before
        // RESEND_AFTER_MS.
        assert_eq!(o.due(t + 1), ["a"]);
        assert_eq!(o.checked("a", Inclusion::NotYet, t + 1), Ok(Some((a, 1))));
        assert_eq!(o.in_flight(), 0);
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
        o.send(
            &a,
            MAX_RESENDS,
            0,
            || None,
            |_| Broadcast::Accepted("a2".into()),
        );
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
        // The chain's sequence unreadable: the send goes on from its own, and asks again next.
        accept(&mut o, &TxMsg::Heartbeat, "hb3", 0);
        assert!(o.wants_resync());
        let sent = o.send(
            &TxMsg::Heartbeat,
            0,
            0,
            || Some(6),
            |seq| {
                assert_eq!(seq, 6);
                Broadcast::Accepted("hb4".into())
            },
        );
        assert!(sent && !o.wants_resync());
        let a = result(0);
        accept(&mut o, &a, "a", 0);
        assert_eq!(o.checked("a", Inclusion::Delivered(8), 1), Ok(None));
        assert_eq!(
            o.in_flight(),
            2,
            "only the heartbeats hb3 and hb4 are still followed"
        );
        assert!(!o.wants_resync());
    }

    #[test]
    fn outbox__should_follow_checktx_on_a_sequence_refusal_and_give_up_after_its_tries() {
        let mut o = Outbox::new(3);
        let a = result(0);
        // CheckTx names sequence 7; the second broadcast, at 7, is taken.
        let mut answers = vec![
            Broadcast::Accepted("a".into()),
            Broadcast::WrongSequence(Some(7)),
        ];
        let mut signed_at = Vec::new();
        assert!(o.send(
            &a,
            0,
            0,
            || None,
            |seq| {
                signed_at.push(seq);
                answers.pop().unwrap()
            }
        ));
        assert_eq!(signed_at, [3, 7]);
        assert_eq!((o.sequence(), o.in_flight()), (8, 1));
        // Refused, or a sequence error that names none: done, nothing more followed.
        assert!(o.send(&a, 0, 0, || None, |_| Broadcast::WrongSequence(None)));
        assert!(o.send(&a, 0, 0, || None, |_| Broadcast::Refused));
        assert_eq!((o.sequence(), o.in_flight()), (8, 1));
        // The RPC never answers: given up after MAX_TRIES broadcasts.
        let mut tries = 0;
        assert!(!o.send(
            &a,
            0,
            0,
            || None,
            |_| {
                tries += 1;
                Broadcast::Unreachable
            }
        ));
        assert_eq!(tries, MAX_TRIES);
    }
}
