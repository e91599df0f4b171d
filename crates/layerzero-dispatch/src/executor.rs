//! The executor: runs a chain of kernels (the chosen one, then its fallbacks) behind their
//! circuit breakers, catching panics, within the fallback budget, and records the outcome.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The clock of the fallback budget (off the hot path): `quanta`'s.
pub(crate) use quanta::Instant;

/// A raw reading of the executor's clock, for a dispatch's timing: a timed dispatch reads
/// it three times, so each read is quanta's raw one, the time-stamp counter alone where
/// quanta uses it (`std::time::Instant` goes through `clock_gettime`, and
/// `quanta::Instant::now` adds a thread-local override check and a scaling), converted to
/// nanoseconds only for the differences recorded. Where the counter is unusable quanta
/// reads the OS clock, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tick(u64);

use layerzero_breaker::{CallPermit, CircuitBreakerConfig, CircuitBreakerRegistry, Clock};
use layerzero_config::DispatchConfig;
use layerzero_select::CacheOutcome;
use layerzero_types::{
    ArgsKind, Device, DispatchResult, DispatchTiming, KernelError, KernelId, KernelImpl, KernelResult, OpArgs,
    Operation,
};

use crate::telemetry::{AttemptOutcome, Telemetry};
use crate::transform::{KernelEntry, run_in_layout};
use crate::{AttemptError, DispatchError};

/// Waits until the work a kernel queued on its device is done: the hook behind
/// `sync_after_execution`.
///
/// With `sync_after_execution` on, the executor calls it after every kernel that returned
/// `Ok`, inside the same panic guard and before the clock is read, so the timing includes
/// the device's work and an asynchronous device error is that kernel's failure (breaker
/// counted, fallback tried). A CUDA backend implements it with a stream or context
/// synchronise. Without a hook the setting is a no-op: CPU kernels have finished when they
/// return. Installed per dispatcher (`set_device_sync`).
pub trait DeviceSync: Send + Sync {
    /// Blocks until `kernel`'s queued work is done; an error is the kernel's failure.
    fn synchronize(&self, kernel: KernelId) -> KernelResult;
}

/// A breaker's answer to a call (see [`Executor::acquire`]).
enum Admission<'b> {
    /// Run it; report to the permit when there is one (none when breakers are off).
    Admitted(Option<CallPermit<'b>>),
    /// Its breaker refused it.
    Refused,
}

/// What happened to a chain's first kernel before [`Executor::run_rest`] took over.
enum First<'b> {
    /// Not tried yet: it has no code, or needs a layout transform.
    Pending(KernelId, Option<&'b KernelEntry>),
    /// Its breaker refused it.
    Refused(KernelId),
    /// It ran and did not succeed (an error or a panic).
    Ran { kernel: KernelId, permit: Option<CallPermit<'b>>, outcome: std::thread::Result<Result<KernelResult, String>> },
}

/// Runs kernels for the dispatchers; one per dispatcher.
///
/// `repr(C)`: the flags, the clock's rate, the clock and the telemetry shards' pointer
/// (first in [`Telemetry`]) fill the first cache line (a test checks it), and the
/// breakers (line-aligned) start with what a permit reads; the rest is read off the
/// straight path. After a GPU launch these lines are cold, and each one a dispatch
/// touches is a miss.
#[repr(C, align(64))]
pub(crate) struct Executor {
    record_timing: bool,
    telemetry_enabled: bool,
    sync_after_execution: bool,
    enable_transforms: bool,
    enable_fallback: bool,
    log_fallbacks: bool,
    /// Nanoseconds per [`Tick`], times 2^32 (see [`nanos_between`](Self::nanos_between)).
    nanos_per_tick: u64,
    /// The clock [`Tick`]s are read from (quanta's, calibrated once per process).
    clock: quanta::Clock,
    telemetry: Telemetry,
    breakers: Option<DeviceBreakers>,
    max_fallback_attempts: u32,
    fallback_budget: Duration,
    device_sync: OnceLock<Arc<dyn DeviceSync>>,
}

/// The most CUDA devices with breakers of their own; `cuda:N` for N past this shares the
/// last device's breakers.
pub const MAX_CUDA_DEVICES: usize = 64;

/// Circuit breakers per (kernel, device): the host's, and each GPU's, made on first use.
/// A kernel that fails on one card opens its breaker there only.
// `repr(C, align(64))`: `cuda`, then the host registry's first segment (see
// `CircuitBreakerRegistry`), share the first cache line.
#[repr(C, align(64))]
pub(crate) struct DeviceBreakers {
    // On the heap: 64 empty registries are ~30 KiB, too much to build on a stack.
    cuda: Box<[OnceLock<CircuitBreakerRegistry>]>,
    host: CircuitBreakerRegistry,
}

impl DeviceBreakers {
    fn new(host: CircuitBreakerRegistry) -> DeviceBreakers {
        DeviceBreakers { host, cuda: (0..MAX_CUDA_DEVICES).map(|_| OnceLock::new()).collect() }
    }

    /// The breakers of `device`, made on first use (one atomic load after that).
    #[inline]
    pub(crate) fn of(&self, device: Device) -> &CircuitBreakerRegistry {
        match device {
            Device::Cpu => &self.host,
            Device::Cuda(ordinal) => {
                let slot = usize::from(ordinal).min(MAX_CUDA_DEVICES - 1);
                match self.cuda.get(slot) {
                    Some(registry) => registry.get_or_init(|| self.host.new_like()),
                    None => &self.host, // never: `cuda` has MAX_CUDA_DEVICES slots
                }
            }
        }
    }
}

/// The breaker settings a [`DispatchConfig`] implies: its `failure_threshold`, and its
/// `recovery_timeout_seconds` as the cooldown; the rest are the breaker's defaults.
pub fn breaker_config(config: &DispatchConfig) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: config.failure_threshold(),
        cooldown_seconds: config.recovery_timeout_seconds(),
        ..CircuitBreakerConfig::default()
    }
}

impl Executor {
    /// An executor with `config`'s fallback, timing, telemetry and breaker settings;
    /// breakers read time from `clock` when one is given.
    pub(crate) fn new(config: &DispatchConfig, clock: Option<Arc<dyn Clock>>) -> Result<Executor, DispatchError> {
        // Making quanta's clock calibrates it against the OS clock (10–20 ms typically,
        // 200 ms at most, once per process): here, not in the first timed call.
        let timing_clock = quanta::Clock::new();
        // The clock's own scaling of 2^32 ticks: its rate in fixed point.
        let nanos_per_tick = timing_clock.delta_as_nanos(0, 1 << 32);
        let breakers = if config.circuit_breaker_enabled() {
            let breaker_config = breaker_config(config);
            Some(DeviceBreakers::new(match clock {
                Some(clock) => CircuitBreakerRegistry::with_clock(breaker_config, clock)?,
                None => CircuitBreakerRegistry::new(breaker_config)?,
            }))
        } else {
            None
        };
        // The config builder checks the value is finite and positive; clamp anyway so no
        // value can make `from_secs_f64` panic.
        let budget_ms = config.fallback_timeout_ms();
        let fallback_budget = if budget_ms.is_finite() && budget_ms > 0.0 {
            Duration::try_from_secs_f64(budget_ms / 1e3).unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        };
        Ok(Executor {
            enable_fallback: config.enable_fallback(),
            max_fallback_attempts: config.max_fallback_attempts(),
            fallback_budget,
            log_fallbacks: config.log_fallbacks(),
            record_timing: config.record_timing(),
            clock: timing_clock,
            nanos_per_tick,
            telemetry_enabled: config.enable_telemetry(),
            enable_transforms: config.enable_transforms(),
            sync_after_execution: config.sync_after_execution(),
            device_sync: OnceLock::new(),
            breakers,
            telemetry: Telemetry::new(),
        })
    }

    /// The breakers of `device`'s kernels (the host's for [`Device::Cpu`]).
    pub(crate) fn breakers(&self, device: Device) -> Option<&CircuitBreakerRegistry> {
        self.breakers.as_ref().map(|breakers| breakers.of(device))
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Installs the device-sync hook; the first one installed stays (`Err` returns the
    /// one offered when a hook is already there).
    pub(crate) fn set_device_sync(&self, hook: Arc<dyn DeviceSync>) -> Result<(), Arc<dyn DeviceSync>> {
        self.device_sync.set(hook)
    }

    /// Counts a selection-cache miss when telemetry is on; a hit costs nothing (the
    /// snapshot derives hits from the dispatches that reached a kernel chain).
    #[inline]
    pub(crate) fn record_cache(&self, outcome: CacheOutcome) {
        if self.telemetry_enabled && outcome == CacheOutcome::Miss {
            self.telemetry.record_cache_miss();
        }
    }

    /// Fails a dispatch that ended before the selection answered, counting it as an error
    /// and not as a cache lookup.
    #[cold]
    #[inline(never)]
    pub(crate) fn fail_unselected<T>(&self, error: DispatchError) -> Result<T, DispatchError> {
        if self.telemetry_enabled {
            self.telemetry.record_unselected_error();
        }
        Err(error)
    }

    /// [`check_args`], with a refusal failed as [`fail_unselected`](Self::fail_unselected)
    /// does (counted as an error, not as a cache lookup): what DYNAMIC and CONFIG check
    /// before they select.
    #[inline]
    pub(crate) fn check_before_selection(&self, operation: Operation, args: &OpArgs<'_>) -> Result<(), DispatchError> {
        match check_args(operation, args) {
            Ok(()) => Ok(()),
            Err(e) => self.fail_unselected(e),
        }
    }

    pub(crate) fn register_kernel(&self, kernel: KernelId) {
        self.telemetry.register_kernel(kernel);
    }

    /// A clock reading when timing is recorded (else no clock is read).
    #[inline]
    pub(crate) fn now(&self) -> Option<Tick> {
        self.record_timing.then(|| Tick(self.clock.raw()))
    }

    /// Nanoseconds from `start` to `end` (0 when `end` is not later): the ticks between
    /// them at the clock's calibrated rate, which [`new`](Self::new) read from the clock
    /// once, in 32.32 fixed point. A multiply and a shift, where the clock's own
    /// conversion branches on its kind and shifts by a variable amount. The two differ by
    /// at most 2 ns below 2^32 ticks (a second or more), and by about one part in 10^9
    /// past that.
    #[inline]
    fn nanos_between(&self, start: Tick, end: Tick) -> u64 {
        let ticks = end.0.saturating_sub(start.0);
        ((u128::from(ticks) * u128::from(self.nanos_per_tick)) >> 32) as u64
    }

    /// Fails a dispatch that never reached a kernel, counting it.
    #[cold]
    #[inline(never)]
    pub(crate) fn fail<T>(&self, error: DispatchError) -> Result<T, DispatchError> {
        if self.telemetry_enabled {
            self.telemetry.record_error();
        }
        Err(error)
    }

    /// Runs `chain` for `operation`: the first kernel, then on error or panic the next,
    /// up to `max_fallback_attempts` fallbacks that actually run, none started once
    /// `fallback_timeout_ms` has passed since the first failure. A kernel whose breaker
    /// refuses it is skipped (and not counted as an attempt); a kernel without code is
    /// skipped. An attention kernel whose spec does not take the arguments' layout runs
    /// through a layout transform when `enable_transforms` is on (see `transform`), and is
    /// skipped otherwise. With `sync_after_execution` and a [`DeviceSync`] hook, the hook
    /// runs after the kernel, as part of it.
    ///
    /// Budget when the first kernel succeeds: its breaker's acquire and success (one
    /// atomic load each when CLOSED), a layout-bits test for attention, the call inside
    /// `catch_unwind` (free unless it panics), one clock read when timing is on, and the
    /// telemetry's counts on this thread's shard when telemetry is on. No
    /// allocation, no lock (a layout transform allocates its scratch tensors).
    // Always inlined: its result then goes straight into the caller's, not through a
    // copy that the next load cannot forward from (measured: ~10 ns a dispatch).
    #[inline(always)]
    pub(crate) fn run<'k>(
        &self,
        operation: Operation,
        chain: impl Iterator<Item = (KernelId, Option<&'k KernelEntry>)>,
        args: &mut OpArgs<'_>,
        device: Device,
        start: Option<Tick>,
        selected: Option<Tick>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        let outcome = self.run_chain(operation, chain, args, device);
        self.finish(outcome, device, start, selected)
    }

    /// Times and records a chain's outcome from [`run_chain`](Self::run_chain), and makes
    /// the dispatch's result.
    #[inline(always)]
    pub(crate) fn finish(
        &self,
        outcome: Result<(KernelId, bool), Box<DispatchError>>,
        device: Device,
        start: Option<Tick>,
        selected: Option<Tick>,
    ) -> Result<DispatchResult<()>, DispatchError> {
        match outcome {
            Ok((kernel_id, was_fallback)) => {
                let timing = match (start, selected) {
                    (Some(start), Some(selected)) => {
                        let end = Tick(self.clock.raw());
                        let total_ns = self.nanos_between(start, end);
                        let selection_ns = self.nanos_between(start, selected).min(total_ns);
                        // The rest of the total, so that the two parts add up to it.
                        DispatchTiming { total_ns, selection_ns, execution_ns: total_ns - selection_ns }
                    }
                    _ => DispatchTiming::default(),
                };
                if self.telemetry_enabled {
                    let latency = self.record_timing.then_some((timing.selection_ns, timing.total_ns));
                    self.telemetry.record_success(kernel_id, was_fallback, latency, device);
                }
                Ok(DispatchResult { output: (), kernel_id, timing, was_fallback })
            }
            Err(error) => {
                if self.telemetry_enabled {
                    self.telemetry.record_device_error(device);
                }
                self.fail(*error)
            }
        }
    }

    /// The chain's first kernel on the straight path: it has code for these arguments'
    /// layout, its breaker admits it, and it returns `Ok`. Anything else goes on in
    /// [`run_rest`](Self::run_rest) with what happened to the first kernel.
    ///
    /// The error is boxed so that the result fits in two registers: a large result written
    /// field by field and then copied whole is a load the CPU cannot forward from the
    /// stores (measured: ~10 ns a dispatch). Errors allocate anyway (their attempt lists).
    #[inline]
    pub(crate) fn run_chain<'k>(
        &self,
        operation: Operation,
        mut chain: impl Iterator<Item = (KernelId, Option<&'k KernelEntry>)>,
        args: &mut OpArgs<'_>,
        device: Device,
    ) -> Result<(KernelId, bool), Box<DispatchError>> {
        let Some((kernel, implementation)) = chain.next() else {
            return Err(Box::new(DispatchError::NoKernel { operation }));
        };
        let first = match implementation {
            Some(entry) if entry.needs_layout(args).is_none() => match self.acquire(kernel, device) {
                Admission::Admitted(permit) => {
                    // Only a failure's error is carried out of `catch_unwind`; on success
                    // it returns a flag (a large result carried out of it is a copy the
                    // next load cannot forward from: ~5 ns a call, measured).
                    let mut failure = None;
                    let unwound = catch_unwind(AssertUnwindSafe(|| match self.call(kernel, &entry.code, args) {
                        Ok(()) => true,
                        Err(error) => {
                            failure = Some(error);
                            false
                        }
                    }));
                    if let Ok(true) = unwound {
                        if let Some(permit) = permit {
                            permit.record_success();
                        }
                        return Ok((kernel, false));
                    }
                    let outcome = unwound.map(|_| Ok(failure.map_or(Ok(()), Err)));
                    First::Ran { kernel, permit, outcome }
                }
                Admission::Refused => First::Refused(kernel),
            },
            _ => First::Pending(kernel, implementation),
        };
        self.run_rest(operation, first, chain, args, device).map_err(Box::new)
    }

    /// Runs `code` on `args`, then the device-sync hook when there is one (an error there
    /// is the kernel's).
    #[inline]
    fn call(&self, kernel: KernelId, code: &KernelImpl, args: &mut OpArgs<'_>) -> KernelResult {
        // The hook first, then the kernel's result returned as it is: a match on a
        // (result, hook) pair moved the result into a tuple and out, two copies a call.
        match self.device_sync() {
            Some(hook) => code.call(args).and_then(|()| hook.synchronize(kernel)),
            None => code.call(args),
        }
    }

    /// The chain after its first kernel did not succeed on the straight path: fallbacks,
    /// layout transforms, skipped kernels, the attempt limit and the fallback budget.
    #[cold]
    fn run_rest<'k>(
        &self,
        operation: Operation,
        first: First<'_>,
        rest: impl Iterator<Item = (KernelId, Option<&'k KernelEntry>)>,
        args: &mut OpArgs<'_>,
        device: Device,
    ) -> Result<(KernelId, bool), DispatchError> {
        let max_runs = if self.enable_fallback { self.max_fallback_attempts.saturating_add(1) } else { 1 };
        let mut attempts: Vec<(KernelId, AttemptError)> = Vec::new();
        let mut runs = 0u32;
        let mut first_failure: Option<Instant> = None;
        let mut first = Some(first);
        let mut rest = rest;
        for position in 0usize.. {
            let (kernel, permit, outcome) = match first.take() {
                Some(First::Ran { kernel, permit, outcome }) => (kernel, permit, outcome),
                Some(First::Refused(kernel)) => {
                    self.refused(operation, kernel, &mut attempts);
                    continue;
                }
                pending => {
                    let Some((kernel, implementation)) = (match pending {
                        Some(First::Pending(kernel, implementation)) => Some((kernel, implementation)),
                        _ => rest.next(),
                    }) else {
                        break;
                    };
                    if runs >= max_runs || (position > 0 && !self.enable_fallback) {
                        break;
                    }
                    let Some(entry) = implementation else {
                        attempts.push((kernel, AttemptError::NoImplementation));
                        continue;
                    };
                    let transform_to = entry.needs_layout(args);
                    if let (Some(_), OpArgs::Attention(attention)) = (transform_to, &*args)
                        && !self.enable_transforms
                    {
                        let skipped = AttemptError::LayoutUnsupported(attention.layout);
                        self.log(operation, kernel, &skipped);
                        attempts.push((kernel, skipped));
                        continue;
                    }
                    if let Some(failed_at) = first_failure
                        && failed_at.elapsed() >= self.fallback_budget
                    {
                        return Err(DispatchError::FallbackBudgetExhausted {
                            operation,
                            budget: self.fallback_budget,
                            attempts,
                        });
                    }
                    let Admission::Admitted(permit) = self.acquire(kernel, device) else {
                        self.refused(operation, kernel, &mut attempts);
                        continue;
                    };
                    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<KernelResult, String> {
                        match (transform_to, &mut *args) {
                            (Some(target), OpArgs::Attention(attention)) => {
                                let result = run_in_layout(&entry.code, attention, target)?;
                                Ok(match (result, self.device_sync()) {
                                    (Ok(()), Some(hook)) => hook.synchronize(kernel),
                                    (result, _) => result,
                                })
                            }
                            _ => Ok(self.call(kernel, &entry.code, args)),
                        }
                    }));
                    (kernel, permit, outcome)
                }
            };
            runs += 1;
            let outcome = match outcome {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(transform)) => {
                    // The transform, not the kernel, failed: release the permit uncounted.
                    drop(permit);
                    runs -= 1;
                    let skipped = AttemptError::TransformUnavailable(transform);
                    self.log(operation, kernel, &skipped);
                    attempts.push((kernel, skipped));
                    continue;
                }
                Err(payload) => Err(payload),
            };
            let error = match outcome {
                Ok(Ok(())) => {
                    if let Some(permit) = permit {
                        permit.record_success();
                    }
                    if position > 0 && self.log_fallbacks {
                        tracing::info!(%operation, kernel = %kernel, position, "fallback kernel produced the output");
                    }
                    return Ok((kernel, position > 0));
                }
                Ok(Err(KernelError::InvalidArgument(message))) => {
                    // The caller's arguments are wrong: not the kernel's fault, and no
                    // other kernel would take them. The permit is released uncounted.
                    drop(permit);
                    return Err(DispatchError::InvalidArguments {
                        operation,
                        source: KernelError::InvalidArgument(message),
                    });
                }
                Ok(Err(error)) => {
                    if self.telemetry_enabled {
                        self.telemetry.record_attempt_failure(kernel, AttemptOutcome::Failed);
                    }
                    AttemptError::Failed(error)
                }
                Err(payload) => {
                    if self.telemetry_enabled {
                        self.telemetry.record_attempt_failure(kernel, AttemptOutcome::Panicked);
                    }
                    AttemptError::Panicked(panic_message(payload.as_ref()))
                }
            };
            if let Some(permit) = permit {
                permit.record_failure();
            }
            self.log(operation, kernel, &error);
            attempts.push((kernel, error));
            first_failure.get_or_insert_with(Instant::now);
        }
        if attempts.is_empty() {
            return Err(DispatchError::NoKernel { operation });
        }
        if runs == 0 && attempts.iter().all(|(_, e)| *e == AttemptError::CircuitOpen) {
            return Err(DispatchError::CircuitOpen {
                operation,
                kernels: attempts.into_iter().map(|(k, _)| k).collect(),
            });
        }
        Err(DispatchError::FallbackChainExhausted { operation, attempts })
    }

    /// Records that `kernel`'s breaker refused it.
    fn refused(&self, operation: Operation, kernel: KernelId, attempts: &mut Vec<(KernelId, AttemptError)>) {
        if self.telemetry_enabled {
            self.telemetry.record_attempt_failure(kernel, AttemptOutcome::CircuitOpen);
        }
        self.log(operation, kernel, &AttemptError::CircuitOpen);
        attempts.push((kernel, AttemptError::CircuitOpen));
    }

    /// The hook to run after a kernel, when `sync_after_execution` is on and one is installed.
    #[inline]
    fn device_sync(&self) -> Option<&Arc<dyn DeviceSync>> {
        if self.sync_after_execution { self.device_sync.get() } else { None }
    }

    /// Whether `kernel` may run on `device` now: admitted with a permit, or without one
    /// when breakers are off; or refused by its breaker.
    #[inline(always)]
    fn acquire(&self, kernel: KernelId, device: Device) -> Admission<'_> {
        let Some(breakers) = &self.breakers else {
            return Admission::Admitted(None);
        };
        match breakers.of(device).get_circuit(kernel).try_permit() {
            Some(permit) => Admission::Admitted(Some(permit)),
            None => Admission::Refused,
        }
    }

    fn log(&self, operation: Operation, kernel: KernelId, error: &AttemptError) {
        if self.log_fallbacks {
            tracing::warn!(%operation, kernel = %kernel, %error, "kernel gave no output; trying the next in the chain");
        }
    }
}

/// The device a call runs on: its context's when it names one, else its output's (the
/// tensor a kernel writes, so the one it must run beside).
#[inline]
pub(crate) fn call_device(context_device: Option<Device>, args: &OpArgs<'_>) -> Device {
    if let Some(device) = context_device {
        return device;
    }
    match args {
        OpArgs::Attention(a) => a.output.device(),
        OpArgs::Norm(a) => a.output.device(),
        OpArgs::Rope(a) => a.x.device(),
        OpArgs::Swiglu(a) => a.output.device(),
        OpArgs::Matmul(a) => a.output.device(),
    }
}

/// Checks that `args` are the family `operation` takes (custom operations take any).
#[inline]
pub(crate) fn check_args(operation: Operation, args: &OpArgs<'_>) -> Result<(), DispatchError> {
    if let Some(known) = operation.known() {
        let expected = ArgsKind::of(known);
        if args.kind() != expected {
            return Err(DispatchError::WrongArguments { operation, expected, actual: args.kind() });
        }
    }
    Ok(())
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor() -> Executor {
        Executor::new(&DispatchConfig::default(), None).expect("an executor")
    }

    #[test]
    fn what_a_timed_dispatch_reads_first_shares_one_cache_line() {
        // The telemetry's first word is its shards' pointer (`repr(C)`, a thin pointer).
        let end = std::mem::offset_of!(Executor, telemetry) + std::mem::size_of::<usize>();
        assert!(end <= 64, "the shards' pointer ends at byte {end}");
    }

    #[test]
    fn tick_differences_convert_as_the_clock_does() {
        let executor = executor();
        let start = Tick(executor.clock.raw());
        std::thread::sleep(Duration::from_millis(5));
        let end = Tick(executor.clock.raw());
        let ours = executor.nanos_between(start, end);
        let clock = executor.clock.delta_as_nanos(start.0, end.0);
        assert!(ours >= 4_000_000, "5 ms slept, {ours} ns measured");
        assert!(ours.abs_diff(clock) <= 2, "{ours} ns, the clock's own conversion {clock} ns");
        assert_eq!(executor.nanos_between(end, start), 0, "an earlier end is no time");
    }
}
