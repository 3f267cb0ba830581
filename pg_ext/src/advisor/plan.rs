//! Planning a statement the way the advisor needs it: parse, analyze and plan — never execute —
//! and read off the total cost, the indexes the plan uses, and an EXPLAIN rendering.
//!
//! Statements run through the server's own parser and planner inside the calling SQL function's
//! transaction, so malformed SQL and unknown relations fail with Postgres' own errors. Work done
//! here is invisible to voxperf's statistics (the hooks check `hypo::session_active`).

use super::AdvisorError;
use pgrx::PgList;
use pgrx::pg_sys;
use std::ffi::{CStr, CString};

/// The planned statements of one query text (rules may turn one statement into several).
pub struct Planned {
    pub stmts: Vec<*mut pg_sys::PlannedStmt>,
    /// The analyzed form of each statement that may stop early (a SELECT with ORDER BY and
    /// LIMIT), for `early_stop`; `None` for the others.
    queries: Vec<Option<*mut pg_sys::Query>>,
    sql: CString,
    params: pg_sys::ParamListInfo,
}

pub use super::model::Write;

/// A parameter value for planning, as text in the parameter type's input syntax.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamValue {
    pub type_oid: pg_sys::Oid,
    pub text: Option<String>,
}

/// Plan `sql` (one statement). `$n` parameters are typed by parse analysis; with `params`
/// given they are bound as constants so the planner sees real values (a custom plan), without
/// them the planner treats them as unknown (a generic plan).
pub fn plan(sql: &str, params: &[ParamValue]) -> Result<Planned, AdvisorError> {
    let c_sql = CString::new(sql).map_err(|_| AdvisorError::NulInText)?;
    // SAFETY: the server's parse/analyze/plan entry points on a NUL-terminated string, in the
    // current memory context and transaction.
    unsafe {
        let raw = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::pg_parse_query(c_sql.as_ptr()));
        if raw.len() != 1 {
            return Err(AdvisorError::NotOneStatement(raw.len()));
        }
        let rawstmt = raw.get_ptr(0).unwrap();
        let mut types: *mut pg_sys::Oid = std::ptr::null_mut();
        let mut ntypes = 0;
        if !params.is_empty() {
            types = pg_sys::palloc0(params.len() * std::mem::size_of::<pg_sys::Oid>()).cast();
            for (i, p) in params.iter().enumerate() {
                *types.add(i) = p.type_oid;
            }
            ntypes = params.len() as i32;
        }
        let queries = PgList::<pg_sys::Query>::from_pg(pg_sys::pg_analyze_and_rewrite_varparams(
            rawstmt,
            c_sql.as_ptr(),
            &mut types,
            &mut ntypes,
            std::ptr::null_mut(),
        ));
        let bound = if params.is_empty() { std::ptr::null_mut() } else { bind(params)? };
        let mut stmts = Vec::new();
        let mut analyzed = Vec::new();
        for q in queries.iter_ptr() {
            if (*q).commandType == pg_sys::CmdType::CMD_UTILITY {
                return Err(AdvisorError::NotPlannable);
            }
            // The planner scribbles on its input: keep the analyzed form for `early_stop`.
            let may_stop_early = (*q).commandType == pg_sys::CmdType::CMD_SELECT
                && !(*q).sortClause.is_null()
                && !(*q).limitCount.is_null();
            analyzed.push(may_stop_early.then(|| pg_sys::copyObjectImpl(q.cast()).cast::<pg_sys::Query>()));
            stmts.push(pg_sys::pg_plan_query(q, c_sql.as_ptr(), pg_sys::CURSOR_OPT_PARALLEL_OK as i32, bound));
        }
        Ok(Planned { stmts, queries: analyzed, sql: c_sql, params: bound })
    }
}

/// A `ParamListInfo` holding `params` as constants.
///
/// # Safety
/// Called inside a transaction; allocates in the current memory context.
unsafe fn bind(params: &[ParamValue]) -> Result<pg_sys::ParamListInfo, AdvisorError> {
    // SAFETY: see the function contract; type input functions validate the texts.
    unsafe {
        let list = pg_sys::makeParamList(params.len() as i32);
        for (i, p) in params.iter().enumerate() {
            let slot = (*list).params.as_mut_ptr().add(i);
            (*slot).ptype = p.type_oid;
            (*slot).pflags = pg_sys::PARAM_FLAG_CONST as u16;
            match &p.text {
                None => {
                    (*slot).isnull = true;
                    (*slot).value = pg_sys::Datum::from(0);
                }
                Some(text) => {
                    let c_text = CString::new(text.as_str()).map_err(|_| AdvisorError::NulInText)?;
                    let (mut input, mut ioparam) = (pg_sys::Oid::INVALID, pg_sys::Oid::INVALID);
                    pg_sys::getTypeInputInfo(p.type_oid, &mut input, &mut ioparam);
                    (*slot).value = pg_sys::OidInputFunctionCall(input, c_text.as_ptr().cast_mut(), ioparam, -1);
                    (*slot).isnull = false;
                }
            }
        }
        Ok(list)
    }
}

impl Planned {
    /// The early stop of a single-statement plan, to check against the data (see
    /// `early_stop`).
    pub fn early_stop(&self) -> Option<super::early_stop::EarlyStop> {
        match (self.queries.as_slice(), self.stmts.as_slice()) {
            // SAFETY: both live in the memory context the plan was made in.
            ([Some(q)], [s]) => unsafe { super::early_stop::find(*q, *s) },
            _ => None,
        }
    }

    /// The bound parameters the statement was planned with (null when it has none).
    pub fn params(&self) -> pg_sys::ParamListInfo {
        self.params
    }

    /// The planner's total cost, summed over the statements.
    pub fn total_cost(&self) -> f64 {
        // SAFETY: plans produced by `plan`, alive in the current memory context.
        self.stmts
            .iter()
            .map(|&s| unsafe { if (*s).planTree.is_null() { 0.0 } else { (*(*s).planTree).total_cost } })
            .sum()
    }

    /// OIDs of every index the plans scan.
    pub fn used_indexes(&self) -> Vec<pg_sys::Oid> {
        let mut out = Vec::new();
        for &s in &self.stmts {
            // SAFETY: as in `total_cost`; the subplans list belongs to the statement.
            unsafe {
                collect_indexes((*s).planTree, &mut out);
                for sub in PgList::<pg_sys::Plan>::from_pg((*s).subplans).iter_ptr() {
                    collect_indexes(sub, &mut out);
                }
            }
        }
        out.sort_unstable_by_key(|o| o.to_u32());
        out.dedup();
        out
    }

    /// The tables the statement writes: inserted into, updated (with the columns it sets) or
    /// deleted from.
    pub fn writes(&self) -> Vec<(u32, Write)> {
        let mut out = Vec::new();
        for &s in &self.stmts {
            // SAFETY: a ModifyTable is the top node of a planned UPDATE; its lists are parallel.
            unsafe {
                let top = (*s).planTree;
                if top.is_null() || (*top).type_ != pg_sys::NodeTag::T_ModifyTable {
                    continue;
                }
                let mt = top.cast::<pg_sys::ModifyTable>();
                let operation = (*mt).operation;
                let rels = PgList::<std::ffi::c_void>::from_pg((*mt).resultRelations);
                let colnos = PgList::<pg_sys::List>::from_pg((*mt).updateColnosLists);
                for i in 0..rels.len() {
                    let rti = pg_sys::list_nth_int((*mt).resultRelations, i as i32);
                    let rte = pg_sys::list_nth((*s).rtable, rti - 1).cast::<pg_sys::RangeTblEntry>();
                    let write = match operation {
                        pg_sys::CmdType::CMD_INSERT => Write::Insert,
                        pg_sys::CmdType::CMD_DELETE => Write::Delete,
                        pg_sys::CmdType::CMD_UPDATE => Write::Update(match colnos.get_ptr(i) {
                            Some(list) => {
                                (0..pg_sys::list_length(list)).map(|k| pg_sys::list_nth_int(list, k) as i16).collect()
                            }
                            None => Vec::new(),
                        }),
                        // MERGE may do any of them: count it as an update of every column.
                        _ => Write::Update(Vec::new()),
                    };
                    out.push(((*rte).relid.to_u32(), write));
                }
            }
        }
        out
    }

    /// EXPLAIN (no ANALYZE) of the plans, as text. Executor start-up runs in EXPLAIN-only
    /// mode, which never opens the indexes and runs nothing.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for &s in &self.stmts {
            // SAFETY: the standard ExplainState lifecycle on our own plans.
            unsafe {
                let es = pg_sys::NewExplainState();
                (*es).costs = true;
                (*es).format = pg_sys::ExplainFormat::EXPLAIN_FORMAT_TEXT;
                pg_sys::ExplainBeginOutput(es);
                pg_sys::ExplainOnePlan(
                    s,
                    std::ptr::null_mut(),
                    es,
                    self.sql.as_ptr(),
                    self.params,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null(),
                );
                pg_sys::ExplainEndOutput(es);
                let text = CStr::from_ptr((*(*es).str_).data).to_string_lossy();
                out.push_str(text.trim_end());
                out.push('\n');
            }
        }
        out.trim_end().to_string()
    }
}

/// Walk a plan tree (children, and the member lists of the nodes that have them).
///
/// # Safety
/// `plan` is NULL or a valid plan tree.
unsafe fn collect_indexes(plan: *mut pg_sys::Plan, out: &mut Vec<pg_sys::Oid>) {
    if plan.is_null() {
        return;
    }
    // SAFETY: node tags tell the concrete types; all pointers belong to the same plan.
    unsafe {
        use pg_sys::NodeTag::*;
        let members = |list: *mut pg_sys::List, out: &mut Vec<pg_sys::Oid>| {
            for p in PgList::<pg_sys::Plan>::from_pg(list).iter_ptr() {
                collect_indexes(p, out);
            }
        };
        match (*plan).type_ {
            T_IndexScan => out.push((*plan.cast::<pg_sys::IndexScan>()).indexid),
            T_IndexOnlyScan => out.push((*plan.cast::<pg_sys::IndexOnlyScan>()).indexid),
            T_BitmapIndexScan => out.push((*plan.cast::<pg_sys::BitmapIndexScan>()).indexid),
            T_Append => members((*plan.cast::<pg_sys::Append>()).appendplans, out),
            T_MergeAppend => members((*plan.cast::<pg_sys::MergeAppend>()).mergeplans, out),
            T_BitmapAnd => members((*plan.cast::<pg_sys::BitmapAnd>()).bitmapplans, out),
            T_BitmapOr => members((*plan.cast::<pg_sys::BitmapOr>()).bitmapplans, out),
            T_SubqueryScan => collect_indexes((*plan.cast::<pg_sys::SubqueryScan>()).subplan, out),
            T_CustomScan => members((*plan.cast::<pg_sys::CustomScan>()).custom_plans, out),
            _ => {}
        }
        collect_indexes((*plan).lefttree, out);
        collect_indexes((*plan).righttree, out);
    }
}

/// Run `f` in an internal subtransaction, as a PL/pgSQL exception block does: an ERROR inside
/// (a statement that no longer plans, a candidate the catalog rejects) is rolled back and
/// reported as `None`, and the advisor carries on with the rest. Results allocated by `f` stay
/// in the caller's memory context.
pub fn isolated<T>(f: impl FnOnce() -> T) -> Option<T> {
    // SAFETY: the documented subtransaction protocol; memory context and resource owner are
    // restored on both paths.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::CurrentMemoryContext = context;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        match result {
            Ok(_) => pg_sys::ReleaseCurrentSubTransaction(),
            Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
        }
        pg_sys::CurrentMemoryContext = context;
        pg_sys::CurrentResourceOwner = owner;
        result.ok()
    }
}
