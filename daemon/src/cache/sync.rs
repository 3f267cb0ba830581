//! Telling Redis: the second half of every invalidation, after it took effect here.
//!
//! An invalidation first takes effect in this process ([`super::tags`]): marks in the
//! generations, the key log, L1. [`Cache::sync_redis`] then brings Redis up to date, in order:
//! the mirror, if Redis may be behind it (it was unreachable, or lost its data); **one bump** for
//! every tag and the epoch marked since the last sync — one script call however many
//! notifications that was, and each tag once however often it was invalidated; then the key
//! deletes that wait. Only the bump's reply clears a mark ([`super::generations`]), only a done
//! delete clears an awaited key, so what does not reach Redis keeps being enforced here and is
//! retried: by [`Cache::run_redis_sync`] with backoff, and by the next miss.
//!
//! Every daemon bumps Redis for the notifications it receives. A single writer would not do: a
//! notification carries no identity of its commit, so a daemon that did not bump could not tell
//! whether the counter it reads already covers the write it was told of, and would have to
//! distrust Redis for that tag until some later bump. The batching keeps the cost to one round
//! trip per daemon per burst of writes instead of one per write.
//!
//! Invariant: syncs run one at a time (`sync_lock`), so a bump's reply is matched with the marks
//! it was sent for.

use tokio_util::sync::CancellationToken;

use super::invalidation::backoff;
use super::pattern::KeyMatcher;
use super::{Cache, L2, L2Error};

/// Deletes what a key invalidation removed from Redis; returns how many keys were deleted.
pub(super) async fn delete_in_redis(l2: &L2, matcher: &KeyMatcher) -> Result<u64, L2Error> {
    match matcher {
        KeyMatcher::Exact(key) => l2.delete(key).await.map(|()| 1),
        KeyMatcher::Pattern(pattern) => l2.delete_matching(pattern).await,
    }
}

impl Cache {
    /// Pushes to Redis what this process applied and Redis has not seen yet; returns whether
    /// everything reached it (when not, it stays pending and the background sync retries).
    pub async fn sync_redis(&self) -> bool {
        let s = &self.shared;
        let Some(l2) = &s.l2 else { return true };
        let _guard = s.sync_lock.lock().await;
        let token = s.gens.resync_token();
        match self.sync_with(l2).await {
            Ok(()) => {
                s.gens.resynced(token);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "invalidations wait for Redis");
                s.metrics.l2_error();
                s.gens.request_resync();
                s.sync_wanted.notify_one();
                false
            }
        }
    }

    async fn sync_with(&self, l2: &L2) -> Result<(), L2Error> {
        let s = &self.shared;
        if s.gens.needs_resync() {
            let (floor, tags) = s.gens.export();
            let values = l2.push_generations(floor, &tags).await?;
            s.gens.adopt(&values);
            s.metrics.resync();
            tracing::info!(tags = tags.len(), "generations pushed to Redis");
        }
        let sent = s.gens.unconfirmed();
        if !sent.is_empty() {
            let tags: Vec<(&str, u64)> =
                sent.tags.iter().map(|(tag, _, confirmed)| (tag.as_str(), *confirmed)).collect();
            let (epoch, values) = l2.bump(sent.epoch.map(|(_, floor)| floor), &tags).await?;
            s.gens.confirm(&sent, epoch, &values);
        }
        for (seq, matcher) in s.keys.awaited() {
            delete_in_redis(l2, &matcher).await?;
            s.keys.deleted(seq);
        }
        Ok(())
    }

    /// Syncs whenever an invalidation was received, until `shutdown`; while Redis cannot take
    /// it, retries with backoff (each attempt fails at once while the Redis breaker is open).
    pub async fn run_redis_sync(self, shutdown: CancellationToken) {
        if self.shared.l2.is_none() {
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.shared.sync_wanted.notified() => {}
            }
            let mut failures = 0;
            while !self.sync_redis().await {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff(failures)) => {}
                }
                failures = failures.saturating_add(1);
            }
        }
    }
}
