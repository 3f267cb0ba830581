//! The seed's caching middleware: whole GET responses kept in the two-level cache.
//!
//! `ResponseCacheLayer::new(cache, CacheStrategy::reports(7200)).tags([...])` on any route caches
//! its successful GET answers under `http:<strategy>:<path>?<sorted query>` (plus a hash of the
//! `Authorization` header for per-user strategies) with the strategy's TTL and the given tags —
//! give a route the `table:…` tags of the tables it reads and writes to them invalidate it, like
//! any other entry. A successful POST/PUT/PATCH/DELETE through the layer invalidates the cached
//! GETs of its path (RFC 9111 §4.4). Downstream caches cannot hear NOTIFY, so the strategies tell
//! them to revalidate (cheap with the ETag layer) rather than to trust a max-age.
//!
//! Invariant: only complete 200 responses without `Set-Cookie` or `no-store` are stored, and a
//! request with `Cache-Control: no-cache`/`no-store` is answered by the route itself.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use super::error::AppError;
use crate::cache::pattern::escape_glob;
use crate::cache::{Cache, Cached, LoadError, MAX_KEY_BYTES};

/// Largest response body stored (bigger ones are served uncached).
const MAX_CACHED_BODY: u64 = 1 << 20;
/// Response headers stored with the body; the rest are per-request (dates, ids, timing).
const KEPT_HEADERS: [HeaderName; 4] =
    [header::CONTENT_TYPE, header::CONTENT_LANGUAGE, header::CONTENT_DISPOSITION, header::LAST_MODIFIED];

/// The seed's `CacheStrategies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStrategy {
    /// Frequently read, quickly changing data (searches, availability): shared by all users.
    ShortTerm(Duration),
    /// Expensive, slowly changing documents: shared, but downstream copies stay private.
    Reports(Duration),
    /// Per-user dashboards: cached per `Authorization` header.
    Analytics(Duration),
}

impl CacheStrategy {
    pub fn short_term(ttl_secs: u64) -> Self {
        Self::ShortTerm(Duration::from_secs(ttl_secs))
    }

    pub fn reports(ttl_secs: u64) -> Self {
        Self::Reports(Duration::from_secs(ttl_secs))
    }

    pub fn analytics(ttl_secs: u64) -> Self {
        Self::Analytics(Duration::from_secs(ttl_secs))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ShortTerm(_) => "short-term",
            Self::Reports(_) => "reports",
            Self::Analytics(_) => "analytics",
        }
    }

    pub fn ttl(self) -> Duration {
        match self {
            Self::ShortTerm(t) | Self::Reports(t) | Self::Analytics(t) => t,
        }
    }

    fn per_user(self) -> bool {
        matches!(self, Self::Analytics(_))
    }

    fn cache_control(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::ShortTerm(_) => "public, max-age=0, must-revalidate",
            Self::Reports(_) => "private, max-age=0, must-revalidate",
            Self::Analytics(_) => "private, no-cache",
        })
    }
}

/// Tower layer applying a [`CacheStrategy`] to the routes it wraps.
#[derive(Debug, Clone)]
pub struct ResponseCacheLayer {
    cache: Cache,
    strategy: CacheStrategy,
    tags: Arc<Vec<String>>,
}

impl ResponseCacheLayer {
    pub fn new(cache: Cache, strategy: CacheStrategy) -> Self {
        Self { cache, strategy, tags: Arc::new(vec![format!("http:{}", strategy.name())]) }
    }

    /// Adds tags (e.g. `table:public.users`) whose invalidation drops these responses.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        let mut all = (*self.tags).clone();
        all.extend(tags.into_iter().map(Into::into));
        self.tags = Arc::new(all);
        self
    }

    fn key(&self, request: &Request) -> String {
        let uri = request.uri();
        let mut query: Vec<&str> = uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()).collect();
        query.sort_unstable();
        let mut key = format!("http:{}:{}?{}", self.strategy.name(), uri.path(), query.join("&"));
        if self.strategy.per_user() {
            let auth = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
            let digest = Sha256::digest(auth);
            key.push_str("#u=");
            for b in &digest[..12] {
                key.push_str(&format!("{b:02x}"));
            }
        }
        key
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache { inner, layer: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct ResponseCache<S> {
    inner: S,
    layer: ResponseCacheLayer,
}

fn bypass_requested(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("no-cache") || v.contains("no-store"))
}

fn storable(response: &Response) -> bool {
    response.status() == StatusCode::OK
        && !response.headers().contains_key(header::SET_COOKIE)
        && !bypass_requested(response.headers())
        && response.body().size_hint().upper().is_some_and(|n| n <= MAX_CACHED_BODY)
}

/// `[status u16][header count u8]{[name len u16][name][value len u16][value]}[body]`.
async fn encode(response: Response) -> Result<Bytes, Response> {
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, MAX_CACHED_BODY as usize).await {
        Ok(body) => body,
        Err(e) => return Err(AppError::internal(e).into_response()),
    };
    let kept: Vec<(&HeaderName, &HeaderValue)> =
        KEPT_HEADERS.iter().filter_map(|name| parts.headers.get(name).map(|v| (name, v))).collect();
    let mut out = Vec::with_capacity(body.len() + 64);
    out.put_u16(parts.status.as_u16());
    out.put_u8(kept.len() as u8);
    for (name, value) in kept {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u16(value.as_bytes().len() as u16);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(&body);
    Ok(Bytes::from(out))
}

fn decode(cached: &Cached, strategy: CacheStrategy, now_ms: u64) -> Option<Response> {
    let mut buf = cached.value.clone();
    if buf.remaining() < 3 {
        return None;
    }
    let status = StatusCode::from_u16(buf.get_u16()).ok()?;
    let mut headers = HeaderMap::new();
    let take = |buf: &mut Bytes| -> Option<Bytes> {
        let len = usize::from(buf.try_get_u16().ok()?);
        (buf.remaining() >= len).then(|| buf.split_to(len))
    };
    for _ in 0..buf.get_u8() {
        let name = HeaderName::from_bytes(&take(&mut buf)?).ok()?;
        let value = HeaderValue::from_bytes(&take(&mut buf)?).ok()?;
        headers.insert(name, value);
    }
    let mut response = Response::new(Body::from(buf));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, strategy.cache_control());
    h.insert("x-cache", HeaderValue::from_static(if cached.is_hit() { "HIT" } else { "MISS" }));
    h.insert(header::AGE, HeaderValue::from(now_ms.saturating_sub(cached.created_ms) / 1000));
    if strategy.per_user() {
        h.insert(header::VARY, HeaderValue::from_static("authorization"));
    }
    Some(response)
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for ResponseCache<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was driven to readiness serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let method = request.method().clone();
            if method != Method::GET && method != Method::HEAD {
                let path = request.uri().path().to_owned();
                let response = inner.call(request).await?;
                let changed = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
                if changed && (response.status().is_success() || response.status().is_redirection()) {
                    let pattern = format!("http:*:{}*", escape_glob(&path));
                    if let Err(e) = layer.cache.invalidate_pattern(&pattern).await {
                        tracing::warn!(error = %e, "could not invalidate cached responses");
                    }
                }
                return Ok(response);
            }
            let key = layer.key(&request);
            if bypass_requested(request.headers()) || key.len() > MAX_KEY_BYTES {
                return inner.call(request).await;
            }
            let strategy = layer.strategy;
            let loaded = layer
                .cache
                .get_or_load(&key, Some(strategy.ttl()), &layer.tags, || async move {
                    let response = match inner.call(request).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    if storable(&response) { encode(response).await } else { Err(response) }
                })
                .await;
            let now_ms = layer.cache.clock().unix_ms();
            Ok(match loaded {
                Ok(cached) => decode(&cached, strategy, now_ms)
                    .unwrap_or_else(|| AppError::internal("undecodable cached response").into_response()),
                Err(LoadError::Loader(response)) => response,
                Err(LoadError::Cache(e)) => AppError::internal(e).into_response(),
            })
        })
    }
}
