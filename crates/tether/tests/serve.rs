//! `tether serve` and `tether config` as processes: what only the binary
//! does. The start banner (printed from what the gateway library reports),
//! SIGTERM draining and exiting 0, logs on stderr as `[log]` asks, and
//! `tether config check`/`example` on the command line. The gateway itself
//! is tested in process: `crates/tether-gateway/tests/gateway.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_proto::{ClientConfig, ClientEvent, Profile};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod common;

use common::{connect, Gateway, TempDir};

const WAIT: Duration = Duration::from_secs(15);

/// `tether serve` on ephemeral loopback ports (anonymous clients, no demo
/// page; `extra` is more TOML, read in the `[admin]` table unless it starts
/// another), once its banner is printed.
fn start_gateway(extra: &str, stderr: Stdio) -> Gateway {
    let dir = TempDir::new("serve");
    let state = dir.0.join("state");
    launch(extra, stderr, dir, &state)
}

/// As [`start_gateway`], with the state directory (where a generated admin
/// key is kept) at `state`.
fn launch(extra: &str, stderr: Stdio, dir: TempDir, state: &std::path::Path) -> Gateway {
    let config = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\n[session]\ngrace = \"3s\"\n\
         [demo]\nlisten = \"off\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}"
    );
    common::launch(&config, stderr, dir, state)
}

/// One HTTP/1.1 GET; returns the status.
async fn get(addr: SocketAddr, path: &str, key: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The banner names every listener as bound (never port 0) and where the
/// generated admin key is kept — never the key itself. The key file is
/// private, the admin API accepts its key, and a restart keeps it; the
/// metrics are open across the restart (Prometheus scrapes with no key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_names_the_key_file_and_a_restart_keeps_the_key() {
    let state = TempDir::new("state");
    let mut key = String::new();
    for start in 0..2 {
        let g = launch("", Stdio::inherit(), TempDir::new("serve"), &state.0);
        let b = &g.banner;
        assert!(b[0].starts_with("tether serve: in-memory gateway, grace 3s, config "), "{b:?}");
        assert_eq!(b.iter().filter(|l| l.trim().starts_with("sessions on ")).count(), 2, "{b:?}");
        assert!(b.iter().all(|l| !l.contains(":0 ") && !l.ends_with(":0")), "an unbound port 0 is shown: {b:?}");
        assert!(b.iter().any(|l| l.contains("(OpenAPI at /openapi.json)")), "{b:?}");
        let path = state.0.join("admin.key");
        let line = b.iter().find(|l| l.trim().starts_with("admin key in ")).unwrap_or_else(|| panic!("{b:?}"));
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(line.contains(if start == 0 { "made now" } else { "kept from an earlier start" }), "{line}");
        let k = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert_eq!(k.len(), 64);
        assert!(b.iter().all(|l| !l.contains(&k)), "the key is printed: {b:?}");
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        if start == 1 {
            assert_eq!(k, key, "a restart changed the admin key");
        }
        key = k;
        assert_eq!(get(g.admin, "/v1/sessions", &key).await, 200);
        assert_eq!(get(g.admin, "/v1/sessions", "wrong-key-000000000").await, 401);
        assert_eq!(get(g.admin, "/metrics", "").await, 200, "metrics need no key by default");
        assert!(b.iter().any(|l| l.contains("/metrics (open;")), "{b:?}");
        assert!(b.last().unwrap().contains("Ctrl-C or SIGTERM drains (clients come back within 5s) and stops"));
    }
}

/// With `admin.metrics_key`, `/metrics` takes that read-only key or the
/// admin key, and the read-only key opens nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_key_guards_metrics_and_opens_nothing_else() {
    let admin = "admin-key-0123456789abcdef";
    let metrics = "metrics-key-0123456789";
    let g = start_gateway(&format!("key = \"{admin}\"\nmetrics_key = \"{metrics}\"\n"), Stdio::inherit());
    assert!(g.banner.iter().any(|l| l.contains("admin key: the one the config gives")), "{:?}", g.banner);
    assert_eq!(get(g.admin, "/metrics", "").await, 401);
    assert_eq!(get(g.admin, "/metrics", "wrong-key-000000000").await, 401);
    assert_eq!(get(g.admin, "/metrics", metrics).await, 200);
    assert_eq!(get(g.admin, "/metrics", admin).await, 200);
    assert_eq!(get(g.admin, "/v1/sessions", metrics).await, 401);
    assert_eq!(get(g.admin, "/v1/sessions", admin).await, 200);
}

/// The heartbeat-logging switch: with `log.heartbeats` PINGs are logged
/// (at debug), without it they are not, at the same level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_frames_are_logged_only_when_asked() {
    for on in [true, false] {
        let dir = TempDir::new("serve-log");
        let log_path = dir.0.join("stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let g = start_gateway(&format!("[log]\nlevel = \"debug\"\nheartbeats = {on}\n"), Stdio::from(log));
        // A realtime client pings after 3 s of silence; wait for its RTT,
        // which proves a PING reached the gateway and was answered.
        let mut p = connect(g.tcp, ClientConfig::profile(Profile::Realtime));
        p.next("an RTT sample", |e| matches!(e, ClientEvent::Rtt(_))).await;
        drop(g);
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert!(text.contains("session opened"), "the log is missing lifecycle events:\n{text}");
        assert_eq!(text.contains("heartbeat in"), on, "log.heartbeats = {on}:\n{text}");
    }
}

/// SIGHUP (`systemctl reload`) without TLS configured reloads nothing and
/// does not stop the gateway (SIGHUP's default action would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_keeps_serving() {
    let mut g = start_gateway("", Stdio::piped());
    let pid = g.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let stderr = BufReader::new(g.child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("nothing to reload") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    rx.recv_timeout(WAIT).expect("the gateway logs the SIGHUP");
    assert!(g.child.try_wait().unwrap().is_none(), "the gateway stopped on SIGHUP");
    assert_eq!(get(g.admin, "/health", "").await, 200);
}

/// SIGTERM (what service managers send) drains like Ctrl-C: the attached
/// client is told to come back later, the drain is reported on stdout, and
/// the gateway exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_stops() {
    let mut g = start_gateway("", Stdio::inherit());
    let mut p = connect(g.tcp, ClientConfig::profile(Profile::Realtime));
    p.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
    let pid = g.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let e = p.next("the drain", |e| matches!(e, ClientEvent::Disconnected { .. })).await;
    assert!(format!("{e:?}").contains("GoingAway") || format!("{e:?}").contains("going away"), "{e:?}");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = g.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the gateway did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = g.stdout.by_ref().map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l == "draining: 1 client(s) told to reconnect within 5s; stopped"),
        "no drain report on stdout: {rest:?}"
    );
    drop(p.handle);
}

#[test]
fn config_check_names_the_field_and_the_fix() {
    let dir = TempDir::new("cfg");
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[session]\ngrace = \"0s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether")).args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("session.grace") && err.contains("60s is typical"), "{err}");

    let typo = dir.0.join("typo.toml");
    std::fs::write(&typo, "[admin]\nlisten = \"127.0.0.1:7402\"\nkye = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether")).args(["config", "check"]).arg(&typo).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown field `kye`") && err.contains("line 3"), "{err}");

    let example = dir.0.join("example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tether")).args(["config", "example"]).output().unwrap();
    std::fs::write(&example, &out.stdout).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether")).args(["config", "check"]).arg(&example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sessions on tcp://127.0.0.1:7400"));
}

/// `tether serve --help` describes the gateway, not a relay.
#[test]
fn serve_help_describes_the_gateway() {
    let out = Command::new(env!("CARGO_BIN_EXE_tether")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["room", "presence", "admin", "demo page", "GATEWAY.md"] {
        assert!(help.contains(word), "`serve --help` does not mention {word:?}:\n{help}");
    }
    assert!(!help.contains("relayed to every session"), "{help}");
}

/// `tether bench load` against a real `tether serve`: the sessions are held,
/// said messages are delivered, and the JSON report says so (figures are for
/// release builds and docs/PERFORMANCE.md; this checks the tool works).
#[test]
fn bench_load_holds_sessions_and_writes_its_report() {
    let g = start_gateway("", Stdio::null());
    let dir = TempDir::new("load");
    let report = dir.0.join("load.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["bench", "load", &format!("tcp://{}", g.tcp), "--sessions", "40", "--members", "10", "--says", "2"])
        .args(["--duration", "2s", "--json"])
        .arg(&report)
        .output()
        .expect("run tether bench load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench load failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("held 40/40"), "the progress line shows the sessions held: {text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["held"], 40, "{v}");
    assert_eq!(v["sessions_started_over"], 0, "{v}");
    assert!(v["delivered_per_s"].as_f64().unwrap() > 0.0, "room messages were delivered: {v}");
    assert!(v["latency_ms"]["p50"].as_f64().is_some(), "{v}");
    assert_eq!(v["failures"], serde_json::json!({}), "{v}");
}

/// `tether connect --token-file`: the token in the file logs the session in
/// (a gateway admitting JWTs only); a token missing from the file is said at
/// once, naming the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_logs_in_with_the_token_in_a_file() {
    let secret = "connect-test-secret-0123456789abcdef0123";
    let g = start_gateway(&format!("[auth]\nanonymous = false\njwt_secret = \"{secret}\"\n"), Stdio::inherit());
    let dir = TempDir::new("token");
    let file = dir.0.join("token");
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    std::fs::write(&file, format!("{jwt}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["connect", &format!("tcp://{}", g.tcp), "--no-watch", "--token-file"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut saw = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if line.contains("link up: new session") || line.contains("ended") {
            saw = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = saw.expect("tether connect printed neither a session nor an end");
    assert!(line.contains("link up: new session"), "{line}");

    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["connect", &format!("tcp://{}", g.tcp), "--no-watch", "--token-file"])
        .arg(dir.0.join("missing"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file") && err.contains("write the login token into it"), "{err}");
}
