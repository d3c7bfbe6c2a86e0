//! The one source of randomness in the core, injected by the caller.
//!
//! ChaCha20 is a CSPRNG, so the same generator is fit for resume tokens and
//! session ids as well as for jitter. The runtime seeds it from the operating
//! system; tests and the simulator seed it from a number so every run can be
//! replayed exactly.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A seedable cryptographically secure random number generator.
#[derive(Debug, Clone)]
pub struct Rng(ChaCha20Rng);

impl Rng {
    /// A generator from 32 bytes of seed — give it OS entropy in production.
    pub fn from_entropy_bytes(seed: [u8; 32]) -> Self {
        Rng(ChaCha20Rng::from_seed(seed))
    }

    /// A reproducible generator for tests and simulations. Not for production
    /// use: tokens drawn from it are predictable from the seed.
    pub fn from_seed(seed: u64) -> Self {
        Rng(ChaCha20Rng::seed_from_u64(seed))
    }

    /// A derived, independent generator (for handing one to each machine).
    pub fn fork(&mut self) -> Self {
        let mut seed = [0u8; 32];
        self.fill(&mut seed);
        Rng::from_entropy_bytes(seed)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }

    /// A uniformly random `u32`.
    pub fn u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// A uniformly random `u64`.
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, bound]` (inclusive); `bound` 0 gives 0.
    pub fn below_inclusive(&mut self, bound: u64) -> u64 {
        if bound == u64::MAX {
            return self.u64();
        }
        // Lemire's multiply-shift; the bias for 64-bit draws over bounds that
        // are durations in microseconds is far below anything observable.
        ((u128::from(self.u64()) * (u128::from(bound) + 1)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
