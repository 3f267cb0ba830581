//! Tag generations: what decides whether an entry is still current.
//!
//! Every tag has a generation (a counter in one Redis hash, shared by every daemon), and there is
//! one epoch. An entry carries the generation vector read *before* its loader ran. Two things
//! decide whether this process may serve it, because an invalidation must take effect here before
//! any network I/O while the other daemons only understand Redis' counters:
//!
//! - the **confirmed** generations, a mirror of values read from Redis (or returned by our own
//!   bumps), and the **epoch floor**: an entry is current only if each of its tag generations is
//!   at least the confirmed one and its epoch at least the floor;
//! - the **marks**: every batch of invalidations applied here takes the next number of a
//!   process-local sequence, and each tag it names (or the epoch) keeps its newest mark until
//!   Redis has confirmed it. While a tag is marked, an entry carrying it is current only if its
//!   vector was taken after the mark (`applied >= mark`). Entries read from Redis carry no local
//!   number (`applied == 0`), so none of them is served for a marked tag: their generation may be
//!   ahead of our mirror without being newer than the write we were just told of.
//!
//! A mark goes away when a bump sent to Redis *after* it was made returns: the bump sets the
//! counter to `max(current, confirmed) + 1`, so any vector holding that value or more was read
//! after the bump, hence after the invalidation, and comparing counters is enough again.
//! Invalidating a tag therefore makes every entry whose loader started earlier a miss at once —
//! including one being stored right now by a loader that raced the invalidation (the stale-set
//! race) — whether Redis answers in a millisecond, in a minute, or not at all.
//!
//! Invariants a reader must keep:
//! - confirmed values and the floor only grow, and only ever hold values Redis returned;
//! - a mark is cleared only by the reply to a Redis bump that was sent after it was made;
//! - a vector stored in Redis (L2) holds values read from Redis (`l2_safe`), never values this
//!   process made up while Redis was unreachable — other daemons compare against Redis' counters;
//! - the floor rises only by this process' own epoch bumps (after its LISTEN connection came
//!   back). Another daemon's bump does not raise it: that daemon missed notifications, we did not,
//!   so our L1 stays valid.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Tag generations read before a loader ran, sorted by tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenerationVector {
    pub epoch: u64,
    pub tags: Vec<(String, u64)>,
    /// How many invalidation batches this process had applied when the vector was taken. Local
    /// to the process: it is not written to Redis, and an entry read from there has 0.
    pub applied: u64,
}

/// A vector taken for a miss, and whether it may be written to Redis with the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub vector: GenerationVector,
    pub l2_safe: bool,
}

/// What waits to be confirmed by Redis, as taken by [`Generations::unconfirmed`] for one bump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unconfirmed {
    /// The epoch's mark and the floor to bump from.
    pub epoch: Option<(u64, u64)>,
    /// Each marked tag with its mark and its confirmed generation (to bump from).
    pub tags: Vec<(String, u64, u64)>,
}

impl Unconfirmed {
    pub fn is_empty(&self) -> bool {
        self.epoch.is_none() && self.tags.is_empty()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct TagState {
    /// Highest generation Redis is known to have held.
    confirmed: u64,
    /// What [`Generations::generation`] reports: rises with every invalidation applied here.
    reported: u64,
    /// Number of the newest invalidation batch here that named this tag (0: none); unlike a
    /// mark it is never cleared, so [`Generations::invalidated_after`] can answer for any past
    /// position.
    last_batch: u64,
}

#[derive(Debug, Default)]
struct State {
    floor: u64,
    reported_floor: u64,
    tags: HashMap<String, TagState>,
    /// Number of the newest invalidation batch applied here (0: none yet).
    applied: u64,
    /// Tags invalidated here that Redis has not confirmed, with their newest mark.
    marks: HashMap<String, u64>,
    epoch_mark: Option<u64>,
    /// Number of the newest epoch batch (0: none); never cleared.
    last_epoch_batch: u64,
    /// Redis may be behind this process (it was unreachable, or was seen behind the mirror: it
    /// lost data): push the mirror before trusting it again.
    needs_resync: bool,
    /// Counts resync requests, so that one made during a push is not cleared by its success.
    resync_requests: u64,
}

impl State {
    fn request_resync(&mut self) {
        self.needs_resync = true;
        self.resync_requests += 1;
    }
}

/// This process' view of the generations.
#[derive(Debug, Default)]
pub struct Generations {
    state: Mutex<State>,
}

/// Sorted, de-duplicated tag list.
pub fn normalize_tags(tags: &[String]) -> Vec<String> {
    let mut tags = tags.to_vec();
    tags.sort_unstable();
    tags.dedup();
    tags
}

impl Generations {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The vector made from the mirror alone (Redis unreachable); never `l2_safe`.
    pub fn local_snapshot(&self, tags: &[String]) -> Snapshot {
        let s = self.lock();
        Snapshot {
            vector: GenerationVector {
                epoch: s.floor,
                tags: tags.iter().map(|t| (t.clone(), s.tags.get(t).map_or(0, |g| g.confirmed))).collect(),
                applied: s.applied,
            },
            l2_safe: false,
        }
    }

    /// Folds values just read from Redis into the mirror and returns the snapshot to store.
    /// `redis_tags` must be in the order of `tags`.
    pub fn merge_snapshot(&self, tags: &[String], redis_epoch: u64, redis_tags: &[u64]) -> Snapshot {
        let mut s = self.lock();
        let mut l2_safe = redis_epoch >= s.floor;
        let mut out = Vec::with_capacity(tags.len());
        for (tag, &seen) in tags.iter().zip(redis_tags) {
            let g = s.tags.entry(tag.clone()).or_default();
            if seen < g.confirmed {
                l2_safe = false;
            }
            g.confirmed = g.confirmed.max(seen);
            g.reported = g.reported.max(g.confirmed);
            out.push((tag.clone(), g.confirmed));
        }
        if !l2_safe {
            s.request_resync();
        }
        let vector = GenerationVector { epoch: redis_epoch.max(s.floor), tags: out, applied: s.applied };
        Snapshot { vector, l2_safe }
    }

    /// Whether anything applied here still waits for Redis.
    pub fn has_unconfirmed(&self) -> bool {
        let s = self.lock();
        s.epoch_mark.is_some() || !s.marks.is_empty()
    }

    /// Whether an entry with this vector may be served by this process.
    pub fn is_current(&self, vector: &GenerationVector) -> bool {
        let s = self.lock();
        if vector.epoch < s.floor || s.epoch_mark.is_some_and(|mark| vector.applied < mark) {
            return false;
        }
        vector.tags.iter().all(|(tag, g)| {
            *g >= s.tags.get(tag).map_or(0, |t| t.confirmed)
                && s.marks.get(tag).is_none_or(|mark| vector.applied >= *mark)
        })
    }

    /// Invalidates `tags` here, at once: every entry whose vector was taken before is no longer
    /// current. Redis learns of it through [`Generations::unconfirmed`] and [`Generations::confirm`].
    pub fn mark<'a>(&self, tags: impl IntoIterator<Item = &'a str>) {
        let mut s = self.lock();
        s.applied += 1;
        let mark = s.applied;
        for tag in tags {
            s.marks.insert(tag.to_owned(), mark);
            let g = s.tags.entry(tag.to_owned()).or_default();
            g.reported = g.reported.max(g.confirmed) + 1;
            g.last_batch = mark;
        }
    }

    /// How many invalidation batches this process has applied (a position for
    /// [`Generations::invalidated_after`]).
    pub fn applied(&self) -> u64 {
        self.lock().applied
    }

    /// Whether a batch applied after position `applied` named one of `tags` or bumped the epoch.
    /// A loader that learns its tags only from its own result (a proxied response's `Cache-Tag`)
    /// takes the position before it runs and asks this afterwards: its vector, read after the
    /// load, is trustworthy only if nothing it depends on was invalidated here meanwhile.
    pub fn invalidated_after(&self, tags: &[String], applied: u64) -> bool {
        let s = self.lock();
        s.last_epoch_batch > applied || tags.iter().any(|t| s.tags.get(t).is_some_and(|g| g.last_batch > applied))
    }

    /// Makes everything cached so far a miss here, at once (the LISTEN connection came back).
    pub fn mark_epoch(&self) {
        let mut s = self.lock();
        s.applied += 1;
        s.epoch_mark = Some(s.applied);
        s.last_epoch_batch = s.applied;
        s.reported_floor = s.reported_floor.max(s.floor) + 1;
    }

    /// The marks Redis has not confirmed, for one bump.
    pub fn unconfirmed(&self) -> Unconfirmed {
        let s = self.lock();
        Unconfirmed {
            epoch: s.epoch_mark.map(|mark| (mark, s.floor)),
            tags: s
                .marks
                .iter()
                .map(|(tag, mark)| (tag.clone(), *mark, s.tags.get(tag).map_or(0, |g| g.confirmed)))
                .collect(),
        }
    }

    /// Adopts what Redis returned for the bump of `sent` (the new epoch if one was bumped, then
    /// each tag's new value, in order) and clears the marks it covered. A mark made after `sent`
    /// was taken stays: the bump may have reached Redis before that invalidation happened here.
    pub fn confirm(&self, sent: &Unconfirmed, epoch: Option<u64>, values: &[u64]) {
        let mut s = self.lock();
        if let (Some((mark, _)), Some(epoch)) = (sent.epoch, epoch) {
            s.floor = s.floor.max(epoch);
            s.reported_floor = s.reported_floor.max(s.floor);
            if s.epoch_mark == Some(mark) {
                s.epoch_mark = None;
            }
        }
        for ((tag, mark, _), &value) in sent.tags.iter().zip(values) {
            let g = s.tags.entry(tag.clone()).or_default();
            g.confirmed = g.confirmed.max(value);
            g.reported = g.reported.max(g.confirmed);
            if s.marks.get(tag) == Some(mark) {
                s.marks.remove(tag);
            }
        }
    }

    /// Asks for a resync (Redis was unreachable for a write, or was found without our hash).
    pub fn request_resync(&self) {
        self.lock().request_resync();
    }

    /// Whether Redis may be behind this process; cleared by [`Generations::resynced`].
    pub fn needs_resync(&self) -> bool {
        self.lock().needs_resync
    }

    /// Identifies the resync requests made so far, for [`Generations::resynced`].
    pub fn resync_token(&self) -> u64 {
        self.lock().resync_requests
    }

    /// Clears the resync requests made up to `token` (taken before a successful push and bump);
    /// one made since — a failure meanwhile, Redis found behind again — keeps it set.
    pub fn resynced(&self, token: u64) {
        let mut s = self.lock();
        if s.resync_requests == token {
            s.needs_resync = false;
        }
    }

    /// What this process reports as `tag`'s generation: at least the confirmed one, and one more
    /// for every invalidation of it applied here, at once (Redis' counter catches up later).
    pub fn generation(&self, tag: &str) -> u64 {
        self.lock().tags.get(tag).map_or(0, |g| g.reported.max(g.confirmed))
    }

    /// The epoch floor as reported: like [`Generations::generation`], it rises at once.
    pub fn floor(&self) -> u64 {
        let s = self.lock();
        s.reported_floor.max(s.floor)
    }

    /// The confirmed mirror and floor, to push to Redis.
    pub fn export(&self) -> (u64, Vec<(String, u64)>) {
        let s = self.lock();
        (s.floor, s.tags.iter().map(|(t, g)| (t.clone(), g.confirmed)).collect())
    }

    /// After a push: adopt Redis' values (each at least what was pushed).
    pub fn adopt(&self, redis: &[(String, u64)]) {
        let mut s = self.lock();
        for (tag, value) in redis {
            let g = s.tags.entry(tag.clone()).or_default();
            g.confirmed = g.confirmed.max(*value);
            g.reported = g.reported.max(g.confirmed);
        }
    }

    /// Number of tags the mirror knows (for stats).
    pub fn tag_count(&self) -> usize {
        self.lock().tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Marks `tags`, then confirms them as Redis would answer a bump sent right away.
    fn bump(g: &Generations, list: &[&str], redis: &[u64]) {
        g.mark(list.iter().copied());
        let sent = g.unconfirmed();
        let values: Vec<u64> =
            sent.tags.iter().map(|(t, _, _)| redis[list.iter().position(|l| l == t).unwrap()]).collect();
        g.confirm(&sent, None, &values);
    }

    #[test]
    fn invalidated_after_answers_for_a_past_position_even_once_redis_confirmed() {
        let g = Generations::default();
        bump(&g, &["a"], &[1]);
        let before = g.applied();
        assert!(!g.invalidated_after(&tags(&["a", "b"]), before));
        bump(&g, &["b"], &[7]);
        // Confirmed by Redis (the mark is gone), yet still known to have happened after `before`.
        assert!(!g.has_unconfirmed());
        assert!(g.invalidated_after(&tags(&["b"]), before));
        assert!(!g.invalidated_after(&tags(&["a", "c"]), before));
        let later = g.applied();
        g.mark_epoch();
        assert!(g.invalidated_after(&tags(&["c"]), later));
    }

    #[test]
    fn an_entry_loaded_before_an_invalidation_is_not_current() {
        let g = Generations::default();
        let t = tags(&["table:public.t"]);
        let snap = g.merge_snapshot(&t, 0, &[5]);
        assert!(snap.l2_safe);
        assert!(g.is_current(&snap.vector));
        // The NOTIFY for a commit arrives while the loader runs: it counts here at once...
        g.mark(["table:public.t"]);
        assert!(!g.is_current(&snap.vector), "loader's result predates the write");
        // ... and still after Redis confirmed it (the bump returned 6).
        let sent = g.unconfirmed();
        g.confirm(&sent, None, &[6]);
        assert!(!g.has_unconfirmed());
        assert!(!g.is_current(&snap.vector));
        let next = g.merge_snapshot(&t, 0, &[6]);
        assert!(g.is_current(&next.vector));
    }

    #[test]
    fn an_entry_newer_than_the_mirror_is_current() {
        // Another daemon processed a NOTIFY we have not seen yet and stored a fresher entry.
        let g = Generations::default();
        bump(&g, &["user"], &[3]);
        let fresher = GenerationVector { epoch: 0, tags: vec![("user".into(), 4)], applied: 0 };
        assert!(g.is_current(&fresher));
    }

    /// The reason for marks: our mirror may lag Redis (another daemon bumped after us), so an
    /// entry from Redis may carry a generation above our mirror and still predate the write we
    /// were just told of. Raising the mirror by one locally would let it through.
    #[test]
    fn while_a_tag_waits_for_redis_no_entry_read_from_redis_is_current() {
        let g = Generations::default();
        bump(&g, &["user"], &[1]); // our bump; then another daemon's makes Redis 2
        let from_redis = GenerationVector { epoch: 0, tags: vec![("user".into(), 2)], applied: 0 };
        assert!(g.is_current(&from_redis));
        g.mark(["user"]);
        let _ = g.merge_snapshot(&tags(&["user"]), 0, &[2]); // read while the bump is on its way
        assert!(!g.is_current(&from_redis), "written before the invalidation we applied");
        let loaded_after = g.merge_snapshot(&tags(&["user"]), 0, &[2]).vector;
        assert!(g.is_current(&loaded_after), "our own load after the mark is fresh");
        let sent = g.unconfirmed();
        assert_eq!(sent.tags, vec![("user".to_string(), 2, 2)], "bump from the confirmed value");
        g.confirm(&sent, None, &[3]);
        assert!(!g.is_current(&from_redis));
        assert!(!g.is_current(&loaded_after), "its vector is behind Redis' bump: a needless miss, never a stale hit");
        assert!(g.is_current(&GenerationVector { epoch: 0, tags: vec![("user".into(), 3)], applied: 0 }));
    }

    #[test]
    fn a_mark_made_while_a_bump_is_in_flight_survives_its_reply() {
        let g = Generations::default();
        g.mark(["user"]);
        let sent = g.unconfirmed();
        g.mark(["user"]); // the next write, applied while the first bump travels
        let between = GenerationVector { epoch: 0, tags: vec![("user".into(), 1)], applied: 1 };
        g.confirm(&sent, None, &[1]);
        assert!(g.has_unconfirmed());
        assert!(!g.is_current(&between), "taken before the second mark");
        let sent = g.unconfirmed();
        g.confirm(&sent, None, &[2]);
        assert!(!g.has_unconfirmed());
    }

    #[test]
    fn the_reported_generation_rises_at_once_and_never_falls() {
        let g = Generations::default();
        assert_eq!(g.generation("user"), 0);
        g.mark(["user"]);
        assert_eq!(g.generation("user"), 1);
        g.mark(["user"]);
        assert_eq!(g.generation("user"), 2, "each invalidation shows, even before Redis answers");
        let sent = g.unconfirmed();
        g.confirm(&sent, None, &[1]); // one bump covered both
        assert_eq!(g.generation("user"), 2);
        let _ = g.merge_snapshot(&tags(&["user"]), 0, &[7]);
        assert_eq!(g.generation("user"), 7);
    }

    #[test]
    fn only_our_own_epoch_bumps_raise_the_floor() {
        let g = Generations::default();
        let old = g.merge_snapshot(&[], 3, &[]);
        g.mark_epoch();
        assert!(!g.is_current(&old.vector), "at once");
        assert_eq!(g.floor(), 1);
        let sent = g.unconfirmed();
        assert_eq!(sent.epoch, Some((1, 0)));
        g.confirm(&sent, Some(4), &[]);
        assert!(!g.has_unconfirmed());
        assert!(!g.is_current(&old.vector));
        assert_eq!(g.floor(), 4);
        // Seeing a higher epoch in Redis (another daemon reconnected) does not invalidate L1.
        let before = g.merge_snapshot(&[], 4, &[]).vector;
        let _ = g.merge_snapshot(&[], 9, &[]);
        assert!(g.is_current(&before));
    }

    #[test]
    fn redis_behind_the_mirror_makes_snapshots_unsafe_for_l2_and_asks_for_a_resync() {
        let g = Generations::default();
        bump(&g, &["user"], &[7]);
        let snap = g.merge_snapshot(&tags(&["user"]), 0, &[1]); // Redis lost its data
        assert!(!snap.l2_safe);
        assert_eq!(snap.vector.tags, vec![("user".to_string(), 7)]);
        assert!(g.is_current(&snap.vector), "still fine for L1");
        assert!(g.needs_resync());
    }

    #[test]
    fn a_resync_request_made_during_a_push_keeps_the_resync_pending() {
        let g = Generations::default();
        g.request_resync();
        let token = g.resync_token();
        g.request_resync(); // e.g. Redis found behind again while the push is in flight
        g.resynced(token);
        assert!(g.needs_resync());
        let token = g.resync_token();
        g.resynced(token);
        assert!(!g.needs_resync());
    }
}
