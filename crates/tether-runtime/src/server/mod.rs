//! The session server: listeners, handshakes with admission control, a
//! session registry and one task per session.
//!
//! ```text
//! listener ──accept──▶ handshake task ──HELLO──▶ check_hello (core)
//!                         │  new session: ServerSession::open → spawn session task
//!                         │  resume: registry → lock session → ServerSession::resume
//!                         │          → hand the transport to the session task
//!                         └─ refused: REJECT / CLOSE, flushed, closed
//! session task: drives one ServerSession (its transport's frames, its
//! deadlines, commands); lives through grace; removes itself when it ends.
//! ```
//!
//! A session's state sits behind its own mutex so [`ServerHandle::send`]
//! acts synchronously and returns the core's verdict; the task is woken to
//! write. No lock is held across an `.await`, and locks never nest except
//! registry → nothing (the registry lock is only held to look up or insert).

mod handshake;
mod limit;
mod pace;
mod session;
mod stored;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tether_proto::{
    CloseCode, ConfigError, RejectReason, Rng, SendError, ServerConfig, SessionEnd, SessionId, TransportLoss,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::store::SharedStore;
use crate::transport::Kind;
use crate::tune::SocketTuning;

pub use limit::PerAddress;
pub(crate) use session::SessionCell;
pub use stored::Queued;

/// One listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The transport spoken on it.
    pub kind: Kind,
    /// Where to listen (port 0 picks a free one).
    pub addr: SocketAddr,
}

/// Everything a [`Server`] needs.
#[derive(Clone)]
pub struct ServerOptions {
    /// Protocol settings (grace, handshake timeout, idle bounds, replay bounds).
    pub core: ServerConfig,
    /// Listening sockets.
    pub listen: Vec<Listen>,
    /// Certificate for `tls` and `wss` listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Options for every accepted socket.
    pub tuning: SocketTuning,
    /// Handshakes admitted at once; more are answered REJECT Overloaded
    /// with a retry-after.
    pub max_handshakes: usize,
    /// Connections beyond this many in handshake are dropped unanswered
    /// (a flood must not cost a TLS handshake each).
    pub max_pending: usize,
    /// The retry-after given with Overloaded is spread over
    /// `[overload_retry, 3 × overload_retry]` when calm, wider in a storm
    /// (up to 20 s, within a third of the grace; `pace.rs`).
    pub overload_retry: Duration,
    /// Seed for the server's randomness (tests); None draws from the OS.
    pub seed: Option<u64>,
    /// Checks the HELLO credential of every new session; None admits all.
    pub auth: Option<Arc<dyn Authenticate>>,
    /// Report PING payloads as [`ServerEvent::PingPayload`] (off: dropped;
    /// on, they are still dropped while the event queue is full, so that a
    /// lagging application never delays a PONG).
    pub ping_events: bool,
    /// Log PING/PONG frames too (every frame is logged at trace level,
    /// heartbeats only with this switch, to keep logs readable).
    pub log_heartbeats: bool,
    /// Where sessions are kept beyond this process (None: in its memory
    /// only). With a store, acks wait for [`ServerHandle::commit`].
    pub store: Option<SharedStore>,
    /// Listen with SO_REUSEPORT: several processes may listen on the same
    /// port, and the kernel spreads new connections over those alive (the
    /// nodes of a cluster on one machine; with a store, a client resumes
    /// on whichever it reaches).
    pub reuse_port: bool,
    /// Which web pages may open WebSocket sessions (the upgrade's
    /// `Origin`); others get 403. Default: any.
    pub origins: crate::transport::Origins,
    /// Load balancers whose word on the client's address is taken (a PROXY
    /// protocol header, `X-Forwarded-For`). None (the default): the
    /// socket's peer is the client.
    pub proxies: Option<crate::transport::TrustedProxies>,
    /// New connections per client address; beyond, they are closed at
    /// accept, unanswered. None (the default): no limit.
    pub per_address: Option<PerAddress>,
    /// Told the timings the server measures (an application's metrics);
    /// None (the default): not measured.
    pub observer: Option<Arc<dyn Observer>>,
}

/// Timings the server measures, for an application's metrics
/// ([`ServerOptions::observer`]). Called on session and handshake tasks
/// (never under a lock): keep it quick, with no I/O and no blocking.
pub trait Observer: Send + Sync + 'static {
    /// A session's transport was found lost: `silence` is the time from
    /// the last frame heard from the client to the detach. `timed_out`:
    /// nothing was heard for the idle timeout (the heartbeat found it);
    /// else the connection under it closed or failed. Detaches that find
    /// nothing (the client's own CLOSE or bad input, a drain, a resync)
    /// are not reported.
    fn transport_lost(&self, silence: Duration, timed_out: bool) {
        let _ = (silence, timed_out);
    }

    /// A session resumed here after `outage` detached: from the detach
    /// (seen by this server: with a store, by this node) to the resume.
    /// Resumes that replace a transport the server still thought alive,
    /// and sessions carried on from another node, are not reported.
    fn resumed(&self, outage: Duration) {
        let _ = outage;
    }

    /// A resume was admitted `took` after its HELLO was read (with a store,
    /// the claim there included): its WELCOME is queued and its session's
    /// task woken to write it.
    fn resume_handshake(&self, took: Duration) {
        let _ = took;
    }
}

/// Decides who may open a session, from the credential in its HELLO
/// (`auth`, opaque bytes, may be empty). Resumes are proven by the resume
/// token instead and are not checked again. It runs on the handshake's
/// task; a panic costs only that handshake.
pub trait Authenticate: Send + Sync + 'static {
    /// The user id to attach to the session, or a refusal message saying
    /// what was wrong and what to do (sent in REJECT Unauthorized). Keep it
    /// fast and non-blocking (no I/O); a decision that needs I/O (asking an
    /// application's backend) belongs in [`Authenticate::admit`].
    fn authenticate(&self, credential: &[u8]) -> Result<Arc<str>, String>;

    /// The same decision, asynchronously and with more to go on: called for
    /// every HELLO that asks for a new session and that the server would
    /// otherwise admit, within the handshake timeout (past it, the
    /// transport is closed with HANDSHAKE_TIMEOUT). By default,
    /// [`Authenticate::authenticate`].
    fn admit<'a>(&'a self, who: Applicant<'a>) -> AdmitFuture<'a> {
        Box::pin(std::future::ready(self.authenticate(who.credential).map_err(Denial::Refused)))
    }
}

/// What [`Authenticate::admit`] returns.
pub type AdmitFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Arc<str>, Denial>> + Send + 'a>>;

/// Who asks for a new session ([`Authenticate::admit`]).
#[derive(Debug, Clone, Copy)]
pub struct Applicant<'a> {
    /// The HELLO's `auth` field.
    pub credential: &'a [u8],
    /// The client's address, as the socket sees it.
    pub peer: SocketAddr,
    /// The transport it came over.
    pub kind: Kind,
}

/// Why a new session was not admitted ([`Authenticate::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Refused: REJECT 7 (Unauthorized) with this message.
    Refused(String),
    /// Not decided now (what decides is away): REJECT 5 (Overloaded) with
    /// this message and `retry_after` plus up to as much again of jitter.
    Unavailable {
        /// What happened and what to do, for the client's user.
        message: String,
        /// The least the client waits before its next attempt.
        retry_after: Duration,
    },
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("core", &self.core)
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .field("tuning", &self.tuning)
            .field("max_handshakes", &self.max_handshakes)
            .finish_non_exhaustive()
    }
}

impl ServerOptions {
    /// Defaults around `core`, listening nowhere yet. Accepted sockets get
    /// the tuning of the default heartbeat profile.
    pub fn new(core: ServerConfig) -> Self {
        let hb = tether_proto::HeartbeatConfig::profile(tether_proto::Profile::Default);
        ServerOptions {
            core,
            listen: Vec::new(),
            tls: None,
            tuning: SocketTuning::from_heartbeat(&hb),
            max_handshakes: 512,
            max_pending: 4096,
            overload_retry: Duration::from_secs(1),
            seed: None,
            auth: None,
            ping_events: false,
            log_heartbeats: false,
            store: None,
            reuse_port: false,
            origins: crate::transport::Origins::Any,
            proxies: None,
            per_address: None,
            observer: None,
        }
    }

    /// Adds a listener.
    pub fn listen(mut self, kind: Kind, addr: SocketAddr) -> Self {
        self.listen.push(Listen { kind, addr });
        self
    }
}

/// What the server tells its application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A new session was opened.
    Opened {
        /// The session.
        session: SessionId,
        /// The client's address.
        peer: SocketAddr,
        /// The transport.
        kind: Kind,
        /// The user the authenticator named (None without an authenticator).
        user: Option<Arc<str>>,
    },
    /// A message from a session, exactly once and in order.
    Message {
        /// The session.
        session: SessionId,
        /// Its seq: with a store, acknowledged only once
        /// [`ServerHandle::commit`] commits it.
        seq: u64,
        /// The payload.
        payload: Bytes,
    },
    /// A session lost its transport; it waits for a resume until grace ends.
    Detached {
        /// The session.
        session: SessionId,
        /// Why.
        reason: TransportLoss,
    },
    /// A session continues on a new transport.
    Resumed {
        /// The session.
        session: SessionId,
        /// Messages written again because the client had not received them.
        replayed: u64,
        /// The client's new address.
        peer: SocketAddr,
        /// The new transport.
        kind: Kind,
        /// The user the session was opened by (a node that carries on a
        /// session another node opened learns it here).
        user: Option<Arc<str>>,
    },
    /// A session's node died (with a store): the session waits for a resume
    /// on any node until its grace runs out, as after a lost transport.
    /// Reported once, by the node that found it; not held here.
    Orphaned {
        /// The session.
        session: SessionId,
    },
    /// This node no longer carries the session: another node claimed it
    /// (its client resumed there). It has not ended; forget it here.
    Moved {
        /// The session.
        session: SessionId,
    },
    /// A session ended; what the client never acknowledged is handed back.
    Ended {
        /// The session.
        session: SessionId,
        /// Why.
        reason: SessionEnd,
        /// Unacknowledged messages, oldest first.
        unacked: Vec<Bytes>,
    },
    /// Application data on a PING (only with [`ServerOptions::ping_events`];
    /// dropped rather than queued while the event queue is full).
    PingPayload {
        /// The session.
        session: SessionId,
        /// The payload.
        payload: Bytes,
    },
    /// A handshake was refused (dropped when the event queue is full;
    /// [`ServerHandle::rejects`] counts every one).
    Rejected {
        /// The client's address.
        peer: SocketAddr,
        /// Why.
        reason: RejectReason,
    },
}

/// A snapshot of one session, for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// The session.
    pub id: SessionId,
    /// True while a transport carries it.
    pub attached: bool,
    /// The transport kind and peer of the latest transport.
    pub peer: Option<(Kind, SocketAddr)>,
    /// Time since the last frame from the client.
    pub silent_for: Duration,
    /// Unacknowledged outgoing messages and bytes.
    pub buffered: (usize, usize),
    /// The user the authenticator named.
    pub user: Option<Arc<str>>,
}

pub(crate) struct Inner {
    cfg: Arc<ServerConfig>,
    tuning: SocketTuning,
    origins: crate::transport::Origins,
    proxies: Option<crate::transport::TrustedProxies>,
    /// The open HTTP fallback transports (their POSTs' destinations).
    routes: Arc<crate::transport::http::Routes>,
    tls: Option<Arc<rustls::ServerConfig>>,
    rng: Mutex<Rng>,
    sessions: Mutex<HashMap<SessionId, Arc<SessionCell>>>,
    refusal: Mutex<Option<(RejectReason, Duration)>>,
    handshakes: Arc<Semaphore>,
    pending: AtomicUsize,
    /// Connections per client address (`ServerOptions::per_address`).
    limiter: Option<limit::Limiter>,
    /// Connections closed at accept by that limit.
    rate_limited: AtomicU64,
    max_pending: usize,
    overload_retry: Duration,
    next_tid: AtomicU64,
    /// PINGs answered, over all sessions.
    pings: AtomicU64,
    /// Handshakes refused, by reason number (index 0 unused).
    rejects: [AtomicU64; 9],
    /// Frame bytes read from clients (HELLOs and every frame after) and
    /// written by sessions (WELCOME and every frame after).
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    observer: Option<Arc<dyn Observer>>,
    /// Spreads the retry-after of overload refusals over a storm.
    pace: pace::Pace,
    auth: Option<Arc<dyn Authenticate>>,
    ping_events: bool,
    log_heartbeats: bool,
    store: Option<SharedStore>,
    events: mpsc::Sender<ServerEvent>,
    /// Stops the listeners (drain).
    accepting: CancellationToken,
    /// Stops everything.
    stop: CancellationToken,
}

impl Inner {
    fn rng(&self) -> MutexGuard<'_, Rng> {
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<SessionCell>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refusal(&self) -> Option<(RejectReason, Duration)> {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cell(&self, id: SessionId) -> Option<Arc<SessionCell>> {
        self.registry().get(&id).cloned()
    }

    /// A delay spread uniformly over `[base, base + spread]`.
    fn spread(&self, base: Duration, spread: Duration) -> Duration {
        let ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
        base + Duration::from_millis(self.rng().below_inclusive(ms))
    }
}

/// A running server.
pub struct Server {
    handle: ServerHandle,
    events: mpsc::Receiver<ServerEvent>,
    local: Vec<Listen>,
}

/// Controls a running server; cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be opened.
    #[error("cannot listen on {kind}://{addr}: {source}; pick a free port or another address")]
    Listen {
        /// The transport.
        kind: Kind,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS listener without a certificate.
    #[error("a {0} listener needs a certificate and key (tls_cert, tls_key)")]
    NoCertificate(Kind),
}

/// A listening socket as tokio's `TcpListener::bind` makes one (SO_REUSEADDR,
/// a backlog of 1024), with SO_REUSEPORT if asked.
fn listener(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if reuse_port {
        #[cfg(unix)]
        s.set_reuse_port(true)?;
        #[cfg(not(unix))]
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "listen.reuse_port (SO_REUSEPORT) needs a Unix system; turn it off",
        ));
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    // Not deeper: in a reconnect storm of 18 000 sessions a queue of
    // 65 535 (capped by net.core.somaxconn) brought them back later (last
    // resume 8.4 s after the restore against 6.1 s): connections the kernel
    // completes but the server reaches late are dropped at `max_pending`
    // or outlive the client's handshake timeout.
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

impl Server {
    /// Binds every listener and starts serving on the current tokio runtime.
    pub async fn start(opts: ServerOptions) -> Result<Server, StartError> {
        opts.core.validate()?;
        if opts.max_handshakes == 0 {
            return Err(ConfigError::new("max_handshakes", "is 0", "admit at least 1 handshake at once").into());
        }
        let rng = match opts.seed {
            Some(s) => Rng::from_seed(s),
            None => Rng::from_entropy_bytes(crate::client::entropy()),
        };
        let mut listeners = Vec::new();
        for l in &opts.listen {
            if matches!(l.kind, Kind::Tls | Kind::Wss) && opts.tls.is_none() {
                return Err(StartError::NoCertificate(l.kind));
            }
            let tl = listener(l.addr, opts.reuse_port).map_err(|source| StartError::Listen {
                kind: l.kind,
                addr: l.addr,
                source,
            })?;
            let addr = tl.local_addr().unwrap_or(l.addr);
            listeners.push((Listen { kind: l.kind, addr }, tl));
        }
        let (tx, events) = mpsc::channel(1024);
        let mut core = opts.core.clone();
        core.commit_acks |= opts.store.is_some();
        let inner = Arc::new(Inner {
            cfg: Arc::new(core),
            tuning: opts.tuning,
            origins: opts.origins,
            proxies: opts.proxies,
            routes: Arc::default(),
            tls: opts.tls.clone(),
            rng: Mutex::new(rng),
            sessions: Mutex::new(HashMap::new()),
            refusal: Mutex::new(None),
            handshakes: Arc::new(Semaphore::new(opts.max_handshakes)),
            pending: AtomicUsize::new(0),
            limiter: opts.per_address.map(|p| limit::Limiter::new(p, std::time::Instant::now())),
            rate_limited: AtomicU64::new(0),
            max_pending: opts.max_pending.max(opts.max_handshakes),
            overload_retry: opts.overload_retry,
            next_tid: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            rejects: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            observer: opts.observer.clone(),
            pace: pace::Pace::new(std::time::Instant::now(), opts.overload_retry),
            auth: opts.auth.clone(),
            ping_events: opts.ping_events,
            log_heartbeats: opts.log_heartbeats,
            store: opts.store.clone(),
            events: tx,
            accepting: CancellationToken::new(),
            stop: CancellationToken::new(),
        });
        if let Some(notices) = opts.store.as_ref().and_then(|s| s.notices()) {
            tokio::spawn(stored::notices(inner.clone(), notices));
        }
        let local = listeners.iter().map(|(l, _)| *l).collect();
        for (l, tl) in listeners {
            tokio::spawn(handshake::accept_loop(inner.clone(), l.kind, tl));
        }
        Ok(Server { handle: ServerHandle { inner }, events, local })
    }

    /// Where the server listens (with the ports actually bound).
    pub fn local_addrs(&self) -> &[Listen] {
        &self.local
    }

    /// The address of the first listener of `kind`.
    pub fn local_addr(&self, kind: Kind) -> Option<SocketAddr> {
        self.local.iter().find(|l| l.kind == kind).map(|l| l.addr)
    }

    /// A handle for sending and control.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The next event. Sessions hand events over only as fast as the
    /// application reads them and never wait for it: a message not yet read
    /// is not acknowledged, so a slow application slows its clients
    /// (docs/PROTOCOL.md §7.8) while their links stay alive. No event is
    /// dropped (PING payloads excepted, when a session's window is full).
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        self.events.recv().await
    }

    /// Splits into the handle and the event receiver.
    pub fn into_parts(self) -> (ServerHandle, mpsc::Receiver<ServerEvent>) {
        (self.handle, self.events)
    }
}

impl ServerHandle {
    /// Queues a message for a session (attached or within grace) held by
    /// this server. With a store, messages go through
    /// [`ServerHandle::publish`] instead (stored first): this refuses them
    /// with [`SendError::Stored`].
    pub fn send(&self, session: SessionId, payload: impl Into<Bytes>) -> Result<u64, SendError> {
        if self.inner.store.is_some() {
            return Err(SendError::Stored);
        }
        let cell = self.inner.cell(session).ok_or(SendError::NoSession)?;
        cell.send(payload.into())
    }

    /// Ends a session deliberately (CLOSE with `code`, e.g. 3004 for a kick).
    pub fn close_session(&self, session: SessionId, code: CloseCode, reason: &str) -> bool {
        match self.inner.cell(session) {
            Some(cell) => {
                cell.close(code, reason);
                true
            }
            None => false,
        }
    }

    /// Connections closed at accept because their address opened too many
    /// (`ServerOptions::per_address`).
    pub fn rate_limited(&self) -> u64 {
        self.inner.rate_limited.load(Ordering::Relaxed)
    }

    /// Sessions held (attached or within grace).
    pub fn session_count(&self) -> usize {
        self.inner.registry().len()
    }

    /// PINGs answered since the start, over all sessions.
    pub fn pings_answered(&self) -> u64 {
        self.inner.pings.load(Ordering::Relaxed)
    }

    /// Frame bytes read from clients since the start: every HELLO and every
    /// frame a session read after it (a frame's type byte and body, without
    /// the transport's framing: TCP length prefix, WebSocket or HTTP, TLS).
    pub fn bytes_received(&self) -> u64 {
        self.inner.bytes_in.load(Ordering::Relaxed)
    }

    /// Frame bytes written by sessions since the start: WELCOMEs and every
    /// frame after (counted as [`ServerHandle::bytes_received`]; handshake
    /// refusals are not counted).
    pub fn bytes_sent(&self) -> u64 {
        self.inner.bytes_out.load(Ordering::Relaxed)
    }

    /// Handshakes refused since the start, by reason (reasons never given
    /// are left out). Unlike [`ServerEvent::Rejected`], never dropped.
    pub fn rejects(&self) -> Vec<(RejectReason, u64)> {
        (1..=8u8)
            .filter_map(|n| {
                let count = self.inner.rejects[usize::from(n)].load(Ordering::Relaxed);
                Some((RejectReason::from_u8(n)?, count)).filter(|_| count > 0)
            })
            .collect()
    }

    /// Handshakes in progress.
    pub fn handshakes_in_progress(&self) -> usize {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// A snapshot of every session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let cells: Vec<_> = self.inner.registry().values().cloned().collect();
        cells.iter().map(|c| c.info()).collect()
    }

    /// Refuse new sessions with this reason and retry-after (None accepts
    /// again). Resumes are refused too when the reason is `ShuttingDown`.
    pub fn set_refusal(&self, refusal: Option<(RejectReason, Duration)>) {
        *self.inner.refusal.lock().unwrap_or_else(|p| p.into_inner()) = refusal;
    }

    /// Graceful drain: stop listening, refuse handshakes, and tell every
    /// attached client to reconnect after a delay spread uniformly over
    /// `[0, spread]`, so they do not all come back at once. Sessions stay
    /// in grace (another node, or this one restarted, may take them).
    /// Returns how many clients were told.
    pub fn drain(&self, spread: Duration) -> usize {
        self.set_refusal(Some((RejectReason::ShuttingDown, spread)));
        self.inner.accepting.cancel();
        let cells: Vec<_> = self.inner.registry().values().cloned().collect();
        let mut told = 0;
        for c in cells {
            let delay = self.inner.spread(Duration::ZERO, spread);
            if c.go_away(delay) {
                told += 1;
            }
        }
        told
    }

    /// Stops everything at once: listeners, handshakes and sessions (no
    /// goodbye; use [`ServerHandle::drain`] first for that).
    pub fn shutdown(&self) {
        self.inner.accepting.cancel();
        self.inner.stop.cancel();
        // Session tasks look at `stop` whenever they wake (they hold no
        // cancellation future of their own: that would cost every idle
        // session ~70 bytes). A session registered after this sweep saw
        // `stop` already set on its first turn.
        let cells: Vec<_> = self.inner.registry().values().cloned().collect();
        for c in cells {
            c.wake();
        }
    }
}
