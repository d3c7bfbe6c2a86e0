//! One task per session: drives its [`ServerSession`] over whichever
//! transport currently carries it, through grace, until it ends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tether_proto::{CloseCode, Frame, SendError, ServerSession, SessionEvent, SessionId, Transmit, TransportId};
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
    /// A transport that passed a resume, waiting for the task to take it.
    pub(crate) incoming: Option<Incoming>,
    /// Kind and address of the latest transport.
    pub(crate) peer: Option<(Kind, SocketAddr)>,
}

/// A session shared between its task, the handshakes that resume it, and
/// the application's handle.
pub(crate) struct SessionCell {
    state: Mutex<State>,
    wake: Notify,
}

impl SessionCell {
    pub(crate) fn new(core: ServerSession) -> Self {
        SessionCell { state: Mutex::new(State { core, incoming: None, peer: None }), wake: Notify::new() }
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
        }
    }
}

/// Time allowed to flush a CLOSE or REJECT to a peer before giving up.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

pub(crate) async fn run(inner: Arc<Inner>, id: SessionId, cell: Arc<SessionCell>, first: Incoming) {
    let kind = first.transport.kind();
    let _ = inner.events.send(ServerEvent::Opened { session: id, peer: first.peer, kind }).await;
    let mut live: Vec<(TransportId, Transport)> = vec![(first.tid, first.transport)];
    let sleep = idle_sleep();
    tokio::pin!(sleep);
    let mut events = Vec::new();
    loop {
        let (deadline, ended, current) = {
            let mut st = cell.lock();
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
            while let Some(e) = st.core.poll_event() {
                events.push(match e {
                    SessionEvent::Message(payload) => ServerEvent::Message { session: id, payload },
                    SessionEvent::Detached { reason } => ServerEvent::Detached { session: id, reason },
                    SessionEvent::Resumed { replayed } => {
                        let (kind, peer) = st.peer.unwrap_or((kind, first.peer));
                        ServerEvent::Resumed { session: id, replayed, peer, kind }
                    }
                    SessionEvent::Ended { reason, unacked } => ServerEvent::Ended { session: id, reason, unacked },
                    _ => continue,
                });
            }
            (st.core.poll_timeout(), st.core.is_ended(), st.core.transport())
        };
        // Anything the core no longer names is not ours to keep.
        live.retain(|(tid, _)| Some(*tid) == current);
        if ended {
            inner.registry().remove(&id);
        }
        for e in events.drain(..) {
            let _ = inner.events.send(e).await;
        }
        if ended {
            return;
        }
        rearm(sleep.as_mut(), deadline);
        tokio::select! {
            r = recv(live.first_mut().map(|(_, t)| t)) => {
                let Some((tid, _)) = live.first() else { continue };
                let tid = *tid;
                let mut st = cell.lock();
                match r {
                    Ok(bytes) => match Frame::decode(&bytes, inner.cfg.max_frame) {
                        Ok(frame) => st.core.handle_frame(now(), tid, frame),
                        Err(e) => st.core.handle_decode_error(now(), tid, e),
                    },
                    Err(RecvError::Decode(e)) => st.core.handle_decode_error(now(), tid, e),
                    Err(RecvError::Io(e)) => {
                        tracing::debug!(session = %id, %e, "transport ended");
                        live.clear();
                        st.core.handle_transport_closed(now(), tid);
                    }
                }
            }
            () = cell.wake.notified() => {}
            () = &mut sleep => cell.lock().core.handle_timeout(now()),
            () = inner.stop.cancelled() => {
                inner.registry().remove(&id);
                return;
            }
        }
    }
}
