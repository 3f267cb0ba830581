//! Reads and loads: lookup through both levels, `get_or_load`, and storing a loaded value.
//!
//! Order of a miss, which is what closes the stale-set race: take the key's single-flight lock,
//! look again, note the key-invalidation position, read the generation vector, *then* run the
//! loader, then store only if nothing invalidated the entry meanwhile — and check again after the
//! Redis write, deleting what was just written if a key invalidation slipped in between.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::entry::Entry;
use super::generations::Snapshot;
use super::metrics::{Level, Outcome};
use super::{Cache, Cached, LoadError, Source, validate_key, validate_tags};

/// Whether an entry depends on table data, and so on the LISTEN connection being up.
fn reads_tables(entry: &Entry) -> bool {
    entry.vector.tags.iter().any(|(t, _)| t.starts_with("table:"))
}

fn tags_read_tables(tags: &[String]) -> bool {
    tags.iter().any(|t| t.starts_with("table:"))
}

impl Cache {
    /// The value for `key`, loading it with `loader` on a miss and caching the result for `ttl`
    /// (or the default) under `tags`. Concurrent misses of one key run the loader once.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        tags: &[String],
        loader: F,
    ) -> Result<Cached, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        validate_key(key)?;
        let tags = validate_tags(tags)?;
        let ttl = self.ttl(ttl)?;
        if let Some(hit) = self.lookup(key).await {
            return Ok(hit);
        }
        let _flight = self.shared.flights.lock(key).await;
        if let Some(hit) = self.lookup(key).await {
            return Ok(hit);
        }
        let seq = self.shared.keys.position();
        let snapshot = self.snapshot(&tags).await;
        let result = loader().await;
        self.shared.metrics.load(result.is_ok());
        let value = result.map_err(LoadError::Loader)?;
        Ok(self.store(key, value, ttl, snapshot, seq).await)
    }

    /// Like [`Cache::get_or_load`] for a loader that learns more tags from its own result (a
    /// proxied response's `Cache-Tag`): `tags` are known before it runs, the loader returns the
    /// value with the extra ones. The extra tags' generations can only be read after the load,
    /// so the value is stored only if none of them was invalidated here while it ran (a write
    /// the loader might not have seen); either way it is returned.
    pub async fn get_or_load_tagged<F, Fut, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        tags: &[String],
        loader: F,
    ) -> Result<Cached, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Bytes, Vec<String>), E>>,
    {
        validate_key(key)?;
        let tags = validate_tags(tags)?;
        let ttl = self.ttl(ttl)?;
        if let Some(hit) = self.lookup(key).await {
            return Ok(hit);
        }
        let _flight = self.shared.flights.lock(key).await;
        if let Some(hit) = self.lookup(key).await {
            return Ok(hit);
        }
        self.load_tagged(key, ttl, &tags, loader).await
    }

    /// Loads `key` again and stores the result, whatever is cached now (refresh-ahead and
    /// stale-while-revalidate); the same rules as [`Cache::get_or_load_tagged`]. Returns `None`
    /// without loading when a load of the key is already running in this process.
    pub async fn refresh_tagged<F, Fut, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        tags: &[String],
        loader: F,
    ) -> Option<Result<Cached, LoadError<E>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Bytes, Vec<String>), E>>,
    {
        let checked = validate_key(key).and_then(|()| Ok((validate_tags(tags)?, self.ttl(ttl)?)));
        let (tags, ttl) = match checked {
            Ok(v) => v,
            Err(e) => return Some(Err(e.into())),
        };
        let _flight = self.shared.flights.try_lock(key)?;
        Some(self.load_tagged(key, ttl, &tags, loader).await)
    }

    async fn load_tagged<F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        tags: &[String],
        loader: F,
    ) -> Result<Cached, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Bytes, Vec<String>), E>>,
    {
        let seq = self.shared.keys.position();
        let applied = self.shared.gens.applied();
        let snapshot = self.snapshot(tags).await;
        let result = loader().await;
        self.shared.metrics.load(result.is_ok());
        let (value, extra) = result.map_err(LoadError::Loader)?;
        let extra: Vec<String> = match validate_tags(&extra) {
            Ok(extra) => extra.into_iter().filter(|t| tags.binary_search(t).is_err()).collect(),
            Err(e) => {
                tracing::debug!(key, error = %e, "a loader's own tags are invalid; value not stored");
                self.shared.metrics.store_skipped();
                return Ok(uncached(value, self.shared.clock.unix_ms(), ttl));
            }
        };
        if extra.is_empty() {
            return Ok(self.store(key, value, ttl, snapshot, seq).await);
        }
        if self.shared.gens.invalidated_after(&extra, applied) {
            self.shared.metrics.store_skipped();
            return Ok(uncached(value, self.shared.clock.unix_ms(), ttl));
        }
        let late = self.snapshot(&extra).await;
        let mut vector = snapshot.vector;
        vector.tags.extend(late.vector.tags);
        vector.tags.sort_unstable();
        vector.epoch = vector.epoch.min(late.vector.epoch);
        let snapshot = Snapshot { vector, l2_safe: snapshot.l2_safe && late.l2_safe };
        Ok(self.store(key, value, ttl, snapshot, seq).await)
    }

    /// Looks `key` up in L1, then L2; returns only a value that is current and unexpired.
    pub(super) async fn lookup(&self, key: &str) -> Option<Cached> {
        let s = &self.shared;
        let started = Instant::now();
        let now_ms = s.clock.unix_ms();
        match s.l1.get(key) {
            Some(entry) if self.servable(&entry, now_ms) => {
                s.metrics.lookup(Level::L1, Outcome::Hit, started.elapsed());
                return Some(cached(&entry, Source::L1));
            }
            Some(entry) => {
                if entry.is_expired(now_ms) || !s.gens.is_current(&entry.vector) {
                    s.l1.remove(key);
                }
                s.metrics.lookup(Level::L1, Outcome::Stale, started.elapsed());
            }
            None => s.metrics.lookup(Level::L1, Outcome::Miss, started.elapsed()),
        }
        let l2 = s.l2.as_ref()?;
        let started = Instant::now();
        // Key invalidations from here on are checked before the entry goes into L1.
        let seq = s.keys.position();
        let bytes = match l2.get(key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                s.metrics.lookup(Level::L2, Outcome::Miss, started.elapsed());
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "L2 lookup failed; continuing without it");
                s.metrics.l2_error();
                return None;
            }
        };
        s.metrics.l2_bytes(0, bytes.len());
        let entry = match Entry::decode(&bytes) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(key, error = %e, "unreadable L2 entry ignored");
                s.metrics.lookup(Level::L2, Outcome::Stale, started.elapsed());
                return None;
            }
        };
        // Check the entry against Redis' generations, not only our mirror: the mirror may not
        // know of an invalidation another process made (one we started after, or a custom tag
        // invalidated through another daemon whose broadcast is still on its way).
        let names: Vec<String> = entry.vector.tags.iter().map(|(t, _)| t.clone()).collect();
        match l2.generations(&names).await {
            Ok((Some(epoch), values)) => {
                s.gens.merge_snapshot(&names, epoch, &values);
            }
            Ok((None, _)) => {
                s.gens.request_resync();
                s.metrics.lookup(Level::L2, Outcome::Stale, started.elapsed());
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot verify an L2 entry; treating it as a miss");
                s.metrics.l2_error();
                return None;
            }
        }
        // An entry that is behind the generations is not deleted from Redis: another daemon may
        // have just replaced it with a fresher one, which a DEL would throw away.
        if !self.servable(&entry, s.clock.unix_ms()) {
            s.metrics.lookup(Level::L2, Outcome::Stale, started.elapsed());
            return None;
        }
        let entry = Arc::new(entry);
        {
            // A key invalidation that came in while we read Redis, or whose Redis delete has not
            // been done yet, means this entry may be one it removed: not served, not kept.
            let _guard = s.store_lock.lock().unwrap_or_else(|e| e.into_inner());
            if s.keys.invalidated_since(seq, key) || s.keys.awaits_delete(key) {
                s.metrics.lookup(Level::L2, Outcome::Stale, started.elapsed());
                return None;
            }
            s.l1.insert(key, entry.clone());
        }
        s.metrics.lookup(Level::L2, Outcome::Hit, started.elapsed());
        Some(cached(&entry, Source::L2))
    }

    /// Current, unexpired and — if computed from tables — backed by a live LISTEN connection.
    fn servable(&self, entry: &Entry, now_ms: u64) -> bool {
        let s = &self.shared;
        if entry.is_expired(now_ms) || !s.gens.is_current(&entry.vector) {
            return false;
        }
        if reads_tables(entry) && !self.feed_connected() {
            s.metrics.bypass();
            return false;
        }
        true
    }

    /// The generation vector for a miss: from Redis when reachable, else from the mirror.
    pub(super) async fn snapshot(&self, tags: &[String]) -> Snapshot {
        let s = &self.shared;
        let Some(l2) = &s.l2 else {
            return s.gens.local_snapshot(tags);
        };
        if s.gens.needs_resync() {
            self.sync_redis().await;
        }
        for _attempt in 0..2 {
            match l2.generations(tags).await {
                Ok((Some(epoch), values)) => return s.gens.merge_snapshot(tags, epoch, &values),
                Ok((None, _)) => {
                    // The hash is missing: first use, or Redis lost its data. Push ours first.
                    s.gens.request_resync();
                    self.sync_redis().await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "generations unavailable; using the local mirror");
                    s.metrics.l2_error();
                    break;
                }
            }
        }
        s.gens.local_snapshot(tags)
    }

    /// Stores a loaded value unless an invalidation raced its loader; returns it either way.
    pub(super) async fn store(&self, key: &str, value: Bytes, ttl: Duration, snapshot: Snapshot, seq: u64) -> Cached {
        let s = &self.shared;
        let now = s.clock.unix_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let entry =
            Arc::new(Entry { created_ms: now, expires_ms: now.saturating_add(ttl_ms), vector: snapshot.vector, value });
        let loaded = cached(&entry, Source::Loader);
        let names: Vec<String> = entry.vector.tags.iter().map(|(t, _)| t.clone()).collect();
        if tags_read_tables(&names) && !self.feed_connected() {
            s.metrics.store_skipped();
            return loaded;
        }
        {
            let _guard = s.store_lock.lock().unwrap_or_else(|e| e.into_inner());
            if !s.gens.is_current(&entry.vector) || s.keys.invalidated_since(seq, key) {
                s.metrics.store_skipped();
                return loaded;
            }
            s.l1.insert(key, entry.clone());
        }
        let Some(l2) = s.l2.as_ref().filter(|_| snapshot.l2_safe) else {
            return loaded;
        };
        let encoded = entry.encode(s.settings.compression_threshold);
        match l2.set(key, &encoded, ttl_ms).await {
            Ok(()) => s.metrics.l2_bytes(encoded.len(), 0),
            Err(e) => {
                tracing::debug!(key, error = %e, "L2 store failed; value kept in L1");
                s.metrics.l2_error();
                return loaded;
            }
        }
        if s.keys.invalidated_since(seq, key) {
            // A delete or pattern invalidation ran between our check and our SET, and its own
            // Redis delete may have come before our write: undo the write.
            s.l1.remove(key);
            if let Err(e) = l2.delete(key).await {
                tracing::warn!(key, error = %e, "could not undo a raced L2 store");
            }
        }
        loaded
    }
}

/// A loaded value that was not stored.
fn uncached(value: Bytes, now_ms: u64, ttl: Duration) -> Cached {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Cached { value, source: Source::Loader, created_ms: now_ms, expires_ms: now_ms.saturating_add(ttl_ms) }
}

fn cached(entry: &Entry, source: Source) -> Cached {
    Cached { value: entry.value.clone(), source, created_ms: entry.created_ms, expires_ms: entry.expires_ms }
}
