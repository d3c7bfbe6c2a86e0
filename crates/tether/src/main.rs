//! `tether` — sessions that outlive their transports.
//!
//! Until the tokio runtime lands (issue #3), the main job is `tether
//! simulate`: the real protocol core, client and server, run in virtual time
//! over a simulated network, printing the timeline of an outage being
//! survived (or, past the grace period, explicitly expiring).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tether_proto::{ClientConfig, ClientEvent, Profile};
use tether_sim::{Fault, Sim, SimConfig};

#[derive(Parser)]
#[command(name = "tether", version, about = "Sessions that outlive their transports")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProfileArg {
    Default,
    Realtime,
    Adaptive,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutageKind {
    /// The client's cable is pulled: its link goes down and comes back, and it is told.
    Cable,
    /// An upstream router drops everything: nothing tells the client.
    Blackhole,
}

#[derive(Subcommand)]
enum Command {
    /// Run client and server in virtual time through a network outage and print the timeline.
    Simulate {
        /// How long the network is down (e.g. 50s, 70s, 1m30s).
        #[arg(long, default_value = "50s", value_parser = humantime_like)]
        outage: Duration,
        /// How the network fails.
        #[arg(long, value_enum, default_value_t = OutageKind::Blackhole)]
        kind: OutageKind,
        /// Heartbeat profile.
        #[arg(long, value_enum, default_value_t = ProfileArg::Default)]
        profile: ProfileArg,
        /// How long the server keeps a session without contact.
        #[arg(long, default_value = "60s", value_parser = humantime_like)]
        grace: Duration,
        /// Seed for the network and both machines; equal seeds give equal runs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Parses `50s`, `1500ms`, `2m`, `1m30s`.
fn humantime_like(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(n) = chars.peek().filter(|n| n.is_ascii_alphabetic()) {
            unit.push(*n);
            chars.next();
        }
        let v: f64 = num.parse().map_err(|_| format!("{s:?}: expected a number before {unit:?}"))?;
        let secs = match unit.as_str() {
            "ms" => v / 1000.0,
            "s" => v,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h (e.g. 50s)")),
        };
        total += Duration::from_secs_f64(secs);
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("{s:?}: give a unit, e.g. 50s or 1500ms"));
    }
    Ok(total)
}

fn simulate(outage: Duration, kind: OutageKind, profile: ProfileArg, grace: Duration, seed: u64) -> Result<()> {
    let profile = match profile {
        ProfileArg::Default => Profile::Default,
        ProfileArg::Realtime => Profile::Realtime,
        ProfileArg::Adaptive => Profile::Adaptive,
    };
    let mut cfg = SimConfig::new(seed, ClientConfig::profile(profile));
    cfg.server.grace = grace;
    cfg.server.validate().context("invalid --grace")?;
    let start = Duration::from_secs(10);
    cfg.faults.push(Fault::Outage { start, len: outage, link_signal: matches!(kind, OutageKind::Cable) });
    cfg.client_every = Some(Duration::from_secs(1));
    cfg.server_every = Some(Duration::from_secs(1));
    cfg.traffic_until = start + outage + Duration::from_secs(20);
    cfg.duration = cfg.traffic_until + Duration::from_secs(10);
    println!(
        "tether simulate: {profile:?} heartbeat, {}s grace, {} for {}s starting at 10s; both sides send a message every ~1s (seed {seed})\n",
        grace.as_secs_f64(),
        match kind {
            OutageKind::Cable => "cable pulled",
            OutageKind::Blackhole => "upstream blackhole",
        },
        outage.as_secs_f64()
    );
    let mut sim = Sim::new(cfg);
    sim.run();
    print!("{}", sim.timeline());
    let l = &sim.ledger;
    if let Some(v) = l.violations.first() {
        bail!("delivery guarantee violated ({} violations); first: {v}", l.violations.len());
    }
    let up: u32 = l.at_server.values().map(|x| x.1).sum();
    let down: u32 = l.at_client.values().sum();
    let sent_up: u32 = l.client_sent.values().sum();
    let sent_down: u32 = l.server_sent.values().sum();
    let ended = sim.client_log.iter().find_map(|(t, e)| match e {
        ClientEvent::SessionEnded { unacked, .. } => Some((*t, unacked.len())),
        _ => None,
    });
    println!("\nmessages client→server: {up} delivered of {sent_up} sent; server→client: {down} of {sent_down}; 0 duplicated, 0 reordered");
    match ended {
        None => println!("result: the same session survived the outage ({} resume(s))", sim.client.resumes()),
        Some((t, n)) => println!(
            "result: the session expired at {:.1}s ({n} unacknowledged messages handed back to the application); a fresh session carried on",
            t.as_secs_f64()
        ),
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Simulate { outage, kind, profile, grace, seed } => simulate(outage, kind, profile, grace, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_how_to_fix_them() {
        assert_eq!(humantime_like("50s"), Ok(Duration::from_secs(50)));
        assert_eq!(humantime_like("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(humantime_like("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(humantime_like("50").expect_err("no unit").contains("give a unit"));
        assert!(humantime_like("5 parsecs").is_err());
    }
}
