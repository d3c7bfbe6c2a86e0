//! The protocol points `docs/PROTOCOL.md` decides explicitly, each checked
//! on the core machines: a CLOSE as the first frame, a PING acknowledging
//! data never sent, bad input after a resume (no token confirmed), an
//! unsolicited PONG, HELLO and DATA in one write, frame limits on resume,
//! and a busy application (acks withheld, the receive window, resync).
#![allow(clippy::disallowed_methods)] // tests take one real Instant as their epoch

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{hello, messages, open, open_with, reject_on, resume_with, sent, welcome_on};
use tether_proto::frame::{Resume, Welcome, VERSION};
use tether_proto::{
    Client, ClientConfig, ClientEvent, CloseCode, Frame, Profile, ReceiveWindow, RejectReason, ResumeToken, Rng,
    SendError, ServerConfig, SessionEnd, SessionEvent, SessionId, Transmit, TransportId,
};

fn data(seq: u64, payload: &[u8]) -> Vec<u8> {
    Frame::Data { seq, payload: Bytes::copy_from_slice(payload) }.to_vec()
}

/// Every transmit, frames and closes, in order.
fn transmits(f: &mut common::Fixture) -> Vec<Transmit> {
    std::iter::from_fn(|| f.server.poll_transmit()).collect()
}

fn close_on(ts: &[Transmit], tid: TransportId) -> Option<CloseCode> {
    ts.iter().find_map(|t| match t {
        Transmit::Send { transport, frame: Frame::Close(c) } if *transport == tid => Some(c.code),
        _ => None,
    })
}

#[test]
fn a_close_as_the_first_frame_is_closed_without_a_reply() {
    let mut f = open();
    let before = f.server.session_count();
    let tid = f.server.handle_accept(f.now);
    f.server.handle_frame(f.now, tid, &Frame::close(CloseCode::Normal, Duration::ZERO, "never mind").to_vec());
    let ts = transmits(&mut f);
    assert_eq!(ts, vec![Transmit::Close { transport: tid, flush: true }], "no CLOSE 2000, no REJECT: just closed");
    assert_eq!(f.server.session_count(), before);
    assert!(f.server.rejects().is_empty());
}

#[test]
fn a_ping_acknowledging_data_never_sent_ends_the_session_unanswered() {
    let mut f = open();
    let ping = Frame::Ping { nonce: 7, ack: 5, payload: Bytes::new() };
    f.server.handle_frame(f.now, f.tid, &ping.to_vec());
    let ts = transmits(&mut f);
    assert!(!ts.iter().any(|t| matches!(t, Transmit::Send { frame: Frame::Pong { .. }, .. })), "no PONG: {ts:?}");
    assert_eq!(close_on(&ts, f.tid), Some(CloseCode::SequenceViolation));
    let ended = std::iter::from_fn(|| f.server.poll_event()).find_map(|(_, e)| match e {
        SessionEvent::Ended { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(matches!(ended, Some(SessionEnd::SequenceViolation(_))), "{ended:?}");
}

#[test]
fn bad_input_after_a_resume_confirms_no_token() {
    let mut f = open();
    let id = f.welcome.session_id;
    let first = f.welcome.token.clone();
    let (t2, frames) = resume_with(&mut f, first.clone(), id);
    assert!(welcome_on(&frames, t2).resumed);
    // Garbage on the resumed transport: closed with 2000, token unconfirmed…
    f.server.handle_frame(f.now, t2, &[0xff]);
    assert_eq!(close_on(&transmits(&mut f), t2), Some(CloseCode::ProtocolError));
    // …so the token the client held before is still valid (not "reused").
    let (t3, frames) = resume_with(&mut f, first.clone(), id);
    let w3 = welcome_on(&frames, t3);
    // Whereas a valid frame confirms the new token and retires the old one.
    f.server.handle_frame(f.now, t3, &Frame::Ack { ack: 0 }.to_vec());
    let (t4, frames) = resume_with(&mut f, first, id);
    assert_eq!(reject_on(&frames, t4), RejectReason::TokenReused);
    let (t5, frames) = resume_with(&mut f, w3.token, id);
    assert!(welcome_on(&frames, t5).resumed);
}

#[test]
fn hello_and_data_in_one_write_are_processed_in_order() {
    let mut f = open();
    let tid = f.server.handle_accept(f.now);
    f.server.handle_frame(f.now, tid, &Frame::Hello(hello(None)).to_vec());
    f.server.handle_frame(f.now, tid, &data(1, b"early"));
    let frames = sent(&mut f.server);
    assert!(!welcome_on(&frames, tid).resumed);
    assert!(close_on(&transmits(&mut f), tid).is_none(), "accepted, not a protocol error");
    assert_eq!(messages(&mut f.server), vec![Bytes::from("early")]);
}

#[test]
fn a_resume_whose_max_frame_cannot_carry_a_queued_message_ends_the_session_with_3005() {
    let mut f = open();
    let id = f.welcome.session_id;
    f.server.handle_transport_closed(f.now, f.tid);
    let big = Bytes::from(vec![b'x'; 16_520]); // the gateway's wrapped 16.3 KB say
    f.server.send(f.now, id, big.clone()).expect("fits the 1 MiB the client announced");
    let tid = f.server.handle_accept(f.now);
    let mut h = hello(Some(Resume { session_id: id, token: f.welcome.token.clone(), last_received: 0 }));
    h.max_frame = 16_384;
    f.server.handle_frame(f.now, tid, &Frame::Hello(h).to_vec());
    let ts = transmits(&mut f);
    assert_eq!(close_on(&ts, tid), Some(CloseCode::FrameLimit), "{ts:?}");
    assert!(!ts.iter().any(|t| matches!(t, Transmit::Send { frame: Frame::Data { .. } | Frame::Welcome(_), .. })));
    // Until its last event is taken, `send` names the real reason.
    let err = f.server.send(f.now, id, Bytes::from("late")).expect_err("ended");
    assert!(matches!(err, SendError::SessionEnded(SessionEnd::Incompatible(_))), "{err:?}");
    let (reason, unacked) = std::iter::from_fn(|| f.server.poll_event())
        .find_map(|(_, e)| match e {
            SessionEvent::Ended { reason, unacked } => Some((reason, unacked)),
            _ => None,
        })
        .expect("the session ends");
    assert!(matches!(reason, SessionEnd::Incompatible(_)), "{reason:?}");
    assert_eq!(unacked, vec![big], "the message is handed back");
    // The session is gone: a later resume is told so, never looped.
    let token = f.welcome.token.clone();
    let (t3, frames) = resume_with(&mut f, token, id);
    assert_eq!(reject_on(&frames, t3), RejectReason::UnknownSession);
}

#[test]
fn a_busy_application_withholds_acks_but_never_stops_the_transport() {
    let cfg =
        ServerConfig { receive_window: ReceiveWindow { max_messages: 2, max_bytes: 1 << 20 }, ..Default::default() };
    let mut f = open_with(cfg);
    let _opened = f.server.poll_event();
    let mut now = f.now;
    for seq in 1..=3 {
        f.server.handle_frame(now, f.tid, &data(seq, b"m"));
    }
    // The application takes nothing. PINGs are still answered, with ack 0.
    now += Duration::from_millis(100);
    f.server.handle_timeout(now);
    f.server.handle_frame(now, f.tid, &Frame::Ping { nonce: 1, ack: 0, payload: Bytes::new() }.to_vec());
    let acks: Vec<_> = transmits(&mut f)
        .into_iter()
        .filter_map(|t| match t {
            Transmit::Send { frame: Frame::Ack { ack } | Frame::Pong { ack, .. }, .. } => Some(ack),
            _ => None,
        })
        .collect();
    assert!(!acks.is_empty(), "arrivals are answered");
    assert!(acks.iter().all(|a| *a == 0), "nothing taken, nothing acknowledged: {acks:?}");
    // Two held, the third deferred. Taking them makes the ack move and,
    // everything held being taken, asks the client to resume (1003).
    assert_eq!(messages(&mut f.server).len(), 2);
    now += Duration::from_millis(100);
    let due = f.server.poll_timeout().expect("a resync and an ack are due");
    assert!(due <= now);
    f.server.handle_timeout(now);
    let ts = transmits(&mut f);
    assert_eq!(close_on(&ts, f.tid), Some(CloseCode::Resync), "{ts:?}");
    // The resume's WELCOME says 2 were received: the client replays the 3rd.
    let (token, id) = (f.welcome.token.clone(), f.welcome.session_id);
    let (t2, frames) = resume_with(&mut f, token, id);
    assert_eq!(welcome_on(&frames, t2).last_received, 2);
    f.server.handle_frame(now, t2, &data(3, b"m3"));
    assert_eq!(messages(&mut f.server), vec![Bytes::from("m3")]);
}

fn connected_client(now: Instant) -> (Client, TransportId) {
    let mut c = Client::new(ClientConfig::profile(Profile::Default), Rng::from_seed(5), now).expect("valid");
    c.handle_timeout(now);
    let Some(Transmit::Connect { transport }) = c.poll_transmit() else { panic!("expected connect") };
    c.handle_connected(now, transport);
    let w = Welcome {
        version: VERSION,
        resumed: false,
        session_id: SessionId::from_bytes([1; 16]),
        token: ResumeToken::from_bytes([2; 32]),
        last_received: 0,
        max_frame: 1 << 20,
        idle_timeout_ms: 40_000,
        grace_ms: 60_000,
    };
    c.handle_frame(now, transport, &Frame::Welcome(w).to_vec());
    while c.poll_transmit().is_some() {}
    while c.poll_event().is_some() {}
    (c, transport)
}

#[test]
fn an_unsolicited_pong_is_heard_but_measures_nothing() {
    let now = Instant::now();
    let (mut c, tid) = connected_client(now);
    let later = now + Duration::from_secs(20);
    c.handle_frame(later, tid, &Frame::Pong { nonce: 99, ack: 0, payload: Bytes::new() }.to_vec());
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(!events.iter().any(|e| matches!(e, ClientEvent::Rtt(_))), "{events:?}");
    assert!(c.is_established());
    // Heard: the next PING is due an interval after it, not after the WELCOME.
    let interval = ClientConfig::profile(Profile::Default).heartbeat.interval;
    assert!(c.poll_timeout().is_some_and(|d| d >= later + interval), "{:?}", c.poll_timeout());
}

#[test]
fn the_client_keeps_its_heartbeat_while_its_application_is_busy() {
    let now = Instant::now();
    let (mut c, tid) = connected_client(now);
    let mut t = now;
    let mut seq = 0;
    let mut answered = 0;
    // A minute of server DATA every second that the application never takes.
    for _ in 0..60 {
        t += Duration::from_secs(1);
        seq += 1;
        c.handle_frame(t, tid, &data(seq, b"m"));
        while let Some(d) = c.poll_timeout().filter(|d| *d <= t + Duration::from_secs(1)) {
            c.handle_timeout(d.max(t));
            if d > t {
                break;
            }
        }
        answered += std::iter::from_fn(|| c.poll_transmit())
            .filter(|x| matches!(x, Transmit::Send { frame: Frame::Ack { ack: 0 }, .. }))
            .count();
    }
    assert!(c.is_established(), "a busy application must not cost the link");
    assert!(answered >= 50, "every arrival is answered (ack 0: nothing taken): {answered}");
    let taken = std::iter::from_fn(|| c.poll_event()).filter(|e| matches!(e, ClientEvent::Message(_))).count();
    assert_eq!(taken, 60);
}

fn welcome_frame(resumed: bool, last_received: u64, max_frame: u32) -> Vec<u8> {
    Frame::Welcome(Welcome {
        version: VERSION,
        resumed,
        session_id: SessionId::from_bytes([1; 16]),
        token: ResumeToken::from_bytes([2; 32]),
        last_received,
        max_frame,
        idle_timeout_ms: 40_000,
        grace_ms: 60_000,
    })
    .to_vec()
}

/// Runs the client's timers until it asks for a transport, and connects it.
fn reconnect(c: &mut Client, now: &mut Instant) -> TransportId {
    for _ in 0..100 {
        while let Some(t) = c.poll_transmit() {
            if let Transmit::Connect { transport } = t {
                c.handle_connected(*now, transport);
                return transport;
            }
        }
        *now = c.poll_timeout().expect("a deadline").max(*now);
        c.handle_timeout(*now);
    }
    panic!("the client never asked to connect");
}

#[test]
fn messages_of_an_ended_session_taken_late_do_not_move_the_next_sessions_acks() {
    let mut now = Instant::now();
    let (mut c, tid) = connected_client(now);
    for seq in 1..=3 {
        c.handle_frame(now, tid, &data(seq, b"old"));
    }
    // The server ends the session (3001) while the application has taken
    // nothing; a fresh session starts.
    c.handle_frame(now, tid, &Frame::close(CloseCode::ReplayOverflow, Duration::ZERO, "overflow").to_vec());
    let t2 = reconnect(&mut c, &mut now);
    c.handle_frame(now, t2, &welcome_frame(false, 0, 1 << 20));
    c.handle_frame(now, t2, &data(1, b"new"));
    let taken: Vec<_> = std::iter::from_fn(|| c.poll_event())
        .filter_map(|e| match e {
            ClientEvent::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(taken.len(), 4, "three of the old session, then the new one");
    now += Duration::from_secs(1);
    c.handle_timeout(now);
    let acks: Vec<_> = std::iter::from_fn(|| c.poll_transmit())
        .filter_map(|t| match t {
            Transmit::Send { frame: Frame::Ack { ack }, .. } => Some(ack),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![1], "the new session's ack counts only its own message");
}

#[test]
fn a_message_the_server_already_has_does_not_trip_the_frame_limit() {
    let mut now = Instant::now();
    let (mut c, tid) = connected_client(now);
    c.send(now, Bytes::from(vec![b'x'; 20_000])).expect("fits 1 MiB");
    c.handle_transport_closed(now, tid);
    let t2 = reconnect(&mut c, &mut now);
    // The server got the message before the drop (last_received 1) and now
    // announces 16 KiB: nothing queued is too large any more.
    c.handle_frame(now, t2, &welcome_frame(true, 1, 16_384));
    assert!(c.is_established(), "resumed, not ended with 3005");
    assert!(std::iter::from_fn(|| c.poll_event()).any(|e| matches!(e, ClientEvent::Resumed { .. })));
}

/// §6.2: a client leaving (CLOSE 1001 with a retry-after: a page
/// unloading) keeps its session only that long, not the whole grace; one
/// that comes back in time (a reload) resumes as usual; a plain transport
/// loss keeps the whole grace.
#[test]
fn a_client_leaving_with_1001_keeps_its_session_only_for_its_retry_after() {
    let leave = |f: &mut common::Fixture, ms: u32| {
        let close = Frame::close(CloseCode::GoingAway, Duration::from_millis(u64::from(ms)), "page hidden");
        f.server.handle_frame(f.now, f.tid, &close.to_vec());
        let _ = transmits(f);
    };
    let ended_at = |f: &mut common::Fixture, step: Duration, max: Duration| -> Option<Duration> {
        let start = f.now;
        while f.now - start <= max {
            f.now += step;
            f.server.handle_timeout(f.now);
            let ended = std::iter::from_fn(|| f.server.poll_event())
                .any(|(_, e)| matches!(e, SessionEvent::Ended { reason: SessionEnd::Expired, .. }));
            if ended {
                return Some(f.now - start);
            }
        }
        None
    };
    let grace = ServerConfig::default().grace;
    // Leaving for 10 s: expired after 10 s, not the 60 s grace.
    let mut f = open();
    leave(&mut f, 10_000);
    let t = ended_at(&mut f, Duration::from_millis(100), grace).expect("expired");
    assert!(t >= Duration::from_secs(10) && t <= Duration::from_millis(10_100), "expired after {t:?}");
    // Back in time (a reload): resumed.
    let mut f = open();
    leave(&mut f, 10_000);
    f.now += Duration::from_secs(3);
    let (session, token) = (f.welcome.session_id, f.welcome.token.clone());
    let (tid, frames) = common::resume_with(&mut f, token, session);
    assert!(common::welcome_on(&frames, tid).resumed);
    // A retry-after beyond grace is capped at grace; 1001 without one keeps the grace.
    for ms in [0, 3_600_000] {
        let mut f = open();
        leave(&mut f, ms);
        let t = ended_at(&mut f, Duration::from_millis(500), grace * 2).expect("expired");
        assert!(t >= grace && t <= grace + Duration::from_millis(500), "retry-after {ms} ms: expired after {t:?}");
    }
}
