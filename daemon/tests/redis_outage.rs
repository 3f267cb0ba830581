//! Redis stopped under a running daemon (its own redis-server, so other tests are not disturbed):
//! answers keep coming, the breaker opens, health says degraded; Redis back: it recovers alone.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{OwnRedis, TestApp, body_json, config, database_url, get, pg, require_watch_table, table};
use serde_json::{Value, json};

async fn breaker_state(app: &TestApp, name: &str) -> String {
    let list = body_json(app.send(get("/api/circuit-breakers")).await).await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .map(|b| b["state"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn health(app: &TestApp) -> (StatusCode, Value) {
    let response = app.send(get("/api/performance/health")).await;
    (response.status(), body_json(response).await)
}

async fn put(app: &TestApp, key: &str, value: Value) -> StatusCode {
    let request = Request::put(format!("/api/cache/entries/{key}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "value": value }).to_string()))
        .unwrap();
    app.send(request).await.status()
}

#[tokio::test]
async fn redis_going_down_keeps_answers_coming_and_recovers_by_itself() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "outage").await;
    let mut redis = OwnRedis::start();
    let (db, redis_url) = (database_url(), redis.url());
    let app = TestApp::start(config(&[
        ("DATABASE_URL", &db),
        ("REDIS_URL", &redis_url),
        ("REDIS_KEY_PREFIX", "outage:"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3"),
        ("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", "30000"),
        ("CIRCUIT_BREAKER_HALF_OPEN_CALLS", "1"),
    ]))
    .await;
    let sql = format!("SELECT v FROM {t} WHERE id = $1");
    assert_eq!(app.query(&sql, json!([1])).await.1["cache"], "MISS");
    assert_eq!(health(&app).await.1["status"], "ok");

    redis.stop();
    for round in 0..8 {
        let (status, body) = app.query(&sql, json!([1])).await;
        assert_eq!((status, &body["cache"]), (StatusCode::OK, &json!("HIT")), "round {round}: L1 answers");
        let (status, body) = app.query(&sql, json!([2])).await;
        assert_eq!(status, StatusCode::OK, "round {round}: a miss goes to Postgres: {body}");
        assert_eq!(put(&app, &format!("k{round}"), json!(round)).await, StatusCode::NO_CONTENT);
        assert_eq!(app.send(get(&format!("/api/cache/entries/k{round}"))).await.status(), StatusCode::OK);
    }
    assert_eq!(breaker_state(&app, "redis").await, "open");
    let (status, report) = health(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["status"], "degraded");
    assert_eq!(report["components"]["redis"]["status"], "degraded");
    assert_eq!(report["components"]["postgres"]["status"], "ok");

    // Invalidation still works on L1 alone while Redis is down.
    let g = app.generation(&format!("public.{t}"));
    client.execute(&format!("UPDATE {t} SET v = 'during-outage' WHERE id = 1"), &[]).await.unwrap();
    app.invalidated(&format!("public.{t}"), g).await;
    assert_eq!(app.query(&sql, json!([1])).await.1["rows"], json!([{"v": "during-outage"}]));

    redis.restart();
    let mut recovered = false;
    for _ in 0..20 {
        app.clock.advance(Duration::from_secs(30)); // past the recovery timeout
        app.query(&sql, json!([3])).await; // traffic is what probes Redis
        put(&app, "probe", json!(1)).await;
        if breaker_state(&app, "redis").await == "closed" {
            recovered = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(recovered, "the redis breaker closed again");
    assert_eq!(put(&app, "after", json!("back")).await, StatusCode::NO_CONTENT);
    let mut conn = redis::Client::open(redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let exists: i64 = redis::cmd("EXISTS").arg("outage:e:after").query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 1, "entries reach Redis again");
    let generation: u64 =
        redis::cmd("HGET").arg("outage:gen").arg(format!("table:public.{t}")).query_async(&mut conn).await.unwrap();
    assert!(generation >= app.generation(&format!("public.{t}")), "the outage's invalidation was pushed to Redis");
    let (_, report) = health(&app).await;
    assert_eq!(report["components"]["redis"]["status"], "ok", "{report}");
}
