//! Times the CGGMP24 steps that depend on the big-integer backend (num-bigint or GMP via
//! rug), in process, one thread, SecurityLevel128, with the test fixtures' primes and aux
//! info. The backend is chosen at build time (`--cfg seqmpc_gmp`, module/Cargo.toml), so
//! compare two builds, with and without `RUSTFLAGS="--cfg seqmpc_gmp"`:
//!
//! ```sh
//! cargo run --release -p seqmpc-module --example backend_bench -- \
//!     [--fixtures PATH] [--aux 2] [--sign 3] [--presign 3] [--primes 0] [--write-aux PATH]
//! ```
//!
//! Steps: aux-info generation for 4 parties from the fixture primes (includes the CRT
//! precomputation the project does), full interactive signing with 3 signers of a 3-of-4
//! key (keygen with fixture aux), presignature generation with 3 signers, and optionally
//! safe-prime set generation. All parties run in this thread, so "per party" = total / parties.
//! `--write-aux PATH` writes the freshly generated aux info in the fixture format, so that a
//! build with the other backend can load it (`--fixtures PATH`): cross-backend check.
//! TEST-ONLY material: never use fixtures or their output outside tests.

use std::time::Instant;

use rand::rngs::OsRng;
use seqmpc_module::proto::{NodeId, SessionId};
use seqmpc_module::protocol::cggmp::{
    local, AuxGen, AuxShare, AuxSource, KeyGen, Presigning, Primes, SignData, Signing,
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn node(i: usize) -> Result<NodeId, Box<dyn std::error::Error>> {
    Ok(NodeId::new(format!("node{i}"))?)
}

/// CPU time of this (single-threaded) process in seconds, from /proc/self/schedstat (ns on
/// CPU); NaN where unavailable. The machine is shared, so CPU time is steadier than wall time.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// Wall and CPU seconds since `t`.
struct Clock(Instant, f64);

impl Clock {
    fn start() -> Clock {
        Clock(Instant::now(), cpu_s())
    }
    fn stop(&self) -> (f64, f64) {
        (self.0.elapsed().as_secs_f64(), cpu_s() - self.1)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn report(backend: &str, step: &str, parties: usize, samples: &[(f64, f64)]) {
    let list: Vec<String> = samples
        .iter()
        .map(|(w, c)| format!("{w:.2}/{c:.2}"))
        .collect();
    let mut wall: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let mut cpu: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let (w, c) = (median(&mut wall), median(&mut cpu));
    let n = parties as f64;
    println!(
        "{backend}\t{step}\twall/cpu_s=[{}]\tmedian total wall {w:.3} cpu {c:.3}\t\
         per party wall {:.3} cpu {:.3}",
        list.join(", "),
        w / n,
        c / n
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(arg(&args, name).map_or(Ok(default), |s| s.parse())?)
    };
    let fixtures = arg(&args, "--fixtures").unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cggmp24-test-fixtures.json"
        )
        .into()
    });
    let (n_aux, n_sign, n_presign, n_primes) = (
        num("--aux", 2)?,
        num("--sign", 3)?,
        num("--presign", 3)?,
        num("--primes", 0)?,
    );
    let type_name = std::any::type_name::<paillier_zk::backend::Integer>();
    let backend = if type_name.contains("rug") {
        "rug"
    } else if type_name.contains("num_bigint") {
        "num-bigint"
    } else {
        type_name
    };
    eprintln!("backend: {backend} ({type_name}); fixtures: {fixtures}");

    // Fixtures (made under num-bigint): do they parse under this backend?
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixtures)?)?;
    let parties: Vec<NodeId> = (0..4).map(node).collect::<Result<_, _>>()?;
    let mut primes = Vec::new();
    for i in 0..4 {
        primes.push(Primes::from_bytes(&serde_json::to_vec(&doc["primes"][i])?)?);
    }
    let mut aux = Vec::new();
    for i in 0..4 {
        aux.push(AuxShare::from_bytes(&serde_json::to_vec(
            &doc["aux"]["shares"][i],
        )?)?);
    }
    eprintln!("fixtures parse: 4 prime sets, 4 aux shares");

    // (1) Aux info, 4 parties, from the fixture primes.
    let mut samples = Vec::new();
    let mut fresh_aux = Vec::new();
    for k in 0..n_aux {
        let t = Clock::start();
        let mut engines = Vec::new();
        for (p, pr) in parties.iter().zip(&primes) {
            let (e, out) = AuxGen::start(
                SessionId([0x40 + k as u8; 32]),
                p,
                &parties,
                pr.clone(),
                &mut OsRng,
            )?;
            engines.push((p.clone(), e, out));
        }
        let outcome = local::run::<_, OsRng>(engines, None, None);
        samples.push(t.stop());
        fresh_aux.clear();
        for p in &parties {
            let share = outcome.results.get(p).ok_or("aux info did not finish")?;
            let share = share.as_ref().map_err(|e| e.to_string())?;
            fresh_aux.push(serde_json::from_slice::<serde_json::Value>(
                &share.to_bytes()?,
            )?);
        }
        eprintln!("aux info sample {k}: wall/cpu {:?} s", samples[k]);
    }
    if n_aux > 0 {
        report(backend, "aux_info_n4", 4, &samples);
    }
    if let Some(path) = arg(&args, "--write-aux") {
        let primes_json: Vec<serde_json::Value> = doc["primes"]
            .as_array()
            .ok_or("no primes")?
            .iter()
            .take(4)
            .cloned()
            .collect();
        let out = serde_json::json!({
            "warning": "TEST-ONLY: aux info generated by backend_bench; never use outside tests.",
            "backend": backend,
            "primes": primes_json,
            "aux": { "parties": parties, "shares": fresh_aux },
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&out)?)?;
        eprintln!("wrote {path}");
    }

    // Keygen 3-of-4 with the fixture aux (milliseconds; not the subject).
    let engines = parties
        .iter()
        .zip(aux)
        .map(|(p, a)| {
            let (e, out) = KeyGen::start(
                SessionId([1; 32]),
                p,
                &parties,
                3,
                AuxSource::Existing(a),
                &mut OsRng,
            )?;
            Ok((p.clone(), e, out))
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let outcome = local::run::<_, OsRng>(engines, None, None);
    let mut shares = std::collections::BTreeMap::new();
    for (p, r) in outcome.results {
        shares.insert(p, std::sync::Arc::new(r.map_err(|e| e.to_string())?));
    }
    if shares.len() != 4 {
        return Err("keygen did not finish".into());
    }
    let signers = vec![parties[0].clone(), parties[1].clone(), parties[3].clone()];

    // (2) Full interactive signing, 3 signers.
    let mut samples = Vec::new();
    for k in 0..n_sign {
        let digest = [0x11 + k as u8; 32];
        let t = Clock::start();
        let engines = signers
            .iter()
            .map(|s| {
                let (e, out) = Signing::start(
                    SessionId([0x60 + k as u8; 32]),
                    shares[s].clone(),
                    &signers,
                    SignData::prehashed(&digest)?,
                    &mut OsRng,
                )?;
                Ok((s.clone(), e, out))
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        let outcome = local::run::<_, OsRng>(engines, None, None);
        samples.push(t.stop());
        let sigs = outcome
            .results
            .values()
            .map(|r| r.as_ref().map(|s| s.rs).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if sigs.len() != 3 || sigs.iter().any(|s| *s != sigs[0]) {
            return Err("signing did not agree".into());
        }
    }
    if n_sign > 0 {
        report(backend, "sign_3_of_4", 3, &samples);
    }

    // (3) Presignature, 3 signers.
    let mut samples = Vec::new();
    for k in 0..n_presign {
        let t = Clock::start();
        let engines = signers
            .iter()
            .map(|s| {
                let (e, out) = Presigning::start(
                    SessionId([0x80 + k as u8; 32]),
                    shares[s].clone(),
                    &signers,
                    &mut OsRng,
                )?;
                Ok((s.clone(), e, out))
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        let outcome = local::run::<_, OsRng>(engines, None, None);
        samples.push(t.stop());
        if outcome.results.values().filter(|r| r.is_ok()).count() != 3 {
            return Err("presigning did not finish".into());
        }
    }
    if n_presign > 0 {
        report(backend, "presign_3", 3, &samples);
    }

    // (4) Safe-prime sets (slow).
    let mut samples = Vec::new();
    for k in 0..n_primes {
        let t = Clock::start();
        let p = Primes::generate(&mut OsRng);
        samples.push(t.stop());
        drop(p);
        eprintln!("prime set sample {k}: wall/cpu {:?} s", samples[k]);
    }
    if n_primes > 0 {
        report(backend, "safe_prime_set", 1, &samples);
    }
    Ok(())
}
