//! Real sockets on loopback, through a fault proxy: sessions survive
//! blackholes, one-way stalls, resets, delays and a kill during replay with
//! nothing lost or duplicated, on TCP, TLS and WebSocket; an outage longer
//! than grace ends in expiry on both ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{wait_delivered, Rig, Streams};
use tether_proto::{ClientEvent, SessionEnd, TransportLoss};
use tether_runtime::client::Event;
use tether_runtime::server::ServerEvent;
use tether_runtime::Kind;

const GRACE: Duration = Duration::from_secs(8);
const SECS_10: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(20);

fn resumed(e: &Event) -> Option<u64> {
    match e {
        Event::Session(ClientEvent::Resumed { replayed, .. }) => Some(*replayed),
        _ => None,
    }
}

/// Blackhole both ways for 3 s (longer than the 1.5 s detection): both ends
/// detect, the client resumes the same session, and both streams arrive
/// exactly once; the old transport is closed by the server.
async fn blackhole(kind: Kind) {
    let rig = Rig::start(kind, GRACE).await;
    let id = rig.connected().await;
    let streams = Streams::start(&rig, id, TICK);
    tokio::time::sleep(Duration::from_millis(300)).await; // some traffic first
    rig.proxy.blackhole(true);
    let (_, reason) = rig
        .cev
        .wait(SECS_10, |e| match e {
            Event::Session(ClientEvent::Disconnected { reason }) => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(matches!(reason, TransportLoss::HeartbeatTimeout { .. }), "{reason:?}");
    rig.sev.wait(SECS_10, |e| matches!(e, ServerEvent::Detached { .. }).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // attempts meet the blackhole too
    rig.proxy.blackhole(false);
    let n = rig.cev.len();
    rig.cev.wait_from(n.saturating_sub(50), SECS_10, resumed).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // traffic after the resume
    let (c, s) = streams.stop().await;
    wait_delivered(&rig, c, s, SECS_10).await;
    assert_eq!(rig.client.session_id(), Some(id), "same session");
    assert_eq!(rig.server.session_count(), 1);
    // The first connection (blackholed) was closed by the server.
    assert_eq!(rig.proxy.server_closed(0), Some(true), "old transport closed by the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_resumes_tcp() {
    blackhole(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_resumes_tls() {
    blackhole(Kind::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_resumes_ws() {
    blackhole(Kind::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_resumes_wss() {
    blackhole(Kind::Wss).await;
}

/// Server → client stalls (client → server still flows): the client hears
/// nothing, declares the link dead and resumes; nothing lost either way.
async fn one_way_stall(kind: Kind) {
    let rig = Rig::start(kind, GRACE).await;
    let id = rig.connected().await;
    let streams = Streams::start(&rig, id, TICK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.proxy.set(|f| f.down = false);
    rig.cev.wait(SECS_10, |e| matches!(e, Event::Session(ClientEvent::Disconnected { .. })).then_some(())).await;
    rig.proxy.set(|f| f.down = true);
    rig.cev.wait(SECS_10, resumed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c, s) = streams.stop().await;
    wait_delivered(&rig, c, s, SECS_10).await;
    assert_eq!(rig.client.session_id(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_stall_resumes_tcp() {
    one_way_stall(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_stall_resumes_ws() {
    one_way_stall(Kind::Ws).await;
}

/// Every connection reset mid-stream: the client reconnects at once.
async fn reset(kind: Kind) {
    let rig = Rig::start(kind, GRACE).await;
    let id = rig.connected().await;
    let streams = Streams::start(&rig, id, TICK);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = rig.cev.len();
        rig.proxy.reset_all();
        rig.cev.wait_from(n, SECS_10, resumed).await;
    }
    let (c, s) = streams.stop().await;
    wait_delivered(&rig, c, s, SECS_10).await;
    assert_eq!(rig.client.resumes(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_resumes_tcp() {
    reset(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_resumes_tls() {
    reset(Kind::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_resumes_ws() {
    reset(Kind::Ws).await;
}

/// 200 ms of added delay on every chunk: slow but alive; no reconnect, exact delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_delivery_keeps_the_link() {
    let rig = Rig::start(Kind::Tcp, GRACE).await;
    let id = rig.connected().await;
    rig.proxy.set(|f| f.delay = Duration::from_millis(200));
    let streams = Streams::start(&rig, id, TICK);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c, s) = streams.stop().await;
    wait_delivered(&rig, c, s, SECS_10).await;
    assert_eq!(rig.client.resumes(), 0, "a slow link is not a dead one");
    assert_eq!(rig.proxy.accepted(), 1);
}

/// The new transport is killed while the server is replaying: the session
/// resumes again and still delivers everything exactly once.
async fn kill_during_replay(kind: Kind) {
    let rig = Rig::start(kind, GRACE).await;
    let id = rig.connected().await;
    let streams = Streams::start(&rig, id, TICK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.proxy.blackhole(true);
    rig.sev.wait(SECS_10, |e| matches!(e, ServerEvent::Detached { .. }).then_some(())).await;
    rig.proxy.blackhole(false);
    // Kill the first resume that replays something, at once.
    let (_, replayed) = rig
        .sev
        .wait(SECS_10, |e| match e {
            ServerEvent::Resumed { replayed, .. } if *replayed > 0 => Some(*replayed),
            _ => None,
        })
        .await;
    rig.proxy.reset_all();
    assert!(replayed > 0);
    let n = rig.cev.len();
    rig.cev.wait_from(n, SECS_10, resumed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c, s) = streams.stop().await;
    wait_delivered(&rig, c, s, SECS_10).await;
    assert_eq!(rig.client.session_id(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_replay_tcp() {
    kill_during_replay(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_replay_ws() {
    kill_during_replay(Kind::Ws).await;
}

/// An outage longer than grace: both ends expire explicitly, the server
/// holds no session, unacked messages come back, and after the path returns
/// the client starts a fresh session in which nothing old is delivered.
async fn expiry(kind: Kind) {
    let grace = Duration::from_secs(2);
    let rig = Rig::start(kind, grace).await;
    let id = rig.connected().await;
    rig.proxy.blackhole(true);
    // Sent into the void: never acknowledged, so handed back at expiry.
    rig.client.send("lost-c").unwrap();
    rig.server.send(id, "lost-s").unwrap();
    let (_, (reason, unacked)) = rig
        .sev
        .wait(SECS_10, |e| match e {
            ServerEvent::Ended { session, reason, unacked } if *session == id => {
                Some((reason.clone(), unacked.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(reason, SessionEnd::Expired);
    assert_eq!(unacked, vec![bytes::Bytes::from("lost-s")]);
    assert_eq!(rig.server.session_count(), 0, "expired sessions release everything");
    let (_, (reason, unacked)) = rig
        .cev
        .wait(SECS_10, |e| match e {
            Event::Session(ClientEvent::SessionEnded { reason, unacked, .. }) => {
                Some((reason.clone(), unacked.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(reason, SessionEnd::Expired);
    assert_eq!(unacked, vec![bytes::Bytes::from("lost-c")]);
    rig.proxy.blackhole(false);
    let (_, fresh) = rig
        .sev
        .wait(SECS_10, |e| match e {
            ServerEvent::Opened { session, .. } if *session != id => Some(*session),
            _ => None,
        })
        .await;
    rig.cev.wait(SECS_10, |e| matches!(e, Event::Session(ClientEvent::Connected { .. })).then_some(())).await;
    // Wait for the client to see the fresh session before sending to it.
    let deadline = tokio::time::Instant::now() + SECS_10;
    while rig.client.session_id() != Some(fresh) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(TICK).await;
    }
    rig.client.send("c1").unwrap();
    rig.server.send(fresh, "s1").unwrap();
    wait_delivered(&rig, 1, 1, SECS_10).await;
    assert_eq!(rig.server.session_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_grace_expires_tcp() {
    expiry(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_grace_expires_ws() {
    expiry(Kind::Ws).await;
}

/// Dead links are detected within the configured bounds on real sockets:
/// the client within its dead-after (1.5 s), the server within the idle
/// timeout the client asked for (2 s), each plus a generous 1.5 s margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_link_detected_within_bounds() {
    let rig = Rig::start(Kind::Tcp, GRACE).await;
    rig.connected().await;
    let hb = &rig.client_opts.core.heartbeat;
    let (client_bound, server_bound) = (hb.dead_after(), hb.server_idle_timeout());
    let cut = std::time::Instant::now();
    rig.proxy.blackhole(true);
    let (c_at, _) = rig
        .cev
        .wait(SECS_10, |e| match e {
            Event::Session(ClientEvent::Disconnected { reason: TransportLoss::HeartbeatTimeout { .. } }) => Some(()),
            _ => None,
        })
        .await;
    let (s_at, _) = rig
        .sev
        .wait(SECS_10, |e| match e {
            ServerEvent::Detached { reason: TransportLoss::HeartbeatTimeout { .. }, .. } => Some(()),
            _ => None,
        })
        .await;
    let margin = Duration::from_millis(1500);
    let (c, s) = (c_at - cut, s_at - cut);
    assert!(c <= client_bound + margin, "client detected after {c:?}, bound {client_bound:?}");
    assert!(s <= server_bound + margin, "server detected after {s:?}, bound {server_bound:?}");
    // Not absurdly early either: silence must really have lasted.
    assert!(c >= hb.probe_cycle(), "client detected after only {c:?}");
}

/// A resume arrives while the server still holds the old transport (its
/// idle timeout is off, so it never drops it by itself): the old transport
/// is closed with CLOSE 1000 and whatever it still carries is not delivered.
async fn resume_replaces_live_transport(kind: Kind) {
    let mut sopts = tether_runtime::ServerOptions::new(common::server_core(GRACE));
    sopts.core.enforce_idle = false;
    let rig = Rig::with(kind, sopts, tether_runtime::ClientOptions::new(common::client_core())).await;
    let id = rig.connected().await;
    let streams = Streams::start(&rig, id, TICK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.proxy.freeze(0, true);
    let n = rig.cev.len();
    rig.cev.wait_from(n, SECS_10, resumed).await;
    assert_eq!(rig.proxy.server_closed(0), Some(false), "still open while frozen");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Let the old connection deliver whatever it held, both ways.
    rig.proxy.freeze(0, false);
    let (c, s) = streams.stop().await;
    wait_delivered(&rig, c, s, SECS_10).await;
    let deadline = tokio::time::Instant::now() + SECS_10;
    while rig.proxy.server_closed(0) != Some(true) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(TICK).await;
    }
    assert_eq!(rig.proxy.server_closed(0), Some(true), "the server closed the replaced transport");
    assert_eq!(rig.client.session_id(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replaces_live_transport_tcp() {
    resume_replaces_live_transport(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replaces_live_transport_ws() {
    resume_replaces_live_transport(Kind::Ws).await;
}
