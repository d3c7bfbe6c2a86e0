//! A scenario: build the lab network, start the real server and client in
//! it, stream both ways, break the network as told, restore it, let the
//! session recover, and account for every message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::net::{Lab, RouterOpts, SERVER_ADDR, SERVER_PORT};
use super::report::{Check, DirStats, Lane, Mark, MarkKind, Report, Span};
use tether_args::ProfileArg;

/// Set by Ctrl-C: every wait gives up, and the lab tears down.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How the network is broken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    /// The client's link goes down for the outage (the client is told).
    CablePull,
    /// The router drops everything (nothing tells the client).
    Blackhole,
    /// The router drops this share (0–100) of packets both ways.
    Loss(u8),
    /// The router drops this share of client → server packets only.
    OneWayLoss(u8),
    /// Both ends stop sending for the outage while the router's NAT
    /// forgets idle flows after `nat_timeout`.
    NatIdle,
    /// The client's address changes at the fault's start.
    Roam,
    /// The server process is killed, and restarted after the outage.
    ServerRestart,
    /// The server is a cluster node keeping its sessions in Redis (running
    /// in the server's namespace): it is killed (`kill -9`), and another
    /// node takes its address after the outage.
    NodeDeath,
}

/// Where the lab's Redis listens, inside the server's namespace.
const REDIS_PORT: u16 = 6390;

/// Everything that shapes one run.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) title: String,
    pub(crate) fault: Fault,
    pub(crate) profile: ProfileArg,
    pub(crate) grace: Duration,
    /// How long the fault lasts.
    pub(crate) outage: Duration,
    /// Streaming before the fault.
    pub(crate) before: Duration,
    /// The router's NAT timeout for established flows.
    pub(crate) nat_timeout: Option<Duration>,
    /// The client sends no heartbeats (OS keepalive only).
    pub(crate) no_heartbeat: bool,
    /// OS keepalive override for the client: "idle,interval,count" seconds.
    pub(crate) keepalive: Option<String>,
    /// Adaptive heartbeat override for the client: "min,max,step,successes,precision" seconds.
    pub(crate) adaptive: Option<String>,
    /// Heartbeat probe timeout override for the client.
    pub(crate) probe_timeout: Option<Duration>,
    /// Interval between messages, each way.
    pub(crate) every: Duration,
    /// What the run must show.
    pub(crate) expect: Expect,
}

/// The claims a scenario is judged on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Expect {
    /// Same session, nothing lost or duplicated, detection within the
    /// profile's bound, back within `back_within` of the restoration.
    Survive { back_within: Duration, detect: bool },
    /// Same session and no transport loss at all.
    Untouched,
    /// Explicit expiry on both ends, a fresh session, nothing duplicated
    /// and nothing lost silently.
    Expire,
    /// The server forgot the session: the client is told, starts fresh,
    /// nothing duplicated.
    FreshStart,
    /// The transport dies silently and is not noticed in the run (shown,
    /// not survived): messages after the fault are stuck.
    StuckWithoutHeartbeat,
    /// The adaptive heartbeat learns the NAT's idle timeout: its interval
    /// ends below `nat_timeout` and within `precision` of it, proven by an
    /// idle ping that survived at the final interval; nothing lost.
    Settle { precision: Duration },
    /// Only measured.
    Measure,
}

/// One timestamped JSON line from a node.
#[derive(Debug, Clone)]
struct Line {
    t: Instant,
    lane: Lane,
    v: Value,
}

impl Line {
    fn ev(&self) -> &str {
        self.v.get("ev").and_then(Value::as_str).unwrap_or("")
    }
    fn str(&self, k: &str) -> String {
        match self.v.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

/// Every line from every node, in arrival order.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<Line>>,
    grew: Condvar,
}

impl Log {
    fn push(&self, l: Line) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).push(l);
        self.grew.notify_all();
    }

    fn snapshot(&self) -> Vec<Line> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until a line after `after` matches, or `within` passes.
    fn wait(&self, within: Duration, after: Instant, f: impl Fn(&Line) -> bool) -> Option<Instant> {
        let until = Instant::now() + within;
        let mut g = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(l) = g.iter().find(|l| l.t >= after && f(l)) {
                return Some(l.t);
            }
            let now = Instant::now();
            if now >= until || INTERRUPTED.load(Ordering::SeqCst) {
                return None;
            }
            let step = (until - now).min(Duration::from_millis(200));
            g = self.grew.wait_timeout(g, step).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// A node process; killed on drop.
struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Node {
    fn start(lab: &Lab, ns: &str, lane: Lane, args: &[String], log: &Arc<Log>) -> Result<Node> {
        let exe = std::env::current_exe().context("cannot find the tether executable")?;
        let mut cmd: Vec<String> = Lab::exec_in(ns);
        cmd.push(exe.to_string_lossy().into_owned());
        cmd.push("lab-node".into());
        cmd.extend(args.iter().cloned());
        cmd.push("--tag".into());
        cmd.push(lab.prefix.clone());
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn")
            .spawn()
            .with_context(|| format!("cannot start {}", cmd.join(" ")))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let t = Instant::now();
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    log.push(Line { t, lane, v });
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Node { child, stdin })
    }

    fn command(&mut self, c: &str) {
        if let Some(s) = &mut self.stdin {
            let _ = writeln!(s, "{c}");
            let _ = s.flush();
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sleeps, unless interrupted.
fn pause(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
    Ok(())
}

fn server_args(s: &Scenario, epoch: u32) -> Vec<String> {
    let mut a = vec![
        "server".into(),
        "--listen".into(),
        format!("{SERVER_ADDR}:{SERVER_PORT}"),
        "--grace".into(),
        format!("{}ms", s.grace.as_millis()),
        "--every".into(),
        format!("{}ms", s.every.as_millis()),
        "--epoch".into(),
        epoch.to_string(),
    ];
    if s.no_heartbeat {
        a.push("--no-idle-enforce".into());
    }
    if s.fault == Fault::NodeDeath {
        let node = if epoch == 1 { "node-a" } else { "node-b" };
        a.extend(["--redis".into(), format!("redis://127.0.0.1:{REDIS_PORT}"), "--node-id".into(), node.into()]);
    }
    a
}

/// Starts Debian's redis-server in the server's namespace (no persistence:
/// the nodes die, Redis does not); the lab's teardown kills it with the
/// namespace's other processes.
fn start_redis(lab: &Lab) -> Result<()> {
    let port = REDIS_PORT.to_string();
    let ns = lab.server_ns.as_str();
    super::net::sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "redis-server",
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "yes",
        "--dir",
        "/tmp",
        "--logfile",
        "",
    ])
    .context("cannot start redis-server in the lab (Debian's redis-server package; scripts/test.sh installs it)")?;
    for _ in 0..100 {
        if super::net::sh(&["ip", "netns", "exec", ns, "redis-cli", "-p", &port, "ping"])
            .is_ok_and(|r| r.contains("PONG"))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis-server did not answer in the lab's server namespace within 5 s")
}

fn client_args(s: &Scenario) -> Vec<String> {
    let mut a = vec![
        "client".into(),
        "--url".into(),
        format!("tcp://{SERVER_ADDR}:{SERVER_PORT}"),
        "--profile".into(),
        s.profile.name().into(),
        "--every".into(),
        format!("{}ms", s.every.as_millis()),
    ];
    if s.no_heartbeat {
        a.push("--no-heartbeat".into());
    }
    if let Some(k) = &s.keepalive {
        a.push("--keepalive".into());
        a.push(k.clone());
    }
    if let Some(k) = &s.adaptive {
        a.push("--adaptive".into());
        a.push(k.clone());
    }
    if let Some(t) = s.probe_timeout {
        a.push("--probe-timeout".into());
        a.push(format!("{}ms", t.as_millis()));
    }
    a
}

const START_WITHIN: Duration = Duration::from_secs(15);

/// Runs a scenario end to end; the network is gone when this returns.
pub(crate) fn run(s: &Scenario) -> Result<Report> {
    let lab = Lab::create(RouterOpts { nat_timeout: s.nat_timeout })?;
    let log = Arc::new(Log::default());
    if s.fault == Fault::NodeDeath {
        start_redis(&lab)?;
    }
    let origin = Instant::now();
    let mut server = Node::start(&lab, &lab.server_ns, Lane::Server, &server_args(s, 1), &log)?;
    log.wait(START_WITHIN, origin, |l| l.lane == Lane::Server && l.ev() == "listening")
        .context("the lab server did not start listening within 15 s")?;
    let mut client = Node::start(&lab, &lab.client_ns, Lane::Client, &client_args(s), &log)?;
    log.wait(START_WITHIN, origin, |l| l.lane == Lane::Client && l.ev() == "connected")
        .context("the lab client did not connect within 15 s")?;
    pause(s.before)?;

    let fault_start = Instant::now();
    match s.fault {
        Fault::CablePull => lab.client_link(false)?,
        Fault::Blackhole => lab.set_fault(&["drop".into()])?,
        Fault::Loss(p) => lab.set_fault(&[format!("numgen random mod 100 < {p} drop")])?,
        Fault::OneWayLoss(p) => lab.set_fault(&[format!("iifname \"c0\" numgen random mod 100 < {p} drop")])?,
        Fault::NatIdle => {
            client.command("pause");
            server.command("pause");
        }
        Fault::Roam => lab.client_roam()?,
        Fault::ServerRestart | Fault::NodeDeath => server.kill(),
    }
    if s.fault != Fault::Roam {
        pause(s.outage)?;
    }
    let fault_end = Instant::now();
    match s.fault {
        Fault::CablePull => lab.client_link(true)?,
        Fault::Blackhole | Fault::Loss(_) | Fault::OneWayLoss(_) => lab.set_fault(&[])?,
        Fault::NatIdle => {
            client.command("go");
            server.command("go");
        }
        Fault::Roam => {}
        Fault::ServerRestart | Fault::NodeDeath => {
            server = Node::start(&lab, &lab.server_ns, Lane::Server, &server_args(s, 2), &log)?;
        }
    }
    // Recovery: if the client is without a transport now, wait until it
    // carries data again (resumed or fresh). A transport lost to the fault
    // may also be noticed only now, so look once more after a moment.
    for _ in 0..2 {
        if client_down_at(&log.snapshot(), Instant::now()) {
            log.wait(Duration::from_secs(30), Instant::now(), |l| {
                l.lane == Lane::Client && matches!(l.ev(), "resumed" | "connected")
            });
        }
        pause(Duration::from_secs(2))?;
    }
    // Some more streaming after recovery, then drain and stop.
    pause(Duration::from_secs(3))?;
    let finish_at = Instant::now();
    client.command("finish");
    server.command("finish");
    let finished = |lane| log.wait(Duration::from_secs(20), finish_at, |l| l.lane == lane && l.ev() == "finished");
    finished(Lane::Client);
    finished(Lane::Server);
    let end = Instant::now();
    drop(client);
    drop(server);
    drop(lab);
    // Events from the drain on are not the fault's doing.
    let lines = log.snapshot();
    let during: Vec<Line> = lines.iter().filter(|l| l.t < finish_at).cloned().collect();
    Ok(analyse(s, &lines, &during, [origin, fault_start, fault_end, end]))
}

/// True when, at `t`, the client's latest word on its link was "lost".
fn client_down_at(lines: &[Line], t: Instant) -> bool {
    lines
        .iter()
        .rev()
        .filter(|l| l.lane == Lane::Client && l.t <= t)
        .find_map(|l| match l.ev() {
            "disconnected" => Some(true),
            "resumed" | "connected" => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

fn secs(origin: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(origin).as_secs_f64()
}

/// Accounting for messages with keys sent by `from` and received by `to`.
fn direction(lines: &[Line], from: Lane, to: Lane) -> DirStats {
    let mut d = DirStats::default();
    let mut sent = HashSet::new();
    let mut back = HashSet::new();
    for l in lines.iter().filter(|l| l.lane == from) {
        match l.ev() {
            "sent" => {
                sent.insert(l.str("k"));
            }
            "refused" => d.refused += 1,
            "ended" => {
                if let Some(Value::Array(keys)) = l.v.get("unacked") {
                    back.extend(keys.iter().filter_map(Value::as_str).map(str::to_owned));
                }
            }
            _ => {}
        }
    }
    let mut got: HashSet<String> = HashSet::new();
    let mut newest: HashMap<String, u64> = HashMap::new();
    for l in lines.iter().filter(|l| l.lane == to && l.ev() == "msg") {
        let k = l.str("k");
        if !got.insert(k.clone()) {
            d.duplicated += 1;
            continue;
        }
        // Keys are <stream><n>: c17, s1:17.
        let split = k.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
        let (stream, n) = k.split_at(split);
        let n: u64 = n.parse().unwrap_or(0);
        let top = newest.entry(stream.to_owned()).or_insert(0);
        if n < *top {
            d.reordered += 1;
        }
        *top = (*top).max(n);
    }
    d.sent = sent.len() as u64;
    d.delivered = sent.iter().filter(|k| got.contains(*k)).count() as u64;
    d.handed_back = back.len() as u64;
    d.lost = sent.iter().filter(|k| !got.contains(*k) && !back.contains(*k)).count() as u64;
    d
}

fn marks(lines: &[Line], origin: Instant) -> Vec<Mark> {
    let mut out = Vec::new();
    for l in lines {
        let (kind, label) = match (l.lane, l.ev()) {
            (Lane::Client, "rtt") => {
                (MarkKind::Ping, format!("{:.1} ms", l.v.get("ms").and_then(Value::as_f64).unwrap_or(0.0)))
            }
            (Lane::Client, "disconnected") | (Lane::Server, "detached") => (MarkKind::Detect, l.str("why")),
            (Lane::Client, "dialed") => (MarkKind::Attempt, l.str("addr")),
            (Lane::Client, "dial_failed" | "attempt_failed") => (MarkKind::AttemptFailed, l.str("why")),
            (Lane::Client, "connected") | (Lane::Server, "opened") => {
                (MarkKind::Connected, session_label(&l.str("session")))
            }
            (_, "resumed") => (MarkKind::Resumed, format!("{} replayed", l.str("replayed"))),
            (_, "ended") => (MarkKind::Expired, l.str("why")),
            (Lane::Client, "network_changed") => (MarkKind::NetworkChanged, String::new()),
            (Lane::Server, "listening") => (MarkKind::Note, "server listening".into()),
            (Lane::Client, "interval") => {
                (MarkKind::Note, format!("interval {:.2} s", l.v.get("s").and_then(Value::as_f64).unwrap_or(0.0)))
            }
            _ => continue,
        };
        out.push(Mark { t_s: secs(origin, l.t), lane: l.lane, kind, label });
    }
    out
}

fn session_label(s: &str) -> String {
    format!("session {}", s.get(..8).unwrap_or(s))
}

fn check(checks: &mut Vec<Check>, claim: impl Into<String>, ok: bool, detail: impl Into<String>) {
    checks.push(Check { claim: claim.into(), ok, detail: detail.into() });
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s"))
}

/// Figures and checks. `lines` is everything (for message accounting,
/// which includes the drain); `during` stops where the drain began (for
/// detection and recovery, which must be the fault's doing). `times`:
/// origin, fault start, fault end, end of run.
fn analyse(s: &Scenario, lines: &[Line], during: &[Line], times: [Instant; 4]) -> Report {
    let [origin, fault_start, fault_end, end] = times;
    let first_after = |lane: Lane, evs: &[&str], after: Instant| {
        during.iter().find(|l| l.lane == lane && l.t >= after && evs.contains(&l.ev())).map(|l| l.t)
    };
    let detect_client = first_after(Lane::Client, &["disconnected"], fault_start).map(|t| secs(fault_start, t));
    let detect_server = first_after(Lane::Server, &["detached", "ended"], fault_start).map(|t| secs(fault_start, t));
    // Back after restoration: 0 when the client already carried data again
    // when the network was restored (e.g. it resumed between losses).
    let back = if client_down_at(during, fault_end)
        || matches!(s.fault, Fault::ServerRestart | Fault::NodeDeath | Fault::Roam)
    {
        first_after(Lane::Client, &["resumed", "connected"], fault_end).map(|t| secs(fault_end, t))
    } else if detect_client.is_some() {
        Some(0.0)
    } else {
        None
    };
    let sessions: Vec<String> =
        lines.iter().filter(|l| l.lane == Lane::Client && l.ev() == "connected").map(|l| l.str("session")).collect();
    let survived = sessions.len() == 1;
    let up = direction(lines, Lane::Client, Lane::Server);
    let down = direction(lines, Lane::Server, Lane::Client);
    let hb = tether_proto::HeartbeatConfig::profile(s.profile.into());
    let dead_after = hb.dead_after().as_secs_f64();
    let server_bound = hb.server_idle_timeout().as_secs_f64();
    // TCP_USER_TIMEOUT fires up to ~0.7 s late; scheduling adds a little.
    const SLACK: f64 = 1.5;

    let mut checks = Vec::new();
    let exact = |checks: &mut Vec<Check>, what: &str, d: &DirStats| {
        check(
            checks,
            format!("{what}: nothing lost or duplicated"),
            d.lost == 0 && d.duplicated == 0 && d.sent > 0,
            format!("{} sent, {} lost, {} duplicated", d.sent, d.lost, d.duplicated),
        );
    };
    match s.expect {
        Expect::Survive { back_within, detect } => {
            check(&mut checks, "the same session continues", survived, format!("sessions: {}", sessions.len()));
            exact(&mut checks, "client → server", &up);
            exact(&mut checks, "server → client", &down);
            if detect {
                check(
                    &mut checks,
                    format!("client detects within dead_after + {SLACK} s ({:.1} s)", dead_after + SLACK),
                    detect_client.is_some_and(|d| d <= dead_after + SLACK),
                    fmt_s(detect_client),
                );
                if s.fault != Fault::Roam && s.outage.as_secs_f64() > server_bound + SLACK {
                    check(
                        &mut checks,
                        format!("server detects within its idle timeout + {SLACK} s ({:.1} s)", server_bound + SLACK),
                        detect_server.is_some_and(|d| d <= server_bound + SLACK),
                        fmt_s(detect_server),
                    );
                }
            }
            check(
                &mut checks,
                format!("carrying data again within {:.1} s of the restoration", back_within.as_secs_f64()),
                detect_client.is_none() || back.is_some_and(|b| b <= back_within.as_secs_f64()),
                fmt_s(back),
            );
        }
        Expect::Untouched => {
            check(&mut checks, "the same session continues", survived, format!("sessions: {}", sessions.len()));
            check(
                &mut checks,
                "the transport is never lost",
                detect_client.is_none(),
                format!("client detection: {}", fmt_s(detect_client)),
            );
            exact(&mut checks, "client → server", &up);
            exact(&mut checks, "server → client", &down);
        }
        Expect::Expire => {
            let client_ended = first_after(Lane::Client, &["ended"], fault_start);
            let server_ended = first_after(Lane::Server, &["ended"], fault_start);
            check(
                &mut checks,
                "the client is told the session expired",
                client_ended.is_some(),
                fmt_s(client_ended.map(|t| secs(fault_start, t))),
            );
            check(
                &mut checks,
                "the server expires the session",
                server_ended.is_some(),
                fmt_s(server_ended.map(|t| secs(fault_start, t))),
            );
            check(&mut checks, "a fresh session follows", sessions.len() == 2, format!("sessions: {}", sessions.len()));
            for (what, d) in [("client → server", &up), ("server → client", &down)] {
                check(
                    &mut checks,
                    format!("{what}: nothing delivered twice, nothing lost silently"),
                    d.duplicated == 0 && d.lost == 0,
                    format!(
                        "{} sent, {} duplicated, {} lost, {} handed back",
                        d.sent, d.duplicated, d.lost, d.handed_back
                    ),
                );
            }
        }
        Expect::FreshStart => {
            let told = lines.iter().find(|l| l.lane == Lane::Client && l.t >= fault_start && l.ev() == "ended");
            check(
                &mut checks,
                "the client is told its session is gone",
                told.is_some(),
                told.map_or_else(|| "no session-ended event".to_owned(), |l| l.str("why")),
            );
            check(&mut checks, "a fresh session follows", sessions.len() == 2, format!("sessions: {}", sessions.len()));
            check(
                &mut checks,
                "nothing delivered twice",
                up.duplicated == 0 && down.duplicated == 0,
                format!("{} / {}", up.duplicated, down.duplicated),
            );
            check(
                &mut checks,
                "carrying data again within 5 s of the restart",
                back.is_some_and(|b| b <= 5.0),
                fmt_s(back),
            );
        }
        Expect::StuckWithoutHeartbeat => {
            let stuck = up.lost + down.lost;
            check(
                &mut checks,
                "without heartbeats the dead flow goes unnoticed: messages after the fault are stuck",
                detect_client.is_none() && stuck > 0,
                format!("client detection {}, {stuck} message(s) undelivered at the end", fmt_s(detect_client)),
            );
        }
        Expect::Settle { precision } => {
            check(&mut checks, "the same session continues", survived, format!("sessions: {}", sessions.len()));
            exact(&mut checks, "client → server", &up);
            exact(&mut checks, "server → client", &down);
            let nat = s.nat_timeout.unwrap_or_default().as_secs_f64();
            let learned: Vec<(Instant, f64)> = during
                .iter()
                .filter(|l| l.lane == Lane::Client && l.ev() == "interval" && l.t < fault_end)
                .map(|l| (l.t, l.v.get("s").and_then(Value::as_f64).unwrap_or(0.0)))
                .collect();
            let evictions = during
                .iter()
                .filter(|l| {
                    l.lane == Lane::Client && l.ev() == "disconnected" && (fault_start..fault_end).contains(&l.t)
                })
                .count();
            let path: Vec<String> = learned.iter().map(|(_, v)| format!("{v:.2}")).collect();
            let last = learned.last().copied();
            check(
                &mut checks,
                format!(
                    "the interval settles below the NAT timeout ({nat:.0} s) and within {:.1} s of it",
                    precision.as_secs_f64()
                ),
                last.is_some_and(|(_, v)| v < nat && v + precision.as_secs_f64() >= nat),
                format!("intervals {} s; {evictions} NAT eviction(s) on the way", path.join(" → ")),
            );
            // Settled: an idle ping at the final interval came back, and the
            // link was not lost after it. (A lowering is reported just
            // before the loss that caused it.)
            let client_ev = |ev: &'static str| during.iter().filter(move |l| l.lane == Lane::Client && l.ev() == ev);
            let proof = last.and_then(|(t, _)| client_ev("rtt").find(|l| l.t > t && l.t < fault_end)).map(|l| l.t);
            let proven = proof.is_some_and(|p| !client_ev("disconnected").any(|l| l.t > p && l.t < fault_end));
            check(
                &mut checks,
                "an idle ping at the final interval survives, and the link stays up",
                proven,
                proof.map_or_else(
                    || "no ping after the last change".to_owned(),
                    |p| format!("at {:.2} s", secs(fault_start, p)),
                ),
            );
        }
        Expect::Measure => {}
    }
    let mut params = BTreeMap::new();
    params.insert("profile".into(), s.profile.name().into());
    params.insert("grace".into(), format!("{}s", s.grace.as_secs()));
    params.insert("outage".into(), format!("{}s", s.outage.as_secs()));
    params.insert("every".into(), format!("{}ms", s.every.as_millis()));
    if let Some(t) = s.nat_timeout {
        params.insert("nat_timeout".into(), format!("{}s", t.as_secs()));
    }
    if s.no_heartbeat {
        params.insert("heartbeat".into(), "off".into());
    }
    if let Some(k) = &s.keepalive {
        params.insert("keepalive".into(), k.clone());
    }
    if let Some(a) = &s.adaptive {
        params.insert("adaptive".into(), a.clone());
    }
    if let Some(t) = s.probe_timeout {
        params.insert("probe_timeout".into(), format!("{}ms", t.as_millis()));
    }
    let mut all_marks = marks(lines, origin);
    all_marks.push(Mark {
        t_s: secs(origin, fault_start),
        lane: Lane::Network,
        kind: MarkKind::FaultStart,
        label: s.title.clone(),
    });
    all_marks.push(Mark {
        t_s: secs(origin, fault_end),
        lane: Lane::Network,
        kind: MarkKind::FaultEnd,
        label: "restored".into(),
    });
    all_marks.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    Report {
        scenario: s.name.clone(),
        title: s.title.clone(),
        params,
        duration_s: secs(origin, end),
        fault: Some(Span { start_s: secs(origin, fault_start), end_s: secs(origin, fault_end) }),
        detect_client_s: detect_client,
        detect_server_s: detect_server,
        back_after_restore_s: back,
        sessions: sessions.iter().map(|s| s.get(..8).unwrap_or(s).to_owned()).collect(),
        survived,
        up,
        down,
        marks: all_marks,
        checks,
    }
}
