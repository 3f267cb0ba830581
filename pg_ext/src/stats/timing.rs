//! Execution time and I/O of the statements a backend is running, accumulated over their
//! ExecutorRun and ExecutorFinish calls — what pg_stat_statements obtains by attaching a full
//! `Instrumentation` to every query, at a fraction of the cost (no allocation, no per-node
//! bookkeeping, one clock read and one counter snapshot per call).
//!
//! Frames are keyed by the query's address and kept in a stack: statements nest (a function
//! runs queries inside a query) and portals interleave. A statement that fails never reaches
//! ExecutorEnd, so its frame would linger: frames are dropped when the transaction or
//! subtransaction they were opened in aborts.

use super::counters::{BufferCounters, WalCounters, add_words};

/// More simultaneous statements than this in one backend means runaway recursion; those are
/// not timed rather than grow without bound.
pub const MAX_FRAMES: usize = 64;

/// Time and I/O of one running statement so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accumulated {
    pub time_ns: i64,
    /// Rows retrieved or affected, summed over ExecutorRun calls (the executor's own counter
    /// restarts at each call, so a portal fetched in batches would otherwise report only its
    /// last batch — the bug PostgreSQL 16 fixed in pg_stat_statements).
    pub rows: u64,
    pub buffers: BufferCounters,
    pub wal: WalCounters,
}

impl Accumulated {
    pub fn time_ms(&self) -> f64 {
        self.time_ns as f64 / 1e6
    }

    pub fn add(&mut self, d: &Accumulated) {
        self.time_ns += d.time_ns;
        self.rows += d.rows;
        add_words(&mut self.buffers, &d.buffers);
        add_words(&mut self.wal, &d.wal);
    }
}

/// A statement being timed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Frame {
    pub id: usize,
    pub acc: Accumulated,
    /// Picked for predicate sampling (its plan nodes count rows).
    pub sampled: bool,
}

#[derive(Debug, Default)]
pub struct Frames {
    frames: Vec<Frame>,
    /// (subtransaction id, number of frames when it started).
    marks: Vec<(u32, usize)>,
}

impl Frames {
    pub const fn new() -> Self {
        Self { frames: Vec::new(), marks: Vec::new() }
    }

    /// Start timing the statement `id`; false when there is no room.
    pub fn begin(&mut self, id: usize, sampled: bool) -> bool {
        if self.frames.len() >= MAX_FRAMES {
            return false;
        }
        if self.frames.capacity() == 0 {
            // Allocate once, so that the statement path never reallocates.
            self.frames.reserve_exact(MAX_FRAMES);
        }
        self.frames.push(Frame { id, acc: Accumulated::default(), sampled });
        true
    }

    /// The newest frame of `id`: a live statement's address is unique among live statements,
    /// and it is always newer than a dead frame that may share it.
    #[inline]
    fn position(&self, id: usize) -> Option<usize> {
        self.frames.iter().rposition(|f| f.id == id)
    }

    #[inline]
    pub fn is_timed(&self, id: usize) -> bool {
        self.position(id).is_some()
    }

    #[inline]
    pub fn add(&mut self, id: usize, d: &Accumulated) {
        if let Some(i) = self.position(id) {
            self.frames[i].acc.add(d);
        }
    }

    /// Stop timing `id` and return its frame.
    pub fn end(&mut self, id: usize) -> Option<Frame> {
        self.position(id).map(|i| self.frames.remove(i))
    }

    pub fn subxact_started(&mut self, subid: u32) {
        self.marks.push((subid, self.frames.len()));
    }

    pub fn subxact_committed(&mut self, subid: u32) {
        self.marks.retain(|m| m.0 < subid);
    }

    /// Statements started inside the aborted subtransaction died with it.
    pub fn subxact_aborted(&mut self, subid: u32) {
        if let Some(pos) = self.marks.iter().position(|m| m.0 >= subid) {
            let len = self.marks[pos].1;
            self.marks.truncate(pos);
            self.frames.truncate(len);
        }
    }

    /// Every statement of the transaction died with it.
    pub fn xact_aborted(&mut self) {
        self.frames.clear();
        self.marks.clear();
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: f64) -> Accumulated {
        Accumulated { time_ns: (t * 1e6) as i64, ..Default::default() }
    }

    #[test]
    fn nested_statements_accumulate_separately() {
        let mut f = Frames::default();
        assert!(f.begin(1, false));
        f.add(1, &ms(1.0));
        assert!(f.begin(2, false)); // a query inside the first one
        f.add(2, &ms(5.0));
        f.add(1, &ms(2.0));
        assert_eq!(f.end(2).unwrap().acc.time_ms(), 5.0);
        assert_eq!(f.end(1).unwrap().acc.time_ms(), 3.0);
        assert!(f.is_empty());
        assert!(!f.is_timed(1));
    }

    #[test]
    fn a_reused_address_finds_the_live_statement_not_a_dead_one() {
        let mut f = Frames::default();
        f.begin(7, false);
        f.add(7, &ms(100.0)); // this statement fails: no end()
        f.begin(7, false); // a new statement allocated at the same address
        f.add(7, &ms(1.0));
        assert_eq!(f.end(7).unwrap().acc.time_ms(), 1.0);
    }

    #[test]
    fn aborts_drop_the_frames_of_failed_statements_only() {
        let mut f = Frames::default();
        f.begin(1, false); // outer statement, alive throughout
        f.subxact_started(2);
        f.begin(10, false); // fails inside the subtransaction
        f.subxact_aborted(2);
        assert!(f.is_timed(1));
        assert!(!f.is_timed(10));
        f.subxact_started(3);
        f.begin(11, false); // a portal opened in a subtransaction that commits stays
        f.subxact_committed(3);
        assert!(f.is_timed(11));
        f.xact_aborted();
        assert!(f.is_empty());
    }

    #[test]
    fn runaway_nesting_is_bounded() {
        let mut f = Frames::default();
        for i in 0..MAX_FRAMES {
            assert!(f.begin(i, false));
        }
        assert!(!f.begin(999, false));
        assert_eq!(f.len(), MAX_FRAMES);
    }
}
