//! Lint warnings: rules files that are valid but surely wrong.

use std::fmt;

use std::hash::{Hash, Hasher};

use layerzero_types::KernelId;
use rustc_hash::{FxHashMap, FxHasher};
use serde::Serialize;

use crate::compile::{CompiledConfig, CompiledRule, KernelPolicy, OperationMatcher};
use crate::document::Position;
use crate::model::{ConditionValue, KernelsConfig};
use crate::schema::key_path;

/// Something a rules file allows but probably does not mean: a rule that can never
/// apply, a lock on a denied kernel, a regex where a glob is read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LintWarning {
    /// Where: `dispatch_rules[0].kernel`.
    pub path: String,
    /// What is probably wrong.
    pub message: String,
    /// Line and column (0 when unknown).
    pub position: Position,
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.position.is_known() {
            write!(f, "{}: ", self.position)?;
        }
        write!(f, "warning: {}: {}", self.path, self.message)
    }
}

fn warn(out: &mut Vec<LintWarning>, path: String, message: String) {
    out.push(LintWarning { path, message, position: Position::default() });
}

fn excluded(compiled: &CompiledConfig, name: &str) -> Option<String> {
    let id = KernelId::lookup(name)?;
    match compiled.kernel_policy(id) {
        KernelPolicy::Allowed => None,
        KernelPolicy::Denied { pattern } => {
            Some(format!("kernel '{name}' is denied by kernel_denies pattern '{pattern}'"))
        }
        KernelPolicy::NotAllowed => Some(format!("kernel '{name}' matches no kernel_allows pattern")),
    }
}

/// Characters that mean something in a regex and nothing (or something else) in a glob.
fn looks_like_regex(pattern: &str) -> bool {
    pattern.contains(".*") || pattern.contains(".+") || pattern.contains(['^', '$', '\\', '(', ')', '|', '+'])
}

/// Whether `a` covers `b` (every operation `b` applies to, `a` applies to too), as far as
/// the text tells: the same text, `*`, or a glob that matches `b`'s exact name.
fn covers(a: &OperationMatcher, b: &OperationMatcher) -> bool {
    if a.as_str() == b.as_str() || a.as_str() == "*" {
        return true;
    }
    match (a, b) {
        (OperationMatcher::Glob(glob), OperationMatcher::Exact(op)) => glob.matches(*op),
        _ => false,
    }
}

/// Each rule shadowed by an earlier rule in evaluation order (priority, then file
/// order), with the first such rule: one that covers its operation with a subset of its
/// conditions, and so matches whenever it does.
///
/// Rather than compare every pair of rules, each earlier rule is filed under one of its
/// conditions, the one fewest rules share (or under "no conditions"): a rule it shadows
/// has that condition too, so a later rule looks only in the files of its own
/// conditions. The index only narrows the search; the comparison is the full one.
fn shadowed_rules<'c>(
    config: &KernelsConfig,
    compiled: &'c CompiledConfig,
) -> Vec<(&'c CompiledRule, &'c CompiledRule)> {
    let rules = compiled.rules();
    let conditions = |rule: &CompiledRule| &config.dispatch_rules[rule.index].conditions;
    let mut sharing: FxHashMap<u64, u32> = FxHashMap::default();
    for rule in rules {
        for (key, value) in conditions(rule).iter() {
            *sharing.entry(condition_hash(key, value)).or_default() += 1;
        }
    }
    let mut unconditional: Vec<usize> = Vec::new();
    let mut filed: FxHashMap<u64, Vec<usize>> = FxHashMap::default();
    let mut out = Vec::new();
    let mut files: Vec<u64> = Vec::new();
    for (later_pos, later) in rules.iter().enumerate() {
        let later_conditions = conditions(later);
        files.clear();
        files.extend(later_conditions.iter().map(|(key, value)| condition_hash(key, value)));
        files.sort_unstable();
        files.dedup();
        // The first (in evaluation order) earlier rule that shadows this one: each file
        // is in evaluation order, so each is read up to its first hit or the best so far.
        let mut shadow = later_pos;
        for file in std::iter::once(&unconditional).chain(files.iter().filter_map(|hash| filed.get(hash))) {
            for &earlier_pos in file.iter().take_while(|&&pos| pos < shadow) {
                let earlier = &rules[earlier_pos];
                if covers(&earlier.operation, &later.operation)
                    && conditions(earlier).iter().all(|(k, v)| later_conditions.get(k) == Some(v))
                {
                    shadow = earlier_pos;
                    break;
                }
            }
        }
        if shadow < later_pos {
            out.push((later, &rules[shadow]));
        }
        let rarest = later_conditions
            .iter()
            .map(|(key, value)| condition_hash(key, value))
            .min_by_key(|hash| sharing.get(hash).copied().unwrap_or(0));
        match rarest {
            Some(hash) => filed.entry(hash).or_default().push(later_pos),
            None => unconditional.push(later_pos),
        }
    }
    out
}

/// A hash of one condition, equal for conditions that compare equal (`0.0` and `-0.0`
/// included).
fn condition_hash(key: &str, value: &ConditionValue) -> u64 {
    fn value_hash(value: &ConditionValue, hasher: &mut FxHasher) {
        match value {
            ConditionValue::Bool(b) => (0u8, b).hash(hasher),
            ConditionValue::Int(i) => (1u8, i).hash(hasher),
            ConditionValue::Float(f) => (2u8, if *f == 0.0 { 0 } else { f.to_bits() }).hash(hasher),
            ConditionValue::Str(s) => (3u8, s).hash(hasher),
            ConditionValue::List(items) => {
                (4u8, items.len()).hash(hasher);
                for item in items {
                    value_hash(item, hasher);
                }
            }
        }
    }
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    value_hash(value, &mut hasher);
    hasher.finish()
}

pub(crate) fn lint(config: &KernelsConfig, compiled: &CompiledConfig) -> Vec<LintWarning> {
    let mut out = Vec::new();
    // Many rules name the same few kernels: look each up once.
    let mut exclusions: FxHashMap<&str, Option<String>> = FxHashMap::default();
    for (i, rule) in config.dispatch_rules.iter().enumerate() {
        let why = exclusions.entry(&rule.kernel).or_insert_with(|| excluded(compiled, &rule.kernel));
        if let Some(why) = why {
            warn(&mut out, format!("dispatch_rules[{i}].kernel"), format!("Rule can never apply: its {why}"));
        }
    }
    for (later, earlier) in shadowed_rules(config, compiled) {
        warn(
            &mut out,
            format!("dispatch_rules[{}]", later.index),
            format!(
                "Rule is shadowed by dispatch_rules[{}] (priority {}), whose operation and conditions are the same \
                 or weaker: it applies only when kernel '{}' cannot run",
                earlier.index,
                earlier.priority,
                earlier.kernel.as_str()
            ),
        );
    }
    for (operation, kernel) in config.kernel_locks.iter() {
        if let Some(why) = excluded(compiled, kernel) {
            warn(&mut out, key_path("kernel_locks", operation), format!("Lock can never be satisfied: its {why}"));
        }
    }
    for (operation, kernels) in config.fallback_chains.iter() {
        for (i, kernel) in kernels.iter().enumerate() {
            if let Some(why) = excluded(compiled, kernel) {
                let path = format!("{}[{i}]", key_path("fallback_chains", operation));
                warn(&mut out, path, format!("Fallback is never used: its {why}"));
            }
        }
    }
    if let Some(policy) = &config.defaults.fallback_policy
        && let Some(why) = excluded(compiled, policy)
    {
        warn(&mut out, "defaults.fallback_policy".into(), format!("Fallback is never used: its {why}"));
    }
    for (list, patterns) in [("kernel_allows", &config.kernel_allows), ("kernel_denies", &config.kernel_denies)] {
        for (i, pattern) in patterns.iter().enumerate() {
            if looks_like_regex(pattern) {
                let glob = pattern.replace(".*", "*").replace(".+", "?*");
                warn(
                    &mut out,
                    format!("{list}[{i}]"),
                    format!("Pattern '{pattern}' looks like a regex, but {list} uses globs (did you mean '{glob}'?)"),
                );
            }
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DispatchRule, OrderedMap, SCHEMA_VERSION};

    /// The definition, pair by pair.
    fn shadowed_naively(config: &KernelsConfig, compiled: &CompiledConfig) -> Vec<(usize, usize)> {
        let rules = compiled.rules();
        let conditions = |rule: &CompiledRule| &config.dispatch_rules[rule.index].conditions;
        rules
            .iter()
            .enumerate()
            .filter_map(|(later_pos, later)| {
                rules[..later_pos]
                    .iter()
                    .find(|earlier| {
                        covers(&earlier.operation, &later.operation)
                            && conditions(earlier).iter().all(|(k, v)| conditions(later).get(k) == Some(v))
                    })
                    .map(|earlier| (later.index, earlier.index))
            })
            .collect()
    }

    #[test]
    fn the_shadow_index_finds_what_comparing_every_pair_finds() {
        use ConditionValue as V;
        let operations = ["attention.*", "attention.causal", "*", "rms_norm", "moe.topk_gating", "moe.*", "rope"];
        let conditions = [
            ("dtype", V::Str("float16".into())),
            ("dtype", V::List(vec![V::Str("float16".into()), V::Str("bfloat16".into())])),
            ("batch_size_gte", V::Int(8)),
            ("batch_size_gte", V::Int(16)),
            ("dropout_p", V::Float(0.0)),
            ("dropout_p", V::Float(-0.0)),
            ("is_causal", V::Bool(true)),
            ("platform", V::Str("cuda".into())),
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut shadows = 0;
        for _ in 0..300 {
            let dispatch_rules = (0..next(40))
                .map(|i| {
                    let mut rule_conditions: Vec<(String, ConditionValue)> = Vec::new();
                    for _ in 0..next(4) {
                        let (key, value) = &conditions[next(conditions.len())];
                        if rule_conditions.iter().all(|(k, _)| k != key) {
                            rule_conditions.push(((*key).to_owned(), value.clone()));
                        }
                    }
                    DispatchRule {
                        operation: operations[next(operations.len())].into(),
                        conditions: OrderedMap(rule_conditions),
                        kernel: format!("k{}", i % 5),
                        priority: Some(10 * next(4) as u32),
                    }
                })
                .collect();
            let config = KernelsConfig { version: SCHEMA_VERSION.into(), dispatch_rules, ..KernelsConfig::default() };
            let compiled = CompiledConfig::compile(&config).unwrap();
            let fast: Vec<_> = shadowed_rules(&config, &compiled)
                .into_iter()
                .map(|(later, earlier)| (later.index, earlier.index))
                .collect();
            assert_eq!(fast, shadowed_naively(&config, &compiled));
            shadows += fast.len();
        }
        assert!(shadows > 100, "the rule sets exercise shadowing ({shadows})");
    }
}
