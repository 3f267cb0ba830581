//! Health: per-component checks folded into ok | degraded | unhealthy and a 0–100 score.
//!
//! Each component implements [`HealthCheck`]; [`HealthService`] runs them all concurrently, each
//! under a deadline. Components that measure something give a score from 0 (bad) to 100 with a
//! weight; the report's `score` is their weighted mean (`crate::monitor::health` documents each
//! component's formula). The status is the worst component status, lowered to `degraded` when
//! the score is under [`DEGRADED_BELOW`] and to `unhealthy` under [`UNHEALTHY_BELOW`].
//! Invariant: only a component without which the daemon cannot answer (Postgres) makes it
//! unhealthy by itself; losing Redis or the invalidation listener degrades it — the cache keeps
//! answering from L1 and the loaders.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::cache::Cache;
use crate::cache::invalidation::ListenerHandle;
use crate::db::Db;
use crate::resilience::{BreakerState, Breakers};

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Scores under this make the report `degraded`.
pub const DEGRADED_BELOW: f64 = 80.0;
/// Scores under this make the report `unhealthy` (503).
pub const UNHEALTHY_BELOW: f64 = 50.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentHealth {
    pub status: Status,
    /// What a person should know, in a sentence.
    pub message: String,
    /// Component-specific figures.
    #[schema(value_type = Object)]
    pub details: Value,
    /// 0 (bad) to 100 (good), for components that measure something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Share of the overall score (the weights of scored components add up to 100).
    pub weight: f64,
}

impl ComponentHealth {
    pub fn new(status: Status, message: impl Into<String>, details: Value) -> Self {
        Self { status, message: message.into(), details, score: None, weight: 0.0 }
    }

    /// This component counts for `weight` in the overall score, with `score` (0–100).
    pub fn scored(mut self, score: f64, weight: f64) -> Self {
        self.score = Some(score.clamp(0.0, 100.0));
        self.weight = weight;
        self
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthReport {
    pub status: Status,
    /// Weighted mean of the component scores, 0–100 (100 without scored components).
    pub score: f64,
    pub checked_at_ms: u64,
    pub components: BTreeMap<String, ComponentHealth>,
}

/// The weighted mean score of `components`, and the status it and they imply.
pub fn fold(components: &BTreeMap<String, ComponentHealth>) -> (Status, f64) {
    let (mut weighted, mut weights) = (0.0, 0.0);
    for c in components.values() {
        if let Some(score) = c.score {
            weighted += score * c.weight;
            weights += c.weight;
        }
    }
    let score = if weights > 0.0 { weighted / weights } else { 100.0 };
    let by_score = if score < UNHEALTHY_BELOW {
        Status::Unhealthy
    } else if score < DEGRADED_BELOW {
        Status::Degraded
    } else {
        Status::Ok
    };
    let worst = components.values().map(|c| c.status).max().unwrap_or(Status::Ok);
    (worst.max(by_score), (score * 10.0).round() / 10.0)
}

/// One component's check.
#[async_trait::async_trait]
pub trait HealthCheck: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    async fn check(&self) -> ComponentHealth;
}

#[derive(Debug, Clone)]
pub struct HealthService {
    checks: Vec<Arc<dyn HealthCheck>>,
    cache: Cache,
    /// The latest report's (status, score), for `/metrics`.
    last: Arc<std::sync::Mutex<Option<(Status, f64)>>>,
}

impl HealthService {
    pub fn new(checks: Vec<Arc<dyn HealthCheck>>, cache: Cache) -> Self {
        Self { checks, cache, last: Arc::default() }
    }

    /// The status and score of the latest report, if one was made.
    pub fn last(&self) -> Option<(Status, f64)> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn report(&self) -> HealthReport {
        let mut set = tokio::task::JoinSet::new();
        for check in &self.checks {
            let check = check.clone();
            set.spawn(async move {
                let started = Instant::now();
                let mut health = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                    Ok(h) => h,
                    Err(_) => ComponentHealth::new(
                        Status::Unhealthy,
                        format!("no answer within {CHECK_TIMEOUT:?}"),
                        Value::Null,
                    ),
                };
                if let Value::Object(map) = &mut health.details {
                    map.insert("check_ms".into(), json!(started.elapsed().as_secs_f64() * 1000.0));
                }
                (check.name(), health)
            });
        }
        let mut components = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            if let Ok((name, health)) = joined {
                components.insert(name.to_owned(), health);
            }
        }
        let (status, score) = fold(&components);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((status, score));
        HealthReport { status, score, checked_at_ms: self.cache.clock().unix_ms(), components }
    }
}

/// Postgres answers `SELECT 1`.
#[derive(Debug)]
pub struct PostgresCheck(pub Arc<Db>);

#[async_trait::async_trait]
impl HealthCheck for PostgresCheck {
    fn name(&self) -> &'static str {
        "postgres"
    }

    /// Score: 100 reachable with the extension, 50 reachable without it, 0 unreachable.
    async fn check(&self) -> ComponentHealth {
        let breaker = self.0.breaker().state();
        let details = |installed: Option<bool>| json!({ "breaker": breaker, "extension_installed": installed });
        match self.0.extension_installed().await {
            Ok(true) => ComponentHealth::new(Status::Ok, "reachable", details(Some(true))).scored(100.0, 15.0),
            Ok(false) => ComponentHealth::new(
                Status::Degraded,
                "reachable, but the voxperf extension is not installed (CREATE EXTENSION voxperf)",
                details(Some(false)),
            )
            .scored(50.0, 15.0),
            Err(e) => {
                ComponentHealth::new(Status::Unhealthy, format!("unreachable: {e}"), details(None)).scored(0.0, 15.0)
            }
        }
    }
}

/// Redis answers `PING` (or is not configured).
#[derive(Debug)]
pub struct RedisCheck(pub Cache);

#[async_trait::async_trait]
impl HealthCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> ComponentHealth {
        let status = self.0.l2_status();
        let details = json!({ "breaker": status.breaker, "resync_pending": status.resync_pending });
        match self.0.ping_l2().await {
            None => ComponentHealth::new(Status::Ok, "disabled: the cache runs on L1 only", details),
            Some(Ok(())) if status.resync_pending => ComponentHealth::new(
                Status::Degraded,
                "reachable; invalidations made while it was down are being pushed",
                details,
            ),
            Some(Ok(())) => ComponentHealth::new(Status::Ok, "reachable", details),
            Some(Err(e)) => ComponentHealth::new(
                Status::Degraded,
                format!("unreachable ({e}); serving from L1 and the database"),
                details,
            ),
        }
    }
}

/// The cache's invalidation listener and L1.
#[derive(Debug)]
pub struct CacheCheck {
    pub cache: Cache,
    pub listener: ListenerHandle,
}

#[async_trait::async_trait]
impl HealthCheck for CacheCheck {
    fn name(&self) -> &'static str {
        "cache"
    }

    async fn check(&self) -> ComponentHealth {
        let stats = self.cache.stats();
        let listener = self.listener.status();
        let details = json!({
            "l1": stats.l1_size,
            "hit_rate_l1": stats.counters.l1.hit_rate,
            "hit_rate_l2": stats.counters.l2.hit_rate,
            "listener": listener,
        });
        if listener.connected {
            ComponentHealth::new(Status::Ok, "invalidation listener connected", details)
        } else {
            ComponentHealth::new(
                Status::Degraded,
                "invalidation listener disconnected: cached table data is bypassed until it reconnects",
                details,
            )
        }
    }
}

/// Every circuit breaker closed.
#[derive(Debug)]
pub struct BreakersCheck(pub Breakers);

/// The gateway's routes file: the table in force, and whether the last reload failed.
#[derive(Debug)]
pub struct GatewayCheck(pub crate::gateway::Gateway);

#[async_trait::async_trait]
impl HealthCheck for GatewayCheck {
    fn name(&self) -> &'static str {
        "gateway"
    }

    async fn check(&self) -> ComponentHealth {
        let status = self.0.status();
        let details = json!(status);
        match &status.last_error {
            None => ComponentHealth::new(Status::Ok, format!("{} routes", status.routes), details).scored(100.0, 5.0),
            Some(e) => ComponentHealth::new(
                Status::Degraded,
                format!("last reload failed, previous routes in force: {e}"),
                details,
            )
            .scored(50.0, 5.0),
        }
    }
}

#[async_trait::async_trait]
impl HealthCheck for BreakersCheck {
    fn name(&self) -> &'static str {
        "breakers"
    }

    async fn check(&self) -> ComponentHealth {
        let states: BTreeMap<String, BreakerState> =
            self.0.all().iter().map(|b| (b.name().to_owned(), b.state())).collect();
        let open: Vec<&str> = states
            .iter()
            .filter(|(_, s)| matches!(s, BreakerState::Open | BreakerState::HalfOpen))
            .map(|(n, _)| n.as_str())
            .collect();
        let details = json!(states);
        // Score: the share of breakers letting calls through normally.
        let score = 100.0 * (states.len() - open.len()) as f64 / states.len().max(1) as f64;
        if open.is_empty() {
            ComponentHealth::new(Status::Ok, "all closed", details).scored(score, 10.0)
        } else {
            ComponentHealth::new(Status::Degraded, format!("open: {}", open.join(", ")), details).scored(score, 10.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheSettings;
    use crate::clock::ManualClock;

    #[derive(Debug)]
    struct Fixed(&'static str, Status);

    #[async_trait::async_trait]
    impl HealthCheck for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn check(&self) -> ComponentHealth {
            ComponentHealth::new(self.1, "fixed", json!({}))
        }
    }

    fn service(checks: Vec<Arc<dyn HealthCheck>>) -> HealthService {
        let cache = Cache::new(
            CacheSettings {
                default_ttl: Duration::from_secs(1),
                l1_max_bytes: 1024,
                compression_threshold: 1024,
                invalidation_feed: false,
            },
            None,
            Arc::new(ManualClock::new()),
        );
        HealthService::new(checks, cache)
    }

    #[tokio::test]
    async fn the_worst_component_decides_the_overall_status() {
        let ok = service(vec![Arc::new(Fixed("a", Status::Ok)), Arc::new(Fixed("b", Status::Ok))]);
        assert_eq!(ok.report().await.status, Status::Ok);
        let degraded = service(vec![Arc::new(Fixed("a", Status::Ok)), Arc::new(Fixed("redis", Status::Degraded))]);
        let report = degraded.report().await;
        assert_eq!(report.status, Status::Degraded);
        assert_eq!(report.components["redis"].status, Status::Degraded);
        let down =
            service(vec![Arc::new(Fixed("redis", Status::Degraded)), Arc::new(Fixed("postgres", Status::Unhealthy))]);
        assert_eq!(down.report().await.status, Status::Unhealthy);
    }

    fn scored(status: Status, score: f64, weight: f64) -> ComponentHealth {
        ComponentHealth::new(status, "", json!({})).scored(score, weight)
    }

    #[test]
    fn the_score_is_the_weighted_mean_and_a_low_score_lowers_the_status() {
        let mut c = BTreeMap::new();
        c.insert("latency".to_owned(), scored(Status::Ok, 100.0, 25.0));
        c.insert("errors".to_owned(), scored(Status::Ok, 100.0, 25.0));
        c.insert("info".to_owned(), ComponentHealth::new(Status::Ok, "", json!({})));
        assert_eq!(fold(&c), (Status::Ok, 100.0));
        c.insert("errors".to_owned(), scored(Status::Ok, 40.0, 25.0));
        assert_eq!(fold(&c), (Status::Degraded, 70.0));
        c.insert("latency".to_owned(), scored(Status::Ok, 0.0, 25.0));
        assert_eq!(fold(&c), (Status::Unhealthy, 20.0));
        assert_eq!(fold(&BTreeMap::new()), (Status::Ok, 100.0));
    }
}

/// `GET /readyz`: can this daemon serve? Postgres reachable with the extension installed; Redis
/// is reported but optional.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub postgres: String,
    pub extension_installed: bool,
    pub redis: String,
}

pub async fn readiness(db: &Db, cache: &Cache) -> Readiness {
    let (postgres, extension_installed) = match db.extension_installed().await {
        Ok(installed) => ("ok".to_owned(), installed),
        Err(e) => (format!("unreachable: {e}"), false),
    };
    let redis = match cache.ping_l2().await {
        None => "disabled".to_owned(),
        Some(Ok(())) => "ok".to_owned(),
        Some(Err(e)) => format!("unreachable ({e}); not required"),
    };
    Readiness { ready: postgres == "ok" && extension_installed, postgres, extension_installed, redis }
}
