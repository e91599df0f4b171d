//! [`CircuitBreakerRegistry`]: one breaker per kernel, found by the kernel id's dense index
//! without a lock.

use std::sync::{Arc, OnceLock};

use layerzero_types::KernelId;

use crate::breaker::{CircuitBreaker, CircuitStats};
use crate::clock::{Clock, MonotonicClock};
use crate::config::{CircuitBreakerConfig, Settings};
use crate::error::BreakerError;

/// Entries in the first segment; segment `k` has `FIRST << k`.
const FIRST: usize = 32;
/// Enough segments for every `u32` index: `FIRST * (2^SEGMENTS - 1) > u32::MAX`.
const SEGMENTS: usize = 28;

struct Entry {
    kernel: KernelId,
    breaker: CircuitBreaker,
}

type Segment = Box<[OnceLock<Entry>]>;

/// One circuit breaker per kernel (seed 003's `CircuitBreakerManager`).
///
/// Breakers live in a table indexed by [`KernelId::index`], grown in segments of doubling
/// size that are never moved or freed while the registry lives: a lookup is two atomic loads
/// (segment, entry) and never takes a lock. Creating a breaker initialises its entry once;
/// threads that race to create the same one wait for the winner.
///
/// ```
/// use layerzero_breaker::{CircuitBreakerConfig, CircuitBreakerRegistry, CircuitState};
/// use layerzero_types::KernelId;
///
/// let registry = CircuitBreakerRegistry::new(CircuitBreakerConfig {
///     failure_threshold: 5,
///     cooldown_seconds: 30.0,
///     ..CircuitBreakerConfig::default()
/// })?;
/// let kernel = KernelId::new("flash_attn_v2_attention")?;
///
/// let circuit = registry.get_circuit(kernel);
/// if let Ok(permit) = circuit.try_acquire() {
///     permit.record_success();
/// }
/// for (kernel, stats) in registry.get_all_stats() {
///     assert_eq!((kernel.as_str(), stats.state, stats.calls), ("flash_attn_v2_attention", CircuitState::Closed, 1));
/// }
/// registry.reset_circuit(kernel);
/// registry.reset_all();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
// `repr(C)` with the segments first: a permit for one of the first kernels reads the
// registry's first cache line only.
#[repr(C)]
pub struct CircuitBreakerRegistry {
    segments: [OnceLock<Segment>; SEGMENTS],
    default_config: CircuitBreakerConfig,
    default_settings: Settings,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CircuitBreakerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerRegistry")
            .field("default_config", &self.default_config)
            .field("breakers", &self.iter().count())
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerRegistry {
    /// An empty registry whose breakers use `default_config` and the real clock.
    pub fn new(default_config: CircuitBreakerConfig) -> Result<Self, BreakerError> {
        Self::with_clock(default_config, Arc::new(MonotonicClock::new()))
    }

    /// An empty registry whose breakers all read time from `clock`.
    pub fn with_clock(default_config: CircuitBreakerConfig, clock: Arc<dyn Clock>) -> Result<Self, BreakerError> {
        Ok(CircuitBreakerRegistry {
            default_settings: default_config.settings()?,
            default_config,
            clock,
            segments: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// An empty registry with this one's default config and clock: one per device, say,
    /// so that a kernel failing on one device leaves its breakers on the others closed.
    pub fn new_like(&self) -> CircuitBreakerRegistry {
        CircuitBreakerRegistry {
            default_config: self.default_config,
            default_settings: self.default_settings,
            clock: Arc::clone(&self.clock),
            segments: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The config breakers get from [`get_circuit`](Self::get_circuit).
    pub fn default_config(&self) -> &CircuitBreakerConfig {
        &self.default_config
    }

    /// The breaker of `kernel`, made with the default config if it has none yet (seed 003's
    /// `get_circuit`). After the first call for a kernel: two atomic loads, no lock.
    #[inline]
    pub fn get_circuit(&self, kernel: KernelId) -> &CircuitBreaker {
        let slot = self.slot(kernel);
        &slot
            .get_or_init(|| Entry {
                kernel,
                breaker: CircuitBreaker::from_settings(
                    kernel.as_str().into(),
                    self.default_config,
                    self.default_settings,
                    Arc::clone(&self.clock),
                ),
            })
            .breaker
    }

    /// Gives `kernel` a breaker with its own config. Fails with
    /// [`BreakerError::AlreadyExists`] if it has one already, or
    /// [`BreakerError::InvalidConfig`].
    pub fn insert(&self, kernel: KernelId, config: CircuitBreakerConfig) -> Result<&CircuitBreaker, BreakerError> {
        let settings = config.settings()?;
        let slot = self.slot(kernel);
        let mut made = false;
        let entry = slot.get_or_init(|| {
            made = true;
            Entry {
                kernel,
                breaker: CircuitBreaker::from_settings(
                    kernel.as_str().into(),
                    config,
                    settings,
                    Arc::clone(&self.clock),
                ),
            }
        });
        if made { Ok(&entry.breaker) } else { Err(BreakerError::AlreadyExists { kernel }) }
    }

    /// The breaker of `kernel`, if it has one; never makes one.
    pub fn get(&self, kernel: KernelId) -> Option<&CircuitBreaker> {
        let (segment, offset) = locate(kernel);
        self.segments.get(segment)?.get()?.get(offset)?.get().map(|entry| &entry.breaker)
    }

    /// Every kernel's breaker, by kernel index.
    pub fn iter(&self) -> impl Iterator<Item = (KernelId, &CircuitBreaker)> + '_ {
        self.segments
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|segment| segment.iter().filter_map(OnceLock::get))
            .map(|entry| (entry.kernel, &entry.breaker))
    }

    /// Every breaker's statistics, by kernel index (seed 003's `get_all_stats`).
    pub fn get_all_stats(&self) -> Vec<(KernelId, CircuitStats)> {
        self.iter().map(|(kernel, breaker)| (kernel, breaker.stats())).collect()
    }

    /// Resets the breaker of `kernel` (seed 003's `reset_circuit`); `false` if it has none.
    pub fn reset_circuit(&self, kernel: KernelId) -> bool {
        self.get(kernel).map(CircuitBreaker::reset).is_some()
    }

    /// Resets every breaker (seed 003's `reset_all`).
    pub fn reset_all(&self) {
        self.iter().for_each(|(_, breaker)| breaker.reset());
    }

    #[inline]
    fn slot(&self, kernel: KernelId) -> &OnceLock<Entry> {
        let (segment, offset) = locate(kernel);
        // `locate` keeps `segment < SEGMENTS` and `offset < FIRST << segment` for every u32
        // index (see its test), so neither index can miss.
        let entries = self.segments[segment].get_or_init(|| (0..FIRST << segment).map(|_| OnceLock::new()).collect());
        &entries[offset]
    }
}

/// The segment and offset of a kernel's entry. Segment `k` holds indices
/// `FIRST * (2^k - 1) .. FIRST * (2^(k+1) - 1)`.
#[inline]
fn locate(kernel: KernelId) -> (usize, usize) {
    locate_index(kernel.index())
}

#[inline]
fn locate_index(index: u32) -> (usize, usize) {
    let index = index as usize;
    let block = index / FIRST + 1;
    let segment = block.ilog2() as usize;
    (segment, index - FIRST * ((1 << segment) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CircuitState, ManualClock};

    #[test]
    fn locate_covers_every_index_once() {
        let mut expected = (0, 0);
        for index in 0..(FIRST * 15) as u32 {
            let (segment, offset) = locate_index(index);
            assert_eq!((segment, offset), expected, "index {index}");
            expected = if offset + 1 == FIRST << segment { (segment + 1, 0) } else { (segment, offset + 1) };
        }
        let (segment, offset) = locate_index(u32::MAX);
        assert!(segment < SEGMENTS && offset < FIRST << segment);
    }

    fn config() -> CircuitBreakerConfig {
        CircuitBreakerConfig { failure_threshold: 2, cooldown_seconds: 10.0, ..CircuitBreakerConfig::default() }
    }

    #[test]
    fn one_breaker_per_kernel() {
        let registry = CircuitBreakerRegistry::new(config()).unwrap();
        let a = KernelId::new("registry_test_a").unwrap();
        let b = KernelId::new("registry_test_b").unwrap();
        assert!(registry.get(a).is_none());
        let first: *const CircuitBreaker = registry.get_circuit(a);
        assert!(std::ptr::eq(first, registry.get_circuit(a)));
        assert!(!std::ptr::eq(first, registry.get_circuit(b)));
        assert_eq!(registry.get_circuit(a).name(), "registry_test_a");
        assert_eq!(registry.iter().map(|(kernel, _)| kernel).collect::<Vec<_>>(), {
            let mut ids = vec![a, b];
            ids.sort();
            ids
        });
    }

    #[test]
    fn insert_gives_a_kernel_its_own_config_once() {
        let registry = CircuitBreakerRegistry::new(config()).unwrap();
        let kernel = KernelId::new("registry_test_insert").unwrap();
        let own = CircuitBreakerConfig { failure_threshold: 7, ..config() };
        assert_eq!(registry.insert(kernel, own).unwrap().config().failure_threshold, 7);
        assert_eq!(registry.insert(kernel, own).unwrap_err(), BreakerError::AlreadyExists { kernel });
        assert_eq!(registry.get_circuit(kernel).config().failure_threshold, 7);
        let bad = CircuitBreakerConfig { failure_threshold: 0, ..config() };
        let other = KernelId::new("registry_test_insert_bad").unwrap();
        assert!(matches!(registry.insert(other, bad), Err(BreakerError::InvalidConfig { .. })));
        assert!(registry.get(other).is_none());
    }

    #[test]
    fn an_invalid_default_config_is_refused() {
        let bad = CircuitBreakerConfig { half_open_max_calls: 0, ..config() };
        assert!(matches!(CircuitBreakerRegistry::new(bad), Err(BreakerError::InvalidConfig { .. })));
    }

    #[test]
    fn reset_circuit_and_reset_all_close_open_breakers() {
        let clock = Arc::new(ManualClock::new());
        let registry = CircuitBreakerRegistry::with_clock(config(), clock).unwrap();
        let a = KernelId::new("registry_test_reset_a").unwrap();
        let b = KernelId::new("registry_test_reset_b").unwrap();
        for kernel in [a, b] {
            registry.get_circuit(kernel).force_open();
        }
        assert!(registry.reset_circuit(a));
        assert_eq!(registry.get_circuit(a).state(), CircuitState::Closed);
        assert_eq!(registry.get_circuit(b).state(), CircuitState::Open);
        registry.reset_all();
        assert_eq!(registry.get_circuit(b).state(), CircuitState::Closed);
        assert!(!registry.reset_circuit(KernelId::new("registry_test_reset_none").unwrap()));
        let stats = registry.get_all_stats();
        assert_eq!(stats.len(), 2);
        assert!(stats.iter().all(|(_, stats)| stats.transitions == 2));
    }

    #[test]
    fn breakers_of_high_kernel_indices_are_found() {
        let registry = CircuitBreakerRegistry::new(config()).unwrap();
        // Intern enough ids to reach past the first segments.
        let ids: Vec<KernelId> = (0..200).map(|i| KernelId::new(&format!("registry_test_many_{i}")).unwrap()).collect();
        for &id in &ids {
            registry.get_circuit(id).record_failure();
        }
        for &id in &ids {
            assert_eq!(registry.get(id).map(CircuitBreaker::failure_count), Some(1), "{id}");
        }
        assert_eq!(registry.iter().count(), ids.len());
    }
}
