//! [`ServerSession`]: one session on the server and the transport that
//! currently carries it.
//!
//! A session is `Attached` while a transport carries it, `Detached` (since
//! an instant) while it waits for a resume, and `Ended` (with the reason)
//! for good. A resume within grace attaches the new transport and closes
//! the old one, after which nothing the old one carries is read. When grace
//! runs out the session ends and its unacknowledged messages are handed back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Refusal, ServerConfig};
use crate::error::{CloseCode, RejectReason, SendError, SequenceError, SessionEnd, TransportLoss};
use crate::frame::{self, DecodeError, Frame, Hello, Welcome};
use crate::outputs::Outputs;
use crate::rng::Rng;
use crate::stream::{self, DataVerdict, Inbound, Outbound};
use crate::token::{ResumeToken, SessionId, TokenCheck, TokenHash, TokenState};
use crate::{Transmit, TransportId};

/// What one session tells the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The session was opened (its first event).
    Opened,
    /// An application message, delivered exactly once and in order. Taking
    /// it with [`ServerSession::poll_event`] is what lets it be acknowledged.
    Message(Bytes),
    /// Application data carried on a PING (dropped while the receive
    /// window is full: it is informational).
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

/// Where the session stands.
#[derive(Debug, Clone)]
pub(super) enum State {
    /// A transport carries the session.
    Attached {
        tid: TransportId,
        /// The token issued in this transport's WELCOME, until the client
        /// proves it has it by sending a valid frame other than CLOSE here.
        unconfirmed: Option<TokenHash>,
    },
    /// No transport since `since`; grace runs (§10.1), or ends `until`
    /// when the client said it was leaving (CLOSE 1001 with a retry-after:
    /// a page unloading, back at once if it was a reload, §6.2).
    Detached { since: Instant, until: Option<Instant> },
    /// For good.
    Ended { reason: SessionEnd },
}

/// One session on the server. See the crate docs for the drive contract;
/// [`super::admit`] opens and resumes sessions.
#[derive(Debug)]
pub struct ServerSession {
    pub(super) id: SessionId,
    pub(super) tokens: TokenState,
    pub(super) out: Outbound,
    pub(super) inb: Inbound,
    /// The server's settings, shared by every session (an idle session
    /// must not carry its own copy).
    cfg: Arc<ServerConfig>,
    pub(super) idle_timeout: Duration,
    pub(super) peer_max_frame: u32,
    pub(super) state: State,
    /// Last frame received on any transport of this session.
    last_heard: Instant,
    /// The latest time given with an input (pacing acks for what the
    /// application takes between inputs).
    now: Instant,
    pong_payload: Bytes,
    io: Outputs<SessionEvent>,
}

impl ServerSession {
    /// Opens a new session for an accepted HELLO on `tid`, queuing the WELCOME.
    pub(crate) fn open(now: Instant, cfg: &Arc<ServerConfig>, rng: &mut Rng, tid: TransportId, hello: &Hello) -> Self {
        let token = ResumeToken::random(rng);
        let mut s = ServerSession::new(now, cfg, SessionId::random(rng), TokenState::new(&token), hello.max_frame);
        s.idle_timeout = cfg.grant_idle_timeout(hello.idle_timeout_ms);
        s.state = State::Attached { tid, unconfirmed: None };
        s.welcome(tid, false, token);
        s.io.event(SessionEvent::Opened);
        s
    }

    /// A session with nothing sent or received yet, detached.
    pub(super) fn new(
        now: Instant,
        cfg: &Arc<ServerConfig>,
        id: SessionId,
        tokens: TokenState,
        peer_max_frame: u32,
    ) -> Self {
        let mut inb = Inbound::default();
        if cfg.commit_acks {
            inb.gate_on_commit();
        }
        ServerSession {
            id,
            tokens,
            out: Outbound::new(cfg.replay.clone()),
            inb,
            idle_timeout: cfg.min_idle_timeout,
            cfg: cfg.clone(),
            peer_max_frame,
            state: State::Detached { since: now, until: None },
            last_heard: now,
            now,
            pong_payload: Bytes::new(),
            io: Outputs::default(),
        }
    }

    // ----- getters -------------------------------------------------------

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The transport carrying the session, if attached.
    pub fn transport(&self) -> Option<TransportId> {
        match self.state {
            State::Attached { tid, .. } => Some(tid),
            _ => None,
        }
    }

    /// When the session last received a frame.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Since when the session has had no transport (None while attached or
    /// ended). A restored session counts from its restore.
    pub fn detached_since(&self) -> Option<Instant> {
        match self.state {
            State::Detached { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<&SessionEnd> {
        match &self.state {
            State::Ended { reason } => Some(reason),
            _ => None,
        }
    }

    /// True once ended; drop it after draining its outputs.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended { .. })
    }

    /// When a detached session expires (None while attached or ended).
    ///
    /// Grace counts from the last frame heard — the server's best estimate of
    /// when contact was lost — so an outage longer than grace expires the
    /// session even though detection came later. When the granted idle
    /// timeout exceeds grace (long adaptive intervals), silence alone cannot
    /// be told from an outage, and grace counts from the detach instead.
    pub fn expires_at(&self) -> Option<Instant> {
        let State::Detached { since, until } = self.state else { return None };
        // Without idle enforcement (debug), silence is not an outage.
        let grace = self.cfg.grace;
        let at = if self.cfg.enforce_idle && self.idle_timeout <= grace {
            (self.last_heard + grace).max(since)
        } else {
            since + grace
        };
        Some(until.map_or(at, |u| u.min(at)))
    }

    /// The token the client last proved it holds (or the session's first).
    pub fn token(&self) -> crate::token::TokenHash {
        self.tokens.parts().0
    }

    /// The highest seq the client acknowledged.
    pub fn acked(&self) -> u64 {
        self.out.acked()
    }

    /// The seq the next message sent gets.
    pub fn next_seq(&self) -> u64 {
        self.out.last_assigned() + 1
    }

    /// Unacknowledged outgoing messages and their bytes.
    pub fn buffered(&self) -> (usize, usize) {
        self.out.buffered()
    }

    /// The idle timeout granted to the client.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The largest payload [`ServerSession::send`] accepts now: what fits one
    /// frame of the client's announced maximum.
    pub fn max_payload(&self) -> usize {
        (self.peer_max_frame as usize).saturating_sub(9)
    }

    // ----- commands ------------------------------------------------------

    /// Application data to carry on every PONG.
    pub fn set_pong_payload(&mut self, payload: Bytes) {
        self.pong_payload = payload.slice(..payload.len().min(frame::MAX_PING_PAYLOAD));
    }

    /// Queues an application message for the client. A payload larger than
    /// the client's announced maximum allows is refused at once
    /// ([`SendError::TooLarge`]); after the end, the error names the real
    /// reason the session ended.
    pub fn send(&mut self, now: Instant, payload: Bytes) -> Result<u64, SendError> {
        self.now = now;
        stream::send(self, now, payload)
    }

    /// Queues a message whose seq a durable store assigned (every message of
    /// a store-backed session is numbered there first, so that any node can
    /// replay it). `Ok(true)`: queued; `Ok(false)`: already had it; a seq
    /// ahead of the next one is refused with [`SendError::OutOfOrder`]
    /// (fetch the missing ones from the store and offer them in order).
    pub fn send_at(&mut self, now: Instant, seq: u64, payload: Bytes) -> Result<bool, SendError> {
        let expected = self.out.last_assigned() + 1;
        if seq < expected && self.end_reason().is_none() {
            return Ok(false);
        }
        if seq > expected {
            return Err(SendError::OutOfOrder { expected, got: seq });
        }
        self.send(now, payload).map(|_| true)
    }

    /// The seq of the latest client message taken with
    /// [`ServerSession::poll_event`] (what a store-backed application
    /// commits).
    pub fn last_taken(&self) -> u64 {
        self.inb.taken()
    }

    /// The effects of every client message through `seq` are durable
    /// (with [`ServerConfig::commit_acks`]): acks may now cover them.
    /// Without `commit_acks`, acks follow taking and this does nothing.
    pub fn commit(&mut self, now: Instant, seq: u64) {
        self.now = now;
        self.inb.commit(now, seq, &self.cfg.ack);
        if matches!(self.state, State::Attached { .. }) {
            self.flush(now);
        }
    }

    /// Ends the session deliberately (application close or operator kick),
    /// with `code` if it ends sessions, else 3000.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        let code = code.for_session_end();
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
        self.now = now;
        if let State::Attached { tid, .. } = self.state {
            self.io.close(tid, CloseCode::GoingAway, retry_after, reason);
            self.detach(now, TransportLoss::Closed);
        }
    }

    // ----- inputs --------------------------------------------------------

    /// A resume HELLO for this session arrived on `tid` (§5.4). On success
    /// the WELCOME and the replay are queued on `tid`, the old transport (if
    /// any) is closed, and the number of replayed messages is returned. A
    /// refused token or an inconsistent `last_received` leaves the session
    /// unchanged. A message waiting for the client that is larger than the
    /// HELLO's `max_frame` allows ends the session (CLOSE 3005, §3.2).
    pub(crate) fn resume(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        tid: TransportId,
        hello: &Hello,
        fresh: Option<ResumeToken>,
    ) -> Result<u64, Refusal> {
        let failed = |reason| Err(Refusal::resume_failed(reason));
        let Some(r) = &hello.resume else { return failed(RejectReason::BadHello) };
        if self.is_ended() || r.session_id != self.id {
            return failed(RejectReason::UnknownSession);
        }
        match self.tokens.check(&r.token) {
            TokenCheck::Valid => {}
            TokenCheck::Invalid => return failed(RejectReason::InvalidToken),
            TokenCheck::Reused => return failed(RejectReason::TokenReused),
        }
        self.now = now;
        let before = self.out.last_assigned();
        if self.out.rewind(r.last_received).is_err() {
            return failed(RejectReason::BadHello);
        }
        let longest = self.out.longest();
        let max = (hello.max_frame as usize).saturating_sub(9);
        if longest > max {
            let text = format!(
                "a {longest}-byte message waits for this client but its max_frame {} allows {max}: \
                 the session ends and the server's application gets the message back",
                hello.max_frame
            );
            self.end(SessionEnd::Incompatible(text.clone()), Some((CloseCode::FrameLimit, &text)));
            return Err(Refusal::close(CloseCode::FrameLimit, &text));
        }
        if let State::Attached { tid: old, .. } = self.state {
            self.io.close(old, CloseCode::TransportReplaced, Duration::ZERO, "resumed on another transport");
        }
        // The client holds the token it presented (PROTOCOL §5.4).
        self.tokens.presented(&r.token);
        let fresh = fresh.unwrap_or_else(|| ResumeToken::random(rng));
        let issued = self.tokens.issue(&fresh);
        self.idle_timeout = self.cfg.grant_idle_timeout(hello.idle_timeout_ms);
        self.peer_max_frame = hello.max_frame;
        self.state = State::Attached { tid, unconfirmed: Some(issued) };
        self.last_heard = now;
        self.welcome(tid, true, fresh);
        let replayed = before - r.last_received;
        self.io.event(SessionEvent::Resumed { replayed });
        self.flush(now);
        Ok(replayed)
    }

    /// Bytes of one whole frame arrived on `tid`: decoded here, against the
    /// server's maximum frame size. Returns the frame's type byte if it
    /// decoded (for the runtime's counters and logs).
    pub fn handle_bytes(&mut self, now: Instant, tid: TransportId, bytes: &[u8]) -> Option<u8> {
        match Frame::decode(bytes, self.cfg.max_frame) {
            Ok(frame) => {
                let kind = frame.kind();
                self.handle_frame(now, tid, frame);
                Some(kind)
            }
            Err(e) => {
                self.handle_decode_error(now, tid, e);
                None
            }
        }
    }

    /// Bytes on `tid` could not be decoded (e.g. a TCP length prefix above
    /// the maximum). Bad input confirms no token.
    pub fn handle_decode_error(&mut self, now: Instant, tid: TransportId, err: DecodeError) {
        self.now = now;
        if self.transport() == Some(tid) {
            self.protocol_error(now, err.close_code(), &err.to_string(), TransportLoss::Malformed(err));
        }
    }

    /// Transport `tid` closed or failed.
    pub fn handle_transport_closed(&mut self, now: Instant, tid: TransportId) {
        self.now = now;
        if self.transport() == Some(tid) {
            self.detach(now, TransportLoss::Closed);
        }
    }

    /// Acts on every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        match self.state {
            State::Attached { tid, .. } => {
                let silent = now.saturating_duration_since(self.last_heard);
                if self.cfg.enforce_idle && silent >= self.idle_timeout {
                    self.io.abandon(tid);
                    return self.detach(now, TransportLoss::HeartbeatTimeout { silent_for: silent });
                }
                if self.inb.resync_due() {
                    let text = "messages deferred while the application was busy: resume to receive them again";
                    self.io.close(tid, CloseCode::Resync, Duration::ZERO, text);
                    return self.detach(now, TransportLoss::Resync);
                }
                self.flush(now);
            }
            State::Detached { .. } if self.expires_at().is_some_and(|at| now >= at) => {
                self.end(SessionEnd::Expired, None);
            }
            _ => {}
        }
    }

    // ----- outputs -------------------------------------------------------

    /// When to call [`ServerSession::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Attached { .. } => {
                let resync = self.inb.resync_due().then_some(self.now);
                let idle = self.cfg.enforce_idle.then(|| self.last_heard + self.idle_timeout);
                [resync, idle, self.inb.ack_due()].into_iter().flatten().min()
            }
            State::Detached { .. } => self.expires_at(),
            State::Ended { .. } => None,
        }
    }

    /// The next thing to do on a transport. Drain it after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.pop_transmit()
    }

    /// The next event for the application. Take events only as fast as the
    /// application can handle them: a message counts as delivered, and is
    /// acknowledged, once taken; untaken ones fill the receive window
    /// (§7.8), never stall the transport.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        let e = self.io.pop_event()?;
        match &e {
            SessionEvent::Message(b) => self.inb.took(self.now, b.len(), true, &self.cfg.ack),
            SessionEvent::PingPayload(b) => self.inb.took(self.now, b.len(), false, &self.cfg.ack),
            _ => {}
        }
        Some(e)
    }

    /// True while events wait for the application.
    pub fn has_events(&self) -> bool {
        self.io.has_events()
    }

    // ----- internals -----------------------------------------------------

    fn welcome(&mut self, tid: TransportId, resumed: bool, token: ResumeToken) {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let carried = self.inb.last_taken();
        let w = Welcome {
            version: frame::VERSION,
            resumed,
            session_id: self.id,
            token,
            last_received: carried,
            max_frame: self.cfg.max_frame,
            idle_timeout_ms: ms(self.idle_timeout),
            grace_ms: ms(self.cfg.grace),
        };
        self.io.send(tid, Frame::Welcome(w));
        self.inb.handshake_acked(self.now, carried);
    }

    fn handle_frame(&mut self, now: Instant, tid: TransportId, frame: Frame) {
        self.now = now;
        let State::Attached { tid: current, unconfirmed } = &mut self.state else { return };
        if *current != tid {
            return; // a replaced transport delivers nothing
        }
        self.last_heard = now;
        // Any valid frame after WELCOME proves the client holds this
        // transport's token — except a CLOSE, which may be the client
        // refusing the WELCOME.
        if !matches!(frame, Frame::Close(_)) {
            if let Some(issued) = unconfirmed.take() {
                self.tokens.confirm(issued);
            }
        }
        match frame {
            Frame::Data { seq, payload } => {
                match self.inb.on_data(now, seq, payload.len(), &self.cfg.receive_window, &self.cfg.ack) {
                    Ok(DataVerdict::Deliver) => self.io.event(SessionEvent::Message(payload)),
                    Ok(DataVerdict::Duplicate | DataVerdict::Deferred) => {}
                    Err(e) => return self.violation(e),
                }
            }
            Frame::Ack { ack } | Frame::Pong { ack, .. } => {
                if let Err(e) = self.out.on_ack(ack) {
                    return self.violation(e);
                }
            }
            Frame::Ping { nonce, ack, payload } => {
                // The ack first: a PING acknowledging data never sent ends
                // the session (3003) and is not answered.
                if let Err(e) = self.out.on_ack(ack) {
                    return self.violation(e);
                }
                if !payload.is_empty() && self.inb.has_room(&self.cfg.receive_window, payload.len()) {
                    self.inb.hold(payload.len());
                    self.io.event(SessionEvent::PingPayload(payload));
                }
                let mine = self.inb.ack_sent();
                self.io.send(tid, Frame::Pong { nonce, ack: mine, payload: self.pong_payload.clone() });
            }
            Frame::Close(c) => {
                self.io.abandon(tid);
                if c.code.ends_session() {
                    self.state = State::Detached { since: now, until: None }; // the transport is gone
                    return self.end(SessionEnd::PeerClosed { code: c.code, reason: c.reason }, None);
                }
                // A client leaving (1001 with a retry-after) may be back at
                // once (a page reload) or never (a tab closed): the session
                // waits that long, never longer than grace (§6.2).
                let leaving = c.code == CloseCode::GoingAway && c.retry_after_ms > 0;
                let wait = Duration::from_millis(u64::from(c.retry_after_ms));
                self.detach(now, TransportLoss::PeerClosed { code: c.code, reason: c.reason });
                if leaving {
                    self.state = State::Detached { since: now, until: Some(now + wait) };
                }
                return;
            }
            other => {
                let kind = other.kind();
                let text = format!("frame 0x{kind:02x} after WELCOME");
                return self.protocol_error(
                    now,
                    CloseCode::ProtocolError,
                    &text,
                    TransportLoss::UnexpectedFrame { kind },
                );
            }
        }
        self.flush(now);
    }

    /// Writes every message owed to the client and an ACK that is due.
    fn flush(&mut self, now: Instant) {
        let State::Attached { tid, .. } = self.state else { return };
        while let Some((seq, payload)) = self.out.next_to_write() {
            self.io.send(tid, Frame::Data { seq, payload });
        }
        if self.inb.ack_due().is_some_and(|due| due <= now) {
            let ack = self.inb.ack_sent();
            self.io.send(tid, Frame::Ack { ack });
        }
    }

    /// The client broke the sequence rules: the session ends with 3003.
    fn violation(&mut self, e: SequenceError) {
        let text = e.to_string();
        self.end(SessionEnd::SequenceViolation(e), Some((CloseCode::SequenceViolation, &text)));
    }

    /// Bad input on the current transport: CLOSE with `code`, then detach.
    fn protocol_error(&mut self, now: Instant, code: CloseCode, text: &str, loss: TransportLoss) {
        if let State::Attached { tid, .. } = self.state {
            self.io.close(tid, code, Duration::ZERO, text);
            self.detach(now, loss);
        }
    }

    fn detach(&mut self, now: Instant, reason: TransportLoss) {
        self.state = State::Detached { since: now, until: None };
        self.io.event(SessionEvent::Detached { reason });
    }

    /// Ends the session: CLOSE `close` on the attached transport (or just
    /// close it), hand back what the client never acknowledged.
    fn end(&mut self, reason: SessionEnd, close: Option<(CloseCode, &str)>) {
        match self.state {
            State::Ended { .. } => return,
            State::Attached { tid, .. } => match close {
                Some((code, text)) => self.io.close(tid, code, Duration::ZERO, text),
                None => self.io.finish(tid),
            },
            State::Detached { .. } => {}
        }
        let unacked = self.out.take_unacked();
        self.state = State::Ended { reason: reason.clone() };
        self.io.event(SessionEvent::Ended { reason, unacked });
    }
}

impl stream::Sending for ServerSession {
    fn ended(&self) -> Option<&SessionEnd> {
        self.end_reason()
    }

    fn outbound(&mut self) -> (&mut Outbound, u32) {
        (&mut self.out, self.peer_max_frame)
    }

    fn flush(&mut self, now: Instant) {
        ServerSession::flush(self, now);
    }

    fn overflow(&mut self, _now: Instant, reason: SessionEnd) {
        let text = "replay buffer overflow: the client fell too far behind";
        self.end(reason, Some((CloseCode::ReplayOverflow, text)));
    }
}
