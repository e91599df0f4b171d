//! The text people read, as insta snapshots: review a changed `.snap` like a diff of the
//! command's manual. Run from the repository root with relative paths, so the output is
//! the same on every machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failing fixture fails its test"
)]

use std::path::PathBuf;

use assert_cmd::Command;

/// What `layerzero ARGS` prints, run in the repository root, with its exit code.
fn output(args: &[&str]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::cargo_bin("layerzero").unwrap().current_dir(root).args(args).output().unwrap();
    format!(
        "{}{}exit code: {}\n",
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code().unwrap_or(-1)
    )
}

#[test]
fn validate_text() {
    insta::assert_snapshot!(output(&[
        "validate",
        "configs/kernels.seed-example.yaml",
        "configs/invalid/seed-errors.yaml",
        "configs/kernels.cpu.yaml",
    ]));
}

#[test]
fn explain_text() {
    insta::assert_snapshot!(output(&[
        "explain",
        "--config",
        "configs/kernels.seed-example.yaml",
        "--catalog",
        "configs/catalogs/seed-gpu-kernels.yaml",
        "--op",
        "attention.causal",
        "--set",
        "batch_size=16",
        "--set",
        "seq_len=2048",
        "--set",
        "head_dim=128",
        "--set",
        "dtype=bfloat16",
        "--set",
        "platform=cuda",
    ]));
}

#[test]
fn diff_text() {
    insta::assert_snapshot!(output(&[
        "diff",
        "configs/kernels.cpu.yaml",
        "configs/kernels.cpu-debug.yaml",
        "--workload",
        "configs/workloads/llama-cpu.yaml",
    ]));
}

#[test]
fn kernels_text() {
    insta::assert_snapshot!(output(&["kernels"]));
}
