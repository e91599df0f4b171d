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
    /// rms_norm, fusing the residual add into its pass when there is one.
    Rms,
    /// The residual add over every row first, then rms_norm over the sums.
    RmsAfterAdd,
    Layer,
}

impl Kind {
    fn kernel(self) -> &'static str {
        match self {
            Kind::Rms => "cpu.rms_norm",
            Kind::RmsAfterAdd => "cpu.rms_norm.add_then_norm",
            Kind::Layer => "cpu.layer_norm",
        }
    }
}

/// RMS normalisation, `x / sqrt(mean(x²) + eps) · weight`, for float32, float16 and
/// bfloat16 (accumulated in f32). Contiguous input and output; rows run in parallel.
///
/// With a [`residual`](NormArgs::residual), the add is fused into the same pass over each
/// row: `s = input + residual.input` is rounded to the dtype and written to
/// `residual.output`, and the rounded `s` is normalised into `output`.
pub fn rms_norm(args: &mut NormArgs<'_>) -> KernelResult {
    normalise(args, Kind::Rms)
}

/// The residual add then rms_norm, unfused: a first pass over every row writes
/// `residual.output = input + residual.input` (rounded to the dtype), a second normalises
/// `residual.output` into `output`. The same results as [`rms_norm`] with a residual, with
/// the sums read back from memory: the baseline the fused pass is measured against, and a
/// kernel a rule can choose. Without a residual it is [`rms_norm`].
pub fn rms_norm_add_then_norm(args: &mut NormArgs<'_>) -> KernelResult {
    normalise(args, Kind::RmsAfterAdd)
}

/// Layer normalisation, `(x − mean) / sqrt(var + eps) · weight + bias`, for float32,
/// float16 and bfloat16 (two passes over each row, accumulated in f32). Takes no residual.
pub fn layer_norm(args: &mut NormArgs<'_>) -> KernelResult {
    normalise(args, Kind::Layer)
}

fn normalise(args: &mut NormArgs<'_>, kind: Kind) -> KernelResult {
    let kernel = kind.kernel();
    let input = Meta::of("input", &args.input);
    let weight = Meta::of("weight", &args.weight);
    let output = Meta::of_mut("output", &args.output);
    let bias = args.bias.as_ref().map(|b| Meta::of("bias", b));
    let residual = args
        .residual
        .as_ref()
        .map(|r| [Meta::of("residual.input", &r.input), Meta::of_mut("residual.output", &r.output)]);
    let mut all = vec![&input, &weight, &output];
    all.extend(bias.as_ref());
    all.extend(residual.iter().flatten());
    let dtype = same_host_dtype(kernel, &all)?;
    let Some(&hidden) = input.dims.last() else {
        return Err(invalid(format!("{kernel}: input must have at least one dimension, it is a scalar")));
    };
    dims_equal(kernel, &weight, &[hidden], "the input's last dimension")?;
    dims_equal(kernel, &output, input.dims, "the input's shape")?;
    match (&bias, kind) {
        (Some(_), Kind::Rms | Kind::RmsAfterAdd) => {
            return Err(invalid(format!("{kernel}: rms_norm takes no bias, one was given")));
        }
        (Some(bias), Kind::Layer) => dims_equal(kernel, bias, &[hidden], "the input's last dimension")?,
        (None, _) => {}
    }
    match (&residual, kind) {
        (Some(_), Kind::Layer) => {
            return Err(invalid(format!("{kernel}: layer_norm takes no residual, one was given")));
        }
        (Some(tensors), _) => {
            for t in tensors {
                dims_equal(kernel, t, input.dims, "the input's shape")?;
            }
        }
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
    let min_rows = rows_per_task(hidden);
    let input = args.input.as_slice::<T>()?;
    let output = args.output.as_mut_slice::<T>()?;
    match (&mut args.residual, kind) {
        (Some(residual), Kind::Rms) => {
            let (stream, sums) = (residual.input.as_slice::<T>()?, residual.output.as_mut_slice::<T>()?);
            let rows = input.par_chunks(hidden).zip(stream.par_chunks(hidden)).zip(sums.par_chunks_mut(hidden));
            rows.zip(output.par_chunks_mut(hidden)).with_min_len(min_rows).for_each_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(x_buf, r_buf, out_buf), (((x, r), sum), y)| {
                    add_row(x, r, sum, x_buf, r_buf);
                    // The sum as stored (rounded to T) is what gets normalised.
                    let s = T::widen(sum, x_buf);
                    T::write_through(y, out_buf, |y| simd::rms_row(s, &weight, eps, y));
                },
            );
        }
        // add_then_norm (layer_norm refused a residual above): every sum first, then the
        // norm of the sums as stored.
        (Some(residual), _) => {
            let (stream, sums) = (residual.input.as_slice::<T>()?, residual.output.as_mut_slice::<T>()?);
            let rows = input.par_chunks(hidden).zip(stream.par_chunks(hidden)).zip(sums.par_chunks_mut(hidden));
            rows.with_min_len(min_rows).for_each_init(
                || (Vec::new(), Vec::new()),
                |(x_buf, r_buf), ((x, r), sum)| add_row(x, r, sum, x_buf, r_buf),
            );
            normalise_rows(sums, output, &weight, None, eps, hidden, Kind::Rms);
        }
        (None, _) => normalise_rows(input, output, &weight, bias.as_deref(), eps, hidden, kind),
    }
    Ok(())
}

/// `sum = x + r` for one row, added in f32 and rounded to `T`.
fn add_row<T: CpuFloat>(x: &[T], r: &[T], sum: &mut [T], x_buf: &mut Vec<f32>, r_buf: &mut Vec<f32>) {
    let r = T::widen(r, r_buf);
    T::write_through(sum, x_buf, |s| {
        T::widen_into(x, s);
        for (s, r) in s.iter_mut().zip(r) {
            *s += r;
        }
    });
}

/// Normalises each row of `input` into `output`, rows in parallel.
fn normalise_rows<T: CpuFloat>(
    input: &[T],
    output: &mut [T],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
    hidden: usize,
    kind: Kind,
) {
    input.par_chunks(hidden).zip(output.par_chunks_mut(hidden)).with_min_len(rows_per_task(hidden)).for_each_init(
        || (Vec::new(), Vec::new()),
        |(in_buf, out_buf), (x, y)| {
            let x = T::widen(x, in_buf);
            T::write_through(y, out_buf, |y| match kind {
                Kind::Rms | Kind::RmsAfterAdd => simd::rms_row(x, weight, eps, y),
                Kind::Layer => simd::layer_row(x, weight, bias, eps, y),
            });
        },
    );
}
