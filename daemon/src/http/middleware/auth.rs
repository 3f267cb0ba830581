//! Bearer-token check for `/api/admin/*`, as a tower-http `ValidateRequest`.
//!
//! No token configured: every admin call is refused with 403 and a message saying how to enable
//! it (an open admin API would be worse than none). Token configured: a missing or different
//! `Authorization: Bearer …` gets 401 with `WWW-Authenticate: Bearer`. Tokens are compared as
//! SHA-256 digests, so the comparison takes the same time whatever prefix matched.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use tower_http::validate_request::ValidateRequest;

use crate::config::Secret;
use crate::http::error::AppError;

#[derive(Debug, Clone)]
pub struct AdminAuth {
    expected: Option<Arc<[u8; 32]>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl AdminAuth {
    pub fn new(token: Option<&Secret>) -> Self {
        Self { expected: token.map(|t| Arc::new(digest(t.expose()))) }
    }
}

impl<B> ValidateRequest<B> for AdminAuth {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<Body>> {
        let Some(expected) = &self.expected else {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "the admin API is disabled: set VOXPERF_ADMIN_TOKEN to enable it",
            )
            .into_response());
        };
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        match given {
            Some(token) if digest(token) == **expected => Ok(()),
            _ => {
                let message = if given.is_some() {
                    "invalid bearer token"
                } else {
                    "missing `Authorization: Bearer <VOXPERF_ADMIN_TOKEN>`"
                };
                let mut response = AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Err(response)
            }
        }
    }
}
