//! Safe entry points of the CUDA kernels: validate, pick the launch shape, launch.

use cudarc::driver::LaunchConfig;
use layerzero_types::{DType, KernelError, RopeStyle, Tensor, TensorMeta, TensorView, TensorViewMut};

use super::CudaDevice;
use super::launch::{self, LayerNormLaunch, NormLaunch, RopeBuffers, RopeLaunch, SwigluLaunch};

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

fn suffix(dtype: DType) -> Result<&'static str, KernelError> {
    match dtype {
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        DType::F32 => Ok("f32"),
        other => {
            Err(KernelError::Unsupported(format!("dtype {other}: the CUDA kernels take bfloat16, float16, float32")))
        }
    }
}

fn pack(dtype: DType) -> usize {
    16 / dtype.size_in_bytes()
}

fn invalid(message: String) -> KernelError {
    KernelError::InvalidArgument(message)
}

/// Entry points are named by literals in norm.cu; map (variant, dtype, V) to them.
fn norm_entry(variant: RmsNormVariant, dtype: &str, v: usize) -> &'static str {
    macro_rules! names {
        ($($variant:ident $d:literal $v:literal => $name:literal),* $(,)?) => {
            match (variant, dtype, v) {
                $((RmsNormVariant::$variant, $d, $v) => $name,)*
                _ => "rms_norm_unknown",
            }
        };
    }
    names! {
        Block "bf16" 1 => "rms_norm_block_bf16_v1", Block "bf16" 2 => "rms_norm_block_bf16_v2",
        Block "bf16" 4 => "rms_norm_block_bf16_v4", Block "bf16" 8 => "rms_norm_block_bf16_v8",
        Block "f16" 1 => "rms_norm_block_f16_v1", Block "f16" 2 => "rms_norm_block_f16_v2",
        Block "f16" 4 => "rms_norm_block_f16_v4", Block "f16" 8 => "rms_norm_block_f16_v8",
        Block "f32" 1 => "rms_norm_block_f32_v1", Block "f32" 2 => "rms_norm_block_f32_v2",
        Block "f32" 4 => "rms_norm_block_f32_v4", Block "f32" 8 => "rms_norm_block_f32_v8",
        Warp "bf16" 1 => "rms_norm_warp_bf16_v1", Warp "bf16" 2 => "rms_norm_warp_bf16_v2", Warp "bf16" 4 => "rms_norm_warp_bf16_v4",
        Warp "f16" 1 => "rms_norm_warp_f16_v1", Warp "f16" 2 => "rms_norm_warp_f16_v2", Warp "f16" 4 => "rms_norm_warp_f16_v4",
        Warp "f32" 1 => "rms_norm_warp_f32_v1", Warp "f32" 2 => "rms_norm_warp_f32_v2", Warp "f32" 4 => "rms_norm_warp_f32_v4",
        Scalar "bf16" 0 => "rms_norm_scalar_bf16", Scalar "f16" 0 => "rms_norm_scalar_f16", Scalar "f32" 0 => "rms_norm_scalar_f32",
    }
}

/// The entry points of norm.cu.
pub(super) const NORM_ENTRY_POINTS: [&str; 24] = [
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

/// Packs each thread of the block variant holds: 2, with as many threads per row as that
/// takes, up to 1024; 4 or 8 only for rows too long for that; fewer threads for rows under
/// 64 packs. Measured on the H100 with the bench's `BlockTuned` sweep (bf16 GB/s, packs per
/// thread 1 / 2 / 4 / 8): 16384×4096 2731 / 2770 / 2729 / 1977, 65536×4096 2894 / 2950 /
/// 2900 / 2084, 4096×8192 2342 / 2479 / 2452 / 1758.
fn block_packs_per_thread(packs: usize) -> Option<usize> {
    match packs {
        p if p > 8 * 1024 => None,
        p if p > 4 * 1024 => Some(8),
        p if p > 2 * 1024 => Some(4),
        p if p > 32 => Some(2),
        _ => Some(1),
    }
}

fn entry(entries: &[&'static str], prefix: &str, dtype: &str) -> &'static str {
    entries
        .iter()
        .copied()
        .find(|e| e.strip_prefix(prefix).is_some_and(|rest| rest == dtype || rest.starts_with(&format!("{dtype}_"))))
        .unwrap_or("missing_entry")
}

fn rows_and_hidden(x: &impl TensorMeta) -> Result<(usize, usize), KernelError> {
    let dims = x.shape().dims();
    let hidden = *dims.last().ok_or_else(|| invalid("x must have at least one dimension".into()))?;
    if hidden == 0 {
        return Err(invalid("x has an empty last dimension".into()));
    }
    Ok((x.shape().numel() / hidden, hidden))
}

/// What the norm kernels learn from checking their common arguments.
struct NormShape {
    dtype: DType,
    name: &'static str,
    rows: usize,
    hidden: usize,
}

impl CudaDevice {
    /// `t` is on this device with `x`'s dtype and dims.
    fn like_x(&self, x: &TensorView<'_>, what: &str, t: &impl TensorMeta) -> Result<(), KernelError> {
        self.check_on_device(what, t.device())?;
        if t.dtype() != x.dtype() || t.shape().dims() != x.dims() {
            return Err(invalid(format!(
                "{what} must be {} {:?} like x, is {} {:?}",
                x.dtype(),
                x.dims(),
                t.dtype(),
                t.shape().dims()
            )));
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
        let name = suffix(dtype)?;
        let (rows, hidden) = rows_and_hidden(x)?;
        self.check_on_device("x", x.device())?;
        self.like_x(x, "y", y)?;
        dense("x", x.is_contiguous())?;
        dense("y", y.is_contiguous())?;
        for (what, t) in per_channel.into_iter().filter_map(|(what, t)| Some((what, t?))) {
            self.check_on_device(what, t.device())?;
            dense(what, t.is_contiguous())?;
            if t.dtype() != dtype || t.dims() != [hidden] {
                return Err(invalid(format!("{what} must be {dtype} [{hidden}], is {} {:?}", t.dtype(), t.dims())));
            }
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(invalid(format!("eps must be finite and non-negative, is {eps}")));
        }
        Ok(NormShape { dtype, name, rows, hidden })
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
        let NormShape { dtype, name, rows, hidden } =
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
                    _ => block_packs_per_thread(packs),
                };
                let (true, Some(v)) = (aligned, v) else {
                    return Err(KernelError::Unsupported(format!(
                        "rms_norm block variant needs hidden a multiple of {} and at most {}, got {hidden}",
                        pack(dtype),
                        8 * 1024 * pack(dtype)
                    )));
                };
                let threads = packs.div_ceil(v).next_multiple_of(32).clamp(32, 1024) as u32;
                (
                    norm_entry(RmsNormVariant::Block, name, v),
                    LaunchConfig { grid_dim: (grid(rows)?, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 },
                )
            }
            RmsNormVariant::Warp => {
                let v = [1, 2, 4].into_iter().find(|v| packs <= 32 * v);
                let (true, Some(v)) = (aligned, v) else {
                    return Err(KernelError::Unsupported(format!(
                        "rms_norm warp variant needs hidden a multiple of {} and at most {}, got {hidden}",
                        pack(dtype),
                        4 * 32 * pack(dtype)
                    )));
                };
                (
                    norm_entry(variant, name, v),
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
                    norm_entry(variant, name, 0),
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
        launch::norm(self.stream(), function, entry, cfg, args).map_err(KernelError::from)
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
        let name = suffix(dtype)?;
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
                if !inter.is_multiple_of(pack(dtype)) {
                    return Err(KernelError::Unsupported(format!(
                        "swiglu vector variant needs the intermediate size a multiple of {}, got {inter}",
                        pack(dtype)
                    )));
                }
                let threads = rows * (inter / pack(dtype));
                let entry = match name {
                    "bf16" => "swiglu_vec_bf16",
                    "f16" => "swiglu_vec_f16",
                    _ => "swiglu_vec_f32",
                };
                (
                    entry,
                    LaunchConfig {
                        grid_dim: (grid(threads.div_ceil(256))?, 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    },
                )
            }
            SwigluVariant::Scalar => {
                let entry = match name {
                    "bf16" => "swiglu_scalar_bf16",
                    "f16" => "swiglu_scalar_f16",
                    _ => "swiglu_scalar_f32",
                };
                (
                    entry,
                    LaunchConfig {
                        grid_dim: (grid((rows * inter).div_ceil(256))?, 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    },
                )
            }
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
        launch::swiglu(self.stream(), function, entry, cfg, args).map_err(KernelError::from)
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
        let NormShape { dtype, name, rows, hidden } =
            self.norm_shape(&x, &y, [("weight", Some(&weight)), ("bias", bias.as_ref())], eps)?;
        let packs = hidden / pack(dtype);
        let (entry_name, cfg) = match variant {
            LayerNormVariant::Block => {
                let v =
                    block_packs_per_thread(packs).filter(|_| hidden.is_multiple_of(pack(dtype))).ok_or_else(|| {
                        KernelError::Unsupported(format!(
                            "layer_norm block variant needs hidden a multiple of {} and at most {}, got {hidden}",
                            pack(dtype),
                            8 * 1024 * pack(dtype)
                        ))
                    })?;
                let threads = packs.div_ceil(v).next_multiple_of(32).clamp(32, 1024) as u32;
                let prefix = format!("layer_norm_block_{name}_v{v}");
                let entry = LAYER_NORM_ENTRY_POINTS.iter().copied().find(|e| *e == prefix).unwrap_or("missing_entry");
                (entry, LaunchConfig { grid_dim: (grid(rows)?, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 })
            }
            LayerNormVariant::Scalar => {
                let threads = hidden.next_multiple_of(32).clamp(32, 1024) as u32;
                (
                    entry(&LAYER_NORM_ENTRY_POINTS, "layer_norm_scalar_", name),
                    LaunchConfig { grid_dim: (grid(rows)?, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 },
                )
            }
        };
        if rows == 0 {
            return Ok(());
        }
        let function = self.function(entry_name)?;
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
        launch::layer_norm(self.stream(), function, entry_name, cfg, args).map_err(KernelError::from)
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
        self.rope_impl(variant, style, RopeTarget::InPlace(x.view_mut()), (cos, sin), offset)
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
        self.rope_impl(variant, style, RopeTarget::InPlace(x), (cos, sin), offset)
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
        self.rope_impl(variant, style, RopeTarget::OutOfPlace(x.view(), out.view_mut()), (cos, sin), offset)
    }

    fn rope_impl(
        &self,
        variant: RopeVariant,
        style: RopeStyle,
        mut target: RopeTarget<'_>,
        (cos, sin): (TensorView<'_>, TensorView<'_>),
        offset: usize,
    ) -> Result<(), KernelError> {
        let (dtype, x_dims, x_device, x_dense) = match &target {
            RopeTarget::InPlace(x) => (x.dtype(), x.dims().to_owned(), x.device(), x.is_contiguous()),
            RopeTarget::OutOfPlace(x, _) => (x.dtype(), x.dims().to_owned(), x.device(), x.is_contiguous()),
        };
        let name = suffix(dtype)?;
        let &[batch, seq, heads, head_dim] = x_dims.as_slice() else {
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
        let style_name = match style {
            RopeStyle::Neox => "neox",
            RopeStyle::Interleaved => "interleaved",
        };
        let p = pack(dtype);
        let (kind, threads) = match variant {
            RopeVariant::Vector => {
                let rotated = if style == RopeStyle::Neox { half } else { rot };
                if !head_dim.is_multiple_of(p) || !rotated.is_multiple_of(p) {
                    return Err(KernelError::Unsupported(format!(
                        "rope vector variant needs head_dim ({head_dim}) and the rotated width ({rotated}) multiples of {p}"
                    )));
                }
                ("vec", tokens * heads * (head_dim / p))
            }
            RopeVariant::Scalar => ("scalar", tokens * heads * (head_dim - half)),
        };
        let prefix = format!("rope_{style_name}_{kind}_");
        let entry_name = entry(&ROPE_ENTRY_POINTS, &prefix, name);
        let cfg = LaunchConfig {
            grid_dim: (grid(threads.div_ceil(256))?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        if tokens == 0 || heads == 0 {
            return Ok(());
        }
        let function = self.function(entry_name)?;
        let buffers = match &mut target {
            RopeTarget::InPlace(x) => RopeBuffers::InPlace(x.cuda_bytes_mut()?.slice_mut(..)),
            RopeTarget::OutOfPlace(x, out) => {
                RopeBuffers::OutOfPlace(x.cuda_bytes()?.slice(..), out.cuda_bytes_mut()?.slice_mut(..))
            }
        };
        let args = RopeLaunch {
            buffers,
            cos: cos.cuda_bytes()?.slice(..),
            sin: sin.cuda_bytes()?.slice(..),
            tokens,
            heads,
            head_dim,
            rot,
            seq,
            offset,
            element: dtype.size_in_bytes(),
        };
        launch::rope(self.stream(), function, entry_name, cfg, args).map_err(KernelError::from)
    }
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
    if contiguous {
        Ok(())
    } else {
        Err(KernelError::Unsupported(format!("{what} must be contiguous (row-major, no gaps) for the CUDA kernels")))
    }
}

fn grid(blocks: usize) -> Result<u32, KernelError> {
    u32::try_from(blocks.max(1))
        .ok()
        .filter(|&b| b < i32::MAX as u32)
        .ok_or_else(|| KernelError::Unsupported(format!("{blocks} blocks exceed the grid limit")))
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
