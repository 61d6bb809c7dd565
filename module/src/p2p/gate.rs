//! Admission control: only peers whose key is in the chain's node registry get a connection.
//!
//! Runs after the Noise handshake, so the `PeerId` it checks is authenticated. It sits first in
//! the composed behaviour: a denial here means no other behaviour ever sees the connection.
//!
//! A registry peer keeps at most one inbound connection: a new one replaces the older (a
//! restarted peer reconnects at once, even before its old connection is seen dead), so a peer
//! cannot multiply its streams and buffers by opening connections.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
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
        dummy, CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
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
    /// The inbound connection of each peer.
    inbound: BTreeMap<PeerId, ConnectionId>,
    /// Older inbound connections to close.
    to_close: VecDeque<(PeerId, ConnectionId)>,
}

impl Gate {
    /// A gate admitting exactly `allowed`; every refusal increments `refused`.
    pub(super) fn new(allowed: BTreeSet<PeerId>, refused: Arc<AtomicU64>) -> Self {
        Self {
            allowed,
            refused,
            inbound: BTreeMap::new(),
            to_close: VecDeque::new(),
        }
    }

    /// Admits `peer` from now on (a node added to the registry at runtime).
    pub(super) fn allow(&mut self, peer: PeerId) {
        self.allowed.insert(peer);
    }

    /// Refuses `peer`'s connections from now on (a node removed, or its key rotated away).
    pub(super) fn disallow(&mut self, peer: &PeerId) {
        self.allowed.remove(peer);
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
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let handler = self.check(peer, remote)?;
        if let Some(old) = self.inbound.insert(peer, id) {
            tracing::debug!(%peer, %remote, "a newer inbound connection replaces the older");
            self.to_close.push_back((peer, old));
        }
        Ok(handler)
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

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id,
            connection_id,
            ..
        }) = event
        {
            if self.inbound.get(&peer_id) == Some(&connection_id) {
                self.inbound.remove(&peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.to_close.pop_front() {
            Some((peer_id, id)) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            }),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn poll_close(gate: &mut Gate) -> Option<(PeerId, ConnectionId)> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match gate.poll(&mut cx) {
            Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            }) => Some((peer_id, id)),
            _ => None,
        }
    }

    #[test]
    fn gate__should_keep_one_inbound_connection_per_peer_and_close_the_older() {
        let (a, b, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut gate = Gate::new(BTreeSet::from([a, b]), Arc::default());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let inbound = |gate: &mut Gate, id: usize, peer: PeerId| {
            gate.handle_established_inbound_connection(
                ConnectionId::new_unchecked(id),
                peer,
                &addr,
                &addr,
            )
            .is_ok()
        };
        assert!(inbound(&mut gate, 1, a));
        assert!(inbound(&mut gate, 2, b));
        assert_eq!(poll_close(&mut gate), None);
        // a opens two more: each replaces the one before, which the gate closes.
        assert!(inbound(&mut gate, 3, a));
        assert!(inbound(&mut gate, 4, a));
        assert_eq!(
            poll_close(&mut gate),
            Some((a, ConnectionId::new_unchecked(1)))
        );
        assert_eq!(
            poll_close(&mut gate),
            Some((a, ConnectionId::new_unchecked(3)))
        );
        assert_eq!(poll_close(&mut gate), None);
        assert_eq!(gate.inbound.len(), 2);
        // Outside the registry: denied, counted, nothing kept.
        assert!(!inbound(&mut gate, 5, stranger));
        assert_eq!(gate.refused.load(Ordering::Relaxed), 1);
        assert_eq!(gate.inbound.len(), 2);
    }
}
