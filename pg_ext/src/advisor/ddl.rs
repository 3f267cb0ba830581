//! `CREATE INDEX` text → a hypothetical index, through the server's own parser and parse
//! analysis (`transformIndexStmt`), so that what the advisor evaluates is exactly what
//! `CREATE INDEX` would build: same column resolution, operator classes, collations,
//! expressions and predicate.

use super::hypo::{HypoColumn, HypoIndex};
use super::{AdvisorError, abbreviate};
use pgrx::PgList;
use pgrx::pg_sys;
use std::cell::Cell;
use std::ffi::{CStr, CString};

mod raw {
    use pgrx::pg_sys::{IndexStmt, Oid};
    unsafe extern "C-unwind" {
        // parse_utilcmd.h is not among pgrx's bindings; the function is exported by the server.
        pub fn transformIndexStmt(
            relid: Oid,
            stmt: *mut IndexStmt,
            query_string: *const std::ffi::c_char,
        ) -> *mut IndexStmt;
    }
}

/// `transformIndexStmt`, with its ERRORs turned into Rust panics like every pgrx binding.
///
/// # Safety
/// `stmt` is a raw `IndexStmt` on table `relid` parsed from `query_string`.
unsafe fn transform_index_stmt(
    relid: pg_sys::Oid,
    stmt: *mut pg_sys::IndexStmt,
    query_string: *const std::ffi::c_char,
) -> *mut pg_sys::IndexStmt {
    // SAFETY: see the function contract; the guard holds no Rust values with destructors.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| raw::transformIndexStmt(relid, stmt, query_string)) }
}

/// Parse one `CREATE INDEX` statement. Syntax errors, unknown relations and columns, missing
/// operator classes are raised by Postgres itself with their usual SQLSTATEs; a statement that
/// is not `CREATE INDEX` is an [`AdvisorError::NotCreateIndex`].
pub fn parse_create_index(ddl: &str) -> Result<HypoIndex, AdvisorError> {
    let c_ddl = CString::new(ddl).map_err(|_| AdvisorError::NulInText)?;
    // SAFETY: the server's parser and catalog lookups on a NUL-terminated string; the results
    // are allocated in the current memory context, which outlives this advisor call.
    unsafe {
        let raw = pg_sys::raw_parser(c_ddl.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(raw);
        if stmts.len() != 1 {
            return Err(AdvisorError::NotCreateIndex(abbreviate(ddl)));
        }
        let node = (*stmts.get_ptr(0).unwrap()).stmt;
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_IndexStmt {
            return Err(AdvisorError::NotCreateIndex(abbreviate(ddl)));
        }
        let stmt = node.cast::<pg_sys::IndexStmt>();
        let relid = pg_sys::RangeVarGetRelidExtended(
            (*stmt).relation,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            0,
            None,
            std::ptr::null_mut(),
        );
        let relkind = pg_sys::get_rel_relkind(relid) as u8;
        if relkind != pg_sys::RELKIND_RELATION && relkind != pg_sys::RELKIND_MATVIEW {
            return Err(AdvisorError::UnsupportedRelation(relation_name(relid)));
        }
        let stmt = transform_index_stmt(relid, stmt, c_ddl.as_ptr());
        let am_name = if (*stmt).accessMethod.is_null() { c"btree".as_ptr() } else { (*stmt).accessMethod };
        let amoid = pg_sys::get_am_oid(am_name, false);
        let am = pg_sys::GetIndexAmRoutineByAmId(amoid, false);

        let mut columns = Vec::new();
        let mut exprs: *mut pg_sys::List = std::ptr::null_mut();
        let key_elems = PgList::<pg_sys::IndexElem>::from_pg((*stmt).indexParams);
        let include_elems = PgList::<pg_sys::IndexElem>::from_pg((*stmt).indexIncludingParams);
        if key_elems.len() > 1 && !(*am).amcanmulticol {
            return Err(AdvisorError::Unsupported(format!(
                "access method \"{}\" does not support multicolumn indexes",
                CStr::from_ptr(am_name).to_string_lossy()
            )));
        }
        if !include_elems.is_empty() && !(*am).amcaninclude {
            return Err(AdvisorError::Unsupported(format!(
                "access method \"{}\" does not support included columns",
                CStr::from_ptr(am_name).to_string_lossy()
            )));
        }
        for (i, elem) in key_elems.iter_ptr().chain(include_elems.iter_ptr()).enumerate() {
            let is_key = i < key_elems.len();
            let (attnum, atttype, typmod, mut collation) = if !(*elem).name.is_null() {
                let attnum = pg_sys::get_attnum(relid, (*elem).name);
                if attnum == pg_sys::InvalidAttrNumber as i16 {
                    return Err(AdvisorError::UnknownColumn(
                        CStr::from_ptr((*elem).name).to_string_lossy().into_owned(),
                        relation_name(relid),
                    ));
                }
                let (mut typid, mut typmod, mut coll) = (pg_sys::Oid::INVALID, -1, pg_sys::Oid::INVALID);
                pg_sys::get_atttypetypmodcoll(relid, attnum, &mut typid, &mut typmod, &mut coll);
                (attnum, typid, typmod, coll)
            } else {
                let expr = pg_sys::eval_const_expressions(std::ptr::null_mut(), (*elem).expr);
                pg_sys::fix_opfuncids(expr);
                exprs = pg_sys::lappend(exprs, expr.cast());
                (0, pg_sys::exprType(expr), pg_sys::exprTypmod(expr), pg_sys::exprCollation(expr))
            };
            if !(*elem).collation.is_null() {
                collation = pg_sys::get_collation_oid((*elem).collation, false);
            }
            let mut column = HypoColumn {
                attnum,
                collation,
                opfamily: pg_sys::Oid::INVALID,
                opcintype: pg_sys::Oid::INVALID,
                descending: (*elem).ordering == pg_sys::SortByDir::SORTBY_DESC,
                nulls_first: false,
                width: column_width(relid, attnum, atttype, typmod),
            };
            column.nulls_first = match (*elem).nulls_ordering {
                pg_sys::SortByNulls::SORTBY_NULLS_FIRST => true,
                pg_sys::SortByNulls::SORTBY_NULLS_LAST => false,
                _ => column.descending, // NULLS FIRST is the default for DESC
            };
            if is_key {
                let opclass = pg_sys::ResolveOpClass((*elem).opclass, atttype, am_name, amoid);
                column.opfamily = pg_sys::get_opclass_family(opclass);
                column.opcintype = pg_sys::get_opclass_input_type(opclass);
            }
            columns.push(column);
        }

        let (predicate, predicate_fraction) = if (*stmt).whereClause.is_null() {
            (std::ptr::null_mut(), 1.0)
        } else {
            // As RelationGetIndexPredicate prepares a catalogued predicate.
            let mut pred = pg_sys::eval_const_expressions(std::ptr::null_mut(), (*stmt).whereClause);
            pred = pg_sys::canonicalize_qual(pred.cast(), false).cast();
            pg_sys::fix_opfuncids(pred);
            (pg_sys::make_ands_implicit(pred.cast()), predicate_fraction(relid, pred)?)
        };
        let name = if (*stmt).idxname.is_null() {
            CString::new(format!("<hypothetical index on {}>", relation_name(relid))).unwrap()
        } else {
            CStr::from_ptr((*stmt).idxname).to_owned()
        };
        Ok(HypoIndex {
            oid: pg_sys::Oid::INVALID,
            name,
            relid,
            amoid,
            nkeycolumns: key_elems.len(),
            columns,
            exprs,
            predicate,
            predicate_fraction,
            unique: (*stmt).unique,
            pages: Cell::new(None),
            tuples: Cell::new(None),
        })
    }
}

/// The planner's estimate of the fraction of `relid`'s rows that satisfy `predicate` (an
/// expression on the table with varno 1): the row estimates of `SELECT ... WHERE predicate`
/// against `SELECT ...`.
///
/// # Safety
/// `predicate` is a valid, analyzed expression over `relid`.
unsafe fn predicate_fraction(relid: pg_sys::Oid, predicate: *mut pg_sys::Node) -> Result<f64, AdvisorError> {
    // SAFETY: deparsing our own analyzed expression; planning ordinary SELECTs.
    let condition = unsafe {
        let rel = pg_sys::get_rel_name(relid);
        let context = pg_sys::deparse_context_for(rel, relid);
        CStr::from_ptr(pg_sys::deparse_expression(predicate, context, false, false)).to_string_lossy().into_owned()
    };
    let table = relation_name(relid);
    let rows = |sql: String| -> Result<f64, AdvisorError> {
        let planned = super::plan::plan(&sql, &[])?;
        // SAFETY: the plan we just made.
        Ok(planned.stmts.first().map_or(0.0, |&s| unsafe { (*(*s).planTree).plan_rows }))
    };
    let all = rows(format!("SELECT 1 FROM {table}"))?;
    let kept = rows(format!("SELECT 1 FROM {table} WHERE {condition}"))?;
    Ok(if all > 0.0 { (kept / all).clamp(0.0, 1.0) } else { 1.0 })
}

/// Average width of a column or expression: the table statistics' figure when ANALYZE has run,
/// else the type's typical width.
fn column_width(relid: pg_sys::Oid, attnum: i16, atttype: pg_sys::Oid, typmod: i32) -> i32 {
    // SAFETY: catalog and statistics lookups.
    unsafe {
        let from_stats = if attnum > 0 { pg_sys::get_attavgwidth(relid, attnum) } else { 0 };
        if from_stats > 0 { from_stats } else { pg_sys::get_typavgwidth(atttype, typmod) }
    }
}

/// `schema.table`, quoted as needed.
pub fn relation_name(relid: pg_sys::Oid) -> String {
    // SAFETY: catalog lookups returning palloc'd strings (or NULL for a missing relation).
    unsafe {
        let rel = pg_sys::get_rel_name(relid);
        if rel.is_null() {
            return format!("relation {}", relid.to_u32());
        }
        let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        CStr::from_ptr(pg_sys::quote_qualified_identifier(nsp, rel)).to_string_lossy().into_owned()
    }
}
