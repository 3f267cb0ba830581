//! Forwarding one request to an upstream and its answer back, as a proxy must (RFC 9110 §7.6).
//!
//! The request is rewritten, never buffered: hop-by-hop fields go (the fixed list and whatever
//! `Connection` names), `Forwarded` and `X-Forwarded-For/-Proto/-Host` are added, `Expect` is
//! answered here (hyper sends `100 Continue` when the body is first read, which is when it
//! streams upstream), the body is streamed through a length limit. The upstream's answer loses its
//! hop-by-hop fields and streams back. Invariant: every failure becomes a response in the
//! daemon's JSON error shape within the route's timeout — 502 refused or reset, 504 timed out,
//! 413 too large — never a hang and never a 500.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::routes::Upstream;
use crate::http::error::AppError;

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus the historical `Proxy-Connection` and `Keep-Alive`).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Idle keep-alive connections kept per upstream host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// How long an idle pooled connection is kept (below common upstream keep-alive timeouts).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} refused the connection: {detail}")]
    Connect { upstream: String, detail: String },
    #[error("upstream {upstream} did not answer within {timeout_ms} ms")]
    Timeout { upstream: String, timeout_ms: u64 },
    #[error("request body larger than the route's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("upstream {upstream} failed: {detail}")]
    Failed { upstream: String, detail: String },
    #[error("no upstream is configured for this path (set VOXPERF_UPSTREAM or the route's upstream)")]
    NoUpstream,
    #[error("circuit breaker of upstream {upstream} is open; retry in {retry_after_ms} ms")]
    Open { upstream: String, retry_after_ms: u64 },
}

impl ProxyError {
    /// Whether the upstream itself is unwell (counts against its breaker, allows a stale copy).
    pub fn is_upstream_failure(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Timeout { .. } | Self::Failed { .. } | Self::Open { .. })
    }

    pub fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Connect { .. } | Self::Failed { .. } => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            Self::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::NoUpstream => (StatusCode::BAD_GATEWAY, "no_upstream"),
            Self::Open { .. } => (StatusCode::SERVICE_UNAVAILABLE, "upstream_circuit_open"),
        };
        let retry_after = match &self {
            Self::Open { retry_after_ms, .. } => Some(retry_after_ms.div_ceil(1000).max(1)),
            _ => None,
        };
        let mut response = AppError::new(status, code, self.to_string()).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The pooled HTTP/1.1 client shared by every upstream.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, Body>,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Self { client }
    }
}

/// What the client sent, as the `Forwarded` fields need it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

/// The answer and how long the upstream took to send its headers.
pub struct Forwarded {
    pub response: Response,
    pub upstream_time: Duration,
}

impl UpstreamClient {
    /// Sends `request` (already rewritten by [`rewrite_request`]) and waits at most `timeout`
    /// for the response headers.
    pub async fn send(
        &self,
        upstream: &Upstream,
        request: Request,
        timeout: Duration,
    ) -> Result<Forwarded, ProxyError> {
        let started = Instant::now();
        let limit = request.extensions().get::<BodyLimit>().map(|l| l.0);
        let result = tokio::time::timeout(timeout, self.client.request(request)).await;
        let upstream_time = started.elapsed();
        let response = match result {
            Err(_) => {
                return Err(ProxyError::Timeout {
                    upstream: upstream.name.clone(),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
            Ok(Err(e)) => return Err(classify(upstream, limit, &e)),
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Forwarded { response: Response::from_parts(parts, Body::new(body)), upstream_time })
    }
}

/// The route's body limit, carried to [`UpstreamClient::send`] to tell a cut body from a reset.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(u64);

fn classify(upstream: &Upstream, limit: Option<u64>, e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ProxyError::TooLarge { limit: limit.unwrap_or(0) };
        }
        source = s.source();
    }
    let detail = error_chain(e);
    if e.is_connect() {
        ProxyError::Connect { upstream: upstream.name.clone(), detail }
    } else {
        ProxyError::Failed { upstream: upstream.name.clone(), detail }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Removes the hop-by-hop fields and those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Whether the client asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(request: &Request) -> bool {
    request.headers().contains_key(header::UPGRADE)
        || request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// The client's request made into the upstream's: URI, hop-by-hop fields, forwarding fields,
/// body limit. `Content-Length` above the limit is refused here, before anything is sent.
pub fn rewrite_request(
    upstream: &Upstream,
    request: Request,
    peer: Peer,
    body_limit: u64,
) -> Result<Request, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit) {
        return Err(ProxyError::TooLarge { limit: body_limit });
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let target = format!("{}://{}{}{}", upstream.scheme, upstream.authority, upstream.path_prefix, path_and_query);
    parts.uri = target
        .parse::<Uri>()
        .map_err(|e| ProxyError::Failed { upstream: upstream.name.clone(), detail: e.to_string() })?;
    parts.version = Version::HTTP_11;

    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    // Answered by this side: hyper sends `100 Continue` when the body is first polled.
    parts.headers.remove(header::EXPECT);
    add_forwarding(&mut parts.headers, peer, original_host.as_ref());
    if let Ok(host) = HeaderValue::from_str(&upstream.authority) {
        parts.headers.insert(header::HOST, host);
    }
    parts.extensions.insert(BodyLimit(body_limit));
    let limited = http_body_util::Limited::new(body, usize::try_from(body_limit).unwrap_or(usize::MAX));
    Ok(Request::from_parts(parts, Body::new(limited)))
}

fn add_forwarding(headers: &mut HeaderMap, peer: Peer, host: Option<&HeaderValue>) {
    let forwarded_for = HeaderName::from_static("x-forwarded-for");
    let forwarded_proto = HeaderName::from_static("x-forwarded-proto");
    let forwarded_host = HeaderName::from_static("x-forwarded-host");
    let mut forwarded = Vec::new();
    if let Some(addr) = peer.0 {
        let ip = addr.ip().to_string();
        let chain = match headers.get(&forwarded_for).and_then(|v| v.to_str().ok()) {
            Some(previous) if !previous.trim().is_empty() => format!("{previous}, {ip}"),
            _ => ip.clone(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert(forwarded_for, v);
        }
        // RFC 7239 §6: an IPv6 node is quoted and bracketed.
        forwarded.push(if addr.is_ipv6() { format!("for=\"[{ip}]\"") } else { format!("for={ip}") });
    }
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        if !headers.contains_key(&forwarded_host)
            && let Ok(v) = HeaderValue::from_str(host)
        {
            headers.insert(forwarded_host, v);
        }
        forwarded.push(format!("host=\"{}\"", host.replace(['"', '\\'], "")));
    }
    if !headers.contains_key(&forwarded_proto) {
        headers.insert(forwarded_proto, HeaderValue::from_static("http"));
    }
    forwarded.push("proto=http".into());
    if let Ok(v) = HeaderValue::from_str(&forwarded.join(";")) {
        headers.append(header::FORWARDED, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::BreakerSettings;

    fn upstream() -> Upstream {
        Upstream {
            name: "app".into(),
            scheme: "http".into(),
            authority: "127.0.0.1:3000".into(),
            path_prefix: "/v1".into(),
            breaker: BreakerSettings::default(),
        }
    }

    #[test]
    fn hop_by_hop_fields_go_and_forwarding_fields_come() {
        let request = Request::builder()
            .uri("/api/numbers/search?country=US")
            .header(header::HOST, "gateway.example")
            .header(header::CONNECTION, "keep-alive, x-private-hop")
            .header("x-private-hop", "1")
            .header("keep-alive", "timeout=5")
            .header(header::TE, "trailers")
            .header(header::EXPECT, "100-continue")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-request-id", "abc")
            .body(Body::empty())
            .unwrap();
        let peer = Peer(Some("127.0.0.9:5555".parse().unwrap()));
        let out = rewrite_request(&upstream(), request, peer, 1024).unwrap();
        assert_eq!(out.uri().to_string(), "http://127.0.0.1:3000/v1/api/numbers/search?country=US");
        let h = out.headers();
        for gone in ["connection", "x-private-hop", "keep-alive", "te", "expect"] {
            assert!(!h.contains_key(gone), "{gone} must not be forwarded");
        }
        assert_eq!(h["host"], "127.0.0.1:3000");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.9");
        assert_eq!(h["x-forwarded-host"], "gateway.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=127.0.0.9;host=\"gateway.example\";proto=http");
        assert_eq!(h["x-request-id"], "abc", "the request id travels on");
    }

    #[test]
    fn ipv6_peers_are_quoted_in_forwarded() {
        let request = Request::builder().uri("/x").body(Body::empty()).unwrap();
        let out = rewrite_request(&upstream(), request, Peer(Some("[::1]:80".parse().unwrap())), 1024).unwrap();
        assert_eq!(out.headers()["forwarded"], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_sending() {
        let request = Request::builder().uri("/x").header(header::CONTENT_LENGTH, "2048").body(Body::empty()).unwrap();
        let e = rewrite_request(&upstream(), request, Peer(None), 1024).unwrap_err();
        assert!(matches!(e, ProxyError::TooLarge { limit: 1024 }));
        assert_eq!(e.into_response().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn an_upgrade_request_is_recognised() {
        let ws = Request::builder()
            .uri("/ws")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .unwrap();
        assert!(is_upgrade(&ws));
        assert!(!is_upgrade(&Request::builder().uri("/").body(Body::empty()).unwrap()));
    }

    #[test]
    fn an_open_breaker_answers_503_with_retry_after() {
        let r = ProxyError::Open { upstream: "app".into(), retry_after_ms: 1500 }.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
