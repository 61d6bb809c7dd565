//! Known-answer tests of the wire encoding: each tx message variant (in a signed `Tx` envelope)
//! and each `P2pEnvelope` payload variant, built from fixed field contents, must encode to the
//! pinned bytes and decode back to the same value.
//!
//! The hex constants were produced by the hand-written prost structs that were deployed before
//! the types were generated from `proto/seqmpc/v1/*.proto`: a change of any constant is a change
//! of the wire format (chain txs, p2p messages, quoted evidence).
#![allow(non_snake_case, clippy::unwrap_used)]

use std::fmt::Debug;

use prost::Message;
use seqmpc_proto::wire::{self, p2p_envelope::Payload, tx_body::Msg};

/// Encodes `value`, compares with `pinned` (hex), decodes `pinned` and compares with `value`.
fn assert_pinned<M: Message + Default + PartialEq + Debug>(value: &M, pinned: &str) -> M {
    let encoded = hex::encode(value.encode_to_vec());
    assert_eq!(encoded, pinned, "encoding changed");
    let decoded = M::decode(hex::decode(pinned).unwrap().as_slice()).unwrap();
    assert_eq!(&decoded, value, "decoding changed");
    decoded
}

/// A signed envelope around a body carrying `msg`: checks the envelope against `pinned` and the
/// body it carries against the body that went in.
fn assert_tx_pinned(msg: Msg, pinned: &str) {
    let body = wire::TxBody {
        chain_id: "seqmpc-kat".into(),
        sequence: 300,
        msg: Some(msg),
    };
    let tx = wire::Tx {
        body: body.encode_to_vec(),
        signer: vec![0x5a; 32],
        signature: vec![0xa5; 64],
    };
    let decoded = assert_pinned(&tx, pinned);
    assert_eq!(wire::TxBody::decode(decoded.body.as_slice()).unwrap(), body);
}

/// An envelope of session `[0x0b; 32]` carrying `payload`, checked against `pinned`.
fn assert_p2p_pinned(payload: Payload, pinned: &str) {
    let envelope = wire::P2pEnvelope {
        session: vec![0x0b; 32],
        payload: Some(payload),
    };
    assert_pinned(&envelope, pinned);
}

fn parties(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// A quoted p2p message, as carried by keygen and signing failures.
fn evidence() -> wire::SignedP2pMessage {
    let envelope = wire::P2pEnvelope {
        session: vec![0x01; 32],
        payload: Some(Payload::SignRound2(wire::SignRound2 {
            share: vec![0x0d; 4],
            package_hash: vec![0x0e; 4],
        })),
    };
    wire::SignedP2pMessage {
        from: "node2".into(),
        to: "node0".into(),
        envelope: envelope.encode_to_vec(),
        signature: vec![0x06; 64],
    }
}

// ---- tx messages ----

#[test]
fn tx_key_gen__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::KeyGen(wire::KeyGen {
        key_id: "key-1".into(),
        scheme: "frost-ed25519".into(),
        threshold: 3,
        parties: parties(&["node0", "node1", "node2"]),
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a3e0a0a7365716d70632d6b617410ac02522d0a056b65792d31120d66726f73",
            "742d65643235353139180322056e6f64653022056e6f64653122056e6f646532",
            "12205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "5a5a1a40a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5"
        ),
    );
}

#[test]
fn tx_key_sign__should_encode_to_the_pinned_bytes_and_decode_back() {
    // 130 message bytes: a two-byte length prefix.
    let msg = Msg::KeySign(wire::KeySign {
        key_id: "key-1".into(),
        request_id: "req-7".into(),
        message: (0..130).collect(),
        prehashed: true,
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0aa7010a0a7365716d70632d6b617410ac025a95010a056b65792d3112057265",
            "712d371a8201000102030405060708090a0b0c0d0e0f10111213141516171819",
            "1a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30313233343536373839",
            "3a3b3c3d3e3f404142434445464748494a4b4c4d4e4f50515253545556575859",
            "5a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70717273747576777879",
            "7a7b7c7d7e7f8081200112205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_key_delete__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::KeyDelete(wire::KeyDelete {
        key_id: "key-1".into(),
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a180a0a7365716d70632d6b617410ac0262070a056b65792d3112205a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_key_gen_result__should_encode_to_the_pinned_bytes_and_decode_back() {
    // Every field set (success and failure fields alike), so every tag is pinned.
    let msg = Msg::KeyGenResult(wire::KeyGenResult {
        key_id: "key-1".into(),
        session: vec![0x01; 32],
        public_key: vec![0x02; 32],
        transcript_hash: vec![0x03; 32],
        error: "bad share".into(),
        culprits: parties(&["node2"]),
        evidence: vec![evidence()],
        public_key_package: vec![0x04; 8],
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0aa1020a0a7365716d70632d6b617410ac026a8f020a056b65792d3112200101",
            "0101010101010101010101010101010101010101010101010101010101011a20",
            "0202020202020202020202020202020202020202020202020202020202020202",
            "2220030303030303030303030303030303030303030303030303030303030303",
            "03032a0962616420736861726532056e6f6465323a83010a056e6f6465321205",
            "6e6f6465301a310a200101010101010101010101010101010101010101010101",
            "01010101010101010182010c0a040d0d0d0d12040e0e0e0e2240060606060606",
            "0606060606060606060606060606060606060606060606060606060606060606",
            "0606060606060606060606060606060606060606060606060606420804040404",
            "0404040412205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "5a5a5a5a5a5a1a40a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_sign_result__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::SignResult(wire::SignResult {
        request_id: "req-7".into(),
        session: vec![0x01; 32],
        signature: vec![0x07; 64],
        error: "bad share".into(),
        culprits: parties(&["node1", "node3"]),
        evidence: vec![evidence()],
        signing_package: vec![0x08; 16],
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0aae020a0a7365716d70632d6b617410ac02729c020a057265712d3712200101",
            "0101010101010101010101010101010101010101010101010101010101011a40",
            "0707070707070707070707070707070707070707070707070707070707070707",
            "0707070707070707070707070707070707070707070707070707070707070707",
            "22096261642073686172652a056e6f6465312a056e6f6465333283010a056e6f",
            "64653212056e6f6465301a310a20010101010101010101010101010101010101",
            "010101010101010101010101010182010c0a040d0d0d0d12040e0e0e0e224006",
            "0606060606060606060606060606060606060606060606060606060606060606",
            "060606060606060606060606060606060606060606060606060606060606063a",
            "100808080808080808080808080808080812205a5a5a5a5a5a5a5a5a5a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_key_deleted__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::KeyDeleted(wire::KeyDeleted {
        key_id: "key-1".into(),
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a180a0a7365716d70632d6b617410ac027a070a056b65792d3112205a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_heartbeat__should_encode_to_the_pinned_bytes_and_decode_back() {
    assert_tx_pinned(
        Msg::Heartbeat(wire::Heartbeat {}),
        concat!(
            "0a120a0a7365716d70632d6b617410ac0282010012205a5a5a5a5a5a5a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_node_join__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::NodeJoin(wire::NodeJoin {
        node_id: "node4".into(),
        public_key: vec![0x09; 32],
        p2p_addr: "/ip4/127.0.0.1/tcp/26741".into(),
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a550a0a7365716d70632d6b617410ac028a01430a056e6f6465341220090909",
            "09090909090909090909090909090909090909090909090909090909091a182f",
            "6970342f3132372e302e302e312f7463702f323637343112205a5a5a5a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_key_reshare__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::KeyReshare(wire::KeyReshare {
        key_id: "key-1".into(),
        new_parties: parties(&["node0", "node1", "node4"]),
        new_threshold: 2,
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a300a0a7365716d70632d6b617410ac0292011e0a056b65792d3112056e6f64",
            "653012056e6f64653112056e6f646534180212205a5a5a5a5a5a5a5a5a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_key_admins__should_encode_to_the_pinned_bytes_and_decode_back() {
    // Pinned from an independent encoder (a few lines of Python writing protobuf varints and
    // length-delimited fields), not from prost.
    let msg = Msg::KeyAdmins(wire::KeyAdmins {
        key_id: "key-1".into(),
        admins: vec![vec![0x07; 32], vec![0x08; 32]],
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a5d0a0a7365716d70632d6b617410ac02a2014b0a056b65792d311220070707",
            "0707070707070707070707070707070707070707070707070707070707122008",
            "0808080808080808080808080808080808080808080808080808080808080812",
            "205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "5a1a40a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5"
        ),
    );
}

#[test]
fn tx_proposal_vote__should_encode_to_the_pinned_bytes_and_decode_back() {
    // Pinned from the same independent encoder as `tx_key_admins`.
    let msg = Msg::ProposalVote(wire::ProposalVote {
        proposal_id: "abababababababab".into(),
        cancel: true,
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a260a0a7365716d70632d6b617410ac02aa01140a1061626162616261626162",
            "616261626162100112205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a1a40a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_node_rotate_key__should_encode_to_the_pinned_bytes_and_decode_back() {
    // Pinned from a hand-written protobuf encoder (Python, varints and length prefixes).
    let msg = Msg::NodeRotateKey(wire::NodeRotateKey {
        node_id: "node2".into(),
        public_key: vec![0x09; 32],
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a3b0a0a7365716d70632d6b617410ac02b201290a056e6f6465321220090909",
            "090909090909090909090909090909090909090909090909090909090912205a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a",
            "40a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5"
        ),
    );
}

#[test]
fn tx_node_remove__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::NodeRemove(wire::NodeRemove {
        node_id: "node2".into(),
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a190a0a7365716d70632d6b617410ac02ba01070a056e6f64653212205a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_reshare_result__should_encode_to_the_pinned_bytes_and_decode_back() {
    let msg = Msg::ReshareResult(wire::KeyGenResult {
        key_id: "key-1".into(),
        session: vec![0x01; 32],
        public_key: vec![0x02; 32],
        transcript_hash: vec![0x03; 32],
        public_key_package: vec![0x04; 8],
        ..Default::default()
    });
    assert_tx_pinned(
        msg,
        concat!(
            "0a89010a0a7365716d70632d6b617410ac029a01770a056b65792d3112200101",
            "0101010101010101010101010101010101010101010101010101010101011a20",
            "0202020202020202020202020202020202020202020202020202020202020202",
            "2220030303030303030303030303030303030303030303030303030303030303",
            "03034208040404040404040412205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a1a40a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"
        ),
    );
}

#[test]
fn tx_body_without_msg__should_encode_to_the_pinned_bytes_and_decode_back() {
    let body = wire::TxBody {
        chain_id: "seqmpc-kat".into(),
        sequence: 0,
        msg: None,
    };
    assert_pinned(&body, "0a0a7365716d70632d6b6174");
}

// ---- p2p payloads ----

#[test]
fn p2p_keygen_prepare__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::KeygenPrepare(wire::KeyGenPrepare {
        key_id: "key-1".into(),
        scheme: "cggmp24-secp256k1".into(),
        threshold: 2,
        parties: parties(&["node0", "node1", "node2"]),
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b52310a056b65792d3112116367676d7032342d736563703235366b311802",
            "22056e6f64653022056e6f64653122056e6f646532"
        ),
    );
}

#[test]
fn p2p_keygen_ready__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::KeygenReady(wire::KeyGenReady {
        existing_public_key: vec![0x02; 33],
        error: "pending".into(),
        aux_fingerprint: vec![0x0c; 32],
        has_prime_set: true,
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b5a500a210202020202020202020202020202020202020202020202020202",
            "02020202020202120770656e64696e671a200c0c0c0c0c0c0c0c0c0c0c0c0c0c",
            "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c2001"
        ),
    );
}

#[test]
fn p2p_keygen_start__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::KeygenStart(wire::KeyGenStart { reuse_aux: true });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b62020801"
        ),
    );
}

#[test]
fn p2p_keygen_start_default__should_encode_to_the_pinned_bytes_and_decode_back() {
    // An empty payload message still selects the variant.
    let payload = Payload::KeygenStart(wire::KeyGenStart { reuse_aux: false });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b6200"
        ),
    );
}

#[test]
fn p2p_dkg_round1__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::DkgRound1(wire::DkgRound1 {
        package: vec![0x11; 16],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b6a120a1011111111111111111111111111111111"
        ),
    );
}

#[test]
fn p2p_dkg_round2__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::DkgRound2(wire::DkgRound2 {
        package: vec![0x12; 16],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b72120a1012121212121212121212121212121212"
        ),
    );
}

#[test]
fn p2p_sign_round1__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::SignRound1(wire::SignRound1 {
        commitments: vec![0x13; 16],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b7a120a1013131313131313131313131313131313"
        ),
    );
}

#[test]
fn p2p_sign_round2__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::SignRound2(wire::SignRound2 {
        share: vec![0x14; 32],
        package_hash: vec![0x15; 32],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b8201440a2014141414141414141414141414141414141414141414141414",
            "1414141414141412201515151515151515151515151515151515151515151515",
            "151515151515151515"
        ),
    );
}

#[test]
fn p2p_abort__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::Abort(wire::SessionAbort {
        reason: "timeout".into(),
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b8a01090a0774696d656f7574"
        ),
    );
}

#[test]
fn p2p_cggmp__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::Cggmp(wire::CggmpPayload {
        msg: vec![0x02, 0x01, 0x16, 0x16, 0x16, 0x16],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b9201080a06020116161616"
        ),
    );
}

#[test]
fn p2p_sign_plan__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::SignPlan(wire::SignPlan {
        presignature_id: vec![0x17; 32],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b9a01220a2017171717171717171717171717171717171717171717171717",
            "17171717171717"
        ),
    );
}

#[test]
fn p2p_presign_start__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::PresignStart(wire::PresignStart {
        key_id: "key-1".into(),
        signers: parties(&["node0", "node2"]),
        generation: vec![0x18; 32],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0ba201370a056b65792d3112056e6f64653012056e6f6465321a2018181818",
            "18181818181818181818181818181818181818181818181818181818"
        ),
    );
}

#[test]
fn p2p_reshare_deal__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::ReshareDeal(wire::ReshareDeal {
        commitment: vec![0x19; 8],
        old_public: vec![0x1a; 8],
        share: vec![0x1b; 8],
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0baa011e0a08191919191919191912081a1a1a1a1a1a1a1a1a081b1b1b1b1b",
            "1b1b1b"
        ),
    );
}

#[test]
fn p2p_reshare_aux__should_encode_to_the_pinned_bytes_and_decode_back() {
    let payload = Payload::ReshareAux(wire::ReshareAux {
        fingerprint: vec![0x1c; 32],
        has_prime_set: false,
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0bb201220a201c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c",
            "1c1c1c1c1c1c1c"
        ),
    );
    // Holding a safe-prime set: field 2, varint 1.
    let payload = Payload::ReshareAux(wire::ReshareAux {
        fingerprint: vec![0x1c; 32],
        has_prime_set: true,
    });
    assert_p2p_pinned(
        payload,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0bb201240a201c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c",
            "1c1c1c1c1c1c1c1001"
        ),
    );
}

#[test]
fn p2p_envelope_without_payload__should_encode_to_the_pinned_bytes_and_decode_back() {
    let envelope = wire::P2pEnvelope {
        session: vec![0x0b; 32],
        payload: None,
    };
    assert_pinned(
        &envelope,
        concat!(
            "0a200b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b0b"
        ),
    );
}
