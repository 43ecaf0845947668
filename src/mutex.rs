//! A std mutex whose poisoning is ignored: the data it guards stays consistent across a
//! panicking holder (every critical section is a single insert, remove or read).

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, also after a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
