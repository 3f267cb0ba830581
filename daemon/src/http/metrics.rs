//! `GET /metrics`: the Prometheus text exposition (see `crate::monitor::prometheus`).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::monitor::prometheus::{CONTENT_TYPE, render};
use crate::state::AppState;

/// Metrics in the Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = render(&state.monitor, state.health.last());
    ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], body).into_response()
}
