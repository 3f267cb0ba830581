//! HTTP contract tests of the performance monitor: `app(state).oneshot(...)` with no Postgres or
//! Redis (the database URL points nowhere, so collections see the database as unreachable), a
//! manual clock, and collections run by the test itself.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{body_bytes, body_json, config, get};
use serde_json::{Value, json};
use tower::ServiceExt;
use voxperfd::AppState;
use voxperfd::clock::{ManualClock, SharedClock};
use voxperfd::monitor::requests::Finished;

const TOKEN: &str = "monitoring-admin-token";

struct Fixture {
    state: AppState,
    clock: Arc<ManualClock>,
    router: Router,
}

fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let mut vars = vec![
        ("REDIS_ENABLED", "false"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
        ("VOXPERF_ADMIN_TOKEN", TOKEN),
        ("VOXPERF_INSTANCE", "contract-tests"),
    ];
    vars.extend_from_slice(extra);
    let clock = Arc::new(ManualClock::new());
    let shared: SharedClock = clock.clone();
    let state = AppState::with_clock(config(&vars), shared).unwrap();
    Fixture { router: voxperfd::app(state.clone()), state, clock }
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(request).await.unwrap()
    }

    async fn json(&self, uri: &str) -> (StatusCode, Value) {
        let response = self.send(get(uri)).await;
        (response.status(), body_json(response).await)
    }

    /// Records a finished request as the middleware would.
    fn request(&self, route: &str, status: u16, ms: u64) {
        self.state.monitor.requests().record(Finished {
            method: "GET",
            route,
            path: route,
            status,
            took: Duration::from_millis(ms),
            request_id: Some("rid-1"),
            at_ms: self.clock.unix_ms(),
        });
    }
}

fn admin(mut request: Request<Body>) -> Request<Body> {
    request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    request
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    common::post_json(uri, body)
}

use voxperfd::clock::Clock as _;

#[tokio::test]
async fn the_middleware_counts_requests_by_route_template_and_status() {
    let f = fixture(&[]);
    let put = Request::put("/api/cache/entries/a")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"value": 1}"#))
        .unwrap();
    f.send(put).await;
    f.send(get("/api/cache/entries/a")).await;
    f.send(get("/api/cache/entries/b")).await;
    f.send(get("/no/such/page")).await;
    let (status, body) = f.json("/api/performance/endpoints?sort=route").await;
    assert_eq!(status, StatusCode::OK);
    let endpoints = body["endpoints"].as_array().unwrap();
    let find = |method: &str, route: &str| {
        endpoints.iter().find(|e| e["method"] == method && e["route"] == route).cloned().unwrap_or(Value::Null)
    };
    let entries = find("GET", "/api/cache/entries/{key}");
    assert_eq!(entries["requests"], 2, "{body}");
    assert_eq!(entries["statuses"], json!({"200": 1, "404": 1}));
    assert_eq!(entries["client_errors"], 1);
    assert!(entries["p95_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(find("PUT", "/api/cache/entries/{key}")["requests"], 1);
    assert_eq!(find("GET", "(unmatched)")["requests"], 1, "unknown paths share one series");
    let (status, body) = f.json("/api/performance/endpoints?sort=fastest").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_parameter")));
}

#[tokio::test]
async fn unknown_performance_paths_are_404_in_the_json_error_shape() {
    let f = fixture(&[]);
    for uri in ["/api/performance/nope", "/api/db/nope", "/dashboard/missing.js"] {
        let (status, body) = f.json(uri).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("route_not_found")), "{uri}");
    }
    let response = f.send(Request::delete("/api/performance/stats").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body_json(response).await["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn stats_report_totals_and_the_latest_collection() {
    let f = fixture(&[]);
    let (status, before) = f.json("/api/performance/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(before["current"], Value::Null, "no collection yet");
    assert_eq!(before["instance"], "contract-tests");
    f.request("/api/x", 200, 10);
    f.request("/api/x", 500, 30);
    f.state.monitor.collect().await;
    let (_, stats) = f.json("/api/performance/stats").await;
    assert_eq!(stats["totals"]["errors"], 1);
    assert!(stats["totals"]["requests"].as_u64().unwrap() >= 3, "{stats}");
    let current = &stats["current"];
    assert!(current["system"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(current["process"]["resident_bytes"].as_u64().unwrap() > 0);
    assert!(current["errors"]["postgres"].is_string(), "the unreachable database is reported: {current}");
    assert_eq!(current["redis"], Value::Null, "Redis is disabled");
}

#[tokio::test]
async fn slow_requests_are_listed_newest_first_with_their_request_id() {
    let f = fixture(&[("ALERT_RESPONSE_TIME_THRESHOLD", "100")]);
    f.request("/api/fast", 200, 50);
    f.request("/api/slow", 200, 150);
    f.clock.advance(Duration::from_secs(1));
    f.request("/api/slower", 503, 900);
    let (status, body) = f.json("/api/performance/slow-requests?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["threshold_ms"], 100.0);
    assert_eq!(body["total"], 2);
    let routes: Vec<&str> = body["requests"].as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(routes, ["/api/slower", "/api/slow"]);
    assert_eq!(body["requests"][0]["status"], 503);
    assert_eq!(body["requests"][0]["request_id"], "rid-1");
    let (status, _) = f.json("/api/performance/slow-requests?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn trends_list_the_catalogue_and_refuse_unknown_metrics_in_the_json_error_shape() {
    let f = fixture(&[]);
    let (status, catalogue) = f.json("/api/performance/trends").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> =
        catalogue["metrics"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    for expected in ["http.latency_p95", "http.requests_per_second", "cache.hit_rate", "system.cpu", "db.query_p95"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let (status, body) = f.json("/api/performance/trends?metric=no.such.metric").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown_metric")));
    assert!(body["error"]["message"].as_str().unwrap().contains("no.such.metric"));
    let (status, body) = f.json("/api/performance/trends?metric=system.cpu&window=2d").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_parameter")));
    let (status, body) = f.json("/api/performance/trends?metric=system.cpu&window=soon").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_parameter")));
    let (status, body) = f.json("/api/performance/trends?metric=system.cpu&colour=red").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
}

#[tokio::test]
async fn collections_become_trend_points_at_the_requested_step() {
    let f = fixture(&[]);
    for _ in 0..6 {
        f.request("/api/x", 200, 20);
        f.state.monitor.collect().await;
        f.clock.advance(Duration::from_secs(10));
    }
    let (status, series) = f.json("/api/performance/trends?metric=http.latency_p95&window=5m&step=10s").await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(series["unit"], "ms");
    assert_eq!(series["resolution_ms"], 10_000);
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 6, "{series}");
    assert!(points.iter().all(|p| p["avg"].as_f64().unwrap() > 10.0 && p["avg"].as_f64().unwrap() <= 25.0));
    let (_, minute) = f.json("/api/performance/trends?metric=system.memory&window=1h&step=1m").await;
    assert_eq!(minute["resolution_ms"], 60_000);
    let total: u64 = minute["points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 6, "every collection lands in the minute rollup too");
}

#[tokio::test]
async fn a_response_time_alert_fires_after_the_pending_duration_and_resolves_after_the_resolve_duration() {
    let f = fixture(&[
        ("ALERT_RESPONSE_TIME_THRESHOLD", "100"),
        ("ALERT_PENDING_DURATION", "20000"),
        ("ALERT_RESOLVE_DURATION", "20000"),
    ]);
    let firing = |body: &Value| body["firing"].as_array().unwrap().iter().any(|a| a["rule"] == "high_response_time");
    // Slow traffic at t = 0 s and 10 s: pending, not firing.
    for _ in 0..2 {
        f.request("/api/x", 200, 500);
        f.state.monitor.collect().await;
        let (_, alerts) = f.json("/api/performance/alerts").await;
        assert!(!firing(&alerts), "fired before the pending duration: {alerts}");
        assert!(alerts["pending"].as_array().unwrap().iter().any(|a| a["rule"] == "high_response_time"));
        f.clock.advance(Duration::from_secs(10));
    }
    // t = 20 s: held for the whole duration.
    f.request("/api/x", 200, 500);
    f.state.monitor.collect().await;
    let (status, alerts) = f.json("/api/performance/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(firing(&alerts), "{alerts}");
    let record =
        alerts["firing"].as_array().unwrap().iter().find(|a| a["rule"] == "high_response_time").unwrap().clone();
    assert_eq!(record["severity"], "warning");
    assert!(record["message"].as_str().unwrap().contains("ALERT_RESPONSE_TIME_THRESHOLD"));
    let (_, health) = f.json("/api/performance/health").await;
    assert_eq!(health["components"]["latency"]["status"], "degraded");
    // Fast again: still firing until clear for 20 s (no flapping), then resolved.
    for _ in 0..2 {
        f.clock.advance(Duration::from_secs(10));
        f.request("/api/x", 200, 1);
        f.state.monitor.collect().await;
    }
    let (_, alerts) = f.json("/api/performance/alerts").await;
    assert!(firing(&alerts), "resolved before the resolve duration: {alerts}");
    f.clock.advance(Duration::from_secs(10));
    f.request("/api/x", 200, 1);
    f.state.monitor.collect().await;
    let (_, alerts) = f.json("/api/performance/alerts").await;
    assert!(!firing(&alerts), "{alerts}");
    let history = alerts["history"].as_array().unwrap();
    let resolved = history.iter().find(|a| a["rule"] == "high_response_time").unwrap();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["id"], record["id"]);
    assert!(resolved["resolved_ms"].as_u64().unwrap() > resolved["fired_ms"].as_u64().unwrap());
}

#[tokio::test]
async fn health_scores_every_component_and_answers_503_when_the_database_is_down() {
    let f = fixture(&[]);
    f.state.monitor.collect().await;
    let response = f.send(get("/api/performance/health")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report = body_json(response).await;
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["components"]["postgres"]["score"], 0.0);
    let score = report["score"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&score));
    let mut weights = 0.0;
    for name in ["latency", "errors", "cpu", "memory", "cache_hit_rate", "postgres", "breakers"] {
        let c = &report["components"][name];
        assert!(c["score"].is_number(), "{name} has no score: {report}");
        weights += c["weight"].as_f64().unwrap();
    }
    assert_eq!(weights, 100.0, "documented weights add up to 100");
    let (_, stats) = f.json("/api/performance/stats").await;
    assert_eq!(stats["health"]["status"], "unhealthy", "stats carry the latest health report");
}

#[tokio::test]
async fn custom_metrics_are_recorded_listed_and_trended() {
    let f = fixture(&[]);
    let sample = json!({"name": "api.response_time", "value": 250, "unit": "ms", "tags": {"endpoint": "/api/numbers"}});
    let response = f.send(post("/api/performance/metrics", &sample)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(body_json(response).await, json!({"recorded": true, "trend": "custom.api.response_time"}));
    let series = f.state.monitor.measure_async("database.query", async { 42 }).await;
    assert_eq!(series, 42, "measure_async returns the future's output");
    let mut tags = BTreeMap::new();
    tags.insert("db".to_owned(), "main".to_owned());
    f.state.monitor.record_metric("api.response_time", 150.0, "ms", tags).unwrap();
    let (_, stats) = f.json("/api/performance/stats").await;
    let custom = stats["custom_metrics"].as_array().unwrap();
    assert_eq!(custom.len(), 3, "{custom:?}");
    assert!(custom.iter().any(|c| c["name"] == "database.query" && c["unit"] == "ms" && c["count"] == 1));
    let (status, trend) = f.json("/api/performance/trends?metric=custom.api.response_time&window=5m").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(trend["points"][0]["count"], 2);
    assert_eq!(trend["points"][0]["avg"], 200.0);
    for bad in [
        json!({"name": "9 lives", "value": 1, "unit": "ms"}),
        json!({"name": "ok", "value": 1, "unit": ""}),
        json!({"name": "ok", "value": "one", "unit": "ms"}),
        json!({"name": "ok", "unit": "ms"}),
    ] {
        let response = f.send(post("/api/performance/metrics", &bad)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(body_json(response).await["error"]["code"].is_string());
    }
}

#[tokio::test]
async fn reset_needs_the_admin_token_and_clears_request_metrics() {
    let f = fixture(&[]);
    f.request("/api/x", 200, 5);
    let response = f.send(post("/api/performance/reset", &json!({}))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(response).await["error"]["code"], "unauthorized");
    let response = f.send(admin(post("/api/performance/reset", &json!({})))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await["reset"], true);
    let (_, body) = f.json("/api/performance/endpoints").await;
    let routes: Vec<&str> =
        body["endpoints"].as_array().unwrap().iter().map(|e| e["route"].as_str().unwrap()).collect();
    assert!(!routes.contains(&"/api/x"), "{routes:?}");
}

#[tokio::test]
async fn the_report_reads_as_json_and_as_markdown() {
    let f = fixture(&[]);
    f.request("/api/numbers", 200, 12);
    f.state.monitor.collect().await;
    let (status, report) = f.json("/api/performance/report?window=15m").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["window_ms"], 900_000);
    assert!(report["top_queries_error"].is_string(), "the unreachable database is said: {report}");
    assert!(!report["findings"].as_array().unwrap().is_empty());
    assert!(report["summaries"].as_array().unwrap().iter().any(|s| s["metric"] == "system.cpu"));
    let response = f.send(get("/api/performance/report?format=markdown")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/markdown"));
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    assert!(text.starts_with("# voxperf performance report"), "{text}");
    assert!(text.contains("| /api/numbers |") || text.contains("/api/numbers"), "{text}");
    let (status, body) = f.json("/api/performance/report?format=pdf").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_parameter")));
}

#[tokio::test]
async fn the_dashboard_page_and_assets_are_served_by_the_daemon_with_a_strict_policy() {
    let f = fixture(&[]);
    let response = f.send(get("/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers().clone();
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    assert!(html.contains("/dashboard/app.js") && html.contains("chart-latency"));
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing is fetched from elsewhere");
    for (path, kind) in [("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")] {
        let response = f.send(get(path)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
    }
    f.request("/api/x", 200, 3);
    f.state.monitor.collect().await;
    let (status, data) = f.json("/api/performance/dashboard?window=15m").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(data["top_queries"]["available"], false, "the unreachable database is said: {data}");
    assert!(data["top_queries"]["error"].is_string());
    assert_eq!(data["breakers"].as_array().unwrap().len(), 2);
    assert!(data["charts"]["latency_p95"]["points"].is_array());
    assert!(data["endpoints"].as_array().unwrap().iter().any(|e| e["route"] == "/api/x"));
}

#[tokio::test]
async fn db_endpoints_validate_their_parameters_before_touching_the_database() {
    let f = fixture(&[]);
    for (uri, code) in [
        ("/api/db/queries?sort=fastest", "invalid_parameter"),
        ("/api/db/queries?limit=0", "invalid_parameter"),
        ("/api/db/slow-queries?limit=100000", "invalid_parameter"),
        ("/api/db/index-suggestions?min_improvement=3", "invalid_parameter"),
        ("/api/db/index-suggestions?max_indexes=many", "invalid_query"),
    ] {
        let (status, body) = f.json(uri).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{uri}: {body}");
    }
    let (status, body) = f.json("/api/db/queries").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let response = f.send(post("/api/db/migrations", &json!({}))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "migrations are an admin operation");
    let response = f.send(post("/api/admin/optimize", &json!({}))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_follow_the_prometheus_text_format_and_naming_conventions() {
    let f = fixture(&[]);
    f.send(get("/healthz")).await;
    f.send(get("/api/cache/entries/k")).await;
    f.state.monitor.record_metric("api.response_time", 250.0, "ms", BTreeMap::new()).unwrap();
    f.state.monitor.collect().await;
    f.send(get("/api/performance/health")).await;
    let response = f.send(get("/metrics")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain; version=0.0.4; charset=utf-8");
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    let docs = &scrape.docs;
    for name in [
        "voxperf_http_requests_total",
        "voxperf_http_request_duration_seconds",
        "voxperf_system_cpu_usage_ratio",
        "voxperf_process_resident_memory_bytes",
        "voxperf_circuit_breaker_state",
        "voxperf_alert_firing",
        "voxperf_health_score_ratio",
        "voxperf_custom_metric_last",
    ] {
        assert!(docs.contains_key(name), "{name} has no HELP");
    }
    // Every TYPE line's family is unique and appears before its samples.
    let mut types = std::collections::HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(types.insert(line.split_whitespace().nth(2).unwrap().to_owned()), "duplicate {line}");
    }
    let mut healthz_count = None;
    let mut healthz_inf = None;
    for s in &scrape.samples {
        // Conventions: prefix, and counters end in _total.
        assert!(s.metric.starts_with("voxperf_"), "{}", s.metric);
        if let prometheus_parse::Value::Counter(_) = s.value {
            assert!(s.metric.ends_with("_total"), "{} is a counter without _total", s.metric);
        }
        if s.metric == "voxperf_http_request_duration_seconds"
            && s.labels.get("route") == Some("/healthz")
            && let prometheus_parse::Value::Histogram(buckets) = &s.value
        {
            let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "buckets are cumulative: {counts:?}");
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
            healthz_inf = Some(inf.count);
            assert!(buckets.len() > 10, "explicit buckets");
        }
        if s.metric == "voxperf_http_request_duration_seconds_count" && s.labels.get("route") == Some("/healthz") {
            healthz_count = Some(s.value.clone());
        }
        if s.metric == "voxperf_http_requests_total" && s.labels.get("route") == Some("/api/cache/entries/{key}") {
            assert_eq!(s.labels.get("status"), Some("404"));
        }
    }
    assert_eq!(healthz_inf, Some(1.0), "the +Inf bucket counts the one /healthz request");
    assert!(
        matches!(healthz_count, Some(prometheus_parse::Value::Untyped(n)) | Some(prometheus_parse::Value::Counter(n)) if n == 1.0),
        "{healthz_count:?}"
    );
    assert!(text.contains("le=\"0.0025\""), "bucket bounds are in seconds");
}
