//! The engine against a naive, obviously-correct evaluator of the same rules, on random
//! kernels, policies and contexts; and the cached answer against the uncached one.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use layerzero_config::{
    CompiledConfig, ConditionValue, Defaults, DispatchConfig, DispatchRule, KernelsConfig, OrderedMap,
};
use layerzero_registry::{BackendRegistry, KernelRegistry};
use layerzero_select::{SelectionEngine, SelectionReason};
use layerzero_types::{DType, KernelSpec, Operation, OperationType, Platform, SelectionContext};
use proptest::prelude::*;

const DTYPES: [DType; 3] = [DType::F16, DType::BF16, DType::F32];
const NAMES: [&str; 7] = ["pk0", "pk1", "pk2", "pk3", "pk4", "pk5", "pk_absent"];

#[derive(Clone, Debug)]
struct Kernel {
    priority: u32,
    dtypes: Option<Vec<DType>>,
    /// The longest row the kernel's spec takes (`hidden_size`).
    max_hidden: Option<u32>,
    available: bool,
}

#[derive(Clone, Debug)]
enum Cond {
    Batch(&'static str, i64),
    Hidden(&'static str, i64),
    DTypeIn(Vec<DType>),
    Causal(bool),
}

#[derive(Clone, Debug)]
struct Rule {
    any_operation: bool,
    conditions: Vec<Cond>,
    kernel: usize,
    priority: u32,
}

#[derive(Clone, Debug)]
struct Case {
    kernels: Vec<Kernel>,
    rules: Vec<Rule>,
    lock: Option<usize>,
    deny: Option<usize>,
    allow: Option<Vec<usize>>,
    chain: Vec<usize>,
    policy: Option<usize>,
    ctx: SelectionContext,
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DTYPES.to_vec())
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        (prop::sample::select(vec!["eq", "ne", "gt", "gte", "lt", "lte"]), 0i64..20)
            .prop_map(|(op, n)| Cond::Batch(op, n)),
        (prop::sample::select(vec!["eq", "ne", "gt", "gte", "lt", "lte"]), 0i64..20)
            .prop_map(|(op, n)| Cond::Hidden(op, n)),
        prop::collection::vec(dtype(), 1..3).prop_map(Cond::DTypeIn),
        any::<bool>().prop_map(Cond::Causal),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let kernel = (
        0u32..5,
        prop::option::of(prop::collection::vec(dtype(), 1..3)),
        prop::option::of(1u32..20),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(priority, dtypes, max_hidden, available)| Kernel { priority, dtypes, max_hidden, available });
    let rule = (prop::bool::weighted(0.3), prop::collection::vec(cond(), 0..3), 0..NAMES.len(), 0u32..4)
        .prop_map(|(any_operation, conditions, kernel, priority)| Rule { any_operation, conditions, kernel, priority });
    let ctx = (
        prop::option::of(0u32..20),
        prop::option::of(dtype()),
        prop::option::of(any::<bool>()),
        prop::option::of(1u32..20),
    )
        .prop_map(|(batch_size, dtype, is_causal, hidden_size)| SelectionContext {
            batch_size,
            dtype,
            is_causal,
            hidden_size,
            ..SelectionContext::default()
        });
    (
        prop::collection::vec(kernel, 1..6),
        prop::collection::vec(rule, 0..8),
        prop::option::weighted(0.15, 0..NAMES.len()),
        prop::option::weighted(0.3, 0..NAMES.len()),
        prop::option::weighted(0.3, prop::collection::vec(0..NAMES.len(), 1..4)),
        prop::collection::vec(0..NAMES.len(), 0..4),
        prop::option::of(0..NAMES.len()),
        ctx,
    )
        .prop_map(|(kernels, rules, lock, deny, allow, chain, policy, ctx)| Case {
            kernels,
            rules,
            lock,
            deny,
            allow,
            chain,
            policy,
            ctx,
        })
}

fn to_config(case: &Case) -> KernelsConfig {
    let name = |i: usize| NAMES[i].to_owned();
    let rules = case
        .rules
        .iter()
        .map(|r| DispatchRule {
            operation: if r.any_operation { "*".into() } else { "rms_norm".into() },
            conditions: OrderedMap(
                r.conditions
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match c {
                        // Repeated keys are not allowed in a file; conditions on one field
                        // with different operators are.
                        Cond::Batch(op, n) => (format!("batch_size_{op}"), ConditionValue::Int(*n)),
                        Cond::Hidden(op, n) => (format!("hidden_size_{op}"), ConditionValue::Int(*n)),
                        Cond::DTypeIn(ds) => (
                            if i % 2 == 0 { "dtype".into() } else { "dtype_in".into() },
                            ConditionValue::List(ds.iter().map(|d| ConditionValue::Str(d.as_str().into())).collect()),
                        ),
                        Cond::Causal(b) => ("is_causal".into(), ConditionValue::Bool(*b)),
                    })
                    .collect(),
            ),
            kernel: name(r.kernel),
            priority: Some(r.priority),
        })
        .collect::<Vec<_>>();
    // Deduplicate condition keys by keeping the first (as a file could not repeat them).
    let rules = rules
        .into_iter()
        .map(|mut r| {
            let mut seen = Vec::new();
            r.conditions.0.retain(|(k, _)| {
                if seen.contains(k) {
                    false
                } else {
                    seen.push(k.clone());
                    true
                }
            });
            r
        })
        .collect();
    KernelsConfig {
        version: "1.0".into(),
        defaults: Defaults { fallback_policy: case.policy.map(name), default_priority: 50 },
        dispatch_rules: rules,
        kernel_locks: OrderedMap(case.lock.map(|k| ("rms_norm".to_owned(), name(k))).into_iter().collect()),
        kernel_allows: case.allow.clone().unwrap_or_default().into_iter().map(name).collect(),
        kernel_denies: case.deny.map(name).into_iter().collect(),
        fallback_chains: OrderedMap(vec![("rms_norm".into(), case.chain.iter().copied().map(name).collect())]),
    }
}

/// What the engine should answer, computed the obvious way from the config's data.
fn naive(case: &Case, config: &KernelsConfig) -> Result<(String, SelectionReason, Vec<String>), ()> {
    let registered = |i: usize| i < case.kernels.len();
    let valid = |i: usize| {
        if !registered(i) {
            return false;
        }
        let k = &case.kernels[i];
        let dtype_ok = match (&k.dtypes, case.ctx.dtype) {
            (Some(list), Some(d)) => list.contains(&d),
            _ => true,
        };
        let hidden_ok = match (k.max_hidden, case.ctx.hidden_size) {
            (Some(max), Some(h)) => h <= max,
            _ => true,
        };
        let denied = case.deny == Some(i);
        let allowed = case.allow.as_ref().is_none_or(|list| list.contains(&i));
        k.available && dtype_ok && hidden_ok && !denied && allowed
    };
    let holds = |c: &(String, ConditionValue)| {
        let (key, value) = c;
        match (key.as_str(), value) {
            ("is_causal", ConditionValue::Bool(b)) => case.ctx.is_causal == Some(*b),
            ("dtype" | "dtype_in", ConditionValue::List(items)) => case
                .ctx
                .dtype
                .is_some_and(|d| items.iter().any(|item| matches!(item, ConditionValue::Str(s) if s == d.as_str()))),
            (key, ConditionValue::Int(n)) => {
                let (field, op) = match key.strip_prefix("hidden_size_") {
                    Some(op) => (case.ctx.hidden_size, op),
                    None => (case.ctx.batch_size, key.trim_start_matches("batch_size_")),
                };
                field.is_some_and(|b| {
                    let (b, n) = (i64::from(b), *n);
                    match op {
                        "eq" => b == n,
                        "ne" => b != n,
                        "gt" => b > n,
                        "gte" => b >= n,
                        "lt" => b < n,
                        _ => b <= n,
                    }
                })
            }
            _ => unreachable!("the generator makes no other condition"),
        }
    };
    let index = |name: &str| NAMES.iter().position(|n| *n == name).unwrap();
    let chosen = if let Some(lock) = case.lock {
        if !valid(lock) {
            return Err(());
        }
        (lock, SelectionReason::Lock { lock: 0 })
    } else {
        let mut order: Vec<usize> = (0..config.dispatch_rules.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(config.dispatch_rules[i].priority));
        let by_rule = order.into_iter().find(|&i| {
            let rule = &config.dispatch_rules[i];
            rule.conditions.0.iter().all(holds) && valid(index(&rule.kernel))
        });
        match by_rule {
            Some(i) => (index(&config.dispatch_rules[i].kernel), SelectionReason::Rule { rule: i as u32 }),
            None => {
                let mut best: Option<usize> = None;
                for i in 0..case.kernels.len() {
                    if valid(i) && best.is_none_or(|b| case.kernels[i].priority > case.kernels[b].priority) {
                        best = Some(i);
                    }
                }
                let best = best.ok_or(())?;
                (best, SelectionReason::Score { priority: case.kernels[best].priority })
            }
        }
    };
    let mut fallbacks: Vec<usize> = Vec::new();
    for i in case.chain.iter().copied().chain(case.policy) {
        if i != chosen.0 && valid(i) && !fallbacks.contains(&i) {
            fallbacks.push(i);
        }
    }
    Ok((NAMES[chosen.0].to_owned(), chosen.1, fallbacks.into_iter().map(|i| NAMES[i].to_owned()).collect()))
}

fn engine(case: &Case, policy: CompiledConfig) -> SelectionEngine {
    let kernels = Arc::new(KernelRegistry::new());
    for (i, k) in case.kernels.iter().enumerate() {
        let mut spec = KernelSpec::new(NAMES[i], Platform::Cpu)
            .unwrap()
            .for_operation(OperationType::NormRms)
            .with_priority(k.priority)
            .with_backend(if k.available { "cpu" } else { "missing_backend" });
        spec.constraints.dtypes = k.dtypes.clone();
        spec.constraints.hidden_size =
            k.max_hidden.map(|max| layerzero_types::DimConstraint::Range { min: 1, max, multiple_of: 1 });
        // The model checks only dtypes and hidden sizes; causal contexts must not reject anything else.
        spec.constraints.causal = layerzero_types::Support::Supported;
        kernels.register(spec).unwrap();
    }
    SelectionEngine::with_config(kernels, Arc::new(BackendRegistry::detect()), &DispatchConfig::default(), policy)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_naive_evaluator(case in case()) {
        let config = to_config(&case);
        let compiled = CompiledConfig::compile(&config).unwrap();
        let engine = engine(&case, compiled);
        let op: Operation = OperationType::NormRms.into();
        let expected = naive(&case, &config);
        let actual = engine.select_uncached(op, &case.ctx).map(|s| {
            (s.kernel.as_str().to_owned(), s.reason, s.fallbacks().iter().map(|k| k.as_str().to_owned()).collect::<Vec<_>>())
        });
        prop_assert_eq!(actual.clone().map_err(|_| ()), expected);

        // Cached answers equal uncached ones, on the miss and on the hit.
        for _ in 0..2 {
            let cached = engine.select(op, &case.ctx);
            prop_assert_eq!(cached.ok(), engine.select_uncached(op, &case.ctx).ok());
        }
        // Explain agrees with select.
        let explanation = engine.explain_selection(op, &case.ctx);
        prop_assert_eq!(explanation.chosen, actual.ok().map(|a| a.0));
    }
}
