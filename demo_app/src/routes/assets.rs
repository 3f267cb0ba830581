//! Static assets, embedded in the binary: a content-hashed script (a gateway may cache it for a
//! year, since a new build gets a new name) and the page that loads it. No `Cache-Control` here:
//! the gateway decides.

use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The script's name carries a hash of its content (as a bundler would name it).
pub const APP_JS_PATH: &str = "/static/app.3f9a1c2e.js";
pub const INDEX_HTML_PATH: &str = "/static/index.html";

const APP_JS: &str = include_str!("../../static/app.3f9a1c2e.js");
const INDEX_HTML: &str = include_str!("../../static/index.html");

pub async fn app_js() -> impl IntoResponse {
    ([(CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"))], APP_JS)
}

pub async fn index_html() -> impl IntoResponse {
    ([(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], INDEX_HTML)
}
