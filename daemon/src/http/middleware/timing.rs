//! `X-Response-Time` and `Server-Timing` on every response.
//!
//! Measured from the request entering this middleware to the response headers leaving it (the
//! body may still stream afterwards). `Server-Timing` is appended, so a handler's own metrics
//! (`cache;desc=HIT`) survive next to `app;dur=…`.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const X_RESPONSE_TIME: &str = "x-response-time";
pub const SERVER_TIMING: &str = "server-timing";

pub async fn response_time(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}ms")) {
        headers.insert(X_RESPONSE_TIME, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        headers.append(SERVER_TIMING, v);
    }
    response
}
