//! The one place this crate calls `unsafe` code: the `gemm` crate's raw-pointer entry
//! point, behind a safe wrapper that checks every index the call can reach.
//!
//! `gemm::gemm` takes pointers and strides; the wrapper takes slices with their shapes and
//! strides, checks that the furthest element of each matrix is inside its slice and that
//! distinct destination elements never share memory, and only then calls it.

#![allow(unsafe_code)]

use gemm::Parallelism;
use layerzero_types::KernelError;

/// A read-only `rows × cols` matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major matrix.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, as strides over the same memory.
    pub(crate) fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// A dense row-major destination matrix with a row stride of at least `cols`.
pub(crate) struct MatMut<'a> {
    pub(crate) data: &'a mut [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// A dense row-major matrix.
    pub(crate) fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, rows, cols, row_stride: cols }
    }
}

/// Strides as `isize`, with the stride of a unit dimension zeroed (it never moves).
fn stride(dim: usize, stride: usize) -> Result<isize, KernelError> {
    if dim <= 1 {
        return Ok(0);
    }
    isize::try_from(stride).map_err(|_| KernelError::InvalidArgument(format!("stride {stride} is too large")))
}

/// Whether every element of the matrix lies inside `len` elements.
fn fits(rows: usize, cols: usize, row_stride: usize, col_stride: usize, len: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let furthest = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|a| (cols - 1).checked_mul(col_stride).and_then(|b| a.checked_add(b)));
    furthest.is_some_and(|f| f < len)
}

/// `dst = (accumulate ? dst : 0) + scale · lhs · rhs`, on `threads` threads (1: the calling
/// thread only).
pub(crate) fn matmul(
    dst: MatMut<'_>,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    threads: usize,
) -> Result<(), KernelError> {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if lhs.rows != m || rhs.rows != k || rhs.cols != n {
        return Err(KernelError::InvalidArgument(format!(
            "matmul of [{}, {}] by [{}, {}] into [{m}, {n}]: the shapes do not chain",
            lhs.rows, lhs.cols, rhs.rows, rhs.cols
        )));
    }
    let in_bounds = fits(m, n, dst.row_stride, 1, dst.data.len())
        && fits(lhs.rows, lhs.cols, lhs.row_stride, lhs.col_stride, lhs.data.len())
        && fits(rhs.rows, rhs.cols, rhs.row_stride, rhs.col_stride, rhs.data.len());
    if !in_bounds {
        return Err(KernelError::InvalidArgument("matmul operand reaches past its memory".into()));
    }
    // Distinct destination elements must not alias: row-major with whole rows apart.
    if m > 1 && dst.row_stride < n {
        return Err(KernelError::InvalidArgument("matmul destination rows overlap".into()));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for row in dst.data.chunks_mut(dst.row_stride.max(n)).take(m) {
                row[..n].fill(0.0);
            }
        }
        return Ok(());
    }
    let (dst_rs, lhs_rs, lhs_cs) = (stride(m, dst.row_stride)?, stride(m, lhs.row_stride)?, stride(k, lhs.col_stride)?);
    let (rhs_rs, rhs_cs) = (stride(k, rhs.row_stride)?, stride(n, rhs.col_stride)?);
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: every pointer comes from a live slice borrowed for the whole call (`dst`
    // mutably, so nothing else reads or writes it); `fits` checked above that the furthest
    // element each (rows, cols, strides) triple reaches is inside its slice, and the
    // strides passed are those checked (a unit dimension's stride is zeroed, which only
    // narrows the reach). Destination elements are pairwise distinct: columns are adjacent
    // and rows are at least `n` apart. The operands are shared borrows, so they may alias
    // each other but never `dst`. `gemm` reads `dst` only when `read_dst` is true, and
    // then every element it reads was initialised (it is an `&mut [f32]`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst_rs,
            accumulate,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_strided_operands() {
        // a = [[1, 2], [3, 4]], b stored transposed: b = [[5, 6], [7, 8]].
        let a = [1.0, 2.0, 3.0, 4.0];
        let b_t = [5.0, 7.0, 6.0, 8.0];
        let mut c = [1.0f32; 4];
        let b = MatRef { data: &b_t, rows: 2, cols: 2, row_stride: 1, col_stride: 2 };
        matmul(MatMut::row_major(&mut c, 2, 2), false, MatRef::row_major(&a, 2, 2), b, 1.0, 1).unwrap();
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        matmul(MatMut::row_major(&mut c, 2, 2), true, MatRef::row_major(&a, 2, 2), b, 2.0, 2).unwrap();
        assert_eq!(c, [57.0, 66.0, 129.0, 150.0]);
    }

    #[test]
    fn refuses_operands_past_their_memory() {
        let a = [1.0; 3];
        let mut c = [0.0f32; 4];
        let err = matmul(
            MatMut::row_major(&mut c, 2, 2),
            false,
            MatRef::row_major(&a, 2, 2),
            MatRef::row_major(&a, 2, 2),
            1.0,
            1,
        );
        assert!(matches!(err, Err(KernelError::InvalidArgument(_))));
    }

    #[test]
    fn empty_inner_dimension_zeroes_the_destination() {
        let mut c = [5.0f32; 4];
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            false,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 2),
            1.0,
            1,
        )
        .unwrap();
        assert_eq!(c, [0.0; 4]);
    }
}
