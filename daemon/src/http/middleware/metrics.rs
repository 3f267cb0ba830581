//! Request metrics: one record per finished request, by method and matched route template.
//!
//! The outermost layer of the app, so the time covers every other layer; the route comes from
//! `MatchedPath` (axum sets it before any layer runs) and the request id from the response (the
//! request-id layer sits inside this one). A plain tower layer rather than `from_fn`: it calls the
//! inner service directly and wraps its future, so a request costs no extra boxing or clone of
//! the service stack — only a map lookup and a few atomic increments (bench part `monitoring`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::response::Response;
use tower::{Layer, Service};

use crate::clock::SharedClock;
use crate::gateway::RouteLabel;
use crate::monitor::requests::{Finished, RequestMetrics, UNMATCHED};

/// Records every request into `metrics`.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<RequestMetrics>,
    clock: SharedClock,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<RequestMetrics>, clock: SharedClock) -> Self {
        Self { metrics, clock }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics { inner, layer: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S> Service<Request> for Metrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let uri = request.uri().clone();
        ResponseFuture {
            inner: self.inner.call(request),
            record: Some(Pending { started, method, route, uri, layer: self.layer.clone() }),
        }
    }
}

/// What the record needs once the response is there.
#[derive(Debug)]
struct Pending {
    started: Instant,
    method: Method,
    route: Option<MatchedPath>,
    uri: Uri,
    layer: MetricsLayer,
}

pin_project_lite::pin_project! {
    /// The inner service's future, recording the request when it completes.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        record: Option<Pending>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(p)) = (&result, this.record.take()) {
            let took = p.started.elapsed();
            let layer = &p.layer;
            layer.metrics.record(Finished {
                method: p.method.as_str(),
                // A proxied request is labelled by its gateway route (it has no `MatchedPath`).
                route: match response.extensions().get::<RouteLabel>() {
                    Some(label) => &label.0,
                    None => p.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
                },
                path: p.uri.path(),
                status: response.status().as_u16(),
                took,
                request_id: response.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
                at_ms: if took > layer.metrics.slow_threshold() { layer.clock.unix_ms() } else { 0 },
            });
        }
        Poll::Ready(result)
    }
}
