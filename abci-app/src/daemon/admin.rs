//! The running node's operator socket: `HOME/admin.sock`, a Unix socket of mode 0600, so only
//! the node's own user reaches it (no network exposure, no extra credential).
//!
//! `mpcd rotate-master-key` and `mpcd backup` talk to it when the node runs (the key store is
//! then locked by the node): the node's own store thread moves to a fresh master key and data
//! key (every value re-sealed), or writes the encrypted backup, between two other store commands, so signing
//! goes on. With no node listening the commands open the store themselves (offline).
//!
//! One request per connection, one JSON line each way: `{"op":"rotate-master-key"}` or
//! `{"op":"backup","out":"<path>"}`, answered `{"ok":true,...}` or `{"ok":false,"error":"..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seqmpc_module::store::StoreHandle;

use super::master_source::MasterKeySource;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// File name of the socket in the node home.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;
/// How long a connection may take to send its request line.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the node's answer (a backup of a large store takes a while).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// An operator request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Re-wrap the data key under a fresh master key (written to `HOME/master.key`).
    RotateMasterKey,
    /// Write an encrypted backup of the key store to `out` (a new file).
    Backup {
        /// The file to create.
        out: PathBuf,
    },
}

/// Errors of the operator socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The socket cannot be set up or used.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The node answered with something that is not a JSON answer.
    #[error("admin socket {path}: bad answer: {reason}")]
    BadAnswer {
        /// The socket path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node refused or failed the request.
    #[error("the running node: {0}")]
    Failed(String),
}

/// Listens on `home/admin.sock` (replacing a stale socket file) and serves requests with the
/// node's `store`; `master_key` is where the master key comes from. Runs until the runtime
/// stops.
pub async fn serve(
    home: &Path,
    master_key: MasterKeySource,
    store: StoreHandle,
) -> Result<(), AdminError> {
    let path = home.join(ADMIN_SOCKET);
    let io = |source| AdminError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    // 0600 from the start: bound under a temporary name, restricted, then renamed into place,
    // so no other user can connect in between.
    let tmp = path.with_extension(format!("sock.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    std_listener.set_nonblocking(true).map_err(io)?;
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(io)?;
    // Only this node's user may operate it (the file mode says so too; this holds even if
    // someone loosens it).
    let owner = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&path).map_err(io)?.uid()
    };
    tracing::info!(path = %path.display(), "operator socket listening");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "operator socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "operator socket: connection of another user refused"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "operator socket: peer credentials unknown; refused");
                continue;
            }
        }
        let (store, master_key) = (store.clone(), master_key.clone());
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = tokio::io::BufReader::new(rd).take(MAX_REQUEST as u64);
            let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, rd.read_line(&mut line)).await;
            let answer = match read {
                Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handle(req, &master_key, &store).await,
                    Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
                },
                Ok(Err(e)) => {
                    json!({"ok": false, "error": format!("cannot read the request: {e}")})
                }
                Err(_) => json!({"ok": false, "error": "no request line within 5 s"}),
            };
            let mut out = answer.to_string();
            out.push('\n');
            if let Err(e) = wr.write_all(out.as_bytes()).await {
                tracing::warn!(error = %e, "operator socket: cannot answer");
            }
        });
    }
}

async fn handle(req: Request, master_key: &MasterKeySource, store: &StoreHandle) -> Value {
    tracing::info!(?req, "operator request");
    let result = match &req {
        Request::RotateMasterKey => match master_key.key_file() {
            None => return json!({"ok": false, "error": MasterKeySource::cannot_rotate()}),
            Some(file) => store
                .rotate_master_key(file.to_owned())
                .await
                .map(|()| json!({"ok": true, "rotated": true, "online": true, "master_key": file})),
        },
        Request::Backup { out } => store.write_backup(out.clone()).await.map(|s| {
            json!({"ok": true, "online": true, "backup": out, "records": s.records,
                "prime_sets": s.prime_sets, "bytes": s.bytes,
                "needs_master_key": master_key.describe()})
        }),
    };
    result.unwrap_or_else(|e| {
        tracing::warn!(?req, error = %e, "operator request failed");
        json!({"ok": false, "error": e.to_string()})
    })
}

/// Sends `req` to the node running in `home`. `Ok(None)`: no node listens there (no socket, or
/// a stale one), so the caller works offline.
pub fn call(home: &Path, req: &Request) -> Result<Option<Value>, AdminError> {
    let path = home.join(ADMIN_SOCKET);
    let io = |source| AdminError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| AdminError::BadAnswer {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| AdminError::BadAnswer {
        path: path.clone(),
        reason: format!("{e}: {answer:?}"),
    })?;
    if v["ok"] != true {
        return Err(AdminError::Failed(
            v["error"].as_str().unwrap_or("unknown error").to_owned(),
        ));
    }
    Ok(Some(v))
}
