//! Checking the planner's early-stop assumption against the data.
//!
//! For `ORDER BY … LIMIT k`, an index in the sort order lets a scan stop after the first `k`
//! rows that pass its filter. The planner prices that scan as if matching rows were spread
//! evenly along the index: it expects to read `k / matches` of it. When the filter correlates
//! with the order (numbers of a country whose prices all sit above other countries'), the
//! matches come late and the scan reads far more; the planner cannot know, and an advisor that
//! believes it suggests an index that makes the statement slower than the index it displaces.
//!
//! So when a plan stops early on a filtered index scan, the advisor reads a sample of the
//! table in the statement's order (`TABLESAMPLE SYSTEM … REPEATABLE`, a few thousand rows, by
//! SPI, read-only) and finds where the `k`-th match would come: that fraction of the scan,
//! when larger than the planner's, replaces it in the plan's cost. Plans of other shapes, and
//! statements on several tables, are left as the planner priced them.

use pgrx::PgList;
use pgrx::pg_sys;
use std::ffi::CStr;

/// Rows the sample aims at (the whole table when it has fewer).
const SAMPLE_ROWS: f64 = 4000.0;

/// A plan that stops early on a filtered, ordered index scan, with what checking it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStop {
    /// `SELECT <scan's domain>, <filter> FROM <table> TABLESAMPLE … ORDER BY <statement's order>`
    /// with `%PERCENT%` where the sampling percentage goes.
    pub sample_sql: String,
    pub relid: u32,
    /// The rows the LIMIT wants (the planner's row estimate of the Limit node).
    pub wanted: f64,
    /// The scan's startup and total cost, and the Limit's total cost (the prorated scan).
    pub scan_startup: f64,
    pub scan_total: f64,
    pub limit_total: f64,
}

impl EarlyStop {
    /// The fraction of its scan the planner expects the LIMIT to need.
    pub fn planned_fraction(&self) -> f64 {
        let run = self.scan_total - self.scan_startup;
        if run > 0.0 { ((self.limit_total - self.scan_startup) / run).clamp(0.0, 1.0) } else { 1.0 }
    }

    /// The plan's cost with the scan's fraction `f` (at least the planner's) instead of the
    /// planner's.
    pub fn corrected(&self, plan_total: f64, f: f64) -> f64 {
        let f = f.max(self.planned_fraction());
        plan_total - self.limit_total + self.scan_startup + (self.scan_total - self.scan_startup) * f
    }
}

/// Where the `wanted`-th match comes in the scan, as a fraction of the scan's rows, from a
/// sample of the table in scan order: `rows` are (in the scan's domain, passes the filter) for
/// each sampled row; `sampled_share` is the sample's share of the table's rows. `None` when the
/// sample holds no row of the domain.
pub fn sampled_fraction(rows: &[(bool, bool)], sampled_share: f64, wanted: f64) -> Option<f64> {
    let domain: Vec<bool> = rows.iter().filter(|r| r.0).map(|r| r.1).collect();
    if domain.is_empty() {
        return None;
    }
    // The sample holds `sampled_share` of every run of rows, so the wanted-th match of the
    // table comes about where the sample's (wanted × share)-th does.
    let needed = (wanted * sampled_share.clamp(0.0, 1.0)).max(1.0).ceil() as usize;
    let mut seen = 0;
    for (i, &m) in domain.iter().enumerate() {
        if m {
            seen += 1;
            if seen == needed {
                return Some((i + 1) as f64 / domain.len() as f64);
            }
        }
    }
    // Not enough matches in the sample: the scan reads all of it (and stops short of k rows).
    Some(1.0)
}

/// The early stop of a planned single-table `SELECT … ORDER BY … LIMIT`, if its plan is a Limit
/// directly over a filtered index scan.
///
/// # Safety
/// `query` and `stmt` are the analyzed query and its plan, alive in the current memory context.
pub unsafe fn find(query: *mut pg_sys::Query, stmt: *mut pg_sys::PlannedStmt) -> Option<EarlyStop> {
    // SAFETY: see the function contract; every node is read as the tag it carries says.
    unsafe {
        let top = (*stmt).planTree;
        if top.is_null() || (*top).type_ != pg_sys::NodeTag::T_Limit || !(*stmt).subplans.is_null() {
            return None;
        }
        let scan = (*top).lefttree;
        if scan.is_null() || (*scan).type_ != pg_sys::NodeTag::T_IndexScan || (*scan).qual.is_null() {
            return None;
        }
        if (*query).commandType != pg_sys::CmdType::CMD_SELECT || (*query).sortClause.is_null() {
            return None;
        }
        let rtable = PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable);
        if rtable.len() != 1 {
            return None;
        }
        let rte = rtable.get_ptr(0)?;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION || !(*rte).tablesample.is_null() {
            return None;
        }
        let iscan = scan.cast::<pg_sys::IndexScan>();
        if (*iscan).scan.scanrelid != 1 {
            return None;
        }
        let relid = (*rte).relid;
        let relname = pg_sys::get_rel_name(relid);
        let nspname = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if relname.is_null() || nspname.is_null() {
            return None;
        }
        let context = pg_sys::deparse_context_for(relname, relid);
        let deparse = |node: *mut pg_sys::Node| -> Option<String> {
            if node.is_null() {
                return None;
            }
            let text = pg_sys::deparse_expression(node, context, false, false);
            (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
        };
        let and = |list: *mut pg_sys::List| -> Option<String> {
            if list.is_null() { Some("true".into()) } else { deparse(pg_sys::make_ands_explicit(list).cast()) }
        };
        // The scan's domain: the index conditions (as written against the table) and the
        // index's partial predicate; its filter: what the scan checks row by row.
        let mut domain = vec![and((*iscan).indexqualorig)?];
        let pred = index_predicate((*iscan).indexid)?;
        if !pred.is_null() {
            domain.push(and(pred)?);
        }
        let filter = and((*scan).qual)?;
        let mut order = Vec::new();
        for sgc in PgList::<pg_sys::SortGroupClause>::from_pg((*query).sortClause).iter_ptr() {
            let tle = pg_sys::get_sortgroupclause_tle(sgc, (*query).targetList);
            let mut reverse = false;
            if pg_sys::get_equality_op_for_ordering_op((*sgc).sortop, &mut reverse) == pg_sys::InvalidOid {
                return None;
            }
            let expr = deparse((*tle).expr.cast())?;
            let nulls = if (*sgc).nulls_first { "NULLS FIRST" } else { "NULLS LAST" };
            order.push(format!("({expr}) {} {nulls}", if reverse { "DESC" } else { "ASC" }));
        }
        let table = format!(
            "{}.{}",
            CStr::from_ptr(pg_sys::quote_identifier(nspname)).to_string_lossy(),
            CStr::from_ptr(pg_sys::quote_identifier(relname)).to_string_lossy()
        );
        let sample_sql = format!(
            "SELECT coalesce(({}), false), coalesce(({filter}), false) FROM {table} TABLESAMPLE SYSTEM (%PERCENT%) REPEATABLE (0) ORDER BY {}",
            domain.join(") AND ("),
            order.join(", ")
        );
        Some(EarlyStop {
            sample_sql,
            relid: relid.to_u32(),
            wanted: (*top).plan_rows,
            scan_startup: (*scan).startup_cost,
            scan_total: (*scan).total_cost,
            limit_total: (*top).total_cost,
        })
    }
}

/// The partial predicate (implicit-AND list, varno 1; null for a full index) of a hypothetical
/// index of the session or of a real one.
unsafe fn index_predicate(indexid: pg_sys::Oid) -> Option<*mut pg_sys::List> {
    if let Some(pred) = super::hypo::hypothetical_predicate(indexid) {
        return Some(pred);
    }
    // SAFETY: a relcache entry opened and closed here; the planner holds a lock on the index.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(indexid);
        if rel.is_null() {
            return None;
        }
        let pred = pg_sys::RelationGetIndexPredicate(rel);
        pg_sys::RelationClose(rel);
        Some(pred)
    }
}

/// Run the sample of `es` (with the statement's parameters) and return where the wanted-th
/// match comes (see [`sampled_fraction`]). Read-only; the caller isolates it in a
/// subtransaction and keeps hypothetical indexes out of sight.
///
/// # Safety
/// `params` is null or the statement's bound parameters, alive for the call.
pub unsafe fn sample(es: &EarlyStop, params: pg_sys::ParamListInfo) -> Option<f64> {
    use pgrx::datum::DatumWithOid;
    use pgrx::spi::Spi;
    let mut args = Vec::new();
    // SAFETY: see the function contract: `numParams` entries follow the list's header.
    unsafe {
        if !params.is_null() {
            for i in 0..(*params).numParams as usize {
                let p = (*params).params.as_ptr().add(i);
                args.push(if (*p).isnull {
                    DatumWithOid::null_oid((*p).ptype)
                } else {
                    DatumWithOid::new((*p).value, (*p).ptype)
                });
            }
        }
    }
    let result: Result<Option<f64>, pgrx::spi::SpiError> = Spi::connect(|client| {
        let oid = pg_sys::Oid::from(es.relid);
        let reltuples = client
            .select("SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = $1", Some(1), &[oid.into()])?
            .first()
            .get_one::<f64>()?
            .unwrap_or(0.0);
        if reltuples <= 0.0 {
            // Never analyzed (or empty): no size to scale the sample to, and a full read of an
            // unknown table is not the advisor's to make.
            return Ok(None);
        }
        let percent = if reltuples > SAMPLE_ROWS { 100.0 * SAMPLE_ROWS / reltuples } else { 100.0 };
        let sql = es.sample_sql.replace("%PERCENT%", &format!("{percent:.6}"));
        let mut rows = Vec::new();
        for row in client.select(&sql, None, &args)? {
            rows.push((row.get::<bool>(1)?.unwrap_or(false), row.get::<bool>(2)?.unwrap_or(false)));
        }
        let share = (rows.len() as f64 / reltuples).min(1.0);
        Ok(sampled_fraction(&rows, share, es.wanted))
    });
    result.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_spread_along_the_order_leave_the_planner_right() {
        // 1 row in 10 matches, evenly; the whole table is sampled.
        let rows: Vec<(bool, bool)> = (0..1000).map(|i| (true, i % 10 == 0)).collect();
        let f = sampled_fraction(&rows, 1.0, 25.0).unwrap();
        assert!((0.24..0.26).contains(&f), "{f}");
    }

    #[test]
    fn matches_at_the_end_of_the_order_make_the_scan_read_nearly_everything() {
        let rows: Vec<(bool, bool)> = (0..1000).map(|i| (true, i >= 900)).collect();
        assert!(sampled_fraction(&rows, 1.0, 25.0).unwrap() > 0.9);
        // A 10 % sample sees 2.5 of the 25 wanted: the third of its matches.
        let sample: Vec<(bool, bool)> = (0..100).map(|i| (true, i >= 90)).collect();
        let f = sampled_fraction(&sample, 0.1, 25.0).unwrap();
        assert!((0.92..0.94).contains(&f), "{f}");
    }

    #[test]
    fn rows_outside_the_domain_are_not_scanned_and_no_match_means_all_of_it() {
        let rows = vec![(false, true), (true, false), (false, true), (true, false)];
        assert_eq!(sampled_fraction(&rows, 1.0, 1.0), Some(1.0));
        assert_eq!(sampled_fraction(&[(false, true)], 1.0, 1.0), None);
    }

    #[test]
    fn the_correction_never_makes_a_plan_cheaper_than_the_planner_said() {
        let es = EarlyStop {
            sample_sql: String::new(),
            relid: 1,
            wanted: 25.0,
            scan_startup: 10.0,
            scan_total: 1010.0,
            limit_total: 20.0, // the planner expects 1 % of the scan
        };
        assert!((es.planned_fraction() - 0.01).abs() < 1e-9);
        assert_eq!(es.corrected(50.0, 0.001), 50.0);
        assert_eq!(es.corrected(50.0, 0.5), 50.0 - 20.0 + 10.0 + 500.0);
    }
}
