//! What a user sees: when each request's outcome reached this client. A thread follows the
//! RPC's `/websocket` `NewBlock` subscription (as a wallet or indexer would) and notes, for
//! every `key_ready` / `key_error` / `sign_done` / `sign_failed` event, the moment the block
//! carrying it arrived. End-to-end latency is that moment minus the moment the request was
//! submitted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use seqmpc_abci::daemon::block_watch::BlockWatch;

/// A request's outcome as the chain published it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// When the block carrying it reached this client.
    pub at: Instant,
    /// DONE / READY (true) or ERROR (false).
    pub ok: bool,
}

type Seen = Arc<Mutex<BTreeMap<String, Outcome>>>;

/// The outcomes seen so far, keyed `key:<key id>` and `sign:<request id>`.
pub struct Outcomes {
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Outcomes {
    /// Subscribes to the blocks of the RPC at `rpc_url`.
    pub fn watch(rpc_url: &str) -> anyhow::Result<Outcomes> {
        let mut blocks = BlockWatch::connect(rpc_url)?;
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::Builder::new()
                .name("outcomes".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if blocks.is_closed() {
                            eprintln!("bench: the block subscription ended");
                            return;
                        }
                        let Some(block) = blocks.next_block_events(Duration::from_millis(200))
                        else {
                            continue;
                        };
                        let at = Instant::now();
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        for e in &block.events {
                            let (attr, ok, prefix) = match e.kind.as_str() {
                                "key_ready" => ("key_id", true, "key"),
                                "key_error" => ("key_id", false, "key"),
                                "sign_done" => ("request_id", true, "sign"),
                                "sign_failed" => ("request_id", false, "sign"),
                                _ => continue,
                            };
                            let id = e.attributes.iter().find_map(|a| {
                                (a.key_bytes() == attr.as_bytes())
                                    .then(|| String::from_utf8_lossy(a.value_bytes()).into_owned())
                            });
                            if let Some(id) = id {
                                seen.entry(format!("{prefix}:{id}"))
                                    .or_insert(Outcome { at, ok });
                            }
                        }
                    }
                })?
        };
        Ok(Outcomes {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// The outcome of `key:<id>` or `sign:<id>`, if seen.
    pub fn get(&self, id: &str) -> Option<Outcome> {
        self.lock().get(id).copied()
    }

    /// How many of `ids` have an outcome.
    pub fn count<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let seen = self.lock();
        ids.into_iter().filter(|id| seen.contains_key(*id)).count()
    }

    /// End-to-end latencies (µs, submission → outcome seen) of the `sent` requests that ended
    /// well, and how many ended in error or are still unseen.
    pub fn latencies(&self, sent: &[(String, Instant)]) -> (Vec<u64>, usize, usize) {
        let seen = self.lock();
        let (mut ok, mut failed, mut missing) = (Vec::new(), 0, 0);
        for (id, t0) in sent {
            match seen.get(id) {
                Some(o) if o.ok => ok.push(o.at.saturating_duration_since(*t0).as_micros() as u64),
                Some(_) => failed += 1,
                None => missing += 1,
            }
        }
        (ok, failed, missing)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Outcome>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Outcomes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
