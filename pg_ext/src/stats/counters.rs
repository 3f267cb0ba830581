//! The statistics one entry accumulates, and how one measured execution (a [`Sample`]) is
//! folded into them.
//!
//! Semantics follow pg_stat_statements 1.10 column by column (times in milliseconds, population
//! standard deviation by Welford's method, planning and execution counted separately), plus the
//! latency histogram and first/last-seen timestamps. [`Counters`] is plain old data so it can
//! live in shared memory and be written to the stats file byte for byte.

use super::histogram::Histogram;
use bytemuck::{Pod, Zeroable};

/// Which phase a sample measures; the index into the per-phase arrays of [`Counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Plan = 0,
    Exec = 1,
}

/// Block I/O of one statement (a `BufferUsage` difference), I/O times in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BufferCounters {
    pub shared_blks_hit: i64,
    pub shared_blks_read: i64,
    pub shared_blks_dirtied: i64,
    pub shared_blks_written: i64,
    pub local_blks_hit: i64,
    pub local_blks_read: i64,
    pub local_blks_dirtied: i64,
    pub local_blks_written: i64,
    pub temp_blks_read: i64,
    pub temp_blks_written: i64,
    pub blk_read_time_ns: i64,
    pub blk_write_time_ns: i64,
    pub temp_blk_read_time_ns: i64,
    pub temp_blk_write_time_ns: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct WalCounters {
    pub records: i64,
    pub fpi: i64,
    pub bytes: u64,
}

/// Add `b` to `a` word by word (a loop the compiler vectorizes). Block and WAL counters stay
/// two structs on purpose: each is at most 128 bytes, which the compiler copies inline, while
/// one 136-byte struct would be copied through `memcpy` calls on the statement path.
#[inline]
pub fn add_words<T: Pod>(a: &mut T, b: &T) {
    let a: &mut [u64] = bytemuck::cast_slice_mut(std::slice::from_mut(a));
    let b: &[u64] = bytemuck::cast_slice(std::slice::from_ref(b));
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.wrapping_add(*y);
    }
}

/// JIT work of one execution, times in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JitCounters {
    pub functions: i64,
    pub generation_time: f64,
    pub inlining_time: f64,
    pub optimization_time: f64,
    pub emission_time: f64,
}

/// One measured planning or execution of a statement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub phase: Phase,
    pub duration_ms: f64,
    /// The same duration in nanoseconds (what the histogram counts; measured as such).
    pub duration_ns: u64,
    pub rows: u64,
    pub buffers: BufferCounters,
    pub wal: WalCounters,
    pub jit: Option<JitCounters>,
}

/// Accumulated statistics of one (userid, dbid, queryid, toplevel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Counters {
    pub calls: [i64; 2],
    pub total_time: [f64; 2],
    pub min_time: [f64; 2],
    pub max_time: [f64; 2],
    pub mean_time: [f64; 2],
    /// Sum of squared differences from the mean (Welford); variance = sum_var_time / calls.
    pub sum_var_time: [f64; 2],
    pub rows: i64,
    /// Block I/O (I/O times in nanoseconds; the views show milliseconds, as
    /// pg_stat_statements does) and WAL.
    pub buffers: BufferCounters,
    pub wal: WalCounters,
    pub jit_functions: i64,
    pub jit_generation_time: f64,
    pub jit_inlining_count: i64,
    pub jit_inlining_time: f64,
    pub jit_optimization_count: i64,
    pub jit_optimization_time: f64,
    pub jit_emission_count: i64,
    pub jit_emission_time: f64,
    /// Eviction priority: the milliseconds this entry has cost (planning and execution),
    /// decayed at every eviction pass so that old costs fade. The cheapest entries are evicted
    /// first, so a rare but expensive statement outlives many cheap ones.
    pub usage: f64,
    /// `TimestampTz` (µs since 2000-01-01) of the first and latest recorded sample.
    pub first_seen: i64,
    pub last_seen: i64,
    /// The execution count at which the next example is captured (see [`Progress::capture`]).
    pub next_capture: i64,
    pub exec_histogram: Histogram,
}

/// What one sample did to its statement's counters, for the recorder's decisions about
/// examples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The phase's calls, this sample included.
    pub calls: i64,
    /// The sample is the phase's slowest so far (and not its first).
    pub new_max: bool,
    /// This execution is one to capture as an example: executions are picked with probability
    /// about [`CAPTURES_PER_DOUBLING`]/calls, drawn once per capture (the gap to the next one)
    /// so that the statement path pays a single comparison.
    pub capture: bool,
}

/// Expected example captures per doubling of a statement's executions (about this many times
/// ln(calls) over its life).
pub const CAPTURES_PER_DOUBLING: f64 = 2.0;

/// A 64-bit finalizer (splitmix64's): a well-spread hash of its input.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The execution count of the capture after the one at `calls`: picking each later execution
/// n with probability p/n makes the gap to the next pick roughly geometric with mean n/p;
/// `seed` spreads the draws (a hash of the statement and the count, so that they follow no
/// pattern of the workload).
pub fn next_capture(calls: i64, seed: u64) -> i64 {
    let n = calls.max(1) as f64;
    // A uniform draw in (0, 1].
    let u = ((mix(seed) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    // P(no pick in the next k) = (n / (n + k))^p  =>  k = n · (u^(-1/p) - 1).
    let gap = n * (u.powf(-1.0 / CAPTURES_PER_DOUBLING) - 1.0);
    calls + (gap.ceil().clamp(1.0, i64::MAX as f64 / 4.0) as i64)
}

impl Default for Counters {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl Counters {
    /// Fold one sample in. `now` is the sample's `TimestampTz`.
    pub fn accumulate(&mut self, s: &Sample, now: i64) -> Progress {
        let k = s.phase as usize;
        let t = s.duration_ms;
        let new_max = self.calls[k] > 0 && t > self.max_time[k];
        self.calls[k] += 1;
        let capture = s.phase == Phase::Exec && self.calls[k] >= self.next_capture;
        if capture {
            self.next_capture = next_capture(self.calls[k], self.calls[k] as u64 ^ self.total_time[k].to_bits());
        }
        self.total_time[k] += t;
        if self.calls[k] == 1 {
            self.min_time[k] = t;
            self.max_time[k] = t;
            self.mean_time[k] = t;
        } else {
            let old_mean = self.mean_time[k];
            self.mean_time[k] += (t - old_mean) / self.calls[k] as f64;
            self.sum_var_time[k] += (t - old_mean) * (t - self.mean_time[k]);
            // Plain comparisons: durations are never NaN (f64::min/max would handle it).
            if t < self.min_time[k] {
                self.min_time[k] = t;
            }
            if t > self.max_time[k] {
                self.max_time[k] = t;
            }
        }
        if s.phase == Phase::Exec {
            self.exec_histogram.record(s.duration_ns);
        }
        self.rows += s.rows as i64;
        add_words(&mut self.buffers, &s.buffers);
        add_words(&mut self.wal, &s.wal);
        if let Some(j) = &s.jit {
            self.jit_functions += j.functions;
            self.jit_generation_time += j.generation_time;
            self.jit_inlining_count += i64::from(j.inlining_time > 0.0);
            self.jit_inlining_time += j.inlining_time;
            self.jit_optimization_count += i64::from(j.optimization_time > 0.0);
            self.jit_optimization_time += j.optimization_time;
            self.jit_emission_count += i64::from(j.emission_time > 0.0);
            self.jit_emission_time += j.emission_time;
        }
        self.usage += t.max(0.0);
        if self.first_seen == 0 {
            self.first_seen = now;
        }
        self.last_seen = now;
        Progress { calls: self.calls[k], new_max, capture }
    }

    /// Population standard deviation of a phase, as pg_stat_statements reports it.
    pub fn stddev(&self, phase: Phase) -> f64 {
        let k = phase as usize;
        if self.calls[k] > 1 { (self.sum_var_time[k] / self.calls[k] as f64).sqrt() } else { 0.0 }
    }

    pub fn exec_percentile(&self, q: f64) -> Option<f64> {
        let k = Phase::Exec as usize;
        self.exec_histogram.percentile_ms(q, self.min_time[k], self.max_time[k])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn captures_come_about_twice_per_doubling_of_the_calls() {
        // Over many statements, the picks among 10,000 executions average 2·ln(10,000) ≈ 18.
        let mut total = 0;
        for statement in 0..200u64 {
            let (mut next, mut picks) = (next_capture(1, statement), 0);
            while next <= 10_000 {
                picks += 1;
                next = next_capture(next, statement.wrapping_mul(31) ^ next as u64);
            }
            total += picks;
        }
        let mean = f64::from(total) / 200.0;
        assert!((14.0..23.0).contains(&mean), "{mean}");
        // Early executions are picked often: the gap after the 2nd is small.
        assert!(next_capture(2, 7) < 50);
    }

    use super::*;

    fn exec(ms: f64) -> Sample {
        Sample {
            phase: Phase::Exec,
            duration_ms: ms,
            duration_ns: crate::stats::histogram::ms_to_ns(ms),
            rows: 2,
            buffers: BufferCounters { shared_blks_hit: 3, ..Default::default() },
            wal: WalCounters { records: 1, fpi: 0, bytes: 100 },
            jit: None,
        }
    }

    #[test]
    fn welford_matches_population_stddev() {
        let mut c = Counters::default();
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        for (i, &x) in xs.iter().enumerate() {
            c.accumulate(&exec(x), 1000 + i as i64);
        }
        assert_eq!(c.calls[1], 8);
        assert_eq!(c.total_time[1], 40.0);
        assert_eq!(c.mean_time[1], 5.0);
        assert!((c.stddev(Phase::Exec) - 2.0).abs() < 1e-12);
        assert_eq!((c.min_time[1], c.max_time[1]), (2.0, 9.0));
        assert_eq!(c.rows, 16);
        assert_eq!(c.buffers.shared_blks_hit, 24);
        assert_eq!(c.wal.bytes, 800);
        assert_eq!((c.first_seen, c.last_seen), (1000, 1007));
        assert_eq!(c.calls[0], 0, "planning is counted separately");
    }

    #[test]
    fn percentiles_never_exceed_max_and_are_ordered() {
        let mut c = Counters::default();
        for i in 1..=1000 {
            c.accumulate(&exec(i as f64 / 10.0), 1);
        }
        let (p50, p95, p99) =
            (c.exec_percentile(0.5).unwrap(), c.exec_percentile(0.95).unwrap(), c.exec_percentile(0.99).unwrap());
        assert!(p50 <= p95 && p95 <= p99 && p99 <= c.max_time[1]);
        assert!((p50 - 50.0).abs() / 50.0 < 0.0625);
    }

    #[test]
    fn jit_counts_only_phases_that_took_time() {
        let mut c = Counters::default();
        let mut s = exec(1.0);
        s.jit = Some(JitCounters {
            functions: 4,
            generation_time: 1.0,
            inlining_time: 0.0,
            optimization_time: 2.0,
            emission_time: 3.0,
        });
        c.accumulate(&s, 1);
        assert_eq!(
            (c.jit_functions, c.jit_inlining_count, c.jit_optimization_count, c.jit_emission_count),
            (4, 0, 1, 1)
        );
    }
}
