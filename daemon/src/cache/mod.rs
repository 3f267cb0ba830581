//! The two-level cache: L1 in process (moka), L2 in Redis, invalidated by tags, keys, patterns
//! and Postgres NOTIFY.
//!
//! [`Cache`] is a cheap-to-clone handle (an `Arc` inside, like mini-redis' `Db`). A Rust caller
//! uses [`Cache::get_or_load`]; the HTTP API is one such caller.
//!
//! The invariant that matters (DESIGN.md, "Cache and invalidation"): a value is never served
//! after an invalidation of any of its tags has been processed here, and a loader that raced an
//! invalidation never leaves its older value behind. How it holds:
//! - an invalidation takes effect here before any network I/O ([`tags`]): it marks its tags in
//!   the generations and drops them from L1 at once, and only then is Redis told ([`sync`]), so a
//!   slow or unreachable Redis delays nothing a request here can see;
//! - a miss reads the tag generations *before* the loader runs ([`Cache::get_or_load`]) and
//!   stores the entry with that vector; every hit, in L1 or L2, is checked against the
//!   generations and the marks ([`generations`]) — an L2 hit against Redis' own counters too — so
//!   an entry whose loader started before an invalidation is a miss however it got stored;
//! - key and pattern invalidations are logged ([`pattern::KeyInvalidations`]) and checked before
//!   and after a store, and an L2 hit is refused while a matching delete waits for Redis;
//! - entries computed from tables (tags `table:…`) are served only while the LISTEN connection is
//!   up: while it is down nothing tells us of writes ([`invalidation`]), and after it reconnects
//!   the epoch is bumped so everything cached before is a miss;
//! - Redis unreachable: its breaker opens, the cache runs on L1 and the loaders alone, and what
//!   was invalidated meanwhile is pushed to Redis when it comes back ([`Cache::sync_redis`]).

mod entry;
mod flight;
pub mod generations;
pub mod invalidation;
mod l1;
pub mod l2;
mod load;
pub mod message;
pub mod metrics;
pub mod pattern;
mod sync;
mod tags;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

pub use entry::{DecodeError, Entry, MARKER_RAW, MARKER_ZSTD};
use flight::Flights;
use generations::Generations;
use l1::L1;
pub use l2::{L2, L2Error};
pub use message::{InvalidationMessage, table_tag};
use metrics::{CacheMetrics, MetricsSnapshot};
use pattern::KeyInvalidations;

use crate::clock::SharedClock;
use crate::resilience::BreakerState;

/// Longest key accepted, in bytes: keys travel in NOTIFY payloads (at most 8000 bytes) and in
/// URLs, and a key longer than this is almost certainly a value used as a key by mistake.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest tag accepted, in bytes (a table tag is `table:` plus two identifiers of at most 63
/// bytes each, quoted; 256 leaves room for application tags).
pub const MAX_TAG_BYTES: usize = 256;
/// Longest TTL accepted: one year, as `CACHE_DEFAULT_TTL`'s limit.
pub const MAX_TTL: Duration = Duration::from_secs(31_536_000);

/// The cache's own mistakes a caller can make.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag { tag: String, reason: String },
    #[error("invalid pattern: {0}")]
    InvalidPattern(String),
    #[error("invalid ttl: {0}")]
    InvalidTtl(String),
}

/// A `get_or_load` that did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E> {
    #[error(transparent)]
    Cache(#[from] Error),
    /// The loader failed; nothing was cached.
    #[error("loader failed: {0}")]
    Loader(E),
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    L1,
    L2,
    Loader,
}

/// A value as the cache hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub value: Bytes,
    pub source: Source,
    /// When the value was loaded or set (Unix ms).
    pub created_ms: u64,
    /// When it expires (Unix ms).
    pub expires_ms: u64,
}

impl Cached {
    pub fn is_hit(&self) -> bool {
        self.source != Source::Loader
    }
}

/// Settings of one cache instance.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub default_ttl: Duration,
    pub l1_max_bytes: u64,
    /// Payloads above this many bytes are compressed in L2.
    pub compression_threshold: usize,
    /// Whether an invalidation listener feeds this cache. When true, entries tagged `table:…`
    /// are served only while it reports itself connected.
    pub invalidation_feed: bool,
}

/// Sends this daemon's invalidations to the other daemons (over Postgres NOTIFY).
#[async_trait::async_trait]
pub trait Broadcast: Send + Sync + std::fmt::Debug {
    async fn publish(&self, payloads: Vec<String>) -> Result<(), String>;
}

/// One entry for [`Cache::warm`].
#[derive(Debug, Clone)]
pub struct WarmEntry {
    pub key: String,
    pub value: Bytes,
    pub ttl: Option<Duration>,
    pub tags: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    settings: CacheSettings,
    l1: L1,
    l2: Option<L2>,
    gens: Generations,
    keys: KeyInvalidations,
    flights: Flights,
    metrics: Arc<CacheMetrics>,
    clock: SharedClock,
    /// Set by the invalidation listener: true while its LISTEN connection is up.
    feed_connected: AtomicBool,
    /// Serialises "check the key log, then insert into L1" against "log, then drop from L1".
    store_lock: Mutex<()>,
    /// One Redis sync at a time: a bump's reply must be matched with the marks it was sent for.
    sync_lock: tokio::sync::Mutex<()>,
    /// Wakes the background sync ([`Cache::run_redis_sync`]) when something waits for Redis.
    sync_wanted: tokio::sync::Notify,
    broadcast: OnceLock<Arc<dyn Broadcast>>,
    /// Identifies this process in broadcast payloads, to ignore its own echoes.
    instance: String,
}

/// Handle to the cache; clones share everything.
#[derive(Debug, Clone)]
pub struct Cache {
    shared: Arc<Shared>,
}

/// L1 occupancy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct L1Size {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// Redis' part as the stats and health endpoints show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct L2Status {
    pub configured: bool,
    pub breaker: Option<BreakerState>,
    /// Invalidations made while Redis was unreachable wait to be pushed to it.
    pub resync_pending: bool,
}

/// Everything `GET /api/cache/stats` reports.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CacheStats {
    pub l1_size: L1Size,
    pub l2: L2Status,
    pub invalidation_feed_connected: bool,
    pub epoch_floor: u64,
    pub tags_tracked: usize,
    pub loads_in_flight: usize,
    pub counters: MetricsSnapshot,
}

impl Cache {
    pub fn new(settings: CacheSettings, l2: Option<L2>, clock: SharedClock) -> Self {
        let metrics = Arc::new(CacheMetrics::default());
        let l1 = L1::new(settings.l1_max_bytes, metrics.clone(), clock.clone());
        let instance = format!("{:016x}", rand::random::<u64>());
        Self {
            shared: Arc::new(Shared {
                feed_connected: AtomicBool::new(!settings.invalidation_feed),
                settings,
                l1,
                l2,
                gens: Generations::default(),
                keys: KeyInvalidations::default(),
                flights: Flights::default(),
                metrics,
                clock,
                store_lock: Mutex::new(()),
                sync_lock: tokio::sync::Mutex::new(()),
                sync_wanted: tokio::sync::Notify::new(),
                broadcast: OnceLock::new(),
                instance,
            }),
        }
    }

    /// Installs the broadcaster (once; later calls are ignored).
    pub fn set_broadcast(&self, broadcast: Arc<dyn Broadcast>) {
        let _ = self.shared.broadcast.set(broadcast);
    }

    pub fn clock(&self) -> &SharedClock {
        &self.shared.clock
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.shared.settings
    }

    /// This process' identity in broadcast payloads.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Called by the invalidation listener when its connection goes up or down.
    pub fn set_feed_connected(&self, connected: bool) {
        self.shared.feed_connected.store(connected, Ordering::SeqCst);
    }

    pub fn feed_connected(&self) -> bool {
        self.shared.feed_connected.load(Ordering::SeqCst)
    }

    /// The ttl to use: the caller's, or the default; rejects zero and over a year.
    pub fn ttl(&self, ttl: Option<Duration>) -> Result<Duration, Error> {
        let ttl = ttl.unwrap_or(self.shared.settings.default_ttl);
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(Error::InvalidTtl(format!("must be between 1 and {} seconds", MAX_TTL.as_secs())));
        }
        Ok(ttl)
    }

    /// The value stored under `key`, if there is a current one.
    pub async fn get(&self, key: &str) -> Result<Option<Cached>, Error> {
        validate_key(key)?;
        Ok(self.lookup(key).await)
    }

    /// Stores `value` under `key` (as a loader's result would be).
    pub async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>, tags: &[String]) -> Result<(), Error> {
        validate_key(key)?;
        let tags = validate_tags(tags)?;
        let ttl = self.ttl(ttl)?;
        let seq = self.shared.keys.position();
        let snapshot = self.snapshot(&tags).await;
        self.store(key, value, ttl, snapshot, seq).await;
        Ok(())
    }

    /// Stores many entries (e.g. at start-up, before traffic); returns how many were stored.
    pub async fn warm(&self, entries: Vec<WarmEntry>) -> Result<usize, Error> {
        for e in &entries {
            validate_key(&e.key)?;
            validate_tags(&e.tags)?;
            self.ttl(e.ttl)?;
        }
        for e in &entries {
            self.set(&e.key, e.value.clone(), e.ttl, &e.tags).await?;
        }
        Ok(entries.len())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> CacheStats {
        let (entries, bytes, max_bytes) = self.shared.l1.size();
        self.shared.metrics.l1_size(entries, bytes);
        CacheStats {
            l1_size: L1Size { entries, bytes, max_bytes },
            l2: self.l2_status(),
            invalidation_feed_connected: self.feed_connected(),
            epoch_floor: self.shared.gens.floor(),
            tags_tracked: self.shared.gens.tag_count(),
            loads_in_flight: self.shared.flights.in_flight(),
            counters: self.shared.metrics.snapshot(),
        }
    }

    pub fn l2_status(&self) -> L2Status {
        L2Status {
            configured: self.shared.l2.is_some(),
            breaker: self.shared.l2.as_ref().map(|l2| l2.breaker().state()),
            resync_pending: self.shared.l2.is_some() && self.shared.gens.needs_resync(),
        }
    }

    /// This process' current generation of `tag` (0 if it never saw it invalidated). It rises as
    /// soon as an invalidation of the tag takes effect here, before Redis has heard of it.
    pub fn generation(&self, tag: &str) -> u64 {
        self.shared.gens.generation(tag)
    }

    /// Redis' `INFO` text (through its breaker); `None` when no L2 is configured.
    pub async fn l2_info(&self) -> Option<Result<String, L2Error>> {
        match &self.shared.l2 {
            Some(l2) => Some(l2.info().await),
            None => None,
        }
    }

    /// `PING` Redis (through its breaker); `None` when no L2 is configured.
    pub async fn ping_l2(&self) -> Option<Result<(), L2Error>> {
        match &self.shared.l2 {
            Some(l2) => Some(l2.ping().await),
            None => None,
        }
    }
}

pub(crate) fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidKey("empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!("longer than {MAX_KEY_BYTES} bytes")));
    }
    if key.chars().any(char::is_control) {
        return Err(Error::InvalidKey("contains control characters".into()));
    }
    Ok(())
}

/// Checks tags and returns them sorted and de-duplicated (the order of a generation vector).
pub(crate) fn validate_tags(tags: &[String]) -> Result<Vec<String>, Error> {
    for tag in tags {
        let reason = if tag.is_empty() {
            "empty"
        } else if tag.len() > MAX_TAG_BYTES {
            "longer than 256 bytes"
        } else if tag.starts_with('#') {
            "may not start with #"
        } else if tag.chars().any(char::is_control) {
            "contains control characters"
        } else {
            continue;
        };
        return Err(Error::InvalidTag { tag: tag.chars().take(64).collect(), reason: reason.into() });
    }
    Ok(generations::normalize_tags(tags))
}

#[cfg(test)]
mod tests;
