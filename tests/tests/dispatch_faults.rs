//! Fault injection through the dispatchers: kernels that fail every Nth call, panic, or run
//! past the fallback budget; breakers that open and recover on a manual clock; and many
//! threads dispatching with 10 % failures, where every call must end in the right output
//! or a typed error and every counter must add up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use layerzero::breaker::{CircuitState, ManualClock};
use layerzero::config::{ConfigSchema, DispatchConfig, DispatchMode};
use layerzero::dispatch::{AttemptError, ConfigDrivenDispatcher, DispatchError, Dispatcher, StaticDispatcherBuilder};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    DType, KernelError, KernelImpl, KernelResult, KernelSpec, NormArgs, OpArgs, Operation, OperationType, Platform,
    Tensor, TensorViewMut,
};

/// Panicking kernels are expected here; keep their messages out of the test output.
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info.payload().downcast_ref::<String>().is_some_and(|m| m.starts_with("call "));
            if !injected {
                default(info);
            }
        }));
    });
}

const HIDDEN: usize = 8;

/// What every test kernel computes: `input · weight + 1`.
fn compute(args: &mut NormArgs<'_>) -> KernelResult {
    let input = args.input.as_slice::<f32>()?;
    let weight = args.weight.as_slice::<f32>()?;
    let output = args.output.as_mut_slice::<f32>()?;
    for (i, (out, x)) in output.iter_mut().zip(input).enumerate() {
        *out = x * weight[i % HIDDEN] + 1.0;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Fault {
    None,
    /// Every `n`th call returns an error.
    FailEvery(u64),
    /// Every `n`th call panics, the one after... every other `n`th call errs.
    FailOrPanicEvery(u64),
    /// Every call sleeps this long, then fails.
    SlowFail(Duration),
    /// Fails while the flag is set.
    FailWhile(&'static str),
}

struct TestKernel {
    calls: Arc<AtomicU64>,
    code: KernelImpl,
}

static SWITCHES: [(&str, AtomicBool); 2] =
    [("breaker_primary", AtomicBool::new(true)), ("open_all", AtomicBool::new(true))];

fn switch(name: &str) -> &'static AtomicBool {
    &SWITCHES.iter().find(|(n, _)| *n == name).expect("a test switch").1
}

fn kernel(fault: Fault) -> TestKernel {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    let code = KernelImpl::norm(move |args: &mut NormArgs<'_>| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        match fault {
            Fault::None => {}
            Fault::FailEvery(every) if n.is_multiple_of(every) => {
                return Err(KernelError::Backend { backend: "test", message: format!("call {n} fails") });
            }
            Fault::FailOrPanicEvery(every) if n.is_multiple_of(every) => {
                if (n / every).is_multiple_of(2) {
                    panic!("call {n} panics");
                }
                return Err(KernelError::Backend { backend: "test", message: format!("call {n} fails") });
            }
            Fault::SlowFail(sleep) => {
                std::thread::sleep(sleep);
                return Err(KernelError::Backend { backend: "test", message: "slow and failing".into() });
            }
            Fault::FailWhile(name) if switch(name).load(Ordering::SeqCst) => {
                return Err(KernelError::Unsupported("switched off".into()));
            }
            _ => {}
        }
        compute(args)
    });
    TestKernel { calls, code }
}

fn spec(id: &str) -> KernelSpec {
    KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::NormRms)
}

const RMS: Operation = Operation::Known(OperationType::NormRms);

/// Runs one dispatch on fresh buffers and checks the output when there is one.
fn dispatch_checked(
    dispatcher: &dyn Dispatcher,
    scale: f32,
) -> Result<layerzero::types::DispatchResult<()>, DispatchError> {
    let input: Vec<f32> = (0..2 * HIDDEN).map(|i| i as f32 * scale).collect();
    let weight: Vec<f32> = (0..HIDDEN).map(|i| 0.5 + i as f32).collect();
    let input = Tensor::from_vec(input, &[2, HIDDEN]).unwrap();
    let weight_t = Tensor::from_vec(weight.clone(), &[HIDDEN]).unwrap();
    let mut out = vec![f32::NAN; 2 * HIDDEN];
    let output = TensorViewMut::from_slice(&mut out, &[2, HIDDEN]).unwrap();
    let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight_t.view(), output, 1e-6));
    let result = dispatcher.dispatch(RMS, &mut args, None);
    if result.is_ok() {
        for (i, got) in out.iter().enumerate() {
            let want = i as f32 * scale * weight[i % HIDDEN] + 1.0;
            assert_eq!(*got, want, "output element {i}");
        }
    }
    result
}

fn config() -> layerzero::config::DispatchConfigBuilder {
    DispatchConfig::builder().mode(DispatchMode::Static).log_fallbacks(false)
}

#[test]
fn a_kernel_failing_every_third_call_falls_back_exactly_then() {
    let primary = kernel(Fault::FailEvery(3));
    let fallback = kernel(Fault::None);
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_every3_primary"), primary.code.clone(), RMS, true)
        .with_kernel(spec("fault_every3_fallback"), fallback.code.clone(), RMS, false)
        .with_config(config().failure_threshold(100).build().unwrap())
        .build()
        .unwrap();
    let mut fallbacks = 0;
    for call in 1..=30u64 {
        let result = dispatch_checked(&dispatcher, call as f32).unwrap();
        assert_eq!(result.was_fallback, call % 3 == 0, "call {call}");
        let want = if call % 3 == 0 { "fault_every3_fallback" } else { "fault_every3_primary" };
        assert_eq!(result.kernel_id.as_str(), want);
        fallbacks += u64::from(result.was_fallback);
    }
    assert_eq!((primary.calls.load(Ordering::Relaxed), fallback.calls.load(Ordering::Relaxed)), (30, 10));
    let telemetry = dispatcher.telemetry();
    assert_eq!((telemetry.dispatch_count, telemetry.fallback_count, telemetry.error_count), (30, fallbacks, 0));
    let primary_counts = telemetry.kernels.iter().find(|k| k.kernel == "fault_every3_primary").unwrap();
    assert_eq!((primary_counts.successes, primary_counts.failures), (20, 10));
}

#[test]
fn a_panicking_kernel_is_caught_and_counted() {
    quiet_panics();
    let primary = kernel(Fault::FailOrPanicEvery(1));
    let fallback = kernel(Fault::None);
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_panic_primary"), primary.code.clone(), RMS, true)
        .with_kernel(spec("fault_panic_fallback"), fallback.code.clone(), RMS, false)
        .with_config(config().failure_threshold(100).build().unwrap())
        .build()
        .unwrap();
    for _ in 0..4 {
        let result = dispatch_checked(&dispatcher, 1.0).unwrap();
        assert!(result.was_fallback);
        assert_eq!(result.kernel_id.as_str(), "fault_panic_fallback");
    }
    let counts = dispatcher.telemetry();
    let primary_counts = counts.kernels.iter().find(|k| k.kernel == "fault_panic_primary").unwrap();
    // Calls 2 and 4 panic, 1 and 3 return an error.
    assert_eq!((primary_counts.panics, primary_counts.failures), (2, 2));

    // Without a fallback the panic comes back as a typed error carrying its message.
    let alone = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_panic_alone"), kernel(Fault::FailOrPanicEvery(1)).code, RMS, true)
        .with_config(config().build().unwrap())
        .build()
        .unwrap();
    let _first_errs = dispatch_checked(&alone, 1.0).unwrap_err();
    let err = dispatch_checked(&alone, 1.0).unwrap_err();
    assert_eq!(
        err,
        DispatchError::FallbackChainExhausted {
            operation: RMS,
            attempts: vec![(spec("fault_panic_alone").id, AttemptError::Panicked("call 2 panics".into()))],
        }
    );
}

#[test]
fn no_fallback_starts_once_the_budget_is_spent() {
    let first = kernel(Fault::FailEvery(1));
    let slow = kernel(Fault::SlowFail(Duration::from_millis(30)));
    let third = kernel(Fault::None);
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_budget_first"), first.code.clone(), RMS, true)
        .with_kernel(spec("fault_budget_slow"), slow.code.clone(), RMS, false)
        .with_kernel(spec("fault_budget_third"), third.code.clone(), RMS, false)
        .with_config(config().fallback_timeout_ms(10.0).failure_threshold(100).build().unwrap())
        .build()
        .unwrap();
    let err = dispatch_checked(&dispatcher, 1.0).unwrap_err();
    let DispatchError::FallbackBudgetExhausted { budget, attempts, .. } = err else { panic!("{err:?}") };
    assert_eq!(budget, Duration::from_millis(10));
    assert_eq!(attempts.len(), 2);
    assert_eq!(third.calls.load(Ordering::Relaxed), 0, "no attempt starts past the budget");

    // With a budget longer than the slow kernel, the third one answers.
    let patient = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_budget_first"), first.code, RMS, true)
        .with_kernel(spec("fault_budget_slow"), slow.code, RMS, false)
        .with_kernel(spec("fault_budget_third"), third.code, RMS, false)
        .with_config(config().fallback_timeout_ms(5_000.0).failure_threshold(100).build().unwrap())
        .build()
        .unwrap();
    assert_eq!(dispatch_checked(&patient, 1.0).unwrap().kernel_id.as_str(), "fault_budget_third");
}

#[test]
fn max_fallback_attempts_bounds_the_chain() {
    let kernels: Vec<TestKernel> = (0..4).map(|_| kernel(Fault::FailEvery(1))).collect();
    let mut builder = StaticDispatcherBuilder::new()
        .with_config(config().max_fallback_attempts(2).failure_threshold(100).build().unwrap());
    for (i, k) in kernels.iter().enumerate() {
        builder = builder.with_kernel(spec(&format!("fault_max_{i}")), k.code.clone(), RMS, i == 0);
    }
    let dispatcher = builder.build().unwrap();
    let err = dispatch_checked(&dispatcher, 1.0).unwrap_err();
    let DispatchError::FallbackChainExhausted { attempts, .. } = err else { panic!("{err:?}") };
    let tried: Vec<&str> = attempts.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(tried, ["fault_max_0", "fault_max_1", "fault_max_2"]);
    assert_eq!(kernels[3].calls.load(Ordering::Relaxed), 0);

    // With fallback off, only the first runs.
    let single = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_max_0"), kernels[0].code.clone(), RMS, true)
        .with_kernel(spec("fault_max_1"), kernels[1].code.clone(), RMS, false)
        .with_config(config().enable_fallback(false).build().unwrap())
        .build()
        .unwrap();
    let DispatchError::FallbackChainExhausted { attempts, .. } = dispatch_checked(&single, 1.0).unwrap_err() else {
        panic!("expected an exhausted chain")
    };
    assert_eq!(attempts.len(), 1);
}

#[test]
fn the_breaker_opens_skips_the_kernel_and_recovers() {
    let clock = Arc::new(ManualClock::new());
    let primary = kernel(Fault::FailWhile("breaker_primary"));
    let fallback = kernel(Fault::None);
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_breaker_primary"), primary.code.clone(), RMS, true)
        .with_kernel(spec("fault_breaker_fallback"), fallback.code.clone(), RMS, false)
        .with_config(config().failure_threshold(3).recovery_timeout_seconds(10.0).build().unwrap())
        .with_breaker_clock(clock.clone())
        .build()
        .unwrap();
    let id = spec("fault_breaker_primary").id;
    let breaker = || dispatcher.circuit_breakers().unwrap().get_circuit(id);

    for _ in 0..3 {
        assert!(dispatch_checked(&dispatcher, 1.0).unwrap().was_fallback);
    }
    assert_eq!(breaker().state(), CircuitState::Open);
    // Open: the primary is skipped, not called.
    let result = dispatch_checked(&dispatcher, 1.0).unwrap();
    assert_eq!((result.kernel_id.as_str(), result.was_fallback), ("fault_breaker_fallback", true));
    assert_eq!(primary.calls.load(Ordering::Relaxed), 3);
    let skips = dispatcher.telemetry().kernels.into_iter().find(|k| k.kernel == "fault_breaker_primary").unwrap();
    assert_eq!((skips.failures, skips.circuit_open_skips), (3, 1));

    // The kernel heals; one nanosecond before the cooldown ends it is still skipped.
    switch("breaker_primary").store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    assert!(dispatch_checked(&dispatcher, 1.0).unwrap().was_fallback);
    clock.advance(Duration::from_nanos(1));
    // Two successful trial calls (the breaker's success_threshold) close it.
    for _ in 0..2 {
        let result = dispatch_checked(&dispatcher, 1.0).unwrap();
        assert_eq!((result.kernel_id.as_str(), result.was_fallback), ("fault_breaker_primary", false));
    }
    assert_eq!(breaker().state(), CircuitState::Closed);
}

#[test]
fn every_circuit_open_is_a_circuit_open_error() {
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_open_a"), kernel(Fault::FailWhile("open_all")).code, RMS, true)
        .with_kernel(spec("fault_open_b"), kernel(Fault::FailWhile("open_all")).code, RMS, false)
        .with_config(config().failure_threshold(1).build().unwrap())
        .with_breaker_clock(Arc::new(ManualClock::new()))
        .build()
        .unwrap();
    assert!(matches!(dispatch_checked(&dispatcher, 1.0), Err(DispatchError::FallbackChainExhausted { .. })));
    let err = dispatch_checked(&dispatcher, 1.0).unwrap_err();
    assert_eq!(
        err,
        DispatchError::CircuitOpen { operation: RMS, kernels: vec![spec("fault_open_a").id, spec("fault_open_b").id] }
    );
    let telemetry = dispatcher.telemetry();
    assert_eq!((telemetry.dispatch_count, telemetry.error_count), (2, 2));
}

#[test]
fn wrong_arguments_and_unrouted_operations_are_typed_errors() {
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_args_rms"), kernel(Fault::None).code, RMS, true)
        .build()
        .unwrap();
    let a = Tensor::zeros(&[2, 2], DType::F32).unwrap();
    let mut product = vec![0f32; 4];
    let mut args = OpArgs::Matmul(layerzero::types::MatmulArgs {
        a: a.view(),
        b: a.view(),
        output: TensorViewMut::from_slice(&mut product, &[2, 2]).unwrap(),
    });
    assert!(matches!(dispatcher.dispatch(RMS, &mut args, None), Err(DispatchError::WrongArguments { .. })));
    assert_eq!(
        dispatcher.dispatch(OperationType::Matmul.into(), &mut args, None).unwrap_err(),
        DispatchError::NoKernel { operation: OperationType::Matmul.into() }
    );
    // A builder with mistakes reports all of them.
    let err = StaticDispatcherBuilder::new()
        .with_kernel(spec("fault_args_x"), kernel(Fault::None).code, OperationType::Rope, true)
        .with_kernel(spec("fault_args_y"), kernel(Fault::None).code, RMS, true)
        .with_kernel(spec("fault_args_z"), kernel(Fault::None).code, RMS, true)
        .build()
        .unwrap_err();
    let DispatchError::InvalidStaticDispatcher { problems } = err else { panic!("{err:?}") };
    assert_eq!(problems.len(), 2, "{problems:?}");
}

/// Dispatches per thread: 25,000 by default (8 threads: 200,000, a few seconds in debug
/// on two cores). The 1,000,000 per thread:
/// `LAYERZERO_STRESS_DISPATCHES=1000000 cargo test --release -p layerzero-tests --test dispatch_faults`.
fn stress_dispatches() -> u64 {
    std::env::var("LAYERZERO_STRESS_DISPATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(25_000)
}

#[test]
fn eight_threads_with_ten_percent_failures_get_an_output_or_a_typed_error_and_counts_add_up() {
    quiet_panics();
    let kernels = Arc::new(KernelRegistry::new());
    // Primary: 10 % of calls fail (half of those by panicking). Second: every 7th call
    // fails. Third: every 3rd. A call errs only when all three fail.
    let primary = kernel(Fault::FailOrPanicEvery(10));
    let second = kernel(Fault::FailEvery(7));
    let third = kernel(Fault::FailEvery(3));
    let specs = [
        (spec("stress_primary").with_priority(100), &primary),
        (spec("stress_second").with_priority(50), &second),
        (spec("stress_third").with_priority(10), &third),
    ];
    for (spec, kernel) in &specs {
        kernels.register_with_impl(spec.clone(), kernel.code.clone()).unwrap();
    }
    let policy = ConfigSchema
        .load("version: \"1.0\"\nfallback_chains:\n  rms_norm: [stress_second, stress_third]\n")
        .unwrap()
        .compiled;
    // A threshold no run reaches: this test counts failures; the breaker test above checks
    // opening and recovery.
    let config = DispatchConfig::builder().log_fallbacks(false).failure_threshold(60_000).build().unwrap();
    let dispatcher = Arc::new(
        ConfigDrivenDispatcher::new(kernels, Arc::new(BackendRegistry::detect()), config, policy, None).unwrap(),
    );

    let per_thread = stress_dispatches();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dispatcher = Arc::clone(&dispatcher);
            std::thread::spawn(move || {
                let (mut ok, mut fallbacks, mut errors) = (0u64, 0u64, 0u64);
                for i in 0..per_thread {
                    match dispatch_checked(dispatcher.as_ref(), (t * 1000 + i % 1000) as f32) {
                        Ok(result) => {
                            ok += 1;
                            fallbacks += u64::from(result.was_fallback);
                            assert_eq!(result.was_fallback, result.kernel_id.as_str() != "stress_primary");
                        }
                        Err(DispatchError::FallbackChainExhausted { attempts, .. }) => {
                            errors += 1;
                            let tried: Vec<&str> = attempts.iter().map(|(k, _)| k.as_str()).collect();
                            assert_eq!(tried, ["stress_primary", "stress_second", "stress_third"]);
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                (ok, fallbacks, errors)
            })
        })
        .collect();
    let (mut ok, mut fallbacks, mut errors) = (0, 0, 0);
    for thread in threads {
        let (o, f, e) = thread.join().unwrap();
        ok += o;
        fallbacks += f;
        errors += e;
    }
    let total = per_thread * 8;
    assert_eq!(ok + errors, total);

    let telemetry = dispatcher.telemetry();
    assert_eq!(telemetry.dispatch_count, total);
    assert_eq!((telemetry.success_count, telemetry.error_count, telemetry.fallback_count), (ok, errors, fallbacks));
    let by_kernel = |name: &str| telemetry.kernels.iter().find(|k| k.kernel == name).unwrap().clone();
    let (p, s, th) = (by_kernel("stress_primary"), by_kernel("stress_second"), by_kernel("stress_third"));
    assert_eq!(p.successes + s.successes + th.successes, ok);
    assert_eq!(s.successes + th.successes, fallbacks);
    // Each kernel's own call count is what telemetry saw of it.
    assert_eq!(primary.calls.load(Ordering::Relaxed), p.successes + p.failures + p.panics);
    assert_eq!(second.calls.load(Ordering::Relaxed), s.successes + s.failures + s.panics);
    assert_eq!(third.calls.load(Ordering::Relaxed), th.successes + th.failures + th.panics);
    // The primary fails exactly every 10th call, half of them by panicking.
    assert_eq!(p.failures + p.panics, total / 10);
    assert_eq!(p.panics, total / 20);
    // Every primary failure went to the second kernel; every second failure to the third.
    assert_eq!(second.calls.load(Ordering::Relaxed), total / 10);
    assert_eq!(th.failures, errors);
    assert!(errors > 0, "the chain was exhausted at least once");
    assert_eq!(telemetry.total_latency.count, total - errors);
}
