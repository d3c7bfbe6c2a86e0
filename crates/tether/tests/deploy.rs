//! The deploy kit (`Dockerfile`, `deploy/`) checked without Docker or
//! systemd: the Grafana dashboard asks only for metrics a running
//! `tether serve` exports (and shows every metric GATEWAY.md documents); the
//! configs the image and the compose file run pass `tether config check` in
//! the environment they get there, and agree with the HAProxy config; the
//! Dockerfile has the shape the README promises and its health check works
//! against a real gateway; the systemd unit has its key directives (and
//! passes `systemd-analyze verify` where that tool is installed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tether_proto::{ClientConfig, ClientEvent, Profile};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{connect, Gateway, TempDir};

const WAIT: Duration = Duration::from_secs(15);
const ADMIN_KEY: &str = "deploy-test-admin-key-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `tether serve` on ephemeral loopback ports, returned once its banner is
/// printed. `extra` is more TOML, read after the `[admin]` table.
fn start_gateway(extra: &str) -> Gateway {
    let dir = TempDir::new("deploy");
    let state = dir.0.join("state");
    let config = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\n[demo]\nlisten = \"off\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nkey = \"{ADMIN_KEY}\"\n{extra}"
    );
    common::launch(&config, Stdio::null(), dir, &state)
}

/// One HTTP/1.1 GET; returns the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

// ---------------------------------------------------------------------------
// The dashboard and the metrics

/// The metric names a PromQL expression selects: what is left once strings,
/// label matchers, ranges, grouping labels, function and aggregation names,
/// keywords, numbers and Grafana variables (`$instance`) are taken out.
fn metric_names(expr: &str) -> Vec<String> {
    // Strings, label matchers and ranges go first (none nests).
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        let close = match c {
            '"' | '\'' | '`' => c,
            '{' => '}',
            '[' => ']',
            _ => {
                plain.push(c);
                continue;
            }
        };
        let quoted = close == c;
        while let Some(d) = chars.next() {
            if quoted && d == '\\' {
                chars.next();
            } else if d == close {
                break;
            }
        }
        plain.push(' ');
    }
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];
    const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    let b = plain.as_bytes();
    let (mut i, mut names) = (0, Vec::new());
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let next_non_space = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || c == b'$' {
            // A number, a duration, or a Grafana variable.
            i += 1;
            while i < b.len() && (word(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if word(c) {
            let start = i;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            let w = &plain[start..i];
            let after = next_non_space(i);
            if GROUPING.contains(&w) {
                if after < b.len() && b[after] == b'(' {
                    i = plain[after..].find(')').map_or(b.len(), |k| after + k + 1);
                }
            } else if (after < b.len() && b[after] == b'(')
                || ["by", "without"]
                    .iter()
                    .any(|g| plain[after..].strip_prefix(g).is_some_and(|r| !r.starts_with(|c: char| word(c as u8))))
                || KEYWORDS.contains(&w.to_ascii_lowercase().as_str())
            {
                // A function, an aggregation (`sum (...)`, `sum by (...) (...)`), a keyword.
            } else {
                names.push(w.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every PromQL expression of the dashboard (panels, panels of rows, and
/// `label_values(SELECTOR, label)` variable queries), with where it is.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((format!("panel {title:?}"), expr.to_owned()));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"].get("query").unwrap_or(&v["query"]);
        if let Some(args) = q.as_str().and_then(|q| q.trim().strip_prefix("label_values(")?.strip_suffix(')')) {
            if let Some((selector, _label)) = args.rsplit_once(',') {
                out.push((format!("variable {:?}", v["name"]), selector.to_owned()));
            }
        }
    }
    out
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = |e| metric_names(e).join(" ");
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, hook) (rate(a_bucket{instance=~"$instance", x="(b)"}[$__rate_interval])))"#
        ),
        "a_bucket"
    );
    assert_eq!(
        names("sum(rate(x_sum[5m])) / on (job) group_left sum(rate(x_count[5m] offset 1h)) > bool 1e3"),
        "x_sum x_count"
    );
    assert_eq!(names("count without (instance) (up) and y unless z or w:rate5m"), "up y z w:rate5m");
}

/// A TCP relay in front of the gateway whose connections the test can cut
/// (both ends see the transport close) and which can refuse new ones.
struct Proxy {
    addr: SocketAddr,
    /// Refusing, and the live connections' tasks.
    state: Arc<Mutex<(bool, Vec<tokio::task::AbortHandle>)>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new((false, Vec::new())));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let mut st = s.lock().unwrap();
                if st.0 {
                    continue; // dropped: closed at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                st.1.push(task.abort_handle());
            }
        });
        Proxy { addr, state }
    }

    /// Closes every connection; with `refuse`, every later one at once too.
    fn cut(&self, refuse: bool) {
        let mut st = self.state.lock().unwrap();
        st.0 |= refuse;
        for t in st.1.drain(..) {
            t.abort();
        }
    }
}

/// Which names a scrape has: sample names, and the names its `# TYPE` and
/// `# HELP` lines describe (with their type).
fn scraped(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let (mut samples, mut described) = (BTreeSet::new(), BTreeMap::new());
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some("#"), Some("TYPE"), Some(name), t) => {
                described.insert(name.to_owned(), t.unwrap_or("").to_owned());
            }
            (Some("#"), Some("HELP"), Some(name), _) => {
                described.entry(name.to_owned()).or_default();
            }
            (Some(s), ..) if !s.starts_with('#') => {
                samples.insert(s.split('{').next().unwrap().to_owned());
            }
            _ => {}
        }
    }
    (samples, described)
}

/// Whether the scrape exports `name`: as samples, as a described metric, or
/// as a series of a described histogram (`_bucket`, `_sum`, `_count`) or
/// summary (`_sum`, `_count`).
fn exports(samples: &BTreeSet<String>, described: &BTreeMap<String, String>, name: &str) -> bool {
    samples.contains(name)
        || described.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .and_then(|base| described.get(base))
                .is_some_and(|t| t == "histogram" || (t == "summary" && *s != "_bucket") || t.is_empty())
        })
}

/// Every metric the dashboard's queries name is exported by `tether serve`.
/// Most metrics appear in `/metrics` only once something has happened, so a
/// gateway (with a lifecycle hook to a backend here) is put through what
/// each counts: sessions opened, joined, a say too large for its member's
/// frame, heartbeats with an RTT, a transport cut and resumed, one cut for
/// good and expired, a refused handshake. The scrape is then read until
/// every name is there, or the names still missing are named.
/// And the dashboard shows every metric docs/GATEWAY.md §5 documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_only_for_metrics_the_gateway_exports() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/tether.json")).expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (place, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for n in names {
            wanted.entry(n).or_insert_with(|| place.clone());
        }
    }

    // Every documented metric has a panel.
    let gateway_md = read("docs/GATEWAY.md");
    let table = gateway_md.split("### Metrics").nth(1).expect("GATEWAY.md has a Metrics section");
    let documented: BTreeSet<String> = table
        .lines()
        .take_while(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("| `tether_"))
        .flat_map(|l| l.split('|').nth(1).unwrap().split('`').skip(1).step_by(2).map(|n| n.to_owned()))
        .map(|n| n.split('{').next().unwrap().to_owned())
        .collect();
    assert!(documented.len() >= 15, "the metrics table was not read: {documented:?}");
    let shown =
        |m: &String| wanted.keys().any(|w| w == m || w.strip_prefix(m.as_str()).is_some_and(|s| s.starts_with('_')));
    let missing: Vec<_> = documented.iter().filter(|m| !shown(m)).collect();
    assert!(missing.is_empty(), "deploy/grafana/tether.json has no panel for {missing:?} (docs/GATEWAY.md §5)");

    // A backend that answers every hook call with `{}`.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks_url = format!("http://{}/tether", backend.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { axum::Json(json!({})) });
        axum::serve(backend, app).await.unwrap();
    });
    let g = start_gateway(&format!(
        "[session]\ngrace = \"1s\"\n[limits]\nmax_say_bytes = 65536\n\
         [hooks]\nurl = \"{hooks_url}\"\ncall = [\"lifecycle\"]\nretries = 0\n"
    ));
    let proxy = Proxy::start(g.tcp).await;

    // A client with a quick heartbeat carrying its RTT, and a frame limit
    // below what it will say.
    let mut core = ClientConfig::profile(Profile::Realtime);
    core.heartbeat.interval = Duration::from_millis(200);
    core.heartbeat.probe_timeout = Duration::from_millis(200);
    core.max_frame = 16384;
    let mut a = connect(proxy.addr, core);
    a.handle.set_ping_payload(r#"{"rtt_ms":1.5}"#);
    a.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await;
    a.send(json!({"op": "join", "room": "deploy"}));
    a.msg("joined", |v| v["ev"] == "joined").await;
    a.send(json!({"op": "say", "room": "deploy", "body": {"text": "x".repeat(17_000)}}));
    a.msg("the say refused for its size", |v| v["code"] == "too_large_for_members").await;
    a.next("an RTT", |e| matches!(e, ClientEvent::Rtt(_))).await;
    proxy.cut(false);
    a.next("resumed", |e| matches!(e, ClientEvent::Resumed { .. })).await;
    proxy.cut(true); // for good: the session expires after its 1 s grace

    let mut refused =
        connect(g.tcp, ClientConfig { auth: Bytes::from("not-a-token"), ..ClientConfig::profile(Profile::Realtime) });
    refused.next("a refusal", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text) = get(g.admin, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let (samples, described) = scraped(&text);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(n, _)| !exports(&samples, &described, n))
            .map(|(n, place)| format!("{n} (in {place})"))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dashboard asks for metrics the gateway does not export: {missing:?}\n/metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// The configs the image and the compose file run

/// `tether config check FILE` in exactly the environment `env` (nothing
/// inherited); returns its summary, or fails with its error.
fn config_check(file: &Path, env: &[(String, String)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["config", "check"])
        .arg(file)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} in the environment {env:?}: {stderr}", file.display());
    stdout.into_owned()
}

/// The Dockerfile's instructions (continuations joined, comments dropped),
/// as (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (i, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
                out.push((i.to_ascii_uppercase(), rest.trim().to_owned()));
                cur.clear();
            }
        }
    }
    out
}

/// The environment a service of deploy/compose.yaml gets, and the config
/// files it mounts (from the `x-node` block all gateway nodes share, and the
/// services' `volumes`). Compose variables (`${X:?...}`) become dummy values.
fn compose() -> (Vec<(String, String)>, Vec<PathBuf>, String) {
    let text = read("deploy/compose.yaml");
    let mut env = Vec::new();
    let mut in_env = false;
    for line in text.split("x-node:").nth(1).expect("compose.yaml has x-node").lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim() == "environment:" {
            in_env = true;
        } else if in_env && indent >= 4 && line.contains(':') {
            let (k, v) = line.trim().split_once(':').unwrap();
            let v = v.trim();
            let v = if v.starts_with("${") { "0123456789abcdef0123456789abcdef" } else { v };
            env.push((k.trim().to_owned(), v.to_owned()));
        } else if in_env && !line.trim().is_empty() {
            break;
        }
    }
    let mounts = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./")?.strip_suffix(":/etc/tether/tether.toml:ro"))
        .map(|p| repo().join("deploy").join(p))
        .collect();
    (env, mounts, text)
}

/// The image's config listens on every interface (the admin port where the
/// health check asks) and passes `config check` in the image's environment;
/// the compose nodes' configs pass it in the environment compose gives
/// them, are distinct cluster nodes, trust the balancer's pinned address
/// for PROXY headers, and HAProxy sends them one on the session ports (and
/// keeps each HTTP-fallback transport on one node).
#[test]
fn the_deploy_configs_pass_config_check_where_they_run() {
    let docker = dockerfile();
    let runtime = docker.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let env: Vec<(String, String)> = docker[runtime..]
        .iter()
        .filter(|(i, _)| i == "ENV")
        .filter_map(|(_, a)| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert!(env.iter().any(|(k, v)| k == "STATE_DIRECTORY" && v == "/var/lib/tether"), "{env:?}");
    let summary = config_check(&repo().join("deploy/docker/tether.toml"), &env);
    for l in ["tcp://0.0.0.0:7400", "ws://0.0.0.0:7401", "http://0.0.0.0:7402"] {
        assert!(summary.contains(l), "the image's config does not listen on {l}:\n{summary}");
    }

    let (env, mounts, text) = compose();
    assert!(env.iter().any(|(k, _)| k == "TETHER_ADMIN_KEY"), "{env:?}");
    assert!(mounts.len() >= 2, "compose.yaml mounts no node configs: {mounts:?}");
    let lb_address = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ipv4_address:"))
        .expect("the balancer has a fixed address")
        .trim()
        .to_owned();
    let mut nodes = BTreeSet::new();
    for m in &mounts {
        let summary = config_check(m, &env);
        let node = summary.split(" as node ").nth(1).and_then(|s| s.split_whitespace().next());
        let node = node.unwrap_or_else(|| panic!("{} is not a cluster node:\n{summary}", m.display()));
        assert!(nodes.insert(node.to_owned()), "two nodes named {node}");
        let cfg = std::fs::read_to_string(m).unwrap();
        let has = |s: &str| cfg.lines().any(|l| l.split('#').next().unwrap().replace(' ', "") == s);
        assert!(has(&format!("trusted_proxies=[\"{lb_address}\"]")), "{}: trust {lb_address}", m.display());
        assert!(has("proxy_protocol=true") && has("connections_per_address=0"), "{}", m.display());
    }

    // HAProxy: every session backend server is a compose service and sends
    // the PROXY header the nodes require; the demo page's gets none.
    let haproxy = read("deploy/haproxy.cfg");
    let mut servers = 0;
    for l in haproxy.lines().map(str::trim).filter(|l| l.starts_with("server ")) {
        let addr = l.split_whitespace().nth(2).unwrap();
        let (host, port) = addr.rsplit_once(':').unwrap();
        assert!(text.contains(&format!("\n  {host}:\n")), "haproxy.cfg names {host}, not a compose service");
        assert_eq!(l.contains("send-proxy"), port == "7400" || port == "7401", "haproxy.cfg: {l}");
        servers += 1;
    }
    assert_eq!(servers, 3 * mounts.len(), "a server line per node on 7400, 7401 and 7403");
    // The WebSocket port also serves the HTTP fallback, whose requests for
    // one transport must meet on one node: they are hashed on its id.
    let backends = haproxy.split("\nbackend ").skip(1).map(|b| b.split("\nfrontend ").next().unwrap());
    let ws = backends.into_iter().find(|b| b.contains(":7401")).expect("a backend for port 7401");
    let ws: Vec<&str> = ws.lines().map(|l| l.split('#').next().unwrap().trim()).collect();
    assert!(ws.contains(&"mode http") && ws.contains(&"balance url_param id"), "haproxy.cfg, port 7401: {ws:?}");
}

// ---------------------------------------------------------------------------
// The Dockerfile

/// Two stages: a release build with the lockfile, then a slim runtime with
/// the binary, a non-root user, the state directory, the ports, a health
/// check, `tether serve` on the baked-in config. The build stage copies
/// every file outside `crates/` that the code embeds (`include_str!` outside
/// test modules), and `.dockerignore` keeps none of them out.
#[test]
fn the_dockerfile_builds_a_slim_non_root_image() {
    let d = dockerfile();
    let froms: Vec<usize> = d.iter().enumerate().filter(|(_, (i, _))| i == "FROM").map(|(n, _)| n).collect();
    assert_eq!(froms.len(), 2, "two stages: {d:?}");
    let (build, runtime) = (&d[froms[0]..froms[1]], &d[froms[1]..]);
    assert!(build[0].1.starts_with("rust:") && build[0].1.ends_with(" AS build"), "{:?}", build[0]);
    let base = &runtime[0].1;
    assert!(base.starts_with("debian:bookworm-slim") || base.starts_with("gcr.io/distroless/cc"), "{base}");
    assert!(build.iter().any(|(i, a)| i == "RUN" && a.contains("cargo build --release -p tether --locked")));
    assert!(!runtime.iter().any(|(i, a)| i == "RUN" && a.contains("cargo")), "no toolchain in the runtime image");
    let has = |i: &str, a: &str| runtime.iter().any(|(j, b)| j == i && b == a);
    assert!(runtime
        .iter()
        .any(|(i, a)| i == "COPY" && a.starts_with("--from=build ") && a.ends_with("/usr/local/bin/tether")));
    assert!(has("COPY", "deploy/docker/tether.toml /etc/tether/tether.toml"));
    assert!(has("ENV", "STATE_DIRECTORY=/var/lib/tether"));
    assert!(has("EXPOSE", "7400 7401 7402 7403"));
    assert!(has("ENTRYPOINT", r#"["tether"]"#));
    assert!(has("CMD", r#"["serve", "--config", "/etc/tether/tether.toml"]"#));
    let user = runtime.iter().rev().find(|(i, _)| i == "USER").map(|(_, a)| a.as_str()).expect("a USER");
    assert!(!["root", "0", "0:0"].contains(&user), "runs as root: {user}");

    // What the build reads is copied, and not ignored.
    let copied: Vec<&str> = build
        .iter()
        .filter(|(i, _)| i == "COPY")
        .flat_map(|(_, a)| {
            let w: Vec<&str> = a.split_whitespace().collect();
            w[..w.len() - 1].to_vec()
        })
        .collect();
    for c in ["Cargo.toml", "Cargo.lock", ".cargo", "crates"] {
        assert!(copied.contains(&c), "the build stage does not copy {c}: {copied:?}");
    }
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("**/").to_owned())
        .collect();
    let mut embedded = BTreeSet::new();
    let mut stack = vec![repo().join("crates")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with("tests") && !p.ends_with("target") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&p).unwrap();
                let live = src.split("#[cfg(test)]").next().unwrap();
                for part in live.split("include_str!(\"").skip(1).chain(live.split("include_bytes!(\"").skip(1)) {
                    let rel = part.split('"').next().unwrap();
                    let target = std::fs::canonicalize(p.parent().unwrap().join(rel)).unwrap();
                    let rel = target.strip_prefix(std::fs::canonicalize(repo()).unwrap()).unwrap().to_owned();
                    embedded.insert(rel);
                }
            }
        }
    }
    assert!(embedded.len() > 3, "no include_str! found: {embedded:?}");
    for f in &embedded {
        assert!(
            copied.iter().any(|c| f.starts_with(c)),
            "the build embeds {} but the Dockerfile does not copy it",
            f.display()
        );
        for i in &ignored {
            let hit = f.starts_with(i) || f.components().any(|c| c.as_os_str() == i.as_str());
            assert!(!hit, "the build embeds {} but .dockerignore has {i}", f.display());
        }
    }
    for i in ["target", "node_modules", ".git"] {
        assert!(ignored.iter().any(|g| g == i), ".dockerignore does not exclude {i}");
    }
}

/// The image's health check (bash's /dev/tcp, no curl) passes against a
/// running gateway's admin port and fails where nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_health_check_asks_the_admin_port() {
    let d = dockerfile();
    let check = d.iter().find(|(i, _)| i == "HEALTHCHECK").map(|(_, a)| a.clone()).expect("a HEALTHCHECK");
    let cmd: Vec<String> =
        serde_json::from_str(check.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]").1).unwrap();
    assert_eq!(cmd[..2], ["bash", "-c"], "{cmd:?}");
    assert!(cmd[2].contains("/7402"), "the check asks the default admin port: {cmd:?}");
    if Command::new("bash").arg("-c").arg("true").status().is_err() {
        eprintln!("no bash here: the health check command is not run");
        return;
    }
    let g = start_gateway("");
    let run = |port: u16| {
        let script = cmd[2].replace("/7402", &format!("/{port}"));
        Command::new("bash").arg("-c").arg(script).stderr(Stdio::null()).status().unwrap().success()
    };
    assert!(run(g.admin.port()), "the health check fails against a live gateway");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(!run(closed), "the health check passes where nothing listens");
}

// ---------------------------------------------------------------------------
// The systemd unit

fn seconds(v: &str) -> f64 {
    let v = v.trim();
    let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = n.trim().parse().unwrap_or_else(|_| panic!("duration {v:?}"));
    n * match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        u => panic!("unit {u:?} in {v:?}"),
    }
}

/// deploy/tether.service has the directives the README and GATEWAY.md rely
/// on, stops within the drain window and a margin, and (where
/// `systemd-analyze` is installed) passes `systemd-analyze verify`.
#[test]
fn the_systemd_unit_has_the_key_directives() {
    let unit = read("deploy/tether.service");
    let mut d: Vec<(String, String, String)> = Vec::new();
    let mut section = String::new();
    for l in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(s) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
        } else {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not a directive: {l}"));
            d.push((section.clone(), k.to_owned(), v.to_owned()));
        }
    }
    let has = |s: &str, k: &str, v: &str| d.iter().any(|(a, b, c)| a == s && b == k && c == v);
    for (k, v) in [
        ("ExecStart", "/usr/local/bin/tether serve --config /etc/tether/tether.toml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("EnvironmentFile", "-/etc/tether/env"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "tether"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("LimitNOFILE", "1048576"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(has("Service", k, v), "deploy/tether.service: [Service] {k}={v} is missing");
    }
    assert!(has("Install", "WantedBy", "multi-user.target"));

    // SIGTERM drains over drain.window (the default, as the example config
    // says): the stop timeout leaves it and a few seconds.
    let example = read("config/tether.example.toml");
    let drain = example.split("[drain]").nth(1).unwrap().lines().find_map(|l| l.trim().strip_prefix("window"));
    let drain = seconds(drain.unwrap().split('"').nth(1).unwrap());
    let stop = d.iter().find(|(_, k, _)| k == "TimeoutStopSec").map(|(_, _, v)| seconds(v)).expect("TimeoutStopSec");
    assert!(stop >= drain + 3.0, "TimeoutStopSec {stop}s leaves no margin over drain.window {drain}s");

    // systemd-analyze verify wants the ExecStart binary to exist: a copy of
    // the unit names this build's.
    match Command::new("systemd-analyze").arg("--version").output() {
        Err(_) => eprintln!("systemd-analyze is not installed: the unit is not verified by systemd"),
        Ok(_) => {
            let dir = TempDir::new("unit");
            let copy = dir.0.join("tether.service");
            std::fs::write(&copy, unit.replace("/usr/local/bin/tether", env!("CARGO_BIN_EXE_tether"))).unwrap();
            let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            // Other units of this machine may be noisy; ours must not be.
            assert!(out.status.success() && !err.contains("tether.service"), "systemd-analyze verify: {err}");
        }
    }
}
