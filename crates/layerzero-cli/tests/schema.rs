//! `layerzero schema`: the JSON Schema accepts every rules file in configs/ and rejects
//! broken ones, checked by an independent validator (the jsonschema crate).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failing fixture fails its test"
)]

use std::path::PathBuf;

use assert_cmd::Command;

fn validator() -> jsonschema::Validator {
    let output = Command::cargo_bin("layerzero").unwrap().arg("schema").assert().success().get_output().stdout.clone();
    let schema: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::validator_for(&schema).expect("the schema is itself valid")
}

fn yaml(text: &str) -> serde_json::Value {
    serde_yaml::from_str(text).unwrap()
}

fn errors(validator: &jsonschema::Validator, instance: &serde_json::Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{}: {e}", e.instance_path)).collect()
}

#[test]
fn every_config_in_the_repository_is_accepted() {
    let validator = validator();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            let instance = yaml(&std::fs::read_to_string(&path).unwrap());
            assert_eq!(errors(&validator, &instance), Vec::<String>::new(), "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no config found in {}", dir.display());
}

#[test]
fn broken_configs_are_rejected() {
    let validator = validator();
    let seed_errors = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/invalid/seed-errors.yaml");
    let instance = yaml(&std::fs::read_to_string(seed_errors).unwrap());
    let found = errors(&validator, &instance);
    for path in
        ["/version", "/dispatch_rules/0/conditions/dtype", "/dispatch_rules/0/kernel", "/dispatch_rules/0/priority"]
    {
        assert!(found.iter().any(|e| e.starts_with(&format!("{path}: "))), "{path} not in {found:#?}");
    }
    for (text, path) in [
        (
            "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, conditions: {batch_sise: 4}}\n",
            "/dispatch_rules/0/conditions",
        ),
        (
            "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, conditions: {dtype_gt: float16}}\n",
            "/dispatch_rules/0/conditions",
        ),
        ("version: \"1.0\"\nkernel_locks: {rms_norm: 5}\n", "/kernel_locks/rms_norm"),
        ("defaults: {}\n", ""),
    ] {
        let found = errors(&validator, &yaml(text));
        assert!(found.iter().any(|e| e.starts_with(&format!("{path}: "))), "{text}: {path} not in {found:#?}");
    }
}

#[test]
fn hidden_size_conditions_are_integers() {
    let validator = validator();
    let accepted = "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, conditions: {hidden_size_gte: 1024, hidden_size_lte: 65536, hidden_size_not_in: [1000]}}\n";
    assert_eq!(errors(&validator, &yaml(accepted)), Vec::<String>::new());
    for text in [
        "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, conditions: {hidden_size_gte: large}}\n",
        "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, conditions: {hidden_size: -1}}\n",
        "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, conditions: {hidden_size_match: \"4*\"}}\n",
    ] {
        let found = errors(&validator, &yaml(text));
        assert!(found.iter().any(|e| e.starts_with("/dispatch_rules/0/conditions")), "{text}: {found:#?}");
    }
}
