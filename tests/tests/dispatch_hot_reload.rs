//! HOT_RELOAD end to end: every way an editor saves is picked up by the watcher (with
//! file-system events and by the poll alone); an invalid file is refused and the last good
//! config stays; rollback, callbacks, stats and the grace period; and the load
//! test, 1,000 reloads alternating valid and invalid files in every save style while 8
//! threads dispatch.
//!
//! Each test has its own directory and its own kernel ids (ids are process-wide).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use layerzero::config::{ConfigSchema, DispatchConfig};
use layerzero::dispatch::{
    ConfigHash, ConfigVersion, Dispatcher, HotReloadDispatcher, ROLLBACK_DEPTH, ReloadError, ReloadState, WatchOptions,
    create_hot_reload_dispatcher,
};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    DispatchResult, KernelId, KernelImpl, KernelSpec, NormArgs, OpArgs, Operation, OperationType, Platform,
    SelectionContext, Tensor, TensorViewMut,
};

const RMS: Operation = Operation::Known(OperationType::NormRms);
const HIDDEN: usize = 8;

/// A fresh directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("layerzero-hot-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("kernels.yaml")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kernels `{prefix}_0 .. {prefix}_{n-1}` for rms_norm, each filling the output with its
/// own marker (`index + 1`) and counting its calls, plus `{prefix}_poison`, which only an
/// invalid file names (marker -1).
struct Kernels {
    registry: Arc<KernelRegistry>,
    ids: Vec<KernelId>,
    poison: KernelId,
    poison_calls: Arc<AtomicU64>,
}

fn kernels(prefix: &str, n: usize) -> Kernels {
    let registry = Arc::new(KernelRegistry::new());
    let mut ids = Vec::new();
    let poison_calls = Arc::new(AtomicU64::new(0));
    for index in 0..=n {
        let poisoned = index == n;
        let id = if poisoned { format!("{prefix}_poison") } else { format!("{prefix}_{index}") };
        let marker = if poisoned { -1.0 } else { index as f32 + 1.0 };
        let calls = Arc::clone(&poison_calls);
        let code = KernelImpl::norm(move |args: &mut NormArgs<'_>| {
            if poisoned {
                calls.fetch_add(1, Ordering::Relaxed);
            }
            args.output.as_mut_slice::<f32>()?.fill(marker);
            Ok(())
        });
        let spec = KernelSpec::new(&id, Platform::Cpu).unwrap().for_operation(OperationType::NormRms);
        let spec = registry.register_with_impl(spec, code).unwrap();
        if !poisoned {
            ids.push(spec.id);
        }
    }
    let poison = KernelId::lookup(&format!("{prefix}_poison")).unwrap();
    Kernels { registry, ids, poison, poison_calls }
}

/// A valid file locking rms_norm to `kernel`. `version` comes last, so that every strict
/// prefix of the file (what a reader may see mid-write) lacks it and is invalid.
fn valid(kernel: KernelId, nonce: u64) -> String {
    format!(
        "# save {nonce}\nkernel_locks:\n  rms_norm: {kernel}\nfallback_chains:\n  rms_norm: [{kernel}]\nversion: \"1.0\"\n"
    )
}

/// Invalid files, each of which would route rms_norm to the poison kernel (or to none)
/// if it were ever applied.
fn invalid(poison: KernelId, nonce: u64) -> String {
    match nonce % 4 {
        // An unsupported schema version.
        0 => format!("# save {nonce}\nkernel_locks:\n  rms_norm: {poison}\nversion: \"2.0\"\n"),
        // Broken YAML.
        1 => format!("# save {nonce}\nkernel_locks: {{rms_norm: {poison}\nversion: \"1.0\"\n"),
        // A bad condition value in a top-priority rule.
        2 => format!(
            "# save {nonce}\ndispatch_rules:\n  - operation: rms_norm\n    conditions: {{dtype: fp16x}}\n    kernel: {poison}\n    priority: 1000\nkernel_locks:\n  rms_norm: {poison}\nversion: \"1.0\"\n"
        ),
        // A kernel nobody registered (refused by validation; applied, the lock would fail closed).
        _ => format!("# save {nonce}\nkernel_locks:\n  rms_norm: hot_reload_ghost_kernel\nversion: \"1.0\"\n"),
    }
}

/// The ways editors save a file.
#[derive(Clone, Copy, Debug)]
enum Save {
    /// Truncate, then write (in two writes, as a slow writer would).
    InPlace,
    /// Write a temporary file beside it, then rename it over the file.
    TempThenRename,
    /// Delete the file, then create it anew.
    DeleteAndCreate,
    /// Rename the file to a backup, write a new one, delete the backup (vim's default).
    BackupThenWrite,
}

const SAVES: [Save; 4] = [Save::InPlace, Save::TempThenRename, Save::DeleteAndCreate, Save::BackupThenWrite];

fn save(path: &Path, content: &str, how: Save) {
    use std::io::Write;
    let write_new = |path: &Path| {
        let mut file = std::fs::File::create(path).unwrap();
        let (head, tail) = content.split_at(content.len() / 2);
        file.write_all(head.as_bytes()).unwrap();
        file.write_all(tail.as_bytes()).unwrap();
    };
    match how {
        Save::InPlace => write_new(path),
        Save::TempThenRename => {
            let temp = path.with_file_name(".kernels.yaml.tmp");
            std::fs::write(&temp, content).unwrap();
            std::fs::rename(&temp, path).unwrap();
        }
        Save::DeleteAndCreate => {
            std::fs::remove_file(path).unwrap();
            write_new(path);
        }
        Save::BackupThenWrite => {
            let backup = path.with_file_name("kernels.yaml~");
            std::fs::rename(path, &backup).unwrap();
            write_new(path);
            std::fs::remove_file(&backup).unwrap();
        }
    }
}

fn dispatcher_over(kernels: &Kernels, path: &Path) -> HotReloadDispatcher {
    let config =
        DispatchConfig::builder().config_path(Some(path.display().to_string())).log_fallbacks(false).build().unwrap();
    HotReloadDispatcher::new(Arc::clone(&kernels.registry), Arc::new(BackendRegistry::detect()), config, None).unwrap()
}

fn ctx() -> SelectionContext {
    SelectionContext::builder().build().unwrap()
}

fn routed(dispatcher: &HotReloadDispatcher) -> Option<KernelId> {
    dispatcher.kernel_for(RMS, &ctx()).ok()
}

/// Runs one rms_norm call; checks the output is the marker of the kernel that ran.
fn dispatch_once(dispatcher: &dyn Dispatcher, kernels: &Kernels) -> DispatchResult<()> {
    let input = Tensor::from_vec(vec![1f32; 2 * HIDDEN], &[2, HIDDEN]).unwrap();
    let weight = Tensor::from_vec(vec![1f32; HIDDEN], &[HIDDEN]).unwrap();
    let mut out = vec![f32::NAN; 2 * HIDDEN];
    let output = TensorViewMut::from_slice(&mut out, &[2, HIDDEN]).unwrap();
    let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), output, 1e-6));
    let result = dispatcher.dispatch(RMS, &mut args, None).unwrap();
    let index = kernels.ids.iter().position(|k| *k == result.kernel_id).expect("a kernel of a valid config ran");
    assert!(out.iter().all(|v| *v == index as f32 + 1.0), "output of {} is its marker", result.kernel_id);
    result
}

/// Waits until `done` holds, at most `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn fast_watch(use_notify: bool) -> WatchOptions {
    let poll_interval = if use_notify { Duration::from_millis(500) } else { Duration::from_millis(20) };
    WatchOptions { poll_interval, debounce: Duration::from_millis(10), use_notify, grace_period: Duration::ZERO }
}

#[test]
fn a_strict_prefix_of_a_test_file_is_never_valid() {
    // The load test's "no invalid config applied" rests on this: a torn read of a valid
    // file is itself invalid, never another valid config.
    let id = KernelId::new("hot_prefix_kernel").unwrap();
    let text = valid(id, 7);
    for cut in 0..text.len() - 1 {
        assert!(!ConfigSchema.validate(&text[..cut]).is_empty(), "prefix of {cut} bytes is valid");
    }
    assert!(ConfigSchema.validate(&text).is_empty());
}

fn each_save_style_is_picked_up(prefix: &str, use_notify: bool) {
    let dir = Scratch::new(prefix);
    let kernels = kernels(prefix, 4);
    save_initial(&dir, &kernels);
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    dispatcher.watch_with(fast_watch(use_notify)).unwrap();
    for (step, how) in SAVES.into_iter().enumerate() {
        let kernel = kernels.ids[(step + 1) % kernels.ids.len()];
        save(&dir.file(), &valid(kernel, step as u64), how);
        wait_for(Duration::from_secs(5), &format!("{how:?} to be picked up"), || routed(&dispatcher) == Some(kernel));
        assert_eq!(dispatch_once(&dispatcher, &kernels).kernel_id, kernel, "{how:?}");
    }
    let stats = dispatcher.stats();
    // One version per save: every save was read once, whole.
    assert_eq!(stats.current_version, 1 + SAVES.len() as u64);
    assert_eq!(stats.total_reloads - stats.failed_reloads, SAVES.len() as u64);
    assert!(dispatcher.stop_watching());
    assert!(!dispatcher.is_watching());
}

fn save_initial(dir: &Scratch, kernels: &Kernels) {
    std::fs::write(dir.file(), valid(kernels.ids[0], 1_000_000)).unwrap();
}

#[test]
fn each_editor_save_style_is_picked_up_by_the_watcher() {
    each_save_style_is_picked_up("hot_saves_events", true);
}

#[test]
fn each_editor_save_style_is_picked_up_by_the_poll_alone() {
    each_save_style_is_picked_up("hot_saves_poll", false);
}

/// Kubernetes mounts a ConfigMap as `kernels.yaml -> ..data/kernels.yaml` and updates it
/// by pointing `..data` at a new directory: no event names `kernels.yaml`. With a poll
/// of a minute, only events can find the change within the test's wait.
#[cfg(unix)]
#[test]
fn a_kubernetes_style_link_swap_is_picked_up_by_events() {
    use std::os::unix::fs::symlink;
    let dir = Scratch::new("hot_k8s");
    let kernels = kernels("hot_k8s", 2);
    let first = dir.0.join("..2026_11_23_first");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("kernels.yaml"), valid(kernels.ids[0], 0)).unwrap();
    symlink("..2026_11_23_first", dir.0.join("..data")).unwrap();
    symlink("..data/kernels.yaml", dir.file()).unwrap();
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    dispatcher.watch_with(WatchOptions { poll_interval: Duration::from_secs(60), ..fast_watch(true) }).unwrap();
    // Let the watcher take its first look (at start) before the swap, so that only an
    // event can bring the change in.
    std::thread::sleep(Duration::from_millis(200));

    let second = dir.0.join("..2026_11_23_second");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("kernels.yaml"), valid(kernels.ids[1], 1)).unwrap();
    symlink("..2026_11_23_second", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    wait_for(Duration::from_secs(5), "the link swap", || routed(&dispatcher) == Some(kernels.ids[1]));
    // Kubernetes then deletes the old directory; that changes nothing.
    std::fs::remove_dir_all(&first).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(dispatcher.current_version().version, 2);
    assert_eq!(dispatcher.stats().failed_reloads, 0);
}

#[test]
fn a_missing_file_keeps_the_config_until_it_comes_back() {
    let dir = Scratch::new("hot_missing");
    let kernels = kernels("hot_missing", 2);
    save_initial(&dir, &kernels);
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    dispatcher.watch_with(WatchOptions { poll_interval: Duration::from_millis(10), ..fast_watch(true) }).unwrap();
    std::fs::remove_file(dir.file()).unwrap();
    // Many polls and the delete event's debounce pass while the file is gone.
    std::thread::sleep(Duration::from_millis(150));
    let stats = dispatcher.stats();
    assert_eq!((stats.total_reloads, stats.failed_reloads, stats.current_version), (0, 0, 1));
    assert_eq!(dispatch_once(&dispatcher, &kernels).kernel_id, kernels.ids[0]);
    std::fs::write(dir.file(), valid(kernels.ids[1], 1)).unwrap();
    wait_for(Duration::from_secs(5), "the recreated file", || routed(&dispatcher) == Some(kernels.ids[1]));
    // A manual reload of a missing file is an error, and counted.
    std::fs::remove_file(dir.file()).unwrap();
    dispatcher.stop_watching();
    let err = dispatcher.reload(true, Duration::ZERO).unwrap_err();
    assert!(matches!(&err, ReloadError::Read { path, .. } if path == &dir.file()), "{err}");
    assert_eq!(dispatcher.stats().failed_reloads, 1);
    assert_eq!(routed(&dispatcher), Some(kernels.ids[1]));
}

#[test]
fn an_invalid_file_is_refused_with_every_problem_and_the_old_policy_kept() {
    let dir = Scratch::new("hot_invalid");
    let kernels = kernels("hot_invalid", 2);
    save_initial(&dir, &kernels);
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&errors);
    dispatcher.on_error(move |error| seen.lock().unwrap().push(error.to_string()));

    std::fs::write(
        dir.file(),
        "version: \"1.0\"\ndispatch_rules:\n  - operation: rms_norm\n    conditions: {dtype: fp16}\n    kernel: hot_invalid_poison\n    priority: 2000\n",
    )
    .unwrap();
    let err = dispatcher.reload(true, Duration::ZERO).unwrap_err();
    let ReloadError::Invalid { path, errors: problems } = &err else { panic!("not Invalid: {err}") };
    assert_eq!(path, &dir.file());
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "dispatch_rules[0].conditions.dtype: Invalid dtype (fp16)",
            "dispatch_rules[0].priority: Must be between 0 and 1000 (2000)"
        ]
    );
    assert!(err.to_string().contains("4:25: dispatch_rules[0].conditions.dtype"), "{err}");
    assert_eq!(routed(&dispatcher), Some(kernels.ids[0]));

    // Schema-valid but naming an unregistered kernel: refused by validation ...
    std::fs::write(dir.file(), "version: \"1.0\"\nkernel_locks: {rms_norm: hot_invalid_nobody}\n").unwrap();
    let err = dispatcher.reload(true, Duration::ZERO).unwrap_err();
    let ReloadError::Invalid { errors: problems, .. } = &err else { panic!("not Invalid: {err}") };
    assert_eq!(problems[0].to_string(), "kernel_locks[\"rms_norm\"]: Kernel is not registered (hot_invalid_nobody)");
    assert_eq!(routed(&dispatcher), Some(kernels.ids[0]));
    // ... and applied without it (the lock then fails closed: no kernel runs).
    let version = dispatcher.reload(false, Duration::ZERO).unwrap();
    assert_eq!(version.version, 2);
    assert_eq!(routed(&dispatcher), None);

    let stats = dispatcher.stats();
    assert_eq!((stats.total_reloads, stats.failed_reloads), (3, 2));
    assert!(stats.last_error.unwrap().contains("hot_invalid_nobody"));
    assert_eq!(errors.lock().unwrap().len(), 2);
    assert_eq!(dispatcher.state(), ReloadState::Idle);
}

#[test]
fn the_watcher_reports_an_invalid_file_once_and_keeps_the_old_policy() {
    let dir = Scratch::new("hot_watch_invalid");
    let kernels = kernels("hot_watch_invalid", 2);
    save_initial(&dir, &kernels);
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    let errors = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&errors);
    dispatcher.on_error(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    dispatcher.watch_with(WatchOptions { poll_interval: Duration::from_millis(10), ..fast_watch(true) }).unwrap();
    save(&dir.file(), &invalid(kernels.poison, 0), Save::TempThenRename);
    wait_for(Duration::from_secs(5), "the error", || errors.load(Ordering::SeqCst) == 1);
    // Polls keep reading the same bad content: it is not reported again.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(errors.load(Ordering::SeqCst), 1);
    assert_eq!(dispatcher.stats().failed_reloads, 1);
    assert_eq!(dispatch_once(&dispatcher, &kernels).kernel_id, kernels.ids[0]);
    assert_eq!(kernels.poison_calls.load(Ordering::Relaxed), 0);
}

#[test]
fn rollback_restores_each_previous_config_under_a_new_version() {
    let dir = Scratch::new("hot_rollback");
    let kernels = kernels("hot_rollback", 3);
    save_initial(&dir, &kernels);
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    assert!(matches!(dispatcher.rollback(), Err(ReloadError::NothingToRollBack)));
    let v1 = dispatcher.current_version();
    std::fs::write(dir.file(), valid(kernels.ids[1], 2)).unwrap();
    let v2 = dispatcher.reload(true, Duration::ZERO).unwrap();
    std::fs::write(dir.file(), valid(kernels.ids[2], 3)).unwrap();
    let v3 = dispatcher.reload(true, Duration::ZERO).unwrap();
    assert_eq!((v1.version, v2.version, v3.version), (1, 2, 3));
    assert_eq!(v2.config_hash, ConfigHash::of(valid(kernels.ids[1], 2).as_bytes()));

    // A refused file is not a config: rollback skips nothing because of it.
    std::fs::write(dir.file(), invalid(kernels.poison, 0)).unwrap();
    dispatcher.reload(true, Duration::ZERO).unwrap_err();

    dispatcher.watch_with(WatchOptions { poll_interval: Duration::from_millis(10), ..fast_watch(true) }).unwrap();
    let v4 = dispatcher.rollback().unwrap();
    assert_eq!((v4.version, v4.restored_from, v4.config_hash), (4, Some(2), v2.config_hash));
    assert_eq!(routed(&dispatcher), Some(kernels.ids[1]));
    let v5 = dispatcher.rollback().unwrap();
    assert_eq!((v5.version, v5.restored_from, v5.config_hash), (5, Some(1), v1.config_hash));
    assert_eq!(dispatch_once(&dispatcher, &kernels).kernel_id, kernels.ids[0]);
    assert!(matches!(dispatcher.rollback(), Err(ReloadError::NothingToRollBack)));
    // The watcher does not undo a rollback: the file has not changed since it was read.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(dispatcher.current_version(), v5);
    let stats = dispatcher.stats();
    assert_eq!((stats.rollbacks, stats.current_version, stats.current_hash), (2, 5, v1.config_hash));

    // Only the last ROLLBACK_DEPTH configs are kept.
    for n in 0..ROLLBACK_DEPTH as u64 + 2 {
        std::fs::write(dir.file(), valid(kernels.ids[(n % 3) as usize], 10 + n)).unwrap();
        dispatcher.reload(true, Duration::ZERO).unwrap();
    }
    for _ in 0..ROLLBACK_DEPTH {
        dispatcher.rollback().unwrap();
    }
    assert!(matches!(dispatcher.rollback(), Err(ReloadError::NothingToRollBack)));
}

/// The callback test's panics are expected; keep their messages out of the output.
fn quiet_callback_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"a broken callback") {
                default(info);
            }
        }));
    });
}

/// Sets the flag when dropped, so that the load test's dispatching threads stop even
/// when the writer fails an assertion (the scope would otherwise wait for them forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn callbacks_see_every_version_in_order_and_every_error() {
    let dir = Scratch::new("hot_callbacks");
    let kernels = kernels("hot_callbacks", 2);
    save_initial(&dir, &kernels);
    let dispatcher = Arc::new(dispatcher_over(&kernels, &dir.file()));
    let versions: Arc<Mutex<Vec<ConfigVersion>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (seen_versions, seen_errors) = (Arc::clone(&versions), Arc::clone(&errors));
    dispatcher.on_reload(move |version| seen_versions.lock().unwrap().push(version));
    dispatcher.on_error(move |error| seen_errors.lock().unwrap().push(error.to_string()));
    // A callback that panics is caught; one that reloads is refused.
    dispatcher.on_reload(|_| panic!("a broken callback"));
    let inner: Arc<Mutex<Option<ReloadError>>> = Arc::default();
    let (weak, refused) = (Arc::downgrade(&dispatcher), Arc::clone(&inner));
    dispatcher.on_reload(move |_| {
        if let Some(dispatcher) = weak.upgrade() {
            *refused.lock().unwrap() = dispatcher.reload(true, Duration::ZERO).err();
        }
    });

    quiet_callback_panics();
    std::fs::write(dir.file(), valid(kernels.ids[1], 1)).unwrap();
    let v2 = dispatcher.reload(true, Duration::ZERO).unwrap();
    std::fs::write(dir.file(), invalid(kernels.poison, 1)).unwrap();
    dispatcher.reload(true, Duration::ZERO).unwrap_err();
    let v3 = dispatcher.rollback().unwrap();

    assert_eq!(*versions.lock().unwrap(), [v2, v3]);
    assert_eq!(v3.restored_from, Some(1));
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with(&format!("{}: ", dir.file().display())), "{}", errors[0]);
    assert!(matches!(*inner.lock().unwrap(), Some(ReloadError::CalledFromCallback)));
    assert_eq!(dispatcher.current_version(), v3);
}

#[test]
fn stats_count_reloads_and_time_them() {
    let dir = Scratch::new("hot_stats");
    let kernels = kernels("hot_stats", 2);
    save_initial(&dir, &kernels);
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    let initial = dispatcher.stats();
    assert_eq!((initial.total_reloads, initial.failed_reloads, initial.current_version), (0, 0, 1));
    assert_eq!(initial.last_reload_time_ms, 0.0);
    assert_eq!(initial.last_error, None);
    for n in 0..6u64 {
        let content = if n % 2 == 0 { valid(kernels.ids[(n / 2 % 2) as usize], n) } else { invalid(kernels.poison, n) };
        std::fs::write(dir.file(), content).unwrap();
        let _ = dispatcher.reload(true, Duration::ZERO);
    }
    let stats = dispatcher.stats();
    assert_eq!((stats.total_reloads, stats.failed_reloads, stats.rollbacks, stats.current_version), (6, 3, 0, 4));
    assert!(stats.last_reload_time_ms > 0.0 && stats.last_reload_time_ms < 1000.0);
    assert_eq!(stats.current_hash, dispatcher.current_version().config_hash);
    assert_eq!(dispatcher.mode(), layerzero::config::DispatchMode::HotReload);
    assert_eq!(dispatcher.state(), ReloadState::Idle);
}

#[test]
fn the_grace_period_waits_for_calls_started_on_the_old_config() {
    let dir = Scratch::new("hot_grace");
    let registry = Arc::new(KernelRegistry::new());
    // `hot_grace_slow` holds its call until released; `hot_grace_quick` returns at once.
    let release = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicBool::new(false));
    let (slow_release, slow_entered) = (Arc::clone(&release), Arc::clone(&entered));
    let slow = KernelImpl::norm(move |args: &mut NormArgs<'_>| {
        slow_entered.store(true, Ordering::SeqCst);
        while !slow_release.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        args.output.as_mut_slice::<f32>()?.fill(1.0);
        Ok(())
    });
    let quick = KernelImpl::norm(|args: &mut NormArgs<'_>| {
        args.output.as_mut_slice::<f32>()?.fill(2.0);
        Ok(())
    });
    for (id, code) in [("hot_grace_slow", slow), ("hot_grace_quick", quick)] {
        let spec = KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::NormRms);
        registry.register_with_impl(spec, code).unwrap();
    }
    let slow_id = KernelId::lookup("hot_grace_slow").unwrap();
    let quick_id = KernelId::lookup("hot_grace_quick").unwrap();
    std::fs::write(dir.file(), valid(slow_id, 0)).unwrap();
    let config = DispatchConfig::builder().config_path(Some(dir.file().display().to_string())).build().unwrap();
    let dispatcher = HotReloadDispatcher::new(registry, Arc::new(BackendRegistry::detect()), config, None).unwrap();
    let run = |dispatcher: &HotReloadDispatcher| {
        let input = Tensor::from_vec(vec![1f32; HIDDEN], &[1, HIDDEN]).unwrap();
        let weight = Tensor::from_vec(vec![1f32; HIDDEN], &[HIDDEN]).unwrap();
        let mut out = vec![0f32; HIDDEN];
        let output = TensorViewMut::from_slice(&mut out, &[1, HIDDEN]).unwrap();
        let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), output, 1e-6));
        let kernel = dispatcher.dispatch(RMS, &mut args, None).unwrap().kernel_id;
        (kernel, out[0])
    };

    std::thread::scope(|scope| {
        // A call starts on the old config and is held inside its kernel.
        let in_flight = scope.spawn(|| run(&dispatcher));
        wait_for(Duration::from_secs(5), "the call to start", || entered.load(Ordering::SeqCst));
        std::fs::write(dir.file(), valid(quick_id, 1)).unwrap();
        let reload = scope.spawn(|| {
            let started = Instant::now();
            let version = dispatcher.reload(true, Duration::from_secs(30)).unwrap();
            (version, started.elapsed())
        });
        // The new config is live at once (a new call runs the quick kernel) ...
        wait_for(Duration::from_secs(5), "the swap", || dispatcher.current_version().version == 2);
        assert_eq!(run(&dispatcher), (quick_id, 2.0));
        // ... but the reload waits for the call still running on the old one.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!reload.is_finished());
        assert_eq!(dispatcher.state(), ReloadState::Applying);
        release.store(true, Ordering::SeqCst);
        let (version, waited) = reload.join().unwrap();
        assert_eq!(version.version, 2);
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(30), "{waited:?}");
        // The held call finished on the config it started with.
        assert_eq!(in_flight.join().unwrap(), (slow_id, 1.0));
    });
    assert_eq!(dispatcher.stats().grace_period_timeouts, 0);

    // A grace period shorter than a held call ends the wait, and says so.
    release.store(false, Ordering::SeqCst);
    entered.store(false, Ordering::SeqCst);
    std::fs::write(dir.file(), valid(slow_id, 2)).unwrap();
    dispatcher.reload(true, Duration::ZERO).unwrap();
    std::thread::scope(|scope| {
        let in_flight = scope.spawn(|| run(&dispatcher));
        wait_for(Duration::from_secs(5), "the call to start", || entered.load(Ordering::SeqCst));
        std::fs::write(dir.file(), valid(quick_id, 3)).unwrap();
        let started = Instant::now();
        dispatcher.reload(true, Duration::from_millis(50)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        release.store(true, Ordering::SeqCst);
        assert_eq!(in_flight.join().unwrap(), (slow_id, 1.0));
    });
    assert_eq!(dispatcher.stats().grace_period_timeouts, 1);
}

#[test]
fn the_factory_watches_and_drop_stops_the_watcher() {
    let dir = Scratch::new("hot_factory");
    let kernels = kernels("hot_factory", 2);
    save_initial(&dir, &kernels);
    let config = DispatchConfig::builder().watch_interval_seconds(0.02).build().unwrap();
    let dispatcher = create_hot_reload_dispatcher(dir.file(), Arc::clone(&kernels.registry), config).unwrap();
    assert!(dispatcher.is_watching());
    assert_eq!(dispatcher.mode(), layerzero::config::DispatchMode::HotReload);
    assert_eq!(dispatcher.config_path(), dir.file());
    save(&dir.file(), &valid(kernels.ids[1], 1), Save::InPlace);
    wait_for(Duration::from_secs(5), "the reload", || routed(&dispatcher) == Some(kernels.ids[1]));
    // Dropping joins the watcher thread (it would hang here if the thread did not stop).
    drop(dispatcher);

    let missing =
        create_hot_reload_dispatcher(dir.0.join("nope.yaml"), Arc::clone(&kernels.registry), DispatchConfig::default());
    assert!(matches!(missing, Err(ReloadError::Read { .. })));
    let no_path = HotReloadDispatcher::new(
        Arc::clone(&kernels.registry),
        Arc::new(BackendRegistry::detect()),
        DispatchConfig::default(),
        None,
    );
    assert!(matches!(no_path, Err(ReloadError::NoConfigPath)));
}

/// Reloads in the load test: 1,000 by default; `LAYERZERO_HOT_RELOADS=10000` for more.
fn load_test_reloads() -> u64 {
    std::env::var("LAYERZERO_HOT_RELOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

#[test]
fn reloads_under_load_never_apply_an_invalid_config_and_no_dispatch_fails() {
    const THREADS: usize = 8;
    let reloads = load_test_reloads();
    let dir = Scratch::new("hot_load");
    let kernels = kernels("hot_load", 4);
    save_initial(&dir, &kernels);
    let dispatcher = dispatcher_over(&kernels, &dir.file());
    let versions: Arc<Mutex<Vec<ConfigVersion>>> = Arc::default();
    let seen = Arc::clone(&versions);
    dispatcher.on_reload(move |version| seen.lock().unwrap().push(version));
    dispatcher
        .watch_with(WatchOptions {
            poll_interval: Duration::from_millis(200),
            debounce: Duration::from_millis(3),
            use_notify: true,
            grace_period: Duration::ZERO,
        })
        .unwrap();
    let stop = AtomicBool::new(false);
    let dispatched = AtomicU64::new(0);
    let started = Instant::now();

    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // `dispatch_once` panics (failing the test) on an error, on a kernel
                    // of no valid config (the poison), or on a wrong output.
                    dispatch_once(&dispatcher, &kernels);
                    count += 1;
                    if count.is_multiple_of(64) {
                        // Leave the two cores some time for the watcher and the writer.
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                dispatched.fetch_add(count, Ordering::Relaxed);
            });
        }

        let _stop = StopOnDrop(&stop);
        let mut live = kernels.ids[0];
        let mut previous_live: Option<(KernelId, ConfigHash)> = None;
        for n in 0..reloads {
            let how = SAVES[(n / 2) as usize % SAVES.len()];
            let before = dispatcher.stats();
            if n % 2 == 0 {
                let kernel = kernels.ids[(n / 2 % 4) as usize];
                let kernel = if kernel == live { kernels.ids[(n / 2 % 4 + 1) as usize % 4] } else { kernel };
                let content = valid(kernel, n);
                let hash = ConfigHash::of(content.as_bytes());
                save(&dir.file(), &content, how);
                wait_for(Duration::from_secs(10), &format!("valid save {n} ({how:?})"), || {
                    dispatcher.stats().current_hash == hash
                });
                previous_live = Some((live, before.current_hash));
                live = kernel;
            } else {
                save(&dir.file(), &invalid(kernels.poison, n), how);
                wait_for(Duration::from_secs(10), &format!("invalid save {n} ({how:?})"), || {
                    dispatcher.stats().failed_reloads > before.failed_reloads
                });
            }
            assert_eq!(routed(&dispatcher), Some(live), "after save {n} ({how:?})");
            // Every 50th save, step back to the previous config, then on: the next valid
            // save replaces it.
            if n % 50 == 48
                && let Some((kernel, hash)) = previous_live
            {
                let version = dispatcher.rollback().unwrap();
                assert_eq!(version.config_hash, hash);
                assert_eq!(routed(&dispatcher), Some(kernel));
                live = kernel;
            }
        }
    });

    let elapsed = started.elapsed();
    let stats = dispatcher.stats();
    let versions = versions.lock().unwrap();
    assert!(versions.windows(2).all(|pair| pair[0].version < pair[1].version), "versions strictly increase");
    let successes = stats.total_reloads - stats.failed_reloads;
    assert_eq!(successes, reloads / 2 + reloads % 2);
    // Each invalid save was refused at least once (a torn read of a save may add a refusal).
    assert!(stats.failed_reloads >= reloads / 2, "{stats:?}");
    assert_eq!(stats.current_version, 1 + successes + stats.rollbacks);
    assert_eq!(versions.len() as u64, successes + stats.rollbacks);
    assert_eq!(kernels.poison_calls.load(Ordering::Relaxed), 0);
    let telemetry = dispatcher.telemetry();
    assert_eq!(telemetry.error_count, 0);
    assert_eq!(telemetry.dispatch_count, dispatched.load(Ordering::Relaxed));
    eprintln!(
        "{reloads} saves ({} refused reads, {} rollbacks) in {elapsed:.1?} while {THREADS} threads made {} dispatches",
        stats.failed_reloads,
        stats.rollbacks,
        dispatched.load(Ordering::Relaxed)
    );
}
