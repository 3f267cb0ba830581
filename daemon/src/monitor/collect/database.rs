//! Database readings: `pg_stat_database` counters and the extension's statement statistics,
//! turned into figures per interval (transactions per second, buffer hit rate, statement
//! throughput, mean and p95 statement time, new slow queries).
//!
//! Pure functions of the previous and current counters. A counter that went backwards (a
//! `pg_stat_reset`, `voxperf.reset()`, an entry evicted and re-created) means everything now
//! counted is new, as Prometheus' `rate()` treats counter resets.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::activity::DatabaseActivity;
use crate::db::extension::StatementCounters;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PostgresReading {
    pub connections: i64,
    pub server_connections: i64,
    pub max_connections: i64,
    pub transactions_per_second: f64,
    pub commits: i64,
    pub rollbacks: i64,
    /// Buffer hits over block reads in the interval; null without block accesses.
    pub buffer_hit_rate_percent: Option<f64>,
    /// Deadlocks in the interval, and since the statistics were reset.
    pub deadlocks: i64,
    pub deadlocks_total: i64,
    /// The cumulative counters (since the statistics were reset), for Prometheus' `rate()`.
    pub commits_total: i64,
    pub rollbacks_total: i64,
    pub blocks_hit_total: i64,
    pub blocks_read_total: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExtensionReading {
    /// Entries in `voxperf.query_stats`.
    pub statements: usize,
    /// Calls in the interval, and in the view (over its entries' lives).
    pub calls: i64,
    pub calls_total: i64,
    /// Execution time in the view, milliseconds.
    pub exec_time_total_ms: f64,
    pub queries_per_second: f64,
    /// Mean statement time in the interval; null without calls.
    pub mean_ms: Option<f64>,
    /// 95th percentile of the statements' mean times in the interval, each weighted by its calls
    /// (the view keeps one histogram per statement, not one per interval).
    pub p95_ms: Option<f64>,
    pub new_slow_queries: i64,
}

fn delta(now: i64, before: i64) -> i64 {
    if now >= before { now - before } else { now }
}

pub fn postgres(now: &DatabaseActivity, before: Option<&DatabaseActivity>, seconds: f64) -> PostgresReading {
    let base = before.copied().unwrap_or_default();
    let commits = delta(now.xact_commit, base.xact_commit);
    let rollbacks = delta(now.xact_rollback, base.xact_rollback);
    let (hit, read) = (delta(now.blks_hit, base.blks_hit), delta(now.blks_read, base.blks_read));
    PostgresReading {
        connections: now.connections,
        server_connections: now.server_connections,
        max_connections: now.max_connections,
        transactions_per_second: if before.is_some() && seconds > 0.0 {
            (commits + rollbacks) as f64 / seconds
        } else {
            0.0
        },
        commits,
        rollbacks,
        buffer_hit_rate_percent: (hit + read > 0).then(|| hit as f64 * 100.0 / (hit + read) as f64),
        deadlocks: if before.is_some() { delta(now.deadlocks, base.deadlocks) } else { 0 },
        deadlocks_total: now.deadlocks,
        commits_total: now.xact_commit,
        rollbacks_total: now.xact_rollback,
        blocks_hit_total: now.blks_hit,
        blocks_read_total: now.blks_read,
    }
}

pub type StatementKey = (i64, i64, i64, bool);
pub type StatementTotals = HashMap<StatementKey, (i64, f64)>;

pub fn totals(counters: &[StatementCounters]) -> StatementTotals {
    counters.iter().map(|c| (c.key, (c.calls, c.total_exec_ms))).collect()
}

/// The interval's statement figures; `before` is `None` on the first reading (no interval yet).
pub fn extension(
    now: &StatementTotals,
    before: Option<&StatementTotals>,
    seconds: f64,
    new_slow: i64,
) -> ExtensionReading {
    let mut calls = 0i64;
    let mut total_ms = 0f64;
    let mut means: Vec<(f64, i64)> = Vec::new();
    if let Some(before) = before {
        for (key, &(c, t)) in now {
            let (dc, dt) = match before.get(key) {
                Some(&(bc, bt)) if bc <= c => (c - bc, (t - bt).max(0.0)),
                _ => (c, t),
            };
            if dc > 0 {
                calls += dc;
                total_ms += dt;
                means.push((dt / dc as f64, dc));
            }
        }
    }
    means.sort_by(|a, b| a.0.total_cmp(&b.0));
    let p95 = (calls > 0).then(|| {
        let rank = 0.95 * calls as f64;
        let mut cumulative = 0i64;
        for (mean, n) in &means {
            cumulative += n;
            if cumulative as f64 >= rank {
                return *mean;
            }
        }
        means.last().map_or(0.0, |m| m.0)
    });
    ExtensionReading {
        statements: now.len(),
        calls,
        calls_total: now.values().map(|(c, _)| c).sum(),
        exec_time_total_ms: now.values().map(|(_, t)| t).sum(),
        queries_per_second: if seconds > 0.0 { calls as f64 / seconds } else { 0.0 },
        mean_ms: (calls > 0).then(|| total_ms / calls as f64),
        p95_ms: p95,
        new_slow_queries: new_slow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(commit: i64, hit: i64, read: i64, deadlocks: i64) -> DatabaseActivity {
        DatabaseActivity { xact_commit: commit, blks_hit: hit, blks_read: read, deadlocks, ..Default::default() }
    }

    #[test]
    fn postgres_figures_are_per_interval_and_survive_a_statistics_reset() {
        let first = postgres(&activity(100, 90, 10, 1), None, 10.0);
        assert_eq!((first.transactions_per_second, first.deadlocks, first.deadlocks_total), (0.0, 0, 1));
        let r = postgres(&activity(150, 180, 20, 2), Some(&activity(100, 90, 10, 1)), 10.0);
        assert_eq!((r.commits, r.transactions_per_second, r.deadlocks), (50, 5.0, 1));
        assert_eq!(r.buffer_hit_rate_percent, Some(90.0));
        let reset = postgres(&activity(7, 0, 0, 0), Some(&activity(150, 180, 20, 2)), 1.0);
        assert_eq!((reset.commits, reset.buffer_hit_rate_percent), (7, None));
    }

    #[test]
    fn statement_figures_weight_each_statement_by_its_calls_in_the_interval() {
        let before: StatementTotals = HashMap::from([((1, 1, 10, true), (100, 100.0)), ((1, 1, 20, true), (5, 500.0))]);
        let now: StatementTotals = HashMap::from([
            ((1, 1, 10, true), (195, 195.0)), // 95 calls of 1 ms
            ((1, 1, 20, true), (10, 1000.0)), // 5 calls of 100 ms
            ((1, 1, 30, true), (0, 0.0)),     // new, idle
        ]);
        let r = extension(&now, Some(&before), 10.0, 2);
        assert_eq!((r.calls, r.queries_per_second, r.statements, r.new_slow_queries), (100, 10.0, 3, 2));
        assert_eq!(r.mean_ms, Some(5.95));
        assert_eq!(r.p95_ms, Some(1.0), "95 of 100 calls took 1 ms");
        let first = extension(&now, None, 10.0, 0);
        assert_eq!((first.calls, first.mean_ms, first.p95_ms), (0, None, None));
    }

    #[test]
    fn an_entry_that_went_backwards_counts_as_new() {
        let before: StatementTotals = HashMap::from([((1, 1, 10, true), (100, 100.0))]);
        let now: StatementTotals = HashMap::from([((1, 1, 10, true), (4, 40.0))]);
        let r = extension(&now, Some(&before), 1.0, 0);
        assert_eq!((r.calls, r.mean_ms), (4, Some(10.0)));
    }
}
