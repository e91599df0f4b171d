//! The only module with `unsafe`: probing for the driver and launching kernels.
//!
//! Each launch function takes the buffers a kernel touches and the extents it will index,
//! checks that every index the kernel can compute lies inside its buffer, and only then
//! launches. Callers above stay safe: whatever they pass, the card never reads or writes
//! outside an allocation.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, sys};

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
        _ => Err(out_of_bounds(name, what, needed, len)),
    }
}

// Errors are made out of line (`#[cold]`), off the path every launch runs (see
// `ops::unsupported_dtype`).

#[cold]
#[inline(never)]
fn out_of_bounds(kernel: &'static str, buffer: &'static str, needed: Option<usize>, len: usize) -> CudaError {
    CudaError::OutOfBounds { kernel, buffer, needed: needed.unwrap_or(usize::MAX), len }
}

#[cold]
#[inline(never)]
fn launch_error(kernel: &'static str, cfg: LaunchConfig, e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Launch { kernel, grid: cfg.grid_dim, block: cfg.block_dim, message: e.to_string() }
}

/// The address of one kernel argument, as `cuLaunchKernel` takes it.
fn param<T>(value: &T) -> *mut c_void {
    (value as *const T).cast_mut().cast()
}

thread_local! {
    /// The context this thread last made current for a launch (null: none yet). While it
    /// is the launch's context, a launch skips cudarc's `bind_to_thread`, whose
    /// `cuCtxGetCurrent` is a driver call on every launch.
    static BOUND: Cell<sys::CUcontext> = const { Cell::new(std::ptr::null_mut()) };
}

/// Queues `function` on `stream` with `params` (one pointer per kernel argument, in order).
///
/// cudarc's `launch_builder` collects the arguments in `Vec`s (a few allocations per
/// launch) and asks the driver for the current context every time; here the arguments are
/// an array on the caller's stack, and the context is bound once per thread: the thread
/// remembers the context it last bound and binds again only for another one. Code outside
/// LayerZero may change the thread's current context in between; the launch then fails
/// (the function belongs to a context that is not current) and is retried once after a
/// real bind, so a launch never runs in, or fails for, the wrong context. The callers take
/// each buffer's address through `device_ptr` / `device_ptr_mut`, whose guards (dropped
/// after this returns) keep cudarc's cross-stream ordering exactly as the builder would.
///
/// # Safety
/// `params` must match the kernel's parameter list in number, order and type, and every
/// address the kernel can form from them must lie inside a live allocation.
unsafe fn launch_raw(
    stream: &CudaStream,
    function: &CudaFunction,
    name: &'static str,
    cfg: LaunchConfig,
    params: &mut [*mut c_void],
) -> Result<(), CudaError> {
    let ctx = stream.context();
    // Reports an error a buffer's `device_ptr` recorded above (an atomic swap, no driver
    // call), as `bind_to_thread` would.
    ctx.check_err().map_err(|e| launch_error(name, cfg, e))?;
    let remembered = BOUND.with(Cell::get) == ctx.cu_ctx();
    if !remembered {
        bind(ctx).map_err(|e| launch_error(name, cfg, e))?;
    }
    // SAFETY: the function belongs to a module of the stream's context (both come from the
    // same `CudaDevice`), which this thread made current (when `remembered`, at an earlier
    // launch; a failure because it no longer is leads to the bind and retry below); the
    // caller vouches for `params`.
    let mut launch = || unsafe {
        cudarc::driver::result::launch_kernel(
            function.cu_function(),
            cfg.grid_dim,
            cfg.block_dim,
            cfg.shared_mem_bytes,
            stream.cu_stream(),
            params,
        )
    };
    match launch() {
        Ok(()) => Ok(()),
        Err(_) if remembered => {
            // The current context may have been changed by other code: bind for real and
            // try once more; an error now is the launch's own.
            bind(ctx).map_err(|e| launch_error(name, cfg, e))?;
            launch().map_err(|e| launch_error(name, cfg, e))
        }
        Err(e) => Err(launch_error(name, cfg, e)),
    }
}

/// Makes `ctx` current on this thread (one `cuCtxGetCurrent`, and `cuCtxSetCurrent` when
/// another context is) and remembers it for [`launch_raw`].
fn bind(ctx: &cudarc::driver::CudaContext) -> Result<(), cudarc::driver::DriverError> {
    BOUND.with(|b| b.set(std::ptr::null_mut()));
    ctx.bind_to_thread()?;
    BOUND.with(|b| b.set(ctx.cu_ctx()));
    Ok(())
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
    let (residual_stride, residual_out_stride) = match &args.residual {
        Some((_, rs, _, ros)) => (as_i64(*rs)?, as_i64(*ros)?),
        None => (0, 0),
    };
    let (x, _x_guard) = args.x.device_ptr(stream);
    let (weight, _weight_guard) = args.weight.device_ptr(stream);
    let (y, _y_guard) = args.y.device_ptr_mut(stream);
    let (residual, _residual_guard, residual_out, _residual_out_guard) = match &mut args.residual {
        Some((r, _, r_out, _)) => {
            let (r, r_guard) = r.device_ptr(stream);
            let (r_out, r_out_guard) = r_out.device_ptr_mut(stream);
            (r, Some(r_guard), r_out, Some(r_out_guard))
        }
        None => (0, None, 0, None),
    };
    let mut params = [
        param(&x),
        param(&x_stride),
        param(&residual),
        param(&residual_stride),
        param(&residual_out),
        param(&residual_out_stride),
        param(&weight),
        param(&y),
        param(&y_stride),
        param(&rows_i32),
        param(&hidden_i32),
        param(&args.eps),
    ];
    // SAFETY: the parameters match `LZ_NORM_ARGS` in norm.cu (pointers, i64 strides, i32
    // rows and hidden, f32 eps), each pointing at a local that outlives the call. Every
    // element the kernel indexes is `row · stride + j` with row < rows and j < hidden,
    // which `check` bounded above for each buffer; the weight is read at j < hidden. A null
    // residual is never dereferenced (the kernel tests for it). The guards live past the
    // launch.
    unsafe { launch_raw(stream, function, name, cfg, &mut params) }
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
    let (gate, _gate_guard) = args.gate.device_ptr(stream);
    let (up, _up_guard) = args.up.device_ptr(stream);
    let (out, _out_guard) = args.out.device_ptr_mut(stream);
    let mut params = [
        param(&gate),
        param(&gate_stride),
        param(&up),
        param(&up_stride),
        param(&out),
        param(&out_stride),
        param(&rows_i32),
        param(&inter_i32),
    ];
    // SAFETY: the parameters match `LZ_SWIGLU` in activation.cu, each pointing at a local
    // that outlives the call. Both variants index `row · stride + col` with row < rows and
    // col < inter for each buffer (the vector one skips packs past the row's end and loops
    // rows while below `rows`; the scalar one returns past rows · inter), bounded by
    // `check` above. The guards live past the launch.
    unsafe { launch_raw(stream, function, name, cfg, &mut params) }
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
    let (x, _x_guard) = args.x.device_ptr(stream);
    let (weight, _weight_guard) = args.weight.device_ptr(stream);
    let (bias, _bias_guard) = match &args.bias {
        Some(bias) => {
            let (bias, guard) = bias.device_ptr(stream);
            (bias, Some(guard))
        }
        None => (0, None),
    };
    let (y, _y_guard) = args.y.device_ptr_mut(stream);
    let mut params = [
        param(&x),
        param(&stride),
        param(&weight),
        param(&bias),
        param(&y),
        param(&stride),
        param(&rows_i32),
        param(&hidden_i32),
        param(&args.eps),
    ];
    // SAFETY: the parameters match `LZ_LN_ARGS` in norm.cu, each pointing at a local that
    // outlives the call. The kernel indexes `row · hidden + j` (row < rows, j < hidden) in
    // x and y and `j` in weight and bias, all bounded by `check` above; a null bias is
    // never dereferenced. The guards live past the launch.
    unsafe { launch_raw(stream, function, name, cfg, &mut params) }
}

/// The rows the rope kernels rotate: one buffer in place, or an input and an output.
pub(crate) enum RopeBuffers<'a> {
    /// `x` is read and written.
    InPlace(CudaViewMut<'a, u8>),
    /// `x` is read, `out` written.
    OutOfPlace(CudaView<'a, u8>, CudaViewMut<'a, u8>),
}

/// One tensor of rows the rope kernels rotate: `tokens · heads` rows of `head_dim`.
pub(crate) struct RopeRows<'a> {
    pub buffers: RopeBuffers<'a>,
    pub heads: usize,
}

/// Buffers and shape of the rope kernels (`rope.cu`): the rows of one tensor, or of two
/// (queries and keys) of the same tokens and `head_dim`, rotated in one launch.
pub(crate) struct RopeLaunch<'a> {
    pub first: RopeRows<'a>,
    pub second: Option<RopeRows<'a>>,
    pub cos: CudaView<'a, u8>,
    pub sin: CudaView<'a, u8>,
    pub tokens: usize,
    pub head_dim: usize,
    pub rot: usize,
    pub seq: usize,
    pub offset: usize,
    pub element: usize,
}

/// The addresses of one tensor's rows (input, output) and the guards that keep cudarc's
/// stream ordering until after the launch.
type RopeAddresses<'a> = (u64, u64, cudarc::driver::SyncOnDrop<'a>, Option<cudarc::driver::SyncOnDrop<'a>>);

fn rope_addresses<'a>(buffers: &'a mut RopeBuffers<'_>, stream: &'a CudaStream) -> RopeAddresses<'a> {
    match buffers {
        // In place the kernel gets x's address as both its input and its output.
        RopeBuffers::InPlace(x) => {
            let (x, guard) = x.device_ptr_mut(stream);
            (x, x, guard, None)
        }
        RopeBuffers::OutOfPlace(x, out) => {
            let (x, x_guard) = x.device_ptr(stream);
            let (out, out_guard) = out.device_ptr_mut(stream);
            (x, out, x_guard, Some(out_guard))
        }
    }
}

pub(crate) fn rope(
    stream: &Arc<CudaStream>,
    function: &CudaFunction,
    name: &'static str,
    cfg: LaunchConfig,
    mut args: RopeLaunch<'_>,
) -> Result<(), CudaError> {
    let width = args.head_dim;
    for rows in std::iter::once(&args.first).chain(args.second.as_ref()) {
        let needed = args.tokens.checked_mul(rows.heads).and_then(|rows| extent(rows, width, width, args.element));
        match &rows.buffers {
            RopeBuffers::InPlace(x) => check(name, "x", needed, x.len())?,
            RopeBuffers::OutOfPlace(x, out) => {
                check(name, "x", needed, x.len())?;
                check(name, "out", needed, out.len())?;
            }
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
    let heads0 = to_i32("heads", args.first.heads)?;
    let heads1 = to_i32("heads", args.second.as_ref().map_or(0, |rows| rows.heads))?;
    to_i32("heads", args.first.heads + args.second.as_ref().map_or(0, |rows| rows.heads))?;
    let (head_dim, rot, seq) = (to_i32("head_dim", args.head_dim)?, to_i32("rot", args.rot)?, to_i32("seq", args.seq)?);
    let (x0, out0, _guard0, _out_guard0) = rope_addresses(&mut args.first.buffers, stream);
    let (x1, out1, _guard1, _out_guard1) = match &mut args.second {
        Some(rows) => {
            let (x, out, guard, out_guard) = rope_addresses(&mut rows.buffers, stream);
            (x, out, Some(guard), out_guard)
        }
        None => (0, 0, None, None),
    };
    let (cos, _cos_guard) = args.cos.device_ptr(stream);
    let (sin, _sin_guard) = args.sin.device_ptr(stream);
    // The vector kernel reads rows in 16-byte packs and the tables in 16- (or 8-) byte
    // pieces: allocations are aligned far beyond that, so this refuses only a foreign view.
    for (buffer, address) in
        [("x", x0), ("out", out0), ("second x", x1), ("second out", out1), ("cos", cos), ("sin", sin)]
    {
        if !address.is_multiple_of(16) {
            return Err(CudaError::Misaligned { kernel: name, buffer, address });
        }
    }
    let mut params = [
        param(&x0),
        param(&out0),
        param(&heads0),
        param(&x1),
        param(&out1),
        param(&heads1),
        param(&cos),
        param(&sin),
        param(&tokens),
        param(&head_dim),
        param(&rot),
        param(&seq),
        param(&offset),
    ];
    // SAFETY: the parameters match `LZ_ROPE_ARGS` in rope.cu, each pointing at a local that
    // outlives the call. Rows of tensor i are `(token · heads_i + head) · head_dim` +
    // channel < tokens · heads_i · head_dim elements, checked above for each input and
    // output; with no second tensor heads1 = 0 and its null addresses are never formed
    // into a row. cos and sin are read at `position · rot/2 + pair` with position < offset
    // + seq and pair < rot/2, checked above; rot ≤ head_dim. In place, input and output
    // are one address, which the kernel reads before it writes, element by element in the
    // same thread. The guards live past the launch.
    unsafe { launch_raw(stream, function, name, cfg, &mut params) }
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
