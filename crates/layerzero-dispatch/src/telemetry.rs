//! Dispatch telemetry: counters and latency histograms recorded per thread shard and
//! merged when read, and the [`TelemetrySnapshot`] a reader gets.
//!
//! Recording never takes a lock and never allocates. A thread that holds one of the first
//! `SHARDS - 1` slots of the process-wide pool ([`layerzero_breaker::thread_slot`]) records
//! into the shard of that index, which it alone writes, with relaxed loads and stores (no
//! atomic read-modify-write, no line shared with another thread); other threads share
//! the last shard with relaxed `fetch_add`s, correct and only slower. Readers sum the
//! shards.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use layerzero_types::{Device, KernelId};

use crate::executor::MAX_CUDA_DEVICES;
use serde::{Deserialize, Serialize};

/// Number of shards counters and histograms are split over: one per thread for the first
/// `SHARDS - 1` thread slots, and one shared by the rest.
pub const SHARDS: usize = 17;
/// Kernels with an interned index below this have their own counters; the rest are
/// counted together as `untracked` (totals stay exact).
pub const TRACKED_KERNELS: usize = 1024;

// 8 buckets per power of two: a bucket's upper bound is at most 12.5 % above its lower.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) << SUB_BITS) + SUB as usize;

fn bucket_of(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros(); // >= SUB_BITS
    let mantissa = (ns >> (exponent - SUB_BITS)) & (SUB - 1);
    (((exponent - SUB_BITS + 1) as usize) << SUB_BITS) + mantissa as usize
}

/// The largest value that falls in `bucket` (what percentiles report: an upper bound).
fn bucket_upper(bucket: usize) -> u64 {
    if bucket < SUB as usize {
        return bucket as u64;
    }
    let exponent = (bucket >> SUB_BITS) as u32 + SUB_BITS - 1;
    let mantissa = (bucket as u64) & (SUB - 1);
    let low = (SUB | mantissa) << (exponent - SUB_BITS);
    low.saturating_add((1u64 << (exponent - SUB_BITS)) - 1)
}

struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Histogram {
    fn new() -> Self {
        Histogram { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }

    #[inline]
    fn record(&self, ns: u64, owned: bool) {
        if let Some(bucket) = self.buckets.get(bucket_of(ns)) {
            bump(bucket, owned);
        }
    }
}

/// Adds one to `counter`: with a relaxed load and store when this thread is its only
/// writer (`owned`, see the module docs; ~1 ns), else with a relaxed `fetch_add` (a locked
/// instruction, ~9 ns uncontended). Counts are plain values read as sums; no other
/// memory is published through them.
#[inline]
fn bump(counter: &AtomicU64, owned: bool) {
    if owned {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    } else {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// `repr(C)` with the four pointers a success follows first: they share one cache line,
// which matters when a GPU launch has left the caches cold (each line a dispatch touches
// is then a miss).
#[repr(C, align(128))]
struct Shard {
    // Counters change only by `bump`: each is a plain count, read as a sum.
    successes: Box<[AtomicU64]>,
    selection: Histogram,
    total: Histogram,
    // Successes on each CUDA device (`cuda:N` at N, the last slot shared past it); the
    // host's are the rest, so a CPU dispatch adds no counter for its device.
    cuda_successes: Box<[AtomicU64]>,
    untracked_successes: AtomicU64,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    // Selection-cache hits are not counted: they are the dispatches that got a selection
    // (all but `unselected`) less the misses, so a hit costs no counter at all.
    cache_misses: AtomicU64,
    unselected: AtomicU64,
}

impl Shard {
    fn new() -> Self {
        Shard {
            successes: (0..TRACKED_KERNELS).map(|_| AtomicU64::new(0)).collect(),
            untracked_successes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            unselected: AtomicU64::new(0),
            selection: Histogram::new(),
            total: Histogram::new(),
            cuda_successes: (0..MAX_CUDA_DEVICES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A device's slot in the per-device counters: 0 the host, 1 + N `cuda:N` (the last
/// slot shared by ordinals past [`MAX_CUDA_DEVICES`] − 1).
fn device_slot(device: Device) -> usize {
    match device {
        Device::Cpu => 0,
        Device::Cuda(ordinal) => 1 + usize::from(ordinal).min(MAX_CUDA_DEVICES - 1),
    }
}

/// Counters touched only when a kernel fails or is skipped (off the hot path), shared.
struct FailureCounters {
    failures: Box<[AtomicU64]>,
    panics: Box<[AtomicU64]>,
    circuit_skips: Box<[AtomicU64]>,
    untracked_failures: AtomicU64,
    // Dispatches that ended in an error after reaching the executor, by device slot.
    device_errors: Box<[AtomicU64]>,
}

/// What happened to one kernel attempt, for [`Telemetry::record_attempt_failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    Failed,
    Panicked,
    CircuitOpen,
}

/// The counters and histograms of one dispatcher.
// `repr(C)`: `shards`, all a success reads here, first (see the executor's layout).
#[repr(C)]
pub struct Telemetry {
    // A thin pointer (the count is the type's): one word on the executor's first line.
    shards: Box<[Shard; SHARDS]>,
    failures: FailureCounters,
    // The id behind each tracked index, filled when a dispatcher learns of a kernel (at
    // build, or when its kernel table is rebuilt), so the hot path never writes it.
    names: Box<[OnceLock<KernelId>]>,
    // Set once, when the dispatcher is built with a selection cache; read by snapshots only.
    tracks_cache: AtomicBool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

fn counters() -> Box<[AtomicU64]> {
    (0..TRACKED_KERNELS).map(|_| AtomicU64::new(0)).collect()
}

impl Telemetry {
    /// Empty telemetry (about 280 KiB: [`SHARDS`] shards of per-kernel counters and two
    /// histograms).
    pub fn new() -> Self {
        Telemetry {
            shards: Box::new(std::array::from_fn(|_| Shard::new())),
            failures: FailureCounters {
                failures: counters(),
                panics: counters(),
                circuit_skips: counters(),
                untracked_failures: AtomicU64::new(0),
                device_errors: (0..=MAX_CUDA_DEVICES).map(|_| AtomicU64::new(0)).collect(),
            },
            names: (0..TRACKED_KERNELS).map(|_| OnceLock::new()).collect(),
            tracks_cache: AtomicBool::new(false),
        }
    }

    /// Makes snapshots report selection-cache hits and misses (a dispatcher with a cache).
    pub(crate) fn track_cache(&self) {
        self.tracks_cache.store(true, Ordering::Relaxed);
    }

    /// A selection-cache miss (the pipeline ran, microseconds): one relaxed `fetch_add`
    /// on this thread's shard. Hits are derived, not counted (see the snapshot).
    pub(crate) fn record_cache_miss(&self) {
        let (shard, owned) = self.shard();
        bump(&shard.cache_misses, owned);
    }

    /// A dispatch that ended in an error before the selection cache answered (bad
    /// arguments, no kernel can run the call); it counts as an error, not as a lookup.
    pub(crate) fn record_unselected_error(&self) {
        let (shard, owned) = self.shard();
        bump(&shard.errors, owned);
        bump(&shard.unselected, owned);
    }

    /// Makes `kernel`'s counts appear under its name in snapshots.
    pub(crate) fn register_kernel(&self, kernel: KernelId) {
        if let Some(slot) = self.names.get(kernel.index() as usize) {
            let _ = slot.set(kernel);
        }
    }

    /// This thread's shard, and whether it is the only thread writing it.
    #[inline]
    fn shard(&self) -> (&Shard, bool) {
        let shared = SHARDS - 1;
        let (index, owned) = match layerzero_breaker::thread_slot() {
            Some(slot) if slot < shared => (slot, true),
            _ => (shared, false),
        };
        // `index < SHARDS == self.shards.len()`, so the fallback is never taken.
        match self.shards.get(index) {
            Some(shard) => (shard, owned),
            None => (&self.shards[shared], false),
        }
    }

    /// A dispatch that `kernel` answered on `device`. Budget: one count on this thread's
    /// shard (one more for a fallback, one more on a GPU), plus one per latency given;
    /// each a relaxed load and store on a thread's own shard.
    #[inline(always)]
    pub(crate) fn record_success(
        &self,
        kernel: KernelId,
        was_fallback: bool,
        latency: Option<(u64, u64)>,
        device: Device,
    ) {
        let (shard, owned) = self.shard();
        if let Device::Cuda(_) = device
            && let Some(counter) = shard.cuda_successes.get(device_slot(device) - 1)
        {
            bump(counter, owned);
        }
        match shard.successes.get(kernel.index() as usize) {
            Some(counter) => bump(counter, owned),
            None => bump(&shard.untracked_successes, owned),
        };
        if was_fallback {
            bump(&shard.fallbacks, owned);
        }
        if let Some((selection_ns, total_ns)) = latency {
            shard.selection.record(selection_ns, owned);
            shard.total.record(total_ns, owned);
        }
    }

    /// A dispatch that ended in an error.
    pub(crate) fn record_error(&self) {
        let (shard, owned) = self.shard();
        bump(&shard.errors, owned);
    }

    /// A dispatch on `device` that ended in an error in the executor (failure path only;
    /// [`record_error`](Self::record_error) counts it too).
    pub(crate) fn record_device_error(&self, device: Device) {
        if let Some(counter) = self.failures.device_errors.get(device_slot(device)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One kernel attempt that gave no output (failure path only).
    pub(crate) fn record_attempt_failure(&self, kernel: KernelId, outcome: AttemptOutcome) {
        self.register_kernel(kernel);
        let index = kernel.index() as usize;
        let table = match outcome {
            AttemptOutcome::Failed => &self.failures.failures,
            AttemptOutcome::Panicked => &self.failures.panics,
            AttemptOutcome::CircuitOpen => &self.failures.circuit_skips,
        };
        match table.get(index) {
            Some(counter) => counter.fetch_add(1, Ordering::Relaxed),
            None => self.failures.untracked_failures.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Sums every shard. Counters read while dispatches run are each exact at some moment
    /// during the read, not all at the same moment; read when quiet for totals that add up.
    pub fn snapshot(&self) -> TelemetrySnapshot {
        let mut successes = vec![0u64; TRACKED_KERNELS];
        let mut untracked_successes = 0;
        let mut errors = 0;
        let mut fallbacks = 0;
        let mut cache_misses = 0;
        let mut unselected = 0;
        let mut selection = vec![0u64; BUCKETS];
        let mut total = vec![0u64; BUCKETS];
        let mut cuda_successes = vec![0u64; MAX_CUDA_DEVICES];
        for shard in self.shards.iter() {
            for (sum, counter) in cuda_successes.iter_mut().zip(shard.cuda_successes.iter()) {
                *sum += counter.load(Ordering::Relaxed);
            }
            for (sum, counter) in successes.iter_mut().zip(shard.successes.iter()) {
                *sum += counter.load(Ordering::Relaxed);
            }
            untracked_successes += shard.untracked_successes.load(Ordering::Relaxed);
            errors += shard.errors.load(Ordering::Relaxed);
            fallbacks += shard.fallbacks.load(Ordering::Relaxed);
            cache_misses += shard.cache_misses.load(Ordering::Relaxed);
            unselected += shard.unselected.load(Ordering::Relaxed);
            for (sum, bucket) in selection.iter_mut().zip(shard.selection.buckets.iter()) {
                *sum += bucket.load(Ordering::Relaxed);
            }
            for (sum, bucket) in total.iter_mut().zip(shard.total.buckets.iter()) {
                *sum += bucket.load(Ordering::Relaxed);
            }
        }
        let mut kernels = Vec::new();
        for (index, successes) in successes.iter().enumerate() {
            let load = |table: &[AtomicU64]| table.get(index).map_or(0, |c| c.load(Ordering::Relaxed));
            let failures = load(&self.failures.failures);
            let panics = load(&self.failures.panics);
            let circuit_open_skips = load(&self.failures.circuit_skips);
            if *successes + failures + panics + circuit_open_skips == 0 {
                continue;
            }
            let Some(kernel) = self.names.get(index).and_then(OnceLock::get) else { continue };
            kernels.push(KernelTelemetry {
                kernel: kernel.as_str().to_owned(),
                successes: *successes,
                failures,
                panics,
                circuit_open_skips,
            });
        }
        kernels.sort_by(|a, b| a.kernel.cmp(&b.kernel));
        let success_count = successes.iter().sum::<u64>() + untracked_successes;
        let dispatch_count = success_count + errors;
        let (cache_hits, cache_misses) = if self.tracks_cache.load(Ordering::Relaxed) {
            let lookups = dispatch_count.saturating_sub(unselected);
            (Some(lookups.saturating_sub(cache_misses)), Some(cache_misses))
        } else {
            (None, None)
        };
        TelemetrySnapshot {
            dispatch_count,
            success_count,
            error_count: errors,
            fallback_count: fallbacks,
            cache_hits,
            cache_misses,
            cache_hit_rate: hit_rate(cache_hits, cache_misses),
            kernels,
            untracked_kernel_successes: untracked_successes,
            untracked_kernel_failures: self.failures.untracked_failures.load(Ordering::Relaxed),
            selection_latency: LatencySummary::from_buckets(&selection),
            total_latency: LatencySummary::from_buckets(&total),
            selection_histogram: LatencyHistogram::from_dense(&selection),
            total_histogram: LatencyHistogram::from_dense(&total),
            devices: self.devices(success_count, &cuda_successes),
        }
    }

    /// Per-device counts: each GPU's successes as counted, the host's the rest.
    fn devices(&self, success_count: u64, cuda_successes: &[u64]) -> Vec<DeviceTelemetry> {
        let errors = |slot: usize| self.failures.device_errors.get(slot).map_or(0, |c| c.load(Ordering::Relaxed));
        let on_gpus: u64 = cuda_successes.iter().sum();
        let mut devices = Vec::new();
        let host = (success_count.saturating_sub(on_gpus), errors(0));
        if host != (0, 0) {
            devices.push(DeviceTelemetry { device: Device::Cpu.to_string(), successes: host.0, errors: host.1 });
        }
        for (ordinal, &successes) in cuda_successes.iter().enumerate() {
            let errors = errors(ordinal + 1);
            if successes + errors > 0 {
                let device = Device::Cuda(u16::try_from(ordinal).unwrap_or(u16::MAX));
                devices.push(DeviceTelemetry { device: device.to_string(), successes, errors });
            }
        }
        devices
    }
}

/// One device's counts in a [`TelemetrySnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTelemetry {
    /// `cpu` or `cuda:N` (the last CUDA slot, `cuda:63`, also counts ordinals past it).
    pub device: String,
    /// Dispatches answered on it.
    pub successes: u64,
    /// Dispatches on it that ended in an error after a kernel was chosen.
    pub errors: u64,
}

/// A latency histogram in sparse form: `(bucket, count)` for every bucket that holds a
/// value, buckets ascending. Bucket `b` holds values up to
/// [`bucket_upper_ns(b)`](Self::bucket_upper_ns), at most 12.5 % above its lower bound.
/// Snapshots carry it so that histograms of several dispatchers merge exactly
/// ([`TelemetrySnapshot::merge`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// `(bucket index, values in it)`, ascending by bucket, no zero counts.
    pub buckets: Vec<(u32, u64)>,
}

impl LatencyHistogram {
    fn from_dense(dense: &[u64]) -> LatencyHistogram {
        let buckets = dense
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(bucket, n)| (u32::try_from(bucket).unwrap_or(u32::MAX), *n))
            .collect();
        LatencyHistogram { buckets }
    }

    fn to_dense(&self) -> Vec<u64> {
        let mut dense = vec![0u64; BUCKETS];
        for (bucket, n) in &self.buckets {
            if let Some(slot) = dense.get_mut(*bucket as usize) {
                *slot += n;
            }
        }
        dense
    }

    /// The largest value bucket `bucket` holds, in nanoseconds.
    pub fn bucket_upper_ns(bucket: u32) -> u64 {
        bucket_upper(bucket as usize)
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        let mut dense = self.to_dense();
        for (bucket, n) in &other.buckets {
            if let Some(slot) = dense.get_mut(*bucket as usize) {
                *slot += n;
            }
        }
        *self = LatencyHistogram::from_dense(&dense);
    }

    /// The percentiles of these counts.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary::from_buckets(&self.to_dense())
    }
}

/// Latency percentiles of one histogram, in nanoseconds (each an upper bound of its
/// bucket: at most 12.5 % above the true value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest (bucket bound).
    pub max_ns: u64,
}

impl LatencySummary {
    fn from_buckets(buckets: &[u64]) -> LatencySummary {
        let count: u64 = buckets.iter().sum();
        if count == 0 {
            return LatencySummary::default();
        }
        let at = |quantile: f64| {
            let rank = ((count as f64) * quantile).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return bucket_upper(bucket);
                }
            }
            0
        };
        let max = buckets.iter().rposition(|&n| n > 0).map_or(0, bucket_upper);
        LatencySummary { count, p50_ns: at(0.50), p99_ns: at(0.99), max_ns: max }
    }

    /// The median in microseconds.
    pub fn p50_us(&self) -> f64 {
        self.p50_ns as f64 / 1e3
    }

    /// The 99th percentile in microseconds.
    pub fn p99_us(&self) -> f64 {
        self.p99_ns as f64 / 1e3
    }
}

/// One kernel's counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelTelemetry {
    /// The kernel's id.
    pub kernel: String,
    /// Dispatches it answered.
    pub successes: u64,
    /// Attempts that returned an error.
    pub failures: u64,
    /// Attempts that panicked (caught).
    pub panics: u64,
    /// Times its breaker refused it.
    pub circuit_open_skips: u64,
}

/// What a dispatcher's telemetry says at one moment; serialisable. [`merge`](Self::merge)
/// sums several (the orchestrator's total over its modes).
///
/// `dispatch_count == success_count + error_count`, and `success_count` is the sum of the
/// kernels' `successes` plus `untracked_kernel_successes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySnapshot {
    /// Dispatches that finished (with an output or an error).
    pub dispatch_count: u64,
    /// Dispatches that produced an output.
    pub success_count: u64,
    /// Dispatches that returned an error.
    pub error_count: u64,
    /// Dispatches whose output came from a fallback kernel.
    pub fallback_count: u64,
    /// Selection-cache lookups answered from the cache (DYNAMIC and CONFIG, from
    /// `SelectionEngine::select_traced`). Counted without a counter: the dispatches that got
    /// a selection less the misses, so a hit costs nothing; under load it is exact at no
    /// single moment, like every counter here. `None`: this dispatcher has no selection
    /// cache (STATIC, or the cache turned off).
    pub cache_hits: Option<u64>,
    /// Selection-cache lookups that ran the selection pipeline. A lookup whose selection
    /// failed (no kernel can run the call) is counted in neither.
    #[serde(default)]
    pub cache_misses: Option<u64>,
    /// `cache_hits / (cache_hits + cache_misses)`; `None` without a cache or before the
    /// first lookup.
    pub cache_hit_rate: Option<f64>,
    /// Per-kernel counts, by kernel id.
    pub kernels: Vec<KernelTelemetry>,
    /// Successes of kernels past [`TRACKED_KERNELS`].
    pub untracked_kernel_successes: u64,
    /// Failed attempts of kernels past [`TRACKED_KERNELS`].
    pub untracked_kernel_failures: u64,
    /// Time choosing the kernel (recorded when `record_timing` is on).
    pub selection_latency: LatencySummary,
    /// Whole-dispatch time (recorded when `record_timing` is on).
    pub total_latency: LatencySummary,
    /// The histogram `selection_latency` summarises.
    #[serde(default)]
    pub selection_histogram: LatencyHistogram,
    /// The histogram `total_latency` summarises.
    #[serde(default)]
    pub total_histogram: LatencyHistogram,
    /// Counts per device (the device of the call's context, or of its tensors), devices
    /// with none left out.
    #[serde(default)]
    pub devices: Vec<DeviceTelemetry>,
}

impl TelemetrySnapshot {
    /// The counts of `kernel`, if it was recorded.
    pub fn kernel(&self, kernel: KernelId) -> Option<&KernelTelemetry> {
        self.kernels.iter().find(|k| k.kernel == kernel.as_str())
    }

    /// Adds `other` to this snapshot: counters summed, kernels merged by id, histograms
    /// merged bucket by bucket and their percentiles recomputed (exact to the bucket, not
    /// an average of percentiles), cache counts summed where either side has them.
    pub fn merge(&mut self, other: &TelemetrySnapshot) {
        self.dispatch_count += other.dispatch_count;
        self.success_count += other.success_count;
        self.error_count += other.error_count;
        self.fallback_count += other.fallback_count;
        self.cache_hits = add_optional(self.cache_hits, other.cache_hits);
        self.cache_misses = add_optional(self.cache_misses, other.cache_misses);
        self.cache_hit_rate = hit_rate(self.cache_hits, self.cache_misses);
        for kernel in &other.kernels {
            match self.kernels.iter_mut().find(|k| k.kernel == kernel.kernel) {
                Some(mine) => {
                    mine.successes += kernel.successes;
                    mine.failures += kernel.failures;
                    mine.panics += kernel.panics;
                    mine.circuit_open_skips += kernel.circuit_open_skips;
                }
                None => self.kernels.push(kernel.clone()),
            }
        }
        self.kernels.sort_by(|a, b| a.kernel.cmp(&b.kernel));
        self.untracked_kernel_successes += other.untracked_kernel_successes;
        self.untracked_kernel_failures += other.untracked_kernel_failures;
        for device in &other.devices {
            match self.devices.iter_mut().find(|d| d.device == device.device) {
                Some(mine) => {
                    mine.successes += device.successes;
                    mine.errors += device.errors;
                }
                None => self.devices.push(device.clone()),
            }
        }
        self.selection_histogram.merge(&other.selection_histogram);
        self.total_histogram.merge(&other.total_histogram);
        self.selection_latency = self.selection_histogram.summary();
        self.total_latency = self.total_histogram.summary();
    }
}

fn hit_rate(hits: Option<u64>, misses: Option<u64>) -> Option<f64> {
    let (hits, misses) = (hits?, misses.unwrap_or(0));
    let lookups = hits + misses;
    (lookups > 0).then(|| hits as f64 / lookups as f64)
}

fn add_optional(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_an_eighth() {
        for ns in [0u64, 1, 7, 8, 9, 15, 16, 17, 100, 1_000, 12_345, 1 << 40, u64::MAX] {
            let bucket = bucket_of(ns);
            assert!(bucket < BUCKETS, "{ns}");
            let upper = bucket_upper(bucket);
            assert!(upper >= ns, "{ns} -> {upper}");
            assert!(upper - ns <= ns / 8 + 1, "{ns} -> {upper}");
        }
    }

    #[test]
    fn counts_from_more_threads_than_owned_shards_add_up() {
        // More threads than shards of their own, so the shared shard's `fetch_add`s are
        // used beside the owned shards' loads and stores; every count must arrive.
        let telemetry = Telemetry::new();
        let kernel = KernelId::new("telemetry_unit_threads").unwrap();
        telemetry.register_kernel(kernel);
        let threads = SHARDS + 8;
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    barrier.wait(); // all alive at once: slots are not recycled meanwhile
                    for i in 0..10_000u64 {
                        telemetry.record_success(kernel, i % 100 == 0, Some((i, i)), Device::Cuda(1));
                    }
                    telemetry.record_error();
                });
            }
        });
        let snapshot = telemetry.snapshot();
        let calls = threads as u64 * 10_000;
        assert_eq!(snapshot.success_count, calls);
        assert_eq!(snapshot.error_count, threads as u64);
        assert_eq!(snapshot.fallback_count, calls / 100);
        assert_eq!(snapshot.kernel(kernel).unwrap().successes, calls);
        assert_eq!(snapshot.total_latency.count, calls);
    }

    #[test]
    fn percentiles_and_counts_add_up() {
        let telemetry = Telemetry::new();
        let a = KernelId::new("telemetry_unit_a").unwrap();
        telemetry.register_kernel(a);
        for i in 1..=100u64 {
            telemetry.record_success(a, i % 10 == 0, Some((i, i * 10)), Device::Cpu);
        }
        telemetry.record_error();
        telemetry.record_attempt_failure(a, AttemptOutcome::Panicked);
        assert_eq!(telemetry.snapshot().cache_hits, None, "no cache tracked: no counts invented");
        telemetry.track_cache();
        // 101 dispatches got a selection, 12 of them by a miss; one more ends before it.
        telemetry.record_unselected_error();
        for _ in 0..12 {
            telemetry.record_cache_miss();
        }
        let snapshot = telemetry.snapshot();
        assert_eq!((snapshot.cache_hits, snapshot.cache_misses), (Some(89), Some(12)));
        assert_eq!(snapshot.cache_hit_rate, Some(89.0 / 101.0));
        assert_eq!((snapshot.dispatch_count, snapshot.success_count, snapshot.error_count), (102, 100, 2));
        assert_eq!(snapshot.fallback_count, 10);
        let kernel = snapshot.kernel(a).unwrap();
        assert_eq!((kernel.successes, kernel.panics, kernel.failures), (100, 1, 0));
        assert!((50..=57).contains(&snapshot.selection_latency.p50_ns), "{:?}", snapshot.selection_latency);
        assert!((990..=1120).contains(&snapshot.total_latency.p99_ns), "{:?}", snapshot.total_latency);
        let json = serde_json::to_string(&snapshot).unwrap();
        assert_eq!(serde_json::from_str::<TelemetrySnapshot>(&json).unwrap(), snapshot);

        // Merging sums counts and histograms; percentiles come from the merged buckets.
        let mut merged = snapshot.clone();
        merged.merge(&snapshot);
        assert_eq!((merged.dispatch_count, merged.fallback_count), (204, 20));
        assert_eq!((merged.cache_hits, merged.cache_hit_rate), (Some(178), Some(89.0 / 101.0)));
        assert_eq!(merged.kernel(a).unwrap().successes, 200);
        assert_eq!(merged.total_latency.count, 200);
        assert_eq!(merged.total_latency.p99_ns, snapshot.total_latency.p99_ns);
        let mut from_empty = TelemetrySnapshot::default();
        from_empty.merge(&snapshot);
        assert_eq!(from_empty, snapshot);
    }
}
