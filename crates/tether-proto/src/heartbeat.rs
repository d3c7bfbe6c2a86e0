//! Liveness: when to ping, when a link is dead (`docs/PROTOCOL.md` §8).
//!
//! Rules, in the words of the seeds: only *receiving* proves the peer alive;
//! a PING goes out only after `interval` with nothing received; an unanswered
//! PING is followed by quick re-probes every `probe_timeout`; when `probes`
//! PINGs in a row go unanswered the link is declared dead and abandoned at once.
//!
//! Client detection bound, measured from the last frame received:
//! `interval + probes × probe_timeout` ([`HeartbeatConfig::dead_after`]).
//! The client asks the server to wait one more `probe_timeout` before it drops
//! a silent transport ([`HeartbeatConfig::server_idle_timeout`]), so the server
//! never gives up on a client that is still probing.

use std::time::{Duration, Instant};

use crate::adaptive::AdaptiveConfig;
use crate::error::ConfigError;

/// A named set of heartbeat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Dead link detected within 40 s on both ends: a ping every 20 s of
    /// silence, three probes 5 s apart. The seeds' "30–40 s" recommendation.
    Default,
    /// Dead link detected within 9 s on both ends, for calls and games.
    Realtime,
    /// Learns the longest ping interval the path's NATs tolerate, per network.
    Adaptive,
}

impl std::str::FromStr for Profile {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Profile::Default),
            "realtime" => Ok(Profile::Realtime),
            "adaptive" => Ok(Profile::Adaptive),
            other => Err(ConfigError::new(
                "heartbeat.profile",
                format!("unknown profile {other:?}"),
                "use one of \"default\", \"realtime\", \"adaptive\"",
            )),
        }
    }
}

/// Heartbeat settings. Every field is public and overridable; start from
/// [`HeartbeatConfig::profile`] and [`HeartbeatConfig::validate`] after editing.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// Silence after which a PING is sent. With `adaptive`, the starting value.
    pub interval: Duration,
    /// How long to wait for any frame after each PING before the next probe.
    pub probe_timeout: Duration,
    /// Unanswered PINGs in a row (the first included) that mean "dead".
    pub probes: u32,
    /// Debug switch: when false, heartbeats keep flowing but the peer is never
    /// declared dead (for sitting in a debugger without losing the session).
    pub enforce: bool,
    /// When set, the interval is learned per network instead of fixed.
    pub adaptive: Option<AdaptiveConfig>,
}

impl HeartbeatConfig {
    /// The settings of a profile.
    pub fn profile(p: Profile) -> Self {
        match p {
            Profile::Default => HeartbeatConfig {
                interval: Duration::from_secs(20),
                probe_timeout: Duration::from_secs(5),
                probes: 3,
                enforce: true,
                adaptive: None,
            },
            Profile::Realtime => HeartbeatConfig {
                interval: Duration::from_secs(3),
                probe_timeout: Duration::from_millis(1500),
                probes: 3,
                enforce: true,
                adaptive: None,
            },
            Profile::Adaptive => {
                let a = AdaptiveConfig::default();
                HeartbeatConfig {
                    interval: a.min_interval,
                    probe_timeout: Duration::from_secs(5),
                    probes: 3,
                    enforce: true,
                    adaptive: Some(a),
                }
            }
        }
    }

    /// The longest interval this configuration can ever use.
    pub fn max_interval(&self) -> Duration {
        self.adaptive.as_ref().map_or(self.interval, |a| a.max_interval)
    }

    /// Time of the whole probe cycle after the first PING.
    pub fn probe_cycle(&self) -> Duration {
        self.probe_timeout * self.probes
    }

    /// Worst-case time from the last frame received to "dead" on the client,
    /// at the longest interval this configuration may use.
    pub fn dead_after(&self) -> Duration {
        self.max_interval() + self.probe_cycle()
    }

    /// The idle timeout the client asks the server for in HELLO: the client's
    /// whole cycle plus one more probe timeout for the last probe's flight.
    pub fn server_idle_timeout(&self) -> Duration {
        self.dead_after() + self.probe_timeout
    }

    /// Checks the settings can work on their own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.probes == 0 {
            return Err(ConfigError::new("heartbeat.probes", "is 0", "set at least 1 (3 is typical)"));
        }
        if self.probe_timeout < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "heartbeat.probe_timeout",
                format!("{:?} is shorter than a round trip on a lossy link", self.probe_timeout),
                "use at least 100ms (1.5s or more tolerates 30% loss)",
            ));
        }
        if self.interval < self.probe_timeout {
            return Err(ConfigError::new(
                "heartbeat.interval",
                format!("{:?} is shorter than probe_timeout {:?}", self.interval, self.probe_timeout),
                "make interval at least probe_timeout, or the link is probed while a probe is in flight",
            ));
        }
        if self.server_idle_timeout() > Duration::from_millis(u64::from(u32::MAX)) {
            return Err(ConfigError::new(
                "heartbeat.interval",
                "the probe cycle does not fit in the protocol's 32-bit millisecond field",
                "keep interval + probes × probe_timeout under 49 days",
            ));
        }
        if let Some(a) = &self.adaptive {
            a.validate()?;
            if self.interval < a.min_interval || self.interval > a.max_interval {
                return Err(ConfigError::new(
                    "heartbeat.interval",
                    format!(
                        "{:?} is outside the adaptive range {:?}..={:?}",
                        self.interval, a.min_interval, a.max_interval
                    ),
                    "set interval between adaptive.min_interval and adaptive.max_interval",
                ));
            }
        }
        Ok(())
    }

    /// Checks these settings against a server's idle timeout (from WELCOME or
    /// a server config) and returns the longest interval that still lets the
    /// client finish its probe cycle before the server drops the transport.
    pub fn fit_server(&self, server_idle: Duration) -> Result<Duration, ConfigError> {
        let budget = server_idle.checked_sub(self.probe_cycle() + self.probe_timeout);
        let needed = self.adaptive.as_ref().map_or(self.interval, |a| a.min_interval);
        match budget {
            Some(max) if max >= needed => Ok(max.min(self.max_interval())),
            _ => Err(ConfigError::new(
                "heartbeat",
                format!(
                    "the server drops a silent transport after {:?}, but this client may stay silent for {:?} \
                     (interval {:?} + {} probes × {:?}) plus {:?} for the last probe's flight",
                    server_idle,
                    needed + self.probe_cycle(),
                    needed,
                    self.probes,
                    self.probe_timeout,
                    self.probe_timeout
                ),
                "raise the server's idle timeout or shorten the client's interval / probe cycle",
            )),
        }
    }
}

/// Why the current probe was started; adaptive learning only trusts idle ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeCause {
    /// Nothing was heard for the interval. `gap` is the silence in both
    /// directions just before the PING, which is what a NAT's idle timer saw.
    Idle { gap: Duration, interval: Duration },
    /// The caller reported a network change.
    NetworkChange,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    cause: ProbeCause,
    sent: u32,
    deadline: Instant,
}

/// What the heartbeat wants done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatAction {
    /// Send a PING with this nonce.
    Ping(u32),
    /// The link is dead.
    Dead { silent_for: Duration, cause: ProbeCause },
    /// A cycle failed but `enforce` is off: keep going.
    Missed,
}

/// The client-side prober. Owns no socket; asked for its deadline and told
/// what was heard.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    cfg: HeartbeatConfig,
    interval: Duration,
    last_heard: Instant,
    last_sent: Instant,
    probe: Option<Probe>,
    next_nonce: u32,
    /// Nonces of PINGs of the current cycle with their send times, for RTT.
    outstanding: Vec<(u32, Instant)>,
}

impl Heartbeat {
    pub(crate) fn new(cfg: HeartbeatConfig, now: Instant, first_nonce: u32) -> Self {
        let interval = cfg.interval;
        Heartbeat {
            cfg,
            interval,
            last_heard: now,
            last_sent: now,
            probe: None,
            next_nonce: first_nonce,
            outstanding: Vec::new(),
        }
    }

    /// Starts watching a fresh transport.
    pub(crate) fn reset(&mut self, now: Instant) {
        self.last_heard = now;
        self.last_sent = now;
        self.probe = None;
        self.outstanding.clear();
    }

    pub(crate) fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    pub(crate) fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// The next instant [`Heartbeat::poll`] has something to do.
    pub(crate) fn deadline(&self) -> Instant {
        match &self.probe {
            Some(p) => p.deadline,
            None => self.last_heard + self.interval,
        }
    }

    /// Any frame arrived. Returns the probe it answered, if one was running.
    pub(crate) fn on_heard(&mut self, now: Instant) -> Option<ProbeCause> {
        self.last_heard = now;
        self.outstanding.clear();
        self.probe.take().map(|p| p.cause)
    }

    /// We wrote a frame (only used to measure idle gaps for adaptive learning).
    pub(crate) fn on_sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// A PONG arrived: the round-trip time if it answers one of ours.
    /// Call before [`Heartbeat::on_heard`], which forgets outstanding nonces.
    pub(crate) fn rtt_for(&self, now: Instant, nonce: u32) -> Option<Duration> {
        self.outstanding.iter().find(|(n, _)| *n == nonce).map(|(_, at)| now.saturating_duration_since(*at))
    }

    /// Starts a one-shot probe at once (network change): if nothing arrives
    /// within `probe_timeout`, the link is declared dead.
    pub(crate) fn probe_now(&mut self, now: Instant) -> u32 {
        let nonce = self.take_nonce(now);
        self.probe = Some(Probe {
            cause: ProbeCause::NetworkChange,
            sent: self.cfg.probes.max(1),
            deadline: now + self.cfg.probe_timeout,
        });
        nonce
    }

    fn take_nonce(&mut self, now: Instant) -> u32 {
        let n = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.outstanding.push((n, now));
        if self.outstanding.len() > 8 {
            self.outstanding.remove(0);
        }
        n
    }

    /// Acts on the deadline if it has passed.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<HeartbeatAction> {
        if now < self.deadline() {
            return None;
        }
        match self.probe {
            None => {
                let gap = now.saturating_duration_since(self.last_heard.max(self.last_sent));
                let cause = ProbeCause::Idle { gap, interval: self.interval };
                let nonce = self.take_nonce(now);
                self.probe = Some(Probe { cause, sent: 1, deadline: now + self.cfg.probe_timeout });
                Some(HeartbeatAction::Ping(nonce))
            }
            Some(p) if p.sent < self.cfg.probes => {
                let nonce = self.take_nonce(now);
                self.probe = Some(Probe { sent: p.sent + 1, deadline: now + self.cfg.probe_timeout, ..p });
                Some(HeartbeatAction::Ping(nonce))
            }
            Some(p) => {
                if self.cfg.enforce {
                    self.probe = None;
                    Some(HeartbeatAction::Dead {
                        silent_for: now.saturating_duration_since(self.last_heard),
                        cause: p.cause,
                    })
                } else {
                    // Keep probing at the re-probe pace, never give up.
                    self.probe = Some(Probe { sent: 0, deadline: now, ..p });
                    Some(HeartbeatAction::Missed)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_meet_their_documented_bounds() {
        let d = HeartbeatConfig::profile(Profile::Default);
        d.validate().expect("default valid");
        assert!(d.dead_after() <= Duration::from_secs(40));
        assert!(d.server_idle_timeout() <= Duration::from_secs(40));
        let r = HeartbeatConfig::profile(Profile::Realtime);
        r.validate().expect("realtime valid");
        assert!(r.dead_after() <= Duration::from_secs(9));
        assert!(r.server_idle_timeout() <= Duration::from_secs(9));
        HeartbeatConfig::profile(Profile::Adaptive).validate().expect("adaptive valid");
    }

    #[test]
    fn server_idle_shorter_than_probe_cycle_is_refused_with_the_fix() {
        let d = HeartbeatConfig::profile(Profile::Default);
        let err = d.fit_server(Duration::from_secs(30)).expect_err("30 s cannot hold a 35 s cycle");
        assert_eq!(err.field, "heartbeat");
        assert!(err.to_string().contains("raise the server's idle timeout"), "{err}");
        assert_eq!(d.fit_server(d.server_idle_timeout()).ok(), Some(d.interval));
    }

    #[test]
    fn impossible_settings_are_refused() {
        let mut c = HeartbeatConfig::profile(Profile::Default);
        c.probes = 0;
        assert_eq!(c.validate().map_err(|e| e.field), Err("heartbeat.probes"));
        let mut c = HeartbeatConfig::profile(Profile::Default);
        c.interval = Duration::from_secs(1);
        assert_eq!(c.validate().map_err(|e| e.field), Err("heartbeat.interval"));
        assert!("fast".parse::<Profile>().is_err());
    }
}
