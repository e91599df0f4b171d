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

/// RMS or layer normalisation over the last dimension.
///
/// `input` and `output` are `[.., hidden]`; `weight` (and `bias`, for layer norm only) are
/// `[hidden]`. RMS norm: `x / sqrt(mean(x²) + eps) · weight`. Layer norm:
/// `(x − mean) / sqrt(var + eps) · weight + bias`.
pub struct NormArgs<'a> {
    /// The rows to normalise.
    pub input: TensorView<'a>,
    /// Per-channel scale.
    pub weight: TensorView<'a>,
    /// Per-channel shift (layer norm only).
    pub bias: Option<TensorView<'a>>,
    /// Where the result is written.
    pub output: TensorViewMut<'a>,
    /// Added to the variance for stability.
    pub eps: f32,
}

impl NormArgs<'_> {
    /// The selection context these arguments describe.
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        SelectionContext::from_tensor(&self.input)
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
    /// The selection context these arguments describe.
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        match &self.input {
            SwigluInput::Separate { gate, .. } => SelectionContext::from_tensor(gate),
            SwigluInput::Fused(gate_up) => SelectionContext::from_tensor(gate_up),
        }
    }
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
    pub fn context(&self) -> Result<SelectionContext, TypesError> {
        match self {
            OpArgs::Attention(args) => args.context(),
            OpArgs::Norm(args) => args.context(),
            OpArgs::Rope(args) => args.context(),
            OpArgs::Swiglu(args) => args.context(),
            OpArgs::Matmul(args) => args.context(),
        }
    }
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
