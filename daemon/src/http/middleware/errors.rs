//! Rewrites error responses made by layers (body limit, timeout) into the API's JSON shape.
//!
//! Handlers and extractors already answer with `AppError`; a response that is an error but not
//! JSON came from a layer, and gets a code and message that name the cause.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::AppError;

pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message): (&'static str, String) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is larger than VOXPERF_BODY_LIMIT".into()),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
            ("timeout", "the request took longer than VOXPERF_REQUEST_TIMEOUT".into())
        }
        _ => ("error", status.canonical_reason().unwrap_or("error").to_lowercase()),
    };
    let mut rewritten = AppError::new(status, code, message).into_response();
    for name in [header::WWW_AUTHENTICATE, header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = response.headers().get(&name) {
            rewritten.headers_mut().insert(name, v.clone());
        }
    }
    rewritten
}
