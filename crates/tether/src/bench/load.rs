//! `tether bench load URL`: the load generator, for any tether gateway.
//!
//! N sessions (tether clients of this runtime) to a `tcp://`, `tls://`,
//! `ws://` or `wss://` URL, spread over as many worker processes as the
//! file-descriptor limit needs (6 000 sessions each: a session may hold three
//! sockets while it races a reconnect, PROTOCOL §9.7; the workers are this
//! binary, `tether bench-node load-worker`). Each session runs the chosen
//! heartbeat; with `--members K` the sessions join rooms of K and each says
//! `--says` messages per second, stamped with the send time so that every
//! delivery measures its latency. A progress line every second; at the end
//! a report (sessions held, connect rate, RTT samples, messages, latency
//! percentiles, resumes, failures by reason, and the gateway's memory and
//! CPU when its pids are given) on stdout and, with `--json FILE`, as JSON.
//!
//! With `--outage 10s` (root, a gateway on loopback) every session is cut
//! off at once once they are all held: an nft rule drops every packet to
//! and from the gateway's port, with no signal to either side, then is
//! removed. The report then says when the sessions noticed, when the first
//! and the last resumed after the path returned, and what was refused.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use tether_args::{duration, ProfileArg};
use tether_proto::{ClientConfig, ClientEvent};
use tether_runtime::client::{Client, ClientOptions, Event};

/// Sessions one worker process holds: the fd limit is 20 000 here, and each
/// session may hold three sockets while it races a reconnect (§9.7).
const PER_WORKER: usize = 6_000;
/// Latency histogram: bucket i holds delays below 2^(i/4) µs.
const BUCKETS: usize = 112;

#[derive(clap::Args, Clone)]
pub(crate) struct LoadArgs {
    /// The gateway: tcp://HOST:PORT, tls://…, ws://HOST:PORT/PATH or wss://….
    url: String,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// New sessions per second, over all workers (0: as fast as they come).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Heartbeat profile of every session.
    #[arg(long, value_enum, default_value = "default")]
    profile: ProfileArg,
    /// Heartbeat interval override (e.g. 25s).
    #[arg(long, value_parser = duration)]
    interval: Option<Duration>,
    /// Members per room (0: sessions join no room and say nothing).
    #[arg(long, default_value_t = 0)]
    members: usize,
    /// Messages each session says per second in its room.
    #[arg(long, default_value_t = 0.0)]
    says: f64,
    /// How long to hold the sessions once they are connected.
    #[arg(long, value_parser = duration, default_value = "30s")]
    duration: Duration,
    /// CA certificate (PEM) trusted for tls:// and wss:// (default: the system's root certificates).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// The gateway's process ids (comma-separated), when it runs on this
    /// machine: its memory and CPU are reported.
    #[arg(long, value_delimiter = ',')]
    gateway_pid: Vec<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Source addresses, spread over the sessions: a comma-separated list
    /// of addresses and IPv4 ranges (`127.0.0.1-127.0.0.40`). Each one has
    /// the whole port range for the gateway's address (Linux
    /// IP_BIND_ADDRESS_NO_PORT), past the ~28 000 connections one source
    /// address can open to one port.
    #[arg(long)]
    source: Option<String>,
    /// Once every session is held, drop every packet to and from the
    /// gateway's port for this long (nft, needs root; a gateway on a
    /// loopback address only), then measure the storm of resumes.
    #[arg(long, value_parser = duration)]
    outage: Option<Duration>,
    /// Instead of holding, stop every load worker (SIGSTOP) once the
    /// sessions are held (after any --outage): silent peers with their
    /// connections open. Measures when the gateway detected each — a
    /// stopped client's socket stops being established when the gateway
    /// closes it (needs `ss`) — against the idle timeout the sessions asked for.
    #[arg(long)]
    freeze: bool,
}

/// An nft table dropping every packet to and from one loopback port, removed
/// when dropped: a silent outage for every session at once.
struct Cut {
    table: String,
}

impl Cut {
    fn start(port: u16) -> Result<Cut> {
        let table = format!("tether_bench_{}", std::process::id());
        let script = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    \
             oifname \"lo\" tcp dport {port} drop\n    oifname \"lo\" tcp sport {port} drop\n  }}\n}}\n"
        );
        nft(&script).context("--outage needs root and nftables (Debian: apt-get install nftables)")?;
        Ok(Cut { table })
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table inet {}\n", self.table)) {
            eprintln!(
                "could not remove the outage's nft table {}: {e:#}; remove it by hand: nft delete table inet {}",
                self.table, self.table
            );
        }
    }
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child.stdin.take().context("no stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft refused the rules: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The gateway's port, if the URL names a loopback address (an outage is
/// only ever made on this machine's loopback).
fn loopback_port(url: &str) -> Result<u16> {
    let ep: tether_runtime::Endpoint = url.parse()?;
    let ip: std::net::IpAddr = ep.host().parse().map_err(|_| {
        anyhow::anyhow!(
            "--outage: give the gateway as a loopback address (e.g. ws://127.0.0.1:7400/tether), not {:?}",
            ep.host()
        )
    })?;
    if !ip.is_loopback() {
        bail!("--outage only cuts a gateway on this machine's loopback; {ip} is not a loopback address");
    }
    Ok(ep.port())
}

/// The addresses `--source` names, in order.
fn sources(spec: &str) -> Result<Vec<std::net::IpAddr>> {
    use std::net::{IpAddr, Ipv4Addr};
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || anyhow::anyhow!("--source {item:?}: write addresses or IPv4 ranges, e.g. 127.0.0.1-127.0.0.40");
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b): (Ipv4Addr, Ipv4Addr) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || b - a > 1 << 20 {
                    return Err(bad());
                }
                out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
            }
            None => out.push(item.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        bail!("--source {spec:?} names no address");
    }
    Ok(out)
}

/// A `[first, last]` pair of unix µs from a worker's report.
fn span(v: Option<&Value>) -> Option<(u64, u64)> {
    let a = v?.as_array()?;
    Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?))
}

/// The widest span covering both.
fn widen(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (a, b) {
        (Some(x), Some(y)) => Some((x.0.min(y.0), x.1.max(y.1))),
        (x, y) => x.or(y),
    }
}

/// One worker's counters, cumulative (what it prints every second).
#[derive(Default, Clone)]
struct Counters {
    connected: u64,
    established: u64,
    resumes: u64,
    rtt: u64,
    said: u64,
    delivered: u64,
    ended: u64,
    failures: BTreeMap<String, u64>,
    latency: Vec<u64>,
    /// When every session of the worker was first held, from its start.
    all_held_s: Option<f64>,
    /// Earliest and latest transport loss and resume (unix µs).
    lost: Option<(u64, u64)>,
    resumed: Option<(u64, u64)>,
}

impl Counters {
    fn from_json(v: &Value) -> Counters {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Counters {
            connected: n("connected"),
            established: n("established"),
            resumes: n("resumes"),
            rtt: n("rtt"),
            said: n("said"),
            delivered: n("delivered"),
            ended: n("ended"),
            failures: v
                .get("failures")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
                .unwrap_or_default(),
            latency: v
                .get("latency")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0)).collect())
                .unwrap_or_default(),
            all_held_s: v.get("all_held_s").and_then(Value::as_f64),
            lost: span(v.get("lost")),
            resumed: span(v.get("resumed")),
        }
    }

    fn add(&mut self, o: &Counters) {
        self.connected += o.connected;
        self.established += o.established;
        self.resumes += o.resumes;
        self.rtt += o.rtt;
        self.said += o.said;
        self.delivered += o.delivered;
        self.ended += o.ended;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
        self.all_held_s = match (self.all_held_s, o.all_held_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        self.lost = widen(self.lost, o.lost);
        self.resumed = widen(self.resumed, o.resumed);
    }

    /// The delay below which a share `p` of the deliveries arrived, in ms.
    fn percentile(&self, p: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(2f64.powf(i as f64 / 4.0) / 1000.0);
            }
        }
        None
    }
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    latest: Arc<Mutex<Counters>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (CPU seconds, VmRSS KiB, RssAnon KiB) of a process.
fn usage(pid: u32) -> Result<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("--gateway-pid {pid}: no such process here"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Ok((ticks / 100.0, kib("VmRSS:").unwrap_or(0), kib("RssAnon:").unwrap_or(0)))
}

/// Fails if a worker exited (its error is on stderr, above).
fn alive(workers: &mut [Worker]) -> Result<()> {
    for (i, w) in workers.iter_mut().enumerate() {
        if let Some(status) = w.child.try_wait()? {
            bail!("load worker {i} exited ({status}); its error is above");
        }
    }
    Ok(())
}

/// Summed usage of several processes.
fn total_usage(pids: &[u32]) -> Result<(f64, u64, u64)> {
    pids.iter().try_fold((0.0, 0, 0), |(c, r, a), pid| {
        let (c2, r2, a2) = usage(*pid)?;
        Ok((c + c2, r + r2, a + a2))
    })
}

/// The sessions' settings, checked.
fn client_options(
    profile: ProfileArg,
    interval: Option<Duration>,
    ca: Option<&std::path::Path>,
) -> Result<ClientOptions> {
    let mut core = ClientConfig::profile(profile.into());
    if let Some(i) = interval {
        core.heartbeat.interval = i;
    }
    core.validate().context("--profile/--interval")?;
    let mut opts = ClientOptions::new(core);
    opts.watch_network = false;
    if let Some(ca) = ca {
        opts.dial.tls = Some(tether_runtime::tls::client_config(ca)?);
    }
    Ok(opts)
}

pub(crate) fn load(a: LoadArgs) -> Result<()> {
    let _: tether_runtime::Endpoint = a.url.parse()?;
    client_options(a.profile, a.interval, a.ca.as_deref())?;
    let from = a.source.as_deref().map(sources).transpose()?;
    let outage_port = a.outage.map(|_| loopback_port(&a.url)).transpose()?;
    if a.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    if a.says > 0.0 && a.members == 0 {
        bail!("--says needs rooms: give --members K (sessions per room)");
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; figures are for release builds (cargo build --release -p tether)");
    }
    // Loopback packets queue per CPU up to this many; beyond, the kernel
    // drops them: a storm's SYNs, or thousands of keepalive probes that fall
    // due together (sessions opened in the same second) — which then look
    // like dead peers (docs/PERFORMANCE.md).
    let backlog: usize = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(usize::MAX);
    if a.sessions > 10 * backlog {
        eprintln!(
            "note: net.core.netdev_max_backlog is {backlog}: loopback drops bursts beyond it (a storm's SYNs, \
             keepalive probes falling due together); for {} sessions raise it while testing: \
             sysctl -w net.core.netdev_max_backlog=100000",
            a.sessions
        );
    }
    let workers_n = a.sessions.div_ceil(PER_WORKER);
    let gw0 = if a.gateway_pid.is_empty() { None } else { Some(total_usage(&a.gateway_pid)?) };
    println!(
        "tether bench load: {} sessions to {} ({} profile{}), {} worker process(es){}",
        a.sessions,
        a.url,
        a.profile.name(),
        a.interval.map(|i| format!(", interval {}", humantime::format_duration(i))).unwrap_or_default(),
        workers_n,
        if a.members > 0 { format!(", rooms of {} saying {}/s each", a.members, a.says) } else { String::new() }
    );
    if let Some(f) = &from {
        println!("  from {} source address(es)", f.len());
    }
    let mut workers = Vec::new();
    for w in 0..workers_n {
        let share = a.sessions / workers_n + usize::from(w < a.sessions % workers_n);
        let offset = (0..w).map(|i| a.sessions / workers_n + usize::from(i < a.sessions % workers_n)).sum::<usize>();
        let mut args = vec![
            "bench-node".to_owned(),
            "load-worker".into(),
            a.url.clone(),
            "--sessions".into(),
            share.to_string(),
            "--offset".into(),
            offset.to_string(),
            "--rate".into(),
            (a.rate / workers_n as f64).to_string(),
            "--profile".into(),
            a.profile.name().into(),
            "--members".into(),
            a.members.to_string(),
            "--says".into(),
            a.says.to_string(),
        ];
        if let Some(i) = a.interval {
            args.extend(["--interval".into(), format!("{}ms", i.as_millis())]);
        }
        if let Some(ca) = &a.ca {
            args.extend(["--ca".into(), ca.display().to_string()]);
        }
        if let Some(src) = &a.source {
            args.extend(["--source".into(), src.clone()]);
        }
        let mut cmd = Command::new(std::env::current_exe()?);
        if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
            // Many workers share the machine's cores: one thread each costs
            // less CPU per session (fewer cross-thread wake-ups; measured in
            // docs/PERFORMANCE.md) than tokio's one per core.
            cmd.env("TOKIO_WORKER_THREADS", "1");
        }
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start a load worker")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let latest = Arc::new(Mutex::new(Counters::default()));
        let l2 = latest.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    *l2.lock().unwrap_or_else(|p| p.into_inner()) = Counters::from_json(&v);
                }
            }
        });
        workers.push(Worker { child, stdin, latest });
    }
    let total = |workers: &[Worker]| {
        let mut all = workers.iter().map(|w| w.latest.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let mut c = all.next().unwrap_or_default();
        for o in all {
            c.add(&o);
        }
        c
    };
    let line = |c: &Counters, prev: &Counters, t: f64| {
        let fails: u64 = c.failures.values().sum();
        // The most frequent cause, so a collapse says what it is as it happens.
        let top = c.failures.iter().max_by_key(|(_, n)| **n).map(|(k, n)| format!(" (most: {k} {n})"));
        println!(
            "  [{t:6.1}s] held {}/{} · connects {}/s · RTT samples {}/s · delivered {}/s · resumes {} · failures {}{}",
            c.established,
            a.sessions,
            c.connected.saturating_sub(prev.connected),
            c.rtt.saturating_sub(prev.rtt),
            c.delivered.saturating_sub(prev.delivered),
            c.resumes,
            fails,
            top.unwrap_or_default()
        );
    };
    // Connect phase: until every session is held (or 10 min).
    let start = Instant::now();
    let mut prev = Counters::default();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        alive(&mut workers)?;
        let c = total(&workers);
        line(&c, &prev, start.elapsed().as_secs_f64());
        prev = c.clone();
        if c.established as usize >= a.sessions && c.all_held_s.is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("only {} of {} sessions held after 10 min", c.established, a.sessions);
        }
    }
    // Every worker's own clock, from its start: 100 ms resolution.
    let connect_time = Duration::from_secs_f64(total(&workers).all_held_s.unwrap_or(start.elapsed().as_secs_f64()));
    let outage = match (a.outage, outage_port) {
        (Some(len), Some(port)) => Some(storm(&mut workers, &total, &line, &mut prev, start, len, port, a.sessions)?),
        _ => None,
    };
    let frozen = if a.freeze {
        let core = client_options(a.profile, a.interval, a.ca.as_deref())?.core;
        let ep: tether_runtime::Endpoint = a.url.parse()?;
        Some(freeze(&mut workers, ep.port(), a.sessions, core.heartbeat.server_idle_timeout())?)
    } else {
        None
    };
    // Hold phase.
    let hold0 = total(&workers);
    let gw_hold0 = if a.gateway_pid.is_empty() { None } else { Some(total_usage(&a.gateway_pid)?) };
    let worker_pids: Vec<u32> = workers.iter().map(|w| w.child.id()).collect();
    let load_hold0 = total_usage(&worker_pids)?;
    let hold_start = Instant::now();
    while frozen.is_none() && hold_start.elapsed() < a.duration {
        std::thread::sleep(Duration::from_secs(1));
        alive(&mut workers)?;
        let c = total(&workers);
        line(&c, &prev, start.elapsed().as_secs_f64());
        prev = c;
    }
    let held_for = hold_start.elapsed().as_secs_f64();
    let end = total(&workers);
    let gw_end = if a.gateway_pid.is_empty() { None } else { Some(total_usage(&a.gateway_pid)?) };
    let load_end = total_usage(&worker_pids)?;
    for w in &mut workers {
        drop(w.stdin.take()); // the workers stop when their stdin closes
    }
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / held_for;
    let report = json!({
        "url": a.url,
        "sessions": a.sessions,
        "workers": workers_n,
        "profile": a.profile.name(),
        "interval_s": a.interval.map(|i| i.as_secs_f64()),
        "connect_s": connect_time.as_secs_f64(),
        "connects_per_s": a.sessions as f64 / connect_time.as_secs_f64(),
        "held": end.established,
        "hold_s": held_for,
        "rtt_samples_per_s": rate(end.rtt, hold0.rtt),
        "said_per_s": rate(end.said, hold0.said),
        "delivered_per_s": rate(end.delivered, hold0.delivered),
        "latency_ms": {
            "p50": end.percentile(0.5), "p90": end.percentile(0.9), "p99": end.percentile(0.99), "max": end.percentile(1.0)
        },
        "resumes": end.resumes,
        "sessions_started_over": end.connected.saturating_sub(a.sessions as u64),
        "sessions_ended": end.ended,
        "failures": end.failures,
        "outage": outage,
        "silent_peers": frozen,
        "gateway": gw_end.zip(gw_hold0).zip(gw0).map(|(((cpu, rss, anon), (cpu0, _, _)), (_, rss_start, anon_start))| json!({
            "cpu_cores_while_held": frozen.is_none().then(|| (cpu - cpu0) / held_for),
            "vm_rss_kib": rss,
            "rss_anon_kib": anon,
            "rss_anon_per_session_kib": anon.saturating_sub(anon_start) as f64 / a.sessions as f64,
            "vm_rss_per_session_kib": rss.saturating_sub(rss_start) as f64 / a.sessions as f64,
        })),
        // The load generator's own cost, to tell when it, not the gateway, is the limit.
        "load_generator": {
            "cpu_cores_while_held": frozen.is_none().then(|| (load_end.0 - load_hold0.0) / held_for),
            "vm_rss_kib": load_end.1,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
        println!("report written to {}", p.display());
    }
    Ok(())
}

/// `--outage`: cuts every session off at once for `len`, restores the path,
/// and waits (up to 2 min) until every session is held again. Returns the
/// report's `outage` section.
#[allow(clippy::too_many_arguments)]
fn storm(
    workers: &mut [Worker],
    total: &impl Fn(&[Worker]) -> Counters,
    line: &impl Fn(&Counters, &Counters, f64),
    prev: &mut Counters,
    start: Instant,
    len: Duration,
    port: u16,
    sessions: usize,
) -> Result<Value> {
    let before = total(workers);
    println!("  outage: every packet to and from port {port} dropped for {}", humantime::format_duration(len));
    let cut_at = unix_micros();
    let cut = Cut::start(port)?;
    let until = Instant::now() + len;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(1).min(until.saturating_duration_since(Instant::now())));
        alive(workers)?;
        let c = total(workers);
        line(&c, prev, start.elapsed().as_secs_f64());
        *prev = c;
    }
    // Counted from just before the rule goes: no resume can precede it.
    let back_at = unix_micros();
    drop(cut);
    println!("  outage over: path restored");
    let wait = Instant::now();
    let c = loop {
        std::thread::sleep(Duration::from_secs(1));
        alive(workers)?;
        let c = total(workers);
        line(&c, prev, start.elapsed().as_secs_f64());
        *prev = c.clone();
        // Held again, and every loss was answered by a resume or a new session.
        let lost = c.failures.iter().filter(|(k, _)| !k.starts_with("session ended")).count() > 0;
        if c.established as usize >= sessions && (!lost || c.resumes > before.resumes) {
            break c;
        }
        if wait.elapsed() > Duration::from_secs(120) {
            println!("  only {} of {sessions} sessions held 2 min after the outage", c.established);
            break c;
        }
    };
    // Seconds from `from` to the first (at or after `from`) and the last
    // instant of a span, if it reaches past `from`.
    let after = |t: Option<(u64, u64)>, from: u64| {
        t.filter(|x| x.1 >= from).map(|x| ((x.0.max(from) - from) as f64 / 1e6, (x.1 - from) as f64 / 1e6))
    };
    let (lost, resumed) = (after(c.lost, cut_at), after(c.resumed, back_at));
    let mut failures = c.failures.clone();
    for (k, v) in &before.failures {
        if let Some(n) = failures.get_mut(k) {
            *n = n.saturating_sub(*v);
        }
    }
    failures.retain(|_, v| *v > 0);
    Ok(json!({
        "length_s": len.as_secs_f64(),
        "first_loss_after_cut_s": lost.map(|x| x.0),
        "last_loss_after_cut_s": lost.map(|x| x.1),
        "resumed": c.resumes.saturating_sub(before.resumes),
        "first_resume_after_restore_s": resumed.map(|x| x.0),
        "last_resume_after_restore_s": resumed.map(|x| x.1),
        "held_again": c.established,
        "sessions_started_over": c.connected.saturating_sub(before.connected),
        "sessions_ended": c.ended.saturating_sub(before.ended),
        "failures_during": failures,
    }))
}

/// Sockets of this host connected to `port` and still established: a
/// stopped worker's connection leaves that state only when the gateway
/// closes it (to CLOSE_WAIT on its FIN, or gone on its reset).
fn open_to_gateway(port: u16) -> Result<usize> {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established", &format!("( dport = :{port} )")])
        .output()
        .context("--freeze needs ss (Debian: apt-get install iproute2)")?;
    Ok(out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count())
}

/// `--freeze`: stops every worker, then watches the gateway close the
/// silent sessions (up to the idle timeout + 30 s), sampling every 100 ms.
/// Returns the report's `silent_peers` section.
fn freeze(workers: &mut [Worker], port: u16, sessions: usize, idle: Duration) -> Result<Value> {
    let before = open_to_gateway(port)?;
    let pids: Vec<String> = workers.iter().map(|w| w.child.id().to_string()).collect();
    let stopped = Instant::now();
    let ok = Command::new("kill").arg("-STOP").args(&pids).status()?.success();
    if !ok {
        bail!("could not stop the load workers ({})", pids.join(" "));
    }
    println!(
        "  silent peers: {} worker(s) stopped; the gateway should close their sessions within the idle timeout ({})",
        pids.len(),
        humantime::format_duration(idle)
    );
    // A close newly seen by a scan happened after the previous scan began
    // and before this one ended: both ends are kept (a scan of 100 000
    // sockets takes a good part of a second).
    let (mut first, mut last, mut seen) = (None, None, 0);
    let limit = idle + Duration::from_secs(30);
    let mut shown = Instant::now();
    let mut prev_scan = 0.0;
    while stopped.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        let scan = stopped.elapsed().as_secs_f64();
        let n = before.saturating_sub(open_to_gateway(port)?);
        let t = stopped.elapsed().as_secs_f64();
        if n > seen {
            first.get_or_insert(t);
            last = Some((prev_scan, t));
            seen = n;
        }
        prev_scan = scan;
        if shown.elapsed() >= Duration::from_secs(1) {
            println!("  [{t:6.1}s] closed by the gateway {seen}/{sessions}");
            shown = Instant::now();
        }
        if seen >= sessions {
            break;
        }
    }
    let _ = Command::new("kill").arg("-CONT").args(&pids).status();
    Ok(json!({
        "idle_timeout_s": idle.as_secs_f64(),
        "closed": seen,
        "first_closed_after_stop_s": first,
        // The last close happened within [earliest, latest] after the stop.
        "last_closed_after_stop_s": last.map(|(lo, hi)| json!({ "earliest": lo, "latest": hi })),
        "all_within_idle_timeout_plus_100ms": last.is_some_and(|(_, hi)| seen >= sessions && hi <= idle.as_secs_f64() + 0.1),
    }))
}

#[derive(clap::Args)]
pub(crate) struct WorkerArgs {
    url: String,
    #[arg(long)]
    sessions: usize,
    #[arg(long)]
    offset: usize,
    #[arg(long)]
    rate: f64,
    #[arg(long, value_enum)]
    profile: ProfileArg,
    #[arg(long, value_parser = duration)]
    interval: Option<Duration>,
    #[arg(long)]
    members: usize,
    #[arg(long)]
    says: f64,
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    #[arg(long)]
    source: Option<String>,
}

#[derive(Default)]
struct Shared {
    connected: AtomicU64,
    /// Sessions a transport carries now.
    established: AtomicU64,
    resumes: AtomicU64,
    rtt: AtomicU64,
    said: AtomicU64,
    delivered: AtomicU64,
    ended: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Vec<u64>>,
    /// Earliest and latest transport loss and resume (unix µs).
    lost: Mutex<Option<(u64, u64)>>,
    resumed: Mutex<Option<(u64, u64)>>,
}

/// Widens a `[first, last]` span to cover now.
fn mark(span: &Mutex<Option<(u64, u64)>>) {
    let now = unix_micros();
    let mut s = span.lock().unwrap_or_else(|p| p.into_inner());
    *s = Some(s.map_or((now, now), |(a, _)| (a, now)));
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A failure's kind, for counting: the reason's text up to its first colon.
fn kind_of(reason: &impl std::fmt::Display) -> String {
    let s = reason.to_string();
    s.split(':').next().unwrap_or(&s).chars().take(60).collect()
}

/// One worker process: opens its share of sessions, paced, and prints its
/// counters as a JSON line every second until stdin closes.
pub(crate) async fn worker(a: WorkerArgs) -> Result<()> {
    let shared = Arc::new(Shared::default());
    *shared.latency.lock().unwrap_or_else(|p| p.into_inner()) = vec![0; BUCKETS];
    let opts = client_options(a.profile, a.interval, a.ca.as_deref())?;
    let from = a.source.as_deref().map(sources).transpose()?.unwrap_or_default();
    let handles = Arc::new(Mutex::new(Vec::with_capacity(a.sessions)));
    let (h2, s2, opts2, url) = (handles.clone(), shared.clone(), opts.clone(), a.url.clone());
    let (members, says) = (a.members, a.says);
    let pace = if a.rate > 0.0 { Duration::from_secs_f64(1.0 / a.rate) } else { Duration::ZERO };
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for i in 0..a.sessions {
            if !pace.is_zero() {
                tokio::time::sleep_until(start + pace * i as u32).await;
            }
            let g = a.offset + i;
            let mut o = opts2.clone();
            o.dial.source = from.get(g % from.len().max(1)).copied();
            let started = url.parse().map_err(anyhow::Error::from).and_then(|ep| Ok(Client::start(ep, o)?));
            let mut client = match started {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("load worker: cannot start a session: {e:#}");
                    std::process::exit(2);
                }
            };
            let h = client.handle();
            if let Some(r) = g.checked_div(members) {
                let room = format!("load-{r}");
                let _ = h.send(Bytes::from(json!({"op": "join", "room": room}).to_string()));
                if says > 0.0 {
                    let (h, s, every) = (h.clone(), s2.clone(), Duration::from_secs_f64(1.0 / says));
                    tokio::spawn(async move {
                        // A random phase, so that sessions do not say in step.
                        let phase = Duration::from_micros(unix_micros() % every.as_micros().max(1) as u64);
                        tokio::time::sleep(phase).await;
                        let mut tick = tokio::time::interval(every);
                        loop {
                            tick.tick().await;
                            let body = json!({"op": "say", "room": room, "body": {"t": unix_micros()}});
                            if h.send(Bytes::from(body.to_string())).is_ok() {
                                s.said.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            }
            h2.lock().unwrap_or_else(|p| p.into_inner()).push(h);
            let s = s2.clone();
            tokio::spawn(async move {
                // Whether a transport carries the session, from its events
                // (counted here rather than polling every handle's lock).
                let mut up = false;
                while let Some(e) = client.next_event().await {
                    let lost = matches!(e, Event::Session(ClientEvent::Disconnected { .. }));
                    let now_up = match &e {
                        Event::Session(ClientEvent::Connected { .. } | ClientEvent::Resumed { .. }) => true,
                        Event::Session(ClientEvent::Disconnected { .. } | ClientEvent::SessionEnded { .. }) => false,
                        _ => up,
                    };
                    if now_up != std::mem::replace(&mut up, now_up) {
                        if now_up {
                            s.established.fetch_add(1, Ordering::Relaxed);
                        } else {
                            s.established.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    match e {
                        Event::Session(ClientEvent::Connected { .. }) => {
                            s.connected.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::Session(ClientEvent::Resumed { .. }) => {
                            s.resumes.fetch_add(1, Ordering::Relaxed);
                            mark(&s.resumed);
                        }
                        Event::Session(ClientEvent::Rtt(_)) => {
                            s.rtt.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::Session(
                            ClientEvent::AttemptFailed { reason } | ClientEvent::Disconnected { reason },
                        ) => {
                            if lost {
                                mark(&s.lost);
                            }
                            *s.failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(kind_of(&reason))
                                .or_default() += 1;
                        }
                        Event::Session(ClientEvent::SessionEnded { reason, .. }) => {
                            s.ended.fetch_add(1, Ordering::Relaxed);
                            *s.failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(format!("session ended: {}", kind_of(&reason)))
                                .or_default() += 1;
                        }
                        Event::DialFailed { error } => {
                            // The OS's words, after the address.
                            let why = error.rsplit(": ").next().unwrap_or(&error).chars().take(60).collect::<String>();
                            *s.failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(format!("dial: {why}"))
                                .or_default() += 1;
                        }
                        Event::Session(ClientEvent::Message(m)) => {
                            let Ok(v) = serde_json::from_slice::<Value>(&m) else { continue };
                            if let Some(t) = v.get("body").and_then(|b| b.get("t")).and_then(Value::as_u64) {
                                s.delivered.fetch_add(1, Ordering::Relaxed);
                                let us = unix_micros().saturating_sub(t).max(1) as f64;
                                let i = ((us.log2() * 4.0) as usize).min(BUCKETS - 1);
                                s.latency.lock().unwrap_or_else(|p| p.into_inner())[i] += 1;
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    // Reports every second; stops when the coordinator closes stdin.
    let stop = tokio::spawn(async {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let began = Instant::now();
    let mut all_held: Option<f64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { while !stop.is_finished() { tokio::time::sleep(Duration::from_millis(100)).await } } => {
                return Ok(());
            }
        }
        let established = shared.established.load(Ordering::Relaxed) as usize;
        if all_held.is_none() && established >= a.sessions {
            all_held = Some(began.elapsed().as_secs_f64());
        }
        n += 1;
        if !n.is_multiple_of(10) {
            continue; // checked every 100 ms, reported every second
        }
        let s = &shared;
        let v = json!({
            "connected": s.connected.load(Ordering::Relaxed),
            "established": established,
            "resumes": s.resumes.load(Ordering::Relaxed),
            "rtt": s.rtt.load(Ordering::Relaxed),
            "said": s.said.load(Ordering::Relaxed),
            "delivered": s.delivered.load(Ordering::Relaxed),
            "ended": s.ended.load(Ordering::Relaxed),
            "failures": *s.failures.lock().unwrap_or_else(|p| p.into_inner()),
            "latency": *s.latency.lock().unwrap_or_else(|p| p.into_inner()),
            "all_held_s": all_held,
            "lost": *s.lost.lock().unwrap_or_else(|p| p.into_inner()),
            "resumed": *s.resumed.lock().unwrap_or_else(|p| p.into_inner()),
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}")?;
        out.flush()?;
    }
}
