//! The gateway: voxperfd in front of the application, so that the seed's middleware, caching
//! strategies, endpoint monitoring and breakers act on the application's own traffic.
//!
//! Every request that is not for voxperfd's own API reaches [`Gateway::handle`]: it finds the
//! route of the routes file ([`routes`]), answers from the two-level cache when the route caches
//! and the answer is there ([`stored`]), else forwards to the route's upstream through that
//! upstream's circuit breaker ([`proxy`]). Stored answers carry the route's tags and the
//! upstream's own `Cache-Tag` / `Surrogate-Key`, so a committed write to a watched table drops
//! them within the NOTIFY delay — the one thing a proxy that cannot hear the database cannot do.
//!
//! Invariants: a request sees one route table from start to end (a reload swaps in a whole new
//! one); metrics carry the route's pattern, never the raw path; an upstream failure is a JSON
//! 502/503/504 (or, within `stale_if_error`, the last good copy marked stale), never a hang.

pub mod proxy;
pub mod routes;
pub mod stored;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde::Serialize;
use utoipa::ToSchema;

use self::proxy::{Forwarded, Peer, ProxyError, UpstreamClient};
use self::routes::{Route, RouteTable, RoutesError, Upstream};
use self::stored::Served;
use crate::cache::{Cache, LoadError};
use crate::config::GatewayConfig;
use crate::http::error::AppError;
use crate::http::middleware::timing::SERVER_TIMING;
use crate::resilience::{Breaker, BreakerSettings, Breakers, CallError};

/// Bytes of last good copies kept for `stale_if_error` (in this process only).
const STALE_COPIES_MAX_BYTES: u64 = 64 << 20;
/// Longest a last good copy is kept at all, whatever a route's window says.
const STALE_COPIES_MAX_AGE: Duration = Duration::from_secs(86_400);

/// The route a proxied request took, in its response's extensions: the request-metrics layer
/// labels the request with it (there is no `MatchedPath` for the gateway's paths).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Arc<str>);

/// In a response's extensions: the route turned compression off.
#[derive(Debug, Clone, Copy)]
pub struct NoCompression;

/// A table and the breakers of its upstreams (same order).
#[derive(Debug)]
struct Loaded {
    table: RouteTable,
    breakers: Vec<Breaker>,
    labels: Vec<Arc<str>>,
    unrouted_label: Arc<str>,
}

/// What the last load of the routes file said.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadStatus {
    /// The routes file, when one is configured.
    pub file: Option<String>,
    pub routes: usize,
    pub upstreams: Vec<String>,
    /// Unix ms of the table in force.
    pub loaded_at_ms: u64,
    /// The error of the last reload, if it failed (the previous table stays in force).
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    config: GatewayConfig,
    breaker_defaults: BreakerSettings,
    loaded: RwLock<Arc<Loaded>>,
    status: Mutex<ReloadStatus>,
    client: UpstreamClient,
    cache: Cache,
    breakers: Breakers,
    /// Last good copies by cache key, for `stale_if_error`: `(encoded answer, stored at ms)`.
    stale: moka::sync::Cache<String, (Bytes, u64)>,
}

/// Handle to the gateway; clones share everything.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// Why a cached route's load did not give a storable answer.
enum Failure {
    /// A complete answer that may not be stored (passed on as it is).
    Uncacheable(Response, &'static str),
    /// The upstream answered 5xx: passed on, unless a stale copy may stand in.
    ServerError(Response),
    Proxy(ProxyError),
}

impl Gateway {
    /// Loads the routes file (if any) and registers a breaker per upstream.
    pub fn new(
        config: &GatewayConfig,
        breaker_defaults: &BreakerSettings,
        cache: Cache,
        breakers: Breakers,
    ) -> Result<Self, RoutesError> {
        let table = load_table(config, breaker_defaults)?;
        let loaded = Arc::new(make_loaded(table, &breakers));
        let status = status_of(config, &loaded, cache.clock().unix_ms(), None);
        let stale = moka::sync::Cache::builder()
            .max_capacity(STALE_COPIES_MAX_BYTES)
            .weigher(|k: &String, v: &(Bytes, u64)| u32::try_from(k.len() + v.0.len()).unwrap_or(u32::MAX))
            .time_to_live(STALE_COPIES_MAX_AGE)
            .build();
        Ok(Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                breaker_defaults: breaker_defaults.clone(),
                loaded: RwLock::new(loaded),
                status: Mutex::new(status),
                client: UpstreamClient::default(),
                cache,
                breakers,
                stale,
            }),
        })
    }

    /// The router every path that is not the daemon's own goes to.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    fn current(&self) -> Arc<Loaded> {
        self.shared.loaded.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the routes file again; on error the table in force stays and the error is kept
    /// for health and logged.
    pub fn reload(&self) -> Result<(), RoutesError> {
        let s = &self.shared;
        let now = s.cache.clock().unix_ms();
        match load_table(&s.config, &s.breaker_defaults) {
            Ok(table) => {
                let loaded = Arc::new(make_loaded(table, &s.breakers));
                *s.status.lock().unwrap_or_else(|e| e.into_inner()) = status_of(&s.config, &loaded, now, None);
                tracing::info!("gateway routes reloaded:\n{}", loaded.table);
                *s.loaded.write().unwrap_or_else(|e| e.into_inner()) = loaded;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "gateway routes not reloaded; the previous routes stay in force");
                s.status.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    pub fn status(&self) -> ReloadStatus {
        self.shared.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The route table in force, as text (start-up log, `--check-config`).
    pub fn describe(&self) -> String {
        self.current().table.to_string()
    }

    /// Reloads on every SIGHUP until `shutdown`.
    pub async fn reload_on_sighup(self, shutdown: tokio_util::sync::CancellationToken) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGHUP; routes reload disabled: {e}");
                    return;
                }
            };
            loop {
                tokio::select! {
                    got = hup.recv() => {
                        if got.is_none() { return; }
                        let _ = self.reload();
                    }
                    () = shutdown.cancelled() => return,
                }
            }
        }
        #[cfg(not(unix))]
        shutdown.cancelled().await;
    }

    async fn respond(&self, loaded: &Loaded, index: Option<usize>, request: Request) -> Response {
        let route = index.map_or(&loaded.table.unrouted, |i| &loaded.table.routes()[i]);
        if proxy::is_upgrade(&request) {
            return AppError::new(
                StatusCode::NOT_IMPLEMENTED,
                "upgrade_not_supported",
                "the gateway does not pass protocol upgrades (WebSocket) through; connect to the application directly",
            )
            .into_response();
        }
        let (Some(upstream), Some(breaker)) = (loaded.table.upstream(route), loaded.breakers.get(route.upstream))
        else {
            return ProxyError::NoUpstream.into_response();
        };
        let method = request.method().clone();
        if let Some(policy) = route.cache
            && (method == Method::GET || method == Method::HEAD)
            && !stored::bypass_requested(request.headers())
            && let Some(key) = stored::key(route, policy.strategy, &request)
        {
            return self.cached(route, upstream, breaker, key, request).await;
        }
        let path = request.uri().path().to_owned();
        let peer = peer_of(&request);
        count(&route.pattern, "pass");
        let response = match self.forward(upstream, breaker, route, request, peer).await {
            Ok(f) => timed(f.response, f.upstream_time, None),
            Err(e) => e.into_response(),
        };
        let unsafe_method = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
        if unsafe_method
            && route.cache.is_some()
            && (response.status().is_success() || response.status().is_redirection())
            && let Err(e) = self.shared.cache.invalidate_pattern(&stored::path_pattern(&path)).await
        {
            tracing::warn!(error = %e, path, "could not invalidate the cached answers of a written path");
        }
        response
    }

    async fn forward(
        &self,
        upstream: &Upstream,
        breaker: &Breaker,
        route: &Route,
        request: Request,
        peer: Peer,
    ) -> Result<Forwarded, ProxyError> {
        let request = proxy::rewrite_request(upstream, request, peer, route.body_limit)?;
        let sent = self.shared.client.send(upstream, request, route.timeout);
        let result = breaker
            .call_judged(sent, |r| match r {
                Ok(f) => f.response.status().is_server_error(),
                Err(e) => e.is_upstream_failure(),
            })
            .await;
        match result {
            Ok(f) => {
                metrics::histogram!("voxperf_gateway_upstream_duration_seconds", "route" => route.pattern.clone())
                    .record(f.upstream_time.as_secs_f64());
                Ok(f)
            }
            Err(CallError::Inner(e)) => Err(e),
            Err(CallError::Open { retry_after_ms, .. }) => {
                Err(ProxyError::Open { upstream: upstream.name.clone(), retry_after_ms })
            }
        }
    }

    async fn cached(
        &self,
        route: &Route,
        upstream: &Upstream,
        breaker: &Breaker,
        key: String,
        request: Request,
    ) -> Response {
        let policy = route.cache.expect("a cached route has a policy");
        let strategy = policy.strategy;
        let kept = strategy.ttl() + policy.stale_while_revalidate;
        let template = Template::of(&request);
        let (method, headers) = (request.method().clone(), request.headers().clone());
        drop(request);
        let started = Instant::now();
        // The loader's upstream time, for `Server-Timing` on a miss (0: no upstream request).
        let upstream_us = AtomicU64::new(0);
        let loaded = self
            .shared
            .cache
            .get_or_load_tagged(&key, Some(kept), &route.tags, || {
                self.load(upstream, breaker, route, template.clone(), Some(&upstream_us))
            })
            .await;
        let now_ms = self.shared.cache.clock().unix_ms();
        match loaded {
            Ok(cached) => {
                let age = Duration::from_millis(now_ms.saturating_sub(cached.created_ms));
                let served = if !cached.is_hit() {
                    if !route.stale_if_error.is_zero() {
                        self.shared.stale.insert(key.clone(), (cached.value.clone(), now_ms));
                    }
                    Served::Miss
                } else if age > strategy.ttl() {
                    self.revalidate(route, upstream, breaker, key.clone(), template);
                    Served::Revalidating
                } else {
                    Served::Hit
                };
                count(
                    &route.pattern,
                    if served == Served::Miss {
                        "miss"
                    } else if served == Served::Hit {
                        "hit"
                    } else {
                        "stale"
                    },
                );
                match stored::decode(cached.value) {
                    Some(answer) => {
                        let response = stored::serve(answer, &method, &headers, strategy, route, age, served);
                        let response = timed(response, started.elapsed(), Some(served.label()));
                        match upstream_us.load(Ordering::Relaxed) {
                            0 => response,
                            us => timed(response, Duration::from_micros(us), None),
                        }
                    }
                    None => AppError::internal("undecodable cached answer").into_response(),
                }
            }
            Err(LoadError::Loader(Failure::Uncacheable(mut response, why))) => {
                count(&route.pattern, "uncacheable");
                tracing::debug!(route = %route.pattern, why, "answer not stored");
                response.headers_mut().insert(stored::X_CACHE, HeaderValue::from_static("BYPASS"));
                if method == Method::HEAD {
                    *response.body_mut() = Body::empty();
                }
                response
            }
            Err(LoadError::Loader(Failure::ServerError(response))) => {
                self.stale_or(route, &key, &method, &headers, now_ms, || response)
            }
            Err(LoadError::Loader(Failure::Proxy(e))) => {
                if e.is_upstream_failure() {
                    self.stale_or(route, &key, &method, &headers, now_ms, || e.into_response())
                } else {
                    e.into_response()
                }
            }
            Err(LoadError::Cache(e)) => {
                // The route's tags were checked at load; an upstream's own bad tags are dropped
                // in the loader. Nothing here is the client's doing.
                AppError::internal(e).into_response()
            }
        }
    }

    /// The last good copy, when the route allows one and it is young enough; else `otherwise`.
    fn stale_or(
        &self,
        route: &Route,
        key: &str,
        method: &Method,
        headers: &HeaderMap,
        now_ms: u64,
        otherwise: impl FnOnce() -> Response,
    ) -> Response {
        let policy = route.cache.expect("a cached route has a policy");
        let window = policy.strategy.ttl() + route.stale_if_error;
        if !route.stale_if_error.is_zero()
            && let Some((value, stored_ms)) = self.shared.stale.get(key)
        {
            let age = Duration::from_millis(now_ms.saturating_sub(stored_ms));
            if age <= window
                && let Some(answer) = stored::decode(value)
            {
                count(&route.pattern, "stale_if_error");
                return stored::serve(answer, method, headers, policy.strategy, route, age, Served::StaleIfError);
            }
        }
        count(&route.pattern, "error");
        otherwise()
    }

    /// Loads the answer for a cached route in the background (stale-while-revalidate); a
    /// refresh of the same key already running makes this one a no-op.
    fn revalidate(&self, route: &Route, upstream: &Upstream, breaker: &Breaker, key: String, template: Template) {
        let (gateway, route, upstream, breaker) = (self.clone(), route.clone(), upstream.clone(), breaker.clone());
        tokio::spawn(async move {
            let kept = route.cache.map_or(Duration::from_secs(1), |p| p.strategy.ttl() + p.stale_while_revalidate);
            let refreshed = gateway
                .shared
                .cache
                .refresh_tagged(&key, Some(kept), &route.tags, || {
                    gateway.load(&upstream, &breaker, &route, template, None)
                })
                .await;
            if let Some(Ok(cached)) = refreshed
                && !route.stale_if_error.is_zero()
            {
                gateway.shared.stale.insert(key, (cached.value, gateway.shared.cache.clock().unix_ms()));
            }
        });
    }

    /// The loader of a cached route: a `GET` upstream without the client's validators and
    /// without compression (bodies are kept plain and compressed per client), buffered up to
    /// [`stored::MAX_STORED_BODY`].
    async fn load(
        &self,
        upstream: &Upstream,
        breaker: &Breaker,
        route: &Route,
        template: Template,
        upstream_us: Option<&AtomicU64>,
    ) -> Result<(Bytes, Vec<String>), Failure> {
        let peer = template.peer;
        let forwarded =
            self.forward(upstream, breaker, route, template.into_request(), peer).await.map_err(Failure::Proxy)?;
        let upstream_time = forwarded.upstream_time;
        if let Some(cell) = upstream_us {
            cell.store(u64::try_from(upstream_time.as_micros()).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
        }
        let response = forwarded.response;
        if response.status().is_server_error() {
            return Err(Failure::ServerError(timed(response, upstream_time, None)));
        }
        if let Some(why) = stored::refusal(route, &response) {
            return Err(Failure::Uncacheable(timed(response, upstream_time, None), why));
        }
        let (mut parts, body) = response.into_parts();
        match collect_bounded(body, stored::MAX_STORED_BODY).await {
            Ok(bytes) => {
                let tags = stored::upstream_tags(&parts.headers);
                stored::last_modified_now(&mut parts.headers);
                Ok((stored::encode(&parts.headers, &bytes), tags))
            }
            Err(Ok(body)) => {
                Err(Failure::Uncacheable(timed(Response::from_parts(parts, body), upstream_time, None), "size"))
            }
            Err(Err(e)) => {
                Err(Failure::Proxy(ProxyError::Failed { upstream: upstream.name.clone(), detail: e.to_string() }))
            }
        }
    }
}

/// What a cached route's loader needs of the client's request (it may run again, for a refresh).
#[derive(Debug, Clone)]
struct Template {
    uri: Uri,
    headers: HeaderMap,
    peer: Peer,
}

impl Template {
    fn of(request: &Request) -> Self {
        let mut headers = request.headers().clone();
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
            header::ACCEPT_ENCODING,
            header::CONTENT_LENGTH,
        ] {
            headers.remove(name);
        }
        Self { uri: request.uri().clone(), headers, peer: peer_of(request) }
    }

    fn into_request(self) -> Request {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        request
    }
}

fn peer_of(request: &Request) -> Peer {
    Peer(request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0))
}

fn count(route: &str, outcome: &'static str) {
    metrics::counter!("voxperf_gateway_requests_total", "route" => route.to_owned(), "cache" => outcome).increment(1);
}

/// Adds `Server-Timing: upstream;dur=…` (or `cache;dur=…;desc=HIT`).
fn timed(mut response: Response, took: Duration, cache: Option<&'static str>) -> Response {
    let ms = took.as_secs_f64() * 1000.0;
    let value = match cache {
        Some(desc) => format!("cache;dur={ms:.3};desc={desc}"),
        None => format!("upstream;dur={ms:.3}"),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(SERVER_TIMING, v);
    }
    response
}

/// The body, if it has at most `max` bytes; else a body that replays what was read and streams
/// the rest (`Err(Ok(body))`), or the body's own error.
async fn collect_bounded(body: Body, max: usize) -> Result<Bytes, Result<Body, axum::Error>> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Err)?;
        buf.extend_from_slice(&chunk);
        if buf.len() > max {
            let prefix = buf.freeze();
            let rest = futures_util::stream::once(async move { Ok::<_, axum::Error>(prefix) }).chain(stream);
            return Err(Ok(Body::from_stream(rest)));
        }
    }
    Ok(buf.freeze())
}

async fn handle(State(gateway): State<Gateway>, request: Request) -> Response {
    let loaded = gateway.current();
    let index = loaded.table.index_of(request.uri().path());
    let label = index.map_or_else(|| loaded.unrouted_label.clone(), |i| loaded.labels[i].clone());
    let compress = index.map_or(loaded.table.unrouted.compress, |i| loaded.table.routes()[i].compress);
    let hashed = stored::is_content_hashed(request.uri().path());
    let mut response = gateway.respond(&loaded, index, request).await;
    if hashed && response.status() == StatusCode::OK {
        response.headers_mut().insert(header::CACHE_CONTROL, stored::IMMUTABLE);
    }
    response.extensions_mut().insert(RouteLabel(label));
    if !compress {
        response.extensions_mut().insert(NoCompression);
    }
    response
}

/// Validates the gateway's configuration (`--check-config`): the route table as text.
pub fn check(config: &GatewayConfig, breaker: &BreakerSettings) -> Result<String, RoutesError> {
    load_table(config, breaker).map(|t| t.to_string())
}

fn load_table(config: &GatewayConfig, breaker: &BreakerSettings) -> Result<RouteTable, RoutesError> {
    match (&config.routes_file, &config.upstream) {
        (Some(path), upstream) => RouteTable::load(path, upstream.as_deref(), breaker),
        (None, Some(upstream)) => RouteTable::passthrough(upstream, breaker),
        (None, None) => RouteTable::parse("(none)", "", None, breaker),
    }
}

fn make_loaded(table: RouteTable, breakers: &Breakers) -> Loaded {
    let upstreams: Vec<(String, BreakerSettings)> =
        table.upstreams.iter().map(|u| (u.name.clone(), u.breaker.clone())).collect();
    let breakers = breakers.set_upstreams(&upstreams);
    let labels = table.routes().iter().map(|r| Arc::from(r.pattern.as_str())).collect();
    Loaded { table, breakers, labels, unrouted_label: Arc::from(routes::UNROUTED) }
}

fn status_of(config: &GatewayConfig, loaded: &Loaded, now_ms: u64, last_error: Option<String>) -> ReloadStatus {
    ReloadStatus {
        file: config.routes_file.as_ref().map(|p| p.display().to_string()),
        routes: loaded.table.routes().len(),
        upstreams: loaded.table.upstreams.iter().map(|u| u.name.clone()).collect(),
        loaded_at_ms: now_ms,
        last_error,
    }
}

#[cfg(test)]
mod tests;
