//! `output = a · b` through the `gemm` crate (runtime-dispatched SIMD, rayon threads).

use layerzero_types::{KernelError, KernelResult, MatmulArgs, TensorView};

use super::check::{Meta, contiguous, dims_equal, invalid, same_host_dtype};
use super::float::{CpuFloat, with_float_type};
use super::gemm::{MatMut, MatRef, matmul as gemm_matmul};

const KERNEL: &str = "cpu.matmul";

/// Matrix product `[m, k] · [k, n] → [m, n]`, float32/float16/bfloat16. `a` and `b` may be
/// strided (a transposed `[n, k]` weight is `b` with strides `[1, k]`); `output` is
/// contiguous. Float32 runs in place through `gemm`; the half types are widened to f32
/// first (one copy of each operand), multiplied in f32 and rounded once.
pub fn matmul(args: &mut MatmulArgs<'_>) -> KernelResult {
    let a = Meta::of("a", &args.a);
    let b = Meta::of("b", &args.b);
    let output = Meta::of_mut("output", &args.output);
    let dtype = same_host_dtype(KERNEL, &[&a, &b, &output])?;
    let (&[m, k], &[k2, n]) = (a.dims, b.dims) else {
        return Err(invalid(format!("{KERNEL}: a and b must be 2-D, they have shapes {:?} and {:?}", a.dims, b.dims)));
    };
    if k != k2 {
        return Err(invalid(format!("{KERNEL}: b must have {k} rows (a's columns), it has shape {:?}", b.dims)));
    }
    dims_equal(KERNEL, &output, &[m, n], "a's rows by b's columns")?;
    contiguous(KERNEL, &output)?;
    with_float_type!(dtype, KERNEL, |T| run::<T>(args, m, n))
}

/// How many elements of a strided view's memory it reaches (0 when empty).
fn reach(view: &TensorView<'_>) -> usize {
    if view.numel() == 0 {
        return 0;
    }
    // Bounds-checked when the view was made, so this cannot overflow.
    1 + view.dims().iter().zip(view.strides()).map(|(&d, &s)| (d - 1) * s).sum::<usize>()
}

fn operand<'a, T: CpuFloat>(view: &TensorView<'a>, buf: &'a mut Vec<f32>) -> Result<MatRef<'a>, KernelError> {
    let data = &view.strided_data::<T>()?[..reach(view)];
    let widened = T::widen(data, buf);
    let (dims, strides) = (view.dims(), view.strides());
    Ok(MatRef { data: widened, rows: dims[0], cols: dims[1], row_stride: strides[0], col_stride: strides[1] })
}

fn run<T: CpuFloat>(args: &mut MatmulArgs<'_>, m: usize, n: usize) -> KernelResult {
    let (mut a_buf, mut b_buf, mut out_buf) = (Vec::new(), Vec::new(), Vec::new());
    let a = operand::<T>(&args.a, &mut a_buf)?;
    let b = operand::<T>(&args.b, &mut b_buf)?;
    let threads = rayon::current_num_threads();
    let output = args.output.as_mut_slice::<T>()?;
    let mut result = Ok(());
    T::write_through(output, &mut out_buf, |out| {
        result = gemm_matmul(MatMut::row_major(out, m, n), false, a, b, 1.0, threads);
    });
    result
}
