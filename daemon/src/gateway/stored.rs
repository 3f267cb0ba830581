//! Proxied answers as the response cache keeps them: what may be stored, the key, the encoding,
//! and how a stored answer is served (hit, `304`, `HEAD`, stale copy).
//!
//! Invariant: only a complete `200` without `Set-Cookie`, without `private` / `no-store` /
//! `no-cache`, without `Content-Range` or a content coding, whose `Vary` names nothing but the
//! route's own `vary` headers (and `Accept-Encoding`, since bodies are fetched and kept
//! uncompressed), is stored; every stored body carries a strong `ETag`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::{Buf, BufMut, Bytes};
use sha2::{Digest, Sha256};

use super::routes::Route;
use crate::cache::pattern::escape_glob;
use crate::http::response_cache::CacheStrategy;

/// Largest body stored; bigger answers stream through uncached.
pub const MAX_STORED_BODY: usize = 1 << 20;
/// Prefix of the gateway's keys in the cache.
pub const KEY_PREFIX: &str = "gw:";

/// Response fields that are about one transfer or one request, not about the stored content.
const NOT_STORED: [HeaderName; 12] = [
    header::DATE,
    header::AGE,
    header::CONTENT_LENGTH,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::SET_COOKIE,
    header::VARY,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("server-timing"),
    HeaderName::from_static("x-response-time"),
];

/// The upstream's own tags (Cloudflare's and Fastly's conventions).
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The cache key of a `GET`/`HEAD`: path and sorted query, then the route's `vary` values, then
/// (per-user strategies) a digest of the credentials. `None` when the request must not use the
/// cache (a key too long to be one).
pub fn key(route: &Route, strategy: CacheStrategy, request: &Request) -> Option<String> {
    let uri = request.uri();
    let mut query: Vec<&str> = uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()).collect();
    query.sort_unstable();
    let mut key = format!("{KEY_PREFIX}{}?{}", uri.path(), query.join("&"));
    let headers = request.headers();
    if !route.vary.is_empty() {
        let mut digest = Sha256::new();
        for name in &route.vary {
            for v in headers.get_all(name) {
                digest.update(v.as_bytes());
                digest.update(b"\n");
            }
            digest.update(b"\0");
        }
        key.push_str("#v=");
        push_hex(&mut key, &digest.finalize()[..12]);
    }
    if matches!(strategy, CacheStrategy::Analytics(_)) {
        // Per user: the credentials and the session cookie both say who it is.
        let mut digest = Sha256::new();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            for v in headers.get_all(name) {
                digest.update(v.as_bytes());
            }
            digest.update(b"\0");
        }
        key.push_str("#u=");
        push_hex(&mut key, &digest.finalize()[..16]);
    }
    (key.len() <= crate::cache::MAX_KEY_BYTES).then_some(key)
}

/// The pattern matching every stored answer for `path`, whatever its query (RFC 9111 §4.4: an
/// unsafe method invalidates its target URI).
pub fn path_pattern(path: &str) -> String {
    format!("{KEY_PREFIX}{}\\?*", escape_glob(path))
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn cache_control_has(headers: &HeaderMap, directives: &[&str]) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            directives.iter().any(|x| name.eq_ignore_ascii_case(x))
        })
    })
}

/// Whether the client asked not to be answered from a cache.
pub fn bypass_requested(headers: &HeaderMap) -> bool {
    cache_control_has(headers, &["no-cache", "no-store"])
        || headers.get(header::PRAGMA).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
}

/// Why an answer is not stored (`None`: it may be).
pub fn refusal(route: &Route, response: &Response) -> Option<&'static str> {
    let h = response.headers();
    if response.status() != StatusCode::OK {
        return Some("status");
    }
    if h.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    if cache_control_has(h, &["private", "no-store", "no-cache"]) {
        return Some("cache-control");
    }
    if h.contains_key(header::CONTENT_RANGE) {
        return Some("partial");
    }
    if h.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity")) {
        return Some("content-encoding");
    }
    let vary_ok = h.get_all(header::VARY).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').map(str::trim).filter(|n| !n.is_empty()).all(|n| {
                // Per-user strategies are keyed by the credentials already.
                let per_user = matches!(route.cache.map(|c| c.strategy), Some(CacheStrategy::Analytics(_)))
                    && (n.eq_ignore_ascii_case("authorization") || n.eq_ignore_ascii_case("cookie"));
                per_user
                    || n.eq_ignore_ascii_case("accept-encoding")
                    || route.vary.iter().any(|r| r.as_str().eq_ignore_ascii_case(n))
            })
        })
    });
    if !vary_ok {
        return Some("vary");
    }
    let declared = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_STORED_BODY) {
        return Some("size");
    }
    None
}

/// Tags the upstream gave its answer (`Cache-Tag: a, b`, `Surrogate-Key: a b`).
pub fn upstream_tags(headers: &HeaderMap) -> Vec<String> {
    let mut tags = Vec::new();
    for v in headers.get_all(CACHE_TAG).iter().filter_map(|v| v.to_str().ok()) {
        tags.extend(v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned));
    }
    for v in headers.get_all(SURROGATE_KEY).iter().filter_map(|v| v.to_str().ok()) {
        tags.extend(v.split_ascii_whitespace().map(str::to_owned));
    }
    tags
}

/// A strong validator of a body.
pub fn strong_etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let mut tag = String::from("\"");
    push_hex(&mut tag, &digest[..16]);
    tag.push('"');
    HeaderValue::from_str(&tag).expect("hex is a valid header value")
}

/// `[header count u16]{[name len u16][name][value len u16][value]}[body]`: the kept headers (an
/// `ETag` always among them) and the body.
pub fn encode(headers: &HeaderMap, body: &[u8]) -> Bytes {
    let mut kept: Vec<(&HeaderName, &HeaderValue)> = headers
        .iter()
        .filter(|(name, _)| !NOT_STORED.contains(name) && *name != CACHE_TAG && *name != SURROGATE_KEY)
        .filter(|(name, value)| !(*name == header::ETAG && value.as_bytes().starts_with(b"W/")))
        .collect();
    let etag = strong_etag(body);
    if !kept.iter().any(|(name, _)| *name == header::ETAG) {
        kept.push((&header::ETAG, &etag));
    }
    let mut out = Vec::with_capacity(body.len() + 256);
    out.put_u16(kept.len() as u16);
    for (name, value) in kept {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u16(value.as_bytes().len() as u16);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(body);
    Bytes::from(out)
}

/// A stored answer read back.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub fn decode(mut buf: Bytes) -> Option<StoredAnswer> {
    let take = |buf: &mut Bytes| -> Option<Bytes> {
        let len = usize::from(buf.try_get_u16().ok()?);
        (buf.remaining() >= len).then(|| buf.split_to(len))
    };
    let count = buf.try_get_u16().ok()?;
    let mut headers = HeaderMap::with_capacity(usize::from(count) + 8);
    for _ in 0..count {
        let name = HeaderName::from_bytes(&take(&mut buf)?).ok()?;
        let value = HeaderValue::from_maybe_shared(take(&mut buf)?).ok()?;
        headers.append(name, value);
    }
    Some(StoredAnswer { headers, body: buf })
}

/// How a stored answer is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Hit,
    Miss,
    /// Past its TTL, within `stale-while-revalidate`: a refresh is running.
    Revalidating,
    /// The upstream failed: the last good copy, within `stale-if-error`.
    StaleIfError,
}

impl Served {
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Revalidating => "STALE",
            Self::StaleIfError => "STALE",
        }
    }
}

/// The response for `request` from a stored answer: `304` when the client's validators match,
/// headers only for `HEAD`, else the body; with the strategy's `Cache-Control`, `Age`, `X-Cache`.
pub fn serve(
    answer: StoredAnswer,
    request_method: &Method,
    request_headers: &HeaderMap,
    strategy: CacheStrategy,
    route: &Route,
    age: Duration,
    served: Served,
) -> Response {
    let mut headers = answer.headers;
    headers.insert(header::CACHE_CONTROL, cache_control(strategy));
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    headers.insert(X_CACHE, HeaderValue::from_static(served.label()));
    let mut vary: Vec<&str> = route.vary.iter().map(HeaderName::as_str).collect();
    if matches!(strategy, CacheStrategy::Analytics(_)) {
        vary.extend(["authorization", "cookie"]);
    }
    if !vary.is_empty()
        && let Ok(v) = HeaderValue::from_str(&vary.join(", "))
    {
        headers.insert(header::VARY, v);
    }
    if served == Served::StaleIfError {
        // RFC 7234 §5.5's warn-codes are what clients and proxies know to look for.
        headers.insert(header::WARNING, HeaderValue::from_static("111 voxperfd \"Revalidation Failed\""));
    }
    let (status, body) = if not_modified(request_headers, &headers) {
        // RFC 9110 §15.4.5: the fields a 200 would have had, without the content's own.
        headers.remove(header::CONTENT_TYPE);
        headers.remove(header::CONTENT_LENGTH);
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else if request_method == Method::HEAD {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
        (StatusCode::OK, Body::empty())
    } else {
        (StatusCode::OK, Body::from(answer.body))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The seed's `staticAssets`: a content-hashed file name (`app.3f9a1c2e.js`, `logo-5d41402abc.png`:
/// eight or more hex digits before the extension) never changes, so downstream caches may keep
/// it for a year without asking.
pub fn is_content_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let Some((stem, ext)) = name.rsplit_once('.') else { return false };
    if ext.is_empty() || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let hash = stem.rsplit(['.', '-']).next().unwrap_or("");
    hash.len() >= 8 && hash.len() < stem.len() && hash.chars().all(|c| c.is_ascii_hexdigit())
}

pub const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// Downstream copies may be kept but must be revalidated (cheap: the `ETag` answers `304`):
/// no downstream cache hears of the database's writes.
fn cache_control(strategy: CacheStrategy) -> HeaderValue {
    HeaderValue::from_static(match strategy {
        CacheStrategy::ShortTerm(_) => "public, max-age=0, must-revalidate",
        CacheStrategy::Reports(_) => "private, max-age=0, must-revalidate",
        CacheStrategy::Analytics(_) => "private, no-cache",
    })
}

/// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` decides when present, else `If-Modified-Since`
/// against `Last-Modified`.
fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else { return false };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        return inm.split(',').any(|c| c.trim() == "*" || opaque(c) == opaque(etag));
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified =
        stored.get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// `Last-Modified` for an answer the upstream did not date: when it was stored.
pub fn last_modified_now(headers: &mut HeaderMap) {
    if !headers.contains_key(header::LAST_MODIFIED) {
        let now = SystemTime::now();
        // Whole seconds, as the header carries them, so that an echo compares equal.
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        if let Ok(v) = HeaderValue::from_str(&date) {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::BreakerSettings;

    fn route(vary: &[&str]) -> Route {
        let text = format!(
            "[[route]]\npath = \"/r\"\ncache = \"shortTerm\"\nvary = [{}]\n",
            vary.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(",")
        );
        let t = super::super::routes::RouteTable::parse(
            "t",
            &text,
            Some("http://127.0.0.1:1"),
            &BreakerSettings::default(),
        )
        .unwrap();
        t.find("/r").clone()
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn keys_ignore_query_order_and_separate_vary_values_and_users() {
        let r = route(&["accept-language"]);
        let s = CacheStrategy::short_term(60);
        let a = key(&r, s, &get("/r?b=2&a=1", &[("accept-language", "en")])).unwrap();
        assert_eq!(a, key(&r, s, &get("/r?a=1&b=2", &[("accept-language", "en")])).unwrap());
        assert_ne!(a, key(&r, s, &get("/r?a=1&b=2", &[("accept-language", "fr")])).unwrap());
        let u = CacheStrategy::analytics(60);
        let alice = key(&r, u, &get("/r", &[("authorization", "Bearer user-1")])).unwrap();
        let bob = key(&r, u, &get("/r", &[("authorization", "Bearer user-2")])).unwrap();
        let cookie = key(&r, u, &get("/r", &[("cookie", "session=abc")])).unwrap();
        assert!(alice != bob && bob != cookie && alice != cookie);
        assert!(key(&r, s, &get(&format!("/r?q={}", "x".repeat(2000)), &[])).is_none());
    }

    #[test]
    fn content_hashed_names_are_recognised() {
        for hashed in ["/static/app.3f9a1c2e.js", "/img/logo-5d41402abc4b2a76.png", "/a/b.c.deadbeef.css"] {
            assert!(is_content_hashed(hashed), "{hashed}");
        }
        for plain in
            ["/static/app.js", "/static/deadbeef.js", "/static/app.3f9a.js", "/api/numbers/12345678", "/x.1234567z.js"]
        {
            assert!(!is_content_hashed(plain), "{plain}");
        }
    }

    #[test]
    fn the_path_pattern_covers_every_query_of_that_path_only() {
        let p = path_pattern("/api/numbers/7");
        assert_eq!(p, "gw:/api/numbers/7\\?*");
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> Response {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_complete_shared_200s_are_stored() {
        let r = route(&["accept-language"]);
        assert_eq!(refusal(&r, &response(200, &[])), None);
        assert_eq!(refusal(&r, &response(200, &[("vary", "Accept-Encoding, Accept-Language")])), None);
        assert_eq!(refusal(&r, &response(404, &[])), Some("status"));
        assert_eq!(refusal(&r, &response(200, &[("set-cookie", "a=b")])), Some("set-cookie"));
        assert_eq!(refusal(&r, &response(200, &[("cache-control", "private, max-age=60")])), Some("cache-control"));
        assert_eq!(refusal(&r, &response(200, &[("cache-control", "no-store")])), Some("cache-control"));
        assert_eq!(refusal(&r, &response(200, &[("content-range", "bytes 0-1/2")])), Some("partial"));
        assert_eq!(refusal(&r, &response(200, &[("content-encoding", "gzip")])), Some("content-encoding"));
        assert_eq!(refusal(&r, &response(200, &[("vary", "*")])), Some("vary"));
        assert_eq!(refusal(&r, &response(200, &[("vary", "cookie")])), Some("vary"));
        let mut analytics = r.clone();
        analytics.cache = Some(super::super::routes::CachePolicy {
            strategy: CacheStrategy::analytics(60),
            stale_while_revalidate: Duration::ZERO,
        });
        assert_eq!(refusal(&analytics, &response(200, &[("vary", "Authorization, Cookie")])), None);
        assert_eq!(refusal(&r, &response(200, &[("content-length", "99999999")])), Some("size"));
    }

    #[test]
    fn upstream_tags_come_from_both_conventions() {
        let mut h = HeaderMap::new();
        h.append(CACHE_TAG, HeaderValue::from_static("table:public.\"VirtualNumber\", number:7"));
        h.append(SURROGATE_KEY, HeaderValue::from_static("a b"));
        assert_eq!(upstream_tags(&h), ["table:public.\"VirtualNumber\"", "number:7", "a", "b"]);
    }

    #[test]
    fn stored_answers_round_trip_with_a_strong_etag_and_without_per_request_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::DATE, HeaderValue::from_static("Tue, 01 Dec 2026 00:00:00 GMT"));
        h.insert(CACHE_TAG, HeaderValue::from_static("x"));
        h.insert("x-total-count", HeaderValue::from_static("12"));
        let stored = decode(encode(&h, b"{\"a\":1}")).unwrap();
        assert_eq!(&stored.body[..], b"{\"a\":1}");
        assert_eq!(stored.headers["content-type"], "application/json");
        assert_eq!(stored.headers["x-total-count"], "12");
        assert!(!stored.headers.contains_key("date") && !stored.headers.contains_key("cache-tag"));
        assert_eq!(stored.headers[header::ETAG], strong_etag(b"{\"a\":1}"));
        assert!(!stored.headers[header::ETAG].to_str().unwrap().starts_with("W/"));
    }

    #[test]
    fn matching_validators_answer_304_and_head_has_no_body() {
        let r = route(&[]);
        let s = CacheStrategy::short_term(60);
        let mut h = HeaderMap::new();
        h.insert(header::LAST_MODIFIED, HeaderValue::from_static("Tue, 01 Dec 2026 00:00:00 GMT"));
        let stored = decode(encode(&h, b"body")).unwrap();
        let etag = stored.headers[header::ETAG].clone();
        let mut inm = HeaderMap::new();
        inm.insert(header::IF_NONE_MATCH, etag.clone());
        let r304 = serve(stored.clone(), &Method::GET, &inm, s, &r, Duration::ZERO, Served::Hit);
        assert_eq!(r304.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r304.headers()[header::ETAG], etag);
        let mut other = HeaderMap::new();
        other.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"nope\""));
        // If-None-Match decides even when If-Modified-Since would match.
        other.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Wed, 02 Dec 2026 00:00:00 GMT"));
        assert_eq!(serve(stored.clone(), &Method::GET, &other, s, &r, Duration::ZERO, Served::Hit).status(), 200);
        let mut ims = HeaderMap::new();
        ims.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Wed, 02 Dec 2026 00:00:00 GMT"));
        assert_eq!(serve(stored.clone(), &Method::GET, &ims, s, &r, Duration::ZERO, Served::Hit).status(), 304);
        let head = serve(stored, &Method::HEAD, &HeaderMap::new(), s, &r, Duration::from_secs(3), Served::Hit);
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "4");
        assert_eq!(head.headers()[header::AGE], "3");
        assert_eq!(head.headers()["x-cache"], "HIT");
    }
}
