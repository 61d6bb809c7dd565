//! No tx may panic the chain (issue 5, "Fuzzing"): CheckTx and FinalizeBlock + Commit of one
//! long-lived app, fed blocks of well-signed txs with arbitrary field values (from every
//! account and node key, right or wrong sequence), mutated txs and arbitrary bytes. Every tx
//! gets a result; the state keeps going across cases, so later blocks act on keys and requests
//! made by earlier ones. Case counts: `PROPTEST_CASES` (default 150 blocks); `FUZZ_SECS=n`
//! repeats fresh batches for `n` seconds (`make fuzz`).
#![allow(non_snake_case, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use ed25519_dalek::SigningKey;
use proptest::collection::vec;
use proptest::prelude::*;
use seqmpc_abci::abci::App;
use seqmpc_abci::chain::genesis::{Genesis, GenesisAccount, GenesisNode, Governance, Limits, Role};
use seqmpc_proto::tx::{sign_tx, KeyGenOk, Outcome, SignedMessage, TxMsg};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};
use tendermint_proto::v0_38::abci as pb;

const CHAIN: &str = "test-chain";

fn nid(i: usize) -> NodeId {
    NodeId::new(format!("node{i}")).unwrap()
}

/// Keys 0..4: nodes; 4: client (keygen, sign, delete); 5: sign only; 6: unknown.
fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 1; 32])
}

fn genesis() -> Vec<u8> {
    let account = |name: &str, i: usize, roles: &[Role]| GenesisAccount {
        name: name.into(),
        public_key: hex::encode(key(i).verifying_key().to_bytes()),
        roles: roles.iter().copied().collect::<BTreeSet<_>>(),
    };
    serde_json::to_vec(&Genesis {
        chain_id: CHAIN.into(),
        nodes: (0..4)
            .map(|i| GenesisNode {
                id: nid(i),
                public_key: hex::encode(key(i).verifying_key().to_bytes()),
                p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 30000 + i),
            })
            .collect(),
        accounts: vec![
            account(
                "client",
                4,
                &[Role::Keygen, Role::Sign, Role::Delete, Role::Registry],
            ),
            account("signer", 5, &[Role::Sign]),
        ],
        limits: Limits {
            max_parties: 8,
            max_message_bytes: 64,
            session_deadline_blocks: 5,
            liveness_window_blocks: 10,
            max_requests_per_account_per_block: 1000,
            refresh_every_blocks: 0,
            sign_attempt_blocks: 30,
            cggmp_keygen_deadline_blocks: 0,
            // Short: arbitrary blocks also prune finished sign requests.
            sign_retention_blocks: 3,
            min_threshold: 2,
        },
        // One approval, a short delay: arbitrary blocks open, approve, run and expire
        // proposals.
        governance: Some(Governance {
            accounts: vec!["client".into(), "signer".into()],
            approvals: 1,
            delay_blocks: 2,
            expiry_blocks: 4,
        }),
    })
    .unwrap()
}

fn small_id() -> impl Strategy<Value = String> {
    prop_oneof!["k[0-3]", "r[0-3]", "[a-z0-9]{1,6}"]
}

fn scheme() -> impl Strategy<Value = Scheme> {
    prop_oneof![
        Just(Scheme::FrostEd25519),
        Just(Scheme::FrostSecp256k1Tr),
        Just(Scheme::Cggmp24Secp256k1)
    ]
}

fn outcome<T: Debug + Clone + 'static>(
    ok: impl Strategy<Value = T>,
) -> impl Strategy<Value = Outcome<T>> {
    prop_oneof![
        ok.prop_map(Outcome::Ok),
        (
            ".{1,20}",
            vec(0..6usize, 0..3),
            vec((0..6usize, 0..6usize, vec(any::<u8>(), 0..200)), 0..3),
        )
            .prop_map(|(error, c, ev)| Outcome::Failed {
                error,
                culprits: c.into_iter().map(nid).collect(),
                // Quoted messages that are not signed by their sender: refused, never a panic.
                evidence: ev
                    .into_iter()
                    .map(|(from, to, envelope)| SignedMessage {
                        from: nid(from),
                        to: nid(to),
                        envelope,
                        signature: [7; 64],
                    })
                    .collect(),
            }),
    ]
}

/// A keygen or resharing report: a public key and transcript hash, or a failure.
fn keygen_outcome() -> impl Strategy<Value = Outcome<KeyGenOk>> {
    let package = prop_oneof![Just(Vec::new()), vec(any::<u8>(), 0..300)];
    outcome(
        (vec(any::<u8>(), 1..70), any::<[u8; 32]>(), package).prop_map(
            |(public_key, transcript_hash, public_key_package)| KeyGenOk {
                public_key,
                transcript_hash,
                public_key_package,
            },
        ),
    )
}

fn msg() -> impl Strategy<Value = TxMsg> {
    let session = prop_oneof![Just([0x11u8; 32]), any::<[u8; 32]>()].prop_map(SessionId);
    prop_oneof![
        (
            small_id(),
            scheme(),
            0..6u32,
            prop_oneof![Just(vec![]), vec(0..6usize, 0..6)]
        )
            .prop_map(|(k, scheme, t, p)| {
                TxMsg::KeyGen {
                    key_id: KeyId::new(k).unwrap(),
                    scheme,
                    threshold: t.max(1),
                    parties: p.into_iter().map(nid).collect(),
                }
            }),
        (
            small_id(),
            small_id(),
            vec(any::<u8>(), 0..80),
            any::<bool>()
        )
            .prop_map(|(k, r, m, p)| {
                let message = if p {
                    m.into_iter().chain([0; 32]).take(32).collect()
                } else {
                    m
                };
                TxMsg::KeySign {
                    key_id: KeyId::new(k).unwrap(),
                    request_id: RequestId::new(r).unwrap(),
                    message,
                    prehashed: p,
                }
            }),
        small_id().prop_map(|k| TxMsg::KeyDelete {
            key_id: KeyId::new(k).unwrap()
        }),
        (small_id(), session.clone(), keygen_outcome()).prop_map(|(k, session, outcome)| {
            TxMsg::KeyGenResult {
                key_id: KeyId::new(k).unwrap(),
                session,
                outcome,
            }
        }),
        (small_id(), vec(0..6usize, 0..6), 0..6u32).prop_map(|(k, p, t)| TxMsg::KeyReshare {
            key_id: KeyId::new(k).unwrap(),
            parties: p.into_iter().map(nid).collect(),
            threshold: t.max(1),
        }),
        (small_id(), session.clone(), keygen_outcome()).prop_map(|(k, session, outcome)| {
            TxMsg::ReshareResult {
                key_id: KeyId::new(k).unwrap(),
                session,
                outcome,
            }
        }),
        (
            small_id(),
            session,
            outcome(vec(any::<u8>(), 1..100)),
            vec(any::<u8>(), 0..200)
        )
            .prop_map(|(r, session, outcome, package)| TxMsg::SignResult {
                request_id: RequestId::new(r).unwrap(),
                session,
                signing_package: match outcome {
                    Outcome::Ok(_) => Vec::new(),
                    Outcome::Failed { .. } => package,
                },
                outcome,
            }),
        small_id().prop_map(|k| TxMsg::KeyDeleted {
            key_id: KeyId::new(k).unwrap()
        }),
        Just(TxMsg::Heartbeat),
        // Joins with fresh keys, keys of genesis nodes and accounts, and taken ids.
        (
            "node[0-9]",
            0..12u8,
            prop_oneof![Just(0u16), 30000..30010u16]
        )
            .prop_map(|(n, k, port)| TxMsg::NodeJoin {
                node_id: NodeId::new(n).unwrap(),
                public_key: match k {
                    0..=5 => key(usize::from(k)).verifying_key().to_bytes(),
                    _ => SigningKey::from_bytes(&[k.wrapping_add(100); 32])
                        .verifying_key()
                        .to_bytes(),
                },
                p2p_addr: format!("/ip4/127.0.0.1/tcp/{port}"),
            }),
        (small_id(), vec(0..8usize, 0..4)).prop_map(|(k, admins)| {
            let mut admins: Vec<[u8; 32]> = admins
                .into_iter()
                .map(|i| key(i).verifying_key().to_bytes())
                .collect();
            admins.dedup();
            TxMsg::KeyAdmins {
                key_id: KeyId::new(k).unwrap(),
                admins,
            }
        }),
        ("[0-9a-f]{16}", any::<bool>()).prop_map(|(proposal_id, cancel)| {
            TxMsg::ProposalVote {
                proposal_id,
                cancel,
            }
        }),
    ]
}

#[derive(Clone, Debug)]
enum RawTx {
    /// Signed by key `signer`, at its next sequence or off by `skew`.
    Signed {
        signer: usize,
        skew: Option<u64>,
        msg: TxMsg,
    },
    /// A signed tx with one byte flipped.
    Flipped {
        signer: usize,
        msg: TxMsg,
        at: usize,
    },
    Bytes(Vec<u8>),
}

/// Mostly the account or node the message needs (see `Chain::encode`), sometimes the
/// sign-only account or an unknown key.
fn signer() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0..5usize, 1 => 5..7usize]
}

fn raw_tx() -> impl Strategy<Value = RawTx> {
    prop_oneof![
        8 => (signer(), proptest::option::weighted(0.1, any::<u64>()), msg())
            .prop_map(|(signer, skew, msg)| RawTx::Signed { signer, skew, msg }),
        1 => (0..7usize, msg(), any::<usize>()).prop_map(|(signer, msg, at)| RawTx::Flipped { signer, msg, at }),
        1 => vec(any::<u8>(), 0..200).prop_map(RawTx::Bytes),
    ]
}

struct Chain {
    app: App,
    _dir: tempfile::TempDir,
    seq: BTreeMap<usize, u64>,
    height: i64,
    /// Txs executed with code 0 (the properties reach the chain logic, not only decoding).
    accepted: u64,
}

impl Chain {
    fn new() -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let g = genesis();
        let mut app = App::open(dir.path(), g.clone(), None).unwrap();
        app.init_chain(pb::RequestInitChain {
            chain_id: CHAIN.into(),
            app_state_bytes: g.into(),
            ..Default::default()
        });
        Chain {
            app,
            _dir: dir,
            seq: BTreeMap::new(),
            height: 0,
            accepted: 0,
        }
    }

    fn encode(&mut self, t: &RawTx) -> Vec<u8> {
        match t {
            RawTx::Signed { signer, skew, msg } => {
                // Mostly the account whose role the message needs: the client requests, the
                // nodes report; otherwise whoever was drawn (refused as unauthorized).
                let signer = &match (msg, *signer) {
                    (_, s) if s >= 5 => s,
                    (
                        TxMsg::KeyGen { .. }
                        | TxMsg::KeySign { .. }
                        | TxMsg::KeyDelete { .. }
                        | TxMsg::NodeJoin { .. }
                        | TxMsg::KeyReshare { .. }
                        | TxMsg::KeyAdmins { .. }
                        | TxMsg::ProposalVote { .. },
                        _,
                    ) => 4,
                    (_, s) => s % 4,
                };
                // The committed sequence plus the txs of this signer earlier in the block.
                let hex_key = hex::encode(key(*signer).verifying_key().to_bytes());
                let committed = self.app.state().map_or(0, |st| st.sequence(&hex_key));
                let s = self.seq.entry(*signer).or_insert(0);
                let seq = committed.wrapping_add(*s).wrapping_add(skew.unwrap_or(0));
                *s += 1;
                sign_tx(&key(*signer), CHAIN, seq, msg.clone())
            }
            RawTx::Flipped { signer, msg, at } => {
                let mut b = sign_tx(&key(*signer), CHAIN, 0, msg.clone());
                let i = at % b.len();
                b[i] ^= 0x20;
                b
            }
            RawTx::Bytes(b) => b.clone(),
        }
    }

    fn block(&mut self, txs: &[RawTx]) -> Result<(), TestCaseError> {
        self.seq.clear();
        let txs: Vec<Vec<u8>> = txs.iter().map(|t| self.encode(t)).collect();
        for tx in &txs {
            self.app.check_tx(pb::RequestCheckTx {
                tx: tx.clone().into(),
                r#type: 0,
            });
        }
        let n = txs.len();
        self.height += 1;
        let r = self.app.finalize_block(pb::RequestFinalizeBlock {
            txs: txs.into_iter().map(Into::into).collect(),
            height: self.height,
            ..Default::default()
        });
        self.app.commit();
        prop_assert_eq!(r.tx_results.len(), n);
        self.accepted += r.tx_results.iter().filter(|t| t.code == 0).count() as u64;
        if std::env::var("NO_PANIC_LOG").is_ok() {
            for t in &r.tx_results {
                eprintln!("{} {}", t.code, t.log);
            }
        }
        Ok(())
    }
}

#[test]
fn app_rejects_or_executes_arbitrary_txs_without_panicking() {
    let chain = RefCell::new(Chain::new());
    seqmpc_testkit::check("app blocks", 150, vec(raw_tx(), 0..8), |txs| {
        chain.borrow_mut().block(&txs)
    });
    let accepted = chain.borrow().accepted;
    eprintln!("app blocks: {accepted} txs accepted");
    assert!(accepted > 0, "no tx got past validation");
}
