//! The TCP and TLS mapping: each frame preceded by a 4-byte big-endian
//! length (`docs/PROTOCOL.md` §2.1).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tether_proto::frame::{stream_frame_len, LENGTH_PREFIX};
use tether_proto::Frame;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::{Io, RecvError};

/// Bytes asked of the socket per read when no larger frame is pending.
const READ_CHUNK: usize = 1024;

pub(crate) struct StreamTransport {
    io: Io,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    wpos: usize,
}

impl StreamTransport {
    pub(crate) fn new(io: Io) -> Self {
        StreamTransport { io, rbuf: BytesMut::new(), wbuf: Vec::new(), wpos: 0 }
    }

    pub(crate) fn io(&self) -> &Io {
        &self.io
    }

    pub(crate) fn io_mut(&mut self) -> &mut Io {
        &mut self.io
    }

    pub(crate) fn queue(&mut self, frame: &Frame) {
        frame.encode_length_prefixed(&mut self.wbuf);
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        if !self.wbuf.is_empty() {
            // Everything written: an idle connection holds no write buffer.
            self.wpos = 0;
            self.wbuf = Vec::new();
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>, max_frame: u32) -> Poll<Result<Bytes, RecvError>> {
        loop {
            let want = match stream_frame_len(&self.rbuf, max_frame)? {
                Some(len) if self.rbuf.len() >= LENGTH_PREFIX + len => {
                    let frame = Bytes::copy_from_slice(&self.rbuf[LENGTH_PREFIX..LENGTH_PREFIX + len]);
                    self.rbuf.advance(LENGTH_PREFIX + len);
                    if self.rbuf.is_empty() {
                        // Nothing pending: an idle connection holds no read
                        // buffer (the next read takes a fresh one).
                        self.rbuf = BytesMut::new();
                    }
                    return Poll::Ready(Ok(frame));
                }
                Some(len) => LENGTH_PREFIX + len - self.rbuf.len(),
                None => LENGTH_PREFIX - self.rbuf.len(),
            };
            let n = if self.rbuf.is_empty() {
                // Waiting for the next frame, as an idle connection does
                // between heartbeats: read into the stack, so that no heap
                // buffer is held while the read is pending.
                let mut chunk = [0u8; READ_CHUNK];
                let mut rb = ReadBuf::new(&mut chunk);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
                self.rbuf.extend_from_slice(rb.filled());
                rb.filled().len()
            } else {
                self.rbuf.reserve(want.max(READ_CHUNK));
                ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf))?
            };
            if n == 0 {
                let what =
                    if self.rbuf.is_empty() { "the peer closed the connection" } else { "connection closed mid-frame" };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, what).into()));
            }
        }
    }
}
