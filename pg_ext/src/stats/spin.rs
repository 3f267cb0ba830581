//! A test-and-set spinlock for the per-entry counters in shared memory.
//!
//! Postgres' own `slock_t` is a C macro and not callable from Rust. Critical sections under this
//! lock are a few dozen instructions of arithmetic with no calls into Postgres, so a process can
//! never ERROR or sleep while holding it; a backend killed while holding it makes the postmaster
//! reinitialise shared memory, which resets the lock.

use std::sync::atomic::{AtomicU32, Ordering};

#[repr(C)]
#[derive(Debug, Default)]
pub struct SpinLock(AtomicU32);

/// Releases the lock when dropped.
pub struct SpinGuard<'a>(&'a SpinLock);

/// Spins before yielding the CPU; contention means two backends finished the same statement in
/// the same microsecond, so it is short.
const SPINS_BEFORE_YIELD: u32 = 100;

impl SpinLock {
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    #[inline]
    pub fn lock(&self) -> SpinGuard<'_> {
        let mut spins = 0u32;
        while self.0.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.0.load(Ordering::Relaxed) != 0 {
                spins += 1;
                if spins < SPINS_BEFORE_YIELD {
                    std::hint::spin_loop();
                } else {
                    spins = 0;
                    std::thread::yield_now();
                }
            }
        }
        SpinGuard(self)
    }
}

impl Drop for SpinGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.0.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::UnsafeCell;
    use std::sync::Arc;

    struct Guarded {
        lock: SpinLock,
        value: UnsafeCell<u64>,
    }
    // SAFETY: `value` is only touched with `lock` held.
    unsafe impl Sync for Guarded {}

    #[test]
    fn increments_from_many_threads_are_not_lost() {
        let g = Arc::new(Guarded { lock: SpinLock::new(), value: UnsafeCell::new(0) });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        let _held = g.lock.lock();
                        // SAFETY: lock held.
                        unsafe { *g.value.get() += 1 };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: all writers joined.
        assert_eq!(unsafe { *g.value.get() }, 200_000);
    }
}
