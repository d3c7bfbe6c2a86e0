//! The gateway for real, in process: `tether_gateway::run` on port 0,
//! clients of the tether runtime (some through a fault proxy), and the admin
//! API over HTTP. Covers auth (JWT accepted, refused with a reason), rooms
//! and presence through a transport loss, a resume and an expiry, the admin
//! API (key, sessions, rooms, publish, kick, ban, drain, readiness, OpenAPI,
//! metrics), RTT reports, and a drain on shutdown. What needs the binary (the
//! banner, SIGTERM, logs on stderr, `tether config check`) is tested in
//! `crates/tether/tests/serve.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/http.rs"]
mod http_client;
use http_client::http;
#[path = "../../tether-runtime/tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tether_gateway::protocol::Event as RoomEvent;
use tether_gateway::{Config, Running, Stopped};
use tether_proto::{ClientConfig, ClientEvent, Profile, SessionEnd};
use tether_runtime::client::{Client, ClientHandle, ClientOptions, Event};
use tether_runtime::Kind;
use tokio::sync::{mpsc, oneshot};

const SECRET: &str = "test-secret-0123456789abcdef0123456789";
const KEY: &str = "admin-key-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(15);

/// A gateway started in this process; dropping it stops it.
struct Gateway {
    running: Running,
    tcp: SocketAddr,
    admin: SocketAddr,
    /// Resolving it starts the drain.
    stop: Option<oneshot::Sender<()>>,
}

/// Starts a gateway on ephemeral loopback ports: JWT auth only, a 3 s
/// grace, the admin API with key KEY, no demo page; `extra` is more TOML.
async fn start_gateway(extra: &str) -> Gateway {
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\n\
         [session]\ngrace = \"3s\"\n\
         [auth]\nanonymous = false\njwt_secret = \"{SECRET}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nkey = \"{KEY}\"\n\
         [demo]\nlisten = \"off\"\n{extra}"
    );
    let cfg = Config::parse(&text, "test config").unwrap().resolve().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tether_gateway::run(cfg, async move {
        let _ = stopped.await;
    })
    .await
    .expect("start the gateway");
    assert_eq!(&*running.admin_key, KEY);
    assert!(!running.admin_key_generated);
    let tcp = running.session_addr(Kind::Tcp).expect("tcp listener");
    assert_ne!(tcp.port(), 0, "the bound port is reported, not the configured 0");
    assert!(running.session_addr(Kind::Ws).is_some_and(|a| a.port() != 0));
    assert_eq!(running.demo, None);
    let admin = running.admin.expect("admin listener");
    Gateway { running, tcp, admin, stop: Some(stop) }
}

fn token(sub: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "exp": now + exp_in}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A runtime client whose events are collected on a channel.
struct Peer {
    handle: ClientHandle,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    _task: tokio::task::JoinHandle<()>,
}

fn connect(addr: SocketAddr, auth: &str) -> Peer {
    connect_with(addr, auth, None)
}

/// A client announcing `max_frame` (the largest frame it accepts) if given.
fn connect_with(addr: SocketAddr, auth: &str, max_frame: Option<u32>) -> Peer {
    let mut core = ClientConfig::profile(Profile::Realtime);
    core.auth = Bytes::from(auth.to_owned());
    if let Some(m) = max_frame {
        core.max_frame = m;
    }
    let mut opts = ClientOptions::new(core);
    opts.watch_network = false;
    let mut client = Client::start(format!("tcp://{addr}").parse().unwrap(), opts).unwrap();
    let handle = client.handle();
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(e) = client.next_event().await {
            if let Event::Session(e) = e {
                if tx.send(e).is_err() {
                    return;
                }
            }
        }
    });
    Peer { handle, events, _task: task }
}

impl Peer {
    async fn next(&mut self, what: &str, mut f: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if f(&e) => return e,
                Ok(Some(_)) => {}
                Ok(None) => panic!("client stopped while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The next room-protocol message matching `f`.
    async fn msg(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => panic!("client stopped while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            };
            if let ClientEvent::Message(m) = e {
                // Everything the gateway sends is one of the protocol's events.
                if let Err(e) = serde_json::from_slice::<RoomEvent>(&m) {
                    panic!("not a room event ({e}): {}", String::from_utf8_lossy(&m));
                }
                let v: Value = serde_json::from_slice(&m).unwrap();
                if f(&v) {
                    return v;
                }
            }
        }
    }

    fn send(&self, v: Value) {
        self.handle.send(Bytes::from(v.to_string())).unwrap();
    }
}

async fn api(g: &Gateway, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, text) = http(g.admin, method, path, Some(KEY), body).await;
    assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// The id of the session the admin API lists for `user`.
async fn session_of(g: &Gateway, user: &str) -> String {
    let sessions = api(g, "GET", "/v1/sessions", None).await;
    let found = sessions["sessions"].as_array().unwrap().iter().find(|s| s["user"] == user);
    found.and_then(|s| s["id"].as_str()).unwrap_or_else(|| panic!("no session of {user}: {sessions}")).to_owned()
}

fn presence(room: &'static str, user: &'static str, state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["ev"] == "presence" && v["room"] == room && v["member"]["user"] == user && v["member"]["state"] == state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_presence_auth_and_admin_api() {
    let g = start_gateway("").await;

    // Auth: no token, a forged token, an expired token: refused with the reason.
    for (auth, why) in [
        (String::new(), "requires a token"),
        (token("eve", 600).replace('.', ".x"), "signature"),
        ("not-a-jwt".to_owned(), "not a valid JWT"),
        (token("eve", -3600), "expired"),
    ] {
        let mut p = connect(g.tcp, &auth);
        let e = p.next("a refusal", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
        let ClientEvent::SessionEnded { reason: SessionEnd::Refused { message, .. }, restarting, .. } = e else {
            panic!("expected a refusal, got {e:?}")
        };
        assert!(message.contains(why), "{message:?} should say {why:?}");
        assert!(!restarting, "an Unauthorized refusal must not be retried");
    }

    // Alice directly, Bob through a proxy we can cut.
    let proxy = proxy::Proxy::start(g.tcp).await;
    let mut alice = connect(g.tcp, &token("alice", 600));
    let mut bob = connect(proxy.addr, &token("bob", 600));
    alice.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
    bob.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
    alice.send(json!({"op": "join", "room": "call", "name": "Alice"}));
    let joined = alice.msg("joined", |v| v["ev"] == "joined").await;
    assert_eq!(joined["you"]["user"], "alice");
    bob.send(json!({"op": "join", "room": "call"}));
    let joined = bob.msg("joined", |v| v["ev"] == "joined").await;
    assert_eq!(joined["members"].as_array().unwrap().len(), 2);
    alice.msg("bob active", presence("call", "bob", "active")).await;
    bob.send(json!({"op": "say", "room": "call", "body": {"text": "hello"}}));
    let m = alice.msg("bob's message", |v| v["ev"] == "message").await;
    assert_eq!((m["from"]["user"].as_str(), m["body"]["text"].as_str()), (Some("bob"), Some("hello")));

    // A blip: Bob's connection is reset. The room sees him reconnecting,
    // then active again; he never left.
    proxy.reset_all();
    alice.msg("bob reconnecting", presence("call", "bob", "reconnecting")).await;
    bob.next("resumed", |e| matches!(e, ClientEvent::Resumed { .. })).await;
    alice.msg("bob active again", presence("call", "bob", "active")).await;
    let room = api(&g, "GET", "/v1/rooms/call", None).await;
    assert_eq!(room["members"].as_array().unwrap().len(), 2);

    // The admin API: the key is required; sessions show users and state.
    assert_eq!(http(g.admin, "GET", "/v1/sessions", None, None).await.0, 401);
    assert_eq!(http(g.admin, "GET", "/v1/sessions", Some("wrong-key-000000000"), None).await.0, 401);
    assert_eq!(http(g.admin, "GET", "/health", None, None).await.0, 200);
    let sessions = api(&g, "GET", "/v1/sessions", None).await;
    let users: Vec<&str> = sessions["sessions"].as_array().unwrap().iter().filter_map(|s| s["user"].as_str()).collect();
    assert!(users.contains(&"alice") && users.contains(&"bob"), "{sessions}");
    let bob_id = session_of(&g, "bob").await;
    assert_eq!(api(&g, "GET", &format!("/v1/sessions/{bob_id}"), None).await["transport"], "tcp");

    // Publish to the room and to one session.
    let r = api(&g, "POST", "/v1/rooms/call/publish", Some(json!({"body": {"notice": "recording"}}))).await;
    assert_eq!(r["queued"], 2);
    alice.msg("room publish", |v| v["ev"] == "publish" && v["body"]["notice"] == "recording").await;
    bob.msg("room publish", |v| v["ev"] == "publish" && v["body"]["notice"] == "recording").await;
    api(&g, "POST", &format!("/v1/sessions/{bob_id}/publish"), Some(json!({"body": "just you"}))).await;
    bob.msg("session publish", |v| v["ev"] == "publish" && v["body"] == "just you").await;
    let (status, text) = http(g.admin, "POST", "/v1/rooms/nope/publish", Some(KEY), Some(json!({"body": 1}))).await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(http(g.admin, "GET", "/v1/sessions/xyz", Some(KEY), None).await.0, 400);

    // Expiry: Bob's path dies for longer than the 3 s grace. The room is told
    // he expired, and he is gone from it.
    proxy.blackhole(true);
    proxy.reset_all();
    alice.msg("bob expired", presence("call", "bob", "expired")).await;
    let room = api(&g, "GET", "/v1/rooms/call", None).await;
    assert_eq!(room["members"].as_array().unwrap().len(), 1);

    // Kick: a new member is kicked; the room sees them leave.
    let mut carol = connect(g.tcp, &token("carol", 600));
    carol.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
    carol.send(json!({"op": "join", "room": "call"}));
    carol.msg("joined", |v| v["ev"] == "joined").await;
    let carol_id = session_of(&g, "carol").await;
    api(&g, "DELETE", &format!("/v1/sessions/{carol_id}?reason=spam"), None).await;
    alice.msg("carol left", presence("call", "carol", "left")).await;
    let e = carol.next("session end", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
    assert!(format!("{e:?}").contains("spam"), "{e:?}");

    // Kick with a ban: the user cannot open a new session until it is lifted.
    let mut dave = connect(g.tcp, &token("dave", 600));
    dave.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
    let dave_id = session_of(&g, "dave").await;
    let r = api(&g, "DELETE", &format!("/v1/sessions/{dave_id}?ban=10m"), None).await;
    assert_eq!(r["banned"], "dave");
    dave.next("session end", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
    let mut again = connect(g.tcp, &token("dave", 600));
    let e = again.next("a refusal", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
    assert!(format!("{e:?}").contains("banned by the operator"), "{e:?}");
    assert_eq!(api(&g, "GET", "/v1/bans", None).await["bans"][0]["user"], "dave");
    api(&g, "DELETE", "/v1/bans/dave", None).await;
    let mut back = connect(g.tcp, &token("dave", 600));
    back.next("connected after the ban was lifted", |e| matches!(e, ClientEvent::Connected { .. })).await;

    // Metrics count what happened.
    let (status, text) = http(g.admin, "GET", "/metrics", Some(KEY), None).await;
    assert_eq!(status, 200);
    let metric = |name: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    assert_eq!(metric("tether_rejects_total{reason=\"Unauthorized\"}"), 5.0, "{text}");
    // Present from the start (loopback clients are never rate-limited).
    assert!(text.lines().any(|l| l == "tether_connections_rate_limited_total 0"), "{text}");
    assert!(metric("tether_sessions_opened_total") >= 3.0);
    assert!(metric("tether_detections_total") >= 2.0);
    assert!(metric("tether_resumes_total") >= 1.0);
    assert_eq!(metric("tether_expiries_total"), 1.0);
    assert!(metric("tether_messages_in_total") >= 4.0);
    assert!(text.contains("tether_sessions{state=\"attached\"}"));
    assert!(text.contains("tether_connections{transport=\"tcp\"}"));
    assert!(text.contains("tether_pings_total"));

    // Bad admin input gets a JSON error saying what to send.
    let (status, text) = http(g.admin, "POST", "/v1/drain", Some(KEY), Some(json!("soon"))).await;
    assert!(status == 400 && text.contains(r#"{"error":"#) && text.contains("window"), "{status} {text}");

    // Every path in the OpenAPI description is served (none falls through
    // to "no such endpoint").
    let (_, doc) = http(g.admin, "GET", "/openapi.json", None, None).await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let p = path.replace("{id}", &"0".repeat(32)).replace("{room}", "call").replace("{user}", "nobody");
            let (status, text) = http(g.admin, &method.to_uppercase(), &p, Some(KEY), Some(json!({"body": 1}))).await;
            assert!(!text.contains("no such endpoint") && status != 405, "{method} {path}: {status} {text}");
        }
    }

    // Drain: readiness turns 503 and attached clients are told to come back.
    assert_eq!(http(g.admin, "GET", "/ready", None, None).await.0, 503, "the drain in the loop above");
}

/// A client reporting its RTT on its PINGs (GATEWAY.md §1.3) is listed with
/// it after its next PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_reported_on_pings_is_listed() {
    let g = start_gateway("").await;
    // A realtime client pings after 3 s of silence; its RTT sample proves a
    // PING reached the gateway and was answered.
    let mut p = connect(g.tcp, &token("pinger", 600));
    p.next("an RTT sample", |e| matches!(e, ClientEvent::Rtt(_))).await;
    p.handle.set_ping_payload(r#"{"rtt_ms": 1.5}"#);
    p.next("the next RTT sample", |e| matches!(e, ClientEvent::Rtt(_))).await;
    // The gateway reads the payload from its event stream, which may trail
    // the PONG by a moment: poll, bounded.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sessions = api(&g, "GET", "/v1/sessions", None).await;
        if sessions["sessions"][0]["rtt_ms"] == 1.5 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no RTT listed: {sessions}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shutdown future given to `run` drains: the attached client is told
/// to come back later (GoingAway), `stopped` reports how many were told, and
/// the listeners are closed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_stops() {
    let mut g = start_gateway("").await;
    let mut p = connect(g.tcp, &token("leaver", 600));
    p.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
    let _ = g.stop.take().unwrap().send(());
    let e = p.next("the drain", |e| matches!(e, ClientEvent::Disconnected { .. })).await;
    assert!(format!("{e:?}").contains("GoingAway") || format!("{e:?}").contains("going away"), "{e:?}");
    let (tcp, admin) = (g.tcp, g.admin);
    let stopped = tokio::time::timeout(WAIT, g.running.stopped()).await.expect("stopped within 15 s").unwrap();
    assert_eq!(stopped, Stopped::Drained { told: 1, window: Duration::from_secs(5) });
    assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "the admin listener is still open");
    // The runtime's listener tasks see the shutdown on their next turn:
    // poll, bounded.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(tcp).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the session listener is still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `say` whose delivery is larger than one member's frame limit (16 KiB,
/// the smallest a client may announce) reaches everyone else, and the sayer
/// is told how many members missed it, how large it was and their limit
/// (GATEWAY.md §1.2, `too_large_for_members`). Nothing is lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_say_too_large_for_a_members_frame_is_reported_to_the_sayer() {
    // The say limit is raised above the small member's frame, so that the
    // request passes it and only the small member cannot take the delivery.
    let g = start_gateway("[limits]\nmax_say_bytes = 65536\n").await;
    let mut alice = connect(g.tcp, &token("alice", 600));
    let mut bob = connect(g.tcp, &token("bob", 600));
    let mut small = connect_with(g.tcp, &token("small", 600), Some(16384));
    for p in [&mut alice, &mut bob, &mut small] {
        p.send(json!({"op": "join", "room": "big"}));
        p.msg("joined", |v| v["ev"] == "joined").await;
    }
    let text = "x".repeat(17_000);
    let request = json!({"op": "say", "room": "big", "body": {"text": text}});
    assert!(request.to_string().len() < 65536, "the request is within the say limit");
    alice.send(request);
    alice.send(json!({"op": "say", "room": "big", "body": {"text": "after"}}));

    // The sayer gets the message (its own echo), then the answer.
    let echo = alice.msg("the echo", |v| v["ev"] == "message" && v["body"]["text"] == text.as_str()).await;
    let size = serde_json::to_vec(&echo).unwrap().len();
    let e = alice.msg("the too-large answer", |v| v["ev"] == "error").await;
    assert_eq!(
        (&e["op"], &e["code"], &e["room"], &e["undelivered"], &e["size"]),
        (&json!("say"), &json!("too_large_for_members"), &json!("big"), &json!(1), &json!(size)),
        "{e}"
    );
    let limit = e["limit"].as_u64().unwrap() as usize;
    assert!(limit < 16384 && limit > 16000 && limit < size, "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("1 member(s)") && message.contains(&size.to_string()), "{message}");
    alice.msg("alice's next message", |v| v["ev"] == "message" && v["body"]["text"] == "after").await;

    // The normal member gets it.
    bob.msg("the large message", |v| v["ev"] == "message" && v["body"]["text"] == text.as_str()).await;
    bob.msg("the next message", |v| v["ev"] == "message" && v["body"]["text"] == "after").await;

    // The small member does not: the next message it gets is the one after
    // (a session delivers in order, so the large one would have come first).
    let next = small.msg("the next message", |v| v["ev"] == "message").await;
    assert_eq!(next["body"]["text"], "after", "the small member got something else first: {next}");

    let (_, metrics) = http(g.admin, "GET", "/metrics", Some(KEY), None).await;
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_send_failures_total ")?.parse().ok())
        .unwrap_or_else(|| panic!("no send failures counted: {metrics}"));
    assert_eq!(failures, 1.0);
}
