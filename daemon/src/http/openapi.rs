//! `GET /api/openapi.json`: the OpenAPI document of every endpoint, generated from the handlers'
//! `#[utoipa::path]` annotations (a test checks that every documented path is routed).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{breakers, cache, error, health};

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
    info(title = "voxperfd", description = "voxperf's daemon: two-level cache invalidated by Postgres writes, health and resilience APIs. Errors are {\"error\": {\"code\", \"message\"}}."),
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
        openapi_json,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "cache", description = "Two-level cache"),
        (name = "admin", description = "Needs Authorization: Bearer $VOXPERF_ADMIN_TOKEN"),
        (name = "performance"), (name = "resilience"), (name = "operations"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
