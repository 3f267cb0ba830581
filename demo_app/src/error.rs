//! `AppError`: the one way a handler fails, rendered as `{"error": {"code", "message"}}`.
//!
//! Client mistakes carry a stable `code` and a message naming the problem (for a bad parameter,
//! the parameter); failures that are ours answer 500 with a generic message and are logged here,
//! once. Invariant: every error response of the API has this JSON shape, including the router's
//! own 404 and 405 (see `routes::router`).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db;

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    /// Stable, machine-readable (`invalid_parameter`, `not_found`, `not_available`, ...).
    code: &'static str,
    message: String,
}

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 for a query or path parameter; the message starts with the parameter's name.
    pub fn invalid_parameter(name: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", format!("`{name}`: {problem}"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: the demo credential is missing, malformed or names no user.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// A failure that is ours: logged with its details, answered with a generic message.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see voxlink-demo's log")
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 says which scheme would do.
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<db::Error> for AppError {
    fn from(e: db::Error) -> Self {
        Self::internal(e)
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", rejection.body_text())
            }
            // axum says 422; here 422 means "no such user", so a body of the wrong shape is a 400
            // (serde's message names the field).
            JsonRejection::JsonDataError(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_body", rejection.body_text())
            }
            other => Self::new(other.status(), "invalid_body", other.body_text()),
        }
    }
}
