//! Per-entry latency histogram with log-linear buckets, from which `p50/p95/p99_exec_time` are
//! read.
//!
//! Values are nanoseconds. Below [`SUB_BUCKETS`] ns every nanosecond has its own bucket; above,
//! each power of two `[2^e, 2^(e+1))` is split into [`SUB_BUCKETS`] equal sub-buckets. A bucket is
//! therefore never wider than 1/[`SUB_BUCKETS`] of its lower bound, and reporting its midpoint is
//! off by at most half of that: **the relative error of a reported percentile is at most
//! 1/(2·[`SUB_BUCKETS`]) = 6.25 %** (before clamping to the exact min/max, which only helps).
//! `percentile_error_is_within_documented_bound` checks this against exact percentiles.
//!
//! Counts are `u32` to keep an entry small in shared memory (the histogram is most of an
//! entry). When a bucket would overflow, every bucket is halved: the shape of the distribution,
//! which is all a percentile needs, is preserved.

use bytemuck::{Pod, Zeroable};

/// Sub-buckets per power of two; 8 gives the 6.25 % bound above at 1.25 kB per histogram.
pub const SUB_BUCKET_BITS: u32 = 3;
pub const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Values from 2^42 ns (about 73 minutes) up share the last bucket; percentiles there are
/// clamped to the exact maximum the entry also keeps.
pub const MAX_EXPONENT: u32 = 42;
pub const BUCKETS: usize = SUB_BUCKETS + (MAX_EXPONENT - SUB_BUCKET_BITS) as usize * SUB_BUCKETS;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Histogram {
    counts: [u32; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("total", &self.total()).finish()
    }
}

/// Index of the bucket holding `ns`.
#[inline]
pub fn bucket_index(ns: u64) -> usize {
    if ns < SUB_BUCKETS as u64 {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros();
    if exponent >= MAX_EXPONENT {
        return BUCKETS - 1;
    }
    let sub = ((ns >> (exponent - SUB_BUCKET_BITS)) as usize) & (SUB_BUCKETS - 1);
    SUB_BUCKETS + (exponent - SUB_BUCKET_BITS) as usize * SUB_BUCKETS + sub
}

/// Inclusive lower and exclusive upper bound (ns) of bucket `index`.
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    if index < SUB_BUCKETS {
        return (index as u64, index as u64 + 1);
    }
    let row = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = ((index - SUB_BUCKETS) % SUB_BUCKETS) as u64;
    let exponent = row as u32 + SUB_BUCKET_BITS;
    let width = 1u64 << (exponent - SUB_BUCKET_BITS);
    let lower = (1u64 << exponent) + sub * width;
    (lower, lower + width)
}

impl Histogram {
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let i = bucket_index(ns);
        if self.counts[i] == u32::MAX {
            self.halve();
        }
        self.counts[i] += 1;
    }

    fn halve(&mut self) {
        for c in self.counts.iter_mut() {
            // Round up so that a bucket holding a single sample keeps it.
            *c = c.div_ceil(2);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The `q`-quantile (0 < q ≤ 1) in milliseconds by the nearest-rank definition, as the
    /// midpoint of the bucket holding that rank, clamped to `[min_ms, max_ms]`. `None` when
    /// nothing was recorded.
    pub fn percentile_ms(&self, q: f64, min_ms: f64, max_ms: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        // The smallest and largest samples are known exactly.
        if rank == total {
            return Some(max_ms);
        }
        if rank == 1 {
            return Some(min_ms);
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let (lo, hi) = bucket_bounds(i);
                let mid_ns = if hi - lo == 1 { lo as f64 } else { (lo + hi) as f64 / 2.0 };
                return Some((mid_ns / 1e6).clamp(min_ms, max_ms.max(min_ms)));
            }
        }
        Some(max_ms)
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            match a.checked_add(*b) {
                Some(sum) => *a = sum,
                None => *a = u32::MAX,
            }
        }
    }
}

/// Milliseconds (as the executor reports them) to whole nanoseconds, saturating.
#[inline]
pub fn ms_to_ns(ms: f64) -> u64 {
    if ms <= 0.0 || !ms.is_finite() { 0 } else { (ms * 1e6) as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_the_range() {
        let mut expected_lower = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(lo, expected_lower, "bucket {i} starts where the previous ended");
            assert!(hi > lo);
            assert_eq!(bucket_index(lo), i);
            assert_eq!(bucket_index(hi - 1), i);
            expected_lower = hi;
        }
        assert_eq!(expected_lower, 1 << MAX_EXPONENT);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_is_at_most_an_eighth_of_its_lower_bound() {
        for i in SUB_BUCKETS..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert!((hi - lo) * SUB_BUCKETS as u64 <= lo, "bucket {i}: [{lo},{hi})");
        }
    }

    /// A small deterministic generator so the test needs no extra crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn percentile_error_is_within_documented_bound() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for distribution in 0..4 {
            let mut h = Histogram::default();
            let mut values = Vec::new();
            for _ in 0..20_000 {
                let r = xorshift(&mut seed);
                let ns = match distribution {
                    0 => 10_000 + r % 90_000,                // 10–100 µs, uniform
                    1 => 1u64 << (10 + r % 25),              // powers of two, wide range
                    2 => (r % 1_000) * (r % 1_000) * 37 + 1, // heavy tail
                    _ => 50_000 + (r % 7) * 1_000_000_000,   // clusters of seconds
                };
                h.record(ns);
                values.push(ns as f64 / 1e6);
            }
            values.sort_by(f64::total_cmp);
            let (min, max) = (values[0], values[values.len() - 1]);
            for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
                let exact = values[rank - 1];
                let got = h.percentile_ms(q, min, max).unwrap();
                let err = (got - exact).abs() / exact;
                assert!(
                    err <= 1.0 / (2.0 * SUB_BUCKETS as f64) + 1e-12,
                    "distribution {distribution} q={q}: exact {exact} got {got} err {err}"
                );
            }
        }
    }

    #[test]
    fn percentiles_are_ordered_and_clamped_to_min_max() {
        let mut h = Histogram::default();
        for ms in [1.0, 2.0, 3.0, 50.0, 51.0, 1000.0] {
            h.record(ms_to_ns(ms));
        }
        let p = |q| h.percentile_ms(q, 1.0, 1000.0).unwrap();
        assert!(p(0.5) <= p(0.95) && p(0.95) <= p(0.99) && p(0.99) <= 1000.0);
        assert_eq!(p(1.0), 1000.0);
        assert!(Histogram::default().percentile_ms(0.5, 0.0, 0.0).is_none());
    }

    #[test]
    fn overflowing_bucket_halves_and_keeps_the_shape() {
        let mut h = Histogram::default();
        let fast = bucket_index(ms_to_ns(0.1));
        h.counts[fast] = u32::MAX;
        h.counts[bucket_index(ms_to_ns(10.0))] = u32::MAX / 4;
        h.record(ms_to_ns(0.1));
        assert_eq!(h.counts[fast], u32::MAX / 2 + 2);
        // 80 % of samples are fast, so the median is still the fast bucket.
        assert!(h.percentile_ms(0.5, 0.0, 100.0).unwrap() < 0.2);
    }
}
