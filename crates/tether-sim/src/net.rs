//! The simulated path between one client and one server.
//!
//! Transports are TCP-like: reliable and ordered while they live. Packet loss
//! therefore shows up as delay (a retransmission after an RTO that doubles),
//! a blackhole as frames held until the path returns (then delivered after a
//! further retransmission wait, if both ends still exist), and a reset as both
//! ends being told the transport closed. New connections fail at once while
//! the client's link is down (a local signal exists) and hang while the path
//! is blackholed (no signal).

use std::time::{Duration, Instant};

use tether_proto::Rng;

/// Which way frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

/// One fault in a schedule; times are offsets from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Both directions blackholed. With `link_signal`, the client's own link
    /// is down: connects fail at once and the client is told when the link
    /// goes down and comes back (a cable pull); without, nothing tells it
    /// (an upstream router drops everything).
    Outage {
        /// Start.
        start: Duration,
        /// Length.
        len: Duration,
        /// Whether the client gets link-down/link-up signals.
        link_signal: bool,
    },
    /// One direction blackholed (frames held, then delivered).
    Stall {
        /// Start.
        start: Duration,
        /// Length.
        len: Duration,
        /// Which way.
        dir: Dir,
    },
    /// Random packet loss, turned into retransmission delay.
    Loss {
        /// Start.
        start: Duration,
        /// Length.
        len: Duration,
        /// Loss probability client → server.
        up: f64,
        /// Loss probability server → client.
        down: f64,
    },
    /// Every live transport is reset (both ends told it closed).
    Kill {
        /// When.
        at: Duration,
    },
    /// Reset the transport shortly after each of the first `count` resumes,
    /// while the replay is still in flight.
    KillDuringReplay {
        /// How many resumes get a kill.
        count: u32,
        /// How long after the resume.
        after: Duration,
    },
    /// A NAT that forgets a flow idle for `timeout`: the flow's next packet is
    /// dropped, and so is everything after it on that transport.
    NatIdle {
        /// The NAT's idle timeout.
        timeout: Duration,
    },
    /// An application that takes no events for a while, then all of them
    /// at once (a busy event loop, a GC pause): the network is fine.
    AppLag {
        /// Start.
        start: Duration,
        /// Length.
        len: Duration,
        /// Whose application.
        side: Side,
    },
    /// The server node dies: everything it held in memory is gone, every
    /// transport to it breaks, and a new node (a fresh server) takes its
    /// place after `down`. With a store ([`crate::SimConfig::store`]) the
    /// client's resume claims its session there and the new node carries it
    /// on; without one, the session dies with the node.
    NodeDeath {
        /// When.
        at: Duration,
        /// How long until the new node accepts connections (connections
        /// are refused meanwhile, as by a host with nothing listening).
        down: Duration,
        /// True: the process was killed and its kernel resets every
        /// connection (the client is told at once). False: the machine is
        /// gone and nothing answers (the client's heartbeat must notice).
        reset: bool,
    },
    /// The session store is unavailable: every operation fails, so
    /// commits (and with them acks), stored sends, resumes and new sessions
    /// wait until it returns.
    StoreDown {
        /// Start.
        start: Duration,
        /// Length.
        len: Duration,
    },
}

/// One end of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's application.
    Client,
    /// The server's application.
    Server,
}

impl Fault {
    fn window(&self) -> Option<(Duration, Duration)> {
        match self {
            Fault::Outage { start, len, .. }
            | Fault::Stall { start, len, .. }
            | Fault::Loss { start, len, .. }
            | Fault::AppLag { start, len, .. }
            | Fault::StoreDown { start, len } => Some((*start, *start + *len)),
            _ => None,
        }
    }

    /// When the last effect of this fault ends.
    pub fn end(&self) -> Duration {
        match self {
            Fault::Kill { at } => *at,
            Fault::NodeDeath { at, down, .. } => *at + *down,
            _ => self.window().map_or(Duration::ZERO, |(_, e)| e),
        }
    }
}

/// Path characteristics outside faults.
#[derive(Debug, Clone, PartialEq)]
pub struct PathConfig {
    /// One-way delay.
    pub delay: Duration,
    /// Extra one-way delay, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// First retransmission timeout after a loss.
    pub rto: Duration,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            rto: Duration::from_millis(200),
        }
    }
}

/// The path: faults plus the delivery-time model.
#[derive(Debug)]
pub struct Path {
    pub(crate) base: Instant,
    pub(crate) cfg: PathConfig,
    pub(crate) faults: Vec<Fault>,
}

impl Path {
    fn t(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }

    /// The blackhole (outage or stall) affecting `dir` at `at`, as its end.
    pub(crate) fn blocked_until(&self, dir: Dir, at: Instant) -> Option<Instant> {
        let t = self.t(at);
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::Outage { start, len, .. } if t >= *start && t < *start + *len => Some(*start + *len),
                Fault::Stall { start, len, dir: d } if *d == dir && t >= *start && t < *start + *len => {
                    Some(*start + *len)
                }
                _ => None,
            })
            .max()
            .map(|end| self.base + end)
    }

    /// The outage active at `at`, if any: (end, link_signal).
    pub(crate) fn outage_at(&self, at: Instant) -> Option<(Instant, bool)> {
        let t = self.t(at);
        self.faults.iter().find_map(|f| match f {
            Fault::Outage { start, len, link_signal } if t >= *start && t < *start + *len => {
                Some((self.base + *start + *len, *link_signal))
            }
            _ => None,
        })
    }

    fn loss(&self, dir: Dir, at: Instant) -> f64 {
        let t = self.t(at);
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::Loss { start, len, up, down } if t >= *start && t < *start + *len => {
                    Some(if dir == Dir::Up { *up } else { *down })
                }
                _ => None,
            })
            .fold(0.0, f64::max)
    }

    pub(crate) fn nat_timeout(&self) -> Option<Duration> {
        self.faults.iter().find_map(|f| match f {
            Fault::NatIdle { timeout } => Some(*timeout),
            _ => None,
        })
    }

    /// When a frame sent at `sent` arrives, ignoring ordering.
    pub(crate) fn arrival(&self, rng: &mut Rng, dir: Dir, sent: Instant) -> Instant {
        let mut at = sent;
        // Held by a blackhole, then recovered by a retransmission whose timer
        // had backed off while the path was dead.
        if let Some(end) = self.blocked_until(dir, at) {
            let held = end.saturating_duration_since(at);
            at = end + jitter(rng, (held / 4).min(Duration::from_secs(15)));
        }
        let p = self.loss(dir, at);
        let mut rto = self.cfg.rto;
        let mut tries = 0;
        while p > 0.0 && tries < 10 && rng.unit() < p {
            at += rto;
            rto = (rto * 2).min(Duration::from_secs(30));
            tries += 1;
        }
        at += self.cfg.delay + jitter(rng, self.cfg.jitter);
        // Arriving into a blackhole is the same as being sent into one.
        if let Some(end) = self.blocked_until(dir, at) {
            at = end + jitter(rng, Duration::from_millis(500)) + self.cfg.delay;
        }
        at
    }
}

pub(crate) fn jitter(rng: &mut Rng, max: Duration) -> Duration {
    Duration::from_micros(rng.below_inclusive(u64::try_from(max.as_micros()).unwrap_or(u64::MAX)))
}
