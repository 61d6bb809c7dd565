//! Result submission: signs the module's results with the node key and broadcasts them.
//!
//! One worker thread sends the queued txs in order. A heartbeat is queued only when none is
//! waiting already, so heartbeats never pile up in front of results while the RPC is slow or
//! unreachable. The worker then follows each result tx until it is in a block, and sends it
//! again if a mempool lost it or it failed on its sequence at delivery; what to do with each
//! answer is [`super::outbox`]'s, which the simulator runs too.
//! The worker reaches the chain through a port ([`ChainRpc`]); a test build may put faults in
//! front of it (`super::faulty_rpc`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use seqmpc_module::job::SubmitResult;
use seqmpc_proto::tx::{sign_tx, TxMsg};
use tracing::{debug, warn};

use crate::abci::tx_watch::{tx_hash, TxWatch};
use crate::chain::query::{AccountView, Query};
use crate::daemon::outbox::{Broadcast, Inclusion, Outbox, SEQUENCE_CODE};
use crate::daemon::rpc::{BroadcastResult, QueryResult, RpcClient, RpcError};

/// Depth of the submission queue.
pub const SUBMIT_QUEUE: usize = 100_000;

/// Wait at start before the first submission (a few blocks), see [`RpcSubmitter::spawn`].
pub const STARTUP_SETTLE: Duration = Duration::from_millis(1000);

/// Queues results for a worker thread that owns the node's sequence counter.
pub struct RpcSubmitter {
    tx: mpsc::SyncSender<TxMsg>,
    /// A heartbeat is queued and not sent yet.
    heartbeat_queued: Arc<AtomicBool>,
}

impl SubmitResult for RpcSubmitter {
    fn submit(&self, msg: TxMsg) {
        let heartbeat = matches!(msg, TxMsg::Heartbeat);
        if heartbeat && self.heartbeat_queued.swap(true, Ordering::AcqRel) {
            debug!("a heartbeat is still queued: this one is not needed");
            return;
        }
        if let Err(e) = self.tx.try_send(msg) {
            if heartbeat {
                self.heartbeat_queued.store(false, Ordering::Release);
            }
            warn!(error = %e, "result queue full or closed: result dropped (the chain deadline will end the session)");
        }
    }
}

/// What the worker needs of the chain's RPC: [`RpcClient`] in production; in a test build
/// possibly `super::faulty_rpc::FaultyRpc` in front of it (a partitioned node, lost txs).
pub trait ChainRpc: Send + 'static {
    /// `broadcast_tx_sync`.
    fn broadcast_tx_sync(&self, tx: &[u8]) -> Result<BroadcastResult, RpcError>;
    /// A tx's code and log once it is in a block (`None` before).
    fn tx_result(&self, hash_hex: &str) -> Result<Option<(u32, String)>, RpcError>;
    /// `abci_query` at the latest height.
    fn abci_query(&self, path: &str) -> Result<QueryResult, RpcError>;
    /// Returns once the RPC may be used (at once, unless a test partition holds it).
    fn wait(&self) {}
}

impl ChainRpc for RpcClient {
    fn broadcast_tx_sync(&self, tx: &[u8]) -> Result<BroadcastResult, RpcError> {
        RpcClient::broadcast_tx_sync(self, tx)
    }

    fn tx_result(&self, hash_hex: &str) -> Result<Option<(u32, String)>, RpcError> {
        RpcClient::tx_result(self, hash_hex)
    }

    fn abci_query(&self, path: &str) -> Result<QueryResult, RpcError> {
        RpcClient::abci_query(self, path)
    }
}

/// A [`ChainRpc`] whose inclusion answers come from the node's own app ([`TxWatch`]): every
/// tx is watched before it is broadcast (a block may hold it before the mempool's answer
/// comes back) and left again if the mempool refuses it, and `tx_result` reads what the app
/// recorded at Commit,
/// with no RPC call. A tx the watch forgot (older than [`crate::abci::tx_watch::FORGET_AFTER`])
/// is looked up through the RPC as before.
pub struct ConfirmLocally<R> {
    rpc: R,
    watch: TxWatch,
}

impl<R: ChainRpc> ConfirmLocally<R> {
    /// `rpc`, with inclusion read from `watch` (which the node's app feeds).
    pub fn new(rpc: R, watch: TxWatch) -> ConfirmLocally<R> {
        ConfirmLocally { rpc, watch }
    }
}

impl<R: ChainRpc> ChainRpc for ConfirmLocally<R> {
    fn broadcast_tx_sync(&self, tx: &[u8]) -> Result<BroadcastResult, RpcError> {
        let hash = tx_hash(tx);
        self.watch.watch(hash);
        let r = self.rpc.broadcast_tx_sync(tx);
        if !matches!(&r, Ok(r) if r.code == 0) {
            self.watch.unwatch(&hash);
        }
        r
    }

    fn tx_result(&self, hash_hex: &str) -> Result<Option<(u32, String)>, RpcError> {
        match self.watch.take(hash_hex) {
            Some(delivery) => Ok(delivery),
            None => self.rpc.tx_result(hash_hex),
        }
    }

    fn abci_query(&self, path: &str) -> Result<QueryResult, RpcError> {
        self.rpc.abci_query(path)
    }

    fn wait(&self) {
        self.rpc.wait()
    }
}

impl RpcSubmitter {
    /// Starts the worker. `first_sequence` is the node's next sequence on chain.
    pub fn spawn(
        key: SigningKey,
        chain_id: String,
        rpc: impl ChainRpc,
        first_sequence: u64,
    ) -> std::io::Result<RpcSubmitter> {
        let (tx, rx) = mpsc::sync_channel::<TxMsg>(SUBMIT_QUEUE);
        let heartbeat_queued = Arc::new(AtomicBool::new(false));
        let queued = heartbeat_queued.clone();
        std::thread::Builder::new()
            .name("submit".into())
            .spawn(move || {
                // A restarted node's previous process may have left txs in the mempool that
                // take sequences after `first_sequence`; a result sent at such a sequence would
                // pass CheckTx yet fail at delivery. Let them commit, then resync.
                std::thread::sleep(STARTUP_SETTLE);
                rpc.wait();
                let account = Query::Account(hex::encode(key.verifying_key().to_bytes()));
                let on_chain = committed_sequence(&rpc, &account);
                let mut w = Worker {
                    account,
                    key,
                    chain_id,
                    rpc: Box::new(rpc),
                    outbox: Outbox::new(on_chain.map_or(first_sequence, |c| c.max(first_sequence))),
                    start: Instant::now(),
                };
                loop {
                    match rx.recv_timeout(TICK) {
                        Ok(msg) => {
                            if matches!(msg, TxMsg::Heartbeat) {
                                queued.store(false, Ordering::Release);
                            }
                            w.submit(&msg, 0);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    w.confirm();
                }
            })?;
        Ok(RpcSubmitter {
            tx,
            heartbeat_queued,
        })
    }
}

/// How often the worker wakes without new results, to check the ones in flight.
const TICK: Duration = Duration::from_millis(500);
/// The submission thread's state: the node's outbox and the RPC it sends through.
struct Worker {
    key: SigningKey,
    chain_id: String,
    rpc: Box<dyn ChainRpc>,
    account: Query,
    outbox: Outbox,
    start: Instant,
}

impl Worker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks the result txs in flight ([`Outbox::due`]) and sends again those the outbox
    /// says are lost.
    fn confirm(&mut self) {
        let now = self.now_ms();
        let mut again = Vec::new();
        for hash in self.outbox.due(now) {
            let inclusion = match self.rpc.tx_result(&hash) {
                Ok(Some((code, log))) => {
                    if code == SEQUENCE_CODE {
                        warn!(%hash, %log, "result tx failed at delivery on its sequence");
                    } else if code != 0 {
                        warn!(%hash, code, %log, "result tx refused at delivery");
                    }
                    Inclusion::Delivered(code)
                }
                Ok(None) => Inclusion::NotYet,
                Err(e) => {
                    debug!(error = %e, "cannot check a result tx's inclusion; later");
                    Inclusion::Unknown
                }
            };
            match self.outbox.checked(&hash, inclusion, now) {
                Ok(Some(resend)) => again.push(resend),
                Ok(None) => {}
                Err(e) => warn!(%hash, "{e}"),
            }
        }
        for (msg, resends) in again {
            warn!(resends, "result tx in no block: sending it again");
            self.submit(&msg, resends);
        }
    }

    /// Signs `msg` and broadcasts it through the outbox ([`Outbox::send`]): after a sequence
    /// failure at delivery, from the chain's sequence; a few tries while the RPC is down.
    fn submit(&mut self, msg: &TxMsg, resends: u32) {
        let now = self.now_ms();
        let from = self.outbox.sequence();
        let (rpc, account) = (&*self.rpc, &self.account);
        let committed = || {
            let c = committed_sequence(rpc, account);
            match c {
                Some(to) => warn!(
                    from,
                    to, "a result tx failed on its sequence: signing from the chain's sequence"
                ),
                None => debug!("cannot read the account's sequence; later"),
            }
            c
        };
        let (key, chain_id) = (&self.key, &self.chain_id);
        let mut tries = 0u32;
        let attempt = |seq: u64| {
            rpc.wait();
            let tx = sign_tx(key, chain_id, seq, msg.clone());
            tries += 1;
            match rpc.broadcast_tx_sync(&tx) {
                Ok(r) if r.code == 0 => {
                    debug!(seq, "result tx accepted");
                    Broadcast::Accepted(r.hash)
                }
                Ok(r) if r.code == SEQUENCE_CODE => {
                    let expected = std::str::from_utf8(&r.data)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok());
                    if expected.is_none() {
                        warn!(log = %r.log, "sequence error without expected value");
                    }
                    Broadcast::WrongSequence(expected)
                }
                Ok(r) => {
                    warn!(code = r.code, log = %r.log, "result tx rejected");
                    Broadcast::Refused
                }
                Err(e) => {
                    warn!(error = %e, attempt = tries, "cannot reach the RPC; retrying");
                    std::thread::sleep(Duration::from_millis(250));
                    Broadcast::Unreachable
                }
            }
        };
        if !self.outbox.send(msg, resends, now, committed, attempt) {
            warn!("result tx given up after retries");
        }
    }
}

/// The sequence of `account` on chain, if the RPC answers.
fn committed_sequence(rpc: &dyn ChainRpc, account: &Query) -> Option<u64> {
    rpc.abci_query(&account.path())
        .ok()
        .filter(|q| q.code == 0)
        .and_then(|q| serde_json::from_slice::<AccountView>(&q.value).ok())
        .map(|a| a.sequence)
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A mempool whose block commits the tx before the broadcast's answer comes back (the
    /// node's app then records it at once), or that refuses it.
    struct FastChain {
        watch: TxWatch,
        code: u32,
    }

    impl ChainRpc for FastChain {
        fn broadcast_tx_sync(&self, tx: &[u8]) -> Result<BroadcastResult, RpcError> {
            if self.code == 0 {
                self.watch
                    .delivered(vec![(tx_hash(tx), (0, String::new()))]);
            }
            Ok(BroadcastResult {
                code: self.code,
                log: String::new(),
                data: Vec::new(),
                hash: hex::encode_upper(tx_hash(tx)),
            })
        }
        fn tx_result(&self, _: &str) -> Result<Option<(u32, String)>, RpcError> {
            Ok(Some((99, "asked the RPC".into())))
        }
        fn abci_query(&self, _: &str) -> Result<QueryResult, RpcError> {
            unreachable!("not asked")
        }
    }

    #[test]
    fn confirm_locally__should_see_a_tx_a_block_held_before_the_mempool_answered() {
        let watch = TxWatch::default();
        let rpc = ConfirmLocally::new(
            FastChain {
                watch: watch.clone(),
                code: 0,
            },
            watch.clone(),
        );
        let r = rpc.broadcast_tx_sync(b"tx").unwrap();
        assert_eq!(rpc.tx_result(&r.hash).unwrap(), Some((0, String::new())));
        // Refused by the mempool: not watched, so a later question goes to the RPC.
        let refusing = ConfirmLocally::new(
            FastChain {
                watch: watch.clone(),
                code: 6,
            },
            watch.clone(),
        );
        let r = refusing.broadcast_tx_sync(b"other").unwrap();
        assert!(watch.is_empty());
        assert_eq!(
            refusing.tx_result(&r.hash).unwrap(),
            Some((99, "asked the RPC".into()))
        );
    }
}
