//! LayerZero's registries: what kernels exist, what backends this machine has, and the
//! frozen set behind STATIC dispatch.
//!
//! - [`KernelRegistry`]: kernels by id and by operation; lock-free reads from any number of
//!   threads while another registers.
//! - [`BackendRegistry`]: backends (CPU, CUDA, ...) with their devices and health.
//! - [`StaticKernelRegistry`]: register with defaults, then [`freeze`](StaticKernelRegistry::freeze).
//!
//! This crate stores and finds; it does not select (that is `layerzero-select`) or run
//! kernels (that is `layerzero-kernels`).
//!
//! ```
//! use layerzero_registry::KernelRegistry;
//! use layerzero_types::{KernelSpec, OperationType, Platform, SelectionContext, DType};
//!
//! let registry = KernelRegistry::new();
//! registry.register(
//!     KernelSpec::new("swiglu_fused", Platform::Cpu)?
//!         .for_operation(OperationType::Swiglu)
//!         .with_dtypes([DType::F32]),
//! )?;
//!
//! let ctx = SelectionContext::builder().dtype(DType::F32).build()?;
//! let runnable: Vec<_> = registry
//!     .get_by_operation(OperationType::Swiglu.into())
//!     .into_iter()
//!     .filter(|spec| spec.check(&ctx).is_ok())
//!     .collect();
//! assert_eq!(runnable.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: depends only on `layerzero-types`; reads never take a lock.

#![forbid(unsafe_code)]

mod backends;
mod error;
mod kernels;
mod static_registry;

pub use backends::{
    BackendHealth, BackendInfo, BackendRegistry, BackendStatus, DeviceInfo, get_global_backend_registry,
};
pub use error::RegistryError;
pub use kernels::{KernelRegistry, KernelSnapshot, get_global_kernel_registry};
pub use static_registry::StaticKernelRegistry;
