//! End to end: the VoxLink demo application behind voxperfd's gateway, with the real Postgres
//! (the voxperf extension's `watch_table` NOTIFYs) and the real Redis that `make test` starts.
//! The promise under test: a cached answer is never served 100 ms after a committed write that
//! changed it, even when the write goes straight to Postgres, and even across two gateways.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use voxperfd::AppState;

/// A database of its own with the demo schema, a few rows, and its tables watched.
struct DemoDb {
    name: String,
    url: String,
}

impl DemoDb {
    async fn create() -> Self {
        let admin = common::pg().await;
        let name = common::unique("gw_demo");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let base = common::database_url();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute("SET client_min_messages = warning").await.unwrap();
        client.batch_execute(include_str!("../../sql/schema.sql")).await.unwrap();
        client
            .batch_execute(
                r#"CREATE EXTENSION IF NOT EXISTS voxperf;
                INSERT INTO "User" (email, name) VALUES ('a@example.com', 'A'), ('b@example.com', 'B');
                INSERT INTO "VirtualNumber" (number, country_code, area_code, monthly_price)
                SELECT '+1212555' || lpad(i::text, 4, '0'), 'US', '212', 1.50 FROM generate_series(1, 30) i;
                SELECT voxperf.watch_table('"VirtualNumber"');
                SELECT voxperf.watch_table('"UsageRecord"');"#,
            )
            .await
            .unwrap();
        Self { name, url }
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    async fn drop_it(self) {
        let admin = common::pg().await;
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
    }
}

async fn start_demo(db: &DemoDb, stop: &CancellationToken) -> String {
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let state = voxlink_demo::AppState::new(voxlink_demo::db::Db::new(config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let token = stop.clone();
    tokio::spawn(voxlink_demo::serve(listener, state, async move { token.cancelled().await }));
    url
}

async fn start_gateway(db: &DemoDb, upstream: &str, prefix: &str, stop: &CancellationToken) -> (String, AppState) {
    let routes = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/routes.example.toml");
    let config = common::config(&[
        ("DATABASE_URL", &db.url),
        ("REDIS_URL", &common::redis_url()),
        ("REDIS_KEY_PREFIX", prefix),
        ("VOXPERF_UPSTREAM", upstream),
        ("VOXPERF_ROUTES", routes),
        ("PERFORMANCE_MONITORING_ENABLED", "false"),
    ]);
    let state = AppState::new(config).unwrap();
    state.start(stop.clone());
    let mut rx = state.listener.subscribe();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| s.connected)).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = voxperfd::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let token = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await
    });
    (url, state)
}

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(request.body(Full::new(Bytes::from(body.to_owned()))).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let (parts, body) = response.into_parts();
    Answer { status: parts.status.as_u16(), headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

async fn get(url: &str) -> Answer {
    send("GET", url, &[], "").await
}

fn ids(answer: &Answer) -> Vec<i64> {
    answer.json()["numbers"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect()
}

async fn upstream_calls(demo: &str, route: &str) -> u64 {
    get(&format!("{demo}/_demo/requests")).await.json()["routes"][route].as_u64().unwrap_or(0)
}

/// The NOTIFY delay the promise allows.
const NOTIFY_DELAY: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_write_committed_straight_to_postgres_is_seen_through_the_gateway_100_ms_later() {
    let db = DemoDb::create().await;
    let stop = CancellationToken::new();
    let demo = start_demo(&db, &stop).await;
    let (gw, _state) = start_gateway(&db, &demo, &format!("{}:", common::unique("gwdemo")), &stop).await;
    let search = format!("{gw}/api/numbers/search?country=US&area=212&limit=5");

    let first = get(&search).await;
    assert_eq!((first.status, first.header("x-cache")), (200, "MISS"), "{:?}", first.body);
    let second = get(&search).await;
    assert_eq!(second.header("x-cache"), "HIT");
    assert_eq!(upstream_calls(&demo, "/api/numbers/search").await, 1);
    let taken = ids(&first)[0];

    // The application's data changes behind the gateway's back: a plain UPDATE in Postgres.
    let pg = db.client().await;
    pg.execute(r#"UPDATE "VirtualNumber" SET status = 'ACTIVE', owner_id = 1 WHERE id = $1"#, &[&taken]).await.unwrap();
    tokio::time::sleep(NOTIFY_DELAY).await;
    let after = get(&search).await;
    assert_eq!(after.header("x-cache"), "MISS");
    assert!(!ids(&after).contains(&taken), "a number taken 100 ms ago is still offered: {:?}", ids(&after));

    // By id: the upstream's own Cache-Tag (`number:<id>`) and the table tag both apply.
    let one = format!("{gw}/api/numbers/{}", ids(&after)[0]);
    let a = get(&one).await;
    assert_eq!(a.header("x-cache"), "MISS");
    let etag = a.header("etag").to_owned();
    let calls = upstream_calls(&demo, "/api/numbers/{id}").await;
    let not_modified = send("GET", &one, &[("if-none-match", &etag)], "").await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(upstream_calls(&demo, "/api/numbers/{id}").await, calls, "304 without an upstream request");

    // A reservation through the gateway is a write like any other: the search is fresh at once.
    let reserved = ids(&after)[0];
    let r = send(
        "POST",
        &format!("{gw}/api/numbers/{reserved}/reserve"),
        &[("content-type", "application/json")],
        r#"{"user_id": 2}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    tokio::time::sleep(NOTIFY_DELAY).await;
    assert!(!ids(&get(&search).await).contains(&reserved));
    let by_id = get(&one).await;
    assert_eq!((by_id.header("x-cache"), by_id.json()["status"].as_str()), ("MISS", Some("RESERVED")));

    // Per-user analytics: never another user's.
    let alice = send("GET", &format!("{gw}/api/analytics/me"), &[("authorization", "Bearer user-1")], "").await;
    let bob = send("GET", &format!("{gw}/api/analytics/me"), &[("authorization", "Bearer user-2")], "").await;
    assert_eq!((alice.json()["user_id"].as_i64(), bob.json()["user_id"].as_i64()), (Some(1), Some(2)));
    let alice_again = send("GET", &format!("{gw}/api/analytics/me"), &[("authorization", "Bearer user-1")], "").await;
    assert_eq!((alice_again.header("x-cache"), alice_again.json()["user_id"].as_i64()), ("HIT", Some(1)));

    // A session cookie is never stored.
    for _ in 0..2 {
        let s = send("POST", &format!("{gw}/api/session"), &[], "").await;
        assert!(s.header("set-cookie").starts_with("session="));
    }
    stop.cancel();
    db.drop_it().await;
}

#[tokio::test]
async fn two_gateways_sharing_one_redis_and_one_postgres_stay_coherent() {
    let db = DemoDb::create().await;
    let stop = CancellationToken::new();
    let demo = start_demo(&db, &stop).await;
    let prefix = format!("{}:", common::unique("gwpair"));
    let (a, _sa) = start_gateway(&db, &demo, &prefix, &stop).await;
    let (b, _sb) = start_gateway(&db, &demo, &prefix, &stop).await;
    let path = "/api/numbers/search?country=US&area=212&limit=3";
    let from_a = get(&format!("{a}{path}")).await;
    assert_eq!(from_a.header("x-cache"), "MISS");
    let from_b = get(&format!("{b}{path}")).await;
    assert_eq!(from_b.header("x-cache"), "HIT", "the second gateway finds the first one's answer in Redis");
    assert_eq!(upstream_calls(&demo, "/api/numbers/search").await, 1);

    let pg = db.client().await;
    let taken = ids(&from_a)[0];
    pg.execute(r#"UPDATE "VirtualNumber" SET status = 'SUSPENDED' WHERE id = $1"#, &[&taken]).await.unwrap();
    tokio::time::sleep(NOTIFY_DELAY).await;
    for gw in [&a, &b] {
        let answer = get(&format!("{gw}{path}")).await;
        assert!(!ids(&answer).contains(&taken), "{gw} served a stale search 100 ms after the commit");
    }
    stop.cancel();
    db.drop_it().await;
}
