//! Every key of the chain state's write journal, in one place (STYLE.md rule 9). Keys are
//! hierarchical strings with zero-padded numbers so that their byte order is meaningful.

use seqmpc_proto::{KeyId, NodeId, RequestId};

use crate::chain::entries::DeadlineItem;

/// A key.
pub fn key(id: &KeyId) -> String {
    format!("key/{id}")
}

/// A sign request.
pub fn sign(id: &RequestId) -> String {
    format!("sign/{id}")
}

/// The next sequence of a signer (hex public key).
pub fn sequence(signer_hex: &str) -> String {
    format!("seq/{signer_hex}")
}

/// Height of the last committed tx of a node (its liveness).
pub fn seen(node: &NodeId) -> String {
    format!("seen/{node}")
}

/// A node admitted by a `NodeJoin` tx (genesis nodes are not journaled: the genesis holds them).
pub fn node(node: &NodeId) -> String {
    format!("node/{node}")
}

/// A pending deadline.
pub fn deadline(height: u64, item: &DeadlineItem) -> String {
    match item {
        DeadlineItem::KeyGen(k, attempt) => {
            format!("deadline/{height:020}/keygen/{k}/{attempt:010}")
        }
        DeadlineItem::Sign(r) => format!("deadline/{height:020}/sign/{r}"),
        DeadlineItem::Reshare(k, attempt) => {
            format!("deadline/{height:020}/reshare/{k}/{attempt:010}")
        }
        DeadlineItem::Refresh(k) => format!("deadline/{height:020}/refresh/{k}"),
    }
}
