//! Application traffic and the exactly-once, in-order checker.
//!
//! Every message names its origin so any delivery can be attributed exactly:
//! client messages carry the client's *epoch* (how many sessions it ended
//! before this one) and an index; server messages carry the server session's
//! id and an index. Indices count from 0 per session and direction, so "next
//! delivered index == count delivered so far" is exactly-once-in-order.
//!
//! With a store-backed server the ledger follows the durable state, not a
//! node's memory, so it holds across node deaths: a client message counts
//! as delivered when the store commits its effects (a message a node took
//! and died before committing is not delivered until another node commits
//! it, and must never be committed twice), and a server message counts as
//! sent when the store numbers it (its index is its store seq - 1, whichever
//! node, or none, carried the session then).

use std::collections::HashMap;

use bytes::Bytes;
use tether_proto::SessionId;

/// Builds a client message.
pub fn client_msg(epoch: u32, idx: u32, pad: usize) -> Bytes {
    let mut v = Vec::with_capacity(9 + pad);
    v.push(b'C');
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(&idx.to_be_bytes());
    v.resize(9 + pad, 0xAB);
    Bytes::from(v)
}

/// Builds a server message.
pub fn server_msg(session: SessionId, idx: u32, pad: usize) -> Bytes {
    let mut v = Vec::with_capacity(21 + pad);
    v.push(b'S');
    v.extend_from_slice(session.as_bytes());
    v.extend_from_slice(&idx.to_be_bytes());
    v.resize(21 + pad, 0xCD);
    Bytes::from(v)
}

pub(crate) fn parse_client(b: &[u8]) -> Option<(u32, u32)> {
    if b.first() != Some(&b'C') || b.len() < 9 {
        return None;
    }
    let e = u32::from_be_bytes(b[1..5].try_into().ok()?);
    let i = u32::from_be_bytes(b[5..9].try_into().ok()?);
    Some((e, i))
}

fn parse_server(b: &[u8]) -> Option<(SessionId, u32)> {
    if b.first() != Some(&b'S') || b.len() < 21 {
        return None;
    }
    let s = SessionId::from_bytes(b[1..17].try_into().ok()?);
    let i = u32::from_be_bytes(b[17..21].try_into().ok()?);
    Some((s, i))
}

/// Everything sent, delivered and handed back, with violations found.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Client messages sent, per epoch.
    pub client_sent: HashMap<u32, u32>,
    /// Server messages sent (stored, with a store), per session.
    pub server_sent: HashMap<SessionId, u32>,
    /// Client messages delivered to the server app (committed, with a
    /// store), per server session.
    pub at_server: HashMap<SessionId, (u32, u32)>, // (epoch, count)
    /// Server messages delivered to the client app, per session.
    pub at_client: HashMap<SessionId, u32>,
    /// Epoch → the server session its messages arrived in.
    pub epoch_session: HashMap<u32, SessionId>,
    /// Sessions that ended, as seen by each side.
    pub ended_client: Vec<SessionId>,
    /// Sessions the server ended.
    pub ended_server: Vec<SessionId>,
    /// What went wrong, in order.
    pub violations: Vec<String>,
}

impl Ledger {
    /// A client message was delivered to the server application in session `s`.
    pub fn delivered_at_server(&mut self, s: SessionId, payload: &[u8]) {
        let Some((epoch, idx)) = parse_client(payload) else {
            return self.violations.push(format!("server got a foreign payload {payload:?}"));
        };
        if self.ended_server.contains(&s) {
            self.violations.push(format!("server delivered epoch {epoch} #{idx} in {s:?} after it ended"));
        }
        match self.epoch_session.get(&epoch) {
            Some(prev) if *prev != s => self.violations.push(format!(
                "epoch {epoch} delivered in two sessions {prev:?} and {s:?}: duplication across sessions"
            )),
            _ => {
                self.epoch_session.insert(epoch, s);
            }
        }
        let entry = self.at_server.entry(s).or_insert((epoch, 0));
        if entry.0 != epoch {
            self.violations.push(format!("session {s:?} mixes epochs {} and {epoch}", entry.0));
        }
        if idx != entry.1 {
            let what = if idx < entry.1 { "duplicate" } else { "gap/reorder" };
            self.violations.push(format!("server: {what}: epoch {epoch} #{idx} arrived, expected #{}", entry.1));
        }
        entry.1 = entry.1.max(idx + 1);
    }

    /// A server message was delivered to the client application while the
    /// client believed it was in session `current`.
    pub fn delivered_at_client(&mut self, current: Option<SessionId>, payload: &[u8]) {
        let Some((s, idx)) = parse_server(payload) else {
            return self.violations.push(format!("client got a foreign payload {payload:?}"));
        };
        if current != Some(s) {
            self.violations.push(format!("client delivered #{idx} of {s:?} while in {current:?}"));
        }
        if self.ended_client.contains(&s) {
            self.violations.push(format!("client delivered #{idx} of {s:?} after it ended"));
        }
        let n = self.at_client.entry(s).or_insert(0);
        if idx != *n {
            let what = if idx < *n { "duplicate" } else { "gap/reorder" };
            self.violations.push(format!("client: {what}: {s:?} #{idx} arrived, expected #{n}"));
        }
        *n = (*n).max(idx + 1);
    }

    /// The client handed back messages when epoch `epoch` ended: they must be
    /// exactly the tail of what it sent that the server may not have had.
    pub fn client_handed_back(&mut self, epoch: u32, unacked: &[Bytes]) {
        let sent = self.client_sent.get(&epoch).copied().unwrap_or(0);
        let delivered = self.epoch_session.get(&epoch).and_then(|s| self.at_server.get(s)).map_or(0, |e| e.1);
        self.check_tail("client", sent, delivered, unacked.iter().map(|b| parse_client(b).map(|(_, i)| i)));
    }

    /// The server handed back messages when session `s` ended.
    pub fn server_handed_back(&mut self, s: SessionId, unacked: &[Bytes]) {
        let sent = self.server_sent.get(&s).copied().unwrap_or(0);
        let delivered = self.at_client.get(&s).copied().unwrap_or(0);
        self.check_tail("server", sent, delivered, unacked.iter().map(|b| parse_server(b).map(|(_, i)| i)));
    }

    fn check_tail(&mut self, who: &str, sent: u32, delivered: u32, idxs: impl Iterator<Item = Option<u32>>) {
        let idxs: Vec<_> = idxs.collect();
        let Some(first) = idxs.first().copied().flatten() else {
            if delivered < sent && idxs.is_empty() {
                self.violations
                    .push(format!("{who} lost messages: sent {sent}, delivered {delivered}, none handed back"));
            }
            return;
        };
        let contiguous = idxs.iter().enumerate().all(|(k, i)| *i == Some(first + k as u32));
        if !contiguous || first + idxs.len() as u32 != sent {
            self.violations
                .push(format!("{who} handed back a non-tail: first #{first}, {} messages, sent {sent}", idxs.len()));
        }
        if first > delivered {
            self.violations
                .push(format!("{who} lost messages #{delivered}..#{first}: neither delivered nor handed back"));
        }
    }
}
