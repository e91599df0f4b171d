//! What selection answers: a [`Selection`], or a [`SelectionError`] saying why nothing can
//! run.

use std::fmt;

use layerzero_types::{KernelId, Operation, Rejection};

/// Most fallbacks a [`Selection`] carries (a longer chain is cut here).
pub const MAX_FALLBACKS: usize = 15;

/// The kernel chosen for one call, its ordered fallbacks, and why it was chosen.
///
/// `Copy` and allocation-free, so a cache hit hands one out without touching the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The kernel to run.
    pub kernel: KernelId,
    /// Why it was chosen.
    pub reason: SelectionReason,
    fallbacks: [KernelId; MAX_FALLBACKS],
    fallback_count: u8,
}

impl Selection {
    pub(crate) fn new(
        kernel: KernelId,
        reason: SelectionReason,
        fallbacks: impl IntoIterator<Item = KernelId>,
    ) -> Self {
        let mut selection = Selection { kernel, reason, fallbacks: [kernel; MAX_FALLBACKS], fallback_count: 0 };
        for (slot, id) in selection.fallbacks.iter_mut().zip(fallbacks) {
            *slot = id;
            selection.fallback_count += 1;
        }
        selection
    }

    /// Kernels to try, in order, if the chosen one fails: the operation's
    /// `fallback_chains` entry, then `defaults.fallback_policy`, each only if it can run
    /// the context, without the chosen kernel or repeats.
    pub fn fallbacks(&self) -> &[KernelId] {
        &self.fallbacks[..usize::from(self.fallback_count)]
    }
}

/// Why a kernel was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectionReason {
    /// A `kernel_locks` entry forced it (the index among the file's locks).
    Lock {
        /// Index in `kernel_locks`, in file order.
        lock: u32,
    },
    /// A dispatch rule matched (its index in `dispatch_rules`).
    Rule {
        /// Index in `dispatch_rules`, in file order.
        rule: u32,
    },
    /// No lock or rule decided: it had the highest base priority among the kernels that
    /// can run the context (ties: the first registered).
    Score {
        /// Its base priority.
        priority: u32,
    },
}

impl fmt::Display for SelectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectionReason::Lock { lock } => write!(f, "locked by kernel_locks entry {lock}"),
            SelectionReason::Rule { rule } => write!(f, "chosen by dispatch_rules[{rule}]"),
            SelectionReason::Score { priority } => write!(f, "highest priority ({priority}) of the valid kernels"),
        }
    }
}

/// Why a candidate kernel cannot be chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The kernel is not registered for the operation.
    NotRegistered,
    /// The backend that provides it is not available.
    BackendUnavailable {
        /// The backend's name.
        backend: String,
    },
    /// It cannot run the context (a hard constraint of its spec).
    Constraint(Rejection),
    /// A `kernel_denies` pattern matches it.
    Denied {
        /// The pattern.
        pattern: String,
    },
    /// `kernel_allows` exists and no pattern of it matches.
    NotAllowed,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::NotRegistered => f.write_str("not registered for this operation"),
            RejectReason::BackendUnavailable { backend } => write!(f, "backend `{backend}` is unavailable"),
            RejectReason::Constraint(r) => {
                write!(f, "{} requires {}, context has {}", r.constraint, r.required, r.actual)
            }
            RejectReason::Denied { pattern } => write!(f, "denied by kernel_denies pattern '{pattern}'"),
            RejectReason::NotAllowed => f.write_str("matches no kernel_allows pattern"),
        }
    }
}

/// A candidate and why it was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateRejection {
    /// The kernel.
    pub kernel: KernelId,
    /// Why it cannot be chosen.
    pub reason: RejectReason,
}

impl fmt::Display for CandidateRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kernel, self.reason)
    }
}

/// Why no kernel was selected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectionError {
    /// No kernel is registered for the operation.
    #[error("no kernel is registered for {operation}")]
    NoKernels {
        /// The operation.
        operation: Operation,
    },
    /// Kernels are registered, and none can run this context.
    #[error("no kernel can run {operation} in this context: {}", list(rejections))]
    NoValidKernel {
        /// The operation.
        operation: Operation,
        /// Every candidate, with why it was rejected.
        rejections: Vec<CandidateRejection>,
    },
    /// A lock forces a kernel that cannot be used: locks fail closed, never substituting
    /// another kernel.
    #[error("kernel_locks[\"{lock}\"] forces {kernel} for {operation}, which cannot be used: {reason}")]
    LockUnsatisfiable {
        /// The operation.
        operation: Operation,
        /// The lock's key as written (`attention.*`).
        lock: String,
        /// The locked kernel.
        kernel: KernelId,
        /// Why it cannot run.
        reason: RejectReason,
    },
}

fn list(rejections: &[CandidateRejection]) -> String {
    rejections.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
