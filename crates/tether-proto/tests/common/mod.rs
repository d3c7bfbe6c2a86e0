//! A server fixture for the integration tests: one session opened by a raw
//! HELLO, helpers to resume it and to read what the server wrote.
#![allow(dead_code, clippy::disallowed_methods)] // tests take one real Instant as their epoch

use std::time::Instant;

use bytes::Bytes;
use tether_proto::frame::{Hello, Resume, Welcome, VERSION};
use tether_proto::{
    Frame, RejectReason, ResumeToken, Rng, Server, ServerConfig, SessionEvent, SessionId, Transmit, TransportId,
};

pub fn hello(resume: Option<Resume>) -> Hello {
    Hello {
        min_version: VERSION,
        max_version: VERSION,
        max_frame: 1 << 20,
        idle_timeout_ms: 40_000,
        resume,
        auth: Bytes::new(),
    }
}

pub fn sent(server: &mut Server) -> Vec<(TransportId, Frame)> {
    let mut out = Vec::new();
    while let Some(t) = server.poll_transmit() {
        if let Transmit::Send { transport, frame } = t {
            out.push((transport, frame));
        }
    }
    out
}

pub fn welcome_on(frames: &[(TransportId, Frame)], tid: TransportId) -> Welcome {
    frames
        .iter()
        .find_map(|(t, f)| match f {
            Frame::Welcome(w) if *t == tid => Some(w.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no WELCOME on {tid:?}: {frames:?}"))
}

pub fn reject_on(frames: &[(TransportId, Frame)], tid: TransportId) -> RejectReason {
    frames
        .iter()
        .find_map(|(t, f)| match f {
            Frame::Reject(r) if *t == tid => Some(r.reason),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no REJECT on {tid:?}: {frames:?}"))
}

pub fn messages(server: &mut Server) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some((_, e)) = server.poll_event() {
        if let SessionEvent::Message(m) = e {
            out.push(m);
        }
    }
    out
}

pub struct Fixture {
    pub server: Server,
    pub now: Instant,
    pub tid: TransportId,
    pub welcome: Welcome,
}

pub fn open() -> Fixture {
    open_with(ServerConfig::default())
}

pub fn open_with(cfg: ServerConfig) -> Fixture {
    let now = Instant::now();
    let mut server = Server::new(cfg, Rng::from_seed(42)).expect("valid");
    let tid = server.handle_accept(now);
    server.handle_frame(now, tid, &Frame::Hello(hello(None)).to_vec());
    let welcome = welcome_on(&sent(&mut server), tid);
    assert!(!welcome.resumed);
    Fixture { server, now, tid, welcome }
}

pub fn resume_with(
    f: &mut Fixture,
    token: ResumeToken,
    session: SessionId,
) -> (TransportId, Vec<(TransportId, Frame)>) {
    let tid = f.server.handle_accept(f.now);
    let h = hello(Some(Resume { session_id: session, token, last_received: 0 }));
    f.server.handle_frame(f.now, tid, &Frame::Hello(h).to_vec());
    (tid, sent(&mut f.server))
}
