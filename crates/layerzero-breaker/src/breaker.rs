//! [`CircuitBreaker`]: the state machine on one atomic word, its permits, statistics and
//! listeners.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, MonotonicClock, saturating_nanos};
use crate::config::{CircuitBreakerConfig, Settings};
use crate::counters::{Counter, Counters};
use crate::error::BreakerError;
use crate::sync::{AtomicU64, Mutex, Ordering, RwLock, lock};
use crate::word::{GEN_MASK, Kind, Word};

/// How many transitions [`CircuitStats::recent_transitions`] keeps.
pub const RECENT_TRANSITIONS: usize = 64;

/// The three states of seed 003's `CircuitState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CircuitState {
    /// Calls run; consecutive failures are counted.
    Closed,
    /// Calls are refused (until the cooldown ends, or until `reset` when forced open).
    Open,
    /// A limited number of trial calls run to probe whether the kernel has recovered.
    HalfOpen,
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "CLOSED",
            CircuitState::Open => "OPEN",
            CircuitState::HalfOpen => "HALF_OPEN",
        })
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// CLOSED → OPEN: `failure_threshold` consecutive failures.
    FailureThreshold,
    /// OPEN → HALF_OPEN: the cooldown ended and a call (or `state()`) arrived.
    CooldownElapsed,
    /// HALF_OPEN → OPEN: a trial call failed.
    TrialFailed,
    /// HALF_OPEN → CLOSED: `success_threshold` trial calls succeeded.
    SuccessThreshold,
    /// OPEN or HALF_OPEN → CLOSED: `reset_timeout_seconds` passed since the breaker opened.
    ResetTimeout,
    /// → OPEN by [`CircuitBreaker::force_open`].
    ForcedOpen,
    /// → CLOSED by [`CircuitBreaker::reset`].
    Reset,
}

/// One state change, as given to listeners and kept in the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
    /// When, on the breaker's [`Clock`].
    pub at: Duration,
    /// Why.
    pub reason: TransitionReason,
    /// The episode entered: one more than the last (wrapping at 2^30). Orders transitions
    /// that reach listeners from different threads out of order.
    pub generation: u32,
}

/// A snapshot of a breaker's state and statistics (seed 003's `stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitStats {
    /// The breaker's name (the kernel id in a registry).
    pub name: String,
    /// The state, after any transition the clock has made due.
    pub state: CircuitState,
    /// Whether the breaker is OPEN by [`CircuitBreaker::force_open`].
    pub forced_open: bool,
    /// Consecutive failures counted toward opening (CLOSED; 0 otherwise).
    pub failure_count: u32,
    /// Trial successes counted toward closing (HALF_OPEN; 0 otherwise).
    pub success_count: u32,
    /// Trial calls in flight (HALF_OPEN; 0 otherwise).
    pub trial_calls_in_flight: u32,
    /// Calls admitted, in all states.
    pub calls: u64,
    /// Calls recorded as successes.
    pub successes: u64,
    /// Calls recorded as failures (a permit dropped while its thread panics counts here).
    pub failures: u64,
    /// Permits dropped without a verdict.
    pub released: u64,
    /// Calls refused.
    pub rejections: u64,
    /// State changes since the breaker was made.
    pub transitions: u64,
    /// The last [`RECENT_TRANSITIONS`] state changes, oldest first.
    pub recent_transitions: Vec<Transition>,
    /// Listener calls that panicked (the panic is caught; the transition stands).
    pub listener_panics: u64,
}

type Listener = Arc<dyn Fn(&Transition) + Send + Sync>;

#[derive(Default)]
struct History {
    recent: VecDeque<Transition>,
    total: u64,
    listener_panics: u64,
}

impl History {
    /// Inserts `transition` in generation order: two transitions made on different threads
    /// can reach this lock in either order.
    fn insert(&mut self, transition: Transition) {
        let later = |a: u32, b: u32| a != b && (a.wrapping_sub(b) & GEN_MASK) < (GEN_MASK / 2);
        let mut at = self.recent.len();
        while at > 0 && self.recent.get(at - 1).is_some_and(|t| later(t.generation, transition.generation)) {
            at -= 1;
        }
        self.recent.insert(at, transition);
        if self.recent.len() > RECENT_TRANSITIONS {
            self.recent.pop_front();
        }
        self.total += 1;
    }
}

/// What a finished call reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    /// A permit dropped without a verdict, outside a panic.
    Release,
}

/// A circuit breaker for one kernel (seed 003's `CircuitBreaker`). See the crate docs for the
/// exact state machine.
///
/// All methods take `&self` and are safe to call from any number of threads. The state lives
/// in one atomic word; statistics are kept per thread; a lock is taken only to log a
/// transition and to add or call listeners.
pub struct CircuitBreaker {
    /// The state word (see `word.rs`). Read on every call, written only when something
    /// changes: a failure, a trial call, a transition.
    word: AtomicU64,
    /// When the breaker last opened, in clock nanoseconds. Only ever raised (`fetch_max`),
    /// always before the CAS that publishes an OPEN word, so that a thread which sees that
    /// word also sees this time or a later one.
    opened_at: AtomicU64,
    settings: Settings,
    config: CircuitBreakerConfig,
    counters: Counters,
    history: Mutex<History>,
    listeners: RwLock<Vec<Listener>>,
    clock: Arc<dyn Clock>,
    name: Box<str>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.load();
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &word.kind().public())
            .field("generation", &word.generation())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A CLOSED breaker named `name` on the real clock.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> Result<CircuitBreaker, BreakerError> {
        Self::with_clock(name, config, Arc::new(MonotonicClock::new()))
    }

    /// A CLOSED breaker that reads time from `clock` (a [`ManualClock`](crate::ManualClock)
    /// in tests).
    pub fn with_clock(
        name: impl Into<String>,
        config: CircuitBreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<CircuitBreaker, BreakerError> {
        let settings = config.settings()?;
        Ok(Self::from_settings(name.into().into_boxed_str(), config, settings, clock))
    }

    pub(crate) fn from_settings(
        name: Box<str>,
        config: CircuitBreakerConfig,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> CircuitBreaker {
        CircuitBreaker {
            word: AtomicU64::new(Word::INITIAL.0),
            opened_at: AtomicU64::new(0),
            settings,
            config,
            counters: Counters::new(),
            history: Mutex::new(History::default()),
            listeners: RwLock::new(Vec::new()),
            clock,
            name,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// Asks to run one call. `Ok` holds a permit: report the call's outcome with
    /// [`CallPermit::record_success`] or [`CallPermit::record_failure`] (dropping it without
    /// one releases it; see the crate docs). `Err` is [`BreakerError::CircuitOpen`].
    ///
    /// Cost when CLOSED: one atomic load of the state word and one store to a counter that
    /// only this thread writes; no allocation, no lock, no shared write.
    #[inline]
    pub fn try_acquire(&self) -> Result<CallPermit<'_>, BreakerError> {
        let word = self.load();
        if word.is_closed() {
            self.counters.bump(Counter::Calls);
            return Ok(CallPermit::new(self, word.generation(), false));
        }
        self.acquire_slow(word)
    }

    /// [`try_acquire`](Self::try_acquire) without the reason for a refusal: `None` when the
    /// call may not run. The same cost; the small return value stays in registers, which
    /// matters on a dispatcher's hot path.
    #[inline]
    pub fn try_permit(&self) -> Option<CallPermit<'_>> {
        let word = self.load();
        if word.is_closed() {
            self.counters.bump(Counter::Calls);
            return Some(CallPermit::new(self, word.generation(), false));
        }
        self.acquire_slow(word).ok()
    }

    /// Seed 003's `allow_request`: `true` if a call may run now. The caller must then call
    /// [`record_success`](Self::record_success) or [`record_failure`](Self::record_failure)
    /// once; in HALF_OPEN the admitted call holds one of the `half_open_max_calls` trial
    /// places until it does. Prefer [`try_acquire`](Self::try_acquire), whose permit cannot
    /// leak a trial place.
    pub fn allow_request(&self) -> bool {
        self.try_acquire().map(CallPermit::detach).is_ok()
    }

    /// Records a successful call admitted by [`allow_request`](Self::allow_request), as a
    /// call of the current episode.
    pub fn record_success(&self) {
        self.settle(None, Verdict::Success);
    }

    /// Records a failed call admitted by [`allow_request`](Self::allow_request), as a call
    /// of the current episode.
    pub fn record_failure(&self) {
        self.settle(None, Verdict::Failure);
    }

    /// The state now. An OPEN breaker whose cooldown (or reset timeout) has passed makes that
    /// transition here, as a call would, so the answer is the state the next call meets.
    pub fn state(&self) -> CircuitState {
        self.advance().kind().public()
    }

    /// Consecutive failures counted toward opening (seed 003's `failure_count`); 0 unless
    /// CLOSED.
    pub fn failure_count(&self) -> u32 {
        let word = self.load();
        if word.kind() == Kind::Closed { word.a() } else { 0 }
    }

    /// Trial successes counted toward closing (seed 003's `success_count`); 0 unless
    /// HALF_OPEN.
    pub fn success_count(&self) -> u32 {
        let word = self.load();
        if word.kind() == Kind::HalfOpen { word.b() } else { 0 }
    }

    /// Opens the breaker until [`reset`](Self::reset): no cooldown or reset timeout ends it.
    pub fn force_open(&self) {
        let mut word = self.load();
        let now = self.now_ns();
        loop {
            if word.kind() == Kind::ForcedOpen {
                return;
            }
            let next = word.next(Kind::ForcedOpen);
            match self.publish(word, next, Some(now)) {
                Ok(()) => return self.transitioned(word, next, now, TransitionReason::ForcedOpen),
                Err(actual) => word = actual,
            }
        }
    }

    /// Closes the breaker (seed 003's `reset_circuit`): OPEN or HALF_OPEN (forced or not)
    /// becomes CLOSED, a transition after which earlier permits no longer affect the state; a
    /// CLOSED breaker only has its failure count cleared. Statistics are kept.
    pub fn reset(&self) {
        let mut word = self.load();
        loop {
            let (next, transition) = match word.kind() {
                Kind::Closed if word.a() == 0 => return,
                Kind::Closed => (word.with_counts(0, 0), false),
                _ => (word.next(Kind::Closed), true),
            };
            match self.publish(word, next, None) {
                Ok(()) if transition => {
                    return self.transitioned(word, next, self.now_ns(), TransitionReason::Reset);
                }
                Ok(()) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Adds a listener called after every state change (seed 003's `add_listener`).
    ///
    /// Listeners run on the thread that made the change, after it took effect, outside any
    /// lock (a listener may call back into the breaker). Changes made on different threads
    /// in quick succession may reach listeners out of order: [`Transition::generation`]
    /// orders them. A panicking listener is caught and counted in
    /// [`CircuitStats::listener_panics`].
    pub fn add_listener(&self, listener: impl Fn(&Transition) + Send + Sync + 'static) {
        self.listeners.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Arc::new(listener));
    }

    /// A snapshot of the state and statistics. Counters are summed from per-thread slots:
    /// exact once the threads that used the breaker have finished, within a few calls of
    /// exact while they run.
    pub fn stats(&self) -> CircuitStats {
        let word = self.advance();
        let totals = self.counters.totals();
        let history = lock(&self.history);
        CircuitStats {
            name: self.name.to_string(),
            state: word.kind().public(),
            forced_open: word.kind() == Kind::ForcedOpen,
            failure_count: if word.kind() == Kind::Closed { word.a() } else { 0 },
            success_count: if word.kind() == Kind::HalfOpen { word.b() } else { 0 },
            trial_calls_in_flight: if word.kind() == Kind::HalfOpen { word.a() } else { 0 },
            calls: totals.calls,
            successes: totals.successes,
            failures: totals.failures,
            released: totals.released,
            rejections: totals.rejections,
            transitions: history.total,
            recent_transitions: history.recent.iter().copied().collect(),
            listener_panics: history.listener_panics,
        }
    }

    #[inline]
    fn load(&self) -> Word {
        // Acquire: pairs with the Release half of the CAS that stored this word, so that the
        // `opened_at` written before that CAS is visible to whoever acts on the word. On x86
        // this is the same plain `mov` as a Relaxed load.
        Word(self.word.load(Ordering::Acquire))
    }

    fn now_ns(&self) -> u64 {
        saturating_nanos(self.clock.now())
    }

    /// Replaces `from` by `to` if the word still holds `from`; returns the word found if not.
    /// `opened_at` is raised first when `to` opens the breaker.
    fn publish(&self, from: Word, to: Word, now: Option<u64>) -> Result<(), Word> {
        if let (Kind::Open | Kind::ForcedOpen, Some(now)) = (to.kind(), now) {
            // Relaxed: the CAS below (Release) publishes it. Raised even if the CAS then
            // fails; a raise only delays the end of a cooldown (never hastens it), and only by
            // as long as this thread took between reading the clock and losing the race.
            self.opened_at.fetch_max(now, Ordering::Relaxed);
        }
        // AcqRel on success: Release publishes `opened_at` and orders this transition before
        // whatever a thread that sees the new word does; Acquire orders the log entry and
        // listener calls that follow after the transitions before it. Acquire on failure: the
        // word found is acted on like any loaded word (see `load`).
        self.word.compare_exchange_weak(from.0, to.0, Ordering::AcqRel, Ordering::Acquire).map(|_| ()).map_err(Word)
    }

    /// The time-driven transition due for `word` (OPEN or HALF_OPEN), reading the clock at
    /// most once per call through `now`.
    fn due(&self, word: Word, now: &mut Option<u64>) -> Option<(Word, TransitionReason)> {
        let kind = word.kind();
        if !(kind == Kind::Open || kind == Kind::HalfOpen && self.settings.reset_timeout_ns.is_some()) {
            return None;
        }
        let elapsed = self.elapsed_since_open(*now.get_or_insert_with(|| self.now_ns()));
        if self.settings.reset_timeout_ns.is_some_and(|reset| elapsed >= reset) {
            return Some((word.next(Kind::Closed), TransitionReason::ResetTimeout));
        }
        if kind == Kind::Open && elapsed >= self.settings.cooldown_ns {
            return Some((word.next(Kind::HalfOpen), TransitionReason::CooldownElapsed));
        }
        None
    }

    fn elapsed_since_open(&self, now: u64) -> u64 {
        // Relaxed: the caller loaded the word with Acquire, which ordered this load after the
        // raise that the opening CAS published; a later raise only makes `elapsed` smaller.
        now.saturating_sub(self.opened_at.load(Ordering::Relaxed))
    }

    /// Makes every due time-driven transition; returns the word after them.
    fn advance(&self) -> Word {
        let mut word = self.load();
        let mut now = None;
        while let Some((next, reason)) = self.due(word, &mut now) {
            let at = now.unwrap_or_default();
            match self.publish(word, next, None) {
                Ok(()) => {
                    self.transitioned(word, next, at, reason);
                    word = next;
                }
                Err(actual) => word = actual,
            }
        }
        word
    }

    #[cold]
    fn acquire_slow(&self, mut word: Word) -> Result<CallPermit<'_>, BreakerError> {
        let mut now = None;
        loop {
            if let Some((next, reason)) = self.due(word, &mut now) {
                let at = now.unwrap_or_default();
                match self.publish(word, next, None) {
                    Ok(()) => {
                        self.transitioned(word, next, at, reason);
                        word = next;
                    }
                    Err(actual) => word = actual,
                }
                continue;
            }
            match word.kind() {
                Kind::Closed => {
                    self.counters.bump(Counter::Calls);
                    return Ok(CallPermit::new(self, word.generation(), false));
                }
                Kind::ForcedOpen => return Err(self.reject(CircuitState::Open, None)),
                Kind::Open => {
                    // `due` read the clock: the cooldown has not ended.
                    let elapsed = self.elapsed_since_open(now.unwrap_or_default());
                    let left = self.settings.cooldown_ns.saturating_sub(elapsed);
                    return Err(self.reject(CircuitState::Open, Some(Duration::from_nanos(left))));
                }
                Kind::HalfOpen => {
                    let in_flight = word.a();
                    if in_flight >= self.settings.half_open_max_calls {
                        return Err(self.reject(CircuitState::HalfOpen, None));
                    }
                    match self.publish(word, word.with_counts(in_flight + 1, word.b()), None) {
                        Ok(()) => {
                            self.counters.bump(Counter::Calls);
                            return Ok(CallPermit::new(self, word.generation(), true));
                        }
                        Err(actual) => word = actual,
                    }
                }
            }
        }
    }

    fn reject(&self, state: CircuitState, retry_after: Option<Duration>) -> BreakerError {
        self.counters.bump(Counter::Rejections);
        BreakerError::CircuitOpen { state, retry_after }
    }

    /// Applies a call's verdict. `episode` is the generation that admitted the call, or
    /// `None` for the free-standing `record_*` calls, which act on the current episode.
    fn settle(&self, episode: Option<u32>, verdict: Verdict) {
        self.counters.bump(match verdict {
            Verdict::Success => Counter::Successes,
            Verdict::Failure => Counter::Failures,
            Verdict::Release => Counter::Released,
        });
        self.apply(episode, verdict, self.load());
    }

    /// The state-machine half of `settle`, from a word already loaded.
    fn apply(&self, episode: Option<u32>, verdict: Verdict, mut word: Word) {
        let mut now = None;
        loop {
            if episode.is_some_and(|generation| generation != word.generation()) {
                // The episode that admitted the call is over: counted above, nothing else.
                return;
            }
            let (next, reason) = match (word.kind(), verdict) {
                // The common case: no failures to clear, so nothing is written.
                (Kind::Closed, Verdict::Success) if word.a() == 0 => return,
                (Kind::Closed, Verdict::Success) => (word.with_counts(0, 0), None),
                (Kind::Closed, Verdict::Failure) => {
                    let failures = word.a() + 1;
                    if failures >= self.settings.failure_threshold {
                        (word.next(Kind::Open), Some(TransitionReason::FailureThreshold))
                    } else {
                        (word.with_counts(failures, 0), None)
                    }
                }
                (Kind::Closed, Verdict::Release) => return,
                (Kind::HalfOpen, Verdict::Success) => {
                    let successes = word.b() + 1;
                    if successes >= self.settings.success_threshold {
                        (word.next(Kind::Closed), Some(TransitionReason::SuccessThreshold))
                    } else {
                        (word.with_counts(word.a().saturating_sub(1), successes), None)
                    }
                }
                (Kind::HalfOpen, Verdict::Failure) => (word.next(Kind::Open), Some(TransitionReason::TrialFailed)),
                (Kind::HalfOpen, Verdict::Release) => (word.with_counts(word.a().saturating_sub(1), word.b()), None),
                (Kind::Open | Kind::ForcedOpen, _) => return,
            };
            if reason.is_some() && now.is_none() {
                now = Some(self.now_ns());
            }
            match self.publish(word, next, now) {
                Ok(()) => {
                    if let (Some(reason), Some(at)) = (reason, now) {
                        self.transitioned(word, next, at, reason);
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Logs a transition this thread made, then tells the listeners.
    fn transitioned(&self, from: Word, to: Word, at: u64, reason: TransitionReason) {
        let transition = Transition {
            from: from.kind().public(),
            to: to.kind().public(),
            at: Duration::from_nanos(at),
            reason,
            generation: to.generation(),
        };
        lock(&self.history).insert(transition);
        // Cloned so that no lock is held while user code runs (a listener may add a listener).
        let listeners: Vec<Listener> = self.listeners.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let panics = listeners
            .iter()
            .filter(|listener| catch_unwind(AssertUnwindSafe(|| listener(&transition))).is_err())
            .count();
        if panics > 0 {
            lock(&self.history).listener_panics += panics as u64;
        }
    }
}

/// The right to run one call, from [`CircuitBreaker::try_acquire`].
///
/// Settle it with [`record_success`](Self::record_success) or
/// [`record_failure`](Self::record_failure). Dropped without either, it counts as a
/// *failure* if its thread is panicking (the call blew up) and as a *release* otherwise (the
/// call did not run): a released trial permit gives its HALF_OPEN place back and counts
/// neither way. A verdict reported after the episode that admitted the call has ended
/// (the breaker opened, closed or was reset meanwhile) is counted in the statistics only.
#[must_use = "dropping a permit at once releases it; run the call, then record its outcome"]
pub struct CallPermit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u32,
    trial: bool,
    settled: bool,
}

impl fmt::Debug for CallPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit")
            .field("breaker", &self.breaker.name())
            .field("generation", &self.generation)
            .field("trial", &self.trial)
            .finish()
    }
}

impl<'a> CallPermit<'a> {
    #[inline]
    fn new(breaker: &'a CircuitBreaker, generation: u32, trial: bool) -> Self {
        CallPermit { breaker, generation, trial, settled: false }
    }

    /// Whether this is a HALF_OPEN trial call (else it was admitted while CLOSED).
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The episode that admitted the call: the [`Transition::generation`] of the
    /// transition into the state it was admitted in (0 for a breaker's first CLOSED).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The call succeeded. Cost when CLOSED with no failures counted: one atomic load and one
    /// store to a counter only this thread writes.
    #[inline(always)]
    pub fn record_success(mut self) {
        self.settled = true;
        let breaker = self.breaker;
        breaker.counters.bump(Counter::Successes);
        let word = breaker.load();
        // The common case, inline: CLOSED, same episode, no failures to clear, nothing to write.
        if !(word.is_closed() && word.a() == 0 && word.generation() == self.generation) {
            breaker.apply(Some(self.generation), Verdict::Success, word);
        }
    }

    /// The call failed.
    pub fn record_failure(mut self) {
        self.settled = true;
        self.breaker.settle(Some(self.generation), Verdict::Failure);
    }

    /// Gives the permit back without a verdict (what dropping it does outside a panic).
    pub fn release(self) {}

    /// Forgets the permit; the caller reports through the breaker's free-standing
    /// `record_*` methods instead (for [`CircuitBreaker::allow_request`]).
    fn detach(mut self) {
        self.settled = true;
    }
}

impl Drop for CallPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.settled {
            let verdict = if std::thread::panicking() { Verdict::Failure } else { Verdict::Release };
            self.breaker.settle(Some(self.generation), verdict);
        }
    }
}

#[cfg(test)]
mod tests;
