//! The orchestrator: one dispatcher per mode, AUTO's choice of mode, per-call mode
//! override and the fallback chain between modes (seed 001, "AUTO Mode", "Mode
//! Switching", "Fallback Between Modes").

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use layerzero_config::{ConfigSchema, DispatchConfig, DispatchMode};
use layerzero_registry::{BackendRegistry, KernelRegistry};
use layerzero_select::Shared;
use layerzero_types::{DispatchResult, KernelId, OpArgs, Operation, OperationType, SelectionContext};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::dynamic::share;
use crate::telemetry::TelemetrySnapshot;
use crate::{ConfigDrivenDispatcher, DispatchError, Dispatcher, StaticDispatcher, create_dynamic_dispatcher};

/// The modes a dispatcher can be registered for, in slot order (AUTO has no slot).
const SLOTS: [DispatchMode; 4] =
    [DispatchMode::Static, DispatchMode::Dynamic, DispatchMode::HotReload, DispatchMode::Config];

const fn slot(mode: DispatchMode) -> Option<usize> {
    match mode {
        DispatchMode::Static => Some(0),
        DispatchMode::Dynamic => Some(1),
        DispatchMode::HotReload => Some(2),
        DispatchMode::Config => Some(3),
        DispatchMode::Auto => None,
    }
}

const fn mode_code(mode: DispatchMode) -> u8 {
    match mode {
        DispatchMode::Static => 0,
        DispatchMode::Dynamic => 1,
        DispatchMode::HotReload => 2,
        DispatchMode::Config => 3,
        DispatchMode::Auto => 4,
    }
}

const fn mode_of(code: u8) -> DispatchMode {
    match code {
        0 => DispatchMode::Static,
        1 => DispatchMode::Dynamic,
        2 => DispatchMode::HotReload,
        3 => DispatchMode::Config,
        _ => DispatchMode::Auto,
    }
}

/// Seed 001's `_mode_fallback_chain`: the modes tried, in order, after a mode fails.
fn seed_fallback_chain(mode: DispatchMode) -> Vec<DispatchMode> {
    match mode {
        DispatchMode::Static => vec![DispatchMode::Dynamic],
        DispatchMode::Dynamic => vec![DispatchMode::Config],
        DispatchMode::HotReload => vec![DispatchMode::Dynamic],
        DispatchMode::Config => vec![DispatchMode::Dynamic],
        DispatchMode::Auto => vec![DispatchMode::Dynamic, DispatchMode::Static],
    }
}

/// What a dispatch reads, swapped whole on every change.
struct ModeTable {
    dispatchers: [Option<Arc<dyn Dispatcher>>; 4],
    /// Indexed by [`mode_code`]; AUTO's chain last.
    chains: [Vec<DispatchMode>; 5],
}

impl ModeTable {
    /// No dispatchers, seed 001's chains.
    fn seed() -> ModeTable {
        ModeTable {
            dispatchers: [None, None, None, None],
            chains: [
                seed_fallback_chain(DispatchMode::Static),
                seed_fallback_chain(DispatchMode::Dynamic),
                seed_fallback_chain(DispatchMode::HotReload),
                seed_fallback_chain(DispatchMode::Config),
                seed_fallback_chain(DispatchMode::Auto),
            ],
        }
    }

    fn dispatcher(&self, mode: DispatchMode) -> Option<&Arc<dyn Dispatcher>> {
        slot(mode).and_then(|slot| self.dispatchers.get(slot)).and_then(Option::as_ref)
    }

    fn chain(&self, mode: DispatchMode) -> &[DispatchMode] {
        self.chains.get(mode_code(mode) as usize).map_or(&[], Vec::as_slice)
    }
}

/// The operations of the config's `static_kernel_map`, for AUTO's first rule.
/// Slots of each thread's [`TABLES`].
const TABLE_SLOTS: usize = 4;

/// One thread's copy of an orchestrator's mode table: (orchestrator id, table version,
/// table).
type TableEntry = Option<(u64, u64, Arc<ModeTable>)>;

thread_local! {
    /// Each thread's last mode table of up to [`TABLE_SLOTS`] orchestrators (by id). A
    /// call reads its orchestrator's table version (one atomic load) and uses this copy
    /// when it is current: no `ArcSwap` guard, whose taking and paying back are two
    /// atomic read-modify-writes (~8 ns a call, measured). A copy keeps its table, and the
    /// dispatchers in it, alive until the thread's next call through that orchestrator
    /// after a change, or until the thread ends.
    static TABLES: RefCell<[TableEntry; TABLE_SLOTS]> = const { RefCell::new([const { None }; TABLE_SLOTS]) };
}

/// Numbers each orchestrator, so [`TABLES`] entries never mix orchestrators.
static NEXT_ORCHESTRATOR: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct StaticOperations {
    known: [bool; OperationType::COUNT],
    custom: FxHashSet<Operation>,
}

impl StaticOperations {
    fn from_config(config: &DispatchConfig) -> Result<StaticOperations, DispatchError> {
        let mut operations = StaticOperations::default();
        for name in config.static_kernel_map().keys() {
            match Operation::parse(name)? {
                Operation::Known(op) => {
                    if let Some(flag) = operations.known.get_mut(op.index()) {
                        *flag = true;
                    }
                }
                custom => {
                    operations.custom.insert(custom);
                }
            }
        }
        Ok(operations)
    }

    #[inline]
    fn contains(&self, operation: Operation) -> bool {
        match operation.known() {
            Some(op) => self.known.get(op.index()).copied().unwrap_or(false),
            None => !self.custom.is_empty() && self.custom.contains(&operation),
        }
    }
}

/// Seed 001's `DispatchOrchestrator`: one [`Dispatcher`] per mode, a default mode, AUTO's
/// choice of mode per operation, a per-call mode override, and a fallback chain between
/// modes. It is a [`Dispatcher`] itself (in its default mode), so it can stand wherever
/// one dispatcher does, including behind the global [`dispatch`](crate::dispatch).
///
/// # Which mode runs a call
///
/// The *requested* mode is the call's override ([`dispatch_with_mode`](Self::dispatch_with_mode))
/// or else the default mode ([`set_default_mode`](Self::set_default_mode); for
/// [`create_orchestrator`], the config's `mode`). When it is AUTO,
/// [`select_mode`](Self::select_mode) resolves it, by seed 001's `_select_best_mode`:
///
/// 1. the operation is a key of the config's `static_kernel_map` → STATIC;
/// 2. the config has a `config_path` and its `mode` is HOT_RELOAD → HOT_RELOAD;
/// 3. otherwise the default mode, or DYNAMIC when the default is AUTO itself (the seed's
///    "default to dynamic"; AUTO never resolves to AUTO).
///
/// AUTO does not look at which dispatchers are registered: a mode it picks that has no
/// dispatcher is handled by the fallback chain, like a mode that fails.
///
/// # The fallback chain between modes
///
/// The modes tried, in order, are the resolved mode, then that mode's chain, then (when
/// AUTO was requested) AUTO's chain; each mode at most once, and a mode with no dispatcher
/// registered is passed over. The chains are seed 001's `_mode_fallback_chain`, one level
/// deep (a fallback mode's own chain is not followed):
///
/// | mode | then tried |
/// |---|---|
/// | STATIC | DYNAMIC |
/// | DYNAMIC | CONFIG |
/// | HOT_RELOAD | DYNAMIC |
/// | CONFIG | DYNAMIC |
/// | AUTO | DYNAMIC, STATIC |
///
/// so AUTO resolving to DYNAMIC tries DYNAMIC, CONFIG, STATIC; an explicit STATIC tries
/// STATIC, DYNAMIC. [`set_mode_fallback_chain`](Self::set_mode_fallback_chain) replaces a
/// chain (an empty one turns mode fallback off for that mode).
///
/// A mode's failure moves on to the next mode unless it is about the arguments
/// ([`DispatchError::WrongArguments`], [`DispatchError::InvalidArguments`]: every mode would
/// refuse them), which is returned at once. When the answer comes from a mode after the
/// first one tried, its `was_fallback` is `true`. When every mode fails: one mode tried
/// returns its own error unchanged (so `CircuitOpen` and `FallbackChainExhausted` reach the
/// caller as they are); several return [`DispatchError::ModeFallbackExhausted`] with each
/// mode's error; none registered is [`DispatchError::NoDispatcher`].
///
/// Each move to another mode after a failure is logged with `tracing::warn!` when the
/// config's `log_fallbacks` is on.
///
/// A fallback to another mode re-runs the operation on the same arguments: safe for
/// operations that write a separate output; `rope` works in place (see the crate docs).
///
/// # Cost
///
/// Over the chosen mode's own dispatch: one atomic load of the default mode, for AUTO one
/// table index (or one hash probe for a custom operation), and one atomic load of the mode
/// table's version, with the table read from this thread's copy when it is current (an
/// `ArcSwap` load otherwise). No lock, no allocation, no shared write; failures allocate
/// their errors. Registering a dispatcher or changing a chain copies the table under a
/// lock; each thread's copy of the old table (and the dispatchers it holds) is dropped at
/// that thread's next call through the orchestrator.
pub struct DispatchOrchestrator {
    id: u64,
    table: ArcSwap<ModeTable>,
    /// Moves after every table change (after the new table is stored).
    table_version: AtomicU64,
    writer: Mutex<()>,
    default_mode: AtomicU8,
    static_operations: StaticOperations,
    hot_reload_configured: bool,
    log_fallbacks: bool,
    /// Calls answered by a mode after the first tried (failure path only).
    mode_fallbacks: AtomicU64,
    /// Times a mode was passed over or failed and the next was tried (failure path only).
    mode_switches: AtomicU64,
    /// Calls for which no mode tried had a dispatcher.
    no_dispatcher: AtomicU64,
}

impl std::fmt::Debug for DispatchOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchOrchestrator")
            .field("default_mode", &self.default_mode())
            .field("registered", &self.registered_modes())
            .finish_non_exhaustive()
    }
}

impl DispatchOrchestrator {
    /// An orchestrator with no dispatchers yet (seed: `DispatchOrchestrator(config,
    /// default_mode=...)`). `config` gives AUTO's inputs (`static_kernel_map`,
    /// `config_path`, `mode`); a `static_kernel_map` key that is not an operation name is
    /// an error.
    pub fn new(config: &DispatchConfig, default_mode: DispatchMode) -> Result<DispatchOrchestrator, DispatchError> {
        let static_operations = StaticOperations::from_config(config)?;
        let hot_reload_configured = config.config_path().is_some() && config.mode() == DispatchMode::HotReload;
        let mut orchestrator = DispatchOrchestrator::from_parts(static_operations, hot_reload_configured, default_mode);
        orchestrator.log_fallbacks = config.log_fallbacks();
        Ok(orchestrator)
    }

    /// An orchestrator with no dispatchers and an empty AUTO map; cannot fail.
    pub(crate) fn empty(default_mode: DispatchMode) -> DispatchOrchestrator {
        DispatchOrchestrator::from_parts(StaticOperations::default(), false, default_mode)
    }

    fn from_parts(
        static_operations: StaticOperations,
        hot_reload_configured: bool,
        default_mode: DispatchMode,
    ) -> DispatchOrchestrator {
        DispatchOrchestrator {
            id: NEXT_ORCHESTRATOR.fetch_add(1, Ordering::Relaxed),
            table: ArcSwap::from_pointee(ModeTable::seed()),
            table_version: AtomicU64::new(0),
            writer: Mutex::new(()),
            default_mode: AtomicU8::new(mode_code(default_mode)),
            static_operations,
            hot_reload_configured,
            log_fallbacks: true,
            mode_fallbacks: AtomicU64::new(0),
            mode_switches: AtomicU64::new(0),
            no_dispatcher: AtomicU64::new(0),
        }
    }

    fn update(&self, change: impl FnOnce(&mut ModeTable)) {
        // A poisoned lock means a change panicked on its copy; the published table is whole.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.table.load();
        let mut next = ModeTable { dispatchers: current.dispatchers.clone(), chains: current.chains.clone() };
        change(&mut next);
        self.table.store(Arc::new(next));
        // Release: a thread that sees the new version sees the new table.
        self.table_version.fetch_add(1, Ordering::Release);
    }

    /// Makes `dispatcher` the one for `mode`, returning the one it replaces. Calls already
    /// running finish on the dispatcher they started with. AUTO takes no dispatcher
    /// ([`DispatchError::AutoIsNotADispatcher`]). The slot decides the mode: a dispatcher
    /// whose own [`Dispatcher::mode`] differs is still used for `mode`.
    pub fn register_dispatcher(
        &self,
        mode: DispatchMode,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Result<Option<Arc<dyn Dispatcher>>, DispatchError> {
        let slot = slot(mode).ok_or(DispatchError::AutoIsNotADispatcher)?;
        let mut previous = None;
        self.update(|table| {
            if let Some(entry) = table.dispatchers.get_mut(slot) {
                previous = entry.replace(dispatcher);
            }
        });
        Ok(previous)
    }

    /// Removes the dispatcher for `mode`, returning it.
    pub fn unregister_dispatcher(&self, mode: DispatchMode) -> Option<Arc<dyn Dispatcher>> {
        let slot = slot(mode)?;
        let mut previous = None;
        self.update(|table| previous = table.dispatchers.get_mut(slot).and_then(Option::take));
        previous
    }

    /// The dispatcher registered for `mode`.
    pub fn get_dispatcher(&self, mode: DispatchMode) -> Option<Arc<dyn Dispatcher>> {
        self.table.load().dispatcher(mode).cloned()
    }

    /// The modes with a dispatcher, in the seed's order.
    pub fn registered_modes(&self) -> Vec<DispatchMode> {
        let table = self.table.load();
        SLOTS.into_iter().filter(|mode| table.dispatcher(*mode).is_some()).collect()
    }

    /// The mode used when a call names none.
    pub fn default_mode(&self) -> DispatchMode {
        mode_of(self.default_mode.load(Ordering::Relaxed))
    }

    /// Changes the default mode; calls that start afterwards use it. (Relaxed: the mode is
    /// one self-contained value; no other memory is published with it.)
    pub fn set_default_mode(&self, mode: DispatchMode) {
        self.default_mode.store(mode_code(mode), Ordering::Relaxed);
    }

    /// The modes tried after `mode` fails (AUTO's: after the mode AUTO chose and its chain).
    pub fn mode_fallback_chain(&self, mode: DispatchMode) -> Vec<DispatchMode> {
        self.table.load().chain(mode).to_vec()
    }

    /// Replaces the modes tried after `mode` fails; an empty chain turns mode fallback off
    /// for `mode`. AUTO in a chain is ignored (it is not a dispatcher).
    pub fn set_mode_fallback_chain(&self, mode: DispatchMode, chain: impl IntoIterator<Item = DispatchMode>) {
        let chain: Vec<DispatchMode> = chain.into_iter().filter(|m| *m != DispatchMode::Auto).collect();
        self.update(|table| {
            if let Some(entry) = table.chains.get_mut(mode_code(mode) as usize) {
                *entry = chain;
            }
        });
    }

    /// AUTO's choice for `operation` (seed 001's `_select_best_mode`; the rules are in the
    /// type's docs): STATIC for an operation of the `static_kernel_map`, HOT_RELOAD when
    /// the config watches a rules file in HOT_RELOAD mode, else the default mode (DYNAMIC
    /// when the default is AUTO). The context is not read.
    #[inline]
    pub fn select_mode(&self, operation: Operation) -> DispatchMode {
        if self.static_operations.contains(operation) {
            return DispatchMode::Static;
        }
        if self.hot_reload_configured {
            return DispatchMode::HotReload;
        }
        match self.default_mode() {
            DispatchMode::Auto => DispatchMode::Dynamic,
            mode => mode,
        }
    }

    /// The modes a call of `operation` requesting `mode` (`None`: the default) would try,
    /// in order, whether or not each has a dispatcher.
    pub fn modes_for(&self, operation: Operation, mode: Option<DispatchMode>) -> Vec<DispatchMode> {
        let requested = mode.unwrap_or_else(|| self.default_mode());
        let resolved = if requested == DispatchMode::Auto { self.select_mode(operation) } else { requested };
        let table = self.table.load();
        plan(&table, requested, resolved).collect()
    }

    /// Dispatches in `mode` (seed: `dispatch(..., mode=DispatchMode.STATIC)`), with the
    /// mode fallback chain; `None` uses the default mode.
    #[inline]
    pub fn dispatch_with_mode(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
        mode: Option<DispatchMode>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let requested = mode.unwrap_or_else(|| self.default_mode());
        let resolved = if requested == DispatchMode::Auto { self.select_mode(operation) } else { requested };
        let version = self.table_version.load(Ordering::Acquire);
        let slot = (self.id % TABLE_SLOTS as u64) as usize;
        let copied = TABLES.try_with(|tables| {
            // Borrowed already only when a kernel dispatches again on this thread: the
            // inner call then reads the copy but does not replace it.
            let tables = tables.try_borrow().ok()?;
            let (id, copy_version, table) = tables.get(slot)?.as_ref()?;
            (*id == self.id && *copy_version == version)
                .then(|| self.dispatch_in(table, operation, args, context, requested, resolved))
        });
        if let Ok(Some(result)) = copied {
            return result;
        }
        // A guard, cloned into an `Arc` only when this thread keeps a copy (not for a
        // dispatch nested in a kernel, which finds the copies borrowed).
        let table = self.table.load();
        let _ = TABLES.try_with(|tables| {
            if let Ok(mut tables) = tables.try_borrow_mut()
                && let Some(entry) = tables.get_mut(slot)
            {
                // Under the version read before the load: a change in between leaves the
                // copy older than the table, and the next call loads again.
                *entry = Some((self.id, version, Arc::clone(&table)));
            }
        });
        self.dispatch_in(&table, operation, args, context, requested, resolved)
    }

    /// Runs the call with `table`: the resolved mode, then the fallback chain.
    #[inline(always)]
    fn dispatch_in(
        &self,
        table: &ModeTable,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
        requested: DispatchMode,
        resolved: DispatchMode,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let Some(dispatcher) = table.dispatcher(resolved) else {
            return self.fall_back(table, operation, args, context, requested, resolved, None);
        };
        let result = dispatcher.dispatch(operation, args, context);
        if let Err(error) = result {
            if !moves_on(&error) {
                return Err(error);
            }
            return self.fall_back(table, operation, args, context, requested, resolved, Some(error));
        }
        result
    }

    /// The rest of the chain after the resolved mode failed (`first_error`) or had no
    /// dispatcher (`None`).
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn fall_back(
        &self,
        table: &ModeTable,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
        requested: DispatchMode,
        resolved: DispatchMode,
        first_error: Option<DispatchError>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let mut attempts: Vec<(DispatchMode, DispatchError)> = first_error.map(|e| (resolved, e)).into_iter().collect();
        for mode in plan(table, requested, resolved).skip(1) {
            let Some(dispatcher) = table.dispatcher(mode) else { continue };
            self.mode_switches.fetch_add(1, Ordering::Relaxed);
            if let Some((failed, error)) = attempts.last().filter(|_| self.log_fallbacks) {
                tracing::warn!(%operation, mode = %failed, next = %mode, %error, "dispatch mode failed; trying the next mode");
            }
            match dispatcher.dispatch(operation, args, context) {
                Ok(mut result) => {
                    self.mode_fallbacks.fetch_add(1, Ordering::Relaxed);
                    result.was_fallback = true;
                    return Ok(result);
                }
                Err(error) if !moves_on(&error) => return Err(error),
                Err(error) => attempts.push((mode, error)),
            }
        }
        match attempts.len() {
            0 => {
                self.no_dispatcher.fetch_add(1, Ordering::Relaxed);
                Err(DispatchError::NoDispatcher { operation, modes: plan(table, requested, resolved).collect() })
            }
            1 => Err(attempts.pop().map(|(_, e)| e).unwrap_or(DispatchError::NoKernel { operation })),
            _ => Err(DispatchError::ModeFallbackExhausted { operation, attempts }),
        }
    }

    /// Per-mode telemetry and their sum (seed: `get_telemetry()`).
    ///
    /// `total` sums the modes' snapshots, so a call that failed in one mode and was
    /// answered by another counts as an error in the first and a success in the second;
    /// `mode_fallback_count` says how many calls that was. Dispatchers that keep no
    /// telemetry ([`Dispatcher::telemetry_snapshot`] is `None`) appear with `None`.
    pub fn get_telemetry(&self) -> OrchestratorTelemetry {
        let table = self.table.load();
        let mut total = TelemetrySnapshot::default();
        let mut modes = Vec::new();
        for mode in SLOTS {
            let Some(dispatcher) = table.dispatcher(mode) else { continue };
            let snapshot = dispatcher.telemetry_snapshot();
            if let Some(snapshot) = &snapshot {
                total.merge(snapshot);
            }
            modes.push(ModeTelemetry { mode, telemetry: snapshot });
        }
        OrchestratorTelemetry {
            default_mode: self.default_mode(),
            modes,
            total,
            mode_fallback_count: self.mode_fallbacks.load(Ordering::Relaxed),
            mode_switch_count: self.mode_switches.load(Ordering::Relaxed),
            no_dispatcher_count: self.no_dispatcher.load(Ordering::Relaxed),
        }
    }
}

/// Whether a failure in one mode moves on to the next: not when the arguments are wrong.
fn moves_on(error: &DispatchError) -> bool {
    !matches!(error, DispatchError::WrongArguments { .. } | DispatchError::InvalidArguments { .. })
}

/// The modes to try, in order: `resolved`, its chain, AUTO's chain when AUTO was
/// requested; each once. Allocation-free.
fn plan<'t>(
    table: &'t ModeTable,
    requested: DispatchMode,
    resolved: DispatchMode,
) -> impl Iterator<Item = DispatchMode> + 't {
    let auto_chain = if requested == DispatchMode::Auto { table.chain(DispatchMode::Auto) } else { &[] };
    let ordered =
        std::iter::once(resolved).chain(table.chain(resolved).iter().copied()).chain(auto_chain.iter().copied());
    ordered
        .clone()
        .enumerate()
        .filter_map(move |(i, mode)| (!ordered.clone().take(i).any(|m| m == mode)).then_some(mode))
}

impl Dispatcher for DispatchOrchestrator {
    /// [`dispatch_with_mode`](Self::dispatch_with_mode) in the default mode.
    #[inline]
    fn dispatch(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        self.dispatch_with_mode(operation, args, context, None)
    }

    /// The first kernel the modes would run, asking each mode of the chain in turn (the
    /// default mode, AUTO resolved) until one answers.
    fn kernel_for(&self, operation: Operation, context: &SelectionContext) -> Result<KernelId, DispatchError> {
        let requested = self.default_mode();
        let resolved = if requested == DispatchMode::Auto { self.select_mode(operation) } else { requested };
        let table = self.table.load();
        let mut attempts = Vec::new();
        for mode in plan(&table, requested, resolved) {
            let Some(dispatcher) = table.dispatcher(mode) else { continue };
            match dispatcher.kernel_for(operation, context) {
                Ok(kernel) => return Ok(kernel),
                Err(error) => attempts.push((mode, error)),
            }
        }
        match attempts.len() {
            0 => Err(DispatchError::NoDispatcher { operation, modes: plan(&table, requested, resolved).collect() }),
            1 => Err(attempts.pop().map(|(_, e)| e).unwrap_or(DispatchError::NoKernel { operation })),
            _ => Err(DispatchError::ModeFallbackExhausted { operation, attempts }),
        }
    }

    /// The default mode (AUTO when calls choose per operation).
    fn mode(&self) -> DispatchMode {
        self.default_mode()
    }

    fn telemetry_snapshot(&self) -> Option<TelemetrySnapshot> {
        Some(self.get_telemetry().total)
    }
}

/// One mode's telemetry in [`OrchestratorTelemetry`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeTelemetry {
    /// The mode.
    pub mode: DispatchMode,
    /// Its dispatcher's telemetry; `None` when the dispatcher keeps none.
    pub telemetry: Option<TelemetrySnapshot>,
}

/// What [`DispatchOrchestrator::get_telemetry`] returns; serialisable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorTelemetry {
    /// The default mode when read.
    pub default_mode: DispatchMode,
    /// Each registered mode's telemetry, in the seed's mode order.
    pub modes: Vec<ModeTelemetry>,
    /// The sum of the modes' snapshots ([`TelemetrySnapshot::merge`]).
    pub total: TelemetrySnapshot,
    /// Calls answered by a mode after the first one tried.
    pub mode_fallback_count: u64,
    /// Times a failed (or missing) mode led to trying the next mode.
    pub mode_switch_count: u64,
    /// Calls for which no mode tried had a dispatcher.
    pub no_dispatcher_count: u64,
}

impl OrchestratorTelemetry {
    /// The telemetry of `mode`'s dispatcher, when it has one that keeps telemetry.
    pub fn mode(&self, mode: DispatchMode) -> Option<&TelemetrySnapshot> {
        self.modes.iter().find(|m| m.mode == mode).and_then(|m| m.telemetry.as_ref())
    }
}

/// Seed 003's `create_orchestrator(config, kernel_registry, backend_registry)`: an
/// orchestrator whose default mode is `config.mode()`, with
///
/// - STATIC: [`StaticDispatcher::from_config`] when `static_kernel_map` is not empty (each
///   kernel it names must be registered with code, or this fails listing every problem);
/// - DYNAMIC: [`create_dynamic_dispatcher`] over the registries, always;
/// - CONFIG: a [`ConfigDrivenDispatcher`] on the rules of `config_path`, when one is set
///   (an invalid file fails here, with every problem);
/// - HOT_RELOAD: a [`HotReloadDispatcher`](crate::HotReloadDispatcher) on `config_path`,
///   already watching it, when one is set and `config.mode()` is HOT_RELOAD (AUTO then
///   chooses it; a file that cannot be loaded or watched fails here). Each reload or
///   rollback it makes also becomes the rules of DYNAMIC and CONFIG, so a call that falls
///   back from HOT_RELOAD, or names another mode, runs the live rules.
///
/// Each dispatcher keeps its own breakers and telemetry.
///
/// ```
/// use std::sync::Arc;
///
/// use layerzero_config::{DispatchConfig, DispatchMode};
/// use layerzero_dispatch::{Dispatcher, create_orchestrator};
/// use layerzero_registry::{BackendRegistry, KernelRegistry};
/// use layerzero_types::{DType, KernelImpl, KernelResult, KernelSpec, NormArgs, OpArgs, OperationType, Platform, Tensor};
///
/// fn fill(value: f32) -> KernelImpl {
///     KernelImpl::norm(move |args: &mut NormArgs<'_>| -> KernelResult {
///         args.output.as_mut_slice::<f32>()?.fill(value);
///         Ok(())
///     })
/// }
/// let kernels = Arc::new(KernelRegistry::new());
/// let spec = |id: &str, priority| KernelSpec::new(id, Platform::Cpu).map(|s| s.for_operation(OperationType::NormRms).with_priority(priority));
/// kernels.register_with_impl(spec("doc_orch_pinned", 1)?, fill(1.0))?;
/// kernels.register_with_impl(spec("doc_orch_best", 100)?, fill(2.0))?;
/// // AUTO: rms_norm is in the static map, so STATIC runs the pinned kernel.
/// let config = DispatchConfig::builder().mode(DispatchMode::Auto).static_kernel("rms_norm", "doc_orch_pinned").build()?;
/// let orchestrator = create_orchestrator(config, kernels, Arc::new(BackendRegistry::detect()))?;
///
/// let input = Tensor::zeros(&[1, 4], DType::F32)?;
/// let weight = Tensor::zeros(&[4], DType::F32)?;
/// let mut out = Tensor::zeros(&[1, 4], DType::F32)?;
/// let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), out.view_mut(), 1e-6));
/// let op = OperationType::NormRms.into();
/// assert_eq!(orchestrator.dispatch(op, &mut args, None)?.kernel_id.as_str(), "doc_orch_pinned");
/// // This call only: DYNAMIC, where priorities decide.
/// let result = orchestrator.dispatch_with_mode(op, &mut args, None, Some(DispatchMode::Dynamic))?;
/// assert_eq!(result.kernel_id.as_str(), "doc_orch_best");
/// assert_eq!(orchestrator.get_telemetry().total.dispatch_count, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn create_orchestrator(
    config: DispatchConfig,
    kernel_registry: impl Into<Shared<KernelRegistry>>,
    backend_registry: impl Into<Shared<BackendRegistry>>,
) -> Result<DispatchOrchestrator, DispatchError> {
    let kernels: Shared<KernelRegistry> = kernel_registry.into();
    let backends: Shared<BackendRegistry> = backend_registry.into();
    let orchestrator = DispatchOrchestrator::new(&config, config.mode())?;
    if !config.static_kernel_map().is_empty() {
        let dispatcher = StaticDispatcher::from_config(&config, &kernels)?;
        orchestrator.register_dispatcher(DispatchMode::Static, Arc::new(dispatcher))?;
    }
    let dynamic = Arc::new(create_dynamic_dispatcher(share(&kernels), share(&backends), config.clone(), true)?);
    orchestrator.register_dispatcher(DispatchMode::Dynamic, Arc::clone(&dynamic) as Arc<dyn Dispatcher>)?;
    if let Some(path) = config.config_path() {
        let policy = ConfigSchema.load_file(path)?.compiled;
        let config_mode = config.to_builder().mode(DispatchMode::Config).build()?;
        let configured =
            Arc::new(ConfigDrivenDispatcher::new(share(&kernels), share(&backends), config_mode, policy, None)?);
        orchestrator.register_dispatcher(DispatchMode::Config, Arc::clone(&configured) as Arc<dyn Dispatcher>)?;
        if config.mode() == DispatchMode::HotReload {
            let hot = crate::HotReloadDispatcher::new(kernels, backends, config.clone(), None)
                .map_err(|e| DispatchError::HotReload(e.to_string()))?;
            // DYNAMIC and CONFIG follow the rules HOT_RELOAD makes live, so that a call
            // falling back from HOT_RELOAD, or naming another mode, never runs rules the
            // file no longer has.
            hot.on_reload_policy(move |live| {
                dynamic.selection_engine().set_policy(live.clone());
                configured.selection_engine().set_policy(live.clone());
            });
            hot.watch().map_err(|e| DispatchError::HotReload(e.to_string()))?;
            orchestrator.register_dispatcher(DispatchMode::HotReload, Arc::new(hot))?;
        }
    }
    Ok(orchestrator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_seed_chains_one_level_deep_without_repeats() {
        use DispatchMode::*;
        let table = ModeTable::seed();
        let plan = |requested, resolved| plan(&table, requested, resolved).collect::<Vec<_>>();
        assert_eq!(plan(Static, Static), [Static, Dynamic]);
        assert_eq!(plan(Dynamic, Dynamic), [Dynamic, Config]);
        assert_eq!(plan(HotReload, HotReload), [HotReload, Dynamic]);
        assert_eq!(plan(Config, Config), [Config, Dynamic]);
        assert_eq!(plan(Auto, Static), [Static, Dynamic]);
        assert_eq!(plan(Auto, Dynamic), [Dynamic, Config, Static]);
        assert_eq!(plan(Auto, HotReload), [HotReload, Dynamic, Static]);
    }

    #[test]
    fn auto_is_not_a_slot_and_never_resolves_to_itself() {
        let orchestrator = DispatchOrchestrator::empty(DispatchMode::Auto);
        let dispatcher: Arc<dyn Dispatcher> = Arc::new(DispatchOrchestrator::empty(DispatchMode::Dynamic));
        let refused = orchestrator.register_dispatcher(DispatchMode::Auto, dispatcher);
        assert!(matches!(refused, Err(DispatchError::AutoIsNotADispatcher)));
        assert_eq!(orchestrator.select_mode(OperationType::NormRms.into()), DispatchMode::Dynamic);
        orchestrator.set_default_mode(DispatchMode::Config);
        assert_eq!(orchestrator.select_mode(OperationType::NormRms.into()), DispatchMode::Config);
    }
}
