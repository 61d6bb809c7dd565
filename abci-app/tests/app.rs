//! The ABCI app driven in-process, block by block, as a consensus engine would.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use ed25519_dalek::{Signer, SigningKey};
use seqmpc_abci::abci::App;
use seqmpc_abci::chain::genesis::{Genesis, GenesisAccount, GenesisNode, Governance, Limits, Role};
use seqmpc_abci::chain::KeyStatus;
use seqmpc_module::job::{Job, ReshareJob};
use seqmpc_proto::tx::{sign_tx, KeyGenOk, Outcome, TxMsg};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use serde_json::Value;
use tendermint_proto::v0_38::abci as pb;

struct Net {
    app: App,
    _dir: tempfile::TempDir,
    nodes: Vec<SigningKey>,
    client: SigningKey,
    signer_only: SigningKey,
    seq: std::collections::BTreeMap<[u8; 32], u64>,
    height: i64,
    jobs: tokio::sync::mpsc::Receiver<Job>,
}

fn nid(i: usize) -> NodeId {
    NodeId::new(format!("node{i}")).unwrap()
}

fn genesis(nodes: &[SigningKey], client: &SigningKey, signer: &SigningKey) -> Vec<u8> {
    genesis_with(nodes, client, signer, 0, 0, client_governs())
}

/// The key of the `auditor` account: no role, a governance account in some tests.
fn auditor() -> SigningKey {
    SigningKey::from_bytes(&[52; 32])
}

/// The key of the `other` account: every role, like the client, but owns no key.
fn other() -> SigningKey {
    SigningKey::from_bytes(&[53; 32])
}

/// The default governance of these tests: the client account approves alone, no delay (its
/// resharings and admissions run at once, as before governance existed).
fn client_governs() -> Option<Governance> {
    Some(Governance {
        accounts: vec!["client".into()],
        approvals: 1,
        delay_blocks: 0,
        expiry_blocks: 100,
    })
}

fn genesis_with(
    nodes: &[SigningKey],
    client: &SigningKey,
    signer: &SigningKey,
    refresh_every_blocks: u64,
    sign_retention_blocks: u64,
    governance: Option<Governance>,
) -> Vec<u8> {
    let g = Genesis {
        chain_id: "test-chain".into(),
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisNode {
                id: nid(i),
                public_key: hex::encode(k.verifying_key().to_bytes()),
                p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 30000 + i),
            })
            .collect(),
        accounts: vec![
            GenesisAccount {
                name: "client".into(),
                public_key: hex::encode(client.verifying_key().to_bytes()),
                roles: BTreeSet::from([Role::Keygen, Role::Sign, Role::Delete, Role::Registry]),
            },
            GenesisAccount {
                name: "signer".into(),
                public_key: hex::encode(signer.verifying_key().to_bytes()),
                roles: BTreeSet::from([Role::Sign]),
            },
            GenesisAccount {
                name: "auditor".into(),
                public_key: hex::encode(auditor().verifying_key().to_bytes()),
                roles: BTreeSet::new(),
            },
            GenesisAccount {
                name: "other".into(),
                public_key: hex::encode(other().verifying_key().to_bytes()),
                roles: BTreeSet::from([Role::Keygen, Role::Sign, Role::Delete, Role::Registry]),
            },
        ],
        limits: Limits {
            max_parties: 8,
            max_message_bytes: 64,
            session_deadline_blocks: 5,
            liveness_window_blocks: 10,
            max_requests_per_account_per_block: 20,
            refresh_every_blocks,
            sign_attempt_blocks: 30,
            cggmp_keygen_deadline_blocks: 0,
            sign_retention_blocks,
            min_threshold: 2,
        },
        governance,
    };
    serde_json::to_vec(&g).unwrap()
}

impl Net {
    fn new() -> Net {
        Net::with_refresh(0)
    }

    /// A net whose genesis refreshes every key every `refresh_every_blocks` (0: never).
    fn with_refresh(refresh_every_blocks: u64) -> Net {
        Net::with_limits(refresh_every_blocks, 0)
    }

    /// A net whose genesis also prunes finished sign requests after `sign_retention_blocks`.
    fn with_limits(refresh_every_blocks: u64, sign_retention_blocks: u64) -> Net {
        Net::build(
            refresh_every_blocks,
            sign_retention_blocks,
            client_governs(),
        )
    }

    fn build(
        refresh_every_blocks: u64,
        sign_retention_blocks: u64,
        governance: Option<Governance>,
    ) -> Net {
        Net::build_with(
            refresh_every_blocks,
            sign_retention_blocks,
            governance,
            |_| {},
        )
    }

    /// A net whose signing requests run in several attempts: a request deadline of 100
    /// blocks, attempts of 10.
    fn with_attempts() -> Net {
        Net::build_with(0, 0, client_governs(), |limits| {
            limits["session_deadline_blocks"] = 100.into();
            limits["sign_attempt_blocks"] = 10.into();
        })
    }

    /// As [`Net::build`], with `limits` changed in the genesis's JSON.
    fn build_with(
        refresh_every_blocks: u64,
        sign_retention_blocks: u64,
        governance: Option<Governance>,
        limits: impl FnOnce(&mut serde_json::Value),
    ) -> Net {
        let nodes: Vec<SigningKey> = (0..4)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let client = SigningKey::from_bytes(&[50; 32]);
        let signer_only = SigningKey::from_bytes(&[51; 32]);
        let dir = tempfile::tempdir().unwrap();
        let g = genesis_with(
            &nodes,
            &client,
            &signer_only,
            refresh_every_blocks,
            sign_retention_blocks,
            governance,
        );
        let mut doc: serde_json::Value = serde_json::from_slice(&g).unwrap();
        let before = doc.clone();
        limits(&mut doc["limits"]);
        // Unchanged limits keep the genesis's bytes (tests rebuild them to reopen the app).
        let g = if doc == before {
            g
        } else {
            serde_json::to_vec(&doc).unwrap()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1000);
        let mut app = App::open(dir.path(), g.clone(), Some(tx)).unwrap();
        app.init_chain(pb::RequestInitChain {
            chain_id: "test-chain".into(),
            app_state_bytes: g.into(),
            ..Default::default()
        });
        Net {
            app,
            _dir: dir,
            nodes,
            client,
            signer_only,
            seq: Default::default(),
            height: 0,
            jobs: rx,
        }
    }

    fn tx(&mut self, key: &SigningKey, msg: TxMsg) -> Vec<u8> {
        let s = self.seq.entry(key.verifying_key().to_bytes()).or_insert(0);
        let tx = sign_tx(key, "test-chain", *s, msg);
        *s += 1;
        tx
    }

    /// A tx at the signer's next sequence without consuming it (for txs only checked).
    fn tx_unsequenced(&self, key: &SigningKey, msg: TxMsg) -> Vec<u8> {
        let s = self
            .seq
            .get(&key.verifying_key().to_bytes())
            .copied()
            .unwrap_or(0);
        sign_tx(key, "test-chain", s, msg)
    }

    fn check(&mut self, tx: &[u8]) -> pb::ResponseCheckTx {
        self.app.check_tx(pb::RequestCheckTx {
            tx: tx.to_vec().into(),
            r#type: 0,
        })
    }

    /// Commits a block; returns the tx results and the jobs handed to the module.
    fn block(&mut self, txs: Vec<Vec<u8>>) -> (Vec<pb::ExecTxResult>, Vec<Job>) {
        self.height += 1;
        let r = self.app.finalize_block(pb::RequestFinalizeBlock {
            txs: txs.into_iter().map(Into::into).collect(),
            height: self.height,
            ..Default::default()
        });
        self.app.commit();
        let mut jobs = Vec::new();
        let mut blocks = Vec::new();
        while let Ok(j) = self.jobs.try_recv() {
            match j {
                Job::Block { height, .. } => blocks.push(height),
                j => {
                    assert!(
                        blocks.is_empty(),
                        "a job after its block's Block job: {j:?}"
                    );
                    jobs.push(j)
                }
            }
        }
        // Every Commit ends with its block, after the block's other jobs.
        assert_eq!(blocks, vec![self.height as u64], "one Block job per Commit");
        (r.tx_results, jobs)
    }

    fn query(&self, path: &str) -> (u32, Value) {
        let r = self.app.query(pb::RequestQuery {
            path: path.into(),
            ..Default::default()
        });
        (
            r.code,
            serde_json::from_slice(&r.value).unwrap_or(Value::String(r.log)),
        )
    }

    fn keygen(&mut self, id: &str, t: u32) -> Vec<u8> {
        let c = self.client.clone();
        self.tx(
            &c,
            TxMsg::KeyGen {
                key_id: KeyId::new(id).unwrap(),
                scheme: Scheme::FrostEd25519,
                threshold: t,
                parties: vec![],
            },
        )
    }

    /// A successful keygen report of `id` from each of the 4 nodes, node `i` reporting
    /// `public_key(i)`.
    fn keygen_reports(
        &mut self,
        id: &str,
        scheme: Scheme,
        session: SessionId,
        public_key: impl Fn(usize) -> Vec<u8>,
    ) -> Vec<Vec<u8>> {
        (0..4)
            .map(|i| {
                let k = self.nodes[i].clone();
                self.tx(
                    &k,
                    TxMsg::KeyGenResult {
                        key_id: KeyId::new(id).unwrap(),
                        session,
                        outcome: Outcome::Ok(KeyGenOk {
                            public_key_package: package_for(scheme, &public_key(i)),
                            public_key: public_key(i),
                            transcript_hash: [1; 32],
                        }),
                    },
                )
            })
            .collect()
    }

    /// Requests a 3-of-4 FROST-Ed25519 key and has every node report `public_key` with
    /// `package` as its public key package, in one block.
    fn keygen_reporting(&mut self, id: &str, public_key: &[u8], package: &[u8]) {
        let tx = self.keygen(id, 3);
        let (_, jobs) = self.block(vec![tx]);
        let Job::KeyGen { session, .. } = jobs[0].clone() else {
            panic!("{jobs:?}")
        };
        let reports: Vec<_> = (0..4)
            .map(|i| {
                let k = self.nodes[i].clone();
                let outcome = Outcome::Ok(KeyGenOk {
                    public_key: public_key.to_vec(),
                    transcript_hash: [1; 32],
                    public_key_package: package.to_vec(),
                });
                let key_id = KeyId::new(id).unwrap();
                self.tx(
                    &k,
                    TxMsg::KeyGenResult {
                        key_id,
                        session,
                        outcome,
                    },
                )
            })
            .collect();
        self.block(reports);
    }

    /// Drives a key to READY with node reports over a real ed25519 key (standing in for the
    /// group key: the app only checks that signatures verify under it).
    fn ready_key(&mut self, id: &str, group: &SigningKey) {
        self.ready_key_as(
            id,
            Scheme::FrostEd25519,
            group.verifying_key().to_bytes().to_vec(),
        );
    }

    /// Requests a 3-of-4 key of `scheme` and drives it to READY with every node reporting
    /// `public_key` (a stand-in for the group key: the chain checks only its form and that
    /// signatures verify under it).
    fn ready_key_as(&mut self, id: &str, scheme: Scheme, public_key: Vec<u8>) {
        let c = self.client.clone();
        let tx = self.tx(
            &c,
            TxMsg::KeyGen {
                key_id: KeyId::new(id).unwrap(),
                scheme,
                threshold: 3,
                parties: vec![],
            },
        );
        let (res, jobs) = self.block(vec![tx]);
        assert_eq!(res[0].code, 0, "{}", res[0].log);
        let Job::KeyGen {
            session, scheme: s, ..
        } = jobs[0].clone()
        else {
            panic!("{jobs:?}")
        };
        assert_eq!(s, scheme);
        let reports = self.keygen_reports(id, scheme, session, |_| public_key.clone());
        let (res, _) = self.block(reports);
        assert!(res.iter().all(|r| r.code == 0));
        assert_eq!(self.query(&format!("/key/{id}")).1["status"], "READY");
    }
}

#[test]
fn app_can_run_keygen_sign_delete_and_emit_jobs_after_commit() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[77; 32]);
    net.ready_key("k1", &group);
    let c = net.client.clone();
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("k1").unwrap(),
            request_id: RequestId::new("r1").unwrap(),
            message: b"hi".to_vec(),
            prehashed: false,
        },
    );
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let Job::Sign {
        session, signers, ..
    } = jobs[0].clone()
    else {
        panic!("{jobs:?}")
    };
    assert_eq!(signers.len(), 3);
    let who = net.nodes[signers[0].as_str()[4..].parse::<usize>().unwrap()].clone();
    // A wrong signature is refused by the chain.
    let bad = net.tx(
        &who,
        TxMsg::SignResult {
            request_id: RequestId::new("r1").unwrap(),
            session,
            outcome: Outcome::Ok(group.sign(b"other").to_bytes().to_vec()),
            signing_package: Vec::new(),
        },
    );
    let good = net.tx(
        &who,
        TxMsg::SignResult {
            request_id: RequestId::new("r1").unwrap(),
            session,
            outcome: Outcome::Ok(group.sign(b"hi").to_bytes().to_vec()),
            signing_package: Vec::new(),
        },
    );
    let (res, _) = net.block(vec![bad, good]);
    assert_ne!(res[0].code, 0);
    assert!(res[0].log.contains("does not verify"), "{}", res[0].log);
    assert_eq!(res[1].code, 0, "{}", res[1].log);
    assert_eq!(net.query("/sign/r1").1["status"], "DONE");
    // Delete, attested by every party.
    let tx = net.tx(
        &c,
        TxMsg::KeyDelete {
            key_id: KeyId::new("k1").unwrap(),
        },
    );
    let (_, jobs) = net.block(vec![tx]);
    assert!(matches!(jobs[0], Job::Delete { .. }));
    assert_eq!(net.query("/key/k1").1["status"], "DELETING");
    let att: Vec<_> = (0..4)
        .map(|i| {
            let k = net.nodes[i].clone();
            net.tx(
                &k,
                TxMsg::KeyDeleted {
                    key_id: KeyId::new("k1").unwrap(),
                },
            )
        })
        .collect();
    // Until a party's attestation is committed, the chain waits for it (mpcd re-attests).
    let unattested = |net: &Net, i: usize| {
        let g = genesis(&net.nodes, &net.client, &net.signer_only);
        let again = App::open(net._dir.path(), g, None).unwrap();
        again.unattested_deletions(&nid(i)).len()
    };
    net.block(att[..3].to_vec());
    assert_eq!(net.query("/key/k1").1["status"], "DELETING");
    assert_eq!((unattested(&net, 0), unattested(&net, 3)), (0, 1));
    net.block(att[3..].to_vec());
    assert_eq!(unattested(&net, 3), 0);
    assert_eq!(net.query("/key/k1").1["status"], "DELETED");
    // The id can never be reused, and signing with it fails.
    let tx = net.keygen("k1", 3);
    let r = net.check(&tx);
    assert_eq!(r.code, 8, "{}", r.log);
    net.seq.insert(
        c.verifying_key().to_bytes(),
        net.seq[&c.verifying_key().to_bytes()] - 1,
    );
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("k1").unwrap(),
            request_id: RequestId::new("r2").unwrap(),
            message: vec![],
            prehashed: false,
        },
    );
    let r = net.check(&tx);
    assert!(r.log.contains("deleted"), "{}", r.log);
}

#[test]
fn app_rejects_bad_input_with_clear_errors_and_unchanged_state() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[77; 32]);
    net.ready_key("ready", &group);
    let tx = net.keygen("pending", 3);
    net.block(vec![tx]);
    let hash_before = net.app.info().last_block_app_hash;
    let c = net.client.clone();
    let seq = net.seq[&c.verifying_key().to_bytes()];
    let kid = |s: &str| KeyId::new(s).unwrap();
    let keygen = |id: &str, scheme_t: u32, parties: Vec<NodeId>| TxMsg::KeyGen {
        key_id: kid(id),
        scheme: Scheme::FrostEd25519,
        threshold: scheme_t,
        parties,
    };
    let sign = |id: &str, rid: &str, m: Vec<u8>| TxMsg::KeySign {
        key_id: kid(id),
        request_id: RequestId::new(rid).unwrap(),
        message: m,
        prehashed: false,
    };
    let mut flipped = sign_tx(&c, "test-chain", seq, keygen("x", 3, vec![]));
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let stranger = SigningKey::from_bytes(&[99; 32]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed bytes", vec![0xff, 0x01, 0x02], "malformed"),
        ("bad signature", flipped, "signature"),
        (
            "wrong chain id",
            sign_tx(&c, "other-chain", seq, keygen("x", 3, vec![])),
            "wrong chain id",
        ),
        (
            "replayed sequence",
            sign_tx(&c, "test-chain", seq - 1, keygen("x", 3, vec![])),
            "replayed",
        ),
        (
            "skipped sequence",
            sign_tx(&c, "test-chain", seq + 1, keygen("x", 3, vec![])),
            "skipped",
        ),
        (
            "threshold 0",
            sign_tx(&c, "test-chain", seq, keygen("x", 0, vec![])),
            "threshold",
        ),
        (
            "threshold above parties",
            sign_tx(&c, "test-chain", seq, keygen("x", 5, vec![])),
            "threshold",
        ),
        (
            "unknown party",
            sign_tx(
                &c,
                "test-chain",
                seq,
                keygen("x", 2, vec![nid(0), NodeId::new("node9").unwrap()]),
            ),
            "unknown party",
        ),
        (
            "duplicate key id",
            sign_tx(&c, "test-chain", seq, keygen("ready", 3, vec![])),
            "already used",
        ),
        (
            "sign unknown key",
            sign_tx(&c, "test-chain", seq, sign("nope", "r", vec![])),
            "does not exist",
        ),
        (
            "sign pending key",
            sign_tx(&c, "test-chain", seq, sign("pending", "r", vec![])),
            "PENDING",
        ),
        (
            "message over limit",
            sign_tx(&c, "test-chain", seq, sign("ready", "r", vec![0; 65])),
            "exceeds",
        ),
        (
            "unauthorized signer",
            sign_tx(&stranger, "test-chain", 0, sign("ready", "r", vec![])),
            "neither",
        ),
        (
            "role missing",
            sign_tx(
                &net.signer_only.clone(),
                "test-chain",
                0,
                keygen("x", 3, vec![]),
            ),
            "role",
        ),
        (
            "node sends a request",
            sign_tx(
                &net.nodes[0].clone(),
                "test-chain",
                net.seq[&net.nodes[0].verifying_key().to_bytes()],
                keygen("x", 3, vec![]),
            ),
            "nodes only send results",
        ),
    ];
    for (name, tx, expect) in cases {
        let r = net.check(&tx);
        assert_ne!(r.code, 0, "{name}: accepted");
        assert!(
            r.log.to_lowercase().contains(&expect.to_lowercase()),
            "{name}: log {:?} lacks {expect:?}",
            r.log
        );
        // Delivered anyway (a faulty proposer), it fails the same way and changes nothing but
        // possibly the signer's sequence.
    }
    // Unknown scheme never decodes into a tx.
    let raw = seqmpc_proto::wire::TxBody {
        chain_id: "test-chain".into(),
        sequence: seq,
        msg: Some(seqmpc_proto::wire::tx_body::Msg::KeyGen(
            seqmpc_proto::wire::KeyGen {
                key_id: "x".into(),
                scheme: "rsa".into(),
                threshold: 2,
                parties: vec![],
            },
        )),
    };
    let body = prost::Message::encode_to_vec(&raw);
    let mut sb = seqmpc_proto::tx::TX_SIGN_PREFIX.to_vec();
    sb.extend_from_slice(&body);
    let tx = prost::Message::encode_to_vec(&seqmpc_proto::wire::Tx {
        body,
        signer: c.verifying_key().to_bytes().to_vec(),
        signature: c.sign(&sb).to_bytes().to_vec(),
    });
    let r = net.check(&tx);
    assert!(r.log.contains("unknown scheme"), "{}", r.log);
    // Nothing changed: an empty block moves only the height (and the app hash with it).
    assert_eq!(net.app.info().last_block_app_hash, hash_before);
    assert_eq!(net.query("/key/pending").1["status"], "PENDING");
    let (code, v) = net.query("/key/x");
    assert_ne!(code, 0, "{v}");
}

#[test]
fn app_can_end_a_keygen_by_deadline_and_on_disagreement() {
    let mut net = Net::new();
    let tx = net.keygen("late", 3);
    let (_, jobs) = net.block(vec![tx]);
    let Job::KeyGen { session, .. } = jobs[0].clone() else {
        panic!()
    };
    for _ in 0..5 {
        net.block(vec![]);
    }
    let k = net.query("/key/late").1;
    assert_eq!(k["status"], "ERROR");
    assert!(k["error"].as_str().unwrap().contains("deadline"), "{k}");
    // Signing with an ERROR key is refused clearly.
    let c = net.client.clone();
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("late").unwrap(),
            request_id: RequestId::new("rl").unwrap(),
            message: vec![1],
            prehashed: false,
        },
    );
    let r = net.check(&tx);
    assert!(r.code != 0 && r.log.contains("ERROR"), "{}", r.log);
    let seq = net.seq.get_mut(&c.verifying_key().to_bytes()).unwrap();
    *seq -= 1;
    let _ = session;
    // Disagreement.
    let tx = net.keygen("split", 3);
    let (_, jobs) = net.block(vec![tx]);
    let Job::KeyGen { session, .. } = jobs[0].clone() else {
        panic!()
    };
    let g1 = SigningKey::from_bytes(&[5; 32])
        .verifying_key()
        .to_bytes()
        .to_vec();
    let g2 = SigningKey::from_bytes(&[6; 32])
        .verifying_key()
        .to_bytes()
        .to_vec();
    let txs = net.keygen_reports("split", Scheme::FrostEd25519, session, |i| {
        if i == 3 {
            g2.clone()
        } else {
            g1.clone()
        }
    });
    let (_, jobs) = net.block(txs);
    assert_eq!(net.query("/key/split").1["status"], "ERROR");
    assert!(jobs.iter().any(|j| matches!(j, Job::KeyGenFailed { .. })));
    // An ERROR key id may be retried (attempt 1, a new session).
    let tx = net.keygen("split", 3);
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let Job::KeyGen { session: s2, .. } = jobs[0].clone() else {
        panic!()
    };
    assert_ne!(s2, session);
}

/// Issue 13: the state stays bounded under sustained signing. A finished sign request leaves
/// the state `sign_retention_blocks` after it ended (the same on every replica, journaled like
/// any write), its id is refused until then and free again after.
#[test]
fn app_can_prune_finished_sign_requests_after_the_retention_and_reload_the_same_state() {
    let mut net = Net::with_limits(0, 3);
    let group = SigningKey::from_bytes(&[77; 32]);
    net.ready_key("k1", &group);
    let c = net.client.clone();
    let sign = |net: &mut Net, rid: &str| {
        net.tx(
            &c,
            TxMsg::KeySign {
                key_id: KeyId::new("k1").unwrap(),
                request_id: RequestId::new(rid).unwrap(),
                message: b"hi".to_vec(),
                prehashed: false,
            },
        )
    };
    let tx = sign(&mut net, "r1");
    let (_, jobs) = net.block(vec![tx]);
    let Job::Sign {
        session, signers, ..
    } = jobs[0].clone()
    else {
        panic!("{jobs:?}")
    };
    let who = net.nodes[signers[0].as_str()[4..].parse::<usize>().unwrap()].clone();
    let good = net.tx(
        &who,
        TxMsg::SignResult {
            request_id: RequestId::new("r1").unwrap(),
            session,
            outcome: Outcome::Ok(group.sign(b"hi").to_bytes().to_vec()),
            signing_package: Vec::new(),
        },
    );
    let (res, _) = net.block(vec![good]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    assert_eq!(net.query("/sign/r1").1["status"], "DONE");
    // While it is kept, its id is taken.
    let again = sign(&mut net, "r1");
    let r = net.check(&again);
    assert_ne!(r.code, 0);
    assert!(r.log.contains("already used"), "{}", r.log);
    net.seq.insert(
        c.verifying_key().to_bytes(),
        net.seq[&c.verifying_key().to_bytes()] - 1,
    );
    net.block(vec![]);
    net.block(vec![]);
    assert_eq!(net.query("/sign/r1").1["status"], "DONE");
    // The third block after the one that ended it prunes it: nothing of it is left.
    net.block(vec![]);
    let (code, v) = net.query("/sign/r1");
    assert_ne!(code, 0);
    assert!(v.to_string().contains("block_results"), "{v}");
    let state = net.app.state().unwrap();
    assert!(state.sign_requests().is_empty());
    assert!(
        state
            .deadlines()
            .iter()
            .all(|(_, d)| !matches!(d, seqmpc_abci::chain::entries::DeadlineItem::SignPrune(_))),
        "{:?}",
        state.deadlines()
    );
    // A replica reloaded from the journal has the same state and hash.
    let g = genesis_with(
        &net.nodes,
        &net.client,
        &net.signer_only,
        0,
        3,
        client_governs(),
    );
    let again_app = App::open(net._dir.path(), g, None).unwrap();
    assert_eq!(
        again_app.info().last_block_app_hash,
        net.app.info().last_block_app_hash
    );
    assert_eq!(again_app.state().unwrap(), net.app.state().unwrap());
    // The id is free again: a new request.
    let tx = sign(&mut net, "r1");
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    assert!(matches!(jobs[0], Job::Sign { .. }));
    assert_eq!(net.query("/sign/r1").1["status"], "PENDING");
}

#[test]
fn app_can_reload_journal_and_snapshot_and_stay_in_step() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[77; 32]);
    net.ready_key("j1", &group);
    let c = net.client.clone();
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("j1").unwrap(),
            request_id: RequestId::new("jr").unwrap(),
            message: b"m".to_vec(),
            prehashed: false,
        },
    );
    net.block(vec![tx]);
    // Cross a snapshot boundary, then write more after it.
    while net.height < seqmpc_abci::abci::persist::SNAPSHOT_EVERY as i64 + 2 {
        net.block(vec![]);
    }
    let tx = net.keygen("after-snapshot", 3);
    net.block(vec![tx]);
    // The snapshot is written off Commit's path; one process at a time opens a home.
    net.app.finish_snapshot().unwrap();
    assert!(!net
        ._dir
        .path()
        .join(seqmpc_abci::abci::persist::JOURNAL_OLD)
        .exists());
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let mut again = App::open(net._dir.path(), g, None).unwrap();
    assert_eq!(
        again.info().last_block_app_hash,
        net.app.info().last_block_app_hash
    );
    for path in [
        "/keys",
        "/sign/jr",
        "/key/after-snapshot",
        &format!("/account/{}", hex::encode(c.verifying_key().to_bytes())),
    ] {
        let a = net.app.query(pb::RequestQuery {
            path: path.to_string(),
            ..Default::default()
        });
        let b = again.query(pb::RequestQuery {
            path: path.to_string(),
            ..Default::default()
        });
        assert_eq!(a.value, b.value, "{path}");
    }
    // Both execute the next block identically.
    let tx = net.keygen("next", 3);
    let req = pb::RequestFinalizeBlock {
        txs: vec![tx.into()],
        height: net.height + 1,
        ..Default::default()
    };
    let h1 = net.app.finalize_block(req.clone()).app_hash;
    let h2 = again.finalize_block(req).app_hash;
    assert_eq!(h1, h2);
}

#[test]
fn app_can_load_after_a_crash_before_its_background_snapshot_was_durable() {
    use seqmpc_abci::abci::persist::{JOURNAL, JOURNAL_OLD, SNAPSHOT, SNAPSHOT_EVERY};
    let mut net = Net::new();
    let dir = net._dir.path().to_owned();
    while net.height < SNAPSHOT_EVERY as i64 - 1 {
        net.block(vec![]);
    }
    // Keep the snapshot and journal as they are before the snapshot height. A hard link keeps
    // the journal's file when Commit moves it aside and the writer removes it: it then holds
    // every block up to the snapshot height, as the old journal does.
    std::fs::copy(dir.join(SNAPSHOT), dir.join("before.json")).unwrap();
    std::fs::hard_link(dir.join(JOURNAL), dir.join("kept.log")).unwrap();
    let tx = net.keygen("at-the-snapshot", 3);
    net.block(vec![tx]);
    assert_eq!(net.height, SNAPSHOT_EVERY as i64);
    let tx = net.keygen("after-it", 3);
    net.block(vec![tx]);
    net.block(vec![]);
    net.app.finish_snapshot().unwrap();
    let info = net.app.info();
    // A crash after the journal was moved aside and before the snapshot was in place: the old
    // snapshot, the old journal, and the journal since.
    std::fs::rename(dir.join("before.json"), dir.join(SNAPSHOT)).unwrap();
    std::fs::rename(dir.join("kept.log"), dir.join(JOURNAL_OLD)).unwrap();
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let read = App::read_committed(&dir, &g).unwrap().unwrap();
    assert_eq!(read.height, u64::try_from(info.last_block_height).unwrap());
    let again = App::open(&dir, g.clone(), None).unwrap();
    assert_eq!(again.info().last_block_height, info.last_block_height);
    assert_eq!(again.info().last_block_app_hash, info.last_block_app_hash);
    // The load wrote the snapshot the crash lost, and dropped the old journal.
    assert!(!dir.join(JOURNAL_OLD).exists());
    drop(again);
    let third = App::open(&dir, g, None).unwrap();
    assert_eq!(third.info().last_block_app_hash, info.last_block_app_hash);
    for path in ["/key/at-the-snapshot", "/key/after-it"] {
        let q = third.query(pb::RequestQuery {
            path: path.to_string(),
            ..Default::default()
        });
        assert_eq!(q.code, 0, "{path}: {}", q.log);
    }
}

/// `ResponseCommit.retain_height`: 0 (keep every block) unless the node says otherwise, and then
/// never within the genesis `sign_retention_blocks` (a pruned sign request's outcome stays in
/// its block's results).
#[test]
fn app_can_name_a_retain_height_that_keeps_the_sign_retention() {
    let mut net = Net::with_limits(0, 5);
    let commit = |net: &mut Net| {
        net.height += 1;
        net.app.finalize_block(pb::RequestFinalizeBlock {
            height: net.height,
            ..Default::default()
        });
        net.app.commit().retain_height
    };
    assert_eq!(commit(&mut net), 0, "height 1, by default");
    // Asked for 3 blocks, it keeps the 5 of the sign retention.
    net.app.set_min_retain_blocks(3);
    let got: Vec<i64> = (2..=8).map(|_| commit(&mut net)).collect();
    assert_eq!(got, vec![0, 0, 0, 1, 2, 3, 4], "heights 2..=8");
    // Asked for more than the retention, it keeps what it was asked for.
    net.app.set_min_retain_blocks(8);
    assert_eq!(commit(&mut net), 2, "height 9 keeps 2..=9");
    net.app.set_min_retain_blocks(0);
    assert_eq!(commit(&mut net), 0, "height 10, every block again");
}

#[test]
fn app_can_restart_from_disk_with_the_same_state_and_hash() {
    let mut net = Net::new();
    let tx = net.keygen("k", 3);
    net.block(vec![tx]);
    let info = net.app.info();
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let again = App::open(net._dir.path(), g, None).unwrap();
    let info2 = again.info();
    assert_eq!(info.last_block_height, info2.last_block_height);
    assert_eq!(info.last_block_app_hash, info2.last_block_app_hash);
    assert_eq!(info2.last_block_height, 1);
}

#[test]
fn app_can_verify_bip340_sign_results_against_the_x_only_key() {
    let mut net = Net::new();
    // A libsecp256k1 keypair stands in for the FROST group key: the chain only checks that the
    // reported x-only key is valid and that signatures verify under it as BIP340.
    let group = secp256k1::Keypair::from_seckey_byte_array(secp256k1::SECP256K1, [42; 32]).unwrap();
    let x_only = group.x_only_public_key().0.serialize();
    let c = net.client.clone();
    net.ready_key_as("tr", Scheme::FrostSecp256k1Tr, x_only.to_vec());
    let (_, k) = net.query("/key/tr");
    assert_eq!(k["status"], "READY", "{k}");
    assert_eq!(k["scheme"], "frost-secp256k1-tr");
    assert_eq!(k["public_key"], hex::encode(x_only));

    let msg = [7u8; 32];
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("tr").unwrap(),
            request_id: RequestId::new("tr1").unwrap(),
            message: msg.to_vec(),
            prehashed: false,
        },
    );
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let Job::Sign {
        session, signers, ..
    } = jobs[0].clone()
    else {
        panic!("{jobs:?}")
    };
    let who = net.nodes[signers[0].as_str()[4..].parse::<usize>().unwrap()].clone();
    let sign = |m: &[u8]| {
        secp256k1::SECP256K1
            .sign_schnorr_no_aux_rand(m, &group)
            .to_byte_array()
            .to_vec()
    };
    let result = |net: &mut Net, sig: Vec<u8>| {
        net.tx(
            &who,
            TxMsg::SignResult {
                request_id: RequestId::new("tr1").unwrap(),
                session,
                outcome: Outcome::Ok(sig),
                signing_package: Vec::new(),
            },
        )
    };
    // Refused: a signature of another message, an Ed25519 signature, a truncated one.
    let wrong_msg = result(&mut net, sign(b"other"));
    let ed = result(
        &mut net,
        SigningKey::from_bytes(&[9; 32])
            .sign(&msg)
            .to_bytes()
            .to_vec(),
    );
    let mut short = sign(&msg);
    short.pop();
    let short = result(&mut net, short);
    let good = result(&mut net, sign(&msg));
    let (res, _) = net.block(vec![wrong_msg, ed, short, good]);
    for r in &res[..2] {
        assert_ne!(r.code, 0);
        assert!(r.log.contains("does not verify"), "{}", r.log);
    }
    assert_ne!(res[2].code, 0);
    assert!(res[2].log.contains("64 bytes"), "{}", res[2].log);
    assert_eq!(res[3].code, 0, "{}", res[3].log);
    let (_, s) = net.query("/sign/tr1");
    assert_eq!(s["status"], "DONE", "{s}");
}

#[test]
fn app_rejects_a_secp256k1_tr_key_report_that_is_not_an_x_only_key() {
    let mut net = Net::new();
    let c = net.client.clone();
    let tx = net.tx(
        &c,
        TxMsg::KeyGen {
            key_id: KeyId::new("tr").unwrap(),
            scheme: Scheme::FrostSecp256k1Tr,
            threshold: 3,
            parties: vec![],
        },
    );
    let (_, jobs) = net.block(vec![tx]);
    let Job::KeyGen { session, .. } = jobs[0].clone() else {
        panic!("{jobs:?}")
    };
    // A 33-byte SEC 1 point is not what the chain stores for BIP340 keys.
    let group = secp256k1::Keypair::from_seckey_byte_array(secp256k1::SECP256K1, [42; 32]).unwrap();
    let sec1 = group.public_key().serialize().to_vec();
    let reports = net.keygen_reports("tr", Scheme::FrostSecp256k1Tr, session, |_| sec1.clone());
    net.block(reports);
    let (_, k) = net.query("/key/tr");
    assert_eq!(k["status"], "ERROR", "{k}");
    assert!(
        k["error"].as_str().unwrap().contains("not a valid point"),
        "{k}"
    );
}

#[test]
fn app_can_drop_a_torn_journal_tail_and_rejects_a_tampered_one() {
    use std::io::Write;
    let mut net = Net::new();
    let tx = net.keygen("t1", 3);
    net.block(vec![tx]);
    net.block(vec![]);
    let info = net.app.info();
    let journal = net._dir.path().join(seqmpc_abci::abci::persist::JOURNAL);
    let clean = std::fs::read(&journal).unwrap();
    // A crash in the middle of an append leaves a partial last line.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(b"{\"height\":3,\"app_ha")
        .unwrap();
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    // An offline command reads beside a node that may be mid-append: the partial line is left
    // out and left in place (the writer finishes it), and the state is the committed one.
    let torn_len = std::fs::metadata(&journal).unwrap().len();
    let read = App::read_committed(net._dir.path(), &g).unwrap().unwrap();
    assert_eq!(read.height, u64::try_from(info.last_block_height).unwrap());
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), torn_len);
    let again = App::open(net._dir.path(), g.clone(), None).unwrap();
    assert_eq!(again.info().last_block_height, info.last_block_height);
    assert_eq!(again.info().last_block_app_hash, info.last_block_app_hash);
    drop(again);
    // A changed byte inside a committed line breaks the hash chain: refuse, clearly.
    let text = String::from_utf8(clean)
        .unwrap()
        .replace("\"t1\"", "\"t2\"");
    std::fs::write(&journal, text).unwrap();
    let err = App::open(net._dir.path(), g, None)
        .err()
        .expect("tampered journal accepted");
    assert!(
        format!("{err:#}").contains("does not match its app hash"),
        "{err:#}"
    );
}

/// `r || s` with `s` replaced by `n - s` (the high-s twin of a low-s signature).
fn high_s(rs: &[u8; 64]) -> [u8; 64] {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    let mut out = *rs;
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(rs[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        out[32 + i] = (d + 256 * borrow) as u8;
    }
    out
}

#[test]
fn app_can_verify_ecdsa_sign_results_with_recovery_id_and_refuse_bad_ones() {
    let mut net = Net::new();
    // A libsecp256k1 key stands in for the CGGMP24 group key.
    let group = secp256k1::Keypair::from_seckey_byte_array(secp256k1::SECP256K1, [42; 32]).unwrap();
    let sk = group.secret_key();
    let pk = group.public_key().serialize();
    let c = net.client.clone();
    let keygen = |t: u32| TxMsg::KeyGen {
        key_id: KeyId::new("ec").unwrap(),
        scheme: Scheme::Cggmp24Secp256k1,
        threshold: t,
        parties: vec![],
    };
    // cggmp24 needs 2 <= t <= n.
    let tx = net.tx_unsequenced(&c, keygen(1));
    let r = net.check(&tx);
    assert_ne!(r.code, 0);
    assert!(
        r.log.contains("cggmp24-secp256k1 needs 2 <= threshold"),
        "{}",
        r.log
    );
    net.ready_key_as("ec", Scheme::Cggmp24Secp256k1, pk.to_vec());
    let (_, k) = net.query("/key/ec");
    assert_eq!(k["status"], "READY", "{k}");
    assert_eq!(k["public_key"], hex::encode(pk));

    let sign_req = |rid: &str, message: Vec<u8>, prehashed: bool| TxMsg::KeySign {
        key_id: KeyId::new("ec").unwrap(),
        request_id: RequestId::new(rid).unwrap(),
        message,
        prehashed,
    };
    // A 31-byte prehashed digest is refused at CheckTx, clearly.
    let tx = net.tx_unsequenced(&c, sign_req("short", vec![7; 31], true));
    let r = net.check(&tx);
    assert_ne!(r.code, 0);
    assert!(r.log.contains("must be 32 bytes, got 31"), "{}", r.log);

    let ecdsa = |digest: [u8; 32]| {
        let (v, rs) = secp256k1::SECP256K1
            .sign_ecdsa_recoverable(secp256k1::Message::from_digest(digest), &sk)
            .serialize_compact();
        (rs, u8::try_from(i32::from(v)).unwrap())
    };
    let sha = |m: &[u8]| -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(m).into()
    };
    for (rid, message, prehashed) in [
        ("ec-pre", vec![9u8; 32], true),
        ("ec-msg", b"hello ecdsa".to_vec(), false),
    ] {
        let tx = net.tx(&c, sign_req(rid, message.clone(), prehashed));
        let (res, jobs) = net.block(vec![tx]);
        assert_eq!(res[0].code, 0, "{}", res[0].log);
        let Job::Sign {
            session,
            signers,
            prehashed: p,
            scheme,
            ..
        } = jobs[0].clone()
        else {
            panic!("{jobs:?}")
        };
        assert_eq!((p, scheme), (prehashed, Scheme::Cggmp24Secp256k1));
        let digest = if prehashed {
            <[u8; 32]>::try_from(message.as_slice()).unwrap()
        } else {
            sha(&message)
        };
        let (rs, v) = ecdsa(digest);
        let who = net.nodes[signers[0].as_str()[4..].parse::<usize>().unwrap()].clone();
        let result = |net: &mut Net, sig: Vec<u8>| {
            net.tx(
                &who,
                TxMsg::SignResult {
                    request_id: RequestId::new(rid).unwrap(),
                    session,
                    outcome: Outcome::Ok(sig),
                    signing_package: Vec::new(),
                },
            )
        };
        let with_v = |rs: &[u8], v: u8| [rs, &[v]].concat();
        // Refused: the other digest (hashed vs not), the wrong recovery id, high s, no v.
        let other_digest = if prehashed { sha(&message) } else { digest };
        let other = if prehashed {
            let (rs2, v2) = ecdsa(other_digest);
            with_v(&rs2, v2)
        } else {
            let (rs2, v2) = ecdsa(<[u8; 32]>::try_from(&sha(b"x")[..]).unwrap());
            with_v(&rs2, v2)
        };
        let bad = [
            (result(&mut net, other), "does not verify"),
            (result(&mut net, with_v(&rs, v ^ 1)), "recovers"),
            (result(&mut net, with_v(&high_s(&rs), v ^ 1)), "not low"),
            (result(&mut net, rs.to_vec()), "65 bytes"),
        ];
        let good = result(&mut net, with_v(&rs, v));
        let mut txs: Vec<Vec<u8>> = bad.iter().map(|(t, _)| t.clone()).collect();
        txs.push(good);
        let (res, _) = net.block(txs);
        for (r, (_, why)) in res.iter().zip(&bad) {
            assert_ne!(r.code, 0, "{why}");
            assert!(r.log.contains(why), "{why}: {}", r.log);
        }
        assert_eq!(res[4].code, 0, "{}", res[4].log);
        let (_, s) = net.query(&format!("/sign/{rid}"));
        assert_eq!(s["status"], "DONE", "{s}");
        assert_eq!(s["signature"], hex::encode(rs), "{s}");
        assert_eq!(s["recovery_id"], u64::from(v), "{s}");
        assert_eq!(s["prehashed"], prehashed, "{s}");
    }
}

#[test]
fn app_rejects_prehashed_signing_with_a_frost_key() {
    let mut net = Net::new();
    let c = net.client.clone();
    net.ready_key("ed", &SigningKey::from_bytes(&[3; 32]));
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("ed").unwrap(),
            request_id: RequestId::new("p").unwrap(),
            message: vec![1; 32],
            prehashed: true,
        },
    );
    let r = net.check(&tx);
    assert_ne!(r.code, 0);
    assert!(
        r.log.contains("cggmp24-secp256k1 (ECDSA) only"),
        "{}",
        r.log
    );
}

#[test]
fn app_can_choose_signers_among_live_nodes_and_rejects_heartbeats_from_accounts() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[77; 32]);
    net.ready_key("live", &group);
    // An account is not a node: its heartbeat is refused with a clear error.
    let c = net.client.clone();
    let hb = net.tx_unsequenced(&c, TxMsg::Heartbeat);
    let r = net.check(&hb);
    assert_ne!(r.code, 0);
    assert!(r.log.contains("Heartbeat"), "{}", r.log);
    // Past the liveness window (10 blocks here), only nodes 0-2 keep sending heartbeats.
    for _ in 0..12 {
        let beats: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                let k = net.nodes[i].clone();
                net.tx(&k, TxMsg::Heartbeat)
            })
            .collect();
        let (res, _) = net.block(beats);
        assert!(res.iter().all(|r| r.code == 0), "{res:?}");
    }
    let (_, nodes) = net.query("/nodes");
    let live: Vec<bool> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["live"].as_bool().unwrap())
        .collect();
    assert_eq!(live, vec![true, true, true, false], "{nodes}");
    // Every request is signed by the three live nodes, never by the silent one.
    for i in 0..8 {
        let tx = net.tx(
            &c,
            TxMsg::KeySign {
                key_id: KeyId::new("live").unwrap(),
                request_id: RequestId::new(format!("r{i}")).unwrap(),
                message: vec![i],
                prehashed: false,
            },
        );
        let (res, jobs) = net.block(vec![tx]);
        assert_eq!(res[0].code, 0, "{}", res[0].log);
        // (A request of an earlier block may end in this one: a `SignEnded` job.)
        let Some(signers) = jobs.iter().find_map(|j| match j {
            Job::Sign { signers, .. } => Some(signers),
            _ => None,
        }) else {
            panic!("{jobs:?}")
        };
        let ids: Vec<&str> = signers.iter().map(|s| s.as_str()).collect();
        assert!(!ids.contains(&"node3"), "{ids:?}");
        assert_eq!(signers.len(), 3);
    }
}

/// The chain's pure entry points run the app's blocks in memory, without ABCI or disk, to the
/// same state, results, jobs and app hash as the app.
#[test]
fn chain_can_run_the_apps_blocks_in_memory_without_abci() {
    use seqmpc_abci::chain::{self, CheckState};
    let mut net = Net::new();
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let (mut state, _) = chain::init_chain(&serde_json::from_slice(&g).unwrap(), &g).unwrap();
    assert_eq!(&state, net.app.state().unwrap());
    let mut mempool = CheckState::default();
    let mut run = |net: &mut Net, state: &mut chain::ChainState, txs: Vec<Vec<u8>>| {
        for tx in &txs {
            let pure = chain::check_tx(state, &mut mempool, tx).map_or_else(|e| e.code(), |()| 0);
            assert_eq!(pure, net.check(tx).code);
        }
        let block = chain::finalize_block(state, state.height + 1, 0, &[], &txs).unwrap();
        let (results, jobs) = net.block(txs);
        mempool.committed(state);
        let pure: Vec<(u32, &str, usize)> = block
            .tx_results
            .iter()
            .map(|r| (r.code, r.log.as_str(), r.events.len()))
            .collect();
        let app: Vec<(u32, &str, usize)> = results
            .iter()
            .map(|r| (r.code, r.log.as_str(), r.events.len()))
            .collect();
        assert_eq!(pure, app);
        assert_eq!(block.jobs, jobs);
        assert_eq!(state, net.app.state().unwrap());
        assert_eq!(hex::encode(block.app_hash), state.app_hash);
        block.jobs
    };
    let (k1, again) = (net.keygen("k1", 3), net.keygen("k1", 3));
    let jobs = run(&mut net, &mut state, vec![k1, b"junk".to_vec(), again]);
    let Job::KeyGen { session, .. } = jobs[0].clone() else {
        panic!("{jobs:?}")
    };
    let group = SigningKey::from_bytes(&[79; 32]).verifying_key().to_bytes();
    let reports = net.keygen_reports("k1", Scheme::FrostEd25519, session, |_| group.to_vec());
    run(&mut net, &mut state, reports);
    assert_eq!(
        state.keys()[&KeyId::new("k1").unwrap()].status,
        KeyStatus::Ready
    );
    // A height other than the next is refused, not executed.
    let wrong = chain::finalize_block(&mut state, 7, 0, &[], &[] as &[Vec<u8>]).unwrap_err();
    assert_eq!(
        wrong,
        chain::BlockError::WrongHeight {
            expected: 3,
            got: 7
        }
    );
    for i in 0..4 {
        assert_eq!(
            chain::catch_up_jobs(&state, &nid(i)),
            net.app.catch_up_jobs(&nid(i))
        );
    }
}

#[test]
fn app_can_tell_a_local_record_that_diverges_from_the_chain() {
    use seqmpc_abci::daemon::diverge::{divergences, LocalKey};
    use seqmpc_module::store::ShareStatus;
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[78; 32]);
    net.ready_key("dk", &group);
    let (_, k) = net.query("/key/dk");
    let session: SessionId = serde_json::from_value(k["session"].clone()).unwrap();
    let pk = hex::encode(group.verifying_key().to_bytes());
    let me = NodeId::new("node0").unwrap();
    let rec = |session: SessionId, status: ShareStatus, pk: &str| LocalKey {
        key_id: KeyId::new("dk").unwrap(),
        session,
        status,
        public_key: pk.to_owned(),
    };
    let state = net.app.state().unwrap();
    let reasons = |local: &[LocalKey]| -> Vec<String> {
        divergences(&me, local, state)
            .into_iter()
            .map(|d| format!("{}: {}", d.key_id, d.reason))
            .collect()
    };
    // In step with the chain: nothing.
    assert!(reasons(&[rec(session, ShareStatus::Ready, &pk)]).is_empty());
    // An older record restored (another session), a wrong public key, a lost share, a share
    // that is not READY, and a key the chain does not know.
    let older = SessionId([9; 32]);
    assert!(reasons(&[rec(older, ShareStatus::Ready, &pk)])[0].contains("older record restored"));
    assert!(reasons(&[rec(session, ShareStatus::Ready, "00")])[0].contains("not the one"));
    assert_eq!(
        reasons(&[]),
        vec!["dk: chain READY, no local share".to_owned()]
    );
    assert!(reasons(&[rec(session, ShareStatus::Pending, "")])[0].contains("local share Pending"));
    let stray = LocalKey {
        key_id: KeyId::new("nope").unwrap(),
        ..rec(session, ShareStatus::Ready, &pk)
    };
    let r = reasons(&[rec(session, ShareStatus::Ready, &pk), stray]);
    assert_eq!(r, vec!["nope: no such key on chain".to_owned()]);
}

#[test]
fn app_rejects_requests_beyond_the_per_account_block_limit() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[79; 32]);
    net.ready_key("rl", &group);
    let c = net.client.clone();
    let sign = |net: &mut Net, i: usize| {
        net.tx(
            &c,
            TxMsg::KeySign {
                key_id: KeyId::new("rl").unwrap(),
                request_id: RequestId::new(format!("rl{i}")).unwrap(),
                message: vec![1],
                prehashed: false,
            },
        )
    };
    // CheckTx admits 20 requests of one account until the next Commit, then refuses clearly.
    let txs: Vec<Vec<u8>> = (0..21).map(|i| sign(&mut net, i)).collect();
    for (i, tx) in txs.iter().enumerate() {
        let r = net.check(tx);
        if i < 20 {
            assert_eq!(r.code, 0, "{i}: {}", r.log);
        } else {
            assert_eq!(r.code, 9, "{}", r.log);
            assert!(r.log.contains("rate limited"), "{}", r.log);
        }
    }
    // Delivery enforces the same limit per block: the 21st fails, the other 20 are requested.
    let (res, jobs) = net.block(txs);
    assert!(res[..20].iter().all(|r| r.code == 0));
    assert_eq!(res[20].code, 9, "{}", res[20].log);
    assert_eq!(jobs.len(), 20);
    assert_eq!(
        net.query("/sign/rl20").0,
        7,
        "the refused request must not be recorded"
    );
    // The next block admits the account again (the CheckTx count resets at Commit).
    let tx = sign(&mut net, 21);
    assert_eq!(net.check(&tx).code, 0);
    let (res, _) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
}

impl Net {
    fn reshare_tx(&mut self, id: &str, parties: &[usize], t: u32) -> Vec<u8> {
        let c = self.client.clone();
        self.tx(
            &c,
            TxMsg::KeyReshare {
                key_id: KeyId::new(id).unwrap(),
                parties: parties.iter().map(|i| nid(*i)).collect(),
                threshold: t,
            },
        )
    }

    /// Node `i`'s resharing report, at its next sequence without consuming it (to check).
    fn reshare_report_unsequenced(
        &self,
        i: usize,
        id: &str,
        session: SessionId,
        outcome: Outcome<KeyGenOk>,
    ) -> Vec<u8> {
        self.tx_unsequenced(
            &self.nodes[i],
            TxMsg::ReshareResult {
                key_id: KeyId::new(id).unwrap(),
                session,
                outcome,
            },
        )
    }

    /// Node `i`'s resharing report.
    fn reshare_report(
        &mut self,
        i: usize,
        id: &str,
        session: SessionId,
        outcome: Outcome<KeyGenOk>,
    ) -> Vec<u8> {
        let k = self.nodes[i].clone();
        self.tx(
            &k,
            TxMsg::ReshareResult {
                key_id: KeyId::new(id).unwrap(),
                session,
                outcome,
            },
        )
    }

    /// Requests a resharing of `id` and returns its job.
    fn start_reshare(&mut self, id: &str, parties: &[usize], t: u32) -> Job {
        let tx = self.reshare_tx(id, parties, t);
        let (res, jobs) = self.block(vec![tx]);
        assert_eq!(res[0].code, 0, "{}", res[0].log);
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        jobs[0].clone()
    }
}

fn ok_report(public_key: &[u8], transcript: u8) -> Outcome<KeyGenOk> {
    Outcome::Ok(KeyGenOk {
        public_key: public_key.to_vec(),
        transcript_hash: [transcript; 32],
        public_key_package: package_for(Scheme::FrostEd25519, public_key),
    })
}

/// A stand-in public key package of `scheme` over the stand-in group key `public_key` (the
/// chain's form) for node0..node3, each verifying share being the group key: these tests check
/// no signature share. Empty for CGGMP24 and for a key that is no valid point.
fn package_for(scheme: Scheme, public_key: &[u8]) -> Vec<u8> {
    use seqmpc_module::protocol::Committee;
    fn build<C: frost_core::Ciphersuite>(key: &[u8]) -> Option<Vec<u8>> {
        let nodes: Vec<NodeId> = (0..4)
            .map(|i| NodeId::new(format!("node{i}")).unwrap())
            .collect();
        let vk = frost_core::VerifyingKey::<C>::deserialize(key).ok()?;
        let share = frost_core::keys::VerifyingShare::<C>::deserialize(key).ok()?;
        let committee = Committee::<C>::new(&nodes).ok()?;
        let shares = nodes
            .iter()
            .map(|n| Some((committee.id(n).ok()?, share)))
            .collect::<Option<_>>()?;
        frost_core::keys::PublicKeyPackage::new(shares, vk, None)
            .serialize()
            .ok()
    }
    let sec1: Vec<u8> = [0x02].iter().chain(public_key).copied().collect();
    match scheme {
        Scheme::FrostEd25519 => build::<frost_ed25519::Ed25519Sha512>(public_key),
        Scheme::FrostSecp256k1Tr => build::<frost_secp256k1_tr::Secp256K1Sha256TR>(&sec1),
        Scheme::Cggmp24Secp256k1 => None,
    }
    .unwrap_or_default()
}

#[test]
fn app_can_reshare_a_key_to_a_new_committee_and_switch_on_agreement() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[91; 32]);
    let pk = group.verifying_key().to_bytes().to_vec();
    net.ready_key("r1", &group);
    let before = net.query("/key/r1").1;
    let job = net.start_reshare("r1", &[0, 1, 2], 2);
    let Job::Reshare(ReshareJob {
        session,
        key_session,
        old_parties,
        old_threshold,
        dealers,
        new_parties,
        new_threshold,
        public_key,
        generation,
        ..
    }) = job
    else {
        panic!("{job:?}")
    };
    assert_eq!(old_parties, (0..4).map(nid).collect::<Vec<_>>());
    assert_eq!((old_threshold, new_threshold, generation), (3, 2, 2));
    assert_eq!(dealers.len(), 3);
    assert!(dealers.iter().all(|d| old_parties.contains(d)));
    assert_eq!(new_parties, vec![nid(0), nid(1), nid(2)]);
    assert_eq!(public_key, pk);
    assert_eq!(
        before["session"],
        serde_json::json!(key_session.to_string())
    );
    // While it runs, the key stays READY with its old committee, and signs with it.
    let k = net.query("/key/r1").1;
    assert_eq!(k["status"], "READY");
    assert_eq!(k["reshare"]["status"], "PENDING");
    assert_eq!(k["threshold"], 3);
    // Two of three reports: still PENDING.
    let a = net.reshare_report(0, "r1", session, ok_report(&pk, 4));
    let b = net.reshare_report(1, "r1", session, ok_report(&pk, 4));
    let (res, jobs) = net.block(vec![a, b]);
    assert!(res.iter().all(|r| r.code == 0), "{res:?}");
    assert!(jobs.is_empty());
    // A party that is not in the new committee cannot report.
    let x = net.reshare_report_unsequenced(3, "r1", session, ok_report(&pk, 4));
    assert_eq!(net.check(&x).code, 5, "{}", net.check(&x).log);
    let c = net.reshare_report(2, "r1", session, ok_report(&pk, 4));
    let (res, jobs) = net.block(vec![c]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let done = Job::ReshareDone {
        key_id: KeyId::new("r1").unwrap(),
        session,
        old_parties: (0..4).map(nid).collect(),
        new_parties: vec![nid(0), nid(1), nid(2)],
        generation: 2,
    };
    assert_eq!(jobs, vec![done.clone()]);
    // A node restarted after this block (it may have died before promoting its staged share,
    // or before deleting the share of the committee it left) is handed the outcome again.
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let again = App::open(net._dir.path(), g, None).unwrap();
    for i in 0..4 {
        assert_eq!(again.catch_up_jobs(&nid(i)), vec![done.clone()], "node{i}");
    }
    drop(again);
    let k = net.query("/key/r1").1;
    assert_eq!(k["status"], "READY");
    assert_eq!(k["threshold"], 2);
    assert_eq!(k["generation"], 2);
    assert_eq!(k["reshares"], 1);
    assert_eq!(k["public_key"], before["public_key"]);
    assert_eq!(k["parties"], serde_json::json!(["node0", "node1", "node2"]));
    assert_eq!(k["session"], serde_json::json!(session.to_string()));
    assert_eq!(k["reshare"]["status"], "DONE");
    // Signing now picks 2 signers among the new committee only.
    let c = net.client.clone();
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("r1").unwrap(),
            request_id: RequestId::new("after-reshare").unwrap(),
            message: b"m".to_vec(),
            prehashed: false,
        },
    );
    let (_, jobs) = net.block(vec![tx]);
    let Job::Sign { signers, .. } = &jobs[0] else {
        panic!("{jobs:?}")
    };
    assert_eq!(signers.len(), 2);
    assert!(signers.iter().all(|s| s != &nid(3)));
    // A refresh (same committee and threshold) is a resharing too; it can run again.
    let job = net.start_reshare("r1", &[0, 1, 2], 2);
    let Job::Reshare(ReshareJob {
        session: s2,
        dealers,
        generation,
        ..
    }) = job
    else {
        panic!("{job:?}")
    };
    assert_ne!(s2, session);
    assert_eq!((dealers.len(), generation), (2, 3));
    assert_eq!(net.query("/key/r1").1["reshare"]["refresh"], true);
    // The state survives a restart with the same app hash.
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let again = App::open(net._dir.path(), g, None).unwrap();
    assert_eq!(
        again.info().last_block_app_hash,
        net.app.info().last_block_app_hash
    );
}

#[test]
fn app_ends_a_failed_reshare_in_error_and_keeps_the_old_committee() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[92; 32]);
    let pk = group.verifying_key().to_bytes().to_vec();
    net.ready_key("r2", &group);
    let old = net.query("/key/r2").1;
    let check_unchanged = |k: &Value| {
        for f in [
            "status",
            "parties",
            "threshold",
            "generation",
            "session",
            "public_key",
        ] {
            assert_eq!(k[f], old[f], "{f}");
        }
    };
    // 1. A new party blames a dealer.
    let Job::Reshare(ReshareJob { session, .. }) = net.start_reshare("r2", &[0, 1, 2, 3], 2) else {
        panic!()
    };
    let f = net.reshare_report(
        1,
        "r2",
        session,
        Outcome::Failed {
            error: "deal of node2 fails its Feldman check".into(),
            culprits: vec![nid(2)],
            evidence: Vec::new(),
        },
    );
    let (res, jobs) = net.block(vec![f]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    assert!(
        matches!(&jobs[..], [Job::ReshareFailed { session: s, .. }] if *s == session),
        "{jobs:?}"
    );
    // A node restarted after the failure drops what it staged.
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let again = App::open(net._dir.path(), g, None).unwrap();
    assert!(
        matches!(&again.catch_up_jobs(&nid(1))[..], [Job::ReshareFailed { session: s, .. }] if *s == session),
        "{:?}",
        again.catch_up_jobs(&nid(1))
    );
    drop(again);
    let k = net.query("/key/r2").1;
    check_unchanged(&k);
    assert_eq!(k["reshare"]["status"], "ERROR");
    assert_eq!(k["reshare"]["culprits"], serde_json::json!(["node2"]));
    assert!(k["reshare"]["error"]
        .as_str()
        .unwrap()
        .contains("node1 reported"));
    // A late report of the ended attempt is refused.
    let late = net.reshare_report_unsequenced(0, "r2", session, ok_report(&pk, 1));
    assert_eq!(net.check(&late).code, 8, "{}", net.check(&late).log);
    // 2. The new parties disagree on the transcript.
    let Job::Reshare(ReshareJob { session, .. }) = net.start_reshare("r2", &[0, 1, 2], 2) else {
        panic!()
    };
    // (A report may only blame parties of the session.)
    let outsider = net.reshare_report_unsequenced(
        0,
        "r2",
        session,
        Outcome::Failed {
            error: "x".into(),
            culprits: vec![NodeId::new("stranger").unwrap()],
            evidence: Vec::new(),
        },
    );
    let r = net.check(&outsider);
    assert_eq!(r.code, 6, "{}", r.log);
    assert!(
        r.log.contains("culprit stranger is not one of"),
        "{}",
        r.log
    );
    let txs: Vec<Vec<u8>> = (0..3)
        .map(|i| net.reshare_report(i, "r2", session, ok_report(&pk, i as u8)))
        .collect();
    net.block(txs);
    let k = net.query("/key/r2").1;
    check_unchanged(&k);
    assert!(k["reshare"]["error"].as_str().unwrap().contains("disagree"));
    // 3. They agree on another public key.
    let Job::Reshare(ReshareJob { session, .. }) = net.start_reshare("r2", &[0, 1, 2], 2) else {
        panic!()
    };
    let txs: Vec<Vec<u8>> = (0..3)
        .map(|i| net.reshare_report(i, "r2", session, ok_report(&[5; 32], 1)))
        .collect();
    net.block(txs);
    let k = net.query("/key/r2").1;
    check_unchanged(&k);
    assert!(k["reshare"]["error"]
        .as_str()
        .unwrap()
        .contains("not the key's"));
    // 4. Nobody reports before the deadline.
    let Job::Reshare(ReshareJob { session, .. }) = net.start_reshare("r2", &[1, 2, 3], 3) else {
        panic!()
    };
    let mut ended = Vec::new();
    for _ in 0..6 {
        ended.extend(net.block(vec![]).1);
    }
    assert!(
        matches!(&ended[..], [Job::ReshareFailed { session: s, .. }] if *s == session),
        "{ended:?}"
    );
    let k = net.query("/key/r2").1;
    check_unchanged(&k);
    assert!(k["reshare"]["error"]
        .as_str()
        .unwrap()
        .contains("no report from node1, node2, node3"));
    assert_eq!(k["reshare"]["attempt"], 3);
}

#[test]
fn app_rejects_bad_reshare_requests_with_clear_errors() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[93; 32]);
    let pk = group.verifying_key().to_bytes().to_vec();
    let code = |net: &mut Net, tx: Vec<u8>| {
        let r = net.check(&tx);
        (r.code, r.log)
    };
    // Unknown key.
    let c0 = net.client.clone();
    let unsequenced = |net: &Net, id: &str| {
        net.tx_unsequenced(
            &c0,
            TxMsg::KeyReshare {
                key_id: KeyId::new(id).unwrap(),
                parties: vec![nid(0), nid(1)],
                threshold: 2,
            },
        )
    };
    let tx = unsequenced(&net, "nope");
    assert_eq!(code(&mut net, tx).0, 7);
    // A PENDING key.
    let tx = net.keygen("pend", 3);
    net.block(vec![tx]);
    let tx = unsequenced(&net, "pend");
    let (c, log) = code(&mut net, tx);
    assert_eq!(c, 8, "{log}");
    assert!(log.contains("only a READY key"), "{log}");
    net.ready_key("r3", &group);
    // Unknown party, party twice, threshold out of range.
    for (parties, t, want) in [
        (vec![0, 9], 2, "unknown party"),
        (vec![0, 0, 1], 2, "listed twice"),
        (vec![0, 1], 3, "out of range"),
        (vec![0, 1], 1, "out of range"),
    ] {
        let c = net.client.clone();
        let tx = net.tx_unsequenced(
            &c,
            TxMsg::KeyReshare {
                key_id: KeyId::new("r3").unwrap(),
                parties: parties.iter().map(|i| nid(*i)).collect(),
                threshold: t,
            },
        );
        let (c, log) = code(&mut net, tx);
        assert_eq!(c, 6, "{log}");
        assert!(log.contains(want), "{want}: {log}");
    }
    // An account without the keygen role, and a node.
    let so = net.signer_only.clone();
    let tx = net.tx_unsequenced(
        &so,
        TxMsg::KeyReshare {
            key_id: KeyId::new("r3").unwrap(),
            parties: vec![nid(0), nid(1)],
            threshold: 2,
        },
    );
    assert_eq!(code(&mut net, tx).0, 5);
    // One resharing at a time, and no deletion while it runs.
    let Job::Reshare(ReshareJob { session, .. }) = net.start_reshare("r3", &[0, 1, 2], 2) else {
        panic!()
    };
    let c0 = net.client.clone();
    let tx = net.tx_unsequenced(
        &c0,
        TxMsg::KeyReshare {
            key_id: KeyId::new("r3").unwrap(),
            parties: vec![nid(0), nid(1)],
            threshold: 2,
        },
    );
    let (c, log) = code(&mut net, tx);
    assert_eq!(c, 8, "{log}");
    assert!(log.contains("already being reshared"), "{log}");
    let tx = net.tx_unsequenced(
        &c0,
        TxMsg::KeyDelete {
            key_id: KeyId::new("r3").unwrap(),
        },
    );
    let (c, log) = code(&mut net, tx);
    assert_eq!(c, 8, "{log}");
    assert!(log.contains("being reshared"), "{log}");
    // Reports: wrong session, from an account, twice.
    let wrong = net.reshare_report_unsequenced(0, "r3", SessionId([7; 32]), ok_report(&pk, 1));
    assert_eq!(code(&mut net, wrong).0, 6);
    let acct = net.tx_unsequenced(
        &c0,
        TxMsg::ReshareResult {
            key_id: KeyId::new("r3").unwrap(),
            session,
            outcome: ok_report(&pk, 1),
        },
    );
    assert_eq!(code(&mut net, acct).0, 5);
    let once = net.reshare_report(0, "r3", session, ok_report(&pk, 1));
    net.block(vec![once]);
    let twice = net.reshare_report_unsequenced(0, "r3", session, ok_report(&pk, 1));
    let (c, log) = code(&mut net, twice);
    assert_eq!(c, 8, "{log}");
    assert!(log.contains("already reported"), "{log}");
}

#[test]
fn app_can_refresh_every_key_periodically() {
    let mut net = Net::with_refresh(4);
    let group = SigningKey::from_bytes(&[94; 32]);
    let pk = group.verifying_key().to_bytes().to_vec();
    net.ready_key("p1", &group);
    let ready_at = net.height;
    let mut jobs = Vec::new();
    while net.height < ready_at + 4 {
        jobs.extend(net.block(vec![]).1);
    }
    let [Job::Reshare(ReshareJob {
        session,
        new_parties,
        new_threshold,
        generation,
        ..
    })] = &jobs[..]
    else {
        panic!("{jobs:?}")
    };
    assert_eq!((new_parties.len(), *new_threshold, *generation), (4, 3, 2));
    assert_eq!(net.query("/key/p1").1["reshare"]["refresh"], true);
    let session = *session;
    let txs: Vec<Vec<u8>> = (0..4)
        .map(|i| net.reshare_report(i, "p1", session, ok_report(&pk, 2)))
        .collect();
    net.block(txs);
    let k = net.query("/key/p1").1;
    assert_eq!(
        (k["generation"].as_u64(), k["reshares"].as_u64()),
        (Some(2), Some(1))
    );
    // The next refresh comes 4 blocks after this one.
    let done_at = net.height;
    let mut jobs = Vec::new();
    while net.height < done_at + 4 {
        jobs.extend(net.block(vec![]).1);
    }
    assert!(
        matches!(&jobs[..], [Job::Reshare(ReshareJob { generation: 3, .. })]),
        "{jobs:?}"
    );
}

fn node_join(id: &str, key: &SigningKey, addr: &str) -> TxMsg {
    TxMsg::NodeJoin {
        node_id: NodeId::new(id).unwrap(),
        public_key: key.verifying_key().to_bytes(),
        p2p_addr: addr.into(),
    }
}

/// A signed tx whose NodeJoin carries raw wire fields (what `TxMsg` cannot express).
fn raw_node_join(key: &SigningKey, seq: u64, public_key: Vec<u8>, addr: &str) -> Vec<u8> {
    use prost::Message;
    use seqmpc_proto::wire;
    let body = wire::TxBody {
        chain_id: "test-chain".into(),
        sequence: seq,
        msg: Some(wire::tx_body::Msg::NodeJoin(wire::NodeJoin {
            node_id: "node7".into(),
            public_key,
            p2p_addr: addr.into(),
        })),
    }
    .encode_to_vec();
    let mut sb = seqmpc_proto::tx::TX_SIGN_PREFIX.to_vec();
    sb.extend_from_slice(&body);
    wire::Tx {
        body,
        signer: key.verifying_key().to_bytes().to_vec(),
        signature: key.sign(&sb).to_bytes().to_vec(),
    }
    .encode_to_vec()
}

#[test]
fn app_can_admit_a_node_with_node_join_and_journal_it() {
    let mut net = Net::new();
    let new_key = SigningKey::from_bytes(&[60; 32]);
    let c = net.client.clone();
    let tx = net.tx(&c, node_join("node4", &new_key, "/ip4/127.0.0.1/tcp/30004"));
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let ev = res[0]
        .events
        .iter()
        .find(|e| e.r#type == "node_joined")
        .expect("node_joined event");
    assert!(ev
        .attributes
        .iter()
        .any(|a| a.key == "node" && a.value == "node4"));
    assert_eq!(
        jobs,
        vec![Job::NodeJoined {
            node: nid(4),
            public_key: new_key.verifying_key().to_bytes(),
            p2p_addr: "/ip4/127.0.0.1/tcp/30004".into(),
        }]
    );
    let (_, nodes) = net.query("/nodes");
    let ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node0", "node1", "node2", "node3", "node4"]);
    // The block's write set (journal, hence app hash) holds the new state key.
    let journal =
        std::fs::read_to_string(net._dir.path().join(seqmpc_abci::abci::persist::JOURNAL)).unwrap();
    let line = journal.lines().last().unwrap();
    assert!(line.contains("\"node/node4\""), "{line}");
    assert!(
        line.contains(&hex::encode(new_key.verifying_key().to_bytes())),
        "{line}"
    );

    // The new node signs like a node, and is a party of keys for every registered node.
    let hb = net.tx(&new_key, TxMsg::Heartbeat);
    let tx = net.keygen("k5", 3);
    let (res, jobs) = net.block(vec![hb, tx]);
    assert!(res.iter().all(|r| r.code == 0), "{res:?}");
    let Some(Job::KeyGen { parties, .. }) = jobs.first() else {
        panic!("{jobs:?}")
    };
    assert!(parties.contains(&nid(4)), "{parties:?}");

    // A restart (snapshot + journal replay) keeps it, with the same app hash.
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let again = App::open(net._dir.path(), g, None).unwrap();
    assert_eq!(
        again.info().last_block_app_hash,
        net.app.info().last_block_app_hash
    );
    let b = again.query(pb::RequestQuery {
        path: "/nodes".into(),
        ..Default::default()
    });
    let a = net.app.query(pb::RequestQuery {
        path: "/nodes".into(),
        ..Default::default()
    });
    assert_eq!(a.value, b.value);
}

#[test]
fn app_rejects_node_joins_that_are_unauthorized_duplicate_or_malformed() {
    let mut net = Net::new();
    let new_key = SigningKey::from_bytes(&[60; 32]);
    let addr = "/ip4/127.0.0.1/tcp/30004";
    let expect = |net: &mut Net, key: &SigningKey, msg: TxMsg, code: u32, needle: &str| {
        let tx = net.tx_unsequenced(key, msg);
        let r = net.check(&tx);
        assert_eq!(r.code, code, "{}", r.log);
        assert!(r.log.contains(needle), "{:?} lacks {needle:?}", r.log);
    };
    // Unauthorized: an account without the registry role, and a node.
    let s = net.signer_only.clone();
    expect(
        &mut net,
        &s,
        node_join("node4", &new_key, addr),
        5,
        "role Registry missing",
    );
    let n0 = net.nodes[0].clone();
    expect(
        &mut net,
        &n0,
        node_join("node4", &new_key, addr),
        5,
        "may not admit nodes",
    );
    // Duplicates: a registered id, a node's key, an account's key.
    let c = net.client.clone();
    expect(
        &mut net,
        &c,
        node_join("node2", &new_key, addr),
        8,
        "already in the node registry",
    );
    expect(
        &mut net,
        &c,
        node_join("node4", &n0, addr),
        8,
        "already registered for node node0",
    );
    expect(
        &mut net,
        &c,
        node_join("node4", &s, addr),
        8,
        "key of account \"signer\"",
    );
    // Malformed: stateless checks at decode (code 2).
    expect(
        &mut net,
        &c,
        node_join("node4", &new_key, "127.0.0.1:30004"),
        2,
        "not a multiaddr",
    );
    expect(
        &mut net,
        &c,
        node_join("node4", &new_key, ""),
        2,
        "p2p_addr",
    );
    let seq = 0;
    for (pk, needle) in [
        (vec![7u8; 31], "must be 32 bytes"),
        (
            {
                let mut b = vec![0u8; 32];
                b[0] = 2;
                b
            },
            "not a valid ed25519 point",
        ),
        (
            {
                let mut b = vec![0u8; 32];
                b[0] = 1;
                b
            },
            "small-order",
        ),
    ] {
        let r = net.check(&raw_node_join(&c, seq, pk, addr));
        assert_eq!(r.code, 2, "{}", r.log);
        assert!(r.log.contains(needle), "{:?} lacks {needle:?}", r.log);
    }
    // The same checks hold at delivery: the rejected join changes no registry entry, and a
    // second join of the same id in one block loses to the first.
    let a = net.tx(&c, node_join("node4", &new_key, addr));
    let b = net.tx(
        &c,
        node_join("node4", &SigningKey::from_bytes(&[61; 32]), addr),
    );
    let (res, jobs) = net.block(vec![a, b]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    assert_eq!(res[1].code, 8, "{}", res[1].log);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (_, nodes) = net.query("/nodes");
    assert_eq!(nodes.as_array().unwrap().len(), 5);
}

/// node0's 3-of-4 FROST-Ed25519 DKG round-1 package and its round-2 package to node1 (the
/// committee's identifiers are positions + 1), each in a p2p envelope of `session` signed by
/// `signer` as sent from node0 to node1.
fn dkg_evidence(
    session: SessionId,
    signer: &SigningKey,
    tamper_share: bool,
) -> Vec<seqmpc_proto::tx::SignedMessage> {
    use ed25519_dalek::Signer as _;
    use frost_ed25519::keys::dkg;
    use prost::Message as _;
    use seqmpc_proto::wire::{self, p2p_envelope::Payload};
    let id = |i: u16| frost_ed25519::Identifier::try_from(i).unwrap();
    let rng = rand::rngs::OsRng;
    let mut secrets = std::collections::BTreeMap::new();
    let mut round1 = std::collections::BTreeMap::new();
    for i in 1..=4 {
        let (s, p) = dkg::part1(id(i), 4, 3, rng).unwrap();
        secrets.insert(i, s);
        round1.insert(id(i), p);
    }
    let mine = round1.remove(&id(1)).unwrap();
    let (_, round2) = dkg::part2(secrets.remove(&1).unwrap(), &round1).unwrap();
    let mut share = round2[&id(2)].serialize().unwrap();
    if tamper_share {
        *share.last_mut().unwrap() ^= 1;
    }
    [
        Payload::DkgRound1(wire::DkgRound1 {
            package: mine.serialize().unwrap(),
        }),
        Payload::DkgRound2(wire::DkgRound2 { package: share }),
    ]
    .into_iter()
    .map(|payload| {
        let envelope = wire::P2pEnvelope {
            session: session.0.to_vec(),
            payload: Some(payload),
        }
        .encode_to_vec();
        let digest = wire::p2p_signing_digest("node0", "node1", &envelope);
        seqmpc_proto::tx::SignedMessage {
            from: nid(0),
            to: nid(1),
            envelope,
            signature: signer.sign(&digest).to_bytes(),
        }
    })
    .collect()
}

#[test]
fn keygen_failure__should_record_blame_proven_by_the_culprits_signed_messages() {
    let mut net = Net::new();
    let tx = net.keygen("k", 3);
    let (_, jobs) = net.block(vec![tx]);
    let Job::KeyGen { session, .. } = jobs[0].clone() else {
        panic!("{jobs:?}")
    };
    let report = |net: &mut Net, evidence, sequenced: bool| {
        let k = net.nodes[1].clone();
        let msg = TxMsg::KeyGenResult {
            key_id: KeyId::new("k").unwrap(),
            session,
            outcome: Outcome::Failed {
                error: "node0's share fails its Feldman check".into(),
                culprits: vec![nid(0)],
                evidence,
            },
        };
        if sequenced {
            net.tx(&k, msg)
        } else {
            net.tx_unsequenced(&k, msg)
        }
    };
    // Forged: node1 cannot sign as node0.
    let forger = net.nodes[1].clone();
    let forged = report(&mut net, dkg_evidence(session, &forger, true), false);
    let r = net.check(&forged);
    assert_eq!(r.code, 6, "{}", r.log);
    assert!(
        r.log.contains("not signed by node0's node key"),
        "{}",
        r.log
    );
    // Honest messages quoted as evidence prove nothing, but a claim is still a claim.
    let honest = net.nodes[0].clone();
    let claim = report(&mut net, dkg_evidence(session, &honest, false), false);
    assert_eq!(net.check(&claim).code, 0, "{}", net.check(&claim).log);
    // node0's own signed share that fails the Feldman check: proven.
    let proof = report(&mut net, dkg_evidence(session, &honest, true), true);
    let (res, _) = net.block(vec![proof]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let k = net.query("/key/k").1;
    assert_eq!(k["status"], "ERROR");
    assert_eq!(k["culprits"], serde_json::json!(["node0"]));
    let proven = &k["proven_blame"];
    assert_eq!(proven[0]["culprit"], "node0", "{k}");
    assert_eq!(proven[0]["reporter"], "node1", "{k}");
    assert!(
        proven[0]["reason"].as_str().unwrap().contains("Feldman"),
        "{k}"
    );
    assert_eq!(proven_blames(&mut net), [1, 0, 0, 0]);
}

/// Each registry node's count of sessions that ended with a blame of it the chain verified.
fn proven_blames(net: &mut Net) -> Vec<u64> {
    let (_, nodes) = net.query("/nodes");
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["proven_blames"].as_u64().unwrap_or(0))
        .collect()
}

/// A FROST-Ed25519 signing whose failure report quotes a signer's signed signature share and
/// the signing package it names: the chain checks the share against the signer's verifying
/// share in the key's public key package (reported at keygen) and records the proven blame.
#[test]
fn sign_failure__should_record_blame_proven_by_a_signed_bad_signature_share() {
    use ed25519_dalek::Signer as _;
    use frost_ed25519::keys::{IdentifierList, KeyPackage};
    use prost::Message as _;
    use seqmpc_proto::wire::{self, p2p_envelope::Payload};
    let mut net = Net::new();
    // A 3-of-4 key from frost's trusted dealer (identifiers: committee positions + 1), with
    // its real public key package in every keygen report.
    let ids: Vec<_> = (1..=4u16)
        .map(|i| frost_ed25519::Identifier::try_from(i).unwrap())
        .collect();
    let (shares, pkp) = frost_ed25519::keys::generate_with_dealer(
        4,
        3,
        IdentifierList::Custom(&ids),
        rand::rngs::OsRng,
    )
    .unwrap();
    let public_key = pkp.verifying_key().serialize().unwrap();
    net.keygen_reporting("k", &public_key, &pkp.serialize().unwrap());
    let k = net.query("/key/k").1;
    assert_eq!(k["status"], "READY", "{k}");
    assert_eq!(
        k["public_key_package"],
        hex::encode(pkp.serialize().unwrap())
    );

    let c = net.client.clone();
    let message = b"pay 1".to_vec();
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("k").unwrap(),
            request_id: RequestId::new("r").unwrap(),
            message: message.clone(),
            prehashed: false,
        },
    );
    let (_, jobs) = net.block(vec![tx]);
    let Job::Sign {
        session, signers, ..
    } = jobs[0].clone()
    else {
        panic!("{jobs:?}")
    };
    let index = |n: &NodeId| n.as_str()["node".len()..].parse::<usize>().unwrap();
    let (aggregator, culprit) = (index(&signers[0]), index(&signers[1]));
    // Every signer's commitments, the package, and the culprit's share of it (or a wrong one).
    let mut nonces = std::collections::BTreeMap::new();
    let mut commitments = std::collections::BTreeMap::new();
    for s in &signers {
        let id = ids[index(s)];
        let (n, c) =
            frost_ed25519::round1::commit(shares[&id].signing_share(), &mut rand::rngs::OsRng);
        nonces.insert(id, n);
        commitments.insert(id, c);
    }
    let package = frost_ed25519::SigningPackage::new(commitments, &message);
    let package_bytes = package.serialize().unwrap();
    let culprit_id = ids[culprit];
    let good_share = frost_ed25519::round2::sign(
        &package,
        &nonces[&culprit_id],
        &KeyPackage::try_from(shares[&culprit_id].clone()).unwrap(),
    )
    .unwrap()
    .serialize();
    let quote = |share: Vec<u8>, signer: &SigningKey| {
        let envelope = wire::P2pEnvelope {
            session: session.0.to_vec(),
            payload: Some(Payload::SignRound2(wire::SignRound2 {
                share,
                package_hash: seqmpc_module::protocol::frost_sign::package_hash(1, &package_bytes)
                    .to_vec(),
            })),
        }
        .encode_to_vec();
        let (from, to) = (nid(culprit), nid(aggregator));
        let digest = wire::p2p_signing_digest(from.as_str(), to.as_str(), &envelope);
        seqmpc_proto::tx::SignedMessage {
            from,
            to,
            envelope,
            signature: signer.sign(&digest).to_bytes(),
        }
    };
    let report = |net: &mut Net, evidence, sequenced: bool| {
        let msg = TxMsg::SignResult {
            request_id: RequestId::new("r").unwrap(),
            session,
            outcome: Outcome::Failed {
                error: "FROST aggregate: Invalid signature share.".into(),
                culprits: vec![nid(culprit)],
                evidence,
            },
            signing_package: package_bytes.clone(),
        };
        let k = net.nodes[aggregator].clone();
        if sequenced {
            net.tx(&k, msg)
        } else {
            net.tx_unsequenced(&k, msg)
        }
    };
    let culprit_key = net.nodes[culprit].clone();
    let aggregator_key = net.nodes[aggregator].clone();
    // Forged: the aggregator cannot sign as the culprit.
    let forged = report(&mut net, vec![quote(vec![1; 32], &aggregator_key)], false);
    let r = net.check(&forged);
    assert_eq!(r.code, 6, "{}", r.log);
    assert!(r.log.contains("node key"), "{}", r.log);
    // The culprit's honest share proves nothing (a claim stays a claim).
    let claim = report(&mut net, vec![quote(good_share, &culprit_key)], false);
    assert_eq!(net.check(&claim).code, 0, "{}", net.check(&claim).log);
    // Its signed share that is not its share: proven.
    let proof = report(&mut net, vec![quote(vec![1; 32], &culprit_key)], true);
    let (res, jobs) = net.block(vec![proof]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let s = net.query("/sign/r").1;
    // The proven culprit is left out and another attempt starts at once without it.
    assert_eq!(s["status"], "PENDING", "{s}");
    assert_eq!(s["attempt"], 1, "{s}");
    assert_eq!(
        s["excluded"],
        serde_json::json!([nid(culprit).as_str()]),
        "{s}"
    );
    let retry: Vec<&Vec<NodeId>> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Sign {
                signers,
                session: s2,
                ..
            } if *s2 != session => Some(signers),
            _ => None,
        })
        .collect();
    assert_eq!(retry.len(), 1, "{jobs:?}");
    assert_eq!(retry[0].len(), 3);
    assert!(!retry[0].contains(&nid(culprit)), "{retry:?}");
    let proven = &s["proven_blame"];
    assert_eq!(proven[0]["culprit"], nid(culprit).as_str(), "{s}");
    assert_eq!(proven[0]["reporter"], nid(aggregator).as_str(), "{s}");
    assert!(
        proven[0]["reason"]
            .as_str()
            .unwrap()
            .contains("fails verification"),
        "{s}"
    );
    let mut expected = vec![0; 4];
    expected[culprit] = 1;
    assert_eq!(proven_blames(&mut net), expected);
}

/// A FROST key becomes READY only with a public key package every party reports, of the
/// reported group key, with a verifying share for each party.
#[test]
fn app_ends_a_frost_keygen_in_error_without_a_usable_public_key_package() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[33; 32]).verifying_key().to_bytes();
    let other = SigningKey::from_bytes(&[34; 32]).verifying_key().to_bytes();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("none", Vec::new(), "does not decode"),
        (
            "other",
            package_for(Scheme::FrostEd25519, &other),
            "another group key",
        ),
        (
            "cut",
            {
                let mut p = package_for(Scheme::FrostEd25519, &group);
                p.truncate(p.len() - 1);
                p
            },
            "does not decode",
        ),
    ];
    for (id, package, needle) in cases {
        net.keygen_reporting(id, &group, &package);
        let k = net.query(&format!("/key/{id}")).1;
        assert_eq!(k["status"], "ERROR", "{id}: {k}");
        assert!(k["error"].as_str().unwrap().contains(needle), "{id}: {k}");
    }
}

/// A signing request and its first attempt's job.
fn sign_request(net: &mut Net, key: &str, rid: &str, message: &[u8]) -> (SessionId, Vec<NodeId>) {
    let c = net.client.clone();
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new(key).unwrap(),
            request_id: RequestId::new(rid).unwrap(),
            message: message.to_vec(),
            prehashed: false,
        },
    );
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let Some(Job::Sign {
        session, signers, ..
    }) = jobs.into_iter().next()
    else {
        panic!("no sign job")
    };
    (session, signers)
}

fn sign_report(
    net: &mut Net,
    by: &NodeId,
    rid: &str,
    session: SessionId,
    outcome: Outcome<Vec<u8>>,
) -> pb::ExecTxResult {
    let key = net.nodes[by.as_str()[4..].parse::<usize>().unwrap()].clone();
    let tx = net.tx(
        &key,
        TxMsg::SignResult {
            request_id: RequestId::new(rid).unwrap(),
            session,
            outcome,
            signing_package: Vec::new(),
        },
    );
    let (mut res, _) = net.block(vec![tx]);
    res.remove(0)
}

fn silent(culprit: &NodeId) -> Outcome<Vec<u8>> {
    Outcome::Failed {
        error: format!("timed out: nothing received from {culprit}"),
        culprits: vec![culprit.clone()],
        evidence: Vec::new(),
    }
}

#[test]
fn app_can_retry_a_signing_without_the_signer_its_peers_name_and_take_an_earlier_attempts_signature(
) {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[78; 32]);
    net.ready_key("k", &group);
    let (session, signers) = sign_request(&mut net, "k", "r", b"hi");
    let (a, b, dead) = (signers[0].clone(), signers[1].clone(), signers[2].clone());
    // One report names the dead signer: not yet a majority of the others.
    let r = sign_report(&mut net, &a, "r", session, silent(&dead));
    assert_eq!(r.code, 0, "{}", r.log);
    let s = net.query("/sign/r").1;
    assert_eq!(
        (s["status"].as_str(), s["attempt"].as_u64()),
        (Some("PENDING"), None),
        "{s}"
    );
    // The second: every other signer names it, so attempt 1 starts without it.
    let key = net.nodes[b.as_str()[4..].parse::<usize>().unwrap()].clone();
    let tx = net.tx(
        &key,
        TxMsg::SignResult {
            request_id: RequestId::new("r").unwrap(),
            session,
            outcome: silent(&dead),
            signing_package: Vec::new(),
        },
    );
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let s = net.query("/sign/r").1;
    assert_eq!(s["status"], "PENDING", "{s}");
    assert_eq!(s["attempt"], 1, "{s}");
    assert_eq!(s["excluded"], serde_json::json!([dead.as_str()]), "{s}");
    let Some(Job::Sign {
        session: retry,
        signers: again,
        ..
    }) = jobs.into_iter().next()
    else {
        panic!("no retry job")
    };
    assert_ne!(retry, session);
    assert_eq!(again.len(), 3);
    assert!(!again.contains(&dead), "{again:?}");
    // A late failure report of the attempt before still counts, but one lone claim leaves no
    // one out.
    let late = sign_report(&mut net, &a, "r", session, silent(&b));
    assert_eq!(late.code, 0, "{}", late.log);
    let s = net.query("/sign/r").1;
    assert_eq!(s["excluded"], serde_json::json!([dead.as_str()]), "{s}");
    assert_eq!(s["attempt"], 1, "{s}");
    // A valid signature is a valid signature, whichever attempt made it; the request's end
    // goes to the nodes as a job, so that its signers drop their backups.
    let sig = group.sign(b"hi").to_bytes().to_vec();
    let ok = |net: &mut Net, by: &NodeId| {
        let key = net.nodes[by.as_str()[4..].parse::<usize>().unwrap()].clone();
        net.tx(
            &key,
            TxMsg::SignResult {
                request_id: RequestId::new("r").unwrap(),
                session,
                outcome: Outcome::Ok(sig.clone()),
                signing_package: Vec::new(),
            },
        )
    };
    let tx = ok(&mut net, &a);
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    assert_eq!(net.query("/sign/r").1["status"], "DONE");
    assert_eq!(net.query("/sign/r").1["submitted_by"], a.as_str());
    let ended = RequestId::new("r").unwrap();
    assert!(
        matches!(&jobs[..], [Job::SignEnded { request_id }] if *request_id == ended),
        "{jobs:?}"
    );
    // A backup that comes after it is a no-op: accepted, nothing changes, no job.
    let tx = ok(&mut net, &b);
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    assert!(jobs.is_empty(), "{jobs:?}");
    assert_eq!(net.query("/sign/r").1["submitted_by"], a.as_str());
}

#[test]
fn app_leaves_out_at_the_attempt_deadline_only_the_silent_signer_that_the_reports_name() {
    let mut net = Net::with_attempts();
    let group = SigningKey::from_bytes(&[76; 32]);
    net.ready_key("k", &group);
    let (session, signers) = sign_request(&mut net, "k", "r", b"late");
    let (a, late, dead) = (signers[0].clone(), signers[1].clone(), signers[2].clone());
    // One report names the dead signer; the other live signer's report has not landed when the
    // attempt's 10 blocks pass (a loaded machine).
    let r = sign_report(&mut net, &a, "r", session, silent(&dead));
    assert_eq!(r.code, 0, "{}", r.log);
    let mut retry = None;
    for _ in 0..11 {
        let (_, jobs) = net.block(Vec::new());
        retry = jobs.into_iter().find_map(|j| match j {
            Job::Sign { signers, .. } => Some(signers),
            _ => None,
        });
        if retry.is_some() {
            break;
        }
    }
    let s = net.query("/sign/r").1;
    let again = retry.unwrap_or_else(|| panic!("no second attempt at the attempt deadline: {s}"));
    assert_eq!(s["attempt"], 1, "{s}");
    // Only the signer the report names is left out: the late one is not taken for silent.
    assert_eq!(s["excluded"], serde_json::json!([dead.as_str()]), "{s}");
    // (The dead one is drawn again only for want of live others: no node here sends
    // heartbeats.)
    assert!(again.contains(&late), "{again:?}");
}

#[test]
fn app_tells_the_nodes_when_a_signing_ends_in_error_at_its_deadline() {
    let mut net = Net::with_attempts();
    let group = SigningKey::from_bytes(&[74; 32]);
    net.ready_key("k", &group);
    sign_request(&mut net, "k", "r", b"never signed");
    // No signer ever answers: attempts follow each other until the request's deadline.
    let ended = RequestId::new("r").unwrap();
    let mut ended_at = None;
    for i in 0..120 {
        let (_, jobs) = net.block(Vec::new());
        if jobs
            .iter()
            .any(|j| matches!(j, Job::SignEnded { request_id } if *request_id == ended))
        {
            ended_at = Some(i);
            break;
        }
    }
    let s = net.query("/sign/r").1;
    assert!(ended_at.is_some(), "no SignEnded job: {s}");
    assert_eq!(s["status"], "ERROR", "{s}");
}

#[test]
fn app_counts_late_failure_reports_of_the_attempt_before_against_the_silent_signer() {
    let mut net = Net::with_attempts();
    let group = SigningKey::from_bytes(&[75; 32]);
    net.ready_key("k", &group);
    let (first, signers) = sign_request(&mut net, "k", "r", b"late reports");
    let (a, b, dead) = (signers[0].clone(), signers[1].clone(), signers[2].clone());
    // Nobody reports within the attempt's 10 blocks (loaded signers): the next attempt starts
    // and leaves no one out.
    let mut second = None;
    for _ in 0..11 {
        let (_, jobs) = net.block(Vec::new());
        second = jobs.into_iter().find_map(|j| match j {
            Job::Sign { signers, .. } => Some(signers),
            _ => None,
        });
        if second.is_some() {
            break;
        }
    }
    let second = second.expect("no second attempt");
    let s = net.query("/sign/r").1;
    assert_eq!(s["attempt"], 1, "{s}");
    assert!(s.get("excluded").is_none(), "{s}");
    // The two live signers' reports of attempt 0 come now: they still count.
    let r = sign_report(&mut net, &a, "r", first, silent(&dead));
    assert_eq!(
        r.code, 0,
        "a late report of the attempt before is taken: {}",
        r.log
    );
    let r = sign_report(&mut net, &b, "r", first, silent(&dead));
    assert_eq!(r.code, 0, "{}", r.log);
    let s = net.query("/sign/r").1;
    assert_eq!(s["excluded"], serde_json::json!([dead.as_str()]), "{s}");
    // The ended attempt shows its signers and both reports, late as they were.
    let ended = &s["ended_attempts"][0];
    assert_eq!(ended["attempt"], 0, "{s}");
    assert_eq!(ended["session"], first.to_string(), "{s}");
    assert_eq!(
        ended["claims"][a.as_str()],
        serde_json::json!([dead.as_str()]),
        "{s}"
    );
    assert_eq!(
        ended["claims"][b.as_str()],
        serde_json::json!([dead.as_str()]),
        "{s}"
    );
    // If attempt 1 has the signer they name, attempt 2 starts at once.
    let expected = if second.contains(&dead) { 2 } else { 1 };
    assert_eq!(s["attempt"], expected, "{s}");
    // A report of attempt 0 from a node that was not its signer (or, after attempt 2
    // started, of an attempt older than the one before) is refused.
    let others: Vec<SigningKey> = net.nodes.clone();
    let outsider = (0..4)
        .map(|i| NodeId::new(format!("node{i}")).unwrap())
        .find(|n| !signers.contains(n))
        .unwrap();
    let key = others[outsider.as_str()[4..].parse::<usize>().unwrap()].clone();
    let tx = net.tx(
        &key,
        TxMsg::SignResult {
            request_id: RequestId::new("r").unwrap(),
            session: first,
            outcome: silent(&dead),
            signing_package: Vec::new(),
        },
    );
    let (res, _) = net.block(vec![tx]);
    assert_ne!(res[0].code, 0, "a report of a non-signer was taken");
}

#[test]
fn app_leaves_out_at_once_a_signer_that_names_itself_and_tells_signers_the_keys_generation() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[77; 32]);
    net.ready_key("k", &group);
    let key = net.query("/key/k").1;
    let c = net.client.clone();
    let tx = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("k").unwrap(),
            request_id: RequestId::new("r").unwrap(),
            message: b"hi".to_vec(),
            prehashed: false,
        },
    );
    let (_, jobs) = net.block(vec![tx]);
    let Some(Job::Sign {
        session,
        signers,
        key_version,
        ..
    }) = jobs.into_iter().next()
    else {
        panic!("no sign job")
    };
    // Every signer learns the generation the chain signs with.
    assert_eq!(key_version.generation, key["generation"].as_u64().unwrap());
    assert_eq!(
        key_version.session.to_string(),
        key["session"].as_str().unwrap()
    );
    // One signer's share is stale: it names itself, and attempt 1 starts in that block without
    // it, although no one else reported yet.
    let stale = signers[1].clone();
    let r = Outcome::Failed {
        error: "cannot take part: local share of k is generation 0".into(),
        culprits: vec![stale.clone()],
        evidence: Vec::new(),
    };
    let node = net.nodes[stale.as_str()[4..].parse::<usize>().unwrap()].clone();
    let tx = net.tx(
        &node,
        TxMsg::SignResult {
            request_id: RequestId::new("r").unwrap(),
            session,
            outcome: r,
            signing_package: Vec::new(),
        },
    );
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let s = net.query("/sign/r").1;
    assert_eq!(
        (s["status"].as_str(), s["attempt"].as_u64()),
        (Some("PENDING"), Some(1)),
        "{s}"
    );
    assert_eq!(s["excluded"], serde_json::json!([stale.as_str()]), "{s}");
    let Some(Job::Sign { signers: again, .. }) = jobs.into_iter().next() else {
        panic!("no retry job")
    };
    assert!(!again.contains(&stale), "{again:?}");
    // Naming itself proves nothing against it.
    assert!(s.get("proven_blame").is_none(), "{s}");
}

#[test]
fn app_rejects_a_lone_false_claim_as_a_reason_to_end_a_signing() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[79; 32]);
    net.ready_key("k", &group);
    let (session, signers) = sign_request(&mut net, "k", "r", b"yo");
    let (liar, victim, honest) = (&signers[0], &signers[1], &signers[2]);
    let r = sign_report(&mut net, liar, "r", session, silent(victim));
    assert_eq!(r.code, 0, "{}", r.log);
    let s = net.query("/sign/r").1;
    assert_eq!(s["status"], "PENDING", "{s}");
    assert!(s.get("excluded").is_none(), "{s}");
    let sig = group.sign(b"yo").to_bytes().to_vec();
    let done = sign_report(&mut net, honest, "r", session, Outcome::Ok(sig));
    assert_eq!(done.code, 0, "{}", done.log);
    assert_eq!(net.query("/sign/r").1["status"], "DONE");
}

/// A CGGMP24 signer that withholds a round from one honest signer only makes that one look a
/// round behind to every other signer: with its own claim, a majority names its victim. The
/// victim names it back, and a pair that names each other steps aside together.
#[test]
fn app_leaves_out_both_signers_that_name_each_other_so_a_withholding_signer_cannot_frame_one() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[73; 32]);
    net.ready_key("k", &group);
    let (first, signers) = sign_request(&mut net, "k", "r", b"framed");
    let (honest, victim, liar) = (&signers[0], &signers[1], &signers[2]);
    // The liar names its victim first: one claim, no majority.
    let r = sign_report(&mut net, liar, "r", first, silent(victim));
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(net.query("/sign/r").1.get("excluded").is_none());
    // The honest signer, a round ahead of the victim, names it too: a majority, so attempt 1
    // starts without the victim.
    let r = sign_report(&mut net, honest, "r", first, silent(victim));
    assert_eq!(r.code, 0, "{}", r.log);
    let s = net.query("/sign/r").1;
    assert_eq!(s["attempt"], 1, "{s}");
    assert_eq!(s["excluded"], serde_json::json!([victim.as_str()]), "{s}");
    // The victim's report of attempt 0 names the liar, which named it: both step aside.
    let r = sign_report(&mut net, victim, "r", first, silent(liar));
    assert_eq!(r.code, 0, "{}", r.log);
    let s = net.query("/sign/r").1;
    let mut pair = vec![victim.as_str(), liar.as_str()];
    pair.sort();
    assert_eq!(s["excluded"], serde_json::json!(pair), "{s}");
    assert!(
        s["excluded"]
            .as_array()
            .is_some_and(|e| !e.iter().any(|n| n == honest.as_str())),
        "{s}"
    );
    // Nothing is proven against either: they are only drawn last.
    assert!(s.get("proven_blame").is_none(), "{s}");
    assert_eq!(s["status"], "PENDING", "{s}");
}

/// Two signers that name each other, and a third that names neither: once all three have
/// reported, both of the pair step aside, and the next attempt holds at most one of them.
#[test]
fn app_leaves_out_two_signers_that_name_each_other_once_every_signer_reported() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[72; 32]);
    net.ready_key("k", &group);
    let (first, signers) = sign_request(&mut net, "k", "r", b"dispute");
    let (a, b, c) = (&signers[0], &signers[1], &signers[2]);
    for (by, named) in [(a, b), (b, a)] {
        let r = sign_report(&mut net, by, "r", first, silent(named));
        assert_eq!(r.code, 0, "{}", r.log);
        let s = net.query("/sign/r").1;
        assert!(
            s.get("excluded").is_none(),
            "not every signer reported: {s}"
        );
    }
    let key = net.nodes[c.as_str()[4..].parse::<usize>().unwrap()].clone();
    let stuck = Outcome::Failed {
        error: "timed out".into(),
        culprits: Vec::new(),
        evidence: Vec::new(),
    };
    let tx = net.tx(
        &key,
        TxMsg::SignResult {
            request_id: RequestId::new("r").unwrap(),
            session: first,
            outcome: stuck,
            signing_package: Vec::new(),
        },
    );
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    let s = net.query("/sign/r").1;
    assert_eq!(s["attempt"], 1, "{s}");
    let mut pair = vec![a.as_str(), b.as_str()];
    pair.sort();
    assert_eq!(s["excluded"], serde_json::json!(pair), "{s}");
    // Four nodes, threshold 3: two remain, so one of the pair is drawn again, never both.
    let Some(Job::Sign { signers: again, .. }) = jobs.into_iter().next() else {
        panic!("no retry job")
    };
    assert_eq!(again.len(), 3, "{again:?}");
    assert!(!(again.contains(a) && again.contains(b)), "{again:?}");
}

/// A signer silent towards every other names them all for the round it never got, and each
/// names it back: it alone steps aside (it is in two pairs, each of them in one).
#[test]
fn app_leaves_out_only_the_signer_that_every_other_names_and_that_names_them_all() {
    let mut net = Net::new();
    let group = SigningKey::from_bytes(&[71; 32]);
    net.ready_key("k", &group);
    let (first, signers) = sign_request(&mut net, "k", "r", b"mute");
    let (a, mute, b) = (&signers[0], &signers[1], &signers[2]);
    let key = net.nodes[mute.as_str()[4..].parse::<usize>().unwrap()].clone();
    let tx = net.tx(
        &key,
        TxMsg::SignResult {
            request_id: RequestId::new("r").unwrap(),
            session: first,
            outcome: Outcome::Failed {
                error: "timed out: nothing received".into(),
                culprits: vec![a.clone(), b.clone()],
                evidence: Vec::new(),
            },
            signing_package: Vec::new(),
        },
    );
    let (res, _) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    for by in [a, b] {
        let r = sign_report(&mut net, by, "r", first, silent(mute));
        assert_eq!(r.code, 0, "{}", r.log);
    }
    let s = net.query("/sign/r").1;
    assert_eq!(s["attempt"], 1, "{s}");
    assert_eq!(s["excluded"], serde_json::json!([mute.as_str()]), "{s}");
}

// Who may move a key (issue 14, item 1).

impl Net {
    /// Checks `msg` signed by `key` (not delivered): its code and log.
    fn check_as(&mut self, key: &SigningKey, msg: TxMsg) -> (u32, String) {
        let tx = self.tx_unsequenced(key, msg);
        let r = self.check(&tx);
        (r.code, r.log)
    }

    /// Delivers `msg` signed by `key` in a block of its own: its result and the block's jobs.
    fn deliver_as(&mut self, key: &SigningKey, msg: TxMsg) -> (pb::ExecTxResult, Vec<Job>) {
        let tx = self.tx(key, msg);
        let (mut res, jobs) = self.block(vec![tx]);
        (res.remove(0), jobs)
    }

    fn proposal(&self, id: &str) -> Value {
        let (code, v) = self.query(&format!("/proposal/{id}"));
        assert_eq!(code, 0, "{v}");
        v
    }

    /// The id of the only open (PENDING or APPROVED) proposal.
    fn open_proposal(&self) -> String {
        let (_, v) = self.query("/proposals");
        let open: Vec<&Value> = v["proposals"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"] == "PENDING" || p["status"] == "APPROVED")
            .collect();
        assert_eq!(open.len(), 1, "{v}");
        open[0]["id"].as_str().unwrap().to_owned()
    }
}

fn sign_msg(key_id: &str, request_id: &str) -> TxMsg {
    TxMsg::KeySign {
        key_id: KeyId::new(key_id).unwrap(),
        request_id: RequestId::new(request_id).unwrap(),
        message: b"m".to_vec(),
        prehashed: false,
    }
}

fn reshare_msg(key_id: &str, parties: &[usize], t: u32) -> TxMsg {
    TxMsg::KeyReshare {
        key_id: KeyId::new(key_id).unwrap(),
        parties: parties.iter().map(|i| nid(*i)).collect(),
        threshold: t,
    }
}

fn vote(id: &str, cancel: bool) -> TxMsg {
    TxMsg::ProposalVote {
        proposal_id: id.into(),
        cancel,
    }
}

#[test]
fn app_lets_only_a_keys_owner_and_the_admins_it_names_sign_delete_or_reshare_it() {
    let mut net = Net::new();
    net.ready_key("own", &SigningKey::from_bytes(&[81; 32]));
    let (client, other, signer) = (net.client.clone(), other(), net.signer_only.clone());
    // Another account with every role may not use the key.
    for (msg, what) in [
        (sign_msg("own", "o1"), "sign with"),
        (
            TxMsg::KeyDelete {
                key_id: KeyId::new("own").unwrap(),
            },
            "delete",
        ),
        (reshare_msg("own", &[0, 1, 2], 2), "reshare"),
        (reshare_msg("own", &[0, 1, 2, 3], 3), "reshare"),
    ] {
        let (code, log) = net.check_as(&other, msg);
        assert_eq!(code, 5, "{log}");
        assert!(
            log.contains(what) && log.contains("only its owner"),
            "{log}"
        );
    }
    // Nor name itself admin, nor retry the keygen of someone else's key id.
    let admins = |pks: &[&SigningKey]| TxMsg::KeyAdmins {
        key_id: KeyId::new("own").unwrap(),
        admins: pks.iter().map(|k| k.verifying_key().to_bytes()).collect(),
    };
    let (code, log) = net.check_as(&other, admins(&[&other]));
    assert_eq!(code, 5, "{log}");
    assert!(log.contains("only its owner may"), "{log}");
    // The owner names the sign-only account: it may sign now (its role allows only that).
    let (code, log) = net.check_as(&signer, sign_msg("own", "s1"));
    assert_eq!(code, 5, "{log}");
    let (r, _) = net.deliver_as(&client, admins(&[&signer]));
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(
        net.query("/key/own").1["admins"],
        serde_json::json!([hex::encode(signer.verifying_key().to_bytes())])
    );
    let (r, jobs) = net.deliver_as(&signer, sign_msg("own", "s1"));
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(matches!(jobs[..], [Job::Sign { .. }]), "{jobs:?}");
    // An admin may not change the list; unknown accounts and the owner are refused.
    let (code, _) = net.check_as(&signer, admins(&[]));
    assert_eq!(code, 5);
    let stranger = SigningKey::from_bytes(&[99; 32]);
    let (code, log) = net.check_as(&client, admins(&[&stranger]));
    assert_eq!(code, 6, "{log}");
    assert!(log.contains("not a genesis account"), "{log}");
    let (code, log) = net.check_as(&client, admins(&[&client]));
    assert_eq!(code, 6, "{log}");
    // Emptying the list takes the right back.
    let (r, _) = net.deliver_as(&client, admins(&[]));
    assert_eq!(r.code, 0, "{}", r.log);
    let (code, _) = net.check_as(&signer, sign_msg("own", "s2"));
    assert_eq!(code, 5);
    // A node may not name admins either.
    let n0 = net.nodes[0].clone();
    let (code, _) = net.check_as(&n0, admins(&[&signer]));
    assert_eq!(code, 5);
}

#[test]
fn app_refuses_a_resharing_that_would_hand_a_key_to_newcomers() {
    let mut net = Net::new();
    net.ready_key("mv", &SigningKey::from_bytes(&[82; 32]));
    let client = net.client.clone();
    for (i, seed) in [(4usize, 61u8), (5, 62)] {
        let k = SigningKey::from_bytes(&[seed; 32]);
        let msg = TxMsg::NodeJoin {
            node_id: nid(i),
            public_key: k.verifying_key().to_bytes(),
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 30000 + i),
        };
        let (r, _) = net.deliver_as(&client, msg);
        assert_eq!(r.code, 0, "{}", r.log);
    }
    // The key is 3-of-{0,1,2,3}.
    for (parties, t, needle) in [
        // Keeps 2 holders: below the current threshold 3.
        (&[0, 1, 4, 5][..], 3, "keeps 2 of the key's current holders"),
        // The two newcomers would reach the new threshold 2 alone.
        (
            &[0, 1, 2, 4, 5][..],
            2,
            "2 newcomers would reach its threshold 2",
        ),
        // The two-node committee of the issue's attack.
        (&[4, 5][..], 2, "keeps 0"),
    ] {
        let (code, log) = net.check_as(&client, reshare_msg("mv", parties, t));
        assert_eq!(code, 6, "{parties:?}: {log}");
        assert!(log.contains(needle), "{parties:?}: {log}");
    }
    // Three holders kept, newcomers below the threshold: accepted.
    let (r, jobs) = net.deliver_as(&client, reshare_msg("mv", &[0, 1, 2, 4, 5], 3));
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(matches!(jobs[..], [Job::Reshare(_)]), "{jobs:?}");
}

#[test]
fn app_runs_resharings_and_admissions_only_once_governance_approved_them_and_the_delay_passed() {
    let mut net = Net::build(
        0,
        0,
        Some(Governance {
            accounts: vec!["client".into(), "auditor".into()],
            approvals: 2,
            delay_blocks: 3,
            expiry_blocks: 10,
        }),
    );
    let (client, auditor, signer) = (net.client.clone(), auditor(), net.signer_only.clone());
    net.ready_key("gk", &SigningKey::from_bytes(&[83; 32]));
    let join = |i: usize, seed: u8| TxMsg::NodeJoin {
        node_id: nid(i),
        public_key: SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
        p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 30000 + i),
    };

    // A NodeJoin opens a proposal: nothing runs, the proposer's approval counts.
    let (r, jobs) = net.deliver_as(&client, join(4, 71));
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(jobs.is_empty(), "{jobs:?}");
    let id = net.open_proposal();
    let p = net.proposal(&id);
    assert_eq!(p["status"], "PENDING", "{p}");
    assert_eq!(p["approvals"], serde_json::json!(["client"]), "{p}");
    assert_eq!(net.query("/nodes").1.as_array().unwrap().len(), 4);
    // Only governance accounts approve, each once.
    let (code, log) = net.check_as(&signer, vote(&id, false));
    assert_eq!(code, 5, "{log}");
    let (code, log) = net.check_as(&client, vote(&id, false));
    assert_eq!(code, 8, "{log}");
    assert!(log.contains("already approved"), "{log}");
    let (code, _) = net.check_as(&client, vote("0000000000000000", false));
    assert_eq!(code, 7);
    // The second approval: it runs 3 blocks later, not before.
    let (r, jobs) = net.deliver_as(&auditor, vote(&id, false));
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(jobs.is_empty(), "{jobs:?}");
    let approved_at = net.height as u64;
    let p = net.proposal(&id);
    assert_eq!(p["status"], "APPROVED", "{p}");
    assert_eq!(p["executes_height"], approved_at + 3, "{p}");
    let mut jobs = Vec::new();
    while (net.height as u64) < approved_at + 2 {
        jobs.extend(net.block(vec![]).1);
    }
    assert!(jobs.is_empty(), "{jobs:?}");
    let (_, jobs) = net.block(vec![]);
    assert!(
        matches!(&jobs[..], [Job::NodeJoined { node, .. }] if *node == nid(4)),
        "{jobs:?}"
    );
    assert_eq!(net.proposal(&id)["status"], "EXECUTED");
    assert_eq!(net.query("/nodes").1.as_array().unwrap().len(), 5);

    // An approved resharing is visible during its delay, and a governance account cancels it.
    let (r, _) = net.deliver_as(&client, reshare_msg("gk", &[0, 1, 2, 4], 3));
    assert_eq!(r.code, 0, "{}", r.log);
    let id = net.open_proposal();
    let (r, _) = net.deliver_as(&auditor, vote(&id, false));
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(net.proposal(&id)["status"], "APPROVED");
    let (code, log) = net.check_as(&signer, vote(&id, true));
    assert_eq!(code, 5, "{log}");
    let (r, _) = net.deliver_as(&auditor, vote(&id, true));
    assert_eq!(r.code, 0, "{}", r.log);
    let p = net.proposal(&id);
    assert_eq!(p["status"], "CANCELLED", "{p}");
    assert_eq!(p["error"], "cancelled by auditor", "{p}");
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.extend(net.block(vec![]).1);
    }
    assert!(jobs.is_empty(), "a cancelled resharing ran: {jobs:?}");
    assert_eq!(net.query("/key/gk").1["reshare"], Value::Null);

    // An approved resharing whose key was deleted meanwhile ends FAILED and runs nothing.
    let (r, _) = net.deliver_as(&client, reshare_msg("gk", &[0, 1, 2, 4], 3));
    assert_eq!(r.code, 0, "{}", r.log);
    let id = net.open_proposal();
    let del = TxMsg::KeyDelete {
        key_id: KeyId::new("gk").unwrap(),
    };
    let (tx1, tx2) = (net.tx(&auditor, vote(&id, false)), net.tx(&client, del));
    let (res, _) = net.block(vec![tx1, tx2]);
    assert!(res.iter().all(|r| r.code == 0), "{res:?}");
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.extend(net.block(vec![]).1);
    }
    assert!(
        !jobs.iter().any(|j| matches!(j, Job::Reshare(_))),
        "{jobs:?}"
    );
    let p = net.proposal(&id);
    assert_eq!(p["status"], "FAILED", "{p}");
    assert!(p["error"].as_str().unwrap().contains("READY"), "{p}");

    // Unapproved, a proposal expires (10 blocks), then leaves the state (10 more).
    let (r, _) = net.deliver_as(&client, join(5, 72));
    assert_eq!(r.code, 0, "{}", r.log);
    let id = net.open_proposal();
    for _ in 0..10 {
        net.block(vec![]);
    }
    assert_eq!(net.proposal(&id)["status"], "EXPIRED");
    let (code, _) = net.check_as(&auditor, vote(&id, false));
    assert_eq!(code, 8);
    for _ in 0..10 {
        net.block(vec![]);
    }
    assert_eq!(net.query(&format!("/proposal/{id}")).0, 7);
    assert_eq!(net.query("/nodes").1.as_array().unwrap().len(), 5);

    // A restart (snapshot + journal replay) gives the same state and app hash.
    let app_hash = net.app.info().last_block_app_hash;
    let g = {
        let nodes = net.nodes.clone();
        genesis_with(
            &nodes,
            &net.client,
            &net.signer_only,
            0,
            0,
            Some(Governance {
                accounts: vec!["client".into(), "auditor".into()],
                approvals: 2,
                delay_blocks: 3,
                expiry_blocks: 10,
            }),
        )
    };
    let again = App::open(net._dir.path(), g, None).unwrap();
    assert_eq!(again.info().last_block_app_hash, app_hash);
}

#[test]
fn app_refuses_moves_of_keys_and_admissions_without_a_governance_but_still_refreshes() {
    let mut net = Net::build(0, 0, None);
    net.ready_key("ng", &SigningKey::from_bytes(&[84; 32]));
    let client = net.client.clone();
    let (code, log) = net.check_as(
        &client,
        TxMsg::NodeJoin {
            node_id: nid(4),
            public_key: SigningKey::from_bytes(&[73; 32]).verifying_key().to_bytes(),
            p2p_addr: "/ip4/127.0.0.1/tcp/30004".into(),
        },
    );
    assert_eq!(code, 5, "{log}");
    assert!(log.contains("names no governance"), "{log}");
    let (code, log) = net.check_as(&client, reshare_msg("ng", &[0, 1, 2], 2));
    assert_eq!(code, 5, "{log}");
    let (r, jobs) = net.deliver_as(&client, reshare_msg("ng", &[0, 1, 2, 3], 3));
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(matches!(jobs[..], [Job::Reshare(_)]), "{jobs:?}");
}

#[test]
fn app_refuses_abci_calls_out_of_order_and_keeps_serving_the_engine_that_drives_it() {
    // Before InitChain: refused, no panic.
    let nodes: Vec<SigningKey> = (0..4)
        .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
        .collect();
    let (client, signer) = (
        SigningKey::from_bytes(&[50; 32]),
        SigningKey::from_bytes(&[51; 32]),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut fresh = App::open(dir.path(), genesis(&nodes, &client, &signer), None).unwrap();
    let r = fresh.finalize_block(pb::RequestFinalizeBlock {
        txs: vec![vec![1u8, 2, 3].into()],
        height: 1,
        ..Default::default()
    });
    assert_eq!(r.tx_results.len(), 1);
    assert_ne!(r.tx_results[0].code, 0);
    assert!(
        r.tx_results[0].log.contains("before InitChain"),
        "{:?}",
        r.tx_results[0].log
    );
    fresh.commit();

    let mut net = Net::new();
    net.ready_key("oo", &SigningKey::from_bytes(&[85; 32]));
    let info = net.app.info();
    // A Commit with nothing finalized changes nothing.
    net.app.commit();
    assert_eq!(net.app.info(), info);
    // A block for a height other than the next: every tx refused, the app hash unchanged.
    let tx = net.keygen("oo2", 3);
    for height in [info.last_block_height, info.last_block_height + 2, 0] {
        let r = net.app.finalize_block(pb::RequestFinalizeBlock {
            txs: vec![tx.clone().into()],
            height,
            ..Default::default()
        });
        assert_eq!(r.tx_results[0].code, 6, "{}", r.tx_results[0].log);
        assert!(
            r.tx_results[0].log.contains("block refused"),
            "{}",
            r.tx_results[0].log
        );
        assert_eq!(r.app_hash, info.last_block_app_hash);
        net.app.commit();
        assert_eq!(net.app.info(), info);
    }
    // The engine driving it in order goes on.
    let (res, jobs) = net.block(vec![tx]);
    assert_eq!(res[0].code, 0, "{}", res[0].log);
    assert!(matches!(jobs[..], [Job::KeyGen { .. }]), "{jobs:?}");
}

#[test]
fn app_limits_the_proposals_one_account_may_have_open() {
    let mut net = Net::build(
        0,
        0,
        Some(Governance {
            accounts: vec!["client".into(), "auditor".into()],
            approvals: 2,
            delay_blocks: 3,
            expiry_blocks: 100,
        }),
    );
    let other = other();
    let join = |i: usize| TxMsg::NodeJoin {
        node_id: NodeId::new(format!("new{i}")).unwrap(),
        public_key: SigningKey::from_bytes(&[100 + i as u8; 32])
            .verifying_key()
            .to_bytes(),
        p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 31000 + i),
    };
    let txs: Vec<Vec<u8>> = (0..9).map(|i| net.tx(&other, join(i))).collect();
    let (res, jobs) = net.block(txs);
    assert!(jobs.is_empty(), "{jobs:?}");
    assert!(res[..8].iter().all(|r| r.code == 0), "{res:?}");
    assert_eq!(res[8].code, 8, "{}", res[8].log);
    assert!(res[8].log.contains("8 proposals open"), "{}", res[8].log);
    // Its proposer withdraws one: room for another.
    let (_, v) = net.query("/proposals");
    let id = v["proposals"][0]["id"].as_str().unwrap().to_owned();
    let (r, _) = net.deliver_as(&other, vote(&id, true));
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(net.proposal(&id)["error"], "cancelled by other");
    let (r, _) = net.deliver_as(&other, join(9));
    assert_eq!(r.code, 0, "{}", r.log);
}

// Node key rotation and node removal (issue 14, item 5).

fn rotate_key(i: usize, key: &SigningKey) -> TxMsg {
    TxMsg::NodeRotateKey {
        node_id: nid(i),
        public_key: key.verifying_key().to_bytes(),
    }
}

fn remove_node(i: usize) -> TxMsg {
    TxMsg::NodeRemove { node_id: nid(i) }
}

/// The registered key of node `i` (hex), if it is registered.
fn registered_key(net: &Net, i: usize) -> Option<String> {
    let (_, nodes) = net.query("/nodes");
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == nid(i).as_str())
        .map(|n| n["public_key"].as_str().unwrap().to_owned())
}

#[test]
fn app_rotates_a_node_key_and_removes_only_a_node_that_holds_no_share() {
    let mut net = Net::new();
    let (client, signer) = (net.client.clone(), net.signer_only.clone());
    net.ready_key("k", &SigningKey::from_bytes(&[83; 32]));
    let k4 = SigningKey::from_bytes(&[61; 32]);
    let (r, _) = net.deliver_as(&client, node_join("node4", &k4, "/ip4/127.0.0.1/tcp/30004"));
    assert_eq!(r.code, 0, "{}", r.log);

    // Rotation: the registry role, a registered node, a key no node or account uses.
    let new1 = SigningKey::from_bytes(&[62; 32]);
    let (code, log) = net.check_as(&signer, rotate_key(1, &new1));
    assert_eq!(code, 5, "{log}");
    let (code, log) = net.check_as(&client, rotate_key(9, &new1));
    assert_eq!(code, 7, "{log}");
    assert!(
        log.contains("node node9 is not in the node registry"),
        "{log}"
    );
    let (code, log) = net.check_as(&client, rotate_key(1, &net.nodes[2].clone()));
    assert_eq!(code, 8, "{log}");
    assert!(log.contains("already registered for node node2"), "{log}");
    let (code, log) = net.check_as(&client, rotate_key(1, &client));
    assert!(log.contains("is the key of account"), "{code}: {log}");
    let (r, jobs) = net.deliver_as(&client, rotate_key(1, &new1));
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(
        jobs,
        vec![Job::NodeKeyRotated {
            node: nid(1),
            public_key: new1.verifying_key().to_bytes(),
        }]
    );
    assert!(r.events.iter().any(|e| e.r#type == "node_key_rotated"));
    assert_eq!(
        registered_key(&net, 1),
        Some(hex::encode(new1.verifying_key().to_bytes()))
    );
    // From now on the old key is nobody: its txs are refused; the new key speaks for node1.
    let old1 = net.nodes[1].clone();
    let (code, log) = net.check_as(&old1, TxMsg::Heartbeat);
    assert_ne!(code, 0, "the rotated-away key still sends txs: {log}");
    let (r, _) = net.deliver_as(&new1, TxMsg::Heartbeat);
    assert_eq!(r.code, 0, "{}", r.log);
    let (_, acct) = net.query(&format!(
        "/account/{}",
        hex::encode(new1.verifying_key().to_bytes())
    ));
    assert_eq!(acct["node"], "node1", "{acct}");

    // Removal: refused while the node holds a share of a live key, or for an unknown node.
    let (code, log) = net.check_as(&client, remove_node(1));
    assert_eq!(code, 8, "{log}");
    assert!(log.contains("holds shares of keys k"), "{log}");
    let (code, log) = net.check_as(&client, remove_node(9));
    assert_eq!(code, 7, "{log}");
    let (code, log) = net.check_as(&signer, remove_node(4));
    assert_eq!(code, 5, "{log}");
    let (r, _) = net.deliver_as(&k4, TxMsg::Heartbeat);
    assert_eq!(r.code, 0, "{}", r.log);
    let (r, jobs) = net.deliver_as(&client, remove_node(4));
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(jobs, vec![Job::NodeRemoved { node: nid(4) }]);
    assert_eq!(registered_key(&net, 4), None);
    let (code, log) = net.check_as(&k4, TxMsg::Heartbeat);
    assert_ne!(code, 0, "a removed node still sends txs: {log}");
    // A keygen can no longer name it.
    let (code, log) = net.check_as(
        &client,
        TxMsg::KeyGen {
            key_id: KeyId::new("k2").unwrap(),
            scheme: Scheme::FrostEd25519,
            threshold: 2,
            parties: vec![nid(0), nid(4)],
        },
    );
    assert_ne!(code, 0, "a keygen named a removed node: {log}");

    // The journal replays to the same state: the rotated key and the removal included.
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let again = App::open(net._dir.path(), g, None).unwrap();
    assert_eq!(again.state(), net.app.state());
    let s = again.state().unwrap();
    assert_eq!(
        s.node_keys
            .get(&hex::encode(old1.verifying_key().to_bytes())),
        None
    );
    assert_eq!(
        s.node_keys
            .get(&hex::encode(new1.verifying_key().to_bytes())),
        Some(&nid(1))
    );
    assert!(!s.nodes.contains_key(&nid(4)));

    // Admitted again after its removal, under a new key.
    let k4b = SigningKey::from_bytes(&[63; 32]);
    let (r, jobs) = net.deliver_as(
        &client,
        node_join("node4", &k4b, "/ip4/127.0.0.1/tcp/30004"),
    );
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(matches!(&jobs[..], [Job::NodeJoined { node, .. }] if *node == nid(4)));
}

#[test]
fn app_runs_node_rotation_and_removal_through_governance_and_checks_them_again_when_due() {
    let mut net = Net::build(
        0,
        0,
        Some(Governance {
            accounts: vec!["client".into(), "auditor".into()],
            approvals: 2,
            delay_blocks: 2,
            expiry_blocks: 10,
        }),
    );
    let (client, auditor) = (net.client.clone(), auditor());
    // A removal waits for the second approval and the delay.
    let (r, jobs) = net.deliver_as(&client, remove_node(3));
    // node3 holds no share yet: the request is valid and opens a proposal.
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(jobs.is_empty(), "{jobs:?}");
    let id = net.open_proposal();
    let p = net.proposal(&id);
    assert_eq!(p["status"], "PENDING", "{p}");
    assert_eq!(p["action"]["kind"], "node_remove", "{p}");
    assert_eq!(p["action"]["node_id"], "node3", "{p}");
    let (r, _) = net.deliver_as(&auditor, vote(&id, false));
    assert_eq!(r.code, 0, "{}", r.log);
    // Meanwhile node3 takes a share: the approved removal ends FAILED and changes nothing.
    net.ready_key("k", &SigningKey::from_bytes(&[83; 32]));
    for _ in 0..3 {
        net.block(vec![]);
    }
    let p = net.proposal(&id);
    assert_eq!(p["status"], "FAILED", "{p}");
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .contains("holds shares of keys k"),
        "{p}"
    );
    assert!(registered_key(&net, 3).is_some());

    // A rotation, approved, runs once its delay is over.
    let new2 = SigningKey::from_bytes(&[64; 32]);
    let (r, _) = net.deliver_as(&client, rotate_key(2, &new2));
    assert_eq!(r.code, 0, "{}", r.log);
    let id = net.open_proposal();
    let (r, jobs) = net.deliver_as(&auditor, vote(&id, false));
    assert_eq!(r.code, 0, "{}", r.log);
    assert!(jobs.is_empty(), "{jobs:?}");
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.extend(net.block(vec![]).1);
    }
    assert_eq!(
        jobs,
        vec![Job::NodeKeyRotated {
            node: nid(2),
            public_key: new2.verifying_key().to_bytes(),
        }]
    );
    assert_eq!(net.proposal(&id)["status"], "EXECUTED");
    assert_eq!(
        registered_key(&net, 2),
        Some(hex::encode(new2.verifying_key().to_bytes()))
    );
}

/// An ABCI query with `prove` (and a height): the answer and its decoded ICS23 proof.
fn proven(
    app: &App,
    path: &str,
    data: &[u8],
    height: i64,
) -> (pb::ResponseQuery, ics23::CommitmentProof) {
    let r = app.query(pb::RequestQuery {
        path: path.into(),
        data: data.to_vec().into(),
        height,
        prove: true,
    });
    let ops = r
        .proof_ops
        .clone()
        .unwrap_or_else(|| panic!("{path}: no proof: {r:?}"));
    assert_eq!(ops.ops.len(), 1);
    let op = &ops.ops[0];
    assert_eq!(op.r#type, seqmpc_abci::chain::merkle::PROOF_OP_TYPE);
    assert_eq!(op.key, r.key.to_vec());
    let proof = <ics23::CommitmentProof as prost_013::Message>::decode(op.data.as_slice()).unwrap();
    (r, proof)
}

#[test]
fn app_should_prove_entries_and_absences_against_the_app_hash_of_each_kept_height() {
    use seqmpc_abci::chain::merkle::{verify, KEEP_VERSIONS};
    let mut net = Net::new();
    let tx = net.keygen("p1", 3);
    net.block(vec![tx]);
    let h1 = net.height;
    let hash1 = net.app.info().last_block_app_hash.to_vec();
    let group = SigningKey::from_bytes(&[5; 32]);
    net.ready_key("p2", &group);
    let latest_hash = net.app.info().last_block_app_hash.to_vec();
    assert_ne!(hash1, latest_hash);

    // p1 at h1 (PENDING then), against the app hash after h1 (header h1 + 1's app_hash).
    let (r, proof) = proven(&net.app, "/key/p1", &[], h1);
    assert_eq!((r.code, r.height), (0, h1), "{r:?}");
    assert_eq!(r.key.as_ref(), b"key/p1");
    let v: Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(v["status"], "PENDING");
    assert!(verify(&hash1, b"key/p1", Some(&r.value), &proof));
    assert!(!verify(&latest_hash, b"key/p1", Some(&r.value), &proof));
    let mut tampered = r.value.to_vec();
    tampered[2] ^= 1;
    assert!(!verify(&hash1, b"key/p1", Some(&tampered), &proof));

    // p2 now (height 0: the latest), READY; it did not exist at h1: proven absent there.
    let (r, proof) = proven(&net.app, "/key/p2", &[], 0);
    assert_eq!((r.code, r.height), (0, net.height));
    assert_eq!(
        serde_json::from_slice::<Value>(&r.value).unwrap()["status"],
        "READY"
    );
    assert!(verify(&latest_hash, b"key/p2", Some(&r.value), &proof));
    let (r, proof) = proven(&net.app, "/key/p2", &[], h1);
    assert_eq!(r.code, 7, "{r:?}");
    assert!(r.log.contains("does not exist at height"), "{}", r.log);
    assert!(verify(&hash1, b"key/p2", None, &proof));
    assert!(!verify(&latest_hash, b"key/p2", None, &proof));

    // Any entry by its state key: the client's sequence; the genesis.
    let client_hex = hex::encode(net.client.verifying_key().to_bytes());
    let seq_key = format!("seq/{client_hex}");
    let (r, proof) = proven(&net.app, "/state", seq_key.as_bytes(), 0);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(verify(
        &latest_hash,
        seq_key.as_bytes(),
        Some(&r.value),
        &proof
    ));
    let (r, proof) = proven(&net.app, "/state", b"genesis", 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.value).unwrap()["chain_id"],
        "test-chain"
    );
    assert!(verify(&latest_hash, b"genesis", Some(&r.value), &proof));
    // A past height without proof reads the tree too.
    let r = net.app.query(pb::RequestQuery {
        path: "/key/p1".into(),
        height: h1,
        ..Default::default()
    });
    assert_eq!((r.code, r.height), (0, h1));
    assert!(r.proof_ops.is_none());

    // Bad asks get a readable error.
    let ask = |app: &App, path: &str, data: &[u8], height: i64| {
        app.query(pb::RequestQuery {
            path: path.into(),
            data: data.to_vec().into(),
            height,
            prove: true,
        })
    };
    let r = ask(&net.app, "/keys", &[], 0);
    assert_eq!(r.code, 1);
    assert!(r.log.contains("names no single state entry"), "{}", r.log);
    assert!(r.proof_ops.is_none());
    assert_eq!(ask(&net.app, "/state", b"nope/x", 0).code, 6);
    assert_eq!(ask(&net.app, "/state", &[0xff], 0).code, 6);
    let r = ask(&net.app, "/key/p1", &[], net.height + 1);
    assert_eq!(r.code, 1);
    assert!(r.log.contains("is not kept"), "{}", r.log);
    assert_eq!(ask(&net.app, "/key/p1", &[], -1).code, 1);

    // Old heights leave the kept window; a restart keeps only the loaded height.
    while net.height < h1 + KEEP_VERSIONS as i64 {
        net.block(vec![]);
    }
    let r = ask(&net.app, "/key/p1", &[], h1);
    assert!(r.log.contains("is not kept"), "{}", r.log);
    let g = genesis(&net.nodes, &net.client, &net.signer_only);
    let again = App::open(net._dir.path(), g, None).unwrap();
    let hash = again.info().last_block_app_hash.to_vec();
    let (r, proof) = proven(&again, "/key/p2", &[], 0);
    assert!(verify(&hash, b"key/p2", Some(&r.value), &proof));
}

#[test]
fn app_refuses_a_threshold_below_the_genesis_minimum() {
    let mut net = Net::build_with(0, 0, client_governs(), |limits| {
        limits["min_threshold"] = 3.into();
    });
    let c = net.client.clone();
    let keygen = |net: &Net, t: u32| {
        net.tx_unsequenced(
            &c,
            TxMsg::KeyGen {
                key_id: KeyId::new("k").unwrap(),
                scheme: Scheme::FrostEd25519,
                threshold: t,
                parties: vec![],
            },
        )
    };
    // The schemes allow 2; this genesis raises the floor to 3.
    let r = net.check(&keygen(&net, 2));
    assert_eq!(r.code, 6, "{}", r.log);
    assert!(r.log.contains("needs 3 <= threshold"), "{}", r.log);
    let r = net.check(&keygen(&net, 3));
    assert_eq!(r.code, 0, "{}", r.log);
}

/// The node's result submitter learns from its own app which of its txs a committed block
/// held, and with which code (issue 13: no `tx` RPC call per result): at Commit, not at
/// FinalizeBlock, and only for the txs it watches.
#[test]
fn app__should_tell_the_tx_watch_how_a_committed_block_delivered_the_watched_txs() {
    use seqmpc_abci::abci::tx_watch::{tx_hash, TxWatch};
    let mut net = Net::build(0, 0, None);
    let watch = TxWatch::default();
    net.app.set_tx_watch(watch.clone());
    let c = net.client.clone();
    let good = net.keygen("k1", 3);
    // Refused at delivery: no such key.
    let refused = net.tx(
        &c,
        TxMsg::KeySign {
            key_id: KeyId::new("nosuch").unwrap(),
            request_id: RequestId::new("r1").unwrap(),
            message: b"hi".to_vec(),
            prehashed: false,
        },
    );
    let unwatched = net.keygen("k2", 3);
    let hex_of = |tx: &[u8]| hex::encode_upper(tx_hash(tx));
    watch.watch(tx_hash(&good));
    watch.watch(tx_hash(&refused));
    net.height += 1;
    let r = net.app.finalize_block(pb::RequestFinalizeBlock {
        txs: vec![
            good.clone().into(),
            refused.clone().into(),
            unwatched.clone().into(),
        ],
        height: net.height,
        ..Default::default()
    });
    let codes: Vec<u32> = r.tx_results.iter().map(|r| r.code).collect();
    assert_eq!(codes[0], 0, "{:?}", r.tx_results);
    assert_ne!(codes[1], 0, "{:?}", r.tx_results);
    assert_eq!(watch.take(&hex_of(&good)), Some(None), "not committed yet");
    net.app.commit();
    assert_eq!(watch.take(&hex_of(&good)), Some(Some((0, String::new()))));
    let (code, log) = watch.take(&hex_of(&refused)).flatten().expect("delivered");
    assert_eq!(
        (code, log.as_str()),
        (codes[1], r.tx_results[1].log.as_str())
    );
    assert_eq!(watch.take(&hex_of(&unwatched)), None, "never watched");
    assert!(watch.is_empty());
}
