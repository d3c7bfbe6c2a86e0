//! # tether-sim — a deterministic network for tether-proto
//!
//! Runs a real [`tether_proto::Client`] against a real server — the
//! shipped [`tether_proto::admit`] and [`tether_proto::ServerSession`]s, each
//! driven by its own timer as the runtime's session tasks drive them
//! ([`tether_proto::Server`]) — in virtual time over a simulated path with loss,
//! delay, jitter, one-way stalls, outages (with or without a local link
//! signal), transport resets, kills during replay and NATs that forget idle
//! flows. Everything is drawn from one seed: a run is a pure function of its
//! [`SimConfig`], so a failure is replayed exactly from the seed it prints.
//!
//! [`schedule`] generates random fault schedules and checks the session
//! guarantees on them; the [`check::Ledger`] proves exactly-once, in-order
//! delivery by attributing every message to its session.
//!
//! With a [`store::Store`] behind the server ([`SimConfig::with_store`]),
//! server nodes can die ([`Fault::NodeDeath`]) and the store can fail
//! ([`Fault::StoreDown`]): a client message counts as delivered when its
//! effects are committed in the store, and the ledger proves exactly-once
//! both ways across node deaths.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod check;
pub mod net;
pub mod schedule;
pub mod sim;
pub mod store;

pub use net::{Dir, Fault, PathConfig, Side};
pub use sim::{Sim, SimConfig, Stats, StoreConfig};
pub use store::Store;
