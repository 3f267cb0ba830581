//! Routes: one file per API area; handlers validate their input (`params`, `auth`), call
//! [`crate::db`], and answer JSON.
//!
//! `Cache-Tag` names the tables an answer was computed from, in voxperf's tag syntax
//! (`table:public."VirtualNumber"`), so that the gateway can cache the answer and drop it when
//! the extension reports a write to one of those tables. The app itself sets no `Cache-Control`
//! except on per-user answers (`private`): the caching policy is the gateway's.

mod account;
mod assets;
mod demo;
mod numbers;
mod reports;
mod uploads;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::routing::{any, get, post};

use crate::AppState;
use crate::error::AppError;

pub use assets::{APP_JS_PATH, INDEX_HTML_PATH};

/// The response header naming an answer's cache tags, comma-separated.
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// The tag of answers read from `"VirtualNumber"`.
pub const NUMBERS_TAG: &str = r#"table:public."VirtualNumber""#;

/// The tag of answers read from `"UsageRecord"`.
pub const USAGE_TAG: &str = r#"table:public."UsageRecord""#;

/// A `Cache-Tag` header with `tags`, comma-separated.
fn cache_tag(tags: &[&str]) -> [(HeaderName, HeaderValue); 1] {
    let value = HeaderValue::from_str(&tags.join(", ")).expect("cache tags are visible ASCII");
    [(CACHE_TAG, value)]
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/numbers/search", get(numbers::search))
        .route("/api/numbers/{id}", get(numbers::by_id))
        .route("/api/numbers/{id}/reserve", post(numbers::reserve))
        .route("/api/users/{id}/numbers", get(numbers::of_user))
        .route("/api/reports/usage", get(reports::usage))
        .route("/api/analytics/me", get(reports::my_analytics))
        .route("/api/session", post(account::create_session))
        .route("/api/account", get(account::account))
        .route(APP_JS_PATH, get(assets::app_js))
        .route(INDEX_HTML_PATH, get(assets::index_html))
        // Streamed, so any size is fine: the only route without axum's default 2 MB limit.
        .route("/api/uploads", post(uploads::upload).layer(DefaultBodyLimit::disable()))
        .route("/api/slow", get(demo::slow))
        .route("/api/echo", any(demo::echo))
        .route("/healthz", get(demo::healthz))
        .route("/_demo/requests", get(demo::request_counts))
        .route("/_demo/requests/reset", post(demo::reset_request_counts))
        .fallback(|| async { AppError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            AppError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .with_state(state)
}
