//! The CUDA backend: device discovery, modules loaded once per device, and the kernels of
//! `kernels/*.cu`.
//!
//! Start from [`discover`]: it finds every GPU (none, without a driver: never a panic) and
//! returns one [`CudaDevice`] each. A device runs the kernels on tensors in its own memory;
//! a tensor on another device is a typed error, never a silent copy. Bad input (shapes,
//! dtypes, sizes past a variant's limits, misalignment) is refused before launch.
//!
//! ```no_run
//! use layerzero_kernels::cuda::{self, RmsNormVariant};
//! use layerzero_types::{DType, Tensor};
//!
//! let devices = cuda::discover()?;
//! let Some(gpu) = devices.first() else { return Ok(()) }; // no GPU: nothing to do
//! let x = Tensor::from_f32(&vec![1.0; 8 * 4096], &[8, 4096], DType::BF16)?.to_cuda(gpu.stream())?;
//! let w = Tensor::from_f32(&vec![1.0; 4096], &[4096], DType::BF16)?.to_cuda(gpu.stream())?;
//! let mut y = Tensor::zeros(&[8, 4096], DType::BF16)?.to_cuda(gpu.stream())?;
//! gpu.rms_norm(RmsNormVariant::Block, &x, None, &w, &mut y, 1e-6)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod launch;
mod ops;
pub mod ptx;
mod register;

use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, sys};
use layerzero_registry::{BackendInfo, DeviceInfo};
use layerzero_types::{ComputeCapability, Device, KernelError, Platform, TypesError};

pub use register::{RegisterError, cuda_kernel_specs, cuda_kernels, register_cuda_backend, register_cuda_kernels};

pub use ops::{
    LayerNormVariant, RmsNormVariant, RopeTables, RopeVariant, SwigluDeviceInput, SwigluVariant, SwigluViews,
};

/// What went wrong on the CUDA side; converts into [`KernelError::Backend`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// A driver call other than a launch failed.
    #[error("cuda driver: {0}")]
    Driver(String),
    /// A launch failed; names the kernel and its launch shape.
    #[error("cuda launch of {kernel} with grid {grid:?} block {block:?} failed: {message}")]
    Launch {
        /// The kernel's entry point.
        kernel: &'static str,
        /// Grid dimensions.
        grid: (u32, u32, u32),
        /// Block dimensions.
        block: (u32, u32, u32),
        /// The driver's description.
        message: String,
    },
    /// A buffer is smaller than the rows and strides say (refused before launch).
    #[error("{kernel}: buffer `{buffer}` has {len} bytes, the launch would touch {needed}")]
    OutOfBounds {
        /// The kernel's entry point.
        kernel: &'static str,
        /// Which buffer.
        buffer: &'static str,
        /// Bytes the launch would reach.
        needed: usize,
        /// Bytes the buffer has.
        len: usize,
    },
    /// A buffer whose address is not 16-byte aligned, which the kernel's 16-byte loads
    /// need (refused before launch; device allocations always are).
    #[error("{kernel}: buffer `{buffer}` at {address:#x} is not 16-byte aligned")]
    Misaligned {
        /// The kernel's entry point.
        kernel: &'static str,
        /// Which buffer.
        buffer: &'static str,
        /// Its device address.
        address: u64,
    },
    /// A size past what the kernel's parameters can hold.
    #[error("{kernel}: {what} {value} is too large for the kernel")]
    TooLarge {
        /// The kernel's entry point.
        kernel: &'static str,
        /// Which size.
        what: &'static str,
        /// Its value.
        value: usize,
    },
}

impl From<CudaError> for KernelError {
    fn from(e: CudaError) -> Self {
        KernelError::Backend { backend: "cuda", message: e.to_string() }
    }
}

fn driver(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver(e.to_string())
}

/// One GPU: its context, the stream kernels run on, and its modules, loaded on first use.
pub struct CudaDevice {
    device: Device,
    info: DeviceInfo,
    stream: Arc<CudaStream>,
    modules: OnceLock<Result<Modules, CudaError>>,
    blas: OnceLock<Result<cudarc::cublas::CudaBlas, CudaError>>,
}

/// Every entry point of every module, looked up once when the modules load: a launch
/// then costs no driver call beyond the launch itself.
struct Modules {
    /// In the order of [`ENTRY_POINTS`] (module by module, list by list), which
    /// [`ops::Entry`] indexes: a launch finds its function without hashing or comparing
    /// a name.
    functions: Vec<CudaFunction>,
}

/// The entry points of each PTX module (names as in the `.cu` files).
const ENTRY_POINTS: [(&str, &[&[&str]]); 3] = [
    (ptx::NORM, &[&ops::NORM_ENTRY_POINTS, &ops::LAYER_NORM_ENTRY_POINTS]),
    (ptx::ACTIVATION, &[&ops::SWIGLU_ENTRY_POINTS]),
    (ptx::ROPE, &[&ops::ROPE_ENTRY_POINTS]),
];

impl CudaDevice {
    fn open(ordinal: usize) -> Result<CudaDevice, CudaError> {
        let ctx = CudaContext::new(ordinal).map_err(driver)?;
        let attribute = |a| ctx.attribute(a).map_err(driver);
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let info = DeviceInfo {
            device: Device::Cuda(u16::try_from(ordinal).unwrap_or(u16::MAX)),
            name: ctx.name().map_err(driver)?,
            compute_capability: Some(ComputeCapability::new(
                u8::try_from(major).unwrap_or(u8::MAX),
                u8::try_from(minor).unwrap_or(u8::MAX),
            )),
            compute_units: u32::try_from(attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?)
                .ok(),
            memory_bytes: u64::try_from(ctx.total_mem().map_err(driver)?).ok(),
            shared_memory_per_block: u32::try_from(attribute(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?)
            .ok(),
            features: Vec::new(),
        };
        Ok(CudaDevice {
            device: info.device,
            info,
            stream: ctx.default_stream(),
            modules: OnceLock::new(),
            blas: OnceLock::new(),
        })
    }

    /// The device (`cuda:N`).
    pub fn device(&self) -> Device {
        self.device
    }

    /// What the driver says about it.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The stream its kernels run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for every kernel queued on the device's stream.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver)
    }

    /// Runs `work` and measures, with CUDA events recorded on [`stream`](Self::stream)
    /// before and after it, the device time of what it queued there; waits for it to end.
    pub fn timed<R>(&self, work: impl FnOnce() -> R) -> Result<(R, std::time::Duration), CudaError> {
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(timing).map_err(driver)?;
        let result = work();
        let end = self.stream.record_event(timing).map_err(driver)?;
        let ms = start.elapsed_ms(&end).map_err(driver)?;
        Ok((result, std::time::Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3)))
    }

    /// Loads the device's PTX modules now rather than on the first launch (registration
    /// does, so that no dispatch, and no CUDA graph capture, pays for it).
    pub fn load_modules(&self) -> Result<(), CudaError> {
        self.modules().map(drop)
    }

    /// Creates the device's cuBLAS handle now rather than in the first matmul (a few
    /// hundred milliseconds once, measured on an H100). An error when cuBLAS cannot be
    /// opened; the matmul kernel then fails with the same error when called.
    pub fn load_cublas(&self) -> Result<(), CudaError> {
        self.blas().map(drop)
    }

    fn modules(&self) -> Result<&Modules, CudaError> {
        self.modules
            .get_or_init(|| {
                let ctx = self.stream.context();
                let mut functions = Vec::new();
                for (source, lists) in ENTRY_POINTS {
                    let module: Arc<CudaModule> =
                        ctx.load_module(cudarc::nvrtc::Ptx::from_src(source)).map_err(driver)?;
                    for &name in lists.iter().copied().flatten() {
                        functions.push(module.load_function(name).map_err(driver)?);
                    }
                }
                Ok(Modules { functions })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The device's cuBLAS handle, created on first use, bound to [`stream`](Self::stream).
    /// An error (not a panic) when the cuBLAS library is missing.
    fn blas(&self) -> Result<&cudarc::cublas::CudaBlas, CudaError> {
        self.blas
            .get_or_init(|| {
                if !launch::cublas_present() {
                    return Err(CudaError::Driver(
                        "cuBLAS not found (libcublas.so, .so.12, ...); add its folder to LD_LIBRARY_PATH".to_owned(),
                    ));
                }
                cudarc::cublas::CudaBlas::new(Arc::clone(&self.stream)).map_err(|e| CudaError::Driver(format!("{e:?}")))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The loaded function of `entry`: one atomic load (the modules' `OnceLock`) and an
    /// index.
    fn function(&self, entry: ops::Entry) -> Result<&CudaFunction, CudaError> {
        self.modules()?
            .functions
            .get(entry.index())
            .ok_or_else(|| CudaError::Driver(format!("no entry point `{}` in the PTX", entry.name())))
    }

    fn check_on_device(&self, what: &str, device: Device) -> Result<(), KernelError> {
        if device != self.device {
            return Err(off_device(what, self.device, device));
        }
        Ok(())
    }
}

/// A tensor on another device than the kernel's (out of line: see `ops::unsupported_dtype`).
#[cold]
#[inline(never)]
fn off_device(what: &str, expected: Device, actual: Device) -> KernelError {
    let mismatch = TypesError::DeviceMismatch { expected, actual };
    KernelError::InvalidArgument(format!("{what}: {mismatch}"))
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("device", &self.device)
            .field("name", &self.info.name)
            .finish_non_exhaustive()
    }
}

/// Every GPU on this machine; empty (not an error) when there is no CUDA driver.
pub fn discover() -> Result<Vec<CudaDevice>, CudaError> {
    if !launch::driver_present() {
        return Ok(Vec::new());
    }
    let count = CudaContext::device_count().map_err(driver)?;
    (0..usize::try_from(count).unwrap_or(0)).map(CudaDevice::open).collect()
}

/// The backend entry for the devices found, with the driver's version.
pub fn backend_info(devices: &[CudaDevice]) -> BackendInfo {
    let version = launch::driver_version().map(|v| format!("driver CUDA {}.{}", v / 1000, (v % 1000) / 10));
    BackendInfo {
        name: "cuda".to_owned(),
        platform: Platform::Cuda,
        version,
        devices: devices.iter().map(|d| d.info.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry point the Rust side names is in its PTX, and every kernel in the PTX is
    /// named: a renamed or forgotten kernel fails here, on any machine, not on the GPU.
    #[test]
    fn entry_points_match_the_ptx() {
        for (source, lists) in ENTRY_POINTS {
            let named: Vec<&str> = lists.iter().copied().flatten().copied().collect();
            for name in &named {
                assert!(source.contains(&format!(".entry {name}(")), "`{name}` is not in its PTX");
            }
            let in_ptx = source.matches(".entry ").count();
            assert_eq!(in_ptx, named.len(), "the PTX has {in_ptx} kernels, the Rust side names {}", named.len());
        }
    }
}
