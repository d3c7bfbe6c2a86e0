//! `tether` — sessions that outlive their transports.
//!
//! - `tether serve`: the gateway (in-memory sessions, rooms with presence,
//!   auth, admin API, metrics, demo page), on loopback unless configured;
//! - `tether config check FILE`: checks a gateway config file;
//! - `tether connect URL`: an interactive client showing link state, RTT
//!   and resumes; stdin lines become messages;
//! - `tether simulate`: the protocol core in virtual time through an outage;
//! - `tether lab`: real faults between network namespaces, measured.

mod bench;
mod connect;
mod gateway;
mod lab;
mod simulate;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use tether_proto::Profile;

#[derive(Parser)]
#[command(name = "tether", version, about = "Sessions that outlive their transports")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ProfileArg {
    /// Dead link detected within ~40 s.
    Default,
    /// Dead link detected within ~9 s (calls, games).
    Realtime,
    /// Learns the longest ping interval the network's NATs allow.
    Adaptive,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::Default => Profile::Default,
            ProfileArg::Realtime => Profile::Realtime,
            ProfileArg::Adaptive => Profile::Adaptive,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OutageKind {
    /// The client's cable is pulled: its link goes down and comes back, and it is told.
    Cable,
    /// An upstream router drops everything: nothing tells the client.
    Blackhole,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: in-memory sessions; every message is relayed to every session.
    Serve(gateway::Args),
    /// Config files: `tether config check FILE`, `tether config example`.
    #[command(subcommand)]
    Config(gateway::ConfigCmd),
    /// Connect interactively: shows link state, RTT and resumes; each stdin line is sent.
    Connect(connect::Args),
    /// Benchmarks (release builds): `tether bench memory --sessions 10000`.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// The fault lab (Linux, root): real outages, loss, NAT timeouts and roaming between
    /// network namespaces, measured and checked. `tether lab suite` runs them all.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Internal: one process of a lab scenario.
    #[command(hide = true, subcommand)]
    LabNode(lab::node::Node),
    /// Internal: one process of a benchmark.
    #[command(hide = true, subcommand)]
    BenchNode(bench::Node),
    /// Run client and server in virtual time through a network outage and print the timeline.
    Simulate {
        /// How long the network is down (e.g. 50s, 70s, 1m30s).
        #[arg(long, default_value = "50s", value_parser = duration)]
        outage: Duration,
        /// How the network fails.
        #[arg(long, value_enum, default_value_t = OutageKind::Blackhole)]
        kind: OutageKind,
        /// Heartbeat profile.
        #[arg(long, value_enum, default_value_t = ProfileArg::Default)]
        profile: ProfileArg,
        /// How long the server keeps a session without contact.
        #[arg(long, default_value = "60s", value_parser = duration)]
        grace: Duration,
        /// Seed for the network and both machines; equal seeds give equal runs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Server memory per idle WebSocket session vs a raw tokio TCP floor, and after one large message each.
    Memory(bench::MemoryArgs),
    /// The gateway's room fan-out: N members join one room, one says M messages; delivery latency, CPU, memory.
    Rooms(bench::RoomsArgs),
}

/// Parses `50s`, `1500ms`, `2m`, `1m 30s`, saying how to fix a bad one.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}; write a duration with a unit, e.g. 50s or 1500ms"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Simulate { outage, kind, profile, grace, seed } => {
            simulate::simulate(outage, kind, profile.into(), grace, seed)
        }
        Command::Serve(a) => runtime()?.block_on(gateway::run(a)),
        Command::Config(c) => gateway::config_cmd(c),
        Command::Connect(a) => runtime()?.block_on(connect::run(a)),
        Command::Bench(BenchCmd::Memory(a)) => bench::memory(a),
        Command::Bench(BenchCmd::Rooms(a)) => runtime()?.block_on(bench::rooms(a)),
        Command::BenchNode(n) => runtime()?.block_on(bench::node(n)),
        Command::Lab(c) => lab::main(c),
        Command::LabNode(n) => runtime()?.block_on(lab::node::run(n)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Seconds since `start`, for log lines.
pub(crate) fn stamp(start: std::time::Instant) -> String {
    format!("[{:>8.3}s]", start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_how_to_fix_them() {
        assert_eq!(duration("50s"), Ok(Duration::from_secs(50)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(duration("50").expect_err("no unit").contains("with a unit"));
        assert!(duration("5 parsecs").is_err());
    }
}
