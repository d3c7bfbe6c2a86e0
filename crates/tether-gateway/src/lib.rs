//! The tether gateway: tether sessions over TCP, TLS, WebSocket and secure
//! WebSocket carry the room protocol (docs/GATEWAY.md); an admin HTTP API
//! and a demo page run beside them. Everything is in memory. `tether serve`
//! is a thin wrapper around [`run`].
//!
//! One task owns the server's event stream and feeds the room state; the
//! admin API reads the same state under a mutex held only for a lookup.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let cfg = tether_gateway::Config::parse("[listen]\ntcp = \"127.0.0.1:0\"", "inline")?.resolve()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let g = tether_gateway::run(cfg, async move { let _ = stopped.await; }).await?;
//! println!("sessions on {:?}, admin API on {:?}", g.sessions, g.admin);
//! let _ = stop.send(());
//! g.stopped().await?;
//! # Ok(()) }
//! ```

mod admin;
mod api;
mod auth;
pub mod client;
mod cluster;
pub mod config;
mod hooks;
mod jwks;
pub mod keys;
mod metrics;
pub mod protocol;
mod rooms;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tether_proto::{SendError, SessionEnd, SessionId};
use tether_runtime::server::{Server, ServerEvent, ServerOptions};
use tether_runtime::store::StoreError;
use tether_runtime::{Kind, ServerHandle, SocketTuning};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use self::config::{Config, Resolved};
pub use tether_runtime::server::Listen;

use self::metrics::Metrics;
use self::rooms::{Out, Rooms};

/// What the admin API shares with the event loop.
#[derive(Clone)]
pub(crate) struct Shared {
    server: ServerHandle,
    rooms: Arc<Mutex<Rooms>>,
    metrics: Arc<Metrics>,
    admin_key: Arc<str>,
    /// `/metrics` needs this key (or the admin key) when set.
    metrics_key: Option<Arc<str>>,
    bans: auth::Bans,
    draining: Arc<AtomicBool>,
    drain_window: Duration,
    /// Rooms in Redis (`[cluster]`); None: rooms in `rooms`.
    cluster: Option<Arc<rooms::redis::RedisRooms>>,
    max_say_bytes: usize,
    /// The application's backend (`[hooks]`).
    hooks: Option<Arc<hooks::Hooks>>,
    /// The sessions' lanes through the backend, with hooks on.
    lanes: Option<Arc<hooks::lanes::Lanes>>,
}

impl Shared {
    /// The room table (in memory), or the participants held here (cluster).
    pub(crate) fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this gateway drains (its shutdown began, or the admin API
    /// asked): new sessions and resumes are refused.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A started gateway: where it listens (ports chosen by the OS where the
/// config said port 0) and its admin key. Dropping it stops the gateway at
/// once (no drain); [`Running::stopped`] waits for the shutdown future
/// given to [`run`] and the drain that follows it.
pub struct Running {
    /// The session listeners, as bound.
    pub sessions: Vec<Listen>,
    /// The admin API (and `/metrics`), when `admin.listen` is on.
    pub admin: Option<SocketAddr>,
    /// The demo page and the browser client, when `demo.listen` is on.
    pub demo: Option<SocketAddr>,
    /// The admin API's bearer key: the configured one, or the one kept in
    /// `admin_key_file`.
    pub admin_key: Arc<str>,
    /// The file the admin key was read from (or made in), when the config
    /// gave no key.
    pub admin_key_file: Option<std::path::PathBuf>,
    /// True when the key file was made by this start.
    pub admin_key_generated: bool,
    /// True when `/metrics` needs a key (`admin.metrics_key`).
    pub metrics_key_required: bool,
    /// The TLS certificate served (`tls` and `wss`): [`ServerTls::reload`]
    /// reads its files again (the binary does on SIGHUP).
    ///
    /// [`ServerTls::reload`]: tether_runtime::tls::ServerTls::reload
    pub tls: Option<Arc<tether_runtime::tls::ServerTls>>,
    /// With `[cluster]`: this node's id and the Redis URL (password removed).
    pub cluster: Option<(String, String)>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Stopped>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin key stays out of logs and panic messages.
        f.debug_struct("Running")
            .field("sessions", &self.sessions)
            .field("admin", &self.admin)
            .field("demo", &self.demo)
            .field("admin_key_file", &self.admin_key_file)
            .field("admin_key_generated", &self.admin_key_generated)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The first session listener of this transport.
    pub fn session_addr(&self, kind: Kind) -> Option<SocketAddr> {
        self.sessions.iter().find(|l| l.kind == kind).map(|l| l.addr)
    }

    /// Waits until the gateway has stopped: the shutdown future resolved and
    /// the drain is done, or the server's event stream ended.
    pub async fn stopped(self) -> Result<Stopped> {
        let Running { stop, task, .. } = self;
        let r = task.await.context("the gateway's event loop panicked");
        drop(stop);
        r
    }
}

/// How a gateway stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future resolved: `told` attached clients were told to
    /// come back within `window` (they reconnect to whatever serves next:
    /// with `[cluster]` their sessions resume there; without, they were in
    /// this process's memory and are gone), then the server stopped.
    Drained {
        /// Clients told to reconnect.
        told: usize,
        /// The spread they were given (`drain.window`).
        window: Duration,
    },
    /// The server's event stream ended.
    Ended,
}

/// Installs the process-wide log subscriber the config asks for (stderr,
/// `log.level` unless `TETHER_LOG` is set, text or JSON). For programs that
/// run the gateway as their main job, like `tether serve`; [`run`] does not
/// call it. Only the first subscriber of a process wins.
pub fn init_logs(c: &config::Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&c.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if c.format == "json" { b.json().try_init() } else { b.try_init() };
}

/// What [`deliver`] did.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// Messages queued.
    pub(crate) queued: usize,
    /// Messages refused as larger than their recipient's frame limit:
    /// (how many, the largest message's length, the smallest limit).
    pub(crate) too_large: Option<(usize, usize, usize)>,
}

/// Queues every message wherever its session is carried (with a store:
/// stored first). A refusal is counted in the metrics and logged at debug;
/// messages too large for their recipient are also reported back. The
/// store being unreachable counts every message as refused.
pub(crate) async fn deliver(server: &ServerHandle, metrics: &Metrics, out: Out) -> Delivered {
    if out.is_empty() {
        return Delivered::default();
    }
    let n = out.len();
    match server.publish(out).await {
        Ok(fates) => tally(metrics, fates),
        Err(e) => {
            tracing::warn!(%e, messages = n, "messages not stored");
            for _ in 0..n {
                metrics.send_failed();
            }
            Delivered::default()
        }
    }
}

/// Counts what became of each message.
pub(crate) fn tally(metrics: &Metrics, fates: Vec<Result<u64, SendError>>) -> Delivered {
    let mut d = Delivered::default();
    for fate in fates {
        match fate {
            Ok(_) => d.queued += 1,
            Err(e) => {
                metrics.send_failed();
                tracing::debug!(%e, "message not queued");
                if let SendError::TooLarge { len, max } = e {
                    let (n, size, limit) = d.too_large.get_or_insert((0, len, max));
                    *n += 1;
                    (*size, *limit) = ((*size).max(len), (*limit).min(max));
                }
            }
        }
    }
    metrics.messages_out(d.queued as u64);
    d
}

/// 64 random hex digits (generated admin keys, node ids).
pub(crate) fn random_key() -> String {
    hex::encode(tether_runtime::client::entropy())
}

async fn bind(addr: Option<SocketAddr>, field: &str) -> Result<Option<TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let l = TcpListener::bind(addr).await.with_context(|| format!("{field}: cannot listen on {addr}"))?;
    Ok(Some(l))
}

/// Starts the gateway: binds every listener the config enables (port 0
/// picks a free port), starts serving, and returns where it listens. When
/// `shutdown` resolves, the gateway drains (attached clients are told to
/// come back within `drain.window`), gives the CLOSE frames a second to
/// leave, and stops; [`Running::stopped`] reports it. Needs a tokio runtime
/// with I/O and time enabled.
pub async fn run(config: Resolved, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running> {
    let r = config;
    let c = &r.cfg;

    let metrics = Arc::new(Metrics::new()?);
    let hooks = hooks::Hooks::new(&c.hooks, metrics.clone())?;
    let mut core = r.core.clone();
    // With a backend, a client message is acknowledged once the backend
    // handled it (and its effects are committed), not when it was read.
    core.commit_acks |= hooks.is_some();
    let lane_depth = core.receive_window.max_messages + 64;
    let mut opts = ServerOptions::new(core);
    opts.tuning = SocketTuning::from_heartbeat(&r.heartbeat);
    opts.origins = if c.listen.allowed_origins.iter().any(|o| o == "*") {
        tether_runtime::transport::Origins::Any
    } else {
        tether_runtime::transport::Origins::same_host(c.listen.allowed_origins.clone())
    };
    opts.proxies = c.proxies()?;
    opts.max_handshakes = c.limits.max_handshakes;
    opts.max_pending = c.limits.max_pending;
    opts.per_address = (c.limits.connections_per_address > 0.0).then_some(tether_runtime::server::PerAddress {
        rate: c.limits.connections_per_address,
        burst: c.limits.connections_burst,
        exempt_loopback: true,
    });
    opts.overload_retry = c.limits.overload_retry;
    opts.ping_events = true;
    opts.log_heartbeats = c.log.heartbeats;
    opts.reuse_port = c.listen.reuse_port;
    opts.observer = Some(metrics.clone());
    let bans = auth::Bans::default();
    let jwt = auth::JwtAuth::new(
        r.jwt_secret.as_deref(),
        c.auth.anonymous,
        c.auth.leeway,
        c.auth.audience.as_deref(),
        c.auth.issuer.as_deref(),
        bans.clone(),
    )
    .with_jwks(c.auth.jwks_url.as_ref().map(|u| {
        let set = jwks::Jwks::new(u.clone());
        set.spawn_refresh(c.auth.jwks_refresh);
        set
    }));
    let patience = c.session.handshake_timeout.mul_f64(0.8);
    opts.auth = Some(Arc::new(hooks::connect::GatewayAuth { jwt, hooks: hooks.clone(), patience }));
    for (kind, addr) in
        [(Kind::Tcp, c.listen.tcp), (Kind::Ws, c.listen.ws), (Kind::Tls, c.listen.tls), (Kind::Wss, c.listen.wss)]
    {
        if let Some(addr) = addr.0 {
            opts = opts.listen(kind, addr);
        }
    }
    let mut tls = None;
    if let (Some(cert), Some(key)) = (&c.tls.cert, &c.tls.key) {
        let t = Arc::new(tether_runtime::tls::ServerTls::load(cert, key)?);
        opts.tls = Some(t.config());
        tls = Some(t);
    }
    // The HTTP listeners are bound first, so that a taken port fails the
    // start before any session is accepted.
    let admin_listener = bind(c.admin.listen.0, "admin.listen").await?;
    let demo_listener = bind(c.demo.listen.0, "demo.listen").await?;
    let admin = admin_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let demo = demo_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let mut cluster = None;
    let c_sweep = c.cluster.sweep.unwrap_or(Duration::from_secs(30));
    if let Some(url) = &r.redis {
        let node = c.cluster.node_id.clone().unwrap_or_else(|| format!("node-{}", &random_key()[..8]));
        let mut o = tether_cluster::RedisOptions::new(url.clone(), node);
        if let Some(p) = &c.cluster.key_prefix {
            o.prefix = p.clone();
        }
        o.replay = r.core.replay.clone();
        if let Some(ttl) = c.cluster.lease_ttl {
            (o.lease_ttl, o.lease_interval) = (ttl, ttl / 3);
        }
        let store = tether_cluster::RedisStore::connect(o).await.context("cluster.redis")?;
        tracing::info!(node = %store.options().node, redis = %tether_cluster::redacted(url), "sessions kept in Redis");
        cluster = Some(Arc::new(rooms::redis::RedisRooms::new(store.clone(), c.limits.clone())));
        opts.store = Some(store);
    }
    // Before listening: a key file that cannot be made stops the start.
    let (admin_key, admin_key_file, admin_key_generated) = match &r.admin_key {
        keys::AdminKey::Off => (random_key(), None, false), // no admin API: never used
        keys::AdminKey::Given(k) => (k.clone(), None, false),
        keys::AdminKey::File(p) => {
            let (k, made) = keys::load_or_make(p)?;
            (k, Some(p.clone()), made)
        }
    };
    let admin_key: Arc<str> = Arc::from(admin_key);
    let metrics_key_required = r.metrics_key.is_some();
    let server = Server::start(opts).await?;
    let shared = Shared {
        server: server.handle(),
        rooms: Arc::new(Mutex::new(Rooms::new(c.limits.clone()))),
        metrics: metrics.clone(),
        admin_key: admin_key.clone(),
        metrics_key: r.metrics_key.as_deref().map(Arc::from),
        bans,
        draining: Arc::new(AtomicBool::new(false)),
        drain_window: c.drain.window,
        cluster,
        max_say_bytes: c.limits.max_say_bytes,
        lanes: hooks.as_ref().map(|_| Arc::new(hooks::lanes::Lanes::new(lane_depth))),
        hooks,
    };

    let mut tasks = Vec::new();
    // Histogram samples pile up until drained; drain them even when nobody
    // scrapes (or the admin listener is off).
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics.upkeep();
        }
    }));
    if let Some(c) = shared.cluster.clone() {
        let (s, every) = (shared.clone(), c_sweep);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match c.sweep().await {
                    Ok((n, rooms::redis::Done::Sent(sent))) => {
                        if n > 0 {
                            tracing::info!(members = n, "expired room members whose session was gone");
                        }
                        tally(&s.metrics, s.server.stored(sent));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%e, "room sweep not done; next time"),
                }
            }
        }));
    }
    let mut serve_http = |l: Option<TcpListener>, app: axum::Router| {
        if let Some(l) = l {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!(%e, "an HTTP listener stopped");
                }
            }));
        }
    };
    serve_http(admin_listener, admin::router(shared.clone()));
    let ws = server.local_addr(Kind::Ws).or(server.local_addr(Kind::Wss));
    serve_http(demo_listener, web::router(ws.map(|a| (a, server.local_addr(Kind::Ws).is_none()))));

    let sessions = server.local_addrs().to_vec();
    let cluster_info = shared
        .cluster
        .as_ref()
        .map(|c| (c.node().to_owned(), r.redis.as_deref().map(tether_cluster::redacted).unwrap_or_default()));
    let (stop, stop_rx) = oneshot::channel();
    let (handle, events) = server.into_parts();
    let task = tokio::spawn(event_loop(shared, handle, events, Box::pin(shutdown), stop_rx, tasks));
    Ok(Running {
        sessions,
        admin,
        demo,
        admin_key,
        admin_key_file,
        admin_key_generated,
        metrics_key_required,
        tls,
        cluster: cluster_info,
        stop,
        task,
    })
}

async fn event_loop(
    s: Shared,
    handle: ServerHandle,
    mut events: mpsc::Receiver<ServerEvent>,
    mut shutdown: std::pin::Pin<Box<impl Future<Output = ()>>>,
    mut dropped: oneshot::Receiver<()>,
    tasks: Vec<JoinHandle<()>>,
) -> Stopped {
    let stopped = loop {
        tokio::select! {
            e = events.recv() => match e {
                // Handling an event may wait for the store (retried while it
                // is unreachable); a shutdown meanwhile still drains.
                Some(e) => tokio::select! {
                    () = on_event(&s, e) => {}
                    () = &mut shutdown => break drain(&s, &handle).await,
                },
                None => break Stopped::Ended,
            },
            () = &mut shutdown => break drain(&s, &handle).await,
            _ = &mut dropped => {
                // The `Running` was dropped: stop at once.
                handle.shutdown();
                break Stopped::Ended;
            }
        }
    };
    if let Some(l) = &s.lanes {
        l.stop();
    }
    for t in tasks {
        t.abort();
        // Wait until it is gone, so that its listener is closed once `stopped` returns.
        let _ = t.await;
    }
    stopped
}

/// Tells attached clients to come back within the drain window, gives the
/// CLOSE frames a moment to leave, and stops. With a store, sessions stay
/// in it and resume on whichever node the clients reach next (this one
/// restarted, or another); without, they were in memory and are gone.
async fn drain(s: &Shared, handle: &ServerHandle) -> Stopped {
    s.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    let window = s.drain_window;
    let told = handle.drain(window);
    tracing::info!(told, ?window, "draining: clients told to reconnect; stopping");
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.shutdown();
    Stopped::Drained { told, window }
}

/// Commits a client message with the messages its handling sends: with a
/// store, atomically, before the message is acknowledged (retried while the
/// store is unreachable: the client's message stays unacknowledged
/// meanwhile, and its link alive). Nothing is done twice: a session that
/// moved to another node is sent the message again there by its client.
pub(crate) async fn commit(s: &Shared, session: SessionId, seq: u64, out: Out) -> Option<Delivered> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match s.server.commit(session, seq, out.clone()).await {
            Ok(fates) => return Some(tally(&s.metrics, fates)),
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(%session, %e, ?backoff, "client message not committed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::debug!(%session, %e, "client message left to the node that carries the session");
                return None;
            }
        }
    }
}

async fn on_event(s: &Shared, e: ServerEvent) {
    if let Some(lanes) = &s.lanes {
        if let ServerEvent::Message { session, seq, payload } = e {
            s.metrics.message_in();
            return lanes.message(s, session, seq, payload);
        }
        lanes.event(s, &e);
    }
    if let Some(c) = &s.cluster {
        return cluster::on_event(s, c, e).await;
    }
    let m = &s.metrics;
    let out = match e {
        ServerEvent::Opened { session, peer, kind, user } => {
            m.opened();
            let who = participant(session, user);
            tracing::info!(%session, user = %who.user, %peer, %kind, "session opened");
            s.rooms().opened_as(session, who);
            Vec::new()
        }
        ServerEvent::Message { session, seq, payload } => {
            m.message_in();
            return hooks::requests::handle(s, session, seq, &payload).await;
        }
        ServerEvent::PingPayload { session, payload } => {
            if let Some(ms) = rtt_of(&payload) {
                m.rtt(ms / 1000.0);
                s.rooms().rtt(session, ms);
            }
            Vec::new()
        }
        ServerEvent::Detached { session, reason } => {
            m.detected();
            tracing::info!(%session, %reason, "session detached; kept for a resume");
            s.rooms().detached(session)
        }
        ServerEvent::Resumed { session, replayed, peer, kind, user } => {
            m.resumed(replayed);
            tracing::info!(%session, replayed, %peer, %kind, "session resumed");
            let mut rooms = s.rooms();
            rooms.adopt(session, participant(session, user));
            rooms.resumed(session)
        }
        ServerEvent::Moved { session } => {
            tracing::info!(%session, "session carried on by another node");
            s.rooms().forget(session);
            Vec::new()
        }
        ServerEvent::Ended { session, reason, unacked } => {
            let expired = matches!(reason, SessionEnd::Expired);
            m.ended(session, &reason, s.is_draining());
            tracing::info!(%session, %reason, unacked = unacked.len(), "session ended");
            s.rooms().ended(session, expired)
        }
        ServerEvent::Rejected { peer, reason } => {
            // At debug: a stream of bad tokens must not flood the log (the
            // metric counts them).
            tracing::debug!(%peer, ?reason, "handshake refused");
            Vec::new()
        }
        _ => Vec::new(),
    };
    deliver(&s.server, m, out).await;
}

/// A session as its rooms show it: its authenticated id (or an anonymous
/// name), the display name and permissions it came with.
pub(crate) fn participant(session: SessionId, user: Option<Arc<str>>) -> rooms::Who {
    let p = user.as_deref().map(auth::Principal::decode).unwrap_or_default();
    let perms = (p.rooms.is_some() || p.publish.is_some()).then(|| Arc::new(p.clone()));
    let user = if p.user.is_empty() { auth::anonymous_user(&session.to_string()) } else { p.user };
    rooms::Who { user, name: p.name, perms }
}

/// The RTT a client put on its PING: `{"rtt_ms": 12.5}`.
pub(crate) fn rtt_of(payload: &[u8]) -> Option<f64> {
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
