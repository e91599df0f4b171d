//! [`SelectionEngine`]: candidates → hard constraints → policy → rules → score, with the
//! selection cache in front.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use layerzero_config::{CompiledConfig, DispatchConfig, KernelPolicy};
use layerzero_registry::{BackendRegistry, KernelRegistry, KernelSnapshot};
use layerzero_types::{KernelId, KernelSpec, Operation, SelectionContext};
use rustc_hash::FxHashMap;

use crate::cache::{CacheKey, ContextKey, SelectionCache};
use crate::program::{PrefilterValues, RuleProgram};
use crate::{CandidateRejection, RejectReason, Selection, SelectionError, SelectionReason};

/// A registry the engine reads: a process-wide one (`&'static`) or a shared one (`Arc`).
pub enum Shared<T: 'static> {
    /// A registry that lives for the whole program (the global ones).
    Static(&'static T),
    /// A registry shared by reference count.
    Owned(Arc<T>),
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Shared::Static(t) => t,
            Shared::Owned(t) => t,
        }
    }
}

impl<T> From<&'static T> for Shared<T> {
    fn from(t: &'static T) -> Self {
        Shared::Static(t)
    }
}

impl<T> From<Arc<T>> for Shared<T> {
    fn from(t: Arc<T>) -> Self {
        Shared::Owned(t)
    }
}

/// A kernel's standing under the policy's deny and allow lists (context-free, so
/// computed once per policy and registry version).
#[derive(Clone, Debug)]
pub(crate) enum ListVerdict {
    Allowed,
    Denied(String),
    NotAllowed,
}

pub(crate) struct PlannedCandidate {
    pub(crate) spec: Arc<KernelSpec>,
    pub(crate) list: ListVerdict,
}

pub(crate) struct PlannedLock {
    pub(crate) index: u32,
    pub(crate) key: String,
    pub(crate) kernel: KernelId,
    pub(crate) candidate: Option<usize>,
}

pub(crate) struct PlannedRule {
    /// Position in `CompiledConfig::rules()` (evaluation order).
    pub(crate) rule: usize,
    pub(crate) candidate: Option<usize>,
    /// Its conditions in the plan's [`RuleProgram`].
    pub(crate) checks: (u32, u32),
}

/// Everything about one operation that does not depend on the context.
#[derive(Default)]
pub(crate) struct OperationPlan {
    pub(crate) candidates: Vec<PlannedCandidate>,
    pub(crate) lock: Option<PlannedLock>,
    pub(crate) rules: Vec<PlannedRule>,
    /// The rules' conditions, lowered (see [`crate::program`]).
    pub(crate) program: RuleProgram,
    /// Chain then policy, without repeats, as candidate indices (kernels that are not
    /// candidates cannot run and are dropped here).
    pub(crate) fallbacks: Vec<usize>,
    /// Candidate indices by base priority, highest first (ties: registration order), so
    /// scoring stops at the first valid one.
    pub(crate) by_priority: Vec<usize>,
}

/// The policy and registry snapshot the engine decides with, and the plans derived
/// from them. Replaced whole, never mutated.
pub(crate) struct EngineState {
    pub(crate) policy: Arc<CompiledConfig>,
    pub(crate) policy_version: u64,
    pub(crate) registry: Arc<KernelSnapshot>,
    plans: FxHashMap<Operation, OperationPlan>,
    empty: OperationPlan,
}

impl EngineState {
    fn build(policy: Arc<CompiledConfig>, policy_version: u64, registry: Arc<KernelSnapshot>) -> EngineState {
        let mut operations: Vec<Operation> = registry.iter().flat_map(|spec| spec.operations.iter().copied()).collect();
        operations.sort_unstable();
        operations.dedup();
        let plans = operations.into_iter().map(|op| (op, plan(&policy, &registry, op))).collect();
        EngineState { policy, policy_version, registry, plans, empty: OperationPlan::default() }
    }

    pub(crate) fn plan(&self, operation: Operation) -> &OperationPlan {
        self.plans.get(&operation).unwrap_or(&self.empty)
    }

    pub(crate) fn registry_version(&self) -> u64 {
        self.registry.version()
    }
}

fn plan(policy: &CompiledConfig, registry: &KernelSnapshot, operation: Operation) -> OperationPlan {
    let candidates: Vec<PlannedCandidate> = registry
        .by_operation(operation)
        .iter()
        .map(|spec| PlannedCandidate {
            spec: Arc::clone(spec),
            list: match policy.kernel_policy(spec.id) {
                KernelPolicy::Allowed => ListVerdict::Allowed,
                KernelPolicy::Denied { pattern } => ListVerdict::Denied(pattern.to_owned()),
                KernelPolicy::NotAllowed => ListVerdict::NotAllowed,
            },
        })
        .collect();
    let slot = |kernel: KernelId| candidates.iter().position(|c| c.spec.id == kernel);
    let lock = policy.lock_for(operation).map(|lock| PlannedLock {
        index: u32::try_from(lock.index).unwrap_or(u32::MAX),
        key: lock.operation.as_str().to_owned(),
        kernel: lock.kernel,
        candidate: slot(lock.kernel),
    });
    let mut program = RuleProgram::default();
    let rules = policy
        .rules()
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.operation.matches(operation))
        .map(|(i, rule)| PlannedRule { rule: i, candidate: slot(rule.kernel), checks: program.push(policy.rules(), i) })
        .collect();
    let mut fallbacks = Vec::new();
    for kernel in policy.fallback_chain(operation).iter().copied().chain(policy.fallback_policy()) {
        if let Some(i) = slot(kernel)
            && !fallbacks.contains(&i)
        {
            fallbacks.push(i);
        }
    }
    let mut by_priority: Vec<usize> = (0..candidates.len()).collect();
    by_priority.sort_by_key(|&i| std::cmp::Reverse(candidates[i].spec.priority));
    OperationPlan { candidates, lock, rules, program, fallbacks, by_priority }
}

/// Which candidates can be chosen for one context, computed on demand and remembered.
pub(crate) struct Validity<'a> {
    plan: &'a OperationPlan,
    ctx: &'a SelectionContext,
    backends: &'a BackendRegistry,
    known: u128,
    valid: u128,
}

impl<'a> Validity<'a> {
    pub(crate) fn new(plan: &'a OperationPlan, ctx: &'a SelectionContext, backends: &'a BackendRegistry) -> Self {
        Validity { plan, ctx, backends, known: 0, valid: 0 }
    }

    /// Why candidate `i` cannot be chosen, or `None` if it can.
    pub(crate) fn reason(&self, i: usize) -> Option<RejectReason> {
        let candidate = &self.plan.candidates[i];
        match &candidate.list {
            ListVerdict::Denied(pattern) => return Some(RejectReason::Denied { pattern: pattern.clone() }),
            ListVerdict::NotAllowed => return Some(RejectReason::NotAllowed),
            ListVerdict::Allowed => {}
        }
        if !self.backends.is_available(&candidate.spec.backend) {
            return Some(RejectReason::BackendUnavailable { backend: candidate.spec.backend.clone() });
        }
        candidate.spec.check(self.ctx).err().map(RejectReason::Constraint)
    }

    pub(crate) fn is_valid(&mut self, i: usize) -> bool {
        let bit = 1u128.checked_shl(u32::try_from(i).unwrap_or(u32::MAX)).unwrap_or(0);
        if bit == 0 {
            return self.check(i);
        }
        if self.known & bit == 0 {
            self.known |= bit;
            if self.check(i) {
                self.valid |= bit;
            }
        }
        self.valid & bit != 0
    }

    fn check(&self, i: usize) -> bool {
        let candidate = &self.plan.candidates[i];
        matches!(candidate.list, ListVerdict::Allowed)
            && self.backends.is_available(&candidate.spec.backend)
            && candidate.spec.check(self.ctx).is_ok()
    }
}

/// Runs the pipeline of DESIGN.md for one context.
///
/// Explicit beats implicit, and explicit fails closed: a lock whose kernel cannot be used
/// is an error; a rule whose kernel cannot be used is skipped.
pub(crate) fn decide(
    state: &EngineState,
    backends: &BackendRegistry,
    operation: Operation,
    ctx: &SelectionContext,
) -> Result<Selection, SelectionError> {
    let plan = state.plan(operation);
    let mut validity = Validity::new(plan, ctx, backends);
    let chosen = if let Some(lock) = &plan.lock {
        let unsatisfiable = |reason| SelectionError::LockUnsatisfiable {
            operation,
            lock: lock.key.clone(),
            kernel: lock.kernel,
            reason,
        };
        let Some(i) = lock.candidate else { return Err(unsatisfiable(RejectReason::NotRegistered)) };
        if let Some(reason) = validity.reason(i) {
            return Err(unsatisfiable(reason));
        }
        Some((i, SelectionReason::Lock { lock: lock.index }))
    } else {
        None
    };
    let chosen = match chosen {
        Some(chosen) => chosen,
        None => {
            let rules = state.policy.rules();
            let key = ContextKey::new(ctx);
            let values = PrefilterValues::new(&key);
            let by_rule = plan.rules.iter().zip(plan.program.prefilters()).find_map(|(planned, prefilter)| {
                if !prefilter.passes(&values) {
                    return None;
                }
                let i = planned.candidate?;
                let rule = &rules[planned.rule];
                (plan.program.matches(planned.checks, &key, ctx, rules) && validity.is_valid(i))
                    .then(|| (i, SelectionReason::Rule { rule: u32::try_from(rule.index).unwrap_or(u32::MAX) }))
            });
            match by_rule {
                Some(chosen) => chosen,
                None => {
                    best_by_score(plan, &mut validity).ok_or_else(|| no_valid_kernel(plan, &validity, operation))?
                }
            }
        }
    };
    let (i, reason) = chosen;
    let fallbacks = plan
        .fallbacks
        .iter()
        .copied()
        .filter(|&f| f != i && validity.is_valid(f))
        .map(|f| plan.candidates[f].spec.id)
        .collect::<SmallIds>();
    Ok(Selection::new(plan.candidates[i].spec.id, reason, fallbacks.iter()))
}

/// A stack buffer for fallback ids (collecting into a `Vec` would allocate per miss).
struct SmallIds {
    ids: [Option<KernelId>; crate::MAX_FALLBACKS],
}

impl SmallIds {
    fn iter(&self) -> impl Iterator<Item = KernelId> + '_ {
        self.ids.iter().map_while(|id| *id)
    }
}

impl FromIterator<KernelId> for SmallIds {
    fn from_iter<I: IntoIterator<Item = KernelId>>(iter: I) -> Self {
        let mut ids = [None; crate::MAX_FALLBACKS];
        for (slot, id) in ids.iter_mut().zip(iter) {
            *slot = Some(id);
        }
        SmallIds { ids }
    }
}

pub(crate) fn best_by_score(plan: &OperationPlan, validity: &mut Validity<'_>) -> Option<(usize, SelectionReason)> {
    let best = plan.by_priority.iter().copied().find(|&i| validity.is_valid(i))?;
    Some((best, SelectionReason::Score { priority: plan.candidates[best].spec.priority }))
}

fn no_valid_kernel(plan: &OperationPlan, validity: &Validity<'_>, operation: Operation) -> SelectionError {
    if plan.candidates.is_empty() {
        return SelectionError::NoKernels { operation };
    }
    let rejections = (0..plan.candidates.len())
        .map(|i| CandidateRejection {
            kernel: plan.candidates[i].spec.id,
            reason: validity.reason(i).unwrap_or(RejectReason::NotRegistered),
        })
        .collect();
    SelectionError::NoValidKernel { operation, rejections }
}

/// Where an answer of [`SelectionEngine::select_traced`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// Read from the selection cache.
    Hit,
    /// Computed by the pipeline (and stored).
    Miss,
    /// Computed by the pipeline; the engine has no cache.
    Disabled,
}

/// Chooses a kernel per operation and call context: seed 001's `SelectionEngine`.
///
/// The pipeline (DESIGN.md, "Selection semantics"):
/// 1. **candidates**: kernels registered for the operation whose backend is available;
/// 2. **hard constraints**: [`KernelSpec::check`] — a kernel that cannot run the context
///    is never chosen;
/// 3. **lists**: `kernel_denies` removes, `kernel_allows` (if present) keeps only matches;
/// 4. **locks**: a `kernel_locks` entry (exact name beats pattern) forces its kernel. A
///    lock is explicit, so it *fails closed*: if the locked kernel is not registered,
///    unavailable, denied or cannot run the context, selection returns
///    [`SelectionError::LockUnsatisfiable`] naming the lock and the failed constraint,
///    never a silent substitute;
/// 5. **rules** by priority (highest first, ties in file order): the first whose
///    conditions all hold *and whose kernel passed 1–3* wins. A rule is a preference:
///    one pointing at a kernel that cannot run is skipped (and explain says so);
/// 6. **score**: otherwise the valid kernel with the highest base priority (ties: first
///    registered).
///
/// Fallbacks: the operation's `fallback_chains` entry, then `defaults.fallback_policy`,
/// keeping only kernels that pass 1–3, without the chosen one.
///
/// Answers are cached by (operation, context, policy version, registry version); see
/// [`SelectionEngine::select`].
// `repr(C)`: the generation and the registries, which a remembered selection's check
// reads on every dispatch, first (one cache line with what precedes them in a dispatcher).
#[repr(C)]
pub struct SelectionEngine {
    generation: AtomicU64,
    backends: Shared<BackendRegistry>,
    kernels: Shared<KernelRegistry>,
    state: ArcSwap<EngineState>,
    policy_version: AtomicU64,
    // Serialises rebuilds of `state` (policy swaps and registry changes): rare, miss path.
    rebuild: Mutex<()>,
    cache: Option<SelectionCache>,
}

impl SelectionEngine {
    /// An engine over these registries with no policy (scores decide) and the default
    /// [`DispatchConfig`]'s cache (10000 entries, one hour).
    pub fn new(kernels: impl Into<Shared<KernelRegistry>>, backends: impl Into<Shared<BackendRegistry>>) -> Self {
        SelectionEngine::with_config(kernels, backends, &DispatchConfig::default(), CompiledConfig::default())
    }

    /// An engine with a compiled policy and the cache settings of `config`
    /// (`enable_cache`, `cache_size`, `cache_ttl_seconds`).
    pub fn with_config(
        kernels: impl Into<Shared<KernelRegistry>>,
        backends: impl Into<Shared<BackendRegistry>>,
        config: &DispatchConfig,
        policy: CompiledConfig,
    ) -> Self {
        let kernels = kernels.into();
        let state = EngineState::build(Arc::new(policy), 1, kernels.snapshot());
        let cache = config
            .enable_cache()
            .then(|| SelectionCache::new(config.cache_size(), Duration::from_secs_f64(config.cache_ttl_seconds())));
        SelectionEngine {
            kernels,
            backends: backends.into(),
            state: ArcSwap::from_pointee(state),
            policy_version: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            rebuild: Mutex::new(()),
            cache,
        }
    }

    /// Replaces the policy (a hot reload) and returns its version. Readers in flight
    /// finish with the old one; cached answers of the old version are never read again.
    pub fn set_policy(&self, policy: CompiledConfig) -> u64 {
        let _rebuild = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.policy_version.load(Ordering::Acquire) + 1;
        let state = EngineState::build(Arc::new(policy), version, self.kernels.snapshot());
        self.state.store(Arc::new(state));
        // Published after the state, so a reader that sees the new version finds (at
        // least) the new state.
        self.policy_version.store(version, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        version
    }

    /// The current policy's version (1 for the policy the engine was made with).
    pub fn policy_version(&self) -> u64 {
        self.policy_version.load(Ordering::Acquire)
    }

    /// The current compiled policy.
    pub fn policy(&self) -> Arc<CompiledConfig> {
        Arc::clone(&self.state.load().policy)
    }

    /// Drops every cached answer and bumps the [`generation`](Self::generation) (after a
    /// change the engine cannot see: a backend's health is seen by itself, through the
    /// registry's version in the cache key).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// A counter that changes whenever an answer given before may no longer be the
    /// answer: a policy swap ([`set_policy`](Self::set_policy)) or an
    /// [`invalidate`](Self::invalidate). With the kernel registry's version it tells a
    /// caller holding a selection (a prepared call) whether it is still current.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The backend registry's version ([`BackendRegistry::version`]): cached answers are
    /// keyed by it, so a backend's health change is seen by the next selection.
    #[inline]
    pub fn backends_version(&self) -> u64 {
        self.backends.version()
    }

    /// Whether answers are cached (`enable_cache`).
    pub fn cache_enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The number of cached answers.
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, SelectionCache::len)
    }

    /// Chooses the kernel for `operation` in `ctx`, from the cache when it can.
    ///
    /// Budget on a cache hit: packing the context key, three atomic loads (policy, kernel
    /// registry and backend registry versions), one hash probe and one thread-local clock
    /// read; no lock, no allocation, no shared write. A miss runs [`select_uncached`](Self::select_uncached) and
    /// stores a successful answer. Errors are not cached.
    #[inline]
    pub fn select(&self, operation: Operation, ctx: &SelectionContext) -> Result<Selection, SelectionError> {
        self.select_traced(operation, ctx).map(|(selection, _)| selection)
    }

    /// [`select`](Self::select), also saying whether the answer came from the cache, so
    /// that a caller can keep a hit rate in its own (per-thread) counters; the engine keeps
    /// no shared counter on the hot path.
    pub fn select_traced(
        &self,
        operation: Operation,
        ctx: &SelectionContext,
    ) -> Result<(Selection, CacheOutcome), SelectionError> {
        let Some(cache) = &self.cache else {
            return self.select_uncached(operation, ctx).map(|s| (s, CacheOutcome::Disabled));
        };
        let context = ContextKey::new(ctx);
        let backends_version = self.backends.version();
        let key = CacheKey {
            operation,
            context,
            policy_version: self.policy_version.load(Ordering::Acquire),
            registry_version: self.kernels.version(),
            backends_version,
        };
        if let Some(selection) = cache.get(&key) {
            return Ok((selection, CacheOutcome::Hit));
        }
        let state = self.state();
        let selection = decide(&state, &self.backends, operation, ctx)?;
        // Keyed by the versions the answer was computed with.
        // The backends' version read before deciding: a health change during the
        // decision leaves this entry under the old version, never read again.
        let key = CacheKey {
            operation,
            context,
            policy_version: state.policy_version,
            registry_version: state.registry_version(),
            backends_version,
        };
        cache.insert(key, selection);
        Ok((selection, CacheOutcome::Miss))
    }

    /// Runs the whole pipeline without the cache.
    pub fn select_uncached(&self, operation: Operation, ctx: &SelectionContext) -> Result<Selection, SelectionError> {
        decide(&self.state(), &self.backends, operation, ctx)
    }

    /// Why `operation` in `ctx` selects what it selects: every candidate's verdict, the
    /// lock or rule that decided, every rule's outcome, and the fallbacks.
    pub fn explain_selection(&self, operation: Operation, ctx: &SelectionContext) -> crate::Explanation {
        crate::explain::explain(&self.state(), &self.backends, operation, ctx)
    }

    /// The current state, rebuilt first if the kernel registry changed since it was made.
    fn state(&self) -> arc_swap::Guard<Arc<EngineState>> {
        let state = self.state.load();
        if state.registry_version() == self.kernels.version() {
            return state;
        }
        drop(state);
        let _rebuild = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.state.load();
        let snapshot = self.kernels.snapshot();
        if current.registry_version() != snapshot.version() {
            let state = EngineState::build(Arc::clone(&current.policy), current.policy_version, snapshot);
            self.state.store(Arc::new(state));
        }
        self.state.load()
    }
}

impl std::fmt::Debug for SelectionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectionEngine")
            .field("policy_version", &self.policy_version())
            .field("registry_version", &self.kernels.version())
            .field("cached", &self.cache_len())
            .finish()
    }
}
