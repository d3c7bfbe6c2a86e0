//! The server's TLS stream, on rustls's unbuffered API.
//!
//! tokio-rustls drives rustls's buffered connection, whose record buffer
//! reserves 4 KiB to read into and keeps it for the connection's life: two
//! thirds of what an idle TLS session used to cost (`docs/PERFORMANCE.md`).
//! Here the stream owns its buffers, as the plaintext transports do: while
//! the connection is idle the read waits with a buffer on the stack, and
//! the buffers of received records, decrypted bytes and bytes to send are
//! given back as soon as they are empty. The TLS configuration is the
//! caller's, unchanged.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time when no record is pending (into
/// the stack while idle).
const READ_CHUNK: usize = 4096;
/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Most plaintext taken by one `poll_write` (the encrypted bytes wait in
/// the stream until written, so this bounds that buffer).
const MAX_WRITE: usize = 64 * 1024;
/// Most TLS bytes held unprocessed: a handshake message of rustls's largest
/// (64 KiB) plus a whole record and a read. rustls bounds a handshake
/// message's declared size but keeps every byte of its fragments (record
/// headers included) in the caller's buffer until it is whole; its buffered
/// API enforces this bound itself, the unbuffered one leaves it to us.
const MAX_INCOMING: usize = 0x1_0000 + 18_437 + READ_CHUNK;

/// A TLS connection accepted by a server.
pub struct ServerTlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes received and not yet processed (part of a record), from
    /// `in_pos` while processing.
    incoming: Vec<u8>,
    in_pos: usize,
    /// Decrypted bytes the reader has not taken yet, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted bytes not yet written to the socket, from `out_pos`.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// The peer sent close_notify: reads end here.
    peer_closed: bool,
    /// This side queued its close_notify.
    close_queued: bool,
    /// The connection failed: every later call gets this error again.
    failed: Option<(io::ErrorKind, String)>,
}

/// What [`ServerTlsStream::process`] is asked to do once rustls lets it write.
enum Want<'a> {
    Nothing,
    Write(&'a [u8]),
    CloseNotify,
}

/// Where processing stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    /// Application data may be written; more records need more bytes.
    Traffic,
    /// The handshake needs more bytes from the peer.
    Blocked,
    /// Both sides sent close_notify.
    Closed,
}

impl ServerTlsStream {
    /// Runs the server side of a TLS handshake on `tcp`.
    pub async fn accept(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<ServerTlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = ServerTlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            in_pos: 0,
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            peer_closed: false,
            close_queued: false,
            failed: None,
        };
        poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Bytes of buffers held (received, decrypted and outgoing), for tests
    /// and measurements: zero on an idle connection.
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.outgoing.capacity()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let stopped = self.process(Want::Nothing).map(|(s, _)| s);
            // An alert rustls queued on failure goes out before the error.
            let flushed = self.poll_flush_out(cx)?;
            let stopped = stopped?;
            ready!(flushed);
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if stopped == Stopped::Closed || self.peer_closed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during TLS handshake")));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                )));
            }
        }
    }

    /// Processes the records received so far: decrypted data goes to
    /// `plain`, handshake messages and alerts to `outgoing`; then does what
    /// `want` asks if rustls allows writing. Returns where it stopped and how
    /// many bytes of `want` were encrypted.
    fn process(&mut self, want: Want<'_>) -> io::Result<(Stopped, usize)> {
        if let Some((kind, why)) = &self.failed {
            return Err(io::Error::new(*kind, why.clone()));
        }
        let res = self.process_records(want);
        // What was processed goes, once (not a move of the rest per record).
        self.incoming.drain(..self.in_pos.min(self.incoming.len()));
        self.in_pos = 0;
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
        if let Err(e) = &res {
            // rustls queued a fatal alert (or a close_notify): it goes out
            // with the next flush, and the connection stays failed (rustls
            // must not see the bad record again).
            self.take_alerts();
            self.failed = Some((e.kind(), e.to_string()));
        }
        res
    }

    fn process_records(&mut self, mut want: Want<'_>) -> io::Result<(Stopped, usize)> {
        let mut taken = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming[self.in_pos..]);
            let mut stop = None;
            let outcome = match state {
                Err(e) => Err(tls_error(e)),
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    let mut res = Ok(());
                    while let Some(record) = r.next_record() {
                        match record {
                            Ok(rec) => {
                                discard += rec.discard;
                                self.plain.extend_from_slice(rec.payload);
                            }
                            Err(e) => {
                                res = Err(tls_error(e));
                                break;
                            }
                        }
                    }
                    res
                }
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    // 0-RTT data can be replayed by anyone who saw it: not
                    // for a session protocol (a configuration enabling it
                    // gets this error rather than replayable frames).
                    Err(io::Error::new(io::ErrorKind::InvalidData, "TLS early data (0-RTT) is not accepted"))
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => encode_into(&mut self.outgoing, &mut e),
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // Queued in `outgoing`, which is written in order before
                    // anything encrypted after it.
                    t.done();
                    Ok(())
                }
                Ok(ConnectionState::BlockedHandshake) => {
                    stop = Some(Stopped::Blocked);
                    Ok(())
                }
                Ok(ConnectionState::PeerClosed) => {
                    // Nothing after close_notify is read: what follows it
                    // is dropped with the rest of the buffer.
                    self.peer_closed = true;
                    discard = self.incoming.len() - self.in_pos;
                    Ok(())
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    stop = Some(Stopped::Closed);
                    Ok(())
                }
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let res = match std::mem::replace(&mut want, Want::Nothing) {
                        Want::Nothing => Ok(()),
                        Want::Write(data) => {
                            let data = &data[..data.len().min(MAX_WRITE)];
                            encrypt_into(&mut self.outgoing, |out| w.encrypt(data, out)).map(|()| taken = data.len())
                        }
                        Want::CloseNotify => {
                            self.close_queued = true;
                            encrypt_into(&mut self.outgoing, |out| w.queue_close_notify(out))
                        }
                    };
                    // Nothing more to process until more bytes arrive.
                    stop = Some(Stopped::Traffic);
                    res
                }
                Ok(_) => Err(io::Error::other("unexpected TLS connection state")),
            };
            self.in_pos = (self.in_pos + discard).min(self.incoming.len());
            outcome?;
            if let Some(s) = stop {
                return Ok((s, taken));
            }
        }
    }

    /// Encodes what rustls queued to send after a failure (its fatal alert),
    /// without processing any input again.
    fn take_alerts(&mut self) {
        while self.conn.wants_write() {
            // Queued messages are handed out before any input is looked at
            // (an empty input, as well).
            let status = self.conn.process_tls_records(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut e)) = status.state else { break };
            if encode_into(&mut self.outgoing, &mut e).is_err() {
                break;
            }
        }
    }

    /// Reads more TLS bytes from the socket into `incoming`; 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.is_empty() {
            // Between records, as an idle connection waits: read into the
            // stack, so that no heap buffer is held while the read is pending.
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
            self.incoming.extend_from_slice(rb.filled());
            return Poll::Ready(Ok(rb.filled().len()));
        }
        // Part of a record: make room for the rest of it at once.
        let need = match self.incoming.get(..RECORD_HEADER) {
            Some(h) => {
                (RECORD_HEADER + usize::from(u16::from_be_bytes([h[3], h[4]]))).saturating_sub(self.incoming.len())
            }
            None => RECORD_HEADER - self.incoming.len(),
        };
        let start = self.incoming.len();
        if start >= MAX_INCOMING {
            let why = "TLS handshake message too large (more than 64 KiB of fragments)";
            self.failed = Some((io::ErrorKind::InvalidData, why.to_owned()));
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
        }
        self.incoming.resize(start + need.max(READ_CHUNK).min(MAX_INCOMING - start), 0);
        let mut rb = ReadBuf::new(&mut self.incoming[start..]);
        let res = Pin::new(&mut self.tcp).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.incoming.truncate(start + n);
        ready!(res)?;
        Poll::Ready(Ok(n))
    }

    /// Writes `outgoing` to the socket; its buffer is given back once written.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.out_pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

/// Encodes a handshake record or alert at the end of `out`.
fn encode_into<Data>(out: &mut Vec<u8>, e: &mut rustls::unbuffered::EncodeTlsData<'_, Data>) -> io::Result<()> {
    grow_into(out, "encoding", |buf| {
        e.encode(buf).map_err(|err| match err {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Ok(required_size),
            other => Err(other),
        })
    })
}

/// Encrypts with `f` at the end of `out`.
fn encrypt_into(out: &mut Vec<u8>, mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>) -> io::Result<()> {
    grow_into(out, "encryption", |buf| {
        f(buf).map_err(|err| match err {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Ok(required_size),
            other => Err(other),
        })
    })
}

/// Writes with `f` at the end of `out`: asked first with no room, `f` says
/// how much it needs (`Err(Ok(size))`), and `out` grows by exactly that.
fn grow_into<E: std::fmt::Display>(
    out: &mut Vec<u8>,
    what: &str,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Result<usize, E>>,
) -> io::Result<()> {
    let start = out.len();
    let failed = |e: E| io::Error::other(format!("TLS {what} failed: {e}"));
    match f(&mut []) {
        Ok(_) => Ok(()),
        Err(Ok(required)) => {
            out.resize(start + required, 0);
            match f(&mut out[start..]) {
                Ok(n) => {
                    out.truncate(start + n);
                    Ok(())
                }
                Err(e) => {
                    out.truncate(start);
                    Err(e
                        .map_or_else(failed, |_| io::Error::other(format!("TLS {what} needs more room than it asked"))))
                }
            }
        }
        Err(Err(e)) => Err(failed(e)),
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let processed = this.process(Want::Nothing);
            // Whatever processing produced (a key update's answer, an alert)
            // is sent as the socket takes it; a write that must wait is
            // retried by the next write or read.
            let flushed = this.poll_flush_out(cx);
            processed?;
            if let Poll::Ready(Err(e)) = flushed {
                return Poll::Ready(Err(e));
            }
            if this.plain_pos < this.plain.len() || this.peer_closed {
                continue;
            }
            let had = this.incoming.len();
            if ready!(this.poll_fill(cx))? == 0 {
                let why = if had > 0 {
                    "TLS record cut short"
                } else {
                    // As rustls's own streams: an end without close_notify
                    // may be a truncation.
                    "the peer closed the connection without a TLS close_notify"
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
            }
        }
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What is already encrypted goes first: the stream holds at most
        // one write's worth.
        ready!(this.poll_flush_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let (stopped, n) = this.process(Want::Write(data))?;
        if stopped != Stopped::Traffic || n == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "the TLS connection cannot send")));
        }
        // Sent as far as the socket takes it now; the rest by the next
        // write or flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        if !this.close_queued {
            // Once: a failed close_notify still shuts the socket down.
            this.close_queued = true;
            if this.process(Want::CloseNotify).is_ok() {
                ready!(this.poll_flush_out(cx))?;
            }
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
