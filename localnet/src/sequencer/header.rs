//! Block headers as CometBFT v0.38 builds them, so that a client recomputing a header's hash
//! with tendermint-rs ([`Header::hash`]) gets the `block_id.hash` the RPC serves, and the
//! `hash` every app got in FinalizeBlock.
//!
//! The dev sequencer is one validator (its key derived from the chain id, power 10) that signs
//! nothing, so every commit is empty. Each field is what CometBFT computes from the same data:
//! - `data_hash`: Merkle root of the txs' SHA-256 hashes;
//! - `validators_hash`, `next_validators_hash`: the one-validator set's hash;
//! - `consensus_hash`: SHA-256 of `HashedParams` (block max bytes and gas of the genesis
//!   consensus params);
//! - `app_hash`: the app hash after the previous block;
//! - `last_results_hash`: Merkle root of the previous block's deterministic tx results (code,
//!   data, gas wanted, gas used);
//! - `last_commit_hash`, `evidence_hash`: the Merkle root of nothing (no signatures, no
//!   evidence);
//! - `proposer_address`: the validator's address;
//! - `last_block_id`: the previous block's hash, its part set named by the same hash (the dev
//!   sequencer does not split blocks into parts); none at height 1.

use prost::bytes::Bytes;
use prost::Message as _;
use sha2::{Digest, Sha256};
use tendermint::block::{self, parts, Header, Height};
use tendermint::crypto::default::Sha256 as MerkleSha256;
use tendermint::{chain, hash::Algorithm, merkle, validator, AppHash, Hash, PublicKey, Time};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::abci::ExecTxResult;
use tendermint_proto::v0_38::types::HashedParams;

use super::mempool::tx_hash;

/// Block protocol version of CometBFT v0.38.
pub const BLOCK_PROTOCOL: u64 = 11;
/// The dev validator's voting power.
pub const VALIDATOR_POWER: u32 = 10;
/// The genesis consensus params' block limits (see `init_chain_request`).
pub const BLOCK_MAX_BYTES: i64 = 22_020_096;
/// See [`BLOCK_MAX_BYTES`].
pub const BLOCK_MAX_GAS: i64 = -1;

/// What a header is built from.
pub struct HeaderInput<'a> {
    /// Chain id.
    pub chain_id: &'a str,
    /// The app's protocol version (ABCI `Info`).
    pub app_version: u64,
    /// Height.
    pub height: u64,
    /// Block time.
    pub time: &'a Timestamp,
    /// The previous block's hash (empty at height 1).
    pub prev_hash: &'a [u8],
    /// The app hash after the previous block.
    pub prev_app_hash: &'a [u8],
    /// The previous block's tx results.
    pub prev_results: &'a [ExecTxResult],
    /// The block's txs.
    pub txs: &'a [Bytes],
    /// The dev validator's Ed25519 public key.
    pub validator: &'a [u8; 32],
}

fn merkle_root<T: AsRef<[u8]>>(items: &[T]) -> Hash {
    Hash::Sha256(merkle::simple_hash_from_byte_vectors::<MerkleSha256>(items))
}

/// CometBFT's proof that tx `index` of `txs` is in their block (`Txs.Proof`): a Merkle proof
/// over the txs' SHA-256 hashes, whose root is the header's `data_hash`. `aunts` go from the
/// leaf's sibling up to the root's other child, as CometBFT's `computeHashFromAunts` reads
/// them; subtrees split at the largest power of two below their size, as
/// [`merkle::simple_hash_from_byte_vectors`] (which hashes every subtree here) does.
pub fn tx_proof(txs: &[Bytes], index: usize) -> Option<tendermint::tx::Proof> {
    use tendermint::merkle::MerkleHash as _;
    let tx = txs.get(index)?;
    let hashes: Vec<_> = txs.iter().map(|t| tx_hash(t)).collect();
    let (mut lo, mut hi) = (0, hashes.len());
    let mut aunts = Vec::new();
    while hi.saturating_sub(lo) > 1 {
        let mid = lo + (hi - lo).next_power_of_two() / 2;
        if index < mid {
            aunts.push(merkle_root(hashes.get(mid..hi)?));
            hi = mid;
        } else {
            aunts.push(merkle_root(hashes.get(lo..mid)?));
            lo = mid;
        }
    }
    aunts.reverse();
    Some(tendermint::tx::Proof {
        root_hash: merkle_root(&hashes),
        data: tx.to_vec(),
        proof: merkle::Proof {
            total: hashes.len() as u64,
            index: index as u64,
            leaf_hash: Hash::Sha256(MerkleSha256::default().leaf_hash(hashes.get(index)?)),
            aunts,
        },
    })
}

/// The dev validator, as the validator set holds it.
pub fn validator(key: &[u8; 32]) -> Result<validator::Info, String> {
    let pk = PublicKey::from_raw_ed25519(key)
        .ok_or_else(|| "the dev validator key is not an Ed25519 key".to_owned())?;
    Ok(validator::Info::new(pk, VALIDATOR_POWER.into()))
}

/// The header CometBFT would build from `i`.
pub fn build(i: &HeaderInput<'_>) -> Result<Header, String> {
    let info = validator(i.validator)?;
    let proposer_address = info.address;
    let validators = validator::Set::new(vec![info], None);
    let last_block_id = if i.prev_hash.is_empty() {
        None
    } else {
        let hash = Hash::from_bytes(Algorithm::Sha256, i.prev_hash).map_err(|e| e.to_string())?;
        Some(block::Id {
            hash,
            part_set_header: parts::Header::new(1, hash).map_err(|e| e.to_string())?,
        })
    };
    let tx_hashes: Vec<[u8; 32]> = i.txs.iter().map(|t| tx_hash(t)).collect();
    let results: Vec<Vec<u8>> = i
        .prev_results
        .iter()
        .map(|r| {
            ExecTxResult {
                code: r.code,
                data: r.data.clone(),
                gas_wanted: r.gas_wanted,
                gas_used: r.gas_used,
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let consensus = HashedParams {
        block_max_bytes: BLOCK_MAX_BYTES,
        block_max_gas: BLOCK_MAX_GAS,
    }
    .encode_to_vec();
    let nothing: [&[u8]; 0] = [];
    Ok(Header {
        version: block::header::Version {
            block: BLOCK_PROTOCOL,
            app: i.app_version,
        },
        chain_id: chain::Id::try_from(i.chain_id.to_owned()).map_err(|e| e.to_string())?,
        height: Height::try_from(i.height).map_err(|e| e.to_string())?,
        time: Time::try_from(*i.time).map_err(|e| e.to_string())?,
        last_block_id,
        last_commit_hash: Some(merkle_root(&nothing)),
        data_hash: Some(merkle_root(&tx_hashes)),
        validators_hash: validators.hash(),
        next_validators_hash: validators.hash(),
        consensus_hash: Hash::Sha256(Sha256::digest(&consensus).into()),
        app_hash: AppHash::try_from(i.prev_app_hash.to_vec()).map_err(|e| e.to_string())?,
        last_results_hash: Some(merkle_root(&results)),
        evidence_hash: Some(merkle_root(&nothing)),
        proposer_address,
    })
}
