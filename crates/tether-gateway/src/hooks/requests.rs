//! A client message from its bytes to its answer: read, checked against
//! the session's permissions, passed by the backend where a hook asks,
//! applied by the room engine (in memory or in Redis), and committed with
//! what it sends: only then is it acknowledged to the client. A message
//! whose handling is cut short (this node dies) is sent again by its client
//! and handled again with the same idempotency key.

use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use tether_proto::SessionId;

use super::{Hook, HookError, RpcAnswer, Verdict};
use crate::protocol::{Error, ErrorCode, Event, ReplyError, Request};
use crate::rooms::{self, forbidden, Refused, Rooms};
use crate::Shared;

/// The idempotency key of a client message: the same on every attempt,
/// on every node.
pub(crate) fn message_key(session: SessionId, seq: u64) -> String {
    format!("{session}-{seq}")
}

/// Handles one client message of `session` (its `seq`).
pub(crate) async fn handle(s: &Shared, session: SessionId, seq: u64, payload: &[u8]) {
    let req = match rooms::parse(payload, s.max_say_bytes) {
        Ok(r) => r,
        Err(error) => return answer(s, session, seq, error).await,
    };
    let op = req.op();
    let permitted = s.rooms().permitted(session, &req);
    if let Err(r) = permitted {
        return refuse(s, session, seq, op, r).await;
    }
    let hooked = |h: Hook| s.hooks.as_ref().filter(|x| x.calls(h)).cloned();
    let (req, rate_checked) = match req {
        Request::Rpc { id, method, data } => return rpc(s, session, seq, id, method, data).await,
        Request::Join { room, name } => match hooked(Hook::Join) {
            None => (Request::Join { room, name }, false),
            Some(h) => {
                if let Err(r) = rooms::check_join(&room, name.as_deref()) {
                    return refuse(s, session, seq, op, r).await;
                }
                let body =
                    json!({"session": session.to_string(), "user": user(s, session), "room": room, "name": name});
                match h.call::<Verdict>(Hook::Join, &message_key(session, seq), &body, None).await {
                    Ok(v) if v.allow => (Request::Join { name: v.name.or(name), room }, false),
                    Ok(v) => return refuse(s, session, seq, op, refused(&room, v.reason, "join")).await,
                    Err(e) => return refuse(s, session, seq, op, unavailable(&e)).await,
                }
            }
        },
        Request::Say { room, body } => match hooked(Hook::Say) {
            None => (Request::Say { room, body }, false),
            Some(h) => {
                // The gateway's own checks first: the backend hears only
                // says that will be delivered if it allows them.
                let now = Instant::now();
                let checked = match &s.cluster {
                    Some(c) => match crate::cluster::retry("a say's checks", || c.check_say(session, &room, now)).await
                    {
                        Ok(r) => r,
                        Err(e) => return tracing::warn!(%session, %e, "say not checked"),
                    },
                    None => s.rooms().check_say(session, &room, now),
                };
                if let Err(r) = checked {
                    return refuse(s, session, seq, op, r).await;
                }
                let hook_body =
                    json!({"session": session.to_string(), "user": user(s, session), "room": room, "body": body});
                let verdict = h.call::<Verdict>(Hook::Say, &message_key(session, seq), &hook_body, None).await;
                if !matches!(&verdict, Ok(v) if v.allow) {
                    // Not said after all: the say rate does not count it.
                    match &s.cluster {
                        Some(c) => c.refund_say(session),
                        None => s.rooms().refund_say(session),
                    }
                }
                match verdict {
                    Ok(v) if v.allow => (Request::Say { body: v.body.unwrap_or(body), room }, true),
                    Ok(v) => return refuse(s, session, seq, op, refused(&room, v.reason, "say")).await,
                    Err(e) => return refuse(s, session, seq, op, unavailable(&e)).await,
                }
            }
        },
        other => (other, false),
    };
    apply(s, session, seq, req, rate_checked).await;
}

/// The room engine acts on a request and commits it with what it sends.
async fn apply(s: &Shared, session: SessionId, seq: u64, req: Request, rate_checked: bool) {
    if let Some(c) = &s.cluster {
        return crate::cluster::request(s, c, session, seq, req, rate_checked).await;
    }
    let rooms::Reply { out, said } = s.rooms().apply(session, req, Instant::now(), rate_checked);
    let Some(d) = crate::commit(s, session, seq, out).await else { return };
    too_large(s, session, said, d).await;
}

/// A say that some members cannot take (their frame limit is too small for
/// it) is not lost silently: the sayer is told.
pub(crate) async fn too_large(s: &Shared, session: SessionId, said: Option<String>, d: crate::Delivered) {
    if let (Some(room), Some((undelivered, size, limit))) = (said, d.too_large) {
        let answer = Rooms::too_large_for_members(room, undelivered, size, limit);
        crate::deliver(&s.server, &s.metrics, vec![(session, answer)]).await;
    }
}

/// The user id the backend is told (null: anonymous).
fn user(s: &Shared, session: SessionId) -> Value {
    let rooms = s.rooms();
    match rooms.participant(session).map(|p| p.user(session)) {
        Some(u) if !u.starts_with("anon-") => Value::from(u),
        _ => Value::Null,
    }
}

/// The backend's refusal.
fn refused(room: &str, reason: Option<String>, op: &str) -> Refused {
    let why = reason.filter(|r| !r.is_empty()).unwrap_or_else(|| format!("the application does not allow this {op}"));
    forbidden(room, &why)
}

fn unavailable(e: &HookError) -> Refused {
    let what = match e {
        HookError::Unavailable(_) => "did not answer",
        HookError::Garbage(_) => "answered something unexpected",
    };
    let message = format!("the application's backend {what}; nothing was done: send it again later");
    (ErrorCode::BackendUnavailable, message)
}

async fn refuse(s: &Shared, session: SessionId, seq: u64, op: &str, (code, message): Refused) {
    let e = Event::Error(Error { op: op.to_owned(), code, message }).to_bytes();
    answer(s, session, seq, e).await;
}

/// Commits a client message whose answer is one message to its sender.
async fn answer(s: &Shared, session: SessionId, seq: u64, reply: Bytes) {
    crate::commit(s, session, seq, vec![(session, reply)]).await;
}

/// An `rpc`: the backend's answer, as a `reply`.
async fn rpc(s: &Shared, session: SessionId, seq: u64, id: u64, method: String, data: Value) {
    let error = |code: &str, message: String| Event::Reply {
        id,
        result: None,
        error: Some(ReplyError { code: code.to_owned(), message }),
    };
    let hook = s.hooks.as_ref().filter(|h| h.calls(Hook::Rpc));
    let reply = match hook {
        _ if method.is_empty() || method.len() > 64 => error("bad_method", "methods are 1 to 64 bytes".into()),
        None => error("no_backend", "this gateway has no rpc hook (hooks.url with \"rpc\" in hooks.call)".into()),
        Some(h) => {
            let body =
                json!({"session": session.to_string(), "user": user(s, session), "method": method, "data": data});
            match h.call::<RpcAnswer>(Hook::Rpc, &message_key(session, seq), &body, None).await {
                Ok(RpcAnswer { error: Some(e), .. }) => error(&e.code, e.message),
                Ok(RpcAnswer { result, .. }) => {
                    Event::Reply { id, result: Some(result.unwrap_or(Value::Null)), error: None }
                }
                Err(e) => error("backend_unavailable", unavailable(&e).1),
            }
        }
    };
    let Some(d) = crate::commit(s, session, seq, vec![(session, reply.to_bytes())]).await else { return };
    if let Some((_, size, limit)) = d.too_large {
        let message = format!("the backend's result is {size} bytes; this client takes messages of at most {limit}");
        let e = error("reply_too_large", message).to_bytes();
        crate::deliver(&s.server, &s.metrics, vec![(session, e)]).await;
    }
}
