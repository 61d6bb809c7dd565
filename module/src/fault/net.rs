//! Network faults and the faulty transport: what happens to each session message this node
//! sends (tampered, under another session id, dropped, duplicated, delayed, corrupted).

use seqmpc_proto::wire::p2p_envelope::Payload;
use seqmpc_proto::{NodeId, SessionId};

use super::Faults;
use crate::protocol::cggmp::CggmpMsg;

/// Faults of the network, applied to each message as it leaves ([`NetFaults::plan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetFaults {
    /// Percent of messages dropped.
    pub drop_pct: u8,
    /// Every message sent twice.
    pub dup: bool,
    /// Each message held a random 0..this many milliseconds.
    pub delay_ms: u64,
    /// Percent of encoded envelopes with one random byte flipped.
    pub corrupt_pct: u8,
}

/// What happens to one outgoing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Copies to send (0: dropped).
    pub copies: usize,
    /// Hold it this long first.
    pub delay: std::time::Duration,
    /// Flip this byte of the encoding first.
    pub corrupt_at: Option<usize>,
}

impl NetFaults {
    /// The fate of one message of `len` encoded bytes.
    pub fn plan(&self, len: usize) -> Delivery {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let hit = |pct: u8, rng: &mut rand::rngs::ThreadRng| rng.gen_range(0..100u8) < pct;
        let copies = if hit(self.drop_pct, &mut rng) {
            0
        } else if self.dup {
            2
        } else {
            1
        };
        let delay = std::time::Duration::from_millis(if self.delay_ms > 0 {
            rng.gen_range(0..self.delay_ms)
        } else {
            0
        });
        let corrupt_at =
            (len > 0 && hit(self.corrupt_pct, &mut rng)).then(|| rng.gen_range(0..len));
        Delivery {
            copies,
            delay,
            corrupt_at,
        }
    }
}

/// The transport of a node with faults: every session message, from the session runtime and
/// from the CGGMP24 worker threads, is tampered with ([`Faults::tamper`],
/// [`Faults::tamper_cggmp`]), sent under [`Faults::session_for`], and through the network
/// faults ([`NetFaults::plan`]) before it reaches the p2p channel.
pub(crate) struct FaultyTransport {
    p2p: crate::p2p::P2pHandle,
    faults: Faults,
}

impl FaultyTransport {
    pub(crate) fn new(p2p: crate::p2p::P2pHandle, faults: Faults) -> Self {
        FaultyTransport { p2p, faults }
    }

    /// The payload as this node's faults make it.
    fn tampered(&self, to: &NodeId, payload: Payload) -> Payload {
        match self.faults.tamper(to, payload) {
            Payload::Cggmp(p) => match CggmpMsg::from_bytes(&p.msg) {
                Ok(msg) => Payload::Cggmp(seqmpc_proto::wire::CggmpPayload {
                    msg: self.faults.tamper_cggmp(msg).to_bytes(),
                }),
                Err(_) => Payload::Cggmp(p),
            },
            other => other,
        }
    }
}

impl crate::node::transport::Transport for FaultyTransport {
    fn send<'a>(
        &'a self,
        session: &'a SessionId,
        to: &'a NodeId,
        payload: Payload,
    ) -> futures::future::BoxFuture<'a, ()> {
        use crate::node::transport::send_envelope;
        let signing = matches!(
            payload,
            Payload::SignRound1(_) | Payload::SignRound2(_) | Payload::Cggmp(_)
        );
        if self.faults.sign_frame && signing && self.faults.framed.is_victim(session, to) {
            tracing::warn!(%session, %to, "FAULT INJECTION: withholding a signing message");
            return Box::pin(async {});
        }
        let payload = self.tampered(to, payload);
        let session = self.faults.session_for(session);
        let signed = crate::session::codec::is_evidence(&payload);
        let mut bytes = crate::session::codec::encode(&session, payload);
        Box::pin(async move {
            if self.faults.net == NetFaults::default() {
                return send_envelope(&self.p2p, &session, to, bytes, signed).await;
            }
            let d = self.faults.net.plan(bytes.len());
            if let Some(b) = d.corrupt_at.and_then(|i| bytes.get_mut(i)) {
                *b ^= 0xff;
            }
            // Held on a task of its own: a delayed message must not hold up its sender.
            let (p2p, to) = (self.p2p.clone(), to.clone());
            tokio::spawn(async move {
                tokio::time::sleep(d.delay).await;
                for _ in 0..d.copies {
                    send_envelope(&p2p, &session, &to, bytes.clone(), signed).await;
                }
            });
        })
    }
}
