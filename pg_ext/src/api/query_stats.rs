//! `voxperf.query_stats`: one row per (userid, dbid, queryid, toplevel) with the
//! pg_stat_statements 1.10 columns under the same names and meanings, plus `p50/p95/p99_exec_time`
//! from each entry's latency histogram and `first_seen`/`last_seen`.
//!
//! The row has 48 columns, more than pgrx's table returns support, so the set-returning
//! function is declared in SQL below and fills a tuplestore itself, as pg_stat_statements does.
//! Entries are copied out under the shared lock first; the rows (text conversion, numerics) are
//! built after releasing it, so a slow reader never holds up new statements.

use super::privileges::Viewer;
use crate::error::require_preload;
use crate::shmem;
use crate::stats::counters::{Counters, Phase};
use crate::stats::table::EntryKey;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, IntoDatum, pg_sys};

extension_sql!(
    r#"
GRANT USAGE ON SCHEMA voxperf TO PUBLIC;

CREATE FUNCTION query_stats(
    showtext boolean DEFAULT true,
    OUT userid oid, OUT dbid oid, OUT toplevel boolean, OUT queryid bigint, OUT query text,
    OUT plans bigint, OUT total_plan_time double precision, OUT min_plan_time double precision,
    OUT max_plan_time double precision, OUT mean_plan_time double precision,
    OUT stddev_plan_time double precision,
    OUT calls bigint, OUT total_exec_time double precision, OUT min_exec_time double precision,
    OUT max_exec_time double precision, OUT mean_exec_time double precision,
    OUT stddev_exec_time double precision,
    OUT rows bigint,
    OUT shared_blks_hit bigint, OUT shared_blks_read bigint, OUT shared_blks_dirtied bigint,
    OUT shared_blks_written bigint,
    OUT local_blks_hit bigint, OUT local_blks_read bigint, OUT local_blks_dirtied bigint,
    OUT local_blks_written bigint,
    OUT temp_blks_read bigint, OUT temp_blks_written bigint,
    OUT blk_read_time double precision, OUT blk_write_time double precision,
    OUT temp_blk_read_time double precision, OUT temp_blk_write_time double precision,
    OUT wal_records bigint, OUT wal_fpi bigint, OUT wal_bytes numeric,
    OUT jit_functions bigint, OUT jit_generation_time double precision,
    OUT jit_inlining_count bigint, OUT jit_inlining_time double precision,
    OUT jit_optimization_count bigint, OUT jit_optimization_time double precision,
    OUT jit_emission_count bigint, OUT jit_emission_time double precision,
    OUT p50_exec_time double precision, OUT p95_exec_time double precision,
    OUT p99_exec_time double precision,
    OUT first_seen timestamp with time zone, OUT last_seen timestamp with time zone
)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'voxperf_query_stats'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION query_stats(boolean) IS
    'Per-statement statistics (pg_stat_statements 1.10 columns, plus latency percentiles); showtext => false skips the texts.';

CREATE VIEW query_stats AS SELECT * FROM query_stats(true);
GRANT SELECT ON query_stats TO PUBLIC;
COMMENT ON VIEW query_stats IS
    'Statistics of every recorded statement; query texts and ids of other users are hidden unless you have the privileges of pg_read_all_stats.';
"#,
    name = "query_stats",
);

/// Number of output columns of `voxperf.query_stats(boolean)`.
const COLUMNS: usize = 48;

/// An entry copied out of shared memory.
struct Row {
    key: EntryKey,
    encoding: i32,
    counters: Counters,
    text: Option<Vec<u8>>,
}

fn collect(showtext: bool) -> Vec<Row> {
    shmem::with_table(|t| {
        t.iter()
            .map(|e| Row {
                key: e.key(),
                encoding: e.encoding(),
                counters: e.snapshot(),
                text: showtext.then(|| t.text_of(e).to_vec()),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn float(v: f64) -> Option<pg_sys::Datum> {
    v.into_datum()
}

fn ns_to_ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

fn int(v: i64) -> Option<pg_sys::Datum> {
    v.into_datum()
}

fn values(row: &Row, viewer: &Viewer, showtext: bool) -> [Option<pg_sys::Datum>; COLUMNS] {
    let c = &row.counters;
    let (plan, exec) = (Phase::Plan as usize, Phase::Exec as usize);
    let visible = viewer.may_see(row.key.userid);
    let query = match (&row.text, visible) {
        (Some(text), true) => super::text_datum(text, row.encoding),
        (_, false) if showtext => "<insufficient privilege>".into_datum(),
        _ => None,
    };
    let timestamp = |t: i64| (t != 0).then(|| pg_sys::Datum::from(t));
    [
        pg_sys::Oid::from(row.key.userid).into_datum(),
        pg_sys::Oid::from(row.key.dbid).into_datum(),
        row.key.toplevel().into_datum(),
        if visible { int(row.key.queryid as i64) } else { None },
        query,
        int(c.calls[plan]),
        float(c.total_time[plan]),
        float(c.min_time[plan]),
        float(c.max_time[plan]),
        float(c.mean_time[plan]),
        float(c.stddev(Phase::Plan)),
        int(c.calls[exec]),
        float(c.total_time[exec]),
        float(c.min_time[exec]),
        float(c.max_time[exec]),
        float(c.mean_time[exec]),
        float(c.stddev(Phase::Exec)),
        int(c.rows),
        int(c.buffers.shared_blks_hit),
        int(c.buffers.shared_blks_read),
        int(c.buffers.shared_blks_dirtied),
        int(c.buffers.shared_blks_written),
        int(c.buffers.local_blks_hit),
        int(c.buffers.local_blks_read),
        int(c.buffers.local_blks_dirtied),
        int(c.buffers.local_blks_written),
        int(c.buffers.temp_blks_read),
        int(c.buffers.temp_blks_written),
        float(ns_to_ms(c.buffers.blk_read_time_ns)),
        float(ns_to_ms(c.buffers.blk_write_time_ns)),
        float(ns_to_ms(c.buffers.temp_blk_read_time_ns)),
        float(ns_to_ms(c.buffers.temp_blk_write_time_ns)),
        int(c.wal.records),
        int(c.wal.fpi),
        AnyNumeric::from(c.wal.bytes).into_datum(),
        int(c.jit_functions),
        float(c.jit_generation_time),
        int(c.jit_inlining_count),
        float(c.jit_inlining_time),
        int(c.jit_optimization_count),
        float(c.jit_optimization_time),
        int(c.jit_emission_count),
        float(c.jit_emission_time),
        c.exec_percentile(0.50).and_then(float),
        c.exec_percentile(0.95).and_then(float),
        c.exec_percentile(0.99).and_then(float),
        timestamp(c.first_seen),
        timestamp(c.last_seen),
    ]
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_voxperf_query_stats() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// The C entry point declared above.
///
/// # Safety
/// Called by the function manager with a valid `fcinfo` for `query_stats(boolean)`.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn voxperf_query_stats(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    if let Err(e) = require_preload() {
        e.report(PgLogLevel::ERROR);
    }
    // SAFETY: the function is STRICT with one boolean argument.
    let showtext = unsafe { pgrx::fcinfo::pg_getarg::<bool>(fcinfo, 0) }.unwrap_or(true);
    let viewer = Viewer::current();
    let rows = collect(showtext);
    // SAFETY: fcinfo is a valid call of a set-returning function in materialize mode.
    unsafe { super::materialize(fcinfo, COLUMNS, rows.iter().map(|r| values(r, &viewer, showtext))) };
    pg_sys::Datum::from(0)
}
