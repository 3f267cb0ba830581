//! The index advisor's SQL functions: `voxperf.what_if`.

use crate::advisor::hypo::Session;
use crate::advisor::{AdvisorError, ddl, plan};
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
