//! Invalidation: by tag, by key, by key pattern, and of everything (the epoch); both for this
//! process' own calls (which are then broadcast to the other daemons) and for messages that
//! arrive from the invalidation listener.
//!
//! Invariant: an invalidation takes effect here — marks in the generations, the key log, L1 —
//! before any network I/O, so no request that starts after it can be answered with what it
//! removed, whether Redis is fast, slow or unreachable. Redis is told afterwards ([`super::sync`]):
//! inline for this process' own calls, in the background for received messages; the broadcast
//! comes last.

use super::message::{InvalidationMessage, table_tag};
use super::metrics::InvalidationKind;
use super::pattern::KeyMatcher;
use super::sync::delete_in_redis;
use super::{Cache, Error, MAX_KEY_BYTES, validate_key, validate_tags};

impl Cache {
    /// Invalidates every entry carrying any of `tags`, here, in Redis and in the other daemons.
    pub async fn invalidate_tags(&self, tags: &[String]) -> Result<(), Error> {
        let tags = validate_tags(tags)?;
        self.invalidate_here(&tags, Vec::new());
        self.sync_redis().await;
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
        self.invalidate_here(&tags, Vec::new());
        self.sync_redis().await;
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

    /// Applies messages from the invalidation channel here, at once and without network I/O, as
    /// one batch; Redis is told by the background sync ([`Cache::run_redis_sync`]), in one round
    /// trip for however many messages arrived meanwhile. The listener calls this with every
    /// notification it drained from its connection.
    pub fn receive(&self, messages: &[InvalidationMessage]) {
        let mut tags = Vec::new();
        let mut keys = Vec::new();
        for message in messages {
            if message.origin() == Some(self.instance()) {
                continue; // our own broadcast, already applied
            }
            match message {
                InvalidationMessage::Table(name) => tags.push(table_tag(name)),
                InvalidationMessage::Tag { tag, .. } => tags.push(tag.clone()),
                InvalidationMessage::Key { key, .. } => keys.push(KeyMatcher::Exact(key.clone())),
                InvalidationMessage::Pattern { pattern, .. } => keys.push(KeyMatcher::Pattern(pattern.clone())),
            }
        }
        if tags.is_empty() && keys.is_empty() {
            return;
        }
        self.invalidate_here(&tags, keys);
        self.shared.sync_wanted.notify_one();
    }

    /// Applies one message from the invalidation channel ([`Cache::receive`]) and tells Redis
    /// before returning.
    pub async fn apply(&self, message: &InvalidationMessage) {
        self.receive(std::slice::from_ref(message));
        self.sync_redis().await;
    }

    /// Makes everything cached so far a miss for this process, at once. Called after the LISTEN
    /// connection is (re-)established, since notifications sent meanwhile are lost; Redis learns
    /// the new epoch from the background sync.
    pub fn start_epoch(&self) {
        let s = &self.shared;
        s.gens.mark_epoch();
        s.l1.clear();
        s.metrics.invalidation(InvalidationKind::Epoch);
        s.sync_wanted.notify_one();
    }

    /// [`Cache::start_epoch`], then tells Redis before returning.
    pub async fn bump_epoch(&self) {
        self.start_epoch();
        self.sync_redis().await;
    }

    /// The local half of every invalidation: marks the tags (one batch), logs the keys, drops
    /// both from L1. Returns the key invalidations' sequence numbers.
    fn invalidate_here(&self, tags: &[String], keys: Vec<KeyMatcher>) -> Vec<u64> {
        let s = &self.shared;
        if !tags.is_empty() {
            s.gens.mark(tags.iter().map(String::as_str));
            s.l1.remove_tagged(tags);
            for _ in tags {
                s.metrics.invalidation(InvalidationKind::Tag);
            }
        }
        let mut seqs = Vec::with_capacity(keys.len());
        let mut too_many_waiting = false;
        {
            let _guard = s.store_lock.lock().unwrap_or_else(|e| e.into_inner());
            for matcher in keys {
                let seq = s.keys.record(matcher.clone());
                match &matcher {
                    KeyMatcher::Exact(key) => s.l1.remove(key),
                    KeyMatcher::Pattern(pattern) => s.l1.remove_matching(pattern),
                }
                s.metrics.invalidation(kind_of(&matcher));
                if s.l2.is_some() && !s.keys.await_delete(seq, matcher) {
                    too_many_waiting = true;
                }
                seqs.push(seq);
            }
        }
        if too_many_waiting {
            tracing::warn!("too many key invalidations wait for Redis; everything it holds is a miss here instead");
            self.start_epoch();
        }
        seqs
    }

    /// A key invalidation of this process' own: here at once, then in Redis (retried by the
    /// sync if Redis cannot take it now). Returns how many Redis keys were deleted.
    async fn forget(&self, matcher: KeyMatcher) -> u64 {
        let s = &self.shared;
        let seq = self.invalidate_here(&[], vec![matcher.clone()]);
        let Some(l2) = &s.l2 else { return 0 };
        match delete_in_redis(l2, &matcher).await {
            Ok(deleted) => {
                s.keys.deleted(seq[0]);
                deleted
            }
            Err(e) => {
                tracing::warn!(error = %e, "key invalidation could not reach Redis; retried when it is back");
                s.metrics.l2_error();
                s.gens.request_resync();
                s.sync_wanted.notify_one();
                0
            }
        }
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
}

fn kind_of(matcher: &KeyMatcher) -> InvalidationKind {
    match matcher {
        KeyMatcher::Exact(_) => InvalidationKind::Key,
        KeyMatcher::Pattern(_) => InvalidationKind::Pattern,
    }
}
