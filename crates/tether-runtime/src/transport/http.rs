//! The HTTP fallback mapping (`docs/PROTOCOL.md` §2.4), for clients whose
//! network lets no WebSocket upgrade through: on the WebSocket listener, a
//! transport is one streaming response (server → client, length-prefixed
//! frames in a chunked body) and a series of POSTs (client → server), tied
//! together by the transport id the client chose.
//!
//! A request on a WebSocket listener is read here: an upgrade goes on to
//! [`super::ws::upgrade`]; `POST …?tether=stream&id=…` becomes a
//! [`Transport`] carrying a session like any other; `POST
//! …?tether=send&id=…` hands its frames to that transport, on a task of
//! its own that serves the connection's later POSTs too (keep-alive).

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tether_proto::frame::{stream_frame_len, LENGTH_PREFIX};
use tether_proto::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::ws::{self, WsStream};
use super::{Io, Origins, RecvError, Transport, TrustedProxies};

/// POST bodies waiting for their transport to take them.
const UPSTREAM_QUEUE: usize = 16;
/// How long a POST waits for room in its transport's queue.
const UPSTREAM_WAIT: Duration = Duration::from_secs(10);
/// How long an upstream connection may sit idle between POSTs.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// A POST may carry this much beyond one largest frame.
const POST_SLACK: usize = 64 * 1024;
/// A buffer that grew past this for one large frame is released once empty.
const KEEP_CAPACITY: usize = 4 * 1024;

/// The open fallback transports of a server, by id: where their POSTs go.
#[derive(Default)]
pub(crate) struct Routes {
    map: Mutex<HashMap<u128, mpsc::Sender<Bytes>>>,
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, mpsc::Sender<Bytes>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a connection to a WebSocket listener asked for.
pub(crate) enum Accepted {
    /// A WebSocket, upgraded (with the client's address a trusted proxy named).
    Ws(Box<WsStream>, Option<IpAddr>),
    /// A fallback transport's stream, answered 200: its first frames are
    /// buffered in it.
    Http(Transport, Option<IpAddr>),
    /// POSTs of a fallback transport: served on their own task.
    Upstream,
}

/// The request's fallback role, from its query: `tether=stream|send` and
/// `id=<32 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Stream(u128),
    Send(u128),
}

/// What the fallback needs of a request head.
struct Head {
    method: String,
    role: Option<Role>,
    origin: Option<String>,
    host: Option<String>,
    forwarded: Option<Vec<u8>>,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let get = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let text = |name: &str| get(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned);
    let query = req.path?.split_once('?').map_or("", |(_, q)| q);
    let (mut kind, mut id) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("tether", k)) => kind = Some(k),
            Some(("id", v)) if v.len() == 32 => id = u128::from_str_radix(v, 16).ok(),
            _ => {}
        }
    }
    let role = match (kind, id) {
        (Some("stream"), Some(id)) => Some(Role::Stream(id)),
        (Some("send"), Some(id)) => Some(Role::Send(id)),
        _ => None,
    };
    Some(Head {
        method: req.method?.to_owned(),
        role,
        origin: text("origin"),
        host: text("host"),
        forwarded: get("x-forwarded-for").map(<[u8]>::to_vec),
        content_length: text("content-length").and_then(|v| v.trim().parse().ok()),
        chunked: text("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")),
        close: text("connection").is_some_and(|v| v.to_ascii_lowercase().contains("close")),
    })
}

/// The CORS lines a page of another origin needs to read the answer, or
/// None when its origin may not open sessions here.
fn cors(h: &Head, origins: &Origins) -> Option<String> {
    let Some(origin) = &h.origin else { return Some(String::new()) };
    if !origins.allows(Some(origin.as_bytes()), h.host.as_deref().map(str::as_bytes)) {
        return None;
    }
    Some(format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"))
}

const FORBIDDEN: &str =
    "pages of this Origin may not open sessions here; the gateway's operator can allow it (listen.allowed_origins)";

/// Reads a request on a WebSocket listener and does what it asks.
pub(crate) async fn accept(
    mut io: Io,
    max_frame: u32,
    origins: &Origins,
    proxy: Option<&TrustedProxies>,
    routes: &Arc<Routes>,
    tls: bool,
) -> io::Result<Accepted> {
    let (head, rest) = ws::read_head(&mut io, Vec::new()).await?;
    let Some(h) = parse_head(&head) else {
        ws::refuse(&mut io, "400 Bad Request", "not an HTTP/1.1 request", "").await;
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.1 request"));
    };
    match (h.method.as_str(), h.role) {
        ("OPTIONS", _) => {
            // A preflight (a page sending headers beyond the simple ones).
            let Some(cors) = cors(&h, origins) else {
                ws::refuse(&mut io, "403 Forbidden", FORBIDDEN, "").await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, "preflight from a foreign origin"));
            };
            let resp = format!(
                "HTTP/1.1 204 No Content\r\n{cors}Access-Control-Allow-Methods: POST\r\n\
                 Access-Control-Allow-Headers: content-type\r\nAccess-Control-Max-Age: 600\r\nConnection: close\r\n\r\n"
            );
            io.write_all(resp.as_bytes()).await?;
            io.shutdown().await?;
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a preflight answered"))
        }
        ("POST", Some(Role::Stream(id))) => {
            let Some(cors) = cors(&h, origins) else {
                ws::refuse(&mut io, "403 Forbidden", FORBIDDEN, "").await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, "fallback stream from a foreign origin"));
            };
            let body = read_body(&mut io, &h, rest, max_frame, &cors).await?;
            let (tx, rx) = mpsc::channel(UPSTREAM_QUEUE);
            let taken = {
                let mut map = routes.lock();
                let taken = map.contains_key(&id);
                if !taken {
                    map.insert(id, tx);
                }
                taken
            };
            if taken {
                ws::refuse(&mut io, "409 Conflict", "this transport id is taken: choose a new random one", &cors).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a fallback transport id reused"));
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: no-store\r\n\
                 X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n{cors}\r\n"
            );
            let mut t = HttpTransport::new(io, id, routes.clone(), rx);
            t.rbuf.extend_from_slice(&body);
            t.io.write_all(resp.as_bytes()).await?;
            t.io.flush().await?;
            let forwarded = proxy.and_then(|p| p.forwarded_for(h.forwarded.as_deref()?));
            Ok(Accepted::Http(Transport::http(t, tls, max_frame), forwarded))
        }
        ("POST", Some(Role::Send(_))) => {
            let (routes, origins) = (routes.clone(), origins.clone());
            tokio::spawn(async move {
                if let Err(e) = upstream(io, head, rest, max_frame, &origins, &routes).await {
                    tracing::debug!(%e, "fallback upstream connection ended");
                }
            });
            Ok(Accepted::Upstream)
        }
        _ => {
            let (ws, forwarded) = ws::upgrade(io, &head, &rest, max_frame, origins, proxy).await?;
            Ok(Accepted::Ws(Box::new(ws), forwarded))
        }
    }
}

/// A request's body (Content-Length; no chunked uploads), at most one
/// largest frame plus 64 KiB.
async fn read_body(io: &mut Io, h: &Head, mut rest: Vec<u8>, max_frame: u32, cors: &str) -> io::Result<Vec<u8>> {
    let cap = max_frame as usize + LENGTH_PREFIX + POST_SLACK;
    let len = match h.content_length {
        Some(n) if n <= cap && !h.chunked => n,
        Some(n) if n > cap => {
            let why =
                format!("a POST carries at most {cap} bytes (one largest frame and 64 KiB); send fewer frames at once");
            ws::refuse(io, "413 Content Too Large", &why, cors).await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "fallback POST too large"));
        }
        _ => {
            ws::refuse(io, "411 Length Required", "send the body with a Content-Length", cors).await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "fallback POST without a length"));
        }
    };
    if rest.len() > len {
        ws::refuse(io, "400 Bad Request", "bytes after the body: send one request at a time", cors).await;
        return Err(io::Error::new(io::ErrorKind::InvalidData, "pipelined fallback requests"));
    }
    let have = rest.len();
    rest.resize(len, 0);
    io.read_exact(&mut rest[have..]).await?;
    Ok(rest)
}

/// Serves a connection's POSTs: each body goes to its transport, in order,
/// and is answered 204 once taken (404: no such transport, it is gone).
async fn upstream(
    mut io: Io,
    mut head: Vec<u8>,
    mut rest: Vec<u8>,
    max_frame: u32,
    origins: &Origins,
    routes: &Routes,
) -> io::Result<()> {
    loop {
        let Some(h) = parse_head(&head) else {
            ws::refuse(&mut io, "400 Bad Request", "not an HTTP/1.1 request", "").await;
            return Ok(());
        };
        let (Some(Role::Send(id)), "POST") = (h.role, h.method.as_str()) else {
            ws::refuse(&mut io, "400 Bad Request", "after a fallback POST, only more of them", "").await;
            return Ok(());
        };
        let Some(cors) = cors(&h, origins) else {
            ws::refuse(&mut io, "403 Forbidden", FORBIDDEN, "").await;
            return Ok(());
        };
        let body = read_body(&mut io, &h, std::mem::take(&mut rest), max_frame, &cors).await?;
        let route = routes.lock().get(&id).cloned();
        let taken = match route {
            Some(tx) => tokio::time::timeout(UPSTREAM_WAIT, tx.send(Bytes::from(body))).await,
            None => {
                ws::refuse(&mut io, "404 Not Found", "no such transport (it ended): connect again", &cors).await;
                return Ok(());
            }
        };
        match taken {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                ws::refuse(&mut io, "404 Not Found", "no such transport (it ended): connect again", &cors).await;
                return Ok(());
            }
            Err(_) => {
                ws::refuse(&mut io, "503 Service Unavailable", "the transport takes no more frames now", &cors).await;
                return Ok(());
            }
        }
        io.write_all(format!("HTTP/1.1 204 No Content\r\n{cors}\r\n").as_bytes()).await?;
        io.flush().await?;
        if h.close {
            return Ok(());
        }
        (head, rest) = match tokio::time::timeout(KEEP_ALIVE, ws::read_head(&mut io, Vec::new())).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
    }
}

/// The server's side of a fallback transport: frames out as chunks of the
/// streaming response, frames in from the POSTs' bodies.
pub(crate) struct HttpTransport {
    io: Io,
    id: u128,
    routes: Arc<Routes>,
    up: mpsc::Receiver<Bytes>,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    wpos: usize,
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        self.routes.lock().remove(&self.id);
    }
}

impl HttpTransport {
    fn new(io: Io, id: u128, routes: Arc<Routes>, up: mpsc::Receiver<Bytes>) -> Self {
        HttpTransport { io, id, routes, up, rbuf: BytesMut::new(), wbuf: Vec::new(), wpos: 0 }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        self.io.tcp()
    }

    pub(crate) fn io_mut(&mut self) -> &mut Io {
        &mut self.io
    }

    /// One chunk per frame.
    pub(crate) fn queue(&mut self, frame: &Frame) {
        let mut f = Vec::new();
        frame.encode_length_prefixed(&mut f);
        let _ = write!(self.wbuf, "{:x}\r\n", f.len());
        self.wbuf.extend_from_slice(&f);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// The response's end (the last chunk), before closing.
    pub(crate) fn queue_end(&mut self) {
        self.wbuf.extend_from_slice(b"0\r\n\r\n");
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
            self.wpos = 0;
            if self.wbuf.capacity() > KEEP_CAPACITY {
                self.wbuf = Vec::new();
            } else {
                self.wbuf.clear();
            }
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// The next whole frame from the POSTs. The stream's own connection
    /// carries nothing more from the client: its end (the client gave the
    /// transport up) ends the transport.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>, max_frame: u32) -> Poll<Result<Bytes, RecvError>> {
        loop {
            if let Some(len) = stream_frame_len(&self.rbuf, max_frame)? {
                if self.rbuf.len() >= LENGTH_PREFIX + len {
                    let frame = Bytes::copy_from_slice(&self.rbuf[LENGTH_PREFIX..LENGTH_PREFIX + len]);
                    self.rbuf.advance(LENGTH_PREFIX + len);
                    if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
                        self.rbuf = BytesMut::new();
                    }
                    return Poll::Ready(Ok(frame));
                }
            }
            match self.up.poll_recv(cx) {
                Poll::Ready(Some(body)) => {
                    self.rbuf.extend_from_slice(&body);
                    continue;
                }
                Poll::Ready(None) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the fallback transport's route is gone");
                    return Poll::Ready(Err(e.into()));
                }
                Poll::Pending => {}
            }
            let mut b = [0u8; 64];
            let mut rb = ReadBuf::new(&mut b);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let e = if rb.filled().is_empty() {
                io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed the fallback stream")
            } else {
                io::Error::new(io::ErrorKind::InvalidData, "bytes from the client on the fallback stream")
            };
            return Poll::Ready(Err(e.into()));
        }
    }
}
