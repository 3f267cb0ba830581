//! The cache as a library against the real Redis of `make test` (and, where a test must break
//! Redis, a redis-server of its own).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{OwnRedis, ProxyMode, RedisProxy, config, redis_url, unique};
use voxperfd::cache::{Cache, CacheSettings, InvalidationMessage, L2, MARKER_ZSTD, Source};
use voxperfd::clock::ManualClock;
use voxperfd::resilience::Breaker;

struct Instance {
    cache: Cache,
    clock: Arc<ManualClock>,
}

/// Whether the cache reaches Redis within a few pings (the first ones after an outage fail
/// while the client reconnects).
async fn reaches_redis(cache: &Cache) -> bool {
    for _ in 0..5 {
        if matches!(cache.ping_l2().await, Some(Ok(()))) {
            return true;
        }
    }
    false
}

fn instance(redis: &str, prefix: &str) -> Instance {
    let cfg = config(&[("REDIS_URL", redis), ("REDIS_KEY_PREFIX", prefix)]);
    let clock = Arc::new(ManualClock::new());
    let breaker = Breaker::new("redis", cfg.breaker.clone(), clock.clone());
    let l2 = L2::new(&cfg.redis, breaker).unwrap();
    let cache = Cache::new(
        CacheSettings {
            default_ttl: Duration::from_secs(60),
            l1_max_bytes: 1 << 20,
            compression_threshold: 1024,
            invalidation_feed: false,
        },
        Some(l2),
        clock.clone(),
    );
    Instance { cache, clock }
}

async fn raw(redis: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis).unwrap().get_multiplexed_async_connection().await.unwrap()
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn an_entry_expires_at_its_ttl_in_both_levels() {
    let url = redis_url();
    let prefix = format!("{}:", unique("ttl"));
    let a = instance(&url, &prefix);
    a.cache.set("k", Bytes::from("v"), Some(Duration::from_secs(30)), &[]).await.unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg(format!("{prefix}e:k")).query_async(&mut raw(&url).await).await.unwrap();
    assert!((29_000..=30_000).contains(&pttl), "Redis expires it too: {pttl}");
    let b = instance(&url, &prefix);
    assert_eq!(b.cache.get("k").await.unwrap().unwrap().source, Source::L2);
    a.clock.advance(Duration::from_secs(29));
    assert!(a.cache.get("k").await.unwrap().is_some());
    a.clock.advance(Duration::from_secs(1));
    b.clock.advance(Duration::from_secs(30));
    assert_eq!(a.cache.get("k").await.unwrap(), None, "L1 copy expired");
    let fresh = instance(&url, &prefix);
    fresh.clock.advance(Duration::from_secs(30));
    assert_eq!(fresh.cache.get("k").await.unwrap(), None, "L2 copy expired");
}

#[tokio::test]
async fn values_above_the_threshold_round_trip_compressed() {
    let url = redis_url();
    let prefix = format!("{}:", unique("zstd"));
    let a = instance(&url, &prefix);
    let big = Bytes::from(serde_json::to_vec(&vec!["+15550001234 AVAILABLE"; 500]).unwrap());
    let small = Bytes::from_static(b"[1,2,3]");
    a.cache.set("big", big.clone(), None, &[]).await.unwrap();
    a.cache.set("small", small.clone(), None, &[]).await.unwrap();
    let mut conn = raw(&url).await;
    let stored: Vec<u8> = redis::cmd("GET").arg(format!("{prefix}e:big")).query_async(&mut conn).await.unwrap();
    assert_eq!(stored[2], MARKER_ZSTD, "format marker");
    assert!(stored.len() < big.len() / 4, "{} vs {}", stored.len(), big.len());
    let stored: Vec<u8> = redis::cmd("GET").arg(format!("{prefix}e:small")).query_async(&mut conn).await.unwrap();
    assert_ne!(stored[2], MARKER_ZSTD);
    let b = instance(&url, &prefix);
    assert_eq!(b.cache.get("big").await.unwrap().unwrap().value, big);
    assert_eq!(b.cache.get("small").await.unwrap().unwrap().value, small);
}

#[tokio::test]
async fn a_tag_invalidated_by_one_instance_is_a_miss_for_another_reading_redis() {
    let url = redis_url();
    let prefix = format!("{}:", unique("tags"));
    let a = instance(&url, &prefix);
    a.cache.set("profile:1", Bytes::from("old"), None, &tags(&["user:1"])).await.unwrap();
    a.cache.set("profile:2", Bytes::from("keep"), None, &tags(&["user:2"])).await.unwrap();
    a.cache.invalidate_tags(&tags(&["user:1"])).await.unwrap();
    let b = instance(&url, &prefix); // knows nothing: Redis' generations decide
    assert_eq!(b.cache.get("profile:1").await.unwrap(), None);
    assert_eq!(b.cache.get("profile:2").await.unwrap().unwrap().value, "keep");
    assert!(a.cache.get("profile:1").await.unwrap().is_none());
}

#[tokio::test]
async fn pattern_invalidation_deletes_the_matching_keys_in_redis() {
    let url = redis_url();
    let prefix = format!("{}:", unique("pattern"));
    let a = instance(&url, &prefix);
    for key in ["user:1:profile", "user:2:profile", "user:2:settings"] {
        a.cache.set(key, Bytes::from("v"), None, &[]).await.unwrap();
    }
    let deleted = a.cache.invalidate_pattern("user:*:profile").await.unwrap();
    assert_eq!(deleted, 2);
    let mut conn = raw(&url).await;
    for (key, exists) in [("user:1:profile", false), ("user:2:profile", false), ("user:2:settings", true)] {
        let n: i64 = redis::cmd("EXISTS").arg(format!("{prefix}e:{key}")).query_async(&mut conn).await.unwrap();
        assert_eq!(n == 1, exists, "{key}");
    }
    assert!(a.cache.get("user:1:profile").await.unwrap().is_none());
}

#[tokio::test]
async fn single_flight_runs_one_loader_for_concurrent_misses_across_levels() {
    let url = redis_url();
    let a = instance(&url, &format!("{}:", unique("flight")));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, calls) = (a.cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("hot", None, &[], || async move {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, ()>(Bytes::from("v"))
                })
                .await
                .unwrap()
                .value
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "v");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn generations_lost_by_redis_are_pushed_back_before_entries_are_trusted() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let a = instance(&url, "lost:");
    for _ in 0..3 {
        a.cache.invalidate_tags(&tags(&["user"])).await.unwrap();
    }
    assert_eq!(a.cache.generation("user"), 3);
    redis.stop();
    redis.restart(); // empty: it saves nothing
    // The first command on the old connection fails while it reconnects.
    assert!(reaches_redis(&a.cache).await, "reconnects to the restarted Redis");
    a.cache.set("k", Bytes::from("v"), None, &tags(&["user"])).await.unwrap();
    let stored: Option<u64> =
        redis::cmd("HGET").arg("lost:gen").arg("user").query_async(&mut raw(&url).await).await.unwrap();
    assert_eq!(stored, Some(3), "the mirror was pushed to the empty Redis");
    let b = instance(&url, "lost:");
    assert_eq!(b.cache.get("k").await.unwrap().unwrap().source, Source::L2);
    b.cache.invalidate_tags(&tags(&["user"])).await.unwrap();
    assert_eq!(b.cache.generation("user"), 4, "counting resumes above the old values");
}

/// One daemon is cut off from Redis when a write to what an L2 entry was computed from is
/// announced; it applies the invalidation locally. When Redis is reachable again, that entry —
/// stored by another daemon before the write, with a generation this daemon had not seen yet —
/// must not be served: the local invalidation has to outrank everything Redis held before it.
#[tokio::test]
async fn an_invalidation_applied_while_redis_was_unreachable_outranks_older_l2_entries() {
    let url = redis_url();
    let prefix = format!("{}:", unique("cutoff"));
    let proxy = RedisProxy::start(&url).await;
    let a = instance(&proxy.url(), &prefix);
    let b = instance(&url, &prefix);
    a.cache.invalidate_tags(&tags(&["user"])).await.unwrap();
    b.cache.invalidate_tags(&tags(&["user"])).await.unwrap(); // Redis is now ahead of a's view
    b.cache.set("profile", Bytes::from("old"), None, &tags(&["user"])).await.unwrap();

    proxy.set_mode(ProxyMode::Refuse);
    a.cache.apply(&InvalidationMessage::Tag { origin: "elsewhere".into(), tag: "user".into() }).await;
    proxy.set_mode(ProxyMode::Forward);
    assert!(reaches_redis(&a.cache).await, "a reaches Redis again");
    assert_eq!(a.cache.get("profile").await.unwrap(), None, "computed before an invalidation a applied");
    a.cache.set("profile", Bytes::from("new"), None, &tags(&["user"])).await.unwrap();
    assert_eq!(a.cache.get("profile").await.unwrap().unwrap().value, "new");
    let fresh = instance(&url, &prefix);
    assert_eq!(fresh.cache.get("profile").await.unwrap().unwrap().value, "new", "a's entry is current in Redis");
}

/// The same for a key: deleted by another daemon while this one could not reach Redis. The
/// entry Redis still holds must not be served here once Redis answers again, and the delete is
/// done in Redis as soon as it can be.
#[tokio::test]
async fn a_key_deleted_while_redis_was_unreachable_is_not_served_from_it_afterwards() {
    let url = redis_url();
    let prefix = format!("{}:", unique("cutkey"));
    let proxy = RedisProxy::start(&url).await;
    let a = instance(&proxy.url(), &prefix);
    let b = instance(&url, &prefix);
    b.cache.set("profile", Bytes::from("old"), None, &[]).await.unwrap();

    proxy.set_mode(ProxyMode::Refuse);
    a.cache.apply(&InvalidationMessage::Key { origin: "elsewhere".into(), key: "profile".into() }).await;
    proxy.set_mode(ProxyMode::Forward);
    assert!(reaches_redis(&a.cache).await, "a reaches Redis again");
    assert_eq!(a.cache.get("profile").await.unwrap(), None, "deleted before Redis could be told");
    assert!(a.cache.sync_redis().await, "the delete is retried");
    let exists: i64 =
        redis::cmd("EXISTS").arg(format!("{prefix}e:profile")).query_async(&mut raw(&url).await).await.unwrap();
    assert_eq!(exists, 0);
}
