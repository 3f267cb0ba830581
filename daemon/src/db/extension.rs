//! The extension's views and functions, read by the monitor and the `/api/db/*` endpoints.
//!
//! Everything the daemon knows about the extension's SQL API is in this file: column names,
//! casts, and how to detect functions that a given version may lack (a catalog lookup, so a
//! missing function is an answer, not an error). Functions are called with named arguments and
//! their rows read through `json_agg`, so parameters and columns the extension adds later (with
//! defaults) change nothing here. Times leave Postgres as Unix milliseconds.

use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Db, Error};

/// Counters of one `voxperf.query_stats` entry, for interval deltas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatementCounters {
    /// (userid, dbid, queryid, toplevel): the view's key.
    pub key: (i64, i64, i64, bool),
    pub calls: i64,
    pub total_exec_ms: f64,
}

/// One statement as `GET /api/db/queries` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueryStat {
    pub queryid: i64,
    pub query: Option<String>,
    pub userid: i64,
    pub dbid: i64,
    pub toplevel: bool,
    pub calls: i64,
    pub rows: i64,
    pub total_exec_time_ms: f64,
    pub mean_exec_time_ms: f64,
    pub min_exec_time_ms: f64,
    pub max_exec_time_ms: f64,
    pub stddev_exec_time_ms: f64,
    pub p50_exec_time_ms: f64,
    pub p95_exec_time_ms: f64,
    pub p99_exec_time_ms: f64,
    pub shared_blks_hit: i64,
    pub shared_blks_read: i64,
    /// `shared_blks_hit / (hit + read)`; null without block accesses.
    pub buffer_hit_ratio: Option<f64>,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

/// How `GET /api/db/queries` may be ordered (always descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOrder {
    TotalTime,
    MeanTime,
    Calls,
    P95,
    P99,
    Rows,
    MaxTime,
    LastSeen,
}

impl QueryOrder {
    pub const NAMES: &'static str = "total_time, mean_time, calls, p95, p99, rows, max_time, last_seen";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "total_time" => Self::TotalTime,
            "mean_time" => Self::MeanTime,
            "calls" => Self::Calls,
            "p95" => Self::P95,
            "p99" => Self::P99,
            "rows" => Self::Rows,
            "max_time" => Self::MaxTime,
            "last_seen" => Self::LastSeen,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            Self::TotalTime => "total_exec_time",
            Self::MeanTime => "mean_exec_time",
            Self::Calls => "calls",
            Self::P95 => "p95_exec_time",
            Self::P99 => "p99_exec_time",
            Self::Rows => "rows",
            Self::MaxTime => "max_exec_time",
            Self::LastSeen => "last_seen",
        }
    }
}

/// One row of `voxperf.slow_queries`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlowQuery {
    pub captured_at_ms: Option<i64>,
    pub pid: i32,
    pub username: Option<String>,
    pub datname: Option<String>,
    pub queryid: i64,
    pub toplevel: bool,
    pub duration_ms: f64,
    pub rows: i64,
    pub query: Option<String>,
    pub plan: Option<String>,
    pub query_truncated: bool,
    pub plan_truncated: bool,
}

/// One row of `voxperf.suggest_indexes()`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct IndexSuggestion {
    pub relation: String,
    pub columns: Vec<String>,
    pub method: String,
    pub predicate: Option<String>,
    pub ddl: String,
    pub cost_before: f64,
    pub cost_after: f64,
    pub improvement: f64,
    pub estimated_size_bytes: Option<i64>,
    pub queryids: Vec<i64>,
    pub write_overhead: Option<f64>,
    pub breaks_hot: Option<bool>,
    pub rationale: Option<String>,
    /// Execution time saved, and index upkeep, per the extension's estimate (when it gives them).
    #[serde(default)]
    pub estimated_saving_ms: Option<f64>,
    #[serde(default)]
    pub estimated_upkeep_ms: Option<f64>,
}

/// An extension function the daemon calls with named arguments, so that parameters the extension
/// adds later (with defaults) do not change how it is found or called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// Its name in schema `voxperf`.
    pub name: &'static str,
    /// The parameters the daemon passes by name.
    pub arguments: &'static [&'static str],
}

impl std::fmt::Display for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "voxperf.{}({})", self.name, self.arguments.join(", "))
    }
}

pub const SUGGEST_INDEXES: Function =
    Function { name: "suggest_indexes", arguments: &["min_improvement", "max_indexes"] };
pub const INDEX_MIGRATION: Function =
    Function { name: "index_migration", arguments: &["min_improvement", "max_indexes"] };

const QUERY_COLUMNS: &str = "queryid, query, userid::int8, dbid::int8, toplevel, calls, rows, total_exec_time,
    mean_exec_time, min_exec_time, max_exec_time, stddev_exec_time, p50_exec_time, p95_exec_time,
    p99_exec_time, shared_blks_hit, shared_blks_read,
    (extract(epoch FROM first_seen) * 1000)::int8, (extract(epoch FROM last_seen) * 1000)::int8";

impl Db {
    /// Whether the extension has `function` with (at least) the parameters the daemon names.
    pub async fn function_exists(&self, function: Function) -> Result<bool, Error> {
        let arguments: Vec<&str> = function.arguments.to_vec();
        self.run(|c| async move {
            let row = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                                    WHERE n.nspname = 'voxperf' AND p.proname = $1
                                      AND p.proargnames @> $2::text[])",
                    &[&function.name, &arguments],
                )
                .await?;
            Ok(row.get(0))
        })
        .await
    }

    /// Every entry's counters (the monitor turns them into per-interval figures).
    pub async fn statement_counters(&self) -> Result<Vec<StatementCounters>, Error> {
        self.run(|c| async move {
            let rows = c
                .query("SELECT userid::int8, dbid::int8, queryid, toplevel, calls, total_exec_time FROM voxperf.query_stats", &[])
                .await?;
            Ok(rows
                .iter()
                .map(|r| StatementCounters {
                    key: (r.get(0), r.get(1), r.get::<_, Option<i64>>(2).unwrap_or(0), r.get(3)),
                    calls: r.get(4),
                    total_exec_ms: r.get(5),
                })
                .collect())
        })
        .await
    }

    /// Slow queries captured after `after` (all when `None`): how many, and the newest capture.
    pub async fn slow_queries_since(&self, after: Option<SystemTime>) -> Result<(i64, Option<SystemTime>), Error> {
        self.run(|c| async move {
            let row = c
                .query_one(
                    "SELECT count(*), max(captured_at) FROM voxperf.slow_queries
                     WHERE $1::timestamptz IS NULL OR captured_at > $1::timestamptz",
                    &[&after],
                )
                .await?;
            Ok((row.get(0), row.get(1)))
        })
        .await
    }

    /// The top `limit` statements by `order`.
    pub async fn top_queries(&self, order: QueryOrder, limit: i64) -> Result<Vec<QueryStat>, Error> {
        let sql = format!(
            "SELECT {QUERY_COLUMNS} FROM voxperf.query_stats ORDER BY {} DESC NULLS LAST, queryid LIMIT $1",
            order.column()
        );
        self.run(|c| async move {
            let rows = c.query(&sql, &[&limit]).await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let (hit, read): (i64, i64) = (r.get(15), r.get(16));
                    QueryStat {
                        queryid: r.get::<_, Option<i64>>(0).unwrap_or(0),
                        query: r.get(1),
                        userid: r.get(2),
                        dbid: r.get(3),
                        toplevel: r.get(4),
                        calls: r.get(5),
                        rows: r.get(6),
                        total_exec_time_ms: r.get(7),
                        mean_exec_time_ms: r.get(8),
                        min_exec_time_ms: r.get(9),
                        max_exec_time_ms: r.get(10),
                        stddev_exec_time_ms: r.get(11),
                        p50_exec_time_ms: r.get::<_, Option<f64>>(12).unwrap_or(0.0),
                        p95_exec_time_ms: r.get::<_, Option<f64>>(13).unwrap_or(0.0),
                        p99_exec_time_ms: r.get::<_, Option<f64>>(14).unwrap_or(0.0),
                        shared_blks_hit: hit,
                        shared_blks_read: read,
                        buffer_hit_ratio: (hit + read > 0).then(|| hit as f64 / (hit + read) as f64),
                        first_seen_ms: r.get(17),
                        last_seen_ms: r.get(18),
                    }
                })
                .collect())
        })
        .await
    }

    /// The newest `limit` slow queries.
    pub async fn slow_queries(&self, limit: i64) -> Result<Vec<SlowQuery>, Error> {
        self.run(|c| async move {
            let rows = c
                .query(
                    "SELECT (extract(epoch FROM captured_at) * 1000)::int8, pid, username::text, datname::text,
                            queryid, toplevel, duration, rows, query, plan, query_truncated, plan_truncated
                     FROM voxperf.slow_queries LIMIT $1",
                    &[&limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| SlowQuery {
                    captured_at_ms: r.get(0),
                    pid: r.get(1),
                    username: r.get(2),
                    datname: r.get(3),
                    queryid: r.get::<_, Option<i64>>(4).unwrap_or(0),
                    toplevel: r.get(5),
                    duration_ms: r.get(6),
                    rows: r.get(7),
                    query: r.get(8),
                    plan: r.get(9),
                    query_truncated: r.get(10),
                    plan_truncated: r.get(11),
                })
                .collect())
        })
        .await
    }

    /// `voxperf.suggest_indexes(min_improvement, max_indexes)`, read as JSON so that columns the
    /// extension adds later do not break the daemon.
    pub async fn suggest_indexes(&self, min_improvement: f64, max_indexes: i32) -> Result<Vec<IndexSuggestion>, Error> {
        self.run(|c| async move {
            let row = c
                .query_one(
                    "SELECT coalesce(json_agg(s), '[]')::text
                     FROM voxperf.suggest_indexes(min_improvement => $1, max_indexes => $2) s",
                    &[&min_improvement, &max_indexes],
                )
                .await?;
            let text: String = row.get(0);
            serde_json::from_str(&text)
                .map_err(|e| Error::Unexpected(format!("voxperf.suggest_indexes() returned an unexpected shape: {e}")))
        })
        .await
    }

    /// `voxperf.index_migration(min_improvement, max_indexes)`: a migration file's text.
    pub async fn index_migration(&self, min_improvement: f64, max_indexes: i32) -> Result<Option<String>, Error> {
        self.run(|c| async move {
            let row = c.query_one("SELECT voxperf.index_migration($1, $2)", &[&min_improvement, &max_indexes]).await?;
            Ok(row.get(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suggestion_row_reads_with_the_columns_the_extension_may_add_or_leave_out() {
        // json_agg's rendering of one row of voxperf.suggest_indexes(): arrays, nulls, numbers,
        // and a column this daemon does not know.
        let row = r#"{"relation": "public.\"VirtualNumber\"", "columns": ["country_code", "area_code"],
            "method": "btree", "predicate": "status = 'AVAILABLE'::text",
            "ddl": "CREATE INDEX CONCURRENTLY ON public.\"VirtualNumber\" (country_code, area_code)",
            "cost_before": 4120.5, "cost_after": 8.3, "improvement": 0.998, "estimated_size_bytes": 655360,
            "queryids": [-4011232158123841234], "write_overhead": 0.04, "breaks_hot": false,
            "rationale": "equality on both columns", "estimated_saving_ms": 12.5, "estimated_upkeep_ms": 0.2,
            "added_later": 1}"#;
        let s: IndexSuggestion = serde_json::from_str(row).unwrap();
        assert_eq!(s.columns, ["country_code", "area_code"]);
        assert_eq!(s.queryids, [-4011232158123841234]);
        assert_eq!(s.estimated_saving_ms, Some(12.5));
        let older = r#"{"relation": "t", "columns": ["a"], "method": "btree", "predicate": null, "ddl": "CREATE INDEX ON t (a)",
            "cost_before": 2, "cost_after": 1, "improvement": 0.5, "estimated_size_bytes": null, "queryids": [],
            "write_overhead": null, "breaks_hot": null, "rationale": null}"#;
        assert_eq!(serde_json::from_str::<IndexSuggestion>(older).unwrap().estimated_saving_ms, None);
    }

    #[test]
    fn functions_are_shown_with_the_arguments_the_daemon_passes() {
        assert_eq!(SUGGEST_INDEXES.to_string(), "voxperf.suggest_indexes(min_improvement, max_indexes)");
    }
}
