//! Collectors: one [`Readings`] per `METRICS_INTERVAL`, from every source the monitor watches.
//!
//! Sources: the request metrics and the cache (in process), the host and this process
//! (sysinfo), Redis (`INFO`), Postgres (`pg_stat_database`) and the extension
//! (`voxperf.query_stats`, `voxperf.slow_queries`). Counters become per-interval figures against
//! the previous collection; the first collection only sets the baseline for them. Each remote
//! source is read concurrently under [`SOURCE_TIMEOUT`]; one that fails is absent from the
//! readings with its reason in `errors`, and its baseline is kept for the next interval.

pub mod database;
pub mod redis;
pub mod system;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use utoipa::ToSchema;

pub use database::{ExtensionReading, PostgresReading};
pub use redis::RedisReading;
pub use system::{ProcessReading, SystemProbe, SystemReading};

use super::histogram::Percentiles;
use super::requests::{RequestMetrics, Totals};
use crate::cache::Cache;
use crate::db::Db;
use crate::db::activity::DatabaseActivity;

/// How long one remote source may take.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct HttpReading {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub requests_per_second: f64,
    /// Null without requests in the interval.
    pub error_rate_percent: Option<f64>,
    pub latency: Option<Percentiles>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CacheReading {
    /// Lookups in the interval (each starts at L1).
    pub lookups: u64,
    /// Of which answered by L1 or L2.
    pub hits: u64,
    pub hit_rate_percent: Option<f64>,
    pub l1_entries: u64,
    pub l1_bytes: u64,
}

/// Everything one collection saw.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Readings {
    pub at_ms: u64,
    /// Since the previous collection (0 for the first).
    pub interval_ms: u64,
    pub http: HttpReading,
    pub cache: CacheReading,
    pub system: Option<SystemReading>,
    pub process: Option<ProcessReading>,
    pub redis: Option<RedisReading>,
    pub postgres: Option<PostgresReading>,
    pub extension: Option<ExtensionReading>,
    /// Sources that could not be read, with the reason.
    pub errors: BTreeMap<String, String>,
}

/// The collectors and their baselines.
#[derive(Debug)]
pub struct Collectors {
    db: Arc<Db>,
    cache: Cache,
    requests: Arc<RequestMetrics>,
    probe: SystemProbe,
    last_at_ms: Option<u64>,
    http: Option<Totals>,
    cache_counts: Option<(u64, u64)>,
    redis: Option<(u64, u64)>,
    postgres: Option<DatabaseActivity>,
    statements: Option<database::StatementTotals>,
    /// Newest slow-query capture seen; `None` before the first reading.
    slow_mark: Option<Option<SystemTime>>,
}

async fn timed<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(SOURCE_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {SOURCE_TIMEOUT:?}")),
    }
}

impl Collectors {
    pub fn new(db: Arc<Db>, cache: Cache, requests: Arc<RequestMetrics>) -> Self {
        Self {
            db,
            cache,
            requests,
            probe: SystemProbe::new(),
            last_at_ms: None,
            http: None,
            cache_counts: None,
            redis: None,
            postgres: None,
            statements: None,
            slow_mark: None,
        }
    }

    /// One collection at `now_ms`.
    pub async fn collect(&mut self, now_ms: u64) -> Readings {
        let interval_ms = self.last_at_ms.map_or(0, |t| now_ms.saturating_sub(t));
        let seconds = interval_ms as f64 / 1000.0;
        self.last_at_ms = Some(now_ms);
        let mut errors = BTreeMap::new();

        let (db, cache) = (self.db.clone(), self.cache.clone());
        let slow_after = self.slow_mark.flatten();
        let (redis_info, activity, statements, slow) = tokio::join!(
            async {
                match cache.l2_info().await {
                    None => None,
                    Some(r) => Some(timed(async { r }).await),
                }
            },
            timed(db.database_activity()),
            timed(db.statement_counters()),
            timed(db.slow_queries_since(slow_after)),
        );

        let http = self.http_reading(seconds);
        let cache_reading = self.cache_reading();
        let (system, process) = self.probe.read();

        let redis = match redis_info {
            None => None,
            Some(Ok(info)) => {
                let reading = redis::reading(&info, self.redis);
                if let Some(r) = &reading {
                    self.redis = Some((r.keyspace_hits, r.keyspace_misses));
                }
                reading
            }
            Some(Err(e)) => {
                errors.insert("redis".into(), e);
                None
            }
        };
        let postgres = match activity {
            Ok(now) => {
                let reading = database::postgres(&now, self.postgres.as_ref(), seconds);
                self.postgres = Some(now);
                Some(reading)
            }
            Err(e) => {
                errors.insert("postgres".into(), e);
                None
            }
        };
        let new_slow = match slow {
            Ok((count, newest)) => {
                // The first reading sets the mark: slow queries from before the daemon started
                // are not "new".
                let new = if self.slow_mark.is_some() { count } else { 0 };
                if newest.is_some() || self.slow_mark.is_none() {
                    self.slow_mark = Some(newest.or(slow_after));
                }
                Ok(new)
            }
            Err(e) => Err(e),
        };
        let extension = match (statements, new_slow) {
            (Ok(counters), Ok(new_slow)) => {
                let totals = database::totals(&counters);
                let reading = database::extension(&totals, self.statements.as_ref(), seconds, new_slow);
                self.statements = Some(totals);
                Some(reading)
            }
            (Err(e), _) | (_, Err(e)) => {
                errors.insert("extension".into(), e);
                None
            }
        };
        Readings {
            at_ms: now_ms,
            interval_ms,
            http,
            cache: cache_reading,
            system: Some(system),
            process,
            redis,
            postgres,
            extension,
            errors,
        }
    }

    fn http_reading(&mut self, seconds: f64) -> HttpReading {
        if self.http.is_some() {
            self.requests.roll_interval(seconds);
        } else {
            self.requests.roll_interval(0.0);
        }
        let totals = self.requests.totals();
        let delta = self.http.map_or(totals, |before| totals.since(&before));
        self.http = Some(totals);
        HttpReading {
            requests: delta.requests,
            errors: delta.errors,
            client_errors: delta.client_errors,
            requests_per_second: if seconds > 0.0 { delta.requests as f64 / seconds } else { 0.0 },
            error_rate_percent: (delta.requests > 0).then(|| delta.errors as f64 * 100.0 / delta.requests as f64),
            latency: (delta.requests > 0).then(|| delta.histogram.percentiles()),
        }
    }

    fn cache_reading(&mut self) -> CacheReading {
        let stats = self.cache.stats();
        let c = &stats.counters;
        let lookups = c.l1.hits + c.l1.misses + c.l1.stale;
        let hits = c.l1.hits + c.l2.hits;
        let (dl, dh) = match self.cache_counts {
            Some((l, h)) if l <= lookups && h <= hits => (lookups - l, hits - h),
            _ => (lookups, hits),
        };
        self.cache_counts = Some((lookups, hits));
        CacheReading {
            lookups: dl,
            hits: dh,
            hit_rate_percent: (dl > 0).then(|| dh as f64 * 100.0 / dl as f64),
            l1_entries: stats.l1_size.entries,
            l1_bytes: stats.l1_size.bytes,
        }
    }
}
