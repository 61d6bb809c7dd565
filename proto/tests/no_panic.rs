//! No input may panic (issue 5, "Fuzzing"): tx decoding and validation, and the p2p envelope.
//!
//! Each property feeds arbitrary bytes and structure-aware mutations of valid encodings
//! (flipped and overwritten bytes, truncation, extension, insertion, removal, swapped ranges;
//! well-signed bodies built from arbitrary field values) to the decoders and checks that they
//! return `Ok` or a typed error. proptest turns a panic into a failure and shrinks it to a
//! minimal input.
//!
//! Case counts: `PROPTEST_CASES` (default: each property's own, small enough for CI). With
//! `FUZZ_SECS=n` each property keeps drawing fresh batches until `n` seconds have passed
//! (`make fuzz`).
#![allow(non_snake_case, clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use seqmpc_proto::tx::{sign_tx, SignedTx, TxMsg, TX_SIGN_PREFIX};
use seqmpc_proto::wire::{self, p2p_envelope::Payload, tx_body};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};

use seqmpc_testkit::{apply, check, mutations};

// ---- strategies for valid and near-valid wire values ----

/// Mostly valid ids, sometimes not (empty, too long, odd characters).
fn id_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._-]{1,64}",
        1 => ".{0,80}",
        1 => Just(String::new()),
        1 => "[a-z]{65,300}",
    ]
}

fn scheme_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(Scheme::FrostEd25519.as_str().to_owned()),
        Just(Scheme::FrostSecp256k1Tr.as_str().to_owned()),
        Just(Scheme::Cggmp24Secp256k1.as_str().to_owned()),
        ".{0,40}",
    ]
}

fn some_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..80),
        vec(any::<u8>(), 32..=32),
        vec(any::<u8>(), 200..400)
    ]
}

/// Quoted p2p messages: any ids, envelopes and signature lengths, and too many of them.
fn evidence() -> impl Strategy<Value = Vec<wire::SignedP2pMessage>> {
    let one = (id_string(), id_string(), some_bytes(), some_bytes()).prop_map(
        |(from, to, envelope, signature)| wire::SignedP2pMessage {
            from,
            to,
            envelope,
            signature,
        },
    );
    prop_oneof![Just(Vec::new()), vec(one, 0..12)]
}

fn ids() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![vec(id_string(), 0..6), vec("[a-z0-9]{1,8}", 250..260)]
}

fn tx_msg() -> impl Strategy<Value = tx_body::Msg> {
    prop_oneof![
        (id_string(), scheme_string(), any::<u32>(), ids()).prop_map(|(k, s, t, p)| {
            tx_body::Msg::KeyGen(wire::KeyGen {
                key_id: k,
                scheme: s,
                threshold: t,
                parties: p,
            })
        }),
        (id_string(), id_string(), some_bytes(), any::<bool>()).prop_map(|(k, r, m, p)| {
            tx_body::Msg::KeySign(wire::KeySign {
                key_id: k,
                request_id: r,
                message: m,
                prehashed: p,
            })
        }),
        id_string().prop_map(|k| tx_body::Msg::KeyDelete(wire::KeyDelete { key_id: k })),
        (
            id_string(),
            some_bytes(),
            some_bytes(),
            some_bytes(),
            prop_oneof![Just(String::new()), ".{0,20}", "x{1020,1030}"],
            ids(),
            evidence(),
            some_bytes()
        )
            .prop_map(|(k, s, pk, th, e, c, ev, pkp)| {
                tx_body::Msg::KeyGenResult(wire::KeyGenResult {
                    key_id: k,
                    session: s,
                    public_key: pk,
                    transcript_hash: th,
                    error: e,
                    culprits: c,
                    evidence: ev,
                    public_key_package: pkp,
                })
            }),
        (
            id_string(),
            some_bytes(),
            some_bytes(),
            prop_oneof![Just(String::new()), ".{0,20}"],
            ids(),
            evidence(),
            some_bytes()
        )
            .prop_map(|(r, s, sig, e, c, ev, sp)| {
                tx_body::Msg::SignResult(wire::SignResult {
                    request_id: r,
                    session: s,
                    signature: sig,
                    error: e,
                    culprits: c,
                    evidence: ev,
                    signing_package: sp,
                })
            }),
        id_string().prop_map(|k| tx_body::Msg::KeyDeleted(wire::KeyDeleted { key_id: k })),
        Just(tx_body::Msg::Heartbeat(wire::Heartbeat {})),
        (
            id_string(),
            some_bytes(),
            prop_oneof![
                Just("/ip4/127.0.0.1/tcp/26741".to_owned()),
                "/[a-z0-9]{1,6}/.{0,40}",
                ".{0,300}"
            ]
        )
            .prop_map(|(n, pk, a)| {
                tx_body::Msg::NodeJoin(wire::NodeJoin {
                    node_id: n,
                    public_key: pk,
                    p2p_addr: a,
                })
            }),
        (id_string(), some_bytes()).prop_map(|(n, pk)| {
            tx_body::Msg::NodeRotateKey(wire::NodeRotateKey {
                node_id: n,
                public_key: pk,
            })
        }),
        id_string().prop_map(|n| tx_body::Msg::NodeRemove(wire::NodeRemove { node_id: n })),
        (id_string(), ids(), any::<u32>()).prop_map(|(k, p, t)| {
            tx_body::Msg::KeyReshare(wire::KeyReshare {
                key_id: k,
                new_parties: p,
                new_threshold: t,
            })
        }),
        (
            id_string(),
            some_bytes(),
            some_bytes(),
            some_bytes(),
            prop_oneof![Just(String::new()), ".{0,20}"],
            ids(),
            evidence(),
            some_bytes()
        )
            .prop_map(|(k, s, pk, th, e, c, ev, pkp)| {
                tx_body::Msg::ReshareResult(wire::KeyGenResult {
                    key_id: k,
                    session: s,
                    public_key: pk,
                    transcript_hash: th,
                    error: e,
                    culprits: c,
                    evidence: ev,
                    public_key_package: pkp,
                })
            }),
    ]
}

fn tx_body() -> impl Strategy<Value = wire::TxBody> {
    (
        ".{0,20}",
        any::<u64>(),
        proptest::option::weighted(0.95, tx_msg()),
    )
        .prop_map(|(chain_id, sequence, msg)| wire::TxBody {
            chain_id,
            sequence,
            msg,
        })
}

const SIGNER: [u8; 32] = [3; 32];

/// A tx whose (possibly mutated) body is correctly signed: it passes the signature check and
/// reaches body decoding and field validation.
fn signed(body: Vec<u8>) -> Vec<u8> {
    let key = SigningKey::from_bytes(&SIGNER);
    let mut sb = TX_SIGN_PREFIX.to_vec();
    sb.extend_from_slice(&body);
    wire::Tx {
        body,
        signer: key.verifying_key().to_bytes().to_vec(),
        signature: ed25519_dalek::Signer::sign(&key, &sb).to_bytes().to_vec(),
    }
    .encode_to_vec()
}

fn decode_tx(bytes: &[u8]) {
    if let Ok(tx) = SignedTx::decode(bytes) {
        // What the chain does next with a decoded tx must not panic either.
        let _ = format!("{:?} {}", tx.msg, hex::encode(tx.hash));
    }
}

fn payload() -> impl Strategy<Value = Payload> {
    let b = some_bytes;
    prop_oneof![
        (id_string(), scheme_string(), any::<u32>(), ids()).prop_map(|(k, s, t, p)| {
            Payload::KeygenPrepare(wire::KeyGenPrepare {
                key_id: k,
                scheme: s,
                threshold: t,
                parties: p,
            })
        }),
        (b(), ".{0,20}", b(), any::<bool>()).prop_map(|(e, r, a, h)| {
            Payload::KeygenReady(wire::KeyGenReady {
                existing_public_key: e,
                error: r,
                aux_fingerprint: a,
                has_prime_set: h,
            })
        }),
        any::<bool>().prop_map(|r| Payload::KeygenStart(wire::KeyGenStart { reuse_aux: r })),
        b().prop_map(|p| Payload::DkgRound1(wire::DkgRound1 { package: p })),
        b().prop_map(|p| Payload::DkgRound2(wire::DkgRound2 { package: p })),
        b().prop_map(|c| Payload::SignRound1(wire::SignRound1 { commitments: c })),
        (b(), b()).prop_map(|(s, h)| Payload::SignRound2(wire::SignRound2 {
            share: s,
            package_hash: h,
        })),
        ".{0,40}".prop_map(|r| Payload::Abort(wire::SessionAbort { reason: r })),
        b().prop_map(|m| Payload::Cggmp(wire::CggmpPayload { msg: m })),
        b().prop_map(|p| Payload::SignPlan(wire::SignPlan { presignature_id: p })),
        (id_string(), ids(), b()).prop_map(|(k, s, g)| Payload::PresignStart(wire::PresignStart {
            key_id: k,
            signers: s,
            generation: g,
        })),
        (b(), b(), b()).prop_map(|(c, o, s)| Payload::ReshareDeal(wire::ReshareDeal {
            commitment: c,
            old_public: o,
            share: s,
        })),
        (b(), any::<bool>()).prop_map(|(f, has_prime_set)| Payload::ReshareAux(wire::ReshareAux {
            fingerprint: f,
            has_prime_set
        })),
    ]
}

fn envelope() -> impl Strategy<Value = wire::P2pEnvelope> {
    (
        prop_oneof![4 => vec(any::<u8>(), 32..=32), 1 => vec(any::<u8>(), 0..40)],
        proptest::option::weighted(0.95, payload()),
    )
        .prop_map(|(session, payload)| wire::P2pEnvelope { session, payload })
}

/// The node's first steps with an envelope (`Node::on_message`): decode, session id, then the
/// fields each payload handler validates first.
fn decode_envelope(bytes: &[u8]) {
    let Ok(env) = wire::P2pEnvelope::decode(bytes) else {
        return;
    };
    let _ = SessionId::from_slice(&env.session);
    match env.payload {
        Some(Payload::KeygenPrepare(p)) => {
            let _ = KeyId::new(p.key_id);
            let _ = p.scheme.parse::<Scheme>();
            let _: Vec<_> = p.parties.into_iter().map(NodeId::new).collect();
        }
        Some(Payload::SignPlan(p)) if !p.presignature_id.is_empty() => {
            let _ = SessionId::from_slice(&p.presignature_id);
        }
        Some(Payload::PresignStart(p)) => {
            let _ = KeyId::new(p.key_id);
            let _ = SessionId::from_slice(&p.generation);
            let _: Vec<_> = p.signers.into_iter().map(NodeId::new).collect();
        }
        _ => {}
    }
}

// ---- properties ----

#[test]
fn tx_decode__should_not_panic_on_arbitrary_bytes() {
    check("tx arbitrary", 2000, vec(any::<u8>(), 0..1024), |b| {
        decode_tx(&b);
        Ok(())
    });
}

#[test]
fn tx_decode__should_not_panic_on_mutated_valid_txs() {
    check(
        "tx mutated",
        1000,
        (tx_body(), mutations()),
        |(body, muts)| {
            let mut bytes = signed(body.encode_to_vec());
            decode_tx(&bytes);
            apply(&mut bytes, &muts);
            decode_tx(&bytes);
            Ok(())
        },
    );
}

#[test]
fn tx_validate__should_not_panic_on_well_signed_arbitrary_or_mutated_bodies() {
    let strategy = (
        tx_body(),
        proptest::option::of(mutations()),
        vec(any::<u8>(), 0..256),
    );
    check("tx validate", 1000, strategy, |(body, muts, raw)| {
        let mut body = body.encode_to_vec();
        if let Some(m) = muts {
            apply(&mut body, &m);
        }
        decode_tx(&signed(body));
        decode_tx(&signed(raw));
        Ok(())
    });
}

#[test]
fn tx_decode__should_roundtrip_every_valid_generated_body() {
    // Anything that validates re-encodes to a tx that decodes to the same message.
    check("tx roundtrip", 500, tx_body(), |body| {
        let key = SigningKey::from_bytes(&SIGNER);
        if let Ok(tx) = SignedTx::decode(&signed(body.encode_to_vec())) {
            let again = SignedTx::decode(&sign_tx(&key, &tx.chain_id, tx.sequence, tx.msg.clone()));
            prop_assert_eq!(again.map(|t| t.msg).ok(), Some(tx.msg));
        }
        Ok(())
    });
}

#[test]
fn p2p_envelope_decode__should_not_panic_on_arbitrary_bytes() {
    check("envelope arbitrary", 2000, vec(any::<u8>(), 0..1024), |b| {
        decode_envelope(&b);
        Ok(())
    });
}

#[test]
fn p2p_envelope_decode__should_not_panic_on_mutated_valid_envelopes() {
    check(
        "envelope mutated",
        1000,
        (envelope(), mutations()),
        |(env, muts)| {
            let mut bytes = env.encode_to_vec();
            prop_assert_eq!(wire::P2pEnvelope::decode(bytes.as_slice()).ok(), Some(env));
            apply(&mut bytes, &muts);
            decode_envelope(&bytes);
            Ok(())
        },
    );
}

/// Inputs found by the properties above (or worth pinning): each must decode to an error.
#[test]
fn tx_decode__should_reject_pinned_edge_cases() {
    let key = SigningKey::from_bytes(&SIGNER);
    let big = TxMsg::KeySign {
        key_id: KeyId::new("k").unwrap(),
        request_id: RequestId::new("r").unwrap(),
        message: vec![0; seqmpc_proto::tx::MAX_TX_BYTES],
        prehashed: false,
    };
    assert!(SignedTx::decode(&sign_tx(&key, "c", 0, big)).is_err());
    // A length prefix claiming u64::MAX bytes.
    assert!(
        SignedTx::decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
            .is_err()
    );
    assert!(wire::P2pEnvelope::decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..]).is_err());
}
