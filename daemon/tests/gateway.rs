//! The gateway over real HTTP: a test upstream on loopback (an axum app that counts what reaches
//! it), voxperfd's whole app in front of it, and a real client. No Postgres or Redis: these
//! tests are about proxying and the response cache's rules; `gateway_demo.rs` runs the demo
//! application against the real services.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, any};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use voxperfd::AppState;

/// The application behind the gateway: every handler counts its calls.
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<Mutex<HashMap<String, u64>>>,
    version: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
}

impl Backend {
    fn count(&self, what: &str) -> u64 {
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(what.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn calls(&self, what: &str) -> u64 {
        self.calls.lock().unwrap().get(what).copied().unwrap_or(0)
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/api/search", routing::get(search))
            .route("/api/items/{id}", routing::get(item).post(write_item))
            .route("/api/cookie", routing::get(cookie))
            .route("/api/private", routing::get(private))
            .route("/api/me", routing::get(me))
            .route("/api/slow", routing::get(slow))
            .route("/api/echo", any(echo))
            .route("/api/upload", any(upload))
            .route("/api/text", routing::get(text))
            .route("/api/flaky", routing::get(flaky))
            .with_state(self.clone())
    }
}

async fn search(State(b): State<Backend>, request: Request) -> Response {
    tokio::time::sleep(Duration::from_millis(30)).await; // long enough for a miss storm to pile up
    let n = b.count("search");
    let v = b.version.load(Ordering::SeqCst);
    let q = request.uri().query().unwrap_or("").to_owned();
    axum::Json(json!({"q": q, "version": v, "call": n})).into_response()
}

async fn item(State(b): State<Backend>, Path(id): Path<u64>) -> Response {
    b.count("item");
    let v = b.version.load(Ordering::SeqCst);
    ([("cache-tag", format!("item:{id}, items"))], axum::Json(json!({"id": id, "version": v}))).into_response()
}

async fn write_item(State(b): State<Backend>) -> StatusCode {
    b.count("write");
    b.version.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn cookie(State(b): State<Backend>) -> Response {
    let n = b.count("cookie");
    ([("set-cookie", format!("session={n}; HttpOnly"))], format!("{n}")).into_response()
}

async fn private(State(b): State<Backend>) -> Response {
    let n = b.count("private");
    ([("cache-control", "private")], format!("{n}")).into_response()
}

async fn me(State(b): State<Backend>, headers: HeaderMap) -> Response {
    b.count("me");
    let who = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_owned();
    axum::Json(json!({"user": who})).into_response()
}

async fn slow(State(b): State<Backend>) -> &'static str {
    b.count("slow");
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

async fn echo(State(b): State<Backend>, request: Request) -> Response {
    b.count("echo");
    let mut headers = serde_json::Map::new();
    for (name, value) in request.headers() {
        headers.insert(name.as_str().to_owned(), Value::String(value.to_str().unwrap_or("").to_owned()));
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    axum::Json(json!({"method": parts.method.as_str(), "headers": headers, "body_len": body.len()})).into_response()
}

async fn upload(body: Body) -> String {
    let mut total = 0usize;
    let mut stream = body.into_data_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    total.to_string()
}

async fn text() -> Response {
    ([("content-type", "text/plain")], "hello ".repeat(400)).into_response()
}

async fn flaky(State(b): State<Backend>) -> Response {
    let n = b.count("flaky");
    if b.failing.load(Ordering::SeqCst) {
        (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response()
    } else {
        axum::Json(json!({"good": n})).into_response()
    }
}

/// A running upstream that can be stopped and started again on the same port.
struct Running {
    backend: Backend,
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(backend: Backend, addr: Option<SocketAddr>) -> Self {
        let listener =
            tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let app = backend.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await.unwrap();
        });
        Self { backend, addr, stop, task }
    }

    async fn kill(self) -> (Backend, SocketAddr) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        (self.backend, self.addr)
    }
}

const ROUTES: &str = r#"
[defaults]
timeout = "2s"

[[route]]
path = "/api/search"
cache = "shortTerm"
ttl = 300
tags = ["search"]
vary = ["Accept-Language"]

[[route]]
path = "/api/items/{id}"
cache = "shortTerm"
ttl = 300
stale_if_error = "1h"

[[route]]
path = "/api/cookie"
cache = "shortTerm"

[[route]]
path = "/api/private"
cache = "shortTerm"

[[route]]
path = "/api/me"
cache = "analytics"

[[route]]
path = "/api/slow"
timeout = "300ms"

[[route]]
path = "/api/upload"
body_limit = "1KiB"

[[route]]
path = "/api/text"
compress = true

[[route]]
path = "/api/flaky"
cache = "shortTerm"
ttl = 1
stale_if_error = "1h"
"#;

struct Gateway {
    url: String,
    state: AppState,
    routes_file: std::path::PathBuf,
    stop: CancellationToken,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.routes_file);
    }
}

async fn gateway(upstream: SocketAddr, routes: &str, extra: &[(&str, &str)]) -> Gateway {
    let routes_file = std::env::temp_dir().join(format!("{}.toml", common::unique("voxperf-routes")));
    std::fs::write(&routes_file, routes).unwrap();
    let upstream_url = format!("http://{upstream}");
    let file = routes_file.display().to_string();
    let mut vars: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused"),
        ("REDIS_ENABLED", "false"),
        ("VOXPERF_UPSTREAM", &upstream_url),
        ("VOXPERF_ROUTES", &file),
        ("VOXPERF_ADMIN_TOKEN", "secret"),
        ("PERFORMANCE_MONITORING_ENABLED", "true"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3"),
        ("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", "1000"),
    ];
    vars.extend_from_slice(extra);
    let state = AppState::new(common::config(&vars)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let token = stop.clone();
    let app = voxperfd::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await.unwrap();
    });
    Gateway { url, state, routes_file, stop }
}

struct Answer {
    status: u16,
    headers: HeaderMap,
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

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

thread_local! {
    // One pooled client per test (each test runs on a thread and a runtime of its own).
    static CLIENT: Client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let client = CLIENT.with(Clone::clone);
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    let response =
        tokio::time::timeout(Duration::from_secs(10), client.request(request.body(Full::new(body)).unwrap()))
            .await
            .unwrap_or_else(|_| panic!("{method} {url} hung"))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer { status: parts.status.as_u16(), headers: parts.headers, body }
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    send("GET", url, headers, Bytes::new()).await
}

async fn get(url: &str) -> Answer {
    get_with(url, &[]).await
}

#[tokio::test]
async fn a_cached_route_is_a_hit_the_second_time_and_a_matching_etag_never_reaches_the_upstream() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let first = get(&format!("{}/api/search?b=2&a=1", gw.url)).await;
    assert_eq!((first.status, first.header("x-cache")), (200, "MISS"));
    let etag = first.header("etag").to_owned();
    assert!(etag.starts_with('"'), "a strong ETag on every cached answer: {etag:?}");
    let timing: Vec<&str> = first.headers.get_all("server-timing").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(timing.iter().any(|t| t.starts_with("upstream;dur=")), "a miss shows the upstream's share: {timing:?}");
    let second = get(&format!("{}/api/search?a=1&b=2", gw.url)).await;
    assert_eq!((second.status, second.header("x-cache")), (200, "HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(up.backend.calls("search"), 1);
    assert!(second.header("server-timing").contains("cache;"), "{}", second.header("server-timing"));
    assert_eq!(second.header("cache-control"), "public, max-age=0, must-revalidate");

    let not_modified = get_with(&format!("{}/api/search?a=1&b=2", gw.url), &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let since = first.header("last-modified").to_owned();
    let not_modified = get_with(&format!("{}/api/search?a=1&b=2", gw.url), &[("if-modified-since", &since)]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(up.backend.calls("search"), 1, "conditional requests are answered from the cache");

    // Vary: another language is another answer; no-cache from the client goes to the upstream.
    let fr = get_with(&format!("{}/api/search?a=1&b=2", gw.url), &[("accept-language", "fr")]).await;
    assert_eq!(fr.header("x-cache"), "MISS");
    assert_eq!(fr.header("vary"), "accept-language");
    let fresh = get_with(&format!("{}/api/search?a=1&b=2", gw.url), &[("cache-control", "no-cache")]).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(up.backend.calls("search"), 3);

    let head = send("HEAD", &format!("{}/api/search?a=1&b=2", gw.url), &[], Bytes::new()).await;
    assert_eq!((head.status, head.header("x-cache")), (200, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), first.body.len().to_string());
}

#[tokio::test]
async fn one_upstream_request_per_key_on_a_miss_storm() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let url = format!("{}/api/search?storm=1", gw.url);
    let answers = futures_util::future::join_all((0..20).map(|_| get(&url))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(up.backend.calls("search"), 1, "20 concurrent misses, one upstream request");
}

#[tokio::test]
async fn the_upstreams_own_cache_tags_invalidate_and_a_write_through_the_gateway_drops_its_paths_answers() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let url = format!("{}/api/items/7", gw.url);
    assert_eq!(get(&url).await.header("x-cache"), "MISS");
    assert_eq!(get(&url).await.header("x-cache"), "HIT");
    assert_eq!(get(&url).await.header("cache-tag"), "", "the upstream's tags are not handed to clients");

    // The application (or an operator) invalidates a tag the upstream put on its answer.
    let invalidate = send(
        "POST",
        &format!("{}/api/admin/cache/invalidate", gw.url),
        &[("authorization", "Bearer secret"), ("content-type", "application/json")],
        Bytes::from(json!({"tags": ["item:7"]}).to_string()),
    )
    .await;
    assert_eq!(invalidate.status, 200, "{:?}", invalidate.body);
    assert_eq!(get(&url).await.header("x-cache"), "MISS");
    assert_eq!(up.backend.calls("item"), 2);

    // A write through the gateway: the next read is fresh, without any tag.
    assert_eq!(get(&url).await.json()["version"], 0);
    let write = send("POST", &url, &[], Bytes::new()).await;
    assert_eq!(write.status, 204);
    let after = get(&url).await;
    assert_eq!((after.header("x-cache"), after.json()["version"].as_u64()), ("MISS", Some(1)));
}

#[tokio::test]
async fn set_cookie_and_private_answers_are_never_stored_and_analytics_are_kept_per_user() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    for _ in 0..3 {
        let a = get(&format!("{}/api/cookie", gw.url)).await;
        assert_eq!(a.header("x-cache"), "BYPASS");
        assert!(!a.header("set-cookie").is_empty());
        assert_eq!(get(&format!("{}/api/private", gw.url)).await.header("x-cache"), "BYPASS");
    }
    assert_eq!((up.backend.calls("cookie"), up.backend.calls("private")), (3, 3));

    let me = format!("{}/api/me", gw.url);
    let alice = get_with(&me, &[("authorization", "Bearer alice")]).await;
    let bob = get_with(&me, &[("authorization", "Bearer bob")]).await;
    let alice_again = get_with(&me, &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice.json()["user"], "Bearer alice");
    assert_eq!(bob.json()["user"], "Bearer bob", "never another user's analytics");
    assert_eq!((alice_again.header("x-cache"), alice_again.json()["user"].as_str()), ("HIT", Some("Bearer alice")));
    assert_eq!(alice_again.header("cache-control"), "private, no-cache");
    let anonymous = get(&me).await;
    assert_eq!(anonymous.json()["user"], "nobody");
}

#[tokio::test]
async fn hop_by_hop_fields_are_removed_forwarding_fields_added_and_the_request_id_travels() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let a = get_with(
        &format!("{}/api/echo", gw.url),
        &[("connection", "keep-alive, x-hop"), ("x-hop", "1"), ("te", "trailers"), ("x-request-id", "req-42")],
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = &a.json()["headers"];
    for gone in ["x-hop", "te", "connection"] {
        assert!(seen.get(gone).is_none(), "{gone} reached the upstream: {seen}");
    }
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], gw.url.trim_start_matches("http://"));
    assert!(seen["forwarded"].as_str().unwrap().starts_with("for=127.0.0.1;host="), "{seen}");
    assert_eq!(seen["x-request-id"], "req-42");
    assert_eq!(a.header("x-request-id"), "req-42");
    assert!(a.header("server-timing").contains("upstream;dur="), "{}", a.header("server-timing"));
    // The security headers are added where the upstream set none.
    assert_eq!(a.header("x-content-type-options"), "nosniff");

    let expect = send("POST", &format!("{}/api/echo", gw.url), &[("expect", "100-continue")], Bytes::from("abc")).await;
    assert_eq!((expect.status, expect.json()["body_len"].as_u64()), (200, Some(3)));
    assert!(expect.json()["headers"].get("expect").is_none());

    let ws = get_with(&format!("{}/api/echo", gw.url), &[("connection", "upgrade"), ("upgrade", "websocket")]).await;
    assert_eq!(ws.status, 501);
    assert_eq!(ws.json()["error"]["code"], "upgrade_not_supported");
}

#[tokio::test]
async fn limits_and_timeouts_answer_413_and_504_in_the_json_error_shape() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let big = send("POST", &format!("{}/api/upload", gw.url), &[], Bytes::from(vec![b'x'; 4096])).await;
    assert_eq!(big.status, 413);
    assert_eq!(big.json()["error"]["code"], "body_too_large");
    let small = send("POST", &format!("{}/api/upload", gw.url), &[], Bytes::from(vec![b'x'; 512])).await;
    assert_eq!((small.status, &small.body[..]), (200, &b"512"[..]));

    let started = Instant::now();
    let slow = get(&format!("{}/api/slow", gw.url)).await;
    assert_eq!(slow.status, 504);
    assert_eq!(slow.json()["error"]["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "504 at the route's 300 ms timeout, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn compression_follows_accept_encoding_and_respects_no_transform_and_the_route() {
    let up = Running::start(Backend::default(), None).await;
    let routes = format!("{ROUTES}\n[[route]]\npath = \"/api/echo\"\ncompress = false\n");
    let gw = gateway(up.addr, &routes, &[]).await;
    let gz = get_with(&format!("{}/api/text", gw.url), &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert!(gz.body.len() < 400);
    let zstd = get_with(&format!("{}/api/text", gw.url), &[("accept-encoding", "zstd")]).await;
    assert_eq!(zstd.header("content-encoding"), "zstd");
    let plain = get(&format!("{}/api/text", gw.url)).await;
    assert_eq!((plain.header("content-encoding"), plain.body.len()), ("", 2400));
    let off =
        get_with(&format!("{}/api/echo", gw.url), &[("accept-encoding", "gzip"), ("x-pad", &"p".repeat(500))]).await;
    assert_eq!(off.header("content-encoding"), "", "compression off for this route");
}

#[tokio::test]
async fn a_dead_upstream_gives_502_opens_its_breaker_serves_the_stale_copy_and_recovers() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let item = format!("{}/api/items/9", gw.url);
    assert_eq!(get(&item).await.status, 200);
    let (backend, addr) = up.kill().await;

    let started = Instant::now();
    let refused = get(&format!("{}/api/echo", gw.url)).await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.json()["error"]["code"], "upstream_unavailable");
    assert!(started.elapsed() < Duration::from_secs(2), "a refused upstream answers quickly");
    for _ in 0..3 {
        let _ = get(&format!("{}/api/echo", gw.url)).await;
    }
    let breakers = get(&format!("{}/api/circuit-breakers", gw.url)).await.json();
    let upstream = breakers.as_array().unwrap().iter().find(|b| b["name"] == "upstream:default").unwrap().clone();
    assert_eq!(upstream["state"], "open", "{breakers}");
    let open = get(&format!("{}/api/echo", gw.url)).await;
    assert_eq!(open.status, 503);
    assert_eq!(open.json()["error"]["code"], "upstream_circuit_open");
    assert!(!open.header("retry-after").is_empty());

    // The cached item is invalidated, then asked for while the upstream is down: the last good
    // copy stands in, marked as such.
    gw.state.cache.invalidate_tags(&["item:9".to_owned()]).await.unwrap();
    let stale = get(&item).await;
    assert_eq!((stale.status, stale.header("x-cache")), (200, "STALE"));
    assert!(stale.header("warning").starts_with("111 "), "{}", stale.header("warning"));
    assert_eq!(stale.json()["id"], 9);

    let health = get(&format!("{}/api/performance/health", gw.url)).await.json();
    assert!(health.to_string().contains("upstream:default"), "{health}");

    let up = Running::start(backend, Some(addr)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // the breaker's recovery timeout
    let mut recovered = false;
    for _ in 0..20 {
        if get(&format!("{}/api/echo", gw.url)).await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the gateway recovers once the upstream is back");
    assert_eq!(get(&item).await.header("x-cache"), "MISS");
    drop(up);
}

#[tokio::test]
async fn an_upstream_5xx_is_replaced_by_the_stale_copy_within_its_window() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let url = format!("{}/api/flaky", gw.url);
    assert_eq!(get(&url).await.json()["good"], 1);
    up.backend.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s ttl
    let stale = get(&url).await;
    assert_eq!((stale.status, stale.header("x-cache")), (200, "STALE"));
    assert_eq!(stale.json()["good"], 1);
    assert_eq!(up.backend.calls("flaky"), 2, "the upstream was asked, and failed");
}

#[tokio::test]
async fn metrics_are_labelled_by_route_pattern_whatever_the_number_of_paths() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let urls: Vec<String> = (0..10_000).map(|i| format!("{}/api/items/{i}", gw.url)).collect();
    for chunk in urls.chunks(200) {
        let answers = futures_util::future::join_all(chunk.iter().map(|u| get(u))).await;
        assert!(answers.iter().all(|a| a.status == 200));
    }
    let _ = get(&format!("{}/api/unrouted/123", gw.url)).await;
    let endpoints = get(&format!("{}/api/performance/endpoints", gw.url)).await.json();
    let routes: Vec<String> = endpoints
        .as_array()
        .or_else(|| endpoints["endpoints"].as_array())
        .unwrap()
        .iter()
        .map(|e| e["route"].as_str().unwrap().to_owned())
        .collect();
    assert!(routes.contains(&"/api/items/{id}".to_owned()), "{routes:?}");
    assert!(routes.contains(&"(unrouted)".to_owned()), "{routes:?}");
    assert!(routes.len() < 10, "bounded label cardinality: {routes:?}");
    let items = endpoints
        .as_array()
        .or_else(|| endpoints["endpoints"].as_array())
        .unwrap()
        .iter()
        .find(|e| e["route"] == "/api/items/{id}")
        .unwrap()
        .clone();
    assert_eq!(items["requests"], 10_000);
    let metrics = String::from_utf8(get(&format!("{}/metrics", gw.url)).await.body.to_vec()).unwrap();
    assert!(!metrics.contains("/api/items/42\""), "no raw path in /metrics");
}

#[tokio::test]
async fn a_bad_routes_file_on_reload_keeps_the_old_routes_and_health_says_why() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let gateway = gw.state.gateway.clone().unwrap();
    std::fs::write(&gw.routes_file, "[[route]]\npath = \"/api/search\"\ncache = \"forever\"\n").unwrap();
    let e = gateway.reload().unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (3, "route.cache"));
    let url = format!("{}/api/search?x=1", gw.url);
    let _ = get(&url).await;
    assert_eq!(get(&url).await.header("x-cache"), "HIT", "the old routes stay in force");
    let health = get(&format!("{}/api/performance/health", gw.url)).await.json();
    assert!(health.to_string().contains("last reload failed"), "{health}");

    std::fs::write(&gw.routes_file, "[[route]]\npath = \"/api/search\"\n").unwrap();
    gateway.reload().unwrap();
    assert_eq!(get(&url).await.header("x-cache"), "", "the new routes cache nothing");
    assert!(gateway.status().last_error.is_none());
}

#[tokio::test]
async fn voxperfds_own_api_wins_and_unknown_paths_pass_through_uncached() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    let own = get(&format!("{}/api/cache/stats", gw.url)).await;
    assert_eq!(own.status, 200);
    assert!(own.json().get("l1_size").is_some());
    let missing = get(&format!("{}/api/nothing-here", gw.url)).await;
    assert_eq!(missing.status, 404, "the upstream's own 404");
    assert_eq!(missing.header("x-cache"), "");
}

#[tokio::test]
async fn without_an_upstream_unknown_paths_are_404s_as_before() {
    let vars = [("DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused"), ("REDIS_ENABLED", "false")];
    let state = AppState::new(common::config(&vars)).unwrap();
    assert!(state.gateway.is_none());
    use tower::ServiceExt as _;
    let response = voxperfd::app(state).oneshot(common::get("/api/numbers/search")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn past_its_ttl_an_answer_is_served_stale_while_one_request_refreshes_it() {
    let up = Running::start(Backend::default(), None).await;
    let routes =
        "[[route]]\npath = \"/api/items/{id}\"\ncache = \"shortTerm\"\nttl = 1\nstale_while_revalidate = \"1h\"\n";
    let gw = gateway(up.addr, routes, &[]).await;
    let url = format!("{}/api/items/3", gw.url);
    assert_eq!(get(&url).await.json()["version"], 0);
    up.backend.version.store(5, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = get(&url).await;
    assert_eq!((stale.header("x-cache"), stale.json()["version"].as_u64()), ("STALE", Some(0)));
    // The background refresh lands shortly after; then the new answer is a plain hit.
    let mut refreshed = false;
    for _ in 0..50 {
        let a = get(&url).await;
        if a.header("x-cache") == "HIT" && a.json()["version"] == 5 {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refreshed, "the refresh stored the upstream's new answer");
    assert_eq!(up.backend.calls("item"), 2, "one refresh, not one per stale hit");

    // An invalidation is not extended by the window: the next answer is fresh.
    up.backend.version.store(6, Ordering::SeqCst);
    gw.state.cache.invalidate_tags(&["item:3".to_owned()]).await.unwrap();
    let after = get(&url).await;
    assert_eq!((after.header("x-cache"), after.json()["version"].as_u64()), ("MISS", Some(6)));
}

#[tokio::test]
async fn content_hashed_assets_are_immutable_downstream() {
    let up = Running::start(Backend::default(), None).await;
    let gw = gateway(up.addr, ROUTES, &[]).await;
    // The upstream has no such file: only a 200 gets the long lifetime.
    let missing = get(&format!("{}/static/app.3f9a1c2e.js", gw.url)).await;
    assert_eq!(missing.status, 404);
    assert_ne!(missing.header("cache-control"), "public, max-age=31536000, immutable");
}
