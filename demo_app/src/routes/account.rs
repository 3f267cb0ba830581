//! Sessions and the account: answers that belong to one client. A gateway must neither cache a
//! `Set-Cookie` answer nor share a `Cache-Control: private` one between clients.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::json;

use crate::AppState;
use crate::auth;
use crate::db::User;
use crate::error::AppError;

/// `POST /api/session`: `{"ok": true}` and a new `session` cookie.
pub async fn create_session() -> impl IntoResponse {
    let cookie = format!("session={}; HttpOnly; Path=/", new_session_id());
    ([(SET_COOKIE, cookie)], Json(json!({ "ok": true })))
}

/// 32 hex digits that differ on every call. From std's `RandomState` (SipHash with random keys,
/// new keys per instance): unguessable enough for a demo cookie that grants nothing. A real
/// session id needs a CSPRNG.
fn new_session_id() -> String {
    static ISSUED: AtomicU64 = AtomicU64::new(0);
    let n = ISSUED.fetch_add(1, Ordering::Relaxed);
    let (a, b) = (RandomState::new().hash_one(n), RandomState::new().hash_one(n));
    format!("{a:016x}{b:016x}")
}

#[derive(Debug, Serialize)]
struct AccountBody {
    /// The credential's user; `null` without an `Authorization` header.
    account: Option<User>,
}

/// `GET /api/account`: the user of `Authorization: Bearer user-<id>`, or `null` without the
/// header (a malformed one, or one naming no user, is a 401).
pub async fn account(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, AppError> {
    let account = auth::user(&state.db, &headers).await?;
    Ok((
        [(CACHE_CONTROL, HeaderValue::from_static("private")), (VARY, HeaderValue::from_static("authorization"))],
        Json(AccountBody { account }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
