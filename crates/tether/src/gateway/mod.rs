//! `tether serve`: the gateway. tether sessions over TCP, TLS, WebSocket and
//! secure WebSocket carry the room protocol (docs/GATEWAY.md); an admin HTTP
//! API and a demo page run beside them. Everything is in memory.
//!
//! One task owns the server's event stream and feeds the room state; the
//! admin API reads the same state under a mutex held only for a lookup.

mod admin;
mod auth;
mod config;
mod metrics;
mod rooms;
mod web;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tether_proto::SessionEnd;
use tether_runtime::server::{Server, ServerEvent, ServerOptions};
use tether_runtime::{Kind, ServerHandle, SocketTuning};
use tokio::net::TcpListener;

use self::config::{Config, Resolved};
use self::rooms::{Out, Rooms};

/// Prints a line of the start-up banner or a notice, ignoring a closed
/// stdout (a supervisor may have closed it; that must not stop a drain).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The config file (TOML; see config/tether.example.toml). Without one,
    /// the embedded defaults: loopback listeners, anonymous clients.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub(crate) enum ConfigCmd {
    /// Checks a config file: every unknown or inconsistent setting is named with its fix.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Prints the commented example config (every key, with its default).
    Example,
}

/// What the admin API shares with the event loop.
#[derive(Clone)]
pub(crate) struct Shared {
    server: ServerHandle,
    rooms: Arc<Mutex<Rooms>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    admin_key: Arc<str>,
    bans: auth::Bans,
    draining: Arc<AtomicBool>,
    drain_window: Duration,
}

pub(crate) fn config_cmd(c: ConfigCmd) -> Result<()> {
    match c {
        ConfigCmd::Check { file } => {
            let r = Config::load(&file)?.resolve()?;
            println!("{}: ok", file.display());
            for line in summary(&r) {
                println!("  {line}");
            }
            Ok(())
        }
        ConfigCmd::Example => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
    }
}

fn summary(r: &Resolved) -> Vec<String> {
    let c = &r.cfg;
    let mut v = Vec::new();
    for (kind, a) in [("tcp", c.listen.tcp), ("ws", c.listen.ws), ("tls", c.listen.tls), ("wss", c.listen.wss)] {
        if let Some(a) = a.0 {
            v.push(format!("sessions on {kind}://{a}"));
        }
    }
    if let Some(a) = c.admin.listen.0 {
        v.push(format!(
            "admin API on http://{a} (key {})",
            if r.admin_key.is_some() { "set" } else { "generated at start" }
        ));
    }
    if let Some(a) = c.demo.listen.0 {
        v.push(format!("demo page on http://{a}/"));
    }
    v.push(format!(
        "grace {}, auth: {}{}",
        humantime::format_duration(c.session.grace),
        if r.jwt_secret.is_some() { "HS256 JWT" } else { "no JWT" },
        if c.auth.anonymous { ", anonymous admitted" } else { "" }
    ));
    v
}

fn init_logs(c: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&c.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // Only the first subscriber wins; a second init (tests) is harmless.
    let _ = if c.log.format == "json" { b.json().try_init() } else { b.try_init() };
}

/// Queues every message; returns how many were queued.
pub(crate) fn deliver(server: &ServerHandle, out: Out) -> usize {
    let mut queued = 0;
    for (to, payload) in out {
        match server.send(to, payload) {
            Ok(_) => queued += 1,
            Err(e) => {
                metrics::send_failed();
                tracing::debug!(session = %to, %e, "message not queued");
            }
        }
    }
    metrics::messages_out(queued as u64);
    queued
}

fn random_key() -> String {
    hex::encode(tether_runtime::client::entropy())
}

pub(crate) async fn run(a: Args) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let r = cfg.resolve()?;
    init_logs(&r.cfg);
    let c = &r.cfg;

    let mut opts = ServerOptions::new(r.core.clone());
    opts.tuning = SocketTuning::from_heartbeat(&r.heartbeat);
    opts.max_handshakes = c.limits.max_handshakes;
    opts.max_pending = c.limits.max_pending;
    opts.overload_retry = c.limits.overload_retry;
    opts.ping_events = true;
    opts.log_heartbeats = c.log.heartbeats;
    let bans = auth::Bans::default();
    opts.auth = Some(Arc::new(auth::JwtAuth::new(
        r.jwt_secret.as_deref(),
        c.auth.anonymous,
        c.auth.leeway,
        c.auth.audience.as_deref(),
        c.auth.issuer.as_deref(),
        bans.clone(),
    )));
    for (kind, addr) in
        [(Kind::Tcp, c.listen.tcp), (Kind::Ws, c.listen.ws), (Kind::Tls, c.listen.tls), (Kind::Wss, c.listen.wss)]
    {
        if let Some(addr) = addr.0 {
            opts = opts.listen(kind, addr);
        }
    }
    if let (Some(cert), Some(key)) = (&c.tls.cert, &c.tls.key) {
        opts.tls = Some(tether_runtime::tls::server_config(cert, key)?);
    }
    let metrics = metrics::install()?;
    {
        // Histogram samples pile up until drained; drain them even when
        // nobody scrapes (or the admin listener is off).
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                m.run_upkeep();
            }
        });
    }
    let server = Server::start(opts).await?;
    let admin_key: Arc<str> = Arc::from(r.admin_key.clone().unwrap_or_else(random_key));
    let shared = Shared {
        server: server.handle(),
        rooms: Arc::new(Mutex::new(Rooms::new(c.limits.clone()))),
        metrics,
        admin_key: admin_key.clone(),
        bans,
        draining: Arc::new(AtomicBool::new(false)),
        drain_window: c.drain.window,
    };

    out!(
        "tether serve: in-memory gateway, grace {}{}",
        humantime::format_duration(c.session.grace),
        a.config.as_ref().map(|p| format!(", config {}", p.display())).unwrap_or_default()
    );
    for l in server.local_addrs() {
        out!("  sessions on {}://{}", l.kind, l.addr);
    }
    if let Some(addr) = c.admin.listen.0 {
        let l = TcpListener::bind(addr).await.with_context(|| format!("admin.listen: cannot listen on {addr}"))?;
        out!("  admin API on http://{} (OpenAPI at /openapi.json)", l.local_addr()?);
        if r.admin_key.is_none() {
            out!("  admin key (generated; set admin.key_env to choose it): {admin_key}");
        }
        let app = admin::router(shared.clone());
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    if let Some(addr) = c.demo.listen.0 {
        let l = TcpListener::bind(addr).await.with_context(|| format!("demo.listen: cannot listen on {addr}"))?;
        let ws = server.local_addr(Kind::Ws).or(server.local_addr(Kind::Wss));
        out!("  demo page on http://{}/", l.local_addr()?);
        let app = web::router(ws.map(|a| (a, server.local_addr(Kind::Ws).is_none())));
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    out!(
        "  Ctrl-C or SIGTERM drains (clients come back within {}) and stops",
        humantime::format_duration(c.drain.window)
    );

    let (handle, mut events) = server.into_parts();
    loop {
        tokio::select! {
            e = events.recv() => {
                let Some(e) = e else { return Ok(()) };
                on_event(&shared, e);
            }
            r = stop_signal() => {
                r?;
                shared.draining.store(true, std::sync::atomic::Ordering::SeqCst);
                let told = handle.drain(c.drain.window);
                out!("draining: {told} client(s) told to reconnect within {}; stopping", humantime::format_duration(c.drain.window));
                // Give the CLOSE frames a moment to leave. Sessions were in
                // memory: a restarted gateway will not know them, and clients
                // are told to start fresh.
                tokio::time::sleep(Duration::from_secs(1)).await;
                handle.shutdown();
                return Ok(());
            }
        }
    }
}

/// Ctrl-C, or SIGTERM (what service managers send to stop a process).
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

fn on_event(s: &Shared, e: ServerEvent) {
    let lock = || s.rooms.lock().unwrap_or_else(|p| p.into_inner());
    let out = match e {
        ServerEvent::Opened { session, peer, kind, user } => {
            metrics::opened();
            let user = user
                .filter(|u| !u.is_empty())
                .map_or_else(|| auth::anonymous_user(&session.to_string()), |u| u.to_string());
            tracing::info!(%session, %user, %peer, %kind, "session opened");
            lock().opened(session, user);
            Vec::new()
        }
        ServerEvent::Message { session, payload } => {
            metrics::message_in();
            lock().request(session, &payload, std::time::Instant::now())
        }
        ServerEvent::PingPayload { session, payload } => {
            if let Some(ms) = rtt_of(&payload) {
                metrics::rtt(ms / 1000.0);
                lock().rtt(session, ms);
            }
            Vec::new()
        }
        ServerEvent::Detached { session, reason } => {
            metrics::detected();
            tracing::info!(%session, %reason, "session detached; kept for a resume");
            lock().detached(session)
        }
        ServerEvent::Resumed { session, replayed, peer, kind } => {
            metrics::resumed(replayed);
            tracing::info!(%session, replayed, %peer, %kind, "session resumed");
            lock().resumed(session)
        }
        ServerEvent::Ended { session, reason, unacked } => {
            let expired = matches!(reason, SessionEnd::Expired);
            metrics::ended(end_label(&reason));
            tracing::info!(%session, %reason, unacked = unacked.len(), "session ended");
            lock().ended(session, expired)
        }
        ServerEvent::Rejected { peer, reason } => {
            // At debug: a stream of bad tokens must not flood the log (the
            // metric counts them).
            tracing::debug!(%peer, ?reason, "handshake refused");
            Vec::new()
        }
        _ => Vec::new(),
    };
    deliver(&s.server, out);
}

fn end_label(r: &SessionEnd) -> &'static str {
    match r {
        SessionEnd::Expired => "expired",
        SessionEnd::PeerClosed { .. } | SessionEnd::LocalClose => "closed",
        SessionEnd::ReplayOverflow { .. } => "replay_overflow",
        _ => "other",
    }
}

/// The RTT a client put on its PING: `{"rtt_ms": 12.5}`.
fn rtt_of(payload: &[u8]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v.get("rtt_ms")?.as_f64().filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 600_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_payloads_are_read_and_nonsense_is_ignored() {
        assert_eq!(rtt_of(br#"{"rtt_ms": 12.5}"#), Some(12.5));
        assert_eq!(rtt_of(br#"{"rtt_ms": -1}"#), None);
        assert_eq!(rtt_of(br#"{"rtt": 3}"#), None);
        assert_eq!(rtt_of(b"\xff"), None);
    }

    #[test]
    fn session_ids_are_hex() {
        use tether_proto::SessionId;
        let id = SessionId::from_bytes([0xab; 16]);
        assert_eq!(auth::anonymous_user(&id.to_string()), "anon-abababab");
    }
}
