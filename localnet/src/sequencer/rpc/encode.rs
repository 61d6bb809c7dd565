//! JSON renderings of results with CometBFT v0.38's field names and encodings: int64/uint64 as
//! decimal strings, int32/uint32 as numbers, `[]byte` as base64 (`null` when empty, as Go
//! prints a nil slice), `HexBytes` (hashes, addresses) as upper-case hex, times as RFC 3339.
//!
//! Where tendermint-rs 0.41 has a type that serializes exactly as CometBFT does, it is used:
//! headers, block ids and block metas, `broadcast_tx_*`, `header`, `blockchain`,
//! `consensus_params`, `genesis`, validators, tx proofs. The others are written here because
//! tendermint-rs's serialization differs from CometBFT's, and a CometBFT client (Go, cosmjs)
//! would misread it: its ABCI result types write `[]byte` fields (`ExecTxResult.data`,
//! `CheckTx.data`, `Info.last_block_app_hash`) as arrays of numbers instead of base64, its
//! `block_results` writes the app hash in hex and adds `begin_block_events`, its `abci_query`
//! says `proof` and `field_type` instead of `proofOps` and `type`, its blocks and commits
//! write empty lists as `null`, and its `status` validator has `power` instead of
//! `voting_power`. The test `sequencer__should_serve_tendermint_rs_clients_over_http_and_websocket`
//! parses every method's answer with tendermint-rpc's client.

use base64::Engine as _;
use serde_json::{json, Value};
use tendermint::block::{self as tm_block, parts, Height};
use tendermint::hash::{Algorithm, Hash};
use tendermint_proto::v0_38::abci::{
    Event, ExecTxResult, ResponseCheckTx, ResponseInfo, ResponseQuery,
};
use tendermint_rpc::endpoint as ep;

use std::sync::atomic::Ordering;

use crate::sequencer::header::{self, HeaderInput};
use crate::sequencer::state::{CommittedBlock, Shared};
use crate::sequencer::time::{rfc3339, GENESIS_TIME};

/// `[]byte`: base64, `null` when empty.
pub fn b64(b: &[u8]) -> Value {
    if b.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(b))
    }
}

/// `HexBytes`: upper-case hex.
pub fn hexb(b: &[u8]) -> Value {
    Value::String(hex::encode_upper(b))
}

fn events(evs: &[Event]) -> Value {
    Value::Array(
        evs.iter()
            .map(|e| {
                json!({
                    "type": e.r#type,
                    "attributes": e.attributes.iter().map(|a| json!({
                        "key": a.key,
                        "value": a.value,
                        "index": a.index,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// `abci.ExecTxResult`.
pub fn exec_tx_result(r: &ExecTxResult) -> Value {
    json!({
        "code": r.code,
        "data": b64(&r.data),
        "log": r.log,
        "info": r.info,
        "gas_wanted": r.gas_wanted.to_string(),
        "gas_used": r.gas_used.to_string(),
        "events": events(&r.events),
        "codespace": r.codespace,
    })
}

/// `abci.ResponseCheckTx`.
pub fn check_tx(r: &ResponseCheckTx) -> Value {
    json!({
        "code": r.code,
        "data": b64(&r.data),
        "log": r.log,
        "info": r.info,
        "gas_wanted": r.gas_wanted.to_string(),
        "gas_used": r.gas_used.to_string(),
        "events": events(&r.events),
        "codespace": r.codespace,
    })
}

/// `ResultBroadcastTx`.
pub fn broadcast(hash: &[u8], r: &ResponseCheckTx) -> Result<Value, String> {
    to_value(&ep::broadcast::tx_sync::Response {
        codespace: r.codespace.clone(),
        code: r.code.into(),
        data: r.data.clone(),
        log: r.log.clone(),
        hash: sha256(hash)?,
    })
}

/// `ResultABCIQuery`.
pub fn abci_query(r: &ResponseQuery) -> Value {
    json!({
        "response": {
            "code": r.code,
            "log": r.log,
            "info": r.info,
            "index": r.index.to_string(),
            "key": b64(&r.key),
            "value": b64(&r.value),
            "proofOps": r.proof_ops.as_ref().map(|p| json!({
                "ops": p.ops.iter().map(|o| json!({
                    "type": o.r#type,
                    "key": b64(&o.key),
                    "data": b64(&o.data),
                })).collect::<Vec<_>>(),
            })),
            "height": r.height.to_string(),
            "codespace": r.codespace,
        }
    })
}

/// `ResultABCIInfo`.
pub fn abci_info(r: &ResponseInfo) -> Value {
    let mut out = json!({
        "response": {
            "data": r.data,
            "version": r.version,
            "app_version": r.app_version.to_string(),
            "last_block_height": r.last_block_height.to_string(),
        },
    });
    // Empty before the first block: left out, as CometBFT's `omitempty` does (a `null` here
    // makes tendermint-rpc's client refuse the whole answer).
    if !r.last_block_app_hash.is_empty() {
        out["response"]["last_block_app_hash"] = b64(&r.last_block_app_hash);
    }
    out
}

fn to_value<T: serde::Serialize>(t: &T) -> Result<Value, String> {
    serde_json::to_value(t).map_err(|e| e.to_string())
}

fn sha256(b: &[u8]) -> Result<Hash, String> {
    Hash::from_bytes(Algorithm::Sha256, b).map_err(|e| e.to_string())
}

fn height(h: u64) -> Result<Height, String> {
    Height::try_from(h).map_err(|e| e.to_string())
}

/// `BlockID` of a block of one part (CometBFT's part set of a small block; this sequencer's
/// part set hash is the block hash), the empty id for an empty hash (height 0's).
fn block_id(hash: &[u8]) -> Result<tm_block::Id, String> {
    if hash.is_empty() {
        return Ok(tm_block::Id::default());
    }
    let hash = sha256(hash)?;
    let part_set_header = parts::Header::new(1, hash).map_err(|e| e.to_string())?;
    Ok(tm_block::Id {
        hash,
        part_set_header,
    })
}

fn time_of(b: &CommittedBlock) -> String {
    rfc3339(b.block.time.as_ref().unwrap_or(&GENESIS_TIME))
}

/// The header of block `b`, rebuilt as it was hashed (see [`header()`]): the previous block's
/// results come from the store.
pub fn header_of(shared: &Shared, b: &CommittedBlock) -> Result<tendermint::block::Header, String> {
    let height = b.height();
    // The block below the earliest one served is stored for this (see the store's pruning).
    let prev = if height > 1 {
        Some(shared.result_at(height - 1)?)
    } else {
        None
    };
    header::build(&HeaderInput {
        chain_id: &shared.chain_id,
        app_version: shared.app_version.load(Ordering::Acquire),
        height,
        time: b.block.time.as_ref().unwrap_or(&GENESIS_TIME),
        prev_hash: &b.prev_hash,
        prev_app_hash: &b.prev_app_hash,
        prev_results: prev.as_ref().map_or(&[][..], |p| &p.get().tx_results),
        txs: &b.block.txs,
        validator: &shared.validator_pub_key,
    })
}

/// `ResultBlock`: the header as CometBFT builds it (tendermint-rs's own JSON encoding of
/// it), whose hash is `block_id.hash`. Its `app_hash` is the app hash after the previous
/// block, as in CometBFT; the app hash after this block is in `block_results` and in the next
/// header.
pub fn block(shared: &Shared, b: &CommittedBlock) -> Result<Value, String> {
    let height = b.height();
    let header = serde_json::to_value(header_of(shared, b)?).map_err(|e| e.to_string())?;
    let txs: Vec<Value> = b
        .block
        .txs
        .iter()
        .map(|t| Value::String(base64::engine::general_purpose::STANDARD.encode(t)))
        .collect();
    Ok(json!({
        "block_id": to_value(&block_id(&b.block.hash)?)?,
        "block": {
            "header": header,
            "data": {"txs": txs},
            "evidence": {"evidence": []},
            "last_commit": {
                "height": height.saturating_sub(1).to_string(),
                "round": 0,
                "block_id": to_value(&block_id(&b.prev_hash)?)?,
                "signatures": [],
            },
        }
    }))
}

/// `ResultHeader`.
pub fn header(shared: &Shared, b: &CommittedBlock) -> Result<Value, String> {
    to_value(&ep::header::Response {
        header: header_of(shared, b)?,
    })
}

/// `ResultCommit`: the block's signed header. The dev sequencer signs nothing: the commit
/// names the block and holds no signature.
pub fn commit(shared: &Shared, b: &CommittedBlock) -> Result<Value, String> {
    let header = serde_json::to_value(header_of(shared, b)?).map_err(|e| e.to_string())?;
    Ok(json!({
        "signed_header": {
            "header": header,
            "commit": {
                "height": b.height().to_string(),
                "round": 0,
                "block_id": to_value(&block_id(&b.block.hash)?)?,
                "signatures": [],
            },
        },
        "canonical": true,
    }))
}

/// `ResultBlockchainInfo`: the metas of blocks `from..=to`, newest first.
pub fn blockchain(shared: &Shared, last: u64, from: u64, to: u64) -> Result<Value, String> {
    let mut block_metas = Vec::new();
    for h in (from..=to).rev() {
        let b = shared.block_at(h)?;
        let size: usize = b.block.txs.iter().map(|t| t.len()).sum();
        block_metas.push(tm_block::Meta {
            block_id: block_id(&b.block.hash)?,
            block_size: i64::try_from(size).map_err(|e| e.to_string())?,
            header: header_of(shared, &b)?,
            num_txs: i64::try_from(b.block.txs.len()).map_err(|e| e.to_string())?,
        });
    }
    to_value(&ep::blockchain::Response {
        last_height: height(last)?,
        block_metas,
    })
}

/// The genesis consensus params, in tendermint-rs's encoding.
fn consensus_params(shared: &Shared) -> Result<tendermint::consensus::Params, String> {
    let raw = shared
        .genesis
        .consensus_params
        .clone()
        .ok_or_else(|| "no consensus params at genesis".to_owned())?;
    tendermint::consensus::Params::try_from(raw).map_err(|e| e.to_string())
}

/// `ResultValidators`: the one dev validator, at every height.
pub fn validators(shared: &Shared, height: u64) -> Result<Value, String> {
    let v = header::validator(&shared.validator_pub_key)?;
    // CometBFT's `types.Validator` (tendermint-rs's `validator::Info` writes a genesis
    // validator's `power` and `name`).
    let validator = json!({
        "address": to_value(&v.address)?,
        "pub_key": to_value(&v.pub_key)?,
        "voting_power": v.power.value().to_string(),
        "proposer_priority": "0",
    });
    Ok(json!({
        "block_height": height.to_string(),
        "validators": [validator],
        "count": "1",
        "total": "1",
    }))
}

/// `ResultConsensusParams`: the genesis params (the app never changes them).
pub fn consensus_params_at(shared: &Shared, at: u64) -> Result<Value, String> {
    to_value(&ep::consensus_params::Response {
        block_height: height(at)?,
        consensus_params: consensus_params(shared)?,
    })
}

/// `ResultGenesis`: the genesis document the chain started from (the app state as JSON when it
/// is JSON, else as a string).
pub fn genesis(shared: &Shared) -> Result<Value, String> {
    let g = &shared.genesis;
    let app_state = serde_json::from_slice(&g.app_state_bytes).unwrap_or_else(|_| {
        Value::String(String::from_utf8_lossy(&g.app_state_bytes).into_owned())
    });
    let doc = tendermint::Genesis {
        genesis_time: tendermint::Time::try_from(g.time.unwrap_or(GENESIS_TIME))
            .map_err(|e| e.to_string())?,
        chain_id: tendermint::chain::Id::try_from(g.chain_id.clone()).map_err(|e| e.to_string())?,
        initial_height: g.initial_height,
        consensus_params: consensus_params(shared)?,
        validators: vec![header::validator(&shared.validator_pub_key)?],
        app_hash: tendermint::AppHash::default(),
        app_state,
    };
    to_value(&ep::genesis::Response { genesis: doc })
}

/// `ResultBlockResults`.
pub fn block_results(b: &CommittedBlock) -> Value {
    let results: Vec<Value> = b.result.tx_results.iter().map(exec_tx_result).collect();
    json!({
        "height": b.height().to_string(),
        "txs_results": if results.is_empty() { Value::Null } else { Value::Array(results) },
        "finalize_block_events": events(&b.result.events),
        "validator_updates": [],
        "consensus_param_updates": null,
        "app_hash": b64(&b.result.app_hash),
    })
}

/// `abci.ResponseFinalizeBlock`, as the `NewBlock` event carries it.
pub fn finalize_block_result(b: &CommittedBlock) -> Value {
    json!({
        "events": events(&b.result.events),
        "tx_results": b.result.tx_results.iter().map(exec_tx_result).collect::<Vec<_>>(),
        "validator_updates": [],
        "consensus_param_updates": null,
        "app_hash": b64(&b.result.app_hash),
    })
}

/// `ResultTx`.
pub fn tx(b: &CommittedBlock, hash: &[u8], index: u32) -> Value {
    let i = usize::try_from(index).unwrap_or(usize::MAX);
    let tx = b.block.txs.get(i).map(|t| t.as_ref()).unwrap_or_default();
    let result = b
        .result
        .tx_results
        .get(i)
        .map(exec_tx_result)
        .unwrap_or_else(|| exec_tx_result(&ExecTxResult::default()));
    json!({
        "hash": hexb(hash),
        "height": b.height().to_string(),
        "index": index,
        "tx_result": result,
        "tx": base64::engine::general_purpose::STANDARD.encode(tx),
    })
}

/// `ResultTx.proof` (`tx?prove=true`): tx `index`'s inclusion proof against the block's
/// `data_hash`, in tendermint-rs's encoding of CometBFT's `TxProof`.
pub fn tx_proof(b: &CommittedBlock, index: u32) -> Result<Value, String> {
    let i = usize::try_from(index).map_err(|e| e.to_string())?;
    let proof = header::tx_proof(&b.block.txs, i)
        .ok_or_else(|| format!("no tx {index} in block {}", b.height()))?;
    serde_json::to_value(proof).map_err(|e| e.to_string())
}

/// `ResultStatus`, plus the non-standard `seqmpc` section.
pub fn status(shared: &Shared, rpc_addr: &str) -> Value {
    let st = shared.status();
    let v = shared.view();
    let latest = v.latest.as_deref();
    let earliest = v.earliest.as_deref();
    let hash = |b: Option<&CommittedBlock>| b.map(|b| hexb(&b.block.hash)).unwrap_or(json!(""));
    let app_hash =
        |b: Option<&CommittedBlock>| b.map(|b| hexb(&b.result.app_hash)).unwrap_or(json!(""));
    let time =
        |b: Option<&CommittedBlock>| b.map(time_of).unwrap_or_else(|| rfc3339(&GENESIS_TIME));
    let address = tendermint::PublicKey::from_raw_ed25519(&shared.validator_pub_key)
        .map(|pk| tendermint::account::Id::from(pk).as_bytes().to_vec())
        .unwrap_or_default();
    let node_id = hex::encode(sha2_20(&shared.validator_pub_key));
    json!({
        "node_info": {
            "protocol_version": {
                "p2p": "8",
                "block": header::BLOCK_PROTOCOL.to_string(),
                "app": shared.app_version.load(Ordering::Acquire).to_string(),
            },
            "id": node_id,
            // CometBFT's P2P address; the dev sequencer has no P2P, so its RPC address (an
            // empty value makes some clients refuse the whole answer).
            "listen_addr": format!("tcp://{rpc_addr}"),
            "network": shared.chain_id,
            "version": "0.38.17-seqmpc-dev-sequencer",
            "channels": "",
            "moniker": "seqmpc-dev-sequencer",
            "other": {"tx_index": "on", "rpc_address": format!("tcp://{rpc_addr}")},
        },
        "sync_info": {
            "latest_block_hash": hash(latest),
            "latest_app_hash": app_hash(latest),
            "latest_block_height": v.height.to_string(),
            "latest_block_time": time(latest),
            "earliest_block_hash": hash(earliest),
            "earliest_app_hash": app_hash(earliest),
            "earliest_block_height": earliest.map_or(0, |b| b.height()).to_string(),
            "earliest_block_time": time(earliest),
            "catching_up": false,
        },
        "validator_info": {
            "address": hexb(&address),
            "pub_key": {
                "type": "tendermint/PubKeyEd25519",
                "value": base64::engine::general_purpose::STANDARD.encode(shared.validator_pub_key),
            },
            "voting_power": "10",
        },
        "seqmpc": {
            "phase": st.phase,
            "apps_up": st.apps.iter()
                .filter(|a| a.state == crate::sequencer::state::AppState::Up)
                .map(|a| a.name.clone())
                .collect::<Vec<_>>(),
            "apps": st.apps,
            "app_hash_divergence": st.app_hash_divergence,
            "mempool_txs": st.mempool_txs,
        },
    })
}

fn sha2_20(b: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .get(..20)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn abci_info__should_leave_out_an_empty_app_hash_so_tendermint_rs_clients_parse_it() {
        // Before the first block the app hash is empty: CometBFT leaves it out, and a `null`
        // made tendermint-rpc's client refuse the answer.
        let fresh = abci_info(&ResponseInfo {
            data: "seqmpc".into(),
            app_version: 1,
            ..Default::default()
        });
        assert!(
            fresh["response"].get("last_block_app_hash").is_none(),
            "{fresh}"
        );
        let parsed: ep::abci_info::Response = serde_json::from_value(fresh).unwrap();
        assert_eq!(parsed.response.app_version, 1);
        let later = abci_info(&ResponseInfo {
            last_block_height: 7,
            last_block_app_hash: vec![0xAB; 32].into(),
            ..Default::default()
        });
        assert_eq!(
            later["response"]["last_block_app_hash"],
            base64::engine::general_purpose::STANDARD.encode([0xAB; 32])
        );
        let parsed: ep::abci_info::Response = serde_json::from_value(later).unwrap();
        assert_eq!(parsed.response.last_block_height.value(), 7);
    }

    #[test]
    fn broadcast__should_write_cometbfts_result_broadcast_tx() {
        let r = ResponseCheckTx {
            code: 5,
            data: vec![0x01, 0xAB].into(),
            log: "no".into(),
            codespace: "seqmpc".into(),
            ..Default::default()
        };
        let got = broadcast(&[0x11; 32], &r).unwrap();
        let want = json!({
            "code": 5,
            "data": "01AB",
            "log": "no",
            "codespace": "seqmpc",
            "hash": "11".repeat(32),
        });
        assert_eq!(got, want);
        assert!(broadcast(&[0x11; 31], &r).is_err(), "a hash is 32 bytes");
    }
}
