//! Exponential back-off with jitter for reconnecting to a peer.

use std::time::Duration;

/// Back-off state of one peer.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    /// Start at `min`, double per failure up to `max`.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff { min, max, current: Duration::ZERO, seed: seed | 1 }
    }

    /// The pause after one more failure (with up to 25 % jitter).
    pub fn next_delay(&mut self) -> Duration {
        self.current = if self.current.is_zero() { self.min } else { (self.current * 2).min(self.max) };
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = self.current.mul_f64((self.seed % 1000) as f64 / 4000.0);
        self.current + jitter
    }

    /// Forget failures after a success.
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
    }

    /// True while failures are being backed off.
    pub fn is_backing_off(&self) -> bool {
        !self.current.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40), 7);
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(10) && delays[0] < Duration::from_millis(13));
        assert!(delays[4] >= Duration::from_millis(40) && delays[4] <= Duration::from_millis(50));
        b.reset();
        assert!(!b.is_backing_off());
        assert!(b.next_delay() < Duration::from_millis(13));
    }
}
