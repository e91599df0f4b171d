//! Several GPUs driven from one process through one dispatcher (issue 13's checks on a
//! machine with two or more cards): each card's result equals the one-card result; two
//! threads per card dispatch many times with no cross-device error; a memory-bound
//! workload on every card at once keeps its throughput per card; faults injected on one
//! card open that card's breakers only.
//!
//! `cargo test -p layerzero-tests --features cuda --test gpu_multi_device -- --nocapture`;
//! with fewer than two GPUs every test prints why it skips. `LZ_MULTI_GPU_CALLS` sets the
//! calls per thread of the dispatch test (default 1,000,000).
#![cfg(feature = "cuda")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use layerzero::breaker::CircuitState;
use layerzero::config::ConfigSchema;
use layerzero::dispatch::{ConfigDrivenDispatcher, DispatchConfig, DispatchMode, Dispatcher};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    DType, Device, KernelError, KernelId, KernelImpl, KernelResult, KernelSpec, NormArgs, OpArgs, OperationType,
    Platform, Tensor,
};
use layerzero_kernels::cuda::{self, CudaDevice};
use layerzero_tests::values;

/// The GPUs when there are two or more, or `None` (printing why).
fn two_or_more_gpus() -> Option<Arc<[CudaDevice]>> {
    match cuda::discover() {
        Ok(devices) if devices.len() >= 2 => Some(devices.into()),
        Ok(devices) => {
            eprintln!("skipping: needs two CUDA GPUs, this machine has {}", devices.len());
            None
        }
        Err(e) => {
            eprintln!("skipping: CUDA discovery failed: {e}");
            None
        }
    }
}

/// An rms_norm that fails on the card `failing` names while it is set, and otherwise runs
/// the CUDA block kernel: a fault injected on one card.
fn faulty_rms_norm(devices: Arc<[CudaDevice]>, failing: Arc<AtomicBool>, on: Device) -> KernelImpl {
    let real = cuda::cuda_kernels(devices)
        .expect("the CUDA kernels")
        .into_iter()
        .find(|(spec, _)| spec.id.as_str() == "cuda.rms_norm.block")
        .map(|(_, code)| code)
        .expect("the block rms_norm");
    KernelImpl::norm(move |args: &mut NormArgs<'_>| -> KernelResult {
        if failing.load(Ordering::Relaxed) && args.input.device() == on {
            return Err(KernelError::Backend { backend: "cuda", message: format!("injected fault on {on}") });
        }
        let mut call = OpArgs::Norm(NormArgs::new(args.input, args.weight, args.output.reborrow(), args.eps));
        real.call(&mut call)
    })
}

/// One dispatcher over the CPU kernels and every card's CUDA kernels (plus `extra`), with
/// the block rms_norm as the fallback of any other and breakers that open after three
/// failures.
fn dispatcher(devices: &Arc<[CudaDevice]>, extra: Vec<(KernelSpec, KernelImpl)>) -> ConfigDrivenDispatcher {
    let kernels = KernelRegistry::new();
    layerzero_kernels::register_cpu_kernels(&kernels).expect("cpu kernels");
    cuda::register_cuda_kernels(&kernels, Arc::clone(devices)).expect("cuda kernels");
    kernels.register_all_with_impls(extra).expect("the extra kernels");
    let backends = BackendRegistry::detect();
    cuda::register_cuda_backend(&backends, devices).expect("the cuda backend");
    let config = DispatchConfig::builder().mode(DispatchMode::Config).failure_threshold(3).build().expect("config");
    let rules = "version: \"1.0\"\nfallback_chains:\n  rms_norm: [cuda.rms_norm.block]\n";
    let policy = ConfigSchema.load(rules).expect("valid rules").compiled;
    ConfigDrivenDispatcher::new(Arc::new(kernels), Arc::new(backends), config, policy, None).expect("a dispatcher")
}

/// An rms_norm's host input, weight and (NaN-poisoned) output, copied to `gpu`.
fn norm_tensors(gpu: &CudaDevice, rows: usize, hidden: usize, dtype: DType) -> [Tensor; 3] {
    let host = |values: &[f32], dims: &[usize]| Tensor::from_f32(values, dims, dtype).expect("a tensor");
    let x = host(&values(rows * hidden, 1), &[rows, hidden]);
    let w = host(&values(hidden, 2), &[hidden]);
    let y = host(&vec![f32::NAN; rows * hidden], &[rows, hidden]);
    [x, w, y].map(|t| t.to_cuda(gpu.stream()).expect("copied to the card"))
}

/// rms_norm through `dispatcher` on `tensors`: the kernel that ran.
fn rms_norm(dispatcher: &dyn Dispatcher, tensors: &mut [Tensor; 3]) -> Result<KernelId, String> {
    let [x, w, y] = tensors;
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
    dispatcher.dispatch(OperationType::NormRms.into(), &mut args, None).map(|r| r.kernel_id).map_err(|e| e.to_string())
}

#[test]
fn each_card_gives_the_one_card_result_at_once() {
    let Some(devices) = two_or_more_gpus() else { return };
    let dispatcher = dispatcher(&devices, Vec::new());
    let one_card = {
        let mut tensors = norm_tensors(&devices[0], 333, 4096, DType::BF16);
        rms_norm(&dispatcher, &mut tensors).expect("cuda:0 alone");
        devices[0].synchronize().expect("sync");
        tensors[2].to_host().expect("download").to_f32_vec().expect("f32")
    };
    let results: Vec<(Device, Vec<f32>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = devices
            .iter()
            .map(|gpu| {
                let dispatcher = &dispatcher;
                scope.spawn(move || {
                    let mut tensors = norm_tensors(gpu, 333, 4096, DType::BF16);
                    let kernel = rms_norm(dispatcher, &mut tensors).expect("a dispatch");
                    assert!(kernel.as_str().starts_with("cuda."), "{} ran {kernel}", gpu.device());
                    gpu.synchronize().expect("sync");
                    (gpu.device(), tensors[2].to_host().expect("download").to_f32_vec().expect("f32"))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a card's thread")).collect()
    });
    for (device, output) in results {
        assert!(output.iter().all(|v| v.is_finite()), "{device} left an output unwritten");
        assert_eq!(output, one_card, "{device} differs from the one-card result");
    }
}

#[test]
fn two_threads_per_card_dispatch_without_a_cross_device_error() {
    let Some(devices) = two_or_more_gpus() else { return };
    let calls: u64 = std::env::var("LZ_MULTI_GPU_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dispatcher = dispatcher(&devices, Vec::new());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for gpu in devices.iter() {
            for _ in 0..2 {
                let dispatcher = &dispatcher;
                scope.spawn(move || {
                    let mut tensors = norm_tensors(gpu, 1, 64, DType::BF16);
                    for call in 0..calls {
                        let kernel = rms_norm(dispatcher, &mut tensors)
                            .unwrap_or_else(|e| panic!("call {call} on {}: {e}", gpu.device()));
                        assert!(kernel.as_str().starts_with("cuda."), "call {call} on {} ran {kernel}", gpu.device());
                        if call % 4096 == 4095 {
                            gpu.synchronize().expect("sync"); // keeps the launch queue short
                        }
                    }
                    gpu.synchronize().expect("sync");
                });
            }
        }
    });
    let elapsed = start.elapsed();
    let telemetry = dispatcher.telemetry();
    for gpu in devices.iter() {
        let name = gpu.device().to_string();
        let counts = telemetry.devices.iter().find(|d| d.device == name).map(|d| (d.successes, d.errors));
        assert_eq!(counts, Some((2 * calls, 0)), "{name}: every call answered on its own card");
    }
    assert_eq!(telemetry.error_count, 0);
    println!(
        "{} cards x 2 threads x {calls} dispatches in {:.2} s ({:.2} us a dispatch per thread)",
        devices.len(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / calls as f64
    );
}

#[test]
fn a_memory_bound_workload_scales_across_cards() {
    let Some(devices) = two_or_more_gpus() else { return };
    let dispatcher = dispatcher(&devices, Vec::new());
    let (rows, hidden, launches) = (16384, 4096, 200);
    // Each card's own inputs (256 MiB moved a launch), made before any timing.
    let mut per_card: Vec<[Tensor; 3]> =
        devices.iter().map(|gpu| norm_tensors(gpu, rows, hidden, DType::BF16)).collect();
    let run = |gpu: &CudaDevice, tensors: &mut [Tensor; 3]| {
        for _ in 0..launches {
            rms_norm(&dispatcher, tensors).expect("a dispatch");
        }
        gpu.synchronize().expect("sync");
    };
    run(&devices[0], &mut per_card[0]); // warm up
    let start = Instant::now();
    run(&devices[0], &mut per_card[0]);
    let one = start.elapsed().as_secs_f64();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (gpu, tensors) in devices.iter().zip(per_card.iter_mut()) {
            let run = &run;
            scope.spawn(move || run(gpu, tensors));
        }
    });
    let all = start.elapsed().as_secs_f64();
    let bytes = (2 * rows * hidden * 2) as f64 * launches as f64;
    let ratio = devices.len() as f64 * one / all;
    println!(
        "rms_norm {rows}x{hidden} bf16, {launches} launches a card: one card {:.0} GB/s; {} cards at once {:.0} GB/s, {ratio:.2}x one card",
        bytes / one / 1e9,
        devices.len(),
        devices.len() as f64 * bytes / all / 1e9
    );
    assert!(ratio >= 0.95 * devices.len() as f64, "{ratio:.2}x on {} cards", devices.len());
}

#[test]
fn faults_on_one_card_open_its_breakers_only() {
    let Some(devices) = two_or_more_gpus() else { return };
    let failing = Arc::new(AtomicBool::new(true));
    let faulty = KernelSpec::new("gpu_multi_faulty_rms_norm", Platform::Cuda)
        .expect("an id")
        .for_operation(OperationType::NormRms)
        .with_dtypes([DType::BF16, DType::F16, DType::F32])
        .with_priority(1000);
    let code = faulty_rms_norm(Arc::clone(&devices), Arc::clone(&failing), devices[1].device());
    let dispatcher = dispatcher(&devices, vec![(faulty.clone(), code)]);
    let mut on = devices.iter().map(|gpu| norm_tensors(gpu, 3, 4096, DType::BF16)).collect::<Vec<_>>();
    // Five calls a card: cuda:1's fall back to another kernel and open its breaker there.
    for _ in 0..5 {
        for (gpu, tensors) in devices.iter().zip(on.iter_mut()) {
            let kernel = rms_norm(&dispatcher, tensors).expect("an output, from a fallback where needed");
            let expected = if gpu.device() == devices[1].device() { "cuda.rms_norm.block" } else { faulty.id.as_str() };
            assert_eq!(kernel.as_str(), expected, "on {}", gpu.device());
        }
    }
    let state = |device: Device| {
        dispatcher.circuit_breakers_on(device).and_then(|b| b.get(faulty.id)).map(|breaker| breaker.state())
    };
    assert_eq!(state(devices[1].device()), Some(CircuitState::Open));
    for gpu in devices.iter().filter(|gpu| gpu.device() != devices[1].device()) {
        assert_eq!(state(gpu.device()), Some(CircuitState::Closed), "{}", gpu.device());
    }
    failing.store(false, Ordering::Relaxed);
    for gpu in devices.iter() {
        gpu.synchronize().expect("sync");
    }
}
