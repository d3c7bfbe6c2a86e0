//! A durable session store, in memory and deterministic, with the semantics
//! of the cluster's Redis engine (`crates/tether-cluster/src/lua/*.lua`,
//! documented by tether-runtime's `Store` trait): it outlives the server
//! nodes, and it can be unavailable for a while
//! ([`crate::Fault::StoreDown`]), when every operation fails.
//!
//! - **send gate**: a server message is numbered here first
//!   ([`Store::append`], or as an effect of [`Store::commit`]) and kept in
//!   the session's outbox until the client acknowledges it
//!   ([`Store::acked`]); only then does a node give it to its core.
//! - **ack gate**: [`Store::commit`] marks a client message's effects
//!   durable, atomically with the messages they send, at most once per seq.
//! - **ownership**: every [`Store::claim`] checks the resume token, raises
//!   the session's fence and makes the claiming node its owner; every write
//!   an owner makes names its fence, and a stale one is refused.
//! - **lost replies**: a commit or append made less than [`REPLY_TIME`]
//!   before the store goes down is carried out, but its caller is told it
//!   failed (the reply never came back): it must retry, and the retry must
//!   not apply it twice.
//! - **orphans**: the sessions of a node that died are expired once, a
//!   lease interval plus their grace after it died, unless a resume claims
//!   them first ([`Store::node_died`], [`Store::reap`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_proto::token::TokenCheck;
use tether_proto::{ReplayLimits, ResumeToken, SessionId, SessionRecord, TokenHash, TokenState};

/// A node's claim on a session: raised by every claim and by the death of
/// its owner, checked by every write the owner makes.
pub type Fence = u64;

/// A node, by the order it was started in (the first is 0).
pub type NodeId = u32;

/// How long a dead node's sessions wait for their clients beyond grace: the
/// cluster's lease renewal interval (its engine's default).
pub const LEASE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a reply takes to come back: a commit or append carried out
/// less than this before the store goes down is reported failed.
pub const REPLY_TIME: Duration = Duration::from_millis(100);

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The store is down: nothing was done; try again later.
    Unavailable,
    /// Another claim raised the session's fence: the caller no longer
    /// carries it.
    Fenced,
    /// The session is not in the store (it ended, expired, or never was).
    Gone,
}

/// A resume the store refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// No such session.
    Unknown,
    /// The token is not this session's.
    InvalidToken,
    /// The token was this session's and has been rotated away.
    TokenReused,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The message's effects are now durable; each effect's seq (None: its
    /// replay buffer is full and it was not stored).
    Applied(Vec<Option<u64>>),
    /// That seq was committed before: nothing was stored again.
    Already,
}

/// One session as the store keeps it.
#[derive(Debug, Clone)]
struct Stored {
    fence: Fence,
    owner: Option<NodeId>,
    tokens: TokenState,
    /// Highest client seq whose effects are committed.
    committed: u64,
    /// Highest server seq the client acknowledged (as the owner reported it).
    acked: u64,
    /// The seq the next server message gets.
    next: u64,
    /// Server messages `acked + 1 .. next`.
    outbox: VecDeque<Bytes>,
    bytes: usize,
    idle_timeout: Duration,
    peer_max_frame: u32,
    /// When this session, orphaned by its node's death, expires.
    orphan_until: Option<Instant>,
}

/// The store. Every operation is atomic (the simulator is single-threaded).
#[derive(Debug)]
pub struct Store {
    base: Instant,
    sessions: BTreeMap<SessionId, Stored>,
    /// When the store is down: `[start, end)`, absolute.
    down: Vec<(Instant, Instant)>,
    limits: ReplayLimits,
    grace: Duration,
    /// Operations refused because the store was down, or carried out but
    /// reported failed (lost replies).
    pub failures: u64,
    /// Commits and appends carried out whose replies were lost.
    pub lost_replies: u64,
    /// Every client message whose effects were committed, in order of
    /// commit: what the application applied, whatever it was told.
    pub applied: Vec<(SessionId, Bytes)>,
}

impl Store {
    /// An empty store that is down during `down` (offsets from `base`),
    /// bounding each session's outbox by `limits` as nodes bound their
    /// replay buffers, and keeping orphans for `grace`.
    pub fn new(base: Instant, down: &[(Duration, Duration)], limits: ReplayLimits, grace: Duration) -> Self {
        let down = down.iter().map(|(s, l)| (base + *s, base + *s + *l)).collect();
        Store {
            base,
            sessions: BTreeMap::new(),
            down,
            limits,
            grace,
            failures: 0,
            lost_replies: 0,
            applied: Vec::new(),
        }
    }

    /// True unless a [`crate::Fault::StoreDown`] holds at `now`.
    pub fn is_up(&self, now: Instant) -> bool {
        !self.down.iter().any(|(s, e)| now >= *s && now < *e)
    }

    fn reach(&mut self, now: Instant) -> Result<(), StoreError> {
        if self.is_up(now) {
            Ok(())
        } else {
            self.failures += 1;
            Err(StoreError::Unavailable)
        }
    }

    /// The reply to an operation carried out at `now` comes back, unless
    /// the store went down meanwhile.
    fn reply(&mut self, now: Instant) -> Result<(), StoreError> {
        if self.is_up(now + REPLY_TIME) {
            return Ok(());
        }
        self.failures += 1;
        self.lost_replies += 1;
        Err(StoreError::Unavailable)
    }

    fn owned(&mut self, now: Instant, id: SessionId, fence: Fence) -> Result<&mut Stored, StoreError> {
        self.reach(now)?;
        let s = self.sessions.get_mut(&id).ok_or(StoreError::Gone)?;
        if s.fence != fence {
            return Err(StoreError::Fenced);
        }
        Ok(s)
    }

    /// Records a new session owned by `node`; its first fence.
    pub fn open(&mut self, now: Instant, node: NodeId, r: &SessionRecord) -> Result<Fence, StoreError> {
        self.reach(now)?;
        let s = Stored {
            fence: 1,
            owner: Some(node),
            tokens: r.tokens.clone(),
            committed: r.committed,
            acked: r.acked,
            next: r.next_seq,
            outbox: r.unacked.iter().map(|(_, p)| p.clone()).collect(),
            bytes: r.unacked.iter().map(|(_, p)| p.len()).sum(),
            idle_timeout: r.idle_timeout,
            peer_max_frame: r.peer_max_frame,
            orphan_until: None,
        };
        self.sessions.insert(r.id, s);
        Ok(1)
    }

    /// A resume presented `token` for `id` to `node`: checks it (current or
    /// pending; retired is reuse), raises the fence, makes `node` the owner
    /// (the session is no longer an orphan) and returns the fence and the
    /// session's record, from which the node carries it on.
    pub fn claim(
        &mut self,
        now: Instant,
        node: NodeId,
        id: SessionId,
        token: &ResumeToken,
    ) -> Result<Result<(Fence, SessionRecord), ClaimRefused>, StoreError> {
        self.reach(now)?;
        let Some(s) = self.sessions.get_mut(&id) else { return Ok(Err(ClaimRefused::Unknown)) };
        match s.tokens.check(token) {
            TokenCheck::Valid => {}
            TokenCheck::Invalid => return Ok(Err(ClaimRefused::InvalidToken)),
            TokenCheck::Reused => return Ok(Err(ClaimRefused::TokenReused)),
        }
        s.tokens.presented(token);
        s.fence += 1;
        s.owner = Some(node);
        s.orphan_until = None;
        let unacked = s.outbox.iter().enumerate().map(|(i, p)| (s.acked + 1 + i as u64, p.clone())).collect();
        let record = SessionRecord {
            id,
            tokens: s.tokens.clone(),
            committed: s.committed,
            acked: s.acked,
            next_seq: s.next,
            unacked,
            idle_timeout: s.idle_timeout,
            peer_max_frame: s.peer_max_frame,
        };
        Ok(Ok((s.fence, record)))
    }

    /// The WELCOME of a claimed resume carries `fresh`: it is valid from now
    /// on, beside the others (the engine records it in the claim itself; the
    /// simulator does it right after the handshake, in the same instant).
    pub fn issued(&mut self, id: SessionId, fresh: &ResumeToken) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.tokens.issue(fresh);
        }
    }

    /// Commits the effects of client message `seq` of `id` (held with
    /// `fence`), whose payload was `message`: stores each effect for the
    /// session, numbered here, and marks `seq` committed, in one step (and
    /// logs it in [`Store::applied`]). A seq already committed stores
    /// nothing again. `effect(seq)` builds the effect given the seq it gets.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        now: Instant,
        id: SessionId,
        fence: Fence,
        seq: u64,
        message: &Bytes,
        effects: usize,
        mut effect: impl FnMut(u64) -> Bytes,
    ) -> Result<Committed, StoreError> {
        let limits = self.limits.clone();
        let s = self.owned(now, id, fence)?;
        if seq <= s.committed {
            return Ok(Committed::Already);
        }
        let seqs = (0..effects).map(|_| push(s, &limits, &mut effect)).collect();
        s.committed = seq;
        self.applied.push((id, message.clone()));
        self.reply(now)?;
        Ok(Committed::Applied(seqs))
    }

    /// Stores a message for `id`, from any node: its seq, or None if the
    /// session's replay buffer is full. `message(seq)` builds it.
    pub fn append(
        &mut self,
        now: Instant,
        id: SessionId,
        message: impl FnMut(u64) -> Bytes,
    ) -> Result<Option<u64>, StoreError> {
        self.reach(now)?;
        let limits = self.limits.clone();
        let s = self.sessions.get_mut(&id).ok_or(StoreError::Gone)?;
        let seq = push(s, &limits, message);
        self.reply(now)?;
        Ok(seq)
    }

    /// The stored messages of `id` from seq `from` on, in order.
    pub fn fetch(&mut self, now: Instant, id: SessionId, from: u64) -> Result<Vec<(u64, Bytes)>, StoreError> {
        self.reach(now)?;
        let s = self.sessions.get(&id).ok_or(StoreError::Gone)?;
        let skip = usize::try_from(from.saturating_sub(s.acked + 1)).unwrap_or(usize::MAX);
        Ok(s.outbox.iter().enumerate().skip(skip).map(|(i, p)| (s.acked + 1 + i as u64, p.clone())).collect())
    }

    /// The client acknowledged everything through `ack`: forget it.
    pub fn acked(&mut self, now: Instant, id: SessionId, fence: Fence, ack: u64) -> Result<(), StoreError> {
        let s = self.owned(now, id, fence)?;
        let ack = ack.min(s.next - 1);
        while s.acked < ack {
            if let Some(p) = s.outbox.pop_front() {
                s.bytes -= p.len();
            }
            s.acked += 1;
        }
        Ok(())
    }

    /// The client proved it holds `token` (a confirmation, PROTOCOL §5.4):
    /// it becomes the only valid one, as `confirm.lua` does.
    pub fn confirm(&mut self, now: Instant, id: SessionId, fence: Fence, token: TokenHash) -> Result<(), StoreError> {
        let s = self.owned(now, id, fence)?;
        let (current, pending, _) = s.tokens.parts();
        if !current.matches(&token) && pending.iter().any(|p| p.matches(&token)) {
            s.tokens.confirm(token);
        }
        Ok(())
    }

    /// The session ended on its owner: remove it.
    pub fn end(&mut self, now: Instant, id: SessionId, fence: Fence) -> Result<(), StoreError> {
        self.owned(now, id, fence)?;
        self.sessions.remove(&id);
        Ok(())
    }

    /// `node` died (its lease lapses): its sessions become orphans, their
    /// fences raised so nothing it wrote later could land, due to expire a
    /// lease interval plus grace after now. Returns them with that instant.
    pub fn node_died(&mut self, now: Instant, node: NodeId) -> Vec<(SessionId, Instant)> {
        let until = now + LEASE_INTERVAL + self.grace;
        let mut orphans = Vec::new();
        for (id, s) in &mut self.sessions {
            if s.owner == Some(node) {
                s.owner = None;
                s.fence += 1;
                s.orphan_until = Some(until);
                orphans.push((*id, until));
            }
        }
        orphans
    }

    /// Expires `id` if it is still an orphan due by `now` (and the store is
    /// up): removes it and returns the messages its client never
    /// acknowledged, for the application. None: claimed since, gone, or not
    /// due (down: try again later, see [`Store::is_up`]).
    pub fn reap(&mut self, now: Instant, id: SessionId) -> Option<Vec<Bytes>> {
        if !self.is_up(now) {
            return None;
        }
        let s = self.sessions.get(&id)?;
        if s.owner.is_some() || s.orphan_until.is_none_or(|u| u > now) {
            return None;
        }
        self.sessions.remove(&id).map(|s| s.outbox.into())
    }

    /// When the store is next up at or after `now`.
    pub fn up_at(&self, now: Instant) -> Instant {
        let mut t = now;
        while let Some((_, end)) = self.down.iter().find(|(s, e)| t >= *s && t < *e) {
            t = *end;
        }
        t
    }

    /// Whether `id` is in the store.
    pub fn has(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    /// The highest client seq committed for `id`.
    pub fn committed(&self, id: SessionId) -> Option<u64> {
        self.sessions.get(&id).map(|s| s.committed)
    }

    /// The seq the next message stored for `id` gets.
    pub fn next_seq(&self, id: SessionId) -> Option<u64> {
        self.sessions.get(&id).map(|s| s.next)
    }

    /// (fence, owner) of `id`.
    pub fn owner(&self, id: SessionId) -> Option<(Fence, Option<NodeId>)> {
        self.sessions.get(&id).map(|s| (s.fence, s.owner))
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Offset of `at` from the start of the run.
    pub fn t(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }
}

/// Numbers and keeps one message, within the replay bounds.
fn push(s: &mut Stored, limits: &ReplayLimits, mut message: impl FnMut(u64) -> Bytes) -> Option<u64> {
    let seq = s.next;
    let payload = message(seq);
    if s.outbox.len() >= limits.max_messages || s.bytes + payload.len() > limits.max_bytes {
        return None;
    }
    s.next += 1;
    s.bytes += payload.len();
    s.outbox.push_back(payload);
    Some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::Rng;

    fn at(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    fn setup() -> (Instant, Store, SessionId, ResumeToken) {
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let mut rng = Rng::from_seed(1);
        let token = ResumeToken::random(&mut rng);
        let id = SessionId::random(&mut rng);
        let down = [(Duration::from_secs(10), Duration::from_secs(5))];
        let mut store = Store::new(base, &down, ReplayLimits::server_default(), Duration::from_secs(60));
        let r = SessionRecord {
            id,
            tokens: TokenState::new(&token),
            committed: 0,
            acked: 0,
            next_seq: 1,
            unacked: Vec::new(),
            idle_timeout: Duration::from_secs(30),
            peer_max_frame: 1 << 16,
        };
        assert_eq!(store.open(base, 0, &r), Ok(1));
        (base, store, id, token)
    }

    #[test]
    fn a_commit_applies_once_and_numbers_its_effects() {
        let (base, mut store, id, _) = setup();
        let e = |seq: u64| Bytes::from(format!("e{seq}"));
        let m = Bytes::from("c1");
        assert_eq!(store.commit(base, id, 1, 1, &m, 2, e), Ok(Committed::Applied(vec![Some(1), Some(2)])));
        assert_eq!(store.commit(base, id, 1, 1, &m, 2, e), Ok(Committed::Already), "idempotent");
        assert_eq!(store.applied, vec![(id, m)], "applied once");
        assert_eq!(store.append(base, id, e), Ok(Some(3)));
        assert_eq!(store.committed(id), Some(1));
        let all: Vec<u64> = store.fetch(base, id, 2).expect("up").into_iter().map(|(s, _)| s).collect();
        assert_eq!(all, vec![2, 3]);
        store.acked(base, id, 1, 2).expect("owner");
        let rest = store.fetch(base, id, 1).expect("up");
        assert_eq!(rest, vec![(3, Bytes::from("e3"))]);
    }

    #[test]
    fn a_claim_checks_the_token_raises_the_fence_and_fences_the_old_owner_out() {
        let (base, mut store, id, token) = setup();
        let stranger = ResumeToken::random(&mut Rng::from_seed(2));
        assert_eq!(store.claim(base, 1, id, &stranger).map(|r| r.err()), Ok(Some(ClaimRefused::InvalidToken)));
        let (fence, record) = store.claim(base, 1, id, &token).expect("up").expect("valid token");
        assert_eq!((fence, record.next_seq), (2, 1));
        let m = Bytes::new();
        assert_eq!(store.commit(base, id, 1, 1, &m, 0, |_| Bytes::new()), Err(StoreError::Fenced));
        assert_eq!(store.commit(base, id, 2, 1, &m, 0, |_| Bytes::new()), Ok(Committed::Applied(vec![])));
        let unknown = SessionId::random(&mut Rng::from_seed(3));
        assert_eq!(store.claim(base, 1, unknown, &token).map(|r| r.err()), Ok(Some(ClaimRefused::Unknown)));
    }

    #[test]
    fn while_down_every_operation_fails_and_changes_nothing() {
        let (base, mut store, id, token) = setup();
        let down = at(base, 12);
        assert_eq!(store.commit(down, id, 1, 1, &Bytes::new(), 1, |_| Bytes::new()), Err(StoreError::Unavailable));
        assert_eq!(store.append(down, id, |_| Bytes::new()), Err(StoreError::Unavailable));
        assert!(matches!(store.claim(down, 1, id, &token), Err(StoreError::Unavailable)));
        assert_eq!(store.up_at(down), at(base, 15));
        assert_eq!((store.committed(id), store.next_seq(id), store.owner(id)), (Some(0), Some(1), Some((1, Some(0)))));
        assert_eq!(store.failures, 3);
        assert!(store.applied.is_empty());
    }

    #[test]
    fn an_operation_just_before_an_outage_is_carried_out_but_reported_failed() {
        let (base, mut store, id, _) = setup();
        let late = at(base, 10) - REPLY_TIME / 2;
        let m = Bytes::from("c1");
        assert_eq!(store.commit(late, id, 1, 1, &m, 1, |_| Bytes::from("e")), Err(StoreError::Unavailable));
        assert_eq!(store.append(late, id, |_| Bytes::from("s")), Err(StoreError::Unavailable));
        assert_eq!((store.committed(id), store.next_seq(id), store.lost_replies), (Some(1), Some(3), 2));
        // The retry after the outage finds it done, and does it no more.
        let after = at(base, 15);
        assert_eq!(store.commit(after, id, 1, 1, &m, 1, |_| Bytes::from("e")), Ok(Committed::Already));
        assert_eq!(store.applied.len(), 1);
    }

    #[test]
    fn orphans_expire_after_grace_unless_claimed() {
        let (base, mut store, id, token) = setup();
        store.append(base, id, |_| Bytes::from("s1")).expect("up");
        let orphans = store.node_died(at(base, 1), 0);
        assert_eq!(orphans, vec![(id, at(base, 1) + LEASE_INTERVAL + Duration::from_secs(60))]);
        assert_eq!(store.reap(at(base, 30), id), None, "not due");
        let due = orphans[0].1;
        // A copy of the store in which the client came back in time.
        let mut claimed = Store::new(base, &[], ReplayLimits::server_default(), Duration::from_secs(60));
        claimed.sessions = store.sessions.clone();
        claimed.claim(at(base, 30), 1, id, &token).expect("up").expect("valid");
        assert_eq!(claimed.reap(due, id), None, "a claimed session is no orphan");
        assert_eq!(store.reap(due, id), Some(vec![Bytes::from("s1")]));
        assert!(!store.has(id) && store.reap(due, id).is_none(), "expired once");
    }
}
