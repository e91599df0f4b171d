//! `rms_norm` and `layer_norm` over the last dimension, rows in parallel.

use layerzero_types::{KernelResult, NormArgs};
use rayon::prelude::*;

use super::check::{Meta, contiguous, dims_equal, invalid, same_host_dtype};
use super::float::{CpuFloat, with_float_type};
use super::rows_per_task;
use super::simd;

/// Which normalisation a call computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rms,
    Layer,
}

impl Kind {
    fn kernel(self) -> &'static str {
        match self {
            Kind::Rms => "cpu.rms_norm",
            Kind::Layer => "cpu.layer_norm",
        }
    }
}

/// RMS normalisation, `x / sqrt(mean(x²) + eps) · weight`, for float32, float16 and
/// bfloat16 (accumulated in f32). Contiguous input and output; rows run in parallel.
pub fn rms_norm(args: &mut NormArgs<'_>) -> KernelResult {
    normalise(args, Kind::Rms)
}

/// Layer normalisation, `(x − mean) / sqrt(var + eps) · weight + bias`, for float32,
/// float16 and bfloat16 (two passes over each row, accumulated in f32).
pub fn layer_norm(args: &mut NormArgs<'_>) -> KernelResult {
    normalise(args, Kind::Layer)
}

fn normalise(args: &mut NormArgs<'_>, kind: Kind) -> KernelResult {
    let kernel = kind.kernel();
    let input = Meta::of("input", &args.input);
    let weight = Meta::of("weight", &args.weight);
    let output = Meta::of_mut("output", &args.output);
    let bias = args.bias.as_ref().map(|b| Meta::of("bias", b));
    let mut all = vec![&input, &weight, &output];
    all.extend(bias.as_ref());
    let dtype = same_host_dtype(kernel, &all)?;
    let Some(&hidden) = input.dims.last() else {
        return Err(invalid(format!("{kernel}: input must have at least one dimension, it is a scalar")));
    };
    dims_equal(kernel, &weight, &[hidden], "the input's last dimension")?;
    dims_equal(kernel, &output, input.dims, "the input's shape")?;
    match (&bias, kind) {
        (Some(_), Kind::Rms) => return Err(invalid(format!("{kernel}: rms_norm takes no bias, one was given"))),
        (Some(bias), Kind::Layer) => dims_equal(kernel, bias, &[hidden], "the input's last dimension")?,
        (None, _) => {}
    }
    if !(args.eps.is_finite() && args.eps >= 0.0) {
        return Err(invalid(format!("{kernel}: eps must be finite and non-negative, it is {}", args.eps)));
    }
    for t in &all {
        contiguous(kernel, t)?;
    }
    if hidden == 0 || args.input.numel() == 0 {
        return Ok(());
    }
    with_float_type!(dtype, kernel, |T| run::<T>(args, kind))
}

fn run<T: CpuFloat>(args: &mut NormArgs<'_>, kind: Kind) -> KernelResult {
    let input = args.input.as_slice::<T>()?;
    let hidden = args.weight.numel();
    let widen_all = |v: &[T]| {
        let mut out = vec![0f32; v.len()];
        T::widen_into(v, &mut out);
        out
    };
    let weight = widen_all(args.weight.as_slice::<T>()?);
    let bias = match &args.bias {
        Some(b) => Some(widen_all(b.as_slice::<T>()?)),
        None => None,
    };
    let eps = args.eps;
    let output = args.output.as_mut_slice::<T>()?;
    let min_rows = rows_per_task(hidden);
    input.par_chunks(hidden).zip(output.par_chunks_mut(hidden)).with_min_len(min_rows).for_each_init(
        || (Vec::new(), Vec::new()),
        |(in_buf, out_buf), (x, y)| {
            let x = T::widen(x, in_buf);
            T::write_through(y, out_buf, |y| match kind {
                Kind::Rms => simd::rms_row(x, &weight, eps, y),
                Kind::Layer => simd::layer_row(x, &weight, bias.as_deref(), eps, y),
            });
        },
    );
    Ok(())
}
