//! One Llama-style decoder layer, every operation through the dispatcher, each output
//! checked against the float64 reference when asked.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use layerzero::types::{
    AttentionArgs, Device, FloatElement, Layout, MatmulArgs, NormArgs, OpArgs, OperationType, Residual, RopeArgs,
    RopeStyle, SwigluArgs, SwigluInput, TensorView, TensorViewMut, TypesError,
};

use super::reference;
use super::weights::{LayerWeights, Shapes};
use crate::dispatcher::{Dispatch, Why};
use crate::error::CliError;

/// Prefill (the prompt, causal attention) or decode (one token against the KV cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Prefill,
    Decode,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// One line of the report: a step of the layer, over every layer and call.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) phase: Phase,
    pub(crate) stage: &'static str,
    pub(crate) operation: OperationType,
    pub(crate) kernels: BTreeSet<String>,
    pub(crate) why: BTreeSet<String>,
    pub(crate) calls: u64,
    pub(crate) time: Duration,
    /// The largest relative error seen, when checked.
    pub(crate) max_rel_error: Option<f64>,
}

/// Measures the device time of the work a call queues (CUDA events around it); `None`
/// when it cannot, and the host time is reported instead.
pub(crate) type DeviceTimer<'d> = dyn Fn(&mut dyn FnMut()) -> Option<Duration> + 'd;

/// Runs operations through the dispatcher and keeps the report.
pub(crate) struct Recorder<'d> {
    dispatch: &'d Dispatch,
    pub(crate) rows: Vec<Row>,
    /// Check against the reference (`--no-check` turns it off).
    pub(crate) check: bool,
    /// Times calls on device tensors (`run --device cuda`).
    device_timer: Option<Box<DeviceTimer<'d>>>,
}

impl<'d> Recorder<'d> {
    pub(crate) fn new(dispatch: &'d Dispatch, check: bool) -> Self {
        Recorder { dispatch, rows: Vec::new(), check, device_timer: None }
    }

    /// Calls on device tensors are timed by `timer` (device time) instead of the host clock.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn with_device_timer(mut self, timer: Box<DeviceTimer<'d>>) -> Self {
        self.device_timer = Some(timer);
        self
    }

    /// Adds `time` to a step's row (the copies around a host operation in a device run).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn add_time(&mut self, phase: Phase, stage: &'static str, time: Duration) {
        if let Some(row) = self.rows.iter_mut().find(|r| r.phase == phase && r.stage == stage) {
            row.time += time;
        }
    }

    fn row(&mut self, phase: Phase, stage: &'static str, operation: OperationType) -> &mut Row {
        let index = match self.rows.iter().position(|r| r.phase == phase && r.stage == stage) {
            Some(index) => index,
            None => {
                self.rows.push(Row {
                    phase,
                    stage,
                    operation,
                    kernels: BTreeSet::new(),
                    why: BTreeSet::new(),
                    calls: 0,
                    time: Duration::ZERO,
                    max_rel_error: None,
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[index]
    }

    pub(crate) fn run(
        &mut self,
        phase: Phase,
        stage: &'static str,
        operation: OperationType,
        layer: usize,
        args: &mut OpArgs<'_>,
    ) -> Result<(), CliError> {
        let fail = |e: &dyn std::fmt::Display| {
            CliError::invalid(format!("{} {stage} (layer {layer}, {operation}): {e}", phase.as_str()))
        };
        let mut context = args.context().map_err(|e| fail(&e))?;
        // Per-layer rules and profiles see which layer calls.
        context.layer_index = u32::try_from(layer).ok();
        let on_device = context.device.is_some_and(|d| d != Device::Cpu);
        let dispatcher = &self.dispatch.dispatcher;
        let start = Instant::now();
        let mut result = None;
        let mut call = || result = Some(dispatcher.dispatch(operation.into(), args, Some(&context)));
        let device_time = match &self.device_timer {
            Some(timer) if on_device => timer(&mut call),
            _ => {
                call();
                None
            }
        };
        let elapsed = device_time.unwrap_or_else(|| start.elapsed());
        let result = result.ok_or_else(|| fail(&"the device timer did not make the call"))?.map_err(|e| fail(&e))?;
        let why = if result.was_fallback { Some(Why::Fallback) } else { self.dispatch.why(operation.into(), &context) };
        let row = self.row(phase, stage, operation);
        row.kernels.insert(result.kernel_id.to_string());
        row.why.insert(why.map_or_else(|| "-".to_owned(), |w| w.to_string()));
        row.calls += 1;
        row.time += elapsed;
        Ok(())
    }

    pub(crate) fn record_check<T: FloatElement>(
        &mut self,
        phase: Phase,
        stage: &'static str,
        actual: &[T],
        expected: &[f64],
    ) {
        let error = reference::max_rel_error(&widen(actual), expected);
        // The row exists: every check follows the dispatch that made its output.
        if let Some(row) = self.rows.iter_mut().find(|r| r.phase == phase && r.stage == stage) {
            row.max_rel_error = Some(row.max_rel_error.map_or(error, |e| e.max(error)));
        }
    }
}

pub(crate) fn widen<T: FloatElement>(values: &[T]) -> Vec<f64> {
    values.iter().map(|v| f64::from(v.to_f32())).collect()
}

pub(crate) fn narrow<T: FloatElement>(values: &[f32]) -> Vec<T> {
    values.iter().map(|&v| T::from_f32(v)).collect()
}

/// A layer's parameters in the run's dtype.
pub(crate) struct Layer<T> {
    input_layernorm: Vec<T>,
    q_proj: Vec<T>,
    k_proj: Vec<T>,
    v_proj: Vec<T>,
    o_proj: Vec<T>,
    post_attention_layernorm: Vec<T>,
    gate_proj: Vec<T>,
    up_proj: Vec<T>,
    down_proj: Vec<T>,
    /// Keys after rope, `[positions, kv_heads, head_dim]`, filled as tokens arrive.
    k_cache: Vec<T>,
    /// Values, the same shape.
    v_cache: Vec<T>,
}

impl<T: FloatElement + Default> Layer<T> {
    pub(crate) fn new(weights: &LayerWeights, shapes: &Shapes) -> Self {
        let positions = shapes.seq + shapes.decode_steps;
        Layer {
            input_layernorm: narrow(&weights.input_layernorm),
            q_proj: narrow(&weights.q_proj),
            k_proj: narrow(&weights.k_proj),
            v_proj: narrow(&weights.v_proj),
            o_proj: narrow(&weights.o_proj),
            post_attention_layernorm: narrow(&weights.post_attention_layernorm),
            gate_proj: narrow(&weights.gate_proj),
            up_proj: narrow(&weights.up_proj),
            down_proj: narrow(&weights.down_proj),
            k_cache: vec![T::default(); positions * shapes.kv_dim()],
            v_cache: vec![T::default(); positions * shapes.kv_dim()],
        }
    }
}

/// What every call of the layer shares.
pub(crate) struct Step<'a> {
    pub(crate) shapes: &'a Shapes,
    /// float32 `[positions, head_dim / 2]` tables.
    pub(crate) cos: &'a [f32],
    pub(crate) sin: &'a [f32],
    pub(crate) eps: f32,
    pub(crate) rope_theta: f64,
}

/// `x · wᵀ` for a `[out, in]` weight: the weight viewed as `[in, out]` through strides.
fn linear_args<'a, T: FloatElement>(
    x: &'a [T],
    w: &'a [T],
    out: &'a mut [T],
    rows: usize,
    k: usize,
    n: usize,
) -> Result<OpArgs<'a>, TypesError> {
    Ok(OpArgs::Matmul(MatmulArgs {
        a: TensorView::from_slice(x, &[rows, k])?,
        b: TensorView::from_slice_strided(w, &[k, n], &[1, k])?,
        output: TensorViewMut::from_slice(out, &[rows, n])?,
    }))
}

pub(crate) fn types_error(e: TypesError) -> CliError {
    CliError::invalid(format!("building a tensor view: {e}"))
}

/// Runs `x` (`rows` tokens of `hidden`, at positions `start..start + rows`) through
/// layer `index`, appending its keys and values to the layer's cache; returns the output.
pub(crate) fn forward<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    step: &Step<'_>,
    layer: &mut Layer<T>,
    index: usize,
    x: &[T],
    start: usize,
) -> Result<Vec<T>, CliError> {
    let s = step.shapes;
    let (h, qd, kvd, inter) = (s.hidden, s.q_dim(), s.kv_dim(), s.intermediate);
    let rows = x.len() / h;
    let end = start + rows;
    let check = recorder.check;

    // Attention block.
    let normed = rms_norm(recorder, phase, "input_layernorm", step, index, x, &layer.input_layernorm)?;
    let mut q = vec![T::default(); rows * qd];
    let mut args = linear_args(&normed, &layer.q_proj, &mut q, rows, h, qd).map_err(types_error)?;
    recorder.run(phase, "q_proj", OperationType::Matmul, index, &mut args)?;
    let k_new = &mut layer.k_cache[start * kvd..end * kvd];
    let mut args = linear_args(&normed, &layer.k_proj, k_new, rows, h, kvd).map_err(types_error)?;
    recorder.run(phase, "k_proj", OperationType::Matmul, index, &mut args)?;
    let v_new = &mut layer.v_cache[start * kvd..end * kvd];
    let mut args = linear_args(&normed, &layer.v_proj, v_new, rows, h, kvd).map_err(types_error)?;
    recorder.run(phase, "v_proj", OperationType::Matmul, index, &mut args)?;
    if check {
        let n = widen(&normed);
        recorder.record_check(phase, "q_proj", &q, &reference::linear(&n, &widen(&layer.q_proj), h));
        let expected = reference::linear(&n, &widen(&layer.k_proj), h);
        recorder.record_check(phase, "k_proj", &layer.k_cache[start * kvd..end * kvd], &expected);
        let expected = reference::linear(&n, &widen(&layer.v_proj), h);
        recorder.record_check(phase, "v_proj", &layer.v_cache[start * kvd..end * kvd], &expected);
    }
    rope(recorder, phase, "rope_q", step, index, &mut q, s.heads, start)?;
    rope(recorder, phase, "rope_k", step, index, &mut layer.k_cache[start * kvd..end * kvd], s.kv_heads, start)?;

    let attended =
        attend(recorder, phase, "attention", index, s, &q, &layer.k_cache[..end * kvd], &layer.v_cache[..end * kvd])?;
    let attention_out = linear(recorder, phase, "o_proj", index, &attended, &layer.o_proj, rows, qd, h)?;

    // MLP block: the residual add and its rms_norm in one dispatched call.
    let (residual, normed) =
        add_rms_norm(recorder, phase, ADD_NORM_STAGE, step, index, &attention_out, x, &layer.post_attention_layernorm)?;
    let gate = linear(recorder, phase, "gate_proj", index, &normed, &layer.gate_proj, rows, h, inter)?;
    let up = linear(recorder, phase, "up_proj", index, &normed, &layer.up_proj, rows, h, inter)?;
    let mut activated = vec![T::default(); rows * inter];
    let mut args = OpArgs::Swiglu(SwigluArgs {
        input: SwigluInput::Separate {
            gate: TensorView::from_slice(&gate, &[rows, inter]).map_err(types_error)?,
            up: TensorView::from_slice(&up, &[rows, inter]).map_err(types_error)?,
        },
        output: TensorViewMut::from_slice(&mut activated, &[rows, inter]).map_err(types_error)?,
    });
    recorder.run(phase, "swiglu", OperationType::Swiglu, index, &mut args)?;
    if check {
        recorder.record_check(phase, "swiglu", &activated, &reference::swiglu(&widen(&gate), &widen(&up)));
    }
    let down = linear(recorder, phase, "down_proj", index, &activated, &layer.down_proj, rows, inter, h)?;
    Ok(add(&residual, &down))
}

/// Causal attention of `q` (its rows the last of `keys`' positions) over `keys` and
/// `values` (`[positions, kv_heads · head_dim]`), on host memory through the dispatcher,
/// checked against the reference when the recorder checks; recorded under `stage`.
#[allow(clippy::too_many_arguments)] // the layer's step: where, which layer, and the three inputs
pub(crate) fn attend<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    index: usize,
    s: &Shapes,
    q: &[T],
    keys: &[T],
    values: &[T],
) -> Result<Vec<T>, CliError> {
    let (qd, hd) = (s.q_dim(), s.head_dim);
    let rows = q.len() / qd;
    let end = keys.len() / s.kv_dim();
    let mut attended = vec![T::default(); rows * qd];
    let operation = match phase {
        Phase::Prefill => OperationType::AttentionCausal,
        Phase::Decode => OperationType::AttentionDecode,
    };
    let mut args = OpArgs::Attention(AttentionArgs {
        query: TensorView::from_slice(q, &[1, rows, s.heads, hd]).map_err(types_error)?,
        key: TensorView::from_slice(keys, &[1, end, s.kv_heads, hd]).map_err(types_error)?,
        value: TensorView::from_slice(values, &[1, end, s.kv_heads, hd]).map_err(types_error)?,
        output: TensorViewMut::from_slice(&mut attended, &[1, rows, s.heads, hd]).map_err(types_error)?,
        layout: Layout::Bshd,
        is_causal: true,
        scale: None,
        window_size: None,
    });
    recorder.run(phase, stage, operation, index, &mut args)?;
    if recorder.check {
        let expected = reference::causal_attention(&widen(q), &widen(keys), &widen(values), s.heads, s.kv_heads, hd);
        recorder.record_check(phase, stage, &attended, &expected);
    }
    Ok(attended)
}

/// The residual add after the MLP: not an operation LayerZero dispatches (the one after
/// attention is, fused with the rms_norm that follows it), so it runs here, in float32
/// rounded to the run's dtype, as a framework's add would.
pub(crate) fn add<T: FloatElement>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().zip(b).map(|(x, y)| T::from_f32(x.to_f32() + y.to_f32())).collect()
}

fn rms_norm<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    step: &Step<'_>,
    index: usize,
    x: &[T],
    weight: &[T],
) -> Result<Vec<T>, CliError> {
    let h = weight.len();
    let rows = x.len() / h;
    let mut out = vec![T::default(); x.len()];
    let mut args = OpArgs::Norm(NormArgs {
        input: TensorView::from_slice(x, &[rows, h]).map_err(types_error)?,
        weight: TensorView::from_slice(weight, &[h]).map_err(types_error)?,
        bias: None,
        output: TensorViewMut::from_slice(&mut out, &[rows, h]).map_err(types_error)?,
        eps: step.eps,
        residual: None,
    });
    recorder.run(phase, stage, OperationType::NormRms, index, &mut args)?;
    if recorder.check {
        let expected = reference::rms_norm(&widen(x), &widen(weight), f64::from(step.eps));
        recorder.record_check(phase, stage, &out, &expected);
    }
    Ok(out)
}

/// The row of the residual add after attention fused with the post-attention rms_norm.
pub(crate) const ADD_NORM_STAGE: &str = "add+post_attention_layernorm";

/// `residual + x` (the layer's new residual stream) and its rms_norm, in one rms_norm call
/// with a [`Residual`]: the dispatcher picks a kernel that takes it (fused or not). Checks
/// both outputs: the sum against the float64 sum, the norm against the reference over the
/// sum as stored.
#[allow(clippy::too_many_arguments)] // the layer's step: where, which layer, and the three inputs
fn add_rms_norm<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    step: &Step<'_>,
    index: usize,
    x: &[T],
    residual: &[T],
    weight: &[T],
) -> Result<(Vec<T>, Vec<T>), CliError> {
    let h = weight.len();
    let rows = x.len() / h;
    let (mut sum, mut out) = (vec![T::default(); x.len()], vec![T::default(); x.len()]);
    let mut args = OpArgs::Norm(NormArgs {
        input: TensorView::from_slice(x, &[rows, h]).map_err(types_error)?,
        weight: TensorView::from_slice(weight, &[h]).map_err(types_error)?,
        bias: None,
        output: TensorViewMut::from_slice(&mut out, &[rows, h]).map_err(types_error)?,
        eps: step.eps,
        residual: Some(Residual {
            input: TensorView::from_slice(residual, &[rows, h]).map_err(types_error)?,
            output: TensorViewMut::from_slice(&mut sum, &[rows, h]).map_err(types_error)?,
        }),
    });
    recorder.run(phase, stage, OperationType::NormRms, index, &mut args)?;
    if recorder.check {
        let expected: Vec<f64> = widen(x).iter().zip(widen(residual)).map(|(a, b)| a + b).collect();
        recorder.record_check(phase, stage, &sum, &expected);
        let expected = reference::rms_norm(&widen(&sum), &widen(weight), f64::from(step.eps));
        recorder.record_check(phase, stage, &out, &expected);
    }
    Ok((sum, out))
}

#[allow(clippy::too_many_arguments)]
fn linear<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    index: usize,
    x: &[T],
    w: &[T],
    rows: usize,
    k: usize,
    n: usize,
) -> Result<Vec<T>, CliError> {
    let mut out = vec![T::default(); rows * n];
    let mut args = linear_args(x, w, &mut out, rows, k, n).map_err(types_error)?;
    recorder.run(phase, stage, OperationType::Matmul, index, &mut args)?;
    if recorder.check {
        recorder.record_check(phase, stage, &out, &reference::linear(&widen(x), &widen(w), k));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn rope<T: FloatElement>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    step: &Step<'_>,
    index: usize,
    x: &mut [T],
    heads: usize,
    start: usize,
) -> Result<(), CliError> {
    let hd = step.shapes.head_dim;
    let rows = x.len() / (heads * hd);
    let before = recorder.check.then(|| widen(x));
    let positions = step.cos.len() / (hd / 2);
    let mut args = OpArgs::Rope(RopeArgs {
        x: TensorViewMut::from_slice(x, &[1, rows, heads, hd]).map_err(types_error)?,
        cos: TensorView::from_slice(step.cos, &[positions, hd / 2]).map_err(types_error)?,
        sin: TensorView::from_slice(step.sin, &[positions, hd / 2]).map_err(types_error)?,
        position_offset: start,
        style: RopeStyle::Neox,
        layout: Layout::Bshd,
    });
    recorder.run(phase, stage, OperationType::Rope, index, &mut args)?;
    if let Some(before) = before {
        let expected = reference::rope(&before, heads, hd, start, step.rope_theta);
        recorder.record_check(phase, stage, x, &expected);
    }
    Ok(())
}

/// float32 rope tables `[positions, head_dim / 2]`: `cos` and `sin` of
/// `position · theta^(-2i / head_dim)`.
pub(crate) fn rope_tables(positions: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for i in 0..half {
            let angle = p as f64 * theta.powf(-2.0 * i as f64 / head_dim as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}
