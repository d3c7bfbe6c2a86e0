//! The example application (examples/chat-backend, a Node backend) against
//! a real gateway in this process: its connect hook refuses a wrong
//! password and names the user, its permissions refuse a room, its say hook
//! stores every message exactly once through transport losses (checked in
//! its data file), and its history RPC answers. Needs `node` on PATH
//! (scripts/test.sh installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/peer.rs"]
mod peer;
#[path = "../../tether-runtime/tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use peer::{connect, error_for};
use serde_json::{json, Value};
use tether_gateway::Config;
use tether_proto::{ClientEvent, SessionEnd};
use tether_runtime::Kind;

/// The example backend, stopped (and its data removed) when dropped.
struct App {
    child: Child,
    url: String,
    data: std::path::PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn start_app() -> App {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = std::env::temp_dir().join(format!("tether-chat-example-{}", std::process::id()));
    let mut child = Command::new("node")
        .arg(root.join("examples/chat-backend/server.mjs"))
        .env("PORT", "0")
        .env("DATA_DIR", &data)
        .env("HOOK_SECRET", "s3cret")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node (scripts/test.sh installs it)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("the backend said {line:?}"));
    App { url: format!("{url}/tether"), child, data }
}

impl App {
    /// The messages the backend stored: (key, user, text).
    fn stored(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(self.data.join("messages.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap().to_owned();
                (s("key"), s("user"), s("text"))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_chat_backend_runs_against_a_real_gateway() {
    let app = start_app();
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[auth]\nanonymous = false\n\
         [admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n\
         [hooks]\nurl = \"{}\"\nheaders = {{ authorization = \"Bearer s3cret\" }}\n",
        app.url
    );
    let cfg = Config::parse(&text, "test config").unwrap().resolve().unwrap();
    let g = tether_gateway::run(cfg, std::future::pending()).await.unwrap();
    let addr = g.session_addr(Kind::Tcp).unwrap();

    let mut mallory = connect(addr, "alice:guess");
    let e = mallory.next("a refusal", |e| matches!(e, ClientEvent::SessionEnded { .. })).await;
    assert!(
        matches!(&e, ClientEvent::SessionEnded { reason: SessionEnd::Refused { message, .. }, .. } if message == "wrong user name or password"),
        "{e:?}"
    );

    let proxy = proxy::Proxy::start(addr).await;
    let mut bob = connect(proxy.addr, "bob:builder");
    bob.send(json!({"op": "join", "room": "team:red"}));
    let e = bob.msg("a refused join", error_for("join")).await;
    assert_eq!(e["code"], "forbidden", "{e}");
    bob.send(json!({"op": "join", "room": "general"}));
    let joined = bob.msg("joined", |v| v["ev"] == "joined").await;
    assert_eq!((joined["you"]["user"].as_str(), joined["you"]["name"].as_str()), (Some("bob"), Some("Bob")));

    // Messages through transport cuts: stored once each, heard once each.
    const N: usize = 30;
    let mut heard = Vec::new();
    for n in 1..=N {
        bob.send(json!({"op": "say", "room": "general", "body": {"text": format!("m{n}")}}));
        if n % 10 == 0 {
            proxy.reset_all();
            bob.next("a resume", |e| {
                if let ClientEvent::Message(m) = e {
                    let v: Value = serde_json::from_slice(m).unwrap();
                    heard.extend(v["body"]["text"].as_str().filter(|_| v["ev"] == "message").map(str::to_owned));
                }
                matches!(e, ClientEvent::Resumed { .. })
            })
            .await;
        }
    }
    while heard.len() < N {
        let m = bob.msg("a message", |v| v["ev"] == "message").await;
        heard.push(m["body"]["text"].as_str().unwrap().to_owned());
    }
    let want: Vec<String> = (1..=N).map(|n| format!("m{n}")).collect();
    assert_eq!(heard, want);
    let stored = app.stored();
    assert_eq!(stored.iter().map(|(_, _, t)| t.clone()).collect::<Vec<_>>(), want, "stored once each, in order");
    assert!(stored.iter().all(|(_, u, _)| u == "bob"));

    bob.send(json!({"op": "say", "room": "general", "body": {"text": "   "}}));
    let e = bob.msg("a refused say", error_for("say")).await;
    assert_eq!(e["message"], "say something: {\"text\": \"…\"}");

    bob.send(json!({"op": "rpc", "id": 1, "method": "history", "data": {"room": "general", "limit": 2}}));
    let r = bob.msg("the history", |v| v["ev"] == "reply").await;
    let texts: Vec<&str> = r["result"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["m29", "m30"], "{r}");
    bob.send(json!({"op": "rpc", "id": 2, "method": "history", "data": {"room": "team:red"}}));
    let r = bob.msg("a refused history", |v| v["ev"] == "reply").await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
}
