//! The selection cache: (operation, context key, versions) → [`Selection`], read without a
//! lock, bounded, expiring.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use layerzero_types::{ComputeCapability, Device, Operation, SelectionContext};
use rustc_hash::FxBuildHasher;

use crate::Selection;

/// Every field of a [`SelectionContext`], packed into 64 bytes to hash and compare as
/// integers. Two contexts have equal keys exactly when they are equal field by field
/// (`dropout_p` compared by its bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextKey {
    ints: [u32; 11],
    present: u32,
    small: u64,
    dropout_bits: u32,
}

impl ContextKey {
    /// Packs `ctx`. Cost: a few dozen integer operations, no allocation.
    pub fn new(ctx: &SelectionContext) -> ContextKey {
        // Straight-line and branch-free: this runs on every cache lookup.
        let mut present = 0u32;
        let mut int = |bit: u32, value: Option<u32>| {
            present |= u32::from(value.is_some()) << bit;
            value.unwrap_or(0)
        };
        let ints = [
            int(0, ctx.batch_size),
            int(1, ctx.seq_len),
            int(2, ctx.seq_len_q),
            int(3, ctx.seq_len_k),
            int(4, ctx.head_dim),
            int(5, ctx.num_heads),
            int(6, ctx.num_kv_heads),
            int(7, ctx.tp_size),
            int(8, ctx.pp_size),
            int(9, ctx.layer_index),
            int(10, ctx.window_size),
        ];
        // Each small field: 0 when absent, else 1 + its code.
        let code = |v: Option<u64>| v.map_or(0, |v| v + 1);
        let flag = |v: Option<bool>| code(v.map(u64::from));
        let device = |d: Device| match d {
            Device::Cpu => 0,
            Device::Cuda(ordinal) => 1 + u64::from(ordinal),
        };
        let capability = |c: ComputeCapability| (u64::from(c.major) << 8) | u64::from(c.minor);
        let small = code(ctx.dtype.map(|d| d as u64))
            | code(ctx.platform.map(|p| p as u64)) << 5
            | code(ctx.layout.map(|l| l as u64)) << 8
            | flag(ctx.is_causal) << 10
            | flag(ctx.enable_gqa) << 12
            | flag(ctx.is_cuda_graph_capturing) << 14
            | flag(ctx.requires_deterministic) << 16
            | code(ctx.device.map(device)) << 18
            | code(ctx.compute_capability.map(capability)) << 36;
        let dropout_bits = ctx.dropout_p.map_or(u32::MAX, f32::to_bits);
        ContextKey { ints, present, small, dropout_bits }
    }
}

/// The full cache key: the operation, the context, and the versions of the policy and
/// the kernel registry the answer was computed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub(crate) operation: Operation,
    pub(crate) context: ContextKey,
    pub(crate) policy_version: u64,
    pub(crate) registry_version: u64,
}

struct Entry {
    selection: Selection,
    expires_at: u64,
}

/// A bounded, expiring map from [`CacheKey`] to [`Selection`] whose reads take no lock,
/// allocate nothing and write no shared memory (papaya: epoch-protected reads).
///
/// Invalidation is by version: a policy swap or a registration changes the versions in
/// every new key, so old entries are never read again and are evicted first when the
/// cache is full. No global pause is needed.
pub(crate) struct SelectionCache {
    map: papaya::HashMap<CacheKey, Entry, FxBuildHasher>,
    capacity: usize,
    ttl_nanos: u64,
}

/// Lookups between two reads of the real clock on one thread.
const CLOCK_REFRESH: u32 = 64;

thread_local! {
    /// (lookups since the last clock read, nanoseconds at that read).
    static COARSE_CLOCK: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process-wide epoch, read from the real clock.
fn precise_now() -> u64 {
    let now = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    COARSE_CLOCK.with(|clock| clock.set((0, now)));
    now
}

/// Nanoseconds since the epoch as last read on this thread, re-read every
/// [`CLOCK_REFRESH`] lookups. Reading the clock costs 25–50 ns on the machines measured
/// (more than the rest of a hit), so a hit reads this per-thread copy instead. An entry
/// can therefore outlive its TTL by at most 63 lookups on a thread; versions, not the
/// TTL, keep answers correct after a policy or registry change.
fn coarse_now() -> u64 {
    let (count, nanos) = COARSE_CLOCK.with(Cell::get);
    if count >= CLOCK_REFRESH || nanos == 0 {
        return precise_now();
    }
    COARSE_CLOCK.with(|clock| clock.set((count + 1, nanos)));
    nanos
}

impl SelectionCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        SelectionCache {
            map: papaya::HashMap::builder().hasher(FxBuildHasher).capacity(capacity.min(1 << 16)).build(),
            capacity: capacity.max(1),
            ttl_nanos: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The cached selection, if present and not expired. Budget: one hash, one probe,
    /// one thread-local read of the coarse clock; no lock, no allocation, no shared write.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Selection> {
        let map = self.map.pin();
        let entry = map.get(key)?;
        (coarse_now() < entry.expires_at).then_some(entry.selection)
    }

    /// Stores a selection, evicting first when full: expired entries and entries of
    /// other versions, then (if still full) an arbitrary eighth of the rest.
    pub(crate) fn insert(&self, key: CacheKey, selection: Selection) {
        let now = precise_now();
        let map = self.map.pin();
        if map.len() >= self.capacity {
            map.retain(|k, entry| {
                entry.expires_at > now
                    && k.policy_version == key.policy_version
                    && k.registry_version == key.registry_version
            });
            if map.len() >= self.capacity {
                let victims: Vec<CacheKey> = map.keys().take((self.capacity / 8).max(1)).copied().collect();
                for victim in &victims {
                    map.remove(victim);
                }
            }
        }
        map.insert(key, Entry { selection, expires_at: now.saturating_add(self.ttl_nanos) });
    }

    pub(crate) fn clear(&self) {
        self.map.pin().clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use layerzero_types::{DType, KernelId, Layout, OperationType};

    use super::*;
    use crate::SelectionReason;

    fn key(ctx: &SelectionContext, policy_version: u64) -> CacheKey {
        CacheKey {
            operation: OperationType::Rope.into(),
            context: ContextKey::new(ctx),
            policy_version,
            registry_version: 1,
        }
    }

    fn selection(name: &str) -> Selection {
        Selection::new(KernelId::new(name).unwrap(), SelectionReason::Score { priority: 1 }, [])
    }

    #[test]
    fn context_keys_distinguish_every_field() {
        let base = SelectionContext::default();
        let variants = [
            SelectionContext { batch_size: Some(0), ..base },
            SelectionContext { window_size: Some(0), ..base },
            SelectionContext { dtype: Some(DType::F16), ..base },
            SelectionContext { dtype: Some(DType::BF16), ..base },
            SelectionContext { device: Some(Device::Cpu), ..base },
            SelectionContext { device: Some(Device::Cuda(0)), ..base },
            SelectionContext { device: Some(Device::Cuda(u16::MAX)), ..base },
            SelectionContext { layout: Some(Layout::Bshd), ..base },
            SelectionContext { is_causal: Some(false), ..base },
            SelectionContext { requires_deterministic: Some(false), ..base },
            SelectionContext { dropout_p: Some(0.0), ..base },
            SelectionContext { compute_capability: Some(ComputeCapability::new(0, 0)), ..base },
            SelectionContext { compute_capability: Some(ComputeCapability::new(255, 255)), ..base },
            base,
        ];
        for (i, a) in variants.iter().enumerate() {
            for (j, b) in variants.iter().enumerate() {
                assert_eq!(ContextKey::new(a) == ContextKey::new(b), i == j, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn entries_expire_and_versions_do_not_mix() {
        let cache = SelectionCache::new(10, Duration::from_millis(30));
        let ctx = SelectionContext::default();
        cache.insert(key(&ctx, 1), selection("cache_a"));
        assert_eq!(cache.get(&key(&ctx, 1)).map(|s| s.kernel.as_str()), Some("cache_a"));
        assert_eq!(cache.get(&key(&ctx, 2)), None);
        std::thread::sleep(Duration::from_millis(40));
        // The coarse clock catches up within CLOCK_REFRESH lookups.
        let expired = (0..=CLOCK_REFRESH).any(|_| cache.get(&key(&ctx, 1)).is_none());
        assert!(expired);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = SelectionCache::new(16, Duration::from_secs(60));
        for i in 0..200 {
            let ctx = SelectionContext { batch_size: Some(i), ..SelectionContext::default() };
            cache.insert(key(&ctx, 1), selection("cache_b"));
            assert!(cache.len() <= 16, "{} entries", cache.len());
        }
        let last = SelectionContext { batch_size: Some(199), ..SelectionContext::default() };
        assert!(cache.get(&key(&last, 1)).is_some());
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
