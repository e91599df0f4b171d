//! The YAML schema v1.0: seed 000's examples and error texts, every operator on every
//! field kind, lints, and hostile input.

use layerzero_config::{
    ConditionValue, ConfigError, ConfigSchema, KernelCatalog, KernelPolicy, Operator, SchemaError, compile_condition,
    parse_condition_key,
};
use layerzero_types::{
    ComputeCapability, ContextField, DType, Device, KernelId, Layout, Operation, OperationType, Platform,
    SelectionContext,
};

const SEED_EXAMPLE: &str = include_str!("../../../configs/kernels.seed-example.yaml");

fn errors(source: &str) -> Vec<String> {
    ConfigSchema.validate(source).iter().map(ToString::to_string).collect()
}

fn rule_with(conditions: &str) -> String {
    format!(
        "version: \"1.0\"\ndispatch_rules:\n  - operation: \"attention.*\"\n    conditions: {conditions}\n    kernel: k\n"
    )
}

#[test]
fn the_seed_example_loads_compiles_and_warns_about_its_allow_list() {
    let loaded = ConfigSchema.load(SEED_EXAMPLE).unwrap();
    assert_eq!(loaded.config.dispatch_rules.len(), 5);
    assert_eq!(loaded.compiled.rules().len(), 5);
    let causal: Vec<_> = loaded
        .compiled
        .rules_for(OperationType::AttentionCausal.into())
        .map(|rule| (rule.index, rule.priority))
        .collect();
    assert_eq!(causal, [(0, 100), (1, 90), (2, 85)]);
    let lock = loaded.compiled.lock_for(OperationType::AttentionPrefill.into()).unwrap();
    assert_eq!(lock.kernel.as_str(), "flash_attention_v2");
    // The seed's contradiction: `flash_attn_*` does not allow `flash_attention_v2`.
    let rule0 = loaded.warnings.iter().find(|w| w.path == "dispatch_rules[0].kernel").unwrap();
    assert_eq!(rule0.message, "Rule can never apply: its kernel 'flash_attention_v2' matches no kernel_allows pattern");
    assert_eq!((rule0.position.line, rule0.position.column), (17, 13));
    let fallback = loaded.compiled.fallback_chain(OperationType::AttentionCausal.into());
    let names: Vec<_> = fallback.iter().map(|k| k.as_str()).collect();
    assert_eq!(names, ["flash_attention_v2", "xformers_memory_efficient", "torch_sdpa"]);
    insta::assert_snapshot!("seed_example_warnings", warnings_text(&loaded.warnings));
}

fn warnings_text(warnings: &[layerzero_config::LintWarning]) -> String {
    warnings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_seed_example_also_loads_as_json() {
    let yaml = ConfigSchema.load(SEED_EXAMPLE).unwrap();
    let json = serde_json::to_string_pretty(&yaml.config).unwrap();
    let again = ConfigSchema.load(&json).unwrap();
    assert_eq!(again.config, yaml.config);
    // And as plain serde, through serde_yaml.
    let serde_config: layerzero_config::KernelsConfig = serde_yaml::from_str(SEED_EXAMPLE).unwrap();
    assert_eq!(serde_config, yaml.config);
}

#[test]
fn every_seed_error_text_appears_for_its_case() {
    assert_eq!(errors("defaults: {}\n"), ["version: Missing required field"]);
    assert_eq!(errors("version: \"2.0\"\n"), ["version: Unsupported version, must be one of ['1.0'] (2.0)"]);
    assert_eq!(
        errors("version: \"1.0\"\ndispatch_rules:\n  - kernel: k\n"),
        ["dispatch_rules[0].operation: Missing required field"]
    );
    assert_eq!(
        errors("version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: 123}\n"),
        ["dispatch_rules[0].kernel: Must be string (123)"]
    );
    assert_eq!(errors(&rule_with("{dtype: fp16}")), ["dispatch_rules[0].conditions.dtype: Invalid dtype (fp16)"]);
    assert_eq!(
        errors(&rule_with("{batch_size: \"8\"}")),
        ["dispatch_rules[0].conditions.batch_size: Must be integer (8)"]
    );
    assert_eq!(
        errors("version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, priority: 2000}\n"),
        ["dispatch_rules[0].priority: Must be between 0 and 1000 (2000)"]
    );
}

#[test]
fn all_errors_are_reported_at_once_with_positions() {
    let source = "\
version: \"2.0\"
defaults:
  fallback_polcy: torch_sdpa
dispatch_rules:
  - operation: \"attention.*\"
    conditions:
      dtype: [float16, fp8e]
      batch_sise_gte: 8
      seq_len_gtee: 10
      is_causal: yes
      dropout_p_gt: high
      head_dim_match: \"1*\"
    kernel: flash_attention_v2
    priority: 2000
  - operation: attention.casual
    kernel: \"bad kernel\"
    colour: red
kernel_denies: [\"[unclosed\"]
kernel_lock:
  rms_norm: k
";
    let found = ConfigSchema.validate(source);
    insta::assert_snapshot!("schema_errors", found.iter().map(SchemaError::located).collect::<Vec<_>>().join("\n"));
    assert!(found.len() >= 12, "{found:#?}");
    let dtype = found.iter().find(|e| e.path == "dispatch_rules[0].conditions.dtype[1]").unwrap();
    assert_eq!((dtype.position.line, dtype.position.column), (7, 24));
    // The error type renders the same list.
    let err = ConfigSchema.load(source).unwrap_err();
    assert!(matches!(&err, ConfigError::Schema { errors } if errors.len() == found.len()));
    assert!(err.to_string().starts_with(&format!("{} schema errors\n  1:10: version", found.len())));
}

#[test]
fn unknown_names_suggest_the_nearest() {
    let hint = |source: &str| ConfigSchema.validate(source)[0].hint.clone();
    assert_eq!(hint("version: \"1.0\"\ndispatch_rule: []\n").as_deref(), Some("did you mean 'dispatch_rules'?"));
    assert_eq!(hint(&rule_with("{num_head: 8}")).as_deref(), Some("did you mean 'num_heads'?"));
    assert_eq!(hint(&rule_with("{num_heads_not_inn: [8]}")).as_deref(), Some("did you mean 'not_in'?"));
    assert_eq!(hint(&rule_with("{dtype: bf16}")).as_deref(), Some("did you mean 'bfloat16'?"));
    let err = parse_condition_key("seq_len_gtee").unwrap_err();
    assert_eq!((err.message.as_str(), err.value.as_deref()), ("Unknown operator", Some("gtee")));
}

fn holds(key: &str, value: ConditionValue, ctx: &SelectionContext) -> bool {
    compile_condition(key, &value).unwrap_or_else(|e| panic!("{key}: {e}")).holds(ctx)
}

#[test]
fn every_operator_on_integer_fields() {
    use ConditionValue::{Int, List};
    let ctx = SelectionContext::builder().batch_size(8).build().unwrap();
    let cases = [
        ("batch_size", Int(8), true),
        ("batch_size_eq", Int(9), false),
        ("batch_size_ne", Int(9), true),
        ("batch_size_gt", Int(8), false),
        ("batch_size_gte", Int(8), true),
        ("batch_size_lt", Int(9), true),
        ("batch_size_lte", Int(7), false),
        ("batch_size_in", List(vec![Int(1), Int(8)]), true),
        ("batch_size_not_in", List(vec![Int(1), Int(8)]), false),
        ("batch_size", List(vec![Int(4), Int(8)]), true),
    ];
    for (key, value, expected) in cases {
        assert_eq!(holds(key, value.clone(), &ctx), expected, "{key}: {value}");
        // An absent field satisfies no condition, whatever the operator.
        assert!(!holds(key, value, &SelectionContext::default()), "{key} on an absent field");
    }
    for field in ContextField::ALL.into_iter().filter(|f| f.kind() == layerzero_types::FieldKind::Int) {
        assert!(compile_condition(&format!("{field}_gte"), &Int(1)).is_ok(), "{field}");
    }
    let err = compile_condition("batch_size_match", &ConditionValue::Str("8*".into())).unwrap_err();
    assert_eq!(err.message, "Operator 'match' needs a text field (dtype, device, platform, layout)");
}

#[test]
fn every_operator_on_text_fields() {
    use ConditionValue::{List, Str};
    let s = |v: &str| Str(v.to_owned());
    let ctx =
        SelectionContext::builder().dtype(DType::BF16).device(Device::Cuda(1)).layout(Layout::Bshd).build().unwrap();
    let cases = [
        ("dtype", s("bfloat16"), true),
        ("dtype_eq", s("float16"), false),
        ("dtype_ne", s("float32"), true),
        ("dtype_in", List(vec![s("float16"), s("bfloat16")]), true),
        ("dtype_not_in", List(vec![s("float32")]), true),
        ("dtype_match", s("*float16"), true),
        ("dtype_regex", s("b?float(16|32)"), true),
        ("dtype_regex", s("float"), false), // the regex matches the whole value
        ("device", s("cuda:1"), true),
        ("device_match", s("cuda:*"), true),
        ("device_regex", s("cuda:[02]"), false),
        ("platform", s("cuda"), true),
        ("platform_not_in", List(vec![s("cpu")]), true),
        ("platform_match", s("r*"), false),
        ("layout", s("BSHD"), true),
        ("layout_ne", s("BHSD"), true),
    ];
    for (key, value, expected) in cases {
        assert_eq!(holds(key, value.clone(), &ctx), expected, "{key}: {value}");
    }
    let err = compile_condition("dtype_gt", &s("float16")).unwrap_err();
    assert_eq!(err.message, "Operator 'gt' needs a numeric field");
    assert_eq!(compile_condition("platform", &s("tpu")).unwrap_err().to_string(), ": Invalid platform (tpu)");
    assert_eq!(compile_condition("device", &s("gpu0")).unwrap_err().to_string(), ": Invalid device (gpu0)");
    assert!(compile_condition("dtype_regex", &s("(")).is_err());
    assert!(compile_condition("dtype_regex", &s(&"a".repeat(2000))).is_err());
}

#[test]
fn every_operator_on_bool_float_and_capability_fields() {
    use ConditionValue::{Bool, Float, Int, List, Str};
    let ctx = SelectionContext::builder()
        .is_causal(true)
        .dropout_p(0.25)
        .compute_capability(ComputeCapability::new(9, 0))
        .build()
        .unwrap();
    let cases = [
        ("is_causal", Bool(true), true),
        ("is_causal_ne", Bool(true), false),
        ("is_causal_in", List(vec![Bool(false)]), false),
        ("dropout_p_gt", Float(0.0), true),
        ("dropout_p_gt", Int(0), true),
        ("dropout_p_lte", Float(0.25), true),
        ("dropout_p_lt", Float(0.25), false),
        ("dropout_p", Float(0.25), true),
        ("dropout_p_not_in", List(vec![Float(0.5)]), true),
        ("compute_capability_gte", Str("8.0".into()), true),
        ("compute_capability_lt", Float(9.0), false),
    ];
    for (key, value, expected) in cases {
        assert_eq!(holds(key, value.clone(), &ctx), expected, "{key}: {value}");
    }
    assert_eq!(compile_condition("is_causal", &Str("yes".into())).unwrap_err().message, "Must be boolean");
    assert_eq!(compile_condition("dropout_p_gt", &Str("high".into())).unwrap_err().message, "Must be number");
    assert_eq!(compile_condition("batch_size", &Int(-1)).unwrap_err().message, "Must be non-negative");
    assert_eq!(parse_condition_key("num_kv_heads_not_in").unwrap(), (ContextField::NumKvHeads, Operator::NotIn));
}

#[test]
fn operation_globs_locks_allows_and_denies() {
    let loaded = ConfigSchema
        .load(
            r#"
version: "1.0"
dispatch_rules:
  - {operation: "attention.*", kernel: a}
  - {operation: "*norm", kernel: b}
  - {operation: "attention.{causal,full}", kernel: c}
kernel_locks:
  "attention.*": pattern_lock
  attention.decode: exact_lock
  "*": any_lock
kernel_denies: ["*_debug"]
kernel_allows: ["flash_*", "*_debug", "torch_sdpa"]
"#,
        )
        .unwrap();
    let c = &loaded.compiled;
    let kernels = |op: OperationType| c.rules_for(op.into()).map(|r| r.kernel.as_str()).collect::<Vec<_>>();
    assert_eq!(kernels(OperationType::AttentionCausal), ["a", "c"]);
    assert_eq!(kernels(OperationType::AttentionDecode), ["a"]);
    assert_eq!(kernels(OperationType::NormRms), ["b"]);
    assert_eq!(kernels(OperationType::Rope), Vec::<&str>::new());
    let custom = Operation::parse("moe.norm").unwrap();
    assert_eq!(c.rules_for(custom).map(|r| r.kernel.as_str()).collect::<Vec<_>>(), ["b"]);
    // Exact beats pattern; among patterns the first in the file.
    assert_eq!(c.lock_for(OperationType::AttentionDecode.into()).unwrap().kernel.as_str(), "exact_lock");
    assert_eq!(c.lock_for(OperationType::AttentionCausal.into()).unwrap().kernel.as_str(), "pattern_lock");
    assert_eq!(c.lock_for(OperationType::Rope.into()).unwrap().kernel.as_str(), "any_lock");
    let policy = |name: &str| c.kernel_policy(KernelId::new(name).unwrap());
    assert_eq!(policy("flash_v3"), KernelPolicy::Allowed);
    assert_eq!(policy("flash_debug"), KernelPolicy::Denied { pattern: "*_debug" });
    assert_eq!(policy("xformers"), KernelPolicy::NotAllowed);
}

#[test]
fn lints_shadowed_rules_denied_locks_and_regex_patterns() {
    let loaded = ConfigSchema
        .load(
            r#"
version: "1.0"
defaults: {fallback_policy: torch_debug}
dispatch_rules:
  - {operation: "attention.*", conditions: {dtype: float16}, kernel: a, priority: 100}
  - {operation: attention.causal, conditions: {dtype: float16, batch_size_gte: 8}, kernel: b, priority: 90}
  - {operation: attention.causal, conditions: {dtype: bfloat16}, kernel: c, priority: 80}
kernel_locks: {rms_norm: norm_debug}
kernel_denies: ["*_debug"]
kernel_allows: ["flash_attn.*", "a", "b", "c", "*_debug"]
fallback_chains: {rope: [rope_debug, a]}
"#,
        )
        .unwrap();
    insta::assert_snapshot!("lint_warnings", warnings_text(&loaded.warnings));
    let paths: Vec<_> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "defaults.fallback_policy",
            "dispatch_rules[1]",
            "kernel_locks.rms_norm",
            "kernel_allows[0]",
            "fallback_chains.rope[0]",
        ]
    );
}

#[test]
fn hostile_input_is_refused_without_panicking() {
    let deep = format!("version: \"1.0\"\nx: {}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_errors = errors(&deep);
    assert!(deep_errors[0].contains("deeper than") || deep_errors[0].contains("recursion"), "{deep_errors:?}");
    let huge = format!("version: \"1.0\"\n# {}\n", "x".repeat(2 << 20));
    assert!(errors(&huge)[0].contains("too large"));
    let regex = rule_with(&format!("{{dtype_regex: \"{}\"}}", "(a{1,1000}){1,1000}"));
    assert!(errors(&regex)[0].contains("Invalid regex"), "{:?}", errors(&regex));
    for junk in ["", "- 1\n- 2", "{", "version: [", "\t\u{0}", "? [a]\n: b", "version: !!binary aGk="] {
        assert!(!ConfigSchema.validate(junk).is_empty(), "{junk:?} should not validate");
    }
}

#[test]
fn kernel_catalogs_are_data() {
    let catalog = KernelCatalog::from_yaml(
        "kernels:\n  - id: rms_cpu\n    operations: [rms_norm]\n    platform: cpu\n    backend: cpu\n    constraints: {dtypes: [float32]}\n",
    )
    .unwrap();
    let ctx = SelectionContext::builder().dtype(DType::F16).platform(Platform::Cpu).build().unwrap();
    assert!(catalog.kernels[0].check(&ctx).is_err());
    let bad =
        KernelCatalog::from_yaml("kernels:\n  - id: x\n    operations: []\n    platform: cpu\n    backend: cpu\n");
    assert!(matches!(bad, Err(ConfigError::Catalog { .. })));
    let typo = KernelCatalog::from_yaml("kernels:\n  - id: x\n    operation: [rms_norm]\n").unwrap_err();
    assert!(typo.to_string().contains("line 3"), "{typo}");
}
