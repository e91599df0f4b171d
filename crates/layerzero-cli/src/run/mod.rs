//! `layerzero run`: the main job. A stack of Llama-style decoder layers on the embedded CPU
//! backend (or, with `--device cuda` in a `cuda` build, on a GPU: `device.rs`), prefill then
//! decode steps against the KV cache, every operation through the dispatcher and checked
//! against a float64 reference.

#[cfg(feature = "cuda")]
mod device;
mod layer;
mod multi;
pub(crate) mod reference;
mod weights;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use layerzero::config::DispatchMode;
use layerzero::types::{DType, Device, FloatElement};

use crate::dispatcher::{DispatchOptions, build_dispatcher};
use crate::error::CliError;
use crate::table::{Table, colour_enabled, status};
use layer::{Layer, Phase, Recorder, Step, forward, narrow, rope_tables};
use weights::{LayerWeights, Shapes, TensorFile};

/// The files `run` reads and writes, and its exit codes, for `--help`.
pub(crate) const FILES_AND_EXIT_CODES: &str = "\
Weights (--weights FILE.safetensors, float32/float16/bfloat16), Llama names, [out, in] like PyTorch:
  input_layernorm.weight [hidden]            self_attn.{q,k,v,o}_proj.weight
  post_attention_layernorm.weight [hidden]   mlp.{gate,up,down}_proj.weight
  One layer unprefixed, or several as model.layers.{i}.<name> (i = 0, 1, ...).
Input (--input): `input` [seq, hidden] or [1, seq, hidden]; optional `decode_input`
  [decode_steps, hidden] (random from --seed when absent).
Output (--output): `output` [seq, hidden] and `decode_output` [decode_steps, hidden],
  the last layer's, float32.

Exit codes: 0 ok; 1 the input is invalid or a check failed; 2 usage or I/O error.";

/// `layerzero run`'s options.
#[derive(Args, Clone, Debug)]
pub(crate) struct RunArgs {
    /// Rules file (YAML or JSON, schema v1.0) that steers selection.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dispatch mode: static, dynamic, config, hot_reload or auto (default: config with
    /// --config, else dynamic).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<DispatchMode>,
    /// Hidden size (taken from --weights when given).
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// Query heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Key/value heads (fewer than --heads: grouped-query attention).
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// MLP size (default: 8/3 of hidden rounded up to a multiple of 64; taken from
    /// --weights when given).
    #[arg(long)]
    intermediate: Option<usize>,
    /// Decoder layers (taken from --weights when given).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Prompt length in tokens (taken from --input when given).
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Tokens decoded one at a time after the prompt.
    #[arg(long, default_value_t = 8)]
    decode_steps: usize,
    /// Parameters (safetensors, Llama names; `model.layers.{i}.` prefixes for several layers).
    #[arg(long, value_name = "FILE.safetensors")]
    weights: Option<PathBuf>,
    /// Input hidden states (safetensors: `input` [seq, hidden], optional `decode_input`
    /// [decode_steps, hidden]).
    #[arg(long, value_name = "FILE.safetensors")]
    input: Option<PathBuf>,
    /// Rotary embedding base.
    #[arg(long, default_value_t = 10000.0)]
    rope_theta: f64,
    /// RMS norm epsilon.
    #[arg(long, default_value_t = 1e-6)]
    rms_eps: f32,
    /// Write the last layer's output (`output`, `decode_output`; float32) here.
    #[arg(long, value_name = "FILE.safetensors")]
    output: Option<PathBuf>,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the layers run: cpu, or cuda / cuda:N (the CUDA kernels, attention on the CPU
    /// between copies until a CUDA attention kernel exists; a build with the `cuda` feature),
    /// checked against the CPU run.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Run on several devices at once, one thread each, through one dispatcher (e.g.
    /// cuda:0,cuda:1, or cpu,cpu): the first device alone, then all together; each must
    /// give the one-device result. Prints each device's time and the throughput of all
    /// against one.
    #[arg(long, value_name = "DEVICE,DEVICE,...", value_parser = multi::parse_devices, conflicts_with = "device")]
    devices: Option<multi::DeviceList>,
    /// Element type of weights and activations: float32, float16 or bfloat16.
    #[arg(long, default_value = "float32", value_parser = parse_dtype)]
    dtype: DType,
    /// Skip checking each operation against the float64 reference.
    #[arg(long)]
    no_check: bool,
    /// The largest relative error a check accepts (default: 1e-4 for float32, 5e-3 for
    /// float16, 3e-2 for bfloat16).
    #[arg(long, value_name = "REL")]
    tolerance: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_mode(value: &str) -> Result<DispatchMode, String> {
    value.parse().map_err(|e: layerzero::config::ConfigError| e.to_string())
}

fn parse_device(value: &str) -> Result<Device, String> {
    value.parse().map_err(|e: layerzero::types::TypesError| e.to_string())
}

fn parse_dtype(value: &str) -> Result<DType, String> {
    let dtype: DType = match value {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => other.parse().map_err(|e: layerzero::types::TypesError| e.to_string())?,
    };
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(dtype),
        other => Err(format!("{other} is not run; float32, float16 and bfloat16 are")),
    }
}

/// The largest relative error each dtype's kernels may show: float32 accumulation, or the
/// rounding of a half-precision output (2⁻¹¹ for float16, 2⁻⁸ for bfloat16) with margin.
fn default_tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 5e-3,
        DType::BF16 => 3e-2,
        _ => 1e-4,
    }
}

/// The model and its inputs, float32, before conversion to the run's dtype.
struct Model {
    shapes: Shapes,
    layers: Vec<LayerWeights>,
    input: Vec<f32>,
    decode_input: Vec<f32>,
    source: String,
}

fn load_model(args: &RunArgs) -> Result<Model, CliError> {
    let mut rng = weights::seeded(args.seed);
    let mut shapes = Shapes {
        hidden: args.hidden,
        heads: args.heads,
        kv_heads: args.kv_heads,
        head_dim: args.hidden / args.heads.max(1),
        intermediate: args.intermediate.unwrap_or((args.hidden * 8 / 3).div_ceil(64) * 64),
        layers: args.layers,
        seq: args.seq,
        decode_steps: args.decode_steps,
    };
    let weight_file = args.weights.as_deref().map(TensorFile::read).transpose()?;
    let input_file = args.input.as_deref().map(TensorFile::read).transpose()?;
    let mut source = Vec::new();
    if let Some(file) = &weight_file {
        let prefixed = !file.has("input_layernorm.weight");
        let layers = file.layer_count();
        if layers == 0 {
            return Err(CliError::invalid(format!(
                "{}: no decoder layer found (expected `input_layernorm.weight` or `model.layers.0.input_layernorm.weight`)",
                args.weights.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
            )));
        }
        let norm_name = if prefixed { "model.layers.0.input_layernorm.weight" } else { "input_layernorm.weight" };
        let gate_name = if prefixed { "model.layers.0.mlp.gate_proj.weight" } else { "mlp.gate_proj.weight" };
        shapes.hidden = file.get(norm_name)?.0.first().copied().unwrap_or(0);
        shapes.head_dim = shapes.hidden / shapes.heads.max(1);
        shapes.intermediate = file.get(gate_name)?.0.first().copied().unwrap_or(0);
        shapes.layers = layers;
        source.push(format!(
            "weights from {}",
            args.weights.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
        ));
    }
    let input = match &input_file {
        Some(file) => {
            let (shape, values) = file.get("input")?;
            let hidden = shape.last().copied().unwrap_or(0);
            if hidden != shapes.hidden || shape.iter().rev().skip(2).any(|&d| d != 1) || shape.len() < 2 {
                return Err(CliError::invalid(format!(
                    "input has shape {shape:?}; it must be [seq, {}] or [1, seq, {}]",
                    shapes.hidden, shapes.hidden
                )));
            }
            shapes.seq = shape[shape.len() - 2];
            source.push("input from file".to_owned());
            values.clone()
        }
        None => Vec::new(),
    };
    shapes.validate()?;
    let layers = match &weight_file {
        Some(file) => {
            let prefixed = !file.has("input_layernorm.weight");
            (0..shapes.layers).map(|i| file.layer(&shapes, i, prefixed)).collect::<Result<Vec<_>, _>>()?
        }
        None => {
            source.push(format!("random weights (seed {})", args.seed));
            (0..shapes.layers).map(|_| LayerWeights::random(&shapes, &mut rng)).collect()
        }
    };
    let input = if input.is_empty() { weights::random_rows(shapes.seq, shapes.hidden, &mut rng) } else { input };
    let decode_input = match input_file.as_ref().filter(|f| f.has("decode_input")) {
        Some(file) => {
            let (shape, values) = file.get("decode_input")?;
            if values.len() != shapes.decode_steps * shapes.hidden {
                return Err(CliError::invalid(format!(
                    "decode_input has shape {shape:?}; with --decode-steps {} it must be [{}, {}]",
                    shapes.decode_steps, shapes.decode_steps, shapes.hidden
                )));
            }
            values.clone()
        }
        None => weights::random_rows(shapes.decode_steps, shapes.hidden, &mut rng),
    };
    Ok(Model { shapes, layers, input, decode_input, source: source.join(", ") })
}

/// What one run produced.
struct Outcome {
    rows: Vec<layer::Row>,
    output: Vec<f32>,
    decode_output: Vec<f32>,
    elapsed: Duration,
}

fn execute<T: FloatElement + Default>(
    model: &Model,
    args: &RunArgs,
    dispatch: &crate::dispatcher::Dispatch,
    check: bool,
) -> Result<Outcome, CliError> {
    let shapes = &model.shapes;
    let (cos, sin) = rope_tables(shapes.seq + shapes.decode_steps, shapes.head_dim, args.rope_theta);
    let step = Step { shapes, cos: &cos, sin: &sin, eps: args.rms_eps, rope_theta: args.rope_theta };
    let mut layers: Vec<Layer<T>> = model.layers.iter().map(|w| Layer::new(w, shapes)).collect();
    let mut recorder = Recorder::new(dispatch, check);
    let progress = Progress::new((shapes.layers * (1 + shapes.decode_steps)) as u64, args.json);
    let start = Instant::now();

    let mut hidden: Vec<T> = narrow(&model.input);
    for (index, layer) in layers.iter_mut().enumerate() {
        hidden = forward(&mut recorder, Phase::Prefill, &step, layer, index, &hidden, 0)?;
        progress.tick(format!("prefill, layer {index}"));
    }
    let output = hidden.iter().map(|v| v.to_f32()).collect();
    let mut decode_output = Vec::with_capacity(model.decode_input.len());
    for (t, token) in model.decode_input.chunks(shapes.hidden).enumerate() {
        let mut hidden: Vec<T> = narrow(token);
        for (index, layer) in layers.iter_mut().enumerate() {
            hidden = forward(&mut recorder, Phase::Decode, &step, layer, index, &hidden, shapes.seq + t)?;
            progress.tick(format!("decode step {t}, layer {index}"));
        }
        decode_output.extend(hidden.iter().map(|v| v.to_f32()));
    }
    progress.finish();
    Ok(Outcome { rows: recorder.rows, output, decode_output, elapsed: start.elapsed() })
}

/// [`execute`] on the GPU: weights uploaded once, activations kept on the device.
#[cfg(feature = "cuda")]
fn execute_cuda<T: FloatElement + Default>(
    model: &Model,
    args: &RunArgs,
    dispatch: &crate::dispatcher::Dispatch,
    gpus: &device::Gpus,
) -> Result<Outcome, CliError> {
    let gpu = gpus.gpu();
    let shapes = &model.shapes;
    let (cos, sin) = rope_tables(shapes.seq + shapes.decode_steps, shapes.head_dim, args.rope_theta);
    let step = Step { shapes, cos: &cos, sin: &sin, eps: args.rms_eps, rope_theta: args.rope_theta };
    let tables = device::DeviceTables::new(gpu, &step)?;
    let ds = device::DeviceStep { step: &step, tables: &tables, gpu };
    let mut layers: Vec<device::DeviceLayer<T>> =
        model.layers.iter().map(|w| device::DeviceLayer::new(gpu, w, shapes)).collect::<Result<_, _>>()?;
    let mut recorder = Recorder::new(dispatch, !args.no_check).with_device_timer(Box::new(device::timer(gpu)));
    let progress = Progress::new((shapes.layers * (1 + shapes.decode_steps)) as u64, args.json);
    let start = Instant::now();

    let mut hidden = device::upload_rows(gpu, narrow::<T>(&model.input), shapes.hidden)?;
    for (index, layer) in layers.iter_mut().enumerate() {
        hidden = device::forward(&mut recorder, Phase::Prefill, &ds, layer, index, &hidden, 0)?;
        progress.tick(format!("prefill, layer {index}"));
    }
    let output = device::download_rows::<T>(&hidden)?.iter().map(|v| v.to_f32()).collect();
    let mut decode_output = Vec::with_capacity(model.decode_input.len());
    for (t, token) in model.decode_input.chunks(shapes.hidden).enumerate() {
        let mut hidden = device::upload_rows(gpu, narrow::<T>(token), shapes.hidden)?;
        for (index, layer) in layers.iter_mut().enumerate() {
            hidden = device::forward(&mut recorder, Phase::Decode, &ds, layer, index, &hidden, shapes.seq + t)?;
            progress.tick(format!("decode step {t}, layer {index}"));
        }
        decode_output.extend(device::download_rows::<T>(&hidden)?.iter().map(|v| v.to_f32()));
    }
    progress.finish();
    Ok(Outcome { rows: recorder.rows, output, decode_output, elapsed: start.elapsed() })
}

/// [`execute`] in `--dtype`.
fn execute_in_dtype(
    model: &Model,
    args: &RunArgs,
    dispatch: &crate::dispatcher::Dispatch,
    check: bool,
) -> Result<Outcome, CliError> {
    match args.dtype {
        DType::F16 => execute::<half::f16>(model, args, dispatch, check),
        DType::BF16 => execute::<half::bf16>(model, args, dispatch, check),
        _ => execute::<f32>(model, args, dispatch, check),
    }
}

/// [`execute_cuda`] in `--dtype`.
#[cfg(feature = "cuda")]
fn execute_cuda_in_dtype(
    model: &Model,
    args: &RunArgs,
    dispatch: &crate::dispatcher::Dispatch,
    gpus: &device::Gpus,
) -> Result<Outcome, CliError> {
    match args.dtype {
        DType::F16 => execute_cuda::<half::f16>(model, args, dispatch, gpus),
        DType::BF16 => execute_cuda::<half::bf16>(model, args, dispatch, gpus),
        _ => execute_cuda::<f32>(model, args, dispatch, gpus),
    }
}

/// The run on `--device`: the CPU run alone, or for a GPU the CPU run of the same weights
/// (the reference), then the GPU run, with the largest relative difference between their
/// outputs (prefill, decode).
fn execute_on_device(
    model: &Model,
    args: &RunArgs,
) -> Result<(Outcome, crate::dispatcher::Dispatch, Option<DeviceReport>), CliError> {
    let options = DispatchOptions { config: args.config.clone(), mode: args.mode };
    let on_cpu = |dispatch: &crate::dispatcher::Dispatch, check| execute_in_dtype(model, args, dispatch, check);
    match args.device {
        Device::Cpu => {
            let dispatch = build_dispatcher(&options)?;
            let outcome = on_cpu(&dispatch, !args.no_check)?;
            Ok((outcome, dispatch, None))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(no_cuda_build()),
        #[cfg(feature = "cuda")]
        gpu_device @ Device::Cuda(_) => {
            let gpus = device::open(gpu_device)?;
            // The reference: the CPU kernels alone (registered before the CUDA ones, so no
            // mode, STATIC included, can route a host tensor to a CUDA kernel).
            let cpu = on_cpu(&build_dispatcher(&options)?, false)?;
            device::register(&gpus)?;
            let dispatch = build_dispatcher(&options)?;
            let outcome = execute_cuda_in_dtype(model, args, &dispatch, &gpus)?;
            let against = |gpu: &[f32], cpu: &[f32]| {
                let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
                reference::max_rel_error(&widen(gpu), &widen(cpu))
            };
            let report = DeviceReport {
                device: gpus.describe(),
                prefill_vs_cpu: against(&outcome.output, &cpu.output),
                decode_vs_cpu: against(&outcome.decode_output, &cpu.decode_output),
            };
            Ok((outcome, dispatch, Some(report)))
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn no_cuda_build() -> CliError {
    CliError::usage(
        "no CUDA device: this layerzero was built without the cuda feature \
         (cargo build -p layerzero-cli --features cuda)",
    )
}

/// How a GPU run compares with the CPU run of the same weights.
struct DeviceReport {
    device: String,
    prefill_vs_cpu: f64,
    decode_vs_cpu: f64,
}

/// An indicatif bar on stderr, shown only on a terminal and only once the work has taken
/// more than a second.
struct Progress {
    bar: ProgressBar,
    start: Instant,
    enabled: bool,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        Progress { bar, start: Instant::now(), enabled: !quiet && std::io::stderr().is_terminal() }
    }

    fn tick(&self, message: String) {
        if self.enabled && self.bar.is_hidden() && self.start.elapsed() > Duration::from_secs(1) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.set_message(message);
        self.bar.inc(1);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub(crate) fn run(args: &RunArgs) -> Result<(), CliError> {
    #[cfg(not(feature = "cuda"))]
    if let Device::Cuda(_) = args.device {
        return Err(no_cuda_build());
    }
    let model = load_model(args)?;
    if let Some(devices) = &args.devices {
        return multi::run_devices(&model, args, &devices.0);
    }
    let (outcome, dispatch, device_report) = execute_on_device(&model, args)?;
    let shapes = &model.shapes;
    if let Some(path) = &args.output {
        weights::write_tensors(
            path,
            &[
                ("output", vec![shapes.seq, shapes.hidden], &outcome.output),
                ("decode_output", vec![shapes.decode_steps, shapes.hidden], &outcome.decode_output),
            ],
        )?;
    }
    let tolerance = args.tolerance.unwrap_or_else(|| default_tolerance(args.dtype));
    let mut failed: Vec<String> = outcome
        .rows
        .iter()
        .filter(|r| r.max_rel_error.is_some_and(|e| e.is_nan() || e > tolerance))
        .map(|r| format!("{} {}", r.phase.as_str(), r.stage))
        .collect();
    if let Some(report) = &device_report {
        for (what, error) in [("prefill", report.prefill_vs_cpu), ("decode", report.decode_vs_cpu)] {
            if error.is_nan() || error > tolerance {
                failed.push(format!("{what} output against the CPU run"));
            }
        }
    }
    let telemetry = dispatch.telemetry();
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = outcome
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "phase": r.phase,
                    "stage": r.stage,
                    "operation": r.operation.to_string(),
                    "kernels": r.kernels,
                    "why": r.why,
                    "calls": r.calls,
                    "time_ms": r.time.as_secs_f64() * 1e3,
                    "max_rel_error": r.max_rel_error,
                    "passed": r.max_rel_error.map(|e| e <= tolerance),
                })
            })
            .collect();
        let report = serde_json::json!({
            "mode": dispatch.mode.as_str().to_lowercase(),
            "mode_note": dispatch.mode_note,
            "dtype": args.dtype.as_str(),
            "device": args.device.to_string(),
            "device_name": device_report.as_ref().map(|r| r.device.clone()),
            "against_cpu_run": device_report.as_ref().map(|r| serde_json::json!({
                "prefill_max_rel_error": r.prefill_vs_cpu,
                "decode_max_rel_error": r.decode_vs_cpu,
            })),
            "shapes": shapes,
            "source": model.source,
            "checked": !args.no_check,
            "tolerance": tolerance,
            "operations": rows,
            "elapsed_ms": outcome.elapsed.as_secs_f64() * 1e3,
            "telemetry": telemetry,
            "checks_passed": failed.is_empty(),
            "failed": failed,
            "output": args.output.as_ref().map(|p| p.display().to_string()),
        });
        crate::table::write_json(&mut out, &report)?;
    } else {
        let colour = colour_enabled();
        writeln!(
            out,
            "decoder: {} layers, hidden {}, {} heads / {} kv heads (head_dim {}), intermediate {}, {} dtype",
            shapes.layers,
            shapes.hidden,
            shapes.heads,
            shapes.kv_heads,
            shapes.head_dim,
            shapes.intermediate,
            args.dtype
        )?;
        writeln!(
            out,
            "tokens: prefill {}, then {} decode steps; {}; mode {} ({})",
            shapes.seq,
            shapes.decode_steps,
            model.source,
            dispatch.mode.as_str().to_lowercase(),
            dispatch.mode_note
        )?;
        if let Some(report) = &device_report {
            writeln!(
                out,
                "device: {}; every time is device time (CUDA events) but the attention row's, which is host time with its copies",
                report.device
            )?;
        }
        writeln!(out)?;
        let mut table =
            Table::new(["phase", "step", "operation", "kernel", "why", "calls", "time", "max rel err", "check"]);
        for r in &outcome.rows {
            let (error, check) = match r.max_rel_error {
                Some(e) => (format!("{e:.1e}"), status(e <= tolerance, colour)),
                None => ("-".to_owned(), "-".to_owned()),
            };
            table.row(vec![
                r.phase.as_str().to_owned(),
                r.stage.to_owned(),
                r.operation.to_string(),
                r.kernels.iter().cloned().collect::<Vec<_>>().join(", "),
                r.why.iter().cloned().collect::<Vec<_>>().join(", "),
                r.calls.to_string(),
                format_duration(r.time),
                error,
                check,
            ]);
        }
        write!(out, "{}", table.render())?;
        writeln!(
            out,
            "(the residual add after attention is fused into its rms_norm row; the one after the MLP runs on the host: LayerZero has no add operation)"
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "telemetry: {} dispatches, {} ok, {} errors, {} fallbacks; dispatch p50 {:.1} us, p99 {:.1} us (choosing the kernel: p50 {:.2} us)",
            telemetry.dispatch_count,
            telemetry.success_count,
            telemetry.error_count,
            telemetry.fallback_count,
            telemetry.total_latency.p50_us(),
            telemetry.total_latency.p99_us(),
            telemetry.selection_latency.p50_us(),
        )?;
        for kernel in telemetry.kernels.iter().filter(|k| k.successes + k.failures + k.panics > 0) {
            writeln!(
                out,
                "  {}: {} ok, {} failed, {} panicked, {} skipped (circuit open)",
                kernel.kernel, kernel.successes, kernel.failures, kernel.panics, kernel.circuit_open_skips
            )?;
        }
        if let Some(report) = &device_report {
            writeln!(
                out,
                "against the CPU run of the same weights: max rel error {:.1e} (prefill output), {:.1e} (decode output)",
                report.prefill_vs_cpu, report.decode_vs_cpu
            )?;
        }
        if let Some(path) = &args.output {
            writeln!(out, "wrote {}", path.display())?;
        }
        let verdict = if args.no_check {
            "checks skipped (--no-check)".to_owned()
        } else if failed.is_empty() {
            format!("all {} checks passed (max relative error <= {tolerance:.0e} against float64)", outcome.rows.len())
        } else {
            format!("{} of {} checks FAILED: {}", failed.len(), outcome.rows.len(), failed.join(", "))
        };
        writeln!(out, "{verdict}; {:.2} s", outcome.elapsed.as_secs_f64())?;
    }
    if failed.is_empty() { Ok(()) } else { Err(CliError::Invalid(String::new())) }
}

fn format_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 { format!("{us:.0} us") } else { format!("{:.2} ms", us / 1e3) }
}
