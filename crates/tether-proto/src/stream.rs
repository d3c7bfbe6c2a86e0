//! The reliable stream of each direction of a session: sequence numbers,
//! cumulative acks, the bounded replay buffer and de-duplication
//! (`docs/PROTOCOL.md` §7).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{ConfigError, SendError, SequenceError, SessionEnd};

/// What to do when the replay buffer is full and the application sends more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// `send` returns [`crate::SendError::BufferFull`]; nothing is lost and the
    /// caller decides (the client default: the caller is the user's app).
    RefuseSend,
    /// The session ends with close code 3001 and every unacknowledged message
    /// is handed back (the server default: a peer that stopped reading for
    /// longer than the buffer lasts must not pin memory).
    EndSession,
}

/// Bounds on the messages kept until the peer acknowledges them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayLimits {
    /// Most payload bytes kept.
    pub max_bytes: usize,
    /// Most messages kept.
    pub max_messages: usize,
    /// What happens beyond either bound.
    pub overflow: OverflowPolicy,
}

impl ReplayLimits {
    /// 1 MiB / 4096 messages, refusing further sends.
    pub fn client_default() -> Self {
        ReplayLimits { max_bytes: 1 << 20, max_messages: 4096, overflow: OverflowPolicy::RefuseSend }
    }

    /// 1 MiB / 4096 messages, ending the session on overflow.
    pub fn server_default() -> Self {
        ReplayLimits { max_bytes: 1 << 20, max_messages: 4096, overflow: OverflowPolicy::EndSession }
    }

    /// Checks the settings can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes == 0 || self.max_messages == 0 {
            return Err(ConfigError::new(
                "replay.max_bytes",
                "a zero bound would refuse every message",
                "set max_bytes and max_messages above 0",
            ));
        }
        Ok(())
    }
}

/// Acknowledgement pacing.
#[derive(Debug, Clone, PartialEq)]
pub struct AckConfig {
    /// Longest an ack is held back waiting to coalesce with more data.
    pub delay: Duration,
    /// Ack at once after this many unacknowledged messages.
    pub every: u32,
}

impl Default for AckConfig {
    /// 50 ms / 32 messages: far below any heartbeat timer, and frequent enough
    /// that a peer's 4096-message replay buffer never fills from lack of acks.
    fn default() -> Self {
        AckConfig { delay: Duration::from_millis(50), every: 32 }
    }
}

/// Why [`Outbound::admit`] did not queue a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Refused; the session goes on (the caller returns this error).
    Send(SendError),
    /// The buffer overflowed under [`OverflowPolicy::EndSession`]: the caller
    /// must end the session for this reason.
    EndSession(SessionEnd),
}

/// What both machines' `send` does, written once: admit the message
/// against the peer's frame limit and the replay bounds, write it if a
/// transport is up, or end the session on overflow under `EndSession`.
pub(crate) trait Sending {
    /// Why the session ended, if it has (`send` reports it).
    fn ended(&self) -> Option<&SessionEnd>;
    /// The outgoing stream and the peer's announced maximum frame.
    fn outbound(&mut self) -> (&mut Outbound, u32);
    /// Writes what is owed on the current transport, if any.
    fn flush(&mut self, now: Instant);
    /// Ends the session with CLOSE 3001 (attached) and hands back.
    fn overflow(&mut self, now: Instant, reason: SessionEnd);
}

/// The one `send`: see [`Sending`].
pub(crate) fn send(m: &mut impl Sending, now: Instant, payload: Bytes) -> Result<u64, SendError> {
    if let Some(reason) = m.ended() {
        return Err(SendError::SessionEnded(reason.clone()));
    }
    let (out, peer_max_frame) = m.outbound();
    match out.admit(payload, peer_max_frame) {
        Ok(seq) => {
            m.flush(now);
            Ok(seq)
        }
        Err(Refused::Send(e)) => Err(e),
        Err(Refused::EndSession(reason)) => {
            m.overflow(now, reason.clone());
            Err(SendError::SessionEnded(reason))
        }
    }
}

/// Refusal by [`Outbound::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow {
    pub messages: usize,
    pub bytes: usize,
}

/// Our messages: numbered, kept until acknowledged, replayed after a resume.
#[derive(Debug)]
pub(crate) struct Outbound {
    limits: ReplayLimits,
    /// Sequence number the next message gets.
    next_seq: u64,
    /// Unacknowledged messages, oldest first; seqs are contiguous.
    buf: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Highest seq the peer acknowledged.
    acked: u64,
    /// Highest seq written to the current transport.
    written: u64,
    /// Highest seq ever written, on any transport: no peer can have
    /// received more (a resume claiming more is a violation, not a release).
    written_ever: u64,
}

impl Outbound {
    pub(crate) fn new(limits: ReplayLimits) -> Self {
        Outbound { limits, next_seq: 1, buf: VecDeque::new(), bytes: 0, acked: 0, written: 0, written_ever: 0 }
    }

    /// Queues a message; it will be written when a transport is up.
    pub(crate) fn push(&mut self, payload: Bytes) -> Result<u64, Overflow> {
        if self.buf.len() >= self.limits.max_messages || self.bytes + payload.len() > self.limits.max_bytes {
            return Err(Overflow { messages: self.buf.len(), bytes: self.bytes });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += payload.len();
        self.buf.push_back((seq, payload));
        Ok(seq)
    }

    /// Queues an application message after checking it fits one frame of the
    /// peer's and the replay bounds, applying the overflow policy.
    pub(crate) fn admit(&mut self, payload: Bytes, peer_max_frame: u32) -> Result<u64, Refused> {
        let max = (peer_max_frame as usize).saturating_sub(9);
        if payload.len() > max {
            return Err(Refused::Send(SendError::TooLarge { len: payload.len(), max }));
        }
        self.push(payload).map_err(|o| match self.limits.overflow {
            OverflowPolicy::RefuseSend => Refused::Send(SendError::BufferFull { messages: o.messages, bytes: o.bytes }),
            OverflowPolicy::EndSession => {
                Refused::EndSession(SessionEnd::ReplayOverflow { messages: o.messages, bytes: o.bytes })
            }
        })
    }

    /// A stream rebuilt from a durable record: the peer acknowledged
    /// `acked`; `unacked` holds every later message, contiguous, and the
    /// next message gets `next_seq`. Any of them may have been written by
    /// the node that held the session before.
    pub(crate) fn restored(limits: ReplayLimits, acked: u64, unacked: Vec<(u64, Bytes)>, next_seq: u64) -> Self {
        let bytes = unacked.iter().map(|(_, p)| p.len()).sum();
        let written_ever = next_seq.saturating_sub(1).max(acked);
        let buf = unacked.into();
        Outbound { limits, next_seq: next_seq.max(acked + 1), buf, bytes, acked, written: acked, written_ever }
    }

    /// The messages not yet acknowledged, oldest first.
    pub(crate) fn unacked(&self) -> impl Iterator<Item = &(u64, Bytes)> {
        self.buf.iter()
    }

    /// Highest seq the peer acknowledged.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest sequence number assigned so far.
    pub(crate) fn last_assigned(&self) -> u64 {
        self.next_seq - 1
    }

    /// Length of the longest message waiting for acknowledgement.
    pub(crate) fn longest(&self) -> usize {
        self.buf.iter().map(|(_, p)| p.len()).max().unwrap_or(0)
    }

    pub(crate) fn buffered(&self) -> (usize, usize) {
        (self.buf.len(), self.bytes)
    }

    /// A cumulative ack arrived. Stale (smaller) acks are ignored: they can
    /// be overtaken by a resume handshake.
    pub(crate) fn on_ack(&mut self, ack: u64) -> Result<(), SequenceError> {
        // The peer cannot acknowledge what was never written to it: after a
        // resume `written` restarts at what the peer said it had received.
        if ack > self.written {
            return Err(SequenceError::AckBeyondSent { ack, sent: self.written });
        }
        while let Some((seq, p)) = self.buf.front() {
            if *seq > ack {
                break;
            }
            self.bytes -= p.len();
            crate::pop_release(&mut self.buf);
        }
        self.acked = self.acked.max(ack);
        Ok(())
    }

    /// A new transport starts after a resume in which the peer said it
    /// received everything up to `peer_received`: everything after is
    /// written again, in order.
    pub(crate) fn rewind(&mut self, peer_received: u64) -> Result<(), SequenceError> {
        if peer_received < self.acked {
            return Err(SequenceError::AckWentBack { claimed: peer_received, acked: self.acked });
        }
        if peer_received > self.written_ever {
            return Err(SequenceError::AckBeyondSent { ack: peer_received, sent: self.written_ever });
        }
        self.written = peer_received;
        self.on_ack(peer_received)
    }

    /// The next message to write on the current transport, if any.
    pub(crate) fn next_to_write(&mut self) -> Option<(u64, Bytes)> {
        let want = self.written + 1;
        let front = self.buf.front()?.0;
        let idx = usize::try_from(want.checked_sub(front)?).ok()?;
        let (seq, p) = self.buf.get(idx)?.clone();
        self.written = seq;
        self.written_ever = self.written_ever.max(seq);
        Some((seq, p))
    }

    /// Hands back every unacknowledged message and starts over from seq 1
    /// (the session ended; a new one numbers from scratch).
    pub(crate) fn take_unacked(&mut self) -> Vec<Bytes> {
        let out = self.buf.drain(..).map(|(_, p)| p).collect();
        let limits = self.limits.clone();
        *self = Outbound::new(limits);
        out
    }
}

/// How much of the peer's data a machine holds for its application before
/// the application has taken it (`docs/PROTOCOL.md` §7.4). Messages beyond
/// it are *deferred*: dropped unread and unacknowledged, so the peer keeps
/// them and writes them again after a resync (§7.8).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveWindow {
    /// Most messages (and PING/PONG payloads) held.
    pub max_messages: usize,
    /// Most payload bytes held.
    pub max_bytes: usize,
}

impl Default for ReceiveWindow {
    /// 4096 messages / 1 MiB: the default replay bounds of either side, so a
    /// peer with default settings never outruns it (acks are withheld until
    /// the application takes a message, and the peer stops at its bound).
    fn default() -> Self {
        ReceiveWindow { max_messages: 4096, max_bytes: 1 << 20 }
    }
}

impl ReceiveWindow {
    /// Checks the settings can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes == 0 || self.max_messages == 0 {
            return Err(ConfigError::new(
                "receive_window",
                "a zero bound would defer every message",
                "set max_bytes and max_messages above 0",
            ));
        }
        Ok(())
    }
}

/// The peer's messages: de-duplicated, held for the application in order,
/// acknowledged once the application has taken them.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    /// Highest seq accepted in order (held or taken).
    delivered: u64,
    /// Highest seq the application has taken; what acks carry.
    taken: u64,
    /// Highest seq we told the peer about.
    acked: u64,
    /// When an ack must go out at the latest.
    ack_due: Option<Instant>,
    /// DATA accepted since the last ack went out. Every arrival is answered
    /// by an ack within the pacing bounds even when the application takes
    /// nothing (the ack value then repeats): the peer's idle timer must
    /// keep hearing a receiver whose application is busy.
    arrivals: u32,
    /// Messages and payloads waiting for the application, and their bytes.
    held: (usize, usize),
    /// A DATA was deferred: everything after it is dropped until the peer
    /// replays it on a new transport.
    deferring: bool,
    /// Items of an ended session still waiting for the application (they
    /// come out first): taking them must not move this session's counts.
    stale: (usize, usize),
    /// With a durable store (a cluster), the highest seq whose effects the
    /// application committed: acks carry it instead of `taken` (the ack
    /// gate). None: acks carry what was taken.
    committed: Option<u64>,
}

/// What to do with a received DATA frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataVerdict {
    /// New: hand it to the application.
    Deliver,
    /// Already accepted (a replay overlap): drop it silently.
    Duplicate,
    /// The receive window is full: dropped unread, to be replayed.
    Deferred,
}

impl Inbound {
    /// What the handshake reports as `last_received`, and every ack: the
    /// messages the application took.
    pub(crate) fn last_taken(&self) -> u64 {
        match self.committed {
            Some(c) => c.min(self.taken),
            None => self.taken,
        }
    }

    /// The seq of the latest message the application took.
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }

    /// Acks from now on carry only what [`Inbound::commit`] reports.
    pub(crate) fn gate_on_commit(&mut self) {
        self.committed.get_or_insert(self.taken);
    }

    /// A session rebuilt from a durable record: everything through `seq`
    /// was taken, committed and acknowledged.
    pub(crate) fn restored(seq: u64, gated: bool) -> Self {
        Inbound { delivered: seq, taken: seq, acked: seq, committed: gated.then_some(seq), ..Inbound::default() }
    }

    /// The application made the effects of every message through `seq`
    /// durable (capped at what it took): acks may now cover them.
    pub(crate) fn commit(&mut self, now: Instant, seq: u64, cfg: &AckConfig) {
        let Some(c) = &mut self.committed else { return };
        let seq = seq.min(self.taken);
        if seq <= *c {
            return;
        }
        *c = seq;
        let at_once = seq - self.acked >= u64::from(cfg.every);
        self.owe_ack(now, at_once, cfg);
    }

    /// True while the window has room for one more item of `len` bytes.
    pub(crate) fn has_room(&self, window: &ReceiveWindow, len: usize) -> bool {
        self.held.0 < window.max_messages && self.held.1 + len <= window.max_bytes
    }

    pub(crate) fn on_data(
        &mut self,
        now: Instant,
        seq: u64,
        len: usize,
        window: &ReceiveWindow,
        cfg: &AckConfig,
    ) -> Result<DataVerdict, SequenceError> {
        if seq <= self.delivered {
            // Make sure the peer learns it can stop replaying.
            self.ack_due.get_or_insert(now + cfg.delay);
            return Ok(DataVerdict::Duplicate);
        }
        if self.deferring {
            // Still answered: the peer must keep hearing us (a repeat ack).
            self.owe_ack(now, false, cfg);
            return Ok(DataVerdict::Deferred);
        }
        if seq != self.delivered + 1 {
            return Err(SequenceError::Gap { expected: self.delivered + 1, got: seq });
        }
        // At least one message is always held, whatever its size: one larger
        // than the whole window would otherwise be deferred and replayed
        // forever.
        if self.held.0 > 0 && !self.has_room(window, len) {
            self.deferring = true;
            self.owe_ack(now, false, cfg);
            return Ok(DataVerdict::Deferred);
        }
        self.delivered = seq;
        self.hold(len);
        self.arrivals = self.arrivals.saturating_add(1);
        self.owe_ack(now, self.arrivals >= cfg.every, cfg);
        Ok(DataVerdict::Deliver)
    }

    /// An item (a message or a PING/PONG payload) waits for the application.
    pub(crate) fn hold(&mut self, len: usize) {
        self.held.0 += 1;
        self.held.1 += len;
    }

    /// The application took a held item (`message`: a DATA, so acks move).
    pub(crate) fn took(&mut self, now: Instant, len: usize, message: bool, cfg: &AckConfig) {
        if self.stale.0 > 0 {
            self.stale.0 -= 1;
            self.stale.1 = self.stale.1.saturating_sub(len);
            return;
        }
        self.held.0 = self.held.0.saturating_sub(1);
        self.held.1 = self.held.1.saturating_sub(len);
        if !message {
            return;
        }
        self.taken += 1;
        if self.committed.is_none() {
            self.owe_ack(now, self.taken - self.acked >= u64::from(cfg.every), cfg);
        }
    }

    /// An ack is owed: now, or within the pacing delay.
    fn owe_ack(&mut self, now: Instant, at_once: bool, cfg: &AckConfig) {
        if at_once {
            self.ack_due = Some(now);
        } else {
            self.ack_due.get_or_insert(now + cfg.delay);
        }
    }

    /// True once messages were deferred and the application has taken
    /// everything held: time to have the peer replay them (§7.8).
    pub(crate) fn resync_due(&self) -> bool {
        self.deferring && self.held.0 == 0
    }

    /// When an ACK frame must be sent, if one is owed.
    pub(crate) fn ack_due(&self) -> Option<Instant> {
        self.ack_due
    }

    /// The ack value is going out (in ACK, PING or PONG).
    pub(crate) fn ack_sent(&mut self) -> u64 {
        self.acked = self.last_taken();
        self.arrivals = 0;
        self.ack_due = None;
        self.acked
    }

    /// A handshake carried `carried` (our `last_taken` when it was built) to
    /// the peer, which now replays everything after it on the new transport:
    /// duplicates of held messages are dropped by the `delivered` rule,
    /// deferred ones arrive again. What the application took since the
    /// handshake was built is acknowledged at once.
    pub(crate) fn handshake_acked(&mut self, now: Instant, carried: u64) {
        self.acked = carried;
        self.arrivals = 0;
        self.ack_due = (self.last_taken() > carried).then_some(now);
        self.deferring = false;
    }

    /// Forget everything (new session). Items of the old session still
    /// waiting for the application are remembered as stale.
    pub(crate) fn reset(&mut self) {
        let stale = (self.stale.0 + self.held.0, self.stale.1 + self.held.1);
        let committed = self.committed.map(|_| 0);
        *self = Inbound { stale, committed, ..Inbound::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn replay_after_rewind_resends_exactly_the_unacknowledged_tail() {
        let mut o = Outbound::new(ReplayLimits::client_default());
        for s in ["a", "b", "c", "d"] {
            o.push(b(s)).expect("room");
        }
        let written: Vec<_> = std::iter::from_fn(|| o.next_to_write()).map(|(s, _)| s).collect();
        assert_eq!(written, [1, 2, 3, 4]);
        o.on_ack(1).expect("ack");
        o.rewind(2).expect("rewind");
        let again: Vec<_> = std::iter::from_fn(|| o.next_to_write()).map(|(s, _)| s).collect();
        assert_eq!(again, [3, 4]);
        assert_eq!(o.rewind(1), Err(SequenceError::AckWentBack { claimed: 1, acked: 2 }));
        assert_eq!(o.on_ack(9), Err(SequenceError::AckBeyondSent { ack: 9, sent: 4 }));
        o.push(b("e")).expect("room");
        assert_eq!(o.on_ack(5), Err(SequenceError::AckBeyondSent { ack: 5, sent: 4 }), "queued but never written");
        assert_eq!(
            o.rewind(5),
            Err(SequenceError::AckBeyondSent { ack: 5, sent: 4 }),
            "a resume cannot claim it either"
        );
    }

    #[test]
    fn bounds_refuse_by_count_and_by_bytes() {
        let mut o =
            Outbound::new(ReplayLimits { max_bytes: 10, max_messages: 3, overflow: OverflowPolicy::RefuseSend });
        o.push(b("12345")).expect("room");
        assert!(o.push(b("123456")).is_err(), "11 bytes > 10");
        o.push(b("1")).expect("room");
        o.push(b("1")).expect("room");
        assert_eq!(o.push(b("")), Err(Overflow { messages: 3, bytes: 7 }));
        o.next_to_write();
        o.on_ack(1).expect("ack");
        o.push(b("1234")).expect("room after ack");
    }

    #[test]
    fn inbound_drops_duplicates_and_refuses_gaps() {
        let t = crate::test_epoch();
        let cfg = AckConfig::default();
        let w = ReceiveWindow::default();
        let mut i = Inbound::default();
        assert_eq!(i.on_data(t, 1, 0, &w, &cfg), Ok(DataVerdict::Deliver));
        assert_eq!(i.ack_due(), Some(t + cfg.delay), "every arrival is answered, taken or not");
        assert_eq!(i.ack_sent(), 0, "but the ack covers only what the application took");
        i.took(t, 0, true, &cfg);
        assert_eq!(i.ack_sent(), 1);
        assert_eq!(i.on_data(t, 1, 0, &w, &cfg), Ok(DataVerdict::Duplicate));
        assert_eq!(i.on_data(t, 3, 0, &w, &cfg), Err(SequenceError::Gap { expected: 2, got: 3 }));
        assert_eq!(i.ack_due(), Some(t + cfg.delay));
        assert_eq!(i.ack_sent(), 1);
        assert_eq!(i.ack_due(), None);
    }

    #[test]
    fn a_full_window_defers_until_everything_held_is_taken() {
        let t = crate::test_epoch();
        let cfg = AckConfig::default();
        let w = ReceiveWindow { max_messages: 2, max_bytes: 100 };
        let mut i = Inbound::default();
        assert_eq!(i.on_data(t, 1, 10, &w, &cfg), Ok(DataVerdict::Deliver));
        assert_eq!(i.on_data(t, 2, 10, &w, &cfg), Ok(DataVerdict::Deliver));
        assert_eq!(i.on_data(t, 3, 10, &w, &cfg), Ok(DataVerdict::Deferred));
        assert_eq!(i.on_data(t, 4, 10, &w, &cfg), Ok(DataVerdict::Deferred), "no gap error while deferring");
        assert!(!i.resync_due());
        i.took(t, 10, true, &cfg);
        assert!(!i.resync_due(), "one still held");
        i.took(t, 10, true, &cfg);
        assert!(i.resync_due());
        assert_eq!(i.ack_sent(), 2, "acks cover what was taken");
        i.handshake_acked(t, 2);
        assert!(!i.resync_due());
        assert_eq!(i.on_data(t, 3, 10, &w, &cfg), Ok(DataVerdict::Deliver), "the replay is accepted");
        let bytes = ReceiveWindow { max_messages: 10, max_bytes: 15 };
        let mut j = Inbound::default();
        assert_eq!(j.on_data(t, 1, 10, &bytes, &cfg), Ok(DataVerdict::Deliver));
        assert_eq!(j.on_data(t, 2, 10, &bytes, &cfg), Ok(DataVerdict::Deferred), "25 bytes > 15");
        // One message larger than the whole window is held when nothing else is.
        let mut k = Inbound::default();
        assert_eq!(k.on_data(t, 1, 100, &bytes, &cfg), Ok(DataVerdict::Deliver));
        assert_eq!(k.on_data(t, 2, 1, &bytes, &cfg), Ok(DataVerdict::Deferred));
    }

    #[test]
    fn items_of_an_ended_session_do_not_move_the_next_sessions_acks() {
        let t = crate::test_epoch();
        let cfg = AckConfig::default();
        let w = ReceiveWindow::default();
        let mut i = Inbound::default();
        for seq in 1..=3 {
            assert_eq!(i.on_data(t, seq, 1, &w, &cfg), Ok(DataVerdict::Deliver));
        }
        i.reset(); // the session ended with 3 messages untaken
        assert_eq!(i.on_data(t, 1, 1, &w, &cfg), Ok(DataVerdict::Deliver));
        for _ in 0..3 {
            i.took(t, 1, true, &cfg); // the old session's messages come out first
        }
        assert_eq!(i.ack_sent(), 0);
        i.took(t, 1, true, &cfg);
        assert_eq!(i.ack_sent(), 1);
    }
}
