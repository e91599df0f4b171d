//! The operator's commands run as a user would: `validate`, `explain`, `kernels`, `info`,
//! with good and bad input, checking exit codes and what is printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failing fixture fails its test"
)]

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

fn layerzero() -> Command {
    Command::cargo_bin("layerzero").expect("the binary is built for its own tests")
}

/// The repository's `configs/` folder.
fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("layerzero-cli-commands-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_accepts_the_seed_example_with_its_lint_warnings() {
    layerzero()
        .arg("validate")
        .arg(configs().join("kernels.seed-example.yaml"))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "kernels.seed-example.yaml:17:13: warning: dispatch_rules[0].kernel: Rule can never apply",
        ))
        .stdout(predicate::str::contains("kernels.seed-example.yaml: valid, 8 warnings"));
}

#[test]
fn validate_reports_every_error_with_file_line_and_column() {
    let seed_errors = configs().join("invalid/seed-errors.yaml");
    let shown = seed_errors.display().to_string();
    layerzero()
        .arg("validate")
        .arg(&seed_errors)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!(
            "{shown}:3:10: version: Unsupported version, must be one of ['1.0'] (got 2.0)"
        )))
        .stdout(predicate::str::contains(format!(
            "{shown}:7:14: dispatch_rules[0].conditions.dtype: Invalid dtype (got fp16); did you mean 'float16'?"
        )))
        .stdout(predicate::str::contains(format!(
            "{shown}:10:15: dispatch_rules[0].priority: Must be between 0 and 1000 (got 2000)"
        )))
        .stdout(predicate::str::contains("invalid, 6 errors"));
}

#[test]
fn validate_shows_where_a_yaml_syntax_error_is() {
    let broken = file("syntax.yaml", "version: \"1.0\"\ndispatch_rules:\n  - operation: rms_norm\n    kernel: [a\n");
    layerzero()
        .arg("validate")
        .arg(&broken)
        .assert()
        .code(1)
        .stdout(predicate::str::is_match(r"syntax\.yaml:5:1: Invalid YAML: .*expected ',' or ']'").unwrap());
}

#[test]
fn validate_exits_1_when_any_file_is_invalid_and_2_when_one_is_missing() {
    let good = file("good.yaml", "version: \"1.0\"\n");
    let bad = file(
        "bad-priority.yaml",
        "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, priority: -1}\n",
    );
    layerzero()
        .arg("validate")
        .arg(&good)
        .arg(&bad)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("good.yaml: valid\n"))
        .stdout(predicate::str::contains(
            "bad-priority.yaml:3:48: dispatch_rules[0].priority: Must be between 0 and 1000 (got -1)",
        ));
    layerzero()
        .args(["validate", "/nonexistent/kernels.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/kernels.yaml: No such file"));
    layerzero().arg("validate").assert().code(2).stderr(predicate::str::contains("Usage"));
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let bad = file("json-bad.yaml", "version: \"1.0\"\nkernel_locks:\n  rms_norm: 5\n");
    let output = layerzero().arg("validate").arg("--json").arg(&bad).assert().code(1).get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    let error = &report["files"][0]["errors"][0];
    assert_eq!(report["files"][0]["valid"], false);
    assert_eq!(error["path"], "kernel_locks.rms_norm");
    assert_eq!((error["line"].as_u64(), error["column"].as_u64()), (Some(3), Some(13)));
}

#[test]
fn explain_says_which_rule_decides_over_a_catalog() {
    let rules = file(
        "explain-rules.yaml",
        "version: \"1.0\"\ndispatch_rules:\n  - operation: attention.causal\n    conditions: {batch_size_gte: 8}\n    kernel: gpu_flash\n    priority: 100\nfallback_chains:\n  attention.causal: [gpu_sdpa]\n",
    );
    let catalog = file(
        "explain-catalog.yaml",
        "kernels:\n  - {id: gpu_flash, operations: [attention.causal], platform: cuda, backend: cuda, priority: 90, constraints: {dtypes: [float16, bfloat16]}}\n  - {id: gpu_sdpa, operations: [attention.causal], platform: cuda, backend: cuda, priority: 10}\n",
    );
    let output = layerzero()
        .args(["explain", "--op", "attention.causal", "--set", "batch_size=16", "--set", "dtype=float16", "--json"])
        .arg("--config")
        .arg(&rules)
        .arg("--catalog")
        .arg(&catalog)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(report["operation"], "attention.causal");
    assert_eq!(report["kernel"], "gpu_flash");
    assert_eq!(report["decided_by"], "rule");
    assert_eq!(report["fallbacks"], serde_json::json!(["gpu_sdpa"]));
    assert_eq!(report["candidates"][0]["verdict"], "valid");

    // float32: the rule's kernel cannot run it, so the rule is skipped and the score decides.
    layerzero()
        .args(["explain", "--op", "attention.causal", "--set", "batch_size=16", "--set", "dtype=float32"])
        .arg("--config")
        .arg(&rules)
        .arg("--catalog")
        .arg(&catalog)
        .assert()
        .success()
        .stdout(predicate::str::contains("gpu_flash [cuda, priority 90]: rejected: dtype requires one of"))
        .stdout(predicate::str::contains("chosen: gpu_sdpa (highest priority (10) of the valid kernels)"));
}

#[test]
fn explain_shows_hidden_size_and_the_limits_it_fails() {
    let rules = file(
        "explain-hidden-rules.yaml",
        "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, conditions: {hidden_size_lte: 1024}, kernel: norm_warp, priority: 100}\n",
    );
    let catalog = file(
        "explain-hidden-catalog.yaml",
        "kernels:\n  - {id: norm_warp, operations: [rms_norm], platform: cuda, backend: cuda, priority: 70, constraints: {hidden_size: {range: {min: 8, max: 1024, multiple_of: 8}}}}\n  - {id: norm_block, operations: [rms_norm], platform: cuda, backend: cuda, priority: 80, constraints: {hidden_size: {range: {min: 8, max: 65536, multiple_of: 8}}}}\n",
    );
    let explain = |hidden: &str| {
        let mut command = layerzero();
        command
            .args(["explain", "--op", "rms_norm", "--set", "dtype=bfloat16", "--set"])
            .arg(format!("hidden_size={hidden}"));
        command.arg("--config").arg(&rules).arg("--catalog").arg(&catalog);
        command.assert()
    };
    explain("512")
        .success()
        .stdout(predicate::str::contains("context: dtype=bfloat16 hidden_size=512"))
        .stdout(predicate::str::contains("chosen: norm_warp (chosen by dispatch_rules[0])"));
    explain("4096")
        .success()
        .stdout(predicate::str::contains(
            "norm_warp [cuda, priority 70]: rejected: hidden_size requires a multiple of 8 in 8..=1024, context has 4096",
        ))
        .stdout(predicate::str::contains("`hidden_size_lte: 1024` fails (context has 4096)"))
        .stdout(predicate::str::contains("chosen: norm_block"));
    explain("0").code(2).stderr(predicate::str::contains("hidden_size must be at least 1, got 0"));
}

#[test]
fn explain_uses_the_built_in_kernels_without_a_catalog() {
    let rules = file("explain-minimal.yaml", "version: \"1.0\"\n");
    layerzero()
        .args(["explain", "--op", "attention.decode", "--set", "seq_len_q=1", "--set", "dtype=float32"])
        .arg("--config")
        .arg(&rules)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "chosen: cpu.attention.split_kv (highest priority (70) of the valid kernels)",
        ));
}

#[test]
fn explain_refuses_bad_arguments() {
    let rules = file("explain-args.yaml", "version: \"1.0\"\n");
    let explain = |extra: &[&str]| {
        let mut command = layerzero();
        command.arg("explain").arg("--config").arg(&rules).args(extra);
        command
    };
    explain(&["--op", "rms_norm", "--set", "batchsize=3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("`batchsize` is not a context field (did you mean `batch_size`?)"));
    explain(&["--op", "rms_norm", "--set", "dtype=fp16"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Invalid dtype"));
    explain(&["--op", "rms_norm", "--set", "batch_size=-1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected a non-negative integer"));
    layerzero()
        .args(["explain", "--op", "rms_norm", "--config", "/nonexistent.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent.yaml"));
    let invalid = file(
        "explain-invalid.yaml",
        "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: k, priority: 5000}\n",
    );
    layerzero().args(["explain", "--op", "rms_norm", "--config"]).arg(&invalid).assert().code(1).stderr(
        predicate::str::contains(
            "explain-invalid.yaml:3:48: dispatch_rules[0].priority: Must be between 0 and 1000 (got 5000)",
        ),
    );
}

#[test]
fn kernels_lists_the_cpu_kernels_and_their_constraints() {
    layerzero()
        .arg("kernels")
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(
                r"cpu\.attention\.split_kv .* cpu +70 +yes +dtypes float32/float16/bfloat16, seq_len_q",
            )
            .unwrap(),
        )
        .stdout(predicate::str::contains("9 kernels"));
    let output = layerzero().args(["kernels", "--json"]).assert().success().get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    let kernels = report["kernels"].as_array().unwrap();
    assert_eq!(kernels.len(), 9);
    assert!(kernels.iter().all(|k| k["available"] == true && k["has_implementation"] == true));
}

#[test]
fn info_and_help_and_usage_errors() {
    layerzero().arg("info").assert().success().stdout(predicate::str::starts_with("backends:\n  cpu (cpu): healthy"));
    layerzero().arg("--help").assert().success().stdout(predicate::str::contains(
        "Exit codes: 0 ok; 1 the input is invalid or a check failed; 2 usage or I/O error.",
    ));
    layerzero().arg("frobnicate").assert().code(2);
}

#[test]
fn diff_shows_which_selections_a_new_config_changes() {
    let output = layerzero()
        .arg("diff")
        .arg(configs().join("kernels.cpu.yaml"))
        .arg(configs().join("kernels.cpu-debug.yaml"))
        .arg("--workload")
        .arg(configs().join("workloads/llama-cpu.yaml"))
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!((report["changed"].as_u64(), report["total"].as_u64()), (Some(3), Some(5)));
    let decode =
        report["cases"].as_array().unwrap().iter().find(|c| c["case"] == "decode attention, 4k cache").unwrap();
    assert_eq!(decode["old"], serde_json::json!({"kernel": "cpu.attention.split_kv", "decided_by": "rule"}));
    assert_eq!(decode["new"], serde_json::json!({"kernel": "cpu.attention.naive", "decided_by": "lock"}));
    let norm = report["cases"].as_array().unwrap().iter().find(|c| c["case"] == "rms_norm").unwrap();
    assert_eq!(norm["changed"], false);

    layerzero()
        .arg("diff")
        .arg(configs().join("kernels.minimal.yaml"))
        .arg(configs().join("kernels.cpu.yaml"))
        .arg("--workload")
        .arg(configs().join("workloads/llama-cpu.yaml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("0 of 5 selections change"));
}

#[test]
fn diff_refuses_a_bad_workload() {
    let cpu = configs().join("kernels.cpu.yaml");
    let bad = file("workload-bad.yaml", "- operation: rms_norm\n  context: {dtype: fp16}\n- operation: rms_nrm\n");
    layerzero()
        .arg("diff")
        .arg(&cpu)
        .arg(&cpu)
        .arg("--workload")
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("workload-bad.yaml: [0].context: dtype=fp16: Invalid dtype (fp16)"))
        .stderr(predicate::str::contains("[1].operation: unknown operation `rms_nrm` (did you mean `rms_norm`?)"));
    let syntax = file("workload-syntax.yaml", "- operation: rms_norm\n  context: {dtype: [\n");
    layerzero()
        .arg("diff")
        .arg(&cpu)
        .arg(&cpu)
        .arg("--workload")
        .arg(&syntax)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("workload-syntax.yaml:3:1: "));
    layerzero()
        .arg("diff")
        .arg(&cpu)
        .arg("/nonexistent/new.yaml")
        .arg("--workload")
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/new.yaml"));
}

#[test]
fn bench_measures_every_mode_and_kernel() {
    let output = layerzero()
        .args(["bench", "--time-ms", "1", "--json", "--config"])
        .arg(configs().join("kernels.cpu.yaml"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert!(report["direct_call_ns"].as_u64().is_some_and(|ns| ns > 0));
    let modes: Vec<&str> = report["dispatch"].as_array().unwrap().iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["static", "dynamic", "config"]);
    let kernels = report["kernels"].as_array().unwrap();
    // Two shapes for each of the three attention kernels and for the two rms_norm kernels
    // (without and with a residual), one for each of the four others.
    assert_eq!(kernels.len(), 14);
    let split_kv_prefill = kernels
        .iter()
        .find(|k| k["kernel"] == "cpu.attention.split_kv" && k["operation"] == "attention.causal")
        .unwrap();
    assert_eq!(split_kv_prefill["per_call_ns"], serde_json::Value::Null, "split-KV takes at most 64 query rows");
    assert!(kernels.iter().filter(|k| k["per_call_ns"].is_u64()).count() == 13);
    let residual_rows = kernels.iter().filter(|k| k["shape"] == "[128,512] + residual" && k["per_call_ns"].is_u64());
    assert_eq!(residual_rows.count(), 2, "cpu.rms_norm and cpu.rms_norm.add_then_norm with a residual");

    layerzero()
        .args(["bench", "--time-ms", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("direct call"))
        .stdout(predicate::str::contains("(config mode: pass --config FILE)"))
        .stdout(predicate::str::contains("cpu.matmul"));
    layerzero().args(["bench", "--config", "/nonexistent.yaml"]).assert().code(2);
}

#[test]
fn schema_prints_a_json_schema() {
    let output = layerzero().arg("schema").assert().success().get_output().stdout.clone();
    let schema: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(schema["required"], serde_json::json!(["version"]));
    assert!(
        schema["properties"]["dispatch_rules"]["items"]["properties"]["conditions"]["properties"]["seq_len_gt"]
            .is_object()
    );
}

#[test]
fn explain_and_run_show_where_a_rules_file_breaks() {
    let broken = file("broken-rules.yaml", "version: \"1.0\"\nkernel_denies: [a, b\n");
    layerzero()
        .args(["explain", "--op", "rms_norm", "--config"])
        .arg(&broken)
        .assert()
        .code(1)
        .stderr(predicate::str::is_match(r"broken-rules\.yaml:3:1: Invalid YAML: ").unwrap());
    layerzero()
        .args(["run", "--seq", "2", "--config"])
        .arg(&broken)
        .assert()
        .code(1)
        .stderr(predicate::str::is_match(r"broken-rules\.yaml:3:1: Invalid YAML: ").unwrap());
}
