//! What the client tells its application.

use std::time::Duration;

use bytes::Bytes;

use crate::error::{SessionEnd, TransportLoss};
use crate::token::SessionId;

/// What the client tells its application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A new session is established.
    Connected {
        /// Its id.
        session: SessionId,
    },
    /// The session continues on a new transport.
    Resumed {
        /// Its id.
        session: SessionId,
        /// Messages written again because the server had not received them.
        replayed: u64,
    },
    /// The transport carrying the session was lost; the session is kept.
    Disconnected {
        /// Why.
        reason: TransportLoss,
    },
    /// A connection attempt failed before the session was (re)established:
    /// refused (e.g. Overloaded with a retry-after), timed out, or closed.
    AttemptFailed {
        /// Why.
        reason: TransportLoss,
    },
    /// A connection attempt is scheduled.
    Reconnecting {
        /// Attempts that failed in a row before this one.
        attempt: u32,
        /// Wait before it.
        delay: Duration,
    },
    /// An application message, delivered exactly once and in order.
    Message(Bytes),
    /// A round-trip time measured by PING/PONG.
    Rtt(Duration),
    /// Application data carried on a PONG.
    PongPayload(Bytes),
    /// Application data carried on a PING from the server.
    PingPayload(Bytes),
    /// A probe cycle failed but the heartbeat is not enforced (debug mode).
    HeartbeatMissed,
    /// The adaptive profile changed the heartbeat interval on a network
    /// (it learned the path tolerates longer silences, or that it does not).
    /// Persist [`Adaptive::export`] to start from what was learned next time.
    IntervalLearned {
        /// The network key the interval applies to.
        network: String,
        /// The idle interval now in use there.
        interval: Duration,
    },
    /// The session ended; its unacknowledged outgoing messages are handed back.
    SessionEnded {
        /// The session (None if none had been established yet).
        session: Option<SessionId>,
        /// Why.
        reason: SessionEnd,
        /// Messages the server never acknowledged, oldest first. Some may have
        /// arrived (their ack was lost); none will be delivered from now on.
        unacked: Vec<Bytes>,
        /// True when the client goes on to open a fresh session by itself.
        restarting: bool,
    },
}
