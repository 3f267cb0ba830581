//! Every `voxperf.*` setting: a private static, its registration with a description that says
//! why the default is what it is and what it costs, and a typed accessor the rest of the crate
//! calls. Nothing else touches the statics.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CStr;

/// Which statements are recorded (as `pg_stat_statements.track`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PostgresGucEnum)]
pub enum Track {
    #[name = c"none"]
    None,
    #[name = c"top"]
    Top,
    #[name = c"all"]
    All,
}

static TRACK: GucSetting<Track> = GucSetting::<Track>::new(Track::Top);
static TRACK_UTILITY: GucSetting<bool> = GucSetting::<bool>::new(true);
static TRACK_PLANNING: GucSetting<bool> = GucSetting::<bool>::new(false);
static MAX_QUERIES: GucSetting<i32> = GucSetting::<i32>::new(5000);
static SLOW_QUERY_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(1000);
static SLOW_QUERY_LOG_SIZE: GucSetting<i32> = GucSetting::<i32>::new(100);
static SLOW_QUERY_PLANS: GucSetting<bool> = GucSetting::<bool>::new(true);
static SAVE: GucSetting<bool> = GucSetting::<bool>::new(true);
static SAVE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(300);
static TRACK_QUALS: GucSetting<bool> = GucSetting::<bool>::new(true);
static QUAL_SAMPLE_RATE: GucSetting<f64> = GucSetting::<f64>::new(0.01);
static MAX_QUALS: GucSetting<i32> = GucSetting::<i32>::new(2000);
static MAX_EXAMPLES: GucSetting<i32> = GucSetting::<i32>::new(2000);
static ADVISOR_MAX_QUERIES: GucSetting<i32> = GucSetting::<i32>::new(50);
static ADVISOR_MAX_CANDIDATES: GucSetting<i32> = GucSetting::<i32>::new(200);
static ADVISOR_TIME_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static ADVISOR_TRACE: GucSetting<bool> = GucSetting::<bool>::new(false);
static ADVISOR_SAMPLE_EARLY_STOPS: GucSetting<bool> = GucSetting::<bool>::new(true);
static NOTIFY_CHANNEL: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"voxperf_invalidate"));

pub fn init() {
    GucRegistry::define_enum_guc(
        c"voxperf.track",
        c"Selects which statements voxperf records: none, top (statements sent by clients) or all (also statements run inside functions).",
        c"Default top, as pg_stat_statements: nested statements multiply the entries without telling which client statement they served. 'none' also disables the slow-query log.",
        &TRACK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"voxperf.track_utility",
        c"Records utility commands (DDL, VACUUM, COPY, ...) as well.",
        c"Default on: their cost is often what an operator is looking for. EXECUTE, PREPARE and DEALLOCATE are never recorded themselves; executions are charged to the prepared statement.",
        &TRACK_UTILITY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"voxperf.track_planning",
        c"Records planning time and counts (the plans, *_plan_time columns).",
        c"Default off, as pg_stat_statements: timing every planner call costs two clock reads and a second update of the entry per statement.",
        &TRACK_PLANNING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.max_queries",
        c"Maximum number of distinct statements voxperf keeps statistics for.",
        c"Default 5000, as pg_stat_statements.max. Each entry takes about 1.5 kB of shared memory plus 1 kB of text space, reserved at server start (5000 entries: about 13 MB). When full, the 5% of entries that cost the least total time are evicted.",
        &MAX_QUERIES,
        100,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.slow_query_threshold",
        c"Executions taking at least this long are kept in voxperf.slow_queries with their plan; -1 disables.",
        c"Default 1000 ms, the platform's SLOW_QUERY_THRESHOLD. Only executions over the threshold pay for capturing text and plan; the check itself is a comparison.",
        &SLOW_QUERY_THRESHOLD,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"voxperf.slow_query_log_size",
        c"Number of slow executions kept (the newest overwrite the oldest).",
        c"Default 100. Each slot takes 16 kB of shared memory, reserved at server start.",
        &SLOW_QUERY_LOG_SIZE,
        0,
        100_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"voxperf.slow_query_plans",
        c"Captures the EXPLAIN plan (text and JSON) of slow executions.",
        c"Default on: the plan is what explains a slow query, and only executions over the threshold pay for it (like auto_explain without ANALYZE).",
        &SLOW_QUERY_PLANS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"voxperf.save",
        c"Saves statistics at shutdown (and every voxperf.save_interval) and reloads them at start.",
        c"Default on, as pg_stat_statements.save. The file is pg_stat/voxperf.stat in the data directory; it is checksummed and replaced atomically.",
        &SAVE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.save_interval",
        c"Seconds between background saves of the statistics; 0 saves only at shutdown.",
        c"Default 300 s: a crash then loses at most five minutes of statistics, while the save (a copy of the table and one file write by a background worker) stays negligible.",
        &SAVE_INTERVAL,
        0,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"voxperf.track_quals",
        c"Records the predicates of sampled executions (voxperf.qual_stats), the index advisor's runtime evidence.",
        c"Default on. Only executions picked by voxperf.qual_sample_rate pay for it: their plan nodes count rows, and their plan is walked once at the end.",
        &TRACK_QUALS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"voxperf.qual_sample_rate",
        c"Fraction of executions whose predicates are recorded (0 to 1).",
        c"Default 0.01 (pg_qualstats samples 1/max_connections). A sampled execution costs a few per cent more; the average statement pays a hundredth of that.",
        &QUAL_SAMPLE_RATE,
        0.0,
        1.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.max_quals",
        c"Maximum number of distinct predicates voxperf.qual_stats keeps.",
        c"Default 2000 (pg_qualstats keeps 1000). Each takes about 0.4 kB of shared memory, reserved at server start; when full, the least executed fifth is dropped.",
        &MAX_QUALS,
        0,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.max_examples",
        c"Number of example executions (text with literal values) kept for the index advisor.",
        c"Default 2000: up to four per statement (three taken at sampled moments, the slowest). The advisor plans these instead of normalized texts so the planner sees the values the statement is really run with; each takes 2 kB of shared memory, reserved at server start.",
        &MAX_EXAMPLES,
        0,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.advisor_max_queries",
        c"How many statements (the most expensive by total time) voxperf.suggest_indexes considers.",
        c"Default 50: in most workloads they account for nearly all the time; each one is planned once per candidate that could serve it.",
        &ADVISOR_MAX_QUERIES,
        1,
        10_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.advisor_max_candidates",
        c"Most index candidates voxperf.suggest_indexes evaluates.",
        c"Default 200. Candidates come from the most expensive statements first: a huge workload gets advice for its heaviest statements rather than an unbounded run.",
        &ADVISOR_MAX_CANDIDATES,
        1,
        100_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"voxperf.advisor_time_limit",
        c"Time voxperf.suggest_indexes may spend evaluating candidates; 0 means no limit.",
        c"Default 10 s. When it runs out, the indexes chosen so far are returned with a NOTICE saying the search was cut short.",
        &ADVISOR_TIME_LIMIT,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"voxperf.advisor_trace",
        c"Report each round of voxperf.suggest_indexes' search as NOTICEs.",
        c"Off by default. Each round lists the best-scoring candidates (estimated time saved net of upkeep, size) and the one chosen: the answer to \"why not this index?\".",
        &ADVISOR_TRACE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"voxperf.advisor_sample_early_stops",
        c"Check where an ORDER BY ... LIMIT scan really stops by sampling the table.",
        c"On by default. When a plan stops early on a filtered index scan, the planner assumes the matching rows are spread evenly along the index; voxperf.suggest_indexes reads a sample of the table (a few thousand rows, TABLESAMPLE, read-only) in the statement's order to find where the LIMIT's last row really comes, and prices the plan by that when it is later. Off: the planner's estimate is taken as is.",
        &ADVISOR_SAMPLE_EARLY_STOPS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"voxperf.notify_channel",
        c"Channel on which watched tables announce writes (see voxperf.watch_table).",
        c"Default voxperf_invalidate, the channel voxperfd listens on. Server-wide (reload to change) so that every session notifies the same channel.",
        &NOTIFY_CHANNEL,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: called once from _PG_init with a static C string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"voxperf".as_ptr()) };
}

/// Read a setting without pgrx's thread check: these are read on every statement.
#[inline]
fn read<T: Copy>(ptr: *mut T) -> T {
    // SAFETY: the GUC machinery writes these statics only on the backend's single thread,
    // between statements; we read on the same thread.
    unsafe { *ptr }
}

/// Whether a statement at nesting `level` is recorded (pg_stat_statements' `pgss_enabled`).
#[inline]
pub fn enabled_at(level: i32) -> bool {
    // The raw value is the variant's ordinal: none = 0, top = 1, all = 2.
    match read(TRACK.as_ptr()) {
        2 => true,
        1 => level == 0,
        _ => false,
    }
}

#[inline]
pub fn track_utility() -> bool {
    read(TRACK_UTILITY.as_ptr())
}

#[inline]
pub fn track_planning() -> bool {
    read(TRACK_PLANNING.as_ptr())
}

pub fn max_queries() -> usize {
    MAX_QUERIES.get().max(1) as usize
}

/// The slow-query threshold in milliseconds, `None` when disabled.
#[inline]
pub fn slow_query_threshold_ms() -> Option<f64> {
    let v = read(SLOW_QUERY_THRESHOLD.as_ptr());
    (v >= 0).then_some(f64::from(v))
}

pub fn slow_query_log_size() -> usize {
    SLOW_QUERY_LOG_SIZE.get().max(0) as usize
}

pub fn slow_query_plans() -> bool {
    SLOW_QUERY_PLANS.get()
}

pub fn save() -> bool {
    SAVE.get()
}

pub fn save_interval_secs() -> u64 {
    SAVE_INTERVAL.get().max(0) as u64
}

/// The hint every function that needs shared memory gives when the library was not preloaded.
pub const PRELOAD_HINT: &CStr = c"Add 'voxperf' to shared_preload_libraries in postgresql.conf and restart the server.";

pub fn track_quals() -> bool {
    read(TRACK_QUALS.as_ptr())
}

pub fn qual_sample_rate() -> f64 {
    read(QUAL_SAMPLE_RATE.as_ptr())
}

pub fn max_quals() -> usize {
    MAX_QUALS.get().max(0) as usize
}

pub fn max_examples() -> usize {
    MAX_EXAMPLES.get().max(0) as usize
}

pub fn advisor_max_queries() -> usize {
    ADVISOR_MAX_QUERIES.get().max(1) as usize
}

pub fn advisor_max_candidates() -> usize {
    ADVISOR_MAX_CANDIDATES.get().max(1) as usize
}

pub fn advisor_sample_early_stops() -> bool {
    ADVISOR_SAMPLE_EARLY_STOPS.get()
}

pub fn advisor_trace() -> bool {
    ADVISOR_TRACE.get()
}

pub fn advisor_time_limit() -> std::time::Duration {
    std::time::Duration::from_millis(ADVISOR_TIME_LIMIT.get().max(0) as u64)
}
