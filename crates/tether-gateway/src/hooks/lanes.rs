//! One lane per session with hooks on: its client messages and lifecycle
//! events go through the backend one at a time, in order, on a task of
//! its own; sessions never wait for each other. A lane ends when its
//! session does (after its last job), or after a minute without work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::{json, Value};
use tether_proto::{CloseCode, SessionEnd, SessionId};
use tether_runtime::ServerEvent;
use tokio::sync::mpsc;

use super::{unix_ms, Hook};
use crate::Shared;

/// A lane without work this long ends (a new job starts another).
const IDLE: Duration = Duration::from_secs(60);

/// A lane: its generation, its queue, its task, and whether its session
/// ended (or moved to another node).
struct Lane {
    gen: u64,
    tx: mpsc::Sender<Job>,
    task: tokio::task::AbortHandle,
    gone: Arc<AtomicBool>,
}

enum Job {
    Message { seq: u64, payload: Bytes },
    Lifecycle { key: String, body: Value },
}

/// The lanes of the sessions with work for the backend.
pub(crate) struct Lanes {
    map: Mutex<HashMap<SessionId, Lane>>,
    next: std::sync::atomic::AtomicU64,
    /// Jobs a lane holds: a client keeping to its replay bound never fills it.
    depth: usize,
}

/// The close code of a session whose client sent more requests than its
/// lane holds while the backend was busy with earlier ones.
pub(crate) const FLOOD: CloseCode = CloseCode::Application(4429);

impl Lanes {
    pub(crate) fn new(depth: usize) -> Self {
        Lanes { map: Mutex::default(), next: 0.into(), depth: depth.max(16) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Lane>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job on the session's lane, starting one if needed; false
    /// when the lane is full.
    fn push(&self, s: &Shared, session: SessionId, job: Job) -> bool {
        let mut map = self.lock();
        let job = match map.get(&session) {
            Some(lane) => match lane.tx.try_send(job) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => return false,
                Err(mpsc::error::TrySendError::Closed(job)) => job, // ended a moment ago
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel(self.depth);
        let _ = tx.try_send(job);
        let gen = self.next.fetch_add(1, Ordering::Relaxed);
        let gone = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(work(s.clone(), session, gen, rx, gone.clone())).abort_handle();
        map.insert(session, Lane { gen, tx, task, gone });
        true
    }

    /// Stops every lane at once (the gateway stopped).
    pub(crate) fn stop(&self) {
        for (_, lane) in self.lock().drain() {
            lane.task.abort();
        }
    }

    /// Ends the lane once its queued jobs are done. Client messages still
    /// queued are not handled: unacknowledged, they were handed back to the
    /// client with the end of its session (or it sends them again to the
    /// node that carries the session now).
    fn close(&self, session: SessionId) {
        if let Some(lane) = self.lock().remove(&session) {
            lane.gone.store(true, Ordering::SeqCst);
        }
    }

    /// True (and the lane gone) if it is still this one and has no work.
    fn retire(&self, session: SessionId, gen: u64, rx: &mpsc::Receiver<Job>) -> bool {
        let mut map = self.lock();
        if map.get(&session).is_some_and(|l| l.gen == gen) && rx.is_empty() {
            map.remove(&session);
            return true;
        }
        false
    }

    /// A client message: handled on its session's lane. A client that
    /// floods its lane (past its own replay bound) ends its session.
    pub(crate) fn message(&self, s: &Shared, session: SessionId, seq: u64, payload: Bytes) {
        if !self.push(s, session, Job::Message { seq, payload }) {
            tracing::warn!(%session, depth = self.depth, "a client sent more requests than wait for the backend; closing");
            s.server.close_session(session, FLOOD, "too many requests waiting for the application's backend");
        }
    }

    /// A session event: its lifecycle hook call is queued (when on), and
    /// an ended session's lane closes after its last job.
    pub(crate) fn event(&self, s: &Shared, e: &ServerEvent) {
        let call = s.hooks.as_ref().is_some_and(|h| h.calls(Hook::Lifecycle));
        let known = |session: &SessionId| {
            s.rooms().participant(*session).map(|p| p.user(*session)).filter(|u| !u.starts_with("anon-"))
        };
        let (session, event, user, extra) = match e {
            ServerEvent::Opened { session, peer, kind, user } => (
                *session,
                "opened",
                crate::auth::user_of(user.as_deref()),
                json!({"peer": peer.to_string(), "transport": kind.to_string()}),
            ),
            ServerEvent::Detached { session, reason } => {
                (*session, "detached", known(session), json!({"reason": reason.to_string()}))
            }
            ServerEvent::Resumed { session, peer, kind, replayed, user } => (
                *session,
                "resumed",
                crate::auth::user_of(user.as_deref()),
                json!({"peer": peer.to_string(), "transport": kind.to_string(), "replayed": replayed}),
            ),
            ServerEvent::Ended { session, reason, .. } => {
                let event = if matches!(reason, SessionEnd::Expired) { "expired" } else { "closed" };
                if call {
                    self.lifecycle(s, *session, event, known(session), json!({"reason": reason.to_string()}));
                }
                return self.close(*session);
            }
            ServerEvent::Moved { session } => return self.close(*session),
            _ => return,
        };
        if call {
            self.lifecycle(s, session, event, user, extra);
        }
    }

    fn lifecycle(&self, s: &Shared, session: SessionId, event: &str, user: Option<String>, extra: Value) {
        let at = unix_ms();
        let mut body = json!({"event": event, "session": session.to_string(), "user": user, "at": at});
        if let (Some(b), Value::Object(x)) = (body.as_object_mut(), extra) {
            b.extend(x);
        }
        let key = format!("{session}-{event}-{at}");
        if !self.push(s, session, Job::Lifecycle { key, body }) {
            tracing::warn!(%session, event, "lifecycle event dropped: the session's lane is full");
        }
    }
}

async fn work(s: Shared, session: SessionId, gen: u64, mut rx: mpsc::Receiver<Job>, gone: Arc<AtomicBool>) {
    loop {
        let job = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => match &s.lanes {
                Some(l) if l.retire(session, gen, &rx) => return,
                _ => continue,
            },
        };
        match job {
            Job::Message { seq, .. } if gone.load(Ordering::SeqCst) => {
                tracing::debug!(%session, seq, "client message of a session no longer here left unhandled");
            }
            Job::Message { seq, payload } => super::requests::handle(&s, session, seq, &payload).await,
            Job::Lifecycle { key, body } => {
                if let Some(h) = &s.hooks {
                    // Failures are logged and counted by the call.
                    let _ = h.call::<IgnoredAny>(Hook::Lifecycle, &key, &body, None).await;
                }
            }
        }
    }
}
