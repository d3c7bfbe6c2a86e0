//! The gateway's events with `[cluster]`: room requests, presence and ends
//! go through the Redis room engine ([`crate::rooms::redis`]), each
//! committed atomically with the messages it sends; the local participant
//! table only names the sessions held here.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_proto::{SessionEnd, SessionId};
use tether_runtime::store::StoreError;
use tether_runtime::ServerEvent;

use crate::protocol::Request;
use crate::rooms::redis::{error_event, Done, RedisRooms};
use crate::{participant, rtt_of, tally, Shared};

/// Retries a store operation while the store is away (the event loop waits:
/// a busy application to the sessions, whose links stay up); gives up on
/// any other error.
pub(crate) async fn retry<T, F: std::future::Future<Output = Result<T, StoreError>>>(
    what: &str,
    mut op: impl FnMut() -> F,
) -> Result<T, StoreError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match op().await {
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(%e, ?backoff, "{what}: the store is away; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            r => return r,
        }
    }
}

pub(crate) async fn on_event(s: &Shared, c: &RedisRooms, e: ServerEvent) {
    let m = &s.metrics;
    let lock = || s.rooms.lock().unwrap_or_else(|p| p.into_inner());
    match e {
        ServerEvent::Opened { session, peer, kind, user } => {
            m.opened();
            let who = participant(session, user);
            tracing::info!(%session, user = %who.user, %peer, %kind, "session opened");
            let (user, name) = (who.user.clone(), who.name.clone());
            lock().opened_as(session, who);
            if let Err(e) = retry("a new member", || c.opened(session, &user, name.as_deref())).await {
                tracing::debug!(%session, %e, "member entry not written");
            }
        }
        ServerEvent::Message { session, seq, payload } => {
            m.message_in();
            crate::hooks::requests::handle(s, session, seq, &payload).await;
        }
        ServerEvent::PingPayload { session, payload } => {
            if let Some(ms) = rtt_of(&payload) {
                m.rtt(ms / 1000.0);
                lock().rtt(session, ms);
                if let Err(e) = c.rtt(session, ms).await {
                    tracing::debug!(%session, %e, "RTT not written");
                }
            }
        }
        ServerEvent::Detached { session, reason } => {
            m.detected();
            tracing::info!(%session, %reason, "session detached; kept for a resume");
            presence(s, c, session, "reconnecting").await;
        }
        ServerEvent::Resumed { session, replayed, peer, kind, user } => {
            m.resumed(replayed);
            tracing::info!(%session, replayed, %peer, %kind, "session resumed");
            lock().adopt(session, participant(session, user));
            presence(s, c, session, "active").await;
        }
        ServerEvent::Orphaned { session } => {
            tracing::info!(%session, "session orphaned by a dead node; kept for a resume on any node");
            if let Ok(Done::Sent(sent)) =
                retry("an orphan's presence", || c.presence(session, None, "reconnecting")).await
            {
                tally(m, s.server.stored(sent));
            }
        }
        ServerEvent::Moved { session } => {
            tracing::info!(%session, "session carried on by another node");
            lock().forget(session);
            c.forget(session);
        }
        ServerEvent::Ended { session, reason, unacked } => {
            let expired = matches!(reason, SessionEnd::Expired);
            m.ended(session, &reason, s.is_draining());
            tracing::info!(%session, %reason, unacked = unacked.len(), "session ended");
            lock().forget(session);
            match retry("an ended member", || c.ended(session, expired)).await {
                Ok(Done::Sent(sent)) => {
                    tally(m, s.server.stored(sent));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%session, %e, "its rooms were not told it ended"),
            }
        }
        ServerEvent::Rejected { peer, reason } => tracing::debug!(%peer, ?reason, "handshake refused"),
        _ => {}
    }
}

/// A member's link state changed: its rooms hear it (if this node still
/// carries the session).
async fn presence(s: &Shared, c: &RedisRooms, session: SessionId, state: &str) {
    let Some(fence) = s.server.fence(session) else { return };
    match retry("a presence change", || c.presence(session, Some(fence), state)).await {
        Ok(Done::Sent(sent)) => {
            tally(&s.metrics, s.server.stored(sent));
        }
        Ok(_) => {}
        Err(StoreError::Fenced(_) | StoreError::Gone(_)) => s.server.fenced(session, fence),
        Err(e) => tracing::warn!(%session, %e, "presence change not announced"),
    }
}

/// A room request, read and checked: one script that checks, changes the
/// room, stores the answer and fan-out, and commits the client message,
/// atomically. `rate_checked`: its say token was taken before its hook.
pub(crate) async fn request(
    s: &Shared,
    c: &RedisRooms,
    session: SessionId,
    seq: u64,
    req: Request,
    rate_checked: bool,
) {
    let Some(fence) = s.server.fence(session) else { return };
    let m = &s.metrics;
    let op = req.op();
    let said = match &req {
        Request::Say { room, .. } => Some(room.clone()),
        _ => None,
    };
    let now = (!rate_checked).then(Instant::now);
    match retry("a room request", || c.request(session, fence, seq, req.clone(), now)).await {
        Ok(Done::Sent(sent)) => {
            let d = tally(m, s.server.committed(session, seq, sent));
            crate::hooks::requests::too_large(s, session, said, d).await;
        }
        Ok(Done::Before) => {
            // Committed by an attempt whose answer was lost: what it stored
            // for this session is fetched (other sessions here catch up at
            // their next message).
            s.server.committed(session, seq, Vec::new());
            s.server.catch_up(session);
        }
        Ok(Done::Refused(r)) => answer(s, session, seq, error_event(op, r)).await,
        Err(StoreError::Fenced(_) | StoreError::Gone(_)) => s.server.fenced(session, fence),
        Err(e) => tracing::warn!(%session, %e, "room request not handled"),
    }
}

/// Commits a client message whose answer is one message to its sender.
async fn answer(s: &Shared, session: SessionId, seq: u64, reply: Bytes) {
    crate::commit(s, session, seq, vec![(session, reply)]).await;
}
