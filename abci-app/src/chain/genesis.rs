//! Genesis document: the MPC node registry, the authorized accounts and the chain limits.
//!
//! Carried verbatim (JSON) in `InitChain.app_state_bytes`; each `mpcd` also reads the same file
//! at start (for its p2p registry) and refuses an InitChain whose app state differs.

use std::collections::BTreeSet;

use seqmpc_proto::NodeId;
use serde::{Deserialize, Serialize};

/// The genesis document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Chain id every tx is bound to.
    pub chain_id: String,
    /// The MPC node registry.
    pub nodes: Vec<GenesisNode>,
    /// Accounts allowed to send request txs.
    pub accounts: Vec<GenesisAccount>,
    /// Limits.
    pub limits: Limits,
    /// Who approves changes that move key material to other nodes: resharing a key to another
    /// committee or threshold, and admitting a node. None: such changes are refused (a
    /// refresh, the same committee and threshold, needs no approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<Governance>,
}

/// Governance: `approvals` of `accounts` approve a proposal, which then executes
/// `delay_blocks` later unless cancelled meanwhile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Governance {
    /// Names of genesis accounts that vote (each once).
    pub accounts: Vec<String>,
    /// Approvals a proposal needs (1..=accounts). A proposer that is a governance account
    /// approves its own proposal.
    pub approvals: u32,
    /// Blocks between the last approval needed and the execution, during which the approved
    /// change is visible (`mpcctl proposals`) and any governance account or the proposer can
    /// cancel it. 0 with `approvals` 1: a governance account's own request executes at once.
    pub delay_blocks: u64,
    /// Blocks a proposal may wait for its approvals before it expires.
    #[serde(default = "default_proposal_expiry")]
    pub expiry_blocks: u64,
}

fn default_proposal_expiry() -> u64 {
    // An hour at 100 ms blocks.
    36_000
}

/// One MPC node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisNode {
    /// Node id, e.g. `node0`.
    pub id: NodeId,
    /// Hex of the 32-byte ed25519 node public key (also its libp2p identity).
    pub public_key: String,
    /// libp2p multiaddr, e.g. `/ip4/127.0.0.1/tcp/26711`.
    pub p2p_addr: String,
}

/// An account allowed to request MPC work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// Human name.
    pub name: String,
    /// Hex of the 32-byte ed25519 public key.
    pub public_key: String,
    /// What the account may request.
    pub roles: BTreeSet<Role>,
}

/// A permission of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May send `KeyGen`.
    Keygen,
    /// May send `KeySign`.
    Sign,
    /// May send `KeyDelete`.
    Delete,
    /// May send `NodeJoin` (propose admitting a new MPC node; governance approves it).
    Registry,
}

/// Chain limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most parties in one key's committee.
    pub max_parties: u32,
    /// Largest message a `KeySign` may carry, in bytes.
    pub max_message_bytes: u32,
    /// Blocks after the request within which a session must complete, else ERROR.
    pub session_deadline_blocks: u64,
    /// A node is live while its last tx (heartbeat or result) is at most this many blocks old;
    /// signers are chosen among live nodes first. Nodes never seen count from genesis.
    #[serde(default = "default_liveness_window")]
    pub liveness_window_blocks: u64,
    /// Most request txs (KeyGen, KeySign, KeyDelete) one account may have in one block; more
    /// are refused (code 9) at CheckTx (per block interval) and at delivery.
    #[serde(default = "default_requests_per_block")]
    pub max_requests_per_account_per_block: u32,
    /// Refresh every READY key (new shares, same committee and public key) this many blocks
    /// after it became READY or was last reshared; 0: only on request.
    #[serde(default)]
    pub refresh_every_blocks: u64,
    /// Blocks one signing attempt may take (CGGMP24: 20 times as many); then, or sooner on
    /// failure reports, the chain starts another attempt with other signers, until the
    /// request's own deadline (`session_deadline_blocks`).
    #[serde(default = "default_sign_attempt_blocks")]
    pub sign_attempt_blocks: u64,
    /// Blocks a CGGMP24 keygen may take, from its request to its result, waiting for every
    /// party's safe-prime set included (a set takes 28-300 s of a core, several minutes when
    /// 4 nodes share 2 cores at a cold start); then ERROR. 0 (genesis files from before this
    /// field): 30 times `session_deadline_blocks`.
    #[serde(default)]
    pub cggmp_keygen_deadline_blocks: u64,
    /// Blocks a finished sign request (DONE or ERROR) stays in the chain state; then it is
    /// pruned, so the state and its snapshots stay bounded under sustained signing. Its
    /// outcome stays in the `sign_done` / `sign_failed` event of the block that ended it
    /// (`block_results`), and its request id may be used again. 0 (genesis files from before
    /// this field): kept forever.
    #[serde(default)]
    pub sign_retention_blocks: u64,
    /// Least threshold of a new key or of a resharing's new committee (never below 2, the
    /// schemes' own floor).
    #[serde(default = "default_min_threshold")]
    pub min_threshold: u32,
}

fn default_min_threshold() -> u32 {
    2
}

fn default_sign_attempt_blocks() -> u64 {
    30
}

fn default_requests_per_block() -> u32 {
    1000
}

fn default_liveness_window() -> u64 {
    100
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_parties: 16,
            max_message_bytes: 4096,
            session_deadline_blocks: 100,
            liveness_window_blocks: default_liveness_window(),
            max_requests_per_account_per_block: default_requests_per_block(),
            refresh_every_blocks: 0,
            sign_attempt_blocks: default_sign_attempt_blocks(),
            // 15 minutes at 100 ms blocks: a cold start of 4 nodes on 2 cores.
            cggmp_keygen_deadline_blocks: 9000,
            // 10 minutes at 100 ms blocks.
            sign_retention_blocks: 6000,
            min_threshold: default_min_threshold(),
        }
    }
}
