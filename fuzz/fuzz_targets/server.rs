//! Drives `tether_proto::Server` (admit + every `ServerSession`, the
//! composition the simulator runs) with an arbitrary sequence of inputs in
//! virtual time, playing the clients and the server's application, and checks
//! what it transmits and delivers against a model. See docs/FUZZING.md.
//!
//! Run from `fuzz/`: `cargo +nightly fuzz run -s none server`.
#![no_main]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether_fuzz::{
    check_frame, epoch, mutate, near, reason_text, reject_reason, stats, Code, MaxFrame, Size, Step, MAX_OPS,
    PAYLOAD_BUDGET,
};
use tether_proto::frame::{self, Close, DecodeError, Frame, Hello, Reject, Resume, Welcome};
use tether_proto::token::{ResumeToken, SessionId};
use tether_proto::{
    AckConfig, CloseCode, OverflowPolicy, ReceiveWindow, RejectReason, ReplayLimits, Rng, SendError, Server,
    ServerConfig, SessionEvent, Transmit, TransportId,
};

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Setup {
    seed: u64,
    grace: u8,
    handshake: u8,
    idle_min: u8,
    idle_span: u8,
    big_frame: bool,
    replay_messages: u8,
    replay_bytes: Bytesize,
    refuse_send: bool,
    window_messages: u8,
    window_bytes: Bytesize,
    ack_delay_ms: u8,
    ack_every: u8,
    enforce_idle: bool,
}

/// A byte bound: tiny, one frame, or the 1 MiB default.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Bytesize {
    Tiny(u8),
    Frame,
    Large,
}

impl Bytesize {
    fn value(self, max_frame: u32) -> usize {
        match self {
            Bytesize::Tiny(n) => 1 + 64 * usize::from(n),
            Bytesize::Frame => max_frame as usize,
            Bytesize::Large => 1 << 20,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A client connects.
    Accept,
    /// A client connects and sends this HELLO or resume HELLO.
    Connect(CFrame),
    /// Transport `t` (0: the newest) delivers a frame built from the model.
    Send { t: u8, frame: CFrame },
    /// The same, with one byte flipped or the frame cut short.
    Mutated { t: u8, frame: CFrame, at: u16, xor: u8 },
    /// Arbitrary bytes as one frame.
    Raw { t: u8, bytes: Vec<u8> },
    /// The runtime could not cut a frame from the stream.
    DecodeError { t: u8, too_large: bool },
    /// The transport closed or failed.
    CloseTransport { t: u8 },
    /// Virtual time passes; then `handle_timeout`.
    Advance(Step),
    /// `handle_timeout` with nothing due.
    EarlyTimeout,
    /// The application sends to session `s` (by order of opening).
    AppSend { s: u8, size: Size },
    /// The application takes up to n events (0: none; it lags).
    AppTake(u8),
    /// The application catches up.
    AppTakeAll,
    /// The application ends session `s`.
    CloseSession { s: u8, code: Code },
    /// Admission control or drain on/off.
    Refusal(Option<(u8, u16)>),
}

/// A frame a client might send.
#[derive(Arbitrary, Debug)]
enum CFrame {
    Hello {
        max_frame: MaxFrame,
        idle_ms: u16,
        auth: u8,
        versions: Option<(u8, u8)>,
    },
    Resume {
        s: u8,
        token: TokenPick,
        last: i8,
        max_frame: MaxFrame,
        idle_ms: u16,
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
        nonce: u32,
        delta: i8,
        len: u16,
    },
    Close {
        code: Code,
        retry_ms: u32,
        reason: u8,
    },
    /// Frames only a server sends.
    Welcome,
    Reject,
}

#[derive(Arbitrary, Debug)]
enum TokenPick {
    /// From the session's latest WELCOME.
    Latest,
    /// From an earlier WELCOME (rotated away, or still pending).
    Older(u8),
    /// Never issued.
    Forged(u8),
}

/// One transport, as the client at its far end sees it.
struct Tport {
    tid: TransportId,
    sent_first: bool,
    /// The HELLO it opened with.
    hello: Option<Hello>,
    /// The server sent something on it.
    heard: bool,
    /// From its WELCOME.
    session: Option<SessionId>,
    /// The server DATA seq expected next on it.
    next_data: u64,
    /// The server sent CLOSE / asked to close it / the runtime reported it closed.
    close_frame: bool,
    closed: bool,
    runtime_closed: bool,
    /// The nonce of the last PING the client sent on it.
    ping: Option<u32>,
}

/// Where a session's events stand, as the application sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    New,
    Attached,
    Detached,
    Ended,
}

/// One session: the client's view and the server application's view.
struct Sess {
    /// Every token a WELCOME carried, oldest first.
    tokens: Vec<ResumeToken>,
    /// The client's next DATA seq.
    client_next: u64,
    /// Highest server DATA seq the client received.
    recv_max: u64,
    /// Payloads the client sent under each seq.
    client_data: HashMap<u64, Vec<Bytes>>,
    /// Highest ack the client ever sent (ACK/PING/PONG/resume HELLO).
    max_ack: u64,
    /// What the application sent, by seq − 1.
    app_sent: Vec<Bytes>,
    /// Messages the application took.
    app_taken: u64,
    /// With the ack gate: what the application committed (acks carry it).
    app_committed: Option<u64>,
    ev: Ev,
    /// `replayed` of each resume WELCOME not yet matched by a Resumed event.
    replays: VecDeque<u64>,
}

impl Sess {
    /// What the server's acks must carry: what the application took, or
    /// with the ack gate what it committed.
    fn acks(&self) -> u64 {
        self.app_committed.unwrap_or(self.app_taken)
    }
}

struct World {
    cfg: ServerConfig,
    server: Server,
    now: Instant,
    tports: Vec<Tport>,
    by_tid: HashMap<TransportId, usize>,
    opened: Vec<SessionId>,
    sess: BTreeMap<SessionId, Sess>,
    budget: usize,
    app_msgs: u32,
    refusal: Option<(RejectReason, Duration)>,
}

fn config(s: &Setup) -> ServerConfig {
    let max_frame = if s.big_frame { 64 * 1024 } else { frame::MIN_MAX_FRAME };
    let min_idle = Duration::from_millis(500 + 250 * u64::from(s.idle_min % 40));
    ServerConfig {
        grace: Duration::from_millis(100 + 500 * u64::from(s.grace % 240)),
        handshake_timeout: Duration::from_millis(100 + 100 * u64::from(s.handshake % 150)),
        min_idle_timeout: min_idle,
        max_idle_timeout: min_idle + Duration::from_secs(u64::from(s.idle_span % 120)),
        max_frame,
        replay: ReplayLimits {
            max_bytes: s.replay_bytes.value(max_frame),
            max_messages: 1 + usize::from(s.replay_messages % 16),
            overflow: if s.refuse_send { OverflowPolicy::RefuseSend } else { OverflowPolicy::EndSession },
        },
        ack: AckConfig { delay: Duration::from_millis(s.ack_delay_ms.into()), every: u32::from(s.ack_every % 40) },
        receive_window: ReceiveWindow {
            max_messages: 1 + usize::from(s.window_messages % 8),
            max_bytes: s.window_bytes.value(max_frame),
        },
        enforce_idle: s.enforce_idle,
        // The ack gate of a store-backed server: drawn from the seed, so
        // that recorded inputs keep their meaning.
        commit_acks: s.seed & 1 == 1,
    }
}

fuzz_target!(|input: Input| {
    let cfg = config(&input.setup);
    let server = Server::new(cfg.clone(), Rng::from_seed(input.setup.seed)).expect("the fuzz config is valid");
    let mut w = World {
        cfg,
        server,
        now: epoch(),
        tports: Vec::new(),
        by_tid: HashMap::new(),
        opened: Vec::new(),
        sess: BTreeMap::new(),
        budget: PAYLOAD_BUDGET,
        app_msgs: 0,
        refusal: None,
    };
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
            Op::Accept => self.accept(),
            Op::Connect(frame) => {
                self.accept();
                let ti = self.tports.len() - 1;
                let bytes = self.build(ti, frame);
                self.deliver(ti, bytes);
            }
            Op::Send { t, frame } => {
                let ti = self.pick(*t);
                let bytes = self.build(ti, frame);
                self.deliver(ti, bytes);
            }
            Op::Mutated { t, frame, at, xor } => {
                let ti = self.pick(*t);
                let bytes = mutate(self.build(ti, frame), *at, *xor);
                self.deliver(ti, bytes);
            }
            Op::Raw { t, bytes } => {
                let ti = self.pick(*t);
                self.deliver(ti, bytes.clone());
            }
            Op::DecodeError { t, too_large } => {
                let ti = self.pick(*t);
                let quiet = self.tports[ti].closed || self.tports[ti].runtime_closed;
                let err = if *too_large {
                    DecodeError::FrameTooLarge { len: u64::from(self.cfg.max_frame) + 1, max: self.cfg.max_frame }
                } else {
                    DecodeError::Empty
                };
                self.server.handle_decode_error(self.now, self.tports[ti].tid, err);
                let n = self.drain();
                assert!(!quiet || n == 0, "a decode error on a closed transport made the server transmit");
            }
            Op::CloseTransport { t } => {
                let ti = self.pick(*t);
                self.server.handle_transport_closed(self.now, self.tports[ti].tid);
                self.tports[ti].runtime_closed = true;
                assert_eq!(self.drain(), 0, "a transport reported closed made the server transmit");
            }
            Op::Advance(step) => {
                self.now = step.apply(self.now, self.server.poll_timeout());
                self.server.handle_timeout(self.now);
                self.drain();
            }
            Op::EarlyTimeout => {
                // service() left nothing due at `now`: calling early is harmless.
                self.server.handle_timeout(self.now);
                assert_eq!(self.drain(), 0, "handle_timeout before any deadline transmitted");
            }
            Op::AppSend { s, size } => self.app_send(*s, *size),
            Op::AppTake(n) => self.take(usize::from(*n)),
            Op::AppTakeAll => self.take(usize::MAX),
            Op::CloseSession { s, code } => {
                if let Some(id) = pick(&self.opened, *s) {
                    self.server.close_session(id, code.value(), "closed by the fuzzed application");
                    self.drain();
                }
            }
            Op::Refusal(r) => {
                let r = r.map(|(reason, ms)| (reject_reason(reason), Duration::from_millis(ms.into())));
                self.server.set_refusal(r);
                self.refusal = r;
            }
        }
    }

    /// What a runtime does between inputs: while a deadline is at or before
    /// `now`, call `handle_timeout(now)`. It must settle (no busy loop).
    fn service(&mut self) {
        for round in 0.. {
            match self.server.poll_timeout() {
                Some(d) if d <= self.now => {}
                _ => return,
            }
            stats::hit(if round == 0 { "timeout due" } else { "timeout due again" });
            assert!(round < 8, "poll_timeout stays at or before now after {round} handle_timeout calls");
            self.server.handle_timeout(self.now);
            self.drain();
        }
    }

    fn accept(&mut self) {
        if self.tports.len() >= 64 {
            return;
        }
        let tid = self.server.handle_accept(self.now);
        assert!(!self.by_tid.contains_key(&tid), "handle_accept reused {tid:?}");
        self.by_tid.insert(tid, self.tports.len());
        self.tports.push(Tport {
            tid,
            sent_first: false,
            hello: None,
            heard: false,
            session: None,
            next_data: 1,
            close_frame: false,
            closed: false,
            runtime_closed: false,
            ping: None,
        });
    }

    /// Transport `t`, counted from the newest; accepts one if there is none.
    fn pick(&mut self, t: u8) -> usize {
        if self.tports.is_empty() {
            self.accept();
        }
        self.tports.len() - 1 - usize::from(t) % self.tports.len()
    }

    fn build(&mut self, ti: usize, f: &CFrame) -> Vec<u8> {
        let t = &self.tports[ti];
        let sid = t.session;
        let s = sid.and_then(|id| self.sess.get(&id));
        let client_next = s.map_or(1, |s| s.client_next);
        let recv_max = s.map_or(0, |s| s.recv_max);
        let frame = match f {
            CFrame::Hello { max_frame, idle_ms, auth, versions } => {
                let (min_version, max_version) = versions.unwrap_or((1, 1));
                Frame::Hello(Hello {
                    min_version,
                    max_version,
                    max_frame: max_frame.value(),
                    idle_timeout_ms: u32::from(*idle_ms) * 10,
                    resume: None,
                    auth: Bytes::from(vec![0xA5; usize::from(*auth) * 17]),
                })
            }
            CFrame::Resume { s, token, last, max_frame, idle_ms } => {
                let (session_id, tokens, recv) = match pick(&self.opened, *s) {
                    Some(id) => {
                        let m = &self.sess[&id];
                        (id, m.tokens.as_slice(), m.recv_max)
                    }
                    None => (SessionId::from_bytes([*s; 16]), &[][..], 0),
                };
                let token = match token {
                    TokenPick::Latest => tokens.last().cloned(),
                    TokenPick::Older(k) => tokens.iter().rev().nth(usize::from(*k) % tokens.len().max(1)).cloned(),
                    TokenPick::Forged(b) => Some(ResumeToken::from_bytes([*b; 32])),
                }
                .unwrap_or_else(|| ResumeToken::from_bytes([0; 32]));
                Frame::Hello(Hello {
                    min_version: 1,
                    max_version: 1,
                    max_frame: max_frame.value(),
                    idle_timeout_ms: u32::from(*idle_ms) * 10,
                    resume: Some(Resume { session_id, token, last_received: near(recv, *last) }),
                    auth: Bytes::new(),
                })
            }
            CFrame::Data { delta, size } => {
                let seq = near(client_next, *delta);
                let len = size.resolve(self.cfg.max_frame as usize - 9, &mut self.budget);
                let mut payload = seq.to_be_bytes().to_vec();
                payload.resize(len, 0xC1);
                if seq == client_next {
                    if let Some(s) = sid.and_then(|id| self.sess.get_mut(&id)) {
                        s.client_next += 1;
                    }
                }
                Frame::Data { seq, payload: payload.into() }
            }
            CFrame::Ack { delta } => Frame::Ack { ack: near(recv_max, *delta) },
            CFrame::Ping { nonce, delta, len } => Frame::Ping {
                nonce: *nonce,
                ack: near(recv_max, *delta),
                payload: vec![0x50; usize::from(*len) % 1100].into(),
            },
            CFrame::Pong { nonce, delta, len } => Frame::Pong {
                nonce: *nonce,
                ack: near(recv_max, *delta),
                payload: vec![0x51; usize::from(*len) % 1100].into(),
            },
            CFrame::Close { code, retry_ms, reason } => {
                Frame::Close(Close { code: code.value(), retry_after_ms: *retry_ms, reason: reason_text(*reason) })
            }
            CFrame::Welcome => Frame::Welcome(Welcome {
                version: 1,
                resumed: false,
                session_id: SessionId::from_bytes([1; 16]),
                token: ResumeToken::from_bytes([2; 32]),
                last_received: 0,
                max_frame: frame::MIN_MAX_FRAME,
                idle_timeout_ms: 1000,
                grace_ms: 1000,
            }),
            CFrame::Reject => Frame::Reject(Reject {
                reason: reject_reason(0),
                retry_after_ms: 0,
                min_version: 1,
                max_version: 1,
                message: String::new(),
            }),
        };
        frame.to_vec()
    }

    /// One frame from the client on transport `ti`: noted in the model, handed
    /// to the server, outputs drained and checked.
    fn deliver(&mut self, ti: usize, bytes: Vec<u8>) {
        let t = &mut self.tports[ti];
        let quiet = t.closed || t.runtime_closed;
        let decoded = Frame::decode(&bytes, self.cfg.max_frame).ok();
        // A new session asked for properly, while admission is open, on a
        // transport still in its handshake: it must be opened.
        let must_open = !t.sent_first
            && !quiet
            && self.refusal.is_none()
            && matches!(&decoded, Some(Frame::Hello(h)) if h.resume.is_none()
                && (h.min_version..=h.max_version).contains(&frame::VERSION));
        if !t.sent_first {
            t.sent_first = true;
            if let Some(Frame::Hello(h)) = &decoded {
                t.hello = Some(h.clone());
                if let Some(s) = h.resume.as_ref().and_then(|r| self.sess.get_mut(&r.session_id).map(|s| (s, r))) {
                    s.0.max_ack = s.0.max_ack.max(s.1.last_received);
                }
            }
        } else if let Some(s) = t.session.and_then(|id| self.sess.get_mut(&id)) {
            match decoded {
                Some(Frame::Data { seq, payload }) => s.client_data.entry(seq).or_default().push(payload),
                Some(Frame::Ack { ack } | Frame::Pong { ack, .. }) => s.max_ack = s.max_ack.max(ack),
                Some(Frame::Ping { ack, nonce, .. }) => {
                    s.max_ack = s.max_ack.max(ack);
                    t.ping = Some(nonce);
                }
                _ => {}
            }
        }
        let tid = t.tid;
        self.server.handle_frame(self.now, tid, &bytes);
        let n = self.drain();
        assert!(!quiet || n == 0, "a frame on closed transport {tid:?} made the server transmit");
        if must_open {
            assert!(self.tports[ti].session.is_some(), "a valid new-session HELLO was not welcomed");
        }
    }

    fn app_send(&mut self, s: u8, size: Size) {
        let Some(id) = pick(&self.opened, s) else { return };
        let max = self.server.session(id).map(|x| x.max_payload());
        let len = size.resolve(max.unwrap_or(frame::MIN_MAX_FRAME as usize - 9), &mut self.budget);
        self.app_msgs += 1;
        let mut payload = self.app_msgs.to_be_bytes().to_vec();
        payload.resize(len, 0x5E);
        let payload = Bytes::from(payload);
        let r = self.server.send(self.now, id, payload.clone());
        let m = self.sess.get_mut(&id).expect("opened sessions are modelled");
        match r {
            Ok(seq) => {
                stats::hit("send ok");
                assert_ne!(m.ev, Ev::Ended, "send accepted after Ended was delivered");
                assert_eq!(seq, m.app_sent.len() as u64 + 1, "send numbered out of order");
                assert!(max.is_some_and(|max| len <= max), "a {len}-byte payload accepted above max_payload {max:?}");
                m.app_sent.push(payload);
            }
            Err(SendError::TooLarge { len: l, max: mx }) => {
                stats::hit("send too large");
                assert_eq!((l, Some(mx)), (len, max), "TooLarge names the wrong sizes");
                assert!(len > mx);
            }
            Err(SendError::BufferFull { .. }) => {
                stats::hit("send buffer full");
                assert_eq!(self.cfg.replay.overflow, OverflowPolicy::RefuseSend, "BufferFull under EndSession");
            }
            Err(SendError::NoSession) => {
                stats::hit("send after end");
                assert_eq!(m.ev, Ev::Ended, "NoSession for a session whose Ended was not taken");
            }
            Err(e) => {
                stats::hit("send after end");
                assert_ne!(m.ev, Ev::Ended, "{e:?} for a session already forgotten");
            }
        }
        self.drain();
    }

    /// Drains and checks every transmit; returns how many there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(tx) = self.server.poll_transmit() {
            n += 1;
            assert!(n < 1_000_000, "poll_transmit never runs dry");
            match tx {
                Transmit::Connect { .. } => panic!("the server asked to open a transport"),
                Transmit::Close { transport, .. } => {
                    let i = self.index(transport);
                    let t = &mut self.tports[i];
                    assert!(!t.closed, "{transport:?} closed twice");
                    assert!(!t.runtime_closed, "Close for {transport:?} after the runtime reported it closed");
                    t.closed = true;
                }
                Transmit::Send { transport, frame } => self.on_frame(transport, frame),
            }
        }
        n
    }

    fn index(&self, tid: TransportId) -> usize {
        *self.by_tid.get(&tid).unwrap_or_else(|| panic!("transmit on {tid:?}, never accepted"))
    }

    fn on_frame(&mut self, tid: TransportId, frame: Frame) {
        let cfg = &self.cfg;
        let i = self.index(tid);
        let t = &mut self.tports[i];
        assert!(
            !(t.closed || t.runtime_closed || t.close_frame),
            "{frame:?} sent on {tid:?} after it was closed (closed {}, runtime closed {}, CLOSE sent {})",
            t.closed,
            t.runtime_closed,
            t.close_frame
        );
        // The client's announced limit; a transport that sent no HELLO gets
        // only small refusals, which every peer accepts.
        let limit = t.hello.as_ref().map_or(frame::MIN_MAX_FRAME, |h| h.max_frame);
        check_frame(&frame, limit, "server");
        let first = !std::mem::replace(&mut t.heard, true);
        let sid = t.session;
        match frame {
            Frame::Welcome(w) => {
                assert!(first, "WELCOME is not the first frame on {tid:?}");
                let h = t.hello.clone().expect("WELCOME for a first frame that was not a HELLO");
                assert_eq!(w.version, frame::VERSION);
                assert_eq!(w.max_frame, cfg.max_frame);
                let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
                assert_eq!(w.idle_timeout_ms, ms(cfg.grant_idle_timeout(h.idle_timeout_ms)));
                assert_eq!(w.grace_ms, ms(cfg.grace));
                t.session = Some(w.session_id);
                match &h.resume {
                    None => {
                        stats::hit("welcome fresh");
                        assert!(!w.resumed, "a fresh HELLO got a resumed WELCOME");
                        assert_eq!(w.last_received, 0);
                        t.next_data = 1;
                        let fresh = Sess {
                            tokens: vec![w.token],
                            client_next: 1,
                            recv_max: 0,
                            client_data: HashMap::new(),
                            max_ack: 0,
                            app_sent: Vec::new(),
                            app_taken: 0,
                            app_committed: self.cfg.commit_acks.then_some(0),
                            ev: Ev::New,
                            replays: VecDeque::new(),
                        };
                        let old = self.sess.insert(w.session_id, fresh);
                        assert!(old.is_none(), "a new session reuses the id {:?}", w.session_id);
                        self.opened.push(w.session_id);
                    }
                    Some(r) => {
                        stats::hit("welcome resumed");
                        assert!(w.resumed, "a resume HELLO got a fresh WELCOME");
                        assert_eq!(w.session_id, r.session_id, "WELCOME resumed another session");
                        t.next_data = r.last_received + 1;
                        let s = self.sess.get_mut(&w.session_id).expect("resumed a session never opened");
                        assert_ne!(s.ev, Ev::Ended, "resumed a session whose Ended was delivered");
                        assert!(s.tokens.contains(&r.token), "resume accepted with a token never issued");
                        assert!(!s.tokens.contains(&w.token), "token not rotated on resume");
                        assert_eq!(w.last_received, s.acks(), "WELCOME last_received is not what the app took (committed)");
                        let sent = s.app_sent.len() as u64;
                        assert!(r.last_received <= sent, "resume accepted with last_received beyond what was sent");
                        s.replays.push_back(sent - r.last_received);
                        s.tokens.push(w.token);
                        // A client replays from what the server's application took.
                        s.client_next = w.last_received + 1;
                    }
                }
            }
            Frame::Reject(r) => {
                stats::hit("reject");
                assert!(first && t.hello.is_some(), "REJECT other than the answer to a HELLO on {tid:?}");
                let h = t.hello.as_ref().expect("checked");
                if h.resume.is_none() && r.reason != RejectReason::UnsupportedVersion {
                    let refused = self.refusal.map(|(reason, _)| reason);
                    assert_eq!(Some(r.reason), refused, "a new session refused for a reason not in force");
                }
            }
            Frame::Data { seq, payload } => {
                let next = t.next_data;
                t.next_data += 1;
                let id = sid.expect("DATA on a transport without a session");
                let s = self.sess.get_mut(&id).expect("modelled");
                stats::hit(if seq <= s.recv_max { "data replayed" } else { "data" });
                assert_eq!(seq, next, "server DATA out of order on {tid:?}");
                let want = s.app_sent.get(seq as usize - 1);
                assert_eq!(Some(&payload), want, "server DATA {seq} does not carry message {seq}");
                s.recv_max = s.recv_max.max(seq);
            }
            Frame::Ack { ack } => {
                let s = &self.sess[&sid.expect("ACK on a transport without a session")];
                assert_eq!(ack, s.acks(), "ACK is not what the application took (committed)");
            }
            Frame::Pong { nonce, ack, payload } => {
                let ping = t.ping.take();
                let s = &self.sess[&sid.expect("PONG on a transport without a session")];
                assert_eq!(Some(nonce), ping, "PONG does not echo the PING");
                assert_eq!(ack, s.acks(), "PONG ack is not what the application took (committed)");
                assert!(payload.is_empty());
            }
            Frame::Close(c) => {
                stats::hit(close_stat(c.code));
                t.close_frame = true;
            }
            Frame::Hello(_) | Frame::Ping { .. } => panic!("the server sent {frame:?}"),
        }
    }

    /// The application takes up to `max` events; a full drain also checks
    /// that no session held more than its receive window.
    fn take(&mut self, max: usize) {
        let mut held: HashMap<SessionId, (usize, usize)> = HashMap::new();
        for _ in 0..max {
            let Some((id, e)) = self.server.poll_event() else { break };
            let mut to_commit = None;
            let s = self.sess.get_mut(&id).unwrap_or_else(|| panic!("event for {id:?}, never welcomed: {e:?}"));
            let state = s.ev;
            match e {
                SessionEvent::Opened => {
                    stats::hit("ev opened");
                    assert_eq!(state, Ev::New, "Opened twice or late");
                    s.ev = Ev::Attached;
                }
                SessionEvent::Message(b) => {
                    stats::hit("ev message");
                    assert_eq!(state, Ev::Attached, "Message while {state:?}");
                    let k = s.app_taken + 1;
                    let sent = s.client_data.get(&k).is_some_and(|v| v.contains(&b));
                    assert!(sent, "message #{k} of {id:?} is not a DATA {k} the client sent (duplicate or reordered)");
                    s.app_taken = k;
                    let h = held.entry(id).or_default();
                    *h = (h.0 + 1, h.1 + b.len());
                    // With the ack gate, the application commits every other
                    // message it takes (a commit covers all before it).
                    if self.cfg.commit_acks && k % 2 == 0 {
                        to_commit = Some((id, k));
                    }
                }
                SessionEvent::PingPayload(b) => {
                    stats::hit("ev ping payload");
                    assert_eq!(state, Ev::Attached, "PingPayload while {state:?}");
                    assert!(!b.is_empty() && b.len() <= frame::MAX_PING_PAYLOAD);
                    let h = held.entry(id).or_default();
                    *h = (h.0 + 1, h.1 + b.len());
                }
                SessionEvent::Detached { .. } => {
                    stats::hit("ev detached");
                    assert_eq!(state, Ev::Attached, "Detached while {state:?}");
                    s.ev = Ev::Detached;
                }
                SessionEvent::Resumed { replayed } => {
                    stats::hit(if replayed > 0 { "ev resumed with replay" } else { "ev resumed" });
                    assert!(matches!(state, Ev::Attached | Ev::Detached), "Resumed while {state:?}");
                    assert_eq!(Some(replayed), s.replays.pop_front(), "Resumed reports the wrong replay count");
                    s.ev = Ev::Attached;
                }
                SessionEvent::Ended { unacked, .. } => {
                    stats::hit(if unacked.is_empty() { "ev ended" } else { "ev ended with unacked" });
                    assert!(matches!(state, Ev::Attached | Ev::Detached), "Ended while {state:?}");
                    s.ev = Ev::Ended;
                    assert!(s.replays.is_empty(), "a resume WELCOME without its Resumed event");
                    let n = unacked.len();
                    let sent = &s.app_sent;
                    assert!(n <= sent.len() && unacked[..] == sent[sent.len() - n..], "unacked is not the unsent tail");
                    let floor = (sent.len() as u64).saturating_sub(s.max_ack);
                    assert!(n as u64 >= floor, "{floor} messages never acked, only {n} handed back");
                    assert!(self.server.session(id).is_none(), "session kept after its Ended was taken");
                }
                other => panic!("unknown event {other:?}"),
            }
            if let Some((id, k)) = to_commit {
                // What the commit writes (an ACK now due) is checked against
                // the model as of this commit.
                stats::hit("app commit");
                if let Some(s) = self.sess.get_mut(&id) {
                    s.app_committed = Some(k);
                }
                self.server.commit(self.now, id, k);
                self.drain();
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

    /// The application catches up, then ends every session: each must end
    /// exactly once, and the server must hold nothing afterwards.
    fn finish(&mut self) {
        self.take(usize::MAX);
        self.service();
        for id in self.opened.clone() {
            self.server.close_session(id, CloseCode::Normal, "end of input");
            self.drain();
        }
        self.take(usize::MAX);
        for (id, s) in &self.sess {
            assert_eq!(s.ev, Ev::Ended, "{id:?} never delivered Ended");
        }
        assert_eq!(self.server.session_count(), 0);
        assert!(self.server.poll_event().is_none());
    }
}

/// The `k`-th of `v`, wrapping (None if empty).
fn pick<T: Copy>(v: &[T], k: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(k) % v.len()])
}

fn close_stat(code: CloseCode) -> &'static str {
    match code.to_u16() {
        1000 => "CLOSE 1000 replaced",
        1001 => "CLOSE 1001",
        1002 => "CLOSE 1002 handshake timeout",
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
