//! The performance monitor: request metrics, collectors, custom metrics, trends and alerts.
//!
//! [`Monitor`] is a cheap-to-clone handle. The HTTP middleware records every request into
//! [`requests`]; every `METRICS_INTERVAL` [`Monitor::collect`] reads every source ([`collect`]),
//! records the figures as trends ([`trends`]), evaluates the alert rules ([`alerts`]) and keeps
//! the readings for the stats endpoints, which never wait on a database. Time comes from the
//! injected clock: tests call `collect` themselves and move a `ManualClock`.
//!
//! Invariant: a collection is the only writer of trends from built-in sources and of alert
//! states, and collections never overlap (they hold the collectors' lock).

pub mod alerts;
pub mod collect;
pub mod custom;
pub mod health;
pub mod histogram;
pub mod prometheus;
pub mod report;
pub mod requests;
pub mod trends;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::alerts::sinks::{AlertSink, Dispatcher, LogSink, WebhookSettings, WebhookSink};
use self::alerts::{AlertEngine, Comparison, Notification, RuleSpec, Severity, Timing};
use self::collect::{Collectors, Readings};
use self::custom::CustomMetrics;
use self::requests::RequestMetrics;
use self::trends::{TrendStore, Trends};
use crate::cache::Cache;
use crate::clock::SharedClock;
use crate::config::MonitoringConfig;
use crate::db::Db;
use crate::resilience::{Breaker, BreakerSettings, BreakerState, Breakers};

/// Lookups an interval needs before its cache hit rate is judged by the alert rule.
pub const MIN_CACHE_LOOKUPS: u64 = 20;
/// The window of the slow-query burst rule.
pub const SLOW_QUERY_WINDOW_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Custom(#[from] custom::Error),
    #[error(transparent)]
    Trends(#[from] trends::Error),
}

type PendingDelivery = (Vec<Arc<dyn AlertSink>>, tokio::sync::mpsc::Receiver<Notification>);

#[derive(Debug)]
struct Inner {
    config: MonitoringConfig,
    clock: SharedClock,
    started_ms: u64,
    requests: Arc<RequestMetrics>,
    custom: CustomMetrics,
    trends: Trends,
    store: TrendStore,
    alerts: Mutex<AlertEngine>,
    latest: RwLock<Option<Arc<Readings>>>,
    collectors: tokio::sync::Mutex<Collectors>,
    breakers: Breakers,
    breaker_transitions: Mutex<HashMap<String, u64>>,
    /// (at, new slow queries) of the collections inside the burst window.
    slow_window: Mutex<VecDeque<(u64, i64)>>,
    dispatcher: Dispatcher,
    /// Taken by `start`: the sinks and the queue's receiving end.
    sinks: Mutex<Option<PendingDelivery>>,
}

#[derive(Debug, Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

/// The alert rules the configuration asks for.
pub fn rules(config: &MonitoringConfig, breakers: &Breakers) -> Vec<RuleSpec> {
    let timing =
        Timing { for_ms: config.alert_pending.as_millis() as u64, resolve_ms: config.alert_resolve.as_millis() as u64 };
    let mut rules = vec![
        RuleSpec::new(
            "high_response_time",
            "HTTP p95 response time is high",
            Severity::Warning,
            Comparison::Above,
            config.alert_response_time.as_secs_f64() * 1000.0,
            "ms",
            "ALERT_RESPONSE_TIME_THRESHOLD",
            timing,
        ),
        RuleSpec::new(
            "high_error_rate",
            "HTTP error rate is high",
            Severity::Critical,
            Comparison::Above,
            config.alert_error_rate_percent,
            "%",
            "ALERT_ERROR_RATE_THRESHOLD",
            timing,
        ),
        RuleSpec::new(
            "high_cpu",
            "CPU use is high",
            Severity::Warning,
            Comparison::Above,
            config.alert_cpu_percent,
            "%",
            "ALERT_CPU_THRESHOLD",
            timing,
        ),
        RuleSpec::new(
            "high_memory",
            "Memory use is high",
            Severity::Warning,
            Comparison::Above,
            config.alert_memory_percent,
            "%",
            "ALERT_MEMORY_THRESHOLD",
            timing,
        ),
        RuleSpec::new(
            "low_cache_hit_rate",
            "Cache hit rate is low",
            Severity::Warning,
            Comparison::Below,
            config.alert_cache_hit_rate_percent,
            "%",
            "ALERT_CACHE_HIT_RATE_THRESHOLD",
            timing,
        ),
    ];
    if config.alert_slow_query_burst > 0 {
        rules.push(RuleSpec::new(
            "slow_query_burst",
            "Burst of slow queries",
            Severity::Warning,
            Comparison::AtLeast,
            config.alert_slow_query_burst as f64,
            "queries/min",
            "ALERT_SLOW_QUERY_BURST",
            timing,
        ));
    }
    // A breaker has its own hysteresis (failure window, recovery timeout): its alert follows it
    // at once, and a change between two collections still fires and resolves.
    let immediate = Timing { for_ms: 0, resolve_ms: 0 };
    for b in breakers.all() {
        rules.push(RuleSpec::new(
            format!("circuit_breaker_open:{}", b.name()),
            format!("Circuit breaker {} is open or changed state", b.name()),
            Severity::Critical,
            Comparison::AtLeast,
            1.0,
            "",
            "CIRCUIT_BREAKER_*",
            immediate,
        ));
    }
    rules
}

impl Monitor {
    pub fn new(config: MonitoringConfig, clock: SharedClock, db: Arc<Db>, cache: Cache, breakers: Breakers) -> Self {
        let requests = Arc::new(RequestMetrics::new(config.alert_response_time, config.slow_request_log_size));
        let (dispatcher, rx) = Dispatcher::channel();
        let mut sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(LogSink)];
        if let Some(url) = &config.webhook_url {
            let settings = WebhookSettings {
                url: url.clone(),
                timeout: config.webhook_timeout,
                retries: config.webhook_retries,
                backoff: std::time::Duration::from_millis(500),
                instance: config.instance.clone(),
            };
            let breaker = Breaker::new("alert_webhook", BreakerSettings::default(), clock.clone());
            sinks.push(Arc::new(WebhookSink::new(settings, breaker)));
        }
        let inner = Inner {
            started_ms: clock.unix_ms(),
            alerts: Mutex::new(AlertEngine::new(rules(&config, &breakers))),
            store: TrendStore::new(db.clone(), config.instance.clone()),
            collectors: tokio::sync::Mutex::new(Collectors::new(db, cache, requests.clone())),
            requests,
            custom: CustomMetrics::default(),
            trends: Trends::default(),
            latest: RwLock::new(None),
            breakers,
            breaker_transitions: Mutex::default(),
            slow_window: Mutex::default(),
            dispatcher,
            sinks: Mutex::new(Some((sinks, rx))),
            config,
            clock,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Replaces the alert sinks (before [`start`](Self::start); tests use it with a short backoff).
    pub fn set_sinks(&self, sinks: Vec<Arc<dyn AlertSink>>) {
        if let Some((current, _)) = self.inner.sinks.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *current = sinks;
        }
    }

    pub fn config(&self) -> &MonitoringConfig {
        &self.inner.config
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    pub fn started_ms(&self) -> u64 {
        self.inner.started_ms
    }

    pub fn requests(&self) -> &Arc<RequestMetrics> {
        &self.inner.requests
    }

    pub fn trends(&self) -> &Trends {
        &self.inner.trends
    }

    pub fn custom(&self) -> &CustomMetrics {
        &self.inner.custom
    }

    pub fn breakers(&self) -> &Breakers {
        &self.inner.breakers
    }

    pub fn instance(&self) -> &str {
        self.inner.store.instance()
    }

    /// The newest collection's readings.
    pub fn latest(&self) -> Option<Arc<Readings>> {
        self.inner.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn with_alerts<T>(&self, f: impl FnOnce(&AlertEngine) -> T) -> T {
        f(&self.inner.alerts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The seed's `recordMetric(name, value, unit, tags)`.
    pub fn record_metric(
        &self,
        name: &str,
        value: f64,
        unit: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        custom::validate(name, value, unit, &tags)?;
        let at = self.inner.clock.unix_ms();
        self.inner.trends.record_custom(name, unit, at, value)?;
        self.inner.custom.record(name, value, unit, tags, at)?;
        Ok(())
    }

    /// The seed's `measureAsync(name, fn)`: runs `future`, records its duration in ms under
    /// `name`, and returns its output (the duration is recorded whatever the output is).
    pub async fn measure_async<T>(&self, name: &str, future: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let output = future.await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(e) = self.record_metric(name, ms, "ms", BTreeMap::new()) {
            tracing::warn!(metric = name, error = %e, "measured duration not recorded");
        }
        output
    }

    /// Forgets request metrics, the slow-request log and custom metrics (trends and alerts stay:
    /// they are history).
    pub fn reset(&self) {
        self.inner.requests.reset();
        self.inner.custom.reset();
    }

    /// One collection: read every source, record trends, evaluate alerts.
    pub async fn collect(&self) -> Arc<Readings> {
        let mut collectors = self.inner.collectors.lock().await;
        let now = self.inner.clock.unix_ms();
        let readings = Arc::new(collectors.collect(now).await);
        self.record_trends(&readings);
        let observations = self.observations(&readings);
        let notifications = self.inner.alerts.lock().unwrap_or_else(|e| e.into_inner()).evaluate(now, &observations);
        for n in notifications {
            self.inner.dispatcher.send(n);
        }
        *self.inner.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(readings.clone());
        readings
    }

    fn record_trends(&self, r: &Readings) {
        let t = &self.inner.trends;
        let at = r.at_ms;
        let put = |name: &str, value: Option<f64>| {
            if let Some(v) = value {
                t.record(name, at, v);
            }
        };
        if r.interval_ms > 0 {
            put("http.requests_per_second", Some(r.http.requests_per_second));
        }
        put("http.error_rate", r.http.error_rate_percent);
        put("http.latency_p50", r.http.latency.map(|l| l.p50_ms));
        put("http.latency_p95", r.http.latency.map(|l| l.p95_ms));
        put("http.latency_p99", r.http.latency.map(|l| l.p99_ms));
        put("cache.hit_rate", r.cache.hit_rate_percent);
        if let Some(s) = &r.system {
            put("system.cpu", Some(s.cpu_percent));
            put("system.memory", Some(s.memory_percent));
            put("system.disk", Some(s.disk_percent));
        }
        if let Some(p) = &r.process {
            put("process.cpu", Some(p.cpu_percent));
            put("process.memory", Some(p.resident_bytes as f64));
        }
        if let Some(x) = &r.redis {
            put("redis.memory", Some(x.used_memory_bytes as f64));
            put("redis.hit_rate", x.hit_rate_percent);
            put("redis.clients", Some(x.connected_clients as f64));
        }
        if let Some(p) = &r.postgres {
            put("db.connections", Some(p.connections as f64));
            put("db.buffer_hit_rate", p.buffer_hit_rate_percent);
            if r.interval_ms > 0 {
                put("db.transactions_per_second", Some(p.transactions_per_second));
                put("db.deadlocks", Some(p.deadlocks as f64));
            }
        }
        if let Some(e) = &r.extension {
            if r.interval_ms > 0 {
                put("db.queries_per_second", Some(e.queries_per_second));
            }
            put("db.query_mean", e.mean_ms);
            put("db.query_p95", e.p95_ms);
            put("db.slow_queries", Some(e.new_slow_queries as f64));
        }
    }

    fn observations(&self, r: &Readings) -> HashMap<String, Option<f64>> {
        let mut o = HashMap::new();
        o.insert("high_response_time".to_owned(), r.http.latency.map(|l| l.p95_ms));
        o.insert("high_error_rate".to_owned(), r.http.error_rate_percent);
        o.insert("high_cpu".to_owned(), r.system.as_ref().map(|s| s.cpu_percent));
        o.insert("high_memory".to_owned(), r.system.as_ref().map(|s| s.memory_percent));
        let judged = r.cache.lookups >= MIN_CACHE_LOOKUPS;
        o.insert("low_cache_hit_rate".to_owned(), r.cache.hit_rate_percent.filter(|_| judged));
        let burst = r.extension.as_ref().map(|e| {
            let mut window = self.inner.slow_window.lock().unwrap_or_else(|e| e.into_inner());
            window.push_back((r.at_ms, e.new_slow_queries));
            while window.front().is_some_and(|(at, _)| *at + SLOW_QUERY_WINDOW_MS <= r.at_ms) {
                window.pop_front();
            }
            window.iter().map(|(_, n)| *n).sum::<i64>() as f64
        });
        o.insert("slow_query_burst".to_owned(), burst);
        let mut seen = self.inner.breaker_transitions.lock().unwrap_or_else(|e| e.into_inner());
        for b in self.inner.breakers.all() {
            let snapshot = b.snapshot();
            let before = seen.insert(b.name().to_owned(), snapshot.breaker.transitions);
            let changed = before.is_some_and(|t| t != snapshot.breaker.transitions);
            let open = matches!(snapshot.breaker.state, BreakerState::Open | BreakerState::HalfOpen);
            o.insert(format!("circuit_breaker_open:{}", b.name()), Some(if open || changed { 1.0 } else { 0.0 }));
        }
        o
    }

    /// Loads the trend history, then collects every `METRICS_INTERVAL` and flushes trends, until
    /// `shutdown`; flushes once more on the way out. Alert delivery runs beside it.
    pub fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some((sinks, rx)) = self.inner.sinks.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tasks.push(Dispatcher::spawn(sinks, rx, shutdown.clone()));
        }
        tasks.push(tokio::spawn(prometheus::upkeep(shutdown.clone())));
        if !self.inner.config.enabled {
            return tasks;
        }
        let monitor = self.clone();
        tasks.push(tokio::spawn(async move { monitor.run(shutdown).await }));
        tasks
    }

    /// Reads back the trend history kept in Postgres (once, before the first collection).
    pub async fn load_trends(&self) -> Result<usize, crate::db::Error> {
        self.inner.trends.load(&self.inner.store, self.inner.clock.unix_ms()).await
    }

    /// Writes the trend buckets changed since the last flush.
    pub async fn flush_trends(&self) -> Result<usize, crate::db::Error> {
        self.inner.trends.flush(&self.inner.store).await
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut loaded = false;
        let mut interval = tokio::time::interval(self.inner.config.metrics_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.cancelled() => break,
            }
            if !loaded {
                match self.load_trends().await {
                    Ok(n) => {
                        loaded = true;
                        tracing::info!(buckets = n, instance = self.instance(), "trend history loaded");
                    }
                    // Without the history, new buckets would overwrite the stored ones: wait.
                    Err(e) => tracing::warn!(error = %e, "trend history not loaded yet; will retry"),
                }
            }
            self.collect().await;
            if loaded {
                match self.flush_trends().await {
                    Ok(n) => tracing::debug!(buckets = n, "trends saved"),
                    Err(e) => tracing::warn!(error = %e, "trends not saved; will retry"),
                }
            }
        }
        if loaded {
            match self.flush_trends().await {
                Ok(n) => tracing::info!(buckets = n, "trends saved at shutdown"),
                Err(e) => tracing::warn!(error = %e, "trends not saved at shutdown"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheSettings;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::monitor::collect::ExtensionReading;

    fn monitor() -> Monitor {
        monitor_with_clock().0
    }

    fn monitor_with_clock() -> (Monitor, Arc<ManualClock>) {
        let manual = Arc::new(ManualClock::new());
        let config = Config::from_vars([
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("ALERT_SLOW_QUERY_BURST", "5"),
        ])
        .unwrap();
        let clock: SharedClock = manual.clone();
        let breakers = Breakers::new(&config.breaker, &clock);
        let db = Arc::new(Db::new(&config.database_url, 1, breakers.postgres.clone()).unwrap());
        let settings = CacheSettings {
            default_ttl: std::time::Duration::from_secs(1),
            l1_max_bytes: 1024,
            compression_threshold: 1024,
            invalidation_feed: false,
        };
        let cache = Cache::new(settings, None, clock.clone());
        (Monitor::new(config.monitoring, clock, db, cache, breakers), manual)
    }

    fn slow(at_ms: u64, new_slow_queries: i64) -> Readings {
        Readings {
            at_ms,
            extension: Some(ExtensionReading {
                statements: 1,
                calls: 0,
                calls_total: 0,
                exec_time_total_ms: 0.0,
                queries_per_second: 0.0,
                mean_ms: None,
                p95_ms: None,
                new_slow_queries,
            }),
            ..Readings::default()
        }
    }

    #[test]
    fn the_slow_query_burst_counts_the_new_slow_queries_of_the_last_minute() {
        let m = monitor();
        let burst = |r: &Readings| m.observations(r)["slow_query_burst"];
        assert_eq!(burst(&slow(0, 2)), Some(2.0));
        assert_eq!(burst(&slow(30_000, 3)), Some(5.0), "within the minute: added up");
        assert_eq!(burst(&slow(60_000, 0)), Some(3.0), "the first collection left the window");
        assert_eq!(burst(&Readings { at_ms: 70_000, ..Readings::default() }), None, "no extension, no data");
        let rule = rules(m.config(), m.breakers()).into_iter().find(|r| r.id == "slow_query_burst").unwrap();
        assert!(rule.comparison.breached(5.0, rule.threshold), "ALERT_SLOW_QUERY_BURST=5 fires at 5");
    }

    #[tokio::test]
    async fn a_breaker_that_opened_and_closed_between_collections_still_counts_as_a_change() {
        let (m, clock) = monitor_with_clock();
        let seen = |r: &Readings| m.observations(r)["circuit_breaker_open:redis"];
        assert_eq!(seen(&Readings::default()), Some(0.0));
        let redis = m.breakers().redis.clone();
        for _ in 0..5 {
            let _ = redis.call(async { Err::<(), _>("down") }).await;
        }
        assert_eq!(seen(&Readings::default()), Some(1.0), "open");
        clock.advance(std::time::Duration::from_secs(120));
        for _ in 0..3 {
            let _ = redis.call(async { Ok::<_, ()>(()) }).await;
        }
        assert_eq!(redis.state(), BreakerState::Closed);
        assert_eq!(seen(&Readings::default()), Some(1.0), "closed again, but it changed since");
        assert_eq!(seen(&Readings::default()), Some(0.0));
    }
}
