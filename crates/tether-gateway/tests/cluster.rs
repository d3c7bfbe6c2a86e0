//! Two gateways in this process share a real Redis (`[cluster]`): a room
//! spans both nodes, and a member whose node dies mid-conversation resumes
//! its session on the other node, still in the room, with every message of
//! both members delivered exactly once, in order per sender.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "../../tether-cluster/tests/common/mod.rs"]
mod redis_harness;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis_harness::{client_core, prefix, Balancer, Redis};
use serde_json::{json, Value};
use tether_gateway::{Config, Running};
use tether_proto::ClientEvent;
use tether_runtime::client::{Client, ClientHandle, ClientOptions, Event};
use tether_runtime::Kind;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

async fn gateway(redis: &str, node: &str, prefix: &str) -> Running {
    gateway_with(redis, node, prefix, "").await
}

/// A node with more TOML (`extra`: whole tables).
async fn gateway_with(redis: &str, node: &str, prefix: &str, extra: &str) -> Running {
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[session]\ngrace = \"30s\"\nmin_idle_timeout = \"500ms\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nkey = \"admin-key-0123456789abcdef\"\n[demo]\nlisten = \"off\"\n\
         [cluster]\nredis = \"{redis}\"\nnode_id = \"{node}\"\nkey_prefix = \"{prefix}\"\n{extra}"
    );
    let cfg = Config::parse(&text, "test").unwrap().resolve().unwrap();
    tether_gateway::run(cfg, std::future::pending()).await.expect("start a gateway node")
}

/// A member: its client, the room events it received, and its session events.
struct Member {
    handle: ClientHandle,
    events: Arc<Mutex<Vec<Value>>>,
    resumed: Arc<Mutex<u32>>,
    connected: Arc<Mutex<u32>>,
}

fn member(addr: SocketAddr) -> Member {
    let mut opts = ClientOptions::new(client_core());
    opts.watch_network = false;
    let mut client = Client::start(format!("tcp://{addr}").parse().unwrap(), opts).unwrap();
    let handle = client.handle();
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (resumed, connected) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
    let (e2, r2, c2) = (events.clone(), resumed.clone(), connected.clone());
    tokio::spawn(async move {
        while let Some(e) = client.next_event().await {
            match e {
                Event::Session(ClientEvent::Message(m)) => e2.lock().unwrap().push(serde_json::from_slice(&m).unwrap()),
                Event::Session(ClientEvent::Resumed { .. }) => *r2.lock().unwrap() += 1,
                Event::Session(ClientEvent::Connected { .. }) => *c2.lock().unwrap() += 1,
                _ => {}
            }
        }
    });
    Member { handle, events, resumed, connected }
}

impl Member {
    fn send(&self, v: Value) {
        self.handle.send(Bytes::from(v.to_string())).unwrap();
    }

    async fn wait(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = self.events.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "no {what}; got {:?}", self.events.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `body.n` of every message from `user` in `room`, in order.
    fn said_by(&self, name: &str) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["ev"] == "message" && v["from"]["name"] == name)
            .map(|v| v["body"]["n"].as_u64().unwrap())
            .collect()
    }
}

fn exact(got: &[u64], n: u64, what: &str) {
    let want: Vec<u64> = (1..=n).collect();
    assert!(got == want.as_slice(), "{what}: want 1..={n} exactly once in order, got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_nodes_and_a_member_outlives_its_node_exactly_once() {
    let redis = Redis::start();
    let p = prefix();
    let a = gateway(&redis.url, "a", &p).await;
    let b = gateway(&redis.url, "b", &p).await;
    let (a_tcp, b_tcp) = (a.session_addr(Kind::Tcp).unwrap(), b.session_addr(Kind::Tcp).unwrap());
    let switch = Balancer::start(vec![a_tcp]).await;
    let alice = member(switch.addr);
    let bob = member(b_tcp);

    alice.send(json!({"op": "join", "room": "call", "name": "Alice"}));
    alice.wait("alice joined", |v| v["ev"] == "joined").await;
    bob.send(json!({"op": "join", "room": "call", "name": "Bob"}));
    let joined = bob.wait("bob joined", |v| v["ev"] == "joined").await;
    assert_eq!(joined["count"], 2, "Bob on node b sees Alice on node a: {joined}");
    let names: Vec<&str> = joined["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Bob", "Alice"], "you first, then the others");
    alice.wait("alice hears bob join", |v| v["ev"] == "presence" && v["member"]["name"] == "Bob").await;

    // Both talk; midway, node a (Alice's) dies.
    let talk = |m: &Member, n: u64| m.send(json!({"op": "say", "room": "call", "body": {"n": n}}));
    let mut n = 0;
    for _ in 0..40 {
        n += 1;
        talk(&alice, n);
        talk(&bob, n);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    switch.set(vec![b_tcp]);
    drop(a); // stops at once: no drain, no goodbye
    switch.cut();
    for _ in 0..40 {
        n += 1;
        talk(&alice, n);
        talk(&bob, n);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done =
            [&alice, &bob].iter().all(|m| m.said_by("Alice").len() as u64 >= n && m.said_by("Bob").len() as u64 >= n);
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // a late duplicate would show
    for (who, m) in [("Alice", &alice), ("Bob", &bob)] {
        exact(&m.said_by("Alice"), n, &format!("{who} hears Alice"));
        exact(&m.said_by("Bob"), n, &format!("{who} hears Bob"));
    }
    assert!(*alice.resumed.lock().unwrap() >= 1, "Alice resumed her session");
    assert_eq!(*alice.connected.lock().unwrap(), 1, "…and never started a new one");
    let left = bob.events.lock().unwrap().iter().any(|v| v["ev"] == "presence" && v["member"]["state"] == "left");
    assert!(!left, "the room never saw Alice leave");
    drop(b);
}

/// With backend hooks: a node dies while the backend holds one of its
/// member's says (stored, never answered) and more wait behind it. The
/// member resumes on the other node, which hands the unacknowledged says
/// to the backend again under the same idempotency keys: the backend
/// stores each message once, and the room hears each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hooks_a_node_death_mid_call_leaves_the_backend_each_message_once() {
    let backend = backend::Backend::start().await;
    *backend.record.hold.lock().unwrap() = Some(10);
    let hooks = format!("{}call = [\"join\", \"say\", \"lifecycle\"]\n", backend::hooks_toml(&backend.url));
    let redis = Redis::start();
    let p = prefix();
    let a = gateway_with(&redis.url, "a", &p, &hooks).await;
    let b = gateway_with(&redis.url, "b", &p, &hooks).await;
    let (a_tcp, b_tcp) = (a.session_addr(Kind::Tcp).unwrap(), b.session_addr(Kind::Tcp).unwrap());
    let switch = Balancer::start(vec![a_tcp]).await;
    let alice = member(switch.addr);
    alice.send(json!({"op": "join", "room": "call", "name": "Alice"}));
    alice.wait("alice joined", |v| v["ev"] == "joined").await;

    let talk = |n: u64| alice.send(json!({"op": "say", "room": "call", "body": {"n": n}}));
    (1..=20).for_each(talk);
    tokio::time::timeout(WAIT, backend.record.held.notified()).await.expect("say 10 reaches the backend");
    *backend.record.hold.lock().unwrap() = None;
    switch.set(vec![b_tcp]);
    drop(a); // dies waiting for the backend's answer to say 10
    switch.cut();
    (21..=30).for_each(talk);

    let deadline = tokio::time::Instant::now() + WAIT;
    while alice.said_by("Alice ✓").len() < 30 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exact(&alice.said_by("Alice ✓"), 30, "Alice hears herself");
    let stored: Vec<u64> =
        backend.record.stored.lock().unwrap().iter().map(|(_, v)| v["n"].as_u64().unwrap()).collect();
    exact(&stored, 30, "the backend stores");
    let repeats = *backend.record.repeats.lock().unwrap();
    assert!(repeats >= 1, "node b handed say 10 (at least) to the backend again under its key");
    assert!(*alice.resumed.lock().unwrap() >= 1 && *alice.connected.lock().unwrap() == 1, "one session throughout");
    drop(b);
}

/// A node dies while its member's network is down too: the room hears
/// `reconnecting` once the node's lease lapses (from another node), then
/// `active` when the member resumes elsewhere; a member of the dead node
/// that never comes back expires once, cluster-wide, after its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_members_are_reconnecting_then_resume_or_expire_once() {
    let redis = Redis::start();
    let p = prefix();
    let start = |node: &'static str| {
        let (url, p) = (redis.url.clone(), p.clone());
        async move {
            let text = format!(
                "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[session]\ngrace = \"4s\"\nmin_idle_timeout = \"500ms\"\n\
                 [admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n\
                 [cluster]\nredis = \"{url}\"\nnode_id = \"{node}\"\nkey_prefix = \"{p}\"\nlease_ttl = \"1s\"\n"
            );
            let cfg = Config::parse(&text, "test").unwrap().resolve().unwrap();
            tether_gateway::run(cfg, std::future::pending()).await.expect("start a gateway node")
        }
    };
    let (a, b) = (start("a").await, start("b").await);
    let (a_tcp, b_tcp) = (a.session_addr(Kind::Tcp).unwrap(), b.session_addr(Kind::Tcp).unwrap());
    let switch = Balancer::start(vec![a_tcp]).await;
    let carols = Balancer::start(vec![a_tcp]).await;
    let alice = member(switch.addr);
    let carol = member(carols.addr);
    let bob = member(b_tcp);
    for (m, name) in [(&alice, "Alice"), (&carol, "Carol"), (&bob, "Bob")] {
        m.send(json!({"op": "join", "room": "call", "name": name}));
        m.wait("joined", |v| v["ev"] == "joined").await;
    }
    // Node a dies; Alice's network is down (nothing listens where she dials);
    // Carol's client is gone for good.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    switch.set(vec![dead]);
    carols.set(vec![dead]);
    drop(a);
    switch.cut();
    carols.cut();
    let state_of = |name: &'static str, state: &'static str| {
        move |v: &Value| v["ev"] == "presence" && v["member"]["name"] == name && v["member"]["state"] == state
    };
    bob.wait("Alice reconnecting (node a's lease lapsed)", state_of("Alice", "reconnecting")).await;
    switch.set(vec![b_tcp]);
    bob.wait("Alice active again, on node b", state_of("Alice", "active")).await;
    let expired = bob.wait("Carol expired", state_of("Carol", "expired")).await;
    assert_eq!(expired["room"], "call");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = bob.events.lock().unwrap().clone();
    let count = |name: &str, state: &str| {
        events
            .iter()
            .filter(|v| v["ev"] == "presence" && v["member"]["name"] == name && v["member"]["state"] == state)
            .count()
    };
    assert_eq!(count("Carol", "expired"), 1, "expired exactly once, cluster-wide");
    assert_eq!(count("Alice", "left") + count("Alice", "expired"), 0, "Alice never left");
    assert!(*alice.resumed.lock().unwrap() >= 1 && *alice.connected.lock().unwrap() == 1, "Alice kept her session");
    alice.send(json!({"op": "members", "room": "call"}));
    let list = alice.wait("members", |v| v["ev"] == "members").await;
    assert_eq!(list["count"], 2, "Alice and Bob remain: {list}");
    drop(b);
}

/// A Redis that cannot be reached at start stops the gateway with an error
/// naming the URL (not its password) and what to check.
#[tokio::test]
async fn an_unreachable_redis_at_start_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n\
         [cluster]\nredis = \"redis://:hunter2@127.0.0.1:{port}\"\n"
    );
    let cfg = Config::parse(&text, "test").unwrap().resolve().unwrap();
    let e = tether_gateway::run(cfg, std::future::pending()).await.expect_err("no Redis there");
    let msg = format!("{e:#}");
    assert!(msg.contains("cluster.redis") && msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("check that redis-server runs there"), "{msg}");
    assert!(!msg.contains("hunter2"), "the password stays out of messages: {msg}");
}

/// One HTTP/1.1 request with the admin key; returns (status, body).
async fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\
         Authorization: Bearer admin-key-0123456789abcdef\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The admin API of any node reaches rooms and sessions on every node: the
/// room listing and members are cluster-wide, a publish to a room reaches
/// members on both nodes, and a kick sent to node b ends a session node a
/// carries (CLOSE 3004; its room hears it left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_of_any_node_acts_cluster_wide() {
    let redis = Redis::start();
    let p = prefix();
    let a = gateway(&redis.url, "a", &p).await;
    let b = gateway(&redis.url, "b", &p).await;
    let alice = member(a.session_addr(Kind::Tcp).unwrap());
    let bob = member(b.session_addr(Kind::Tcp).unwrap());
    alice.send(json!({"op": "join", "room": "ops", "name": "Alice"}));
    alice.wait("alice joined", |v| v["ev"] == "joined").await;
    bob.send(json!({"op": "join", "room": "ops", "name": "Bob"}));
    bob.wait("bob joined", |v| v["ev"] == "joined").await;
    let b_admin = b.admin.unwrap();

    let (status, body) = admin(b_admin, "GET", "/v1/rooms/ops").await;
    assert_eq!(status, 200, "{body}");
    let room: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(room["members"].as_array().unwrap().len(), 2, "{room}");
    let (status, body) = admin(b_admin, "POST", "/v1/rooms/ops/publish").await;
    assert_eq!(status, 400, "a publish needs a body: {body}");
    // A node lists the rooms of the sessions it carries (membership lives in Redis).
    let bob_id = bob.handle.session_id().expect("bob has a session").to_string();
    let (status, body) = admin(b_admin, "GET", &format!("/v1/sessions/{bob_id}")).await;
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(session["rooms"], json!(["ops"]), "{session}");
    let (_, body) = admin(b_admin, "GET", "/v1/sessions").await;
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["sessions"][0]["rooms"], json!(["ops"]), "{list}");

    let id = alice.handle.session_id().expect("alice has a session").to_string();
    let (status, body) = admin(b_admin, "DELETE", &format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    bob.wait("Alice left", |v| {
        v["ev"] == "presence" && v["member"]["name"] == "Alice" && v["member"]["state"] == "left"
    })
    .await;
    let (status, _) = admin(b_admin, "DELETE", &format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 404, "gone once kicked");
    drop((a, b));
}

/// A member whose session is gone from Redis without its rooms being told
/// (it ended while every node that would have told them was down — here its
/// record is deleted by hand) is expired by a node's periodic sweep, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_session_is_gone_is_swept_out_once() {
    let redis = Redis::start();
    let p = prefix();
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n\
         [cluster]\nredis = \"{}\"\nnode_id = \"a\"\nkey_prefix = \"{p}\"\nsweep = \"300ms\"\n",
        redis.url
    );
    let g = tether_gateway::run(Config::parse(&text, "test").unwrap().resolve().unwrap(), std::future::pending())
        .await
        .unwrap();
    let addr = g.session_addr(Kind::Tcp).unwrap();
    let (ghost, bob) = (member(addr), member(addr));
    ghost.send(json!({"op": "join", "room": "hall", "name": "Ghost"}));
    ghost.wait("ghost joined", |v| v["ev"] == "joined").await;
    bob.send(json!({"op": "join", "room": "hall", "name": "Bob"}));
    bob.wait("bob joined", |v| v["ev"] == "joined").await;
    let id = ghost.handle.session_id().unwrap().to_string();
    // The session's record vanishes from Redis with nobody told (as when it
    // ended while every node was down); its client stays connected.
    {
        let client = tether_cluster::redis::Client::open(redis.url.clone()).unwrap();
        let mut con = client.get_connection().unwrap();
        let _: () = tether_cluster::redis::cmd("DEL").arg(format!("{p}:s:{id}")).query(&mut con).unwrap();
    }
    let gone = |v: &Value| v["ev"] == "presence" && v["member"]["name"] == "Ghost" && v["member"]["state"] == "expired";
    let seen = bob.wait("the ghost swept out", gone).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // more sweeps: nothing twice
    let n = bob.events.lock().unwrap().iter().filter(|v| gone(v)).count();
    assert_eq!(n, 1, "announced once: {seen}");
    bob.send(json!({"op": "members", "room": "hall"}));
    let list = bob.wait("members", |v| v["ev"] == "members").await;
    assert_eq!(list["count"], 1, "only Bob remains: {list}");
    drop(g);
}
