//! Rotary position embedding in place, NeoX (rotate-half) or interleaved (GPT-J) pairing.

use layerzero_types::{DType, KernelResult, Layout, RopeArgs, RopeStyle};
use rayon::prelude::*;

use super::check::{Meta, contiguous, invalid, same_host_dtype};
use super::float::{CpuFloat, with_float_type};
use super::{rows_per_task, simd};

const KERNEL: &str = "cpu.rope";

/// Rotary embedding of `x` in place: `[batch, seq, heads, head_dim]` (BSHD) or
/// `[batch, heads, seq, head_dim]` (BHSD), float32/float16/bfloat16, with float32 `cos`
/// and `sin` tables `[max_positions, rotary_dim / 2]`; channels past `rotary_dim` are
/// left alone. Contiguous `x` and tables; rows run in parallel.
pub fn rope(args: &mut RopeArgs<'_>) -> KernelResult {
    let x = Meta::of_mut("x", &args.x);
    let cos = Meta::of("cos", &args.cos);
    let sin = Meta::of("sin", &args.sin);
    same_host_dtype(KERNEL, &[&x])?;
    let tables = same_host_dtype(KERNEL, &[&cos, &sin])?;
    if tables != DType::F32 {
        return Err(invalid(format!("{KERNEL}: cos and sin must be float32 tables, they are {tables}")));
    }
    let &[batch, d1, d2, head_dim] = x.dims else {
        return Err(invalid(format!(
            "{KERNEL}: x must be 4-D [batch, seq, heads, head_dim] in {}, it has shape {:?}",
            args.layout, x.dims
        )));
    };
    let (seq, heads) = match args.layout {
        Layout::Bshd => (d1, d2),
        Layout::Bhsd => (d2, d1),
    };
    let &[max_positions, half_rotary] = cos.dims else {
        return Err(invalid(format!(
            "{KERNEL}: cos must be 2-D [max_positions, rotary_dim / 2], it has shape {:?}",
            cos.dims
        )));
    };
    if sin.dims != cos.dims {
        return Err(invalid(format!("{KERNEL}: sin must have the shape of cos {:?}, it has {:?}", cos.dims, sin.dims)));
    }
    if 2 * half_rotary > head_dim {
        return Err(invalid(format!(
            "{KERNEL}: rotary_dim (2 × {half_rotary} from the tables) must be at most head_dim {head_dim}"
        )));
    }
    let last = args.position_offset.checked_add(seq);
    if last.is_none_or(|last| last > max_positions) {
        return Err(invalid(format!(
            "{KERNEL}: positions {}..{} need {} table rows, the tables have {max_positions}",
            args.position_offset,
            args.position_offset.saturating_add(seq),
            args.position_offset.saturating_add(seq)
        )));
    }
    for t in [&x, &cos, &sin] {
        contiguous(KERNEL, t)?;
    }
    if batch * seq * heads == 0 || half_rotary == 0 {
        return Ok(());
    }
    let geometry = Geometry { seq, heads, head_dim, half_rotary, layout: args.layout, offset: args.position_offset };
    let dtype = args.x.dtype();
    with_float_type!(dtype, KERNEL, |T| run::<T>(args, geometry))
}

#[derive(Clone, Copy)]
struct Geometry {
    seq: usize,
    heads: usize,
    head_dim: usize,
    half_rotary: usize,
    layout: Layout,
    offset: usize,
}

impl Geometry {
    /// The sequence position of row `row` (one row is one head of one token).
    fn position(&self, row: usize) -> usize {
        let s = match self.layout {
            Layout::Bshd => (row / self.heads) % self.seq,
            Layout::Bhsd => row % self.seq,
        };
        self.offset + s
    }
}

fn run<T: CpuFloat>(args: &mut RopeArgs<'_>, g: Geometry) -> KernelResult {
    let cos = args.cos.as_slice::<f32>()?;
    let sin = args.sin.as_slice::<f32>()?;
    let style = args.style;
    let x = args.x.as_mut_slice::<T>()?;
    let half = g.half_rotary;
    let rotary = 2 * half;
    x.par_chunks_mut(g.head_dim).enumerate().with_min_len(rows_per_task(g.head_dim)).for_each_init(
        Vec::new,
        |buf, (row, x)| {
            let pos = g.position(row);
            let (c, s) = (&cos[pos * half..(pos + 1) * half], &sin[pos * half..(pos + 1) * half]);
            T::update_in_place(&mut x[..rotary], buf, |x| match style {
                RopeStyle::Neox => simd::rotate_half(x, c, s),
                RopeStyle::Interleaved => simd::rotate_pairs(x, c, s),
            });
        },
    );
    Ok(())
}
