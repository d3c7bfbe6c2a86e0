//! Prints the figures recorded in docs/DESIGN.md:
//! `cargo run --release -p tether-sim --example figures`
//! (`cargo run -p tether-sim --example figures -- SEED` prints one schedule's timeline.)
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use tether_proto::{ClientConfig, ClientEvent, Profile, SessionEvent, TransportLoss};
use tether_sim::{schedule, Fault, Sim, SimConfig};

fn detect(profile: Profile, streaming: bool) -> (Duration, Duration, Duration, Duration) {
    let interval = ClientConfig::profile(profile).heartbeat.interval;
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for phase in 0..100u32 {
        let start = Duration::from_secs(30) + interval * phase / 100;
        let mut cfg = SimConfig::new(u64::from(phase), ClientConfig::profile(profile));
        cfg.faults.push(Fault::Outage { start, len: Duration::from_secs(900), link_signal: false });
        cfg.duration = start + Duration::from_secs(60);
        if streaming {
            cfg.client_every = Some(Duration::from_millis(50));
            cfg.server_every = Some(Duration::from_millis(50));
        }
        let mut sim = Sim::new(cfg);
        sim.run();
        c.extend(sim.client_log.iter().find_map(|(t, e)| {
            matches!(e, ClientEvent::Disconnected { reason: TransportLoss::HeartbeatTimeout { .. } })
                .then(|| *t - start)
        }));
        s.extend(
            sim.server_log.iter().find_map(|(t, _, e)| matches!(e, SessionEvent::Detached { .. }).then(|| *t - start)),
        );
    }
    c.sort();
    s.sort();
    (c[c.len() / 2], c[c.len() - 1], s[s.len() / 2], s[s.len() - 1])
}

fn resume(signal: bool) -> (Duration, Duration) {
    let mut d = Vec::new();
    for seed in 0..200 {
        let mut cfg = SimConfig::new(seed, ClientConfig::profile(Profile::Default));
        cfg.client_every = Some(Duration::from_millis(200));
        cfg.server_every = Some(Duration::from_millis(200));
        cfg.faults.push(Fault::Outage {
            start: Duration::from_secs(10),
            len: Duration::from_secs(50),
            link_signal: signal,
        });
        cfg.duration = Duration::from_secs(90);
        let mut sim = Sim::new(cfg);
        sim.run();
        d.extend(
            sim.client_log
                .iter()
                .find_map(|(t, e)| matches!(e, ClientEvent::Resumed { .. }).then(|| *t - Duration::from_secs(60))),
        );
    }
    d.sort();
    (d[d.len() / 2], d[d.len() - 1])
}

fn main() {
    if let Some(seed) = std::env::args().nth(1).and_then(|s| s.parse().ok()) {
        let (cfg, expect) = schedule::random(seed);
        let mut sim = Sim::new(cfg);
        sim.run();
        println!("{}\nexpect {expect:?}\nverify {:?}", sim.timeline(), schedule::verify(&sim, &expect));
        return;
    }
    println!("dead-link detection after the path dies (100 phases of the ping cycle), median / worst:");
    for p in [Profile::Default, Profile::Realtime] {
        for streaming in [false, true] {
            let (cm, cw, sm, sw) = detect(p, streaming);
            println!(
                "  {p:?} {:9}: client {:.1}s / {:.1}s   server {:.1}s / {:.1}s",
                if streaming { "streaming" } else { "idle" },
                cm.as_secs_f64(),
                cw.as_secs_f64(),
                sm.as_secs_f64(),
                sw.as_secs_f64()
            );
        }
    }
    println!("resume after a 50 s outage ends (default profile, 200 seeds), median / worst:");
    for signal in [true, false] {
        let (m, w) = resume(signal);
        println!(
            "  {:22}: {:.2}s / {:.2}s",
            if signal { "cable (link signal)" } else { "blackhole (no signal)" },
            m.as_secs_f64(),
            w.as_secs_f64()
        );
    }
    let t = Instant::now();
    let n = 5000;
    let fails = (0..n).filter(|s| schedule::run_seed(*s).is_err()).count();
    println!("{n} random fault schedules in {:.1}s, {fails} failures", t.elapsed().as_secs_f64());
}
