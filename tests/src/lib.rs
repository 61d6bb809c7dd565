//! Harness for end-to-end tests and the benchmark: starts a real localnet (the `localnet`
//! binary, which starts `mpcd` processes and the dev sequencer), runs `mpcctl`, and submits
//! request txs in bulk over the real RPC.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ed25519_dalek::SigningKey;
use seqmpc_abci::daemon::keys::load_key_file;
use seqmpc_abci::daemon::rpc::RpcClient;
use seqmpc_proto::tx::{sign_tx, TxMsg};
use serde_json::Value;

pub mod verify;

/// Directory of the built binaries: `SEQMPC_BIN_DIR`, else `<workspace>/target/release`.
/// The CGGMP24 test fixtures (`module/tests/fixtures/`), found at run time: cargo and nextest
/// set `CARGO_MANIFEST_DIR` for the test process. The compile-time value would name the
/// checkout that built a cached binary, which a later checkout elsewhere reuses unchanged.
pub fn cggmp_fixtures() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../module/tests/fixtures/cggmp24-test-fixtures.json")
}

pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SEQMPC_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release")
}

/// A running localnet, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Localnet {
    /// Its directory.
    pub dir: PathBuf,
    child: Child,
    /// localnet.json.
    pub info: Value,
    /// RPC client.
    pub rpc: RpcClient,
    http: ureq::Agent,
}

impl Localnet {
    /// Starts `localnet start` in `dir` and waits for localnet.json.
    pub fn start(
        dir: &Path,
        nodes: u32,
        threshold: u32,
        block_ms: u64,
        base_port: u16,
    ) -> anyhow::Result<Localnet> {
        Localnet::start_with(dir, nodes, threshold, block_ms, base_port, &[])
    }

    /// [`Localnet::start`] with extra `localnet start` arguments.
    pub fn start_with(
        dir: &Path,
        nodes: u32,
        threshold: u32,
        block_ms: u64,
        base_port: u16,
        extra: &[&std::ffi::OsStr],
    ) -> anyhow::Result<Localnet> {
        Localnet::start_with_env(dir, nodes, threshold, block_ms, base_port, extra, &[])
    }

    /// [`Localnet::start_with`] with environment variables for `localnet` and so for every
    /// mpcd it starts (e.g. `SEQMPC_SESSION_TIMEOUT_SECS`). A node restarted by
    /// [`Localnet::restart_node`] gets only the environment given there.
    pub fn start_with_env(
        dir: &Path,
        nodes: u32,
        threshold: u32,
        block_ms: u64,
        base_port: u16,
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Localnet> {
        let bin = bin_dir();
        let localnet = bin.join("localnet");
        if !localnet.exists() {
            bail!(
                "{} missing: run `cargo build --release --bins` first (make test does)",
                localnet.display()
            );
        }
        let log = std::fs::File::create(dir.with_extension("log"))?;
        let child = Command::new(&localnet)
            .args(["start", "--dir"])
            .arg(dir)
            .args([
                "--nodes",
                &nodes.to_string(),
                "--threshold",
                &threshold.to_string(),
            ])
            .args([
                "--block-ms",
                &block_ms.to_string(),
                "--base-port",
                &base_port.to_string(),
            ])
            .arg("--mpcd")
            .arg(bin.join("mpcd"))
            .args(extra)
            // FROST tests and the bench must not compete with background safe-prime generation
            // (a core for 28-300 s per node); the CGGMP24 test passes fixture primes.
            .env("SEQMPC_CGGMP_PRIMES_AT_START", "false")
            .envs(env.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn localnet")?;
        let mut net = Localnet {
            dir: dir.to_owned(),
            child,
            info: Value::Null,
            rpc: RpcClient::new("http://127.0.0.1:1"),
            // One keep-alive agent: polling must not burn through ephemeral ports.
            http: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build(),
        };
        let start = Instant::now();
        let path = dir.join("localnet.json");
        loop {
            if let Some(status) = net.child.try_wait()? {
                let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                bail!("localnet exited with {status}:\n{log}");
            }
            if let Ok(b) = std::fs::read(&path) {
                if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                    net.rpc = RpcClient::new(v["rpc"].as_str().unwrap_or_default());
                    net.info = v;
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("localnet did not come up within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(net)
    }

    /// Runs mpcctl with `--home dir` and `args`.
    pub fn mpcctl(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("mpcctl"))
            .arg("--home")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mpcctl: {e}"))
    }

    /// Runs mpcctl and parses its JSON output; Err(stderr) on a non-zero exit. Every `--wait`
    /// must have waited on the sequencer's `/websocket` blocks, not fallen back to polling.
    pub fn mpcctl_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.mpcctl(args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("polling"),
            "mpcctl {args:?} could not subscribe to blocks: {stderr}"
        );
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The client account key.
    pub fn client_key(&self) -> anyhow::Result<SigningKey> {
        load_key_file(Path::new(
            self.info["client_key"]
                .as_str()
                .ok_or_else(|| anyhow!("no client_key"))?,
        ))
    }

    /// ABCI query through the RPC, parsed as JSON.
    pub fn query(&self, path: &str) -> anyhow::Result<Value> {
        let r = self.rpc.abci_query(path)?;
        if r.code != 0 {
            bail!("{}", r.log);
        }
        Ok(serde_json::from_slice(&r.value)?)
    }

    /// GET on a node's status endpoint, as text (e.g. `/metrics`): the content type and body.
    pub fn node_get_text(&self, node: usize, path: &str) -> anyhow::Result<(String, String)> {
        let url = self.info["nodes"][node]["status"]
            .as_str()
            .ok_or_else(|| anyhow!("no node {node}"))?;
        let r = self.http.get(&format!("{url}{path}")).call()?;
        let content_type = r.content_type().to_owned();
        Ok((content_type, r.into_string()?))
    }

    /// GET on the chain's RPC (the dev sequencer), as text (e.g. `/metrics`): the content type
    /// and body.
    pub fn rpc_get_text(&self, path: &str) -> anyhow::Result<(String, String)> {
        let url = self.info["rpc"]
            .as_str()
            .ok_or_else(|| anyhow!("no rpc in localnet.json"))?;
        let r = self.http.get(&format!("{url}{path}")).call()?;
        let content_type = r.content_type().to_owned();
        Ok((content_type, r.into_string()?))
    }

    /// GET on a node's status endpoint.
    pub fn node_get(&self, node: usize, path: &str) -> anyhow::Result<Value> {
        let url = self.info["nodes"][node]["status"]
            .as_str()
            .ok_or_else(|| anyhow!("no node {node}"))?;
        Ok(self.http.get(&format!("{url}{path}")).call()?.into_json()?)
    }

    /// Stops the localnet (SIGTERM) and waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait()?;
        bail!("localnet did not stop on SIGTERM within 15 s")
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

impl Localnet {
    /// A failed test's evidence, before its temporary directory goes: each node's warnings and
    /// errors and the last lines of its log, on stderr (which nextest shows for a failure).
    fn dump_logs(&self) {
        const WARNINGS: usize = 40;
        const TAIL: usize = 25;
        for i in 0.. {
            let path = self.dir.join(format!("node{i}")).join("mpcd.log");
            let Ok(text) = std::fs::read_to_string(&path) else {
                break;
            };
            let lines: Vec<String> = text.lines().map(strip_ansi).collect();
            let warnings: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            eprintln!("==== {}: last warnings and errors", path.display());
            for l in &warnings[warnings.len().saturating_sub(WARNINGS)..] {
                eprintln!("{l}");
            }
            eprintln!("==== {}: last {TAIL} lines", path.display());
            for l in &lines[lines.len().saturating_sub(TAIL)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// `line` without its terminal colour escapes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Submits many request txs from one account with consecutive sequences, over the real RPC.
pub struct Submitter {
    key: SigningKey,
    chain_id: String,
    seq: u64,
    rpc: RpcClient,
}

impl Submitter {
    /// Reads the account's sequence from the chain.
    pub fn new(net: &Localnet, key: SigningKey) -> anyhow::Result<Submitter> {
        let pk = hex::encode(key.verifying_key().to_bytes());
        let seq = net.query(&format!("/account/{pk}"))?["sequence"]
            .as_u64()
            .unwrap_or(0);
        Ok(Submitter {
            key,
            chain_id: net.info["chain_id"].as_str().unwrap_or_default().to_owned(),
            seq,
            rpc: net.rpc.clone(),
        })
    }

    /// Signs and broadcasts; errors on a CheckTx rejection.
    pub fn submit(&mut self, msg: TxMsg) -> anyhow::Result<String> {
        let tx = sign_tx(&self.key, &self.chain_id, self.seq, msg);
        let r = self.rpc.broadcast_tx_sync(&tx)?;
        if r.code != 0 {
            bail!("rejected (code {}): {}", r.code, r.log);
        }
        self.seq += 1;
        Ok(r.hash)
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A node process restarted by a test (not localnet's child): stopped when dropped, so a
/// failing assertion does not leave it holding the test's ports.
pub struct Restarted(Child);

impl Restarted {
    /// Whether the process has exited (reaped here), e.g. at an injected crash point.
    pub fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

impl Localnet {
    /// `kill -9` node `i` (the process localnet.json names).
    pub fn kill_node(&self, i: usize) -> anyhow::Result<()> {
        let pid = self.info["nodes"][i]["pid"]
            .as_i64()
            .ok_or_else(|| anyhow!("no pid for node {i}"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        Ok(())
    }

    /// Restarts node `i` from localnet.json's `cmd` (with `--flag value` pairs replaced and
    /// `env` set), logging to its log file; returns once it has caught up with the chain.
    pub fn restart_node(
        &self,
        i: usize,
        replace: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Restarted> {
        let node = &self.info["nodes"][i];
        let h_before = self.rpc.height()?;
        let mut argv: Vec<String> = node["cmd"]
            .as_array()
            .ok_or_else(|| anyhow!("no cmd for node {i}"))?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        for (flag, value) in replace {
            let at = argv
                .iter()
                .position(|a| a == flag)
                .ok_or_else(|| anyhow!("node {i}'s cmd has no {flag}"))?;
            *argv
                .get_mut(at + 1)
                .ok_or_else(|| anyhow!("{flag} without a value"))? = (*value).into();
        }
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| anyhow!("empty cmd for node {i}"))?;
        let spawn = || -> anyhow::Result<Restarted> {
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(node["log"].as_str().unwrap_or_default())?;
            Ok(Restarted(
                Command::new(program)
                    .args(args)
                    .envs(env.iter().copied())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?,
            ))
        };
        // A process killed a moment ago may still hold its ports (the kernel closes them when
        // it has exited, which takes longer on a loaded machine): the new one then exits at
        // once, and is started again.
        let mut restarted = spawn()?;
        let start = Instant::now();
        loop {
            if restarted.exited() {
                std::thread::sleep(Duration::from_millis(250));
                restarted = spawn()?;
            }
            let caught_up = self
                .node_get(i, "/status")
                .ok()
                .and_then(|st| st["chain_height"].as_u64())
                .is_some_and(|h| h > h_before + 3);
            if caught_up {
                break;
            }
            if start.elapsed() > Duration::from_secs(45) {
                bail!("node{i} did not catch up after restart");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(restarted)
    }
}

impl Localnet {
    /// The nice value of every thread whose name starts with `prefix` in this network's
    /// running `mpcd` processes (Linux `/proc`; processes found by their command line, which
    /// names a path inside [`Localnet::dir`], so restarted nodes count too).
    pub fn thread_nices(&self, prefix: &str) -> Vec<i32> {
        let dir = self.dir.to_string_lossy().into_owned();
        let numeric = |e: &std::fs::DirEntry| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        };
        let mut nices = Vec::new();
        for proc in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if !numeric(&proc) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(proc.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let mut argv = cmdline.split('\0');
            let is_mpcd = argv.next().is_some_and(|p| p.ends_with("mpcd"));
            if !is_mpcd || !cmdline.contains(&dir) {
                continue;
            }
            for task in std::fs::read_dir(proc.path().join("task"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if !name.starts_with(prefix) {
                    continue;
                }
                // stat: "tid (comm) state ...": nice is field 19, the 17th after the comm.
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                let nice: Option<i32> = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(16))
                    .and_then(|n| n.parse().ok());
                nices.extend(nice);
            }
        }
        nices
    }
}

impl Localnet {
    /// `localnet add-node`: admits the next node (NodeJoin) and starts it; reloads
    /// localnet.json so the node's status endpoint is known. Returns the node's JSON.
    pub fn add_node(&mut self) -> anyhow::Result<Value> {
        let out = Command::new(bin_dir().join("localnet"))
            .args(["add-node", "--dir"])
            .arg(&self.dir)
            .arg("--mpcd")
            .arg(bin_dir().join("mpcd"))
            .env("SEQMPC_CGGMP_PRIMES_AT_START", "false")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("add-node failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let added: Value = serde_json::from_slice(&out.stdout)?;
        self.info = serde_json::from_slice(&std::fs::read(self.dir.join("localnet.json"))?)?;
        Ok(added)
    }
}

impl Localnet {
    /// The dev sequencer's record of an app hash divergence (an app replaying blocks after a
    /// restart computed another app hash than the chain recorded), if any.
    pub fn app_hash_divergence(&self) -> anyhow::Result<Value> {
        Ok(self.sequencer_status()?["app_hash_divergence"].clone())
    }

    /// The dev sequencer's own `seqmpc` section of `/status` (apps up, their heights, app hash
    /// divergences), which tendermint-rs's status type does not carry: from the raw answer.
    pub fn sequencer_status(&self) -> anyhow::Result<Value> {
        let (_, body) = self.rpc_get_text("/status")?;
        let mut st: Value = serde_json::from_str(&body)?;
        match st["result"].get_mut("seqmpc") {
            Some(section) => Ok(section.take()),
            None => Err(anyhow!("/status has no seqmpc section: {st}")),
        }
    }
}

impl Localnet {
    /// Every node's records agree with the chain (`/status` `diverged == false`, for nodes
    /// `0..nodes`) and the sequencer saw no app hash divergence.
    pub fn check_settled(&self, nodes: usize) -> anyhow::Result<()> {
        for i in 0..nodes {
            let st = self.node_get(i, "/status")?;
            if st["diverged"] != false {
                bail!("node{i} diverges from the chain: {}", st["divergences"]);
            }
        }
        let d = self.app_hash_divergence()?;
        if !d.is_null() {
            bail!("app hashes diverged: {d}");
        }
        Ok(())
    }
}
