//! Raw protobuf types, generated from `proto/seqmpc/v1/*.proto` at build time (`build.rs`:
//! protox and prost-build, no `protoc`). The comments of the `.proto` files are their docs.
//! `tests/kat.rs` pins their encoding.
//!
//! These are what goes over the wire. Logic never uses them directly: see [`crate::tx`] and [`crate::ids`],
//! whose `TryFrom` conversions validate every field.

include!(concat!(env!("OUT_DIR"), "/seqmpc.v1.rs"));

/// Domain of the p2p message signatures: never a tx sign doc (those start with a protobuf tag).
pub const P2P_SIGNING_DOMAIN: &[u8] = b"seqmpc/p2p-message/v1\0";

/// What a node signs for each p2p message it sends: SHA-256 over the domain, the sender and
/// recipient ids (each length-prefixed) and the message bytes. Session ids are derived from the
/// chain id, so a signed message cannot be quoted on another chain or in another session.
pub fn p2p_signing_digest(from: &str, to: &str, message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(P2P_SIGNING_DOMAIN);
    for id in [from, to] {
        h.update((id.len() as u64).to_be_bytes());
        h.update(id.as_bytes());
    }
    h.update(message);
    h.finalize().into()
}
