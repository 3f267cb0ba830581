//! Security headers for a JSON API, after the OWASP REST Security and Secure Headers projects.
//!
//! Set only if the handler did not set them (`if_not_present`). A JSON API renders no HTML, so
//! the content policy forbids everything and framing is refused; `Cache-Control: no-store` is the
//! default for every route that does not choose its own (see `crate::app`).

use axum::http::HeaderValue;
use axum::http::header::{self, HeaderName};

/// `(header, value)` pairs applied to every response.
pub fn headers() -> Vec<(HeaderName, HeaderValue)> {
    let pairs: [(HeaderName, &'static str); 9] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000; includeSubDomains"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
        (HeaderName::from_static("x-permitted-cross-domain-policies"), "none"),
        (
            HeaderName::from_static("permissions-policy"),
            "accelerometer=(), camera=(), geolocation=(), microphone=(), payment=(), usb=()",
        ),
    ];
    pairs.into_iter().map(|(name, value)| (name, HeaderValue::from_static(value))).collect()
}
