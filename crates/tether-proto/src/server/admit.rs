//! The one routing function for a new transport's first frame (§5):
//! decode, version, admission, credential, then a new session or a resume
//! claimed under the session's own guard. The runtime's handshake tasks and
//! the simulator's server both call [`admit`]; nothing else opens or
//! resumes a session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ServerConfig, ServerSession};
use crate::error::{CloseCode, RejectReason};
use crate::frame::{self, DecodeError, Frame, Hello, Reject};
use crate::rng::Rng;
use crate::token::{ResumeToken, SessionId};
use crate::TransportId;

/// Where sessions live, as a handshake sees them: the runtime's registry
/// (each session behind its own lock), the simulator's table.
pub trait Sessions {
    /// Runs `claim` on session `id` under whatever guards it, and hands the
    /// transport to the session's driver if the claim attached it
    /// (`session.transport() == Some(tid)` afterwards). None if unknown.
    fn claim<R>(&mut self, id: SessionId, claim: impl FnOnce(&mut ServerSession) -> R) -> Option<R>;
}

/// What became of a transport's first frame.
#[derive(Debug)]
pub enum Admitted<U> {
    /// A new session, WELCOME queued: register it and drive it.
    Opened {
        /// The session (boxed: the other outcomes are small).
        session: Box<ServerSession>,
        /// Who the authenticator said opened it.
        user: U,
    },
    /// An existing session now carries the transport; its WELCOME and
    /// replay are queued in it (and its old transport told to close).
    Resumed {
        /// The session.
        session: SessionId,
        /// Messages written again.
        replayed: u64,
    },
    /// Send the refusal's frame (if any), flush, close the transport.
    Refused(Refusal),
}

/// The handshake's circumstances.
#[derive(Debug, Clone)]
pub struct Admission {
    /// When the frame arrived.
    pub now: Instant,
    /// The transport it arrived on.
    pub tid: TransportId,
    /// The refusal in force (admission control, drain): new sessions are
    /// refused with it; resumes only when it is `ShuttingDown`.
    pub refusal: Option<(RejectReason, Duration)>,
    /// The token a resume's WELCOME carries, when a durable store recorded
    /// it before the handshake went on (None: drawn here).
    pub fresh_token: Option<ResumeToken>,
}

/// Judges a new transport's first frame and acts on it (§5): decode against
/// the server's maximum frame, version (§5.2), a first-frame CLOSE (the
/// client abandoning its attempt: closed without a reply), admission, then
/// either `authenticate` and open, or claim the session from `sessions` and
/// resume it (token check, rotation, replacing the old transport, replay).
pub fn admit<U>(
    a: Admission,
    cfg: &Arc<ServerConfig>,
    rng: &mut Rng,
    bytes: &[u8],
    sessions: &mut impl Sessions,
    authenticate: impl FnOnce(&Hello) -> Result<U, String>,
) -> Admitted<U> {
    let refused = |r| Admitted::Refused(r);
    let hello = match Frame::decode(bytes, cfg.max_frame) {
        Ok(Frame::Hello(h)) => h,
        Ok(Frame::Close(_)) => return refused(Refusal { frame: None, reason: None }),
        Ok(other) => {
            let kind = other.kind();
            return refused(Refusal::close(
                CloseCode::ProtocolError,
                &format!("expected HELLO, got frame 0x{kind:02x}"),
            ));
        }
        Err(e) => return refused(Refusal::decode(&e)),
    };
    if !(hello.min_version..=hello.max_version).contains(&frame::VERSION) {
        let msg = format!(
            "this server speaks protocol version {} only; the client offered {}..={}",
            frame::VERSION,
            hello.min_version,
            hello.max_version
        );
        return refused(Refusal::reject(RejectReason::UnsupportedVersion, Duration::ZERO, &msg));
    }
    if let Some((reason, retry)) = a.refusal {
        if hello.resume.is_none() || reason == RejectReason::ShuttingDown {
            let msg = match reason {
                RejectReason::ShuttingDown => "the server is shutting down; reconnect after the delay given",
                RejectReason::Overloaded => "too many handshakes at once; retry after the delay given",
                _ => "the server is not accepting handshakes now; retry later",
            };
            return refused(Refusal::reject(reason, retry, msg));
        }
    }
    let Some(id) = hello.resume.as_ref().map(|r| r.session_id) else {
        return match authenticate(&hello) {
            Ok(user) => {
                Admitted::Opened { session: Box::new(ServerSession::open(a.now, cfg, rng, a.tid, &hello)), user }
            }
            Err(why) => refused(Refusal::reject(RejectReason::Unauthorized, Duration::ZERO, &why)),
        };
    };
    match sessions.claim(id, |s| s.resume(a.now, rng, a.tid, &hello, a.fresh_token)) {
        None => refused(Refusal::resume_failed(RejectReason::UnknownSession)),
        Some(Ok(replayed)) => Admitted::Resumed { session: id, replayed },
        Some(Err(r)) => refused(r),
    }
}

/// A refused handshake: the one frame to send before closing the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// REJECT (a HELLO that was understood), CLOSE (one that was not, or a
    /// resume that ended the session), or nothing (the client's own CLOSE).
    pub frame: Option<Frame>,
    /// The REJECT reason, when the frame is a REJECT.
    pub reason: Option<RejectReason>,
}

impl Refusal {
    /// A REJECT with this reason, retry-after and human-readable message.
    pub fn reject(reason: RejectReason, retry_after: Duration, message: &str) -> Self {
        let r = Reject {
            reason,
            retry_after_ms: u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX),
            min_version: frame::VERSION,
            max_version: frame::VERSION,
            message: frame::clip_reason(message),
        };
        Refusal { frame: Some(Frame::Reject(r)), reason: Some(reason) }
    }

    /// A REJECT for a resume that failed (unknown session, token checks).
    pub fn resume_failed(reason: RejectReason) -> Self {
        let msg = match reason {
            RejectReason::UnknownSession => "no such session: it expired or never existed; start a new one",
            RejectReason::InvalidToken => "the resume token does not match this session",
            RejectReason::TokenReused => {
                "the resume token was already used and rotated (replayed or duplicated handshake)"
            }
            _ => "the resume request is inconsistent with the session's state",
        };
        Refusal::reject(reason, Duration::ZERO, msg)
    }

    /// A CLOSE for bytes that did not decode as a frame.
    pub fn decode(err: &DecodeError) -> Self {
        Refusal::close(err.close_code(), &err.to_string())
    }

    /// A CLOSE 1002 for a transport that sent no frame in time. The
    /// transport may be abandoned instead (§5.5); a runtime that can write
    /// without blocking sends this first.
    pub fn handshake_timeout() -> Self {
        Refusal::close(CloseCode::HandshakeTimeout, "no valid HELLO within the handshake timeout")
    }

    pub(crate) fn close(code: CloseCode, reason: &str) -> Self {
        Refusal { frame: Some(Frame::close(code, Duration::ZERO, reason)), reason: None }
    }
}
