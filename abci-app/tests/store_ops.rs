//! `mpcd rotate-master-key`, `mpcd backup` and `mpcd restore`, run as an operator would: the
//! real binary on a node home made by `mpcd init`.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use seqmpc_abci::chain::genesis::{Genesis, GenesisNode, Limits};
use seqmpc_module::store::{KeyRecord, KeyStore, MasterKey, SecretShare, ShareStatus};
use seqmpc_proto::{KeyId, NodeId, Scheme, SessionId};

const CHAIN: &str = "store-ops-chain";

struct Node {
    home: PathBuf,
    id: NodeId,
    public_key: String,
}

struct Setup {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Setup {
    /// Two initialized node homes and a genesis naming both.
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (0..2)
            .map(|i| {
                let home = dir.path().join(format!("home{i}"));
                let id = NodeId::new(format!("node{i}")).unwrap();
                let out = mpcd(&["init", "--home", s(&home), "--node-id", id.as_str()]);
                assert!(out.ok, "{}", out.stderr);
                let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                let public_key = v["public_key"].as_str().unwrap().to_owned();
                Node {
                    home,
                    id,
                    public_key,
                }
            })
            .collect();
        let setup = Setup { dir, nodes };
        setup.write_genesis(CHAIN, "genesis.json");
        setup
    }

    fn write_genesis(&self, chain_id: &str, name: &str) -> PathBuf {
        let g = Genesis {
            chain_id: chain_id.into(),
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| GenesisNode {
                    id: n.id.clone(),
                    public_key: n.public_key.clone(),
                    p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 31000 + i),
                })
                .collect(),
            accounts: vec![],
            limits: Limits::default(),
            governance: None,
        };
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(&g).unwrap()).unwrap();
        path
    }

    fn genesis(&self) -> PathBuf {
        self.dir.path().join("genesis.json")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Opens node `i`'s key store in this process (as the running node would hold it).
    fn open(&self, i: usize) -> KeyStore {
        let n = &self.nodes[i];
        let master = MasterKey::load(&n.home.join("master.key")).unwrap();
        KeyStore::open(&n.home.join("keystore"), &master, CHAIN, &n.id).unwrap()
    }

    fn populate(&self, i: usize) {
        let mut store = self.open(i);
        for (k, b) in [("eth", 0xe7u8), ("btc", 0xb7)] {
            store.put(&record(k, b)).unwrap();
        }
    }

    /// Checks node `i`'s store holds what [`Setup::populate`] put.
    fn assert_populated(&self, i: usize) {
        let recs = self.open(i).list().unwrap();
        let got: Vec<(String, Vec<u8>)> = recs
            .iter()
            .map(|r| {
                (
                    r.key_id.to_string(),
                    r.share.as_ref().unwrap().expose().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("btc".into(), vec![0xb7; 32]),
                ("eth".into(), vec![0xe7; 32])
            ]
        );
    }

    fn run(&self, i: usize, cmd: &str, extra: &[&str]) -> Out {
        let home = &self.nodes[i].home;
        let genesis = self.genesis();
        let mut args = vec![cmd, "--home", s(home), "--genesis", s(&genesis)];
        args.extend_from_slice(extra);
        mpcd(&args)
    }
}

fn record(key: &str, byte: u8) -> KeyRecord {
    KeyRecord {
        key_id: KeyId::new(key).unwrap(),
        session: SessionId([0x5e; 32]),
        scheme: Scheme::FrostEd25519,
        threshold: 2,
        parties: vec![NodeId::new("node0").unwrap(), NodeId::new("node1").unwrap()],
        public_key: vec![0x11; 32],
        status: ShareStatus::Ready,
        error: None,
        generation: 1,
        share: Some(SecretShare::new(vec![byte; 32])),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn mpcd(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_mpcd"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The command failed with exit code 1 and one line on stderr containing `needle`.
fn assert_fails(out: &Out, needle: &str) {
    assert!(!out.ok, "succeeded: {}", out.stdout);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("mpcd: "), "{}", out.stderr);
    assert!(out.stderr.contains(needle), "{}", out.stderr);
}

#[test]
fn mpcd_rotate_master_key__should_refuse_a_running_node_then_rotate_and_keep_every_record() {
    let t = Setup::new();
    t.populate(0);
    let key_file = t.nodes[0].home.join("master.key");
    let before = std::fs::read(&key_file).unwrap();

    let running = t.open(0);
    assert_fails(&t.run(0, "rotate-master-key", &[]), "is mpcd running");
    drop(running);
    assert_eq!(std::fs::read(&key_file).unwrap(), before);

    let out = t.run(0, "rotate-master-key", &[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("\"rotated\":true"), "{}", out.stdout);
    let after = std::fs::read(&key_file).unwrap();
    assert_ne!(after, before);
    t.assert_populated(0);

    // The old key no longer opens the store.
    let old = t.file("old.key");
    std::fs::write(&old, &before).unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let err = KeyStore::open(
        &t.nodes[0].home.join("keystore"),
        &MasterKey::load(&old).unwrap(),
        CHAIN,
        &t.nodes[0].id,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not open"), "{err}");
}

#[test]
fn mpcd_backup__should_restore_after_a_wipe_and_refuse_bad_backups() {
    let t = Setup::new();
    t.populate(0);
    let backup = t.file("node0.backup");
    let out = t.run(0, "backup", &["--out", s(&backup)]);
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["records"], 2);
    // Never overwritten.
    assert_fails(
        &t.run(0, "backup", &["--out", s(&backup)]),
        "already exists",
    );

    // The store still holds records: refused without --force.
    assert_fails(
        &t.run(0, "restore", &["--no-chain-check", "--from", s(&backup)]),
        "pass --force",
    );

    // Wipe, then refuse damaged files before writing anything.
    std::fs::remove_dir_all(t.nodes[0].home.join("keystore")).unwrap();
    let good = std::fs::read(&backup).unwrap();
    let bad = t.file("bad.backup");
    std::fs::write(&bad, &good[..good.len() - 7]).unwrap();
    assert_fails(
        &t.run(0, "restore", &["--no-chain-check", "--from", s(&bad)]),
        "truncated or modified",
    );
    std::fs::write(&bad, &good[..20]).unwrap();
    assert_fails(
        &t.run(0, "restore", &["--no-chain-check", "--from", s(&bad)]),
        "backup file is unusable",
    );
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x20;
    std::fs::write(&bad, &flipped).unwrap();
    assert_fails(
        &t.run(0, "restore", &["--no-chain-check", "--from", s(&bad)]),
        "truncated or modified",
    );
    std::fs::write(&bad, b"hello").unwrap();
    assert_fails(
        &t.run(0, "restore", &["--no-chain-check", "--from", s(&bad)]),
        "not a seqmpc key store backup",
    );
    assert!(!t.nodes[0].home.join("keystore").exists());

    // A backup of another node is refused.
    t.populate(1);
    let foreign = t.file("node1.backup");
    assert!(t.run(1, "backup", &["--out", s(&foreign)]).ok);
    assert_fails(
        &t.run(0, "restore", &["--no-chain-check", "--from", s(&foreign)]),
        "node \"node1\"",
    );

    // The good one restores.
    let out = t.run(0, "restore", &["--no-chain-check", "--from", s(&backup)]);
    assert!(out.ok, "{}", out.stderr);
    t.assert_populated(0);

    // With --force over a store that holds records: replaced, the old one moved aside.
    let out = t.run(
        0,
        "restore",
        &["--no-chain-check", "--from", s(&backup), "--force"],
    );
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(Path::new(v["replaced"].as_str().unwrap()).is_dir());
    t.assert_populated(0);

    // After a rotation, the backup needs the old master key.
    let old_key = t.file("old-master.key");
    std::fs::copy(t.nodes[0].home.join("master.key"), &old_key).unwrap();
    assert!(t.run(0, "rotate-master-key", &[]).ok);
    assert_fails(
        &t.run(
            0,
            "restore",
            &["--no-chain-check", "--from", s(&backup), "--force"],
        ),
        "master key does not open this backup",
    );
    let out = t.run(
        0,
        "restore",
        &[
            "--no-chain-check",
            "--from",
            s(&backup),
            "--force",
            "--backup-master-key",
            s(&old_key),
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    t.assert_populated(0); // opened with the current HOME/master.key
}

#[test]
fn mpcd_backup__should_refuse_a_backup_of_another_chain() {
    let t = Setup::new();
    t.populate(0);
    let other_genesis = t.write_genesis("other-chain", "other.json");
    let home = &t.nodes[0].home;
    // A store of node0 on another chain, and its backup.
    std::fs::rename(home.join("keystore"), t.file("keystore-main")).unwrap();
    {
        let master = MasterKey::load(&home.join("master.key")).unwrap();
        let mut store = KeyStore::open(
            &home.join("keystore"),
            &master,
            "other-chain",
            &t.nodes[0].id,
        )
        .unwrap();
        store.put(&record("eth", 1)).unwrap();
    }
    let backup = t.file("other.backup");
    let out = mpcd(&[
        "backup",
        "--home",
        s(home),
        "--genesis",
        s(&other_genesis),
        "--out",
        s(&backup),
    ]);
    assert!(out.ok, "{}", out.stderr);
    std::fs::remove_dir_all(home.join("keystore")).unwrap();
    assert_fails(
        &t.run(0, "restore", &["--no-chain-check", "--from", s(&backup)]),
        "chain \"other-chain\"",
    );
}

/// A real `mpcd start` on node0's home (no chain behind it: its store, p2p and operator
/// socket run; result txs find no RPC, which does not matter here). Killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node0(t: &Setup) -> Running {
    let home = &t.nodes[0].home;
    let genesis = t.genesis();
    let child = Command::new(env!("CARGO_BIN_EXE_mpcd"))
        .args(["start", "--home", s(home), "--genesis", s(&genesis)])
        .args(["--abci-listen", "127.0.0.1:20910"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/20911"])
        .args(["--status-listen", "127.0.0.1:20912"])
        .args(["--rpc", "http://127.0.0.1:1", "--heartbeat-secs", "0"])
        .env("SEQMPC_CGGMP_PRIMES_AT_START", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(t.file("mpcd.log")).unwrap())
        .spawn()
        .unwrap();
    let running = Running(child);
    let sock = home.join("admin.sock");
    let start = std::time::Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no operator socket: {}",
            std::fs::read_to_string(t.file("mpcd.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    running
}

#[test]
fn mpcd_rotate_master_key_and_backup__should_run_online_through_the_running_node() {
    let t = Setup::new();
    t.populate(0);
    let key_file = t.nodes[0].home.join("master.key");
    let before = std::fs::read(&key_file).unwrap();
    let node = start_node0(&t);
    let sock = t.nodes[0].home.join("admin.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the operator socket is the node user's only"
    );

    // The running node holds the store's lock: the node itself rotates.
    let out = t.run(0, "rotate-master-key", &[]);
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["rotated"].clone(), v["online"].clone()),
        (true.into(), true.into()),
        "{v}"
    );
    assert_ne!(std::fs::read(&key_file).unwrap(), before);

    // ... and writes a backup (under the new master key), refusing to overwrite one.
    let backup = t.file("online.backup");
    let out = t.run(0, "backup", &["--out", s(&backup)]);
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["online"].clone(), v["records"].clone()),
        (true.into(), 2.into()),
        "{v}"
    );
    assert_fails(
        &t.run(0, "backup", &["--out", s(&backup)]),
        "already exists",
    );
    // A bad request gets a clear answer, and the node keeps serving.
    let answer = {
        use std::io::{BufRead, Write};
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        c.write_all(b"{\"op\":\"format-disk\"}\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&c).read_line(&mut line).unwrap();
        line
    };
    assert!(
        answer.contains("\"ok\":false") && answer.contains("bad request"),
        "{answer}"
    );
    // A connection that sends nothing is answered and closed after 5 s, not held open.
    let idle = {
        use std::io::BufRead;
        let c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&c).read_line(&mut line).unwrap();
        line
    };
    assert!(idle.contains("no request line within 5 s"), "{idle}");
    drop(node);

    // Stopped: the store opens under the new master key with every record, and the online
    // backup restores.
    t.assert_populated(0);
    std::fs::remove_dir_all(t.nodes[0].home.join("keystore")).unwrap();
    let out = t.run(0, "restore", &["--no-chain-check", "--from", s(&backup)]);
    assert!(out.ok, "{}", out.stderr);
    t.assert_populated(0);
    // With no node running, the commands work offline as before (the socket file is stale).
    let out = t.run(0, "rotate-master-key", &[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stdout.contains("online"), "{}", out.stdout);
}

#[test]
fn mpcd_start__should_refuse_a_home_other_users_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = Setup::new();
    t.populate(0);
    let home = &t.nodes[0].home;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mpcd"))
        .args(["start", "--home", s(home), "--genesis", s(&t.genesis())])
        .args(["--abci-listen", "127.0.0.1:20920"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/20921"])
        .args(["--status-listen", "127.0.0.1:20922"])
        .args(["--rpc", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mode 755") && err.contains("chmod 700"),
        "{err}"
    );
}

#[test]
fn mpcd_start__should_listen_on_loopback_only_by_default() {
    // The status endpoint is unauthenticated and the ABCI port drives the app: by default
    // both bind to loopback (the RPC it reaches is local too).
    let out = Command::new(env!("CARGO_BIN_EXE_mpcd"))
        .args(["start", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for default in [
        "127.0.0.1:26660",
        "127.0.0.1:26658",
        "http://127.0.0.1:26657",
    ] {
        assert!(help.contains(&format!("[default: {default}]")), "{help}");
    }
    assert!(!help.contains("0.0.0.0"), "{help}");
}

#[test]
fn mpcd__should_take_its_master_key_from_a_command_and_keep_none_on_disk() {
    // `mpcd init --master-key-command`: checked at once, no master.key written; a command that
    // prints no key leaves no node key behind either.
    let scratch = tempfile::tempdir().unwrap();
    let secret = scratch.path().join("vault.hex");
    std::fs::write(&secret, format!("{}\n", "5a".repeat(32))).unwrap();
    let home = scratch.path().join("h");
    let cmd = format!("cat {}", secret.display());
    let out = mpcd(&[
        "init",
        "--home",
        s(&home),
        "--node-id",
        "node9",
        "--master-key-command",
        &cmd,
    ]);
    assert!(out.ok, "{}", out.stderr);
    assert!(!home.join("master.key").exists());
    assert!(home.join("master_key_command").exists());
    let bad_home = scratch.path().join("bad");
    let out = mpcd(&[
        "init",
        "--home",
        s(&bad_home),
        "--node-id",
        "node9",
        "--master-key-command",
        "echo not-a-key",
    ]);
    assert_fails(&out, "hex digits");
    assert!(!bad_home.join("node.key").exists());

    // A node whose key moved to a secret store: its store opens through the command only.
    let t = Setup::new();
    t.populate(0);
    let home = &t.nodes[0].home;
    let key = std::fs::read(home.join("master.key")).unwrap();
    let secret = t.file("node0-secret.hex");
    std::fs::write(&secret, hex::encode(&key)).unwrap();
    std::fs::remove_file(home.join("master.key")).unwrap();
    seqmpc_abci::daemon::master_source::MasterKeySource::init_command(
        home,
        &format!("cat {}", secret.display()),
    )
    .unwrap();
    let node = start_node0(&t);
    let backup = t.file("cmd.backup");
    let out = t.run(0, "backup", &["--out", s(&backup)]);
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["records"], 2, "{v}");
    assert!(
        v["needs_master_key"]
            .as_str()
            .unwrap()
            .contains("master_key_command"),
        "{v}"
    );
    // Online rotation is refused with what to do instead.
    assert_fails(
        &t.run(0, "rotate-master-key", &[]),
        "--new-master-key-command",
    );
    drop(node);
    // Offline: the command's key opens the store; another key does not, and says so.
    let out = t.run(0, "backup", &["--out", s(&t.file("cmd2.backup"))]);
    assert!(out.ok, "{}", out.stderr);
    std::fs::write(&secret, "77".repeat(32)).unwrap();
    assert_fails(
        &t.run(0, "backup", &["--out", s(&t.file("cmd3.backup"))]),
        "master key",
    );
    assert_fails(
        &t.run(0, "rotate-master-key", &[]),
        "--new-master-key-command",
    );
    // Offline, with the command of the secret's next version: the data key is replaced,
    // every value re-sealed, and the command file names the new command.
    std::fs::write(&secret, hex::encode(&key)).unwrap();
    let next = t.file("node0-next.hex");
    std::fs::write(&next, "6b".repeat(32)).unwrap();
    let next_cmd = format!("cat {}", next.display());
    let out = t.run(
        0,
        "rotate-master-key",
        &["--new-master-key-command", &next_cmd],
    );
    assert!(out.ok, "{}", out.stderr);
    let named = std::fs::read_to_string(home.join("master_key_command")).unwrap();
    assert_eq!(named.trim(), next_cmd);
    let out = t.run(0, "backup", &["--out", s(&t.file("cmd-next.backup"))]);
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["records"], 2, "{v}");
    // The old key opens nothing any more.
    std::fs::write(&next, hex::encode(&key)).unwrap();
    assert_fails(
        &t.run(0, "backup", &["--out", s(&t.file("cmd-old.backup"))]),
        "master key",
    );
    // A file-key node refuses the flag.
    assert_fails(
        &t.run(
            1,
            "rotate-master-key",
            &["--new-master-key-command", &next_cmd],
        ),
        "has the file",
    );
    // A failing command is a clear error (after the command's own stderr), not a hang or a
    // panic.
    std::fs::remove_file(&next).unwrap();
    let out = t.run(0, "backup", &["--out", s(&t.file("cmd4.backup"))]);
    assert!(
        !out.ok && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    let last = out.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("mpcd: ") && last.contains("--master-key-command: exited with"),
        "{last}"
    );
}
