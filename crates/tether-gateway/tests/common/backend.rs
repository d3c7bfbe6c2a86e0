//! An application backend for the hook tests: a real HTTP server (axum on
//! a loopback port) that decides as an application would and records every
//! call. It stores each `say` once per idempotency key, as the docs tell
//! backends to (docs/GATEWAY.md §10).
//!
//! - connect: credential `deny` is refused ("no entry for you"); `user:NAME`
//!   is admitted as NAME, allowed to join `lobby`, `call` and `pub:*`.
//! - join: rooms ending in `secret` are refused ("members only"); a name gets " ✓".
//! - say: `{"text": "forbidden"}` is refused; "darn" is rewritten to "****";
//!   each is stored (once per key) before the call waits `say_delay`, and
//!   the one numbered `hold` is never answered.
//! - rpc: `echo` answers its data, `fail` answers error `nope`.
//! - every call must carry header `x-backend-secret: s3cret` (else 401).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use axum::Json;
use serde_json::{json, Value};

/// One call as the backend received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub hook: String,
    pub key: String,
    pub body: Value,
}

#[derive(Default)]
pub struct Record {
    pub calls: Mutex<Vec<Call>>,
    /// Say bodies stored, once per idempotency key, in arrival order.
    pub stored: Mutex<Vec<(String, Value)>>,
    /// Say calls whose key was stored before (retries, resends after a node died).
    pub repeats: Mutex<u32>,
    pub say_delay: Mutex<Duration>,
    /// A say whose `body.n` is this is stored, then never answered (its
    /// caller dies waiting); `held` is notified when it arrives.
    pub hold: Mutex<Option<u64>>,
    pub held: tokio::sync::Notify,
    /// Answer every call with 200 and a body that is not JSON.
    pub garbage: std::sync::atomic::AtomicBool,
}

impl Record {
    pub fn calls(&self, hook: &str) -> Vec<Call> {
        self.calls.lock().unwrap().iter().filter(|c| c.hook == hook).cloned().collect()
    }
}

pub struct Backend {
    pub url: String,
    pub record: Arc<Record>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `[hooks]` table pointing at this backend (all hooks, its secret).
pub fn hooks_toml(url: &str) -> String {
    format!("[hooks]\nurl = \"{url}\"\ntimeout = \"2s\"\nheaders = {{ x-backend-secret = \"s3cret\" }}\n")
}

impl Backend {
    pub async fn start() -> Backend {
        let record = Arc::new(Record::default());
        let app = axum::Router::new().route("/hooks/{hook}", axum::routing::post(hook)).with_state(record.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(l, app).await.unwrap();
        });
        Backend { url: format!("http://{addr}/hooks"), record, task }
    }
}

async fn hook(
    State(r): State<Arc<Record>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<axum::response::Response, StatusCode> {
    if headers.get("x-backend-secret").and_then(|v| v.to_str().ok()) != Some("s3cret") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    r.calls.lock().unwrap().push(Call { hook: hook.clone(), key: key.clone(), body: body.clone() });
    if r.garbage.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok("<html>oops</html>".into_response());
    }
    Ok(Json(match hook.as_str() {
        "connect" => match body["credential"].as_str().unwrap_or_default() {
            "deny" => json!({"allow": false, "reason": "no entry for you"}),
            c if c.starts_with("user:") => {
                json!({"allow": true, "user": &c[5..], "rooms": ["lobby", "call", "pub:*"]})
            }
            _ => json!({"allow": true}),
        },
        "join" if body["room"].as_str().is_some_and(|r| r.ends_with("secret")) => {
            json!({"allow": false, "reason": "members only"})
        }
        "join" => json!({"allow": true, "name": body["name"].as_str().map(|n| format!("{n} ✓"))}),
        "say" => {
            let text = body["body"]["text"].as_str().unwrap_or_default().to_owned();
            if text == "forbidden" {
                return Ok(Json(json!({"allow": false, "reason": "not in this room, please"})).into_response());
            }
            {
                let mut stored = r.stored.lock().unwrap();
                if stored.iter().any(|(k, _)| *k == key) {
                    *r.repeats.lock().unwrap() += 1;
                } else {
                    stored.push((key, body["body"].clone()));
                }
            }
            let hold = *r.hold.lock().unwrap();
            if hold.is_some() && body["body"]["n"].as_u64() == hold {
                r.held.notify_one();
                std::future::pending::<()>().await;
            }
            let delay = *r.say_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if text.contains("darn") {
                json!({"allow": true, "body": {"text": text.replace("darn", "****")}})
            } else {
                json!({"allow": true})
            }
        }
        "rpc" if body["method"] == "echo" => json!({"result": body["data"]}),
        "rpc" => json!({"error": {"code": "nope", "message": "failed on purpose"}}),
        _ => json!({}),
    })
    .into_response())
}
