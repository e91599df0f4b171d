//! How the CLI gets its dispatcher: [`build_dispatcher`], the one place that constructs it.

use std::path::PathBuf;
use std::sync::Arc;

use layerzero::config::{ConfigSchema, DispatchConfig, DispatchMode, LoadedConfig};
use layerzero::dispatch::{Dispatcher, StaticDispatcher, TelemetrySnapshot, create_config_dispatcher};
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

/// The dispatcher every operation of `run` and `bench` goes through, over the process-wide
/// kernel registry (the CPU kernels are registered at start) and backend registry.
///
/// - STATIC: each operation's registered kernels, highest priority first (the rest are
///   its fallbacks), with no selection at run time (and so no rules file).
/// - DYNAMIC: the selection engine, base priorities deciding.
/// - CONFIG (and HOT_RELOAD, whose file watching comes with the orchestrator): the rules
///   of `--config` decide.
/// - AUTO (no `--mode`): CONFIG with `--config`, else DYNAMIC.
//
// TODO(orchestrator): when `DispatchOrchestrator` / `create_orchestrator` land in
// layerzero-dispatch, build the orchestrator here (AUTO, per-call mode override, mode
// fallback, hot reload) instead of picking one mode's dispatcher; callers only see `Dispatch`.
pub(crate) fn build_dispatcher(options: &DispatchOptions) -> Result<Dispatch, CliError> {
    let kernels = get_global_kernel_registry();
    let backends = get_global_backend_registry();
    let (mode, mode_note) = match (options.mode, &options.config) {
        (None | Some(DispatchMode::Auto), Some(_)) => (DispatchMode::Config, "auto: a rules file was given"),
        (None | Some(DispatchMode::Auto), None) => (DispatchMode::Dynamic, "auto: no rules file"),
        (Some(DispatchMode::HotReload), _) => {
            (DispatchMode::Config, "hot_reload: the file is read once (watching comes with the orchestrator)")
        }
        (Some(mode), _) => (mode, "asked for"),
    };
    let dispatch_error =
        |e: layerzero::dispatch::DispatchError| CliError::usage(format!("building the dispatcher: {e}"));
    match mode {
        DispatchMode::Static => {
            if options.config.is_some() {
                return Err(CliError::usage("--mode static takes no --config: a static map has no rules"));
            }
            let mut builder = StaticDispatcher::builder();
            let snapshot = kernels.snapshot();
            for operation in OperationType::ALL {
                let mut specs = snapshot.by_operation(operation.into()).to_vec();
                // Highest priority first: the default, then its fallbacks.
                specs.sort_by_key(|spec| std::cmp::Reverse(spec.priority));
                for (i, spec) in specs.iter().enumerate() {
                    if let Some(code) = snapshot.implementation(spec.id) {
                        builder = builder.with_kernel(KernelSpec::clone(spec), code.clone(), operation, i == 0);
                    }
                }
            }
            let dispatcher = Arc::new(builder.build().map_err(dispatch_error)?);
            let for_telemetry = Arc::clone(&dispatcher);
            Ok(Dispatch {
                dispatcher,
                mode,
                mode_note: mode_note.to_owned(),
                reason: Box::new(|_, _| Some(Why::Static)),
                telemetry: Box::new(move || for_telemetry.telemetry()),
            })
        }
        DispatchMode::Config | DispatchMode::HotReload => {
            let Some(path) = &options.config else {
                return Err(CliError::usage(format!("--mode {} needs --config FILE", mode.as_str().to_lowercase())));
            };
            // Loaded here first so that a broken file is reported with every error located.
            load_rules(path)?;
            let defaults = DispatchConfig::default();
            let dispatcher = Arc::new(
                create_config_dispatcher(path, kernels, defaults.cache_size(), defaults.cache_ttl_seconds())
                    .map_err(dispatch_error)?,
            );
            let (for_reason, for_telemetry) = (Arc::clone(&dispatcher), Arc::clone(&dispatcher));
            Ok(Dispatch {
                dispatcher,
                mode,
                mode_note: mode_note.to_owned(),
                reason: Box::new(move |op, ctx| reason(for_reason.selection_engine(), op, ctx)),
                telemetry: Box::new(move || for_telemetry.telemetry()),
            })
        }
        DispatchMode::Dynamic | DispatchMode::Auto => {
            let mut config = DispatchConfig::builder().mode(DispatchMode::Dynamic);
            if let Some(path) = &options.config {
                load_rules(path)?;
                config = config.config_path(Some(path.display().to_string()));
            }
            let config = config.build().map_err(CliError::usage)?;
            let dispatcher = Arc::new(
                layerzero::dispatch::create_dynamic_dispatcher(kernels, backends, config, true)
                    .map_err(dispatch_error)?,
            );
            let (for_reason, for_telemetry) = (Arc::clone(&dispatcher), Arc::clone(&dispatcher));
            Ok(Dispatch {
                dispatcher,
                mode: DispatchMode::Dynamic,
                mode_note: mode_note.to_owned(),
                reason: Box::new(move |op, ctx| reason(for_reason.selection_engine(), op, ctx)),
                telemetry: Box::new(move || for_telemetry.telemetry()),
            })
        }
    }
}

fn reason(engine: &layerzero::selection_engine::SelectionEngine, op: Operation, ctx: &SelectionContext) -> Option<Why> {
    engine.select(op, ctx).ok().map(|selection| match selection.reason {
        SelectionReason::Lock { lock } => Why::Lock(lock),
        SelectionReason::Rule { rule } => Why::Rule(rule),
        SelectionReason::Score { priority } => Why::Score(priority),
    })
}
