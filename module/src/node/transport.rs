//! The runtime's port to the network: one session message to one peer ([`Transport`]).
//!
//! Production sends through the p2p channel ([`P2pTransport`]). A test build with faults
//! configured puts `crate::fault::FaultyTransport` in front of it (misbehaviour, wrong session
//! ids, drops, copies, delays, corruption), in one place (`Node::with_faults`, in
//! `crate::fault`); the session runtime and the CGGMP24 worker threads only see the port.

use futures::future::BoxFuture;
use seqmpc_proto::wire::p2p_envelope::Payload;
use seqmpc_proto::{NodeId, SessionId};
use tracing::warn;

use crate::p2p::P2pHandle;
use crate::session::codec::{encode, is_evidence};

/// Sends session messages.
pub(crate) trait Transport: Send + Sync {
    /// Sends `payload` of `session` to `to`. A failure is logged, not returned: a lost message
    /// is the protocol's to survive (its session times out or names the silent peer).
    fn send<'a>(
        &'a self,
        session: &'a SessionId,
        to: &'a NodeId,
        payload: Payload,
    ) -> BoxFuture<'a, ()>;
}

/// The p2p channel.
pub(crate) struct P2pTransport(pub(crate) P2pHandle);

impl Transport for P2pTransport {
    fn send<'a>(
        &'a self,
        session: &'a SessionId,
        to: &'a NodeId,
        payload: Payload,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let signed = is_evidence(&payload);
            send_envelope(&self.0, session, to, encode(session, payload), signed).await;
        })
    }
}

/// Sends an encoded envelope, signed when a failure report may quote it (`is_evidence`:
/// `crate::p2p`), and logs a failure.
pub(crate) async fn send_envelope(
    p2p: &P2pHandle,
    session: &SessionId,
    to: &NodeId,
    bytes: Vec<u8>,
    signed: bool,
) {
    let sent = if signed {
        p2p.send_signed(to, bytes).await
    } else {
        p2p.send(to, bytes).await
    };
    if let Err(e) = sent {
        warn!(%session, %to, error = %e, "p2p send failed");
    }
}
