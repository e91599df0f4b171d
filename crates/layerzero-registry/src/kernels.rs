//! [`KernelRegistry`]: every kernel LayerZero may choose, by id and by operation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use layerzero_types::{ArgsKind, KernelId, KernelImpl, KernelSpec, Operation, OperationType};
use rustc_hash::FxHashMap;

use crate::RegistryError;

/// The kernels known to a process, readable from any number of threads without a lock.
///
/// Readers load an immutable [`KernelSnapshot`]; a registration copies the snapshot, adds
/// to the copy and publishes it atomically. Registration is rare (start-up, plug-in load)
/// and reading is constant, so reads pay one atomic load and writers pay a copy.
///
/// ```
/// use layerzero_registry::{KernelRegistry, RegistryError};
/// use layerzero_types::{KernelSpec, OperationType, Platform};
///
/// let registry = KernelRegistry::new();
/// let spec = KernelSpec::new("rms_norm_rowwise", Platform::Cpu)?.for_operation(OperationType::NormRms);
/// registry.register(spec.clone())?;
///
/// assert_eq!(registry.get_by_operation(OperationType::NormRms.into()).len(), 1);
/// assert!(matches!(registry.register(spec), Err(RegistryError::DuplicateKernel { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KernelRegistry {
    current: ArcSwap<KernelSnapshot>,
    // The current snapshot's version, readable with one atomic load (selection caches read
    // it on every hit). Stored after the snapshot it describes is published.
    version: AtomicU64,
    // Serialises writers so that no registration is lost between copy and publish.
    writer: Mutex<()>,
}

/// One consistent state of a [`KernelRegistry`]: what a reader sees, unchanged by later
/// registrations.
#[derive(Clone, Default)]
pub struct KernelSnapshot {
    version: u64,
    kernels: Vec<Arc<KernelSpec>>,
    by_id: FxHashMap<KernelId, usize>,
    // Known operations index a dense table (no hashing on lookup); custom ones a map.
    by_known_operation: [Vec<Arc<KernelSpec>>; OperationType::COUNT],
    by_custom_operation: FxHashMap<Operation, Vec<Arc<KernelSpec>>>,
    implementations: FxHashMap<KernelId, KernelImpl>,
}

impl KernelSnapshot {
    /// Counts registrations: 0 when empty, one more after each successful change.
    /// Caches keyed on the registry's contents include it.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The kernel with this id.
    pub fn get(&self, id: KernelId) -> Option<&Arc<KernelSpec>> {
        self.by_id.get(&id).map(|&i| &self.kernels[i])
    }

    /// The code that runs the kernel, when it was registered with one.
    pub fn implementation(&self, id: KernelId) -> Option<&KernelImpl> {
        self.implementations.get(&id)
    }

    /// The kernels that implement `operation`, in registration order.
    pub fn by_operation(&self, operation: Operation) -> &[Arc<KernelSpec>] {
        match operation {
            Operation::Known(op) => &self.by_known_operation[op.index()],
            Operation::Custom(_) => self.by_custom_operation.get(&operation).map_or(&[], Vec::as_slice),
        }
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

    fn insert(
        &mut self,
        spec: KernelSpec,
        implementation: Option<KernelImpl>,
    ) -> Result<Arc<KernelSpec>, RegistryError> {
        spec.validate()?;
        if self.by_id.contains_key(&spec.id) {
            return Err(RegistryError::DuplicateKernel { id: spec.id });
        }
        if let Some(implementation) = implementation {
            for operation in spec.operations.iter().filter_map(|op| op.known()) {
                if ArgsKind::of(operation) != implementation.kind() {
                    return Err(RegistryError::ImplementationMismatch {
                        id: spec.id,
                        operation: operation.into(),
                        expected: ArgsKind::of(operation),
                        actual: implementation.kind(),
                    });
                }
            }
            self.implementations.insert(spec.id, implementation);
        }
        let spec = Arc::new(spec);
        self.by_id.insert(spec.id, self.kernels.len());
        self.kernels.push(Arc::clone(&spec));
        for &operation in &spec.operations {
            let list = match operation {
                Operation::Known(op) => &mut self.by_known_operation[op.index()],
                Operation::Custom(_) => self.by_custom_operation.entry(operation).or_default(),
            };
            list.push(Arc::clone(&spec));
        }
        Ok(spec)
    }
}

impl KernelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        KernelRegistry {
            current: ArcSwap::from_pointee(KernelSnapshot::default()),
            version: AtomicU64::new(0),
            writer: Mutex::new(()),
        }
    }

    /// Registers a kernel's spec without code (a catalog entry: selection and explain can
    /// reason about it, nothing can run it). Fails, changing nothing, if the spec is
    /// invalid or its id is taken.
    pub fn register(&self, spec: KernelSpec) -> Result<Arc<KernelSpec>, RegistryError> {
        self.update(|snapshot| snapshot.insert(spec, None))
    }

    /// Registers a kernel with the code that runs it. Fails, changing nothing, if the spec
    /// is invalid, its id is taken, or the code takes another kind of arguments than the
    /// spec's operations.
    pub fn register_with_impl(
        &self,
        spec: KernelSpec,
        implementation: KernelImpl,
    ) -> Result<Arc<KernelSpec>, RegistryError> {
        self.update(|snapshot| snapshot.insert(spec, Some(implementation)))
    }

    /// Registers several specs without code at once: all of them, or (on the first error)
    /// none.
    pub fn register_all(&self, specs: impl IntoIterator<Item = KernelSpec>) -> Result<(), RegistryError> {
        self.update(|snapshot| specs.into_iter().try_for_each(|spec| snapshot.insert(spec, None).map(drop)))
    }

    /// Registers several kernels with their code at once: all of them, or (on the first
    /// error) none.
    pub fn register_all_with_impls(
        &self,
        kernels: impl IntoIterator<Item = (KernelSpec, KernelImpl)>,
    ) -> Result<(), RegistryError> {
        self.update(|snapshot| {
            kernels
                .into_iter()
                .try_for_each(|(spec, implementation)| snapshot.insert(spec, Some(implementation)).map(drop))
        })
    }

    /// The code that runs kernel `id`, when it was registered with one.
    pub fn implementation(&self, id: KernelId) -> Option<KernelImpl> {
        self.current.load().implementation(id).cloned()
    }

    fn update<R>(
        &self,
        change: impl FnOnce(&mut KernelSnapshot) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        // A panic while holding the lock leaves the published snapshot untouched (the
        // change works on a copy), so a poisoned lock is safe to take over.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = KernelSnapshot::clone(&self.current.load());
        let result = change(&mut next)?;
        next.version += 1;
        let version = next.version;
        self.current.store(Arc::new(next));
        // Release pairs with the Acquire in `version()`: a reader that sees this version
        // then loads a snapshot at least this new.
        self.version.store(version, Ordering::Release);
        Ok(result)
    }

    /// The current state, consistent and unchanging while held.
    pub fn snapshot(&self) -> Arc<KernelSnapshot> {
        self.current.load_full()
    }

    /// The kernel with this id.
    pub fn get(&self, id: KernelId) -> Option<Arc<KernelSpec>> {
        self.current.load().get(id).cloned()
    }

    /// The kernel with this name (which need not have been interned).
    pub fn get_by_name(&self, name: &str) -> Option<Arc<KernelSpec>> {
        KernelId::lookup(name).and_then(|id| self.get(id))
    }

    /// The kernels that implement `operation`, in registration order.
    pub fn get_by_operation(&self, operation: Operation) -> Vec<Arc<KernelSpec>> {
        self.current.load().by_operation(operation).to_vec()
    }

    /// The number of kernels.
    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    /// Whether no kernel is registered.
    pub fn is_empty(&self) -> bool {
        self.current.load().is_empty()
    }

    /// The current snapshot's version (see [`KernelSnapshot::version`]): one atomic load.
    /// A registration in progress may already be visible in [`snapshot`](Self::snapshot)
    /// but not yet here; never the other way round.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

impl Default for KernelRegistry {
    fn default() -> Self {
        KernelRegistry::new()
    }
}

impl std::fmt::Debug for KernelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.current.load();
        f.debug_struct("KernelRegistry")
            .field("version", &snapshot.version)
            .field("kernels", &snapshot.kernels.iter().map(|k| k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// The process-wide kernel registry (seed 002's `get_global_kernel_registry`), empty until
/// something registers into it.
pub fn get_global_kernel_registry() -> &'static KernelRegistry {
    static GLOBAL: OnceLock<KernelRegistry> = OnceLock::new();
    GLOBAL.get_or_init(KernelRegistry::new)
}

#[cfg(test)]
mod tests {
    use layerzero_types::{OperationType, Platform};

    use super::*;

    fn spec(id: &str, ops: &[OperationType]) -> KernelSpec {
        ops.iter().fold(KernelSpec::new(id, Platform::Cpu).unwrap(), |s, &op| s.for_operation(op))
    }

    #[test]
    fn register_get_and_index_by_operation() {
        let registry = KernelRegistry::new();
        assert!(registry.is_empty());
        registry.register(spec("norm_a", &[OperationType::NormRms, OperationType::NormLayer])).unwrap();
        registry.register(spec("norm_b", &[OperationType::NormRms])).unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.version(), 2);
        let rms: Vec<_> =
            registry.get_by_operation(OperationType::NormRms.into()).iter().map(|s| s.id.as_str()).collect();
        assert_eq!(rms, ["norm_a", "norm_b"]);
        assert_eq!(registry.get_by_operation(OperationType::NormLayer.into()).len(), 1);
        assert!(registry.get_by_operation(OperationType::Rope.into()).is_empty());
        assert_eq!(registry.get_by_name("norm_b").unwrap().operations.len(), 1);
        assert!(registry.get_by_name("norm_c_never_made").is_none());
    }

    #[test]
    fn custom_operations_are_indexed_too() {
        let registry = KernelRegistry::new();
        let moe = Operation::parse("moe.router").unwrap();
        let spec = KernelSpec::new("custom_moe_router", Platform::Cpu).unwrap().for_operation(moe);
        registry.register(spec).unwrap();
        assert_eq!(registry.get_by_operation(moe).len(), 1);
        assert!(registry.get_by_operation(Operation::parse("moe.combine").unwrap()).is_empty());
        assert!(registry.get_by_operation(OperationType::Matmul.into()).is_empty());
    }

    #[test]
    fn duplicates_and_invalid_specs_change_nothing() {
        let registry = KernelRegistry::new();
        registry.register(spec("dup_kernel", &[OperationType::Rope])).unwrap();
        let err = registry.register(spec("dup_kernel", &[OperationType::Swiglu])).unwrap_err();
        assert_eq!(err.to_string(), "kernel `dup_kernel` is already registered");
        assert!(registry.get_by_operation(OperationType::Swiglu.into()).is_empty());
        assert!(matches!(registry.register(spec("no_ops", &[])), Err(RegistryError::InvalidSpec(_))));
        assert_eq!(registry.version(), 1);
    }

    #[test]
    fn register_all_is_all_or_nothing() {
        let registry = KernelRegistry::new();
        let batch = [spec("batch_a", &[OperationType::Matmul]), spec("batch_a", &[OperationType::Matmul])];
        assert!(registry.register_all(batch).is_err());
        assert!(registry.is_empty());
        registry
            .register_all([spec("batch_b", &[OperationType::Matmul]), spec("batch_c", &[OperationType::Matmul])])
            .unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.version(), 1);
    }

    #[test]
    fn implementations_must_take_the_operations_arguments() {
        let registry = KernelRegistry::new();
        let norm = KernelImpl::norm(|_| Ok(()));
        registry.register_with_impl(spec("impl_norm", &[OperationType::NormRms]), norm.clone()).unwrap();
        assert_eq!(registry.implementation(KernelId::new("impl_norm").unwrap()).unwrap().kind(), ArgsKind::Norm);

        let err = registry.register_with_impl(spec("impl_rope", &[OperationType::Rope]), norm).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel `impl_rope` implements `rope`, which takes rope arguments, but its code takes norm arguments"
        );
        assert!(registry.get_by_name("impl_rope").is_none());

        registry.register(spec("impl_catalog_only", &[OperationType::Rope])).unwrap();
        assert!(registry.implementation(KernelId::new("impl_catalog_only").unwrap()).is_none());
    }

    #[test]
    fn register_all_with_impls_checks_every_pair() {
        let registry = KernelRegistry::new();
        let norm = KernelImpl::norm(|_| Ok(()));
        let rope = KernelImpl::rope(|_| Ok(()));
        let mismatched = [
            (spec("pair_norm", &[OperationType::NormRms]), norm.clone()),
            (spec("pair_rope", &[OperationType::Rope]), norm.clone()),
        ];
        assert!(matches!(
            registry.register_all_with_impls(mismatched),
            Err(RegistryError::ImplementationMismatch { .. })
        ));
        assert!(registry.is_empty(), "nothing of a failed batch is registered");
        registry
            .register_all_with_impls([
                (spec("pair_norm", &[OperationType::NormRms]), norm),
                (spec("pair_rope", &[OperationType::Rope]), rope),
            ])
            .unwrap();
        assert!(registry.implementation(KernelId::new("pair_rope").unwrap()).is_some());
    }

    #[test]
    fn snapshots_do_not_change_under_the_reader() {
        let registry = KernelRegistry::new();
        registry.register(spec("snap_a", &[OperationType::Rope])).unwrap();
        let before = registry.snapshot();
        registry.register(spec("snap_b", &[OperationType::Rope])).unwrap();
        assert_eq!(before.by_operation(OperationType::Rope.into()).len(), 1);
        assert_eq!(registry.snapshot().by_operation(OperationType::Rope.into()).len(), 2);
    }
}
