//! Invalidation: by tag, by key, by key pattern, and of everything (the epoch); both for this
//! process' own calls (which are then broadcast to the other daemons) and for messages that
//! arrive from the invalidation listener.
//!
//! Invariant: a local invalidation takes effect here before the call returns, whether or not
//! Redis or the broadcast work; what could not reach Redis is pushed to it by `resync` later.

use super::message::{InvalidationMessage, table_tag};
use super::metrics::InvalidationKind;
use super::pattern::KeyMatcher;
use super::{Cache, Error, MAX_KEY_BYTES, validate_key, validate_tags};

impl Cache {
    /// Invalidates every entry carrying any of `tags`, here, in Redis and in the other daemons.
    pub async fn invalidate_tags(&self, tags: &[String]) -> Result<(), Error> {
        let tags = validate_tags(tags)?;
        for tag in &tags {
            self.bump_tag(tag).await;
        }
        let origin = self.instance().to_owned();
        self.broadcast(tags.into_iter().map(|tag| InvalidationMessage::Tag { origin: origin.clone(), tag }).collect())
            .await;
        Ok(())
    }

    /// Invalidates the entries computed from these tables (canonical names, as the extension
    /// sends them), here and — through NOTIFY, exactly as a write would — in every daemon.
    pub async fn invalidate_tables(&self, canonical_names: &[String]) -> Result<(), Error> {
        let tags: Vec<String> = canonical_names.iter().map(|n| table_tag(n)).collect();
        validate_tags(&tags)?;
        for tag in &tags {
            self.bump_tag(tag).await;
        }
        self.broadcast(canonical_names.iter().map(|n| InvalidationMessage::Table(n.clone())).collect()).await;
        Ok(())
    }

    /// Removes one key everywhere.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        validate_key(key)?;
        self.forget(KeyMatcher::Exact(key.to_owned())).await;
        let origin = self.instance().to_owned();
        self.broadcast(vec![InvalidationMessage::Key { origin, key: key.to_owned() }]).await;
        Ok(())
    }

    /// Removes every key matching a Redis glob pattern everywhere; returns how many Redis keys
    /// this daemon deleted.
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<u64, Error> {
        if pattern.is_empty() || pattern.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidPattern(format!("must be 1 to {MAX_KEY_BYTES} bytes")));
        }
        let deleted = self.forget(KeyMatcher::Pattern(pattern.to_owned())).await;
        let origin = self.instance().to_owned();
        self.broadcast(vec![InvalidationMessage::Pattern { origin, pattern: pattern.to_owned() }]).await;
        Ok(deleted)
    }

    /// Applies a message from the invalidation channel (the listener calls this).
    pub async fn apply(&self, message: &InvalidationMessage) {
        if message.origin() == Some(self.instance()) {
            return; // our own broadcast, already applied
        }
        match message {
            InvalidationMessage::Table(name) => self.bump_tag(&table_tag(name)).await,
            InvalidationMessage::Tag { tag, .. } => self.bump_tag(tag).await,
            InvalidationMessage::Key { key, .. } => {
                self.forget(KeyMatcher::Exact(key.clone())).await;
            }
            InvalidationMessage::Pattern { pattern, .. } => {
                self.forget(KeyMatcher::Pattern(pattern.clone())).await;
            }
        }
    }

    /// Makes everything cached so far a miss for this process. Called after the LISTEN
    /// connection is (re-)established, since notifications sent meanwhile are lost.
    pub async fn bump_epoch(&self) {
        let s = &self.shared;
        match &s.l2 {
            Some(l2) => match l2.bump_epoch(s.gens.floor()).await {
                Ok(epoch) => s.gens.raise_floor(epoch),
                Err(e) => {
                    tracing::debug!(error = %e, "epoch bump kept local until Redis is back");
                    s.gens.bump_floor_local();
                }
            },
            None => s.gens.bump_floor_local(),
        }
        s.l1.clear();
        s.metrics.invalidation(InvalidationKind::Epoch);
    }

    /// Raises `tag`'s generation in Redis (or only here when Redis is unreachable).
    async fn bump_tag(&self, tag: &str) {
        let s = &self.shared;
        match &s.l2 {
            Some(l2) => match l2.bump_tag(tag).await {
                Ok(generation) => {
                    if !s.gens.observe(tag, generation) {
                        // Redis answered below our mirror: it lost data. Make sure this
                        // invalidation still counts here; the resync repairs Redis.
                        s.gens.bump_local(tag);
                    }
                }
                Err(e) => {
                    tracing::debug!(tag, error = %e, "tag invalidation kept local until Redis is back");
                    s.metrics.l2_error();
                    s.gens.bump_local(tag);
                }
            },
            None => s.gens.bump_local(tag),
        }
        s.l1.remove_tagged(tag);
        s.metrics.invalidation(InvalidationKind::Tag);
    }

    /// Logs a key invalidation for in-flight loaders, drops it from L1, then from Redis.
    async fn forget(&self, matcher: KeyMatcher) -> u64 {
        let s = &self.shared;
        {
            let _guard = s.store_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.keys.record(matcher.clone());
            match &matcher {
                KeyMatcher::Exact(key) => s.l1.remove(key),
                KeyMatcher::Pattern(pattern) => s.l1.remove_matching(pattern),
            }
        }
        let (kind, result) = match (&matcher, &s.l2) {
            (_, None) => (kind_of(&matcher), Ok(0)),
            (KeyMatcher::Exact(key), Some(l2)) => (InvalidationKind::Key, l2.delete(key).await.map(|()| 1)),
            (KeyMatcher::Pattern(p), Some(l2)) => (InvalidationKind::Pattern, l2.delete_matching(p).await),
        };
        s.metrics.invalidation(kind);
        result.unwrap_or_else(|e| {
            // Entries left in Redis are still removed for every daemon that processes the
            // broadcast; for the rest, they expire. Count and log it.
            tracing::warn!(error = %e, "key invalidation could not reach Redis");
            s.metrics.l2_error();
            0
        })
    }

    async fn broadcast(&self, messages: Vec<InvalidationMessage>) {
        let Some(broadcast) = self.shared.broadcast.get() else {
            return;
        };
        if messages.is_empty() {
            return;
        }
        let payloads = messages.iter().map(InvalidationMessage::encode).collect();
        if let Err(e) = broadcast.publish(payloads).await {
            // The other daemons' LISTEN connections go through the same Postgres: if it cannot
            // take our NOTIFY they are most likely disconnected too and bump their epoch when
            // they reconnect.
            tracing::warn!(error = %e, "invalidation not broadcast to other daemons");
        }
    }

    /// Pushes generations this process holds above Redis' (invalidations made while it was
    /// unreachable, or data it lost) so that other daemons' entries compare correctly again.
    pub(super) async fn resync(&self) {
        let s = &self.shared;
        let Some(l2) = &s.l2 else { return };
        let _guard = s.resync_lock.lock().await;
        if !s.gens.needs_resync() {
            return;
        }
        let (floor, tags) = s.gens.export();
        match l2.push_generations(floor, &tags).await {
            Ok(values) => {
                s.gens.finish_resync(floor, &tags, &values);
                s.metrics.resync();
                tracing::info!(tags = tags.len(), "generations pushed to Redis");
            }
            Err(e) => tracing::debug!(error = %e, "resync postponed"),
        }
    }
}

fn kind_of(matcher: &KeyMatcher) -> InvalidationKind {
    match matcher {
        KeyMatcher::Exact(_) => InvalidationKind::Key,
        KeyMatcher::Pattern(_) => InvalidationKind::Pattern,
    }
}
