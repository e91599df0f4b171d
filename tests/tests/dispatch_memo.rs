//! Each thread remembers the selections its DYNAMIC and CONFIG dispatches made (by the
//! arguments' signature, or by the context given). These tests check that what is
//! remembered never outlives what it depends on and never crosses between dispatchers or
//! between a derived and a given context, and that a kernel may dispatch again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use layerzero::config::{CompiledConfig, ConfigSchema, DispatchConfig, DispatchMode};
use layerzero::dispatch::{ConfigDrivenDispatcher, Dispatcher, DynamicDispatcher, create_dynamic_dispatcher};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    DType, KernelError, KernelImpl, KernelResult, NormArgs, OpArgs, Operation, OperationType, SelectionContext, Tensor,
};

use layerzero_tests::{rms_norm_spec as spec, writes};

const RMS: Operation = Operation::Known(OperationType::NormRms);

/// Runs rms_norm on a 2×4 input and returns the kernel that ran and the value it wrote.
fn run(dispatcher: &dyn Dispatcher, context: Option<&SelectionContext>) -> (String, f32) {
    let x = Tensor::from_f32(&[1.0; 8], &[2, 4], DType::F32).expect("x");
    let w = Tensor::from_f32(&[1.0; 4], &[4], DType::F32).expect("w");
    let mut y = Tensor::zeros(&[2, 4], DType::F32).expect("y");
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
    let result = dispatcher.dispatch(RMS, &mut args, context).expect("a dispatch");
    (result.kernel_id.as_str().to_owned(), y.to_f32_vec().expect("f32")[0])
}

fn dynamic(kernels: &Arc<KernelRegistry>) -> DynamicDispatcher {
    create_dynamic_dispatcher(Arc::clone(kernels), Arc::new(BackendRegistry::detect()), DispatchConfig::default(), true)
        .expect("a dispatcher")
}

#[test]
fn a_remembered_selection_follows_new_registrations() {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(spec("memo_low", 10), writes(1.0)).expect("registered");
    let dispatcher = dynamic(&kernels);
    for _ in 0..3 {
        assert_eq!(run(&dispatcher, None), ("memo_low".to_owned(), 1.0));
    }
    kernels.register_with_impl(spec("memo_high", 100), writes(2.0)).expect("registered");
    for _ in 0..3 {
        assert_eq!(run(&dispatcher, None), ("memo_high".to_owned(), 2.0));
    }
}

#[test]
fn a_remembered_selection_follows_policy_swaps_and_invalidation() {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(spec("memo_rule_a", 10), writes(1.0)).expect("registered");
    kernels.register_with_impl(spec("memo_rule_b", 20), writes(2.0)).expect("registered");
    let rules = |kernel: &str| {
        format!("version: \"1.0\"\ndispatch_rules:\n  - {{operation: rms_norm, kernel: {kernel}, priority: 500}}\n")
    };
    let policy: CompiledConfig = ConfigSchema.load(&rules("memo_rule_a")).expect("valid").compiled;
    let config = DispatchConfig::builder().mode(DispatchMode::Config).build().expect("config");
    let dispatcher =
        ConfigDrivenDispatcher::new(Arc::clone(&kernels), Arc::new(BackendRegistry::detect()), config, policy, None)
            .expect("a dispatcher");
    for _ in 0..3 {
        assert_eq!(run(&dispatcher, None).0, "memo_rule_a");
    }
    dispatcher.reload_source(&rules("memo_rule_b")).expect("valid rules");
    for _ in 0..3 {
        assert_eq!(run(&dispatcher, None).0, "memo_rule_b");
    }
    // An invalidation moves the generation, so the next call selects again (same answer).
    dispatcher.selection_engine().invalidate();
    let misses_before = dispatcher.selection_engine().cache_len();
    assert_eq!(misses_before, 0, "invalidate empties the shared cache");
    assert_eq!(run(&dispatcher, None).0, "memo_rule_b");
    assert_eq!(dispatcher.selection_engine().cache_len(), 1, "the call after an invalidation selected again");
}

#[test]
fn dispatchers_on_one_thread_never_share_a_remembered_selection() {
    let (first, second) = (Arc::new(KernelRegistry::new()), Arc::new(KernelRegistry::new()));
    first.register_with_impl(spec("memo_first", 10), writes(1.0)).expect("registered");
    second.register_with_impl(spec("memo_second", 10), writes(2.0)).expect("registered");
    let (a, b) = (dynamic(&first), dynamic(&second));
    for _ in 0..3 {
        assert_eq!(run(&a, None), ("memo_first".to_owned(), 1.0));
        assert_eq!(run(&b, None), ("memo_second".to_owned(), 2.0));
    }
    // More dispatchers than a thread has slots, all with the same call: some must share
    // a slot, and each still runs its own kernel.
    let many: Vec<(String, DynamicDispatcher)> = (0..40)
        .map(|i| {
            let kernels = Arc::new(KernelRegistry::new());
            let name = format!("memo_owner_{i}");
            kernels.register_with_impl(spec(&name, 10), writes(i as f32)).expect("registered");
            (name, dynamic(&kernels))
        })
        .collect();
    for _ in 0..2 {
        for (name, dispatcher) in &many {
            assert_eq!(&run(dispatcher, None).0, name);
        }
    }
    // A dispatcher dropped and another made (which may reuse its address) starts afresh.
    drop(a);
    let third = Arc::new(KernelRegistry::new());
    third.register_with_impl(spec("memo_third", 10), writes(3.0)).expect("registered");
    let c = dynamic(&third);
    assert_eq!(run(&c, None), ("memo_third".to_owned(), 3.0));
}

#[test]
fn a_given_context_and_a_derived_one_are_remembered_apart() {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(spec("memo_small", 10), writes(1.0)).expect("registered");
    kernels.register_with_impl(spec("memo_large", 20), writes(2.0)).expect("registered");
    let rules = "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, conditions: {batch_size_gte: 100}, kernel: memo_large, priority: 500}\n  - {operation: rms_norm, kernel: memo_small, priority: 400}\n";
    let policy = ConfigSchema.load(rules).expect("valid").compiled;
    let config = DispatchConfig::builder().mode(DispatchMode::Config).build().expect("config");
    let dispatcher =
        ConfigDrivenDispatcher::new(kernels, Arc::new(BackendRegistry::detect()), config, policy, None).expect("ok");
    // The arguments have batch 2; a caller may still describe the call otherwise.
    let large = SelectionContext::builder().batch_size(512).dtype(DType::F32).build().expect("context");
    for _ in 0..3 {
        assert_eq!(run(&dispatcher, None).0, "memo_small");
        assert_eq!(run(&dispatcher, Some(&large)).0, "memo_large");
    }
}

/// rms_norm on a `[batch, 4]` input through `dispatcher`: the kernel that ran.
fn run_batch(dispatcher: &dyn Dispatcher, batch: usize, context: Option<&SelectionContext>) -> String {
    let x = Tensor::zeros(&[batch, 4], DType::F32).expect("x");
    let w = Tensor::zeros(&[4], DType::F32).expect("w");
    let mut y = Tensor::zeros(&[batch, 4], DType::F32).expect("y");
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
    dispatcher.dispatch(RMS, &mut args, context).expect("a dispatch").kernel_id.as_str().to_owned()
}

#[test]
fn many_calls_sharing_few_slots_each_get_their_own_selection() {
    // 400 different calls (two dispatchers × 100 shapes × derived or given context) on
    // one thread: far more than a thread remembers, so entries of other calls sit in the
    // slot a call looks at, and only an exact match may be used.
    let rules = |small: &str, large: &str| {
        format!(
            "version: \"1.0\"\ndispatch_rules:\n  - {{operation: rms_norm, conditions: {{batch_size_gte: 50}}, kernel: {large}, priority: 500}}\n  - {{operation: rms_norm, kernel: {small}, priority: 400}}\n"
        )
    };
    let make = |small: &str, large: &str| {
        let kernels = Arc::new(KernelRegistry::new());
        kernels.register_with_impl(spec(small, 10), writes(1.0)).expect("registered");
        kernels.register_with_impl(spec(large, 20), writes(2.0)).expect("registered");
        let policy = ConfigSchema.load(&rules(small, large)).expect("valid").compiled;
        let config = DispatchConfig::builder().mode(DispatchMode::Config).build().expect("config");
        ConfigDrivenDispatcher::new(kernels, Arc::new(BackendRegistry::detect()), config, policy, None).expect("ok")
    };
    let (a, b) = (make("memo_a_small", "memo_a_large"), make("memo_b_small", "memo_b_large"));
    for _ in 0..2 {
        for batch in 1..=100usize {
            let flipped =
                SelectionContext::builder().batch_size(101 - batch as u32).dtype(DType::F32).build().expect("context");
            for (dispatcher, name) in [(&a, "a"), (&b, "b")] {
                let size = |batch: usize| if batch >= 50 { "large" } else { "small" };
                assert_eq!(run_batch(dispatcher, batch, None), format!("memo_{name}_{}", size(batch)), "batch {batch}");
                let given = run_batch(dispatcher, batch, Some(&flipped));
                assert_eq!(given, format!("memo_{name}_{}", size(101 - batch)), "given batch {}", 101 - batch);
            }
        }
    }
}

/// The dispatcher the nesting kernel calls back into.
static INNER: OnceLock<DynamicDispatcher> = OnceLock::new();
static NESTED_CALLS: AtomicU32 = AtomicU32::new(0);

#[test]
fn a_kernel_may_dispatch_again_on_its_thread() {
    let inner_kernels = Arc::new(KernelRegistry::new());
    inner_kernels.register_with_impl(spec("memo_inner", 10), writes(5.0)).expect("registered");
    assert!(INNER.set(dynamic(&inner_kernels)).is_ok());
    let outer_kernels = Arc::new(KernelRegistry::new());
    let nesting = KernelImpl::norm(|args: &mut NormArgs<'_>| -> KernelResult {
        // Runs the inner dispatcher on the same arguments, then scales what it wrote.
        let inner = INNER.get().expect("set before dispatching");
        let mut again = OpArgs::Norm(NormArgs::new(args.input, args.weight, args.output.reborrow(), args.eps));
        let result = inner.dispatch(RMS, &mut again, None).map_err(|e| KernelError::Unsupported(e.to_string()))?;
        assert_eq!(result.kernel_id.as_str(), "memo_inner");
        NESTED_CALLS.fetch_add(1, Ordering::Relaxed);
        args.output.as_mut_slice::<f32>().map_err(KernelError::Tensor)?.iter_mut().for_each(|v| *v *= 2.0);
        Ok(())
    });
    outer_kernels.register_with_impl(spec("memo_outer", 10), nesting).expect("registered");
    let outer = dynamic(&outer_kernels);
    for _ in 0..4 {
        assert_eq!(run(&outer, None), ("memo_outer".to_owned(), 10.0));
    }
    assert_eq!(NESTED_CALLS.load(Ordering::Relaxed), 4);
}

/// A hit by signature skips the check of the arguments against the operation (the
/// signature holds their kind, and only a call that passed the check is remembered):
/// arguments of another kind must still fail, each time, however often the operation's
/// own arguments were remembered, with a derived context or a given one.
#[test]
fn arguments_of_another_kind_fail_after_remembered_calls() {
    use layerzero::dispatch::DispatchError;
    use layerzero::types::{ArgsKind, MatmulArgs, TensorViewMut};

    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(spec("memo_kind", 10), writes(1.0)).expect("registered");
    let dispatcher = dynamic(&kernels);
    let a = Tensor::zeros(&[2, 4], DType::F32).expect("a");
    let context = SelectionContext::from_tensor(&a.view()).expect("a context");
    for given in [None, Some(&context)] {
        for _ in 0..3 {
            assert_eq!(run(&dispatcher, given), ("memo_kind".to_owned(), 1.0));
            let b = Tensor::zeros(&[4, 4], DType::F32).expect("b");
            let mut product = vec![0f32; 8];
            let output = TensorViewMut::from_slice(&mut product, &[2, 4]).expect("output");
            let mut args = OpArgs::Matmul(MatmulArgs { a: a.view(), b: b.view(), output });
            let error = dispatcher.dispatch(RMS, &mut args, given).expect_err("matmul arguments for rms_norm");
            let expected =
                DispatchError::WrongArguments { operation: RMS, expected: ArgsKind::Norm, actual: ArgsKind::Matmul };
            assert_eq!(error, expected);
        }
    }
    let telemetry = dispatcher.telemetry();
    assert_eq!((telemetry.dispatch_count, telemetry.error_count), (12, 6));
}

/// A thread's memo holds the kernel tables (the kernels' code) it ran with; when the
/// thread ends they are dropped, so nothing a dispatcher registered outlives it and its
/// registry because a thread once dispatched through it.
#[test]
fn a_thread_that_ends_drops_what_its_memo_held() {
    let marker = Arc::new(());
    let kernels = Arc::new(KernelRegistry::new());
    let held = Arc::clone(&marker);
    let code = KernelImpl::norm(move |args: &mut NormArgs<'_>| -> KernelResult {
        let _ = &held;
        args.output.as_mut_slice::<f32>().map_err(KernelError::Tensor)?.fill(4.0);
        Ok(())
    });
    kernels.register_with_impl(spec("memo_owner", 10), code).expect("registered");
    let dispatcher = dynamic(&kernels);
    std::thread::scope(|scope| {
        // Joined by hand: the scope's own join returns once the closure has returned,
        // before the thread's thread-local destructors (which empty its memo) have run; a
        // handle's join waits for the thread to end.
        let dispatching = scope.spawn(|| {
            for _ in 0..3 {
                assert_eq!(run(&dispatcher, None), ("memo_owner".to_owned(), 4.0));
            }
        });
        dispatching.join().expect("the dispatching thread");
    });
    drop(dispatcher);
    drop(kernels);
    // Only the spawned thread dispatched, and it has ended: nothing holds the code now.
    assert_eq!(Arc::strong_count(&marker), 1, "the ended thread's memo still holds the kernel's code");
}
