//! The monitor's health components and the formulas of their scores (0 bad – 100 good).
//!
//! | component | weight | score |
//! | --- | --- | --- |
//! | `latency` | 25 | p95 of the last interval: 100 up to T/2, 0 from 2T, linear between (T = `ALERT_RESPONSE_TIME_THRESHOLD`) |
//! | `errors` | 20 | error rate of the last interval: 100 at 0 %, 0 from 2E (E = `ALERT_ERROR_RATE_THRESHOLD`) |
//! | `cpu` | 10 | host CPU: 100 up to 0.75 C, 0 at 100 % (C = `ALERT_CPU_THRESHOLD`) |
//! | `memory` | 10 | host memory: 100 up to 0.75 M, 0 at 100 % (M = `ALERT_MEMORY_THRESHOLD`) |
//! | `cache_hit_rate` | 10 | 100 from H up, 0 at 0 % (H = `ALERT_CACHE_HIT_RATE_THRESHOLD`); 100 with fewer than 20 lookups |
//! | `postgres` | 15 | 100 reachable with the extension, 50 without it, 0 unreachable (`services::health`) |
//! | `breakers` | 10 | share of circuit breakers closed (`services::health`) |
//!
//! Without readings yet (or without traffic) a component scores 100: no evidence of trouble.
//! A component's status is `degraded` while its alert is firing, `ok` otherwise; so a blip lowers
//! the score at once but the status only once the alert's pending duration has passed.

use serde_json::json;

use super::{MIN_CACHE_LOOKUPS, Monitor};
use crate::services::health::{ComponentHealth, HealthCheck, Status};

/// 100 at `good`, 0 at `bad`, linear between; works both ways (`good` above or below `bad`).
pub fn linear(value: f64, good: f64, bad: f64) -> f64 {
    if (good - bad).abs() < f64::EPSILON {
        return if value == good { 100.0 } else { 0.0 };
    }
    (100.0 * (bad - value) / (bad - good)).clamp(0.0, 100.0)
}

/// Which reading a component scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Latency,
    Errors,
    Cpu,
    Memory,
    CacheHitRate,
}

impl Component {
    pub const ALL: [Component; 5] =
        [Component::Latency, Component::Errors, Component::Cpu, Component::Memory, Component::CacheHitRate];

    fn name(self) -> &'static str {
        match self {
            Component::Latency => "latency",
            Component::Errors => "errors",
            Component::Cpu => "cpu",
            Component::Memory => "memory",
            Component::CacheHitRate => "cache_hit_rate",
        }
    }

    fn weight(self) -> f64 {
        match self {
            Component::Latency => 25.0,
            Component::Errors => 20.0,
            Component::Cpu | Component::Memory | Component::CacheHitRate => 10.0,
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Component::Latency => "high_response_time",
            Component::Errors => "high_error_rate",
            Component::Cpu => "high_cpu",
            Component::Memory => "high_memory",
            Component::CacheHitRate => "low_cache_hit_rate",
        }
    }
}

/// One of the monitor's components as a health check.
#[derive(Debug)]
pub struct MonitorCheck {
    pub monitor: Monitor,
    pub component: Component,
}

#[async_trait::async_trait]
impl HealthCheck for MonitorCheck {
    fn name(&self) -> &'static str {
        self.component.name()
    }

    async fn check(&self) -> ComponentHealth {
        let c = self.monitor.config();
        let readings = self.monitor.latest();
        let r = readings.as_deref();
        let (value, unit, score, threshold) = match self.component {
            Component::Latency => {
                let t = c.alert_response_time.as_secs_f64() * 1000.0;
                let v = r.and_then(|r| r.http.latency).map(|l| l.p95_ms);
                (v, "ms", v.map(|v| linear(v, t / 2.0, 2.0 * t)), t)
            }
            Component::Errors => {
                let e = c.alert_error_rate_percent;
                let v = r.and_then(|r| r.http.error_rate_percent);
                (v, "%", v.map(|v| linear(v, 0.0, (2.0 * e).max(1.0))), e)
            }
            Component::Cpu => {
                let v = r.and_then(|r| r.system.as_ref()).map(|s| s.cpu_percent);
                (v, "%", v.map(|v| linear(v, 0.75 * c.alert_cpu_percent, 100.0)), c.alert_cpu_percent)
            }
            Component::Memory => {
                let v = r.and_then(|r| r.system.as_ref()).map(|s| s.memory_percent);
                (v, "%", v.map(|v| linear(v, 0.75 * c.alert_memory_percent, 100.0)), c.alert_memory_percent)
            }
            Component::CacheHitRate => {
                let h = c.alert_cache_hit_rate_percent;
                let v = r.filter(|r| r.cache.lookups >= MIN_CACHE_LOOKUPS).and_then(|r| r.cache.hit_rate_percent);
                (v, "%", v.map(|v| linear(v, h, 0.0)), h)
            }
        };
        let firing = self.monitor.with_alerts(|a| a.is_firing(self.component.rule()));
        let details = json!({ "value": value, "unit": unit, "threshold": threshold, "alert_firing": firing });
        let status = if firing { Status::Degraded } else { Status::Ok };
        let message = match (value, firing) {
            (None, _) => "no data in the last interval".to_owned(),
            (Some(v), true) => format!("{v:.1} {unit}: alert {} firing", self.component.rule()),
            (Some(v), false) => format!("{v:.1} {unit}"),
        };
        ComponentHealth::new(status, message, details).scored(score.unwrap_or(100.0), self.component.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::linear;

    #[test]
    fn linear_scores_run_from_good_to_bad_in_either_direction() {
        assert_eq!(linear(500.0, 1000.0, 4000.0), 100.0);
        assert_eq!(linear(2500.0, 1000.0, 4000.0), 50.0);
        assert_eq!(linear(9000.0, 1000.0, 4000.0), 0.0);
        assert_eq!(linear(80.0, 50.0, 0.0), 100.0);
        assert_eq!(linear(25.0, 50.0, 0.0), 50.0);
    }
}
