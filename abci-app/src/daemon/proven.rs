//! Verified reads of the chain state (`mpcctl key --verify`): one entry read with
//! `abci_query` and `prove`, through tendermint-rpc's `HttpClient`, checked against the app
//! hash of the header of the next height (CometBFT puts the app hash after block H in header
//! H + 1). The proof is an ICS23 proof of the state's Merkle tree
//! ([`crate::chain::merkle`]); an absent entry comes with a proof of its absence.
//!
//! What this checks: that the value is the one the chain committed under that header's app
//! hash. What it does not: that the header is the chain's. That is a light client's work
//! (validator signatures over the header); the answer names the header's hash so that it can
//! be compared with another RPC's.

use std::time::{Duration, Instant};

use prost_013::Message as _;
use tendermint_rpc::client::CompatMode;
use tendermint_rpc::{Client as _, HttpClient};

use crate::chain::merkle::{self, PROOF_OP_TYPE};

/// How long to wait for the header after the answered height.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// An entry read and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The state key.
    pub key: String,
    /// The entry's JSON (None: proven absent).
    pub value: Option<Vec<u8>>,
    /// The height the answer is for.
    pub height: u64,
    /// The header the proof was checked against (height + 1): its height, hash and app hash.
    pub header_height: u64,
    /// The header's hash, hex uppercase.
    pub header_hash: String,
    /// The app hash the proof verifies against, hex uppercase.
    pub app_hash: String,
}

/// Why an entry could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The RPC failed or refused.
    #[error("RPC {url}: {reason}")]
    Rpc {
        /// The RPC URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The query failed (not an absence).
    #[error("query {path} failed (code {code}): {log}")]
    Query {
        /// The path.
        path: String,
        /// ABCI code.
        code: u32,
        /// Its log.
        log: String,
    },
    /// The answer carries no proof of this tree.
    #[error("the answer for {0} carries no {PROOF_OP_TYPE} proof")]
    NoProof(String),
    /// The proof does not decode, or names another key.
    #[error("the proof for {key} is malformed: {reason}")]
    Malformed {
        /// The state key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The proof does not verify against the header's app hash.
    #[error(
        "the proof for {key} at height {height} does NOT verify against the app hash {app_hash} \
         of header {header_height}"
    )]
    Invalid {
        /// The state key.
        key: String,
        /// Height answered.
        height: u64,
        /// The header's height.
        header_height: u64,
        /// Its app hash.
        app_hash: String,
    },
    /// No header after the answered height came in time.
    #[error("no header at height {0} within {HEADER_TIMEOUT:?}")]
    NoHeader(u64),
}

/// Reads `path` (with `data`) at the latest height with a proof from the CometBFT RPC at
/// `rpc_url` and verifies it (see the module doc).
pub fn read_verified(rpc_url: &str, path: &str, data: &[u8]) -> Result<Verified, ProofError> {
    let rpc = |reason: String| ProofError::Rpc {
        url: rpc_url.to_owned(),
        reason,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| rpc(e.to_string()))?;
    rt.block_on(async {
        let client = HttpClient::builder(rpc_url.parse().map_err(|e| rpc(format!("{e}")))?)
            .compat_mode(CompatMode::V0_38)
            .build()
            .map_err(|e| rpc(e.to_string()))?;
        let q = client
            .abci_query(Some(path.to_owned()), data.to_vec(), None, true)
            .await
            .map_err(|e| rpc(e.to_string()))?;
        let key = String::from_utf8_lossy(&q.key).into_owned();
        let not_found = crate::chain::tx::TxError::NotFound(String::new()).code();
        let value = match q.code.value() {
            0 => Some(q.value.clone()),
            c if c == not_found && q.proof.is_some() => None,
            code => {
                return Err(ProofError::Query {
                    path: path.to_owned(),
                    code,
                    log: q.log,
                })
            }
        };
        let op = q
            .proof
            .as_ref()
            .and_then(|p| p.ops.iter().find(|o| o.field_type == PROOF_OP_TYPE))
            .ok_or_else(|| ProofError::NoProof(path.to_owned()))?;
        let malformed = |reason: String| ProofError::Malformed {
            key: key.clone(),
            reason,
        };
        if op.key != q.key {
            return Err(malformed("the proof is for another key".into()));
        }
        let proof = ics23::CommitmentProof::decode(op.data.as_slice())
            .map_err(|e| malformed(e.to_string()))?;
        let height = q.height.value();
        let header_height = height.saturating_add(1);
        let header = next_header(&client, header_height)
            .await
            .map_err(|e| match e {
                Some(reason) => rpc(reason),
                None => ProofError::NoHeader(header_height),
            })?;
        let app_hash = header.app_hash.as_bytes().to_vec();
        let verified = Verified {
            key: key.clone(),
            value: value.clone(),
            height,
            header_height,
            header_hash: header.hash().to_string(),
            app_hash: hex::encode_upper(&app_hash),
        };
        if !merkle::verify(&app_hash, &q.key, value.as_deref(), &proof) {
            return Err(ProofError::Invalid {
                key,
                height,
                header_height,
                app_hash: verified.app_hash,
            });
        }
        Ok(verified)
    })
}

/// The header at `height`, waited for (it comes with the next block). Err(None): timed out;
/// Err(Some): the RPC failed for another reason than the height not existing yet.
async fn next_header(
    client: &HttpClient,
    height: u64,
) -> Result<tendermint::block::Header, Option<String>> {
    let h = tendermint::block::Height::try_from(height).map_err(|e| Some(e.to_string()))?;
    let deadline = Instant::now() + HEADER_TIMEOUT;
    loop {
        match client.header(h).await {
            Ok(r) => return Ok(r.header),
            Err(e) if Instant::now() >= deadline => {
                tracing::debug!("header {height}: {e}");
                return Err(None);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
