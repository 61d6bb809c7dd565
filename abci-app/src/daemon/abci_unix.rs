//! The ABCI socket protocol on a Unix domain socket, as CometBFT's
//! `proxy_app = "unix:///path/to/abci.sock"` dials it: length-prefixed (uvarint) protobuf
//! `Request`s in, `Response`s out, one connection per CometBFT ABCI connection (consensus,
//! mempool, query, snapshot). tendermint-abci serves TCP only; this serves the same
//! [`Application`] on a socket file of mode 0600, so no other local user can drive the app.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use prost::Message as _;
use tendermint_abci::Application;
use tendermint_proto::v0_38::abci::{request, response, Request, Response, ResponseException};
use tracing::{info, warn};

/// Largest request accepted (a FinalizeBlock of a full block stays far below).
pub const MAX_REQUEST_BYTES: usize = 128 * 1024 * 1024;

/// Binds `path` (a stale socket file there is replaced) with mode 0600 from the start (bound
/// under a temporary name, restricted, then renamed into place) and serves `app` on it, one
/// thread per connection.
pub fn serve<A: Application>(path: &Path, app: A) -> io::Result<PathBuf> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    let shown = path.to_path_buf();
    std::thread::Builder::new()
        .name("abci-unix".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let app = app.clone();
                        let spawned = std::thread::Builder::new()
                            .name("abci-unix-conn".into())
                            .spawn(move || {
                                if let Err(e) = handle(stream, &app) {
                                    info!(error = %e, "ABCI connection closed");
                                }
                            });
                        if let Err(e) = spawned {
                            warn!(error = %e, "cannot serve an ABCI connection");
                        }
                    }
                    Err(e) => warn!(error = %e, "ABCI accept failed"),
                }
            }
        })?;
    Ok(shown)
}

/// Serves one connection until it closes or sends something that is not a request.
fn handle<A: Application>(mut stream: UnixStream, app: &A) -> io::Result<()> {
    let mut reader = io::BufReader::new(stream.try_clone()?);
    loop {
        let Some(len) = read_uvarint(&mut reader)? else {
            return Ok(()); // closed between messages
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_REQUEST_BYTES)
            .ok_or_else(|| bad(format!("request of {len} bytes exceeds the cap")))?;
        // Grown as bytes arrive: a length prefix alone reserves nothing.
        let mut buf = Vec::new();
        (&mut reader).take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(bad(format!(
                "request truncated: {} of {len} bytes",
                buf.len()
            )));
        }
        let req = Request::decode(buf.as_slice()).map_err(|e| bad(e.to_string()))?;
        let resp = dispatch(app, req);
        stream.write_all(&resp.encode_length_delimited_to_vec())?;
        stream.flush()?;
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A uvarint length prefix; None at a clean end of stream.
fn read_uvarint(r: &mut impl Read) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if r.read(&mut byte)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(bad("stream ended inside a length prefix".into()))
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(bad("length prefix longer than 10 bytes".into()))
}

/// One request to its `Application` method; an empty request gets an exception, not a panic.
fn dispatch<A: Application>(app: &A, req: Request) -> Response {
    use request::Value as Q;
    use response::Value as R;
    let value = match req.value {
        None => R::Exception(ResponseException {
            error: "empty ABCI request".into(),
        }),
        Some(Q::Echo(r)) => R::Echo(app.echo(r)),
        Some(Q::Flush(_)) => R::Flush(app.flush()),
        Some(Q::Info(r)) => R::Info(app.info(r)),
        Some(Q::InitChain(r)) => R::InitChain(app.init_chain(r)),
        Some(Q::Query(r)) => R::Query(app.query(r)),
        Some(Q::CheckTx(r)) => R::CheckTx(app.check_tx(r)),
        Some(Q::Commit(_)) => R::Commit(app.commit()),
        Some(Q::ListSnapshots(_)) => R::ListSnapshots(app.list_snapshots()),
        Some(Q::OfferSnapshot(r)) => R::OfferSnapshot(app.offer_snapshot(r)),
        Some(Q::LoadSnapshotChunk(r)) => R::LoadSnapshotChunk(app.load_snapshot_chunk(r)),
        Some(Q::ApplySnapshotChunk(r)) => R::ApplySnapshotChunk(app.apply_snapshot_chunk(r)),
        Some(Q::PrepareProposal(r)) => R::PrepareProposal(app.prepare_proposal(r)),
        Some(Q::ProcessProposal(r)) => R::ProcessProposal(app.process_proposal(r)),
        Some(Q::ExtendVote(r)) => R::ExtendVote(app.extend_vote(r)),
        Some(Q::VerifyVoteExtension(r)) => R::VerifyVoteExtension(app.verify_vote_extension(r)),
        Some(Q::FinalizeBlock(r)) => R::FinalizeBlock(app.finalize_block(r)),
    };
    Response { value: Some(value) }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;
    use tendermint_proto::v0_38::abci::{RequestEcho, RequestInfo};

    #[derive(Clone)]
    struct Echo;
    impl Application for Echo {
        fn info(&self, _: RequestInfo) -> tendermint_proto::v0_38::abci::ResponseInfo {
            tendermint_proto::v0_38::abci::ResponseInfo {
                data: "echo-app".into(),
                ..Default::default()
            }
        }
    }

    fn roundtrip(s: &mut UnixStream, req: &Request) -> Response {
        s.write_all(&req.encode_length_delimited_to_vec()).unwrap();
        let len = read_uvarint(s).unwrap().unwrap() as usize;
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).unwrap();
        Response::decode(buf.as_slice()).unwrap()
    }

    #[test]
    fn serve__should_answer_abci_requests_on_a_0600_socket_and_an_empty_one_with_an_exception() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abci.sock");
        std::fs::write(&path, b"stale").unwrap();
        serve(&path, Echo).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut s = UnixStream::connect(&path).unwrap();
        let r = roundtrip(
            &mut s,
            &Request {
                value: Some(request::Value::Echo(RequestEcho {
                    message: "hi".into(),
                })),
            },
        );
        assert!(matches!(r.value, Some(response::Value::Echo(e)) if e.message == "hi"));
        let r = roundtrip(
            &mut s,
            &Request {
                value: Some(request::Value::Info(RequestInfo::default())),
            },
        );
        assert!(matches!(r.value, Some(response::Value::Info(i)) if i.data == "echo-app"));
        // An empty request: an exception, and the connection still serves.
        let r = roundtrip(&mut s, &Request { value: None });
        assert!(
            matches!(r.value, Some(response::Value::Exception(_))),
            "{r:?}"
        );
        let r = roundtrip(
            &mut s,
            &Request {
                value: Some(request::Value::Flush(Default::default())),
            },
        );
        assert!(matches!(r.value, Some(response::Value::Flush(_))));
        // Garbage ends only that connection.
        let mut g = UnixStream::connect(&path).unwrap();
        g.write_all(&[0xff; 11]).unwrap();
        // A prefix claiming 100 MiB, then nothing: nothing reserved, only that connection ends.
        let mut big = UnixStream::connect(&path).unwrap();
        let mut prefix = Vec::new();
        prost::encoding::encode_varint(100 * 1024 * 1024, &mut prefix);
        big.write_all(&prefix).unwrap();
        drop(big);
        let mut s2 = UnixStream::connect(&path).unwrap();
        let r = roundtrip(
            &mut s2,
            &Request {
                value: Some(request::Value::Echo(RequestEcho {
                    message: "still".into(),
                })),
            },
        );
        assert!(matches!(r.value, Some(response::Value::Echo(e)) if e.message == "still"));
    }
}
