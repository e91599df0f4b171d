//! The only module with `unsafe`: probing for the driver and launching kernels.
//!
//! Each launch function takes the buffers a kernel touches and the extents it will index,
//! checks that every index the kernel can compute lies inside its buffer, and only then
//! launches. Callers above stay safe: whatever they pass, the card never reads or writes
//! outside an allocation.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::CudaError;

/// Whether the CUDA driver library can be opened on this machine.
pub(crate) fn driver_present() -> bool {
    // SAFETY: opens the driver library by its usual names and closes it again; no driver
    // code runs.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The driver's CUDA version as `major · 1000 + minor · 10` (13000 for CUDA 13.0).
pub(crate) fn driver_version() -> Option<i32> {
    // Without the library cudarc's loader panics on the first call: ask first.
    if !driver_present() {
        return None;
    }
    let mut version = 0i32;
    // SAFETY: the driver library is present (checked above), and the call writes one int
    // through a pointer to a live local.
    let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
    (status == cudarc::driver::sys::cudaError_enum::CUDA_SUCCESS).then_some(version)
}

/// The furthest byte a kernel touches in a buffer of `rows` rows, `stride` elements apart,
/// each `width` elements wide: `((rows - 1) · stride + width) · element`.
fn extent(rows: usize, stride: usize, width: usize, element: usize) -> Option<usize> {
    if rows == 0 || width == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(stride)?.checked_add(width)?.checked_mul(element)
}

fn check(name: &'static str, what: &'static str, needed: Option<usize>, len: usize) -> Result<(), CudaError> {
    match needed {
        Some(needed) if needed <= len => Ok(()),
        _ => Err(CudaError::OutOfBounds { kernel: name, buffer: what, needed: needed.unwrap_or(usize::MAX), len }),
    }
}

fn launch_error(kernel: &'static str, cfg: LaunchConfig, e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Launch { kernel, grid: cfg.grid_dim, block: cfg.block_dim, message: e.to_string() }
}

/// Row-wise buffers of the norm kernels (`norm.cu`), strides in elements.
pub(crate) struct NormLaunch<'a> {
    pub x: CudaView<'a, u8>,
    pub x_stride: usize,
    pub residual: Option<(CudaView<'a, u8>, usize, CudaViewMut<'a, u8>, usize)>,
    pub weight: CudaView<'a, u8>,
    pub y: CudaViewMut<'a, u8>,
    pub y_stride: usize,
    pub rows: usize,
    pub hidden: usize,
    pub element: usize,
    pub eps: f32,
}

pub(crate) fn norm(
    stream: &Arc<CudaStream>,
    function: &CudaFunction,
    name: &'static str,
    cfg: LaunchConfig,
    mut args: NormLaunch<'_>,
) -> Result<(), CudaError> {
    let (rows, hidden, element) = (args.rows, args.hidden, args.element);
    check(name, "x", extent(rows, args.x_stride, hidden, element), args.x.len())?;
    check(name, "y", extent(rows, args.y_stride, hidden, element), args.y.len())?;
    check(name, "weight", hidden.checked_mul(element), args.weight.len())?;
    if let Some((residual, residual_stride, residual_out, residual_out_stride)) = &args.residual {
        check(name, "residual", extent(rows, *residual_stride, hidden, element), residual.len())?;
        check(name, "residual_out", extent(rows, *residual_out_stride, hidden, element), residual_out.len())?;
    }
    let as_i64 =
        |v: usize| i64::try_from(v).map_err(|_| CudaError::TooLarge { kernel: name, what: "stride", value: v });
    let rows_i32 = i32::try_from(rows).map_err(|_| CudaError::TooLarge { kernel: name, what: "rows", value: rows })?;
    let hidden_i32 =
        i32::try_from(hidden).map_err(|_| CudaError::TooLarge { kernel: name, what: "hidden", value: hidden })?;
    let (x_stride, y_stride) = (as_i64(args.x_stride)?, as_i64(args.y_stride)?);
    let null = 0u64;
    let (residual_stride, residual_out_stride) = match &args.residual {
        Some((_, rs, _, ros)) => (as_i64(*rs)?, as_i64(*ros)?),
        None => (0, 0),
    };
    let mut builder = stream.launch_builder(function);
    builder.arg(&args.x).arg(&x_stride);
    match &mut args.residual {
        Some((residual, _, residual_out, _)) => {
            builder.arg(&*residual).arg(&residual_stride).arg(residual_out).arg(&residual_out_stride);
        }
        None => {
            builder.arg(&null).arg(&residual_stride).arg(&null).arg(&residual_out_stride);
        }
    }
    builder.arg(&args.weight).arg(&mut args.y).arg(&y_stride).arg(&rows_i32).arg(&hidden_i32).arg(&args.eps);
    // SAFETY: the argument list matches `LZ_NORM_ARGS` in norm.cu (pointers, i64 strides,
    // i32 rows and hidden, f32 eps). Every element the kernel indexes is
    // `row · stride + j` with row < rows and j < hidden, which `check` bounded above for
    // each buffer; the weight is read at j < hidden. A null residual is never dereferenced
    // (the kernel tests for it).
    unsafe { builder.launch(cfg) }.map(drop).map_err(|e| launch_error(name, cfg, e))
}

/// Row-wise buffers of the swiglu kernels (`activation.cu`), strides in elements.
pub(crate) struct SwigluLaunch<'a> {
    pub gate: CudaView<'a, u8>,
    pub gate_stride: usize,
    pub up: CudaView<'a, u8>,
    pub up_stride: usize,
    pub out: CudaViewMut<'a, u8>,
    pub out_stride: usize,
    pub rows: usize,
    pub inter: usize,
    pub element: usize,
}

pub(crate) fn swiglu(
    stream: &Arc<CudaStream>,
    function: &CudaFunction,
    name: &'static str,
    cfg: LaunchConfig,
    mut args: SwigluLaunch<'_>,
) -> Result<(), CudaError> {
    let (rows, inter, element) = (args.rows, args.inter, args.element);
    check(name, "gate", extent(rows, args.gate_stride, inter, element), args.gate.len())?;
    check(name, "up", extent(rows, args.up_stride, inter, element), args.up.len())?;
    check(name, "out", extent(rows, args.out_stride, inter, element), args.out.len())?;
    let as_i64 =
        |v: usize| i64::try_from(v).map_err(|_| CudaError::TooLarge { kernel: name, what: "stride", value: v });
    let rows_i32 = i32::try_from(rows).map_err(|_| CudaError::TooLarge { kernel: name, what: "rows", value: rows })?;
    let inter_i32 =
        i32::try_from(inter).map_err(|_| CudaError::TooLarge { kernel: name, what: "inter", value: inter })?;
    let (gate_stride, up_stride, out_stride) =
        (as_i64(args.gate_stride)?, as_i64(args.up_stride)?, as_i64(args.out_stride)?);
    let mut builder = stream.launch_builder(function);
    builder
        .arg(&args.gate)
        .arg(&gate_stride)
        .arg(&args.up)
        .arg(&up_stride)
        .arg(&mut args.out)
        .arg(&out_stride)
        .arg(&rows_i32)
        .arg(&inter_i32);
    // SAFETY: the argument list matches `LZ_SWIGLU` in activation.cu. The kernel indexes
    // `row · stride + col` with row < rows and col < inter for each buffer (threads past
    // rows · inter return first), bounded by `check` above.
    unsafe { builder.launch(cfg) }.map(drop).map_err(|e| launch_error(name, cfg, e))
}

/// Buffers of the layer-norm kernels (`norm.cu`), strides in elements.
pub(crate) struct LayerNormLaunch<'a> {
    pub x: CudaView<'a, u8>,
    pub weight: CudaView<'a, u8>,
    pub bias: Option<CudaView<'a, u8>>,
    pub y: CudaViewMut<'a, u8>,
    pub rows: usize,
    pub hidden: usize,
    pub element: usize,
    pub eps: f32,
}

pub(crate) fn layer_norm(
    stream: &Arc<CudaStream>,
    function: &CudaFunction,
    name: &'static str,
    cfg: LaunchConfig,
    mut args: LayerNormLaunch<'_>,
) -> Result<(), CudaError> {
    let (rows, hidden, element) = (args.rows, args.hidden, args.element);
    check(name, "x", extent(rows, hidden, hidden, element), args.x.len())?;
    check(name, "y", extent(rows, hidden, hidden, element), args.y.len())?;
    check(name, "weight", hidden.checked_mul(element), args.weight.len())?;
    if let Some(bias) = &args.bias {
        check(name, "bias", hidden.checked_mul(element), bias.len())?;
    }
    let too_large = |what, value| CudaError::TooLarge { kernel: name, what, value };
    let stride = i64::try_from(hidden).map_err(|_| too_large("hidden", hidden))?;
    let rows_i32 = i32::try_from(rows).map_err(|_| too_large("rows", rows))?;
    let hidden_i32 = i32::try_from(hidden).map_err(|_| too_large("hidden", hidden))?;
    let null = 0u64;
    let mut builder = stream.launch_builder(function);
    builder.arg(&args.x).arg(&stride).arg(&args.weight);
    match &args.bias {
        Some(bias) => builder.arg(bias),
        None => builder.arg(&null),
    };
    builder.arg(&mut args.y).arg(&stride).arg(&rows_i32).arg(&hidden_i32).arg(&args.eps);
    // SAFETY: the argument list matches `LZ_LN_ARGS` in norm.cu. The kernel indexes
    // `row · hidden + j` (row < rows, j < hidden) in x and y and `j` in weight and bias,
    // all bounded by `check` above; a null bias is never dereferenced.
    unsafe { builder.launch(cfg) }.map(drop).map_err(|e| launch_error(name, cfg, e))
}

/// The rows the rope kernels rotate: one buffer in place, or an input and an output.
pub(crate) enum RopeBuffers<'a> {
    /// `x` is read and written.
    InPlace(CudaViewMut<'a, u8>),
    /// `x` is read, `out` written.
    OutOfPlace(CudaView<'a, u8>, CudaViewMut<'a, u8>),
}

/// Buffers and shape of the rope kernels (`rope.cu`): `tokens · heads` rows of `head_dim`.
pub(crate) struct RopeLaunch<'a> {
    pub buffers: RopeBuffers<'a>,
    pub cos: CudaView<'a, u8>,
    pub sin: CudaView<'a, u8>,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub rot: usize,
    pub seq: usize,
    pub offset: usize,
    pub element: usize,
}

pub(crate) fn rope(
    stream: &Arc<CudaStream>,
    function: &CudaFunction,
    name: &'static str,
    cfg: LaunchConfig,
    mut args: RopeLaunch<'_>,
) -> Result<(), CudaError> {
    let rows = args.tokens.checked_mul(args.heads);
    let width = args.head_dim;
    let needed = rows.and_then(|rows| extent(rows, width, width, args.element));
    match &args.buffers {
        RopeBuffers::InPlace(x) => check(name, "x", needed, x.len())?,
        RopeBuffers::OutOfPlace(x, out) => {
            check(name, "x", needed, x.len())?;
            check(name, "out", needed, out.len())?;
        }
    }
    // Positions offset .. offset + seq − 1 each read rot / 2 floats of cos and sin.
    let positions = args.offset.checked_add(args.seq);
    let table = positions.and_then(|p| p.checked_mul(args.rot / 2)).and_then(|n| n.checked_mul(4));
    check(name, "cos", table, args.cos.len())?;
    check(name, "sin", table, args.sin.len())?;
    if args.rot > args.head_dim || args.seq == 0 {
        return Err(CudaError::OutOfBounds {
            kernel: name,
            buffer: "rotary dims",
            needed: args.rot,
            len: args.head_dim,
        });
    }
    let too_large = |what, value| CudaError::TooLarge { kernel: name, what, value };
    let to_i32 = |what, v: usize| i32::try_from(v).map_err(|_| too_large(what, v));
    let to_i64 = |what, v: usize| i64::try_from(v).map_err(|_| too_large(what, v));
    let (tokens, offset) = (to_i64("tokens", args.tokens)?, to_i64("offset", args.offset)?);
    let (heads, head_dim) = (to_i32("heads", args.heads)?, to_i32("head_dim", args.head_dim)?);
    let (rot, seq) = (to_i32("rot", args.rot)?, to_i32("seq", args.seq)?);
    // In place the kernel gets x's address as both its input and its output; the guard
    // keeps cudarc's stream ordering for the buffer until after the launch. Both are
    // declared before the builder, which borrows them, so they outlive it.
    let address;
    let _guard;
    let mut builder = stream.launch_builder(function);
    match &mut args.buffers {
        RopeBuffers::InPlace(x) => {
            let (pointer, guard) = cudarc::driver::DevicePtrMut::device_ptr_mut(x, stream);
            (address, _guard) = (pointer, Some(guard));
            builder.arg(&address).arg(&address);
        }
        RopeBuffers::OutOfPlace(x, out) => {
            _guard = None;
            builder.arg(&*x).arg(out);
        }
    }
    builder.arg(&args.cos).arg(&args.sin);
    builder.arg(&tokens).arg(&heads).arg(&head_dim).arg(&rot).arg(&seq).arg(&offset);
    // SAFETY: the argument list matches `LZ_ROPE_ARGS` in rope.cu. Rows are
    // `(token · heads + head) · head_dim` + channel < tokens · heads · head_dim elements,
    // checked above for x and out; cos and sin are read at `position · rot/2 + pair` with
    // position < offset + seq and pair < rot/2, checked above; rot ≤ head_dim. In place,
    // the address stays valid while its guard lives, which is past the launch.
    unsafe { builder.launch(cfg) }.map(drop).map_err(|e| launch_error(name, cfg, e))
}

/// Whether cuBLAS can be opened on this machine (cudarc would panic on first use
/// otherwise).
pub(crate) fn cublas_present() -> bool {
    // SAFETY: tries to open the cuBLAS library by cudarc's candidate names and closes it
    // again; no cuBLAS code runs.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// A row-major GEMM `c[m, n] = a[m, k] · b[k, n]` through `cublasGemmEx`, f32 accumulation.
pub(crate) struct GemmLaunch<'a> {
    pub a: CudaView<'a, u8>,
    pub b: CudaView<'a, u8>,
    /// `b` holds the `[n, k]` row-major transpose of the `[k, n]` operand.
    pub b_transposed: bool,
    pub c: CudaViewMut<'a, u8>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dtype: cudarc::cublas::sys::cudaDataType,
    pub element: usize,
}

pub(crate) fn gemm(
    blas: &cudarc::cublas::CudaBlas,
    stream: &Arc<CudaStream>,
    mut args: GemmLaunch<'_>,
) -> Result<(), CudaError> {
    use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t};
    use cudarc::driver::{DevicePtr, DevicePtrMut};

    const NAME: &str = "cublasGemmEx";
    let (m, n, k, element) = (args.m, args.n, args.k, args.element);
    check(NAME, "a", extent(m, k, k, element), args.a.len())?;
    // Row-major [k, n], or its transpose [n, k]: k·n elements either way.
    let b_extent = if args.b_transposed { extent(n, k, k, element) } else { extent(k, n, n, element) };
    check(NAME, "b", b_extent, args.b.len())?;
    check(NAME, "c", extent(m, n, n, element), args.c.len())?;
    let to_int =
        |what, v: usize| std::ffi::c_int::try_from(v).map_err(|_| CudaError::TooLarge { kernel: NAME, what, value: v });
    let (m_int, n_int, k_int) = (to_int("m", m)?, to_int("n", n)?, to_int("k", k)?);
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (a, _a_guard) = args.a.device_ptr(stream);
    let (b, _b_guard) = args.b.device_ptr(stream);
    let (c, _c_guard) = args.c.device_ptr_mut(stream);
    // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: cuBLAS multiplies B (n × k, leading
    // dimension n) by A (k × m, leading dimension k) into C (n × m, leading dimension n).
    // A transposed B (row-major [n, k]) is column-major k × n with leading dimension k:
    // cuBLAS reads it with op T to get the same n × k operand.
    let (b_op, ldb) = if args.b_transposed {
        (cublasOperation_t::CUBLAS_OP_T, k_int.max(1))
    } else {
        (cublasOperation_t::CUBLAS_OP_N, n_int)
    };
    // SAFETY: the handle is bound to `stream`, on which every buffer was allocated. cuBLAS
    // reads B at column j < k, row i < n: `j · n + i` < k·n elements (transposed: at
    // `i · k + j`, also < k·n); A at `j · k + i`
    // < m·k; writes C at `j · n + i` < m·n — each bounded by `check` above in bytes of
    // `element`, the size of `dtype`. Alpha and beta are host f32s (the default pointer
    // mode), live across the call; with k = 0 cuBLAS writes beta·C = 0. The guards keep
    // cudarc's stream ordering of the buffers until after the enqueue.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            b_op,
            cublasOperation_t::CUBLAS_OP_N,
            n_int,
            m_int,
            k_int,
            (&raw const alpha).cast(),
            b as *const std::ffi::c_void,
            args.dtype,
            ldb,
            a as *const std::ffi::c_void,
            args.dtype,
            k_int.max(1),
            (&raw const beta).cast(),
            c as *mut std::ffi::c_void,
            args.dtype,
            n_int,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| CudaError::Launch {
        kernel: NAME,
        grid: (u32::try_from(m).unwrap_or(u32::MAX), u32::try_from(n).unwrap_or(u32::MAX), 1),
        block: (u32::try_from(k).unwrap_or(u32::MAX), 1, 1),
        message: format!("{e:?}"),
    })
}
