//! Exactly once, both directions, across the death of the node that holds
//! the session: two servers share a real Redis; a client streams through a
//! switch to node A while node B publishes to it; A dies mid-stream; the
//! client resumes on B. Every client message is echoed (its effect) exactly
//! once, every server message stored is delivered exactly once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{client_core, node, prefix, Balancer, Redis};
use tether_proto::ClientEvent;
use tether_runtime::client::{Client, ClientOptions, Event};

fn exact(got: &[String], prefix: char, n: u64, what: &str) {
    let want: Vec<String> = (1..=n).map(|i| format!("{prefix}{i}")).collect();
    assert!(got == want.as_slice(), "{what}: want {prefix}1..={prefix}{n} exactly once in order, got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_the_node_that_held_it_exactly_once_both_ways() {
    let redis = Redis::start();
    let p = prefix();
    let opened = Arc::new(Mutex::new(None));
    let a_store = redis.store("a", &p).await;
    let a = node(a_store.clone(), opened.clone()).await;
    let b = node(redis.store("b", &p).await, opened.clone()).await;
    let switch = Balancer::start(vec![a.addr]).await;

    let mut opts = ClientOptions::new(client_core());
    opts.watch_network = false;
    let endpoint = format!("tcp://{}", switch.addr).parse().unwrap();
    let mut client = Client::start(endpoint, opts).unwrap();
    let ch = client.handle();
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let resumed = Arc::new(AtomicU64::new(0));
    let (r2, res2) = (received.clone(), resumed.clone());
    tokio::spawn(async move {
        while let Some(e) = client.next_event().await {
            match e {
                Event::Session(ClientEvent::Message(m)) => r2.lock().unwrap().push(String::from_utf8_lossy(&m).into()),
                Event::Session(ClientEvent::Resumed { .. }) => {
                    res2.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let session = loop {
        if let Some(s) = *opened.lock().unwrap() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no session opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // The client streams "c1", "c2", …; node B (which does not hold the
    // session) publishes "s1", "s2", … to it: stored, then sent by the owner.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent_c, sent_s) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (s1, n1) = (stop.clone(), sent_c.clone());
    let t1 = tokio::spawn(async move {
        while !s1.load(Ordering::SeqCst) {
            let n = n1.load(Ordering::SeqCst) + 1;
            if ch.send(Bytes::from(format!("c{n}"))).is_ok() {
                n1.store(n, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (s2, n2, bh) = (stop.clone(), sent_s.clone(), b.handle.clone());
    let t2 = tokio::spawn(async move {
        while !s2.load(Ordering::SeqCst) {
            let n = n2.load(Ordering::SeqCst) + 1;
            if let Ok(r) = bh.publish(vec![(session, Bytes::from(format!("s{n}")))]).await {
                if r.first().is_some_and(|q| q.is_ok()) {
                    n2.store(n, Ordering::SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(received.lock().unwrap().iter().any(|m| m.starts_with('s')), "B's messages reach the client via A");

    // Node A dies: its sessions stop, its connections drop, its lease lapses.
    switch.set(vec![b.addr]);
    a.handle.shutdown();
    a.app.abort();
    drop(a_store);
    switch.cut();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.store(true, Ordering::SeqCst);
    t1.await.unwrap();
    t2.await.unwrap();
    let (nc, ns) = (sent_c.load(Ordering::SeqCst), sent_s.load(Ordering::SeqCst));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = received.lock().unwrap().clone();
        let (e, s) =
            (got.iter().filter(|m| m.starts_with('e')).count(), got.iter().filter(|m| m.starts_with('s')).count());
        if (e as u64 >= nc && s as u64 >= ns) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer: a duplicate arriving late must be caught too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = received.lock().unwrap().clone();
    let echoes: Vec<String> = got.iter().filter(|m| m.starts_with('e')).cloned().collect();
    let server: Vec<String> = got.iter().filter(|m| m.starts_with('s')).cloned().collect();
    assert!(resumed.load(Ordering::SeqCst) >= 1, "the client resumed its session");
    assert!(nc > 50 && ns > 50, "traffic flowed: {nc} client, {ns} server messages");
    exact(&echoes, 'e', nc, "client messages, applied once each (echoed)");
    exact(&server, 's', ns, "server messages, delivered once each");
    b.handle.shutdown();
    b.app.abort();
}
