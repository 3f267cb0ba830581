//! Liveness, readiness and the performance health report.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::services::health::{HealthReport, HealthService, Readiness, Status, readiness};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    pub status: &'static str,
}

/// The process is up (depends on nothing else, so a database outage never restarts it).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Liveness)))]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Ready to serve: Postgres reachable and `CREATE EXTENSION voxperf` done; Redis is optional.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let r = readiness(&state.db, &state.cache).await;
    let status = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(r))
}

/// Per-component health: postgres, redis, cache (listener), breakers.
#[utoipa::path(get, path = "/api/performance/health", tag = "performance",
    responses(
        (status = 200, description = "ok or degraded", body = HealthReport),
        (status = 503, description = "unhealthy", body = HealthReport),
    ))]
pub async fn performance(State(health): State<Arc<HealthService>>) -> (StatusCode, Json<HealthReport>) {
    let report = health.report().await;
    let status = if report.status == Status::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(report))
}
