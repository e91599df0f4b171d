//! Element types of tensors.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TypesError;
use crate::intern::nearest_name;

/// A tensor element type, named as seed 000 names them (`float16`, `bfloat16`, ...).
///
/// Only the canonical names parse: `fp16` is refused with the seed's "Invalid dtype" error,
/// so a rule that says `dtype: fp16` fails validation instead of never matching.
///
/// ```
/// use layerzero_types::DType;
///
/// assert_eq!("bfloat16".parse::<DType>().unwrap(), DType::BF16);
/// assert_eq!("fp16".parse::<DType>().unwrap_err().to_string(), "Invalid dtype (fp16)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DType {
    /// IEEE 754 half precision (`float16`).
    F16,
    /// bfloat16 (`bfloat16`).
    BF16,
    /// IEEE 754 single precision (`float32`).
    F32,
    /// IEEE 754 double precision (`float64`).
    F64,
    /// Signed 8-bit integer (`int8`).
    I8,
    /// Unsigned 8-bit integer (`uint8`).
    U8,
    /// Signed 32-bit integer (`int32`).
    I32,
    /// Signed 64-bit integer (`int64`).
    I64,
    /// 8-bit float, 4 exponent and 3 mantissa bits, finite only (`float8_e4m3fn`).
    F8E4M3,
    /// 8-bit float, 5 exponent and 2 mantissa bits (`float8_e5m2`).
    F8E5M2,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 10] = [
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::F8E4M3,
        DType::F8E5M2,
    ];

    /// The canonical name (`float16`, `bfloat16`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F8E4M3 => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
        }
    }

    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::F8E4M3 | DType::F8E5M2 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether this is a floating-point type.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64 | DType::F8E4M3 | DType::F8E5M2)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DType {
    type Err = TypesError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        DType::ALL.into_iter().find(|dtype| dtype.as_str() == name).ok_or_else(|| TypesError::InvalidDType {
            value: name.to_owned(),
            suggestion: dtype_alias(name).or_else(|| nearest_name(name, DType::ALL.map(DType::as_str))),
        })
    }
}

/// The canonical name for a common alias, so the error can say what was meant.
fn dtype_alias(name: &str) -> Option<&'static str> {
    let canonical = match name.to_ascii_lowercase().as_str() {
        "fp16" | "half" | "f16" => DType::F16,
        "bf16" => DType::BF16,
        "fp32" | "float" | "f32" => DType::F32,
        "fp64" | "double" | "f64" => DType::F64,
        "i8" => DType::I8,
        "u8" => DType::U8,
        "i32" | "int" => DType::I32,
        "i64" | "long" => DType::I64,
        "fp8" | "e4m3" | "fp8_e4m3" => DType::F8E4M3,
        "e5m2" | "fp8_e5m2" => DType::F8E5M2,
        _ => return None,
    };
    Some(canonical.as_str())
}

impl Serialize for DType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A Rust type that can be a tensor element: plain old data with a [`DType`].
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
}

macro_rules! element {
    ($($ty:ty => $dtype:expr),* $(,)?) => {
        $(impl Element for $ty { const DTYPE: DType = $dtype; })*
    };
}

element! {
    f16 => DType::F16,
    bf16 => DType::BF16,
    f32 => DType::F32,
    f64 => DType::F64,
    i8 => DType::I8,
    u8 => DType::U8,
    i32 => DType::I32,
    i64 => DType::I64,
}

/// A floating-point element type that kernels read and write through `f32`.
pub trait FloatElement: Element + Copy {
    /// Widens to `f32` (exact for every type but `f64`).
    fn to_f32(self) -> f32;
    /// Narrows from `f32`, rounding to nearest even.
    fn from_f32(value: f32) -> Self;
}

impl FloatElement for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl FloatElement for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
}

impl FloatElement for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canonical_dtype_parses() {
        for dtype in DType::ALL {
            assert_eq!(dtype.as_str().parse::<DType>().unwrap(), dtype);
            assert_eq!(dtype.to_string(), dtype.as_str());
        }
        let names: Vec<_> = DType::ALL.map(DType::as_str).to_vec();
        assert_eq!(
            names,
            [
                "float16",
                "bfloat16",
                "float32",
                "float64",
                "int8",
                "uint8",
                "int32",
                "int64",
                "float8_e4m3fn",
                "float8_e5m2"
            ]
        );
    }

    #[test]
    fn fp16_fails_with_the_seed_message() {
        let err = "fp16".parse::<DType>().unwrap_err();
        assert_eq!(err.to_string(), "Invalid dtype (fp16)");
        assert_eq!(err, TypesError::InvalidDType { value: "fp16".into(), suggestion: Some("float16") });
    }

    #[test]
    fn near_misses_suggest_the_canonical_name() {
        let suggestion = |name: &str| match name.parse::<DType>() {
            Err(TypesError::InvalidDType { suggestion, .. }) => suggestion,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(suggestion("bf16"), Some("bfloat16"));
        assert_eq!(suggestion("float61"), Some("float16"));
        assert_eq!(suggestion("Float32"), Some("float32"));
        assert_eq!(suggestion("complex128"), None);
    }

    #[test]
    fn sizes_match_the_element_types() {
        assert_eq!(DType::F16.size_in_bytes(), size_of::<f16>());
        assert_eq!(DType::BF16.size_in_bytes(), size_of::<bf16>());
        assert_eq!(DType::I64.size_in_bytes(), size_of::<i64>());
        assert_eq!(<bf16 as Element>::DTYPE, DType::BF16);
    }

    #[test]
    fn float_elements_round_trip_through_f32() {
        assert_eq!(<bf16 as FloatElement>::from_f32(1.5).to_f32(), 1.5);
        assert_eq!(<f16 as FloatElement>::from_f32(-0.25).to_f32(), -0.25);
    }
}
