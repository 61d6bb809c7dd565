//! The p2p channel between MPC nodes: libp2p over TCP, Noise and Yamux.
//!
//! Messages travel as requests of the request-response protocol `/seqmpc/mpc/2`: a 4-byte
//! big-endian length and a batch, the messages queued for the peer together, each after its own
//! 4-byte length (a message is at most `max_message_bytes`, enforced by `send` and by the
//! reader), answered by a one-byte ack once every message of the batch is delivered. A node's
//! libp2p identity is its ed25519 node key, so the Noise
//! handshake authenticates the `PeerId`, and the registry maps it to the sender [`NodeId`] of
//! every [`Incoming`]: the sender is never read from the message. Connections from keys outside
//! the registry are refused right after the handshake (logged, and counted:
//! [`P2pHandle::refused_connections`]). The registry starts from
//! [`P2pConfig::peers`] and grows by [`P2pHandle::add_peer`] (a node admitted by the chain).
//!
//! Noise proves a message's sender to its receiver only. So that a third party (the chain) can
//! check it too, the sender signs with its node key every message a failure report may quote
//! ([`P2pHandle::send_signed`]): on the wire a request is the message followed by 64 bytes, an
//! ed25519 signature over
//! [`p2p_signing_digest`](crate::proto::wire::p2p_signing_digest)`(from, to, message)`, or zeros
//! for a message no report can quote ([`P2pHandle::send`]: most of them, such as FROST
//! commitments and every CGGMP24 message, which only their receiver needs to trust). This layer
//! checks no signature: it hands on [`Incoming::signature`] with the sender's registered key
//! ([`Incoming::sender_key`]), and the node checks the signature of exactly the messages it keeps
//! as evidence ([`crate::evidence`]), dropping those that fail. A signature check per message
//! cost a node about a tenth of its CPU under signing load, in the swarm's single task.
//!
//! Of each pair of nodes, the one with the lower `PeerId` dials at once and the other half a
//! second later, so a pair normally shares one connection; if both dials meet, the connection
//! dialed by the lower `PeerId` is kept.
//!
//! # Delivery
//!
//! [`P2pHandle::send`] queues a message for one peer and returns at once. One task owns the
//! swarm; it dials every registry peer, redials with backoff, and sends each peer's queue in
//! order with up to [`WINDOW`] requests in flight. The messages queued for a peer by one burst
//! of `send`s leave in one request (up to 64 messages or 64 KiB): a stream, a yamux frame, a
//! request timer and an ack per batch rather than per message, which is most of what a node
//! spent on the network under signing load. A message waits for its peer's connection for up to
//! [`MESSAGE_DEADLINE`]; a request that fails or gets no ack within [`REQUEST_TIMEOUT`] is
//! retried (at most [`MAX_ATTEMPTS`] attempts), each of its messages alone, so that one message
//! the receiver refuses cannot hold up the others. Delivery is at least once and in order in the
//! common case; after a retry a message may arrive late or twice, which the protocol layer
//! tolerates.
//!
//! The receiver acks a request only once all its messages sit in the incoming channel (capacity
//! [`INCOMING_CAPACITY`]). When the consumer falls behind, messages wait un-acked, senders' windows
//! fill and their queues grow until [`P2pHandle::send`] returns [`P2pError::QueueFull`]: memory
//! stays bounded end to end.
//!
//! # Lifecycle
//!
//! [`spawn`] starts listening, waits for the listen address (see [`P2pHandle::listen_addr`],
//! useful with port 0), then spawns the swarm task. The task stops when
//! [`P2pHandle::shutdown`] is called, when the last handle clone is dropped (it is aborted), or
//! when the [`Incoming`] receiver is dropped. After that `send` returns [`P2pError::Closed`] and
//! the receiver yields `None`.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, PoisonError, RwLock,
    },
    time::Duration,
};

use futures::StreamExt;
use libp2p::{identity, swarm::SwarmEvent, Multiaddr};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::proto::NodeId;

mod codec;
mod event_loop;
mod gate;
#[cfg(test)]
#[allow(non_snake_case)]
mod no_panic;
mod peer;
mod registry;
mod swarm;
#[cfg(test)]
#[allow(non_snake_case)]
mod tests;

use event_loop::{Command, EventLoop, Target};

/// Capacity of the incoming channel returned by [`spawn`].
pub const INCOMING_CAPACITY: usize = 4096;
/// Messages per peer that may be queued or in flight before `send` returns `QueueFull`.
pub const PEER_QUEUE_CAPACITY: usize = 4096;
/// Requests in flight per peer.
pub const WINDOW: usize = 256;
/// Time for one request to be written and acked before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A message not acked this long after `send` is dropped (with a log line).
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(30);
/// Attempts per message on request failures (connection loss does not count as an attempt).
pub const MAX_ATTEMPTS: u32 = 5;

/// Commands from the handles to the swarm task; `send` fails fast when this is full.
const COMMAND_CAPACITY: usize = 8192;
/// How long [`spawn`] waits for the listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// One node of the chain's registry.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Node id on the chain.
    pub node: NodeId,
    /// Registered ed25519 public key; the node's libp2p identity.
    pub public_key: [u8; 32],
    /// Multiaddr to dial, e.g. `/ip4/127.0.0.1/tcp/27001`.
    pub addr: String,
}

/// Configuration of [`spawn`].
pub struct P2pConfig {
    /// This node's id.
    pub node: NodeId,
    /// This node's ed25519 secret seed; its public key must be the one registered for `node`.
    pub secret_key: Zeroizing<[u8; 32]>,
    /// Multiaddr to listen on, e.g. `/ip4/0.0.0.0/tcp/27001` (`/tcp/0` picks a free port).
    pub listen: String,
    /// The chain's node registry; may include this node.
    pub peers: Vec<PeerInfo>,
    /// Largest message accepted by `send` and from peers (1 ..= `u32::MAX`).
    pub max_message_bytes: usize,
}

impl fmt::Debug for P2pConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pConfig")
            .field("node", &self.node)
            .field("secret_key", &"<redacted>")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// A message from a registry node (possibly this node itself).
#[derive(Debug)]
pub struct Incoming {
    /// The sender, taken from the authenticated connection, never from the message.
    pub from: NodeId,
    /// The message as sent.
    pub bytes: Vec<u8>,
    /// What the sender put after the message: its ed25519 signature over
    /// [`p2p_signing_digest`](crate::proto::wire::p2p_signing_digest)`(from, this node, bytes)`
    /// if it sent it with [`P2pHandle::send_signed`], else zeros. **Not verified here**: check
    /// it against [`Incoming::sender_key`] before relying on it (the node does, for what it may
    /// quote as evidence).
    pub signature: [u8; SIGNATURE_LEN],
    /// The sender's registered ed25519 key, which the Noise handshake of the connection the
    /// message came on authenticated.
    pub sender_key: ed25519_dalek::VerifyingKey,
}

/// Length of the ed25519 signature (or zeros) that follows every message on the wire.
pub const SIGNATURE_LEN: usize = 64;

/// Errors of the p2p channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum P2pError {
    /// The message is larger than `max_message_bytes`.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The recipient is not in the registry.
    #[error("node {0} is not in the node registry")]
    UnknownPeer(NodeId),
    /// The recipient's queue is full (it is unreachable or slower than the sender): try later.
    #[error("send queue for node {0} is full")]
    QueueFull(NodeId),
    /// The p2p task has stopped.
    #[error("the p2p channel is closed")]
    Closed,
    /// A node added at runtime ([`P2pHandle::add_peer`]) conflicts with the registry.
    #[error("cannot add node {node} to the registry: {reason}")]
    InvalidPeer {
        /// The node.
        node: NodeId,
        /// What is wrong.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid p2p config: {field}: {reason}")]
    InvalidConfig {
        /// The offending field of [`P2pConfig`].
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Listening failed (address in use, no such interface, ...).
    #[error("cannot listen on {addr}")]
    Listen {
        /// The listen address.
        addr: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Building the transport failed.
    #[error("cannot set up the {what} transport")]
    Setup {
        /// Which layer.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where `send` puts a message for one node, plus that node's queue counter.
struct Slot {
    target: Target,
    /// Messages of this node queued or in flight; shared with the swarm task.
    queued: Arc<AtomicUsize>,
}

struct Inner {
    local: NodeId,
    /// Signs the messages sent with `send_signed` (the node key; zeroized on drop).
    signer: ed25519_dalek::SigningKey,
    listen_addr: String,
    max_message_bytes: usize,
    /// Grows when nodes are added at runtime, shrinks when they are removed.
    slots: RwLock<BTreeMap<NodeId, Slot>>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    /// Connections refused because the peer's key is not in the registry.
    refused: Arc<AtomicU64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Handle to the p2p channel; clones share one swarm task, aborted when the last clone drops.
#[derive(Clone)]
pub struct P2pHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for P2pHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pHandle")
            .field("node", &self.inner.local)
            .field("listen_addr", &self.inner.listen_addr)
            .finish_non_exhaustive()
    }
}

impl P2pHandle {
    /// This node's id.
    pub fn local_node(&self) -> &NodeId {
        &self.inner.local
    }

    /// The first address the listener reported, with the actual port when listening on
    /// `/tcp/0` (for `/ip4/0.0.0.0` it is one of the interface addresses).
    pub fn listen_addr(&self) -> &str {
        &self.inner.listen_addr
    }

    /// Queues a message for `to` and returns at once; no signature (zeros) follows it on the
    /// wire: for messages no failure report quotes.
    ///
    /// Sending to this node itself delivers into the incoming channel like any peer's message.
    ///
    /// # Errors
    /// [`P2pError::TooLarge`], [`P2pError::UnknownPeer`], [`P2pError::QueueFull`] (the bounded
    /// per-peer queue, [`PEER_QUEUE_CAPACITY`], is full) and [`P2pError::Closed`].
    pub async fn send(&self, to: &NodeId, bytes: Vec<u8>) -> Result<(), P2pError> {
        self.queue(to, bytes, false)
    }

    /// [`P2pHandle::send`], with this node's signature of the message after it: for messages
    /// the receiver may quote as evidence.
    ///
    /// # Errors
    /// As [`P2pHandle::send`].
    pub async fn send_signed(&self, to: &NodeId, bytes: Vec<u8>) -> Result<(), P2pError> {
        self.queue(to, bytes, true)
    }

    fn queue(&self, to: &NodeId, bytes: Vec<u8>, sign: bool) -> Result<(), P2pError> {
        let inner = &*self.inner;
        if bytes.len() > inner.max_message_bytes {
            return Err(P2pError::TooLarge {
                len: bytes.len(),
                max: inner.max_message_bytes,
            });
        }
        let slot = inner
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(to)
            .map(|s| Slot {
                target: s.target,
                queued: Arc::clone(&s.queued),
            })
            .ok_or_else(|| P2pError::UnknownPeer(to.clone()))?;
        if slot.queued.fetch_add(1, Ordering::AcqRel) >= PEER_QUEUE_CAPACITY {
            slot.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(P2pError::QueueFull(to.clone()));
        }
        let mut bytes = bytes;
        if sign {
            let digest =
                crate::proto::wire::p2p_signing_digest(inner.local.as_str(), to.as_str(), &bytes);
            bytes
                .extend_from_slice(&ed25519_dalek::Signer::sign(&inner.signer, &digest).to_bytes());
        } else {
            bytes.extend_from_slice(&[0; SIGNATURE_LEN]);
        }
        let cmd = Command::Send {
            to: slot.target,
            bytes,
            at: Instant::now(),
        };
        inner.commands.try_send(cmd).map_err(|e| {
            slot.queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => P2pError::QueueFull(to.clone()),
                mpsc::error::TrySendError::Closed(_) => P2pError::Closed,
            }
        })
    }

    /// Registry nodes with an established connection (empty once the task has stopped).
    pub async fn connected(&self) -> Vec<NodeId> {
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Connected { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Adds a node admitted to the registry at runtime (a committed `NodeJoin`): from then on
    /// its key is accepted after the Noise handshake, it is dialed at its address, and `send`
    /// reaches it. Only registry nodes are ever accepted; this is how the registry grows.
    /// Idempotent: the same node with the same key again (a replayed block) changes nothing;
    /// this node itself (with its own key) is a no-op.
    ///
    /// # Errors
    /// [`P2pError::InvalidPeer`] (bad key, id registered with another key, key of another
    /// node or of this one) and [`P2pError::Closed`].
    pub async fn add_peer(&self, peer: PeerInfo) -> Result<(), P2pError> {
        let node = peer.node.clone();
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::AddPeer { peer, reply })
            .await
            .map_err(|_| P2pError::Closed)?;
        let Some((target, queued)) = rx.await.map_err(|_| P2pError::Closed)?? else {
            return Ok(()); // this node itself
        };
        self.inner
            .slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(node)
            .or_insert(Slot { target, queued });
        Ok(())
    }

    /// Replaces the key of registered node `node` (a committed `NodeRotateKey`): from then on
    /// only the new key is accepted for it, and its connections under the old key are closed.
    /// Idempotent (a replayed block changes nothing).
    ///
    /// # Errors
    /// [`P2pError::InvalidPeer`] (not registered, a bad key, a key of another node or of this
    /// one) and [`P2pError::Closed`].
    pub async fn set_peer_key(&self, node: &NodeId, public_key: [u8; 32]) -> Result<(), P2pError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::SetPeerKey {
                node: node.clone(),
                public_key,
                reply,
            })
            .await
            .map_err(|_| P2pError::Closed)?;
        rx.await.map_err(|_| P2pError::Closed)?
    }

    /// Removes node `node` from the registry (a committed `NodeRemove`): its connections are
    /// closed and refused, and `send` to it fails with [`P2pError::UnknownPeer`]. Returns
    /// whether it was registered (a replayed block finds it gone).
    ///
    /// # Errors
    /// [`P2pError::Closed`].
    pub async fn remove_peer(&self, node: &NodeId) -> Result<bool, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::RemovePeer {
                node: node.clone(),
                reply,
            })
            .await
            .map_err(|_| P2pError::Closed)?;
        let removed = rx.await.map_err(|_| P2pError::Closed)?;
        self.inner
            .slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
        Ok(removed)
    }

    /// Connections refused so far because the peer's authenticated key is not in the node
    /// registry (each one is also logged at warn).
    pub fn refused_connections(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// While `cut` says so, every message to another node is dropped where it would go on the
    /// wire (whoever queued it), and every request from another node is dropped un-acked.
    /// Connections stay up; this node's messages to itself still arrive. (The test build's
    /// `partition-file` fault, `crate::fault::Partition`, is such a switch.)
    ///
    /// # Errors
    /// [`P2pError::Closed`].
    pub async fn cut_by(&self, cut: Arc<dyn LinkCut>) -> Result<(), P2pError> {
        self.inner
            .commands
            .send(Command::CutBy(cut))
            .await
            .map_err(|_| P2pError::Closed)
    }

    /// Stops the swarm task now (connections close, queued messages are dropped).
    pub fn shutdown(&self) {
        self.inner.task.abort();
    }
}

/// A switch that cuts a node off from its peers while it is on ([`P2pHandle::cut_by`]).
pub trait LinkCut: Send + Sync {
    /// Whether the node is cut off now.
    fn is_cut(&self) -> bool;
}

/// Starts the p2p channel: listens, then spawns the swarm task (which dials every registry peer).
///
/// Must be called inside a tokio runtime. Returns once the listener is up.
///
/// # Errors
/// [`P2pError::InvalidConfig`] (bad listen address, size limit, or a secret key that does not
/// match this node's registry entry), [`P2pError::Listen`], [`P2pError::Setup`].
pub async fn spawn(cfg: P2pConfig) -> Result<(P2pHandle, mpsc::Receiver<Incoming>), P2pError> {
    let max = cfg.max_message_bytes;
    if max == 0 || u32::try_from(max).is_err() {
        return Err(P2pError::InvalidConfig {
            field: "max_message_bytes",
            reason: format!("must be 1..={}, got {max}", u32::MAX),
        });
    }
    let listen: Multiaddr = cfg.listen.parse().map_err(|e| P2pError::InvalidConfig {
        field: "listen",
        reason: format!("{:?}: {e}", cfg.listen),
    })?;
    // `ed25519_from_bytes` zeroizes its input: hand it a copy that is itself zeroized on drop.
    let mut seed = cfg.secret_key.clone();
    let keypair =
        identity::Keypair::ed25519_from_bytes(&mut *seed).map_err(|e| P2pError::InvalidConfig {
            field: "secret_key",
            reason: e.to_string(),
        })?;
    let local_peer = keypair.public().to_peer_id();
    let signer = ed25519_dalek::SigningKey::from_bytes(&cfg.secret_key);
    let registry = registry::Registry::build(&cfg.node, local_peer, &cfg.peers)?;

    // Tokio names tasks only under `--cfg tokio_unstable` with its `tracing` feature, which this
    // build does not use; this span names the swarm task and libp2p's connection tasks instead.
    let span = tracing::info_span!("p2p", node = %cfg.node);
    let refused = Arc::new(AtomicU64::new(0));
    let mut swarm = swarm::build(
        keypair,
        &registry,
        max + SIGNATURE_LEN + event_loop::BATCH_HEADER,
        span.clone(),
        refused.clone(),
    )?;
    swarm.listen_on(listen).map_err(|e| P2pError::Listen {
        addr: cfg.listen.clone(),
        source: Box::new(e),
    })?;
    let listen_addr = wait_for_listen_addr(&mut swarm, &cfg.listen).await?;
    tracing::info!(node = %cfg.node, %local_peer, %listen_addr, peers = registry.remotes.len(), "p2p listening");

    let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_CAPACITY);
    let event_loop = EventLoop::new(
        swarm,
        (
            cfg.node.clone(),
            signer.verifying_key(),
            max + SIGNATURE_LEN + event_loop::BATCH_HEADER,
        ),
        local_peer,
        registry,
        command_rx,
        incoming_tx,
    );
    let slots = event_loop
        .targets()
        .map(|(node, target, queued)| (node, Slot { target, queued }))
        .collect();
    let task = tokio::spawn(event_loop.run().instrument(span));

    let handle = P2pHandle {
        inner: Arc::new(Inner {
            local: cfg.node,
            signer,
            listen_addr: listen_addr.to_string(),
            max_message_bytes: max,
            slots: RwLock::new(slots),
            commands,
            task,
            refused,
        }),
    };
    Ok((handle, incoming_rx))
}

async fn wait_for_listen_addr(
    swarm: &mut libp2p::Swarm<swarm::Behaviour>,
    listen: &str,
) -> Result<Multiaddr, P2pError> {
    let listen_err = |source: Box<dyn std::error::Error + Send + Sync>| P2pError::Listen {
        addr: listen.to_owned(),
        source,
    };
    let wait = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
                SwarmEvent::ListenerError { error, .. } => return Err(listen_err(Box::new(error))),
                SwarmEvent::ListenerClosed { reason, .. } => {
                    let e = reason.err().map_or_else(
                        || "listener closed".into(),
                        |e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>,
                    );
                    return Err(listen_err(e));
                }
                // Nothing is dialed yet; anything else is unrelated to listening.
                _ => {}
            }
        }
    };
    tokio::time::timeout(LISTEN_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| Err(listen_err("no listen address reported in time".into())))
}
