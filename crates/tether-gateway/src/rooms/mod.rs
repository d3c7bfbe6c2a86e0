//! Rooms and presence, as plain state: every input (a session opened, a
//! request, a detach, a resume, an end) returns the messages to send. The
//! gateway's event loop feeds it and sends; the admin API reads it.
//! Membership belongs to the session, so it survives every resume. The
//! messages are the typed room protocol ([`crate::protocol`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tether_proto::SessionId;

pub(crate) mod redis;

use crate::auth::Principal;
use crate::config::Limits;
use crate::protocol::{Error, ErrorCode, Event, Member, Request, State};

/// One session as the room protocol knows it. Kept compact (a gateway
/// holds one per session): an anonymous user's id and a name equal to the
/// user id are not stored, and room names are shared with the room map.
#[derive(Debug, Clone)]
pub(crate) struct Participant {
    /// The user id; None for an anonymous session (shown as `anon-` and the
    /// first 8 hex digits of its id).
    user: Option<Box<str>>,
    /// The display name, when it is not the user id.
    name: Option<Box<str>>,
    pub(crate) state: State,
    /// The last RTT its client reported, in tenths of a millisecond
    /// (`NO_RTT` before the first).
    rtt_tenths: u32,
    /// The rooms it is in, sorted; each name shared with [`Rooms`]'s map.
    rooms: Box<[Arc<str>]>,
    /// Token bucket for `say`: tokens left, and when it was last filled (in
    /// milliseconds since [`Rooms`] began, 0 before the first say).
    says: (f32, u64),
    /// Rooms it may join and say in, when not every room.
    pub(crate) perms: Option<Arc<Principal>>,
}

/// A session as it opens: its user id, the display name it starts with,
/// and its permissions (from its token or the `connect` hook).
#[derive(Debug, Clone, Default)]
pub(crate) struct Who {
    pub(crate) user: String,
    pub(crate) name: Option<String>,
    pub(crate) perms: Option<Arc<Principal>>,
}

/// Messages to send: (to, payload).
pub(crate) type Out = Vec<(SessionId, Bytes)>;

/// What a request produced: the messages to send, and for a `say`, the
/// room it fanned out to (every message in `out` is then that one `message`
/// event): a member who cannot take it is reported to the sayer
/// ([`Rooms::too_large_for_members`]).
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub(crate) out: Out,
    pub(crate) said: Option<String>,
}

const MAX_NAME: usize = 64;
const NO_RTT: u32 = u32::MAX;

impl Participant {
    /// Its user id, as events show it (`session` is its id).
    pub(crate) fn user(&self, session: SessionId) -> String {
        self.user.as_deref().map_or_else(|| crate::auth::anonymous_user(&session.to_string()), str::to_owned)
    }

    /// The last RTT its client reported, in milliseconds.
    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        (self.rtt_tenths != NO_RTT).then(|| f64::from(self.rtt_tenths) / 10.0)
    }

    /// The rooms it is in, in order.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(|r| &**r)
    }

    fn is_in(&self, room: &str) -> bool {
        self.rooms.binary_search_by(|r| (**r).cmp(room)).is_ok()
    }
}

pub(crate) struct Rooms {
    limits: Limits,
    members: HashMap<SessionId, Participant>,
    rooms: BTreeMap<Arc<str>, BTreeSet<SessionId>>,
    /// When this began: say times are kept as milliseconds since.
    epoch: Instant,
}

impl Rooms {
    pub(crate) fn new(limits: Limits) -> Self {
        Rooms { limits, members: HashMap::new(), rooms: BTreeMap::new(), epoch: Instant::now() }
    }

    pub(crate) fn participant(&self, s: SessionId) -> Option<&Participant> {
        self.members.get(&s)
    }

    /// Every room with its member count.
    pub(crate) fn list(&self) -> Vec<(String, usize)> {
        self.rooms.iter().map(|(r, m)| (r.to_string(), m.len())).collect()
    }

    /// How many rooms there are, and their members summed over them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.rooms.len(), self.rooms.values().map(BTreeSet::len).sum())
    }

    /// A room's members, None if the room does not exist.
    pub(crate) fn room_members(&self, room: &str) -> Option<Vec<Member>> {
        let ids = self.rooms.get(room)?;
        Some(ids.iter().filter_map(|id| self.member(*id)).collect())
    }

    /// The member list sent to clients: `you` first, then up to the limit
    /// (a list of every member of a huge room would outgrow a frame).
    fn listed(&self, room: &str, you: SessionId) -> (Vec<Member>, usize) {
        let Some(ids) = self.rooms.get(room) else { return (Vec::new(), 0) };
        let count = ids.len();
        let ids = std::iter::once(you).chain(ids.iter().copied().filter(|i| *i != you));
        (ids.take(self.limits.max_members_listed).filter_map(|id| self.member(id)).collect(), count)
    }

    /// A session as events show it.
    pub(crate) fn member(&self, id: SessionId) -> Option<Member> {
        let m = self.members.get(&id)?;
        let user = m.user(id);
        Some(Member {
            session: id.to_string(),
            name: m.name.as_deref().map_or_else(|| user.clone(), str::to_owned),
            user,
            state: m.state,
            rtt_ms: m.rtt_ms(),
        })
    }

    /// A session opened; `user` is its authenticated id.
    #[cfg(test)]
    pub(crate) fn opened(&mut self, id: SessionId, user: String) {
        self.opened_as(id, Who { user, ..Who::default() });
    }

    /// A session opened, as `who`.
    pub(crate) fn opened_as(&mut self, id: SessionId, who: Who) {
        let name = who.name.filter(|n| *n != who.user).map(String::into_boxed_str);
        let anonymous = who.user == crate::auth::anonymous_user(&id.to_string());
        let user = (!anonymous).then(|| who.user.into_boxed_str());
        let says = (self.limits.say_burst as f32, 0);
        let (state, rooms, perms) = (State::Active, Box::default(), who.perms);
        self.members.insert(id, Participant { user, name, state, rtt_tenths: NO_RTT, rooms, says, perms });
    }

    /// A session resumed here that this node has not seen open (opened on
    /// another node, or before a restart): known from now on.
    pub(crate) fn adopt(&mut self, id: SessionId, who: Who) {
        if !self.members.contains_key(&id) {
            self.opened_as(id, who);
        }
    }

    /// Whether the session may do this request (its rooms permissions):
    /// the refusal to answer with if not.
    pub(crate) fn permitted(&self, id: SessionId, req: &Request) -> Refusal {
        let Some(p) = self.members.get(&id).and_then(|m| m.perms.as_ref()) else { return Ok(()) };
        match req {
            Request::Join { room, .. } if !p.may_join(room) => Err(forbidden(room, "you may not join this room")),
            Request::Say { room, .. } if !p.may_say(room) => {
                Err(forbidden(room, "you may not say anything in this room"))
            }
            _ => Ok(()),
        }
    }

    /// The checks of a `say` before its hook: membership, then the rate
    /// (a token is taken: [`Rooms::apply`] is then told `rate_checked`).
    pub(crate) fn check_say(&mut self, id: SessionId, room: &str, now: Instant) -> Refusal {
        if !self.rooms.get(room).is_some_and(|r| r.contains(&id)) {
            return Err(refusal_text("say", room, "not_member", &self.limits));
        }
        if !self.may_say(id, now) {
            return Err(rate_limited(room, &self.limits));
        }
        Ok(())
    }

    /// The member's client reported its RTT (on a PING).
    pub(crate) fn rtt(&mut self, id: SessionId, ms: f64) {
        if let Some(m) = self.members.get_mut(&id) {
            // Within u32 tenths: rtt_of admits under 600 000 ms.
            m.rtt_tenths = (ms * 10.0).round().clamp(0.0, f64::from(NO_RTT - 1)) as u32;
        }
    }

    /// Who hears a presence change in `room`: every member, unless the room
    /// is larger than `presence_max_members` (announcing every join to every
    /// member costs N²/2 messages as a room fills; large rooms stay quiet
    /// and members ask with `members`).
    fn presence_audience(&self, room: &str) -> impl Iterator<Item = &SessionId> {
        self.rooms.get(room).filter(|r| r.len() <= self.limits.presence_max_members).into_iter().flatten()
    }

    /// Tells every room the member is in that its state changed (`skip_self`
    /// when the member cannot hear it now).
    fn announce(&self, id: SessionId, skip_self: bool, out: &mut Out) {
        let (Some(m), Some(member)) = (self.members.get(&id), self.member(id)) else { return };
        for room in &m.rooms {
            let payload = Event::Presence { room: room.to_string(), member: member.clone() }.to_bytes();
            for to in self.presence_audience(room) {
                if !(skip_self && *to == id) {
                    out.push((*to, payload.clone()));
                }
            }
        }
    }

    fn set_state(&mut self, id: SessionId, state: State) -> bool {
        match self.members.get_mut(&id) {
            Some(m) if m.state != state => {
                m.state = state;
                true
            }
            _ => false,
        }
    }

    /// The session lost its transport and waits for a resume.
    pub(crate) fn detached(&mut self, id: SessionId) -> Out {
        let mut out = Vec::new();
        if self.set_state(id, State::Reconnecting) {
            self.announce(id, true, &mut out);
        }
        out
    }

    /// The session continues on a new transport.
    pub(crate) fn resumed(&mut self, id: SessionId) -> Out {
        let mut out = Vec::new();
        if self.set_state(id, State::Active) {
            self.announce(id, false, &mut out);
        }
        out
    }

    /// The session is carried on by another node: forget it here, without
    /// a word to its rooms (it has not left them).
    pub(crate) fn forget(&mut self, id: SessionId) {
        if let Some(m) = self.members.remove(&id) {
            for room in &m.rooms {
                self.remove_from(room, id);
            }
        }
    }

    /// The session ended: `expired` when its grace ran out, else it left
    /// (closed, kicked). It is removed from every room.
    pub(crate) fn ended(&mut self, id: SessionId, expired: bool) -> Out {
        let mut out = Vec::new();
        self.set_state(id, if expired { State::Expired } else { State::Left });
        self.announce(id, true, &mut out);
        if let Some(m) = self.members.remove(&id) {
            for room in &m.rooms {
                self.remove_from(room, id);
            }
        }
        out
    }

    fn remove_from(&mut self, room: &str, id: SessionId) {
        if let Some(set) = self.rooms.get_mut(room) {
            set.remove(&id);
            if set.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Takes one `say` token; false when the session says too much.
    fn may_say(&mut self, id: SessionId, now: Instant) -> bool {
        let (rate, burst) = (self.limits.say_rate, self.limits.say_burst);
        // Milliseconds since the epoch, from 1 (0: never said).
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        let Some(m) = self.members.get_mut(&id) else { return false };
        let (tokens, last) = &mut m.says;
        if *last != 0 {
            let secs = now_ms.saturating_sub(*last) as f64 / 1000.0;
            *tokens = (f64::from(*tokens) + secs * rate).min(burst) as f32;
        }
        *last = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back the say token [`Rooms::check_say`] took, for a say that
    /// was not said after all (its hook refused it, or did not answer).
    pub(crate) fn refund_say(&mut self, id: SessionId) {
        let burst = self.limits.say_burst;
        if let Some(m) = self.members.get_mut(&id) {
            m.says.0 = (m.says.0 + 1.0).min(burst as f32);
        }
    }

    /// A message from a session: one room-protocol request.
    #[cfg(test)]
    pub(crate) fn request(&mut self, id: SessionId, payload: &[u8], now: Instant) -> Reply {
        if !self.members.contains_key(&id) {
            return Reply::default();
        }
        match parse(payload, self.limits.max_say_bytes) {
            Ok(req) => self.apply(id, req, now, false),
            Err(error) => Reply { out: vec![(id, error)], said: None },
        }
    }

    /// A session's request, read and checked; `rate_checked` when
    /// [`Rooms::check_say`] took its say token already.
    pub(crate) fn apply(&mut self, id: SessionId, req: Request, now: Instant, rate_checked: bool) -> Reply {
        let mut out = Vec::new();
        if !self.members.contains_key(&id) {
            return Reply::default();
        }
        let op = req.op();
        let mut said = None;
        let refused = match req {
            Request::Join { room, name } => self.join(id, room, name, &mut out),
            Request::Leave { room } => self.leave(id, room, &mut out),
            Request::Say { room, body } => {
                let r = self.say(id, room.clone(), body, (!rate_checked).then_some(now), &mut out);
                if r.is_ok() {
                    said = Some(room);
                }
                r
            }
            Request::Rpc { .. } => Ok(()), // answered by the backend (hooks)
            Request::Members { room } => {
                if self.rooms.get(room.as_str()).is_some_and(|r| r.contains(&id)) {
                    let (members, count) = self.listed(&room, id);
                    out.push((id, Event::Members { room, members, count }.to_bytes()));
                    Ok(())
                } else {
                    Err(refusal_text("members", &room, "not_member", &self.limits))
                }
            }
        };
        if let Err((code, message)) = refused {
            out.push((id, Event::Error(Error { op: op.to_owned(), code, message }).to_bytes()));
        }
        Reply { out, said }
    }

    /// The answer to a `say` that `undelivered` members could not take: its
    /// `message` event is `size` bytes, and the smallest of their frame
    /// limits holds `limit`.
    pub(crate) fn too_large_for_members(room: String, undelivered: usize, size: usize, limit: usize) -> Bytes {
        let message = format!(
            "your message was not delivered to {undelivered} member(s) of room {room:?}: delivered, it is {size} \
             bytes (your body plus the room and your member entry), and their frame limit holds at most {limit}; \
             everyone else got it. Send smaller bodies (split large ones) to reach every member"
        );
        let code = ErrorCode::TooLargeForMembers { room, undelivered, size, limit };
        Event::Error(Error { op: "say".into(), code, message }).to_bytes()
    }

    fn join(&mut self, id: SessionId, room: String, name: Option<String>, out: &mut Out) -> Refusal {
        check_join(&room, name.as_deref())?;
        let already = self.members.get(&id).is_some_and(|m| m.is_in(&room));
        if !already {
            if self.members.get(&id).is_some_and(|m| m.rooms.len() >= self.limits.max_rooms_per_session) {
                return Err(refusal_text("join", &room, "too_many_rooms", &self.limits));
            }
            if self.rooms.get(room.as_str()).is_some_and(|r| r.len() >= self.limits.max_room_members) {
                return Err(refusal_text("join", &room, "room_full", &self.limits));
            }
        }
        // One allocation of the room's name, shared by the map and members.
        let key = match self.rooms.get_key_value(room.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room.as_str()),
        };
        if let Some(m) = self.members.get_mut(&id) {
            if let Some(n) = name.filter(|n| !n.is_empty()) {
                m.name = (m.user.as_deref() != Some(n.as_str())).then(|| n.into_boxed_str());
            }
            if let Err(i) = m.rooms.binary_search_by(|r| (**r).cmp(&room)) {
                let mut rooms = std::mem::take(&mut m.rooms).into_vec();
                rooms.insert(i, key.clone());
                m.rooms = rooms.into_boxed_slice();
            }
        }
        self.rooms.entry(key).or_default().insert(id);
        let (members, count) = self.listed(&room, id);
        let Some(you) = self.member(id) else { return Ok(()) };
        let presence = Event::Presence { room: room.clone(), member: you.clone() }.to_bytes();
        out.push((id, Event::Joined { room: room.clone(), you, members, count }.to_bytes()));
        for to in self.presence_audience(&room) {
            out.push((*to, presence.clone()));
        }
        Ok(())
    }

    fn leave(&mut self, id: SessionId, room: String, out: &mut Out) -> Refusal {
        let was = self.members.get_mut(&id).is_some_and(|m| match m.rooms.binary_search_by(|r| (**r).cmp(&room)) {
            Ok(i) => {
                let mut rooms = std::mem::take(&mut m.rooms).into_vec();
                rooms.remove(i);
                m.rooms = rooms.into_boxed_slice();
                true
            }
            Err(_) => false,
        });
        if !was {
            return Err(refusal_text("leave", &room, "not_member", &self.limits));
        }
        self.remove_from(&room, id);
        out.push((id, Event::Left { room: room.clone() }.to_bytes()));
        if let Some(mut member) = self.member(id) {
            member.state = State::Left;
            let payload = Event::Presence { room: room.clone(), member }.to_bytes();
            for to in self.presence_audience(&room) {
                out.push((*to, payload.clone()));
            }
        }
        Ok(())
    }

    /// A say; `now` to take a say token (None: taken before).
    fn say(&mut self, id: SessionId, room: String, body: Value, now: Option<Instant>, out: &mut Out) -> Refusal {
        if !self.rooms.get(room.as_str()).is_some_and(|r| r.contains(&id)) {
            return Err(refusal_text("say", &room, "not_member", &self.limits));
        }
        if now.is_some_and(|now| !self.may_say(id, now)) {
            return Err(rate_limited(&room, &self.limits));
        }
        let (Some(ids), Some(from)) = (self.rooms.get(room.as_str()), self.member(id)) else { return Ok(()) };
        let payload = Event::Message { room, from, body }.to_bytes();
        out.extend(ids.iter().map(|to| (*to, payload.clone())));
        Ok(())
    }

    /// An operator's publish to a room: (recipients' messages), None if no such room.
    pub(crate) fn publish_room(&self, room: &str, body: &Value) -> Option<Out> {
        let ids = self.rooms.get(room)?;
        let payload = Event::Publish { room: Some(room.to_owned()), body: body.clone() }.to_bytes();
        Some(ids.iter().map(|to| (*to, payload.clone())).collect())
    }

    /// An operator's publish to one session.
    pub(crate) fn publish_session(body: &Value) -> Bytes {
        Event::Publish { room: None, body: body.clone() }.to_bytes()
    }
}

/// A refused request: the error's code and message.
pub(crate) type Refused = (ErrorCode, String);
type Refusal = Result<(), Refused>;

/// The refusal of a say beyond `limits.say_rate`.
pub(crate) fn rate_limited(room: &str, limits: &Limits) -> Refused {
    let message = format!("too many messages: at most {} per second; slow down", limits.say_rate);
    (ErrorCode::RateLimited { room: room.to_owned() }, message)
}

/// A request the session's permissions (or the backend) do not allow.
pub(crate) fn forbidden(room: &str, why: &str) -> Refused {
    (ErrorCode::Forbidden { room: room.to_owned() }, why.to_owned())
}

/// An rpc handed to a room engine (rpcs go to the backend, never here).
pub(crate) fn no_rpc_hook() -> Refused {
    (ErrorCode::BadRequest, "rpc is answered by the application's backend (the rpc hook), not by rooms".into())
}

/// A client message as a room request, or the error event answering it
/// (too large, not JSON, not a request).
pub(crate) fn parse(payload: &[u8], limit: usize) -> Result<Request, Bytes> {
    let error = |op: &str, code: ErrorCode, message: String| {
        Event::Error(Error { op: op.to_owned(), code, message }).to_bytes()
    };
    if payload.len() > limit {
        let message = format!("request of {} bytes; the gateway takes at most {limit}", payload.len());
        return Err(error("", ErrorCode::RequestTooLarge { size: payload.len(), limit }, message));
    }
    serde_json::from_slice(payload).map_err(|e| {
        let message =
            format!("not a room request ({e}); send JSON with op join, leave, say, members or rpc (docs/GATEWAY.md)");
        // The op it names, when it is JSON naming a known op (its fields
        // were wrong); "" when it cannot be read as one.
        let op = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("op")?.as_str().map(str::to_owned))
            .filter(|op| Request::OPS.contains(&op.as_str()))
            .unwrap_or_default();
        error(&op, ErrorCode::BadRequest, message)
    })
}

/// The checks of a join that need no room state.
pub(crate) fn check_join(room: &str, name: Option<&str>) -> Refusal {
    if room.is_empty() || room.len() > 64 {
        return Err((ErrorCode::BadRoom, "room names are 1 to 64 bytes".into()));
    }
    if name.is_some_and(|n| n.len() > MAX_NAME) {
        return Err((ErrorCode::BadName, "names are at most 64 bytes".into()));
    }
    Ok(())
}

/// A refusal that needs room state, by its short code (both engines use
/// these: the Redis engine's scripts answer with the code).
pub(crate) fn refusal_text(op: &str, room: &str, code: &str, _limits: &Limits) -> Refused {
    let room = room.to_owned();
    match (op, code) {
        (_, "too_many_rooms") => {
            (ErrorCode::TooManyRooms { room }, "this session is in as many rooms as allowed; leave one first".into())
        }
        (_, "room_full") => (ErrorCode::RoomFull { room }, "the room is full; try again later".into()),
        ("leave", _) => (ErrorCode::NotMember { room }, "you are not in this room".into()),
        ("say", _) => (ErrorCode::NotMember { room }, "join the room before saying something in it".into()),
        _ => (ErrorCode::NotMember { room }, "join the room to see its members".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn id(n: u8) -> SessionId {
        SessionId::from_bytes([n; 16])
    }

    fn limits() -> Limits {
        Limits {
            max_rooms_per_session: 2,
            max_room_members: 3,
            max_say_bytes: 1024,
            say_rate: 10.0,
            say_burst: 20.0,
            max_members_listed: 2,
            presence_max_members: 2,
            ..Limits::default()
        }
    }

    fn rooms() -> Rooms {
        Rooms::new(limits())
    }

    fn parse(out: &Out) -> Vec<(u8, Value)> {
        out.iter().map(|(to, b)| (to.as_bytes()[0], serde_json::from_slice(b).unwrap())).collect()
    }

    fn req(r: &mut Rooms, who: u8, v: Value) -> Vec<(u8, Value)> {
        parse(&r.request(id(who), v.to_string().as_bytes(), Instant::now()).out)
    }

    #[test]
    fn join_say_and_presence_through_a_blip_and_an_expiry() {
        let mut r = rooms();
        r.opened(id(1), "alice".into());
        r.opened(id(2), "bob".into());
        let out = req(&mut r, 1, json!({"op": "join", "room": "call", "name": "Alice"}));
        assert_eq!(out[0].1["ev"], "joined");
        assert_eq!(out[0].1["you"]["name"], "Alice");
        let out = req(&mut r, 2, json!({"op": "join", "room": "call"}));
        assert_eq!(out[0].1["members"].as_array().unwrap().len(), 2);
        // Both members hear of bob joining.
        let told: Vec<u8> = out.iter().filter(|(_, v)| v["ev"] == "presence").map(|(to, _)| *to).collect();
        assert_eq!(told, vec![1, 2]);

        // Bob's network blips: alice sees reconnecting, then active, and he
        // is still a member throughout (no leave, no rejoin).
        let out = parse(&r.detached(id(2)));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1["member"]["state"].as_str()), (1, Some("reconnecting")));
        assert_eq!(r.room_members("call").unwrap().len(), 2);
        let out = req(&mut r, 1, json!({"op": "say", "room": "call", "body": {"text": "hi"}}));
        assert_eq!(out.len(), 2, "a reconnecting member still gets room messages (buffered for the resume)");
        let out = parse(&r.resumed(id(2)));
        assert!(out.iter().all(|(_, v)| v["member"]["state"] == "active"));
        assert_eq!(out.len(), 2);

        // Bob expires: alice is told and he is gone.
        r.detached(id(2));
        let out = parse(&r.ended(id(2), true));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1["member"]["state"], "expired");
        assert_eq!(r.room_members("call").unwrap().len(), 1);
        assert!(r.member(id(2)).is_none());
        // The last member leaving removes the room.
        let out = req(&mut r, 1, json!({"op": "leave", "room": "call"}));
        assert_eq!(out[0].1["ev"], "left");
        assert!(r.room_members("call").is_none());
    }

    #[test]
    fn bad_requests_get_errors_saying_what_to_do() {
        let mut r = rooms();
        r.opened(id(1), "alice".into());
        // "code: message", and the room when the error names one.
        let e = |out: Vec<(u8, Value)>| {
            let v = &out[0].1;
            assert_eq!(v["ev"], "error");
            let room = v.get("room").map(|r| format!(" [{}]", r.as_str().unwrap())).unwrap_or_default();
            format!("{}{room}: {}", v["code"].as_str().unwrap(), v["message"].as_str().unwrap())
        };
        let m = e(parse(&r.request(id(1), b"hello", Instant::now()).out));
        assert!(m.starts_with("bad_request: not a room request"), "{m}");
        let big = json!({"op": "say", "room": "a", "body": "x".repeat(2000)}).to_string();
        let out = parse(&r.request(id(1), big.as_bytes(), Instant::now()).out);
        assert_eq!((out[0].1["size"].as_u64(), out[0].1["limit"].as_u64()), (Some(big.len() as u64), Some(1024)));
        assert!(e(out).starts_with("request_too_large: ") && big.len() > 1024);
        let m = e(req(&mut r, 1, json!({"op": "members", "room": "a"})));
        assert!(m.starts_with("not_member [a]: join the room"), "{m}");
        assert!(e(req(&mut r, 1, json!({"op": "dance"}))).starts_with("bad_request: not a room request"));
        // error.op: "" for what is not JSON or names no known op; the op
        // itself when a known op has wrong fields.
        let op = |out: Vec<(u8, Value)>| out[0].1["op"].as_str().unwrap().to_owned();
        assert_eq!(op(parse(&r.request(id(1), b"hello", Instant::now()).out)), "");
        assert_eq!(op(req(&mut r, 1, json!({"op": "dance"}))), "");
        assert_eq!(op(req(&mut r, 1, json!({"op": "join"}))), "join");
        assert_eq!(op(req(&mut r, 1, json!({"op": "say", "room": 5}))), "say");
        let m = e(req(&mut r, 1, json!({"op": "say", "room": "x", "body": 1})));
        assert!(m.starts_with("not_member [x]: join the room"), "{m}");
        assert!(e(req(&mut r, 1, json!({"op": "leave", "room": "x"})))
            .starts_with("not_member [x]: you are not in this room"));
        assert!(e(req(&mut r, 1, json!({"op": "join", "room": ""}))).starts_with("bad_room: room names are 1 to 64"));
        let m = e(req(&mut r, 1, json!({"op": "join", "room": "a", "name": "n".repeat(65)})));
        assert!(m.starts_with("bad_name: ") && m.contains("64"), "{m}");
        req(&mut r, 1, json!({"op": "join", "room": "a"}));
        req(&mut r, 1, json!({"op": "join", "room": "b"}));
        let m = e(req(&mut r, 1, json!({"op": "join", "room": "c"})));
        assert!(m.starts_with("too_many_rooms [c]: ") && m.contains("as many rooms as allowed"), "{m}");
        // Joining again is not a new room.
        assert_eq!(req(&mut r, 1, json!({"op": "join", "room": "a"}))[0].1["ev"], "joined");
        r.opened(id(2), "u2".into());
        let out = req(&mut r, 2, json!({"op": "join", "room": "a"}));
        assert_eq!(out.iter().filter(|(_, v)| v["ev"] == "presence").count(), 2, "both members hear the join");
        // Above presence_max_members (2 here) a room is quiet: the joiner
        // gets its answer, and nobody is told of the join.
        r.opened(id(3), "u3".into());
        let out = req(&mut r, 3, json!({"op": "join", "room": "a"}));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].1["ev"], "joined");
        // The joined list is capped too (limit 2 here): you first, exact count.
        assert_eq!(out[0].1["count"], 3);
        assert_eq!(out[0].1["members"].as_array().unwrap().len(), 2);
        assert_eq!(out[0].1["members"][0]["user"], "u3");
        assert!(parse(&r.detached(id(3))).is_empty());
        assert!(parse(&r.resumed(id(3))).is_empty());
        r.opened(id(4), "u4".into());
        let m = e(req(&mut r, 4, json!({"op": "join", "room": "a"})));
        assert!(m.starts_with("room_full [a]: ") && m.contains("full"), "{m}");
        // Lists are capped (limit 2 here), you first, with the full count.
        let list = req(&mut r, 3, json!({"op": "members", "room": "a"}));
        assert_eq!(list[0].1["count"], 3);
        assert_eq!(list[0].1["members"].as_array().unwrap().len(), 2);
        assert_eq!(list[0].1["members"][0]["user"], "u3");
    }

    #[test]
    fn says_are_rate_limited_per_session() {
        let mut r = rooms();
        r.opened(id(1), "alice".into());
        req(&mut r, 1, json!({"op": "join", "room": "a"}));
        let t0 = Instant::now();
        let say = |r: &mut Rooms, at: Instant| {
            let b = json!({"op": "say", "room": "a", "body": 1}).to_string();
            parse(&r.request(id(1), b.as_bytes(), at).out)[0].1["ev"].as_str().unwrap().to_owned()
        };
        // A burst of 20 passes, the 21st is refused, and 10/s comes back.
        for _ in 0..20 {
            assert_eq!(say(&mut r, t0), "message");
        }
        assert_eq!(say(&mut r, t0), "error");
        let b = json!({"op": "say", "room": "a", "body": 1}).to_string();
        let refused = parse(&r.request(id(1), b.as_bytes(), t0).out);
        assert_eq!((refused[0].1["code"].as_str(), refused[0].1["room"].as_str()), (Some("rate_limited"), Some("a")));
        let later = t0 + std::time::Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(say(&mut r, later), "message");
        }
        assert_eq!(say(&mut r, later), "error");
    }

    #[test]
    fn rtt_and_publish() {
        let mut r = rooms();
        r.opened(id(1), "alice".into());
        req(&mut r, 1, json!({"op": "join", "room": "a"}));
        r.rtt(id(1), 12.345);
        assert_eq!(r.room_members("a").unwrap()[0].rtt_ms, Some(12.3));
        let out = r.publish_room("a", &json!({"n": 1})).unwrap();
        assert_eq!(parse(&out)[0].1["ev"], "publish");
        assert!(r.publish_room("nope", &json!(1)).is_none());
        assert_eq!(r.list(), vec![("a".to_owned(), 1)]);
        // A closed (not expired) session is shown as left.
        r.opened(id(2), "bob".into());
        req(&mut r, 2, json!({"op": "join", "room": "a"}));
        let out = parse(&r.ended(id(2), false));
        assert_eq!(out[0].1["member"]["state"], "left");
    }

    #[test]
    fn a_say_names_its_room_for_the_too_large_answer() {
        let mut r = rooms();
        r.opened(id(1), "alice".into());
        let say = json!({"op": "say", "room": "a", "body": "hi"}).to_string();
        let refused = r.request(id(1), say.as_bytes(), Instant::now());
        assert_eq!(refused.said, None, "a refused say fanned out nothing");
        assert_eq!(r.request(id(1), br#"{"op":"join","room":"a"}"#, Instant::now()).said, None);
        let reply = r.request(id(1), say.as_bytes(), Instant::now());
        assert_eq!(reply.said.as_deref(), Some("a"));
        assert!(parse(&reply.out).iter().all(|(_, v)| v["ev"] == "message"), "only the message is in a say's out");

        let e: Value = serde_json::from_slice(&Rooms::too_large_for_members("a".into(), 2, 17000, 16375)).unwrap();
        let message = e["message"].as_str().unwrap().to_owned();
        assert_eq!(
            e,
            json!({"ev": "error", "op": "say", "code": "too_large_for_members", "room": "a",
                   "undelivered": 2, "size": 17000, "limit": 16375, "message": message})
        );
        assert!(message.contains("2 member(s)") && message.contains("17000") && message.contains("16375"), "{message}");
    }
}
