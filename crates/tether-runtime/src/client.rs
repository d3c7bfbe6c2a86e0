//! The reconnecting client: one task drives a [`tether_proto::Client`] over
//! real transports. It connects, detects dead links, reconnects with the
//! core's backoff, resumes and replays — the application only sends and
//! receives.
//!
//! The task's loop (the drive contract of `tether-proto`):
//! 1. carry out every [`Transmit`] (dial, queue a frame, close);
//! 2. hand events to the application as far as its queue has room — never
//!    waiting for it: events left in the core are not yet delivered (their
//!    acks are withheld), and the heartbeat goes on meanwhile;
//! 3. wait for the first of: a frame or error on the transport (queued
//!    frames are written meanwhile), a dial reaching the server or
//!    finishing (several race while connecting, PROTOCOL §9.7), a command, or the
//!    core's next deadline — the timer is re-armed only when the deadline
//!    moves earlier, so frames that push it later cost nothing.
//!
//! Commands ([`ClientHandle::send`] and friends) lock the core briefly, act
//! on it synchronously (so `send` returns the core's verdict, e.g.
//! backpressure) and wake the task.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tether_proto::{
    ClientConfig, ClientEvent, CloseCode, ConfigError, Rng, SendError, SessionId, Transmit, TransportId,
};
use tokio::sync::{mpsc, Notify};

use crate::driver::{idle_sleep, now, rearm, recv};
use crate::endpoint::{self, DialConfig, Endpoint};
use crate::outbox::{Outbox, Room};
use crate::transport::{self, Kind, RecvError, Transport};
use crate::tune::{SocketReport, SocketTuning};

/// Everything a [`Client`] needs.
#[derive(Clone)]
pub struct ClientOptions {
    /// Protocol settings (heartbeat, backoff, replay bounds).
    pub core: ClientConfig,
    /// Socket options, TLS trust and frame limit for each connection.
    pub dial: DialConfig,
    /// Watch the OS for address and link changes (Linux netlink) and probe
    /// the link at once when one happens.
    pub watch_network: bool,
    /// Seed for the client's randomness (tests); None draws from the OS.
    pub seed: Option<u64>,
    /// Gives the credential of each fresh session (a login token that has
    /// not expired), asked before its first connection; not for resumes,
    /// which the resume token proves. Replaces `core.auth` then. An error
    /// fails the attempt ([`Event::DialFailed`]), retried with backoff.
    pub token: Option<TokenSource>,
}

/// A credential source for [`ClientOptions::token`] (socket.io's `auth`
/// function, SignalR's `accessTokenFactory`).
pub type TokenSource = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// The credential asked of the [`TokenSource`] for the session being opened,
/// shared by the connections raced for it.
type TokenCell = Arc<tokio::sync::OnceCell<Result<Bytes, String>>>;

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("core", &self.core)
            .field("dial", &self.dial)
            .field("watch_network", &self.watch_network)
            .field("seed", &self.seed)
            .field("token", &self.token.as_ref().map(|_| "a token source"))
            .finish()
    }
}

impl ClientOptions {
    /// Options for a protocol configuration, with socket tuning derived
    /// from its heartbeat.
    pub fn new(core: ClientConfig) -> Self {
        let dial = DialConfig {
            tuning: SocketTuning::from_heartbeat(&core.heartbeat),
            tls: None,
            max_frame: core.max_frame,
            source: None,
        };
        ClientOptions { core, dial, watch_network: true, seed: None, token: None }
    }
}

/// What the client tells its application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A connection was opened (before the tether handshake).
    Dialed {
        /// The address reached.
        addr: SocketAddr,
        /// The transport.
        kind: Kind,
        /// The socket options in effect, read back from the kernel.
        socket: Option<SocketReport>,
    },
    /// A connection attempt failed.
    DialFailed {
        /// What went wrong.
        error: String,
    },
    /// The OS reported an address or link change.
    NetworkChanged,
    /// Everything the protocol core reports: connected, resumed,
    /// disconnected (with reason), reconnecting, message, RTT, session ended.
    Session(ClientEvent),
}

struct Shared {
    core: Mutex<tether_proto::Client>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, tether_proto::Client> {
        // A panic while holding the lock is a bug; the state is still the
        // core's own and safe to keep using.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running client: its handle and its events.
pub struct Client {
    handle: ClientHandle,
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

/// Sends and controls a running client; cheap to clone.
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
}

impl Client {
    /// Starts a client for `endpoint` on the current tokio runtime. It
    /// connects at once and keeps the session alive until
    /// [`ClientHandle::close`].
    pub fn start(endpoint: Endpoint, opts: ClientOptions) -> Result<Client, ConfigError> {
        let rng = match opts.seed {
            Some(s) => Rng::from_seed(s),
            None => Rng::from_entropy_bytes(entropy()),
        };
        let core = tether_proto::Client::new(opts.core.clone(), rng, now())?;
        let shared = Arc::new(Shared { core: Mutex::new(core), wake: Notify::new() });
        let (tx, events) = mpsc::channel(256);
        if opts.watch_network {
            crate::netwatch::spawn(Watched(Arc::downgrade(&shared)), tx.clone());
        }
        let task = tokio::spawn(drive(shared.clone(), endpoint, opts.dial, opts.token, tx));
        Ok(Client { handle: ClientHandle { shared }, events, task })
    }

    /// A handle for sending and control.
    pub fn handle(&self) -> ClientHandle {
        self.handle.clone()
    }

    /// The next event; None once the client is closed and every event was read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Closes the session and waits for the client task to finish.
    pub async fn shutdown(self) {
        self.handle.close();
        let Client { events, task, .. } = self;
        drop(events);
        let _ = task.await;
    }
}

impl ClientHandle {
    /// Queues a message. It is kept until the server acknowledges it,
    /// across reconnects and resumes; while disconnected it waits in the
    /// bounded replay buffer. Overflow returns an error, never drops.
    pub fn send(&self, payload: impl Into<Bytes>) -> Result<u64, SendError> {
        let r = self.shared.lock().send(now(), payload.into());
        self.shared.wake.notify_one();
        r
    }

    /// Tells the client the network changed: a live link is probed at
    /// once, a pending reconnect is attempted at once.
    pub fn network_changed(&self) {
        network_changed(&self.shared);
    }

    /// Application data to carry on every PING from now on (at most 1024
    /// bytes; e.g. the gateway's `{"rtt_ms": …}`, docs/GATEWAY.md §1.3).
    pub fn set_ping_payload(&self, payload: impl Into<Bytes>) {
        self.shared.lock().set_ping_payload(payload.into());
    }

    /// Ends the session (CLOSE 3000) and stops the client.
    pub fn close(&self) {
        self.shared.lock().close(now(), CloseCode::Normal, "client closed");
        self.shared.wake.notify_one();
    }

    /// The current session, if one is established or resumable.
    pub fn session_id(&self) -> Option<SessionId> {
        self.shared.lock().session_id()
    }

    /// True while a transport carries the session.
    pub fn is_established(&self) -> bool {
        self.shared.lock().is_established()
    }

    /// Resumes so far.
    pub fn resumes(&self) -> u64 {
        self.shared.lock().resumes()
    }

    /// Unacknowledged outgoing messages and their bytes.
    pub fn buffered(&self) -> (usize, usize) {
        self.shared.lock().buffered()
    }
}

fn network_changed(shared: &Shared) {
    shared.lock().handle_network_change(now(), None);
    shared.wake.notify_one();
}

/// 32 bytes from the OS's random source (falls back to time and addresses
/// if it is unavailable).
pub fn entropy() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        // No OS randomness: fall back to time and address entropy. Tokens
        // would be guessable, so say so loudly.
        tracing::error!("the OS random source failed; resume tokens are weak");
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        seed[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
    }
    seed
}

/// How far a dial got.
enum Dialed {
    /// TCP is open (the path works); the TLS and WebSocket handshakes follow.
    Reached(tokio::net::TcpStream, SocketAddr),
    /// The transport is open.
    Open(Transport, SocketAddr),
}

type DialFuture = Pin<Box<dyn Future<Output = io::Result<Dialed>> + Send>>;

/// The transports being opened, raced by the core (PROTOCOL §9.7).
#[derive(Default)]
struct Dials {
    open: Vec<(TransportId, DialFuture)>,
    /// How many were asked for since none was in flight: the next one
    /// starts with that address of the host's.
    nth: usize,
}

impl Dials {
    /// `token`: the fresh session's credential, asked first (once for all
    /// the connections raced for it).
    fn start(&mut self, tid: TransportId, ep: &Endpoint, cfg: &DialConfig, token: Option<(TokenSource, TokenCell)>) {
        self.nth = if self.open.is_empty() { 0 } else { self.nth + 1 };
        let (ep, cfg, nth) = (ep.clone(), cfg.clone(), self.nth);
        let f = async move {
            if let Some((source, cell)) = token {
                let got = cell.get_or_init(|| async move { source().await.map(Bytes::from) }).await;
                if let Err(e) = got {
                    return Err(io::Error::other(format!("no credential: the token source failed: {e}")));
                }
            }
            endpoint::connect(&ep, &cfg, nth).await.map(|(tcp, addr)| Dialed::Reached(tcp, addr))
        };
        self.open.push((tid, Box::pin(f)));
    }

    /// Goes on from TCP to the handshakes for dial `i`.
    fn handshake(&mut self, i: usize, ep: &Endpoint, cfg: &DialConfig, tcp: tokio::net::TcpStream, addr: SocketAddr) {
        let (ep, cfg) = (ep.clone(), cfg.clone());
        let f = async move { endpoint::handshake(&ep, &cfg, tcp).await.map(|t| Dialed::Open(t, addr)) };
        self.open[i].1 = Box::pin(f);
    }

    fn forget(&mut self, tid: TransportId) {
        self.open.retain(|(t, _)| *t != tid);
    }

    /// The next dial to make progress: its index, id and result.
    async fn next(&mut self) -> (usize, TransportId, io::Result<Dialed>) {
        if self.open.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for (i, (tid, f)) in self.open.iter_mut().enumerate() {
                if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                    return std::task::Poll::Ready((i, *tid, r));
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

async fn drive(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    dial_cfg: DialConfig,
    token: Option<TokenSource>,
    tx: mpsc::Sender<Event>,
) {
    let mut current: Option<(TransportId, Transport)> = None;
    // The credential of the fresh session being opened (with a token source).
    let mut fresh: Option<TokenCell> = None;
    let mut dials = Dials::default();
    let sleep = idle_sleep();
    tokio::pin!(sleep);
    // The runtime's own events (dials, network changes), ahead of the core's.
    let mut events = std::collections::VecDeque::new();
    let mut outbox = Outbox::new();
    loop {
        let (deadline, closed) = {
            let mut core = shared.lock();
            while let Some(t) = core.poll_transmit() {
                match t {
                    Transmit::Connect { transport } => {
                        // A failed source is asked again at the next attempt.
                        if fresh.as_ref().is_some_and(|c| matches!(c.get(), Some(Err(_)))) {
                            fresh = None;
                        }
                        let want = token
                            .as_ref()
                            .filter(|_| core.session_id().is_none())
                            .map(|source| (source.clone(), fresh.get_or_insert_with(TokenCell::default).clone()));
                        dials.start(transport, &endpoint, &dial_cfg, want);
                    }
                    Transmit::Send { transport, frame } => {
                        if let Some((tid, t)) = &mut current {
                            if *tid == transport {
                                t.queue(&frame);
                            }
                        }
                    }
                    Transmit::Close { transport, flush } => {
                        if current.as_ref().is_some_and(|(tid, _)| *tid == transport) {
                            if let Some((_, t)) = current.take() {
                                if flush {
                                    tokio::spawn(transport::close_with(t, None, Duration::from_secs(2)));
                                }
                            }
                        }
                        dials.forget(transport);
                    }
                }
            }
            while !events.is_empty() || core.has_events() {
                let permit = match outbox.take_room(&tx) {
                    Room::Ready(p) => p,
                    Room::Full => break,
                    // A dropped receiver only means nobody listens any more.
                    Room::Gone => {
                        events.clear();
                        while core.poll_event().is_some() {}
                        break;
                    }
                };
                match events.pop_front().or_else(|| core.poll_event().map(Event::Session)) {
                    Some(e) => {
                        if matches!(e, Event::Session(ClientEvent::Connected { .. })) {
                            fresh = None; // the next fresh session asks again
                        }
                        permit.send(e);
                    }
                    None => break,
                }
            }
            if events.is_empty() && !core.has_events() {
                outbox.idle();
            }
            if events.len() > MAX_LOCAL_EVENTS {
                events.drain(..events.len() - MAX_LOCAL_EVENTS); // dial reports: the newest matter
            }
            (core.poll_timeout(), core.is_closed())
        };
        if closed {
            if let Some((_, t)) = current.take() {
                transport::close_with(t, None, Duration::from_secs(2)).await;
            }
            // Nothing to keep alive any more: the last events (the session's
            // end, what it handed back) may wait for the application.
            outbox.idle();
            let rest: Vec<_> = {
                let mut core = shared.lock();
                events.drain(..).chain(std::iter::from_fn(|| core.poll_event().map(Event::Session))).collect()
            };
            for e in rest {
                let _ = tx.send(e).await;
            }
            return;
        }
        rearm(sleep.as_mut(), deadline);

        tokio::select! {
            r = recv(current.as_mut().map(|(_, t)| t)) => {
                let Some((tid, _)) = &current else { continue };
                let tid = *tid;
                let mut core = shared.lock();
                match r {
                    Ok(bytes) => core.handle_frame(now(), tid, &bytes),
                    Err(RecvError::Decode(e)) => core.handle_decode_error(now(), tid, e),
                    Err(RecvError::Io(e)) => {
                        tracing::debug!(%e, "transport ended");
                        current = None;
                        core.handle_transport_closed(now(), tid);
                    }
                }
            }
            (i, tid, r) = dials.next() => {
                match r {
                    Ok(Dialed::Reached(tcp, addr)) => {
                        dials.handshake(i, &endpoint, &dial_cfg, tcp, addr);
                        shared.lock().handle_reachable(now(), tid);
                    }
                    Ok(Dialed::Open(t, addr)) => {
                        dials.forget(tid);
                        let socket = t.tcp().and_then(|s| SocketReport::read(s).ok());
                        events.push_back(Event::Dialed { addr, kind: t.kind(), socket });
                        current = Some((tid, t));
                        let mut core = shared.lock();
                        if let Some(Some(Ok(auth))) = fresh.as_ref().map(|c| c.get()) {
                            if let Err(e) = core.set_auth(auth.clone()) {
                                tracing::warn!(%e, "the token source's credential is not used");
                            }
                        }
                        core.handle_connected(now(), tid);
                    }
                    Err(e) => {
                        dials.forget(tid);
                        events.push_back(Event::DialFailed { error: e.to_string() });
                        shared.lock().handle_transport_closed(now(), tid);
                    }
                }
            }
            () = shared.wake.notified() => {}
            () = &mut sleep => {
                shared.lock().handle_timeout(now());
            }
            () = outbox.wait() => {}
        }
    }
}

/// Dial reports kept while the application does not read events.
const MAX_LOCAL_EVENTS: usize = 64;

/// Lets the network watcher reach a client without keeping it alive.
pub(crate) struct Watched(std::sync::Weak<Shared>);

impl Watched {
    pub(crate) fn notify(&self) -> bool {
        match self.0.upgrade() {
            Some(s) => {
                network_changed(&s);
                true
            }
            None => false,
        }
    }
}
