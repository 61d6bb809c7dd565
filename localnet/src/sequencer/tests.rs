//! The dev sequencer against tendermint-abci's key/value store app, in-process, over real
//! sockets: ABCI on 127.0.0.1 and the RPC over HTTP.

#![allow(non_snake_case)]

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tendermint_abci::{Application, ClientBuilder, KeyValueStoreApp, ServerBuilder};
use tendermint_proto::v0_38::abci::{
    CheckTxType, ExecTxResult, RequestCheckTx, RequestFinalizeBlock, RequestInfo, RequestInitChain,
    RequestQuery, ResponseCheckTx, ResponseCommit, ResponseFinalizeBlock, ResponseInfo,
    ResponseInitChain, ResponseQuery,
};

use super::{AppState, Sequencer, SequencerConfig};

mod pruning;

// ---------------------------------------------------------------------------------------------
// A test app: the kvstore, plus a real app hash chain (salted, to provoke divergence), per-tx
// results, CheckTx refusals (`bad...`) and recheck refusals (`once...`).

#[derive(Default)]
struct HashChain {
    committed: Vec<u8>,
    pending: Vec<u8>,
    init_chains: Vec<RequestInitChain>,
    /// Height of the block being executed.
    height: i64,
}

#[derive(Clone)]
struct TestApp {
    kv: KeyValueStoreApp,
    chain: Arc<Mutex<HashChain>>,
    salt: &'static str,
    /// Blocks its Commit asks the engine to keep (`retain_height`; 0: every block).
    keep: i64,
}

impl Application for TestApp {
    fn info(&self, req: RequestInfo) -> ResponseInfo {
        let mut info = self.kv.info(req);
        info.last_block_app_hash = self.chain.lock().unwrap().committed.clone().into();
        info
    }

    fn init_chain(&self, req: RequestInitChain) -> ResponseInitChain {
        self.chain.lock().unwrap().init_chains.push(req);
        ResponseInitChain::default()
    }

    fn query(&self, req: RequestQuery) -> ResponseQuery {
        self.kv.query(req)
    }

    fn check_tx(&self, req: RequestCheckTx) -> ResponseCheckTx {
        if req.tx.starts_with(b"bad") {
            return ResponseCheckTx {
                code: 7,
                log: "bad tx".into(),
                codespace: "test".into(),
                ..Default::default()
            };
        }
        if req.tx.starts_with(b"once") && req.r#type == CheckTxType::Recheck as i32 {
            return ResponseCheckTx {
                code: 8,
                log: "no longer valid".into(),
                ..Default::default()
            };
        }
        self.kv.check_tx(req)
    }

    fn commit(&self) -> ResponseCommit {
        let mut r = self.kv.commit();
        let mut c = self.chain.lock().unwrap();
        c.committed = c.pending.clone();
        if self.keep > 0 {
            r.retain_height = (c.height - self.keep + 1).max(0);
        }
        r
    }

    fn finalize_block(&self, req: RequestFinalizeBlock) -> ResponseFinalizeBlock {
        self.chain.lock().unwrap().height = req.height;
        // The "stable" app's hash changes only with txs (as a state store's root does).
        if self.salt == "stable" && req.txs.is_empty() {
            let committed = self.chain.lock().unwrap().committed.clone();
            self.chain.lock().unwrap().pending = committed.clone();
            let mut r = self.kv.finalize_block(req);
            r.app_hash = committed.into();
            return r;
        }
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(&self.chain.lock().unwrap().committed);
        h.update(req.height.to_be_bytes());
        for tx in &req.txs {
            h.update(tx);
        }
        let app_hash = h.finalize().to_vec();
        let n = req.txs.len();
        let mut r = self.kv.finalize_block(req);
        let events = std::mem::take(&mut r.events);
        r.tx_results = (0..n)
            .map(|i| ExecTxResult {
                code: 0,
                data: b"ok".to_vec().into(),
                log: format!("tx {i}"),
                events: events.get(i).cloned().into_iter().collect(),
                ..Default::default()
            })
            .collect();
        r.app_hash = app_hash.clone().into();
        self.chain.lock().unwrap().pending = app_hash;
        r
    }
}

/// Starts a fresh app on a free port; returns its address and its shared hash chain.
fn start_app(salt: &'static str) -> (String, Arc<Mutex<HashChain>>) {
    start_app_keeping(salt, 0)
}

/// [`start_app`], whose Commit asks to keep only the last `keep` blocks (0: every block).
fn start_app_keeping(salt: &'static str, keep: i64) -> (String, Arc<Mutex<HashChain>>) {
    let (kv, driver) = KeyValueStoreApp::new();
    let chain = Arc::new(Mutex::new(HashChain::default()));
    let app = TestApp {
        kv,
        chain: chain.clone(),
        salt,
        keep,
    };
    let server = ServerBuilder::default().bind("127.0.0.1:0", app).unwrap();
    let addr = server.local_addr();
    thread::spawn(move || {
        let _ = driver.run();
    });
    thread::spawn(move || {
        let _ = server.listen();
    });
    (addr, chain)
}

/// A TCP proxy in front of an app, to simulate an app that is down, or crashes and restarts
/// (with empty state) at the same address.
struct Proxy {
    addr: String,
    backend: Arc<Mutex<Option<String>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(backend: Option<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let backend = Arc::new(Mutex::new(backend));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (b, c) = (backend.clone(), conns.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(client) = stream else { continue };
                let target = b.lock().unwrap().clone();
                let Some(target) = target else {
                    drop(client); // "down": the connection dies at once
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(upstream.try_clone().unwrap());
                drop(list);
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Proxy {
            addr,
            backend,
            conns,
        }
    }

    /// Switches to another backend (or none), killing the current connections.
    fn switch(&self, backend: Option<String>) {
        *self.backend.lock().unwrap() = backend;
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn config(apps: Vec<String>, dir: &std::path::Path) -> SequencerConfig {
    let mut cfg = SequencerConfig::new(
        apps,
        "test-chain",
        br#"{"hello":"world"}"#.to_vec(),
        dir.to_path_buf(),
    );
    cfg.rpc_listen = "127.0.0.1:0".into();
    cfg.block_ms = 100;
    cfg.startup_timeout = Duration::from_secs(5);
    cfg.abci_timeout = Duration::from_secs(5);
    cfg
}

fn get(url: &str) -> (u16, Value) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn post(url: &str, body: &str) -> (u16, Value) {
    match ureq::post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

/// The status of a POST whose body the server refuses before reading it all. The server may close
/// the connection while the body is still being written, so the body goes from another thread
/// (its write errors are expected) while this one reads the answer.
fn post_oversized(url: &str, body: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let sender = thread::spawn(move || {
        let _ = writer.write_all(request.as_bytes());
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer to an oversized POST: {e}"),
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    sender.join().unwrap();
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {line:?}"))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Info straight from an app (height, app hash).
fn app_info(addr: &str) -> (i64, Vec<u8>) {
    let mut c = ClientBuilder::default().connect(addr).unwrap();
    let i = c.info(RequestInfo::default()).unwrap();
    (i.last_block_height, i.last_block_app_hash.to_vec())
}

fn committed_height(url: &str, hash: &str) -> Option<u64> {
    let (_, v) = get(&format!("{url}/tx?hash=0x{hash}"));
    v["result"]["height"].as_str().map(|h| h.parse().unwrap())
}

/// A sequencer driving one test app, at height 1 or more; keep the directory alive.
fn one_app_sequencer() -> (tempfile::TempDir, Sequencer) {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let seq = Sequencer::spawn(config(vec![a], dir.path())).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    (dir, seq)
}

/// A runtime for the async RPC clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn sequencer__should_commit_broadcast_txs_and_serve_them_over_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let (a, chain_a) = start_app("");
    let (b, _) = start_app("");
    let seq =
        Sequencer::spawn(config(vec![format!("a={a}"), format!("b={b}")], dir.path())).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let url = seq.rpc_url();

    // InitChain carried the chain id, the app state and initial height 1.
    {
        let c = chain_a.lock().unwrap();
        assert_eq!(c.init_chains.len(), 1);
        assert_eq!(c.init_chains[0].chain_id, "test-chain");
        assert_eq!(
            c.init_chains[0].app_state_bytes.as_ref(),
            br#"{"hello":"world"}"#
        );
        assert_eq!(c.init_chains[0].initial_height, 1);
    }

    // URI GET with a quoted string, and POST JSON-RPC with base64.
    let (code, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"k1=v1\""));
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["result"]["code"], 0, "{r}");
    let h1 = r["result"]["hash"].as_str().unwrap().to_owned();
    assert_eq!(h1, hex::encode_upper(Sha256::digest(b"k1=v1")));
    let (_, r) = post(
        &url,
        &json!({"jsonrpc": "2.0", "id": 7, "method": "broadcast_tx_sync",
                "params": {"tx": b64(b"k2=v2")}})
        .to_string(),
    );
    assert_eq!(r["id"], 7);
    assert_eq!(r["result"]["code"], 0, "{r}");
    let h2 = r["result"]["hash"].as_str().unwrap().to_owned();
    let (_, r) = get(&format!(
        "{url}/broadcast_tx_sync?tx=0x{}",
        hex::encode(b"k3=v3")
    ));
    assert_eq!(r["result"]["code"], 0, "{r}");

    // A tx refused by CheckTx comes back as a result with its code, and is not committed.
    // check_tx answers without queueing.
    let (_, r) = get(&format!("{url}/check_tx?tx=\"bad=1\""));
    assert_eq!(r["result"]["code"], 7, "{r}");
    let (_, r) = get(&format!("{url}/check_tx?tx=\"k9=v9\""));
    assert_eq!(r["result"]["code"], 0, "{r}");
    let (_, r) = get(&format!("{url}/unconfirmed_txs?limit=5"));
    let queued = r["result"]["txs"].as_array().unwrap();
    assert!(!queued.contains(&json!(b64(b"k9=v9"))), "{r}");
    let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"bad=1\""));
    assert_eq!(r["result"]["code"], 7, "{r}");
    assert_eq!(r["result"]["log"], "bad tx");
    assert_eq!(r["result"]["codespace"], "test");

    wait("k1 and k2 committed", Duration::from_secs(10), || {
        committed_height(&url, &h1).is_some() && committed_height(&url, &h2).is_some()
    });
    let height = committed_height(&url, &h1).unwrap();

    // abci_query, URI and POST forms.
    let (_, r) = get(&format!(
        "{url}/abci_query?path=\"/key\"&data=0x{}",
        hex::encode("k1")
    ));
    assert_eq!(r["result"]["response"]["value"], b64(b"v1"), "{r}");
    assert_eq!(r["result"]["response"]["code"], 0);
    let (_, r) = post(
        &url,
        &json!({"jsonrpc": "2.0", "id": "q", "method": "abci_query",
                "params": {"path": "", "data": hex::encode("k2"), "height": "0", "prove": false}})
        .to_string(),
    );
    assert_eq!(r["result"]["response"]["value"], b64(b"v2"), "{r}");

    // Both apps executed the block.
    for addr in [&a, &b] {
        let mut c = ClientBuilder::default().connect(addr.as_str()).unwrap();
        let q = c
            .query(RequestQuery {
                data: "k1".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(q.value.as_ref(), b"v1");
    }

    // tx, block and block_results.
    let (_, r) = get(&format!("{url}/tx?hash=0x{h1}"));
    assert_eq!(r["result"]["hash"], h1.as_str());
    assert_eq!(r["result"]["tx"], b64(b"k1=v1"));
    assert_eq!(r["result"]["tx_result"]["code"], 0);
    assert_eq!(r["result"]["tx_result"]["data"], b64(b"ok"));
    let index = r["result"]["index"].as_u64().unwrap();
    let (_, r) = get(&format!("{url}/block?height={height}"));
    let header = &r["result"]["block"]["header"];
    assert_eq!(header["chain_id"], "test-chain");
    assert_eq!(header["height"], height.to_string());
    assert!(header["time"].as_str().unwrap().ends_with('Z'));
    // The dev validator proposes every block, and status names it.
    let (_, st) = get(&format!("{url}/status"));
    assert_eq!(
        header["proposer_address"],
        st["result"]["validator_info"]["address"]
    );
    assert_eq!(header["proposer_address"].as_str().unwrap().len(), 40);
    let txs = r["result"]["block"]["data"]["txs"].as_array().unwrap();
    assert_eq!(txs[index as usize], b64(b"k1=v1"));
    let (_, r) = get(&format!("{url}/block_results?height={height}"));
    assert_eq!(r["result"]["height"], height.to_string());
    let results = r["result"]["txs_results"].as_array().unwrap();
    assert_eq!(results.len(), txs.len());
    assert_eq!(results[index as usize]["events"][0]["type"], "app");
    // POST with positional params; the app hash of the block is the one the apps report.
    let (_, r) = post(
        &url,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "block_results", "params": [height.to_string()]})
            .to_string(),
    );
    assert!(r["result"]["app_hash"].is_string(), "{r}");

    // status: CometBFT fields plus the seqmpc section; heights advance.
    let (_, s1) = get(&format!("{url}/status"));
    let st = &s1["result"];
    assert_eq!(st["node_info"]["network"], "test-chain");
    assert_eq!(st["sync_info"]["catching_up"], false);
    assert_eq!(st["seqmpc"]["apps_up"], json!(["a", "b"]));
    assert_eq!(st["seqmpc"]["app_hash_divergence"], Value::Null);
    let h_a: u64 = st["sync_info"]["latest_block_height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait("heights to advance", Duration::from_secs(5), || {
        seq.height() >= h_a + 3
    });
    let (_, s2) = get(&format!("{url}/status"));
    assert_ne!(
        s1["result"]["sync_info"]["latest_block_time"],
        s2["result"]["sync_info"]["latest_block_time"]
    );
    let st = seq.status();
    assert_eq!(st.phase, "running");
    assert!(st.apps.iter().all(|a| a.state == AppState::Up));
    seq.stop().unwrap();
}

#[test]
fn sequencer__should_refuse_a_duplicate_tx() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let (b, _) = start_app("");
    let seq = Sequencer::spawn(config(vec![a, b], dir.path())).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let url = seq.rpc_url();

    let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"dup=1\""));
    assert_eq!(r["result"]["code"], 0, "{r}");
    let hash = r["result"]["hash"].as_str().unwrap().to_owned();
    let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"dup=1\""));
    // Pending or just committed: refused either way.
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert_eq!(r["error"]["data"], "tx already exists in cache");

    wait("the tx to commit", Duration::from_secs(10), || {
        committed_height(&url, &hash).is_some()
    });
    let (_, r) = post(
        &url,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "broadcast_tx_sync",
                "params": {"tx": b64(b"dup=1")}})
        .to_string(),
    );
    assert_eq!(r["error"]["data"], "tx already exists in cache", "{r}");
    seq.stop().unwrap();
}

#[test]
fn sequencer__should_drop_txs_that_fail_recheck() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let mut cfg = config(vec![a], dir.path());
    cfg.max_block_txs = 1;
    cfg.block_ms = 300;
    let seq = Sequencer::spawn(cfg).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let url = seq.rpc_url();
    let mut hashes = Vec::new();
    for tx in ["r1=1", "r2=2", "once=3"] {
        let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"{tx}\""));
        assert_eq!(r["result"]["code"], 0, "{r}");
        hashes.push(r["result"]["hash"].as_str().unwrap().to_owned());
    }
    wait("r1 and r2 committed", Duration::from_secs(10), || {
        committed_height(&url, &hashes[0]).is_some() && committed_height(&url, &hashes[1]).is_some()
    });
    let h = seq.height();
    seq.wait_for_height(h + 2, Duration::from_secs(5)).unwrap();
    assert_eq!(committed_height(&url, &hashes[2]), None);
    let (_, r) = get(&format!("{url}/num_unconfirmed_txs"));
    assert_eq!(r["result"]["n_txs"], "0", "{r}");
    seq.stop().unwrap();
}

#[test]
fn sequencer__should_catch_up_an_app_started_late_or_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let late = Proxy::start(None);
    let mut cfg = config(
        vec![format!("a={a}"), format!("late={}", late.addr)],
        dir.path(),
    );
    cfg.startup_timeout = Duration::from_millis(300);
    let seq = Sequencer::spawn(cfg).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let url = seq.rpc_url();
    for i in 0..20 {
        let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"late{i}=v{i}\""));
        assert_eq!(r["result"]["code"], 0, "{r}");
    }
    seq.wait_for_height(seq.height() + 5, Duration::from_secs(10))
        .unwrap();
    let st = seq.status();
    assert_eq!(st.apps[1].state, AppState::Down);

    let all_synced = |seq: &Sequencer, b: &str| {
        let st = seq.status();
        let (ha, hash_a) = app_info(&a);
        let (hb, hash_b) = app_info(b);
        st.apps.iter().all(|x| x.state == AppState::Up) && ha == hb && hash_a == hash_b
    };

    // The app comes up late: InitChain, replay of every stored block, then live blocks.
    let (b1, chain_b1) = start_app("");
    late.switch(Some(b1.clone()));
    wait("the late app to catch up", Duration::from_secs(10), || {
        all_synced(&seq, &b1)
    });
    assert_eq!(chain_b1.lock().unwrap().init_chains.len(), 1);
    let mut c = ClientBuilder::default().connect(b1.as_str()).unwrap();
    let q = c
        .query(RequestQuery {
            data: "late19".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(q.value.as_ref(), b"v19");

    // It crashes and restarts empty at the same address: caught up again by replay.
    let (b2, _) = start_app("");
    late.switch(Some(b2.clone()));
    wait(
        "the restarted app to catch up",
        Duration::from_secs(10),
        || {
            let h = seq.height();
            all_synced(&seq, &b2) && app_info(&b2).0 >= i64::try_from(h).unwrap() - 1
        },
    );
    assert!(seq.status().app_hash_divergence.is_none());
    seq.stop().unwrap();
}

#[test]
fn sequencer__should_resume_from_its_block_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let (b, _) = start_app("");
    let apps = vec![a.clone(), b.clone()];
    let seq = Sequencer::spawn(config(apps.clone(), dir.path())).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let (_, r) = get(&format!(
        "{}/broadcast_tx_sync?tx=\"keep=1\"",
        seq.rpc_url()
    ));
    let hash = r["result"]["hash"].as_str().unwrap().to_owned();
    let url = seq.rpc_url();
    wait("the tx to commit", Duration::from_secs(10), || {
        committed_height(&url, &hash).is_some()
    });
    let tx_height = committed_height(&url, &hash).unwrap();
    seq.stop().unwrap();
    let (height_before, _) = app_info(&a);

    // Restart against the same apps: no InitChain, heights continue, history is served.
    let seq = Sequencer::spawn(config(apps.clone(), dir.path())).unwrap();
    let h0 = u64::try_from(height_before).unwrap();
    assert_eq!(seq.height(), h0);
    seq.wait_for_height(h0 + 2, Duration::from_secs(10))
        .unwrap();
    let url = seq.rpc_url();
    assert_eq!(committed_height(&url, &hash), Some(tx_height));
    let (_, r) = get(&format!("{url}/block?height=1"));
    assert_eq!(r["result"]["block"]["header"]["height"], "1", "{r}");
    // The block log's gauges, though nothing is pruned.
    let metrics = ureq::get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap()
    };
    assert!(
        gauge("seqmpc_sequencer_block_store_bytes") > 0.0,
        "{metrics}"
    );
    assert_eq!(gauge("seqmpc_sequencer_earliest_height"), 1.0, "{metrics}");
    let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"keep=1\""));
    assert_eq!(r["error"]["data"], "tx already exists in cache", "{r}");
    seq.stop().unwrap();

    // Another chain's genesis is refused for this data dir.
    let mut other = config(apps, dir.path());
    other.chain_id = "other-chain".into();
    assert!(Sequencer::spawn(other).is_err());
}

#[test]
fn sequencer__should_report_app_hash_divergence_and_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let (b, _) = start_app("evil");
    let seq =
        Sequencer::spawn(config(vec![format!("a={a}"), format!("b={b}")], dir.path())).unwrap();
    seq.wait_for_height(3, Duration::from_secs(10)).unwrap();
    let st = seq.status();
    let d = st.app_hash_divergence.expect("divergence reported");
    assert!(d.contains("a=") && d.contains("b="), "{d}");
    let (_, r) = get(&format!("{}/status", seq.rpc_url()));
    assert!(r["result"]["seqmpc"]["app_hash_divergence"].is_string());
    assert_eq!(
        st.apps.iter().filter(|a| a.state == AppState::Up).count(),
        2
    );
    seq.stop().unwrap();
}

#[test]
fn sequencer__should_answer_bad_rpc_input_with_jsonrpc_errors() {
    let (_dir, seq) = one_app_sequencer();
    let url = seq.rpc_url();

    let (code, r) = get(&format!("{url}/broadcast_tx_sync"));
    assert_eq!(
        (code, r["error"]["code"].as_i64()),
        (400, Some(-32602)),
        "{r}"
    );
    let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=0xZZ"));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=notquoted"));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/abci_query?data=0x123"));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/block?height=abc"));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/block?height=999999"));
    assert_eq!(r["error"]["code"], -32603, "{r}");
    let (_, r) = get(&format!("{url}/tx?hash=0x00"));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/tx?hash=0x{}", "00".repeat(32)));
    assert_eq!(r["error"]["code"], -32603, "{r}");
    let (code, r) = get(&format!("{url}/no_such_method"));
    assert_eq!(
        (code, r["error"]["code"].as_i64()),
        (404, Some(-32601)),
        "{r}"
    );

    let rpc = |body: &str| post(&url, body).1;
    let r = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"broadcast_tx_sync","params":{}}"#);
    assert_eq!(
        (r["id"].as_i64(), r["error"]["code"].as_i64()),
        (Some(1), Some(-32602))
    );
    let r = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"broadcast_tx_sync","params":{"tx":"%%%"}}"#);
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"broadcast_tx_sync","params":{"tx":5}}"#);
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"abci_query","params":{"data":"xyz"}}"#);
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#);
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = rpc(r#"{"jsonrpc":"1.0","id":1,"method":"status"}"#);
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let r = rpc(r#"{"jsonrpc":"2.0","id":1,"method":"block","params":[1,2,3]}"#);
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = rpc("not json");
    assert_eq!(r["error"]["code"], -32700, "{r}");
    let r = rpc("[]");
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let r = rpc(
        r#"[{"jsonrpc":"2.0","id":1,"method":"health"},{"jsonrpc":"2.0","id":2,"method":"nope"}]"#,
    );
    assert_eq!(r[0]["result"], json!({}), "{r}");
    assert_eq!(r[1]["error"]["code"], -32601, "{r}");
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"broadcast_tx_sync","params":{{"tx":"{}"}}}}"#,
        "A".repeat(2_000_000)
    );
    assert_eq!(post_oversized(&url, &big), 413);

    // Still serving.
    let (code, r) = get(&format!("{url}/status"));
    assert_eq!(code, 200);
    assert_eq!(r["result"]["node_info"]["network"], "test-chain");
    assert!(!seq.is_finished());
    seq.stop().unwrap();
}

/// Throughput of `broadcast_tx_sync` over HTTP (keep-alive clients, JSON-RPC POST) into two
/// kvstore apps, and of commits. Run: `cargo test -p seqmpc-localnet --release -- --ignored
/// --nocapture sequencer__bench`.
#[test]
#[ignore = "benchmark"]
fn sequencer__bench_broadcast_tx_sync_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let (b, _) = start_app("");
    let mut cfg = config(vec![a, b], dir.path());
    cfg.block_ms = 200;
    let seq = Sequencer::spawn(cfg).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let url = seq.rpc_url();
    let (threads, per_thread) = (8usize, 2500usize);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = url.clone();
            thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                for i in 0..per_thread {
                    let tx = format!("bench{t}x{i}=value-{i:0>120}");
                    let body = json!({"jsonrpc": "2.0", "id": i, "method": "broadcast_tx_sync",
                                      "params": {"tx": b64(tx.as_bytes())}});
                    loop {
                        let r: Value = agent
                            .post(&url)
                            .send_json(body.clone())
                            .unwrap()
                            .into_json()
                            .unwrap();
                        // A full mempool is backpressure: wait for the next block.
                        let full = r["error"]["data"]
                            .as_str()
                            .is_some_and(|d| d.starts_with("mempool is full"));
                        if !full {
                            assert_eq!(r["result"]["code"], 0, "tx {t}/{i}: {r}");
                            break;
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let sent = start.elapsed();
    let total = threads * per_thread;
    let last = format!(
        "bench{}x{}=value-{:0>120}",
        threads - 1,
        per_thread - 1,
        per_thread - 1
    );
    let last_hash = hex::encode_upper(Sha256::digest(last.as_bytes()));
    wait("every tx committed", Duration::from_secs(120), || {
        committed_height(&url, &last_hash).is_some() && seq.status().mempool_txs == 0
    });
    let committed = start.elapsed();
    println!(
        "broadcast_tx_sync: {total} txs in {sent:?} = {:.0} tx/s accepted; all committed after \
         {committed:?} = {:.0} tx/s end to end; height {}",
        total as f64 / sent.as_secs_f64(),
        total as f64 / committed.as_secs_f64(),
        seq.height()
    );
    seq.stop().unwrap();
}

#[test]
fn sequencer__should_attach_an_app_at_runtime_and_replay_the_chain_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("");
    let mut cfg = config(vec![format!("a={a}")], dir.path());
    cfg.dev_add_app_token = Some("s3cret".into());
    cfg.max_apps = 2;
    let seq = Sequencer::spawn(cfg).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let url = seq.rpc_url();
    for i in 0..5 {
        let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"new{i}=v{i}\""));
        assert_eq!(r["result"]["code"], 0, "{r}");
    }
    seq.wait_for_height(seq.height() + 3, Duration::from_secs(10))
        .unwrap();

    // Attach over the RPC: InitChain, replay, then live blocks, in step with the first app.
    let (b, chain_b) = start_app("");
    let (code, r) = post(
        &url,
        &format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"dev_add_app","params":{{"name":"b","addr":"{b}","token":"s3cret"}}}}"#
        ),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["result"]["attached"], true, "{r}");
    wait(
        "the attached app to catch up",
        Duration::from_secs(10),
        || {
            let st = seq.status();
            st.apps.len() == 2
                && st.apps.iter().all(|x| x.state == AppState::Up)
                && app_info(&a) == app_info(&b)
        },
    );
    assert_eq!(chain_b.lock().unwrap().init_chains.len(), 1);

    // Refused: the same name, the same app however its address is spelled (one app driven
    // twice panicked a node before: issue 14), an address off this host, a bad address, no
    // or a wrong token, one app more than `max_apps`.
    let port = b.rsplit(':').next().unwrap();
    for (params, needle) in [
        (
            r#"{"name":"b","addr":"127.0.0.1:1","token":"s3cret"}"#.to_owned(),
            "attached already",
        ),
        (
            format!(r#"{{"name":"c","addr":"{b}","token":"s3cret"}}"#),
            "attached already",
        ),
        (
            format!(r#"{{"name":"c","addr":"[::ffff:127.0.0.1]:{port}","token":"s3cret"}}"#),
            "attached already",
        ),
        (
            format!(r#"{{"name":"c","addr":"0.0.0.0:{port}","token":"s3cret"}}"#),
            "attached already",
        ),
        (
            format!(r#"{{"name":"c","addr":"[::1]:{port}","token":"s3cret"}}"#),
            "attached already",
        ),
        (
            r#"{"name":"c","addr":"10.1.2.3:26658","token":"s3cret"}"#.to_owned(),
            "not on this host",
        ),
        (
            r#"{"name":"c","addr":"nowhere","token":"s3cret"}"#.to_owned(),
            "bad app",
        ),
        (
            r#"{"name":"c","token":"s3cret"}"#.to_owned(),
            "missing addr",
        ),
        (r#"{"name":"c","addr":"127.0.0.1:1"}"#.to_owned(), "token"),
        (
            r#"{"name":"c","addr":"127.0.0.1:1","token":"guess"}"#.to_owned(),
            "token",
        ),
        (
            r#"{"name":"c","addr":"127.0.0.1:1","token":"s3cret"}"#.to_owned(),
            "the most",
        ),
    ] {
        let (_, r) = post(
            &url,
            &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"dev_add_app","params":{params}}}"#),
        );
        assert_eq!(r["error"]["code"], -32602, "{params}: {r}");
        assert!(
            r["error"]["data"]
                .as_str()
                .unwrap_or_default()
                .contains(needle)
                || r["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(needle),
            "{params}: {r}"
        );
    }
    assert_eq!(seq.status().apps.len(), 2);
    seq.stop().unwrap();

    // A sequencer without a token (the default) has the method off.
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = start_app("");
    let seq = Sequencer::spawn(config(vec![format!("c={c}")], dir.path())).unwrap();
    let (_, r) = post(
        &seq.rpc_url(),
        r#"{"jsonrpc":"2.0","id":1,"method":"dev_add_app","params":{"name":"c","addr":"127.0.0.1:1"}}"#,
    );
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r.to_string().contains("off on this sequencer"), "{r}");
    seq.stop().unwrap();
}

/// tendermint-rs's own clients against the dev sequencer: HttpClient over the served methods
/// (their answers parse into tendermint-rs types), and WebSocketClient subscriptions to
/// NewBlock and to one tx's Tx event, then unsubscribed.
#[test]
fn sequencer__should_serve_tendermint_rs_clients_over_http_and_websocket() {
    use futures::StreamExt;
    use tendermint_rpc::client::CompatMode;
    use tendermint_rpc::event::EventData;
    use tendermint_rpc::query::{EventType, Query};
    use tendermint_rpc::{Client, HttpClient, SubscriptionClient, WebSocketClient};

    let (_dir, seq) = one_app_sequencer();
    let url = seq.rpc_url();
    runtime().block_on(async {
        let timeout = Duration::from_secs(10);
        let http = HttpClient::builder(url.parse().unwrap())
            .compat_mode(CompatMode::V0_38)
            .build()
            .unwrap();
        let status = http.status().await.unwrap();
        assert_eq!(status.node_info.network.as_str(), "test-chain");
        assert_eq!(
            status.node_info.listen_addr.to_string(),
            format!("tcp://{}", seq.rpc_addr())
        );
        http.health().await.unwrap();
        let info = http.abci_info().await.unwrap();
        assert!(info.last_block_height.value() >= 1);

        let ws_url = format!("ws://{}/websocket", seq.rpc_addr());
        let (ws, driver) = WebSocketClient::builder(ws_url.parse().unwrap())
            .compat_mode(CompatMode::V0_38)
            .build()
            .await
            .unwrap();
        let driver = tokio::spawn(driver.run());
        let mut blocks = ws.subscribe(EventType::NewBlock.into()).await.unwrap();
        let tx = b"ws=1".to_vec();
        let hash = Sha256::digest(&tx);
        let by_hash = Query::from(EventType::Tx).and_eq("tx.hash", hex::encode_upper(hash));
        let mut txs = ws.subscribe(by_hash.clone()).await.unwrap();
        let mut other_txs = ws
            .subscribe(Query::from(EventType::Tx).and_eq("tx.hash", "00".repeat(32)))
            .await
            .unwrap();

        let sent = http.broadcast_tx_sync(tx.clone()).await.unwrap();
        assert!(sent.code.is_ok(), "{sent:?}");
        assert_eq!(sent.hash.as_bytes(), hash.as_slice());

        // NewBlock events come in height order, with the block and its results.
        let first = tokio::time::timeout(timeout, blocks.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let EventData::NewBlock {
            block,
            block_id,
            result_finalize_block,
        } = first.data
        else {
            panic!("{:?}", first.data)
        };
        let block = block.unwrap();
        // Headers hash like CometBFT's: tendermint-rs recomputes the block id.
        assert_eq!(block.header.hash(), block_id.hash);
        assert_eq!(
            block_id.hash.as_bytes(),
            seq_block_hash(&url, block.header.height.value())
        );
        assert!(result_finalize_block.is_some());
        let next = tokio::time::timeout(timeout, blocks.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let EventData::NewBlock {
            block: Some(next), ..
        } = next.data
        else {
            panic!("{:?}", next.data)
        };
        assert_eq!(next.header.height.value(), block.header.height.value() + 1);

        // The tx's event, with the tx and its result; the other query saw nothing.
        let ev = tokio::time::timeout(timeout, txs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.query, by_hash.to_string());
        let EventData::Tx { tx_result } = ev.data else {
            panic!("{:?}", ev.data)
        };
        assert_eq!(tx_result.tx, tx);
        let events = ev.events.unwrap();
        assert_eq!(events["tx.hash"], vec![hex::encode_upper(hash)]);
        assert_eq!(events["tx.height"], vec![tx_result.height.to_string()]);

        // The tx through the HTTP client too, and its block and results.
        let got = http
            .tx(tendermint::Hash::Sha256(hash.into()), false)
            .await
            .unwrap();
        assert_eq!(got.height.value(), tx_result.height as u64);
        assert_eq!(got.tx, tx);
        let b = http.block(got.height).await.unwrap();
        assert_eq!(b.block.data.len(), 1);
        let h = &b.block.header;
        // With prove, an inclusion proof against the header's data_hash.
        assert!(got.proof.is_none());
        let proof = http
            .tx(tendermint::Hash::Sha256(hash.into()), true)
            .await
            .unwrap()
            .proof
            .unwrap();
        assert_eq!(Some(proof.root_hash), h.data_hash);
        assert_eq!(proof.data, tx);
        assert_eq!(
            proven_root(&proof),
            Some(h.data_hash.unwrap().as_bytes().try_into().unwrap())
        );
        assert_eq!(h.hash(), b.block_id.hash);
        assert_eq!(
            h.data_hash.unwrap().as_bytes(),
            tendermint::merkle::simple_hash_from_byte_vectors::<
                tendermint::crypto::default::Sha256,
            >(&[hash.to_vec()])
        );
        assert_eq!(h.version.app, info.app_version);
        assert_eq!(h.validators_hash, h.next_validators_hash);
        assert_ne!(h.proposer_address.as_bytes(), [0u8; 20]);
        // Each header names the one before it.
        let prev = http.block(got.height.value() as u32 - 1).await.unwrap();
        assert_eq!(h.last_block_id.unwrap().hash, prev.block_id.hash);
        assert_eq!(prev.block.header.hash(), prev.block_id.hash);
        // The other block views agree with it.
        let header = http.header(got.height).await.unwrap().header;
        assert_eq!(header.hash(), b.block_id.hash);
        let commit = http.commit(got.height).await.unwrap();
        assert_eq!(commit.signed_header.header.hash(), b.block_id.hash);
        assert_eq!(commit.signed_header.commit.block_id.hash, b.block_id.hash);
        let chain = http.blockchain(1u32, 3u32).await.unwrap();
        assert_eq!(chain.block_metas.len(), 3);
        for m in &chain.block_metas {
            assert_eq!(m.header.hash(), m.block_id.hash);
        }
        assert_eq!(chain.block_metas[0].header.height.value(), 3, "newest first");
        let vals = http
            .validators(got.height, tendermint_rpc::Paging::All)
            .await
            .unwrap();
        assert_eq!(
            tendermint::validator::Set::new(vals.validators, None).hash(),
            h.validators_hash
        );
        let params = http.consensus_params(got.height).await.unwrap();
        assert_eq!(params.consensus_params.block.max_bytes, 22_020_096);
        let genesis: tendermint::Genesis<Value> = http.genesis().await.unwrap();
        assert_eq!(genesis.chain_id.as_str(), "test-chain");
        assert_eq!(genesis.app_state, json!({"hello": "world"}));
        assert_eq!(genesis.validators.len(), 1);
        assert!(http.net_info().await.unwrap().listening);
        let r = http.block_results(got.height).await.unwrap();
        assert_eq!(r.txs_results.unwrap().len(), 1);
        let q = http
            .abci_query(Some("/key".to_owned()), b"ws".to_vec(), None, false)
            .await
            .unwrap();
        assert_eq!(q.value, b"1");

        ws.unsubscribe(EventType::NewBlock.into()).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), other_txs.next())
                .await
                .is_err(),
            "an event for a query nothing matched"
        );
        ws.close().unwrap();
        let _ = driver.await;
    });
    seq.stop().unwrap();
}

/// `tx_search`, `block_search`, `block_by_hash` and `header_by_hash` through tendermint-rs's
/// HttpClient: queries on `tx.hash`, `tx.height`, the txs' event attributes and
/// `block.height`, both orders, paging, and clear errors for a bad query or page.
#[test]
fn sequencer__should_search_txs_and_blocks_and_find_blocks_by_hash() {
    use tendermint_rpc::client::CompatMode;
    use tendermint_rpc::query::Query;
    use tendermint_rpc::{Client, HttpClient, Order};

    let (_dir, seq) = one_app_sequencer();
    let url = seq.rpc_url();
    runtime().block_on(async {
        let http = HttpClient::builder(url.parse().unwrap())
            .compat_mode(CompatMode::V0_38)
            .build()
            .unwrap();
        let mut sent = Vec::new();
        for kv in ["s1=a", "s2=b", "s3=c"] {
            let r = http
                .broadcast_tx_commit(kv.as_bytes().to_vec())
                .await
                .unwrap();
            assert!(r.tx_result.code.is_ok(), "{r:?}");
            sent.push((kv, r.hash, r.height));
        }

        // By an event attribute of the result (the kvstore's `app.key`), and by hash.
        let q: Query = "app.key = 's2'".parse().unwrap();
        let found = http
            .tx_search(q, false, 1, 30, Order::Ascending)
            .await
            .unwrap();
        assert_eq!(found.total_count, 1);
        assert_eq!(found.txs[0].hash, sent[1].1);
        assert_eq!(found.txs[0].tx, b"s2=b");
        assert_eq!(found.txs[0].height, sent[1].2);
        let q = Query::eq("tx.hash", sent[2].1.to_string());
        let found = http
            .tx_search(q, false, 1, 30, Order::Ascending)
            .await
            .unwrap();
        assert_eq!(
            (found.total_count, found.txs[0].tx.as_slice()),
            (1, b"s3=c".as_slice())
        );

        // Every tx, paged, in both orders.
        let all = || Query::gte("tx.height", 1u64);
        let page1 = http
            .tx_search(all(), false, 1, 2, Order::Ascending)
            .await
            .unwrap();
        assert_eq!((page1.total_count, page1.txs.len()), (3, 2));
        assert_eq!(page1.txs[0].hash, sent[0].1);
        let page2 = http
            .tx_search(all(), false, 2, 2, Order::Ascending)
            .await
            .unwrap();
        assert_eq!(page2.txs.len(), 1);
        assert_eq!(page2.txs[0].hash, sent[2].1);
        let newest = http
            .tx_search(all(), false, 1, 1, Order::Descending)
            .await
            .unwrap();
        assert_eq!(newest.txs[0].hash, sent[2].1);
        let none = Query::eq("app.key", "nothing");
        let empty = http
            .tx_search(none, false, 1, 30, Order::Ascending)
            .await
            .unwrap();
        assert_eq!((empty.total_count, empty.txs.len()), (0, 0));

        // Blocks by height, then by hash.
        let h = sent[1].2;
        let q = Query::eq("block.height", h.value());
        let blocks = http.block_search(q, 1, 30, Order::Ascending).await.unwrap();
        assert_eq!(blocks.total_count, 1);
        let b = &blocks.blocks[0];
        assert_eq!(b.block.header.height, h);
        assert_eq!(b.block.header.hash(), b.block_id.hash);
        let q = Query::gte("block.height", 1u64);
        let latest = http.block_search(q, 1, 1, Order::Descending).await.unwrap();
        assert!(latest.total_count >= h.value() as u32);
        assert!(latest.blocks[0].block.header.height >= h);

        let by_hash = http.block_by_hash(b.block_id.hash).await.unwrap();
        assert_eq!(by_hash.block.unwrap().header.height, h);
        assert_eq!(by_hash.block_id, b.block_id);
        let header = http.header_by_hash(b.block_id.hash).await.unwrap();
        assert_eq!(header.header.unwrap().hash(), b.block_id.hash);
        let unknown = tendermint::Hash::Sha256([7u8; 32]);
        assert!(http.block_by_hash(unknown).await.unwrap().block.is_none());
        assert!(http.header_by_hash(unknown).await.unwrap().header.is_none());

        // broadcast_tx_async answers at once with the hash; the tx then commits.
        let queued = http.broadcast_tx_async(b"s4=d".to_vec()).await.unwrap();
        assert!(queued.code.is_ok(), "{queued:?}");
        let mut committed = None;
        for _ in 0..100 {
            if let Ok(r) = http.tx(queued.hash, false).await {
                committed = Some(r);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(committed.expect("the async tx never committed").tx, b"s4=d");
    });

    // Clear errors for a bad query, a search of tm.event, and a page past the end.
    let (_, r) = get(&format!("{url}/tx_search?query=\"app.key=\""));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/tx_search?query=\"tm.event='Tx'\""));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/tx_search?query=\"tx.height>0\"&page=9"));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(
        r["error"]["data"]
            .as_str()
            .unwrap()
            .contains("page should be within [1, 1] range"),
        "{r}"
    );
    let (_, r) = get(&format!(
        "{url}/block_search?query=\"block.height>0\"&order_by=\"up\""
    ));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let (_, r) = get(&format!("{url}/tx_search"));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    seq.stop().unwrap();
}

/// `mpcctl --wait` waits on `/websocket` blocks (`daemon::block_watch`): against the dev
/// sequencer each call returns the next height; an RPC without `/websocket` is refused at
/// once, with a reason, so the caller can poll instead.
#[test]
fn block_watch__should_return_each_new_block_and_refuse_an_rpc_without_websocket() {
    use seqmpc_abci::daemon::block_watch::{websocket_url, BlockWatch};

    let (_dir, seq) = one_app_sequencer();
    let mut w = BlockWatch::connect(&seq.rpc_url()).unwrap();
    let a = w.next_block(Duration::from_secs(5)).unwrap();
    let b = w.next_block(Duration::from_secs(5)).unwrap();
    assert_eq!(b, a + 1);
    assert!(!w.is_closed());
    drop(w);

    // A server that answers HTTP but no WebSocket upgrade.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut conn in listener.incoming().flatten().take(2) {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let err = BlockWatch::connect(&format!("http://{addr}"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("cannot subscribe"), "{err}");
    assert!(BlockWatch::connect("ftp://x").is_err());
    assert_eq!(
        websocket_url("https://rpc.example:443/").unwrap(),
        "wss://rpc.example:443/websocket"
    );
    seq.stop().unwrap();
}

/// `block_id.hash` of block `height`, from the RPC's JSON.
fn seq_block_hash(url: &str, height: u64) -> Vec<u8> {
    let (_, r) = get(&format!("{url}/block?height={height}"));
    hex::decode(r["result"]["block_id"]["hash"].as_str().unwrap()).unwrap()
}

/// `/websocket` spoken raw: plain methods over the socket, `NewBlockHeader` events, and clear
/// errors for a query that does not parse, a sixth subscription, an unknown unsubscribe and a
/// binary message. (tendermint-rpc's client drops a refused subscription's error, so this
/// test speaks JSON itself.)
#[test]
fn sequencer__should_refuse_bad_websocket_subscriptions() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let (_dir, seq) = one_app_sequencer();
    runtime().block_on(async {
        let url = format!("ws://{}/websocket", seq.rpc_addr());
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let r = ws_call(&mut ws, 1, "status", json!({})).await;
        assert_eq!(r["result"]["node_info"]["network"], "test-chain", "{r}");
        let r = ws_call(
            &mut ws,
            2,
            "subscribe",
            json!({"query": "tm.event='Tx' AND"}),
        )
        .await;
        assert_eq!(r["error"]["code"], -32602, "{r}");
        let r = ws_call(
            &mut ws,
            3,
            "subscribe",
            json!(["tm.event='NewBlockHeader'"]),
        )
        .await;
        assert_eq!(r["result"], json!({}), "{r}");
        for i in 0..4 {
            let q = format!("tm.event='Tx' AND app.key='k{i}'");
            let r = ws_call(&mut ws, 10 + i, "subscribe", json!({"query": q})).await;
            assert_eq!(r["result"], json!({}), "{r}");
        }
        let r = ws_call(
            &mut ws,
            20,
            "subscribe",
            json!({"query": "tm.event='Tx' AND app.key='k9'"}),
        )
        .await;
        let err = r["error"]["data"].as_str().unwrap_or_default();
        assert!(err.contains("max_subscriptions_per_client"), "{r}");
        let r = ws_call(
            &mut ws,
            21,
            "subscribe",
            json!({"query": "tm.event='NewBlockHeader'"}),
        )
        .await;
        assert!(
            r["error"]["data"]
                .as_str()
                .unwrap()
                .contains("already subscribed"),
            "{r}"
        );
        let r = ws_call(
            &mut ws,
            22,
            "unsubscribe",
            json!({"query": "tm.event='NewBlock'"}),
        )
        .await;
        assert!(
            r["error"]["data"].as_str().unwrap().contains("not found"),
            "{r}"
        );
        // A header event, under the subscribe request's id.
        let header = loop {
            let v = ws_next(&mut ws).await;
            if v["result"]["query"].is_string() {
                break v;
            }
        };
        assert_eq!(header["id"], 3, "{header}");
        assert_eq!(
            header["result"]["data"]["type"],
            "tendermint/event/NewBlockHeader"
        );
        assert_eq!(
            header["result"]["events"]["tm.event"],
            json!(["NewBlockHeader"])
        );
        let height = header["result"]["data"]["value"]["header"]["height"]
            .as_str()
            .unwrap();
        assert!(height.parse::<u64>().unwrap() >= 1, "{header}");
        let r = ws_call(&mut ws, 30, "unsubscribe_all", json!({})).await;
        assert_eq!(r["result"], json!({}), "{r}");
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        let v = ws_next(&mut ws).await;
        assert_eq!(v["error"]["code"], -32600, "{v}");
    });
    seq.stop().unwrap();
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON message on `ws` (within 10 s).
async fn ws_next(ws: &mut RawWs) -> Value {
    use futures::StreamExt;
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str(m.to_text().unwrap()).unwrap()
}

/// Sends one JSON-RPC request on `ws`; returns its answer (skipping events).
async fn ws_call(ws: &mut RawWs, id: u64, method: &str, params: Value) -> Value {
    use futures::SinkExt;
    let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        req.to_string(),
    ))
    .await
    .unwrap();
    loop {
        let v = ws_next(ws).await;
        if v["id"] == id && v["result"]["query"].is_null() {
            return v;
        }
    }
}

/// CometBFT's `Proof.Verify` (crypto/merkle), read back: the root that the proof's leaf hash
/// and aunts (innermost first) lead to, for its index among `total` leaves.
fn root_from_aunts(index: u64, total: u64, leaf: [u8; 32], aunts: &[[u8; 32]]) -> Option<[u8; 32]> {
    use tendermint::merkle::MerkleHash as _;
    let mut h = tendermint::crypto::default::Sha256::default();
    match total {
        0 => None,
        1 => aunts.is_empty().then_some(leaf),
        _ => {
            let (top, rest) = aunts.split_last()?;
            let left = total.next_power_of_two() / 2;
            if index < left {
                let l = root_from_aunts(index, left, leaf, rest)?;
                Some(h.inner_hash(l, *top))
            } else {
                let r = root_from_aunts(index - left, total - left, leaf, rest)?;
                Some(h.inner_hash(*top, r))
            }
        }
    }
}

/// The root a tx proof leads to, from the SHA-256 hash of its data (not its own leaf hash).
fn proven_root(p: &tendermint::tx::Proof) -> Option<[u8; 32]> {
    use tendermint::merkle::MerkleHash as _;
    let leaf = tendermint::crypto::default::Sha256::default().leaf_hash(&Sha256::digest(&p.data));
    if p.proof.leaf_hash.as_bytes() != leaf {
        return None;
    }
    let aunts: Vec<[u8; 32]> = p
        .proof
        .aunts
        .iter()
        .map(|a| a.as_bytes().try_into().ok())
        .collect::<Option<_>>()?;
    root_from_aunts(p.proof.index, p.proof.total, leaf, &aunts)
}

/// `tx?prove=true`: for blocks of 1 to 9 txs, every tx's proof leads to the root
/// tendermint-rs computes for the block's `data_hash`; the proof of one tx does not prove
/// another.
#[test]
fn tx_proof__should_prove_every_tx_of_a_block_against_its_data_hash() {
    for n in 1..=9usize {
        let txs: Vec<prost::bytes::Bytes> = (0..n)
            .map(|i| prost::bytes::Bytes::from(format!("tx{i}")))
            .collect();
        let hashes: Vec<Vec<u8>> = txs.iter().map(|t| Sha256::digest(t).to_vec()).collect();
        let root = tendermint::merkle::simple_hash_from_byte_vectors::<
            tendermint::crypto::default::Sha256,
        >(&hashes);
        for i in 0..n {
            let p = super::header::tx_proof(&txs, i).unwrap();
            assert_eq!(p.root_hash.as_bytes(), root);
            assert_eq!(p.data, txs[i]);
            assert_eq!(p.proof.total, n as u64);
            assert_eq!(proven_root(&p), Some(root), "tx {i} of {n}");
            let mut other = p.clone();
            other.data = txs[(i + 1) % n].to_vec();
            if n > 1 {
                assert_ne!(proven_root(&other), Some(root), "tx {i} of {n}");
            }
        }
        assert!(super::header::tx_proof(&txs, n).is_none());
    }
}

#[test]
fn sequencer__should_make_no_empty_blocks_when_told_but_a_block_for_each_tx_and_its_proof() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("stable");
    let mut cfg = config(vec![a], dir.path());
    cfg.create_empty_blocks = false;
    let seq = Sequencer::spawn(cfg).unwrap();
    let url = seq.rpc_url();
    // The first block comes; then, idle, no more (at 100 ms blocks, 10 a second otherwise).
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    thread::sleep(Duration::from_millis(1000));
    let idle = seq.status().height;
    assert!(idle <= 2, "height {idle} after an idle second");
    // A tx gets a block, and the block after it carries the new app hash; then idle again.
    let (_, r) = get(&format!("{url}/broadcast_tx_sync?tx=\"k=v\""));
    let hash = r["result"]["hash"].as_str().unwrap().to_owned();
    wait("the tx committed", Duration::from_secs(5), || {
        committed_height(&url, &hash).is_some()
    });
    let h = committed_height(&url, &hash).unwrap();
    seq.wait_for_height(h + 1, Duration::from_secs(5)).unwrap();
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(seq.status().height, h + 1, "one proof block, then nothing");
    seq.stop().unwrap();

    // With an interval, empty blocks come that often.
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = start_app("stable");
    let mut cfg = config(vec![a], dir.path());
    cfg.create_empty_blocks = false;
    cfg.empty_block_interval_ms = 300;
    let seq = Sequencer::spawn(cfg).unwrap();
    seq.wait_for_height(1, Duration::from_secs(10)).unwrap();
    let start = seq.status().height;
    thread::sleep(Duration::from_millis(1500));
    let made = seq.status().height - start;
    assert!(
        (3..=6).contains(&made),
        "{made} blocks in 1.5 s at one per 300 ms"
    );
    seq.stop().unwrap();
}
