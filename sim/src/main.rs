//! `seqmpc-sim`: runs scenarios over many seeds and reports broken invariants, each with the
//! one-line command that replays it.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use seqmpc_sim::{run, Scenario};

/// Deterministic simulation of a seqmpc network (see the crate docs).
#[derive(Parser)]
#[command(name = "seqmpc-sim")]
struct Args {
    /// Only this scenario (default: every one).
    #[arg(long)]
    scenario: Option<String>,
    /// Run only this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Seeds per scenario, starting at --first-seed.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Print every violation of a failing run (default: the first 5).
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenarios: Vec<Scenario> = match &args.scenario {
        Some(name) => match Scenario::named(name) {
            Some(s) => vec![s],
            None => {
                let names: Vec<&str> = Scenario::all().iter().map(|s| s.name).collect();
                eprintln!("unknown scenario {name:?}; known: {}", names.join(", "));
                return ExitCode::from(2);
            }
        },
        None => Scenario::all(),
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect(),
    };
    let started = Instant::now();
    let (mut runs, mut failed) = (0u64, 0u64);
    let chosen = args.scenario.is_some() || args.seed.is_some();
    for sc in &scenarios {
        // A costly scenario runs its first seeds only, unless it is the one asked for.
        let seeds: Vec<u64> = match sc.max_seeds {
            Some(max) if !chosen => seeds.iter().copied().take(max as usize).collect(),
            _ => seeds.clone(),
        };
        let t0 = Instant::now();
        let mut sc_failed = 0;
        let mut sim_ms = 0;
        let (mut signature_txs, mut signed, mut backups) = (0u64, 0u64, 0u64);
        for &seed in &seeds {
            let r = run(sc, seed);
            runs += 1;
            sim_ms += r.stats.sim_ms;
            signature_txs += r.stats.signature_txs;
            backups += r.stats.backups;
            signed += r.stats.signs.1 as u64;
            if args.verbose {
                println!("{} seed {}: {:?}", sc.name, seed, r.stats);
            }
            if r.violations.is_empty() {
                continue;
            }
            failed += 1;
            sc_failed += 1;
            println!(
                "FAIL {} seed {}: {} violation(s); signs {:?} keygens {:?} reshares {:?} \
                 (committed, ok, error)",
                sc.name,
                seed,
                r.violations.len(),
                r.stats.signs,
                r.stats.keygens,
                r.stats.reshares
            );
            let shown = if args.verbose { usize::MAX } else { 5 };
            for v in r.violations.iter().take(shown) {
                println!("    {v}");
            }
            if args.verbose {
                for t in &r.stats.refused {
                    println!("    refused tx: {t}");
                }
            }
            println!("    replay: {}", r.replay());
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{:<18} {} seeds, {} failed, {:.2} s ({:.1} seeds/s, {:.0}x real time), \
             {:.2} signature txs per signature ({} backups)",
            sc.name,
            seeds.len(),
            sc_failed,
            secs,
            seeds.len() as f64 / secs.max(1e-9),
            sim_ms as f64 / 1000.0 / secs.max(1e-9),
            signature_txs as f64 / signed.max(1) as f64,
            backups
        );
    }
    println!(
        "{} passed, {} failed ({} runs in {:.1} s)",
        runs - failed,
        failed,
        runs,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
