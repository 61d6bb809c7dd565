//! Transaction validation and execution against [`ChainState`]. Pure and deterministic: no
//! clock, no randomness, no I/O, no local MPC state.
//!
//! Every tx goes through `check` (CheckTx and the first half of delivery, read-only) and then
//! `apply` (FinalizeBlock only). A tx that fails `check` changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use seqmpc_module::evidence;
use seqmpc_module::job::{Job, ReshareJob};
use seqmpc_module::protocol::reshare::ReshareParams;
use seqmpc_proto::tx::{KeyGenOk, Outcome, SignedTx, TxMsg};
use seqmpc_proto::verify::VerifyError;
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme, SessionId};

use crate::genesis::Role;
use crate::state::{
    choose_dealers, choose_signers, ChainState, DeadlineItem, KeyEntry, KeyStatus, KeygenReport,
    ProvenBlame, ReshareEntry, ReshareStatus, SignEntry, SignStatus,
};

/// Why a tx is rejected. Each variant has a stable ABCI code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxError {
    /// Bytes are not a valid signed tx.
    #[error("malformed tx: {0}")]
    Malformed(String),
    /// Wrong chain id.
    #[error("wrong chain id: tx is for {got:?}, this chain is {expected:?}")]
    ChainId {
        /// This chain.
        expected: String,
        /// In the tx.
        got: String,
    },
    /// Wrong sequence.
    #[error("wrong sequence: expected {expected}, got {got} ({})", if got < expected { "replayed or already used" } else { "skipped" })]
    Sequence {
        /// Expected.
        expected: u64,
        /// In the tx.
        got: u64,
    },
    /// Signer may not send this tx.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Message is invalid against the state.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Referenced object missing.
    #[error("not found: {0}")]
    NotFound(String),
    /// Conflicts with existing state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The account sent more requests than a block admits.
    #[error("rate limited: account {account} already sent {limit} requests in this block; retry in a later block")]
    RateLimited {
        /// Account name.
        account: String,
        /// `max_requests_per_account_per_block`.
        limit: u32,
    },
}

impl TxError {
    /// ABCI code (never 0).
    pub fn code(&self) -> u32 {
        match self {
            TxError::Malformed(_) => 2,
            TxError::ChainId { .. } => 3,
            TxError::Sequence { .. } => 4,
            TxError::Unauthorized(_) => 5,
            TxError::Invalid(_) => 6,
            TxError::NotFound(_) => 7,
            TxError::Conflict(_) => 8,
            TxError::RateLimited { .. } => 9,
        }
    }
}

/// An ABCI event, before conversion to the proto type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Event type.
    pub kind: &'static str,
    /// Attributes.
    pub attrs: Vec<(&'static str, String)>,
}

fn ev(kind: &'static str, attrs: Vec<(&'static str, String)>) -> Event {
    Event { kind, attrs }
}

/// Effects collected while executing a block.
#[derive(Debug, Default)]
pub struct Effects {
    /// Block time in ms since the epoch (from the proposer), passed through to jobs.
    pub block_time_ms: u64,
    /// Jobs for the MPC module, handed over after Commit.
    pub jobs: Vec<Job>,
    /// Events of the current tx (or block).
    pub events: Vec<Event>,
    /// Request txs per account (hex key) in this block, for the rate limit.
    pub requests: BTreeMap<String, u32>,
}

/// Counts a request tx of an account against `max_requests_per_account_per_block` in
/// `counts` (per block at delivery, per block interval at CheckTx); other txs pass.
pub fn rate_limit(
    state: &ChainState,
    tx: &SignedTx,
    counts: &mut BTreeMap<String, u32>,
) -> Result<(), TxError> {
    let is_request = matches!(
        tx.msg,
        TxMsg::KeyGen { .. }
            | TxMsg::KeySign { .. }
            | TxMsg::KeyDelete { .. }
            | TxMsg::KeyReshare { .. }
    );
    let signer_hex = hex::encode(tx.signer.as_bytes());
    let Some(account) = state.accounts.get(&signer_hex).filter(|_| is_request) else {
        return Ok(());
    };
    let limit = state.limits.max_requests_per_account_per_block;
    let n = counts.entry(signer_hex).or_insert(0);
    if *n >= limit {
        return Err(TxError::RateLimited {
            account: account.name.clone(),
            limit,
        });
    }
    *n += 1;
    Ok(())
}

/// Who signed a tx.
enum Signer<'a> {
    Account(&'a crate::state::AccountEntry),
    Node(&'a NodeId),
}

fn signer_of<'a>(state: &'a ChainState, hex_key: &str) -> Result<Signer<'a>, TxError> {
    if let Some(a) = state.accounts.get(hex_key) {
        return Ok(Signer::Account(a));
    }
    if let Some(n) = state.node_keys.get(hex_key) {
        return Ok(Signer::Node(n));
    }
    Err(TxError::Unauthorized(format!(
        "signer {hex_key} is neither a genesis account nor a registered node"
    )))
}

fn require_role(signer: &Signer<'_>, role: Role, what: &str) -> Result<(), TxError> {
    match signer {
        Signer::Account(a) if a.roles.contains(&role) => Ok(()),
        Signer::Account(a) => Err(TxError::Unauthorized(format!(
            "account {:?} may not {what} (role {role:?} missing)",
            a.name
        ))),
        Signer::Node(n) => Err(TxError::Unauthorized(format!(
            "node {n} may not {what}: nodes only send results"
        ))),
    }
}

fn require_node<'a>(signer: &Signer<'a>, what: &str) -> Result<&'a NodeId, TxError> {
    match signer {
        Signer::Node(n) => Ok(n),
        Signer::Account(a) => Err(TxError::Unauthorized(format!(
            "account {:?} may not send {what}: only MPC nodes do",
            a.name
        ))),
    }
}

/// Checks a decoded tx against the state without changing it. `expected_seq` is the sequence
/// the signer must use (committed, or the mempool's view in CheckTx).
pub fn check(state: &ChainState, tx: &SignedTx, expected_seq: u64) -> Result<(), TxError> {
    check_envelope(state, tx, expected_seq)?;
    check_msg(state, tx, state.height.saturating_add(1))
}

fn check_envelope(state: &ChainState, tx: &SignedTx, expected_seq: u64) -> Result<(), TxError> {
    if tx.chain_id != state.chain_id {
        return Err(TxError::ChainId {
            expected: state.chain_id.clone(),
            got: tx.chain_id.clone(),
        });
    }
    signer_of(state, &hex::encode(tx.signer.as_bytes()))?;
    if tx.sequence != expected_seq {
        return Err(TxError::Sequence {
            expected: expected_seq,
            got: tx.sequence,
        });
    }
    Ok(())
}

fn check_msg(state: &ChainState, tx: &SignedTx, height: u64) -> Result<(), TxError> {
    let signer_hex = hex::encode(tx.signer.as_bytes());
    let signer = signer_of(state, &signer_hex)?;
    match &tx.msg {
        TxMsg::KeyGen {
            key_id,
            scheme,
            threshold,
            parties,
        } => {
            require_role(&signer, Role::Keygen, "request keygen")?;
            check_keygen(state, key_id, *scheme, *threshold, parties).map(|_| ())
        }
        TxMsg::KeySign {
            key_id,
            request_id,
            message,
            prehashed,
        } => {
            require_role(&signer, Role::Sign, "request signatures")?;
            check_sign(state, key_id, request_id, message, *prehashed).map(|_| ())
        }
        TxMsg::KeyDelete { key_id } => {
            require_role(&signer, Role::Delete, "delete keys")?;
            check_delete(state, key_id).map(|_| ())
        }
        TxMsg::KeyGenResult {
            key_id,
            session,
            outcome,
        } => {
            let node = require_node(&signer, "KeyGenResult")?;
            let key = check_keygen_result(state, node, key_id, session)?;
            check_culprits(outcome, &key.parties, "the keygen committee")?;
            proven_blame(state, node, || Ok(keygen_context(key)), outcome).map(|_| ())
        }
        TxMsg::SignResult {
            request_id,
            session,
            outcome,
            signing_package,
        } => {
            let node = require_node(&signer, "SignResult")?;
            let finished = check_sign_result(state, node, request_id, session, outcome, height)?;
            let Some(req) = state.sign_requests().get(request_id) else {
                return Ok(());
            };
            check_culprits(outcome, &req.signers, "the signers")?;
            if finished {
                return Ok(()); // a redundant report: a no-op, its evidence is not looked at
            }
            let ctx = || sign_context(state, req, signing_package);
            proven_blame(state, node, ctx, outcome).map(|_| ())
        }
        TxMsg::KeyDeleted { key_id } => {
            let node = require_node(&signer, "KeyDeleted")?;
            check_key_deleted(state, node, key_id).map(|_| ())
        }
        TxMsg::Heartbeat => require_node(&signer, "Heartbeat").map(|_| ()),
        TxMsg::NodeJoin {
            node_id,
            public_key,
            ..
        } => {
            require_role(&signer, Role::Registry, "admit nodes")?;
            check_node_join(state, node_id, public_key)
        }
        TxMsg::KeyReshare {
            key_id,
            parties,
            threshold,
        } => {
            require_role(&signer, Role::Keygen, "request resharing")?;
            check_reshare(state, key_id, parties, *threshold).map(|_| ())
        }
        TxMsg::ReshareResult {
            key_id,
            session,
            outcome,
        } => {
            let node = require_node(&signer, "ReshareResult")?;
            let r = check_reshare_result(state, node, key_id, session)?;
            let involved: Vec<NodeId> = r.dealers.iter().chain(&r.parties).cloned().collect();
            check_culprits(outcome, &involved, "the dealers and new parties")?;
            let ctx = || reshare_context(state, key_id, r);
            proven_blame(state, node, ctx, outcome).map(|_| ())
        }
    }
}

/// A failure report may blame only parties of its session (a node cannot smear an outsider).
fn check_culprits<T>(outcome: &Outcome<T>, parties: &[NodeId], what: &str) -> Result<(), TxError> {
    if let Outcome::Failed { culprits, .. } = outcome {
        if let Some(c) = culprits.iter().find(|c| !parties.contains(c)) {
            return Err(TxError::Invalid(format!(
                "culprit {c} is not one of {what} of the session"
            )));
        }
    }
    Ok(())
}

/// The blames a failure report proves with the culprits' signed p2p messages it quotes (none
/// without quoted messages). Quoted messages that are not genuine (not signed by the culprit,
/// of another session, not to the reporter) refuse the report (code 6).
fn proven_blame<T>(
    state: &ChainState,
    reporter: &NodeId,
    ctx: impl FnOnce() -> Result<evidence::Context, String>,
    outcome: &Outcome<T>,
) -> Result<Vec<ProvenBlame>, TxError> {
    let Outcome::Failed {
        culprits, evidence, ..
    } = outcome
    else {
        return Ok(Vec::new());
    };
    if evidence.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = ctx().map_err(|e| TxError::Invalid(format!("evidence: {e}")))?;
    let key_of = |n: &NodeId| {
        let e = state.nodes.get(n)?;
        <[u8; 32]>::try_from(hex::decode(&e.public_key).ok()?).ok()
    };
    let proven = evidence::check(&ctx, reporter, culprits, evidence, key_of)
        .map_err(|e| TxError::Invalid(format!("evidence: {e}")))?;
    Ok(proven
        .into_iter()
        .map(|p| ProvenBlame {
            culprit: p.culprit,
            reporter: reporter.clone(),
            reason: p.reason,
        })
        .collect())
}

/// A FROST signing as the chain knows it, for the evidence of a failure report: the key's
/// public key package counts only while the key is still of the request's generation.
fn sign_context(
    state: &ChainState,
    req: &SignEntry,
    signing_package: &[u8],
) -> Result<evidence::Context, String> {
    let key = state
        .keys()
        .get(&req.key_id)
        .ok_or_else(|| format!("no key {}", req.key_id))?;
    let message = hex::decode(&req.message).map_err(|e| format!("stored message: {e}"))?;
    let public_key_package = key
        .public_key_package
        .as_deref()
        .and_then(|p| hex::decode(p).ok())
        .unwrap_or_default();
    Ok(evidence::Context::Sign(evidence::SignContext {
        session: req.session,
        scheme: key.scheme,
        parties: key.parties.clone(),
        signers: req.signers.clone(),
        message,
        generation: (key.generation == req.generation).then_some(key.generation),
        public_key_package,
        signing_package: signing_package.to_vec(),
    }))
}

fn keygen_context(key: &KeyEntry) -> evidence::Context {
    evidence::Context::Keygen {
        session: key.session,
        scheme: key.scheme,
        parties: key.parties.clone(),
        threshold: key.threshold,
    }
}

fn reshare_context(
    state: &ChainState,
    key_id: &KeyId,
    r: &ReshareEntry,
) -> Result<evidence::Context, String> {
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| format!("no key {key_id}"))?;
    let public_key = key
        .public_key
        .as_deref()
        .and_then(|pk| hex::decode(pk).ok())
        .ok_or("the key has no public key")?;
    let t = |t: u32| u16::try_from(t).map_err(|_| format!("threshold {t} out of range"));
    Ok(evidence::Context::Reshare(ReshareParams {
        session: r.session,
        scheme: key.scheme,
        old_parties: r.old_parties.clone(),
        old_threshold: t(r.old_threshold)?,
        dealers: r.dealers.clone(),
        new_parties: r.parties.clone(),
        new_threshold: t(r.threshold)?,
        public_key,
    }))
}

/// A `NodeJoin` may not reuse a registered node id, nor a key of a node or an account (a key
/// names exactly one signer).
fn check_node_join(
    state: &ChainState,
    node_id: &NodeId,
    public_key: &[u8; 32],
) -> Result<(), TxError> {
    if state.nodes.contains_key(node_id) {
        return Err(TxError::Conflict(format!(
            "node {node_id} is already in the node registry"
        )));
    }
    let pk = hex::encode(public_key);
    if let Some(other) = state.node_keys.get(&pk) {
        return Err(TxError::Conflict(format!(
            "key {pk} is already registered for node {other}"
        )));
    }
    if let Some(a) = state.accounts.get(&pk) {
        return Err(TxError::Conflict(format!(
            "key {pk} is the key of account {:?}; a node needs a key of its own",
            a.name
        )));
    }
    Ok(())
}

fn check_keygen(
    state: &ChainState,
    key_id: &KeyId,
    scheme: Scheme,
    threshold: u32,
    parties: &[NodeId],
) -> Result<(Vec<NodeId>, u32), TxError> {
    let attempt = match state.keys().get(key_id) {
        None => 0,
        Some(k) if k.status == KeyStatus::Error => k.attempt.saturating_add(1),
        Some(k) => {
            return Err(TxError::Conflict(format!(
                "key id {key_id} is already used (status {:?}); key ids are never reused",
                k.status
            )))
        }
    };
    let committee = check_committee(state, scheme, threshold, parties)?;
    Ok((committee, attempt))
}

/// The committee a request names (empty: every registered node), sorted, checked against the
/// registry, the party limit and the scheme's threshold range.
fn check_committee(
    state: &ChainState,
    scheme: Scheme,
    threshold: u32,
    parties: &[NodeId],
) -> Result<Vec<NodeId>, TxError> {
    let committee: Vec<NodeId> = if parties.is_empty() {
        state.nodes.keys().cloned().collect()
    } else {
        let set: BTreeSet<&NodeId> = parties.iter().collect();
        if set.len() != parties.len() {
            return Err(TxError::Invalid("a party is listed twice".into()));
        }
        for p in parties {
            if !state.nodes.contains_key(p) {
                return Err(TxError::Invalid(format!(
                    "unknown party {p}: not in the node registry"
                )));
            }
        }
        set.into_iter().cloned().collect()
    };
    let n = committee.len() as u32;
    if n > state.limits.max_parties {
        return Err(TxError::Invalid(format!(
            "{n} parties exceed the limit of {}",
            state.limits.max_parties
        )));
    }
    // FROST: t = 1 would give every party the whole key. cggmp24's threshold DKG itself
    // refuses t < 2 (and signs with exactly t signers).
    let min_t = match scheme {
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr | Scheme::Cggmp24Secp256k1 => 2,
    };
    if threshold < min_t || threshold > n {
        return Err(TxError::Invalid(format!(
            "threshold {threshold} is out of range: {scheme} needs {min_t} <= threshold <= parties ({n})"
        )));
    }
    Ok(committee)
}

/// Checks a resharing request; returns the key and the new committee.
fn check_reshare<'a>(
    state: &'a ChainState,
    key_id: &KeyId,
    parties: &[NodeId],
    threshold: u32,
) -> Result<(&'a KeyEntry, Vec<NodeId>), TxError> {
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
    if key.status != KeyStatus::Ready {
        return Err(TxError::Conflict(format!(
            "key {key_id} is {:?}: only a READY key can be reshared",
            key.status
        )));
    }
    if let Some(r) = key
        .reshare
        .as_ref()
        .filter(|r| r.status == ReshareStatus::Pending)
    {
        return Err(TxError::Conflict(format!(
            "key {key_id} is already being reshared (session {}, deadline height {})",
            r.session, r.deadline_height
        )));
    }
    let committee = check_committee(state, key.scheme, threshold, parties)?;
    Ok((key, committee))
}

fn check_reshare_result<'a>(
    state: &'a ChainState,
    node: &NodeId,
    key_id: &KeyId,
    session: &SessionId,
) -> Result<&'a ReshareEntry, TxError> {
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
    let r = key
        .reshare
        .as_ref()
        .filter(|r| &r.session == session)
        .ok_or_else(|| {
            TxError::Invalid(format!(
                "result for session {session}, but key {key_id} has no resharing of that session"
            ))
        })?;
    if r.status != ReshareStatus::Pending {
        return Err(TxError::Conflict(format!(
            "resharing {session} of key {key_id} is not PENDING (status {:?})",
            r.status
        )));
    }
    if !r.parties.contains(node) {
        return Err(TxError::Unauthorized(format!(
            "node {node} is not a new party of the resharing of {key_id}"
        )));
    }
    if r.reports.contains_key(node) {
        return Err(TxError::Conflict(format!(
            "node {node} already reported for the resharing of {key_id}"
        )));
    }
    Ok(r)
}

fn check_sign<'a>(
    state: &'a ChainState,
    key_id: &KeyId,
    request_id: &RequestId,
    message: &[u8],
    prehashed: bool,
) -> Result<&'a KeyEntry, TxError> {
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
    if key.status != KeyStatus::Ready {
        let why = match key.status {
            KeyStatus::Pending => "its keygen is still PENDING",
            KeyStatus::Error => "its keygen ended in ERROR",
            KeyStatus::Deleting | KeyStatus::Deleted => "it is deleted",
            KeyStatus::Ready => "",
        };
        return Err(TxError::Invalid(format!("key {key_id} cannot sign: {why}")));
    }
    if prehashed && key.scheme != Scheme::Cggmp24Secp256k1 {
        return Err(TxError::Invalid(format!(
            "key {key_id} is a {} key: --prehashed applies to cggmp24-secp256k1 (ECDSA) only",
            key.scheme
        )));
    }
    if message.len() > state.limits.max_message_bytes as usize {
        return Err(TxError::Invalid(format!(
            "message of {} bytes exceeds the limit of {}",
            message.len(),
            state.limits.max_message_bytes
        )));
    }
    if state.sign_requests().contains_key(request_id) {
        return Err(TxError::Conflict(format!(
            "request id {request_id} is already used"
        )));
    }
    Ok(key)
}

fn check_delete<'a>(state: &'a ChainState, key_id: &KeyId) -> Result<&'a KeyEntry, TxError> {
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
    if let Some(r) = key
        .reshare
        .as_ref()
        .filter(|r| r.status == ReshareStatus::Pending)
    {
        return Err(TxError::Conflict(format!(
            "key {key_id} is being reshared: retry after the resharing ends (deadline height {})",
            r.deadline_height
        )));
    }
    match key.status {
        KeyStatus::Ready | KeyStatus::Error => Ok(key),
        KeyStatus::Pending => Err(TxError::Conflict(format!(
            "key {key_id} is PENDING: wait for its keygen to end"
        ))),
        KeyStatus::Deleting | KeyStatus::Deleted => Err(TxError::Conflict(format!(
            "key {key_id} is already deleted"
        ))),
    }
}

fn check_keygen_result<'a>(
    state: &'a ChainState,
    node: &NodeId,
    key_id: &KeyId,
    session: &SessionId,
) -> Result<&'a KeyEntry, TxError> {
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
    Ok(key)
}

/// Checks a sign result. Returns Ok(true) when it is a redundant success report for a request
/// already DONE (accepted as a no-op: every signer reports, the first valid one wins).
fn check_sign_result(
    state: &ChainState,
    node: &NodeId,
    request_id: &RequestId,
    session: &SessionId,
    outcome: &Outcome<Vec<u8>>,
    _height: u64,
) -> Result<bool, TxError> {
    let req = state
        .sign_requests()
        .get(request_id)
        .ok_or_else(|| TxError::NotFound(format!("sign request {request_id} does not exist")))?;
    if &req.session != session {
        return Err(TxError::Invalid(format!(
            "result for session {session}, but request {request_id} is session {}",
            req.session
        )));
    }
    if !req.signers.contains(node) {
        return Err(TxError::Unauthorized(format!(
            "node {node} is not a signer of request {request_id}"
        )));
    }
    if req.status != SignStatus::Pending {
        return Ok(true);
    }
    if let Outcome::Ok(sig) = outcome {
        let key = state
            .keys()
            .get(&req.key_id)
            .ok_or_else(|| TxError::NotFound(format!("key {} does not exist", req.key_id)))?;
        let message = hex::decode(&req.message).map_err(|e| TxError::Invalid(e.to_string()))?;
        verify_signature(key, &message, req.prehashed, sig)?;
    }
    Ok(false)
}

/// Length of a `cggmp24-secp256k1` signature in a `SignResult`: `r || s || v` (64-byte compact
/// low-s signature, then the recovery id).
pub const ECDSA_RESULT_LEN: usize = 65;

/// The 32-byte digest an ECDSA request signs: the message itself when prehashed (32 bytes,
/// checked at decode), else its SHA-256.
pub fn ecdsa_digest(message: &[u8], prehashed: bool) -> Result<[u8; 32], TxError> {
    use sha2::Digest as _;
    if prehashed {
        <[u8; 32]>::try_from(message).map_err(|_| {
            TxError::Invalid(format!(
                "a prehashed digest must be 32 bytes, got {}",
                message.len()
            ))
        })
    } else {
        Ok(sha2::Sha256::digest(message).into())
    }
}

/// Checks an ECDSA `r || s || v` over `digest` with libsecp256k1: `s` must be low (BIP 62) and
/// `v` must recover `pk` (33-byte compressed SEC 1).
pub fn verify_ecdsa(pk: &[u8], digest: &[u8; 32], sig: &[u8]) -> Result<(), String> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature as EcdsaSig};
    let pk = <[u8; 33]>::try_from(pk)
        .ok()
        .and_then(|b| secp256k1::PublicKey::from_slice(&b).ok())
        .ok_or("the key has no valid 33-byte compressed public key")?;
    let (rs, v) = match sig {
        [rs @ .., v] if sig.len() == ECDSA_RESULT_LEN => (rs, *v),
        _ => {
            return Err(format!(
                "an ECDSA result must be {ECDSA_RESULT_LEN} bytes (r || s || v), got {}",
                sig.len()
            ))
        }
    };
    let parsed = EcdsaSig::from_compact(rs).map_err(|_| "r || s is not a valid signature")?;
    let mut low = parsed;
    low.normalize_s();
    if low != parsed {
        return Err("s is not low (BIP 62): normalise s before submitting".into());
    }
    let msg = secp256k1::Message::from_digest(*digest);
    secp256k1::SECP256K1
        .verify_ecdsa(msg, &parsed, &pk)
        .map_err(|_| "signature does not verify")?;
    let id = RecoveryId::try_from(i32::from(v)).map_err(|_| format!("bad recovery id {v}"))?;
    let recovered = RecoverableSignature::from_compact(rs, id)
        .and_then(|r| secp256k1::SECP256K1.recover_ecdsa(msg, &r))
        .map_err(|_| format!("recovery id {v} recovers no key"))?;
    if recovered != pk {
        return Err(format!("recovery id {v} recovers another key"));
    }
    Ok(())
}

/// Verifies a signature against a READY key, with a verifier independent of the MPC library.
pub fn verify_signature(
    key: &KeyEntry,
    message: &[u8],
    prehashed: bool,
    sig: &[u8],
) -> Result<(), TxError> {
    let pk_hex = key
        .public_key
        .as_deref()
        .ok_or_else(|| TxError::Invalid(format!("key {} has no public key", key.key_id)))?;
    match key.scheme {
        // Ed25519 (RFC 8032 strict) or BIP340 against the x-only key: the same independent
        // verifiers the nodes use before a signature leaves them.
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr => {
            let pk = hex::decode(pk_hex).map_err(|e| TxError::Invalid(e.to_string()))?;
            let verify = match key.scheme {
                Scheme::FrostEd25519 => seqmpc_proto::verify::ed25519,
                _ => seqmpc_proto::verify::bip340,
            };
            verify(&pk, message, sig).map_err(|e| match e {
                VerifyError::Invalid => TxError::Invalid(format!(
                    "signature does not verify under key {}",
                    key.key_id
                )),
                other => TxError::Invalid(format!("key {}: {other}", key.key_id)),
            })
        }
        // ECDSA (libsecp256k1) over SHA-256(message), or over the message when prehashed.
        Scheme::Cggmp24Secp256k1 => {
            let pk = hex::decode(pk_hex).map_err(|e| TxError::Invalid(e.to_string()))?;
            let digest = ecdsa_digest(message, prehashed)?;
            verify_ecdsa(&pk, &digest, sig)
                .map_err(|e| TxError::Invalid(format!("ECDSA result for key {}: {e}", key.key_id)))
        }
    }
}

fn check_key_deleted<'a>(
    state: &'a ChainState,
    node: &NodeId,
    key_id: &KeyId,
) -> Result<&'a KeyEntry, TxError> {
    let key = state
        .keys()
        .get(key_id)
        .ok_or_else(|| TxError::NotFound(format!("key {key_id} does not exist")))?;
    if !key.parties.contains(node) {
        return Err(TxError::Unauthorized(format!(
            "node {node} is not a party of key {key_id}"
        )));
    }
    if key.status != KeyStatus::Deleting {
        return Err(TxError::Conflict(format!(
            "key {key_id} is not being deleted (status {:?})",
            key.status
        )));
    }
    if key.deleted_by.contains(node) {
        return Err(TxError::Conflict(format!(
            "node {node} already attested deletion of {key_id}"
        )));
    }
    Ok(key)
}

/// Delivers a tx in FinalizeBlock: full check, then (only if it passes) apply. The sequence
/// advances for every tx whose envelope is valid, even if its message then fails (as in the
/// Cosmos SDK), so a signer's later txs in the same block are not stranded.
pub fn deliver(
    state: &mut ChainState,
    tx: &SignedTx,
    height: u64,
    fx: &mut Effects,
) -> Result<(), TxError> {
    let signer_hex = hex::encode(tx.signer.as_bytes());
    check_envelope(state, tx, state.sequence(&signer_hex))?;
    let next = tx.sequence.saturating_add(1);
    state.set_sequence(&signer_hex, next);
    rate_limit(state, tx, &mut fx.requests)?;
    check_msg(state, tx, height)?;
    apply(state, tx, &signer_hex, height, fx);
    Ok(())
}

/// CGGMP24 sessions run for seconds (full signing) to minutes (aux info from fresh primes), so
/// their chain deadline is this many times the genesis `session_deadline_blocks`.
pub const CGGMP_KEYGEN_DEADLINE_FACTOR: u64 = 30;
/// See [`CGGMP_KEYGEN_DEADLINE_FACTOR`]; for a full CGGMP24 signing. A full signing costs
/// about 7 s of CPU on the 2-core reference machine, so 10 at once take over a minute: 20x
/// (200 s at 100 ms blocks, under the nodes' 300 s local timeout).
pub const CGGMP_SIGN_DEADLINE_FACTOR: u64 = 20;

/// Deadline height of a session of `scheme` started at `height`.
fn session_deadline(state: &ChainState, scheme: Scheme, keygen: bool, height: u64) -> u64 {
    let blocks = state.limits.session_deadline_blocks;
    let blocks = match (scheme, keygen) {
        (Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr, _) => blocks,
        (Scheme::Cggmp24Secp256k1, true) => blocks.saturating_mul(CGGMP_KEYGEN_DEADLINE_FACTOR),
        (Scheme::Cggmp24Secp256k1, false) => blocks.saturating_mul(CGGMP_SIGN_DEADLINE_FACTOR),
    };
    height.saturating_add(blocks)
}

fn apply(state: &mut ChainState, tx: &SignedTx, signer_hex: &str, height: u64, fx: &mut Effects) {
    let node = state.node_keys.get(signer_hex).cloned();
    // Any committed tx of a node shows it live (deterministic: block height only).
    if let Some(n) = &node {
        if state.last_seen(n) != Some(height) {
            state.set_seen(n, height);
        }
    }
    match &tx.msg {
        TxMsg::KeyGen {
            key_id,
            scheme,
            threshold,
            parties,
        } => {
            let Ok((committee, attempt)) =
                check_keygen(state, key_id, *scheme, *threshold, parties)
            else {
                return;
            };
            let deadline = session_deadline(state, *scheme, true, height);
            let session = SessionId::derive(
                "keygen",
                &state.chain_id,
                height,
                &tx.hash,
                key_id.as_str(),
                attempt,
            );
            state.put_key(KeyEntry {
                key_id: key_id.clone(),
                scheme: *scheme,
                threshold: *threshold,
                parties: committee.clone(),
                status: KeyStatus::Pending,
                public_key: None,
                public_key_package: None,
                error: None,
                culprits: Vec::new(),
                proven_blame: Vec::new(),
                session,
                attempt,
                generation: 0,
                requested_height: height,
                deadline_height: deadline,
                ready_height: None,
                reports: Default::default(),
                deleted_by: Default::default(),
                owner: signer_hex.to_owned(),
                reshare: None,
                reshares: 0,
            });
            state.add_deadline(deadline, DeadlineItem::KeyGen(key_id.clone(), attempt));
            fx.events.push(ev(
                "keygen_requested",
                vec![
                    ("key_id", key_id.to_string()),
                    ("session", session.to_string()),
                    ("attempt", attempt.to_string()),
                ],
            ));
            fx.jobs.push(Job::KeyGen {
                session,
                key_id: key_id.clone(),
                scheme: *scheme,
                threshold: *threshold,
                parties: committee,
                height,
                deadline_height: deadline,
                block_time_ms: fx.block_time_ms,
            });
        }
        TxMsg::KeySign {
            key_id,
            request_id,
            message,
            prehashed,
        } => {
            let Some(key) = state.keys().get(key_id) else {
                return;
            };
            let scheme = key.scheme;
            let deadline = session_deadline(state, scheme, false, height);
            let signers = choose_signers(&key.parties, key.threshold, key_id, request_id, |n| {
                state.is_live(n, height)
            });
            let session = SessionId::derive(
                "sign",
                &state.chain_id,
                height,
                &tx.hash,
                request_id.as_str(),
                0,
            );
            state.put_sign(SignEntry {
                request_id: request_id.clone(),
                key_id: key_id.clone(),
                message: hex::encode(message),
                prehashed: *prehashed,
                status: SignStatus::Pending,
                signature: None,
                recovery_id: None,
                error: None,
                culprits: Vec::new(),
                signers: signers.clone(),
                session,
                requested_height: height,
                deadline_height: deadline,
                done_height: None,
                submitted_by: None,
                generation: key.generation,
                proven_blame: Vec::new(),
            });
            state.add_deadline(deadline, DeadlineItem::Sign(request_id.clone()));
            fx.events.push(ev(
                "sign_requested",
                vec![
                    ("request_id", request_id.to_string()),
                    ("key_id", key_id.to_string()),
                    ("session", session.to_string()),
                ],
            ));
            fx.jobs.push(Job::Sign {
                session,
                request_id: request_id.clone(),
                key_id: key_id.clone(),
                message: message.clone(),
                prehashed: *prehashed,
                scheme,
                signers,
                height,
                deadline_height: deadline,
                block_time_ms: fx.block_time_ms,
            });
        }
        TxMsg::KeyDelete { key_id } => {
            let Some(key) = state.key_mut(key_id) else {
                return;
            };
            key.status = KeyStatus::Deleting;
            key.deleted_by.clear();
            fx.events
                .push(ev("key_deleting", vec![("key_id", key_id.to_string())]));
            fx.jobs.push(Job::Delete {
                key_id: key_id.clone(),
                parties: key.parties.clone(),
                height,
            });
        }
        TxMsg::KeyGenResult {
            key_id, outcome, ..
        } => {
            let Some(node) = node else { return };
            apply_keygen_result(state, &node, key_id, outcome, height, fx);
        }
        TxMsg::SignResult {
            request_id,
            outcome,
            signing_package,
            ..
        } => {
            let Some(node) = node else { return };
            // Checked at delivery already (a report with forged evidence never gets here).
            let proven = match state.sign_requests().get(request_id) {
                Some(req) if req.status == SignStatus::Pending => proven_blame(
                    state,
                    &node,
                    || sign_context(state, req, signing_package),
                    outcome,
                )
                .unwrap_or_default(),
                _ => Vec::new(),
            };
            let Some(req) = state.sign_mut(request_id) else {
                return;
            };
            if req.status != SignStatus::Pending {
                return; // redundant report of a finished request: no-op
            }
            match outcome {
                Outcome::Ok(sig) => {
                    req.status = SignStatus::Done;
                    // ECDSA results are r || s || v (checked in check_sign_result): keep r || s
                    // as the signature and v apart.
                    match sig.split_last() {
                        Some((v, rs)) if sig.len() == ECDSA_RESULT_LEN => {
                            req.signature = Some(hex::encode(rs));
                            req.recovery_id = Some(*v);
                        }
                        _ => req.signature = Some(hex::encode(sig)),
                    }
                    req.done_height = Some(height);
                    req.submitted_by = Some(node.clone());
                    fx.events.push(ev(
                        "sign_done",
                        vec![
                            ("request_id", request_id.to_string()),
                            ("signature", hex::encode(sig)),
                        ],
                    ));
                }
                Outcome::Failed {
                    error, culprits, ..
                } => {
                    req.status = SignStatus::Error;
                    req.error = Some(format!("{node}: {error}"));
                    req.culprits = culprits.clone();
                    req.proven_blame = proven.clone();
                    fx.events.push(ev(
                        "sign_failed",
                        vec![("request_id", request_id.to_string())],
                    ));
                }
            }
            let item = (req.deadline_height, DeadlineItem::Sign(request_id.clone()));
            state.remove_deadline(item.0, item.1);
            state.count_proven_blames(&proven);
        }
        TxMsg::KeyDeleted { key_id } => {
            let Some(node) = node else { return };
            let Some(key) = state.key_mut(key_id) else {
                return;
            };
            key.deleted_by.insert(node);
            if key.parties.iter().all(|p| key.deleted_by.contains(p)) {
                key.status = KeyStatus::Deleted;
                fx.events
                    .push(ev("key_deleted", vec![("key_id", key_id.to_string())]));
            }
        }
        // Recorded above, like every node tx.
        TxMsg::Heartbeat => {}
        TxMsg::NodeJoin {
            node_id,
            public_key,
            p2p_addr,
        } => {
            let pk = hex::encode(public_key);
            state.add_node(crate::state::NodeEntry {
                id: node_id.clone(),
                public_key: pk.clone(),
                p2p_addr: p2p_addr.clone(),
                proven_blames: 0,
            });
            fx.events.push(ev(
                "node_joined",
                vec![
                    ("node", node_id.to_string()),
                    ("public_key", pk),
                    ("p2p_addr", p2p_addr.clone()),
                ],
            ));
            fx.jobs.push(Job::NodeJoined {
                node: node_id.clone(),
                public_key: *public_key,
                p2p_addr: p2p_addr.clone(),
            });
        }
        TxMsg::KeyReshare {
            key_id,
            parties,
            threshold,
        } => {
            let Ok((_, committee)) = check_reshare(state, key_id, parties, *threshold) else {
                return;
            };
            start_reshare(state, key_id, committee, *threshold, &tx.hash, height, fx);
        }
        TxMsg::ReshareResult {
            key_id, outcome, ..
        } => {
            let Some(node) = node else { return };
            apply_reshare_result(state, &node, key_id, outcome, height, fx);
        }
    }
}

/// Starts a resharing (or refresh) of a READY key to `parties` with `threshold`. `seed` is the
/// requesting tx's hash (or, for a periodic refresh, a hash of the key and height).
fn start_reshare(
    state: &mut ChainState,
    key_id: &KeyId,
    parties: Vec<NodeId>,
    threshold: u32,
    seed: &[u8; 32],
    height: u64,
    fx: &mut Effects,
) {
    let Some(key) = state.keys().get(key_id) else {
        return;
    };
    let Some(public_key) = key.public_key.as_ref().and_then(|p| hex::decode(p).ok()) else {
        return;
    };
    let attempt = key
        .reshare
        .as_ref()
        .map_or(0, |r| r.attempt.saturating_add(1));
    let session = SessionId::derive(
        "reshare",
        &state.chain_id,
        height,
        seed,
        key_id.as_str(),
        attempt,
    );
    let dealers = choose_dealers(&key.parties, key.threshold, key_id, &session, |n| {
        state.is_live(n, height)
    });
    let deadline = session_deadline(state, key.scheme, true, height);
    let refresh = parties == key.parties && threshold == key.threshold;
    let entry = ReshareEntry {
        session,
        attempt,
        status: ReshareStatus::Pending,
        refresh,
        old_parties: key.parties.clone(),
        old_threshold: key.threshold,
        dealers: dealers.clone(),
        parties: parties.clone(),
        threshold,
        requested_height: height,
        deadline_height: deadline,
        done_height: None,
        reports: BTreeMap::new(),
        error: None,
        culprits: Vec::new(),
        proven_blame: Vec::new(),
    };
    let job = Job::Reshare(ReshareJob {
        session,
        key_id: key_id.clone(),
        scheme: key.scheme,
        key_session: key.session,
        old_parties: key.parties.clone(),
        old_threshold: key.threshold,
        dealers,
        new_parties: parties,
        new_threshold: threshold,
        public_key,
        generation: key.generation.saturating_add(1),
        height,
        deadline_height: deadline,
        block_time_ms: fx.block_time_ms,
    });
    if let Some(key) = state.key_mut(key_id) {
        key.reshare = Some(entry);
    }
    state.add_deadline(deadline, DeadlineItem::Reshare(key_id.clone(), attempt));
    fx.events.push(ev(
        "reshare_requested",
        vec![
            ("key_id", key_id.to_string()),
            ("session", session.to_string()),
            ("refresh", refresh.to_string()),
        ],
    ));
    fx.jobs.push(job);
}

fn apply_reshare_result(
    state: &mut ChainState,
    node: &NodeId,
    key_id: &KeyId,
    outcome: &Outcome<KeyGenOk>,
    height: u64,
    fx: &mut Effects,
) {
    let Some(key) = state.keys().get(key_id) else {
        return;
    };
    let Some(r) = key.reshare.as_ref() else {
        return;
    };
    // Checked at delivery already (a report with forged evidence never gets here).
    let proven = proven_blame(state, node, || reshare_context(state, key_id, r), outcome)
        .unwrap_or_default();
    let report = keygen_report(outcome);
    let mut reports = r.reports.clone();
    reports.insert(node.clone(), report.clone());
    let verdict: Option<Result<(), (String, Vec<NodeId>)>> = match &report {
        KeygenReport::Failed { error, culprits } => {
            Some(Err((format!("{node} reported: {error}"), culprits.clone())))
        }
        KeygenReport::Ok { .. } if reports.len() < r.parties.len() => None,
        KeygenReport::Ok { public_key, .. } => {
            let agree = reports.values().all(|x| x == &report);
            if !agree {
                Some(Err((
                    "new parties disagree on the public key, the dealt commitments or the \
                     verifying shares"
                        .into(),
                    Vec::new(),
                )))
            } else if key.public_key.as_ref() != Some(public_key) {
                Some(Err((
                    "new parties report a public key that is not the key's".into(),
                    Vec::new(),
                )))
            } else if let Err(e) = reported_package(key.scheme, &r.parties, outcome) {
                Some(Err((e, Vec::new())))
            } else {
                Some(Ok(()))
            }
        }
    };
    let (session, attempt, deadline) = (r.session, r.attempt, r.deadline_height);
    let old_parties = key.parties.clone();
    let generation = key.generation.saturating_add(1);
    let Some(key) = state.key_mut(key_id) else {
        return;
    };
    let Some(r) = key.reshare.as_mut() else {
        return;
    };
    r.reports = reports;
    match verdict {
        None => return,
        Some(Ok(())) => {
            r.status = ReshareStatus::Done;
            r.done_height = Some(height);
            let (parties, threshold) = (r.parties.clone(), r.threshold);
            key.parties = parties.clone();
            key.threshold = threshold;
            key.generation = generation;
            key.session = session;
            key.public_key_package = public_key_package(outcome);
            key.reshares = key.reshares.saturating_add(1);
            fx.events.push(ev(
                "key_reshared",
                vec![
                    ("key_id", key_id.to_string()),
                    ("generation", generation.to_string()),
                ],
            ));
            fx.jobs.push(Job::ReshareDone {
                key_id: key_id.clone(),
                session,
                old_parties,
                new_parties: parties,
                generation,
            });
        }
        Some(Err((reason, culprits))) => {
            fail_reshare(r, key_id, reason, culprits, height, fx);
            r.proven_blame = proven.clone();
            state.count_proven_blames(&proven);
        }
    }
    state.remove_deadline(deadline, DeadlineItem::Reshare(key_id.clone(), attempt));
    schedule_refresh(state, key_id, height);
}

/// Ends a PENDING resharing in ERROR; the key keeps its committee and shares.
fn fail_reshare(
    r: &mut ReshareEntry,
    key_id: &KeyId,
    reason: String,
    culprits: Vec<NodeId>,
    height: u64,
    fx: &mut Effects,
) {
    r.status = ReshareStatus::Error;
    r.error = Some(reason.clone());
    r.culprits = culprits;
    r.done_height = Some(height);
    fx.events.push(ev(
        "reshare_failed",
        vec![("key_id", key_id.to_string()), ("reason", reason.clone())],
    ));
    fx.jobs.push(Job::ReshareFailed {
        key_id: key_id.clone(),
        session: r.session,
        reason,
    });
}

/// Schedules the next periodic refresh of a key (genesis `refresh_every_blocks`, 0 = never).
fn schedule_refresh(state: &mut ChainState, key_id: &KeyId, height: u64) {
    let every = state.limits.refresh_every_blocks;
    if every > 0 {
        state.add_deadline(
            height.saturating_add(every),
            DeadlineItem::Refresh(key_id.clone()),
        );
    }
}

/// A periodic refresh is due at `height`: starts it if the key is READY, idle, and its shares
/// are at least `refresh_every_blocks` old (a later resharing scheduled its own refresh).
fn periodic_refresh(state: &mut ChainState, key_id: &KeyId, height: u64, fx: &mut Effects) {
    let Some(key) = state.keys().get(key_id) else {
        return;
    };
    let last_change = match &key.reshare {
        Some(r) if r.status == ReshareStatus::Pending => return,
        Some(r) => r.done_height.unwrap_or(r.requested_height),
        None => key.ready_height.unwrap_or(key.requested_height),
    };
    if key.status != KeyStatus::Ready
        || height < last_change.saturating_add(state.limits.refresh_every_blocks)
    {
        return;
    }
    let (parties, threshold) = (key.parties.clone(), key.threshold);
    let seed: [u8; 32] = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"seqmpc/refresh/v1\0");
        h.update(key_id.as_str().as_bytes());
        h.update(height.to_be_bytes());
        h.finalize().into()
    };
    start_reshare(state, key_id, parties, threshold, &seed, height, fx);
}

/// A node's keygen (or resharing) report as the chain keeps it: the public key package only
/// by its hash (the key keeps the one every party agreed on).
fn keygen_report(outcome: &Outcome<KeyGenOk>) -> KeygenReport {
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
fn reported_package(
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
fn public_key_package(outcome: &Outcome<KeyGenOk>) -> Option<String> {
    match outcome {
        Outcome::Ok(ok) if !ok.public_key_package.is_empty() => {
            Some(hex::encode(&ok.public_key_package))
        }
        _ => None,
    }
}

fn apply_keygen_result(
    state: &mut ChainState,
    node: &NodeId,
    key_id: &KeyId,
    outcome: &Outcome<KeyGenOk>,
    height: u64,
    fx: &mut Effects,
) {
    // Checked at delivery already (a report with forged evidence never gets here).
    let proven = match state.keys().get(key_id) {
        Some(key) => proven_blame(state, node, || Ok(keygen_context(key)), outcome),
        None => return,
    }
    .unwrap_or_default();
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
            let valid_point = match key.scheme {
                Scheme::FrostEd25519 => crate::state::parse_pubkey(public_key).is_ok(),
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
            };
            if !agree {
                Some(Err((
                    "parties disagree on the public key, the broadcast transcript or the \
                     verifying shares"
                        .into(),
                    Vec::new(),
                )))
            } else if !valid_point {
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
            fx.events.push(ev(
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
            fx.events.push(ev(
                "key_error",
                vec![("key_id", key_id.to_string()), ("reason", reason.clone())],
            ));
            fx.jobs.push(Job::KeyGenFailed {
                key_id: key_id.clone(),
                session,
                reason,
            });
        }
    }
}

/// Ends every session whose deadline is `<= height` (start of block `height`).
pub fn expire_deadlines(state: &mut ChainState, height: u64, fx: &mut Effects) {
    while let Some(first) = state.deadlines().first().cloned() {
        if first.0 > height {
            break;
        }
        state.remove_deadline(first.0, first.1.clone());
        match first.1 {
            DeadlineItem::KeyGen(key_id, attempt) => {
                let Some(key) = state.key_mut(&key_id) else {
                    continue;
                };
                if key.status != KeyStatus::Pending || key.attempt != attempt {
                    continue;
                }
                let missing: Vec<String> = key
                    .parties
                    .iter()
                    .filter(|p| !key.reports.contains_key(*p))
                    .map(|p| p.to_string())
                    .collect();
                let reason = format!(
                    "deadline passed at height {height}: no report from {}",
                    missing.join(", ")
                );
                key.status = KeyStatus::Error;
                key.error = Some(reason.clone());
                fx.events.push(ev(
                    "key_error",
                    vec![("key_id", key_id.to_string()), ("reason", reason.clone())],
                ));
                fx.jobs.push(Job::KeyGenFailed {
                    key_id,
                    session: key.session,
                    reason,
                });
            }
            DeadlineItem::Sign(request_id) => {
                let Some(req) = state.sign_mut(&request_id) else {
                    continue;
                };
                if req.status != SignStatus::Pending {
                    continue;
                }
                req.status = SignStatus::Error;
                req.error = Some(format!("deadline passed at height {height}"));
                fx.events.push(ev(
                    "sign_failed",
                    vec![("request_id", request_id.to_string())],
                ));
            }
            DeadlineItem::Reshare(key_id, attempt) => {
                let Some(key) = state.key_mut(&key_id) else {
                    continue;
                };
                let Some(r) = key
                    .reshare
                    .as_mut()
                    .filter(|r| r.status == ReshareStatus::Pending && r.attempt == attempt)
                else {
                    continue;
                };
                let missing: Vec<String> = r
                    .parties
                    .iter()
                    .filter(|p| !r.reports.contains_key(*p))
                    .map(|p| p.to_string())
                    .collect();
                let reason = format!(
                    "deadline passed at height {height}: no report from {}",
                    missing.join(", ")
                );
                fail_reshare(r, &key_id, reason, Vec::new(), height, fx);
                schedule_refresh(state, &key_id, height);
            }
            DeadlineItem::Refresh(key_id) => periodic_refresh(state, &key_id, height, fx),
        }
    }
}
