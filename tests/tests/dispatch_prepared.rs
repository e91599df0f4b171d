//! Prepared calls: a selection made once, reused until the policy, an invalidation or the
//! kernel registry says it may be stale; breakers and fallbacks as for any dispatch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use layerzero::config::{CompiledConfig, ConfigSchema, DispatchConfig, DispatchMode};
use layerzero::dispatch::{ConfigDrivenDispatcher, Dispatcher, create_dynamic_dispatcher};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    DType, KernelError, KernelImpl, KernelResult, NormArgs, OpArgs, Operation, OperationType, Platform, Tensor,
};

use layerzero_tests::{rms_norm_spec as spec, writes};

const RMS: Operation = Operation::Known(OperationType::NormRms);

struct Buffers {
    x: Tensor,
    w: Tensor,
    y: Tensor,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            x: Tensor::from_f32(&[1.0; 8], &[2, 4], DType::F32).expect("x"),
            w: Tensor::from_f32(&[1.0; 4], &[4], DType::F32).expect("w"),
            y: Tensor::zeros(&[2, 4], DType::F32).expect("y"),
        }
    }

    fn args(&mut self) -> OpArgs<'_> {
        OpArgs::Norm(NormArgs::new(self.x.view(), self.w.view(), self.y.view_mut(), 1e-6))
    }

    fn first_output(&self) -> f32 {
        self.y.to_f32_vec().expect("f32")[0]
    }
}

#[test]
fn a_prepared_call_runs_what_dispatch_would_and_follows_new_registrations() {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(spec("low", 10), writes(1.0)).expect("registered");
    let dispatcher = create_dynamic_dispatcher(
        Arc::clone(&kernels),
        Arc::new(BackendRegistry::detect()),
        DispatchConfig::default(),
        true,
    )
    .expect("a dispatcher");
    let mut buffers = Buffers::new();
    let context = buffers.args().context().expect("a context");
    let call = dispatcher.prepare(RMS, &context).expect("a selection");
    assert_eq!(call.kernel().as_str(), "low");
    let through_dispatch = dispatcher.dispatch(RMS, &mut buffers.args(), None).expect("dispatch").kernel_id;
    let result = call.dispatch(&mut buffers.args()).expect("prepared");
    assert_eq!((result.kernel_id, result.was_fallback), (through_dispatch, false));
    assert_eq!(buffers.first_output(), 1.0);

    // A better kernel registered later: the registry's version moved, so the prepared
    // call selects again rather than keep its old choice.
    kernels.register_with_impl(spec("high", 90), writes(2.0)).expect("registered");
    let result = call.dispatch(&mut buffers.args()).expect("prepared");
    assert_eq!(result.kernel_id.as_str(), "high");
    assert_eq!(buffers.first_output(), 2.0);
    // Telemetry counted every call.
    assert_eq!(dispatcher.telemetry().dispatch_count, 3);
}

#[test]
fn a_prepared_call_follows_a_policy_swap_and_an_invalidation() {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(spec("a", 10), writes(1.0)).expect("registered");
    kernels.register_with_impl(spec("b", 20), writes(2.0)).expect("registered");
    let config = DispatchConfig::builder().mode(DispatchMode::Config).build().expect("config");
    let rules = |kernel: &str| -> CompiledConfig {
        ConfigSchema
            .load(&format!(
                "version: \"1.0\"\ndispatch_rules:\n  - {{operation: rms_norm, kernel: {kernel}, priority: 10}}\n"
            ))
            .expect("valid rules")
            .compiled
    };
    let dispatcher =
        ConfigDrivenDispatcher::new(kernels, Arc::new(BackendRegistry::detect()), config, rules("a"), None)
            .expect("a dispatcher");
    let mut buffers = Buffers::new();
    let context = buffers.args().context().expect("a context");
    let call = dispatcher.prepare(RMS, &context).expect("a selection");
    assert_eq!(call.dispatch(&mut buffers.args()).expect("prepared").kernel_id.as_str(), "a");

    dispatcher
        .reload_source("version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: b, priority: 10}\n")
        .expect("a valid reload");
    assert_eq!(call.dispatch(&mut buffers.args()).expect("prepared").kernel_id.as_str(), "b");
    assert_eq!(buffers.first_output(), 2.0);

    let before = dispatcher.selection_engine().generation();
    dispatcher.selection_engine().invalidate();
    assert_ne!(dispatcher.selection_engine().generation(), before);
    assert_eq!(call.dispatch(&mut buffers.args()).expect("prepared").kernel_id.as_str(), "b");
}

#[test]
fn a_prepared_call_falls_back_and_refuses_the_wrong_argument_family() {
    let kernels = Arc::new(KernelRegistry::new());
    let failures = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&failures);
    let failing = KernelImpl::norm(move |_: &mut NormArgs<'_>| -> KernelResult {
        counted.fetch_add(1, Ordering::Relaxed);
        Err(KernelError::Backend { backend: "test", message: "always fails".into() })
    });
    kernels.register_with_impl(spec("primary", 90), failing).expect("registered");
    kernels.register_with_impl(spec("backup", 10), writes(3.0)).expect("registered");
    let config = DispatchConfig::builder().mode(DispatchMode::Config).build().expect("config");
    let policy =
        ConfigSchema.load("version: \"1.0\"\nfallback_chains:\n  rms_norm: [backup]\n").expect("valid rules").compiled;
    let dispatcher = ConfigDrivenDispatcher::new(kernels, Arc::new(BackendRegistry::detect()), config, policy, None)
        .expect("a dispatcher");
    let mut buffers = Buffers::new();
    let context = buffers.args().context().expect("a context");
    let call = dispatcher.prepare(RMS, &context).expect("a selection");
    assert_eq!(call.kernel().as_str(), "primary");
    let result = call.dispatch(&mut buffers.args()).expect("the fallback answers");
    assert!(result.was_fallback);
    assert_eq!(result.kernel_id.as_str(), "backup");
    assert_eq!(buffers.first_output(), 3.0);
    assert_eq!(failures.load(Ordering::Relaxed), 1);

    // Arguments of another family never reach a kernel.
    let swiglu = dispatcher.prepare(Operation::Known(OperationType::Swiglu), &context);
    assert!(swiglu.is_err(), "no swiglu kernel is registered");
}

#[test]
fn a_backend_health_change_reaches_cached_selections_and_prepared_calls() {
    use layerzero::registry::{BackendHealth, BackendInfo};
    let backends = Arc::new(BackendRegistry::detect());
    backends
        .register(BackendInfo { name: "cpu-fast".into(), platform: Platform::Cpu, version: None, devices: Vec::new() })
        .expect("registered");
    let kernels = Arc::new(KernelRegistry::new());
    let mut fast = spec("fast", 90);
    fast.backend = "cpu-fast".into();
    kernels.register_with_impl(fast, writes(1.0)).expect("registered");
    kernels.register_with_impl(spec("plain", 10), writes(2.0)).expect("registered");
    let dispatcher = create_dynamic_dispatcher(kernels, Arc::clone(&backends), DispatchConfig::default(), true)
        .expect("a dispatcher");
    let mut buffers = Buffers::new();
    let context = buffers.args().context().expect("a context");
    let call = dispatcher.prepare(RMS, &context).expect("a selection");
    assert_eq!(dispatcher.dispatch(RMS, &mut buffers.args(), None).expect("dispatch").kernel_id.as_str(), "fast");
    assert_eq!(call.dispatch(&mut buffers.args()).expect("prepared").kernel_id.as_str(), "fast");

    // No invalidate(): the backend registry's version is in the cache key and checked by
    // the prepared call.
    backends.set_health("cpu-fast", BackendHealth::Unavailable { reason: "drained".into() }).expect("known");
    assert_eq!(dispatcher.dispatch(RMS, &mut buffers.args(), None).expect("dispatch").kernel_id.as_str(), "plain");
    assert_eq!(call.dispatch(&mut buffers.args()).expect("prepared").kernel_id.as_str(), "plain");
    assert_eq!(buffers.first_output(), 2.0);
}
