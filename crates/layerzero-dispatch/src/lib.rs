//! LayerZero's dispatchers: for one operation and one call, choose the kernel, run it on
//! the caller's buffers, and keep running when it fails.
//!
//! - [`Dispatcher`]: the trait every mode implements (`dispatch`, `kernel_for`, `mode`).
//! - [`StaticDispatcher`] (STATIC): kernels fixed at build time, through
//!   [`StaticDispatcherBuilder`], the config's `static_kernel_map`
//!   ([`StaticDispatcher::from_config`]) or a frozen `StaticKernelRegistry`; and
//!   [`impl_static_dispatcher!`], which makes a `#[static_dispatch]` router a [`Dispatcher`].
//! - [`DynamicDispatcher`] (DYNAMIC, [`create_dynamic_dispatcher`]): the selection engine
//!   decides per call, from its cache on a hit.
//! - [`ConfigDrivenDispatcher`] (CONFIG, [`create_config_dispatcher`]): a rules file
//!   decides; [`reload_config`](ConfigDrivenDispatcher::reload_config) and
//!   [`explain_selection`](ConfigDrivenDispatcher::explain_selection).
//! - [`DispatchOrchestrator`] ([`create_orchestrator`]): one dispatcher per mode, a default
//!   mode, a per-call mode override, AUTO's choice of mode per operation and the fallback
//!   chain between modes (the rules are in its docs); [`get_telemetry`](DispatchOrchestrator::get_telemetry)
//!   sums the modes. The process-wide one serves the free functions [`dispatch`] and
//!   [`dispatch_with_mode`]; install it once with [`init_global`] /
//!   [`init_global_from_env`], or let the first call build it ([`get_global_dispatcher`]).
//! - [`HotReloadDispatcher`] (HOT_RELOAD, [`create_hot_reload_dispatcher`]): CONFIG whose
//!   rules file is watched and swapped while calls run, never applying an invalid file;
//!   [`reload`](HotReloadDispatcher::reload), [`rollback`](HotReloadDispatcher::rollback),
//!   [`stats`](HotReloadDispatcher::stats), callbacks.
//!
//! Every mode runs kernels through one executor: the kernel's circuit breaker is asked
//! first (a kernel whose circuit is open is skipped), the kernel runs inside
//! `catch_unwind` (a panic is caught and counted as a failure), and on error the fallback
//! chain is walked, at most `max_fallback_attempts` fallbacks, none started once
//! `fallback_timeout_ms` has passed since the first failure. An attention kernel whose spec
//! does not take the arguments' layout runs through a copy into one it takes when
//! `enable_transforms` is on, and is skipped when it is off; `sync_after_execution` runs a
//! [`DeviceSync`] hook after each kernel. The result says which kernel produced the output
//! and whether it was a fallback; when nothing did, a typed [`DispatchError`] lists every
//! attempt, and `log_fallbacks` logs each failed attempt through `tracing`. Telemetry
//! ([`TelemetrySnapshot`]) counts dispatches, fallbacks, selection-cache hits and
//! per-kernel outcomes, with latency percentiles, recorded per thread shard so that
//! threads do not serialise.
//!
//! This crate does not choose kernels itself (that is `layerzero-select`), keep breaker
//! state (`layerzero-breaker`), parse rules (`layerzero-config`) or implement kernels
//! (`layerzero-kernels`; it only registers the CPU ones for the lazily made global
//! dispatcher).
//!
//! Start from [`ConfigDrivenDispatcher`] (rules decide, fallbacks come from the rules'
//! `fallback_chains` and `defaults.fallback_policy`), or [`create_dynamic_dispatcher`]
//! (priorities decide; a rules file when `config_path` is set):
//!
//! ```
//! use std::sync::Arc;
//!
//! use layerzero_config::DispatchConfig;
//! use layerzero_dispatch::{ConfigDrivenDispatcher, Dispatcher};
//! use layerzero_registry::{BackendRegistry, KernelRegistry};
//! use layerzero_types::{
//!     DType, KernelError, KernelImpl, KernelResult, KernelSpec, NormArgs, OpArgs, OperationType, Platform,
//!     Tensor, TensorViewMut,
//! };
//!
//! fn broken(_: &mut NormArgs<'_>) -> KernelResult {
//!     Err(KernelError::Unsupported("this build has no fast path".into()))
//! }
//! fn fill_ones(args: &mut NormArgs<'_>) -> KernelResult {
//!     args.output.as_mut_slice::<f32>()?.fill(1.0);
//!     Ok(())
//! }
//!
//! let kernels = Arc::new(KernelRegistry::new());
//! let spec = |id: &str, priority| -> Result<KernelSpec, Box<dyn std::error::Error>> {
//!     Ok(KernelSpec::new(id, Platform::Cpu)?.for_operation(OperationType::NormRms).with_priority(priority))
//! };
//! kernels.register_with_impl(spec("doc_rms_fast", 100)?, KernelImpl::norm(broken))?;
//! kernels.register_with_impl(spec("doc_rms_plain", 10)?, KernelImpl::norm(fill_ones))?;
//! // The rules' fallback policy names the kernel to fall back to.
//! let policy = layerzero_config::ConfigSchema
//!     .load("version: \"1.0\"\ndefaults: {fallback_policy: doc_rms_plain}\n")?
//!     .compiled;
//! let dispatcher = ConfigDrivenDispatcher::new(
//!     kernels, Arc::new(BackendRegistry::detect()), DispatchConfig::default(), policy, None)?;
//!
//! let input = Tensor::zeros(&[2, 4], DType::F32)?;
//! let weight = Tensor::zeros(&[4], DType::F32)?;
//! let mut out = vec![0f32; 8];
//! let output = TensorViewMut::from_slice(&mut out, &[2, 4])?;
//! let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), output, 1e-6));
//! let result = dispatcher.dispatch(OperationType::NormRms.into(), &mut args, None)?;
//! assert_eq!((result.kernel_id.as_str(), result.was_fallback), ("doc_rms_plain", true));
//! # let _ = args; // `args` borrows `out`; its last use is above.
//! assert_eq!(out, [1.0; 8]);
//! assert_eq!(dispatcher.telemetry().fallback_count, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Fallback after a kernel wrote part of its output is safe for operations that write a
//! separate output (a fallback overwrites all of it); `rope` works in place, so a kernel
//! that fails half-way leaves `x` partly rotated for its fallback.
//!
//! Architecture invariant: a dispatch on a cache hit (or a STATIC route) takes no lock,
//! allocates nothing and hashes no string; only a failure allocates (the error's list of
//! attempts). No input makes it panic, and a panicking kernel is caught.

#![forbid(unsafe_code)]

mod dynamic;
mod error;
mod executor;
mod global;
mod hot_reload;
mod orchestrator;
mod static_dispatcher;
mod telemetry;
mod transform;

pub use dynamic::{
    ConfigDrivenDispatcher, DynamicDispatcher, PreparedCall, create_config_dispatcher, create_dynamic_dispatcher,
};
pub use error::{AttemptError, DispatchError};
pub use executor::{DeviceSync, MAX_CUDA_DEVICES, breaker_config};
pub use global::{dispatch, dispatch_with_mode, get_global_dispatcher, init_global, init_global_from_env};
pub use hot_reload::{
    ConfigHash, ConfigVersion, HotReloadDispatcher, ROLLBACK_DEPTH, ReloadError, ReloadState, ReloadStats,
    WatchOptions, create_hot_reload_dispatcher,
};
pub use layerzero_config::{DispatchConfig, DispatchMode};
pub use layerzero_registry::StaticKernelRegistry;
pub use orchestrator::{DispatchOrchestrator, ModeTelemetry, OrchestratorTelemetry, create_orchestrator};
pub use static_dispatcher::{StaticDispatcher, StaticDispatcherBuilder};
pub use telemetry::{
    DeviceTelemetry, KernelTelemetry, LatencyHistogram, LatencySummary, SHARDS, TRACKED_KERNELS, Telemetry,
    TelemetrySnapshot,
};

use layerzero_types::{DispatchResult, KernelId, OpArgs, Operation, SelectionContext};

/// A way of choosing and running kernels: seed 003's `BaseDispatcher`.
///
/// Implemented by every mode's dispatcher, and by a `#[static_dispatch]` router through
/// [`impl_static_dispatcher!`]. Object safe: an orchestrator holds `Box<dyn Dispatcher>`.
pub trait Dispatcher: Send + Sync {
    /// Runs `operation` on `args` (the output is written into the buffer `args` holds).
    /// `context` is derived from the arguments' metadata when not given.
    ///
    /// The result names the kernel that produced the output, whether it was a fallback,
    /// and the time spent (zero when `record_timing` is off). Arguments of another family
    /// than the operation takes are [`DispatchError::WrongArguments`], before any kernel runs.
    fn dispatch(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
    ) -> Result<DispatchResult<()>, DispatchError>;

    /// The kernel that would run first for `operation` in `context` (seed:
    /// `get_kernel_for_operation`).
    fn kernel_for(&self, operation: Operation, context: &SelectionContext) -> Result<KernelId, DispatchError>;

    /// The mode this dispatcher implements.
    fn mode(&self) -> DispatchMode;

    /// This dispatcher's telemetry, when it keeps any; the orchestrator sums these in
    /// [`DispatchOrchestrator::get_telemetry`]. `None` unless implemented.
    fn telemetry_snapshot(&self) -> Option<TelemetrySnapshot> {
        None
    }
}

#[doc(hidden)]
pub mod __private {
    //! Items [`impl_static_dispatcher!`](crate::impl_static_dispatcher) expands to.

    use std::panic::{AssertUnwindSafe, catch_unwind};

    pub use layerzero_types::{
        DispatchResult, DispatchTiming, KernelError, KernelId, KernelResult, OpArgs, Operation, OperationType,
        SelectionContext,
    };

    pub use crate::{AttemptError, DispatchError, DispatchMode};

    /// The kernel id for a router's kernel path: the path itself when it is a valid id,
    /// else the path with every other character replaced by `_`.
    pub fn router_kernel_id(path: &str) -> Option<KernelId> {
        KernelId::new(path).ok().or_else(|| {
            let cleaned: String = path
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| if c.is_ascii_alphanumeric() || "_-.:/".contains(c) { c } else { '_' })
                .take(128)
                .collect();
            KernelId::new(&cleaned).ok()
        })
    }

    /// Interns every operation's kernel path once.
    pub fn router_ids(kernel_for: fn(OperationType) -> Option<&'static str>) -> Vec<Option<KernelId>> {
        OperationType::ALL.iter().map(|op| kernel_for(*op).and_then(router_kernel_id)).collect()
    }

    /// Runs a router call, catching a panic, and maps its outcome.
    #[inline]
    pub fn run_router(
        operation: Operation,
        kernel: Option<KernelId>,
        call: impl FnOnce() -> KernelResult,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let Some(kernel_id) = kernel else { return Err(DispatchError::NoKernel { operation }) };
        let outcome = match catch_unwind(AssertUnwindSafe(call)) {
            Ok(outcome) => outcome,
            Err(payload) => {
                return Err(DispatchError::FallbackChainExhausted {
                    operation,
                    attempts: vec![(
                        kernel_id,
                        AttemptError::Panicked(crate::executor::panic_message(payload.as_ref())),
                    )],
                });
            }
        };
        match outcome {
            Ok(()) => {
                Ok(DispatchResult { output: (), kernel_id, timing: DispatchTiming::default(), was_fallback: false })
            }
            Err(KernelError::NoKernel { operation }) => Err(DispatchError::NoKernel { operation }),
            Err(KernelError::WrongArguments { expected, actual }) => {
                Err(DispatchError::WrongArguments { operation, expected, actual })
            }
            Err(KernelError::InvalidArgument(message)) => {
                Err(DispatchError::InvalidArguments { operation, source: KernelError::InvalidArgument(message) })
            }
            Err(error) => Err(DispatchError::FallbackChainExhausted {
                operation,
                attempts: vec![(kernel_id, AttemptError::Failed(error))],
            }),
        }
    }
}

/// Implements [`Dispatcher`] for a `#[static_dispatch]` router (the macro's `dispatcher`
/// feature emits `layerzero::dispatch::impl_static_dispatcher!(Router);`).
///
/// The router needs the inherent items the attribute generates:
/// `fn dispatch(&self, OperationType, &mut OpArgs<'_>) -> KernelResult` and
/// `const fn kernel_for(OperationType) -> Option<&'static str>`. The implementation runs the
/// router's `match` directly: no breaker, no fallback, no timing (zero in the result), a
/// panic caught; kernel ids are interned once per router, on its first call. A custom
/// operation (not an `OperationType`) is [`DispatchError::NoKernel`].
#[macro_export]
macro_rules! impl_static_dispatcher {
    ($router:ident) => {
        impl $crate::Dispatcher for $router {
            #[inline]
            fn dispatch(
                &self,
                operation: $crate::__private::Operation,
                args: &mut $crate::__private::OpArgs<'_>,
                _context: ::core::option::Option<&$crate::__private::SelectionContext>,
            ) -> ::core::result::Result<$crate::__private::DispatchResult<()>, $crate::__private::DispatchError> {
                static IDS: ::std::sync::OnceLock<
                    ::std::vec::Vec<::core::option::Option<$crate::__private::KernelId>>,
                > = ::std::sync::OnceLock::new();
                let ::core::option::Option::Some(known) = operation.known() else {
                    return ::core::result::Result::Err($crate::__private::DispatchError::NoKernel { operation });
                };
                let ids = IDS.get_or_init(|| $crate::__private::router_ids($router::kernel_for));
                let kernel = ids.get(known.index()).copied().flatten();
                $crate::__private::run_router(operation, kernel, || $router::dispatch(self, known, args))
            }

            fn kernel_for(
                &self,
                operation: $crate::__private::Operation,
                _context: &$crate::__private::SelectionContext,
            ) -> ::core::result::Result<$crate::__private::KernelId, $crate::__private::DispatchError> {
                operation
                    .known()
                    .and_then($router::kernel_for)
                    .and_then($crate::__private::router_kernel_id)
                    .ok_or($crate::__private::DispatchError::NoKernel { operation })
            }

            fn mode(&self) -> $crate::__private::DispatchMode {
                $crate::__private::DispatchMode::Static
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerzero_types::{DType, KernelResult, NormArgs, OperationType, Tensor, TensorViewMut};

    struct HandRouter;

    impl HandRouter {
        fn dispatch(&self, operation: OperationType, args: &mut OpArgs<'_>) -> KernelResult {
            match (operation, args) {
                (OperationType::NormRms, OpArgs::Norm(args)) => {
                    args.output.as_mut_slice::<f32>()?.fill(2.0);
                    Ok(())
                }
                (OperationType::NormLayer, _) => panic!("layer norm is broken"),
                (operation, _) => Err(layerzero_types::KernelError::NoKernel { operation: operation.into() }),
            }
        }

        const fn kernel_for(operation: OperationType) -> Option<&'static str> {
            match operation {
                OperationType::NormRms => Some("hand_router_rms"),
                OperationType::NormLayer => Some("kernels :: hand_layer"),
                _ => None,
            }
        }
    }

    impl_static_dispatcher!(HandRouter);

    #[test]
    fn the_hook_makes_a_router_a_dispatcher() {
        let router: &dyn Dispatcher = &HandRouter;
        let input = Tensor::zeros(&[1, 4], DType::F32).unwrap();
        let weight = Tensor::zeros(&[4], DType::F32).unwrap();
        let mut out = vec![0f32; 4];
        let output = TensorViewMut::from_slice(&mut out, &[1, 4]).unwrap();
        let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), output, 1e-6));
        let result = router.dispatch(OperationType::NormRms.into(), &mut args, None).unwrap();
        assert_eq!(result.kernel_id.as_str(), "hand_router_rms");
        let err = router.dispatch(OperationType::NormLayer.into(), &mut args, None).unwrap_err();
        assert!(
            matches!(&err, DispatchError::FallbackChainExhausted { attempts, .. }
                if attempts[0].0.as_str() == "kernels::hand_layer" && attempts[0].1 == AttemptError::Panicked("layer norm is broken".into())),
            "{err:?}"
        );
        let err = router.dispatch(OperationType::Rope.into(), &mut args, None).unwrap_err();
        assert_eq!(err, DispatchError::NoKernel { operation: OperationType::Rope.into() });
        let ctx = SelectionContext::default();
        assert_eq!(router.kernel_for(OperationType::NormRms.into(), &ctx).unwrap().as_str(), "hand_router_rms");
        assert_eq!(router.mode(), DispatchMode::Static);
        // `args` borrows `out` and is not used past this point.
        assert_eq!(out, [2.0; 4]);
    }
}
