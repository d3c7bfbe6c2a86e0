//! The adaptive profile against a NAT that forgets flows idle for X: it must
//! settle on an interval below X and close to it, then stop losing the link.

use std::time::Duration;

use tether_proto::{ClientConfig, ClientEvent, Profile, TransportLoss};
use tether_sim::{Fault, Sim, SimConfig};

fn run(nat: Duration, seed: u64) -> (Sim, Vec<Duration>) {
    let mut cfg = SimConfig::new(seed, ClientConfig::profile(Profile::Adaptive));
    cfg.faults.push(Fault::NatIdle { timeout: nat });
    cfg.duration = Duration::from_secs(4 * 3600);
    let mut sim = Sim::new(cfg);
    sim.run();
    let deaths = sim
        .client_log
        .iter()
        .filter_map(|(t, e)| {
            matches!(e, ClientEvent::Disconnected { reason: TransportLoss::HeartbeatTimeout { .. } }).then_some(*t)
        })
        .collect();
    (sim, deaths)
}

#[test]
fn adaptive_interval_settles_just_below_the_nat_timeout_and_stops_losing_the_link() {
    for (seed, secs) in [(1u64, 100u64), (2, 137), (3, 250)] {
        let nat = Duration::from_secs(secs);
        let (sim, deaths) = run(nat, seed);
        let interval = sim.client.heartbeat_interval();
        assert!(interval < nat, "NAT {nat:?}: settled at {interval:?}, not below it");
        assert!(interval + Duration::from_secs(20) >= nat, "NAT {nat:?}: settled at {interval:?}, not close to it");
        let last = deaths.last().copied().unwrap_or_default();
        assert!(
            last < Duration::from_secs(2 * 3600),
            "NAT {nat:?}: still losing the link at {last:?} (deaths {deaths:?})"
        );
        assert!(!deaths.is_empty(), "NAT {nat:?}: the learner never probed past the limit");
        // Every loss was recovered by a resume: one session for 4 hours.
        let ended = sim.client_log.iter().any(|(_, e)| matches!(e, ClientEvent::SessionEnded { .. }));
        assert!(!ended, "NAT {nat:?}: the session ended:\n{}", sim.timeline());
        assert_eq!(sim.client.resumes() as usize, deaths.len());
    }
}

#[test]
fn a_fixed_interval_below_the_nat_timeout_never_loses_the_link() {
    let mut cfg = SimConfig::new(9, ClientConfig::profile(Profile::Default));
    cfg.faults.push(Fault::NatIdle { timeout: Duration::from_secs(30) });
    cfg.duration = Duration::from_secs(3600);
    let mut sim = Sim::new(cfg);
    sim.run();
    assert_eq!(sim.stats.connects, 1);
}

#[test]
fn a_fixed_interval_above_the_nat_timeout_loses_the_link_every_idle_period() {
    let mut cfg = SimConfig::new(10, ClientConfig::profile(Profile::Default));
    cfg.faults.push(Fault::NatIdle { timeout: Duration::from_secs(15) });
    cfg.duration = Duration::from_secs(600);
    let mut sim = Sim::new(cfg);
    sim.run();
    assert!(sim.stats.connects >= 10, "only {} connects: the NAT should keep evicting", sim.stats.connects);
}

#[test]
#[ignore = "prints the learning curve; run with --ignored --nocapture"]
fn print_learning_curve() {
    let (sim, deaths) = run(Duration::from_secs(137), 2);
    println!(
        "deaths at {deaths:?}\nfinal interval {:?}\nlearned {:?}",
        sim.client.heartbeat_interval(),
        sim.client.adaptive().and_then(|a| a.learned(""))
    );
    let gaps: Vec<u64> = sim.ping_times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    println!("ping gaps (s): {gaps:?}");
}
