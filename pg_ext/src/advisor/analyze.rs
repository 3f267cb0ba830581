//! What a statement asks of each table, read from the planner's own structures while it plans
//! the statement: per base relation the restriction clauses after push-down
//! (`baserestrictinfo`), the columns it is equi-joined on (equivalence classes and join
//! clauses), the ORDER BY keys when they all come from that relation, whether a LIMIT applies,
//! and for an UPDATE the columns it sets. This is what an index can serve, as the planner sees
//! it — better than reading the SQL text (views, inlined functions, implied equalities and
//! push-down are already resolved).
//!
//! The capture hook (`set_rel_pathlist_hook`) is installed only for the duration of one
//! analysis.

use super::AdvisorError;
use super::model::{Atom, Column, SortKey, TableUse};
use super::plan::{self, ParamValue};
use crate::backend::BackendCell;
use crate::quals::collect::{deparse_for_relation, operator_info};
use crate::stats::quals::Kind;
use pgrx::PgList;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;

/// A statement as the planner saw it.
pub struct Analyzed {
    pub cost: f64,
    pub tables: Vec<TableUse>,
}

static CAPTURED: BackendCell<Vec<TableUse>> = BackendCell::new(Vec::new());
static mut PREV_SET_REL_PATHLIST: pg_sys::set_rel_pathlist_hook_type = None;

/// Takes the capture hook out again, also when planning raises an ERROR.
struct Capturing;

impl Capturing {
    fn start() -> Self {
        CAPTURED.with(Vec::clear);
        // SAFETY: backend-local hook pointer, main thread; restored by Drop.
        unsafe {
            PREV_SET_REL_PATHLIST = pg_sys::set_rel_pathlist_hook;
            pg_sys::set_rel_pathlist_hook = Some(capture);
        }
        Capturing
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        // SAFETY: as in `start`.
        unsafe { pg_sys::set_rel_pathlist_hook = PREV_SET_REL_PATHLIST };
    }
}

/// Plan `sql` (with `params`) and report its cost and what it asks of each table.
pub fn analyze(sql: &str, params: &[ParamValue]) -> Result<Analyzed, AdvisorError> {
    let capturing = Capturing::start();
    let planned = plan::plan(sql, params)?;
    drop(capturing);
    let mut tables = CAPTURED.with(std::mem::take).unwrap_or_default();
    for (relid, write) in planned.writes() {
        match tables.iter_mut().find(|t| t.relid == relid) {
            Some(t) => t.write = Some(write),
            None => tables.push(TableUse { relid, write: Some(write), ..TableUse::default() }),
        }
    }
    Ok(Analyzed { cost: planned.total_cost(), tables })
}

#[pg_guard]
unsafe extern "C-unwind" fn capture(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    rti: pg_sys::Index,
    rte: *mut pg_sys::RangeTblEntry,
) {
    // SAFETY: chaining, then reading the planner's structures for this base relation.
    unsafe {
        if let Some(prev) = PREV_SET_REL_PATHLIST {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev(root, rel, rti, rte));
        }
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION || (*rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL {
            return;
        }
        let use_ = table_use(root, rel, (*rte).relid);
        CAPTURED.with(|c| match c.iter_mut().find(|t| t.relid == use_.relid) {
            // A table read twice (a self-join): its uses are merged.
            Some(t) => {
                t.atoms.extend(use_.atoms);
                t.join_keys.extend(use_.join_keys);
                if t.sort.is_empty() {
                    t.sort = use_.sort;
                    t.limited = use_.limited;
                }
            }
            None => c.push(use_),
        });
    }
}

/// # Safety
/// `root` and `rel` are the planner's, for base relation `relid`.
unsafe fn table_use(root: *mut pg_sys::PlannerInfo, rel: *mut pg_sys::RelOptInfo, relid: pg_sys::Oid) -> TableUse {
    // SAFETY: see the function contract.
    unsafe {
        let varno = (*rel).relid as i32;
        let mut use_ = TableUse { relid: relid.to_u32(), ..TableUse::default() };
        for ri in PgList::<pg_sys::RestrictInfo>::from_pg((*rel).baserestrictinfo).iter_ptr() {
            if let Some(atom) = atom((*ri).clause, relid, varno) {
                use_.atoms.push(atom);
            }
        }
        use_.join_keys = join_keys(root, rel, relid, varno);
        let (sort, complete) = sort_keys(root, relid, varno);
        if complete {
            use_.sort = sort;
            use_.limited = (*root).limit_tuples > 0.0 || !(*(*root).parse).limitCount.is_null();
        }
        use_
    }
}

/// The table column or single-table expression `e` stands for, if it is one.
///
/// # Safety
/// `e` is an expression of the statement being planned.
unsafe fn column_of(e: *mut pg_sys::Expr, relid: pg_sys::Oid, varno: i32) -> Option<Column> {
    // SAFETY: reading node tags and catalog names.
    unsafe {
        let mut e = e;
        while (*e).type_ == pg_sys::NodeTag::T_RelabelType {
            e = (*e.cast::<pg_sys::RelabelType>()).arg;
        }
        if (*e).type_ == pg_sys::NodeTag::T_Var {
            let var = e.cast::<pg_sys::Var>();
            if (*var).varno != varno || (*var).varattno <= 0 || (*var).varlevelsup != 0 {
                return None;
            }
            let name = pg_sys::get_attname(relid, (*var).varattno, true);
            if name.is_null() {
                return None;
            }
            let quoted = CStr::from_ptr(pg_sys::quote_identifier(name)).to_string_lossy().into_owned();
            return Some(Column::Attr { attnum: (*var).varattno, name: quoted });
        }
        // Index expressions must be immutable functions of the table's own columns.
        if pg_sys::contain_mutable_functions(e.cast()) {
            return None;
        }
        deparse_for_relation(e, relid.to_u32(), varno).map(|sql| Column::Expr { sql })
    }
}

/// A value known at planning time, as an SQL literal.
///
/// # Safety
/// `e` is an expression of the statement being planned.
unsafe fn literal(e: *mut pg_sys::Expr) -> Option<(String, String)> {
    // SAFETY: type output functions on constants of their own type.
    unsafe {
        let mut e = e;
        while (*e).type_ == pg_sys::NodeTag::T_RelabelType {
            e = (*e.cast::<pg_sys::RelabelType>()).arg;
        }
        if (*e).type_ != pg_sys::NodeTag::T_Const {
            return None;
        }
        let c = e.cast::<pg_sys::Const>();
        if (*c).constisnull {
            return None;
        }
        let (mut output, mut varlena) = (pg_sys::Oid::INVALID, false);
        pg_sys::getTypeOutputInfo((*c).consttype, &mut output, &mut varlena);
        let raw = pg_sys::OidOutputFunctionCall(output, (*c).constvalue);
        let value = CStr::from_ptr(raw).to_string_lossy().into_owned();
        let quoted = CStr::from_ptr(pg_sys::quote_literal_cstr(raw)).to_string_lossy().into_owned();
        Some((value, quoted))
    }
}

/// A restriction the planner applies to this table, in a shape an index can serve.
///
/// # Safety
/// `clause` is a restriction clause of the base relation `varno` (table `relid`).
unsafe fn atom(clause: *mut pg_sys::Expr, relid: pg_sys::Oid, varno: i32) -> Option<Atom> {
    // SAFETY: node tags tell the concrete types.
    unsafe {
        match (*clause).type_ {
            pg_sys::NodeTag::T_OpExpr => {
                let op = clause.cast::<pg_sys::OpExpr>();
                let args = PgList::<pg_sys::Expr>::from_pg((*op).args);
                if args.len() != 2 {
                    return None;
                }
                let (l, r) = (args.get_ptr(0)?, args.get_ptr(1)?);
                // Put the table side left. (The planner already commuted most `const op col`.)
                let (column, other) = match column_of(l, relid, varno) {
                    Some(c) => (c, r),
                    None => (column_of(r, relid, varno)?, l),
                };
                let info = operator_info((*op).opno);
                if info.kind == Kind::Other {
                    return None;
                }
                let name = CStr::from_ptr(pg_sys::get_opname((*op).opno)).to_string_lossy().into_owned();
                let lit = literal(other);
                let prefix_pattern = info.kind == Kind::Pattern
                    && lit.as_ref().is_some_and(|(v, _)| !v.starts_with('%') && !v.starts_with('_'));
                Some(Atom { column, kind: info.kind, operator: name, literal: lit.map(|(_, q)| q), prefix_pattern })
            }
            pg_sys::NodeTag::T_ScalarArrayOpExpr => {
                let op = clause.cast::<pg_sys::ScalarArrayOpExpr>();
                let args = PgList::<pg_sys::Expr>::from_pg((*op).args);
                if args.len() != 2 || !(*op).useOr || operator_info((*op).opno).kind != Kind::Equality {
                    return None;
                }
                let column = column_of(args.get_ptr(0)?, relid, varno)?;
                Some(Atom {
                    column,
                    kind: Kind::InList,
                    operator: "= ANY".into(),
                    literal: None,
                    prefix_pattern: false,
                })
            }
            pg_sys::NodeTag::T_NullTest => {
                let nt = clause.cast::<pg_sys::NullTest>();
                let column = column_of((*nt).arg, relid, varno)?;
                let kind =
                    if (*nt).nulltesttype == pg_sys::NullTestType::IS_NULL { Kind::IsNull } else { Kind::IsNotNull };
                Some(Atom { column, kind, operator: String::new(), literal: None, prefix_pattern: false })
            }
            _ => None,
        }
    }
}

/// Columns of this table equated to another table's: from the equivalence classes (where the
/// planner keeps `a.x = b.y`) and from the remaining join clauses.
///
/// # Safety
/// As for [`table_use`].
unsafe fn join_keys(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    relid: pg_sys::Oid,
    varno: i32,
) -> Vec<Column> {
    // SAFETY: the planner's lists for this query.
    unsafe {
        let mut keys = Vec::new();
        for ec in PgList::<pg_sys::EquivalenceClass>::from_pg((*root).eq_classes).iter_ptr() {
            if (*ec).ec_has_const {
                continue; // `x = constant` is a restriction, not a join
            }
            let members = PgList::<pg_sys::EquivalenceMember>::from_pg((*ec).ec_members);
            let mine: Vec<Column> = members
                .iter_ptr()
                .filter(|m| {
                    pg_sys::bms_is_member(varno, (**m).em_relids) && pg_sys::bms_num_members((**m).em_relids) == 1
                })
                .filter_map(|m| column_of((*m).em_expr, relid, varno))
                .collect();
            let others = members.iter_ptr().any(|m| !pg_sys::bms_is_member(varno, (*m).em_relids));
            if others {
                keys.extend(mine);
            }
        }
        for ri in PgList::<pg_sys::RestrictInfo>::from_pg((*rel).joininfo).iter_ptr() {
            let clause = (*ri).clause;
            if (*clause).type_ != pg_sys::NodeTag::T_OpExpr || (*ri).mergeopfamilies.is_null() {
                continue;
            }
            let args = PgList::<pg_sys::Expr>::from_pg((*clause.cast::<pg_sys::OpExpr>()).args);
            for side in args.iter_ptr() {
                if let Some(c) = column_of(side, relid, varno) {
                    keys.push(c);
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The query's ORDER BY keys, and whether all of them come from this table.
///
/// # Safety
/// As for [`table_use`].
unsafe fn sort_keys(root: *mut pg_sys::PlannerInfo, relid: pg_sys::Oid, varno: i32) -> (Vec<SortKey>, bool) {
    // SAFETY: the planner's pathkeys for this query.
    unsafe {
        let mut keys = Vec::new();
        let pathkeys = PgList::<pg_sys::PathKey>::from_pg((*root).query_pathkeys);
        if pathkeys.is_empty() {
            return (keys, false);
        }
        for pk in pathkeys.iter_ptr() {
            let members = PgList::<pg_sys::EquivalenceMember>::from_pg((*(*pk).pk_eclass).ec_members);
            let Some(column) = members
                .iter_ptr()
                .filter(|m| pg_sys::bms_is_member(varno, (**m).em_relids))
                .find_map(|m| column_of((*m).em_expr, relid, varno))
            else {
                return (Vec::new(), false);
            };
            keys.push(SortKey {
                column,
                descending: (*pk).pk_strategy == pg_sys::BTGreaterStrategyNumber as i32,
                nulls_first: (*pk).pk_nulls_first,
            });
        }
        (keys, true)
    }
}
