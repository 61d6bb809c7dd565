//! Drives one cggmp24 protocol run, wrapped by round-based's state machine, message by message.
//!
//! At rest the wrapped protocol always waits for its next incoming message: [`Driver::drive`]
//! polls it until it asks for one (collecting what it sends on the way, and resuming at once
//! when it yields between computations) or returns.

use std::collections::BTreeMap;
use std::fmt;

use round_based::state_machine::{ProceedResult, StateMachine};
use round_based::{Incoming, MessageDestination, MessageType, MsgId, ProtocolMessage};
use seqmpc_proto::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{blame, CggmpMsg, Outgoing, Parties, Phase};
use crate::error::ProtocolError;

/// The state machine of one run: cggmp24's output is `Result<T, E>`.
pub(crate) type Machine<T, M, E> = Box<dyn StateMachine<Output = Result<T, E>, Msg = M>>;

/// Where a run stands after a step.
pub(crate) enum Step<D, T> {
    /// Waiting for more messages.
    Waiting(D),
    /// Finished with this output.
    Finished(T),
}

/// A step's result and the messages to send.
pub(crate) type Stepped<D, T> = (Step<D, T>, Vec<Outgoing<CggmpMsg>>);

/// One protocol run.
pub(crate) struct Driver<T, M, E> {
    phase: Phase,
    what: &'static str,
    parties: Parties,
    machine: Machine<T, M, E>,
    next_id: MsgId,
    /// Sender of every message handed to cggmp24, by the id we gave it (cggmp24 may blame a
    /// message rather than a party).
    senders: BTreeMap<MsgId, u16>,
    /// Hash of the message received per (sender, round, broadcast): an identical duplicate
    /// is dropped, a different one is equivocation.
    seen: BTreeMap<(u16, u16, bool), [u8; 32]>,
}

impl<T, M, E> fmt::Debug for Driver<T, M, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("phase", &self.phase)
            .field("me", &self.parties.my_node())
            .field("received", &self.seen.len())
            .finish()
    }
}

impl<T, M, E> Driver<T, M, E>
where
    M: Serialize + DeserializeOwned + ProtocolMessage,
    E: std::error::Error + 'static,
{
    /// Starts the run: polls it until it first waits for a message.
    pub(crate) fn start(
        phase: Phase,
        what: &'static str,
        parties: Parties,
        machine: Machine<T, M, E>,
    ) -> Result<Stepped<Self, T>, ProtocolError> {
        Driver {
            phase,
            what,
            parties,
            machine,
            next_id: 0,
            senders: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
        .drive()
    }

    /// Handles one message from an authenticated node.
    pub(crate) fn handle(
        mut self,
        from: &NodeId,
        msg: CggmpMsg,
    ) -> Result<Stepped<Self, T>, ProtocolError> {
        let sender = self.parties.other(from)?;
        if msg.phase() != self.phase {
            return Err(ProtocolError::blame(
                from,
                format!(
                    "{from} sent a {:?} message to a {:?} run",
                    msg.phase(),
                    self.phase
                ),
            ));
        }
        let broadcast = msg.is_broadcast();
        let payload = msg.into_payload();
        let decoded: M = super::json::from_slice(&payload).map_err(|e| {
            ProtocolError::blame(
                from,
                format!("undecodable {} message from {from}: {e}", self.what),
            )
        })?;
        let key = (sender, decoded.round(), broadcast);
        let hash: [u8; 32] = Sha256::digest(&payload).into();
        match self.seen.get(&key) {
            Some(h) if *h == hash => return Ok((Step::Waiting(self), Vec::new())),
            Some(_) => {
                return Err(ProtocolError::blame(
                    from,
                    format!(
                        "{from} sent two different {} round-{} messages",
                        self.what, key.1
                    ),
                ))
            }
            None => {
                self.seen.insert(key, hash);
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.senders.insert(id, sender);
        let incoming = Incoming {
            id,
            sender,
            msg_type: if broadcast {
                MessageType::Broadcast
            } else {
                MessageType::P2P
            },
            msg: decoded,
        };
        self.machine
            .received_msg(incoming)
            .map_err(|_| ProtocolError::Bug(format!("{} refused a message", self.what)))?;
        self.drive()
    }

    fn drive(mut self) -> Result<Stepped<Self, T>, ProtocolError> {
        let mut out = Vec::new();
        loop {
            match self.machine.proceed() {
                ProceedResult::SendMsg(o) => self.route(o, &mut out)?,
                ProceedResult::NeedsOneMoreMessage => return Ok((Step::Waiting(self), out)),
                ProceedResult::Yielded => {}
                ProceedResult::Output(Ok(t)) => return Ok((Step::Finished(t), out)),
                ProceedResult::Output(Err(e)) => {
                    return Err(blame::to_protocol_error(
                        self.what,
                        &e,
                        &self.parties,
                        &self.senders,
                    ))
                }
                ProceedResult::Error(e) => {
                    return Err(ProtocolError::Bug(format!(
                        "{} state machine: {e}",
                        self.what
                    )))
                }
            }
        }
    }

    fn route(
        &self,
        o: round_based::Outgoing<M>,
        out: &mut Vec<Outgoing<CggmpMsg>>,
    ) -> Result<(), ProtocolError> {
        let payload = serde_json::to_vec(&o.msg)
            .map_err(|e| ProtocolError::Bug(format!("serialize {} message: {e}", self.what)))?;
        match o.recipient {
            MessageDestination::AllParties => {
                out.extend(self.parties.others().map(|to| Outgoing {
                    to: to.clone(),
                    msg: CggmpMsg::Broadcast {
                        phase: self.phase,
                        payload: payload.clone(),
                    },
                }));
            }
            MessageDestination::OneParty(j) => {
                let to = self
                    .parties
                    .node(j)
                    .filter(|_| j != self.parties.me())
                    .ok_or_else(|| {
                        ProtocolError::Bug(format!("{} sends to party {j}", self.what))
                    })?;
                out.push(Outgoing {
                    to: to.clone(),
                    msg: CggmpMsg::P2p {
                        phase: self.phase,
                        payload,
                    },
                });
            }
        }
        Ok(())
    }
}
