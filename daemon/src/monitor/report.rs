//! `GET /api/performance/report`: the seed's `getPerformanceReport`, a readable summary of a
//! period (JSON, or Markdown for people), built from the trends, the per-route metrics, the
//! alert history, the latest health report and the extension's top statements.

use std::fmt::Write as _;

use serde::Serialize;
use utoipa::ToSchema;

use super::Monitor;
use super::alerts::AlertRecord;
use super::requests::EndpointStats;
use crate::db::extension::QueryStat;
use crate::services::health::HealthReport;

/// avg and max of one trend over the period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    pub metric: String,
    pub unit: String,
    pub avg: Option<f64>,
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PerformanceReport {
    pub instance: String,
    pub generated_at_ms: u64,
    pub window_ms: u64,
    pub health_status: Option<String>,
    pub health_score: Option<f64>,
    pub summaries: Vec<Summary>,
    /// Busiest routes since start (or the last reset).
    pub top_endpoints: Vec<EndpointStats>,
    /// Alerts that fired or were still firing in the period.
    pub alerts: Vec<AlertRecord>,
    pub top_queries: Vec<QueryStat>,
    /// Why top queries are missing, when they are.
    pub top_queries_error: Option<String>,
    /// Observations a person should act on.
    pub findings: Vec<String>,
}

const SUMMARIZED: [&str; 10] = [
    "http.requests_per_second",
    "http.error_rate",
    "http.latency_p95",
    "cache.hit_rate",
    "system.cpu",
    "system.memory",
    "db.queries_per_second",
    "db.query_p95",
    "db.slow_queries",
    "db.buffer_hit_rate",
];

pub fn build(
    monitor: &Monitor,
    window_ms: u64,
    health: Option<&HealthReport>,
    top_queries: Result<Vec<QueryStat>, String>,
) -> PerformanceReport {
    let now = monitor.clock().unix_ms();
    let mut summaries = Vec::new();
    for metric in SUMMARIZED {
        let Ok(series) = monitor.trends().query(metric, window_ms, Some(window_ms.max(60_000)), now) else { continue };
        let (mut sum, mut count, mut max, mut min) = (0.0, 0u64, None::<f64>, None::<f64>);
        for p in &series.points {
            sum += p.avg * p.count as f64;
            count += p.count;
            max = Some(max.map_or(p.max, |m| m.max(p.max)));
            min = Some(min.map_or(p.min, |m| m.min(p.min)));
        }
        summaries.push(Summary {
            metric: metric.to_owned(),
            unit: series.unit,
            avg: (count > 0).then(|| sum / count as f64),
            max,
            min,
            samples: count,
        });
    }
    let mut top_endpoints = monitor.requests().endpoints();
    top_endpoints.sort_by_key(|e| std::cmp::Reverse(e.requests));
    top_endpoints.truncate(10);
    let since = now.saturating_sub(window_ms);
    let alerts: Vec<AlertRecord> = monitor
        .with_alerts(|a| a.history(super::alerts::HISTORY_CAPACITY))
        .into_iter()
        .filter(|a| a.resolved_ms.is_none_or(|r| r >= since))
        .collect();
    let c = monitor.config();
    let mut findings = Vec::new();
    let get = |m: &str| summaries.iter().find(|s| s.metric == m);
    if let Some(max) = get("http.latency_p95").and_then(|s| s.max)
        && max > c.alert_response_time.as_secs_f64() * 1000.0
    {
        findings.push(format!(
            "HTTP p95 latency reached {max:.1} ms, above ALERT_RESPONSE_TIME_THRESHOLD ({} ms): see the slowest endpoints and slow requests.",
            c.alert_response_time.as_millis()
        ));
    }
    if let Some(avg) = get("cache.hit_rate").and_then(|s| s.avg)
        && avg < 80.0
    {
        findings.push(format!("The cache answered {avg:.1} % of lookups on average; the seed aims above 80 %: check TTLs and warm the popular keys."));
    }
    if let Some(n) = get("db.slow_queries").map(|s| s.avg.unwrap_or(0.0) * s.samples as f64)
        && n >= 1.0
    {
        findings.push(format!("{n:.0} slow queries were captured: GET /api/db/slow-queries shows them with their plans, GET /api/db/index-suggestions what would help."));
    }
    if let Some(max) = get("system.cpu").and_then(|s| s.max)
        && max > c.alert_cpu_percent
    {
        findings.push(format!("CPU use peaked at {max:.1} %, above ALERT_CPU_THRESHOLD ({} %).", c.alert_cpu_percent));
    }
    if let Some(max) = get("system.memory").and_then(|s| s.max)
        && max > c.alert_memory_percent
    {
        findings.push(format!(
            "Memory use peaked at {max:.1} %, above ALERT_MEMORY_THRESHOLD ({} %).",
            c.alert_memory_percent
        ));
    }
    if findings.is_empty() {
        findings.push("No threshold was crossed in the period.".into());
    }
    let (top_queries, top_queries_error) = match top_queries {
        Ok(q) => (q, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    PerformanceReport {
        instance: monitor.instance().to_owned(),
        generated_at_ms: now,
        window_ms,
        health_status: health.map(|h| format!("{:?}", h.status).to_lowercase()),
        health_score: health.map(|h| h.score),
        summaries,
        top_endpoints,
        alerts,
        top_queries,
        top_queries_error,
        findings,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.2}"))
}

/// One line, safe inside a Markdown table cell.
fn cell(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
    if flat.chars().count() > max { format!("{}…", flat.chars().take(max).collect::<String>()) } else { flat }
}

impl PerformanceReport {
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# voxperf performance report\n");
        let _ = writeln!(md, "Instance `{}`, the last {} minutes.\n", self.instance, self.window_ms / 60_000);
        if let (Some(status), Some(score)) = (&self.health_status, self.health_score) {
            let _ = writeln!(md, "Health: **{status}**, score {score:.1} / 100.\n");
        }
        let _ = writeln!(md, "## Findings\n");
        for f in &self.findings {
            let _ = writeln!(md, "- {f}");
        }
        let _ = writeln!(
            md,
            "\n## Figures\n\n| metric | unit | avg | min | max | samples |\n| --- | --- | ---: | ---: | ---: | ---: |"
        );
        for s in &self.summaries {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                s.metric,
                s.unit,
                opt(s.avg),
                opt(s.min),
                opt(s.max),
                s.samples
            );
        }
        let _ = writeln!(
            md,
            "\n## Busiest endpoints\n\n| method | route | requests | errors | p50 ms | p95 ms | p99 ms |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for e in &self.top_endpoints {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                e.method,
                cell(&e.route, 80),
                e.requests,
                e.errors,
                e.latency.p50_ms,
                e.latency.p95_ms,
                e.latency.p99_ms
            );
        }
        let _ = writeln!(md, "\n## Alerts\n");
        if self.alerts.is_empty() {
            let _ = writeln!(md, "None fired.");
        }
        for a in &self.alerts {
            let _ = writeln!(md, "- **{}** ({:?}, {:?}): {}", a.rule, a.severity, a.status, a.message);
        }
        let _ = writeln!(md, "\n## Top statements by total time\n");
        if let Some(e) = &self.top_queries_error {
            let _ = writeln!(md, "Not available: {e}");
        } else {
            let _ = writeln!(
                md,
                "| queryid | calls | total ms | mean ms | p95 ms | query |\n| ---: | ---: | ---: | ---: | ---: | --- |"
            );
            for q in &self.top_queries {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.1} | {:.2} | {:.2} | `{}` |",
                    q.queryid,
                    q.calls,
                    q.total_exec_time_ms,
                    q.mean_exec_time_ms,
                    q.p95_exec_time_ms,
                    cell(q.query.as_deref().unwrap_or("<hidden>"), 100).replace('`', "'")
                );
            }
        }
        md
    }
}
