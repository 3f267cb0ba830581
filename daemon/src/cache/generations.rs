//! Tag generations: the mirror of Redis' counters that decides whether an entry is still current.
//!
//! Every tag has a generation (a counter in one Redis hash, shared by every daemon), and there is
//! one epoch. An entry carries the generation vector read *before* its loader ran. This process
//! serves an entry only if [`Generations::is_current`]: its epoch is at least this process'
//! **epoch floor** and each of its tag generations is at least the mirror's. Invalidating a tag
//! raises its generation, so every entry whose loader started earlier becomes a miss — including
//! one being stored right now by a loader that raced the invalidation (the stale-set race).
//!
//! Invariants a reader must keep:
//! - mirror values and the floor only grow;
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
}

/// A vector taken for a miss, and whether it may be written to Redis with the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub vector: GenerationVector,
    pub l2_safe: bool,
}

#[derive(Debug, Default)]
struct State {
    floor: u64,
    tags: HashMap<String, u64>,
    /// Bumps were made here that Redis has not seen (it was unreachable), or Redis was seen
    /// behind the mirror (it lost data): push the mirror to Redis before trusting it again.
    needs_resync: bool,
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
                tags: tags.iter().map(|t| (t.clone(), s.tags.get(t).copied().unwrap_or(0))).collect(),
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
            let mirror = s.tags.entry(tag.clone()).or_insert(0);
            if seen < *mirror {
                l2_safe = false;
            }
            *mirror = (*mirror).max(seen);
            out.push((tag.clone(), *mirror));
        }
        if !l2_safe {
            s.needs_resync = true;
        }
        Snapshot { vector: GenerationVector { epoch: redis_epoch.max(s.floor), tags: out }, l2_safe }
    }

    /// Whether an entry with this vector may be served by this process.
    pub fn is_current(&self, vector: &GenerationVector) -> bool {
        let s = self.lock();
        vector.epoch >= s.floor && vector.tags.iter().all(|(tag, g)| *g >= s.tags.get(tag).copied().unwrap_or(0))
    }

    /// Records a generation Redis returned for `tag` (from INCR). Returns false when Redis is
    /// behind the mirror, which means it lost data: a resync is then needed.
    pub fn observe(&self, tag: &str, value: u64) -> bool {
        let mut s = self.lock();
        let mirror = s.tags.entry(tag.to_owned()).or_insert(0);
        let ok = value >= *mirror;
        *mirror = (*mirror).max(value);
        if !ok {
            s.needs_resync = true;
        }
        ok
    }

    /// Invalidates `tag` here only (Redis unreachable); Redis learns it at the next resync.
    pub fn bump_local(&self, tag: &str) {
        let mut s = self.lock();
        *s.tags.entry(tag.to_owned()).or_insert(0) += 1;
        s.needs_resync = true;
    }

    /// Raises the floor to `epoch` (a value Redis returned for our own bump).
    pub fn raise_floor(&self, epoch: u64) {
        let mut s = self.lock();
        s.floor = s.floor.max(epoch);
    }

    /// Raises the floor by one here only (Redis unreachable).
    pub fn bump_floor_local(&self) {
        let mut s = self.lock();
        s.floor += 1;
        s.needs_resync = true;
    }

    /// Asks for a resync (Redis was found without our hash).
    pub fn request_resync(&self) {
        self.lock().needs_resync = true;
    }

    pub fn generation(&self, tag: &str) -> u64 {
        self.lock().tags.get(tag).copied().unwrap_or(0)
    }

    pub fn floor(&self) -> u64 {
        self.lock().floor
    }

    pub fn needs_resync(&self) -> bool {
        self.lock().needs_resync
    }

    /// The mirror and floor, to push to Redis.
    pub fn export(&self) -> (u64, Vec<(String, u64)>) {
        let s = self.lock();
        (s.floor, s.tags.iter().map(|(t, g)| (t.clone(), *g)).collect())
    }

    /// After a push: adopt Redis' values (each at least ours) and clear the resync flag unless a
    /// local bump happened meanwhile (then the values here are higher and it stays set).
    pub fn finish_resync(&self, floor_pushed: u64, pushed: &[(String, u64)], redis: &[(String, u64)]) {
        let mut s = self.lock();
        for (tag, g) in redis {
            let mirror = s.tags.entry(tag.clone()).or_insert(0);
            *mirror = (*mirror).max(*g);
        }
        let unchanged = s.floor == floor_pushed
            && pushed.iter().all(|(t, g)| s.tags.get(t).copied().unwrap_or(0) <= (*g).max(lookup(redis, t)));
        if unchanged {
            s.needs_resync = false;
        }
    }

    /// Number of tags the mirror knows (for stats).
    pub fn tag_count(&self) -> usize {
        self.lock().tags.len()
    }
}

fn lookup(list: &[(String, u64)], tag: &str) -> u64 {
    list.iter().find(|(t, _)| t == tag).map_or(0, |(_, g)| *g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_entry_loaded_before_an_invalidation_is_not_current() {
        let g = Generations::default();
        let t = tags(&["table:public.t"]);
        let snap = g.merge_snapshot(&t, 0, &[5]);
        assert!(snap.l2_safe);
        assert!(g.is_current(&snap.vector));
        // The NOTIFY for a commit arrives while the loader runs: INCR returns 6.
        assert!(g.observe("table:public.t", 6));
        assert!(!g.is_current(&snap.vector), "loader's result predates the write");
        let next = g.merge_snapshot(&t, 0, &[6]);
        assert!(g.is_current(&next.vector));
    }

    #[test]
    fn an_entry_newer_than_the_mirror_is_current() {
        // Another daemon processed a NOTIFY we have not seen yet and stored a fresher entry.
        let g = Generations::default();
        g.observe("user", 3);
        let fresher = GenerationVector { epoch: 0, tags: vec![("user".into(), 4)] };
        assert!(g.is_current(&fresher));
    }

    #[test]
    fn only_our_own_epoch_bumps_raise_the_floor() {
        let g = Generations::default();
        let old = g.merge_snapshot(&[], 3, &[]);
        g.raise_floor(4);
        assert!(!g.is_current(&old.vector));
        // Seeing a higher epoch in Redis (another daemon reconnected) does not invalidate L1.
        let before = g.merge_snapshot(&[], 4, &[]).vector;
        let _ = g.merge_snapshot(&[], 9, &[]);
        assert!(g.is_current(&before));
    }

    #[test]
    fn redis_behind_the_mirror_makes_snapshots_unsafe_for_l2_and_asks_for_a_resync() {
        let g = Generations::default();
        g.observe("user", 7);
        let snap = g.merge_snapshot(&tags(&["user"]), 0, &[1]); // Redis lost its data
        assert!(!snap.l2_safe);
        assert_eq!(snap.vector.tags, vec![("user".to_string(), 7)]);
        assert!(g.is_current(&snap.vector), "still fine for L1");
        assert!(g.needs_resync());
    }

    #[test]
    fn local_bumps_invalidate_immediately_and_wait_for_a_resync() {
        let g = Generations::default();
        let snap = g.local_snapshot(&tags(&["user"]));
        assert!(!snap.l2_safe);
        g.bump_local("user");
        assert!(!g.is_current(&snap.vector));
        assert!(g.needs_resync());
        let (floor, pushed) = g.export();
        g.finish_resync(floor, &pushed, &[("user".into(), 1)]);
        assert!(!g.needs_resync());
    }

    #[test]
    fn a_bump_during_a_resync_keeps_the_resync_pending() {
        let g = Generations::default();
        g.bump_local("user");
        let (floor, pushed) = g.export();
        g.bump_local("user"); // arrives while the push is in flight
        g.finish_resync(floor, &pushed, &[("user".into(), 1)]);
        assert!(g.needs_resync());
    }
}
