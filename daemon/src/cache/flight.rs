//! Single-flight: at most one loader per key runs at a time in this process.
//!
//! A miss takes the key's lock before loading; callers that miss the same key meanwhile wait on
//! it and then find the value in L1 instead of running the loader again (no stampede on a hot
//! key). Invariant: the map holds a key only while someone holds or waits for its lock, so it
//! does not grow with the key space.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub struct Flights {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while loading one key.
pub struct FlightGuard<'a> {
    flights: &'a Flights,
    key: String,
    lock: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Flights {
    /// Waits until no other task of this process is loading `key`, then holds it.
    pub async fn lock(&self, key: &str) -> FlightGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        FlightGuard { flights: self, key: key.to_owned(), lock, guard: Some(guard) }
    }

    /// Holds `key` if no other task of this process is loading it; `None` otherwise.
    pub fn try_lock(&self, key: &str) -> Option<FlightGuard<'_>> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        match lock.clone().try_lock_owned() {
            Ok(guard) => Some(FlightGuard { flights: self, key: key.to_owned(), lock, guard: Some(guard) }),
            Err(_) => {
                // Dropping our clone through a guard-less FlightGuard keeps the map's rule.
                drop(FlightGuard { flights: self, key: key.to_owned(), lock, guard: None });
                None
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.flights.locks.lock().unwrap_or_else(|e| e.into_inner());
        // One reference in the map and ours: nobody else holds or waits for this key.
        if Arc::strong_count(&self.lock) <= 2 {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_of_one_key_run_one_at_a_time_and_the_map_empties() {
        let flights = Arc::new(Flights::default());
        let running = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (flights, running) = (flights.clone(), running.clone());
            tasks.push(tokio::spawn(async move {
                let _g = flights.lock("hot").await;
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let flights = Flights::default();
        let _a = flights.lock("a").await;
        let _b = flights.lock("b").await; // would hang if keys shared a lock
        assert_eq!(flights.in_flight(), 2);
    }
}
