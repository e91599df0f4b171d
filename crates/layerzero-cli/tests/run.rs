//! `layerzero run` end to end: the binary's output against a float64 decoder layer
//! written here, independently of the CLI's own reference.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failing fixture fails its test"
)]

use std::collections::HashMap;
use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use safetensors::{Dtype, SafeTensors};

const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const INTER: usize = 48;
const SEQ: usize = 5;
const STEPS: usize = 3;
const LAYERS: usize = 2;
const THETA: f64 = 10000.0;
const EPS: f64 = 1e-6;

fn layerzero() -> Command {
    Command::cargo_bin("layerzero").expect("the binary is built for its own tests")
}

/// Deterministic values in [-scale, scale): a small LCG, so the test needs no RNG crate.
fn values(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((state >> 40) as f64 / (1u64 << 24) as f64) * 2.0 - 1.0) as f32 * scale as f32
        })
        .collect()
}

struct Layer {
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn layer(index: usize) -> Layer {
    let seed = 100 * index as u64;
    let linear = |name: &str, rows: usize, cols: usize, s: u64| {
        (name.to_owned(), vec![rows, cols], values(rows * cols, seed + s, (3.0 / cols as f64).sqrt()))
    };
    let norm = |name: &str, s: u64| {
        (name.to_owned(), vec![HIDDEN], values(HIDDEN, seed + s, 0.2).iter().map(|v| 1.0 + v).collect())
    };
    Layer {
        tensors: vec![
            norm("input_layernorm.weight", 1),
            linear("self_attn.q_proj.weight", HEADS * HEAD_DIM, HIDDEN, 2),
            linear("self_attn.k_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN, 3),
            linear("self_attn.v_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN, 4),
            linear("self_attn.o_proj.weight", HIDDEN, HEADS * HEAD_DIM, 5),
            norm("post_attention_layernorm.weight", 6),
            linear("mlp.gate_proj.weight", INTER, HIDDEN, 7),
            linear("mlp.up_proj.weight", INTER, HIDDEN, 8),
            linear("mlp.down_proj.weight", HIDDEN, INTER, 9),
        ],
    }
}

fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn read(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32);
            let v = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (name, (view.shape().to_vec(), v))
        })
        .collect()
}

// ---- The independent float64 decoder layer ----

fn get(layer: &Layer, name: &str) -> Vec<f64> {
    let (_, _, v) = layer.tensors.iter().find(|(n, _, _)| n == name).unwrap();
    v.iter().map(|&x| f64::from(x)).collect()
}

fn norm(x: &[f64], w: &[f64]) -> Vec<f64> {
    x.chunks(HIDDEN)
        .flat_map(|row| {
            let rms = (row.iter().map(|v| v * v).sum::<f64>() / HIDDEN as f64 + EPS).sqrt();
            row.iter().zip(w).map(move |(v, g)| v / rms * g)
        })
        .collect()
}

/// `x · wᵀ` with `w` `[out, in]`.
fn matmul_t(x: &[f64], w: &[f64], inp: usize) -> Vec<f64> {
    let out = w.len() / inp;
    let rows = x.len() / inp;
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            for i in 0..inp {
                y[r * out + o] += x[r * inp + i] * w[o * inp + i];
            }
        }
    }
    y
}

/// Llama's rotate_half at absolute positions.
fn rotate(x: &mut [f64], heads: usize, first_position: usize) {
    let half = HEAD_DIM / 2;
    for (t, token) in x.chunks_mut(heads * HEAD_DIM).enumerate() {
        let pos = (first_position + t) as f64;
        for head in token.chunks_mut(HEAD_DIM) {
            let copy = head.to_vec();
            for i in 0..HEAD_DIM {
                let freq = 1.0 / THETA.powf((2 * (i % half)) as f64 / HEAD_DIM as f64);
                let rotated = if i < half { -copy[i + half] } else { copy[i - half] };
                head[i] = copy[i] * (pos * freq).cos() + rotated * (pos * freq).sin();
            }
        }
    }
}

/// The layer for `x` (tokens at `first_position..`), appending to the caches.
fn decoder(
    layer: &Layer,
    x: &[f64],
    first_position: usize,
    k_cache: &mut Vec<f64>,
    v_cache: &mut Vec<f64>,
) -> Vec<f64> {
    let h = norm(x, &get(layer, "input_layernorm.weight"));
    let mut q = matmul_t(&h, &get(layer, "self_attn.q_proj.weight"), HIDDEN);
    let mut k = matmul_t(&h, &get(layer, "self_attn.k_proj.weight"), HIDDEN);
    let v = matmul_t(&h, &get(layer, "self_attn.v_proj.weight"), HIDDEN);
    rotate(&mut q, HEADS, first_position);
    rotate(&mut k, KV_HEADS, first_position);
    k_cache.extend(&k);
    v_cache.extend(&v);
    let tokens = x.len() / HIDDEN;
    let mut attn = vec![0.0; tokens * HEADS * HEAD_DIM];
    for t in 0..tokens {
        let last = first_position + t;
        for head in 0..HEADS {
            let kv = head / (HEADS / KV_HEADS);
            let qv = &q[(t * HEADS + head) * HEAD_DIM..][..HEAD_DIM];
            let logits: Vec<f64> = (0..=last)
                .map(|j| {
                    let kj = &k_cache[(j * KV_HEADS + kv) * HEAD_DIM..][..HEAD_DIM];
                    qv.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() / (HEAD_DIM as f64).sqrt()
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
            for (j, l) in logits.iter().enumerate() {
                let p = (l - m).exp() / z;
                for d in 0..HEAD_DIM {
                    attn[(t * HEADS + head) * HEAD_DIM + d] += p * v_cache[(j * KV_HEADS + kv) * HEAD_DIM + d];
                }
            }
        }
    }
    let o = matmul_t(&attn, &get(layer, "self_attn.o_proj.weight"), HEADS * HEAD_DIM);
    let x1: Vec<f64> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
    let h2 = norm(&x1, &get(layer, "post_attention_layernorm.weight"));
    let g = matmul_t(&h2, &get(layer, "mlp.gate_proj.weight"), HIDDEN);
    let u = matmul_t(&h2, &get(layer, "mlp.up_proj.weight"), HIDDEN);
    let a: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g * (1.0 / (1.0 + (-g).exp())) * u).collect();
    let d = matmul_t(&a, &get(layer, "mlp.down_proj.weight"), INTER);
    x1.iter().zip(&d).map(|(a, b)| a + b).collect()
}

fn assert_close(name: &str, actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{name}");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((f64::from(*a) - e).abs() <= 1e-4 * scale, "{name}[{i}]: {a} vs {e} (scale {scale})");
    }
}

#[test]
fn run_writes_the_output_of_the_layers_given() {
    let dir = tempdir();
    let layers: Vec<Layer> = (0..LAYERS).map(layer).collect();
    let mut weights = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        for (name, shape, v) in &l.tensors {
            weights.push((format!("model.layers.{i}.{name}"), shape.clone(), v.clone()));
        }
    }
    let input = values(SEQ * HIDDEN, 7, 1.0);
    let decode_input = values(STEPS * HIDDEN, 8, 1.0);
    write(&dir.join("weights.safetensors"), &weights);
    write(
        &dir.join("input.safetensors"),
        &[
            ("input".to_owned(), vec![1, SEQ, HIDDEN], input.clone()),
            ("decode_input".to_owned(), vec![STEPS, HIDDEN], decode_input.clone()),
        ],
    );
    let out = dir.join("out.safetensors");
    layerzero()
        .args(["run", "--heads", "4", "--kv-heads", "2", "--decode-steps", "3"])
        .arg("--weights")
        .arg(dir.join("weights.safetensors"))
        .arg("--input")
        .arg(dir.join("input.safetensors"))
        .arg("--output")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "decoder: 2 layers, hidden 32, 4 heads / 2 kv heads (head_dim 8), intermediate 48",
        ))
        .stdout(predicate::str::contains("checks passed"));

    let written = read(&out);
    let mut caches: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); LAYERS];
    let mut x: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
    for (l, (k, v)) in layers.iter().zip(caches.iter_mut()) {
        x = decoder(l, &x, 0, k, v);
    }
    assert_eq!(written["output"].0, [SEQ, HIDDEN]);
    assert_close("output", &written["output"].1, &x);

    let mut decoded = Vec::new();
    for (t, token) in decode_input.chunks(HIDDEN).enumerate() {
        let mut x: Vec<f64> = token.iter().map(|&v| f64::from(v)).collect();
        for (l, (k, v)) in layers.iter().zip(caches.iter_mut()) {
            x = decoder(l, &x, SEQ + t, k, v);
        }
        decoded.extend(x);
    }
    assert_eq!(written["decode_output"].0, [STEPS, HIDDEN]);
    assert_close("decode_output", &written["decode_output"].1, &decoded);
}

#[test]
fn run_with_random_weights_checks_every_operation_in_json() {
    let assert = layerzero()
        .args(["run", "--hidden", "64", "--heads", "4", "--kv-heads", "1", "--layers", "1", "--seq", "8"])
        .args(["--decode-steps", "2", "--dtype", "bf16", "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(report["checks_passed"], true);
    assert_eq!(report["dtype"], "bfloat16");
    let operations = report["operations"].as_array().unwrap();
    // 13 steps per phase, prefill and decode.
    assert_eq!(operations.len(), 26);
    let attention = operations.iter().find(|o| o["phase"] == "decode" && o["stage"] == "attention").unwrap();
    assert_eq!(attention["operation"], "attention.decode");
    assert_eq!(attention["calls"], 2);
    assert!(attention["why"][0].as_str().unwrap().starts_with("score"), "{attention}");
    // One layer: 13 dispatches for the prompt, 13 per decode step.
    assert_eq!(report["telemetry"]["dispatch_count"], 13 + 2 * 13);
}

#[test]
fn run_on_several_devices_at_once_gives_each_the_one_device_result() {
    let assert = layerzero()
        .args(["run", "--hidden", "64", "--heads", "4", "--kv-heads", "1", "--layers", "1", "--seq", "8"])
        .args(["--decode-steps", "2", "--devices", "cpu,cpu,cpu", "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["alone"]["checks_failed"], 0);
    let together = report["together"].as_array().unwrap();
    assert_eq!(together.len(), 3);
    for run in together {
        assert_eq!(run["device"], "cpu");
        // The same kernels on the same inputs: bit for bit the one-device result.
        assert_eq!((run["prefill_max_rel_diff"].as_f64(), run["decode_max_rel_diff"].as_f64()), (Some(0.0), Some(0.0)));
    }
    // Five runs of the same dispatches (alone checked, alone, three at once), all on the host.
    let cpu = &report["telemetry_by_device"].as_array().unwrap()[0];
    assert_eq!(cpu["device"], "cpu");
    assert_eq!(cpu["errors"], 0);
    assert_eq!(cpu["successes"].as_u64().unwrap() % 5, 0, "{cpu}");
    layerzero().args(["run", "--devices", "cpu,gpu:0"]).assert().code(2).stderr(predicate::str::contains("gpu:0"));
    layerzero()
        .args(["run", "--devices", "cpu", "--device", "cpu"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn run_refuses_bad_sizes_and_missing_files() {
    layerzero()
        .args(["run", "--hidden", "30", "--heads", "4"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--heads 4 must divide --hidden 30"));
    layerzero()
        .args(["run", "--weights", "/nonexistent/w.safetensors"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/w.safetensors"));
    layerzero().args(["run", "--dtype", "int8"]).assert().code(2).stderr(predicate::str::contains("int8 is not run"));
    layerzero()
        .args(["run", "--mode", "fast"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid dispatch mode"));
}

#[test]
fn run_reports_the_shape_a_weight_should_have() {
    let dir = tempdir();
    let mut tensors = layer(0).tensors;
    tensors[1].1 = vec![HIDDEN, HIDDEN + 1];
    tensors[1].2 = vec![0.0; HIDDEN * (HIDDEN + 1)];
    write(&dir.join("bad.safetensors"), &tensors);
    layerzero()
        .args(["run", "--heads", "4", "--kv-heads", "2", "--weights"])
        .arg(dir.join("bad.safetensors"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("`self_attn.q_proj.weight` has shape [32, 33], the layer needs [32, 32]"));
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "layerzero-cli-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_with_the_cpu_rules_says_which_rule_chose_each_attention_kernel() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/kernels.cpu.yaml");
    let assert = layerzero()
        .args(["run", "--hidden", "32", "--heads", "4", "--kv-heads", "2", "--layers", "1", "--seq", "70"])
        .args(["--decode-steps", "2", "--json", "--config"])
        .arg(&config)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    // AUTO through the orchestrator lands in DYNAMIC, whose engine has the file's rules.
    assert_eq!(report["mode"], "dynamic");
    let row = |phase: &str| {
        report["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["phase"] == phase && o["stage"] == "attention")
            .unwrap()
            .clone()
    };
    // 70 query rows: past split-KV's 64, so rule 1 picks the tiled kernel.
    assert_eq!(row("prefill")["kernels"], serde_json::json!(["cpu.attention.tiled"]));
    assert_eq!(row("prefill")["why"], serde_json::json!(["rule (dispatch_rules[1])"]));
    assert_eq!(row("decode")["kernels"], serde_json::json!(["cpu.attention.split_kv"]));
    assert_eq!(row("decode")["why"], serde_json::json!(["rule (dispatch_rules[0])"]));
}

#[test]
fn run_fails_with_exit_1_when_the_rules_leave_no_kernel() {
    // The seeds' example allows only its own (absent) kernels.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/kernels.seed-example.yaml");
    layerzero()
        .args(["run", "--hidden", "32", "--heads", "4", "--seq", "4", "--config"])
        .arg(&config)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("prefill input_layernorm (layer 0, rms_norm): every mode failed"))
        .stderr(predicate::str::contains("DYNAMIC: no kernel can run rms_norm in this context"))
        .stderr(predicate::str::contains("CONFIG: no kernel can run rms_norm in this context"));
}

#[test]
fn run_in_static_mode_falls_back_past_a_kernel_that_refuses_the_shape() {
    // STATIC routes attention to the highest-priority kernel, split-KV, which takes at
    // most 64 query rows: a 70-token prompt runs on its fallback.
    let assert = layerzero()
        .args(["run", "--hidden", "32", "--heads", "4", "--layers", "1", "--seq", "70", "--decode-steps", "1"])
        .args(["--mode", "static", "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let prefill = report["operations"].as_array().unwrap().iter().find(|o| o["stage"] == "attention").unwrap();
    assert_eq!(prefill["why"], serde_json::json!(["fallback"]));
    assert_eq!(report["telemetry"]["fallback_count"], 1);
    assert_eq!(report["checks_passed"], true);
}

#[test]
fn run_exits_1_and_names_the_steps_over_tolerance() {
    // No float32 matmul of 32 terms is within 1e-12 of float64; rope at position 0 is.
    layerzero()
        .args(["run", "--hidden", "32", "--heads", "4", "--layers", "1", "--seq", "4", "--decode-steps", "1"])
        .args(["--tolerance", "1e-12"])
        .assert()
        .code(1)
        .stdout(predicate::str::is_match(r"prefill +q_proj +matmul +cpu\.matmul .* FAIL\n").unwrap())
        .stdout(predicate::str::contains("checks FAILED: "))
        .stdout(predicate::str::contains("prefill q_proj"));
    layerzero()
        .args(["run", "--hidden", "32", "--heads", "4", "--layers", "1", "--seq", "4", "--no-check"])
        .args(["--tolerance", "1e-12"])
        .assert()
        .success()
        .stdout(predicate::str::contains("checks skipped (--no-check)"));
}

#[test]
fn run_refuses_modes_that_do_not_fit_the_options() {
    layerzero()
        .args(["run", "--mode", "config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--mode config needs --config FILE"));
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/kernels.cpu.yaml");
    layerzero()
        .args(["run", "--mode", "static", "--config"])
        .arg(&config)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--mode static takes no --config"));
}

#[test]
fn run_in_hot_reload_mode_watches_the_rules_and_uses_them() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/kernels.cpu.yaml");
    let assert = layerzero()
        .args(["run", "--hidden", "32", "--heads", "4", "--kv-heads", "2", "--layers", "1", "--seq", "70"])
        .args(["--decode-steps", "1", "--json", "--mode", "hot_reload", "--config"])
        .arg(&config)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(report["mode"], "hot_reload");
    let prefill = report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["phase"] == "prefill" && o["stage"] == "attention")
        .unwrap()
        .clone();
    assert_eq!(prefill["why"], serde_json::json!(["rule (dispatch_rules[1])"]));
}

#[test]
fn run_on_a_cuda_device_without_one_exits_2_saying_so() {
    let sizes = ["--hidden", "32", "--heads", "4", "--kv-heads", "2", "--seq", "3", "--decode-steps", "1"];
    for device in ["cuda", "cuda:1"] {
        let output = layerzero().args(["run", "--device", device]).args(sizes).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            // A GPU and a `cuda` build: the run compared itself with the CPU run.
            assert!(String::from_utf8_lossy(&output.stdout).contains("against the CPU run"), "{device}");
        } else {
            assert_eq!(output.status.code(), Some(2), "{device}: {stderr}");
            assert!(stderr.contains("no CUDA device: "), "{device}: {stderr}");
        }
    }
    layerzero()
        .args(["run", "--device", "gpu"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Invalid device (gpu), expected cpu or cuda:N"));
}
