//! End-to-end tests of LayerZero live in `tests/` beside this file; this library holds the
//! few helpers several of them share.

use layerzero::types::{DType, KernelError, KernelImpl, KernelResult, KernelSpec, NormArgs, OperationType, Platform};

/// A CPU rms_norm kernel spec for float32 with this id and base priority.
pub fn rms_norm_spec(id: &str, priority: u32) -> KernelSpec {
    KernelSpec::new(id, Platform::Cpu)
        .expect("a valid id")
        .for_operation(OperationType::NormRms)
        .with_dtypes([DType::F32])
        .with_priority(priority)
}

/// Deterministic values in [-2, 2) (xorshift from `seed`): test inputs that are never all
/// zeros and the same on every run.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// A norm kernel that writes `value` into every output element, so a test can tell from
/// the output which kernel ran.
pub fn writes(value: f32) -> KernelImpl {
    KernelImpl::norm(move |args: &mut NormArgs<'_>| -> KernelResult {
        args.output.as_mut_slice::<f32>().map_err(KernelError::Tensor)?.fill(value);
        Ok(())
    })
}
