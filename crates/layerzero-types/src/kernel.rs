//! Kernel identity and what a kernel can run: [`KernelId`], [`KernelSpec`] and its
//! [`KernelConstraints`], checked against a [`SelectionContext`].

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::intern::Interner;
use crate::{ComputeCapability, DType, Layout, Operation, Platform, SelectionContext, TypesError};

static KERNEL_IDS: Interner = Interner::new();

/// The name of a kernel, interned: a `u32` to copy, compare and hash.
///
/// A kernel id is 1 to 128 bytes of ASCII letters, digits and `_ - . : /`
/// (`flash_attention_v2`, `rms_norm.warp`, `my-kernel`).
///
/// ```
/// use layerzero_types::KernelId;
///
/// let id = KernelId::new("rms_norm_warp").unwrap();
/// assert_eq!(id, KernelId::new("rms_norm_warp").unwrap());
/// assert_eq!(id.as_str(), "rms_norm_warp");
/// assert!(KernelId::new("has space").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelId(u32);

impl KernelId {
    /// Interns `name` (validated) and returns its id.
    pub fn new(name: &str) -> Result<KernelId, TypesError> {
        validate_kernel_name(name)?;
        KERNEL_IDS.intern(name).map(KernelId).ok_or(TypesError::InternerFull { kind: "kernel id" })
    }

    /// The id of `name` if some code interned it before; never adds a name.
    /// Use this for lookups of names that come from outside, so they cannot grow the table.
    pub fn lookup(name: &str) -> Option<KernelId> {
        KERNEL_IDS.lookup(name).map(KernelId)
    }

    /// The kernel's name.
    pub fn as_str(self) -> &'static str {
        KERNEL_IDS.resolve(self.0)
    }

    /// The interned index, dense from 0: usable to index per-kernel tables.
    #[inline]
    pub const fn index(self) -> u32 {
        self.0
    }
}

fn validate_kernel_name(name: &str) -> Result<(), TypesError> {
    let invalid = |reason| TypesError::InvalidName { kind: "kernel id", name: name.to_owned(), reason };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 128 {
        return Err(invalid("it is longer than 128 bytes"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/');
    if !name.bytes().all(allowed) {
        return Err(invalid("only ASCII letters, digits and `_ - . : /` are allowed"));
    }
    Ok(())
}

impl fmt::Debug for KernelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KernelId({:?})", self.as_str())
    }
}

impl fmt::Display for KernelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KernelId {
    type Err = TypesError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        KernelId::new(name)
    }
}

impl Serialize for KernelId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KernelId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        KernelId::new(&name).map_err(serde::de::Error::custom)
    }
}

/// Whether a kernel handles a boolean feature of the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// Only contexts where the feature is off (or unknown).
    #[default]
    Unsupported,
    /// Contexts with the feature on or off.
    Supported,
    /// Only contexts where the feature is on (or unknown).
    Required,
}

/// The values of one dimension a kernel accepts (`head_dim`, `hidden_size`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DimConstraint {
    /// Exactly these values (`{set: [64, 128]}`).
    Set(Vec<u32>),
    /// `min..=max`, a multiple of `multiple_of` (`{range: {min: 32, max: 256, multiple_of: 8}}`).
    Range {
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
        /// Accepted values are multiples of this (1: any).
        #[serde(default = "one")]
        multiple_of: u32,
    },
}

fn one() -> u32 {
    1
}

impl DimConstraint {
    /// Whether `value` is accepted.
    pub fn allows(&self, value: u32) -> bool {
        match self {
            DimConstraint::Set(values) => values.contains(&value),
            DimConstraint::Range { min, max, multiple_of } => {
                (*min..=*max).contains(&value) && value.is_multiple_of((*multiple_of).max(1))
            }
        }
    }
}

impl fmt::Display for DimConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimConstraint::Set(values) => write!(f, "one of {values:?}"),
            DimConstraint::Range { min, max, multiple_of: 1 } => write!(f, "{min}..={max}"),
            DimConstraint::Range { min, max, multiple_of } => {
                write!(f, "a multiple of {multiple_of} in {min}..={max}")
            }
        }
    }
}

/// An inclusive range of sequence lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimRange {
    /// Smallest accepted length.
    #[serde(default)]
    pub min: u32,
    /// Largest accepted length.
    #[serde(default = "u32_max")]
    pub max: u32,
}

fn u32_max() -> u32 {
    u32::MAX
}

impl DimRange {
    /// `min..=max`.
    pub const fn new(min: u32, max: u32) -> Self {
        DimRange { min, max }
    }

    /// `0..=max`.
    pub const fn up_to(max: u32) -> Self {
        DimRange { min: 0, max }
    }

    /// Whether `value` is in the range.
    pub const fn contains(self, value: u32) -> bool {
        self.min <= value && value <= self.max
    }
}

impl fmt::Display for DimRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// What a kernel can run, as data: serialisable, comparable, and checked by
/// [`KernelSpec::check`].
///
/// Defaults are conservative: a feature the spec does not claim (GQA, causal masking,
/// sliding windows, dropout, determinism, CUDA-graph safety, a fused residual add) is
/// treated as unsupported,
/// and `None` for a list or range means "any value".
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelConstraints {
    /// Accepted dtypes (`None`: any).
    pub dtypes: Option<Vec<DType>>,
    /// Accepted head dimensions (`None`: any).
    pub head_dim: Option<DimConstraint>,
    /// Accepted row lengths of a row-wise operation, checked against the context's
    /// `hidden_size` (a norm's hidden size, swiglu's intermediate size; `None`: any). A
    /// kernel that holds a row in registers states its longest row and the alignment of
    /// its vector loads here, so selection routes a call to a variant that takes it.
    pub hidden_size: Option<DimConstraint>,
    /// Accepted query lengths, checked against `seq_len_q` (or `seq_len` when that is unset).
    pub seq_len_q: Option<DimRange>,
    /// Accepted key lengths, checked against `seq_len_k` (or `seq_len` when that is unset).
    pub seq_len_k: Option<DimRange>,
    /// Accepts fewer KV heads than query heads (GQA/MQA).
    pub gqa: bool,
    /// Causal masking.
    pub causal: Support,
    /// Accepts a `window_size` (sliding-window attention).
    pub sliding_window: bool,
    /// Accepts `dropout_p > 0`.
    pub dropout: bool,
    /// Gives bit-identical results run to run.
    pub deterministic: bool,
    /// Safe to launch while a CUDA graph is being captured.
    pub cuda_graph_safe: bool,
    /// Accepted tensor layouts (`None`: any).
    pub layouts: Option<Vec<Layout>>,
    /// The oldest GPU architecture the kernel runs on.
    pub min_compute_capability: Option<ComputeCapability>,
    /// Takes a norm call with a residual to add first
    /// ([`NormArgs::residual`](crate::NormArgs::residual); context `fused_residual: true`).
    pub residual: bool,
}

/// A kernel's description: its id, the operations it implements, where it runs, its base
/// priority, and what it can run.
///
/// ```
/// use layerzero_types::{DType, KernelSpec, OperationType, Platform, SelectionContext};
///
/// let spec = KernelSpec::new("rms_norm_cpu", Platform::Cpu)
///     .unwrap()
///     .for_operation(OperationType::NormRms)
///     .with_dtypes([DType::F32, DType::BF16]);
///
/// let ok = SelectionContext::builder().dtype(DType::F32).build().unwrap();
/// assert!(spec.check(&ok).is_ok());
///
/// let bad = SelectionContext::builder().dtype(DType::F16).build().unwrap();
/// let rejection = spec.check(&bad).unwrap_err();
/// assert_eq!(
///     rejection.to_string(),
///     "rms_norm_cpu: dtype requires one of [float32, bfloat16], context has float16"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// The kernel's id.
    pub id: KernelId,
    /// The operations it implements.
    pub operations: Vec<Operation>,
    /// The platform it runs on.
    pub platform: Platform,
    /// The backend that provides it (`cpu`, `cuda`, ...), as named in the backend registry.
    pub backend: String,
    /// Base priority, 0 to 1000: the score when no rule decides.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// What it can run.
    #[serde(default)]
    pub constraints: KernelConstraints,
}

fn default_priority() -> u32 {
    KernelSpec::DEFAULT_PRIORITY
}

impl KernelSpec {
    /// The base priority of a spec that does not set one (seed 000's `default_priority`).
    pub const DEFAULT_PRIORITY: u32 = 50;
    /// The highest priority allowed.
    pub const MAX_PRIORITY: u32 = 1000;

    /// A spec for `id` on `platform`, provided by the backend named like the platform,
    /// with no operations yet and default constraints.
    pub fn new(id: &str, platform: Platform) -> Result<KernelSpec, TypesError> {
        Ok(KernelSpec {
            id: KernelId::new(id)?,
            operations: Vec::new(),
            platform,
            backend: platform.as_str().to_owned(),
            priority: Self::DEFAULT_PRIORITY,
            constraints: KernelConstraints::default(),
        })
    }

    /// Adds an operation the kernel implements.
    pub fn for_operation(mut self, operation: impl Into<Operation>) -> Self {
        let operation = operation.into();
        if !self.operations.contains(&operation) {
            self.operations.push(operation);
        }
        self
    }

    /// Names the backend that provides the kernel.
    pub fn with_backend(mut self, backend: impl Into<String>) -> Self {
        self.backend = backend.into();
        self
    }

    /// Sets the base priority.
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Restricts the accepted dtypes.
    pub fn with_dtypes(mut self, dtypes: impl IntoIterator<Item = DType>) -> Self {
        self.constraints.dtypes = Some(dtypes.into_iter().collect());
        self
    }

    /// Restricts the accepted `hidden_size`.
    pub fn with_hidden_size(mut self, hidden_size: DimConstraint) -> Self {
        self.constraints.hidden_size = Some(hidden_size);
        self
    }

    /// Replaces all constraints.
    pub fn with_constraints(mut self, constraints: KernelConstraints) -> Self {
        self.constraints = constraints;
        self
    }

    /// Whether the kernel implements `operation`.
    pub fn supports(&self, operation: Operation) -> bool {
        self.operations.contains(&operation)
    }

    /// Checks that the spec is self-consistent: at least one operation, a priority in
    /// 0..=1000, a non-empty backend, and non-empty, ordered lists and ranges.
    pub fn validate(&self) -> Result<(), TypesError> {
        let invalid = |reason: String| TypesError::InvalidSpec { kernel: self.id.to_string(), reason };
        if self.operations.is_empty() {
            return Err(invalid("it implements no operation".into()));
        }
        if self.priority > Self::MAX_PRIORITY {
            return Err(invalid(format!("priority {} is above {}", self.priority, Self::MAX_PRIORITY)));
        }
        if self.backend.is_empty() {
            return Err(invalid("its backend name is empty".into()));
        }
        let c = &self.constraints;
        if c.dtypes.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid("its dtype list is empty, so it can run nothing".into()));
        }
        if c.layouts.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid("its layout list is empty, so it can run nothing".into()));
        }
        for (name, dim) in [("head_dim", &c.head_dim), ("hidden_size", &c.hidden_size)] {
            match dim {
                Some(DimConstraint::Set(values)) if values.is_empty() => {
                    return Err(invalid(format!("its {name} set is empty")));
                }
                Some(DimConstraint::Range { min, max, multiple_of }) if min > max || *multiple_of == 0 => {
                    return Err(invalid(format!(
                        "its {name} range {min}..={max} (multiple of {multiple_of}) is empty"
                    )));
                }
                _ => {}
            }
        }
        for (name, range) in [("seq_len_q", c.seq_len_q), ("seq_len_k", c.seq_len_k)] {
            if let Some(range) = range
                && range.min > range.max
            {
                return Err(invalid(format!("its {name} range {range} is empty")));
            }
        }
        Ok(())
    }

    /// Checks the context against every constraint; the first that fails is returned.
    ///
    /// A constraint is checked only against fields the context knows: an absent field
    /// passes (the kernel still validates its arguments when it runs).
    pub fn check(&self, ctx: &SelectionContext) -> Result<(), Rejection> {
        let mut first = None;
        self.visit_rejections(ctx, |rejection| {
            first = Some(rejection);
            ControlFlow::Break(())
        });
        first.map_or(Ok(()), Err)
    }

    /// Every constraint the context fails, for explanations.
    pub fn rejections(&self, ctx: &SelectionContext) -> Vec<Rejection> {
        let mut all = Vec::new();
        self.visit_rejections(ctx, |rejection| {
            all.push(rejection);
            ControlFlow::Continue(())
        });
        all
    }

    fn visit_rejections(&self, ctx: &SelectionContext, mut on_reject: impl FnMut(Rejection) -> ControlFlow<()>) {
        let c = &self.constraints;
        let mut reject = |constraint, required: String, actual: String| {
            on_reject(Rejection { kernel: self.id, constraint, required, actual })
        };
        macro_rules! check {
            ($fails:expr, $constraint:expr, $required:expr, $actual:expr) => {
                if $fails && reject($constraint, $required, $actual).is_break() {
                    return;
                }
            };
        }

        if let Some(platform) = ctx.effective_platform() {
            check!(platform != self.platform, Constraint::Platform, self.platform.to_string(), platform.to_string());
        }
        if let (Some(allowed), Some(dtype)) = (&c.dtypes, ctx.dtype) {
            check!(!allowed.contains(&dtype), Constraint::DType, one_of(allowed), dtype.to_string());
        }
        if let (Some(allowed), Some(head_dim)) = (&c.head_dim, ctx.head_dim) {
            check!(!allowed.allows(head_dim), Constraint::HeadDim, allowed.to_string(), head_dim.to_string());
        }
        if let (Some(allowed), Some(hidden)) = (&c.hidden_size, ctx.hidden_size) {
            check!(!allowed.allows(hidden), Constraint::HiddenSize, allowed.to_string(), hidden.to_string());
        }
        if let (Some(range), Some(len)) = (c.seq_len_q, ctx.seq_len_q.or(ctx.seq_len)) {
            check!(!range.contains(len), Constraint::SeqLenQ, range.to_string(), len.to_string());
        }
        if let (Some(range), Some(len)) = (c.seq_len_k, ctx.seq_len_k.or(ctx.seq_len)) {
            check!(!range.contains(len), Constraint::SeqLenK, range.to_string(), len.to_string());
        }
        if ctx.uses_gqa() {
            let actual = match (ctx.num_heads, ctx.num_kv_heads) {
                (Some(q), Some(kv)) => format!("{q} query heads over {kv} KV heads"),
                _ => "enable_gqa".to_owned(),
            };
            check!(!c.gqa, Constraint::Gqa, "as many KV heads as query heads".into(), actual);
        }
        match (c.causal, ctx.is_causal) {
            (Support::Unsupported, Some(true)) => {
                check!(true, Constraint::Causal, "is_causal false".into(), "is_causal true".into());
            }
            (Support::Required, Some(false)) => {
                check!(true, Constraint::Causal, "is_causal true".into(), "is_causal false".into());
            }
            _ => {}
        }
        if let Some(window) = ctx.window_size {
            check!(
                !c.sliding_window,
                Constraint::SlidingWindow,
                "no window_size".into(),
                format!("window_size {window}")
            );
        }
        if let Some(p) = ctx.dropout_p {
            check!(p > 0.0 && !c.dropout, Constraint::Dropout, "dropout_p 0".into(), format!("dropout_p {p}"));
        }
        check!(
            ctx.requires_deterministic == Some(true) && !c.deterministic,
            Constraint::Deterministic,
            "requires_deterministic false".into(),
            "requires_deterministic true".into()
        );
        check!(
            ctx.is_cuda_graph_capturing == Some(true) && !c.cuda_graph_safe,
            Constraint::CudaGraph,
            "no CUDA graph capture".into(),
            "is_cuda_graph_capturing true".into()
        );
        if let (Some(allowed), Some(layout)) = (&c.layouts, ctx.layout) {
            check!(!allowed.contains(&layout), Constraint::Layout, one_of(allowed), layout.to_string());
        }
        if let (Some(min), Some(actual)) = (c.min_compute_capability, ctx.compute_capability) {
            check!(actual < min, Constraint::ComputeCapability, format!("at least {min}"), actual.to_string());
        }
        check!(
            ctx.fused_residual == Some(true) && !c.residual,
            Constraint::Residual,
            "no residual (fused_residual false)".into(),
            "fused_residual true".into()
        );
    }
}

fn one_of<T: fmt::Display>(values: &[T]) -> String {
    let names: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("one of [{}]", names.join(", "))
}

/// Which constraint of a [`KernelSpec`] a context failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// The kernel's platform differs from the context's.
    Platform,
    /// The dtype is not in the kernel's list.
    DType,
    /// The head dimension is not accepted.
    HeadDim,
    /// The hidden size (a row-wise operation's row length) is not accepted.
    HiddenSize,
    /// The query length is out of range.
    SeqLenQ,
    /// The key length is out of range.
    SeqLenK,
    /// GQA/MQA is needed and not supported.
    Gqa,
    /// Causal masking is needed (or forbidden) and the kernel does the other.
    Causal,
    /// A sliding window is needed and not supported.
    SlidingWindow,
    /// Dropout is needed and not supported.
    Dropout,
    /// Determinism is required and not promised.
    Deterministic,
    /// A CUDA graph is being captured and the kernel is not capture-safe.
    CudaGraph,
    /// The layout is not in the kernel's list.
    Layout,
    /// The GPU is older than the kernel needs.
    ComputeCapability,
    /// The call adds a residual before normalising and the kernel does not take one.
    Residual,
}

impl Constraint {
    /// The constraint's name, as the context field or spec field it concerns.
    pub const fn as_str(self) -> &'static str {
        match self {
            Constraint::Platform => "platform",
            Constraint::DType => "dtype",
            Constraint::HeadDim => "head_dim",
            Constraint::HiddenSize => "hidden_size",
            Constraint::SeqLenQ => "seq_len_q",
            Constraint::SeqLenK => "seq_len_k",
            Constraint::Gqa => "gqa",
            Constraint::Causal => "causal",
            Constraint::SlidingWindow => "sliding_window",
            Constraint::Dropout => "dropout",
            Constraint::Deterministic => "deterministic",
            Constraint::CudaGraph => "cuda_graph_safe",
            Constraint::Layout => "layout",
            Constraint::ComputeCapability => "min_compute_capability",
            Constraint::Residual => "residual",
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a kernel cannot run a context: the constraint, what it requires, what the context has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kernel}: {constraint} requires {required}, context has {actual}")]
pub struct Rejection {
    /// The kernel that was rejected.
    pub kernel: KernelId,
    /// The constraint that failed.
    pub constraint: Constraint,
    /// What the constraint requires, for people.
    pub required: String,
    /// What the context has, for people.
    pub actual: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, OperationType};

    fn attention_spec() -> KernelSpec {
        KernelSpec::new("attention_test", Platform::Cuda).unwrap().for_operation(OperationType::AttentionCausal)
    }

    fn ctx() -> crate::SelectionContextBuilder {
        SelectionContext::builder()
    }

    fn rejected_by(spec: &KernelSpec, ctx: &SelectionContext) -> Constraint {
        let rejection = spec.check(ctx).expect_err("the context should be rejected");
        assert!(rejection.to_string().contains(rejection.constraint.as_str()));
        rejection.constraint
    }

    #[test]
    fn an_unconstrained_context_passes() {
        assert_eq!(attention_spec().check(&SelectionContext::default()), Ok(()));
    }

    #[test]
    fn platform_is_checked_from_platform_or_device() {
        let spec = attention_spec();
        assert_eq!(rejected_by(&spec, &ctx().platform(Platform::Cpu).build().unwrap()), Constraint::Platform);
        assert_eq!(rejected_by(&spec, &ctx().device(Device::Cpu).build().unwrap()), Constraint::Platform);
        assert!(spec.check(&ctx().device(Device::Cuda(1)).build().unwrap()).is_ok());
    }

    #[test]
    fn dtype_rejection_names_the_allowed_dtypes() {
        let spec = attention_spec().with_dtypes([DType::F16, DType::BF16]);
        let rejection = spec.check(&ctx().dtype(DType::F32).build().unwrap()).unwrap_err();
        assert_eq!(rejection.constraint, Constraint::DType);
        assert_eq!(
            rejection.to_string(),
            "attention_test: dtype requires one of [float16, bfloat16], context has float32"
        );
    }

    #[test]
    fn head_dim_set_and_range() {
        let mut spec = attention_spec();
        spec.constraints.head_dim = Some(DimConstraint::Set(vec![64, 128]));
        assert!(spec.check(&ctx().head_dim(128).build().unwrap()).is_ok());
        assert_eq!(rejected_by(&spec, &ctx().head_dim(96).build().unwrap()), Constraint::HeadDim);

        spec.constraints.head_dim = Some(DimConstraint::Range { min: 32, max: 256, multiple_of: 32 });
        assert!(spec.check(&ctx().head_dim(96).build().unwrap()).is_ok());
        let rejection = spec.check(&ctx().head_dim(100).build().unwrap()).unwrap_err();
        assert_eq!(rejection.required, "a multiple of 32 in 32..=256");
    }

    #[test]
    fn hidden_size_range_states_length_and_alignment() {
        let warp = KernelSpec::new("rms_norm_warp_test", Platform::Cuda)
            .unwrap()
            .for_operation(OperationType::NormRms)
            .with_hidden_size(DimConstraint::Range { min: 8, max: 1024, multiple_of: 8 });
        assert!(warp.validate().is_ok());
        assert!(warp.check(&ctx().hidden_size(1024).build().unwrap()).is_ok());
        assert!(warp.check(&ctx().hidden_size(8).build().unwrap()).is_ok());
        // An absent hidden size is not checked (the kernel checks its arguments).
        assert!(warp.check(&ctx().build().unwrap()).is_ok());
        let too_long = warp.check(&ctx().hidden_size(2048).build().unwrap()).unwrap_err();
        assert_eq!(
            too_long.to_string(),
            "rms_norm_warp_test: hidden_size requires a multiple of 8 in 8..=1024, context has 2048"
        );
        assert_eq!(too_long.constraint, Constraint::HiddenSize);
        assert_eq!(rejected_by(&warp, &ctx().hidden_size(1020).build().unwrap()), Constraint::HiddenSize);

        let mut empty = warp.clone();
        empty.constraints.hidden_size = Some(DimConstraint::Range { min: 2048, max: 1024, multiple_of: 8 });
        assert!(
            matches!(empty.validate(), Err(TypesError::InvalidSpec { reason, .. }) if reason.contains("hidden_size"))
        );
        empty.constraints.hidden_size = Some(DimConstraint::Set(Vec::new()));
        assert!(empty.validate().is_err());
    }

    #[test]
    fn sequence_limits_fall_back_to_seq_len() {
        let mut spec = attention_spec();
        spec.constraints.seq_len_q = Some(DimRange::up_to(1));
        spec.constraints.seq_len_k = Some(DimRange::up_to(4096));
        assert!(spec.check(&ctx().seq_len_q(1).seq_len_k(4096).build().unwrap()).is_ok());
        assert_eq!(rejected_by(&spec, &ctx().seq_len_q(2).build().unwrap()), Constraint::SeqLenQ);
        assert_eq!(rejected_by(&spec, &ctx().seq_len_q(1).seq_len_k(4097).build().unwrap()), Constraint::SeqLenK);
        assert_eq!(rejected_by(&spec, &ctx().seq_len(8).build().unwrap()), Constraint::SeqLenQ);
    }

    #[test]
    fn gqa_is_detected_from_head_counts_or_the_flag() {
        let mut spec = attention_spec();
        let grouped = ctx().num_heads(32).num_kv_heads(8).build().unwrap();
        let rejection = spec.check(&grouped).unwrap_err();
        assert_eq!(rejection.constraint, Constraint::Gqa);
        assert_eq!(rejection.actual, "32 query heads over 8 KV heads");
        assert_eq!(rejected_by(&spec, &ctx().enable_gqa(true).build().unwrap()), Constraint::Gqa);
        assert!(spec.check(&ctx().num_heads(32).num_kv_heads(32).build().unwrap()).is_ok());
        spec.constraints.gqa = true;
        assert!(spec.check(&grouped).is_ok());
    }

    #[test]
    fn causal_support_levels() {
        let mut spec = attention_spec();
        let causal = ctx().is_causal(true).build().unwrap();
        let full = ctx().is_causal(false).build().unwrap();
        assert_eq!(rejected_by(&spec, &causal), Constraint::Causal);
        assert!(spec.check(&full).is_ok());
        spec.constraints.causal = Support::Required;
        assert!(spec.check(&causal).is_ok());
        assert_eq!(rejected_by(&spec, &full), Constraint::Causal);
        spec.constraints.causal = Support::Supported;
        assert!(spec.check(&causal).is_ok() && spec.check(&full).is_ok());
    }

    #[test]
    fn flags_that_need_a_claim() {
        let mut spec = attention_spec();
        let cases = [
            (ctx().window_size(4096).build().unwrap(), Constraint::SlidingWindow),
            (ctx().dropout_p(0.1).build().unwrap(), Constraint::Dropout),
            (ctx().requires_deterministic(true).build().unwrap(), Constraint::Deterministic),
            (ctx().is_cuda_graph_capturing(true).build().unwrap(), Constraint::CudaGraph),
            (ctx().fused_residual(true).build().unwrap(), Constraint::Residual),
        ];
        for (context, constraint) in &cases {
            assert_eq!(rejected_by(&spec, context), *constraint);
        }
        assert!(spec.check(&ctx().dropout_p(0.0).build().unwrap()).is_ok());
        assert!(spec.check(&ctx().fused_residual(false).build().unwrap()).is_ok());
        let rejection = spec.check(&cases[4].0).unwrap_err();
        assert_eq!(
            rejection.to_string(),
            "attention_test: residual requires no residual (fused_residual false), context has fused_residual true"
        );
        spec.constraints.sliding_window = true;
        spec.constraints.dropout = true;
        spec.constraints.deterministic = true;
        spec.constraints.cuda_graph_safe = true;
        spec.constraints.residual = true;
        for (context, _) in &cases {
            assert!(spec.check(context).is_ok());
        }
    }

    #[test]
    fn layout_and_compute_capability() {
        let mut spec = attention_spec();
        spec.constraints.layouts = Some(vec![Layout::Bshd]);
        spec.constraints.min_compute_capability = Some(ComputeCapability::new(9, 0));
        assert_eq!(rejected_by(&spec, &ctx().layout(Layout::Bhsd).build().unwrap()), Constraint::Layout);
        let ampere = ctx().compute_capability(ComputeCapability::new(8, 0)).build().unwrap();
        let rejection = spec.check(&ampere).unwrap_err();
        assert_eq!(rejection.constraint, Constraint::ComputeCapability);
        assert_eq!(rejection.required, "at least 9.0");
        let hopper = ctx().layout(Layout::Bshd).compute_capability(ComputeCapability::new(9, 0));
        assert!(spec.check(&hopper.build().unwrap()).is_ok());
    }

    #[test]
    fn rejections_lists_every_failure() {
        let spec = attention_spec().with_dtypes([DType::F16]);
        let context = ctx().dtype(DType::F32).platform(Platform::Cpu).is_causal(true).build().unwrap();
        let constraints: Vec<_> = spec.rejections(&context).into_iter().map(|r| r.constraint).collect();
        assert_eq!(constraints, [Constraint::Platform, Constraint::DType, Constraint::Causal]);
    }

    #[test]
    fn specs_validate() {
        assert!(attention_spec().validate().is_ok());
        let no_ops = KernelSpec::new("lonely", Platform::Cpu).unwrap();
        assert!(matches!(no_ops.validate(), Err(TypesError::InvalidSpec { .. })));
        assert!(attention_spec().with_priority(1001).validate().is_err());
        assert!(attention_spec().with_dtypes([]).validate().is_err());
        let mut backwards = attention_spec();
        backwards.constraints.seq_len_k = Some(DimRange::new(10, 1));
        assert!(backwards.validate().is_err());
    }

    #[test]
    fn specs_serialise_as_data() {
        let mut spec = attention_spec().with_dtypes([DType::BF16]);
        spec.constraints.head_dim = Some(DimConstraint::Range { min: 64, max: 256, multiple_of: 64 });
        spec.constraints.hidden_size = Some(DimConstraint::Set(vec![4096, 8192]));
        spec.constraints.causal = Support::Supported;
        spec.constraints.min_compute_capability = Some(ComputeCapability::new(9, 0));
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"head_dim\":{\"range\":{\"min\":64,\"max\":256,\"multiple_of\":64}}"), "{json}");
        assert!(json.contains("\"min_compute_capability\":\"9.0\""), "{json}");
        assert!(json.contains("\"hidden_size\":{\"set\":[4096,8192]}"), "{json}");
        let back: KernelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        let unknown = json.replace("\"gqa\"", "\"gqaa\"");
        assert!(serde_json::from_str::<KernelSpec>(&unknown).is_err());
    }

    #[test]
    fn kernel_ids_are_validated_and_interned() {
        let a = KernelId::new("flash-attn_v2.sm90").unwrap();
        assert_eq!(KernelId::lookup("flash-attn_v2.sm90"), Some(a));
        assert_eq!(KernelId::lookup("never-interned-kernel"), None);
        for bad in ["", "a b", "*_experimental", "é", &"x".repeat(129)] {
            assert!(KernelId::new(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{a:?}"), "KernelId(\"flash-attn_v2.sm90\")");
    }
}
