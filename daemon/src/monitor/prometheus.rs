//! `GET /metrics`: the Prometheus text exposition format 0.0.4.
//!
//! Naming follows the Prometheus conventions (notes §3.2): prefix `voxperf_`, base units
//! (`_seconds`, `_bytes`, `_ratio` for 0–1), `_total` on counters, one metric per family with
//! labels for its dimensions, bounded label values (route templates, not paths). Request latency
//! is a real histogram with explicit buckets ([`super::histogram::BOUNDS_US`]), so it can be
//! aggregated across daemons with `histogram_quantile()`. Families written here come from the
//! monitor's own state; the cache's counters, recorded through the `metrics` facade, come from
//! the `metrics-exporter-prometheus` recorder (installed once per process by [`recorder`]) and
//! are appended. Invariant: each family is written once, HELP and TYPE first, samples together.

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::Monitor;
use super::histogram::BOUNDS_US;
use crate::resilience::BreakerState;
use crate::services::health::Status;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets (seconds) of the facade's `_seconds` histograms (cache lookups: microseconds to ms).
const FACADE_BUCKETS: [f64; 12] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];

/// Buckets (seconds) of the gateway's upstream times: an application answers in milliseconds to
/// seconds, up to a route's timeout.
const UPSTREAM_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide recorder behind the `metrics` macros, installed on first use; `None` when
/// another recorder was installed first (an embedding application's own).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &FACADE_BUCKETS)
                .ok()?
                // A full-name matcher wins over a suffix one (the exporter sorts them so).
                .set_buckets_for_metric(
                    Matcher::Full("voxperf_gateway_upstream_duration_seconds".into()),
                    &UPSTREAM_BUCKETS,
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("a metrics recorder is already installed: /metrics omits the cache's counters");
                    None
                }
            }
        })
        .as_ref()
}

/// How often the recorder folds recorded histogram samples into its buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Until `shutdown`: the recorder keeps each histogram sample until it is folded into the
/// buckets (at a scrape, or here), so without a scraper memory would grow with every cache lookup.
pub async fn upkeep(shutdown: tokio_util::sync::CancellationToken) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Some(handle) = recorder() {
            handle.run_upkeep();
        }
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("voxperf_cache_lookups_total", "Cache lookups by level and result (hit, miss, stale).");
    describe_counter!(
        "voxperf_gateway_requests_total",
        "Requests through the gateway by route pattern and cache outcome (hit, miss, stale, stale_if_error, uncacheable, pass, error)."
    );
    describe_histogram!(
        "voxperf_gateway_upstream_duration_seconds",
        Unit::Seconds,
        "Time until the upstream's response headers, by gateway route pattern."
    );
    describe_histogram!("voxperf_cache_lookup_duration_seconds", Unit::Seconds, "Time of one cache lookup by level.");
    describe_counter!("voxperf_cache_errors_total", "Failed Redis commands of the cache.");
    describe_counter!("voxperf_cache_loads_total", "Loader runs after cache misses.");
    describe_counter!("voxperf_cache_loader_errors_total", "Loader runs that failed.");
    describe_counter!(
        "voxperf_cache_stores_skipped_total",
        "Loaded values not stored because an invalidation raced them."
    );
    describe_counter!("voxperf_cache_evictions_total", "Entries evicted from L1.");
    describe_counter!(
        "voxperf_cache_bypassed_total",
        "Lookups that bypassed cached table data while the listener was down."
    );
    describe_counter!("voxperf_cache_l2_bytes_written_total", Unit::Bytes, "Bytes written to Redis.");
    describe_counter!("voxperf_cache_l2_bytes_read_total", Unit::Bytes, "Bytes read from Redis.");
    describe_counter!("voxperf_cache_invalidations_total", "Invalidations by kind.");
    describe_counter!(
        "voxperf_cache_generation_resyncs_total",
        "Pushes of local generations to Redis after an outage."
    );
    describe_gauge!("voxperf_cache_entries", "Entries in L1.");
    describe_gauge!("voxperf_cache_bytes", Unit::Bytes, "Bytes held by L1.");
}

/// Escapes a label value (`\`, `"`, newline).
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

struct Writer(String);

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) {
        let _ = writeln!(self.0, "{name}{} {}", labels(pairs), number(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.family(name, "gauge", help);
            self.sample(name, &[], v);
        }
    }
}

/// The whole exposition.
pub fn render(monitor: &Monitor, health: Option<(Status, f64)>) -> String {
    let mut w = Writer(String::with_capacity(16 * 1024));
    w.family("voxperf_build_info", "gauge", "voxperfd's version; always 1.");
    w.sample("voxperf_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    w.family("voxperf_start_time_seconds", "gauge", "When this daemon started (Unix time).");
    w.sample("voxperf_start_time_seconds", &[], monitor.started_ms() as f64 / 1000.0);
    http(&mut w, monitor);
    readings(&mut w, monitor);
    alerts_and_breakers(&mut w, monitor);
    if let Some((status, score)) = health {
        w.gauge("voxperf_health_score_ratio", "Health score of the latest health report, 0 to 1.", Some(score / 100.0));
        w.family("voxperf_health_status", "gauge", "Status of the latest health report (1 for the current one).");
        for s in [Status::Ok, Status::Degraded, Status::Unhealthy] {
            let name = format!("{s:?}").to_lowercase();
            w.sample("voxperf_health_status", &[("status", &name)], f64::from(u8::from(s == status)));
        }
    }
    custom(&mut w, monitor);
    let mut out = w.0;
    if let Some(handle) = recorder() {
        out.push_str(&handle.render());
    }
    out
}

fn http(w: &mut Writer, monitor: &Monitor) {
    let routes = monitor.requests().routes();
    w.family("voxperf_http_requests_total", "counter", "HTTP requests finished, by method, route template and status.");
    for r in &routes {
        for (status, n) in &r.statuses {
            let status = status.to_string();
            w.sample(
                "voxperf_http_requests_total",
                &[("method", &r.method), ("route", &r.route), ("status", &status)],
                *n as f64,
            );
        }
    }
    let name = "voxperf_http_request_duration_seconds";
    w.family(name, "histogram", "HTTP request duration, from routing to response headers.");
    for r in &routes {
        let pairs = [("method", r.method.as_str()), ("route", r.route.as_str())];
        let mut cumulative = 0u64;
        for (i, n) in r.histogram.buckets.iter().enumerate() {
            cumulative += n;
            let le = BOUNDS_US.get(i).map_or("+Inf".to_owned(), |us| number(*us as f64 / 1e6));
            let mut with_le = pairs.to_vec();
            with_le.push(("le", &le));
            w.sample(&format!("{name}_bucket"), &with_le, cumulative as f64);
        }
        w.sample(&format!("{name}_sum"), &pairs, r.histogram.sum_us as f64 / 1e6);
        w.sample(&format!("{name}_count"), &pairs, cumulative as f64);
    }
    w.family("voxperf_http_slow_requests_total", "counter", "Requests slower than ALERT_RESPONSE_TIME_THRESHOLD.");
    w.sample("voxperf_http_slow_requests_total", &[], monitor.requests().slow_total() as f64);
}

fn readings(w: &mut Writer, monitor: &Monitor) {
    let Some(r) = monitor.latest() else { return };
    w.gauge(
        "voxperf_collection_timestamp_seconds",
        "When the latest collection ran (Unix time).",
        Some(r.at_ms as f64 / 1000.0),
    );
    if let Some(s) = &r.system {
        w.gauge("voxperf_system_cpu_usage_ratio", "Host CPU use, 0 to 1.", Some(s.cpu_percent / 100.0));
        w.gauge("voxperf_system_load1", "Host load average over one minute.", Some(s.load_average_1m));
        w.gauge("voxperf_system_memory_used_bytes", "Host memory in use.", Some(s.memory_used_bytes as f64));
        w.gauge("voxperf_system_memory_total_bytes", "Host memory.", Some(s.memory_total_bytes as f64));
        w.gauge(
            "voxperf_system_disk_used_bytes",
            "Used space of the disk holding the working directory.",
            Some(s.disk_used_bytes as f64),
        );
        w.gauge(
            "voxperf_system_disk_total_bytes",
            "Size of the disk holding the working directory.",
            Some(s.disk_total_bytes as f64),
        );
    }
    if let Some(p) = &r.process {
        w.gauge(
            "voxperf_process_cpu_usage_ratio",
            "voxperfd's CPU use as a share of all cores, 0 to 1.",
            Some(p.cpu_percent / 100.0),
        );
        w.gauge("voxperf_process_resident_memory_bytes", "voxperfd's resident memory.", Some(p.resident_bytes as f64));
        w.gauge("voxperf_process_virtual_memory_bytes", "voxperfd's virtual memory.", Some(p.virtual_bytes as f64));
    }
    w.gauge(
        "voxperf_cache_hit_ratio",
        "Cache lookups answered by L1 or L2 in the latest interval, 0 to 1.",
        r.cache.hit_rate_percent.map(|p| p / 100.0),
    );
    if let Some(x) = &r.redis {
        w.gauge("voxperf_redis_memory_used_bytes", "Redis used_memory.", Some(x.used_memory_bytes as f64));
        w.gauge("voxperf_redis_connected_clients", "Redis connected clients.", Some(x.connected_clients as f64));
        w.gauge(
            "voxperf_redis_keyspace_hit_ratio",
            "Redis keyspace hits over lookups in the latest interval, 0 to 1.",
            x.hit_rate_percent.map(|p| p / 100.0),
        );
    }
    if let Some(p) = &r.postgres {
        w.gauge("voxperf_postgres_connections", "Connections to the daemon's database.", Some(p.connections as f64));
        w.gauge("voxperf_postgres_max_connections", "The server's max_connections.", Some(p.max_connections as f64));
        w.family(
            "voxperf_postgres_transactions_total",
            "counter",
            "Transactions of the database by result (pg_stat_database).",
        );
        w.sample("voxperf_postgres_transactions_total", &[("result", "commit")], p.commits_total as f64);
        w.sample("voxperf_postgres_transactions_total", &[("result", "rollback")], p.rollbacks_total as f64);
        w.family(
            "voxperf_postgres_blocks_total",
            "counter",
            "Block requests of the database by source (shared buffers hit, or read).",
        );
        w.sample("voxperf_postgres_blocks_total", &[("source", "hit")], p.blocks_hit_total as f64);
        w.sample("voxperf_postgres_blocks_total", &[("source", "read")], p.blocks_read_total as f64);
        w.gauge(
            "voxperf_postgres_buffer_hit_ratio",
            "Shared buffer hits over block reads in the latest interval, 0 to 1.",
            p.buffer_hit_rate_percent.map(|x| x / 100.0),
        );
        w.family("voxperf_postgres_deadlocks_total", "counter", "Deadlocks in the database (pg_stat_database).");
        w.sample("voxperf_postgres_deadlocks_total", &[], p.deadlocks_total as f64);
    }
    if let Some(e) = &r.extension {
        w.gauge("voxperf_db_statements", "Entries in voxperf.query_stats.", Some(e.statements as f64));
        w.family(
            "voxperf_db_statement_calls_total",
            "counter",
            "Statement executions counted in voxperf.query_stats (reset by voxperf.reset()).",
        );
        w.sample("voxperf_db_statement_calls_total", &[], e.calls_total as f64);
        w.family(
            "voxperf_db_statement_exec_seconds_total",
            "counter",
            "Statement execution time counted in voxperf.query_stats.",
        );
        w.sample("voxperf_db_statement_exec_seconds_total", &[], e.exec_time_total_ms / 1000.0);
        w.gauge(
            "voxperf_db_query_mean_seconds",
            "Mean statement time in the latest interval.",
            e.mean_ms.map(|m| m / 1000.0),
        );
        w.gauge(
            "voxperf_db_query_p95_seconds",
            "95th percentile of statement times in the latest interval.",
            e.p95_ms.map(|m| m / 1000.0),
        );
    }
    if !r.errors.is_empty() {
        w.family("voxperf_collection_errors", "gauge", "Sources the latest collection could not read (1 each).");
        for source in r.errors.keys() {
            w.sample("voxperf_collection_errors", &[("source", source)], 1.0);
        }
    }
}

fn alerts_and_breakers(w: &mut Writer, monitor: &Monitor) {
    let (rules, firing) = monitor.with_alerts(|a| (a.rules(), a.firing()));
    w.family("voxperf_alert_firing", "gauge", "1 while the alert rule fires, else 0.");
    for rule in &rules {
        let on = firing.iter().any(|f| f.rule == rule.id);
        let severity = format!("{:?}", rule.severity).to_lowercase();
        w.sample("voxperf_alert_firing", &[("alertname", &rule.id), ("severity", &severity)], f64::from(u8::from(on)));
    }
    w.family("voxperf_circuit_breaker_state", "gauge", "1 for each breaker's current state, 0 for the others.");
    for b in monitor.breakers().all() {
        let state = b.state();
        for (s, name) in [
            (BreakerState::Closed, "closed"),
            (BreakerState::Open, "open"),
            (BreakerState::HalfOpen, "half_open"),
            (BreakerState::Disabled, "disabled"),
        ] {
            w.sample(
                "voxperf_circuit_breaker_state",
                &[("breaker", b.name()), ("state", name)],
                f64::from(u8::from(s == state)),
            );
        }
    }
}

fn custom(w: &mut Writer, monitor: &Monitor) {
    // Tags are not labels (unbounded values): series of one name and unit are added up.
    let mut by_name: std::collections::BTreeMap<(String, String), (u64, f64, u64)> = Default::default();
    for s in monitor.custom().all() {
        let e = by_name.entry((s.name, s.unit)).or_insert((0, s.last, s.last_at_ms));
        e.0 += s.count;
        if s.last_at_ms >= e.2 {
            (e.1, e.2) = (s.last, s.last_at_ms);
        }
    }
    if by_name.is_empty() {
        return;
    }
    w.family(
        "voxperf_custom_metric_last",
        "gauge",
        "Latest value of each custom metric (POST /api/performance/metrics); tags are in the JSON API.",
    );
    for ((name, unit), (_, last, _)) in &by_name {
        w.sample("voxperf_custom_metric_last", &[("name", name), ("unit", unit)], *last);
    }
    w.family("voxperf_custom_metric_observations_total", "counter", "Samples recorded per custom metric.");
    for ((name, unit), (count, _, _)) in &by_name {
        w.sample("voxperf_custom_metric_observations_total", &[("name", name), ("unit", unit)], *count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("route", "a\"b\\c\nd")]), "{route=\"a\\\"b\\\\c\\nd\"}");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(0.25), "0.25");
    }
}
