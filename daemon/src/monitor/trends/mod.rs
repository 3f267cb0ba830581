//! Trends: every metric the monitor observes, as rolled-up time series that survive a restart.
//!
//! Samples are recorded in memory ([`series`]) and every bucket they touch is marked dirty;
//! [`Trends::flush`] writes the dirty buckets to Postgres (`voxperfd.trend_buckets`, [`store`]),
//! overwriting the row of the same bucket, so writing a bucket again — an open one at every
//! collection, or after a restart that loaded it — is idempotent. At start [`Trends::load`] reads
//! back the last day of this instance's buckets. Invariant: a bucket in Postgres is never newer
//! than the one in memory, and a failed flush keeps its buckets dirty for the next attempt.

pub mod series;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

pub use series::{Bucket, RESOLUTIONS, Resolution, Ring};
pub use store::TrendStore;

use crate::db;

/// Custom metrics tracked at most (each costs two rings).
pub const MAX_CUSTOM_SERIES: usize = 200;
/// Points one answer may hold.
const MAX_POINTS: u64 = 1440;

/// The built-in series: name, unit, what it is.
pub const CATALOGUE: &[(&str, &str, &str)] = &[
    ("http.requests_per_second", "req/s", "HTTP requests per second"),
    ("http.error_rate", "%", "share of HTTP responses with status 500 or above"),
    ("http.latency_p50", "ms", "median HTTP response time"),
    ("http.latency_p95", "ms", "95th percentile HTTP response time"),
    ("http.latency_p99", "ms", "99th percentile HTTP response time"),
    ("cache.hit_rate", "%", "lookups answered by L1 or L2"),
    ("system.cpu", "%", "host CPU use"),
    ("system.memory", "%", "host memory use"),
    ("system.disk", "%", "use of the disk holding the working directory"),
    ("process.cpu", "%", "voxperfd's CPU use, share of all cores"),
    ("process.memory", "bytes", "voxperfd's resident memory"),
    ("redis.memory", "bytes", "Redis used_memory"),
    ("redis.hit_rate", "%", "Redis keyspace hits over lookups"),
    ("redis.clients", "count", "Redis connected clients"),
    ("db.connections", "count", "connections to the database"),
    ("db.transactions_per_second", "tx/s", "commits and rollbacks per second"),
    ("db.buffer_hit_rate", "%", "shared buffer hits over block reads"),
    ("db.deadlocks", "count", "deadlocks detected in the interval"),
    ("db.queries_per_second", "q/s", "statement executions per second (voxperf.query_stats)"),
    ("db.query_mean", "ms", "mean statement time in the interval"),
    ("db.query_p95", "ms", "95th percentile of statement times in the interval (per statement, weighted by calls)"),
    ("db.slow_queries", "count", "new entries in voxperf.slow_queries"),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown metric {0:?}; GET /api/performance/trends without `metric` lists the known ones")]
    UnknownMetric(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("too many custom metrics (at most {MAX_CUSTOM_SERIES})")]
    TooManySeries,
}

/// A catalogue entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricInfo {
    pub name: String,
    pub unit: String,
    pub description: String,
    /// Buckets in memory at the finest resolution.
    pub points: usize,
}

/// One point of an answer.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Point {
    /// Start of the step (Unix ms).
    pub t: u64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub count: u64,
}

/// `GET /api/performance/trends` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrendSeries {
    pub metric: String,
    pub unit: String,
    pub window_ms: u64,
    pub step_ms: u64,
    /// The rollup the points were read from (10000 or 60000).
    pub resolution_ms: u64,
    pub points: Vec<Point>,
}

#[derive(Debug)]
struct Series {
    unit: String,
    rings: [Ring; 2],
}

impl Series {
    fn new(unit: &str) -> Self {
        Self { unit: unit.to_owned(), rings: RESOLUTIONS.map(Ring::new) }
    }
}

#[derive(Debug, Default)]
struct Inner {
    series: BTreeMap<String, Series>,
    /// (metric, resolution index, bucket start) written since the last flush.
    dirty: BTreeSet<(String, usize, u64)>,
}

#[derive(Debug, Default)]
pub struct Trends {
    inner: Mutex<Inner>,
}

fn builtin(name: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    CATALOGUE.iter().find(|(n, _, _)| *n == name)
}

/// Parses `90`, `30s`, `15m`, `1h`, `1d` into milliseconds.
pub fn parse_duration(field: &'static str, s: &str) -> Result<u64, Error> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| Error::Invalid { field, reason: format!("{s:?} is not like 30s, 15m, 1h or 1d") })?;
    let unit_ms = match unit {
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(Error::Invalid { field, reason: format!("{s:?}: unit must be s, m, h or d") }),
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0).ok_or(Error::Invalid { field, reason: "must be positive".into() })
}

impl Trends {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a built-in metric's sample (`name` must be in [`CATALOGUE`]).
    pub fn record(&self, name: &str, at_ms: u64, value: f64) {
        let unit = builtin(name).map_or("", |(_, u, _)| u);
        let _ = self.record_with_unit(name, unit, at_ms, value, false);
    }

    /// Records a custom metric's sample (`custom.<name>`), refusing a new series beyond the bound.
    pub fn record_custom(&self, name: &str, unit: &str, at_ms: u64, value: f64) -> Result<(), Error> {
        self.record_with_unit(&format!("custom.{name}"), unit, at_ms, value, true)
    }

    fn record_with_unit(&self, name: &str, unit: &str, at_ms: u64, value: f64, custom: bool) -> Result<(), Error> {
        if !value.is_finite() {
            return Ok(());
        }
        let mut inner = self.lock();
        if !inner.series.contains_key(name) {
            let customs = inner.series.keys().filter(|k| k.starts_with("custom.")).count();
            if custom && customs >= MAX_CUSTOM_SERIES {
                return Err(Error::TooManySeries);
            }
            inner.series.insert(name.to_owned(), Series::new(unit));
        }
        let series = inner.series.get_mut(name).expect("inserted above");
        let starts: Vec<u64> = series.rings.iter_mut().map(|r| r.add(at_ms, value)).collect();
        for (i, start) in starts.into_iter().enumerate() {
            inner.dirty.insert((name.to_owned(), i, start));
        }
        Ok(())
    }

    /// Known metrics: the built-in ones and every custom one seen.
    pub fn catalogue(&self) -> Vec<MetricInfo> {
        let inner = self.lock();
        let points = |name: &str| inner.series.get(name).map_or(0, |s| s.rings[0].len());
        let mut out: Vec<MetricInfo> = CATALOGUE
            .iter()
            .map(|(name, unit, description)| MetricInfo {
                name: (*name).to_owned(),
                unit: (*unit).to_owned(),
                description: (*description).to_owned(),
                points: points(name),
            })
            .collect();
        for (name, series) in inner.series.iter().filter(|(n, _)| n.starts_with("custom.")) {
            out.push(MetricInfo {
                name: name.clone(),
                unit: series.unit.clone(),
                description: "custom metric (POST /api/performance/metrics)".into(),
                points: series.rings[0].len(),
            });
        }
        out
    }

    /// The points of `metric` over the last `window_ms`, one per `step_ms` (default: about 60
    /// points), from the finest rollup that covers the window.
    pub fn query(&self, metric: &str, window_ms: u64, step_ms: Option<u64>, now_ms: u64) -> Result<TrendSeries, Error> {
        let day = RESOLUTIONS[1].keep_ms;
        if window_ms > day {
            return Err(Error::Invalid { field: "window", reason: "at most 24h of history is kept".into() });
        }
        let inner = self.lock();
        let known_builtin = builtin(metric);
        let series = inner.series.get(metric);
        if known_builtin.is_none() && series.is_none() {
            return Err(Error::UnknownMetric(metric.to_owned()));
        }
        let wanted = step_ms.unwrap_or(window_ms / 60);
        if step_ms.is_some_and(|s| s < RESOLUTIONS[0].step_ms) {
            return Err(Error::Invalid { field: "step", reason: "at least 10s (the finest rollup)".into() });
        }
        let index = usize::from(window_ms > RESOLUTIONS[0].keep_ms || wanted >= RESOLUTIONS[1].step_ms);
        let resolution = RESOLUTIONS[index];
        // Round the step up to a multiple of the rollup, and keep the answer bounded.
        let mut step = wanted.max(resolution.step_ms).div_ceil(resolution.step_ms) * resolution.step_ms;
        if window_ms / step > MAX_POINTS {
            step = window_ms.div_ceil(MAX_POINTS).div_ceil(resolution.step_ms) * resolution.step_ms;
        }
        let from = now_ms.saturating_sub(window_ms);
        let points = series
            .map(|s| s.rings[index].range(from, step))
            .unwrap_or_default()
            .into_iter()
            .map(|b| Point { t: b.start_ms, avg: b.mean(), min: b.min, max: b.max, last: b.last, count: b.count })
            .collect();
        Ok(TrendSeries {
            metric: metric.to_owned(),
            unit: series.map_or_else(|| known_builtin.map_or("", |b| b.1).to_owned(), |s| s.unit.clone()),
            window_ms,
            step_ms: step,
            resolution_ms: resolution.step_ms,
            points,
        })
    }

    /// Writes the buckets touched since the last flush; on failure they stay dirty.
    pub async fn flush(&self, store: &TrendStore) -> Result<usize, db::Error> {
        let (keys, rows) = {
            let mut inner = self.lock();
            let keys = std::mem::take(&mut inner.dirty);
            let rows: Vec<store::Row> = keys
                .iter()
                .filter_map(|(metric, i, start)| {
                    let series = inner.series.get(metric)?;
                    let bucket = series.rings[*i].get(*start)?;
                    Some(store::Row {
                        metric: metric.clone(),
                        unit: series.unit.clone(),
                        step_ms: RESOLUTIONS[*i].step_ms,
                        bucket,
                    })
                })
                .collect();
            (keys, rows)
        };
        if rows.is_empty() {
            return Ok(0);
        }
        match store.save(&rows).await {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                self.lock().dirty.extend(keys);
                Err(e)
            }
        }
    }

    /// Reads back the history kept in Postgres (at start, before the first collection).
    pub async fn load(&self, store: &TrendStore, now_ms: u64) -> Result<usize, db::Error> {
        let rows = store.load(now_ms.saturating_sub(RESOLUTIONS[1].keep_ms)).await?;
        let mut inner = self.lock();
        let n = rows.len();
        for row in rows {
            let Some(index) = RESOLUTIONS.iter().position(|r| r.step_ms == row.step_ms) else { continue };
            let series = inner.series.entry(row.metric.clone()).or_insert_with(|| Series::new(&row.unit));
            series.rings[index].restore(row.bucket, now_ms);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("window", "1h"), Ok(3_600_000));
        assert_eq!(parse_duration("step", "10s"), Ok(10_000));
        assert_eq!(parse_duration("step", "90"), Ok(90_000));
        assert!(parse_duration("window", "1w").is_err());
        assert!(parse_duration("window", "0s").is_err());
    }

    #[test]
    fn a_query_reads_the_10s_rollup_for_an_hour_and_the_1min_rollup_beyond() {
        let t = Trends::default();
        let base = 100 * 86_400_000;
        for i in 0..180u64 {
            t.record("system.cpu", base + i * 10_000, i as f64);
        }
        let now = base + 180 * 10_000;
        let fine = t.query("system.cpu", 30 * MIN, Some(10_000), now).unwrap();
        assert_eq!((fine.resolution_ms, fine.step_ms, fine.points.len()), (10_000, 10_000, 180));
        assert_eq!(fine.unit, "%");
        let coarse = t.query("system.cpu", 2 * 3_600_000, Some(60_000), now).unwrap();
        assert_eq!(coarse.resolution_ms, 60_000);
        assert_eq!(coarse.points.len(), 30);
        assert_eq!(coarse.points[0].count, 6);
        assert_eq!(coarse.points[0].avg, 2.5);
        // Without a step, about 60 points cover the window: 2 min each over 2 h.
        assert_eq!(t.query("system.cpu", 2 * 3_600_000, None, now).unwrap().step_ms, 120_000);
    }

    #[test]
    fn unknown_metrics_and_bad_windows_are_refused_known_empty_ones_are_not() {
        let t = Trends::default();
        assert_eq!(t.query("nope", MIN, None, 0).unwrap_err(), Error::UnknownMetric("nope".into()));
        assert!(matches!(t.query("system.cpu", 2 * 86_400_000, None, 0), Err(Error::Invalid { field: "window", .. })));
        assert!(matches!(t.query("system.cpu", MIN, Some(1000), 0), Err(Error::Invalid { field: "step", .. })));
        assert!(t.query("system.cpu", MIN, None, 0).unwrap().points.is_empty());
    }

    #[test]
    fn custom_metrics_join_the_catalogue_up_to_a_bound() {
        let t = Trends::default();
        t.record_custom("api.response_time", "ms", 0, 250.0).unwrap();
        let names: Vec<String> = t.catalogue().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"custom.api.response_time".to_owned()));
        assert_eq!(t.query("custom.api.response_time", MIN, None, 1000).unwrap().unit, "ms");
        for i in 1..MAX_CUSTOM_SERIES {
            t.record_custom(&format!("m{i}"), "count", 0, 1.0).unwrap();
        }
        assert_eq!(t.record_custom("one.too.many", "count", 0, 1.0), Err(Error::TooManySeries));
        t.record_custom("m1", "count", 0, 2.0).unwrap();
    }
}
