//! Alerts: threshold rules over the monitor's readings, their history, and where they are sent.
//!
//! [`AlertEngine::evaluate`] runs after each collection with that collection's observations (one
//! value per rule; `None` = no data, which counts as clear). Each rule is a [`rule::RuleState`]
//! machine, so an alert fires only after its condition held for `ALERT_PENDING_DURATION` and
//! resolves only after it stayed clear for `ALERT_RESOLVE_DURATION`. Fired and resolved alerts
//! become [`Notification`]s for the sinks ([`sinks`]: the log, and a webhook). Invariant: the
//! history is bounded, and a resolved alert updates the record of its own firing (same `id`).

pub mod rule;
pub mod sinks;

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use utoipa::ToSchema;

pub use rule::{Comparison, Phase, RuleState, Timing, Transition};

/// Alert records kept for `GET /api/performance/alerts`.
pub const HISTORY_CAPACITY: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

/// What a rule watches.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleSpec {
    /// Stable identifier (`high_response_time`, `circuit_breaker_open:redis`, ...).
    pub id: String,
    /// What a person reads.
    pub summary: String,
    pub severity: Severity,
    pub comparison: Comparison,
    pub threshold: f64,
    pub unit: String,
    /// The setting the threshold comes from.
    pub source: String,
    #[serde(skip)]
    pub timing: Timing,
    pub for_ms: u64,
    pub resolve_ms: u64,
}

impl RuleSpec {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: impl Into<String>,
        summary: impl Into<String>,
        severity: Severity,
        comparison: Comparison,
        threshold: f64,
        unit: &str,
        source: &str,
        timing: Timing,
    ) -> Self {
        Self {
            id: id.into(),
            summary: summary.into(),
            severity,
            comparison,
            threshold,
            unit: unit.to_owned(),
            source: source.to_owned(),
            timing,
            for_ms: timing.for_ms,
            resolve_ms: timing.resolve_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One firing of one rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertRecord {
    pub id: u64,
    pub rule: String,
    pub summary: String,
    pub severity: Severity,
    pub status: AlertStatus,
    /// The observation when it fired, and the latest one while it fires.
    pub value: Option<f64>,
    pub threshold: f64,
    pub comparison: Comparison,
    pub unit: String,
    /// When the condition started to hold.
    pub since_ms: u64,
    pub fired_ms: u64,
    pub resolved_ms: Option<u64>,
    pub message: String,
}

/// A rule whose condition holds but has not held long enough.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingAlert {
    pub rule: String,
    pub summary: String,
    pub severity: Severity,
    pub value: Option<f64>,
    pub threshold: f64,
    pub since_ms: u64,
    /// When it will fire if the condition keeps holding.
    pub fires_at_ms: u64,
}

/// What the sinks are told.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub status: AlertStatus,
    pub alert: AlertRecord,
}

#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<(RuleSpec, RuleState)>,
    history: VecDeque<AlertRecord>,
    next_id: u64,
}

fn format_value(value: Option<f64>, unit: &str) -> String {
    match value {
        Some(v) if unit.is_empty() => format!("{v:.2}"),
        Some(v) => format!("{v:.2} {unit}"),
        None => "no data".to_owned(),
    }
}

impl AlertEngine {
    pub fn new(rules: Vec<RuleSpec>) -> Self {
        let rules = rules.into_iter().map(|r| (r.clone(), RuleState::new(r.timing))).collect();
        Self { rules, history: VecDeque::new(), next_id: 1 }
    }

    pub fn rules(&self) -> Vec<RuleSpec> {
        self.rules.iter().map(|(spec, _)| spec.clone()).collect()
    }

    /// Evaluates every rule at `now_ms`; rules absent from `observations` see no data.
    pub fn evaluate(&mut self, now_ms: u64, observations: &HashMap<String, Option<f64>>) -> Vec<Notification> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            let value = observations.get(&self.rules[i].0.id).copied().flatten();
            let (spec, state) = &mut self.rules[i];
            let holds = value.is_some_and(|v| spec.comparison.breached(v, spec.threshold));
            state.value = value;
            let transition = state.evaluate(now_ms, holds);
            let spec = spec.clone();
            match transition {
                Some(Transition::Fired { since_ms, fired_ms }) => {
                    let record = AlertRecord {
                        id: self.next_id,
                        rule: spec.id.clone(),
                        summary: spec.summary.clone(),
                        severity: spec.severity,
                        status: AlertStatus::Firing,
                        value,
                        threshold: spec.threshold,
                        comparison: spec.comparison,
                        unit: spec.unit.clone(),
                        since_ms,
                        fired_ms,
                        resolved_ms: None,
                        message: format!(
                            "{}: {} {} {} ({})",
                            spec.summary,
                            format_value(value, &spec.unit),
                            spec.comparison.symbol(),
                            format_value(Some(spec.threshold), &spec.unit).replace(".00", ""),
                            spec.source
                        ),
                    };
                    self.next_id += 1;
                    if self.history.len() == HISTORY_CAPACITY {
                        self.history.pop_back();
                    }
                    self.history.push_front(record.clone());
                    out.push(Notification { status: AlertStatus::Firing, alert: record });
                }
                Some(Transition::Resolved { resolved_ms, .. }) => {
                    let open = self.history.iter_mut().find(|r| r.rule == spec.id && r.resolved_ms.is_none());
                    if let Some(record) = open {
                        record.status = AlertStatus::Resolved;
                        record.resolved_ms = Some(resolved_ms);
                        record.value = value;
                        record.message = format!("{}: resolved ({})", spec.summary, format_value(value, &spec.unit));
                        out.push(Notification { status: AlertStatus::Resolved, alert: record.clone() });
                    }
                }
                None => {
                    if self.rules[i].1.is_firing()
                        && let Some(record) =
                            self.history.iter_mut().find(|r| r.rule == spec.id && r.resolved_ms.is_none())
                    {
                        record.value = value;
                    }
                }
            }
        }
        out
    }

    /// Alerts firing now (including those waiting out their resolve duration), newest first.
    pub fn firing(&self) -> Vec<AlertRecord> {
        self.history.iter().filter(|r| r.status == AlertStatus::Firing).cloned().collect()
    }

    pub fn pending(&self) -> Vec<PendingAlert> {
        self.rules
            .iter()
            .filter_map(|(spec, state)| match state.phase {
                Phase::Pending { since_ms } => Some(PendingAlert {
                    rule: spec.id.clone(),
                    summary: spec.summary.clone(),
                    severity: spec.severity,
                    value: state.value,
                    threshold: spec.threshold,
                    since_ms,
                    fires_at_ms: since_ms + spec.timing.for_ms,
                }),
                _ => None,
            })
            .collect()
    }

    /// Every record, newest first.
    pub fn history(&self, limit: usize) -> Vec<AlertRecord> {
        self.history.iter().take(limit).cloned().collect()
    }

    /// Whether the rule `id` is firing.
    pub fn is_firing(&self, id: &str) -> bool {
        self.rules.iter().any(|(spec, state)| spec.id == id && state.is_firing())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> AlertEngine {
        AlertEngine::new(vec![RuleSpec::new(
            "high_cpu",
            "CPU use is high",
            Severity::Warning,
            Comparison::Above,
            80.0,
            "%",
            "ALERT_CPU_THRESHOLD",
            Timing { for_ms: 10_000, resolve_ms: 0 },
        )])
    }

    fn cpu(value: f64) -> HashMap<String, Option<f64>> {
        HashMap::from([("high_cpu".to_owned(), Some(value))])
    }

    #[test]
    fn a_fired_alert_is_active_and_its_resolution_updates_the_same_record() {
        let mut e = engine();
        assert!(e.evaluate(0, &cpu(95.0)).is_empty());
        assert_eq!(e.pending().len(), 1);
        let fired = e.evaluate(10_000, &cpu(97.0));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        assert!(fired[0].alert.message.contains("97.00 % > 80 %"), "{}", fired[0].alert.message);
        assert_eq!(e.firing().len(), 1);
        assert!(e.is_firing("high_cpu"));
        let resolved = e.evaluate(20_000, &cpu(20.0));
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].alert.id, fired[0].alert.id);
        assert!(e.firing().is_empty());
        let history = e.history(10);
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].resolved_ms, Some(20_000));
    }

    #[test]
    fn missing_data_counts_as_clear() {
        let mut e = engine();
        e.evaluate(0, &cpu(95.0));
        e.evaluate(5_000, &HashMap::new());
        assert!(e.pending().is_empty());
    }
}
