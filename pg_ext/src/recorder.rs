//! What happens to one measured statement: the glue between the hooks and the shared table.
//!
//! The common case — a statement that already has an entry — takes no LWLock at all: it finds
//! the entry and updates it under the entry's spinlock (see `stats::table`). A new statement
//! takes the table's lock exclusively to insert (evicting when full). To give a new entry its normalized text
//! (constants replaced by `$n`), the parse-analysis hook prepares that text while the parse tree
//! still knows where the constants are; this backend remembers which statements already have an
//! entry, so that repeated executions skip normalization entirely — pg_stat_statements instead
//! looks its table up under the lock at every parse. The memory is dropped whenever entries
//! disappear anywhere (the shared generation counter moves).

use crate::backend::BackendCell;
use crate::shmem;
use crate::stats::counters::{self, Phase, Progress, Sample};
use crate::stats::examples::{self, Example, ExampleParam};
use crate::stats::quals::Observed;
use crate::stats::sampler::Sampler;
use crate::stats::slow_ring::{SlowQuery, pack};
use crate::stats::table::EntryKey;
use crate::{gucs, querytext};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::Ordering;

/// The executed statement, for what the recorder needs only sometimes (text on a statement's
/// first execution, examples): the hooks implement it over the live query so that nothing is
/// copied on the common path.
pub trait Statement {
    /// The statement's text as executed, literals included (server encoding).
    fn text(&self) -> Vec<u8>;
    /// Values bound to its parameters (prepared statements), in their types' text form.
    fn params(&self) -> Vec<ExampleParam>;
    /// Whether it is worth keeping as an example for the index advisor (not a utility command).
    fn plannable(&self) -> bool;
}

/// Identity of one execution as the hooks see it.
#[derive(Clone, Copy, Debug)]
pub struct StatementKey {
    pub queryid: u64,
    pub userid: u32,
    pub dbid: u32,
    pub toplevel: bool,
    /// `TimestampTz` of the statement's start, used for first/last seen.
    pub at: i64,
}

/// Normalized texts waiting for their statement's first execution; bounded so that statements
/// parsed but never executed cannot grow it.
const MAX_PENDING_TEXTS: usize = 256;
/// Bound on the remembered statements; past it the memory starts over.
const MAX_KNOWN: usize = 16_384;

/// Slots of the direct-mapped cache in front of `known`: a hit there is a handful of
/// instructions, which matters because every statement with constants asks.
const FRONT_SLOTS: usize = 256;

struct BackendMemory {
    /// The shared generation `known` and `front` are valid for.
    generation: u64,
    /// [`memo_key`]s of statements that have a shared entry, as far as this backend knows.
    known: FxHashSet<u64>,
    /// The most recently confirmed keys, by `key % FRONT_SLOTS` (0 = empty).
    front: [u64; FRONT_SLOTS],
    pending: FxHashMap<u64, Vec<u8>>,
}

impl Default for BackendMemory {
    fn default() -> Self {
        Self { generation: 0, known: FxHashSet::default(), front: [0; FRONT_SLOTS], pending: FxHashMap::default() }
    }
}

impl BackendMemory {
    #[inline]
    fn knows(&mut self, key: u64) -> bool {
        let slot = &mut self.front[key as usize % FRONT_SLOTS];
        if *slot == key {
            return true;
        }
        if self.known.contains(&key) {
            *slot = key;
            return true;
        }
        false
    }

    fn forget_all(&mut self, generation: u64) {
        self.generation = generation;
        self.known.clear();
        self.front.fill(0);
    }
}

/// Created on first use (the hash containers cannot be built in a `const`).
static MEMORY: BackendCell<Option<BackendMemory>> = BackendCell::new(None);

/// Run `f` on this backend's memory; does nothing if it is in use further up the stack.
#[inline]
fn with_memory<R>(f: impl FnOnce(&mut BackendMemory) -> R) -> Option<R> {
    MEMORY.with(|m| f(m.get_or_insert_with(BackendMemory::default)))
}

/// (queryid, userid, toplevel) folded into one word. A collision only means that one of the two
/// statements gets its text from the executor (constants visible) instead of normalized.
#[inline]
fn memo_key(queryid: u64, userid: u32, toplevel: bool) -> u64 {
    queryid ^ (u64::from(userid) << 1 | u64::from(toplevel)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Whether this backend remembers, in its small front table, that the statement has an entry:
/// the common case at parse analysis, checked before anything that could fail or allocate.
#[inline]
pub fn known_at_parse(queryid: u64, userid: u32, toplevel: bool) -> bool {
    let Some(atomics) = shmem::atomics() else { return true };
    let generation = atomics.generation.load(Ordering::Acquire);
    let key = memo_key(queryid, userid, toplevel);
    MEMORY
        .with(|m| m.as_ref().is_some_and(|m| m.generation == generation && m.front[key as usize % FRONT_SLOTS] == key))
        .unwrap_or(false)
}

/// Parse analysis found constants in a statement: prepare its normalized text unless this
/// backend knows the statement already has an entry.
pub fn note_parsed(queryid: u64, userid: u32, toplevel: bool, normalized: impl FnOnce() -> Vec<u8>) {
    let Some(atomics) = shmem::atomics() else { return };
    let generation = atomics.generation.load(Ordering::Acquire);
    let wanted = with_memory(|m| {
        if m.generation != generation {
            m.forget_all(generation);
        }
        !m.knows(memo_key(queryid, userid, toplevel)) && !m.pending.contains_key(&queryid)
    });
    if wanted != Some(true) {
        return;
    }
    // Normalizing calls the server's scanner: outside of our state, which it must not reenter.
    let text = normalized();
    with_memory(|m| {
        if m.pending.len() >= MAX_PENDING_TEXTS {
            m.pending.clear();
        }
        m.pending.insert(queryid, text);
    });
}

/// Fold one planning or execution sample into the statement's entry, creating the entry (with
/// the normalized text if one was prepared, else the statement's own text) when it is new.
pub fn record(key: &StatementKey, sample: &Sample, statement: &impl Statement) {
    let entry_key = EntryKey::new(key.userid, key.dbid, key.queryid, key.toplevel);
    if let Some(progress) = shmem::update_existing(&entry_key, sample, key.at) {
        confirm(key);
        if sample.phase == Phase::Exec {
            note_example(key, progress, statement);
        }
    } else if shmem::is_ready() {
        insert(key, &entry_key, sample, || statement.text());
        // The first execution is the first example the advisor gets, and the slowest so far
        // (a later one replaces it only by being slower).
        store_example(key, 0, statement);
        store_example(key, examples::SLOWEST, statement);
    }
}

/// Keep an execution as an example when its statement's counters say it is one (see
/// `stats::examples`): the slowest so far, or one picked with probability about 2/calls (the
/// counters draw the gap to the next pick, so this costs a comparison). Both are rare
/// (logarithmic in the calls), so the statement path pays for a text copy only rarely; the
/// draws are pseudo-random, so that captures follow no pattern of the workload (a power-of-two
/// rule would never see every fifth customer).
#[inline]
fn note_example(key: &StatementKey, progress: Progress, statement: &impl Statement) {
    if progress.new_max && progress.calls >= SLOWEST_AFTER {
        store_example(key, examples::SLOWEST, statement);
        return;
    }
    if progress.capture && progress.calls > 1 {
        let variant = (counters::mix(progress.calls as u64 ^ key.queryid) % u64::from(examples::SAMPLED)) as u8;
        store_example(key, variant, statement);
    }
}

/// A new maximum counts as the statement's slow tail only after this many calls: the first
/// ones set new maxima all the time (cold caches, first plans), which says nothing about the
/// values. (The first execution is kept as the slowest until then.)
const SLOWEST_AFTER: i64 = 32;

/// The statement has an entry: stop preparing texts for it.
#[inline]
fn confirm(key: &StatementKey) {
    with_memory(|m| {
        // Steady state: nothing pending, nothing to do.
        if !m.pending.is_empty() && m.pending.remove(&key.queryid).is_some() {
            remember(m, key);
        }
    });
}

fn remember(m: &mut BackendMemory, key: &StatementKey) {
    if m.known.len() >= MAX_KNOWN {
        m.known.clear();
    }
    let k = memo_key(key.queryid, key.userid, key.toplevel);
    m.known.insert(k);
    m.front[k as usize % FRONT_SLOTS] = k;
}

#[cold]
fn insert(key: &StatementKey, entry_key: &EntryKey, sample: &Sample, text: impl FnOnce() -> Vec<u8>) {
    // Everything that calls into Postgres happens before taking the exclusive lock.
    let mut text = with_memory(|m| m.pending.remove(&key.queryid)).flatten().unwrap_or_else(text);
    text.truncate(querytext::clip(&text, shmem::max_text_bytes()));
    let encoding = querytext::database_encoding();
    let evicted = shmem::with_table_mut(|t| {
        let dealloc_before = t.header.dealloc;
        let pos = t.find_or_insert(entry_key, &text, encoding);
        t.update_at(pos, sample, key.at);
        t.header.dealloc != dealloc_before
    });
    if evicted == Some(true) {
        bump_generation();
    }
    with_memory(|m| remember(m, key));
}

/// PostgreSQL's encoding id of UTF-8: examples are kept as UTF-8 text.
const PG_UTF8: i32 = 6;

/// One sampled execution in this many refreshes its statement's example: examples need to be
/// current, not renewed at every sample.
const EXAMPLE_REFRESH: u64 = 8;

/// At a sampled execution: refresh the statement's example now and then.
pub fn refresh_example(key: &StatementKey, statement: &impl Statement) {
    let draw = SAMPLER.with(|s| s.state()).unwrap_or(1);
    if draw.is_multiple_of(EXAMPLE_REFRESH) {
        let variant = ((draw / EXAMPLE_REFRESH) % u64::from(examples::SAMPLED)) as u8;
        store_example(key, variant, statement);
    }
}

/// Keep this execution as one of the statement's examples for the index advisor.
pub fn store_example(key: &StatementKey, variant: u8, statement: &impl Statement) {
    if !statement.plannable() || querytext::database_encoding() != PG_UTF8 {
        return;
    }
    let Ok(text) = String::from_utf8(statement.text()) else { return };
    let example = Example {
        dbid: key.dbid,
        queryid: key.queryid,
        variant,
        constancy: Default::default(),
        userid: key.userid,
        text,
        params: statement.params(),
    };
    shmem::with_examples_mut(|ex, seq| ex.store(&example, seq));
}

/// Fold the predicates of a sampled execution into the predicate statistics.
pub fn record_quals(observed: &[Observed]) {
    if observed.is_empty() {
        return;
    }
    shmem::with_quals_mut(|t| {
        for o in observed {
            t.record(o);
        }
    });
}

static SAMPLER: BackendCell<Sampler> = BackendCell::new(Sampler::new());

/// Whether this execution's predicates are sampled (`voxperf.qual_sample_rate`).
#[inline]
pub fn sample_quals() -> bool {
    if !gucs::track_quals() {
        return false;
    }
    let rate = gucs::qual_sample_rate();
    if rate <= 0.0 {
        return false;
    }
    SAMPLER
        .with(|s| {
            if !s.is_seeded() {
                s.seed((querytext::backend_pid() as u64) << 32 ^ querytext::now() as u64);
            }
            s.pick(rate)
        })
        .unwrap_or(false)
}

/// Entries disappeared: every backend must forget what it knew about them.
pub fn bump_generation() {
    if let Some(a) = shmem::atomics() {
        a.generation.fetch_add(1, Ordering::AcqRel);
    }
}

pub fn count_dropped_sample() {
    if let Some(a) = shmem::atomics() {
        a.dropped_samples.fetch_add(1, Ordering::Relaxed);
    }
}

#[inline]
pub fn is_slow(duration_ms: f64) -> bool {
    gucs::slow_query_threshold_ms().is_some_and(|t| duration_ms >= t)
}

/// Keep a slow execution with its text and plans (text, JSON) in the slow-query ring.
#[cold]
pub fn record_slow(key: &StatementKey, sample: &Sample, statement: Vec<u8>, plans: (Option<Vec<u8>>, Option<Vec<u8>>)) {
    let q = SlowQuery {
        finished_at: querytext::now(),
        pid: querytext::backend_pid(),
        userid: key.userid,
        dbid: key.dbid,
        queryid: key.queryid,
        toplevel: key.toplevel,
        duration_ms: sample.duration_ms,
        rows: sample.rows,
        encoding: querytext::database_encoding(),
        query: &statement,
        plan_text: plans.0.as_deref(),
        plan_json: plans.1.as_deref(),
    };
    let packed = pack(&q, querytext::clip);
    shmem::with_ring_mut(|r| r.store(&packed));
}
