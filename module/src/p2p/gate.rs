//! Admission control: only peers whose key is in the chain's node registry get a connection.
//!
//! Runs after the Noise handshake, so the `PeerId` it checks is authenticated. It sits first in
//! the composed behaviour: a denial here means no other behaviour ever sees the connection.

use std::{
    collections::BTreeSet,
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("peer {peer} is not in the node registry")]
pub(super) struct NotInRegistry {
    /// The authenticated peer.
    pub peer: PeerId,
}

/// Denies every established connection whose peer is not in `allowed`, counting them.
pub(super) struct Gate {
    allowed: BTreeSet<PeerId>,
    /// Connections denied so far (shared with [`super::P2pHandle::refused_connections`]).
    refused: Arc<AtomicU64>,
}

impl Gate {
    /// A gate admitting exactly `allowed`; every refusal increments `refused`.
    pub(super) fn new(allowed: BTreeSet<PeerId>, refused: Arc<AtomicU64>) -> Self {
        Self { allowed, refused }
    }

    /// Admits `peer` from now on (a node added to the registry at runtime).
    pub(super) fn allow(&mut self, peer: PeerId) {
        self.allowed.insert(peer);
    }

    fn check(
        &self,
        peer: PeerId,
        remote: &Multiaddr,
    ) -> Result<dummy::ConnectionHandler, ConnectionDenied> {
        if self.allowed.contains(&peer) {
            Ok(dummy::ConnectionHandler)
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, %remote, "closing connection: peer key is not in the node registry");
            Err(ConnectionDenied::new(NotInRegistry { peer }))
        }
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, remote)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, addr)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
