//! `/api/performance/*`: the monitor's figures, trends, alerts, report, custom metrics, reset.
//!
//! Every answer here comes from memory (the latest collection, the request metrics, the trends);
//! only `report` and `dashboard` also read the extension, and they say so when it cannot answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{AppError, ErrorBody};
use super::extract::{AppJson, AppQuery};
use crate::db::extension::QueryOrder;
use crate::monitor::Monitor;
use crate::monitor::alerts::{AlertRecord, PendingAlert, RuleSpec};
use crate::monitor::collect::Readings;
use crate::monitor::custom::CustomSeries;
use crate::monitor::histogram::Percentiles;
use crate::monitor::report::{self, PerformanceReport};
use crate::monitor::requests::{EndpointStats, SlowRequest};
use crate::monitor::trends::{self, MetricInfo, TrendSeries};
use crate::services::health::HealthService;
use crate::state::AppState;

/// Most rows a list endpoint returns.
pub const MAX_LIMIT: usize = 1000;

fn limit(given: Option<usize>, default: usize) -> Result<usize, AppError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(AppError::bad_request("invalid_parameter", format!("limit must be between 1 and {MAX_LIMIT}"))),
    }
}

/// Totals since start (or the last reset).
#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub error_rate_percent: f64,
    pub latency: Percentiles,
    pub slow_requests: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertCounts {
    pub firing: usize,
    pub pending: usize,
}

/// `GET /api/performance/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PerformanceStats {
    pub instance: String,
    pub started_at_ms: u64,
    pub uptime_s: f64,
    pub monitoring_enabled: bool,
    pub metrics_interval_ms: u64,
    pub totals: Totals,
    /// The latest collection (per-interval figures); null before the first.
    pub current: Option<Readings>,
    pub custom_metrics: Vec<CustomSeries>,
    pub alerts: AlertCounts,
    /// Status and score of the latest health report, if one was made.
    pub health: Option<HealthSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthSummary {
    pub status: String,
    pub score: f64,
}

pub fn stats_of(monitor: &Monitor, health: &HealthService) -> PerformanceStats {
    let totals = monitor.requests().totals();
    let now = monitor.clock().unix_ms();
    let (firing, pending) = monitor.with_alerts(|a| (a.firing().len(), a.pending().len()));
    PerformanceStats {
        instance: monitor.instance().to_owned(),
        started_at_ms: monitor.started_ms(),
        uptime_s: now.saturating_sub(monitor.started_ms()) as f64 / 1000.0,
        monitoring_enabled: monitor.config().enabled,
        metrics_interval_ms: monitor.config().metrics_interval.as_millis() as u64,
        totals: Totals {
            requests: totals.requests,
            errors: totals.errors,
            client_errors: totals.client_errors,
            error_rate_percent: if totals.requests == 0 {
                0.0
            } else {
                totals.errors as f64 * 100.0 / totals.requests as f64
            },
            latency: totals.histogram.percentiles(),
            slow_requests: monitor.requests().slow_total(),
        },
        current: monitor.latest().map(|r| (*r).clone()),
        custom_metrics: monitor.custom().all(),
        alerts: AlertCounts { firing, pending },
        health: health.last().map(|(s, score)| HealthSummary { status: format!("{s:?}").to_lowercase(), score }),
    }
}

/// Overall figures: totals since start, the latest collection, alerts, health.
#[utoipa::path(get, path = "/api/performance/stats", tag = "performance",
    responses((status = 200, body = PerformanceStats)))]
pub async fn stats(State(monitor): State<Monitor>, State(health): State<Arc<HealthService>>) -> Json<PerformanceStats> {
    Json(stats_of(&monitor, &health))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EndpointsQuery {
    /// requests (default), rate, p95, p99, mean, errors, route
    pub sort: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoints {
    pub endpoints: Vec<EndpointStats>,
}

/// Per route and method: requests, errors, latency percentiles.
#[utoipa::path(get, path = "/api/performance/endpoints", tag = "performance", params(EndpointsQuery),
    responses((status = 200, body = Endpoints), (status = 400, body = ErrorBody)))]
pub async fn endpoints(
    State(monitor): State<Monitor>,
    AppQuery(q): AppQuery<EndpointsQuery>,
) -> Result<Json<Endpoints>, AppError> {
    let limit = limit(q.limit, MAX_LIMIT)?;
    let mut list = monitor.requests().endpoints();
    let by = |f: fn(&EndpointStats) -> f64| move |a: &EndpointStats, b: &EndpointStats| f(b).total_cmp(&f(a));
    match q.sort.as_deref().unwrap_or("requests") {
        "requests" => list.sort_by(by(|e| e.requests as f64)),
        "p95" => list.sort_by(by(|e| e.latency.p95_ms)),
        "p99" => list.sort_by(by(|e| e.latency.p99_ms)),
        "mean" => list.sort_by(by(|e| e.latency.mean_ms)),
        "errors" => list.sort_by(by(|e| e.errors as f64)),
        "rate" => list.sort_by(by(|e| e.requests_per_second)),
        "route" => {}
        other => {
            return Err(AppError::bad_request(
                "invalid_parameter",
                format!("unknown sort {other:?}; use requests, rate, p95, p99, mean, errors or route"),
            ));
        }
    }
    list.truncate(limit);
    Ok(Json(Endpoints { endpoints: list }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlowRequests {
    /// ALERT_RESPONSE_TIME_THRESHOLD.
    pub threshold_ms: f64,
    /// Slow requests since start (the log keeps only the newest).
    pub total: u64,
    pub requests: Vec<SlowRequest>,
}

/// Recent requests slower than ALERT_RESPONSE_TIME_THRESHOLD, newest first.
#[utoipa::path(get, path = "/api/performance/slow-requests", tag = "performance", params(LimitQuery),
    responses((status = 200, body = SlowRequests), (status = 400, body = ErrorBody)))]
pub async fn slow_requests(
    State(monitor): State<Monitor>,
    AppQuery(q): AppQuery<LimitQuery>,
) -> Result<Json<SlowRequests>, AppError> {
    let requests = monitor.requests();
    Ok(Json(SlowRequests {
        threshold_ms: requests.slow_threshold().as_secs_f64() * 1000.0,
        total: requests.slow_total(),
        requests: requests.slow_requests(limit(q.limit, 100)?),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TrendsQuery {
    /// A name from the catalogue (omit it to get the catalogue).
    pub metric: Option<String>,
    /// How far back: 30s, 15m, 1h (default), 24h.
    pub window: Option<String>,
    /// Width of a point: 10s, 1m, ... (default: about 60 points).
    pub step: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Catalogue {
    pub metrics: Vec<MetricInfo>,
}

/// A metric's history in points, or the catalogue of metrics when `metric` is omitted.
#[utoipa::path(get, path = "/api/performance/trends", tag = "performance", params(TrendsQuery),
    responses((status = 200, body = TrendSeries), (status = 400, description = "unknown metric or bad window/step", body = ErrorBody)))]
pub async fn trends(State(monitor): State<Monitor>, AppQuery(q): AppQuery<TrendsQuery>) -> Result<Response, AppError> {
    let Some(metric) = q.metric else {
        return Ok(Json(Catalogue { metrics: monitor.trends().catalogue() }).into_response());
    };
    let window = trends::parse_duration("window", q.window.as_deref().unwrap_or("1h"))?;
    let step = q.step.as_deref().map(|s| trends::parse_duration("step", s)).transpose()?;
    let series = monitor.trends().query(&metric, window, step, monitor.clock().unix_ms())?;
    Ok(Json(series).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Alerts {
    pub firing: Vec<AlertRecord>,
    pub pending: Vec<PendingAlert>,
    /// Newest first, resolved ones included.
    pub history: Vec<AlertRecord>,
    pub rules: Vec<RuleSpec>,
}

/// Active alerts, pending ones, the history and the rules.
#[utoipa::path(get, path = "/api/performance/alerts", tag = "performance", params(LimitQuery),
    responses((status = 200, body = Alerts), (status = 400, body = ErrorBody)))]
pub async fn alerts(
    State(monitor): State<Monitor>,
    AppQuery(q): AppQuery<LimitQuery>,
) -> Result<Json<Alerts>, AppError> {
    let limit = limit(q.limit, 100)?;
    Ok(Json(monitor.with_alerts(|a| Alerts {
        firing: a.firing(),
        pending: a.pending(),
        history: a.history(limit),
        rules: a.rules(),
    })))
}

/// `POST /api/performance/metrics` body: the seed's `recordMetric`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricSample {
    /// `api.response_time`, `database.query`, ...
    pub name: String,
    pub value: f64,
    /// `ms`, `bytes`, `count`, `%`, ...
    pub unit: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recorded {
    pub recorded: bool,
    /// The trend it feeds.
    pub trend: String,
}

/// Record a custom metric sample.
#[utoipa::path(post, path = "/api/performance/metrics", tag = "performance", request_body = MetricSample,
    responses((status = 202, body = Recorded), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn record_metric(
    State(monitor): State<Monitor>,
    AppJson(sample): AppJson<MetricSample>,
) -> Result<(StatusCode, Json<Recorded>), AppError> {
    monitor.record_metric(&sample.name, sample.value, &sample.unit, sample.tags)?;
    Ok((StatusCode::ACCEPTED, Json(Recorded { recorded: true, trend: format!("custom.{}", sample.name) })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResetDone {
    pub reset: bool,
    pub at_ms: u64,
}

/// Forget request metrics, slow requests and custom metrics (trends and alerts are history and stay).
#[utoipa::path(post, path = "/api/performance/reset", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ResetDone), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn reset(State(monitor): State<Monitor>) -> Json<ResetDone> {
    monitor.reset();
    Json(ResetDone { reset: true, at_ms: monitor.clock().unix_ms() })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Period covered: 15m, 1h (default), 24h.
    pub window: Option<String>,
    /// json (default) or markdown.
    pub format: Option<String>,
}

/// A readable summary of the period (the seed's getPerformanceReport), as JSON or Markdown.
#[utoipa::path(get, path = "/api/performance/report", tag = "performance", params(ReportQuery),
    responses((status = 200, body = PerformanceReport), (status = 400, body = ErrorBody)))]
pub async fn report(State(state): State<AppState>, AppQuery(q): AppQuery<ReportQuery>) -> Result<Response, AppError> {
    let window = trends::parse_duration("window", q.window.as_deref().unwrap_or("1h"))?;
    if window > trends::RESOLUTIONS[1].keep_ms {
        return Err(AppError::bad_request("invalid_parameter", "window: at most 24h of history is kept"));
    }
    let markdown = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "markdown" | "md" => true,
        other => {
            return Err(AppError::bad_request(
                "invalid_parameter",
                format!("unknown format {other:?}; use json or markdown"),
            ));
        }
    };
    let health = state.health.report().await;
    let top = state.db.top_queries(QueryOrder::TotalTime, 10).await.map_err(|e| e.to_string());
    let report = report::build(&state.monitor, window, Some(&health), top);
    if markdown {
        let mut response = report.to_markdown().into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/markdown; charset=utf-8"));
        return Ok(response);
    }
    Ok(Json(report).into_response())
}
