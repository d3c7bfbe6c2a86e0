//! One task per session: drives its [`ServerSession`] over whichever
//! transport currently carries it, through grace, until it ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_proto::frame::kind;
use tether_proto::{CloseCode, SendError, ServerSession, SessionEvent, SessionId, Transmit, TransportId};
use tokio::sync::Notify;

use super::{stored, Inner, ServerEvent, SessionInfo};
use crate::driver::{idle_sleep, now, rearm, recv};
use crate::outbox::{Outbox, Room};
use crate::store::Fence;
use crate::transport::{self, Kind, RecvError, Transport};

/// A transport handed to the session task by a handshake.
pub(crate) struct Incoming {
    pub(crate) tid: TransportId,
    pub(crate) transport: Transport,
    pub(crate) peer: SocketAddr,
}

pub(crate) struct State {
    pub(crate) core: ServerSession,
    /// A transport that passed a resume, waiting for the task to take it
    /// (boxed: rarely there, and every idle session holds this slot).
    pub(crate) incoming: Option<Box<Incoming>>,
    /// Kind and address of the latest transport.
    pub(crate) peer: Option<(Kind, SocketAddr)>,
    /// Who the authenticator said opened the session.
    pub(crate) user: Option<Arc<str>>,
    /// With a store: the fence held and what was written (boxed: an idle
    /// session without a store pays one pointer).
    pub(crate) durable: Option<Box<Durable>>,
}

/// A store-backed session's standing in the store.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// The fence this node holds.
    pub(crate) fence: Fence,
    /// The highest client ack the store was told of.
    pub(crate) stored_ack: u64,
    /// A write of the ack is in flight.
    pub(crate) acking: bool,
    /// The client's proven token as the store knows it (None: the one the
    /// session had when it came here), and whether a write is in flight.
    pub(crate) stored_token: Option<tether_proto::TokenHash>,
    pub(crate) confirming: bool,
    /// This node stopped carrying the session (claimed elsewhere, or
    /// replaced here by a fresher copy): `Some(true)` tells the application.
    pub(crate) moved: Option<bool>,
    /// The session's end was written.
    pub(crate) ended: bool,
    /// Restored from the store and not attached yet: its core's detach is
    /// its restore, and the outage began at `outage_since` (known when a
    /// copy held here had detached; None: carried on from another node).
    pub(crate) restored: bool,
    pub(crate) outage_since: Option<Instant>,
}

/// A session shared between its task, the handshakes that resume it, and
/// the application's handle.
pub(crate) struct SessionCell {
    state: Mutex<State>,
    wake: Notify,
}

impl State {
    /// Since when the session has been without a transport, as far as this
    /// server knows (None: attached, ended, or not known here).
    pub(crate) fn outage_since(&self) -> Option<Instant> {
        match &self.durable {
            Some(d) if d.restored => d.outage_since,
            _ => self.core.detached_since(),
        }
    }
}

impl SessionCell {
    pub(crate) fn new(core: ServerSession) -> Self {
        let state = State { core, incoming: None, peer: None, user: None, durable: None };
        SessionCell { state: Mutex::new(state), wake: Notify::new() }
    }

    /// The fence held, with a store.
    pub(crate) fn fence(&self) -> Option<Fence> {
        self.lock().durable.as_ref().map(|d| d.fence)
    }

    /// Stops carrying the session here if this copy still holds `fence`
    /// (None: whatever it holds); `announce` tells the application.
    pub(crate) fn moved(&self, fence: Option<Fence>, announce: bool) -> bool {
        let mut st = self.lock();
        let Some(d) = st.durable.as_mut() else { return false };
        if fence.is_some_and(|f| f != d.fence) || d.moved.is_some() {
            return false;
        }
        d.moved = Some(announce);
        drop(st);
        self.wake();
        true
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn send(&self, payload: Bytes) -> Result<u64, SendError> {
        let r = self.lock().core.send(now(), payload);
        self.wake();
        r
    }

    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.lock().core.close(code, reason);
        self.wake();
    }

    /// Asks the attached client to come back after `delay`; false if none is attached.
    pub(crate) fn go_away(&self, delay: Duration) -> bool {
        let mut st = self.lock();
        let attached = st.core.transport().is_some();
        st.core.go_away(now(), delay, "the server is draining; reconnect after the delay given");
        drop(st);
        self.wake();
        attached
    }

    pub(crate) fn info(&self) -> SessionInfo {
        let st = self.lock();
        SessionInfo {
            id: st.core.id(),
            attached: st.core.transport().is_some(),
            peer: st.peer,
            silent_for: now().saturating_duration_since(st.core.last_heard()),
            buffered: st.core.buffered(),
            user: st.user.clone(),
        }
    }
}

/// Time allowed to flush a CLOSE or REJECT to a peer before giving up.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Starts the task that drives a session from its first transport until it
/// ends.
pub(crate) fn spawn(inner: Arc<Inner>, id: SessionId, cell: Arc<SessionCell>, first: Incoming) {
    let (kind, peer) = (first.transport.kind(), first.peer);
    spawn_with(inner, id, cell, kind, peer, vec![(first.tid, first.transport)]);
}

/// Starts the task of a session carried on from the store, detached until
/// its resume hands it a transport.
pub(crate) fn spawn_detached(inner: Arc<Inner>, id: SessionId, cell: Arc<SessionCell>, kind: Kind, peer: SocketAddr) {
    spawn_with(inner, id, cell, kind, peer, Vec::new());
}

fn spawn_with(
    inner: Arc<Inner>,
    id: SessionId,
    cell: Arc<SessionCell>,
    kind: Kind,
    first_peer: SocketAddr,
    live: Vec<(TransportId, Transport)>,
) {
    let task = Task { inner, id, cell, kind, first_peer, live, outbox: Outbox::new() };
    tokio::spawn(task.run());
}

/// What a session's task owns. Every idle session holds one of these (and
/// the future of [`Task::run`]), so its size is watched: the synchronous
/// work lives in methods, keeping the future's own locals few.
struct Task {
    inner: Arc<Inner>,
    id: SessionId,
    cell: Arc<SessionCell>,
    kind: Kind,
    first_peer: SocketAddr,
    /// The transports the core still names: usually one, briefly two while
    /// a resume replaces a transport.
    live: Vec<(TransportId, Transport)>,
    /// Room in the application's event queue.
    outbox: Outbox<ServerEvent>,
}

/// What the task does after a turn with the core.
enum Next {
    Wait(Option<Instant>),
    Stop,
}

impl Task {
    // Not an `async fn`: that would keep both the argument and a moved copy
    // of it in the future (rustc #62958); the block uses `self` in place.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl Future<Output = ()> {
        async move {
            let sleep = idle_sleep();
            tokio::pin!(sleep);
            loop {
                let deadline = match self.turn() {
                    Next::Stop => return,
                    Next::Wait(deadline) => deadline,
                };
                rearm(sleep.as_mut(), deadline);
                // Never waits for the application: reading, PONGs and acks
                // go on while its queue is full (the outbox wakes us).
                tokio::select! {
                    r = recv(self.live.first_mut().map(|(_, t)| t)) => self.received(r),
                    () = self.cell.wake.notified() => {}
                    () = &mut sleep => self.timeout(),
                    () = self.outbox.wait() => {}
                }
            }
        }
    }

    /// Takes a resumed transport, carries out the core's transmits, collects
    /// its events, and says when to wake next.
    fn turn(&mut self) -> Next {
        let live = &mut self.live;
        let mut st = self.cell.lock();
        if let Some(announce) = st.durable.as_ref().and_then(|d| d.moved) {
            drop(st);
            return self.leave(announce);
        }
        if let Some(inc) = st.incoming.take() {
            live.push((inc.tid, inc.transport));
        }
        let mut written = 0;
        while let Some(t) = st.core.poll_transmit() {
            match t {
                Transmit::Send { transport, frame } => {
                    if let Some((_, t)) = live.iter_mut().find(|(tid, _)| *tid == transport) {
                        t.queue(&frame);
                        written += frame.encoded_len() as u64;
                    }
                }
                Transmit::Close { transport, flush } => {
                    if let Some(i) = live.iter().position(|(tid, _)| *tid == transport) {
                        let (_, t) = live.swap_remove(i);
                        if flush {
                            tokio::spawn(transport::close_with(t, None, CLOSE_FLUSH));
                        }
                    }
                }
                Transmit::Connect { .. } => {} // servers never dial
            }
        }
        if written > 0 {
            self.inner.bytes_out.fetch_add(written, Ordering::Relaxed);
        }
        // Events go to the application only as far as its queue has room;
        // the rest wait in the core, unacknowledged.
        let app =
            AppView { session: self.id, kind: self.kind, first_peer: self.first_peer, pings: self.inner.ping_events };
        while st.core.has_events() {
            let permit = match self.outbox.take_room(&self.inner.events) {
                Room::Ready(p) => p,
                Room::Full => break,
                Room::Gone => {
                    while st.core.poll_event().is_some() {}
                    break;
                }
            };
            let Some(e) = st.core.poll_event() else { break };
            if let Some(e) = to_app(&app, e, &st) {
                permit.send(e); // the sender it returns is a clone: dropped
            }
        }
        if !st.core.has_events() {
            self.outbox.idle();
        }
        let (deadline, ended, current) = (st.core.poll_timeout(), st.core.is_ended(), st.core.transport());
        let pending = st.core.has_events();
        if st.durable.is_some() {
            stored::after_turn(&self.inner, &self.cell, self.id, &mut st);
        }
        drop(st);
        // Anything the core no longer names is not ours to keep.
        live.retain(|(tid, _)| Some(*tid) == current);
        if live.capacity() > 1 {
            live.shrink_to_fit(); // a resume grew it; an idle session keeps one slot
        }
        // An ended session lives on until the application has taken its
        // last events (`send` meanwhile reports why it ended).
        if (ended && !pending) || self.inner.stop.is_cancelled() {
            self.unregister();
            return Next::Stop;
        }
        Next::Wait(deadline)
    }

    /// Removes this session from the registry, unless a fresher copy of it
    /// took its place there.
    fn unregister(&self) {
        let mut reg = self.inner.registry();
        if reg.get(&self.id).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) {
            reg.remove(&self.id);
        }
    }

    /// This node no longer carries the session: its transports are told to
    /// resume (another node, or a fresher copy here, carries it on).
    fn leave(&mut self, announce: bool) -> Next {
        let bye = || {
            let text = "this node no longer carries the session; resume to continue";
            Some(tether_proto::Frame::close(CloseCode::Resync, Duration::ZERO, text))
        };
        for (_, t) in self.live.drain(..) {
            tokio::spawn(transport::close_with(t, bye(), CLOSE_FLUSH));
        }
        if let Some(inc) = self.cell.lock().incoming.take() {
            tokio::spawn(transport::close_with(inc.transport, bye(), CLOSE_FLUSH));
        }
        self.unregister();
        if announce {
            let (events, session) = (self.inner.events.clone(), self.id);
            tokio::spawn(async move {
                let _ = events.send(ServerEvent::Moved { session }).await;
            });
        }
        Next::Stop
    }

    /// A read on the current transport finished.
    fn received(&mut self, r: Result<Bytes, RecvError>) {
        let Some(&(tid, _)) = self.live.first() else { return };
        let mut st = self.cell.lock();
        match r {
            Ok(bytes) => {
                self.inner.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let Some(kind) = st.core.handle_bytes(now(), tid, &bytes) else { return };
                let heartbeat = matches!(kind, kind::PING | kind::PONG);
                if kind == kind::PING {
                    self.inner.pings.fetch_add(1, Ordering::Relaxed);
                }
                if !heartbeat {
                    tracing::trace!(session = %self.id, kind, len = bytes.len(), "frame in");
                } else if self.inner.log_heartbeats {
                    tracing::debug!(session = %self.id, kind, len = bytes.len(), "heartbeat in");
                }
            }
            Err(RecvError::Decode(e)) => st.core.handle_decode_error(now(), tid, e),
            Err(RecvError::Io(e)) => {
                tracing::debug!(session = %self.id, %e, "transport ended");
                self.live.clear();
                let attached = st.core.transport() == Some(tid);
                st.core.handle_transport_closed(now(), tid);
                let silence = attached.then(|| detach_silence(&st.core)).flatten();
                drop(st);
                self.lost(silence, false);
            }
        }
    }

    /// A deadline passed: a transport silent for the idle timeout is found
    /// lost (observed, with the silence before it); a resync is not.
    fn timeout(&self) {
        let mut st = self.cell.lock();
        let attached = st.core.transport().is_some();
        st.core.handle_timeout(now());
        let silence = attached.then(|| detach_silence(&st.core)).flatten();
        let idle = st.core.idle_timeout();
        drop(st);
        self.lost(silence.filter(|s| *s >= idle), true);
    }

    fn lost(&self, silence: Option<Duration>, timed_out: bool) {
        if let (Some(s), Some(o)) = (silence, &self.inner.observer) {
            o.transport_lost(s, timed_out);
        }
    }
}

/// For a session that just detached: the time from the last frame heard
/// to the detach (None if it did not detach).
fn detach_silence(core: &ServerSession) -> Option<Duration> {
    core.detached_since().map(|since| since.saturating_duration_since(core.last_heard()))
}

/// What a session's events are labelled with for the application.
struct AppView {
    session: SessionId,
    kind: Kind,
    first_peer: SocketAddr,
    /// Whether PING payloads are wanted.
    pings: bool,
}

/// The application's form of a core event (None: not wanted).
fn to_app(app: &AppView, e: SessionEvent, st: &State) -> Option<ServerEvent> {
    let session = app.session;
    Some(match e {
        SessionEvent::Opened => {
            ServerEvent::Opened { session, peer: app.first_peer, kind: app.kind, user: st.user.clone() }
        }
        SessionEvent::Message(payload) => ServerEvent::Message { session, seq: st.core.last_taken(), payload },
        SessionEvent::Detached { reason } => ServerEvent::Detached { session, reason },
        SessionEvent::Resumed { replayed } => {
            let (kind, peer) = st.peer.unwrap_or((app.kind, app.first_peer));
            ServerEvent::Resumed { session, replayed, peer, kind, user: st.user.clone() }
        }
        SessionEvent::Ended { reason, unacked } => ServerEvent::Ended { session, reason, unacked },
        SessionEvent::PingPayload(payload) if app.pings => ServerEvent::PingPayload { session, payload },
        _ => return None,
    })
}
