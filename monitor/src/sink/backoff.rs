//! Exponential backoff with full jitter for webhook retries.

use std::time::{Duration, SystemTime};

/// The first retry waits up to this long.
const BACKOFF_START: Duration = Duration::from_millis(500);

/// Exponential backoff with full jitter: attempt n waits a random time in
/// `[0, min(max, 500 ms * 2^n)]`.
pub struct Backoff {
    step: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self {
            step: BACKOFF_START.min(max),
            max,
            rng: seed(),
        }
    }

    pub fn reset(&mut self) {
        self.step = BACKOFF_START.min(self.max);
    }

    /// The delay before the next attempt; `at_least` (a `Retry-After`) raises it, up to max.
    pub fn next_delay(&mut self, at_least: Option<Duration>) -> Duration {
        let cap = self.step;
        self.step = (self.step * 2).min(self.max);
        let jittered = cap.mul_f64(self.random_unit());
        jittered.max(at_least.unwrap_or_default()).min(self.max)
    }

    /// The current ceiling of the random delay.
    #[cfg(test)]
    pub fn ceiling(&self) -> Duration {
        self.step
    }

    /// Uniform in [0, 1] (xorshift64*: jitter needs spread, not secrecy).
    fn random_unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

fn seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    let s = if n == 8 {
        u64::from_ne_bytes(buf)
    } else {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    };
    s | 1
}
