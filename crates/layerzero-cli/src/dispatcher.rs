//! How the CLI gets its dispatcher: [`build_dispatcher`], the one place that constructs it.

use std::path::PathBuf;
use std::sync::Arc;

use layerzero::config::{ConfigSchema, DispatchConfig, DispatchMode, LoadedConfig};
use layerzero::dispatch::{
    DispatchOrchestrator, Dispatcher, HotReloadDispatcher, StaticDispatcher, TelemetrySnapshot,
    create_config_dispatcher,
};
use layerzero::registry::{get_global_backend_registry, get_global_kernel_registry};
use layerzero::selection_engine::SelectionReason;
use layerzero::types::{KernelSpec, Operation, OperationType, SelectionContext};

use crate::error::CliError;

/// What `run` and `bench` ask for.
#[derive(Clone, Debug, Default)]
pub(crate) struct DispatchOptions {
    /// A rules file (YAML or JSON, schema v1.0).
    pub(crate) config: Option<PathBuf>,
    /// The mode; `None` is AUTO.
    pub(crate) mode: Option<DispatchMode>,
}

/// Why the dispatcher picked a kernel, as the run table shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// A `kernel_locks` entry.
    Lock(u32),
    /// A `dispatch_rules` entry.
    Rule(u32),
    /// The highest base priority among the valid kernels.
    Score(u32),
    /// STATIC mode: the operation's fixed kernel.
    Static,
    /// The chosen kernel failed and a fallback produced the output.
    Fallback,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Lock(i) => write!(f, "lock (kernel_locks entry {i})"),
            Why::Rule(i) => write!(f, "rule (dispatch_rules[{i}])"),
            Why::Score(p) => write!(f, "score (priority {p})"),
            Why::Static => f.write_str("static map"),
            Why::Fallback => f.write_str("fallback"),
        }
    }
}

type ReasonFn = dyn Fn(Operation, &SelectionContext) -> Option<Why> + Send + Sync;
type TelemetryFn = dyn Fn() -> TelemetrySnapshot + Send + Sync;

/// A dispatcher, with what the CLI reports about it.
pub(crate) struct Dispatch {
    /// Runs every operation.
    pub(crate) dispatcher: Arc<dyn Dispatcher>,
    /// The mode it implements, as asked for (AUTO resolved).
    pub(crate) mode: DispatchMode,
    /// What the mode was resolved from, for the report.
    pub(crate) mode_note: String,
    reason: Box<ReasonFn>,
    telemetry: Box<TelemetryFn>,
}

impl Dispatch {
    /// Why `operation` in `context` selects the kernel it selects (before any fallback).
    pub(crate) fn why(&self, operation: Operation, context: &SelectionContext) -> Option<Why> {
        (self.reason)(operation, context)
    }

    /// The dispatcher's telemetry so far.
    pub(crate) fn telemetry(&self) -> TelemetrySnapshot {
        (self.telemetry)()
    }
}

/// Loads a rules file, turning its schema errors into exit code 1 with every error
/// located (`FILE:LINE:COL: PATH: MESSAGE`).
pub(crate) fn load_rules(path: &std::path::Path) -> Result<LoadedConfig, CliError> {
    let source = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    ConfigSchema.load(&source).map_err(|e| match e {
        layerzero::config::ConfigError::Schema { errors } => CliError::invalid(
            errors.iter().map(|error| crate::validate::format_error(path, error)).collect::<Vec<_>>().join("\n"),
        ),
        other => CliError::invalid(format!("{}: {other}", path.display())),
    })
}

/// The dispatcher every operation of `run` and `bench` goes through: a
/// [`DispatchOrchestrator`] over the process-wide kernel registry (the CPU kernels are
/// registered at start) and backend registry, whose default mode is `--mode` (AUTO when
/// not given), with a dispatcher for each mode that can serve:
///
/// - STATIC, with `--mode static` only: each operation's registered kernels, highest
///   priority first (the rest are its fallbacks), with no selection at run time (and so
///   no rules file; registered in other modes it would be AUTO's last fallback and run
///   kernels a rules file excludes);
/// - DYNAMIC: the selection engine, with the rules of `--config` when given, else base
///   priorities;
/// - CONFIG, with `--config`: the rules decide;
/// - HOT_RELOAD, with `--config` and `--mode hot_reload`: CONFIG whose file is watched.
///
/// AUTO is the orchestrator's choice per operation (seed 001): HOT_RELOAD when asked to
/// watch, else DYNAMIC; a mode that fails falls back along the seed's chain.
pub(crate) fn build_dispatcher(options: &DispatchOptions) -> Result<Dispatch, CliError> {
    let kernels = get_global_kernel_registry();
    let backends = get_global_backend_registry();
    let requested = options.mode.unwrap_or(DispatchMode::Auto);
    let dispatch_error =
        |e: layerzero::dispatch::DispatchError| CliError::usage(format!("building the dispatcher: {e}"));
    match (requested, &options.config) {
        (DispatchMode::Static, Some(_)) => {
            return Err(CliError::usage("--mode static takes no --config: a static map has no rules"));
        }
        (DispatchMode::Config | DispatchMode::HotReload, None) => {
            return Err(CliError::usage(format!("--mode {} needs --config FILE", requested.as_str().to_lowercase())));
        }
        _ => {}
    }
    if let Some(path) = &options.config {
        // Loaded here first so that a broken file is reported with every error located.
        load_rules(path)?;
    }
    let config = DispatchConfig::builder()
        .mode(requested)
        .config_path(options.config.as_ref().map(|path| path.display().to_string()))
        .build()
        .map_err(CliError::usage)?;
    let orchestrator = Arc::new(DispatchOrchestrator::new(&config, requested).map_err(dispatch_error)?);

    // STATIC only when asked for: it has no rules, so as a fallback mode it would run
    // kernels a rules file excludes (explicit policy fails closed).
    if requested == DispatchMode::Static {
        orchestrator
            .register_dispatcher(DispatchMode::Static, Arc::new(static_dispatcher()?))
            .map_err(dispatch_error)?;
    }
    let dynamic = Arc::new(
        layerzero::dispatch::create_dynamic_dispatcher(kernels, backends, config.clone(), true)
            .map_err(dispatch_error)?,
    );
    orchestrator.register_dispatcher(DispatchMode::Dynamic, dynamic.clone()).map_err(dispatch_error)?;
    let mut config_driven = None;
    let mut hot_reload = None;
    if let Some(path) = &options.config {
        let defaults = DispatchConfig::default();
        let dispatcher = Arc::new(
            create_config_dispatcher(path, kernels, defaults.cache_size(), defaults.cache_ttl_seconds())
                .map_err(dispatch_error)?,
        );
        orchestrator.register_dispatcher(DispatchMode::Config, dispatcher.clone()).map_err(dispatch_error)?;
        config_driven = Some(dispatcher);
        if requested == DispatchMode::HotReload {
            let dispatcher = HotReloadDispatcher::new(kernels, backends, config.clone(), None)
                .map_err(|e| CliError::invalid(e.to_string()))?;
            // DYNAMIC and CONFIG follow the rules each reload makes live.
            let (follow_dynamic, follow_config) = (Arc::clone(&dynamic), config_driven.clone());
            dispatcher.on_reload_policy(move |live| {
                follow_dynamic.selection_engine().set_policy(live.clone());
                if let Some(config) = &follow_config {
                    config.selection_engine().set_policy(live.clone());
                }
            });
            dispatcher.watch().map_err(|e| CliError::usage(format!("watching {}: {e}", path.display())))?;
            let dispatcher = Arc::new(dispatcher);
            orchestrator.register_dispatcher(DispatchMode::HotReload, dispatcher.clone()).map_err(dispatch_error)?;
            hot_reload = Some(dispatcher);
        }
    }

    // The mode calls land in (AUTO resolves the same way for every operation here: no
    // operation is in a static map).
    let mode = orchestrator.select_mode(OperationType::NormRms.into());
    let mode_note = match options.mode {
        None | Some(DispatchMode::Auto) => format!("auto, through the orchestrator: {}", mode.as_str().to_lowercase()),
        Some(_) => "asked for, through the orchestrator".to_owned(),
    };
    let for_reason = Arc::clone(&orchestrator);
    let for_telemetry = Arc::clone(&orchestrator);
    Ok(Dispatch {
        dispatcher: orchestrator,
        mode,
        mode_note,
        reason: Box::new(move |op, ctx| match for_reason.select_mode(op) {
            DispatchMode::Static => Some(Why::Static),
            DispatchMode::Config => config_driven.as_ref().and_then(|d| reason(d.selection_engine(), op, ctx)),
            DispatchMode::HotReload => hot_reload.as_ref().and_then(|d| reason(d.selection_engine(), op, ctx)),
            DispatchMode::Dynamic | DispatchMode::Auto => reason(dynamic.selection_engine(), op, ctx),
        }),
        telemetry: Box::new(move || for_telemetry.get_telemetry().total),
    })
}

/// STATIC for the CLI: every operation's registered kernels with code, highest priority
/// first (the default, then its fallbacks).
fn static_dispatcher() -> Result<StaticDispatcher, CliError> {
    let snapshot = get_global_kernel_registry().snapshot();
    let mut builder = StaticDispatcher::builder();
    for operation in OperationType::ALL {
        let mut specs = snapshot.by_operation(operation.into()).to_vec();
        specs.sort_by_key(|spec| std::cmp::Reverse(spec.priority));
        for (i, spec) in specs.iter().enumerate() {
            if let Some(code) = snapshot.implementation(spec.id) {
                builder = builder.with_kernel(KernelSpec::clone(spec), code.clone(), operation, i == 0);
            }
        }
    }
    builder.build().map_err(|e| CliError::usage(format!("building the static dispatcher: {e}")))
}

fn reason(engine: &layerzero::selection_engine::SelectionEngine, op: Operation, ctx: &SelectionContext) -> Option<Why> {
    engine.select(op, ctx).ok().map(|selection| match selection.reason {
        SelectionReason::Lock { lock } => Why::Lock(lock),
        SelectionReason::Rule { rule } => Why::Rule(rule),
        SelectionReason::Score { priority } => Why::Score(priority),
    })
}
