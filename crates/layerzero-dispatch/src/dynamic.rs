//! DYNAMIC and CONFIG modes: [`DynamicDispatcher`] and [`ConfigDrivenDispatcher`], both the
//! selection engine in front of the executor.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use layerzero_breaker::{CircuitBreakerRegistry, Clock};
use layerzero_config::{CompiledConfig, ConfigSchema, DispatchConfig, DispatchMode};
use layerzero_registry::{BackendRegistry, KernelRegistry, get_global_backend_registry};
use layerzero_select::{Explanation, Selection, SelectionEngine, Shared};
use layerzero_types::{
    ArgsSignature, Device, DispatchResult, KernelError, KernelId, OpArgs, Operation, SelectionContext,
};

use crate::executor::{DeviceSync, Executor, call_device};
use crate::telemetry::TelemetrySnapshot;
use crate::transform::KernelEntry;
use crate::{DispatchError, Dispatcher};

/// The code of every registered kernel, indexed by [`KernelId::index`], for one registry
/// version.
struct KernelTable {
    version: u64,
    code: Vec<Option<KernelEntry>>,
}

impl KernelTable {
    fn get(&self, kernel: KernelId) -> Option<&KernelEntry> {
        self.code.get(kernel.index() as usize).and_then(Option::as_ref)
    }
}

pub(crate) fn share<T>(shared: &Shared<T>) -> Shared<T> {
    match shared {
        Shared::Static(t) => Shared::Static(t),
        Shared::Owned(t) => Shared::Owned(Arc::clone(t)),
    }
}

/// Slots of each thread's [`MEMO`].
const MEMO_SLOTS: usize = 32;

/// What a remembered selection was made for besides the dispatcher and operation: the
/// arguments' signature when the context was derived from them, else the context given.
#[derive(Clone, Copy)]
enum MemoKey {
    Args(ArgsSignature),
    Context(SelectionContext),
}

/// One remembered selection: which dispatcher made it, for which call, under which
/// versions, and the kernel table it ran with (kept alive by the entry until the slot is
/// reused or the thread ends).
///
/// Laid out so that a hit reads two cache lines: what every hit compares or uses first,
/// then the key (an [`ArgsSignature`] is 48 bytes), the fallbacks last (read only when the
/// chosen kernel fails). After a GPU launch the thread's memo is out of the CPU's nearer
/// caches, and each line a hit touches is then a miss.
#[repr(C, align(64))]
struct MemoEntry {
    owner: u64,
    operation: Operation,
    versions: Versions,
    table: Arc<KernelTable>,
    /// The context's device (where the kernel runs when it names one).
    device: Option<Device>,
    /// The selection's kernel (a copy of `selection.kernel`, on the first line).
    kernel: KernelId,
    key: MemoKey,
    selection: Selection,
}

/// A selection's fallbacks, read from it only when asked for: the chosen kernel's
/// success (the usual case) leaves the selection's cache lines untouched.
struct LazyFallbacks<'a> {
    selection: &'a Selection,
    next: usize,
}

impl Iterator for LazyFallbacks<'_> {
    type Item = KernelId;

    fn next(&mut self) -> Option<KernelId> {
        let kernel = self.selection.fallbacks().get(self.next).copied();
        self.next += 1;
        kernel
    }
}

/// What a selection depends on besides the call: the engine's generation (policy swaps,
/// invalidations), the kernel registry's version and the backend registry's (health).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Versions {
    generation: u64,
    registry: u64,
    backends: u64,
}

/// Where a selection made on a miss is remembered.
struct Remember {
    slot: usize,
    key: MemoKey,
    versions: Versions,
}

/// A thread's remembered selections.
type Memo = RefCell<[Option<MemoEntry>; MEMO_SLOTS]>;

thread_local! {
    /// Each thread's last selections of every DYNAMIC and CONFIG dispatcher, direct-mapped
    /// by dispatcher, operation and call. A hit costs a comparison of the arguments'
    /// signature (or of the context, when the caller gives one) and three atomic loads for
    /// the versions: no context to derive, no key to pack, no hash-map probe, no table
    /// load. Anything else goes to the engine's shared cache. Nothing here is shared
    /// between threads, so a hit writes no shared memory. Entries are only used while the
    /// versions they were made under stand (so never stale), and live until their slot is
    /// reused or the thread ends, whatever `cache_ttl_seconds` says: the TTL bounds the
    /// shared cache; 32 slots a thread need no bound.
    static MEMO: Memo = const { RefCell::new([const { None }; MEMO_SLOTS]) };
}

/// Where a call lives in [`MEMO`]: a multiplicative hash of the dispatcher, the operation
/// and `mixed` (the call's own bits).
#[inline]
fn memo_slot(owner: u64, operation: Operation, mixed: u64) -> usize {
    let operation = operation.known().map_or(0xff, |op| op.index() as u64);
    let mixed = owner ^ operation << 8 ^ mixed;
    (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59) as usize % MEMO_SLOTS
}

/// The bits of a signature that tell a model's calls apart, for [`memo_slot`].
#[inline]
fn signature_bits(signature: &ArgsSignature) -> u64 {
    let w = signature.words();
    w[0] ^ w[1].rotate_left(16) ^ w[2].rotate_left(40) ^ w[3].rotate_left(8)
}

/// The context fields that tell a model's calls apart, for [`memo_slot`].
#[inline]
fn context_bits(context: &SelectionContext) -> u64 {
    let field = |value: Option<u32>| u64::from(value.unwrap_or(u32::MAX));
    field(context.batch_size) << 16
        ^ field(context.seq_len).rotate_left(40)
        ^ field(context.head_dim).rotate_left(24)
        ^ field(context.layer_index).rotate_left(52)
}

/// Numbers each [`EngineDispatch`], so [`MEMO`] entries never mix dispatchers (an address
/// could be reused after a drop; a number is not).
static NEXT_DISPATCHER: AtomicU64 = AtomicU64::new(1);

/// What DYNAMIC and CONFIG share: engine, kernel code, executor.
// `repr(C)`: what a remembered selection's check reads (the id, the memo flag, the kernel
// registry, and the engine's generation and backend registry, first in it) share the
// first cache line; the executor starts a line of its own.
#[repr(C)]
struct EngineDispatch {
    id: u64,
    /// Whether calls may be served from [`MEMO`]: only when the engine caches.
    memo: bool,
    kernels: Shared<KernelRegistry>,
    engine: SelectionEngine,
    table: ArcSwap<KernelTable>,
    rebuild: Mutex<()>,
    executor: Executor,
}

impl EngineDispatch {
    fn new(
        kernels: Shared<KernelRegistry>,
        backends: Shared<BackendRegistry>,
        config: &DispatchConfig,
        policy: CompiledConfig,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<EngineDispatch, DispatchError> {
        let executor = Executor::new(config, clock)?;
        if config.enable_cache() {
            executor.telemetry().track_cache();
        }
        let engine = SelectionEngine::with_config(share(&kernels), backends, config, policy);
        let dispatch = EngineDispatch {
            id: NEXT_DISPATCHER.fetch_add(1, Ordering::Relaxed),
            memo: engine.cache_enabled(),
            engine,
            kernels,
            table: ArcSwap::from_pointee(KernelTable { version: u64::MAX, code: Vec::new() }),
            rebuild: Mutex::new(()),
            executor,
        };
        dispatch.refresh();
        Ok(dispatch)
    }

    /// The kernel table, holding code for every kernel of `chain` that the registry has
    /// code for. Registration only adds kernels (an id's code never changes), so a table
    /// that has every kernel asked for is current for them, and the registry's version is
    /// read only when one is missing. Budget when all are present: one `ArcSwap` load and
    /// one index check per kernel of the chain.
    #[inline]
    fn table(&self, chain: impl Iterator<Item = KernelId> + Clone) -> Guard<Arc<KernelTable>> {
        let table = self.table.load();
        if chain.clone().all(|kernel| table.get(kernel).is_some()) || table.version == self.kernels.version() {
            return table;
        }
        drop(table);
        self.refresh();
        self.table.load()
    }

    fn refresh(&self) {
        // A poisoned lock only means another rebuild panicked; the table is still whole.
        let _rebuild = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.kernels.snapshot();
        if self.table.load().version == snapshot.version() {
            return;
        }
        let mut code: Vec<Option<KernelEntry>> = Vec::new();
        for spec in snapshot.iter() {
            self.executor.register_kernel(spec.id);
            if let Some(implementation) = snapshot.implementation(spec.id) {
                let index = spec.id.index() as usize;
                if code.len() <= index {
                    code.resize(index + 1, None);
                }
                if let Some(slot) = code.get_mut(index) {
                    *slot = Some(KernelEntry::new(spec, implementation.clone()));
                }
            }
        }
        self.table.store(Arc::new(KernelTable { version: snapshot.version(), code }));
    }

    /// The versions a selection made now would be made under.
    #[inline]
    fn versions(&self) -> Versions {
        Versions {
            generation: self.engine.generation(),
            registry: self.kernels.version(),
            backends: self.engine.backends_version(),
        }
    }

    #[inline]
    fn dispatch(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let start = self.executor.now();
        if !self.memo {
            return self.dispatch_unremembered(operation, args, context, start);
        }
        // Read before selecting: a change during the selection leaves a remembered
        // entry behind, and the next call selects again.
        let versions = self.versions();
        // The arguments are checked against the operation here when the context is given,
        // and on a miss otherwise: an entry remembered by signature was made by a call
        // that passed the check, and the signature holds the arguments' kind, so a hit
        // by signature has passed it.
        let (slot, signature) = match context {
            Some(context) => {
                self.executor.check_before_selection(operation, args)?;
                (memo_slot(self.id, operation, context_bits(context)), None)
            }
            None => match args.signature() {
                Some(signature) => (memo_slot(self.id, operation, signature_bits(&signature)), Some(signature)),
                None => return self.dispatch_unremembered(operation, args, context, start),
            },
        };
        // On a hit the kernel runs inside the closure (the entry, and the kernel table it
        // holds, stay borrowed meanwhile); what comes out is small enough for registers,
        // and the result is made outside (a large value carried out of a closure is a
        // copy the next load cannot forward from: ~10 ns a call, measured).
        let (mut selected, mut device) = (None, Device::Cpu);
        let hit = MEMO.try_with(|memo| {
            // A kernel that dispatches again on this thread runs while its caller's entry
            // is borrowed: the inner call reads the memo but cannot overwrite that entry.
            let entries = memo.try_borrow().ok()?;
            let entry = entries.get(slot)?.as_ref()?;
            let same_call = match (&entry.key, context, &signature) {
                (MemoKey::Args(remembered), None, Some(signature)) => remembered == signature,
                (MemoKey::Context(remembered), Some(context), _) => remembered == context,
                _ => false,
            };
            if entry.owner != self.id || entry.operation != operation || entry.versions != versions || !same_call {
                return None;
            }
            selected = self.executor.now();
            device = call_device(entry.device, args);
            let table = &entry.table;
            let fallbacks = LazyFallbacks { selection: &entry.selection, next: 0 };
            let chain = std::iter::once(entry.kernel).chain(fallbacks);
            Some(self.executor.run_chain(operation, chain.map(|kernel| (kernel, table.get(kernel))), args, device))
        });
        if let Ok(Some(outcome)) = hit {
            return self.executor.finish(outcome, device, start, selected);
        }
        self.dispatch_missed(operation, args, context, signature, start, slot, versions)
    }

    /// A call this thread's memo did not answer: checks the arguments when they came by
    /// signature (a given context's were checked already), derives the context when not
    /// given, selects, remembers and runs. Out of line and cold, so that a hit's code
    /// (what runs on every call, and is out of the CPU's instruction cache after a GPU
    /// launch) spans as few cache lines as it can.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn dispatch_missed(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
        signature: Option<ArgsSignature>,
        start: Option<crate::executor::Tick>,
        slot: usize,
        versions: Versions,
    ) -> Result<DispatchResult<()>, DispatchError> {
        if signature.is_some() {
            self.executor.check_before_selection(operation, args)?;
        }
        let derived;
        let (context, key) = match (context, signature) {
            (Some(context), _) => (context, MemoKey::Context(*context)),
            (None, signature) => match args.context() {
                Ok(context) => {
                    derived = context;
                    (&derived, signature.map_or(MemoKey::Context(derived), MemoKey::Args))
                }
                Err(e) => return self.fail_derivation(operation, e),
            },
        };
        self.dispatch_selected(operation, args, context, start, Some(Remember { slot, key, versions }))
    }

    /// Checks the arguments, derives the context when not given, then selects and runs
    /// without the memo: for a dispatcher without a selection cache, or arguments whose
    /// signature does not pack.
    #[cold]
    #[inline(never)]
    fn dispatch_unremembered(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
        start: Option<crate::executor::Tick>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        self.executor.check_before_selection(operation, args)?;
        match context {
            Some(context) => self.dispatch_selected(operation, args, context, start, None),
            None => match args.context() {
                Ok(context) => self.dispatch_selected(operation, args, &context, start, None),
                Err(e) => self.fail_derivation(operation, e),
            },
        }
    }

    /// Fails a call whose arguments describe no valid context.
    #[cold]
    fn fail_derivation(
        &self,
        operation: Operation,
        error: layerzero_types::TypesError,
    ) -> Result<DispatchResult<()>, DispatchError> {
        self.executor.fail_unselected(DispatchError::InvalidArguments { operation, source: KernelError::Tensor(error) })
    }

    /// Selects through the engine (its shared cache when on), then runs; with `remember`,
    /// first stores the selection in this thread's [`MEMO`].
    fn dispatch_selected(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: &SelectionContext,
        start: Option<crate::executor::Tick>,
        remember: Option<Remember>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let selection = match self.engine.select_traced(operation, context) {
            Ok((selection, cache)) => {
                self.executor.record_cache(cache);
                selection
            }
            Err(e) => return self.executor.fail_unselected(e.into()),
        };
        let selected = self.executor.now();
        let chain = std::iter::once(selection.kernel).chain(selection.fallbacks().iter().copied());
        let table = self.table(chain.clone());
        // Borrowed only while a kernel dispatches again on this thread: that inner call
        // does not remember.
        if let Some(Remember { slot, key, versions }) = remember {
            let _ = MEMO.try_with(|memo| {
                if let Ok(mut entries) = memo.try_borrow_mut()
                    && let Some(entry) = entries.get_mut(slot)
                {
                    let table = Arc::clone(&table);
                    let device = context.device;
                    let kernel = selection.kernel;
                    *entry =
                        Some(MemoEntry { owner: self.id, operation, versions, table, device, kernel, key, selection });
                }
            });
        }
        let device = call_device(context.device, args);
        self.executor.run(operation, chain.map(|kernel| (kernel, table.get(kernel))), args, device, start, selected)
    }
}

/// A selection made once for one operation and context, to dispatch many calls of that
/// shape (a decoder layer's step, every layer) without selecting again: no context to
/// derive, no key to pack, no cache probe. Get one from `prepare` on a
/// [`DynamicDispatcher`] or [`ConfigDrivenDispatcher`].
///
/// Each [`dispatch`](Self::dispatch) first checks, with three atomic loads, that the engine's
/// [`generation`](SelectionEngine::generation) (policy swaps, invalidations), the kernel
/// registry's version and the backend registry's (health changes) are those the selection
/// was made under; if one moved, the
/// call goes the whole way (select, then run) as [`Dispatcher::dispatch`] would, so a
/// prepared call never runs a stale choice. Breakers, fallbacks, panics, timing and
/// telemetry are the executor's, as for any dispatch (telemetry counts the call as a
/// selection served without a miss).
///
/// The arguments are the caller's promise: they should have the shape and dtype the
/// context describes. Kernels check their arguments as always, so a mismatch is a typed
/// error, never undefined behaviour; but the kernel was chosen for the context, not for
/// them.
///
/// ```
/// use std::sync::Arc;
/// use layerzero_dispatch::{DispatchConfig, create_dynamic_dispatcher};
/// use layerzero_registry::{BackendRegistry, KernelRegistry};
/// use layerzero_types::{DType, NormArgs, OpArgs, OperationType, SelectionContext, Tensor};
///
/// let kernels = Arc::new(KernelRegistry::new());
/// layerzero_kernels::register_cpu_kernels(&kernels)?;
/// let dispatcher =
///     create_dynamic_dispatcher(kernels, Arc::new(BackendRegistry::detect()), DispatchConfig::default(), true)?;
/// let x = Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0], &[1, 4], DType::F32)?;
/// let w = Tensor::from_f32(&[1.0; 4], &[4], DType::F32)?;
/// let mut y = Tensor::zeros(&[1, 4], DType::F32)?;
/// let context = SelectionContext::from_tensor(&x.view())?;
/// let rms_norm = dispatcher.prepare(OperationType::NormRms.into(), &context)?;
/// for _ in 0..3 {
///     let mut args =
///         OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
///     let result = rms_norm.dispatch(&mut args)?;
///     assert_eq!(result.kernel_id, rms_norm.kernel());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
// Laid out as a memo entry is (see [`MemoEntry`]): what every call reads on the first
// cache line, the context and the fallbacks after it.
#[repr(C, align(64))]
pub struct PreparedCall<'d> {
    inner: &'d EngineDispatch,
    operation: Operation,
    generation: u64,
    registry_version: u64,
    backends_version: u64,
    table: Arc<KernelTable>,
    /// The context's device (a copy of `context.device`, on the first line).
    device: Option<Device>,
    /// The selection's kernel (a copy of `selection.kernel`, on the first line).
    kernel: KernelId,
    context: SelectionContext,
    selection: Selection,
}

impl PreparedCall<'_> {
    /// Runs the prepared operation on `args` (see the type's docs for when it selects
    /// again).
    #[inline]
    pub fn dispatch(&self, args: &mut OpArgs<'_>) -> Result<DispatchResult<()>, DispatchError> {
        let inner = self.inner;
        if inner.engine.generation() != self.generation
            || inner.kernels.version() != self.registry_version
            || inner.engine.backends_version() != self.backends_version
        {
            return inner.dispatch(self.operation, args, Some(&self.context));
        }
        inner.executor.check_before_selection(self.operation, args)?;
        let start = inner.executor.now();
        let fallbacks = LazyFallbacks { selection: &self.selection, next: 0 };
        let chain = std::iter::once(self.kernel).chain(fallbacks);
        let device = call_device(self.device, args);
        let chain = chain.map(|kernel| (kernel, self.table.get(kernel)));
        inner.executor.run(self.operation, chain, args, device, start, start)
    }

    /// The kernel the selection chose (fallbacks follow it when it fails).
    pub fn kernel(&self) -> KernelId {
        self.kernel
    }

    /// The selection, with its fallbacks and why.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The context it was prepared for.
    pub fn context(&self) -> &SelectionContext {
        &self.context
    }
}

impl std::fmt::Debug for PreparedCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCall")
            .field("operation", &self.operation)
            .field("kernel", &self.selection.kernel)
            .finish_non_exhaustive()
    }
}

impl EngineDispatch {
    fn prepare(&self, operation: Operation, context: &SelectionContext) -> Result<PreparedCall<'_>, DispatchError> {
        // Read before selecting: a change during the selection leaves these behind, and
        // the first dispatch then selects again.
        let generation = self.engine.generation();
        let registry_version = self.kernels.version();
        let backends_version = self.engine.backends_version();
        let selection = self.engine.select(operation, context)?;
        let chain = std::iter::once(selection.kernel).chain(selection.fallbacks().iter().copied());
        let table = Guard::into_inner(self.table(chain));
        Ok(PreparedCall {
            inner: self,
            operation,
            generation,
            registry_version,
            backends_version,
            table,
            device: context.device,
            kernel: selection.kernel,
            context: *context,
            selection,
        })
    }
}

/// What DYNAMIC and CONFIG share over their [`EngineDispatch`]: the engine, breaker and
/// telemetry accessors, and the [`Dispatcher`] impl; `$mode` and the dispatch docs differ.
macro_rules! engine_dispatcher {
    ($ty:ident, $mode:expr, $dispatch_doc:literal) => {
        impl $ty {
            /// The selection engine (seed: `dispatcher.selection_engine`).
            pub fn selection_engine(&self) -> &SelectionEngine {
                &self.inner.engine
            }

            /// The host's circuit breakers, when the config enables them (seed:
            /// `dispatcher.circuit_breaker`).
            pub fn circuit_breakers(&self) -> Option<&CircuitBreakerRegistry> {
                self.inner.executor.breakers(Device::Cpu)
            }

            /// The circuit breakers of kernels on `device`: one set per device, so a
            /// kernel failing on one GPU stays closed on the others.
            pub fn circuit_breakers_on(&self, device: Device) -> Option<&CircuitBreakerRegistry> {
                self.inner.executor.breakers(device)
            }

            /// The telemetry so far.
            pub fn telemetry(&self) -> TelemetrySnapshot {
                self.inner.executor.telemetry().snapshot()
            }

            /// Selects once for `operation` in `context` and returns a [`PreparedCall`]
            /// that dispatches calls of that shape without selecting again (while the
            /// policy and the kernel registry stay as they are).
            pub fn prepare(
                &self,
                operation: Operation,
                context: &SelectionContext,
            ) -> Result<PreparedCall<'_>, DispatchError> {
                self.inner.prepare(operation, context)
            }

            /// Installs the hook `sync_after_execution` runs after each kernel
            /// ([`DeviceSync`]); the first installed stays, and `Err` hands back a later one.
            pub fn set_device_sync(&self, hook: Arc<dyn DeviceSync>) -> Result<(), Arc<dyn DeviceSync>> {
                self.inner.executor.set_device_sync(hook)
            }
        }

        impl Dispatcher for $ty {
            #[doc = $dispatch_doc]
            fn dispatch(
                &self,
                operation: Operation,
                args: &mut OpArgs<'_>,
                context: Option<&SelectionContext>,
            ) -> Result<DispatchResult<()>, DispatchError> {
                self.inner.dispatch(operation, args, context)
            }

            fn kernel_for(&self, operation: Operation, context: &SelectionContext) -> Result<KernelId, DispatchError> {
                Ok(self.inner.engine.select(operation, context)?.kernel)
            }

            fn mode(&self) -> DispatchMode {
                $mode
            }

            fn telemetry_snapshot(&self) -> Option<TelemetrySnapshot> {
                Some(self.telemetry())
            }
        }
    };
}

/// Seed 001's `DynamicDispatcher`: the [`SelectionEngine`] chooses per call (from its
/// cache on a hit), then the executor runs the kernel with breakers and fallbacks.
///
/// Build one with [`create_dynamic_dispatcher`] or [`DynamicDispatcher::with_clock`].
pub struct DynamicDispatcher {
    inner: EngineDispatch,
}

impl std::fmt::Debug for DynamicDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicDispatcher").finish_non_exhaustive()
    }
}

/// Seed 001's `create_dynamic_dispatcher`. `use_mvcc_cache` keeps the engine's selection
/// cache (lock-free reads, answers keyed by policy and registry version, so a change is
/// never served stale: the seed's MVCC cache); `false` turns caching off whatever
/// `config.enable_cache()` says. With `config.config_path()` set, that rules file is the
/// policy (its `fallback_chains` and `defaults.fallback_policy` give the fallbacks);
/// without it, base priorities decide and there are no fallbacks.
pub fn create_dynamic_dispatcher(
    kernel_registry: impl Into<Shared<KernelRegistry>>,
    backend_registry: impl Into<Shared<BackendRegistry>>,
    config: DispatchConfig,
    use_mvcc_cache: bool,
) -> Result<DynamicDispatcher, DispatchError> {
    DynamicDispatcher::with_clock(kernel_registry, backend_registry, config, use_mvcc_cache, None)
}

impl DynamicDispatcher {
    /// Like [`create_dynamic_dispatcher`], with breakers reading time from `clock` when
    /// given (a `ManualClock` in tests).
    pub fn with_clock(
        kernel_registry: impl Into<Shared<KernelRegistry>>,
        backend_registry: impl Into<Shared<BackendRegistry>>,
        config: DispatchConfig,
        use_mvcc_cache: bool,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<DynamicDispatcher, DispatchError> {
        let config = if use_mvcc_cache { config } else { config.to_builder().enable_cache(false).build()? };
        let policy = match config.config_path() {
            Some(path) => ConfigSchema.load_file(path)?.compiled,
            None => CompiledConfig::default(),
        };
        let inner = EngineDispatch::new(kernel_registry.into(), backend_registry.into(), &config, policy, clock)?;
        Ok(DynamicDispatcher { inner })
    }
}

engine_dispatcher!(
    DynamicDispatcher,
    DispatchMode::Dynamic,
    "Budget when this thread has the selection in its memo (a call it made before, \
     under the same policy, registry and backend versions): the arguments' signature \
     (or, when a context is given, a comparison of it), three atomic loads for the \
     versions, then the executor; no lock, no allocation, no shared write. Otherwise the \
     context from the arguments' metadata, the engine's shared cache (or the whole \
     selection on a miss), one `ArcSwap` load for the kernel table, and the memo is \
     filled. With timing on, three clock reads; with telemetry on, a few counts on this \
     thread's shard (relaxed loads and stores)."
);

/// Seed 001's `ConfigDrivenDispatcher`: a rules file (YAML or JSON, schema v1.0) decides,
/// through the selection engine; [`reload_config`](Self::reload_config) swaps the rules
/// while calls run (calls in flight finish with the rules they started with).
pub struct ConfigDrivenDispatcher {
    inner: EngineDispatch,
}

impl std::fmt::Debug for ConfigDrivenDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigDrivenDispatcher").field("policy_version", &self.policy_version()).finish_non_exhaustive()
    }
}

/// Seed 001's `create_config_dispatcher`: the rules of `config_path`, kernels from
/// `kernel_registry`, backends from the process-wide backend registry, and a selection
/// cache of `cache_size` entries living `cache_ttl_seconds`.
pub fn create_config_dispatcher(
    config_path: impl AsRef<Path>,
    kernel_registry: impl Into<Shared<KernelRegistry>>,
    cache_size: usize,
    cache_ttl_seconds: f64,
) -> Result<ConfigDrivenDispatcher, DispatchError> {
    let policy = ConfigSchema.load_file(config_path)?.compiled;
    let config = DispatchConfig::builder()
        .mode(DispatchMode::Config)
        .cache_size(cache_size)
        .cache_ttl_seconds(cache_ttl_seconds)
        .build()?;
    ConfigDrivenDispatcher::new(kernel_registry, get_global_backend_registry(), config, policy, None)
}

impl ConfigDrivenDispatcher {
    /// A dispatcher with an already compiled policy, and breakers reading time from
    /// `clock` when given.
    pub fn new(
        kernel_registry: impl Into<Shared<KernelRegistry>>,
        backend_registry: impl Into<Shared<BackendRegistry>>,
        config: DispatchConfig,
        policy: CompiledConfig,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<ConfigDrivenDispatcher, DispatchError> {
        let inner = EngineDispatch::new(kernel_registry.into(), backend_registry.into(), &config, policy, clock)?;
        Ok(ConfigDrivenDispatcher { inner })
    }

    /// Loads the rules file at `path` and, if it is valid, makes it the policy; returns
    /// the new policy version. An invalid file changes nothing and its error lists every
    /// problem.
    pub fn reload_config(&self, path: impl AsRef<Path>) -> Result<u64, DispatchError> {
        let policy = ConfigSchema.load_file(path)?.compiled;
        Ok(self.inner.engine.set_policy(policy))
    }

    /// Like [`reload_config`](Self::reload_config), from the file's text.
    pub fn reload_source(&self, source: &str) -> Result<u64, DispatchError> {
        let policy = ConfigSchema.load(source)?.compiled;
        Ok(self.inner.engine.set_policy(policy))
    }

    /// The current policy's version (1 for the first).
    pub fn policy_version(&self) -> u64 {
        self.inner.engine.policy_version()
    }

    /// Why `operation` in `context` selects what it selects (every candidate's verdict,
    /// the lock or rule that decided, the fallbacks).
    pub fn explain_selection(&self, operation: Operation, context: &SelectionContext) -> Explanation {
        self.inner.engine.explain_selection(operation, context)
    }
}

engine_dispatcher!(
    ConfigDrivenDispatcher,
    DispatchMode::Config,
    "The same path and budget as [`DynamicDispatcher`]'s; the rules are part of the \
     engine's cached answer, so a hit costs no rule evaluation."
);
