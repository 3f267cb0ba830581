//! Circuit breakers around the daemon's dependencies (Redis, Postgres, the gateway's upstreams).
//!
//! [`circuit_breaker`] holds the pure state machine; this module wraps it for async callers:
//! [`Breaker::call`] asks for a permit, runs the future, and records how it ended, measured with
//! the injected [`Clock`](crate::clock::Clock). Invariant: a permit is always handed back — if
//! the caller's future is dropped half-way, the guard cancels it, so a half-open breaker never
//! waits forever for a trial call that no longer exists.

pub mod circuit_breaker;
mod window;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub use circuit_breaker::{
    BreakerSettings, BreakerSnapshot, BreakerState, CircuitBreaker, OpenReason, Permit, Rejected,
};
use serde::Serialize;
use utoipa::ToSchema;
pub use window::WindowTotals;

use crate::clock::SharedClock;

/// Why a guarded call did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker is open (or its half-open trials are taken): the call was not made.
    #[error("circuit breaker `{name}` is open; retry in {retry_after_ms} ms")]
    Open { name: String, retry_after_ms: u64 },
    /// The call was made and failed.
    #[error(transparent)]
    Inner(E),
}

/// A named breaker shared by every caller of one dependency.
#[derive(Debug, Clone)]
pub struct Breaker {
    name: Arc<str>,
    machine: Arc<Mutex<CircuitBreaker>>,
    clock: SharedClock,
}

impl Breaker {
    pub fn new(name: impl Into<Arc<str>>, settings: BreakerSettings, clock: SharedClock) -> Self {
        let machine = CircuitBreaker::new(settings, clock.now());
        Self { name: name.into(), machine: Arc::new(Mutex::new(machine)), clock }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> BreakerSettings {
        self.lock().settings().clone()
    }

    // The state machine never panics while locked, but a poisoned lock must not take the cache
    // down with it: the state is still consistent (every method updates it in one step).
    fn lock(&self) -> MutexGuard<'_, CircuitBreaker> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `call` if the breaker permits it; every `Err` counts as a failure.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_classified(call, |_| true).await
    }

    /// Runs `call` if permitted; `is_failure` says which errors mean the dependency is unwell
    /// (a Postgres syntax error is the caller's mistake, not an outage).
    pub async fn call_classified<T, E, F>(
        &self,
        call: F,
        is_failure: impl FnOnce(&E) -> bool,
    ) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_judged(call, |result| result.as_ref().err().is_some_and(is_failure)).await
    }

    /// Runs `call` if permitted; `failed` judges the whole outcome (a proxied 503 is a value,
    /// and a failure of the upstream all the same).
    pub async fn call_judged<T, E, F>(
        &self,
        call: F,
        failed: impl FnOnce(&Result<T, E>) -> bool,
    ) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.lock().try_acquire(self.clock.now()).map_err(|r| CallError::Open {
            name: self.name.to_string(),
            retry_after_ms: u64::try_from(r.retry_after.as_millis()).unwrap_or(u64::MAX),
        })?;
        let mut guard = PermitGuard { breaker: self, permit: Some(permit) };
        let started = self.clock.now();
        let result = call.await;
        let failed = failed(&result);
        if let Some(permit) = guard.permit.take() {
            let now = self.clock.now();
            self.lock().record(permit, now, failed, now - started);
        }
        result.map_err(CallError::Inner)
    }

    /// The state a call would meet now.
    pub fn state(&self) -> BreakerState {
        self.lock().state(self.clock.now())
    }

    pub fn snapshot(&self) -> NamedBreakerSnapshot {
        NamedBreakerSnapshot { name: self.name.to_string(), breaker: self.lock().snapshot(self.clock.now()) }
    }
}

struct PermitGuard<'a> {
    breaker: &'a Breaker,
    permit: Option<Permit>,
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.lock().cancel(permit);
        }
    }
}

/// A breaker's snapshot with its name, as `GET /api/circuit-breakers` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NamedBreakerSnapshot {
    pub name: String,
    #[serde(flatten)]
    pub breaker: BreakerSnapshot,
}

/// Every breaker of the daemon: its own dependencies' and one per gateway upstream.
#[derive(Debug, Clone)]
pub struct Breakers {
    pub redis: Breaker,
    pub postgres: Breaker,
    /// `upstream:<name>` for each upstream of the routes file, in the file's order.
    upstreams: Arc<RwLock<Vec<Breaker>>>,
    clock: SharedClock,
}

impl Breakers {
    pub fn new(settings: &BreakerSettings, clock: &SharedClock) -> Self {
        Self {
            redis: Breaker::new("redis", settings.clone(), clock.clone()),
            postgres: Breaker::new("postgres", settings.clone(), clock.clone()),
            upstreams: Arc::default(),
            clock: clock.clone(),
        }
    }

    pub fn all(&self) -> Vec<Breaker> {
        let mut all = vec![self.redis.clone(), self.postgres.clone()];
        all.extend(self.upstreams.read().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        all
    }

    /// The breakers of these upstreams (name and settings), in this order: one that exists with
    /// the same settings is kept with its state (a reload changes nothing for it), the others are
    /// new, and breakers of upstreams no longer listed go away.
    pub fn set_upstreams(&self, upstreams: &[(String, BreakerSettings)]) -> Vec<Breaker> {
        let mut current = self.upstreams.write().unwrap_or_else(|e| e.into_inner());
        let next: Vec<Breaker> = upstreams
            .iter()
            .map(|(name, settings)| {
                let name = format!("upstream:{name}");
                current
                    .iter()
                    .find(|b| b.name() == name && b.settings() == *settings)
                    .cloned()
                    .unwrap_or_else(|| Breaker::new(name, settings.clone(), self.clock.clone()))
            })
            .collect();
        *current = next.clone();
        next
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn breaker(clock: Arc<ManualClock>) -> Breaker {
        let settings = BreakerSettings {
            failure_threshold: 2,
            recovery_timeout: Duration::from_secs(5),
            half_open_calls: 1,
            ..BreakerSettings::default()
        };
        Breaker::new("test", settings, clock)
    }

    #[tokio::test]
    async fn errors_open_the_breaker_and_later_calls_are_not_made() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(clock.clone());
        for _ in 0..2 {
            let r: Result<(), _> = b.call(async { Err::<(), _>("down") }).await;
            assert!(matches!(r, Err(CallError::Inner("down"))));
        }
        let mut ran = false;
        let r = b
            .call(async {
                ran = true;
                Ok::<_, ()>(())
            })
            .await;
        assert!(matches!(r, Err(CallError::Open { ref name, .. }) if name == "test"));
        assert!(!ran);
        clock.advance(Duration::from_secs(5));
        assert!(b.call(async { Ok::<_, ()>(()) }).await.is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn errors_classified_as_the_callers_own_do_not_count() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(clock);
        for _ in 0..5 {
            let _ = b.call_classified(async { Err::<(), _>("syntax error") }, |_| false).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_dropped_trial_call_frees_the_half_open_slot() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(clock.clone());
        for _ in 0..2 {
            let _ = b.call(async { Err::<(), _>(()) }).await;
        }
        clock.advance(Duration::from_secs(5));
        // Start a trial call and drop it before it finishes.
        let pending = b.call(std::future::pending::<Result<(), ()>>());
        let _ = tokio::time::timeout(Duration::ZERO, pending).await;
        assert!(b.call(async { Ok::<_, ()>(()) }).await.is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
