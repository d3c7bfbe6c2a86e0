//! The server side, in three pieces that every server composes the same
//! way: [`admit`] routes a new transport's first frame (open, resume or
//! refuse), [`ServerSession`] is one session driven by its own timer, and a
//! table of sessions. The runtime keeps sessions in a registry with one task
//! each; [`Server`] is the same composition in one value, for the simulator
//! and tests.
//!
//! ```text
//! accept ─▶ handshake timer ─▶ first frame ─▶ admit ─┬─ Opened: register, drive
//!                                                    ├─ Resumed: Sessions::claim → the session's
//!                                                    │           driver takes the transport
//!                                                    └─ Refused: frame, flush, close
//! session: handle_bytes / handle_timeout / send ─▶ poll_transmit, poll_event, poll_timeout
//! ```

mod admit;
mod record;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use admit::{admit, Admission, Admitted, Refusal, Sessions};
pub use record::{RecordError, SessionRecord};
pub use session::{ServerSession, SessionEvent};

use crate::error::{CloseCode, ConfigError, RejectReason, SendError};
use crate::frame::{self, DecodeError};
use crate::rng::Rng;
use crate::stream::{AckConfig, ReceiveWindow, ReplayLimits};
use crate::token::SessionId;
use crate::{Transmit, TransportId};

/// Server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// How long a detached session is kept for a resume (the seed's 60 s).
    pub grace: Duration,
    /// Longest a new transport may take to send a valid HELLO.
    pub handshake_timeout: Duration,
    /// Shortest idle timeout a client may ask for.
    pub min_idle_timeout: Duration,
    /// Longest idle timeout a client may ask for.
    pub max_idle_timeout: Duration,
    /// Largest frame the server accepts.
    pub max_frame: u32,
    /// Bounds on unacknowledged messages per session.
    pub replay: ReplayLimits,
    /// Ack pacing.
    pub ack: AckConfig,
    /// Client messages held for a busy application before further ones are
    /// deferred (§7.8).
    pub receive_window: ReceiveWindow,
    /// Debug switch: when false, silent transports are never dropped.
    pub enforce_idle: bool,
    /// Acks cover only what the application committed with
    /// [`ServerSession::commit`], not everything it took: the ack gate of a
    /// store-backed server (docs/CLUSTER.md).
    pub commit_acks: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grace: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            min_idle_timeout: Duration::from_secs(5),
            max_idle_timeout: Duration::from_secs(600),
            max_frame: frame::DEFAULT_MAX_FRAME,
            replay: ReplayLimits::server_default(),
            ack: AckConfig::default(),
            receive_window: ReceiveWindow::default(),
            enforce_idle: true,
            commit_acks: false,
        }
    }
}

impl ServerConfig {
    /// Checks every setting; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.replay.validate()?;
        self.receive_window.validate()?;
        if self.grace.is_zero() || self.grace.as_millis() > u128::from(u32::MAX) {
            return Err(ConfigError::new(
                "grace",
                format!("{:?} is out of range", self.grace),
                "use a duration between 1ms and 49 days (60s is typical)",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::new("handshake_timeout", "is 0", "use a few seconds, e.g. 10s"));
        }
        if self.min_idle_timeout.is_zero() || self.max_idle_timeout < self.min_idle_timeout {
            return Err(ConfigError::new(
                "max_idle_timeout",
                format!("range {:?}..={:?} is empty", self.min_idle_timeout, self.max_idle_timeout),
                "set 0 < min_idle_timeout <= max_idle_timeout",
            ));
        }
        if !(frame::MIN_MAX_FRAME..=frame::MAX_MAX_FRAME).contains(&self.max_frame) {
            return Err(ConfigError::new(
                "max_frame",
                format!("{} is outside 16384..=16777216", self.max_frame),
                "pick a frame limit within the protocol's range",
            ));
        }
        Ok(())
    }

    /// The idle timeout granted for a client's request.
    pub fn grant_idle_timeout(&self, requested_ms: u32) -> Duration {
        Duration::from_millis(u64::from(requested_ms)).clamp(self.min_idle_timeout, self.max_idle_timeout)
    }
}

/// A whole server in one value: handshake timers, the session table and
/// [`admit`], each session driven by its own timer exactly as the runtime's
/// session tasks drive theirs. The simulator runs this; a runtime with many
/// sessions drives [`ServerSession`]s from their own tasks instead.
#[derive(Debug)]
pub struct Server {
    cfg: Arc<ServerConfig>,
    rng: Rng,
    // Ordered maps: timeouts are handled in a fixed order, so a run replays
    // exactly from its seed.
    handshakes: BTreeMap<TransportId, Instant>,
    owners: HashMap<TransportId, SessionId>,
    sessions: Table,
    next_tid: u64,
    refusal: Option<(RejectReason, Duration)>,
    /// Transmits for transports no session owns (refusals).
    transmits: std::collections::VecDeque<Transmit>,
    rejects: Vec<(TransportId, RejectReason)>,
}

#[derive(Debug, Default)]
struct Table(BTreeMap<SessionId, ServerSession>);

impl Sessions for Table {
    fn claim<R>(&mut self, id: SessionId, claim: impl FnOnce(&mut ServerSession) -> R) -> Option<R> {
        self.0.get_mut(&id).map(claim)
    }
}

impl Server {
    /// A server with no sessions. Validates the settings.
    pub fn new(cfg: ServerConfig, rng: Rng) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Server {
            cfg: Arc::new(cfg),
            rng,
            handshakes: BTreeMap::new(),
            owners: HashMap::new(),
            sessions: Table::default(),
            next_tid: 0,
            refusal: None,
            transmits: Default::default(),
            rejects: Vec::new(),
        })
    }

    /// Sessions currently held (attached, within grace, or ended with
    /// events the application has not taken yet).
    pub fn session_count(&self) -> usize {
        self.sessions.0.values().filter(|s| !s.is_ended()).count()
    }

    /// One session, for inspection.
    pub fn session(&self, id: SessionId) -> Option<&ServerSession> {
        self.sessions.0.get(&id)
    }

    /// Every handshake refused with a REJECT, in order.
    pub fn rejects(&self) -> &[(TransportId, RejectReason)] {
        &self.rejects
    }

    /// Refuse new handshakes with this reason and retry-after (admission
    /// control, drain); None accepts again. Resumes are refused too when the
    /// reason is `ShuttingDown`.
    pub fn set_refusal(&mut self, refusal: Option<(RejectReason, Duration)>) {
        self.refusal = refusal;
    }

    /// A transport was accepted; its first frame must arrive within the
    /// handshake timeout.
    pub fn handle_accept(&mut self, now: Instant) -> TransportId {
        self.next_tid += 1;
        let tid = TransportId(self.next_tid);
        self.handshakes.insert(tid, now + self.cfg.handshake_timeout);
        tid
    }

    /// A whole frame arrived on `tid`.
    pub fn handle_frame(&mut self, now: Instant, tid: TransportId, bytes: &[u8]) {
        if self.handshakes.remove(&tid).is_some() {
            let a = Admission { now, tid, refusal: self.refusal, fresh_token: None };
            match admit(a, &self.cfg, &mut self.rng, bytes, &mut self.sessions, |_| Ok(())) {
                Admitted::Opened { session, .. } => {
                    let id = session.id();
                    self.sessions.0.insert(id, *session);
                    self.owners.insert(tid, id);
                }
                Admitted::Resumed { session, .. } => {
                    self.owners.insert(tid, session);
                }
                Admitted::Refused(r) => self.refuse(tid, r),
            }
            return;
        }
        if let Some(s) = self.owner(tid) {
            s.handle_bytes(now, tid, bytes);
        }
    }

    /// Bytes on `tid` could not be cut into a frame (TCP framing).
    pub fn handle_decode_error(&mut self, now: Instant, tid: TransportId, err: DecodeError) {
        if self.handshakes.remove(&tid).is_some() {
            return self.refuse(tid, Refusal::decode(&err));
        }
        if let Some(s) = self.owner(tid) {
            s.handle_decode_error(now, tid, err);
        }
    }

    /// Transport `tid` closed or failed.
    pub fn handle_transport_closed(&mut self, now: Instant, tid: TransportId) {
        self.handshakes.remove(&tid);
        if let Some(s) = self.owner(tid) {
            s.handle_transport_closed(now, tid);
        }
        self.owners.remove(&tid);
    }

    /// Acts on every deadline at or before `now`: expired handshakes, and
    /// each session whose own timer is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<_> = self.handshakes.iter().filter(|(_, d)| **d <= now).map(|(t, _)| *t).collect();
        for tid in expired {
            self.handshakes.remove(&tid);
            self.refuse(tid, Refusal::handshake_timeout());
        }
        for s in self.sessions.0.values_mut() {
            if s.poll_timeout().is_some_and(|d| d <= now) {
                s.handle_timeout(now);
            }
        }
    }

    /// Queues an application message for a session.
    pub fn send(&mut self, now: Instant, id: SessionId, payload: Bytes) -> Result<u64, SendError> {
        let s = self.sessions.0.get_mut(&id).ok_or(SendError::NoSession)?;
        s.send(now, payload)
    }

    /// Queues a message whose seq a durable store assigned
    /// ([`ServerSession::send_at`]).
    pub fn send_at(&mut self, now: Instant, id: SessionId, seq: u64, payload: Bytes) -> Result<bool, SendError> {
        let s = self.sessions.0.get_mut(&id).ok_or(SendError::NoSession)?;
        s.send_at(now, seq, payload)
    }

    /// The effects of a session's client messages through `seq` are
    /// durable ([`ServerSession::commit`]).
    pub fn commit(&mut self, now: Instant, id: SessionId, seq: u64) {
        if let Some(s) = self.sessions.0.get_mut(&id) {
            s.commit(now, seq);
        }
    }

    /// Carries on a session from its durable record (another node held it),
    /// detached until its client resumes; replaces any copy held here.
    pub fn restore(&mut self, now: Instant, record: SessionRecord) -> Result<(), RecordError> {
        let s = ServerSession::restore(now, &self.cfg, record)?;
        self.forget(s.id());
        self.sessions.0.insert(s.id(), s);
        Ok(())
    }

    /// Drops a session without a word to anyone (another node took it
    /// over): its transports are closed, no event is emitted.
    pub fn forget(&mut self, id: SessionId) {
        if self.sessions.0.remove(&id).is_some() {
            let gone: Vec<_> = self.owners.iter().filter(|(_, s)| **s == id).map(|(t, _)| *t).collect();
            for tid in gone {
                self.owners.remove(&tid);
                self.transmits.push_back(Transmit::Close { transport: tid, flush: false });
            }
        }
    }

    /// Ends a session deliberately.
    pub fn close_session(&mut self, id: SessionId, code: CloseCode, reason: &str) {
        if let Some(s) = self.sessions.0.get_mut(&id) {
            s.close(code, reason);
        }
    }

    /// The next thing to do on a transport.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = crate::pop_release(&mut self.transmits) {
            return Some(t);
        }
        let owners = &mut self.owners;
        self.sessions.0.values_mut().find_map(|s| {
            let t = s.poll_transmit()?;
            if let Transmit::Close { transport, .. } = t {
                owners.remove(&transport);
            }
            Some(t)
        })
    }

    /// The next event for the application, taken from the sessions in
    /// order; an ended session is forgotten once its last event is taken.
    /// Not calling this is how an application lags.
    pub fn poll_event(&mut self) -> Option<(SessionId, SessionEvent)> {
        let (id, e) = self.sessions.0.iter_mut().find_map(|(id, s)| Some((*id, s.poll_event()?)))?;
        if matches!(e, SessionEvent::Ended { .. }) {
            if let Some(mut s) = self.sessions.0.remove(&id) {
                self.transmits.extend(std::iter::from_fn(|| s.poll_transmit()));
            }
            self.owners.retain(|_, sid| *sid != id);
        }
        Some((id, e))
    }

    /// When to call [`Server::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hs = self.handshakes.values().copied();
        hs.chain(self.sessions.0.values().filter_map(ServerSession::poll_timeout)).min()
    }

    fn owner(&mut self, tid: TransportId) -> Option<&mut ServerSession> {
        let id = self.owners.get(&tid)?;
        self.sessions.0.get_mut(id)
    }

    fn refuse(&mut self, tid: TransportId, r: Refusal) {
        if let Some(reason) = r.reason {
            self.rejects.push((tid, reason));
        }
        if let Some(frame) = r.frame {
            self.transmits.push_back(Transmit::Send { transport: tid, frame });
        }
        self.transmits.push_back(Transmit::Close { transport: tid, flush: true });
    }
}
