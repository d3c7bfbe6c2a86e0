//! The WebSocket mapping: one frame per binary message, subprotocol
//! `tether.v1` (`docs/PROTOCOL.md` §2.2).
//!
//! Frames are read and written with yawc, chosen by measurement (see
//! `docs/DESIGN.md`): small buffers that shrink back after a large message.
//! The server side of the HTTP upgrade is done here with httparse rather
//! than through hyper, so the listener keeps the TCP socket (for tuning),
//! enforces the subprotocol, and spends no memory on an HTTP stack per
//! connection.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use sha1::{Digest, Sha1};
use tether_proto::{DecodeError, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yawc::{OpCode, Options, Role, WebSocket, WebSocketError};

use super::{Io, Origins, RecvError};

/// The WebSocket subprotocol every tether connection agrees on.
pub const SUBPROTOCOL: &str = "tether.v1";
/// Largest HTTP upgrade request head the server reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// yawc's read and write buffers start (and shrink back to) this size: an
/// idle connection holds two of them. Heartbeats and acks are a few dozen
/// bytes (a PING with its RTT payload, 2 + 9 + 13 + ~20); larger messages
/// grow the buffers for as long as they need.
const WS_BUFFER: usize = 64;
/// yawc's backpressure boundary: a write buffer that grew past it is given
/// back (to `WS_BUFFER`) once written, and frames collect in it up to this
/// many bytes between flushes. At 64, every burst's growth is given back:
/// measured (docs/PERFORMANCE.md, issue 16), a member of a room of 10 after
/// a burst of 100 messages holds 3.6 KiB instead of 5.9 with 1 KiB (which
/// kept whatever the buffer grew to below it), with the same fan-out
/// throughput and a lower median latency; a burst to one
/// session is written a frame per write (the kernel's autocorking still
/// coalesces segments).
const WS_BACKPRESSURE: usize = 64;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub(crate) type WsStream = WebSocket<Io>;

pub(crate) fn options(max_frame: u32) -> Options {
    // yawc's payload bound is exclusive; ours (max_frame) is inclusive.
    let max = max_frame as usize + 1;
    Options::default()
        .with_max_payload_read(max)
        .with_max_read_buffer(max)
        .with_read_buffer_capacity(WS_BUFFER)
        .with_write_buffer_capacity(WS_BUFFER)
        // yawc gives the write buffer back only once it grew past this (8 KiB
        // by default, which an idle member of a busy room kept for good).
        .with_backpressure_boundary(WS_BACKPRESSURE)
        .without_compression()
}

pub(crate) struct WsTransport {
    ws: WsStream,
    out: VecDeque<Bytes>,
    unflushed: bool,
}

impl WsTransport {
    pub(crate) fn new(ws: WsStream) -> Self {
        WsTransport { ws, out: VecDeque::new(), unflushed: false }
    }

    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        None
    }

    pub(crate) fn queue(&mut self, frame: &Frame) {
        self.out.push_back(Bytes::from(frame.to_vec()));
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.out.is_empty() || self.unflushed
    }

    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(front) = self.out.front() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_io)?;
            let msg = yawc::Frame::binary(front.clone());
            self.out.pop_front();
            Pin::new(&mut self.ws).start_send(msg).map_err(ws_io)?;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(ws_io)?;
            self.unflushed = false;
        }
        if self.out.capacity() > 0 {
            // Everything written: an idle connection holds no queue.
            self.out = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>, max_frame: u32) -> Poll<Result<Bytes, RecvError>> {
        loop {
            let msg = match ready!(self.ws.poll_next_frame(cx)) {
                Ok(m) => m,
                Err(WebSocketError::FrameTooLarge) => {
                    let e = DecodeError::FrameTooLarge { len: u64::from(max_frame) + 1, max: max_frame };
                    return Poll::Ready(Err(e.into()));
                }
                Err(e) => return Poll::Ready(Err(ws_io(e).into())),
            };
            match msg.opcode() {
                OpCode::Binary => {
                    let payload = msg.into_payload();
                    if payload.is_empty() {
                        return Poll::Ready(Err(DecodeError::Empty.into()));
                    }
                    if payload.len() > max_frame as usize {
                        let e = DecodeError::FrameTooLarge { len: payload.len() as u64, max: max_frame };
                        return Poll::Ready(Err(e.into()));
                    }
                    return Poll::Ready(Ok(payload));
                }
                OpCode::Text => {
                    let e = DecodeError::InvalidValue {
                        frame: 0,
                        field: "websocket message",
                        reason: "text message: tether frames travel in binary messages",
                    };
                    return Poll::Ready(Err(e.into()));
                }
                OpCode::Close => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the WebSocket");
                    return Poll::Ready(Err(e.into()));
                }
                _ => {} // ping/pong (answered by yawc), continuation (reassembled)
            }
        }
    }

    pub(crate) async fn close(&mut self) {
        let _ = self.ws.close().await;
    }
}

fn ws_io(e: WebSocketError) -> io::Error {
    match e {
        WebSocketError::ConnectionClosed => io::Error::new(io::ErrorKind::UnexpectedEof, "the WebSocket was closed"),
        WebSocketError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// The client side of the upgrade on an open connection (TCP or TLS).
pub(crate) async fn client_handshake(url: &url::Url, io: Io, max_frame: u32) -> io::Result<WsStream> {
    let req = yawc::HttpRequest::builder().header("Sec-WebSocket-Protocol", SUBPROTOCOL);
    WebSocket::handshake_with_request(url.clone(), io, options(max_frame), req)
        .await
        .map_err(|e| io::Error::other(format!("WebSocket upgrade failed: {e}")))
}

/// Reads an HTTP request head (up to the blank line, at most 8 KiB): the
/// head and any bytes that came after it. A head too large is answered 431.
pub(crate) async fn read_head(io: &mut Io, mut buf: Vec<u8>) -> io::Result<(Vec<u8>, Vec<u8>)> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Ok((buf, rest));
        }
        if buf.len() >= MAX_REQUEST_HEAD {
            refuse(io, "431 Request Header Fields Too Large", "request head over 8 KiB", "").await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "HTTP request head over 8 KiB"));
        }
        let mut chunk = [0u8; 1024];
        let want = chunk.len().min(MAX_REQUEST_HEAD - buf.len());
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            let what = if buf.is_empty() { "closed before its request" } else { "closed mid-request" };
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The server side of the upgrade, its request head read: checks it is a
/// WebSocket upgrade offering `tether.v1`, answers 101, and wraps the
/// connection; with the client's address from `X-Forwarded-For` when the
/// connection came from a trusted proxy (`proxy`). Anything else gets a
/// plain HTTP error saying what is wrong.
pub(crate) async fn upgrade(
    mut io: Io,
    head: &[u8],
    rest: &[u8],
    max_frame: u32,
    origins: &Origins,
    proxy: Option<&super::TrustedProxies>,
) -> io::Result<(WsStream, Option<std::net::IpAddr>)> {
    if !rest.is_empty() {
        // A client must wait for 101 before sending frames.
        refuse(&mut io, "400 Bad Request", "data sent before the upgrade completed", "").await;
        return Err(io::Error::new(io::ErrorKind::InvalidData, "data sent before the WebSocket upgrade completed"));
    }
    let (accept, forwarded) = match check_upgrade(head, origins, proxy) {
        Ok(a) => a,
        Err((status, why)) => {
            refuse(&mut io, status, why, "").await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad WebSocket upgrade: {why}")));
        }
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    io.write_all(resp.as_bytes()).await?;
    io.flush().await?;
    let ws =
        WebSocket::from_stream(io, Role::Server, options(max_frame)).map_err(|e| io::Error::other(e.to_string()))?;
    Ok((ws, forwarded))
}

pub(crate) type Upgrade = (String, Option<std::net::IpAddr>);

pub(crate) fn check_upgrade(
    head: &[u8],
    origins: &Origins,
    proxy: Option<&super::TrustedProxies>,
) -> Result<Upgrade, (&'static str, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(("400 Bad Request", "not an HTTP/1.1 request")),
    }
    if req.method != Some("GET") {
        return Err(("405 Method Not Allowed", "a WebSocket upgrade is a GET"));
    }
    let get = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let has_token = |name: &str, token: &str| {
        get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(("426 Upgrade Required", "this port speaks tether over WebSocket (or its HTTP fallback, POSTs with ?tether=stream or ?tether=send: PROTOCOL §2.4)"));
    }
    if !origins.allows(get("origin"), get("host")) {
        return Err((
            "403 Forbidden",
            "pages of this Origin may not open sessions here; the gateway's operator can allow it (listen.allowed_origins)",
        ));
    }
    if get("sec-websocket-version") != Some(b"13") {
        return Err(("426 Upgrade Required", "WebSocket version 13 is required"));
    }
    if !has_token("sec-websocket-protocol", SUBPROTOCOL) {
        return Err(("400 Bad Request", "the WebSocket subprotocol tether.v1 must be offered"));
    }
    let Some(key) = get("sec-websocket-key") else {
        return Err(("400 Bad Request", "Sec-WebSocket-Key is missing"));
    };
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID.as_bytes());
    let forwarded = proxy.and_then(|p| p.forwarded_for(get("x-forwarded-for")?));
    Ok((base64::engine::general_purpose::STANDARD.encode(h.finalize()), forwarded))
}

/// Answers an HTTP error (`extra`: more header lines, each ending in CRLF)
/// and closes.
pub(crate) async fn refuse(io: &mut Io, status: &str, why: &str, extra: &str) {
    let body = format!("{why}\n");
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = io.write_all(resp.as_bytes()).await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn upgrade(xff: &str) -> Vec<u8> {
        format!(
            "GET /t HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: tether.v1\r\n{xff}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn x_forwarded_for_is_read_only_from_a_trusted_proxy() {
        let trusted = super::super::TrustedProxies::parse(&["10.0.0.0/8".into()], false).unwrap();
        let head = upgrade("X-Forwarded-For: 6.6.6.6, 198.51.100.4, 10.1.1.1\r\n");
        let (accept, from) = check_upgrade(&head, &Origins::Any, Some(&trusted)).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455's example");
        assert_eq!(from, Some("198.51.100.4".parse().unwrap()), "the nearest address not of a trusted proxy");
        // Not from a trusted proxy (the caller passes None): ignored.
        assert_eq!(check_upgrade(&head, &Origins::Any, None).unwrap().1, None);
        // No header, or garbage: the socket's address stands.
        assert_eq!(check_upgrade(&upgrade(""), &Origins::Any, Some(&trusted)).unwrap().1, None);
        let junk = upgrade("X-Forwarded-For: not-an-address\r\n");
        assert_eq!(check_upgrade(&junk, &Origins::Any, Some(&trusted)).unwrap().1, None);
    }
}
