//! Heartbeat and reconnection rules, in virtual time, end to end through the
//! simulated network.

use std::time::Duration;

use tether_proto::{ClientConfig, ClientEvent, Profile, RejectReason, SessionEvent, TransportLoss};
use tether_sim::{Fault, Sim, SimConfig};

const S: fn(u64) -> Duration = Duration::from_secs;

fn client_detection(sim: &Sim) -> Option<Duration> {
    sim.client_log.iter().find_map(|(t, e)| match e {
        ClientEvent::Disconnected { reason: TransportLoss::HeartbeatTimeout { .. } } => Some(*t),
        _ => None,
    })
}

fn server_detection(sim: &Sim) -> Option<Duration> {
    sim.server_log.iter().find_map(|(t, _, e)| match e {
        SessionEvent::Detached { reason: TransportLoss::HeartbeatTimeout { .. } } => Some(*t),
        _ => None,
    })
}

/// Kills the path at many phases of the heartbeat cycle, idle or mid-transfer,
/// and checks both ends notice within the profile's documented bound.
fn detection_within(profile: Profile, bound: Duration, streaming: bool) {
    let interval = ClientConfig::profile(profile).heartbeat.interval;
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for phase in 0..20u32 {
        let start = S(30) + interval * phase / 20;
        let mut cfg = SimConfig::new(u64::from(phase), ClientConfig::profile(profile));
        cfg.faults.push(Fault::Outage { start, len: S(600), link_signal: false });
        cfg.duration = start + bound + S(5);
        if streaming {
            cfg.client_every = Some(Duration::from_millis(50));
            cfg.server_every = Some(Duration::from_millis(50));
        }
        let mut sim = Sim::new(cfg);
        sim.run();
        let c = client_detection(&sim).unwrap_or_else(|| {
            panic!("{profile:?} phase {phase}: client never detected the dead link\n{}", sim.timeline())
        });
        let s = server_detection(&sim).unwrap_or_else(|| {
            panic!("{profile:?} phase {phase}: server never detected the dead link\n{}", sim.timeline())
        });
        assert!(c > start && s > start, "detected before the link died");
        worst = (worst.0.max(c - start), worst.1.max(s - start));
    }
    assert!(
        worst.0 <= bound && worst.1 <= bound,
        "{profile:?} (streaming: {streaming}): worst detection client {:?} server {:?} > {bound:?}",
        worst.0,
        worst.1
    );
}

#[test]
fn default_profile_detects_a_dead_idle_link_within_40s_on_both_ends() {
    detection_within(Profile::Default, S(40), false);
}

#[test]
fn default_profile_detects_a_link_dying_mid_transfer_within_40s_on_both_ends() {
    detection_within(Profile::Default, S(40), true);
}

#[test]
fn realtime_profile_detects_a_dead_link_within_9s_on_both_ends() {
    detection_within(Profile::Realtime, S(9), false);
    detection_within(Profile::Realtime, S(9), true);
}

#[test]
fn data_arriving_more_often_than_the_interval_means_zero_pings() {
    let mut cfg = SimConfig::new(1, ClientConfig::profile(Profile::Default));
    cfg.server_every = Some(S(15)); // < 20 s interval
    cfg.poisson = false;
    cfg.duration = S(600);
    cfg.traffic_until = S(600);
    let mut sim = Sim::new(cfg);
    sim.run();
    assert!(sim.ledger.at_client.values().sum::<u32>() >= 39);
    assert_eq!(sim.stats.client_pings, 0, "pings at {:?}", sim.ping_times);
}

#[test]
fn an_idle_link_gets_one_ping_per_interval() {
    let mut cfg = SimConfig::new(2, ClientConfig::profile(Profile::Default));
    cfg.duration = S(600);
    let mut sim = Sim::new(cfg);
    sim.run();
    let gaps: Vec<_> = sim.ping_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 27, "only {} pings in 600 s", sim.ping_times.len());
    for g in gaps {
        // One interval after the previous PONG: interval + one round trip.
        assert!(g >= S(20) && g <= S(20) + Duration::from_millis(200), "gap {g:?}");
    }
}

#[test]
fn debug_switch_keeps_pinging_but_never_declares_death() {
    let mut client = ClientConfig::profile(Profile::Realtime);
    client.heartbeat.enforce = false;
    let mut cfg = SimConfig::new(3, client);
    cfg.server.enforce_idle = false;
    cfg.faults.push(Fault::Outage { start: S(10), len: S(600), link_signal: false });
    cfg.duration = S(120);
    let mut sim = Sim::new(cfg);
    sim.run();
    assert!(client_detection(&sim).is_none() && server_detection(&sim).is_none());
    let missed = sim.client_log.iter().filter(|(_, e)| matches!(e, ClientEvent::HeartbeatMissed)).count();
    assert!(missed > 10, "only {missed} missed cycles reported");
    let late_pings = sim.ping_times.iter().filter(|t| **t > S(100)).count();
    assert!(late_pings >= 5, "pinging stopped: {late_pings} pings after 100 s");
    assert!(sim.client.is_established());
}

/// Time from the network's return to the session resumed.
fn resume_delay(sim: &Sim, back: Duration) -> Duration {
    let t = sim
        .client_log
        .iter()
        .find_map(|(t, e)| matches!(e, ClientEvent::Resumed { .. }).then_some(*t))
        .expect("resumed");
    t - back
}

#[test]
fn network_up_signal_gives_an_immediate_attempt_and_a_fast_resume() {
    for seed in 0..20 {
        let mut cfg = SimConfig::new(seed, ClientConfig::profile(Profile::Default));
        cfg.client_every = Some(Duration::from_millis(200));
        cfg.faults.push(Fault::Outage { start: S(10), len: S(50), link_signal: true });
        cfg.duration = S(90);
        let mut sim = Sim::new(cfg);
        sim.run();
        let first_after = sim.connect_times.iter().find(|t| **t >= S(60)).copied().expect("an attempt after link-up");
        assert!(
            first_after - S(60) < Duration::from_millis(5),
            "seed {seed}: first attempt {first_after:?} after link-up at 60 s"
        );
        let d = resume_delay(&sim, S(60));
        assert!(d < Duration::from_millis(500), "seed {seed}: resumed {d:?} after link-up");
    }
}

#[test]
fn without_a_signal_the_resume_comes_within_the_resume_backoff_cap() {
    for seed in 0..20 {
        let mut cfg = SimConfig::new(seed, ClientConfig::profile(Profile::Default));
        cfg.client_every = Some(Duration::from_millis(200));
        cfg.faults.push(Fault::Outage { start: S(10), len: S(50), link_signal: false });
        cfg.duration = S(90);
        let mut sim = Sim::new(cfg);
        sim.run();
        let d = resume_delay(&sim, S(60));
        // A hung attempt connects on its next SYN retransmit, or times out at
        // most 2 s after the path returned and the next starts within
        // resume_max (2 s).
        assert!(d <= S(5), "seed {seed}: resumed {d:?} after the blackhole ended");
    }
}

#[test]
fn server_retry_after_is_obeyed() {
    let mut cfg = SimConfig::new(4, ClientConfig::profile(Profile::Default));
    cfg.duration = S(60);
    let mut sim = Sim::new(cfg);
    sim.server.set_refusal(Some((RejectReason::Overloaded, S(7))));
    let base = sim.base();
    sim.run_until(base + S(30));
    sim.server.set_refusal(None);
    sim.run();
    let refused: Vec<_> = sim.connect_times.iter().filter(|t| **t < S(30)).collect();
    assert!(refused.len() >= 3, "attempts while refused: {refused:?}");
    for w in refused.windows(2) {
        assert!(*w[1] - *w[0] >= S(7), "attempts {:?} and {:?} are closer than the 7 s retry-after", w[0], w[1]);
    }
    assert!(sim.client.is_established(), "connected once the refusal was lifted");
}
