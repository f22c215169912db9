//! The agent's one clock.
//!
//! Deadlines are measured on tokio's monotonic clock (so tests run on paused time and a wall
//! clock step never fires or delays a deadline); the values handed to `step` and written into
//! reports are milliseconds since the Unix epoch, anchored once at start-up and then advanced by
//! the monotonic clock. The anchor is never below the persisted state's clock, so time seen by
//! the state machine never runs backwards across restarts either.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetnode_state_machine::Timestamp;
use tokio::time::Instant;

/// A wall-anchored monotonic clock. Cheap to clone; every clone reads the same time line.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Monotonic instant of the anchor.
    start: Instant,
    /// Milliseconds since the Unix epoch at `start`.
    start_ms: u64,
}

impl Clock {
    /// A clock anchored at the current wall time, but never below `floor` (the persisted state's
    /// clock).
    pub fn anchored(floor: Timestamp) -> Self {
        Self::anchored_at(wall_ms(), floor)
    }

    /// A clock anchored at `wall_ms` (milliseconds since the Unix epoch), never below `floor`.
    pub fn anchored_at(wall_ms: u64, floor: Timestamp) -> Self {
        Self {
            start: Instant::now(),
            start_ms: wall_ms.max(floor.0),
        }
    }

    /// The current time for the state machine and for reports.
    pub fn now(&self) -> Timestamp {
        let elapsed = self.start.elapsed().as_millis();
        Timestamp(
            self.start_ms
                .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX)),
        )
    }

    /// The monotonic instant at which [`Clock::now`] reaches `at` (now, if it already has).
    pub fn instant_at(&self, at: Timestamp) -> Instant {
        let offset = at.0.saturating_sub(self.start_ms);
        // Far-future deadlines saturate to about 30 years, which tokio's timer accepts.
        let offset = offset.min(1_000_000_000_000);
        self.start + Duration::from_millis(offset)
    }
}

/// Wall-clock milliseconds since the Unix epoch (zero if the clock is before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn time_advances_with_the_monotonic_clock_and_respects_the_floor() {
        let clock = Clock::anchored_at(1_000, Timestamp(5_000));
        assert_eq!(clock.now(), Timestamp(5_000));
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now(), Timestamp(6_500));
        let at = clock.instant_at(Timestamp(10_000));
        tokio::time::sleep_until(at).await;
        assert_eq!(clock.now(), Timestamp(10_000));
        // A deadline in the past is due now.
        assert!(clock.instant_at(Timestamp(1)) <= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn wall_time_above_the_floor_wins() {
        let clock = Clock::anchored_at(9_000, Timestamp(5_000));
        assert_eq!(clock.now(), Timestamp(9_000));
    }
}
