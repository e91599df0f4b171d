//! The CPU backend: every operation's kernels, each with the [`KernelSpec`] that says
//! truthfully what it runs.

mod attention;
mod check;
mod float;
mod gemm;
mod math;
mod matmul;
mod norm;
mod rope;
mod simd;
mod swiglu;

pub use attention::{attention_naive, attention_split_kv, attention_tiled};
pub use matmul::matmul;
pub use norm::{layer_norm, rms_norm, rms_norm_add_then_norm};
pub use rope::rope;
pub use swiglu::swiglu;

use layerzero_registry::{KernelRegistry, RegistryError};
use layerzero_types::{
    DimRange, KernelConstraints, KernelImpl, KernelSpec, Layout, OperationType, Platform, Support, TypesError,
};

use float::CPU_DTYPES;

/// Rows per parallel task for rows of `row_len` elements: at least ~256K elements a task,
/// so that rayon's per-task cost stays small next to the work.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (256 * 1024 / row_len.max(1)).max(1)
}

const ATTENTION_OPERATIONS: [OperationType; 6] = [
    OperationType::AttentionCausal,
    OperationType::AttentionFull,
    OperationType::AttentionCross,
    OperationType::AttentionSlidingWindow,
    OperationType::AttentionDecode,
    OperationType::AttentionPrefill,
];

fn spec(
    id: &str,
    operations: &[OperationType],
    priority: u32,
    constraints: KernelConstraints,
) -> Result<KernelSpec, TypesError> {
    let spec = operations
        .iter()
        .fold(KernelSpec::new(id, Platform::Cpu)?, |spec, &op| spec.for_operation(op))
        .with_priority(priority)
        .with_constraints(constraints);
    spec.validate()?;
    Ok(spec)
}

fn attention_constraints(deterministic: bool, seq_len_q: Option<DimRange>) -> KernelConstraints {
    KernelConstraints {
        dtypes: Some(CPU_DTYPES.to_vec()),
        seq_len_q,
        gqa: true,
        causal: Support::Supported,
        sliding_window: true,
        deterministic,
        layouts: Some(Layout::ALL.to_vec()),
        ..KernelConstraints::default()
    }
}

fn rowwise_constraints(deterministic: bool) -> KernelConstraints {
    KernelConstraints { dtypes: Some(CPU_DTYPES.to_vec()), deterministic, ..KernelConstraints::default() }
}

/// The rms_norm kernels also take a residual to add first.
fn rms_norm_constraints() -> KernelConstraints {
    KernelConstraints { residual: true, ..rowwise_constraints(true) }
}

/// Every CPU kernel: its spec and the code that runs it.
///
/// | id | operations | priority |
/// |---|---|---|
/// | `cpu.attention.split_kv` | all `attention.*`, `seq_len_q ≤ 64` | 70 |
/// | `cpu.attention.tiled` | all `attention.*` | 60 |
/// | `cpu.attention.naive` | all `attention.*` | 40 |
/// | `cpu.rms_norm` | `rms_norm`, with or without a residual (added in the same pass) | 50 |
/// | `cpu.rms_norm.add_then_norm` | `rms_norm`, with or without a residual (added in a pass of its own) | 40 |
/// | `cpu.layer_norm` | `layer_norm` | 50 |
/// | `cpu.rope` | `rope` (NeoX and interleaved) | 50 |
/// | `cpu.swiglu` | `swiglu` (separate or fused) | 50 |
/// | `cpu.matmul` | `matmul` | 50 |
///
/// All take float32, float16 and bfloat16; the attention kernels take GQA/MQA, causal or
/// not, sliding windows, BSHD and BHSD; both rms_norm kernels take a
/// [`residual`](layerzero_types::NormArgs::residual), `cpu.layer_norm` does not. Every kernel but `cpu.matmul` (whose thread split
/// is the `gemm` crate's) claims bit-identical results run to run.
pub fn cpu_kernels() -> Result<Vec<(KernelSpec, KernelImpl)>, TypesError> {
    use OperationType as Op;
    let decode_rows = Some(DimRange::up_to(attention::SPLIT_KV_MAX_SEQ_Q as u32));
    Ok(vec![
        (
            spec("cpu.attention.split_kv", &ATTENTION_OPERATIONS, 70, attention_constraints(true, decode_rows))?,
            KernelImpl::attention(attention_split_kv),
        ),
        (
            spec("cpu.attention.tiled", &ATTENTION_OPERATIONS, 60, attention_constraints(true, None))?,
            KernelImpl::attention(attention_tiled),
        ),
        (
            spec("cpu.attention.naive", &ATTENTION_OPERATIONS, 40, attention_constraints(true, None))?,
            KernelImpl::attention(attention_naive),
        ),
        (spec("cpu.rms_norm", &[Op::NormRms], 50, rms_norm_constraints())?, KernelImpl::norm(rms_norm)),
        (
            spec("cpu.rms_norm.add_then_norm", &[Op::NormRms], 40, rms_norm_constraints())?,
            KernelImpl::norm(rms_norm_add_then_norm),
        ),
        (spec("cpu.layer_norm", &[Op::NormLayer], 50, rowwise_constraints(true))?, KernelImpl::norm(layer_norm)),
        (spec("cpu.rope", &[Op::Rope], 50, rowwise_constraints(true))?, KernelImpl::rope(rope)),
        (spec("cpu.swiglu", &[Op::Swiglu], 50, rowwise_constraints(true))?, KernelImpl::swiglu(swiglu)),
        (spec("cpu.matmul", &[Op::Matmul], 50, rowwise_constraints(false))?, KernelImpl::matmul(matmul)),
    ])
}

/// The specs of [`cpu_kernels`], without the code.
pub fn cpu_kernel_specs() -> Result<Vec<KernelSpec>, TypesError> {
    Ok(cpu_kernels()?.into_iter().map(|(spec, _)| spec).collect())
}

/// Registers every CPU kernel with its code: all of them, or (on an error, such as an id
/// already taken) none.
pub fn register_cpu_kernels(registry: &KernelRegistry) -> Result<(), RegistryError> {
    let kernels = cpu_kernels()?;
    registry.register_all_with_impls(kernels)
}

#[cfg(test)]
mod tests {
    use layerzero_types::{DType, SelectionContext};

    use super::*;

    #[test]
    fn every_kernel_registers_with_its_code() {
        let registry = KernelRegistry::new();
        register_cpu_kernels(&registry).unwrap();
        let specs = cpu_kernel_specs().unwrap();
        assert_eq!(registry.len(), specs.len());
        for spec in &specs {
            assert!(registry.implementation(spec.id).is_some(), "{} has no code", spec.id);
        }
        // Registering twice changes nothing and says why.
        assert!(matches!(register_cpu_kernels(&registry), Err(RegistryError::DuplicateKernel { .. })));
        assert_eq!(registry.len(), specs.len());
    }

    #[test]
    fn specs_say_what_the_kernels_run() {
        let decode = SelectionContext::builder()
            .dtype(DType::BF16)
            .seq_len_q(1)
            .seq_len_k(4096)
            .num_heads(32)
            .num_kv_heads(8)
            .is_causal(true)
            .window_size(1024)
            .build()
            .unwrap();
        let prefill = SelectionContext::builder().dtype(DType::F16).seq_len_q(512).is_causal(true).build().unwrap();
        let int8 = SelectionContext::builder().dtype(DType::I8).build().unwrap();
        let residual = SelectionContext::builder().dtype(DType::BF16).fused_residual(true).build().unwrap();
        for spec in cpu_kernel_specs().unwrap() {
            assert!(spec.check(&int8).is_err(), "{} claims int8", spec.id);
            let rms_norm = spec.supports(OperationType::NormRms.into());
            assert_eq!(spec.check(&residual).is_ok(), rms_norm, "{} and a residual", spec.id);
            if spec.supports(OperationType::AttentionDecode.into()) {
                assert!(spec.check(&decode).is_ok(), "{}", spec.id);
                let long_prefill = spec.check(&prefill);
                assert_eq!(long_prefill.is_err(), spec.id.as_str() == "cpu.attention.split_kv", "{}", spec.id);
            }
        }
    }
}
