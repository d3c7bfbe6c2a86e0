//! Where sessions live beyond this process: the interface a durable store
//! engine implements so that a session can be resumed on any node and
//! survive this one's death (docs/CLUSTER.md).
//!
//! Without a store (the embedded default) every session lives in this
//! process's memory, in its [`tether_proto::ServerSession`]: nothing is
//! written anywhere and nothing costs more than before. With a store (the
//! Redis engine of `tether-cluster`), the server keeps two gates:
//!
//! - **send gate**: a message goes to a client only after the store has
//!   numbered and kept it ([`Store::append`], [`Store::commit`]), so the node
//!   that carries the session next can replay it;
//! - **ack gate**: a client message is acknowledged only once the store has
//!   committed its effects ([`Store::commit`], atomically with the
//!   messages those effects send), so a message is never lost nor applied
//!   twice, whichever node dies.
//!
//! Ownership carries a fence: every claim raises it, and every write made
//! for a session by its owner ([`Store::commit`], [`Store::acked`],
//! [`Store::end`]) names the fence it holds; a node that lost the session
//! (paused, partitioned, declared dead) is refused with
//! [`StoreError::Fenced`] and drops its copy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tether_proto::{SendError, SessionId, SessionRecord, TokenHash};
use tokio::sync::mpsc;

/// A store operation in flight.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A node's claim on a session: raised by every claim, checked by every
/// write the owner makes.
pub type Fence = u64;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another node claimed the session (or it was declared orphaned): this
    /// node must stop carrying it.
    #[error("session {0} was claimed by another node; this node no longer carries it")]
    Fenced(SessionId),
    /// The session is not in the store (ended, expired, or never there).
    #[error("session {0} is not in the store (it ended or never existed)")]
    Gone(SessionId),
    /// The store cannot be reached or answered garbage; what to check.
    #[error("{0}")]
    Unavailable(String),
}

/// What a resume presented, and the store's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// No such session in the store.
    Unknown,
    /// The token is not this session's.
    InvalidToken,
    /// The token was this session's and has been rotated away.
    TokenReused,
}

/// A session claimed for a resume.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The fence this node now holds.
    pub fence: Fence,
    /// The session as the store kept it (with the fresh token pending).
    pub record: SessionRecord,
    /// Who opened it.
    pub user: Option<Arc<str>>,
}

/// What became of a kick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kicked {
    /// No such session.
    Unknown,
    /// The node carrying it was told to end it.
    Forwarded,
    /// No node carried it (an orphan): ended in the store now.
    Ended,
}

/// Something the store tells a node without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Another node stored messages for a session this node carries: fetch
    /// them ([`Store::fetch`]).
    Wake(SessionId),
    /// Another node claimed a session this node carries: drop it.
    TakenOver(SessionId),
    /// An operator ended a session this node carries (CLOSE 3004).
    Kick {
        /// The session.
        session: SessionId,
        /// What the client is told.
        reason: String,
    },
    /// This node's lease had lapsed (it was paused or cut off): the cluster
    /// took its sessions; every copy held here must go.
    LeaseLost,
    /// Notices may have been lost (the store's channel reconnected): every
    /// session held here should catch up with the store.
    Missed,
    /// A session's node died (its lease lapsed): the session waits for a
    /// resume on any node, as after a lost transport (reported by the one
    /// node that found it).
    Orphaned(SessionId),
    /// A session whose node died and whose client never came back was
    /// expired by this node (exactly one node reports each).
    OrphanExpired {
        /// The session.
        session: SessionId,
        /// Who opened it.
        user: Option<Arc<str>>,
    },
}

/// A durable session store. Every operation is atomic in the store.
pub trait Store: Send + Sync + 'static {
    /// This node's name in the store.
    fn node(&self) -> &str;

    /// Records a new session, owned by this node; returns its first fence.
    fn open<'a>(&'a self, record: &'a SessionRecord, user: Option<&'a str>, grace: Duration) -> StoreFuture<'a, Fence>;

    /// Claims a session for a resume in one atomic step: checks the
    /// presented token (current or pending; retired ones are reuse), raises
    /// the fence, makes this node the owner and records `fresh` as a
    /// pending token before the WELCOME carrying it is sent.
    fn claim(
        &self,
        id: SessionId,
        presented: TokenHash,
        fresh: TokenHash,
    ) -> StoreFuture<'_, Result<Claimed, ClaimRefused>>;

    /// Commits the effects of the client's messages through `seq`: stores
    /// every message in `effects` for its recipient (numbered by the store)
    /// and marks `seq` committed, atomically, if this node still holds
    /// `fence`. Idempotent: a `seq` already committed stores nothing again
    /// (and answers an empty list). Returns each effect's fate: its seq, or
    /// why it was not stored ([`SendError::NoSession`], `BufferFull`, or
    /// `TooLarge` for the recipient's frames).
    fn commit(
        &self,
        id: SessionId,
        fence: Fence,
        seq: u64,
        effects: Vec<(SessionId, Bytes)>,
    ) -> StoreFuture<'_, Vec<Result<u64, SendError>>>;

    /// Stores messages for sessions on any node (numbered by the store);
    /// their owners are woken. Returns each message's fate, as `commit`.
    fn append(&self, messages: Vec<(SessionId, Bytes)>) -> StoreFuture<'_, Vec<Result<u64, SendError>>>;

    /// The stored messages of a session from seq `from` on, in order.
    fn fetch(&self, id: SessionId, from: u64) -> StoreFuture<'_, Vec<(u64, Bytes)>>;

    /// The client acknowledged everything through `ack`: the store may
    /// forget it.
    fn acked(&self, id: SessionId, fence: Fence, ack: u64) -> StoreFuture<'_, ()>;

    /// The client proved it holds `token` (its first frame after the
    /// WELCOME that carried it, PROTOCOL §5.4): from now on it is the only
    /// valid one in the store too, so a stale handshake carrying an older
    /// token cannot claim the session away from the node carrying it.
    fn confirm(&self, id: SessionId, fence: Fence, token: tether_proto::TokenHash) -> StoreFuture<'_, ()>;

    /// The session ended here (closed, expired, kicked): remove it.
    fn end(&self, id: SessionId, fence: Fence) -> StoreFuture<'_, ()>;

    /// An operator ends a session wherever it is carried: its node is told
    /// ([`Notice::Kick`]); a session no live node carries is ended in the
    /// store at once.
    fn kick<'a>(&'a self, id: SessionId, reason: &'a str) -> StoreFuture<'a, Kicked>;

    /// The notices for this node (taken once; None after the first call).
    fn notices(&self) -> Option<mpsc::Receiver<Notice>>;
}

/// A store shared by a server's tasks.
pub type SharedStore = Arc<dyn Store>;
