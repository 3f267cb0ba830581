//! HTTP contracts that need no database, through `oneshot` on `app(state)`. The state's pool
//! points at a closed port: it opens connections lazily, and none of these requests reaches it
//! (validation and credentials are checked before any statement). `tests/db.rs` covers the
//! database-backed answers.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::db::Db;
use crate::{AppState, app};

fn state() -> AppState {
    let config = "postgres://nobody@127.0.0.1:1/nowhere".parse().unwrap();
    AppState::new(Db::new(config).unwrap())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> Response<Body> {
    app.clone().oneshot(request).await.unwrap()
}

async fn body_bytes(response: Response<Body>) -> Vec<u8> {
    response.into_body().collect().await.unwrap().to_bytes().to_vec()
}

async fn json_of(response: Response<Body>) -> Value {
    serde_json::from_slice(&body_bytes(response).await).unwrap()
}

/// Asserts a 400 whose message names `parameter`.
async fn assert_bad_parameter(app: &Router, uri: &str, parameter: &str) {
    let response = send(app, get(uri)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
    let body = json_of(response).await;
    assert_eq!(body["error"]["code"], "invalid_parameter", "{uri}: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{parameter}`")), "{uri}: {message}");
}

#[tokio::test]
async fn echo_returns_the_request_line_and_headers_with_repeats_joined() {
    let app = app(state());
    let request = Request::get("/api/echo?a=1&b=two")
        .header("X-Forwarded-For", "10.0.0.1")
        .header("x-forwarded-for", "10.0.0.2")
        .header("Connection", "keep-alive")
        .body(Body::empty())
        .unwrap();
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/api/echo");
    assert_eq!(body["query"], "a=1&b=two");
    assert_eq!(body["headers"]["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
    assert_eq!(body["headers"]["connection"], "keep-alive");

    let body = json_of(send(&app, Request::post("/api/echo").body(Body::empty()).unwrap()).await).await;
    assert_eq!(body["method"], "POST");
    assert_eq!(body["query"], Value::Null);
}

#[tokio::test]
async fn static_assets_have_their_content_types_and_no_cache_control() {
    let app = app(state());
    for (uri, content_type, starts_with) in [
        ("/static/app.3f9a1c2e.js", "text/javascript; charset=utf-8", "/* VoxLink"),
        ("/static/index.html", "text/html; charset=utf-8", "<!doctype html>"),
    ] {
        let response = send(&app, get(uri)).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], content_type, "{uri}");
        assert!(response.headers().get(header::CACHE_CONTROL).is_none(), "{uri}");
        let body = String::from_utf8(body_bytes(response).await).unwrap();
        assert!(body.starts_with(starts_with), "{uri}");
    }
}

#[tokio::test]
async fn request_counter_counts_per_route_pattern_but_not_itself_and_resets() {
    let state = state();
    let app = app(state.clone());
    send(&app, get("/healthz")).await;
    send(&app, get("/api/echo")).await;
    send(&app, get("/api/echo?x=1")).await;
    send(&app, get("/api/numbers/abc")).await; // a 400 still reached the upstream
    send(&app, get("/no/such/route")).await;

    let counts = json_of(send(&app, get("/_demo/requests")).await).await;
    let expected = json!({
        "total": 5,
        "routes": {"/healthz": 1, "/api/echo": 2, "/api/numbers/{id}": 1, "<unmatched>": 1},
    });
    assert_eq!(counts, expected);
    // Reading the counter did not count.
    assert_eq!(json_of(send(&app, get("/_demo/requests")).await).await, expected);

    let reset = Request::post("/_demo/requests/reset").body(Body::empty()).unwrap();
    assert_eq!(json_of(send(&app, reset).await).await, json!({"total": 0, "routes": {}}));
    assert_eq!(state.requests.snapshot().total, 0);
}

#[tokio::test]
async fn analytics_without_a_valid_bearer_token_is_401() {
    let app = app(state());
    let malformed = Request::get("/api/analytics/me").header("Authorization", "Bearer 42").body(Body::empty()).unwrap();
    for request in [get("/api/analytics/me"), malformed] {
        let response = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(json_of(response).await["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn account_with_a_malformed_token_is_401() {
    let request = Request::get("/api/account").header("Authorization", "Basic dXNlcg==").body(Body::empty()).unwrap();
    assert_eq!(send(&app(state()), request).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_parameters_are_400s_naming_the_parameter() {
    let app = app(state());
    assert_bad_parameter(&app, "/api/numbers/search", "country").await;
    assert_bad_parameter(&app, "/api/numbers/search?country=USA", "country").await;
    assert_bad_parameter(&app, "/api/numbers/search?country=US&area=2x2", "area").await;
    assert_bad_parameter(&app, "/api/numbers/search?country=US&status=SOLD", "status").await;
    assert_bad_parameter(&app, "/api/numbers/search?country=US&limit=0", "limit").await;
    assert_bad_parameter(&app, "/api/numbers/search?country=US&limit=101", "limit").await;
    assert_bad_parameter(&app, "/api/numbers/0", "id").await;
    assert_bad_parameter(&app, "/api/numbers/abc", "id").await;
    assert_bad_parameter(&app, "/api/users/-3/numbers", "id").await;
    assert_bad_parameter(&app, "/api/reports/usage?days=0", "days").await;
    assert_bad_parameter(&app, "/api/reports/usage?days=366", "days").await;
    assert_bad_parameter(&app, "/api/slow", "ms").await;
    assert_bad_parameter(&app, "/api/slow?ms=60001", "ms").await;
}

#[tokio::test]
async fn reserve_rejects_bodies_that_are_not_a_user_id() {
    let app = app(state());
    let post = |body: &str| {
        Request::post("/api/numbers/1/reserve")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let body = json_of(send(&app, post("{")).await).await;
    assert_eq!(body["error"]["code"], "invalid_json");
    let response = send(&app, post(r#"{"user": 1}"#)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(response).await["error"]["message"].as_str().unwrap().contains("user_id"));
    let body = json_of(send(&app, post(r#"{"user_id": 0}"#)).await).await;
    assert_eq!(body["error"]["code"], "invalid_parameter");
    let unlabelled = Request::post("/api/numbers/1/reserve").body(Body::from(r#"{"user_id": 1}"#)).unwrap();
    assert_eq!(send(&app, unlabelled).await.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn uploads_are_counted_and_hashed_beyond_the_default_body_limit() {
    // axum's default limit is 2 MB; 3 MB in 64 KiB chunks, as a client would stream it.
    let chunk = vec![b'v'; 64 * 1024];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..48).map(|_| Ok(chunk.clone())).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let response = send(&app(state()), Request::post("/api/uploads").body(body).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let expected: String = Sha256::digest(vec![b'v'; 48 * 64 * 1024]).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(json_of(response).await, json!({"bytes": 48 * 64 * 1024, "sha256": expected}));
}

#[tokio::test]
async fn other_routes_keep_the_default_body_limit() {
    let big = Request::post("/api/numbers/1/reserve")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(vec![b' '; 3 << 20]))
        .unwrap();
    assert_eq!(send(&app(state()), big).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn session_sets_an_http_only_cookie() {
    let response = send(&app(state()), Request::post("/api/session").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    let id = cookie.strip_prefix("session=").and_then(|rest| rest.strip_suffix("; HttpOnly; Path=/")).unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(json_of(response).await, json!({"ok": true}));
}

#[tokio::test]
async fn health_slow_and_unknown_routes() {
    let app = app(state());
    assert_eq!(body_bytes(send(&app, get("/healthz")).await).await, b"ok");
    assert_eq!(json_of(send(&app, get("/api/slow?ms=0")).await).await, json!({"slept_ms": 0}));
    let response = send(&app, get("/nope")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(response).await["error"]["code"], "not_found");
    let response = send(&app, Request::delete("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json_of(response).await["error"]["code"], "method_not_allowed");
}
