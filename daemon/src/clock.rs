//! Time as a dependency.
//!
//! Everything in the daemon that decides by time (entry expiry, circuit-breaker windows and
//! recovery timeouts) asks a [`Clock`] instead of calling `Instant::now()` itself, so that tests
//! move time forward with [`ManualClock::advance`] instead of sleeping. The invariant: both readings
//! of one clock move together — a test that advances the monotonic instant also advances wall time.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic time, for durations measured inside this process (breaker windows, latencies).
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch, for values shared with other processes through
    /// Redis (entry creation and expiry times).
    fn unix_ms(&self) -> u64;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests of time-based behaviour without sleeps.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_unix_ms: u64,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock reading the real time now, frozen until [`advance`](Self::advance) is called.
    pub fn new() -> Self {
        Self { start: Instant::now(), start_unix_ms: SystemClock.unix_ms(), offset: Mutex::new(Duration::ZERO) }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.offset()
    }

    fn unix_ms(&self) -> u64 {
        self.start_unix_ms + u64::try_from(self.offset().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_both_readings_together() {
        let clock = ManualClock::new();
        let (i0, w0) = (clock.now(), clock.unix_ms());
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - i0, Duration::from_millis(1500));
        assert_eq!(clock.unix_ms() - w0, 1500);
    }
}
