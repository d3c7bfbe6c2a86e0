//! The cluster harness: `tether serve` processes sharing a real Redis, room
//! members whose reconnects land on another node, and the exactly-once
//! ledger over every run — `kill -9` of a member's node mid-meeting, a
//! zombie node (SIGSTOP, then SIGCONT), and a rolling restart of three
//! nodes. (Node death in process, orphans and Redis trouble are tested in
//! `tether-gateway/tests/cluster.rs` and `tether-cluster/tests/`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tether-cluster/tests/common/mod.rs"]
mod redis_harness;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis_harness::{client_core, prefix, Balancer, Redis};
use serde_json::{json, Value};
use tether_proto::ClientEvent;
use tether_runtime::client::{Client, ClientHandle, ClientOptions, Event};

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `tether serve` process of the cluster, on a fixed port (so that a
/// restarted node is where it was).
struct Node {
    id: String,
    tcp: SocketAddr,
    cfg: std::path::PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(redis: &str, id: &str, prefix: &str) -> Node {
        let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = std::env::temp_dir().join(format!("tether-cluster-{}-{prefix}-{id}.toml", std::process::id()));
        std::fs::write(
            &cfg,
            format!(
                "[listen]\ntcp = \"{tcp}\"\nws = \"off\"\n[session]\ngrace = \"30s\"\nmin_idle_timeout = \"500ms\"\n\
                 [admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n[drain]\nwindow = \"1s\"\n[log]\nlevel = \"warn\"\n\
                 [cluster]\nredis = \"{redis}\"\nnode_id = \"{id}\"\nkey_prefix = \"{prefix}\"\nlease_ttl = \"1500ms\"\n"
            ),
        )
        .unwrap();
        let mut n = Node { id: id.to_owned(), tcp, cfg, child: None };
        n.start();
        n
    }

    /// Starts the process and waits for its banner.
    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--config"])
            .arg(&self.cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tether serve");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            let last = line.contains("Ctrl-C");
            banner.push(line);
            if last {
                break;
            }
        }
        assert!(banner[0].contains(&format!("cluster node {}", self.id)), "{banner:?}");
        self.child = Some(child);
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid()]).status().unwrap().success();
        assert!(ok, "kill {sig} {}", self.id);
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits for the drain to finish and the process to exit 0.
    fn stop(&mut self) {
        self.signal("-TERM");
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "node {} exited with {status}", self.id);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill();
        let _ = std::fs::remove_file(&self.cfg);
    }
}

/// A room member: what it received, and how its session went.
struct Member {
    name: String,
    handle: ClientHandle,
    events: Arc<Mutex<Vec<Value>>>,
    connected: Arc<AtomicUsize>,
    resumed: Arc<AtomicUsize>,
}

impl Member {
    fn start(addr: SocketAddr, name: &str) -> Member {
        let mut opts = ClientOptions::new(client_core());
        opts.watch_network = false;
        let mut client = Client::start(format!("tcp://{addr}").parse().unwrap(), opts).unwrap();
        let handle = client.handle();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (connected, resumed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (e2, c2, r2) = (events.clone(), connected.clone(), resumed.clone());
        tokio::spawn(async move {
            while let Some(e) = client.next_event().await {
                match e {
                    Event::Session(ClientEvent::Message(m)) => {
                        e2.lock().unwrap().push(serde_json::from_slice(&m).unwrap());
                    }
                    Event::Session(ClientEvent::Connected { .. }) => {
                        c2.fetch_add(1, Ordering::SeqCst);
                    }
                    Event::Session(ClientEvent::Resumed { .. }) => {
                        r2.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        });
        Member { name: name.to_owned(), handle, events, connected, resumed }
    }

    fn send(&self, v: Value) {
        self.handle.send(Bytes::from(v.to_string())).unwrap();
    }

    async fn join(&self, room: &str) {
        self.send(json!({"op": "join", "room": room, "name": self.name}));
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.events.lock().unwrap().iter().any(|v| v["ev"] == "joined" && v["room"] == room) {
            assert!(tokio::time::Instant::now() < deadline, "{} never joined {room}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn say(&self, room: &str, n: u64) {
        self.send(json!({"op": "say", "room": room, "body": {"n": n}}));
    }

    /// The `n` of every message from `name`, in order.
    fn heard(&self, name: &str) -> Vec<u64> {
        let ev = self.events.lock().unwrap();
        ev.iter()
            .filter(|v| v["ev"] == "message" && v["from"]["name"] == name)
            .map(|v| v["body"]["n"].as_u64().unwrap())
            .collect()
    }

    fn saw(&self, name: &str, state: &str) -> bool {
        let ev = self.events.lock().unwrap();
        ev.iter().any(|v| v["ev"] == "presence" && v["member"]["name"] == name && v["member"]["state"] == state)
    }
}

/// Waits until every listener heard `n` messages from every speaker, then
/// checks each heard exactly 1..=n, in order (0 lost, 0 duplicated).
async fn ledger(listeners: &[&Member], speakers: &[&str], n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done = listeners.iter().all(|m| speakers.iter().all(|s| m.heard(s).len() as u64 >= n));
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // a late duplicate would show
    let want: Vec<u64> = (1..=n).collect();
    for m in listeners {
        for s in speakers {
            let got = m.heard(s);
            if got != want {
                let mut seen: HashMap<u64, usize> = HashMap::new();
                for x in &got {
                    *seen.entry(*x).or_default() += 1;
                }
                let lost: Vec<_> = want.iter().filter(|x| !seen.contains_key(x)).collect();
                let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).map(|(x, _)| x).collect();
                panic!("{} heard {s}: {} of {n}; lost {lost:?}, duplicated {dup:?}", m.name, got.len());
            }
        }
    }
}

fn seconds(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `kill -9` of the node holding a meeting member, with traffic both ways
/// for `TETHER_CLUSTER_SECONDS` (default 50): the member resumes the same
/// session on another node, still in the room; 0 lost, 0 duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_members_node_mid_meeting_loses_nothing() {
    let redis = Redis::start();
    let p = prefix();
    let mut a = Node::new(&redis.url, "a", &p);
    let b = Node::new(&redis.url, "b", &p);
    let lb = Balancer::start(vec![a.tcp]).await;
    let alice = Member::start(lb.addr, "Alice");
    let bob = Member::start(b.tcp, "Bob");
    alice.join("meeting").await;
    bob.join("meeting").await;

    let total = seconds("TETHER_CLUSTER_SECONDS", 50);
    let every = Duration::from_millis(100);
    let kill_at = total * 1000 / every.as_millis() as u64 / 5;
    let mut n = 0;
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(total) {
        n += 1;
        alice.say("meeting", n);
        bob.say("meeting", n);
        if n == kill_at {
            lb.set(vec![b.tcp]);
            a.kill();
            lb.cut();
        }
        tokio::time::sleep(every).await;
    }
    ledger(&[&alice, &bob], &["Alice", "Bob"], n).await;
    assert!(alice.resumed.load(Ordering::SeqCst) >= 1, "Alice resumed on node b");
    assert_eq!(alice.connected.load(Ordering::SeqCst), 1, "Alice kept her session");
    assert!(!bob.saw("Alice", "left") && !bob.saw("Alice", "expired"), "the room never saw Alice leave");
}

/// A node paused (SIGSTOP) past its lease while its member moves to another
/// node, then woken (SIGCONT): it cannot deliver or acknowledge anything
/// for the session it lost; the ledger stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_node_cannot_deliver_or_acknowledge() {
    let redis = Redis::start();
    let p = prefix();
    let a = Node::new(&redis.url, "a", &p);
    let b = Node::new(&redis.url, "b", &p);
    let lb = Balancer::start(vec![a.tcp]).await;
    let alice = Member::start(lb.addr, "Alice");
    let bob = Member::start(b.tcp, "Bob");
    alice.join("meeting").await;
    bob.join("meeting").await;
    let mut n = 0;
    let talk = |n: u64| {
        alice.say("meeting", n);
        bob.say("meeting", n);
    };
    for _ in 0..20 {
        n += 1;
        talk(n);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.signal("-STOP");
    for _ in 0..20 {
        n += 1;
        talk(n); // Alice's go to the frozen node: unacknowledged
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lb.set(vec![b.tcp]);
    lb.cut(); // Alice's link to the frozen node dies; she resumes on b
    for _ in 0..60 {
        n += 1;
        talk(n);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.signal("-CONT"); // the zombie wakes, its lease long lapsed
    for _ in 0..40 {
        n += 1;
        talk(n);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ledger(&[&alice, &bob], &["Alice", "Bob"], n).await;
    assert_eq!(alice.connected.load(Ordering::SeqCst), 1, "Alice kept her session");
}

/// Three nodes restarted one after the other (SIGTERM: drain, then start
/// again under the same name): every session survives, every message is
/// heard exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_nodes_keeps_every_session() {
    let redis = Redis::start();
    let p = prefix();
    let mut nodes: Vec<Node> = ["a", "b", "c"].iter().map(|id| Node::new(&redis.url, id, &p)).collect();
    let lb = Balancer::start(nodes.iter().map(|n| n.tcp).collect()).await;
    let members: Vec<Member> = (0..60).map(|i| Member::start(lb.addr, &format!("m{i}"))).collect();
    for (i, m) in members.iter().enumerate() {
        m.join(&format!("room{}", i % 6)).await;
    }
    let mut n = 0;
    let talk = |n: u64| {
        for (i, m) in members.iter().enumerate() {
            m.say(&format!("room{}", i % 6), n);
        }
    };
    for i in 0..nodes.len() {
        for _ in 0..5 {
            n += 1;
            talk(n);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let others: Vec<SocketAddr> = nodes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, n)| n.tcp).collect();
        lb.set(others);
        nodes[i].stop();
        for _ in 0..5 {
            n += 1;
            talk(n);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        nodes[i].start();
        lb.set(nodes.iter().map(|n| n.tcp).collect());
    }
    for (i, m) in members.iter().enumerate() {
        let room: Vec<&Member> = members.iter().enumerate().filter(|(j, _)| j % 6 == i % 6).map(|(_, m)| m).collect();
        let names: Vec<&str> = room.iter().map(|m| m.name.as_str()).collect();
        if i < 6 {
            ledger(&room, &names, n).await;
        }
        assert_eq!(m.connected.load(Ordering::SeqCst), 1, "{} kept its session through the rolling restart", m.name);
    }
}

/// One node with Redis, restarted (SIGTERM, then started again): every
/// session resumes on the restarted process, still in its room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_restarted_with_redis_keeps_every_session() {
    let redis = Redis::start();
    let p = prefix();
    let mut a = Node::new(&redis.url, "solo", &p);
    let members: Vec<Member> = (0..20).map(|i| Member::start(a.tcp, &format!("s{i}"))).collect();
    for m in &members {
        m.join("lobby").await;
    }
    let mut n = 0;
    let talk = |n: u64| members.iter().for_each(|m| m.say("lobby", n));
    for _ in 0..5 {
        n += 1;
        talk(n);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop();
    for _ in 0..5 {
        n += 1;
        talk(n); // queued by the clients while the node is down
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.start();
    for _ in 0..5 {
        n += 1;
        talk(n);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let all: Vec<&Member> = members.iter().collect();
    ledger(&all, &names, n).await;
    for m in &members {
        assert_eq!(m.connected.load(Ordering::SeqCst), 1, "{} kept its session through the restart", m.name);
        assert!(m.resumed.load(Ordering::SeqCst) >= 1);
    }
}
