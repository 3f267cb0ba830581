//! A cell for state private to one backend process: what it knows about the shared table, and
//! the timing frames of the statements it is executing.
//!
//! A Postgres backend runs our code on one thread, so this state needs no locks; it does need
//! to be cheap, because the statement path touches it several times per statement (a
//! `thread_local!` costs a `__tls_get_addr` call per access in a shared library).

use std::cell::{Cell, UnsafeCell};

/// A value only the backend's main thread touches.
pub struct BackendCell<T> {
    value: UnsafeCell<T>,
    busy: Cell<bool>,
}

// SAFETY: Postgres runs extension code of a backend on a single thread (pgrx itself checks this
// for its own calls); `busy` turns accidental reentrancy into a panic instead of aliasing.
unsafe impl<T> Sync for BackendCell<T> {}

impl<T> BackendCell<T> {
    pub const fn new(value: T) -> Self {
        Self { value: UnsafeCell::new(value), busy: Cell::new(false) }
    }

    /// Run `f` with exclusive access; `None` if the cell is already in use further up the stack
    /// (reentrancy), which callers treat as "skip this bookkeeping". Never panics itself, so it
    /// is safe to call from hook trampolines.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.busy.replace(true) {
            return None;
        }
        struct Release<'a>(&'a Cell<bool>);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _release = Release(&self.busy);
        // SAFETY: single thread (see the Sync impl) and not reentrant (checked above).
        Some(f(unsafe { &mut *self.value.get() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_exclusive_access_and_refuses_reentrancy() {
        static CELL: BackendCell<Vec<u32>> = BackendCell::new(Vec::new());
        CELL.with(|v| v.push(1));
        assert_eq!(CELL.with(|v| v.len()), Some(1));
        assert_eq!(CELL.with(|_| CELL.with(|_| ())), Some(None), "the inner use is refused");
        let _ = std::panic::catch_unwind(|| CELL.with(|_| panic!("in the closure")));
        assert_eq!(CELL.with(|v| v[0]), Some(1), "usable again after a panic inside");
    }
}
