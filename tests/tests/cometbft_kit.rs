//! End to end: `localnet cometbft-init` writes a kit that CometBFT v0.38 can run (issue 16,
//! item 4). The generated files parse with tendermint-rs's own config, key and genesis types,
//! and agree with each other: every peer id is the node key of that peer, every validator is
//! the key in its `priv_validator_key.json`, `proxy_app` is the mpcd's ABCI socket, and the
//! CometBFT genesis carries the app's genesis byte for byte. Then `start.sh` runs for real,
//! with a `cometbft` on PATH that only records how it was called (no CometBFT binary can be
//! installed on CI): every mpcd starts from the kit, and validator0's mpcd takes CometBFT's
//! InitChain (the genesis.json `app_state` bytes, the chain id, the validator set) over its
//! ABCI socket, as CometBFT would send it, and answers Info with the new chain.
//! Ports: base 22700 (validator i: 22700+10i ..+4), apart from the other e2e tests.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use prost::Message as _;
use seqmpc_e2e::{bin_dir, wait_for};
use serde_json::Value;
use tendermint_config::{NodeKey, PrivValidatorKey, TendermintConfig};
use tendermint_proto::v0_38::abci::{
    request, response, Request, RequestInfo, RequestInitChain, Response,
};

const BASE_PORT: u16 = 22700;

fn abci(s: &mut UnixStream, value: request::Value) -> response::Value {
    let req = Request { value: Some(value) };
    s.write_all(&req.encode_length_delimited_to_vec()).unwrap();
    let mut len = 0usize;
    for i in 0..10 {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).unwrap();
    Response::decode(buf.as_slice()).unwrap().value.unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Stops `start.sh` (its trap stops the mpcds) when dropped.
struct Script(std::process::Child);
impl Script {
    /// Runs `script` with `path` as PATH, in a process group of its own.
    fn start(script: &Path, path: &str, stderr: Stdio) -> Script {
        let child = Command::new("sh")
            .arg(script)
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap();
        Script(child)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // The script's process group: the script, its mpcds and the recording cometbfts.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[test]
fn cometbft_kit__should_write_files_cometbft_parses_and_start_mpcds_that_take_its_init_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kit");
    let out = Command::new(bin_dir().join("localnet"))
        .args(["cometbft-init", "--validators", "4", "--base-port"])
        .arg(BASE_PORT.to_string())
        .arg("--dir")
        .arg(&dir)
        .arg("--mpcd")
        .arg(bin_dir().join("mpcd"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kit: Value = serde_json::from_slice(&out.stdout).unwrap();
    let validators = kit["validators"].as_array().unwrap();
    assert_eq!(validators.len(), 4);

    // A second init into the same directory is refused, and leaves it alone.
    let again = Command::new(bin_dir().join("localnet"))
        .args(["cometbft-init", "--dir"])
        .arg(&dir)
        .arg("--mpcd")
        .arg(bin_dir().join("mpcd"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let app_genesis = std::fs::read(kit["app_genesis"].as_str().unwrap()).unwrap();
    let homes: Vec<PathBuf> = validators
        .iter()
        .map(|v| PathBuf::from(v["cometbft_home"].as_str().unwrap()))
        .collect();
    let node_ids: Vec<String> = homes
        .iter()
        .map(|h| {
            let k = h.join("config/node_key.json");
            assert_eq!(mode(&k), 0o600);
            NodeKey::load_json_file(&k).unwrap().node_id().to_string()
        })
        .collect();
    let mut genesis_validators = None;
    for (i, (v, home)) in validators.iter().zip(&homes).enumerate() {
        let cfg = TendermintConfig::load_toml_file(&home.join("config/config.toml")).unwrap();
        let mpcd_home = PathBuf::from(v["mpcd_home"].as_str().unwrap());
        assert_eq!(
            cfg.proxy_app.to_string(),
            format!("unix://{}", mpcd_home.join("abci.sock").display())
        );
        assert_eq!(
            cfg.rpc.laddr.to_string(),
            format!("tcp://127.0.0.1:{}", BASE_PORT as usize + 10 * i + 1)
        );
        // Every other validator is a persistent peer, by the id of its node key.
        let mut peers: Vec<String> = cfg
            .p2p
            .persistent_peers
            .iter()
            .map(|p| p.to_string())
            .collect();
        peers.sort();
        let mut want: Vec<String> = (0..4)
            .filter(|j| *j != i)
            .map(|j| {
                format!(
                    "tcp://{}@127.0.0.1:{}",
                    node_ids[j],
                    BASE_PORT as usize + 10 * j
                )
            })
            .collect();
        want.sort();
        assert_eq!(peers, want);
        assert_eq!(v["cometbft_node_id"], node_ids[i].as_str());

        let pv_file = home.join("config/priv_validator_key.json");
        assert_eq!(mode(&pv_file), 0o600);
        let pv = PrivValidatorKey::load_json_file(&pv_file).unwrap();
        assert_eq!(
            pv.address.to_string(),
            v["validator_address"].as_str().unwrap()
        );

        let genesis = cfg.load_genesis_file(home).unwrap();
        assert_eq!(genesis.chain_id.as_str(), kit["chain_id"].as_str().unwrap());
        assert_eq!(genesis.validators.len(), 4);
        let me = genesis
            .validators
            .iter()
            .find(|g| g.address == pv.address)
            .expect("the validator's own key is in the genesis");
        assert_eq!((me.pub_key, me.power.value()), (pv.pub_key, 10));
        // CometBFT hands InitChain the raw bytes of `app_state`: they must be mpcd's genesis.
        let raw: tendermint::Genesis<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&std::fs::read(home.join("config/genesis.json")).unwrap())
                .unwrap();
        assert_eq!(raw.app_state.get().as_bytes(), app_genesis.as_slice());
        genesis_validators.get_or_insert(genesis.validators.clone());
        assert_eq!(genesis_validators.as_ref(), Some(&genesis.validators));
    }

    // start.sh without cometbft: a clear refusal, nothing started.
    let script = PathBuf::from(kit["start_script"].as_str().unwrap());
    let refused = Command::new("sh")
        .arg(&script)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no cometbft binary"));

    // start.sh with a `cometbft` that records its arguments and waits.
    let fake_bin = tmp.path().join("bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    let calls = tmp.path().join("cometbft-calls");
    let fake = fake_bin.join("cometbft");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec sleep 600\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap());
    let running = Script::start(&script, &path, Stdio::null());
    let started = wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&calls).ok()?;
        (text.lines().count() == 4).then_some(text)
    })
    .expect("start.sh started a cometbft per validator once its mpcd's socket was up");
    for home in &homes {
        assert!(
            started.contains(&format!("start --home {}", home.display())),
            "{started}"
        );
    }
    for (i, v) in validators.iter().enumerate() {
        let status = format!(
            "http://127.0.0.1:{}/status",
            BASE_PORT as usize + 10 * i + 3
        );
        let up = wait_for(Duration::from_secs(30), || ureq::get(&status).call().ok());
        assert!(up.is_some(), "{} status endpoint", v["node_id"]);
        let sock = PathBuf::from(v["mpcd_home"].as_str().unwrap()).join("abci.sock");
        assert_eq!(mode(&sock), 0o600);
    }

    // validator0's mpcd takes the InitChain CometBFT builds from this genesis.json.
    let g0: tendermint::Genesis<Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&std::fs::read(homes[0].join("config/genesis.json")).unwrap())
            .unwrap();
    let sock0 = PathBuf::from(validators[0]["mpcd_home"].as_str().unwrap()).join("abci.sock");
    let mut s = UnixStream::connect(&sock0).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let info = abci(&mut s, request::Value::Info(RequestInfo::default()));
    assert!(
        matches!(&info, response::Value::Info(i) if i.last_block_height == 0),
        "{info:?}"
    );
    let init = RequestInitChain {
        time: Some(g0.genesis_time.into()),
        chain_id: g0.chain_id.to_string(),
        consensus_params: Some(g0.consensus_params.clone().into()),
        validators: g0
            .validators
            .iter()
            .map(|v| tendermint_proto::v0_38::abci::ValidatorUpdate {
                pub_key: Some(v.pub_key.into()),
                power: v.power.into(),
            })
            .collect(),
        app_state_bytes: g0.app_state.get().as_bytes().to_vec().into(),
        initial_height: g0.initial_height,
    };
    let r = abci(&mut s, request::Value::InitChain(init));
    assert!(
        matches!(&r, response::Value::InitChain(i) if i.app_hash.len() == 32),
        "{r:?}"
    );
    drop(s);
    drop(running);

    // Started again with node0's status port taken: start.sh removes the sockets the first run
    // left (else CometBFT would start against a socket nobody serves), sees node0's mpcd exit,
    // and stops with a reason instead of waiting for its socket forever.
    // (The first run's mpcds stop on their own time after SIGTERM: bind once node0's is gone.)
    let taken = wait_for(Duration::from_secs(30), || {
        std::net::TcpListener::bind(("127.0.0.1", BASE_PORT + 3)).ok()
    })
    .expect("the first run's node0 let go of its status port");
    let mut again = Script::start(&script, &path, Stdio::piped());
    let code = wait_for(Duration::from_secs(60), || again.0.try_wait().ok()?)
        .expect("start.sh gave up once node0's mpcd exited");
    let mut stderr = String::new();
    again
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(stderr.contains("mpcd of node0 exited"), "{stderr}");
    drop(taken);
}
