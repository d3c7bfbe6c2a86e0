//! Drives `tether_proto::Client` with an arbitrary sequence of inputs in
//! virtual time, playing the runtime, the server at the far end of every
//! transport it asks for, and the client's application, and checks what it
//! transmits and delivers against a model. See docs/FUZZING.md.
//!
//! Run from `fuzz/`: `cargo +nightly fuzz run -s none client`.
#![no_main]

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether_fuzz::{
    check_frame, epoch, mutate, near, reason_text, reject_reason, stats, Code, MaxFrame, Retry, Size, Step, MAX_OPS,
    PAYLOAD_BUDGET,
};
use tether_proto::frame::{self, Close, DecodeError, Frame, Hello, Reject, Welcome};
use tether_proto::token::{ResumeToken, SessionId};
use tether_proto::{
    AckConfig, Client, ClientConfig, ClientEvent, CloseCode, OverflowPolicy, Profile, ReceiveWindow, ReplayLimits, Rng,
    SendError, Transmit, TransportId,
};

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Setup {
    seed: u64,
    profile: u8,
    enforce: bool,
    replay_messages: u8,
    replay_bytes: Option<u8>,
    end_on_overflow: bool,
    window_messages: u8,
    window_bytes: Option<u8>,
    handshake: u8,
    big_frame: bool,
    auth: u8,
    ack_delay_ms: u8,
    ack_every: u8,
    race: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The runtime finished opening transport `t` (0: the newest asked for).
    Connected { t: u8 },
    /// Transport `t` reached the server (TCP open, handshakes to follow).
    Reachable { t: u8 },
    /// Transport `t` closed or failed (or never opened).
    TransportClosed { t: u8 },
    /// Whatever it takes to have an open transport (time passes until the
    /// client asks for one, the runtime connects it), then the server on it
    /// sends a frame built from the model (a WELCOME, typically).
    Reconnect(SFrame),
    /// The server on transport `t` sends a frame built from the model.
    Frame { t: u8, frame: SFrame },
    /// The same, with one byte flipped or the frame cut short.
    Mutated { t: u8, frame: SFrame, at: u16, xor: u8 },
    /// Arbitrary bytes as one frame.
    Raw { t: u8, bytes: Vec<u8> },
    /// The runtime could not cut a frame from the stream.
    DecodeError { t: u8, too_large: bool },
    /// Virtual time passes; then `handle_timeout`.
    Advance(Step),
    /// `handle_timeout` with nothing due.
    EarlyTimeout,
    /// The network changed (to one of four named networks, or unnamed).
    NetworkChange(Option<u8>),
    /// The application sends.
    AppSend(Size),
    /// The application takes up to n events (0: none; it lags).
    AppTake(u8),
    /// The application catches up.
    AppTakeAll,
    /// The application ends the session.
    Close(Code),
    /// Application data for PINGs.
    PingPayload(u16),
}

/// A frame a server might send.
#[derive(Arbitrary, Debug)]
enum SFrame {
    /// The WELCOME a well-behaved server answers this transport's HELLO
    /// with: the resume it asked for (or, with `fresh`, a new session),
    /// last_received near what the server received, the idle timeout asked.
    Accept {
        fresh: bool,
        last: i8,
        max_frame: MaxFrame,
    },
    Welcome {
        resumed: bool,
        session: SessionPick,
        last: i8,
        max_frame: MaxFrame,
        idle: Idle,
        grace_tenths: u16,
        version: Option<u8>,
    },
    Reject {
        reason: u8,
        retry: Retry,
    },
    Data {
        delta: i8,
        size: Size,
    },
    Ack {
        delta: i8,
    },
    Ping {
        nonce: u32,
        delta: i8,
        len: u16,
    },
    Pong {
        echo: bool,
        nonce: u32,
        delta: i8,
        len: u16,
    },
    Close {
        code: Code,
        retry: Retry,
        reason: u8,
    },
    /// Only a client sends HELLO.
    Hello,
}

#[derive(Arbitrary, Debug)]
enum SessionPick {
    /// The one the HELLO on this transport asked to resume.
    FromHello,
    /// One this server opened before.
    Known(u8),
    /// A new one (always, for a fresh WELCOME).
    New,
}

/// The idle timeout a WELCOME grants.
#[derive(Arbitrary, Debug)]
enum Idle {
    /// What the client asked for.
    Asked,
    /// Any.
    Ms(u32),
}

/// One transport, as the server at its far end sees it.
struct Tport {
    tid: TransportId,
    /// handle_connected was called for it.
    connected: bool,
    /// The HELLO it opened with.
    hello: Option<Hello>,
    /// The client accepted a WELCOME on it: the session and the client's
    /// frame limit from then on.
    welcome: Option<(SessionId, u32)>,
    /// The client DATA seq expected next on it.
    next_data: u64,
    /// The server's next DATA seq on it.
    server_next: u64,
    /// The client sent CLOSE / asked to close it.
    close_frame: bool,
    closed: bool,
    /// The nonce of the server's last PING on it, and of the client's.
    ping: Option<u32>,
    client_ping: Option<u32>,
}

/// One session the server side opened.
#[derive(Default)]
struct Sess {
    /// The tokens of WELCOMEs the client accepted, oldest first.
    tokens: Vec<ResumeToken>,
    /// Highest client DATA seq received.
    data_max: u64,
    /// Payloads the server sent under each seq.
    data_sent: HashMap<u64, Vec<Bytes>>,
    /// Highest ack the server sent (ACK/PING/PONG/resumed WELCOME).
    max_ack: u64,
    /// Messages the application took.
    app_taken: u64,
}

struct World {
    cfg: ClientConfig,
    client: Client,
    now: Instant,
    tports: Vec<Tport>,
    by_tid: HashMap<TransportId, usize>,
    /// No connection attempt before this (a REJECT's or CLOSE's retry-after).
    not_before: Option<Instant>,
    opened: Vec<SessionId>,
    sess: HashMap<SessionId, Sess>,
    /// The session of the last fresh WELCOME the client accepted.
    latest: Option<SessionId>,
    ping_payload: Bytes,
    // ----- the application's messages -----
    /// Everything the application sent, by stretch of one numbering (a new
    /// one starts when send returns seq 1), by seq − 1.
    epochs: Vec<Vec<Bytes>>,
    /// Message id (its first 8 bytes) → (epoch, seq).
    ids: HashMap<u64, (usize, u64)>,
    /// Where each (epoch, seq) was written.
    written: HashMap<(usize, u64), SessionId>,
    /// Per epoch, the highest `last_received` of a resumed WELCOME the
    /// client accepted: it releases messages up to it, written or not
    /// (§7.5 bounds it by the highest seq *assigned*).
    resume_acked: HashMap<usize, u64>,
    handed_back: HashSet<u64>,
    next_id: u64,
    budget: usize,
    // ----- the application's view of events -----
    cur: Option<SessionId>,
    attached: bool,
    stopped: bool,
    connects: VecDeque<SessionId>,
    replays: VecDeque<(SessionId, u64)>,
    /// DATA frames in the current drain.
    drained_data: u64,
    /// The last CLOSE the client sent, and where.
    last_close: Option<(TransportId, CloseCode)>,
}

fn config(s: &Setup) -> ClientConfig {
    let profile = [Profile::Default, Profile::Realtime, Profile::Adaptive][usize::from(s.profile % 3)];
    let mut cfg = ClientConfig::profile(profile);
    cfg.heartbeat.enforce = s.enforce;
    cfg.max_frame = if s.big_frame { 64 * 1024 } else { frame::MIN_MAX_FRAME };
    cfg.replay = ReplayLimits {
        max_bytes: s.replay_bytes.map_or(1 << 20, |n| 1 + 256 * usize::from(n)),
        max_messages: 1 + usize::from(s.replay_messages % 16),
        overflow: if s.end_on_overflow { OverflowPolicy::EndSession } else { OverflowPolicy::RefuseSend },
    };
    cfg.receive_window = ReceiveWindow {
        max_messages: 1 + usize::from(s.window_messages % 8),
        max_bytes: s.window_bytes.map_or(cfg.max_frame as usize, |n| 1 + 64 * usize::from(n)),
    };
    cfg.ack = AckConfig { delay: Duration::from_millis(s.ack_delay_ms.into()), every: u32::from(s.ack_every % 40) };
    cfg.handshake_timeout = Duration::from_millis(100 + 100 * u64::from(s.handshake % 100));
    cfg.auth = Bytes::from(vec![0xA7; usize::from(s.auth) * 16]);
    cfg.race.max_in_flight = 1 + s.race % 4;
    cfg.race.min_delay = Duration::from_millis(1 + u64::from(s.race / 4));
    cfg.race.delay = cfg.race.min_delay * 3;
    cfg
}

fuzz_target!(|input: Input| {
    let cfg = config(&input.setup);
    let now = epoch();
    let client = Client::new(cfg.clone(), Rng::from_seed(input.setup.seed), now).expect("the fuzz config is valid");
    let mut w = World {
        cfg,
        client,
        now,
        tports: Vec::new(),
        by_tid: HashMap::new(),
        not_before: None,
        opened: Vec::new(),
        sess: HashMap::new(),
        latest: None,
        ping_payload: Bytes::new(),
        epochs: Vec::new(),
        ids: HashMap::new(),
        written: HashMap::new(),
        resume_acked: HashMap::new(),
        handed_back: HashSet::new(),
        next_id: 0,
        budget: PAYLOAD_BUDGET,
        cur: None,
        attached: false,
        stopped: false,
        connects: VecDeque::new(),
        replays: VecDeque::new(),
        drained_data: 0,
        last_close: None,
    };
    w.service();
    for op in input.ops.iter().take(MAX_OPS) {
        w.op(op);
        w.service();
    }
    w.finish();
    stats::report();
});

impl World {
    fn op(&mut self, op: &Op) {
        match op {
            Op::Connected { t } => {
                let Some(ti) = self.pick(*t) else { return };
                let tid = self.tports[ti].tid;
                let fresh = !std::mem::replace(&mut self.tports[ti].connected, true);
                self.client.handle_connected(self.now, tid);
                let n = self.drain();
                assert!(fresh || n == 0, "a second handle_connected for {tid:?} made the client transmit");
                self.only_open(ti, "connected");
            }
            Op::Reachable { t } => {
                let Some(ti) = self.pick(*t) else { return };
                if self.tports[ti].connected {
                    return; // the runtime reports reaching before connecting
                }
                self.client.handle_reachable(self.now, self.tports[ti].tid);
                self.drain();
                self.only_open(ti, "reachable");
            }
            Op::TransportClosed { t } => {
                let Some(ti) = self.pick(*t) else { return };
                let quiet = self.tports[ti].closed;
                self.client.handle_transport_closed(self.now, self.tports[ti].tid);
                let n = self.drain();
                assert!(!quiet || n == 0, "a transport it had closed made the client transmit");
            }
            Op::Reconnect(frame) => {
                for _ in 0..4 {
                    if self.tports.last().is_some_and(|t| !t.closed) {
                        break;
                    }
                    self.now = Step::ToDeadline.apply(self.now, self.client.poll_timeout());
                    self.client.handle_timeout(self.now);
                    self.drain();
                    self.service();
                }
                let Some(ti) = self.pick(0) else { return };
                if !self.tports[ti].connected {
                    self.tports[ti].connected = true;
                    self.client.handle_connected(self.now, self.tports[ti].tid);
                    self.drain();
                    self.service();
                }
                let bytes = self.build(ti, frame);
                self.deliver(ti, bytes);
            }
            Op::Frame { t, frame } => {
                let Some(ti) = self.pick(*t) else { return };
                let bytes = self.build(ti, frame);
                self.deliver(ti, bytes);
            }
            Op::Mutated { t, frame, at, xor } => {
                let Some(ti) = self.pick(*t) else { return };
                let bytes = mutate(self.build(ti, frame), *at, *xor);
                self.deliver(ti, bytes);
            }
            Op::Raw { t, bytes } => {
                let Some(ti) = self.pick(*t) else { return };
                self.deliver(ti, bytes.clone());
            }
            Op::DecodeError { t, too_large } => {
                // Only a transport that was opened has a byte stream.
                let Some(ti) = self.pick(*t).filter(|&ti| self.tports[ti].connected) else { return };
                let quiet = self.tports[ti].closed;
                let max = self.cfg.max_frame;
                let err = if *too_large {
                    DecodeError::FrameTooLarge { len: u64::from(max) + 1, max }
                } else {
                    DecodeError::Empty
                };
                self.client.handle_decode_error(self.now, self.tports[ti].tid, err);
                let n = self.drain();
                assert!(!quiet || n == 0, "a decode error on a closed transport made the client transmit");
            }
            Op::Advance(step) => {
                self.now = step.apply(self.now, self.client.poll_timeout());
                self.client.handle_timeout(self.now);
                self.drain();
            }
            Op::EarlyTimeout => {
                self.client.handle_timeout(self.now);
                assert_eq!(self.drain(), 0, "handle_timeout before any deadline transmitted");
            }
            Op::NetworkChange(key) => {
                let key = key.map(|k| format!("net{}", k % 4));
                self.client.handle_network_change(self.now, key.as_deref());
                self.drain();
            }
            Op::AppSend(size) => self.app_send(*size),
            Op::AppTake(n) => self.take(usize::from(*n)),
            Op::AppTakeAll => self.take(usize::MAX),
            Op::Close(code) => {
                self.client.close(self.now, code.value(), "closed by the fuzzed application");
                self.drain();
            }
            Op::PingPayload(len) => {
                let p = Bytes::from(vec![0x70; usize::from(*len) % 1100]);
                self.ping_payload = p.slice(..p.len().min(frame::MAX_PING_PAYLOAD));
                self.client.set_ping_payload(p);
            }
        }
    }

    /// What a runtime does between inputs: while a deadline is at or before
    /// `now`, call `handle_timeout(now)`. It must settle (no busy loop).
    fn service(&mut self) {
        for round in 0.. {
            match self.client.poll_timeout() {
                Some(d) if d <= self.now => {}
                _ => return,
            }
            stats::hit(if round == 0 { "timeout due" } else { "timeout due again" });
            assert!(round < 8, "poll_timeout stays at or before now after {round} handle_timeout calls");
            self.client.handle_timeout(self.now);
            self.drain();
        }
    }

    /// Transport `t`, counted from the newest the client asked for.
    /// After transport `ti` (still open) connected or reached the server,
    /// the racers beside it must all have been dropped (§9.7).
    fn only_open(&self, ti: usize, what: &str) {
        if self.tports[ti].closed {
            return;
        }
        for (i, t) in self.tports.iter().enumerate() {
            assert!(i == ti || t.closed, "{:?} {what} but {:?} is still open", self.tports[ti].tid, t.tid);
        }
    }

    fn pick(&self, t: u8) -> Option<usize> {
        (!self.tports.is_empty()).then(|| self.tports.len() - 1 - usize::from(t) % self.tports.len())
    }

    fn build(&mut self, ti: usize, f: &SFrame) -> Vec<u8> {
        let t = &self.tports[ti];
        let sid = t.welcome.map(|(id, _)| id);
        let data_max = sid.map_or(0, |id| self.sess[&id].data_max);
        let frame = match f {
            SFrame::Accept { fresh, last, max_frame } => {
                let asked = t.hello.as_ref().and_then(|h| h.resume.as_ref()).map(|r| r.session_id);
                let resumed = asked.is_some() && !fresh;
                let f = SFrame::Welcome {
                    resumed,
                    session: if resumed { SessionPick::FromHello } else { SessionPick::New },
                    last: *last,
                    max_frame: *max_frame,
                    idle: Idle::Asked,
                    grace_tenths: 600,
                    version: None,
                };
                return self.build(ti, &f);
            }
            SFrame::Welcome { resumed, session, last, max_frame, idle, grace_tenths, version } => {
                let asked = t.hello.as_ref().and_then(|h| h.resume.as_ref()).map(|r| r.session_id);
                let known = |k: u8| (!self.opened.is_empty()).then(|| self.opened[usize::from(k) % self.opened.len()]);
                // A server never reuses an id for a new session.
                let id = match session {
                    _ if !resumed => None,
                    SessionPick::FromHello => asked,
                    SessionPick::Known(k) => known(*k),
                    SessionPick::New => None,
                };
                let fresh_id = || {
                    let mut b = [0u8; 16];
                    b[..8].copy_from_slice(&(self.opened.len() as u64 + 1).to_be_bytes());
                    b[8] = 0x5E;
                    SessionId::from_bytes(b)
                };
                let id = id.unwrap_or_else(fresh_id);
                let base = self.sess.get(&id).map_or(0, |s| s.data_max);
                let mut token = [0x70u8; 32];
                token[..8].copy_from_slice(&(ti as u64).to_be_bytes());
                token[8..16].copy_from_slice(&self.now.duration_since(epoch()).as_nanos().to_le_bytes()[..8]);
                let idle_timeout_ms = match idle {
                    Idle::Asked => t.hello.as_ref().map_or(0, |h| h.idle_timeout_ms),
                    Idle::Ms(n) => *n,
                };
                Frame::Welcome(Welcome {
                    version: version.unwrap_or(frame::VERSION),
                    resumed: *resumed,
                    session_id: id,
                    token: ResumeToken::from_bytes(token),
                    last_received: near(base, *last),
                    max_frame: max_frame.value(),
                    idle_timeout_ms,
                    grace_ms: u32::from(*grace_tenths) * 100,
                })
            }
            SFrame::Reject { reason, retry } => Frame::Reject(Reject {
                reason: reject_reason(*reason),
                retry_after_ms: retry.ms(),
                min_version: 1,
                max_version: 1,
                message: reason_text(*reason),
            }),
            SFrame::Data { delta, size } => {
                let next = t.server_next;
                let seq = near(next, *delta);
                let max = t.hello.as_ref().map_or(self.cfg.max_frame, |h| h.max_frame) as usize - 9;
                let len = size.resolve(max, &mut self.budget);
                let mut payload = seq.to_be_bytes().to_vec();
                payload.resize(len, 0xD7);
                if seq == next {
                    self.tports[ti].server_next += 1;
                }
                Frame::Data { seq, payload: payload.into() }
            }
            SFrame::Ack { delta } => Frame::Ack { ack: near(data_max, *delta) },
            SFrame::Ping { nonce, delta, len } => Frame::Ping {
                nonce: *nonce,
                ack: near(data_max, *delta),
                payload: vec![0x60; usize::from(*len) % 1100].into(),
            },
            SFrame::Pong { echo, nonce, delta, len } => Frame::Pong {
                nonce: if *echo { t.client_ping.unwrap_or(*nonce) } else { *nonce },
                ack: near(data_max, *delta),
                payload: vec![0x61; usize::from(*len) % 1100].into(),
            },
            SFrame::Close { code, retry, reason } => {
                Frame::Close(Close { code: code.value(), retry_after_ms: retry.ms(), reason: reason_text(*reason) })
            }
            SFrame::Hello => Frame::Hello(Hello {
                min_version: 1,
                max_version: 1,
                max_frame: frame::MIN_MAX_FRAME,
                idle_timeout_ms: 1000,
                resume: None,
                auth: Bytes::new(),
            }),
        };
        frame.to_vec()
    }

    /// One frame from the server on transport `ti`: noted in the model, handed
    /// to the client, outputs drained and checked.
    fn deliver(&mut self, ti: usize, bytes: Vec<u8>) {
        let decoded = Frame::decode(&bytes, self.cfg.max_frame).ok();
        let t = &mut self.tports[ti];
        let quiet = t.closed;
        if let Some(s) = t.welcome.and_then(|(id, _)| self.sess.get_mut(&id)) {
            match &decoded {
                Some(Frame::Data { seq, payload }) => s.data_sent.entry(*seq).or_default().push(payload.clone()),
                Some(Frame::Ack { ack } | Frame::Ping { ack, .. } | Frame::Pong { ack, .. }) => {
                    s.max_ack = s.max_ack.max(*ack)
                }
                _ => {}
            }
        }
        match &decoded {
            Some(Frame::Welcome(w)) if w.resumed => {
                let s = self.sess.entry(w.session_id).or_default();
                s.max_ack = s.max_ack.max(w.last_received);
            }
            Some(Frame::Ping { nonce, .. }) => t.ping = Some(*nonce),
            _ => {}
        }
        let tid = t.tid;
        let was_established = self.client.is_established();
        self.client.handle_frame(self.now, tid, &bytes);
        if !was_established && self.client.is_established() {
            match &decoded {
                Some(Frame::Welcome(w)) => self.accepted(ti, w.clone()),
                other => panic!("the client became established on {other:?}"),
            }
        }
        self.drained_data = 0;
        self.last_close = None;
        let n = self.drain();
        assert!(!quiet || n == 0, "a frame on closed transport {tid:?} made the client transmit");
        if let Some(Frame::Welcome(w)) = &decoded {
            // A resumed WELCOME refused with 3005 had already released what
            // its last_received covers (the frame limit is checked after).
            if w.resumed && self.last_close == Some((tid, CloseCode::FrameLimit)) {
                self.resume_acked(w.last_received);
            }
        }
        if let Some(Frame::Reject(Reject { retry_after_ms, .. }) | Frame::Close(Close { retry_after_ms, .. })) = decoded
        {
            // Processed (not refused as a protocol error): the client
            // abandoned the transport. Its retry-after is now a floor.
            if retry_after_ms > 0 && !quiet && self.tports[ti].closed && !self.tports[ti].close_frame {
                let until = self.now + Duration::from_millis(retry_after_ms.into());
                self.not_before = Some(self.not_before.map_or(until, |nb| nb.max(until)));
            }
        }
    }

    /// The client accepted WELCOME `w` on transport `ti`.
    fn accepted(&mut self, ti: usize, w: Welcome) {
        stats::hit(if w.resumed { "welcome resumed accepted" } else { "welcome fresh accepted" });
        let t = &mut self.tports[ti];
        let h = t.hello.clone().expect("established without a HELLO");
        assert_eq!(w.version, frame::VERSION);
        t.welcome = Some((w.session_id, w.max_frame.min(frame::MAX_MAX_FRAME)));
        self.not_before = None;
        let s = self.sess.entry(w.session_id).or_default();
        s.tokens.push(w.token.clone());
        if w.resumed {
            let r = h.resume.expect("a resumed WELCOME accepted for a fresh HELLO");
            assert_eq!(r.session_id, w.session_id, "the client accepted a resume of another session");
            t.next_data = w.last_received + 1;
            t.server_next = r.last_received + 1;
            self.replays.push_back((w.session_id, u64::MAX)); // the count is filled in after the drain
            self.resume_acked(w.last_received);
        } else {
            t.next_data = 1;
            t.server_next = 1;
            assert!(!self.opened.contains(&w.session_id), "the client accepted an old session as new");
            self.opened.push(w.session_id);
            self.latest = Some(w.session_id);
            self.connects.push_back(w.session_id);
        }
    }

    /// A resumed WELCOME's last_received released the current numbering's
    /// messages up to it.
    fn resume_acked(&mut self, last_received: u64) {
        if let Some(e) = self.epochs.len().checked_sub(1) {
            let a = self.resume_acked.entry(e).or_default();
            *a = (*a).max(last_received);
        }
    }

    fn app_send(&mut self, size: Size) {
        let id = self.next_id;
        self.next_id += 1;
        let len = size.resolve(self.peer_max_payload(), &mut self.budget).max(8);
        let mut payload = id.to_be_bytes().to_vec();
        payload.resize(len, 0xE5);
        let payload = Bytes::from(payload);
        match self.client.send(self.now, payload.clone()) {
            Ok(seq) => {
                stats::hit("send ok");
                if seq == 1 {
                    self.epochs.push(Vec::new());
                }
                let e = self.epochs.len() - 1;
                let epoch = &mut self.epochs[e];
                assert_eq!(seq, epoch.len() as u64 + 1, "send numbered out of order");
                epoch.push(payload);
                self.ids.insert(id, (e, seq));
            }
            Err(SendError::TooLarge { len: l, .. }) => {
                stats::hit("send too large");
                assert_eq!(l, len);
            }
            Err(SendError::BufferFull { .. }) => {
                stats::hit("send buffer full");
                assert_eq!(self.cfg.replay.overflow, OverflowPolicy::RefuseSend, "BufferFull under EndSession");
            }
            Err(_) => stats::hit("send after end"),
        }
        self.drain();
    }

    /// The largest payload of the last WELCOME the client accepted.
    fn peer_max_payload(&self) -> usize {
        let t = self.tports.iter().rev().find_map(|t| t.welcome);
        t.map_or(frame::MIN_MAX_FRAME, |(_, m)| m) as usize - 9
    }

    /// Drains and checks every transmit; returns how many there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(tx) = self.client.poll_transmit() {
            n += 1;
            assert!(n < 1_000_000, "poll_transmit never runs dry");
            match tx {
                Transmit::Connect { transport } => self.on_connect(transport),
                Transmit::Close { transport, .. } => {
                    let i = self.index(transport);
                    let t = &mut self.tports[i];
                    assert!(!t.closed, "{transport:?} closed twice");
                    t.closed = true;
                }
                Transmit::Send { transport, frame } => self.on_frame(transport, frame),
            }
        }
        if let Some(r) = self.replays.back_mut() {
            if r.1 == u64::MAX {
                r.1 = self.drained_data;
            }
        }
        n
    }

    fn on_connect(&mut self, tid: TransportId) {
        stats::hit("connect");
        assert!(self.tports.iter().all(|t| t.tid < tid), "Connect reuses or goes back to {tid:?}");
        // Racing (§9.7): transports still opening may stay beside a new one,
        // a bounded number, and never beside one that is open.
        assert!(
            self.tports.iter().all(|t| t.closed || !t.connected),
            "Connect {tid:?} while a connected transport is open"
        );
        let opening = self.tports.iter().filter(|t| !t.closed).count() + 1;
        let max = usize::from(self.cfg.race.max_in_flight);
        assert!(opening <= max, "Connect {tid:?} makes {opening} transports opening, over {max}");
        if opening > 1 {
            stats::hit("race");
        }
        if let Some(nb) = self.not_before {
            assert!(self.now >= nb, "Connect {:?} before the server's retry-after", nb - self.now);
        }
        self.by_tid.insert(tid, self.tports.len());
        self.tports.push(Tport {
            tid,
            connected: false,
            hello: None,
            welcome: None,
            next_data: 1,
            server_next: 1,
            close_frame: false,
            closed: false,
            ping: None,
            client_ping: None,
        });
        // A runtime with many transports in flight would keep only what it needs.
        if self.tports.len() > 64 {
            self.tports.remove(0);
            self.by_tid = self.tports.iter().enumerate().map(|(i, t)| (t.tid, i)).collect();
        }
    }

    fn index(&self, tid: TransportId) -> usize {
        *self.by_tid.get(&tid).unwrap_or_else(|| panic!("transmit on {tid:?}, never asked for (or long gone)"))
    }

    fn on_frame(&mut self, tid: TransportId, frame: Frame) {
        let i = self.index(tid);
        let t = &mut self.tports[i];
        assert!(t.connected, "{frame:?} on {tid:?} before it was connected");
        assert!(!(t.closed || t.close_frame), "{frame:?} on {tid:?} after it was closed");
        let limit = t.welcome.map_or(frame::MIN_MAX_FRAME, |(_, m)| m);
        check_frame(&frame, limit, "client");
        let sid = t.welcome.map(|(id, _)| id);
        match frame {
            Frame::Hello(h) => {
                assert!(t.hello.is_none(), "a second HELLO on {tid:?}");
                assert_eq!((h.min_version, h.max_version), (frame::VERSION, frame::VERSION));
                assert_eq!(h.max_frame, self.cfg.max_frame);
                let idle = u32::try_from(self.cfg.heartbeat.server_idle_timeout().as_millis()).unwrap_or(u32::MAX);
                assert_eq!(h.idle_timeout_ms, idle);
                assert_eq!(h.auth, self.cfg.auth);
                if let Some(r) = &h.resume {
                    stats::hit("hello resume");
                    assert_eq!(Some(r.session_id), self.latest, "resume of a session other than the latest");
                    let s = &self.sess[&r.session_id];
                    assert_eq!(Some(&r.token), s.tokens.last(), "resume without the latest token");
                    assert_eq!(r.last_received, s.app_taken, "resume last_received is not what the app took");
                } else {
                    stats::hit("hello fresh");
                }
                t.hello = Some(h);
            }
            Frame::Data { seq, payload } => {
                self.drained_data += 1;
                let id = sid.expect("DATA before WELCOME");
                assert_eq!(seq, t.next_data, "client DATA out of order on {tid:?}");
                t.next_data += 1;
                let e = self.epochs.len().checked_sub(1).expect("DATA before any send");
                assert_eq!(Some(&payload), self.epochs[e].get(seq as usize - 1), "DATA {seq} is not message {seq}");
                let at = *self.written.entry((e, seq)).or_insert(id);
                assert_eq!(at, id, "message {seq} written in two sessions");
                let s = self.sess.get_mut(&id).expect("modelled");
                stats::hit(if seq <= s.data_max { "data replayed" } else { "data" });
                s.data_max = s.data_max.max(seq);
            }
            Frame::Ack { ack } => {
                let s = &self.sess[&sid.expect("ACK before WELCOME")];
                assert_eq!(ack, s.app_taken, "ACK is not what the application took");
            }
            Frame::Ping { ack, nonce, payload } => {
                stats::hit("ping");
                let s = &self.sess[&sid.expect("PING before WELCOME")];
                assert_eq!(ack, s.app_taken, "PING ack is not what the application took");
                assert_eq!(payload, self.ping_payload);
                t.client_ping = Some(nonce);
            }
            Frame::Pong { nonce, ack, payload } => {
                let s = &self.sess[&sid.expect("PONG before WELCOME")];
                assert_eq!(Some(nonce), t.ping.take(), "PONG does not echo the PING");
                assert_eq!(ack, s.app_taken, "PONG ack is not what the application took");
                assert!(payload.is_empty());
            }
            Frame::Close(c) => {
                stats::hit(close_stat(c.code));
                t.close_frame = true;
                self.last_close = Some((tid, c.code));
            }
            Frame::Welcome(_) | Frame::Reject(_) => panic!("the client sent {frame:?}"),
        }
    }

    /// The application takes up to `max` events; a full drain also checks
    /// that no more than the receive window was held.
    fn take(&mut self, max: usize) {
        // Per session: the window bounds what one session holds (§7.8, §13).
        let mut held: HashMap<Option<SessionId>, (usize, usize)> = HashMap::new();
        for _ in 0..max {
            let Some(e) = self.client.poll_event() else { break };
            if self.stopped {
                assert!(matches!(e, ClientEvent::IntervalLearned { .. }), "{e:?} after the client stopped");
            }
            match e {
                ClientEvent::Connected { session } => {
                    stats::hit("ev connected");
                    assert_eq!(self.cur, None, "Connected inside a session");
                    assert_eq!(self.connects.pop_front(), Some(session), "Connected to a session not welcomed");
                    self.cur = Some(session);
                    self.attached = true;
                }
                ClientEvent::Resumed { session, replayed } => {
                    stats::hit(if replayed > 0 { "ev resumed with replay" } else { "ev resumed" });
                    assert_eq!(self.cur, Some(session), "Resumed another session");
                    assert!(!self.attached, "Resumed while attached");
                    assert_eq!(self.replays.pop_front(), Some((session, replayed)), "wrong replay count");
                    self.attached = true;
                }
                ClientEvent::Disconnected { .. } => {
                    stats::hit("ev disconnected");
                    assert!(self.attached, "Disconnected while not attached");
                    self.attached = false;
                }
                ClientEvent::AttemptFailed { .. } => {
                    stats::hit("ev attempt failed");
                    assert!(!self.attached, "AttemptFailed while attached");
                }
                ClientEvent::Reconnecting { .. } => stats::hit("ev reconnecting"),
                ClientEvent::Message(b) => {
                    stats::hit("ev message");
                    assert!(self.attached, "Message while not attached");
                    let id = self.cur.expect("attached");
                    let s = self.sess.get_mut(&id).expect("modelled");
                    let k = s.app_taken + 1;
                    let sent = s.data_sent.get(&k).is_some_and(|v| v.contains(&b));
                    assert!(sent, "message #{k} of {id:?} is not a DATA {k} the server sent (duplicate or reordered)");
                    s.app_taken = k;
                    let h = held.entry(self.cur).or_default();
                    *h = (h.0 + 1, h.1 + b.len());
                }
                ClientEvent::PingPayload(b) | ClientEvent::PongPayload(b) => {
                    stats::hit("ev ping/pong payload");
                    assert!(self.attached, "a PING/PONG payload while not attached");
                    assert!(!b.is_empty() && b.len() <= frame::MAX_PING_PAYLOAD);
                    let h = held.entry(self.cur).or_default();
                    *h = (h.0 + 1, h.1 + b.len());
                }
                ClientEvent::Rtt(_) => {
                    stats::hit("ev rtt");
                    assert!(self.attached, "Rtt while not attached");
                }
                ClientEvent::HeartbeatMissed => {
                    stats::hit("ev heartbeat missed");
                    assert!(!self.cfg.heartbeat.enforce && self.attached);
                }
                ClientEvent::IntervalLearned { .. } => stats::hit("ev interval learned"),
                ClientEvent::SessionEnded { session, unacked, restarting, .. } => {
                    stats::hit(if unacked.is_empty() { "ev session ended" } else { "ev session ended with unacked" });
                    assert_eq!(session, self.cur, "SessionEnded names another session");
                    assert!(self.replays.iter().all(|r| Some(r.0) != session), "a resume without its Resumed");
                    self.cur = None;
                    self.attached = false;
                    self.stopped = !restarting;
                    self.handed_back(&unacked);
                }
                other => panic!("unknown event {other:?}"),
            }
        }
        if max == usize::MAX {
            let w = &self.cfg.receive_window;
            for (id, (n, b)) in held {
                // One message is always held, whatever its size (§7.8).
                let fits = n <= w.max_messages && (b <= w.max_bytes || n == 1);
                assert!(fits, "{id:?} held {n} items / {b} bytes beyond {w:?}");
            }
        }
        self.drain();
    }

    /// Messages handed back at a session end: one stretch of one numbering,
    /// oldest first, up to its last message, each handed back once.
    fn handed_back(&mut self, unacked: &[Bytes]) {
        let Some(first) = unacked.first() else { return };
        let id = |b: &Bytes| u64::from_be_bytes(b[..8].try_into().expect("8-byte id"));
        let (e, s0) = self.ids[&id(first)];
        for (i, b) in unacked.iter().enumerate() {
            assert_eq!(self.ids.get(&id(b)), Some(&(e, s0 + i as u64)), "unacked is not one run in order");
            assert_eq!(Some(b), self.epochs[e].get((s0 as usize) + i - 1));
            assert!(self.handed_back.insert(id(b)), "a message handed back twice");
        }
        assert_eq!(s0 as usize + unacked.len() - 1, self.epochs[e].len(), "unacked stops before the last message");
    }

    /// The application catches up and closes: every session ends exactly
    /// once, and every message was either acknowledged or handed back.
    fn finish(&mut self) {
        self.take(usize::MAX);
        self.client.close(self.now, CloseCode::Normal, "end of input");
        self.drain();
        self.take(usize::MAX);
        assert!(self.stopped && self.cur.is_none(), "the client did not stop");
        assert!(self.client.is_closed());
        assert_eq!(self.client.poll_timeout(), None);
        for (e, msgs) in self.epochs.iter().enumerate() {
            for (i, b) in msgs.iter().enumerate() {
                let seq = i as u64 + 1;
                let id = u64::from_be_bytes(b[..8].try_into().expect("8-byte id"));
                if self.handed_back.contains(&id) {
                    continue;
                }
                let acked = self.written.get(&(e, seq)).is_some_and(|s| self.sess[s].max_ack >= seq)
                    || self.resume_acked.get(&e).is_some_and(|&a| a >= seq);
                assert!(acked, "message {seq} of stretch {e} was neither acknowledged nor handed back");
            }
        }
    }
}

fn close_stat(code: CloseCode) -> &'static str {
    match code.to_u16() {
        1003 => "CLOSE 1003 resync",
        2000 => "CLOSE 2000 protocol error",
        2001 => "CLOSE 2001 too large",
        3000 => "CLOSE 3000",
        3001 => "CLOSE 3001 replay overflow",
        3003 => "CLOSE 3003 sequence",
        3005 => "CLOSE 3005 frame limit",
        _ => "CLOSE other",
    }
}
