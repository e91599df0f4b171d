//! 8 threads, 1,000,000 calls, 10% failures (and 1% permits dropped without a verdict) on one
//! breaker whose clock the callers themselves move forward. Afterwards: every counter equals
//! what the callers tallied, the transition log is complete and chained, and no call was
//! admitted in an OPEN episode or before its cooldown had passed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use layerzero_breaker::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, Clock, ManualClock, Transition, TransitionReason,
};

const THREADS: usize = 8;
const CALLS: usize = 1_000_000;
const COOLDOWN: Duration = Duration::from_micros(200);
/// How far each call moves the shared clock.
const TICK: Duration = Duration::from_micros(1);

/// One admitted call, as its caller saw it.
struct Admission {
    generation: u32,
    trial: bool,
    /// The clock, read after the permit was granted.
    at: Duration,
}

#[derive(Default)]
struct Tally {
    admitted: u64,
    successes: u64,
    failures: u64,
    dropped: u64,
    rejected: u64,
    admissions: Vec<Admission>,
}

/// xorshift64*: a fixed-seed generator per thread, enough for a 10% coin.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn caller(breaker: &CircuitBreaker, clock: &ManualClock, seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally { admissions: Vec::with_capacity(CALLS / THREADS), ..Tally::default() };
    for _ in 0..CALLS / THREADS {
        clock.advance(TICK);
        match breaker.try_acquire() {
            Ok(permit) => {
                tally.admitted += 1;
                tally.admissions.push(Admission {
                    generation: permit.generation(),
                    trial: permit.is_trial(),
                    at: clock.now(),
                });
                match rng.below(100) {
                    0..10 => {
                        tally.failures += 1;
                        permit.record_failure();
                    }
                    10 => {
                        tally.dropped += 1;
                        drop(permit);
                    }
                    _ => {
                        tally.successes += 1;
                        permit.record_success();
                    }
                }
            }
            Err(BreakerError::CircuitOpen { state, retry_after }) => {
                tally.rejected += 1;
                if state == CircuitState::Open {
                    assert!(retry_after.is_some_and(|left| left > Duration::ZERO && left <= COOLDOWN));
                }
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    tally
}

#[test]
fn eight_threads_a_million_calls_ten_percent_failures() {
    let config = CircuitBreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        cooldown_seconds: COOLDOWN.as_secs_f64(),
        half_open_max_calls: 2,
        reset_timeout_seconds: None,
    };
    let clock = Arc::new(ManualClock::new());
    let breaker = CircuitBreaker::with_clock("stress_kernel", config, clock.clone()).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    breaker.add_listener(move |transition: &Transition| sink.lock().unwrap().push(*transition));

    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (breaker, clock) = (&breaker, &*clock);
                scope.spawn(move || caller(breaker, clock, 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1)))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });

    // Counters add up exactly, and match what the callers saw.
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let stats = breaker.stats();
    assert_eq!(stats.calls + stats.rejections, CALLS as u64);
    assert_eq!(stats.calls, stats.successes + stats.failures + stats.released);
    assert_eq!(
        (stats.calls, stats.successes, stats.failures, stats.released, stats.rejections),
        (sum(|t| t.admitted), sum(|t| t.successes), sum(|t| t.failures), sum(|t| t.dropped), sum(|t| t.rejected))
    );

    // The log is complete: generations 1..=n, each leaving the state the last one entered.
    let mut transitions = log.lock().unwrap().clone();
    transitions.sort_by_key(|t| t.generation);
    assert_eq!(transitions.len() as u64, stats.transitions);
    let mut previous = CircuitState::Closed;
    for (i, t) in transitions.iter().enumerate() {
        assert_eq!(t.generation as usize, i + 1);
        assert_eq!(t.from, previous, "{t:?}");
        previous = t.to;
    }
    assert_eq!(previous, stats.state);
    let opened = transitions.iter().filter(|t| t.to == CircuitState::Open).count();
    let recovered = transitions.iter().filter(|t| t.reason == TransitionReason::SuccessThreshold).count();
    eprintln!(
        "calls {} failures {} rejections {} released {}; opened {opened} times, recovered {recovered}",
        stats.calls, stats.failures, stats.rejections, stats.released
    );
    assert!(opened >= 100 && recovered >= 10, "the run should open and recover often: {opened} / {recovered}");

    // No call admitted while OPEN, nor before the cooldown: every admission belongs to a
    // CLOSED or HALF_OPEN episode, and a trial came after a HALF_OPEN that began at least
    // `cooldown` after the OPEN before it.
    let entered = |generation: u32| transitions.get((generation as usize).wrapping_sub(1));
    for admission in tallies.iter().flat_map(|t| &t.admissions) {
        match entered(admission.generation) {
            None => assert!(admission.generation == 0 && !admission.trial),
            Some(t) if admission.trial => {
                assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::HalfOpen));
                let open = entered(admission.generation - 1).unwrap();
                assert!(t.at - open.at >= COOLDOWN, "half-opened {:?} after opening", t.at - open.at);
                assert!(admission.at >= open.at + COOLDOWN);
            }
            Some(t) => assert_eq!(t.to, CircuitState::Closed),
        }
    }
}
