//! STATIC mode: [`StaticDispatcher`], a kernel chain per operation fixed when it is built
//! ([`StaticDispatcherBuilder`], the config's `static_kernel_map`, or a frozen
//! [`StaticKernelRegistry`]).

use layerzero_breaker::{CircuitBreakerRegistry, Clock};
use layerzero_config::{DispatchConfig, DispatchMode};
use layerzero_registry::{KernelRegistry, StaticKernelRegistry};
use layerzero_types::{
    ArgsKind, DispatchResult, KernelId, KernelImpl, KernelSpec, OpArgs, Operation, OperationType, SelectionContext,
};
use rustc_hash::FxHashMap;
use std::sync::Arc;

use crate::executor::{DeviceSync, Executor, call_device, check_args};
use crate::telemetry::TelemetrySnapshot;
use crate::transform::KernelEntry;
use crate::{DispatchError, Dispatcher};

/// One operation's kernels: the default first, then the others in the order given (its
/// fallback chain).
struct Route {
    chain: Box<[(KernelId, KernelEntry)]>,
}

/// A kernel chain while it is being built.
type Chain = Vec<(KernelId, KernelEntry)>;

/// Seed 001's `StaticDispatcher`: each operation's kernel (and fallbacks) fixed at build
/// time; no context, no selection, no cache.
///
/// A dispatch finds its route in a table indexed by the operation (custom operations: one
/// hash probe of their interned id), then runs the chain through the executor (breaker,
/// fallbacks, panic catching) when the config enables them. For a router with no breaker
/// and no table at all, see the `#[static_dispatch]` macro and
/// [`impl_static_dispatcher!`](crate::impl_static_dispatcher).
pub struct StaticDispatcher {
    known: Vec<Option<Route>>,
    custom: FxHashMap<Operation, Route>,
    executor: Executor,
}

impl std::fmt::Debug for StaticDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticDispatcher")
            .field("operations", &(self.known.iter().flatten().count() + self.custom.len()))
            .finish_non_exhaustive()
    }
}

impl StaticDispatcher {
    /// A builder with the default config.
    pub fn builder() -> StaticDispatcherBuilder {
        StaticDispatcherBuilder::new()
    }

    /// The `static_kernel_map` route: each operation of `config.static_kernel_map()` runs
    /// the named kernel, whose code comes from `kernels`. Every unknown name or kernel
    /// without code is reported at once.
    pub fn from_config(config: &DispatchConfig, kernels: &KernelRegistry) -> Result<StaticDispatcher, DispatchError> {
        let snapshot = kernels.snapshot();
        let mut problems = Vec::new();
        let mut routes = Vec::new();
        for (operation, kernel) in config.static_kernel_map() {
            let operation = match Operation::parse(operation) {
                Ok(operation) => operation,
                Err(e) => {
                    problems.push(format!("static_kernel_map[{operation:?}]: {e}"));
                    continue;
                }
            };
            let Some((id, spec)) = KernelId::lookup(kernel).and_then(|id| Some((id, snapshot.get(id)?))) else {
                problems.push(format!("static_kernel_map[\"{operation}\"]: kernel `{kernel}` is not registered"));
                continue;
            };
            match snapshot.implementation(id) {
                Some(implementation) => {
                    routes.push((operation, vec![(id, KernelEntry::new(spec, implementation.clone()))]));
                }
                None => problems.push(format!(
                    "static_kernel_map[\"{operation}\"]: kernel `{kernel}` has no implementation registered"
                )),
            }
        }
        if !problems.is_empty() {
            return Err(DispatchError::InvalidStaticDispatcher { problems });
        }
        StaticDispatcher::from_routes(routes, config, None)
    }

    /// Seed 001's method 3: the kernels of a (frozen) [`StaticKernelRegistry`], each
    /// operation's default first, with code from `kernels`.
    pub fn from_registry(
        config: &DispatchConfig,
        registry: &StaticKernelRegistry,
        kernels: &KernelRegistry,
    ) -> Result<StaticDispatcher, DispatchError> {
        let snapshot = kernels.snapshot();
        let mut operations: Vec<Operation> = registry.iter().flat_map(|spec| spec.operations.iter().copied()).collect();
        operations.sort();
        operations.dedup();
        let mut routes = Vec::new();
        let mut problems = Vec::new();
        for operation in operations {
            let default = registry.default_for(operation);
            let mut specs: Vec<&Arc<KernelSpec>> = default.into_iter().collect();
            specs.extend(registry.kernels_for(operation).filter(|spec| Some(spec.id) != default.map(|d| d.id)));
            let mut chain = Vec::new();
            for spec in specs {
                let id = spec.id;
                match snapshot.implementation(id) {
                    Some(implementation) => chain.push((id, KernelEntry::new(spec, implementation.clone()))),
                    None => problems.push(format!("kernel `{id}` has no implementation registered")),
                }
            }
            routes.push((operation, chain));
        }
        if !problems.is_empty() {
            return Err(DispatchError::InvalidStaticDispatcher { problems });
        }
        StaticDispatcher::from_routes(routes, config, None)
    }

    fn from_routes(
        routes: Vec<(Operation, Chain)>,
        config: &DispatchConfig,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<StaticDispatcher, DispatchError> {
        let executor = Executor::new(config, clock)?;
        let mut known: Vec<Option<Route>> = (0..OperationType::COUNT).map(|_| None).collect();
        let mut custom = FxHashMap::default();
        for (operation, chain) in routes {
            for (id, _) in &chain {
                executor.register_kernel(*id);
            }
            let route = Route { chain: chain.into_boxed_slice() };
            match operation.known() {
                Some(op) => {
                    if let Some(slot) = known.get_mut(op.index()) {
                        *slot = Some(route);
                    }
                }
                None => {
                    custom.insert(operation, route);
                }
            }
        }
        Ok(StaticDispatcher { known, custom, executor })
    }

    fn route(&self, operation: Operation) -> Option<&Route> {
        match operation.known() {
            Some(op) => self.known.get(op.index()).and_then(Option::as_ref),
            None => self.custom.get(&operation),
        }
    }

    /// The kernels of `operation`, default first.
    pub fn kernels(&self, operation: Operation) -> impl Iterator<Item = KernelId> + '_ {
        self.route(operation).into_iter().flat_map(|route| route.chain.iter().map(|(id, _)| *id))
    }

    /// The host's circuit breakers, when the config enables them.
    pub fn circuit_breakers(&self) -> Option<&CircuitBreakerRegistry> {
        self.executor.breakers(layerzero_types::Device::Cpu)
    }

    /// The circuit breakers of kernels on `device`: one set per device, so a kernel failing
    /// on one GPU stays closed on the others.
    pub fn circuit_breakers_on(&self, device: layerzero_types::Device) -> Option<&CircuitBreakerRegistry> {
        self.executor.breakers(device)
    }

    /// The telemetry so far.
    pub fn telemetry(&self) -> TelemetrySnapshot {
        self.executor.telemetry().snapshot()
    }

    /// Installs the hook `sync_after_execution` runs after each kernel ([`DeviceSync`]);
    /// the first installed stays, and `Err` hands back a later one.
    pub fn set_device_sync(&self, hook: Arc<dyn DeviceSync>) -> Result<(), Arc<dyn DeviceSync>> {
        self.executor.set_device_sync(hook)
    }
}

impl Dispatcher for StaticDispatcher {
    /// Budget: the argument-kind check, one table index, then the executor (see
    /// [`Dispatcher::dispatch`]); the context is not read.
    fn dispatch(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        if let Err(e) = check_args(operation, args) {
            return self.executor.fail(e);
        }
        let Some(route) = self.route(operation) else {
            return self.executor.fail(DispatchError::NoKernel { operation });
        };
        let start = self.executor.now();
        let device = call_device(context.and_then(|c| c.device), args);
        let chain = route.chain.iter().map(|(id, entry)| (*id, Some(entry)));
        self.executor.run(operation, chain, args, device, start, start)
    }

    fn kernel_for(&self, operation: Operation, _context: &SelectionContext) -> Result<KernelId, DispatchError> {
        self.route(operation)
            .and_then(|route| route.chain.first())
            .map(|(id, _)| *id)
            .ok_or(DispatchError::NoKernel { operation })
    }

    fn mode(&self) -> DispatchMode {
        DispatchMode::Static
    }

    fn telemetry_snapshot(&self) -> Option<TelemetrySnapshot> {
        Some(self.telemetry())
    }
}

/// Builds a [`StaticDispatcher`] (seed 001's method 1).
///
/// ```
/// use layerzero_dispatch::{Dispatcher, StaticDispatcherBuilder};
/// use layerzero_types::{DType, KernelImpl, KernelResult, KernelSpec, NormArgs, OpArgs, OperationType, Platform, Tensor, TensorViewMut};
///
/// fn ones(args: &mut NormArgs<'_>) -> KernelResult {
///     args.output.as_mut_slice::<f32>()?.fill(1.0);
///     Ok(())
/// }
/// let spec = KernelSpec::new("doc_static_rms", Platform::Cpu)?.for_operation(OperationType::NormRms);
/// let dispatcher = StaticDispatcherBuilder::new()
///     .with_kernel(spec, KernelImpl::norm(ones), OperationType::NormRms, true)
///     .build()?;
///
/// let input = Tensor::zeros(&[2, 4], DType::F32)?;
/// let weight = Tensor::zeros(&[4], DType::F32)?;
/// let mut out = vec![0f32; 8];
/// let output = TensorViewMut::from_slice(&mut out, &[2, 4])?;
/// let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), output, 1e-6));
/// let result = dispatcher.dispatch(OperationType::NormRms.into(), &mut args, None)?;
/// assert_eq!(result.kernel_id.as_str(), "doc_static_rms");
/// assert!(!result.was_fallback);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct StaticDispatcherBuilder {
    entries: Vec<(KernelSpec, KernelImpl, Operation, bool)>,
    config: DispatchConfig,
    clock: Option<Arc<dyn Clock>>,
}

impl Default for StaticDispatcherBuilder {
    fn default() -> Self {
        StaticDispatcherBuilder::new()
    }
}

impl StaticDispatcherBuilder {
    /// No kernels, the default [`DispatchConfig`] with mode `STATIC`.
    pub fn new() -> Self {
        let config = DispatchConfig::default().to_builder().mode(DispatchMode::Static).build().unwrap_or_default();
        StaticDispatcherBuilder { entries: Vec::new(), config, clock: None }
    }

    /// Routes `operation` to the kernel `spec` describes and `implementation` runs. The
    /// `default` kernel runs first; the others follow, in the order added, as fallbacks.
    /// Without a default, the first added runs first.
    pub fn with_kernel(
        mut self,
        spec: KernelSpec,
        implementation: KernelImpl,
        operation: impl Into<Operation>,
        default: bool,
    ) -> Self {
        self.entries.push((spec, implementation, operation.into(), default));
        self
    }

    /// The fallback, breaker, telemetry and timing settings.
    pub fn with_config(mut self, config: DispatchConfig) -> Self {
        self.config = config;
        self
    }

    /// Breakers read time from `clock` (a `ManualClock` in tests).
    pub fn with_breaker_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks every entry (the spec names the operation, the code takes its arguments, at
    /// most one default and no repeated kernel per operation) and builds; all problems are
    /// reported at once.
    pub fn build(self) -> Result<StaticDispatcher, DispatchError> {
        let mut problems = Vec::new();
        let mut routes: Vec<(Operation, Chain, Option<usize>)> = Vec::new();
        for (spec, implementation, operation, default) in self.entries {
            if !spec.supports(operation) {
                problems.push(format!("kernel `{}` does not declare operation `{operation}`", spec.id));
                continue;
            }
            if let Some(known) = operation.known()
                && ArgsKind::of(known) != implementation.kind()
            {
                problems.push(format!(
                    "kernel `{}`: `{operation}` takes {} arguments, its code takes {}",
                    spec.id,
                    ArgsKind::of(known),
                    implementation.kind()
                ));
                continue;
            }
            let index = match routes.iter().position(|(op, _, _)| *op == operation) {
                Some(index) => index,
                None => {
                    routes.push((operation, Vec::new(), None));
                    routes.len() - 1
                }
            };
            let Some((_, chain, default_at)) = routes.get_mut(index) else { continue };
            if chain.iter().any(|(id, _)| *id == spec.id) {
                problems.push(format!("kernel `{}` is added twice for `{operation}`", spec.id));
                continue;
            }
            if default {
                if let Some(existing) = default_at.and_then(|i| chain.get(i)) {
                    problems.push(format!("`{operation}` has two defaults: `{}` and `{}`", existing.0, spec.id));
                    continue;
                }
                *default_at = Some(chain.len());
            }
            chain.push((spec.id, KernelEntry::new(&spec, implementation)));
        }
        if !problems.is_empty() {
            return Err(DispatchError::InvalidStaticDispatcher { problems });
        }
        let routes = routes
            .into_iter()
            .map(|(operation, mut chain, default_at)| {
                if let Some(i) = default_at {
                    let default = chain.remove(i);
                    chain.insert(0, default);
                }
                (operation, chain)
            })
            .collect();
        StaticDispatcher::from_routes(routes, &self.config, self.clock)
    }
}
