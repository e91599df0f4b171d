//! Where breakers read the time: [`Clock`], with [`MonotonicClock`] for real use and
//! [`ManualClock`] for tests that move time by hand.

use std::time::{Duration, Instant};

use crate::sync::{AtomicU64, Ordering};

/// A monotonic source of time, as a [`Duration`] since an origin of the clock's choosing.
///
/// Breakers read the clock only off the CLOSED fast path: when a call meets an OPEN or
/// HALF_OPEN breaker, and to time-stamp transitions.
///
/// Contract: `now` never goes backwards. A clock that did would only make a breaker wait
/// longer (elapsed times saturate at zero), never admit a call early.
pub trait Clock: Send + Sync {
    /// The time now.
    fn now(&self) -> Duration;
}

/// The real clock: [`Instant`] measured from the clock's creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock { origin: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to, for deterministic tests. Starts at zero; share it
/// with the breaker through an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use layerzero_breaker::{Clock, ManualClock};
///
/// let clock = Arc::new(ManualClock::new());
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), Duration::from_millis(1500));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        ManualClock { nanos: AtomicU64::new(0) }
    }

    /// Moves the clock forward by `by` (saturating at `u64::MAX` nanoseconds, about 584 years).
    pub fn advance(&self, by: Duration) {
        // Relaxed: the clock is a single value with no data published through it; each
        // reader needs only some value from its modification order.
        self.nanos.fetch_add(saturating_nanos(by), Ordering::Relaxed);
    }

    /// Moves the clock forward by `seconds` (ignored unless finite and positive).
    pub fn advance_secs(&self, seconds: f64) {
        if let Ok(by) = Duration::try_from_secs_f64(seconds) {
            self.advance(by);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        // Relaxed: see `advance`.
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// `duration` in whole nanoseconds, saturating at `u64::MAX`.
pub(crate) fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
