//! Racing a slow connect (PROTOCOL §9.7) with real sockets on loopback.
//!
//! A listener whose accept queue is full makes Linux drop incoming SYNs, as
//! a blackholed path does: the connect hangs and the kernel retransmits the
//! SYN 1 s, then 3 s, then 7 s later. When room is made, a client that races
//! new connections beside the hung one gets in at once; one that waits on
//! its single connection meets the room only at its next retransmission or
//! attempt. And once a connection reached the server (TCP open), racing
//! stops: a slow WebSocket upgrade is not met with more connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_client, start_server};
use tether_proto::{ClientConfig, ClientEvent, Profile};
use tether_runtime::client::{ClientOptions, Event};
use tether_runtime::server::ServerOptions;
use tether_runtime::Kind;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A listener with the smallest accept queue, filled: further SYNs to it are
/// dropped until `make_room` accepts what waits. Returns the listener and
/// the connections holding the queue.
async fn full_listener() -> (TcpListener, Vec<TcpStream>) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s.listen(0).unwrap();
    s.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(s.into()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(c) => fillers.push(c.unwrap()),
            Err(_) => break, // this SYN was dropped: the queue is full
        }
        assert!(fillers.len() < 16, "the accept queue never filled");
    }
    (listener, fillers)
}

/// Accepts from now on, forwarding each connection to `server`.
fn forward(listener: TcpListener, server: SocketAddr) {
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut s) = TcpStream::connect(server).await {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
            });
        }
    });
}

fn options(max_in_flight: u8) -> ClientOptions {
    let mut core = ClientConfig::profile(Profile::Default);
    core.race.max_in_flight = max_in_flight;
    let mut o = ClientOptions::new(core);
    o.watch_network = false;
    o
}

/// Sockets of this host in SYN_SENT towards `port` on 127.0.0.1: the
/// connections a client is still trying to open there.
fn syn_sent_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && f[3] == "02"
        })
        .count()
}

/// Starts a WebSocket client against a full accept queue for 3.5 s, then
/// makes room. Returns the most connections it had opening at once during
/// the 3.5 s, and how long after the room the session opened.
async fn against_a_full_queue(max_in_flight: u8) -> (usize, Duration) {
    let sopts = ServerOptions::new(common::server_core(Duration::from_secs(30)));
    let (_server, _sev, server_addr) = start_server(Kind::Ws, sopts).await;
    let (listener, fillers) = full_listener().await;
    let gate = listener.local_addr().unwrap();
    let (_client, cev) = start_client(Kind::Ws, gate, options(max_in_flight));
    let until = Instant::now() + Duration::from_millis(3500);
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(syn_sent_to(gate.port()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !cev.snapshot().iter().any(|(_, e)| matches!(e, Event::Session(ClientEvent::Connected { .. }))),
        "connected through a full accept queue"
    );
    drop(fillers);
    let room = Instant::now();
    forward(listener, server_addr);
    let (at, ()) = cev
        .wait(Duration::from_secs(15), |e| matches!(e, Event::Session(ClientEvent::Connected { .. })).then_some(()))
        .await;
    (most, at.saturating_duration_since(room))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_stuck_on_dropped_syns_is_raced_and_gets_in_soon_after_room_is_made() {
    // A new connection every 750 ms beside the hung ones, at most 3: one
    // SYN meets the room within 0.75 s. (Linux 6.x retransmits a SYN every
    // second for the first five — `tcp_syn_linear_timeouts` — older kernels
    // and other systems after 1, 3, 7 s; racing does not depend on it.)
    let (most, after) = against_a_full_queue(3).await;
    assert_eq!(most, 3, "connections opening at once while SYNs were dropped");
    assert!(after <= Duration::from_millis(1500), "opened {after:?} after room was made");
    // Racing off: one connection at a time.
    let (most, _) = against_a_full_queue(1).await;
    assert_eq!(most, 1, "connections opening at once with racing off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_tcp_is_open_no_more_connections_are_raced() {
    // A server that accepts TCP but never answers the WebSocket upgrade.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let (most, accepted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, m, a) = (open.clone(), most.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let n = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(n, Ordering::SeqCst);
            a.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(c.read(&mut buf).await, Ok(n) if n > 0) {}
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let (_client, cev) = start_client(Kind::Ws, addr, options(3));
    // Two whole attempts (5 s handshake timeout each, then a backoff).
    let (_, ()) = cev
        .wait(Duration::from_secs(20), |e| matches!(e, Event::Session(ClientEvent::AttemptFailed { .. })).then_some(()))
        .await;
    let failed = cev.snapshot().len();
    cev.wait_from(failed, Duration::from_secs(20), |e| {
        matches!(e, Event::Session(ClientEvent::AttemptFailed { .. })).then_some(())
    })
    .await;
    assert!(accepted.load(Ordering::SeqCst) >= 2, "one connection per attempt");
    assert_eq!(most.load(Ordering::SeqCst), 1, "connections raced beside one that reached the server");
}
