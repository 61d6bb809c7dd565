//! Generates the CGGMP24 test fixtures: safe-prime sets for test parties and complete aux info
//! for a 4-party committee, so that tests need not spend minutes on them.
//!
//! ```sh
//! cargo run --release -p seqmpc-module --example gen_cggmp_fixtures -- \
//!     [--out module/tests/fixtures/cggmp24-test-fixtures.json] [--primes 5] [--aux-parties 4] [--jobs 2]
//! ```
//!
//! The output is TEST-ONLY material: the primes are Paillier secret keys of test parties, and
//! the file is public. It protects no real key and must never be loaded by a node outside tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rand::rngs::OsRng;
use seqmpc_module::proto::{NodeId, SessionId};
use seqmpc_module::protocol::cggmp::{local, AuxGen, Primes};

/// Session id of the fixture aux info (the tests need not know it: aux info is reusable).
const AUX_SESSION: SessionId = SessionId([0xa5; 32]);

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out: PathBuf = arg(&args, "--out")
        .unwrap_or_else(|| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/cggmp24-test-fixtures.json"
            )
            .into()
        })
        .into();
    let n_primes: usize = arg(&args, "--primes").map_or(Ok(5), |s| s.parse())?;
    let n_aux: usize = arg(&args, "--aux-parties").map_or(Ok(4), |s| s.parse())?;
    let jobs: usize = arg(&args, "--jobs").map_or_else(
        || Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        |s| s.parse(),
    )?;
    if n_aux > n_primes {
        return Err("--aux-parties must not exceed --primes".into());
    }
    let parties: Vec<NodeId> = (0..n_primes)
        .map(|i| NodeId::new(format!("node{i}")))
        .collect::<Result<_, _>>()?;

    // Safe primes: the slow part, one set per party, `jobs` at a time.
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let sets: Mutex<Vec<Option<(Primes, f64)>>> = Mutex::new(vec![None; n_primes]);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n_primes {
                    break;
                }
                let t = Instant::now();
                let p = Primes::generate(&mut OsRng);
                let secs = t.elapsed().as_secs_f64();
                eprintln!("primes for node{i}: {secs:.1} s");
                if let Ok(mut v) = sets.lock() {
                    if let Some(slot) = v.get_mut(i) {
                        *slot = Some((p, secs));
                    }
                }
            });
        }
    });
    let sets: Vec<(Primes, f64)> = sets
        .into_inner()
        .map_err(|_| "prime thread panicked")?
        .into_iter()
        .collect::<Option<_>>()
        .ok_or("a prime set is missing")?;
    let primes_wall = started.elapsed().as_secs_f64();
    eprintln!("{n_primes} prime sets: {primes_wall:.1} s wall with {jobs} jobs");

    // Aux info for the first `n_aux` parties, all in this thread.
    let committee: Vec<NodeId> = parties.iter().take(n_aux).cloned().collect();
    let t = Instant::now();
    let mut engines = Vec::new();
    for (node, (primes, _)) in committee.iter().zip(&sets) {
        let (e, out) = AuxGen::start(AUX_SESSION, node, &committee, primes.clone(), &mut OsRng)?;
        engines.push((node.clone(), e, out));
    }
    let outcome = local::run::<_, OsRng>(engines, None, None);
    let aux_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "aux info for {n_aux} parties, one thread: {aux_secs:.1} s; bytes sent per party: {:?}",
        outcome.bytes_sent
    );
    let mut aux = Vec::new();
    for node in &committee {
        let share = outcome
            .results
            .get(node)
            .ok_or("aux info did not finish")?
            .as_ref()
            .map_err(|e| e.to_string())?;
        let bytes = share.to_bytes()?;
        aux.push(serde_json::from_slice::<serde_json::Value>(&bytes)?);
    }

    let mut primes = Vec::new();
    for (p, _) in &sets {
        primes.push(serde_json::from_slice::<serde_json::Value>(&p.to_bytes()?)?);
    }
    let doc = serde_json::json!({
        "warning": "TEST-ONLY FIXTURES. These safe primes and aux info (Paillier secret keys) of \
                    test parties are public: they protect no real key. Never load them outside tests.",
        "generator": "cargo run --release -p seqmpc-module --example gen_cggmp_fixtures",
        "security_level": "SecurityLevel128",
        "parties": parties,
        "primes": primes,
        "aux": { "parties": committee, "shares": aux },
        "timings_s": {
            "prime_sets": sets.iter().map(|(_, s)| (s * 10.0).round() / 10.0).collect::<Vec<_>>(),
            "prime_sets_wall": (primes_wall * 10.0).round() / 10.0,
            "jobs": jobs,
            "aux_info_all_parties_one_thread": (aux_secs * 10.0).round() / 10.0,
        },
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)?;
    eprintln!(
        "wrote {} in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
