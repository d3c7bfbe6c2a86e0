//! # tether-runtime — sessions over real sockets
//!
//! The tokio runtime around the sans-IO core in `tether-proto`. The core
//! decides everything (when to ping, when a link is dead, when to
//! reconnect, what to replay); this crate moves bytes and time:
//!
//! - [`transport`]: TCP, TLS, WebSocket and secure WebSocket connections
//!   carrying whole frames, with buffers that stay small when idle;
//! - [`tune`]: keepalive, TCP_USER_TIMEOUT and TCP_NODELAY derived from the
//!   heartbeat, and read back from the kernel;
//! - [`client`]: a client that connects, reconnects and resumes by itself,
//!   with a netlink network watcher on Linux;
//! - [`server`]: listeners, handshakes with admission control, one task per
//!   session, grace expiry and a draining shutdown.

#![warn(missing_docs)]

pub mod client;
mod driver;
pub mod endpoint;
mod netwatch;
mod outbox;
pub mod server;
pub mod store;
pub mod tls;
pub mod transport;
pub mod tune;

pub use client::{Client, ClientHandle, ClientOptions, Event};
pub use endpoint::{DialConfig, Endpoint};
pub use server::{Applicant, Authenticate, Denial, ServerEvent, ServerHandle, ServerOptions};
pub use transport::Kind;
pub use tune::{Keepalive, SocketReport, SocketTuning};
