//! `run --device cuda`: the same decoder layers with weights and activations in GPU memory,
//! every operation through the dispatcher the CPU run uses (selection sees device views and
//! picks the CUDA kernels), each checked against the float64 reference on its downloaded
//! inputs, each timed on the device with CUDA events.
//!
//! Attention has no CUDA kernel yet: queries, keys and values are copied to the host, the
//! CPU attention kernel runs (through the dispatcher), and its output is copied back; the
//! table says so on that row and counts the copies in its time. The residual add after
//! attention runs on the device, fused into the post-attention rms_norm call (a
//! [`Residual`]); the one after the MLP, which LayerZero has no operation for, runs on the
//! host between copies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use layerzero::kernels::cuda::{self, CudaDevice};
use layerzero::registry::{get_global_backend_registry, get_global_kernel_registry};
use layerzero::types::{
    Device, FloatElement, Layout, MatmulArgs, NormArgs, OpArgs, OperationType, Residual, RopeArgs, RopeStyle,
    SwigluArgs, SwigluInput, Tensor,
};

use super::layer::{ADD_NORM_STAGE, Phase, Recorder, Step, add, narrow, types_error, widen};
use super::reference;
use super::weights::{LayerWeights, Shapes};
use crate::error::CliError;

/// The attention row of a device run: the CPU kernel, between copies.
pub(crate) const ATTENTION_STAGE: &str = "attention: CPU path, copies";

/// The GPUs of this machine and the one the run uses.
pub(crate) struct Gpus {
    devices: Arc<[CudaDevice]>,
    index: usize,
}

impl Gpus {
    pub(crate) fn gpu(&self) -> &CudaDevice {
        &self.devices[self.index]
    }

    /// The same GPUs, running on `device` (`run --devices`).
    pub(crate) fn on(&self, device: Device) -> Result<Gpus, CliError> {
        let Some(index) = self.devices.iter().position(|d| d.device() == device) else {
            let present: Vec<String> = self.devices.iter().map(|d| d.device().to_string()).collect();
            return Err(CliError::usage(format!("no CUDA device {device}; this machine has {}", present.join(", "))));
        };
        Ok(Gpus { devices: Arc::clone(&self.devices), index })
    }

    /// `cuda:N (name, compute capability)` for the report.
    pub(crate) fn describe(&self) -> String {
        let info = self.gpu().info();
        let capability = info.compute_capability.map(|c| format!(", sm {c}")).unwrap_or_default();
        format!("{} ({}{capability})", self.gpu().device(), info.name)
    }
}

/// The GPU `device` names; exit code 2 with "no CUDA device: ..." when there is none.
pub(crate) fn open(device: Device) -> Result<Gpus, CliError> {
    let devices = cuda::discover().map_err(|e| CliError::usage(format!("no CUDA device: discovery failed: {e}")))?;
    if devices.is_empty() {
        return Err(CliError::usage(
            "no CUDA device: no CUDA driver or GPU found on this machine (run with --device cpu)",
        ));
    }
    let Some(index) = devices.iter().position(|d| d.device() == device) else {
        let present: Vec<String> = devices.iter().map(|d| d.device().to_string()).collect();
        return Err(CliError::usage(format!(
            "no CUDA device: {device} asked for; this machine has {}",
            present.join(", ")
        )));
    };
    Ok(Gpus { devices: devices.into(), index })
}

/// Registers the CUDA kernels and backend in the process-wide registries, which the
/// dispatcher reads.
pub(crate) fn register(gpus: &Gpus) -> Result<(), CliError> {
    cuda::register_cuda_backend(get_global_backend_registry(), &gpus.devices)
        .map_err(|e| CliError::usage(format!("registering the CUDA backend: {e}")))?;
    cuda::register_cuda_kernels(get_global_kernel_registry(), Arc::clone(&gpus.devices))
        .map_err(|e| CliError::usage(format!("registering the CUDA kernels: {e}")))
}

/// The device timer of the recorder: CUDA events on the run's GPU.
pub(crate) fn timer(gpu: &CudaDevice) -> impl Fn(&mut dyn FnMut()) -> Option<Duration> + '_ {
    move |call: &mut dyn FnMut()| gpu.timed(call).ok().map(|((), time)| time)
}

fn cuda_error(e: impl std::fmt::Display) -> CliError {
    CliError::invalid(format!("cuda: {e}"))
}

fn upload<T: FloatElement>(gpu: &CudaDevice, values: Vec<T>, dims: &[usize]) -> Result<Tensor, CliError> {
    Tensor::from_vec(values, dims).map_err(types_error)?.to_cuda(gpu.stream()).map_err(cuda_error)
}

fn download<T: FloatElement>(t: &Tensor) -> Result<Vec<T>, CliError> {
    let host = t.to_host().map_err(cuda_error)?;
    Ok(host.as_slice::<T>().map_err(types_error)?.to_vec())
}

/// A zeroed device tensor of `T`.
fn zeros<T: FloatElement>(gpu: &CudaDevice, dims: &[usize]) -> Result<Tensor, CliError> {
    Tensor::zeros(dims, T::DTYPE).map_err(types_error)?.to_cuda(gpu.stream()).map_err(cuda_error)
}

/// One weight: on the device for the kernels, on the host (as the run's dtype) for checks.
struct Weight<T> {
    device: Tensor,
    host: Vec<T>,
}

impl<T: FloatElement> Weight<T> {
    fn new(gpu: &CudaDevice, values: &[f32], dims: &[usize]) -> Result<Self, CliError> {
        let host: Vec<T> = narrow(values);
        Ok(Weight { device: upload(gpu, host.clone(), dims)?, host })
    }
}

/// A layer's parameters on the device; its KV cache on the host, where attention runs.
pub(crate) struct DeviceLayer<T> {
    input_layernorm: Weight<T>,
    q_proj: Weight<T>,
    k_proj: Weight<T>,
    v_proj: Weight<T>,
    o_proj: Weight<T>,
    post_attention_layernorm: Weight<T>,
    gate_proj: Weight<T>,
    up_proj: Weight<T>,
    down_proj: Weight<T>,
    k_cache: Vec<T>,
    v_cache: Vec<T>,
}

impl<T: FloatElement + Default> DeviceLayer<T> {
    pub(crate) fn new(gpu: &CudaDevice, w: &LayerWeights, s: &Shapes) -> Result<Self, CliError> {
        let (h, qd, kvd, inter) = (s.hidden, s.q_dim(), s.kv_dim(), s.intermediate);
        let positions = s.seq + s.decode_steps;
        Ok(DeviceLayer {
            input_layernorm: Weight::new(gpu, &w.input_layernorm, &[h])?,
            q_proj: Weight::new(gpu, &w.q_proj, &[qd, h])?,
            k_proj: Weight::new(gpu, &w.k_proj, &[kvd, h])?,
            v_proj: Weight::new(gpu, &w.v_proj, &[kvd, h])?,
            o_proj: Weight::new(gpu, &w.o_proj, &[h, qd])?,
            post_attention_layernorm: Weight::new(gpu, &w.post_attention_layernorm, &[h])?,
            gate_proj: Weight::new(gpu, &w.gate_proj, &[inter, h])?,
            up_proj: Weight::new(gpu, &w.up_proj, &[inter, h])?,
            down_proj: Weight::new(gpu, &w.down_proj, &[h, inter])?,
            k_cache: vec![T::default(); positions * kvd],
            v_cache: vec![T::default(); positions * kvd],
        })
    }
}

/// The rope tables on the device (float32 `[positions, head_dim / 2]`).
pub(crate) struct DeviceTables {
    cos: Tensor,
    sin: Tensor,
}

impl DeviceTables {
    pub(crate) fn new(gpu: &CudaDevice, step: &Step<'_>) -> Result<Self, CliError> {
        let half = step.shapes.head_dim / 2;
        let positions = step.cos.len() / half.max(1);
        Ok(DeviceTables {
            cos: upload(gpu, step.cos.to_vec(), &[positions, half])?,
            sin: upload(gpu, step.sin.to_vec(), &[positions, half])?,
        })
    }
}

/// What every call of a device run shares.
pub(crate) struct DeviceStep<'a> {
    pub(crate) step: &'a Step<'a>,
    pub(crate) tables: &'a DeviceTables,
    pub(crate) gpu: &'a CudaDevice,
}

/// Uploads `x` (`rows` tokens of the run's dtype) for [`forward`].
pub(crate) fn upload_rows<T: FloatElement>(gpu: &CudaDevice, x: Vec<T>, hidden: usize) -> Result<Tensor, CliError> {
    let rows = x.len() / hidden;
    upload(gpu, x, &[rows, hidden])
}

/// Downloads a [`forward`] output.
pub(crate) fn download_rows<T: FloatElement>(t: &Tensor) -> Result<Vec<T>, CliError> {
    download(t)
}

/// Runs `x` (device, `[rows, hidden]`, positions `start..start + rows`) through layer
/// `index`, appending its keys and values to the layer's (host) cache; returns the output,
/// on the device.
pub(crate) fn forward<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    ds: &DeviceStep<'_>,
    layer: &mut DeviceLayer<T>,
    index: usize,
    x: &Tensor,
    start: usize,
) -> Result<Tensor, CliError> {
    let s = ds.step.shapes;
    let (h, qd, kvd, inter) = (s.hidden, s.q_dim(), s.kv_dim(), s.intermediate);
    let rows = x.dims()[0];
    let end = start + rows;
    let gpu = ds.gpu;

    // Attention block.
    let normed = rms_norm::<T>(recorder, phase, "input_layernorm", ds, index, x, &layer.input_layernorm)?;
    let mut q = linear::<T>(recorder, phase, "q_proj", ds, index, &normed, &layer.q_proj, qd)?;
    let mut k = linear::<T>(recorder, phase, "k_proj", ds, index, &normed, &layer.k_proj, kvd)?;
    let v = linear::<T>(recorder, phase, "v_proj", ds, index, &normed, &layer.v_proj, kvd)?;
    rope::<T>(recorder, phase, "rope_q", ds, index, &mut q, s.heads, start)?;
    rope::<T>(recorder, phase, "rope_k", ds, index, &mut k, s.kv_heads, start)?;

    // Attention on the host: copy q, k, v down, run the CPU kernel, copy the output up.
    let copies = Instant::now();
    let q_host: Vec<T> = download(&q)?;
    layer.k_cache[start * kvd..end * kvd].copy_from_slice(&download::<T>(&k)?);
    layer.v_cache[start * kvd..end * kvd].copy_from_slice(&download::<T>(&v)?);
    let mut copy_time = copies.elapsed();
    let keys = &layer.k_cache[..end * kvd];
    let values = &layer.v_cache[..end * kvd];
    let attended = super::layer::attend(recorder, phase, ATTENTION_STAGE, index, s, &q_host, keys, values)?;
    let copies = Instant::now();
    let attended = upload(gpu, attended, &[rows, qd])?;
    copy_time += copies.elapsed();
    recorder.add_time(phase, ATTENTION_STAGE, copy_time);

    let attention_out = linear::<T>(recorder, phase, "o_proj", ds, index, &attended, &layer.o_proj, h)?;

    // MLP block: the residual add and its rms_norm in one dispatched call, on the device.
    let (residual, normed) =
        add_rms_norm::<T>(recorder, phase, ds, index, &attention_out, x, &layer.post_attention_layernorm)?;
    let gate = linear::<T>(recorder, phase, "gate_proj", ds, index, &normed, &layer.gate_proj, inter)?;
    let up = linear::<T>(recorder, phase, "up_proj", ds, index, &normed, &layer.up_proj, inter)?;
    let mut activated = zeros::<T>(gpu, &[rows, inter])?;
    let mut args = OpArgs::Swiglu(SwigluArgs {
        input: SwigluInput::Separate { gate: gate.view(), up: up.view() },
        output: activated.view_mut(),
    });
    recorder.run(phase, "swiglu", OperationType::Swiglu, index, &mut args)?;
    if recorder.check {
        let expected = reference::swiglu(&widen(&download::<T>(&gate)?), &widen(&download::<T>(&up)?));
        recorder.record_check(phase, "swiglu", &download::<T>(&activated)?, &expected);
    }
    let down = linear::<T>(recorder, phase, "down_proj", ds, index, &activated, &layer.down_proj, h)?;
    host_add::<T>(gpu, &residual, &down)
}

/// The residual add, on the host (LayerZero has no add operation): both copied down, the
/// sum copied up.
fn host_add<T: FloatElement>(gpu: &CudaDevice, a: &Tensor, b: &Tensor) -> Result<Tensor, CliError> {
    let sum = add(&download::<T>(a)?, &download::<T>(b)?);
    upload(gpu, sum, a.dims())
}

fn rms_norm<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    ds: &DeviceStep<'_>,
    index: usize,
    x: &Tensor,
    weight: &Weight<T>,
) -> Result<Tensor, CliError> {
    let mut out = zeros::<T>(ds.gpu, x.dims())?;
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), weight.device.view(), out.view_mut(), ds.step.eps));
    recorder.run(phase, stage, OperationType::NormRms, index, &mut args)?;
    if recorder.check {
        let expected = reference::rms_norm(&widen(&download::<T>(x)?), &widen(&weight.host), f64::from(ds.step.eps));
        recorder.record_check(phase, stage, &download::<T>(&out)?, &expected);
    }
    Ok(out)
}

/// `residual + x` and its rms_norm in one call (see the CPU run's `add_rms_norm`): both
/// outputs on the device, both checked.
fn add_rms_norm<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    ds: &DeviceStep<'_>,
    index: usize,
    x: &Tensor,
    residual: &Tensor,
    weight: &Weight<T>,
) -> Result<(Tensor, Tensor), CliError> {
    let (mut sum, mut out) = (zeros::<T>(ds.gpu, x.dims())?, zeros::<T>(ds.gpu, x.dims())?);
    let mut args = OpArgs::Norm(NormArgs {
        input: x.view(),
        weight: weight.device.view(),
        bias: None,
        output: out.view_mut(),
        eps: ds.step.eps,
        residual: Some(Residual { input: residual.view(), output: sum.view_mut() }),
    });
    recorder.run(phase, ADD_NORM_STAGE, OperationType::NormRms, index, &mut args)?;
    if recorder.check {
        let (x, residual) = (widen(&download::<T>(x)?), widen(&download::<T>(residual)?));
        let expected: Vec<f64> = x.iter().zip(residual).map(|(a, b)| a + b).collect();
        let stored = download::<T>(&sum)?;
        recorder.record_check(phase, ADD_NORM_STAGE, &stored, &expected);
        let expected = reference::rms_norm(&widen(&stored), &widen(&weight.host), f64::from(ds.step.eps));
        recorder.record_check(phase, ADD_NORM_STAGE, &download::<T>(&out)?, &expected);
    }
    Ok((sum, out))
}

/// `x · wᵀ` for a `[n, k]` weight, passed as the `[k, n]` operand through strides.
#[allow(clippy::too_many_arguments)]
fn linear<T: FloatElement + Default>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    ds: &DeviceStep<'_>,
    index: usize,
    x: &Tensor,
    w: &Weight<T>,
    n: usize,
) -> Result<Tensor, CliError> {
    let (rows, k) = (x.dims()[0], x.dims()[1]);
    let mut out = zeros::<T>(ds.gpu, &[rows, n])?;
    let mut args = OpArgs::Matmul(MatmulArgs {
        a: x.view(),
        b: w.device.view().transpose(0, 1).map_err(types_error)?,
        output: out.view_mut(),
    });
    recorder.run(phase, stage, OperationType::Matmul, index, &mut args)?;
    if recorder.check {
        let expected = reference::linear(&widen(&download::<T>(x)?), &widen(&w.host), k);
        recorder.record_check(phase, stage, &download::<T>(&out)?, &expected);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn rope<T: FloatElement>(
    recorder: &mut Recorder<'_>,
    phase: Phase,
    stage: &'static str,
    ds: &DeviceStep<'_>,
    index: usize,
    x: &mut Tensor,
    heads: usize,
    start: usize,
) -> Result<(), CliError> {
    let hd = ds.step.shapes.head_dim;
    let rows = x.numel() / (heads * hd);
    let before = if recorder.check { Some(widen(&download::<T>(x)?)) } else { None };
    let mut args = OpArgs::Rope(RopeArgs {
        x: x.view_mut().reshape(&[1, rows, heads, hd]).map_err(types_error)?,
        cos: ds.tables.cos.view(),
        sin: ds.tables.sin.view(),
        position_offset: start,
        style: RopeStyle::Neox,
        layout: Layout::Bshd,
    });
    recorder.run(phase, stage, OperationType::Rope, index, &mut args)?;
    if let Some(before) = before {
        let expected = reference::rope(&before, heads, hd, start, ds.step.rope_theta);
        recorder.record_check(phase, stage, &download::<T>(x)?, &expected);
    }
    Ok(())
}
