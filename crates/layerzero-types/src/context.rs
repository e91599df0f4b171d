//! [`SelectionContext`]: everything selection may look at for one call.

use std::fmt;

use crate::{ComputeCapability, DType, Device, Layout, Platform, TensorMeta, TypesError};

/// The facts of one call that decide which kernel may and should run it: shapes, dtype,
/// device, flags. Every condition field of seed 000, plus `layer_index`, `window_size`,
/// the device's `compute_capability`, the `hidden_size` of row-wise operations and
/// `fused_residual`.
///
/// A field the caller does not know is `None` ("absent"), never zero: a rule on an absent
/// field does not match, and a kernel constraint on it is not checked.
///
/// Build one with [`SelectionContext::builder`] (validated), from tensors with
/// [`SelectionContext::from_attention`] or [`SelectionContext::from_tensor`], or as a plain
/// struct (then call [`SelectionContext::validate`]).
///
/// ```
/// use layerzero_types::{DType, Device, Platform, SelectionContext};
///
/// let ctx = SelectionContext::builder()
///     .batch_size(8)
///     .seq_len(2048)
///     .num_heads(32)
///     .num_kv_heads(8)
///     .head_dim(128)
///     .dtype(DType::F16)
///     .device(Device::Cuda(0))
///     .is_causal(true)
///     .build()
///     .unwrap();
/// assert_eq!(ctx.platform, Some(Platform::Cuda)); // derived from the device
/// assert!(ctx.uses_gqa());
/// assert_eq!(ctx.tp_size, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelectionContext {
    /// Batch size.
    pub batch_size: Option<u32>,
    /// Sequence length (when queries and keys have the same length).
    pub seq_len: Option<u32>,
    /// Query sequence length.
    pub seq_len_q: Option<u32>,
    /// Key sequence length (the KV cache length in decode).
    pub seq_len_k: Option<u32>,
    /// Attention head dimension.
    pub head_dim: Option<u32>,
    /// Number of query heads.
    pub num_heads: Option<u32>,
    /// Number of key/value heads (fewer than `num_heads` under GQA/MQA).
    pub num_kv_heads: Option<u32>,
    /// Element type of the inputs.
    pub dtype: Option<DType>,
    /// Device the inputs live on.
    pub device: Option<Device>,
    /// Platform of that device.
    pub platform: Option<Platform>,
    /// Layout of attention tensors.
    pub layout: Option<Layout>,
    /// Causal masking.
    pub is_causal: Option<bool>,
    /// Grouped-query attention asked for explicitly.
    pub enable_gqa: Option<bool>,
    /// Dropout probability.
    pub dropout_p: Option<f32>,
    /// A CUDA graph is being captured.
    pub is_cuda_graph_capturing: Option<bool>,
    /// Results must be bit-identical run to run.
    pub requires_deterministic: Option<bool>,
    /// Tensor-parallel world size.
    pub tp_size: Option<u32>,
    /// Pipeline-parallel world size.
    pub pp_size: Option<u32>,
    /// Index of the decoder layer making the call (for per-layer profiles).
    pub layer_index: Option<u32>,
    /// Sliding-window size in tokens.
    pub window_size: Option<u32>,
    /// Compute capability of the device (filled by the dispatcher from the backend registry).
    pub compute_capability: Option<ComputeCapability>,
    /// The length of the rows a row-wise operation works on, the limit that decides
    /// between a kernel's warp, block and scalar variants. Set by the argument structs:
    ///
    /// | operation | `hidden_size` |
    /// |---|---|
    /// | `rms_norm`, `layer_norm` | the input's last dimension (the model's hidden size) |
    /// | `swiglu` | the output's last dimension (the intermediate size; half a fused gate-up row) |
    /// | `rope` | absent: its row is a head, and `head_dim` holds its length |
    /// | `matmul` | absent: `k` and `n` are both "hidden" sizes, and no kernel is limited by either |
    /// | attention | absent: `head_dim` and the sequence lengths describe it |
    pub hidden_size: Option<u32>,
    /// The norm call adds a residual before normalising
    /// ([`NormArgs::residual`](crate::NormArgs::residual)): `true` when it does, absent
    /// otherwise. Only kernels that claim
    /// [`residual`](crate::KernelConstraints::residual) may run it.
    pub fused_residual: Option<bool>,
}

impl SelectionContext {
    /// A builder with every field absent.
    pub fn builder() -> SelectionContextBuilder {
        SelectionContextBuilder::default()
    }

    /// The platform, or the device's platform when only the device is known.
    pub fn effective_platform(&self) -> Option<Platform> {
        self.platform.or(self.device.map(Device::platform))
    }

    /// Whether the call groups query heads over fewer KV heads (GQA/MQA), by the flag or by
    /// the head counts.
    pub fn uses_gqa(&self) -> bool {
        self.enable_gqa == Some(true) || matches!((self.num_heads, self.num_kv_heads), (Some(q), Some(kv)) if q != kv)
    }

    /// The value of one field, or `None` when it is absent.
    pub fn get(&self, field: ContextField) -> Option<FieldValue> {
        use ContextField as F;
        let int = |v: Option<u32>| v.map(|v| FieldValue::Int(u64::from(v)));
        let flag = |v: Option<bool>| v.map(FieldValue::Bool);
        match field {
            F::BatchSize => int(self.batch_size),
            F::SeqLen => int(self.seq_len),
            F::SeqLenQ => int(self.seq_len_q),
            F::SeqLenK => int(self.seq_len_k),
            F::HeadDim => int(self.head_dim),
            F::NumHeads => int(self.num_heads),
            F::NumKvHeads => int(self.num_kv_heads),
            F::DType => self.dtype.map(FieldValue::DType),
            F::Device => self.device.map(FieldValue::Device),
            F::Platform => self.effective_platform().map(FieldValue::Platform),
            F::Layout => self.layout.map(FieldValue::Layout),
            F::IsCausal => flag(self.is_causal),
            F::EnableGqa => flag(self.enable_gqa),
            F::DropoutP => self.dropout_p.map(|p| FieldValue::Float(f64::from(p))),
            F::IsCudaGraphCapturing => flag(self.is_cuda_graph_capturing),
            F::RequiresDeterministic => flag(self.requires_deterministic),
            F::TpSize => int(self.tp_size),
            F::PpSize => int(self.pp_size),
            F::LayerIndex => int(self.layer_index),
            F::WindowSize => int(self.window_size),
            F::ComputeCapability => self.compute_capability.map(FieldValue::ComputeCapability),
            F::HiddenSize => int(self.hidden_size),
            F::FusedResidual => flag(self.fused_residual),
        }
    }

    /// Checks that the fields agree with each other and are in range: `dropout_p` in
    /// `[0, 1]`; head counts, `head_dim`, `window_size`, `tp_size`, `pp_size` and
    /// `hidden_size` at least 1;
    /// `num_kv_heads` dividing `num_heads`; `enable_gqa: false` only with equal head counts;
    /// `platform` matching `device`.
    pub fn validate(&self) -> Result<(), TypesError> {
        let invalid = |field, message: String| Err(TypesError::InvalidContext { field, message });
        if let Some(p) = self.dropout_p
            && !(0.0..=1.0).contains(&p)
        {
            return invalid("dropout_p", format!("must be between 0 and 1, got {p}"));
        }
        for (field, value) in [
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("window_size", self.window_size),
            ("tp_size", self.tp_size),
            ("pp_size", self.pp_size),
            ("hidden_size", self.hidden_size),
        ] {
            if value == Some(0) {
                return invalid(field, "must be at least 1, got 0".into());
            }
        }
        if let (Some(q), Some(kv)) = (self.num_heads, self.num_kv_heads) {
            if q % kv != 0 {
                return invalid("num_kv_heads", format!("({kv}) must divide num_heads ({q})"));
            }
            if self.enable_gqa == Some(false) && q != kv {
                return invalid("enable_gqa", format!("is false but num_heads ({q}) differs from num_kv_heads ({kv})"));
            }
        }
        if let (Some(platform), Some(device)) = (self.platform, self.device)
            && platform != device.platform()
        {
            return invalid("platform", format!("({platform}) disagrees with device ({device})"));
        }
        Ok(())
    }

    /// A context for attention from its query and key tensors (4-D, in `layout`).
    ///
    /// Fills batch size, `seq_len`/`seq_len_q` (queries), `seq_len_k` (keys), head counts,
    /// `head_dim`, dtype, device, platform, layout and `enable_gqa` (true when the KV heads
    /// are fewer). Flags such as `is_causal` are left for the caller to set.
    pub fn from_attention(
        query: &impl TensorMeta,
        key: &impl TensorMeta,
        layout: Layout,
    ) -> Result<SelectionContext, TypesError> {
        let q = attention_dims(query, layout, "query")?;
        let k = attention_dims(key, layout, "key")?;
        let mismatch = |what: &str, a: u32, b: u32| TypesError::InvalidContext {
            field: "key",
            message: format!("has {what} {b}, query has {a}"),
        };
        if q.batch != k.batch {
            return Err(mismatch("batch size", q.batch, k.batch));
        }
        if q.head_dim != k.head_dim {
            return Err(mismatch("head_dim", q.head_dim, k.head_dim));
        }
        if query.dtype() != key.dtype() {
            return Err(TypesError::DTypeMismatch { expected: query.dtype(), actual: key.dtype() });
        }
        if query.device() != key.device() {
            return Err(TypesError::DeviceMismatch { expected: query.device(), actual: key.device() });
        }
        let ctx = SelectionContext {
            batch_size: Some(q.batch),
            seq_len: Some(q.seq),
            seq_len_q: Some(q.seq),
            seq_len_k: Some(k.seq),
            head_dim: Some(q.head_dim),
            num_heads: Some(q.heads),
            num_kv_heads: Some(k.heads),
            dtype: Some(query.dtype()),
            device: Some(query.device()),
            platform: Some(query.device().platform()),
            layout: Some(layout),
            enable_gqa: Some(q.heads != k.heads),
            ..SelectionContext::default()
        };
        ctx.validate()?;
        Ok(ctx)
    }

    /// A context for a row-wise operation (norms, rope, swiglu, matmul) from its main input.
    ///
    /// Fills dtype, device and platform; for a tensor of rank 2 or more the first dimension
    /// is the batch size, and for rank 3 or more the second is the sequence length.
    pub fn from_tensor(input: &impl TensorMeta) -> Result<SelectionContext, TypesError> {
        let dims = input.shape().dims();
        let dim =
            |i: usize, name| -> Result<Option<u32>, TypesError> { dims.get(i).map(|&d| to_u32(d, name)).transpose() };
        Ok(SelectionContext {
            batch_size: if dims.len() >= 2 { dim(0, "batch_size")? } else { None },
            seq_len: if dims.len() >= 3 { dim(1, "seq_len")? } else { None },
            dtype: Some(input.dtype()),
            device: Some(input.device()),
            platform: Some(input.device().platform()),
            ..SelectionContext::default()
        })
    }
}

struct AttentionDims {
    batch: u32,
    seq: u32,
    heads: u32,
    head_dim: u32,
}

fn attention_dims(t: &impl TensorMeta, layout: Layout, name: &'static str) -> Result<AttentionDims, TypesError> {
    let dims = t.shape().dims();
    let &[b, x, y, d] = dims else {
        return Err(TypesError::InvalidContext {
            field: name,
            message: format!("must be 4-D in {layout} layout, has shape {dims:?}"),
        });
    };
    let (s, h) = match layout {
        Layout::Bshd => (x, y),
        Layout::Bhsd => (y, x),
    };
    Ok(AttentionDims {
        batch: to_u32(b, "batch_size")?,
        seq: to_u32(s, "seq_len")?,
        heads: to_u32(h, "num_heads")?,
        head_dim: to_u32(d, "head_dim")?,
    })
}

fn to_u32(value: usize, field: &'static str) -> Result<u32, TypesError> {
    u32::try_from(value)
        .map_err(|_| TypesError::InvalidContext { field, message: format!("{value} does not fit in 32 bits") })
}

/// Builds a [`SelectionContext`] field by field; [`build`](Self::build) validates it.
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct SelectionContextBuilder {
    ctx: SelectionContext,
}

macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets `", stringify!($field), "`.")]
        pub fn $field(mut self, value: $ty) -> Self {
            self.ctx.$field = Some(value);
            self
        }
    )*};
}

impl SelectionContextBuilder {
    setters! {
        batch_size: u32,
        seq_len: u32,
        seq_len_q: u32,
        seq_len_k: u32,
        head_dim: u32,
        num_heads: u32,
        num_kv_heads: u32,
        dtype: DType,
        device: Device,
        platform: Platform,
        layout: Layout,
        is_causal: bool,
        enable_gqa: bool,
        dropout_p: f32,
        is_cuda_graph_capturing: bool,
        requires_deterministic: bool,
        tp_size: u32,
        pp_size: u32,
        layer_index: u32,
        window_size: u32,
        compute_capability: ComputeCapability,
        hidden_size: u32,
        fused_residual: bool,
    }

    /// Validates the context (see [`SelectionContext::validate`]) and fills `platform`
    /// from `device` when only the device was given.
    pub fn build(self) -> Result<SelectionContext, TypesError> {
        let mut ctx = self.ctx;
        ctx.validate()?;
        ctx.platform = ctx.effective_platform();
        Ok(ctx)
    }
}

/// A field of [`SelectionContext`] by name: the condition fields of seed 000's YAML rules
/// (the first 18), then LayerZero's additions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextField {
    /// `batch_size`
    BatchSize,
    /// `seq_len`
    SeqLen,
    /// `seq_len_q`
    SeqLenQ,
    /// `seq_len_k`
    SeqLenK,
    /// `head_dim`
    HeadDim,
    /// `num_heads`
    NumHeads,
    /// `num_kv_heads`
    NumKvHeads,
    /// `dtype`
    DType,
    /// `device`
    Device,
    /// `platform`
    Platform,
    /// `layout`
    Layout,
    /// `is_causal`
    IsCausal,
    /// `enable_gqa`
    EnableGqa,
    /// `dropout_p`
    DropoutP,
    /// `is_cuda_graph_capturing`
    IsCudaGraphCapturing,
    /// `requires_deterministic`
    RequiresDeterministic,
    /// `tp_size`
    TpSize,
    /// `pp_size`
    PpSize,
    /// `layer_index`
    LayerIndex,
    /// `window_size`
    WindowSize,
    /// `compute_capability`
    ComputeCapability,
    /// `hidden_size`
    HiddenSize,
    /// `fused_residual`
    FusedResidual,
}

/// The type of a context field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A non-negative integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// A real number.
    Float,
    /// A dtype name.
    DType,
    /// A device string.
    Device,
    /// A platform name.
    Platform,
    /// A layout name.
    Layout,
    /// `major.minor`.
    ComputeCapability,
}

impl ContextField {
    /// Every field: seed 000's 18 condition fields first, then LayerZero's additions.
    pub const ALL: [ContextField; 23] = [
        ContextField::BatchSize,
        ContextField::SeqLen,
        ContextField::SeqLenQ,
        ContextField::SeqLenK,
        ContextField::HeadDim,
        ContextField::NumHeads,
        ContextField::NumKvHeads,
        ContextField::DType,
        ContextField::Device,
        ContextField::Platform,
        ContextField::Layout,
        ContextField::IsCausal,
        ContextField::EnableGqa,
        ContextField::DropoutP,
        ContextField::IsCudaGraphCapturing,
        ContextField::RequiresDeterministic,
        ContextField::TpSize,
        ContextField::PpSize,
        ContextField::LayerIndex,
        ContextField::WindowSize,
        ContextField::ComputeCapability,
        ContextField::HiddenSize,
        ContextField::FusedResidual,
    ];

    /// The field's name in configs.
    pub const fn as_str(self) -> &'static str {
        use ContextField as F;
        match self {
            F::BatchSize => "batch_size",
            F::SeqLen => "seq_len",
            F::SeqLenQ => "seq_len_q",
            F::SeqLenK => "seq_len_k",
            F::HeadDim => "head_dim",
            F::NumHeads => "num_heads",
            F::NumKvHeads => "num_kv_heads",
            F::DType => "dtype",
            F::Device => "device",
            F::Platform => "platform",
            F::Layout => "layout",
            F::IsCausal => "is_causal",
            F::EnableGqa => "enable_gqa",
            F::DropoutP => "dropout_p",
            F::IsCudaGraphCapturing => "is_cuda_graph_capturing",
            F::RequiresDeterministic => "requires_deterministic",
            F::TpSize => "tp_size",
            F::PpSize => "pp_size",
            F::LayerIndex => "layer_index",
            F::WindowSize => "window_size",
            F::ComputeCapability => "compute_capability",
            F::HiddenSize => "hidden_size",
            F::FusedResidual => "fused_residual",
        }
    }

    /// The type of the field's values.
    pub const fn kind(self) -> FieldKind {
        use ContextField as F;
        match self {
            F::DType => FieldKind::DType,
            F::Device => FieldKind::Device,
            F::Platform => FieldKind::Platform,
            F::Layout => FieldKind::Layout,
            F::IsCausal | F::EnableGqa | F::IsCudaGraphCapturing | F::RequiresDeterministic | F::FusedResidual => {
                FieldKind::Bool
            }
            F::DropoutP => FieldKind::Float,
            F::ComputeCapability => FieldKind::ComputeCapability,
            _ => FieldKind::Int,
        }
    }

    /// The field named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<ContextField> {
        ContextField::ALL.into_iter().find(|field| field.as_str() == name)
    }
}

impl fmt::Display for ContextField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of one context field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue {
    /// An integer field.
    Int(u64),
    /// A boolean field.
    Bool(bool),
    /// `dropout_p`.
    Float(f64),
    /// `dtype`.
    DType(DType),
    /// `device`.
    Device(Device),
    /// `platform`.
    Platform(Platform),
    /// `layout`.
    Layout(Layout),
    /// `compute_capability`.
    ComputeCapability(ComputeCapability),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Int(v) => write!(f, "{v}"),
            FieldValue::Bool(v) => write!(f, "{v}"),
            FieldValue::Float(v) => write!(f, "{v}"),
            FieldValue::DType(v) => write!(f, "{v}"),
            FieldValue::Device(v) => write!(f, "{v}"),
            FieldValue::Platform(v) => write!(f, "{v}"),
            FieldValue::Layout(v) => write!(f, "{v}"),
            FieldValue::ComputeCapability(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn contexts_are_equal_exactly_when_every_field_is() {
        let base = SelectionContext::default();
        // One variant per field that differs from `base` in that field only, plus values
        // 0 and absent told apart, and `dropout_p` compared as a float.
        let variants = [
            SelectionContext { batch_size: Some(0), ..base },
            SelectionContext { seq_len: Some(0), ..base },
            SelectionContext { seq_len_q: Some(1), ..base },
            SelectionContext { seq_len_k: Some(1), ..base },
            SelectionContext { head_dim: Some(1), ..base },
            SelectionContext { num_heads: Some(1), ..base },
            SelectionContext { num_kv_heads: Some(1), ..base },
            SelectionContext { dtype: Some(DType::F32), ..base },
            SelectionContext { device: Some(Device::Cpu), ..base },
            SelectionContext { device: Some(Device::Cuda(0)), ..base },
            SelectionContext { platform: Some(Platform::Cpu), ..base },
            SelectionContext { layout: Some(Layout::Bshd), ..base },
            SelectionContext { is_causal: Some(false), ..base },
            SelectionContext { enable_gqa: Some(false), ..base },
            SelectionContext { dropout_p: Some(0.0), ..base },
            SelectionContext { is_cuda_graph_capturing: Some(false), ..base },
            SelectionContext { requires_deterministic: Some(false), ..base },
            SelectionContext { tp_size: Some(1), ..base },
            SelectionContext { pp_size: Some(1), ..base },
            SelectionContext { layer_index: Some(0), ..base },
            SelectionContext { window_size: Some(0), ..base },
            SelectionContext { compute_capability: Some(ComputeCapability::new(9, 0)), ..base },
            SelectionContext { hidden_size: Some(0), ..base },
            SelectionContext { hidden_size: Some(4096), ..base },
            SelectionContext { fused_residual: Some(false), ..base },
            base,
        ];
        for (i, a) in variants.iter().enumerate() {
            for (j, b) in variants.iter().enumerate() {
                assert_eq!(a == b, i == j, "{a:?} vs {b:?}");
            }
        }
        let zero = SelectionContext { dropout_p: Some(0.0), ..base };
        assert_eq!(zero, SelectionContext { dropout_p: Some(-0.0), ..base });
        let nan = SelectionContext { dropout_p: Some(f32::NAN), ..base };
        assert_ne!(nan, nan);
    }

    #[test]
    fn unknown_fields_are_absent_not_zero() {
        let ctx = SelectionContext::builder().batch_size(0).build().unwrap();
        assert_eq!(ctx.get(ContextField::BatchSize), Some(FieldValue::Int(0)));
        for field in ContextField::ALL.into_iter().skip(1) {
            assert_eq!(ctx.get(field), None, "{field}");
        }
    }

    #[test]
    fn seed_fields_come_first_and_round_trip() {
        let seed_names = [
            "batch_size",
            "seq_len",
            "seq_len_q",
            "seq_len_k",
            "head_dim",
            "num_heads",
            "num_kv_heads",
            "dtype",
            "device",
            "platform",
            "layout",
            "is_causal",
            "enable_gqa",
            "dropout_p",
            "is_cuda_graph_capturing",
            "requires_deterministic",
            "tp_size",
            "pp_size",
        ];
        for (field, name) in ContextField::ALL.iter().zip(seed_names) {
            assert_eq!(field.as_str(), name);
        }
        for field in ContextField::ALL {
            assert_eq!(ContextField::from_name(field.as_str()), Some(field));
        }
        assert_eq!(ContextField::from_name("batchsize"), None);
    }

    #[test]
    fn builder_sets_every_field() {
        let ctx = SelectionContext::builder()
            .batch_size(1)
            .seq_len(2)
            .seq_len_q(3)
            .seq_len_k(4)
            .head_dim(5)
            .num_heads(6)
            .num_kv_heads(3)
            .dtype(DType::BF16)
            .device(Device::Cuda(1))
            .platform(Platform::Cuda)
            .layout(Layout::Bhsd)
            .is_causal(true)
            .enable_gqa(true)
            .dropout_p(0.5)
            .is_cuda_graph_capturing(false)
            .requires_deterministic(true)
            .tp_size(2)
            .pp_size(4)
            .layer_index(7)
            .window_size(9)
            .compute_capability(ComputeCapability::new(9, 0))
            .hidden_size(4096)
            .fused_residual(true)
            .build()
            .unwrap();
        assert!(ContextField::ALL.into_iter().all(|field| ctx.get(field).is_some()));
        assert_eq!(ctx.get(ContextField::DropoutP), Some(FieldValue::Float(0.5)));
    }

    #[test]
    fn contradictions_are_refused() {
        let field_of = |b: SelectionContextBuilder| match b.build() {
            Err(TypesError::InvalidContext { field, .. }) => field,
            other => panic!("expected an invalid context, got {other:?}"),
        };
        let b = SelectionContext::builder;
        assert_eq!(field_of(b().dropout_p(1.5)), "dropout_p");
        assert_eq!(field_of(b().dropout_p(f32::NAN)), "dropout_p");
        assert_eq!(field_of(b().num_heads(32).num_kv_heads(5)), "num_kv_heads");
        assert_eq!(field_of(b().num_heads(32).num_kv_heads(8).enable_gqa(false)), "enable_gqa");
        assert_eq!(field_of(b().head_dim(0)), "head_dim");
        assert_eq!(field_of(b().tp_size(0)), "tp_size");
        assert_eq!(field_of(b().hidden_size(0)), "hidden_size");
        assert_eq!(field_of(b().device(Device::Cpu).platform(Platform::Cuda)), "platform");
    }

    #[test]
    fn attention_context_from_bshd_tensors() {
        let q = Tensor::zeros(&[2, 16, 32, 128], DType::BF16).unwrap();
        let k = Tensor::zeros(&[2, 64, 8, 128], DType::BF16).unwrap();
        let ctx = SelectionContext::from_attention(&q, &k, Layout::Bshd).unwrap();
        assert_eq!(
            (ctx.batch_size, ctx.seq_len_q, ctx.seq_len_k, ctx.num_heads, ctx.num_kv_heads, ctx.head_dim),
            (Some(2), Some(16), Some(64), Some(32), Some(8), Some(128))
        );
        assert_eq!(ctx.enable_gqa, Some(true));
        assert_eq!(ctx.platform, Some(Platform::Cpu));
        assert_eq!(ctx.is_causal, None);
    }

    #[test]
    fn attention_context_from_bhsd_tensors_and_mismatches() {
        let q = Tensor::zeros(&[1, 4, 10, 64], DType::F32).unwrap();
        let k = Tensor::zeros(&[1, 4, 12, 64], DType::F32).unwrap();
        let ctx = SelectionContext::from_attention(&q.view(), &k.view(), Layout::Bhsd).unwrap();
        assert_eq!((ctx.seq_len_q, ctx.seq_len_k, ctx.enable_gqa), (Some(10), Some(12), Some(false)));

        let k_f16 = Tensor::zeros(&[1, 4, 12, 64], DType::F16).unwrap();
        assert!(matches!(
            SelectionContext::from_attention(&q, &k_f16, Layout::Bhsd),
            Err(TypesError::DTypeMismatch { .. })
        ));
        let k_dim = Tensor::zeros(&[1, 4, 12, 32], DType::F32).unwrap();
        assert!(SelectionContext::from_attention(&q, &k_dim, Layout::Bhsd).is_err());
        let k_heads = Tensor::zeros(&[1, 3, 12, 64], DType::F32).unwrap();
        assert!(SelectionContext::from_attention(&q, &k_heads, Layout::Bhsd).is_err());
        let flat = Tensor::zeros(&[4, 64], DType::F32).unwrap();
        assert!(SelectionContext::from_attention(&flat, &k, Layout::Bhsd).is_err());
    }

    #[test]
    fn row_context_from_a_tensor() {
        let x = Tensor::zeros(&[3, 5, 64], DType::F16).unwrap();
        let ctx = SelectionContext::from_tensor(&x).unwrap();
        assert_eq!((ctx.batch_size, ctx.seq_len, ctx.dtype), (Some(3), Some(5), Some(DType::F16)));
        let v = Tensor::zeros(&[64], DType::F32).unwrap();
        assert_eq!(SelectionContext::from_tensor(&v).unwrap().batch_size, None);
    }
}
