//! Hypothetical indexes: index descriptions the planner sees while the advisor plans, and at no
//! other time. This is the one FFI file of the advisor (like HypoPG, without depending on it).
//!
//! Invariants:
//! - Indexes are visible only inside a [`Session`], which the advisor's SQL functions open for
//!   the duration of one call; dropping the session (also when an ERROR unwinds through it)
//!   forgets every index and re-enables statistics recording. Nothing is created in catalogs and
//!   no plan containing a hypothetical index is ever executed (EXPLAIN stops before opening
//!   indexes when `EXEC_FLAG_EXPLAIN_ONLY` is set — a provision core makes for index advisors).
//! - Outside a session the planner hook is not even installed: the session installs it and
//!   takes it out again, so ordinary planning does not pay for the advisor.
//! - Index OIDs are taken from the unused range just below `FirstNormalObjectId`, checked
//!   against `pg_class`, so they never collide with a real relation.

use crate::backend::BackendCell;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{CString, c_char};
use std::sync::atomic::{AtomicBool, Ordering};

/// One key or INCLUDE column of a hypothetical index.
#[derive(Clone, Debug)]
pub struct HypoColumn {
    /// Table column number, or 0 for an expression (taken in order from `HypoIndex::exprs`).
    pub attnum: i16,
    pub collation: pg_sys::Oid,
    pub opfamily: pg_sys::Oid,
    pub opcintype: pg_sys::Oid,
    pub descending: bool,
    pub nulls_first: bool,
    /// Average width in bytes, from the table's statistics (for the size estimate).
    pub width: i32,
}

/// A hypothetical index, resolved against the catalogs.
pub struct HypoIndex {
    pub oid: pg_sys::Oid,
    pub name: CString,
    pub relid: pg_sys::Oid,
    pub amoid: pg_sys::Oid,
    pub columns: Vec<HypoColumn>,
    pub nkeycolumns: usize,
    /// Expressions of the expression columns (varno 1), in the session's memory context.
    pub exprs: *mut pg_sys::List,
    /// Partial-index predicate in implicit-AND form (varno 1), or NIL.
    pub predicate: *mut pg_sys::List,
    /// Fraction of the table's rows the predicate keeps (1 for a full index), estimated by the
    /// planner when the index is defined: the planner hook cannot estimate it itself, because
    /// it runs before the table's entry in the planner's arrays exists.
    pub predicate_fraction: f64,
    pub unique: bool,
    /// Estimated size in pages, set the first time the planner sees the index.
    pub pages: Cell<Option<u32>>,
    pub tuples: Cell<Option<f64>>,
}

struct State {
    /// Indexes defined in the current session.
    pool: Vec<HypoIndex>,
    /// Which of them the planner sees right now.
    visible: Vec<bool>,
    next_oid: u32,
}

static STATE: BackendCell<Option<State>> = BackendCell::new(None);

/// Whether a session is open; read by the statistics hooks on every statement, so it is a
/// plain flag next to the (rarely used) state. (Atomic only to be a safe `static`; one thread.)
static ACTIVE: AtomicBool = AtomicBool::new(false);

static mut PREV_GET_RELATION_INFO: pg_sys::get_relation_info_hook_type = None;
static mut PREV_EXPLAIN_INDEX_NAME: pg_sys::explain_get_index_name_hook_type = None;

type HookFn = unsafe extern "C-unwind" fn(*mut pg_sys::PlannerInfo, pg_sys::Oid, bool, *mut pg_sys::RelOptInfo);
type NameFn = unsafe extern "C-unwind" fn(pg_sys::Oid) -> *const c_char;

/// Put our hooks in front of whatever is installed (at the start of a session).
fn install_hooks() {
    // SAFETY: backend-local globals, main thread; previous hooks are saved and chained.
    unsafe {
        PREV_GET_RELATION_INFO = pg_sys::get_relation_info_hook;
        pg_sys::get_relation_info_hook = Some(get_relation_info);
        PREV_EXPLAIN_INDEX_NAME = pg_sys::explain_get_index_name_hook;
        pg_sys::explain_get_index_name_hook = Some(explain_index_name);
    }
}

/// Take our hooks out again (at the end of a session). If another module chained itself in
/// front of ours meanwhile, ours stay where they are, inactive, and keep chaining.
fn remove_hooks() {
    // SAFETY: as in `install_hooks`; we compare function pointers only.
    unsafe {
        // Our own functions, installed by us: the same addresses we stored.
        if pg_sys::get_relation_info_hook.is_some_and(|h| std::ptr::fn_addr_eq(h, get_relation_info as HookFn)) {
            pg_sys::get_relation_info_hook = PREV_GET_RELATION_INFO;
        }
        if pg_sys::explain_get_index_name_hook.is_some_and(|h| std::ptr::fn_addr_eq(h, explain_index_name as NameFn)) {
            pg_sys::explain_get_index_name_hook = PREV_EXPLAIN_INDEX_NAME;
        }
    }
}

/// The partial predicate (null for a full index) of `oid` if it is one of the session's
/// hypothetical indexes.
pub fn hypothetical_predicate(oid: pg_sys::Oid) -> Option<*mut pg_sys::List> {
    STATE.with(|s| s.as_ref().and_then(|st| st.pool.iter().find(|i| i.oid == oid).map(|i| i.predicate))).flatten()
}

/// True while the advisor plans: the statistics hooks ignore that work.
#[inline]
pub fn session_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The advisor's planning scope (see the module invariants).
pub struct Session {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Session {
    pub fn open() -> Result<Self, &'static str> {
        if session_active() {
            return Err("the index advisor cannot be called from inside itself");
        }
        STATE.with(|s| *s = Some(State { pool: Vec::new(), visible: Vec::new(), next_oid: FIRST_FAKE_OID }));
        ACTIVE.store(true, Ordering::Relaxed);
        install_hooks();
        Ok(Session { _not_send: std::marker::PhantomData })
    }

    /// Add an index to the session (invisible until [`Session::show`]); returns its handle.
    pub fn add(&self, mut index: HypoIndex) -> usize {
        index.oid = next_fake_oid();
        STATE
            .with(|s| {
                let st = s.as_mut().expect("session state");
                st.pool.push(index);
                st.visible.push(false);
                st.pool.len() - 1
            })
            .expect("advisor state is not in use")
    }

    /// Make exactly the indexes `handles` visible to the planner.
    pub fn show(&self, handles: &[usize]) {
        STATE.with(|s| {
            let st = s.as_mut().expect("session state");
            st.visible.iter_mut().for_each(|v| *v = false);
            for &h in handles {
                st.visible[h] = true;
            }
        });
    }

    /// Estimated size of an index in bytes, once the planner has seen it (0 before).
    pub fn size_bytes(&self, handle: usize) -> u64 {
        STATE
            .with(|s| {
                s.as_ref()
                    .and_then(|st| st.pool[handle].pages.get())
                    .map_or(0, |p| u64::from(p) * pg_sys::BLCKSZ as u64)
            })
            .unwrap_or(0)
    }

    /// The share of the table's rows a (partial) index holds.
    pub fn predicate_fraction(&self, handle: usize) -> f64 {
        STATE.with(|s| s.as_ref().map_or(1.0, |st| st.pool[handle].predicate_fraction)).unwrap_or(1.0)
    }

    pub fn handle_of_oid(&self, oid: pg_sys::Oid) -> Option<usize> {
        STATE.with(|s| s.as_ref().and_then(|st| st.pool.iter().position(|i| i.oid == oid))).flatten()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        remove_hooks();
        STATE.with(|s| *s = None);
        ACTIVE.store(false, Ordering::Relaxed);
    }
}

/// OIDs below `FirstNormalObjectId` (16384) not used by initdb's objects; we count down.
const FIRST_FAKE_OID: u32 = pg_sys::FirstNormalObjectId - 1;

fn next_fake_oid() -> pg_sys::Oid {
    loop {
        let candidate = STATE
            .with(|s| {
                let st = s.as_mut().expect("session state");
                let oid = st.next_oid;
                st.next_oid -= 1;
                oid
            })
            .expect("advisor state is not in use");
        // SAFETY: a syscache existence probe.
        let taken = unsafe {
            pg_sys::SearchSysCacheExists(
                pg_sys::SysCacheIdentifier::RELOID as i32,
                pg_sys::Datum::from(candidate),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        };
        if !taken {
            return pg_sys::Oid::from(candidate);
        }
    }
}

unsafe extern "C-unwind" fn get_relation_info(
    root: *mut pg_sys::PlannerInfo,
    relation_oid: pg_sys::Oid,
    inhparent: bool,
    rel: *mut pg_sys::RelOptInfo,
) {
    // SAFETY: chaining to the previous hook with Postgres' own arguments; our injection is a
    // guarded function, so its errors are reported as ordinary ERRORs.
    unsafe {
        if let Some(prev) = PREV_GET_RELATION_INFO {
            prev(root, relation_oid, inhparent, rel);
        }
        if session_active() && !inhparent {
            inject(relation_oid, rel);
        }
    }
}

/// Prepend the visible hypothetical indexes of `relation_oid` to `rel->indexlist`.
#[pg_guard]
unsafe extern "C-unwind" fn inject(relation_oid: pg_sys::Oid, rel: *mut pg_sys::RelOptInfo) {
    STATE.with(|s| {
        let Some(st) = s.as_ref() else { return };
        for (index, _) in st.pool.iter().zip(&st.visible).filter(|(i, v)| **v && i.relid == relation_oid) {
            // SAFETY: the planner's RelOptInfo for this relation, in the planner's context.
            unsafe {
                let info = build_index_opt_info(rel, index);
                (*rel).indexlist = pg_sys::lcons(info.cast(), (*rel).indexlist);
            }
        }
    });
}

unsafe extern "C-unwind" fn explain_index_name(index_oid: pg_sys::Oid) -> *const c_char {
    // SAFETY: chaining; we only answer for our own OIDs, with a palloc'd copy of the name.
    unsafe {
        if session_active()
            && let Some(Some(name)) = STATE
                .with(|s| s.as_ref().and_then(|st| st.pool.iter().find(|i| i.oid == index_oid).map(|i| i.name.clone())))
        {
            return pg_sys::pstrdup(name.as_ptr());
        }
        match PREV_EXPLAIN_INDEX_NAME {
            Some(prev) => prev(index_oid),
            None => std::ptr::null(),
        }
    }
}

/// Average bytes an index tuple adds beyond its keys: the 8-byte `IndexTupleData` header
/// (MAXALIGNed with the data) and the 4-byte line pointer.
const INDEX_TUPLE_OVERHEAD: f64 = 8.0 + 4.0;
/// Bytes of a page available to tuples: 8 kB minus the page header (24) and btree special
/// space (16).
const USABLE_PAGE_BYTES: f64 = (pg_sys::BLCKSZ - 24 - 16) as f64;
/// Leaf pages of a freshly built btree are filled to 90 % (the default fillfactor).
const BTREE_FILL: f64 = 0.9;
/// GIN stores each key once and compresses its posting list of heap pointers; an index on a
/// jsonb or array column is typically around half the column's bytes. A rough figure: the
/// planner needs only the order of magnitude, and suggestions report it as an estimate.
const GIN_BYTES_PER_COLUMN_BYTE: f64 = 0.6;

/// Estimated pages of `index` holding `tuples` entries.
pub fn estimate_pages(index: &HypoIndex, tuples: f64) -> u32 {
    let width: f64 = index.columns.iter().map(|c| f64::from(c.width.max(1))).sum();
    let pages = if index.amoid == pg_sys::GIN_AM_OID {
        tuples * width * GIN_BYTES_PER_COLUMN_BYTE / USABLE_PAGE_BYTES
    } else {
        // MAXALIGN the tuple; leaves plus about 1 % internal pages; plus the metapage.
        let tuple = ((INDEX_TUPLE_OVERHEAD - 4.0 + width) / 8.0).ceil() * 8.0 + 4.0;
        tuples * tuple / (USABLE_PAGE_BYTES * BTREE_FILL) * 1.01
    };
    (pages.ceil() as u32).saturating_add(1)
}

/// Build the planner's description of `index` for `rel` (what plancat.c builds for a real one).
///
/// # Safety
/// Called from `get_relation_info_hook` with the planner's structures for the index's table.
unsafe fn build_index_opt_info(rel: *mut pg_sys::RelOptInfo, index: &HypoIndex) -> *mut pg_sys::IndexOptInfo {
    // SAFETY: see the function contract; everything is palloc'd in the planner's context.
    unsafe {
        let am = pg_sys::GetIndexAmRoutineByAmId(index.amoid, false);
        let ncols = index.columns.len();
        let nkey = index.nkeycolumns;
        let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexOptInfo>()).cast::<pg_sys::IndexOptInfo>();
        (*info).type_ = pg_sys::NodeTag::T_IndexOptInfo;
        (*info).indexoid = index.oid;
        (*info).reltablespace = (*rel).reltablespace;
        (*info).rel = rel;
        (*info).ncolumns = ncols as i32;
        (*info).nkeycolumns = nkey as i32;
        let alloc = |n: usize, size: usize| pg_sys::palloc0(n.max(1) * size);
        (*info).indexkeys = alloc(ncols, 4).cast();
        (*info).indexcollations = alloc(nkey, 4).cast();
        (*info).opfamily = alloc(nkey, 4).cast();
        (*info).opcintype = alloc(nkey, 4).cast();
        (*info).canreturn = alloc(ncols, 1).cast();
        // No operator class options, but the array must exist: GIN's cost estimate reads it.
        (*info).opclassoptions = alloc(nkey, std::mem::size_of::<*mut pg_sys::bytea>()).cast();
        let amcanorder = (*am).amcanorder;
        for (i, c) in index.columns.iter().enumerate() {
            *(*info).indexkeys.add(i) = i32::from(c.attnum);
            // Index-only scans need `canreturn`; btree returns its keys and INCLUDE columns.
            *(*info).canreturn.add(i) = (*am).amcanreturn.is_some();
            if i < nkey {
                *(*info).indexcollations.add(i) = c.collation;
                *(*info).opfamily.add(i) = c.opfamily;
                *(*info).opcintype.add(i) = c.opcintype;
            }
        }
        if amcanorder {
            (*info).sortopfamily = (*info).opfamily;
            (*info).reverse_sort = alloc(nkey, 1).cast();
            (*info).nulls_first = alloc(nkey, 1).cast();
            for (i, c) in index.columns.iter().take(nkey).enumerate() {
                *(*info).reverse_sort.add(i) = c.descending;
                *(*info).nulls_first.add(i) = c.nulls_first;
            }
        }
        (*info).relam = index.amoid;
        // Expressions and predicate are stored with varno 1, like the catalogs store them.
        let varno = (*rel).relid as i32;
        (*info).indexprs = copy_for_rel(index.exprs, varno);
        (*info).indpred = copy_for_rel(index.predicate, varno);
        (*info).indextlist = index_tlist(rel, index, (*info).indexprs);
        (*info).predOK = false; // set by check_index_predicates
        (*info).unique = index.unique;
        (*info).immediate = true;
        (*info).hypothetical = true;
        (*info).amcanorderbyop = (*am).amcanorderbyop;
        (*info).amoptionalkey = (*am).amoptionalkey;
        (*info).amsearcharray = (*am).amsearcharray;
        (*info).amsearchnulls = (*am).amsearchnulls;
        (*info).amhasgettuple = (*am).amgettuple.is_some();
        (*info).amhasgetbitmap = (*am).amgetbitmap.is_some();
        (*info).amcanparallel = (*am).amcanparallel;
        (*info).amcanmarkpos = (*am).ammarkpos.is_some();
        // PG15 declares IndexOptInfo.amcostestimate without a prototype; same function.
        (*info).amcostestimate = std::mem::transmute::<
            pg_sys::amcostestimate_function,
            Option<unsafe extern "C-unwind" fn()>,
        >((*am).amcostestimate);

        let tuples = (*rel).tuples.max(0.0) * index.predicate_fraction;
        let pages = estimate_pages(index, tuples);
        (*info).tuples = tuples;
        (*info).pages = pages;
        (*info).tree_height = -1; // unknown: the cost functions estimate it from pages
        index.tuples.set(Some(tuples));
        index.pages.set(Some(pages));
        info
    }
}

/// A copy of `list` (in the planner's context) with its Vars pointing at range-table entry
/// `varno` instead of 1.
///
/// # Safety
/// `list` is NIL or a valid expression list.
unsafe fn copy_for_rel(list: *mut pg_sys::List, varno: i32) -> *mut pg_sys::List {
    if list.is_null() {
        return list;
    }
    // SAFETY: copyObject of a valid node tree; ChangeVarNodes edits the copy in place.
    unsafe {
        let copy = pg_sys::copyObjectImpl(list.cast()).cast::<pg_sys::List>();
        if varno != 1 {
            change_var_nodes(copy.cast(), 1, varno);
        }
        copy
    }
}

/// The index's target list: one entry per column, a Var for table columns and the expression
/// otherwise (what plancat.c's `build_index_tlist` produces), so that index-only scans work.
///
/// # Safety
/// As for [`build_index_opt_info`]; `exprs` is the already re-numbered expression list.
unsafe fn index_tlist(rel: *mut pg_sys::RelOptInfo, index: &HypoIndex, exprs: *mut pg_sys::List) -> *mut pg_sys::List {
    // SAFETY: building planner nodes in the current (planner) context.
    unsafe {
        let mut tlist: *mut pg_sys::List = std::ptr::null_mut();
        let mut next_expr = 0;
        for (i, c) in index.columns.iter().enumerate() {
            let expr: *mut pg_sys::Expr = if c.attnum != 0 {
                let (mut typid, mut typmod, mut coll) = (pg_sys::Oid::INVALID, -1, pg_sys::Oid::INVALID);
                pg_sys::get_atttypetypmodcoll(index.relid, c.attnum, &mut typid, &mut typmod, &mut coll);
                pg_sys::makeVar((*rel).relid as i32, c.attnum, typid, typmod, coll, 0).cast()
            } else {
                let e = pg_sys::list_nth(exprs, next_expr).cast::<pg_sys::Expr>();
                next_expr += 1;
                e
            };
            let tle = pg_sys::makeTargetEntry(expr, (i + 1) as i16, std::ptr::null_mut(), false);
            tlist = pg_sys::lappend(tlist, tle.cast());
        }
        tlist
    }
}

/// Renumber the Vars of `node` from range-table entry `from` to `to`, in place.
///
/// # Safety
/// `node` is a valid expression tree the caller owns.
pub unsafe fn change_var_nodes(node: *mut pg_sys::Node, from: i32, to: i32) {
    // SAFETY: see the function contract; errors become Rust panics through the guard.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| raw::ChangeVarNodes(node, from, to, 0)) }
}

mod raw {
    use pgrx::pg_sys::Node;
    use std::ffi::c_int;
    // rewriteManip.h is not among pgrx's bindings; the function is exported by the server.
    unsafe extern "C-unwind" {
        pub fn ChangeVarNodes(node: *mut Node, old_varno: c_int, new_varno: c_int, sublevels_up: c_int);
    }
}
