//! The dashboard in a real browser: Debian's Chromium, headless, loads `GET /` from a daemon
//! that served traffic over two simulated minutes (a manual clock, collections run by the test),
//! and the test reads the DOM the page built: every chart must hold points, every table rows.
//! The screenshot is written to `target/screenshots/dashboard.png` for people to look at.
//!
//! The page marks what it drew (`data-points` on each chart, `data-rows` on each table body,
//! `data-state` on the body), so the checks read facts, not pixels.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::{TestApp, config, database_url, get, pg, redis_url, table, unique};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use voxperfd::clock::Clock as _;
use voxperfd::monitor::requests::Finished;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with the flags that work on a machine without network or display;
/// `extra` says what to produce (`--dump-dom`, `--screenshot=...`). Returns stdout.
fn chromium(url: &str, extra: &[String]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser test needs Debian's chromium package (scripts/deps.sh installs it)"
    );
    let profile = std::env::temp_dir().join(unique("voxperf-chromium-profile"));
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Lets the page's fetches and timers run (virtual time stops while loading).
            "--virtual-time-budget=15000",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `attr` on the element whose start tag has `id="<id>"`.
fn attribute(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!("{attr}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_owned())
}

fn number(dom: &str, id: &str, attr: &str) -> usize {
    attribute(dom, id, attr)
        .unwrap_or_else(|| panic!("#{id} has no {attr}"))
        .parse()
        .unwrap_or_else(|_| panic!("#{id} {attr} is not a number"))
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/dashboard.png")
}

#[tokio::test]
async fn the_dashboard_shows_charts_and_tables_filled_with_the_daemons_data() {
    let client = pg().await;
    let t = table(&client, "dashboard").await;
    // A slow query for the slow-query panel (this session captures everything).
    client.batch_execute(&format!("SET voxperf.slow_query_threshold = 0; SELECT count(*) FROM {t}")).await.unwrap();
    let (db, redis) = (database_url(), redis_url());
    let prefix = format!("{}:", unique("dashboard"));
    let instance = unique("dashboard-browser");
    let app = TestApp::start(config(&[
        ("DATABASE_URL", &db),
        ("REDIS_URL", &redis),
        ("REDIS_KEY_PREFIX", &prefix),
        ("VOXPERF_INSTANCE", &instance),
        ("ALERT_RESPONSE_TIME_THRESHOLD", "20"),
        ("ALERT_PENDING_DURATION", "30000"),
    ]))
    .await;
    let put = Request::put("/api/cache/entries/popular:numbers")
        .header("content-type", "application/json")
        .body(Body::from(json!({"value": ["+15550001"], "ttl": 3600}).to_string()))
        .unwrap();
    app.send(put).await;
    // Two minutes of traffic, one collection every 10 s.
    for round in 0..12u64 {
        for i in 0..(5 + round) {
            app.send(get("/api/cache/entries/popular:numbers")).await;
            app.send(get(&format!("/api/cache/entries/absent:{i}"))).await;
            app.query(&format!("SELECT v FROM {t} WHERE id = $1"), json!([i % 3])).await;
        }
        // A slow endpoint (over 5 % of the requests, so it sets the p95), for the response-time
        // alert to fire after its pending duration.
        for _ in 0..10 {
            app.state.monitor.requests().record(Finished {
                method: "GET",
                route: "/api/reports/daily",
                path: "/api/reports/daily",
                status: 200,
                took: Duration::from_millis(400 + round * 10),
                request_id: None,
                at_ms: app.clock.unix_ms(),
            });
        }
        app.state.monitor.collect().await;
        app.clock.advance(Duration::from_secs(10));
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = {
        let (router, stop) = (app.router.clone(), shutdown.clone());
        tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await.unwrap();
        })
    };

    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&url, &["--dump-dom".to_owned()])
    })
    .await
    .unwrap();
    assert_eq!(attribute(&dom, "body", "data-state"), None, "sanity: body has no id");
    assert!(dom.contains("data-state=\"ready\""), "the page loaded its data: {}", &dom[..dom.len().min(2000)]);
    for chart in ["chart-latency", "chart-throughput", "chart-errors", "chart-cache"] {
        let points = number(&dom, chart, "data-points");
        assert!(points >= 10, "{chart} shows {points} points");
    }
    assert!(dom.matches("data-series=").count() >= 6, "lines are drawn");
    assert!(number(&dom, "endpoints-body", "data-rows") >= 3);
    assert!(dom.contains("/api/cache/entries/{key}"), "routes appear by template");
    assert!(number(&dom, "queries-body", "data-rows") >= 1, "top queries from voxperf.query_stats");
    assert!(number(&dom, "slow-body", "data-rows") >= 1, "slow queries from voxperf.slow_queries");
    assert_eq!(number(&dom, "breakers-body", "data-rows"), 2);
    assert!(number(&dom, "alerts-body", "data-rows") >= 1, "the response-time alert is shown");
    assert!(dom.contains("high_response_time"));
    let suggest: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                            WHERE n.nspname = 'voxperf' AND p.proname = 'suggest_indexes')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    match attribute(&dom, "suggestions-body", "data-unavailable") {
        Some(reason) => assert!(!suggest && reason.contains("voxperf.suggest_indexes"), "{reason}"),
        None => assert!(suggest, "suggestions shown although the function is missing"),
    }

    let shot = screenshot_path();
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    let args = vec![format!("--screenshot={}", shot.display()), "--window-size=1440,2000".to_owned()];
    tokio::task::spawn_blocking(move || chromium(&url, &args)).await.unwrap();
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 50_000, "screenshot written to {} ({size} bytes)", shot.display());
    eprintln!("dashboard screenshot: {}", shot.display());
    shutdown.cancel();
    server.await.unwrap();
}
