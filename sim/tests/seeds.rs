//! The simulator in `make test`: a few seeds of every scenario must pass, and the invariants
//! must catch a network that loses requests (a checker that cannot fail proves nothing).
#![allow(non_snake_case, clippy::unwrap_used, clippy::expect_used)]

use seqmpc_sim::{run, Scenario};

#[test]
fn every_scenario__should_keep_every_invariant_on_a_few_seeds() {
    for sc in Scenario::all() {
        let sc = Scenario {
            // The burst's 200 keygens cost seconds a seed: fewer here, all of them in make sim.
            burst_keygens: sc.burst_keygens.min(40),
            ..sc
        };
        for seed in 1..=3 {
            let r = run(&sc, seed);
            assert!(
                r.violations.is_empty(),
                "{} seed {seed}: {:#?}\nreplay: {}",
                sc.name,
                r.violations,
                r.replay()
            );
        }
    }
}

#[test]
fn invariants__should_catch_signing_that_is_lost_to_a_dead_signer() {
    // Without attempts (an attempt lasts the whole request) and with signers that never give
    // up before the deadline, a request whose signers include the dead node is lost: the
    // behaviour before chain-decided signing liveness.
    let sc = Scenario {
        sign_attempt_blocks: Some(10_000),
        sign_timeout_ms: Some(600_000),
        ..Scenario::named("dead-signer").unwrap()
    };
    let r = run(&sc, 1);
    assert!(
        r.violations
            .iter()
            .any(|v| v.contains("while 3 honest nodes (threshold 3) were up")),
        "{:#?}",
        r.violations
    );
}

/// Issue 13: finished sign requests leave the chain state after the retention, and the
/// invariants still see every one (as it ended).
#[test]
fn run__should_prune_finished_sign_requests_and_still_count_them() {
    let sc = Scenario::named("steady").unwrap();
    let r = run(&sc, 1);
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    let (committed, done, _) = r.stats.signs;
    assert_eq!(done, committed, "{:?}", r.stats.signs);
    assert!(
        r.stats.signs_in_state < committed / 2,
        "{} of {committed} sign requests still in the state",
        r.stats.signs_in_state
    );
}

#[test]
fn run__should_replay_exactly_from_its_seed() {
    let sc = Scenario::named("chaos").unwrap();
    let (a, b) = (run(&sc, 7), run(&sc, 7));
    assert_eq!(a.violations, b.violations);
    assert_eq!(
        (
            a.stats.events,
            a.stats.messages,
            a.stats.signs,
            a.stats.keygens
        ),
        (
            b.stats.events,
            b.stats.messages,
            b.stats.signs,
            b.stats.keygens
        )
    );
}
