//! A node's local key records checked against the chain, its source of truth (issue 5:
//! `node-status` shows a `diverged` flag). The key store alone cannot tell a record rolled back
//! to an older generation (its associated data binds the generation it carries), nor a share
//! lost with its record; the chain can: it knows each key's current keygen session, public key
//! and status.
//!
//! Only settled states are compared, so a session in progress never shows as a divergence: a
//! node stores its share READY before it reports, the chain marks a key READY only once every
//! party reported, and DELETED only once every party attested.

use seqmpc_module::store::ShareStatus;
use seqmpc_proto::{KeyId, NodeId, SessionId};
use serde::Serialize;

use crate::chain::{ChainState, KeyStatus};

/// What the comparison needs of a local record (no secret).
#[derive(Clone, Debug)]
pub struct LocalKey {
    /// Key id.
    pub key_id: KeyId,
    /// The keygen session that produced the record.
    pub session: SessionId,
    /// Local status.
    pub status: ShareStatus,
    /// Hex public key (empty until known).
    pub public_key: String,
}

/// One disagreement between this node's store and the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// Key id.
    pub key_id: KeyId,
    /// What disagrees.
    pub reason: String,
}

/// Every disagreement between `local` (this node's records) and the chain, by key id.
pub fn divergences(me: &NodeId, local: &[LocalKey], chain: &ChainState) -> Vec<Divergence> {
    let mut out = Vec::new();
    let mut push = |key_id: &KeyId, reason: String| {
        out.push(Divergence {
            key_id: key_id.clone(),
            reason,
        })
    };
    for rec in local {
        let Some(key) = chain.keys().get(&rec.key_id) else {
            push(&rec.key_id, "no such key on chain".into());
            continue;
        };
        if !key.parties.contains(me) {
            push(
                &rec.key_id,
                "this node is not a party of the key on chain".into(),
            );
            continue;
        }
        match key.status {
            KeyStatus::Ready => {
                if rec.status != ShareStatus::Ready {
                    push(
                        &rec.key_id,
                        format!("chain READY, local share {:?}", rec.status),
                    );
                } else if rec.session != key.session
                    || key.public_key.as_deref() != Some(rec.public_key.as_str())
                {
                    push(
                        &rec.key_id,
                        "local share is not the one the chain records (another keygen session or \
                         public key: an older record restored?)"
                            .into(),
                    );
                }
            }
            KeyStatus::Deleted => push(&rec.key_id, "chain DELETED, local share present".into()),
            KeyStatus::Deleting if key.deleted_by.contains(me) => push(
                &rec.key_id,
                "this node attested deletion, local share present".into(),
            ),
            KeyStatus::Error if rec.status == ShareStatus::Ready && rec.session == key.session => {
                push(&rec.key_id, "chain ERROR, local share READY".into())
            }
            KeyStatus::Pending | KeyStatus::Deleting | KeyStatus::Error => {}
        }
    }
    for key in chain.keys().values() {
        let settled = matches!(key.status, KeyStatus::Ready);
        if settled && key.parties.contains(me) && !local.iter().any(|r| r.key_id == key.key_id) {
            push(&key.key_id, "chain READY, no local share".into());
        }
    }
    out.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    out
}
