//! Handshakes per client address: a token bucket per IP address, so that
//! one address opening connections in a loop (a broken client, a flood) is
//! turned away at `accept`, before any TLS or WebSocket work, while other
//! addresses are served as usual. Behind a load balancer every connection
//! comes from the balancer's address: turn the limit off there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// New connections allowed per client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerAddress {
    /// Sustained rate, per second.
    pub rate: f64,
    /// How many may come at once (the bucket's size).
    pub burst: f64,
    /// Loopback addresses (this machine: a local proxy, a load test) are
    /// not limited.
    pub exempt_loopback: bool,
}

/// The buckets, one per address seen recently.
pub(crate) struct Limiter {
    cfg: PerAddress,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    map: HashMap<IpAddr, (f64, Instant)>,
    pruned: Instant,
}

impl Limiter {
    pub(crate) fn new(cfg: PerAddress, now: Instant) -> Self {
        Limiter { cfg, buckets: Mutex::new(Buckets { map: HashMap::new(), pruned: now }) }
    }

    /// Takes a token for `ip`; false when its bucket is empty.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let PerAddress { rate, burst, exempt_loopback } = self.cfg;
        if exempt_loopback && ip.is_loopback() {
            return true;
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // A full bucket is the same as none: forget addresses idle that long.
        let full_after = burst / rate;
        if now.saturating_duration_since(b.pruned).as_secs_f64() > full_after.max(1.0) {
            b.map.retain(|_, (_, at)| now.saturating_duration_since(*at).as_secs_f64() < full_after);
            b.pruned = now;
        }
        let (tokens, at) = b.map.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_address_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let l = Limiter::new(PerAddress { rate: 2.0, burst: 3.0, exempt_loopback: true }, t0);
        assert!((0..10).all(|_| l.allow("127.0.0.1".parse().unwrap(), t0)), "loopback exempt");
        assert!((0..10).all(|_| l.allow("::1".parse().unwrap(), t0)), "loopback exempt");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).map(|_| l.allow(a, t0)).collect::<Vec<_>>(), [true, true, true, false, false]);
        assert!(l.allow(b, t0), "another address has its own bucket");
        assert!(!l.allow(a, t0 + Duration::from_millis(400)));
        assert!(l.allow(a, t0 + Duration::from_millis(500)), "one token per 1/rate");
        assert!(!l.allow(a, t0 + Duration::from_millis(500)));
        // Idle addresses are forgotten (their bucket would be full anyway).
        assert!(l.allow(b, t0 + Duration::from_secs(10)));
        assert_eq!(l.buckets.lock().unwrap().map.len(), 1);
    }
}
