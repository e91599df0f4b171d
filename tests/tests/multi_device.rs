//! Per-device semantics on the CPU, with test kernels registered for two fake GPUs
//! (`cuda:0`, `cuda:1`): a breaker per (kernel, device), telemetry per device, selection
//! cache keys that include the device, and rules that tell devices and parallel layouts
//! apart. The kernels run on host memory; the context names the device.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use layerzero::breaker::CircuitState;
use layerzero::config::{ConfigSchema, DispatchConfig, DispatchMode};
use layerzero::dispatch::{ConfigDrivenDispatcher, Dispatcher};
use layerzero::registry::{BackendInfo, BackendRegistry, DeviceInfo, KernelRegistry};
use layerzero::types::{
    DType, Device, KernelError, KernelId, KernelImpl, KernelResult, KernelSpec, NormArgs, OpArgs, Operation,
    OperationType, Platform, SelectionContext, Tensor,
};

const RMS: Operation = Operation::Known(OperationType::NormRms);

/// A CUDA backend with two devices, as discovery would register it.
fn two_gpus() -> Arc<BackendRegistry> {
    let backends = BackendRegistry::new();
    let gpu = |ordinal| DeviceInfo { device: Device::Cuda(ordinal), name: "fake".into(), ..DeviceInfo::default() };
    backends
        .register(BackendInfo {
            name: "cuda".into(),
            platform: Platform::Cuda,
            version: None,
            devices: vec![gpu(0), gpu(1)],
        })
        .expect("registered");
    Arc::new(backends)
}

fn spec(id: &str, priority: u32) -> KernelSpec {
    KernelSpec::new(id, Platform::Cuda).expect("an id").for_operation(OperationType::NormRms).with_priority(priority)
}

fn writes(value: f32, fail: Option<Arc<AtomicBool>>) -> KernelImpl {
    KernelImpl::norm(move |args: &mut NormArgs<'_>| -> KernelResult {
        if fail.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Err(KernelError::Backend { backend: "cuda", message: "illegal address".into() });
        }
        args.output.as_mut_slice::<f32>()?.fill(value);
        Ok(())
    })
}

fn dispatcher(rules: &str, fail: &Arc<AtomicBool>) -> ConfigDrivenDispatcher {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_with_impl(spec("gpu_rms_fast", 90), writes(1.0, Some(Arc::clone(fail)))).expect("registered");
    kernels.register_with_impl(spec("gpu_rms_safe", 10), writes(2.0, None)).expect("registered");
    let config = DispatchConfig::builder().mode(DispatchMode::Config).failure_threshold(3).build().expect("config");
    let policy = ConfigSchema.load(rules).expect("valid rules").compiled;
    ConfigDrivenDispatcher::new(kernels, two_gpus(), config, policy, None).expect("a dispatcher")
}

/// Dispatches rms_norm on `device` (host buffers; the context names the device) and
/// returns the kernel, whether it was a fallback, and the value written.
fn run_on(dispatcher: &ConfigDrivenDispatcher, device: Device, tp_size: Option<u32>) -> (String, bool, f32) {
    let x = Tensor::from_f32(&[1.0; 8], &[2, 4], DType::F32).expect("x");
    let w = Tensor::from_f32(&[1.0; 4], &[4], DType::F32).expect("w");
    let mut y = Tensor::zeros(&[2, 4], DType::F32).expect("y");
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
    let context = SelectionContext {
        device: Some(device),
        platform: Some(device.platform()),
        tp_size,
        ..args.context().expect("a context")
    };
    let result = dispatcher.dispatch(RMS, &mut args, Some(&context)).expect("an output");
    (result.kernel_id.as_str().to_owned(), result.was_fallback, y.to_f32_vec().expect("f32")[0])
}

fn fast() -> KernelId {
    KernelId::new("gpu_rms_fast").expect("an id")
}

#[test]
fn a_kernel_failing_on_one_gpu_opens_its_breaker_there_only() {
    let fail = Arc::new(AtomicBool::new(true));
    let dispatcher = dispatcher("version: \"1.0\"\nfallback_chains:\n  rms_norm: [gpu_rms_safe]\n", &fail);
    // cuda:1's fast kernel fails three times: the fallback answers, its breaker opens.
    for _ in 0..3 {
        assert_eq!(run_on(&dispatcher, Device::Cuda(1), None), ("gpu_rms_safe".into(), true, 2.0));
    }
    let on = |ordinal| dispatcher.circuit_breakers_on(Device::Cuda(ordinal)).expect("breakers are on");
    assert_eq!(on(1).get(fast()).map(|b| b.state()), Some(CircuitState::Open));
    assert!(on(0).get(fast()).is_none(), "cuda:0 never ran the kernel: no breaker, so closed");

    // The card recovers; cuda:0 uses the fast kernel, cuda:1 still skips it (open circuit).
    fail.store(false, Ordering::Relaxed);
    assert_eq!(run_on(&dispatcher, Device::Cuda(0), None), ("gpu_rms_fast".into(), false, 1.0));
    assert_eq!(on(0).get(fast()).map(|b| b.state()), Some(CircuitState::Closed));
    assert_eq!(run_on(&dispatcher, Device::Cuda(1), None), ("gpu_rms_safe".into(), true, 2.0));
    assert!(dispatcher.circuit_breakers().expect("host breakers").get(fast()).is_none(), "the host's are apart too");

    // Telemetry tells the devices apart.
    let telemetry = dispatcher.telemetry();
    let device = |name: &str| telemetry.devices.iter().find(|d| d.device == name).map(|d| (d.successes, d.errors));
    assert_eq!(device("cuda:0"), Some((1, 0)));
    assert_eq!(device("cuda:1"), Some((4, 0)));
    assert_eq!(device("cpu"), None);
    let fast_counts = telemetry.kernel(fast()).expect("counted");
    assert_eq!((fast_counts.successes, fast_counts.failures, fast_counts.circuit_open_skips), (1, 3, 1));
}

#[test]
fn rules_tell_devices_and_parallel_layouts_apart_and_the_cache_keys_include_the_device() {
    let fail = Arc::new(AtomicBool::new(false));
    let rules = "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, conditions: {tp_size_gte: 2}, kernel: gpu_rms_safe, priority: 30}\n  - {operation: rms_norm, conditions: {device: \"cuda:1\"}, kernel: gpu_rms_safe, priority: 20}\n  - {operation: rms_norm, conditions: {device_match: \"cuda:*\"}, kernel: gpu_rms_fast, priority: 10}\n";
    let dispatcher = dispatcher(rules, &fail);
    assert_eq!(run_on(&dispatcher, Device::Cuda(0), None).0, "gpu_rms_fast");
    assert_eq!(run_on(&dispatcher, Device::Cuda(1), None).0, "gpu_rms_safe");
    assert_eq!(run_on(&dispatcher, Device::Cuda(0), Some(4)).0, "gpu_rms_safe");
    // Three contexts, three cached answers: the device (and tp_size) are in the key.
    assert_eq!(dispatcher.selection_engine().cache_len(), 3);
    // The same contexts again hit the cache and answer the same.
    assert_eq!(run_on(&dispatcher, Device::Cuda(0), None).0, "gpu_rms_fast");
    assert_eq!(run_on(&dispatcher, Device::Cuda(1), None).0, "gpu_rms_safe");
    assert_eq!(dispatcher.selection_engine().cache_len(), 3);

    // Explain names the rule that decided for each device.
    let context = |device| SelectionContext { device: Some(device), ..SelectionContext::default() };
    let on_1 = dispatcher.explain_selection(RMS, &context(Device::Cuda(1))).to_string();
    assert!(on_1.contains("dispatch_rules[1]"), "{on_1}");
    // A host context cannot run CUDA kernels: a typed error, not a silent substitute.
    let on_cpu = dispatcher.selection_engine().select(RMS, &context(Device::Cpu));
    assert!(on_cpu.is_err(), "{on_cpu:?}");
}
