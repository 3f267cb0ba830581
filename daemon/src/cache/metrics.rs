//! The cache's counters, per level.
//!
//! Each event is counted twice on purpose: in atomics that `GET /api/cache/stats` reads back, and
//! through the `metrics` facade for the Prometheus exporter (a later issue installs the recorder;
//! until then those calls are no-ops). Invariant: every lookup ends in exactly one of hit, miss
//! or stale for each level it reached.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    L1,
    L2,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::L1 => "l1",
            Level::L2 => "l2",
        }
    }
}

/// How a lookup at one level ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// Found, but invalidated or expired: counted apart from plain misses.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationKind {
    Tag,
    Pattern,
    Key,
    Epoch,
}

#[derive(Debug, Default)]
struct LevelCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
    lookups: AtomicU64,
}

#[derive(Debug, Default)]
pub struct CacheMetrics {
    l1: LevelCounters,
    l2: LevelCounters,
    loads: AtomicU64,
    loader_errors: AtomicU64,
    stores_skipped: AtomicU64,
    l1_evictions: AtomicU64,
    bypassed: AtomicU64,
    l2_bytes_written: AtomicU64,
    l2_bytes_read: AtomicU64,
    invalidations: [AtomicU64; 4],
    resyncs: AtomicU64,
}

/// Counters of one level, as the stats API shows them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LevelStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries found but invalidated or expired.
    pub stale: u64,
    pub errors: u64,
    /// hits / (hits + misses + stale); 0 without lookups.
    pub hit_rate: f64,
    pub mean_latency_us: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvalidationStats {
    pub tags: u64,
    pub patterns: u64,
    pub keys: u64,
    pub epochs: u64,
}

/// Counters of the whole cache.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricsSnapshot {
    pub l1: LevelStats,
    pub l2: LevelStats,
    pub loads: u64,
    pub loader_errors: u64,
    /// Loaded values not stored because an invalidation raced their loader.
    pub stores_skipped: u64,
    pub l1_evictions: u64,
    /// Lookups that skipped cached table data because the invalidation listener was down.
    pub bypassed: u64,
    pub l2_bytes_written: u64,
    pub l2_bytes_read: u64,
    pub invalidations: InvalidationStats,
    pub resyncs: u64,
}

impl CacheMetrics {
    fn level(&self, level: Level) -> &LevelCounters {
        match level {
            Level::L1 => &self.l1,
            Level::L2 => &self.l2,
        }
    }

    pub fn lookup(&self, level: Level, outcome: Outcome, took: Duration) {
        let c = self.level(level);
        let result = match outcome {
            Outcome::Hit => {
                c.hits.fetch_add(1, Relaxed);
                "hit"
            }
            Outcome::Miss => {
                c.misses.fetch_add(1, Relaxed);
                "miss"
            }
            Outcome::Stale => {
                c.stale.fetch_add(1, Relaxed);
                "stale"
            }
        };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        c.latency_us.fetch_add(us, Relaxed);
        c.lookups.fetch_add(1, Relaxed);
        metrics::counter!("voxperf_cache_lookups_total", "level" => level.label(), "result" => result).increment(1);
        metrics::histogram!("voxperf_cache_lookup_duration_seconds", "level" => level.label())
            .record(took.as_secs_f64());
    }

    pub fn l2_error(&self) {
        self.l2.errors.fetch_add(1, Relaxed);
        metrics::counter!("voxperf_cache_errors_total", "level" => "l2").increment(1);
    }

    pub fn load(&self, ok: bool) {
        self.loads.fetch_add(1, Relaxed);
        if !ok {
            self.loader_errors.fetch_add(1, Relaxed);
            metrics::counter!("voxperf_cache_loader_errors_total").increment(1);
        }
        metrics::counter!("voxperf_cache_loads_total").increment(1);
    }

    pub fn store_skipped(&self) {
        self.stores_skipped.fetch_add(1, Relaxed);
        metrics::counter!("voxperf_cache_stores_skipped_total").increment(1);
    }

    pub fn l1_eviction(&self) {
        self.l1_evictions.fetch_add(1, Relaxed);
        metrics::counter!("voxperf_cache_evictions_total", "level" => "l1").increment(1);
    }

    pub fn bypass(&self) {
        self.bypassed.fetch_add(1, Relaxed);
        metrics::counter!("voxperf_cache_bypassed_total").increment(1);
    }

    pub fn l2_bytes(&self, written: usize, read: usize) {
        self.l2_bytes_written.fetch_add(written as u64, Relaxed);
        self.l2_bytes_read.fetch_add(read as u64, Relaxed);
        metrics::counter!("voxperf_cache_l2_bytes_written_total").increment(written as u64);
        metrics::counter!("voxperf_cache_l2_bytes_read_total").increment(read as u64);
    }

    pub fn invalidation(&self, kind: InvalidationKind) {
        let (i, label) = match kind {
            InvalidationKind::Tag => (0, "tag"),
            InvalidationKind::Pattern => (1, "pattern"),
            InvalidationKind::Key => (2, "key"),
            InvalidationKind::Epoch => (3, "epoch"),
        };
        self.invalidations[i].fetch_add(1, Relaxed);
        metrics::counter!("voxperf_cache_invalidations_total", "kind" => label).increment(1);
    }

    pub fn resync(&self) {
        self.resyncs.fetch_add(1, Relaxed);
        metrics::counter!("voxperf_cache_generation_resyncs_total").increment(1);
    }

    /// Publishes L1's current size (a gauge: only the moka cache knows it).
    pub fn l1_size(&self, entries: u64, bytes: u64) {
        metrics::gauge!("voxperf_cache_entries", "level" => "l1").set(entries as f64);
        metrics::gauge!("voxperf_cache_bytes", "level" => "l1").set(bytes as f64);
    }

    fn level_stats(&self, level: Level) -> LevelStats {
        let c = self.level(level);
        let (hits, misses, stale) = (c.hits.load(Relaxed), c.misses.load(Relaxed), c.stale.load(Relaxed));
        let lookups = c.lookups.load(Relaxed);
        let total = hits + misses + stale;
        LevelStats {
            hits,
            misses,
            stale,
            errors: c.errors.load(Relaxed),
            hit_rate: if total == 0 { 0.0 } else { hits as f64 / total as f64 },
            mean_latency_us: if lookups == 0 { 0.0 } else { c.latency_us.load(Relaxed) as f64 / lookups as f64 },
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            l1: self.level_stats(Level::L1),
            l2: self.level_stats(Level::L2),
            loads: self.loads.load(Relaxed),
            loader_errors: self.loader_errors.load(Relaxed),
            stores_skipped: self.stores_skipped.load(Relaxed),
            l1_evictions: self.l1_evictions.load(Relaxed),
            bypassed: self.bypassed.load(Relaxed),
            l2_bytes_written: self.l2_bytes_written.load(Relaxed),
            l2_bytes_read: self.l2_bytes_read.load(Relaxed),
            invalidations: InvalidationStats {
                tags: self.invalidations[0].load(Relaxed),
                patterns: self.invalidations[1].load(Relaxed),
                keys: self.invalidations[2].load(Relaxed),
                epochs: self.invalidations[3].load(Relaxed),
            },
            resyncs: self.resyncs.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_counts_stale_entries_as_misses() {
        let m = CacheMetrics::default();
        m.lookup(Level::L1, Outcome::Hit, Duration::from_micros(2));
        m.lookup(Level::L1, Outcome::Hit, Duration::from_micros(4));
        m.lookup(Level::L1, Outcome::Stale, Duration::from_micros(3));
        m.lookup(Level::L1, Outcome::Miss, Duration::from_micros(3));
        let s = m.snapshot().l1;
        assert_eq!((s.hits, s.misses, s.stale), (2, 1, 1));
        assert_eq!(s.hit_rate, 0.5);
        assert_eq!(s.mean_latency_us, 3.0);
        assert_eq!(m.snapshot().l2.hit_rate, 0.0);
    }
}
