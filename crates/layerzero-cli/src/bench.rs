//! `layerzero bench`: what dispatch costs on this machine, per mode, over a direct call of
//! the same kernel; and what each built-in kernel takes on the `run` command's shapes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use layerzero::config::DispatchMode;
use layerzero::registry::get_global_kernel_registry;
use layerzero::types::{
    AttentionArgs, KernelImpl, KernelSpec, Layout, MatmulArgs, NormArgs, OpArgs, OperationType, Residual, RopeArgs,
    RopeStyle, SwigluArgs, SwigluInput, TensorView, TensorViewMut,
};

use crate::dispatcher::{DispatchOptions, build_dispatcher};
use crate::error::CliError;
use crate::table::Table;

/// Median time per call of `call`, run in batches for about `budget`.
fn measure(budget: Duration, mut call: impl FnMut() -> bool) -> Option<Duration> {
    // Size a batch to ~1 ms so that the clock's cost disappears in it.
    let start = Instant::now();
    if !call() {
        return None;
    }
    let once = start.elapsed().max(Duration::from_nanos(1));
    let batch = (Duration::from_millis(1).as_nanos() / once.as_nanos()).clamp(1, 100_000) as u32;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < budget && samples.len() < 10_000) {
        let t = Instant::now();
        for _ in 0..batch {
            if !call() {
                return None;
            }
        }
        samples.push(t.elapsed() / batch);
    }
    samples.sort();
    Some(samples[samples.len() / 2])
}

/// Deterministic values in [-1, 1).
fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

/// The buffers every kernel benchmark reads, at `run`'s default sizes.
struct Buffers {
    x: Vec<f32>,
    /// The residual stream an rms_norm with a residual adds `x` to, and where the sum goes.
    stream: Vec<f32>,
    sum: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    out: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    w: Vec<f32>,
}

const SEQ: usize = 128;
const HIDDEN: usize = 512;
const HEADS: usize = 8;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const INTER: usize = 1408;

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            x: values(SEQ * HIDDEN),
            stream: values(SEQ * HIDDEN).into_iter().rev().collect(),
            sum: vec![0.0; SEQ * HIDDEN],
            weight: values(HIDDEN),
            bias: values(HIDDEN),
            out: vec![0.0; SEQ * INTER.max(HIDDEN)],
            q: values(SEQ * HEADS * HEAD_DIM),
            k: values(SEQ * KV_HEADS * HEAD_DIM),
            v: values(SEQ * KV_HEADS * HEAD_DIM),
            cos: values(SEQ * HEAD_DIM / 2),
            sin: values(SEQ * HEAD_DIM / 2),
            gate: values(SEQ * INTER),
            up: values(SEQ * INTER),
            w: values(HIDDEN * HIDDEN),
        }
    }
}

/// One kernel benchmark: a label for the shape, the operation, and whether an rms_norm
/// call adds a residual first (a second row for the kernels that take one).
fn kernel_cases(spec: &KernelSpec) -> Vec<(&'static str, OperationType, bool)> {
    let first = spec.operations.iter().find_map(|op| op.known());
    match first {
        Some(op) if layerzero::types::ArgsKind::of(op) == layerzero::types::ArgsKind::Attention => vec![
            ("prefill q[1,128,8,64] kv[1,128,2,64]", OperationType::AttentionCausal, false),
            ("decode q[1,1,8,64] kv[1,128,2,64]", OperationType::AttentionDecode, false),
        ],
        Some(OperationType::NormRms) if spec.constraints.residual => {
            vec![("[128,512]", OperationType::NormRms, false), ("[128,512] + residual", OperationType::NormRms, true)]
        }
        Some(OperationType::NormRms) => vec![("[128,512]", OperationType::NormRms, false)],
        Some(OperationType::NormLayer) => vec![("[128,512]", OperationType::NormLayer, false)],
        Some(OperationType::Rope) => vec![("q[1,128,8,64]", OperationType::Rope, false)],
        Some(OperationType::Swiglu) => vec![("[128,1408]", OperationType::Swiglu, false)],
        Some(OperationType::Matmul) => vec![("[128,512]x[512,512]", OperationType::Matmul, false)],
        _ => Vec::new(),
    }
}

/// Calls `kernel` once on `buffers` for `operation`'s case (with a residual when
/// `residual`); false if it failed.
fn call_kernel(
    kernel: &KernelImpl,
    operation: OperationType,
    residual: bool,
    b: &mut Buffers,
) -> Result<bool, CliError> {
    let e = |e: layerzero::types::TypesError| CliError::usage(format!("bench buffers: {e}"));
    let mut args = match operation {
        OperationType::AttentionCausal | OperationType::AttentionDecode => {
            let rows = if operation == OperationType::AttentionDecode { 1 } else { SEQ };
            OpArgs::Attention(AttentionArgs {
                query: TensorView::from_slice(&b.q[..rows * HEADS * HEAD_DIM], &[1, rows, HEADS, HEAD_DIM])
                    .map_err(e)?,
                key: TensorView::from_slice(&b.k, &[1, SEQ, KV_HEADS, HEAD_DIM]).map_err(e)?,
                value: TensorView::from_slice(&b.v, &[1, SEQ, KV_HEADS, HEAD_DIM]).map_err(e)?,
                output: TensorViewMut::from_slice(&mut b.out[..rows * HEADS * HEAD_DIM], &[1, rows, HEADS, HEAD_DIM])
                    .map_err(e)?,
                layout: Layout::Bshd,
                is_causal: true,
                scale: None,
                window_size: None,
            })
        }
        OperationType::NormRms | OperationType::NormLayer => OpArgs::Norm(NormArgs {
            input: TensorView::from_slice(&b.x, &[SEQ, HIDDEN]).map_err(e)?,
            weight: TensorView::from_slice(&b.weight, &[HIDDEN]).map_err(e)?,
            bias: (operation == OperationType::NormLayer)
                .then(|| TensorView::from_slice(&b.bias, &[HIDDEN]))
                .transpose()
                .map_err(e)?,
            output: TensorViewMut::from_slice(&mut b.out[..SEQ * HIDDEN], &[SEQ, HIDDEN]).map_err(e)?,
            eps: 1e-6,
            residual: match residual {
                true => Some(Residual {
                    input: TensorView::from_slice(&b.stream, &[SEQ, HIDDEN]).map_err(e)?,
                    output: TensorViewMut::from_slice(&mut b.sum, &[SEQ, HIDDEN]).map_err(e)?,
                }),
                false => None,
            },
        }),
        OperationType::Rope => OpArgs::Rope(RopeArgs {
            x: TensorViewMut::from_slice(&mut b.q, &[1, SEQ, HEADS, HEAD_DIM]).map_err(e)?,
            cos: TensorView::from_slice(&b.cos, &[SEQ, HEAD_DIM / 2]).map_err(e)?,
            sin: TensorView::from_slice(&b.sin, &[SEQ, HEAD_DIM / 2]).map_err(e)?,
            position_offset: 0,
            style: RopeStyle::Neox,
            layout: Layout::Bshd,
        }),
        OperationType::Swiglu => OpArgs::Swiglu(SwigluArgs {
            input: SwigluInput::Separate {
                gate: TensorView::from_slice(&b.gate, &[SEQ, INTER]).map_err(e)?,
                up: TensorView::from_slice(&b.up, &[SEQ, INTER]).map_err(e)?,
            },
            output: TensorViewMut::from_slice(&mut b.out[..SEQ * INTER], &[SEQ, INTER]).map_err(e)?,
        }),
        _ => OpArgs::Matmul(MatmulArgs {
            a: TensorView::from_slice(&b.x, &[SEQ, HIDDEN]).map_err(e)?,
            b: TensorView::from_slice_strided(&b.w, &[HIDDEN, HIDDEN], &[1, HIDDEN]).map_err(e)?,
            output: TensorViewMut::from_slice(&mut b.out[..SEQ * HIDDEN], &[SEQ, HIDDEN]).map_err(e)?,
        }),
    };
    Ok(kernel.call(&mut args).is_ok())
}

fn format_ns(d: Duration) -> String {
    let ns = d.as_nanos();
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

pub(crate) fn bench(config: Option<PathBuf>, time_ms: u64, json: bool) -> Result<(), CliError> {
    let budget = Duration::from_millis(time_ms.max(1));
    let registry = get_global_kernel_registry();
    let snapshot = registry.snapshot();
    let specs: Vec<_> = snapshot.iter().cloned().collect();
    let mut modes = vec![DispatchMode::Static, DispatchMode::Dynamic];
    if config.is_some() {
        modes.push(DispatchMode::Config);
    }
    let cases: Vec<(_, &str, OperationType, bool)> = specs
        .iter()
        .flat_map(|spec| kernel_cases(spec).into_iter().map(move |(label, op, residual)| (spec, label, op, residual)))
        .collect();
    let bar = ProgressBar::new((modes.len() + 1 + cases.len()) as u64);
    if !std::io::stderr().is_terminal() || json || (modes.len() + 1 + cases.len()) as u64 * time_ms < 1000 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }

    // Dispatch overhead: a one-row rms_norm, small enough that the kernel is not the story.
    let input = values(64);
    let weight = values(64);
    let mut out = vec![0.0f32; 64];
    let norm_code = snapshot
        .by_operation(OperationType::NormRms.into())
        .first()
        .and_then(|spec| snapshot.implementation(spec.id))
        .cloned()
        .ok_or_else(|| CliError::usage("no rms_norm kernel is registered"))?;
    let mut one_call = |mut f: Box<dyn FnMut(&mut OpArgs<'_>) -> bool + '_>| {
        measure(budget, || {
            let (Ok(input), Ok(weight), Ok(output)) = (
                TensorView::from_slice(&input, &[1, 64]),
                TensorView::from_slice(&weight, &[64]),
                TensorViewMut::from_slice(&mut out, &[1, 64]),
            ) else {
                return false;
            };
            f(&mut OpArgs::Norm(NormArgs::new(input, weight, output, 1e-6)))
        })
    };
    bar.set_message("direct call");
    let direct = one_call(Box::new(|args| norm_code.call(args).is_ok()));
    bar.inc(1);
    let mut overhead = Vec::new();
    for mode in &modes {
        bar.set_message(format!("dispatch, {}", mode.as_str().to_lowercase()));
        // The rules file is CONFIG's; the other rows measure their mode alone.
        let rules = if *mode == DispatchMode::Config { config.clone() } else { None };
        let dispatch = build_dispatcher(&DispatchOptions { config: rules, mode: Some(*mode) })?;
        let time =
            one_call(Box::new(|args| dispatch.dispatcher.dispatch(OperationType::NormRms.into(), args, None).is_ok()));
        overhead.push((mode.as_str().to_lowercase(), time));
        bar.inc(1);
    }

    let mut buffers = Buffers::new();
    let mut kernels = Vec::new();
    for (spec, label, operation, residual) in &cases {
        bar.set_message(spec.id.to_string());
        let time = match snapshot.implementation(spec.id) {
            Some(code) => {
                let mut failed = None;
                let time = measure(budget, || match call_kernel(code, *operation, *residual, &mut buffers) {
                    Ok(ok) => ok,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                time
            }
            None => None,
        };
        kernels.push((spec.id.to_string(), operation.to_string(), *label, time));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut out = std::io::stdout().lock();
    let ns = |d: Option<Duration>| d.map(|d| d.as_nanos() as u64);
    if json {
        let report = serde_json::json!({
            "direct_call_ns": ns(direct),
            "dispatch": overhead.iter().map(|(mode, t)| serde_json::json!({
                "mode": mode, "per_call_ns": ns(*t),
                "overhead_ns": t.zip(direct).map(|(t, d)| t.as_nanos() as i64 - d.as_nanos() as i64),
            })).collect::<Vec<_>>(),
            "kernels": kernels.iter().map(|(id, op, shape, t)| serde_json::json!({
                "kernel": id, "operation": op, "shape": shape, "per_call_ns": ns(*t),
            })).collect::<Vec<_>>(),
        });
        crate::table::write_json(&mut out, &report)?;
        return Ok(());
    }
    writeln!(out, "dispatch of rms_norm [1,64] float32 (median per call, {time_ms} ms per row):")?;
    let mut table = Table::new(["mode", "per call", "over a direct call"]);
    let direct_text = direct.map_or("failed".to_owned(), format_ns);
    table.row(vec!["direct call".into(), direct_text, "-".into()]);
    for (mode, time) in &overhead {
        let over = match (time, direct) {
            (Some(t), Some(d)) if *t >= d => format!("+{}", format_ns(*t - d)),
            (Some(t), Some(d)) => format!("-{}", format_ns(d - *t)),
            _ => "-".into(),
        };
        table.row(vec![mode.clone(), time.map_or("failed".to_owned(), format_ns), over]);
    }
    write!(out, "{}", table.render())?;
    if config.is_none() {
        writeln!(out, "(config mode: pass --config FILE)")?;
    }
    writeln!(out)?;
    writeln!(out, "kernels, called directly on run's default shapes (float32, median per call):")?;
    let mut table = Table::new(["kernel", "operation", "shape", "per call"]);
    for (id, op, shape, time) in &kernels {
        let time = time.map_or("refused (outside its spec)".to_owned(), format_ns);
        table.row(vec![id.clone(), op.clone(), (*shape).to_owned(), time]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}
