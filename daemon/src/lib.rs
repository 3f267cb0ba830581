//! voxperfd: voxperf's companion daemon.
//!
//! It serves a two-level cache (L1 in process, L2 in Redis) whose entries computed from tables
//! are invalidated by the extension's NOTIFYs, plus health and resilience APIs. The pattern table
//! (where each concept lives):
//!
//! | concept | module |
//! | --- | --- |
//! | configuration from the environment, presets | [`config`] |
//! | the cache, generations, invalidation listener | [`cache`] |
//! | circuit breakers | [`resilience`] |
//! | the gateway in front of the application: routes, proxy, response cache | [`gateway`] |
//! | Postgres: pool, read-only statements, watched tables | [`db`] |
//! | logic behind the API | [`services`] |
//! | request metrics, collectors, trends, alerts, `/metrics` | [`monitor`] |
//! | routes, handlers, middleware, errors | [`http`] |
//! | time as a dependency | [`clock`] |
//!
//! [`app`] builds the router (testable with `oneshot`); [`run`] serves it until shutdown.

pub mod cache;
pub mod clock;
pub mod config;
pub mod db;
pub mod gateway;
pub mod http;
pub mod monitor;
pub mod resilience;
pub mod services;
pub mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use state::AppState;

use crate::http::error::InternalError;
use crate::http::middleware::{errors, etag, security, timing};

/// The whole HTTP application: routes plus the cross-cutting layers.
///
/// Layer order, outermost first (a request passes them top to bottom, a response bottom to top):
/// request id → trace span and log → response time → security headers (where none are set);
/// then, for voxperfd's own API: default `Cache-Control: no-store` → compression → JSON error
/// shape → ETag → timeout → body limit; for every other path, with the gateway on: compression
/// (by the route) → the gateway, which applies each route's own limits. With
/// `PERFORMANCE_MONITORING_ENABLED`, the request-metrics layer wraps all of them.
pub fn app(state: AppState) -> Router {
    let config = state.config.http.clone();
    let monitor = state.monitor.clone();
    let gateway = state.gateway.clone();
    let api = api_layers(http::router(state), &config);
    let router = match gateway {
        Some(gateway) => api.fallback_service(gateway_layers(gateway.router())),
        None => api,
    };
    let router = edge_layers(router);
    if monitor.config().enabled {
        let clock = monitor.clock().clone();
        router.layer(http::middleware::metrics::MetricsLayer::new(monitor.requests().clone(), clock))
    } else {
        router
    }
}

/// Wraps any router in the daemon's HTTP layers (see [`app`]); tests use it on routes of their
/// own.
pub fn with_layers(router: Router, http: &config::HttpConfig) -> Router {
    edge_layers(api_layers(router, http))
}

fn api_layers(router: Router, http: &config::HttpConfig) -> Router {
    let (body_limit, timeout) = (http.body_limit, http.request_timeout);
    router
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(axum::middleware::from_fn(etag::etag))
        .layer(axum::middleware::from_fn(errors::json_errors))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

/// Compression of proxied answers: by `Accept-Encoding`, never for tiny, already encoded or
/// `no-transform` answers (tower-http's default predicate plus ours), nor where the route
/// turned it off.
fn gateway_layers(router: Router) -> Router {
    use tower_http::compression::predicate::{DefaultPredicate, Predicate};
    #[derive(Clone, Copy)]
    struct Transformable;
    impl Predicate for Transformable {
        fn should_compress<B: axum::body::HttpBody>(&self, response: &axum::http::Response<B>) -> bool {
            let no_transform = response
                .headers()
                .get_all(CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-transform")));
            !no_transform && response.extensions().get::<gateway::NoCompression>().is_none()
        }
    }
    router.layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(Transformable)))
}

fn edge_layers(mut router: Router) -> Router {
    for (name, value) in security::headers() {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    router
        .layer(axum::middleware::from_fn(timing::response_time))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let path =
                        request.extensions().get::<MatchedPath>().map_or(request.uri().path(), MatchedPath::as_str);
                    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path, request_id)
                })
                .on_response(|response: &Response, latency: Duration, _span: &Span| {
                    let ms = latency.as_secs_f64() * 1000.0;
                    let status = response.status().as_u16();
                    match response.extensions().get::<InternalError>() {
                        Some(InternalError(error)) => {
                            tracing::error!(status, latency_ms = ms, %error, "request failed");
                        }
                        None => tracing::info!(status, latency_ms = ms, "request"),
                    }
                }),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([axum::http::header::AUTHORIZATION]))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Serves `app(state)` on `listener`, with the background tasks, until `shutdown` completes;
/// then stops accepting, lets in-flight requests finish, and stops the tasks.
pub async fn run<F>(listener: TcpListener, state: AppState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let tasks_token = CancellationToken::new();
    let tasks = state.start(tasks_token.clone());
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
    tasks_token.cancel();
    for task in tasks {
        let _ = task.await;
    }
    result
}
