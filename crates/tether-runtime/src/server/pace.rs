//! Spreading a storm. A handshake refused because the server is at its
//! limit (REJECT Overloaded) is told when to come back; if every refused
//! client came back within the same short delay, a storm of 100 000 resumes
//! would meet the limit again and again, each time costing the server a
//! connection and a HELLO. So the window the retry-after is drawn from grows
//! with how many handshakes were refused per handshake admitted in the last
//! second: refused clients then come back at about the pace the server
//! admits them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest window a retry-after is spread over, whatever the storm: well
/// inside any session's grace, so a refused resume still comes in time.
const MAX_WINDOW: Duration = Duration::from_secs(20);

pub(crate) struct Pace {
    admitted: AtomicU64,
    refused: AtomicU64,
    state: Mutex<State>,
}

struct State {
    at: Instant,
    admitted: u64,
    refused: u64,
    window: Duration,
}

impl Pace {
    pub(crate) fn new(now: Instant, base: Duration) -> Self {
        let state = State { at: now, admitted: 0, refused: 0, window: base * 2 };
        Pace { admitted: AtomicU64::new(0), refused: AtomicU64::new(0), state: Mutex::new(state) }
    }

    /// A handshake was admitted (a session opened or resumed).
    pub(crate) fn admitted(&self) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// A handshake is refused for overload: the window its retry-after is
    /// spread over (after `base`), no longer than `cap`.
    pub(crate) fn refused(&self, now: Instant, base: Duration, cap: Duration) -> Duration {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let over = now.saturating_duration_since(s.at);
        if over >= Duration::from_secs(1) {
            let admitted = self.admitted.load(Ordering::Relaxed);
            // Saturating: another thread may have counted its refusal and
            // then been preempted before taking the lock.
            s.window = window(base, admitted.saturating_sub(s.admitted), refused.saturating_sub(s.refused), cap);
            (s.at, s.admitted, s.refused) = (now, admitted, refused.max(s.refused));
        }
        s.window
    }
}

/// Refused clients return uniformly over the window, at `refused / window`
/// per second: a window of `refused / admitted` seconds (per second
/// measured) brings them back at the pace they were admitted. Never below
/// `2 × base` (the calm spread), never above `cap` or [`MAX_WINDOW`].
pub(crate) fn window(base: Duration, admitted: u64, refused: u64, cap: Duration) -> Duration {
    let ratio = refused as f64 / admitted.max(1) as f64;
    let hi = cap.min(MAX_WINDOW).max(base * 2);
    Duration::from_secs_f64(ratio).clamp(base * 2, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_window_brings_refused_clients_back_at_the_admitted_pace() {
        // 30 000 refused while 3 000 were admitted: spread over 10 s.
        assert_eq!(window(S(1), 3_000, 30_000, S(60)), S(10));
        // Calm: the base spread.
        assert_eq!(window(S(1), 3_000, 10, S(60)), S(2));
        // Nothing admitted at all: as wide as allowed.
        assert_eq!(window(S(1), 0, 5_000, S(60)), MAX_WINDOW);
        // Bounded by the cap (a share of the grace).
        assert_eq!(window(S(1), 100, 100_000, S(8)), S(8));
    }

    #[test]
    fn the_window_follows_the_last_second() {
        let t = Instant::now();
        let p = Pace::new(t, S(1));
        for _ in 0..100 {
            p.admitted();
        }
        assert_eq!(p.refused(t, S(1), S(60)), S(2), "within the first second: the calm spread");
        for _ in 0..999 {
            p.refused(t, S(1), S(60));
        }
        // One second later: 1 001 refused for 100 admitted.
        let w = p.refused(t + S(1), S(1), S(60));
        assert!(w > S(9) && w < S(11), "{w:?}");
    }
}
