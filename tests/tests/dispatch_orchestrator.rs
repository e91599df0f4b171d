//! Seed 001's orchestrator and seed 003's orchestrator examples, adapted to Rust with test
//! kernels: `create_orchestrator` from a config, the per-call mode override, switching the
//! default mode, AUTO's choice of mode, the fallback chain between modes (a mode missing
//! or failing), and telemetry summed over the modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use layerzero::config::{DispatchConfig, DispatchMode};
use layerzero::dispatch::{
    AttemptError, DispatchError, DispatchOrchestrator, Dispatcher, OrchestratorTelemetry, StaticDispatcherBuilder,
    TelemetrySnapshot, create_orchestrator,
};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    AttentionArgs, DType, DispatchResult, DispatchTiming, KernelError, KernelId, KernelImpl, KernelResult, KernelSpec,
    Layout, NormArgs, OpArgs, Operation, OperationType, Platform, SelectionContext, Support, Tensor,
};

const CAUSAL: Operation = Operation::Known(OperationType::AttentionCausal);
const RMS: Operation = Operation::Known(OperationType::NormRms);

fn attention_marking(mark: f32) -> KernelImpl {
    KernelImpl::attention(move |args: &mut AttentionArgs<'_>| -> KernelResult {
        args.output.as_mut_slice::<f32>()?.fill(mark);
        Ok(())
    })
}

fn attention_failing() -> KernelImpl {
    KernelImpl::attention(|_: &mut AttentionArgs<'_>| -> KernelResult {
        Err(KernelError::Backend { backend: "test", message: "out of shared memory".into() })
    })
}

fn norm_marking(mark: f32) -> KernelImpl {
    KernelImpl::norm(move |args: &mut NormArgs<'_>| -> KernelResult {
        args.output.as_mut_slice::<f32>()?.fill(mark);
        Ok(())
    })
}

fn attention_spec(id: &str, priority: u32) -> KernelSpec {
    let mut spec = KernelSpec::new(id, Platform::Cpu)
        .unwrap()
        .for_operation(OperationType::AttentionCausal)
        .for_operation(OperationType::AttentionCross)
        .with_priority(priority);
    spec.constraints.causal = Support::Supported;
    spec
}

fn norm_spec(id: &str, priority: u32) -> KernelSpec {
    KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::NormRms).with_priority(priority)
}

type Outcome = (Result<DispatchResult<()>, DispatchError>, f32);

/// Seed 003's attention inputs, shrunk: 2 × 4 tokens × 2 heads × 8 channels, f32; the
/// dispatch is made by `call`, and the first output element tells which kernel wrote it.
fn attend_with(call: impl FnOnce(&mut OpArgs<'_>) -> Result<DispatchResult<()>, DispatchError>) -> Outcome {
    let q = Tensor::zeros(&[2, 4, 2, 8], DType::F32).unwrap();
    let mut out = Tensor::zeros(&[2, 4, 2, 8], DType::F32).unwrap();
    let mut args = OpArgs::Attention(AttentionArgs {
        query: q.view(),
        key: q.view(),
        value: q.view(),
        output: out.view_mut(),
        layout: Layout::Bshd,
        is_causal: true,
        scale: None,
        window_size: None,
    });
    let result = call(&mut args);
    (result, out.as_slice::<f32>().unwrap()[0])
}

fn attend(orchestrator: &DispatchOrchestrator, mode: Option<DispatchMode>) -> Outcome {
    attend_with(|args| orchestrator.dispatch_with_mode(CAUSAL, args, None, mode))
}

fn normalise_with(call: impl FnOnce(&mut OpArgs<'_>) -> Result<DispatchResult<()>, DispatchError>) -> Outcome {
    let input = Tensor::zeros(&[2, 8], DType::F32).unwrap();
    let weight = Tensor::zeros(&[8], DType::F32).unwrap();
    let mut out = Tensor::zeros(&[2, 8], DType::F32).unwrap();
    let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), out.view_mut(), 1e-6));
    let result = call(&mut args);
    (result, out.as_slice::<f32>().unwrap()[0])
}

fn normalise(orchestrator: &DispatchOrchestrator, mode: Option<DispatchMode>) -> Outcome {
    normalise_with(|args| orchestrator.dispatch_with_mode(RMS, args, None, mode))
}

fn kernel_and_mark(outcome: Outcome) -> (String, f32, bool) {
    let (result, mark) = outcome;
    let result = result.unwrap();
    (result.kernel_id.as_str().to_owned(), mark, result.was_fallback)
}

/// Two attention kernels and two norm kernels. The static map routes to the low-priority
/// ones (mark 1 and 3); DYNAMIC's priorities choose the others (mark 2 and 4), so the
/// output says which mode answered.
fn kernels() -> Arc<KernelRegistry> {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(attention_spec("orch_flash_attn_v2", 10), attention_marking(1.0)).unwrap();
    kernels.register_with_impl(attention_spec("orch_sdpa", 100), attention_marking(2.0)).unwrap();
    kernels.register_with_impl(norm_spec("orch_liger_rms_norm", 10), norm_marking(3.0)).unwrap();
    kernels.register_with_impl(norm_spec("orch_rms_norm_plain", 100), norm_marking(4.0)).unwrap();
    kernels
}

fn config(mode: DispatchMode) -> layerzero::config::DispatchConfigBuilder {
    DispatchConfig::builder().mode(mode).static_kernel("attention.causal", "orch_flash_attn_v2")
}

fn backends() -> Arc<BackendRegistry> {
    Arc::new(BackendRegistry::detect())
}

/// A dispatcher that answers every call with one kernel id and counts its calls: the
/// stand-in for a mode whose real dispatcher lives elsewhere (HOT_RELOAD) and for a custom
/// one (seed 003's `CustomDispatcher`).
struct Fixed {
    mode: DispatchMode,
    kernel: KernelId,
    calls: AtomicU64,
    fail: bool,
}

impl Fixed {
    fn new(mode: DispatchMode, kernel: &str, fail: bool) -> Arc<Fixed> {
        Arc::new(Fixed { mode, kernel: KernelId::new(kernel).unwrap(), calls: AtomicU64::new(0), fail })
    }
}

impl Dispatcher for Fixed {
    fn dispatch(
        &self,
        operation: Operation,
        _args: &mut OpArgs<'_>,
        _context: Option<&SelectionContext>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail {
            return Err(DispatchError::FallbackChainExhausted {
                operation,
                attempts: vec![(self.kernel, AttemptError::Panicked("fixed failure".into()))],
            });
        }
        Ok(DispatchResult {
            output: (),
            kernel_id: self.kernel,
            timing: DispatchTiming::default(),
            was_fallback: false,
        })
    }

    fn kernel_for(&self, _: Operation, _: &SelectionContext) -> Result<KernelId, DispatchError> {
        Ok(self.kernel)
    }

    fn mode(&self) -> DispatchMode {
        self.mode
    }
}

#[test]
fn create_orchestrator_from_a_static_map_config() {
    // Seed 003, "Using Config-Based Static Dispatch".
    let config = config(DispatchMode::Static)
        .static_kernel("rms_norm", "orch_liger_rms_norm")
        .enable_telemetry(false)
        .circuit_breaker_enabled(false)
        .build()
        .unwrap();
    let orchestrator = create_orchestrator(config, kernels(), backends()).unwrap();
    assert_eq!(orchestrator.registered_modes(), [DispatchMode::Static, DispatchMode::Dynamic]);
    assert_eq!((orchestrator.default_mode(), orchestrator.mode()), (DispatchMode::Static, DispatchMode::Static));
    let result = attend_with(|args| orchestrator.dispatch(CAUSAL, args, None));
    assert_eq!(kernel_and_mark(result), ("orch_flash_attn_v2".into(), 1.0, false));
    assert_eq!(kernel_and_mark(normalise(&orchestrator, None)), ("orch_liger_rms_norm".into(), 3.0, false));
    let ctx = SelectionContext::builder().batch_size(2).dtype(DType::F32).build().unwrap();
    assert_eq!(orchestrator.kernel_for(CAUSAL, &ctx).unwrap().as_str(), "orch_flash_attn_v2");

    // A map naming an unregistered kernel fails the whole construction, naming it.
    let bad = DispatchConfig::builder().static_kernel("rope", "orch_never_registered").build().unwrap();
    let err = create_orchestrator(bad, kernels(), backends()).unwrap_err();
    assert!(err.to_string().contains("orch_never_registered"), "{err}");
}

#[test]
fn a_call_can_override_the_mode_and_the_default_can_change() {
    // Seed 001, "Mode Switching".
    let orchestrator =
        create_orchestrator(config(DispatchMode::Static).build().unwrap(), kernels(), backends()).unwrap();
    assert_eq!(kernel_and_mark(attend(&orchestrator, None)).1, 1.0, "default STATIC: the map's kernel");
    assert_eq!(kernel_and_mark(attend(&orchestrator, Some(DispatchMode::Dynamic))).1, 2.0, "override: DYNAMIC");
    assert_eq!(kernel_and_mark(attend(&orchestrator, Some(DispatchMode::Static))).1, 1.0);

    orchestrator.set_default_mode(DispatchMode::Dynamic);
    assert_eq!(orchestrator.default_mode(), DispatchMode::Dynamic);
    assert_eq!(kernel_and_mark(attend(&orchestrator, None)).1, 2.0, "the new default");
    assert_eq!(kernel_and_mark(attend(&orchestrator, Some(DispatchMode::Static))).1, 1.0, "override still wins");
}

#[test]
fn auto_chooses_static_for_mapped_operations_and_the_default_otherwise() {
    // Seed 001, "AUTO Mode": a static map for known operations, dynamic for the rest.
    let orchestrator = create_orchestrator(config(DispatchMode::Auto).build().unwrap(), kernels(), backends()).unwrap();
    assert_eq!(orchestrator.default_mode(), DispatchMode::Auto);
    assert_eq!(orchestrator.select_mode(CAUSAL), DispatchMode::Static);
    assert_eq!(orchestrator.select_mode(RMS), DispatchMode::Dynamic, "default AUTO resolves to DYNAMIC");
    assert_eq!(kernel_and_mark(attend(&orchestrator, None)), ("orch_flash_attn_v2".into(), 1.0, false));
    assert_eq!(kernel_and_mark(normalise(&orchestrator, None)), ("orch_rms_norm_plain".into(), 4.0, false));
    assert_eq!(orchestrator.modes_for(CAUSAL, None), [DispatchMode::Static, DispatchMode::Dynamic]);
    assert_eq!(
        orchestrator.modes_for(RMS, None),
        [DispatchMode::Dynamic, DispatchMode::Config, DispatchMode::Static],
        "the resolved mode, its chain, then AUTO's chain"
    );

    // `DispatchOrchestrator(config, default_mode=CONFIG)`: AUTO's last rule is the default.
    let config_default =
        DispatchOrchestrator::new(&config(DispatchMode::Auto).build().unwrap(), DispatchMode::Config).unwrap();
    assert_eq!(config_default.select_mode(RMS), DispatchMode::Config);
    assert_eq!(config_default.select_mode(CAUSAL), DispatchMode::Static);
}

#[test]
fn auto_chooses_hot_reload_when_the_config_watches_a_file_and_falls_back_while_it_is_absent() {
    let rules = std::env::temp_dir().join(format!("layerzero-orchestrator-{}.yaml", std::process::id()));
    std::fs::write(&rules, "version: \"1.0\"\n").unwrap();
    let config = DispatchConfig::builder()
        .mode(DispatchMode::HotReload)
        .config_path(Some(rules.to_string_lossy().into_owned()))
        .watch_interval_seconds(0.05)
        .build()
        .unwrap();
    // create_orchestrator builds a HOT_RELOAD dispatcher that already watches the file.
    let orchestrator = create_orchestrator(config, kernels(), backends()).unwrap();
    assert_eq!(orchestrator.registered_modes(), [DispatchMode::Dynamic, DispatchMode::HotReload, DispatchMode::Config]);
    assert_eq!(orchestrator.select_mode(RMS), DispatchMode::HotReload);
    let (kernel, mark, was_fallback) = kernel_and_mark(normalise(&orchestrator, Some(DispatchMode::Auto)));
    assert_eq!((kernel.as_str(), mark, was_fallback), ("orch_rms_norm_plain", 4.0, false));

    // An edit to the file reaches AUTO's calls without a restart.
    std::fs::write(&rules, "version: \"1.0\"\nkernel_locks:\n  rms_norm: orch_liger_rms_norm\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (kernel, mark, _) = kernel_and_mark(normalise(&orchestrator, Some(DispatchMode::Auto)));
        if (kernel.as_str(), mark) == ("orch_liger_rms_norm", 3.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the edit was not picked up in 10 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // DYNAMIC and CONFIG follow the live rules too: a call naming them sees the lock.
    for mode in [DispatchMode::Dynamic, DispatchMode::Config] {
        let (kernel, mark, _) = kernel_and_mark(normalise(&orchestrator, Some(mode)));
        assert_eq!((kernel.as_str(), mark), ("orch_liger_rms_norm", 3.0), "{mode}");
    }

    // Without a HOT_RELOAD dispatcher, HOT_RELOAD's chain (DYNAMIC) answers with the live
    // rules, marked a fallback.
    assert!(orchestrator.unregister_dispatcher(DispatchMode::HotReload).is_some());
    let (kernel, mark, was_fallback) = kernel_and_mark(normalise(&orchestrator, Some(DispatchMode::Auto)));
    assert_eq!((kernel.as_str(), mark, was_fallback), ("orch_liger_rms_norm", 3.0, true));

    // Another registered in its place gets AUTO's calls.
    let hot = Fixed::new(DispatchMode::HotReload, "orch_hot_reload_kernel", false);
    assert!(orchestrator.register_dispatcher(DispatchMode::HotReload, hot.clone()).unwrap().is_none());
    let (result, _) = normalise(&orchestrator, Some(DispatchMode::Auto));
    let result = result.unwrap();
    assert_eq!((result.kernel_id.as_str(), result.was_fallback), ("orch_hot_reload_kernel", false));
    assert_eq!(hot.calls.load(Ordering::Relaxed), 1);
    let _ = std::fs::remove_file(rules);
}

#[test]
fn a_failing_or_missing_mode_falls_back_along_the_chain() {
    // STATIC's only kernel fails: STATIC → DYNAMIC answers.
    let kernels = kernels();
    kernels.register_with_impl(attention_spec("orch_broken_static", 1), attention_failing()).unwrap();
    let config = DispatchConfig::builder()
        .mode(DispatchMode::Static)
        .static_kernel("attention.causal", "orch_broken_static")
        .build()
        .unwrap();
    let orchestrator = create_orchestrator(config, kernels.clone(), backends()).unwrap();
    assert_eq!(kernel_and_mark(attend(&orchestrator, None)), ("orch_sdpa".into(), 2.0, true));

    // With the chain emptied, STATIC's own error comes back unchanged.
    orchestrator.set_mode_fallback_chain(DispatchMode::Static, []);
    assert_eq!(orchestrator.mode_fallback_chain(DispatchMode::Static), []);
    let err = attend(&orchestrator, None).0.unwrap_err();
    assert!(
        matches!(&err, DispatchError::FallbackChainExhausted { attempts, .. }
            if attempts[0].0.as_str() == "orch_broken_static" && matches!(attempts[0].1, AttemptError::Failed(_))),
        "{err:?}"
    );

    // Every mode of the chain fails: each mode's error, in order.
    orchestrator.set_mode_fallback_chain(DispatchMode::Static, [DispatchMode::Dynamic]);
    let broken_dynamic = Fixed::new(DispatchMode::Dynamic, "orch_broken_dynamic", true);
    orchestrator.register_dispatcher(DispatchMode::Dynamic, broken_dynamic.clone()).unwrap();
    let err = attend(&orchestrator, None).0.unwrap_err();
    match &err {
        DispatchError::ModeFallbackExhausted { operation, attempts } => {
            assert_eq!(*operation, CAUSAL);
            let modes: Vec<DispatchMode> = attempts.iter().map(|(mode, _)| *mode).collect();
            assert_eq!(modes, [DispatchMode::Static, DispatchMode::Dynamic]);
        }
        other => panic!("expected ModeFallbackExhausted, got {other:?}"),
    }
    assert!(err.to_string().starts_with("every mode failed for `attention.causal`: STATIC: "), "{err}");

    // A missing mode is passed over: no STATIC dispatcher, STATIC → DYNAMIC.
    let orchestrator = DispatchOrchestrator::new(&DispatchConfig::default(), DispatchMode::Static).unwrap();
    let dynamic = Fixed::new(DispatchMode::Dynamic, "orch_fixed_dynamic", false);
    orchestrator.register_dispatcher(DispatchMode::Dynamic, dynamic.clone()).unwrap();
    let (result, _) = attend(&orchestrator, None);
    assert_eq!(result.unwrap().kernel_id.as_str(), "orch_fixed_dynamic");

    // CONFIG → DYNAMIC; DYNAMIC → CONFIG, one level deep: DYNAMIC failing with no CONFIG
    // returns DYNAMIC's error as it is, and STATIC (AUTO's chain) is not tried for an
    // explicit mode.
    let static_fixed = Fixed::new(DispatchMode::Static, "orch_fixed_static", false);
    orchestrator.register_dispatcher(DispatchMode::Static, static_fixed.clone()).unwrap();
    orchestrator.register_dispatcher(DispatchMode::Dynamic, broken_dynamic.clone()).unwrap();
    let err = attend(&orchestrator, Some(DispatchMode::Dynamic)).0.unwrap_err();
    assert!(matches!(err, DispatchError::FallbackChainExhausted { .. }), "{err:?}");
    let calls_before = static_fixed.calls.load(Ordering::Relaxed);
    assert_eq!(calls_before, 0);
    // AUTO resolving to DYNAMIC (default AUTO, operation not in the map) does add STATIC.
    orchestrator.set_default_mode(DispatchMode::Auto);
    let (result, _) = attend(&orchestrator, None);
    let result = result.unwrap();
    assert_eq!((result.kernel_id.as_str(), result.was_fallback), ("orch_fixed_static", true));

    // Arguments of the wrong family are not retried in another mode.
    let real = create_orchestrator(DispatchConfig::default(), kernels, backends()).unwrap();
    real.register_dispatcher(DispatchMode::Config, static_fixed.clone()).unwrap();
    let err = normalise_with(|args| real.dispatch(CAUSAL, args, None)).0.unwrap_err();
    assert!(matches!(err, DispatchError::WrongArguments { .. }), "{err:?}");
    assert_eq!(static_fixed.calls.load(Ordering::Relaxed), 1, "CONFIG was not asked");

    // Nothing registered at all.
    let empty = DispatchOrchestrator::new(&DispatchConfig::default(), DispatchMode::Auto).unwrap();
    let err = attend(&empty, None).0.unwrap_err();
    assert_eq!(
        err,
        DispatchError::NoDispatcher {
            operation: CAUSAL,
            modes: vec![DispatchMode::Dynamic, DispatchMode::Config, DispatchMode::Static]
        }
    );
    assert_eq!(empty.get_telemetry().no_dispatcher_count, 1);
}

#[test]
fn a_custom_dispatcher_joins_the_orchestrator() {
    // Seed 003's `CustomDispatcher`, registered as the DYNAMIC mode of an orchestrator
    // whose STATIC mode comes from the builder.
    let orchestrator = DispatchOrchestrator::new(&DispatchConfig::default(), DispatchMode::Static).unwrap();
    let static_dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(attention_spec("orch_builder_flash", 50), attention_marking(7.0), CAUSAL, true)
        .build()
        .unwrap();
    orchestrator.register_dispatcher(DispatchMode::Static, Arc::new(static_dispatcher)).unwrap();
    let custom = Fixed::new(DispatchMode::Dynamic, "orch_custom_selector", false);
    let previous = orchestrator.register_dispatcher(DispatchMode::Dynamic, custom.clone()).unwrap();
    assert!(previous.is_none());
    assert_eq!(orchestrator.get_dispatcher(DispatchMode::Dynamic).unwrap().mode(), DispatchMode::Dynamic);
    assert_eq!(kernel_and_mark(attend(&orchestrator, None)).1, 7.0);
    // rms_norm has no STATIC route: STATIC → DYNAMIC, the custom dispatcher.
    let (result, _) = normalise(&orchestrator, None);
    assert_eq!(result.unwrap().kernel_id.as_str(), "orch_custom_selector");
    let telemetry = orchestrator.get_telemetry();
    assert_eq!(telemetry.mode(DispatchMode::Dynamic), None, "the custom dispatcher keeps no telemetry");
    assert_eq!(telemetry.mode(DispatchMode::Static).unwrap().error_count, 1, "STATIC had no route for rms_norm");
}

#[test]
fn telemetry_is_kept_per_mode_and_summed() {
    let config = config(DispatchMode::Auto).build().unwrap();
    let orchestrator = create_orchestrator(config, kernels(), backends()).unwrap();
    for _ in 0..3 {
        assert_eq!(kernel_and_mark(attend(&orchestrator, None)).1, 1.0); // STATIC
    }
    for _ in 0..5 {
        assert_eq!(kernel_and_mark(normalise(&orchestrator, None)).1, 4.0); // DYNAMIC
    }
    assert_eq!(kernel_and_mark(attend(&orchestrator, Some(DispatchMode::Dynamic))).1, 2.0);

    let telemetry: OrchestratorTelemetry = orchestrator.get_telemetry();
    assert_eq!(telemetry.default_mode, DispatchMode::Auto);
    let static_mode = telemetry.mode(DispatchMode::Static).unwrap();
    let dynamic_mode = telemetry.mode(DispatchMode::Dynamic).unwrap();
    assert_eq!((static_mode.dispatch_count, dynamic_mode.dispatch_count), (3, 6));
    assert_eq!(telemetry.total.dispatch_count, 9);
    assert_eq!(telemetry.total.success_count, 9);
    let kernel = |id: &str| telemetry.total.kernel(KernelId::new(id).unwrap()).map(|k| k.successes);
    assert_eq!(kernel("orch_flash_attn_v2"), Some(3));
    assert_eq!(kernel("orch_rms_norm_plain"), Some(5));
    assert_eq!(kernel("orch_sdpa"), Some(1));
    // Histograms merge exactly: the total's count is the modes' counts summed.
    assert_eq!(telemetry.total.total_latency.count, 9);
    assert!(telemetry.total.total_latency.p99_ns >= static_mode.total_latency.p50_ns);
    assert_eq!(telemetry.mode_fallback_count, 0);
    // Cache hits are DYNAMIC's (STATIC has no cache): rms_norm missed once, then hit four
    // times; attention in DYNAMIC missed once.
    assert_eq!((static_mode.cache_hits, static_mode.cache_hit_rate), (None, None));
    assert_eq!((dynamic_mode.cache_hits, dynamic_mode.cache_misses), (Some(4), Some(2)));
    assert_eq!((telemetry.total.cache_hits, telemetry.total.cache_misses), (Some(4), Some(2)));
    assert_eq!(telemetry.total.cache_hit_rate, Some(4.0 / 6.0));

    let json = serde_json::to_string(&telemetry).unwrap();
    assert_eq!(serde_json::from_str::<OrchestratorTelemetry>(&json).unwrap(), telemetry);
    // The orchestrator as a plain `Dispatcher` reports the total.
    let as_dispatcher: &dyn Dispatcher = &orchestrator;
    let total: TelemetrySnapshot = as_dispatcher.telemetry_snapshot().unwrap();
    assert_eq!(total.dispatch_count, 9);
}

#[test]
fn the_global_dispatcher_is_installed_once_and_serves_dispatch() {
    // The only test of this binary that touches the process-wide dispatcher.
    use layerzero::dispatch::{dispatch, dispatch_with_mode, get_global_dispatcher, init_global, init_global_from_env};

    let orchestrator = create_orchestrator(config(DispatchMode::Auto).build().unwrap(), kernels(), backends()).unwrap();
    let installed = init_global(orchestrator).unwrap();
    assert!(std::ptr::eq(installed, get_global_dispatcher()));

    // Seed 003, "Simple Dispatch with Global Orchestrator" and "Dispatch with Mode Override".
    let (result, mark) = attend_with(|args| dispatch(OperationType::AttentionCausal, args, None));
    assert_eq!((result.unwrap().kernel_id.as_str(), mark), ("orch_flash_attn_v2", 1.0));
    let (result, mark) = attend_with(|args| dispatch_with_mode(CAUSAL, args, None, DispatchMode::Dynamic));
    assert_eq!((result.unwrap().kernel_id.as_str(), mark), ("orch_sdpa", 2.0));
    // Seed 001, "Mode Switching", on the global dispatcher.
    get_global_dispatcher().set_default_mode(DispatchMode::Dynamic);
    assert_eq!(attend_with(|args| dispatch(CAUSAL, args, None)).1, 2.0);

    // A second installation is refused and changes nothing.
    let other = DispatchOrchestrator::new(&DispatchConfig::default(), DispatchMode::Static).unwrap();
    assert!(matches!(init_global(other), Err(DispatchError::GlobalAlreadyInitialized)));
    assert!(matches!(init_global_from_env(), Err(DispatchError::GlobalAlreadyInitialized)));
    assert_eq!(get_global_dispatcher().default_mode(), DispatchMode::Dynamic);
    assert_eq!(get_global_dispatcher().get_telemetry().total.dispatch_count, 3);
}

#[test]
fn calls_keep_answering_while_modes_are_registered_and_switched() {
    // 4 threads dispatch in AUTO while the main thread swaps the STATIC dispatcher in and
    // out and switches the default mode: every call is answered (STATIC, or DYNAMIC by
    // fallback or by choice), and the counts add up.
    let kernels = kernels();
    let config = config(DispatchMode::Auto).build().unwrap();
    let orchestrator = Arc::new(create_orchestrator(config, kernels, backends()).unwrap());
    let static_dispatcher = orchestrator.get_dispatcher(DispatchMode::Static).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let orchestrator = Arc::clone(&orchestrator);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) || calls < 1000 {
                    let (result, mark) = attend(&orchestrator, None);
                    let result = result.unwrap();
                    assert!(mark == 1.0 || mark == 2.0, "{mark}");
                    assert_eq!(result.kernel_id.as_str(), if mark == 1.0 { "orch_flash_attn_v2" } else { "orch_sdpa" });
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    for round in 0..200 {
        if round % 2 == 0 {
            orchestrator.unregister_dispatcher(DispatchMode::Static);
        } else {
            orchestrator.register_dispatcher(DispatchMode::Static, Arc::clone(&static_dispatcher)).unwrap();
        }
        orchestrator.set_default_mode(if round % 3 == 0 { DispatchMode::Dynamic } else { DispatchMode::Auto });
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let calls: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let telemetry = orchestrator.get_telemetry();
    let static_count = static_dispatcher.telemetry_snapshot().unwrap().dispatch_count;
    let dynamic_count = telemetry.mode(DispatchMode::Dynamic).unwrap().dispatch_count;
    assert_eq!(static_count + dynamic_count, calls, "each call answered once, by one mode");
    assert_eq!(telemetry.total.error_count, 0);
}
