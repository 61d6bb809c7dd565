//! `make bench`: the 4-node localnet against the library's in-process floors, in one run.
//!
//! Floor: per-party CPU of a 3-of-4 DKG and the whole CPU of one 3-of-4 signature, all parties
//! in this thread (FROST Ed25519 and secp256k1-tr, CGGMP24). Network, for each scheme:
//! - end to end, what a user sees: from a request's submission (`broadcast_tx_sync`) to its
//!   outcome reaching this client in a block's events over `/websocket` ([`outcomes`]);
//! - beside it the MPC part, measured by the nodes themselves (`/metrics`): keygen from the
//!   committed block to the share READY on every node, signing from the committed block to the
//!   signature verified by its submitter;
//! - signatures/s with 1, 10 and 100 requests in flight, a request being in flight until its
//!   outcome is on chain, and the CPU per signature of every process.
//!
//! Then availability on a network of its own ([`avail`]): a keygen burst, a sustained signing
//! load with RSS and disk, one node killed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::OsRng;
use seqmpc_e2e::{wait_for, Localnet, Submitter};
use seqmpc_proto::tx::TxMsg;
use seqmpc_proto::{KeyId, NodeId, RequestId, Scheme};

mod avail;
mod outcomes;
use outcomes::Outcomes;

/// The RPC URL of a localnet (localnet.json's `rpc`).
fn rpc_url(net: &Localnet) -> &str {
    net.info["rpc"].as_str().unwrap_or_default()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// One resharing in process, every party in this thread: the `dealers` deal from their stored
/// shares (`shares`, the nodes' storage encoding), every new party collects and checks its
/// deals and combines them (the module's resharing code, the same the nodes run). Wall ms.
fn reshare_floor(
    scheme: Scheme,
    public_key: Vec<u8>,
    shares: &BTreeMap<NodeId, zeroize::Zeroizing<Vec<u8>>>,
    (old_t, dealers): (u16, &[NodeId]),
    (new_parties, new_t): (&[NodeId], u16),
) -> anyhow::Result<f64> {
    use seqmpc_module::protocol::reshare::{deal, Collector, ReshareParams};
    let params = ReshareParams {
        session: seqmpc_proto::SessionId([9; 32]),
        scheme,
        old_parties: shares.keys().cloned().collect(),
        old_threshold: old_t,
        dealers: dealers.to_vec(),
        new_parties: new_parties.to_vec(),
        new_threshold: new_t,
        public_key,
        // The floor compares the dealers' copies by majority, as without the chain's record.
        old_public_package: None,
    };
    let start = Instant::now();
    let mut collectors: BTreeMap<NodeId, Collector> = new_parties
        .iter()
        .map(|p| Ok((p.clone(), Collector::new(params.clone(), p.clone())?)))
        .collect::<anyhow::Result<_>>()?;
    for d in dealers {
        for (to, deal) in deal(&params, d, shares.get(d).context("share")?, &mut OsRng)? {
            collectors.get_mut(&to).context("party")?.add(d, deal)?;
        }
    }
    for (_, c) in collectors {
        c.finish()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn nodes(range: std::ops::Range<usize>) -> anyhow::Result<Vec<NodeId>> {
    Ok(range
        .map(|i| NodeId::new(format!("node{i}")))
        .collect::<Result<_, _>>()?)
}

/// FROST figures, 3-of-4, medians over `reps`: per-party DKG CPU (ms), whole-signature CPU
/// (ms), and one resharing 3-of-4 -> 2-of-3 (ms, [`reshare_floor`]). frost-core's generic API,
/// the same code the nodes run.
fn floor<C: seqmpc_module::protocol::FrostScheme>(reps: usize) -> anyhow::Result<(f64, f64, f64)> {
    use frost_core as frost;
    let (n, t) = (4u16, 3u16);
    let mut dkg_ms = Vec::new();
    let mut sign_ms = Vec::new();
    let mut reshare_ms = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let ids: Vec<frost::Identifier<C>> =
            (1..=n).map(|i| i.try_into()).collect::<Result<_, _>>()?;
        let mut s1 = BTreeMap::new();
        let mut p1 = BTreeMap::new();
        for id in &ids {
            let (s, p) = frost::keys::dkg::part1::<C, _>(*id, n, t, OsRng)?;
            s1.insert(*id, s);
            p1.insert(*id, p);
        }
        let mut s2 = BTreeMap::new();
        let mut p2: BTreeMap<frost::Identifier<C>, BTreeMap<frost::Identifier<C>, _>> =
            BTreeMap::new();
        for id in &ids {
            let others: BTreeMap<_, _> = p1
                .iter()
                .filter(|(k, _)| *k != id)
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let (s, out) = frost::keys::dkg::part2(s1.remove(id).context("s1")?, &others)?;
            s2.insert(*id, s);
            for (to, pkg) in out {
                p2.entry(to).or_default().insert(*id, pkg);
            }
        }
        let mut keys = BTreeMap::new();
        let mut pubkeys = None;
        for id in &ids {
            let others: BTreeMap<_, _> = p1
                .iter()
                .filter(|(k, _)| *k != id)
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let (kp, pkp) = frost::keys::dkg::part3(&s2[id], &others, &p2[id])?;
            keys.insert(*id, kp);
            pubkeys = Some(pkp);
        }
        dkg_ms.push(start.elapsed().as_secs_f64() * 1000.0 / f64::from(n));
        let pubkeys = pubkeys.context("no key")?;
        let start = Instant::now();
        let signers = &ids[..t as usize];
        let mut nonces = BTreeMap::new();
        let mut comms = BTreeMap::new();
        for id in signers {
            let (no, c) = frost::round1::commit(keys[id].signing_share(), &mut OsRng);
            nonces.insert(*id, no);
            comms.insert(*id, c);
        }
        let package = frost::SigningPackage::new(comms, b"floor");
        let mut shares = BTreeMap::new();
        for id in signers {
            shares.insert(*id, frost::round2::sign(&package, &nonces[id], &keys[id])?);
        }
        frost::aggregate(&package, &shares, &pubkeys)?;
        sign_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        let stored = ids
            .iter()
            .zip(nodes(0..4)?)
            .map(|(id, node)| {
                let bytes =
                    seqmpc_module::protocol::frost_sign::encode_packages(&keys[id], &pubkeys)?;
                Ok((node, bytes))
            })
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        reshare_ms.push(reshare_floor(
            C::SCHEME,
            C::chain_public_key(pubkeys.verifying_key())?,
            &stored,
            (t, &nodes(0..3)?),
            (&nodes(0..3)?, 2),
        )?);
    }
    Ok((
        median(&mut dkg_ms),
        median(&mut sign_ms),
        median(&mut reshare_ms),
    ))
}

/// CGGMP24 3-of-4 floor from the test-only fixtures: per-party keygen (DKG on the fixture aux
/// info) and whole-signature CPU of a full signing by 3 signers, all parties in this thread.
fn cggmp_floor(fixtures: &std::path::Path, reps: usize) -> anyhow::Result<CggmpFloor> {
    use seqmpc_module::protocol::cggmp::{
        local, AuxShare, AuxSource, KeyGen, Presigning, SignData, Signing,
    };
    use seqmpc_proto::SessionId;
    use std::sync::Arc;
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures)?)?;
    let parties: Vec<NodeId> = (0..4)
        .map(|i| NodeId::new(format!("node{i}")))
        .collect::<Result<_, _>>()?;
    let mut kg_ms = Vec::new();
    let mut sign_ms = Vec::new();
    let mut presign_ms = Vec::new();
    let mut online_ms = Vec::new();
    let mut reshare_ms = Vec::new();
    for rep in 0..reps {
        let start = thread_cpu_ms();
        let mut started = Vec::new();
        for (i, p) in parties.iter().enumerate() {
            let aux = AuxShare::from_bytes(&serde_json::to_vec(&doc["aux"]["shares"][i])?)?;
            let (e, out) = KeyGen::start(
                SessionId([rep as u8; 32]),
                p,
                &parties,
                3,
                AuxSource::Existing(aux),
                &mut OsRng,
            )?;
            started.push((p.clone(), e, out));
        }
        let mut shares = BTreeMap::new();
        for (n, r) in local::run(started, None::<&mut OsRng>, None).results {
            shares.insert(n, Arc::new(r?));
        }
        kg_ms.push((thread_cpu_ms() - start) / 4.0);
        // Resharing 3-of-4 -> 2-of-4 on the same committee (its aux info carries over).
        let stored = shares
            .iter()
            .map(|(n, s)| Ok((n.clone(), s.to_bytes()?)))
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        let pk = shares
            .values()
            .next()
            .context("share")?
            .public_key()
            .to_vec();
        let start = thread_cpu_ms();
        reshare_floor(
            Scheme::Cggmp24Secp256k1,
            pk,
            &stored,
            (3, &parties[..3]),
            (&parties, 2),
        )?;
        reshare_ms.push(thread_cpu_ms() - start);
        let signers = &parties[..3];
        let start = thread_cpu_ms();
        let mut started = Vec::new();
        for s in signers {
            let share = shares.get(s).context("share")?.clone();
            let data = SignData::Message(b"floor".to_vec());
            let (e, out) = Signing::start(
                SessionId([100 + rep as u8; 32]),
                share,
                signers,
                data,
                &mut OsRng,
            )?;
            started.push((s.clone(), e, out));
        }
        for (_, r) in local::run(started, None::<&mut OsRng>, None).results {
            r?;
        }
        sign_ms.push(thread_cpu_ms() - start);
        // A presignature by the same signers, then the online step from it.
        let start = thread_cpu_ms();
        let mut started = Vec::new();
        for s in signers {
            let share = shares.get(s).context("share")?.clone();
            let (e, out) =
                Presigning::start(SessionId([200 + rep as u8; 32]), share, signers, &mut OsRng)?;
            started.push((s.clone(), e, out));
        }
        let mut presigs = Vec::new();
        for (n, r) in local::run(started, None::<&mut OsRng>, None).results {
            presigs.push((n, r?));
        }
        presign_ms.push(thread_cpu_ms() - start);
        // Sub-millisecond: wall time (the scheduler's CPU counters move only at ticks).
        let start = Instant::now();
        let mut partials = BTreeMap::new();
        let mut ctx = None;
        for (me, p) in presigs {
            let (partial, c) = p.issue_partial(b"floor");
            partials.insert(me, partial);
            ctx = Some(c);
        }
        ctx.context("no presignature")?.combine(&partials)?;
        online_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(CggmpFloor {
        dkg_ms: median(&mut kg_ms),
        sign_ms: median(&mut sign_ms),
        presign_ms: median(&mut presign_ms),
        online_ms: median(&mut online_ms),
        reshare_ms: median(&mut reshare_ms),
    })
}

/// CPU time this thread has used, in milliseconds (`/proc/thread-self/schedstat`, in ns): the
/// in-process floors count CPU, not wall time, so other work on the machine does not inflate
/// them.
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e6)
}

/// In-process CGGMP24 figures (whole protocol, all parties in one thread, CPU time).
struct CggmpFloor {
    /// Keygen on fixture aux info, per party.
    dkg_ms: f64,
    /// Full signing, 3 signers.
    sign_ms: f64,
    /// One presignature, 3 signers.
    presign_ms: f64,
    /// The online step from presignatures: 3 partial signatures and their combination.
    online_ms: f64,
    /// One resharing 3-of-4 -> 2-of-4 (3 dealers, 4 new parties), CPU.
    reshare_ms: f64,
}

/// Recent latencies of every node (the heavier endpoint; read once per phase).
fn metrics(net: &Localnet, nodes: usize) -> Vec<serde_json::Value> {
    (0..nodes)
        .filter_map(|i| match net.node_get(i, "/metrics/latencies") {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("node{i} /metrics/latencies: {e:#}");
                None
            }
        })
        .collect()
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_secs(pid: u64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of the sequencer (the localnet process), of each node, and of this bench (the
/// client: submissions, the block subscription), which shares the cores.
fn cpu_table(net: &Localnet) -> Vec<(String, f64)> {
    let mut v = vec![(
        "sequencer".to_owned(),
        cpu_secs(net.info["pid"].as_u64().unwrap_or(0)),
    )];
    for n in net.info["nodes"].as_array().cloned().unwrap_or_default() {
        v.push((
            n["id"].as_str().unwrap_or("?").to_owned(),
            cpu_secs(n["pid"].as_u64().unwrap_or(0)),
        ));
    }
    v.push(("bench".to_owned(), cpu_secs(u64::from(std::process::id()))));
    v
}

/// Keygen latency and sign throughput/latency of one scheme on the running localnet.
fn run_scheme(
    net: &Localnet,
    out: &Outcomes,
    sub: &mut Submitter,
    scheme: Scheme,
    (dkg_floor, sign_floor, reshare_floor_ms): (f64, f64, f64),
    phases: &[(u64, u64)],
    reshares: &[(&[&str], u32)],
) -> anyhow::Result<()> {
    let tag = match scheme {
        Scheme::FrostEd25519 => "ed",
        Scheme::FrostSecp256k1Tr => "tr",
        Scheme::Cggmp24Secp256k1 => "ec",
    };
    println!("{scheme}: floor (in-process, same run) DKG {dkg_floor:.2} ms per party, one signature {sign_floor:.2} ms CPU (all signers)");
    let kg_before: Vec<usize> = metrics(net, 4)
        .iter()
        .map(|m| m["keygen_latency_us"].as_array().map_or(0, |a| a.len()))
        .collect();
    let mut sent = Vec::new();
    for i in 0..5 {
        let id = format!("{tag}k{i}");
        let t0 = Instant::now();
        sub.submit(TxMsg::KeyGen {
            key_id: KeyId::new(&id)?,
            scheme,
            threshold: 3,
            parties: vec![],
        })?;
        let key = format!("key:{id}");
        wait_for(Duration::from_secs(60), || out.get(&key))
            .with_context(|| format!("keygen {id} did not finish"))?;
        sent.push((key, t0));
    }
    let mut kg = since(&metrics(net, 4), "keygen_latency_us", &kg_before);
    println!(
        "  keygen, one at a time: {}   MPC part (committed → READY, all nodes) p50 {:7.2} ms  max {:7.2} ms   [{:.1}x floor]",
        e2e_line(out, &sent),
        pct(&mut kg, 0.5),
        pct(&mut kg, 1.0),
        pct(&mut kg, 0.5) / dkg_floor,
    );
    let mut next = 0u64;
    for &(inflight, total) in phases {
        let base_lat: Vec<usize> = metrics(net, 4)
            .iter()
            .map(|m| m["sign_latency_us"].as_array().map_or(0, |a| a.len()))
            .collect();
        let cpu_before = cpu_table(net);
        let paced = sign_paced(out, sub, inflight, total, 120, |_| {
            let n = next;
            next += 1;
            Ok(TxMsg::KeySign {
                key_id: KeyId::new(format!("{tag}k{}", n % 5))?,
                request_id: RequestId::new(format!("{tag}{inflight}-{n}"))?,
                message: n.to_be_bytes().to_vec(),
                prehashed: false,
            })
        })?;
        let mut lat = since(&metrics(net, 4), "sign_latency_us", &base_lat);
        println!(
            "  sign, {inflight:3} in flight: {total:5} sigs  {:7.1} sig/s   {}   MPC part p50 {:7.2} ms  p99 {:7.2} ms   [p50 {:.1}x floor]",
            total as f64 / paced.secs,
            e2e_line(out, &paced.sent),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut lat, 0.5) / sign_floor
        );
        let per_sig: Vec<String> = cpu_table(net)
            .iter()
            .zip(&cpu_before)
            .map(|((name, after), (_, before))| {
                format!("{name} {:.2}", (after - before) * 1000.0 / total as f64)
            })
            .collect();
        let nodes_cpu_ms: f64 = cpu_table(net)
            .iter()
            .zip(&cpu_before)
            .filter(|((name, _), _)| name.starts_with("node"))
            .map(|((_, after), (_, before))| (after - before) * 1000.0 / total as f64)
            .sum();
        println!(
            "        CPU ms per signature: {}   [nodes together {:.1}x floor]",
            per_sig.join(", "),
            nodes_cpu_ms / sign_floor
        );
    }
    run_reshares(net, sub, &format!("{tag}k0"), reshare_floor_ms, reshares)
}

/// Reshares `key_id` to each (committee, threshold) in turn, one at a time; prints the wall
/// time (submit → DONE on chain, blocks included) and the new parties' MPC part (committed job
/// → new share checked, staged and reported) against the in-process floor.
fn run_reshares(
    net: &Localnet,
    sub: &mut Submitter,
    key_id: &str,
    floor_ms: f64,
    reshares: &[(&[&str], u32)],
) -> anyhow::Result<()> {
    let before: Vec<usize> = metrics(net, 4)
        .iter()
        .map(|m| m["reshare_latency_us"].as_array().map_or(0, |a| a.len()))
        .collect();
    let mut wall = Vec::new();
    for (parties, t) in reshares {
        let attempt = net.query(&format!("/key/{key_id}"))?["reshare"]["attempt"].as_u64();
        let t0 = Instant::now();
        sub.submit(TxMsg::KeyReshare {
            key_id: KeyId::new(key_id)?,
            parties: parties
                .iter()
                .map(|p| NodeId::new(*p))
                .collect::<Result<_, _>>()?,
            threshold: *t,
        })?;
        let r = wait_for(Duration::from_secs(120), || {
            let r = net.query(&format!("/key/{key_id}")).ok()?["reshare"].clone();
            (r["attempt"].as_u64() != attempt && r["status"] != "PENDING").then_some(r)
        })
        .with_context(|| format!("reshare of {key_id} did not end"))?;
        if r["status"] != "DONE" {
            bail!("reshare of {key_id} ended {}: {}", r["status"], r["error"]);
        }
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let mut lat = since(&metrics(net, 4), "reshare_latency_us", &before);
    let moves: Vec<String> = reshares
        .iter()
        .map(|(p, t)| format!("{t}-of-{}", p.len()))
        .collect();
    println!(
        "  reshare (3-of-4 -> {}): MPC part p50 {:7.2} ms  max {:7.2} ms   [p50 {:.1}x floor {floor_ms:.2} ms]; wall incl. blocks p50 {:.0} ms",
        moves.join(" -> "),
        pct(&mut lat, 0.5),
        pct(&mut lat, 1.0),
        pct(&mut lat, 0.5) / floor_ms,
        median(&mut wall)
    );
    Ok(())
}

/// A signing phase as the client saw it.
struct Paced {
    /// Seconds from the first submission to the last outcome seen.
    secs: f64,
    /// Each request (`sign:<id>`) and when it was submitted.
    sent: Vec<(String, Instant)>,
}

/// Submits `total` sign requests made by `request`, keeping `inflight` of them without an
/// outcome on chain (as the client sees them, [`Outcomes`]), and waits up to `wait_secs` for
/// the last ones.
fn sign_paced(
    out: &Outcomes,
    sub: &mut Submitter,
    inflight: u64,
    total: u64,
    wait_secs: u64,
    request: impl FnMut(u64) -> anyhow::Result<TxMsg>,
) -> anyhow::Result<Paced> {
    let run = pace(out, sub, inflight, |n, _| n < total, wait_secs, request)?;
    let last = run
        .sent
        .iter()
        .filter_map(|(id, _)| out.get(id))
        .map(|o| o.at)
        .max()
        .unwrap_or(run.start);
    Ok(Paced {
        secs: last.duration_since(run.start).as_secs_f64(),
        sent: run.sent,
    })
}

/// One request at a time, each sent 150-249 ms after the last outcome reached the client
/// (spread evenly over a block interval): what a user sees who signs now and then, while the
/// chain has nothing else to do. With empty blocks the request waits for the next 100 ms tick;
/// without them (`--no-empty-blocks`) its block comes at once.
fn sign_after_idle(
    net: &Localnet,
    out: &Outcomes,
    sub: &mut Submitter,
    (tag, sign_floor): (&str, f64),
    n: u64,
) -> anyhow::Result<()> {
    let base_lat: Vec<usize> = metrics(net, 4)
        .iter()
        .map(|m| m["sign_latency_us"].as_array().map_or(0, |a| a.len()))
        .collect();
    let mut sent = Vec::new();
    for i in 0..n {
        std::thread::sleep(Duration::from_millis(150 + i * 37 % 100));
        let request_id = RequestId::new(format!("{tag}idle-{i}"))?;
        let id = format!("sign:{request_id}");
        let t0 = Instant::now();
        sub.submit(TxMsg::KeySign {
            key_id: KeyId::new(format!("{tag}k{}", i % 5))?,
            request_id,
            message: i.to_be_bytes().to_vec(),
            prehashed: false,
        })?;
        sent.push((id.clone(), t0));
        wait_for(Duration::from_secs(30), || out.get(&id).map(|_| ()))
            .with_context(|| format!("{id} did not reach the chain"))?;
    }
    let mut lat = since(&metrics(net, 4), "sign_latency_us", &base_lat);
    println!(
        "  sign, 1 at a time, each 150-249 ms after the last outcome: {n} sigs   {}   MPC part p50 {:7.2} ms  p99 {:7.2} ms   [p50 {:.1}x floor]",
        e2e_line(out, &sent),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 0.5) / sign_floor
    );
    Ok(())
}

/// A signing run as the client saw it: when it started, and each request (`sign:<id>`) with
/// the moment it was submitted.
struct Run {
    start: Instant,
    sent: Vec<(String, Instant)>,
}

/// Submits sign requests made by `request` while `more(submitted so far, time since start)`,
/// keeping `inflight` of them without an outcome on chain, then waits up to `wait_secs` for
/// the outcomes of all it sent.
fn pace(
    out: &Outcomes,
    sub: &mut Submitter,
    inflight: u64,
    more: impl Fn(u64, Duration) -> bool,
    wait_secs: u64,
    mut request: impl FnMut(u64) -> anyhow::Result<TxMsg>,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let going = |sent: &Vec<_>| more(sent.len() as u64, start.elapsed());
    while going(&sent) {
        open.retain(|id| out.get(id).is_none());
        while going(&sent) && (open.len() as u64) < inflight {
            let msg = request(sent.len() as u64)?;
            let TxMsg::KeySign { request_id, .. } = &msg else {
                bail!("not a sign request: {msg:?}");
            };
            let id = format!("sign:{request_id}");
            let t0 = Instant::now();
            sub.submit(msg)?;
            sent.push((id.clone(), t0));
            open.push(id);
        }
        std::thread::sleep(Duration::from_millis(2));
        if start.elapsed() > Duration::from_secs(300) {
            bail!("benchmark stalled");
        }
    }
    wait_for(Duration::from_secs(wait_secs), || {
        (out.count(sent.iter().map(|(id, _)| id.as_str())) == sent.len()).then_some(())
    })
    .context("signatures did not all reach the chain")?;
    Ok(Run { start, sent })
}

/// `p50 / p99` of end-to-end latencies (µs) in ms, and a note on requests that failed.
fn e2e_line(out: &Outcomes, sent: &[(String, Instant)]) -> String {
    let (mut lat, failed, missing) = out.latencies(sent);
    let mut line = format!(
        "end to end p50 {:7.2} ms  p99 {:7.2} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    if failed + missing > 0 {
        line.push_str(&format!("  ({failed} ERROR, {missing} without outcome)"));
    }
    line
}

/// The latencies each node recorded after the given per-node counts.
fn since(ms: &[serde_json::Value], field: &str, before: &[usize]) -> Vec<u64> {
    ms.iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .flat_map(|(m, skip)| {
            m[field]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .skip(*skip)
        })
        .filter_map(|v| v.as_u64())
        .collect()
}

const ALL4: &[&str] = &["node0", "node1", "node2", "node3"];
const FIRST3: &[&str] = &["node0", "node1", "node2"];
/// FROST keys go 3-of-4 -> 2-of-3 -> 3-of-4, twice.
const FROST_RESHARES: &[(&[&str], u32)] = &[(FIRST3, 2), (ALL4, 3), (FIRST3, 2), (ALL4, 3)];

fn main() -> anyhow::Result<()> {
    // `--mpcd-dir DIR` (where the binaries are), `--only ed,tr,ec,avail` (some phases).
    const USAGE: &str = "usage: seqmpc-bench [--mpcd-dir DIR] [--only ed,tr,ec,avail] [--burst N] [--sustained-secs N] [--rate N] [--no-empty-blocks]";
    let mut args = std::env::args().skip(1);
    let mut only: Option<Vec<String>> = None;
    let mut avail_opts = avail::Options {
        burst: 1000,
        sustained_secs: 600,
        rate: 200,
    };
    let mut no_empty_blocks = false;
    while let Some(flag) = args.next() {
        if flag == "--no-empty-blocks" {
            no_empty_blocks = true;
            continue;
        }
        if matches!(flag.as_str(), "-h" | "--help") {
            println!("{USAGE}\n  runs a 4-node network and measures keygen, signing and resharing of each scheme against the library's in-process floor, then availability (a keygen burst of --burst, default 1000; --sustained-secs of signing, default 600, at --rate sig/s, default 200; one node killed) on a network of its own; --no-empty-blocks runs the first network's sequencer without empty blocks (a block as soon as a tx waits, at most every 100 ms)");
            return Ok(());
        }
        let Some(value) = args.next() else {
            bail!("{flag} needs a value; {USAGE}");
        };
        let number = || {
            value
                .parse::<u64>()
                .with_context(|| format!("{flag} {value}: not a number; {USAGE}"))
        };
        match flag.as_str() {
            "--mpcd-dir" => std::env::set_var("SEQMPC_BIN_DIR", &value),
            "--only"
                if value
                    .split(',')
                    .all(|p| matches!(p, "ed" | "tr" | "ec" | "avail")) =>
            {
                only = Some(value.split(',').map(str::to_owned).collect())
            }
            "--burst" => avail_opts.burst = number()? as usize,
            "--sustained-secs" => avail_opts.sustained_secs = number()?,
            "--rate" if number()? > 0 => avail_opts.rate = number()?,
            _ => bail!("unknown option {flag} {value}; {USAGE}"),
        }
    }
    let run = |tag: &str| only.as_ref().is_none_or(|o| o.iter().any(|p| p == tag));
    let tmp = tempfile::tempdir()?;
    let avail = |tmp: &tempfile::TempDir| match run("avail") {
        true => avail::run(&tmp.path().join("bench-avail"), &avail_opts),
        false => Ok(()),
    };
    if !(run("ed") || run("tr") || run("ec")) {
        return avail(&tmp);
    }
    let ed_floor = floor::<frost_ed25519::Ed25519Sha512>(30)?;
    let tr_floor = floor::<frost_secp256k1_tr::Secp256K1Sha256TR>(30)?;
    // Test-only CGGMP24 material (public secrets): primes and the node0..node3 aux info, so
    // the bench measures keygen and signing, not safe-prime generation.
    let fixtures = seqmpc_e2e::cggmp_fixtures();
    let dir: PathBuf = tmp.path().join("bench");
    // No presignature pool on this network: the CGGMP24 phase measures the full protocol
    // without background presigning on the same cores.
    let net = Localnet::start_with(
        &dir,
        4,
        3,
        100,
        17600,
        &[
            "--cggmp-fixtures".as_ref(),
            fixtures.as_os_str(),
            "--cggmp-presign-pool".as_ref(),
            "0".as_ref(),
        ]
        .into_iter()
        .chain(no_empty_blocks.then_some("--no-empty-blocks".as_ref()))
        .collect::<Vec<&std::ffi::OsStr>>(),
    )?;
    let mut sub = Submitter::new(&net, net.client_key()?)?;
    let out = Outcomes::watch(rpc_url(&net))?;
    println!(
        "network: 4 mpcd processes + dev sequencer ({}), 3-of-4",
        match no_empty_blocks {
            false => "a block every 100 ms",
            true => "no empty blocks: a block as soon as a tx waits, at most every 100 ms",
        }
    );
    if run("ed") {
        run_scheme(
            &net,
            &out,
            &mut sub,
            Scheme::FrostEd25519,
            ed_floor,
            // 300 in flight: what the network sustains once latency no longer bounds it
            // (100 in flight at two blocks of 100 ms can never exceed 500 sig/s).
            &[(1, 50), (10, 200), (100, 2000), (300, 4000)],
            FROST_RESHARES,
        )?;
        sign_after_idle(&net, &out, &mut sub, ("ed", ed_floor.1), 30)?;
    }
    if run("tr") {
        run_scheme(
            &net,
            &out,
            &mut sub,
            Scheme::FrostSecp256k1Tr,
            tr_floor,
            &[(1, 50), (100, 2000)],
            FROST_RESHARES,
        )?;
    }
    if !run("ec") {
        drop(out);
        net.stop()?;
        return avail(&tmp);
    }
    // Measured while the network idles, before its CGGMP24 phase.
    let ec_floor = cggmp_floor(&fixtures, 2)?;
    println!(
        "cggmp24-secp256k1 floor (in-process, same run, big integers on {}): presignature {:.0} ms CPU (3 signers), online step {:.2} ms CPU (3 partials + combine)",
        seqmpc_module::protocol::cggmp::BIGINT_BACKEND,
        ec_floor.presign_ms,
        ec_floor.online_ms
    );
    println!("  full protocol (no presignature pool on this network):");
    run_scheme(
        &net,
        &out,
        &mut sub,
        Scheme::Cggmp24Secp256k1,
        (ec_floor.dkg_ms, ec_floor.sign_ms, ec_floor.reshare_ms),
        &[(1, 4), (10, 10)],
        &[(ALL4, 2), (ALL4, 3), (ALL4, 2), (ALL4, 3)],
    )?;
    // A new committee (node0..node2): aux info generated from the nodes' ready (fixture)
    // primes beside the DKG, i.e. a keygen with a warm prime pool.
    let t = Instant::now();
    sub.submit(TxMsg::KeyGen {
        key_id: KeyId::new("ecnew")?,
        scheme: Scheme::Cggmp24Secp256k1,
        threshold: 2,
        parties: ["node0", "node1", "node2"]
            .into_iter()
            .map(NodeId::new)
            .collect::<Result<_, _>>()?,
    })?;
    wait_for(Duration::from_secs(300), || {
        (net.query("/key/ecnew").ok()?["status"] == "READY").then_some(())
    })
    .context("keygen ecnew did not finish")?;
    println!(
        "  keygen of a new 2-of-3 committee, aux info from a warm prime pool: {:.1} s wall (submit → READY on chain)",
        t.elapsed().as_secs_f64()
    );
    drop(out);
    net.stop()?;

    // A network with presignature pools: one key, pools filled, then signing from them.
    let pool = 5;
    let dir: PathBuf = tmp.path().join("bench-presign");
    let net = Localnet::start_with(
        &dir,
        4,
        3,
        100,
        17800,
        &[
            "--cggmp-fixtures".as_ref(),
            fixtures.as_os_str(),
            "--cggmp-presign-pool".as_ref(),
            pool.to_string().as_ref(),
        ],
    )?;
    let mut sub = Submitter::new(&net, net.client_key()?)?;
    let out = Outcomes::watch(rpc_url(&net))?;
    run_presigned(&net, &out, &mut sub, pool, &ec_floor)?;
    drop(out);
    net.stop()?;
    avail(&tmp)
}

/// CGGMP24 signing from presignatures: fills the pools of one 3-of-4 key (4 signer subsets,
/// `pool` each), then signs one at a time and 10 at a time.
/// Sign request `n` (the message is `n`, big-endian) for key `ecp`, with request id
/// `<tag>-<n>`.
fn ecp_request(tag: &str, n: u64) -> anyhow::Result<TxMsg> {
    Ok(TxMsg::KeySign {
        key_id: KeyId::new("ecp")?,
        request_id: RequestId::new(format!("{tag}-{n}"))?,
        message: n.to_be_bytes().to_vec(),
        prehashed: false,
    })
}

fn run_presigned(
    net: &Localnet,
    out: &Outcomes,
    sub: &mut Submitter,
    pool: usize,
    floor: &CggmpFloor,
) -> anyhow::Result<()> {
    println!("  with presignature pools ({pool} per key and signer subset, 4 subsets):");
    sub.submit(TxMsg::KeyGen {
        key_id: KeyId::new("ecp")?,
        scheme: Scheme::Cggmp24Secp256k1,
        threshold: 3,
        parties: vec![],
    })?;
    wait_for(Duration::from_secs(60), || {
        (net.query("/key/ecp").ok()?["status"] == "READY").then_some(())
    })
    .context("keygen ecp did not finish")?;
    let t = Instant::now();
    let full = || {
        (0..4).all(|i| {
            net.node_get(i, "/status").ok().is_some_and(|st| {
                st["cggmp_presign_pools"].as_array().is_some_and(|a| {
                    a.iter()
                        .filter(|p| p["ready"].as_u64() >= Some(pool as u64))
                        .count()
                        == 3
                })
            })
        })
    };
    wait_for(Duration::from_secs(600), || full().then_some(()))
        .context("presignature pools did not fill")?;
    let fill = t.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    // The most presignatures a minute these cores can make: all of them on presigning.
    let supply_floor = 60.0 * cores / (floor.presign_ms / 1000.0);
    let supply = 60.0 * (4 * pool) as f64 / fill;
    println!(
        "    pools filled in {fill:.0} s: {} presignatures, {:.1} s each on this network: supply {supply:.1} presignatures/min   [{:.2}x the floor's {supply_floor:.1}/min on {cores} cores]",
        4 * pool,
        fill / (4 * pool) as f64,
        supply / supply_floor,
    );
    let presigned = |net: &Localnet| -> u64 {
        (0..4)
            .filter_map(|i| net.node_get(i, "/metrics/json").ok())
            .filter_map(|m| m["signatures_presigned"].as_u64())
            .sum()
    };
    let mut next = 0u64;
    for (inflight, total) in [(1u64, 6u64), (10, 10)] {
        if inflight > 1 {
            wait_for(Duration::from_secs(600), || full().then_some(()))
                .context("presignature pools did not refill")?;
        }
        let pre_before = presigned(net);
        let base: Vec<usize> = metrics(net, 4)
            .iter()
            .map(|m| {
                m["presigned_sign_latency_us"]
                    .as_array()
                    .map_or(0, |a| a.len())
            })
            .collect();
        let tag = format!("ecp{inflight}");
        let paced = sign_paced(out, sub, inflight, total, 300, |_| {
            next += 1;
            ecp_request(&tag, next - 1)
        })?;
        let mut lat = since(&metrics(net, 4), "presigned_sign_latency_us", &base);
        println!(
            "    sign, {inflight:3} in flight: {total:3} sigs ({} from presignatures)  {:6.1} sig/s   {}   presigned MPC part p50 {:6.2} ms  p99 {:6.2} ms   [p50 {:.1}x online floor]",
            presigned(net) - pre_before,
            total as f64 / paced.secs,
            e2e_line(out, &paced.sent),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut lat, 0.5) / floor.online_ms
        );
    }
    // Steady state: more demand than the pools hold, so every signature waits for a
    // presignature or runs the full protocol; the rate is counted after a warm-up that drains
    // the pools.
    let (warmup, window, inflight) = (Duration::from_secs(30), Duration::from_secs(120), 4);
    let pre_before = presigned(net);
    let run = pace(
        out,
        sub,
        inflight,
        |_, t| t < warmup + window,
        300,
        |_| {
            next += 1;
            ecp_request("ecp-steady", next - 1)
        },
    )?;
    let from = run.start + warmup;
    let to = from + window;
    let done = run
        .sent
        .iter()
        .filter_map(|(id, _)| out.get(id))
        .filter(|o| o.ok && o.at >= from && o.at < to)
        .count();
    let per_min = done as f64 * 60.0 / window.as_secs_f64();
    println!(
        "    steady state, {inflight} in flight for {} s (rate over the last {} s): {per_min:.1} sig/min ({} of the run's {} from presignatures)   {}   [{:.2}x the floor's {supply_floor:.1}/min]",
        (warmup + window).as_secs(),
        window.as_secs(),
        presigned(net) - pre_before,
        run.sent.len(),
        e2e_line(out, &run.sent),
        per_min / supply_floor,
    );
    Ok(())
}
