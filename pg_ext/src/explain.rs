//! The plan of a slow execution, captured at ExecutorEnd the way auto_explain does (without
//! ANALYZE: the plan with the planner's estimates, which costs nothing during execution). Only
//! executions over `voxperf.slow_query_threshold` reach this.

use pgrx::pg_sys;

/// The plan as EXPLAIN text and as a JSON object `{"Plan": {...}}`.
///
/// # Safety
/// `query_desc` is a started query that ExecutorEnd has not yet torn down.
pub unsafe fn capture(query_desc: *mut pg_sys::QueryDesc) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    // SAFETY: see the function contract. The output is allocated in the query's own memory
    // context, which the standard ExecutorEnd frees right after.
    unsafe {
        let old = pg_sys::CurrentMemoryContext;
        pg_sys::CurrentMemoryContext = (*(*query_desc).estate).es_query_cxt;
        let text = explain(query_desc, pg_sys::ExplainFormat::EXPLAIN_FORMAT_TEXT);
        let json = explain(query_desc, pg_sys::ExplainFormat::EXPLAIN_FORMAT_JSON).map(|mut j| {
            // Without the "Query" group the output is `[ "Plan": {...} ]`; turning the
            // brackets into braces makes it a JSON object, as auto_explain does.
            if j.len() >= 2 {
                let last = j.len() - 1;
                j[0] = b'{';
                j[last] = b'}';
            }
            j
        });
        pg_sys::CurrentMemoryContext = old;
        (text, json)
    }
}

/// # Safety
/// As for [`capture`].
unsafe fn explain(query_desc: *mut pg_sys::QueryDesc, format: pg_sys::ExplainFormat::Type) -> Option<Vec<u8>> {
    // SAFETY: the standard ExplainState lifecycle on a valid query.
    unsafe {
        let es = pg_sys::NewExplainState();
        (*es).format = format;
        (*es).costs = true;
        pg_sys::ExplainBeginOutput(es);
        pg_sys::ExplainPrintPlan(es, query_desc);
        pg_sys::ExplainEndOutput(es);
        let s = (*es).str_;
        if s.is_null() || (*s).len <= 0 {
            return None;
        }
        let mut out = std::slice::from_raw_parts((*s).data.cast::<u8>(), (*s).len as usize).to_vec();
        while out.last() == Some(&b'\n') {
            out.pop();
        }
        Some(out)
    }
}
