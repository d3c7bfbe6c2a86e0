//! A store-backed server node: what the cluster's runtime does around its
//! core (tether-runtime's `server/handshake.rs` and `server/stored.rs`),
//! and what its application does, in the simulator's single thread.
//!
//! - **handshake**: a resume first claims its session from the [`crate::store::Store`]
//!   (token check, fence raised, this node the owner) and the node carries
//!   it on from the record ([`Server::restore`]), replacing any copy it
//!   held; the fresh token of the WELCOME is recorded in the same instant.
//!   A new session is recorded ([`crate::store::Store::open`]) as its WELCOME goes out.
//!   While the store is down both are refused (REJECT Overloaded with a
//!   retry-after).
//! - **ack gate**: every client message the application takes is committed
//!   in the store (with the reply it sends, for every
//!   [`super::StoreConfig::echo_every`]-th), then [`Server::commit`]ted: only
//!   then may acks cover it. While the store is down, taken messages wait
//!   and are committed in order when it returns; a commit whose reply was
//!   lost is retried, found done, and what it stored is fetched.
//! - the ledger follows the store, whatever the application was told: a
//!   client message is delivered when the store commits it, a server
//!   message is sent when the store numbers it.
//! - **send gate**: the application's own messages are numbered in the
//!   store ([`crate::store::Store::append`]) and only then given to the core
//!   ([`Server::send_at`]); a message the core cannot take yet is fetched.
//! - the client's acks are written back to the store ([`crate::store::Store::acked`]),
//!   and a session's end removes it ([`crate::store::Store::end`]).
//! - **node death**: the node's memory (its core, and everything here) is
//!   gone; its sessions become orphans in the store, expired a lease
//!   interval plus grace later unless their clients resume first.
//!
//! Every server frame carrying an ack is checked against the store: no ack
//! may cover a client message whose effects are not committed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_proto::{
    Frame, Refusal, RejectReason, SendError, Server, SessionEnd, SessionEvent, SessionId, TokenHash, Transmit,
    TransportId,
};

use super::{Ev, Sim};
use crate::check::{parse_client, server_msg};
use crate::net::Dir;
use crate::store::{ClaimRefused, Committed, Fence, NodeId, StoreError};

/// What the node alive now holds in memory beside its core: all of it is
/// lost when the node dies.
#[derive(Debug, Default)]
pub(super) struct Node {
    /// Which node this is (the first is 0).
    id: NodeId,
    /// Connections are refused until then (a node starting up).
    up_at: Option<Instant>,
    /// The sessions this node carries, with the fence it holds for each.
    fences: BTreeMap<SessionId, Fence>,
    /// The highest ack written to the store, per session.
    stored_ack: BTreeMap<SessionId, u64>,
    /// The token the client proved it holds, as written to the store.
    stored_token: BTreeMap<SessionId, TokenHash>,
    /// Client messages taken but not committed yet, oldest first.
    pending: VecDeque<Taken>,
    /// Sessions that ended here but are still in the store.
    ends: Vec<(SessionId, Fence)>,
    /// Sessions whose stored messages the core may lack (a fetch failed).
    fill: BTreeSet<SessionId>,
    /// A retry of failed store operations is scheduled.
    retrying: bool,
}

impl Node {
    /// True while the node is starting and refuses connections.
    pub(super) fn down(&self, now: Instant) -> bool {
        self.up_at.is_some_and(|u| now < u)
    }
}

/// A client message the application took and must commit.
#[derive(Debug)]
struct Taken {
    session: SessionId,
    fence: Fence,
    seq: u64,
    payload: Bytes,
}

impl Sim {
    fn t_log(&mut self, what: String) {
        let t = self.t();
        self.node_log.push((t, what));
    }

    /// The first frame of a transport to a store-backed node. Returns
    /// whether the core gets it (false: refused here, the transport closes).
    pub(super) fn durable_handshake(&mut self, stid: TransportId, bytes: &[u8]) -> bool {
        let now = self.now;
        let (Some(store), Some(cfg)) = (self.store.as_mut(), self.cfg.store.as_ref()) else { return true };
        let refuse_for = cfg.refuse_for;
        let Ok(Frame::Hello(hello)) = Frame::decode(bytes, self.cfg.server.max_frame) else { return true };
        let Some(r) = hello.resume else {
            // A new session is recorded as its WELCOME goes out: refused
            // now if the store cannot take it.
            if !store.is_up(now) {
                self.stats.store_refusals += 1;
                self.server.set_refusal(Some((RejectReason::Overloaded, refuse_for)));
            }
            return true;
        };
        let id = r.session_id;
        if self.node.ends.iter().any(|(s, _)| *s == id) {
            // Ended here; the store has not recorded it yet.
            return self.refuse(stid, Refusal::resume_failed(RejectReason::UnknownSession));
        }
        match store.claim(now, self.node.id, id, &r.token) {
            Err(_) => {
                self.stats.store_refusals += 1;
                let msg = "the session store is unavailable; retry after the delay given";
                self.refuse(stid, Refusal::reject(RejectReason::Overloaded, refuse_for, msg))
            }
            Ok(Err(why)) => {
                self.t_log(format!("resume of {id:?} refused by the store: {why:?}"));
                let reason = match why {
                    ClaimRefused::Unknown => RejectReason::UnknownSession,
                    ClaimRefused::InvalidToken => RejectReason::InvalidToken,
                    ClaimRefused::TokenReused => RejectReason::TokenReused,
                };
                self.refuse(stid, Refusal::resume_failed(reason))
            }
            Ok(Ok((fence, record))) => {
                let acked = record.acked;
                // Whatever this node held of the session is replaced.
                self.node.pending.retain(|t| t.session != id);
                if let Err(e) = self.server.restore(now, record) {
                    self.ledger.violations.push(format!("the store's record cannot be restored: {e}"));
                    return self.refuse(stid, Refusal::resume_failed(RejectReason::UnknownSession));
                }
                self.node.fences.insert(id, fence);
                self.node.stored_ack.insert(id, acked);
                if let Some(s) = self.server.session(id) {
                    self.node.stored_token.insert(id, s.token());
                }
                self.node.fill.remove(&id);
                self.stats.claims += 1;
                let node = self.node.id;
                self.t_log(format!("node {node} claims {id:?} from the store (fence {fence})"));
                true
            }
        }
    }

    /// Refuses a handshake the core never sees: the refusal's frame, then
    /// the transport closes.
    fn refuse(&mut self, stid: TransportId, r: Refusal) -> bool {
        if let Some(frame) = r.frame {
            self.server_transmit(Transmit::Send { transport: stid, frame });
        }
        self.server_transmit(Transmit::Close { transport: stid, flush: true });
        self.server.handle_transport_closed(self.now, stid);
        false
    }

    /// A frame a store-backed node writes on transport `c`: a WELCOME
    /// records the session (new) or its fresh token (resumed); any ack is
    /// checked against what the store committed.
    pub(super) fn durable_frame(&mut self, c: u64, frame: &Frame) {
        let now = self.now;
        let Some(store) = self.store.as_mut() else { return };
        let ack = match frame {
            Frame::Welcome(w) => {
                if let Some(l) = self.links.get_mut(&c) {
                    l.session = Some(w.session_id);
                }
                let id = w.session_id;
                if w.resumed {
                    store.issued(id, &w.token);
                } else if let Some(record) = self.server.session(id).map(|s| s.record()) {
                    match store.open(now, self.node.id, &record) {
                        Ok(fence) => {
                            self.node.fences.insert(id, fence);
                            self.node.stored_ack.insert(id, 0);
                            self.node.stored_token.insert(id, record.tokens.parts().0);
                        }
                        Err(e) => self.ledger.violations.push(format!("a new session was not recorded: {e:?}")),
                    }
                }
                w.last_received
            }
            Frame::Ack { ack } | Frame::Ping { ack, .. } | Frame::Pong { ack, .. } => *ack,
            _ => return,
        };
        let Some(s) = self.links.get(&c).and_then(|l| l.session) else { return };
        if let Some(committed) = store.committed(s).filter(|c| ack > *c) {
            let t = self.t();
            self.ledger.violations.push(format!(
                "ack gate: at {t:?} the server acknowledged client #{ack} of {s:?}, but the store committed only #{committed}"
            ));
        }
    }

    /// The application took a client message: commit it.
    pub(super) fn took(&mut self, session: SessionId, payload: Bytes) {
        let seq = self.server.session(session).map(|s| s.last_taken());
        let (Some(seq), Some(fence)) = (seq, self.node.fences.get(&session).copied()) else {
            let why = format!("a message of {session:?} was taken on a node that does not carry it");
            return self.ledger.violations.push(why);
        };
        self.node.pending.push_back(Taken { session, fence, seq, payload });
        self.commit_pending();
    }

    /// Commits taken messages in order, until the store refuses.
    fn commit_pending(&mut self) {
        let now = self.now;
        let echo = self.cfg.store.as_ref().map_or(0, |c| c.echo_every);
        while let Some(t) = self.node.pending.front() {
            let (s, fence, seq) = (t.session, t.fence, t.seq);
            if self.node.fences.get(&s) != Some(&fence) {
                self.node.pending.pop_front(); // another copy carries it on
                continue;
            }
            let idx = parse_client(&t.payload).map_or(0, |(_, i)| i);
            let live = self.server.session(s).is_some_and(|x| !x.is_ended());
            let effects = usize::from(live && echo > 0 && idx % echo == echo - 1);
            let pad = (idx % 17) as usize;
            let Some(store) = self.store.as_mut() else { return };
            let r = store.commit(now, s, fence, seq, &t.payload, effects, |n| server_msg(s, (n - 1) as u32, pad));
            self.account(s);
            match r {
                Ok(done) => {
                    self.node.pending.pop_front();
                    match done {
                        Committed::Applied(seqs) => {
                            for n in seqs {
                                match n {
                                    Some(n) => self.offer(s, n, server_msg(s, (n - 1) as u32, pad)),
                                    None => self.stats.refused.1 += 1,
                                }
                            }
                        }
                        // An earlier attempt was carried out but its reply
                        // lost: what it stored is fetched.
                        Committed::Already => {
                            self.stats.recommits += 1;
                            self.fill(s);
                        }
                    }
                    self.server.commit(now, s, seq);
                }
                Err(StoreError::Unavailable) => return self.retry_later(),
                Err(e) => {
                    self.node.pending.pop_front();
                    self.ledger.violations.push(format!("commit of {s:?} #{seq} refused: {e:?}"));
                }
            }
        }
    }

    /// The server application sends a message: numbered in the store, then
    /// given to the core if this node carries the session (else the node
    /// that claims it next gets it from its record).
    pub(super) fn store_send(&mut self) {
        let now = self.now;
        let Some(s) = self.server_session else { return };
        if self.server.session(s).is_some_and(|x| x.is_ended()) {
            return;
        }
        let pad = self.app_rng.below_inclusive(self.cfg.max_pad as u64) as usize;
        let Some(store) = self.store.as_mut() else { return };
        let r = store.append(now, s, |n| server_msg(s, (n - 1) as u32, pad));
        self.account(s);
        match r {
            Ok(Some(n)) => self.offer(s, n, server_msg(s, (n - 1) as u32, pad)),
            Ok(None) => self.stats.refused.1 += 1,
            Err(StoreError::Unavailable) => {
                // Perhaps stored all the same (a lost reply): the retry
                // fetches whatever the core lacks.
                self.stats.refused.1 += 1;
                if self.node.fences.contains_key(&s) {
                    self.node.fill.insert(s);
                    self.retry_later();
                }
            }
            Err(_) => {} // ended: the end carries the hand-back
        }
    }

    /// The ledger follows the store, whatever the application was told:
    /// every client message committed is applied, every server message
    /// numbered is sent.
    fn account(&mut self, s: SessionId) {
        let Some(store) = self.store.as_mut() else { return };
        let applied = std::mem::take(&mut store.applied);
        if let Some(next) = store.next_seq(s) {
            let sent = self.ledger.server_sent.entry(s).or_insert(0);
            *sent = (*sent).max((next - 1) as u32);
        }
        for (id, message) in applied {
            self.ledger.delivered_at_server(id, &message);
        }
    }

    /// Message `seq` of `s` is in the store: it goes to the core if this
    /// node carries the session.
    fn offer(&mut self, s: SessionId, seq: u64, payload: Bytes) {
        if !self.node.fences.contains_key(&s) {
            return;
        }
        match self.server.send_at(self.now, s, seq, payload) {
            Ok(_) => {}
            Err(SendError::OutOfOrder { .. }) => self.fill(s),
            Err(e) => self.ledger.violations.push(format!("a stored message of {s:?} was refused by the core: {e}")),
        }
    }

    /// Gives the core the stored messages it lacks.
    fn fill(&mut self, s: SessionId) {
        let now = self.now;
        let from = self.server.session(s).filter(|x| !x.is_ended()).map(|x| x.next_seq());
        let (Some(store), Some(from)) = (self.store.as_mut(), from) else { return };
        if store.next_seq(s).is_none_or(|next| next <= from) {
            self.node.fill.remove(&s);
            return; // nothing missing (and nothing to ask the store)
        }
        match store.fetch(now, s, from) {
            Ok(messages) => {
                self.node.fill.remove(&s);
                for (seq, p) in messages {
                    if let Err(e) = self.server.send_at(now, s, seq, p) {
                        self.ledger.violations.push(format!("a fetched message of {s:?} was refused: {e}"));
                        break;
                    }
                }
            }
            Err(StoreError::Unavailable) => {
                self.node.fill.insert(s);
                self.retry_later();
            }
            Err(_) => {}
        }
    }

    /// The core ended session `s`: nothing taken of it is committed any
    /// more, and the store forgets it.
    pub(super) fn durable_end(&mut self, s: SessionId) {
        self.node.pending.retain(|t| t.session != s);
        self.node.stored_ack.remove(&s);
        self.node.stored_token.remove(&s);
        if let Some(fence) = self.node.fences.remove(&s) {
            self.node.ends.push((s, fence));
            self.write_ends();
        }
    }

    fn write_ends(&mut self) {
        let now = self.now;
        let Some(store) = self.store.as_mut() else { return };
        let mut failed = false;
        self.node.ends.retain(|(s, fence)| match store.end(now, *s, *fence) {
            Err(StoreError::Unavailable) => {
                failed = true;
                true
            }
            _ => false,
        });
        if failed {
            self.retry_later();
        }
    }

    /// Writes the client's acks, and the token it proved it holds, back to
    /// the store (after every drain), as the runtime does.
    pub(super) fn store_acks(&mut self) {
        let now = self.now;
        let Some(store) = self.store.as_mut() else { return };
        let mut failed = false;
        for (s, fence) in &self.node.fences {
            let Some(token) = self.server.session(*s).map(|x| x.token()) else { continue };
            if self.node.stored_token.get(s).is_some_and(|t| t.matches(&token)) {
                continue;
            }
            if !store.is_up(now) {
                failed = true;
                continue;
            }
            match store.confirm(now, *s, *fence, token) {
                Ok(()) => {
                    self.node.stored_token.insert(*s, token);
                }
                Err(e) => self.ledger.violations.push(format!("token of {s:?} not written: {e:?}")),
            }
        }
        for (s, fence) in &self.node.fences {
            let Some(acked) = self.server.session(*s).map(|x| x.acked()) else { continue };
            let stored = self.node.stored_ack.entry(*s).or_insert(0);
            if acked <= *stored {
                continue;
            }
            if !store.is_up(now) {
                failed = true;
                continue;
            }
            match store.acked(now, *s, *fence, acked) {
                Ok(()) => *stored = acked,
                Err(e) => self.ledger.violations.push(format!("ack of {s:?} not written: {e:?}")),
            }
        }
        if failed {
            self.retry_later();
        }
    }

    fn retry_later(&mut self) {
        let Some(cfg) = self.cfg.store.as_ref() else { return };
        if !self.node.retrying {
            self.node.retrying = true;
            let at = self.now + cfg.retry;
            self.push(at, Ev::StoreRetry(self.node.id));
        }
    }

    pub(super) fn store_retry(&mut self, node: NodeId) {
        if node != self.node.id {
            return; // scheduled by a node that died since
        }
        self.node.retrying = false;
        self.commit_pending();
        self.write_ends();
        for s in std::mem::take(&mut self.node.fill) {
            self.fill(s);
        }
        self.store_acks();
    }

    /// The node dies: its memory is gone, every transport to it breaks, and
    /// a new node takes its place (accepting connections after `down`).
    pub(super) fn node_death(&mut self, down: Duration, reset: bool) {
        let now = self.now;
        let delay = self.cfg.path.delay;
        let old = self.node.id;
        self.stats.node_deaths += 1;
        let how = if reset { "killed (its connections are reset)" } else { "gone (nothing answers)" };
        self.t_log(format!("node {old} {how}; node {} starts, accepting in {down:?}", old + 1));
        // A reset is lost in a blackhole: the client's heartbeat must notice.
        let rst = reset && self.path.blocked_until(Dir::Down, now).is_none();
        let mut resets = Vec::new();
        for (c, l) in &mut self.links {
            if l.stid.take().is_none() {
                continue;
            }
            l.server_open = false;
            l.dead = true;
            if rst && !l.reset && l.client_open {
                l.reset = true;
                resets.push(*c);
            }
        }
        for c in resets {
            self.push(now + delay, Ev::FinToClient(c));
        }
        self.by_stid.clear();
        self.node = Node { id: old + 1, up_at: (!down.is_zero()).then_some(now + down), ..Node::default() };
        self.server = Server::new(self.cfg.server.clone(), self.node_rng.fork()).expect("server config must be valid");
        let orphans = self.store.as_mut().map(|s| s.node_died(now, old)).unwrap_or_default();
        for (id, until) in orphans {
            self.push(until, Ev::Reap(id));
        }
    }

    /// A dead node's session is due: expired in the store unless its
    /// client resumed it since; the application gets the end and what the
    /// client never acknowledged.
    pub(super) fn reap(&mut self, id: SessionId) {
        let now = self.now;
        let Some(store) = self.store.as_mut() else { return };
        if !store.is_up(now) {
            let at = store.up_at(now);
            return self.push(at, Ev::Reap(id));
        }
        let Some(unacked) = store.reap(now, id) else { return };
        self.t_log(format!("orphan {id:?} expired in the store; {} unacked handed back", unacked.len()));
        let e = SessionEvent::Ended { reason: SessionEnd::Expired, unacked };
        self.server_event(id, e);
    }
}
