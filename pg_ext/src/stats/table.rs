//! The fixed-capacity statistics table that lives in shared memory: entries keyed by
//! (userid, dbid, queryid, toplevel), an open-addressing index over them, a free list and an
//! arena for the statements' texts.
//!
//! Concurrency protocol. Every statement updates its entry **without the table's LWLock**:
//! [`TableRef::update_if_present`] probes the index and, for a candidate slot, takes that
//! entry's spinlock and re-checks the entry's identity before touching its counters. Identities
//! (key and in-use flag) are atomics written only under the exclusive LWLock *and* the entry's
//! spinlock, so a statement can never update counters of an entry that was evicted and reused
//! under it; a probe racing with an insertion or removal may miss its entry, and then the caller
//! takes the exclusive lock and finds or inserts it there ([`TableMut::find_or_insert`]).
//! Reading entries' texts and iterating ([`TableRef::iter`], `text_of`) needs the shared LWLock,
//! because texts move only under the exclusive one. pg_stat_statements takes its LWLock for
//! every statement; avoiding it is most of why voxperf costs less per statement.
//!
//! When the table is full, [`TableMut::evict`] removes the entries that have cost the least time
//! (see [`Counters::usage`]), not the least called ones: a rare expensive statement is exactly
//! what a user of these statistics must not lose.

use super::counters::{Counters, Progress, Sample};
use super::spin::SpinLock;
use bytemuck::{Pod, Zeroable};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Fraction of the entries an eviction pass frees (pg_stat_statements frees 5 % too), so that
/// the exclusive lock is taken for eviction once per many new statements, not once per each.
pub const EVICT_PERCENT: usize = 5;
pub const EVICT_MIN: usize = 10;
/// Factor applied to every entry's usage at each eviction pass (pg_stat_statements' 0.99).
pub const USAGE_DECAY: f64 = 0.99;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct EntryKey {
    pub queryid: u64,
    pub userid: u32,
    pub dbid: u32,
    pub toplevel: u8,
    pub _pad: [u8; 7],
}

impl EntryKey {
    pub fn new(userid: u32, dbid: u32, queryid: u64, toplevel: bool) -> Self {
        Self { queryid, userid, dbid, toplevel: u8::from(toplevel), _pad: [0; 7] }
    }

    pub fn toplevel(&self) -> bool {
        self.toplevel != 0
    }

    /// The queryid is already a hash; mix in the rest with a multiply-xorshift finalizer.
    #[inline]
    fn hash(&self) -> u64 {
        let mut h = self.queryid
            ^ (u64::from(self.userid) << 32 | u64::from(self.dbid)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(self.toplevel);
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h
    }
}

const IN_USE: u32 = 1;
const TOPLEVEL: u32 = 2;

/// One statement's slot. All-zero bytes are a valid free slot.
#[repr(C)]
pub struct Entry {
    // Identity: changed only with the table's exclusive lock and `lock` both held; read
    // without either by the statement path, which confirms it under `lock`.
    queryid: AtomicU64,
    /// `userid << 32 | dbid`.
    owner: AtomicU64,
    flags: AtomicU32,
    // Text location and encoding: changed only under the exclusive lock, read under the shared.
    encoding: i32,
    text_offset: u64,
    text_len: u32,
    lock: SpinLock,
    counters: UnsafeCell<Counters>,
}

// SAFETY: `counters` is only accessed with `lock` held (see `update_if` and `snapshot`); the
// identity fields are atomics; the text fields change only under the table's exclusive lock,
// when no reader of them exists.
unsafe impl Sync for Entry {}

impl EntryKey {
    #[inline]
    fn owner(&self) -> u64 {
        u64::from(self.userid) << 32 | u64::from(self.dbid)
    }
}

impl Entry {
    /// Whether the entry currently holds `key` (a hint without `lock`, exact with it).
    #[inline]
    fn is(&self, key: &EntryKey) -> bool {
        let flags = self.flags.load(Ordering::Relaxed);
        flags & IN_USE != 0
            && self.queryid.load(Ordering::Relaxed) == key.queryid
            && self.owner.load(Ordering::Relaxed) == key.owner()
            && (flags & TOPLEVEL != 0) == key.toplevel()
    }

    fn in_use(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & IN_USE != 0
    }

    pub fn key(&self) -> EntryKey {
        let owner = self.owner.load(Ordering::Relaxed);
        EntryKey::new(
            (owner >> 32) as u32,
            owner as u32,
            self.queryid.load(Ordering::Relaxed),
            self.flags.load(Ordering::Relaxed) & TOPLEVEL != 0,
        )
    }

    pub fn encoding(&self) -> i32 {
        self.encoding
    }

    /// Fold `sample` in if the entry still is `key`; `None` if it was evicted or reused.
    #[inline(always)]
    pub fn update_if(&self, key: &EntryKey, sample: &Sample, now: i64) -> Option<Progress> {
        let _held = self.lock.lock();
        if !self.is(key) {
            return None;
        }
        // SAFETY: the spinlock gives us exclusive access to the counters.
        Some(unsafe { (*self.counters.get()).accumulate(sample, now) })
    }

    /// A consistent copy of the counters.
    pub fn snapshot(&self) -> Counters {
        let _held = self.lock.lock();
        // SAFETY: as in `update_if`.
        unsafe { *self.counters.get() }
    }

    /// Become `key` with `counters` (under the exclusive table lock).
    fn assign(&self, key: &EntryKey, counters: Counters) {
        let _held = self.lock.lock();
        // SAFETY: as in `update_if`.
        unsafe { *self.counters.get() = counters };
        self.queryid.store(key.queryid, Ordering::Relaxed);
        self.owner.store(key.owner(), Ordering::Relaxed);
        self.flags.store(IN_USE | if key.toplevel() { TOPLEVEL } else { 0 }, Ordering::Relaxed);
    }

    /// Stop being any statement (under the exclusive table lock).
    fn release(&self) {
        let _held = self.lock.lock();
        self.flags.store(0, Ordering::Relaxed);
    }

    /// Decay the eviction priority and return it (under the exclusive table lock).
    fn decay_usage(&self) -> f64 {
        let _held = self.lock.lock();
        // SAFETY: as in `update_if`.
        unsafe {
            let c = &mut *self.counters.get();
            c.usage *= USAGE_DECAY;
            c.usage
        }
    }
}

/// Fields that change only under the exclusive lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TableHeader {
    pub capacity: u32,
    pub index_slots: u32,
    pub count: u32,
    pub free_len: u32,
    pub text_capacity: u64,
    pub text_used: u64,
    pub text_garbage: u64,
    /// Number of eviction passes since the last full reset (pg_stat_statements_info.dealloc).
    pub dealloc: u64,
    pub evicted_entries: u64,
    /// `TimestampTz` of the last full reset (or of initialisation).
    pub stats_reset: i64,
}

/// Counters that backends update without holding the table lock.
#[repr(C)]
#[derive(Debug, Default)]
pub struct TableAtomics {
    /// Bumped whenever entries disappear (eviction, reset): backends use it to invalidate
    /// their local memory of which statements already have an entry.
    pub generation: AtomicU64,
    /// Samples that could not be recorded (an internal error in bookkeeping); never an error
    /// in the user's query.
    pub dropped_samples: AtomicU64,
}

/// Sizes of the table's parts for a given capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSizes {
    pub capacity: usize,
    pub index_slots: usize,
    pub text_bytes: usize,
}

/// Average text space reserved per entry (pg_stat_statements assumes 1 kB as well).
pub const TEXT_BYTES_PER_ENTRY: usize = 1024;
/// Longest text kept for one statement; longer ones are clipped (at a character boundary by
/// the caller). Statistics of the statement are recorded in full either way.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

impl TableSizes {
    pub fn for_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            // Load factor at most 1/2 keeps linear probes short.
            index_slots: (capacity * 2).next_power_of_two(),
            text_bytes: capacity * TEXT_BYTES_PER_ENTRY,
        }
    }

    pub fn max_text(&self) -> usize {
        MAX_TEXT_BYTES.min(self.text_bytes / 4)
    }
}

/// Read access: updates of existing entries with no lock; `find`, `iter` and `text_of` with
/// the shared lock held.
pub struct TableRef<'a> {
    pub header: &'a TableHeader,
    pub index: &'a [AtomicU32],
    pub entries: &'a [Entry],
    pub text: &'a [u8],
}

/// Write access (exclusive lock held).
pub struct TableMut<'a> {
    pub header: &'a mut TableHeader,
    pub index: &'a [AtomicU32],
    pub free: &'a mut [u32],
    pub entries: &'a mut [Entry],
    pub text: &'a mut [u8],
}

/// Linear probing from `key`'s home slot: `Ok(slot)` holding it, or `Err(slot)`, the empty slot
/// where it would go. Under the exclusive lock this is exact; without it, a concurrent removal
/// may hide the key (a miss, never a wrong hit: callers confirm under the entry's spinlock).
#[inline]
fn probe(index: &[AtomicU32], entries: &[Entry], key: &EntryKey) -> Result<usize, usize> {
    let mask = index.len() - 1;
    let mut slot = key.hash() as usize & mask;
    // Bounded, because without the lock the index can change under us.
    for _ in 0..index.len() {
        match index[slot].load(Ordering::Relaxed) {
            0 => return Err(slot),
            n if entries[n as usize - 1].is(key) => return Ok(slot),
            _ => slot = (slot + 1) & mask,
        }
    }
    Err(slot)
}

impl<'a> TableRef<'a> {
    /// The statement path: fold `sample` into `key`'s entry if it exists. Needs no lock.
    #[inline(always)]
    pub fn update_if_present(&self, key: &EntryKey, sample: &Sample, now: i64) -> Option<Progress> {
        match probe(self.index, self.entries, key) {
            Ok(slot) => match self.index[slot].load(Ordering::Relaxed) {
                0 => None,
                n => self.entries[n as usize - 1].update_if(key, sample, now),
            },
            Err(_) => None,
        }
    }

    /// The entry holding `key` (shared lock held).
    pub fn find(&self, key: &EntryKey) -> Option<&'a Entry> {
        probe(self.index, self.entries, key)
            .ok()
            .map(|slot| &self.entries[self.index[slot].load(Ordering::Relaxed) as usize - 1])
    }

    /// Every entry in use (shared lock held).
    pub fn iter(&self) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(|e| e.in_use())
    }

    pub fn text_of(&self, e: &Entry) -> &'a [u8] {
        let start = e.text_offset as usize;
        &self.text[start..start + e.text_len as usize]
    }

    pub fn len(&self) -> usize {
        self.header.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }
}

impl<'a> TableMut<'a> {
    pub fn as_ref(&self) -> TableRef<'_> {
        TableRef { header: self.header, index: self.index, entries: self.entries, text: self.text }
    }

    /// Set up an empty table in zeroed memory.
    pub fn init(&mut self, now: i64) {
        let capacity = self.entries.len();
        *self.header = TableHeader {
            capacity: capacity as u32,
            index_slots: self.index.len() as u32,
            text_capacity: self.text.len() as u64,
            stats_reset: now,
            ..TableHeader::default()
        };
        for slot in self.index.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        for e in self.entries.iter() {
            e.release();
        }
        // Hand out low slots first, which keeps a young table's entries together.
        for (i, f) in self.free.iter_mut().enumerate() {
            *f = (capacity - 1 - i) as u32;
        }
        self.header.free_len = capacity as u32;
    }

    pub fn is_full(&self) -> bool {
        self.header.free_len == 0
    }

    /// The entry for `key`, created (evicting if the table is full) with `text` if absent.
    /// Returns the entry's position.
    pub fn find_or_insert(&mut self, key: &EntryKey, text: &[u8], encoding: i32) -> usize {
        if let Ok(slot) = probe(self.index, self.entries, key) {
            return self.index[slot].load(Ordering::Relaxed) as usize - 1;
        }
        if self.is_full() {
            self.evict();
        }
        let (text_offset, text_len) = self.store_text(text);
        self.header.free_len -= 1;
        let pos = self.free[self.header.free_len as usize] as usize;
        let e = &mut self.entries[pos];
        e.encoding = encoding;
        e.text_offset = text_offset;
        e.text_len = text_len;
        e.assign(key, Counters::default());
        // Probe again: eviction may have moved things in the index.
        let slot = probe(self.index, self.entries, key).expect_err("key was absent");
        self.index[slot].store(pos as u32 + 1, Ordering::Release);
        self.header.count += 1;
        pos
    }

    /// Fold `sample` into the entry at `pos` (as returned by `find_or_insert`).
    pub fn update_at(&self, pos: usize, sample: &Sample, now: i64) {
        let e = &self.entries[pos];
        e.update_if(&e.key(), sample, now);
    }

    /// Load an entry with existing counters (used when reading the stats file at start-up).
    pub fn restore(&mut self, key: &EntryKey, text: &[u8], encoding: i32, counters: &Counters) {
        let pos = self.find_or_insert(key, text, encoding);
        self.entries[pos].assign(key, *counters);
    }

    fn store_text(&mut self, text: &[u8]) -> (u64, u32) {
        let mut need = text.len().min(self.text.len());
        if self.text_free() < need {
            self.compact_text();
        }
        if self.text_free() < need {
            self.evict();
            self.compact_text();
        }
        // Only possible with texts far beyond the per-entry average; keep what fits.
        need = need.min(self.text_free());
        let offset = self.header.text_used as usize;
        self.text[offset..offset + need].copy_from_slice(&text[..need]);
        self.header.text_used += need as u64;
        (offset as u64, need as u32)
    }

    fn text_free(&self) -> usize {
        (self.header.text_capacity - self.header.text_used) as usize
    }

    /// Move live texts down over the garbage left by removed entries.
    fn compact_text(&mut self) {
        let mut live: Vec<usize> = (0..self.entries.len()).filter(|&i| self.entries[i].in_use()).collect();
        live.sort_unstable_by_key(|&i| self.entries[i].text_offset);
        let mut dst = 0usize;
        for i in live {
            let (off, len) = (self.entries[i].text_offset as usize, self.entries[i].text_len as usize);
            self.text.copy_within(off..off + len, dst);
            self.entries[i].text_offset = dst as u64;
            dst += len;
        }
        self.header.text_used = dst as u64;
        self.header.text_garbage = 0;
    }

    /// Decay every entry's usage and remove the cheapest [`EVICT_PERCENT`] % (at least
    /// [`EVICT_MIN`]). Returns how many entries were removed.
    pub fn evict(&mut self) -> usize {
        let mut ranked: Vec<(f64, usize)> = Vec::with_capacity(self.header.count as usize);
        for (i, e) in self.entries.iter().enumerate() {
            if e.in_use() {
                ranked.push((e.decay_usage(), i));
            }
        }
        ranked.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let n = (ranked.len() * EVICT_PERCENT / 100).max(EVICT_MIN).min(ranked.len());
        for &(_, pos) in &ranked[..n] {
            self.remove_at(pos);
        }
        self.header.dealloc += 1;
        self.header.evicted_entries += n as u64;
        n
    }

    /// Remove every entry matching `pred`; returns how many.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&EntryKey) -> bool) -> usize {
        let doomed: Vec<usize> =
            (0..self.entries.len()).filter(|&i| self.entries[i].in_use() && pred(&self.entries[i].key())).collect();
        for &pos in &doomed {
            self.remove_at(pos);
        }
        doomed.len()
    }

    /// Remove everything and restart the table's own counters, as a full reset does.
    pub fn reset(&mut self, now: i64) {
        self.init(now);
    }

    fn remove_at(&mut self, pos: usize) {
        let key = self.entries[pos].key();
        let Ok(mut hole) = probe(self.index, self.entries, &key) else {
            debug_assert!(false, "entry in use but not indexed");
            return;
        };
        // Backward-shift deletion keeps every remaining key reachable from its home slot.
        let mask = self.index.len() - 1;
        self.index[hole].store(0, Ordering::Release);
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let n = self.index[j].load(Ordering::Relaxed);
            if n == 0 {
                break;
            }
            let home = self.entries[n as usize - 1].key().hash() as usize & mask;
            // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            let home_in_between = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !home_in_between {
                self.index[hole].store(n, Ordering::Release);
                self.index[j].store(0, Ordering::Release);
                hole = j;
            }
        }
        let e = &mut self.entries[pos];
        e.release();
        self.header.text_garbage += u64::from(e.text_len);
        self.free[self.header.free_len as usize] = pos as u32;
        self.header.free_len += 1;
        self.header.count -= 1;
    }
}

/// A table in ordinary memory, for tests and for building a table before copying it.
#[cfg(test)]
pub struct OwnedTable {
    pub header: TableHeader,
    pub index: Vec<AtomicU32>,
    pub free: Vec<u32>,
    pub entries: Vec<Entry>,
    pub text: Vec<u8>,
}

#[cfg(test)]
impl OwnedTable {
    pub fn new(sizes: TableSizes) -> Self {
        let entries = (0..sizes.capacity)
            .map(|_| Entry {
                queryid: AtomicU64::new(0),
                owner: AtomicU64::new(0),
                flags: AtomicU32::new(0),
                encoding: 0,
                text_offset: 0,
                text_len: 0,
                lock: SpinLock::new(),
                counters: UnsafeCell::new(Counters::default()),
            })
            .collect();
        let mut t = Self {
            header: TableHeader::default(),
            index: (0..sizes.index_slots).map(|_| AtomicU32::new(0)).collect(),
            free: vec![0; sizes.capacity],
            entries,
            text: vec![0; sizes.text_bytes],
        };
        t.view_mut().init(0);
        t
    }

    pub fn view_mut(&mut self) -> TableMut<'_> {
        TableMut {
            header: &mut self.header,
            index: &self.index,
            free: &mut self.free,
            entries: &mut self.entries,
            text: &mut self.text,
        }
    }

    pub fn view(&self) -> TableRef<'_> {
        TableRef { header: &self.header, index: &self.index, entries: &self.entries, text: &self.text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counters::{BufferCounters, Phase, WalCounters};

    fn sample(ms: f64) -> Sample {
        Sample {
            phase: Phase::Exec,
            duration_ms: ms,
            duration_ns: crate::stats::histogram::ms_to_ns(ms),
            rows: 1,
            buffers: BufferCounters::default(),
            wal: WalCounters::default(),
            jit: None,
        }
    }

    fn key(q: u64) -> EntryKey {
        EntryKey::new(10, 5, q, true)
    }

    fn record(t: &mut OwnedTable, q: u64, ms: f64) {
        let text = format!("SELECT {q}");
        if t.view().update_if_present(&key(q), &sample(ms), 1).is_none() {
            let mut m = t.view_mut();
            let pos = m.find_or_insert(&key(q), text.as_bytes(), 6);
            m.update_at(pos, &sample(ms), 1);
        }
    }

    #[test]
    fn find_after_insert_and_keys_differ_by_every_field() {
        let mut t = OwnedTable::new(TableSizes::for_capacity(100));
        record(&mut t, 42, 1.0);
        let v = t.view();
        let e = v.find(&key(42)).expect("inserted");
        assert_eq!(v.text_of(e), b"SELECT 42");
        assert!(v.find(&EntryKey::new(10, 5, 42, false)).is_none());
        assert!(v.find(&EntryKey::new(11, 5, 42, true)).is_none());
        assert!(v.find(&EntryKey::new(10, 6, 42, true)).is_none());
    }

    #[test]
    fn eviction_keeps_the_expensive_rare_query_and_drops_cheap_ones() {
        let cap = 200;
        let mut t = OwnedTable::new(TableSizes::for_capacity(cap));
        // One statement that ran once but took 5 s.
        record(&mut t, 1, 5_000.0);
        // Thousands of cheap statements, each called often, pushing the table past capacity.
        for q in 2..5_000u64 {
            for _ in 0..3 {
                record(&mut t, q, 0.05);
            }
        }
        let v = t.view();
        assert!(v.find(&key(1)).is_some(), "the expensive statement survives");
        assert!(v.len() <= cap);
        assert!(v.header.dealloc > 0 && v.header.evicted_entries > 4_000);
        // Every surviving entry is still reachable and counted.
        assert_eq!(v.iter().count(), v.len());
        for e in v.iter() {
            assert!(v.find(&e.key()).is_some());
        }
    }

    #[test]
    fn removal_keeps_colliding_keys_reachable() {
        // A tiny index forces long probe chains and wrap-around.
        let mut t = OwnedTable::new(TableSizes { capacity: 60, index_slots: 64, text_bytes: 60 * 64 });
        for q in 0..60 {
            record(&mut t, q * 7919, 1.0);
        }
        let removed = t.view_mut().remove_where(|k| k.queryid % 3 == 0);
        assert_eq!(removed, 20);
        let v = t.view();
        for q in 0..60u64 {
            assert_eq!(v.find(&key(q * 7919)).is_some(), (q * 7919) % 3 != 0, "query {q}");
        }
    }

    #[test]
    fn text_arena_compacts_and_texts_survive() {
        let sizes = TableSizes { capacity: 20, index_slots: 64, text_bytes: 20 * 16 };
        let mut t = OwnedTable::new(sizes);
        for round in 0..50u64 {
            for q in 0..20u64 {
                let id = round * 100 + q;
                let text = format!("select {id:08}");
                let mut m = t.view_mut();
                let pos = m.find_or_insert(&key(id), text.as_bytes(), 6);
                m.update_at(pos, &sample(0.01), 1);
            }
        }
        let v = t.view();
        for e in v.iter() {
            assert_eq!(v.text_of(e), format!("select {:08}", e.key().queryid).as_bytes());
        }
    }

    #[test]
    fn oversized_text_is_clipped_to_the_arena_not_an_error() {
        let mut t = OwnedTable::new(TableSizes { capacity: 10, index_slots: 32, text_bytes: 100 });
        let huge = vec![b'x'; 10_000];
        let pos = t.view_mut().find_or_insert(&key(1), &huge, 6);
        let v = t.view();
        assert_eq!(v.text_of(&v.entries[pos]).len(), 100);
    }

    #[test]
    fn reset_empties_and_restarts_counters() {
        let mut t = OwnedTable::new(TableSizes::for_capacity(100));
        for q in 0..50 {
            record(&mut t, q, 1.0);
        }
        t.view_mut().reset(99);
        let v = t.view();
        assert!(v.is_empty());
        assert_eq!(v.header.stats_reset, 99);
        assert!(v.find(&key(3)).is_none());
        record(&mut t, 3, 1.0);
        assert_eq!(t.view().len(), 1);
    }
}
