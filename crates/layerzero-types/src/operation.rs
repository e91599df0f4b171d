//! Operations: what a kernel computes (`attention.causal`, `rms_norm`, ...).
//!
//! Names are parsed once into an [`Operation`], a small `Copy` value compared as integers;
//! the hot path never hashes or compares strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TypesError;
use crate::intern::{Interner, nearest_name};

/// The operations LayerZero knows by name (seed 001's `OperationType`).
///
/// ```
/// use layerzero_types::{OperationType, get_operation_type};
///
/// let op = get_operation_type("attention.causal").unwrap();
/// assert_eq!(op, OperationType::AttentionCausal);
/// assert_eq!(op.to_string(), "attention.causal");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum OperationType {
    /// Causal self-attention (`attention.causal`).
    AttentionCausal,
    /// Full (bidirectional) self-attention (`attention.full`).
    AttentionFull,
    /// Cross-attention, `seq_len_q` ≠ `seq_len_k` allowed (`attention.cross`).
    AttentionCross,
    /// Causal attention limited to a window of recent keys (`attention.sliding_window`).
    AttentionSlidingWindow,
    /// One new query token per sequence against a KV cache (`attention.decode`).
    AttentionDecode,
    /// Causal attention over a whole prompt (`attention.prefill`).
    AttentionPrefill,
    /// Root-mean-square normalisation (`rms_norm`).
    NormRms,
    /// Layer normalisation (`layer_norm`).
    NormLayer,
    /// Rotary position embedding (`rope`).
    Rope,
    /// `silu(gate) * up` (`swiglu`).
    Swiglu,
    /// Matrix multiplication (`matmul`).
    Matmul,
}

impl OperationType {
    /// Every known operation, in declaration order.
    pub const ALL: [OperationType; 11] = [
        OperationType::AttentionCausal,
        OperationType::AttentionFull,
        OperationType::AttentionCross,
        OperationType::AttentionSlidingWindow,
        OperationType::AttentionDecode,
        OperationType::AttentionPrefill,
        OperationType::NormRms,
        OperationType::NormLayer,
        OperationType::Rope,
        OperationType::Swiglu,
        OperationType::Matmul,
    ];

    /// The number of known operations.
    pub const COUNT: usize = OperationType::ALL.len();

    /// A dense index in `0..COUNT`, for tables indexed by operation.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The dotted name used in configs and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            OperationType::AttentionCausal => "attention.causal",
            OperationType::AttentionFull => "attention.full",
            OperationType::AttentionCross => "attention.cross",
            OperationType::AttentionSlidingWindow => "attention.sliding_window",
            OperationType::AttentionDecode => "attention.decode",
            OperationType::AttentionPrefill => "attention.prefill",
            OperationType::NormRms => "rms_norm",
            OperationType::NormLayer => "layer_norm",
            OperationType::Rope => "rope",
            OperationType::Swiglu => "swiglu",
            OperationType::Matmul => "matmul",
        }
    }

    /// Whether this is one of the `attention.*` operations.
    pub const fn is_attention(self) -> bool {
        matches!(
            self,
            OperationType::AttentionCausal
                | OperationType::AttentionFull
                | OperationType::AttentionCross
                | OperationType::AttentionSlidingWindow
                | OperationType::AttentionDecode
                | OperationType::AttentionPrefill
        )
    }

    fn from_name(name: &str) -> Option<OperationType> {
        OperationType::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for OperationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperationType {
    type Err = TypesError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        get_operation_type(name)
    }
}

/// Maps a dotted operation name to its [`OperationType`] (seed 001's `get_operation_type`).
///
/// An unknown name is a [`TypesError::UnknownOperation`] that suggests the nearest known name.
pub fn get_operation_type(name: &str) -> Result<OperationType, TypesError> {
    OperationType::from_name(name).ok_or_else(|| TypesError::UnknownOperation {
        name: name.to_owned(),
        suggestion: nearest_name(name, OperationType::ALL.map(OperationType::as_str)),
    })
}

static CUSTOM_OPERATIONS: Interner = Interner::new();

/// An operation: one LayerZero knows, or a custom one registered by name.
///
/// Custom names are interned once; afterwards an `Operation` is two small integers.
///
/// ```
/// use layerzero_types::{Operation, OperationType};
///
/// let known: Operation = "rms_norm".parse().unwrap();
/// assert_eq!(known, Operation::Known(OperationType::NormRms));
///
/// let custom: Operation = "moe.topk_gating".parse().unwrap();
/// assert!(custom.known().is_none());
/// assert_eq!(custom.to_string(), "moe.topk_gating");
/// assert_eq!(custom, "moe.topk_gating".parse().unwrap());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// A built-in operation.
    Known(OperationType),
    /// An operation outside the built-in set, by interned name.
    Custom(CustomOperation),
}

/// The interned name of a custom operation. Created through [`Operation::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomOperation(u32);

impl CustomOperation {
    /// The operation's dotted name.
    pub fn as_str(self) -> &'static str {
        CUSTOM_OPERATIONS.resolve(self.0)
    }
}

impl Operation {
    /// Parses a dotted name: a known operation, or a custom one (interned on first use).
    ///
    /// A custom name is lower-case ASCII letters, digits and `_`, in one or more segments
    /// joined by `.` (`moe.topk_gating`), at most 128 bytes. A name that is one edit away
    /// from a known operation (`attention.casual`) is refused as a likely typo.
    pub fn parse(name: &str) -> Result<Operation, TypesError> {
        if let Some(op) = OperationType::from_name(name) {
            return Ok(Operation::Known(op));
        }
        validate_operation_name(name)?;
        if let Some(near) = nearest_name(name, OperationType::ALL.map(OperationType::as_str))
            && strsim::damerau_levenshtein(name, near) <= 1
        {
            return Err(TypesError::UnknownOperation { name: name.to_owned(), suggestion: Some(near) });
        }
        let index = CUSTOM_OPERATIONS.intern(name).ok_or(TypesError::InternerFull { kind: "operation" })?;
        Ok(Operation::Custom(CustomOperation(index)))
    }

    /// The built-in operation, if this is one.
    #[inline]
    pub const fn known(self) -> Option<OperationType> {
        match self {
            Operation::Known(op) => Some(op),
            Operation::Custom(_) => None,
        }
    }

    /// The dotted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Known(op) => op.as_str(),
            Operation::Custom(custom) => custom.as_str(),
        }
    }
}

fn validate_operation_name(name: &str) -> Result<(), TypesError> {
    let invalid = |reason: &'static str| TypesError::InvalidName { kind: "operation", name: name.to_owned(), reason };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 128 {
        return Err(invalid("it is longer than 128 bytes"));
    }
    for segment in name.split('.') {
        if segment.is_empty() {
            return Err(invalid("it has an empty segment between dots"));
        }
        if !segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(invalid("only lower-case letters, digits, `_` and `.` are allowed"));
        }
    }
    Ok(())
}

impl From<OperationType> for Operation {
    fn from(op: OperationType) -> Self {
        Operation::Known(op)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = TypesError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Operation::parse(name)
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Operation::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_operation_round_trips() {
        for op in OperationType::ALL {
            let name = op.to_string();
            assert_eq!(get_operation_type(&name).unwrap(), op);
            assert_eq!(name.parse::<Operation>().unwrap(), Operation::Known(op));
            assert_eq!(Operation::Known(op).to_string(), name);
        }
    }

    #[test]
    fn indices_are_dense_and_in_declaration_order() {
        for (i, op) in OperationType::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        assert_eq!(OperationType::COUNT, 11);
    }

    #[test]
    fn seed_names_are_the_dotted_ones() {
        assert_eq!(OperationType::AttentionCausal.as_str(), "attention.causal");
        assert_eq!(OperationType::AttentionSlidingWindow.as_str(), "attention.sliding_window");
        assert_eq!(OperationType::NormRms.as_str(), "rms_norm");
        assert_eq!(OperationType::NormLayer.as_str(), "layer_norm");
    }

    #[test]
    fn unknown_operation_type_suggests_the_nearest() {
        let err = get_operation_type("attention.casual").unwrap_err();
        assert_eq!(
            err,
            TypesError::UnknownOperation { name: "attention.casual".into(), suggestion: Some("attention.causal") }
        );
        assert_eq!(err.to_string(), "unknown operation `attention.casual` (did you mean `attention.causal`?)");
    }

    #[test]
    fn custom_operations_intern_and_compare_as_integers() {
        let a = Operation::parse("moe.router").unwrap();
        let b = Operation::parse("moe.router").unwrap();
        let c = Operation::parse("moe.combine").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.as_str(), "moe.router");
        assert_eq!(std::mem::size_of::<Operation>(), 8);
    }

    #[test]
    fn bad_operation_names_are_refused() {
        for bad in ["", "Attention", "a..b", ".a", "a.", "a b", "ä"] {
            assert!(matches!(Operation::parse(bad), Err(TypesError::InvalidName { .. })), "{bad:?} should be invalid");
        }
        assert!(matches!(
            Operation::parse("rms_nrom"),
            Err(TypesError::UnknownOperation { suggestion: Some("rms_norm"), .. })
        ));
    }

    #[test]
    fn operations_serialise_as_their_names() {
        let json = serde_json::to_string(&Operation::Known(OperationType::Rope)).unwrap();
        assert_eq!(json, "\"rope\"");
        let op: Operation = serde_json::from_str("\"attention.decode\"").unwrap();
        assert_eq!(op, Operation::Known(OperationType::AttentionDecode));
        assert!(serde_json::from_str::<Operation>("\"Bad Name\"").is_err());
    }
}
