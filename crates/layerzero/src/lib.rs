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
//! | [`static_dispatch`] | `layerzero-macros` | STATIC mode: a compile-time kernel map as a `match` router |
//! | [`config`] | `layerzero-config` | `DispatchConfig`, the YAML schema v1.0, compiled rules |
//! | [`selection_engine`] | `layerzero-select` | `SelectionEngine`, its cache, `explain_selection` |
//! | [`breaker`] | `layerzero-breaker` | a lock-free circuit breaker per kernel |
//! | [`kernels`] | `layerzero-kernels` | the built-in kernels (CPU) and `register_cpu_kernels` |
//! | [`dispatch`] | `layerzero-dispatch` | the `Dispatcher` trait, STATIC / DYNAMIC / CONFIG / HOT_RELOAD dispatchers, the orchestrator (AUTO, mode fallback) and the global `dispatch()`, fallbacks, telemetry |
//!
//! The global `dispatch()` works with no setup: the first call builds the process-wide
//! orchestrator from `LAYERZERO_*` (or the defaults) with the built-in CPU kernels.
//!
//! ```
//! use layerzero::dispatch::dispatch;
//! use layerzero::types::{DType, NormArgs, OpArgs, OperationType, Tensor};
//!
//! let input = Tensor::from_f32(&[3.0, 4.0], &[1, 2], DType::F32)?;
//! let weight = Tensor::from_f32(&[1.0, 1.0], &[2], DType::F32)?;
//! let mut out = Tensor::zeros(&[1, 2], DType::F32)?;
//! let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), out.view_mut(), 0.0));
//! let result = dispatch(OperationType::NormRms, &mut args, None)?;
//! assert!(!result.was_fallback);
//! let rms = (12.5f32).sqrt(); // sqrt((9 + 16) / 2)
//! assert!((out.as_slice::<f32>()?[1] - 4.0 / rms).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```
//! use layerzero::registry::get_global_kernel_registry;
//! use layerzero::types::{get_operation_type, OperationType};
//!
//! assert_eq!(get_operation_type("rms_norm")?, OperationType::NormRms);
//! let _kernels = get_global_kernel_registry().snapshot();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! STATIC mode: [`static_dispatch`] turns a compile-time map into a router that `match`es
//! the operation and calls the kernel directly.
//!
//! ```
//! use layerzero::static_dispatch;
//! use layerzero::types::{DType, KernelResult, NormArgs, OpArgs, OperationType, Tensor, TensorViewMut};
//!
//! fn rms_norm_warp(args: &mut NormArgs<'_>) -> KernelResult {
//!     args.output.as_mut_slice::<f32>()?.fill(1.0);
//!     Ok(())
//! }
//!
//! #[static_dispatch("rms_norm" => rms_norm_warp)]
//! pub struct ProdRouter;
//!
//! let input = Tensor::zeros(&[2, 4], DType::F32)?;
//! let weight = Tensor::zeros(&[4], DType::F32)?;
//! let mut out = vec![0f32; 8];
//! let output = TensorViewMut::from_slice(&mut out, &[2, 4])?;
//! let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), output, 1e-6));
//! ProdRouter.dispatch(OperationType::NormRms, &mut args)?;
//! assert_eq!(out, [1.0; 8]);
//! assert_eq!(ProdRouter::KERNELS, [(OperationType::NormRms, "rms_norm_warp")]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub use layerzero_breaker as breaker;
pub use layerzero_config as config;
pub use layerzero_dispatch as dispatch;
pub use layerzero_kernels as kernels;
pub use layerzero_macros::static_dispatch;
pub use layerzero_registry as registry;
pub use layerzero_select as selection_engine;
pub use layerzero_types as types;

/// The selection vocabulary under seed 002's `layerzero.selection` name.
pub mod selection {
    pub use layerzero_types::{
        Constraint, ContextField, FieldValue, KernelSpec, Rejection, SelectionContext, SelectionContextBuilder,
    };
}

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;
