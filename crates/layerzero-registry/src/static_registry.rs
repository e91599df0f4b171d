//! [`StaticKernelRegistry`]: the fixed set of kernels behind STATIC dispatch.

use std::sync::Arc;

use layerzero_types::{KernelId, KernelSpec, Operation};
use rustc_hash::FxHashMap;

use crate::RegistryError;

/// Kernels registered once at start-up, each operation with at most one default, then
/// frozen (seed 001's `StaticKernelRegistry`).
///
/// Built with `&mut self` and shared immutably once frozen; registering after
/// [`freeze`](Self::freeze) is [`RegistryError::Frozen`].
///
/// ```
/// use layerzero_registry::{RegistryError, StaticKernelRegistry};
/// use layerzero_types::{KernelSpec, OperationType, Platform};
///
/// let flash = KernelSpec::new("flash_like", Platform::Cpu)?.for_operation(OperationType::AttentionCausal);
/// let plain = KernelSpec::new("plain_like", Platform::Cpu)?.for_operation(OperationType::AttentionCausal);
///
/// let mut registry = StaticKernelRegistry::new();
/// registry.register_from_spec(flash, true)?;
/// registry.register_from_spec(plain.clone(), false)?;
/// registry.freeze();
///
/// let default = registry.default_for(OperationType::AttentionCausal.into()).unwrap();
/// assert_eq!(default.id.as_str(), "flash_like");
/// assert!(matches!(registry.register_from_spec(plain, false), Err(RegistryError::Frozen { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct StaticKernelRegistry {
    kernels: Vec<Arc<KernelSpec>>,
    by_id: FxHashMap<KernelId, usize>,
    by_operation: FxHashMap<Operation, Vec<usize>>,
    defaults: FxHashMap<Operation, usize>,
    frozen: bool,
}

impl StaticKernelRegistry {
    /// An empty, unfrozen registry.
    pub fn new() -> Self {
        StaticKernelRegistry::default()
    }

    /// Registers a kernel; with `is_default`, it becomes the default for each of its
    /// operations. Fails, changing nothing, when frozen, when the spec is invalid or its id
    /// taken, or when one of its operations has a default already.
    pub fn register_from_spec(&mut self, spec: KernelSpec, is_default: bool) -> Result<(), RegistryError> {
        if self.frozen {
            return Err(RegistryError::Frozen { id: spec.id });
        }
        spec.validate()?;
        if self.by_id.contains_key(&spec.id) {
            return Err(RegistryError::DuplicateKernel { id: spec.id });
        }
        if is_default {
            for operation in &spec.operations {
                if let Some(&existing) = self.defaults.get(operation) {
                    return Err(RegistryError::DuplicateDefault {
                        operation: *operation,
                        existing: self.kernels[existing].id,
                        new: spec.id,
                    });
                }
            }
        }
        let index = self.kernels.len();
        for &operation in &spec.operations {
            self.by_operation.entry(operation).or_default().push(index);
            if is_default {
                self.defaults.insert(operation, index);
            }
        }
        self.by_id.insert(spec.id, index);
        self.kernels.push(Arc::new(spec));
        Ok(())
    }

    /// Forbids further registration. Freezing twice is harmless.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Whether [`freeze`](Self::freeze) was called.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// The default kernel for `operation`, if one was registered as the default.
    pub fn default_for(&self, operation: Operation) -> Option<&Arc<KernelSpec>> {
        self.defaults.get(&operation).map(|&i| &self.kernels[i])
    }

    /// Every kernel for `operation`, in registration order.
    pub fn kernels_for(&self, operation: Operation) -> impl Iterator<Item = &Arc<KernelSpec>> {
        self.by_operation.get(&operation).into_iter().flatten().map(|&i| &self.kernels[i])
    }

    /// The kernel with this id.
    pub fn get(&self, id: KernelId) -> Option<&Arc<KernelSpec>> {
        self.by_id.get(&id).map(|&i| &self.kernels[i])
    }

    /// Every kernel, in registration order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Arc<KernelSpec>> {
        self.kernels.iter()
    }

    /// The number of kernels.
    pub fn len(&self) -> usize {
        self.kernels.len()
    }

    /// Whether no kernel is registered.
    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use layerzero_types::{OperationType, Platform};

    use super::*;

    fn spec(id: &str, op: OperationType) -> KernelSpec {
        KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(op)
    }

    #[test]
    fn defaults_per_operation() {
        let mut registry = StaticKernelRegistry::new();
        registry.register_from_spec(spec("static_rope_a", OperationType::Rope), false).unwrap();
        assert!(registry.default_for(OperationType::Rope.into()).is_none());
        registry.register_from_spec(spec("static_rope_b", OperationType::Rope), true).unwrap();
        assert_eq!(registry.default_for(OperationType::Rope.into()).unwrap().id.as_str(), "static_rope_b");
        assert_eq!(registry.kernels_for(OperationType::Rope.into()).count(), 2);
        assert_eq!(registry.kernels_for(OperationType::Matmul.into()).count(), 0);
    }

    #[test]
    fn a_second_default_is_refused_and_changes_nothing() {
        let mut registry = StaticKernelRegistry::new();
        registry.register_from_spec(spec("static_norm_a", OperationType::NormRms), true).unwrap();
        let err = registry.register_from_spec(spec("static_norm_b", OperationType::NormRms), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operation `rms_norm` already has default kernel `static_norm_a`, cannot make `static_norm_b` the default"
        );
        assert_eq!(registry.len(), 1);
        assert!(registry.get(KernelId::new("static_norm_b").unwrap()).is_none());
    }

    #[test]
    fn registering_after_freeze_is_an_error() {
        let mut registry = StaticKernelRegistry::new();
        registry.register_from_spec(spec("static_mm_a", OperationType::Matmul), true).unwrap();
        registry.freeze();
        registry.freeze();
        assert!(registry.is_frozen());
        let err = registry.register_from_spec(spec("static_mm_b", OperationType::Matmul), false).unwrap_err();
        assert_eq!(err.to_string(), "the static kernel registry is frozen: cannot register `static_mm_b`");
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let mut registry = StaticKernelRegistry::new();
        registry.register_from_spec(spec("static_dup", OperationType::Swiglu), false).unwrap();
        assert!(matches!(
            registry.register_from_spec(spec("static_dup", OperationType::Swiglu), false),
            Err(RegistryError::DuplicateKernel { .. })
        ));
    }
}
