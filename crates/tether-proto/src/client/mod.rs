//! The client connection machine: one session, carried by a succession of
//! transports it asks the caller to open.
//!
//! States of the current transport, named by what they wait for:
//! `Waiting` (backoff until an instant) → `Connecting` (the caller opens
//! transports, racing a new one beside a slow one, §9.7) → `Handshaking` (HELLO sent, WELCOME awaited) → `Established`
//! → back to `Waiting` when the transport is lost. `Closed` is terminal and
//! sticky. The session (id, token, both streams) lives beside this and
//! survives transport losses until it expires.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::adaptive::Adaptive;
use crate::backoff::{Backoff, DelayContext};
use crate::error::{CloseCode, ConfigError, RejectReason, SendError, SequenceError, SessionEnd, TransportLoss};
use crate::frame::{self, Close, Frame, Hello, Resume, Welcome};
use crate::heartbeat::{Heartbeat, HeartbeatAction, ProbeCause};
use crate::outputs::Outputs;
use crate::race::Racers;
use crate::rng::Rng;
use crate::stream::{self, DataVerdict, Inbound, Outbound};
use crate::token::{ResumeToken, SessionId};
use crate::{Transmit, TransportId};

mod config;
mod event;

pub use config::ClientConfig;
pub use event::ClientEvent;

#[derive(Debug, Clone, PartialEq)]
enum Link {
    Waiting {
        until: Instant,
    },
    /// The transports being opened are in `Client::racers`.
    Connecting {
        started: Instant,
        /// The attempt budget's end (`handshake_timeout` after `started`),
        /// or the end of the one transport that reached the server.
        deadline: Instant,
    },
    Handshaking {
        tid: TransportId,
        started: Instant,
        deadline: Instant,
        /// The ack the HELLO carried (`last_received`).
        carried: u64,
        /// When the HELLO went out (a round-trip sample at WELCOME).
        hello_at: Instant,
    },
    Established {
        tid: TransportId,
        since: Instant,
    },
    /// Stopped for good, and why (what `send` reports from then on).
    Closed {
        reason: SessionEnd,
    },
}

/// What ending a session does to the transport in flight, if any.
enum Goodbye {
    /// Send CLOSE with this code and text, flush, close.
    Close(CloseCode, String),
    /// Nothing more: it was already closed (or there is none).
    Done,
}

#[derive(Debug, Clone)]
struct SessionCtx {
    id: SessionId,
    token: ResumeToken,
    idle_timeout: Duration,
    grace: Duration,
}

/// The client machine. See the crate docs for the drive contract.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    rng: Rng,
    link: Link,
    /// The transports being opened while `Connecting`.
    racers: Racers,
    /// The last round trip measured (paces racing).
    last_rtt: Option<Duration>,
    /// The server was reached but did not answer in time, or refused for
    /// load, since the last WELCOME: attempts do not race (§9.7).
    server_slow: bool,
    session: Option<SessionCtx>,
    /// Set while a session has no transport: after this the server has
    /// certainly expired it (last heard + server idle timeout + grace).
    resumable_until: Option<Instant>,
    out: Outbound,
    inb: Inbound,
    hb: Heartbeat,
    adaptive: Option<Adaptive>,
    network: String,
    backoff: Backoff,
    retry_not_before: Option<Instant>,
    next_tid: u64,
    ping_payload: Bytes,
    peer_max_frame: u32,
    /// The latest time given with an input (pacing acks for what the
    /// application takes between inputs).
    now: Instant,
    io: Outputs<ClientEvent>,
    resumes: u64,
}

impl Client {
    /// A client that will ask to connect at once. Validates the settings.
    pub fn new(cfg: ClientConfig, mut rng: Rng, now: Instant) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let adaptive = cfg.heartbeat.adaptive.clone().map(Adaptive::new);
        let hb = Heartbeat::new(cfg.heartbeat.clone(), now, rng.u32());
        Ok(Client {
            out: Outbound::new(cfg.replay.clone()),
            inb: Inbound::default(),
            hb,
            adaptive,
            network: String::new(),
            backoff: Backoff::new(cfg.backoff.clone()),
            retry_not_before: None,
            next_tid: 0,
            ping_payload: Bytes::new(),
            // Every server accepts MIN_MAX_FRAME; the real limit comes in WELCOME.
            peer_max_frame: frame::MIN_MAX_FRAME,
            now,
            io: Outputs::default(),
            link: Link::Waiting { until: now },
            racers: Racers::default(),
            last_rtt: None,
            server_slow: false,
            session: None,
            resumable_until: None,
            resumes: 0,
            rng,
            cfg,
        })
    }

    /// The credential for the HELLOs from now on (a fresh login token:
    /// only a HELLO opening a new session is checked with it; a resume is
    /// proven by the resume token).
    pub fn set_auth(&mut self, auth: Bytes) -> Result<(), ConfigError> {
        if auth.len() > frame::MAX_AUTH_LEN {
            return Err(ConfigError::new("auth", "longer than 4096 bytes", "use a shorter credential"));
        }
        self.cfg.auth = auth;
        Ok(())
    }

    // ----- getters -------------------------------------------------------

    /// The current session, if one is established or resumable.
    pub fn session_id(&self) -> Option<SessionId> {
        self.session.as_ref().map(|s| s.id)
    }

    /// True while a transport carries the session.
    pub fn is_established(&self) -> bool {
        matches!(self.link, Link::Established { .. })
    }

    /// True once the client has stopped for good.
    pub fn is_closed(&self) -> bool {
        matches!(self.link, Link::Closed { .. })
    }

    /// The heartbeat interval in use now.
    pub fn heartbeat_interval(&self) -> Duration {
        self.hb.interval()
    }

    /// The adaptive learner, if the adaptive profile is on.
    pub fn adaptive(&self) -> Option<&Adaptive> {
        self.adaptive.as_ref()
    }

    /// Successful resumes so far.
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    /// Unacknowledged outgoing messages and their bytes.
    pub fn buffered(&self) -> (usize, usize) {
        self.out.buffered()
    }

    /// When the current session will be given up if no transport carries it.
    pub fn resumable_until(&self) -> Option<Instant> {
        self.resumable_until
    }

    // ----- commands ------------------------------------------------------

    /// Queues an application message. It is written at once if a transport is
    /// up, else on the next one, and replayed until acknowledged.
    pub fn send(&mut self, now: Instant, payload: Bytes) -> Result<u64, SendError> {
        self.now = now;
        stream::send(self, now, payload)
    }

    /// Application data to carry on every PING (empty for none).
    pub fn set_ping_payload(&mut self, payload: Bytes) {
        self.ping_payload = payload.slice(..payload.len().min(frame::MAX_PING_PAYLOAD));
    }

    /// Ends the session deliberately: tells the server (if connected) and
    /// stops. Unacknowledged messages come back in `SessionEnded`.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) {
        self.now = now;
        if self.is_closed() {
            return;
        }
        let bye = Goodbye::Close(code.for_session_end(), reason.to_owned());
        self.end_session(now, SessionEnd::LocalClose, bye, false);
    }

    // ----- inputs --------------------------------------------------------

    /// Transport `tid` reached the server (its TCP connection is open; TLS
    /// or WebSocket handshakes may follow). Optional: the path works, so the
    /// other transports of the attempt are dropped and no more are raced
    /// (§9.7). A runtime that cannot tell (a browser's WebSocket) only calls
    /// [`Client::handle_connected`].
    pub fn handle_reachable(&mut self, now: Instant, tid: TransportId) {
        self.now = now;
        let Link::Connecting { .. } = self.link else { return };
        if self.racers.started(tid).is_none() {
            return;
        }
        for other in self.racers.reach(tid, now) {
            self.io.abandon(other);
        }
        // The server answered: it gets a whole handshake_timeout from now
        // (§9.7). Giving up on a server that is merely slow (every client of
        // it reconnecting at once) would only send it the same work again.
        self.link = Link::Connecting { started: now, deadline: now + self.cfg.handshake_timeout };
    }

    /// The caller finished opening transport `tid` (TCP connected, TLS and
    /// WebSocket handshakes done). The first of the attempt's transports to
    /// open wins; the others are dropped.
    pub fn handle_connected(&mut self, now: Instant, tid: TransportId) {
        self.now = now;
        let Some(started) = self.keep_racer(tid) else { return };
        self.racers.take_all();
        let deadline = started + self.cfg.handshake_timeout;
        let carried = self.inb.last_taken();
        let resume =
            self.session.as_ref().map(|s| Resume { session_id: s.id, token: s.token.clone(), last_received: carried });
        let idle = self.cfg.heartbeat.server_idle_timeout();
        let hello = Hello {
            min_version: frame::VERSION,
            max_version: frame::VERSION,
            max_frame: self.cfg.max_frame,
            idle_timeout_ms: duration_ms(idle),
            resume,
            auth: self.cfg.auth.clone(),
        };
        self.io.send(tid, Frame::Hello(hello));
        self.link = Link::Handshaking { tid, started, deadline, carried, hello_at: now };
    }

    /// Transport `tid` closed or failed (including a failed connect).
    pub fn handle_transport_closed(&mut self, now: Instant, tid: TransportId) {
        self.now = now;
        // One of the attempt's transports refused or failed at once: the
        // path answers, so racing is pointless; the attempt fails (backoff).
        if self.current_tid() == Some(tid) || self.racers.started(tid).is_some() {
            // Closed once it had reached the server: a server shedding load.
            self.server_slow |= matches!(self.link, Link::Handshaking { .. }) || self.reached();
            self.lose(now, TransportLoss::Closed, false);
        }
    }

    /// The caller could not decode the byte stream of `tid` (TCP framing).
    pub fn handle_decode_error(&mut self, now: Instant, tid: TransportId, err: frame::DecodeError) {
        self.now = now;
        // A transport still connecting has carried nothing (as in handle_frame).
        if self.current_tid() == Some(tid) {
            self.protocol_error(now, err.close_code(), &err.to_string(), TransportLoss::Malformed(err));
        }
    }

    /// One whole frame arrived on transport `tid`.
    pub fn handle_frame(&mut self, now: Instant, tid: TransportId, bytes: &[u8]) {
        self.now = now;
        if self.current_tid() != Some(tid) {
            return; // an old transport, or one still opening: it can deliver nothing
        }
        let frame = match Frame::decode(bytes, self.cfg.max_frame) {
            Ok(f) => f,
            Err(e) => return self.handle_decode_error(now, tid, e),
        };
        match self.link {
            Link::Handshaking { .. } => self.on_handshake_frame(now, tid, frame),
            Link::Established { .. } => self.on_established_frame(now, frame),
            _ => {}
        }
        self.flush(now);
    }

    /// The network changed (address or link up/down; `key` names the new
    /// network for adaptive learning, None keeps the current one). A live
    /// transport is probed at once and dropped if the probe fails; a pending
    /// reconnect is attempted at once.
    pub fn handle_network_change(&mut self, now: Instant, key: Option<&str>) {
        self.now = now;
        if let Some(k) = key {
            self.network = k.to_owned();
            self.apply_learned_interval();
        }
        match self.link {
            Link::Established { tid, .. } => {
                let nonce = self.hb.probe_now(now);
                self.send_ping(now, tid, nonce);
            }
            Link::Waiting { .. } => {
                self.backoff.reset();
                let until = self.retry_not_before.map_or(now, |r| r.max(now));
                self.link = Link::Waiting { until };
            }
            Link::Connecting { started, .. } | Link::Handshaking { started, .. } => {
                // An attempt in flight for longer than a probe timeout is
                // likely stuck on the old network: start over at once.
                if now.saturating_duration_since(started) >= self.cfg.heartbeat.probe_timeout {
                    self.abandon_transports();
                    self.backoff.reset();
                    self.link = Link::Waiting { until: self.retry_not_before.map_or(now, |r| r.max(now)) };
                }
            }
            Link::Closed { .. } => {}
        }
    }

    /// Time passed; act on every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if let (Some(until), false) = (self.resumable_until, self.is_established()) {
            if now >= until {
                self.abandon_transports();
                self.end_session(now, SessionEnd::Expired, Goodbye::Done, true);
            }
        }
        match self.link {
            Link::Waiting { until } if now >= until => self.start_attempt(now),
            Link::Connecting { deadline, .. } => self.race(now, deadline),
            Link::Handshaking { deadline, .. } if now >= deadline => {
                self.server_slow = true;
                self.lose(now, TransportLoss::HandshakeTimeout, false);
            }
            Link::Established { tid, .. } if self.inb.resync_due() => {
                // Everything held was taken: have the server replay what was
                // deferred, on a new transport at once (§7.8).
                let text = "messages deferred while the application was busy: resuming to receive them again";
                self.io.close(tid, CloseCode::Resync, Duration::ZERO, text);
                self.lose_no_close(now, TransportLoss::Resync, true);
            }
            Link::Established { tid, .. } => {
                if let Some(action) = self.hb.poll(now) {
                    match action {
                        HeartbeatAction::Ping(nonce) => self.send_ping(now, tid, nonce),
                        HeartbeatAction::Missed => self.io.event(ClientEvent::HeartbeatMissed),
                        HeartbeatAction::Dead { silent_for, cause } => {
                            let reason = match cause {
                                ProbeCause::Idle { interval, .. } => {
                                    if let Some(a) = &mut self.adaptive {
                                        a.died_idle(&self.network, interval);
                                    }
                                    self.apply_learned_interval();
                                    TransportLoss::HeartbeatTimeout { silent_for }
                                }
                                ProbeCause::NetworkChange => TransportLoss::NetworkChanged,
                            };
                            let immediate = reason == TransportLoss::NetworkChanged;
                            self.lose(now, reason, immediate);
                        }
                    }
                }
                self.flush(now);
            }
            _ => {}
        }
    }

    // ----- outputs -------------------------------------------------------

    /// The next thing to do on a transport. Drain it after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.pop_transmit()
    }

    /// The next event for the application. Take events only as fast as the
    /// application can handle them: a message counts as delivered, and is
    /// acknowledged, once taken; untaken ones fill the receive window
    /// (§7.8) and never stall the heartbeat.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let e = self.io.pop_event()?;
        match &e {
            ClientEvent::Message(b) => self.inb.took(self.now, b.len(), true, &self.cfg.ack),
            ClientEvent::PingPayload(b) | ClientEvent::PongPayload(b) => {
                self.inb.took(self.now, b.len(), false, &self.cfg.ack);
            }
            _ => {}
        }
        Some(e)
    }

    /// True while events wait for the application.
    pub fn has_events(&self) -> bool {
        self.io.has_events()
    }

    /// When to call [`Client::handle_timeout`] next (None: only after input).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = match self.link {
            Link::Waiting { until } => Some(until),
            Link::Connecting { deadline, .. } => {
                let racers = self.racers.deadline(self.cfg.handshake_timeout);
                Some(racers.map_or(deadline, |r| r.min(deadline)))
            }
            Link::Handshaking { deadline, .. } => Some(deadline),
            Link::Established { .. } => {
                let resync = self.inb.resync_due().then_some(self.now);
                [Some(self.hb.deadline()), self.inb.ack_due(), resync].into_iter().flatten().min()
            }
            Link::Closed { .. } => None,
        };
        match (link, self.resumable_until.filter(|_| !self.is_established())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----------------------------------------------------

    /// The open transport carrying (or handshaking for) the session.
    fn current_tid(&self) -> Option<TransportId> {
        match self.link {
            Link::Handshaking { tid, .. } | Link::Established { tid, .. } => Some(tid),
            _ => None,
        }
    }

    /// True while `Connecting` once a transport reached the server (racing
    /// stopped with transports left; with racing on).
    fn reached(&self) -> bool {
        matches!(self.link, Link::Connecting { .. })
            && self.cfg.race.max_in_flight > 1
            && !self.racers.racing()
            && !self.racers.is_empty()
    }

    /// Transport `tid`, one of the attempt's, goes on alone: the others are
    /// dropped and no more are raced. When it was asked for; None (nothing
    /// done) if it is not one of the attempt's transports.
    fn keep_racer(&mut self, tid: TransportId) -> Option<Instant> {
        let Link::Connecting { .. } = self.link else { return None };
        let started = self.racers.started(tid)?;
        for other in self.racers.keep_only(tid) {
            self.io.abandon(other);
        }
        Some(started)
    }

    /// Drops every transport: the current one and any being opened.
    fn abandon_transports(&mut self) {
        if let Some(tid) = self.current_tid() {
            self.io.abandon(tid);
        }
        for tid in self.racers.take_all() {
            self.io.abandon(tid);
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        self.link = Link::Connecting { started: now, deadline: now + self.cfg.handshake_timeout };
        self.open_racer(now);
    }

    /// Asks for one more transport for the current attempt.
    fn open_racer(&mut self, now: Instant) {
        self.next_tid += 1;
        let tid = TransportId(self.next_tid);
        let racing = self.cfg.race.max_in_flight > 1 && !self.server_slow;
        let wait = racing.then(|| self.cfg.race.wait(self.last_rtt));
        self.racers.start(tid, now, wait);
        self.io.connect(tid);
    }

    /// Time passed while `Connecting` (§9.7): transports older than the
    /// handshake timeout are dropped, another is raced when one is due, and
    /// the attempt fails at its deadline — except that a resumable session
    /// keeps racing (a silent outage must not leave it waiting on SYN
    /// retransmissions or backoff when the path returns), reporting each
    /// budget that passed without an answer.
    fn race(&mut self, now: Instant, deadline: Instant) {
        let hto = self.cfg.handshake_timeout;
        // Before expiring: the transport that reached the server ends with
        // the attempt's deadline.
        let reached = self.reached();
        for tid in self.racers.expired(now, hto) {
            self.io.abandon(tid);
        }
        if now >= deadline {
            if !(self.racers.racing() && self.resumable_until.is_some()) {
                // A transport reached the server, which did not answer in time.
                self.server_slow |= reached;
                return self.lose(now, TransportLoss::HandshakeTimeout, false);
            }
            self.io.event(ClientEvent::AttemptFailed { reason: TransportLoss::HandshakeTimeout });
            self.link = Link::Connecting { started: now, deadline: now + hto };
        }
        if self.racers.due(now) || self.racers.is_empty() {
            if let Some(oldest) = self.racers.make_room(usize::from(self.cfg.race.max_in_flight)) {
                self.io.abandon(oldest);
            }
            self.open_racer(now);
        }
    }

    fn send_ping(&mut self, now: Instant, tid: TransportId, nonce: u32) {
        let ack = self.inb.ack_sent();
        self.io.send(tid, Frame::Ping { nonce, ack, payload: self.ping_payload.clone() });
        self.hb.on_sent(now);
    }

    /// Writes everything owed on an established transport.
    fn flush(&mut self, now: Instant) {
        let Link::Established { tid, .. } = self.link else { return };
        let mut wrote = false;
        while let Some((seq, payload)) = self.out.next_to_write() {
            self.io.send(tid, Frame::Data { seq, payload });
            wrote = true;
        }
        if self.inb.ack_due().is_some_and(|due| due <= now) {
            let ack = self.inb.ack_sent();
            self.io.send(tid, Frame::Ack { ack });
            wrote = true;
        }
        if wrote {
            self.hb.on_sent(now);
        }
    }

    fn on_handshake_frame(&mut self, now: Instant, tid: TransportId, frame: Frame) {
        match frame {
            Frame::Welcome(w) => self.on_welcome(now, tid, w),
            Frame::Reject(r) => {
                self.io.abandon(tid);
                if matches!(r.reason, RejectReason::Overloaded | RejectReason::ShuttingDown) {
                    self.server_slow = true;
                }
                if r.retry_after_ms > 0 {
                    self.retry_not_before = Some(now + Duration::from_millis(u64::from(r.retry_after_ms)));
                }
                let loss = TransportLoss::Rejected { reason: r.reason, message: r.message.clone() };
                let resuming = self.session.is_some();
                if resuming && (r.reason.session_gone() || r.reason == RejectReason::BadHello) {
                    // The session cannot be resumed: say why (an invalid or
                    // reused token may mean a stolen one) and start fresh.
                    let reason = match r.reason {
                        RejectReason::UnknownSession => SessionEnd::Expired,
                        _ => SessionEnd::Refused { reason: r.reason, message: r.message },
                    };
                    self.end_session(now, reason, Goodbye::Done, true);
                } else if r.reason.is_transient() || r.reason.session_gone() {
                    self.lose_no_close(now, loss, false);
                } else {
                    let reason = SessionEnd::Refused { reason: r.reason, message: r.message };
                    self.end_session(now, reason, Goodbye::Done, false);
                }
            }
            Frame::Close(c) => self.on_close(now, c),
            other => {
                let kind = other.kind();
                let text = format!("frame 0x{kind:02x} before WELCOME");
                self.protocol_error(now, CloseCode::ProtocolError, &text, TransportLoss::UnexpectedFrame { kind });
            }
        }
    }

    fn on_welcome(&mut self, now: Instant, tid: TransportId, w: Welcome) {
        if w.version != frame::VERSION {
            let kind = frame::kind::WELCOME;
            let text = format!("WELCOME chose version {}", w.version);
            return self.protocol_error(now, CloseCode::ProtocolError, &text, TransportLoss::UnexpectedFrame { kind });
        }
        let server_idle = Duration::from_millis(u64::from(w.idle_timeout_ms));
        let max_interval = match self.cfg.heartbeat.fit_server(server_idle) {
            Ok(m) => m,
            Err(e) => {
                let bye = Goodbye::Close(CloseCode::Normal, e.to_string());
                return self.end_session(now, SessionEnd::Incompatible(e.to_string()), bye, false);
            }
        };
        match &mut self.adaptive {
            Some(a) => {
                a.set_cap(max_interval);
                self.apply_learned_interval();
            }
            None => self.hb.set_interval(self.cfg.heartbeat.interval),
        }
        self.peer_max_frame = w.max_frame.min(frame::MAX_MAX_FRAME);
        let resuming = self.session.as_ref().map(|s| s.id);
        let carried = match self.link {
            Link::Handshaking { carried, hello_at, .. } => {
                self.last_rtt = Some(now.saturating_duration_since(hello_at));
                carried
            }
            _ => 0,
        };
        if w.resumed {
            if resuming != Some(w.session_id) {
                let kind = frame::kind::WELCOME;
                let text = "WELCOME resumed a session that was not asked for";
                return self.protocol_error(
                    now,
                    CloseCode::ProtocolError,
                    text,
                    TransportLoss::UnexpectedFrame { kind },
                );
            }
            let before = self.out.last_assigned();
            if let Err(e) = self.out.rewind(w.last_received) {
                return self.violation(now, e);
            }
            if self.beyond_frame_limit(now) {
                return;
            }
            if let Some(s) = &mut self.session {
                s.token = w.token;
                s.idle_timeout = server_idle;
                s.grace = Duration::from_millis(u64::from(w.grace_ms));
            }
            self.resumes += 1;
            self.io.event(ClientEvent::Resumed { session: w.session_id, replayed: before - w.last_received });
        } else {
            if resuming.is_some() {
                // The server should have rejected the resume; it opened a new
                // session instead, so the old one is gone.
                self.end_session(now, SessionEnd::Expired, Goodbye::Done, true);
            }
            if self.out.rewind(0).is_err() {
                // Unreachable: a fresh outbound has nothing acknowledged.
                self.out.take_unacked();
            }
            if self.beyond_frame_limit(now) {
                return;
            }
            self.inb.reset();
            self.session = Some(SessionCtx {
                id: w.session_id,
                token: w.token,
                idle_timeout: server_idle,
                grace: Duration::from_millis(u64::from(w.grace_ms)),
            });
            self.io.event(ClientEvent::Connected { session: w.session_id });
        }
        // A fresh session starts from nothing; a resumed one had its HELLO's ack.
        self.inb.handshake_acked(now, if w.resumed { carried } else { 0 });
        self.link = Link::Established { tid, since: now };
        self.hb.reset(now);
        self.resumable_until = None;
        self.retry_not_before = None;
        self.server_slow = false;
    }

    /// True (and the session ended with CLOSE 3005) when a message still
    /// waiting for acknowledgement — checked after the WELCOME's
    /// `last_received` released what the server has — can never fit the
    /// server's announced maximum: hand everything back rather than loop on
    /// 2001 (`docs/PROTOCOL.md` §3.2).
    fn beyond_frame_limit(&mut self, now: Instant) -> bool {
        let max_payload = self.peer_max_frame as usize - 9;
        let longest = self.out.longest();
        if longest <= max_payload {
            return false;
        }
        let text = format!(
            "a {longest}-byte message waits for the server but its max_frame {} allows {max_payload}",
            self.peer_max_frame
        );
        let bye = Goodbye::Close(CloseCode::FrameLimit, text.clone());
        self.end_session(now, SessionEnd::Incompatible(text), bye, true);
        true
    }

    /// Uses the adaptive learner's interval for the current network, and
    /// reports it when it differs from the one in use.
    fn apply_learned_interval(&mut self) {
        let Some(a) = &mut self.adaptive else { return };
        let interval = a.interval(&self.network);
        if interval != self.hb.interval() {
            self.hb.set_interval(interval);
            self.io.event(ClientEvent::IntervalLearned { network: self.network.clone(), interval });
        }
    }

    fn on_established_frame(&mut self, now: Instant, frame: Frame) {
        if let Frame::Pong { nonce, .. } = &frame {
            // An unsolicited PONG (no PING with its nonce outstanding) is
            // heard like any frame but measures nothing.
            if let Some(rtt) = self.hb.rtt_for(now, *nonce) {
                self.last_rtt = Some(rtt);
                self.io.event(ClientEvent::Rtt(rtt));
            }
        }
        if let Some(ProbeCause::Idle { gap, interval }) = self.hb.on_heard(now) {
            if let Some(a) = &mut self.adaptive {
                a.survived(&self.network, gap, interval);
            }
            self.apply_learned_interval();
        }
        match frame {
            Frame::Data { seq, payload } => {
                match self.inb.on_data(now, seq, payload.len(), &self.cfg.receive_window, &self.cfg.ack) {
                    Ok(DataVerdict::Deliver) => self.io.event(ClientEvent::Message(payload)),
                    Ok(DataVerdict::Duplicate | DataVerdict::Deferred) => {}
                    Err(e) => self.violation(now, e),
                }
            }
            Frame::Ack { ack } => {
                self.on_ack(now, ack);
            }
            Frame::Ping { nonce, ack, payload } => {
                // The ack first: a PING acknowledging data never sent ends
                // the session (3003) and is not answered.
                if !self.on_ack(now, ack) {
                    return;
                }
                self.hold_payload(payload, ClientEvent::PingPayload);
                if let Some(tid) = self.current_tid() {
                    let mine = self.inb.ack_sent();
                    self.io.send(tid, Frame::Pong { nonce, ack: mine, payload: Bytes::new() });
                }
            }
            Frame::Pong { ack, payload, .. } => {
                if self.on_ack(now, ack) {
                    self.hold_payload(payload, ClientEvent::PongPayload);
                }
            }
            Frame::Close(c) => self.on_close(now, c),
            other => {
                let kind = other.kind();
                let text = format!("frame 0x{kind:02x} after WELCOME");
                self.protocol_error(now, CloseCode::ProtocolError, &text, TransportLoss::UnexpectedFrame { kind });
            }
        }
    }

    /// Applies a cumulative ack; false if it broke the rules (session ended).
    fn on_ack(&mut self, now: Instant, ack: u64) -> bool {
        match self.out.on_ack(ack) {
            Ok(()) => true,
            Err(e) => {
                self.violation(now, e);
                false
            }
        }
    }

    /// Queues a PING/PONG payload for the application if the receive window
    /// has room (it is informational: dropped otherwise).
    fn hold_payload(&mut self, payload: Bytes, event: fn(Bytes) -> ClientEvent) {
        if !payload.is_empty() && self.inb.has_room(&self.cfg.receive_window, payload.len()) {
            self.inb.hold(payload.len());
            self.io.event(event(payload));
        }
    }

    fn on_close(&mut self, now: Instant, c: Close) {
        if let Some(tid) = self.current_tid() {
            self.io.abandon(tid);
        }
        if c.retry_after_ms > 0 {
            self.retry_not_before = Some(now + Duration::from_millis(u64::from(c.retry_after_ms)));
        }
        if c.code.ends_session() {
            // The server ended the session. Restart only if it ended for a
            // reason a fresh session fixes (not a kick or a deliberate close).
            let restart = matches!(
                c.code,
                CloseCode::ReplayOverflow
                    | CloseCode::SessionExpired
                    | CloseCode::SequenceViolation
                    | CloseCode::FrameLimit
            );
            let reason = if c.code == CloseCode::SessionExpired {
                SessionEnd::Expired
            } else {
                SessionEnd::PeerClosed { code: c.code, reason: c.reason }
            };
            self.end_session(now, reason, Goodbye::Done, restart);
        } else {
            // A resync asks for a resume at once: the server is ready for it.
            let immediate = c.code == CloseCode::Resync;
            self.lose_no_close(now, TransportLoss::PeerClosed { code: c.code, reason: c.reason }, immediate);
        }
    }

    /// The peer broke the sequence rules: CLOSE 3003, the session ends, a
    /// fresh one starts.
    fn violation(&mut self, now: Instant, e: SequenceError) {
        let bye = Goodbye::Close(CloseCode::SequenceViolation, e.to_string());
        self.end_session(now, SessionEnd::SequenceViolation(e), bye, true);
    }

    fn protocol_error(&mut self, now: Instant, code: CloseCode, text: &str, loss: TransportLoss) {
        if let Some(tid) = self.current_tid() {
            self.io.close(tid, code, Duration::ZERO, text);
        }
        self.lose_no_close(now, loss, false);
    }

    /// The current transport is gone: close it and schedule the next attempt.
    fn lose(&mut self, now: Instant, reason: TransportLoss, immediate: bool) {
        self.abandon_transports();
        self.lose_no_close(now, reason, immediate);
    }

    fn lose_no_close(&mut self, now: Instant, reason: TransportLoss, immediate: bool) {
        match self.link {
            Link::Established { since, .. } => {
                if now.saturating_duration_since(since) >= self.cfg.backoff.stable_after {
                    self.backoff.reset();
                }
                if let Some(s) = &self.session {
                    self.resumable_until = Some(self.hb.last_heard() + self.local_expiry_after(s));
                }
                self.io.event(ClientEvent::Disconnected { reason });
            }
            Link::Closed { .. } => return,
            Link::Connecting { .. } | Link::Handshaking { .. } => {
                self.io.event(ClientEvent::AttemptFailed { reason });
            }
            Link::Waiting { .. } => {}
        }
        self.schedule(now, immediate);
    }

    fn schedule(&mut self, now: Instant, immediate: bool) {
        let retry_after = self.retry_not_before.map(|r| r.saturating_duration_since(now));
        let attempt = self.backoff.attempts();
        let delay = if immediate && retry_after.is_none() {
            Duration::ZERO
        } else {
            let ctx = DelayContext {
                resumable_until: self.resumable_until,
                attempt_budget: self.cfg.handshake_timeout,
                retry_after,
            };
            self.backoff.next_delay(now, &mut self.rng, ctx)
        };
        self.io.event(ClientEvent::Reconnecting { attempt, delay });
        self.link = Link::Waiting { until: now + delay };
    }

    /// Ends the session: says goodbye on the transport in flight (any
    /// state), hands back what was unacknowledged, and either restarts
    /// fresh or stops for good.
    fn end_session(&mut self, now: Instant, reason: SessionEnd, bye: Goodbye, restart: bool) {
        if let Goodbye::Close(code, text) = bye {
            match self.link {
                Link::Handshaking { tid, .. } | Link::Established { tid, .. } => {
                    self.io.close(tid, code, Duration::ZERO, &text);
                }
                Link::Connecting { .. } | Link::Waiting { .. } | Link::Closed { .. } => {}
            }
        }
        // Transports still opening: nothing can be said on them.
        for tid in self.racers.take_all() {
            self.io.abandon(tid);
        }
        let session = self.session.take().map(|s| s.id);
        let unacked = self.out.take_unacked();
        self.inb.reset();
        self.resumable_until = None;
        self.io.event(ClientEvent::SessionEnded { session, reason: reason.clone(), unacked, restarting: restart });
        if restart {
            // The server answered, so the network works: restart from the
            // first backoff step, jittered, so a server ending many sessions
            // at once does not get them all back at the same instant.
            self.backoff.reset();
            self.link = Link::Waiting { until: now };
            self.schedule(now, false);
        } else {
            self.link = Link::Closed { reason };
        }
    }
}

impl stream::Sending for Client {
    fn ended(&self) -> Option<&SessionEnd> {
        match &self.link {
            Link::Closed { reason } => Some(reason),
            _ => None,
        }
    }

    fn outbound(&mut self) -> (&mut Outbound, u32) {
        (&mut self.out, self.peer_max_frame)
    }

    fn flush(&mut self, now: Instant) {
        Client::flush(self, now);
    }

    fn overflow(&mut self, now: Instant, reason: SessionEnd) {
        let bye = Goodbye::Close(CloseCode::ReplayOverflow, "replay buffer overflow".into());
        self.end_session(now, reason, bye, true);
    }
}

impl Client {
    /// How long after the last frame heard the client gives a detached session
    /// up by itself. Never earlier than the server: the server may have heard
    /// this client's probes for up to a whole probe cycle after the client last
    /// heard the server, and counts grace from the detach instead of the last
    /// frame when its idle timeout exceeds grace (`docs/PROTOCOL.md` §10).
    fn local_expiry_after(&self, s: &SessionCtx) -> Duration {
        // The longest interval this config may use, not the current one: the
        // adaptive learner may just have lowered it after this very loss.
        let cycle = self.cfg.heartbeat.dead_after();
        let detach_slack = if s.idle_timeout > s.grace { s.idle_timeout } else { Duration::ZERO };
        cycle + detach_slack + s.grace
    }
}

fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::Profile;

    #[test]
    fn asks_to_connect_at_once_then_sends_hello() {
        let t = crate::test_epoch();
        let mut c = Client::new(ClientConfig::profile(Profile::Default), Rng::from_seed(1), t).expect("valid");
        assert_eq!(c.poll_timeout(), Some(t));
        c.handle_timeout(t);
        let Some(Transmit::Connect { transport }) = c.poll_transmit() else { panic!("expected connect") };
        c.handle_connected(t, transport);
        match c.poll_transmit() {
            Some(Transmit::Send { frame: Frame::Hello(h), .. }) => {
                assert!(h.resume.is_none());
                assert_eq!(h.idle_timeout_ms, 40_000);
            }
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    #[test]
    fn invalid_config_is_refused() {
        let mut cfg = ClientConfig::profile(Profile::Default);
        cfg.max_frame = 10;
        let err = Client::new(cfg, Rng::from_seed(1), crate::test_epoch()).expect_err("too small");
        assert_eq!(err.field, "max_frame");
    }
}
