//! ETag and `If-None-Match` → 304 for successful JSON answers to GET and HEAD.
//!
//! The tag is a hash of the uncompressed body, marked weak (`W/`) because the compression layer
//! outside may send it in several encodings that are equivalent but not byte-identical (RFC 9110
//! §8.8.1). Comparison is the weak one that RFC 9110 §13.1.2 prescribes for If-None-Match.
//! Invariant: a 304 is sent only when the body the client holds equals, byte for byte, the one
//! that would have been sent.

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

/// Bodies larger than this pass through without an ETag rather than being buffered to hash.
const MAX_TAGGED_BODY: u64 = 8 << 20;

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.ends_with("+json"))
}

/// The weak ETag of a body.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::from("W/\"");
    for b in &digest[..16] {
        tag.push_str(&format!("{b:02x}"));
    }
    tag.push('"');
    tag
}

/// Weak comparison of `If-None-Match` (a list, or `*`) against `tag`.
pub fn none_match(if_none_match: &str, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    if_none_match.split(',').any(|candidate| candidate.trim() == "*" || opaque(candidate) == opaque(tag))
}

pub async fn etag(request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return next.run(request).await;
    }
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = next.run(request).await;
    let sized = response.body().size_hint().upper().is_some_and(|n| n <= MAX_TAGGED_BODY);
    if response.status() != StatusCode::OK
        || response.headers().contains_key(header::ETAG)
        || !is_json(response.headers())
        || !sized
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_TAGGED_BODY as usize).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "response body failed while computing its ETag");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let tag = etag_of(&bytes);
    let tag_value = HeaderValue::from_str(&tag).expect("hex digest is a valid header value");
    if if_none_match.is_some_and(|inm| none_match(&inm, &tag)) {
        let mut not_modified = Response::new(Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        // RFC 9110 §15.4.5: a 304 carries the headers a 200 would have had, minus the content.
        for name in [header::CACHE_CONTROL, header::VARY, header::EXPIRES, header::CONTENT_LOCATION] {
            if let Some(v) = parts.headers.get(&name) {
                not_modified.headers_mut().insert(name, v.clone());
            }
        }
        not_modified.headers_mut().insert(header::ETAG, tag_value);
        return not_modified;
    }
    parts.headers.insert(header::ETAG, tag_value);
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_comparison_matches_lists_wildcards_and_strong_forms() {
        let tag = etag_of(b"{\"a\":1}");
        assert!(none_match(&tag, &tag));
        assert!(none_match(&format!("\"x\", {tag}"), &tag));
        assert!(none_match("*", &tag));
        assert!(none_match(&tag.replace("W/", ""), &tag));
        assert!(!none_match(&etag_of(b"{\"a\":2}"), &tag));
    }
}
