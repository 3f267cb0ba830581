//! The cache API: entries, read-only query results, stats, and the admin operations.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::extract::{AppJson, AppPath};
use crate::cache::{Cache, CacheStats, Source, WarmEntry};
use crate::services::cache_admin::CacheAdmin;
use crate::services::query_cache::{QueryCacheService, QueryRequest};
use crate::state::AppState;

/// `PUT /api/cache/entries/{key}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEntry {
    /// Any JSON value.
    #[schema(value_type = Object)]
    pub value: Value,
    /// Seconds; `CACHE_DEFAULT_TTL` when absent.
    pub ttl: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /api/cache/query` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One read-only statement; `$1`, `$2`... refer to `params`.
    pub sql: String,
    /// Parameter values; their Postgres types are those the server infers for the statement.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub params: Vec<Value>,
    /// Seconds to cache the result; `CACHE_DEFAULT_TTL` when absent.
    pub ttl: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// `POST /api/cache/query` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResponse {
    /// One object per row, keyed by column name.
    #[schema(value_type = Vec<Object>)]
    pub rows: Box<RawValue>,
    pub cache: CacheStatus,
    /// Milliseconds since the rows were read from Postgres.
    pub age_ms: u64,
}

/// One entry of `POST /api/admin/cache/warm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmItem {
    pub key: String,
    #[schema(value_type = Object)]
    pub value: Value,
    pub ttl: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WarmResponse {
    pub warmed: usize,
}

/// `POST /api/admin/cache/invalidate` body: any of the three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    #[serde(default)]
    pub tags: Vec<String>,
    /// Table names as Postgres reads them (`users`, `public."VirtualNumber"`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Redis glob over cache keys (`user:*`).
    pub pattern: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidateResponse {
    pub tags: Vec<String>,
    /// Canonical names of the tables invalidated.
    pub tables: Vec<String>,
    pub pattern: Option<String>,
    pub pattern_deleted: u64,
}

fn ttl(seconds: Option<u64>) -> Option<Duration> {
    seconds.map(Duration::from_secs)
}

fn source_header(source: Source) -> HeaderValue {
    HeaderValue::from_static(match source {
        Source::L1 => "HIT-L1",
        Source::L2 => "HIT-L2",
        Source::Loader => "MISS",
    })
}

/// Read an entry's value.
#[utoipa::path(get, path = "/api/cache/entries/{key}", tag = "cache",
    params(("key" = String, Path, description = "cache key")),
    responses(
        (status = 200, description = "the stored JSON value", body = Object),
        (status = 304, description = "unchanged (If-None-Match)"),
        (status = 404, description = "no current entry", body = ErrorBody),
    ))]
pub async fn get_entry(State(cache): State<Cache>, AppPath(key): AppPath<String>) -> Result<Response, AppError> {
    let Some(entry) = cache.get(&key).await? else {
        return Err(AppError::not_found(format!("no entry for key {key:?}")));
    };
    let age = cache.clock().unix_ms().saturating_sub(entry.created_ms) / 1000;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-cache", source_header(entry.source));
    headers.insert(header::AGE, HeaderValue::from(age));
    Ok((headers, entry.value).into_response())
}

/// Store a JSON value.
#[utoipa::path(put, path = "/api/cache/entries/{key}", tag = "cache",
    params(("key" = String, Path, description = "cache key")),
    request_body = PutEntry,
    responses((status = 204, description = "stored"), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn put_entry(
    State(cache): State<Cache>,
    AppPath(key): AppPath<String>,
    AppJson(body): AppJson<PutEntry>,
) -> Result<StatusCode, AppError> {
    let value = Bytes::from(serde_json::to_vec(&body.value).map_err(AppError::internal)?);
    cache.set(&key, value, ttl(body.ttl), &body.tags).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete an entry (in every daemon sharing the channel).
#[utoipa::path(delete, path = "/api/cache/entries/{key}", tag = "cache",
    params(("key" = String, Path, description = "cache key")),
    responses((status = 204, description = "deleted (or was absent)")))]
pub async fn delete_entry(State(cache): State<Cache>, AppPath(key): AppPath<String>) -> Result<StatusCode, AppError> {
    cache.delete(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a read-only statement; its result is cached until a write to a table it reads.
#[utoipa::path(post, path = "/api/cache/query", tag = "cache",
    request_body = QueryBody,
    responses(
        (status = 200, body = QueryResponse, headers(
            ("X-Cache-Key" = String, description = "The cache key of the statement with its parameters (`query:` and 32 hex digits): the result is looked up, and stored, under it; `GET /api/cache/entries/{key}` reads that entry. The same for every layout of the statement; different for other constants or parameters. Also sent for results that cannot be cached, though nothing is stored then."),
            ("X-Cache" = String, description = "`HIT` or `MISS`, as the `cache` field"),
        )),
        (status = 400, description = "invalid JSON, SQL syntax error (Postgres' message), bad parameters", body = ErrorBody),
        (status = 422, description = "not a read-only statement, or too many rows", body = ErrorBody),
        (status = 503, description = "Postgres unavailable", body = ErrorBody),
        (status = 504, description = "statement timeout", body = ErrorBody),
    ))]
pub async fn query(
    State(queries): State<Arc<QueryCacheService>>,
    AppJson(body): AppJson<QueryBody>,
) -> Result<Response, AppError> {
    let outcome = queries.query(QueryRequest { sql: body.sql, params: body.params, ttl: ttl(body.ttl) }).await?;
    let rows = RawValue::from_string(outcome.rows).map_err(AppError::internal)?;
    let status = if outcome.hit { CacheStatus::Hit } else { CacheStatus::Miss };
    let response = QueryResponse { rows, cache: status, age_ms: outcome.age_ms };
    let x_cache = HeaderValue::from_static(if outcome.hit { "HIT" } else { "MISS" });
    // `query:` and hex digits: always a valid header value.
    let x_cache_key = HeaderValue::from_str(&outcome.key).map_err(AppError::internal)?;
    Ok(([("x-cache", x_cache), ("x-cache-key", x_cache_key)], axum::Json(response)).into_response())
}

/// Counters per level, sizes, invalidations.
#[utoipa::path(get, path = "/api/cache/stats", tag = "cache",
    responses((status = 200, body = CacheStats)))]
pub async fn stats(State(cache): State<Cache>) -> axum::Json<CacheStats> {
    axum::Json(cache.stats())
}

/// Store many entries at once.
#[utoipa::path(post, path = "/api/admin/cache/warm", tag = "admin",
    request_body = Vec<WarmItem>,
    security(("bearer" = [])),
    responses((status = 200, body = WarmResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn warm(
    State(cache): State<Cache>,
    AppJson(items): AppJson<Vec<WarmItem>>,
) -> Result<axum::Json<WarmResponse>, AppError> {
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        entries.push(WarmEntry {
            key: item.key,
            value: Bytes::from(serde_json::to_vec(&item.value).map_err(AppError::internal)?),
            ttl: ttl(item.ttl),
            tags: item.tags,
        });
    }
    let warmed = cache.warm(entries).await?;
    Ok(axum::Json(WarmResponse { warmed }))
}

/// Invalidate by tags, tables and/or key pattern, in every daemon.
#[utoipa::path(post, path = "/api/admin/cache/invalidate", tag = "admin",
    request_body = InvalidateBody,
    security(("bearer" = [])),
    responses((status = 200, body = InvalidateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn invalidate(
    State(state): State<AppState>,
    AppJson(body): AppJson<InvalidateBody>,
) -> Result<axum::Json<InvalidateResponse>, AppError> {
    let admin = CacheAdmin { cache: state.cache.clone(), db: state.db.clone() };
    let done = admin.invalidate(body.tags, body.tables, body.pattern).await?;
    Ok(axum::Json(InvalidateResponse {
        tags: done.tags,
        tables: done.tables,
        pattern: done.pattern,
        pattern_deleted: done.pattern_deleted,
    }))
}
