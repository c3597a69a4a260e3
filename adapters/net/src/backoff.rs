//! Exponential back-off with jitter for reconnecting to a peer. The first pause is at least
//! [`MIN_BACKOFF`] whatever the configuration, so a failing peer is never retried in a busy loop.

use std::time::Duration;

/// The shortest first pause: a configured `min` below it (including zero) is raised to it.
pub const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// Back-off state of one peer.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    /// Start at `min` (at least [`MIN_BACKOFF`]), double per failure up to `max` (at least the
    /// start).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.max(MIN_BACKOFF);
        Backoff { min, max: max.max(min), current: Duration::ZERO, seed: seed | 1 }
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

    #[test]
    fn a_zero_minimum_is_raised_to_one_millisecond() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 7);
        let delays: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        for delay in delays {
            assert!(delay >= MIN_BACKOFF && delay <= MIN_BACKOFF * 2, "{delay:?}");
        }
        assert!(b.is_backing_off());
        let mut b = Backoff::new(Duration::from_micros(10), Duration::from_millis(4), 7);
        assert!(b.next_delay() >= MIN_BACKOFF);
    }
}
