//! The executor, planner, parse-analysis and utility hooks: the only place that dereferences
//! `QueryDesc`, `PlannedStmt` and friends.
//!
//! Two rules hold every trampoline together:
//!
//! 1. **The user's statement is never changed or failed by us.** Each trampoline calls the
//!    previous hook (or the `standard_*` function) *without* pgrx's error guard, so an ERROR
//!    raised by the statement propagates exactly as Postgres raised it — SQLSTATE, constraint
//!    and table names, context, position — instead of being caught and re-raised as a reduced
//!    copy. Our own bookkeeping runs inside [`guarded`], which catches any panic or Postgres
//!    error it causes and counts a dropped sample instead.
//! 2. **No Rust frame with a destructor is live while Postgres code runs**, because a Postgres
//!    ERROR leaves through `longjmp`, skipping Rust frames. The nesting levels a failed call
//!    leaves raised are put back by the (sub)transaction abort that every caught ERROR goes
//!    through (PostgreSQL allows continuing after an ERROR only by aborting the transaction or
//!    a subtransaction): each subtransaction's start records the levels, its abort restores
//!    them, a transaction's abort zeroes them. That costs nothing per statement, where
//!    `PG_TRY/PG_FINALLY` around every call (what pg_stat_statements does) costs a `sigsetjmp`.
//!
//! Each trampoline copies what it needs into plain Rust values and hands them to
//! `recorder.rs`, which holds the logic.

use crate::backend::BackendCell;
use crate::recorder::Statement as _;
use crate::stats::counters::{BufferCounters, JitCounters, Phase, Sample, WalCounters};
use crate::stats::timing::{Frame, Frames};
use crate::{explain, gucs, querytext, recorder, shmem};
use pgrx::pg_sys;
use std::ffi::{c_char, c_int, c_void};

/// Current depth of ExecutorRun/ExecutorFinish/ProcessUtility calls (pg_stat_statements'
/// `exec_nested_level`); 0 while a client's own statement runs.
static mut NESTING: i32 = 0;
/// Depth of planner calls (`plan_nested_level`).
static mut PLAN_NESTING: i32 = 0;

/// Time and I/O of the statements this backend is running (see `stats::timing`).
static FRAMES: BackendCell<Frames<USAGE_WORDS>> = BackendCell::new(Frames::new());

/// Words of the server's cumulative buffer and WAL counters (`pgBufferUsage`, `pgWalUsage`):
/// structs of 64-bit integers and `instr_time`s (two 64-bit integers each).
const BUFFER_WORDS: usize = std::mem::size_of::<pg_sys::BufferUsage>() / 8;
const WAL_WORDS: usize = std::mem::size_of::<pg_sys::WalUsage>() / 8;
/// A frame's words: the monotonic clock in nanoseconds, then the buffer and WAL counters.
const USAGE_WORDS: usize = 1 + BUFFER_WORDS + WAL_WORDS;
const _: () = assert!(
    std::mem::size_of::<pg_sys::BufferUsage>().is_multiple_of(8)
        && std::mem::size_of::<pg_sys::WalUsage>().is_multiple_of(8)
        && std::mem::align_of::<pg_sys::BufferUsage>() == 8
        && std::mem::align_of::<pg_sys::WalUsage>() == 8
);

/// Words of `BufferUsage` before its I/O times (which follow, to its end).
const BUFFER_COUNT_WORDS: usize = std::mem::offset_of!(pg_sys::BufferUsage, blk_read_time) / 8;
const _: () = assert!(
    std::mem::offset_of!(pg_sys::BufferUsage, blk_read_time) == BUFFER_COUNT_WORDS * 8
        && std::mem::offset_of!(pg_sys::BufferUsage, blk_write_time) > BUFFER_COUNT_WORDS * 8
        && std::mem::offset_of!(pg_sys::BufferUsage, temp_blk_read_time) > BUFFER_COUNT_WORDS * 8
        && std::mem::offset_of!(pg_sys::BufferUsage, temp_blk_write_time) > BUFFER_COUNT_WORDS * 8
);

/// Subtract (`SIGN = -1`) or add (`SIGN = 1`) the counters a frame accumulates, as they are
/// now, to a frame's words, reading them where they are. The I/O times move only while
/// `track_io_timing` is on: a frame that started with it off leaves them out (they stay 0).
#[inline(always)]
fn apply_now<const SIGN: i64>(w: &mut [i64; USAGE_WORDS], io_timing: bool) {
    // SAFETY: backend-local globals of plain 64-bit words (sizes asserted above), read while
    // nothing else runs in this process.
    let (b, v) = unsafe {
        (
            &*(&raw const pg_sys::pgBufferUsage).cast::<[i64; BUFFER_WORDS]>(),
            &*(&raw const pg_sys::pgWalUsage).cast::<[i64; WAL_WORDS]>(),
        )
    };
    w[0] = w[0].wrapping_add(SIGN.wrapping_mul(monotonic_ns()));
    let (bw, vw) = w[1..].split_at_mut(BUFFER_WORDS);
    let (counts, times) = bw.split_at_mut(BUFFER_COUNT_WORDS);
    for (x, y) in counts.iter_mut().zip(&b[..BUFFER_COUNT_WORDS]) {
        *x = x.wrapping_add(SIGN.wrapping_mul(*y));
    }
    if io_timing {
        for (x, y) in times.iter_mut().zip(&b[BUFFER_COUNT_WORDS..]) {
            *x = x.wrapping_add(SIGN.wrapping_mul(*y));
        }
    }
    for (x, y) in vw.iter_mut().zip(v) {
        *x = x.wrapping_add(SIGN.wrapping_mul(*y));
    }
}

/// The execution sample of a finished statement's frame: its time and I/O over all its calls.
#[inline(always)]
fn frame_sample(frame: &Frame<USAGE_WORDS>, jit: Option<JitCounters>) -> Sample {
    usage_sample(&frame.words, Phase::Exec, frame.rows, jit)
}

/// The sample a measurement's words (laid out as in `apply_now`) make.
#[inline(always)]
fn usage_sample(w: &[i64; USAGE_WORDS], phase: Phase, rows: u64, jit: Option<JitCounters>) -> Sample {
    // SAFETY: the words hold a `BufferUsage` and a `WalUsage` laid out as in `apply_now`, at
    // 8-byte alignment (sizes and alignment asserted above); every bit pattern is a valid value
    // of their integer fields.
    let (b, v) = unsafe {
        (&*w[1..].as_ptr().cast::<pg_sys::BufferUsage>(), &*w[1 + BUFFER_WORDS..].as_ptr().cast::<pg_sys::WalUsage>())
    };
    let time_ns = w[0];
    Sample {
        phase,
        duration_ms: time_ns as f64 / 1e6,
        duration_ns: time_ns.max(0) as u64,
        rows,
        buffers: BufferCounters {
            shared_blks_hit: b.shared_blks_hit,
            shared_blks_read: b.shared_blks_read,
            shared_blks_dirtied: b.shared_blks_dirtied,
            shared_blks_written: b.shared_blks_written,
            local_blks_hit: b.local_blks_hit,
            local_blks_read: b.local_blks_read,
            local_blks_dirtied: b.local_blks_dirtied,
            local_blks_written: b.local_blks_written,
            temp_blks_read: b.temp_blks_read,
            temp_blks_written: b.temp_blks_written,
            blk_read_time_ns: instr_ns(&b.blk_read_time),
            blk_write_time_ns: instr_ns(&b.blk_write_time),
            temp_blk_read_time_ns: instr_ns(&b.temp_blk_read_time),
            temp_blk_write_time_ns: instr_ns(&b.temp_blk_write_time),
        },
        wal: WalCounters { records: v.wal_records, fpi: v.wal_fpi, bytes: v.wal_bytes },
        jit,
    }
}

static mut PREV_POST_PARSE_ANALYZE: pg_sys::post_parse_analyze_hook_type = None;
static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Unguarded declarations of functions the trampolines call on every statement. Calling them
/// through pgrx's wrappers would catch the statement's own errors (rule 1) and cost a
/// `sigsetjmp` per call.
mod raw {
    use pgrx::pg_sys::*;
    use std::ffi::{c_char, c_int};
    unsafe extern "C-unwind" {
        pub fn standard_ExecutorStart(query_desc: *mut QueryDesc, eflags: c_int);
        pub fn standard_ExecutorRun(
            query_desc: *mut QueryDesc,
            direction: ScanDirection::Type,
            count: u64,
            execute_once: bool,
        );
        pub fn standard_ExecutorFinish(query_desc: *mut QueryDesc);
        pub fn standard_ExecutorEnd(query_desc: *mut QueryDesc);
        pub fn standard_planner(
            parse: *mut Query,
            query_string: *const c_char,
            cursor_options: c_int,
            bound_params: ParamListInfo,
        ) -> *mut PlannedStmt;
        #[allow(clippy::too_many_arguments)]
        pub fn standard_ProcessUtility(
            pstmt: *mut PlannedStmt,
            query_string: *const c_char,
            read_only_tree: bool,
            context: ProcessUtilityContext::Type,
            params: ParamListInfo,
            query_env: *mut QueryEnvironment,
            dest: *mut DestReceiver,
            qc: *mut QueryCompletion,
        );
        pub fn GetUserId() -> Oid;
        pub fn GetCurrentStatementStartTimestamp() -> TimestampTz;
    }
}

/// Install every hook, saving the previous ones; called from `_PG_init` while preloading.
pub fn install() {
    // SAFETY: _PG_init runs once, single-threaded, before any statement can reach these hooks.
    unsafe {
        PREV_POST_PARSE_ANALYZE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

/// A transaction ended: no statement of it runs any more (see [`Frames::xact_ended`]); after an
/// abort, the ERROR that caused it left the nesting levels of the calls it interrupted raised.
unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            FRAMES.with(Frames::xact_ended);
            // SAFETY: backend-local counters; nothing of ours runs during the callback.
            unsafe {
                NESTING = 0;
                PLAN_NESTING = 0;
            }
        }
        // Not the levels: a procedure's COMMIT runs inside a CALL, one level down.
        XACT_EVENT_COMMIT | XACT_EVENT_PREPARE => {
            FRAMES.with(Frames::xact_ended);
        }
        _ => {}
    }
}

/// Likewise for subtransactions (savepoints, PL/pgSQL exception blocks): an abort drops the
/// frames of the statements that started inside it and puts the levels back to those at its
/// start; statements that started before it keep their frames.
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    // SAFETY: backend-local counters; nothing of ours runs during the callback.
    unsafe {
        match event {
            pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => {
                let levels = [NESTING, PLAN_NESTING];
                FRAMES.with(|f| f.subxact_started(subid, levels));
            }
            pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
                FRAMES.with(|f| f.subxact_committed(subid));
            }
            pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
                if let Some(Some([nesting, plan_nesting])) = FRAMES.with(|f| f.subxact_aborted(subid)) {
                    NESTING = nesting;
                    PLAN_NESTING = plan_nesting;
                }
            }
            _ => {}
        }
    }
}

/// The clock and the backend's I/O counters at the start of a call timed on the stack
/// (planning, a utility statement), subtracted as a frame's are.
struct Snapshot([i64; USAGE_WORDS]);

/// CLOCK_MONOTONIC in nanoseconds, the clock Postgres' own instrumentation reads.
#[inline(always)]
fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct we pass; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl Snapshot {
    #[inline(always)]
    fn take() -> Self {
        let mut words = [0; USAGE_WORDS];
        apply_now::<-1>(&mut words, true);
        Snapshot(words)
    }

    /// The sample of what happened since `take`. The global counters include the I/O of
    /// parallel workers, which the executor folds into the leader's when they finish.
    #[inline(always)]
    fn sample(mut self, phase: Phase, rows: u64) -> Sample {
        apply_now::<1>(&mut self.0, true);
        usage_sample(&self.0, phase, rows, None)
    }
}

/// Run our own bookkeeping so that nothing it does can fail the user's statement: a panic or a
/// Postgres ERROR inside `f` is caught, the sample is counted as dropped, and the interrupt
/// holdoff counters that an ERROR resets are put back.
#[inline(always)]
fn guarded(f: impl FnOnce()) {
    // SAFETY: plain reads/writes of backend-local counters on the main thread.
    let (holdoff, cancel_holdoff) = unsafe { (pg_sys::InterruptHoldoffCount, pg_sys::QueryCancelHoldoffCount) };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        // SAFETY: as above; restoring what the caught ERROR reset.
        unsafe {
            pg_sys::InterruptHoldoffCount = holdoff;
            pg_sys::QueryCancelHoldoffCount = cancel_holdoff;
        }
        recorder::count_dropped_sample();
    }
}

/// Whether a statement at the current depth is recorded: not in parallel workers (their
/// work is folded into the leader's instrumentation), only with shared memory present, and not
/// while the index advisor plans (its planning is not the user's workload).
#[inline(always)]
fn enabled(level: i32) -> bool {
    // SAFETY: ParallelWorkerNumber is a backend-local global set at worker start.
    gucs::enabled_at(level)
        && unsafe { pg_sys::ParallelWorkerNumber } < 0
        && shmem::is_ready()
        && !crate::advisor::hypo::session_active()
}

/// EXECUTE, PREPARE and DEALLOCATE are not recorded themselves (as in pg_stat_statements):
/// executions are charged to the prepared statement by the executor hooks.
///
/// # Safety
/// `node` is a valid parse node.
unsafe fn is_handled_utility(node: *mut pg_sys::Node) -> bool {
    // SAFETY: reading the tag of a valid node.
    let tag = unsafe { (*node).type_ };
    !matches!(tag, pg_sys::NodeTag::T_ExecuteStmt | pg_sys::NodeTag::T_PrepareStmt | pg_sys::NodeTag::T_DeallocateStmt)
}

unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    // SAFETY: Postgres hands us valid pointers (jstate may be null); we chain first.
    unsafe {
        if let Some(prev) = PREV_POST_PARSE_ANALYZE {
            prev(pstate, query, jstate);
        }
        if !enabled(NESTING) {
            return;
        }
        if !(*query).utilityStmt.is_null() {
            if gucs::track_utility() && !is_handled_utility((*query).utilityStmt) {
                (*query).queryId = 0;
            }
            return;
        }
        // Only statements with constants need a normalized text; the others' text is the same
        // as the one the executor sees.
        if jstate.is_null() || (*jstate).clocations_count <= 0 || (*query).queryId == 0 {
            return;
        }
        let queryid = (*query).queryId;
        let toplevel = NESTING == 0;
        let userid = raw::GetUserId().to_u32();
        if recorder::known_at_parse(queryid, userid, toplevel) {
            return;
        }
        let (source, location, len) = ((*pstate).p_sourcetext, (*query).stmt_location, (*query).stmt_len);
        guarded(|| {
            recorder::note_parsed(queryid, userid, toplevel, || querytext::normalized(jstate, source, location, len))
        });
    }
}

unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: valid pointers from Postgres; `call` holds no destructors.
    unsafe {
        let call = move || match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => raw::standard_planner(parse, query_string, cursor_options, bound_params),
        };
        if !(gucs::track_planning()
            && enabled(PLAN_NESTING + NESTING)
            && !query_string.is_null()
            && (*parse).queryId != 0)
        {
            return call();
        }
        let start = Snapshot::take();
        PLAN_NESTING += 1;
        let result = call();
        PLAN_NESTING -= 1;
        let sample = start.sample(Phase::Plan, 0);
        let (queryid, location, len) = ((*parse).queryId, (*parse).stmt_location, (*parse).stmt_len);
        let key = statement_key(queryid);
        let statement = Executed { source: query_string, location, len, params: bound_params, plannable: true };
        guarded(|| recorder::record(&key, &sample, &statement));
        result
    }
}

unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    // SAFETY: valid QueryDesc from Postgres.
    unsafe {
        let tracked = (*(*query_desc).plannedstmt).queryId != 0 && enabled(NESTING);
        // A sampled execution's nodes count rows (it must be asked for before start-up), so
        // that its predicates' filtering can be read at the end.
        let sampled = tracked && recorder::sample_quals();
        if sampled {
            (*query_desc).instrument_options |= pg_sys::InstrumentOption::INSTRUMENT_ROWS as c_int;
        }
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => raw::standard_ExecutorStart(query_desc, eflags),
        }
        if tracked {
            let io_timing = pg_sys::track_io_timing;
            FRAMES.with(|f| f.begin(query_desc as usize, sampled, io_timing));
        }
    }
}

/// Run one ExecutorRun/ExecutorFinish call one level deeper, timing it if its statement is
/// timed (and, for ExecutorRun, counting the rows it processed). If the call raises an ERROR,
/// the abort of the (sub)transaction that catches it restores the level (see the module
/// documentation) and drops the frame, or [`Frames::xact_ended`] does.
///
/// # Safety
/// `call` is a pass-through to the previous hook or standard function (no destructors).
#[inline(always)]
unsafe fn run_nested(query_desc: *mut pg_sys::QueryDesc, count_rows: bool, call: impl FnOnce()) {
    let id = query_desc as usize;
    let timed = FRAMES.with(|f| f.resume(id, apply_now::<-1>)).unwrap_or(false);
    // SAFETY: see the function contract; NESTING is backend-local.
    unsafe {
        NESTING += 1;
        call();
        NESTING -= 1;
        if timed {
            // SAFETY: the query has not ended (ExecutorEnd frees it), so its estate is valid.
            let rows = if count_rows { (*(*query_desc).estate).es_processed } else { 0 };
            FRAMES.with(|f| f.pause(id, rows, apply_now::<1>));
        }
    }
}

unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: pass-through of Postgres' own arguments; the closure holds no destructors.
    unsafe {
        run_nested(query_desc, true, || match PREV_EXECUTOR_RUN {
            Some(prev) => prev(query_desc, direction, count, execute_once),
            None => raw::standard_ExecutorRun(query_desc, direction, count, execute_once),
        });
    }
}

unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: as in `executor_run`.
    unsafe {
        let call = || match PREV_EXECUTOR_FINISH {
            Some(prev) => prev(query_desc),
            None => raw::standard_ExecutorFinish(query_desc),
        };
        // ExecutorFinish runs AFTER triggers and the rest of data-modifying CTEs. A plain SELECT
        // has neither, so its Finish runs no statement and takes no measurable time: skip the
        // bookkeeping (most statements are plain SELECTs).
        if (*query_desc).operation == pg_sys::CmdType::CMD_SELECT
            && (*(*query_desc).estate).es_auxmodifytables.is_null()
        {
            call();
        } else {
            run_nested(query_desc, false, call);
        }
    }
}

unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: valid QueryDesc; everything is read before the standard ExecutorEnd frees it.
    unsafe {
        let queryid = (*(*query_desc).plannedstmt).queryId;
        // The sample is written once, where it stays (this path runs for every statement).
        let mut sample = std::mem::MaybeUninit::<Sample>::uninit();
        let timed = if queryid != 0 {
            let estate = (*query_desc).estate;
            let jit = (!(*estate).es_jit.is_null()).then(|| jit_counters(&(*(*estate).es_jit).instr));
            FRAMES
                .with(|f| {
                    f.end_with(query_desc as usize, |frame| {
                        sample.write(frame_sample(frame, jit));
                        frame.sampled
                    })
                })
                .flatten()
        } else {
            None
        };
        // A statement has a frame only if it was recorded when it started.
        if let Some(sampled) = timed {
            // SAFETY: written by the closure whenever it returned a frame's verdict.
            let sample = sample.assume_init_ref();
            let key = &statement_key(queryid);
            let stmt = (*(*query_desc).plannedstmt).stmt_location;
            let stmt_len = (*(*query_desc).plannedstmt).stmt_len;
            let statement = Executed {
                source: (*query_desc).sourceText,
                location: stmt,
                len: stmt_len,
                params: (*query_desc).params,
                plannable: true,
            };
            guarded(|| {
                recorder::record(key, sample, &statement);
                if recorder::is_slow(sample.duration_ms) {
                    let plans =
                        if gucs::slow_query_plans() { explain::capture(query_desc) } else { Default::default() };
                    recorder::record_slow(key, sample, statement.text(), plans);
                }
                if sampled {
                    recorder::record_quals(&crate::quals::collect::collect(query_desc, queryid, key.userid, key.dbid));
                    recorder::refresh_example(key, &statement);
                }
            });
        }
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query_desc),
            None => raw::standard_ExecutorEnd(query_desc),
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: pass-through of Postgres' own arguments; `call` holds no destructors.
    unsafe {
        let call = move || match PREV_PROCESS_UTILITY {
            Some(prev) => prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
            None => {
                raw::standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }
        };
        let saved_queryid = (*pstmt).queryId;
        let tracked = gucs::track_utility() && enabled(NESTING);
        // Utility statements that contain an optimizable one (EXPLAIN, CREATE TABLE AS, DECLARE
        // CURSOR) go through the executor too; zeroing the id keeps them from being counted
        // twice, since we time them here.
        if tracked {
            (*pstmt).queryId = 0;
        }
        if !(tracked && is_handled_utility((*pstmt).utilityStmt)) {
            call();
            return;
        }
        let start = Snapshot::take();
        NESTING += 1;
        call();
        NESTING -= 1;
        if saved_queryid == 0 {
            return;
        }
        // Rows retrieved or affected, for the commands that report them.
        let rows = if !qc.is_null()
            && matches!(
                (*qc).commandTag,
                pg_sys::CommandTag::CMDTAG_COPY
                    | pg_sys::CommandTag::CMDTAG_FETCH
                    | pg_sys::CommandTag::CMDTAG_SELECT
                    | pg_sys::CommandTag::CMDTAG_REFRESH_MATERIALIZED_VIEW
            ) {
            (*qc).nprocessed
        } else {
            0
        };
        let sample = start.sample(Phase::Exec, rows);
        let key = statement_key(saved_queryid);
        let (location, len) = ((*pstmt).stmt_location, (*pstmt).stmt_len);
        let statement =
            Executed { source: query_string, location, len, params: std::ptr::null_mut(), plannable: false };
        guarded(|| {
            recorder::record(&key, &sample, &statement);
            if recorder::is_slow(sample.duration_ms) {
                recorder::record_slow(&key, &sample, statement.text(), Default::default());
            }
        });
    }
}

/// The statement a hook is looking at, read only when the recorder asks (see
/// `recorder::Statement`).
struct Executed {
    source: *const c_char,
    location: i32,
    len: i32,
    params: pg_sys::ParamListInfo,
    plannable: bool,
}

impl recorder::Statement for Executed {
    fn text(&self) -> Vec<u8> {
        querytext::statement_text(self.source, self.location, self.len)
    }

    fn params(&self) -> Vec<crate::stats::examples::ExampleParam> {
        // SAFETY: the parameters of the statement being executed, alive for its duration.
        unsafe { querytext::param_values(self.params) }
    }

    fn plannable(&self) -> bool {
        self.plannable
    }
}

/// Who ran the statement, where, and at which level.
#[inline(always)]
fn statement_key(queryid: u64) -> recorder::StatementKey {
    // SAFETY: backend-local globals and side-effect-free getters.
    unsafe {
        recorder::StatementKey {
            queryid,
            userid: raw::GetUserId().to_u32(),
            dbid: pg_sys::MyDatabaseId.to_u32(),
            toplevel: NESTING == 0,
            at: raw::GetCurrentStatementStartTimestamp(),
        }
    }
}

#[inline(always)]
fn instr_ns(t: &pg_sys::instr_time) -> i64 {
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

#[inline(always)]
fn instr_ms(t: &pg_sys::instr_time) -> f64 {
    instr_ns(t) as f64 / 1e6
}

fn jit_counters(j: &pg_sys::JitInstrumentation) -> JitCounters {
    JitCounters {
        functions: j.created_functions as i64,
        generation_time: instr_ms(&j.generation_counter),
        inlining_time: instr_ms(&j.inlining_counter),
        optimization_time: instr_ms(&j.optimization_counter),
        emission_time: instr_ms(&j.emission_counter),
    }
}
