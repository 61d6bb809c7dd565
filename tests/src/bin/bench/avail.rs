//! Availability under what production brings, on a network of its own (Ed25519 keys, 4 nodes,
//! 3-of-4, 100 ms blocks), every latency end to end (request submitted → its outcome on chain,
//! as a client subscribed to `/websocket` sees it):
//! - a burst of keygens submitted at once, and one signature requested in its middle;
//! - a sustained signing load at a fixed rate, with the RSS of every process and the disk the
//!   network uses sampled as it runs (finished sign requests leave the state after a short
//!   retention here, so that the run goes well past it);
//! - one node killed, and requests sent during the next 30 s.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use seqmpc_e2e::{wait_for, Localnet, Submitter};
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::{KeyId, RequestId, Scheme};

use crate::outcomes::Outcomes;
use crate::{pct, rpc_url};

/// What the availability phases do.
pub struct Options {
    /// Keygens in the burst.
    pub burst: usize,
    /// Seconds of sustained signing (0: none).
    pub sustained_secs: u64,
    /// Signature requests per second during the sustained run.
    pub rate: u64,
}

/// Genesis `sign_retention_blocks` of this network: a minute at 100 ms blocks.
const RETENTION_BLOCKS: u64 = 600;
/// Blocks every node keeps (`localnet start --retain-blocks`): the sequencer prunes its block
/// log below them, in segments of [`SEGMENT_BLOCKS`].
const RETAIN_BLOCKS: u64 = 1200;
/// Blocks per segment of the sequencer's block log.
const SEGMENT_BLOCKS: u64 = 600;
/// Keys the signing phases use.
const SIGN_KEYS: usize = 5;

/// Runs every phase on a new network in `dir`, RPC at port 18057.
pub fn run(dir: &Path, opts: &Options) -> anyhow::Result<()> {
    let retention = RETENTION_BLOCKS.to_string();
    let (retain, segment) = (RETAIN_BLOCKS.to_string(), SEGMENT_BLOCKS.to_string());
    let net = Localnet::start_with(
        dir,
        4,
        3,
        100,
        18000,
        &[
            "--sign-retention-blocks".as_ref(),
            retention.as_ref(),
            "--retain-blocks".as_ref(),
            retain.as_ref(),
            "--block-log-segment-blocks".as_ref(),
            segment.as_ref(),
        ],
    )?;
    let mut sub = Submitter::new(&net, net.client_key()?)?;
    let out = Outcomes::watch(rpc_url(&net))?;
    println!(
        "availability: a new network (4 mpcd + dev sequencer, block 100 ms, 3-of-4, finished sign requests pruned after {RETENTION_BLOCKS} blocks, the block log below the last {RETAIN_BLOCKS} in segments of {SEGMENT_BLOCKS}); latencies are end to end"
    );
    for i in 0..SIGN_KEYS {
        let id = format!("s{i}");
        sub.submit(keygen(&id)?)?;
        let key = format!("key:{id}");
        let ok = wait_for(Duration::from_secs(60), || out.get(&key))
            .with_context(|| format!("keygen {id} did not finish"))?
            .ok;
        anyhow::ensure!(ok, "keygen {id} ended ERROR");
    }
    burst(&out, &mut sub, opts.burst)?;
    if opts.sustained_secs > 0 {
        sustained(&net, &out, &mut sub, opts)?;
    }
    killed(&net, &out, &mut sub)?;
    drop(out);
    net.stop()
}

fn keygen(id: &str) -> anyhow::Result<TxMsg> {
    Ok(TxMsg::KeyGen {
        key_id: KeyId::new(id)?,
        scheme: Scheme::FrostEd25519,
        threshold: 3,
        parties: vec![],
    })
}

/// A sign request of key `s<n % SIGN_KEYS>`; its outcome id (`sign:<request id>`).
fn sign(n: usize, request_id: &str) -> anyhow::Result<(TxMsg, String)> {
    Ok((
        TxMsg::KeySign {
            key_id: KeyId::new(format!("s{}", n % SIGN_KEYS))?,
            request_id: RequestId::new(request_id)?,
            message: request_id.as_bytes().to_vec(),
            prehashed: false,
        },
        format!("sign:{request_id}"),
    ))
}

/// `n` keygens submitted as fast as one client can, with one sign request after the first
/// half; every keygen must end READY, and the signature should not wait for the burst.
fn burst(out: &Outcomes, sub: &mut Submitter, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut sent = Vec::with_capacity(n);
    let mut signed = None;
    for i in 0..n {
        if i == n / 2 {
            let (msg, id) = sign(0, "burst-sign")?;
            let t0 = Instant::now();
            sub.submit(msg)?;
            signed = Some((id, t0));
        }
        let t0 = Instant::now();
        sub.submit(keygen(&format!("b{i}"))?)?;
        sent.push((format!("key:b{i}"), t0));
    }
    let submitted = start.elapsed();
    let all = wait_for(Duration::from_secs(120), || {
        (out.count(sent.iter().map(|(id, _)| id.as_str())) == n).then_some(())
    });
    let (mut lat, failed, missing) = out.latencies(&sent);
    let last = sent
        .iter()
        .filter_map(|(id, _)| out.get(id))
        .map(|o| o.at.duration_since(start))
        .max()
        .unwrap_or_default();
    println!(
        "  burst: {n} keygens submitted in {:.1} s: {} READY, {failed} ERROR, {missing} without outcome{}; the last ended {:.1} s after the first submission; end to end p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        submitted.as_secs_f64(),
        lat.len(),
        if all.is_none() { " after 120 s" } else { "" },
        last.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
    );
    if let Some((id, t0)) = signed {
        let o = wait_for(Duration::from_secs(60), || out.get(&id));
        match o {
            Some(o) => println!(
                "  a signature requested in the middle of the burst: {} after {:.0} ms end to end (target: DONE within 2 s)",
                if o.ok { "DONE" } else { "ERROR" },
                o.at.duration_since(t0).as_secs_f64() * 1000.0
            ),
            None => println!("  a signature requested in the middle of the burst: no outcome after 60 s"),
        }
    }
    Ok(())
}

/// Resident memory (KiB) of `pid`, from /proc.
fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes of every file under `path`.
fn disk_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One look at the network during the sustained run.
struct Sample {
    /// Signatures with an outcome on chain so far.
    done: usize,
    /// RSS (KiB) of the sequencer and each node.
    rss: Vec<u64>,
    /// Bytes on disk: the sequencer's directory, and the nodes' together.
    disk: (u64, u64),
}

fn sample(net: &Localnet, done: usize) -> Sample {
    let mut rss = vec![rss_kib(net.info["pid"].as_u64().unwrap_or(0))];
    let nodes = net.info["nodes"].as_array().cloned().unwrap_or_default();
    rss.extend(
        nodes
            .iter()
            .map(|n| rss_kib(n["pid"].as_u64().unwrap_or(0))),
    );
    let nodes_disk = (0..nodes.len())
        .map(|i| disk_bytes(&net.dir.join(format!("node{i}"))))
        .sum();
    Sample {
        done,
        rss,
        disk: (disk_bytes(&net.dir.join("sequencer")), nodes_disk),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Sign requests at `opts.rate` per second for `opts.sustained_secs`, sent on a fixed schedule
/// (open loop: a slow network does not slow the client down); a line per window with that
/// window's end-to-end latencies, RSS and disk; at the end the growth per 1000 signatures
/// once past the retention.
fn sustained(
    net: &Localnet,
    out: &Outcomes,
    sub: &mut Submitter,
    opts: &Options,
) -> anyhow::Result<()> {
    let total = (opts.rate * opts.sustained_secs) as usize;
    let window = Duration::from_secs((opts.sustained_secs / 10).clamp(5, 60));
    println!(
        "  sustained: {} sig/s for {} s ({total} requests), a line every {} s (RSS: sequencer, node0..node3)",
        opts.rate,
        opts.sustained_secs,
        window.as_secs()
    );
    let start = Instant::now();
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(total);
    let mut samples = vec![(Duration::ZERO, sample(net, 0))];
    let mut window_from = 0;
    let mut next_sample = start + window;
    let mut behind = Duration::ZERO;
    let report = |sent: &[(String, Instant)], from: usize, samples: &mut Vec<_>| {
        let done = out.count(sent.iter().map(|(id, _)| id.as_str()));
        let s = sample(net, done);
        let (mut lat, failed, missing) = out.latencies(sent.get(from..).unwrap_or_default());
        println!(
            "    {:4.0} s: {done:7} signed  window p50 {:6.0} ms  p99 {:6.0} ms{}  RSS MiB {}  disk MiB sequencer {:.1} nodes {:.1}",
            start.elapsed().as_secs_f64(),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            if failed + missing > 0 {
                format!(" ({failed} ERROR, {missing} pending)")
            } else {
                String::new()
            },
            s.rss
                .iter()
                .map(|k| format!("{:.0}", mib(*k)))
                .collect::<Vec<_>>()
                .join("/"),
            s.disk.0 as f64 / 1048576.0,
            s.disk.1 as f64 / 1048576.0,
        );
        samples.push((start.elapsed(), s));
    };
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / opts.rate as f64);
        let now = Instant::now();
        match due.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            None => behind = behind.max(now - due),
        }
        let (msg, id) = sign(i, &format!("sus-{i}"))?;
        let t0 = Instant::now();
        sub.submit(msg)?;
        sent.push((id, t0));
        if Instant::now() >= next_sample {
            report(&sent, window_from, &mut samples);
            window_from = sent.len();
            next_sample += window;
        }
    }
    wait_for(Duration::from_secs(60), || {
        (out.count(sent.iter().map(|(id, _)| id.as_str())) == total).then_some(())
    });
    report(&sent, window_from, &mut samples);
    let (mut lat, failed, missing) = out.latencies(&sent);
    println!(
        "    all: {} DONE, {failed} ERROR, {missing} without outcome; end to end p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms; the client fell at most {:.0} ms behind its schedule",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        behind.as_secs_f64() * 1000.0
    );
    // Growth over the second half of the run, and at least a window past the retention (the
    // sequencer's in-memory indexes fill up to their bounds first: 100 000 txs).
    let past = (Duration::from_millis(RETENTION_BLOCKS * 100) + window)
        .max(Duration::from_secs(opts.sustained_secs / 2));
    let from = samples.iter().find(|(t, _)| *t >= past);
    if let (Some((t0, a)), Some((t1, b))) = (from, samples.last()) {
        let k = (b.done.saturating_sub(a.done) as f64 / 1000.0).max(f64::MIN_POSITIVE);
        let per = |x: u64, y: u64| (y as f64 - x as f64) / k;
        let rss = |s: &Sample| s.rss.iter().sum::<u64>();
        println!(
            "    from {:.0} s to {:.0} s ({} signatures, past the retention): RSS of all processes {:+.1} KiB per 1000 signatures ({:.0} -> {:.0} MiB); disk per 1000 signatures: sequencer {:+.1} KiB, nodes {:+.1} KiB",
            t0.as_secs_f64(),
            t1.as_secs_f64(),
            b.done - a.done,
            per(rss(a), rss(b)),
            mib(rss(a)),
            mib(rss(b)),
            per(a.disk.0, b.disk.0) / 1024.0,
            per(a.disk.1, b.disk.1) / 1024.0,
        );
    }
    Ok(())
}

/// `kill -9` of node0 (the lowest id, so the aggregator of every signer set it is in), then
/// one sign request every 1.5 s for 30 s; each must end DONE.
fn killed(net: &Localnet, out: &Outcomes, sub: &mut Submitter) -> anyhow::Result<()> {
    net.kill_node(0)?;
    let start = Instant::now();
    let mut sent = Vec::new();
    for i in 0..20 {
        let due = start + Duration::from_millis(1500 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let rid = format!("dead-{i}");
        let (msg, id) = sign(i, &rid)?;
        let t0 = Instant::now();
        // node0 answered CheckTx; the sequencer now asks node1, which may not have seen the
        // client's last tx yet: send again after a block, as a client resyncing would.
        let accepted = (0..20).find_map(|_| match sub.submit(msg.clone()) {
            Ok(_) => Some(Ok(())),
            Err(e) if e.to_string().contains("wrong sequence") => {
                std::thread::sleep(Duration::from_millis(150));
                None
            }
            Err(e) => Some(Err(e)),
        });
        accepted.context("sequence never accepted")??;
        sent.push((id, t0, rid));
    }
    let ids: Vec<(String, Instant)> = sent.iter().map(|(id, t, _)| (id.clone(), *t)).collect();
    wait_for(Duration::from_secs(60), || {
        (out.count(ids.iter().map(|(id, _)| id.as_str())) == ids.len()).then_some(())
    });
    let retried = sent
        .iter()
        .filter(|(_, _, rid)| {
            net.query(&format!("/sign/{rid}"))
                .ok()
                .and_then(|s| s["attempt"].as_u64())
                .is_some_and(|a| a > 0)
        })
        .count();
    let (mut lat, failed, missing) = out.latencies(&ids);
    println!(
        "  node0 killed, then 20 requests over 30 s: {} DONE ({retried} needed another attempt), {failed} ERROR, {missing} without outcome; end to end p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms (target: all DONE, p99 < 3 s)",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
    );
    Ok(())
}
