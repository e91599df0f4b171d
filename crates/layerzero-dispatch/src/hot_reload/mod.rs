//! HOT_RELOAD mode: [`HotReloadDispatcher`], a CONFIG dispatcher whose rules file is
//! watched and swapped while calls run.
//!
//! A reload reads the whole file, then parses, schema-checks and compiles it, and (with
//! validation on) checks that every kernel it names is registered; only a file that passes
//! all of that reaches the swap. The swap is the selection engine's
//! [`set_policy`](layerzero_select::SelectionEngine::set_policy): one atomic pointer store,
//! so a call in flight finishes with the rules it started with and a cached answer of the
//! old rules is never read again. A file that fails is counted, reported to the
//! [`on_error`](HotReloadDispatcher::on_error) callbacks, and the last good rules stay.
//!
//! Versions are the engine's policy versions: every swap, a rollback included, takes the
//! next one, so they strictly increase.

mod watch;

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::hash::Hasher;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use layerzero_breaker::{CircuitBreakerRegistry, Clock};
use layerzero_config::{
    CompiledConfig, ConfigError, ConfigSchema, DispatchConfig, DispatchMode, KernelsConfig, Position, SchemaError,
};
use layerzero_registry::{BackendRegistry, KernelRegistry, get_global_backend_registry};
use layerzero_select::{Explanation, SelectionEngine, Shared};
use layerzero_types::{DispatchResult, KernelId, OpArgs, Operation, SelectionContext};
use serde::Serialize;

use crate::telemetry::TelemetrySnapshot;
use crate::{ConfigDrivenDispatcher, DispatchError, Dispatcher};

pub use watch::WatchOptions;

/// How many earlier good configs [`HotReloadDispatcher::rollback`] can go back to.
///
/// Seed 001 calls hot reload double-buffered ("memory for two configs"); keeping a few
/// more lets an operator step back past one bad change after another.
pub const ROLLBACK_DEPTH: usize = 4;

/// A 64-bit FNV-1a hash of a config file's bytes, shown as 16 hex digits.
///
/// It identifies content: the watcher compares it to skip a file it has already seen, and
/// a rollback's [`ConfigVersion`] carries the hash of the config it restores.
///
/// ```
/// use layerzero_dispatch::ConfigHash;
///
/// let hash = ConfigHash::of(b"version: \"1.0\"\n");
/// assert_eq!(hash, ConfigHash::of(b"version: \"1.0\"\n"));
/// assert_ne!(hash, ConfigHash::of(b"version: \"1.0\"\n\n"));
/// assert_eq!(hash.to_string().len(), 16);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ConfigHash(u64);

impl ConfigHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> ConfigHash {
        let mut hasher = fnv::FnvHasher::default();
        hasher.write(bytes);
        ConfigHash(hasher.finish())
    }

    /// The hash as a number.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Seed 001's `ConfigVersion`: one config made live, as the
/// [`on_reload`](HotReloadDispatcher::on_reload) callbacks receive it.
///
/// ```
/// # use std::sync::Arc;
/// # use layerzero_config::DispatchConfig;
/// # use layerzero_dispatch::HotReloadDispatcher;
/// # use layerzero_registry::{BackendRegistry, KernelRegistry};
/// # let dir = std::env::temp_dir().join(format!("lz-doc-version-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("kernels.yaml");
/// std::fs::write(&path, "version: \"1.0\"\n")?;
/// let config = DispatchConfig::builder().config_path(Some(path.display().to_string())).build()?;
/// let dispatcher = HotReloadDispatcher::new(
///     Arc::new(KernelRegistry::new()), Arc::new(BackendRegistry::detect()), config, None)?;
/// let first = dispatcher.current_version();
/// assert_eq!((first.version, first.restored_from), (1, None));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigVersion {
    /// The selection engine's policy version; every reload and rollback takes the next.
    pub version: u64,
    /// The hash of the file's bytes the config was compiled from.
    pub config_hash: ConfigHash,
    /// When it was made live.
    pub loaded_at: SystemTime,
    /// For a rollback: the version whose config this one restores (same rules, same
    /// hash, a new version number). `None` for a config read from the file.
    pub restored_from: Option<u64>,
}

/// Seed 001's `ReloadState`: what the dispatcher's reload machinery is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[repr(u8)]
pub enum ReloadState {
    /// Normal operation: no reload in progress.
    Idle = 0,
    /// Reading the file.
    Reloading = 1,
    /// Parsing, schema-checking and compiling it, and (with validation) checking its
    /// kernels against the registry.
    Validating = 2,
    /// Swapping it in and, for [`HotReloadDispatcher::reload`], waiting out the grace
    /// period.
    Applying = 3,
    /// Restoring an earlier config ([`HotReloadDispatcher::rollback`]).
    RollingBack = 4,
}

impl ReloadState {
    fn from_u8(value: u8) -> ReloadState {
        match value {
            1 => ReloadState::Reloading,
            2 => ReloadState::Validating,
            3 => ReloadState::Applying,
            4 => ReloadState::RollingBack,
            _ => ReloadState::Idle,
        }
    }

    /// The seed's name: `IDLE`, `RELOADING`, `VALIDATING`, `APPLYING`, `ROLLING_BACK`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReloadState::Idle => "IDLE",
            ReloadState::Reloading => "RELOADING",
            ReloadState::Validating => "VALIDATING",
            ReloadState::Applying => "APPLYING",
            ReloadState::RollingBack => "ROLLING_BACK",
        }
    }
}

impl fmt::Display for ReloadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Seed 001's reload statistics, from [`HotReloadDispatcher::stats`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReloadStats {
    /// Reload attempts, successful or not (manual and the watcher's; not the initial
    /// load, not rollbacks). The watcher attempts only files whose content it has not
    /// seen yet.
    pub total_reloads: u64,
    /// Attempts that changed nothing: the file could not be read or was invalid.
    pub failed_reloads: u64,
    /// Successful [`rollback`](HotReloadDispatcher::rollback)s.
    pub rollbacks: u64,
    /// Reloads whose grace period ended while calls started on the previous config were
    /// still running (they finish on it regardless).
    pub grace_period_timeouts: u64,
    /// Time the last successful reload took, from reading the file to the swap, in
    /// milliseconds (the grace-period wait is not included). 0 before the first.
    pub last_reload_time_ms: f64,
    /// The live config's version.
    pub current_version: u64,
    /// The live config's content hash.
    pub current_hash: ConfigHash,
    /// When the live config was made live.
    pub loaded_at: SystemTime,
    /// The last failure's message, if any reload has failed.
    pub last_error: Option<String>,
}

/// Why a reload, a rollback or starting the watcher did nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The rules file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The file breaks the schema, does not compile, or (with validation) names kernels
    /// that are not registered: every problem, in file order.
    #[error("{}: {}", path.display(), Problems(errors))]
    Invalid {
        /// The rules file.
        path: PathBuf,
        /// Every problem, each with its path in the document (and line and column where
        /// the schema reader knows them).
        errors: Vec<SchemaError>,
    },
    /// [`rollback`](HotReloadDispatcher::rollback) with no earlier config kept.
    #[error("nothing to roll back to: no earlier config is kept")]
    NothingToRollBack,
    /// `reload` or `rollback` called from inside a reload or error callback (it would
    /// wait on itself).
    #[error("reload and rollback cannot be called from a reload or error callback")]
    CalledFromCallback,
    /// The [`DispatchConfig`] names no rules file.
    #[error("hot reload needs a rules file: `config_path` is not set")]
    NoConfigPath,
    /// The watcher thread could not be started.
    #[error("cannot watch {}: {message}", path.display())]
    Watch {
        /// The rules file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Building the dispatcher under the config failed (its settings are invalid).
    #[error(transparent)]
    Dispatcher(#[from] DispatchError),
}

impl From<ConfigError> for ReloadError {
    fn from(error: ConfigError) -> Self {
        ReloadError::Dispatcher(DispatchError::Config(error))
    }
}

/// Schema errors one per line, each with its position, like a compiler.
struct Problems<'a>(&'a [SchemaError]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(f, "{count} error{}", if count == 1 { "" } else { "s" })?;
        for error in self.0 {
            write!(f, "\n  {}", error.located())?;
        }
        Ok(())
    }
}

type ReloadCallback = Arc<dyn Fn(ConfigVersion) + Send + Sync>;
type ErrorCallback = Arc<dyn Fn(&ReloadError) + Send + Sync>;

/// A config that was live: kept to be made live again by a rollback.
#[derive(Clone)]
struct Applied {
    policy: Arc<CompiledConfig>,
    version: ConfigVersion,
}

/// What a reload changes, behind one lock (reloads and rollbacks are serialised).
struct Store {
    current: Applied,
    /// Earlier good configs, newest last, at most [`ROLLBACK_DEPTH`].
    history: VecDeque<Applied>,
    /// The hash of the file content last read by a reload, good or bad: the watcher
    /// attempts a file only when its content differs (so a rollback is not undone by the
    /// next poll, and a bad file is reported once).
    last_seen: Option<ConfigHash>,
}

/// A marker of one config generation: every call holds the current one while it runs.
/// After a swap, the previous marker's reference count says how many calls that may have
/// started on the previous config are still running.
struct Epoch;

/// The state a dispatcher shares with its watcher thread.
pub(crate) struct HotReload {
    path: PathBuf,
    dispatcher: ConfigDrivenDispatcher,
    kernels: Shared<KernelRegistry>,
    validate_on_reload: bool,
    watch_interval: Duration,
    epoch: ArcSwap<Epoch>,
    store: Mutex<Store>,
    /// The live version, apart from the store so that reading it never waits for a
    /// reload (which holds the store through its grace period).
    live: Mutex<ConfigVersion>,
    state: AtomicU8,
    stats: Mutex<ReloadStats>,
    on_reload: RwLock<Vec<ReloadCallback>>,
    on_error: RwLock<Vec<ErrorCallback>>,
}

thread_local! {
    /// Set while this thread runs reload or error callbacks.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs callbacks with the re-entrance flag set and panics caught: a broken callback
/// must not take down the watcher thread or leave the reload lock poisoned.
fn run_callbacks<C: ?Sized>(callbacks: &[Arc<C>], call: impl Fn(&C)) {
    IN_CALLBACK.with(|flag| flag.set(true));
    for callback in callbacks {
        if catch_unwind(AssertUnwindSafe(|| call(callback))).is_err() {
            tracing::warn!("a hot-reload callback panicked; the panic was caught");
        }
    }
    IN_CALLBACK.with(|flag| flag.set(false));
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held (callbacks are caught), so a poisoned
    // lock still guards consistent data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn share<T>(shared: &Shared<T>) -> Shared<T> {
    match shared {
        Shared::Static(t) => Shared::Static(t),
        Shared::Owned(t) => Shared::Owned(Arc::clone(t)),
    }
}

fn read_error(path: &Path, error: std::io::Error) -> ReloadError {
    ReloadError::Read { path: path.to_owned(), source: Arc::new(error) }
}

/// Every kernel `config` names (rules, locks, fallback chains, fallback policy) that
/// `kernels` does not hold, as errors with their document paths.
fn unregistered_kernels(config: &KernelsConfig, kernels: &KernelRegistry) -> Vec<SchemaError> {
    let mut named: Vec<(String, &str)> = Vec::new();
    if let Some(kernel) = &config.defaults.fallback_policy {
        named.push(("defaults.fallback_policy".into(), kernel));
    }
    for (index, rule) in config.dispatch_rules.iter().enumerate() {
        named.push((format!("dispatch_rules[{index}].kernel"), &rule.kernel));
    }
    for (operation, kernel) in config.kernel_locks.iter() {
        named.push((format!("kernel_locks[{operation:?}]"), kernel));
    }
    for (operation, chain) in config.fallback_chains.iter() {
        for (index, kernel) in chain.iter().enumerate() {
            named.push((format!("fallback_chains[{operation:?}][{index}]"), kernel));
        }
    }
    named
        .into_iter()
        .filter(|(_, kernel)| kernels.get_by_name(kernel).is_none())
        .map(|(path, kernel)| SchemaError {
            path,
            message: "Kernel is not registered".into(),
            value: Some(kernel.to_owned()),
            position: Position::default(),
            hint: None,
        })
        .collect()
}

/// Reads, checks and compiles `source` (the bytes of `path`); with `validate`, also
/// checks its kernels against `kernels`. Nothing is applied.
fn prepare(
    path: &Path,
    kernels: &KernelRegistry,
    source: &[u8],
    validate: bool,
) -> Result<CompiledConfig, ReloadError> {
    let text = std::str::from_utf8(source)
        .map_err(|e| read_error(path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let loaded = ConfigSchema.load(text).map_err(|error| {
        let errors = match error {
            ConfigError::Schema { errors } => errors,
            other => vec![SchemaError {
                path: String::new(),
                message: other.to_string(),
                value: None,
                position: Position::default(),
                hint: None,
            }],
        };
        ReloadError::Invalid { path: path.to_owned(), errors }
    })?;
    if validate {
        let errors = unregistered_kernels(&loaded.config, kernels);
        if !errors.is_empty() {
            return Err(ReloadError::Invalid { path: path.to_owned(), errors });
        }
    }
    Ok(loaded.compiled)
}

impl HotReload {
    fn set_state(&self, state: ReloadState) {
        // Relaxed: the state is a report for people and tests, not a synchronisation flag.
        self.state.store(state as u8, Ordering::Relaxed);
    }

    fn engine(&self) -> &SelectionEngine {
        self.dispatcher.selection_engine()
    }

    /// Counts and reports a failed reload; the store is locked by the caller.
    fn failed(&self, error: ReloadError) -> ReloadError {
        {
            let mut stats = lock(&self.stats);
            stats.total_reloads += 1;
            stats.failed_reloads += 1;
            stats.last_error = Some(error.to_string());
        }
        self.set_state(ReloadState::Idle);
        tracing::warn!(path = %self.path.display(), %error, "config reload refused; the last good config stays");
        let callbacks = self.on_error.read().unwrap_or_else(|e| e.into_inner()).clone();
        run_callbacks(&callbacks, |callback| callback(&error));
        error
    }

    /// Makes `policy` live under the next version; the store is locked by the caller.
    /// Returns the new version and the previous epoch marker.
    fn swap_in(
        &self,
        store: &mut Store,
        policy: CompiledConfig,
        config_hash: ConfigHash,
        restored_from: Option<u64>,
    ) -> (ConfigVersion, Arc<Epoch>) {
        let version = self.engine().set_policy(policy);
        // The policy first, then the epoch: the epoch swap publishes (release) after the
        // engine's policy and version stores, and a call loads the epoch (acquire) before
        // it reads the policy version, so a call that sees the new marker sees the new
        // policy, and every call that may still run on the old policy holds the old marker.
        let previous = self.epoch.swap(Arc::new(Epoch));
        let version = ConfigVersion { version, config_hash, loaded_at: SystemTime::now(), restored_from };
        // We hold the store lock and nobody else swaps this engine's policy, so the
        // engine's current policy is the one just set.
        store.current = Applied { policy: self.engine().policy(), version };
        *lock(&self.live) = version;
        let mut stats = lock(&self.stats);
        stats.current_version = version.version;
        stats.current_hash = config_hash;
        stats.loaded_at = version.loaded_at;
        (version, previous)
    }

    fn notify_reloaded(&self, version: ConfigVersion) {
        let callbacks = self.on_reload.read().unwrap_or_else(|e| e.into_inner()).clone();
        run_callbacks(&callbacks, |callback| callback(version));
    }

    /// Reads the file and reloads it, even when its content is the last seen.
    fn reload_file(&self, validate: bool, grace_period: Duration) -> Result<ConfigVersion, ReloadError> {
        if IN_CALLBACK.with(Cell::get) {
            return Err(ReloadError::CalledFromCallback);
        }
        let mut store = lock(&self.store);
        let started = Instant::now();
        self.set_state(ReloadState::Reloading);
        let source = match std::fs::read(&self.path) {
            Ok(source) => source,
            Err(e) => return Err(self.failed(read_error(&self.path, e))),
        };
        self.reload_source(&mut store, &source, validate, grace_period, started)
    }

    /// Reloads `source` (read by the watcher) unless it is the content last seen.
    pub(crate) fn reload_if_changed(
        &self,
        source: &[u8],
        grace_period: Duration,
    ) -> Option<Result<ConfigVersion, ReloadError>> {
        let mut store = lock(&self.store);
        let started = Instant::now();
        if store.last_seen == Some(ConfigHash::of(source)) {
            return None;
        }
        self.set_state(ReloadState::Reloading);
        Some(self.reload_source(&mut store, source, self.validate_on_reload, grace_period, started))
    }

    /// A failure to read the file, seen by the watcher: counted and reported like any.
    pub(crate) fn report_read_failure(&self, error: std::io::Error) {
        let _store = lock(&self.store);
        self.failed(read_error(&self.path, error));
    }

    fn reload_source(
        &self,
        store: &mut MutexGuard<'_, Store>,
        source: &[u8],
        validate: bool,
        grace_period: Duration,
        started: Instant,
    ) -> Result<ConfigVersion, ReloadError> {
        let config_hash = ConfigHash::of(source);
        store.last_seen = Some(config_hash);
        self.set_state(ReloadState::Validating);
        let policy = match prepare(&self.path, &self.kernels, source, validate) {
            Ok(policy) => policy,
            Err(error) => return Err(self.failed(error)),
        };
        self.set_state(ReloadState::Applying);
        let previous = store.current.clone();
        let (version, previous_epoch) = self.swap_in(store, policy, config_hash, None);
        store.history.push_back(previous);
        while store.history.len() > ROLLBACK_DEPTH {
            store.history.pop_front();
        }
        {
            let mut stats = lock(&self.stats);
            stats.total_reloads += 1;
            stats.last_reload_time_ms = started.elapsed().as_secs_f64() * 1e3;
        }
        tracing::info!(path = %self.path.display(), version = version.version, hash = %config_hash, "config reloaded");
        self.notify_reloaded(version);
        if !wait_for_calls(previous_epoch, grace_period) {
            lock(&self.stats).grace_period_timeouts += 1;
        }
        self.set_state(ReloadState::Idle);
        Ok(version)
    }

    fn rollback(&self) -> Result<ConfigVersion, ReloadError> {
        if IN_CALLBACK.with(Cell::get) {
            return Err(ReloadError::CalledFromCallback);
        }
        let mut store = lock(&self.store);
        self.set_state(ReloadState::RollingBack);
        let Some(earlier) = store.history.pop_back() else {
            self.set_state(ReloadState::Idle);
            return Err(ReloadError::NothingToRollBack);
        };
        let policy = CompiledConfig::clone(&earlier.policy);
        let (version, _previous_epoch) =
            self.swap_in(&mut store, policy, earlier.version.config_hash, Some(earlier.version.version));
        lock(&self.stats).rollbacks += 1;
        tracing::info!(path = %self.path.display(), version = version.version, restored = earlier.version.version, "config rolled back");
        self.notify_reloaded(version);
        self.set_state(ReloadState::Idle);
        Ok(version)
    }
}

/// Waits until no call holds `previous` (the marker of the config just replaced), at
/// most `grace_period`. False only when a non-zero period passed with calls still holding
/// it (a zero period asks for no wait, so it never times out).
fn wait_for_calls(previous: Arc<Epoch>, grace_period: Duration) -> bool {
    // `ArcSwap::swap` pays every reader's debt on the old pointer before it returns
    // (arc-swap's `wait_for_readers`), so from here on each call still holding the old
    // marker owns a counted reference: the strong count is 1 (ours) plus those calls.
    let deadline = Instant::now() + grace_period;
    loop {
        if Arc::strong_count(&previous) == 1 {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return grace_period.is_zero();
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
    }
}

/// Seed 001's `HotReloadDispatcher` (HOT_RELOAD): CONFIG mode whose rules file is
/// reloaded while calls run, by hand ([`reload`](Self::reload)) or by a watcher
/// ([`watch`](Self::watch)).
///
/// **Invariants.** A file is made live only after it has been read whole, parsed,
/// schema-checked and compiled (and, with validation, its kernels found in the registry);
/// a file that fails any step changes nothing but [`stats`](Self::stats) and the error
/// callbacks. The swap is atomic: a call in flight finishes with the rules it started
/// with. Versions strictly increase; a rollback takes a new version too.
///
/// **Rollback.** [`rollback`](Self::rollback) makes the previous good config live again
/// under a *new* version number (its [`ConfigVersion::restored_from`] names the version it
/// restores, and it carries that version's hash), so that versions keep increasing and no
/// cached answer keyed by an old version can come back. Up to [`ROLLBACK_DEPTH`] earlier
/// configs are kept; each rollback steps one further back. Seed 001's automatic rollback
/// "on reload failure" has nothing to do here: a reload that fails applies nothing, so
/// the state passes through [`ReloadState::RollingBack`] only in `rollback`.
///
/// **Grace period.** `reload(validate, grace_period)` returns once every call that may
/// have started on the replaced config has finished, or once `grace_period` has passed,
/// whichever is first (counted in [`ReloadStats::grace_period_timeouts`] when calls were
/// still running). Those calls are never cut short; the wait only tells the caller when
/// the old config is out of use. Reloads are serialised, so another reload waits for it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use layerzero_config::DispatchConfig;
/// use layerzero_dispatch::{Dispatcher, HotReloadDispatcher, ReloadError};
/// use layerzero_registry::{BackendRegistry, KernelRegistry};
/// use layerzero_types::{KernelImpl, KernelSpec, NormArgs, OperationType, Platform, SelectionContext};
///
/// let kernels = Arc::new(KernelRegistry::new());
/// for id in ["doc_hot_a", "doc_hot_b"] {
///     let spec = KernelSpec::new(id, Platform::Cpu)?.for_operation(OperationType::NormRms);
///     kernels.register_with_impl(spec, KernelImpl::norm(|_: &mut NormArgs<'_>| Ok(())))?;
/// }
/// let dir = std::env::temp_dir().join(format!("lz-doc-hot-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("kernels.yaml");
/// let lock = |kernel: &str| format!("version: \"1.0\"\nkernel_locks: {{rms_norm: {kernel}}}\n");
/// std::fs::write(&path, lock("doc_hot_a"))?;
///
/// let config = DispatchConfig::builder().config_path(Some(path.display().to_string())).build()?;
/// let dispatcher = HotReloadDispatcher::new(kernels, Arc::new(BackendRegistry::detect()), config, None)?;
/// let ctx = SelectionContext::builder().build()?;
/// let rms = OperationType::NormRms.into();
/// assert_eq!(dispatcher.kernel_for(rms, &ctx)?.as_str(), "doc_hot_a");
///
/// std::fs::write(&path, lock("doc_hot_b"))?;
/// let v2 = dispatcher.reload(true, Duration::from_secs(1))?;
/// assert_eq!((v2.version, dispatcher.kernel_for(rms, &ctx)?.as_str()), (2, "doc_hot_b"));
///
/// // A kernel nobody registered: refused, and the last good config stays.
/// std::fs::write(&path, lock("doc_hot_missing"))?;
/// assert!(matches!(dispatcher.reload(true, Duration::ZERO), Err(ReloadError::Invalid { .. })));
/// assert_eq!(dispatcher.kernel_for(rms, &ctx)?.as_str(), "doc_hot_b");
///
/// // Back to the first config, under a new version.
/// let v3 = dispatcher.rollback()?;
/// assert_eq!((v3.version, v3.restored_from), (3, Some(1)));
/// assert_eq!(dispatcher.kernel_for(rms, &ctx)?.as_str(), "doc_hot_a");
/// assert_eq!((dispatcher.stats().total_reloads, dispatcher.stats().failed_reloads), (2, 1));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HotReloadDispatcher {
    shared: Arc<HotReload>,
    watcher: Mutex<Option<watch::Watcher>>,
}

impl fmt::Debug for HotReloadDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotReloadDispatcher")
            .field("path", &self.shared.path)
            .field("version", &self.current_version().version)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Seed 001's `create_hot_reload_dispatcher`: the rules of `config_path`, kernels from
/// `kernel_registry`, backends from the process-wide backend registry, the other settings
/// (`validate_on_reload`, `watch_interval_seconds`, cache, breakers, …) from `config`;
/// the watcher is started (the seed's `start_watching=True`).
///
/// Use [`HotReloadDispatcher::new`] for another backend registry, a test clock, or to
/// start watching later.
///
/// ```no_run
/// use layerzero_config::DispatchConfig;
/// use layerzero_dispatch::create_hot_reload_dispatcher;
/// use layerzero_registry::get_global_kernel_registry;
///
/// let config = DispatchConfig::builder().watch_interval_seconds(1.0).validate_on_reload(true).build()?;
/// let dispatcher = create_hot_reload_dispatcher("config/kernels.yaml", get_global_kernel_registry(), config)?;
/// dispatcher.on_reload(|version| println!("config reloaded to version {}", version.version));
/// dispatcher.on_error(|error| eprintln!("reload failed: {error}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn create_hot_reload_dispatcher(
    config_path: impl AsRef<Path>,
    kernel_registry: impl Into<Shared<KernelRegistry>>,
    config: DispatchConfig,
) -> Result<HotReloadDispatcher, ReloadError> {
    let config = config.to_builder().mode(DispatchMode::HotReload).build()?;
    let dispatcher = HotReloadDispatcher::at(
        config_path.as_ref().to_owned(),
        kernel_registry.into(),
        get_global_backend_registry().into(),
        config,
        None,
    )?;
    dispatcher.watch()?;
    Ok(dispatcher)
}

impl HotReloadDispatcher {
    /// A dispatcher over the rules file `config.config_path()`, not yet watching (seed:
    /// `HotReloadDispatcher(config)`); breakers read time from `clock` when given.
    ///
    /// The file is loaded as a reload would load it (with the kernel check when
    /// `validate_on_reload`); its config is version 1.
    pub fn new(
        kernel_registry: impl Into<Shared<KernelRegistry>>,
        backend_registry: impl Into<Shared<BackendRegistry>>,
        config: DispatchConfig,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<HotReloadDispatcher, ReloadError> {
        let path = PathBuf::from(config.config_path().ok_or(ReloadError::NoConfigPath)?);
        HotReloadDispatcher::at(path, kernel_registry.into(), backend_registry.into(), config, clock)
    }

    fn at(
        path: PathBuf,
        kernels: Shared<KernelRegistry>,
        backends: Shared<BackendRegistry>,
        config: DispatchConfig,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<HotReloadDispatcher, ReloadError> {
        let source = std::fs::read(&path).map_err(|e| read_error(&path, e))?;
        let config_hash = ConfigHash::of(&source);
        let validate = config.validate_on_reload();
        let watch_interval =
            Duration::try_from_secs_f64(config.watch_interval_seconds()).unwrap_or(Duration::from_secs(1));
        let policy = prepare(&path, &kernels, &source, validate)?;
        let dispatcher = ConfigDrivenDispatcher::new(share(&kernels), backends, config, policy, clock)?;
        let engine = dispatcher.selection_engine();
        let version = ConfigVersion {
            version: engine.policy_version(),
            config_hash,
            loaded_at: SystemTime::now(),
            restored_from: None,
        };
        let current = Applied { policy: engine.policy(), version };
        let stats = ReloadStats {
            total_reloads: 0,
            failed_reloads: 0,
            rollbacks: 0,
            grace_period_timeouts: 0,
            last_reload_time_ms: 0.0,
            current_version: version.version,
            current_hash: config_hash,
            loaded_at: version.loaded_at,
            last_error: None,
        };
        let shared = HotReload {
            path,
            dispatcher,
            kernels,
            validate_on_reload: validate,
            watch_interval,
            epoch: ArcSwap::from_pointee(Epoch),
            store: Mutex::new(Store { current, history: VecDeque::new(), last_seen: Some(config_hash) }),
            live: Mutex::new(version),
            state: AtomicU8::new(ReloadState::Idle as u8),
            stats: Mutex::new(stats),
            on_reload: RwLock::new(Vec::new()),
            on_error: RwLock::new(Vec::new()),
        };
        Ok(HotReloadDispatcher { shared: Arc::new(shared), watcher: Mutex::new(None) })
    }

    /// Reloads the rules file now (seed: `reload(validate, grace_period_seconds)`).
    ///
    /// Reads the whole file, parses, schema-checks and compiles it; with `validate`, also
    /// checks that every kernel it names (rules, locks, fallback chains, fallback policy)
    /// is registered (the seed's dry run). Only then is it swapped in. Then waits at most
    /// `grace_period` for the calls that may have started on the replaced config (see the
    /// type's docs). Unchanged content is applied too, under a new version.
    ///
    /// A failure is counted in [`stats`](Self::stats), passed to the
    /// [`on_error`](Self::on_error) callbacks and returned; the live config stays.
    pub fn reload(&self, validate: bool, grace_period: Duration) -> Result<ConfigVersion, ReloadError> {
        self.shared.reload_file(validate, grace_period)
    }

    /// Makes the previous good config live again, under a new version (see the type's
    /// docs); each further call steps one config further back, up to [`ROLLBACK_DEPTH`].
    /// [`ReloadError::NothingToRollBack`] when none is kept.
    ///
    /// The watcher does not undo a rollback: it reloads only when the file's content
    /// changes again.
    pub fn rollback(&self) -> Result<ConfigVersion, ReloadError> {
        self.shared.rollback()
    }

    /// Starts watching the rules file with the settings of the dispatcher's config
    /// (`watch_interval_seconds` for the poll; see [`WatchOptions::default`]). Replaces a
    /// watcher already running.
    pub fn watch(&self) -> Result<(), ReloadError> {
        self.watch_with(WatchOptions { poll_interval: self.shared.watch_interval, ..WatchOptions::default() })
    }

    /// Starts watching the rules file with `options`: file-system events through `notify`
    /// (when `options.use_notify`) on the file's directory, and a poll of the file's
    /// content hash every `options.poll_interval` in any case. Replaces a watcher already
    /// running. The watcher stops on [`stop_watching`](Self::stop_watching) or when the
    /// dispatcher is dropped; either joins its thread.
    ///
    /// Editors save in several ways; each is picked up: written in place (truncate then
    /// write), written to a temporary file then renamed over it, deleted then created. A
    /// file that is a symbolic link (a Kubernetes ConfigMap mount) is reloaded on any
    /// change in its directory or its target's. A
    /// missing file is waited for, not an error: the live config stays. A file is read
    /// once events have paused for `options.debounce` and only if its size and
    /// modification time did not change while it was read; a file read mid-write that
    /// still fails to parse is refused like any invalid file, and the completed write
    /// is read after its own events.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use layerzero_config::DispatchConfig;
    /// # use layerzero_dispatch::{HotReloadDispatcher, WatchOptions};
    /// # use layerzero_registry::{BackendRegistry, KernelRegistry};
    /// let config = DispatchConfig::builder().config_path(Some("config/kernels.yaml".into())).build()?;
    /// let dispatcher = HotReloadDispatcher::new(
    ///     Arc::new(KernelRegistry::new()), Arc::new(BackendRegistry::detect()), config, None)?;
    /// dispatcher.watch_with(WatchOptions { debounce: Duration::from_millis(20), ..WatchOptions::default() })?;
    /// assert!(dispatcher.is_watching());
    /// dispatcher.stop_watching();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_with(&self, options: WatchOptions) -> Result<(), ReloadError> {
        let watcher = watch::Watcher::start(Arc::clone(&self.shared), options)?;
        let previous = lock(&self.watcher).replace(watcher);
        if let Some(previous) = previous {
            previous.stop();
        }
        Ok(())
    }

    /// Stops the watcher and joins its thread; false when none was running.
    pub fn stop_watching(&self) -> bool {
        let watcher = lock(&self.watcher).take();
        watcher.map(watch::Watcher::stop).is_some()
    }

    /// Whether a watcher is running.
    pub fn is_watching(&self) -> bool {
        lock(&self.watcher).is_some()
    }

    /// Calls `callback` with each config made live by a reload or a rollback, on the
    /// thread that made it live, right after the swap (seed: `on_reload`). Callbacks run
    /// in registration order, while the reload lock is held (so they see versions in
    /// order; keep them short: the next reload waits); one that panics is caught and
    /// logged. A callback must not
    /// call [`reload`](Self::reload) or [`rollback`](Self::rollback)
    /// ([`ReloadError::CalledFromCallback`]).
    pub fn on_reload(&self, callback: impl Fn(ConfigVersion) + Send + Sync + 'static) {
        self.shared.on_reload.write().unwrap_or_else(|e| e.into_inner()).push(Arc::new(callback));
    }

    /// Calls `follow` with the rules made live by each reload or rollback, under the same
    /// rules as [`on_reload`](Self::on_reload) callbacks: how other dispatchers are kept on
    /// the live rules ([`create_orchestrator`](crate::create_orchestrator) hands them to
    /// its DYNAMIC and CONFIG dispatchers with [`SelectionEngine::set_policy`]). The
    /// callback holds no strong reference to this dispatcher's state, so registering one
    /// makes no reference cycle.
    pub fn on_reload_policy(&self, follow: impl Fn(&layerzero_config::CompiledConfig) + Send + Sync + 'static) {
        let shared = Arc::downgrade(&self.shared);
        self.on_reload(move |_| {
            if let Some(shared) = shared.upgrade() {
                follow(&shared.engine().policy());
            }
        });
    }

    /// Calls `callback` with each failed reload, manual or the watcher's (seed:
    /// `on_error`); the same rules as [`on_reload`](Self::on_reload).
    pub fn on_error(&self, callback: impl Fn(&ReloadError) + Send + Sync + 'static) {
        self.shared.on_error.write().unwrap_or_else(|e| e.into_inner()).push(Arc::new(callback));
    }

    /// What the reload machinery is doing now.
    pub fn state(&self) -> ReloadState {
        ReloadState::from_u8(self.shared.state.load(Ordering::Relaxed))
    }

    /// Reload counts, the live version and the last reload's duration (seed: `stats`).
    pub fn stats(&self) -> ReloadStats {
        lock(&self.shared.stats).clone()
    }

    /// The live config's version.
    pub fn current_version(&self) -> ConfigVersion {
        *lock(&self.shared.live)
    }

    /// The watched rules file.
    pub fn config_path(&self) -> &Path {
        &self.shared.path
    }

    /// The selection engine (seed: `dispatcher.selection_engine`). Swapping its policy
    /// directly bypasses the versions and rollback history kept here.
    pub fn selection_engine(&self) -> &SelectionEngine {
        self.shared.engine()
    }

    /// The circuit breakers, when the config enables them.
    pub fn circuit_breakers(&self) -> Option<&CircuitBreakerRegistry> {
        self.shared.dispatcher.circuit_breakers()
    }

    /// The circuit breakers of kernels on `device` (one set per device).
    pub fn circuit_breakers_on(&self, device: layerzero_types::Device) -> Option<&CircuitBreakerRegistry> {
        self.shared.dispatcher.circuit_breakers_on(device)
    }

    /// The telemetry so far.
    pub fn telemetry(&self) -> TelemetrySnapshot {
        self.shared.dispatcher.telemetry()
    }

    /// Why `operation` in `context` selects what it selects under the live config.
    pub fn explain_selection(&self, operation: Operation, context: &SelectionContext) -> Explanation {
        self.shared.dispatcher.explain_selection(operation, context)
    }
}

impl Drop for HotReloadDispatcher {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

impl Dispatcher for HotReloadDispatcher {
    /// CONFIG's path and budget plus one `ArcSwap` load and its drop (the call's config
    /// generation marker, for the grace period): no lock, no allocation; arc-swap writes
    /// only this thread's own debt slot. `benches/benches/reload.rs` measures it beside
    /// CONFIG: about 5 ns more per call (criterion means of 41.5 against 36.6 ns with a
    /// no-op kernel, telemetry and timing off, on the 2-core development machine).
    fn dispatch(
        &self,
        operation: Operation,
        args: &mut OpArgs<'_>,
        context: Option<&SelectionContext>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let _epoch = self.shared.epoch.load();
        self.shared.dispatcher.dispatch(operation, args, context)
    }

    fn kernel_for(&self, operation: Operation, context: &SelectionContext) -> Result<KernelId, DispatchError> {
        self.shared.dispatcher.kernel_for(operation, context)
    }

    fn mode(&self) -> DispatchMode {
        DispatchMode::HotReload
    }

    fn telemetry_snapshot(&self) -> Option<TelemetrySnapshot> {
        Some(self.telemetry())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerzero_types::{KernelImpl, KernelSpec, NormArgs, OperationType, Platform};

    fn registry(ids: &[&str]) -> Arc<KernelRegistry> {
        let registry = Arc::new(KernelRegistry::new());
        for id in ids {
            let spec = KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::NormRms);
            registry.register_with_impl(spec, KernelImpl::norm(|_: &mut NormArgs<'_>| Ok(()))).unwrap();
        }
        registry
    }

    #[test]
    fn validation_names_every_unregistered_kernel_with_its_path() {
        let kernels = registry(&["unit_hot_known"]);
        let source = "version: \"1.0\"\ndefaults: {fallback_policy: unit_hot_gone}\n\
            dispatch_rules: [{operation: rms_norm, kernel: unit_hot_known}, {operation: rms_norm, kernel: unit_hot_x}]\n\
            kernel_locks: {\"attention.*\": unit_hot_y}\nfallback_chains: {rms_norm: [unit_hot_known, unit_hot_z]}\n";
        let path = Path::new("rules.yaml");
        let Err(ReloadError::Invalid { errors, .. }) = prepare(path, &kernels, source.as_bytes(), true) else {
            panic!("validation passed")
        };
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "defaults.fallback_policy: Kernel is not registered (unit_hot_gone)",
                "dispatch_rules[1].kernel: Kernel is not registered (unit_hot_x)",
                "kernel_locks[\"attention.*\"]: Kernel is not registered (unit_hot_y)",
                "fallback_chains[\"rms_norm\"][1]: Kernel is not registered (unit_hot_z)",
            ]
        );
        // Without validation the same file compiles and could be applied.
        assert!(prepare(path, &kernels, source.as_bytes(), false).is_ok());
        // Bytes that are not UTF-8 are a read error, not a schema error.
        assert!(matches!(prepare(path, &kernels, &[0xff, 0xfe], false), Err(ReloadError::Read { .. })));
    }

    #[test]
    fn states_have_the_seed_names() {
        let names: Vec<&str> = (0..5).map(|n| ReloadState::from_u8(n).as_str()).collect();
        assert_eq!(names, ["IDLE", "RELOADING", "VALIDATING", "APPLYING", "ROLLING_BACK"]);
    }

    #[test]
    fn the_hash_is_fnv1a_of_the_bytes() {
        // FNV-1a's offset basis is the hash of no bytes.
        assert_eq!(ConfigHash::of(b"").value(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(ConfigHash::of(b"a").to_string(), "af63dc4c8601ec8c");
    }

    /// The number of this process's threads called `layerzero-hot-r…` (Linux truncates
    /// thread names to 15 bytes).
    fn watcher_threads() -> usize {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("layerzero-hot-r"))
            .count()
    }

    /// [`watcher_threads`] once it equals `expected`, or after two seconds: a joined
    /// thread can still be listed in `/proc/self/task` for a moment while the kernel
    /// finishes its exit, which a loaded machine stretches.
    fn watcher_threads_settled(expected: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let now = watcher_threads();
            if now == expected || std::time::Instant::now() >= deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn stopping_or_dropping_ends_the_watcher_thread() {
        // The only test of this binary that starts watchers, so the count is its own.
        let dir = std::env::temp_dir().join(format!("lz-unit-hot-threads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kernels.yaml");
        std::fs::write(&path, "version: \"1.0\"\n").unwrap();
        let config = DispatchConfig::builder().config_path(Some(path.display().to_string())).build().unwrap();
        let dispatcher =
            HotReloadDispatcher::new(registry(&[]), Arc::new(BackendRegistry::detect()), config, None).unwrap();
        let before = watcher_threads();
        dispatcher.watch().unwrap();
        // Replacing a watcher stops the first.
        dispatcher.watch().unwrap();
        assert_eq!(watcher_threads_settled(before + 1), before + 1);
        assert!(dispatcher.stop_watching());
        assert!(!dispatcher.stop_watching());
        assert_eq!(watcher_threads_settled(before), before);
        dispatcher.watch().unwrap();
        drop(dispatcher);
        assert_eq!(watcher_threads_settled(before), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
