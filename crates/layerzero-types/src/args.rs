//! What a kernel is called with and what it returns: one argument struct per operation
//! family, borrowed from the caller ([`OpArgs`]), and [`KernelError`].
//!
//! Inputs are [`TensorView`]s over the caller's memory and the output is a
//! [`TensorViewMut`] the caller passes, so a call allocates nothing. Argument mapping is
//! checked by the compiler: an attention kernel is a `fn(&mut AttentionArgs<'_>)`, and
//! [`KernelImpl`] wraps it for tables that hold kernels of every family.

use std::fmt;
use std::sync::Arc;

use crate::{Layout, Operation, OperationType, SelectionContext, TensorView, TensorViewMut, TypesError};

/// Scaled dot-product attention: `softmax(q·kᵀ·scale + mask)·v`.
///
/// Shapes, in `layout` (`BSHD` shown): query `[batch, seq_q, heads, head_dim]`, key
/// `[batch, seq_k, kv_heads, head_dim]`, value `[batch, seq_k, kv_heads, head_dim_v]`,
/// output `[batch, seq_q, heads, head_dim_v]` in the same layout. `kv_heads` divides
/// `heads` (GQA/MQA: query head `h` reads KV head `h / (heads / kv_heads)`).
///
/// Masks are aligned bottom-right, as in decode against a KV cache: query row `i` sits at
/// absolute position `p = seq_k - seq_q + i` and may see key `j` when `j <= p` (causal) and
/// `j > p - window_size` (sliding window). With `seq_q = 1` a causal query sees every key.
pub struct AttentionArgs<'a> {
    /// Queries.
    pub query: TensorView<'a>,
    /// Keys.
    pub key: TensorView<'a>,
    /// Values.
    pub value: TensorView<'a>,
    /// Where the result is written.
    pub output: TensorViewMut<'a>,
    /// The layout of all four tensors.
    pub layout: Layout,
    /// Causal masking (bottom-right aligned).
    pub is_causal: bool,
    /// Score scale; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Sliding window in keys, counting the query's own position.
    pub window_size: Option<u32>,
}

impl AttentionArgs<'_> {
    /// The selection context these arguments describe.
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        let mut ctx = SelectionContext::from_attention(&self.query, &self.key, self.layout)?;
        ctx.is_causal = Some(self.is_causal);
        ctx.window_size = self.window_size;
        ctx.validate()?;
        Ok(ctx)
    }

    /// The score scale: the one given, or `1 / sqrt(head_dim)`.
    pub fn effective_scale(&self) -> f32 {
        self.scale.unwrap_or_else(|| {
            let head_dim = self.query.dims().last().copied().unwrap_or(1).max(1);
            1.0 / (head_dim as f32).sqrt()
        })
    }
}

/// RMS or layer normalisation over the last dimension, optionally after a residual add.
///
/// `input` and `output` are `[.., hidden]`; `weight` (and `bias`, for layer norm only) are
/// `[hidden]`. RMS norm: `x / sqrt(mean(x²) + eps) · weight`. Layer norm:
/// `(x − mean) / sqrt(var + eps) · weight + bias`.
///
/// With a [`residual`](Self::residual) (rms_norm only), the call is a decoder layer's
/// residual add fused with the norm that follows it: `s = input + residual.input`, rounded
/// to the dtype, is written to `residual.output` (the layer's new residual stream), and
/// `output = rms_norm(s) · weight` normalises that rounded sum. The context says so
/// ([`SelectionContext::fused_residual`]), so selection picks only kernels whose spec
/// claims [`residual`](crate::KernelConstraints::residual); a layer_norm kernel, or one
/// that does not take a residual, refuses it with [`KernelError::InvalidArgument`].
///
/// ```
/// use layerzero_types::{DType, NormArgs, Residual, Tensor};
///
/// // A decoder layer after attention: `hidden` is the layer's input (the residual stream),
/// // `attention_out` the output projection.
/// let (hidden, attention_out) = (Tensor::zeros(&[2, 8], DType::BF16)?, Tensor::zeros(&[2, 8], DType::BF16)?);
/// let weight = Tensor::zeros(&[8], DType::BF16)?;
/// let (mut normed, mut stream) = (Tensor::zeros(&[2, 8], DType::BF16)?, Tensor::zeros(&[2, 8], DType::BF16)?);
/// let args = NormArgs {
///     input: attention_out.view(),
///     weight: weight.view(),
///     bias: None,
///     output: normed.view_mut(),
///     eps: 1e-6,
///     residual: Some(Residual { input: hidden.view(), output: stream.view_mut() }),
/// };
/// assert_eq!(args.context()?.fused_residual, Some(true));
/// # Ok::<(), layerzero_types::TypesError>(())
/// ```
pub struct NormArgs<'a> {
    /// The rows to normalise (with a residual: the rows added to the residual stream,
    /// such as attention's output projection).
    pub input: TensorView<'a>,
    /// Per-channel scale.
    pub weight: TensorView<'a>,
    /// Per-channel shift (layer norm only).
    pub bias: Option<TensorView<'a>>,
    /// Where the result is written.
    pub output: TensorViewMut<'a>,
    /// Added to the variance for stability.
    pub eps: f32,
    /// The residual stream to add `input` to before normalising (rms_norm only); `None`
    /// for a plain norm.
    pub residual: Option<Residual<'a>>,
}

/// The residual stream of a fused residual add and rms_norm ([`NormArgs::residual`]): both
/// of `input`'s shape and dtype, on its device. `output` receives `input + residual.input`
/// (rounded to the dtype); it must not overlap any other tensor of the call.
pub struct Residual<'a> {
    /// The residual stream before the add (the decoder layer's input).
    pub input: TensorView<'a>,
    /// Where the sum, the residual stream after the add, is written.
    pub output: TensorViewMut<'a>,
}

impl<'a> NormArgs<'a> {
    /// A norm of `input` by `weight` into `output`: no bias, no residual (add them with
    /// [`with_bias`](Self::with_bias) and [`with_residual`](Self::with_residual)).
    ///
    /// ```
    /// use layerzero_types::{DType, NormArgs, OpArgs, Tensor};
    ///
    /// let (x, w) = (Tensor::zeros(&[2, 4], DType::F32)?, Tensor::zeros(&[4], DType::F32)?);
    /// let (mut y, r, mut sum) = (Tensor::zeros(&[2, 4], DType::F32)?, x.clone(), Tensor::zeros(&[2, 4], DType::F32)?);
    /// let args = NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6).with_residual(r.view(), sum.view_mut());
    /// assert_eq!(OpArgs::Norm(args).context()?.fused_residual, Some(true));
    /// # Ok::<(), layerzero_types::TypesError>(())
    /// ```
    pub fn new(input: TensorView<'a>, weight: TensorView<'a>, output: TensorViewMut<'a>, eps: f32) -> Self {
        NormArgs { input, weight, bias: None, output, eps, residual: None }
    }

    /// The same arguments with a per-channel shift (layer norm).
    #[must_use]
    pub fn with_bias(self, bias: TensorView<'a>) -> Self {
        NormArgs { bias: Some(bias), ..self }
    }

    /// The same arguments with a residual add before the norm (rms_norm): `sum` receives
    /// `input + residual`, which is then normalised.
    #[must_use]
    pub fn with_residual(self, residual: TensorView<'a>, sum: TensorViewMut<'a>) -> Self {
        NormArgs { residual: Some(Residual { input: residual, output: sum }), ..self }
    }

    /// The selection context these arguments describe: the input's, with `hidden_size` its
    /// last dimension and `fused_residual: true` when a residual is given.
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        let mut ctx = SelectionContext::from_tensor(&self.input)?;
        ctx.hidden_size = last_dim(self.input.dims())?;
        if self.residual.is_some() {
            ctx.fused_residual = Some(true);
        }
        Ok(ctx)
    }
}

/// How rotary embedding pairs the channels of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// Rotate-half (GPT-NeoX, Llama): channel `i` pairs with `i + rotary_dim / 2`.
    Neox,
    /// Interleaved (GPT-J): channel `2i` pairs with `2i + 1`.
    Interleaved,
}

impl fmt::Display for RopeStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RopeStyle::Neox => "neox",
            RopeStyle::Interleaved => "interleaved",
        })
    }
}

/// Rotary position embedding, applied in place.
///
/// `x` is `[batch, seq, heads, head_dim]` in `layout`; `cos` and `sin` are float32
/// `[max_positions, rotary_dim / 2]` tables, `rotary_dim <= head_dim` (channels past it are
/// left alone). Token `s` of the sequence is at position `position_offset + s` (decode
/// passes the KV-cache length).
pub struct RopeArgs<'a> {
    /// Queries or keys, rotated in place.
    pub x: TensorViewMut<'a>,
    /// Cosines per position and frequency.
    pub cos: TensorView<'a>,
    /// Sines per position and frequency.
    pub sin: TensorView<'a>,
    /// Position of the first token.
    pub position_offset: usize,
    /// Channel pairing.
    pub style: RopeStyle,
    /// The layout of `x`.
    pub layout: Layout,
}

impl RopeArgs<'_> {
    /// The selection context these arguments describe.
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        let mut ctx = SelectionContext::from_tensor(&self.x)?;
        ctx.layout = Some(self.layout);
        // The head dimension is the last in both layouts.
        ctx.head_dim = self.x.dims().last().map(|&d| u32::try_from(d).unwrap_or(u32::MAX));
        Ok(ctx)
    }
}

/// The inputs of SwiGLU: two tensors, or one with gate and up side by side.
pub enum SwigluInput<'a> {
    /// `gate` and `up`, both `[.., intermediate]`.
    Separate {
        /// The gate projection.
        gate: TensorView<'a>,
        /// The up projection.
        up: TensorView<'a>,
    },
    /// One `[.., 2 · intermediate]` tensor: the gate in the first half of the last
    /// dimension, up in the second (a fused gate-up projection's output).
    Fused(TensorView<'a>),
}

/// `silu(gate) · up`, elementwise; `output` is `[.., intermediate]`.
pub struct SwigluArgs<'a> {
    /// Gate and up.
    pub input: SwigluInput<'a>,
    /// Where the result is written.
    pub output: TensorViewMut<'a>,
}

impl SwigluArgs<'_> {
    /// The selection context these arguments describe; `hidden_size` is the output's last
    /// dimension (the intermediate size, for either form of the input).
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        let mut ctx = match &self.input {
            SwigluInput::Separate { gate, .. } => SelectionContext::from_tensor(gate),
            SwigluInput::Fused(gate_up) => SelectionContext::from_tensor(gate_up),
        }?;
        ctx.hidden_size = last_dim(self.output.dims())?;
        Ok(ctx)
    }
}

/// The last dimension as a context's `hidden_size`: `None` for a scalar (rank 0).
fn last_dim(dims: &[usize]) -> Result<Option<u32>, TypesError> {
    dims.last()
        .map(|&d| {
            u32::try_from(d).map_err(|_| TypesError::InvalidContext {
                field: "hidden_size",
                message: format!("{d} does not fit in 32 bits"),
            })
        })
        .transpose()
}

/// `output = a · b`: `a` is `[m, k]`, `b` is `[k, n]`, `output` is `[m, n]`.
///
/// Strides express transposes without copies: a linear layer's weight stored `[n, k]`
/// (PyTorch's `[out, in]`) is passed as `b` with dims `[k, n]` and strides `[1, k]`.
pub struct MatmulArgs<'a> {
    /// The left operand.
    pub a: TensorView<'a>,
    /// The right operand.
    pub b: TensorView<'a>,
    /// Where the product is written.
    pub output: TensorViewMut<'a>,
}

impl MatmulArgs<'_> {
    /// The selection context these arguments describe (`batch_size` is `m`).
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        SelectionContext::from_tensor(&self.a)
    }
}

/// The kinds of argument structs; each operation takes one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgsKind {
    /// [`AttentionArgs`].
    Attention,
    /// [`NormArgs`].
    Norm,
    /// [`RopeArgs`].
    Rope,
    /// [`SwigluArgs`].
    Swiglu,
    /// [`MatmulArgs`].
    Matmul,
}

impl ArgsKind {
    /// The argument kind an operation takes.
    #[inline]
    pub const fn of(operation: OperationType) -> ArgsKind {
        match operation {
            OperationType::AttentionCausal
            | OperationType::AttentionFull
            | OperationType::AttentionCross
            | OperationType::AttentionSlidingWindow
            | OperationType::AttentionDecode
            | OperationType::AttentionPrefill => ArgsKind::Attention,
            OperationType::NormRms | OperationType::NormLayer => ArgsKind::Norm,
            OperationType::Rope => ArgsKind::Rope,
            OperationType::Swiglu => ArgsKind::Swiglu,
            OperationType::Matmul => ArgsKind::Matmul,
        }
    }
}

impl fmt::Display for ArgsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArgsKind::Attention => "attention",
            ArgsKind::Norm => "norm",
            ArgsKind::Rope => "rope",
            ArgsKind::Swiglu => "swiglu",
            ArgsKind::Matmul => "matmul",
        })
    }
}

/// The arguments of one call, of any operation.
// The norm variant is the largest (up to six views with inline shapes, when a residual is
// given). Boxing it would allocate on every call; the arguments live on the caller's stack
// and are passed by reference, so their size costs a few stores, not a copy per dispatch.
#[allow(clippy::large_enum_variant)]
pub enum OpArgs<'a> {
    /// For the `attention.*` operations.
    Attention(AttentionArgs<'a>),
    /// For `rms_norm` and `layer_norm`.
    Norm(NormArgs<'a>),
    /// For `rope`.
    Rope(RopeArgs<'a>),
    /// For `swiglu`.
    Swiglu(SwigluArgs<'a>),
    /// For `matmul`.
    Matmul(MatmulArgs<'a>),
}

impl OpArgs<'_> {
    /// Which kind of arguments these are.
    #[inline]
    pub const fn kind(&self) -> ArgsKind {
        match self {
            OpArgs::Attention(_) => ArgsKind::Attention,
            OpArgs::Norm(_) => ArgsKind::Norm,
            OpArgs::Rope(_) => ArgsKind::Rope,
            OpArgs::Swiglu(_) => ArgsKind::Swiglu,
            OpArgs::Matmul(_) => ArgsKind::Matmul,
        }
    }

    /// The selection context the arguments describe, from their tensors' metadata.
    ///
    /// Keep [`signature`](Self::signature) in step: it must pack everything read here.
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        match self {
            OpArgs::Attention(args) => args.context(),
            OpArgs::Norm(args) => args.context(),
            OpArgs::Rope(args) => args.context(),
            OpArgs::Swiglu(args) => args.context(),
            OpArgs::Matmul(args) => args.context(),
        }
    }

    /// Everything [`context`](Self::context) reads from these arguments, packed into a
    /// few words: two argument sets with equal signatures derive equal contexts (or fail
    /// alike). A dispatcher remembers a selection by it, which is cheaper than deriving
    /// the context and comparing it field by field. `None` when the arguments do not fit
    /// the packing (a dimension past `u32::MAX`, attention tensors not 4-D); callers
    /// then derive the context.
    ///
    /// ```
    /// use layerzero_types::{DType, NormArgs, OpArgs, Tensor};
    ///
    /// let (x, w) = (Tensor::zeros(&[2, 4], DType::F32)?, Tensor::zeros(&[4], DType::F32)?);
    /// let (mut y, mut z) = (Tensor::zeros(&[2, 4], DType::F32)?, Tensor::zeros(&[2, 4], DType::F32)?);
    /// let (input, weight, residual) = (x.view(), w.view(), None);
    /// let a = OpArgs::Norm(NormArgs { input, weight, bias: None, output: y.view_mut(), eps: 1e-6, residual });
    /// let (input, weight, residual) = (x.view(), w.view(), None);
    /// let b = OpArgs::Norm(NormArgs { input, weight, bias: None, output: z.view_mut(), eps: 1e-5, residual });
    /// assert_eq!(a.signature(), b.signature());
    /// assert_eq!(a.context()?, b.context()?);
    /// # Ok::<(), layerzero_types::TypesError>(())
    /// ```
    #[inline(always)]
    pub fn signature(&self) -> Option<ArgsSignature> {
        // The kind comes from this match, not from `kind()`: one branch on the variant.
        let (kind, meta, dims, extra) = match self {
            OpArgs::Attention(args) => {
                // `from_attention` reads both tensors' four dims, dtypes and devices, and
                // the layout; the context adds `is_causal` and `window_size`.
                let (q, k) = (four_dims(args.query.dims())?, four_dims(args.key.dims())?);
                let window = args.window_size.map_or(0, |w| (1 << 32) | u64::from(w));
                let flags = u64::from(args.is_causal) | (args.layout as u64) << 1;
                let meta = tensor_code(args.query.dtype(), args.query.device())
                    | tensor_code(args.key.dtype(), args.key.device()) << 24
                    | flags << 48;
                return Some(ArgsSignature {
                    words: [ArgsKind::Attention as u64 | meta << 8, q[0], q[1], k[0], k[1], window],
                });
            }
            // Norms also read the input's last dimension (hidden_size), in word 2, and
            // whether a residual is given.
            OpArgs::Norm(args) => (
                ArgsKind::Norm,
                tensor_meta(&args.input) | u64::from(args.residual.is_some()) << 34,
                args.input.dims(),
                last_word(args.input.dims())?,
            ),
            // Rope also reads the layout and the last dimension (head_dim).
            OpArgs::Rope(args) => (
                ArgsKind::Rope,
                tensor_meta(&args.x) | (args.layout as u64) << 32,
                args.x.dims(),
                last_word(args.x.dims())?,
            ),
            // Swiglu also reads the output's last dimension (hidden_size).
            OpArgs::Swiglu(args) => {
                let last = last_word(args.output.dims())?;
                match &args.input {
                    SwigluInput::Separate { gate, .. } => (ArgsKind::Swiglu, tensor_meta(gate), gate.dims(), last),
                    SwigluInput::Fused(gate_up) => {
                        (ArgsKind::Swiglu, tensor_meta(gate_up) | 1 << 33, gate_up.dims(), last)
                    }
                }
            }
            OpArgs::Matmul(args) => (ArgsKind::Matmul, tensor_meta(&args.a), args.a.dims(), 0),
        };
        // `from_tensor` reads the rank and the first two dims.
        let dim = |i: usize| dims.get(i).map_or(Some(0), |&d| u32::try_from(d).ok().map(u64::from));
        let first_two = dim(0)? | dim(1)? << 32;
        Some(ArgsSignature { words: [kind as u64 | meta << 8, first_two, extra, 0, 0, 0] })
    }
}

/// What [`OpArgs::context`] reads from a call's arguments, packed (see
/// [`OpArgs::signature`]). Equal signatures mean equal derived contexts.
#[derive(Clone, Copy, Debug)]
pub struct ArgsSignature {
    words: [u64; 6],
}

impl PartialEq for ArgsSignature {
    /// Word by word, branch-free (a derived compare of the array calls `memcmp`).
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.words.iter().zip(&other.words).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl Eq for ArgsSignature {}

impl std::hash::Hash for ArgsSignature {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.words.hash(state);
    }
}

impl ArgsSignature {
    /// The packed words, to hash.
    pub fn words(&self) -> &[u64; 6] {
        &self.words
    }
}

/// A tensor's dtype and device in 24 bits: the dtype's code, then 0 for the host or
/// 1 + the CUDA ordinal.
#[inline]
fn tensor_code(dtype: crate::DType, device: crate::Device) -> u64 {
    let device = match device {
        crate::Device::Cpu => 0,
        crate::Device::Cuda(ordinal) => 1 + u64::from(ordinal),
    };
    dtype as u64 | device << 6
}

/// A tensor's dtype, device and rank (what `from_tensor` reads besides the dims).
#[inline]
fn tensor_meta(tensor: &impl crate::TensorMeta) -> u64 {
    tensor_code(tensor.dtype(), tensor.device()) | (tensor.shape().dims().len() as u64 & 0xff) << 24
}

/// The last dimension as a signature word: 0 for a scalar, 1 + the dimension otherwise
/// (a rank-0 output and an empty last dimension derive different contexts); `None` past
/// `u32::MAX`, which does not pack.
#[inline]
fn last_word(dims: &[usize]) -> Option<u64> {
    match dims.last() {
        None => Some(0),
        Some(&d) => u32::try_from(d).ok().map(|d| 1 + u64::from(d)),
    }
}

/// Four dims as two words of two `u32`s; `None` unless there are exactly four and each fits.
#[inline]
fn four_dims(dims: &[usize]) -> Option<[u64; 2]> {
    let &[a, b, c, d] = dims else { return None };
    let pack =
        |lo: usize, hi: usize| Some(u64::from(u32::try_from(lo).ok()?) | u64::from(u32::try_from(hi).ok()?) << 32);
    Some([pack(a, b)?, pack(c, d)?])
}

/// Why a kernel did not produce its output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The arguments break the operation's contract (shapes, dtypes, devices, strides);
    /// the message says what was expected and what was given.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The arguments are valid for the operation but outside what this kernel handles
    /// (a case its spec should have excluded).
    #[error("unsupported by this kernel: {0}")]
    Unsupported(String),
    /// The kernel was handed another operation family's arguments.
    #[error("wrong arguments: the kernel takes {expected} arguments, got {actual}")]
    WrongArguments {
        /// What the kernel takes.
        expected: ArgsKind,
        /// What it was given.
        actual: ArgsKind,
    },
    /// No kernel is mapped to the operation: a static router (`#[static_dispatch]`) without
    /// a `default` was asked for an operation its map does not name.
    #[error("no kernel is mapped to operation `{operation}`")]
    NoKernel {
        /// The operation asked for.
        operation: Operation,
    },
    /// A tensor could not be viewed as the kernel needs.
    #[error(transparent)]
    Tensor(#[from] TypesError),
    /// The backend (a CUDA launch, an allocation) failed.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What failed.
        message: String,
    },
}

/// What a kernel returns.
pub type KernelResult = Result<(), KernelError>;

type DynKernel = dyn Fn(&mut OpArgs<'_>) -> KernelResult + Send + Sync;

/// A kernel of any family, callable with [`OpArgs`]; cheap to clone.
///
/// ```
/// use layerzero_types::{ArgsKind, KernelImpl, KernelResult, NormArgs};
///
/// fn my_norm(_args: &mut NormArgs<'_>) -> KernelResult {
///     Ok(())
/// }
///
/// let kernel = KernelImpl::norm(my_norm);
/// assert_eq!(kernel.kind(), ArgsKind::Norm);
/// ```
#[derive(Clone)]
pub struct KernelImpl {
    kind: ArgsKind,
    run: Arc<DynKernel>,
}

macro_rules! kernel_constructors {
    ($($name:ident: $args:ident => $variant:ident),* $(,)?) => {$(
        #[doc = concat!("Wraps a kernel that takes [`", stringify!($args), "`].")]
        pub fn $name(kernel: impl Fn(&mut $args<'_>) -> KernelResult + Send + Sync + 'static) -> KernelImpl {
            KernelImpl {
                kind: ArgsKind::$variant,
                run: Arc::new(move |args: &mut OpArgs<'_>| match args {
                    OpArgs::$variant(args) => kernel(args),
                    other => Err(KernelError::WrongArguments { expected: ArgsKind::$variant, actual: other.kind() }),
                }),
            }
        }
    )*};
}

impl KernelImpl {
    kernel_constructors! {
        attention: AttentionArgs => Attention,
        norm: NormArgs => Norm,
        rope: RopeArgs => Rope,
        swiglu: SwigluArgs => Swiglu,
        matmul: MatmulArgs => Matmul,
    }

    /// The kind of arguments the kernel takes.
    pub fn kind(&self) -> ArgsKind {
        self.kind
    }

    /// Runs the kernel; arguments of another kind are [`KernelError::WrongArguments`].
    #[inline]
    pub fn call(&self, args: &mut OpArgs<'_>) -> KernelResult {
        (self.run)(args)
    }
}

impl fmt::Debug for KernelImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelImpl").field("kind", &self.kind).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Tensor};

    /// (signature, derived context) of many argument sets of every kind: shapes of ranks 1
    /// to 4, two dtypes, both layouts, causal or not, windows, norms with and without a
    /// residual, mismatched attention keys.
    fn signatures_and_contexts() -> Vec<(Option<ArgsSignature>, Result<SelectionContext, TypesError>)> {
        // `[2, 2, 3, 4]` and `[2, 2, 5, 4]` differ only past the dims `from_tensor` reads
        // and the last (`hidden_size`, `head_dim`): equal signatures. `[2, 2, 3, 8]` differs
        // from them in the last dimension only.
        let shapes: [&[usize]; 9] = [
            &[3],
            &[2, 3],
            &[3, 2],
            &[2, 3, 4],
            &[1, 2, 3, 4],
            &[2, 3, 2, 4],
            &[2, 2, 3, 4],
            &[2, 2, 5, 4],
            &[2, 2, 3, 8],
        ];
        let mut out = Vec::new();
        let mut record = |args: OpArgs<'_>| out.push((args.signature(), args.context()));
        let table = Tensor::zeros(&[8, 2], DType::F32).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            for dims in shapes {
                let x = Tensor::zeros(dims, dtype).unwrap();
                let w = Tensor::zeros(&[*dims.last().unwrap()], dtype).unwrap();
                let (mut y, mut sum) = (Tensor::zeros(dims, dtype).unwrap(), Tensor::zeros(dims, dtype).unwrap());
                for with_residual in [false, true] {
                    record(OpArgs::Norm(NormArgs {
                        input: x.view(),
                        weight: w.view(),
                        bias: None,
                        output: y.view_mut(),
                        eps: 1e-6,
                        residual: with_residual.then(|| Residual { input: x.view(), output: sum.view_mut() }),
                    }));
                }
                let input = SwigluInput::Separate { gate: x.view(), up: x.view() };
                record(OpArgs::Swiglu(SwigluArgs { input, output: y.view_mut() }));
                record(OpArgs::Swiglu(SwigluArgs { input: SwigluInput::Fused(x.view()), output: y.view_mut() }));
                record(OpArgs::Matmul(MatmulArgs { a: x.view(), b: x.view(), output: y.view_mut() }));
                for layout in [Layout::Bshd, Layout::Bhsd] {
                    let (cos, sin) = (table.view(), table.view());
                    let style = RopeStyle::Neox;
                    record(OpArgs::Rope(RopeArgs { x: y.view_mut(), cos, sin, position_offset: 0, style, layout }));
                }
            }
            // Swiglu's hidden_size is its output's last dimension, which its input does not
            // give: one input, outputs of three widths (a fused gate-up row is twice its output).
            let gate_up = Tensor::zeros(&[2, 8], dtype).unwrap();
            for output in [&[2, 4][..], &[2, 8], &[2, 2]] {
                let mut y = Tensor::zeros(output, dtype).unwrap();
                record(OpArgs::Swiglu(SwigluArgs { input: SwigluInput::Fused(gate_up.view()), output: y.view_mut() }));
                let input = SwigluInput::Separate { gate: gate_up.view(), up: gate_up.view() };
                record(OpArgs::Swiglu(SwigluArgs { input, output: y.view_mut() }));
            }
            for q_dims in &shapes[4..7] {
                for k_dims in &shapes[3..7] {
                    let (q, v) = (Tensor::zeros(q_dims, DType::F32).unwrap(), Tensor::zeros(k_dims, dtype).unwrap());
                    let k = Tensor::zeros(k_dims, dtype).unwrap();
                    let mut o = Tensor::zeros(q_dims, DType::F32).unwrap();
                    for layout in [Layout::Bshd, Layout::Bhsd] {
                        for (is_causal, window_size) in [(false, None), (true, None), (true, Some(2)), (true, Some(0))]
                        {
                            record(OpArgs::Attention(AttentionArgs {
                                query: q.view(),
                                key: k.view(),
                                value: v.view(),
                                output: o.view_mut(),
                                layout,
                                is_causal,
                                scale: None,
                                window_size,
                            }));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn equal_signatures_derive_equal_contexts() {
        let cases = signatures_and_contexts();
        let signed = cases.iter().filter(|(signature, _)| signature.is_some()).count();
        let valid = cases.iter().filter(|(_, context)| context.is_ok()).count();
        // Only the 3-D attention keys do not pack; mismatched attention shapes and dtypes fail.
        assert!(signed > 200 && valid > 100, "{signed} signed, {valid} valid of {}", cases.len());
        let mut equal_pairs = 0;
        for (i, (sa, ca)) in cases.iter().enumerate() {
            for (sb, cb) in &cases[i + 1..] {
                if sa.is_some() && sa == sb {
                    equal_pairs += 1;
                    assert_eq!(ca.as_ref().ok(), cb.as_ref().ok(), "{sa:?}");
                    assert_eq!(ca.is_ok(), cb.is_ok());
                }
            }
        }
        assert!(equal_pairs >= 8, "{equal_pairs} pairs with equal signatures");
        // Not one signature for everything: the valid cases have many.
        let mut distinct: Vec<_> = cases.iter().filter_map(|(s, c)| s.and(c.as_ref().ok().map(|_| s))).collect();
        distinct.sort_by_key(|s| s.map(|s| s.words));
        distinct.dedup();
        assert!(distinct.len() >= 50, "{} distinct signatures", distinct.len());
        // A norm call with a residual differs from one without in both.
        let with_residual = cases.iter().filter(|(_, c)| c.as_ref().is_ok_and(|c| c.fused_residual == Some(true)));
        assert_eq!(with_residual.count(), 2 * 9, "one per dtype (2) and shape (9)");
    }

    #[test]
    fn norms_and_swiglu_derive_their_hidden_size() {
        let x = Tensor::zeros(&[2, 3, 64], DType::BF16).unwrap();
        let w = Tensor::zeros(&[64], DType::BF16).unwrap();
        let mut y = Tensor::zeros(&[2, 3, 64], DType::BF16).unwrap();
        let norm =
            NormArgs { input: x.view(), weight: w.view(), bias: None, output: y.view_mut(), eps: 1e-6, residual: None };
        assert_eq!(norm.context().unwrap().hidden_size, Some(64));

        let gate_up = Tensor::zeros(&[4, 256], DType::F16).unwrap();
        let mut out = Tensor::zeros(&[4, 128], DType::F16).unwrap();
        let fused = SwigluArgs { input: SwigluInput::Fused(gate_up.view()), output: out.view_mut() };
        assert_eq!(fused.context().unwrap().hidden_size, Some(128));

        let table = Tensor::zeros(&[8, 2], DType::F32).unwrap();
        let rope = RopeArgs {
            x: y.view_mut(),
            cos: table.view(),
            sin: table.view(),
            position_offset: 0,
            style: RopeStyle::Neox,
            layout: Layout::Bshd,
        };
        let ctx = rope.context().unwrap();
        assert_eq!((ctx.head_dim, ctx.hidden_size), (Some(64), None));
    }

    fn fill_ones(args: &mut NormArgs<'_>) -> KernelResult {
        args.output.as_mut_slice::<f32>()?.fill(1.0);
        Ok(())
    }

    #[test]
    fn kernel_impl_calls_its_family_and_refuses_others() {
        let input = Tensor::zeros(&[2, 4], DType::F32).unwrap();
        let weight = Tensor::zeros(&[4], DType::F32).unwrap();
        let mut out = vec![0f32; 8];
        let kernel = KernelImpl::norm(fill_ones);
        let mut args = OpArgs::Norm(NormArgs {
            input: input.view(),
            weight: weight.view(),
            bias: None,
            output: TensorViewMut::from_slice(&mut out, &[2, 4]).unwrap(),
            eps: 1e-6,
            residual: None,
        });
        kernel.call(&mut args).unwrap();
        // `args` borrows `out` mutably and is not used past this point.
        assert_eq!(out, [1.0; 8]);

        let a = Tensor::zeros(&[2, 2], DType::F32).unwrap();
        let mut product = vec![0f32; 4];
        let mut wrong = OpArgs::Matmul(MatmulArgs {
            a: a.view(),
            b: a.view(),
            output: TensorViewMut::from_slice(&mut product, &[2, 2]).unwrap(),
        });
        assert_eq!(
            kernel.call(&mut wrong),
            Err(KernelError::WrongArguments { expected: ArgsKind::Norm, actual: ArgsKind::Matmul })
        );
    }

    #[test]
    fn attention_args_describe_their_context() {
        let q = Tensor::zeros(&[1, 3, 8, 64], DType::BF16).unwrap();
        let k = Tensor::zeros(&[1, 10, 2, 64], DType::BF16).unwrap();
        let mut out = Tensor::zeros(&[1, 3, 8, 64], DType::BF16).unwrap();
        let args = AttentionArgs {
            query: q.view(),
            key: k.view(),
            value: k.view(),
            output: out.view_mut(),
            layout: Layout::Bshd,
            is_causal: true,
            scale: None,
            window_size: Some(4),
        };
        let ctx = args.context().unwrap();
        assert_eq!(
            (ctx.seq_len_q, ctx.seq_len_k, ctx.is_causal, ctx.window_size),
            (Some(3), Some(10), Some(true), Some(4))
        );
        assert_eq!(args.effective_scale(), 0.125);
    }

    #[test]
    fn every_operation_has_an_args_kind() {
        assert_eq!(ArgsKind::of(OperationType::AttentionDecode), ArgsKind::Attention);
        assert_eq!(ArgsKind::of(OperationType::NormLayer), ArgsKind::Norm);
        assert_eq!(ArgsKind::of(OperationType::Swiglu).to_string(), "swiglu");
    }
}
