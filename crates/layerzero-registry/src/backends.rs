//! [`BackendRegistry`]: which backends exist on this machine, their devices, and whether
//! they are healthy.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use layerzero_types::{ComputeCapability, Device, Platform};

use crate::RegistryError;

/// What a backend is: its name (as kernel specs name it), platform, version and devices.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    /// The name kernel specs use in their `backend` field (`cpu`, `cuda`).
    pub name: String,
    /// The platform it runs on.
    pub platform: Platform,
    /// A version string (driver version for CUDA), when known.
    pub version: Option<String>,
    /// The devices it drives.
    pub devices: Vec<DeviceInfo>,
}

/// One device a backend drives. Fields a backend cannot tell are `None`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DeviceInfo {
    /// The device.
    pub device: Device,
    /// Its marketing or model name.
    pub name: String,
    /// For GPUs: the compute capability.
    pub compute_capability: Option<ComputeCapability>,
    /// For GPUs: streaming multiprocessors. For CPUs: logical cores available to us.
    pub compute_units: Option<u32>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// For GPUs: shared memory per block, in bytes.
    pub shared_memory_per_block: Option<u32>,
    /// Instruction-set features relevant to kernels (`avx2`, `avx512f`, ...).
    pub features: Vec<String>,
}

/// Whether a backend can take work.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum BackendHealth {
    /// Working normally.
    #[default]
    Healthy,
    /// Working, with a problem worth reporting.
    Degraded {
        /// What is wrong.
        reason: String,
    },
    /// Not usable: selection must not choose its kernels.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl BackendHealth {
    /// Whether kernels of the backend may be chosen (healthy or degraded).
    pub fn is_available(&self) -> bool {
        !matches!(self, BackendHealth::Unavailable { .. })
    }
}

impl fmt::Display for BackendHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendHealth::Healthy => f.write_str("healthy"),
            BackendHealth::Degraded { reason } => write!(f, "degraded: {reason}"),
            BackendHealth::Unavailable { reason } => write!(f, "unavailable: {reason}"),
        }
    }
}

/// A backend and its current health.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendStatus {
    /// What the backend is.
    pub info: BackendInfo,
    /// Whether it can take work.
    pub health: BackendHealth,
}

/// The backends of this process, read without a lock (like [`crate::KernelRegistry`]).
///
/// ```
/// use layerzero_registry::{BackendHealth, BackendRegistry};
///
/// let backends = BackendRegistry::detect();
/// assert!(backends.is_available("cpu"));
///
/// backends.set_health("cpu", BackendHealth::Unavailable { reason: "drained".into() })?;
/// assert!(!backends.is_available("cpu"));
/// # Ok::<(), layerzero_registry::RegistryError>(())
/// ```
pub struct BackendRegistry {
    current: ArcSwap<Vec<BackendStatus>>,
    writer: Mutex<()>,
    version: AtomicU64,
}

impl BackendRegistry {
    /// A registry with no backends.
    pub fn new() -> Self {
        BackendRegistry {
            current: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
            version: AtomicU64::new(1),
        }
    }

    /// A registry holding what this crate can find on its own: the host CPU.
    ///
    /// GPU backends are added by the crates that drive them (the kernels crate with its
    /// `cuda` feature), which know how to ask the driver.
    pub fn detect() -> Self {
        let registry = BackendRegistry::new();
        // The registry is new, so the name cannot be taken.
        let _ = registry.register(host_cpu());
        registry
    }

    fn update<R>(
        &self,
        change: impl FnOnce(&mut Vec<BackendStatus>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        // Changes work on a copy; a poisoned lock guards nothing half-written.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::clone(&self.current.load());
        let result = change(&mut next)?;
        self.current.store(Arc::new(next));
        // After the store: a reader that sees the new version finds the new backends.
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(result)
    }

    /// A counter that moves on every change (a backend added, a health changed), so that
    /// selections made before one (cached, or kept by a prepared call) are made again.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Adds a backend, healthy. Fails if its name is taken.
    pub fn register(&self, info: BackendInfo) -> Result<(), RegistryError> {
        self.register_with_health(info, BackendHealth::Healthy)
    }

    /// Adds a backend in the given health (an absent driver is `Unavailable`, with why).
    pub fn register_with_health(&self, info: BackendInfo, health: BackendHealth) -> Result<(), RegistryError> {
        self.update(|backends| {
            if backends.iter().any(|b| b.info.name == info.name) {
                return Err(RegistryError::DuplicateBackend { name: info.name });
            }
            backends.push(BackendStatus { info, health });
            Ok(())
        })
    }

    /// Changes a backend's health.
    pub fn set_health(&self, name: &str, health: BackendHealth) -> Result<(), RegistryError> {
        self.update(|backends| {
            let backend = backends
                .iter_mut()
                .find(|b| b.info.name == name)
                .ok_or_else(|| RegistryError::UnknownBackend { name: name.to_owned() })?;
            backend.health = health;
            Ok(())
        })
    }

    /// The health of the backend named `name`, if it is registered.
    pub fn health(&self, name: &str) -> Option<BackendHealth> {
        self.current.load().iter().find(|b| b.info.name == name).map(|b| b.health.clone())
    }

    /// Whether a backend named `name` is registered and available.
    pub fn is_available(&self, name: &str) -> bool {
        self.current.load().iter().any(|b| b.info.name == name && b.health.is_available())
    }

    /// Whether some available backend runs on `platform`.
    pub fn is_platform_available(&self, platform: Platform) -> bool {
        self.current.load().iter().any(|b| b.info.platform == platform && b.health.is_available())
    }

    /// What is known of `device`, from the backend that drives it.
    pub fn device(&self, device: Device) -> Option<DeviceInfo> {
        self.current.load().iter().flat_map(|b| &b.info.devices).find(|d| d.device == device).cloned()
    }

    /// Every backend with its health, in registration order.
    pub fn backends(&self) -> Vec<BackendStatus> {
        Vec::clone(&self.current.load())
    }
}

impl Default for BackendRegistry {
    fn default() -> Self {
        BackendRegistry::new()
    }
}

impl fmt::Debug for BackendRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.current.load().iter()).finish()
    }
}

/// The process-wide backend registry (seed 002's `get_global_backend_registry`), made by
/// [`BackendRegistry::detect`] on first use.
pub fn get_global_backend_registry() -> &'static BackendRegistry {
    static GLOBAL: OnceLock<BackendRegistry> = OnceLock::new();
    GLOBAL.get_or_init(BackendRegistry::detect)
}

fn host_cpu() -> BackendInfo {
    let cores = std::thread::available_parallelism().ok().and_then(|n| u32::try_from(n.get()).ok());
    BackendInfo {
        name: "cpu".to_owned(),
        platform: Platform::Cpu,
        version: None,
        devices: vec![DeviceInfo {
            device: Device::Cpu,
            name: cpu_model_name().unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
            compute_units: cores,
            memory_bytes: total_memory_bytes(),
            features: cpu_features(),
            ..DeviceInfo::default()
        }],
    }
}

fn cpu_model_name() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
}

fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn cpu_features() -> Vec<String> {
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($feature:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($feature) {
                    features.push($feature.to_owned());
                }
            )*};
        }
        detect!("sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512bf16");
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            features.push("neon".to_owned());
        }
    }
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str) -> BackendInfo {
        BackendInfo {
            name: name.to_owned(),
            platform: Platform::Cuda,
            version: Some("13.0".into()),
            devices: vec![DeviceInfo {
                device: Device::Cuda(0),
                name: "test gpu".into(),
                compute_capability: Some(ComputeCapability::new(9, 0)),
                ..DeviceInfo::default()
            }],
        }
    }

    #[test]
    fn detect_finds_the_host_cpu() {
        let backends = BackendRegistry::detect();
        let cpu = backends.device(Device::Cpu).unwrap();
        assert!(cpu.compute_units.unwrap_or(1) >= 1);
        assert!(backends.is_platform_available(Platform::Cpu));
        assert!(!backends.is_platform_available(Platform::Cuda));
    }

    #[test]
    fn health_changes_availability() {
        let backends = BackendRegistry::new();
        backends.register_with_health(gpu("cuda"), BackendHealth::Unavailable { reason: "no driver".into() }).unwrap();
        assert!(!backends.is_available("cuda"));
        assert!(!backends.is_platform_available(Platform::Cuda));
        backends.set_health("cuda", BackendHealth::Degraded { reason: "ECC errors".into() }).unwrap();
        assert!(backends.is_available("cuda"));
        assert_eq!(backends.health("cuda").unwrap().to_string(), "degraded: ECC errors");
        assert_eq!(backends.device(Device::Cuda(0)).unwrap().compute_capability, Some(ComputeCapability::new(9, 0)));
    }

    #[test]
    fn duplicate_and_unknown_backends_are_errors() {
        let backends = BackendRegistry::new();
        backends.register(gpu("cuda")).unwrap();
        assert_eq!(backends.register(gpu("cuda")), Err(RegistryError::DuplicateBackend { name: "cuda".into() }));
        assert_eq!(
            backends.set_health("rocm", BackendHealth::Healthy),
            Err(RegistryError::UnknownBackend { name: "rocm".into() })
        );
        assert_eq!(backends.backends().len(), 1);
    }
}
