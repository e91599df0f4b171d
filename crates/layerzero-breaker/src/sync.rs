//! The synchronisation primitives the state machine uses: std's, or loom's under `--cfg loom`
//! so that the model checker sees every atomic access and lock (see the README).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, RwLock};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, RwLock};

/// Locks `mutex`, ignoring poisoning: every critical section in this crate leaves its data
/// consistent at each step (a push, a counter bump), so a panic elsewhere cannot corrupt it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(loom)]
pub(crate) use loom::sync::MutexGuard;
#[cfg(not(loom))]
pub(crate) use std::sync::MutexGuard;
