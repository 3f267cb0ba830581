//! `voxperf.qual_stats` (predicates of sampled executions in this database) and
//! `voxperf.example_queries(queryid)` (the example executions the index advisor plans).

use super::privileges::Viewer;
use crate::error::{VoxperfError, require_preload};
use crate::shmem;
use crate::stats::examples;
use crate::stats::quals::{Kind, LIMITED_FLAG, QualEntry, Role};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every predicate recorded, in every database (the view shows the current one).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn qual_stats_all() -> Result<
    TableIterator<
        'static,
        (
            name!(dbid, pg_sys::Oid),
            name!(relid, pg_sys::Oid),
            name!(attnums, Vec<i16>),
            name!(expression, Option<String>),
            name!(opno, Option<pg_sys::Oid>),
            name!(opfamily, Option<pg_sys::Oid>),
            name!(strategy, Option<i16>),
            name!(kind, String),
            name!(role, String),
            name!(descending, Option<Vec<bool>>),
            name!(limited, bool),
            name!(executions, i64),
            name!(rows_out, f64),
            name!(rows_removed, f64),
            name!(selectivity, Option<f64>),
            name!(sample_constants, Option<Vec<String>>),
            name!(queryids, Option<Vec<i64>>),
        ),
    >,
    ErrorReport,
> {
    require_preload()?;
    let viewer = Viewer::current();
    let entries: Vec<QualEntry> = shmem::with_quals(|q| q.iter().filter(|e| e.in_use != 0).copied().collect())
        .ok_or(VoxperfError::NotPreloaded)?;
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            let role = Role::from_u8(e.role);
            let columns = e.columns().to_vec();
            let descending =
                (role == Role::SortKey).then(|| (0..columns.len()).map(|i| e.flags & (1 << i) != 0).collect());
            let constants: Vec<String> =
                e.constants().filter(|(_, owner)| viewer.may_see(*owner)).map(|(c, _)| text(c)).collect();
            (
                pg_sys::Oid::from(e.dbid),
                pg_sys::Oid::from(e.relid),
                columns,
                e.expr_text().map(text),
                (e.opno != 0).then(|| pg_sys::Oid::from(e.opno)),
                (e.opfamily != 0).then(|| pg_sys::Oid::from(e.opfamily)),
                (e.strategy != 0).then_some(e.strategy),
                Kind::from_u8(e.kind).name().to_string(),
                role.name().to_string(),
                descending,
                e.flags & LIMITED_FLAG != 0,
                e.executions as i64,
                e.rows_out,
                e.rows_removed,
                e.selectivity(),
                Some(constants),
                viewer.sees_all().then(|| e.queryids().iter().map(|&q| q as i64).collect()),
            )
        })
        .collect();
    Ok(TableIterator::new(rows))
}

extension_sql!(
    r#"
CREATE VIEW qual_stats AS
SELECT q.relid::regclass AS relation,
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
          FROM unnest(q.attnums) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = q.relid AND a.attnum = k.attnum) AS columns,
       q.expression,
       q.opno::regoperator::text AS operator,
       q.opfamily, q.strategy, q.kind, q.role, q.descending, q.limited,
       q.executions, q.rows_out, q.rows_removed, q.selectivity, q.sample_constants, q.queryids
FROM qual_stats_all() q
WHERE q.dbid = (SELECT oid FROM pg_database WHERE datname = current_database());
GRANT SELECT ON qual_stats TO PUBLIC;
COMMENT ON VIEW qual_stats IS
    'Predicates applied by sampled executions in this database (voxperf.qual_sample_rate): filters, index conditions, join and sort keys, with how much they filtered. Constants and queryids of others are shown only to roles with the privileges of pg_read_all_stats.';
"#,
    name = "qual_stats_view",
    requires = [qual_stats_all],
);

/// The example executions the index advisor plans for statement `queryid` in this database:
/// each one's kind (`sampled`: an execution taken at one of the statement's sampled moments;
/// `slowest`: the one that set its maximum execution time), its text (literals included), the
/// values of its parameters (prepared statements), how many executions the statement's
/// constancy record has seen, and which of this example's literal values never changed over
/// them. Visible to the statement's owner and to roles with the privileges of
/// pg_read_all_stats.
#[allow(clippy::type_complexity)] // pgrx reads the row type from the signature
#[pg_extern(volatile, parallel_safe)]
fn example_queries(
    queryid: i64,
) -> Result<
    TableIterator<
        'static,
        (
            name!(kind, String),
            name!(query, String),
            name!(parameters, Vec<Option<String>>),
            name!(captures, i32),
            name!(unchanged_values, Vec<String>),
        ),
    >,
    ErrorReport,
> {
    require_preload()?;
    let viewer = Viewer::current();
    // SAFETY: a backend-local global.
    let dbid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let found = shmem::with_examples(|slots| examples::lookup_all(slots, dbid, queryid as u64)).unwrap_or_default();
    let rows: Vec<_> = found
        .into_iter()
        .filter(|e| viewer.may_see(e.userid))
        .map(|e| {
            let kind = if e.variant == examples::SLOWEST { "slowest" } else { "sampled" };
            let unchanged: Vec<String> = examples::literal_values(&e)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| e.constancy.constant(*i, 1))
                .map(|(_, v)| v)
                .collect();
            let captures = i32::from(e.constancy.captures);
            (kind.to_string(), e.text, e.params.into_iter().map(|p| p.value).collect(), captures, unchanged)
        })
        .collect();
    Ok(TableIterator::new(rows))
}
