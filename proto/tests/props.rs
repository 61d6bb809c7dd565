//! Property tests: decoding never panics on any input, and valid txs round-trip.
#![allow(non_snake_case, clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use prost::Message;
use seqmpc_proto::tx::{sign_tx, SignedTx, TxMsg};
use seqmpc_proto::wire;
use seqmpc_proto::{KeyId, RequestId, Scheme};

proptest! {
    #[test]
    fn decode__should_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SignedTx::decode(&bytes);
        let _ = wire::P2pEnvelope::decode(bytes.as_slice());
    }

    #[test]
    fn decode__should_never_panic_on_signed_arbitrary_bodies(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        // A well-signed envelope around arbitrary body bytes: reaches body and field validation.
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut sb = seqmpc_proto::tx::TX_SIGN_PREFIX.to_vec();
        sb.extend_from_slice(&body);
        let tx = wire::Tx {
            body,
            signer: key.verifying_key().to_bytes().to_vec(),
            signature: ed25519_dalek::Signer::sign(&key, &sb).to_bytes().to_vec(),
        };
        let _ = SignedTx::decode(&tx.encode_to_vec());
    }

    #[test]
    fn sign_tx__should_roundtrip(
        key_id in "[a-zA-Z0-9._-]{1,64}",
        request_id in "[a-zA-Z0-9._-]{1,64}",
        message in proptest::collection::vec(any::<u8>(), 0..300),
        seq in any::<u64>(),
        threshold in 1u32..100,
    ) {
        let key = SigningKey::from_bytes(&[5; 32]);
        for msg in [
            TxMsg::KeySign { key_id: KeyId::new(key_id.clone()).unwrap(), request_id: RequestId::new(request_id.clone()).unwrap(), message: message.clone(), prehashed: false },
            TxMsg::KeyGen { key_id: KeyId::new(key_id.clone()).unwrap(), scheme: Scheme::FrostEd25519, threshold, parties: vec![] },
        ] {
            let tx = SignedTx::decode(&sign_tx(&key, "c", seq, msg.clone())).unwrap();
            prop_assert_eq!(tx.msg, msg);
            prop_assert_eq!(tx.sequence, seq);
        }
    }
}

proptest! {
    #[test]
    fn sign_tx__should_roundtrip_node_joins(
        node_id in "[a-zA-Z0-9._-]{1,32}",
        seed in any::<[u8; 32]>(),
        port in any::<u16>(),
        seq in any::<u64>(),
    ) {
        let key = SigningKey::from_bytes(&[5; 32]);
        let msg = TxMsg::NodeJoin {
            node_id: seqmpc_proto::NodeId::new(node_id).unwrap(),
            public_key: SigningKey::from_bytes(&seed).verifying_key().to_bytes(),
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{port}"),
        };
        let tx = SignedTx::decode(&sign_tx(&key, "c", seq, msg.clone())).unwrap();
        prop_assert_eq!(tx.msg, msg);
    }
}
