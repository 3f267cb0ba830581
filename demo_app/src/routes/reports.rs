//! Usage: the report over all numbers, and the per-user analytics behind the demo credential.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::VARY;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::{NUMBERS_TAG, USAGE_TAG, cache_tag};
use crate::AppState;
use crate::db::Usage;
use crate::error::AppError;
use crate::{auth, params};

/// `days` of the report: a day to a year.
const REPORT_DAYS: std::ops::RangeInclusive<i32> = 1..=365;
const DEFAULT_REPORT_DAYS: i32 = 7;

/// The period of `/api/analytics/me`'s usage.
const ANALYTICS_DAYS: i32 = 30;

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    days: Option<String>,
}

#[derive(Debug, Serialize)]
struct UsageReport {
    days: i32,
    /// Kind (`call_in`, ...) → count, total duration, total cost; kinds without records absent.
    usage: Usage,
}

/// `GET /api/reports/usage?days=7`
pub async fn usage(
    State(state): State<AppState>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(query) = query?;
    let days = params::integer_in("days", query.days.as_deref(), REPORT_DAYS, DEFAULT_REPORT_DAYS)?;
    let usage = state.db.usage(days).await?;
    Ok((cache_tag(&[USAGE_TAG]), Json(UsageReport { days, usage })))
}

#[derive(Debug, Serialize)]
struct MyAnalytics {
    user_id: i64,
    /// Numbers the user owns, whatever their status.
    numbers: i64,
    usage_last_30_days: Usage,
}

/// `GET /api/analytics/me` with `Authorization: Bearer user-<id>` (else 401).
pub async fn my_analytics(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, AppError> {
    let user_id = auth::required_user(&state.db, &headers).await?.id;
    let numbers = state.db.count_numbers_of_owner(user_id).await?;
    let usage_last_30_days = state.db.usage_of_owner(user_id, ANALYTICS_DAYS).await?;
    Ok((
        cache_tag(&[NUMBERS_TAG, USAGE_TAG]),
        // The answer is the credential's user's: a cache must key it by Authorization.
        [(VARY, HeaderValue::from_static("authorization"))],
        Json(MyAnalytics { user_id, numbers, usage_last_30_days }),
    ))
}
