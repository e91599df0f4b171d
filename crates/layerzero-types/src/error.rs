//! The one error type of this crate.

use crate::{DType, Device};

/// Everything that can go wrong when building LayerZero's vocabulary values: parsing names,
/// building contexts, and making or viewing tensors.
///
/// The parse errors that a config schema reports use the seed's capitalised texts
/// ("Invalid dtype (fp16)") so that schema messages read the same; the rest are lower-case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TypesError {
    /// A name that is neither a known operation nor a valid custom one.
    #[error("unknown operation `{name}`{}", did_you_mean(*suggestion))]
    UnknownOperation {
        /// The name as given.
        name: String,
        /// The nearest known operation, when one is close.
        suggestion: Option<&'static str>,
    },
    /// A kernel id or operation name that breaks the naming rules.
    #[error("invalid {kind} name `{name}`: {reason}")]
    InvalidName {
        /// `"kernel id"` or `"operation"`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// More than `u32::MAX` distinct names were interned.
    #[error("too many distinct {kind} names")]
    InternerFull {
        /// What kind of name.
        kind: &'static str,
    },
    /// A dtype name that is not one of the canonical names.
    #[error("Invalid dtype ({value})")]
    InvalidDType {
        /// The name as given.
        value: String,
        /// The canonical name that was probably meant.
        suggestion: Option<&'static str>,
    },
    /// A device string that is not `cpu`, `cuda` or `cuda:N`.
    #[error("Invalid device ({value}), expected cpu or cuda:N")]
    InvalidDevice {
        /// The string as given.
        value: String,
    },
    /// A platform name that is not `cuda`, `rocm` or `cpu`.
    #[error("Invalid platform ({value}), expected one of cuda, rocm, cpu")]
    InvalidPlatform {
        /// The name as given.
        value: String,
    },
    /// A layout name that is not `BSHD` or `BHSD`.
    #[error("Invalid layout ({value}), expected BSHD or BHSD")]
    InvalidLayout {
        /// The name as given.
        value: String,
    },
    /// A compute capability that is not `major.minor`.
    #[error("Invalid compute capability ({value}), expected major.minor such as 9.0")]
    InvalidComputeCapability {
        /// The string as given.
        value: String,
    },
    /// A selection context whose fields contradict each other or are out of range.
    #[error("invalid selection context: {field} {message}")]
    InvalidContext {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A kernel spec that contradicts itself (no operations, an empty range, ...).
    #[error("invalid kernel spec `{kernel}`: {reason}")]
    InvalidSpec {
        /// The kernel's id.
        kernel: String,
        /// What is wrong.
        reason: String,
    },
    /// A shape with more dimensions than tensors support.
    #[error("rank {rank} is above the maximum of {max}")]
    RankTooLarge {
        /// The rank asked for.
        rank: usize,
        /// The largest supported rank.
        max: usize,
    },
    /// A shape whose element or byte count overflows `usize`.
    #[error("shape {shape:?} has more elements than memory can address")]
    ShapeOverflow {
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// Data whose length does not match the shape.
    #[error("shape {shape:?} needs {expected} elements, the data has {actual}")]
    ElementCountMismatch {
        /// The shape asked for.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements the data has.
        actual: usize,
    },
    /// Strides that reach past the end of the data, or whose rank differs from the shape's.
    #[error("strides {strides:?} for shape {shape:?} reach element {needed}, the data has {available}")]
    StridesOutOfBounds {
        /// The shape.
        shape: Vec<usize>,
        /// The strides, in elements.
        strides: Vec<usize>,
        /// One past the furthest element the view would touch.
        needed: usize,
        /// Elements the data has.
        available: usize,
    },
    /// An operation that needs a different element type.
    #[error("expected dtype {expected}, found {actual}")]
    DTypeMismatch {
        /// The dtype needed.
        expected: DType,
        /// The dtype found.
        actual: DType,
    },
    /// An operation on a dtype it does not support.
    #[error("{operation} does not support dtype {dtype}")]
    UnsupportedDType {
        /// What was attempted.
        operation: &'static str,
        /// The dtype at fault.
        dtype: DType,
    },
    /// Tensors that must share a device but do not, or data on the wrong device.
    #[error("expected a tensor on {expected}, found one on {actual}")]
    DeviceMismatch {
        /// The device needed.
        expected: Device,
        /// The device found.
        actual: Device,
    },
    /// A view that must be dense row-major but is not.
    #[error("tensor of shape {shape:?} with strides {strides:?} is not contiguous")]
    NotContiguous {
        /// The shape.
        shape: Vec<usize>,
        /// The strides, in elements.
        strides: Vec<usize>,
    },
    /// Host memory that is not aligned for its element type.
    #[error("data for dtype {dtype} is not aligned to {align} bytes")]
    Misaligned {
        /// The element type.
        dtype: DType,
        /// The alignment it needs.
        align: usize,
    },
    /// Memory for a tensor could not be allocated.
    #[error("could not allocate {bytes} bytes for a tensor")]
    AllocationFailed {
        /// The size asked for.
        bytes: usize,
    },
    /// A CUDA driver call failed.
    #[error("cuda: {message}")]
    Cuda {
        /// The driver's description.
        message: String,
    },
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map(|name| format!(" (did you mean `{name}`?)")).unwrap_or_default()
}
