//! Where a kernel runs: devices, platforms, tensor layouts and compute capability.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TypesError;

/// A device a tensor lives on: the host, or one CUDA GPU by ordinal.
///
/// ```
/// use layerzero_types::{Device, Platform};
///
/// let device: Device = "cuda:1".parse().unwrap();
/// assert_eq!(device, Device::Cuda(1));
/// assert_eq!(device.platform(), Platform::Cuda);
/// assert_eq!(Device::Cpu.to_string(), "cpu");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Device {
    /// Host memory and CPU kernels.
    #[default]
    Cpu,
    /// A CUDA GPU, by ordinal (`cuda:N`).
    Cuda(u16),
}

impl Device {
    /// The platform this device belongs to.
    pub const fn platform(self) -> Platform {
        match self {
            Device::Cpu => Platform::Cpu,
            Device::Cuda(_) => Platform::Cuda,
        }
    }

    /// The GPU ordinal, for a CUDA device.
    pub const fn ordinal(self) -> Option<u16> {
        match self {
            Device::Cpu => None,
            Device::Cuda(ordinal) => Some(ordinal),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for Device {
    type Err = TypesError;

    /// Parses `cpu`, `cuda:N`, and `cuda` (which means `cuda:0`, as in PyTorch).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || TypesError::InvalidDevice { value: value.to_owned() };
        match value {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => {
                let ordinal = value.strip_prefix("cuda:").ok_or_else(invalid)?;
                // `u16::from_str` accepts a leading `+`; a device string should not.
                if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                ordinal.parse().map(Device::Cuda).map_err(|_| invalid())
            }
        }
    }
}

/// The kind of hardware a kernel targets (seed 000: `cuda`, `rocm`, `cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// NVIDIA GPUs through CUDA.
    Cuda,
    /// AMD GPUs through ROCm.
    Rocm,
    /// The host CPU.
    Cpu,
}

impl Platform {
    /// Every platform.
    pub const ALL: [Platform; 3] = [Platform::Cuda, Platform::Rocm, Platform::Cpu];

    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Cuda => "cuda",
            Platform::Rocm => "rocm",
            Platform::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = TypesError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|platform| platform.as_str() == value)
            .ok_or_else(|| TypesError::InvalidPlatform { value: value.to_owned() })
    }
}

/// How an attention tensor's four dimensions are ordered in memory.
///
/// `B` batch, `S` sequence, `H` heads, `D` head dimension. Operations that are not
/// attention (norms, swiglu, matmul) leave the layout unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layout {
    /// `[batch, seq, heads, head_dim]`: token-major, as projections produce it.
    Bshd,
    /// `[batch, heads, seq, head_dim]`: head-major, as PyTorch's SDPA takes it.
    Bhsd,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 2] = [Layout::Bshd, Layout::Bhsd];

    /// The upper-case name (`BSHD`, `BHSD`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Layout::Bshd => "BSHD",
            Layout::Bhsd => "BHSD",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = TypesError;

    /// Parses `BSHD` or `BHSD`, in either case.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Layout::ALL
            .into_iter()
            .find(|layout| layout.as_str().eq_ignore_ascii_case(value))
            .ok_or_else(|| TypesError::InvalidLayout { value: value.to_owned() })
    }
}

/// A CUDA compute capability, such as 9.0 for Hopper.
///
/// ```
/// use layerzero_types::ComputeCapability;
///
/// let hopper: ComputeCapability = "9.0".parse().unwrap();
/// assert!(hopper >= ComputeCapability::new(8, 0));
/// assert_eq!(hopper.to_string(), "9.0");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComputeCapability {
    /// The major version.
    pub major: u8,
    /// The minor version.
    pub minor: u8,
}

impl ComputeCapability {
    /// `major.minor`.
    pub const fn new(major: u8, minor: u8) -> Self {
        ComputeCapability { major, minor }
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for ComputeCapability {
    type Err = TypesError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || TypesError::InvalidComputeCapability { value: value.to_owned() };
        let (major, minor) = value.split_once('.').ok_or_else(invalid)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(invalid());
        }
        Ok(ComputeCapability {
            major: major.parse().map_err(|_| invalid())?,
            minor: minor.parse().map_err(|_| invalid())?,
        })
    }
}

macro_rules! serde_as_string {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(Device, Platform, Layout, ComputeCapability);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_display() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:7".parse::<Device>().unwrap(), Device::Cuda(7));
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:+1", "cuda:x", "cuda:70000", "CPU"] {
            assert_eq!(bad.parse::<Device>(), Err(TypesError::InvalidDevice { value: bad.into() }), "{bad}");
        }
    }

    #[test]
    fn platforms_parse_and_display() {
        for platform in Platform::ALL {
            assert_eq!(platform.as_str().parse::<Platform>().unwrap(), platform);
        }
        assert_eq!(
            "metal".parse::<Platform>().unwrap_err().to_string(),
            "Invalid platform (metal), expected one of cuda, rocm, cpu"
        );
        assert_eq!(Device::Cuda(0).platform(), Platform::Cuda);
    }

    #[test]
    fn layouts_parse_in_either_case() {
        assert_eq!("bshd".parse::<Layout>().unwrap(), Layout::Bshd);
        assert_eq!("BHSD".parse::<Layout>().unwrap(), Layout::Bhsd);
        assert!("NCHW".parse::<Layout>().is_err());
    }

    #[test]
    fn compute_capabilities_order_and_parse() {
        assert!(ComputeCapability::new(9, 0) > ComputeCapability::new(8, 9));
        assert_eq!("8.6".parse::<ComputeCapability>().unwrap(), ComputeCapability::new(8, 6));
        for bad in ["9", "9.", ".0", "9.0.1", "a.b"] {
            assert!(bad.parse::<ComputeCapability>().is_err(), "{bad}");
        }
    }
}
