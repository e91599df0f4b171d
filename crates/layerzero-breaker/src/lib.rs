//! A lock-free circuit breaker per kernel: CLOSED / OPEN / HALF_OPEN, as seeds 000 and 003
//! describe it, with time behind a [`Clock`] so tests are deterministic.
//!
//! This crate decides whether a kernel may be called and keeps count; it does not run
//! kernels, retry them or pick fallbacks (that is the dispatcher's job). Start from
//! [`CircuitBreaker`] for one kernel, or [`CircuitBreakerRegistry`] for one per kernel id.
//!
//! ```
//! use layerzero_breaker::{BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState};
//!
//! let config = CircuitBreakerConfig {
//!     failure_threshold: 5,   // open after 5 consecutive failures
//!     success_threshold: 2,   // close after 2 successful trial calls
//!     cooldown_seconds: 30.0, // refuse calls for 30 s once open
//!     half_open_max_calls: 3, // at most 3 trial calls at once
//!     ..CircuitBreakerConfig::default()
//! };
//! let circuit = CircuitBreaker::new("flash_attn_v2_attention", config)?;
//!
//! let run_kernel = || -> Result<u32, &'static str> { Ok(42) };
//! match circuit.try_acquire() {
//!     Ok(permit) => match run_kernel() {
//!         Ok(_) => permit.record_success(),
//!         Err(_) => permit.record_failure(),
//!     },
//!     // OPEN (or HALF_OPEN with every trial place taken): use a fallback kernel.
//!     Err(BreakerError::CircuitOpen { .. }) => {}
//!     Err(other) => return Err(other.into()),
//! }
//! assert_eq!(circuit.state(), CircuitState::Closed);
//! assert_eq!(circuit.stats().successes, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The state machine, exactly
//!
//! - **CLOSED** admits every call. A failure adds one to the consecutive-failure count; a
//!   success sets it back to 0. The failure that brings the count to `failure_threshold`
//!   opens the breaker (so `threshold − 1` failures leave it CLOSED).
//! - **OPEN** refuses every call with [`BreakerError::CircuitOpen`] (with `retry_after`, the
//!   cooldown left). The cooldown runs from the clock reading taken by the failure that
//!   opened it. The first call (or [`CircuitBreaker::state`]) at or after
//!   `opened + cooldown_seconds` moves it to HALF_OPEN, and that call becomes a trial call;
//!   one nanosecond earlier it is refused.
//! - **HALF_OPEN** admits at most `half_open_max_calls` trial calls at once; more are refused
//!   until one finishes. `success_threshold` successful trials close it (counted over the
//!   episode, not necessarily consecutive, since any failure ends the episode); one failed
//!   trial re-opens it and the cooldown starts again from that failure.
//! - **reset timeout**: with `reset_timeout_seconds` set, a breaker that is still OPEN or
//!   HALF_OPEN that long after it last opened is closed by the next call (or `state()`),
//!   failure count 0. It is checked before the cooldown, so a reset timeout shorter than the
//!   cooldown closes the breaker without a HALF_OPEN episode. It also frees trial places
//!   leaked by `allow_request` callers that never reported.
//! - [`CircuitBreaker::force_open`] opens the breaker until [`CircuitBreaker::reset`]; no
//!   cooldown or reset timeout ends a forced open. `reset` closes a breaker from any state.
//!
//! Time-driven transitions happen when a call (or `state()`, or `stats()`) observes them:
//! there is no timer thread.
//!
//! **Permits.** [`CircuitBreaker::try_acquire`] returns a [`CallPermit`]. Record the call's
//! outcome through it. A permit dropped without a verdict counts as a **failure** if its
//! thread is panicking (the call blew up), and as a **release** otherwise (the call did not
//! run): a released trial permit hands its HALF_OPEN place back and counts as neither
//! success nor failure, so trial places never leak. Every transition starts a new
//! *episode* (a generation number); a verdict from a permit of an earlier episode (the
//! breaker opened, closed or was reset since) is counted in the statistics and changes no
//! state, so a late trial result can never free a place of a newer HALF_OPEN episode.
//! The seed's [`allow_request`](CircuitBreaker::allow_request) with the free-standing
//! [`record_success`](CircuitBreaker::record_success) /
//! [`record_failure`](CircuitBreaker::record_failure) also works; those records act on the
//! current episode.
//!
//! # Concurrency
//!
//! The state lives in one `AtomicU64` (kind, two counts, generation), changed only by
//! compare-and-swap, so every transition happens exactly once and is seen whole. A call on
//! a CLOSED breaker that succeeds does one atomic load at acquire and one at success, and
//! bumps two statistics counters that live in a cache line only its own thread writes: no
//! shared write, so threads calling the same kernel do not slow each other down. Locks are
//! taken only after a transition, to log it and call listeners. Every atomic ordering is
//! explained where it is used; the protocol is model-checked with loom (see the README).
//!
//! Architecture invariant: depends only on `layerzero-types`; a CLOSED call that succeeds
//! writes nothing shared, allocates nothing and takes no lock.

#![forbid(unsafe_code)]

mod breaker;
mod clock;
mod config;
mod counters;
mod error;
mod registry;
mod sync;
mod word;

pub use breaker::{
    CallPermit, CircuitBreaker, CircuitState, CircuitStats, RECENT_TRANSITIONS, Transition, TransitionReason,
};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use config::{CircuitBreakerConfig, MAX_COUNT};
pub use error::{BreakerError, ConfigProblem};
pub use registry::CircuitBreakerRegistry;

/// How many threads at once can own a slot of [`thread_slot`].
pub const THREAD_SLOTS: usize = counters::OWNED_SLOTS;

/// This thread's index in the process-wide pool of per-thread counter slots: a value in
/// `0..THREAD_SLOTS` that no other live thread holds (taken on first use, given back when
/// the thread exits), or `None` when every slot is held (or in a thread-local destructor
/// after the slot was given back). A counter indexed by it has one writer at a time, so it
/// can be bumped with a relaxed load and store instead of a `fetch_add`: how breakers keep
/// their statistics, and how dispatchers keep their telemetry.
///
/// ```
/// let slot = layerzero_breaker::thread_slot();
/// assert!(slot.is_none_or(|i| i < layerzero_breaker::THREAD_SLOTS));
/// assert_eq!(slot, layerzero_breaker::thread_slot(), "a thread keeps its slot");
/// ```
#[inline]
pub fn thread_slot() -> Option<usize> {
    let slot = counters::thread_slot();
    (slot < counters::OWNED_SLOTS).then_some(slot)
}
