//! Rules lowered to integer checks on the packed [`ContextKey`], so that a cache miss
//! walks one flat array instead of chasing each rule's conditions through the policy.
//!
//! A condition on an integer field becomes a range check on the key's integers; `==`,
//! `!=`, `in` and `not_in` on a small field (dtype, platform, layout, the flags, a device
//! of ordinal < 62) become a bit test on a 64-bit set of the field's codes. Anything
//! else (orderings on floats and compute capabilities, globs, regexes, integer lists)
//! stays a call to [`CompiledCondition::holds`](layerzero_config::CompiledCondition::holds).
//! Every form is false when the context lacks the field, as `holds` is; the property
//! tests compare the engine against a naive evaluator that only calls `holds`.

use layerzero_config::{CompiledRule, ConditionTest};
use layerzero_types::SelectionContext;

use crate::cache::{ContextKey, INT_SLOTS, int_slot, small_code};

#[derive(Clone, Copy, Debug)]
enum Check {
    /// The integer in `slot` is present and in `lo..=hi` (outside it, when `negate`).
    Int { slot: u8, negate: bool, lo: u64, hi: u64 },
    /// The small field at `shift` (under `mask`) has a code whose bit is set in `allowed`
    /// (bit 0, absent, never is).
    Codes { shift: u32, mask: u64, allowed: u64 },
    /// `rules[rule].conditions[condition].holds(ctx)`.
    Slow { rule: u32, condition: u32 },
}

impl Check {
    #[inline]
    fn holds(self, key: &ContextKey, ctx: &SelectionContext, rules: &[CompiledRule]) -> bool {
        match self {
            Check::Int { slot, negate, lo, hi } => {
                key.int(slot).is_some_and(|v| (lo <= u64::from(v) && u64::from(v) <= hi) != negate)
            }
            Check::Codes { shift, mask, allowed } => {
                let code = (key.small() >> shift) & mask;
                u32::try_from(code).ok().and_then(|code| allowed.checked_shr(code)).is_some_and(|bits| bits & 1 == 1)
            }
            Check::Slow { rule, condition } => rules
                .get(rule as usize)
                .and_then(|rule| rule.conditions.get(condition as usize))
                .is_some_and(|condition| condition.holds(ctx)),
        }
    }
}

/// The lowered conditions of one operation's rules, back to back.
#[derive(Default)]
pub(crate) struct RuleProgram {
    checks: Vec<Check>,
    /// One per pushed rule, in push order: a necessary condition read from its first
    /// check, tested before the rule's checks (see [`Prefilter`]).
    prefilter: Vec<Prefilter>,
}

/// A rule's first check when it is an integer range (not negated), as a bare compare of
/// one of [`PrefilterValues`]: `lo <= values[slot] <= hi`. Absent fields read as
/// `u64::MAX`, past every `hi` (clamped to the `u32` values a context holds), so they
/// fail as the check does. A rule whose first check is anything else gets slot
/// [`ALWAYS`] (value 0) and the full range: it always passes to its checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefilter {
    slot: u8,
    lo: u64,
    hi: u64,
}

/// The slot of [`PrefilterValues`] that is always 0: the first past the integer fields.
const ALWAYS: u8 = INT_SLOTS;

/// The context's integer fields for [`Prefilter`]s: slot `s` as in [`int_slot`], absent
/// as `u64::MAX`; slot [`ALWAYS`] and the slots past it 0. Sixteen, so an index is masked
/// into range rather than bounds-checked.
pub(crate) struct PrefilterValues([u64; 16]);

impl PrefilterValues {
    pub(crate) fn new(key: &ContextKey) -> PrefilterValues {
        let mut values = [0u64; 16];
        for (slot, value) in (0u8..).zip(values.iter_mut().take(usize::from(ALWAYS))) {
            *value = key.int(slot).map_or(u64::MAX, u64::from);
        }
        PrefilterValues(values)
    }
}

impl Prefilter {
    /// Whether the rule may match (a cheap necessary condition).
    #[inline]
    pub(crate) fn passes(self, values: &PrefilterValues) -> bool {
        let value = values.0[usize::from(self.slot) % 16];
        self.lo <= value && value <= self.hi
    }
}

impl RuleProgram {
    /// Lowers rule `index` of `rules` and returns the range of its checks.
    pub(crate) fn push(&mut self, rules: &[CompiledRule], index: usize) -> (u32, u32) {
        let start = self.checks.len();
        let prefilter = match rules[index].conditions.first().map(|c| (int_slot(c.field()), c.test())) {
            Some((Some(slot), ConditionTest::IntRange { lo, hi, negate: false })) => {
                Prefilter { slot, lo, hi: hi.min(u64::from(u32::MAX)) }
            }
            _ => Prefilter { slot: ALWAYS, lo: 0, hi: u64::MAX },
        };
        self.prefilter.push(prefilter);
        for (c, condition) in rules[index].conditions.iter().enumerate() {
            let slow = Check::Slow {
                rule: u32::try_from(index).unwrap_or(u32::MAX),
                condition: u32::try_from(c).unwrap_or(u32::MAX),
            };
            let field = condition.field();
            let check = match condition.test() {
                ConditionTest::IntRange { lo, hi, negate } => {
                    int_slot(field).map_or(slow, |slot| Check::Int { slot, negate, lo, hi })
                }
                ConditionTest::In(values) => codes(field, values, false).unwrap_or(slow),
                ConditionTest::NotIn(values) => codes(field, values, true).unwrap_or(slow),
                ConditionTest::Other => slow,
            };
            self.checks.push(check);
        }
        let end = self.checks.len();
        (u32::try_from(start).unwrap_or(u32::MAX), u32::try_from(end).unwrap_or(u32::MAX))
    }

    /// The prefilters, one per pushed rule in push order.
    pub(crate) fn prefilters(&self) -> &[Prefilter] {
        &self.prefilter
    }

    /// Whether every check in `range` holds for the context (`key` is `ctx` packed).
    #[inline]
    pub(crate) fn matches(
        &self,
        (start, end): (u32, u32),
        key: &ContextKey,
        ctx: &SelectionContext,
        rules: &[CompiledRule],
    ) -> bool {
        self.checks
            .get(start as usize..end as usize)
            .is_some_and(|checks| checks.iter().all(|check| check.holds(key, ctx, rules)))
    }
}

/// `in values` (or `not in`, when `negate`) as a set of codes, when every value packs
/// into the same small field and the set fits 64 bits.
fn codes(field: layerzero_types::ContextField, values: &[layerzero_types::FieldValue], negate: bool) -> Option<Check> {
    let mut position = None;
    let mut listed = 0u64;
    for &value in values {
        let (shift, width, code) = small_code(field, value)?;
        if *position.get_or_insert((shift, width)) != (shift, width) || code >= 64 {
            return None;
        }
        listed |= 1 << code;
    }
    // An empty list: `in []` never holds, `not_in []` holds whenever the field is present.
    let (shift, width) = position.or_else(|| small_code(field, any_value(field)?).map(|(s, w, _)| (s, w)))?;
    let mask = (1u64 << width) - 1;
    let allowed = if negate {
        // Every code the field can hold, as a set: fits 64 bits for widths up to 6.
        let every_code = match 1u32.checked_shl(width) {
            Some(64) => u64::MAX,
            Some(codes) if codes < 64 => (1u64 << codes) - 1,
            _ => return None,
        };
        every_code & !listed & !1
    } else {
        listed
    };
    Some(Check::Codes { shift, mask, allowed })
}

/// Some value of `field`'s kind, to find where it packs (for empty lists).
fn any_value(field: layerzero_types::ContextField) -> Option<layerzero_types::FieldValue> {
    use layerzero_types::{ContextField as F, DType, Device, FieldValue as V, Layout, Platform};
    Some(match field {
        F::DType => V::DType(DType::F32),
        F::Platform => V::Platform(Platform::Cpu),
        F::Layout => V::Layout(Layout::Bshd),
        F::Device => V::Device(Device::Cpu),
        F::IsCausal | F::EnableGqa | F::IsCudaGraphCapturing | F::RequiresDeterministic | F::FusedResidual => {
            V::Bool(false)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use layerzero_config::{ConditionValue as V, OperationMatcher, compile_condition};
    use layerzero_types::{DType, Device, KernelId, Layout, Platform};

    use super::*;

    fn s(text: &str) -> V {
        V::Str(text.to_owned())
    }

    /// Conditions of every lowered form (and some that stay slow), on every packed field.
    fn conditions() -> Vec<(&'static str, V)> {
        let mut all = Vec::new();
        for key in ["batch_size", "seq_len_k", "window_size", "tp_size", "layer_index", "hidden_size"] {
            for op in ["", "_ne", "_gt", "_gte", "_lt", "_lte"] {
                for n in [0, 1, 7, 4_294_967_295] {
                    all.push((Box::leak(format!("{key}{op}").into_boxed_str()) as &str, V::Int(n)));
                }
            }
            all.push((key, V::List(vec![V::Int(1), V::Int(8)])));
        }
        for (key, values) in [
            ("dtype", vec![s("float16"), s("bfloat16"), s("float32")]),
            ("platform", vec![s("cuda"), s("cpu")]),
            ("layout", vec![s("BSHD"), s("BHSD")]),
            ("device", vec![s("cpu"), s("cuda:0"), s("cuda:1"), s("cuda:200")]),
            ("is_causal", vec![V::Bool(true), V::Bool(false)]),
            ("enable_gqa", vec![V::Bool(true)]),
            ("requires_deterministic", vec![V::Bool(false)]),
            ("fused_residual", vec![V::Bool(true), V::Bool(false)]),
        ] {
            for value in &values {
                all.push((key, value.clone()));
                all.push((Box::leak(format!("{key}_ne").into_boxed_str()), value.clone()));
            }
            for op in ["_in", "_not_in"] {
                let key: &str = Box::leak(format!("{key}{op}").into_boxed_str());
                all.push((key, V::List(values.clone())));
                all.push((key, V::List(values[..1].to_vec())));
                all.push((key, V::List(Vec::new())));
            }
        }
        all.push(("dropout_p_gt", V::Float(0.0)));
        all.push(("device_match", s("cuda:*")));
        all
    }

    fn contexts() -> Vec<SelectionContext> {
        let mut all = vec![SelectionContext::default()];
        for batch in [0, 1, 7, 8, u32::MAX] {
            all.push(SelectionContext { batch_size: Some(batch), seq_len_k: Some(batch), ..Default::default() });
            // hidden_size beside dropout_p in the key's last word, alone and with it.
            all.push(SelectionContext { hidden_size: Some(batch), ..Default::default() });
            all.push(SelectionContext { hidden_size: Some(batch), dropout_p: Some(0.5), ..Default::default() });
        }
        for dtype in [DType::F16, DType::BF16, DType::F32, DType::I8] {
            all.push(SelectionContext { dtype: Some(dtype), is_causal: Some(true), ..Default::default() });
            all.push(SelectionContext { dtype: Some(dtype), fused_residual: Some(true), ..Default::default() });
        }
        for device in [Device::Cpu, Device::Cuda(0), Device::Cuda(1), Device::Cuda(200)] {
            all.push(SelectionContext {
                device: Some(device),
                platform: Some(Platform::Cuda),
                layout: Some(Layout::Bhsd),
                is_causal: Some(false),
                enable_gqa: Some(false),
                requires_deterministic: Some(true),
                window_size: Some(7),
                tp_size: Some(1),
                ..Default::default()
            });
        }
        all
    }

    #[test]
    fn lowered_checks_agree_with_holds_on_every_form() {
        let rules: Vec<CompiledRule> = conditions()
            .into_iter()
            .enumerate()
            .map(|(index, (key, value))| CompiledRule {
                index,
                operation: OperationMatcher::parse("rope").unwrap(),
                conditions: vec![compile_condition(key, &value).unwrap()],
                kernel: KernelId::new("k").unwrap(),
                priority: 0,
            })
            .collect();
        let mut program = RuleProgram::default();
        let ranges: Vec<(u32, u32)> = (0..rules.len()).map(|i| program.push(&rules, i)).collect();
        let fast = program.checks.iter().filter(|c| !matches!(c, Check::Slow { .. })).count();
        assert!(fast * 10 >= rules.len() * 8, "most forms should lower: {fast} of {}", rules.len());
        for ctx in contexts() {
            let key = ContextKey::new(&ctx);
            let values = PrefilterValues::new(&key);
            for ((rule, &range), prefilter) in rules.iter().zip(&ranges).zip(program.prefilters()) {
                let matches = rule.matches(&ctx);
                assert_eq!(program.matches(range, &key, &ctx, &rules), matches, "{} on {ctx:?}", rule.conditions[0]);
                // The prefilter is a necessary condition: it never drops a matching rule.
                assert!(!matches || prefilter.passes(&values), "{} on {ctx:?}", rule.conditions[0]);
            }
        }
        let (filtering, rejected) = rules.iter().zip(program.prefilters()).fold((0, 0), |(f, r), (rule, p)| {
            let ctx = SelectionContext::default();
            (
                f + usize::from(p.slot != ALWAYS),
                r + usize::from(
                    p.slot != ALWAYS && !p.passes(&PrefilterValues::new(&ContextKey::new(&ctx))) && !rule.matches(&ctx),
                ),
            )
        });
        assert!(
            filtering > 0 && rejected == filtering,
            "integer first checks reject an empty context: {rejected} of {filtering}"
        );
    }
}
