//! The demo credential: `Authorization: Bearer user-<id>`, naming the `"User"` the request acts
//! as. It proves nothing (anyone can send any id); it exists so that per-user responses differ by
//! the `Authorization` header, which is what a gateway must not cache across users.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::db::{Db, User};
use crate::error::AppError;

/// The user id in the request's credential: `Ok(None)` without an `Authorization` header, an
/// error (401) when the header is there but not `Bearer user-<positive integer>`.
pub fn user_id(headers: &HeaderMap) -> Result<Option<i64>, AppError> {
    let Some(value) = headers.get(AUTHORIZATION) else { return Ok(None) };
    let malformed = || AppError::unauthorized("expected `Authorization: Bearer user-<id>`");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    match token.trim().strip_prefix("user-").map(str::parse::<i64>) {
        Some(Ok(id)) if id > 0 => Ok(Some(id)),
        _ => Err(malformed()),
    }
}

/// The user the credential names: `Ok(None)` without an `Authorization` header; a 401 when the
/// header is malformed or names no user.
pub async fn user(db: &Db, headers: &HeaderMap) -> Result<Option<User>, AppError> {
    let Some(id) = user_id(headers)? else { return Ok(None) };
    match db.user(id).await? {
        Some(user) => Ok(Some(user)),
        None => Err(AppError::unauthorized(format!("the credential names no user (no user with id {id})"))),
    }
}

/// Like [`user`], for endpoints that need a user: a missing header is a 401 too.
pub async fn required_user(db: &Db, headers: &HeaderMap) -> Result<User, AppError> {
    user(db, headers)
        .await?
        .ok_or_else(|| AppError::unauthorized("this endpoint needs `Authorization: Bearer user-<id>`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_user_id_is_the_only_accepted_form() {
        assert_eq!(user_id(&with("Bearer user-7")).unwrap(), Some(7));
        assert_eq!(user_id(&with("bearer user-7")).unwrap(), Some(7));
        assert_eq!(user_id(&HeaderMap::new()).unwrap(), None);
        for bad in ["Bearer 7", "Basic user-7", "Bearer user-0", "Bearer user-x", "user-7"] {
            assert!(user_id(&with(bad)).is_err(), "{bad}");
        }
    }
}
