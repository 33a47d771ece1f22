//! Locking that survives a poisoned mutex: a panic caught on one streaming
//! thread must not turn every later lock into another panic.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
