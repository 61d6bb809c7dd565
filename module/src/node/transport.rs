//! The runtime's port to the network: one session message to one peer ([`Transport`]).
//!
//! Production sends through the p2p channel ([`P2pTransport`]). A test build with faults
//! configured puts `crate::fault::FaultyTransport` in front of it (misbehaviour, wrong session
//! ids, drops, copies, delays, corruption), chosen in one place ([`for_node`]); the session
//! runtime and the CGGMP24 worker threads only see the port.

use std::sync::Arc;

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

/// The transport of a node: the p2p channel, behind the configured faults in a test build
/// (where a `flood-mib-per-s` flood starts too: call it inside the runtime).
pub(crate) fn for_node(p2p: P2pHandle, cfg: &super::NodeConfig) -> Arc<dyn Transport> {
    #[cfg(feature = "fault-injection")]
    if cfg.faults.any() {
        crate::fault::spawn_flood(p2p.clone(), cfg.faults.flood_mib_per_s);
        return Arc::new(crate::fault::FaultyTransport::new(p2p, cfg.faults.clone()));
    }
    let _ = cfg;
    Arc::new(P2pTransport(p2p))
}
