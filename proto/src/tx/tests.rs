use super::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn keygen() -> TxMsg {
    TxMsg::KeyGen {
        key_id: KeyId::new("k1").unwrap(),
        scheme: Scheme::FrostEd25519,
        threshold: 2,
        parties: vec![],
    }
}

#[test]
fn decode__should_roundtrip_a_signed_tx() {
    let bytes = sign_tx(&key(), "chain", 3, keygen());
    let tx = SignedTx::decode(&bytes).unwrap();
    assert_eq!(tx.chain_id, "chain");
    assert_eq!(tx.sequence, 3);
    assert_eq!(tx.msg, keygen());
    assert_eq!(tx.signer, key().verifying_key());
}

#[test]
fn decode__should_reject_a_flipped_byte_anywhere() {
    let bytes = sign_tx(&key(), "chain", 3, keygen());
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 1;
        assert!(SignedTx::decode(&b).is_err(), "byte {i}");
    }
}

#[test]
fn decode__should_reject_garbage_and_zero_threshold() {
    assert!(SignedTx::decode(b"\xff\xff\xff").is_err());
    let mut m = keygen();
    if let TxMsg::KeyGen { threshold, .. } = &mut m {
        *threshold = 0;
    }
    let e = SignedTx::decode(&sign_tx(&key(), "c", 0, m)).unwrap_err();
    assert!(e.to_string().contains("threshold"), "{e}");
}

#[test]
fn decode__should_reject_a_prehashed_digest_that_is_not_32_bytes() {
    let sign = |len: usize| TxMsg::KeySign {
        key_id: KeyId::new("k1").unwrap(),
        request_id: RequestId::new("r1").unwrap(),
        message: vec![7; len],
        prehashed: true,
    };
    let e = SignedTx::decode(&sign_tx(&key(), "c", 0, sign(31))).unwrap_err();
    assert!(e.to_string().contains("must be 32 bytes, got 31"), "{e}");
    assert!(SignedTx::decode(&sign_tx(&key(), "c", 0, sign(33))).is_err());
    assert_eq!(
        SignedTx::decode(&sign_tx(&key(), "c", 0, sign(32)))
            .unwrap()
            .msg,
        sign(32)
    );
}

fn join(public_key: [u8; 32], p2p_addr: &str) -> TxMsg {
    TxMsg::NodeJoin {
        node_id: NodeId::new("node4").unwrap(),
        public_key,
        p2p_addr: p2p_addr.into(),
    }
}

#[test]
fn decode__should_roundtrip_a_node_join() {
    let pk = SigningKey::from_bytes(&[4u8; 32])
        .verifying_key()
        .to_bytes();
    let m = join(pk, "/ip4/127.0.0.1/tcp/26741");
    let tx = SignedTx::decode(&sign_tx(&key(), "c", 0, m.clone())).unwrap();
    assert_eq!(tx.msg, m);
}

#[test]
fn decode__should_reject_a_node_join_with_a_bad_key_or_address() {
    let pk = SigningKey::from_bytes(&[4u8; 32])
        .verifying_key()
        .to_bytes();
    let err = |m: TxMsg| {
        SignedTx::decode(&sign_tx(&key(), "c", 0, m))
            .unwrap_err()
            .to_string()
    };
    // Not a point: y = 2 has no x on the curve.
    let mut bad = [0u8; 32];
    bad[0] = 2;
    assert!(err(join(bad, "/ip4/127.0.0.1/tcp/1")).contains("public_key"));
    // The identity point has small order.
    let mut ident = [0u8; 32];
    ident[0] = 1;
    assert!(err(join(ident, "/ip4/127.0.0.1/tcp/1")).contains("small-order"));
    assert!(err(join(pk, "")).contains("p2p_addr"));
    assert!(err(join(pk, "127.0.0.1:26741")).contains("not a multiaddr"));
    let long = format!("/dns4/{}/tcp/1", "a".repeat(300));
    assert!(err(join(pk, &long)).contains("p2p_addr"));
    let body = wire::TxBody {
        chain_id: "c".into(),
        sequence: 0,
        msg: Some(tx_body::Msg::NodeJoin(wire::NodeJoin {
            node_id: "node4".into(),
            public_key: vec![1; 31],
            p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
        })),
    };
    let e = TxMsg::try_from(body.msg.unwrap()).unwrap_err().to_string();
    assert!(e.contains("must be 32 bytes"), "{e}");
}

#[test]
fn decode__should_roundtrip_key_admins_and_reject_bad_lists() {
    let pk = |b: u8| SigningKey::from_bytes(&[b; 32]).verifying_key().to_bytes();
    let admins = |admins: Vec<[u8; 32]>| TxMsg::KeyAdmins {
        key_id: KeyId::new("k1").unwrap(),
        admins,
    };
    for m in [admins(vec![]), admins(vec![pk(1), pk(2)])] {
        let tx = SignedTx::decode(&sign_tx(&key(), "c", 0, m.clone())).unwrap();
        assert_eq!(tx.msg, m);
    }
    let err = |m: TxMsg| {
        SignedTx::decode(&sign_tx(&key(), "c", 0, m))
            .unwrap_err()
            .to_string()
    };
    assert!(err(admins(vec![pk(1), pk(1)])).contains("listed twice"));
    let many = (0..=MAX_KEY_ADMINS as u8).map(pk).collect();
    assert!(err(admins(many)).contains("at most 16"));
    let mut ident = [0u8; 32];
    ident[0] = 1;
    assert!(err(admins(vec![ident])).contains("admins"));
}

#[test]
fn decode__should_accept_only_a_canonical_proposal_id() {
    let vote = |id: &str| TxMsg::ProposalVote {
        proposal_id: id.into(),
        cancel: false,
    };
    let id = proposal_id(&[0xab; 32]);
    assert_eq!(id, "abababababababab");
    let tx = SignedTx::decode(&sign_tx(&key(), "c", 0, vote(&id))).unwrap();
    assert_eq!(tx.msg, vote(&id));
    for bad in [
        "",
        "abab",
        "ABABABABABABABAB",
        "abababababababab0",
        "zbababababababab",
    ] {
        let e = SignedTx::decode(&sign_tx(&key(), "c", 0, vote(bad))).unwrap_err();
        assert!(e.to_string().contains("proposal_id"), "{bad}: {e}");
    }
}

#[test]
fn decode__should_refuse_a_tx_that_is_not_canonically_encoded() {
    let good = sign_tx(&key(), "chain", 3, keygen());
    assert!(SignedTx::decode(&good).is_ok());
    // An unknown field (tag 9, varint) after the envelope: same signature, other hash.
    let mut extra = good.clone();
    extra.extend_from_slice(&[0x48, 0x01]);
    let e = SignedTx::decode(&extra).unwrap_err().to_string();
    assert!(e.contains("canonical"), "{e}");
    // The signer field repeated (the last one wins in protobuf): refused too.
    let tx = wire::Tx::decode(good.as_slice()).unwrap();
    let mut twice = good.clone();
    twice.extend_from_slice(&[0x12, 0x20]);
    twice.extend_from_slice(&tx.signer);
    let e = SignedTx::decode(&twice).unwrap_err().to_string();
    assert!(e.contains("canonical"), "{e}");
    // A body with an unknown field, validly signed: refused.
    let mut body = wire::TxBody {
        chain_id: "chain".into(),
        sequence: 3,
        msg: Some(keygen().into()),
    }
    .encode_to_vec();
    body.extend_from_slice(&[0x48, 0x01]);
    let signature = key().sign(&sign_bytes(&body));
    let bytes = wire::Tx {
        body,
        signer: key().verifying_key().to_bytes().to_vec(),
        signature: signature.to_bytes().to_vec(),
    }
    .encode_to_vec();
    let e = SignedTx::decode(&bytes).unwrap_err().to_string();
    assert!(e.contains("body") && e.contains("canonical"), "{e}");
}
