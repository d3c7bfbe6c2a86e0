//! Racing a slow connect (PROTOCOL §9.7), driven input by input: the pace
//! and bound of racing, the first to open winning, reaching the server
//! stopping the race, and a server that was reached but shed the attempt
//! (overloaded, or too slow to answer) not being raced until a WELCOME.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)] // tests take one real Instant as their epoch

use std::time::{Duration, Instant};

use tether_proto::frame::{Frame, Reject, Welcome, VERSION};
use tether_proto::{Client, ClientConfig, Profile, RejectReason, ResumeToken, Rng, SessionId, Transmit, TransportId};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// Everything the client asked for: connects, closes, sends.
#[derive(Default, Debug)]
struct Out {
    connects: Vec<TransportId>,
    closed: Vec<TransportId>,
    sent: Vec<(TransportId, Frame)>,
}

fn drain(c: &mut Client, out: &mut Out) {
    while let Some(t) = c.poll_transmit() {
        match t {
            Transmit::Connect { transport } => out.connects.push(transport),
            Transmit::Close { transport, .. } => out.closed.push(transport),
            Transmit::Send { transport, frame } => out.sent.push((transport, frame)),
        }
    }
}

/// Runs the client's timers up to `until`, draining as it goes.
fn run(c: &mut Client, out: &mut Out, now: &mut Instant, until: Instant) {
    while let Some(t) = c.poll_timeout().filter(|t| *t <= until) {
        *now = t.max(*now);
        c.handle_timeout(*now);
        drain(c, out);
    }
    *now = until;
}

fn client() -> (Client, Instant, Out) {
    let t = Instant::now();
    let mut c = Client::new(ClientConfig::profile(Profile::Default), Rng::from_seed(5), t).unwrap();
    let mut out = Out::default();
    c.handle_timeout(t);
    drain(&mut c, &mut out);
    (c, t, out)
}

#[test]
fn a_hung_connect_is_raced_every_wait_with_at_most_three_opening_and_the_first_to_open_wins() {
    let (mut c, t0, mut out) = client();
    let mut now = t0;
    assert_eq!(out.connects.len(), 1);
    // No round trip measured yet: the wait is `race.delay` (750 ms).
    run(&mut c, &mut out, &mut now, t0 + MS(749));
    assert_eq!(out.connects.len(), 1, "raced before the wait");
    run(&mut c, &mut out, &mut now, t0 + MS(750));
    assert_eq!(out.connects.len(), 2);
    run(&mut c, &mut out, &mut now, t0 + MS(1500));
    assert_eq!(out.connects.len(), 3);
    assert!(out.closed.is_empty());
    // The fourth makes room: the oldest is dropped.
    run(&mut c, &mut out, &mut now, t0 + MS(2250));
    assert_eq!(out.connects.len(), 4);
    assert_eq!(out.closed, vec![out.connects[0]]);
    // The second one opens first: the others are dropped, HELLO goes on it.
    let winner = out.connects[1];
    c.handle_connected(now, winner);
    drain(&mut c, &mut out);
    let mut dropped = out.closed.clone();
    dropped.sort();
    assert_eq!(dropped, vec![out.connects[0], out.connects[2], out.connects[3]]);
    assert!(matches!(out.sent.as_slice(), [(tid, Frame::Hello(_))] if *tid == winner));
    // A loser opening late is ignored.
    c.handle_connected(now, out.connects[3]);
    drain(&mut c, &mut out);
    assert_eq!(out.sent.len(), 1);
}

#[test]
fn once_a_transport_reaches_the_server_nothing_more_is_raced() {
    let (mut c, t0, mut out) = client();
    let mut now = t0;
    run(&mut c, &mut out, &mut now, t0 + MS(800));
    assert_eq!(out.connects.len(), 2);
    c.handle_reachable(now, out.connects[0]);
    drain(&mut c, &mut out);
    assert_eq!(out.closed, vec![out.connects[1]]);
    // No racer, and the server has a whole handshake timeout from the moment
    // it was reached (5 s after 800 ms), not from when the transport was
    // asked for: a slow server is waited for, not sent the work again.
    run(&mut c, &mut out, &mut now, t0 + MS(5799));
    assert_eq!(out.connects.len(), 2);
    assert_eq!(out.closed, vec![out.connects[1]], "gave up on a server that was reached before its time");
    // The server never finished the handshake: the next attempt, after the
    // backoff, is not raced (a server that was reached and did not answer).
    run(&mut c, &mut out, &mut now, t0 + MS(5800));
    assert_eq!(out.closed, vec![out.connects[1], out.connects[0]]);
    let before = out.connects.len();
    run(&mut c, &mut out, &mut now, t0 + MS(9800));
    assert_eq!(out.connects.len() - before, 1, "raced a server that was reached: {:?}", out.connects);
}

fn reject(tid: TransportId, c: &mut Client, now: Instant, reason: RejectReason) {
    let r = Reject { reason, retry_after_ms: 1000, min_version: VERSION, max_version: VERSION, message: "busy".into() };
    c.handle_frame(now, tid, &Frame::Reject(r).to_vec());
}

#[test]
fn a_server_that_sheds_the_attempt_is_not_raced_until_a_welcome() {
    let (mut c, t0, mut out) = client();
    let mut now = t0;
    let first = out.connects[0];
    c.handle_connected(now, first);
    drain(&mut c, &mut out);
    reject(first, &mut c, now, RejectReason::Overloaded);
    drain(&mut c, &mut out);
    // The next attempt (after the retry-after) hangs: it is not raced.
    let before = out.connects.len();
    let until = now + MS(3000);
    run(&mut c, &mut out, &mut now, until);
    assert!(out.connects.len() > before, "no attempt after the retry-after");
    let second = *out.connects.last().unwrap();
    let until = now + MS(2000);
    run(&mut c, &mut out, &mut now, until);
    assert_eq!(out.connects.len() - before, 1, "raced an overloaded server: {:?}", out.connects);
    // It opens; a WELCOME comes: racing is back for the next outage.
    c.handle_connected(now, second);
    drain(&mut c, &mut out);
    let w = Welcome {
        version: VERSION,
        resumed: false,
        session_id: SessionId::from_bytes([7; 16]),
        token: ResumeToken::from_bytes([9; 32]),
        last_received: 0,
        max_frame: 1 << 16,
        idle_timeout_ms: 40_000,
        grace_ms: 60_000,
    };
    c.handle_frame(now, second, &Frame::Welcome(w).to_vec());
    drain(&mut c, &mut out);
    assert!(c.is_established());
    c.handle_transport_closed(now, second);
    drain(&mut c, &mut out);
    let before = out.connects.len();
    let until = now + MS(4000);
    run(&mut c, &mut out, &mut now, until);
    assert!(out.connects.len() - before >= 3, "not raced after a WELCOME: {:?}", &out.connects[before..]);
}
