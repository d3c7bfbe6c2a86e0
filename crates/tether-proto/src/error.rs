//! Codes on the wire and errors by role: why a transport or session ended,
//! what the peer did wrong, what the caller misused.

use std::time::Duration;

use crate::frame::DecodeError;

/// CLOSE codes (`docs/PROTOCOL.md` §6).
///
/// The thousands digit tells the receiver what to do: 1xxx and 2xxx close
/// only the transport (reconnect and resume), 3xxx and 4xxx end the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: the transport was replaced by a resume on another transport.
    TransportReplaced,
    /// 1001: the server is going away (drain, restart); resume after `retry_after`.
    GoingAway,
    /// 1002: the handshake did not complete in time.
    HandshakeTimeout,
    /// 1003: the sender deferred DATA its application could not take yet
    /// (its receive window was full) and has caught up: resume, and the
    /// deferred messages are replayed (`docs/PROTOCOL.md` §7.8).
    Resync,
    /// 2000: a malformed frame or a frame not allowed in this state.
    ProtocolError,
    /// 2001: a frame longer than the receiver's announced maximum.
    FrameTooLarge,
    /// 3000: the session was ended deliberately by the sender's application.
    Normal,
    /// 3001: the sender's replay buffer overflowed; the session cannot stay exactly-once.
    ReplayOverflow,
    /// 3002: the session's grace period ran out.
    SessionExpired,
    /// 3003: the peer broke the sequence rules (a gap, or an ack for data never sent).
    SequenceViolation,
    /// 3004: an operator removed the session.
    Kicked,
    /// 3005: a message waiting for the receiver is larger than the maximum
    /// frame the receiver announced (on a resume): it can never be
    /// delivered, so the session ends and hands it back (§3.2).
    FrameLimit,
    /// 4000–4999: application-defined; ends the session.
    Application(u16),
}

impl CloseCode {
    /// The number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            CloseCode::TransportReplaced => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::HandshakeTimeout => 1002,
            CloseCode::Resync => 1003,
            CloseCode::ProtocolError => 2000,
            CloseCode::FrameTooLarge => 2001,
            CloseCode::Normal => 3000,
            CloseCode::ReplayOverflow => 3001,
            CloseCode::SessionExpired => 3002,
            CloseCode::SequenceViolation => 3003,
            CloseCode::Kicked => 3004,
            CloseCode::FrameLimit => 3005,
            CloseCode::Application(c) => c,
        }
    }

    /// Parses a wire code; `None` for unassigned numbers.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1000 => CloseCode::TransportReplaced,
            1001 => CloseCode::GoingAway,
            1002 => CloseCode::HandshakeTimeout,
            1003 => CloseCode::Resync,
            2000 => CloseCode::ProtocolError,
            2001 => CloseCode::FrameTooLarge,
            3000 => CloseCode::Normal,
            3001 => CloseCode::ReplayOverflow,
            3002 => CloseCode::SessionExpired,
            3003 => CloseCode::SequenceViolation,
            3004 => CloseCode::Kicked,
            3005 => CloseCode::FrameLimit,
            4000..=4999 => CloseCode::Application(v),
            _ => return None,
        })
    }

    /// True when the session ends with the transport (3xxx, 4xxx).
    pub fn ends_session(self) -> bool {
        self.to_u16() >= 3000
    }

    /// The code an application's deliberate close is sent with: itself when
    /// it ends a session, else 3000 (a 1xxx/2xxx code, or an application
    /// code outside 4000–4999, cannot end one).
    pub fn for_session_end(self) -> CloseCode {
        match CloseCode::from_u16(self.to_u16()) {
            Some(c) if c.ends_session() => c,
            _ => CloseCode::Normal,
        }
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.to_u16(), self)
    }
}

/// REJECT reasons (`docs/PROTOCOL.md` §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// 1: no protocol version in common.
    UnsupportedVersion,
    /// 2: the session to resume is unknown or has expired.
    UnknownSession,
    /// 3: the resume token does not match.
    InvalidToken,
    /// 4: the resume token was valid once but has been rotated away
    /// (a replayed or duplicated handshake).
    TokenReused,
    /// 5: too many handshakes at once; retry after the given delay.
    Overloaded,
    /// 6: the server is draining; retry after the given delay.
    ShuttingDown,
    /// 7: the credential was refused.
    Unauthorized,
    /// 8: the HELLO's values cannot work with this server (e.g. frame limits).
    BadHello,
}

impl RejectReason {
    /// The number on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            RejectReason::UnsupportedVersion => 1,
            RejectReason::UnknownSession => 2,
            RejectReason::InvalidToken => 3,
            RejectReason::TokenReused => 4,
            RejectReason::Overloaded => 5,
            RejectReason::ShuttingDown => 6,
            RejectReason::Unauthorized => 7,
            RejectReason::BadHello => 8,
        }
    }

    /// Parses a wire reason; `None` for unassigned numbers.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => RejectReason::UnsupportedVersion,
            2 => RejectReason::UnknownSession,
            3 => RejectReason::InvalidToken,
            4 => RejectReason::TokenReused,
            5 => RejectReason::Overloaded,
            6 => RejectReason::ShuttingDown,
            7 => RejectReason::Unauthorized,
            8 => RejectReason::BadHello,
            _ => return None,
        })
    }

    /// True when a rejected resume means the session is gone for good, so the
    /// client must start a fresh one.
    pub fn session_gone(self) -> bool {
        matches!(self, RejectReason::UnknownSession | RejectReason::InvalidToken | RejectReason::TokenReused)
    }

    /// True when retrying later can succeed without any change by the user.
    pub fn is_transient(self) -> bool {
        matches!(self, RejectReason::Overloaded | RejectReason::ShuttingDown)
    }
}

/// Why one transport stopped carrying the session. The session itself may
/// continue on another transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportLoss {
    /// Nothing was heard for the whole probe cycle (client) or idle timeout
    /// (server). Governed by the heartbeat settings.
    #[error("heartbeat timeout: nothing heard for {:.1}s", silent_for.as_secs_f64())]
    HeartbeatTimeout {
        /// How long the peer had been silent.
        silent_for: Duration,
    },
    /// The runtime reported the transport closed or failed.
    #[error("the connection closed or failed")]
    Closed,
    /// The handshake did not complete within the handshake timeout.
    #[error("no handshake answer within the handshake timeout")]
    HandshakeTimeout,
    /// The peer sent a CLOSE that keeps the session (1xxx/2xxx).
    #[error("the peer closed the transport ({}: {reason})", code.to_u16())]
    PeerClosed {
        /// The peer's code.
        code: CloseCode,
        /// The peer's reason text.
        reason: String,
    },
    /// The peer sent bytes that are not valid protocol.
    #[error("malformed input from the peer: {0}")]
    Malformed(DecodeError),
    /// The peer sent a valid frame that is not allowed in this state.
    #[error("unexpected frame 0x{kind:02x} from the peer")]
    UnexpectedFrame {
        /// The frame's type byte.
        kind: u8,
    },
    /// The server refused the handshake.
    #[error("refused by the server ({reason:?}): {message}")]
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The server's detail text.
        message: String,
    },
    /// A newer transport of the same session took over.
    #[error("replaced by a newer transport")]
    Replaced,
    /// A network-change probe found the link dead.
    #[error("the network changed and the link did not answer a probe")]
    NetworkChanged,
    /// This side deferred messages its application could not take yet and
    /// replaced the transport to have them replayed (CLOSE 1003).
    #[error("resync: messages deferred while the application was busy are replayed on a new transport")]
    Resync,
}

/// Why a session ended for good. After this, nothing more of the session is
/// delivered; unacknowledged outgoing messages are handed back with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The grace period elapsed while the session had no transport (or, on the
    /// client, the server said the session is unknown).
    #[error("expired: the grace period ran out, or the server no longer knows the session (e.g. it restarted)")]
    Expired,
    /// This side's application closed the session.
    #[error("closed by this side")]
    LocalClose,
    /// The peer closed the session with a 3xxx/4xxx code.
    #[error("closed by the peer ({}: {reason})", code.to_u16())]
    PeerClosed {
        /// The peer's code.
        code: CloseCode,
        /// The peer's reason text.
        reason: String,
    },
    /// The replay buffer overflowed under the `Close` overflow policy.
    #[error("replay buffer overflow ({messages} messages, {bytes} bytes unacknowledged)")]
    ReplayOverflow {
        /// Messages buffered when it overflowed.
        messages: usize,
        /// Bytes buffered when it overflowed.
        bytes: usize,
    },
    /// The peer broke the sequence rules.
    #[error("sequence violation: {0}")]
    SequenceViolation(SequenceError),
    /// The server refused the client for a reason retrying cannot fix.
    #[error("refused by the server ({reason:?}): {message}")]
    Refused {
        /// Why.
        reason: RejectReason,
        /// The server's detail text.
        message: String,
    },
    /// The server's settings cannot work with this client's heartbeat.
    #[error("incompatible settings: {0}")]
    Incompatible(String),
}

/// Sequence rules a peer can break (`docs/PROTOCOL.md` §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// DATA skipped a sequence number.
    #[error("DATA seq {got} arrived but {expected} was next")]
    Gap {
        /// Expected next sequence number.
        expected: u64,
        /// Received.
        got: u64,
    },
    /// An ack (or resume `last_received`) for data that was never sent.
    #[error("ack {ack} is beyond the last sequence number sent ({sent})")]
    AckBeyondSent {
        /// The ack received.
        ack: u64,
        /// Highest sequence number sent.
        sent: u64,
    },
    /// A resume claims less than what was already acknowledged.
    #[error("resume claims {claimed} received but {acked} was already acknowledged")]
    AckWentBack {
        /// `last_received` in the handshake.
        claimed: u64,
        /// What had been acknowledged before.
        acked: u64,
    },
}

/// Why `send` refused a message. The message was not queued; nothing already
/// queued was affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The replay buffer is full; wait for acknowledgements (a `Drained` event)
    /// or raise `replay.max_bytes` / `replay.max_messages`.
    #[error("replay buffer full ({messages} messages, {bytes} bytes buffered); retry after the peer acknowledges or raise the replay limits")]
    BufferFull {
        /// Messages buffered.
        messages: usize,
        /// Bytes buffered.
        bytes: usize,
    },
    /// The payload cannot fit in one frame the peer accepts.
    #[error("message of {len} bytes exceeds the largest frame the peer accepts ({max} bytes of payload)")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload allowed.
        max: usize,
    },
    /// The session has ended; start a new one.
    #[error("the session has ended: {0}")]
    SessionEnded(SessionEnd),
    /// No such session here: it ended (its `Ended` event said why) or
    /// never existed.
    #[error("no such session: it ended (its Ended event says why) or never existed")]
    NoSession,
    /// The server keeps its sessions in a durable store: a message must be
    /// stored (and numbered) there first, with the asynchronous publish.
    #[error("this server keeps its sessions in a store: send with publish, which stores the message first")]
    Stored,
    /// A message numbered by a durable store arrived ahead of its
    /// predecessors: fetch `expected..got` from the store first.
    #[error("message {got} arrived before message {expected}; fetch the missing ones from the store first")]
    OutOfOrder {
        /// The seq the session needs next.
        expected: u64,
        /// The seq offered.
        got: u64,
    },
}

/// A configuration that cannot work, with the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{field}`: {problem}; {fix}")]
pub struct ConfigError {
    /// The setting at fault.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    /// An error for `field`: what is wrong and what to do.
    pub fn new(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError { field, problem: problem.into(), fix: fix.into() }
    }
}
