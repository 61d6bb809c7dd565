//! Real TCP on 127.0.0.1 between nodes spawned in-process.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use tokio::sync::mpsc::Receiver;
use zeroize::Zeroizing;

use super::*;

const MAX: usize = 64 * 1024;
const WAIT: Duration = Duration::from_secs(15);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn nid(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

/// A port the OS considers free right now (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct TestNode {
    node: NodeId,
    seed: [u8; 32],
    public_key: [u8; 32],
    addr: String,
}

impl TestNode {
    fn new(name: &str, key: u8) -> Self {
        let seed = [key; 32];
        let public_key = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        Self {
            node: nid(name),
            seed,
            public_key,
            addr: format!("/ip4/127.0.0.1/tcp/{}", free_port()),
        }
    }

    fn info(&self) -> PeerInfo {
        PeerInfo {
            node: self.node.clone(),
            public_key: self.public_key,
            addr: self.addr.clone(),
        }
    }

    fn config(&self, registry: &[&TestNode], max_message_bytes: usize) -> P2pConfig {
        P2pConfig {
            node: self.node.clone(),
            secret_key: Zeroizing::new(self.seed),
            listen: self.addr.clone(),
            peers: registry.iter().map(|n| n.info()).collect(),
            max_message_bytes,
        }
    }

    async fn start(&self, registry: &[&TestNode], max: usize) -> (P2pHandle, Receiver<Incoming>) {
        spawn(self.config(registry, max)).await.unwrap()
    }
}

async fn recv_within(rx: &mut Receiver<Incoming>, d: Duration) -> Option<Incoming> {
    tokio::time::timeout(d, rx.recv()).await.ok().flatten()
}

async fn wait_connected(h: &P2pHandle, to: &NodeId) {
    let t0 = Instant::now();
    while !h.connected().await.contains(to) {
        assert!(
            t0.elapsed() < WAIT,
            "{} never connected to {to}",
            h.local_node()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends, waiting out `QueueFull` (the sender's side of backpressure).
async fn send_patiently(h: &P2pHandle, to: &NodeId, bytes: Vec<u8>) {
    let t0 = Instant::now();
    loop {
        match h.send(to, bytes.clone()).await {
            Ok(()) => return,
            Err(P2pError::QueueFull(_)) if t0.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

fn numbered(i: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0xab; len];
    v[..4].copy_from_slice(&i.to_be_bytes());
    v
}

fn number_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_exchange_messages_between_three_nodes_with_authenticated_sender() {
    init_tracing();
    let nodes = [
        TestNode::new("node-a", 1),
        TestNode::new("node-b", 2),
        TestNode::new("node-c", 3),
    ];
    let registry: Vec<&TestNode> = nodes.iter().collect();
    let mut running = Vec::new();
    for n in &nodes {
        running.push(n.start(&registry, MAX).await);
    }
    for (from, (h, _)) in nodes.iter().zip(&running) {
        for to in &nodes {
            let text = format!("{}->{}", from.node, to.node);
            h.send(&to.node, text.into_bytes()).await.unwrap();
        }
    }
    for (to, (h, rx)) in nodes.iter().zip(&mut running) {
        let mut senders = BTreeSet::new();
        while senders.len() < nodes.len() {
            let m = recv_within(rx, WAIT).await.expect("message not delivered");
            assert_eq!(m.bytes, format!("{}->{}", m.from, to.node).into_bytes());
            // At least once: a duplicate is allowed (rare), a wrong sender is not.
            senders.insert(m.from.clone());
        }
        let all: BTreeSet<NodeId> = nodes.iter().map(|n| n.node.clone()).collect();
        assert_eq!(senders, all);
        let mut connected = h.connected().await;
        connected.sort();
        let others: Vec<NodeId> = nodes
            .iter()
            .filter(|n| n.node != to.node)
            .map(|n| n.node.clone())
            .collect();
        assert_eq!(connected, others);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_deliver_message_sent_before_peer_started() {
    init_tracing();
    let a = TestNode::new("node-a", 11);
    let b = TestNode::new("node-b", 12);
    let (ha, _rxa) = a.start(&[&a, &b], MAX).await;
    ha.send(&b.node, b"early".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let (_hb, mut rxb) = b.start(&[&a, &b], MAX).await;
    let m = recv_within(&mut rxb, WAIT)
        .await
        .expect("queued message not delivered");
    assert_eq!((m.from, m.bytes), (a.node.clone(), b"early".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_not_deliver_from_key_outside_registry() {
    init_tracing();
    let a = TestNode::new("node-a", 21);
    let b = TestNode::new("node-b", 22);
    // An impostor claiming node-a's id with its own key, listing itself that way.
    let mut x = TestNode::new("node-a", 29);
    x.addr = format!("/ip4/127.0.0.1/tcp/{}", free_port());

    let (hb, mut rxb) = b.start(&[&a, &b], MAX).await;
    let (hx, _rxx) = x.start(&[&x, &b], MAX).await;
    hx.send(&b.node, b"forged".to_vec()).await.unwrap();
    let (ha, _rxa) = a.start(&[&a, &b], MAX).await;
    ha.send(&b.node, b"genuine-1".to_vec()).await.unwrap();

    let m = recv_within(&mut rxb, WAIT)
        .await
        .expect("genuine message not delivered");
    assert_eq!((m.from, m.bytes), (a.node.clone(), b"genuine-1".to_vec()));
    // The impostor keeps redialing meanwhile; nothing of it gets through.
    assert!(recv_within(&mut rxb, Duration::from_secs(2))
        .await
        .is_none());
    ha.send(&b.node, b"genuine-2".to_vec()).await.unwrap();
    let m = recv_within(&mut rxb, WAIT)
        .await
        .expect("receiver stopped working");
    assert_eq!(m.bytes, b"genuine-2".to_vec());
    // Every refusal is counted; the genuine peer never was refused.
    assert!(
        hb.refused_connections() >= 1,
        "the impostor's refusal was not counted"
    );
    assert_eq!(ha.refused_connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_refuse_oversized_message_and_drop_oversized_frame() {
    init_tracing();
    let a = TestNode::new("node-a", 31);
    let b = TestNode::new("node-b", 32);
    let (ha, _rxa) = a.start(&[&a, &b], MAX).await;
    let (hb, mut rxb) = b.start(&[&a, &b], 1024).await;

    match hb.send(&a.node, vec![0; 1025]).await {
        Err(P2pError::TooLarge {
            len: 1025,
            max: 1024,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A's own limit allows 4 KiB; B's reader refuses the frame.
    ha.send(&b.node, vec![7; 4096]).await.unwrap();
    ha.send(&b.node, b"small".to_vec()).await.unwrap();
    let m = recv_within(&mut rxb, WAIT)
        .await
        .expect("small message not delivered");
    assert_eq!(m.bytes, b"small".to_vec());
    assert!(recv_within(&mut rxb, Duration::from_secs(2))
        .await
        .is_none());
    ha.send(&b.node, b"after".to_vec()).await.unwrap();
    let m = recv_within(&mut rxb, WAIT)
        .await
        .expect("receiver stopped working");
    assert_eq!(m.bytes, b"after".to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_deliver_burst_of_2000_messages() {
    init_tracing();
    const N: u32 = 2000;
    let a = TestNode::new("node-a", 41);
    let b = TestNode::new("node-b", 42);
    let (ha, _rxa) = a.start(&[&a, &b], MAX).await;
    let (_hb, mut rxb) = b.start(&[&a, &b], MAX).await;
    wait_connected(&ha, &b.node).await;

    let t0 = Instant::now();
    for i in 0..N {
        ha.send(&b.node, numbered(i, 300)).await.unwrap();
    }
    let mut seen = BTreeSet::new();
    let (mut dups, mut out_of_order, mut last) = (0, 0, None);
    while seen.len() < N as usize {
        let m = recv_within(&mut rxb, WAIT).await.expect("burst incomplete");
        assert_eq!(m.from, a.node);
        let i = number_of(&m.bytes);
        if last.is_some_and(|l| i < l) {
            out_of_order += 1;
        }
        last = Some(i);
        if !seen.insert(i) {
            dups += 1;
        }
    }
    let dt = t0.elapsed();
    println!(
        "p2p burst: {N} x 300 B A->B in {dt:?} = {:.0} msgs/s ({dups} duplicates, {out_of_order} out of order)",
        f64::from(N) / dt.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_apply_backpressure_without_loss_when_receiver_is_slow() {
    init_tracing();
    const N: u32 = 3 * INCOMING_CAPACITY as u32;
    let a = TestNode::new("node-a", 51);
    let b = TestNode::new("node-b", 52);
    let (ha, _rxa) = a.start(&[&a, &b], MAX).await;
    let (_hb, mut rxb) = b.start(&[&a, &b], MAX).await;
    wait_connected(&ha, &b.node).await;

    let sender = tokio::spawn(async move {
        let to = nid("node-b");
        for i in 0..N {
            send_patiently(&ha, &to, numbered(i, 200)).await;
        }
        ha
    });
    // Nobody reads for a while: the incoming channel fills, then senders wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen = BTreeSet::new();
    while seen.len() < N as usize {
        let m = recv_within(&mut rxb, WAIT)
            .await
            .expect("messages lost under backpressure");
        seen.insert(number_of(&m.bytes));
    }
    sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_reconnect_after_peer_restart() {
    init_tracing();
    let a = TestNode::new("node-a", 61);
    let b = TestNode::new("node-b", 62);
    let (ha, _rxa) = a.start(&[&a, &b], MAX).await;
    let (hb, mut rxb) = b.start(&[&a, &b], MAX).await;
    ha.send(&b.node, b"before".to_vec()).await.unwrap();
    assert_eq!(
        recv_within(&mut rxb, WAIT).await.unwrap().bytes,
        b"before".to_vec()
    );

    hb.shutdown();
    drop((hb, rxb));
    tokio::time::sleep(Duration::from_millis(300)).await;
    ha.send(&b.node, b"during".to_vec()).await.unwrap();

    let t0 = Instant::now();
    let (_hb, mut rxb) = loop {
        match spawn(b.config(&[&a, &b], MAX)).await {
            Ok(started) => break started,
            // The old listener may take a moment to go away.
            Err(P2pError::Listen { .. }) if t0.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart failed: {e}"),
        }
    };
    // "before" may come again: B may have stopped before its ack left.
    let m = loop {
        let m = recv_within(&mut rxb, WAIT)
            .await
            .expect("message not delivered after restart");
        if m.bytes != b"before" {
            break m;
        }
    };
    assert_eq!((m.from, m.bytes), (a.node.clone(), b"during".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_report_unknown_peer_and_full_queue() {
    init_tracing();
    let a = TestNode::new("node-a", 71);
    let b = TestNode::new("node-b", 72); // never started
    let (ha, mut rxa) = a.start(&[&a, &b], MAX).await;

    match ha.send(&nid("node-z"), vec![1]).await {
        Err(P2pError::UnknownPeer(n)) => assert_eq!(n, nid("node-z")),
        other => panic!("expected UnknownPeer, got {other:?}"),
    }
    for i in 0..PEER_QUEUE_CAPACITY as u32 {
        ha.send(&b.node, numbered(i, 8)).await.unwrap();
    }
    match ha.send(&b.node, vec![1]).await {
        Err(P2pError::QueueFull(n)) => assert_eq!(n, b.node),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // Self-sends have their own queue and still work.
    ha.send(&a.node, b"me".to_vec()).await.unwrap();
    let m = recv_within(&mut rxa, WAIT).await.unwrap();
    assert_eq!((m.from, m.bytes), (a.node.clone(), b"me".to_vec()));

    ha.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        ha.send(&a.node, vec![1]).await,
        Err(P2pError::Closed)
    ));
    assert!(recv_within(&mut rxa, WAIT).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_refuse_secret_key_not_matching_own_registry_entry() {
    let a = TestNode::new("node-a", 81);
    let mut cfg = a.config(&[&a], MAX);
    cfg.secret_key = Zeroizing::new([82; 32]);
    match spawn(cfg).await {
        Err(P2pError::InvalidConfig {
            field: "secret_key",
            ..
        }) => {}
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_expose_actual_listen_addr_for_port_zero() {
    let a = TestNode::new("node-a", 91);
    let mut cfg = a.config(&[&a], MAX);
    cfg.listen = "/ip4/127.0.0.1/tcp/0".into();
    let (h, _rx) = spawn(cfg).await.unwrap();
    assert!(
        h.listen_addr().starts_with("/ip4/127.0.0.1/tcp/"),
        "{}",
        h.listen_addr()
    );
    assert!(!h.listen_addr().ends_with("/tcp/0"));
}

/// Sustained all-to-all traffic between four nodes; run with
/// `cargo test -p seqmpc-module --release p2p__should_sustain -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn p2p__should_sustain_all_to_all_traffic_between_four_nodes() {
    init_tracing();
    const PER_PAIR: u32 = 5000;
    let nodes = [
        TestNode::new("node-a", 101),
        TestNode::new("node-b", 102),
        TestNode::new("node-c", 103),
        TestNode::new("node-d", 104),
    ];
    let registry: Vec<&TestNode> = nodes.iter().collect();
    let mut handles = Vec::new();
    let mut receivers = Vec::new();
    for n in &nodes {
        let (h, rx) = n.start(&registry, MAX).await;
        handles.push(h);
        receivers.push(rx);
    }
    for h in &handles {
        for n in &nodes {
            if &n.node != h.local_node() {
                wait_connected(h, &n.node).await;
            }
        }
    }
    let t0 = Instant::now();
    let expect = PER_PAIR as usize * (nodes.len() - 1);
    let mut tasks = Vec::new();
    for mut rx in receivers {
        tasks.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while seen.len() < expect {
                let m = recv_within(&mut rx, WAIT).await.expect("traffic stalled");
                seen.insert((m.from, number_of(&m.bytes)));
            }
        }));
    }
    for h in handles.clone() {
        let peers: Vec<NodeId> = nodes
            .iter()
            .map(|n| n.node.clone())
            .filter(|n| n != h.local_node())
            .collect();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_PAIR {
                for p in &peers {
                    send_patiently(&h, p, numbered(i, 300)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let dt = t0.elapsed();
    let total = expect * nodes.len();
    println!(
        "p2p all-to-all: 4 nodes, {total} x 300 B in {dt:?} = {:.0} msgs/s delivered",
        total as f64 / dt.as_secs_f64()
    );
}

/// One message at a time A -> B -> A; run with
/// `cargo test -p seqmpc-module --release p2p__should_echo -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn p2p__should_echo_with_low_latency() {
    init_tracing();
    const ROUNDS: u32 = 500;
    let a = TestNode::new("node-a", 111);
    let b = TestNode::new("node-b", 112);
    let (ha, mut rxa) = a.start(&[&a, &b], MAX).await;
    let (hb, mut rxb) = b.start(&[&a, &b], MAX).await;
    wait_connected(&ha, &b.node).await;
    wait_connected(&hb, &a.node).await;
    let echo = tokio::spawn(async move {
        while let Some(m) = rxb.recv().await {
            hb.send(&m.from, m.bytes).await.unwrap();
        }
    });
    let mut rtts = Vec::new();
    for i in 0..ROUNDS {
        let t0 = Instant::now();
        ha.send(&b.node, numbered(i, 300)).await.unwrap();
        let m = recv_within(&mut rxa, WAIT).await.expect("echo lost");
        assert_eq!(number_of(&m.bytes), i);
        rtts.push(t0.elapsed());
    }
    rtts.sort();
    println!(
        "p2p echo A->B->A, 300 B: median {:?}, p90 {:?}, max {:?}",
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 9 / 10],
        rtts[rtts.len() - 1]
    );
    echo.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_accept_a_node_only_once_it_is_added_at_runtime() {
    init_tracing();
    let a = TestNode::new("node-a", 91);
    let b = TestNode::new("node-b", 92);
    let c = TestNode::new("node-c", 93);
    let (ha, mut rxa) = a.start(&[&a, &b], MAX).await;
    let (_hb, _rxb) = b.start(&[&a, &b], MAX).await;
    // c knows a and b (it learnt the registry from the chain); a does not know c yet.
    let (hc, mut rxc) = c.start(&[&a, &b, &c], MAX).await;
    hc.send(&a.node, b"too early".to_vec()).await.unwrap();
    assert!(matches!(
        ha.send(&c.node, b"x".to_vec()).await,
        Err(P2pError::UnknownPeer(_))
    ));
    assert!(recv_within(&mut rxa, Duration::from_secs(1))
        .await
        .is_none());

    // A conflicting entry is refused; the real one is admitted, twice without harm.
    let mut forged = c.info();
    forged.node = a.node.clone();
    assert!(matches!(
        ha.add_peer(forged).await,
        Err(P2pError::InvalidPeer { .. })
    ));
    let mut rekeyed = b.info();
    rekeyed.public_key = c.public_key;
    assert!(matches!(
        ha.add_peer(rekeyed).await,
        Err(P2pError::InvalidPeer { .. })
    ));
    ha.add_peer(c.info()).await.unwrap();
    ha.add_peer(c.info()).await.unwrap();
    ha.add_peer(a.info()).await.unwrap();

    wait_connected(&ha, &c.node).await;
    let m = recv_within(&mut rxa, WAIT)
        .await
        .expect("c's message after admission");
    assert_eq!(m.from, c.node);
    ha.send(&c.node, b"welcome".to_vec()).await.unwrap();
    let m = recv_within(&mut rxc, WAIT).await.expect("a's message to c");
    assert_eq!((m.from, m.bytes), (a.node.clone(), b"welcome".to_vec()));
}

/// A cut switch (`P2pHandle::cut_by`; the test build's `partition-file` is one).
#[derive(Default)]
struct Switch(std::sync::atomic::AtomicBool);

impl Switch {
    /// Sets it; whether it changed.
    fn set(&self, on: bool) -> bool {
        self.0.swap(on, std::sync::atomic::Ordering::SeqCst) != on
    }
}

impl LinkCut for Switch {
    fn is_cut(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A cut at the p2p layer: while node-b is cut off nothing passes between it and node-a, in
/// either direction, though node-b still hears itself; once healed, new messages flow both
/// ways again.
#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_drop_every_message_to_and_from_a_partitioned_node_until_healed() {
    init_tracing();
    let (a, b) = (TestNode::new("node-a", 31), TestNode::new("node-b", 32));
    let (ha, mut ra) = a.start(&[&a, &b], MAX).await;
    let (hb, mut rb) = b.start(&[&a, &b], MAX).await;
    wait_connected(&ha, &b.node).await;
    wait_connected(&hb, &a.node).await;
    let cut = Arc::new(Switch::default());
    hb.cut_by(cut.clone()).await.unwrap();
    assert!(cut.set(true));
    for i in 0..20 {
        hb.send(&a.node, numbered(i, 16)).await.unwrap();
        ha.send(&b.node, numbered(i, 16)).await.unwrap();
    }
    hb.send(&b.node, b"self".to_vec()).await.unwrap();
    let own = recv_within(&mut rb, WAIT)
        .await
        .expect("a self-send passes");
    assert_eq!(own.bytes, b"self");
    assert!(recv_within(&mut ra, Duration::from_secs(2)).await.is_none());
    assert!(recv_within(&mut rb, Duration::from_millis(100))
        .await
        .is_none());

    assert!(cut.set(false));
    hb.send(&a.node, numbered(100, 16)).await.unwrap();
    let m = recv_within(&mut ra, WAIT).await.expect("healed: b -> a");
    assert_eq!((m.from, number_of(&m.bytes)), (b.node.clone(), 100));
    ha.send(&b.node, numbered(101, 16)).await.unwrap();
    let m = recv_within(&mut rb, WAIT).await.expect("healed: a -> b");
    assert_eq!((m.from, number_of(&m.bytes)), (a.node.clone(), 101));
}

/// A committed `NodeRotateKey` and `NodeRemove` at the p2p layer: a rotated node is accepted
/// only under its new key, a removed one not at all (nor can it be sent to), and a removed node
/// admitted again is accepted under its new key.
#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_accept_a_rotated_node_only_under_its_new_key_and_drop_a_removed_one() {
    init_tracing();
    let a = TestNode::new("node-a", 101);
    let b = TestNode::new("node-b", 102);
    let c = TestNode::new("node-c", 103);
    let (ha, mut rxa) = a.start(&[&a, &b, &c], MAX).await;
    let (hb, _rxb) = b.start(&[&a, &b, &c], MAX).await;
    let (hc, _rxc) = c.start(&[&a, &b, &c], MAX).await;
    wait_connected(&ha, &b.node).await;
    wait_connected(&ha, &c.node).await;

    // node-b's key is rotated: the old key (still running) is cut off and refused.
    let b2 = TestNode::new("node-b", 104);
    ha.set_peer_key(&b.node, b2.public_key).await.unwrap();
    ha.set_peer_key(&b.node, b2.public_key).await.unwrap(); // a replayed block
    assert!(matches!(
        ha.set_peer_key(&b.node, c.public_key).await,
        Err(P2pError::InvalidPeer { .. })
    ));
    hb.send(&a.node, b"old key".to_vec()).await.unwrap();
    assert!(
        recv_within(&mut rxa, Duration::from_secs(2))
            .await
            .is_none(),
        "a message under a rotated-away key was delivered"
    );
    // The node runs again under its new key: accepted, as node-b.
    let (hb2, _rxb2) = b2.start(&[&a, &b2, &c], MAX).await;
    hb2.send(&a.node, b"new key".to_vec()).await.unwrap();
    let m = recv_within(&mut rxa, WAIT)
        .await
        .expect("node-b's message under its new key");
    assert_eq!((m.from, m.bytes), (b.node.clone(), b"new key".to_vec()));
    wait_connected(&ha, &b.node).await;

    // node-c is removed: it cannot be sent to, and its messages are refused.
    assert!(ha.remove_peer(&c.node).await.unwrap());
    assert!(!ha.remove_peer(&c.node).await.unwrap());
    assert!(matches!(
        ha.send(&c.node, b"x".to_vec()).await,
        Err(P2pError::UnknownPeer(_))
    ));
    hc.send(&a.node, b"removed".to_vec()).await.unwrap();
    assert!(
        recv_within(&mut rxa, Duration::from_secs(2))
            .await
            .is_none(),
        "a removed node's message was delivered"
    );
    assert!(!ha.connected().await.contains(&c.node));

    // Admitted again, under a new key: accepted, and reachable.
    let c2 = TestNode::new("node-c", 105);
    ha.add_peer(c2.info()).await.unwrap();
    let (hc2, mut rxc2) = c2.start(&[&a, &b2, &c2], MAX).await;
    hc2.send(&a.node, b"back".to_vec()).await.unwrap();
    let m = recv_within(&mut rxa, WAIT)
        .await
        .expect("node-c's message after its new admission");
    assert_eq!((m.from, m.bytes), (c.node.clone(), b"back".to_vec()));
    ha.send(&c.node, b"welcome back".to_vec()).await.unwrap();
    let m = recv_within(&mut rxc2, WAIT)
        .await
        .expect("a's message to c");
    assert_eq!(m.bytes, b"welcome back".to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p__should_hand_on_a_signature_that_proves_only_what_was_sent_signed() {
    init_tracing();
    let a = TestNode::new("node-a", 41);
    let b = TestNode::new("node-b", 42);
    let (ha, _rxa) = a.start(&[&a, &b], MAX).await;
    let (_hb, mut rxb) = b.start(&[&a, &b], MAX).await;
    ha.send_signed(&b.node, b"quotable".to_vec()).await.unwrap();
    ha.send(&b.node, b"plain".to_vec()).await.unwrap();
    let signed = recv_within(&mut rxb, WAIT).await.expect("signed message");
    let plain = recv_within(&mut rxb, WAIT).await.expect("plain message");
    assert_eq!(signed.bytes, b"quotable".to_vec());
    assert_eq!(signed.sender_key.to_bytes(), a.public_key);
    let proves = |m: &Incoming, to: &NodeId, bytes: &[u8]| {
        let digest = crate::proto::wire::p2p_signing_digest(m.from.as_str(), to.as_str(), bytes);
        m.sender_key
            .verify_strict(&digest, &ed25519_dalek::Signature::from_bytes(&m.signature))
            .is_ok()
    };
    assert!(
        proves(&signed, &b.node, b"quotable"),
        "a signed message proves its sender"
    );
    // Not for another receiver, not for other bytes, and nothing for an unsigned message.
    assert!(!proves(&signed, &a.node, b"quotable"));
    assert!(!proves(&signed, &b.node, b"quotable!"));
    assert_eq!(plain.bytes, b"plain".to_vec());
    assert_eq!(plain.signature, [0; SIGNATURE_LEN]);
    assert!(!proves(&plain, &b.node, b"plain"));
}
