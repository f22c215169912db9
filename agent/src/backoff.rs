//! Exponential backoff with full jitter.

use std::time::Duration;

/// Delays that double from `base` up to `cap`, each drawn uniformly from zero to the current
/// bound ("full jitter"), so a fleet that lost its control plane does not come back in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff between `base` and `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The current upper bound, before jitter.
    pub fn bound(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay: uniform in `[0, bound]`, then the bound doubles.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound();
        self.attempt = self.attempt.saturating_add(1);
        let random = getrandom::u64().unwrap_or(u64::MAX / 2);
        let millis = bound.as_millis() as u64;
        Duration::from_millis(random % (millis + 1))
    }

    /// The longest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_bound_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for expected in [1, 2, 4, 8, 16, 32, 60, 60, 60] {
            assert_eq!(b.bound(), Duration::from_secs(expected));
            assert!(b.next_delay() <= Duration::from_secs(expected));
        }
        b.reset();
        assert_eq!(b.bound(), Duration::from_secs(1));
    }

    #[test]
    fn delays_are_spread() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
