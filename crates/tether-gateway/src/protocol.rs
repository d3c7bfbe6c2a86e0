//! The room protocol (docs/GATEWAY.md §1) as types. Every message a client
//! sends is a [`Request`] (tagged by `op`), every message the gateway sends
//! is an [`Event`] (tagged by `ev`); each is one UTF-8 JSON object in a
//! tether DATA payload.
//!
//! `fixtures/room-protocol.json` holds a named example of every request,
//! event and error code. A test here parses each into these types and
//! serializes it back to the same JSON; the browser client's test
//! (`clients/js/test/rooms-fixtures.test.mjs`) sends and reads the same
//! examples. A message kind without an example fails both.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request, client → gateway (§1.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Joins a room (again: updates the display name).
    Join {
        /// 1 to 64 bytes.
        room: String,
        /// A display name, at most 64 bytes; absent, null or empty keeps the current one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Leaves a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Says something to every member of a room, the sender included.
    Say {
        /// The room (the sender must be a member).
        room: String,
        /// Any JSON value, passed on as is.
        body: Value,
    },
    /// Asks for a room's members.
    Members {
        /// The room (the asker must be a member).
        room: String,
    },
    /// A request to the application's backend (the `rpc` hook), answered
    /// by a `reply` with the same `id`.
    Rpc {
        /// Chosen by the client to match the reply.
        id: u64,
        /// What to do, 1 to 64 bytes.
        method: String,
        /// Any JSON value (absent: null).
        #[serde(default)]
        data: Value,
    },
}

impl Request {
    /// The `op` it is sent with.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Say { .. } => "say",
            Request::Members { .. } => "members",
            Request::Rpc { .. } => "rpc",
        }
    }

    /// Every `op` there is.
    pub const OPS: [&'static str; 5] = ["join", "leave", "say", "members", "rpc"];
}

/// A member's link state, as its rooms see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The member's session has a transport.
    Active,
    /// Its transport was lost; the session waits for a resume (still a member).
    Reconnecting,
    /// It left, or its session ended for any reason but expiry (removed).
    Left,
    /// The grace ran out without a resume (removed).
    Expired,
}

/// A member of a room, as events show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The session id, 32 hex digits.
    pub session: String,
    /// The JWT subject, or `anon-<first 8 hex of the session>`.
    pub user: String,
    /// The display name (the user id until the member names itself).
    pub name: String,
    /// The link state.
    pub state: State,
    /// The last RTT the member's client reported on its PINGs (null before the first).
    pub rtt_ms: Option<f64>,
}

/// An event, gateway → client (§1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum Event {
    /// The answer to `join`.
    Joined {
        /// The room.
        room: String,
        /// The joiner.
        you: Member,
        /// The joiner first, then others, at most `limits.max_members_listed` in all.
        members: Vec<Member>,
        /// The room's exact size.
        count: usize,
    },
    /// The answer to `leave`.
    Left {
        /// The room.
        room: String,
    },
    /// The answer to `members`.
    Members {
        /// The room.
        room: String,
        /// The asker first, then others, at most `limits.max_members_listed` in all.
        members: Vec<Member>,
        /// The room's exact size.
        count: usize,
    },
    /// A member of a room the receiver is in changed state.
    Presence {
        /// The room.
        room: String,
        /// The member, in its new state.
        member: Member,
    },
    /// A `say` in a room the receiver is in.
    Message {
        /// The room.
        room: String,
        /// Who said it.
        from: Member,
        /// What the sayer sent as `body`.
        body: Value,
    },
    /// Sent through the admin API, to a room or to this session.
    Publish {
        /// The room, or null for a publish to this session alone.
        room: Option<String>,
        /// What the operator sent.
        body: Value,
    },
    /// The answer to `rpc`: its `result`, or an `error`.
    Reply {
        /// The rpc's `id`.
        id: u64,
        /// What the backend answered (present when there is no error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// Why there is no result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ReplyError>,
    },
    /// A request could not be done, or not entirely.
    Error(Error),
}

/// Why an `rpc` has no result: the backend's own error code (any string),
/// or the gateway's: `backend_unavailable` (the backend did not answer or
/// answered garbage: nothing was done that the client can rely on; the
/// client may call again, with the same effect for a backend that stores
/// the idempotency key), `no_backend` (this gateway has no rpc hook),
/// `bad_method` (not 1 to 64 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyError {
    /// Machine-readable.
    pub code: String,
    /// For people.
    pub message: String,
}

impl Event {
    /// The `ev` it is sent with.
    pub fn ev(&self) -> &'static str {
        match self {
            Event::Joined { .. } => "joined",
            Event::Left { .. } => "left",
            Event::Members { .. } => "members",
            Event::Presence { .. } => "presence",
            Event::Message { .. } => "message",
            Event::Publish { .. } => "publish",
            Event::Reply { .. } => "reply",
            Event::Error(_) => "error",
        }
    }

    /// Every `ev` there is.
    pub const EVS: [&'static str; 8] =
        ["joined", "left", "members", "presence", "message", "publish", "reply", "error"];

    /// The payload to send.
    pub fn to_bytes(&self) -> Bytes {
        // Cannot fail: every map key is a string (non-finite numbers are written as null).
        Bytes::from(serde_json::to_vec(self).expect("room events always serialize"))
    }
}

/// An `error` event: the request's `op`, a machine-readable `code` with the
/// figures that go with it, and a `message` saying why and what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Error {
    /// The request's `op`; empty when the request could not be read.
    pub op: String,
    /// What went wrong (serialized as `code` and its fields).
    #[serde(flatten)]
    pub code: ErrorCode,
    /// Why, and what to do, for people.
    pub message: String,
}

/// The `code` of an error, with its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not one of the requests.
    BadRequest,
    /// The request is longer than `limits.max_say_bytes`.
    RequestTooLarge {
        /// The request's length, bytes.
        size: usize,
        /// `limits.max_say_bytes`.
        limit: usize,
    },
    /// A room name is not 1 to 64 bytes.
    BadRoom,
    /// A display name is longer than 64 bytes.
    BadName,
    /// The session is in `limits.max_rooms_per_session` rooms already.
    TooManyRooms {
        /// The room it asked to join.
        room: String,
    },
    /// The room has `limits.max_room_members` members.
    RoomFull {
        /// The room.
        room: String,
    },
    /// Only members may leave, say or ask for members.
    NotMember {
        /// The room.
        room: String,
    },
    /// More `say`s than `limits.say_rate` per second (beyond the burst).
    RateLimited {
        /// The room said to.
        room: String,
    },
    /// The session's permissions (from its token or the `connect` hook) or
    /// the application's backend (the `join` or `say` hook) refused it.
    Forbidden {
        /// The room.
        room: String,
    },
    /// The application's backend did not answer (or answered garbage)
    /// within `hooks.timeout` and `hooks.retries`: nothing was done; send
    /// the request again later.
    BackendUnavailable,
    /// A `say` was delivered to the room, except to `undelivered` members
    /// (the sayer may be one) whose frame limit cannot hold it: the
    /// `message` event carrying it is `size` bytes, and the smallest of
    /// their limits is `limit` bytes. Sent to the sayer only.
    TooLargeForMembers {
        /// The room said to.
        room: String,
        /// Members who did not get the message.
        undelivered: usize,
        /// The `message` event's length, bytes (the body plus the room and the sender).
        size: usize,
        /// The smallest message those members accept, bytes.
        limit: usize,
    },
}

impl ErrorCode {
    /// The `code` it is sent with.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::RequestTooLarge { .. } => "request_too_large",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadName => "bad_name",
            ErrorCode::TooManyRooms { .. } => "too_many_rooms",
            ErrorCode::RoomFull { .. } => "room_full",
            ErrorCode::NotMember { .. } => "not_member",
            ErrorCode::RateLimited { .. } => "rate_limited",
            ErrorCode::Forbidden { .. } => "forbidden",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::TooLargeForMembers { .. } => "too_large_for_members",
        }
    }

    /// Every `code` there is.
    pub const NAMES: [&'static str; 11] = [
        "bad_request",
        "request_too_large",
        "bad_room",
        "bad_name",
        "too_many_rooms",
        "room_full",
        "not_member",
        "rate_limited",
        "forbidden",
        "backend_unavailable",
        "too_large_for_members",
    ];
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::BTreeSet;

    const FIXTURES: &str = include_str!("../../../fixtures/room-protocol.json");

    /// (name, message) pairs of one list of the fixtures file.
    fn examples(list: &str) -> Vec<(String, Value)> {
        let v: Value = serde_json::from_str(FIXTURES).expect("fixtures/room-protocol.json is JSON");
        let items = v[list].as_array().unwrap_or_else(|| panic!("fixtures: no list {list:?}"));
        items
            .iter()
            .map(|e| (e["name"].as_str().expect("every example has a name").to_owned(), e["message"].clone()))
            .collect()
    }

    #[test]
    fn every_request_example_parses_and_serializes_back_the_same() {
        let mut ops = BTreeSet::new();
        for (name, json) in examples("requests") {
            let r: Request = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
            assert_eq!(serde_json::to_value(&r).unwrap(), json, "{name}: serialized back differently");
            assert_eq!(json["op"], r.op(), "{name}");
            ops.insert(r.op());
        }
        assert_eq!(ops, BTreeSet::from(Request::OPS), "every op needs an example in fixtures/room-protocol.json");
    }

    #[test]
    fn every_event_example_parses_and_serializes_back_the_same() {
        let (mut evs, mut codes) = (BTreeSet::new(), BTreeSet::new());
        for (name, json) in examples("events") {
            let e: Event = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
            assert_eq!(serde_json::to_value(&e).unwrap(), json, "{name}: serialized back differently");
            // What is sent is exactly that JSON.
            assert_eq!(serde_json::from_slice::<Value>(&e.to_bytes()).unwrap(), json, "{name}");
            assert_eq!(json["ev"], e.ev(), "{name}");
            evs.insert(e.ev());
            if let Event::Error(err) = &e {
                assert_eq!(json["code"], err.code.name(), "{name}");
                codes.insert(err.code.name());
            }
        }
        assert_eq!(evs, BTreeSet::from(Event::EVS), "every ev needs an example in fixtures/room-protocol.json");
        assert_eq!(
            codes,
            BTreeSet::from(ErrorCode::NAMES),
            "every error code needs an example in fixtures/room-protocol.json"
        );
    }

    #[test]
    fn requests_that_are_not_in_the_protocol_are_refused() {
        for bad in [
            r#"{"op":"dance"}"#,
            r#"{"room":"a"}"#,
            r#"{"op":"join"}"#,
            r#"{"op":"say","room":"a"}"#,
            r#"{"op":"join","room":7}"#,
            "[]",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad} was accepted");
        }
        // A null name is no name.
        let r: Request = serde_json::from_str(r#"{"op":"join","room":"a","name":null}"#).unwrap();
        assert_eq!(r, Request::Join { room: "a".into(), name: None });
    }
}
