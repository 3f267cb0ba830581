//! The index advisor's SQL functions: `voxperf.what_if`, `voxperf.suggest_indexes` and
//! `voxperf.index_migration`.

use super::privileges::Viewer;
use crate::advisor::hypo::Session;
use crate::advisor::suggest::{Outcome, Request, suggest};
use crate::advisor::{AdvisorError, ddl, plan};
use crate::error::require_preload;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Plan `query` without and with the hypothetical indexes `index_ddls` (CREATE INDEX
/// statements): costs, the improvement (fraction of the cost saved), which of the indexes the
/// new plan uses, and both plans. Nothing is executed or created.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn what_if(
    query: &str,
    index_ddls: default!(Vec<String>, "'{}'"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(cost_before, f64),
            name!(cost_after, f64),
            name!(improvement, f64),
            name!(indexes_used, Vec<String>),
            name!(plan_before, String),
            name!(plan_after, String),
        ),
    >,
    ErrorReport,
> {
    let session = Session::open().map_err(AdvisorError::Nested)?;
    let mut handles = Vec::with_capacity(index_ddls.len());
    for ddl_text in &index_ddls {
        handles.push(session.add(ddl::parse_create_index(ddl_text)?));
    }
    let before = plan::plan(query, &[])?;
    let (cost_before, plan_before) = (before.total_cost(), before.explain());
    session.show(&handles);
    let after = plan::plan(query, &[])?;
    let (cost_after, plan_after) = (after.total_cost(), after.explain());
    let used: Vec<String> = after
        .used_indexes()
        .into_iter()
        .filter_map(|oid| session.handle_of_oid(oid))
        .map(|h| index_ddls[handles.iter().position(|&x| x == h).unwrap()].clone())
        .collect();
    let improvement = if cost_before > 0.0 { (cost_before - cost_after) / cost_before } else { 0.0 };
    Ok(TableIterator::once((cost_before, cost_after, improvement, used, plan_before, plan_after)))
}

fn invalid(message: String) -> ErrorReport {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, "voxperf advisor")
}

/// The recommendations for the workload voxperf has recorded in this database.
fn run(
    min_improvement: f64,
    max_indexes: i32,
    min_share: f64,
    queryids: Option<Vec<i64>>,
) -> Result<Outcome, ErrorReport> {
    require_preload()?;
    if !(0.0..=1.0).contains(&min_improvement) {
        return Err(invalid(format!("min_improvement must be between 0 and 1, got {min_improvement}")));
    }
    if !(0.0..=1.0).contains(&min_share) {
        return Err(invalid(format!("min_share must be between 0 and 1, got {min_share}")));
    }
    if max_indexes < 0 {
        return Err(ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("max_indexes must not be negative, got {max_indexes}"),
            "voxperf advisor",
        ));
    }
    // Statements of other users are part of the workload only for those allowed to see them.
    let viewer = Viewer::current();
    let req = Request {
        min_improvement,
        min_share,
        max_indexes: max_indexes as usize,
        queryids: queryids.map(|q| q.into_iter().map(|x| x as u64).collect()),
    };
    let outcome = suggest(&req, viewer.sees_all(), viewer.userid())?;
    if outcome.truncated {
        notice!(
            "voxperf.suggest_indexes stopped at voxperf.advisor_time_limit; the indexes so far are the best found in that time"
        );
    }
    Ok(outcome)
}

/// Recommended indexes for the statements voxperf has recorded in this database (the most
/// expensive first), each verified by the planner with hypothetical indexes. An index must cut
/// the planned cost of the statements it helps by at least `min_improvement` (a fraction) and
/// save, net of its maintenance, at least `min_share` of the workload's execution time.
/// `queryids` restricts the workload to those statements.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn suggest_indexes(
    min_improvement: default!(f64, 0.1),
    max_indexes: default!(i32, 10),
    min_share: default!(f64, 0.01),
    queryids: default!(Option<Vec<i64>>, "NULL"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(relation, String),
            name!(columns, Vec<String>),
            name!(method, String),
            name!(predicate, Option<String>),
            name!(ddl, String),
            name!(cost_before, f64),
            name!(cost_after, f64),
            name!(improvement, f64),
            name!(estimated_size_bytes, i64),
            name!(queryids, Vec<i64>),
            name!(write_overhead, f64),
            name!(breaks_hot, bool),
            name!(rationale, String),
            name!(estimated_saving_ms, f64),
            name!(estimated_upkeep_ms, f64),
        ),
    >,
    ErrorReport,
> {
    let outcome = run(min_improvement, max_indexes, min_share, queryids)?;
    Ok(TableIterator::new(outcome.suggestions.into_iter().map(|s| {
        (
            s.relation,
            s.columns,
            s.method,
            s.predicate,
            s.ddl,
            s.cost_before,
            s.cost_after,
            s.improvement,
            s.size_bytes,
            s.queryids,
            s.write_overhead,
            s.breaks_hot,
            s.rationale,
            s.saved_ms,
            s.upkeep_ms,
        )
    })))
}

/// A migration file for the current recommendations. `format`: `dbmate` (default; also read by
/// tools that take `-- migrate:up` / `-- migrate:down` sections), `goose`, or `plain` (up
/// statements, then the down statements commented out). Indexes are created and dropped
/// CONCURRENTLY, which cannot run inside a transaction: the file says so in each format's way.
#[pg_extern(volatile, parallel_unsafe)]
fn index_migration(
    min_improvement: default!(f64, 0.1),
    max_indexes: default!(i32, 10),
    format: default!(&str, "'dbmate'"),
    min_share: default!(f64, 0.01),
    queryids: default!(Option<Vec<i64>>, "NULL"),
) -> Result<String, ErrorReport> {
    let kind = match format {
        "dbmate" | "goose" | "plain" => format,
        other => {
            return Err(ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown migration format \"{other}\"; use dbmate, goose or plain"),
                "voxperf advisor",
            ));
        }
    };
    let outcome = run(min_improvement, max_indexes, min_share, queryids)?;
    Ok(crate::advisor::migration::render(&outcome.suggestions, kind, outcome.statements_considered))
}
