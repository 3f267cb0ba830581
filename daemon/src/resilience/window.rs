//! Time-based sliding window of call outcomes (Resilience4j's TIME_BASED window).
//!
//! The window is a ring of buckets, each covering `window / BUCKETS` of time and holding only
//! counts, so memory is constant whatever the call rate. The invariant: a bucket is reused only
//! after its whole time span has left the window, and totals are always the sum of live buckets.

use std::time::{Duration, Instant};

/// Buckets per window: the window's resolution is a tenth of its length (6 s for the seed's 60 s
/// `CIRCUIT_BREAKER_MONITORING_PERIOD`), fine enough for a breaker and 10 × 24 bytes of state.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// Which bucket-length period since `origin` this bucket currently counts.
    period: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Counts of the outcomes still inside the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WindowTotals {
    pub calls: u32,
    pub failures: u32,
    pub slow_calls: u32,
}

impl WindowTotals {
    /// Failed calls as a percentage of calls (0 when there were none).
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow calls as a percentage of calls (0 when there were none).
    pub fn slow_call_rate(&self) -> f64 {
        percent(self.slow_calls, self.calls)
    }
}

fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 { 0.0 } else { f64::from(part) * 100.0 / f64::from(whole) }
}

/// Outcomes of the calls made during the last `window` of time.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    origin: Instant,
    bucket_len: Duration,
    buckets: [Bucket; BUCKETS],
}

impl SlidingWindow {
    pub fn new(window: Duration, origin: Instant) -> Self {
        let bucket_len = (window / BUCKETS as u32).max(Duration::from_millis(1));
        Self { origin, bucket_len, buckets: [Bucket::default(); BUCKETS] }
    }

    fn period(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_nanos() / self.bucket_len.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records one finished call.
    pub fn record(&mut self, now: Instant, failed: bool, slow: bool) {
        let period = self.period(now);
        let bucket = &mut self.buckets[(period % BUCKETS as u64) as usize];
        if bucket.period != period {
            *bucket = Bucket { period, ..Bucket::default() };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(failed);
        bucket.slow += u32::from(slow);
    }

    /// Totals over the buckets whose period is still inside the window at `now`.
    pub fn totals(&self, now: Instant) -> WindowTotals {
        let current = self.period(now);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets.iter().filter(|b| b.calls > 0 && b.period >= oldest && b.period <= current).fold(
            WindowTotals::default(),
            |acc, b| WindowTotals {
                calls: acc.calls + b.calls,
                failures: acc.failures + b.failures,
                slow_calls: acc.slow_calls + b.slow,
            },
        )
    }

    /// Forgets every outcome (used when the breaker closes again).
    pub fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn outcomes_leave_the_window_after_its_length() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(MINUTE, t0);
        w.record(t0, true, false);
        w.record(t0 + Duration::from_secs(30), false, true);
        let at_59 = w.totals(t0 + Duration::from_secs(59));
        assert_eq!(at_59, WindowTotals { calls: 2, failures: 1, slow_calls: 1 });
        // The first bucket [0 s, 6 s) has left the window once we are in [60 s, 66 s).
        let at_61 = w.totals(t0 + Duration::from_secs(61));
        assert_eq!(at_61.calls, 1);
        assert_eq!(at_61.failures, 0);
        assert_eq!(w.totals(t0 + Duration::from_secs(120)).calls, 0);
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(MINUTE, t0);
        w.record(t0, true, false);
        w.record(t0 + MINUTE, false, false); // same ring slot, next lap
        let totals = w.totals(t0 + MINUTE);
        assert_eq!(totals.calls, 1);
        assert_eq!(totals.failures, 0);
    }

    #[test]
    fn rates_are_percentages_and_zero_without_calls() {
        let t = WindowTotals { calls: 4, failures: 1, slow_calls: 2 };
        assert_eq!(t.failure_rate(), 25.0);
        assert_eq!(t.slow_call_rate(), 50.0);
        assert_eq!(WindowTotals::default().failure_rate(), 0.0);
    }
}
