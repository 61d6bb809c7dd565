//! Per-remote state of the swarm task: connection state with redial backoff, and the send queue.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use libp2p::{swarm::ConnectionId, Multiaddr, PeerId};
use rand::Rng;
use tokio::time::Instant;

use super::registry::Remote;
use crate::proto::NodeId;

/// First redial delay; doubled on each failure up to [`BACKOFF_MAX`].
pub(super) const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest redial delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lived this long resets the backoff when it closes.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Extra redial delay of the node with the higher `PeerId` of a pair, so that normally only the
/// lower one dials and the pair gets a single connection (see `on_connection_established`).
const SECOND_DIALER_DELAY: Duration = Duration::from_millis(500);

/// Connection state of one remote.
#[derive(Clone, Copy, Debug)]
pub(super) enum Link {
    /// Not connected; dial at `retry_at` (if the address is known), then wait `backoff` more
    /// after the next failure.
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
    /// A dial is under way.
    Dialing { backoff: Duration },
    /// At least one connection is established.
    Up { since: Instant, backoff: Duration },
}

impl Link {
    /// Down, redialing after about `backoff` (plus `extra`), and doubling the backoff.
    pub(super) fn down_after(backoff: Duration, extra: Duration) -> Self {
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        Link::Down {
            retry_at: Instant::now() + backoff.mul_f64(jitter) + extra,
            backoff: (backoff * 2).min(BACKOFF_MAX),
        }
    }

    /// The backoff carried by every state.
    pub(super) fn backoff(self) -> Duration {
        match self {
            Link::Down { backoff, .. } | Link::Dialing { backoff } | Link::Up { backoff, .. } => {
                backoff
            }
        }
    }
}

/// A queued or in-flight message.
pub(super) struct Outgoing {
    /// Per-peer sequence number: queues stay sorted by it, retries included.
    pub(super) seq: u64,
    pub(super) bytes: Arc<Vec<u8>>,
    /// When `send` accepted it.
    pub(super) at: Instant,
    /// Failed attempts that count (see [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS)).
    pub(super) attempts: u32,
}

/// Send state and connection state of one registry remote.
pub(super) struct Peer {
    pub(super) node: NodeId,
    pub(super) peer_id: PeerId,
    pub(super) addr: Option<Multiaddr>,
    /// Delay added to every redial: zero if this node has the lower `PeerId` of the pair.
    pub(super) dial_delay: Duration,
    pub(super) link: Link,
    /// Established connections, and whether this node dialed them.
    pub(super) conns: Vec<(ConnectionId, bool)>,
    pub(super) queue: VecDeque<Outgoing>,
    pub(super) in_flight: usize,
    pub(super) next_seq: u64,
    /// Queued + in flight + still in the command channel; shared with the handle.
    pub(super) queued: Arc<AtomicUsize>,
    /// Last ack (or connection) from this peer, to spot a dead connection.
    pub(super) last_ack: Instant,
    /// Messages dropped at their deadline since the last log line.
    pub(super) expired: usize,
}

impl Peer {
    /// A remote not connected yet, to be dialed now (or after [`SECOND_DIALER_DELAY`] if this
    /// node has the higher `PeerId`).
    pub(super) fn new(r: &Remote, local_peer: PeerId, now: Instant) -> Self {
        let dial_delay = if local_peer < r.peer_id {
            Duration::ZERO
        } else {
            SECOND_DIALER_DELAY
        };
        Peer {
            node: r.node.clone(),
            peer_id: r.peer_id,
            addr: r.addr.clone(),
            dial_delay,
            link: Link::Down {
                retry_at: now + dial_delay,
                backoff: BACKOFF_INITIAL,
            },
            conns: Vec::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            next_seq: 0,
            queued: Arc::new(AtomicUsize::new(0)),
            last_ack: now,
            expired: 0,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Forget one message for good (acked, expired or given up).
    pub(super) fn release(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}
