//! L1: the in-process level, a moka cache bounded by bytes.
//!
//! moka decides what to evict (TinyLFU admission, LRU eviction) and drops entries at their
//! expiry; entries are `Arc`s so a hit copies nothing. L1 never decides freshness by itself: the
//! facade checks every entry it returns against the generations and the clock, so an entry that
//! moka still holds after an invalidation is never served. Invariant: the weight of an entry is
//! charged for its key, value, tags and a fixed overhead, so the byte budget holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache as Moka;

use super::entry::Entry;
use super::metrics::CacheMetrics;
use super::pattern::glob_match;
use crate::clock::SharedClock;

struct ExpireAtEntryExpiry {
    clock: SharedClock,
}

impl moka::Expiry<String, Arc<Entry>> for ExpireAtEntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Arc<Entry>, _created_at: Instant) -> Option<Duration> {
        Some(Duration::from_millis(value.remaining_ms(self.clock.unix_ms())))
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Arc<Entry>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

#[derive(Clone)]
pub struct L1 {
    cache: Moka<String, Arc<Entry>>,
    max_bytes: u64,
}

impl std::fmt::Debug for L1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1").field("entries", &self.cache.entry_count()).field("max_bytes", &self.max_bytes).finish()
    }
}

impl L1 {
    pub fn new(max_bytes: u64, metrics: Arc<CacheMetrics>, clock: SharedClock) -> Self {
        let cache = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Entry>| entry.l1_weight(key))
            .expire_after(ExpireAtEntryExpiry { clock })
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    metrics.l1_eviction();
                }
            })
            .build();
        Self { cache, max_bytes }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: &str, entry: Arc<Entry>) {
        self.cache.insert(key.to_owned(), entry);
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Drops the entries whose key matches a glob pattern.
    pub fn remove_matching(&self, pattern: &str) {
        let pattern = pattern.to_owned();
        // Cannot fail: invalidation closures are enabled in `new`.
        let _ = self.cache.invalidate_entries_if(move |key, _| glob_match(&pattern, key));
    }

    /// Drops the entries carrying any of `tags` (memory only: the generations already make them
    /// misses). One predicate for a whole batch of invalidations.
    pub fn remove_tagged(&self, tags: &[String]) {
        let tags = tags.to_vec();
        let _ =
            self.cache.invalidate_entries_if(move |_, entry| entry.vector.tags.iter().any(|(t, _)| tags.contains(t)));
    }

    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// (entries, bytes, byte budget), after pending maintenance.
    pub fn size(&self) -> (u64, u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size(), self.max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cache::generations::GenerationVector;
    use crate::clock::ManualClock;

    fn entry(clock: &ManualClock, len: usize) -> Arc<Entry> {
        use crate::clock::Clock;
        Arc::new(Entry {
            created_ms: clock.unix_ms(),
            expires_ms: clock.unix_ms() + 60_000,
            vector: GenerationVector::default(),
            value: Bytes::from(vec![b'x'; len]),
        })
    }

    #[test]
    fn l1_stays_within_its_byte_budget_and_counts_evictions() {
        let clock = Arc::new(ManualClock::new());
        let metrics = Arc::new(CacheMetrics::default());
        let l1 = L1::new(64 * 1024, metrics.clone(), clock.clone());
        for i in 0..200 {
            l1.insert(&format!("k{i}"), entry(&clock, 1024));
        }
        let (_, bytes, max) = l1.size();
        assert!(bytes <= max, "{bytes} > {max}");
        assert!(metrics.snapshot().l1_evictions > 0);
    }

    #[test]
    fn pattern_and_tag_removal_drop_only_matching_entries() {
        let clock = Arc::new(ManualClock::new());
        let l1 = L1::new(1 << 20, Arc::new(CacheMetrics::default()), clock.clone());
        l1.insert("user:1", entry(&clock, 1));
        l1.insert("user:2", entry(&clock, 1));
        let tagged = Arc::new(Entry {
            vector: GenerationVector { epoch: 0, tags: vec![("reports".into(), 1)], applied: 0 },
            ..(*entry(&clock, 1)).clone()
        });
        l1.insert("report:9", tagged);
        l1.remove_matching("user:*");
        l1.remove_tagged(&["reports".to_owned()]);
        l1.size();
        assert!(l1.get("user:1").is_none() && l1.get("user:2").is_none());
        assert!(l1.get("report:9").is_none());
    }
}
