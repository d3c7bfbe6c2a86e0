//! Racing connection attempts (`docs/PROTOCOL.md` §9.7).
//!
//! A connect that has not completed after a short delay is most often stuck
//! on a lost SYN, and the kernel will not send the next one for 1, then 3,
//! then 7 s. Rather than wait, the client opens another transport beside it
//! (as Happy Eyeballs does across addresses), keeps a bounded number in
//! flight, and takes the first that opens. The set of transports being
//! opened for one attempt is kept here; the client machine decides when.

use std::time::{Duration, Instant};

use crate::error::ConfigError;
use crate::TransportId;

/// Racing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceConfig {
    /// Longest wait, while no transport of the attempt has opened, before
    /// another starts beside those in flight. It bounds how long after a
    /// silent outage ends the first resume comes (§9.7).
    pub delay: Duration,
    /// Shortest such wait. The wait is four times the last round trip
    /// measured, kept between `min_delay` and `delay`. (Not the 250 ms of
    /// Happy Eyeballs: racing here goes on through a whole outage, and
    /// every client of a server does it at once.)
    pub min_delay: Duration,
    /// Transports being opened at once; the oldest gives way to a new one.
    /// 1 turns racing off.
    pub max_in_flight: u8,
}

impl Default for RaceConfig {
    fn default() -> Self {
        RaceConfig { delay: Duration::from_millis(750), min_delay: Duration::from_millis(500), max_in_flight: 3 }
    }
}

impl RaceConfig {
    /// Checks the settings can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_delay.is_zero() || self.delay < self.min_delay {
            return Err(ConfigError::new(
                "race.delay",
                format!("delay {:?} with min_delay {:?}", self.delay, self.min_delay),
                "use 0 < min_delay <= delay, e.g. 500ms and 750ms",
            ));
        }
        if !(1..=8).contains(&self.max_in_flight) {
            return Err(ConfigError::new(
                "race.max_in_flight",
                format!("{} is outside 1..=8", self.max_in_flight),
                "use 3 (or 1 to turn racing off)",
            ));
        }
        Ok(())
    }

    /// The wait before another transport starts, given the last round trip.
    pub fn wait(&self, rtt: Option<Duration>) -> Duration {
        rtt.map_or(self.delay, |r| r.saturating_mul(4).clamp(self.min_delay, self.delay))
    }
}

/// The transports being opened for the current attempt, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Racers {
    open: Vec<(TransportId, Instant)>,
    /// When another may start; None once one reached the server (or with
    /// racing off).
    next: Option<Instant>,
}

impl Racers {
    /// A transport starts; another may start after `wait` (None: no racing).
    pub(crate) fn start(&mut self, tid: TransportId, now: Instant, wait: Option<Duration>) {
        self.open.push((tid, now));
        self.next = wait.map(|w| now + w);
    }

    /// When `tid` started, if it is one of the attempt's transports.
    pub(crate) fn started(&self, tid: TransportId) -> Option<Instant> {
        self.open.iter().find(|(t, _)| *t == tid).map(|(_, s)| *s)
    }

    /// Keeps only `tid` and stops racing; returns the others (to drop).
    pub(crate) fn keep_only(&mut self, tid: TransportId) -> Vec<TransportId> {
        self.next = None;
        let (keep, drop): (Vec<_>, Vec<_>) = self.open.drain(..).partition(|(t, _)| *t == tid);
        self.open = keep;
        drop.into_iter().map(|(t, _)| t).collect()
    }

    /// `tid` reached the server: as [`Racers::keep_only`], and its clock
    /// restarts at `now` (the server gets a whole `handshake_timeout` to
    /// answer, however long the path took to carry the SYN).
    pub(crate) fn reach(&mut self, tid: TransportId, now: Instant) -> Vec<TransportId> {
        let drop = self.keep_only(tid);
        for (_, s) in &mut self.open {
            *s = now;
        }
        drop
    }

    /// Every transport, to drop; racing stops.
    pub(crate) fn take_all(&mut self) -> Vec<TransportId> {
        self.next = None;
        self.open.drain(..).map(|(t, _)| t).collect()
    }

    /// Transports opened longer than `limit` ago, removed (to drop).
    pub(crate) fn expired(&mut self, now: Instant, limit: Duration) -> Vec<TransportId> {
        let mut gone = Vec::new();
        self.open.retain(|(t, s)| {
            let keep = now < *s + limit;
            if !keep {
                gone.push(*t);
            }
            keep
        });
        gone
    }

    /// True when racing is on and another transport is due.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next.is_some_and(|n| now >= n)
    }

    /// True while racing is on (no transport reached the server yet).
    pub(crate) fn racing(&self) -> bool {
        self.next.is_some()
    }

    /// Makes room for one more under `max` in flight: the oldest, to drop.
    pub(crate) fn make_room(&mut self, max: usize) -> Option<TransportId> {
        (self.open.len() >= max && !self.open.is_empty()).then(|| self.open.remove(0).0)
    }

    /// The next instant something is due: another start, or the oldest
    /// transport reaching `limit`.
    pub(crate) fn deadline(&self, limit: Duration) -> Option<Instant> {
        let oldest = self.open.first().map(|(_, s)| *s + limit);
        [self.next, oldest].into_iter().flatten().min()
    }

    /// True when none is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_the_round_trip_within_its_bounds() {
        let c = RaceConfig::default();
        assert_eq!(c.wait(None), c.delay);
        assert_eq!(c.wait(Some(Duration::from_millis(1))), c.min_delay);
        assert_eq!(c.wait(Some(Duration::from_millis(150))), Duration::from_millis(600));
        assert_eq!(c.wait(Some(Duration::from_secs(2))), c.delay);
    }

    #[test]
    fn bad_settings_are_refused_with_the_field() {
        let c = RaceConfig { max_in_flight: 0, ..RaceConfig::default() };
        assert_eq!(c.validate().expect_err("0 in flight").field, "race.max_in_flight");
        let c = RaceConfig { delay: Duration::from_millis(400), ..RaceConfig::default() };
        assert_eq!(c.validate().expect_err("delay below min").field, "race.delay");
        assert!(RaceConfig::default().validate().is_ok());
    }

    #[test]
    fn the_oldest_gives_way_and_one_winner_drops_the_rest() {
        let t = crate::test_epoch();
        let mut r = Racers::default();
        let w = Some(Duration::from_millis(500));
        r.start(TransportId(1), t, w);
        assert!(!r.due(t) && r.due(t + Duration::from_millis(500)));
        r.start(TransportId(2), t + Duration::from_millis(500), w);
        assert_eq!(r.make_room(3), None);
        r.start(TransportId(3), t + Duration::from_secs(1), w);
        assert_eq!(r.make_room(3), Some(TransportId(1)));
        assert_eq!(r.deadline(Duration::from_secs(5)), Some(t + Duration::from_millis(1500)));
        assert_eq!(r.keep_only(TransportId(3)), vec![TransportId(2)]);
        assert!(!r.racing() && r.open.len() == 1);
        assert_eq!(r.started(TransportId(3)), Some(t + Duration::from_secs(1)));
        assert_eq!(r.expired(t + Duration::from_secs(6), Duration::from_secs(5)), vec![TransportId(3)]);
    }
}
