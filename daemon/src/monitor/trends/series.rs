//! Rolled-up time series: per metric, fixed-width buckets at two resolutions.
//!
//! Every sample goes into a 10-second bucket (kept for an hour) and a 1-minute bucket (kept for a
//! day), each holding count, sum, min, max and the last value, so any coarser step is an exact
//! merge of buckets. Pure: callers pass `at_ms`. Invariant: buckets of one ring are sorted by
//! start, aligned on the ring's step, and none is older than the ring keeps.

use std::collections::VecDeque;

use serde::Serialize;
use utoipa::ToSchema;

/// A rollup resolution: bucket width and how long buckets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub step_ms: u64,
    pub keep_ms: u64,
}

/// 10 s buckets for the last hour, 1 min buckets for the last 24 h.
pub const RESOLUTIONS: [Resolution; 2] =
    [Resolution { step_ms: 10_000, keep_ms: 3_600_000 }, Resolution { step_ms: 60_000, keep_ms: 86_400_000 }];

/// Aggregates of the samples in `[start_ms, start_ms + step)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Bucket {
    pub start_ms: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
}

impl Bucket {
    pub fn new(start_ms: u64, value: f64) -> Self {
        Self { start_ms, count: 1, sum: value, min: value, max: value, last: value }
    }

    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last = value;
    }

    /// Merges a later bucket into this one.
    pub fn merge(&mut self, later: &Bucket) {
        self.count += later.count;
        self.sum += later.sum;
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.last = later.last;
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum / self.count as f64 }
    }
}

/// One resolution's buckets.
#[derive(Debug, Clone)]
pub struct Ring {
    pub resolution: Resolution,
    buckets: VecDeque<Bucket>,
}

impl Ring {
    pub fn new(resolution: Resolution) -> Self {
        Self { resolution, buckets: VecDeque::new() }
    }

    fn align(&self, at_ms: u64) -> u64 {
        at_ms - at_ms % self.resolution.step_ms
    }

    /// Adds a sample; returns the start of the bucket it went into.
    pub fn add(&mut self, at_ms: u64, value: f64) -> u64 {
        let start = self.align(at_ms);
        match self.buckets.iter().rposition(|b| b.start_ms <= start) {
            Some(i) if self.buckets[i].start_ms == start => self.buckets[i].add(value),
            Some(i) => self.buckets.insert(i + 1, Bucket::new(start, value)),
            None => self.buckets.push_front(Bucket::new(start, value)),
        }
        self.prune(at_ms);
        start
    }

    /// Puts a whole bucket back (loading history); an existing bucket of that start is replaced.
    pub fn restore(&mut self, bucket: Bucket, now_ms: u64) {
        let start = self.align(bucket.start_ms);
        let bucket = Bucket { start_ms: start, ..bucket };
        match self.buckets.iter().rposition(|b| b.start_ms <= start) {
            Some(i) if self.buckets[i].start_ms == start => self.buckets[i] = bucket,
            Some(i) => self.buckets.insert(i + 1, bucket),
            None => self.buckets.push_front(bucket),
        }
        self.prune(now_ms);
    }

    fn prune(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(self.resolution.keep_ms);
        while self.buckets.front().is_some_and(|b| b.start_ms + self.resolution.step_ms <= oldest) {
            self.buckets.pop_front();
        }
    }

    pub fn get(&self, start_ms: u64) -> Option<Bucket> {
        self.buckets.iter().find(|b| b.start_ms == start_ms).copied()
    }

    /// Buckets starting at or after `from_ms`, merged into groups of `step_ms` (a multiple of the
    /// ring's step), oldest first.
    pub fn range(&self, from_ms: u64, step_ms: u64) -> Vec<Bucket> {
        let mut out: Vec<Bucket> = Vec::new();
        for b in self.buckets.iter().filter(|b| b.start_ms + self.resolution.step_ms > from_ms) {
            let group = b.start_ms - b.start_ms % step_ms;
            match out.last_mut() {
                Some(last) if last.start_ms == group => last.merge(b),
                _ => out.push(Bucket { start_ms: group, ..*b }),
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_roll_up_into_aligned_buckets_with_exact_aggregates() {
        let mut ring = Ring::new(RESOLUTIONS[0]);
        assert_eq!(ring.add(10_500, 1.0), 10_000);
        ring.add(19_999, 3.0);
        ring.add(20_000, 10.0);
        let b = ring.get(10_000).unwrap();
        assert_eq!((b.count, b.sum, b.min, b.max, b.last), (2, 4.0, 1.0, 3.0, 3.0));
        assert_eq!(ring.len(), 2);
        // Coarser groups are exact merges.
        let merged = ring.range(0, 60_000);
        assert_eq!(merged.len(), 1);
        assert_eq!((merged[0].count, merged[0].mean(), merged[0].max), (3, 14.0 / 3.0, 10.0));
    }

    #[test]
    fn buckets_older_than_the_ring_keeps_are_dropped() {
        let mut ring = Ring::new(RESOLUTIONS[0]);
        ring.add(0, 1.0);
        ring.add(3_600_000, 2.0);
        assert_eq!(ring.len(), 2, "the first bucket still overlaps the last hour");
        ring.add(3_610_000, 2.0);
        assert_eq!(ring.range(0, 10_000).first().unwrap().start_ms, 3_600_000);
    }

    #[test]
    fn restored_buckets_are_placed_in_order_and_later_samples_merge_into_them() {
        let mut ring = Ring::new(RESOLUTIONS[1]);
        ring.restore(Bucket::new(120_000, 5.0), 130_000);
        ring.restore(Bucket::new(60_000, 1.0), 130_000);
        ring.add(125_000, 7.0);
        let all = ring.range(0, 60_000);
        assert_eq!(all.iter().map(|b| b.start_ms).collect::<Vec<_>>(), [60_000, 120_000]);
        assert_eq!((all[1].count, all[1].last), (2, 7.0));
    }
}
