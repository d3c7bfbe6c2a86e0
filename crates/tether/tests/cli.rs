//! The `tether` binary as a user meets it: `tether connect` against a real
//! `tether serve` — how it ends (a kick, a refused login, end of input, a
//! closed stdout, a failure retrying cannot fix), what it prints (each
//! failure once, socket options for every scheme) — and how user errors
//! are reported (one line, no backtrace).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::TempDir;

/// Generous: debug builds on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

/// A process whose stdout lines and stderr are collected by threads, so
/// waits have deadlines.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start tether");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Proc { child, stdin, lines, seen: Vec::new(), stderr: Some(stderr) }
    }

    /// The first stdout line (from now) that `f` accepts.
    fn line(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if f(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no {what} within {WAIT:?}; stdout so far: {:#?}", self.seen),
            }
        }
    }

    /// Waits for the process to exit: its status and stderr.
    fn exit(&mut self, what: &str) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self.stderr.take().map(|t| t.join().unwrap()).unwrap_or_default();
                self.seen.extend(self.lines.try_iter());
                panic!("tether did not exit {what} within {WAIT:?}; stdout: {:#?}\nstderr: {err}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.seen.extend(self.lines.try_iter());
        let err = self.stderr.take().map(|t| t.join().unwrap()).unwrap_or_default();
        (status, err)
    }
}

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// `tether serve` on ephemeral loopback ports with a known admin key.
struct Gateway {
    _proc: Proc,
    tcp: SocketAddr,
    ws: SocketAddr,
    wss: Option<SocketAddr>,
    admin: SocketAddr,
    _dir: TempDir,
}

/// `listen`: more of `[listen]`; `extra`: more tables.
fn start_gateway(listen: &str, extra: &str, dir: TempDir) -> Gateway {
    let cfg = dir.0.join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\n{listen}\n[session]\ngrace = \"3s\"\n\
             [demo]\nlisten = \"off\"\n[admin]\nlisten = \"127.0.0.1:0\"\nkey = \"{ADMIN_KEY}\"\n{extra}"
        ),
    )
    .unwrap();
    let mut proc = Proc::spawn(tether().args(["serve", "--config"]).arg(&cfg).env("STATE_DIRECTORY", &dir.0));
    let (mut tcp, mut ws, mut wss, mut admin) = (None, None, None, None);
    loop {
        let line = proc.line("the gateway's banner", |_| true);
        let l = line.trim();
        if let Some(a) = l.strip_prefix("sessions on tcp://") {
            tcp = a.parse().ok();
        }
        if let Some(a) = l.strip_prefix("sessions on ws://") {
            ws = a.parse().ok();
        }
        if let Some(a) = l.strip_prefix("sessions on wss://") {
            wss = a.parse().ok();
        }
        if let Some(a) = l.strip_prefix("admin API on http://") {
            admin = a.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if l.contains("Ctrl-C") {
            break;
        }
    }
    Gateway { _proc: proc, tcp: tcp.unwrap(), ws: ws.unwrap(), wss, admin: admin.unwrap(), _dir: dir }
}

/// One HTTP/1.1 request to the admin API: status and body.
fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `tether connect URL ARGS…`, with stdin kept open (a user who has not
/// pressed Ctrl-D) and the network watcher on, as users run it.
fn connect(url: &str, args: &[&str]) -> Proc {
    Proc::spawn(tether().arg("connect").arg(url).args(args))
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kicked by the admin API (CLOSE 3004), the client does not come back by
/// itself: `tether connect` must exit, saying so, with status 1 — it used
/// to wait for ever, deaf even to Ctrl-D.
#[test]
fn connect_exits_when_its_session_is_kicked() {
    let g = start_gateway("", "", TempDir::new("kick"));
    let mut c = connect(&format!("tcp://{}", g.tcp), &[]);
    let up = c.line("a new session", |l| l.contains("link up: new session"));
    let short = up.rsplit(' ').next().unwrap().to_owned();
    let (status, body) = admin(g.admin, "GET", "/v1/sessions");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    let id = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .find(|id| id.starts_with(&short))
        .unwrap_or_else(|| panic!("session {short} not listed: {body}"))
        .to_owned();
    let (status, body) = admin(g.admin, "DELETE", &format!("/v1/sessions/{id}?reason=maintenance"));
    assert_eq!(status, 200, "{body}");
    let (status, err) = c.exit("after the kick");
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(c.seen.iter().any(|l| l.contains("ended: closed by the peer (3004: maintenance)")), "{:#?}", c.seen);
    assert!(err.starts_with("error: ") && err.contains("3004") && err.contains("run tether connect again"), "{err}");
    drop(g);
}

/// A refused login (REJECT 7 from a gateway admitting no anonymous
/// clients) ends for good too: exit 1, naming --token.
#[test]
fn connect_exits_when_its_login_is_refused() {
    let secret = "connect-test-secret-0123456789abcdef0123";
    let g =
        start_gateway("", &format!("[auth]\nanonymous = false\njwt_secret = \"{secret}\"\n"), TempDir::new("refuse"));
    let mut c = connect(&format!("tcp://{}", g.tcp), &[]);
    let (status, err) = c.exit("after the refusal");
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(c.seen.iter().any(|l| l.contains("refused by the server (Unauthorized)")), "{:#?}", c.seen);
    assert!(err.contains("pass one with --token or --token-file"), "{err}");
}

/// End of input (Ctrl-D) closes the session and exits 0, with the network
/// watcher on (it kept the client's event stream open, so the exit never
/// came).
#[test]
fn end_of_input_closes_the_session_and_exits() {
    let g = start_gateway("", "", TempDir::new("eof"));
    let mut c = connect(&format!("ws://{}/", g.ws), &[]);
    c.line("a new session", |l| l.contains("link up: new session"));
    drop(c.stdin.take());
    let (status, err) = c.exit("at the end of input");
    assert!(status.success(), "{status}; stderr: {err}");
    assert!(c.seen.iter().any(|l| l.contains("ended: closed by this side")), "{:#?}", c.seen);
}

/// Failures retrying cannot fix stop the client with what to do: a ws://
/// URL on the tcp:// listener, and a certificate not trusted (no --ca).
/// With --ca the same server is reached.
#[test]
fn permanent_failures_stop_with_what_to_do() {
    let dir = TempDir::new("tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let g = start_gateway(
        "wss = \"127.0.0.1:0\"",
        &format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display()),
        dir,
    );
    let wss = g.wss.unwrap();

    let mut c = connect(&format!("ws://{}/", g.tcp), &["--no-watch"]);
    let (status, err) = c.exit("after a ws:// URL on the tcp:// listener");
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("does not speak WebSocket") && err.contains(&format!("tcp://{}", g.tcp)), "{err}");

    let mut c = connect(&format!("wss://{wss}/"), &["--no-watch"]);
    let (status, err) = c.exit("after an untrusted certificate");
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("certificate is not trusted") && err.contains("pass --ca FILE"), "{err}");

    let mut c = connect(&format!("wss://{wss}/"), &["--no-watch", "--ca", cert.to_str().unwrap()]);
    c.line("a new session with --ca", |l| l.contains("link up: new session"));
}

/// A transient failure (nothing listening) is retried with backoff, and
/// each failed attempt is printed once, with its cause — not also as
/// "attempt failed: the connection closed or failed".
#[test]
fn each_failure_is_printed_once() {
    let port = closed_port();
    let mut c = connect(&format!("tcp://127.0.0.1:{port}"), &["--no-watch"]);
    c.line("the third retry", |l| l.contains("reconnecting in") && l.contains("(attempt 3)"));
    let failures: Vec<_> = c.seen.iter().filter(|l| l.contains("failed")).collect();
    assert_eq!(failures.len(), 3, "{:#?}", c.seen);
    assert!(failures.iter().all(|l| l.contains("Connection refused")), "{failures:#?}");
}

/// `tether connect … | head -1`: once stdout is closed, the client ends
/// quietly (exit 0), no panic about a broken pipe.
#[test]
fn a_closed_stdout_ends_the_client_quietly() {
    let port = closed_port();
    let mut c = connect(&format!("tcp://127.0.0.1:{port}"), &["--no-watch"]);
    c.line("the banner", |l| l.starts_with("tether connect"));
    // Close the read end: the retries' next line meets EPIPE.
    let (tx, rx) = mpsc::channel();
    drop(std::mem::replace(&mut c.lines, rx));
    drop(tx);
    // The reading thread holds stdout until its next line fails to send.
    let (status, err) = c.exit("after stdout closed");
    assert!(status.success(), "{status}; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `-v` shows the socket options for ws:// too (for tcp:// they are read
/// back from the kernel; a WebSocket's are shown as set).
#[test]
fn verbose_shows_socket_options_for_websocket() {
    let g = start_gateway("", "", TempDir::new("verbose"));
    let mut c = connect(&format!("ws://{}/", g.ws), &["--no-watch", "-v"]);
    c.line("a new session", |l| l.contains("link up: new session"));
    let socket = c.seen.iter().find(|l| l.contains("socket: SO_KEEPALIVE"));
    let socket = socket.unwrap_or_else(|| panic!("no socket options shown: {:#?}", c.seen));
    assert!(socket.contains("TCP_USER_TIMEOUT") && socket.contains("as set"), "{socket}");
}

/// A user error (a bad config) is one line on stderr and exit status 1,
/// even with RUST_BACKTRACE=1 — no stack trace.
#[test]
fn user_errors_are_one_line_without_a_backtrace() {
    let dir = TempDir::new("bt");
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[session]\ngrace = \"1ms\"\n").unwrap();
    let out = tether().args(["config", "check"]).arg(&bad).env("RUST_BACKTRACE", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: session.grace"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
}
