//! One transport: a TCP, TLS, WebSocket or secure WebSocket connection that
//! carries whole tether frames (`docs/PROTOCOL.md` §2).
//!
//! A [`Transport`] is driven by polling, never by `async fn`s that own a
//! borrow across an `.await`: the owner calls [`Transport::poll_io`], which
//! writes what is queued and reads the next frame in one step. Every piece
//! of state lives in the struct, so dropping the future that polls it (a
//! `select!` branch losing) loses nothing. Buffers start small and shrink
//! back after a large frame, so an idle connection costs little memory.

pub(crate) mod http;
pub mod origin;
pub mod proxied;
pub mod server_tls;
mod stream;
pub(crate) mod ws;

pub use origin::Origins;
pub use proxied::TrustedProxies;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tether_proto::{DecodeError, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) use stream::StreamTransport;
pub(crate) use ws::{WsStream, WsTransport};

/// The byte stream under a transport: plain TCP or TLS over TCP.
pub enum Io {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, client side.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS, server side (rustls's unbuffered API: no buffers while idle).
    ServerTls(Box<server_tls::ServerTlsStream>),
}

impl Io {
    /// The TCP socket underneath, for tuning and reading options back.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::ClientTls(s) => s.get_ref().0,
            Io::ServerTls(s) => s.tcp(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Which mapping a transport uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Length-prefixed frames over TCP.
    Tcp,
    /// Length-prefixed frames over TLS.
    Tls,
    /// One frame per binary WebSocket message.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Kind {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.scheme())
    }
}

/// Why reading a transport stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The peer sent bytes that are not a frame; close with its code.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The connection failed or was closed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A connection carrying tether frames.
pub struct Transport {
    inner: Inner,
    kind: Kind,
    /// Largest frame accepted from the peer.
    max_frame: u32,
}

enum Inner {
    Stream(StreamTransport),
    Ws(Box<WsTransport>),
    Http(Box<http::HttpTransport>),
}

impl Transport {
    pub(crate) fn stream(io: Io, max_frame: u32) -> Self {
        let kind = if matches!(io, Io::Plain(_)) { Kind::Tcp } else { Kind::Tls };
        Transport { inner: Inner::Stream(StreamTransport::new(io)), kind, max_frame }
    }

    pub(crate) fn ws(ws: WsStream, tls: bool, max_frame: u32) -> Self {
        let kind = if tls { Kind::Wss } else { Kind::Ws };
        Transport { inner: Inner::Ws(Box::new(WsTransport::new(ws))), kind, max_frame }
    }

    pub(crate) fn http(t: http::HttpTransport, tls: bool, max_frame: u32) -> Self {
        let kind = if tls { Kind::Wss } else { Kind::Ws };
        Transport { inner: Inner::Http(Box::new(t)), kind, max_frame }
    }

    /// True for the HTTP fallback (PROTOCOL §2.4), reported as the
    /// WebSocket listener's kind.
    pub fn is_http_fallback(&self) -> bool {
        matches!(self.inner, Inner::Http(_))
    }

    /// Which mapping this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Changes the largest frame accepted from the peer (after negotiation).
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// The TCP socket underneath, when reachable (not after a WebSocket
    /// upgrade on the server, where hyper owns it).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.inner {
            Inner::Stream(s) => Some(s.io().tcp()),
            Inner::Ws(w) => w.tcp(),
            Inner::Http(h) => Some(h.tcp()),
        }
    }

    /// Queues one frame for writing; [`Transport::poll_io`] writes it.
    pub fn queue(&mut self, frame: &Frame) {
        match &mut self.inner {
            Inner::Stream(s) => s.queue(frame),
            Inner::Ws(w) => w.queue(frame),
            Inner::Http(h) => h.queue(frame),
        }
    }

    /// True while queued bytes are not yet written.
    pub fn has_pending(&self) -> bool {
        match &self.inner {
            Inner::Stream(s) => s.has_pending(),
            Inner::Ws(w) => w.has_pending(),
            Inner::Http(h) => h.has_pending(),
        }
    }

    /// Writes what is queued (as far as the socket takes it), then reads:
    /// ready with the next whole frame, or with the error that ended the
    /// transport. A clean end of stream is `Io(UnexpectedEof)`.
    pub fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, RecvError>> {
        let max = self.max_frame;
        match &mut self.inner {
            Inner::Stream(s) => {
                if let Poll::Ready(Err(e)) = s.poll_write(cx) {
                    return Poll::Ready(Err(e.into()));
                }
                s.poll_recv(cx, max)
            }
            Inner::Ws(w) => {
                if let Poll::Ready(Err(e)) = w.poll_write(cx) {
                    return Poll::Ready(Err(e.into()));
                }
                w.poll_recv(cx, max)
            }
            Inner::Http(h) => {
                if let Poll::Ready(Err(e)) = h.poll_write(cx) {
                    return Poll::Ready(Err(e.into()));
                }
                h.poll_recv(cx, max)
            }
        }
    }

    /// Writes everything queued and flushes it.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Stream(s) => s.poll_write(cx),
            Inner::Ws(w) => w.poll_write(cx),
            Inner::Http(h) => h.poll_write(cx),
        }
    }

    /// Flushes what is queued, then closes the connection cleanly.
    pub async fn close(mut self) {
        if let Inner::Http(h) = &mut self.inner {
            h.queue_end();
        }
        let _ = std::future::poll_fn(|cx| self.poll_flush(cx)).await;
        match &mut self.inner {
            Inner::Stream(s) => {
                let _ = tokio::io::AsyncWriteExt::shutdown(s.io_mut()).await;
            }
            Inner::Ws(w) => w.close().await,
            Inner::Http(h) => {
                let _ = tokio::io::AsyncWriteExt::shutdown(h.io_mut()).await;
            }
        }
    }

    /// Waits for the next frame (writing what is queued meanwhile).
    pub async fn recv(&mut self) -> Result<Bytes, RecvError> {
        std::future::poll_fn(|cx| self.poll_io(cx)).await
    }

    /// Queues a frame and writes it out.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.queue(frame);
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// Flushes a frame and closes the transport, giving up after `limit` (a
/// peer that does not read must not hold a task forever).
pub(crate) async fn close_with(mut t: Transport, frame: Option<Frame>, limit: std::time::Duration) {
    if let Some(f) = frame {
        t.queue(&f);
    }
    let _ = tokio::time::timeout(limit, t.close()).await;
}
