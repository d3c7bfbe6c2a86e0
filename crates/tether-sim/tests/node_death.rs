//! Node death and store outages. The server is store-backed
//! ([`SimConfig::with_store`]): its sessions live in a store that survives
//! its nodes, a client message is acknowledged only once its effects are
//! committed there, and every server message is stored before it goes out.
//! The ledger counts a client message as delivered when it is committed, so
//! "exactly once" means applied exactly once, whichever node applied it.

use std::time::Duration;

use tether_proto::{ClientConfig, ClientEvent, Profile, RejectReason, SessionEnd, SessionEvent, TransportLoss};
use tether_sim::schedule::{verify, Expect, Summary};
use tether_sim::{Fault, Sim, SimConfig};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// Messages streaming both ways until 60 s, through a store-backed server.
fn streaming(seed: u64, profile: Profile) -> SimConfig {
    let mut cfg = SimConfig::new(seed, ClientConfig::profile(profile)).with_store();
    cfg.client_every = Some(MS(150));
    cfg.server_every = Some(MS(150));
    cfg.traffic_until = S(60);
    cfg.duration = S(100);
    cfg
}

fn survives(sim: &Sim) -> Summary {
    verify(sim, &Expect::Survive).unwrap_or_else(|e| panic!("seed {}: {e}\n{}", sim.cfg.seed, sim.timeline()))
}

/// How many messages the client wrote again on its resumes.
fn client_replayed(sim: &Sim) -> u64 {
    sim.client_log
        .iter()
        .map(|(_, e)| match e {
            ClientEvent::Resumed { replayed, .. } => *replayed,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_node_killed_mid_stream_loses_and_duplicates_nothing_both_ways() {
    let mut replayed = (0, 0);
    for seed in 0..20u64 {
        let profile = if seed % 2 == 0 { Profile::Default } else { Profile::Realtime };
        let mut cfg = streaming(seed, profile);
        let at = S(10) + MS(997 * seed);
        cfg.faults.push(Fault::NodeDeath { at, down: MS(300 * (seed % 3)), reset: true });
        let mut sim = Sim::new(cfg);
        sim.run();
        let s = survives(&sim);
        assert_eq!(sim.stats.node_deaths, 1);
        assert_eq!(sim.stats.claims, 1, "seed {seed}: one resume, claimed from the store by the new node");
        assert_eq!(s.resumes, 1, "seed {seed}: the session was resumed, not restarted");
        assert!(s.up > 300 && s.down > 300, "seed {seed}: too little traffic: {s:?}");
        replayed.0 += client_replayed(&sim);
        replayed.1 += sim
            .server_log
            .iter()
            .map(|(_, _, e)| match e {
                SessionEvent::Resumed { replayed } => *replayed,
                _ => 0,
            })
            .sum::<u64>();
    }
    // The new node wrote again what the old one had sent unacknowledged, and
    // the client wrote again what was not committed: both were exercised.
    assert!(replayed.0 > 0 && replayed.1 > 0, "no replay across the deaths: {replayed:?}");
}

#[test]
fn a_node_that_vanishes_silently_is_noticed_and_its_session_resumes_on_the_next() {
    for seed in 0..10u64 {
        let profile = if seed % 2 == 0 { Profile::Default } else { Profile::Realtime };
        let mut cfg = streaming(seed, profile);
        cfg.faults.push(Fault::NodeDeath { at: S(15) + MS(731 * seed), down: S(2), reset: false });
        let mut sim = Sim::new(cfg);
        sim.run();
        survives(&sim);
        let noticed = sim
            .client_log
            .iter()
            .any(|(_, e)| matches!(e, ClientEvent::Disconnected { reason: TransportLoss::HeartbeatTimeout { .. } }));
        assert!(noticed, "seed {seed}: the client's heartbeat should have noticed the dead node\n{}", sim.timeline());
        assert_eq!(sim.stats.claims, 1, "seed {seed}");
    }
}

/// The store is down around the death: the dying node had taken client
/// messages it could not commit (so never acknowledged); the next node
/// applies them, once, when the client writes them again.
fn taken_but_not_committed(seed: u64, gate: bool) -> Sim {
    let mut cfg = streaming(seed, Profile::Default);
    cfg.faults.push(Fault::StoreDown { start: S(15), len: S(10) });
    cfg.faults.push(Fault::NodeDeath { at: S(20), down: Duration::ZERO, reset: true });
    cfg.server.commit_acks = gate;
    let mut sim = Sim::new(cfg);
    sim.run();
    sim
}

#[test]
fn messages_a_dying_node_took_but_never_committed_are_applied_once_by_the_next() {
    for seed in 0..10 {
        let sim = taken_but_not_committed(seed, true);
        survives(&sim);
        // Everything the old node took during the outage came again.
        assert!(client_replayed(&sim) > 20, "seed {seed}: replayed only {}", client_replayed(&sim));
        assert!(sim.stats.store_refusals > 0, "seed {seed}: resumes wait for the store");
    }
}

/// The same schedule without the ack gate: the dying node acknowledged
/// messages it never committed, the client dropped them, and they are lost.
/// The checker must say so (this proves the checker, and the gate).
#[test]
fn without_the_ack_gate_the_checker_reports_the_loss() {
    for seed in 0..10 {
        let sim = taken_but_not_committed(seed, false);
        let v = &sim.ledger.violations;
        assert!(
            v.iter().any(|v| v.starts_with("ack gate:")),
            "seed {seed}: acks beyond the committed went unnoticed: {v:?}"
        );
        assert!(
            v.iter().any(|v| v.contains("client lost messages")),
            "seed {seed}: the lost client messages went unnoticed: {v:?}\n{}",
            sim.timeline()
        );
        assert!(verify(&sim, &Expect::Survive).is_err());
    }
}

#[test]
fn a_store_outage_holds_acks_at_what_is_committed_and_everything_flows_after() {
    for seed in 0..10 {
        let mut cfg = streaming(seed, Profile::Default);
        let (start, len) = (S(10), S(15));
        cfg.faults.push(Fault::StoreDown { start, len });
        let mut sim = Sim::new(cfg);
        let base = sim.base();
        // The client's acknowledged messages (seqs 1.. in its only session)
        // never run ahead of what the store committed.
        let mut held = 0;
        let mut t = Duration::ZERO;
        while t < S(40) {
            t += MS(50);
            sim.run_until(base + t);
            let Some(s) = sim.client_session() else { continue };
            let sent = sim.ledger.client_sent.get(&0).copied().unwrap_or(0) as usize;
            let acked = (sent - sim.client.buffered().0) as u64;
            let committed = sim.store.as_ref().and_then(|st| st.committed(s)).unwrap_or(0);
            assert!(acked <= committed, "seed {seed} at {t:?}: client #{acked} acknowledged, #{committed} committed");
            if t == start + len - MS(50) {
                held = sim.client.buffered().0;
            }
        }
        // Acks stalled through the outage: the client kept what it sent.
        assert!(held > 50, "seed {seed}: only {held} messages unacknowledged at the end of the outage");
        sim.run();
        let s = survives(&sim);
        assert_eq!(sim.client.buffered().0, 0, "seed {seed}: acknowledged once the store returned");
        assert_eq!(s.resumes, 0, "seed {seed}: an outage of the store costs no transport");
        assert!(sim.stats.refused.1 > 0, "seed {seed}: the server's own sends fail while the store is down");
    }
}

#[test]
fn new_sessions_wait_for_the_store() {
    let mut cfg = streaming(3, Profile::Default);
    cfg.faults.push(Fault::StoreDown { start: Duration::ZERO, len: S(5) });
    let mut sim = Sim::new(cfg);
    sim.run();
    survives(&sim);
    let rejected = sim.client_log.iter().filter(|(t, e)| {
        *t < S(5)
            && matches!(
                e,
                ClientEvent::AttemptFailed { reason: TransportLoss::Rejected { reason: RejectReason::Overloaded, .. } }
            )
    });
    assert!(rejected.count() >= 2, "{}", sim.timeline());
    let connected = sim.client_log.iter().find_map(|(t, e)| matches!(e, ClientEvent::Connected { .. }).then_some(*t));
    assert!(connected.is_some_and(|t| t >= S(5)), "connected at {connected:?}, while the store was down");
}

#[test]
fn a_node_dying_while_the_client_is_away_leaves_the_session_to_the_next() {
    for seed in 0..10u64 {
        let mut cfg = streaming(seed, Profile::Default);
        cfg.faults.push(Fault::Outage { start: S(10), len: S(30), link_signal: seed % 2 == 0 });
        cfg.faults.push(Fault::NodeDeath { at: S(15) + S(seed), down: Duration::ZERO, reset: true });
        let mut sim = Sim::new(cfg);
        sim.run();
        let s = survives(&sim);
        assert_eq!((s.resumes, sim.stats.claims), (1, 1), "seed {seed}\n{}", sim.timeline());
    }
}

/// A node dies while its client is away for longer than grace: the store
/// expires the orphaned session once, a lease interval plus grace after the
/// death, hands back what the client never acknowledged, and the client
/// carries on in a fresh session.
#[test]
fn an_orphan_whose_client_never_returns_expires_once_in_the_store() {
    for seed in 0..10u64 {
        let mut cfg = streaming(seed, Profile::Default);
        cfg.faults.push(Fault::Outage { start: S(10), len: S(100), link_signal: false });
        cfg.faults.push(Fault::NodeDeath { at: S(20), down: Duration::ZERO, reset: true });
        cfg.traffic_until = S(150);
        cfg.duration = S(180);
        let mut sim = Sim::new(cfg);
        sim.run();
        let l = &sim.ledger;
        assert!(l.violations.is_empty(), "seed {seed}: {:?}\n{}", l.violations, sim.timeline());
        let ends: Vec<_> = sim
            .server_log
            .iter()
            .filter_map(|(t, s, e)| match e {
                SessionEvent::Ended { reason, unacked } => Some((*t, *s, reason.clone(), unacked.len())),
                _ => None,
            })
            .collect();
        assert_eq!(ends.len(), 1, "seed {seed}: expired exactly once: {ends:?}");
        let (t, first, reason, unacked) = ends[0].clone();
        assert_eq!(reason, SessionEnd::Expired);
        assert_eq!(t, S(20) + S(2) + sim.cfg.server.grace, "seed {seed}: lease interval + grace after the death");
        assert!(unacked > 0, "seed {seed}: what the client missed is handed back");
        let last = sim.client_session().expect("a session at the end");
        assert_ne!(last, first, "seed {seed}: a fresh session carries on");
        assert!(sim.client.is_established());
        let store = sim.store.as_ref().expect("store-backed");
        assert!(!store.has(first) && store.has(last) && store.len() == 1);
    }
}

#[test]
fn nodes_can_die_again_and_again() {
    for seed in 0..10u64 {
        let mut cfg = streaming(seed, Profile::Realtime);
        for k in 0..5 {
            let reset = (seed + k) % 3 != 0;
            cfg.faults.push(Fault::NodeDeath { at: S(8 + 9 * k) + MS(71 * seed), down: MS(500 * k), reset });
        }
        let mut sim = Sim::new(cfg);
        sim.run();
        let s = survives(&sim);
        assert_eq!(sim.stats.node_deaths, 5);
        assert!(s.resumes >= 5, "seed {seed}: {s:?}");
    }
}

/// Commits and appends made just before the store fails are carried out but
/// reported failed: the application retries the commit, which must not
/// apply it twice, and what the lost attempt stored must still be sent.
#[test]
fn a_commit_whose_reply_was_lost_is_applied_once_and_what_it_stored_is_sent() {
    let (mut lost, mut recommits) = (0, 0);
    for seed in 0..10 {
        let mut cfg = streaming(seed, Profile::Default);
        cfg.client_every = Some(MS(20));
        cfg.server_every = Some(MS(50));
        for k in 0..4 {
            cfg.faults.push(Fault::StoreDown { start: S(10 + 10 * k) + MS(37 * seed), len: S(2) });
        }
        let mut sim = Sim::new(cfg);
        sim.run();
        survives(&sim);
        lost += sim.store.as_ref().map_or(0, |s| s.lost_replies);
        recommits += sim.stats.recommits;
    }
    assert!(lost >= 20 && recommits >= 10, "{lost} lost replies, {recommits} commits found done on retry");
}
