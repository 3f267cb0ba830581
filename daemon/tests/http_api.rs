//! HTTP contract tests: `app(state).oneshot(...)` with no Postgres or Redis running (Redis is
//! disabled, and these requests never reach the database).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use common::{body_bytes, body_json, config, get as get_req, post_json};
use serde_json::{Value, json};
use tower::ServiceExt;
use voxperfd::AppState;
use voxperfd::http::response_cache::{CacheStrategy, ResponseCacheLayer};

const TOKEN: &str = "test-admin-token-0123456789";

fn state_with(extra: &[(&str, &str)]) -> AppState {
    let mut vars = vec![
        ("REDIS_ENABLED", "false"),
        // Nothing listens there: these tests must not need the database.
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
        ("VOXPERF_ADMIN_TOKEN", TOKEN),
        ("VOXPERF_BODY_LIMIT", "4KiB"),
    ];
    vars.extend_from_slice(extra);
    AppState::new(config(&vars)).unwrap()
}

fn app() -> Router {
    voxperfd::app(state_with(&[]))
}

async fn send(router: &Router, request: Request<Body>) -> axum::response::Response {
    router.clone().oneshot(request).await.unwrap()
}

async fn error_of(response: axum::response::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body = body_json(response).await;
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().to_owned(),
        body["error"]["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn unknown_route_is_404_in_the_json_error_shape() {
    let (status, code, message) = error_of(send(&app(), get_req("/no/such/route")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code, "route_not_found");
    assert!(message.contains("/no/such/route"));
}

#[tokio::test]
async fn wrong_method_is_405_in_the_json_error_shape() {
    let request = Request::delete("/api/cache/stats").body(Body::empty()).unwrap();
    let (status, code, _) = error_of(send(&app(), request).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

#[tokio::test]
async fn invalid_json_is_400_naming_the_problem() {
    let request = Request::put("/api/cache/entries/k")
        .header("content-type", "application/json")
        .body(Body::from("{\"value\": [1, 2"))
        .unwrap();
    let (status, code, message) = error_of(send(&app(), request).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "invalid_json"));
    assert!(message.contains("EOF while parsing"), "{message}");
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_is_400_naming_the_field() {
    let request = post_json("/api/cache/query", &json!({"params": [1]}));
    let (status, code, message) = error_of(send(&app(), request).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "invalid_body"));
    assert!(message.contains("missing field `sql`"), "{message}");
    let request = post_json("/api/cache/query", &json!({"sql": "select 1", "tll": 5}));
    let (_, _, message) = error_of(send(&app(), request).await).await;
    assert!(message.contains("unknown field `tll`"), "{message}");
}

#[tokio::test]
async fn an_oversized_body_is_413_in_the_json_error_shape() {
    let big = json!({"value": "x".repeat(8 * 1024)});
    let request = Request::put("/api/cache/entries/big")
        .header("content-type", "application/json")
        .body(Body::from(big.to_string()))
        .unwrap();
    let (status, code, _) = error_of(send(&app(), request).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
}

#[tokio::test]
async fn an_oversized_body_without_content_length_is_413_too() {
    let chunks: Vec<Result<String, std::io::Error>> = (0..10).map(|_| Ok("x".repeat(1024))).collect();
    let request = Request::put("/api/cache/entries/big")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let (status, code, _) = error_of(send(&app(), request).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    let router = app();
    let body = json!({"tags": ["user"]});
    let (status, code, _) = error_of(send(&router, post_json("/api/admin/cache/invalidate", &body)).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let mut wrong = post_json("/api/admin/cache/invalidate", &body);
    wrong.headers_mut().insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
    let response = send(&router, wrong).await;
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(error_of(response).await.0, StatusCode::UNAUTHORIZED);
    let mut right = post_json("/api/admin/cache/invalidate", &body);
    right.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    let response = send(&router, right).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await["tags"], json!(["user"]));
}

#[tokio::test]
async fn admin_routes_answer_403_when_no_token_is_configured() {
    let mut vars = vec![("REDIS_ENABLED", "false"), ("DATABASE_URL", "postgres://x@127.0.0.1:1/x")];
    vars.push(("VOXPERF_BODY_LIMIT", "4KiB"));
    let router = voxperfd::app(AppState::new(config(&vars)).unwrap());
    let mut request = post_json("/api/admin/cache/warm", &json!([]));
    request.headers_mut().insert(header::AUTHORIZATION, "Bearer anything".parse().unwrap());
    let (status, code, message) = error_of(send(&router, request).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "admin_disabled"));
    assert!(message.contains("VOXPERF_ADMIN_TOKEN"));
}

#[tokio::test]
async fn an_entry_put_is_returned_by_get_until_deleted() {
    let router = app();
    let value = json!({"numbers": ["+15550001", "+15550002"], "count": 2});
    let put = Request::put("/api/cache/entries/popular:numbers")
        .header("content-type", "application/json")
        .body(Body::from(json!({"value": value, "ttl": 60, "tags": ["numbers"]}).to_string()))
        .unwrap();
    assert_eq!(send(&router, put).await.status(), StatusCode::NO_CONTENT);
    let response = send(&router, get_req("/api/cache/entries/popular:numbers")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-cache"], "HIT-L1");
    assert_eq!(body_json(response).await, value);
    let delete = Request::delete("/api/cache/entries/popular:numbers").body(Body::empty()).unwrap();
    assert_eq!(send(&router, delete).await.status(), StatusCode::NO_CONTENT);
    let (status, code, _) = error_of(send(&router, get_req("/api/cache/entries/popular:numbers")).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn warming_stores_every_entry_and_tag_invalidation_drops_them() {
    let router = app();
    let auth = |mut r: Request<Body>| {
        r.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
        r
    };
    let items = json!([
        {"key": "countries:list", "value": ["US", "FR"], "ttl": 86400, "tags": ["countries"]},
        {"key": "popular:numbers", "value": [1, 2], "ttl": 7200}
    ]);
    let response = send(&router, auth(post_json("/api/admin/cache/warm", &items))).await;
    assert_eq!(body_json(response).await, json!({"warmed": 2}));
    let response = send(&router, get_req("/api/cache/entries/countries:list")).await;
    assert_eq!(body_json(response).await, json!(["US", "FR"]));
    let body = json!({"tags": ["countries"], "pattern": "popular:*"});
    let response = send(&router, auth(post_json("/api/admin/cache/invalidate", &body))).await;
    assert_eq!(response.status(), StatusCode::OK);
    for key in ["countries:list", "popular:numbers"] {
        let response = send(&router, get_req(&format!("/api/cache/entries/{key}"))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{key}");
    }
}

#[tokio::test]
async fn json_gets_carry_an_etag_and_a_matching_if_none_match_gives_304() {
    let router = app();
    let response = send(&router, get_req("/api/openapi.json")).await;
    let etag = response.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let request = Request::get("/api/openapi.json").header(header::IF_NONE_MATCH, &etag).body(Body::empty()).unwrap();
    let response = send(&router, request).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()[header::ETAG], etag.as_str());
    assert!(body_bytes(response).await.is_empty());
    let request = Request::get("/api/openapi.json")
        .header(header::IF_NONE_MATCH, "W/\"something-else\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, request).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn responses_carry_security_timing_and_request_id_headers() {
    let response = send(&app(), get_req("/healthz")).await;
    let h = response.headers();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(h[name], value, "{name}");
    }
    assert!(h["x-response-time"].to_str().unwrap().ends_with("ms"));
    assert!(h["server-timing"].to_str().unwrap().starts_with("app;dur="));
    assert_eq!(h["x-request-id"].len(), 36, "a generated UUID");
    let request = Request::get("/healthz").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
    assert_eq!(send(&app(), request).await.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn each_route_sets_its_own_cache_control() {
    let router = app();
    let put = Request::put("/api/cache/entries/k")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"value": 1}"#))
        .unwrap();
    send(&router, put).await;
    for (path, expected) in [
        ("/healthz", "no-store"),
        ("/api/cache/stats", "no-store"),
        ("/api/cache/entries/k", "private, no-cache"),
        ("/api/openapi.json", "public, max-age=300"),
    ] {
        let response = send(&router, get_req(path)).await;
        assert_eq!(response.headers()[header::CACHE_CONTROL], expected, "{path}");
    }
}

#[tokio::test]
async fn large_responses_are_compressed_with_gzip_brotli_or_zstd() {
    let router = app();
    let value: Vec<Value> =
        (0..40).map(|i| json!({"number": format!("+1555000{i:04}"), "status": "AVAILABLE"})).collect();
    let put = Request::put("/api/cache/entries/numbers")
        .header("content-type", "application/json")
        .body(Body::from(json!({"value": value}).to_string()))
        .unwrap();
    send(&router, put).await;
    for encoding in ["gzip", "br", "zstd"] {
        let request = Request::get("/api/cache/entries/numbers")
            .header(header::ACCEPT_ENCODING, encoding)
            .body(Body::empty())
            .unwrap();
        let response = send(&router, request).await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], encoding);
        let compressed = body_bytes(response).await;
        assert!(compressed.len() < json!(value).to_string().len() / 2, "{encoding}");
        if encoding == "zstd" {
            let plain = zstd::stream::decode_all(&compressed[..]).unwrap();
            assert_eq!(serde_json::from_slice::<Value>(&plain).unwrap(), json!(value));
        }
    }
}

#[tokio::test]
async fn statements_are_checked_before_any_database_work() {
    let router = app();
    let (status, code, message) =
        error_of(send(&router, post_json("/api/cache/query", &json!({"sql": "UPDATE t SET a = 1 RETURNING *"}))).await)
            .await;
    assert_eq!((status, code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "not_read_only"));
    assert!(message.contains("UPDATE"), "{message}");
    let (status, code, message) =
        error_of(send(&router, post_json("/api/cache/query", &json!({"sql": "SELECT * FORM t"}))).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "syntax_error"));
    assert_eq!(message, "syntax error at or near \"FORM\"");
}

#[tokio::test]
async fn openapi_documents_routes_that_all_exist() {
    let router = app();
    let doc = body_json(send(&router, get_req("/api/openapi.json")).await).await;
    let paths = doc["paths"].as_object().unwrap();
    let mut seen = 0;
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let uri = path.replace("{key}", "some-key");
            let mut request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            request.headers_mut().insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
            let response = send(&router, request).await;
            let status = response.status();
            let body = body_bytes(response).await;
            let text = String::from_utf8_lossy(&body);
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("route_not_found"),
                "{method} {path} is documented but not routed: {status} {text}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 12, "only {seen} operations documented");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn openapi_documents_the_cache_key_header_of_query_answers() {
    let doc = body_json(send(&app(), get_req("/api/openapi.json")).await).await;
    let headers = &doc["paths"]["/api/cache/query"]["post"]["responses"]["200"]["headers"];
    assert!(headers["X-Cache-Key"]["description"].as_str().unwrap().contains("/api/cache/entries/"), "{headers}");
    assert_eq!(headers["X-Cache-Key"]["schema"]["type"], "string");
    assert!(headers["X-Cache"].is_object(), "{headers}");
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_timeout_gets_503_in_the_json_error_shape() {
    let state = state_with(&[("VOXPERF_REQUEST_TIMEOUT", "1000")]);
    let slow = Router::new().route("/slow", get(std::future::pending::<&'static str>));
    let router = voxperfd::with_layers(slow, &state.config.http);
    let (status, code, _) = error_of(send(&router, get_req("/slow")).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "timeout"));
}

fn counted_routes(calls: Arc<AtomicUsize>, layer: ResponseCacheLayer) -> Router {
    let c = calls.clone();
    let report = move || {
        let c = c.clone();
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            axum::Json(json!({"report": n}))
        }
    };
    let missing = || async { (StatusCode::NOT_FOUND, "gone") };
    Router::new()
        .route("/api/reports/daily", get(report).post(|| async { StatusCode::CREATED }))
        .route("/api/reports/missing", get(missing))
        .layer(layer)
}

#[tokio::test]
async fn the_caching_middleware_serves_repeated_gets_from_the_cache() {
    let state = state_with(&[]);
    let calls = Arc::new(AtomicUsize::new(0));
    let router =
        counted_routes(calls.clone(), ResponseCacheLayer::new(state.cache.clone(), CacheStrategy::reports(7200)));
    let first = send(&router, get_req("/api/reports/daily?b=2&a=1")).await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let second = send(&router, get_req("/api/reports/daily?a=1&b=2")).await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.headers()[header::CACHE_CONTROL], "private, max-age=0, must-revalidate");
    assert_eq!(body_json(second).await, json!({"report": 1}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A successful POST to the path invalidates its cached GETs.
    let post = Request::post("/api/reports/daily").body(Body::empty()).unwrap();
    assert_eq!(send(&router, post).await.status(), StatusCode::CREATED);
    let third = send(&router, get_req("/api/reports/daily?a=1&b=2")).await;
    assert_eq!(body_json(third).await, json!({"report": 2}));
    // Errors are passed through and never cached.
    for _ in 0..2 {
        assert_eq!(send(&router, get_req("/api/reports/missing")).await.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn the_analytics_strategy_caches_per_user_and_tags_invalidate_it() {
    let state = state_with(&[]);
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ResponseCacheLayer::new(state.cache.clone(), CacheStrategy::analytics(1800)).tags(["usage"]);
    let router = counted_routes(calls.clone(), layer);
    let as_user = |user: &str| {
        Request::get("/api/reports/daily")
            .header(header::AUTHORIZATION, format!("Bearer {user}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(body_json(send(&router, as_user("alice")).await).await["report"], 1);
    assert_eq!(body_json(send(&router, as_user("bob")).await).await["report"], 2);
    let again = send(&router, as_user("alice")).await;
    assert_eq!(again.headers()[header::VARY], "authorization");
    assert_eq!(body_json(again).await["report"], 1);
    state.cache.invalidate_tags(&["usage".to_owned()]).await.unwrap();
    assert_eq!(body_json(send(&router, as_user("alice")).await).await["report"], 3);
}

#[tokio::test]
async fn a_request_asking_for_no_cache_reaches_the_route() {
    let state = state_with(&[]);
    let calls = Arc::new(AtomicUsize::new(0));
    let router =
        counted_routes(calls.clone(), ResponseCacheLayer::new(state.cache.clone(), CacheStrategy::short_term(300)));
    send(&router, get_req("/api/reports/daily")).await;
    let request =
        Request::get("/api/reports/daily").header(header::CACHE_CONTROL, "no-cache").body(Body::empty()).unwrap();
    assert_eq!(body_json(send(&router, request).await).await["report"], 2);
}

#[tokio::test]
async fn stats_report_hits_and_misses_per_level() {
    let router = app();
    let put = Request::put("/api/cache/entries/k")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"value": 1}"#))
        .unwrap();
    send(&router, put).await;
    send(&router, get_req("/api/cache/entries/k")).await;
    send(&router, get_req("/api/cache/entries/absent")).await;
    let stats = body_json(send(&router, get_req("/api/cache/stats")).await).await;
    assert_eq!(stats["counters"]["l1"]["hits"], 1);
    assert_eq!(stats["counters"]["l1"]["misses"], 1);
    assert_eq!(stats["l2"]["configured"], false);
    assert_eq!(stats["l1_size"]["entries"], 1);
}
