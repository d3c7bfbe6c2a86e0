//! Backend hooks for real: a gateway in this process calls an HTTP backend
//! (tests/common/backend.rs, axum on loopback) that refuses a connect and
//! a join, rewrites a say, answers RPCs and hears lifecycle events; a
//! backend that is down gets typed errors to the client; and across
//! transport losses with messages in flight at the backend, it stores every
//! client message exactly once (node death: tests/cluster.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/backend.rs"]
mod backend;
#[path = "common/peer.rs"]
mod peer;
#[path = "../../tether-runtime/tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::time::Duration;

use backend::{hooks_toml, Backend};
use peer::{connect, error_for, WAIT};
use serde_json::{json, Value};
use tether_gateway::{Config, Running};
use tether_proto::{ClientEvent, RejectReason, SessionEnd, TransportLoss};
use tether_runtime::Kind;

/// A gateway whose only way in is the backend's `connect` hook (no
/// anonymous clients, no JWT), with `hooks` as its `[hooks]` table.
async fn gateway(hooks: &str) -> Running {
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[session]\ngrace = \"10s\"\n[auth]\nanonymous = false\n\
         [admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n{hooks}"
    );
    let cfg = Config::parse(&text, "test config").unwrap().resolve().unwrap();
    tether_gateway::run(cfg, std::future::pending()).await.expect("start the gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_decides_connects_joins_says_and_answers_rpcs_and_hears_lifecycle_in_order() {
    let b = Backend::start().await;
    let g = gateway(&hooks_toml(&b.url)).await;
    let addr = g.session_addr(Kind::Tcp).unwrap();

    // connect: refused with the backend's reason, not retried.
    let mut eve = connect(addr, "deny");
    let e = eve.next("a refusal", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
    let ClientEvent::SessionEnded { reason: SessionEnd::Refused { reason, message }, restarting, .. } = e else {
        panic!("expected a refusal, got {e:?}")
    };
    assert_eq!((reason, message.as_str(), restarting), (RejectReason::Unauthorized, "no entry for you", false));

    // connect: admitted as the user the backend names.
    let mut alice = connect(addr, "user:alice");
    let ClientEvent::Connected { session } =
        alice.next("connected", |e| matches!(e, ClientEvent::Connected { .. })).await
    else {
        unreachable!()
    };
    let connects = b.record.calls("connect");
    assert_eq!(connects.len(), 2, "{connects:?}");
    assert_eq!(connects[1].body["credential"], "user:alice");
    assert_eq!(connects[1].body["transport"], "tcp");

    // join: allowed with the backend's display name; refused with its reason;
    // outside the rooms the connect hook allowed, refused without asking it.
    alice.send(json!({"op": "join", "room": "lobby", "name": "Alice"}));
    let joined = alice.msg("joined", |v| v["ev"] == "joined").await;
    assert_eq!(joined["you"]["name"], "Alice ✓");
    assert_eq!(joined["you"]["user"], "alice");
    alice.send(json!({"op": "join", "room": "pub:secret"}));
    let e = alice.msg("a refused join", error_for("join")).await;
    assert_eq!((e["code"].as_str(), e["message"].as_str()), (Some("forbidden"), Some("members only")), "{e}");
    alice.send(json!({"op": "join", "room": "staff"}));
    let e = alice.msg("a forbidden join", error_for("join")).await;
    assert_eq!((e["code"].as_str(), e["room"].as_str()), (Some("forbidden"), Some("staff")), "{e}");
    let joins: Vec<Value> = b.record.calls("join").iter().map(|c| c.body["room"].clone()).collect();
    assert_eq!(
        joins,
        [json!("lobby"), json!("pub:secret")],
        "the backend is not asked for rooms the session may not join"
    );

    // say: rewritten before fan-out; refused with the backend's reason.
    alice.send(json!({"op": "say", "room": "lobby", "body": {"text": "oh darn"}}));
    let m = alice.msg("a message", |v| v["ev"] == "message").await;
    assert_eq!(m["body"], json!({"text": "oh ****"}));
    alice.send(json!({"op": "say", "room": "lobby", "body": {"text": "forbidden"}}));
    let e = alice.msg("a refused say", error_for("say")).await;
    assert_eq!(e["code"], "forbidden");
    assert_eq!(e["message"], "not in this room, please");
    let says = b.record.calls("say");
    assert_eq!(says.len(), 2);
    assert_eq!(says[0].key, format!("{session}-4"), "the key is the session and the message's seq");
    assert_eq!(says[0].body["user"], "alice");

    // rpc: a result, and the backend's own error.
    alice.send(json!({"op": "rpc", "id": 1, "method": "echo", "data": {"x": [1, 2]}}));
    let r = alice.msg("a reply", |v| v["ev"] == "reply" && v["id"] == 1).await;
    assert_eq!(r, json!({"ev": "reply", "id": 1, "result": {"x": [1, 2]}}));
    alice.send(json!({"op": "rpc", "id": 2, "method": "fail"}));
    let r = alice.msg("a reply", |v| v["ev"] == "reply" && v["id"] == 2).await;
    assert_eq!(r["error"], json!({"code": "nope", "message": "failed on purpose"}));

    // lifecycle: opened, then closed, for this session, in order.
    alice.handle.close();
    let deadline = tokio::time::Instant::now() + WAIT;
    let events = loop {
        let ev: Vec<String> = b
            .record
            .calls("lifecycle")
            .iter()
            .filter(|c| c.body["session"] == session.to_string())
            .map(|c| c.body["event"].as_str().unwrap().to_owned())
            .collect();
        if ev.len() >= 2 || tokio::time::Instant::now() > deadline {
            break ev;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events, ["opened", "closed"]);
    let opened = &b.record.calls("lifecycle")[0];
    assert_eq!(opened.body["user"], "alice");
    assert!(opened.key.starts_with(&format!("{session}-opened-")), "{}", opened.key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_down_gets_typed_answers_and_nothing_is_done() {
    // Nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", dead.local_addr().unwrap());
    drop(dead);

    // connect: REJECT 5 (retry later), with what happened.
    let hooks = format!("[hooks]\nurl = \"{url}\"\ntimeout = \"300ms\"\nretries = 1\n");
    let g = gateway(&hooks).await;
    let mut p = connect(g.session_addr(Kind::Tcp).unwrap(), "user:alice");
    let e = p.next("a failed attempt", |e| matches!(e, ClientEvent::AttemptFailed { .. })).await;
    let ClientEvent::AttemptFailed { reason: TransportLoss::Rejected { reason, message } } = e else {
        panic!("expected REJECT, got {e:?}")
    };
    assert_eq!(reason, RejectReason::Overloaded);
    assert!(message.contains("backend is not answering"), "{message}");
    drop(g);

    // join, say, rpc: answered with backend_unavailable; nothing joined.
    let hooks = format!("[hooks]\nurl = \"{url}\"\ncall = [\"join\", \"rpc\"]\ntimeout = \"300ms\"\nretries = 1\n");
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n{hooks}"
    );
    let cfg = Config::parse(&text, "test config").unwrap().resolve().unwrap();
    let g = tether_gateway::run(cfg, std::future::pending()).await.unwrap();
    let mut p = connect(g.session_addr(Kind::Tcp).unwrap(), "");
    p.send(json!({"op": "join", "room": "lobby"}));
    let e = p.msg("a join error", error_for("join")).await;
    assert_eq!(e["code"], "backend_unavailable", "{e}");
    p.send(json!({"op": "say", "room": "lobby", "body": 1}));
    let e = p.msg("a say error", error_for("say")).await;
    assert_eq!(e["code"], "not_member", "the join was not done: {e}");
    p.send(json!({"op": "rpc", "id": 9, "method": "echo"}));
    let r = p.msg("a reply", |v| v["ev"] == "reply").await;
    assert_eq!(r["error"]["code"], "backend_unavailable", "{r}");
    drop(g);

    // A backend that answers garbage: the same typed answers, not retried.
    let b = Backend::start().await;
    b.record.garbage.store(true, std::sync::atomic::Ordering::SeqCst);
    let g = gateway(&hooks_toml(&b.url)).await;
    let mut p = connect(g.session_addr(Kind::Tcp).unwrap(), "user:alice");
    let e = p.next("a failed attempt", |e| matches!(e, ClientEvent::AttemptFailed { .. })).await;
    assert!(format!("{e:?}").contains("answered something unexpected"), "{e:?}");
    assert_eq!(b.record.calls("connect").len(), 1, "garbage is not retried");
    drop(g);

    // A slow backend: each attempt times out, the retry carries the same
    // key, and the client is told nothing was done.
    let b = Backend::start().await;
    *b.record.hold.lock().unwrap() = Some(1);
    let hooks = format!("{}timeout = \"200ms\"\nretries = 1\n", hooks_toml(&b.url).replace("timeout = \"2s\"\n", ""));
    let g = gateway(&hooks).await;
    let mut p = connect(g.session_addr(Kind::Tcp).unwrap(), "user:alice");
    p.send(json!({"op": "join", "room": "lobby"}));
    p.msg("joined", |v| v["ev"] == "joined").await;
    p.send(json!({"op": "say", "room": "lobby", "body": {"n": 1}}));
    let e = p.msg("a say error", error_for("say")).await;
    assert_eq!(e["code"], "backend_unavailable", "{e}");
    assert!(e["message"].as_str().unwrap().contains("did not answer"), "{e}");
    let keys: Vec<String> = b.record.calls("say").iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), 2, "one retry: {keys:?}");
    assert_eq!(keys[0], keys[1], "a retry carries the same idempotency key");
    *b.record.hold.lock().unwrap() = None;
    p.send(json!({"op": "say", "room": "lobby", "body": {"n": 2}}));
    let m = p.msg("a message", |v| v["ev"] == "message").await;
    assert_eq!(m["body"]["n"], 2, "the refused say was not delivered: {m}");
}

/// Messages in flight at a slow backend while the transport is cut, again
/// and again: the session resumes each time, the backend stores every
/// client message exactly once, and the room hears each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_transport_losses_the_backend_stores_every_message_exactly_once() {
    let b = Backend::start().await;
    *b.record.say_delay.lock().unwrap() = Duration::from_millis(30);
    let g = gateway(&hooks_toml(&b.url)).await;
    let proxy = proxy::Proxy::start(g.session_addr(Kind::Tcp).unwrap()).await;
    let mut alice = connect(proxy.addr, "user:alice");
    alice.send(json!({"op": "join", "room": "lobby"}));
    alice.msg("joined", |v| v["ev"] == "joined").await;

    const N: u64 = 60;
    let mut resumes = 0;
    let mut heard = Vec::new();
    for n in 1..=N {
        alice.send(json!({"op": "say", "room": "lobby", "body": {"n": n}}));
        if n % 15 == 0 {
            // The backend is busy with earlier says: cut the transport.
            tokio::time::sleep(Duration::from_millis(40)).await;
            proxy.reset_all();
            alice
                .next("a resume", |e| {
                    if let ClientEvent::Message(m) = e {
                        let v: Value = serde_json::from_slice(m).unwrap();
                        heard.extend(v["body"]["n"].as_u64().filter(|_| v["ev"] == "message"));
                    }
                    matches!(e, ClientEvent::Resumed { .. })
                })
                .await;
            resumes += 1;
        }
    }
    while heard.len() < N as usize {
        let m = alice.msg("a message", |v| v["ev"] == "message").await;
        heard.push(m["body"]["n"].as_u64().unwrap());
    }
    assert_eq!(heard, (1..=N).collect::<Vec<_>>(), "the room hears each message once, in order");
    let stored: Vec<u64> = b.record.stored.lock().unwrap().iter().map(|(_, v)| v["n"].as_u64().unwrap()).collect();
    assert_eq!(stored, (1..=N).collect::<Vec<_>>(), "the backend stores each once, in order");
    assert_eq!(resumes, 4);
    assert_eq!(*b.record.repeats.lock().unwrap(), 0, "one node: no message is handed to the backend twice");

    // The backend heard the session's life in order: opened, then each loss
    // (detached, unless the resume came first and replaced the transport)
    // and each resume, then closed.
    alice.handle.close();
    let deadline = tokio::time::Instant::now() + WAIT;
    let life = loop {
        let life: Vec<String> =
            b.record.calls("lifecycle").iter().map(|c| c.body["event"].as_str().unwrap().to_owned()).collect();
        if life.last().is_some_and(|e| e == "closed") || tokio::time::Instant::now() > deadline {
            break life;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(life.first().map(String::as_str), Some("opened"), "{life:?}");
    assert_eq!(life.last().map(String::as_str), Some("closed"), "{life:?}");
    let middle = &life[1..life.len() - 1];
    assert_eq!(middle.iter().filter(|e| *e == "resumed").count(), 4, "{life:?}");
    assert!(middle.iter().all(|e| e == "detached" || e == "resumed"), "{life:?}");
    assert!(middle.windows(2).all(|w| !(w[0] == "detached" && w[1] == "detached")), "{life:?}");
    assert_eq!(middle.last().map(String::as_str), Some("resumed"), "{life:?}");
}

/// A session that ends while its messages wait for the backend: those are
/// not handed to it; the client gets them back, unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_when_the_session_ends_are_handed_back_not_to_the_backend() {
    let b = Backend::start().await;
    *b.record.hold.lock().unwrap() = Some(1);
    let hooks = format!("{}retries = 0\n", hooks_toml(&b.url).replace("\"2s\"", "\"500ms\""));
    let g = gateway(&hooks).await;
    let mut p = connect(g.session_addr(Kind::Tcp).unwrap(), "user:alice");
    p.send(json!({"op": "join", "room": "lobby"}));
    p.msg("joined", |v| v["ev"] == "joined").await;
    p.send(json!({"op": "say", "room": "lobby", "body": {"n": 1}}));
    p.send(json!({"op": "rpc", "id": 2, "method": "echo"}));
    p.send(json!({"op": "rpc", "id": 3, "method": "echo"}));
    tokio::time::timeout(WAIT, b.record.held.notified()).await.expect("say 1 reaches the backend");
    p.handle.close();
    let e = p.next("the end", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
    let ClientEvent::SessionEnded { unacked, .. } = e else { unreachable!() };
    let back: Vec<Value> = unacked.iter().map(|m| serde_json::from_slice::<Value>(m).unwrap()).collect();
    let waiting: Vec<(Value, Value)> =
        back.iter().filter(|v| v["op"] != "join").map(|v| (v["op"].clone(), v["id"].clone())).collect();
    let want = [(json!("say"), Value::Null), (json!("rpc"), json!(2)), (json!("rpc"), json!(3))];
    assert_eq!(waiting, want, "none was acknowledged: {back:?}");
    // The backend's lane goes on to its last job (the closed event): the
    // waiting says were skipped by then.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !b.record.calls("lifecycle").iter().any(|c| c.body["event"] == "closed") {
        assert!(tokio::time::Instant::now() < deadline, "no closed event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.record.calls("say").len(), 1, "the say under way");
    assert!(b.record.calls("rpc").is_empty(), "the waiting rpcs never reached the backend");
}

/// A say the backend refuses is not counted by the say rate: with a burst
/// of one say, a refused one leaves the next allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_say_the_backend_refuses_costs_no_say_token() {
    let b = Backend::start().await;
    let g = gateway(&format!("{}[limits]\nsay_rate = 0.01\nsay_burst = 1.0\n", hooks_toml(&b.url))).await;
    let mut p = connect(g.session_addr(Kind::Tcp).unwrap(), "user:alice");
    p.send(json!({"op": "join", "room": "lobby"}));
    p.msg("joined", |v| v["ev"] == "joined").await;
    p.send(json!({"op": "say", "room": "lobby", "body": {"text": "forbidden"}}));
    let e = p.msg("a refused say", error_for("say")).await;
    assert_eq!(e["code"], "forbidden", "{e}");
    p.send(json!({"op": "say", "room": "lobby", "body": {"text": "allowed"}}));
    let m = p.msg("the next say", |v| v["ev"] == "message" || v["ev"] == "error").await;
    assert_eq!(m["body"]["text"], "allowed", "the refused say spent the only token: {m}");
    // And the rate holds for says that were said.
    p.send(json!({"op": "say", "room": "lobby", "body": {"text": "one too many"}}));
    let e = p.msg("rate limited", error_for("say")).await;
    assert_eq!(e["code"], "rate_limited", "{e}");
}
