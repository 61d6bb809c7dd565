//! Transactions: validation and execution against [`ChainState`]. Pure and deterministic: no
//! clock, no randomness, no I/O, no local MPC state.
//!
//! Each tx type has one file under `tx/` holding its `Handler`: `check` (read-only: CheckTx
//! and the first half of delivery) beside `execute` (delivery only, once `check` passed; it
//! gets what `check` found). `dispatch` is the one place that maps a message to its handler.
//! A tx that fails `check` changes nothing.

mod blame;
mod delete;
mod heartbeat;
mod key_admins;
mod key_deleted;
pub(crate) mod keygen;
mod keygen_result;
mod node_join;
mod node_remove;
mod node_rotate_key;
pub(crate) mod proposal;
pub(crate) mod reshare;
mod reshare_result;
mod session;
pub(crate) mod sign;
pub(crate) mod sign_attempt;
mod sign_result;

use std::collections::BTreeMap;

use seqmpc_module::job::Job;
use seqmpc_proto::tx::{SignedTx, TxMsg};
use seqmpc_proto::NodeId;

use crate::chain::entries::{AccountEntry, KeyEntry};
use crate::chain::genesis::Role;
use crate::chain::state::ChainState;

pub use session::{CGGMP_KEYGEN_DEADLINE_FACTOR, CGGMP_SIGN_DEADLINE_FACTOR};

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
    /// ABCI code of [`TxError::NotFound`] (also a query's "no such entry").
    pub const NOT_FOUND: u32 = 7;

    /// ABCI code (never 0).
    pub fn code(&self) -> u32 {
        match self {
            TxError::Malformed(_) => 2,
            TxError::ChainId { .. } => 3,
            TxError::Sequence { .. } => 4,
            TxError::Unauthorized(_) => 5,
            TxError::Invalid(_) => 6,
            TxError::NotFound(_) => Self::NOT_FOUND,
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

pub(crate) fn ev(kind: &'static str, attrs: Vec<(&'static str, String)>) -> Event {
    Event { kind, attrs }
}

/// The ABCI codespace of every rejected tx.
pub const CODESPACE: &str = "seqmpc";

/// Effects collected while executing a block.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Block time in ms since the epoch (from the proposer), passed through to jobs.
    pub block_time_ms: u64,
    /// The block's hash (from the consensus engine): mixed into signer choices.
    pub block_hash: Vec<u8>,
    /// Jobs for the MPC module, handed over after Commit.
    pub jobs: Vec<Job>,
    /// Events of the current tx (or block).
    pub events: Vec<Event>,
    /// Request txs per account (hex key) in this block, for the rate limit.
    pub requests: BTreeMap<String, u32>,
}

/// Counts a request tx of an account against `max_requests_per_account_per_block` in
/// `counts` (per block at delivery, per block interval at CheckTx); other txs pass.
pub(crate) fn rate_limit(
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
            | TxMsg::KeyAdmins { .. }
            | TxMsg::NodeJoin { .. }
            | TxMsg::NodeRotateKey { .. }
            | TxMsg::NodeRemove { .. }
            | TxMsg::ProposalVote { .. }
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
    *n = n.saturating_add(1); // n < limit: never saturates
    Ok(())
}

/// Checks a decoded tx against the state without changing it (CheckTx: see
/// [`crate::chain::check_tx`]). `expected_seq` is the sequence
/// the signer must use (committed, or the mempool's view in CheckTx).
pub(crate) fn check(state: &ChainState, tx: &SignedTx, expected_seq: u64) -> Result<(), TxError> {
    check_envelope(state, tx, expected_seq)?;
    let signer_hex = hex::encode(tx.signer.as_bytes());
    let height = state.height.saturating_add(1);
    dispatch(
        &tx.msg,
        CheckOnly {
            state,
            signer_hex: &signer_hex,
            height,
        },
    )
}

/// Delivers a tx in FinalizeBlock: full check, then (only if it passes) execution. The
/// sequence advances for every tx whose envelope is valid, even if its message then fails (as
/// in the Cosmos SDK), so a signer's later txs in the same block are not stranded.
pub(crate) fn deliver(
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
    dispatch(
        &tx.msg,
        Deliver {
            state,
            cx: Exec {
                height,
                tx_hash: &tx.hash,
                signer_hex: &signer_hex,
                fx,
            },
        },
    )
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

/// One tx type: its check and its execution, side by side in its own file.
pub(crate) trait Handler {
    /// What `check` found, handed to `execute` (owned: `execute` changes the state).
    type Checked;

    /// Checks the message against the state (the signer's right to send it, the objects it
    /// refers to, quoted evidence) without changing it. `height` is the height it would
    /// execute at.
    fn check(
        &self,
        state: &ChainState,
        signer: &Signer<'_>,
        height: u64,
    ) -> Result<Self::Checked, TxError>;

    /// Applies a message `check` passed.
    fn execute(&self, state: &mut ChainState, checked: Self::Checked, cx: &mut Exec<'_>);
}

/// What a handler's `execute` gets besides the state and its message.
pub(crate) struct Exec<'a> {
    /// Height of the block.
    pub height: u64,
    /// Hash of the tx (seeds session ids).
    pub tx_hash: &'a [u8; 32],
    /// The signer's public key, hex.
    pub signer_hex: &'a str,
    /// Events, jobs and the block time.
    pub fx: &'a mut Effects,
}

/// What to do with a message's handler: [`dispatch`] calls `visit` with it.
trait Visit {
    type Out;
    fn visit<H: Handler>(self, handler: H) -> Self::Out;
}

/// The one dispatch: each message to its handler.
fn dispatch<V: Visit>(msg: &TxMsg, v: V) -> V::Out {
    match msg {
        TxMsg::KeyGen {
            key_id,
            scheme,
            threshold,
            parties,
        } => v.visit(keygen::KeyGen {
            key_id,
            scheme: *scheme,
            threshold: *threshold,
            parties,
        }),
        TxMsg::KeySign {
            key_id,
            request_id,
            message,
            prehashed,
        } => v.visit(sign::KeySign {
            key_id,
            request_id,
            message,
            prehashed: *prehashed,
        }),
        TxMsg::KeyDelete { key_id } => v.visit(delete::KeyDelete { key_id }),
        TxMsg::KeyGenResult {
            key_id,
            session,
            outcome,
        } => v.visit(keygen_result::KeyGenResult {
            key_id,
            session,
            outcome,
        }),
        TxMsg::SignResult {
            request_id,
            session,
            outcome,
            signing_package,
        } => v.visit(sign_result::SignResult {
            request_id,
            session,
            outcome,
            signing_package,
        }),
        TxMsg::KeyDeleted { key_id } => v.visit(key_deleted::KeyDeleted { key_id }),
        TxMsg::Heartbeat => v.visit(heartbeat::Heartbeat),
        TxMsg::NodeJoin {
            node_id,
            public_key,
            p2p_addr,
        } => v.visit(node_join::NodeJoin {
            node_id,
            public_key,
            p2p_addr,
        }),
        TxMsg::KeyReshare {
            key_id,
            parties,
            threshold,
        } => v.visit(reshare::KeyReshare {
            key_id,
            parties,
            threshold: *threshold,
        }),
        TxMsg::ReshareResult {
            key_id,
            session,
            outcome,
        } => v.visit(reshare_result::ReshareResult {
            key_id,
            session,
            outcome,
        }),
        TxMsg::KeyAdmins { key_id, admins } => v.visit(key_admins::KeyAdmins { key_id, admins }),
        TxMsg::ProposalVote {
            proposal_id,
            cancel,
        } => v.visit(proposal::ProposalVote {
            proposal_id,
            cancel: *cancel,
        }),
        TxMsg::NodeRotateKey {
            node_id,
            public_key,
        } => v.visit(node_rotate_key::NodeRotateKey {
            node_id,
            public_key,
        }),
        TxMsg::NodeRemove { node_id } => v.visit(node_remove::NodeRemove { node_id }),
    }
}

/// CheckTx: the handler's check only.
struct CheckOnly<'s> {
    state: &'s ChainState,
    signer_hex: &'s str,
    height: u64,
}

impl Visit for CheckOnly<'_> {
    type Out = Result<(), TxError>;

    fn visit<H: Handler>(self, handler: H) -> Self::Out {
        let signer = signer_of(self.state, self.signer_hex)?;
        handler.check(self.state, &signer, self.height).map(|_| ())
    }
}

/// Delivery: the handler's check, then its execution.
struct Deliver<'s> {
    state: &'s mut ChainState,
    cx: Exec<'s>,
}

impl Visit for Deliver<'_> {
    type Out = Result<(), TxError>;

    fn visit<H: Handler>(mut self, handler: H) -> Self::Out {
        let height = self.cx.height;
        let checked = {
            let signer = signer_of(self.state, self.cx.signer_hex)?;
            handler.check(self.state, &signer, height)?
        };
        // Any committed tx of a node shows it live (deterministic: block height only).
        if let Some(n) = self.state.node_keys.get(self.cx.signer_hex).cloned() {
            if self.state.last_seen(&n) != Some(height) {
                self.state.set_seen(&n, height);
            }
        }
        handler.execute(self.state, checked, &mut self.cx);
        Ok(())
    }
}

/// Who signed a tx.
pub(crate) enum Signer<'a> {
    Account(&'a AccountEntry),
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

impl<'a> Signer<'a> {
    /// An account with `role`; `what` names the action in the error.
    pub(crate) fn require_role(&self, role: Role, what: &str) -> Result<(), TxError> {
        match self {
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

    /// The key's owner or one of the admins it named (any role checked before); `what` names
    /// the action in the error.
    pub(crate) fn require_key_user(&self, key: &KeyEntry, what: &str) -> Result<(), TxError> {
        match self {
            Signer::Account(a) if a.public_key == key.owner || key.admins.contains(&a.public_key) => {
                Ok(())
            }
            Signer::Account(a) => Err(TxError::Unauthorized(format!(
                "account {:?} may not {what} key {}: only its owner and the admins the owner named (KeyAdmins) may",
                a.name, key.key_id
            ))),
            Signer::Node(n) => Err(TxError::Unauthorized(format!(
                "node {n} may not {what} key {}: nodes only send results",
                key.key_id
            ))),
        }
    }

    /// The signing account (an error for a node); `what` names the tx in the error.
    pub(crate) fn require_account(&self, what: &str) -> Result<&'a AccountEntry, TxError> {
        match self {
            Signer::Account(a) => Ok(a),
            Signer::Node(n) => Err(TxError::Unauthorized(format!(
                "node {n} may not send {what}: nodes only send results"
            ))),
        }
    }

    /// A registered node; `what` names the tx in the error.
    pub(crate) fn require_node(&self, what: &str) -> Result<&'a NodeId, TxError> {
        match self {
            Signer::Node(n) => Ok(n),
            Signer::Account(a) => Err(TxError::Unauthorized(format!(
                "account {:?} may not send {what}: only MPC nodes do",
                a.name
            ))),
        }
    }
}
