//! `tether bench`: measured figures, never timed tests (release builds).
//!
//! - `memory`: server memory per idle session against the raw TCP floor.

mod memory;

pub(crate) use memory::{memory, node, MemoryArgs, Node};
