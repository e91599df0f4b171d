//! Model checks of the breaker's protocol under every interleaving of 2–3 threads.
//!
//! Run (see the crate README):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p layerzero-breaker --release --test loom`
//!
//! Each model checks, at every step and at the end:
//! - HALF_OPEN never has more than `half_open_max_calls` trial calls of one episode running;
//! - no call is admitted while OPEN before the cooldown (the clock never moves here);
//! - no transition is lost: the log holds generations 1, 2, 3, ... each leaving the state the
//!   previous one entered, and the final state is the last one entered;
//! - the counters add up: calls = successes + failures + released; calls + rejections =
//!   attempts.

#![cfg(loom)]

use std::sync::Arc;

use layerzero_breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitState, ManualClock};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// What a model thread does with a permit it gets.
#[derive(Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    /// Dropped without a verdict.
    Drop,
}

/// Trial calls running, per episode (generations stay far below this in these models).
struct InFlight([AtomicUsize; 16]);

impl InFlight {
    fn new() -> Self {
        InFlight(std::array::from_fn(|_| AtomicUsize::new(0)))
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Bounded preemptions keep the 3-thread models within CI's budget; the bugs this protocol
    // could have (a lost CAS, a stale verdict, a double transition) need at most two.
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn breaker(config: CircuitBreakerConfig) -> (Arc<CircuitBreaker>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let breaker = CircuitBreaker::with_clock("loom_kernel", config, clock.clone()).unwrap();
    (Arc::new(breaker), clock)
}

/// One attempt: acquire; if admitted, check the trial limit and report `outcome`.
/// Returns whether it was admitted.
fn attempt(breaker: &CircuitBreaker, in_flight: &InFlight, max: usize, outcome: Outcome) -> bool {
    let Ok(permit) = breaker.try_acquire() else { return false };
    if permit.is_trial() {
        let running = &in_flight.0[permit.generation() as usize % 16];
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(now <= max, "{now} trial calls in flight, at most {max} allowed");
        running.fetch_sub(1, Ordering::SeqCst);
    }
    match outcome {
        Outcome::Success => permit.record_success(),
        Outcome::Failure => permit.record_failure(),
        Outcome::Drop => drop(permit),
    }
    true
}

/// The transition log is complete and chained, and the counters add up.
fn check(breaker: &CircuitBreaker, attempts: u64) {
    let stats = breaker.stats();
    let mut previous = CircuitState::Closed;
    for (i, transition) in stats.recent_transitions.iter().enumerate() {
        assert_eq!(transition.generation as usize, i + 1, "lost or repeated transition: {stats:?}");
        assert_eq!(transition.from, previous, "transition does not follow the last: {stats:?}");
        previous = transition.to;
    }
    assert_eq!(stats.transitions as usize, stats.recent_transitions.len());
    assert_eq!(stats.state, previous, "state differs from the last transition: {stats:?}");
    assert_eq!(stats.calls, stats.successes + stats.failures + stats.released, "{stats:?}");
    assert_eq!(stats.calls + stats.rejections, attempts, "{stats:?}");
    if stats.state != CircuitState::HalfOpen {
        assert_eq!(stats.trial_calls_in_flight, 0);
    }
}

/// HALF_OPEN with one trial place and three callers: one succeeds, one fails, one drops its
/// permit. Cooldown 0, so a failed trial re-opens and the next call starts a new episode.
#[test]
fn half_open_admits_at_most_max_trials_with_three_threads() {
    model(|| {
        let config = CircuitBreakerConfig {
            failure_threshold: 1,
            success_threshold: 2,
            cooldown_seconds: 0.0,
            half_open_max_calls: 1,
            reset_timeout_seconds: None,
        };
        let (breaker, _clock) = breaker(config);
        breaker.try_acquire().unwrap().record_failure(); // OPEN
        let in_flight = Arc::new(InFlight::new());
        let handles: Vec<_> = [Outcome::Success, Outcome::Failure, Outcome::Drop]
            .into_iter()
            .map(|outcome| {
                let (breaker, in_flight) = (breaker.clone(), in_flight.clone());
                thread::spawn(move || attempt(&breaker, &in_flight, 1, outcome))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        check(&breaker, 1 + 3);
    });
}

/// Two trial places, two threads each running two trials to success: the episode closes
/// exactly once, however the CASes interleave.
#[test]
fn concurrent_trial_successes_close_exactly_once() {
    model(|| {
        let config = CircuitBreakerConfig {
            failure_threshold: 1,
            success_threshold: 2,
            cooldown_seconds: 0.0,
            half_open_max_calls: 2,
            reset_timeout_seconds: None,
        };
        let (breaker, _clock) = breaker(config);
        breaker.try_acquire().unwrap().record_failure(); // OPEN
        let in_flight = Arc::new(InFlight::new());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (breaker, in_flight) = (breaker.clone(), in_flight.clone());
                thread::spawn(move || {
                    attempt(&breaker, &in_flight, 2, Outcome::Success);
                    attempt(&breaker, &in_flight, 2, Outcome::Success);
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        check(&breaker, 1 + 4);
        let stats = breaker.stats();
        assert_eq!(stats.state, CircuitState::Closed);
        let closings = stats.recent_transitions.iter().filter(|t| t.to == CircuitState::Closed).count();
        assert_eq!(closings, 1);
    });
}

/// CLOSED with threshold 2: two threads fail at once while a third calls. The breaker opens
/// exactly once, and the third call is admitted only in the CLOSED episode; the clock never
/// moves, so nothing is admitted after the opening.
#[test]
fn racing_failures_open_exactly_once_and_nothing_is_admitted_while_open() {
    model(|| {
        let config = CircuitBreakerConfig {
            failure_threshold: 2,
            success_threshold: 1,
            cooldown_seconds: 1.0,
            half_open_max_calls: 1,
            reset_timeout_seconds: None,
        };
        let (breaker, _clock) = breaker(config);
        let failing: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || {
                    let permit = breaker.try_acquire().unwrap();
                    permit.record_failure();
                })
            })
            .collect();
        let caller = {
            let breaker = breaker.clone();
            thread::spawn(move || match breaker.try_acquire() {
                Ok(permit) => {
                    assert_eq!(permit.generation(), 0, "admitted after the breaker opened");
                    permit.record_success();
                }
                Err(_) => assert_eq!(breaker.state(), CircuitState::Open),
            })
        };
        for handle in failing {
            handle.join().unwrap();
        }
        caller.join().unwrap();
        check(&breaker, 3);
        let stats = breaker.stats();
        // The success may land between the failures and clear the first, so the breaker is
        // OPEN unless it did.
        match stats.transitions {
            0 => assert_eq!((stats.state, stats.successes), (CircuitState::Closed, 1)),
            1 => assert_eq!(stats.state, CircuitState::Open),
            n => panic!("{n} transitions"),
        }
    });
}

/// A trial permit outlives its episode: the operator forces the breaker open and resets it,
/// a new HALF_OPEN episode starts, and the old permit's failure lands at any point. A late
/// verdict must neither end the new episode nor free its only trial place.
#[test]
fn a_stale_trial_verdict_changes_nothing() {
    model(|| {
        let config = CircuitBreakerConfig {
            failure_threshold: 1,
            success_threshold: 2,
            cooldown_seconds: 0.0,
            half_open_max_calls: 1,
            reset_timeout_seconds: None,
        };
        let (breaker, _clock) = breaker(config);
        breaker.try_acquire().unwrap().record_failure(); // OPEN
        let late = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                // Usually a trial of the first HALF_OPEN episode; refused if it comes so late
                // that the operator's thread holds the only trial place.
                if let Ok(permit) = breaker.try_acquire() {
                    permit.record_failure();
                }
            })
        };
        let operator = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                breaker.force_open();
                breaker.reset();
                // Now CLOSED whatever the late failure did: reopen, then hold the one trial place.
                breaker.try_acquire().unwrap().record_failure();
                let held = breaker.try_acquire();
                if let Ok(permit) = &held {
                    assert!(permit.is_trial());
                    assert!(breaker.try_acquire().is_err(), "a second trial admitted while the first runs");
                }
                held.map(|permit| permit.record_success()).is_ok()
            })
        };
        late.join().unwrap();
        let held = operator.join().unwrap();
        let attempts = 1 + 1 + 1 + 1 + u64::from(held);
        check(&breaker, attempts);
    });
}
