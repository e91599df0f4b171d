//! Rules files through the `layerzero` facade: the seeds' example and error fixtures in
//! `configs/`, and a selection decided by them.

use std::sync::Arc;

use layerzero::config::{ConfigSchema, DispatchConfig};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::selection_engine::{SelectionEngine, SelectionReason};
use layerzero::types::{DType, KernelSpec, OperationType, Platform, SelectionContext, Support};

const CONFIGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");

#[test]
fn the_seed_error_fixture_reports_every_seed_error_with_its_line() {
    let errors =
        ConfigSchema.validate(&std::fs::read_to_string(format!("{CONFIGS}/invalid/seed-errors.yaml")).unwrap());
    let located: Vec<String> = errors.iter().map(|e| e.located()).collect();
    assert_eq!(
        located,
        [
            "3:10: version: Unsupported version, must be one of ['1.0'] (2.0)",
            "6:5: dispatch_rules[0].operation: Missing required field",
            "7:14: dispatch_rules[0].conditions.dtype: Invalid dtype (fp16); did you mean 'float16'?",
            "8:19: dispatch_rules[0].conditions.batch_size: Must be integer (8)",
            "9:13: dispatch_rules[0].kernel: Must be string (123)",
            "10:15: dispatch_rules[0].priority: Must be between 0 and 1000 (2000)",
        ]
    );
}

#[test]
fn the_seed_example_decides_a_selection() {
    let loaded = ConfigSchema.load_file(format!("{CONFIGS}/kernels.seed-example.yaml")).unwrap();
    assert!(!loaded.warnings.is_empty(), "the seed's allow list contradicts its rules");

    let kernels = Arc::new(KernelRegistry::new());
    for (id, priority) in [("liger_rms_norm", 10), ("triton_rms_norm", 20), ("torch_rms_norm", 5)] {
        let spec =
            KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::NormRms).with_priority(priority);
        kernels.register(spec).unwrap();
    }
    let attention = KernelSpec::new("torch_sdpa", Platform::Cpu).unwrap().for_operation(OperationType::AttentionCausal);
    let mut attention = attention;
    attention.constraints.causal = Support::Supported;
    kernels.register(attention).unwrap();
    let engine = SelectionEngine::with_config(
        kernels,
        Arc::new(BackendRegistry::detect()),
        &DispatchConfig::default(),
        loaded.compiled,
    );

    // rms_norm's rule wants platform cuda: on a CPU context the score decides, and the
    // chain gives the fallbacks (torch_rms_norm is outside the allow list).
    let cpu = SelectionContext::builder().dtype(DType::F32).platform(Platform::Cpu).build().unwrap();
    let s = engine.select(OperationType::NormRms.into(), &cpu).unwrap();
    assert_eq!((s.kernel.as_str(), s.reason), ("triton_rms_norm", SelectionReason::Score { priority: 20 }));
    assert_eq!(s.fallbacks().iter().map(|k| k.as_str()).collect::<Vec<_>>(), ["liger_rms_norm"]);

    let causal = SelectionContext::builder().is_causal(true).build().unwrap();
    let s = engine.select(OperationType::AttentionCausal.into(), &causal).unwrap();
    assert_eq!(s.kernel.as_str(), "torch_sdpa");
}
