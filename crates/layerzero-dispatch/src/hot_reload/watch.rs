//! The watcher thread: file-system events (`notify`, on the file's directory) and a poll
//! of the file's content, debounced, feeding [`HotReload::reload_if_changed`].

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::{HotReload, ReloadError};

/// How [`HotReloadDispatcher::watch_with`](super::HotReloadDispatcher::watch_with) watches
/// the rules file.
///
/// ```
/// use std::time::Duration;
/// use layerzero_dispatch::WatchOptions;
///
/// let options = WatchOptions { poll_interval: Duration::from_millis(500), ..WatchOptions::default() };
/// assert_eq!(options.debounce, Duration::from_millis(50));
/// assert!(options.use_notify);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// How often the file's content is read and compared with the last seen, whatever the
    /// events say: the fallback where file-system events do not arrive (network file
    /// systems, containers, an exhausted inotify limit). Default 1 s; `watch()` uses the
    /// config's `watch_interval_seconds`.
    pub poll_interval: Duration,
    /// How long events must pause before the file is read, so that one save (which is
    /// several events) makes one reload. Default 50 ms.
    pub debounce: Duration,
    /// Listen for file-system events through `notify` (default `true`); off, the poll
    /// alone finds changes.
    pub use_notify: bool,
    /// The grace period of the watcher's reloads (default zero: no wait; the swap is
    /// atomic regardless).
    pub grace_period: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(1),
            debounce: Duration::from_millis(50),
            use_notify: true,
            grace_period: Duration::ZERO,
        }
    }
}

enum Message {
    /// An event touched the file.
    Changed,
    /// Stop the thread.
    Stop,
}

/// A running watcher; stopping (or dropping) it joins its thread.
pub(crate) struct Watcher {
    messages: Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub(crate) fn start(shared: Arc<HotReload>, options: WatchOptions) -> Result<Watcher, ReloadError> {
        let path = shared.path.clone();
        let watch_error = |message: String| ReloadError::Watch { path: path.clone(), message };
        let name = path.file_name().map(OsString::from).ok_or_else(|| watch_error("not a file path".into()))?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let (messages, inbox) = mpsc::channel();
        let events = options.use_notify.then(|| listen(&path, &directory, name, messages.clone())).flatten();
        let thread = std::thread::Builder::new()
            .name("layerzero-hot-reload".into())
            .spawn(move || run(&shared, &inbox, events, options))
            .map_err(|e| watch_error(e.to_string()))?;
        Ok(Watcher { messages, thread: Some(thread) })
    }

    pub(crate) fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        // The thread may have ended already (its inbox then is gone); either way, join it.
        let _ = self.messages.send(Message::Stop);
        let Some(thread) = self.thread.take() else { return };
        // A callback running on the watcher thread may stop the watcher (or drop the
        // dispatcher); the thread cannot join itself, and ends once the callback returns.
        if thread.thread().id() == std::thread::current().id() {
            return;
        }
        if thread.join().is_err() {
            tracing::warn!("the hot-reload watcher thread panicked");
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.join();
    }
}

/// Starts `notify` on the file's directory (not the file: an editor that renames or
/// deletes the file would end a watch on the file itself), forwarding events that touch
/// `name`. When the file is a symbolic link, every change in its directory is forwarded
/// (Kubernetes swaps a `..data` link beside it, and no event names the file), and the
/// directory of the link's target is watched too. `None`, with a warning, where events
/// cannot be had: the poll still runs.
fn listen(path: &Path, directory: &Path, name: OsString, messages: Sender<Message>) -> Option<RecommendedWatcher> {
    let linked = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let handler = move |event: notify::Result<Event>| {
        let relevant = match event {
            Ok(event) => touches(&event, (!linked).then_some(&name)),
            // Events may have been lost (a queue overflow): look at the file.
            Err(_) => true,
        };
        if relevant {
            // The watcher thread may be stopping; a lost event then does not matter.
            let _ = messages.send(Message::Changed);
        }
    };
    let started = notify::recommended_watcher(handler)
        .and_then(|mut watcher| watcher.watch(directory, RecursiveMode::NonRecursive).map(|()| watcher));
    let mut watcher = match started {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(directory = %directory.display(), %error, "no file-system events; polling only");
            return None;
        }
    };
    let target_directory = linked.then(|| std::fs::canonicalize(path).ok()).flatten();
    if let Some(target) = target_directory.as_deref().and_then(Path::parent)
        && std::fs::canonicalize(directory).ok().as_deref() != Some(target)
        && let Err(error) = watcher.watch(target, RecursiveMode::NonRecursive)
    {
        tracing::warn!(directory = %target.display(), %error, "no events from the link's target directory");
    }
    Some(watcher)
}

/// Whether `event` may have changed the file: anything but reads (our own reads are
/// events too) on a path called `name` (any path when `name` is `None`), or a rescan
/// request.
fn touches(event: &Event, name: Option<&OsString>) -> bool {
    let read_only = matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write));
    if read_only {
        return false;
    }
    let named = |path: &PathBuf| name.is_none_or(|name| path.file_name() == Some(name.as_os_str()));
    event.need_rescan() || event.paths.iter().any(named)
}

/// What one look at the file found.
enum Look {
    /// Read whole: size and modification time were the same before and after.
    Read(Vec<u8>),
    /// Not there (deleted, or renamed away mid-save): wait for it to come back.
    Missing,
    /// Changing while read: look again after the debounce.
    Changing,
    /// Cannot be read.
    Failed(std::io::Error),
}

fn look(path: &Path) -> Look {
    let stamp = |metadata: std::fs::Metadata| (metadata.len(), metadata.modified().ok());
    let outcome = std::fs::metadata(path)
        .and_then(|before| Ok((stamp(before), std::fs::read(path)?, stamp(std::fs::metadata(path)?))));
    match outcome {
        Ok((before, bytes, after)) if before == after && after.0 == bytes.len() as u64 => Look::Read(bytes),
        Ok(_) => Look::Changing,
        Err(error) if error.kind() == ErrorKind::NotFound => Look::Missing,
        Err(error) => Look::Failed(error),
    }
}

/// The watcher loop: debounce events, poll, reload what changed, until told to stop.
fn run(shared: &HotReload, inbox: &mpsc::Receiver<Message>, events: Option<RecommendedWatcher>, options: WatchOptions) {
    // Owned here so that `notify`'s own thread stops when this loop ends.
    let _events = events;
    let poll_interval = options.poll_interval.max(Duration::from_millis(1));
    // A burst of events is read `debounce` after its last event, but no later than
    // `MAX_DEBOUNCES` debounces after its first, so that a file written without pause
    // is still read.
    const MAX_DEBOUNCES: u32 = 10;
    let mut burst: Option<(Instant, Instant)> = None;
    let mut next_poll = Instant::now();
    let mut reported_failure: Option<String> = None;
    loop {
        let now = Instant::now();
        let wake = burst.map_or(next_poll, |(_, due)| due.min(next_poll));
        match inbox.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Message::Changed) => {
                let now = Instant::now();
                let first = burst.map_or(now, |(first, _)| first);
                let due = (now + options.debounce).min(first + options.debounce * MAX_DEBOUNCES);
                burst = Some((first, due));
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Checked after every message too, so that events without pause still end in a read.
        let now = Instant::now();
        let burst_due = burst.is_some_and(|(_, due)| now >= due);
        let poll_due = now >= next_poll;
        if !burst_due && !poll_due {
            continue;
        }
        if poll_due {
            next_poll = now + poll_interval;
        }
        burst = None;
        match look(&shared.path) {
            Look::Read(source) => {
                reported_failure = None;
                // Failures are counted and reported inside.
                let _ = shared.reload_if_changed(&source, options.grace_period);
            }
            Look::Missing => {}
            Look::Changing => burst = Some((now, now + options.debounce)),
            Look::Failed(error) => {
                // Reported once until the file reads again, not at every poll.
                let message = error.to_string();
                if reported_failure.as_ref() != Some(&message) {
                    reported_failure = Some(message);
                    shared.report_read_failure(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_changes_to_the_file_itself_count() {
        let name = OsString::from("kernels.yaml");
        let name = Some(&name);
        let file = "/etc/lz/kernels.yaml";
        assert!(touches(&event(EventKind::Create(CreateKind::File), file), name));
        assert!(touches(&event(EventKind::Modify(ModifyKind::Any), file), name));
        assert!(touches(&event(EventKind::Remove(RemoveKind::File), file), name));
        assert!(touches(&event(EventKind::Access(AccessKind::Close(AccessMode::Write)), file), name));
        // A rename onto the file names both paths.
        let rename = event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), "/etc/lz/.kernels.yaml.tmp")
            .add_path(PathBuf::from(file));
        assert!(touches(&rename, name));
        // Our own reads, and other files of the directory, do not.
        assert!(!touches(&event(EventKind::Access(AccessKind::Open(AccessMode::Any)), file), name));
        assert!(!touches(&event(EventKind::Access(AccessKind::Close(AccessMode::Read)), file), name));
        assert!(!touches(&event(EventKind::Modify(ModifyKind::Any), "/etc/lz/.kernels.yaml.tmp"), name));
        // For a linked file, any change in the directory counts (Kubernetes' `..data` swap).
        let swap = event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), "/etc/lz/..data_tmp")
            .add_path(PathBuf::from("/etc/lz/..data"));
        assert!(touches(&swap, None));
        assert!(!touches(&swap, name));
        assert!(!touches(&event(EventKind::Access(AccessKind::Open(AccessMode::Any)), file), None));
    }
}
