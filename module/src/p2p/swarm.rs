//! The libp2p swarm: TCP + Noise + Yamux, the registry gate and the MPC request-response protocol.

use std::{future::Future, num::NonZeroUsize, pin::Pin, time::Duration};

use libp2p::{
    core::upgrade::Version,
    identity, noise, request_response,
    swarm::{self as lswarm, NetworkBehaviour},
    tcp, yamux, PeerId, Swarm, SwarmBuilder,
};
use tracing::Instrument;

use super::{
    codec::{MpcCodec, PROTOCOL},
    gate::Gate,
    registry::Registry,
    P2pError, REQUEST_TIMEOUT,
};

/// Streams per connection: request-response workers, Yamux streams and negotiating inbound
/// streams. Above twice the per-peer window, so a burst in both directions fits.
const MAX_STREAMS: usize = 1024;
/// Connections stay up while idle; only loss or shutdown closes them.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Behaviour → connection events buffered per connection (requests to send).
const NOTIFY_HANDLER_BUFFER: NonZeroUsize = NonZeroUsize::MIN.saturating_add(255);
/// Connection → behaviour events buffered per connection (inbound requests, acks).
const CONNECTION_EVENT_BUFFER: usize = 64;

/// The composed behaviour; the gate comes first so a denied connection reaches nothing else.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(super) struct Behaviour {
    gate: Gate,
    pub(super) mpc: request_response::Behaviour<MpcCodec>,
}

impl Behaviour {
    /// Admits `peer`'s connections from now on.
    pub(super) fn allow(&mut self, peer: PeerId) {
        self.gate.allow(peer);
    }

    /// Refuses `peer`'s connections from now on.
    pub(super) fn disallow(&mut self, peer: &PeerId) {
        self.gate.disallow(peer);
    }
}

/// Runs libp2p's per-connection tasks on tokio inside the node's span, so their log lines
/// (codec refusals, Yamux warnings) say which node they belong to.
struct SpanExecutor(tracing::Span);

impl lswarm::Executor for SpanExecutor {
    fn exec(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(future.instrument(self.0.clone()));
    }
}

/// Builds the swarm for `keypair`, admitting only the registry's peers (counting refusals in
/// `refused`); connection tasks run in `span`.
pub(super) fn build(
    keypair: identity::Keypair,
    registry: &Registry,
    max_message_bytes: usize,
    span: tracing::Span,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<Swarm<Behaviour>, P2pError> {
    let allowed: std::collections::BTreeSet<PeerId> =
        registry.remotes.iter().map(|r| r.peer_id).collect();
    let mpc = request_response::Behaviour::with_codec(
        MpcCodec::new(max_message_bytes),
        [(PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_STREAMS),
    );
    let behaviour = Behaviour {
        gate: Gate::new(allowed, refused),
        mpc,
    };
    let mut yamux_cfg = yamux::Config::default();
    yamux_cfg.set_max_num_streams(MAX_STREAMS);

    let Ok(builder) = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::new().nodelay(true),
            noise::Config::new,
            move || yamux_cfg,
        )
        .map_err(|e| P2pError::Setup {
            what: "noise",
            source: Box::new(e),
        })?
        .with_behaviour(|_| behaviour);
    Ok(builder
        .with_swarm_config(|_| {
            lswarm::Config::with_executor(SpanExecutor(span))
                .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                .with_max_negotiating_inbound_streams(MAX_STREAMS)
                .with_notify_handler_buffer_size(NOTIFY_HANDLER_BUFFER)
                .with_per_connection_event_buffer_size(CONNECTION_EVENT_BUFFER)
                // Both ends speak only our protocol: send the request with the protocol
                // proposal instead of waiting a round trip for the confirmation.
                .with_substream_upgrade_protocol_override(Version::V1Lazy)
        })
        .build())
}
