//! The kernel's one way to take a mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, even when a holder panicked: the kernel's locks guard plain data that stays
/// consistent between statements, so serving on is right, and a poisoned lock must not take
/// every later request down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
