//! The circuit breaker's CLOSED success path (`try_acquire` + `record_success`) with 1 and 2
//! threads on one breaker, next to one shared `AtomicU64::fetch_add` per call and, with
//! `--features peers`, the failsafe crate's breaker (PERF.md: ≤ 5 ns with 1 thread, ≤ 10 ns
//! with 2).
//!
//! `cargo bench -p layerzero-benches --bench breaker [--features peers]`
//!
//! Criterion reports the time per call on each thread; a closing table measures each case
//! again (median of 7 runs) and prints it as a ratio to the `fetch_add` baseline.

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use layerzero_breaker::{CircuitBreaker, CircuitBreakerConfig};

/// Runs `call` `iters` times on each of `threads` threads at once; returns the wall time
/// from the common start to the last thread's end (so time per call per thread = wall / iters).
fn run_threads(threads: usize, iters: u64, call: &(dyn Fn() + Sync)) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    for _ in 0..iters {
                        call();
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for worker in workers {
            worker.join().expect("benchmark thread panicked");
        }
        began.elapsed()
    })
}

/// A benchmark case: a name and one call.
type Case = (&'static str, Box<dyn Fn() + Sync>);

/// The cases; the `fetch_add` baseline is second (the ratios divide by it).
fn cases() -> Vec<Case> {
    let breaker = Box::leak(Box::new(
        CircuitBreaker::new("bench_kernel", CircuitBreakerConfig::default()).expect("the default config is valid"),
    ));
    let counter: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let ours: Vec<Case> = vec![
        (
            "layerzero breaker: try_acquire + record_success",
            Box::new(move || {
                if let Ok(permit) = black_box(&*breaker).try_acquire() {
                    permit.record_success();
                }
            }),
        ),
        (
            "baseline: one shared AtomicU64::fetch_add",
            Box::new(move || {
                black_box(counter).fetch_add(1, Ordering::Relaxed);
            }),
        ),
        ("floor: an empty call through the same harness", Box::new(|| black_box(()))),
    ];
    ours.into_iter().chain(peers()).collect()
}

#[cfg(feature = "peers")]
fn peers() -> Vec<Case> {
    use failsafe::CircuitBreaker as _;
    let failsafe = Box::leak(Box::new(failsafe::Config::new().build()));
    vec![(
        "peer: failsafe 1.3 call(Ok)",
        Box::new(move || {
            let _ = black_box(&*failsafe).call(|| Ok::<(), ()>(()));
        }),
    )]
}

#[cfg(not(feature = "peers"))]
fn peers() -> Vec<Case> {
    Vec::new()
}

fn criterion_runs(c: &mut Criterion, cases: &[Case]) {
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("breaker CLOSED success, {threads} thread(s), time per call"));
        for (name, call) in cases {
            group.bench_function(*name, |b| b.iter_custom(|iters| run_threads(threads, iters, call.as_ref())));
        }
        group.finish();
    }
}

/// ns per call per thread: the median of 7 runs of about 150 ms each, and the spread.
fn measure(threads: usize, call: &(dyn Fn() + Sync)) -> (f64, f64, f64) {
    const PROBE: u64 = 1_000_000;
    let probe = run_threads(threads, PROBE, call).as_secs_f64().max(1e-6);
    let iters = ((PROBE as f64 * 0.15 / probe) as u64).max(PROBE);
    let mut runs: Vec<f64> =
        (0..7).map(|_| run_threads(threads, iters, call).as_secs_f64() * 1e9 / iters as f64).collect();
    runs.sort_by(f64::total_cmp);
    (runs[3], runs[0], runs[6])
}

fn ratio_table(cases: &[Case]) {
    println!();
    println!(
        "CLOSED success path, ns per call per thread (median of 7 runs of ~150 ms, [min, max]), ratio to fetch_add:"
    );
    println!("{:<50} {:>26} {:>26}", "", "1 thread", "2 threads");
    let results: Vec<[(f64, f64, f64); 2]> =
        cases.iter().map(|(_, call)| [measure(1, call.as_ref()), measure(2, call.as_ref())]).collect();
    let baseline = results[1];
    for ((name, _), result) in cases.iter().zip(&results) {
        let cell = |i: usize| {
            let (median, min, max) = result[i];
            format!("{median:6.2} [{min:.1}, {max:.1}] {:5.2}x", median / baseline[i].0)
        };
        println!("{name:<50} {:>26} {:>26}", cell(0), cell(1));
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    let cases = cases();
    criterion_runs(&mut criterion, &cases);
    criterion.final_summary();
    // `cargo test --benches`, `--list` and `--profile-time` are not measurements.
    let quick = std::env::args().any(|arg| matches!(arg.as_str(), "--test" | "--list" | "--profile-time"));
    if !quick {
        ratio_table(&cases);
    }
}
