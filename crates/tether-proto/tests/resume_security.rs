//! Resume handshakes that must be refused, with their typed reasons, and the
//! rule that a replaced transport delivers nothing.
#![allow(clippy::disallowed_methods)] // tests take one real Instant as their epoch

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{hello, messages, open, reject_on, resume_with, welcome_on};
use tether_proto::frame::{Resume, Welcome, VERSION};
use tether_proto::{
    Client, ClientConfig, ClientEvent, CloseCode, Frame, Profile, RejectReason, ResumeToken, Rng, SessionId, Transmit,
};

#[test]
fn wrong_token_is_rejected_as_invalid_and_the_session_survives() {
    let mut f = open();
    let id = f.welcome.session_id;
    let (tid, frames) = resume_with(&mut f, ResumeToken::from_bytes([7; 32]), id);
    assert_eq!(reject_on(&frames, tid), RejectReason::InvalidToken);
    assert_eq!(f.server.session(f.welcome.session_id).and_then(|s| s.transport()), Some(f.tid));
}

#[test]
fn unknown_session_is_rejected() {
    let mut f = open();
    let token = f.welcome.token.clone();
    let (tid, frames) = resume_with(&mut f, token, SessionId::from_bytes([9; 16]));
    assert_eq!(reject_on(&frames, tid), RejectReason::UnknownSession);
}

#[test]
fn a_used_token_and_a_replayed_handshake_are_rejected_as_reused() {
    let mut f = open();
    let id = f.welcome.session_id;
    let first = f.welcome.token.clone();
    let (t2, frames) = resume_with(&mut f, first.clone(), id);
    let w2 = welcome_on(&frames, t2);
    assert!(w2.resumed && w2.token != first, "the token must rotate on resume");
    // The client proves it holds the new token by sending anything.
    f.server.handle_frame(f.now, t2, &Frame::Ack { ack: 0 }.to_vec());
    // Replaying the exact HELLO bytes of the first resume:
    let (t3, frames) = resume_with(&mut f, first, id);
    assert_eq!(reject_on(&frames, t3), RejectReason::TokenReused);
    // The rotated token still works.
    let (t4, frames) = resume_with(&mut f, w2.token, id);
    assert!(welcome_on(&frames, t4).resumed);
}

#[test]
fn a_welcome_lost_with_its_transport_does_not_strand_the_client() {
    let mut f = open();
    let id = f.welcome.session_id;
    let first = f.welcome.token.clone();
    // Resume whose WELCOME never arrives (the client keeps the old token)…
    let (t2, _) = resume_with(&mut f, first.clone(), id);
    f.server.handle_transport_closed(f.now, t2);
    // …so the client presents the old token again: still accepted.
    let (t3, frames) = resume_with(&mut f, first, id);
    assert!(welcome_on(&frames, t3).resumed);
}

#[test]
fn after_a_resume_the_old_transport_is_closed_and_delivers_nothing() {
    let mut f = open();
    let id = f.welcome.session_id;
    let data = |seq: u64| Frame::Data { seq, payload: Bytes::from(format!("m{seq}")) }.to_vec();
    f.server.handle_frame(f.now, f.tid, &data(1));
    assert_eq!(messages(&mut f.server), vec![Bytes::from("m1")]);
    let tid = f.server.handle_accept(f.now);
    let h = hello(Some(Resume { session_id: id, token: f.welcome.token.clone(), last_received: 0 }));
    f.server.handle_frame(f.now, tid, &Frame::Hello(h).to_vec());
    let mut closed_old = false;
    let mut replaced = false;
    while let Some(t) = f.server.poll_transmit() {
        match t {
            Transmit::Close { transport, .. } if transport == f.tid => closed_old = true,
            Transmit::Send { transport, frame: Frame::Close(c) } if transport == f.tid => {
                replaced = c.code == CloseCode::TransportReplaced
            }
            _ => {}
        }
    }
    assert!(closed_old && replaced, "old transport must get CLOSE 1000 and be closed");
    // Still in flight on the old transport: must not be delivered.
    f.server.handle_frame(f.now, f.tid, &data(2));
    assert!(messages(&mut f.server).is_empty());
    // The same message on the new transport is delivered once.
    f.server.handle_frame(f.now, tid, &data(2));
    f.server.handle_frame(f.now, tid, &data(2));
    assert_eq!(messages(&mut f.server), vec![Bytes::from("m2")]);
}

#[test]
fn the_client_ignores_everything_from_a_transport_it_left() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::profile(Profile::Default), Rng::from_seed(5), now).expect("valid");
    let connect = |c: &mut Client| {
        c.handle_timeout(now + Duration::from_secs(10));
        loop {
            match c.poll_transmit() {
                Some(Transmit::Connect { transport }) => return transport,
                Some(_) => {}
                None => c.handle_timeout(now + Duration::from_secs(10)),
            }
        }
    };
    let t1 = connect(&mut c);
    c.handle_connected(now, t1);
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
    c.handle_frame(now, t1, &Frame::Welcome(w.clone()).to_vec());
    c.handle_transport_closed(now, t1);
    let t2 = connect(&mut c);
    assert_ne!(t1, t2);
    c.handle_connected(now, t2);
    // Late data on the abandoned transport:
    c.handle_frame(now, t1, &Frame::Data { seq: 1, payload: Bytes::from("stale") }.to_vec());
    let got: Vec<_> = std::iter::from_fn(|| c.poll_event()).filter(|e| matches!(e, ClientEvent::Message(_))).collect();
    assert!(got.is_empty(), "stale transport delivered {got:?}");
}
