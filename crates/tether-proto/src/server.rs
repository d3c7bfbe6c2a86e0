//! The server side: [`ServerSession`] (one session and the transport that
//! currently carries it) and [`Server`] (handshakes, the session table,
//! resume routing), composed so a runtime can use either.
//!
//! A session is *attached* while a transport carries it and *detached*
//! otherwise. Detaching starts the grace period; a resume within it attaches
//! the new transport and closes the old one, after which nothing the old one
//! carries is read. When grace runs out the session expires and its
//! unacknowledged messages are handed back to the application.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{CloseCode, ConfigError, RejectReason, SendError, SessionEnd, TransportLoss};
use crate::frame::{self, Close, DecodeError, Frame, Hello, Reject, Welcome};
use crate::rng::Rng;
use crate::stream::{AckConfig, DataVerdict, Inbound, Outbound, Refused, ReplayLimits};
use crate::token::{ResumeToken, SessionId, TokenCheck, TokenHash, TokenState};
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
    /// Debug switch: when false, silent transports are never dropped.
    pub enforce_idle: bool,
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
            enforce_idle: true,
        }
    }
}

impl ServerConfig {
    /// Checks every setting; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.replay.validate()?;
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

/// What one session tells the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// An application message, delivered exactly once and in order.
    Message(Bytes),
    /// Application data carried on a PING.
    PingPayload(Bytes),
    /// The transport was lost; the session waits `grace` for a resume.
    Detached {
        /// Why.
        reason: TransportLoss,
    },
    /// A new transport carries the session.
    Resumed {
        /// Messages written again because the client had not received them.
        replayed: u64,
    },
    /// The session ended; nothing more will be delivered.
    Ended {
        /// Why.
        reason: SessionEnd,
        /// Messages the client never acknowledged, oldest first.
        unacked: Vec<Bytes>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Attached {
    tid: TransportId,
    /// The token issued in this transport's WELCOME, until the client proves
    /// it has it by sending a frame here.
    unconfirmed: Option<TokenHash>,
}

/// One session on the server.
#[derive(Debug)]
pub struct ServerSession {
    id: SessionId,
    tokens: TokenState,
    out: Outbound,
    inb: Inbound,
    ack_cfg: AckConfig,
    grace: Duration,
    idle_timeout: Duration,
    enforce_idle: bool,
    max_frame: u32,
    peer_max_frame: u32,
    attached: Option<Attached>,
    /// Last frame received on any transport of this session.
    last_heard: Instant,
    detached_at: Option<Instant>,
    ended: bool,
    pong_payload: Bytes,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
}

impl ServerSession {
    /// Opens a new session for an accepted HELLO on `tid`, queuing the WELCOME.
    pub fn open(now: Instant, cfg: &ServerConfig, rng: &mut Rng, tid: TransportId, hello: &Hello) -> Self {
        let id = SessionId::random(rng);
        let token = ResumeToken::random(rng);
        let mut s = ServerSession {
            id,
            tokens: TokenState::new(&token),
            out: Outbound::new(cfg.replay.clone()),
            inb: Inbound::default(),
            ack_cfg: cfg.ack.clone(),
            grace: cfg.grace,
            idle_timeout: cfg.grant_idle_timeout(hello.idle_timeout_ms),
            enforce_idle: cfg.enforce_idle,
            max_frame: cfg.max_frame,
            peer_max_frame: hello.max_frame,
            attached: Some(Attached { tid, unconfirmed: None }),
            last_heard: now,
            detached_at: None,
            ended: false,
            pong_payload: Bytes::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.welcome(tid, false, token);
        s
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The transport carrying the session, if attached.
    pub fn transport(&self) -> Option<TransportId> {
        self.attached.map(|a| a.tid)
    }

    /// When the session last received a frame.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// When a detached session expires (None while attached).
    ///
    /// Grace counts from the last frame heard — the server's best estimate of
    /// when contact was lost — so an outage longer than grace expires the
    /// session even though detection came later. When the granted idle
    /// timeout exceeds grace (long adaptive intervals), silence alone cannot
    /// be told from an outage, and grace counts from the detach instead.
    pub fn expires_at(&self) -> Option<Instant> {
        if self.attached.is_some() || self.ended {
            return None;
        }
        let detached = self.detached_at?;
        // Without idle enforcement (debug), silence is not an outage.
        Some(if self.enforce_idle && self.idle_timeout <= self.grace {
            (self.last_heard + self.grace).max(detached)
        } else {
            detached + self.grace
        })
    }

    /// True once ended; drop it after draining its outputs.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Unacknowledged outgoing messages and their bytes.
    pub fn buffered(&self) -> (usize, usize) {
        self.out.buffered()
    }

    /// The idle timeout granted to the client.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Application data to carry on every PONG.
    pub fn set_pong_payload(&mut self, payload: Bytes) {
        self.pong_payload = payload.slice(..payload.len().min(frame::MAX_PING_PAYLOAD));
    }

    fn welcome(&mut self, tid: TransportId, resumed: bool, token: ResumeToken) {
        let w = Welcome {
            version: frame::VERSION,
            resumed,
            session_id: self.id,
            token,
            last_received: self.inb.delivered(),
            max_frame: self.max_frame,
            idle_timeout_ms: u32::try_from(self.idle_timeout.as_millis()).unwrap_or(u32::MAX),
            grace_ms: u32::try_from(self.grace.as_millis()).unwrap_or(u32::MAX),
        };
        self.transmits.push_back(Transmit::Send { transport: tid, frame: Frame::Welcome(w) });
        self.inb.handshake_acked();
    }

    /// A resume HELLO for this session arrived on `tid`. On success the WELCOME
    /// is queued, the old transport (if any) is closed and the unacknowledged
    /// messages are replayed; on failure nothing changes.
    pub fn resume(
        &mut self,
        now: Instant,
        cfg: &ServerConfig,
        rng: &mut Rng,
        tid: TransportId,
        hello: &Hello,
    ) -> Result<(), RejectReason> {
        let Some(r) = &hello.resume else { return Err(RejectReason::BadHello) };
        if self.ended || r.session_id != self.id {
            return Err(RejectReason::UnknownSession);
        }
        match self.tokens.check(&r.token) {
            TokenCheck::Valid => {}
            TokenCheck::Invalid => return Err(RejectReason::InvalidToken),
            TokenCheck::Reused => return Err(RejectReason::TokenReused),
        }
        let before = self.out.last_assigned();
        if self.out.rewind(r.last_received).is_err() {
            return Err(RejectReason::BadHello);
        }
        if let Some(old) = self.attached.take() {
            self.close_transport(old.tid, CloseCode::TransportReplaced, "resumed on another transport");
        }
        let fresh = ResumeToken::random(rng);
        let issued = self.tokens.issue(&fresh);
        self.idle_timeout = cfg.grant_idle_timeout(hello.idle_timeout_ms);
        self.peer_max_frame = hello.max_frame;
        self.attached = Some(Attached { tid, unconfirmed: Some(issued) });
        self.last_heard = now;
        self.detached_at = None;
        self.welcome(tid, true, fresh);
        self.events.push_back(SessionEvent::Resumed { replayed: before - r.last_received });
        self.flush(now);
        Ok(())
    }

    /// Queues an application message for the client.
    pub fn send(&mut self, now: Instant, payload: Bytes) -> Result<u64, SendError> {
        if self.ended {
            return Err(SendError::SessionEnded(SessionEnd::Expired));
        }
        match self.out.admit(payload, self.peer_max_frame) {
            Ok(seq) => {
                self.flush(now);
                Ok(seq)
            }
            Err(Refused::Send(e)) => Err(e),
            Err(Refused::EndSession(reason)) => {
                let close = Some((CloseCode::ReplayOverflow, "replay buffer overflow: the client fell too far behind"));
                self.end(reason.clone(), close);
                Err(SendError::SessionEnded(reason))
            }
        }
    }

    /// Ends the session deliberately (application close or operator kick).
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        // Only session-ending codes end a session; anything else (or an
        // application code outside 4000–4999) is sent as 3000.
        let code = match CloseCode::from_u16(code.to_u16()) {
            Some(c) if c.ends_session() => c,
            _ => CloseCode::Normal,
        };
        let end = if code == CloseCode::Normal {
            SessionEnd::LocalClose
        } else {
            SessionEnd::PeerClosed { code, reason: reason.to_owned() }
        };
        self.end(end, Some((code, reason)));
    }

    /// Closes the transport but keeps the session for a resume, asking the
    /// client to wait `retry_after` first (drain, restart).
    pub fn go_away(&mut self, now: Instant, retry_after: Duration, reason: &str) {
        if let Some(a) = self.attached.take() {
            let ms = u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX);
            self.transmits.push_back(Transmit::Send {
                transport: a.tid,
                frame: Frame::Close(Close {
                    code: CloseCode::GoingAway,
                    retry_after_ms: ms,
                    reason: frame::clip_reason(reason),
                }),
            });
            self.transmits.push_back(Transmit::Close { transport: a.tid, flush: true });
            self.detach_now(now, TransportLoss::Closed);
        }
    }

    /// A whole frame arrived on `tid`.
    pub fn handle_frame(&mut self, now: Instant, tid: TransportId, frame: Frame) {
        let Some(att) = &mut self.attached else { return };
        if att.tid != tid || self.ended {
            return; // a replaced transport delivers nothing
        }
        self.last_heard = now;
        // Any frame after WELCOME proves the client holds this transport's
        // token — except a CLOSE, which may be the client refusing the WELCOME.
        if !matches!(frame, Frame::Close(_)) {
            if let Some(issued) = att.unconfirmed.take() {
                self.tokens.confirm(issued);
            }
        }
        let ack = match frame {
            Frame::Data { seq, payload } => {
                match self.inb.on_data(now, seq, &self.ack_cfg) {
                    Ok(DataVerdict::Deliver) => self.events.push_back(SessionEvent::Message(payload)),
                    Ok(DataVerdict::Duplicate) => {}
                    Err(e) => {
                        let text = e.to_string();
                        return self.end(SessionEnd::SequenceViolation(e), Some((CloseCode::SequenceViolation, &text)));
                    }
                }
                None
            }
            Frame::Ack { ack } => Some(ack),
            Frame::Ping { nonce, ack, payload } => {
                if !payload.is_empty() {
                    self.events.push_back(SessionEvent::PingPayload(payload));
                }
                let mine = self.inb.ack_sent();
                self.transmits.push_back(Transmit::Send {
                    transport: tid,
                    frame: Frame::Pong { nonce, ack: mine, payload: self.pong_payload.clone() },
                });
                Some(ack)
            }
            Frame::Pong { ack, .. } => Some(ack),
            Frame::Close(c) => {
                self.transmits.push_back(Transmit::Close { transport: tid, flush: false });
                if c.code.ends_session() {
                    let reason = SessionEnd::PeerClosed { code: c.code, reason: c.reason };
                    self.attached = None;
                    return self.end(reason, None);
                }
                return self.detach_now(now, TransportLoss::PeerClosed { code: c.code, reason: c.reason });
            }
            other => {
                let kind = other.kind();
                return self.protocol_error(
                    now,
                    CloseCode::ProtocolError,
                    &format!("frame 0x{kind:02x} after WELCOME"),
                    TransportLoss::UnexpectedFrame { kind },
                );
            }
        };
        if let Some(ack) = ack {
            if let Err(e) = self.out.on_ack(ack) {
                let text = e.to_string();
                return self.end(SessionEnd::SequenceViolation(e), Some((CloseCode::SequenceViolation, &text)));
            }
        }
        self.flush(now);
    }

    /// Bytes on `tid` could not be decoded.
    pub fn handle_decode_error(&mut self, now: Instant, tid: TransportId, err: DecodeError) {
        if self.transport() == Some(tid) {
            self.protocol_error(now, err.close_code(), &err.to_string(), TransportLoss::Malformed(err));
        }
    }

    /// Transport `tid` closed or failed.
    pub fn handle_transport_closed(&mut self, now: Instant, tid: TransportId) {
        if self.transport() == Some(tid) {
            self.attached = None;
            self.detach_now(now, TransportLoss::Closed);
        }
    }

    /// Acts on every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if let Some(att) = self.attached {
            let silent = now.saturating_duration_since(self.last_heard);
            if self.enforce_idle && silent >= self.idle_timeout {
                self.transmits.push_back(Transmit::Close { transport: att.tid, flush: false });
                self.attached = None;
                return self.detach_now(now, TransportLoss::HeartbeatTimeout { silent_for: silent });
            }
            self.flush(now);
        } else if self.expires_at().is_some_and(|at| now >= at) {
            self.end(SessionEnd::Expired, None);
        }
    }

    /// When to call [`ServerSession::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        match self.attached {
            Some(_) => {
                let idle = self.enforce_idle.then(|| self.last_heard + self.idle_timeout);
                match (idle, self.inb.ack_due()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            None => self.expires_at(),
        }
    }

    /// The next thing to do on a transport.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        crate::pop_release(&mut self.transmits)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        crate::pop_release(&mut self.events)
    }

    fn flush(&mut self, now: Instant) {
        let Some(att) = self.attached else { return };
        while let Some((seq, payload)) = self.out.next_to_write() {
            self.transmits.push_back(Transmit::Send { transport: att.tid, frame: Frame::Data { seq, payload } });
        }
        if self.inb.ack_due().is_some_and(|due| due <= now) {
            let ack = self.inb.ack_sent();
            self.transmits.push_back(Transmit::Send { transport: att.tid, frame: Frame::Ack { ack } });
        }
    }

    fn close_transport(&mut self, tid: TransportId, code: CloseCode, reason: &str) {
        self.transmits.push_back(Transmit::Send {
            transport: tid,
            frame: Frame::Close(Close { code, retry_after_ms: 0, reason: frame::clip_reason(reason) }),
        });
        self.transmits.push_back(Transmit::Close { transport: tid, flush: true });
    }

    fn protocol_error(&mut self, now: Instant, code: CloseCode, text: &str, loss: TransportLoss) {
        if let Some(att) = self.attached.take() {
            self.close_transport(att.tid, code, text);
            self.detach_now(now, loss);
        }
    }

    fn detach_now(&mut self, now: Instant, reason: TransportLoss) {
        self.attached = None;
        self.detached_at = Some(now);
        self.events.push_back(SessionEvent::Detached { reason });
    }

    fn end(&mut self, reason: SessionEnd, close: Option<(CloseCode, &str)>) {
        if self.ended {
            return;
        }
        if let Some(att) = self.attached.take() {
            match close {
                Some((code, text)) => self.close_transport(att.tid, code, text),
                None => self.transmits.push_back(Transmit::Close { transport: att.tid, flush: true }),
            }
        }
        self.ended = true;
        let unacked = self.out.take_unacked();
        self.events.push_back(SessionEvent::Ended { reason, unacked });
    }
}

/// What the [`Server`] tells the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A new session was opened on a transport.
    Opened {
        /// The session.
        session: SessionId,
        /// The transport.
        transport: TransportId,
    },
    /// A handshake was refused.
    Rejected {
        /// The transport.
        transport: TransportId,
        /// Why.
        reason: RejectReason,
    },
    /// Something happened in a session.
    Session {
        /// The session.
        session: SessionId,
        /// What.
        event: SessionEvent,
    },
}

/// A whole server endpoint: handshakes, the session table and resume routing.
///
/// Every session's deadlines are scanned by [`Server::poll_timeout`]; a
/// runtime with very many sessions drives [`ServerSession`]s individually.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    rng: Rng,
    // Ordered maps: timeouts are handled in a fixed order, so a run replays
    // exactly from its seed.
    handshakes: BTreeMap<TransportId, Instant>,
    owners: HashMap<TransportId, SessionId>,
    sessions: BTreeMap<SessionId, ServerSession>,
    next_tid: u64,
    refuse: Option<(RejectReason, Duration)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
}

impl Server {
    /// A server with no sessions. Validates the settings.
    pub fn new(cfg: ServerConfig, rng: Rng) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Server {
            cfg,
            rng,
            handshakes: BTreeMap::new(),
            owners: HashMap::new(),
            sessions: BTreeMap::new(),
            next_tid: 0,
            refuse: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Sessions currently held (attached or within grace).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// One session, for inspection.
    pub fn session(&self, id: SessionId) -> Option<&ServerSession> {
        self.sessions.get(&id)
    }

    /// Refuse new handshakes with this reason and retry-after (admission
    /// control, drain); None accepts again. Resumes are refused too when the
    /// reason is `ShuttingDown`.
    pub fn set_refusal(&mut self, refusal: Option<(RejectReason, Duration)>) {
        self.refuse = refusal;
    }

    /// A transport was accepted; the HELLO must arrive within the handshake timeout.
    pub fn handle_accept(&mut self, now: Instant) -> TransportId {
        self.next_tid += 1;
        let tid = TransportId(self.next_tid);
        self.handshakes.insert(tid, now + self.cfg.handshake_timeout);
        tid
    }

    /// A whole frame arrived on `tid`.
    pub fn handle_frame(&mut self, now: Instant, tid: TransportId, bytes: &[u8]) {
        let frame = match Frame::decode(bytes, self.cfg.max_frame) {
            Ok(f) => f,
            Err(e) => return self.handle_decode_error(now, tid, e),
        };
        if self.handshakes.remove(&tid).is_some() {
            return self.on_handshake(now, tid, frame);
        }
        if let Some(id) = self.owners.get(&tid).copied() {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.handle_frame(now, tid, frame);
            }
            self.collect(id);
        }
    }

    /// Bytes on `tid` could not be decoded (TCP framing).
    pub fn handle_decode_error(&mut self, now: Instant, tid: TransportId, err: DecodeError) {
        if self.handshakes.remove(&tid).is_some() {
            return self.refuse(tid, Refusal::decode(&err));
        }
        if let Some(id) = self.owners.get(&tid).copied() {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.handle_decode_error(now, tid, err);
            }
            self.collect(id);
        }
    }

    /// Transport `tid` closed or failed.
    pub fn handle_transport_closed(&mut self, now: Instant, tid: TransportId) {
        self.handshakes.remove(&tid);
        if let Some(id) = self.owners.remove(&tid) {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.handle_transport_closed(now, tid);
            }
            self.collect(id);
        }
    }

    /// Acts on every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<_> = self.handshakes.iter().filter(|(_, d)| **d <= now).map(|(t, _)| *t).collect();
        for tid in expired {
            self.handshakes.remove(&tid);
            self.refuse(tid, Refusal::handshake_timeout());
        }
        let due: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.poll_timeout().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.handle_timeout(now);
            }
            self.collect(id);
        }
    }

    /// Queues an application message for a session.
    pub fn send(&mut self, now: Instant, id: SessionId, payload: Bytes) -> Result<u64, SendError> {
        let s = self.sessions.get_mut(&id).ok_or(SendError::SessionEnded(SessionEnd::Expired))?;
        let r = s.send(now, payload);
        self.collect(id);
        r
    }

    /// Ends a session deliberately.
    pub fn close_session(&mut self, id: SessionId, code: CloseCode, reason: &str) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.close(code, reason);
        }
        self.collect(id);
    }

    /// The next thing to do on a transport.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        crate::pop_release(&mut self.transmits)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        crate::pop_release(&mut self.events)
    }

    /// When to call [`Server::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hs = self.handshakes.values().copied().min();
        let ss = self.sessions.values().filter_map(ServerSession::poll_timeout).min();
        match (hs, ss) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_handshake(&mut self, now: Instant, tid: TransportId, frame: Frame) {
        match check_hello(frame, self.refuse) {
            HelloVerdict::Refuse(r) => self.refuse(tid, r),
            HelloVerdict::Resume(hello) => {
                let Some(id) = hello.resume.as_ref().map(|r| r.session_id) else { return };
                let Some(s) = self.sessions.get_mut(&id) else {
                    return self.refuse(tid, Refusal::resume_failed(RejectReason::UnknownSession));
                };
                let old = s.transport();
                match s.resume(now, &self.cfg, &mut self.rng, tid, &hello) {
                    Ok(()) => {
                        if let Some(old) = old {
                            self.owners.remove(&old);
                        }
                        self.owners.insert(tid, id);
                        self.collect(id);
                    }
                    Err(reason) => self.refuse(tid, Refusal::resume_failed(reason)),
                }
            }
            HelloVerdict::Open(hello) => {
                let s = ServerSession::open(now, &self.cfg, &mut self.rng, tid, &hello);
                let id = s.id();
                self.sessions.insert(id, s);
                self.owners.insert(tid, id);
                self.events.push_back(ServerEvent::Opened { session: id, transport: tid });
                self.collect(id);
            }
        }
    }

    fn refuse(&mut self, tid: TransportId, r: Refusal) {
        let reason = r.reason;
        self.transmits.push_back(Transmit::Send { transport: tid, frame: r.frame });
        self.transmits.push_back(Transmit::Close { transport: tid, flush: true });
        if let Some(reason) = reason {
            self.events.push_back(ServerEvent::Rejected { transport: tid, reason });
        }
    }

    /// Moves a session's outputs to the server's queues and forgets it if it ended.
    fn collect(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        while let Some(t) = s.poll_transmit() {
            if let Transmit::Close { transport, .. } = t {
                self.owners.remove(&transport);
            }
            self.transmits.push_back(t);
        }
        while let Some(e) = s.poll_event() {
            self.events.push_back(ServerEvent::Session { session: id, event: e });
        }
        if s.is_ended() {
            self.sessions.remove(&id);
            self.owners.retain(|_, sid| *sid != id);
        }
    }
}

/// What a server does with the first frame of a new transport
/// (`docs/PROTOCOL.md` §5): the rules shared by [`Server`] and any runtime
/// that drives [`ServerSession`]s itself.
#[derive(Debug)]
pub enum HelloVerdict {
    /// A valid HELLO for a new session: [`ServerSession::open`].
    Open(Hello),
    /// A valid HELLO resuming a session: find it and call
    /// [`ServerSession::resume`]; refuse with
    /// [`Refusal::resume_failed`] if it is unknown or the resume fails.
    Resume(Hello),
    /// Send the refusal, flush, close the transport.
    Refuse(Refusal),
}

/// A refused handshake: the one frame to send before closing the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// REJECT (a HELLO that was understood) or CLOSE (one that was not).
    pub frame: Frame,
    /// The REJECT reason, when the frame is a REJECT.
    pub reason: Option<RejectReason>,
}

impl Refusal {
    /// A REJECT with this reason, retry-after and human-readable message.
    pub fn reject(reason: RejectReason, retry_after: Duration, message: &str) -> Self {
        let r = Reject {
            reason,
            retry_after_ms: u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX),
            min_version: frame::VERSION,
            max_version: frame::VERSION,
            message: frame::clip_reason(message),
        };
        Refusal { frame: Frame::Reject(r), reason: Some(reason) }
    }

    /// A REJECT for a resume that failed (unknown session, token checks).
    pub fn resume_failed(reason: RejectReason) -> Self {
        let msg = match reason {
            RejectReason::UnknownSession => "no such session: it expired or never existed; start a new one",
            RejectReason::InvalidToken => "the resume token does not match this session",
            RejectReason::TokenReused => {
                "the resume token was already used and rotated (replayed or duplicated handshake)"
            }
            _ => "the resume request is inconsistent with the session's state",
        };
        Refusal::reject(reason, Duration::ZERO, msg)
    }

    /// A CLOSE for bytes that did not decode as a frame.
    pub fn decode(err: &DecodeError) -> Self {
        Refusal::close(err.close_code(), &err.to_string())
    }

    /// A CLOSE 1002 for a transport that sent no valid HELLO in time. The
    /// transport may be abandoned instead (§5.5); a runtime that can write
    /// without blocking sends this first.
    pub fn handshake_timeout() -> Self {
        Refusal::close(CloseCode::HandshakeTimeout, "no valid HELLO within the handshake timeout")
    }

    fn close(code: CloseCode, reason: &str) -> Self {
        Refusal {
            frame: Frame::Close(Close { code, retry_after_ms: 0, reason: frame::clip_reason(reason) }),
            reason: None,
        }
    }
}

/// Judges the first frame of a new transport: version negotiation, the
/// admission `refusal` in force (new sessions are refused with it; resumes
/// only when it is `ShuttingDown`), new session or resume.
pub fn check_hello(frame: Frame, refusal: Option<(RejectReason, Duration)>) -> HelloVerdict {
    let Frame::Hello(hello) = frame else {
        let kind = frame.kind();
        return HelloVerdict::Refuse(Refusal::close(
            CloseCode::ProtocolError,
            &format!("expected HELLO, got frame 0x{kind:02x}"),
        ));
    };
    if !(hello.min_version..=hello.max_version).contains(&frame::VERSION) {
        let msg = format!(
            "this server speaks protocol version {} only; the client offered {}..={}",
            frame::VERSION,
            hello.min_version,
            hello.max_version
        );
        return HelloVerdict::Refuse(Refusal::reject(RejectReason::UnsupportedVersion, Duration::ZERO, &msg));
    }
    if let Some((reason, retry)) = refusal {
        if hello.resume.is_none() || reason == RejectReason::ShuttingDown {
            let msg = match reason {
                RejectReason::ShuttingDown => "the server is shutting down; reconnect after the delay given",
                RejectReason::Overloaded => "too many handshakes at once; retry after the delay given",
                _ => "the server is not accepting handshakes now; retry later",
            };
            return HelloVerdict::Refuse(Refusal::reject(reason, retry, msg));
        }
    }
    if hello.resume.is_some() {
        HelloVerdict::Resume(hello)
    } else {
        HelloVerdict::Open(hello)
    }
}
