//! Safe entry points of the CUDA kernels: validate, pick the launch shape, launch.

use cudarc::driver::LaunchConfig;
use layerzero_types::{DType, KernelError, RopeStyle, Tensor, TensorMeta, TensorView, TensorViewMut};

use super::CudaDevice;
use super::launch::{self, LayerNormLaunch, NormLaunch, RopeBuffers, RopeLaunch, RopeRows, SwigluLaunch};

/// Which rms_norm kernel runs (norm.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmsNormVariant {
    /// One block per row, the row held in registers. Needs `hidden` a multiple of
    /// 16 / element size, and at most 65536 (bf16, f16) or 32768 (f32).
    Block,
    /// One warp per row, 8 rows per block. For small rows: `hidden` a multiple of
    /// 16 / element size, at most 1024 (bf16, f16) or 512 (f32).
    Warp,
    /// One block per row, any `hidden` and alignment; reads the row twice.
    Scalar,
    /// [`Block`](Self::Block) with the packs each thread holds chosen by the caller (1, 2,
    /// 4 or 8; threads per row follow) instead of by the default policy: for tuners that
    /// time the choices on the present card. Refused when the row would need more than
    /// 1024 threads or fewer than one pack per thread.
    BlockTuned {
        /// 16-byte packs per thread: 1, 2, 4 or 8.
        packs_per_thread: u8,
    },
}

/// Which swiglu kernel runs (activation.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwigluVariant {
    /// 16-byte packs: needs `intermediate` a multiple of 16 / element size.
    Vector,
    /// Any size, one element per thread.
    Scalar,
}

/// The inputs of swiglu on the device.
pub enum SwigluDeviceInput<'a> {
    /// Gate and up, both `[rows, intermediate]`.
    Separate {
        /// The gate projection.
        gate: &'a Tensor,
        /// The up projection.
        up: &'a Tensor,
    },
    /// `[rows, 2 · intermediate]`: gate then up in each row.
    Fused(&'a Tensor),
}

/// The dtype's place in every family's entry-point list: bf16, f16, f32.
fn dtype_index(dtype: DType) -> Result<usize, KernelError> {
    match dtype {
        DType::BF16 => Ok(0),
        DType::F16 => Ok(1),
        DType::F32 => Ok(2),
        other => Err(unsupported_dtype(other)),
    }
}

// The errors of the launch checks are made out of line (`#[cold]`): a launch's checks run on
// every call, after a driver call has pushed this code out of the CPU's nearer caches, and
// an error's formatting inlined among them spreads the passing path over more cache lines.

#[cold]
#[inline(never)]
fn unsupported_dtype(dtype: DType) -> KernelError {
    KernelError::Unsupported(format!("dtype {dtype}: the CUDA kernels take bfloat16, float16, float32"))
}

fn pack(dtype: DType) -> usize {
    16 / dtype.size_in_bytes()
}

#[cold]
fn invalid(message: String) -> KernelError {
    KernelError::InvalidArgument(message)
}

/// One entry point of the PTX modules: its family's list of names and its place there.
/// `Modules` loads the functions in [`ENTRY_POINTS`](super::ENTRY_POINTS) order, so a
/// launch finds its function by [`index`](Self::index), without hashing or comparing a name.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    list: &'static [&'static str],
    base: usize,
    position: usize,
}

impl Entry {
    /// The function's place in the modules' load order.
    pub(super) fn index(self) -> usize {
        self.base + self.position
    }

    /// The kernel's name, as in its `.cu` file.
    pub(super) fn name(self) -> &'static str {
        self.list.get(self.position).copied().unwrap_or("missing_entry")
    }
}

// Where each family's list starts in the load order: norm.cu's two lists, then
// activation.cu's, then rope.cu's (`ENTRY_POINTS`; a test checks they agree).
const NORM_BASE: usize = 0;
const LAYER_NORM_BASE: usize = NORM_BASE + NORM_ENTRY_POINTS.len();
const SWIGLU_BASE: usize = LAYER_NORM_BASE + LAYER_NORM_ENTRY_POINTS.len();
const ROPE_BASE: usize = SWIGLU_BASE + SWIGLU_ENTRY_POINTS.len();

/// Packs per thread 1, 2, 4, 8 → their place in a list of variants.
fn packs_index(v: usize) -> usize {
    v.trailing_zeros() as usize
}

/// The rms_norm kernel of (variant, dtype index, packs per thread); positions follow the
/// layout of [`NORM_ENTRY_POINTS`] (a test checks every one against its name).
fn norm_entry(variant: RmsNormVariant, dtype: usize, v: usize) -> Entry {
    let position = match variant {
        RmsNormVariant::Block | RmsNormVariant::BlockTuned { .. } => dtype * 4 + packs_index(v),
        RmsNormVariant::Warp => 12 + dtype * 3 + packs_index(v),
        RmsNormVariant::Scalar => 21 + dtype,
    };
    Entry { list: &NORM_ENTRY_POINTS, base: NORM_BASE, position }
}

/// The rms_norm block kernel for rows of 257 to 512 threads at 2 packs each without the
/// residual: all of an SM's threads resident (see `rms_norm_block_wide` in norm.cu).
fn norm_wide_entry(dtype: usize) -> Entry {
    Entry { list: &NORM_ENTRY_POINTS, base: NORM_BASE, position: 24 + dtype }
}

/// The layer_norm kernel: block with `v` packs per thread, or scalar (`v` = 0).
fn layer_norm_entry(dtype: usize, v: usize) -> Entry {
    let position = if v == 0 { 12 + dtype } else { dtype * 4 + packs_index(v) };
    Entry { list: &LAYER_NORM_ENTRY_POINTS, base: LAYER_NORM_BASE, position }
}

fn swiglu_entry(variant: SwigluVariant, dtype: usize) -> Entry {
    let position = match variant {
        SwigluVariant::Vector => dtype,
        SwigluVariant::Scalar => 3 + dtype,
    };
    Entry { list: &SWIGLU_ENTRY_POINTS, base: SWIGLU_BASE, position }
}

fn rope_entry(variant: RopeVariant, style: RopeStyle, dtype: usize) -> Entry {
    let kind = match (variant, style) {
        (RopeVariant::Vector, RopeStyle::Neox) => 0,
        (RopeVariant::Vector, RopeStyle::Interleaved) => 1,
        (RopeVariant::Scalar, RopeStyle::Neox) => 2,
        (RopeVariant::Scalar, RopeStyle::Interleaved) => 3,
    };
    Entry { list: &ROPE_ENTRY_POINTS, base: ROPE_BASE, position: kind * 3 + dtype }
}

/// The entry points of norm.cu.
pub(super) const NORM_ENTRY_POINTS: [&str; 27] = [
    "rms_norm_block_bf16_v1",
    "rms_norm_block_bf16_v2",
    "rms_norm_block_bf16_v4",
    "rms_norm_block_bf16_v8",
    "rms_norm_block_f16_v1",
    "rms_norm_block_f16_v2",
    "rms_norm_block_f16_v4",
    "rms_norm_block_f16_v8",
    "rms_norm_block_f32_v1",
    "rms_norm_block_f32_v2",
    "rms_norm_block_f32_v4",
    "rms_norm_block_f32_v8",
    "rms_norm_warp_bf16_v1",
    "rms_norm_warp_bf16_v2",
    "rms_norm_warp_bf16_v4",
    "rms_norm_warp_f16_v1",
    "rms_norm_warp_f16_v2",
    "rms_norm_warp_f16_v4",
    "rms_norm_warp_f32_v1",
    "rms_norm_warp_f32_v2",
    "rms_norm_warp_f32_v4",
    "rms_norm_scalar_bf16",
    "rms_norm_scalar_f16",
    "rms_norm_scalar_f32",
    "rms_norm_block_bf16_v2_wide",
    "rms_norm_block_f16_v2_wide",
    "rms_norm_block_f32_v2_wide",
];

/// The layer-norm entry points of norm.cu.
pub(super) const LAYER_NORM_ENTRY_POINTS: [&str; 15] = [
    "layer_norm_block_bf16_v1",
    "layer_norm_block_bf16_v2",
    "layer_norm_block_bf16_v4",
    "layer_norm_block_bf16_v8",
    "layer_norm_block_f16_v1",
    "layer_norm_block_f16_v2",
    "layer_norm_block_f16_v4",
    "layer_norm_block_f16_v8",
    "layer_norm_block_f32_v1",
    "layer_norm_block_f32_v2",
    "layer_norm_block_f32_v4",
    "layer_norm_block_f32_v8",
    "layer_norm_scalar_bf16",
    "layer_norm_scalar_f16",
    "layer_norm_scalar_f32",
];

/// The entry points of rope.cu.
pub(super) const ROPE_ENTRY_POINTS: [&str; 12] = [
    "rope_neox_vec_bf16",
    "rope_neox_vec_f16",
    "rope_neox_vec_f32",
    "rope_interleaved_vec_bf16",
    "rope_interleaved_vec_f16",
    "rope_interleaved_vec_f32",
    "rope_neox_scalar_bf16",
    "rope_neox_scalar_f16",
    "rope_neox_scalar_f32",
    "rope_interleaved_scalar_bf16",
    "rope_interleaved_scalar_f16",
    "rope_interleaved_scalar_f32",
];

/// Which layer-norm kernel runs (norm.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerNormVariant {
    /// One block per row, the row in registers; same limits as [`RmsNormVariant::Block`].
    Block,
    /// Any `hidden` and alignment; reads the row three times.
    Scalar,
}

/// The cos and sin tables of rope: float32 `[max_positions, rot / 2]`, on the device.
#[derive(Clone, Copy)]
pub struct RopeTables<'a> {
    /// Cosines per position and frequency.
    pub cos: &'a Tensor,
    /// Sines per position and frequency.
    pub sin: &'a Tensor,
}

/// Which rope kernel runs (rope.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeVariant {
    /// 16-byte chunks: needs `head_dim` and the rotated half (NeoX) or rotated width
    /// (interleaved) multiples of 16 / element size.
    Vector,
    /// Any size, one pair per thread.
    Scalar,
}

/// The entry points of activation.cu.
pub(super) const SWIGLU_ENTRY_POINTS: [&str; 6] = [
    "swiglu_vec_bf16",
    "swiglu_vec_f16",
    "swiglu_vec_f32",
    "swiglu_scalar_bf16",
    "swiglu_scalar_f16",
    "swiglu_scalar_f32",
];

/// Packs each thread of the block variant holds: 2 for rows of up to 512 packs (at most
/// 256 threads; the weight is then loaded before the reduction, see `PRELOAD` in
/// norm.cu), 4 up to 4096 packs, 8 beyond; fewer threads for rows under 64 packs.
/// Measured on the H100 with the bench's `BlockTuned` sweep (bf16 GB/s, packs per thread
/// 1 / 2 / 4 / 8): 16384×4096 (512 packs) 2767 / 2832 / 2838 / 1965 before the preload,
/// 2853 with it at 2; 4096×8192 (1024 packs) 2459 / 2498 / 2633 / 1792 (with the preload
/// at 2, 512 threads). rms_norm alone does better at 2 through its wide entry points for
/// rows of 513 to 1024 packs ([`rms_block_packs_per_thread`]).
///
/// The fused residual add ([`residual_block_packs_per_thread`]) does better with one pack
/// per thread.
fn block_packs_per_thread(packs: usize) -> Option<usize> {
    match packs {
        p if p > 8 * 1024 => None,
        p if p > 4 * 1024 => Some(8),
        p if p > 512 => Some(4),
        p if p > 32 => Some(2),
        _ => Some(1),
    }
}

/// Packs per thread of the rms_norm block variant without the residual add: 2 for rows of
/// 513 to 1024 packs (up to 512 threads, launched through the `_v2_wide` entry points,
/// whose bounds keep every thread of an SM resident; see `rms_norm_block_wide` in norm.cu),
/// else as [`block_packs_per_thread`]. Measured on the H100 (bf16 4096×8192, GB/s, four
/// pairs of input and output buffers in one process): 4 packs per thread 2614–2645, the wide
/// entry point 2638–2691, a copy of the same bytes 2646–2673.
fn rms_block_packs_per_thread(packs: usize) -> Option<usize> {
    if (513..=1024).contains(&packs) { Some(2) } else { block_packs_per_thread(packs) }
}

/// Packs per thread of the fused residual add + rms_norm block variant: 1 (as many threads
/// as packs) while a row fits in 1024 threads, else as [`block_packs_per_thread`]. A thread
/// then has two loads in flight (x and the residual) where it had four, and the block twice
/// the threads to hide the reduction's barrier behind. Measured on the H100 in three runs of
/// the bench (add + rms_norm bf16 16384×4096, 4 passes, GB/s, 1 / 2 packs per thread):
/// 2892 / 2841, 2927 / 2893, 2935 / 2898.
fn residual_block_packs_per_thread(packs: usize) -> Option<usize> {
    if packs <= 1024 { Some(1) } else { block_packs_per_thread(packs) }
}

/// The row kernels that share the block variants' launch shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockRows {
    /// rms_norm alone.
    Rms,
    /// rms_norm with the fused residual add.
    AddRms,
    /// layer_norm.
    LayerNorm,
}

/// The packs per thread a block variant launches a row of `hidden` elements with, or
/// `None` when it cannot take the row: `hidden` a nonzero multiple of the 16-byte pack and
/// at most 8 · 1024 packs. The block variants' `hidden_size` constraint states this limit
/// (a test checks it against this).
pub(super) fn block_packs(dtype: DType, hidden: usize, rows: BlockRows) -> Option<usize> {
    if hidden == 0 || !hidden.is_multiple_of(pack(dtype)) {
        return None;
    }
    let packs = hidden / pack(dtype);
    match rows {
        BlockRows::Rms => rms_block_packs_per_thread(packs),
        BlockRows::AddRms => residual_block_packs_per_thread(packs),
        BlockRows::LayerNorm => block_packs_per_thread(packs),
    }
}

/// The packs per thread the rms_norm warp variant launches a row of `hidden` elements with
/// (1, 2 or 4, 32 threads), or `None` when it cannot take the row: `hidden` a nonzero
/// multiple of the pack and at most 4 · 32 packs. Its `hidden_size` constraint states this.
pub(super) fn warp_packs(dtype: DType, hidden: usize) -> Option<usize> {
    if hidden == 0 || !hidden.is_multiple_of(pack(dtype)) {
        return None;
    }
    let packs = hidden / pack(dtype);
    [1, 2, 4].into_iter().find(|v| packs <= 32 * v)
}

/// Packs of a row one block of the swiglu vector variant takes (256 threads, two packs
/// each: `swiglu_vec` in activation.cu).
const SWIGLU_VEC_PACKS_PER_BLOCK: usize = 512;

/// The largest grid y a launch may have.
const MAX_GRID_Y: u32 = 65535;

/// Whether the swiglu vector variant takes rows of `inter` elements: a nonzero multiple of
/// the pack (any length). Its `hidden_size` constraint states this.
pub(super) fn swiglu_vector_takes(dtype: DType, inter: usize) -> bool {
    inter != 0 && inter.is_multiple_of(pack(dtype))
}

/// The 16-byte units per head the rope vector variant handles for `head_dim` channels of
/// which `rot` rotate, or why it cannot: `head_dim` and the rotated width (half of `rot`
/// for NeoX, `rot` interleaved) multiples of the pack, at most [`ROPE_MAX_UNITS`] units. Its
/// `head_dim` constraint states the limit for full rotation; partial rotation's width is
/// checked here only.
pub(super) fn rope_vector_units(
    style: RopeStyle,
    dtype: DType,
    head_dim: usize,
    rot: usize,
) -> Result<usize, KernelError> {
    let p = pack(dtype);
    let rotated = if style == RopeStyle::Neox { rot / 2 } else { rot };
    if !head_dim.is_multiple_of(p) || !rotated.is_multiple_of(p) {
        return Err(KernelError::Unsupported(format!(
            "rope vector variant needs head_dim ({head_dim}) and the rotated width ({rotated}) multiples of {p}"
        )));
    }
    let units = rotated / p + head_dim.saturating_sub(rot) / p;
    if units == 0 || units > ROPE_MAX_UNITS {
        return Err(KernelError::Unsupported(format!(
            "rope vector variant takes head_dim up to {}, got {head_dim}",
            ROPE_MAX_UNITS * p
        )));
    }
    Ok(units)
}

fn rows_and_hidden(x: &impl TensorMeta) -> Result<(usize, usize), KernelError> {
    let dims = x.shape().dims();
    let hidden = *dims.last().ok_or_else(|| invalid("x must have at least one dimension".into()))?;
    if hidden == 0 {
        return Err(invalid("x has an empty last dimension".into()));
    }
    Ok((x.shape().numel() / hidden, hidden))
}

#[cold]
#[inline(never)]
fn unlike_x(what: &str, x: &TensorView<'_>, dtype: DType, dims: &[usize]) -> KernelError {
    invalid(format!("{what} must be {} {:?} like x, is {dtype} {dims:?}", x.dtype(), x.dims()))
}

#[cold]
#[inline(never)]
fn not_per_channel(what: &str, dtype: DType, hidden: usize, t: &TensorView<'_>) -> KernelError {
    invalid(format!("{what} must be {dtype} [{hidden}], is {} {:?}", t.dtype(), t.dims()))
}

/// A row the `variant` cannot take: `hidden` not a multiple of the 16-byte pack, or more
/// than `max_packs` packs.
#[cold]
#[inline(never)]
fn outside_row_limits(variant: &str, dtype: DType, max_packs: usize, hidden: usize) -> KernelError {
    KernelError::Unsupported(format!(
        "{variant} variant needs hidden a multiple of {} and at most {}, got {hidden}",
        pack(dtype),
        max_packs * pack(dtype)
    ))
}

#[cold]
#[inline(never)]
fn bad_eps(eps: f32) -> KernelError {
    invalid(format!("eps must be finite and non-negative, is {eps}"))
}

/// What the norm kernels learn from checking their common arguments.
struct NormShape {
    dtype: DType,
    /// The dtype's place in the entry-point lists.
    dtype_index: usize,
    rows: usize,
    hidden: usize,
}

impl CudaDevice {
    /// `t` is on this device with `x`'s dtype and dims.
    fn like_x(&self, x: &TensorView<'_>, what: &str, t: &impl TensorMeta) -> Result<(), KernelError> {
        self.check_on_device(what, t.device())?;
        if t.dtype() != x.dtype() || t.shape().dims() != x.dims() {
            return Err(unlike_x(what, x, t.dtype(), t.shape().dims()));
        }
        Ok(())
    }

    /// The checks every norm kernel makes: x of a supported dtype on this device, y like x,
    /// each given per-channel tensor (weight, bias) `[hidden]` of x's dtype on this device,
    /// eps finite and non-negative.
    fn norm_shape(
        &self,
        x: &TensorView<'_>,
        y: &TensorViewMut<'_>,
        per_channel: [(&str, Option<&TensorView<'_>>); 2],
        eps: f32,
    ) -> Result<NormShape, KernelError> {
        let dtype = x.dtype();
        let dtype_index = dtype_index(dtype)?;
        let (rows, hidden) = rows_and_hidden(x)?;
        self.check_on_device("x", x.device())?;
        self.like_x(x, "y", y)?;
        dense("x", x.is_contiguous())?;
        dense("y", y.is_contiguous())?;
        for (what, t) in per_channel.into_iter().filter_map(|(what, t)| Some((what, t?))) {
            self.check_on_device(what, t.device())?;
            dense(what, t.is_contiguous())?;
            if t.dtype() != dtype || t.dims() != [hidden] {
                return Err(not_per_channel(what, dtype, hidden, t));
            }
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(bad_eps(eps));
        }
        Ok(NormShape { dtype, dtype_index, rows, hidden })
    }
}

impl CudaDevice {
    /// `y = rms_norm(x) · weight`, or with `residual = Some((r, r_out))`:
    /// `r_out = x + r; y = rms_norm(r_out) · weight`. All tensors on this device, of one
    /// dtype (bf16, f16, f32), contiguous; `x`, `r`, `r_out`, `y` of one shape `[.., hidden]`,
    /// `weight` `[hidden]`. Queues the kernel on [`stream`](Self::stream); does not wait.
    pub fn rms_norm(
        &self,
        variant: RmsNormVariant,
        x: &Tensor,
        residual: Option<(&Tensor, &mut Tensor)>,
        weight: &Tensor,
        y: &mut Tensor,
        eps: f32,
    ) -> Result<(), KernelError> {
        let residual = residual.map(|(r, r_out)| (r.view(), r_out.view_mut()));
        self.rms_norm_view(variant, x.view(), residual, weight.view(), y.view_mut(), eps)
    }

    /// [`rms_norm`](Self::rms_norm) over views of device memory (a device view of a
    /// [`Tensor`] or of a caller's allocation): what the registered kernels call.
    pub fn rms_norm_view(
        &self,
        variant: RmsNormVariant,
        x: TensorView<'_>,
        residual: Option<(TensorView<'_>, TensorViewMut<'_>)>,
        weight: TensorView<'_>,
        mut y: TensorViewMut<'_>,
        eps: f32,
    ) -> Result<(), KernelError> {
        let NormShape { dtype, dtype_index, rows, hidden } =
            self.norm_shape(&x, &y, [("weight", Some(&weight)), ("", None)], eps)?;
        if let Some((r, r_out)) = &residual {
            self.like_x(&x, "residual", r)?;
            self.like_x(&x, "residual_out", r_out)?;
            dense("residual", r.is_contiguous())?;
            dense("residual_out", r_out.is_contiguous())?;
        }
        let packs = hidden / pack(dtype);
        let aligned = hidden.is_multiple_of(pack(dtype));
        let (entry, cfg) = match variant {
            RmsNormVariant::Block | RmsNormVariant::BlockTuned { .. } => {
                let v = match variant {
                    RmsNormVariant::BlockTuned { packs_per_thread } => {
                        let v = usize::from(packs_per_thread);
                        [1, 2, 4, 8].contains(&v).then_some(v).filter(|v| packs.div_ceil(*v) <= 1024)
                    }
                    _ => {
                        block_packs(dtype, hidden, if residual.is_some() { BlockRows::AddRms } else { BlockRows::Rms })
                    }
                };
                let (true, Some(v)) = (aligned, v) else {
                    return Err(outside_row_limits("rms_norm block", dtype, 8 * 1024, hidden));
                };
                let threads = packs.div_ceil(v).next_multiple_of(32).clamp(32, 1024) as u32;
                let wide = v == 2 && (257..=512).contains(&threads) && residual.is_none();
                (
                    if wide { norm_wide_entry(dtype_index) } else { norm_entry(RmsNormVariant::Block, dtype_index, v) },
                    LaunchConfig { grid_dim: (grid(rows)?, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 },
                )
            }
            RmsNormVariant::Warp => {
                let Some(v) = warp_packs(dtype, hidden) else {
                    return Err(outside_row_limits("rms_norm warp", dtype, 4 * 32, hidden));
                };
                (
                    norm_entry(variant, dtype_index, v),
                    LaunchConfig {
                        grid_dim: (grid(rows.div_ceil(8))?, 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    },
                )
            }
            RmsNormVariant::Scalar => {
                let threads = hidden.next_multiple_of(32).clamp(32, 1024) as u32;
                (
                    norm_entry(variant, dtype_index, 0),
                    LaunchConfig { grid_dim: (grid(rows)?, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 },
                )
            }
        };
        if rows == 0 {
            return Ok(());
        }
        let function = self.function(entry)?;
        let mut residual = residual;
        let residual = match &mut residual {
            Some((r, r_out)) => {
                Some((r.cuda_bytes()?.slice(..), hidden, r_out.cuda_bytes_mut()?.slice_mut(..), hidden))
            }
            None => None,
        };
        let args = NormLaunch {
            x: x.cuda_bytes()?.slice(..),
            x_stride: hidden,
            residual,
            weight: weight.cuda_bytes()?.slice(..),
            y: y.cuda_bytes_mut()?.slice_mut(..),
            y_stride: hidden,
            rows,
            hidden,
            element: dtype.size_in_bytes(),
            eps,
        };
        launch::norm(self.stream(), function, entry.name(), cfg, args).map_err(KernelError::from)
    }

    /// `out = silu(gate) · up`, from two tensors or one fused gate-up tensor, all on this
    /// device, of one dtype, contiguous; `out` is `[.., intermediate]`.
    pub fn swiglu(
        &self,
        variant: SwigluVariant,
        input: SwigluDeviceInput<'_>,
        out: &mut Tensor,
    ) -> Result<(), KernelError> {
        let input = match input {
            SwigluDeviceInput::Separate { gate, up } => SwigluViews::Separate { gate: gate.view(), up: up.view() },
            SwigluDeviceInput::Fused(gate_up) => SwigluViews::Fused(gate_up.view()),
        };
        self.swiglu_view(variant, input, out.view_mut())
    }

    /// [`swiglu`](Self::swiglu) over views of device memory.
    pub fn swiglu_view(
        &self,
        variant: SwigluVariant,
        input: SwigluViews<'_>,
        mut out: TensorViewMut<'_>,
    ) -> Result<(), KernelError> {
        let dtype = out.dtype();
        let dtype_index = dtype_index(dtype)?;
        let (rows, inter) = rows_and_hidden(&out)?;
        self.check_on_device("out", out.device())?;
        dense("out", out.is_contiguous())?;
        let (gate, up, gate_offset, up_offset, in_stride) = match input {
            SwigluViews::Separate { gate, up } => {
                for (what, t) in [("gate", &gate), ("up", &up)] {
                    self.check_on_device(what, t.device())?;
                    dense(what, t.is_contiguous())?;
                    if t.dtype() != dtype || t.dims() != out.dims() {
                        return Err(invalid(format!(
                            "{what} must be {dtype} {:?} like out, is {} {:?}",
                            out.dims(),
                            t.dtype(),
                            t.dims()
                        )));
                    }
                }
                (gate, up, 0, 0, inter)
            }
            SwigluViews::Fused(gate_up) => {
                self.check_on_device("gate_up", gate_up.device())?;
                dense("gate_up", gate_up.is_contiguous())?;
                let mut expected = out.dims().to_vec();
                if let Some(last) = expected.last_mut() {
                    *last *= 2;
                }
                if gate_up.dtype() != dtype || gate_up.dims() != expected.as_slice() {
                    return Err(invalid(format!(
                        "gate_up must be {dtype} {expected:?}, is {} {:?}",
                        gate_up.dtype(),
                        gate_up.dims()
                    )));
                }
                (gate_up, gate_up, 0, inter, 2 * inter)
            }
        };
        let (entry, cfg) = match variant {
            SwigluVariant::Vector => {
                if !swiglu_vector_takes(dtype, inter) {
                    return Err(KernelError::Unsupported(format!(
                        "swiglu vector variant needs the intermediate size a multiple of {}, got {inter}",
                        pack(dtype)
                    )));
                }
                // activation.cu: blocks of 256 threads take 512 packs of a row; the grid's y
                // steps over rows (65535 at most, the launch limit; blocks loop past it).
                let chunks = (inter / pack(dtype)).div_ceil(SWIGLU_VEC_PACKS_PER_BLOCK);
                let row_blocks = u32::try_from(rows).map_or(MAX_GRID_Y, |r| r.min(MAX_GRID_Y));
                (
                    swiglu_entry(variant, dtype_index),
                    LaunchConfig {
                        grid_dim: (grid(chunks)?, row_blocks, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    },
                )
            }
            SwigluVariant::Scalar => (
                swiglu_entry(variant, dtype_index),
                LaunchConfig {
                    grid_dim: (grid((rows * inter).div_ceil(256))?, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                },
            ),
        };
        if rows == 0 {
            return Ok(());
        }
        let element = dtype.size_in_bytes();
        let function = self.function(entry)?;
        let args = SwigluLaunch {
            gate: gate.cuda_bytes()?.slice(gate_offset * element..),
            gate_stride: in_stride,
            up: up.cuda_bytes()?.slice(up_offset * element..),
            up_stride: in_stride,
            out: out.cuda_bytes_mut()?.slice_mut(..),
            out_stride: inter,
            rows,
            inter,
            element,
        };
        launch::swiglu(self.stream(), function, entry.name(), cfg, args).map_err(KernelError::from)
    }
}

impl CudaDevice {
    /// `y = (x − mean) / sqrt(var + eps) · weight (+ bias)` per row of `x` `[.., hidden]`.
    pub fn layer_norm(
        &self,
        variant: LayerNormVariant,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        y: &mut Tensor,
        eps: f32,
    ) -> Result<(), KernelError> {
        self.layer_norm_view(variant, x.view(), weight.view(), bias.map(Tensor::view), y.view_mut(), eps)
    }

    /// [`layer_norm`](Self::layer_norm) over views of device memory.
    pub fn layer_norm_view(
        &self,
        variant: LayerNormVariant,
        x: TensorView<'_>,
        weight: TensorView<'_>,
        bias: Option<TensorView<'_>>,
        mut y: TensorViewMut<'_>,
        eps: f32,
    ) -> Result<(), KernelError> {
        let NormShape { dtype, dtype_index, rows, hidden } =
            self.norm_shape(&x, &y, [("weight", Some(&weight)), ("bias", bias.as_ref())], eps)?;
        let packs = hidden / pack(dtype);
        let (entry, cfg) = match variant {
            LayerNormVariant::Block => {
                let Some(v) = block_packs(dtype, hidden, BlockRows::LayerNorm) else {
                    return Err(outside_row_limits("layer_norm block", dtype, 8 * 1024, hidden));
                };
                let threads = packs.div_ceil(v).next_multiple_of(32).clamp(32, 1024) as u32;
                (
                    layer_norm_entry(dtype_index, v),
                    LaunchConfig { grid_dim: (grid(rows)?, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 },
                )
            }
            LayerNormVariant::Scalar => {
                let threads = hidden.next_multiple_of(32).clamp(32, 1024) as u32;
                (
                    layer_norm_entry(dtype_index, 0),
                    LaunchConfig { grid_dim: (grid(rows)?, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 },
                )
            }
        };
        if rows == 0 {
            return Ok(());
        }
        let function = self.function(entry)?;
        let args = LayerNormLaunch {
            x: x.cuda_bytes()?.slice(..),
            weight: weight.cuda_bytes()?.slice(..),
            bias: bias.map(|b| b.cuda_bytes().map(|s| s.slice(..))).transpose()?,
            y: y.cuda_bytes_mut()?.slice_mut(..),
            rows,
            hidden,
            element: dtype.size_in_bytes(),
            eps,
        };
        launch::layer_norm(self.stream(), function, entry.name(), cfg, args).map_err(KernelError::from)
    }

    /// Rotary embedding of `x` `[batch, seq, heads, head_dim]` (BSHD) in place: token `s` at
    /// position `offset + s`; `cos`/`sin` f32 `[max_positions, rot / 2]`.
    pub fn rope_in_place(
        &self,
        variant: RopeVariant,
        style: RopeStyle,
        x: &mut Tensor,
        tables: RopeTables<'_>,
        offset: usize,
    ) -> Result<(), KernelError> {
        let (cos, sin) = (tables.cos.view(), tables.sin.view());
        self.rope_impl(variant, style, RopeTarget::InPlace(x.view_mut()), None, (cos, sin), offset)
    }

    /// [`rope_in_place`](Self::rope_in_place) over views of device memory: `x`
    /// `[batch, seq, heads, head_dim]` (BSHD), `cos`/`sin` f32 `[max_positions, rot / 2]`.
    pub fn rope_in_place_view(
        &self,
        variant: RopeVariant,
        style: RopeStyle,
        x: TensorViewMut<'_>,
        cos: TensorView<'_>,
        sin: TensorView<'_>,
        offset: usize,
    ) -> Result<(), KernelError> {
        self.rope_impl(variant, style, RopeTarget::InPlace(x), None, (cos, sin), offset)
    }

    /// Rotary embedding of queries and keys in place, in one launch: `q`
    /// `[batch, seq, q_heads, head_dim]` and `k` `[batch, seq, kv_heads, head_dim]` (BSHD, the
    /// same batch, seq and head_dim, one dtype) rotated as [`rope_in_place`](Self::rope_in_place)
    /// rotates each. One launch instead of two, and each thread of the vector variant loads
    /// its cos and sin once for heads of both.
    pub fn rope_qk_in_place(
        &self,
        variant: RopeVariant,
        style: RopeStyle,
        q: &mut Tensor,
        k: &mut Tensor,
        tables: RopeTables<'_>,
        offset: usize,
    ) -> Result<(), KernelError> {
        let (cos, sin) = (tables.cos.view(), tables.sin.view());
        self.rope_impl(variant, style, RopeTarget::InPlace(q.view_mut()), Some(k.view_mut()), (cos, sin), offset)
    }

    /// [`rope_qk_in_place`](Self::rope_qk_in_place) over views of device memory.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_qk_in_place_view(
        &self,
        variant: RopeVariant,
        style: RopeStyle,
        q: TensorViewMut<'_>,
        k: TensorViewMut<'_>,
        cos: TensorView<'_>,
        sin: TensorView<'_>,
        offset: usize,
    ) -> Result<(), KernelError> {
        self.rope_impl(variant, style, RopeTarget::InPlace(q), Some(k), (cos, sin), offset)
    }

    /// Rotary embedding of `x` into `out` (same shape): channels past the rotary width are
    /// copied.
    pub fn rope(
        &self,
        variant: RopeVariant,
        style: RopeStyle,
        x: &Tensor,
        out: &mut Tensor,
        tables: RopeTables<'_>,
        offset: usize,
    ) -> Result<(), KernelError> {
        let (cos, sin) = (tables.cos.view(), tables.sin.view());
        self.rope_impl(variant, style, RopeTarget::OutOfPlace(x.view(), out.view_mut()), None, (cos, sin), offset)
    }

    fn rope_impl(
        &self,
        variant: RopeVariant,
        style: RopeStyle,
        mut target: RopeTarget<'_>,
        mut second: Option<TensorViewMut<'_>>,
        (cos, sin): (TensorView<'_>, TensorView<'_>),
        offset: usize,
    ) -> Result<(), KernelError> {
        let (dtype, x_dims, x_device, x_dense) = match &target {
            RopeTarget::InPlace(x) => (x.dtype(), x.dims(), x.device(), x.is_contiguous()),
            RopeTarget::OutOfPlace(x, _) => (x.dtype(), x.dims(), x.device(), x.is_contiguous()),
        };
        let dtype_index = dtype_index(dtype)?;
        let &[batch, seq, heads, head_dim] = x_dims else {
            return Err(invalid(format!("x must be [batch, seq, heads, head_dim], is {x_dims:?}")));
        };
        self.check_on_device("x", x_device)?;
        dense("x", x_dense)?;
        if let RopeTarget::OutOfPlace(x, out) = &target {
            self.check_on_device("out", out.device())?;
            dense("out", out.is_contiguous())?;
            if out.dtype() != dtype || out.dims() != x.dims() {
                return Err(invalid(format!(
                    "out must be {dtype} {:?} like x, is {} {:?}",
                    x.dims(),
                    out.dtype(),
                    out.dims()
                )));
            }
        }
        let second_heads = match &second {
            Some(k) => {
                self.check_on_device("k", k.device())?;
                dense("k", k.is_contiguous())?;
                match k.dims() {
                    &[b, s, h, d] if k.dtype() == dtype && (b, s, d) == (batch, seq, head_dim) => h,
                    dims => {
                        return Err(invalid(format!(
                            "k must be {dtype} [{batch}, {seq}, heads, {head_dim}] like q, is {} {dims:?}",
                            k.dtype()
                        )));
                    }
                }
            }
            None => 0,
        };
        let (&[positions, half], &[positions_s, half_s]) = (cos.dims(), sin.dims()) else {
            return Err(invalid("cos and sin must be [max_positions, rot / 2]".into()));
        };
        for (what, t) in [("cos", &cos), ("sin", &sin)] {
            self.check_on_device(what, t.device())?;
            dense(what, t.is_contiguous())?;
            if t.dtype() != DType::F32 {
                return Err(invalid(format!("{what} must be float32, is {}", t.dtype())));
            }
        }
        if (positions, half) != (positions_s, half_s) || half == 0 || 2 * half > head_dim {
            return Err(invalid(format!(
                "cos {:?} and sin {:?} must match, with 0 < 2 · rot/2 <= head_dim ({head_dim})",
                cos.dims(),
                sin.dims()
            )));
        }
        if offset.checked_add(seq).is_none_or(|end| end > positions) {
            return Err(invalid(format!("positions {offset}..{} pass the tables' {positions}", offset + seq)));
        }
        let rot = 2 * half;
        let tokens = batch * seq;
        let all_heads = heads + second_heads;
        let p = pack(dtype);
        let cfg = match variant {
            RopeVariant::Vector => {
                let units = rope_vector_units(style, dtype, head_dim, rot)?;
                let (threads, tokens_per_block) = rope_vector_block(units, all_heads).ok_or_else(|| {
                    KernelError::Unsupported(format!(
                        "rope vector variant takes head_dim up to {}, got {head_dim}",
                        ROPE_MAX_UNITS * p
                    ))
                })?;
                LaunchConfig {
                    grid_dim: (grid(tokens.div_ceil(tokens_per_block as usize))?, 1, 1),
                    block_dim: (threads, tokens_per_block, 1),
                    shared_mem_bytes: 0,
                }
            }
            RopeVariant::Scalar => LaunchConfig {
                grid_dim: (grid((tokens * all_heads * (head_dim - half)).div_ceil(256))?, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            },
        };
        let entry = rope_entry(variant, style, dtype_index);
        if tokens == 0 || all_heads == 0 {
            return Ok(());
        }
        let function = self.function(entry)?;
        let buffers = match &mut target {
            RopeTarget::InPlace(x) => RopeBuffers::InPlace(x.cuda_bytes_mut()?.slice_mut(..)),
            RopeTarget::OutOfPlace(x, out) => {
                RopeBuffers::OutOfPlace(x.cuda_bytes()?.slice(..), out.cuda_bytes_mut()?.slice_mut(..))
            }
        };
        let second = match &mut second {
            Some(k) => {
                Some(RopeRows { buffers: RopeBuffers::InPlace(k.cuda_bytes_mut()?.slice_mut(..)), heads: second_heads })
            }
            None => None,
        };
        let args = RopeLaunch {
            first: RopeRows { buffers, heads },
            second,
            cos: cos.cuda_bytes()?.slice(..),
            sin: sin.cuda_bytes()?.slice(..),
            tokens,
            head_dim,
            rot,
            seq,
            offset,
            element: dtype.size_in_bytes(),
        };
        launch::rope(self.stream(), function, entry.name(), cfg, args).map_err(KernelError::from)
    }
}

/// The most 16-byte units (pairs of packs, or packs) per head the rope vector kernel takes:
/// one block row of threads per token.
const ROPE_MAX_UNITS: usize = 1024;

/// The rope vector kernel's block: (threads per token, tokens per block). A thread
/// rotates one unit in about two heads (`ceil(heads / 2)` head groups, so cos and sin are
/// loaded once per two heads at least), and a block holds as many tokens as keep it near
/// 320 threads. Measured on the H100 with a standalone nvcc harness (bf16 NeoX, q
/// 16384×32×128 and k 16384×8×128 in one launch, GB/s, idle-stream CUDA events): 2 heads
/// per thread, 2 tokens per block 2792; 1 head, 1 token 2752; 4 heads, 4 tokens 2762; 5
/// heads, 8 tokens 2711; streaming hints (`__ldcs`/`__stcs`) on the first 2839; the former
/// one-chunk-per-thread kernel, one launch per tensor, 2535.
fn rope_vector_block(units: usize, heads: usize) -> Option<(u32, u32)> {
    if units == 0 || units > ROPE_MAX_UNITS {
        return None;
    }
    let groups = heads.div_ceil(2).clamp(1, ROPE_MAX_UNITS / units);
    let threads = units * groups;
    let tokens_per_block = (320 / threads).max(1);
    Some((u32::try_from(threads).ok()?, u32::try_from(tokens_per_block).ok()?))
}

enum RopeTarget<'a> {
    InPlace(TensorViewMut<'a>),
    OutOfPlace(TensorView<'a>, TensorViewMut<'a>),
}

/// The inputs of [`CudaDevice::swiglu_view`]: views of device memory.
pub enum SwigluViews<'a> {
    /// Gate and up, both `[rows, intermediate]`.
    Separate {
        /// The gate projection.
        gate: TensorView<'a>,
        /// The up projection.
        up: TensorView<'a>,
    },
    /// `[rows, 2 · intermediate]`: gate then up in each row.
    Fused(TensorView<'a>),
}

/// Device kernels read dense row-major memory (they take no strides): anything else is
/// refused before launch.
fn dense(what: &str, contiguous: bool) -> Result<(), KernelError> {
    if contiguous { Ok(()) } else { Err(not_contiguous(what)) }
}

#[cold]
#[inline(never)]
fn not_contiguous(what: &str) -> KernelError {
    KernelError::Unsupported(format!("{what} must be contiguous (row-major, no gaps) for the CUDA kernels"))
}

fn grid(blocks: usize) -> Result<u32, KernelError> {
    match u32::try_from(blocks.max(1)) {
        Ok(b) if b < i32::MAX as u32 => Ok(b),
        _ => Err(too_many_blocks(blocks)),
    }
}

#[cold]
#[inline(never)]
fn too_many_blocks(blocks: usize) -> KernelError {
    KernelError::Unsupported(format!("{blocks} blocks exceed the grid limit"))
}

impl CudaDevice {
    /// `out[m, n] = a[m, k] · b[k, n]` through cuBLAS (`cublasGemmEx`, f32 accumulation),
    /// all three matrices (a `Tensor` is contiguous), of one dtype (bf16, f16 or f32), on this device. f32 runs
    /// in full f32 (no TF32).
    pub fn matmul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<(), KernelError> {
        self.matmul_view(a.view(), b.view(), out.view_mut())
    }

    /// [`matmul`](Self::matmul) over views of device memory. `a` and `out` are row-major;
    /// `b` is row-major `[k, n]` or a transposed `[n, k]` matrix (strides `[1, k]`, how a
    /// linear layer's `[out, in]` weight is passed), which cuBLAS reads transposed.
    pub fn matmul_view(
        &self,
        a: TensorView<'_>,
        b: TensorView<'_>,
        mut out: TensorViewMut<'_>,
    ) -> Result<(), KernelError> {
        let dtype = out.dtype();
        let cuda_type = match dtype {
            DType::BF16 => cudarc::cublas::sys::cudaDataType::CUDA_R_16BF,
            DType::F16 => cudarc::cublas::sys::cudaDataType::CUDA_R_16F,
            DType::F32 => cudarc::cublas::sys::cudaDataType::CUDA_R_32F,
            other => return Err(KernelError::Unsupported(format!("cuda matmul takes bf16, f16 or f32, not {other}"))),
        };
        for (what, t) in [("a", &a as &dyn TensorMeta), ("b", &b), ("out", &out)] {
            self.check_on_device(what, t.device())?;
            if t.dtype() != dtype {
                return Err(invalid(format!("{what} is {}, out is {dtype}: one dtype for all three", t.dtype())));
            }
            if t.shape().rank() != 2 {
                return Err(invalid(format!("{what} must be a matrix, has dims {:?}", t.shape().dims())));
            }
        }
        let (m, k) = (a.dims()[0], a.dims()[1]);
        let n = b.dims()[1];
        if b.dims()[0] != k || out.dims() != [m, n] {
            return Err(invalid(format!(
                "matmul of {:?} by {:?} into {:?}: expected b [{k}, n] and out [{m}, n]",
                a.dims(),
                b.dims(),
                out.dims()
            )));
        }
        dense("a", a.is_contiguous())?;
        dense("out", out.is_contiguous())?;
        let b_transposed = !b.is_contiguous();
        if b_transposed && b.strides() != [1, k] {
            return Err(KernelError::Unsupported(format!(
                "cuda matmul reads b row-major or transposed (strides [1, {k}]), not strides {:?}",
                b.strides()
            )));
        }
        let blas = self.blas()?;
        let args = launch::GemmLaunch {
            a: a.cuda_bytes()?.slice(..),
            b: b.cuda_bytes()?.slice(..),
            b_transposed,
            c: out.cuda_bytes_mut()?.slice_mut(..),
            m,
            n,
            k,
            dtype: cuda_type,
            element: dtype.size_in_bytes(),
        };
        launch::gemm(blas, self.stream(), args).map_err(KernelError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DTYPES: [(DType, &str); 3] = [(DType::BF16, "bf16"), (DType::F16, "f16"), (DType::F32, "f32")];

    /// The load order of `Modules`: every list of every module, flattened.
    fn load_order() -> Vec<&'static str> {
        super::super::ENTRY_POINTS.iter().flat_map(|(_, lists)| lists.iter().copied().flatten().copied()).collect()
    }

    /// Each entry's index finds its own name in the load order, and its name is the one the
    /// `.cu` files give that (variant, dtype, packs) — the arithmetic of the `*_entry`
    /// functions against the lists, for every kernel.
    #[test]
    fn entries_index_their_own_functions() {
        let order = load_order();
        let mut seen = Vec::new();
        let mut check = |entry: Entry, expected: String| {
            assert_eq!(entry.name(), expected);
            assert_eq!(order.get(entry.index()).copied(), Some(entry.name()), "{expected}");
            seen.push(entry.index());
        };
        for (dtype, name) in DTYPES {
            let d = dtype_index(dtype).unwrap();
            for v in [1, 2, 4, 8] {
                check(norm_entry(RmsNormVariant::Block, d, v), format!("rms_norm_block_{name}_v{v}"));
                check(layer_norm_entry(d, v), format!("layer_norm_block_{name}_v{v}"));
            }
            for v in [1, 2, 4] {
                check(norm_entry(RmsNormVariant::Warp, d, v), format!("rms_norm_warp_{name}_v{v}"));
            }
            check(norm_entry(RmsNormVariant::Scalar, d, 0), format!("rms_norm_scalar_{name}"));
            check(norm_wide_entry(d), format!("rms_norm_block_{name}_v2_wide"));
            check(layer_norm_entry(d, 0), format!("layer_norm_scalar_{name}"));
            check(swiglu_entry(SwigluVariant::Vector, d), format!("swiglu_vec_{name}"));
            check(swiglu_entry(SwigluVariant::Scalar, d), format!("swiglu_scalar_{name}"));
            for (variant, kind) in [(RopeVariant::Vector, "vec"), (RopeVariant::Scalar, "scalar")] {
                for (style, style_name) in [(RopeStyle::Neox, "neox"), (RopeStyle::Interleaved, "interleaved")] {
                    check(rope_entry(variant, style, d), format!("rope_{style_name}_{kind}_{name}"));
                }
            }
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), order.len(), "every entry point is reachable, each by one index");
    }

    #[test]
    fn the_fused_residual_add_takes_one_pack_per_thread_while_a_row_fits() {
        assert_eq!(residual_block_packs_per_thread(512), Some(1));
        assert_eq!(residual_block_packs_per_thread(1024), Some(1));
        assert_eq!(residual_block_packs_per_thread(1025), block_packs_per_thread(1025));
        assert_eq!(residual_block_packs_per_thread(8 * 1024 + 1), None);
    }

    #[test]
    fn rms_norm_rows_of_513_to_1024_packs_take_two_packs_per_thread() {
        assert_eq!(rms_block_packs_per_thread(512), block_packs_per_thread(512));
        assert_eq!(rms_block_packs_per_thread(513), Some(2));
        assert_eq!(rms_block_packs_per_thread(1024), Some(2));
        assert_eq!(rms_block_packs_per_thread(1025), Some(4));
        for rows in [BlockRows::Rms, BlockRows::AddRms, BlockRows::LayerNorm] {
            for hidden in (8..=8 * 8192).step_by(8) {
                let v = block_packs(DType::BF16, hidden, rows).expect("a bf16 row of up to 8192 packs");
                assert!((hidden / 8).div_ceil(v) <= 1024, "{rows:?} {hidden}: {v} packs per thread");
            }
        }
    }

    #[test]
    fn rope_blocks_stay_within_the_launch_limits() {
        // q 32 heads + k 8 heads of bf16 head_dim 128, NeoX: 8 units, 20 head groups, 2 tokens.
        assert_eq!(rope_vector_block(8, 40), Some((160, 2)));
        assert_eq!(rope_vector_block(8, 1), Some((8, 40)));
        assert_eq!(rope_vector_block(1024, 64), Some((1024, 1)));
        assert_eq!(rope_vector_block(1025, 1), None);
        for units in [1, 3, 8, 16, 100, 512, 1024] {
            for heads in [1, 2, 7, 40, 128, 4096] {
                let (threads, tokens) = rope_vector_block(units, heads).unwrap();
                assert!((threads as usize).is_multiple_of(units) && threads * tokens <= 1024, "{units} {heads}");
            }
        }
    }
}
