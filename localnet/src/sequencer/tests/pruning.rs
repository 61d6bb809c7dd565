//! The block log pruned below the apps' retain heights, as CometBFT prunes its block store.

use super::*;

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("blocks-") && name.ends_with(".log")
        })
        .count()
}

fn earliest_and_latest(url: &str) -> (u64, u64) {
    let (_, s) = get(&format!("{url}/status"));
    let n = |k: &str| -> u64 {
        s["result"]["sync_info"][k]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    (n("earliest_block_height"), n("latest_block_height"))
}

#[test]
fn sequencer__should_prune_its_block_log_below_the_lowest_retain_height_of_the_apps() {
    let dir = tempfile::tempdir().unwrap();
    // `a` would keep 4 blocks, `b` 12: the lowest retain height (b's) rules. `c` keeps 12 too,
    // behind a proxy, so it can come back later with its data lost.
    let (a, _) = start_app_keeping("", 4);
    let (b, _) = start_app_keeping("", 12);
    let (c, _) = start_app_keeping("", 12);
    let c_proxy = Proxy::start(Some(c));
    let apps = vec![
        format!("a={a}"),
        format!("b={b}"),
        format!("c={}", c_proxy.addr),
    ];
    let mut cfg = config(apps.clone(), dir.path());
    cfg.block_ms = 20;
    cfg.block_log_segment_blocks = 3;
    let seq = Sequencer::spawn(cfg).unwrap();
    seq.wait_for_height(40, Duration::from_secs(20)).unwrap();
    let url = seq.rpc_url();

    let (earliest, latest) = earliest_and_latest(&url);
    // b's retain height at the tip is latest - 11: that block and the one below it stay; at
    // most a segment (3 blocks) and a block of lag more are kept.
    assert!(earliest > 1, "nothing pruned: earliest {earliest}");
    assert!(
        earliest <= latest - 11,
        "earliest {earliest} above b's retain height ({latest})"
    );
    assert!(
        earliest + 17 >= latest,
        "too little pruned: {earliest}..{latest}"
    );
    assert!(
        segments(dir.path()) <= 7,
        "{} segments",
        segments(dir.path())
    );

    // A pruned height is an error as CometBFT words it; the earliest one is served whole.
    let (_, r) = get(&format!("{url}/block?height=1"));
    let msg = r["error"]["data"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("height 1 is not available, lowest height is "),
        "{r}"
    );
    // (Blocks come every 20 ms: the earliest may move between two calls; a few tries.)
    let served = (0..5).find_map(|_| {
        let (earliest, _) = earliest_and_latest(&url);
        let (_, r) = get(&format!("{url}/block?height={earliest}"));
        let height = r["result"]["block"]["header"]["height"].as_str();
        (height.and_then(|h| h.parse::<u64>().ok()) == Some(earliest)).then_some(earliest)
    });
    let earliest = served.expect("the earliest block served in 5 tries");
    let (_, r) = get(&format!(
        "{url}/blockchain?minHeight=1&maxHeight={earliest}"
    ));
    let metas = r["result"]["block_metas"].as_array().unwrap();
    assert!(
        metas.iter().all(|m| m["header"]["height"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= earliest),
        "{r}"
    );

    // c comes back with its data lost: the blocks it needs are gone, and it says so.
    let (fresh, _) = start_app("");
    c_proxy.switch(Some(fresh));
    wait(
        "c to report the pruned blocks",
        Duration::from_secs(10),
        || {
            seq.status().apps[2]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("the block store starts at height"))
        },
    );
    assert!(seq.status().apps[..2]
        .iter()
        .all(|x| x.state == AppState::Up));
    seq.stop().unwrap();

    // A restart resumes from the pruned log: the same earliest block, heights go on.
    let mut cfg = config(vec![format!("a={a}"), format!("b={b}")], dir.path());
    cfg.block_log_segment_blocks = 3;
    let seq = Sequencer::spawn(cfg).unwrap();
    let h = seq.height();
    seq.wait_for_height(h + 2, Duration::from_secs(10)).unwrap();
    let (again, _) = earliest_and_latest(&seq.rpc_url());
    assert!(
        again >= earliest,
        "earliest went back from {earliest} to {again}"
    );
    assert!(seq.status().app_hash_divergence.is_none());
    seq.stop().unwrap();
}
