//! Wire protocol v1 frames: exact byte layouts, encoding and decoding.
//!
//! This module is the executable form of `docs/PROTOCOL.md` §3–§4. Every
//! integer is big-endian. A frame is one type byte followed by a body whose
//! layout depends on the type; the frame's total length comes from the
//! transport (a 4-byte length prefix on TCP/TLS, the message length on
//! WebSocket), so trailing variable-length fields run to the end of the frame.
//!
//! Decoding never panics. [`decode_stream`] tells "need more bytes"
//! (`Ok(None)`) apart from "invalid" (`Err`), and every [`DecodeError`] maps
//! to the [`CloseCode`] sent to the peer before the transport is closed.

use bytes::Bytes;

use crate::error::{CloseCode, RejectReason};
use crate::token::{ResumeToken, SessionId};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The four bytes that open every HELLO body ("TTHR"), so a server can tell a
/// tether client from a stray HTTP request or port scan in the first frame.
pub const MAGIC: [u8; 4] = *b"TTHR";
/// Length of the stream-framing prefix on TCP and TLS.
pub const LENGTH_PREFIX: usize = 4;
/// Every implementation must accept frames up to this size, so a HELLO with
/// its largest auth token always fits before limits are negotiated.
pub const MIN_MAX_FRAME: u32 = 16 * 1024;
/// Default largest frame an endpoint accepts (type byte included).
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;
/// Largest value an endpoint may announce as its maximum frame size: 16 MiB
/// keeps a single frame's buffer well below any sensible memory budget.
pub const MAX_MAX_FRAME: u32 = 16 * 1024 * 1024;
/// Largest auth token in HELLO: enough for a JWT with generous claims.
pub const MAX_AUTH_LEN: usize = 4096;
/// Largest optional application payload on PING and PONG: heartbeats must stay
/// small, they are sent exactly when the link is in doubt.
pub const MAX_PING_PAYLOAD: usize = 1024;
/// Largest UTF-8 text in REJECT and CLOSE.
pub const MAX_REASON_LEN: usize = 1024;

/// Frame type bytes (`docs/PROTOCOL.md` §3.1).
pub mod kind {
    /// Client → server: open a new session or resume one.
    pub const HELLO: u8 = 0x01;
    /// Server → client: handshake accepted.
    pub const WELCOME: u8 = 0x02;
    /// Server → client: handshake refused.
    pub const REJECT: u8 = 0x03;
    /// Either way: one application message.
    pub const DATA: u8 = 0x10;
    /// Either way: cumulative acknowledgement.
    pub const ACK: u8 = 0x11;
    /// Either way: liveness probe.
    pub const PING: u8 = 0x20;
    /// Either way: answer to PING.
    pub const PONG: u8 = 0x21;
    /// Either way: the sender is closing the transport (and maybe the session).
    pub const CLOSE: u8 = 0x30;
}

const HELLO_FLAG_RESUME: u8 = 0x01;
const WELCOME_FLAG_RESUMED: u8 = 0x01;

/// A client's request to resume a session, carried in HELLO.
#[derive(Clone, PartialEq, Eq)]
pub struct Resume {
    /// The session to resume.
    pub session_id: SessionId,
    /// The token the server issued in the last WELCOME the client received.
    pub token: ResumeToken,
    /// Highest DATA sequence number the client has received (0: none).
    pub last_received: u64,
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resume")
            .field("session_id", &self.session_id)
            .field("token", &"<redacted>")
            .field("last_received", &self.last_received)
            .finish()
    }
}

/// HELLO: the first frame a client sends on every transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the client speaks.
    pub min_version: u8,
    /// Highest protocol version the client speaks.
    pub max_version: u8,
    /// Largest frame the client accepts.
    pub max_frame: u32,
    /// How long the server should wait in silence before declaring this
    /// client's transport dead (derived from the client's heartbeat).
    pub idle_timeout_ms: u32,
    /// Present when resuming.
    pub resume: Option<Resume>,
    /// Opaque credential for the server's authenticator (may be empty).
    pub auth: Bytes,
}

/// WELCOME: the server accepted the HELLO.
#[derive(Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version in use from now on.
    pub version: u8,
    /// True when an existing session was resumed.
    pub resumed: bool,
    /// The session, new or resumed.
    pub session_id: SessionId,
    /// The token to present on the next resume (rotated on every WELCOME).
    pub token: ResumeToken,
    /// Highest DATA sequence number the server has received (0: none).
    pub last_received: u64,
    /// Largest frame the server accepts.
    pub max_frame: u32,
    /// The server drops a transport silent for this long.
    pub idle_timeout_ms: u32,
    /// The server keeps a detached session this long before it expires.
    pub grace_ms: u32,
}

impl std::fmt::Debug for Welcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Welcome")
            .field("version", &self.version)
            .field("resumed", &self.resumed)
            .field("session_id", &self.session_id)
            .field("token", &"<redacted>")
            .field("last_received", &self.last_received)
            .field("max_frame", &self.max_frame)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("grace_ms", &self.grace_ms)
            .finish()
    }
}

/// REJECT: the server refused the HELLO; it closes the transport after this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
    /// Do not try again before this many milliseconds (0: no constraint).
    pub retry_after_ms: u32,
    /// Lowest version the server speaks.
    pub min_version: u8,
    /// Highest version the server speaks.
    pub max_version: u8,
    /// Human-readable detail (UTF-8, at most [`MAX_REASON_LEN`] bytes).
    pub message: String,
}

/// CLOSE: the sender closes the transport; the code says whether the session
/// ends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// What happened; see [`CloseCode::ends_session`].
    pub code: CloseCode,
    /// Do not reconnect before this many milliseconds (0: no constraint).
    pub retry_after_ms: u32,
    /// Human-readable detail (UTF-8, at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Reject`].
    Reject(Reject),
    /// One application message with its sequence number (≥ 1).
    Data {
        /// Sequence number, starting at 1 for each direction of a session.
        seq: u64,
        /// The application's bytes.
        payload: Bytes,
    },
    /// Every DATA with `seq ≤ ack` was received.
    Ack {
        /// Cumulative acknowledgement.
        ack: u64,
    },
    /// Liveness probe, carrying the cumulative ack and optional app data.
    Ping {
        /// Echoed in the PONG.
        nonce: u32,
        /// Cumulative acknowledgement.
        ack: u64,
        /// Optional application data (at most [`MAX_PING_PAYLOAD`] bytes).
        payload: Bytes,
    },
    /// Answer to a PING.
    Pong {
        /// The PING's nonce.
        nonce: u32,
        /// Cumulative acknowledgement.
        ack: u64,
        /// Optional application data (at most [`MAX_PING_PAYLOAD`] bytes).
        payload: Bytes,
    },
    /// See [`Close`].
    Close(Close),
}

impl Frame {
    /// The type byte of this frame.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Welcome(_) => kind::WELCOME,
            Frame::Reject(_) => kind::REJECT,
            Frame::Data { .. } => kind::DATA,
            Frame::Ack { .. } => kind::ACK,
            Frame::Ping { .. } => kind::PING,
            Frame::Pong { .. } => kind::PONG,
            Frame::Close(_) => kind::CLOSE,
        }
    }

    /// A CLOSE frame; the reason is cut to [`MAX_REASON_LEN`] bytes on a
    /// character boundary and the retry-after saturates, so it always decodes.
    pub fn close(code: CloseCode, retry_after: std::time::Duration, reason: &str) -> Frame {
        let retry_after_ms = u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX);
        Frame::Close(Close { code, retry_after_ms, reason: clip_reason(reason) })
    }

    /// True for PING and PONG, which logs leave out unless asked.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Frame::Ping { .. } | Frame::Pong { .. })
    }

    /// Exact encoded length of this frame, type byte included, without any
    /// transport prefix.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Frame::Hello(h) => {
                4 + 1 + 1 + 1 + 4 + 4 + if h.resume.is_some() { 16 + 32 + 8 } else { 0 } + 2 + h.auth.len()
            }
            Frame::Welcome(_) => 1 + 1 + 16 + 32 + 8 + 4 + 4 + 4,
            Frame::Reject(r) => 1 + 4 + 1 + 1 + 2 + r.message.len(),
            Frame::Data { payload, .. } => 8 + payload.len(),
            Frame::Ack { .. } => 8,
            Frame::Ping { payload, .. } | Frame::Pong { payload, .. } => 4 + 8 + payload.len(),
            Frame::Close(c) => 2 + 4 + 2 + c.reason.len(),
        }
    }

    /// Appends the encoded frame (no transport prefix) to `out`.
    ///
    /// Encoding does not validate limits: the machines never build a frame
    /// that breaks them, and tests need to build ones that do.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.kind());
        match self {
            Frame::Hello(h) => {
                out.extend_from_slice(&MAGIC);
                out.push(h.min_version);
                out.push(h.max_version);
                out.push(if h.resume.is_some() { HELLO_FLAG_RESUME } else { 0 });
                out.extend_from_slice(&h.max_frame.to_be_bytes());
                out.extend_from_slice(&h.idle_timeout_ms.to_be_bytes());
                if let Some(r) = &h.resume {
                    out.extend_from_slice(r.session_id.as_bytes());
                    out.extend_from_slice(r.token.as_bytes());
                    out.extend_from_slice(&r.last_received.to_be_bytes());
                }
                put_u16_prefixed(out, &h.auth);
            }
            Frame::Welcome(w) => {
                out.push(w.version);
                out.push(if w.resumed { WELCOME_FLAG_RESUMED } else { 0 });
                out.extend_from_slice(w.session_id.as_bytes());
                out.extend_from_slice(w.token.as_bytes());
                out.extend_from_slice(&w.last_received.to_be_bytes());
                out.extend_from_slice(&w.max_frame.to_be_bytes());
                out.extend_from_slice(&w.idle_timeout_ms.to_be_bytes());
                out.extend_from_slice(&w.grace_ms.to_be_bytes());
            }
            Frame::Reject(r) => {
                out.push(r.reason.to_u8());
                out.extend_from_slice(&r.retry_after_ms.to_be_bytes());
                out.push(r.min_version);
                out.push(r.max_version);
                put_u16_prefixed(out, r.message.as_bytes());
            }
            Frame::Data { seq, payload } => {
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Ack { ack } => out.extend_from_slice(&ack.to_be_bytes()),
            Frame::Ping { nonce, ack, payload } | Frame::Pong { nonce, ack, payload } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Close(c) => {
                out.extend_from_slice(&c.code.to_u16().to_be_bytes());
                out.extend_from_slice(&c.retry_after_ms.to_be_bytes());
                put_u16_prefixed(out, c.reason.as_bytes());
            }
        }
    }

    /// Encodes into a fresh buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Appends the TCP/TLS form: a 4-byte big-endian length, then the frame.
    pub fn encode_length_prefixed(&self, out: &mut Vec<u8>) {
        let len = self.encoded_len() as u32;
        out.extend_from_slice(&len.to_be_bytes());
        self.encode(out);
    }

    /// Decodes exactly one whole frame (as delivered by a WebSocket message or
    /// cut from a TCP stream by [`decode_stream`]).
    ///
    /// `max_frame` is the largest frame this endpoint accepts.
    pub fn decode(buf: &[u8], max_frame: u32) -> Result<Frame, DecodeError> {
        if buf.len() as u64 > u64::from(max_frame) {
            return Err(DecodeError::FrameTooLarge { len: buf.len() as u64, max: max_frame });
        }
        let (&ty, body) = buf.split_first().ok_or(DecodeError::Empty)?;
        let mut r = Reader { buf: body, frame: ty };
        let frame = match ty {
            kind::HELLO => {
                let magic = r.array::<4>("magic")?;
                if magic != MAGIC {
                    return Err(DecodeError::BadMagic);
                }
                let min_version = r.u8("min_version")?;
                let max_version = r.u8("max_version")?;
                let flags = r.u8("flags")?;
                if flags & !HELLO_FLAG_RESUME != 0 {
                    return Err(DecodeError::ReservedBits { frame: ty, field: "flags", value: flags });
                }
                let max_frame = r.u32("max_frame")?;
                let idle_timeout_ms = r.u32("idle_timeout_ms")?;
                let resume = if flags & HELLO_FLAG_RESUME != 0 {
                    Some(Resume {
                        session_id: SessionId::from_bytes(r.array("session_id")?),
                        token: ResumeToken::from_bytes(r.array("resume_token")?),
                        last_received: r.u64("last_received")?,
                    })
                } else {
                    None
                };
                let auth = r.u16_prefixed("auth", MAX_AUTH_LEN)?;
                r.finish()?;
                if min_version > max_version {
                    return Err(DecodeError::InvalidValue {
                        frame: ty,
                        field: "min_version",
                        reason: "greater than max_version",
                    });
                }
                if max_frame < MIN_MAX_FRAME {
                    return Err(DecodeError::InvalidValue {
                        frame: ty,
                        field: "max_frame",
                        reason: "below the 16384-byte minimum",
                    });
                }
                Frame::Hello(Hello {
                    min_version,
                    max_version,
                    max_frame,
                    idle_timeout_ms,
                    resume,
                    auth: Bytes::copy_from_slice(auth),
                })
            }
            kind::WELCOME => {
                let version = r.u8("version")?;
                let flags = r.u8("flags")?;
                if flags & !WELCOME_FLAG_RESUMED != 0 {
                    return Err(DecodeError::ReservedBits { frame: ty, field: "flags", value: flags });
                }
                let w = Welcome {
                    version,
                    resumed: flags & WELCOME_FLAG_RESUMED != 0,
                    session_id: SessionId::from_bytes(r.array("session_id")?),
                    token: ResumeToken::from_bytes(r.array("resume_token")?),
                    last_received: r.u64("last_received")?,
                    max_frame: r.u32("max_frame")?,
                    idle_timeout_ms: r.u32("idle_timeout_ms")?,
                    grace_ms: r.u32("grace_ms")?,
                };
                r.finish()?;
                if w.max_frame < MIN_MAX_FRAME {
                    return Err(DecodeError::InvalidValue {
                        frame: ty,
                        field: "max_frame",
                        reason: "below the 16384-byte minimum",
                    });
                }
                Frame::Welcome(w)
            }
            kind::REJECT => {
                let code = r.u8("reason")?;
                let reason = RejectReason::from_u8(code).ok_or(DecodeError::InvalidValue {
                    frame: ty,
                    field: "reason",
                    reason: "unknown reject reason",
                })?;
                let retry_after_ms = r.u32("retry_after_ms")?;
                let min_version = r.u8("min_version")?;
                let max_version = r.u8("max_version")?;
                let message = r.utf8("message")?;
                r.finish()?;
                Frame::Reject(Reject { reason, retry_after_ms, min_version, max_version, message })
            }
            kind::DATA => {
                let seq = r.u64("seq")?;
                if seq == 0 {
                    return Err(DecodeError::InvalidValue {
                        frame: ty,
                        field: "seq",
                        reason: "sequence numbers start at 1",
                    });
                }
                Frame::Data { seq, payload: Bytes::copy_from_slice(r.rest()) }
            }
            kind::ACK => {
                let ack = r.u64("ack")?;
                r.finish()?;
                Frame::Ack { ack }
            }
            kind::PING | kind::PONG => {
                let nonce = r.u32("nonce")?;
                let ack = r.u64("ack")?;
                let rest = r.rest();
                if rest.len() > MAX_PING_PAYLOAD {
                    return Err(DecodeError::TooLong {
                        frame: ty,
                        field: "payload",
                        len: rest.len(),
                        max: MAX_PING_PAYLOAD,
                    });
                }
                let payload = Bytes::copy_from_slice(rest);
                if ty == kind::PING {
                    Frame::Ping { nonce, ack, payload }
                } else {
                    Frame::Pong { nonce, ack, payload }
                }
            }
            kind::CLOSE => {
                let raw = r.u16("code")?;
                let code = CloseCode::from_u16(raw).ok_or(DecodeError::InvalidValue {
                    frame: ty,
                    field: "code",
                    reason: "unassigned close code",
                })?;
                let retry_after_ms = r.u32("retry_after_ms")?;
                let reason = r.utf8("reason")?;
                r.finish()?;
                Frame::Close(Close { code, retry_after_ms, reason })
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        Ok(frame)
    }
}

/// Cuts one length-prefixed frame (TCP/TLS mapping) off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((frame, used)))`
/// when a whole frame was decoded from the first `used` bytes, and `Err` when
/// the stream is invalid — in which case the transport must be closed with
/// [`DecodeError::close_code`]. An oversize length is refused as soon as the
/// prefix arrives, before any of the body is buffered.
pub fn decode_stream(buf: &[u8], max_frame: u32) -> Result<Option<(Frame, usize)>, DecodeError> {
    let Some(len) = stream_frame_len(buf, max_frame)? else {
        return Ok(None);
    };
    let total = LENGTH_PREFIX + len;
    let Some(body) = buf.get(LENGTH_PREFIX..total) else {
        return Ok(None);
    };
    Frame::decode(body, max_frame).map(|f| Some((f, total)))
}

/// Reads the length prefix at the front of `buf` (TCP/TLS mapping):
/// `Ok(None)` until all four bytes are there, else the length of the frame
/// that follows. A zero length and a length above `max_frame` are refused
/// from the prefix alone, so a runtime never buffers an oversize body.
pub fn stream_frame_len(buf: &[u8], max_frame: u32) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; LENGTH_PREFIX];
    len_bytes.copy_from_slice(prefix);
    let len = u32::from_be_bytes(len_bytes);
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > max_frame {
        return Err(DecodeError::FrameTooLarge { len: u64::from(len), max: max_frame });
    }
    Ok(Some(len as usize))
}

/// Why bytes are not a valid frame. Each maps to a [`CloseCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A frame of length zero.
    #[error("empty frame: every frame starts with a type byte")]
    Empty,
    /// The frame is longer than this endpoint accepts.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Announced or actual length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The type byte is not assigned in this version.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The frame ended inside a fixed field.
    #[error("frame 0x{frame:02x} truncated in field `{field}`")]
    Truncated {
        /// Frame type.
        frame: u8,
        /// The field that did not fit.
        field: &'static str,
    },
    /// Bytes left after the last field of a fixed-layout frame.
    #[error("frame 0x{frame:02x} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Frame type.
        frame: u8,
        /// How many.
        extra: usize,
    },
    /// HELLO did not start with "TTHR".
    #[error("HELLO does not start with the TTHR magic: not a tether client")]
    BadMagic,
    /// Reserved flag bits were set.
    #[error("frame 0x{frame:02x} field `{field}` has reserved bits set (0x{value:02x})")]
    ReservedBits {
        /// Frame type.
        frame: u8,
        /// Field.
        field: &'static str,
        /// The value seen.
        value: u8,
    },
    /// A length-prefixed field is longer than allowed.
    #[error("frame 0x{frame:02x} field `{field}` is {len} bytes, limit {max}")]
    TooLong {
        /// Frame type.
        frame: u8,
        /// Field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Text that is not UTF-8.
    #[error("frame 0x{frame:02x} field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// Frame type.
        frame: u8,
        /// Field.
        field: &'static str,
    },
    /// A field holds a value the protocol forbids.
    #[error("frame 0x{frame:02x} field `{field}`: {reason}")]
    InvalidValue {
        /// Frame type.
        frame: u8,
        /// Field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The close code to send before closing the transport.
    pub fn close_code(&self) -> CloseCode {
        match self {
            DecodeError::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
            _ => CloseCode::ProtocolError,
        }
    }
}

/// Cuts a reason text to at most [`MAX_REASON_LEN`] bytes on a character
/// boundary, so a CLOSE or REJECT built from it always decodes.
pub fn clip_reason(text: &str) -> String {
    let mut end = text.len().min(MAX_REASON_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn put_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers keep every u16-prefixed field under its (u16-sized) limit;
    // saturate rather than wrap if a test deliberately builds an oversize one.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// Bounds-checked big-endian reader over a frame body.
struct Reader<'a> {
    buf: &'a [u8],
    frame: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { frame: self.frame, field });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn u16_prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::TooLong { frame: self.frame, field, len, max });
        }
        self.take(len, field)
    }

    fn utf8(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.u16_prefixed(field, MAX_REASON_LEN)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { frame: self.frame, field })
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { frame: self.frame, extra: self.buf.len() })
        }
    }
}
