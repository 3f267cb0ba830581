//! voxperf's shared memory: one region, sized at server start from `voxperf.max_queries` and
//! `voxperf.slow_query_log_size`, holding the statistics table (see `stats::table`), its
//! lock-free counters and the slow-query ring, each part behind its own LWLock.
//!
//! This module owns the raw pointers. Everything else reaches the region through
//! [`with_table`], [`with_table_mut`], [`with_ring`], [`with_ring_mut`] and [`atomics`], which
//! hold the right lock for exactly the closure's duration. Without `shared_preload_libraries`
//! the region does not exist and they return `None`.

use crate::stats::counters::{Progress, Sample};
use crate::stats::examples::{ExampleSlot, Examples};
use crate::stats::quals::{QualEntry, QualTable};
use crate::stats::slow_ring::{RingHeader, RingMut, RingRef, SLOT_BYTES, SlowSlot};
use crate::stats::table::{Entry, EntryKey, TableAtomics, TableHeader, TableMut, TableRef, TableSizes};
use crate::{gucs, persistence};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ptr;

/// The region's fixed part; the arrays follow at the offsets in [`Layout`].
#[repr(C)]
struct Region {
    layout: Layout,
    table_lock: *mut pg_sys::LWLock,
    ring_lock: *mut pg_sys::LWLock,
    quals_lock: *mut pg_sys::LWLock,
    examples_lock: *mut pg_sys::LWLock,
    /// Capture sequence of examples (newer replaces older).
    example_seq: std::sync::atomic::AtomicU64,
    atomics: TableAtomics,
    table: TableHeader,
    ring: RingHeader,
}

/// Byte offsets of each part of the region from its start.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    sizes: TableSizes,
    ring_slots: usize,
    index: usize,
    free: usize,
    entries: usize,
    text: usize,
    slots: usize,
    payload: usize,
    quals_len: usize,
    quals: usize,
    examples_len: usize,
    examples: usize,
    total: usize,
}

const ALIGN: usize = 64;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

impl Layout {
    fn new(capacity: usize, ring_slots: usize, quals_len: usize, examples_len: usize) -> Self {
        let sizes = TableSizes::for_capacity(capacity);
        let index = align(std::mem::size_of::<Region>());
        let free = align(index + sizes.index_slots * 4);
        let entries = align(free + capacity * 4);
        let text = align(entries + capacity * std::mem::size_of::<Entry>());
        let slots = align(text + sizes.text_bytes);
        let payload = align(slots + ring_slots * std::mem::size_of::<SlowSlot>());
        let quals = align(payload + ring_slots * SLOT_BYTES);
        let examples = align(quals + quals_len * std::mem::size_of::<QualEntry>());
        let total = align(examples + examples_len * std::mem::size_of::<ExampleSlot>());
        Self {
            sizes,
            ring_slots,
            index,
            free,
            entries,
            text,
            slots,
            payload,
            quals_len,
            quals,
            examples_len,
            examples,
            total,
        }
    }

    fn from_gucs() -> Self {
        Self::new(gucs::max_queries(), gucs::slow_query_log_size(), gucs::max_quals(), gucs::max_examples())
    }
}

/// Set once in the postmaster's shmem startup; backends inherit it through fork.
static mut REGION: *mut Region = ptr::null_mut();

const SHMEM_NAME: &std::ffi::CStr = c"voxperf";
const TRANCHE_NAME: &std::ffi::CStr = c"voxperf";
/// One LWLock each for the statistics table, the slow-query ring, the predicates, the examples.
const LOCKS: i32 = 4;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Install the shared-memory hooks; called from `_PG_init` while preloading.
pub fn init() {
    // SAFETY: _PG_init runs single-threaded in the postmaster before any hook can fire; we
    // save the previous hooks and chain to them.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: chaining to the previously installed hook, as Postgres requires.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev());
        }
        pg_sys::RequestAddinShmemSpace(Layout::from_gucs().total);
        pg_sys::RequestNamedLWLockTranche(TRANCHE_NAME.as_ptr(), LOCKS);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: chaining first; then we attach to (or create) our region while holding
    // AddinShmemInitLock, exactly as contrib modules do.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev());
        }
        let layout = Layout::from_gucs();
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(SHMEM_NAME.as_ptr(), layout.total, &mut found).cast::<u8>();
        let region = base.cast::<Region>();
        if !found {
            ptr::write_bytes(base, 0, layout.total);
            let locks = pg_sys::GetNamedLWLockTranche(TRANCHE_NAME.as_ptr());
            (*region).layout = layout;
            (*region).table_lock = &raw mut (*locks).lock;
            (*region).ring_lock = &raw mut (*locks.add(1)).lock;
            (*region).quals_lock = &raw mut (*locks.add(2)).lock;
            (*region).examples_lock = &raw mut (*locks.add(3)).lock;
            REGION = region;
            let now = pg_sys::GetCurrentTimestamp();
            let mut table = table_mut(region);
            table.init(now);
            ring_mut(region).init();
            if gucs::save() {
                persistence::load(&mut table, &mut Examples { slots: example_slice(region) });
            }
        }
        REGION = region;
        pg_sys::LWLockRelease(init_lock);
        if !pg_sys::IsUnderPostmaster {
            // The postmaster (or a single-user backend) saves the statistics when it exits.
            pg_sys::on_shmem_exit(Some(save_at_exit), pg_sys::Datum::from(0));
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn save_at_exit(code: std::ffi::c_int, _arg: pg_sys::Datum) {
    // Like pg_stat_statements: never save after a crash (code != 0), the memory may be corrupt.
    if code == 0 && gucs::save() {
        persistence::save_now();
    }
}

/// # Safety
/// `region` points to an initialised region and the caller holds its table lock exclusively
/// (or is the postmaster initialising it).
unsafe fn table_mut<'a>(region: *mut Region) -> TableMut<'a> {
    // SAFETY: the layout was computed for this region; the caller guarantees exclusivity.
    unsafe {
        let base = region.cast::<u8>();
        let l = (*region).layout;
        let cap = l.sizes.capacity;
        TableMut {
            header: &mut (*region).table,
            index: std::slice::from_raw_parts_mut(base.add(l.index).cast(), l.sizes.index_slots),
            free: std::slice::from_raw_parts_mut(base.add(l.free).cast(), cap),
            entries: std::slice::from_raw_parts_mut(base.add(l.entries).cast(), cap),
            text: std::slice::from_raw_parts_mut(base.add(l.text), l.sizes.text_bytes),
        }
    }
}

/// # Safety
/// `region` is initialised; the caller holds the lock at least shared, or only uses what the
/// table's protocol allows without it.
unsafe fn table_ref<'a>(region: *const Region) -> TableRef<'a> {
    // SAFETY: as above; only shared references are created.
    unsafe {
        let base = region.cast::<u8>();
        let l = (*region).layout;
        TableRef {
            header: &(*region).table,
            index: std::slice::from_raw_parts(base.add(l.index).cast(), l.sizes.index_slots),
            entries: std::slice::from_raw_parts(base.add(l.entries).cast(), l.sizes.capacity),
            text: std::slice::from_raw_parts(base.add(l.text), l.sizes.text_bytes),
        }
    }
}

/// # Safety
/// `region` is initialised and the caller holds the ring lock exclusively.
unsafe fn ring_mut<'a>(region: *mut Region) -> RingMut<'a> {
    // SAFETY: as for `table_mut`.
    unsafe {
        let base = region.cast::<u8>();
        let l = (*region).layout;
        RingMut {
            header: &mut (*region).ring,
            slots: std::slice::from_raw_parts_mut(base.add(l.slots).cast(), l.ring_slots),
            payload: std::slice::from_raw_parts_mut(base.add(l.payload), l.ring_slots * SLOT_BYTES),
        }
    }
}

/// # Safety
/// `region` is initialised and the caller holds the ring lock at least shared.
unsafe fn ring_ref<'a>(region: *const Region) -> RingRef<'a> {
    // SAFETY: as for `table_ref`.
    unsafe {
        let base = region.cast::<u8>();
        let l = (*region).layout;
        RingRef {
            header: &(*region).ring,
            slots: std::slice::from_raw_parts(base.add(l.slots).cast(), l.ring_slots),
            payload: std::slice::from_raw_parts(base.add(l.payload), l.ring_slots * SLOT_BYTES),
        }
    }
}

mod raw {
    use pgrx::pg_sys::{LWLock, LWLockMode};
    // The same C functions pgrx wraps, declared without the per-call setjmp guard because they
    // sit on every statement's path. They raise an ERROR only when a backend holds more than
    // 200 LWLocks at once; voxperf takes one at a time and never while calling other code.
    unsafe extern "C-unwind" {
        pub fn LWLockAcquire(lock: *mut LWLock, mode: LWLockMode::Type) -> bool;
        pub fn LWLockRelease(lock: *mut LWLock);
    }
}

/// Releases the LWLock when dropped, also when the closure under it panics.
struct Held(*mut pg_sys::LWLock);

impl Held {
    fn acquire(lock: *mut pg_sys::LWLock, mode: pg_sys::LWLockMode::Type) -> Self {
        // SAFETY: `lock` comes from our named tranche, valid for the life of the server.
        unsafe { raw::LWLockAcquire(lock, mode) };
        Held(lock)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: we acquired this lock in `acquire` and release it exactly once.
        unsafe { raw::LWLockRelease(self.0) };
    }
}

fn region() -> Option<*mut Region> {
    // SAFETY: REGION is written once in the postmaster before any backend exists.
    let r = unsafe { REGION };
    (!r.is_null()).then_some(r)
}

pub fn is_ready() -> bool {
    region().is_some()
}

/// The statement path: fold `sample` into `key`'s entry if it exists, without any LWLock (see
/// the protocol in `stats::table`). `None` when there is no such entry (or it could not be
/// found while another backend was inserting or evicting): the caller then inserts under the
/// exclusive lock.
#[inline]
pub fn update_existing(key: &EntryKey, sample: &Sample, now: i64) -> Option<Progress> {
    // SAFETY: the index and entries are valid for the life of the server; the table's protocol
    // makes this lookup safe without the LWLock (it does not read texts).
    region().and_then(|r| unsafe { table_ref(r) }.update_if_present(key, sample, now))
}

/// Run `f` on the statistics table under the shared lock.
#[inline]
pub fn with_table<R>(f: impl FnOnce(&TableRef<'_>) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: the region is initialised; the lock pointer is set once at startup.
    let _held = Held::acquire(unsafe { (*r).table_lock }, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: shared lock held for the lifetime of the view.
    Some(f(&unsafe { table_ref(r) }))
}

/// Run `f` on the statistics table under the exclusive lock.
pub fn with_table_mut<R>(f: impl FnOnce(&mut TableMut<'_>) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: as in `with_table`.
    let _held = Held::acquire(unsafe { (*r).table_lock }, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: exclusive lock held for the lifetime of the view.
    Some(f(&mut unsafe { table_mut(r) }))
}

pub fn with_ring<R>(f: impl FnOnce(&RingRef<'_>) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: as in `with_table`.
    let _held = Held::acquire(unsafe { (*r).ring_lock }, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: shared ring lock held.
    Some(f(&unsafe { ring_ref(r) }))
}

pub fn with_ring_mut<R>(f: impl FnOnce(&mut RingMut<'_>) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: as in `with_table`.
    let _held = Held::acquire(unsafe { (*r).ring_lock }, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: exclusive ring lock held.
    Some(f(&mut unsafe { ring_mut(r) }))
}

/// # Safety
/// `region` is initialised and the caller holds the predicates' lock (exclusively to write).
unsafe fn qual_slice<'a>(region: *mut Region) -> &'a mut [QualEntry] {
    // SAFETY: the layout was computed for this region.
    unsafe {
        std::slice::from_raw_parts_mut(
            region.cast::<u8>().add((*region).layout.quals).cast(),
            (*region).layout.quals_len,
        )
    }
}

/// # Safety
/// As [`qual_slice`], for the examples and their lock.
unsafe fn example_slice<'a>(region: *mut Region) -> &'a mut [ExampleSlot] {
    // SAFETY: the layout was computed for this region.
    unsafe {
        std::slice::from_raw_parts_mut(
            region.cast::<u8>().add((*region).layout.examples).cast(),
            (*region).layout.examples_len,
        )
    }
}

pub fn with_quals<R>(f: impl FnOnce(&[QualEntry]) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: as in `with_table`.
    let _held = Held::acquire(unsafe { (*r).quals_lock }, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: shared lock held; only read.
    Some(f(unsafe { qual_slice(r) }))
}

pub fn with_quals_mut<R>(f: impl FnOnce(&mut QualTable<'_>) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: as in `with_table`.
    let _held = Held::acquire(unsafe { (*r).quals_lock }, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: exclusive lock held.
    Some(f(&mut QualTable { entries: unsafe { qual_slice(r) } }))
}

pub fn with_examples<R>(f: impl FnOnce(&[ExampleSlot]) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: as in `with_table`.
    let _held = Held::acquire(unsafe { (*r).examples_lock }, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: shared lock held; only read.
    Some(f(unsafe { example_slice(r) }))
}

/// Run `f` on the examples under the exclusive lock, with the next capture sequence number.
pub fn with_examples_mut<R>(f: impl FnOnce(&mut Examples<'_>, u64) -> R) -> Option<R> {
    let r = region()?;
    // SAFETY: the sequence counter is an atomic in the region.
    let seq = unsafe { (*r).example_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) } + 1;
    // SAFETY: as in `with_table`.
    let _held = Held::acquire(unsafe { (*r).examples_lock }, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: exclusive lock held.
    Some(f(&mut Examples { slots: unsafe { example_slice(r) } }, seq))
}

/// Counters updated without the table lock.
#[inline]
pub fn atomics() -> Option<&'static TableAtomics> {
    // SAFETY: the atomics live in the region for the life of the server and are only used
    // through shared references.
    region().map(|r| unsafe { &(*r).atomics })
}

/// Longest statement text an entry keeps (longer ones are clipped).
pub fn max_text_bytes() -> usize {
    // SAFETY: the layout is immutable after startup.
    region().map_or(0, |r| unsafe { (*r).layout.sizes.max_text() })
}

/// Capacity and shared-memory footprint, for `voxperf.query_stats_info`.
pub fn footprint() -> Option<(usize, usize, usize)> {
    // SAFETY: the layout is immutable after startup.
    region().map(|r| unsafe {
        let l = (*r).layout;
        (l.sizes.capacity, l.ring_slots, l.total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_parts_do_not_overlap_and_are_aligned() {
        for (cap, ring, quals, examples) in [(100, 0, 0, 0), (5000, 100, 2000, 1000), (1_000_000, 100_000, 1000, 10)] {
            let l = Layout::new(cap, ring, quals, examples);
            let parts = [l.index, l.free, l.entries, l.text, l.slots, l.payload, l.quals, l.examples, l.total];
            assert!(parts.windows(2).all(|w| w[0] <= w[1]), "{l:?}");
            assert!(parts.iter().all(|p| p % ALIGN == 0));
            assert!(l.free - l.index >= l.sizes.index_slots * 4);
            assert!(l.quals - l.payload >= ring * SLOT_BYTES);
            assert!(l.total - l.examples >= examples * std::mem::size_of::<ExampleSlot>());
        }
    }

    #[test]
    fn default_settings_need_about_eighteen_megabytes() {
        let total = Layout::new(5000, 100, 2000, 1000).total;
        assert!((15 << 20..21 << 20).contains(&total), "{total} bytes");
    }
}
