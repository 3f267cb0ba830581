//! One alert rule's state machine: inactive → pending → firing → resolving → inactive.
//!
//! Pure and synchronous: [`RuleState::evaluate`] takes `now` and the rule's latest observation,
//! and says whether the alert fired or resolved. The semantics are Prometheus' (notes §3.4): a
//! condition must hold at every evaluation for `for_duration` before the alert fires (a blip
//! never fires), and once firing it must stay clear for `resolve_duration` before it resolves
//! (Prometheus' `keep_firing_for`), so a value hovering at the threshold does not flap between
//! firing and resolved. Invariant: every `Fired` is followed by exactly one `Resolved` before the
//! next `Fired` of the same rule.

use serde::Serialize;
use utoipa::ToSchema;

/// Which side of the threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Above,
    Below,
    /// At or above: for counts ("at least 10 slow queries").
    AtLeast,
}

impl Comparison {
    pub fn breached(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::Below => value < threshold,
            Comparison::AtLeast => value >= threshold,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::Below => "<",
            Comparison::AtLeast => ">=",
        }
    }
}

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    Inactive,
    /// The condition holds since `since_ms`; it fires once it has held for the rule's duration.
    Pending {
        since_ms: u64,
    },
    /// Fired at `fired_ms`; the condition first held at `since_ms`.
    Firing {
        since_ms: u64,
        fired_ms: u64,
    },
    /// Firing, but the condition has been clear since `clear_ms`.
    Resolving {
        since_ms: u64,
        fired_ms: u64,
        clear_ms: u64,
    },
}

/// What an evaluation changed, for notifications and history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Fired { since_ms: u64, fired_ms: u64 },
    Resolved { since_ms: u64, fired_ms: u64, resolved_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub for_ms: u64,
    pub resolve_ms: u64,
}

#[derive(Debug, Clone)]
pub struct RuleState {
    pub phase: Phase,
    pub timing: Timing,
    /// The latest observation (`None`: no data, which counts as clear).
    pub value: Option<f64>,
}

impl RuleState {
    pub fn new(timing: Timing) -> Self {
        Self { phase: Phase::Inactive, timing, value: None }
    }

    pub fn is_firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. } | Phase::Resolving { .. })
    }

    /// Advances the machine with whether the condition holds at `now_ms`.
    pub fn evaluate(&mut self, now_ms: u64, holds: bool) -> Option<Transition> {
        let Timing { for_ms, resolve_ms } = self.timing;
        let (phase, transition) = match (self.phase, holds) {
            (Phase::Inactive, false) => (Phase::Inactive, None),
            (Phase::Inactive, true) | (Phase::Pending { .. }, true) => {
                let since_ms = match self.phase {
                    Phase::Pending { since_ms } => since_ms,
                    _ => now_ms,
                };
                if now_ms.saturating_sub(since_ms) >= for_ms {
                    let fired = Transition::Fired { since_ms, fired_ms: now_ms };
                    (Phase::Firing { since_ms, fired_ms: now_ms }, Some(fired))
                } else {
                    (Phase::Pending { since_ms }, None)
                }
            }
            (Phase::Pending { .. }, false) => (Phase::Inactive, None),
            (Phase::Firing { since_ms, fired_ms }, true) | (Phase::Resolving { since_ms, fired_ms, .. }, true) => {
                (Phase::Firing { since_ms, fired_ms }, None)
            }
            (Phase::Firing { since_ms, fired_ms }, false) | (Phase::Resolving { since_ms, fired_ms, .. }, false) => {
                let clear_ms = match self.phase {
                    Phase::Resolving { clear_ms, .. } => clear_ms,
                    _ => now_ms,
                };
                if now_ms.saturating_sub(clear_ms) >= resolve_ms {
                    (Phase::Inactive, Some(Transition::Resolved { since_ms, fired_ms, resolved_ms: now_ms }))
                } else {
                    (Phase::Resolving { since_ms, fired_ms, clear_ms }, None)
                }
            }
        };
        self.phase = phase;
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn rule(for_s: u64, resolve_s: u64) -> RuleState {
        RuleState::new(Timing { for_ms: for_s * S, resolve_ms: resolve_s * S })
    }

    #[test]
    fn an_alert_fires_only_after_the_condition_held_for_the_whole_duration() {
        let mut r = rule(60, 0);
        assert_eq!(r.evaluate(0, true), None);
        assert!(matches!(r.phase, Phase::Pending { since_ms: 0 }));
        assert_eq!(r.evaluate(30 * S, true), None);
        assert_eq!(r.evaluate(59 * S, true), None);
        assert_eq!(r.evaluate(60 * S, true), Some(Transition::Fired { since_ms: 0, fired_ms: 60 * S }));
        assert!(r.is_firing());
        assert_eq!(r.evaluate(90 * S, true), None, "fires once, not at every evaluation");
    }

    #[test]
    fn a_condition_that_clears_before_the_duration_never_fires() {
        let mut r = rule(60, 0);
        for minute in 0..10 {
            // Bad for 50 s, good for 10 s, over and over: a blip, never long enough.
            let t = minute * 60 * S;
            assert_eq!(r.evaluate(t, true), None);
            assert_eq!(r.evaluate(t + 50 * S, true), None);
            assert_eq!(r.evaluate(t + 55 * S, false), None);
        }
        assert_eq!(r.phase, Phase::Inactive);
    }

    #[test]
    fn a_firing_alert_resolves_once_the_condition_stayed_clear() {
        let mut r = rule(0, 30);
        assert!(matches!(r.evaluate(0, true), Some(Transition::Fired { .. })));
        assert_eq!(r.evaluate(10 * S, false), None);
        assert!(r.is_firing(), "still firing while resolving");
        assert_eq!(r.evaluate(39 * S, false), None);
        assert_eq!(
            r.evaluate(40 * S, false),
            Some(Transition::Resolved { since_ms: 0, fired_ms: 0, resolved_ms: 40 * S })
        );
        assert_eq!(r.phase, Phase::Inactive);
    }

    #[test]
    fn a_value_hovering_at_the_threshold_does_not_flap() {
        let mut r = rule(0, 30);
        let mut transitions = Vec::new();
        for i in 0..20u64 {
            // Alternates every 10 s: clear never lasts the 30 s resolve duration.
            transitions.extend(r.evaluate(i * 10 * S, i % 2 == 0));
        }
        assert_eq!(transitions.len(), 1, "{transitions:?}");
        assert!(matches!(transitions[0], Transition::Fired { .. }));
    }

    #[test]
    fn without_durations_it_fires_and_resolves_at_the_first_evaluation() {
        let mut r = rule(0, 0);
        assert!(matches!(r.evaluate(5, true), Some(Transition::Fired { since_ms: 5, fired_ms: 5 })));
        assert!(matches!(r.evaluate(6, false), Some(Transition::Resolved { resolved_ms: 6, .. })));
    }

    #[test]
    fn thresholds_compare_on_the_bad_side_only() {
        assert!(Comparison::Above.breached(81.0, 80.0));
        assert!(!Comparison::Above.breached(80.0, 80.0));
        assert!(Comparison::Below.breached(0.4, 0.5));
        assert!(!Comparison::Below.breached(0.5, 0.5));
        assert!(Comparison::AtLeast.breached(10.0, 10.0));
    }
}
