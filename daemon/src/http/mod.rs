//! The HTTP API: one file per area; handlers extract, call a service, return JSON.
//!
//! [`router`] lists every route with its own `Cache-Control`; `crate::app` wraps it in the
//! cross-cutting layers. Unknown routes (404) and wrong methods (405) answer in the same JSON
//! error shape as everything else.

pub mod admin;
pub mod breakers;
pub mod cache;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod performance;
pub mod response_cache;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::validate_request::ValidateRequestHeaderLayer;

use self::error::AppError;
use self::middleware::auth::AdminAuth;
use crate::state::AppState;

fn cache_control(value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static(value))
}

/// Every route, with its state.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/api/admin/cache/warm", post(cache::warm))
        .route("/api/admin/cache/invalidate", post(cache::invalidate))
        .route("/api/admin/optimize", post(admin::optimize))
        .route("/api/performance/reset", post(performance::reset))
        .route("/api/db/migrations", post(db::write_migration))
        .route_layer(ValidateRequestHeaderLayer::custom(AdminAuth::new(state.config.http.admin_token.as_ref())))
        .layer(cache_control("no-store"));
    // The page and its assets change only with the binary; revalidating is cheap.
    let dashboard = Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::app_js))
        .route("/dashboard/style.css", get(dashboard::style_css))
        .layer(cache_control("no-cache"))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(dashboard::CSP),
        ));
    // Entries change whenever they are set or invalidated: clients may keep a copy but must
    // revalidate it (cheap, thanks to the ETag) before each use.
    let entries = Router::new()
        .route("/api/cache/entries/{key}", get(cache::get_entry).put(cache::put_entry).delete(cache::delete_entry))
        .layer(cache_control("private, no-cache"));
    let docs = Router::new()
        .route("/api/openapi.json", get(openapi::openapi_json))
        .layer(cache_control("public, max-age=300"));
    // Health, stats, query results and breaker states must never come from a cache on the way.
    let live = Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/api/performance/health", get(health::performance))
        .route("/api/cache/query", post(cache::query))
        .route("/api/cache/stats", get(cache::stats))
        .route("/api/circuit-breakers", get(breakers::list))
        .route("/api/performance/stats", get(performance::stats))
        .route("/api/performance/endpoints", get(performance::endpoints))
        .route("/api/performance/slow-requests", get(performance::slow_requests))
        .route("/api/performance/trends", get(performance::trends))
        .route("/api/performance/alerts", get(performance::alerts))
        .route("/api/performance/report", get(performance::report))
        .route("/api/performance/metrics", post(performance::record_metric))
        .route("/api/performance/dashboard", get(dashboard::data))
        .route("/api/db/queries", get(db::queries))
        .route("/api/db/slow-queries", get(db::slow_queries))
        .route("/api/db/index-suggestions", get(db::index_suggestions))
        .route("/metrics", get(metrics::metrics))
        .layer(cache_control("no-store"));
    Router::new()
        .merge(admin)
        .merge(dashboard)
        .merge(entries)
        .merge(docs)
        .merge(live)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn route_not_found(method: Method, uri: Uri) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "route_not_found", format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
