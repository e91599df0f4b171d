//! The process-wide orchestrator behind seed 003's `dispatch(...)` and
//! `get_global_dispatcher()`.
//!
//! It is set once and never replaced (a `OnceLock`): reading it on every call is one atomic
//! load, and a reference to it stays valid for the program's life. Set it explicitly,
//! before the first dispatch, with [`init_global`] or [`init_global_from_env`]; a second
//! initialisation, or one after the lazy default was made, is
//! [`DispatchError::GlobalAlreadyInitialized`] and changes nothing. What can still change
//! at run time is inside the orchestrator: its default mode and its dispatchers
//! ([`DispatchOrchestrator::set_default_mode`],
//! [`DispatchOrchestrator::register_dispatcher`]).
//!
//! The lazy default, made by the first [`dispatch`] or [`get_global_dispatcher`] when
//! nothing was installed: [`create_orchestrator`] over
//! [`DispatchConfig::from_env`] and the global kernel and backend registries. When the
//! global kernel registry is empty at that moment it first gets the built-in CPU kernels
//! (`layerzero_kernels::register_cpu_kernels`); a registry that already holds kernels is
//! used as it is, and kernels registered later are seen by DYNAMIC and CONFIG (they read
//! the registry's current version). It never panics: an environment that does not parse,
//! or an orchestrator that cannot be built from it (a bad rules file), is logged with
//! `tracing::warn!` and the default config is used instead; [`init_global_from_env`] is
//! the way to get those errors as values.

use std::sync::OnceLock;

use layerzero_config::{DispatchConfig, DispatchMode};
use layerzero_registry::{get_global_backend_registry, get_global_kernel_registry};
use layerzero_types::{DispatchResult, OpArgs, Operation, SelectionContext};

use crate::{DispatchError, DispatchOrchestrator, create_orchestrator};

static GLOBAL: OnceLock<DispatchOrchestrator> = OnceLock::new();

/// Installs `orchestrator` as the process-wide dispatcher and returns it; fails with
/// [`DispatchError::GlobalAlreadyInitialized`] (dropping `orchestrator`) when one is
/// already installed, explicitly or lazily.
pub fn init_global(orchestrator: DispatchOrchestrator) -> Result<&'static DispatchOrchestrator, DispatchError> {
    let mut offered = Some(orchestrator);
    let installed = GLOBAL.get_or_init(|| {
        // `offered` is `Some` here: this closure runs at most once and nothing else takes it.
        offered.take().unwrap_or_else(|| DispatchOrchestrator::empty(DispatchMode::Dynamic))
    });
    if offered.is_some() { Err(DispatchError::GlobalAlreadyInitialized) } else { Ok(installed) }
}

/// Installs the orchestrator the environment describes ([`DispatchConfig::from_env`], then
/// [`create_orchestrator`] over the global registries, CPU kernels added to an empty
/// kernel registry), returning its errors: a `LAYERZERO_*` variable that does not parse,
/// an invalid rules file, or [`DispatchError::GlobalAlreadyInitialized`].
pub fn init_global_from_env() -> Result<&'static DispatchOrchestrator, DispatchError> {
    if GLOBAL.get().is_some() {
        return Err(DispatchError::GlobalAlreadyInitialized);
    }
    let config = DispatchConfig::from_env()?;
    init_global(orchestrator_over_globals(config)?)
}

/// The process-wide orchestrator (seed 003's `get_global_dispatcher()`), made from the
/// environment on first use when none was installed (see the module docs).
#[inline]
pub fn get_global_dispatcher() -> &'static DispatchOrchestrator {
    GLOBAL.get_or_init(lazy_default)
}

/// Seed 003's `dispatch(operation, inputs, context)` on the process-wide orchestrator,
/// in its default mode. Budget over the orchestrator's: one atomic load.
#[inline]
pub fn dispatch(
    operation: impl Into<Operation>,
    args: &mut OpArgs<'_>,
    context: Option<&SelectionContext>,
) -> Result<DispatchResult<()>, DispatchError> {
    get_global_dispatcher().dispatch_with_mode(operation.into(), args, context, None)
}

/// Seed 003's `dispatch(..., mode=DispatchMode.STATIC)`: [`dispatch`] with the mode for
/// this call.
#[inline]
pub fn dispatch_with_mode(
    operation: impl Into<Operation>,
    args: &mut OpArgs<'_>,
    context: Option<&SelectionContext>,
    mode: DispatchMode,
) -> Result<DispatchResult<()>, DispatchError> {
    get_global_dispatcher().dispatch_with_mode(operation.into(), args, context, Some(mode))
}

fn orchestrator_over_globals(config: DispatchConfig) -> Result<DispatchOrchestrator, DispatchError> {
    let kernels = get_global_kernel_registry();
    if kernels.snapshot().iter().next().is_none() {
        // Two first users may both find it empty; the second registration is refused
        // whole (duplicate ids) and the kernels are there either way.
        if let Err(error) = layerzero_kernels::register_cpu_kernels(kernels) {
            tracing::debug!(%error, "the CPU kernels were not registered by the global dispatcher");
        }
    }
    create_orchestrator(config, kernels, get_global_backend_registry())
}

fn lazy_default() -> DispatchOrchestrator {
    let config = DispatchConfig::from_env().unwrap_or_else(|error| {
        tracing::warn!(%error, "LAYERZERO_* environment ignored for the global dispatcher; using the defaults");
        DispatchConfig::default()
    });
    let from_env = config != DispatchConfig::default();
    match orchestrator_over_globals(config) {
        Ok(orchestrator) => orchestrator,
        Err(error) => {
            tracing::warn!(%error, "the global dispatcher could not be built from the environment; using the defaults");
            let fallback = if from_env { orchestrator_over_globals(DispatchConfig::default()) } else { Err(error) };
            fallback.unwrap_or_else(|error| {
                tracing::warn!(%error, "the global dispatcher has no dispatchers; every dispatch will fail");
                DispatchOrchestrator::empty(DispatchMode::Dynamic)
            })
        }
    }
}
