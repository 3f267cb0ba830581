//! `AppError`: the one way a handler fails, rendered as `{"error": {"code", "message"}}`.
//!
//! Client mistakes carry a stable `code` and a message naming the problem; server-side failures
//! answer with a generic message, and the full error travels to the request log in a response
//! extension ([`InternalError`]) so it is logged exactly once, with the request's span.
//! Invariant: every error response of the API, including those produced by layers and by the
//! router itself (404, 405, 413, timeouts), has this JSON shape.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

use crate::cache;
use crate::db;
use crate::db::statement::StatementError;
use crate::services::query_cache;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`invalid_json`, `not_found`, `not_read_only`, ...).
    pub code: String,
    pub message: String,
}

/// The full text of a server-side error, for the request log.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    internal: Option<String>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), internal: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failure that is ours: generic message out, details to the log.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; see the daemon's log for this request id".into(),
            internal: Some(error.to_string()),
        }
    }

    /// A dependency is down: the message may say which (it is not a secret), 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(internal) = self.internal {
            response.extensions_mut().insert(InternalError(internal));
        }
        response
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("invalid_json", message),
            JsonRejection::JsonDataError(_) => Self::bad_request("invalid_body", message),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than VOXPERF_BODY_LIMIT",
            ),
            other => Self::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<cache::Error> for AppError {
    fn from(e: cache::Error) -> Self {
        let code = match e {
            cache::Error::InvalidKey(_) => "invalid_key",
            cache::Error::InvalidTag { .. } => "invalid_tag",
            cache::Error::InvalidPattern(_) => "invalid_pattern",
            cache::Error::InvalidTtl(_) => "invalid_ttl",
        };
        Self::bad_request(code, e.to_string())
    }
}

impl From<StatementError> for AppError {
    fn from(e: StatementError) -> Self {
        match e {
            StatementError::NotReadOnly(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "not_read_only", e.to_string())
            }
            StatementError::Syntax(_) => Self::bad_request("syntax_error", e.to_string()),
            StatementError::Empty | StatementError::Multiple(_) => {
                Self::bad_request("invalid_statement", e.to_string())
            }
        }
    }
}

impl From<db::Error> for AppError {
    fn from(e: db::Error) -> Self {
        let message = e.to_string();
        match (&e, e.sqlstate()) {
            (db::Error::TooManyRows(_), _) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "row_limit_exceeded", message)
            }
            (db::Error::ParamCount { .. }, _) => Self::bad_request("invalid_params", message),
            (db::Error::Unavailable(_), _) => Self::unavailable(message),
            (_, Some(code)) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_read_only",
                format!("only read-only statements are allowed: {message}"),
            ),
            (_, Some(code)) if *code == SqlState::QUERY_CANCELED => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "statement_timeout",
                format!("{message} (VOXPERF_QUERY_STATEMENT_TIMEOUT)"),
            ),
            (_, Some(code)) if *code == SqlState::SYNTAX_ERROR => Self::bad_request("syntax_error", message),
            (_, Some(code)) if *code == SqlState::INSUFFICIENT_PRIVILEGE => {
                Self::new(StatusCode::FORBIDDEN, "insufficient_privilege", message)
            }
            // Class 42 (undefined table, column...) and 22 (bad parameter value): the statement's
            // fault; the server's message says what is wrong.
            (_, Some(code)) if code.code().starts_with("42") || code.code().starts_with("22") => {
                Self::bad_request("invalid_statement", message)
            }
            _ if e.is_outage() => Self::unavailable(format!("postgres unavailable: {message}")),
            _ => Self::internal(e),
        }
    }
}

impl From<query_cache::Error> for AppError {
    fn from(e: query_cache::Error) -> Self {
        match e {
            query_cache::Error::Statement(e) => e.into(),
            query_cache::Error::Db(e) => e.into(),
            query_cache::Error::Cache(e) => e.into(),
        }
    }
}

impl From<crate::services::cache_admin::Error> for AppError {
    fn from(e: crate::services::cache_admin::Error) -> Self {
        use crate::services::cache_admin::Error as E;
        match e {
            E::Nothing => Self::bad_request("invalid_body", e.to_string()),
            E::UnknownTable(_) => Self::bad_request("unknown_table", e.to_string()),
            E::Cache(e) => e.into(),
            E::Db(e) => e.into(),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for AppError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl AppError {
    /// A database error met while reading the extension's views: a missing view or function
    /// means the extension is missing or too old (503, saying so), not a bad request.
    pub fn from_extension(e: db::Error) -> Self {
        match e.sqlstate() {
            Some(code)
                if *code == SqlState::UNDEFINED_TABLE
                    || *code == SqlState::UNDEFINED_FUNCTION
                    || *code == SqlState::INVALID_SCHEMA_NAME =>
            {
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "extension_missing",
                    format!("the voxperf extension is not installed in this database (CREATE EXTENSION voxperf): {e}"),
                )
            }
            _ => e.into(),
        }
    }
}

impl From<crate::services::advisor::Error> for AppError {
    fn from(e: crate::services::advisor::Error) -> Self {
        use crate::services::advisor::Error as E;
        match e {
            E::Missing(_) => Self::new(StatusCode::NOT_IMPLEMENTED, "extension_function_missing", e.to_string()),
            E::Invalid(_) => Self::bad_request("invalid_parameter", e.to_string()),
            E::Nothing => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_migrate", e.to_string()),
            E::Io { .. } => Self::internal(e),
            E::Db(e) => Self::from_extension(e),
            E::Cache(e) => e.into(),
        }
    }
}

impl From<crate::monitor::Error> for AppError {
    fn from(e: crate::monitor::Error) -> Self {
        use crate::monitor::Error as E;
        match e {
            E::Custom(crate::monitor::custom::Error::TooManySeries)
            | E::Trends(crate::monitor::trends::Error::TooManySeries) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_series", e.to_string())
            }
            E::Custom(_) => Self::bad_request("invalid_metric", e.to_string()),
            E::Trends(e) => e.into(),
        }
    }
}

impl From<crate::monitor::trends::Error> for AppError {
    fn from(e: crate::monitor::trends::Error) -> Self {
        use crate::monitor::trends::Error as E;
        match e {
            E::UnknownMetric(_) => Self::bad_request("unknown_metric", e.to_string()),
            E::Invalid { .. } => Self::bad_request("invalid_parameter", e.to_string()),
            E::TooManySeries => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_series", e.to_string()),
        }
    }
}
