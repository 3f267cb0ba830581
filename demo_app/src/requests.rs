//! The request counter behind `/_demo/requests`: how many requests this process has served since
//! it started (or since the last reset), in total and per route pattern. Gateway tests read it
//! to count the calls that reached the upstream (a cache hit must not add one).
//!
//! Requests are counted on arrival, before the handler runs, so that a request still in flight
//! (`/api/slow`) is already visible. `/_demo/requests` and its `/reset` are never counted: reading
//! the counter must not change it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

/// The prefix of the counter's own routes, which are not counted.
pub const COUNTER_PATH: &str = "/_demo/requests";

/// The key of requests that matched no route (answered 404 by the fallback).
pub const UNMATCHED: &str = "<unmatched>";

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    pub total: u64,
    /// Route pattern (`/api/numbers/{id}`) → requests; sorted so the JSON is stable.
    pub routes: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct RequestCounter {
    counts: Mutex<RequestCounts>,
}

impl RequestCounter {
    pub fn record(&self, route: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total += 1;
        *counts.routes.entry(route.to_owned()).or_default() += 1;
    }

    pub fn snapshot(&self) -> RequestCounts {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn reset(&self) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = RequestCounts::default();
    }
}

/// Middleware: counts the request under its matched route pattern, then runs it.
pub async fn count(State(counter): State<Arc<RequestCounter>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str);
    if !route.starts_with(COUNTER_PATH) {
        counter.record(route);
    }
    next.run(request).await
}
