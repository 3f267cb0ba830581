//! `GET /api/openapi.json`: the OpenAPI document of every endpoint, generated from the handlers'
//! `#[utoipa::path]` annotations (a test checks that every documented path is routed).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, breakers, cache, dashboard, db, error, health, metrics, performance};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("VOXPERF_ADMIN_TOKEN")).build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "voxperfd", description = "voxperf's daemon: two-level cache invalidated by Postgres writes, performance monitoring, health and resilience APIs. Errors are {\"error\": {\"code\", \"message\"}}."),
    paths(
        health::live,
        health::ready,
        health::performance,
        cache::get_entry,
        cache::put_entry,
        cache::delete_entry,
        cache::query,
        cache::stats,
        cache::warm,
        cache::invalidate,
        breakers::list,
        performance::stats,
        performance::endpoints,
        performance::slow_requests,
        performance::trends,
        performance::alerts,
        performance::report,
        performance::record_metric,
        performance::reset,
        dashboard::data,
        db::queries,
        db::slow_queries,
        db::index_suggestions,
        db::write_migration,
        admin::optimize,
        metrics::metrics,
        openapi_json,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "cache", description = "Two-level cache"),
        (name = "admin", description = "Needs Authorization: Bearer $VOXPERF_ADMIN_TOKEN"),
        (name = "performance", description = "Request metrics, trends, alerts, report, dashboard data"),
        (name = "database", description = "The voxperf extension's statistics and index advice"),
        (name = "resilience"), (name = "operations"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
