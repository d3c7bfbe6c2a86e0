//! Redis goes away mid-run (a durable Redis, killed and started again):
//! handshakes are refused for now (REJECT 5 with a retry-after) instead of
//! hanging, live links keep their heartbeats, a client message sent
//! meanwhile is not acknowledged until its effect is committed, and
//! everything flows again by itself when Redis is back — nothing lost or
//! doubled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{client_core, node, prefix, Redis};
use tether_proto::{ClientEvent, RejectReason};
use tether_runtime::client::{Client, ClientOptions, Event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_refuses_handshakes_for_now_keeps_links_and_loses_nothing() {
    let mut redis = Redis::private_durable();
    let p = prefix();
    let opened = Arc::new(Mutex::new(None));
    let n = node(redis.store("a", &p).await, opened.clone()).await;
    let start = || {
        let mut opts = ClientOptions::new(client_core());
        opts.watch_network = false;
        let mut c = Client::start(format!("tcp://{}", n.addr).parse().unwrap(), opts).unwrap();
        let h = c.handle();
        let log: Arc<Mutex<Vec<Event>>> = Arc::default();
        let l2 = log.clone();
        tokio::spawn(async move {
            while let Some(e) = c.next_event().await {
                l2.lock().unwrap().push(e);
            }
        });
        (h, log)
    };
    let messages = |log: &Arc<Mutex<Vec<Event>>>| -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Session(ClientEvent::Message(m)) => Some(String::from_utf8_lossy(m).into_owned()),
                _ => None,
            })
            .collect()
    };
    let wait = |what: &'static str, f: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (c1, log1) = start();
    c1.send(Bytes::from("c1")).unwrap();
    let l = log1.clone();
    wait("e1", Box::new(move || messages(&l) == ["e1"])).await;

    redis.kill();
    c1.send(Bytes::from("c2")).unwrap();
    // A new client is refused for now, with a retry-after, not left hanging.
    let (_c2, log2) = start();
    let h = n.handle.clone();
    wait("a REJECT 5", Box::new(move || h.rejects().iter().any(|(r, n)| *r == RejectReason::Overloaded && *n > 0)))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(messages(&log1), ["e1"], "c2 is not applied while Redis is away");
    assert_eq!(c1.buffered().0, 1, "c2 is kept by the client: not acknowledged");
    let lost = log1.lock().unwrap().iter().any(|e| matches!(e, Event::Session(ClientEvent::Disconnected { .. })));
    assert!(!lost, "the live link kept its heartbeat");

    redis.restart();
    let l = log1.clone();
    wait("e2 once Redis is back", Box::new(move || messages(&l) == ["e1", "e2"])).await;
    let l = log2.clone();
    wait(
        "the refused client gets in",
        Box::new(move || l.lock().unwrap().iter().any(|e| matches!(e, Event::Session(ClientEvent::Connected { .. })))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(messages(&log1), ["e1", "e2"], "nothing doubled");
    n.handle.shutdown();
}

/// Redis stalls (`CLIENT PAUSE 6000 ALL`: it accepts connections but answers
/// no command): a new client is refused for now within the handshake's bounded
/// wait (REJECT 5, not left hanging), the live link keeps its heartbeat, and
/// both go on once Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_refuses_handshakes_for_now_and_links_stay_up() {
    let redis = Redis::private();
    let p = prefix();
    let opened = Arc::new(Mutex::new(None));
    let n = node(redis.store("a", &p).await, opened.clone()).await;
    let client = |log: Arc<Mutex<Vec<Event>>>| {
        let mut opts = ClientOptions::new(client_core());
        opts.watch_network = false;
        let mut c = Client::start(format!("tcp://{}", n.addr).parse().unwrap(), opts).unwrap();
        let h = c.handle();
        tokio::spawn(async move {
            while let Some(e) = c.next_event().await {
                log.lock().unwrap().push(e);
            }
        });
        h
    };
    let connected = |log: &Arc<Mutex<Vec<Event>>>| {
        log.lock().unwrap().iter().any(|e| matches!(e, Event::Session(ClientEvent::Connected { .. })))
    };
    let log1: Arc<Mutex<Vec<Event>>> = Arc::default();
    let _c1 = client(log1.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !connected(&log1) {
        assert!(tokio::time::Instant::now() < deadline, "no session before the stall");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stall Redis for 6 s (every other client's commands wait).
    let paused_at = tokio::time::Instant::now();
    {
        let client = tether_cluster::redis::Client::open(redis.url.clone()).unwrap();
        let mut con = client.get_connection().unwrap();
        let () = tether_cluster::redis::cmd("CLIENT").arg("PAUSE").arg(6000).arg("ALL").query(&mut con).unwrap();
    }
    let log2: Arc<Mutex<Vec<Event>>> = Arc::default();
    let _c2 = client(log2.clone());
    let h = n.handle.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !h.rejects().iter().any(|(r, c)| *r == RejectReason::Overloaded && *c > 0) {
        assert!(tokio::time::Instant::now() < deadline, "no REJECT 5 within 5 s of a stalled Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(paused_at.elapsed() < Duration::from_secs(6), "refused while Redis was still stalled");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !connected(&log2) {
        assert!(tokio::time::Instant::now() < deadline, "the refused client never got in after the stall");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = log1.lock().unwrap().iter().any(|e| matches!(e, Event::Session(ClientEvent::Disconnected { .. })));
    assert!(!lost, "the live link kept its heartbeat through the stall");
    n.handle.shutdown();
}
