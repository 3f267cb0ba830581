//! Execution time and I/O of the statements a backend is running, accumulated over their
//! ExecutorRun and ExecutorFinish calls — what pg_stat_statements obtains by attaching a full
//! `Instrumentation` to every query, at a fraction of the cost (no allocation, no per-node
//! bookkeeping: at the start and the end of each call, one clock read and the server's
//! counters subtracted from or added to the statement's frame in place).
//!
//! Frames are keyed by the query's address and kept in a stack: statements nest (a function
//! runs queries inside a query) and portals interleave. A statement that fails never reaches
//! ExecutorEnd, so its frame would linger: frames are dropped when the subtransaction they were
//! opened in aborts, and all of them when the transaction ends.

/// More simultaneous statements than this in one backend means runaway recursion; those are
/// not timed rather than grow without bound.
pub const MAX_FRAMES: usize = 64;

/// A statement being timed: its counters so far, as words (see [`Frames::resume`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame<const W: usize> {
    pub id: usize,
    /// Sum over the statement's finished calls of (counters at the end − counters at the
    /// start), word by word; while a call runs, the start's words are already subtracted.
    pub words: [i64; W],
    /// Rows retrieved or affected, summed over ExecutorRun calls (the executor's own counter
    /// restarts at each call, so a portal fetched in batches would otherwise report only its
    /// last batch — the bug PostgreSQL 16 fixed in pg_stat_statements).
    pub rows: u64,
    /// Picked for predicate sampling (its plan nodes count rows).
    pub sampled: bool,
    /// I/O timing was on when the statement started: the words include the I/O times (which
    /// move only while it is on), and every call handles them.
    pub io_timing: bool,
    /// A call has started and not ended.
    running: bool,
    /// A call never ended (an ERROR left it, and the frame survived because the statement
    /// started outside the subtransaction that caught the ERROR): the words are meaningless.
    broken: bool,
}

/// The statements a backend is running, innermost last. `W` is the number of counter words
/// a snapshot holds (the clock, then the server's cumulative buffer and WAL counters).
#[derive(Debug, Default)]
pub struct Frames<const W: usize> {
    frames: Vec<Frame<W>>,
    marks: Vec<Mark>,
}

/// The caller's nesting levels (statement, planner) at a subtransaction's start.
pub type Levels = [i32; 2];

/// A subtransaction that started: its id, the number of frames then, the levels then.
#[derive(Clone, Copy, Debug)]
struct Mark {
    subid: u32,
    frames: usize,
    levels: Levels,
}

impl<const W: usize> Frames<W> {
    pub const fn new() -> Self {
        Self { frames: Vec::new(), marks: Vec::new() }
    }

    /// Start timing statement `id`. False when too many statements are running.
    pub fn begin(&mut self, id: usize, sampled: bool, io_timing: bool) -> bool {
        if self.frames.len() >= MAX_FRAMES {
            return false;
        }
        if self.frames.capacity() == 0 {
            self.frames.reserve_exact(MAX_FRAMES);
        }
        self.frames.push(Frame { id, words: [0; W], rows: 0, sampled, io_timing, running: false, broken: false });
        true
    }

    #[inline]
    fn position(&self, id: usize) -> Option<usize> {
        self.frames.iter().rposition(|f| f.id == id)
    }

    #[inline]
    pub fn is_timed(&self, id: usize) -> bool {
        self.position(id).is_some()
    }

    /// A call of statement `id` starts: `subtract_now` subtracts the counters as they are now
    /// from the frame's words (wrapping; it is told the frame's `io_timing`), and is called
    /// only when the statement is timed. Every
    /// word is a cumulative counter and only differences are kept, so subtracting at the start
    /// and adding at the end ([`Frames::pause`]) accumulates each call's difference in place,
    /// with no copy of the start anywhere; wrapping arithmetic keeps the result exact. Returns
    /// whether the statement is timed.
    #[inline]
    pub fn resume(&mut self, id: usize, subtract_now: impl FnOnce(&mut [i64; W], bool)) -> bool {
        let Some(i) = self.position(id) else { return false };
        let f = &mut self.frames[i];
        f.broken |= f.running;
        f.running = true;
        subtract_now(&mut f.words, f.io_timing);
        true
    }

    /// The call of statement `id` that [`Frames::resume`] started has returned, having
    /// processed `rows`: `add_now` adds the counters as they are now (wrapping).
    #[inline]
    pub fn pause(&mut self, id: usize, rows: u64, add_now: impl FnOnce(&mut [i64; W], bool)) {
        if let Some(i) = self.position(id) {
            let f = &mut self.frames[i];
            f.running = false;
            add_now(&mut f.words, f.io_timing);
            f.rows = f.rows.wrapping_add(rows);
        }
    }

    /// Statement `id` ends: its frame, when it was timed and every call of it ended.
    #[cfg(test)]
    pub fn end(&mut self, id: usize) -> Option<Frame<W>> {
        self.end_with(id, |f| *f)
    }

    /// Statement `id` ends: `f` of its frame (read where it lies), when it was timed and every
    /// call of it ended; the frame is dropped either way.
    #[inline]
    pub fn end_with<R>(&mut self, id: usize, f: impl FnOnce(&Frame<W>) -> R) -> Option<R> {
        let i = match self.frames.last() {
            Some(last) if last.id == id => self.frames.len() - 1,
            _ => self.position(id)?,
        };
        let frame = &self.frames[i];
        let result = (!frame.running && !frame.broken).then(|| f(frame));
        if i + 1 == self.frames.len() {
            self.frames.truncate(i);
        } else {
            self.frames.remove(i);
        }
        result
    }

    /// Subtransaction `subid` starts while the caller's nesting levels are `levels`.
    pub fn subxact_started(&mut self, subid: u32, levels: Levels) {
        self.marks.push(Mark { subid, frames: self.frames.len(), levels });
    }

    pub fn subxact_committed(&mut self, subid: u32) {
        self.marks.retain(|m| m.subid < subid);
    }

    /// Statements started inside the aborted subtransaction died with it. Returns the nesting
    /// levels at its start: the error that aborted it left every call started since without
    /// its return.
    pub fn subxact_aborted(&mut self, subid: u32) -> Option<Levels> {
        let pos = self.marks.iter().position(|m| m.subid >= subid)?;
        let mark = self.marks[pos];
        self.marks.truncate(pos);
        self.frames.truncate(mark.frames);
        Some(mark.levels)
    }

    /// The transaction ended. At an abort every statement died with it; at a commit every
    /// statement has ended (portals are closed or run to completion before the commit), except
    /// those whose frames lingered: a cursor that failed inside a rolled-back savepoint never
    /// reaches ExecutorEnd.
    pub fn xact_ended(&mut self) {
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

    /// Counters that read `now` at a call's start.
    fn at<const W: usize>(now: [i64; W]) -> impl FnOnce(&mut [i64; W], bool) {
        move |w, _| w.iter_mut().zip(now).for_each(|(w, n)| *w = w.wrapping_sub(n))
    }

    /// Counters that read `now` at a call's end.
    fn till<const W: usize>(now: [i64; W]) -> impl FnOnce(&mut [i64; W], bool) {
        move |w, _| w.iter_mut().zip(now).for_each(|(w, n)| *w = w.wrapping_add(n))
    }

    #[test]
    fn calls_accumulate_their_differences_only() {
        let mut f = Frames::<1>::default();
        assert!(f.begin(1, false, false));
        assert!(f.resume(1, at([100])));
        f.pause(1, 2, till([103]));
        // Time between calls (a portal waiting for its next fetch) is not counted.
        assert!(f.resume(1, at([1_000])));
        f.pause(1, 5, till([1_004]));
        let frame = f.end(1).unwrap();
        assert_eq!((frame.words, frame.rows), ([7], 7));
    }

    #[test]
    fn nested_statements_accumulate_separately() {
        let mut f = Frames::<1>::default();
        assert!(f.begin(1, false, false));
        assert!(f.resume(1, at([0])));
        assert!(f.begin(2, false, false)); // a query inside the first one
        assert!(f.resume(2, at([10])));
        f.pause(2, 0, till([15]));
        f.pause(1, 0, till([30]));
        assert_eq!(f.end(2).unwrap().words, [5]);
        assert_eq!(f.end(1).unwrap().words, [30], "the outer statement's time includes the inner one");
        assert!(f.is_empty());
        assert!(!f.is_timed(1));
        assert!(!f.resume(1, |_, _| unreachable!("an untimed statement reads no counters")));
    }

    #[test]
    fn counters_that_wrap_still_give_the_right_difference() {
        let mut f = Frames::<2>::default();
        f.begin(1, false, false);
        assert!(f.resume(1, at([i64::MAX - 1, -5])));
        f.pause(1, 0, till([i64::MAX.wrapping_add(3), 5]));
        assert_eq!(f.end(1).unwrap().words, [4, 10]);
    }

    #[test]
    fn a_call_that_never_ended_leaves_nothing_to_record() {
        let mut f = Frames::<1>::default();
        f.begin(1, false, false);
        assert!(f.resume(1, at([10]))); // an ERROR leaves this call: no pause
        assert!(f.resume(1, at([50])));
        f.pause(1, 0, till([60]));
        assert_eq!(f.end(1), None, "the words hold a start without its end");
        assert!(f.is_empty());
        f.begin(2, false, false);
        f.resume(2, at([0]));
        assert_eq!(f.end(2), None, "ended while its call runs");
        assert!(f.is_empty());
    }

    #[test]
    fn a_statement_ending_out_of_order_leaves_the_others() {
        let mut f = Frames::<1>::default();
        f.begin(1, false, false);
        f.begin(2, true, false);
        f.begin(3, false, false);
        let two = f.end(2).unwrap();
        assert!(two.sampled);
        assert_eq!(f.len(), 2);
        assert!(f.is_timed(1) && f.is_timed(3));
    }

    #[test]
    fn a_reused_address_finds_the_live_statement_not_a_dead_one() {
        let mut f = Frames::<1>::default();
        f.begin(7, false, false);
        f.resume(7, at([0]));
        f.pause(7, 0, till([100])); // this statement fails: no end()
        f.begin(7, false, false); // a new statement allocated at the same address
        f.resume(7, at([200]));
        f.pause(7, 0, till([201]));
        assert_eq!(f.end(7).unwrap().words, [1]);
    }

    #[test]
    fn aborts_drop_the_frames_of_failed_statements_only() {
        let mut f = Frames::<1>::default();
        f.begin(1, false, false); // outer statement, alive throughout
        f.subxact_started(2, [1, 0]);
        f.begin(10, false, false); // fails inside the subtransaction
        f.subxact_started(3, [3, 1]);
        assert_eq!(f.subxact_aborted(2), Some([1, 0]), "the levels at the outer subtransaction's start");
        assert!(f.is_timed(1));
        assert!(!f.is_timed(10));
        assert_eq!(f.subxact_aborted(3), None, "inner marks went with the outer subtransaction");
        f.subxact_started(4, [1, 0]);
        f.begin(11, false, false); // a portal opened in a subtransaction that commits stays
        f.subxact_committed(4);
        assert!(f.is_timed(11));
        assert_eq!(f.subxact_aborted(4), None);
        f.xact_ended();
        assert!(f.is_empty());
    }

    #[test]
    fn runaway_nesting_is_bounded() {
        let mut f = Frames::<1>::default();
        for i in 0..MAX_FRAMES {
            assert!(f.begin(i, false, false));
        }
        assert!(!f.begin(999, false, false));
        assert_eq!(f.len(), MAX_FRAMES);
    }
}
