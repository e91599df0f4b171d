//! The selection pipeline end to end: locks, lists, rules, scores, fallbacks, the cache
//! and explain.

// Helpers outside `#[test]` functions build fixtures that are known to be valid.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use layerzero_config::{CompiledConfig, ConfigSchema, DispatchConfig};
use layerzero_registry::{BackendHealth, BackendInfo, BackendRegistry, KernelRegistry};
use layerzero_select::{RejectReason, SelectionEngine, SelectionError, SelectionReason};
use layerzero_types::{Constraint, DType, KernelSpec, Operation, OperationType, Platform, SelectionContext};

const CAUSAL: OperationType = OperationType::AttentionCausal;

fn op(o: OperationType) -> Operation {
    o.into()
}

/// Kernels of seed 000's example, with constraints of their own.
fn registry() -> Arc<KernelRegistry> {
    let kernels = Arc::new(KernelRegistry::new());
    let attention = |id: &str, platform| {
        KernelSpec::new(id, platform).unwrap().for_operation(CAUSAL).for_operation(OperationType::AttentionPrefill)
    };
    let mut flash =
        attention("flash_attention_v2", Platform::Cpu).with_dtypes([DType::F16, DType::BF16]).with_priority(80);
    flash.constraints.causal = layerzero_types::Support::Supported;
    let mut xformers = attention("xformers_memory_efficient", Platform::Cpu).with_priority(60);
    xformers.constraints.causal = layerzero_types::Support::Supported;
    let mut sdpa = attention("torch_sdpa", Platform::Cpu).with_priority(10);
    sdpa.constraints.causal = layerzero_types::Support::Supported;
    let mut debug = attention("attn_debug", Platform::Cpu).with_priority(999);
    debug.constraints.causal = layerzero_types::Support::Supported;
    let gpu_only = attention("attn_gpu", Platform::Cuda).with_priority(1000).with_backend("cuda");
    kernels.register_all([flash, xformers, sdpa, debug, gpu_only]).unwrap();
    kernels
}

fn engine_with(yaml: &str) -> SelectionEngine {
    let policy = ConfigSchema.load(yaml).unwrap().compiled;
    SelectionEngine::with_config(registry(), Arc::new(BackendRegistry::detect()), &DispatchConfig::default(), policy)
}

fn ctx(dtype: DType, batch: u32, seq: u32) -> SelectionContext {
    SelectionContext::builder().dtype(dtype).batch_size(batch).seq_len(seq).is_causal(true).build().unwrap()
}

const POLICY: &str = r#"
version: "1.0"
defaults: {fallback_policy: torch_sdpa}
dispatch_rules:
  - {operation: "attention.*", conditions: {batch_size_gte: 8, dtype: [float16, bfloat16]}, kernel: flash_attention_v2, priority: 100}
  - {operation: attention.causal, conditions: {seq_len_gt: 8192}, kernel: xformers_memory_efficient, priority: 100}
  - {operation: attention.causal, conditions: {seq_len_gt: 4096}, kernel: flash_attention_v2, priority: 90}
kernel_denies: ["*_debug"]
fallback_chains:
  attention.causal: [flash_attention_v2, xformers_memory_efficient, attn_debug, torch_sdpa]
"#;

#[test]
fn rules_by_priority_then_file_order_and_fallbacks_in_chain_order() {
    let engine = engine_with(POLICY);
    let s = engine.select(op(CAUSAL), &ctx(DType::F16, 16, 16384)).unwrap();
    // Rules 0 and 1 both match at priority 100: file order decides.
    assert_eq!((s.kernel.as_str(), s.reason), ("flash_attention_v2", SelectionReason::Rule { rule: 0 }));
    let fallbacks: Vec<_> = s.fallbacks().iter().map(|k| k.as_str()).collect();
    // The chain, without the chosen kernel and the denied one, then the policy (already there).
    assert_eq!(fallbacks, ["xformers_memory_efficient", "torch_sdpa"]);

    let small = engine.select(op(CAUSAL), &ctx(DType::F16, 1, 16384)).unwrap();
    assert_eq!(small.reason, SelectionReason::Rule { rule: 1 });
}

#[test]
fn a_rule_whose_kernel_cannot_run_is_skipped_and_explained() {
    let engine = engine_with(POLICY);
    // float32: flash_attention_v2 cannot run it, so rule 2 (seq_len > 4096) is skipped.
    let c = ctx(DType::F32, 1, 5000);
    let s = engine.select(op(CAUSAL), &c).unwrap();
    assert_eq!((s.kernel.as_str(), s.reason), ("xformers_memory_efficient", SelectionReason::Score { priority: 60 }));
    let explanation = engine.explain_selection(op(CAUSAL), &c);
    insta::assert_snapshot!("explain_skipped_rule", explanation.to_string());
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["rules"][2]["outcome"], "kernel_unusable");
    assert_eq!(json["candidates"][3]["verdict"], "rejected");
    assert_eq!(json["chosen"], "xformers_memory_efficient");
}

#[test]
fn scores_decide_without_rules_and_ties_go_to_the_first_registered() {
    let engine = SelectionEngine::new(registry(), Arc::new(BackendRegistry::detect()));
    // attn_gpu (1000) has no backend here; attn_debug (999) is not denied without a policy.
    let s = engine.select(op(CAUSAL), &ctx(DType::F32, 1, 1)).unwrap();
    assert_eq!((s.kernel.as_str(), s.reason), ("attn_debug", SelectionReason::Score { priority: 999 }));

    let kernels = Arc::new(KernelRegistry::new());
    for id in ["tie_first", "tie_second"] {
        kernels.register(KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::Rope)).unwrap();
    }
    let engine = SelectionEngine::new(kernels, Arc::new(BackendRegistry::detect()));
    let s = engine.select(op(OperationType::Rope), &SelectionContext::default()).unwrap();
    assert_eq!(s.kernel.as_str(), "tie_first");
}

#[test]
fn locks_force_their_kernel_exact_beats_pattern_and_fail_closed() {
    let engine = engine_with(
        r#"
version: "1.0"
dispatch_rules:
  - {operation: "attention.*", kernel: torch_sdpa, priority: 1000}
kernel_locks:
  "attention.*": xformers_memory_efficient
  attention.prefill: flash_attention_v2
"#,
    );
    let causal = engine.select(op(CAUSAL), &ctx(DType::F16, 1, 1)).unwrap();
    assert_eq!(
        (causal.kernel.as_str(), causal.reason),
        ("xformers_memory_efficient", SelectionReason::Lock { lock: 0 })
    );
    let prefill = engine.select(op(OperationType::AttentionPrefill), &ctx(DType::F16, 1, 1)).unwrap();
    assert_eq!((prefill.kernel.as_str(), prefill.reason), ("flash_attention_v2", SelectionReason::Lock { lock: 1 }));

    // The locked kernel cannot run float32: an error naming the lock and the constraint,
    // not the rule's or the score's kernel.
    let err = engine.select(op(OperationType::AttentionPrefill), &ctx(DType::F32, 1, 1)).unwrap_err();
    match &err {
        SelectionError::LockUnsatisfiable { lock, kernel, reason: RejectReason::Constraint(r), .. } => {
            assert_eq!(
                (lock.as_str(), kernel.as_str(), r.constraint),
                ("attention.prefill", "flash_attention_v2", Constraint::DType)
            );
        }
        other => panic!("expected a lock error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "kernel_locks[\"attention.prefill\"] forces flash_attention_v2 for attention.prefill, which cannot be used: \
         dtype requires one of [float16, bfloat16], context has float32"
    );
    insta::assert_snapshot!(
        "explain_failed_lock",
        engine.explain_selection(op(OperationType::AttentionPrefill), &ctx(DType::F32, 1, 1)).to_string()
    );
}

#[test]
fn locks_on_denied_or_unregistered_kernels_fail_closed_too() {
    let denied =
        engine_with("version: \"1.0\"\nkernel_locks: {attention.causal: attn_debug}\nkernel_denies: [\"*_debug\"]\n");
    let err = denied.select(op(CAUSAL), &ctx(DType::F16, 1, 1)).unwrap_err();
    assert!(matches!(err, SelectionError::LockUnsatisfiable { reason: RejectReason::Denied { .. }, .. }), "{err}");
    let missing = engine_with("version: \"1.0\"\nkernel_locks: {attention.causal: nowhere_kernel}\n");
    let err = missing.select(op(CAUSAL), &ctx(DType::F16, 1, 1)).unwrap_err();
    assert!(matches!(err, SelectionError::LockUnsatisfiable { reason: RejectReason::NotRegistered, .. }), "{err}");
    let gpu = engine_with("version: \"1.0\"\nkernel_locks: {attention.causal: attn_gpu}\n");
    let err = gpu.select(op(CAUSAL), &ctx(DType::F16, 1, 1)).unwrap_err();
    assert!(matches!(err, SelectionError::LockUnsatisfiable { reason: RejectReason::BackendUnavailable { .. }, .. }));
}

#[test]
fn allows_and_denies_filter_rules_scores_and_fallbacks() {
    let engine = engine_with(
        r#"
version: "1.0"
dispatch_rules:
  - {operation: attention.causal, kernel: flash_attention_v2, priority: 100}
kernel_allows: ["xformers_*", "torch_*"]
fallback_chains: {attention.causal: [flash_attention_v2, torch_sdpa]}
"#,
    );
    let s = engine.select(op(CAUSAL), &ctx(DType::F16, 1, 1)).unwrap();
    assert_eq!(s.kernel.as_str(), "xformers_memory_efficient");
    assert_eq!(s.fallbacks().iter().map(|k| k.as_str()).collect::<Vec<_>>(), ["torch_sdpa"]);
}

#[test]
fn when_nothing_can_run_the_error_lists_every_candidate() {
    let engine = engine_with("version: \"1.0\"\nkernel_denies: [\"*\"]\n");
    let err = engine.select(op(CAUSAL), &ctx(DType::F16, 1, 1)).unwrap_err();
    let SelectionError::NoValidKernel { rejections, .. } = &err else { panic!("{err:?}") };
    assert_eq!(rejections.len(), 5);
    assert!(err.to_string().contains("attn_gpu: denied by kernel_denies pattern '*'"), "{err}");
    let none = engine.select(op(OperationType::Matmul), &SelectionContext::default()).unwrap_err();
    assert_eq!(none.to_string(), "no kernel is registered for matmul");
}

#[test]
fn the_cache_answers_like_the_engine_and_follows_policy_swaps_and_registrations() {
    let kernels = registry();
    let backends = Arc::new(BackendRegistry::detect());
    let engine = SelectionEngine::with_config(
        Arc::clone(&kernels),
        Arc::clone(&backends),
        &DispatchConfig::default(),
        CompiledConfig::default(),
    );
    let c = ctx(DType::F16, 16, 16384);
    let first = engine.select(op(CAUSAL), &c).unwrap();
    assert_eq!(engine.cache_len(), 1);
    assert_eq!(engine.select(op(CAUSAL), &c).unwrap(), first);
    assert_eq!(engine.select_uncached(op(CAUSAL), &c).unwrap(), first);

    let version = engine.set_policy(ConfigSchema.load(POLICY).unwrap().compiled);
    assert_eq!(version, 2);
    let after_swap = engine.select(op(CAUSAL), &c).unwrap();
    assert_eq!(after_swap.reason, SelectionReason::Rule { rule: 0 });

    kernels
        .register(
            KernelSpec::new("late_kernel", Platform::Cpu)
                .unwrap()
                .for_operation(CAUSAL)
                .with_priority(1000)
                .with_constraints(layerzero_types::KernelConstraints {
                    causal: layerzero_types::Support::Supported,
                    ..Default::default()
                }),
        )
        .unwrap();
    let no_rule = ctx(DType::F32, 1, 1);
    assert_eq!(engine.select(op(CAUSAL), &no_rule).unwrap().kernel.as_str(), "late_kernel");

    // Health is not in the key: invalidate after changing it.
    backends.set_health("cpu", BackendHealth::Unavailable { reason: "drained".into() }).unwrap();
    engine.invalidate();
    assert!(engine.select(op(CAUSAL), &no_rule).is_err());
    let _ = BackendInfo { name: String::new(), platform: Platform::Cpu, version: None, devices: Vec::new() };
}

#[test]
fn a_disabled_cache_stores_nothing() {
    let config = DispatchConfig::builder().enable_cache(false).build().unwrap();
    let engine = SelectionEngine::with_config(
        registry(),
        Arc::new(BackendRegistry::detect()),
        &config,
        CompiledConfig::default(),
    );
    engine.select(op(CAUSAL), &ctx(DType::F16, 1, 1)).unwrap();
    assert_eq!(engine.cache_len(), 0);
}

#[test]
fn the_seed_example_selects_against_its_own_kernel_names() {
    let loaded = ConfigSchema.load(include_str!("../../../configs/kernels.seed-example.yaml")).unwrap();
    let engine = SelectionEngine::with_config(
        registry(),
        Arc::new(BackendRegistry::detect()),
        &DispatchConfig::default(),
        loaded.compiled,
    );
    // flash_attention_v2 is outside the example's own allow list: its prefill lock fails closed.
    let err = engine.select(op(OperationType::AttentionPrefill), &ctx(DType::F16, 16, 128)).unwrap_err();
    assert!(matches!(err, SelectionError::LockUnsatisfiable { reason: RejectReason::NotAllowed, .. }), "{err}");
    insta::assert_snapshot!(
        "explain_seed_example_causal",
        engine.explain_selection(op(CAUSAL), &ctx(DType::F16, 16, 16384)).to_string()
    );
}
