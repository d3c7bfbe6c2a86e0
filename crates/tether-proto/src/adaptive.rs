//! Adaptive heartbeat interval: learn the longest silence a network's NATs and
//! firewalls tolerate, as mobile IM clients do to save battery and traffic.
//!
//! Per network key (supplied by the caller: an SSID, a carrier, an interface):
//! - every idle period the link survived at the current interval counts as a
//!   success; after `successes_to_grow` of them the interval grows by `step`;
//! - when a link dies during an idle gap longer than the last proven interval,
//!   that interval becomes the known ceiling and the client falls back to the
//!   last good value;
//! - with a ceiling known, growth bisects between good and ceiling until they
//!   are within `precision`, then the interval settles and stops moving.
//!   A proven interval that then fails twice in a row is lowered by a step
//!   (the network changed its mind).

use std::collections::HashMap;
use std::time::Duration;

use crate::error::ConfigError;

/// Settings of the adaptive profile.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// Never ping less often than this (also the starting interval).
    pub min_interval: Duration,
    /// Never wait longer than this.
    pub max_interval: Duration,
    /// Growth per step before any ceiling is known.
    pub step: Duration,
    /// Idle periods survived at an interval before trying a longer one.
    pub successes_to_grow: u32,
    /// Stop refining once good and ceiling are this close.
    pub precision: Duration,
}

impl Default for AdaptiveConfig {
    /// Starts at 30 s (below every common NAT timeout), grows by 30 s up to
    /// 5 min, settles within 10 s of the path's real limit.
    fn default() -> Self {
        AdaptiveConfig {
            min_interval: Duration::from_secs(30),
            max_interval: Duration::from_secs(300),
            step: Duration::from_secs(30),
            successes_to_grow: 2,
            precision: Duration::from_secs(10),
        }
    }
}

impl AdaptiveConfig {
    /// Checks the settings can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_interval.is_zero() || self.max_interval < self.min_interval {
            return Err(ConfigError::new(
                "heartbeat.adaptive.max_interval",
                format!("range {:?}..={:?} is empty", self.min_interval, self.max_interval),
                "set 0 < min_interval <= max_interval",
            ));
        }
        if self.step.is_zero() {
            return Err(ConfigError::new("heartbeat.adaptive.step", "is 0", "use a step such as 30s"));
        }
        if self.precision.is_zero() {
            return Err(ConfigError::new("heartbeat.adaptive.precision", "is 0", "use a precision such as 10s"));
        }
        if self.successes_to_grow == 0 {
            return Err(ConfigError::new("heartbeat.adaptive.successes_to_grow", "is 0", "use at least 1"));
        }
        Ok(())
    }
}

/// What was learned about one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// The interval in use.
    pub current: Duration,
    /// Longest interval proven to survive.
    pub good: Option<Duration>,
    /// Shortest interval that failed.
    pub ceiling: Option<Duration>,
    successes: u32,
    failures_at_good: u32,
}

/// The learner, holding one [`Learned`] per network key.
#[derive(Debug, Clone)]
pub struct Adaptive {
    cfg: AdaptiveConfig,
    /// Upper bound imposed by the server's idle timeout (from WELCOME).
    cap: Duration,
    nets: HashMap<String, Learned>,
}

impl Adaptive {
    /// A learner with nothing learned yet.
    pub fn new(cfg: AdaptiveConfig) -> Self {
        let cap = cfg.max_interval;
        Adaptive { cfg, cap, nets: HashMap::new() }
    }

    /// Limits every interval to `cap` (the server's idle timeout leaves no
    /// room for longer silences).
    pub fn set_cap(&mut self, cap: Duration) {
        self.cap = cap.max(self.cfg.min_interval);
        for l in self.nets.values_mut() {
            l.current = l.current.min(self.cap);
        }
    }

    fn entry(&mut self, key: &str) -> &mut Learned {
        let start = self.cfg.min_interval.min(self.cap);
        self.nets.entry(key.to_owned()).or_insert(Learned {
            current: start,
            good: None,
            ceiling: None,
            successes: 0,
            failures_at_good: 0,
        })
    }

    /// The interval to use on this network now.
    pub fn interval(&mut self, key: &str) -> Duration {
        self.entry(key).current
    }

    /// What was learned about a network, if anything.
    pub fn learned(&self, key: &str) -> Option<Learned> {
        self.nets.get(key).copied()
    }

    /// Every network learned about, for persisting across restarts.
    pub fn export(&self) -> Vec<(String, Duration)> {
        let mut v: Vec<_> = self.nets.iter().filter_map(|(k, l)| l.good.map(|g| (k.clone(), g))).collect();
        v.sort();
        v
    }

    /// Restores a proven interval (from [`Adaptive::export`]).
    pub fn import(&mut self, key: &str, good: Duration) {
        let (min, max) = (self.cfg.min_interval, self.cfg.max_interval.min(self.cap));
        let g = good.clamp(min, max);
        let l = self.entry(key);
        l.good = Some(g);
        l.current = g;
    }

    /// An idle period of `gap` (silence both ways before the PING) was
    /// survived while `interval` was in use.
    pub fn survived(&mut self, key: &str, gap: Duration, interval: Duration) {
        let cfg = self.cfg.clone();
        let cap = self.cap;
        let l = self.entry(key);
        // Only a silence as long as the interval under test proves anything;
        // a shorter gap means traffic kept the NAT warm.
        if interval != l.current || gap + cfg.precision / 4 < l.current {
            return;
        }
        l.failures_at_good = 0;
        l.good = Some(l.good.map_or(l.current, |g| g.max(l.current)));
        l.successes += 1;
        if l.successes < cfg.successes_to_grow {
            return;
        }
        l.successes = 0;
        let next = match l.ceiling {
            Some(c) if c > l.current + cfg.precision => l.current + (c - l.current) / 2,
            Some(_) => l.current, // settled
            None => l.current + cfg.step,
        };
        l.current = next.min(cfg.max_interval).min(cap);
    }

    /// The link died during an idle gap while `interval` was in use.
    pub fn died_idle(&mut self, key: &str, interval: Duration) {
        let cfg = self.cfg.clone();
        let l = self.entry(key);
        if interval != l.current {
            return;
        }
        l.successes = 0;
        match l.good {
            Some(g) if l.current > g => {
                l.ceiling = Some(l.ceiling.map_or(l.current, |c| c.min(l.current)));
                l.current = g;
            }
            Some(_) => {
                l.failures_at_good += 1;
                if l.failures_at_good >= 2 {
                    l.ceiling = Some(l.current);
                    l.current = l.current.saturating_sub(cfg.step).max(cfg.min_interval);
                    l.good = None;
                    l.failures_at_good = 0;
                }
            }
            None => {
                l.ceiling = Some(l.current);
                l.current = l.current.saturating_sub(cfg.step).max(cfg.min_interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the learner against a NAT that forgets flows idle ≥ `nat`.
    fn settle(nat: Duration, rounds: usize) -> (Duration, usize) {
        let mut a = Adaptive::new(AdaptiveConfig::default());
        let mut deaths = 0;
        let mut last_death_round = 0;
        for round in 0..rounds {
            let i = a.interval("wifi");
            if i >= nat {
                a.died_idle("wifi", i);
                deaths += 1;
                last_death_round = round;
            } else {
                a.survived("wifi", i, i);
            }
        }
        assert!(last_death_round < rounds / 2, "still dying late: round {last_death_round}");
        (a.interval("wifi"), deaths)
    }

    #[test]
    fn settles_just_below_the_nat_timeout() {
        for secs in [45u64, 100, 137, 250] {
            let nat = Duration::from_secs(secs);
            let (i, deaths) = settle(nat, 200);
            assert!(i < nat && i + Duration::from_secs(20) >= nat, "nat {nat:?} settled at {i:?}");
            assert!(deaths <= 6, "too many deaths: {deaths}");
        }
    }

    #[test]
    fn keys_are_learned_separately_and_gaps_with_traffic_prove_nothing() {
        let mut a = Adaptive::new(AdaptiveConfig::default());
        for _ in 0..4 {
            let i = a.interval("wifi");
            a.survived("wifi", i, i);
        }
        assert!(a.interval("wifi") > a.interval("lte"));
        let before = a.interval("lte");
        a.survived("lte", Duration::from_secs(1), before);
        a.survived("lte", Duration::from_secs(1), before);
        assert_eq!(a.interval("lte"), before);
        a.set_cap(Duration::from_secs(31));
        assert!(a.interval("wifi") <= Duration::from_secs(31));
    }
}
