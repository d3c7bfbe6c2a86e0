//! The Rust room client (`tether_gateway::client::Rooms`) against a real
//! gateway with the test backend's hooks: join and leave settled by the
//! gateway's answers (a refusal is typed), members, say, rpc with its
//! result, the backend's error and a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/backend.rs"]
#[allow(dead_code)]
mod backend;

use std::time::Duration;

use serde_json::json;
use tether_gateway::client::{RequestError, Rooms, RoomsEvent};
use tether_gateway::protocol::{ErrorCode, Event};
use tether_gateway::Config;
use tether_proto::{ClientConfig, Profile};
use tether_runtime::client::{Client, ClientOptions};
use tether_runtime::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_members_say_and_rpc_are_calls_settled_by_the_gateway() {
    let b = backend::Backend::start().await;
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n{}",
        backend::hooks_toml(&b.url)
    );
    let g = tether_gateway::run(Config::parse(&text, "t").unwrap().resolve().unwrap(), std::future::pending())
        .await
        .unwrap();
    let mut core = ClientConfig::profile(Profile::Realtime);
    core.auth = bytes::Bytes::from_static(b"user:ann");
    let mut opts = ClientOptions::new(core);
    opts.watch_network = false;
    let client = Client::start(format!("tcp://{}", g.session_addr(Kind::Tcp).unwrap()).parse().unwrap(), opts).unwrap();
    let mut rooms = Rooms::new(client);

    let Event::Joined { you, count, .. } = rooms.join("lobby", Some("Ann")).await.unwrap() else { panic!() };
    assert_eq!((you.user.as_str(), you.name.as_str(), count), ("ann", "Ann ✓", 1));
    match rooms.join("pub:secret", None).await {
        Err(RequestError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::Forbidden { room: "pub:secret".into() });
            assert_eq!(e.message, "members only");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (members, count) = rooms.members("lobby").await.unwrap();
    assert_eq!((members.len(), count, members[0].user.as_str()), (1, 1, "ann"));
    rooms.say("lobby", &json!({"text": "oh darn"})).unwrap();
    let heard = loop {
        match tokio::time::timeout(Duration::from_secs(15), rooms.next_event()).await.unwrap() {
            Some(RoomsEvent::Room(Event::Message { body, .. })) => break body,
            Some(_) => {}
            None => panic!("the client stopped"),
        }
    };
    assert_eq!(heard, json!({"text": "oh ****"}));

    let r = rooms.rpc("echo", json!([1, "two"]), Duration::from_secs(15)).await.unwrap();
    assert_eq!(r, json!([1, "two"]));
    let e = rooms.rpc("fail", json!(null), Duration::from_secs(15)).await.unwrap_err();
    assert_eq!((e.code.as_str(), e.message.as_str()), ("nope", "failed on purpose"));
    // The backend holds this say (never answers): an rpc queued behind it on
    // the session's lane times out on the client.
    *b.record.hold.lock().unwrap() = Some(99);
    rooms.say("lobby", &json!({"n": 99})).unwrap();
    let e = rooms.rpc("echo", json!(1), Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(e.code, "timeout");

    rooms.handle().close();
    assert!(matches!(rooms.leave("lobby").await, Err(RequestError::Send(_) | RequestError::SessionEnded)));
}
