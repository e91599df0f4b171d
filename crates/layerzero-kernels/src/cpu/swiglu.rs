//! `silu(gate) · up`, from two tensors or one fused gate-up tensor.

use half::bf16;
use layerzero_types::{DType, KernelResult, SwigluArgs, SwigluInput};
use rayon::prelude::*;

use super::check::{Meta, contiguous, dims_equal, invalid, same_host_dtype};
use super::float::{CpuFloat, with_float_type};
use super::simd;

const KERNEL: &str = "cpu.swiglu";
/// Elements per parallel task for separate inputs (fits L1 with three f32 buffers).
const CHUNK: usize = 4096;

/// SwiGLU, `silu(gate) · up`, float32/float16/bfloat16 (computed in f32): `gate` and `up`
/// `[.., intermediate]`, or one fused `[.., 2 · intermediate]` tensor with the gate in the
/// first half of each row; `output` is `[.., intermediate]`. Contiguous tensors.
pub fn swiglu(args: &mut SwigluArgs<'_>) -> KernelResult {
    let output = Meta::of_mut("output", &args.output);
    let (dtype, row) = match &args.input {
        SwigluInput::Separate { gate, up } => {
            let (gate, up) = (Meta::of("gate", gate), Meta::of("up", up));
            let dtype = same_host_dtype(KERNEL, &[&gate, &up, &output])?;
            dims_equal(KERNEL, &up, gate.dims, "the gate's shape")?;
            dims_equal(KERNEL, &output, gate.dims, "the gate's shape")?;
            for t in [&gate, &up, &output] {
                contiguous(KERNEL, t)?;
            }
            (dtype, None)
        }
        SwigluInput::Fused(gate_up) => {
            let gate_up = Meta::of("gate_up", gate_up);
            let dtype = same_host_dtype(KERNEL, &[&gate_up, &output])?;
            let Some((&width, lead)) = gate_up.dims.split_last() else {
                return Err(invalid(format!("{KERNEL}: gate_up must have at least one dimension, it is a scalar")));
            };
            if width % 2 != 0 {
                return Err(invalid(format!(
                    "{KERNEL}: gate_up's last dimension must be even (gate then up), it is {width}"
                )));
            }
            let mut expected = lead.to_vec();
            expected.push(width / 2);
            dims_equal(KERNEL, &output, &expected, "gate_up's with the last dimension halved")?;
            for t in [&gate_up, &output] {
                contiguous(KERNEL, t)?;
            }
            (dtype, Some(width / 2))
        }
    };
    if args.output.numel() == 0 {
        return Ok(());
    }
    with_float_type!(dtype, KERNEL, |T| run::<T>(args, row))
}

fn run<T: CpuFloat>(args: &mut SwigluArgs<'_>, fused_width: Option<usize>) -> KernelResult {
    match (&args.input, fused_width) {
        (SwigluInput::Fused(gate_up), Some(width)) => {
            let gate_up = gate_up.as_slice::<T>()?;
            let output = args.output.as_mut_slice::<T>()?;
            let min_rows = super::rows_per_task(width);
            gate_up.par_chunks(2 * width).zip(output.par_chunks_mut(width)).with_min_len(min_rows).for_each_init(
                Buffers::default,
                |bufs, (gate_up, out)| {
                    let (gate, up) = gate_up.split_at(width);
                    // Rows can be long: work through them in L1-sized pieces.
                    for ((g, u), o) in gate.chunks(CHUNK).zip(up.chunks(CHUNK)).zip(out.chunks_mut(CHUNK)) {
                        bufs.apply::<T>(g, u, o);
                    }
                },
            );
        }
        (SwigluInput::Separate { gate, up }, _) => {
            let (gate, up) = (gate.as_slice::<T>()?, up.as_slice::<T>()?);
            let output = args.output.as_mut_slice::<T>()?;
            gate.par_chunks(CHUNK)
                .zip(up.par_chunks(CHUNK))
                .zip(output.par_chunks_mut(CHUNK))
                .with_min_len(64)
                .for_each_init(Buffers::default, |bufs, ((g, u), o)| bufs.apply::<T>(g, u, o));
        }
        (SwigluInput::Fused(_), None) => {
            return Err(invalid(format!("{KERNEL}: internal: fused input without its width")));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Buffers {
    gate: Vec<f32>,
    up: Vec<f32>,
    out: Vec<f32>,
}

impl Buffers {
    fn apply<T: CpuFloat>(&mut self, gate: &[T], up: &[T], out: &mut [T]) {
        // bfloat16 converts inline, in one pass, rather than through the f32 buffers.
        if T::DTYPE == DType::BF16
            && let (Ok(gate), Ok(up)) =
                (bytemuck::try_cast_slice::<T, bf16>(gate), bytemuck::try_cast_slice::<T, bf16>(up))
            && let Ok(out) = bytemuck::try_cast_slice_mut::<T, bf16>(out)
        {
            simd::silu_mul_bf16(out, gate, up);
            return;
        }
        let gate = T::widen(gate, &mut self.gate);
        let up = T::widen(up, &mut self.up);
        T::write_through(out, &mut self.out, |out| simd::silu_mul(out, gate, up));
    }
}
