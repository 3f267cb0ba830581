//! The database-backed answers, against a real PostgreSQL: search, one number, a user's numbers,
//! reserving (200, then 409), the usage report, per-user analytics and the account.
//!
//! Runs only when `DATABASE_URL` is set (any database of the server; the role must be allowed to
//! create databases), and is skipped with a message otherwise. It creates its own database
//! `voxlink_demo_test_<pid>`, loads `sql/schema.sql` and a handful of rows, and drops the
//! database at the end, also when a check fails.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_postgres::NoTls;
use tower::ServiceExt;
use voxlink_demo::db::Db;
use voxlink_demo::{AppState, app};

const SCHEMA: &str = include_str!("../../sql/schema.sql");

/// Two users; numbers in two US areas and in GB, one of them ACTIVE and owned by user 1; usage on
/// that number 6 hours, 1 day, 2 days and 40 days ago.
const DATA: &str = r#"
INSERT INTO "User" (id, email, name, plan) VALUES
    (1, 'ada@example.com', 'Ada', 'business'),
    (2, 'bob@example.com', 'Bob', 'free');
INSERT INTO "VirtualNumber" (id, number, country_code, area_code, status, owner_id, features, monthly_price) VALUES
    (1, '+12125550101', 'US', '212', 'AVAILABLE', NULL, '["voice", "sms"]', 1.00),
    (2, '+12125550102', 'US', '212', 'AVAILABLE', NULL, '["voice"]', 2.50),
    (3, '+12125550103', 'US', '212', 'ACTIVE', 1, '["voice", "sms", "mms"]', 3.00),
    (4, '+14155550104', 'US', '415', 'AVAILABLE', NULL, '[]', 1.25),
    (5, '+442055500105', 'GB', '20', 'AVAILABLE', NULL, '["sms"]', 4.00);
INSERT INTO "UsageRecord" (number_id, "timestamp", kind, duration_seconds, cost) VALUES
    (3, now() - interval '6 hours', 'call_in', 120, 0.0200),
    (3, now() - interval '2 days', 'call_in', 60, 0.0100),
    (3, now() - interval '1 day', 'sms_out', 0, 0.0075),
    (3, now() - interval '40 days', 'call_out', 300, 0.1500);
"#;

#[tokio::test]
async fn database_backed_endpoints() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:28815/voxperf) to run");
        return;
    };
    let admin_config: tokio_postgres::Config = url.parse().expect("DATABASE_URL");
    let admin = connect(&admin_config).await;
    let name = format!("voxlink_demo_test_{}", std::process::id());
    // Two statements: a multi-statement string runs as one transaction, which DROP DATABASE refuses.
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();

    let mut config = admin_config.clone();
    config.dbname(&name);
    // The checks run in their own task so that a failed one still lets the database be dropped.
    let checks = tokio::spawn(async move {
        let client = connect(&config).await;
        client.batch_execute(SCHEMA).await.expect("loading sql/schema.sql");
        client.batch_execute(DATA).await.expect("loading the test rows");
        run_checks(&app(AppState::new(Db::new(config).unwrap()))).await;
    })
    .await;

    // FORCE: the app's pool may still hold connections (Postgres 13+).
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
    if let Err(e) = checks {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config.connect(NoTls).await.expect("connecting to DATABASE_URL");
    tokio::spawn(connection);
    client
}

async fn run_checks(app: &Router) {
    search_filters_by_country_area_and_status_in_id_order(app).await;
    a_number_by_id_is_tagged_with_its_id(app).await;
    a_users_numbers(app).await;
    reserving_succeeds_once_then_conflicts(app).await;
    usage_report_covers_the_last_n_days(app).await;
    analytics_and_account_are_the_credentials_users(app).await;
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let tag = response.headers().get("cache-tag").map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, tag, serde_json::from_slice(&bytes).unwrap())
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Option<String>, Value) {
    call(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_as(app: &Router, uri: &str, user: i64) -> (StatusCode, Option<String>, Value) {
    let request = Request::get(uri).header("Authorization", format!("Bearer user-{user}")).body(Body::empty()).unwrap();
    call(app, request).await
}

fn ids(body: &Value) -> Vec<i64> {
    body["numbers"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect()
}

const NUMBERS_TAG: &str = r#"table:public."VirtualNumber""#;

async fn search_filters_by_country_area_and_status_in_id_order(app: &Router) {
    let (status, tag, body) = get(app, "/api/numbers/search?country=US&area=212").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tag.as_deref(), Some(NUMBERS_TAG));
    assert_eq!(ids(&body), [1, 2]);
    assert_eq!(body["count"], 2);
    let first = &body["numbers"][0];
    assert_eq!(first["number"], "+12125550101");
    assert_eq!(first["monthly_price"], "1.00");
    assert_eq!(first["features"], json!(["voice", "sms"]));
    assert_eq!(first["owner_id"], Value::Null);
    assert!(first["updated_at"].as_str().unwrap().ends_with('Z'), "{first}");

    assert_eq!(ids(&get(app, "/api/numbers/search?country=us").await.2), [1, 2, 4]);
    assert_eq!(ids(&get(app, "/api/numbers/search?country=US&limit=1").await.2), [1]);
    assert_eq!(ids(&get(app, "/api/numbers/search?country=US&status=ACTIVE").await.2), [3]);
    assert_eq!(ids(&get(app, "/api/numbers/search?country=FR").await.2), Vec::<i64>::new());
}

async fn a_number_by_id_is_tagged_with_its_id(app: &Router) {
    let (status, tag, body) = get(app, "/api/numbers/3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tag.as_deref(), Some(r#"table:public."VirtualNumber", number:3"#));
    assert_eq!(body["status"], "ACTIVE");
    assert_eq!(body["owner_id"], 1);

    let (status, _, body) = get(app, "/api/numbers/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

async fn a_users_numbers(app: &Router) {
    let (status, tag, body) = get(app, "/api/users/1/numbers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tag.as_deref(), Some(NUMBERS_TAG));
    assert_eq!(ids(&body), [3]);
    assert_eq!(ids(&get(app, "/api/users/2/numbers").await.2), Vec::<i64>::new());
    assert_eq!(get(app, "/api/users/999/numbers").await.0, StatusCode::NOT_FOUND);
}

async fn reserving_succeeds_once_then_conflicts(app: &Router) {
    let reserve = |number: i64, user: i64| {
        Request::post(format!("/api/numbers/{number}/reserve"))
            .header("Content-Type", "application/json")
            .body(Body::from(json!({ "user_id": user }).to_string()))
            .unwrap()
    };
    let (status, _, body) = call(app, reserve(2, 2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["id"].as_i64(), body["status"].as_str(), body["owner_id"].as_i64()),
        (Some(2), Some("RESERVED"), Some(2))
    );

    let (status, _, body) = call(app, reserve(2, 1)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "not_available");
    assert_eq!(call(app, reserve(999, 1)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(app, reserve(4, 999)).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    // The failed attempts changed nothing.
    assert_eq!(get(app, "/api/numbers/4").await.2["status"], "AVAILABLE");
    assert_eq!(ids(&get(app, "/api/users/2/numbers").await.2), [2]);
}

async fn usage_report_covers_the_last_n_days(app: &Router) {
    let (status, tag, body) = get(app, "/api/reports/usage").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tag.as_deref(), Some(r#"table:public."UsageRecord""#));
    let week = json!({
        "days": 7,
        "usage": {
            "call_in": {"count": 2, "total_duration_seconds": 180, "total_cost": "0.0300"},
            "sms_out": {"count": 1, "total_duration_seconds": 0, "total_cost": "0.0075"},
        },
    });
    assert_eq!(body, week);
    let year = get(app, "/api/reports/usage?days=365").await.2;
    assert_eq!(year["usage"]["call_out"], json!({"count": 1, "total_duration_seconds": 300, "total_cost": "0.1500"}));
    assert_eq!(get(app, "/api/reports/usage?days=1").await.2["usage"]["call_in"]["count"], 1);
}

async fn analytics_and_account_are_the_credentials_users(app: &Router) {
    let (status, tag, body) = get_as(app, "/api/analytics/me", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tag.as_deref(), Some(r#"table:public."VirtualNumber", table:public."UsageRecord""#));
    assert_eq!(body["user_id"], 1);
    assert_eq!(body["numbers"], 1);
    assert_eq!(body["usage_last_30_days"]["call_in"]["count"], 2);
    assert!(body["usage_last_30_days"].get("call_out").is_none(), "40 days ago is outside: {body}");

    let body = get_as(app, "/api/analytics/me", 2).await.2;
    assert_eq!((body["numbers"].as_i64(), body["usage_last_30_days"].clone()), (Some(1), json!({})));
    assert_eq!(get_as(app, "/api/analytics/me", 999).await.0, StatusCode::UNAUTHORIZED);

    let (status, _, body) = get_as(app, "/api/account", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"account": {"id": 1, "email": "ada@example.com", "name": "Ada", "plan": "business"}}));
    assert_eq!(get(app, "/api/account").await.2, json!({"account": null}));
}
