//! `tether` — sessions that outlive their transports.
//!
//! - `tether serve`: the gateway (in-memory sessions, rooms with presence,
//!   auth, admin API, metrics, demo page), on loopback unless configured;
//! - `tether config check FILE`: checks a gateway config file;
//! - `tether connect URL`: an interactive client showing link state, RTT
//!   and resumes; stdin lines become messages;
//! - `tether simulate`: the protocol core in virtual time through an outage;
//! - `tether lab`: real faults between network namespaces, measured.

mod alloc;
mod bench;
mod connect;
mod serve;
mod simulate;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tether_args::{duration, ProfileArg};

use crate::simulate::OutageKind;

#[derive(Parser)]
#[command(name = "tether", version, about = "Sessions that outlive their transports")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: rooms with presence, an admin API and a demo page, in memory.
    ///
    /// Clients open tether sessions (TCP, WebSocket, TLS, secure WebSocket) and speak the room
    /// protocol on them: join, leave, say, members. A member's presence follows its session
    /// through reconnects (active, reconnecting, left, expired). Beside the sessions: JWT or
    /// anonymous auth, an admin HTTP API (sessions, rooms, publish, kick and ban, drain) with
    /// Prometheus metrics and an OpenAPI description, and a demo page serving the browser client.
    /// Ctrl-C or SIGTERM drains and stops. Reference: docs/GATEWAY.md.
    Serve(serve::Args),
    /// Config files: `tether config check FILE`, `tether config example`.
    #[command(subcommand)]
    Config(serve::ConfigCmd),
    /// Connect interactively: shows link state, RTT and resumes; each stdin line is sent.
    Connect(connect::Args),
    /// Benchmarks (release builds): `tether bench memory --sessions 10000`.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// The fault lab (Linux, root): real outages, loss, NAT timeouts and roaming between
    /// network namespaces, measured and checked. `tether lab suite` runs them all.
    #[command(subcommand)]
    Lab(tether_lab::LabCmd),
    /// Internal: one process of a lab scenario.
    #[command(hide = true, subcommand)]
    LabNode(tether_lab::node::Node),
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
    /// A cluster on Redis: nodes sharing a port restarted in turn, then one killed; time until every session is back.
    Cluster(bench::ClusterArgs),
    /// Load on any gateway: N heartbeating sessions (optionally talking in rooms); progress line and JSON report.
    Load(bench::LoadArgs),
}

/// Errors are the user's to fix (a bad config, an unreachable server), so
/// they are printed as `error: ` and their causes on one line, and the exit
/// status is 1 — never with the backtrace anyhow captures when
/// `RUST_BACKTRACE` is set, which is for bugs: a panic still shows one.
/// Usage errors are clap's (exit status 2).
fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr closed too: nothing more to say.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Simulate { outage, kind, profile, grace, seed } => {
            simulate::simulate(outage, kind, profile.into(), grace, seed)
        }
        Command::Serve(a) => runtime()?.block_on(serve::serve(a)),
        Command::Config(c) => serve::config_cmd(c),
        Command::Connect(a) => {
            let rt = runtime()?;
            let r = rt.block_on(connect::run(a));
            // Without waiting for the thread reading stdin: its read cannot
            // be cancelled, and would hold the exit until the next line
            // when the session ended by itself (a kick, a refusal).
            rt.shutdown_background();
            r
        }
        Command::Bench(BenchCmd::Memory(a)) => bench::memory(a),
        Command::Bench(BenchCmd::Rooms(a)) => runtime()?.block_on(bench::rooms(a)),
        Command::Bench(BenchCmd::Cluster(a)) => runtime()?.block_on(bench::cluster(a)),
        Command::Bench(BenchCmd::Load(a)) => bench::load(a),
        Command::BenchNode(n) => runtime()?.block_on(bench::node(n)),
        Command::Lab(c) => tether_lab::run(c),
        Command::LabNode(n) => runtime()?.block_on(tether_lab::node::run(n)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
