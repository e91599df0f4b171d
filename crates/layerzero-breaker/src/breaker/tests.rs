//! Every transition and boundary, on a manual clock.

use std::sync::Mutex as StdMutex;

use super::*;
use crate::ManualClock;

const NS: Duration = Duration::from_nanos(1);

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        cooldown_seconds: 10.0,
        half_open_max_calls: 2,
        reset_timeout_seconds: None,
    }
}

fn breaker(config: CircuitBreakerConfig) -> (CircuitBreaker, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let breaker = CircuitBreaker::with_clock("test_kernel", config, clock.clone()).unwrap();
    (breaker, clock)
}

fn fail(breaker: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        breaker.try_acquire().unwrap().record_failure();
    }
}

/// An OPEN breaker (opened at clock time 0 + `at`).
fn opened(config: CircuitBreakerConfig) -> (CircuitBreaker, Arc<ManualClock>) {
    let (breaker, clock) = self::breaker(config);
    fail(&breaker, config.failure_threshold);
    assert_eq!(breaker.state(), CircuitState::Open);
    (breaker, clock)
}

/// A HALF_OPEN breaker with no trial taken yet.
fn half_open(config: CircuitBreakerConfig) -> (CircuitBreaker, Arc<ManualClock>) {
    let (breaker, clock) = opened(config);
    clock.advance_secs(config.cooldown_seconds);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    (breaker, clock)
}

fn refused(result: Result<CallPermit<'_>, BreakerError>) -> (CircuitState, Option<Duration>) {
    match result {
        Err(BreakerError::CircuitOpen { state, retry_after }) => (state, retry_after),
        Err(other) => panic!("expected CircuitOpen, got {other:?}"),
        Ok(permit) => panic!("expected a refusal, got {permit:?}"),
    }
}

fn reasons(breaker: &CircuitBreaker) -> Vec<TransitionReason> {
    breaker.stats().recent_transitions.iter().map(|t| t.reason).collect()
}

#[test]
fn an_invalid_config_is_refused_with_every_problem() {
    let bad = CircuitBreakerConfig { failure_threshold: 0, cooldown_seconds: f64::NAN, ..config() };
    let err = CircuitBreaker::new("k", bad).unwrap_err();
    let BreakerError::InvalidConfig { problems } = err else { panic!("expected InvalidConfig, got {err:?}") };
    assert_eq!(problems.iter().map(|p| p.field).collect::<Vec<_>>(), ["failure_threshold", "cooldown_seconds"]);
}

#[test]
fn closed_stays_closed_at_threshold_minus_one_and_opens_at_threshold() {
    let (breaker, clock) = breaker(config());
    fail(&breaker, 2);
    assert_eq!((breaker.state(), breaker.failure_count()), (CircuitState::Closed, 2));
    clock.advance(Duration::from_secs(1));
    fail(&breaker, 1);
    assert_eq!((breaker.state(), breaker.failure_count()), (CircuitState::Open, 0));
    let stats = breaker.stats();
    assert_eq!(
        stats.recent_transitions,
        [Transition {
            from: CircuitState::Closed,
            to: CircuitState::Open,
            at: Duration::from_secs(1),
            reason: TransitionReason::FailureThreshold,
            generation: 1,
        }]
    );
    assert_eq!((stats.calls, stats.failures, stats.transitions), (3, 3, 1));
}

#[test]
fn a_success_clears_the_consecutive_failures() {
    let (breaker, _clock) = breaker(config());
    fail(&breaker, 2);
    breaker.try_acquire().unwrap().record_success();
    assert_eq!(breaker.failure_count(), 0);
    fail(&breaker, 2);
    assert_eq!(breaker.state(), CircuitState::Closed);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn open_refuses_until_the_cooldown_and_half_opens_at_it() {
    let (breaker, clock) = opened(config());
    assert_eq!(refused(breaker.try_acquire()), (CircuitState::Open, Some(Duration::from_secs(10))));
    clock.advance(Duration::from_secs(10) - NS);
    assert_eq!(refused(breaker.try_acquire()), (CircuitState::Open, Some(NS)));
    assert!(!breaker.allow_request());
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(NS);
    let permit = breaker.try_acquire().unwrap();
    assert!(permit.is_trial());
    assert_eq!(permit.generation(), 2);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    drop(permit);
    let stats = breaker.stats();
    assert_eq!((stats.rejections, stats.calls, stats.released), (3, 4, 1));
    assert_eq!(stats.recent_transitions[1].reason, TransitionReason::CooldownElapsed);
    assert_eq!(stats.recent_transitions[1].at, Duration::from_secs(10));
}

#[test]
fn a_zero_cooldown_half_opens_at_the_next_call() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig { cooldown_seconds: 0.0, ..config() });
    fail(&breaker, 3);
    assert!(breaker.try_acquire().unwrap().is_trial());
}

#[test]
fn half_open_admits_at_most_half_open_max_calls_at_once() {
    let (breaker, _clock) = half_open(config());
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    assert_eq!(refused(breaker.try_acquire()), (CircuitState::HalfOpen, None));
    assert_eq!(breaker.stats().trial_calls_in_flight, 2);
    first.record_success();
    let third = breaker.try_acquire().unwrap();
    assert_eq!(refused(breaker.try_acquire()), (CircuitState::HalfOpen, None));
    drop((second, third));
    assert_eq!(breaker.stats().trial_calls_in_flight, 0);
}

#[test]
fn success_threshold_trials_close_and_one_fewer_does_not() {
    let (breaker, clock) = half_open(config());
    breaker.try_acquire().unwrap().record_success();
    assert_eq!((breaker.state(), breaker.success_count()), (CircuitState::HalfOpen, 1));
    clock.advance(Duration::from_secs(3));
    breaker.try_acquire().unwrap().record_success();
    assert_eq!((breaker.state(), breaker.success_count(), breaker.failure_count()), (CircuitState::Closed, 0, 0));
    let last = breaker.stats().recent_transitions[2];
    assert_eq!(
        (last.reason, last.at, last.generation),
        (TransitionReason::SuccessThreshold, Duration::from_secs(13), 3)
    );
}

#[test]
fn one_failed_trial_reopens_and_restarts_the_cooldown() {
    let (breaker, clock) = half_open(config());
    breaker.try_acquire().unwrap().record_success();
    clock.advance(Duration::from_secs(2));
    breaker.try_acquire().unwrap().record_failure();
    assert_eq!(breaker.state(), CircuitState::Open);
    // The cooldown counts from the trial failure at 12 s, not from the first opening.
    clock.advance(Duration::from_secs(10) - NS);
    assert_eq!(refused(breaker.try_acquire()), (CircuitState::Open, Some(NS)));
    clock.advance(NS);
    assert!(breaker.try_acquire().unwrap().is_trial());
    assert_eq!(
        reasons(&breaker),
        [
            TransitionReason::FailureThreshold,
            TransitionReason::CooldownElapsed,
            TransitionReason::TrialFailed,
            TransitionReason::CooldownElapsed,
        ]
    );
}

#[test]
fn a_dropped_trial_permit_gives_its_place_back_without_a_verdict() {
    let config = CircuitBreakerConfig { half_open_max_calls: 1, ..config() };
    let (breaker, _clock) = half_open(config);
    for _ in 0..5 {
        let permit = breaker.try_acquire().unwrap();
        assert!(breaker.try_acquire().is_err());
        permit.release();
    }
    let stats = breaker.stats();
    assert_eq!((stats.state, stats.success_count, stats.trial_calls_in_flight), (CircuitState::HalfOpen, 0, 0));
    assert_eq!((stats.released, stats.successes, stats.failures), (5, 0, 3));
}

#[test]
fn a_permit_dropped_while_panicking_counts_as_a_failure() {
    let (breaker, _clock) = half_open(config());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _permit = breaker.try_acquire().unwrap();
        panic!("the kernel blew up");
    }));
    assert!(result.is_err());
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(reasons(&breaker).last(), Some(&TransitionReason::TrialFailed));
}

#[test]
fn a_trial_verdict_from_an_earlier_episode_changes_nothing() {
    let config = CircuitBreakerConfig { half_open_max_calls: 1, ..config() };
    let (breaker, clock) = half_open(config);
    // Two trials of episode 2: one gets the place; force a new episode under the other.
    let late = breaker.try_acquire().unwrap();
    breaker.reset();
    fail(&breaker, 3);
    clock.advance_secs(10.0);
    let current = breaker.try_acquire().unwrap();
    assert_ne!(late.generation(), current.generation());
    // The late permit's verdicts must not free the current episode's only place ...
    late.record_success();
    assert_eq!(refused(breaker.try_acquire()), (CircuitState::HalfOpen, None));
    assert_eq!(breaker.success_count(), 0);
    // ... nor end the episode.
    let stats_before = breaker.stats().transitions;
    current.record_success();
    assert_eq!(breaker.stats().transitions, stats_before);
    assert_eq!(breaker.success_count(), 1);
}

#[test]
fn a_closed_verdict_from_before_a_reopening_changes_nothing() {
    let (breaker, clock) = breaker(config());
    let late = breaker.try_acquire().unwrap();
    fail(&breaker, 3);
    clock.advance_secs(10.0);
    breaker.try_acquire().unwrap().record_success();
    breaker.try_acquire().unwrap().record_success();
    assert_eq!(breaker.state(), CircuitState::Closed);
    late.record_failure();
    assert_eq!(breaker.failure_count(), 0);
    assert_eq!(breaker.stats().failures, 4);
}

#[test]
fn the_reset_timeout_closes_an_open_breaker_at_the_timeout_not_before() {
    let config = CircuitBreakerConfig { cooldown_seconds: 10.0, reset_timeout_seconds: Some(60.0), ..config() };
    let (breaker, clock) = opened(config);
    // A trial place taken through the seed API and never reported ...
    clock.advance(Duration::from_secs(60) - NS);
    assert!(breaker.allow_request());
    assert!(breaker.allow_request());
    assert!(!breaker.allow_request());
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    // ... is freed by the reset timeout, 60 s after the opening.
    clock.advance(NS);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(
        reasons(&breaker),
        [TransitionReason::FailureThreshold, TransitionReason::CooldownElapsed, TransitionReason::ResetTimeout]
    );
}

#[test]
fn an_open_breaker_no_call_reached_closes_at_the_reset_timeout() {
    let config = CircuitBreakerConfig { cooldown_seconds: 10.0, reset_timeout_seconds: Some(60.0), ..config() };
    let (breaker, clock) = opened(config);
    clock.advance(Duration::from_secs(60));
    let permit = breaker.try_acquire().unwrap();
    assert!(!permit.is_trial());
    assert_eq!(reasons(&breaker), [TransitionReason::FailureThreshold, TransitionReason::ResetTimeout]);
}

#[test]
fn a_reset_timeout_shorter_than_the_cooldown_closes_without_half_open() {
    let config = CircuitBreakerConfig { cooldown_seconds: 10.0, reset_timeout_seconds: Some(5.0), ..config() };
    let (breaker, clock) = opened(config);
    clock.advance(Duration::from_secs(5) - NS);
    assert_eq!(refused(breaker.try_acquire()).0, CircuitState::Open);
    clock.advance(NS);
    let permit = breaker.try_acquire().unwrap();
    assert!(!permit.is_trial());
    assert_eq!(reasons(&breaker), [TransitionReason::FailureThreshold, TransitionReason::ResetTimeout]);
}

#[test]
fn the_reset_timeout_counts_from_the_last_opening() {
    let config = CircuitBreakerConfig { cooldown_seconds: 10.0, reset_timeout_seconds: Some(15.0), ..config() };
    let (breaker, clock) = half_open(config);
    breaker.try_acquire().unwrap().record_failure(); // re-opened at 10 s
    clock.advance(Duration::from_secs(15) - NS);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    clock.advance(NS);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn force_open_holds_past_cooldown_and_reset_timeout_until_reset() {
    let config = CircuitBreakerConfig { reset_timeout_seconds: Some(20.0), ..config() };
    let (breaker, clock) = breaker(config);
    breaker.force_open();
    breaker.force_open();
    clock.advance_secs(3600.0);
    assert_eq!(refused(breaker.try_acquire()), (CircuitState::Open, None));
    let stats = breaker.stats();
    assert!(stats.forced_open);
    assert_eq!((stats.state, stats.transitions), (CircuitState::Open, 1));
    breaker.reset();
    assert!(breaker.try_acquire().is_ok());
    assert_eq!(reasons(&breaker), [TransitionReason::ForcedOpen, TransitionReason::Reset]);
}

#[test]
fn reset_of_a_closed_breaker_clears_its_failures_without_a_transition() {
    let (breaker, _clock) = breaker(config());
    fail(&breaker, 2);
    breaker.reset();
    assert_eq!(breaker.failure_count(), 0);
    assert_eq!(breaker.stats().transitions, 0);
}

#[test]
fn the_seed_api_allow_request_and_record_drive_the_same_machine() {
    let (breaker, clock) = breaker(config());
    for _ in 0..3 {
        assert!(breaker.allow_request());
        breaker.record_failure();
    }
    assert!(!breaker.allow_request());
    clock.advance_secs(10.0);
    assert!(breaker.allow_request());
    assert!(breaker.allow_request());
    assert!(!breaker.allow_request(), "two trial places, both taken");
    breaker.record_success();
    assert!(breaker.allow_request(), "a recorded trial frees its place");
    breaker.record_success();
    assert_eq!(breaker.state(), CircuitState::Closed);
    let stats = breaker.stats();
    assert_eq!((stats.calls, stats.successes, stats.failures, stats.rejections), (6, 2, 3, 2));
}

#[test]
fn listeners_see_every_transition_with_its_time() {
    let (breaker, clock) = breaker(config());
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let sink = seen.clone();
    breaker.add_listener(move |t: &Transition| sink.lock().unwrap().push((t.from, t.to, t.at)));
    fail(&breaker, 3);
    clock.advance_secs(10.0);
    breaker.try_acquire().unwrap().record_success();
    breaker.try_acquire().unwrap().record_success();
    use CircuitState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Closed, Open, Duration::ZERO),
            (Open, HalfOpen, Duration::from_secs(10)),
            (HalfOpen, Closed, Duration::from_secs(10)),
        ]
    );
}

#[test]
fn a_listener_may_call_back_and_a_panicking_one_is_counted() {
    let (breaker, _clock) = breaker(config());
    let breaker = Arc::new(breaker);
    let inner = Arc::downgrade(&breaker);
    let states = Arc::new(StdMutex::new(Vec::new()));
    let sink = states.clone();
    breaker.add_listener(move |_| {
        if let Some(breaker) = inner.upgrade() {
            sink.lock().unwrap().push(breaker.stats().state);
        }
    });
    breaker.add_listener(|_| panic!("a listener bug"));
    breaker.force_open();
    assert_eq!(*states.lock().unwrap(), [CircuitState::Open]);
    assert_eq!(breaker.stats().listener_panics, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn recent_transitions_keep_the_last_ones_in_order() {
    let (breaker, _clock) = breaker(config());
    for _ in 0..(RECENT_TRANSITIONS + 5) {
        breaker.force_open();
        breaker.reset();
    }
    let stats = breaker.stats();
    assert_eq!(stats.transitions, 2 * (RECENT_TRANSITIONS as u64 + 5));
    assert_eq!(stats.recent_transitions.len(), RECENT_TRANSITIONS);
    let generations: Vec<u32> = stats.recent_transitions.iter().map(|t| t.generation).collect();
    let last = stats.transitions as u32;
    assert_eq!(generations, (last - RECENT_TRANSITIONS as u32 + 1..=last).collect::<Vec<_>>());
}

#[test]
fn history_orders_transitions_that_arrive_out_of_order() {
    let mut history = History::default();
    let at = |generation| Transition {
        from: CircuitState::Closed,
        to: CircuitState::Open,
        at: Duration::ZERO,
        reason: TransitionReason::Reset,
        generation,
    };
    for generation in [GEN_MASK - 2, GEN_MASK, GEN_MASK - 1, 1, 0] {
        history.insert(at(generation));
    }
    let order: Vec<u32> = history.recent.iter().map(|t| t.generation).collect();
    // Generations wrap: 0 follows GEN_MASK.
    assert_eq!(order, [GEN_MASK - 2, GEN_MASK - 1, GEN_MASK, 0, 1]);
}

#[test]
fn permits_can_be_settled_on_another_thread() {
    let (breaker, _clock) = breaker(config());
    let permit = breaker.try_acquire().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || permit.record_failure());
    });
    assert_eq!(breaker.failure_count(), 1);
    assert_eq!(breaker.stats().failures, 1);
}
