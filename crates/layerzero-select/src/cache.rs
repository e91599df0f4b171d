//! The selection cache: (operation, context key, versions) → [`Selection`], read without a
//! lock, bounded, expiring.

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use layerzero_types::{ComputeCapability, ContextField, Device, FieldValue, Operation, SelectionContext};
use rustc_hash::FxBuildHasher;

use crate::Selection;

/// Every field of a [`SelectionContext`], packed into 64 bytes to hash and compare as
/// integers. Two contexts have equal keys exactly when they are equal field by field
/// (`dropout_p` compared by its bits).
///
/// Its `Hash` writes one `u64`: the key's eight words folded pairwise by 64×64→128-bit
/// multiplies that do not depend on each other (a derived `Hash` feeds the hasher fifteen
/// fields one after another, a chain of dependent multiplies that cost more than the
/// rest of a cache hit).
#[derive(Clone, Copy, Debug)]
pub struct ContextKey {
    /// The twelve integer fields: slots 0 to 10 two to a word (slot `s` in word `s / 2`,
    /// high half when `s` is odd), slot 11 (`hidden_size`) in word 7's high half (see
    /// [`INT_PLACES`]); word 5's high half is the presence bits (bit `s` for slot `s`);
    /// word 6 the small fields; word 7's low half `dropout_p`'s bits (all ones when absent).
    words: [u64; 8],
}

impl PartialEq for ContextKey {
    /// Word by word, branch-free (a derived compare of the fields calls `memcmp`).
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.words.iter().zip(&other.words).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl Eq for ContextKey {}

impl ContextKey {
    /// Packs `ctx`. Cost: a few dozen integer operations, no allocation.
    pub fn new(ctx: &SelectionContext) -> ContextKey {
        // Straight-line and branch-free: this runs on every cache lookup. Each word is
        // finished before the next is started, which keeps the fields in registers.
        #[inline(always)]
        fn int(value: Option<u32>, bit: u32) -> (u64, u64) {
            match value {
                Some(v) => (u64::from(v), 1 << bit),
                None => (0, 0),
            }
        }
        #[inline(always)]
        fn pair(lo: Option<u32>, hi: Option<u32>, bit: u32) -> (u64, u64) {
            let ((lo, p_lo), (hi, p_hi)) = (int(lo, bit), int(hi, bit + 1));
            (lo | (hi << 32), p_lo | p_hi)
        }
        // Each small field: 0 when absent, else 1 + its code.
        #[inline(always)]
        fn code(value: Option<u64>) -> u64 {
            value.map_or(0, |v| v + 1)
        }
        #[inline(always)]
        fn flag(value: Option<bool>) -> u64 {
            code(value.map(u64::from))
        }
        let (w0, p0) = pair(ctx.batch_size, ctx.seq_len, 0);
        let (w1, p1) = pair(ctx.seq_len_q, ctx.seq_len_k, 2);
        let (w2, p2) = pair(ctx.head_dim, ctx.num_heads, 4);
        let (w3, p3) = pair(ctx.num_kv_heads, ctx.tp_size, 6);
        let (w4, p4) = pair(ctx.pp_size, ctx.layer_index, 8);
        let (window, p5) = int(ctx.window_size, 10);
        let (hidden, p11) = int(ctx.hidden_size, 11);
        let present = p0 | p1 | p2 | p3 | p4 | p5 | p11;
        let device = ctx.device.map(|d| match d {
            Device::Cpu => 0,
            Device::Cuda(ordinal) => 1 + u64::from(ordinal),
        });
        let capability =
            ctx.compute_capability.map(|c: ComputeCapability| (u64::from(c.major) << 8) | u64::from(c.minor));
        let small = code(ctx.dtype.map(|d| d as u64))
            | code(ctx.platform.map(|p| p as u64)) << 5
            | code(ctx.layout.map(|l| l as u64)) << 8
            | flag(ctx.is_causal) << 10
            | flag(ctx.enable_gqa) << 12
            | flag(ctx.is_cuda_graph_capturing) << 14
            | flag(ctx.requires_deterministic) << 16
            | code(device) << 18
            | code(capability) << 36
            | flag(ctx.fused_residual) << FUSED_RESIDUAL_SHIFT;
        let dropout_bits = ctx.dropout_p.map_or(u32::MAX, f32::to_bits);
        let w7 = u64::from(dropout_bits) | hidden << 32;
        ContextKey { words: [w0, w1, w2, w3, w4, window | (present << 32), small, w7] }
    }

    /// A 64-bit digest of the key (see the type's docs).
    #[inline]
    fn digest(&self) -> u64 {
        let w = &self.words;
        fold(w[0] ^ SEEDS[0], w[1] ^ SEEDS[1])
            ^ fold(w[2] ^ SEEDS[2], w[3] ^ SEEDS[3])
            ^ fold(w[4] ^ SEEDS[4], w[5] ^ SEEDS[5])
            ^ fold(w[6] ^ SEEDS[6], w[7] ^ SEEDS[7])
    }

    /// The integer field in `slot` (see [`int_slot`]), if the context has it.
    #[inline]
    pub(crate) fn int(&self, slot: u8) -> Option<u32> {
        let present = (self.words[5] >> 32) >> slot & 1 == 1;
        let (word, shift) = INT_PLACES[usize::from(slot) % 16];
        present.then_some((self.words[usize::from(word) % 8] >> shift) as u32)
    }

    /// The packed small fields (see [`small_code`]).
    #[inline]
    pub(crate) fn small(&self) -> u64 {
        self.words[6]
    }
}

/// Where each integer slot lives in [`ContextKey`]'s words: (word, shift). Word 5's high
/// half holds the presence bits, so slot 11 goes to word 7's free high half. Sixteen
/// entries, so a slot is masked into range rather than bounds-checked; the four past
/// [`INT_SLOTS`] are never present.
const INT_PLACES: [(u8, u32); 16] = [
    (0, 0),
    (0, 32),
    (1, 0),
    (1, 32),
    (2, 0),
    (2, 32),
    (3, 0),
    (3, 32),
    (4, 0),
    (4, 32),
    (5, 0),
    (7, 32),
    (0, 0),
    (0, 0),
    (0, 0),
    (0, 0),
];

/// How many integer slots [`ContextKey`] has (see [`int_slot`]).
pub(crate) const INT_SLOTS: u8 = 12;

/// Random odd constants for [`ContextKey::digest`] and [`CacheKey`]'s hash.
const SEEDS: [u64; 10] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7345,
    0xa409_3822_299f_31d1,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6d,
    0xc0ac_29b7_c97c_50dd,
    0x3f84_d5b5_b547_0917,
    0x9216_d5d9_8979_fb1b,
    0xd131_0ba6_98df_b5ad,
];

/// The folded multiply of wyhash and foldhash: both halves of the 128-bit product, xored.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Hash for ContextKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest());
    }
}

/// Where [`ContextKey::new`] keeps an integer field: its slot in `ints` (and bit in
/// `present`). Keep in step with `new`.
pub(crate) fn int_slot(field: ContextField) -> Option<u8> {
    use ContextField as F;
    Some(match field {
        F::BatchSize => 0,
        F::SeqLen => 1,
        F::SeqLenQ => 2,
        F::SeqLenK => 3,
        F::HeadDim => 4,
        F::NumHeads => 5,
        F::NumKvHeads => 6,
        F::TpSize => 7,
        F::PpSize => 8,
        F::LayerIndex => 9,
        F::WindowSize => 10,
        F::HiddenSize => 11,
        _ => return None,
    })
}

/// Where `fused_residual` packs in the small fields (bits 54 and 55): past the compute
/// capability's code, which takes up to 17 bits from 36 (`255.255` is `0x10000`).
const FUSED_RESIDUAL_SHIFT: u32 = 54;

/// Where [`ContextKey::new`] packs a small field in `small` (shift, width in bits), and
/// the code it stores for `value` there (never 0: 0 means absent). `None` for fields that
/// are not packed as small codes or values of the wrong kind. Keep in step with `new`.
pub(crate) fn small_code(field: ContextField, value: FieldValue) -> Option<(u32, u32, u64)> {
    use ContextField as F;
    let flag = |shift: u32| match value {
        FieldValue::Bool(b) => Some((shift, 2, 1 + u64::from(b))),
        _ => None,
    };
    match (field, value) {
        (F::DType, FieldValue::DType(d)) => Some((0, 5, d as u64 + 1)),
        (F::Platform, FieldValue::Platform(p)) => Some((5, 3, p as u64 + 1)),
        (F::Layout, FieldValue::Layout(l)) => Some((8, 2, l as u64 + 1)),
        (F::IsCausal, _) => flag(10),
        (F::EnableGqa, _) => flag(12),
        (F::IsCudaGraphCapturing, _) => flag(14),
        (F::RequiresDeterministic, _) => flag(16),
        (F::FusedResidual, _) => flag(FUSED_RESIDUAL_SHIFT),
        (F::Device, FieldValue::Device(d)) => {
            let device = match d {
                Device::Cpu => 0,
                Device::Cuda(ordinal) => 1 + u64::from(ordinal),
            };
            Some((18, 18, device + 1))
        }
        _ => None,
    }
}

/// The full cache key: the operation, the context, and the versions of the policy and
/// the kernel registry the answer was computed under. Hashed, like [`ContextKey`], as one
/// folded `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheKey {
    pub(crate) operation: Operation,
    pub(crate) context: ContextKey,
    pub(crate) policy_version: u64,
    pub(crate) registry_version: u64,
    /// The backend registry's version: a health change makes earlier answers stale.
    pub(crate) backends_version: u64,
}

impl Hash for CacheKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Known operations by index; custom ones by their interned name's address
        // (unique per name). Equality stays field by field.
        let operation = match self.operation.known() {
            Some(op) => op.index() as u64,
            None => self.operation.as_str().as_ptr() as u64 | (1 << 63),
        };
        let versions =
            self.policy_version ^ self.registry_version.rotate_left(32) ^ self.backends_version.rotate_left(16);
        state.write_u64(self.context.digest() ^ fold(operation ^ SEEDS[8], versions ^ SEEDS[9]));
    }
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

    /// The cached selection, if present and not expired. Budget: one hash (one folded
    /// multiply per pair of key words), one probe, one thread-local read of the coarse
    /// clock; no lock, no allocation, no shared write.
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
                    && k.backends_version == key.backends_version
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
            backends_version: 1,
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
            SelectionContext { hidden_size: Some(0), ..base },
            SelectionContext { hidden_size: Some(u32::MAX), ..base },
            SelectionContext { hidden_size: Some(4096), dropout_p: Some(0.0), ..base },
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
            SelectionContext {
                compute_capability: Some(ComputeCapability::new(255, 255)),
                fused_residual: Some(true),
                ..base
            },
            SelectionContext { fused_residual: Some(false), ..base },
            SelectionContext { fused_residual: Some(true), ..base },
            base,
        ];
        for (i, a) in variants.iter().enumerate() {
            for (j, b) in variants.iter().enumerate() {
                assert_eq!(ContextKey::new(a) == ContextKey::new(b), i == j, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn every_integer_field_reads_back_from_its_slot() {
        let ints = [
            ContextField::BatchSize,
            ContextField::SeqLen,
            ContextField::SeqLenQ,
            ContextField::SeqLenK,
            ContextField::HeadDim,
            ContextField::NumHeads,
            ContextField::NumKvHeads,
            ContextField::TpSize,
            ContextField::PpSize,
            ContextField::LayerIndex,
            ContextField::WindowSize,
            ContextField::HiddenSize,
        ];
        let int_fields: Vec<_> =
            ContextField::ALL.into_iter().filter(|f| f.kind() == layerzero_types::FieldKind::Int).collect();
        assert_eq!(int_fields, ints, "every integer field has a slot");
        // Distinct values in every field, and a dropout_p beside hidden_size in word 7.
        let ctx = SelectionContext {
            batch_size: Some(1),
            seq_len: Some(2),
            seq_len_q: Some(3),
            seq_len_k: Some(4),
            head_dim: Some(5),
            num_heads: Some(6),
            num_kv_heads: Some(7),
            tp_size: Some(8),
            pp_size: Some(9),
            layer_index: Some(10),
            window_size: Some(11),
            hidden_size: Some(u32::MAX - 1),
            dropout_p: Some(0.5),
            ..SelectionContext::default()
        };
        let key = ContextKey::new(&ctx);
        let empty = ContextKey::new(&SelectionContext::default());
        let mut slots = Vec::new();
        for field in ints {
            let slot = int_slot(field).unwrap();
            slots.push(slot);
            let expected = ctx.get(field).map(|v| match v {
                FieldValue::Int(v) => u32::try_from(v).unwrap(),
                other => panic!("{field} is not an integer: {other}"),
            });
            assert_eq!(key.int(slot), expected, "{field}");
            assert_eq!(empty.int(slot), None, "{field}");
        }
        slots.sort_unstable();
        assert_eq!(slots, (0..INT_SLOTS).collect::<Vec<_>>());
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
