//! Reconnection delays: exponential backoff with full jitter
//! (`docs/PROTOCOL.md` §9).
//!
//! Attempt *n* (from 0) waits a uniform random delay in
//! `[0, min(max, initial × 2ⁿ)]`. While a session is resumable the ceiling is
//! `resume_max` instead of `max`, and no attempt is scheduled so late that it
//! could not finish before the session expires. A server's retry-after is a
//! floor. A network-up signal skips the wait entirely (but not a retry-after).

use std::time::{Duration, Instant};

use crate::error::ConfigError;
use crate::rng::Rng;

/// Backoff settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Ceiling of any delay when no session is waiting to be resumed.
    pub max: Duration,
    /// Ceiling of any delay while a session is resumable: small, so the
    /// session comes back quickly once the network does. (A silent outage
    /// does not wait on it: a resumable session's attempt keeps racing new
    /// transports instead of failing into a backoff, §9.7.)
    pub resume_max: Duration,
    /// A connection that lasted this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            resume_max: Duration::from_secs(2),
            stable_after: Duration::from_secs(10),
        }
    }
}

impl BackoffConfig {
    /// Checks the settings can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.initial.is_zero() {
            return Err(ConfigError::new("backoff.initial", "is 0", "use a small positive delay such as 500ms"));
        }
        if self.max < self.initial || self.resume_max < self.initial {
            return Err(ConfigError::new(
                "backoff.max",
                format!("max {:?} or resume_max {:?} is below initial {:?}", self.max, self.resume_max, self.initial),
                "make max and resume_max at least initial",
            ));
        }
        Ok(())
    }
}

/// Inputs to one delay computation.
#[derive(Debug, Clone, Copy, Default)]
pub struct DelayContext {
    /// When the session being resumed expires (None: nothing to resume).
    pub resumable_until: Option<Instant>,
    /// How long an attempt may take (connect + handshake).
    pub attempt_budget: Duration,
    /// The server's retry-after, if it gave one.
    pub retry_after: Option<Duration>,
}

/// Backoff state: how many attempts failed in a row.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    /// The expiry whose last-moment attempt was already given (§9.3): only
    /// one attempt starts at once past that moment, or connections that
    /// fail instantly would retry in a busy loop until the expiry.
    late_used: Option<Instant>,
}

impl Backoff {
    /// Fresh state.
    pub fn new(cfg: BackoffConfig) -> Self {
        Backoff { cfg, attempt: 0, late_used: None }
    }

    /// The settings.
    pub fn config(&self) -> &BackoffConfig {
        &self.cfg
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Forget past failures (a connection proved stable, or the network came up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The ceiling for the current attempt, before jitter.
    pub fn ceiling(&self, resumable: bool) -> Duration {
        let cap = if resumable { self.cfg.resume_max } else { self.cfg.max };
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.cfg.initial.saturating_mul(factor).min(cap)
    }

    /// Draws the delay before the next attempt and counts the attempt.
    pub fn next_delay(&mut self, now: Instant, rng: &mut Rng, ctx: DelayContext) -> Duration {
        let ceiling = self.ceiling(ctx.resumable_until.is_some());
        let ceil_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        let mut delay = Duration::from_micros(rng.below_inclusive(ceil_us));
        if let Some(until) = ctx.resumable_until {
            // The last moment an attempt can start and still resume in time.
            let latest = until.checked_sub(ctx.attempt_budget).unwrap_or(now);
            if now < latest {
                delay = delay.min(latest - now);
            } else if self.late_used != Some(until) {
                // Past it: one attempt at once; later ones back off as usual.
                self.late_used = Some(until);
                delay = Duration::ZERO;
            }
        }
        if let Some(ra) = ctx.retry_after {
            delay = delay.max(ra);
        }
        self.attempt = self.attempt.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_their_bounds_and_grow_to_the_cap() {
        let cfg = BackoffConfig::default();
        let mut rng = Rng::from_seed(1);
        let now = crate::test_epoch();
        for seed in 0..200u64 {
            let mut b = Backoff::new(cfg.clone());
            let mut rng2 = Rng::from_seed(seed);
            for n in 0..40u32 {
                let ceiling = cfg.initial.saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX)).min(cfg.max);
                assert_eq!(b.ceiling(false), ceiling);
                let d = b.next_delay(now, &mut rng2, DelayContext::default());
                assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
            }
        }
        // Full jitter really spreads: delays at the cap cover the whole range.
        let mut b = Backoff::new(cfg.clone());
        b.attempt = 30;
        let ds: Vec<_> = (0..1000)
            .map(|_| {
                b.attempt = 30;
                b.next_delay(now, &mut rng, DelayContext::default())
            })
            .collect();
        assert!(ds.iter().any(|d| *d < cfg.max / 10) && ds.iter().any(|d| *d > cfg.max * 9 / 10));
    }

    #[test]
    fn resumable_sessions_get_short_delays_that_fit_in_the_grace_period() {
        let cfg = BackoffConfig::default();
        let now = crate::test_epoch();
        let mut rng = Rng::from_seed(2);
        let mut b = Backoff::new(cfg.clone());
        let until = now + Duration::from_secs(60);
        for _ in 0..50 {
            let d = b.next_delay(
                now,
                &mut rng,
                DelayContext {
                    resumable_until: Some(until),
                    attempt_budget: Duration::from_secs(5),
                    retry_after: None,
                },
            );
            assert!(d <= cfg.resume_max);
        }
        // Two seconds before expiry with a 5 s budget: start at once, but
        // only once: an attempt that fails at once must not loop.
        let late = until - Duration::from_secs(2);
        let ctx =
            DelayContext { resumable_until: Some(until), attempt_budget: Duration::from_secs(5), retry_after: None };
        assert_eq!(b.next_delay(late, &mut rng, ctx), Duration::ZERO);
        let later: Vec<Duration> = (0..20).map(|_| b.next_delay(late, &mut rng, ctx)).collect();
        assert!(later.iter().all(|d| *d <= cfg.resume_max) && later.iter().filter(|d| !d.is_zero()).count() >= 19);
        // A new outage (another expiry) gets its own immediate attempt.
        let ctx2 = DelayContext { resumable_until: Some(until + Duration::from_secs(30)), ..ctx };
        assert_eq!(b.next_delay(until + Duration::from_secs(27), &mut rng, ctx2), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let now = crate::test_epoch();
        let mut rng = Rng::from_seed(3);
        let mut b = Backoff::new(BackoffConfig::default());
        for _ in 0..100 {
            let d = b.next_delay(
                now,
                &mut rng,
                DelayContext { retry_after: Some(Duration::from_secs(7)), ..Default::default() },
            );
            assert!(d >= Duration::from_secs(7));
        }
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let c = BackoffConfig { initial: Duration::ZERO, ..Default::default() };
        assert_eq!(c.validate().map_err(|e| e.field), Err("backoff.initial"));
    }
}
