//! Wire codec of the MPC request-response protocol.
//!
//! A request is one frame: a 4-byte big-endian length, then that many bytes (a batch of
//! messages, split by the event loop). The
//! response is a one-byte ack, written only after the receiver queued the message for delivery,
//! so a stream that ends without it means "not delivered" and the sender retries. Lengths above
//! the configured maximum are refused on write and on read; a reader never allocates the claimed
//! length up front, only what actually arrives.
//!
//! Every stream being read counts its claimed length against one [`ReadBudget`] shared by all
//! connections: a frame that does not fit is refused (its sender retries later), so however
//! many streams peers open, frames being read never hold more than the budget in memory.

use std::{
    io,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};

/// Protocol name negotiated on every stream.
pub(super) const PROTOCOL: StreamProtocol = StreamProtocol::new("/seqmpc/mpc/2");

/// The ack byte; anything else in its place is a protocol error.
const ACK: u8 = 0xA5;

/// Largest buffer reserved before payload bytes arrive.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes of frames being read at once, over every stream of every connection.
pub(super) const READ_BUDGET_BYTES: usize = 256 * 1024 * 1024;

/// A byte budget shared by the streams being read.
#[derive(Debug)]
pub(super) struct ReadBudget {
    in_use: AtomicUsize,
    max: usize,
}

/// Bytes reserved from a [`ReadBudget`], given back on drop.
pub(super) struct Reserved<'a> {
    budget: &'a ReadBudget,
    len: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.len, Ordering::AcqRel);
    }
}

impl ReadBudget {
    /// A budget of `max` bytes.
    pub(super) fn new(max: usize) -> Self {
        Self {
            in_use: AtomicUsize::new(0),
            max,
        }
    }

    /// Reserves `len` bytes, or None if they do not fit now.
    pub(super) fn reserve(&self, len: usize) -> Option<Reserved<'_>> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(len).filter(|n| *n <= self.max)
            })
            .ok()
            .map(|_| Reserved { budget: self, len })
    }
}

/// Length-prefixed raw bytes, capped at `max` on both sides.
#[derive(Clone, Debug)]
pub(super) struct MpcCodec {
    max: usize,
    budget: Arc<ReadBudget>,
}

impl MpcCodec {
    /// A codec refusing payloads above `max` bytes (`max` must fit a `u32`), reading within a
    /// budget of [`READ_BUDGET_BYTES`].
    pub(super) fn new(max: usize) -> Self {
        Self::with_budget(max, READ_BUDGET_BYTES)
    }

    /// A codec reading at most `budget` bytes of frames at once.
    pub(super) fn with_budget(max: usize, budget: usize) -> Self {
        Self {
            max,
            budget: Arc::new(ReadBudget::new(budget)),
        }
    }
}

/// A frame longer than the limit (reported inside the `io::Error`, on that stream only).
#[derive(Debug, thiserror::Error)]
#[error("frame of {len} bytes exceeds the limit of {max} bytes")]
pub(super) struct FrameTooLarge {
    /// Claimed or actual length.
    pub len: u64,
    /// The configured limit.
    pub max: usize,
}

impl request_response::Codec for MpcCodec {
    type Protocol = StreamProtocol;
    type Request = Arc<Vec<u8>>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut prefix = [0u8; 4];
        io.read_exact(&mut prefix).await?;
        let len = u32::from_be_bytes(prefix);
        let max = self.max;
        let Some(len) = usize::try_from(len).ok().filter(|l| *l <= max) else {
            // The peer is registered (the gate admitted it) but misbehaving or misconfigured.
            tracing::warn!(len, max, "refusing inbound frame above the size limit");
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                FrameTooLarge {
                    len: len.into(),
                    max,
                },
            ));
        };
        let Some(_reserved) = self.budget.reserve(len) else {
            tracing::debug!(
                len,
                "inbound read budget exhausted; frame refused (its sender retries)"
            );
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("inbound read budget exhausted: frame of {len} bytes refused"),
            ));
        };
        let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
        // `take` bounds the read; the buffer grows only as bytes arrive.
        io.take(len as u64).read_to_end(&mut buf).await?;
        if buf.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("frame truncated: {} of {len} bytes", buf.len()),
            ));
        }
        Ok(Arc::new(buf))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await?;
        if ack != [ACK] {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad ack byte"));
        }
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let len = u32::try_from(req.len())
            .ok()
            .filter(|_| req.len() <= self.max)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    FrameTooLarge {
                        len: req.len() as u64,
                        max: self.max,
                    },
                )
            })?;
        // One buffer, one write: one yamux frame for the usual small message.
        let mut frame = Vec::with_capacity(4 + req.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&req);
        io.write_all(&frame).await?;
        io.flush().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[ACK]).await?;
        io.flush().await
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn codec__should_roundtrip_request_and_ack() {
        let mut c = MpcCodec::new(1024);
        let mut wire = Cursor::new(Vec::new());
        block_on(c.write_request(&PROTOCOL, &mut wire, Arc::new(vec![1, 2, 3]))).unwrap();
        assert_eq!(wire.get_ref(), &[0, 0, 0, 3, 1, 2, 3]);
        wire.set_position(0);
        let got = block_on(c.read_request(&PROTOCOL, &mut wire)).unwrap();
        assert_eq!(*got, vec![1, 2, 3]);

        let mut wire = Cursor::new(Vec::new());
        block_on(c.write_response(&PROTOCOL, &mut wire, ())).unwrap();
        wire.set_position(0);
        block_on(c.read_response(&PROTOCOL, &mut wire)).unwrap();
    }

    #[test]
    fn codec__should_refuse_oversized_frame_without_reading_it() {
        let mut c = MpcCodec::new(1024);
        // Claims 4 GiB - 1; only the prefix is present, so any attempt to read or allocate the
        // claimed length would show as EOF or an abort instead of InvalidData.
        let mut wire = Cursor::new(vec![0xff, 0xff, 0xff, 0xff]);
        let e = block_on(c.read_request(&PROTOCOL, &mut wire)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("exceeds"), "{e}");
        assert_eq!(wire.position(), 4);

        let e = block_on(c.write_request(
            &PROTOCOL,
            &mut Cursor::new(Vec::new()),
            Arc::new(vec![0; 1025]),
        ))
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn codec__should_refuse_a_frame_beyond_the_shared_read_budget_until_it_frees() {
        let mut c = MpcCodec::with_budget(1024, 10);
        let frame = || Cursor::new(vec![0, 0, 0, 5, 1, 2, 3, 4, 5]);
        // Another stream holds 8 of the 10 bytes: a 5-byte frame does not fit.
        let budget = Arc::clone(&c.budget);
        let held = budget.reserve(8).unwrap();
        let e = block_on(c.read_request(&PROTOCOL, &mut frame())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
        assert!(e.to_string().contains("budget"), "{e}");
        drop(held);
        // Freed: it fits, and a read gives its bytes back when done.
        let got = block_on(c.read_request(&PROTOCOL, &mut frame())).unwrap();
        assert_eq!(*got, vec![1, 2, 3, 4, 5]);
        assert_eq!(budget.in_use.load(Ordering::Acquire), 0);
        let _ = block_on(c.read_request(&PROTOCOL, &mut frame())).unwrap();
    }

    #[test]
    fn codec__should_reject_truncated_frame_and_missing_ack() {
        let mut c = MpcCodec::new(1024);
        let mut wire = Cursor::new(vec![0, 0, 0, 10, 1, 2]);
        let e = block_on(c.read_request(&PROTOCOL, &mut wire)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        let e = block_on(c.read_response(&PROTOCOL, &mut Cursor::new(Vec::new()))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = block_on(c.read_response(&PROTOCOL, &mut Cursor::new(vec![0]))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
