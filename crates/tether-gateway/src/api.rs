//! The admin API's answers as types (docs/GATEWAY.md §5). `openapi.json`
//! describes them; a test here checks an example of each against that
//! description, so the two cannot drift.

use serde::Serialize;

use crate::protocol::Member;

/// Every error: what happened and what to do.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
}

/// `GET /health`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    pub(crate) status: &'static str,
}

/// `GET /ready` while accepting.
#[derive(Debug, Serialize)]
pub(crate) struct Ready {
    pub(crate) ready: bool,
}

/// Whether a session has a transport now.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Attachment {
    Attached,
    Detached,
}

/// One session, as `GET /v1/sessions` and `GET /v1/sessions/{id}` show it.
#[derive(Debug, Serialize)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) user: Option<String>,
    pub(crate) state: Attachment,
    pub(crate) transport: Option<String>,
    pub(crate) peer: Option<String>,
    pub(crate) rtt_ms: Option<f64>,
    pub(crate) last_heard_ms: u64,
    pub(crate) replay_buffer: ReplayBuffer,
    pub(crate) rooms: Vec<String>,
}

/// Unacknowledged outgoing messages held for a replay.
#[derive(Debug, Serialize)]
pub(crate) struct ReplayBuffer {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

/// `GET /v1/sessions`.
#[derive(Debug, Serialize)]
pub(crate) struct Sessions {
    pub(crate) sessions: Vec<Session>,
}

/// `DELETE /v1/sessions/{id}`: the sessions ended, and with `ban=`, who is
/// banned for how long.
#[derive(Debug, Serialize)]
pub(crate) struct Kicked {
    pub(crate) kicked: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) banned: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ban_ms: Option<u64>,
}

/// One ban, with the time it has left.
#[derive(Debug, Serialize)]
pub(crate) struct Ban {
    pub(crate) user: String,
    pub(crate) remaining_ms: u64,
}

/// `GET /v1/bans`.
#[derive(Debug, Serialize)]
pub(crate) struct Bans {
    pub(crate) bans: Vec<Ban>,
}

/// `DELETE /v1/bans/{user}`.
#[derive(Debug, Serialize)]
pub(crate) struct Lifted {
    pub(crate) lifted: String,
}

/// `POST /v1/sessions/{id}/publish`: the message's sequence number on the session.
#[derive(Debug, Serialize)]
pub(crate) struct SessionPublished {
    pub(crate) session: String,
    pub(crate) seq: u64,
}

/// A room and its member count.
#[derive(Debug, Serialize)]
pub(crate) struct RoomSize {
    pub(crate) room: String,
    pub(crate) members: usize,
}

/// `GET /v1/rooms`.
#[derive(Debug, Serialize)]
pub(crate) struct Rooms {
    pub(crate) rooms: Vec<RoomSize>,
}

/// `GET /v1/rooms/{room}`.
#[derive(Debug, Serialize)]
pub(crate) struct Room {
    pub(crate) room: String,
    pub(crate) members: Vec<Member>,
}

/// `POST /v1/rooms/{room}/publish`: how many members it was queued to.
#[derive(Debug, Serialize)]
pub(crate) struct RoomPublished {
    pub(crate) room: String,
    pub(crate) queued: usize,
}

/// `POST /v1/drain`.
#[derive(Debug, Serialize)]
pub(crate) struct Drained {
    pub(crate) told: usize,
    pub(crate) window_ms: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::protocol::State;
    use serde_json::Value;

    const OPENAPI: &str = include_str!("openapi.json");

    /// Checks `v` against a JSON schema of the kind openapi.json uses
    /// (`$ref`, `type`, `enum`, `properties` and `required`, `items`):
    /// every property given is described, every required one is there.
    fn check(doc: &Value, schema: &Value, v: &Value, at: &str) {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.strip_prefix("#/components/schemas/").expect("a local $ref");
            return check(doc, &doc["components"]["schemas"][name], v, at);
        }
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| t == kind || (t == "number" && kind == "integer");
        assert!(types.is_empty() || types.iter().any(|t| fits(t)), "{at}: {kind} where the schema says {types:?}");
        if let Some(allowed) = schema["enum"].as_array() {
            assert!(allowed.contains(v), "{at}: {v} is not one of {allowed:?}");
        }
        if let (Value::Object(o), Some(props)) = (v, schema["properties"].as_object()) {
            for (k, x) in o {
                let p = props.get(k).unwrap_or_else(|| panic!("{at}: `{k}` is not in openapi.json"));
                check(doc, p, x, &format!("{at}.{k}"));
            }
            for r in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                assert!(o.contains_key(r), "{at}: required `{r}` is missing");
            }
        }
        if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
            for (i, x) in items.iter().enumerate() {
                check(doc, s, x, &format!("{at}[{i}]"));
            }
        }
    }

    fn v(x: impl Serialize) -> Value {
        serde_json::to_value(x).unwrap()
    }

    fn member() -> Member {
        Member {
            session: "00".repeat(16),
            user: "alice".into(),
            name: "Alice".into(),
            state: State::Reconnecting,
            rtt_ms: Some(12.5),
        }
    }

    #[test]
    fn every_answer_is_as_openapi_json_describes_it() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let session = || Session {
            id: "00".repeat(16),
            user: Some("alice".into()),
            state: Attachment::Detached,
            transport: Some("ws".into()),
            peer: Some("127.0.0.1:5000".into()),
            rtt_ms: None,
            last_heard_ms: 1200,
            replay_buffer: ReplayBuffer { messages: 2, bytes: 300 },
            rooms: vec!["lobby".into()],
        };
        let error = || serde_json::to_value(ErrorBody { error: "no such session".into() }).unwrap();
        let cases: Vec<(&str, &str, &str, Value)> = vec![
            ("get", "/health", "200", v(Health { status: "ok" })),
            ("get", "/ready", "200", v(Ready { ready: true })),
            ("get", "/ready", "503", error()),
            ("get", "/v1/sessions", "200", v(Sessions { sessions: vec![session()] })),
            ("get", "/v1/sessions/{id}", "200", v(session())),
            ("get", "/v1/sessions/{id}", "404", error()),
            (
                "delete",
                "/v1/sessions/{id}",
                "200",
                v(Kicked { kicked: vec!["00".repeat(16)], banned: None, ban_ms: None }),
            ),
            (
                "delete",
                "/v1/sessions/{id}",
                "200",
                v(Kicked { kicked: vec![], banned: Some("alice".into()), ban_ms: Some(600_000) }),
            ),
            ("post", "/v1/sessions/{id}/publish", "202", v(SessionPublished { session: "00".repeat(16), seq: 7 })),
            ("get", "/v1/rooms", "200", v(Rooms { rooms: vec![RoomSize { room: "lobby".into(), members: 2 }] })),
            ("get", "/v1/rooms/{room}", "200", v(Room { room: "lobby".into(), members: vec![member()] })),
            ("post", "/v1/rooms/{room}/publish", "202", v(RoomPublished { room: "lobby".into(), queued: 2 })),
            ("post", "/v1/drain", "200", v(Drained { told: 3, window_ms: 5000 })),
            ("get", "/v1/bans", "200", v(Bans { bans: vec![Ban { user: "mallory".into(), remaining_ms: 1000 }] })),
            ("delete", "/v1/bans/{user}", "200", v(Lifted { lifted: "mallory".into() })),
        ];
        for (method, path, status, value) in cases {
            let at = format!("{method} {path} {status}");
            let schema = &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{at}: not described in openapi.json");
            check(&doc, schema, &value, &at);
        }
        // The room protocol's member is the admin API's too.
        let m = serde_json::to_value(member()).unwrap();
        let described: Vec<&String> =
            doc["components"]["schemas"]["Member"]["properties"].as_object().unwrap().keys().collect();
        assert_eq!(m.as_object().unwrap().keys().collect::<Vec<_>>().len(), described.len());
        check(&doc, &serde_json::json!({"$ref": "#/components/schemas/Member"}), &m, "Member");
    }
}
