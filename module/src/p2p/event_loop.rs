//! The swarm task: owns the swarm, the per-peer send queues and the delivery backlog.
//!
//! Everything here runs on one task and never blocks: commands from the handles, swarm events
//! and a periodic tick are handled as they come, and delivery into the (bounded) incoming channel
//! uses `try_send`, parking what does not fit in a backlog whose entries are acked only once
//! delivered.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use libp2p::{
    request_response::{self, Message, OutboundFailure, OutboundRequestId, ResponseChannel},
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, DialError, SwarmEvent,
    },
    PeerId, Swarm,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior},
};

use super::{
    peer::{Link, Outgoing, Peer, BACKOFF_INITIAL, STABLE_AFTER},
    registry::Registry,
    swarm::{Behaviour, BehaviourEvent},
    Incoming, P2pError, PeerInfo, MAX_ATTEMPTS, MESSAGE_DEADLINE, REQUEST_TIMEOUT, SIGNATURE_LEN,
    WINDOW,
};
use crate::proto::NodeId;

/// Period of redials and queue expiry.
const TICK: Duration = Duration::from_millis(100);
/// Further commands handled per wake-up before the swarm gets polled again.
const COMMAND_BATCH: usize = 256;
/// Inbound messages parked un-acked while the incoming channel is full. Honest senders never
/// reach it (their windows bound what they have in flight); beyond it requests are dropped
/// un-acked and their senders retry.
const BACKLOG_MAX: usize = 16 * 1024;
/// Bytes parked in the backlog, in all.
const BACKLOG_BYTES: usize = 256 * 1024 * 1024;
/// Bytes parked in the backlog from one peer: a peer that floods fills only its own share.
const PEER_BACKLOG_BYTES: usize = 64 * 1024 * 1024;

/// What the backlog holds when a peer's request arrives: messages and bytes in all, and
/// bytes from that peer.
#[derive(Clone, Copy, Debug)]
struct Parked {
    messages: usize,
    bytes: usize,
    from_peer: usize,
}

impl Parked {
    /// Whether a request of `messages` messages and `len` bytes fits: under [`BACKLOG_MAX`]
    /// messages, [`BACKLOG_BYTES`] in all and [`PEER_BACKLOG_BYTES`] from its peer.
    fn admits(self, messages: usize, len: usize) -> bool {
        self.messages.saturating_add(messages) <= BACKLOG_MAX
            && self.bytes.saturating_add(len) <= BACKLOG_BYTES
            && self.from_peer.saturating_add(len) <= PEER_BACKLOG_BYTES
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    /// This node: straight into the incoming channel.
    Local,
    /// The registry remote at this index.
    Remote(usize),
}

/// A node added at runtime: where `send` puts its messages, and its queue counter.
pub(super) type AddedPeer = (Target, Arc<AtomicUsize>);

/// Requests from the handles.
pub(super) enum Command {
    /// Queue a message; its queue counter was already incremented by the handle.
    Send {
        to: Target,
        bytes: Vec<u8>,
        at: Instant,
    },
    /// Report the connected registry nodes.
    Connected { reply: oneshot::Sender<Vec<NodeId>> },
    /// Add a node admitted at runtime; the reply carries its target and queue counter.
    AddPeer {
        peer: PeerInfo,
        /// `None`: the node is this one.
        reply: oneshot::Sender<Result<Option<AddedPeer>, P2pError>>,
    },
    /// Replace a registered node's key (a committed `NodeRotateKey`).
    SetPeerKey {
        node: NodeId,
        public_key: [u8; 32],
        reply: oneshot::Sender<Result<(), P2pError>>,
    },
    /// Remove a node from the registry (a committed `NodeRemove`); replies whether it was
    /// registered.
    RemovePeer {
        node: NodeId,
        reply: oneshot::Sender<bool>,
    },
    /// Cut this node off from its peers while the switch is on.
    CutBy(Arc<dyn super::LinkCut>),
}

/// How to acknowledge a message once it is in the incoming channel.
enum Ack {
    /// A self-send: release its queue slot.
    Local,
    /// One message of a peer's request (a batch, [`EventLoop::acks`]): once the last one is
    /// in, the ack goes out so the sender stops retrying.
    Remote(u64),
}

/// Most bytes of messages packed into one request (a larger message goes alone).
const BATCH_BYTES: usize = 64 * 1024;
/// Most messages packed into one request.
const BATCH_MESSAGES: usize = 64;
/// Bytes a batch adds per message: its length.
pub(super) const BATCH_HEADER: usize = 4;

/// The swarm task's state.
pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    local: NodeId,
    /// This node's key, the sender key of its messages to itself.
    local_key: ed25519_dalek::VerifyingKey,
    /// Most bytes packed into one request: [`BATCH_BYTES`], or less if the codec's limit is.
    batch_bytes: usize,
    local_peer: PeerId,
    registry: Registry,
    /// Parallel to `registry.remotes`.
    peers: Vec<Peer>,
    local_queued: Arc<AtomicUsize>,
    /// Requests sent and not yet acked: the peer index and the batch of messages.
    in_flight: BTreeMap<OutboundRequestId, (usize, Vec<Outgoing>)>,
    /// Peers whose queue got messages since the last pump (pumped once per command batch, so
    /// that what arrived together leaves in one request).
    to_pump: Vec<usize>,
    backlog: VecDeque<(Incoming, Ack)>,
    /// Requests received whose messages are not all in the incoming channel yet: the ack to
    /// send and how many messages still wait, by a local id.
    acks: BTreeMap<u64, (ResponseChannel<()>, usize)>,
    next_ack: u64,
    /// Bytes in `backlog`, in all and per sender.
    backlog_bytes: (usize, BTreeMap<NodeId, usize>),
    /// Inbound requests dropped on a full backlog since the last log line.
    dropped_inbound: usize,
    /// Messages to and from peers dropped by a partition since the last log line.
    partition_dropped: (usize, usize),
    /// While on, nothing goes to or comes from a peer ([`EventLoop::partitioned`]).
    cut: Option<Arc<dyn super::LinkCut>>,
    commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Incoming>,
    stop: Option<&'static str>,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        (local, local_key, max_request): (NodeId, ed25519_dalek::VerifyingKey, usize),
        local_peer: PeerId,
        registry: Registry,
        commands: mpsc::Receiver<Command>,
        incoming: mpsc::Sender<Incoming>,
    ) -> Self {
        let now = Instant::now();
        let peers = registry
            .remotes
            .iter()
            .map(|r| Peer::new(r, local_peer, now))
            .collect();
        Self {
            swarm,
            local,
            local_key,
            batch_bytes: BATCH_BYTES.min(max_request),
            local_peer,
            registry,
            peers,
            local_queued: Arc::new(AtomicUsize::new(0)),
            in_flight: BTreeMap::new(),
            to_pump: Vec::new(),
            backlog: VecDeque::new(),
            acks: BTreeMap::new(),
            next_ack: 0,
            backlog_bytes: (0, BTreeMap::new()),
            dropped_inbound: 0,
            partition_dropped: (0, 0),
            cut: None,
            commands,
            incoming,
            stop: None,
        }
    }

    /// Every node a handle may send to (this one included), with its target and the queue
    /// counter the handle increments and this loop decrements.
    pub(super) fn targets(&self) -> impl Iterator<Item = (NodeId, Target, Arc<AtomicUsize>)> + '_ {
        let local = (
            self.local.clone(),
            Target::Local,
            Arc::clone(&self.local_queued),
        );
        let remotes = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.node.clone(), Target::Remote(i), Arc::clone(&p.queued)));
        std::iter::once(local).chain(remotes)
    }

    /// Runs until every handle is gone or the incoming receiver is dropped.
    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while self.stop.is_none() {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        self.on_command(cmd);
                        for _ in 0..COMMAND_BATCH {
                            match self.commands.try_recv() {
                                Ok(cmd) => self.on_command(cmd),
                                Err(_) => break,
                            }
                        }
                        for idx in std::mem::take(&mut self.to_pump) {
                            self.pump(idx);
                        }
                    }
                    None => self.stop = Some("every handle was dropped"),
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                // Room in the incoming channel again: move the backlog on.
                // (The permit is released at once; `flush_backlog` is the only sender.)
                open = self.incoming.reserve().map(|permit| permit.is_ok()), if !self.backlog.is_empty() => {
                    if open {
                        self.flush_backlog();
                    } else {
                        self.stop = Some("the incoming receiver was dropped");
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
        tracing::info!(reason = self.stop.unwrap_or_default(), "p2p task stopped");
    }

    /// Whether this node is cut off now ([`super::P2pHandle::cut_by`]; never, unless a switch
    /// was set). Checked where a message would go on the wire and where a peer's request
    /// arrives, so no sender bypasses it.
    fn partitioned(&self) -> bool {
        self.cut.as_ref().is_some_and(|c| c.is_cut())
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Send {
                to: Target::Local,
                bytes,
                ..
            } => {
                let Some((bytes, signature)) = split_signature(bytes) else {
                    tracing::error!("bug: a self-send without its signature");
                    return;
                };
                let incoming = Incoming {
                    from: self.local.clone(),
                    bytes,
                    signature,
                    sender_key: self.local_key,
                };
                self.park(incoming, Ack::Local);
                self.flush_backlog();
            }
            Command::Send {
                to: Target::Remote(idx),
                bytes,
                at,
            } => {
                let Some(p) = self.peers.get_mut(idx) else {
                    tracing::error!(idx, "bug: send to a peer index outside the registry");
                    return;
                };
                let seq = p.next_seq;
                p.next_seq += 1;
                p.queue.push_back(Outgoing {
                    seq,
                    bytes: Arc::new(bytes),
                    at,
                    attempts: 0,
                });
                if !self.to_pump.contains(&idx) {
                    self.to_pump.push(idx);
                }
            }
            Command::Connected { reply } => {
                let up = self
                    .peers
                    .iter()
                    .filter(|p| p.is_up())
                    .map(|p| p.node.clone())
                    .collect();
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(up);
            }
            Command::AddPeer { peer, reply } => {
                let _ = reply.send(self.add_peer(&peer));
            }
            Command::SetPeerKey {
                node,
                public_key,
                reply,
            } => {
                let _ = reply.send(self.set_peer_key(&node, &public_key));
            }
            Command::RemovePeer { node, reply } => {
                let _ = reply.send(self.remove_peer(&node));
            }
            Command::CutBy(c) => self.cut = Some(c),
        }
    }

    /// Registers a node admitted at runtime: the gate admits its key and the tick dials it.
    fn add_peer(&mut self, info: &PeerInfo) -> Result<Option<AddedPeer>, P2pError> {
        let Some((idx, new)) = self.registry.add(&self.local, self.local_peer, info)? else {
            return Ok(None);
        };
        if new {
            let Some(remote) = self.registry.remotes.get(idx) else {
                return Err(P2pError::InvalidPeer {
                    node: info.node.clone(),
                    reason: "bug: registry index out of range".into(),
                });
            };
            let peer = Peer::new(remote, self.local_peer, Instant::now());
            self.swarm.behaviour_mut().allow(remote.peer_id);
            tracing::info!(node = %info.node, peer = %remote.peer_id, addr = %info.addr,
                "node added to the registry");
            match self.peers.get_mut(idx) {
                // Admitted again after a removal: its old slot, and its queue counter, which
                // the handle may still hold.
                Some(old) => {
                    let queued = Arc::clone(&old.queued);
                    *old = peer;
                    old.queued = queued;
                }
                None => self.peers.push(peer),
            }
        }
        match self.peers.get(idx) {
            Some(p) => Ok(Some((Target::Remote(idx), Arc::clone(&p.queued)))),
            None => Err(P2pError::InvalidPeer {
                node: info.node.clone(),
                reason: "bug: peer index out of range".into(),
            }),
        }
    }

    /// A registered node's new key: connections under the old key are closed and refused
    /// from now on, the new key is admitted and dialed. Queued messages stay (they are signed
    /// for the node, not for its key).
    fn set_peer_key(&mut self, node: &NodeId, public_key: &[u8; 32]) -> Result<(), P2pError> {
        let Some((idx, old)) = self.registry.set_key(self.local_peer, node, public_key)? else {
            return Ok(());
        };
        self.swarm.behaviour_mut().disallow(&old);
        let _ = self.swarm.disconnect_peer_id(old);
        let Some(remote) = self.registry.remotes.get(idx) else {
            return Ok(());
        };
        self.swarm.behaviour_mut().allow(remote.peer_id);
        let fresh = Peer::new(remote, self.local_peer, Instant::now());
        if let Some(p) = self.peers.get_mut(idx) {
            p.peer_id = fresh.peer_id;
            p.dial_delay = fresh.dial_delay;
            p.link = fresh.link;
            p.conns.clear();
        }
        tracing::info!(%node, old_peer = %old, peer = %remote.peer_id, "node key rotated: the old key is refused from now on");
        Ok(())
    }

    /// A node removed from the registry: its connections are closed and refused from now on,
    /// it is never dialed again, and what was queued for it is dropped.
    fn remove_peer(&mut self, node: &NodeId) -> bool {
        let Some((idx, peer_id)) = self.registry.remove(node) else {
            return false;
        };
        self.swarm.behaviour_mut().disallow(&peer_id);
        let _ = self.swarm.disconnect_peer_id(peer_id);
        if let Some(p) = self.peers.get_mut(idx) {
            p.addr = None;
            p.conns.clear();
            p.link = Link::down_after(BACKOFF_INITIAL, p.dial_delay);
            while p.queue.pop_front().is_some() {
                p.release();
            }
        }
        tracing::info!(%node, peer = %peer_id, "node removed from the registry: its connections are refused from now on");
        true
    }

    /// Sends what `idx`'s queue holds while its window has room, packing the messages queued
    /// together into one request (a batch: each message after its 4-byte big-endian length),
    /// up to [`BATCH_BYTES`] and [`BATCH_MESSAGES`]: one stream, one timer and one ack for many
    /// messages when they come in bursts, as they do under load.
    fn pump(&mut self, idx: usize) {
        let (cut, batch_bytes) = (self.partitioned(), self.batch_bytes);
        let Some(p) = self.peers.get_mut(idx) else {
            return;
        };
        if !p.is_up() {
            return;
        }
        let now = Instant::now();
        while p.in_flight < WINDOW {
            let mut batch: Vec<Outgoing> = Vec::new();
            let mut bytes = 0usize;
            while let Some(m) = p.queue.front() {
                let len = m.bytes.len() + BATCH_HEADER;
                // A message retried after a failure goes alone, so that a message its receiver
                // refuses (too large for it) never takes a batch's other messages down with it.
                let retried = m.attempts > 0 || batch.first().is_some_and(|b| b.attempts > 0);
                if !batch.is_empty()
                    && (retried || bytes + len > batch_bytes || batch.len() >= BATCH_MESSAGES)
                {
                    break;
                }
                let Some(m) = p.queue.pop_front() else {
                    break;
                };
                if now.duration_since(m.at) > MESSAGE_DEADLINE {
                    p.expired += 1;
                    p.release();
                    continue;
                }
                if cut {
                    // Lost on the wire: never sent, never retried.
                    self.partition_dropped.0 += 1;
                    p.release();
                    continue;
                }
                bytes += len;
                batch.push(m);
            }
            if batch.is_empty() {
                break;
            }
            let mut request = Vec::with_capacity(bytes);
            for m in &batch {
                // Fits: `send` caps a message at the limit, which fits a u32 (`spawn`).
                let len = u32::try_from(m.bytes.len()).unwrap_or(u32::MAX);
                request.extend_from_slice(&len.to_be_bytes());
                request.extend_from_slice(&m.bytes);
            }
            let id = self
                .swarm
                .behaviour_mut()
                .mpc
                .send_request(&p.peer_id, Arc::new(request));
            p.in_flight += 1;
            self.in_flight.insert(id, (idx, batch));
        }
    }

    /// Moves backlog entries into the incoming channel while it has room, acking each.
    fn flush_backlog(&mut self) {
        while let Some((incoming, ack)) = self.backlog.pop_front() {
            let (from, len) = (incoming.from.clone(), incoming.bytes.len());
            match self.incoming.try_send(incoming) {
                Ok(()) => {
                    self.unpark(&from, len);
                    match ack {
                        Ack::Local => {
                            self.local_queued.fetch_sub(1, Ordering::AcqRel);
                        }
                        Ack::Remote(id) => {
                            let Some((_, waiting)) = self.acks.get_mut(&id) else {
                                continue;
                            };
                            *waiting = waiting.saturating_sub(1);
                            if *waiting > 0 {
                                continue;
                            }
                            if let Some((channel, _)) = self.acks.remove(&id) {
                                if self
                                    .swarm
                                    .behaviour_mut()
                                    .mpc
                                    .send_response(channel, ())
                                    .is_err()
                                {
                                    tracing::debug!("ack not sent: the request timed out meanwhile (its sender retries)");
                                }
                            }
                        }
                    }
                }
                Err(mpsc::error::TrySendError::Full(incoming)) => {
                    self.backlog.push_front((incoming, ack));
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    self.acks.clear();
                    self.backlog_bytes = (0, BTreeMap::new());
                    self.stop = Some("the incoming receiver was dropped");
                    return;
                }
            }
        }
    }

    /// Parks a message in the backlog, counting its bytes against its sender.
    fn park(&mut self, incoming: Incoming, ack: Ack) {
        let len = incoming.bytes.len();
        self.backlog_bytes.0 = self.backlog_bytes.0.saturating_add(len);
        let n = self
            .backlog_bytes
            .1
            .entry(incoming.from.clone())
            .or_insert(0);
        *n = n.saturating_add(len);
        self.backlog.push_back((incoming, ack));
    }

    /// A parked message of `from` (`len` bytes) left the backlog.
    fn unpark(&mut self, from: &NodeId, len: usize) {
        self.backlog_bytes.0 = self.backlog_bytes.0.saturating_sub(len);
        if let Some(n) = self.backlog_bytes.1.get_mut(from) {
            *n = n.saturating_sub(len);
            if *n == 0 {
                self.backlog_bytes.1.remove(from);
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gate(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Mpc(ev)) => self.on_mpc_event(ev),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connection_established(peer_id, connection_id, endpoint.is_dialer()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let Some(idx) = self.registry.index_of(&peer_id) else {
                    return;
                };
                let Some(p) = self.peers.get_mut(idx) else {
                    return;
                };
                p.conns.retain(|(id, _)| *id != connection_id);
                if num_established == 0 {
                    let backoff = match p.link {
                        Link::Up { since, .. } if since.elapsed() >= STABLE_AFTER => {
                            BACKOFF_INITIAL
                        }
                        link => link.backoff(),
                    };
                    p.link = Link::down_after(backoff, p.dial_delay);
                    let cause = cause.map(|c| c.to_string());
                    tracing::info!(peer = %p.node, ?cause, queued = p.queue.len(), "disconnected; will redial");
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } => {
                let Some(p) = self
                    .registry
                    .index_of(&peer_id)
                    .and_then(|i| self.peers.get_mut(i))
                else {
                    return;
                };
                if let Link::Dialing { backoff } = p.link {
                    p.link = Link::down_after(backoff, p.dial_delay);
                    tracing::debug!(peer = %p.node, %error, ?backoff, "dial failed; will redial");
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                peer_id,
                ..
            } => {
                // Registry refusals were logged at warn by the gate.
                tracing::debug!(remote = %send_back_addr, ?peer_id, %error, "inbound connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "listening");
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            SwarmEvent::ListenerClosed {
                reason, addresses, ..
            } => {
                tracing::error!(
                    ?reason,
                    ?addresses,
                    "listener closed: no more inbound connections"
                );
            }
            _ => {}
        }
    }

    fn on_connection_established(&mut self, peer_id: PeerId, conn: ConnectionId, dialed: bool) {
        let Some(idx) = self.registry.index_of(&peer_id) else {
            // The gate refuses these before they are established; belt and braces.
            tracing::warn!(peer = %peer_id, "closing connection: peer key is not in the node registry");
            self.swarm.close_connection(conn);
            return;
        };
        let Some(p) = self.peers.get_mut(idx) else {
            return;
        };
        p.conns.push((conn, dialed));
        if !p.is_up() {
            let now = Instant::now();
            p.link = Link::Up {
                since: now,
                backoff: p.link.backoff(),
            };
            p.last_ack = now;
            tracing::info!(peer = %p.node, dialed, queued = p.queue.len(), "connected");
        }
        // When both nodes of a pair dial (the higher PeerId only dials after a delay, but it
        // happens), request-response would alternate between the two connections and reorder
        // messages. Keep the one dialed by the lower PeerId: each side closes only connections it
        // dialed itself, so the two sides agree without talking. (Requests in flight on a closed
        // connection are resent: possibly a duplicate, never a loss.)
        // Of its own connections the dialer keeps the newest, as the receiving side's gate
        // does with inbound ones (a newer connection replaces an older that may be dead).
        let we_keep_ours = self.local_peer < p.peer_id;
        if p.conns.iter().any(|(_, d)| *d == we_keep_ours) {
            let ours: Vec<ConnectionId> = p
                .conns
                .iter()
                .filter(|(_, d)| *d)
                .map(|(id, _)| *id)
                .collect();
            let close = ours.len().saturating_sub(usize::from(we_keep_ours));
            for id in ours.into_iter().take(close) {
                self.swarm.close_connection(id);
            }
        }
        self.pump(idx);
    }

    fn on_mpc_event(&mut self, ev: request_response::Event<Arc<Vec<u8>>, ()>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some((from, key)) = self.registry.index_of(&peer).and_then(|i| {
                    let p = self.peers.get(i)?;
                    Some((p.node.clone(), self.registry.remotes.get(i)?.key))
                }) else {
                    tracing::warn!(%peer, bytes = request.len(), "dropping request from a peer outside the registry");
                    return;
                };
                if self.partitioned() {
                    // Dropping `channel` un-acked: the sender retries, then gives up.
                    self.partition_dropped.1 += 1;
                    return;
                }
                let len = request.len();
                let Some(messages) = split_batch(&request) else {
                    // Dropping `channel` un-acked: a faulty or malicious peer retries a few
                    // times at most.
                    tracing::warn!(%from, bytes = len, "dropping a request that is not a batch of messages each longer than its signature");
                    return;
                };
                let parked = Parked {
                    messages: self.backlog.len(),
                    bytes: self.backlog_bytes.0,
                    from_peer: self.backlog_bytes.1.get(&from).copied().unwrap_or(0),
                };
                if !parked.admits(messages.len(), len) {
                    // Dropping `channel` closes the stream without ack: the sender retries.
                    self.dropped_inbound += 1;
                    return;
                }
                let ack = self.next_ack;
                self.next_ack += 1;
                self.acks.insert(ack, (channel, messages.len()));
                for (bytes, signature) in messages {
                    self.park(
                        Incoming {
                            from: from.clone(),
                            bytes,
                            signature,
                            sender_key: key,
                        },
                        Ack::Remote(ack),
                    );
                }
                self.flush_backlog();
            }
            request_response::Event::Message {
                message: Message::Response { request_id, .. },
                ..
            } => {
                let Some((idx, batch)) = self.in_flight.remove(&request_id) else {
                    return;
                };
                if let Some(p) = self.peers.get_mut(idx) {
                    p.in_flight = p.in_flight.saturating_sub(1);
                    p.last_ack = Instant::now();
                    for _ in &batch {
                        p.release();
                    }
                }
                self.pump(idx);
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => self.on_send_failure(request_id, error),
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_send_failure(&mut self, id: OutboundRequestId, error: OutboundFailure) {
        let Some((idx, batch)) = self.in_flight.remove(&id) else {
            return;
        };
        let Some(p) = self.peers.get_mut(idx) else {
            return;
        };
        p.in_flight = p.in_flight.saturating_sub(1);
        if matches!(error, OutboundFailure::Timeout)
            && p.is_up()
            && p.last_ack.elapsed() > REQUEST_TIMEOUT
        {
            // Nothing acked for a whole timeout: treat the connection as dead and redial.
            tracing::warn!(peer = %p.node, "no ack within {REQUEST_TIMEOUT:?}: closing the connection to redial");
            p.last_ack = Instant::now();
            let _ = self.swarm.disconnect_peer_id(p.peer_id);
        }
        for mut m in batch {
            // A lost connection is not the message's fault: it waits for the redial.
            if !matches!(
                error,
                OutboundFailure::ConnectionClosed | OutboundFailure::DialFailure
            ) {
                m.attempts += 1;
            }
            if m.attempts >= MAX_ATTEMPTS {
                tracing::warn!(peer = %p.node, bytes = m.bytes.len(), attempts = m.attempts, %error,
                    "giving up on a message");
                p.release();
            } else if m.at.elapsed() > MESSAGE_DEADLINE {
                p.expired += 1;
                p.release();
            } else {
                tracing::debug!(peer = %p.node, bytes = m.bytes.len(), attempts = m.attempts, %error,
                    "send failed; will retry");
                let pos = p.queue.partition_point(|q| q.seq < m.seq);
                p.queue.insert(pos, m);
            }
        }
        self.pump(idx);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for p in &mut self.peers {
            if let (Link::Down { retry_at, backoff }, Some(addr)) = (p.link, &p.addr) {
                if retry_at <= now {
                    let opts = DialOpts::peer_id(p.peer_id)
                        .addresses(vec![addr.clone()])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    p.link = match self.swarm.dial(opts) {
                        Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                            Link::Dialing { backoff }
                        }
                        Err(error) => {
                            tracing::debug!(peer = %p.node, %error, "cannot dial");
                            Link::down_after(backoff, p.dial_delay)
                        }
                    };
                }
            }
            // Queues are sorted by sequence number, hence (nearly) by age: expire from the front.
            while p
                .queue
                .front()
                .is_some_and(|m| now.duration_since(m.at) > MESSAGE_DEADLINE)
            {
                p.queue.pop_front();
                p.expired += 1;
                p.release();
            }
            if p.expired > 0 {
                tracing::warn!(peer = %p.node, messages = p.expired, connected = p.is_up(),
                    "gave up on messages not delivered within {MESSAGE_DEADLINE:?}");
                p.expired = 0;
            }
        }
        if self.partition_dropped != (0, 0) {
            let (outgoing, incoming) = std::mem::take(&mut self.partition_dropped);
            tracing::warn!(
                outgoing,
                incoming,
                "FAULT INJECTION: partitioned: dropped messages to and from peers"
            );
        }
        if self.dropped_inbound > 0 {
            tracing::warn!(
                messages = self.dropped_inbound,
                "dropped inbound messages un-acked: delivery backlog full (senders retry)"
            );
            self.dropped_inbound = 0;
        }
    }
}

/// Splits a request into its messages (each after its 4-byte big-endian length), each split
/// into the message and the signature that ends it; `None` if it is not exactly that, or holds
/// more than [`BATCH_MESSAGES`] (no sender packs more: a request of many tiny messages is
/// refused before it is copied apart).
pub(super) fn split_batch(mut request: &[u8]) -> Option<Vec<(Vec<u8>, [u8; SIGNATURE_LEN])>> {
    let mut out = Vec::new();
    while !request.is_empty() {
        if out.len() >= BATCH_MESSAGES {
            return None;
        }
        let (len, rest) = request.split_first_chunk::<BATCH_HEADER>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let message = rest.get(..len)?;
        out.push(split_signature(message.to_vec())?);
        request = rest.get(len..)?;
    }
    (!out.is_empty()).then_some(out)
}

/// Splits a wire message into the message and the signature that ends it.
fn split_signature(mut bytes: Vec<u8>) -> Option<(Vec<u8>, [u8; SIGNATURE_LEN])> {
    let at = bytes.len().checked_sub(SIGNATURE_LEN)?;
    let signature = <[u8; SIGNATURE_LEN]>::try_from(bytes.get(at..)?).ok()?;
    bytes.truncate(at);
    Some((bytes, signature))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn parked__should_refuse_a_flooding_peer_at_its_share_and_still_admit_the_others() {
        // A peer with 64 MiB parked: its next request is refused, another peer's is not.
        let flooder = Parked {
            messages: 100,
            bytes: PEER_BACKLOG_BYTES,
            from_peer: PEER_BACKLOG_BYTES,
        };
        assert!(!flooder.admits(1, 1));
        let honest = Parked {
            from_peer: 0,
            ..flooder
        };
        assert!(honest.admits(1, MIB));
        // Up to the peer's share exactly, and not a byte more.
        let near = Parked {
            messages: 0,
            bytes: 0,
            from_peer: PEER_BACKLOG_BYTES - MIB,
        };
        assert!(near.admits(1, MIB));
        assert!(!near.admits(1, MIB + 1));
    }

    #[test]
    fn parked__should_refuse_beyond_the_total_bytes_or_messages() {
        let full = Parked {
            messages: 0,
            bytes: BACKLOG_BYTES,
            from_peer: 0,
        };
        assert!(!full.admits(1, 1));
        let many = Parked {
            messages: BACKLOG_MAX,
            bytes: 0,
            from_peer: 0,
        };
        assert!(!many.admits(1, 1));
        assert!(Parked {
            messages: BACKLOG_MAX - 2,
            ..many
        }
        .admits(2, 1));
    }
}
