//! The runtime of the session layer: one task feeds the sans-IO session manager
//! (`crate::session`) committed jobs, authenticated p2p messages and a periodic tick, and
//! executes what it asks for against its ports (`drive.rs`): the key store, the network, the
//! result submitter, CGGMP24 workers and the safe-prime pool. Every session, its state and its
//! decisions are the manager's. Protocol steps are CPU-cheap (FROST: well under a
//! millisecond), so one task per node keeps ordering simple. CGGMP24 work is the exception:
//! its steps take seconds and its engines are not `Send`, so each run is a worker thread of
//! its own ([`cggmp`]); this task forwards its messages and hands the manager its outcome.

mod budget;
pub mod cggmp;
pub mod chain_tip;
pub(crate) mod checkpoint;
pub mod clock;
mod drive;
pub mod latency;
mod metrics;
mod share_store;
pub(crate) mod transport;

pub use crate::session::PresignPoolLevel;
pub use chain_tip::ChainTip;
use metrics::push_bounded;
pub use metrics::{KeygenProgress, Metrics, SharedMetrics};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rand::rngs::OsRng;
use seqmpc_proto::tx::SignedMessage;
use seqmpc_proto::wire::{self, p2p_envelope::Payload};
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::error::ProtocolError;
use crate::job::{Job, SubmitResult};
use crate::p2p::{Incoming, P2pHandle};
use crate::session as frost_session;
use crate::session::codec::*;
use crate::store::StoreHandle;

/// Tuning of the session manager.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub me: NodeId,
    /// Local give-up time of a session (the chain's deadline in blocks is authoritative).
    pub session_timeout: Duration,
    /// Local give-up time of a FROST signing, when its silent signers are reported (so the
    /// chain can start another attempt without them).
    pub sign_timeout: Duration,
    /// How long a FROST signer other than the aggregator holds a signature before it submits
    /// it itself, per rank (see `crate::session::Config::backup_submit_ms`).
    pub backup_submit: Duration,
    /// Most sessions alive at once; jobs beyond fail fast with a clear error.
    pub max_sessions: usize,
    /// Most buffered messages for sessions this node has not started yet.
    pub max_early_messages: usize,
    /// Local give-up time of a CGGMP24 session (aux info alone takes tens of seconds).
    pub cggmp_session_timeout: Duration,
    /// How long a CGGMP24 signer waits for a first message from every other signer, and how
    /// long a signing may go quiet (nothing sent or received) while it waits for signers
    /// that are behind (`crate::session::traffic`): past it, it reports those signers
    /// (dead, partitioned, stopped mid-signing), and the chain starts another attempt without
    /// them, instead of waiting for the attempt's deadline (20 times the FROST one). A round
    /// is seconds of CPU on a loaded machine: keep it well above that.
    pub cggmp_silence_timeout: Duration,
    /// Most CGGMP24 worker threads at once (each session has one, busy for seconds); jobs
    /// beyond fail fast with a clear error.
    pub max_cggmp_workers: usize,
    /// Where this node's CGGMP24 primes and aux info come from.
    pub cggmp: cggmp::CggmpConfig,
    /// Without configured primes: fill the prime pool in the background from the start
    /// (true), or only once a CGGMP24 keygen asks for a set (false: that keygen fails, a retry
    /// after a set is ready succeeds). Prime generation keeps a core busy for 28-300 s a set.
    pub cggmp_primes_at_start: bool,
    /// CGGMP24 presignatures kept ready per key and signer subset (0: no pool; every
    /// signature runs the full protocol). Generated in the background, held in memory only.
    pub presign_pool: usize,
    /// Keys with more signer subsets than this (C(n, t)) get no presignature pool.
    pub presign_max_subsets: usize,
    /// Safe-prime sets to keep ready in the key store (generated one at a time in the
    /// background; 0: never generate).
    pub cggmp_prime_pool: usize,
    /// Where a committed `NodeRotateKey` of this node itself goes (its new public key): the
    /// daemon switches to the new key, which the runtime cannot do (it is the libp2p identity).
    /// `None`: logged only.
    pub own_key_rotated: Option<tokio::sync::mpsc::UnboundedSender<[u8; 32]>>,
}

impl NodeConfig {
    /// Defaults for `me`.
    pub fn new(me: NodeId) -> Self {
        NodeConfig {
            me,
            session_timeout: Duration::from_secs(60),
            sign_timeout: Duration::from_secs(2),
            backup_submit: Duration::from_millis(500),
            max_sessions: 10_000,
            max_early_messages: 100_000,
            cggmp_session_timeout: Duration::from_secs(300),
            cggmp_silence_timeout: Duration::from_secs(20),
            max_cggmp_workers: 16,
            cggmp: cggmp::CggmpConfig::default(),
            cggmp_primes_at_start: true,
            presign_pool: 2,
            presign_max_subsets: 16,
            cggmp_prime_pool: 2,
            own_key_rotated: None,
        }
    }
}

/// The largest signed p2p message of any kind but CGGMP24 protocol messages and resharing's
/// aux info: FROST DKG and signing rounds, deals, plans and handshakes are a few KiB even for
/// large committees. A peer's larger message of such a kind is dropped before it reaches a
/// session or a buffer.
pub const MAX_SMALL_MESSAGE_BYTES: usize = 256 << 10;

/// The largest message of `payload`'s kind: CGGMP24 messages (aux info carries Paillier moduli
/// and proofs, hundreds of KiB) up to the transport's frame cap, the others (a resharing's
/// aux-info offer is a fingerprint) [`MAX_SMALL_MESSAGE_BYTES`].
fn max_payload_bytes(payload: &Payload) -> usize {
    match payload {
        Payload::Cggmp(_) => usize::MAX,
        Payload::ReshareAux(_)
        | Payload::KeygenPrepare(_)
        | Payload::KeygenReady(_)
        | Payload::KeygenStart(_)
        | Payload::DkgRound1(_)
        | Payload::DkgRound2(_)
        | Payload::SignRound1(_)
        | Payload::SignRound2(_)
        | Payload::Abort(_)
        | Payload::SignPlan(_)
        | Payload::PresignStart(_)
        | Payload::ReshareDeal(_) => MAX_SMALL_MESSAGE_BYTES,
    }
}

/// The session manager. Build with [`Node::new`], run with [`Node::run`].
pub struct Node<S: SubmitResult> {
    pub(crate) cfg: NodeConfig,
    store: StoreHandle,
    pub(crate) p2p: P2pHandle,
    /// Where session messages go ([`transport`]): `p2p` (a test build may put faults in
    /// front, `Node::with_faults`).
    pub(crate) transport: Arc<dyn transport::Transport>,
    /// Told the named points sessions reach ([`checkpoint`]; a test build may crash there).
    pub(crate) checkpoints: Arc<dyn checkpoint::Checkpoints>,
    submit: Arc<S>,
    metrics: SharedMetrics,
    /// What each peer's messages to the workers may take ([`budget`]).
    inbound: budget::InboundBudget,
    pub(crate) primes: cggmp::PrimePool,
    cggmp_done: mpsc::Sender<cggmp::Finished>,
    cggmp_done_rx: Option<mpsc::Receiver<cggmp::Finished>>,
    /// CGGMP24 workers of the session manager's sessions ([`frost_session::Effect::StartWorker`]).
    workers: BTreeMap<SessionId, cggmp::Worker>,
    /// The session manager's store operations ([`share_store::ShareStore`]).
    share_store: Arc<dyn share_store::ShareStore>,
    /// The sans-IO manager of the FROST sessions (`crate::session`); this runtime executes
    /// its effects.
    frost: frost_session::Manager,
    /// The session manager's time ([`clock`]).
    clock: Arc<dyn clock::Clock>,
    /// Where the admission policy's chain height comes from (none: never read, so replayed
    /// jobs are judged by their age alone).
    chain_tip: Option<Arc<dyn ChainTip>>,
}

impl<S: SubmitResult> Node<S> {
    /// Builds the manager.
    pub fn new(
        cfg: NodeConfig,
        store: StoreHandle,
        p2p: P2pHandle,
        submit: Arc<S>,
        metrics: SharedMetrics,
    ) -> Self {
        let primes = cggmp::PrimePool::new(
            cfg.cggmp.primes.clone(),
            store.clone(),
            cfg.cggmp_prime_pool,
        );
        let (cggmp_done, cggmp_done_rx) = mpsc::channel(1024);
        let frost = frost_session::Manager::new(frost_session::Config {
            me: cfg.me.clone(),
            session_timeout_ms: cfg.session_timeout.as_millis() as u64,
            cggmp_session_timeout_ms: cfg.cggmp_session_timeout.as_millis() as u64,
            sign_timeout_ms: cfg.sign_timeout.as_millis() as u64,
            backup_submit_ms: cfg.backup_submit.as_millis() as u64,
            max_sessions: cfg.max_sessions,
            max_early_messages: cfg.max_early_messages,
            max_early_per_sender: cfg.max_early_messages / 10,
            presign_pool: cfg.presign_pool,
            presign_max_subsets: cfg.presign_max_subsets,
            max_cggmp_workers: cfg.max_cggmp_workers,
            cggmp_silence_ms: cfg.cggmp_silence_timeout.as_millis() as u64,
            ..frost_session::Config::new(cfg.me.clone())
        });
        Node {
            frost,
            chain_tip: None,
            clock: Arc::new(clock::SystemClock),
            primes,
            cggmp_done,
            cggmp_done_rx: Some(cggmp_done_rx),
            workers: BTreeMap::new(),
            share_store: Arc::new(store.clone()),
            transport: Arc::new(transport::P2pTransport(p2p.clone())),
            checkpoints: Arc::new(checkpoint::PassBy),
            cfg,
            store,
            p2p,
            submit,
            metrics,
            inbound: budget::InboundBudget::default(),
        }
    }

    /// Takes the session manager's time from `clock` (default: the system's wall clock).
    pub fn with_clock(mut self, clock: Arc<dyn clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reads the chain's height from `tip` when the admission policy needs it (a job of a
    /// replayed block: its session may be over).
    pub fn with_chain_tip(mut self, tip: Arc<dyn ChainTip>) -> Self {
        self.chain_tip = Some(tip);
        self
    }

    /// Local PENDING records cannot resume after a restart (nonces and DKG secrets live only
    /// in memory): mark them ERROR so they are never taken for usable keys.
    pub async fn recover(&mut self) {
        match self.store.list().await {
            Ok(records) => {
                for r in &records {
                    self.frost.track_key(r);
                }
                for r in frost_session::mem_store::recover(records) {
                    if let Err(e) = self.store.put(r).await {
                        warn!(error = %e, "cannot mark interrupted keygen ERROR");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list the key store"),
        }
    }

    /// Runs until both input channels close.
    pub async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        mut incoming: mpsc::Receiver<Incoming>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Without configured primes, count the stored sets and fill the pool in the background.
        self.primes.load().await;
        if self.cfg.cggmp_primes_at_start {
            self.primes.fill();
        }
        let (_keep, mut cggmp_done) = match self.cggmp_done_rx.take() {
            Some(rx) => (None, rx),
            None => {
                let (tx, rx) = mpsc::channel(1);
                (Some(tx), rx)
            }
        };
        loop {
            tokio::select! {
                Some(f) = cggmp_done.recv() => self.on_cggmp_finished(f).await,
                job = jobs.recv() => match job {
                    Some(job) => self.on_job(job).await,
                    None => break,
                },
                msg = incoming.recv() => match msg {
                    Some(m) => self.on_message(m).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
            }
            let levels = self.frost.presign_levels_changed();
            let (primes, target) = (self.primes.level(), self.primes.target());
            if let Ok(mut m) = self.metrics.lock() {
                if let Some(levels) = levels {
                    m.cggmp_presignatures_ready = levels.iter().map(|l| l.ready).sum();
                    m.cggmp_presign_pools = levels;
                    m.cggmp_presign_pool_target = self.cfg.presign_pool;
                }
                m.sessions_active = self.frost.active();
                m.cggmp_primes_ready = primes;
                m.cggmp_prime_pool_level = primes;
                m.cggmp_prime_pool_target = target;
                (m.cggmp_prime_sets_taken, m.cggmp_keygens_waiting_for_primes) =
                    self.primes.usage();
                m.cggmp_prime_sets_generated = self.primes.generated();
            }
        }
    }

    fn metrics(&self, f: impl FnOnce(&mut Metrics)) {
        if let Ok(mut m) = self.metrics.lock() {
            f(&mut m);
        }
    }

    async fn send(&self, session: &SessionId, to: &NodeId, payload: Payload) {
        self.transport.send(session, to, payload).await;
    }

    async fn on_job(&mut self, job: Job) {
        // The one admission policy decides whether the job runs here (`session::admission`);
        // the chain's height is read first when it asks for it.
        if let Some(tip) = &self.chain_tip {
            if self.frost.needs_tip(self.clock.now_ms(), &job) {
                let height = chain_tip::read(tip).await;
                self.drive(frost_session::Input::ChainTip(height)).await;
            }
        }
        match job {
            Job::NodeJoined {
                node,
                public_key,
                p2p_addr,
            } => self.on_node_joined(node, public_key, p2p_addr).await,
            Job::NodeKeyRotated { node, public_key } => {
                self.on_node_key_rotated(node, public_key).await
            }
            Job::NodeRemoved { node } => self.on_node_removed(node).await,
            // Every session's job belongs to the session manager, which applies the admission
            // policy itself.
            Job::KeyGenFailed { ref session, .. } => {
                self.primes.release(session);
                self.drive(frost_session::Input::Job(job)).await
            }
            Job::Delete {
                ref key_id,
                ref parties,
                ..
            } => {
                if parties.contains(&self.cfg.me) {
                    self.forget_key(key_id);
                }
                self.drive(frost_session::Input::Job(job)).await
            }
            Job::KeyGen { .. }
            | Job::Block { .. }
            | Job::Sign { .. }
            | Job::SignEnded { .. }
            | Job::Reshare(_)
            | Job::ReshareDone { .. }
            | Job::ReshareFailed { .. } => self.drive(frost_session::Input::Job(job)).await,
        }
    }

    /// A committed `NodeRotateKey`: a peer's new key replaces its old one in the p2p layer; for
    /// this node itself, the daemon is told (it switches to the key it keeps for this).
    async fn on_node_key_rotated(&mut self, node: NodeId, public_key: [u8; 32]) {
        if node == self.cfg.me {
            warn!(public_key = %hex::encode(public_key), "node registry: the chain rotated this node's key");
            if let Some(tx) = &self.cfg.own_key_rotated {
                let _ = tx.send(public_key);
            }
            return;
        }
        match self.p2p.set_peer_key(&node, public_key).await {
            Ok(()) => {
                info!(%node, public_key = %hex::encode(public_key), "node registry: key rotated")
            }
            Err(e) => warn!(%node, error = %e, "node registry: cannot rotate the node's key"),
        }
    }

    /// A committed `NodeRemove`: the p2p layer drops the node (idempotent). The chain only
    /// removes a node that holds no share of a live key, so no session of this node needs it.
    async fn on_node_removed(&mut self, node: NodeId) {
        if node == self.cfg.me {
            error!(
                "node registry: the chain removed this node; its peers refuse it from now on \
                and it takes part in nothing (stop it)"
            );
            return;
        }
        match self.p2p.remove_peer(&node).await {
            Ok(true) => info!(%node, "node registry: node removed"),
            Ok(false) => {}
            Err(e) => warn!(%node, error = %e, "node registry: cannot remove the node"),
        }
    }

    /// A committed `NodeJoin`: the p2p layer admits the node (idempotent, so replayed blocks
    /// are harmless), and later sessions may include it.
    async fn on_node_joined(&mut self, node: NodeId, public_key: [u8; 32], addr: String) {
        let peer = crate::p2p::PeerInfo {
            node: node.clone(),
            public_key,
            addr: addr.clone(),
        };
        match self.p2p.add_peer(peer).await {
            Ok(()) => info!(%node, %addr, "node registry: node joined"),
            Err(e) => warn!(%node, error = %e, "node registry: cannot add the joined node"),
        }
    }

    /// A named point of a session's life ([`checkpoint`]).
    fn checkpoint(&self, point: &'static str) {
        self.checkpoints.reached(point);
    }

    /// Drops the decoded share of `key_id` from the session manager's cache: a resharing
    /// replaced it, or the key is gone. Signing with a stale share
    /// would make every later signature share of this node fail verification.
    fn forget_key(&mut self, key_id: &KeyId) {
        self.frost.forget_key(key_id);
    }

    async fn on_message(&mut self, m: Incoming) {
        let env = match wire::P2pEnvelope::decode(m.bytes.as_slice()) {
            Ok(e) => e,
            Err(e) => {
                warn!(from = %m.from, error = %e, "undecodable p2p message dropped");
                self.metrics(|x| x.messages_dropped += 1);
                return;
            }
        };
        let (Ok(session), Some(payload)) = (SessionId::from_slice(&env.session), env.payload)
        else {
            warn!(from = %m.from, "p2p message without session or payload dropped");
            self.metrics(|x| x.messages_dropped += 1);
            return;
        };
        if m.bytes.len() > max_payload_bytes(&payload) {
            warn!(from = %m.from, %session, bytes = m.bytes.len(),
                "p2p message larger than its kind may be dropped");
            self.metrics(|x| x.messages_dropped += 1);
            return;
        }
        let quoted = quote(
            &payload,
            m.from.clone(),
            &self.cfg.me,
            m.bytes,
            m.signature,
            &m.sender_key,
        );
        let msg = frost_session::Msg {
            from: m.from,
            session,
            payload,
            quoted,
        };
        self.drive(frost_session::Input::Msg(msg)).await
    }

    async fn on_tick(&mut self) {
        // Signing workers that went quiet waiting for some signers ([`crate::session::traffic`]).
        let now = Instant::now();
        let quiet: Vec<(SessionId, Vec<NodeId>)> = self
            .workers
            .iter()
            .map(|(s, w)| (*s, w.behind(now, self.cfg.cggmp_silence_timeout)))
            .filter(|(_, behind)| !behind.is_empty())
            .collect();
        for (session, behind) in quiet {
            self.drive(frost_session::Input::WorkerQuiet { session, behind })
                .await;
        }
        // Sets that became free go to the keygens waiting longest (the manager's).
        for session in self.primes.grant_waiting() {
            self.drive(frost_session::Input::PrimesReserved(session))
                .await;
        }
        let primes = self.primes.clone();
        let keygens = self.frost.keygens();
        // A refill ahead of need waits while a CGGMP24 keygen waits for others' primes or runs
        // aux info: at a cold start the nodes share the cores (measured: a 4-node cold start
        // on 2 cores took 624 s with the refill running beside aux info).
        primes.pause_refill(
            keygens
                .iter()
                .any(|(.., scheme, _, _)| *scheme == Scheme::Cggmp24Secp256k1),
        );
        let now_ms = self.clock.now_ms();
        let keygens: Vec<KeygenProgress> = keygens
            .into_iter()
            .map(|(session, key_id, scheme, phase, started)| KeygenProgress {
                key_id,
                scheme,
                phase: if primes.is_waiting(&session) {
                    "generating a safe-prime set".into()
                } else {
                    phase
                },
                elapsed_ms: now_ms.saturating_sub(started),
            })
            .collect();
        self.metrics(|m| m.keygens = keygens);
        let workers = &self.workers;
        self.inbound.release_unless(|s| workers.contains_key(s));
        self.drive(frost_session::Input::Tick).await;
    }
}

/// A peer's message as evidence, when it may serve as one ([`is_evidence`]); `None` for the
/// other messages, which rest on Noise alone, and for this node's own. The p2p layer checks no
/// signature (`crate::p2p`), and neither does this: the manager checks a quote's signature
/// only when a failure report would quote it ([`frost_session::Quote::is_genuine`]).
fn quote(
    payload: &Payload,
    from: NodeId,
    me: &NodeId,
    envelope: Vec<u8>,
    signature: [u8; crate::p2p::SIGNATURE_LEN],
    sender_key: &ed25519_dalek::VerifyingKey,
) -> Option<frost_session::Quote> {
    if !is_evidence(payload) || &from == me {
        return None;
    }
    Some(frost_session::Quote {
        message: SignedMessage {
            from,
            to: me.clone(),
            envelope,
            signature,
        },
        sender_key: sender_key.to_bytes(),
    })
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use seqmpc_proto::wire;

    #[test]
    fn quote__should_keep_evidence_only_and_find_genuine_only_what_its_sender_signed() {
        use ed25519_dalek::{Signer, SigningKey};
        let key = SigningKey::from_bytes(&[3; 32]);
        let (peer, me) = (NodeId::new("node1").unwrap(), NodeId::new("node0").unwrap());
        let share = Payload::SignRound2(wire::SignRound2::default());
        let commitments = Payload::SignRound1(wire::SignRound1::default());
        let env = b"envelope".to_vec();
        let sig = key
            .sign(&wire::p2p_signing_digest(peer.as_str(), me.as_str(), &env))
            .to_bytes();
        let vk = key.verifying_key();
        let q = quote(&share, peer.clone(), &me, env.clone(), sig, &vk)
            .expect("a signed share is evidence");
        assert!(q.is_genuine());
        assert_eq!(
            (&q.message.from, &q.message.to, q.message.signature),
            (&peer, &me, sig)
        );
        // Unsigned, signed for another node, over other bytes or by another key: kept (the
        // message came from the authenticated peer) but never genuine, so never quoted.
        let node2 = NodeId::new("node2").unwrap();
        let other_key = SigningKey::from_bytes(&[4; 32]).verifying_key();
        for (to, env, sig, vk) in [
            (&me, env.clone(), [0; 64], vk),
            (&node2, env.clone(), sig, vk),
            (&me, b"other".to_vec(), sig, vk),
            (&me, env.clone(), sig, other_key),
        ] {
            let q = quote(&share, peer.clone(), to, env, sig, &vk).expect("evidence kept");
            assert!(!q.is_genuine(), "{q:?}");
        }
        // Not evidence (or this node's own): taken on Noise's word, never quoted.
        assert_eq!(
            quote(&commitments, peer.clone(), &me, env.clone(), [0; 64], &vk),
            None
        );
        assert_eq!(quote(&share, me.clone(), &me, env, [0; 64], &vk), None);
    }

    use super::*;

    #[test]
    fn max_payload_bytes__should_let_only_cggmp24_messages_be_large() {
        let large = [Payload::Cggmp(wire::CggmpPayload::default())];
        for p in &large {
            assert_eq!(max_payload_bytes(p), usize::MAX, "{p:?}");
        }
        let small = [
            Payload::DkgRound1(wire::DkgRound1::default()),
            Payload::SignRound1(wire::SignRound1::default()),
            Payload::SignRound2(wire::SignRound2::default()),
            Payload::ReshareDeal(wire::ReshareDeal::default()),
            Payload::ReshareAux(wire::ReshareAux::default()),
            Payload::KeygenPrepare(wire::KeyGenPrepare::default()),
        ];
        for p in &small {
            assert_eq!(max_payload_bytes(p), MAX_SMALL_MESSAGE_BYTES, "{p:?}");
        }
    }
}
