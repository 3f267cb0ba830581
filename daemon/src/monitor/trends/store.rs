//! Trend buckets in Postgres: `voxperfd.trend_buckets`, one row per (instance, metric,
//! resolution, bucket start).
//!
//! The daemon creates its schema on first use (under an advisory lock, so daemons starting
//! together do not race on `CREATE TABLE IF NOT EXISTS`). Rows are written with "insert or
//! overwrite": the in-memory bucket is always the complete one. `instance` keeps the history of
//! several daemons sharing one database apart; a daemon restarted with the same `VOXPERF_INSTANCE`
//! continues its own history. Rows older than a day are deleted as the daemon writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::series::{Bucket, RESOLUTIONS};
use crate::db::{self, Db};

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS voxperfd;
CREATE TABLE IF NOT EXISTS voxperfd.trend_buckets (
    instance     text             NOT NULL,
    metric       text             NOT NULL,
    resolution_s integer          NOT NULL,
    bucket_start timestamptz      NOT NULL,
    unit         text             NOT NULL,
    count        bigint           NOT NULL,
    sum          double precision NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    last         double precision NOT NULL,
    PRIMARY KEY (instance, metric, resolution_s, bucket_start)
);
COMMENT ON TABLE voxperfd.trend_buckets IS
    'voxperfd performance trends: rolled-up samples per daemon instance (10 s kept 1 h, 1 min kept 24 h)';";

/// Any constant: the advisory lock that serialises schema creation between daemons.
const SCHEMA_LOCK: i64 = 0x766f_7870_6572_6664; // "voxperfd"

/// One bucket with what identifies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    pub step_ms: u64,
    pub bucket: Bucket,
}

#[derive(Debug)]
pub struct TrendStore {
    db: Arc<Db>,
    instance: String,
    schema_ready: AtomicBool,
}

impl TrendStore {
    pub fn new(db: Arc<Db>, instance: String) -> Self {
        Self { db, instance, schema_ready: AtomicBool::new(false) }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn ensure_schema(&self) -> Result<(), db::Error> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.db
            .run(|mut c| async move {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
                tx.batch_execute(SCHEMA).await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
        self.schema_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Inserts or overwrites `rows`, and deletes this instance's rows past their retention.
    pub async fn save(&self, rows: &[Row]) -> Result<(), db::Error> {
        self.ensure_schema().await?;
        let instance = self.instance.clone();
        let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        let units: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
        let resolutions: Vec<i32> = rows.iter().map(|r| (r.step_ms / 1000) as i32).collect();
        let starts: Vec<i64> = rows.iter().map(|r| r.bucket.start_ms as i64).collect();
        let counts: Vec<i64> = rows.iter().map(|r| r.bucket.count as i64).collect();
        let sums: Vec<f64> = rows.iter().map(|r| r.bucket.sum).collect();
        let mins: Vec<f64> = rows.iter().map(|r| r.bucket.min).collect();
        let maxs: Vec<f64> = rows.iter().map(|r| r.bucket.max).collect();
        let lasts: Vec<f64> = rows.iter().map(|r| r.bucket.last).collect();
        let newest = starts.iter().copied().max().unwrap_or(0);
        let keeps: Vec<(i32, i64)> = RESOLUTIONS
            .iter()
            .map(|r| ((r.step_ms / 1000) as i32, newest - r.keep_ms as i64 - r.step_ms as i64))
            .collect();
        self.db
            .run(|c| async move {
                c.execute(
                    "INSERT INTO voxperfd.trend_buckets AS t
                         (instance, metric, resolution_s, bucket_start, unit, count, sum, min, max, last)
                     SELECT $1, m, r, to_timestamp(s / 1000.0), u, n, su, mi, ma, la
                     FROM unnest($2::text[], $3::int4[], $4::int8[], $5::text[], $6::int8[], $7::float8[],
                                 $8::float8[], $9::float8[], $10::float8[]) AS x(m, r, s, u, n, su, mi, ma, la)
                     ON CONFLICT (instance, metric, resolution_s, bucket_start) DO UPDATE
                     SET unit = excluded.unit, count = excluded.count, sum = excluded.sum,
                         min = excluded.min, max = excluded.max, last = excluded.last",
                    &[&instance, &metrics, &resolutions, &starts, &units, &counts, &sums, &mins, &maxs, &lasts],
                )
                .await?;
                for (resolution, before_ms) in keeps {
                    c.execute(
                        "DELETE FROM voxperfd.trend_buckets
                         WHERE instance = $1 AND resolution_s = $2 AND bucket_start < to_timestamp($3::int8 / 1000.0)",
                        &[&instance, &resolution, &before_ms],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }

    /// This instance's rows whose bucket starts at or after `since_ms`.
    pub async fn load(&self, since_ms: u64) -> Result<Vec<Row>, db::Error> {
        self.ensure_schema().await?;
        let instance = self.instance.clone();
        let since = since_ms as i64;
        self.db
            .run(|c| async move {
                let rows = c
                    .query(
                        "SELECT metric, unit, resolution_s,
                                (extract(epoch FROM bucket_start) * 1000)::int8, count, sum, min, max, last
                         FROM voxperfd.trend_buckets
                         WHERE instance = $1 AND bucket_start >= to_timestamp($2::int8 / 1000.0)
                         ORDER BY bucket_start",
                        &[&instance, &since],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| Row {
                        metric: r.get(0),
                        unit: r.get(1),
                        step_ms: u64::from(r.get::<_, i32>(2).unsigned_abs()) * 1000,
                        bucket: Bucket {
                            start_ms: r.get::<_, i64>(3).max(0) as u64,
                            count: r.get::<_, i64>(4).max(0) as u64,
                            sum: r.get(5),
                            min: r.get(6),
                            max: r.get(7),
                            last: r.get(8),
                        },
                    })
                    .collect())
            })
            .await
    }
}
