//! End to end: a node admitted at runtime. A 4-node localnet, `localnet add-node` (a NodeJoin
//! tx signed by the localnet's registry account, node4's mpcd attached to the dev sequencer),
//! then a 3-of-5 frost-ed25519 keygen and a signature whose committee and signers include
//! node4; a key made before the join reshared onto node4; `localnet stop` stops node4, and a
//! restart runs it again. Ports: base 18200 (RPC 18257, nodes 18300..18342), apart from the other e2e tests.
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use seqmpc_e2e::{bin_dir, wait_for, Localnet};
use serde_json::Value;

fn verify(public_key: &str, message: &[u8], signature: &str) {
    seqmpc_e2e::verify::ed25519(public_key, message, signature).unwrap();
}

fn node(nodes: &Value, id: &str) -> Option<Value> {
    nodes.as_array()?.iter().find(|n| n["id"] == id).cloned()
}

#[test]
fn n4_add_node__should_admit_node4_and_keygen_and_sign_3_of_5_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Localnet::start(&dir, 4, 3, 100, 18200).unwrap();
    // A key of the genesis committee, moved onto node4 after the join.
    let old = net
        .mpcctl_json(&["keygen", "--key-id", "before", "--threshold", "3", "--wait"])
        .unwrap();
    assert_eq!(old["status"], "READY", "{old}");
    let old_pk = old["public_key"].as_str().unwrap().to_owned();

    // Admit node4.
    let out = Command::new(bin_dir().join("localnet"))
        .args(["add-node", "--dir"])
        .arg(&dir)
        .arg("--mpcd")
        .arg(bin_dir().join("mpcd"))
        .env("SEQMPC_CGGMP_PRIMES_AT_START", "false")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "add-node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "add-node printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(added["id"], "node4", "{added}");
    assert_eq!(added["p2p"], "/ip4/127.0.0.1/tcp/18341", "{added}");
    assert!(added["pid"].as_u64().unwrap() > 0);
    assert!(added["cmd"].as_array().unwrap().len() > 2);

    // localnet.json lists it, the chain lists it, and it becomes live (its heartbeats commit).
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("localnet.json")).unwrap()).unwrap();
    assert_eq!(manifest["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(manifest["nodes"][4], added);
    let joined = wait_for(Duration::from_secs(60), || {
        let nodes = net.mpcctl_json(&["nodes"]).ok()?;
        node(&nodes, "node4").filter(|n| n["live"] == true && n["last_seen"].is_u64())
    })
    .expect("node4 listed and live on the chain");
    assert_eq!(joined["p2p_addr"], "/ip4/127.0.0.1/tcp/18341");

    // A repeated join is refused with the conflict code.
    let again = net.mpcctl_json(&[
        "node-join",
        "--node-id",
        "node4",
        "--public-key",
        joined["public_key"].as_str().unwrap(),
        "--p2p-addr",
        "/ip4/127.0.0.1/tcp/18341",
    ]);
    let err = again.expect_err("a second join of node4 must fail");
    assert!(err.contains("code 8") && err.contains("already"), "{err}");

    // node4's status endpoint answers, and node4 is connected to every other node (each side
    // admitted the other's key: genesis nodes through Job::NodeJoined).
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let status = added["status"].as_str().unwrap();
    let st: Value = wait_for(Duration::from_secs(30), || {
        http.get(&format!("{status}/status"))
            .call()
            .ok()?
            .into_json::<Value>()
            .ok()
            .filter(|v| {
                v["connected_peers"]
                    .as_array()
                    .is_some_and(|a| a.len() == 4)
            })
    })
    .expect("node4 status endpoint with 4 connected peers");
    assert_eq!(st["node_id"], "node4", "{st}");

    // A 3-of-5 keygen whose committee includes node4, and signatures until node4 signs.
    let k = net
        .mpcctl_json(&[
            "keygen",
            "--key-id",
            "with-node4",
            "--scheme",
            "frost-ed25519",
            "--threshold",
            "3",
            "--parties",
            "node0,node1,node2,node3,node4",
            "--wait",
        ])
        .unwrap();
    assert_eq!(k["status"], "READY", "{k}");
    assert_eq!(k["parties"].as_array().unwrap().len(), 5, "{k}");
    let pk = k["public_key"].as_str().unwrap().to_owned();
    let mut node4_signed = false;
    for i in 0..12u8 {
        let msg = format!("add-node message {i}");
        let s = net
            .mpcctl_json(&[
                "sign",
                "--key-id",
                "with-node4",
                "--message",
                &hex::encode(&msg),
                "--wait",
            ])
            .unwrap();
        assert_eq!(s["status"], "DONE", "{s}");
        verify(&pk, msg.as_bytes(), s["signature"].as_str().unwrap());
        let full = net
            .query(&format!("/sign/{}", s["request_id"].as_str().unwrap()))
            .unwrap();
        if full["signers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "node4")
        {
            node4_signed = true;
            break;
        }
    }
    assert!(node4_signed, "node4 was never among the signers");

    // The key made before the join reshared onto node4 (node0 leaves), same public key.
    let k = net
        .mpcctl_json(&[
            "reshare",
            "--key-id",
            "before",
            "--parties",
            "node1,node2,node3,node4",
            "--threshold",
            "3",
            "--wait",
        ])
        .unwrap();
    assert_eq!(k["reshare"]["status"], "DONE", "{k}");
    assert_eq!(k["public_key"], old_pk.as_str(), "{k}");
    let msg = b"resharded onto node4";
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            "before",
            "--message",
            &hex::encode(msg),
            "--wait",
        ])
        .unwrap();
    assert_eq!(s["status"], "DONE", "{s}");
    verify(&old_pk, msg, s["signature"].as_str().unwrap());

    // `localnet stop` stops node4 too.
    let pid = added["pid"].as_u64().unwrap();
    let out = Command::new(bin_dir().join("localnet"))
        .args(["stop", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = wait_for(Duration::from_secs(20), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // Gone, or a zombie waiting for its (exited) parent to be reaped.
        stat.is_none_or(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "node4 (pid {pid}) still runs after localnet stop"
    );
    drop(net);

    // A restart runs node4 again (from added-nodes.json); it knows its id from the chain
    // state, and signs with the others.
    let net = Localnet::start(&dir, 4, 3, 100, 18200).unwrap();
    assert_eq!(
        net.info["nodes"].as_array().unwrap().len(),
        5,
        "{}",
        net.info
    );
    assert_eq!(net.info["nodes"][4]["id"], "node4");
    wait_for(Duration::from_secs(60), || {
        let nodes = net.mpcctl_json(&["nodes"]).ok()?;
        let n4 = node(&nodes, "node4")?;
        let st = net.node_get(4, "/status").ok()?;
        (n4["live"] == true && st["connected_peers"].as_array()?.len() == 4).then_some(())
    })
    .expect("node4 back, live and connected after the restart");
    let msg = b"after restart";
    let s = net
        .mpcctl_json(&[
            "sign",
            "--key-id",
            "with-node4",
            "--message",
            &hex::encode(msg),
            "--wait",
        ])
        .unwrap();
    assert_eq!(s["status"], "DONE", "{s}");
    verify(&pk, msg, s["signature"].as_str().unwrap());
    net.stop().unwrap();
}
