//! `/api/db/*`: the extension's statistics, slow queries and index advice.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{AppError, ErrorBody};
use super::extract::AppQuery;
use crate::db::extension::{QueryOrder, QueryStat, SlowQuery};
use crate::services::advisor::{AdviceParams, Migration, Suggestions};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueriesQuery {
    /// total_time (default), mean_time, calls, p95, p99, rows, max_time, last_seen; descending.
    pub sort: Option<String>,
    /// 1–1000, default 50.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queries {
    pub sort: String,
    pub queries: Vec<QueryStat>,
}

fn limit(given: Option<i64>, default: i64) -> Result<i64, AppError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(AppError::bad_request("invalid_parameter", "limit must be between 1 and 1000")),
    }
}

/// Statements from `voxperf.query_stats`, sorted.
#[utoipa::path(get, path = "/api/db/queries", tag = "database", params(QueriesQuery),
    responses((status = 200, body = Queries), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn queries(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<QueriesQuery>,
) -> Result<Json<Queries>, AppError> {
    let sort = q.sort.unwrap_or_else(|| "total_time".into());
    let order = QueryOrder::parse(&sort).ok_or_else(|| {
        AppError::bad_request("invalid_parameter", format!("unknown sort {sort:?}; use {}", QueryOrder::NAMES))
    })?;
    let queries = state.db.top_queries(order, limit(q.limit, 50)?).await.map_err(AppError::from_extension)?;
    Ok(Json(Queries { sort, queries }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SlowQueriesQuery {
    /// 1–1000, default 50.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlowQueries {
    pub slow_queries: Vec<SlowQuery>,
}

/// Recent executions over `voxperf.slow_query_threshold`, newest first, with their plans.
#[utoipa::path(get, path = "/api/db/slow-queries", tag = "database", params(SlowQueriesQuery),
    responses((status = 200, body = SlowQueries), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn slow_queries(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<SlowQueriesQuery>,
) -> Result<Json<SlowQueries>, AppError> {
    let slow_queries = state.db.slow_queries(limit(q.limit, 50)?).await.map_err(AppError::from_extension)?;
    Ok(Json(SlowQueries { slow_queries }))
}

#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdviceQuery {
    /// Smallest improvement worth suggesting, 0–1 (default 0.1).
    pub min_improvement: Option<f64>,
    /// Most indexes suggested (default 10).
    pub max_indexes: Option<i32>,
    /// true: drop the cached answer and ask the extension again.
    #[serde(default)]
    #[param(value_type = Option<bool>)]
    #[schema(value_type = Option<bool>)]
    pub refresh: bool,
}

impl AdviceQuery {
    fn params(&self) -> AdviceParams {
        let d = AdviceParams::default();
        AdviceParams {
            min_improvement: self.min_improvement.unwrap_or(d.min_improvement),
            max_indexes: self.max_indexes.unwrap_or(d.max_indexes),
        }
    }
}

/// Indexes `voxperf.suggest_indexes()` recommends (cached for VOXPERF_INDEX_SUGGESTIONS_TTL).
#[utoipa::path(get, path = "/api/db/index-suggestions", tag = "database", params(AdviceQuery),
    responses(
        (status = 200, body = Suggestions),
        (status = 400, body = ErrorBody),
        (status = 501, description = "the extension lacks voxperf.suggest_indexes()", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn index_suggestions(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<AdviceQuery>,
) -> Result<Json<Suggestions>, AppError> {
    if q.refresh {
        state.advisor.forget().await?;
    }
    Ok(Json(state.advisor.suggestions(q.params()).await?))
}

/// `POST /api/db/migrations` body (all optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationBody {
    pub min_improvement: Option<f64>,
    pub max_indexes: Option<i32>,
}

/// Write the migration of the current suggestions into VOXPERF_MIGRATIONS_DIR (never overwriting).
#[utoipa::path(post, path = "/api/db/migrations", tag = "admin", request_body = MigrationBody, security(("bearer" = [])),
    responses(
        (status = 201, body = Migration),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "no suggestion passed the thresholds", body = ErrorBody),
        (status = 501, description = "the extension lacks voxperf.index_migration()", body = ErrorBody),
    ))]
pub async fn write_migration(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Migration>), AppError> {
    // The body is optional: empty means the extension's defaults.
    let body: MigrationBody = if body.iter().all(u8::is_ascii_whitespace) {
        MigrationBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::bad_request("invalid_body", e.to_string()))?
    };
    let d = AdviceParams::default();
    let params = AdviceParams {
        min_improvement: body.min_improvement.unwrap_or(d.min_improvement),
        max_indexes: body.max_indexes.unwrap_or(d.max_indexes),
    };
    let migration = state.advisor.write_migration(params, state.clock.unix_ms()).await?;
    Ok((StatusCode::CREATED, Json(migration)))
}
