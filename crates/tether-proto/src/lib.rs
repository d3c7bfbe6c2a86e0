//! # tether-proto — wire protocol v1 and the sans-IO session core
//!
//! Everything tether decides lives here: frame layouts, when to ping, when a
//! link is dead, how long to back off, how a session resumes without losing
//! or duplicating a message. Nothing here touches a socket, reads the clock,
//! spawns a thread or draws from a thread RNG (clippy's `disallowed-methods`
//! enforces it). Time comes in as `now` on every call; randomness comes from
//! the injected [`Rng`]. So every rule can be tested in virtual time, and a
//! failing schedule replays exactly from its seed.
//!
//! ```text
//!             handle_connected / handle_frame (bytes) / handle_transport_closed
//!   runtime ──handle_timeout(now) / handle_network_change / send / close──▶ Client | ServerSession
//!   (bytes,                                                                   │
//!    timers) ◀──── poll_transmit (Connect / Send frame / Close) ──────────────┤
//!            ◀──── poll_event, as fast as the application takes events ──────┤
//!            ◀──── poll_timeout (the next deadline) ─────────────────────────┘
//! ```
//!
//! A server routes each new transport's first frame through [`admit`], the
//! one function that opens, resumes or refuses, then drives each
//! [`ServerSession`] with its own timer ([`server`] has the picture).
//!
//! ## The drive contract
//!
//! 1. Feed every input with the current time: `handle_connected`,
//!    `handle_frame` (client) / `handle_bytes` (server session) with one
//!    whole frame's bytes (a WebSocket message, or a frame cut from a TCP
//!    stream with [`frame::decode_stream`]), `handle_decode_error`,
//!    `handle_transport_closed`, `handle_network_change`, and the commands
//!    `send` and `close`.
//! 2. After **each** input, drain outputs: call `poll_transmit` until `None`
//!    and carry each [`Transmit`] out in order (open a transport, write a
//!    frame, close a transport). Take events with `poll_event` as fast as
//!    the application handles them: a message is acknowledged only once
//!    taken, and untaken ones fill the receive window (`docs/PROTOCOL.md`
//!    §7.8) — never wait for the application before writing.
//! 3. Sleep until `poll_timeout()` (or until input arrives), then call
//!    `handle_timeout(now)` and go to 2. Calling `handle_timeout` early is
//!    harmless; calling it late only delays what it does.
//! 4. `now` must never go backwards.
//!
//! A transport's identity is a [`TransportId`]. Input for an id the machine no
//! longer uses is ignored, which is how "the old transport delivers nothing
//! after a resume" holds whatever the runtime still has in flight.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tether_proto::{Client, ClientConfig, Profile, Rng, Transmit};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let start = std::time::Instant::now();
//! let mut now: Instant = start; // the runtime's clock, or a virtual one
//! let mut client = Client::new(ClientConfig::profile(Profile::Default), Rng::from_seed(1), now)?;
//! for _ in 0..3 {
//!     while let Some(t) = client.poll_transmit() {
//!         match t {
//!             Transmit::Connect { transport } => { /* open a socket, then: */ client.handle_connected(now, transport) }
//!             Transmit::Send { transport: _, frame: _ } => { /* write frame.encode_length_prefixed(..) */ }
//!             Transmit::Close { .. } => { /* drop the socket */ }
//!         }
//!     }
//!     while let Some(_event) = client.poll_event() {}
//!     now = client.poll_timeout().unwrap_or(now + Duration::from_secs(1));
//!     client.handle_timeout(now);
//! }
//! # Ok(()) }
//! ```
//!
//! The normative description of every byte and timer is `docs/PROTOCOL.md`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod backoff;
pub mod client;
pub mod error;
pub mod frame;
pub mod heartbeat;
mod outputs;
pub mod race;
pub mod rng;
pub mod server;
pub mod stream;
pub mod token;

pub use adaptive::{Adaptive, AdaptiveConfig};
pub use backoff::{Backoff, BackoffConfig};
pub use client::{Client, ClientConfig, ClientEvent};
pub use error::{CloseCode, ConfigError, RejectReason, SendError, SequenceError, SessionEnd, TransportLoss};
pub use frame::{DecodeError, Frame};
pub use heartbeat::{HeartbeatConfig, Profile};
pub use race::RaceConfig;
pub use rng::Rng;
pub use server::{
    admit, Admission, Admitted, RecordError, Refusal, Server, ServerConfig, ServerSession, SessionEvent, SessionRecord,
    Sessions,
};
pub use stream::{AckConfig, OverflowPolicy, ReceiveWindow, ReplayLimits};
pub use token::{ResumeToken, SessionId, TokenHash, TokenState};

/// Names one transport (one TCP, TLS or WebSocket connection) of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportId(pub u64);

/// Something the runtime must do on a transport.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// Open a new transport and report it with `handle_connected` (or
    /// `handle_transport_closed` if it fails). Client only.
    Connect {
        /// The id to report it under.
        transport: TransportId,
    },
    /// Write this frame on the transport.
    Send {
        /// Where.
        transport: TransportId,
        /// What.
        frame: Frame,
    },
    /// Close the transport. With `flush`, first write what was queued for it
    /// (bounded by a short timeout); without, drop it at once — the peer is
    /// presumed dead and owed no goodbye.
    Close {
        /// Which.
        transport: TransportId,
        /// Whether queued frames go out first.
        flush: bool,
    },
}

/// Pops the front of a queue and gives its storage back once it is empty:
/// a long-lived idle session must not keep the capacity a burst grew.
/// (One allocation per burst is the price; an idle server holds many
/// thousands of sessions, each with several such queues.)
pub(crate) fn pop_release<T>(q: &mut std::collections::VecDeque<T>) -> Option<T> {
    let item = q.pop_front();
    if q.is_empty() && q.capacity() > 0 {
        *q = std::collections::VecDeque::new();
    }
    item
}

/// A fixed instant for unit tests: they only ever add durations to it.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    #[test]
    fn a_drained_queue_gives_its_storage_back() {
        let mut q: VecDeque<u32> = (0..100).collect();
        assert!(q.capacity() >= 100);
        for want in 0..99 {
            assert_eq!(super::pop_release(&mut q), Some(want));
            assert!(q.capacity() >= 1, "storage released while items remain");
        }
        assert_eq!(super::pop_release(&mut q), Some(99));
        assert_eq!(q.capacity(), 0);
        assert_eq!(super::pop_release(&mut q), None);
    }
}
