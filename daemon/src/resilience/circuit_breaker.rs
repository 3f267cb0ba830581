//! The circuit-breaker state machine: closed → open → half-open → closed (or back to open).
//!
//! Pure and synchronous: every method takes `now`, nothing sleeps or reads a clock, so the tests
//! below walk through every transition instantly. The semantics follow Resilience4j (notes:
//! resilience-scaling-monitoring-cdn.md §1.1) with the seed's settings: the breaker opens when,
//! within the monitoring period, at least `failure_threshold` calls failed (the seed's "5 failures
//! in 60 seconds"), or — once `minimum_calls` calls were seen — when the failure rate or the
//! slow-call rate reaches its threshold. After `recovery_timeout` it lets `half_open_calls` trial
//! calls through and closes only if their failure and slow-call rates stay under the thresholds.
//!
//! Invariant: an outcome is counted only in the state period that issued its [`Permit`]; a call
//! that started before a transition cannot flip the state after it.

use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::window::{SlidingWindow, WindowTotals};

/// How a breaker decides; built from the `CIRCUIT_BREAKER_*` variables.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BreakerSettings {
    /// `CIRCUIT_BREAKER_ENABLED`: when false every call is permitted and nothing is recorded.
    pub enabled: bool,
    /// `CIRCUIT_BREAKER_FAILURE_THRESHOLD`: failures within the window that open the breaker
    /// whatever the rate (0 = rule off).
    pub failure_threshold: u32,
    /// `CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD`: percentage of failed calls that opens it (0 = off).
    pub failure_rate_threshold: f64,
    /// `CIRCUIT_BREAKER_MINIMUM_CALLS`: calls needed in the window before rates are judged.
    pub minimum_calls: u32,
    /// `CIRCUIT_BREAKER_SLOW_CALL_THRESHOLD`: a successful call longer than this counts as slow.
    #[schema(value_type = u64)]
    #[serde(serialize_with = "as_millis")]
    pub slow_call_duration: Duration,
    /// `CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD`: percentage of slow calls that opens it (0 = off).
    pub slow_call_rate_threshold: f64,
    /// `CIRCUIT_BREAKER_MONITORING_PERIOD`: length of the sliding window.
    #[schema(value_type = u64)]
    #[serde(serialize_with = "as_millis")]
    pub window: Duration,
    /// `CIRCUIT_BREAKER_RECOVERY_TIMEOUT`: how long it stays open before trying again.
    #[schema(value_type = u64)]
    #[serde(serialize_with = "as_millis")]
    pub recovery_timeout: Duration,
    /// `CIRCUIT_BREAKER_HALF_OPEN_CALLS`: trial calls permitted while half-open.
    pub half_open_calls: u32,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for BreakerSettings {
    /// The seed's values (5 failures, 60 s recovery, 60 s monitoring period) plus Resilience4j's
    /// rate defaults.
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            failure_rate_threshold: 50.0,
            minimum_calls: 10,
            slow_call_duration: Duration::from_secs(2),
            slow_call_rate_threshold: 100.0,
            window: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(60),
            half_open_calls: 3,
        }
    }
}

/// The breaker's state as reported to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
    Disabled,
}

/// Why the breaker last opened.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum OpenReason {
    FailureCount { failures: u32 },
    FailureRate { percent: f64 },
    SlowCallRate { percent: f64 },
    HalfOpenTrialFailed { failed: u32, slow: u32, of: u32 },
}

/// Permission to make one call; hand it back with [`CircuitBreaker::record`] or
/// [`CircuitBreaker::cancel`].
#[derive(Debug)]
#[must_use = "a permit must be returned with record() or cancel()"]
pub struct Permit {
    period: u64,
}

/// The breaker refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Time until the breaker will admit a trial call (zero while half-open trials are running).
    pub retry_after: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct Trial {
    in_flight: u32,
    succeeded: u32,
    failed: u32,
    slow: u32,
}

/// One breaker's state machine.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: BreakerState,
    /// Incremented at every transition; permits from an older period are ignored.
    period: u64,
    window: SlidingWindow,
    since: Instant,
    trial: Trial,
    last_open_reason: Option<OpenReason>,
    rejected: u64,
    transitions: u64,
}

/// A read-only view for the API and health checks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Milliseconds spent in the current state.
    pub state_age_ms: u64,
    /// When open: milliseconds until a trial call is allowed.
    pub retry_after_ms: Option<u64>,
    pub window: WindowTotals,
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub half_open_in_flight: u32,
    pub rejected_calls: u64,
    pub transitions: u64,
    pub last_open_reason: Option<OpenReason>,
    pub settings: BreakerSettings,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings, now: Instant) -> Self {
        let state = if settings.enabled { BreakerState::Closed } else { BreakerState::Disabled };
        Self {
            window: SlidingWindow::new(settings.window, now),
            settings,
            state,
            period: 0,
            since: now,
            trial: Trial::default(),
            last_open_reason: None,
            rejected: 0,
            transitions: 0,
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// The state a caller would meet at `now` (an open breaker whose timeout has passed is
    /// half-open: the next call is a trial).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open if now >= self.since + self.settings.recovery_timeout => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if self.state == BreakerState::Open {
            let reopen_at = self.since + self.settings.recovery_timeout;
            if now < reopen_at {
                self.rejected += 1;
                return Err(Rejected { retry_after: reopen_at - now });
            }
            self.transition(BreakerState::HalfOpen, now);
        }
        if self.state == BreakerState::HalfOpen {
            let t = self.trial;
            if t.in_flight + t.succeeded + t.failed >= self.settings.half_open_calls.max(1) {
                self.rejected += 1;
                return Err(Rejected { retry_after: Duration::ZERO });
            }
            self.trial.in_flight += 1;
        }
        Ok(Permit { period: self.period })
    }

    /// Records how a permitted call ended.
    pub fn record(&mut self, permit: Permit, now: Instant, failed: bool, elapsed: Duration) {
        if permit.period != self.period {
            return;
        }
        let slow = !failed && elapsed >= self.settings.slow_call_duration;
        match self.state {
            BreakerState::Closed => {
                self.window.record(now, failed, slow);
                if let Some(reason) = self.closed_verdict(now) {
                    self.open(reason, now);
                }
            }
            BreakerState::HalfOpen => {
                self.trial.in_flight = self.trial.in_flight.saturating_sub(1);
                if failed {
                    self.trial.failed += 1;
                } else {
                    self.trial.succeeded += 1;
                    self.trial.slow += u32::from(slow);
                }
                self.judge_trial(now);
            }
            BreakerState::Open | BreakerState::Disabled => {}
        }
    }

    /// Gives back a permit whose call was abandoned (its future dropped): it counts as nothing,
    /// but frees its half-open trial slot.
    pub fn cancel(&mut self, permit: Permit) {
        if permit.period == self.period && self.state == BreakerState::HalfOpen {
            self.trial.in_flight = self.trial.in_flight.saturating_sub(1);
        }
    }

    fn closed_verdict(&self, now: Instant) -> Option<OpenReason> {
        let s = &self.settings;
        let totals = self.window.totals(now);
        if s.failure_threshold > 0 && totals.failures >= s.failure_threshold {
            return Some(OpenReason::FailureCount { failures: totals.failures });
        }
        if totals.calls < s.minimum_calls.max(1) {
            return None;
        }
        if s.failure_rate_threshold > 0.0 && totals.failure_rate() >= s.failure_rate_threshold {
            return Some(OpenReason::FailureRate { percent: totals.failure_rate() });
        }
        if s.slow_call_rate_threshold > 0.0 && totals.slow_call_rate() >= s.slow_call_rate_threshold {
            return Some(OpenReason::SlowCallRate { percent: totals.slow_call_rate() });
        }
        None
    }

    /// Decides a half-open trial as soon as the outcome is certain: open once the failures (or
    /// slow calls) already reach the threshold over all permitted calls, close when every trial
    /// call finished below it. A zero rate threshold means any failure re-opens.
    fn judge_trial(&mut self, now: Instant) {
        let s = &self.settings;
        let permitted = s.half_open_calls.max(1);
        let t = self.trial;
        let over = |count: u32, threshold: f64| {
            count > 0 && (threshold <= 0.0 || f64::from(count) * 100.0 / f64::from(permitted) >= threshold)
        };
        if over(t.failed, s.failure_rate_threshold) || over(t.slow, s.slow_call_rate_threshold) {
            self.open(OpenReason::HalfOpenTrialFailed { failed: t.failed, slow: t.slow, of: permitted }, now);
        } else if t.succeeded + t.failed >= permitted {
            self.window.clear();
            self.transition(BreakerState::Closed, now);
        }
    }

    fn open(&mut self, reason: OpenReason, now: Instant) {
        self.last_open_reason = Some(reason);
        self.transition(BreakerState::Open, now);
    }

    fn transition(&mut self, to: BreakerState, now: Instant) {
        self.state = to;
        self.since = now;
        self.period += 1;
        self.transitions += 1;
        self.trial = Trial::default();
    }

    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let totals = self.window.totals(now);
        let retry_after_ms = (self.state == BreakerState::Open)
            .then(|| ms((self.since + self.settings.recovery_timeout).saturating_duration_since(now)));
        BreakerSnapshot {
            state: self.state(now),
            state_age_ms: ms(now.saturating_duration_since(self.since)),
            retry_after_ms,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_call_rate(),
            window: totals,
            half_open_in_flight: self.trial.in_flight,
            rejected_calls: self.rejected,
            transitions: self.transitions,
            last_open_reason: self.last_open_reason.clone(),
            settings: self.settings.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: 5,
            failure_rate_threshold: 50.0,
            minimum_calls: 10,
            slow_call_duration: Duration::from_millis(100),
            slow_call_rate_threshold: 80.0,
            window: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(30),
            half_open_calls: 2,
            enabled: true,
        }
    }

    fn call(b: &mut CircuitBreaker, now: Instant, failed: bool, elapsed: Duration) -> bool {
        match b.try_acquire(now) {
            Ok(p) => {
                b.record(p, now, failed, elapsed);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn five_failures_within_the_monitoring_period_open_the_breaker() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings(), t0);
        for i in 0..100 {
            call(&mut b, t0 + i * MS, false, MS);
        }
        for i in 0..4 {
            call(&mut b, t0 + Duration::from_secs(1) + i * MS, true, MS);
        }
        assert_eq!(b.state(t0 + Duration::from_secs(2)), BreakerState::Closed);
        call(&mut b, t0 + Duration::from_secs(2), true, MS);
        assert_eq!(b.state(t0 + Duration::from_secs(2)), BreakerState::Open);
        assert_eq!(
            b.snapshot(t0 + Duration::from_secs(2)).last_open_reason,
            Some(OpenReason::FailureCount { failures: 5 })
        );
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_open_it() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings(), t0);
        for i in 0..10 {
            call(&mut b, t0 + Duration::from_secs(i * 20), true, MS);
            call(&mut b, t0 + Duration::from_secs(i * 20) + MS, false, MS);
            call(&mut b, t0 + Duration::from_secs(i * 20) + 2 * MS, false, MS);
        }
        assert_eq!(b.state(t0 + Duration::from_secs(200)), BreakerState::Closed);
    }

    #[test]
    fn failure_rate_opens_only_after_the_minimum_number_of_calls() {
        let t0 = Instant::now();
        let s = BreakerSettings { failure_threshold: 0, ..settings() };
        let mut b = CircuitBreaker::new(s, t0);
        for _ in 0..9 {
            call(&mut b, t0, true, MS);
        }
        assert_eq!(b.state(t0), BreakerState::Closed, "9 of 9 failed, minimum is 10");
        call(&mut b, t0, true, MS);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(matches!(b.snapshot(t0).last_open_reason, Some(OpenReason::FailureRate { .. })));
    }

    #[test]
    fn slow_calls_open_it_when_their_rate_reaches_the_threshold() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings(), t0);
        for _ in 0..2 {
            call(&mut b, t0, false, MS);
        }
        for _ in 0..8 {
            call(&mut b, t0, false, Duration::from_millis(150));
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(matches!(b.snapshot(t0).last_open_reason, Some(OpenReason::SlowCallRate { .. })));
    }

    fn opened(t0: Instant) -> CircuitBreaker {
        let mut b = CircuitBreaker::new(settings(), t0);
        for _ in 0..5 {
            call(&mut b, t0, true, MS);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        b
    }

    #[test]
    fn open_breaker_rejects_until_the_recovery_timeout() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let err = b.try_acquire(t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_secs(20));
        assert_eq!(b.state(t0 + Duration::from_secs(30)), BreakerState::HalfOpen);
        assert!(b.try_acquire(t0 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn half_open_admits_only_the_permitted_trial_calls() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let at = t0 + Duration::from_secs(31);
        let p1 = b.try_acquire(at).unwrap();
        let p2 = b.try_acquire(at).unwrap();
        assert!(b.try_acquire(at).is_err(), "third concurrent trial call");
        b.record(p1, at, false, MS);
        b.record(p2, at, false, MS);
        assert_eq!(b.state(at), BreakerState::Closed);
        assert_eq!(b.snapshot(at).window.calls, 0, "closing starts a fresh window");
    }

    #[test]
    fn a_failed_trial_reopens_and_restarts_the_recovery_timeout() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let at = t0 + Duration::from_secs(31);
        let p1 = b.try_acquire(at).unwrap();
        b.record(p1, at, true, MS); // 1 of 2 = 50 % ≥ 50 %
        assert_eq!(b.state(at), BreakerState::Open);
        assert!(b.try_acquire(at + Duration::from_secs(29)).is_err());
        assert!(b.try_acquire(at + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn a_cancelled_trial_frees_its_slot_without_counting() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let at = t0 + Duration::from_secs(31);
        let p1 = b.try_acquire(at).unwrap();
        let p2 = b.try_acquire(at).unwrap();
        b.cancel(p1);
        let p3 = b.try_acquire(at).unwrap();
        b.record(p2, at, false, MS);
        assert_eq!(b.state(at), BreakerState::HalfOpen);
        b.record(p3, at, false, MS);
        assert_eq!(b.state(at), BreakerState::Closed);
    }

    #[test]
    fn outcomes_from_before_a_transition_are_ignored() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(settings(), t0);
        let slow_permit = b.try_acquire(t0).unwrap();
        for _ in 0..5 {
            call(&mut b, t0, true, MS);
        }
        let at = t0 + Duration::from_secs(31);
        let trial = b.try_acquire(at).unwrap();
        // The call started while closed finishes during the trial: it must not count as a trial.
        b.record(slow_permit, at, false, MS);
        assert_eq!(b.snapshot(at).half_open_in_flight, 1);
        b.record(trial, at, false, MS);
        assert_eq!(b.state(at), BreakerState::HalfOpen, "one of two trials done");
    }

    #[test]
    fn a_disabled_breaker_permits_everything() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerSettings { enabled: false, ..settings() }, t0);
        for _ in 0..50 {
            assert!(call(&mut b, t0, true, MS));
        }
        assert_eq!(b.state(t0), BreakerState::Disabled);
    }
}
