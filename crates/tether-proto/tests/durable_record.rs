//! The pieces a durable store builds on (docs/CLUSTER.md): acks gated on
//! what the application committed, messages numbered by the store, and a
//! session carried on by another server from its record.
#![allow(clippy::disallowed_methods)] // tests take one real Instant as their epoch

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{hello, messages, open_with, sent, welcome_on};
use tether_proto::frame::Resume;
use tether_proto::{Frame, Rng, SendError, Server, ServerConfig, SessionRecord, TransportId};

fn data(seq: u64, payload: &str) -> Vec<u8> {
    Frame::Data { seq, payload: Bytes::copy_from_slice(payload.as_bytes()) }.to_vec()
}

fn gated() -> ServerConfig {
    ServerConfig { commit_acks: true, ..ServerConfig::default() }
}

fn acks(frames: &[(TransportId, Frame)]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|(_, f)| match f {
            Frame::Ack { ack } | Frame::Pong { ack, .. } => Some(*ack),
            _ => None,
        })
        .collect()
}

#[test]
fn acks_cover_only_what_the_application_committed() {
    let mut f = open_with(gated());
    let id = f.welcome.session_id;
    let _opened = f.server.poll_event();
    for seq in 1..=3 {
        f.server.handle_frame(f.now, f.tid, &data(seq, "m"));
    }
    assert_eq!(messages(&mut f.server).len(), 3, "taken");
    assert_eq!(f.server.session(id).map(|s| s.last_taken()), Some(3));
    let mut now = f.now + Duration::from_millis(200);
    f.server.handle_timeout(now);
    let ping = Frame::Ping { nonce: 1, ack: 0, payload: Bytes::new() }.to_vec();
    f.server.handle_frame(now, f.tid, &ping);
    let seen = acks(&sent(&mut f.server));
    assert!(!seen.is_empty() && seen.iter().all(|a| *a == 0), "taken but not committed: {seen:?}");
    f.server.commit(now, id, 2);
    now += Duration::from_millis(200);
    f.server.handle_timeout(now);
    assert_eq!(acks(&sent(&mut f.server)).last(), Some(&2));
    // A commit beyond what was taken is capped at what was taken.
    f.server.commit(now, id, 9);
    now += Duration::from_millis(200);
    f.server.handle_timeout(now);
    assert_eq!(acks(&sent(&mut f.server)).last(), Some(&3));
}

#[test]
fn store_numbered_messages_go_out_in_order_only() {
    let mut f = open_with(gated());
    let id = f.welcome.session_id;
    let now = f.now;
    assert_eq!(f.server.send_at(now, id, 2, Bytes::from("b")), Err(SendError::OutOfOrder { expected: 1, got: 2 }));
    assert_eq!(f.server.send_at(now, id, 1, Bytes::from("a")), Ok(true));
    assert_eq!(f.server.send_at(now, id, 1, Bytes::from("a")), Ok(false), "a repeat is ignored");
    assert_eq!(f.server.send_at(now, id, 2, Bytes::from("b")), Ok(true));
    let seqs: Vec<u64> = sent(&mut f.server)
        .into_iter()
        .filter_map(|(_, fr)| match fr {
            Frame::Data { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1, 2]);
}

/// Node A holds a session: the client sent 1..=4, A's application
/// committed 2; A sent 1..=3 and the client acknowledged 1. A dies; node B
/// carries the session on from its record.
#[test]
fn another_server_carries_a_session_on_from_its_record() {
    let mut a = open_with(gated());
    let id = a.welcome.session_id;
    let _opened = a.server.poll_event();
    for seq in 1..=4 {
        a.server.handle_frame(a.now, a.tid, &data(seq, &format!("c{seq}")));
    }
    assert_eq!(messages(&mut a.server).len(), 4);
    a.server.commit(a.now, id, 2);
    for m in ["s1", "s2", "s3"] {
        a.server.send(a.now, id, Bytes::from(m)).expect("queued");
    }
    a.server.handle_frame(a.now, a.tid, &Frame::Ack { ack: 1 }.to_vec());
    let _ = sent(&mut a.server);
    let record: SessionRecord = a.server.session(id).expect("held").record();
    assert_eq!((record.committed, record.acked, record.next_seq, record.unacked.len()), (2, 1, 4, 2));
    drop(a.server); // node A dies

    let now = a.now + Duration::from_secs(1);
    let mut b = Server::new(gated(), Rng::from_seed(7)).expect("valid");
    b.restore(now, record).expect("a consistent record");
    assert_eq!(b.poll_event(), None, "a restored session is not a new one");
    let tid = b.handle_accept(now);
    let resume = Resume { session_id: id, token: a.welcome.token.clone(), last_received: 2 };
    b.handle_frame(now, tid, &Frame::Hello(hello(Some(resume))).to_vec());
    let frames = sent(&mut b);
    let w = welcome_on(&frames, tid);
    assert!(w.resumed);
    assert_eq!(w.last_received, 2, "only committed client messages count as received");
    let replayed: Vec<u64> = frames
        .iter()
        .filter_map(|(_, fr)| match fr {
            Frame::Data { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(replayed, vec![3], "what the client had not received, once");
    // The client replays 3 and 4: B's application takes them again (A never
    // committed them), and numbering goes on from the record.
    b.handle_frame(now, tid, &data(3, "c3"));
    b.handle_frame(now, tid, &data(4, "c4"));
    assert_eq!(messages(&mut b), vec![Bytes::from("c3"), Bytes::from("c4")]);
    assert_eq!(b.send(now, id, Bytes::from("s4")), Ok(4));
}

#[test]
fn a_damaged_record_is_refused_with_what_is_wrong() {
    let f = open_with(gated());
    let mut record = f.server.session(f.welcome.session_id).expect("held").record();
    record.next_seq = 5; // claims 4 messages were sent, keeps none
    let mut b = Server::new(gated(), Rng::from_seed(7)).expect("valid");
    let e = b.restore(f.now, record).expect_err("inconsistent");
    assert!(e.problem.contains("0 unacknowledged messages kept, 4 expected"), "{e}");
}
