//! Per-route request metrics (RED: rate, errors, duration) and the slow-request log.
//!
//! The HTTP middleware calls [`RequestMetrics::record`] once per finished request; everything
//! else reads snapshots. Routes are keyed by method and *matched* route template
//! (`/api/cache/entries/{key}`), never by the raw path, so the number of series is bounded by the
//! router; requests that matched no route share the route `(unmatched)`. Recording takes one read
//! lock and a few relaxed atomic increments. Invariant: a route's `requests` equals the sum of
//! its per-status counts and its histogram's count, as of any snapshot taken between requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::histogram::{Histogram, HistogramSnapshot, Percentiles};

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "(unmatched)";

/// Status codes counted one by one: 100..=599 (anything else is counted as 599... never seen in
/// practice, since hyper only sends valid codes).
const STATUSES: usize = 500;

#[derive(Debug)]
struct RouteStats {
    /// Per exact status code, lock-free (4 KB per route, and routes are few).
    statuses: Box<[AtomicU64; STATUSES]>,
    histogram: Histogram,
    /// Requests counted at the previous collection, and the rate since (f64 bits): written only
    /// by [`RequestMetrics::roll_interval`].
    interval_base: AtomicU64,
    rate_bits: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            statuses: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            histogram: Histogram::default(),
            interval_base: AtomicU64::new(0),
            rate_bits: AtomicU64::new(0),
        }
    }
}

impl RouteStats {
    fn statuses(&self) -> BTreeMap<u16, u64> {
        let mut out = BTreeMap::new();
        for (i, n) in self.statuses.iter().enumerate() {
            let n = n.load(Relaxed);
            if n > 0 {
                out.insert(100 + i as u16, n);
            }
        }
        out
    }
}

/// One finished request. `at_ms` is needed only for a slow one: the middleware reads the clock
/// only for those (a clock read per request is measurable).
#[derive(Debug, Clone)]
pub struct Finished<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub took: Duration,
    pub request_id: Option<&'a str>,
    pub at_ms: u64,
}

/// A request slower than `ALERT_RESPONSE_TIME_THRESHOLD`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlowRequest {
    pub at_ms: u64,
    pub method: String,
    pub route: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub request_id: Option<String>,
}

/// One route's figures since start (or the last reset).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointStats {
    pub method: String,
    pub route: String,
    pub requests: u64,
    /// Responses with status 500 and above.
    pub errors: u64,
    /// Responses with status 400 to 499.
    pub client_errors: u64,
    /// `errors / requests` as a percentage.
    pub error_rate_percent: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    /// Count per status code.
    #[schema(value_type = Object)]
    pub statuses: BTreeMap<u16, u64>,
    /// Requests per second over the latest collection interval.
    pub requests_per_second: f64,
}

/// One route's raw counts, for the Prometheus exposition.
#[derive(Debug, Clone)]
pub struct RouteSnapshot {
    pub method: String,
    pub route: String,
    pub statuses: BTreeMap<u16, u64>,
    pub histogram: HistogramSnapshot,
    pub requests_per_second: f64,
}

/// All routes added up, for interval deltas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub histogram: HistogramSnapshot,
}

impl Totals {
    /// What happened since `earlier`; after a reset (counts went down) everything is new.
    pub fn since(&self, earlier: &Totals) -> Totals {
        if self.requests < earlier.requests || self.errors < earlier.errors {
            return *self;
        }
        Totals {
            requests: self.requests - earlier.requests,
            errors: self.errors - earlier.errors,
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            histogram: self.histogram.since(&earlier.histogram),
        }
    }
}

/// Route template → the methods seen on it.
type Routes = HashMap<String, Vec<(String, Arc<RouteStats>)>>;

#[derive(Debug)]
pub struct RequestMetrics {
    routes: RwLock<Routes>,
    slow: Mutex<VecDeque<SlowRequest>>,
    slow_capacity: usize,
    slow_threshold: Duration,
    slow_total: AtomicU64,
}

impl RequestMetrics {
    pub fn new(slow_threshold: Duration, slow_capacity: usize) -> Self {
        Self {
            routes: RwLock::default(),
            slow: Mutex::new(VecDeque::with_capacity(slow_capacity.min(1024))),
            slow_capacity,
            slow_threshold,
            slow_total: AtomicU64::new(0),
        }
    }

    fn route(&self, method: &str, route: &str) -> Arc<RouteStats> {
        // The common case: the route was seen before; the key is borrowed to look it up.
        let find = |routes: &Routes| {
            routes.get(route).and_then(|methods| methods.iter().find(|(m, _)| m == method).map(|(_, s)| s.clone()))
        };
        if let Some(stats) = find(&self.routes.read().unwrap_or_else(|e| e.into_inner())) {
            return stats;
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = find(&routes) {
            return stats;
        }
        let stats = Arc::new(RouteStats::default());
        routes.entry(route.to_owned()).or_default().push((method.to_owned(), stats.clone()));
        stats
    }

    pub fn record(&self, request: Finished<'_>) {
        let stats = self.route(request.method, request.route);
        let index = usize::from(request.status.clamp(100, 599) - 100);
        stats.statuses[index].fetch_add(1, Relaxed);
        stats.histogram.record(request.took);
        if request.took > self.slow_threshold && self.slow_capacity > 0 {
            self.slow_total.fetch_add(1, Relaxed);
            let entry = SlowRequest {
                at_ms: request.at_ms,
                method: request.method.to_owned(),
                route: request.route.to_owned(),
                path: request.path.chars().take(512).collect(),
                status: request.status,
                duration_ms: request.took.as_secs_f64() * 1000.0,
                request_id: request.request_id.map(str::to_owned),
            };
            let mut slow = self.slow.lock().unwrap_or_else(|e| e.into_inner());
            if slow.len() == self.slow_capacity {
                slow.pop_front();
            }
            slow.push_back(entry);
        }
    }

    /// Every route's raw counts, sorted by route then method.
    pub fn routes(&self) -> Vec<RouteSnapshot> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<RouteSnapshot> = routes
            .iter()
            .flat_map(|(route, methods)| {
                methods.iter().map(move |(method, s)| RouteSnapshot {
                    method: method.clone(),
                    route: route.clone(),
                    statuses: s.statuses(),
                    histogram: s.histogram.snapshot(),
                    requests_per_second: f64::from_bits(s.rate_bits.load(Relaxed)),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
        out
    }

    pub fn endpoints(&self) -> Vec<EndpointStats> {
        self.routes().into_iter().map(EndpointStats::from).collect()
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for route in self.routes() {
            let (errors, client_errors) = split_errors(&route.statuses);
            totals.requests += route.histogram.count();
            totals.errors += errors;
            totals.client_errors += client_errors;
            totals.histogram.add(&route.histogram);
        }
        totals
    }

    /// Sets each route's requests per second over the `seconds` since the previous call (the
    /// monitor calls it once per collection).
    pub fn roll_interval(&self, seconds: f64) {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        for stats in routes.values().flat_map(|methods| methods.iter().map(|(_, s)| s)) {
            let count = stats.histogram.snapshot().count();
            let before = stats.interval_base.swap(count, Relaxed);
            let delta = if count >= before { count - before } else { count };
            let rate = if seconds > 0.0 { delta as f64 / seconds } else { 0.0 };
            stats.rate_bits.store(rate.to_bits(), Relaxed);
        }
    }

    /// Slow requests, newest first.
    pub fn slow_requests(&self, limit: usize) -> Vec<SlowRequest> {
        self.slow.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().take(limit).cloned().collect()
    }

    /// Slow requests seen since start (the log keeps only the newest).
    pub fn slow_total(&self) -> u64 {
        self.slow_total.load(Relaxed)
    }

    pub fn slow_threshold(&self) -> Duration {
        self.slow_threshold
    }

    /// Forgets every count and the slow-request log.
    pub fn reset(&self) {
        self.routes.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.slow.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.slow_total.store(0, Relaxed);
    }
}

fn split_errors(statuses: &BTreeMap<u16, u64>) -> (u64, u64) {
    let errors = statuses.range(500..).map(|(_, n)| n).sum();
    let client_errors = statuses.range(400..500).map(|(_, n)| n).sum();
    (errors, client_errors)
}

impl From<RouteSnapshot> for EndpointStats {
    fn from(r: RouteSnapshot) -> Self {
        let requests = r.histogram.count();
        let (errors, client_errors) = split_errors(&r.statuses);
        EndpointStats {
            error_rate_percent: if requests == 0 { 0.0 } else { errors as f64 * 100.0 / requests as f64 },
            latency: r.histogram.percentiles(),
            method: r.method,
            route: r.route,
            requests,
            errors,
            client_errors,
            statuses: r.statuses,
            requests_per_second: r.requests_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(route: &str, status: u16, ms: u64) -> Finished<'_> {
        Finished {
            method: "GET",
            route,
            path: route,
            status,
            took: Duration::from_millis(ms),
            request_id: Some("req-1"),
            at_ms: 1000,
        }
    }

    #[test]
    fn requests_are_counted_per_route_with_errors_and_statuses() {
        let m = RequestMetrics::new(Duration::from_secs(2), 10);
        m.record(finished("/a", 200, 1));
        m.record(finished("/a", 503, 1));
        m.record(finished("/a", 404, 1));
        m.record(finished("/b", 200, 1));
        let endpoints = m.endpoints();
        assert_eq!(endpoints.len(), 2);
        let a = &endpoints[0];
        assert_eq!((a.route.as_str(), a.requests, a.errors, a.client_errors), ("/a", 3, 1, 1));
        assert!((a.error_rate_percent - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(a.statuses[&503], 1);
        let totals = m.totals();
        assert_eq!((totals.requests, totals.errors, totals.histogram.count()), (4, 1, 4));
    }

    #[test]
    fn each_route_gets_its_rate_over_the_last_interval() {
        let m = RequestMetrics::new(Duration::from_secs(2), 10);
        for _ in 0..20 {
            m.record(finished("/a", 200, 1));
        }
        m.roll_interval(10.0);
        assert_eq!(m.endpoints()[0].requests_per_second, 2.0);
        for _ in 0..5 {
            m.record(finished("/a", 200, 1));
        }
        m.roll_interval(5.0);
        assert_eq!(m.endpoints()[0].requests_per_second, 1.0, "only the new requests count");
    }

    #[test]
    fn only_requests_over_the_threshold_enter_the_bounded_slow_log_newest_first() {
        let m = RequestMetrics::new(Duration::from_millis(100), 2);
        m.record(finished("/fast", 200, 100));
        for route in ["/s1", "/s2", "/s3"] {
            m.record(finished(route, 200, 250));
        }
        let slow = m.slow_requests(10);
        assert_eq!(slow.iter().map(|s| s.route.as_str()).collect::<Vec<_>>(), ["/s3", "/s2"]);
        assert_eq!(slow[0].request_id.as_deref(), Some("req-1"));
        assert_eq!(m.slow_total(), 3);
        m.reset();
        assert!(m.slow_requests(10).is_empty() && m.endpoints().is_empty());
    }
}
