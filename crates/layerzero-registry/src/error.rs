//! The one error type of this crate.

use layerzero_types::{ArgsKind, KernelId, Operation, TypesError};

/// Why a registry refused a change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A kernel with this id is registered already.
    #[error("kernel `{id}` is already registered")]
    DuplicateKernel {
        /// The id registered twice.
        id: KernelId,
    },
    /// The spec contradicts itself (see [`layerzero_types::KernelSpec::validate`]).
    #[error(transparent)]
    InvalidSpec(#[from] TypesError),
    /// The code registered for a kernel takes another kind of arguments than one of the
    /// operations its spec claims.
    #[error(
        "kernel `{id}` implements `{operation}`, which takes {expected} arguments, but its code takes {actual} arguments"
    )]
    ImplementationMismatch {
        /// The kernel.
        id: KernelId,
        /// The operation whose arguments differ.
        operation: Operation,
        /// What the operation takes.
        expected: ArgsKind,
        /// What the code takes.
        actual: ArgsKind,
    },
    /// The static registry was frozen; nothing more may be registered.
    #[error("the static kernel registry is frozen: cannot register `{id}`")]
    Frozen {
        /// The kernel that came too late.
        id: KernelId,
    },
    /// A second default kernel for an operation.
    #[error("operation `{operation}` already has default kernel `{existing}`, cannot make `{new}` the default")]
    DuplicateDefault {
        /// The operation.
        operation: Operation,
        /// Its default kernel.
        existing: KernelId,
        /// The kernel that also claimed to be the default.
        new: KernelId,
    },
    /// A backend with this name is registered already.
    #[error("backend `{name}` is already registered")]
    DuplicateBackend {
        /// The name registered twice.
        name: String,
    },
    /// No backend has this name.
    #[error("no backend named `{name}` is registered")]
    UnknownBackend {
        /// The name asked for.
        name: String,
    },
}
