//! A session as a durable store keeps it, so that another node can carry
//! it on: [`ServerSession::record`] writes one, [`ServerSession::restore`]
//! rebuilds a session from one (docs/CLUSTER.md).
//!
//! What makes this exactly-once across a node's death is not the record
//! alone but two gates the store's user keeps: a message goes to the client
//! only once it is in the store (its seq assigned there,
//! [`ServerSession::send_at`]), and an ack never covers a client message
//! whose effects are not committed there ([`ServerSession::commit`] with
//! [`super::ServerConfig::commit_acks`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ServerConfig, ServerSession};
use crate::token::{SessionId, TokenState};

/// Everything a node needs to carry a session on.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The session.
    pub id: SessionId,
    /// Its resume tokens (hashes only).
    pub tokens: TokenState,
    /// The highest client seq whose effects are committed (what a WELCOME
    /// reports as `last_received`).
    pub committed: u64,
    /// The highest server seq the client acknowledged.
    pub acked: u64,
    /// The seq the next server message gets.
    pub next_seq: u64,
    /// Every server message after `acked`, in order: seqs `acked + 1 ..
    /// next_seq`.
    pub unacked: Vec<(u64, Bytes)>,
    /// The idle timeout granted to the client.
    pub idle_timeout: Duration,
    /// The client's announced maximum frame.
    pub peer_max_frame: u32,
}

/// A record that cannot be a session: the store's copy is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session record of {id} is inconsistent: {problem}")]
pub struct RecordError {
    /// The session.
    pub id: SessionId,
    /// What is wrong.
    pub problem: String,
}

impl SessionRecord {
    fn check(&self) -> Result<(), RecordError> {
        let bad = |problem: String| Err(RecordError { id: self.id, problem });
        if self.next_seq <= self.acked {
            return bad(format!("next seq {} is not above the acknowledged {}", self.next_seq, self.acked));
        }
        let want = self.next_seq - 1 - self.acked;
        if self.unacked.len() as u64 != want {
            return bad(format!("{} unacknowledged messages kept, {want} expected", self.unacked.len()));
        }
        for (i, (seq, _)) in self.unacked.iter().enumerate() {
            if *seq != self.acked + 1 + i as u64 {
                return bad(format!("message {seq} out of place (position {i} after {})", self.acked));
            }
        }
        Ok(())
    }
}

impl ServerSession {
    /// The session as a durable store keeps it (with every unacknowledged
    /// message; a store that already holds them may skip them).
    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            id: self.id,
            tokens: self.tokens.clone(),
            committed: self.inb.last_taken(),
            acked: self.out.acked(),
            next_seq: self.out.last_assigned() + 1,
            unacked: self.out.unacked().cloned().collect(),
            idle_timeout: self.idle_timeout,
            peer_max_frame: self.peer_max_frame,
        }
    }

    /// Rebuilds a session from its durable record, detached since `now`,
    /// for a resume to attach. Client messages after `committed` are taken
    /// again when the client replays them; every unacknowledged server
    /// message is written again after the resume. No `Opened` event.
    pub fn restore(now: Instant, cfg: &Arc<ServerConfig>, r: SessionRecord) -> Result<Self, RecordError> {
        r.check()?;
        let mut s = ServerSession::new(now, cfg, r.id, r.tokens, r.peer_max_frame);
        s.idle_timeout = r.idle_timeout;
        s.inb = crate::stream::Inbound::restored(r.committed, cfg.commit_acks);
        s.out = crate::stream::Outbound::restored(cfg.replay.clone(), r.acked, r.unacked, r.next_seq);
        s.state = super::session::State::Detached { since: now, until: None };
        Ok(s)
    }
}
