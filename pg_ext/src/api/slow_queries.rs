//! `voxperf.slow_queries`: the newest executions over `voxperf.slow_query_threshold`, with
//! the statement text (literals included) and, when captured, the plan as text and JSON.

use super::privileges::Viewer;
use crate::error::{VoxperfError, require_preload};
use crate::shmem;
use crate::stats::slow_ring::{FLAG_PLAN_TRUNCATED, FLAG_QUERY_TRUNCATED, FLAG_TOPLEVEL, SlowSlot};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

struct Copied {
    slot: SlowSlot,
    query: Vec<u8>,
    plan_text: Option<Vec<u8>>,
    plan_json: Option<Vec<u8>>,
}

fn text(bytes: &[u8], encoding: i32) -> Option<String> {
    // Stored in the encoding of the database the statement ran in.
    super::text_datum(bytes, encoding).and_then(|d| unsafe {
        // SAFETY: `text_datum` just built a valid text datum.
        String::from_datum(d, false)
    })
}

#[pg_extern(volatile, parallel_safe, name = "slow_queries")]
#[allow(clippy::type_complexity)]
fn slow_queries_fn() -> Result<
    TableIterator<
        'static,
        (
            name!(captured_at, Option<TimestampWithTimeZone>),
            name!(pid, i32),
            name!(userid, pg_sys::Oid),
            name!(dbid, pg_sys::Oid),
            name!(queryid, Option<i64>),
            name!(toplevel, bool),
            name!(duration, f64),
            name!(rows, i64),
            name!(query, Option<String>),
            name!(plan, Option<String>),
            name!(plan_json, Option<String>),
            name!(query_truncated, bool),
            name!(plan_truncated, bool),
        ),
    >,
    ErrorReport,
> {
    require_preload()?;
    let viewer = Viewer::current();
    let copied: Vec<Copied> = shmem::with_ring(|r| {
        r.newest_first()
            .into_iter()
            .map(|rec| Copied {
                slot: rec.slot,
                query: rec.query.to_vec(),
                plan_text: rec.plan_text.map(<[u8]>::to_vec),
                plan_json: rec.plan_json.map(<[u8]>::to_vec),
            })
            .collect()
    })
    .ok_or(VoxperfError::NotPreloaded)?;
    let rows: Vec<_> = copied
        .into_iter()
        .map(|c| {
            let s = c.slot;
            let visible = viewer.may_see(s.userid);
            let enc = s.encoding;
            (
                TimestampWithTimeZone::try_from(s.finished_at).ok(),
                s.pid,
                pg_sys::Oid::from(s.userid),
                pg_sys::Oid::from(s.dbid),
                visible.then_some(s.queryid as i64),
                s.flags & FLAG_TOPLEVEL != 0,
                s.duration_ms,
                s.rows as i64,
                if visible { text(&c.query, enc) } else { Some("<insufficient privilege>".to_string()) },
                if visible { c.plan_text.as_deref().and_then(|p| text(p, enc)) } else { None },
                if visible { c.plan_json.as_deref().and_then(|p| text(p, enc)) } else { None },
                s.flags & FLAG_QUERY_TRUNCATED != 0,
                s.flags & FLAG_PLAN_TRUNCATED != 0,
            )
        })
        .collect();
    Ok(TableIterator::new(rows))
}

extension_sql!(
    r#"
CREATE VIEW slow_queries AS
SELECT s.captured_at, s.pid, s.userid, r.rolname AS username, s.dbid, d.datname,
       s.queryid, s.toplevel, s.duration, s.rows, s.query, s.plan, s.plan_json::json AS plan_json,
       s.query_truncated, s.plan_truncated
FROM slow_queries() s
LEFT JOIN pg_roles r ON r.oid = s.userid
LEFT JOIN pg_database d ON d.oid = s.dbid;
GRANT SELECT ON slow_queries TO PUBLIC;
COMMENT ON VIEW slow_queries IS
    'Newest executions over voxperf.slow_query_threshold (duration in ms), newest first, with text and plan; texts of other users are hidden unless you have the privileges of pg_read_all_stats.';
"#,
    name = "slow_queries_view",
    requires = [slow_queries_fn],
);
