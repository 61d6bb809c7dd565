//! TEST ONLY (cargo feature `fault-injection`, fault `partition-file`; see
//! `seqmpc_module::fault`): cuts a node's ABCI server off from the consensus engine while the
//! node is partitioned.
//!
//! The ABCI server (tendermint-abci, which offers no way to close a connection from the
//! application) then listens on an ephemeral loopback port, and [`relay_abci`] listens on the
//! configured ABCI address and relays each connection to it byte for byte. When the partition
//! starts, the relay closes every connection it carries; while it lasts, it closes every new
//! connection at once. The engine sees an app whose connection failed: the dev sequencer marks
//! it down, retries, and once the partition heals replays the blocks it missed (CometBFT would
//! block-sync them the same way).

use std::collections::BTreeMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use seqmpc_module::fault::{Partition, PARTITION_POLL};
use tracing::{debug, info, warn};

/// Open relayed connections by number: (engine side, server side).
type Conns = Arc<Mutex<BTreeMap<u64, (TcpStream, TcpStream)>>>;

/// Listens on `listen` and relays each connection to the ABCI server at `server`, cutting
/// every connection while `partition` is on (see the module docs). Returns once listening;
/// the relay runs on threads of its own for the life of the process.
pub fn relay_abci(listen: &str, server: SocketAddr, partition: Partition) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    info!(%listen, %server, "FAULT INJECTION: the ABCI server is reached through a partition relay");
    let conns: Conns = Arc::default();
    let watched = Arc::clone(&conns);
    let cut = partition.clone();
    std::thread::Builder::new()
        .name("abci-cut".into())
        .spawn(move || loop {
            std::thread::sleep(PARTITION_POLL);
            if cut.is_on() {
                let open = std::mem::take(&mut *lock(&watched));
                if !open.is_empty() {
                    warn!(
                        connections = open.len(),
                        "FAULT INJECTION: partitioned: closing the ABCI connections"
                    );
                }
                for (engine, server) in open.values() {
                    let _ = engine.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                }
            }
        })?;
    std::thread::Builder::new()
        .name("abci-relay".into())
        .spawn(move || {
            let mut next = 0u64;
            for engine in listener.incoming() {
                let engine = match engine {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "ABCI relay: accept failed");
                        continue;
                    }
                };
                if partition.is_on() {
                    debug!("FAULT INJECTION: partitioned: ABCI connection refused");
                    let _ = engine.shutdown(Shutdown::Both);
                    continue;
                }
                next += 1;
                if let Err(e) = relay_one(next, engine, server, &conns) {
                    warn!(error = %e, "ABCI relay: cannot relay a connection");
                }
            }
        })?;
    Ok(())
}

/// Connects `engine` to the server and starts one copying thread per direction; whichever
/// ends first closes both sides.
fn relay_one(id: u64, engine: TcpStream, server: SocketAddr, conns: &Conns) -> io::Result<()> {
    let upstream = TcpStream::connect(server)?;
    // ABCI is request/response with small messages: no Nagle delay on either hop.
    engine.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    lock(conns).insert(id, (engine.try_clone()?, upstream.try_clone()?));
    for (mut from, mut to) in [
        (engine.try_clone()?, upstream.try_clone()?),
        (upstream, engine),
    ] {
        let conns = Arc::clone(conns);
        std::thread::Builder::new()
            .name("abci-relay-io".into())
            .spawn(move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                lock(&conns).remove(&id);
            })?;
    }
    Ok(())
}

fn lock(conns: &Conns) -> std::sync::MutexGuard<'_, BTreeMap<u64, (TcpStream, TcpStream)>> {
    conns.lock().unwrap_or_else(PoisonError::into_inner)
}
