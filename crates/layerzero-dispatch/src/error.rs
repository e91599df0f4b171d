//! The one error type of this crate: [`DispatchError`], and [`AttemptError`] for one kernel
//! of a fallback chain.

use std::fmt;
use std::time::Duration;

use layerzero_breaker::BreakerError;
use layerzero_config::{ConfigError, DispatchMode};
use layerzero_registry::RegistryError;
use layerzero_select::SelectionError;
use layerzero_types::{ArgsKind, KernelError, KernelId, Layout, Operation, TypesError};

/// Why one kernel of a chain did not produce the output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// The kernel returned an error.
    #[error("failed: {0}")]
    Failed(KernelError),
    /// The kernel panicked; the panic was caught and counted as a failure.
    #[error("panicked: {0}")]
    Panicked(String),
    /// Its circuit breaker refused the call (OPEN, or HALF_OPEN with every trial place taken).
    #[error("skipped: its circuit is open")]
    CircuitOpen,
    /// The kernel is known (by spec) but no code is registered for it.
    #[error("skipped: no implementation is registered")]
    NoImplementation,
    /// The kernel's spec does not take the arguments' layout and `enable_transforms` is off.
    #[error("skipped: it does not take {0} tensors and layout transforms are off")]
    LayoutUnsupported(Layout),
    /// The kernel's spec does not take the arguments' layout and the transform into one it
    /// takes could not be made (device memory, an element type without a copy).
    #[error("skipped: no layout transform: {0}")]
    TransformUnavailable(String),
}

/// Why a dispatch produced no output.
///
/// Seed 003's `CircuitOpenError` is [`DispatchError::CircuitOpen`] and its
/// `FallbackChainExhaustedError` is [`DispatchError::FallbackChainExhausted`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// Nothing is mapped to the operation (a static dispatcher without a route for it).
    #[error("no kernel is mapped to operation `{operation}`")]
    NoKernel {
        /// The operation asked for.
        operation: Operation,
    },
    /// The arguments are of another family than the operation takes.
    #[error("operation `{operation}` takes {expected} arguments, got {actual}")]
    WrongArguments {
        /// The operation.
        operation: Operation,
        /// What it takes.
        expected: ArgsKind,
        /// What was passed.
        actual: ArgsKind,
    },
    /// The arguments break the operation's contract (their context cannot be derived, or
    /// a kernel refused them as invalid): no other kernel would accept them either, so no
    /// fallback is tried and no breaker counts it.
    #[error("invalid arguments for `{operation}`: {source}")]
    InvalidArguments {
        /// The operation.
        operation: Operation,
        /// What is wrong.
        source: KernelError,
    },
    /// The selection engine found no kernel that can run the call.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// Every kernel of the chain was refused by its circuit breaker; none ran.
    #[error("every kernel for `{operation}` has an open circuit: {}", ids(kernels))]
    CircuitOpen {
        /// The operation.
        operation: Operation,
        /// The kernels refused, in chain order.
        kernels: Vec<KernelId>,
    },
    /// Every kernel tried failed (or was skipped) and the chain, or
    /// `max_fallback_attempts`, is exhausted.
    #[error("every kernel for `{operation}` failed: {}", attempts_text(attempts))]
    FallbackChainExhausted {
        /// The operation.
        operation: Operation,
        /// Each kernel of the chain that was considered and why it gave no output, in order.
        attempts: Vec<(KernelId, AttemptError)>,
    },
    /// A kernel failed, and the fallback budget (`fallback_timeout_ms`, counted from the
    /// first failure) was spent before another attempt could start.
    #[error("fallback budget of {budget:?} spent for `{operation}` after: {}", attempts_text(attempts))]
    FallbackBudgetExhausted {
        /// The operation.
        operation: Operation,
        /// The budget.
        budget: Duration,
        /// What was tried before the budget ran out.
        attempts: Vec<(KernelId, AttemptError)>,
    },
    /// Building a dispatcher: a kernel it names has no implementation.
    #[error("kernel `{kernel}` has no implementation registered")]
    MissingImplementation {
        /// The kernel.
        kernel: KernelId,
    },
    /// Building a dispatcher: a name that does not parse.
    #[error(transparent)]
    Types(#[from] TypesError),
    /// Building a dispatcher: the configuration or rules file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Building a dispatcher: the breaker settings are invalid.
    #[error(transparent)]
    Breaker(#[from] BreakerError),
    /// Building a dispatcher: a registry refused a kernel.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Building a static dispatcher: one or more problems, all listed.
    #[error("invalid static dispatcher: {}", problems.join("; "))]
    InvalidStaticDispatcher {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// The orchestrator has no dispatcher for any mode it would try for this call.
    #[error("no dispatcher is registered for `{operation}` in any of the modes tried: {}", modes_text(modes))]
    NoDispatcher {
        /// The operation.
        operation: Operation,
        /// The modes that were looked for, in the order they would have been tried.
        modes: Vec<DispatchMode>,
    },
    /// The orchestrator tried more than one mode and every one failed (one mode that
    /// failed alone returns its own error unchanged).
    #[error("every mode failed for `{operation}`: {}", mode_attempts_text(attempts))]
    ModeFallbackExhausted {
        /// The operation.
        operation: Operation,
        /// Each mode tried and its error, in order.
        attempts: Vec<(DispatchMode, DispatchError)>,
    },
    /// `register_dispatcher(DispatchMode::Auto, ..)`: AUTO is the orchestrator's own
    /// choice among the other modes, not a dispatcher.
    #[error("AUTO is chosen by the orchestrator; register a dispatcher for STATIC, DYNAMIC, HOT_RELOAD or CONFIG")]
    AutoIsNotADispatcher,
    /// The HOT_RELOAD dispatcher could not be made (its rules file unreadable or invalid,
    /// or its watcher not started): the [`ReloadError`](crate::ReloadError)'s text, which
    /// locates every problem.
    #[error("hot reload: {0}")]
    HotReload(String),
    /// The process-wide dispatcher was already set (explicitly, or lazily by a first
    /// `dispatch` / `get_global_dispatcher`); it is never replaced.
    #[error("the global dispatcher is already initialised")]
    GlobalAlreadyInitialized,
}

fn modes_text(modes: &[DispatchMode]) -> String {
    modes.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

fn mode_attempts_text(attempts: &[(DispatchMode, DispatchError)]) -> String {
    attempts.iter().map(|(mode, error)| format!("{mode}: {error}")).collect::<Vec<_>>().join("; ")
}

fn ids(kernels: &[KernelId]) -> String {
    kernels.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

fn attempts_text(attempts: &[(KernelId, AttemptError)]) -> String {
    struct One<'a>(&'a KernelId, &'a AttemptError);
    impl fmt::Display for One<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} {}", self.0, self.1)
        }
    }
    attempts.iter().map(|(k, e)| One(k, e).to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_chain_lists_every_attempt() {
        let a = KernelId::new("err_text_a").unwrap();
        let b = KernelId::new("err_text_b").unwrap();
        let err = DispatchError::FallbackChainExhausted {
            operation: layerzero_types::OperationType::NormRms.into(),
            attempts: vec![(a, AttemptError::Panicked("boom".into())), (b, AttemptError::CircuitOpen)],
        };
        assert_eq!(
            err.to_string(),
            "every kernel for `rms_norm` failed: err_text_a panicked: boom; err_text_b skipped: its circuit is open"
        );
    }
}
