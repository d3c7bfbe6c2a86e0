//! The server's side of a durable store (see [`crate::store`]): sessions
//! carried on from the store, messages numbered there before they go out,
//! commits that gate acks, the store's notices, and writes a session task
//! leaves behind (acks, ends).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tether_proto::{RecordError, SendError, ServerSession, SessionEnd, SessionId};
use tokio::sync::mpsc;

use super::session::{self, Durable, SessionCell, State};
use super::{Inner, ServerEvent, ServerHandle};
use crate::driver::now;
use crate::store::{Claimed, Fence, Notice, SharedStore, StoreError};
use crate::transport::Kind;

/// Registers a session claimed from the store (replacing any older copy
/// held here, which stops quietly) and starts its task, detached until the
/// resume in progress hands it the transport.
pub(super) fn install(inner: &Arc<Inner>, claimed: Claimed, kind: Kind, peer: SocketAddr) -> Result<(), RecordError> {
    let core = ServerSession::restore(now(), &inner.cfg, claimed.record)?;
    let id = core.id();
    // The outage began when the copy held here (if any) lost its transport.
    let outage_since = inner.cell(id).and_then(|c| c.lock().outage_since());
    let cell = Arc::new(SessionCell::new(core));
    {
        let mut st = cell.lock();
        st.user = claimed.user;
        st.peer = Some((kind, peer));
        let (acked, token) = (st.core.acked(), Some(st.core.token()));
        st.durable = Some(Box::new(Durable {
            fence: claimed.fence,
            stored_ack: acked,
            stored_token: token,
            restored: true,
            outage_since,
            ..Durable::default()
        }));
    }
    let older = inner.registry().insert(id, cell.clone());
    if let Some(old) = older {
        old.moved(None, false);
    }
    session::spawn_detached(inner.clone(), id, cell, kind, peer);
    Ok(())
}

/// Writes a session task leaves behind after a turn: the client's acks
/// (one write in flight at a time), and the end.
pub(super) fn after_turn(inner: &Arc<Inner>, cell: &Arc<SessionCell>, id: SessionId, st: &mut State) {
    let (Some(store), Some(d)) = (inner.store.clone(), st.durable.as_mut()) else { return };
    if d.moved.is_some() {
        return;
    }
    let fence = d.fence;
    if st.core.is_ended() {
        if !d.ended {
            d.ended = true;
            // Retried while the store is away: a session left in the store
            // under a live owner would never expire there, and its token
            // could bring an ended session back.
            tokio::spawn(async move {
                let mut backoff = std::time::Duration::from_millis(100);
                for _ in 0..20 {
                    match store.end(id, fence).await {
                        Err(StoreError::Unavailable(e)) => {
                            tracing::debug!(session = %id, %e, "the end of a session not written yet; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                        }
                        _ => return, // done, or another node holds it now, or gone already
                    }
                }
                tracing::warn!(session = %id, "the store kept an ended session: it stays there until this node restarts or dies");
            });
        }
        return;
    }
    // A token the client proved it holds is written at once: until then a
    // stale handshake with an older token could claim the session away.
    let token = st.core.token();
    if !d.confirming && !d.stored_token.is_some_and(|t| t.matches(&token)) {
        d.confirming = true;
        let (store, cell) = (store.clone(), cell.clone());
        tokio::spawn(async move {
            let r = store.confirm(id, fence, token).await;
            let mut st = cell.lock();
            if let Some(d) = st.durable.as_mut() {
                d.confirming = false;
                if r.is_ok() {
                    d.stored_token = Some(token);
                }
            }
            drop(st);
            match r {
                Ok(()) => {}
                Err(StoreError::Fenced(_) | StoreError::Gone(_)) => {
                    cell.moved(Some(fence), true);
                }
                Err(e) => {
                    tracing::debug!(session = %id, %e, "token confirmation not written; retried at the next turn")
                }
            }
        });
    }
    // Acks are written lazily: at most one write per session per
    // ACK_WRITE_DELAY (the latest value then), since the store needs them
    // only to forget what the client has (a resume replays from the
    // client's own last_received, which is never below the stored ack).
    if st.core.acked() > d.stored_ack && !d.acking {
        d.acking = true;
        let cell = cell.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ACK_WRITE_DELAY).await;
            let acked = cell.lock().core.acked();
            let r = store.acked(id, fence, acked).await;
            let mut st = cell.lock();
            if let Some(d) = st.durable.as_mut() {
                d.acking = false;
                if r.is_ok() {
                    d.stored_ack = d.stored_ack.max(acked);
                }
            }
            drop(st);
            match r {
                Ok(()) => cell.wake(), // more may have been acknowledged meanwhile
                Err(StoreError::Fenced(_) | StoreError::Gone(_)) => {
                    cell.moved(Some(fence), true);
                }
                Err(e) => tracing::debug!(session = %id, %e, "ack not written; retried at the next one"),
            }
        });
    }
}

/// How long a session's acks gather before one write tells the store.
const ACK_WRITE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Feeds a store-numbered message to the session's copy here, if any;
/// fetches what is missing when it arrives ahead of its predecessors.
fn offer(inner: &Arc<Inner>, to: SessionId, seq: u64, payload: Bytes) -> Result<u64, SendError> {
    let Some(cell) = inner.cell(to) else { return Ok(seq) }; // another node carries it
    let r = cell.lock().core.send_at(now(), seq, payload);
    cell.wake();
    match r {
        Ok(_) => Ok(seq),
        Err(SendError::OutOfOrder { .. }) => {
            fill(inner.clone(), to);
            Ok(seq)
        }
        Err(e) => Err(e),
    }
}

/// Fetches a session's stored messages it does not have yet.
fn fill(inner: Arc<Inner>, id: SessionId) {
    let Some(store) = inner.store.clone() else { return };
    tokio::spawn(async move {
        let Some(cell) = inner.cell(id) else { return };
        let from = cell.lock().core.next_seq();
        match store.fetch(id, from).await {
            Ok(messages) => {
                let mut st = cell.lock();
                for (seq, payload) in messages {
                    if let Err(e) = st.core.send_at(now(), seq, payload) {
                        tracing::debug!(session = %id, %e, "stored message not queued");
                        break;
                    }
                }
                drop(st);
                cell.wake();
            }
            Err(e) => tracing::warn!(session = %id, %e, "cannot fetch stored messages; the next wake-up retries"),
        }
    });
}

/// What the store tells this node.
pub(super) async fn notices(inner: Arc<Inner>, mut rx: mpsc::Receiver<Notice>) {
    loop {
        // Ends with the server, so that the store (and its lease) goes too.
        let n = tokio::select! {
            n = rx.recv() => n,
            () = inner.stop.cancelled() => None,
        };
        let Some(n) = n else { return };
        match n {
            Notice::Wake(id) => fill(inner.clone(), id),
            Notice::TakenOver(id) => {
                if let Some(cell) = inner.cell(id) {
                    cell.moved(None, true);
                }
            }
            Notice::Kick { session, reason } => {
                if let Some(cell) = inner.cell(session) {
                    cell.close(tether_proto::CloseCode::Kicked, &reason);
                }
            }
            Notice::LeaseLost => {
                let cells: Vec<_> = inner.registry().values().cloned().collect();
                for c in cells {
                    c.moved(None, true);
                }
            }
            Notice::Missed => {
                let ids: Vec<_> = inner.registry().keys().copied().collect();
                for id in ids {
                    fill(inner.clone(), id);
                }
            }
            Notice::Orphaned(session) => {
                if inner.events.send(ServerEvent::Orphaned { session }).await.is_err() {
                    return;
                }
            }
            Notice::OrphanExpired { session, .. } => {
                let e = ServerEvent::Ended { session, reason: SessionEnd::Expired, unacked: Vec::new() };
                if inner.events.send(e).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One message's fate: its seq, or why it was not queued.
pub type Queued = Result<u64, SendError>;

impl ServerHandle {
    /// The application handled a session's client messages through `seq`
    /// (the `seq` of a [`ServerEvent::Message`]), and these are the messages
    /// that handling sends (replies, fan-out). With a store, the messages
    /// are stored and `seq` committed in one atomic step before anything is
    /// acknowledged or sent — exactly once even if this node dies now; a
    /// `seq` committed before sends nothing again. Without a store, the
    /// messages are queued at once.
    ///
    /// [`StoreError::Fenced`] or [`StoreError::Gone`]: another node carries
    /// the session now, or it ended; this copy was dropped (the client
    /// resumes and sends the message again where it is carried).
    pub async fn commit(
        &self,
        session: SessionId,
        seq: u64,
        effects: Vec<(SessionId, Bytes)>,
    ) -> Result<Vec<Queued>, StoreError> {
        let inner = &self.inner;
        let Some(store) = inner.store.clone() else {
            if let Some(cell) = inner.cell(session) {
                cell.lock().core.commit(now(), seq);
            }
            return Ok(effects.into_iter().map(|(to, p)| self.send(to, p)).collect());
        };
        let cell = inner.cell(session).ok_or(StoreError::Gone(session))?;
        let fence = cell.fence().ok_or(StoreError::Gone(session))?;
        let (to, payloads): (Vec<_>, Vec<_>) = effects.iter().cloned().unzip();
        match store.commit(session, fence, seq, effects).await {
            Ok(seqs) => {
                {
                    let mut st = cell.lock();
                    st.core.commit(now(), seq);
                }
                cell.wake();
                if seqs.is_empty() && !to.is_empty() {
                    // Committed before (a retry whose first answer was
                    // lost): the messages are stored; catch up from there.
                    for id in &to {
                        fill(inner.clone(), *id);
                    }
                    return Ok(to.iter().map(|_| Ok(0)).collect());
                }
                Ok(deliver(inner, to, payloads, seqs))
            }
            Err(e @ (StoreError::Fenced(_) | StoreError::Gone(_))) => {
                cell.moved(Some(fence), true);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Queues messages for sessions wherever they are carried: with a
    /// store, each is stored (and numbered) first, then sent by the node
    /// that carries its session; without, queued here.
    pub async fn publish(&self, messages: Vec<(SessionId, Bytes)>) -> Result<Vec<Queued>, StoreError> {
        let Some(store) = self.inner.store.clone() else {
            return Ok(messages.into_iter().map(|(to, p)| self.send(to, p)).collect());
        };
        let (to, payloads): (Vec<_>, Vec<_>) = messages.iter().cloned().unzip();
        let seqs = store.append(messages).await?;
        Ok(deliver(&self.inner, to, payloads, seqs))
    }

    /// An application's own store operation committed a session's client
    /// messages through `seq` under the fence it holds, storing these
    /// messages (each with its fate from the store, as
    /// [`crate::store::Store::commit`] reports them): acknowledge, and hand
    /// the stored messages to the sessions held here. For applications that
    /// keep state of their own beside the sessions in the same store (the
    /// gateway's rooms).
    pub fn committed(&self, session: SessionId, seq: u64, stored: Vec<(SessionId, Queued, Bytes)>) -> Vec<Queued> {
        if let Some(cell) = self.inner.cell(session) {
            cell.lock().core.commit(now(), seq);
            cell.wake();
        }
        self.stored(stored)
    }

    /// Messages an application's own store operation stored: handed to the
    /// sessions held here (the others' nodes were woken by the store).
    pub fn stored(&self, stored: Vec<(SessionId, Queued, Bytes)>) -> Vec<Queued> {
        stored.into_iter().map(|(to, fate, p)| fate.and_then(|seq| offer(&self.inner, to, seq, p))).collect()
    }

    /// Fetches what the store holds for a session held here that it does
    /// not have yet (after a commit whose first answer was lost).
    pub fn catch_up(&self, session: SessionId) {
        fill(self.inner.clone(), session);
    }

    /// The store refused a write for `session` under `fence` (another node
    /// claimed it, or it ended): this node stops carrying it.
    pub fn fenced(&self, session: SessionId, fence: Fence) {
        if let Some(cell) = self.inner.cell(session) {
            cell.moved(Some(fence), true);
        }
    }

    /// The store this server keeps its sessions in, if any.
    pub fn store(&self) -> Option<&SharedStore> {
        self.inner.store.as_ref()
    }

    /// The fence this node holds on a session (with a store).
    pub fn fence(&self, session: SessionId) -> Option<Fence> {
        self.inner.cell(session)?.fence()
    }
}

/// Hands stored messages to the copies of their sessions held here.
fn deliver(inner: &Arc<Inner>, to: Vec<SessionId>, payloads: Vec<Bytes>, seqs: Vec<Queued>) -> Vec<Queued> {
    to.into_iter().zip(payloads).zip(seqs).map(|((to, p), seq)| seq.and_then(|seq| offer(inner, to, seq, p))).collect()
}
