//! `/websocket`: JSON-RPC over a WebSocket, as CometBFT serves it. Every method of the HTTP
//! RPC works, plus:
//! - `subscribe {query}`: answers `{}`, then sends each matching event as a message with the
//!   subscribe request's id and `result: {query, data, events}` (see [`super::events`]);
//! - `unsubscribe {query}` and `unsubscribe_all`: answer `{}`.
//!
//! Bounds, as CometBFT's defaults: at most [`MAX_CLIENTS`] connections and
//! [`MAX_SUBSCRIPTIONS_PER_CLIENT`] subscriptions each, messages of at most
//! [`super::MAX_BODY_BYTES`], and at most [`CALLS_PER_CLIENT`] calls running per connection
//! (further requests wait to be read). A client that does not read its events fast enough
//! ([`OUT_QUEUE`] messages behind, or [`BLOCK_BACKLOG`] blocks behind) is told so and
//! disconnected, so it never holds memory or slows the others.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Semaphore};

use super::events::{self, BlockEvent, Filter};
use super::{handle_one, json_response, ok_json, Rpc, RpcError, MAX_BODY_BYTES};
use crate::sequencer::state::Shared;

/// Most open `/websocket` connections (CometBFT's `max_subscription_clients`).
pub const MAX_CLIENTS: usize = 100;
/// Most subscriptions per connection (CometBFT's `max_subscriptions_per_client`).
pub const MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 5;
/// Calls running at once per connection.
pub const CALLS_PER_CLIENT: usize = 8;
/// Messages queued for one connection before it counts as too slow.
pub const OUT_QUEUE: usize = 1000;
/// Committed blocks queued for subscribers before a slow one is dropped.
pub const BLOCK_BACKLOG: usize = 256;

/// One of the [`MAX_CLIENTS`] connection slots, given back when dropped: when the connection
/// ends, or when its upgrade fails and axum drops the callback that holds it.
struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    fn take(clients: &Arc<AtomicUsize>) -> Option<ClientSlot> {
        let slot = ClientSlot(clients.clone());
        (clients.fetch_add(1, Ordering::AcqRel) < MAX_CLIENTS).then_some(slot)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /websocket`: upgrades, unless [`MAX_CLIENTS`] are connected.
pub(super) async fn upgrade(State(rpc): State<Rpc>, ws: WebSocketUpgrade) -> Response {
    let Some(slot) = ClientSlot::take(&rpc.ws_clients) else {
        let e = RpcError::internal(format!("max_subscription_clients {MAX_CLIENTS} reached"));
        return json_response(503, &e.to_json(&Value::Null));
    };
    ws.max_message_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| async move {
            serve(&rpc, socket).await;
            drop(slot);
        })
}

/// One subscription of a connection.
struct Subscription {
    query: String,
    filter: Filter,
    /// The subscribe request's id: events carry it.
    id: Value,
}

/// Why a connection ends.
enum End {
    /// The client closed it or the socket failed.
    Gone,
    /// The client fell behind its events.
    TooSlow,
    /// The server stops.
    Shutdown,
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

async fn serve(rpc: &Rpc, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
    let mut subs: Vec<Subscription> = Vec::new();
    let mut blocks = rpc.blocks.subscribe();
    let calls = Arc::new(Semaphore::new(CALLS_PER_CLIENT));
    let writer = async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    };
    tokio::pin!(writer);
    let end = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Err(end) = on_request(rpc, &mut subs, &out, &calls, t.as_str()).await {
                        break end;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = RpcError::invalid_request("send JSON-RPC as text".to_owned());
                    if out.try_send(text(&e.to_json(&Value::Null))).is_err() {
                        break End::TooSlow;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Gone,
            },
            block = blocks.recv() => match block {
                Ok(events) => {
                    if !publish(&events, &subs, &out) {
                        break End::TooSlow;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break End::TooSlow,
                Err(broadcast::error::RecvError::Closed) => break End::Shutdown,
            },
            () = &mut writer => break End::Gone,
        }
    };
    if let End::TooSlow | End::Shutdown = end {
        let reason = match end {
            End::TooSlow => "client is not pulling messages fast enough",
            _ => "server shutting down",
        };
        // Tell each subscription, then close; the writer may be stuck on a full queue, so do
        // not wait for it long.
        let _ = out.try_send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: Utf8Bytes::from(reason),
        })));
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    }
}

/// Sends every event of one block that a subscription selects. False when the connection's
/// queue is full.
fn publish(events: &[BlockEvent], subs: &[Subscription], out: &mpsc::Sender<Message>) -> bool {
    for event in events {
        for s in subs.iter().filter(|s| s.filter.matches(event)) {
            let msg = events::message(&s.id, &s.query, event);
            if out.try_send(text(&msg)).is_err() {
                return false;
            }
        }
    }
    true
}

/// Handles one request text: subscriptions here, every other method on a blocking thread
/// whose answer goes to `out` when ready.
async fn on_request(
    rpc: &Rpc,
    subs: &mut Vec<Subscription>,
    out: &mpsc::Sender<Message>,
    calls: &Arc<Semaphore>,
    t: &str,
) -> Result<(), End> {
    let req: Value = match serde_json::from_str(t) {
        Ok(v) => v,
        Err(e) => {
            let e = RpcError::parse_error(e.to_string());
            return out
                .try_send(text(&e.to_json(&Value::Null)))
                .map_err(|_| End::TooSlow);
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let query = || -> Result<String, RpcError> {
        let p = req.get("params");
        p.and_then(|p| p.get("query").or_else(|| p.get(0)))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| RpcError::invalid_params("missing param \"query\"".to_owned()))
    };
    let answer = match method {
        "subscribe" => query().and_then(|q| {
            if subs.iter().any(|s| s.query == q) {
                return Err(RpcError::internal("already subscribed".to_owned()));
            }
            if subs.len() >= MAX_SUBSCRIPTIONS_PER_CLIENT {
                return Err(RpcError::internal(format!(
                    "max_subscriptions_per_client {MAX_SUBSCRIPTIONS_PER_CLIENT} reached"
                )));
            }
            let filter: Filter = q
                .parse()
                .map_err(|e: events::BadQuery| RpcError::invalid_params(e.to_string()))?;
            subs.push(Subscription {
                query: q,
                filter,
                id: id.clone(),
            });
            Ok(json!({}))
        }),
        "unsubscribe" => query().and_then(|q| {
            let before = subs.len();
            subs.retain(|s| s.query != q);
            if subs.len() == before {
                return Err(RpcError::internal("subscription not found".to_owned()));
            }
            Ok(json!({}))
        }),
        "unsubscribe_all" => {
            subs.clear();
            Ok(json!({}))
        }
        _ => {
            // Backpressure: a connection with CALLS_PER_CLIENT calls running is not read.
            let Ok(permit) = calls.clone().acquire_owned().await else {
                return Err(End::Shutdown);
            };
            let (rpc, out) = (rpc.clone(), out.clone());
            tokio::spawn(async move {
                let answer = tokio::task::spawn_blocking(move || {
                    handle_one(&rpc.shared, &rpc.rpc_addr, req)
                })
                .await
                .unwrap_or_else(|_| {
                    RpcError::internal("the call failed".to_owned()).to_json(&Value::Null)
                });
                drop(permit);
                let _ = out.send(text(&answer)).await;
            });
            return Ok(());
        }
    };
    let msg = match answer {
        Ok(v) => ok_json(&id, v),
        Err(e) => e.to_json(&id),
    };
    out.try_send(text(&msg)).map_err(|_| End::TooSlow)
}

/// Follows the chain: sends the events of each newly committed block, in order and built once
/// for every connection, to `blocks` (the subscribers), until `stop` is set.
pub(super) fn spawn_block_pump(
    shared: Arc<Shared>,
    blocks: broadcast::Sender<Arc<[BlockEvent]>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rpc-events".to_owned())
        .spawn(move || {
            let mut sent = shared.view().height;
            while !stop.load(Ordering::Acquire) {
                shared.wait_until(Duration::from_millis(200), |v| v.height > sent);
                let height = shared.view().height;
                while sent < height {
                    let next = sent.saturating_add(1);
                    if blocks.receiver_count() > 0 {
                        match shared.block_at(next) {
                            Ok(b) => {
                                let _ = blocks.send(events::of_block(&shared, &b).into());
                            }
                            Err(e) => tracing::warn!(height = next, error = %e, "events: block"),
                        }
                    }
                    sent = next;
                }
            }
        })
        .context("spawning the RPC event thread")
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn client_slot__should_cap_connections_and_come_back_however_dropped() {
        let clients = Arc::new(AtomicUsize::new(0));
        let mut held: Vec<ClientSlot> = (0..MAX_CLIENTS)
            .map(|_| ClientSlot::take(&clients).unwrap_or_else(|| panic!("a free slot")))
            .collect();
        assert!(ClientSlot::take(&clients).is_none(), "one over the cap");
        assert_eq!(clients.load(Ordering::Acquire), MAX_CLIENTS);
        // A slot held by an upgrade callback that never runs comes back when it is dropped.
        let callback = {
            let slot = held.pop();
            move || drop(slot)
        };
        drop(callback);
        assert!(ClientSlot::take(&clients).is_some());
        held.clear();
        assert_eq!(clients.load(Ordering::Acquire), 0);
    }
}
