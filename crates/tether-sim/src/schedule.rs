//! Random fault schedules and the guarantees checked on them.
//!
//! Three families, all with messages streaming both ways:
//! - **survivable**: up to four faults (outages up to 40 s with or without a
//!   link signal, one-way stalls, loss up to 50 %, resets, kills during
//!   replay), sometimes with a busy application too, inside a 40 s window,
//!   so the session is never without contact for as long as its 60 s grace. Every message must arrive exactly once,
//!   in order, in the one session of the run.
//! - **expiring**: one outage of grace + 5..40 s. Both ends must expire the
//!   session explicitly, within the bounds of `docs/PROTOCOL.md` §10, hand
//!   back what was not acknowledged, deliver nothing of it afterwards, and
//!   carry on in a fresh session.
//! - **lagging**: no network fault at all, but one or both applications take
//!   no events (and send nothing) for up to 15 s at a time, sometimes with a receive window
//!   small enough that messages are deferred and resynced. Everything must
//!   arrive exactly once, and no transport may be declared dead or dropped
//!   for any reason but a resync.
//!
//! On top of these, a share of each family runs against a store-backed
//! server ([`SimConfig::with_store`]), drawn from a separate generator so
//! that every other schedule is exactly what it was before nodes could die:
//! - survivable (two in five): one or two node deaths in the window (killed
//!   or vanished, the next node up at once or within 5 s), and/or a store
//!   outage of up to 15 s. The session must survive every death, resumed
//!   (never restarted), each message applied (committed) exactly once and
//!   each stored message delivered exactly once, in order.
//! - lagging (three in ten): half of them with a store outage of up to
//!   10 s; still no transport may be lost.
//! - expiring (three in ten): half of them with a node killed before the
//!   outage; the session must expire as without a store.

use std::time::Duration;

use tether_proto::{
    ClientConfig, ClientEvent, CloseCode, Profile, ReceiveWindow, Rng, SessionEnd, SessionEvent, SessionId,
    TransportLoss,
};

use crate::net::{Dir, Fault, Side};
use crate::sim::{Sim, SimConfig, StoreConfig};

/// What a schedule must end in.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// One session throughout, everything delivered.
    Survive,
    /// The session expires on both ends, then a fresh one carries on.
    Expire {
        /// When the outage starts.
        start: Duration,
        /// How long it lasts.
        len: Duration,
    },
}

/// The command that replays one seed.
pub fn repro(seed: u64) -> String {
    format!("TETHER_SIM_SEED={seed} cargo test -p tether-sim --test fault_schedules -- --nocapture")
}

fn secs(rng: &mut Rng, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(lo + (hi - lo) * rng.unit())
}

/// Which family a schedule is of, with its fault window.
enum Family {
    Faults { start: Duration, window: Duration },
    Lagging { start: Duration, window: Duration },
    Expiring { start: Duration },
}

/// The schedule for a seed: about one in ten expires, the rest survive.
pub fn random(seed: u64) -> (SimConfig, Expect) {
    let (mut cfg, expect, family) = network(seed);
    durable(seed, &mut cfg, family);
    (cfg, expect)
}

/// The schedule's network and application faults (everything but nodes
/// and the store).
fn network(seed: u64) -> (SimConfig, Expect, Family) {
    let mut rng = Rng::from_seed(seed ^ 0x5EED_5EED);
    let profile = if rng.unit() < 0.5 { Profile::Default } else { Profile::Realtime };
    let mut cfg = SimConfig::new(seed, ClientConfig::profile(profile));
    cfg.client_every = Some(secs(&mut rng, 0.1, 2.0));
    cfg.server_every = Some(secs(&mut rng, 0.1, 2.0));
    cfg.max_pad = 64;
    let start = secs(&mut rng, 5.0, 20.0);
    let grace = cfg.server.grace;
    if rng.unit() < 0.1 {
        let len = grace + secs(&mut rng, 5.0, 40.0);
        cfg.faults.push(Fault::Outage { start, len, link_signal: rng.unit() < 0.5 });
        cfg.traffic_until = start + len + Duration::from_secs(30);
        cfg.duration = cfg.traffic_until + Duration::from_secs(30);
        return (cfg, Expect::Expire { start, len }, Family::Expiring { start });
    }
    let window = Duration::from_secs(40);
    if rng.unit() < 0.15 {
        lagging(&mut rng, &mut cfg, start, window);
        cfg.traffic_until = start + window + Duration::from_secs(20);
        cfg.duration = cfg.traffic_until + Duration::from_secs(40);
        return (cfg, Expect::Survive, Family::Lagging { start, window });
    }
    let n = 1 + rng.below_inclusive(3);
    for _ in 0..n {
        let at = start + secs(&mut rng, 0.0, window.as_secs_f64() - 1.0);
        let room = (start + window).saturating_sub(at).as_secs_f64().max(1.0);
        let f = match rng.below_inclusive(5) {
            0 => Fault::Outage { start: at, len: secs(&mut rng, 0.5, room), link_signal: rng.unit() < 0.5 },
            1 => Fault::Stall {
                start: at,
                len: secs(&mut rng, 0.5, room.min(20.0)),
                dir: if rng.unit() < 0.5 { Dir::Up } else { Dir::Down },
            },
            2 => {
                Fault::Loss { start: at, len: secs(&mut rng, 1.0, room), up: rng.unit() * 0.5, down: rng.unit() * 0.5 }
            }
            3 => Fault::Kill { at },
            _ => Fault::KillDuringReplay { count: 1 + rng.below_inclusive(2) as u32, after: secs(&mut rng, 0.0, 0.2) },
        };
        cfg.faults.push(f);
    }
    // A busy application across a transport loss: the resume's
    // `last_received` is behind what is held, so the peer replays messages
    // the receiver must drop as duplicates.
    if rng.unit() < 0.3 {
        let side = if rng.unit() < 0.5 { Side::Client } else { Side::Server };
        let at = start + secs(&mut rng, 0.0, window.as_secs_f64() - 5.0);
        cfg.faults.push(Fault::AppLag { start: at, len: secs(&mut rng, 1.0, 10.0), side });
    }
    // A kill during replay needs a resume to act on: add a reset to cause one.
    if cfg.faults.iter().any(|f| matches!(f, Fault::KillDuringReplay { .. })) {
        cfg.faults.push(Fault::Kill { at: start });
    }
    cfg.traffic_until = start + window + Duration::from_secs(20);
    cfg.duration = cfg.traffic_until + Duration::from_secs(40);
    (cfg, Expect::Survive, Family::Faults { start, window })
}

/// Makes a share of the schedules store-backed, with node deaths and store
/// outages, from a generator of their own.
fn durable(seed: u64, cfg: &mut SimConfig, family: Family) {
    let mut rng = Rng::from_seed(seed ^ 0xD1ED_5704_E000);
    let share = match family {
        Family::Faults { .. } => 0.4,
        Family::Lagging { .. } | Family::Expiring { .. } => 0.3,
    };
    if rng.unit() >= share {
        return;
    }
    cfg.store = Some(StoreConfig::default());
    cfg.server.commit_acks = true;
    // A store outage within [start, start + window).
    let outage = |rng: &mut Rng, start: Duration, window: Duration, max: f64| {
        let at = secs(rng, 0.0, window.as_secs_f64() - 1.0);
        let len = secs(rng, 0.5, max.min(window.as_secs_f64() - at.as_secs_f64()).max(0.5));
        Fault::StoreDown { start: start + at, len }
    };
    match family {
        Family::Faults { start, window } => {
            let deaths = if rng.unit() < 0.85 { 1 + u32::from(rng.unit() < 0.25) } else { 0 };
            for _ in 0..deaths {
                let at = start + secs(&mut rng, 0.0, window.as_secs_f64() - 1.0);
                let down = if rng.unit() < 0.5 { Duration::ZERO } else { secs(&mut rng, 0.1, 5.0) };
                cfg.faults.push(Fault::NodeDeath { at, down, reset: rng.unit() < 0.7 });
            }
            if deaths == 0 || rng.unit() < 0.35 {
                cfg.faults.push(outage(&mut rng, start, window, 15.0));
            }
        }
        Family::Lagging { start, window } => {
            if rng.unit() < 0.5 {
                cfg.faults.push(outage(&mut rng, start, window, 10.0));
            }
        }
        Family::Expiring { start } => {
            if rng.unit() < 0.5 {
                let at = secs(&mut rng, 1.0, start.as_secs_f64() - 2.0);
                cfg.faults.push(Fault::NodeDeath { at, down: Duration::ZERO, reset: true });
            }
        }
    }
}

/// Application lags only: up to three pauses of up to 15 s, either side,
/// and half the time receive windows small enough to defer.
fn lagging(rng: &mut Rng, cfg: &mut SimConfig, start: Duration, window: Duration) {
    for _ in 0..1 + rng.below_inclusive(2) {
        let at = start + secs(rng, 0.0, window.as_secs_f64() - 15.0);
        let side = if rng.unit() < 0.5 { Side::Client } else { Side::Server };
        cfg.faults.push(Fault::AppLag { start: at, len: secs(rng, 1.0, 15.0), side });
    }
    if rng.unit() < 0.5 {
        let small = || ReceiveWindow { max_messages: 2, max_bytes: 1 << 20 };
        let mut w = small();
        w.max_messages += rng.below_inclusive(18) as usize;
        cfg.client.receive_window = w.clone();
        w.max_messages = small().max_messages + rng.below_inclusive(18) as usize;
        cfg.server.receive_window = w;
    }
}

/// True for a loss caused by a resync (§7.8), the only loss a lagging
/// application may cause.
fn is_resync(loss: &TransportLoss) -> bool {
    matches!(loss, TransportLoss::Resync) || matches!(loss, TransportLoss::PeerClosed { code: CloseCode::Resync, .. })
}

/// Summary of a passed run, for aggregate figures.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Messages delivered client → server.
    pub up: u64,
    /// Messages delivered server → client.
    pub down: u64,
    /// Resumes.
    pub resumes: u64,
    /// Whether the session expired.
    pub expired: bool,
    /// Whether an application lagged in this schedule.
    pub lagged: bool,
    /// Transports replaced by a resync (§7.8), either side.
    pub resyncs: u64,
    /// Whether the server was store-backed.
    pub store_backed: bool,
    /// Server nodes that died (and the session survived, unless it expired).
    pub node_deaths: u64,
    /// Store outages.
    pub store_outages: u64,
    /// Store commits and appends carried out whose replies were lost.
    pub lost_replies: u64,
}

/// Runs one seed and checks its guarantees.
pub fn run_seed(seed: u64) -> Result<Summary, String> {
    let (cfg, expect) = random(seed);
    let mut sim = Sim::new(cfg);
    sim.run();
    verify(&sim, &expect).map_err(|e| {
        format!(
            "seed {seed}: {e}\nschedule: {:?}\nstore-backed: {}\nexpected: {expect:?}\nre-run exactly this schedule with:\n  {}\ntimeline:\n{}",
            sim.cfg.faults,
            sim.cfg.store.is_some(),
            repro(seed),
            sim.timeline()
        )
    })
}

fn first_session(sim: &Sim) -> Option<SessionId> {
    sim.client_log.iter().find_map(|(_, e)| match e {
        ClientEvent::Connected { session } => Some(*session),
        _ => None,
    })
}

/// Checks a finished run against what it must end in.
pub fn verify(sim: &Sim, expect: &Expect) -> Result<Summary, String> {
    let l = &sim.ledger;
    if let Some(v) = l.violations.first() {
        return Err(format!("{} violation(s); first: {v}", l.violations.len()));
    }
    if !sim.client.is_established() {
        return Err("client not established at the end of the run".into());
    }
    let s1 = first_session(sim).ok_or("no session was ever established")?;
    let ends_c: Vec<_> = sim
        .client_log
        .iter()
        .filter_map(|(t, e)| match e {
            ClientEvent::SessionEnded { session, reason, .. } => Some((*t, *session, reason.clone())),
            _ => None,
        })
        .collect();
    let ends_s: Vec<_> = sim
        .server_log
        .iter()
        .filter_map(|(t, session, e)| match e {
            SessionEvent::Ended { reason, .. } => Some((*t, *session, reason.clone())),
            _ => None,
        })
        .collect();
    if sim.cfg.faults.iter().all(|f| matches!(f, Fault::AppLag { .. } | Fault::StoreDown { .. })) {
        // Only applications lagged (and the store failed): the network was
        // fine throughout, so no transport may have been lost for anything
        // but a resync.
        let client = sim.client_log.iter().find_map(|(t, e)| match e {
            ClientEvent::Disconnected { reason } if !is_resync(reason) => Some((*t, reason.clone())),
            _ => None,
        });
        let server = sim.server_log.iter().find_map(|(t, _, e)| match e {
            SessionEvent::Detached { reason } if !is_resync(reason) => Some((*t, reason.clone())),
            _ => None,
        });
        if let Some((t, r)) = client.or(server) {
            return Err(format!("a lagging application cost a transport at {t:?}: {r}"));
        }
    }
    let last = sim.client_session().ok_or("client has no session at the end")?;
    let mut summary = Summary { resumes: sim.client.resumes(), ..Default::default() };
    match expect {
        Expect::Survive => {
            if !ends_c.is_empty() || !ends_s.is_empty() {
                return Err(format!("session ended in a survivable schedule: client {ends_c:?} server {ends_s:?}"));
            }
            if last != s1 {
                return Err(format!("session changed from {s1:?} to {last:?}"));
            }
        }
        Expect::Expire { start, len } => {
            let grace = sim.cfg.server.grace;
            let hb = &sim.cfg.client.heartbeat;
            let (ts, _, rs) =
                ends_s.iter().find(|(_, s, _)| *s == s1).cloned().ok_or("server never ended the first session")?;
            let (tc, _, rc) = ends_c
                .iter()
                .find(|(_, s, _)| *s == Some(s1))
                .cloned()
                .ok_or("client never ended the first session")?;
            if rs != SessionEnd::Expired || rc != SessionEnd::Expired {
                return Err(format!("ended for the wrong reason: server {rs:?}, client {rc:?}"));
            }
            // Server: grace counts from the last frame heard, which is at most
            // a few seconds before the outage with traffic flowing.
            let s_hi = *start + grace + Duration::from_secs(1);
            let s_lo = (*start + grace).saturating_sub(Duration::from_secs(10));
            if ts < s_lo || ts > s_hi {
                return Err(format!("server expired at {ts:?}, outside [{s_lo:?}, {s_hi:?}]"));
            }
            // Client: never before the server; at the latest its local timer
            // (last heard + grace + dead_after) or, if the path came back
            // first, one resume-backoff plus a handshake after it did.
            let by_timer = *start + grace + hb.dead_after() + Duration::from_secs(1);
            let by_reject = *start
                + *len
                + sim.cfg.client.backoff.resume_max
                + sim.cfg.client.handshake_timeout
                + Duration::from_secs(1);
            let c_hi = by_timer.min(by_reject.max(ts + Duration::from_secs(1)));
            if tc + Duration::from_millis(100) < ts || tc > c_hi {
                return Err(format!("client expired at {tc:?}: must be within [{ts:?} (server), {c_hi:?}]"));
            }
            if last == s1 {
                return Err("no fresh session after expiry".into());
            }
            summary.expired = true;
        }
    }
    // Everything of the final session arrived, both ways.
    let epoch = l.epoch_session.iter().find(|(_, s)| **s == last).map(|(e, _)| *e);
    let sent_up = epoch.and_then(|e| l.client_sent.get(&e)).copied().unwrap_or(0);
    let got_up = l.at_server.get(&last).map_or(0, |x| x.1);
    let sent_down = l.server_sent.get(&last).copied().unwrap_or(0);
    let got_down = l.at_client.get(&last).copied().unwrap_or(0);
    if sent_up != got_up || sent_down != got_down {
        return Err(format!("final session incomplete: up {got_up}/{sent_up}, down {got_down}/{sent_down}"));
    }
    if sim.server.session_count() != 1 {
        return Err(format!("server holds {} sessions at the end, expected 1", sim.server.session_count()));
    }
    if let Some(store) = &sim.store {
        // The store holds the final session only, with every client message
        // of it committed (seqs count from 1 in each session).
        if store.len() != 1 || store.committed(last) != Some(u64::from(sent_up)) {
            return Err(format!(
                "the store holds {} sessions, the final one committed through {:?}, expected 1 and {sent_up}",
                store.len(),
                store.committed(last)
            ));
        }
        summary.store_backed = true;
        summary.node_deaths = sim.stats.node_deaths;
        summary.lost_replies = store.lost_replies;
        summary.store_outages = sim.cfg.faults.iter().filter(|f| matches!(f, Fault::StoreDown { .. })).count() as u64;
    }
    summary.lagged = sim.cfg.faults.iter().any(|f| matches!(f, Fault::AppLag { .. }));
    let resync_c =
        sim.client_log.iter().filter(|(_, e)| matches!(e, ClientEvent::Disconnected { reason } if is_resync(reason)));
    let resync_s =
        sim.server_log.iter().filter(|(_, _, e)| matches!(e, SessionEvent::Detached { reason } if is_resync(reason)));
    summary.resyncs = (resync_c.count() + resync_s.count()) as u64;
    summary.up = u64::from(got_up);
    summary.down = u64::from(got_down);
    Ok(summary)
}
