//! A busy application never costs a healthy link: while the server's (or
//! the client's) application takes no events, the session keeps reading,
//! answering PINGs and acknowledging arrivals; delivery resumes, exactly
//! once, when the application does. Real sockets, the rig's fast timers
//! (links declared dead after 1.5 s of silence), a 5 s stall.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{assert_exact, client_core, server_core, url, Log};
use tether_proto::ClientEvent;
use tether_runtime::client::{Client, Event};
use tether_runtime::server::{Server, ServerEvent};
use tether_runtime::{ClientOptions, Kind, ServerOptions};

const STALL: Duration = Duration::from_secs(5);
const N: u64 = 3000;

/// Starts a server whose application reads nothing for `stall`, then reads
/// everything into the returned log.
async fn stalled_server(stall: Duration) -> (tether_runtime::ServerHandle, Log<ServerEvent>, std::net::SocketAddr) {
    let opts =
        ServerOptions::new(server_core(Duration::from_secs(30))).listen(Kind::Tcp, "127.0.0.1:0".parse().unwrap());
    let server = Server::start(opts).await.unwrap();
    let addr = server.local_addr(Kind::Tcp).unwrap();
    let (handle, mut rx) = server.into_parts();
    let log = Log::new();
    let l2 = log.clone();
    tokio::spawn(async move {
        tokio::time::sleep(stall).await;
        while let Some(e) = rx.recv().await {
            l2.push(e);
        }
    });
    (handle, log, addr)
}

fn client_opts() -> ClientOptions {
    let mut o = ClientOptions::new(client_core());
    o.watch_network = false;
    o
}

fn numbered(prefix: char, i: u64) -> Bytes {
    Bytes::from(format!("{prefix}{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_application_keeps_every_link_alive() {
    let (server, slog, addr) = stalled_server(STALL).await;
    let mut client = Client::start(url(Kind::Tcp, addr), client_opts()).unwrap();
    let c = client.handle();
    let clog = Log::new();
    let l2 = clog.clone();
    tokio::spawn(async move {
        while let Some(e) = client.next_event().await {
            l2.push(e);
        }
    });
    clog.wait(Duration::from_secs(10), |e| matches!(e, Event::Session(ClientEvent::Connected { .. })).then_some(()))
        .await;
    // Three times what the application's queue holds (1024), all at once.
    for i in 1..=N {
        c.send(numbered('c', i)).unwrap();
    }
    // The application wakes after 5 s and catches up.
    let deadline = tokio::time::Instant::now() + STALL + Duration::from_secs(20);
    let received = || -> Vec<Bytes> {
        slog.snapshot()
            .into_iter()
            .filter_map(|(_, e)| match e {
                ServerEvent::Message { payload, .. } => Some(payload),
                _ => None,
            })
            .collect()
    };
    while (received().len() as u64) < N && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_exact(&received(), 'c', N, "server application received");
    let lost: Vec<_> = clog
        .snapshot()
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::Session(ClientEvent::Disconnected { .. })))
        .collect();
    assert!(lost.is_empty(), "the client lost its link while the server's application stalled: {lost:?}");
    let detached: Vec<_> =
        slog.snapshot().into_iter().filter(|(_, e)| matches!(e, ServerEvent::Detached { .. })).collect();
    assert!(detached.is_empty(), "the server dropped the link: {detached:?}");
    assert_eq!(c.resumes(), 0);
    // Acknowledged once taken: the client's replay buffer empties.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while c.buffered().0 > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.buffered().0, 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_application_keeps_its_heartbeat() {
    let (server, slog, addr) = stalled_server(Duration::ZERO).await;
    let mut client = Client::start(url(Kind::Tcp, addr), client_opts()).unwrap();
    let c = client.handle();
    let (_, session) = slog
        .wait(Duration::from_secs(10), |e| match e {
            ServerEvent::Opened { session, .. } => Some(*session),
            _ => None,
        })
        .await;
    for i in 1..=N {
        server.send(session, numbered('s', i)).unwrap();
    }
    // The client's application reads nothing for 5 s (its queue holds 256).
    tokio::time::sleep(STALL).await;
    let mut got = Vec::new();
    let mut lost = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (got.len() as u64) < N && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), client.next_event()).await {
            Ok(Some(Event::Session(ClientEvent::Message(m)))) => got.push(m),
            Ok(Some(Event::Session(ClientEvent::Disconnected { reason }))) => lost.push(reason),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => break,
        }
    }
    assert_exact(&got, 's', N, "client application received");
    assert!(lost.is_empty(), "the client lost its link while its application stalled: {lost:?}");
    let detached: Vec<_> =
        slog.snapshot().into_iter().filter(|(_, e)| matches!(e, ServerEvent::Detached { .. })).collect();
    assert!(detached.is_empty(), "the server dropped the silent-looking client: {detached:?}");
    assert_eq!(c.resumes(), 0);
}
