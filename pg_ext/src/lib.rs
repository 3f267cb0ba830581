//! voxperf: per-statement statistics with latency percentiles, a slow-query log with plans,
//! kept in shared memory by executor hooks.
//!
//! Where things are:
//! - `gucs`: every `voxperf.*` setting.
//! - `hooks`: the executor/planner/utility hook trampolines (the only place touching
//!   `QueryDesc`), `shmem`: the shared-memory region and its locks, `querytext` and `explain`:
//!   small FFI helpers for statement texts and plans. All `unsafe` lives in these four files
//!   (and the SQL entry points' argument handling in `api`).
//! - `stats/`: pure logic with plain tests — counters, histogram, table, eviction, slow ring,
//!   normalization, file format.
//! - `recorder`: what happens to one measured statement; `persistence`: the stats file and its
//!   background saver; `api/`: the SQL functions and views.

use pgrx::prelude::*;

mod advisor;
mod api;
mod backend;
mod error;
mod explain;
mod gucs;
mod hooks;
mod persistence;
mod quals;
mod querytext;
mod recorder;
mod shmem;
pub mod stats;

::pgrx::pg_module_magic!(name, version);

/// Loading without `shared_preload_libraries` (e.g. by `CREATE EXTENSION` alone) installs the
/// SQL objects but no statistics hooks: every function that needs the shared memory then
/// raises a clear error with a hint naming the setting. (The advisor's planner hooks are
/// installed by each advisor call for its duration, preloaded or not.)
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a global set by the postmaster while it loads preload libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    gucs::init();
    // SAFETY: asks core to compute query ids when compute_query_id = auto, as
    // pg_stat_statements does; legal only while preloading, which we just checked.
    unsafe { pg_sys::EnableQueryId() };
    shmem::init();
    hooks::install();
    persistence::register_saver();
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    // Behaviour inside the server. Test bodies run inside `SELECT tests.<fn>()`, so every
    // statement they issue is nested: these tests use `voxperf.track = 'all'`. Top-level
    // behaviour from real client connections is covered by the end-to-end tests in `tests/`.
    use pgrx::prelude::*;

    fn calls_of(query: &str) -> Option<i64> {
        Spi::get_one_with_args::<i64>(
            "SELECT sum(calls)::bigint FROM voxperf.query_stats WHERE query = $1",
            &[query.into()],
        )
        .unwrap()
    }

    #[pg_test]
    fn extension_is_preloaded_and_sized_from_max_queries() {
        let preload = Spi::get_one::<String>("SHOW shared_preload_libraries").unwrap().unwrap();
        assert!(preload.contains("voxperf"));
        let capacity = Spi::get_one::<i64>("SELECT capacity FROM voxperf.query_stats_info").unwrap();
        assert_eq!(capacity, Some(5000));
    }

    #[pg_test]
    fn statements_run_inside_functions_are_recorded_as_nested_under_track_all() {
        Spi::run("SET voxperf.track = 'all'").unwrap();
        for i in 0..5 {
            Spi::run(&format!("SELECT count(*) FROM pg_namespace WHERE oid > {i}")).unwrap();
        }
        let row = Spi::get_two::<i64, bool>(
            "SELECT calls, toplevel FROM voxperf.query_stats WHERE query = 'SELECT count(*) FROM pg_namespace WHERE oid > $1'",
        )
        .unwrap();
        assert_eq!(row, (Some(5), Some(false)));
    }

    #[pg_test]
    fn track_none_records_nothing() {
        Spi::run("SET voxperf.track = 'none'").unwrap();
        Spi::run("SELECT count(*) FROM pg_am WHERE amname <> 'x'").unwrap();
        Spi::run("SET voxperf.track = 'all'").unwrap();
        assert_eq!(calls_of("SELECT count(*) FROM pg_am WHERE amname <> $1"), None);
    }

    #[pg_test]
    fn reset_removes_everything_and_moves_stats_reset() {
        Spi::run("SET voxperf.track = 'all'").unwrap();
        Spi::run("SELECT count(*) FROM pg_language WHERE lanname <> 'x'").unwrap();
        assert_eq!(calls_of("SELECT count(*) FROM pg_language WHERE lanname <> $1"), Some(1));
        let before = Spi::get_one::<TimestampWithTimeZone>("SELECT stats_reset FROM voxperf.query_stats_info").unwrap();
        Spi::run("SELECT voxperf.reset()").unwrap();
        assert_eq!(calls_of("SELECT count(*) FROM pg_language WHERE lanname <> $1"), None);
        let after = Spi::get_one::<TimestampWithTimeZone>("SELECT stats_reset FROM voxperf.query_stats_info").unwrap();
        assert!(after > before);
    }

    #[pg_test]
    fn slow_executions_keep_text_and_plan() {
        Spi::run("SET voxperf.track = 'all'").unwrap();
        Spi::run("SET voxperf.slow_query_threshold = 0").unwrap();
        Spi::run("SELECT count(*) FROM pg_type WHERE typname = 'int4'").unwrap();
        let (plan, json) = Spi::get_two::<String, pgrx::Json>(
            "SELECT plan, plan_json FROM voxperf.slow_queries WHERE query LIKE 'SELECT count(*) FROM pg_type WHERE typname = %'",
        )
        .unwrap();
        assert!(plan.unwrap().contains("Aggregate"));
        assert_eq!(json.unwrap().0["Plan"]["Node Type"], "Aggregate");
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'voxperf'"]
    }
}
