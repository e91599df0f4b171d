//! The element types kernels read and write, all computed through `f32`.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use layerzero_types::{DType, FloatElement};

/// An element type a CPU kernel handles: converted to and from `f32` a slice at a time, so
/// that the conversion vectorises (F16C for `f16` where the CPU has it, shifts for `bf16`).
pub(crate) trait CpuFloat: FloatElement {
    /// `src` as `f32`: borrowed for `f32`, converted into `buf` for the half types.
    fn widen<'a>(src: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32];
    /// Converts `src` into `dst` (equal lengths).
    fn widen_into(src: &[Self], dst: &mut [f32]);
    /// Converts `src` into `dst` (equal lengths), rounding to nearest even.
    fn narrow_into(src: &[f32], dst: &mut [Self]);
    /// Runs `compute` on an `f32` buffer of `dst.len()` elements that ends up in `dst`:
    /// `dst` itself for `f32`, `buf` then a conversion for the half types.
    fn write_through(dst: &mut [Self], buf: &mut Vec<f32>, compute: impl FnOnce(&mut [f32]));
    /// Runs `update` on `data` as `f32`, in place: directly for `f32`, through `buf` for
    /// the half types.
    fn update_in_place(data: &mut [Self], buf: &mut Vec<f32>, update: impl FnOnce(&mut [f32])) {
        let tmp = sized(buf, data.len());
        Self::widen_into(data, tmp);
        update(tmp);
        Self::narrow_into(tmp, data);
    }
}

fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

impl CpuFloat for f32 {
    fn widen<'a>(src: &'a [f32], _buf: &'a mut Vec<f32>) -> &'a [f32] {
        src
    }
    fn widen_into(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn narrow_into(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn write_through(dst: &mut [f32], _buf: &mut Vec<f32>, compute: impl FnOnce(&mut [f32])) {
        compute(dst);
    }
    fn update_in_place(data: &mut [f32], _buf: &mut Vec<f32>, update: impl FnOnce(&mut [f32])) {
        update(data);
    }
}

impl CpuFloat for f16 {
    fn widen<'a>(src: &'a [f16], buf: &'a mut Vec<f32>) -> &'a [f32] {
        let out = sized(buf, src.len());
        src.convert_to_f32_slice(out);
        out
    }
    fn widen_into(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn narrow_into(src: &[f32], dst: &mut [f16]) {
        dst.convert_from_f32_slice(src);
    }
    fn write_through(dst: &mut [f16], buf: &mut Vec<f32>, compute: impl FnOnce(&mut [f32])) {
        let tmp = sized(buf, dst.len());
        compute(tmp);
        dst.convert_from_f32_slice(tmp);
    }
}

impl CpuFloat for bf16 {
    fn widen<'a>(src: &'a [bf16], buf: &'a mut Vec<f32>) -> &'a [f32] {
        let out = sized(buf, src.len());
        Self::widen_into(src, out);
        out
    }
    fn widen_into(src: &[bf16], dst: &mut [f32]) {
        super::simd::bf16_widen(src, dst);
    }
    fn narrow_into(src: &[f32], dst: &mut [bf16]) {
        super::simd::bf16_narrow(src, dst);
    }
    fn write_through(dst: &mut [bf16], buf: &mut Vec<f32>, compute: impl FnOnce(&mut [f32])) {
        let tmp = sized(buf, dst.len());
        compute(tmp);
        Self::narrow_into(tmp, dst);
    }
}

/// The dtypes every CPU kernel accepts.
pub(crate) const CPU_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Runs `$body` with `$t` bound to the Rust type of `$dtype` (f32, f16 or bf16); any other
/// dtype is an [`Unsupported`](layerzero_types::KernelError::Unsupported) error.
macro_rules! with_float_type {
    ($dtype:expr, $kernel:expr, |$t:ident| $body:expr) => {
        match $dtype {
            layerzero_types::DType::F32 => {
                type $t = f32;
                $body
            }
            layerzero_types::DType::F16 => {
                type $t = half::f16;
                $body
            }
            layerzero_types::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            other => Err(layerzero_types::KernelError::Unsupported(format!(
                "{} takes float32, float16 or bfloat16, got {other}",
                $kernel
            ))),
        }
    };
}
pub(crate) use with_float_type;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_conversion_matches_half() {
        // Ties to even both ways (0x3F80_8000, 0x3F81_8000), ordinary values, tiny, huge,
        // repeated past one vector's width so both the vector loop and its tail run.
        let ties = [f32::from_bits(0x3F80_8000), f32::from_bits(0x3F81_8000), f32::from_bits(0x3F80_8001)];
        let base = [0.0f32, -0.0, 1.0, 2.7, -2.5e-20, 1e38, f32::INFINITY, 65504.0, f32::NAN];
        let values: Vec<f32> = base.into_iter().chain(ties).cycle().take(41).collect();
        let mut narrowed = vec![bf16::ZERO; values.len()];
        <bf16 as CpuFloat>::narrow_into(&values, &mut narrowed);
        let mut widened = vec![0f32; values.len()];
        <bf16 as CpuFloat>::widen_into(&narrowed, &mut widened);
        for ((&v, n), w) in values.iter().zip(&narrowed).zip(&widened) {
            if v.is_nan() {
                assert!(n.is_nan() && w.is_nan());
            } else {
                assert_eq!(n.to_bits(), bf16::from_f32(v).to_bits(), "{v}");
                assert_eq!(*w, bf16::from_f32(v).to_f32());
            }
        }
    }
}
