//! The application state: every service, built once from the configuration.
//!
//! `AppState` is cloned per request (axum's rule), so it is a bundle of `Arc`s and cheap handles.
//! Building it does no I/O — the pool and Redis connect on first use — so tests can build one
//! without services running. Background work (the invalidation listener, the cache's Redis sync)
//! starts only in [`AppState::start`], which `run` calls and tests call when they need it.
//! Invariant: at most one listener per state, and the cache is told it is coherent only by that
//! listener; the monitor's collection loop starts with it, once.

use std::sync::{Arc, Mutex};

use axum::extract::FromRef;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cache::invalidation::{InvalidationListener, ListenerHandle};
use crate::cache::{Cache, CacheSettings, L2, L2Error};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::db::{self, Db, PgBroadcast};
use crate::gateway::Gateway;
use crate::gateway::routes::RoutesError;
use crate::monitor::Monitor;
use crate::monitor::health::{Component, MonitorCheck};
use crate::resilience::Breakers;
use crate::services::advisor::Advisor;
use crate::services::health::{
    BreakersCheck, CacheCheck, GatewayCheck, HealthCheck, HealthService, PostgresCheck, RedisCheck,
};
use crate::services::optimize::Optimizer;
use crate::services::query_cache::{PgQueryBackend, QueryCacheService};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("redis: {0}")]
    Redis(#[from] L2Error),
    #[error("gateway routes (VOXPERF_ROUTES): {0}")]
    Routes(#[from] RoutesError),
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub cache: Cache,
    pub db: Arc<Db>,
    pub breakers: Breakers,
    pub queries: Arc<QueryCacheService>,
    pub health: Arc<HealthService>,
    pub monitor: Monitor,
    pub advisor: Advisor,
    pub optimizer: Optimizer,
    pub listener: ListenerHandle,
    /// The gateway in front of the application; `None` without `VOXPERF_UPSTREAM` / `VOXPERF_ROUTES`.
    pub gateway: Option<Gateway>,
    pending_listener: Arc<Mutex<Option<InvalidationListener>>>,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// Builds the state with the given clock (tests pass a `ManualClock`).
    pub fn with_clock(config: Config, clock: SharedClock) -> Result<Self, Error> {
        let breakers = Breakers::new(&config.breaker, &clock);
        let l2 = if config.redis.enabled { Some(L2::new(&config.redis, breakers.redis.clone())?) } else { None };
        let cache = Cache::new(
            CacheSettings {
                default_ttl: config.cache.default_ttl,
                l1_max_bytes: config.cache.l1_max_bytes,
                compression_threshold: config.cache.compression_threshold,
                invalidation_feed: true,
            },
            l2,
            clock.clone(),
        );
        let db = Arc::new(Db::new(&config.database_url, config.db_pool_size, breakers.postgres.clone())?);
        cache.set_broadcast(Arc::new(PgBroadcast { db: db.clone(), channel: config.cache.notify_channel.clone() }));
        let queries = Arc::new(QueryCacheService::new(
            cache.clone(),
            Arc::new(PgQueryBackend {
                db: db.clone(),
                row_limit: config.query.row_limit,
                statement_timeout: config.query.statement_timeout,
            }),
        ));
        // Before the monitor: its breaker alerts are made for the breakers that exist then.
        let gateway = if config.gateway.enabled() {
            Some(Gateway::new(&config.gateway, &config.breaker, cache.clone(), breakers.clone())?)
        } else {
            None
        };
        let listener =
            InvalidationListener::new(config.database_url.clone(), config.cache.notify_channel.clone(), cache.clone());
        let handle = listener.handle();
        let monitor =
            Monitor::new(config.monitoring.clone(), clock.clone(), db.clone(), cache.clone(), breakers.clone());
        let mut checks: Vec<Arc<dyn HealthCheck>> = vec![
            Arc::new(PostgresCheck(db.clone())),
            Arc::new(RedisCheck(cache.clone())),
            Arc::new(CacheCheck { cache: cache.clone(), listener: handle.clone() }),
            Arc::new(BreakersCheck(breakers.clone())),
        ];
        if let Some(gateway) = &gateway {
            checks.push(Arc::new(GatewayCheck(gateway.clone())));
        }
        for component in Component::ALL {
            checks.push(Arc::new(MonitorCheck { monitor: monitor.clone(), component }));
        }
        let advisor = Advisor {
            db: db.clone(),
            cache: cache.clone(),
            ttl: config.query.index_suggestions_ttl,
            migrations_dir: config.query.migrations_dir.clone(),
        };
        let optimizer = Optimizer {
            advisor: advisor.clone(),
            cache: cache.clone(),
            queries: queries.clone(),
            warm_file: config.cache.warm_file.clone(),
        };
        Ok(Self {
            health: Arc::new(HealthService::new(checks, cache.clone())),
            monitor,
            advisor,
            optimizer,
            config: Arc::new(config),
            clock,
            cache,
            db,
            breakers,
            queries,
            listener: handle,
            gateway,
            pending_listener: Arc::new(Mutex::new(Some(listener))),
        })
    }

    /// Starts the background tasks (once); they stop when `shutdown` is cancelled.
    pub fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let listener = self.pending_listener.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(listener) = listener else { return Vec::new() };
        let mut tasks = vec![
            tokio::spawn(self.cache.clone().run_redis_sync(shutdown.clone())),
            tokio::spawn(listener.run(shutdown.clone())),
        ];
        if let Some(gateway) = &self.gateway
            && gateway.status().file.is_some()
        {
            tasks.push(tokio::spawn(gateway.clone().reload_on_sighup(shutdown.clone())));
        }
        tasks.extend(self.monitor.start(shutdown));
        tasks
    }
}

impl FromRef<AppState> for Cache {
    fn from_ref(state: &AppState) -> Self {
        state.cache.clone()
    }
}

impl FromRef<AppState> for Arc<QueryCacheService> {
    fn from_ref(state: &AppState) -> Self {
        state.queries.clone()
    }
}

impl FromRef<AppState> for Arc<HealthService> {
    fn from_ref(state: &AppState) -> Self {
        state.health.clone()
    }
}

impl FromRef<AppState> for Monitor {
    fn from_ref(state: &AppState) -> Self {
        state.monitor.clone()
    }
}

impl FromRef<AppState> for Breakers {
    fn from_ref(state: &AppState) -> Self {
        state.breakers.clone()
    }
}
