//! `voxperf.query_stats_info`, `voxperf.reset()`, `voxperf.reset(queryid)`,
//! `voxperf.reset(userid, dbid, queryid)` and
//! `voxperf.save_stats()`.

use crate::error::{VoxperfError, VoxperfResult, require_preload};
use crate::persistence::{self, STATS_FILE};
use crate::recorder;
use crate::shmem;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::sync::atomic::Ordering;

fn timestamptz(t: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(t).ok()
}

/// The table's health: how full it is, how often it evicts, and what was lost.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn query_stats_info() -> Result<
    TableIterator<
        'static,
        (
            name!(capacity, i64),
            name!(entries, i64),
            name!(dealloc, i64),
            name!(evicted_entries, i64),
            name!(samples_dropped, i64),
            name!(stats_reset, Option<TimestampWithTimeZone>),
            name!(text_bytes_used, i64),
            name!(text_bytes_capacity, i64),
            name!(slow_query_log_size, i64),
            name!(shared_memory_bytes, i64),
        ),
    >,
    ErrorReport,
> {
    require_preload()?;
    let (capacity, ring, total) = shmem::footprint().unwrap_or_default();
    let dropped = shmem::atomics().map_or(0, |a| a.dropped_samples.load(Ordering::Relaxed));
    let row = shmem::with_table(|t| {
        (
            capacity as i64,
            t.len() as i64,
            t.header.dealloc as i64,
            t.header.evicted_entries as i64,
            dropped as i64,
            timestamptz(t.header.stats_reset),
            t.header.text_used as i64,
            t.header.text_capacity as i64,
            ring as i64,
            total as i64,
        )
    })
    .ok_or(VoxperfError::NotPreloaded)?;
    Ok(TableIterator::once(row))
}

extension_sql!(
    r#"
CREATE VIEW query_stats_info AS SELECT * FROM query_stats_info();
GRANT SELECT ON query_stats_info TO PUBLIC;
COMMENT ON VIEW query_stats_info IS
    'Capacity and use of the statistics table: entries, evictions (dealloc = eviction passes), samples dropped, last reset.';
"#,
    name = "query_stats_info_view",
    requires = [query_stats_info],
);

/// Remove all statistics: per statement, slow queries, predicates and examples.
#[pg_extern(volatile, name = "reset")]
fn reset_all() -> VoxperfResult<()> {
    require_preload()?;
    let now = crate::querytext::now();
    shmem::with_table_mut(|t| t.reset(now));
    shmem::with_ring_mut(|r| r.clear());
    shmem::with_quals_mut(|q| q.reset());
    shmem::with_examples_mut(|e, _| e.reset());
    recorder::bump_generation();
    Ok(())
}

/// Remove the statistics of one statement (for every user and database).
#[pg_extern(volatile, name = "reset")]
fn reset_queryid(queryid: i64) -> VoxperfResult<i64> {
    require_preload()?;
    let removed = shmem::with_table_mut(|t| t.remove_where(|k| k.queryid == queryid as u64)).unwrap_or(0);
    recorder::bump_generation();
    Ok(removed as i64)
}

/// Remove the statistics matching a user, a database and a statement, as
/// `pg_stat_statements_reset(userid, dbid, queryid)` does: 0 matches any. Returns how many
/// statements' entries were removed (their example executions go with them).
#[pg_extern(volatile, name = "reset")]
fn reset_matching(userid: pg_sys::Oid, dbid: pg_sys::Oid, queryid: i64) -> VoxperfResult<i64> {
    require_preload()?;
    let (userid, dbid, queryid) = (userid.to_u32(), dbid.to_u32(), queryid as u64);
    let matches = |u: u32, d: u32, q: u64| {
        (userid == 0 || u == userid) && (dbid == 0 || d == dbid) && (queryid == 0 || q == queryid)
    };
    let removed = shmem::with_table_mut(|t| t.remove_where(|k| matches(k.userid, k.dbid, k.queryid))).unwrap_or(0);
    shmem::with_examples_mut(|e, _| e.remove_where(|x| matches(x.userid, x.dbid, x.queryid)));
    recorder::bump_generation();
    Ok(removed as i64)
}

/// Write the statistics to `pg_stat/voxperf.stat` now (the background worker does this every
/// `voxperf.save_interval`); returns the number of statements saved.
#[pg_extern(volatile)]
fn save_stats() -> VoxperfResult<i64> {
    require_preload()?;
    persistence::save().map(|n| n as i64).map_err(|source| VoxperfError::SaveFailed { path: STATS_FILE, source }.into())
}

extension_sql!(
    r#"
REVOKE ALL ON FUNCTION reset() FROM PUBLIC;
REVOKE ALL ON FUNCTION reset(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION reset(oid, oid, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION save_stats() FROM PUBLIC;
"#,
    name = "admin_privileges",
    finalize,
);
