//! The room protocol for Rust programs: [`Rooms`] wraps a running
//! [`tether_runtime::Client`] and gives the gateway's requests as async
//! calls settled by the gateway's answers, as the browser client's `Rooms`
//! does: `join` and `leave` (a refusal is a [`RequestError`]), `members`,
//! `say`, and `rpc` to the application's backend with a timeout. Every
//! other event (room events, session events) comes out of
//! [`Rooms::next_event`]. Membership outlives a session: when a session
//! ends and the client starts a fresh one, the rooms are joined again.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use tether_runtime::client::{Client, ClientOptions};
//! let opts = ClientOptions::new(tether_proto::ClientConfig::profile(tether_proto::Profile::Realtime));
//! let client = Client::start("ws://127.0.0.1:7401/".parse()?, opts)?;
//! let mut rooms = tether_gateway::client::Rooms::new(client);
//! let joined = rooms.join("lobby", Some("Ann")).await?;
//! rooms.say("lobby", &serde_json::json!({"text": "hi"}))?;
//! let history = rooms.rpc("history", serde_json::json!({"room": "lobby"}), std::time::Duration::from_secs(5)).await?;
//! while let Some(event) = rooms.next_event().await { /* … */ }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tether_proto::{ClientEvent, SendError};
use tether_runtime::client::{Client, ClientHandle, Event as ClientSide};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{Error, Event, Member};

/// What [`Rooms::next_event`] gives.
#[derive(Debug)]
pub enum RoomsEvent {
    /// A room-protocol event (answers included).
    Room(Event),
    /// A session event: connected, resumed, disconnected, ended… (messages
    /// come as [`RoomsEvent::Room`]).
    Session(ClientEvent),
    /// A message from the gateway that is not a room event.
    Unreadable(Bytes),
}

/// Why a `join`, `leave` or `members` got no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// The gateway refused it: its `error` event.
    Refused(Error),
    /// The session ended before the answer came.
    SessionEnded,
    /// The request could not be queued (the client's buffer is full, or it is closed).
    Send(SendError),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Refused(e) => write!(f, "refused by the gateway ({}): {}", e.code.name(), e.message),
            RequestError::SessionEnded => write!(f, "the session ended before the gateway answered"),
            RequestError::Send(e) => write!(f, "not sent: {e}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Why an `rpc` has no result: `code` is the backend's own, the
/// gateway's (`backend_unavailable`, `no_backend`, `bad_method`,
/// `reply_too_large`), or this client's: `timeout` (the request is still
/// in the session and may yet reach the backend, once), `session_ended`,
/// `not_sent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// Machine-readable.
    pub code: String,
    /// For people.
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rpc failed ({}): {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

type Answer = oneshot::Sender<Result<Event, RequestError>>;

#[derive(Default)]
struct Waiting {
    /// join, leave, members waiting, oldest first: (op, room, answer).
    asks: VecDeque<(&'static str, String, Answer)>,
    calls: HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>,
    /// Rooms joined, with the name: joined again on a fresh session.
    joined: BTreeMap<String, Option<String>>,
}

/// The room protocol over a running client.
pub struct Rooms {
    handle: ClientHandle,
    waiting: Arc<Mutex<Waiting>>,
    events: mpsc::UnboundedReceiver<RoomsEvent>,
    next_id: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rooms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rooms {
    /// Takes over the client's events (spawns a task: call within a tokio runtime).
    pub fn new(client: Client) -> Rooms {
        let handle = client.handle();
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(pump(client, waiting.clone(), tx));
        Rooms { handle, waiting, events, next_id: AtomicU64::new(1), task }
    }

    /// The client's handle (send, close, session id …).
    pub fn handle(&self) -> &ClientHandle {
        &self.handle
    }

    /// The next event that is not an answer someone waits for; None once
    /// the client stopped.
    pub async fn next_event(&mut self) -> Option<RoomsEvent> {
        self.events.recv().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(&self, op: &'static str, room: &str, msg: Value) -> Result<Event, RequestError> {
        let (tx, rx) = oneshot::channel();
        {
            // Queued and sent under the lock: answers come in request order.
            let mut w = self.lock();
            self.handle.send(Bytes::from(msg.to_string())).map_err(RequestError::Send)?;
            w.asks.push_back((op, room.to_owned(), tx));
        }
        rx.await.unwrap_or(Err(RequestError::SessionEnded))
    }

    /// Joins `room` (as `name`): the gateway's `joined` answer.
    pub async fn join(&self, room: &str, name: Option<&str>) -> Result<Event, RequestError> {
        let msg = match name {
            Some(n) => json!({"op": "join", "room": room, "name": n}),
            None => json!({"op": "join", "room": room}),
        };
        let r = self.ask("join", room, msg).await;
        if r.is_ok() {
            self.lock().joined.insert(room.to_owned(), name.map(str::to_owned));
        }
        r
    }

    /// Leaves `room`.
    pub async fn leave(&self, room: &str) -> Result<(), RequestError> {
        self.lock().joined.remove(room);
        self.ask("leave", room, json!({"op": "leave", "room": room})).await.map(|_| ())
    }

    /// A room's members (you first, capped) and its exact size.
    pub async fn members(&self, room: &str) -> Result<(Vec<Member>, usize), RequestError> {
        match self.ask("members", room, json!({"op": "members", "room": room})).await? {
            Event::Members { members, count, .. } => Ok((members, count)),
            _ => Err(RequestError::SessionEnded),
        }
    }

    /// Says `body` in `room` (delivered to every member, you too, as a
    /// `message` event); its session sequence number.
    pub fn say(&self, room: &str, body: &Value) -> Result<u64, SendError> {
        self.handle.send(Bytes::from(json!({"op": "say", "room": room, "body": body}).to_string()))
    }

    /// Asks the application's backend (the gateway's `rpc` hook): its
    /// result, or why there is none.
    pub async fn rpc(&self, method: &str, data: Value, timeout: Duration) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().calls.insert(id, tx);
        let msg = json!({"op": "rpc", "id": id, "method": method, "data": data});
        if let Err(e) = self.handle.send(Bytes::from(msg.to_string())) {
            self.lock().calls.remove(&id);
            return Err(RpcError { code: "not_sent".into(), message: e.to_string() });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ended()),
            Err(_) => {
                self.lock().calls.remove(&id);
                let message = format!("no reply to {method} within {}", humantime::format_duration(timeout));
                Err(RpcError { code: "timeout".into(), message })
            }
        }
    }
}

fn ended() -> RpcError {
    RpcError { code: "session_ended".into(), message: "the session ended before the reply".into() }
}

/// Reads the client's events: answers settle what waits, the rest goes out.
async fn pump(mut client: Client, waiting: Arc<Mutex<Waiting>>, out: mpsc::UnboundedSender<RoomsEvent>) {
    let lock = || waiting.lock().unwrap_or_else(|p| p.into_inner());
    let mut fresh = false;
    while let Some(e) = client.next_event().await {
        let ClientSide::Session(e) = e else { continue };
        let event = match e {
            ClientEvent::Message(m) => match serde_json::from_slice::<Event>(&m) {
                Ok(ev) => {
                    settle(&mut lock(), &ev);
                    RoomsEvent::Room(ev)
                }
                Err(_) => RoomsEvent::Unreadable(m),
            },
            ClientEvent::SessionEnded { restarting, .. } => {
                let mut w = lock();
                w.asks.clear(); // dropped senders answer SessionEnded
                w.calls.clear();
                fresh = restarting;
                RoomsEvent::Session(e)
            }
            ClientEvent::Connected { .. } if fresh => {
                // A fresh session is in no room: join them again.
                fresh = false;
                let w = lock();
                for (room, name) in &w.joined {
                    let msg = match name {
                        Some(n) => json!({"op": "join", "room": room, "name": n}),
                        None => json!({"op": "join", "room": room}),
                    };
                    let _ = client.handle().send(Bytes::from(msg.to_string()));
                }
                RoomsEvent::Session(e)
            }
            other => RoomsEvent::Session(other),
        };
        let _ = out.send(event);
    }
}

/// The oldest request waiting for this answer (answers come in order).
fn settle(w: &mut Waiting, ev: &Event) {
    let mut answer = |op: &str, room: Option<&str>, r: Result<Event, RequestError>| {
        let i = w.asks.iter().position(|(o, rm, _)| *o == op && room.is_none_or(|r| r == rm));
        if let Some((_, _, tx)) = i.and_then(|i| w.asks.remove(i)) {
            let _ = tx.send(r);
        }
    };
    match ev {
        Event::Joined { room, .. } => answer("join", Some(room), Ok(ev.clone())),
        Event::Left { room } => answer("leave", Some(room), Ok(ev.clone())),
        Event::Members { room, .. } => answer("members", Some(room), Ok(ev.clone())),
        Event::Error(e) if ["join", "leave", "members"].contains(&e.op.as_str()) => {
            let room = match &e.code {
                crate::protocol::ErrorCode::TooManyRooms { room }
                | crate::protocol::ErrorCode::RoomFull { room }
                | crate::protocol::ErrorCode::NotMember { room }
                | crate::protocol::ErrorCode::Forbidden { room } => Some(room.clone()),
                _ => None,
            };
            let op = if e.op == "join" {
                "join"
            } else if e.op == "leave" {
                "leave"
            } else {
                "members"
            };
            answer(op, room.as_deref(), Err(RequestError::Refused(e.clone())));
        }
        Event::Reply { id, result, error } => {
            if let Some(tx) = w.calls.remove(id) {
                let r = match error {
                    Some(e) => Err(RpcError { code: e.code.clone(), message: e.message.clone() }),
                    None => Ok(result.clone().unwrap_or(Value::Null)),
                };
                let _ = tx.send(r);
            }
        }
        _ => {}
    }
}
