//! `tether bench`: measured figures, never timed tests (release builds).
//!
//! - `memory`: server memory per idle session against the raw TCP floor;
//! - `rooms`: the gateway's room fan-out: a join storm, then messages to
//!   every member, with delivery latency and the gateway's CPU and memory;
//! - `cluster`: nodes on Redis restarted in turn and killed, with the time
//!   until every session is carried again;
//! - `load`: the load generator, for any gateway (the product's own).

mod cluster;
mod load;
mod memory;
mod rooms;

pub(crate) use cluster::{cluster, ClusterArgs};
pub(crate) use load::{load, LoadArgs};
pub(crate) use memory::{memory, node, MemoryArgs, Node};
pub(crate) use rooms::{rooms, RoomsArgs};
