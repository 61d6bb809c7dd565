//! `KeyGenResult`: a party of a PENDING key reports its keygen outcome. The key becomes READY
//! when every party reported the same public key, transcript and public key package, ERROR on
//! the first failure or disagreement.

use seqmpc_module::evidence;
use seqmpc_module::job::Job;
use seqmpc_proto::tx::{KeyGenOk, Outcome};
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};

use super::blame::{check_culprits, proven_blame};
use super::reshare::schedule_refresh;
use super::{ev, Exec, Handler, Signer, TxError};
use crate::chain::entries::{DeadlineItem, KeyEntry, KeyStatus, KeygenReport, ProvenBlame};
use crate::chain::state::{parse_pubkey, ChainState};

/// The message.
pub(crate) struct KeyGenResult<'a> {
    pub key_id: &'a KeyId,
    pub session: &'a SessionId,
    pub outcome: &'a Outcome<KeyGenOk>,
}

impl Handler for KeyGenResult<'_> {
    /// The reporting node and the blames its report proves.
    type Checked = (NodeId, Vec<ProvenBlame>);

    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        _height: u64,
    ) -> Result<Self::Checked, TxError> {
        let node = signer.require_node("KeyGenResult")?;
        let (key_id, session) = (self.key_id, self.session);
        let key = state
            .keys()
            .get(key_id)
            .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
        if &key.session != session {
            return Err(TxError::Invalid(format!(
                "result for session {session}, but key {key_id} is at session {}",
                key.session
            )));
        }
        if key.status != KeyStatus::Pending {
            return Err(TxError::Conflict(format!(
                "key {key_id} is not PENDING (status {:?})",
                key.status
            )));
        }
        if !key.parties.contains(node) {
            return Err(TxError::Unauthorized(format!(
                "node {node} is not a party of key {key_id}"
            )));
        }
        if key.reports.contains_key(node) {
            return Err(TxError::Conflict(format!(
                "node {node} already reported for key {key_id}"
            )));
        }
        check_culprits(self.outcome, &key.parties, "the keygen committee")?;
        let proven = proven_blame(state, node, || Ok(keygen_context(key)), self.outcome)?;
        Ok((node.clone(), proven))
    }

    fn execute(&self, state: &mut ChainState, (node, proven): Self::Checked, cx: &mut Exec<'_>) {
        let (key_id, outcome, height) = (self.key_id, self.outcome, cx.height);
        let Some(key) = state.key_mut(key_id) else {
            return;
        };
        let report = keygen_report(outcome);
        key.reports.insert(node.clone(), report.clone());
        let verdict: Option<Result<String, (String, Vec<NodeId>)>> = match &report {
            KeygenReport::Failed { error, culprits } => {
                Some(Err((format!("{node} reported: {error}"), culprits.clone())))
            }
            KeygenReport::Ok { .. } if key.reports.len() < key.parties.len() => None,
            KeygenReport::Ok { public_key, .. } => {
                let agree = key.reports.values().all(|r| r == &report);
                if !agree {
                    Some(Err((
                        "parties disagree on the public key, the broadcast transcript or the \
                         verifying shares"
                            .into(),
                        Vec::new(),
                    )))
                } else if !valid_point(key.scheme, public_key) {
                    Some(Err((
                        "reported public key is not a valid point".into(),
                        Vec::new(),
                    )))
                } else if let Err(e) = reported_package(key.scheme, &key.parties, outcome) {
                    Some(Err((e, Vec::new())))
                } else {
                    Some(Ok(public_key.clone()))
                }
            }
        };
        let item = (
            key.deadline_height,
            DeadlineItem::KeyGen(key_id.clone(), key.attempt),
        );
        match verdict {
            None => {}
            Some(Ok(pk)) => {
                key.status = KeyStatus::Ready;
                key.public_key = Some(pk.clone());
                key.public_key_package = public_key_package(outcome);
                key.generation = 1;
                key.ready_height = Some(height);
                state.remove_deadline(item.0, item.1);
                schedule_refresh(state, key_id, height);
                cx.fx.events.push(ev(
                    "key_ready",
                    vec![("key_id", key_id.to_string()), ("public_key", pk)],
                ));
            }
            Some(Err((reason, culprits))) => {
                key.status = KeyStatus::Error;
                key.error = Some(reason.clone());
                key.culprits = culprits;
                key.proven_blame = proven.clone();
                let session = key.session;
                state.remove_deadline(item.0, item.1);
                state.count_proven_blames(&proven);
                cx.fx.events.push(ev(
                    "key_error",
                    vec![("key_id", key_id.to_string()), ("reason", reason.clone())],
                ));
                cx.fx.jobs.push(Job::KeyGenFailed {
                    key_id: key_id.clone(),
                    session,
                    reason,
                });
            }
        }
    }
}

/// Whether a reported hex public key is a valid key of `scheme`.
fn valid_point(scheme: Scheme, public_key: &str) -> bool {
    match scheme {
        Scheme::FrostEd25519 => parse_pubkey(public_key).is_ok(),
        // BIP340: 32-byte x-only key, the x coordinate of a curve point.
        Scheme::FrostSecp256k1Tr => hex::decode(public_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .is_some_and(|b| secp256k1::XOnlyPublicKey::from_byte_array(b).is_ok()),
        // ECDSA: 33-byte compressed SEC 1 point.
        Scheme::Cggmp24Secp256k1 => hex::decode(public_key)
            .ok()
            .filter(|b| b.len() == 33)
            .is_some_and(|b| secp256k1::PublicKey::from_slice(&b).is_ok()),
    }
}

fn keygen_context(key: &KeyEntry) -> evidence::Context {
    evidence::Context::Keygen {
        session: key.session,
        scheme: key.scheme,
        parties: key.parties.clone(),
        threshold: key.threshold,
    }
}

/// A node's keygen (or resharing) report as the chain keeps it: the public key package only
/// by its hash (the key keeps the one every party agreed on).
pub(super) fn keygen_report(outcome: &Outcome<KeyGenOk>) -> KeygenReport {
    use sha2::Digest as _;
    match outcome {
        Outcome::Ok(ok) => KeygenReport::Ok {
            public_key: hex::encode(&ok.public_key),
            transcript_hash: hex::encode(ok.transcript_hash),
            public_key_package_hash: if ok.public_key_package.is_empty() {
                String::new()
            } else {
                hex::encode(sha2::Sha256::digest(&ok.public_key_package))
            },
        },
        Outcome::Failed {
            error, culprits, ..
        } => KeygenReport::Failed {
            error: error.clone(),
            culprits: culprits.clone(),
        },
    }
}

/// Checks the public key package of a successful report that every party agreed on
/// ([`evidence::check_public_key_package`]).
pub(super) fn reported_package(
    scheme: Scheme,
    parties: &[NodeId],
    outcome: &Outcome<KeyGenOk>,
) -> Result<(), String> {
    let Outcome::Ok(ok) = outcome else {
        return Ok(());
    };
    evidence::check_public_key_package(scheme, parties, &ok.public_key_package, &ok.public_key)
        .map_err(|e| format!("reported {e}"))
}

/// The hex public key package of a successful report (`None` for CGGMP24).
pub(super) fn public_key_package(outcome: &Outcome<KeyGenOk>) -> Option<String> {
    match outcome {
        Outcome::Ok(ok) if !ok.public_key_package.is_empty() => {
            Some(hex::encode(&ok.public_key_package))
        }
        _ => None,
    }
}
