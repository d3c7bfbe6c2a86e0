//! The gateway's Prometheus metrics (GATEWAY.md §5), scraped from
//! `/metrics` of gateways run in this process: the timings of a lost
//! transport and its resume (measured against a raw client whose every
//! frame the test controls), byte counts, room gauges, labelled counters
//! present at 0 from the start, ends counted under what ended them (a
//! client's close, a kick, a ban, an expiry, a drain), admin requests by
//! route, process and build figures; and with `[cluster]`, outages timed
//! on the node that saw the detach and a kick forwarded to the node that
//! carries the session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/http.rs"]
mod http_client;
#[path = "common/peer.rs"]
#[allow(dead_code)]
mod peer;
#[path = "../../tether-cluster/tests/common/mod.rs"]
mod redis_harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peer::{connect, Peer, WAIT};
use serde_json::{json, Value};
use tether_gateway::{Config, Running};
use tether_proto::frame::{decode_stream, Hello, Resume, Welcome};
use tether_proto::{ClientEvent, CloseCode, Frame};
use tether_runtime::Kind;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SECRET: &str = "test-secret-0123456789abcdef0123456789";
const KEY: &str = "admin-key-0123456789abcdef";

/// A gateway on ephemeral loopback ports (TCP sessions, the admin API with
/// KEY, anonymous clients and JWTs both admitted); `extra` is more TOML.
async fn start(extra: &str) -> Running {
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n\
         [auth]\nanonymous = true\njwt_secret = \"{SECRET}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nkey = \"{KEY}\"\n\
         [demo]\nlisten = \"off\"\n{extra}"
    );
    let cfg = Config::parse(&text, "test config").unwrap().resolve().unwrap();
    tether_gateway::run(cfg, std::future::pending()).await.expect("start the gateway")
}

fn tcp(g: &Running) -> SocketAddr {
    g.session_addr(Kind::Tcp).unwrap()
}

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// One HTTP/1.1 request to the admin API; returns (status, body).
async fn http(g: &Running, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, String) {
    http_client::http(g.admin.unwrap(), method, path, key, body).await
}

async fn api(g: &Running, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, text) = http(g, method, path, Some(KEY), body).await;
    assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// The session the admin API lists for `user`.
async fn session_of(g: &Running, user: &str) -> Value {
    let sessions = api(g, "GET", "/v1/sessions", None).await;
    let found = sessions["sessions"].as_array().unwrap().iter().find(|s| s["user"] == user).cloned();
    found.unwrap_or_else(|| panic!("no session of {user}: {sessions}"))
}

/// Polls `f` until it holds (bounded by WAIT).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sample: its name, its labels, its value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape of `/metrics`, parsed.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

async fn scrape(g: &Running) -> Scrape {
    let (status, text) = http(g, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{text}");
    let samples = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(sample).collect();
    Scrape { text, samples }
}

/// Scrapes until `f` holds of a scrape (bounded by WAIT): what the event
/// loop or a session's task counts may trail what the client saw.
async fn scrape_when(g: &Running, what: &str, f: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = scrape(g).await;
        if f(&m) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {WAIT:?}: {what}\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `name{k="v",…} value`, the values unescaped.
fn sample(line: &str) -> Sample {
    parse_sample(line).unwrap_or_else(|| panic!("not a sample line: {line:?}"))
}

fn parse_sample(line: &str) -> Option<Sample> {
    let i = line.find(['{', ' '])?;
    let (name, mut rest) = (&line[..i], &line[i..]);
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        while !rest.starts_with('}') {
            let (key, r) = rest.strip_prefix(',').unwrap_or(rest).split_once("=\"")?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()? {
                        (_, 'n') => value.push('\n'),
                        (_, c) => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &r[end + 1..];
        }
        rest = &rest[1..];
    }
    let value = rest.trim().split(' ').next()?.parse().ok()?;
    Some((name.to_owned(), labels, value))
}

impl Scrape {
    /// The sample of `name` with exactly these labels, if there is one.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find_map(|(n, l, v)| {
            let same =
                l.len() == labels.len() && labels.iter().all(|(k, val)| l.iter().any(|(a, b)| a == k && b == val));
            (n == name && same).then_some(*v)
        })
    }

    /// As `get`, but the sample must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

/// A client speaking the protocol by hand over TCP: it sends only what the
/// test tells it to (no heartbeat), and counts the frame bytes both ways.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    sent: u64,
    received: u64,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw { s: TcpStream::connect(addr).await.unwrap(), buf: Vec::new(), sent: 0, received: 0 }
    }

    async fn send(&mut self, f: &Frame) {
        let mut v = Vec::new();
        f.encode_length_prefixed(&mut v);
        self.s.write_all(&v).await.unwrap();
        self.sent += f.encoded_len() as u64;
    }

    async fn recv(&mut self) -> Frame {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some((f, used)) = decode_stream(&self.buf, 1 << 20).unwrap() {
                self.buf.drain(..used);
                self.received += f.encoded_len() as u64;
                return f;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await.expect("a frame in time").unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Says HELLO (asking the server to find it lost after `idle_ms` of
    /// silence) and returns the WELCOME.
    async fn hello(&mut self, idle_ms: u32, resume: Option<Resume>) -> Welcome {
        let h = Hello {
            min_version: 1,
            max_version: 1,
            max_frame: 1 << 20,
            idle_timeout_ms: idle_ms,
            resume,
            auth: Bytes::new(),
        };
        self.send(&Frame::Hello(h)).await;
        match self.recv().await {
            Frame::Welcome(w) => w,
            f => panic!("expected WELCOME, got {f:?}"),
        }
    }

    /// The code of the CLOSE the server sends next (other frames skipped).
    async fn closed(&mut self) -> CloseCode {
        loop {
            if let Frame::Close(c) = self.recv().await {
                return c.code;
            }
        }
    }

    /// The next DATA frame whose payload satisfies `f`: its seq and payload.
    async fn data(&mut self, f: impl Fn(&Value) -> bool) -> (u64, Value) {
        loop {
            if let Frame::Data { seq, payload } = self.recv().await {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                if f(&v) {
                    return (seq, v);
                }
            }
        }
    }
}

fn resume(w: &Welcome, last_received: u64) -> Option<Resume> {
    Some(Resume { session_id: w.session_id, token: w.token.clone(), last_received })
}

/// Waits for the session to be established.
async fn connected(p: &mut Peer) {
    p.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
}

/// Waits for the session's end.
async fn ended(p: &mut Peer) {
    p.next("the session's end", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
}

/// A session's transport goes silent and the heartbeat finds it lost; the
/// client resumes a second later; then its connection closes. Each timing
/// is recorded once, within the bounds the test's own clock gives, and the
/// frame bytes read and written are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_transport_and_its_resume_are_timed() {
    let g = start("[session]\ngrace = \"30s\"\nmin_idle_timeout = \"1s\"\n").await;
    let m = scrape(&g).await;
    assert_eq!(m.value("tether_bytes_in_total", &[]), 0.0);
    assert_eq!(m.value("tether_bytes_out_total", &[]), 0.0);
    assert_eq!((m.value("tether_rooms", &[]), m.value("tether_room_members", &[])), (0.0, 0.0));

    // A session that joins a room, then says nothing more: it asked to be
    // found lost after 1 s of silence.
    let mut first = Raw::connect(tcp(&g)).await;
    let w = first.hello(1000, None).await;
    assert!(!w.resumed);
    let silent_from = Instant::now();
    let join = json!({"op": "join", "room": "lobby"}).to_string();
    first.send(&Frame::Data { seq: 1, payload: Bytes::from(join) }).await;
    let (seq, _) = first.data(|v| v["ev"] == "joined").await;
    let m = scrape(&g).await;
    assert_eq!((m.value("tether_rooms", &[]), m.value("tether_room_members", &[])), (1.0, 1.0));

    // The heartbeat finds it: the silence before the detach is at least the
    // idle timeout, and at most what passed until the test saw the detach.
    until("the session detached", || detached(&g)).await;
    let seen_detached = Instant::now();
    let heartbeat = [("cause", "heartbeat")];
    let m = scrape_when(&g, "one detection", |m| {
        m.get("tether_detection_seconds_count", &heartbeat) == Some(1.0)
            && m.get("tether_detections_total", &[]) == Some(1.0)
    })
    .await;
    let silence = m.value("tether_detection_seconds_sum", &heartbeat);
    assert!(silence >= 1.0 && silence <= (seen_detached - silent_from).as_secs_f64(), "silence {silence}");
    assert_eq!(m.get("tether_outage_seconds_count", &[]), None, "no resume yet:\n{}", m.text);

    // The outage lasts at least this second (a lower bound, not a race).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut second = Raw::connect(tcp(&g)).await;
    let hello_sent = Instant::now();
    let w2 = second.hello(60_000, resume(&w, seq)).await;
    let resumed = Instant::now();
    assert!(w2.resumed && w2.session_id == w.session_id);
    let m = scrape_when(&g, "the resume counted and timed", |m| {
        m.get("tether_resumes_total", &[]) == Some(1.0)
            && m.get("tether_outage_seconds_count", &[]) == Some(1.0)
            && m.get("tether_resume_handshake_seconds_count", &[]) == Some(1.0)
    })
    .await;
    let outage = m.value("tether_outage_seconds_sum", &[]);
    let longest = (resumed - silent_from).as_secs_f64() - 1.0; // it detached after the 1 s idle timeout
    assert!(outage >= (hello_sent - seen_detached).as_secs_f64() && outage <= longest, "outage {outage}");
    let handshake = m.value("tether_resume_handshake_seconds_sum", &[]);
    assert!(handshake > 0.0 && handshake <= (resumed - hello_sent).as_secs_f64(), "handshake {handshake}");
    // Every frame this client sent was read (the server answered the last);
    // what it read the server wrote, and maybe more it has not read.
    assert_eq!(m.value("tether_bytes_in_total", &[]), (first.sent + second.sent) as f64);
    assert!(m.value("tether_bytes_out_total", &[]) >= (first.received + second.received) as f64);

    // The connection closes: found lost at once (the silence since the
    // resume), under cause "closed".
    drop(second);
    let closed = [("cause", "closed")];
    let m = scrape_when(&g, "a detection by a closed connection", |m| {
        m.get("tether_detection_seconds_count", &closed) == Some(1.0)
            && m.get("tether_detections_total", &[]) == Some(2.0)
    })
    .await;
    let silence = m.value("tether_detection_seconds_sum", &closed);
    assert!(silence <= resumed.elapsed().as_secs_f64(), "silence {silence}");
    assert_eq!(m.value("tether_detection_seconds_count", &heartbeat), 1.0);
    // The detached member is still in its room.
    assert_eq!((m.value("tether_rooms", &[]), m.value("tether_room_members", &[])), (1.0, 1.0));
}

const END_REASONS: [&str; 7] = ["closed", "kicked", "banned", "expired", "drained", "replay_overflow", "other"];
const REJECT_REASONS: [&str; 8] = [
    "UnsupportedVersion",
    "UnknownSession",
    "InvalidToken",
    "TokenReused",
    "Overloaded",
    "ShuttingDown",
    "Unauthorized",
    "BadHello",
];

/// Every labelled counter is there at 0 before anything happened, with the
/// build and process figures; then each way a session ends is counted
/// under its own reason, and admin requests by route, method and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_start_at_zero_and_ends_are_counted_by_what_ended_them() {
    let g = start("[session]\ngrace = \"2s\"\nmin_idle_timeout = \"1s\"\n").await;
    let m = scrape(&g).await;
    for reason in END_REASONS {
        assert_eq!(m.value("tether_sessions_ended_total", &[("reason", reason)]), 0.0);
    }
    for reason in REJECT_REASONS {
        assert_eq!(m.value("tether_rejects_total", &[("reason", reason)]), 0.0);
    }
    for hook in ["connect", "join", "say", "rpc", "lifecycle"] {
        for outcome in ["ok", "unavailable", "garbage"] {
            assert_eq!(m.value("tether_hook_calls_total", &[("hook", hook), ("outcome", outcome)]), 0.0);
        }
    }
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let build = [("version", env!("CARGO_PKG_VERSION")), ("protocol", "1"), ("profile", profile)];
    assert_eq!(m.value("tether_build_info", &build), 1.0);
    // The process's figures (from /proc on Linux).
    if cfg!(target_os = "linux") {
        assert!(m.value("process_resident_memory_bytes", &[]) > 1e6);
        assert!(m.value("process_open_fds", &[]) >= 3.0);
        assert!(m.value("process_threads", &[]) >= 1.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = m.value("process_start_time_seconds", &[]);
        assert!(started <= now + 1.0 && started > now - 86_400.0, "started {started}, now {now}");
        assert!(m.value("process_cpu_seconds_total", &[]) >= 0.0);
    }

    // A refused token.
    let mut eve = connect(tcp(&g), "not-a-jwt");
    ended(&mut eve).await;
    // A client closes its session itself.
    let mut alice = connect(tcp(&g), &token("alice"));
    connected(&mut alice).await;
    alice.handle.close();
    ended(&mut alice).await;
    // A kick.
    let mut carol = connect(tcp(&g), &token("carol"));
    connected(&mut carol).await;
    let id = session_of(&g, "carol").await["id"].as_str().unwrap().to_owned();
    api(&g, "DELETE", &format!("/v1/sessions/{id}?reason=spam"), None).await;
    ended(&mut carol).await;
    // A ban ends both sessions of its user.
    let (mut m1, mut m2) = (connect(tcp(&g), &token("mallory")), connect(tcp(&g), &token("mallory")));
    connected(&mut m1).await;
    connected(&mut m2).await;
    let id = session_of(&g, "mallory").await["id"].as_str().unwrap().to_owned();
    let r = api(&g, "DELETE", &format!("/v1/sessions/{id}?ban=10m"), None).await;
    assert_eq!(r["kicked"].as_array().unwrap().len(), 2, "{r}");
    ended(&mut m1).await;
    ended(&mut m2).await;
    // A session whose client goes silent and never comes back expires.
    let mut gone = Raw::connect(tcp(&g)).await;
    gone.hello(1000, None).await;
    let expired = [("reason", "expired")];
    scrape_when(&g, "an expiry", |m| m.value("tether_sessions_ended_total", &expired) == 1.0).await;
    // A drain: the attached client is told to come back later; it does not
    // (and could not resume here), so its session expires — by the drain.
    let mut stays = Raw::connect(tcp(&g)).await;
    stays.hello(60_000, None).await;
    let r = api(&g, "POST", "/v1/drain", Some(json!({"window": "1s"}))).await;
    assert_eq!(r["told"], 1, "{r}");
    assert_eq!(stays.closed().await, CloseCode::GoingAway);
    let drained = [("reason", "drained")];
    scrape_when(&g, "a drained session's end", |m| m.value("tether_sessions_ended_total", &drained) == 1.0).await;

    // The admin API: a request without the key, an unknown path.
    assert_eq!(http(&g, "GET", "/v1/sessions", None, None).await.0, 401);
    assert_eq!(http(&g, "GET", "/nope", Some(KEY), None).await.0, 404);

    let m = scrape(&g).await;
    let ends: Vec<(&str, f64)> =
        END_REASONS.iter().map(|r| (*r, m.value("tether_sessions_ended_total", &[("reason", r)]))).collect();
    assert_eq!(
        ends,
        [
            ("closed", 1.0),
            ("kicked", 1.0),
            ("banned", 2.0),
            ("expired", 1.0),
            ("drained", 1.0),
            ("replay_overflow", 0.0),
            ("other", 0.0)
        ]
    );
    assert_eq!(m.value("tether_expiries_total", &[]), 2.0, "expired and drained both ran out of grace");
    assert_eq!(m.value("tether_rejects_total", &[("reason", "Unauthorized")]), 1.0);
    assert_eq!(m.value("tether_rejects_total", &[("reason", "BadHello")]), 0.0);
    let admin = |route: &str, method: &str, status: &str| {
        m.value("tether_admin_requests_total", &[("route", route), ("method", method), ("status", status)])
    };
    assert_eq!(admin("/v1/sessions/{id}", "DELETE", "200"), 2.0);
    assert_eq!(admin("/v1/sessions", "GET", "200"), 2.0, "session_of, twice");
    assert_eq!(admin("/v1/sessions", "GET", "401"), 1.0);
    assert_eq!(admin("/v1/drain", "POST", "200"), 1.0);
    assert_eq!(admin("unmatched", "GET", "404"), 1.0);
    // Every scrape before this one (this one is counted once answered).
    let scrapes =
        m.value("tether_admin_requests_total", &[("route", "/metrics"), ("method", "GET"), ("status", "200")]);
    assert!(scrapes >= 3.0, "{scrapes}");
    assert!(m.value("tether_bytes_in_total", &[]) > 0.0 && m.value("tether_bytes_out_total", &[]) > 0.0);
}

/// With `[cluster]`: a session found lost and resumed on the same node has
/// its outage timed there (the detach instant survives the claim through
/// the store); resumed on another node, it is counted there but has no
/// outage sample (that node never saw the detach). A kick made on one
/// node's admin API ends the session on the node carrying it, counted
/// there as `kicked`. There are no room gauges (rooms live in Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_outages_are_timed_where_the_detach_was_seen() {
    let redis = redis_harness::Redis::start();
    let prefix = redis_harness::prefix();
    let node = |name: &'static str| {
        let text = format!(
            "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[session]\ngrace = \"30s\"\nmin_idle_timeout = \"1s\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\nkey = \"{KEY}\"\n[demo]\nlisten = \"off\"\n\
             [cluster]\nredis = \"{}\"\nnode_id = \"{name}\"\nkey_prefix = \"{prefix}\"\n",
            redis.url
        );
        let cfg = Config::parse(&text, "test").unwrap().resolve().unwrap();
        async move { tether_gateway::run(cfg, std::future::pending()).await.expect("start a node") }
    };
    let (a, b) = (node("a").await, node("b").await);
    // Found lost on a, resumed on a a second later.
    let mut first = Raw::connect(tcp(&a)).await;
    let hello_sent = Instant::now();
    let w = first.hello(1000, None).await;
    until("detached on a", || detached(&a)).await;
    let seen_detached = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut second = Raw::connect(tcp(&a)).await;
    let resume_sent = Instant::now();
    let w2 = second.hello(1000, resume(&w, 0)).await;
    let resumed = Instant::now();
    assert!(w2.resumed);
    let m = scrape_when(&a, "the resume on a timed", |m| {
        m.get("tether_outage_seconds_count", &[]) == Some(1.0)
            && m.get("tether_resume_handshake_seconds_count", &[]) == Some(1.0)
    })
    .await;
    // From the detach (after the 1 s idle timeout) to the resume.
    let outage = m.value("tether_outage_seconds_sum", &[]);
    let (least, most) = ((resume_sent - seen_detached).as_secs_f64(), (resumed - hello_sent).as_secs_f64() - 1.0);
    assert!(outage >= least && outage <= most, "outage {outage} not in [{least}, {most}]");
    assert!(!m.has("tether_rooms") && !m.has("tether_room_members"), "{}", m.text);

    // Found lost on a again (it asked for 1 s), resumed on b.
    until("detached on a again", || detached(&a)).await;
    let mut third = Raw::connect(tcp(&b)).await;
    let w3 = third.hello(60_000, resume(&w2, 0)).await;
    assert!(w3.resumed);
    // Counted once the event loop had the resume, which comes after the
    // timings: no outage sample can come after that.
    let m = scrape_when(&b, "the resume on b counted", |m| {
        m.get("tether_resumes_total", &[]) == Some(1.0)
            && m.get("tether_resume_handshake_seconds_count", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(m.get("tether_outage_seconds_count", &[]), None, "b never saw the detach:\n{}", m.text);
    let heartbeat = [("cause", "heartbeat")];
    scrape_when(&a, "two detections on a", |m| m.get("tether_detection_seconds_count", &heartbeat) == Some(2.0)).await;

    // Kicked through a's admin API (once a has let the session go): b
    // ends it, and counts it.
    until("a let the session go", || async { Probe(a.admin.unwrap()).sessions().await.is_empty() }).await;
    let id = w.session_id.to_string();
    let (status, text) = http(&a, "DELETE", &format!("/v1/sessions/{id}"), Some(KEY), None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(third.closed().await, CloseCode::Kicked);
    let kicked = [("reason", "kicked")];
    scrape_when(&b, "the kick counted on b", |m| m.value("tether_sessions_ended_total", &kicked) == 1.0).await;
    assert_eq!(scrape(&a).await.value("tether_sessions_ended_total", &kicked), 0.0);
}

/// Whether the gateway lists a detached session.
async fn detached(g: &Running) -> bool {
    Probe(g.admin.unwrap()).sessions().await.iter().any(|s| s["state"] == "detached")
}

/// The admin API of a node, for polling.
struct Probe(SocketAddr);

impl Probe {
    async fn sessions(&self) -> Vec<Value> {
        let mut s = TcpStream::connect(self.0).await.unwrap();
        let req =
            format!("GET /v1/sessions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["sessions"].as_array().cloned().unwrap_or_default()
    }
}
