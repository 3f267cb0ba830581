//! The dashboard: `GET /` and its two assets (compiled into the binary: nothing is fetched from
//! elsewhere, and no build step is needed), plus `GET /api/performance/dashboard`, everything the
//! page shows in one answer. Sections read from the extension carry `available` and `error`, so
//! the page can say why one is empty.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{AppError, ErrorBody};
use super::extract::AppQuery;
use super::performance::{PerformanceStats, stats_of};
use crate::db::extension::{IndexSuggestion, QueryOrder, QueryStat, SlowQuery};
use crate::monitor::alerts::{AlertRecord, PendingAlert};
use crate::monitor::requests::EndpointStats;
use crate::monitor::trends::{self, TrendSeries};
use crate::resilience::NamedBreakerSnapshot;
use crate::services::advisor::AdviceParams;
use crate::services::health::HealthReport;
use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const STYLE_CSS: &str = include_str!("../../assets/dashboard/style.css");

/// What the page may load: its own script, style and API, nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

/// The dashboard page.
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn style_css() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

/// A panel fed by the extension.
#[derive(Debug, Serialize, ToSchema)]
pub struct Section<T> {
    pub available: bool,
    pub error: Option<String>,
    pub items: Vec<T>,
}

impl<T> Section<T> {
    fn of<E: std::fmt::Display>(result: Result<Vec<T>, E>) -> Self {
        match result {
            Ok(items) => Self { available: true, error: None, items },
            Err(e) => Self { available: false, error: Some(e.to_string()), items: Vec::new() },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Charts {
    pub latency_p50: TrendSeries,
    pub latency_p95: TrendSeries,
    pub latency_p99: TrendSeries,
    pub throughput: TrendSeries,
    pub error_rate: TrendSeries,
    pub cache_hit_rate: TrendSeries,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DashboardAlerts {
    pub firing: Vec<AlertRecord>,
    pub pending: Vec<PendingAlert>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub generated_at_ms: u64,
    pub instance: String,
    pub health: HealthReport,
    pub stats: PerformanceStats,
    pub charts: Charts,
    pub endpoints: Vec<EndpointStats>,
    #[schema(value_type = Object)]
    pub top_queries: Section<QueryStat>,
    #[schema(value_type = Object)]
    pub slow_queries: Section<SlowQuery>,
    #[schema(value_type = Object)]
    pub index_suggestions: Section<IndexSuggestion>,
    pub alerts: DashboardAlerts,
    pub breakers: Vec<NamedBreakerSnapshot>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DashboardQuery {
    /// History shown by the charts: 15m, 1h (default), 24h.
    pub window: Option<String>,
}

/// Everything the dashboard shows, in one answer.
#[utoipa::path(get, path = "/api/performance/dashboard", tag = "performance", params(DashboardQuery),
    responses((status = 200, body = Dashboard), (status = 400, body = ErrorBody)))]
pub async fn data(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<DashboardQuery>,
) -> Result<Json<Dashboard>, AppError> {
    let window = trends::parse_duration("window", q.window.as_deref().unwrap_or("1h"))?;
    let monitor = &state.monitor;
    let now = monitor.clock().unix_ms();
    // Charts get up to 360 points: 10 s steps for the last hour.
    let step = Some((window / 360).max(10_000));
    let chart = |metric: &str| monitor.trends().query(metric, window, step, now);
    let charts = Charts {
        latency_p50: chart("http.latency_p50")?,
        latency_p95: chart("http.latency_p95")?,
        latency_p99: chart("http.latency_p99")?,
        throughput: chart("http.requests_per_second")?,
        error_rate: chart("http.error_rate")?,
        cache_hit_rate: chart("cache.hit_rate")?,
    };
    let (health, top, slow, suggestions) = tokio::join!(
        state.health.report(),
        state.db.top_queries(QueryOrder::TotalTime, 10),
        state.db.slow_queries(10),
        state.advisor.suggestions(AdviceParams::default()),
    );
    let mut endpoints = monitor.requests().endpoints();
    endpoints.sort_by_key(|e| std::cmp::Reverse(e.requests));
    endpoints.truncate(12);
    let (firing, pending) = monitor.with_alerts(|a| (a.firing(), a.pending()));
    Ok(Json(Dashboard {
        generated_at_ms: now,
        instance: monitor.instance().to_owned(),
        stats: stats_of(monitor, &state.health),
        health,
        charts,
        endpoints,
        top_queries: Section::of(top),
        slow_queries: Section::of(slow),
        index_suggestions: Section::of(suggestions.map(|s| s.suggestions)),
        alerts: DashboardAlerts { firing, pending },
        breakers: monitor.breakers().all().iter().map(|b| b.snapshot()).collect(),
    }))
}
