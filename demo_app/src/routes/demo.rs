//! Endpoints for gateway tests, not part of the VoxLink API: health, a slow answer (timeouts),
//! an echo of the request (forwarded and hop-by-hop headers), and the request counter (calls that
//! reached the upstream).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::AppError;
use crate::params;
use crate::requests::RequestCounts;

/// `ms` of `/api/slow`: up to a minute, longer than any gateway timeout worth testing.
const SLOW_MS: std::ops::RangeInclusive<u64> = 0..=60_000;

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Debug, Deserialize)]
pub struct SlowQuery {
    ms: Option<String>,
}

/// `GET /api/slow?ms=N`: `{"slept_ms": N}` after N milliseconds.
pub async fn slow(query: Result<Query<SlowQuery>, QueryRejection>) -> Result<Json<Value>, AppError> {
    let Query(query) = query?;
    let ms = params::required("ms", query.ms.as_deref())?;
    let ms = params::integer_in("ms", Some(ms), SLOW_MS, 0)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "slept_ms": ms })))
}

#[derive(Debug, Serialize)]
pub struct Echo {
    method: String,
    path: String,
    /// The raw query string, `null` without one.
    query: Option<String>,
    /// Header name (lower case) → value; a repeated header's values joined with ", ".
    headers: BTreeMap<String, String>,
}

/// `/api/echo` (any method): the request line and headers as the app received them.
pub async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Json<Echo> {
    let mut echoed: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        echoed
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    Json(Echo {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: echoed,
    })
}

/// `GET /_demo/requests`: `{"total": n, "routes": {"/api/numbers/{id}": n, ...}}`.
pub async fn request_counts(State(state): State<AppState>) -> Json<RequestCounts> {
    Json(state.requests.snapshot())
}

/// `POST /_demo/requests/reset`: zeroes the counts; answers them (zero).
pub async fn reset_request_counts(State(state): State<AppState>) -> Json<RequestCounts> {
    state.requests.reset();
    Json(state.requests.snapshot())
}
