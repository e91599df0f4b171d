//! Seed 003's dispatch examples, adapted to Rust with test kernels: static dispatch three
//! ways, dynamic dispatch with its engine and breakers, config-driven dispatch with reload
//! and explain, breaker errors through dispatch, a custom dispatcher, and the metrics an
//! inference server reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use layerzero::config::{DispatchConfig, DispatchMode};
use layerzero::dispatch::{
    ConfigDrivenDispatcher, DispatchError, Dispatcher, StaticDispatcher, StaticDispatcherBuilder,
    create_config_dispatcher, create_dynamic_dispatcher,
};
use layerzero::registry::{BackendRegistry, KernelRegistry, StaticKernelRegistry};
use layerzero::types::{
    AttentionArgs, DType, DispatchResult, DispatchTiming, KernelError, KernelId, KernelImpl, KernelResult, KernelSpec,
    Layout, NormArgs, OpArgs, Operation, OperationType, Platform, SelectionContext, Support, Tensor,
};

/// An attention kernel that writes `mark` everywhere, so a test can see which one ran.
fn attention_marking(mark: f32) -> KernelImpl {
    KernelImpl::attention(move |args: &mut AttentionArgs<'_>| -> KernelResult {
        args.output.as_mut_slice::<f32>()?.fill(mark);
        Ok(())
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

fn norm_spec(id: &str) -> KernelSpec {
    KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::NormRms)
}

const CAUSAL: Operation = Operation::Known(OperationType::AttentionCausal);
const RMS: Operation = Operation::Known(OperationType::NormRms);

/// Seed 003's attention inputs, shrunk: `batch` × 4 tokens × 2 heads × 8 channels, f32.
fn attend(dispatcher: &dyn Dispatcher, batch: usize) -> (Result<DispatchResult<()>, DispatchError>, f32) {
    let q = Tensor::zeros(&[batch, 4, 2, 8], DType::F32).unwrap();
    let mut out = Tensor::zeros(&[batch, 4, 2, 8], DType::F32).unwrap();
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
    let result = dispatcher.dispatch(CAUSAL, &mut args, None);
    (result, out.as_slice::<f32>().unwrap()[0])
}

fn normalise(dispatcher: &dyn Dispatcher) -> (Result<DispatchResult<()>, DispatchError>, f32) {
    let input = Tensor::zeros(&[2, 8], DType::F32).unwrap();
    let weight = Tensor::zeros(&[8], DType::F32).unwrap();
    let mut out = Tensor::zeros(&[2, 8], DType::F32).unwrap();
    let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), out.view_mut(), 1e-6));
    let result = dispatcher.dispatch(RMS, &mut args, None);
    (result, out.as_slice::<f32>().unwrap()[0])
}

#[test]
fn static_dispatch_with_the_builder() {
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(attention_spec("flash_attn_v2_attention", 50), attention_marking(1.0), CAUSAL, true)
        .with_kernel(attention_spec("torch_sdpa_attention", 50), attention_marking(2.0), CAUSAL, false)
        .with_kernel(
            attention_spec("flash_attn_v2_attention", 50),
            attention_marking(1.0),
            OperationType::AttentionCross,
            true,
        )
        .with_kernel(norm_spec("liger_rms_norm"), norm_marking(3.0), RMS, true)
        .with_config(DispatchConfig::builder().mode(DispatchMode::Static).enable_telemetry(true).build().unwrap())
        .build()
        .unwrap();
    let (result, mark) = attend(&dispatcher, 8);
    let result = result.unwrap();
    assert_eq!((result.kernel_id.as_str(), mark, result.was_fallback), ("flash_attn_v2_attention", 1.0, false));
    assert!(result.timing.total_ns > 0, "record_timing is on by default");
    let timing = result.timing;
    assert_eq!(timing.selection_ns + timing.execution_ns, timing.total_ns, "{timing:?}");
    let (result, mark) = normalise(&dispatcher);
    assert_eq!((result.unwrap().kernel_id.as_str(), mark), ("liger_rms_norm", 3.0));
    let kernels: Vec<&str> = dispatcher.kernels(CAUSAL).map(KernelId::as_str).collect();
    assert_eq!(kernels, ["flash_attn_v2_attention", "torch_sdpa_attention"]);
    assert_eq!(dispatcher.mode(), DispatchMode::Static);
    assert_eq!(dispatcher.telemetry().dispatch_count, 2);
}

#[test]
fn static_dispatch_from_a_frozen_static_kernel_registry() {
    let kernels = KernelRegistry::new();
    kernels.register_with_impl(attention_spec("flash_attn_v2_attention", 50), attention_marking(1.0)).unwrap();
    kernels.register_with_impl(attention_spec("torch_sdpa_attention", 50), attention_marking(2.0)).unwrap();
    let mut registry = StaticKernelRegistry::new();
    registry.register_from_spec(attention_spec("torch_sdpa_attention", 50), false).unwrap();
    registry.register_from_spec(attention_spec("flash_attn_v2_attention", 50), true).unwrap();
    registry.freeze();

    let config = DispatchConfig::builder().mode(DispatchMode::Static).build().unwrap();
    let dispatcher = StaticDispatcher::from_registry(&config, &registry, &kernels).unwrap();
    let (result, mark) = attend(&dispatcher, 1);
    assert_eq!((result.unwrap().kernel_id.as_str(), mark), ("flash_attn_v2_attention", 1.0));
    let chain: Vec<&str> = dispatcher.kernels(CAUSAL).map(KernelId::as_str).collect();
    assert_eq!(chain, ["flash_attn_v2_attention", "torch_sdpa_attention"], "the default first");
}

#[test]
fn static_dispatch_from_the_static_kernel_map() {
    let kernels = KernelRegistry::new();
    kernels.register_with_impl(attention_spec("flash_attn_v2_attention", 50), attention_marking(1.0)).unwrap();
    kernels.register_with_impl(norm_spec("liger_rms_norm"), norm_marking(3.0)).unwrap();
    let config = DispatchConfig::builder()
        .mode(DispatchMode::Static)
        .static_kernel("attention.causal", "flash_attn_v2_attention")
        .static_kernel("rms_norm", "liger_rms_norm")
        .enable_telemetry(false)
        .circuit_breaker_enabled(false)
        .build()
        .unwrap();
    let dispatcher = StaticDispatcher::from_config(&config, &kernels).unwrap();
    assert_eq!(attend(&dispatcher, 2).1, 1.0);
    assert_eq!(normalise(&dispatcher).1, 3.0);
    assert!(dispatcher.circuit_breakers().is_none());
    assert_eq!(dispatcher.telemetry().dispatch_count, 0, "telemetry is off");

    // A map naming a kernel without code is refused, naming it.
    let missing = DispatchConfig::builder().static_kernel("rope", "never_registered_rope").build().unwrap();
    let err = StaticDispatcher::from_config(&missing, &kernels).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid static dispatcher: static_kernel_map[\"rope\"]: kernel `never_registered_rope` is not registered"
    );
}

#[test]
fn dynamic_dispatch_exposes_its_engine_and_breakers() {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(attention_spec("seed_flash_attn", 100), attention_marking(1.0)).unwrap();
    kernels.register_with_impl(attention_spec("seed_sdpa", 10), attention_marking(2.0)).unwrap();
    let config = DispatchConfig::builder()
        .mode(DispatchMode::Dynamic)
        .enable_cache(true)
        .cache_size(10_000)
        .cache_ttl_seconds(3600.0)
        .circuit_breaker_enabled(true)
        .failure_threshold(5)
        .recovery_timeout_seconds(30.0)
        .build()
        .unwrap();
    let dispatcher =
        create_dynamic_dispatcher(kernels.clone(), Arc::new(BackendRegistry::detect()), config, true).unwrap();
    for _ in 0..3 {
        let (result, mark) = attend(&dispatcher, 8);
        assert_eq!((result.unwrap().kernel_id.as_str(), mark), ("seed_flash_attn", 1.0));
    }
    assert_eq!(dispatcher.selection_engine().cache_len(), 1, "one context, one cached answer");
    let breaker = dispatcher.circuit_breakers().unwrap().get_circuit(KernelId::new("seed_flash_attn").unwrap());
    assert_eq!(breaker.stats().successes, 3);

    // A kernel registered later is seen at once: the registry version is part of the key.
    kernels.register_with_impl(attention_spec("seed_flash_attn_v3", 200), attention_marking(4.0)).unwrap();
    assert_eq!(attend(&dispatcher, 8).1, 4.0);
    let ctx = SelectionContext::builder().batch_size(8).dtype(DType::F32).build().unwrap();
    assert_eq!(dispatcher.kernel_for(CAUSAL, &ctx).unwrap().as_str(), "seed_flash_attn_v3");

    // Without the cache, the same answers.
    let uncached =
        create_dynamic_dispatcher(kernels, Arc::new(BackendRegistry::detect()), DispatchConfig::default(), false)
            .unwrap();
    assert_eq!(attend(&uncached, 8).1, 4.0);
    assert_eq!(uncached.selection_engine().cache_len(), 0);
}

const RULES: &str = r#"
version: "1.0"
defaults:
  fallback_policy: seed_torch_sdpa
  default_priority: 50
dispatch_rules:
  - operation: "attention.*"
    conditions:
      batch_size_gte: 8
      dtype: [float32, bfloat16]
    kernel: seed_flash_attention_v2
    priority: 100
  - operation: "attention.causal"
    conditions:
      seq_len_gt: 8192
    kernel: seed_xformers
    priority: 90
kernel_denies:
  - "*_experimental"
fallback_chains:
  attention.causal:
    - seed_flash_attention_v2
    - seed_xformers
    - seed_torch_sdpa
"#;

fn write_rules(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("layerzero-dispatch-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn seed_kernels() -> (Arc<KernelRegistry>, Arc<AtomicU64>) {
    let kernels = Arc::new(KernelRegistry::new());
    let flash_calls = Arc::new(AtomicU64::new(0));
    let calls = Arc::clone(&flash_calls);
    // FlashAttention fails on its third call and later: the chain takes over.
    let flash = KernelImpl::attention(move |args: &mut AttentionArgs<'_>| -> KernelResult {
        if calls.fetch_add(1, Ordering::Relaxed) >= 2 {
            return Err(KernelError::Backend { backend: "test", message: "out of shared memory".into() });
        }
        args.output.as_mut_slice::<f32>()?.fill(1.0);
        Ok(())
    });
    kernels.register_with_impl(attention_spec("seed_flash_attention_v2", 10), flash).unwrap();
    kernels.register_with_impl(attention_spec("seed_xformers", 20), attention_marking(3.0)).unwrap();
    kernels.register_with_impl(attention_spec("seed_torch_sdpa", 30), attention_marking(2.0)).unwrap();
    kernels.register_with_impl(attention_spec("seed_flash_experimental", 1000), attention_marking(9.0)).unwrap();
    (kernels, flash_calls)
}

#[test]
fn config_driven_dispatch_follows_the_rules_reloads_and_explains() {
    let (kernels, _) = seed_kernels();
    let path = write_rules("kernels.yaml", RULES);
    let dispatcher = create_config_dispatcher(&path, kernels, 10_000, 60.0).unwrap();
    assert_eq!(dispatcher.mode(), DispatchMode::Config);

    // Batch 8: the rule picks FlashAttention. Batch 1: no rule; the denied experimental
    // kernel never runs, and the highest priority left (sdpa, 30) does.
    assert_eq!(attend(&dispatcher, 8).1, 1.0);
    assert_eq!(attend(&dispatcher, 1).1, 2.0);

    let ctx = SelectionContext::builder().batch_size(8).dtype(DType::F32).build().unwrap();
    let explanation = dispatcher.explain_selection(CAUSAL, &ctx).to_string();
    assert!(explanation.contains("seed_flash_attention_v2"), "{explanation}");
    assert!(explanation.contains("denied by kernel_denies pattern '*_experimental'"), "{explanation}");

    // Reload: xformers for big batches. An invalid file changes nothing.
    let version = dispatcher.policy_version();
    let reloaded =
        write_rules("kernels-v2.yaml", &RULES.replace("kernel: seed_flash_attention_v2", "kernel: seed_xformers"));
    assert_eq!(dispatcher.reload_config(&reloaded).unwrap(), version + 1);
    assert_eq!(attend(&dispatcher, 8).1, 3.0);
    let broken = write_rules("broken.yaml", "version: \"2.0\"\n");
    assert!(matches!(dispatcher.reload_config(&broken), Err(DispatchError::Config(_))));
    assert_eq!(dispatcher.policy_version(), version + 1);
    assert_eq!(attend(&dispatcher, 8).1, 3.0);
}

#[test]
fn circuit_breaker_errors_through_dispatch() {
    let (kernels, flash_calls) = seed_kernels();
    let policy = layerzero::config::ConfigSchema.load(RULES).unwrap().compiled;
    let config = DispatchConfig::builder()
        .mode(DispatchMode::Config)
        .circuit_breaker_enabled(true)
        .failure_threshold(2)
        .recovery_timeout_seconds(30.0)
        .enable_fallback(true)
        .max_fallback_attempts(3)
        .log_fallbacks(false)
        .build()
        .unwrap();
    let dispatcher =
        ConfigDrivenDispatcher::new(kernels, Arc::new(BackendRegistry::detect()), config, policy, None).unwrap();
    assert_eq!(attend(&dispatcher, 8).1, 1.0);
    assert_eq!(attend(&dispatcher, 8).1, 1.0);
    // FlashAttention now fails; the chain's next kernel answers, and after two failures
    // its breaker opens, so it is no longer called.
    for _ in 0..4 {
        let (result, mark) = attend(&dispatcher, 8);
        let result = result.unwrap();
        assert_eq!((result.kernel_id.as_str(), result.was_fallback, mark), ("seed_xformers", true, 3.0));
    }
    assert_eq!(flash_calls.load(Ordering::Relaxed), 4);
    let telemetry = dispatcher.telemetry();
    assert_eq!((telemetry.dispatch_count, telemetry.fallback_count), (6, 4));
    let flash = telemetry.kernels.iter().find(|k| k.kernel == "seed_flash_attention_v2").unwrap();
    assert_eq!((flash.successes, flash.failures, flash.circuit_open_skips), (2, 2, 2));
}

/// Seed 003's `CustomDispatcher`: any type can be a dispatcher.
struct CustomDispatcher {
    kernels: Vec<(KernelId, KernelImpl)>,
    call_count: AtomicU64,
}

impl Dispatcher for CustomDispatcher {
    fn dispatch(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        self.call_count.fetch_add(1, Ordering::Relaxed);
        let context = match context {
            Some(context) => *context,
            None => args.context().map_err(|e| DispatchError::InvalidArguments { operation, source: e.into() })?,
        };
        let kernel = self.kernel_for(operation, &context)?;
        let code = &self.kernels.iter().find(|(id, _)| *id == kernel).ok_or(DispatchError::NoKernel { operation })?.1;
        code.call(args).map_err(|e| DispatchError::InvalidArguments { operation, source: e })?;
        Ok(DispatchResult { output: (), kernel_id: kernel, timing: DispatchTiming::default(), was_fallback: false })
    }

    fn kernel_for(&self, operation: Operation, context: &SelectionContext) -> Result<KernelId, DispatchError> {
        // The custom selector: big batches get the second kernel.
        let index = usize::from(context.batch_size.unwrap_or(1) >= 8);
        self.kernels.get(index).map(|(id, _)| *id).ok_or(DispatchError::NoKernel { operation })
    }

    fn mode(&self) -> DispatchMode {
        DispatchMode::Dynamic
    }
}

#[test]
fn a_custom_dispatcher_implements_the_trait() {
    let custom = CustomDispatcher {
        kernels: vec![
            (KernelId::new("custom_small").unwrap(), attention_marking(5.0)),
            (KernelId::new("custom_large").unwrap(), attention_marking(6.0)),
        ],
        call_count: AtomicU64::new(0),
    };
    let boxed: Box<dyn Dispatcher> = Box::new(custom);
    assert_eq!(attend(boxed.as_ref(), 1).1, 5.0);
    assert_eq!(attend(boxed.as_ref(), 8).1, 6.0);
}

#[test]
fn inference_server_metrics() {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(attention_spec("metrics_attention", 50), attention_marking(1.0)).unwrap();
    let dispatcher =
        create_dynamic_dispatcher(kernels, Arc::new(BackendRegistry::detect()), DispatchConfig::default(), true)
            .unwrap();
    // Warm up with representative shapes, then serve.
    for batch in [1, 8, 32] {
        attend(&dispatcher, batch).0.unwrap();
    }
    for _ in 0..97 {
        attend(&dispatcher, 8).0.unwrap();
    }
    let telemetry = dispatcher.telemetry();
    assert_eq!((telemetry.dispatch_count, telemetry.fallback_count), (100, 0));
    assert_eq!(telemetry.total_latency.count, 100);
    assert!(telemetry.total_latency.p50_ns > 0 && telemetry.total_latency.p50_ns <= telemetry.total_latency.p99_ns);
    assert!(telemetry.selection_latency.p99_ns <= telemetry.total_latency.max_ns);
    // Seed 001: "Monitor cache hit rates via telemetry". Three shapes missed once each.
    assert_eq!((telemetry.cache_hits, telemetry.cache_misses), (Some(97), Some(3)));
    assert_eq!(telemetry.cache_hit_rate, Some(0.97));
    let attention = telemetry.kernels.iter().find(|k| k.kernel == "metrics_attention").unwrap();
    assert_eq!((attention.successes, attention.failures), (100, 0));
}
