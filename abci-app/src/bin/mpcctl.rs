//! mpcctl: client of a seqmpc chain. Submits signed request txs and reads chain and node state.
//! Every command prints one JSON value on stdout; failures print one line on stderr and exit 1.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use seqmpc_abci::chain::query::{AccountView, NodeView, ProposalsView, Query};
use seqmpc_abci::chain::{
    KeyEntry, KeyStatus, ProposalEntry, ProposalStatus, ReshareEntry, ReshareStatus, SignEntry,
    SignStatus,
};
use seqmpc_abci::daemon::block_watch::BlockWatch;
use seqmpc_abci::daemon::keys::load_key_file;
use seqmpc_abci::daemon::proven;
use seqmpc_abci::daemon::rpc::RpcClient;
use seqmpc_abci::manifest::Manifest;
use seqmpc_proto::tx::{proposal_id, sign_tx, TxMsg};
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "mpcctl", about = "Client of a seqmpc chain", version)]
struct Cli {
    /// Localnet directory (reads DIR/localnet.json for the RPC URL, keys and node endpoints).
    #[arg(long, default_value = "./localnet-data", global = true)]
    home: PathBuf,
    /// RPC URL (overrides localnet.json).
    #[arg(long, global = true)]
    rpc: Option<String>,
    /// Account key file (hex ed25519 seed, mode 0600; overrides localnet.json's client key).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// Seconds to wait with --wait (default: 120; 1200 for a cggmp24-secp256k1 keygen, which
    /// may wait minutes for its committee's safe primes after a cold start, within its chain
    /// deadline of 15 minutes on a localnet).
    #[arg(long, global = true)]
    timeout: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Request a new threshold key.
    Keygen {
        /// Key id (A-Z a-z 0-9 - _ ., at most 64).
        #[arg(long)]
        key_id: String,
        /// Scheme: frost-ed25519 (RFC 8032 Ed25519 signatures, 32-byte public key),
        /// frost-secp256k1-tr (BIP340 Schnorr signatures, 32-byte x-only public key, usable as
        /// a taproot key-path output key) or cggmp24-secp256k1 (threshold ECDSA, 33-byte
        /// compressed public key, 2 <= threshold <= parties).
        #[arg(long, default_value = "frost-ed25519")]
        scheme: String,
        /// Threshold t (signers needed); default from localnet.json.
        #[arg(long)]
        threshold: Option<u32>,
        /// Committee as comma-separated node ids; default every registered node.
        #[arg(long, value_delimiter = ',')]
        parties: Vec<String>,
        /// Wait until the key is READY or ERROR; while PENDING, prints progress to stderr every
        /// 3 s (parties reported; on a localnet, each node's phase, e.g. `dkg+aux-info`).
        #[arg(long)]
        wait: bool,
    },
    /// Request a signature of a message (hex) with a READY key.
    Sign {
        /// Key id.
        #[arg(long)]
        key_id: String,
        /// Message as hex; signed as is: Ed25519 hashes it internally (RFC 8032); BIP340
        /// (frost-secp256k1-tr) signs the bytes as given, of any length (for taproot, pass the
        /// 32-byte sighash); ECDSA (cggmp24-secp256k1) signs SHA-256(message) unless
        /// --prehashed.
        #[arg(long)]
        message: String,
        /// cggmp24-secp256k1 only: the message is a 32-byte digest, signed as is (not hashed
        /// again). Anything but 32 bytes is refused.
        #[arg(long)]
        prehashed: bool,
        /// Request id; default derived from the account and its sequence.
        #[arg(long)]
        request_id: Option<String>,
        /// Wait until the signature is accepted on chain (or fails).
        #[arg(long)]
        wait: bool,
    },
    /// Delete a key on every node (the id can never be reused).
    Delete {
        /// Key id.
        #[arg(long)]
        key_id: String,
        /// Wait until every party attested deletion.
        #[arg(long)]
        wait: bool,
    },
    /// Move a READY key to a new committee and/or threshold; the public key stays the same.
    /// Prints the key with its new parties, threshold and generation. Only the key's owner or
    /// an admin it named may; the change is a governance proposal (`proposals`), which runs
    /// once approved and its delay is over. The new committee must keep at least the current
    /// threshold of the current holders, and its newcomers must stay below the new threshold.
    Reshare {
        /// Key id.
        #[arg(long)]
        key_id: String,
        /// The new committee as comma-separated node ids (as `nodes` lists them).
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<String>,
        /// The new threshold.
        #[arg(long)]
        threshold: u32,
        /// Wait until the resharing is DONE or ERROR (first, until governance approved and
        /// ran it; progress on stderr every 3 s).
        #[arg(long)]
        wait: bool,
    },
    /// Name the accounts that may, besides the key's owner, sign with a key, delete it and
    /// request its resharing (replaces the previous list; none: the owner alone). Only the
    /// owner may.
    Admins {
        /// Key id.
        #[arg(long)]
        key_id: String,
        /// An account: its hex ed25519 public key, or its key file. Repeat for more.
        #[arg(long = "admin")]
        admins: Vec<String>,
    },
    /// List the governance and its proposals (resharings to other committees, node
    /// admissions), pending, approved (with the height they run at) and recently ended.
    Proposals,
    /// Approve a proposal (a governance account).
    Approve {
        /// Proposal id (16 hex digits, from `proposals`).
        #[arg(long)]
        proposal: String,
    },
    /// Cancel a proposal before it runs (a governance account, or its proposer).
    Cancel {
        /// Proposal id.
        #[arg(long)]
        proposal: String,
    },
    /// Refresh a READY key: new shares for the same committee, threshold and public key.
    Refresh {
        /// Key id.
        #[arg(long)]
        key_id: String,
        /// Wait until the refresh is DONE or ERROR.
        #[arg(long)]
        wait: bool,
    },
    /// Show a key.
    Key {
        /// Key id.
        #[arg(long)]
        key_id: String,
        /// Read it with a Merkle proof (`abci_query` with `prove`) and check the proof against
        /// the app hash of the next header from the RPC; prints what it checked against.
        #[arg(long)]
        verify: bool,
    },
    /// List keys.
    Keys,
    /// Show a sign request.
    SignStatus {
        /// Request id.
        #[arg(long)]
        request_id: String,
    },
    /// List the registered MPC nodes.
    Nodes,
    /// Admit a new MPC node into the registry (a `NodeJoin` tx; the account needs the
    /// `registry` role). Then start its mpcd (`mpcd init --node-id ID` made its key).
    NodeJoin {
        /// The new node's id.
        #[arg(long)]
        node_id: String,
        /// Its ed25519 node public key, hex (what `mpcd init` printed).
        #[arg(long)]
        public_key: String,
        /// Its libp2p multiaddr, e.g. /ip4/127.0.0.1/tcp/26741.
        #[arg(long)]
        p2p_addr: String,
        /// Wait until the chain lists the node (first, until governance approved it).
        #[arg(long)]
        wait: bool,
    },
    /// Replace a registered node's key (a `NodeRotateKey` tx; `registry` role, then
    /// governance as for `node-join`). Make the new key first with `mpcd new-node-key`: the
    /// node switches to it (restarting itself) when the rotation executes.
    NodeRotateKey {
        /// The node.
        #[arg(long)]
        node_id: String,
        /// Its new ed25519 node public key, hex (what `mpcd new-node-key` printed).
        #[arg(long)]
        public_key: String,
        /// Wait until the chain lists the node with the new key.
        #[arg(long)]
        wait: bool,
    },
    /// Remove a node from the registry (a `NodeRemove` tx; `registry` role, then governance).
    /// Refused while it holds shares of live keys: reshare them away from it first.
    NodeRemove {
        /// The node.
        #[arg(long)]
        node_id: String,
        /// Wait until the chain no longer lists the node.
        #[arg(long)]
        wait: bool,
    },
    /// A node's local view of its shares (never secret material).
    NodeStatus {
        /// Node id.
        #[arg(long)]
        node: String,
        /// Only this key.
        #[arg(long)]
        key_id: Option<String>,
    },
}

struct Ctx {
    home: PathBuf,
    rpc: RpcClient,
    rpc_url: String,
    key_path: Option<PathBuf>,
    localnet: Option<Manifest>,
    timeout: Duration,
}

impl Ctx {
    fn key(&self) -> anyhow::Result<SigningKey> {
        let path = match (&self.key_path, &self.localnet) {
            (Some(p), _) => p.clone(),
            (None, Some(l)) => PathBuf::from(&l.client_key),
            (None, None) => bail!(
                "no account key: pass --key FILE or --home DIR of a localnet ({} has no localnet.json)",
                self.home.display()
            ),
        };
        load_key_file(&path)
    }

    /// Queries the chain; `T` is the type the path answers with ([`Query`]).
    fn query<T: DeserializeOwned>(&self, q: &Query) -> anyhow::Result<T> {
        let r = self.rpc.abci_query(&q.path())?;
        if r.code != 0 {
            bail!("{}", r.log);
        }
        serde_json::from_slice(&r.value).context("query answer is not JSON")
    }

    /// Signs and broadcasts; returns the tx hash. Retries once on a sequence race.
    fn submit(&self, key: &SigningKey, msg: TxMsg) -> anyhow::Result<String> {
        let chain_id = self.chain_id()?;
        let pk = hex::encode(key.verifying_key().to_bytes());
        let mut seq = self.query::<AccountView>(&Query::Account(pk))?.sequence;
        for _ in 0..5 {
            let tx = sign_tx(key, &chain_id, seq, msg.clone());
            let r = self.rpc.broadcast_tx_sync(&tx)?;
            if r.code == 0 {
                return Ok(r.hash);
            }
            if r.code == 4 {
                if let Some(e) = std::str::from_utf8(&r.data)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    seq = e;
                    continue;
                }
            }
            bail!("rejected (code {}): {}", r.code, r.log);
        }
        bail!("rejected: sequence kept changing; retry")
    }

    fn chain_id(&self) -> anyhow::Result<String> {
        if let Some(l) = &self.localnet {
            return Ok(l.chain_id.clone());
        }
        Ok(self.rpc.chain_id()?)
    }

    /// Waits until the tx is committed; fails with its log if delivery rejected it.
    fn wait_committed(&self, hash: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut blocks = self.block_watch();
        loop {
            if let Some((code, log)) = self.rpc.tx_result(hash)? {
                if code != 0 {
                    bail!("rejected in block (code {code}): {log}");
                }
                return Ok(());
            }
            if start.elapsed() > self.timeout {
                bail!("tx {hash} not committed within {:?}", self.timeout);
            }
            next_block(&mut blocks);
        }
    }

    fn wait_until<T: DeserializeOwned + Serialize>(
        &self,
        q: &Query,
        done: impl Fn(&T) -> bool,
    ) -> anyhow::Result<T> {
        self.wait_until_with(q, done, |_, _| {})
    }

    /// [`Ctx::wait_until`], calling `progress` with the last state every few seconds.
    fn wait_until_with<T: DeserializeOwned + Serialize>(
        &self,
        q: &Query,
        done: impl Fn(&T) -> bool,
        mut progress: impl FnMut(&T, Duration),
    ) -> anyhow::Result<T> {
        let start = Instant::now();
        let mut shown = Instant::now();
        let mut blocks = self.block_watch();
        loop {
            let v = self.query(q)?;
            if done(&v) {
                return Ok(v);
            }
            if shown.elapsed() >= PROGRESS_EVERY {
                progress(&v, start.elapsed());
                shown = Instant::now();
            }
            if start.elapsed() > self.timeout {
                bail!(
                    "timed out after {:?}; last state: {}",
                    self.timeout,
                    serde_json::to_value(&v).unwrap_or_default()
                );
            }
            next_block(&mut blocks);
        }
    }

    /// New blocks from the RPC's `/websocket`, so that `--wait` reads the state once per
    /// block; None (with a note on stderr) when the RPC serves no `/websocket`.
    fn block_watch(&self) -> Option<BlockWatch> {
        match BlockWatch::connect(&self.rpc_url) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("mpcctl: {e}; polling every {POLL_EVERY:?} instead");
                None
            }
        }
    }
}

/// How often `--wait` reads the state when it cannot subscribe to new blocks.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Longest wait for a block before the state is read again anyway.
const BLOCK_WAIT: Duration = Duration::from_secs(2);

/// Returns after the next block (at most [`BLOCK_WAIT`]), or after [`POLL_EVERY`] without a
/// subscription (or once it ends).
fn next_block(blocks: &mut Option<BlockWatch>) {
    match blocks {
        Some(w) if !w.is_closed() => {
            w.next_block(BLOCK_WAIT);
        }
        _ => {
            if blocks.take().is_some() {
                eprintln!("mpcctl: the block subscription ended; polling every {POLL_EVERY:?}");
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}

/// How often `--wait` reports progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// One line on a PENDING keygen: the chain's view (who reported), then, on a localnet, each
/// node's own (e.g. `dkg+aux-info`: generating Paillier keys, tens of seconds).
fn keygen_progress(ctx: &Ctx, key_id: &KeyId, k: &KeyEntry, elapsed: Duration) -> String {
    let parties: Vec<&str> = k.parties.iter().map(NodeId::as_str).collect();
    let reported: Vec<&str> = k
        .parties
        .iter()
        .filter(|p| k.reports.contains_key(*p))
        .map(NodeId::as_str)
        .collect();
    let mut line = format!(
        "keygen {key_id} PENDING for {} s: {}/{} parties reported{}",
        elapsed.as_secs(),
        reported.len(),
        parties.len(),
        if reported.is_empty() {
            String::new()
        } else {
            format!(" ({})", reported.join(","))
        }
    );
    let nodes = ctx.localnet.as_ref().map_or(&[][..], |l| &l.nodes);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .build();
    for n in nodes {
        let (id, url) = (n.id.as_str(), &n.status);
        if !parties.contains(&id) || reported.contains(&id) {
            continue;
        }
        let phase = agent
            .get(&format!("{url}/status"))
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .and_then(|st| {
                st["keygens"].as_array().and_then(|a| {
                    a.iter()
                        .find(|g| g["key_id"] == key_id.as_str())
                        .and_then(|g| g["phase"].as_str().map(str::to_owned))
                })
            })
            .unwrap_or_else(|| "no session".into());
        line.push_str(&format!("; {id}: {phase}"));
    }
    line
}

/// A list the chain leaves out of its JSON when empty: mpcctl shows it as null then.
fn shown<T>(list: &[T]) -> Option<&[T]> {
    (!list.is_empty()).then_some(list)
}

/// A key as mpcctl prints it: without the per-party reports.
fn key_json(k: &KeyEntry) -> Value {
    json!({
        "key_id": k.key_id, "scheme": k.scheme, "threshold": k.threshold,
        "parties": k.parties, "status": k.status, "public_key": k.public_key,
        "generation": k.generation, "error": k.error, "culprits": k.culprits,
        "owner": k.owner, "admins": k.admins,
        "proven_blame": shown(&k.proven_blame), "deleted_by": k.deleted_by, "reshares": k.reshares,
        "reshare": k.reshare.as_ref().map(reshare_json),
    })
}

/// The key's latest resharing, with who reported instead of the per-party reports.
fn reshare_json(r: &ReshareEntry) -> Value {
    let reported: Vec<&NodeId> = r.reports.keys().collect();
    json!({
        "session": r.session, "status": r.status, "refresh": r.refresh,
        "parties": r.parties, "threshold": r.threshold, "dealers": r.dealers,
        "old_parties": r.old_parties, "old_threshold": r.old_threshold,
        "reported": reported, "error": r.error, "culprits": r.culprits,
        "proven_blame": shown(&r.proven_blame), "requested_height": r.requested_height, "deadline_height": r.deadline_height,
        "done_height": r.done_height,
    })
}

/// After the committed request tx `hash`: if it opened a governance proposal, waits until
/// the proposal ends (progress on stderr) and fails unless it executed.
fn follow_proposal(ctx: &Ctx, hash: &str) -> anyhow::Result<()> {
    let bytes: [u8; 32] = hex::decode(hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("tx hash {hash:?} is not 32 bytes of hex"))?;
    let q = Query::Proposal(proposal_id(&bytes));
    if ctx.query::<ProposalEntry>(&q).is_err() {
        return Ok(()); // ran at once: no proposal
    }
    let open =
        |p: &ProposalEntry| matches!(p.status, ProposalStatus::Pending | ProposalStatus::Approved);
    let p = ctx.wait_until_with(
        &q,
        |p: &ProposalEntry| !open(p),
        |p, elapsed| eprintln!("mpcctl: {} for {} s", proposal_line(p), elapsed.as_secs()),
    )?;
    if p.status != ProposalStatus::Executed {
        bail!("{}", proposal_line(&p));
    }
    Ok(())
}

/// Sends `msg`, a registry change about `node_id` (join, key rotation, removal). Without
/// `wait`, returns the SUBMITTED answer; with it, `None` once the tx is committed and the
/// governance proposal it opened (if any) has executed.
fn registry_change(
    ctx: &Ctx,
    node_id: &NodeId,
    msg: TxMsg,
    wait: bool,
) -> anyhow::Result<Option<Value>> {
    let key = ctx.key()?;
    let hash = ctx.submit(&key, msg)?;
    if !wait {
        return Ok(Some(
            json!({"node_id": node_id, "tx_hash": hash, "status": "SUBMITTED"}),
        ));
    }
    ctx.wait_committed(&hash)?;
    follow_proposal(ctx, &hash)?;
    Ok(None)
}

/// One line on a proposal's state.
fn proposal_line(p: &ProposalEntry) -> String {
    let mut line = format!(
        "proposal {} {}: {}/{} approvals",
        p.id,
        json!(p.status).as_str().unwrap_or_default(),
        p.approvals.len(),
        p.approvals_needed
    );
    match (p.status, p.executes_height) {
        (ProposalStatus::Approved, Some(h)) => line.push_str(&format!(", runs at height {h}")),
        (ProposalStatus::Pending, _) => line.push_str(&format!(
            ", expires at height {} (approve: mpcctl approve --proposal {})",
            p.expires_height, p.id
        )),
        _ => {}
    }
    if let Some(e) = &p.error {
        line.push_str(&format!(": {e}"));
    }
    line
}

/// An account's public key from `--admin`: hex, or the path of its key file.
fn account_key(s: &str) -> anyhow::Result<[u8; 32]> {
    if s.len() == 64 {
        if let Ok(pk) = seqmpc_abci::chain::state::parse_pubkey(s) {
            return Ok(pk);
        }
    }
    let key = load_key_file(std::path::Path::new(s))
        .with_context(|| format!("--admin {s:?} is neither a hex public key nor a key file"))?;
    Ok(key.verifying_key().to_bytes())
}

/// Approves (or cancels) a proposal; prints it after.
fn vote(ctx: &Ctx, proposal: &str, cancel: bool) -> anyhow::Result<Value> {
    let proposal_id = proposal.to_ascii_lowercase();
    let key = ctx.key()?;
    let hash = ctx.submit(
        &key,
        TxMsg::ProposalVote {
            proposal_id: proposal_id.clone(),
            cancel,
        },
    )?;
    ctx.wait_committed(&hash)?;
    let p: ProposalEntry = ctx.query(&Query::Proposal(proposal_id))?;
    Ok(serde_json::to_value(p)?)
}

/// Submits a resharing of `key_id` and, with `wait`, follows it to DONE (the key) or ERROR.
fn reshare(
    ctx: &Ctx,
    key_id: KeyId,
    parties: Vec<NodeId>,
    threshold: u32,
    wait: bool,
) -> anyhow::Result<Value> {
    let key = ctx.key()?;
    let q = Query::Key(key_id.clone());
    let session = |k: &KeyEntry| k.reshare.as_ref().map(|r| r.session);
    let status = |k: &KeyEntry| k.reshare.as_ref().map(|r| r.status);
    // The resharing before this one, read before the tx can be in a block (a block may come
    // before this client reads again): a move waits for governance, and the key may show an
    // older resharing meanwhile. (No key, or no query: the tx's own answer says why.)
    let before = if wait {
        ctx.query::<KeyEntry>(&q).ok().and_then(|k| session(&k))
    } else {
        None
    };
    let hash = ctx.submit(
        &key,
        TxMsg::KeyReshare {
            key_id: key_id.clone(),
            parties,
            threshold,
        },
    )?;
    if !wait {
        return Ok(json!({"key_id": key_id, "tx_hash": hash, "status": "SUBMITTED"}));
    }
    ctx.wait_committed(&hash)?;
    follow_proposal(ctx, &hash)?;
    let started = session(&ctx.query(&q)?);
    if started == before {
        bail!("resharing of {key_id} did not start (the key shows no new resharing)");
    }
    let k = ctx.wait_until_with(
        &q,
        |k: &KeyEntry| session(k) != started || status(k) != Some(ReshareStatus::Pending),
        |k, elapsed| {
            let (reported, parties) = k
                .reshare
                .as_ref()
                .map_or((0, 0), |r| (r.reports.len(), r.parties.len()));
            eprintln!(
                "mpcctl: reshare {key_id} PENDING for {} s: {reported}/{parties} new parties reported",
                elapsed.as_secs(),
            )
        },
    )?;
    if session(&k) != started || status(&k) != Some(ReshareStatus::Done) {
        println!("{}", key_json(&k));
        bail!(
            "resharing of {key_id} ended {}: {}",
            json!(status(&k)),
            json!(k.reshare.as_ref().map(|r| &r.error))
        );
    }
    Ok(key_json(&k))
}

/// A sign request as mpcctl prints it.
fn sign_json(s: &SignEntry) -> Value {
    let mut v = json!({
        "request_id": s.request_id, "key_id": s.key_id, "status": s.status,
        "signature": s.signature, "message": s.message, "signers": s.signers,
        "error": s.error, "culprits": s.culprits, "proven_blame": shown(&s.proven_blame),
        "prehashed": s.prehashed, "attempt": s.attempt, "excluded": s.excluded,
        // Failure reports of the current attempt, and each ended attempt: its signers, who
        // named whom (late reports of the last one included), the height it ended.
        "claims": s.claims, "ended_attempts": s.ended_attempts,
    });
    // ECDSA (cggmp24-secp256k1): signature is r || s, and the recovery id v.
    if let (Some(obj), Some(rid)) = (v.as_object_mut(), s.recovery_id) {
        obj.insert("recovery_id".into(), json!(rid));
    }
    v
}

/// A sign request from the state; once it has left it (genesis `sign_retention_blocks` after
/// it ended), its outcome from the `sign_done` or `sign_failed` event of the tx that ended it
/// (`tx_search`, while the chain keeps that block), marked `"pruned": true`.
fn sign_status(ctx: &Ctx, request_id: &str) -> anyhow::Result<Value> {
    let id = RequestId::new(request_id)?;
    let r = ctx.rpc.abci_query(&Query::Sign(id.clone()).path())?;
    if r.code == 0 {
        let entry: SignEntry =
            serde_json::from_slice(&r.value).context("query answer is not JSON")?;
        return Ok(sign_json(&entry));
    }
    if r.code != seqmpc_abci::chain::tx::TxError::NOT_FOUND {
        bail!("{}", r.log);
    }
    for kind in ["sign_done", "sign_failed"] {
        let events = ctx.rpc.tx_event(kind, "request_id", id.as_str())?;
        let Some(e) = events.iter().find(|e| {
            e.attributes
                .iter()
                .any(|(k, v)| k == "request_id" && v == id.as_str())
        }) else {
            continue;
        };
        let attr = |key: &str| {
            e.attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let mut out = json!({
            "request_id": id, "status": if kind == "sign_done" { "DONE" } else { "ERROR" },
            "ended_height": e.height, "tx_hash": e.tx_hash, "pruned": true,
        });
        if let Some(sig) = attr("signature").and_then(|s| hex::decode(s).ok()) {
            // As the state shows it: an ECDSA signature r || s and its recovery id apart.
            let (shown, recovery_id) = seqmpc_abci::chain::verify::split_recovery_id(&sig);
            out["signature"] = json!(hex::encode(shown));
            if let Some(v) = recovery_id {
                out["recovery_id"] = json!(v);
            }
        }
        return Ok(out);
    }
    bail!(
        "{} (no sign_done or sign_failed tx event names it either: a request ended by its \
         deadline has its sign_failed in the block's results, `block_search \
         \"sign_failed.request_id='{id}'\"`, and the chain may have pruned that block)",
        r.log
    )
}

fn run(cli: Cli) -> anyhow::Result<Value> {
    let localnet = Manifest::load(&cli.home)?;
    let rpc_url = match (&cli.rpc, &localnet) {
        (Some(u), _) => u.clone(),
        (None, Some(l)) => l.rpc.clone(),
        (None, None) => bail!(
            "no RPC: {} has no localnet.json (is `make localnet` running?) and --rpc is not set",
            cli.home.display()
        ),
    };
    let slow = matches!(&cli.cmd, Cmd::Keygen { scheme, .. } if scheme == "cggmp24-secp256k1");
    let ctx = Ctx {
        home: cli.home.clone(),
        rpc: RpcClient::new(&rpc_url),
        rpc_url: rpc_url.clone(),
        key_path: cli.key.clone(),
        localnet,
        timeout: Duration::from_secs(cli.timeout.unwrap_or(if slow { 1200 } else { 120 })),
    };
    match cli.cmd {
        Cmd::Keygen {
            key_id,
            scheme,
            threshold,
            parties,
            wait,
        } => {
            let key_id = KeyId::new(key_id)?;
            let scheme: Scheme = scheme.parse()?;
            let threshold = match threshold {
                Some(t) => t,
                None => ctx
                    .localnet
                    .as_ref()
                    .map(|l| l.default_threshold)
                    .ok_or_else(|| anyhow!("--threshold is required"))?,
            };
            let parties = parties
                .into_iter()
                .map(NodeId::new)
                .collect::<Result<Vec<_>, _>>()?;
            let key = ctx.key()?;
            let hash = ctx.submit(
                &key,
                TxMsg::KeyGen {
                    key_id: key_id.clone(),
                    scheme,
                    threshold,
                    parties,
                },
            )?;
            if !wait {
                return Ok(json!({"key_id": key_id, "tx_hash": hash, "status": "SUBMITTED"}));
            }
            ctx.wait_committed(&hash)?;
            let k = ctx.wait_until_with(
                &Query::Key(key_id.clone()),
                |k: &KeyEntry| k.status != KeyStatus::Pending,
                |k, elapsed| eprintln!("mpcctl: {}", keygen_progress(&ctx, &key_id, k, elapsed)),
            )?;
            if k.status != KeyStatus::Ready {
                println!("{}", key_json(&k));
                bail!(
                    "keygen of {key_id} ended {}: {}",
                    json!(k.status),
                    json!(k.error)
                );
            }
            Ok(key_json(&k))
        }
        Cmd::Sign {
            key_id,
            message,
            prehashed,
            request_id,
            wait,
        } => {
            let key_id = KeyId::new(key_id)?;
            let message = hex::decode(message.trim_start_matches("0x"))
                .map_err(|e| anyhow!("--message must be hex: {e}"))?;
            // A prehashed digest of another length is refused by the chain at CheckTx.
            let key = ctx.key()?;
            let request_id = match request_id {
                Some(r) => RequestId::new(r)?,
                None => {
                    let mut nonce = [0u8; 12];
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
                    RequestId::new(format!("req-{}", hex::encode(nonce)))?
                }
            };
            let hash = ctx.submit(
                &key,
                TxMsg::KeySign {
                    key_id,
                    request_id: request_id.clone(),
                    message,
                    prehashed,
                },
            )?;
            if !wait {
                return Ok(
                    json!({"request_id": request_id, "tx_hash": hash, "status": "SUBMITTED"}),
                );
            }
            ctx.wait_committed(&hash)?;
            let s = ctx.wait_until(&Query::Sign(request_id.clone()), |s: &SignEntry| {
                s.status != SignStatus::Pending
            })?;
            if s.status != SignStatus::Done {
                println!("{}", sign_json(&s));
                bail!(
                    "signing {request_id} ended {}: {}",
                    json!(s.status),
                    json!(s.error)
                );
            }
            Ok(sign_json(&s))
        }
        Cmd::Delete { key_id, wait } => {
            let key_id = KeyId::new(key_id)?;
            let key = ctx.key()?;
            let hash = ctx.submit(
                &key,
                TxMsg::KeyDelete {
                    key_id: key_id.clone(),
                },
            )?;
            if !wait {
                return Ok(json!({"key_id": key_id, "tx_hash": hash, "status": "SUBMITTED"}));
            }
            ctx.wait_committed(&hash)?;
            let k = ctx.wait_until(&Query::Key(key_id), |k: &KeyEntry| {
                k.status == KeyStatus::Deleted
            })?;
            Ok(key_json(&k))
        }
        Cmd::Reshare {
            key_id,
            parties,
            threshold,
            wait,
        } => {
            let parties = parties
                .into_iter()
                .map(NodeId::new)
                .collect::<Result<Vec<_>, _>>()?;
            reshare(&ctx, KeyId::new(key_id)?, parties, threshold, wait)
        }
        Cmd::Refresh { key_id, wait } => {
            let key_id = KeyId::new(key_id)?;
            let k: KeyEntry = ctx.query(&Query::Key(key_id.clone()))?;
            reshare(&ctx, key_id, k.parties, k.threshold, wait)
        }
        Cmd::Key {
            key_id,
            verify: false,
        } => Ok(key_json(&ctx.query(&Query::Key(KeyId::new(key_id)?))?)),
        Cmd::Key {
            key_id,
            verify: true,
        } => {
            let key_id = KeyId::new(key_id)?;
            let v = proven::read_verified(&ctx.rpc_url, &Query::Key(key_id.clone()).path(), &[])?;
            let proof = json!({
                "state_key": v.key, "height": v.height, "header_height": v.header_height,
                "header_hash": v.header_hash, "app_hash": v.app_hash,
            });
            let Some(value) = &v.value else {
                bail!(
                    "key {key_id} does not exist: proven absent at height {} against app hash {} \
                     of header {} ({})",
                    v.height,
                    v.app_hash,
                    v.header_height,
                    v.header_hash
                );
            };
            let k: KeyEntry =
                serde_json::from_slice(value).context("the proven value is not a key entry")?;
            let mut out = key_json(&k);
            out["verified"] = proof;
            Ok(out)
        }
        Cmd::Keys => {
            let keys: Vec<KeyEntry> = ctx.query(&Query::Keys)?;
            Ok(Value::Array(keys.iter().map(key_json).collect()))
        }
        Cmd::SignStatus { request_id } => sign_status(&ctx, &request_id),
        Cmd::Nodes => Ok(serde_json::to_value(
            ctx.query::<Vec<NodeView>>(&Query::Nodes)?,
        )?),
        Cmd::NodeJoin {
            node_id,
            public_key,
            p2p_addr,
            wait,
        } => {
            let node_id = NodeId::new(node_id)?;
            let public_key =
                seqmpc_abci::chain::state::parse_pubkey(&public_key).map_err(|e| anyhow!(e))?;
            let msg = TxMsg::NodeJoin {
                node_id: node_id.clone(),
                public_key,
                p2p_addr,
            };
            if let Some(submitted) = registry_change(&ctx, &node_id, msg, wait)? {
                return Ok(submitted);
            }
            let nodes = ctx.wait_until(&Query::Nodes, |nodes: &Vec<NodeView>| {
                nodes.iter().any(|n| n.node.id == node_id)
            })?;
            Ok(serde_json::to_value(
                nodes.into_iter().find(|n| n.node.id == node_id),
            )?)
        }
        Cmd::NodeRotateKey {
            node_id,
            public_key,
            wait,
        } => {
            let node_id = NodeId::new(node_id)?;
            let pk =
                seqmpc_abci::chain::state::parse_pubkey(&public_key).map_err(|e| anyhow!(e))?;
            let msg = TxMsg::NodeRotateKey {
                node_id: node_id.clone(),
                public_key: pk,
            };
            if let Some(submitted) = registry_change(&ctx, &node_id, msg, wait)? {
                return Ok(submitted);
            }
            let want = hex::encode(pk);
            let nodes = ctx.wait_until(&Query::Nodes, |nodes: &Vec<NodeView>| {
                nodes
                    .iter()
                    .any(|n| n.node.id == node_id && n.node.public_key == want)
            })?;
            Ok(serde_json::to_value(
                nodes.into_iter().find(|n| n.node.id == node_id),
            )?)
        }
        Cmd::NodeRemove { node_id, wait } => {
            let node_id = NodeId::new(node_id)?;
            let msg = TxMsg::NodeRemove {
                node_id: node_id.clone(),
            };
            if let Some(submitted) = registry_change(&ctx, &node_id, msg, wait)? {
                return Ok(submitted);
            }
            ctx.wait_until(&Query::Nodes, |nodes: &Vec<NodeView>| {
                !nodes.iter().any(|n| n.node.id == node_id)
            })?;
            Ok(json!({"node_id": node_id, "status": "REMOVED"}))
        }
        Cmd::Admins { key_id, admins } => {
            let key_id = KeyId::new(key_id)?;
            let admins = admins
                .iter()
                .map(|a| account_key(a))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let key = ctx.key()?;
            let hash = ctx.submit(
                &key,
                TxMsg::KeyAdmins {
                    key_id: key_id.clone(),
                    admins,
                },
            )?;
            ctx.wait_committed(&hash)?;
            let k: KeyEntry = ctx.query(&Query::Key(key_id.clone()))?;
            Ok(json!({"key_id": key_id, "owner": k.owner, "admins": k.admins}))
        }
        Cmd::Proposals => {
            let v: ProposalsView = ctx.query(&Query::Proposals)?;
            Ok(serde_json::to_value(v)?)
        }
        Cmd::Approve { proposal } => vote(&ctx, &proposal, false),
        Cmd::Cancel { proposal } => vote(&ctx, &proposal, true),
        Cmd::NodeStatus { node, key_id } => {
            let node = NodeId::new(node)?;
            let manifest = ctx.localnet.as_ref().ok_or_else(|| {
                anyhow!(
                    "node-status needs --home of a localnet (localnet.json lists node endpoints)"
                )
            })?;
            let url = &manifest
                .node(node.as_str())
                .ok_or_else(|| anyhow!("no node {node} in localnet.json"))?
                .status;
            let path = match key_id {
                Some(k) => format!("/key/{}", KeyId::new(k)?),
                None => "/status".into(),
            };
            let resp = ureq::get(&format!("{url}{path}")).call();
            match resp {
                Ok(r) => Ok(r.into_json()?),
                Err(ureq::Error::Status(_, r)) => {
                    let v: Value = r.into_json().unwrap_or(Value::Null);
                    bail!("{}", v["error"].as_str().unwrap_or("node error"))
                }
                Err(e) => bail!("cannot reach node {node} at {url}: {e}"),
            }
        }
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("mpcctl: {}", format!("{e:#}").replace('\n', " "));
            std::process::exit(1);
        }
    }
}
