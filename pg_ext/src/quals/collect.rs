//! Predicates of an executed plan, read at ExecutorEnd of a sampled execution (whose nodes were
//! instrumented with `INSTRUMENT_ROWS` at ExecutorStart, so filtered-row counts exist).
//!
//! Collected: scan filters and index conditions (`col op const`, `col = ANY(array)`, `col IS
//! [NOT] NULL`, and expressions of one table's columns compared with a constant), hash and merge
//! join keys, and sort keys that all come from one table, flagged when a LIMIT sits above them.
//! Column references in upper plan nodes point into their children's target lists (`OUTER_VAR`,
//! `INNER_VAR`); they are followed down to the table column they come from.

use crate::backend::BackendCell;
use crate::stats::quals::{Kind, Observed, Role};
use pgrx::PgList;
use pgrx::pg_sys;
use pgrx::prelude::*;
use rustc_hash::FxHashMap;
use std::ffi::CStr;

/// What is constant for the whole walk.
struct Walk {
    rtable: *mut pg_sys::List,
    params: pg_sys::ParamListInfo,
    dbid: u32,
    userid: u32,
    queryid: u64,
    under_limit: bool,
    found: Vec<Observed>,
}

/// Every predicate of the executed plan of `query_desc`.
///
/// # Safety
/// `query_desc` is a query at ExecutorEnd whose plan state still exists.
pub unsafe fn collect(query_desc: *mut pg_sys::QueryDesc, queryid: u64, userid: u32, dbid: u32) -> Vec<Observed> {
    // SAFETY: see the function contract.
    unsafe {
        let mut walk = Walk {
            rtable: (*(*query_desc).plannedstmt).rtable,
            params: (*query_desc).params,
            dbid,
            userid,
            queryid,
            under_limit: false,
            found: Vec::new(),
        };
        visit((*query_desc).planstate, &mut walk);
        walk.found
    }
}

/// # Safety
/// `ps` is NULL or a valid plan state of the query being walked.
unsafe fn visit(ps: *mut pg_sys::PlanState, walk: &mut Walk) {
    if ps.is_null() {
        return;
    }
    // SAFETY: see the function contract; node tags tell the concrete types.
    unsafe {
        node(ps, walk);
        let was_limited = walk.under_limit;
        let plan = (*ps).plan;
        match (*plan).type_ {
            pg_sys::NodeTag::T_Limit => walk.under_limit = true,
            // Anything between the LIMIT and the sort that changes rows ends its effect.
            pg_sys::NodeTag::T_Sort | pg_sys::NodeTag::T_IncrementalSort | pg_sys::NodeTag::T_Result => {}
            _ => walk.under_limit = false,
        }
        pg_sys::planstate_tree_walker(ps, Some(walker), (walk as *mut Walk).cast());
        walk.under_limit = was_limited;
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn walker(ps: *mut pg_sys::PlanState, context: *mut std::ffi::c_void) -> bool {
    // SAFETY: `context` is the `Walk` passed by `visit`.
    unsafe { visit(ps, &mut *context.cast::<Walk>()) };
    false
}

/// # Safety
/// As for [`visit`].
unsafe fn node(ps: *mut pg_sys::PlanState, walk: &mut Walk) {
    // SAFETY: see the function contract.
    unsafe {
        let plan = (*ps).plan;
        let instr = (*ps).instrument;
        let (rows_out, removed_by_filter) = if instr.is_null() {
            (0.0, 0.0)
        } else {
            pg_sys::InstrEndLoop(instr);
            ((*instr).ntuples, (*instr).nfiltered1)
        };
        use pg_sys::NodeTag::*;
        match (*plan).type_ {
            T_SeqScan | T_SampleScan | T_TidScan | T_TidRangeScan | T_IndexScan | T_IndexOnlyScan
            | T_BitmapHeapScan => {
                let scanrelid = (*plan.cast::<pg_sys::Scan>()).scanrelid as i32;
                let Some(relid) = relation_of(walk.rtable, scanrelid) else { return };
                let stats = (rows_out, removed_by_filter);
                for q in PgList::<pg_sys::Expr>::from_pg((*plan).qual).iter_ptr() {
                    predicate(q, relid, scanrelid, Role::Filter, stats, walk);
                }
                let index_conds = match (*plan).type_ {
                    T_IndexScan => (*plan.cast::<pg_sys::IndexScan>()).indexqualorig,
                    T_BitmapHeapScan => (*plan.cast::<pg_sys::BitmapHeapScan>()).bitmapqualorig,
                    _ => std::ptr::null_mut(),
                };
                for q in PgList::<pg_sys::Expr>::from_pg(index_conds).iter_ptr() {
                    predicate(q, relid, scanrelid, Role::IndexCond, (rows_out, 0.0), walk);
                }
            }
            T_HashJoin | T_MergeJoin => {
                let clauses = if (*plan).type_ == T_HashJoin {
                    (*plan.cast::<pg_sys::HashJoin>()).hashclauses
                } else {
                    (*plan.cast::<pg_sys::MergeJoin>()).mergeclauses
                };
                for c in PgList::<pg_sys::Expr>::from_pg(clauses).iter_ptr() {
                    if (*c).type_ != T_OpExpr {
                        continue;
                    }
                    let args = PgList::<pg_sys::Expr>::from_pg((*c.cast::<pg_sys::OpExpr>()).args);
                    for side in args.iter_ptr() {
                        if let Some((relid, attnum)) = resolve(plan, side, walk.rtable) {
                            walk.found.push(observed(
                                walk,
                                relid,
                                Role::JoinKey,
                                Kind::Equality,
                                vec![attnum],
                                (rows_out, 0.0),
                            ));
                        }
                    }
                }
            }
            T_Sort | T_IncrementalSort => sort_keys(plan, rows_out, walk),
            _ => {}
        }
    }
}

fn observed(
    walk: &Walk,
    relid: u32,
    role: Role,
    kind: Kind,
    columns: Vec<i16>,
    (rows_out, rows_removed): (f64, f64),
) -> Observed {
    Observed {
        dbid: walk.dbid,
        relid,
        role,
        kind,
        columns,
        descending: Vec::new(),
        expr: None,
        opno: 0,
        opfamily: 0,
        strategy: 0,
        limited: false,
        rows_out,
        rows_removed,
        constant: None,
        queryid: walk.queryid,
        userid: walk.userid,
    }
}

/// Sort keys that all come from one table's columns.
///
/// # Safety
/// `plan` is a Sort or IncrementalSort of the query being walked.
unsafe fn sort_keys(plan: *mut pg_sys::Plan, rows_out: f64, walk: &mut Walk) {
    // SAFETY: the Sort node's arrays have numCols entries; its keys index its target list.
    unsafe {
        let sort = plan.cast::<pg_sys::Sort>();
        let tlist = (*plan).targetlist;
        let mut relid = None;
        let (mut columns, mut descending) = (Vec::new(), Vec::new());
        for i in 0..(*sort).numCols as usize {
            let idx = *(*sort).sortColIdx.add(i);
            let tle = pg_sys::list_nth(tlist, i32::from(idx) - 1).cast::<pg_sys::TargetEntry>();
            let Some((rel, attnum)) = resolve_in(plan, (*tle).expr, walk.rtable) else { return };
            if relid.is_some_and(|r| r != rel) {
                return; // keys from several tables: no single index can serve them
            }
            relid = Some(rel);
            columns.push(attnum);
            // A sort operator that is a btree ">" means DESC.
            let opname = CStr::from_ptr(pg_sys::get_opname(*(*sort).sortOperators.add(i)));
            descending.push(opname.to_bytes() == b">");
        }
        if let Some(relid) = relid {
            let mut o = observed(walk, relid, Role::SortKey, Kind::Ordering, columns, (rows_out, 0.0));
            o.descending = descending;
            o.limited = walk.under_limit;
            walk.found.push(o);
        }
    }
}

/// The relation OID of range-table entry `rti`, when it is a plain relation.
///
/// # Safety
/// `rtable` is the statement's range table.
unsafe fn relation_of(rtable: *mut pg_sys::List, rti: i32) -> Option<u32> {
    if rti <= 0 {
        return None;
    }
    // SAFETY: range table entries of a planned statement.
    unsafe {
        let rte = pg_sys::list_nth(rtable, rti - 1).cast::<pg_sys::RangeTblEntry>();
        ((*rte).rtekind == pg_sys::RTEKind::RTE_RELATION).then(|| (*rte).relid.to_u32())
    }
}

/// Follow `expr`, evaluated at `plan`, down to the table column it reads.
///
/// # Safety
/// `expr` belongs to `plan` (a join: OUTER_VAR/INNER_VAR refer to its children).
unsafe fn resolve(plan: *mut pg_sys::Plan, expr: *mut pg_sys::Expr, rtable: *mut pg_sys::List) -> Option<(u32, i16)> {
    // SAFETY: see the function contract.
    unsafe { resolve_in(plan, expr, rtable) }
}

/// # Safety
/// As for [`resolve`].
unsafe fn resolve_in(
    plan: *mut pg_sys::Plan,
    expr: *mut pg_sys::Expr,
    rtable: *mut pg_sys::List,
) -> Option<(u32, i16)> {
    // SAFETY: walking node pointers of one plan tree.
    unsafe {
        let mut e = expr;
        while !e.is_null() && (*e).type_ == pg_sys::NodeTag::T_RelabelType {
            e = (*e.cast::<pg_sys::RelabelType>()).arg;
        }
        if e.is_null() || (*e).type_ != pg_sys::NodeTag::T_Var {
            return None;
        }
        let var = e.cast::<pg_sys::Var>();
        let child = match (*var).varno {
            pg_sys::OUTER_VAR => (*plan).lefttree,
            pg_sys::INNER_VAR => (*plan).righttree,
            pg_sys::INDEX_VAR => return None,
            rti => {
                let attnum = (*var).varattno;
                return (attnum > 0).then_some(()).and_then(|_| relation_of(rtable, rti)).map(|r| (r, attnum));
            }
        };
        if child.is_null() {
            return None;
        }
        let tle = pg_sys::list_nth((*child).targetlist, i32::from((*var).varattno) - 1).cast::<pg_sys::TargetEntry>();
        resolve_in(child, (*tle).expr, rtable)
    }
}

/// Record one scan-level predicate if it has a shape an index could serve.
///
/// # Safety
/// `q` is a qual of the scan of range-table entry `scanrelid` (Vars carry that varno).
unsafe fn predicate(q: *mut pg_sys::Expr, relid: u32, scanrelid: i32, role: Role, stats: (f64, f64), walk: &mut Walk) {
    // SAFETY: see the function contract; node tags tell the concrete types.
    unsafe {
        use pg_sys::NodeTag::*;
        match (*q).type_ {
            T_OpExpr => {
                let op = q.cast::<pg_sys::OpExpr>();
                let args = PgList::<pg_sys::Expr>::from_pg((*op).args);
                if args.len() != 2 {
                    return;
                }
                let (l, r) = (args.get_ptr(0).unwrap(), args.get_ptr(1).unwrap());
                // `const op column` is recorded as the column side with the same operator kind.
                let (target, other) = if is_value(r, walk) {
                    (l, r)
                } else if is_value(l, walk) {
                    (r, l)
                } else {
                    return;
                };
                let OperatorInfo { kind, opfamily, strategy } = operator_info((*op).opno);
                let Some(mut o) = target_observation(target, relid, scanrelid, role, kind, stats, walk) else { return };
                o.opno = (*op).opno.to_u32();
                o.opfamily = opfamily;
                o.strategy = strategy;
                o.constant = value_text(other, walk);
                walk.found.push(o);
            }
            T_ScalarArrayOpExpr => {
                let op = q.cast::<pg_sys::ScalarArrayOpExpr>();
                let args = PgList::<pg_sys::Expr>::from_pg((*op).args);
                if args.len() != 2 || !(*op).useOr || operator_info((*op).opno).kind != Kind::Equality {
                    return;
                }
                let (target, other) = (args.get_ptr(0).unwrap(), args.get_ptr(1).unwrap());
                let Some(mut o) = target_observation(target, relid, scanrelid, role, Kind::InList, stats, walk) else {
                    return;
                };
                o.opno = (*op).opno.to_u32();
                o.constant = value_text(other, walk);
                walk.found.push(o);
            }
            T_NullTest => {
                let nt = q.cast::<pg_sys::NullTest>();
                let kind =
                    if (*nt).nulltesttype == pg_sys::NullTestType::IS_NULL { Kind::IsNull } else { Kind::IsNotNull };
                if let Some(o) = target_observation((*nt).arg, relid, scanrelid, role, kind, stats, walk) {
                    walk.found.push(o);
                }
            }
            _ => {}
        }
    }
}

/// The column (or single-table expression) side of a predicate.
///
/// # Safety
/// As for [`predicate`].
unsafe fn target_observation(
    target: *mut pg_sys::Expr,
    relid: u32,
    scanrelid: i32,
    role: Role,
    kind: Kind,
    stats: (f64, f64),
    walk: &Walk,
) -> Option<Observed> {
    // SAFETY: see the function contract.
    unsafe {
        let mut e = target;
        while (*e).type_ == pg_sys::NodeTag::T_RelabelType {
            e = (*e.cast::<pg_sys::RelabelType>()).arg;
        }
        if (*e).type_ == pg_sys::NodeTag::T_Var {
            let var = e.cast::<pg_sys::Var>();
            if (*var).varno != scanrelid || (*var).varattno <= 0 {
                return None;
            }
            return Some(observed(walk, relid, role, kind, vec![(*var).varattno], stats));
        }
        // An expression of this table's columns only (a function of a column, a jsonb field).
        if !only_vars_of(e.cast(), scanrelid) {
            return None;
        }
        let mut o = observed(walk, relid, role, kind, Vec::new(), stats);
        o.expr = Some(deparse(e, relid, scanrelid));
        Some(o)
    }
}

/// A constant, or a parameter whose value this execution knows.
///
/// # Safety
/// `e` is a valid expression node.
unsafe fn is_value(e: *mut pg_sys::Expr, walk: &Walk) -> bool {
    // SAFETY: reading node tags.
    unsafe {
        match (*e).type_ {
            pg_sys::NodeTag::T_Const => true,
            pg_sys::NodeTag::T_Param => {
                let p = e.cast::<pg_sys::Param>();
                (*p).paramkind == pg_sys::ParamKind::PARAM_EXTERN && !walk.params.is_null()
            }
            pg_sys::NodeTag::T_RelabelType => is_value((*e.cast::<pg_sys::RelabelType>()).arg, walk),
            _ => false,
        }
    }
}

/// The value of a constant or known parameter, in its type's text form.
///
/// # Safety
/// `e` satisfied [`is_value`] (or is anything else, giving `None`).
unsafe fn value_text(e: *mut pg_sys::Expr, walk: &Walk) -> Option<String> {
    // SAFETY: type output functions on datums of their own type.
    unsafe {
        let (value, isnull, typ) = match (*e).type_ {
            pg_sys::NodeTag::T_Const => {
                let c = e.cast::<pg_sys::Const>();
                ((*c).constvalue, (*c).constisnull, (*c).consttype)
            }
            pg_sys::NodeTag::T_Param => {
                let p = e.cast::<pg_sys::Param>();
                let params = walk.params;
                let id = (*p).paramid;
                if params.is_null() || (*params).paramFetch.is_some() || id < 1 || id > (*params).numParams {
                    return None;
                }
                let x = (*params).params.as_ptr().add(id as usize - 1);
                ((*x).value, (*x).isnull, (*x).ptype)
            }
            pg_sys::NodeTag::T_RelabelType => return value_text((*e.cast::<pg_sys::RelabelType>()).arg, walk),
            _ => return None,
        };
        if isnull {
            return Some("NULL".into());
        }
        let (mut output, mut varlena) = (pg_sys::Oid::INVALID, false);
        pg_sys::getTypeOutputInfo(typ, &mut output, &mut varlena);
        Some(CStr::from_ptr(pg_sys::OidOutputFunctionCall(output, value)).to_string_lossy().into_owned())
    }
}

/// Whether every Var in `node` belongs to `scanrelid` (and there is at least one).
///
/// # Safety
/// `node` is a valid expression tree.
unsafe fn only_vars_of(node: *mut pg_sys::Node, scanrelid: i32) -> bool {
    struct Check {
        scanrelid: i32,
        vars: usize,
        foreign: bool,
    }
    #[pg_guard]
    unsafe extern "C-unwind" fn check(node: *mut pg_sys::Node, ctx: *mut std::ffi::c_void) -> bool {
        // SAFETY: called by expression_tree_walker with our context.
        unsafe {
            if node.is_null() {
                return false;
            }
            let c = &mut *ctx.cast::<Check>();
            if (*node).type_ == pg_sys::NodeTag::T_Var {
                let var = node.cast::<pg_sys::Var>();
                if (*var).varno == c.scanrelid && (*var).varlevelsup == 0 {
                    c.vars += 1;
                } else {
                    c.foreign = true;
                }
                return false;
            }
            pg_sys::expression_tree_walker(node, Some(check), ctx)
        }
    }
    let mut c = Check { scanrelid, vars: 0, foreign: false };
    // SAFETY: walking a valid expression with our own callback.
    unsafe { check(node, (&mut c as *mut Check).cast()) };
    c.vars > 0 && !c.foreign
}

/// An expression of exactly one table's columns (range-table entry `varno`) as SQL text, or
/// `None` if it involves anything else.
///
/// # Safety
/// `e` is a valid expression of the statement being planned or executed.
pub unsafe fn deparse_for_relation(e: *mut pg_sys::Expr, relid: u32, varno: i32) -> Option<String> {
    // SAFETY: see the function contract.
    unsafe { only_vars_of(e.cast(), varno).then(|| deparse(e, relid, varno)) }
}

/// An expression of one table's columns as SQL text.
///
/// # Safety
/// `e`'s Vars all carry `scanrelid`.
unsafe fn deparse(e: *mut pg_sys::Expr, relid: u32, scanrelid: i32) -> String {
    // SAFETY: deparsing a copy whose Vars we renumber to the one-table context.
    unsafe {
        let copy = pg_sys::copyObjectImpl(e.cast()).cast::<pg_sys::Node>();
        if scanrelid != 1 {
            crate::advisor::hypo::change_var_nodes(copy, scanrelid, 1);
        }
        let oid = pg_sys::Oid::from(relid);
        let context = pg_sys::deparse_context_for(pg_sys::get_rel_name(oid), oid);
        CStr::from_ptr(pg_sys::deparse_expression(copy, context, false, false)).to_string_lossy().into_owned()
    }
}

/// What an operator means for indexing.
#[derive(Clone, Copy, Debug)]
pub struct OperatorInfo {
    pub kind: Kind,
    /// The first btree operator family that knows the operator (0 if none), and its strategy
    /// there.
    pub opfamily: u32,
    pub strategy: i16,
}

/// Operators seen by this backend: the catalog lookups behind an answer cost far more than
/// the rest of collecting a predicate, and a workload uses few operators.
static OPERATORS: BackendCell<Option<FxHashMap<u32, OperatorInfo>>> = BackendCell::new(None);

/// The kind of predicate an operator makes, from its btree meaning or, failing that, its name.
pub fn operator_info(opno: pg_sys::Oid) -> OperatorInfo {
    let cached = OPERATORS.with(|m| m.get_or_insert_with(FxHashMap::default).get(&opno.to_u32()).copied()).flatten();
    if let Some(info) = cached {
        return info;
    }
    let info = lookup_operator(opno);
    OPERATORS.with(|m| m.get_or_insert_with(FxHashMap::default).insert(opno.to_u32(), info));
    info
}

fn lookup_operator(opno: pg_sys::Oid) -> OperatorInfo {
    let (opfamily, strategy) = btree_strategy(opno);
    let kind = match strategy {
        3 => Kind::Equality,
        1 | 2 | 4 | 5 => Kind::Range,
        _ => {
            // SAFETY: a catalog lookup returning a palloc'd name.
            let name = unsafe {
                let n = pg_sys::get_opname(opno);
                if n.is_null() { Vec::new() } else { CStr::from_ptr(n).to_bytes().to_vec() }
            };
            match name.as_slice() {
                b"~~" | b"~~*" | b"~" | b"~*" => Kind::Pattern,
                b"@>" | b"<@" | b"&&" | b"?" | b"?|" | b"?&" | b"@@" => Kind::Containment,
                _ => Kind::Other,
            }
        }
    };
    OperatorInfo { kind, opfamily, strategy }
}

/// The first btree opfamily that knows `opno`, and the strategy it has there (0 if none).
fn btree_strategy(opno: pg_sys::Oid) -> (u32, i16) {
    // SAFETY: a catalog lookup returning a palloc'd list.
    unsafe {
        let list = PgList::<pg_sys::OpBtreeInterpretation>::from_pg(pg_sys::get_op_btree_interpretation(opno));
        list.get_ptr(0).map_or((0, 0), |i| ((*i).opfamily_id.to_u32(), (*i).strategy as i16))
    }
}
