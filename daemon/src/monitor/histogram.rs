//! A fixed-bucket latency histogram that many threads record into without locks.
//!
//! The bucket bounds are explicit (Prometheus practice, notes §3.3): they are the `le` bounds of
//! `voxperf_http_request_duration_seconds`, and quantiles are estimated from them the way
//! Prometheus' `histogram_quantile()` does — linear interpolation inside the bucket that holds
//! the rank — capped by the largest value seen. Invariant: `count` equals the sum of the bucket
//! counts of any snapshot taken while nothing records, and bucket `i` counts values `<=
//! BOUNDS_US[i]` that are above the previous bound (the last bucket is `+Inf`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

/// Upper bounds in microseconds: 0.1 ms to 60 s, about three per decade, finer where web
/// latencies usually fall (1–100 ms).
pub const BOUNDS_US: [u64; 22] = [
    100, 250, 500, 1_000, 2_500, 5_000, 7_500, 10_000, 25_000, 50_000, 75_000, 100_000, 250_000, 500_000, 750_000,
    1_000_000, 2_500_000, 5_000_000, 7_500_000, 10_000_000, 30_000_000, 60_000_000,
];
/// Buckets including `+Inf`.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The recording side: atomics only.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    BOUNDS_US.partition_point(|&bound| bound < us)
}

impl Histogram {
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        // Reading first keeps the line shared between cores: the maximum rarely changes.
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
        }
    }
}

/// Plain counts, to add, subtract and ask quantiles of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
    /// Largest value seen (over the histogram's life: a difference keeps the newer maximum).
    pub max_us: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        Self { buckets: [0; BUCKETS], sum_us: 0, max_us: 0 }
    }
}

/// p50, p95, p99 and the mean, in milliseconds (0 without observations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// What was recorded since `earlier`; when a counter went backwards (a reset in between),
    /// everything in `self` is new.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        if self.buckets.iter().zip(earlier.buckets).any(|(now, before)| *now < before) {
            return *self;
        }
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i] - earlier.buckets[i]),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            max_us: self.max_us,
        }
    }

    /// The `q` quantile (0..=1) in microseconds, as `histogram_quantile()` estimates it.
    pub fn quantile_us(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut cumulative = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (cumulative + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { BOUNDS_US[i - 1] as f64 };
                let upper = BOUNDS_US.get(i).map_or(self.max_us as f64, |&b| b as f64);
                let within = (rank - cumulative as f64) / n as f64;
                let estimate = lower + (upper - lower) * within.clamp(0.0, 1.0);
                return estimate.min(self.max_us as f64).max(lower.min(self.max_us as f64));
            }
            cumulative += n;
        }
        self.max_us as f64
    }

    pub fn percentiles(&self) -> Percentiles {
        let count = self.count();
        Percentiles {
            p50_ms: self.quantile_us(0.50) / 1000.0,
            p95_ms: self.quantile_us(0.95) / 1000.0,
            p99_ms: self.quantile_us(0.99) / 1000.0,
            mean_ms: if count == 0 { 0.0 } else { self.sum_us as f64 / count as f64 / 1000.0 },
            max_ms: if count == 0 { 0.0 } else { self.max_us as f64 / 1000.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_ms: &[f64]) -> HistogramSnapshot {
        let h = Histogram::default();
        for v in values_ms {
            h.record(Duration::from_secs_f64(v / 1000.0));
        }
        h.snapshot()
    }

    #[test]
    fn values_land_in_the_bucket_whose_upper_bound_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100), 0);
        assert_eq!(bucket_of(101), 1);
        assert_eq!(bucket_of(60_000_000), BOUNDS_US.len() - 1);
        assert_eq!(bucket_of(60_000_001), BOUNDS_US.len());
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_and_never_exceed_the_maximum() {
        // 100 values of 3 ms (bucket 2.5-5 ms) and one of 40 ms.
        let mut values = vec![3.0; 100];
        values.push(40.0);
        let p = histogram(&values).percentiles();
        assert!(p.p50_ms > 2.5 && p.p50_ms <= 5.0, "{p:?}");
        assert!(p.p99_ms <= 5.0, "{p:?}");
        assert_eq!(p.max_ms, 40.0);
        let single = histogram(&[7.0]).percentiles();
        assert!(single.p99_ms <= 7.0 && single.p99_ms > 5.0, "{single:?}");
        assert_eq!(histogram(&[]).percentiles(), Percentiles::default());
    }

    #[test]
    fn a_difference_holds_only_what_came_later_and_a_reset_counts_everything() {
        let h = Histogram::default();
        h.record(Duration::from_millis(1));
        let before = h.snapshot();
        h.record(Duration::from_millis(20));
        h.record(Duration::from_millis(20));
        let delta = h.snapshot().since(&before);
        assert_eq!(delta.count(), 2);
        assert!(delta.percentiles().p50_ms > 10.0);
        let after_reset = histogram(&[1.0]);
        assert_eq!(after_reset.since(&h.snapshot()).count(), 1);
    }
}
