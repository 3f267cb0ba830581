//! The facade's behaviour with L1 only (Redis-backed behaviour is in `daemon/tests/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Barrier;

use super::*;
use crate::clock::ManualClock;

fn cache_with(clock: Arc<ManualClock>, feed: bool) -> Cache {
    Cache::new(
        CacheSettings {
            default_ttl: Duration::from_secs(60),
            l1_max_bytes: 1 << 20,
            compression_threshold: 1024,
            invalidation_feed: feed,
        },
        None,
        clock,
    )
}

fn cache() -> (Cache, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (cache_with(clock.clone(), false), clock)
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn load(cache: &Cache, key: &str, tags: &[String], value: &'static str) -> Cached {
    cache.get_or_load(key, None, tags, || async { Ok::<_, ()>(Bytes::from(value)) }).await.unwrap()
}

#[tokio::test]
async fn a_loaded_value_is_served_from_l1_until_its_ttl_expires() {
    let (cache, clock) = cache();
    let first = cache
        .get_or_load("k", Some(Duration::from_secs(10)), &[], || async { Ok::<_, ()>(Bytes::from("v1")) })
        .await
        .unwrap();
    assert_eq!(first.source, Source::Loader);
    assert_eq!(load(&cache, "k", &[], "v2").await.source, Source::L1);
    clock.advance(Duration::from_secs(9));
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, "v1");
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get("k").await.unwrap(), None, "expired at exactly its TTL");
    assert_eq!(load(&cache, "k", &[], "v2").await.value, "v2");
}

#[tokio::test]
async fn tag_invalidation_turns_every_tagged_entry_into_a_miss() {
    let (cache, _) = cache();
    load(&cache, "a", &tags(&["user"]), "1").await;
    load(&cache, "b", &tags(&["user", "profile"]), "2").await;
    load(&cache, "c", &tags(&["country"]), "3").await;
    cache.invalidate_tags(&tags(&["user"])).await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None);
    assert_eq!(cache.get("b").await.unwrap(), None);
    assert!(cache.get("c").await.unwrap().is_some());
}

#[tokio::test]
async fn pattern_invalidation_removes_only_matching_keys() {
    let (cache, _) = cache();
    for key in ["user:1:profile", "user:2:profile", "user:2:settings", "country:list"] {
        load(&cache, key, &[], "v").await;
    }
    cache.invalidate_pattern("user:*:profile").await.unwrap();
    assert!(cache.get("user:1:profile").await.unwrap().is_none());
    assert!(cache.get("user:2:profile").await.unwrap().is_none());
    assert!(cache.get("user:2:settings").await.unwrap().is_some());
    assert!(cache.get("country:list").await.unwrap().is_some());
}

/// The stale-set race, in process: the loader has read the old data when the invalidation
/// arrives; its result must be returned to its caller but never stored.
#[tokio::test]
async fn a_slow_loader_cannot_reinsert_a_value_invalidated_while_it_ran() {
    let (cache, _) = cache();
    let loaded = Arc::new(Barrier::new(2));
    let invalidated = Arc::new(Barrier::new(2));
    let task = {
        let (cache, loaded, invalidated) = (cache.clone(), loaded.clone(), invalidated.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("report", None, &tags(&["table:public.t"]), || async move {
                    loaded.wait().await; // the old row has been read
                    invalidated.wait().await; // ... and the write's NOTIFY processed
                    Ok::<_, ()>(Bytes::from("old"))
                })
                .await
                .unwrap()
        })
    };
    loaded.wait().await;
    cache.apply(&InvalidationMessage::Table("public.t".into())).await;
    invalidated.wait().await;
    assert_eq!(task.await.unwrap().value, "old", "the racing caller still gets its answer");
    assert_eq!(cache.get("report").await.unwrap(), None, "but it is not cached");
    assert_eq!(cache.stats().counters.stores_skipped, 1);
    assert_eq!(load(&cache, "report", &tags(&["table:public.t"]), "new").await.value, "new");
}

/// The listener hands over everything it drained at once; it all counts before `receive`
/// returns, with nothing awaited in between.
#[tokio::test]
async fn a_received_batch_takes_effect_before_receive_returns() {
    let (cache, _) = cache();
    load(&cache, "rows", &tags(&["table:public.t"]), "1").await;
    load(&cache, "profile", &tags(&["user:1"]), "2").await;
    load(&cache, "k", &[], "3").await;
    load(&cache, "keep", &tags(&["user:2"]), "4").await;
    let other = "another-daemon".to_owned();
    cache.receive(&[
        InvalidationMessage::Table("public.t".into()),
        InvalidationMessage::Tag { origin: other.clone(), tag: "user:1".into() },
        InvalidationMessage::Key { origin: other, key: "k".into() },
    ]);
    for key in ["rows", "profile", "k"] {
        assert_eq!(cache.get(key).await.unwrap(), None, "{key}");
    }
    assert!(cache.get("keep").await.unwrap().is_some());
    assert_eq!(cache.stats().counters.invalidations.tags, 2, "one per message");
}

#[tokio::test]
async fn a_delete_during_a_load_prevents_the_store() {
    let (cache, _) = cache();
    let started = Arc::new(Barrier::new(2));
    let deleted = Arc::new(Barrier::new(2));
    let task = {
        let (cache, started, deleted) = (cache.clone(), started.clone(), deleted.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("k", None, &[], || async move {
                    started.wait().await;
                    deleted.wait().await;
                    Ok::<_, ()>(Bytes::from("old"))
                })
                .await
                .unwrap()
        })
    };
    started.wait().await;
    cache.delete("k").await.unwrap();
    deleted.wait().await;
    task.await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn concurrent_misses_of_one_key_run_the_loader_once() {
    let (cache, _) = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Barrier::new(1));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("hot", None, &[], || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    tokio::task::yield_now().await;
                    Ok::<_, ()>(Bytes::from("v"))
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().value, "v");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_loader_caches_nothing_and_is_counted() {
    let (cache, _) = cache();
    let r = cache.get_or_load("k", None, &[], || async { Err::<Bytes, _>("db down") }).await;
    assert!(matches!(r, Err(LoadError::Loader("db down"))));
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert_eq!(cache.stats().counters.loader_errors, 1);
}

#[tokio::test]
async fn table_data_is_bypassed_while_the_invalidation_feed_is_down() {
    let clock = Arc::new(ManualClock::new());
    let cache = cache_with(clock, true);
    // Not connected yet: table data is neither stored nor served; other entries are.
    load(&cache, "rows", &tags(&["table:public.t"]), "v").await;
    load(&cache, "plain", &tags(&["user"]), "v").await;
    assert_eq!(cache.get("rows").await.unwrap(), None);
    assert!(cache.get("plain").await.unwrap().is_some());
    cache.set_feed_connected(true);
    load(&cache, "rows", &tags(&["table:public.t"]), "v").await;
    assert!(cache.get("rows").await.unwrap().is_some());
    cache.set_feed_connected(false);
    assert_eq!(cache.get("rows").await.unwrap(), None, "listener lost: bypass");
}

#[tokio::test]
async fn an_epoch_bump_makes_everything_cached_before_it_a_miss() {
    let (cache, _) = cache();
    load(&cache, "a", &[], "1").await;
    load(&cache, "b", &tags(&["t"]), "2").await;
    cache.bump_epoch().await;
    assert_eq!(cache.get("a").await.unwrap(), None);
    assert_eq!(cache.get("b").await.unwrap(), None);
    load(&cache, "a", &[], "1").await;
    assert!(cache.get("a").await.unwrap().is_some());
}

#[tokio::test]
async fn our_own_broadcast_echo_is_ignored() {
    let (cache, _) = cache();
    load(&cache, "a", &tags(&["t"]), "1").await;
    let echo = InvalidationMessage::Tag { origin: cache.instance().to_owned(), tag: "t".into() };
    cache.apply(&echo).await;
    assert!(cache.get("a").await.unwrap().is_some());
    let other = InvalidationMessage::Tag { origin: "someone-else".into(), tag: "t".into() };
    cache.apply(&other).await;
    assert!(cache.get("a").await.unwrap().is_none());
}

#[tokio::test]
async fn bad_keys_tags_and_ttls_are_refused() {
    let (cache, _) = cache();
    assert!(matches!(cache.get("").await, Err(Error::InvalidKey(_))));
    assert!(matches!(cache.get(&"k".repeat(MAX_KEY_BYTES + 1)).await, Err(Error::InvalidKey(_))));
    let r = cache.set("k", Bytes::new(), None, &tags(&["#epoch"])).await;
    assert!(matches!(r, Err(Error::InvalidTag { .. })));
    let r = cache.set("k", Bytes::new(), Some(Duration::ZERO), &[]).await;
    assert!(matches!(r, Err(Error::InvalidTtl(_))));
}
