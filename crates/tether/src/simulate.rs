//! `tether simulate`: the real protocol core, client and server, in virtual
//! time over a simulated network, printing the timeline of an outage being
//! survived (or, past the grace period, explicitly expiring).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tether_proto::{ClientConfig, ClientEvent, Profile};
use tether_sim::{Fault, Sim, SimConfig};

/// How the simulated network fails (`--kind`).
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum OutageKind {
    /// The client's cable is pulled: its link goes down and comes back, and it is told.
    Cable,
    /// An upstream router drops everything: nothing tells the client.
    Blackhole,
}

pub(crate) fn simulate(outage: Duration, kind: OutageKind, profile: Profile, grace: Duration, seed: u64) -> Result<()> {
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
