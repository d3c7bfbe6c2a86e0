//! Rooms kept in Redis beside the sessions (`[cluster]`): members on any
//! node see each other, membership and presence outlive the node that
//! served a member, and every room request commits atomically with the
//! messages it sends and the client message it answers (one Lua script,
//! after tether-cluster's common script: exactly once across node death).
//!
//! The rules are the in-memory engine's ([`super::Rooms`]), the same
//! limits, answers and errors; the shared test `cluster_rooms` drives both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tether_cluster::redis::{self, Script};
use tether_cluster::RedisStore;
use tether_proto::SessionId;
use tether_runtime::server::Queued;
use tether_runtime::store::StoreError;

use super::{refusal_text, Refused};
use crate::config::Limits;
use crate::protocol::{Error, Event, Request};

fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{}\n{body}", tether_cluster::COMMON_LUA, include_str!("lua/common.lua")))
}

struct Scripts {
    opened: Script,
    join: Script,
    leave: Script,
    say: Script,
    members: Script,
    presence: Script,
    ended: Script,
    rtt: Script,
    publish: Script,
    list: Script,
    sweep: Script,
}

/// What a room script did.
pub(crate) enum Done {
    /// Committed: the messages it stored, each with its fate.
    Sent(Vec<(SessionId, Queued, Bytes)>),
    /// The client message was committed before: nothing done again.
    Before,
    /// Refused (nothing changed): the error to answer with.
    Refused(Refused),
}

pub(crate) struct RedisRooms {
    store: Arc<RedisStore>,
    scripts: Scripts,
    limits: Limits,
    /// `say` token buckets of the sessions held here (a session moving to
    /// another node starts with a full bucket there).
    says: Mutex<HashMap<SessionId, (f64, Instant)>>,
    /// The RTT last written per session, to write only real changes.
    rtts: Mutex<HashMap<SessionId, f64>>,
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}

fn garbage(v: &redis::Value) -> StoreError {
    StoreError::Unavailable(format!("Redis answered a room script with something unexpected: {v:?}"))
}

impl RedisRooms {
    pub(crate) fn new(store: Arc<RedisStore>, limits: Limits) -> Self {
        let scripts = Scripts {
            opened: script(include_str!("lua/opened.lua")),
            join: script(include_str!("lua/join.lua")),
            leave: script(include_str!("lua/leave.lua")),
            say: script(include_str!("lua/say.lua")),
            members: script(include_str!("lua/members.lua")),
            presence: script(include_str!("lua/presence.lua")),
            ended: script(include_str!("lua/ended.lua")),
            rtt: script(include_str!("lua/rtt.lua")),
            publish: script(include_str!("lua/publish.lua")),
            list: script(include_str!("lua/list.lua")),
            sweep: script(include_str!("lua/sweep.lua")),
        };
        RedisRooms { store, scripts, limits, says: Mutex::default(), rtts: Mutex::default() }
    }

    fn prefix(&self) -> &str {
        &self.store.options().prefix
    }

    /// This node's id in the cluster.
    pub(crate) fn node(&self) -> &str {
        &self.store.options().node
    }

    fn replay(&self) -> (usize, usize) {
        let r = &self.store.options().replay;
        (r.max_messages, r.max_bytes)
    }

    /// Parses `{status, {payloads}, {to, fate, index, ...}}`.
    fn done(&self, v: &redis::Value, op: &str, room: &str) -> Result<Done, StoreError> {
        let redis::Value::Array(parts) = v else { return Err(garbage(v)) };
        let status = match parts.first() {
            Some(redis::Value::Int(i)) => *i,
            _ => return Err(garbage(v)),
        };
        match status {
            -2 => return Err(StoreError::Gone(SessionId::from_bytes([0; 16]))),
            -1 => return Err(StoreError::Fenced(SessionId::from_bytes([0; 16]))),
            0 => return Ok(Done::Before),
            2 => {
                let code = match parts.get(1) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => return Err(garbage(v)),
                };
                return Ok(Done::Refused(refusal_text(op, room, &code, &self.limits)));
            }
            _ => {}
        }
        let (Some(redis::Value::Array(payloads)), Some(redis::Value::Array(sent))) = (parts.get(1), parts.get(2))
        else {
            return Err(garbage(v));
        };
        let payloads: Vec<Bytes> = payloads
            .iter()
            .map(|p| match p {
                redis::Value::BulkString(b) => Ok(Bytes::copy_from_slice(b)),
                _ => Err(garbage(v)),
            })
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(sent.len() / 3);
        for t in sent.chunks(3) {
            let [to, fate, index] = t else { return Err(garbage(v)) };
            let to = match to {
                redis::Value::BulkString(b) => parse_id(b).ok_or_else(|| garbage(v))?,
                _ => return Err(garbage(v)),
            };
            let i = match index {
                redis::Value::Int(i) => usize::try_from(*i - 1).map_err(|_| garbage(v))?,
                _ => return Err(garbage(v)),
            };
            let payload = payloads.get(i).cloned().ok_or_else(|| garbage(v))?;
            out.push((to, self.store.fate(fate, payload.len()), payload));
        }
        Ok(Done::Sent(out))
    }

    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> Result<redis::Value, StoreError> {
        let mut con = self.store.connection();
        inv.invoke_async(&mut con).await.map_err(err)
    }

    /// A new session: its member entry.
    pub(crate) async fn opened(&self, id: SessionId, user: &str, name: Option<&str>) -> Result<(), StoreError> {
        let mut inv = self.scripts.opened.prepare_invoke();
        inv.arg(self.prefix()).arg(id.to_string()).arg(user).arg(name.unwrap_or(user));
        self.run(&inv).await.map(|_| ())
    }

    /// A room request from a session, committed with its client message
    /// `seq` under `fence`. Validation that needs no room state happens
    /// here (the same checks, in the same order, as the in-memory engine).
    pub(crate) async fn request(
        &self,
        id: SessionId,
        fence: u64,
        seq: u64,
        req: Request,
        now: Option<Instant>,
    ) -> Result<Done, StoreError> {
        let op = req.op();
        let (maxm, maxb) = self.replay();
        let room = match &req {
            Request::Join { room, .. }
            | Request::Leave { room }
            | Request::Say { room, .. }
            | Request::Members { room } => room.clone(),
            Request::Rpc { .. } => return Ok(Done::Refused(super::no_rpc_hook())),
        };
        let (script, extra): (&Script, Vec<String>) = match req {
            Request::Join { room, name } => {
                if let Err(r) = super::check_join(&room, name.as_deref()) {
                    return Ok(Done::Refused(r));
                }
                let l = &self.limits;
                let extra = vec![
                    room,
                    name.unwrap_or_default(),
                    l.max_rooms_per_session.to_string(),
                    l.max_room_members.to_string(),
                    l.max_members_listed.to_string(),
                    l.presence_max_members.to_string(),
                ];
                (&self.scripts.join, extra)
            }
            Request::Leave { room } => (&self.scripts.leave, vec![room, self.limits.presence_max_members.to_string()]),
            Request::Members { room } => {
                (&self.scripts.members, vec![room, self.limits.max_members_listed.to_string()])
            }
            Request::Say { room, body } => {
                if now.is_some_and(|now| !self.may_say(id, now)) {
                    return Ok(Done::Refused(super::rate_limited(&room, &self.limits)));
                }
                return self.say(id, fence, seq, room, body).await;
            }
            Request::Rpc { .. } => return Ok(Done::Refused(super::no_rpc_hook())),
        };
        let mut inv = script.prepare_invoke();
        inv.arg(self.prefix()).arg(id.to_string()).arg(self.node()).arg(fence).arg(seq).arg(maxm).arg(maxb);
        for a in extra {
            inv.arg(a);
        }
        let v = self.run(&inv).await?;
        self.done(&v, op, &room)
    }

    async fn say(&self, id: SessionId, fence: u64, seq: u64, room: String, body: Value) -> Result<Done, StoreError> {
        let (maxm, maxb) = self.replay();
        // The script builds the message event around the body, with the
        // sayer's member entry as Redis has it.
        let body = serde_json::to_string(&body).unwrap_or_else(|_| "null".into());
        let mut inv = self.scripts.say.prepare_invoke();
        inv.arg(self.prefix()).arg(id.to_string()).arg(self.node()).arg(fence).arg(seq).arg(maxm).arg(maxb);
        inv.arg(&room).arg(body);
        let v = self.run(&inv).await?;
        self.done(&v, "say", &room)
    }

    /// The checks of a `say` before its hook: membership (read from
    /// Redis), then the rate (a token is taken: [`RedisRooms::request`] is
    /// then given no `now`).
    pub(crate) async fn check_say(
        &self,
        id: SessionId,
        room: &str,
        now: Instant,
    ) -> Result<Result<(), Refused>, StoreError> {
        let key = format!("{}:r:{room}", self.prefix());
        let mut con = self.store.connection();
        let score: Option<f64> =
            redis::cmd("ZSCORE").arg(key).arg(id.to_string()).query_async(&mut con).await.map_err(err)?;
        if score.is_none() {
            return Ok(Err(refusal_text("say", room, "not_member", &self.limits)));
        }
        if !self.may_say(id, now) {
            return Ok(Err(super::rate_limited(room, &self.limits)));
        }
        Ok(Ok(()))
    }

    /// Gives back the say token [`RedisRooms::check_say`] took.
    pub(crate) fn refund_say(&self, id: SessionId) {
        let burst = self.limits.say_burst;
        if let Some((tokens, _)) = self.says.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&id) {
            *tokens = (*tokens + 1.0).min(burst);
        }
    }

    fn may_say(&self, id: SessionId, now: Instant) -> bool {
        let (rate, burst) = (self.limits.say_rate, self.limits.say_burst);
        let mut says = self.says.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = says.entry(id).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The session's link state changed (`reconnecting` skips the member
    /// itself, `active` does not), if this node still holds it (`fence`),
    /// or (None) if it is an orphan of a dead node.
    pub(crate) async fn presence(&self, id: SessionId, fence: Option<u64>, state: &str) -> Result<Done, StoreError> {
        let (maxm, maxb) = self.replay();
        let skip_self = if state == "reconnecting" { "1" } else { "0" };
        let fence = fence.map(|f| f.to_string()).unwrap_or_default();
        let mut inv = self.scripts.presence.prepare_invoke();
        inv.arg(self.prefix()).arg(id.to_string()).arg(self.node()).arg(fence).arg(maxm).arg(maxb);
        inv.arg(state).arg(skip_self).arg(self.limits.presence_max_members);
        let v = self.run(&inv).await?;
        self.done(&v, "", "")
    }

    /// The session ended: `expired` or `left`; its rooms hear it once.
    pub(crate) async fn ended(&self, id: SessionId, expired: bool) -> Result<Done, StoreError> {
        self.says.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.rtts.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let (maxm, maxb) = self.replay();
        let mut inv = self.scripts.ended.prepare_invoke();
        inv.arg(self.prefix()).arg(id.to_string()).arg(self.node()).arg(maxm).arg(maxb);
        inv.arg(if expired { "expired" } else { "left" }).arg(self.limits.presence_max_members);
        let v = self.run(&inv).await?;
        self.done(&v, "", "")
    }

    /// Expires, once, room members whose session is gone from the store
    /// (it ended while every node that would have told its rooms was down):
    /// how many, and what it stored.
    pub(crate) async fn sweep(&self) -> Result<(usize, Done), StoreError> {
        let (maxm, maxb) = self.replay();
        let mut inv = self.scripts.sweep.prepare_invoke();
        inv.arg(self.prefix()).arg(self.node()).arg(maxm).arg(maxb).arg(self.limits.presence_max_members);
        let v = self.run(&inv).await?;
        let n = match &v {
            redis::Value::Array(parts) => match parts.get(3) {
                Some(redis::Value::Int(n)) => usize::try_from(*n).unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        };
        Ok((n, self.done(&v, "", "")?))
    }

    /// This node no longer holds the session: forget its local state.
    pub(crate) fn forget(&self, id: SessionId) {
        self.says.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.rtts.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// The client reported its RTT: written when it changed by a fifth.
    pub(crate) async fn rtt(&self, id: SessionId, ms: f64) -> Result<(), StoreError> {
        let ms = (ms * 10.0).round() / 10.0;
        {
            let mut rtts = self.rtts.lock().unwrap_or_else(|p| p.into_inner());
            let last = rtts.entry(id).or_insert(f64::NAN);
            if (ms - *last).abs() <= *last * 0.2 {
                return Ok(());
            }
            *last = ms;
        }
        let mut inv = self.scripts.rtt.prepare_invoke();
        inv.arg(self.prefix()).arg(id.to_string()).arg(ms);
        self.run(&inv).await.map(|_| ())
    }

    /// An operator's publish to a room (None: no such room).
    pub(crate) async fn publish(&self, room: &str, payload: Bytes) -> Result<Option<Done>, StoreError> {
        let (maxm, maxb) = self.replay();
        let mut inv = self.scripts.publish.prepare_invoke();
        inv.arg(self.prefix()).arg(self.node()).arg(maxm).arg(maxb).arg(room).arg(payload.as_ref());
        let v = self.run(&inv).await?;
        match self.done(&v, "", room) {
            Err(StoreError::Gone(_)) => Ok(None),
            r => r.map(Some),
        }
    }

    /// Every room with its member count, cluster-wide.
    /// The rooms each of these sessions is in (membership lives here, not
    /// in the node's participant table), in one round trip.
    pub(crate) async fn rooms_of(&self, ids: &[SessionId]) -> Result<Vec<Vec<String>>, StoreError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SMEMBERS").arg(format!("{}:s:{id}:r", self.prefix()));
        }
        let mut con = self.store.connection();
        let mut rooms: Vec<Vec<String>> = pipe.query_async(&mut con).await.map_err(err)?;
        for r in &mut rooms {
            r.sort();
        }
        Ok(rooms)
    }

    pub(crate) async fn list(&self) -> Result<Vec<(String, usize)>, StoreError> {
        let mut inv = self.scripts.list.prepare_invoke();
        inv.arg(self.prefix());
        let v = self.run(&inv).await?;
        let redis::Value::Array(items) = &v else { return Err(garbage(&v)) };
        let mut out = Vec::new();
        for pair in items.chunks(2) {
            if let [redis::Value::BulkString(room), redis::Value::Int(n)] = pair {
                out.push((String::from_utf8_lossy(room).into_owned(), usize::try_from(*n).unwrap_or(0)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A room's members, cluster-wide (None: no such room).
    pub(crate) async fn members(&self, room: &str) -> Result<Option<Vec<crate::protocol::Member>>, StoreError> {
        let mut inv = self.scripts.list.prepare_invoke();
        inv.arg(self.prefix()).arg(room);
        let v = self.run(&inv).await?;
        match &v {
            redis::Value::Int(-2) => Ok(None),
            redis::Value::Array(items) => Ok(Some(
                items
                    .iter()
                    .filter_map(|m| match m {
                        redis::Value::BulkString(b) => serde_json::from_slice(b).ok(),
                        _ => None,
                    })
                    .collect(),
            )),
            _ => Err(garbage(&v)),
        }
    }
}

fn parse_id(hex_id: &[u8]) -> Option<SessionId> {
    let mut b = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut b).ok()?;
    Some(SessionId::from_bytes(b))
}

/// The error event for a refused request.
pub(crate) fn error_event(op: &str, (code, message): Refused) -> Bytes {
    Event::Error(Error { op: op.to_owned(), code, message }).to_bytes()
}
