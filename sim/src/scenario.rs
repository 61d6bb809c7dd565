//! Scenarios: a network, its faults and its workload. A run is (scenario, seed); every random
//! choice comes from the seed, so a run replays exactly.

/// How a node misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Corrupts every FROST signature share it sends (`sign-bad-share`), and every resharing
    /// deal it sends another node (`reshare-bad-deal-to`).
    BadShare,
    /// As `BadShare`, and signs the messages a report may quote with a key not its own (its
    /// node key signs nothing the chain could check): the honest signers must leave its
    /// messages out of their reports, and their claims against it stay unproven.
    UnsignedBadShare,
    /// Files a failure report blaming another signer for every signing it is chosen for,
    /// and otherwise takes part honestly.
    FalseClaim,
    /// As `FalseClaim`, and also tells every other signer that the session is aborted (a
    /// `SessionAbort` message, which ends an honest signer's session).
    FalseAbort,
    /// Sends no signing message to the other signers (as a node that signs under a wrong
    /// session id: the e2e `wrong-session` fault), and otherwise follows the protocol: it
    /// times out and reports like the others.
    Mute,
    /// Frames one honest signer, as a CGGMP24 signer could by withholding a round from one
    /// peer only: sends none of its signing messages to one other signer of each signing
    /// (so that one stalls, and looks silent to the others), and names it in a failure report.
    Framer,
    /// Takes part in signing honestly but never brings a signature to the chain: its result
    /// txs carrying one are lost (an aggregator whose submitter stalls, or that dies right
    /// after aggregating). Its failure reports still go out.
    WithholdsSignatures,
}

/// A timed fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAt {
    /// `kill -9` of a node at this time (ms from the start).
    Crash(u64, usize),
    /// The node starts again (its store keeps what was durable).
    Restart(u64, usize),
    /// The node starts again on a store restored from an old backup: every READY share is of
    /// an earlier generation than the chain's.
    RestartRolledBack(u64, usize),
    /// The node is cut off from its peers and from the chain.
    Partition(u64, usize),
    /// Every partition heals.
    Heal(u64),
}

/// A scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name, for the replay command.
    pub name: &'static str,
    /// Nodes.
    pub nodes: usize,
    /// Threshold of the keys.
    pub threshold: u32,
    /// Block interval, ms.
    pub block_ms: u64,
    /// Requests stop being sent after this long (ms); the run goes on until every deadline
    /// has passed.
    pub load_ms: u64,
    /// Keys generated at the start (alternating FROST schemes).
    pub keys: usize,
    /// Signing requests, spread over the load time.
    pub signs: usize,
    /// Keygens sent in one block, after the keys are READY (a burst).
    pub burst_keygens: usize,
    /// Deletions at the end of the load.
    pub deletes: usize,
    /// Refreshes (resharings to the same committee and threshold) of the keys, spread over
    /// the load time while they sign.
    pub refreshes: usize,
    /// Percent of p2p messages dropped.
    pub drop_pct: u8,
    /// Percent of p2p messages delivered twice.
    pub dup_pct: u8,
    /// Percent of node txs the mempool loses after CheckTx took them (dropped at recheck, or
    /// lost with a restarted mempool).
    pub tx_loss_pct: u8,
    /// Delay of a p2p message, ms: a uniform draw from this range (so messages reorder).
    pub delay_ms: (u64, u64),
    /// Store latency, ms (a slow disk).
    pub store_ms: (u64, u64),
    /// Misbehaviour per node (missing: honest).
    pub behaviour: Vec<Behaviour>,
    /// Timed faults.
    pub faults: Vec<FaultAt>,
    /// Random crash/restart and partition/heal events drawn from the seed (one node down at
    /// a time).
    pub random_faults: usize,
    /// Genesis `sign_attempt_blocks` (None: the default).
    pub sign_attempt_blocks: Option<u64>,
    /// The nodes' local signing timeout, ms (None: the default).
    pub sign_timeout_ms: Option<u64>,
    /// The nodes' backup submission delay per rank, ms (None: the default).
    pub backup_submit_ms: Option<u64>,
    /// A loaded node: (node, range of ms) by which every job reaches it later than the others
    /// (it follows the chain late, so its sessions start and time out late).
    pub lag: Option<(usize, (u64, u64))>,
    /// Every sign request must end DONE in its first attempt (a fault that the signers
    /// themselves can absorb must not cost an attempt).
    pub first_attempt: bool,
    /// Genesis `sign_retention_blocks`: short, so that every run prunes finished requests
    /// while others are still signing (the invariants see pruned ones as they ended).
    pub sign_retention_blocks: u64,
    /// CGGMP24 keygens of node0-node3 (the fixtures' committee, see `ecdsa`) sent with the
    /// first keys; the client sends a keygen that ended ERROR again, every 2 s until the
    /// load ends.
    pub ecdsa_keygens: usize,
    /// The nodes hold the fixtures' aux info for that committee (the keygens reuse it);
    /// otherwise they generate aux info, each from a safe-prime set.
    pub ecdsa_aux: bool,
    /// Safe-prime sets in each node's store at the start.
    pub prime_sets: usize,
    /// How long a node takes to make one set, ms (drawn per set).
    pub prime_set_ms: (u64, u64),
    /// How long aux-info generation takes at a party, ms (drawn per party).
    pub aux_gen_ms: (u64, u64),
    /// Genesis `cggmp_keygen_deadline_blocks` (None: the default).
    pub cggmp_keygen_deadline_blocks: Option<u64>,
    /// Signing requests of the CGGMP24 keys (every other one a prehashed digest), spread over
    /// the load time. Each runs the real cggmp24 signing: about a second of CPU per signer.
    pub ecdsa_signs: usize,
    /// CGGMP24 presignatures each node keeps per key and subset (0: none; each is about a
    /// second of CPU per signer).
    pub presign_pool: usize,
    /// The nodes' CGGMP24 silence time, ms: a signer heard from never, or a signing quiet this
    /// long while waiting for some signers, names them.
    pub cggmp_silence_ms: u64,
    /// Most seeds `make sim` runs of this scenario (its runs cost seconds of CPU each);
    /// `--scenario` runs any number.
    pub max_seeds: Option<u64>,
}

impl Scenario {
    /// The CGGMP24 signing workload: one FROST key signed 4 times, and one CGGMP24 key of
    /// node0-node3 (the fixtures' aux info) signed twice.
    fn ecdsa(name: &'static str) -> Scenario {
        Scenario {
            keys: 1,
            signs: 4,
            deletes: 0,
            ecdsa_keygens: 1,
            ecdsa_signs: 2,
            ..Scenario::base(name)
        }
    }

    fn base(name: &'static str) -> Scenario {
        Scenario {
            name,
            nodes: 4,
            threshold: 3,
            block_ms: 100,
            load_ms: 20_000,
            keys: 2,
            signs: 20,
            burst_keygens: 0,
            deletes: 1,
            refreshes: 0,
            drop_pct: 0,
            dup_pct: 0,
            tx_loss_pct: 0,
            delay_ms: (1, 5),
            store_ms: (0, 2),
            behaviour: Vec::new(),
            faults: Vec::new(),
            random_faults: 0,
            sign_attempt_blocks: None,
            sign_timeout_ms: None,
            backup_submit_ms: None,
            lag: None,
            first_attempt: false,
            sign_retention_blocks: 20,
            ecdsa_keygens: 0,
            ecdsa_aux: true,
            prime_sets: 0,
            prime_set_ms: (60_000, 300_000),
            aux_gen_ms: (15_000, 30_000),
            cggmp_keygen_deadline_blocks: None,
            ecdsa_signs: 0,
            presign_pool: 0,
            cggmp_silence_ms: 20_000,
            max_seeds: None,
        }
    }

    /// Every scenario, by name.
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario::base("steady"),
            Scenario {
                drop_pct: 0,
                dup_pct: 20,
                delay_ms: (0, 60),
                store_ms: (0, 40),
                // CGGMP24 keygens reusing their committee's aux info: the handshake and the
                // DKG under duplicates and reordering.
                ecdsa_keygens: 2,
                ..Scenario::base("lossy-slow")
            },
            Scenario {
                // Signing starts at 5 s, once both keys are READY; node2 dies just then.
                faults: vec![FaultAt::Crash(6_000, 2)],
                ..Scenario::base("dead-signer")
            },
            Scenario {
                // node2 comes back at 6 s with every share one generation behind the chain.
                faults: vec![
                    FaultAt::Crash(5_500, 2),
                    FaultAt::RestartRolledBack(6_000, 2),
                ],
                ..Scenario::base("stale-share")
            },
            Scenario {
                behaviour: vec![Behaviour::Honest, Behaviour::FalseClaim],
                ..Scenario::base("false-claim")
            },
            Scenario {
                behaviour: vec![Behaviour::Honest, Behaviour::BadShare],
                refreshes: 4,
                ..Scenario::base("bad-share")
            },
            Scenario {
                behaviour: vec![Behaviour::Honest, Behaviour::UnsignedBadShare],
                ..Scenario::base("unsigned-bad-share")
            },
            Scenario {
                behaviour: vec![Behaviour::Honest, Behaviour::FalseAbort],
                ..Scenario::base("false-abort")
            },
            Scenario {
                // node1 withholds its signing messages from one other signer of each signing
                // and names it: the victim stalls, so the third signer names it too (a
                // majority), and the victim names node1 back (pair elimination).
                behaviour: vec![Behaviour::Honest, Behaviour::Framer],
                ..Scenario::base("framer")
            },
            Scenario {
                // node1 sends no signing message, and node3 is loaded: it follows the chain
                // 0.3-1.2 s late, so its failure reports often land after the attempt's
                // deadline (3 s). The e2e flakes of `malicious.rs` (row `wrong-session`: an
                // honest late reporter left out as silent) and of the flood test (a request
                // lost to attempts that kept the silent node).
                behaviour: vec![Behaviour::Honest, Behaviour::Mute],
                lag: Some((3, (300, 1_200))),
                ..Scenario::base("mute-signer")
            },
            Scenario {
                // node1 is the aggregator of every attempt without node0 (a quarter of them)
                // and never submits the signature: the other signers' backups must bring it
                // within the first attempt.
                behaviour: vec![Behaviour::Honest, Behaviour::WithholdsSignatures],
                first_attempt: true,
                ..Scenario::base("stalled-aggregator")
            },
            Scenario {
                burst_keygens: 200,
                signs: 10,
                ..Scenario::base("burst")
            },
            Scenario {
                // A mempool that loses node txs it took: every later tx of that node passes
                // CheckTx and fails at delivery until its submitter signs from the chain's
                // sequence again.
                tx_loss_pct: 3,
                ..Scenario::base("lossy-mempool")
            },
            Scenario {
                // The keys are refreshed while they sign, and node2 crashes for a while in
                // the middle (a dealer, a new party, a signer: its shares must survive).
                refreshes: 8,
                faults: vec![FaultAt::Crash(9_000, 2), FaultAt::Restart(12_000, 2)],
                ..Scenario::base("refresh")
            },
            Scenario {
                // A cold start of CGGMP24 (issue 15's livelock): no node holds aux info or a
                // safe-prime set, a set takes 4-15 s to make (minutes in mpcd: scaled down
                // with the deadline), and a keygen's deadline (8 s) passes before every party
                // holds one, so the client retries. No keygen may burn a set, and every key
                // must end READY.
                ecdsa_keygens: 3,
                ecdsa_aux: false,
                prime_set_ms: (4_000, 15_000),
                aux_gen_ms: (1_000, 3_000),
                cggmp_keygen_deadline_blocks: Some(80),
                load_ms: 90_000,
                signs: 10,
                ..Scenario::base("ecdsa-cold-start")
            },
            Scenario {
                drop_pct: 2,
                dup_pct: 5,
                delay_ms: (0, 30),
                random_faults: 4,
                refreshes: 4,
                ..Scenario::base("chaos")
            },
            Scenario {
                // CGGMP24 signing with the real protocol (full, no presignature pool: a pool
                // of one per subset costs 4 presignatures a key, about 23 s of CPU a run): one
                // key of node0-node3 (the fixtures' aux info), and nodes down or cut off for
                // a while at random times: a signing that loses a signer names it (never
                // heard from, or quiet for the silence time) and the chain tries again
                // without it. About 1 s of CPU per signer per signing.
                cggmp_silence_ms: 5_000,
                // A signing spans a second or so of message delays, so a node that goes down
                // at a random time may well go down in the middle of one.
                delay_ms: (10, 150),
                random_faults: 3,
                max_seeds: Some(4),
                ..Scenario::ecdsa("ecdsa-sign")
            },
            Scenario {
                // CGGMP24 signing from presignature pools (one per subset: 4 presignatures a
                // key, refilled as they are used; about 25 s of CPU a run): every signing
                // of a full message takes one, a restarted node has none (its pool lives in
                // memory), so the signings it joins fall back to the full protocol. No
                // presignature may be named in two sessions.
                presign_pool: 1,
                random_faults: 1,
                max_seeds: Some(1),
                ..Scenario::ecdsa("ecdsa-presign")
            },
        ]
    }

    /// The scenario called `name`.
    pub fn named(name: &str) -> Option<Scenario> {
        Scenario::all().into_iter().find(|s| s.name == name)
    }

    /// Whether a node files false failure reports.
    pub fn has_liars(&self) -> bool {
        self.behaviour.iter().any(|b| {
            matches!(
                b,
                Behaviour::FalseClaim | Behaviour::FalseAbort | Behaviour::Framer
            )
        })
    }

    /// Whether node `i` ever restarts on a rolled-back store.
    pub fn rolls_back(&self, i: usize) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f, FaultAt::RestartRolledBack(_, j) if *j == i))
    }

    /// The index of `node` (`node<i>`).
    pub fn index_of(&self, node: &seqmpc_proto::NodeId) -> Option<usize> {
        node.as_str()
            .strip_prefix("node")
            .and_then(|i| i.parse().ok())
            .filter(|i| *i < self.nodes)
    }

    /// Whether the run has no fault of the network or of a node (no message is lost, no node
    /// goes down, every node is honest).
    pub fn fault_free(&self) -> bool {
        self.drop_pct == 0
            && self.tx_loss_pct == 0
            && self.faults.is_empty()
            && self.random_faults == 0
            && self.behaviour.iter().all(|b| *b == Behaviour::Honest)
    }

    /// How node `i` behaves.
    pub fn behaviour_of(&self, i: usize) -> Behaviour {
        self.behaviour.get(i).copied().unwrap_or(Behaviour::Honest)
    }
}
