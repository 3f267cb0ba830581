//! The monitor and the `/api/db/*` endpoints against the real Postgres with the voxperf
//! extension (and Redis), as `make test` starts them.
//!
//! The index-advice tests exercise `voxperf.suggest_indexes()` and `voxperf.index_migration()`
//! when the installed extension has them, and check the clear 501 answer when it does not: the
//! daemon never makes suggestions up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{body_json, config, database_url, get, pg, redis_url, unique};
use serde_json::{Value, json};
use tower::ServiceExt;
use voxperfd::AppState;
use voxperfd::clock::{Clock as _, ManualClock, SharedClock};
use voxperfd::monitor::trends::{TrendStore, Trends};

const TOKEN: &str = "db-monitoring-token";

struct Fixture {
    state: AppState,
    clock: Arc<ManualClock>,
    router: Router,
}

fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let (db, redis) = (database_url(), redis_url());
    let prefix = format!("{}:", unique("mon"));
    let instance = unique("monitoring-db-test");
    let mut vars = vec![
        ("DATABASE_URL", db.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("VOXPERF_ADMIN_TOKEN", TOKEN),
        ("VOXPERF_INSTANCE", instance.as_str()),
    ];
    vars.extend_from_slice(extra);
    let clock = Arc::new(ManualClock::new());
    let shared: SharedClock = clock.clone();
    let state = AppState::with_clock(config(&vars), shared).unwrap();
    Fixture { router: voxperfd::app(state.clone()), state, clock }
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        (response.status(), body_json(response).await)
    }
}

fn admin(uri: &str, body: &Value) -> Request<Body> {
    let mut request = common::post_json(uri, body);
    request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    request
}

/// Whether the extension has `voxperf.<name>` taking `min_improvement` and `max_indexes` (by
/// name: the daemon calls with named arguments).
async fn function_exists(name: &str) -> bool {
    pg().await
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                            WHERE n.nspname = 'voxperf' AND p.proname = $1
                              AND p.proargnames @> ARRAY['min_improvement', 'max_indexes'])",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn collections_read_postgres_redis_and_the_extensions_statement_statistics() {
    let f = fixture(&[]);
    let client = pg().await;
    let first = f.state.monitor.collect().await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert!(first.postgres.as_ref().unwrap().max_connections > 0);
    assert!(first.redis.as_ref().unwrap().used_memory_bytes > 0);
    let marker = unique("collect");
    for i in 0..20 {
        client.query(&format!("SELECT count(*) AS {marker} FROM pg_class WHERE oid > {i}"), &[]).await.unwrap();
    }
    // A slow query: this session's threshold at 0 ms captures every statement.
    client
        .batch_execute(&format!("SET voxperf.slow_query_threshold = 0; SELECT count(*) AS {marker}_slow FROM pg_class"))
        .await
        .unwrap();
    client.batch_execute("RESET voxperf.slow_query_threshold").await.unwrap();
    // Backends publish their pg_stat_database counters lazily (at most once a second).
    client.batch_execute("SELECT pg_stat_force_next_flush()").await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    f.clock.advance(Duration::from_secs(10));
    let second = f.state.monitor.collect().await;
    let pg = second.postgres.as_ref().unwrap();
    assert!(pg.commits >= 20 && pg.transactions_per_second > 0.0, "{pg:?}");
    let ext = second.extension.as_ref().expect("the extension is read");
    assert!(ext.calls >= 20 && ext.queries_per_second >= 2.0, "{ext:?}");
    assert!(ext.mean_ms.is_some() && ext.p95_ms.is_some());
    assert!(ext.new_slow_queries >= 1, "the slow query captured after the first collection is new: {ext:?}");
    assert!(ext.calls_total >= ext.calls && pg.commits_total >= pg.commits);
    let metrics = f.router.clone().oneshot(get("/metrics")).await.unwrap();
    let text = String::from_utf8(common::body_bytes(metrics).await.to_vec()).unwrap();
    for family in
        ["voxperf_postgres_transactions_total", "voxperf_db_statement_calls_total", "voxperf_redis_memory_used_bytes"]
    {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing");
    }
    let (_, series) = f.send(get("/api/performance/trends?metric=db.queries_per_second&window=5m")).await;
    assert_eq!(series["points"].as_array().unwrap().len(), 1, "{series}");
}

#[tokio::test]
async fn queries_are_listed_from_the_extension_sorted_and_limited() {
    let f = fixture(&[]);
    let client = pg().await;
    // Column aliases are not part of a statement's identity: a table of its own is.
    let marker = common::table(&client, "listed").await;
    for i in 0..5 {
        client.query(&format!("SELECT v FROM {marker} WHERE id = $1"), &[&i]).await.unwrap();
    }
    let (status, body) = f.send(get("/api/db/queries?sort=calls&limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sort"], "calls");
    let queries = body["queries"].as_array().unwrap();
    let calls: Vec<i64> = queries.iter().map(|q| q["calls"].as_i64().unwrap()).collect();
    assert!(calls.windows(2).all(|w| w[0] >= w[1]), "sorted by calls, descending");
    let ours =
        queries.iter().find(|q| q["query"].as_str().is_some_and(|t| t.contains(&marker))).expect("our statement");
    assert!(ours["calls"].as_i64().unwrap() >= 5);
    for field in ["mean_exec_time_ms", "p95_exec_time_ms", "p99_exec_time_ms", "first_seen_ms", "last_seen_ms"] {
        assert!(ours[field].is_number(), "{field}: {ours}");
    }
    let (_, two) = f.send(get("/api/db/queries?sort=p99&limit=2")).await;
    assert_eq!(two["queries"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn slow_queries_are_listed_newest_first_with_their_plans() {
    let f = fixture(&[]);
    let client = pg().await;
    let marker = common::table(&client, "slowlisted").await;
    client
        .batch_execute(&format!("SET voxperf.slow_query_threshold = 0; SELECT count(*) FROM {marker}"))
        .await
        .unwrap();
    let (status, body) = f.send(get("/api/db/slow-queries?limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body["slow_queries"].as_array().unwrap();
    let ours = list.iter().find(|q| q["query"].as_str().is_some_and(|t| t.contains(&marker))).expect("captured");
    assert!(ours["plan"].as_str().unwrap().contains(&format!("Seq Scan on {marker}")), "{ours}");
    assert_eq!(ours["username"], "postgres");
    let times: Vec<i64> = list.iter().map(|q| q["captured_at_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
}

/// The present case runs once the extension ships `voxperf.suggest_indexes` and
/// `voxperf.index_migration` (issue 3); until then the absent case is what is checked.
#[tokio::test]
async fn index_advice_comes_from_the_extension_functions_or_a_clear_501() {
    let dir = std::env::temp_dir().join(unique("voxperfd-migrations"));
    let dir_text = dir.display().to_string();
    let f = fixture(&[("VOXPERF_MIGRATIONS_DIR", dir_text.as_str())]);
    let suggest = function_exists("suggest_indexes").await;
    let migrate = function_exists("index_migration").await;
    let (status, body) = f.send(get("/api/db/index-suggestions?min_improvement=0.01&max_indexes=5")).await;
    if suggest {
        assert_eq!(status, StatusCode::OK, "{body}");
        for s in body["suggestions"].as_array().unwrap() {
            assert!(s["ddl"].as_str().unwrap().to_uppercase().contains("CREATE INDEX"), "{s}");
            assert!(s["cost_after"].as_f64().unwrap() <= s["cost_before"].as_f64().unwrap(), "{s}");
            assert!(s["improvement"].as_f64().unwrap() >= 0.01, "{s}");
        }
        let (_, again) = f.send(get("/api/db/index-suggestions?min_improvement=0.01&max_indexes=5")).await;
        assert_eq!(again["cached"], true, "served from the cache the second time");
        assert_eq!(again["suggestions"], body["suggestions"]);
        let (_, refreshed) =
            f.send(get("/api/db/index-suggestions?min_improvement=0.01&max_indexes=5&refresh=true")).await;
        assert_eq!(refreshed["cached"], false);
    } else {
        eprintln!("voxperf.suggest_indexes is not installed: checking the absent case only");
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
        assert_eq!(body["error"]["code"], "extension_function_missing");
        assert!(body["error"]["message"].as_str().unwrap().contains("voxperf.suggest_indexes"), "{body}");
    }
    let (status, body) = f.send(admin("/api/db/migrations", &json!({"min_improvement": 0.01}))).await;
    if migrate {
        // The extension's text is its own business (and depends on the workload at the time):
        // the daemon must write exactly what it got, into a new file each time.
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(body["error"]["code"], "nothing_to_migrate", "{body}");
        } else {
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let path = body["path"].as_str().unwrap().to_owned();
            assert!(path.starts_with(&dir_text), "{path}");
            let text = body["text"].as_str().unwrap().to_owned();
            assert!(!text.trim().is_empty());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
            let (status, second) = f.send(admin("/api/db/migrations", &json!({"min_improvement": 0.01}))).await;
            assert_eq!(status, StatusCode::CREATED, "{second}");
            assert_ne!(second["path"].as_str().unwrap(), path, "an existing file is never overwritten");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    } else {
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("voxperf.index_migration"), "{body}");
        assert!(!dir.exists(), "nothing written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn optimize_refreshes_suggestions_when_offered_and_warms_the_cache_from_the_warm_list() {
    let client = pg().await;
    let t = common::table(&client, "warm").await;
    let file = std::env::temp_dir().join(format!("{}.json", unique("warm")));
    let list = json!([
        {"key": "countries:list", "value": ["US", "FR"], "ttl": 600, "tags": ["countries"]},
        {"sql": format!("SELECT v FROM {t} WHERE id = $1"), "params": [1], "ttl": 600},
        {"sql": "SELECT * FORM nothing"},
    ]);
    std::fs::write(&file, list.to_string()).unwrap();
    let path = file.display().to_string();
    let (db, redis) = (database_url(), redis_url());
    let prefix = format!("{}:", unique("optimize"));
    // The listener must run: results computed from tables are served only while it is connected.
    let app = common::TestApp::start(config(&[
        ("DATABASE_URL", db.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("VOXPERF_ADMIN_TOKEN", TOKEN),
        ("CACHE_WARM_FILE", path.as_str()),
    ]))
    .await;
    let f = Fixture { state: app.state.clone(), clock: app.clock.clone(), router: app.router.clone() };
    let (status, report) = f.send(admin("/api/admin/optimize", &json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let warm = &report["cache_warm"];
    assert_eq!(warm["count"], 2, "{report}");
    assert_eq!(warm["status"], "failed", "the bad entry is reported");
    assert!(warm["failures"][0].as_str().unwrap().contains("entry 2"), "{report}");
    let (status, value) = f.send(get("/api/cache/entries/countries:list")).await;
    assert_eq!((status, value), (StatusCode::OK, json!(["US", "FR"])));
    let (_, hit) = f
        .send(common::post_json(
            "/api/cache/query",
            &json!({"sql": format!("SELECT v FROM {t} WHERE id = $1"), "params": [1]}),
        ))
        .await;
    assert_eq!(hit["cache"], "HIT", "the warm list's statement is cached");
    let suggestions = &report["index_suggestions"];
    if function_exists("suggest_indexes").await {
        assert_eq!(suggestions["status"], "done", "{report}");
    } else {
        assert_eq!(suggestions["status"], "skipped", "{report}");
        assert!(suggestions["detail"].as_str().unwrap().contains("voxperf.suggest_indexes"));
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn trend_buckets_written_to_postgres_are_read_back_by_a_new_store() {
    let db = Arc::new(
        voxperfd::db::Db::new(
            &voxperfd::config::Secret::new(database_url()),
            2,
            voxperfd::resilience::Breaker::new("test", Default::default(), Arc::new(ManualClock::new())),
        )
        .unwrap(),
    );
    let instance = unique("trend-store");
    let clock = ManualClock::new();
    let now = clock.unix_ms();
    let written = Trends::default();
    for i in 0..30u64 {
        written.record("system.cpu", now - 300_000 + i * 10_000, i as f64);
    }
    written.record_custom("orders.placed", "count", now, 3.0).unwrap();
    let store = TrendStore::new(db.clone(), instance.clone());
    let minutes: std::collections::BTreeSet<u64> = (0..30u64).map(|i| (now - 300_000 + i * 10_000) / 60_000).collect();
    assert_eq!(written.flush(&store).await.unwrap(), 30 + minutes.len() + 2, "every touched bucket of both rollups");
    assert_eq!(written.flush(&store).await.unwrap(), 0, "nothing new to write");
    let read = Trends::default();
    assert!(read.load(&TrendStore::new(db, instance), now).await.unwrap() > 0);
    let a = written.query("system.cpu", 600_000, Some(10_000), now).unwrap();
    let b = read.query("system.cpu", 600_000, Some(10_000), now).unwrap();
    assert_eq!(serde_json::to_value(&a.points).unwrap(), serde_json::to_value(&b.points).unwrap());
    assert_eq!(read.query("custom.orders.placed", 600_000, None, now).unwrap().unit, "count");
}
