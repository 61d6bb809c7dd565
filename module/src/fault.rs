//! Test-only misbehaviour, compiled in only with the cargo feature `fault-injection`: the
//! end-to-end tests make one node of a real network act maliciously and check that the honest
//! nodes end the session ERROR with that node named.
//!
//! `SEQMPC_FAULTS` is a comma-separated list of faults:
//! - `reshare-bad-deal-to=<node>`: as a resharing dealer, send `<node>` a share that is not
//!   on the dealt polynomial (the Feldman check at `<node>` fails and blames this dealer).
//! - `dkg-bad-share-to=<node>`: in a FROST DKG, send `<node>` a round-2 share that does not
//!   match this node's round-1 commitment (the frost#577 case: a bad share to one party only).
//! - `dkg-equivocate-to=<node>`: in a FROST DKG, send `<node>` a round-1 broadcast package
//!   that differs from the one every other party gets (its proof of knowledge fails).
//! - `sign-bad-share`: in FROST signing, send the aggregator a signature share that does not
//!   verify.
//! - `sign-false-claim`: for every signing job this node is a signer of, file a failure report
//!   naming another signer as silent ([`Faults::false_claim`]), and otherwise take part
//!   honestly: a lone false claim must cost no request.
//! - `sign-frame`: as `sign-false-claim`, and send none of this signing's session messages
//!   (FROST or CGGMP24) to the signer the claim names, so that it stalls and looks silent to
//!   the others too, who name it as well (a majority). It names this node back; the chain
//!   leaves out the pair, and never puts both in one later attempt.
//!
//! Each corrupts the message as it leaves ([`Faults::tamper`]): the lowest bit of its last
//! byte, which is the last byte of a scalar in every one of these encodings.
//!
//! - `cggmp-bad-proof=keygen`: in a CGGMP24 DKG, send every party a round-3 message whose
//!   Schnorr proof of knowledge (of this party's share, `sch_proof`) does not verify
//!   ([`Faults::tamper_cggmp`]). The message is decoded as cggmp24's own type, the proof's
//!   response scalar `z` is replaced by `z + 1` and the message is encoded again: it
//!   deserializes fine, and cggmp24 aborts with `InvalidSchnorrProof` blaming this party's
//!   index. Every receiver gets the same bad proof (a broadcast: cggmp24's echo round covers
//!   round 1 only, so this is not equivocation). `keygen` is the only protocol offered: it is
//!   the one where a bad proof keeps a key from becoming READY, and its round-3 message is
//!   the proof alone.
//! - `wrong-session`: send every session message (FROST, resharing, CGGMP24 worker threads)
//!   under another session id ([`Faults::session_for`]: SHA-256 of a tag and the real one).
//!   Receivers cannot tell such messages from those of a session whose job they have not
//!   seen yet: they buffer them (bounded, dropped after the session timeout) and the real
//!   session never gets this node's messages; see the e2e table for what honest nodes report.
//!
//! A process with a key outside the chain's node registry needs no fault: the e2e test runs
//! one itself (the p2p layer of this crate with a fresh key).
//!
//! Network faults, on every session message this node sends ([`NetFaults`], applied by
//! [`FaultyTransport`], which the CGGMP24 worker threads send through too):
//! - `net-drop-pct=<0..=100>`: drop that share of messages;
//! - `net-dup`: send every message twice;
//! - `net-delay-ms=<n>`: hold each message a random 0..n ms (so messages overtake each other);
//! - `net-corrupt-pct=<0..=100>`: flip one random byte of that share of encoded envelopes.
//! - `crash-at=<point>`: `std::process::abort()` when the node reaches `<point>` (a `kill -9`
//!   at a chosen phase: no destructors run and nothing is flushed beyond what is already
//!   durable). The points, in the order a session reaches them:
//!   - `keygen-after-pending`: the PENDING record is written, KeyGenReady not yet sent.
//!   - `keygen-before-store`: the DKG finished here, the READY share is not stored yet.
//!   - `keygen-after-store`: the share is stored READY, the KeyGenResult not yet submitted.
//!   - `sign-after-commitments`: FROST round-1 commitments sent, the nonces only in memory.
//!   - `sign-before-share`: the signature share computed, not yet sent.
//!   - `reshare-after-deal`: a resharing dealer sent its deals.
//!   - `reshare-after-stage`: a new party wrote its staged share, not yet reported.
//!   - `reshare-before-promote`: ReshareDone received, the staged share not yet promoted.
//!   - `reshare-after-promote`: the staged share is promoted READY.
//!   - `delete-before-erase`: a Delete job received, the share not yet erased.
//!   - `delete-after-erase`: the share erased, KeyDeleted not yet submitted.
//!
//!   CGGMP24 keygens end in the same code as FROST ones (the worker's share is stored READY
//!   by the session manager), so the three `keygen-*` points cover them too. CGGMP24 signing
//!   has points of its own:
//!   - `cggmp-sign-mid`: a full CGGMP24 signing worker sent its second round (presigning
//!     round 2: every other signer's first round came, so its own first one had long gone
//!     out), the rest of the protocol not yet run.
//!   - `presign-after-take`: a presignature was taken out of the pool for a sign plan and
//!     consumed by the online step, its partial signature not yet sent.
//! - `primes-stub-ms=<n>`: not a misbehaviour but a stand-in for safe-prime generation (28-300
//!   s of a core per set), so that the CGGMP24 cold start runs in tests: with `--cggmp-primes
//!   FILE`, the node's prime pool starts empty, like a fresh node's, and each "generated" set
//!   is this node's fixture set, ready `n` ms after generation starts
//!   ([`stub_prime_pool`]). Sets are then reserved, taken and consumed exactly as real
//!   ones.
//! - `lose-result-txs=<n>`: the submitter signs this node's first `n` result txs and drops
//!   them instead of broadcasting them, yet counts them sent (a tx a mempool accepted and then
//!   lost): the submitter's inclusion check must find them missing and send them again.
//! - `withhold-signatures`: the submitter drops every result tx that carries a signature
//!   (an aggregator whose submitter stalls, or that dies right after aggregating): the other
//!   signers' backup submissions must bring the signature within the same attempt.
//! - `flood-mib-per-s=<n>`: a registered peer that floods: from start, every connected peer
//!   gets `n` MiB per second of 1 MiB CGGMP24 messages, each under a session id no one runs
//!   ([`spawn_flood`]). The peers' early-message buffers and byte budgets must hold their
//!   memory while they keep signing.
//! - `partition-file=<path>`: while `<path>` exists, this node is cut off from the p2p network
//!   and from the chain; removing the file heals the partition. A watcher thread
//!   ([`Partition::watch`], polling every [`PARTITION_POLL`]) keeps one flag per process,
//!   which `mpcd` hands to the layers that cut the node off:
//!   - p2p ([`crate::p2p::P2pHandle::cut_by`]): every message to another node is
//!     dropped as it would go on the wire, whoever queued it (the session manager or a
//!     CGGMP24 worker thread), and every request from another node is dropped
//!     unacknowledged (its sender retries, then gives up). Connections stay open; messages
//!     to this node itself still arrive.
//!   - chain (`mpcd`): the ABCI server is reached through a relay that closes every
//!     connection when the partition starts and refuses new ones while it lasts (the
//!     sequencer marks the app down, then replays the missed blocks once it connects again),
//!     and result txs and heartbeats are held, not sent, until the partition heals.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::wire::p2p_envelope::Payload;
use seqmpc_proto::{NodeId, SessionId};

use crate::protocol::cggmp::CggmpMsg;

mod net;
pub(crate) use net::FaultyTransport;
pub use net::{Delivery, NetFaults};

/// Name of the environment variable read by [`Faults::from_env`].
pub const FAULTS_ENV: &str = "SEQMPC_FAULTS";

/// The faults a node injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// As a resharing dealer, corrupt the share dealt to this node.
    pub reshare_bad_deal_to: Option<NodeId>,
    /// In a FROST DKG, corrupt the round-2 share sent to this node.
    pub dkg_bad_share_to: Option<NodeId>,
    /// In a FROST DKG, send this node another round-1 package than the others.
    pub dkg_equivocate_to: Option<NodeId>,
    /// In FROST signing, corrupt the signature share.
    pub sign_bad_share: bool,
    /// File a false failure report for every signing this node is a signer of.
    pub sign_false_claim: bool,
    /// Withhold every signing message from the signer the false claim names (`sign-frame`).
    pub sign_frame: bool,
    /// The signer framed in each signing session (`sign-frame`; shared by the clones of one
    /// parsed fault list: the job stream records, the transport reads).
    pub framed: Framed,
    /// Faults of the network as this node's messages see it.
    pub net: NetFaults,
    /// Abort the process at this crash point (one of [`CRASH_POINTS`]).
    pub crash_at: Option<&'static str>,
    /// In this CGGMP24 protocol, send a message whose zero-knowledge proof does not verify.
    pub cggmp_bad_proof: Option<crate::protocol::cggmp::Phase>,
    /// Send every session message under another session id.
    pub wrong_session: bool,
    /// Partitioned from the network and the chain while this file exists.
    pub partition_file: Option<PathBuf>,
    /// The submitter loses this node's first this-many result txs after signing them (as a
    /// mempool that drops a tx it accepted would): the resend path must bring them in.
    pub lose_result_txs: u32,
    /// The submitter drops every result tx that carries a signature (an aggregator whose
    /// submitter stalls): the other signers' backups must bring the signature.
    pub withhold_signatures: bool,
    /// With fixture primes: an empty pool whose generation takes this long per set.
    pub primes_stub_ms: Option<u64>,
    /// Send every connected peer this many MiB per second of 1 MiB CGGMP24 messages, each for
    /// another session id no one runs (what a registered peer could do to fill its peers'
    /// memory).
    pub flood_mib_per_s: u32,
}

/// `sign-frame`'s victim per signing session. Run-time state, not configuration: any two
/// compare equal, so [`Faults::any`] looks at the configuration alone.
#[derive(Clone, Debug, Default)]
pub struct Framed(Arc<std::sync::Mutex<std::collections::BTreeMap<SessionId, NodeId>>>);

/// Most sessions [`Framed`] remembers (the oldest ids go first; a test runs a few hundred).
const MAX_FRAMED: usize = 10_000;

impl Framed {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<SessionId, NodeId>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, session: SessionId, victim: NodeId) {
        let mut m = self.lock();
        if m.len() >= MAX_FRAMED {
            m.pop_first();
        }
        m.insert(session, victim);
    }

    /// Whether `to` is the signer framed in `session`.
    fn is_victim(&self, session: &SessionId, to: &NodeId) -> bool {
        self.lock().get(session) == Some(to)
    }
}

impl PartialEq for Framed {
    fn eq(&self, _: &Framed) -> bool {
        true
    }
}

impl Eq for Framed {}

/// Every crash point the node code reaches (see the module docs); `crash-at` refuses others.
pub const CRASH_POINTS: &[&str] = &[
    "keygen-after-pending",
    "keygen-before-store",
    "keygen-after-store",
    "sign-after-commitments",
    "sign-before-share",
    "reshare-after-deal",
    "reshare-after-stage",
    "reshare-before-promote",
    "reshare-after-promote",
    "delete-before-erase",
    "delete-after-erase",
    "cggmp-sign-mid",
    "presign-after-take",
];

/// The checkpoint port of a node with faults: aborts the process at the point `crash-at`
/// names ([`crash_point`]).
pub(crate) struct CrashAt(pub(crate) Faults);

impl crate::node::checkpoint::Checkpoints for CrashAt {
    fn reached(&self, point: &'static str) {
        crash_point(&self.0, point);
    }
}

impl<S: crate::job::SubmitResult> crate::node::Node<S> {
    /// Puts `faults` in front of this node's ports: its transport ([`FaultyTransport`], and
    /// the `flood-mib-per-s` flood starts: call it inside the runtime), its checkpoints
    /// ([`CrashAt`]) and, with `primes-stub-ms`, its prime pool ([`stub_prime_pool`]). The
    /// one place a test build wires faults into a node; the runtime only sees the ports.
    pub fn with_faults(mut self, faults: Faults, store: &crate::store::StoreHandle) -> Self {
        if faults.any() {
            spawn_flood(self.p2p.clone(), faults.flood_mib_per_s);
            self.transport = Arc::new(FaultyTransport::new(self.p2p.clone(), faults.clone()));
        }
        let (fixture, target) = (self.cfg.cggmp.primes.as_ref(), self.cfg.cggmp_prime_pool);
        if let Some(pool) = stub_prime_pool(&faults, fixture, store, target) {
            self.primes = pool;
        }
        self.checkpoints = Arc::new(CrashAt(faults));
        self
    }
}

/// Aborts the process if `faults` names `point` (`crash-at`): the test's `kill -9` at an
/// exact phase. A process aborts once, so the point fires once per start.
pub fn crash_point(faults: &Faults, point: &str) {
    if faults.crash_at == Some(point) {
        tracing::error!(point, "FAULT INJECTION: crashing at this point (abort)");
        eprintln!("FAULT INJECTION: crash-at={point}: aborting");
        std::process::abort();
    }
}

/// How often a [`Partition`] watcher looks for its file.
pub const PARTITION_POLL: Duration = Duration::from_millis(100);

/// Whether a node is partitioned now (`partition-file`): one flag per process, shared by the
/// layers that cut the node off (p2p, the ABCI relay, the result submitter). Off by default.
#[derive(Clone, Debug, Default)]
pub struct Partition(Arc<AtomicBool>);

impl crate::p2p::LinkCut for Partition {
    fn is_cut(&self) -> bool {
        self.is_on()
    }
}

impl Partition {
    /// Whether the node is cut off now.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Cuts the node off (`true`) or heals it; returns whether this changed anything.
    pub fn set(&self, on: bool) -> bool {
        self.0.swap(on, Ordering::Relaxed) != on
    }

    /// A flag that follows `path`: on while the file exists. It is set from the file now,
    /// then every [`PARTITION_POLL`] by a thread of its own (which logs each change and
    /// stops once every clone of the flag is dropped).
    pub fn watch(path: PathBuf) -> std::io::Result<Partition> {
        let flag = Partition::default();
        flag.follow(&path);
        let watched = flag.clone();
        std::thread::Builder::new()
            .name("partition".into())
            .spawn(move || {
                while Arc::strong_count(&watched.0) > 1 {
                    std::thread::sleep(PARTITION_POLL);
                    watched.follow(&path);
                }
            })?;
        Ok(flag)
    }

    /// Sets the flag from `path`'s existence, logging a change.
    fn follow(&self, path: &std::path::Path) {
        let on = path.exists();
        if self.set(on) {
            if on {
                tracing::warn!(file = %path.display(), "FAULT INJECTION: partitioned: p2p messages dropped, chain unreachable");
            } else {
                tracing::warn!(file = %path.display(), "FAULT INJECTION: partition healed");
            }
        }
    }
}

impl Faults {
    /// Parses a fault list (see the module docs).
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let node = |v: &str| NodeId::new(v).map_err(|e| format!("{item}: {e}"));
            let pct = |v: &str| match v.parse::<u8>() {
                Ok(p) if p <= 100 => Ok(p),
                _ => Err(format!("{item}: a percentage 0..=100")),
            };
            match item.split_once('=') {
                Some(("reshare-bad-deal-to", v)) => f.reshare_bad_deal_to = Some(node(v)?),
                Some(("dkg-bad-share-to", v)) => f.dkg_bad_share_to = Some(node(v)?),
                Some(("dkg-equivocate-to", v)) => f.dkg_equivocate_to = Some(node(v)?),
                None if item == "sign-bad-share" => f.sign_bad_share = true,
                None if item == "sign-false-claim" => f.sign_false_claim = true,
                None if item == "sign-frame" => {
                    f.sign_false_claim = true;
                    f.sign_frame = true;
                }
                None if item == "wrong-session" => f.wrong_session = true,
                None if item == "withhold-signatures" => f.withhold_signatures = true,
                Some(("cggmp-bad-proof", "keygen")) => {
                    f.cggmp_bad_proof = Some(crate::protocol::cggmp::Phase::Keygen)
                }
                None if item == "net-dup" => f.net.dup = true,
                Some(("net-drop-pct", v)) => f.net.drop_pct = pct(v)?,
                Some(("net-corrupt-pct", v)) => f.net.corrupt_pct = pct(v)?,
                Some(("net-delay-ms", v)) => {
                    f.net.delay_ms = v.parse().map_err(|e| format!("{item}: {e}"))?
                }
                Some(("primes-stub-ms", v)) => {
                    f.primes_stub_ms = Some(v.parse().map_err(|e| format!("{item}: {e}"))?)
                }
                Some(("flood-mib-per-s", v)) => {
                    f.flood_mib_per_s = v.parse().map_err(|e| format!("{item}: {e}"))?
                }
                Some(("lose-result-txs", v)) => {
                    f.lose_result_txs = v.parse().map_err(|e| format!("{item}: {e}"))?
                }
                Some(("partition-file", "")) => return Err(format!("{item}: a file path")),
                Some(("partition-file", path)) => f.partition_file = Some(PathBuf::from(path)),
                Some(("crash-at", point)) => {
                    f.crash_at = Some(
                        CRASH_POINTS
                            .iter()
                            .copied()
                            .find(|p| *p == point)
                            .ok_or_else(|| format!("{item}: unknown crash point"))?,
                    );
                }
                _ => return Err(format!("unknown fault {item:?} in {FAULTS_ENV}")),
            }
        }
        Ok(f)
    }

    /// `sign-false-claim`: the report this node files for `job` when it is a signer of it:
    /// another signer (the first that is not `me`) named as silent.
    pub fn false_claim(&self, me: &NodeId, job: &crate::job::Job) -> Option<TxMsg> {
        let crate::job::Job::Sign {
            session,
            request_id,
            signers,
            ..
        } = job
        else {
            return None;
        };
        if !self.sign_false_claim || !signers.contains(me) {
            return None;
        }
        let victim = signers.iter().find(|s| *s != me)?.clone();
        if self.sign_frame {
            self.framed.insert(*session, victim.clone());
        }
        Some(TxMsg::SignResult {
            request_id: request_id.clone(),
            session: *session,
            outcome: seqmpc_proto::tx::Outcome::Failed {
                error: format!("FAULT INJECTION: false claim that {victim} is silent"),
                culprits: vec![victim],
                evidence: Vec::new(),
            },
            signing_package: Vec::new(),
        })
    }

    /// The faults in `SEQMPC_FAULTS` (none when unset).
    pub fn from_env() -> Result<Faults, String> {
        std::env::var(FAULTS_ENV).map_or(Ok(Faults::default()), |s| Faults::parse(&s))
    }

    /// Whether any fault is set.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }

    /// The payload this node sends to `to`, corrupted if a fault says so.
    pub fn tamper(&self, to: &NodeId, mut payload: Payload) -> Payload {
        let target = |t: &Option<NodeId>| t.as_ref() == Some(to);
        let bytes = match &mut payload {
            Payload::ReshareDeal(d) if target(&self.reshare_bad_deal_to) => Some(&mut d.share),
            Payload::DkgRound2(r) if target(&self.dkg_bad_share_to) => Some(&mut r.package),
            Payload::DkgRound1(r) if target(&self.dkg_equivocate_to) => Some(&mut r.package),
            Payload::SignRound2(r) if self.sign_bad_share => Some(&mut r.share),
            _ => None,
        };
        if let Some(last) = bytes.and_then(|b| b.last_mut()) {
            tracing::warn!(%to, "FAULT INJECTION: sending a corrupted message");
            *last ^= 1;
        }
        payload
    }

    /// The session id this node's messages of `session` go out under (`wrong-session`).
    pub fn session_for(&self, session: &SessionId) -> SessionId {
        if !self.wrong_session {
            return *session;
        }
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"seqmpc/fault/wrong-session\0");
        h.update(session.0);
        SessionId(h.finalize().into())
    }

    /// The CGGMP24 message this node sends, with a proof that does not verify if a fault says
    /// so (`cggmp-bad-proof`, see the module docs). Other messages pass unchanged.
    pub fn tamper_cggmp(&self, msg: CggmpMsg) -> CggmpMsg {
        use crate::protocol::cggmp::Phase;
        type KeygenMsg = cggmp24::keygen::ThresholdMsg<
            cggmp24::supported_curves::Secp256k1,
            cggmp24::security_level::SecurityLevel128,
            sha2::Sha256,
        >;
        if self.cggmp_bad_proof != Some(Phase::Keygen) || msg.phase() != Phase::Keygen {
            return msg;
        }
        let Ok(KeygenMsg::Round3(mut r3)) = serde_json::from_slice(msg.payload()) else {
            return msg;
        };
        r3.sch_proof.0 += cggmp24::generic_ec::Scalar::one();
        let Ok(payload) = serde_json::to_vec(&KeygenMsg::Round3(r3)) else {
            return msg;
        };
        tracing::warn!(
            "FAULT INJECTION: sending a CGGMP24 keygen round-3 proof that does not verify"
        );
        match msg {
            CggmpMsg::Broadcast { phase, .. } => CggmpMsg::Broadcast { phase, payload },
            CggmpMsg::P2p { phase, .. } => CggmpMsg::P2p { phase, payload },
        }
    }
}

/// `primes-stub-ms=<n>` with fixture primes: a prime pool that starts empty and whose every
/// "generated" set is a copy of the fixture set, ready after `n` ms (None: no such fault, or
/// no fixture primes).
pub(crate) fn stub_prime_pool(
    faults: &Faults,
    fixture: Option<&Arc<zeroize::Zeroizing<Vec<u8>>>>,
    store: &crate::store::StoreHandle,
    target: usize,
) -> Option<crate::node::cggmp::PrimePool> {
    let ms = faults.primes_stub_ms?;
    let set = fixture?.clone();
    let generate = move |_: &dyn Fn() -> crate::protocol::cggmp::SearchBatch| {
        std::thread::sleep(Duration::from_millis(ms));
        Ok(zeroize::Zeroizing::new(set.to_vec()))
    };
    Some(crate::node::cggmp::PrimePool::with_generator(
        None,
        store.clone(),
        target,
        Arc::new(generate),
    ))
}

/// A result sink behind `withhold-signatures`: when `on`, drops every result that carries a
/// signature (an aggregator whose submitter stalls, or that dies right after aggregating), so
/// the other signers' backups must bring it; every other result passes.
pub struct WithholdSignatures<S> {
    /// The sink results go to.
    pub inner: S,
    /// Whether signatures are withheld.
    pub on: bool,
}

impl<S: crate::job::SubmitResult> crate::job::SubmitResult for WithholdSignatures<S> {
    fn submit(&self, msg: TxMsg) {
        if self.on
            && matches!(
                msg,
                TxMsg::SignResult {
                    outcome: seqmpc_proto::tx::Outcome::Ok(_),
                    ..
                }
            )
        {
            tracing::warn!("FAULT INJECTION: withholding a signature from the chain");
            return;
        }
        self.inner.submit(msg)
    }
}

/// `sign-false-claim` in front of a node's job stream: for every signing job this node is a
/// signer of, files the false claim ([`Faults::false_claim`]) through `sink`, then hands the
/// job on, in order. Returns the stream the node reads (`jobs` itself without the fault).
/// Call it inside the runtime.
pub fn false_claims<S: crate::job::SubmitResult>(
    me: NodeId,
    faults: &Faults,
    sink: Arc<S>,
    mut jobs: tokio::sync::mpsc::Receiver<crate::job::Job>,
) -> tokio::sync::mpsc::Receiver<crate::job::Job> {
    if !faults.sign_false_claim {
        return jobs;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(jobs.max_capacity());
    let faults = faults.clone();
    tokio::spawn(async move {
        while let Some(job) = jobs.recv().await {
            if let Some(lie) = faults.false_claim(&me, &job) {
                sink.submit(lie);
            }
            if tx.send(job).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Size of one `flood-mib-per-s` message.
const FLOOD_MESSAGE_BYTES: usize = 1 << 20;

/// `flood-mib-per-s=<n>`: from now on, every 100 ms, sends each connected peer n/10 MiB of
/// 1 MiB CGGMP24 messages, each for a session id no one runs, for as long as the runtime lives.
/// A full send queue (the peer does not ack fast enough) ends that peer's share of the tick.
pub fn spawn_flood(p2p: crate::p2p::P2pHandle, mib_per_s: u32) {
    if mib_per_s == 0 {
        return;
    }
    tracing::warn!(
        mib_per_s,
        "FAULT INJECTION: flooding every peer with messages of unknown sessions"
    );
    tokio::spawn(async move {
        let per_tick = (mib_per_s as usize) * (1 << 20) / 10;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let (mut n, mut sent, mut refused) = (0u64, 0usize, 0u64);
        let mut logged = std::time::Instant::now();
        loop {
            tick.tick().await;
            for peer in p2p.connected().await {
                let mut this_tick = 0;
                while this_tick < per_tick {
                    n += 1;
                    let mut id = [0xf1u8; 32];
                    id[..8].copy_from_slice(&n.to_be_bytes());
                    let bytes = crate::session::codec::encode(
                        &SessionId(id),
                        Payload::Cggmp(seqmpc_proto::wire::CggmpPayload {
                            msg: vec![0xab; FLOOD_MESSAGE_BYTES],
                        }),
                    );
                    let len = bytes.len();
                    if p2p.send(&peer, bytes).await.is_err() {
                        refused += 1;
                        break;
                    }
                    this_tick += len;
                    sent += len;
                }
            }
            if logged.elapsed() >= std::time::Duration::from_secs(5) {
                tracing::warn!(
                    sent_mib = sent >> 20,
                    refused,
                    "FAULT INJECTION: flooding peers"
                );
                logged = std::time::Instant::now();
            }
        }
    });
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests;
