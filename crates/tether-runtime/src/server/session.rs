//! One task per session: drives its [`ServerSession`] over whichever
//! transport currently carries it, through grace, until it ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_proto::{CloseCode, Frame, SendError, ServerSession, SessionEvent, SessionId, Transmit, TransportId};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;

use super::{Inner, ServerEvent, SessionInfo};
use crate::driver::{idle_sleep, now, rearm, recv};
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
}

/// A session shared between its task, the handshakes that resume it, and
/// the application's handle.
pub(crate) struct SessionCell {
    state: Mutex<State>,
    wake: Notify,
}

impl SessionCell {
    pub(crate) fn new(core: ServerSession) -> Self {
        SessionCell { state: Mutex::new(State { core, incoming: None, peer: None, user: None }), wake: Notify::new() }
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

/// Hands events to the application. When its queue is full, returns the
/// wait for room, boxed: that future is large (about 300 bytes) and only
/// needed when the application falls behind, while its room would
/// otherwise be reserved in every idle session's task.
fn emit(inner: &Inner, events: Vec<ServerEvent>) -> Option<Pin<Box<impl Future<Output = ()> + '_>>> {
    let mut rest = events.into_iter();
    while let Some(e) = rest.next() {
        match inner.events.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return None,
            Err(TrySendError::Full(e)) => {
                return Some(Box::pin(async move {
                    for e in std::iter::once(e).chain(rest) {
                        if inner.events.send(e).await.is_err() {
                            return;
                        }
                    }
                }))
            }
        }
    }
    None
}

/// Starts the task that drives a session from its first transport until it
/// ends.
pub(crate) fn spawn(inner: Arc<Inner>, id: SessionId, cell: Arc<SessionCell>, first: Incoming) {
    let kind = first.transport.kind();
    let task = Task {
        inner,
        id,
        cell,
        kind,
        first_peer: first.peer,
        live: vec![(first.tid, first.transport)],
        events: Vec::new(),
    };
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
    /// Events taken from the core, to hand to the application.
    events: Vec<ServerEvent>,
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
            let user = self.cell.lock().user.clone();
            let opened = ServerEvent::Opened { session: self.id, peer: self.first_peer, kind: self.kind, user };
            if let Some(wait) = emit(&self.inner, vec![opened]) {
                wait.await;
            }
            let sleep = idle_sleep();
            tokio::pin!(sleep);
            loop {
                let next = self.turn();
                // Taken, not drained: the storage goes back once sent.
                if let Some(wait) = emit(&self.inner, std::mem::take(&mut self.events)) {
                    wait.await;
                }
                let deadline = match next {
                    Next::Stop => return,
                    Next::Wait(deadline) => deadline,
                };
                rearm(sleep.as_mut(), deadline);
                tokio::select! {
                    r = recv(self.live.first_mut().map(|(_, t)| t)) => self.received(r),
                    () = self.cell.wake.notified() => {}
                    () = &mut sleep => self.cell.lock().core.handle_timeout(now()),
                }
            }
        }
    }

    /// Takes a resumed transport, carries out the core's transmits, collects
    /// its events, and says when to wake next.
    fn turn(&mut self) -> Next {
        let live = &mut self.live;
        let mut st = self.cell.lock();
        if let Some(inc) = st.incoming.take() {
            live.push((inc.tid, inc.transport));
        }
        while let Some(t) = st.core.poll_transmit() {
            match t {
                Transmit::Send { transport, frame } => {
                    if let Some((_, t)) = live.iter_mut().find(|(tid, _)| *tid == transport) {
                        t.queue(&frame);
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
        let id = self.id;
        while let Some(e) = st.core.poll_event() {
            self.events.push(match e {
                SessionEvent::Message(payload) => ServerEvent::Message { session: id, payload },
                SessionEvent::Detached { reason } => ServerEvent::Detached { session: id, reason },
                SessionEvent::Resumed { replayed } => {
                    let (kind, peer) = st.peer.unwrap_or((self.kind, self.first_peer));
                    ServerEvent::Resumed { session: id, replayed, peer, kind }
                }
                SessionEvent::Ended { reason, unacked } => ServerEvent::Ended { session: id, reason, unacked },
                SessionEvent::PingPayload(payload) => {
                    // Informational: never worth delaying this session (its
                    // PONG is written after the emit) when the application
                    // lags, so dropped if the queue is full.
                    if self.inner.ping_events {
                        let _ = self.inner.events.try_send(ServerEvent::PingPayload { session: id, payload });
                    }
                    continue;
                }
                _ => continue,
            });
        }
        let (deadline, ended, current) = (st.core.poll_timeout(), st.core.is_ended(), st.core.transport());
        drop(st);
        // Anything the core no longer names is not ours to keep.
        live.retain(|(tid, _)| Some(*tid) == current);
        if live.capacity() > 1 {
            live.shrink_to_fit(); // a resume grew it; an idle session keeps one slot
        }
        if ended || self.inner.stop.is_cancelled() {
            self.inner.registry().remove(&id);
            return Next::Stop;
        }
        Next::Wait(deadline)
    }

    /// A read on the current transport finished.
    fn received(&mut self, r: Result<Bytes, RecvError>) {
        let Some(&(tid, _)) = self.live.first() else { return };
        let mut st = self.cell.lock();
        match r {
            Ok(bytes) => match Frame::decode(&bytes, self.inner.cfg.max_frame) {
                Ok(frame) => {
                    let heartbeat = frame.is_heartbeat();
                    if matches!(frame, Frame::Ping { .. }) {
                        self.inner.pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if !heartbeat {
                        tracing::trace!(session = %self.id, kind = frame.kind(), len = bytes.len(), "frame in");
                    } else if self.inner.log_heartbeats {
                        tracing::debug!(session = %self.id, kind = frame.kind(), len = bytes.len(), "heartbeat in");
                    }
                    st.core.handle_frame(now(), tid, frame);
                }
                Err(e) => st.core.handle_decode_error(now(), tid, e),
            },
            Err(RecvError::Decode(e)) => st.core.handle_decode_error(now(), tid, e),
            Err(RecvError::Io(e)) => {
                tracing::debug!(session = %self.id, %e, "transport ended");
                self.live.clear();
                st.core.handle_transport_closed(now(), tid);
            }
        }
    }
}
