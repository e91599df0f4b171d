//! LayerZero: decides, for each operation and each call's context, which kernel runs.
//!
//! This crate re-exports the layerzero-* crates under the seeds' module names, so that
//! `layerzero::registry::KernelRegistry` reads like seed 002's `layerzero.registry`.
//!
//! | module | crate | what it holds |
//! |---|---|---|
//! | [`types`] | `layerzero-types` | operations, contexts, dtypes, devices, kernel specs, tensors |
//! | [`registry`] | `layerzero-registry` | kernel, backend and static registries |
//! | [`selection`] | `layerzero-types` | the selection vocabulary (`SelectionContext`, `KernelSpec`) |
//! | [`kernels`] | `layerzero-kernels` | the built-in kernels (CPU) and `register_cpu_kernels` |
//!
//! The selection engine, configuration, circuit breakers and dispatchers join
//! here as their crates land.
//!
//! ```
//! use layerzero::registry::get_global_kernel_registry;
//! use layerzero::types::{get_operation_type, OperationType};
//!
//! assert_eq!(get_operation_type("rms_norm")?, OperationType::NormRms);
//! let _kernels = get_global_kernel_registry().snapshot();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub use layerzero_kernels as kernels;
pub use layerzero_registry as registry;
pub use layerzero_types as types;

/// The selection vocabulary under seed 002's `layerzero.selection` name.
pub mod selection {
    pub use layerzero_types::{
        Constraint, ContextField, FieldValue, KernelSpec, Rejection, SelectionContext, SelectionContextBuilder,
    };
}
